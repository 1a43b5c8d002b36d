//! Small file-system helpers shared by every layer: atomic replacement of a file (fast, for
//! files whose loss in a crash only costs time, and durable, for the user's own files) and the
//! `stat` identity of a file.
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The identity of a file as `stat` reports it (following symlinks): any write changes its
/// ctime, any replacement its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {}.{} {}.{}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }
}

impl FileId {
    pub fn of(path: &Path) -> Option<FileId> {
        fs::metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the file last changed before `t` minus `settle` (a margin for clock granularity).
    pub fn settled_before(&self, t: SystemTime, settle: Duration) -> bool {
        let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        // A ctime before the epoch or absurdly far ahead never counts as settled.
        let (Ok(secs), Ok(nanos)) = (u64::try_from(self.ctime.0), u32::try_from(self.ctime.1))
        else {
            return false;
        };
        Duration::new(secs, 0)
            .checked_add(Duration::from_nanos(u64::from(nanos)))
            .and_then(|c| c.checked_add(settle))
            .is_some_and(|c| c <= since)
    }
}

/// Whether `t` lies more than `age` in the past.
pub fn older_than(t: SystemTime, age: Duration) -> bool {
    SystemTime::now()
        .duration_since(t)
        .is_ok_and(|elapsed| elapsed > age)
}

/// Set `path`'s mtime to now, recording a use (a read-only cache simply keeps its old times).
pub fn touch(path: &Path) {
    if let Ok(w) = fs::File::options().append(true).open(path) {
        let _ = w.set_modified(SystemTime::now());
    }
}

/// Temp file + rename, without fsync: for files whose loss in a crash only costs time (a stamp,
/// a kept fingerprint output).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Write `bytes` to `path` through a temporary file in the same directory, fsync and a rename,
/// mode 0644: for files the user keeps (`checkdef.toml`, a JUnit report).
pub fn write_durable(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".checkdef-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
