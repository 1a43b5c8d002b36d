//! Where a check's private directory is created — `$CHECKDEF_SANDBOX_DIR/checkdef-<uid>/` when
//! that is set and not empty, else in the system's temporary directory (`$TMPDIR`, else `/tmp`) —
//! and whether this system can isolate checks at all ([`isolation`], probed once per process).
//!
//! With isolation (see `isolate.rs`), the private directory holds the check's writable overlay
//! layer, its `TMPDIR` and its spec; the inputs come from persistent layers (`view.rs`), so
//! nothing proportional to the inputs is written. Without isolation it also holds a copy of the
//! inputs (`src/`, the check's working directory). On ext4, creating a thousand files where a
//! thousand were deleted shortly before can cost a third of a second or more (the inode
//! allocator skips recently freed inodes), which is why `CHECKDEF_SANDBOX_DIR=/dev/shm` was the
//! fast choice for copies — the same trade as Bazel's `--sandbox_base=/dev/shm` — but not the
//! default: whatever a check writes would then live in memory.
use std::path::{Path, PathBuf};

pub use crate::context::SandboxSettings;

/// Whether this system can isolate checks (see `run/isolate.rs`), decided once per process
/// by entering a throwaway sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// User, mount and network namespaces and overlayfs work; `landlock` is the kernel's
    /// Landlock ABI version (0: none, so `/proc/PID/cwd` of other processes stays readable).
    Available { landlock: i64 },
    /// Why not: checks run as before isolation existed, in a copy of their inputs.
    Unavailable(String),
}

impl Isolation {
    /// One line for `checkdef status` and the once-per-run warning.
    pub fn describe(&self) -> String {
        match self {
            Isolation::Available { landlock } if *landlock > 0 => format!(
                "isolated (user, mount and network namespaces; the view is mounted at the repository's path; Landlock ABI {landlock})"
            ),
            Isolation::Available { .. } => "isolated (user, mount and network namespaces; the view is mounted at the repository's path; no Landlock: other processes' /proc/PID/cwd stay readable)".to_owned(),
            Isolation::Unavailable(why) => format!(
                "NOT isolated ({why}): checks run in a copy of their inputs and can read the work tree by absolute path, through an editable install, and the network"
            ),
        }
    }
}

/// [`Isolation`] of this system, probed on first use (`CHECKDEF_ISOLATION=off` in `settings`
/// turns it off without a probe).
pub fn isolation(settings: &SandboxSettings) -> Isolation {
    if settings.isolation_off {
        return Isolation::Unavailable("CHECKDEF_ISOLATION=off".to_owned());
    }
    static ONCE: std::sync::OnceLock<Isolation> = std::sync::OnceLock::new();
    ONCE.get_or_init(probe).clone()
}

fn probe() -> Isolation {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Isolation::Unavailable(format!("cannot find the checkdef binary: {e}")),
    };
    let out = std::process::Command::new(exe)
        .arg(super::isolate::ENTRY)
        .arg("--probe")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Isolation::Available {
            landlock: super::isolate::landlock_abi(),
        },
        Ok(o) => Isolation::Unavailable(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Err(e) => Isolation::Unavailable(format!("cannot start the probe: {e}")),
    }
}

/// Create `parent` (this user's directory of sandboxes, [`SandboxSettings::parent_dir`]:
/// `<base>/checkdef-<uid>`, mode 0700) if it is missing. It is hidden from every check, so no
/// check sees another's files.
pub fn create_parent(parent: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
}

/// One check's private directory: `upper/` and `work/` (its overlay layers), `tmp/` (its
/// `TMPDIR`), `spec.json`, and a private `inputs/` copy when the persistent one is busy.
/// Removed on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    // Held while the check runs, so a concurrent run's sweep (run/sweep.rs) leaves it alone; a
    // killed run's directory is free to sweep.
    _lock: std::fs::File,
}

impl RunDir {
    /// A new directory for segment `name` in `parent` (see [`create_parent`]).
    pub fn new(parent: &Path, name: &str) -> std::io::Result<RunDir> {
        let mut last = None;
        // A concurrent run may remove the (empty) parent between the two calls: try again.
        for _ in 0..3 {
            let _ = create_parent(parent);
            match tempfile::Builder::new()
                .prefix(&format!("{}{name}-", super::sweep::PREFIX))
                .tempdir_in(parent)
            {
                Ok(d) => {
                    let lock = super::sweep::lock_new(d.path())?;
                    return Ok(RunDir {
                        path: d.keep(),
                        _lock: lock,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("cannot create a sandbox directory")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // The parent stays for the run's other checks; the run removes it at its end.
        super::view::force_remove(&self.path);
    }
}
