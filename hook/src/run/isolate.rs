//! Entering a check's sandbox: the kernel's own isolation, set up by the process that is about
//! to become the check.
//!
//! A check is started as `checkdef __sandbox --spec FILE -- ARGV...` (see [`ENTRY`]). That
//! process is single-threaded (dispatched in `main` before any runtime starts, which
//! `unshare(CLONE_NEWUSER)` requires), and [`enter`]s the sandbox described by the [`Spec`] in
//! FILE before it `exec`s ARGV:
//!
//! 1. new user, mount and (unless `network`) network namespaces; the caller's uid and gid are
//!    mapped to themselves, except root, which is mapped to `nobody` (65534): a check run as
//!    root must not keep `CAP_DAC_OVERRIDE`, or it could read the unreadable placeholders of
//!    files that are not its inputs. Capabilities in the new namespace end at the `exec` (the
//!    check's uid is not the namespace's root);
//! 2. every mount becomes private, so nothing below propagates back to the host;
//! 3. the check's view is an overlay mounted **at the repository's own path**: `lower` (the
//!    segment's inputs over a skeleton of the whole tree, whose other files are empty mode-000
//!    placeholders) under a private, writable `upper`. Absolute paths, `..`, symlinks,
//!    `/proc/self/cwd` and an editable install's `.pth` or finder all resolve to the view; the
//!    work tree below it is covered by a mount the check cannot remove (mounts made in a parent
//!    namespace are locked in a child one);
//! 4. `expose` directories of the work tree (Python environments that live inside it, such as
//!    `.venv`) are bound read-only into the view, so `.venv/bin/python` keeps working;
//! 5. `hide` directories (checkdef's local cache, the directory other sandboxes live in) are
//!    covered by an empty read-only tmpfs; the check's own `tmp` is bound back into place;
//! 6. the loopback interface of the new network namespace is brought up (tests may serve on
//!    127.0.0.1); nothing else is reachable;
//! 7. a Landlock domain is entered (when the kernel has Landlock): Landlock forbids a sandboxed
//!    process to inspect processes outside its domain, which closes `/proc/PID/cwd`,
//!    `/proc/PID/root` and `/proc/PID/fd/*` of the user's other processes (their cwd is often
//!    the work tree). `no_new_privs` is set, so set-uid programs cannot give privileges back.
//!
//! A process that was forked rather than started (a warm runner's child) can enter the same
//! sandbox by calling [`enter`] itself while it is still single-threaded, then `exec` or run the
//! check in place.
use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use serde::{Deserialize, Serialize};

/// The hidden subcommand that enters a sandbox and runs a check.
pub const ENTRY: &str = "__sandbox";

/// The exit code of an entry process that could not enter its sandbox (before the check ran).
pub const ENTRY_FAILED: i32 = 125;

/// What a check's sandbox holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Spec {
    /// The repository's path (canonical): the view is mounted here and the check starts here.
    #[serde(with = "byte_path")]
    pub root: PathBuf,
    /// Overlay lower directories, topmost first.
    #[serde(with = "byte_paths")]
    pub lower: Vec<PathBuf>,
    /// The check's private writable layer and the overlay's work directory (same filesystem).
    /// With `writes_in_memory`, `upper` is only a mount point (any existing directory, such as
    /// the hidden directory sandboxes live in) and `work` is unused.
    #[serde(with = "byte_path")]
    pub upper: PathBuf,
    #[serde(with = "byte_path")]
    pub work: PathBuf,
    /// Put the writable layer in a tmpfs of the sandbox's own, mounted at `upper`: set-up and
    /// teardown touch no disk (each directory operation on a busy ext4 can wait for its
    /// journal), and nothing outlives the check, even a SIGKILL. Otherwise `upper` and `work`
    /// are on disk, mounted `volatile` (never synced).
    #[serde(default)]
    pub writes_in_memory: bool,
    /// The check's `TMPDIR`: stays visible even when it lies below a hidden directory.
    #[serde(with = "byte_path")]
    pub tmp: PathBuf,
    /// Directories covered by an empty read-only tmpfs.
    #[serde(with = "byte_paths")]
    pub hide: Vec<PathBuf>,
    /// Directories and files below `root` (relative) bound read-only from the work tree into
    /// the view.
    #[serde(with = "byte_paths")]
    pub expose: Vec<PathBuf>,
    /// Keep the host's network (`network = true`).
    pub network: bool,
}

