//! What the environment's start-up code looks at.
//!
//! The warm server runs the environment's start-up code (`.pth` import lines, `sitecustomize`,
//! `usercustomize`) and pytest's import once, in its own empty directory, outside the sandbox;
//! a fresh check runs them in the check's directory, in the sandbox. Code that looks at the
//! current directory (a `.pth` that loads `.env` from there) would see nothing in the server
//! and something in a fresh check: a wrong verdict. No unprivileged interface reports a failed
//! `stat(2)` (fanotify needs CAP_SYS_ADMIN, an audit hook does not see `os.path.exists`), so the
//! probe runs that same code once more, in an empty directory of its own, and watches its
//! system calls: a seccomp filter hands every call that names a path relative to the current
//! directory (or the directory itself, or starts a process) to this process, which ptrace(2)s
//! the probe and reads the path. Only calls made between the probe's marks count (see
//! `startup_probe.py`): Python's own start-up makes none of these. Any such call, or a probe
//! that cannot be watched, keeps the server's checks in fresh processes.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The probe program.
const PROBE_PY: &str = include_str!("startup_probe.py");

/// How long the probe may take before its start-up counts as a doubt (a start-up that waits on
/// something is not one to copy into every check).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The start-up code looked at nothing a check's directory or TMPDIR could change. With
    /// the top-level modules it looked for and found nowhere (a `try: import localconf`): a
    /// check whose directory holds one must run fresh (warm_server.py's shadow check).
    Clean(Vec<String>),
    /// Why the checks of this environment must run fresh.
    Doubt(String),
}

/// Where and how to run one probe: the interpreter the server runs (`sys.executable`), the
/// environment it was started with, the directory the server started in (its mentions in that
/// environment name the probe's own directory instead), and a fresh private directory.
pub struct Probe<'a> {
    pub executable: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub server_cwd: &'a Path,
    pub dir: &'a Path,
    /// Where clean verdicts are kept between runs, with what they looked at.
    pub cache: Option<&'a Path>,
}

impl Probe<'_> {
    /// Run the probe (or find its clean verdict kept, everything it looked at unchanged);
    /// every failure to watch it is a doubt.
    pub fn run(&self) -> Verdict {
        let kept = self.cache.map(|c| c.join(self.key()));
        if let Some(k) = &kept
            && let Some(missing) = still_clean(k)
        {
            return Verdict::Clean(missing);
        }
        match self.try_run() {
            Ok((Verdict::Clean(missing), reads)) => {
                if let Some(k) = &kept {
                    keep(k, self.executable, &reads, &missing);
                }
                Verdict::Clean(missing)
            }
            Ok((v, _)) => v,
            Err(e) => Verdict::Doubt(format!(
                "checkdef could not watch the environment's start-up code ({e})"
            )),
        }
    }

    /// The kept verdict's name: the probe, the interpreter and the environment (the server's
    /// directory in it stands for whichever directory a server starts in).
    fn key(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        let cwd = self.server_cwd.to_string_lossy();
        h.update(PROBE_PY.as_bytes());
        h.update(b"\0");
        h.update(self.executable.as_os_str().as_bytes());
        for (k, v) in self.env {
            if k == "PWD" || k == "TMPDIR" {
                continue;
            }
            h.update(b"\0");
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.replace(cwd.as_ref(), "\u{1}").as_bytes());
        }
        let d = h.finalize();
        d.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn try_run(&self) -> std::io::Result<(Verdict, Vec<PathBuf>)> {
        let cwd = self.dir.join("cwd");
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&cwd)?;
        std::fs::create_dir_all(&tmp)?;
        let script = self.dir.join("probe.py");
        std::fs::write(&script, PROBE_PY)?;
        let mark = self.dir.join("mark-");
        let server_cwd = self.server_cwd.to_string_lossy().into_owned();
        let cwd_s = cwd.to_string_lossy().into_owned();
        let mut env: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(&server_cwd, &cwd_s)))
            .collect();
        env.insert("PWD".into(), cwd_s.clone());
        env.insert("TMPDIR".into(), tmp.to_string_lossy().into_owned());
        let watch = Watch {
            cwd: cwd.clone(),
            tmp,
            mark: mark.as_os_str().as_bytes().to_vec(),
            import_roots: import_roots(env.get("PYTHONPATH").map(String::as_str), &cwd),
            reads: Default::default(),
            missing: Default::default(),
        };
        let mut cmd = std::process::Command::new(self.executable);
        cmd.arg("-S")
            .arg(&script)
            .arg(&mark)
            .current_dir(&cwd)
            .env_clear()
            .envs(&env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let verdict = match trace(cmd, &watch)? {
            Verdict::Clean(_) => Verdict::Clean(watch.missing.into_inner()),
            doubt => doubt,
        };
        Ok((verdict, watch.reads.into_inner().into_iter().collect()))
    }
}

