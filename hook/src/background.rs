//! Checks that run outside the command that needed them: the checks a push deferred at its
//! budget (`[hook] on-budget = "defer"`) and pre-warming (`checkdef warm`, the post-commit hook).
//!
//! Two pieces of state live in the local cache directory, both robust to a holder that is
//! killed, because both are `flock`s, which the kernel releases when the holder's process ends
//! however it ends (never a pid file, which a SIGKILL would leave claiming a dead process):
//!
//! - `checkdef-locks/<input hash>`: held by whoever is running the check of that input hash. A
//!   run that needs the same check waits for the holder and then uses its stored result
//!   instead of running it a second time ([`InputLock`]).
//! - `checkdef-background/<id>.json` and `.log` (and `.lock`, held for the background run's
//!   whole life): what a background run was asked to do and, once it ends, how each check
//!   ended ([`Record`]); the log is everything it printed. Records are written atomically.
//!   The next checkdef command reports the finished runs nobody was told about yet
//!   ([`unreported`]); `checkdef status` lists the running and recent ones.
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::manifest::InputHash;

/// Directory of the per-input-hash locks in the local cache.
pub const LOCKS_DIR: &str = "checkdef-locks";
/// Directory of the background runs' records and logs in the local cache.
pub const RUNS_DIR: &str = "checkdef-background";
/// How many finished records (with their logs) are kept; older ones are removed.
pub const KEEP_RECORDS: usize = 20;

/// The exclusive right to run the check of one input hash.
///
/// Acquiring: open (creating) `checkdef-locks/<hash>`, take a non-blocking exclusive `flock`,
/// then make sure the path still names the locked file (a releasing holder may have unlinked
/// it between our open and our lock; then we retry). Releasing ([`Drop`]): unlink the path
/// while still holding the lock, then close. So a lock file exists only while someone holds it
/// or was killed holding it; a killed holder's file is unlocked, and the next acquirer simply
/// takes it.
#[derive(Debug)]
pub struct InputLock {
    path: PathBuf,
    _file: File,
}

impl InputLock {
    /// The lock of `input_hash` in the cache at `local`; `Ok(None)` when another process holds
    /// it (it is running that check right now).
    pub fn try_acquire(local: &Path, input_hash: &InputHash) -> io::Result<Option<InputLock>> {
        let dir = local.join(LOCKS_DIR);
        std::fs::create_dir_all(&dir)?;
        // Its hex spelling: a plain file name, by construction.
        let path = dir.join(input_hash.to_hex());
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let ours = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {
                    return Ok(Some(InputLock { path, _file: file }));
                }
                // Unlinked (and perhaps re-created) by a holder that released it meanwhile.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether someone holds the lock of `input_hash` now (a file left by a killed holder is not
    /// held).
    #[cfg(test)]
    pub fn is_held(local: &Path, input_hash: &InputHash) -> bool {
        let Ok(file) = File::open(local.join(LOCKS_DIR).join(input_hash.to_hex())) else {
            return false;
        };
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared).is_err()
    }
}

impl Drop for InputLock {
    fn drop(&mut self) {
        // Unlink first, then the lock goes with the file descriptor.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Remove the lock files below the local cache `local` that nobody holds (left by runs that
/// were killed holding them); how many. Each is locked before it is unlinked, the way a holder
/// releases its own, so an acquirer racing with this retries on a fresh file.
pub fn prune_locks(local: &Path) -> usize {
    let mut removed = 0;
    for e in std::fs::read_dir(local.join(LOCKS_DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = e.path();
        let Ok(file) = File::options().read(true).write(true).open(&path) else {
            continue;
        };
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Why a background run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Checks a push handed on at its budget.
    Deferred,
    /// `checkdef warm` (or the post-commit hook).
    Warm,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deferred => "deferred",
            Reason::Warm => "warm",
        }
    }
}

/// How one check of a background run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEnd {
    pub name: String,
    /// `passed` or `failed`.
    pub status: String,
    /// `run`, or where a cached result came from (`local`, `remote`).
    pub source: String,
    /// Why it failed.
    pub reason: Option<String>,
}

/// One background run, as `checkdef-background/<id>.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub id: String,
    pub pid: u32,
    pub reason: Reason,
    pub commit: String,
    /// The repository it ran in (its root).
    pub repo: PathBuf,
    /// The segments it was asked to run (empty: all of the commit's).
    pub requested: Vec<String>,
    pub started_at: u64,
    /// Set when it ended by itself.
    pub finished_at: Option<u64>,
    /// How each check ended (filled in at the end).
    pub segments: Vec<SegmentEnd>,
    /// Whether some later checkdef command has said how it ended.
    pub reported: bool,
    /// A warm run that never ran because a newer warm of the same repository was queued
    /// behind it (a rebase commits many times in a row; only its last commit is warmed).
    #[serde(default)]
    pub superseded: bool,
}

/// What is known about a background run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Finished,
    /// It never finished and its process is gone (killed, or the machine went down).
    Died,
}

impl Record {
    pub fn failed(&self) -> Vec<&SegmentEnd> {
        self.segments
            .iter()
            .filter(|s| s.status == "failed")
            .collect()
    }
}

/// `<local>/checkdef-background`.
pub fn runs_dir(local: &Path) -> PathBuf {
    local.join(RUNS_DIR)
}

pub fn record_path(local: &Path, id: &str) -> PathBuf {
    runs_dir(local).join(format!("{id}.json"))
}

pub fn log_path(local: &Path, id: &str) -> PathBuf {
    runs_dir(local).join(format!("{id}.log"))
}

fn life_lock_path(local: &Path, id: &str) -> PathBuf {
    runs_dir(local).join(format!("{id}.lock"))
}

