//! The local cache directory, in one place: how its entries and checkdef's own files are named,
//! the one scan of its entries, the one chain of checks an entry passes before it counts, and
//! removal. Lookups, `checkdef cache verify` and `gc`, `explain` and `status` all go through it,
//! so they agree on what an entry is, when it was last used and whether it is valid.
//!
//! ```text
//! <dir>/<hash part>.narinfo                  an entry (Nix file:// layout; Nix may add its own)
//! <dir>/nar/<file hash>.nar.zst              its NAR
//! <dir>/checkdef-stamps/<hash part>          verification stamp (see `stamp`)
//! <dir>/checkdef-ran-here/<hash part>-<NarHash>   this machine stored that NAR (see `trust`)
//! <dir>/checkdef-fingerprints/<key>          kept outputs of watched fingerprint commands
//! <dir>/checkdef-pending-uploads/<url id>/<hash part>-<name>   uploads to retry
//! ```
//!
//! An entry is checkdef's when its narinfo's `StorePath` is named `checkdef-<segment>`; other
//! narinfos (what `nix copy --to file://…` wrote) are listed but never checked, counted as
//! results or removed.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cache_proto::hash::Sha256Hash;
use cache_proto::nar::{self, NarLimits};
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::PublicKey;
use cache_proto::store::{Fetched, Store, StoreError};
use cache_proto::store_path::StorePath;

use super::TrustPolicy;
use super::stamp::Origin;
use crate::manifest::InputHash;
use crate::result::StoredResult;

/// The directory of stamps inside the local cache.
pub const STAMP_DIR: &str = "checkdef-stamps";

/// The directory of ran-here records inside the local cache.
pub const RAN_HERE_DIR: &str = "checkdef-ran-here";

/// Where reusable fingerprint outputs live, inside the local cache directory.
pub const FINGERPRINT_DIR: &str = "checkdef-fingerprints";