/// Directories under the probe's directory that are `sys.path` entries (relative `PYTHONPATH`
/// entries): the import system's lookups there are the warm server's shadow check's business
/// (run/warm_server.py, `start_doubt`), not the start-up code's.
fn import_roots(pythonpath: Option<&str>, cwd: &Path) -> Vec<PathBuf> {
    pythonpath
        .unwrap_or("")
        .split(':')
        .filter(|e| !e.starts_with('/'))
        .map(|e| normal(&cwd.join(e)))
        .collect()
}

/// `p` without `.` and `..` components (lexically, as Python's `abspath` does).
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// What the tracer looks for.
struct Watch {
    cwd: PathBuf,
    tmp: PathBuf,
    mark: Vec<u8>,
    import_roots: Vec<PathBuf>,
    /// Every other path looked at between the marks: what a kept verdict depends on.
    reads: std::cell::RefCell<std::collections::BTreeSet<PathBuf>>,
    /// The top-level modules the start-up code looked for and found nowhere (the probe's
    /// `missing:` mark).
    missing: std::cell::RefCell<Vec<String>>,
}

/// What identifies the file (or its absence) at `p`: the same answer means the same file,
/// unchanged (a directory's entries change its mtime).
fn identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let one = |m: std::io::Result<std::fs::Metadata>| match m {
        Ok(m) => format!(
            "{} {} {:o} {} {}.{} {}.{}",
            m.dev(),
            m.ino(),
            m.mode(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
        Err(e) => format!("missing {}", e.raw_os_error().unwrap_or(0)),
    };
    format!(
        "{} / {}",
        one(std::fs::symlink_metadata(p)),
        one(std::fs::metadata(p))
    )
}

/// The names of the verdict kept at `k` if it is clean and everything it looked at is as it
/// was.
fn still_clean(k: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(k).ok()?;
    let mut lines = text.lines();
    if lines.next() != Some("clean") {
        return None;
    }
    let mut missing = Vec::new();
    for l in lines {
        if let Some(name) = l.strip_prefix("missing ") {
            missing.push(name.to_owned());
            continue;
        }
        let (p, id) = l.split_once('\t')?;
        if identity(Path::new(p)) != id {
            return None;
        }
    }
    Some(missing)
}

/// Keep a clean verdict at `k` (atomically), unless something it looked at changed in the
/// last two seconds (a change within the timestamps' granularity could go unseen).
fn keep(k: &Path, executable: &Path, reads: &[PathBuf], missing: &[String]) {
    use std::fmt::Write as _;
    let now = std::time::SystemTime::now();
    let mut text = "clean\n".to_owned();
    for name in missing {
        let _ = writeln!(text, "missing {name}");
    }
    for p in std::iter::once(executable).chain(reads.iter().map(PathBuf::as_path)) {
        let Some(s) = p.to_str().filter(|s| !s.contains(['\t', '\n'])) else {
            return;
        };
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_none_or(|age| age < Duration::from_secs(2))
        {
            return;
        }
        let _ = writeln!(text, "{s}\t{}", identity(p));
    }
    let Some(dir) = k.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = k.with_extension(format!("new-{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, k).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A name the import system looks up: a package directory, a module with its suffix, a
/// `__pycache__` entry.
fn import_like(name: &OsStr) -> bool {
    let name = name.as_bytes();
    if name == b"__pycache__" {
        return true;
    }
    let (stem, suffix) = match name.iter().position(|&b| b == b'.') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let ident = stem
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && stem.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    ident
        && suffix.is_none_or(|s| {
            matches!(s, b"py" | b"pyc" | b"pyw" | b"so")
                || s.ends_with(b".so")
                || s.ends_with(b".pyc")
        })
}

impl Watch {
    /// Why looking at the absolute path `p` is a doubt, or None.
    fn absolute(&self, p: &Path) -> Option<String> {
        let p = normal(p);
        // /proc/self/cwd, /proc/thread-self/cwd, /proc/PID/cwd, /proc/PID/task/TID/cwd.
        let names: Vec<&OsStr> = p.iter().collect();
        let cwd_self = names.get(1).is_some_and(|n| *n == "proc")
            && (names.get(3).is_some_and(|n| *n == "cwd")
                || (names.get(3).is_some_and(|n| *n == "task")
                    && names.get(5).is_some_and(|n| *n == "cwd")));
        if cwd_self {
            return Some(format!("looks at the current directory ({})", p.display()));
        }
        if let Ok(rest) = p.strip_prefix(&self.tmp) {
            return Some(format!("looks at its TMPDIR ({})", rest.display()));
        }
        let Ok(rest) = p.strip_prefix(&self.cwd) else {
            self.reads.borrow_mut().insert(p);
            return None;
        };
        for root in &self.import_roots {
            if let Ok(under) = p.strip_prefix(root)
                && under.components().all(|c| import_like(c.as_os_str()))
            {
                return None;
            }
        }
        let shown = if rest.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            rest.display().to_string()
        };
        Some(format!("looks at the current directory ({shown})"))
    }

    /// Why looking at `path` (as the call gave it) is a doubt, or None.
    fn path(&self, path: &[u8]) -> Option<String> {
        if path.first() == Some(&b'/') {
            self.absolute(Path::new(OsStr::from_bytes(path)))
        } else {
            let shown = if path.is_empty() {
                ".".to_owned()
            } else {
                String::from_utf8_lossy(path).into_owned()
            };
            Some(format!("looks at the current directory ({shown})"))
        }
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
// The tracer is system calls from end to end: ptrace, seccomp, process_vm_readv, waitpid.
#[allow(unsafe_code)]
mod tracer {
    use super::{PROBE_TIMEOUT, Verdict, Watch};
    use std::io::{Error, Result};
    use std::os::fd::{FromRawFd as _, OwnedFd};
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::process::CommandExt as _;
    use std::path::PathBuf;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    const AT_FDCWD_LOW: u32 = libc::AT_FDCWD as u32;
    const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
    const PTRACE_SYSCALL_INFO_SECCOMP: u8 = 3;

    /// `struct ptrace_syscall_info` with its seccomp member (linux/ptrace.h).
    #[repr(C)]
    #[derive(Default)]
    struct SyscallInfo {
        op: u8,
        _pad: [u8; 3],
        arch: u32,
        _ip: u64,
        _sp: u64,
        nr: u64,
        args: [u64; 6],
        _ret_data: u32,
        _pad2: u32,
    }

    /// How a watched call names what it looks at.
    #[derive(Clone, Copy)]
    enum Kind {
        /// Always a doubt: the current directory itself, a new process, a way around the filter.
        Doubt(&'static str),
        /// A path argument, resolved against the current directory.
        Path(usize),
        /// Two path arguments (rename, link).
        Paths(usize, usize),
        /// `(dirfd, path)` at these argument positions; the filter hands it over only when the
        /// first `dirfd` is AT_FDCWD (a call relative to an open directory follows a lookup that
        /// was watched when that directory was opened).
        At(usize, usize),
        /// Two `(dirfd, path)` pairs, always handed over.
        At2(usize, usize, usize, usize),
        /// `connect`/`bind`: a Unix socket's path.
        Socket,
    }

    /// The calls handed over, with their numbers on this architecture. The numbers from 403 up
    /// are the same on every architecture; the libc crate lacks some of them.
    fn calls() -> Vec<(i64, Kind)> {
        use Kind::*;
        let mut v: Vec<(i64, Kind)> = vec![
            (libc::SYS_getcwd, Doubt("asks for the current directory")),
            (libc::SYS_chdir, Doubt("changes the current directory")),
            (libc::SYS_fchdir, Doubt("changes the current directory")),
            (libc::SYS_clone, Doubt("starts a process or a thread")),
            (435, Doubt("starts a process or a thread")), // clone3
            (425, Doubt("uses io_uring")),                // io_uring_setup
            (libc::SYS_chroot, Doubt("changes its root")),
            (libc::SYS_mount, Doubt("mounts")),
            (libc::SYS_umount2, Doubt("mounts")),
            (libc::SYS_pivot_root, Doubt("mounts")),
            (428, Doubt("mounts")), // open_tree
            (429, Doubt("mounts")), // move_mount
            (433, Doubt("mounts")), // fspick
            (442, Doubt("mounts")), // mount_setattr
            (libc::SYS_fanotify_mark, Doubt("watches files")),
            (libc::SYS_name_to_handle_at, Doubt("opens files by handle")),
            (libc::SYS_open_by_handle_at, Doubt("opens files by handle")),
            (libc::SYS_openat, At(0, 1)),
            (437, At(0, 1)), // openat2
            (libc::SYS_newfstatat, At(0, 1)),
            (libc::SYS_statx, At(0, 1)),
            (libc::SYS_faccessat, At(0, 1)),
            (439, At(0, 1)), // faccessat2
            (libc::SYS_readlinkat, At(0, 1)),
            (libc::SYS_mkdirat, At(0, 1)),
            (libc::SYS_unlinkat, At(0, 1)),
            (libc::SYS_fchmodat, At(0, 1)),
            (452, At(0, 1)), // fchmodat2
            (libc::SYS_fchownat, At(0, 1)),
            (libc::SYS_utimensat, At(0, 1)),
            (libc::SYS_mknodat, At(0, 1)),
            (463, At(0, 1)), // setxattrat
            (464, At(0, 1)), // getxattrat
            (465, At(0, 1)), // listxattrat
            (466, At(0, 1)), // removexattrat
            (libc::SYS_renameat, At2(0, 1, 2, 3)),
            (libc::SYS_renameat2, At2(0, 1, 2, 3)),
            (libc::SYS_linkat, At2(0, 1, 2, 3)),
            (libc::SYS_symlinkat, At2(1, 2, 1, 2)),
            (libc::SYS_statfs, Path(0)),
            (libc::SYS_truncate, Path(0)),
            (libc::SYS_getxattr, Path(0)),
            (libc::SYS_lgetxattr, Path(0)),
            (libc::SYS_setxattr, Path(0)),
            (libc::SYS_lsetxattr, Path(0)),
            (libc::SYS_listxattr, Path(0)),
            (libc::SYS_llistxattr, Path(0)),
            (libc::SYS_removexattr, Path(0)),
            (libc::SYS_lremovexattr, Path(0)),
            (libc::SYS_inotify_add_watch, Path(1)),
            (libc::SYS_connect, Socket),
            (libc::SYS_bind, Socket),
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([
            (libc::SYS_fork, Doubt("starts a process")),
            (libc::SYS_vfork, Doubt("starts a process")),
            (libc::SYS_uselib, Doubt("loads a library by name")),
            (libc::SYS_open, Path(0)),
            (libc::SYS_creat, Path(0)),
            (libc::SYS_stat, Path(0)),
            (libc::SYS_lstat, Path(0)),
            (libc::SYS_access, Path(0)),
            (libc::SYS_readlink, Path(0)),
            (libc::SYS_mkdir, Path(0)),
            (libc::SYS_rmdir, Path(0)),
            (libc::SYS_unlink, Path(0)),
            (libc::SYS_chmod, Path(0)),
            (libc::SYS_chown, Path(0)),
            (libc::SYS_lchown, Path(0)),
            (libc::SYS_utime, Path(0)),
            (libc::SYS_utimes, Path(0)),
            (libc::SYS_mknod, Path(0)),
            (libc::SYS_rename, Paths(0, 1)),
            (libc::SYS_link, Paths(0, 1)),
            (libc::SYS_symlink, Path(1)),
            (libc::SYS_futimesat, At(0, 1)),
        ]);
        v
    }

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(k: u32, jt: usize, jf: usize) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: jt as u8,
            jf: jf as u8,
            k,
        }
    }

    /// The filter: hand over the calls of [`calls`] (an `At` one only with AT_FDCWD), and every
    /// call of another ABI (i386, x32), which the tracer does not read and counts as a doubt.
    fn filter(calls: &[(i64, Kind)]) -> Vec<libc::sock_filter> {
        let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let mut f = vec![
            stmt(ld, 4), // seccomp_data.arch
            jump(AUDIT_ARCH, 1, 0),
            stmt(ret, libc::SECCOMP_RET_TRACE),
            stmt(ld, 0), // seccomp_data.nr
        ];
        #[cfg(target_arch = "x86_64")]
        f.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            // to the TRACE return below the list
            jt: (calls.len() + 1) as u8,
            jf: 0,
            k: 0x4000_0000, // __X32_SYSCALL_BIT
        });
        let n = calls.len();
        for (i, (nr, kind)) in calls.iter().enumerate() {
            // After this jump come n-i-1 more, then ALLOW, TRACE, the AT_FDCWD check.
            let to_trace = n - i - 1 + 1;
            let to_check = n - i - 1 + 2;
            let target = if matches!(kind, Kind::At(..)) {
                to_check
            } else {
                to_trace
            };
            f.push(jump(*nr as u32, target, 0));
        }
        f.extend([
            stmt(ret, libc::SECCOMP_RET_ALLOW),
            stmt(ret, libc::SECCOMP_RET_TRACE),
            // An `At` call: its first argument's low 32 bits against AT_FDCWD.
            stmt(ld, 16),
            jump(AT_FDCWD_LOW, 1, 0),
            stmt(ret, libc::SECCOMP_RET_ALLOW),
            stmt(ret, libc::SECCOMP_RET_TRACE),
        ]);
        f
    }

    fn check(rc: libc::c_long, what: &str) -> Result<libc::c_long> {
        if rc == -1 {
            let e = Error::last_os_error();
            Err(Error::new(e.kind(), format!("{what}: {e}")))
        } else {
            Ok(rc)
        }
    }

    /// A NUL-terminated string of the tracee at `addr` (at most PATH_MAX bytes).
    fn read_string(pid: i32, addr: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut addr = addr;
        while out.len() < libc::PATH_MAX as usize {
            // Never across a page: the next one may not be mapped.
            let buf = read_bytes(pid, addr, 4096 - (addr as usize % 4096))?;
            if let Some(end) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..end]);
                return Ok(out);
            }
            if buf.is_empty() {
                break;
            }
            addr += buf.len() as u64;
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    /// Up to `len` bytes of the tracee at `addr`.
    fn read_bytes(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: both iovecs describe memory of the right length; the remote one is only read.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        let n = check(n as libc::c_long, "process_vm_readv")? as usize;
        buf.truncate(n);
        Ok(buf)
    }

    /// The directory an open descriptor of the tracee names.
    fn fd_path(pid: i32, fd: u64) -> Result<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/fd/{}", fd as i32))
    }

    struct Tracee<'a> {
        pid: i32,
        watch: &'a Watch,
        open: bool,
        done: bool,
    }

    impl Tracee<'_> {
        /// One `(dirfd, path)` lookup: Some(why) when it is a doubt.
        fn lookup(&mut self, dirfd: Option<u64>, addr: u64) -> Result<Option<String>> {
            if addr == 0 {
                // utimensat(fd, NULL): the descriptor itself.
                return Ok(match dirfd {
                    Some(fd) if fd as u32 != AT_FDCWD_LOW => None,
                    _ => Some("looks at the current directory (.)".to_owned()),
                });
            }
            let path = read_string(self.pid, addr)?;
            if path.starts_with(&self.watch.mark) {
                match &path[self.watch.mark.len()..] {
                    b"open" => self.open = true,
                    b"close" => self.open = false,
                    b"done" => self.done = true,
                    rest => {
                        if let Some(names) = rest.strip_prefix(b"missing:") {
                            *self.watch.missing.borrow_mut() = names
                                .split(|&b| b == b',')
                                .filter(|n| !n.is_empty())
                                .map(|n| String::from_utf8_lossy(n).into_owned())
                                .collect();
                        }
                    }
                }
                return Ok(None);
            }
            if !self.open {
                return Ok(None);
            }
            Ok(match dirfd {
                Some(fd) if fd as u32 != AT_FDCWD_LOW && path.first() != Some(&b'/') => {
                    let base = fd_path(self.pid, fd)?;
                    self.watch
                        .absolute(&base.join(std::ffi::OsStr::from_bytes(&path)))
                }
                _ => self.watch.path(&path),
            })
        }

        fn stop(&mut self, info: &SyscallInfo, kinds: &[(i64, Kind)]) -> Result<Option<String>> {
            if info.arch != AUDIT_ARCH || info.nr >= 0x4000_0000 {
                return Ok(Some("makes system calls of another ABI".to_owned()));
            }
            let Some((_, kind)) = kinds.iter().find(|(nr, _)| *nr as u64 == info.nr) else {
                return Ok(Some(format!("makes system call {}", info.nr)));
            };
            let a = &info.args;
            match *kind {
                // Python's own start-up asks for the directory to make relative entries absolute.
                Kind::Doubt(why) => Ok(self.open.then(|| why.to_owned())),
                Kind::Path(i) => self.lookup(None, a[i]),
                Kind::Paths(i, j) => Ok(self.lookup(None, a[i])?.or(self.lookup(None, a[j])?)),
                Kind::At(d, p) => self.lookup(Some(a[d]), a[p]),
                Kind::At2(d1, p1, d2, p2) => Ok(self
                    .lookup(Some(a[d1]), a[p1])?
                    .or(self.lookup(Some(a[d2]), a[p2])?)),
                Kind::Socket => {
                    let len = (a[2] as usize).min(std::mem::size_of::<libc::sockaddr_un>());
                    let addr = read_bytes(self.pid, a[1], len)?;
                    if addr.len() < 3
                        || u16::from_ne_bytes([addr[0], addr[1]]) != libc::AF_UNIX as u16
                        || addr[2] == 0
                    {
                        return Ok(None);
                    }
                    let path: Vec<u8> = addr[2..].iter().copied().take_while(|&b| b != 0).collect();
                    if !self.open {
                        return Ok(None);
                    }
                    Ok(self.watch.path(&path))
                }
            }
        }
    }

    fn wait(pid: i32) -> Result<i32> {
        let mut status = 0;
        loop {
            // SAFETY: plain waitpid on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
            if r == pid {
                return Ok(status);
            }
            let e = Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    fn ptrace(req: libc::c_uint, pid: i32, addr: usize, data: usize) -> Result<libc::c_long> {
        // SAFETY: requests on our own stopped tracee; `data` points to memory of the right size
        // where a request writes.
        let rc = unsafe {
            libc::ptrace(
                req,
                pid,
                addr as *mut libc::c_void,
                data as *mut libc::c_void,
            )
        };
        check(rc, "ptrace")
    }

    /// Spawn `cmd` traced, follow it to its end (or the first doubt) and say what it did.
    pub fn trace(mut cmd: std::process::Command, watch: &Watch) -> Result<Verdict> {
        let kinds = calls();
        let prog_filter = filter(&kinds);
        let prog = libc::sock_fprog {
            len: prog_filter.len() as u16,
            filter: prog_filter.as_ptr() as *mut libc::sock_filter,
        };
        let prog_addr = &prog as *const libc::sock_fprog as usize;
        // SAFETY: only async-signal-safe calls between fork and exec; the filter lives until
        // spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1
                    || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, prog_addr) == -1
                {
                    return Err(Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // A watchdog that kills by pidfd, which cannot name another process once this one is
        // reaped.
        // SAFETY: pidfd_open on our own child; the descriptor is owned below.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = check(pidfd, "pidfd_open")?;
        // SAFETY: a new descriptor nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let dog = {
            let fd = pidfd.try_clone()?;
            std::thread::spawn(move || {
                use std::os::fd::AsRawFd as _;
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(PROBE_TIMEOUT)
                {
                    // SAFETY: a signal through our own pidfd.
                    unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            fd.as_raw_fd(),
                            libc::SIGKILL,
                            0,
                            0,
                        )
                    };
                    true
                } else {
                    false
                }
            })
        };
        let result = follow(pid, watch, &kinds);
        let status = match &result {
            Ok(Ended::Exited(st, _)) => Some(*st),
            _ => {
                use std::os::fd::AsRawFd as _;
                // SAFETY: as above.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        0,
                        0,
                    )
                };
                // Reap it (stopped or running, SIGKILL ends it).
                loop {
                    match wait(pid) {
                        Ok(st) if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) => break None,
                        Ok(_) => {}
                        Err(_) => break None,
                    }
                }
            }
        };
        drop(stop_tx);
        let timed_out = dog.join().unwrap_or(false);
        drop(child);
        Ok(match result? {
            Ended::Doubt(why) => Verdict::Doubt(format!("the environment's start-up code {why}")),
            Ended::Exited(..) if timed_out => Verdict::Doubt(format!(
                "the environment's start-up took over {} s",
                PROBE_TIMEOUT.as_secs()
            )),
            Ended::Exited(st, done) => {
                if status.is_some() && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 && done {
                    Verdict::Clean(Vec::new())
                } else {
                    Verdict::Doubt(format!(
                        "the probe of the environment's start-up did not end as expected (wait status {st})"
                    ))
                }
            }
        })
    }

    enum Ended {
        /// A doubt; the probe still runs.
        Doubt(String),
        /// It ended (reaped) with this wait status; whether it reached its last mark.
        Exited(i32, bool),
    }

    fn follow(pid: i32, watch: &Watch, kinds: &[(i64, Kind)]) -> Result<Ended> {
        // The first stop is the SIGTRAP after exec: nothing of the program has run yet.
        let st = wait(pid)?;
        if !libc::WIFSTOPPED(st) {
            return Ok(Ended::Exited(st, false));
        }
        ptrace(
            libc::PTRACE_SETOPTIONS as libc::c_uint,
            pid,
            0,
            (libc::PTRACE_O_TRACESECCOMP | libc::PTRACE_O_EXITKILL) as usize,
        )?;
        ptrace(libc::PTRACE_CONT as libc::c_uint, pid, 0, 0)?;
        let mut t = Tracee {
            pid,
            watch,
            open: false,
            done: false,
        };
        loop {
            let st = wait(pid)?;
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                return Ok(Ended::Exited(st, t.done));
            }
            if st >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_SECCOMP << 8)) {
                let mut info = SyscallInfo::default();
                ptrace(
                    PTRACE_GET_SYSCALL_INFO,
                    pid,
                    std::mem::size_of::<SyscallInfo>(),
                    &mut info as *mut SyscallInfo as usize,
                )?;
                if info.op != PTRACE_SYSCALL_INFO_SECCOMP {
                    return Err(Error::other("an unexpected ptrace stop"));
                }
                if let Some(why) = t.stop(&info, kinds)? {
                    return Ok(Ended::Doubt(why));
                }
                ptrace(libc::PTRACE_CONT as libc::c_uint, pid, 0, 0)?;
            } else {
                // A signal for the probe: deliver it.
                let sig = libc::WSTOPSIG(st);
                let sig = if sig == libc::SIGTRAP { 0 } else { sig };
                ptrace(libc::PTRACE_CONT as libc::c_uint, pid, 0, sig as usize)?;
            }
        }
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
use tracer::trace;

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn trace(_: std::process::Command, _: &Watch) -> std::io::Result<Verdict> {
    Err(std::io::Error::other("no tracer for this architecture"))
}
