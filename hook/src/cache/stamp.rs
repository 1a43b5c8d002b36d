//! Verification stamps: a local hit that costs a few `stat`s instead of a decompression, two
//! sha256 passes and a NAR parse.
//!
//! After checkdef has verified a local entry in full (narinfo, NAR hash and size, result record,
//! manifest against the input hash) — or has just written it — it records that fact in
//! `<cache>/checkdef-stamps/<hash part>`: the result record and the identity of the two files it
//! verified (device, inode, size, mtime and ctime of the narinfo and of the NAR). A later lookup
//! that finds both files with exactly that identity serves the record without reading the NAR.
//!
//! A stamp also records the entry's [`Origin`]: this machine ran it, or it is a copy of a remote
//! result whose signature verified with a given key. The trust decision itself is not cached:
//! a copy is served from its stamp only while that key is still accepted (see
//! `Caches::lookup_local`), so removing a key or setting `accept = "ci-only"` takes effect at
//! once, without a signature check per hit.
//!
//! Why this is as safe as re-reading: the local cache is private to its owner (see
//! `cache/mod.rs`), so a stamp protects against accidents — torn writes, a `cache gc` or
//! another process replacing an entry — not against someone who can write the directory (they
//! could write a stamp as well as an entry). Any change to either
//! file changes its ctime, which no user-space call can set back, and replacing a file changes
//! its inode. A stamp is only written for files whose ctime is older than the read that
//! verified them (so nothing changed between the read and the `stat`), or right after this
//! process wrote the entry itself. A stamp that does not match, cannot be read or does not
//! parse is ignored: the lookup falls back to the full read, which writes a fresh stamp.
//!
//! The stamp's mtime is the entry's last use (`checkdef cache gc` evicts by it). It is
//! refreshed at most once an hour so that a hit does not write to the disk.
use std::fs;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cache_proto::store_path::StorePath;
use serde::{Deserialize, Serialize};

use super::layout::{safe_rel, stamp_path};
use crate::fsutil::{FileId, older_than, touch, write_atomic};
use crate::result::ResultRecord;

/// Bumped when the stamp layout changes; other versions are ignored (a full read replaces them).
/// 2: the entry's origin.
const STAMP_FORMAT: u32 = 2;

/// Stamps are small; anything larger is not one of ours.
const MAX_STAMP_SIZE: u64 = 64 << 10;

/// How stale a stamp's mtime (the entry's last use) may get before a hit refreshes it.
const TOUCH_INTERVAL: Duration = Duration::from_secs(3600);

/// How long before a full read a file must have last changed for its stamp to be trusted: a
/// margin for the coarse clock the kernel stamps ctime with.
const SETTLE: Duration = Duration::from_secs(2);