/// `checkdef cache verify` removes kept fingerprint outputs unused for this long.
pub const FINGERPRINT_UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where the uploads that failed are remembered: one directory per remote (named by a hash of
/// its URL, so results are only ever retried to the remote they were meant for), one empty
/// file per store path (`<hash part>-<name>`).
pub const PENDING_DIR: &str = "checkdef-pending-uploads";

/// The store path name prefix of checkdef's results.
pub const RESULT_NAME_PREFIX: &str = "checkdef-";

/// The local cache directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        Layout { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<hash part>.narinfo`.
    pub fn narinfo_path(&self, hash_part: &str) -> PathBuf {
        self.dir.join(format!("{hash_part}.narinfo"))
    }

    /// `<dir>/checkdef-stamps/<hash part>`.
    pub fn stamp_path(&self, hash_part: &str) -> PathBuf {
        stamp_path(&self.dir, hash_part)
    }

    /// `<dir>/checkdef-ran-here/<hash part>-<NarHash in nix32>`.
    pub fn ran_here_path(&self, hash_part: &str, nar_hash: &Sha256Hash) -> PathBuf {
        ran_here_path(&self.dir, hash_part, nar_hash)
    }

    /// `<dir>/checkdef-fingerprints` (see [`FingerprintDir`]).
    pub fn fingerprint_dir(&self) -> PathBuf {
        self.dir.join(FINGERPRINT_DIR)
    }

    /// `<dir>/checkdef-pending-uploads/<id of url>`.
    pub fn pending_dir(&self, remote_url: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let id = hex::encode(&Sha256::digest(remote_url.as_bytes())[..16]);
        self.dir.join(PENDING_DIR).join(id)
    }

    /// The narinfo of `hash_part`, when it exists and parses.
    pub fn read_narinfo(&self, hash_part: &str) -> Option<NarInfo> {
        std::fs::read_to_string(self.narinfo_path(hash_part))
            .ok()
            .and_then(|t| NarInfo::parse(&t).ok())
    }

    /// Every entry of the directory (each `<name>.narinfo` not starting with `.`), sorted by
    /// file name, read leniently: whose it is and which NAR it names even when it does not
    /// parse, so that no one's NAR is swept for want of a strict parse. A missing directory
    /// has no entries.
    pub fn entries(&self) -> std::io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let Some(stem) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".narinfo"))
                .filter(|s| !s.starts_with('.'))
            else {
                continue;
            };
            let narinfo = e.path();
            let text = std::fs::read(&narinfo)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let store_path = field(&text, "StorePath").and_then(|p| StorePath::parse(p).ok());
            let url = field(&text, "URL").map(str::to_owned);
            out.push(Entry {
                hash_part: stem.to_owned(),
                narinfo,
                store_path,
                url,
            });
        }
        out.sort_by(|a, b| a.narinfo.cmp(&b.narinfo));
        Ok(out)
    }

    /// When the entry was last used: its stamp's mtime (a hit refreshes it, at most once an
    /// hour) or its narinfo's (when it was written), whichever is later. Touching the narinfo
    /// instead would change its ctime and so void the stamp.
    pub fn last_used(&self, entry: &Entry) -> SystemTime {
        [entry.narinfo.clone(), self.stamp_path(&entry.hash_part)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The size of an entry: its narinfo and its NAR.
    pub fn entry_size(&self, entry: &Entry) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        size(&entry.narinfo)
            + entry
                .url
                .as_deref()
                .filter(|u| safe_rel(u))
                .map_or(0, |u| size(&self.dir.join(u)))
    }

    /// What `checkdef status` shows: checkdef's results, other tools' entries, and the bytes
    /// of the cache's files (narinfos, NARs, `nix-cache-info`).
    pub fn usage(&self) -> Usage {
        let (mut results, mut others) = (0, 0);
        for e in self.entries().unwrap_or_default() {
            if e.is_result() {
                results += 1;
            } else {
                others += 1;
            }
        }
        let mut bytes = 0;
        for sub in ["", "nar"] {
            let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                if let Ok(meta) = e.metadata()
                    && meta.is_file()
                {
                    bytes += meta.len();
                }
            }
        }
        Usage {
            results,
            others,
            bytes,
        }
    }

    /// Unpublish the entry stored as `<hash_part>.narinfo`: its stamp and ran-here record, then
    /// the narinfo (readers then see a miss; its NAR is left for [`Layout::remove`] or `cache
    /// verify`'s sweep). Returns the narinfo's size when it was removed.
    pub fn unpublish(&self, hash_part: &str) -> Option<u64> {
        let _ = std::fs::remove_file(self.stamp_path(hash_part));
        // The file's name, not the narinfo's `StorePath`: a misnamed narinfo must not take
        // another entry's record with it.
        if let Some(info) = self.read_narinfo(hash_part) {
            let _ = std::fs::remove_file(self.ran_here_path(hash_part, &info.nar_hash));
        }
        let path = self.narinfo_path(hash_part);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&path).ok().map(|_| size)
    }

    /// Remove an entry: the narinfo first (atomically unpublishing it), then its NAR unless
    /// another narinfo still names it (`refs` counts them). Returns the bytes freed.
    pub fn remove(&self, entry: &Entry, refs: &mut References) -> u64 {
        let mut freed = self.unpublish(&entry.hash_part).unwrap_or(0);
        if let Some(url) = entry.url.as_deref().filter(|u| safe_rel(u)) {
            let left = refs.0.get_mut(url).map_or(0, |n| {
                *n = n.saturating_sub(1);
                *n
            });
            let nar = self.dir.join(url);
            if left == 0 {
                if let Ok(m) = std::fs::metadata(&nar) {
                    freed += m.len();
                }
                let _ = std::fs::remove_file(nar);
            }
        }
        freed
    }

    /// Remove what no entry uses: NARs no narinfo names (`refs`) and temporary files older than an
    /// hour (younger ones may belong to a writer that is still running), stamps and ran-here
    /// records of entries that are gone, and kept fingerprint outputs unused for
    /// [`FINGERPRINT_UNUSED_FOR`]. Returns how many stray files were removed (bookkeeping of
    /// removed entries is not counted).
    pub fn sweep_strays(&self, refs: &References) -> usize {
        let dir = self.dir.as_path();
        let modified_before = |p: &Path, age: Duration| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| crate::fsutil::older_than(t, age))
        };
        let hour = Duration::from_secs(3600);
        let old = |p: &Path| modified_before(p, hour);
        let mut n = 0;
        // Stamps and ran-here records of entries that no longer exist (removed by hand, or by an
        // older checkdef).
        for sub in [STAMP_DIR, RAN_HERE_DIR] {
            let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // A ran-here record is `<hash part>-<NarHash>`.
                let hash_part = name.split('-').next().unwrap_or(&name);
                let orphan = if name.starts_with('.') {
                    old(&e.path())
                } else {
                    !dir.join(format!("{hash_part}.narinfo")).exists()
                };
                // Orphaned ran-here records are bookkeeping (a removed entry whose narinfo could not
                // be read leaves its record): removed, not counted as strays.
                if orphan && std::fs::remove_file(e.path()).is_ok() && sub == STAMP_DIR {
                    n += 1;
                }
            }
        }
        // Kept fingerprint outputs unused for a month (a use refreshes the time daily): the next
        // use runs the command again.
        if let Ok(rd) = std::fs::read_dir(dir.join(FINGERPRINT_DIR)) {
            for e in rd.flatten() {
                let limit = if e.file_name().to_string_lossy().starts_with('.') {
                    hour
                } else {
                    FINGERPRINT_UNUSED_FOR
                };
                if modified_before(&e.path(), limit) && std::fs::remove_file(e.path()).is_ok() {
                    n += 1;
                }
            }
        }
        for sub in ["", "nar"] {
            let d = dir.join(sub);
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = if sub.is_empty() {
                    name.clone()
                } else {
                    format!("{sub}/{name}")
                };
                // checkdef's temporary files are `.<name>.tmp-…` (Nix's are `<name>.tmp.<pid>`).
                let is_tmp = name.starts_with('.') && name.contains(".tmp-");
                // Only the kind of NAR checkdef writes: an orphaned `.nar.xz` may be a `nix copy`
                // between its NAR and its narinfo.
                let is_orphan_nar = !sub.is_empty()
                    && !is_tmp
                    && name.ends_with(".nar.zst")
                    && !refs.contains(&rel);
                if (is_tmp || is_orphan_nar)
                    && old(&e.path())
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }

    /// Read the entry of `path` from `store` (this directory's `FileStore`, or a remote) and
    /// apply the checks every reader applies (see [`check_result`]).
    pub async fn read_result(
        store: &Store,
        path: &StorePath,
        limits: &NarLimits,
        expect: Expect<'_>,
    ) -> Result<Option<(StoredResult, Fetched)>, EntryError> {
        let Some(mut fetched) = store.fetch(path, limits).await? else {
            return Ok(None);
        };
        let node = nar::parse(&fetched.nar[..], limits).map_err(EntryError::Nar)?;
        let result = StoredResult::from_nar(node).map_err(EntryError::Result)?;
        check_result(path, &result, expect)?;
        // The NAR was parsed into `result`; the rest (narinfo, file as served) is kept for a
        // local copy.
        fetched.nar = Vec::new();
        Ok(Some((result, fetched)))
    }

    /// Whether a local entry counts here (its narinfo is `info`): signatures by keys this
    /// machine knows must verify, and it must be this machine's result or a copy signed by a
    /// key accepted now. `Err` says why not.
    pub fn judge(
        &self,
        trust: &TrustPolicy,
        known_keys: &[PublicKey],
        info: &NarInfo,
    ) -> Result<Origin, String> {
        for sig in &info.sigs {
            let name = sig.split(':').next().unwrap_or("");
            if known_keys.iter().any(|k| k.name() == name) && info.verify(known_keys).is_none() {
                return Err(format!("signature by known key {name} does not verify"));
            }
        }
        trust.judge(&self.dir, info)
    }
}