/// A path in the spec's JSON: a string when it is UTF-8, else its bytes (a repository under a
/// directory with a Latin-1 name is legal, and serde's own `PathBuf` refuses it: every check
/// failed with "path contains invalid UTF-8 characters").
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonPath {
    Text(String),
    Bytes(Vec<u8>),
}

impl JsonPath {
    fn of(p: &Path) -> JsonPath {
        use std::os::unix::ffi::OsStrExt as _;
        match p.to_str() {
            Some(s) => JsonPath::Text(s.to_owned()),
            None => JsonPath::Bytes(p.as_os_str().as_bytes().to_vec()),
        }
    }

    fn into_path(self) -> PathBuf {
        use std::os::unix::ffi::OsStringExt as _;
        match self {
            JsonPath::Text(s) => PathBuf::from(s),
            JsonPath::Bytes(b) => PathBuf::from(std::ffi::OsString::from_vec(b)),
        }
    }
}

mod byte_path {
    use super::JsonPath;
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        JsonPath::of(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(JsonPath::deserialize(d)?.into_path())
    }
}

mod byte_paths {
    use super::JsonPath;
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};
    use std::path::PathBuf;

    pub fn serialize<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        ps.iter()
            .map(|p| JsonPath::of(p))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(Vec::<JsonPath>::deserialize(d)?
            .into_iter()
            .map(JsonPath::into_path)
            .collect())
    }
}

/// Why a sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct EnterError {
    step: String,
    #[source]
    source: std::io::Error,
}

fn step<E: Into<std::io::Error>>(what: impl FnOnce() -> String) -> impl FnOnce(E) -> EnterError {
    move |e| EnterError {
        step: what(),
        source: e.into(),
    }
}

/// Enter the sandbox `spec` describes. The calling process must be single-threaded; on success
/// its current directory is `spec.root` and only an `exec` (or the check itself) should follow.
pub fn enter(spec: &Spec) -> Result<(), EnterError> {
    namespaces(spec.network)?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(step(|| "making mounts private".to_owned()))?;
    enter_mounts(spec)
}

/// [`enter`] once the namespaces exist: the view, what is hidden and exposed, the loopback
/// interface, Landlock, the working directory.
fn enter_mounts(spec: &Spec) -> Result<(), EnterError> {
    // Descriptors of what must stay reachable after the mounts below cover their paths; opened
    // in the new mount namespace (a bind mount's source must be a mount of the caller's own).
    let open_dir = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(step(|| format!("opening {}", p.display())))
    };
    let tmp_fd = open_dir(&spec.tmp)?;
    // Directories (Python environments) and files (version files a shim reads) of the work
    // tree, opened before the view covers it.
    let exposed: Vec<(PathBuf, OwnedFd, bool)> = spec
        .expose
        .iter()
        .map(|rel| {
            let p = spec.root.join(rel);
            if p.is_dir() {
                open_dir(&p).map(|fd| (p, fd, true))
            } else {
                rustix::fs::open(
                    &p,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map(|fd| (p.clone(), fd, false))
                .map_err(step(|| format!("opening {}", p.display())))
            }
        })
        .collect::<Result<_, _>>()?;

    mount_overlay(spec)?;

    // The view itself, to bind back should it lie below a hidden directory (a bare repository's
    // view is a directory of the run's own).
    let root_fd = open_dir(&spec.root)?;
    for (path, fd, is_dir) in &exposed {
        // The mount point lives in the private upper layer (a tracked file's placeholder is
        // one already).
        if *is_dir {
            std::fs::create_dir_all(path)
                .map_err(step(|| format!("creating {}", path.display())))?;
        } else if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            // A committed symlink at that name: bound over, it would lead elsewhere.
            std::fs::remove_file(path).map_err(step(|| format!("removing {}", path.display())))?;
            std::fs::File::create(path).map_err(step(|| format!("creating {}", path.display())))?;
        } else if std::fs::symlink_metadata(path).is_err() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(step(|| format!("creating {}", parent.display())))?;
            }
            std::fs::File::create(path).map_err(step(|| format!("creating {}", path.display())))?;
        }
        bind_readonly(fd, path)?;
    }

    hide_dirs(spec, &tmp_fd, &root_fd)?;
    drop((tmp_fd, root_fd, exposed));

    if !spec.network {
        loopback_up().map_err(step(|| "bringing up the loopback interface".to_owned()))?;
    }
    rustix::thread::set_no_new_privs(true).map_err(step(|| "setting no_new_privs".to_owned()))?;
    landlock_scope();
    rustix::process::chdir(&spec.root)
        .map_err(step(|| format!("changing to {}", spec.root.display())))?;
    Ok(())
}

