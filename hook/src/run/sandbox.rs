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
use std::path::PathBuf;

/// The directory new sandboxes are created in.
pub fn base() -> PathBuf {
    base_from(std::env::var_os("CHECKDEF_SANDBOX_DIR").filter(|v| !v.is_empty()))
}

fn base_from(explicit: Option<std::ffi::OsString>) -> PathBuf {
    explicit.map_or_else(std::env::temp_dir, PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_wins_over_the_temporary_directory() {
        assert_eq!(
            base_from(Some("/dev/shm".into())),
            PathBuf::from("/dev/shm")
        );
        assert_eq!(base_from(None), std::env::temp_dir());
    }
}

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

/// Whether an isolated check's writes into its view go to a tmpfs of its own (the default) or
/// to disk (`CHECKDEF_SANDBOX_WRITES=disk`, for checks that write large outputs into the
/// repository). Its `TMPDIR` is on disk either way.
pub fn writes_in_memory() -> bool {
    std::env::var_os("CHECKDEF_SANDBOX_WRITES").is_none_or(|v| v != "disk")
}

/// [`Isolation`] of this system, probed on first use.
pub fn isolation() -> Isolation {
    static ONCE: std::sync::OnceLock<Isolation> = std::sync::OnceLock::new();
    ONCE.get_or_init(probe).clone()
}

fn probe() -> Isolation {
    if std::env::var_os("CHECKDEF_ISOLATION").is_some_and(|v| v == "off") {
        return Isolation::Unavailable("CHECKDEF_ISOLATION=off".to_owned());
    }
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

/// The directory this user's sandboxes are created in: `<base>/checkdef-<uid>` (mode 0700).
/// It is hidden from every check, so no check sees another's files.
pub fn parent_dir() -> PathBuf {
    base().join(format!("checkdef-{}", rustix::process::getuid().as_raw()))
}

/// Create [`parent_dir`] (mode 0700) if it is missing.
pub fn create_parent() -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent_dir())
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
    pub fn new(name: &str) -> std::io::Result<RunDir> {
        let parent = parent_dir();
        let mut last = None;
        // A concurrent run may remove the (empty) parent between the two calls: try again.
        for _ in 0..3 {
            let _ = create_parent();
            match tempfile::Builder::new()
                .prefix(&format!("{}{name}-", super::sweep::PREFIX))
                .tempdir_in(&parent)
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

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // The parent stays for the run's other checks; the run removes it at its end.
        super::view::force_remove(&self.path);
    }
}