/// An entry of the local cache as [`Layout::entries`] lists it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The hash part the file is stored as (`<hash part>.narinfo`).
    pub hash_part: String,
    pub narinfo: PathBuf,
    /// Its `StorePath`, when it has a valid one.
    pub store_path: Option<StorePath>,
    /// Its `URL`, when it has one.
    pub url: Option<String>,
}

impl Entry {
    /// Its store path names a checkdef result (`…-checkdef-<segment>`): checkdef wrote it.
    pub fn is_result(&self) -> bool {
        self.segment().is_some()
    }

    /// The segment whose result it is.
    pub fn segment(&self) -> Option<&str> {
        self.store_path
            .as_ref()?
            .name()
            .strip_prefix(RESULT_NAME_PREFIX)
    }
}

/// How many narinfos name each NAR (see [`Layout::remove`]).
#[derive(Debug, Default)]
pub struct References(HashMap<String, usize>);

impl References {
    pub fn count(entries: &[Entry]) -> References {
        let mut refs = HashMap::new();
        for e in entries {
            if let Some(u) = &e.url {
                *refs.entry(u.clone()).or_insert(0) += 1;
            }
        }
        References(refs)
    }

    /// Whether some narinfo still names `url`.
    pub fn contains(&self, url: &str) -> bool {
        self.0.get(url).is_some_and(|n| *n > 0)
    }
}