/// A fresh id: start time, pid and a counter, sortable by start time.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}{:03}-{}-{}",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Hold the life lock of background run `id` for as long as the returned file is open: while
/// it is held, the run is alive.
pub fn hold_life_lock(local: &Path, id: &str) -> io::Result<File> {
    std::fs::create_dir_all(runs_dir(local))?;
    let file = File::create(life_lock_path(local, id))?;
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)?;
    Ok(file)
}

/// Serialise warm runs: hold `checkdef-background/warm.lock` (waiting for it) for as long as
/// the returned file is open. Many commits in a row (a rebase, a scripted series) then warm one
/// at a time instead of flooding the machine.
pub fn wait_warm_turn(local: &Path) -> io::Result<File> {
    std::fs::create_dir_all(runs_dir(local))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(runs_dir(local).join("warm.lock"))?;
    rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
    Ok(file)
}

/// Whether a warm run of `repo` newer than `id` exists (queued or running): then `id`'s
/// commit is no longer the one worth warming.
pub fn newer_warm(local: &Path, repo: &Path, id: &str) -> bool {
    list(local)
        .iter()
        .any(|(r, _)| r.reason == Reason::Warm && r.repo == repo && r.id.as_str() > id)
}

/// Write `record` atomically.
pub fn save(local: &Path, record: &Record) -> io::Result<()> {
    std::fs::create_dir_all(runs_dir(local))?;
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    crate::fsutil::write_atomic(&record_path(local, &record.id), &bytes)
}

/// Every readable record, newest first, with its state.
pub fn list(local: &Path) -> Vec<(Record, State)> {
    let Ok(entries) = std::fs::read_dir(runs_dir(local)) else {
        return Vec::new();
    };
    let mut out: Vec<(Record, State)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Record>(&b).ok())
        .map(|r| {
            let state = state_of(local, &r);
            (r, state)
        })
        .collect();
    out.sort_by(|a, b| b.0.id.cmp(&a.0.id));
    out
}

fn state_of(local: &Path, r: &Record) -> State {
    if r.finished_at.is_some() {
        return State::Finished;
    }
    match File::open(life_lock_path(local, &r.id)) {
        Ok(f) if rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared).is_err() => {
            State::Running
        }
        _ => State::Died,
    }
}

/// The ended runs (finished or died) that no command has reported yet, oldest first; they
/// are marked reported (so each is said once).
pub fn unreported(local: &Path) -> Vec<(Record, State)> {
    let mut out: Vec<(Record, State)> = list(local)
        .into_iter()
        .filter(|(r, s)| *s != State::Running && !r.reported)
        .collect();
    out.reverse();
    for (r, _) in &mut out {
        r.reported = true;
        let _ = save(local, r);
    }
    out
}

/// Remove the oldest ended runs' files beyond [`KEEP_RECORDS`].
pub fn prune(local: &Path) {
    let ended: Vec<Record> = list(local)
        .into_iter()
        .filter(|(r, s)| *s != State::Running && r.reported)
        .map(|(r, _)| r)
        .collect();
    for r in ended.iter().skip(KEEP_RECORDS) {
        for p in [
            record_path(local, &r.id),
            log_path(local, &r.id),
            life_lock_path(local, &r.id),
        ] {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_lock_is_exclusive_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |n: u8| -> InputHash { format!("{n:02x}").repeat(32).parse().unwrap() };
        let (abc, other, dead) = (hash(0xab), hash(0x01), hash(0xde));
        let a = InputLock::try_acquire(dir.path(), &abc).unwrap().unwrap();
        assert!(InputLock::is_held(dir.path(), &abc));
        // flock is per open file description: a second acquisition in this process is refused
        // just as one in another process would be.
        assert!(InputLock::try_acquire(dir.path(), &abc).unwrap().is_none());
        assert!(
            InputLock::try_acquire(dir.path(), &other)
                .unwrap()
                .is_some()
        );
        drop(a);
        // The lock file is named by the hash's hex spelling.
        assert!(!dir.path().join(LOCKS_DIR).join(abc.to_string()).exists());
        assert!(!InputLock::is_held(dir.path(), &abc));
        // A file left by a killed holder is simply taken.
        std::fs::write(dir.path().join(LOCKS_DIR).join(dead.to_string()), b"").unwrap();
        assert!(!InputLock::is_held(dir.path(), &dead));
        assert!(InputLock::try_acquire(dir.path(), &dead).unwrap().is_some());
    }

    #[test]
    fn records_round_trip_and_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path();
        let mut r = Record {
            version: 1,
            id: new_id(),
            pid: std::process::id(),
            reason: Reason::Deferred,
            commit: "c0ffee".into(),
            repo: "/r".into(),
            requested: vec!["a".into()],
            started_at: now_secs(),
            finished_at: None,
            segments: Vec::new(),
            reported: false,
            superseded: false,
        };
        let life = hold_life_lock(local, &r.id).unwrap();
        save(local, &r).unwrap();
        assert_eq!(list(local)[0].1, State::Running);
        assert!(
            unreported(local).is_empty(),
            "a running one is not reported"
        );
        drop(life);
        assert_eq!(list(local)[0].1, State::Died);
        r.finished_at = Some(now_secs());
        r.segments.push(SegmentEnd {
            name: "a".into(),
            status: "failed".into(),
            source: "run".into(),
            reason: Some("exit 1".into()),
        });
        save(local, &r).unwrap();
        let u = unreported(local);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].1, State::Finished);
        assert_eq!(u[0].0.failed().len(), 1);
        assert!(unreported(local).is_empty(), "said once");
    }
}