/// The view: `spec.lower` under a writable layer (in a tmpfs of its own with
/// `writes_in_memory`), mounted as an overlay at `spec.root`.
fn mount_overlay(spec: &Spec) -> Result<(), EnterError> {
    let (upper, work) = if spec.writes_in_memory {
        rustix::mount::mount(
            "checkdef-writes",
            &spec.upper,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(c"mode=0755"),
        )
        .map_err(step(|| {
            format!("mounting a tmpfs at {}", spec.upper.display())
        }))?;
        let (u, w) = (spec.upper.join("upper"), spec.upper.join("work"));
        for d in [&u, &w] {
            std::fs::create_dir(d).map_err(step(|| format!("creating {}", d.display())))?;
        }
        (u, w)
    } else {
        (spec.upper.clone(), spec.work.clone())
    };
    // `volatile`: the writable layer is thrown away after the check, so overlayfs need not sync
    // it (without it, every unmount syncs the upper file system: 180 ms per check on a busy
    // ext4 /tmp).
    let options = overlay_options(
        &spec.lower,
        &upper,
        &work,
        if spec.writes_in_memory {
            ""
        } else {
            ",volatile"
        },
    );
    let options = std::ffi::CString::new(options)
        .map_err(step(|| "overlay options contain NUL".to_owned()))?;
    rustix::mount::mount(
        "overlay",
        &spec.root,
        "overlay",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(options.as_c_str()),
    )
    .map_err(step(|| {
        format!("mounting the overlay at {}", spec.root.display())
    }))?;
    Ok(())
}

/// The overlay's mount options, its directories spelled as bytes (a name need not be UTF-8)
/// with the separators overlayfs splits on (`,` between options, `:` between lower layers) and
/// its escape character behind a backslash, which overlayfs removes.
fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path, rest: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    let escaped = |out: &mut Vec<u8>, p: &Path| {
        for &b in p.as_os_str().as_bytes() {
            if matches!(b, b',' | b':' | b'\\') {
                out.push(b'\\');
            }
            out.push(b);
        }
    };
    let mut out = b"lowerdir=".to_vec();
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        escaped(&mut out, l);
    }
    out.extend_from_slice(b",upperdir=");
    escaped(&mut out, upper);
    out.extend_from_slice(b",workdir=");
    escaped(&mut out, work);
    out.extend_from_slice(b",userxattr");
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Cover each directory of `spec.hide` (outside the view) with an empty read-only tmpfs,
/// binding back the check's TMPDIR and the view (`tmp_fd`, `root_fd`) should they lie below one.
fn hide_dirs(spec: &Spec, tmp_fd: &OwnedFd, root_fd: &OwnedFd) -> Result<(), EnterError> {
    for h in &spec.hide {
        if !h.is_dir() || h.starts_with(&spec.root) || h == Path::new("/") {
            continue;
        }
        rustix::mount::mount(
            "none",
            h,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some(c"mode=0755,size=64k"),
        )
        .map_err(step(|| format!("hiding {}", h.display())))?;
        for (keep, fd) in [(&spec.tmp, tmp_fd), (&spec.root, root_fd)] {
            if keep.starts_with(h) {
                std::fs::create_dir_all(keep)
                    .map_err(step(|| format!("creating {}", keep.display())))?;
                bind(fd, keep)?;
            }
        }
        rustix::mount::mount_remount(
            h,
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::RDONLY,
            "mode=0755,size=64k",
        )
        .map_err(step(|| format!("making {} read-only", h.display())))?;
    }
    Ok(())
}

