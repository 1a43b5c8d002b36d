//! Where a check's sandbox is created: `$CHECKDEF_SANDBOX_DIR` when set and not empty, else the
//! system's temporary directory (`$TMPDIR`, else `/tmp`).
//!
//! A sandbox is a fresh directory holding a copy of the segment's inputs (`src/`, the check's
//! working directory) and its private `TMPDIR` (`tmp/`), created and removed for every run. On a
//! tmpfs the copy costs milliseconds; on ext4, creating a thousand files where a thousand were
//! deleted shortly before can cost a third of a second or more (the inode allocator skips
//! recently freed inodes). `CHECKDEF_SANDBOX_DIR=/dev/shm` is therefore the fast choice — the
//! same trade as Bazel's `--sandbox_base=/dev/shm` — but not the default: whatever a check writes
//! into its working directory or `TMPDIR` (build outputs, coverage data, large temporary files)
//! would then live in memory, and a sandbox left behind by a killed run would hold memory until
//! the next reboot.
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
