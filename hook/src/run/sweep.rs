//! Sandboxes left behind by a run that was killed (SIGKILL, a crash, a power cut) are removed
//! by a later run, and a live run's sandboxes never are.
//!
//! Every sandbox holds a lock file, [`LOCK_FILE`], on which its run keeps an exclusive `flock`
//! for as long as the sandbox exists; the kernel releases it when the run's process ends, however
//! it ends. A sweep removes the `checkdef-*` directories of the sandbox base whose lock file it
//! can lock. A directory without the lock file is never touched: it is not checkdef's, or a run is
//! creating it this instant. The lock file is locked under a temporary name and renamed into
//! place, so no sweep ever finds it unlocked while its run is alive.
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// The lock file at the root of every sandbox (beside `src/` and `tmp/`, out of the check's
/// view). It holds the pid of the run, for people.
pub const LOCK_FILE: &str = ".checkdef-sandbox.lock";

/// The prefix of every sandbox directory's name.
pub const PREFIX: &str = "checkdef-";

/// Lock the fresh sandbox directory `dir` for as long as the returned file is open: the lock
/// is taken under a temporary name and renamed into place, so a sweep never finds it free.
pub fn lock_new(dir: &Path) -> std::io::Result<File> {
    let staging = dir.join(format!("{LOCK_FILE}.new"));
    let mut lock = File::create(&staging)?;
    rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
    writeln!(lock, "{}", std::process::id())?;
    std::fs::rename(&staging, dir.join(LOCK_FILE))?;
    Ok(lock)
}

/// Remove every sandbox in `base` whose run is gone; returns the removed directories.
pub fn sweep(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        if !e
            .file_name()
            .as_encoded_bytes()
            .starts_with(PREFIX.as_bytes())
            || !e.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let dir = e.path();
        // Opening for reading needs no write permission and never creates the file.
        let Ok(lock) = File::open(dir.join(LOCK_FILE)) else {
            continue;
        };
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a live run holds it
        }
        make_writable(&dir);
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// A check may leave read-only directories (its own `chmod -w`, Go's module cache); removing
/// their entries needs write permission on them. Best effort.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(meta) = std::fs::symlink_metadata(&d)
            && meta.is_dir()
        {
            let mode = meta.permissions().mode();
            if mode & 0o700 != 0o700 {
                let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o700));
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sandboxes_of_dead_runs_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let live = base.path().join("checkdef-live-abc");
        std::fs::create_dir(&live).unwrap();
        let held = lock_new(&live).unwrap();
        // A run that died: its lock file exists but nobody holds it.
        let dead = base.path().join("checkdef-dead-abc");
        std::fs::create_dir_all(dead.join("src/ro")).unwrap();
        std::fs::write(dead.join(LOCK_FILE), "12345\n").unwrap();
        std::fs::write(dead.join("src/ro/f"), "x").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dead.join("src/ro"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        // Not ours: no lock file.
        let other = base.path().join("checkdef-other");
        std::fs::create_dir(&other).unwrap();

        assert_eq!(sweep(base.path()), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.join(LOCK_FILE).exists());
        assert!(other.exists());
        // Once its run lets go of the lock, it is a dead run's sandbox.
        drop(held);
        assert_eq!(sweep(base.path()), vec![live.clone()]);
        assert!(!live.exists());
        assert!(sweep(base.path()).is_empty());
    }
}