fn bind(fd: &OwnedFd, target: &Path) -> Result<(), EnterError> {
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::mount::mount_bind_recursive(source.as_str(), target)
        .map_err(step(|| format!("binding {}", target.display())))
}

fn bind_readonly(fd: &OwnedFd, target: &Path) -> Result<(), EnterError> {
    bind(fd, target)?;
    rustix::mount::mount_remount(
        target,
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        "",
    )
    .map_err(step(|| format!("making {} read-only", target.display())))
}

/// The uid (and gid) the check has inside its user namespace: its own, except root's, which is
/// `nobody`'s (see the module documentation).
fn inner_id(outer: u32) -> u32 {
    if outer == 0 { 65534 } else { outer }
}

fn namespaces(network: bool) -> Result<(), EnterError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS;
    if !network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare(2) only changes this process's namespace membership; it neither touches
    // memory nor file descriptor tables (no CLONE_FILES). The caller is single-threaded.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::unshare(flags) };
    if rc != 0 {
        return Err(EnterError {
            step: "creating user and mount namespaces (unshare)".to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    let write = |file: &str, text: String| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(step(|| format!("writing {file}")))
    };
    write("/proc/self/setgroups", "deny".to_owned())?;
    write("/proc/self/uid_map", format!("{} {uid} 1\n", inner_id(uid)))?;
    write("/proc/self/gid_map", format!("{} {gid} 1\n", inner_id(gid)))?;
    Ok(())
}

/// `ip link set lo up`, with one ioctl.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) returns a new descriptor or -1; it is closed below.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ifreq` is plain old data, zero is a valid value for every field; the ioctls get
    // a pointer to it that lives for the call; `fd` is ours and closed exactly once.
    #[allow(unsafe_code)]
    let rc = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 { Ok(()) } else { Err(err) }
    };
    rc
}

/// The Landlock ABI version the kernel offers (0: none).
pub fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns a
    // number; no memory is passed.
    #[allow(unsafe_code)]
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    v.max(0)
}

/// Enter a Landlock domain that restricts nothing on the file system the check needs
/// (it handles only the creation of device nodes, which it forbids) — being in a domain is what
/// matters: Landlock denies ptrace-style access (`/proc/PID/{cwd,root,fd,environ,mem}`) to every
/// process outside it. Best effort: without Landlock, that route stays open (docs/security.md).
fn landlock_scope() {
    if landlock_abi() < 1 {
        return;
    }
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }
    const MAKE_CHAR: u64 = 1 << 6;
    const MAKE_BLOCK: u64 = 1 << 11;
    let attr = RulesetAttr {
        handled_access_fs: MAKE_CHAR | MAKE_BLOCK,
    };
    // SAFETY: the attribute struct is the ABI-1 prefix of `struct landlock_ruleset_attr`, passed
    // with its exact size and alive for the call; the returned descriptor is closed below.
    #[allow(unsafe_code)]
    unsafe {
        let fd = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        );
        if fd >= 0 {
            libc::syscall(libc::SYS_landlock_restrict_self, fd as libc::c_int, 0u32);
            libc::close(fd as libc::c_int);
        }
    }
}