/// Where a local entry came from, as far as trusting it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Origin {
    /// This machine ran the check (see `cache::ran_here`): trusted without a signature.
    RanHere,
    /// A copy of another machine's result, whose narinfo carries a valid signature by this key
    /// (`name:base64`): a hit only while the key is accepted.
    SignedBy(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stamp {
    format: u32,
    narinfo: FileId,
    nar_url: String,
    nar: FileId,
    origin: Origin,
    record: ResultRecord,
}

/// Reads and writes the stamps of one local cache directory.
#[derive(Debug, Clone)]
pub struct Stamps {
    cache_dir: PathBuf,
}

impl Stamps {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Stamps {
        Stamps {
            cache_dir: cache_dir.into(),
        }
    }

    pub fn stamp_path(&self, path: &StorePath) -> PathBuf {
        stamp_path(&self.cache_dir, path.hash_part())
    }

    fn narinfo_path(&self, path: &StorePath) -> PathBuf {
        self.cache_dir.join(format!("{}.narinfo", path.hash_part()))
    }

    /// The stamped record and origin of `path` when its narinfo and NAR are exactly the files
    /// that were verified; `None` otherwise (the caller then reads the entry in full).
    pub fn check(&self, path: &StorePath) -> Option<(ResultRecord, Origin)> {
        let stamp_path = self.stamp_path(path);
        let mut f = fs::File::open(&stamp_path).ok()?;
        let meta = f.metadata().ok()?;
        if meta.len() > MAX_STAMP_SIZE {
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut bytes).ok()?;
        let stamp: Stamp = serde_json::from_slice(&bytes).ok()?;
        if stamp.format != STAMP_FORMAT || !safe_rel(&stamp.nar_url) {
            return None;
        }
        if FileId::of(&self.narinfo_path(path))? != stamp.narinfo
            || FileId::of(&self.cache_dir.join(&stamp.nar_url))? != stamp.nar
        {
            return None;
        }
        if meta.modified().is_ok_and(|t| older_than(t, TOUCH_INTERVAL)) {
            touch(&stamp_path);
        }
        Some((stamp.record, stamp.origin))
    }

    /// Record that the entry of `path` (narinfo naming `nar_url`) was verified in full by a read
    /// that started at `read_started`, or was written by this process (`read_started = None`).
    /// When the files changed too recently to be sure they are the ones that were verified,
    /// writes no stamp but marks an existing one as used. Errors are ignored: stamps only save
    /// time.
    pub fn write(
        &self,
        path: &StorePath,
        nar_url: &str,
        record: &ResultRecord,
        origin: &Origin,
        read_started: Option<SystemTime>,
    ) {
        if !safe_rel(nar_url) {
            return;
        }
        let (Some(narinfo), Some(nar)) = (
            FileId::of(&self.narinfo_path(path)),
            FileId::of(&self.cache_dir.join(nar_url)),
        ) else {
            return;
        };
        if let Some(t) = read_started
            && !(narinfo.settled_before(t, SETTLE) && nar.settled_before(t, SETTLE))
        {
            touch(&self.stamp_path(path));
            return;
        }
        let stamp = Stamp {
            format: STAMP_FORMAT,
            narinfo,
            nar_url: nar_url.to_owned(),
            nar,
            origin: origin.clone(),
            record: record.clone(),
        };
        let Ok(bytes) = serde_json::to_vec(&stamp) else {
            return;
        };
        let _ = write_atomic(&self.stamp_path(path), &bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::cache::layout::STAMP_DIR;
    use crate::result::Status;

    fn record() -> ResultRecord {
        ResultRecord {
            format: crate::result::RESULT_FORMAT,
            segment: "foo".into(),
            status: Status::Passed,
            exit_code: Some(0),
            duration_s: 1.5,
            commit: None,
            input_hash: crate::manifest::InputHash::placeholder(),
            command: "true".into(),
            checkdef_version: "0".into(),
            host: "x".into(),
            signer: None,
            finished_at: 0,
        }
    }

    fn entry(dir: &Path) -> StorePath {
        let p =
            StorePath::parse("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-checkdef-foo").unwrap();
        fs::create_dir_all(dir.join("nar")).unwrap();
        fs::write(dir.join(format!("{}.narinfo", p.hash_part())), "info").unwrap();
        fs::write(dir.join("nar/x.nar.zst"), "nar").unwrap();
        p
    }

    fn age(path: &Path, secs: u64) {
        // mtime can be set back; ctime cannot, so the settle rule is tested via `read_started`.
        let t = SystemTime::now() - Duration::from_secs(secs);
        fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn a_stamp_matches_until_either_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = entry(d.path());
        let s = Stamps::new(d.path());
        assert!(s.check(&p).is_none(), "no stamp yet");
        s.write(&p, "nar/x.nar.zst", &record(), &Origin::RanHere, None);
        assert_eq!(s.check(&p), Some((record(), Origin::RanHere)));

        // Rewriting the NAR with the same size and mtime still changes its ctime.
        let nar = d.path().join("nar/x.nar.zst");
        let before = fs::metadata(&nar).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&nar, "NAR").unwrap();
        fs::File::options()
            .append(true)
            .open(&nar)
            .unwrap()
            .set_modified(before)
            .unwrap();
        assert!(s.check(&p).is_none(), "a rewritten NAR must not match");

        s.write(&p, "nar/x.nar.zst", &record(), &Origin::RanHere, None);
        assert!(s.check(&p).is_some());
        // Replacing the narinfo (new inode) invalidates it too.
        let ni = d.path().join(format!("{}.narinfo", p.hash_part()));
        fs::remove_file(&ni).unwrap();
        fs::write(&ni, "info").unwrap();
        assert!(s.check(&p).is_none(), "a replaced narinfo must not match");
        fs::remove_file(&ni).unwrap();
        assert!(s.check(&p).is_none(), "a removed narinfo must not match");
    }

    #[test]
    fn files_changed_during_a_read_are_not_stamped() {
        let d = tempfile::tempdir().unwrap();
        let p = entry(d.path());
        let s = Stamps::new(d.path());
        // The files were written just now: a read that started a second ago cannot vouch for
        // them.
        s.write(
            &p,
            "nar/x.nar.zst",
            &record(),
            &Origin::RanHere,
            Some(SystemTime::now() - Duration::from_secs(1)),
        );
        assert!(s.check(&p).is_none());
        // A read that started well after they last changed can.
        s.write(
            &p,
            "nar/x.nar.zst",
            &record(),
            &Origin::RanHere,
            Some(SystemTime::now() + SETTLE + Duration::from_secs(1)),
        );
        assert_eq!(s.check(&p), Some((record(), Origin::RanHere)));
    }

    #[test]
    fn bad_stamps_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = entry(d.path());
        let s = Stamps::new(d.path());
        s.write(&p, "../x", &record(), &Origin::RanHere, None);
        assert!(s.check(&p).is_none(), "unsafe NAR urls are never stamped");
        fs::create_dir_all(d.path().join(STAMP_DIR)).unwrap();
        for junk in ["", "{", "null", "{\"format\":1}"] {
            fs::write(s.stamp_path(&p), junk).unwrap();
            assert!(s.check(&p).is_none(), "{junk:?}");
        }
        s.write(&p, "nar/x.nar.zst", &record(), &Origin::RanHere, None);
        let text = fs::read_to_string(s.stamp_path(&p)).unwrap();
        fs::write(
            s.stamp_path(&p),
            text.replace("\"format\":2", "\"format\":3"),
        )
        .unwrap();
        assert!(s.check(&p).is_none(), "other stamp formats are ignored");
        fs::remove_file(s.stamp_path(&p)).unwrap();
        assert!(!s.stamp_path(&p).exists());
    }

    #[test]
    fn a_hit_refreshes_an_old_stamp_time() {
        let d = tempfile::tempdir().unwrap();
        let p = entry(d.path());
        let s = Stamps::new(d.path());
        s.write(&p, "nar/x.nar.zst", &record(), &Origin::RanHere, None);
        age(&s.stamp_path(&p), 7200);
        let old = fs::metadata(s.stamp_path(&p)).unwrap().modified().unwrap();
        assert!(s.check(&p).is_some());
        let new = fs::metadata(s.stamp_path(&p)).unwrap().modified().unwrap();
        assert!(new > old + Duration::from_secs(3600), "{old:?} -> {new:?}");
        // A recent one is left alone (no write per hit).
        age(&s.stamp_path(&p), 60);
        let recent = fs::metadata(s.stamp_path(&p)).unwrap().modified().unwrap();
        assert!(s.check(&p).is_some());
        assert_eq!(
            fs::metadata(s.stamp_path(&p)).unwrap().modified().unwrap(),
            recent
        );
    }
}