/// What [`Layout::usage`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// checkdef's results.
    pub results: usize,
    /// Other tools' narinfos.
    pub others: usize,
    /// Bytes of the cache's files.
    pub bytes: u64,
}

/// The local cache's fingerprint directory, as the plan's store of fingerprint outputs.
#[derive(Debug, Clone, Default)]
pub struct FingerprintDir {
    /// The local cache directory (`None`: there is none, nothing is kept).
    cache: Option<PathBuf>,
    /// `<cache>/checkdef-fingerprints`.
    dir: Option<PathBuf>,
}

impl FingerprintDir {
    pub fn new(cache_dir: Option<&Path>) -> FingerprintDir {
        FingerprintDir {
            cache: cache_dir.map(Path::to_path_buf),
            dir: cache_dir.map(|d| d.join(FINGERPRINT_DIR)),
        }
    }
}

impl crate::plan::FingerprintStore for FingerprintDir {
    fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn private_dir(&self) -> Option<&Path> {
        super::ensure_private(self.cache.as_deref()?).ok()?;
        self.dir.as_deref()
    }
}

/// What a reader expects an entry to be: the result of this segment for this input hash (a
/// lookup), or of this segment for whatever input hash it records (`explain`), or any valid
/// result (`cache verify`).
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub segment: Option<&'a str>,
    pub input_hash: Option<&'a InputHash>,
}

impl Expect<'_> {
    pub const ANY: Expect<'static> = Expect {
        segment: None,
        input_hash: None,
    };
}

/// The checks a result read from `path` passes before it counts, whoever reads it: a passing
/// result in the current format, of the expected segment and input hash, whose manifest hashes
/// to that input hash, and whose store path follows from it (so an entry cannot pass for the
/// result of other inputs).
pub fn check_result(
    path: &StorePath,
    result: &StoredResult,
    expect: Expect<'_>,
) -> Result<(), EntryError> {
    let record = &result.record;
    let segment = expect.segment.unwrap_or(&record.segment);
    let input_hash = expect.input_hash.unwrap_or(&record.input_hash);
    result
        .validate_hit(segment, input_hash)
        .map_err(EntryError::Result)?;
    if crate::plan::store_path_for(input_hash, segment) != *path {
        return Err(EntryError::StorePath(path.clone()));
    }
    Ok(())
}

/// Why an entry read from a cache does not count.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Reading it failed, or its narinfo or NAR file is bad (see [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bad NAR")]
    Nar(#[source] cache_proto::nar::NarError),
    #[error("not a valid checkdef result")]
    Result(#[source] crate::result::ResultError),
    #[error("store path {0} does not follow from its input hash")]
    StorePath(StorePath),
}

impl EntryError {
    /// The entry itself is bad (corrupt, torn, tampered, not a valid result), as opposed to a
    /// failure to read it (permissions, too many open files).
    pub fn is_broken_entry(&self) -> bool {
        !matches!(
            self,
            EntryError::Store(StoreError::Io { .. } | StoreError::Task { .. })
        )
    }
}

/// `<cache>/checkdef-stamps/<hash part>`.
pub fn stamp_path(cache_dir: &Path, hash_part: &str) -> PathBuf {
    cache_dir.join(STAMP_DIR).join(hash_part)
}

/// `<cache>/checkdef-ran-here/<hash part>-<NarHash in nix32>`: this machine stored that NAR.
pub fn ran_here_path(cache_dir: &Path, hash_part: &str, nar_hash: &Sha256Hash) -> PathBuf {
    cache_dir
        .join(RAN_HERE_DIR)
        .join(format!("{hash_part}-{}", nar_hash.nix32()))
}

/// A narinfo field read leniently (`Name: value` on any line).
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// A relative path below the cache root: no `..`, `.` or empty component, not absolute.
pub fn safe_rel(url: &str) -> bool {
    !url.is_empty()
        && !url.starts_with('/')
        && !url
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_outside_the_cache_are_never_touched() {
        assert!(safe_rel("nar/abc.nar.zst"));
        assert!(!safe_rel("../etc/passwd"));
        assert!(!safe_rel("/etc/passwd"));
        assert!(!safe_rel("nar//x"));
    }
}