/// `checkdef __sandbox --spec FILE -- ARGV...`, `checkdef __sandbox --spec-json JSON -- ARGV...`
/// and `checkdef __sandbox --probe`: handled in `main` before anything else runs. Never returns.
// The stage runs before any context or printer exists, and its parent reads what it writes:
// the probe's one line on stdout, a failure on stderr (which the check's log captures).
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn entry_main(args: &[OsString]) -> ! {
    let code = match args {
        [flag, spec, dashdash, argv @ ..]
            if (flag == "--spec" || flag == "--spec-json")
                && dashdash == "--"
                && !argv.is_empty() =>
        {
            let text = if flag == "--spec" {
                std::fs::read(spec).map_err(|e| format!("{}: {e}", Path::new(spec).display()))
            } else {
                Ok(spec.as_encoded_bytes().to_vec())
            };
            match text.and_then(|t| run_entry(&t, argv)) {
                Ok(never) => match never {},
                Err(msg) => {
                    eprintln!("checkdef: could not enter the sandbox: {msg}");
                    ENTRY_FAILED
                }
            }
        }
        [flag, dir, rest @ ..] if flag == "--hold" => {
            let (spec, argv) = match rest {
                [f, spec, dd, argv @ ..] if f == "--spec-json" && dd == "--" => {
                    (Some(spec.as_encoded_bytes()), argv)
                }
                [dd, argv @ ..] if dd == "--" => (None, argv),
                _ => (None, &[][..]),
            };
            if argv.is_empty() {
                eprintln!("checkdef: {ENTRY} --hold DIR [--spec-json JSON] -- ARGV...");
                2
            } else {
                match hold(Path::new(dir), spec, argv) {
                    Ok(code) => code,
                    Err(msg) => {
                        eprintln!("checkdef: could not enter the sandbox: {msg}");
                        ENTRY_FAILED
                    }
                }
            }
        }
        [flag] if flag == "--probe" => match probe() {
            Ok(()) => 0,
            Err(e) => {
                println!("{e}");
                1
            }
        },
        _ => {
            eprintln!(
                "checkdef: {ENTRY} is internal: {ENTRY} --spec FILE|--spec-json JSON -- ARGV..."
            );
            2
        }
    };
    std::process::exit(code)
}

fn run_entry(spec: &[u8], argv: &[OsString]) -> Result<std::convert::Infallible, String> {
    let spec: Spec = serde_json::from_slice(spec).map_err(|e| format!("bad spec: {e}"))?;
    enter(&spec).map_err(|e| e.to_string())?;
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(format!("starting {}: {err}", argv[0].to_string_lossy()))
}

/// The FIFO a holder announces itself on (`ready PID PGID`), in its private directory.
pub const HOLD_READY: &str = "hold-ready";
/// The FIFO a holder reads its one order from, in its private directory: `exec` (run ARGV, as
/// `--spec` would have), `exit CODE` or `signal NUMBER` (end as the warm check it held ended).
pub const HOLD_CTL: &str = "hold-ctl";

/// `checkdef __sandbox --hold DIR [--spec-json JSON] -- ARGV...`: enter the sandbox (when a spec
/// is given) exactly as for a fresh check, say `ready PID` on `DIR/hold-ready`, then wait for one
/// order on `DIR/hold-ctl`. A warm runner's child joins this process's namespaces, process group
/// and stdout/stderr meanwhile (see `run/warm.rs`), so the holder stands for it under the
/// supervisor stage: a timeout, Ctrl-C or checkdef's death kills the holder's group, the warm
/// child with it; and the holder's exit mirrors the child's, so the supervisor reports it.
/// Returns the exit code (or never returns: `exec`, a mirrored signal).
fn hold(dir: &Path, spec: Option<&[u8]>, argv: &[OsString]) -> Result<i32, String> {
    let open = |name: &str, flags: OFlags| {
        let p = dir.join(name);
        rustix::fs::open(&p, flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening {}: {e}", p.display()))
    };
    // Opened before the sandbox hides the directory they are in. `ctl` is opened read-write, so
    // it never reads end of file before checkdef opened it.
    let ready = open(HOLD_READY, OFlags::WRONLY | OFlags::NONBLOCK)?;
    let ctl = open(HOLD_CTL, OFlags::RDWR)?;
    if let Some(spec) = spec {
        let spec: Spec = serde_json::from_slice(spec).map_err(|e| format!("bad spec: {e}"))?;
        enter(&spec).map_err(|e| e.to_string())?;
    }
    // The group is the supervisor stage's (led by its guard): the warm child joins it.
    let line = format!(
        "ready {} {}\n",
        rustix::process::getpid().as_raw_nonzero(),
        rustix::process::getpgrp().as_raw_nonzero()
    );
    rustix::io::write(&ready, line.as_bytes()).map_err(|e| format!("announcing: {e}"))?;
    drop(ready);
    let mut order = Vec::new();
    let mut b = [0u8; 64];
    while !order.ends_with(b"\n") && order.len() < 256 {
        match rustix::io::read(&ctl, &mut b) {
            Ok(0) => break,
            Ok(n) => order.extend_from_slice(&b[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("reading the order: {e}")),
        }
    }
    drop(ctl);
    let order = String::from_utf8_lossy(&order);
    let mut words = order.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|n| n.parse::<i32>().ok()),
    ) {
        (Some("exec"), None) => {
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            Err(format!("starting {}: {err}", argv[0].to_string_lossy()))
        }
        (Some("exit"), Some(code)) => Ok(code),
        (Some("died"), Some(sig)) => {
            // The check's shell waited for it (dash): it reports the death as dash does, on
            // its standard error, and exits 128+N.
            let core = words.next() == Some("core");
            report_death(sig, core);
            Ok(128 + sig)
        }
        (Some("signal"), Some(sig)) => {
            raise(sig);
            Ok(128 + sig)
        }
        // checkdef gave up on the warm check (its server died): nothing to report.
        _ => Ok(ENTRY_FAILED),
    }
}

