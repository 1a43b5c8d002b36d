//! How long each segment's check took the last time it ran, so that a run can start the
//! longest expected checks first.
//!
//! A miss has, by definition, no result for its current inputs; what predicts its duration is
//! the segment's earlier runs (or the original duration of its last cached result). They are
//! kept in `<local cache>/checkdef-durations.json`, `{ "segment name": [seconds, unix time] }`,
//! read only when a run has misses and rewritten (atomically) only when something changed. It
//! only orders work: a missing, stale or corrupt file changes the order, never a verdict. Two
//! repositories sharing a cache and a segment name share an entry (the last run wins), which at
//! worst schedules one of them less well.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file's name in the local cache directory.
pub const FILE: &str = "checkdef-durations.json";

/// At most this many segments are remembered (the least recently updated are dropped).
const MAX_ENTRIES: usize = 20_000;

/// Remembered durations.
#[derive(Debug, Default)]
pub struct History {
    path: PathBuf,
    entries: BTreeMap<String, (f64, u64)>,
    changed: bool,
}

impl History {
    /// Read the history of the cache at `cache_dir` (empty when there is none or it is
    /// unreadable).
    pub fn load(cache_dir: &Path) -> History {
        let path = cache_dir.join(FILE);
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, (f64, u64)>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, (s, _))| s.is_finite() && *s >= 0.0)
            .collect();
        History {
            path,
            entries,
            changed: false,
        }
    }

    /// The last known duration of `segment`, in seconds.
    pub fn get(&self, segment: &str) -> Option<f64> {
        self.entries.get(segment).map(|(s, _)| *s)
    }

    /// Remember that `segment` took `seconds`.
    pub fn record(&mut self, segment: &str, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        // Within a few percent counts as unchanged: a no-op rewrite is not worth a write.
        if let Some((old, _)) = self.entries.get(segment)
            && (old - seconds).abs() <= 0.02 * old.max(seconds) + 0.001
        {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.entries.insert(segment.to_owned(), (seconds, now));
        self.changed = true;
    }

    /// Write the history back if it changed. Failures are ignored: it only orders work.
    pub fn save(mut self) {
        if !self.changed {
            return;
        }
        if self.entries.len() > MAX_ENTRIES {
            let mut by_age: Vec<(u64, String)> = self
                .entries
                .iter()
                .map(|(k, (_, t))| (*t, k.clone()))
                .collect();
            by_age.sort();
            let drop = by_age.len() - MAX_ENTRIES;
            for (_, k) in by_age.into_iter().take(drop) {
                self.entries.remove(&k);
            }
        }
        if let Ok(bytes) = serde_json::to_vec(&self.entries) {
            let _ = crate::fsutil::write_atomic(&self.path, &bytes);
        }
    }
}

/// The order in which to start `jobs`: each is `(expected seconds, number of inputs)`. Longest
/// expected first (the classic longest-processing-time rule: with several CPUs, the run ends
/// soonest when the long checks do not start last). A check never seen before comes first: it
/// may be the longest, and running it early also means the next run knows its duration. Ties
/// (and unknowns among themselves) go by the number of inputs, larger first, then by the
/// original order.
pub fn order(jobs: &[(Option<f64>, usize)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..jobs.len()).collect();
    idx.sort_by(|&a, &b| {
        let (da, na) = jobs[a];
        let (db, nb) = jobs[b];
        let by_time = match (da, db) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y.total_cmp(&x),
        };
        by_time.then(nb.cmp(&na)).then(a.cmp(&b))
    });
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_unknown_before_known_ties_by_inputs() {
        let jobs = [
            (Some(1.0), 10),
            (Some(5.0), 1),
            (None, 3),
            (Some(1.0), 50),
            (None, 7),
        ];
        assert_eq!(order(&jobs), [4, 2, 1, 3, 0]);
        assert!(order(&[]).is_empty());
    }

    #[test]
    fn history_round_trip_ignores_small_changes_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::load(dir.path());
        assert_eq!(h.get("a"), None);
        h.record("a", 2.0);
        h.record("b", f64::NAN);
        h.save();
        let mut h = History::load(dir.path());
        assert_eq!(h.get("a"), Some(2.0));
        assert_eq!(h.get("b"), None);
        h.record("a", 2.01);
        assert!(!h.changed, "a 0.5% change is not worth a write");
        h.record("a", 3.0);
        h.save();
        assert_eq!(History::load(dir.path()).get("a"), Some(3.0));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(History::load(dir.path()).get("a"), None);
    }
}
