//! Where a check's sandbox is created.
//!
//! A sandbox is a fresh directory holding a copy of the segment's inputs, created and removed
//! for every run. On ext4, creating a thousand files in a row where a thousand were deleted
//! seconds before costs a third of a second and more (the inode allocator skips recently
//! deleted inodes), which was most of checkdef's overhead around a one-second test. On a tmpfs
//! the same copy takes a few milliseconds, so — like Bazel's `--sandbox_base=/dev/shm` — the
//! inputs go to `/dev/shm` when nothing says otherwise. In that case the check's own `TMPDIR`
//! stays on disk (a test writing gigabytes of temporary data must not fill memory).
//!
//! The base directory, in order:
//! 1. `$CHECKDEF_SANDBOX_DIR` when set and not empty;
//! 2. `$TMPDIR` when set and not empty (whoever set it chose where temporary files go);
//! 3. `/dev/shm` when it is a writable tmpfs that allows executables with at least 1 GiB free;
//! 4. the system's temporary directory (`/tmp`).
//!
//! A copy that runs out of space in `/dev/shm` is redone on disk.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Free space `/dev/shm` must have to be used.
const MIN_SHM_FREE: u64 = 1 << 30;

/// The chosen base directory and whether it is the automatic `/dev/shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub dir: PathBuf,
    /// The inputs are in memory: the check's `TMPDIR` goes to disk, and running out of space
    /// falls back to disk.
    pub in_memory: bool,
}

/// The base for this process (decided once).
pub fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        choose(
            var("CHECKDEF_SANDBOX_DIR").map(PathBuf::from),
            var("TMPDIR").map(PathBuf::from),
            Path::new("/dev/shm"),
        )
    })
}

/// The system's temporary directory (where an in-memory sandbox falls back to).
pub fn disk() -> PathBuf {
    std::env::temp_dir()
}

fn choose(explicit: Option<PathBuf>, tmpdir: Option<PathBuf>, shm: &Path) -> Base {
    if let Some(dir) = explicit.or(tmpdir) {
        return Base {
            dir,
            in_memory: false,
        };
    }
    if usable_tmpfs(shm) {
        return Base {
            dir: shm.to_path_buf(),
            in_memory: true,
        };
    }
    Base {
        dir: disk(),
        in_memory: false,
    }
}

/// A writable tmpfs, mounted without `noexec`, with enough free space.
pub fn usable_tmpfs(dir: &Path) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{StatVfsMountFlags, statfs, statvfs};
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        let (Ok(fs), Ok(vfs)) = (statfs(dir), statvfs(dir)) else {
            return false;
        };
        #[allow(clippy::unnecessary_cast)] // the field type differs between platforms
        let is_tmpfs = fs.f_type as i64 == TMPFS_MAGIC;
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        is_tmpfs
            && !vfs.f_flag.contains(StatVfsMountFlags::NOEXEC)
            && !vfs.f_flag.contains(StatVfsMountFlags::RDONLY)
            && free >= MIN_SHM_FREE
            && rustix::fs::access(
                dir,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            )
            .is_ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = dir;
        false
    }
}

/// Whether an error chain is "no space left on device" (or over a quota).
pub fn is_out_of_space(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_settings_win_over_dev_shm() {
        let shm = Path::new("/dev/shm");
        let a = PathBuf::from("/explicit");
        let t = PathBuf::from("/tmpdir");
        assert_eq!(
            choose(Some(a.clone()), Some(t.clone()), shm),
            Base {
                dir: a,
                in_memory: false
            }
        );
        assert_eq!(
            choose(None, Some(t.clone()), shm),
            Base {
                dir: t,
                in_memory: false
            }
        );
    }

    #[test]
    fn only_a_usable_tmpfs_is_taken() {
        // A directory on the disk the tests run from is not a tmpfs; a missing one is nothing.
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert!(!usable_tmpfs(d.path()));
        assert!(!usable_tmpfs(Path::new("/nonexistent/checkdef")));
        assert_eq!(
            choose(None, None, Path::new("/nonexistent/checkdef")),
            Base {
                dir: disk(),
                in_memory: false
            }
        );
        // Where the machine has a usable /dev/shm it is chosen (and is in memory).
        if usable_tmpfs(Path::new("/dev/shm")) {
            assert!(choose(None, None, Path::new("/dev/shm")).in_memory);
        }
    }

    #[test]
    fn out_of_space_is_recognised_through_context() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::StorageFull))
            .context("writing x")
            .context("materialising y");
        assert!(is_out_of_space(&e));
        assert!(!is_out_of_space(&anyhow::anyhow!("other")));
    }
}