/// What dash prints when the command it waited for was killed by `sig`: the C library's name
/// of the signal, " (core dumped)" when it dumped core, nothing for SIGINT and SIGPIPE.
fn report_death(sig: i32, core: bool) {
    if sig == libc::SIGINT || sig == libc::SIGPIPE {
        return;
    }
    // SAFETY: strsignal returns a string it owns, valid until the next call; this process has
    // one thread (the holder), and it is copied at once.
    #[allow(unsafe_code)]
    let name = unsafe {
        let p = libc::strsignal(sig);
        if p.is_null() {
            return;
        }
        std::ffi::CStr::from_ptr(p).to_bytes().to_vec()
    };
    let mut line = name;
    if core {
        line.extend_from_slice(b" (core dumped)");
    }
    line.push(b'\n');
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(&line);
}

/// End this process by `sig`, as the warm check it stands for ended (returns if it cannot).
fn raise(sig: i32) {
    let Some(signal) = rustix::process::Signal::from_named_raw(sig) else {
        return;
    };
    // SAFETY: resetting a signal's disposition to the default touches no memory; Rust's runtime
    // ignores SIGPIPE, which would otherwise survive the kill below.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
    let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
}

/// Enter a throwaway sandbox — what every check needs, once, so a run can tell whether this
/// system can isolate checks before it starts any. What it creates lives in a tmpfs of its own
/// namespace (mounted over the temporary directory there): the probe touches no disk.
fn probe() -> Result<(), String> {
    namespaces(false).map_err(|e| e.to_string())?;
    let fail = |what: &'static str| move |e: rustix::io::Errno| format!("{what}: {e}");
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(fail("making mounts private"))?;
    let base = std::env::temp_dir();
    rustix::mount::mount(
        "checkdef-probe",
        &base,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=0755"),
    )
    .map_err(fail("mounting a tmpfs"))?;
    let mk = |n: &str| {
        let p = base.join(n);
        std::fs::create_dir(&p)
            .map(|()| p)
            .map_err(|e| format!("creating a probe directory: {e}"))
    };
    let spec = Spec {
        root: mk("root")?,
        lower: vec![mk("lower")?],
        upper: mk("upper")?,
        work: mk("work")?,
        tmp: mk("tmp")?,
        hide: vec![mk("hidden")?],
        expose: Vec::new(),
        network: false,
        writes_in_memory: true,
    };
    enter_mounts(&spec).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_not_root_inside() {
        assert_eq!(inner_id(0), 65534);
        assert_eq!(inner_id(1000), 1000);
    }

    #[test]
    fn specs_round_trip_as_json() {
        let spec = Spec {
            root: "/r".into(),
            lower: vec!["/a".into(), "/b".into()],
            upper: "/u".into(),
            work: "/w".into(),
            tmp: "/t".into(),
            hide: vec!["/h".into()],
            expose: vec![".venv".into()],
            network: false,
            writes_in_memory: true,
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<Spec>(&text).unwrap(), spec);
        // A repository below a directory whose name is not UTF-8.
        use std::os::unix::ffi::OsStrExt as _;
        let latin1 = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9/repo"));
        let spec = Spec {
            root: latin1.to_path_buf(),
            lower: vec![latin1.join("a")],
            ..spec
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<Spec>(&text).unwrap(), spec);
    }
}
