//! The one compiled matcher of every segment's globs.
use std::collections::HashMap;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::*;

/// Matches a path against every segment at once.
///
/// Include globs are split three ways, cheapest first: a plain path (`pytest.ini`, one hash
/// lookup per path), a plain directory followed by `/**` (`src/foo/**`, one lookup per ancestor
/// directory, remembered while consecutive paths share a directory), and every other glob (one
/// [`GlobSet`]). The first two match exactly what globset's literal and prefix strategies match
/// for them; excludes always go through a [`GlobSet`].
#[derive(Debug)]
pub struct Matcher {
    /// Distinguishes matchers in a shared [`MatchScratch`].
    id: u64,
    /// Plain-path include globs → their segments (ascending).
    literal: HashMap<Box<[u8]>, Vec<u32>, FastHash>,
    /// `DIR` of plain `DIR/**` include globs → their segments (ascending).
    prefix: HashMap<Box<[u8]>, Vec<u32>, FastHash>,
    /// The other include globs.
    include: GlobSet,
    include_owners: Vec<Vec<u32>>,
    exclude: GlobSet,
    exclude_owners: Vec<Vec<u32>>,
    segments: usize,
}

/// Reusable buffers for [`Matcher::segments_for`], so matching allocates nothing per path.
#[derive(Debug, Default)]
pub struct MatchScratch {
    globs: Vec<usize>,
    excluded: Vec<u32>,
    covered: Vec<u32>,
    /// The [`Matcher::id`] that `dir` and `dir_hits` belong to (0: none).
    dir_owner: u64,
    /// The directory of the last path matched ...
    dir: Vec<u8>,
    /// ... and the segments whose `DIR/**` globs cover it (ascending, distinct).
    dir_hits: Vec<u32>,
}

impl Matcher {
    pub(super) fn new(segments: &[Segment]) -> Result<Matcher, globset::Error> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut literal: HashMap<Box<[u8]>, Vec<u32>, FastHash> = HashMap::default();
        let mut prefix: HashMap<Box<[u8]>, Vec<u32>, FastHash> = HashMap::default();
        let mut include = Distinct::default();
        let mut exclude = Distinct::default();
        let add = |map: &mut HashMap<Box<[u8]>, Vec<u32>, FastHash>, key: &str, seg: u32| {
            let owners = map.entry(key.as_bytes().into()).or_default();
            if owners.last() != Some(&seg) {
                owners.push(seg);
            }
        };
        for (i, seg) in segments.iter().enumerate() {
            for g in &seg.include {
                match plain_glob(g) {
                    Some(PlainGlob::Path(p)) => add(&mut literal, p, i as u32),
                    Some(PlainGlob::Dir(d)) => add(&mut prefix, d, i as u32),
                    None => include.add(g, i as u32),
                }
            }
            for g in &seg.exclude {
                exclude.add(g, i as u32);
            }
        }
        let (include, include_owners) = include.build()?;
        let (exclude, exclude_owners) = exclude.build()?;
        Ok(Matcher {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            literal,
            prefix,
            include,
            include_owners,
            exclude,
            exclude_owners,
            segments: segments.len(),
        })
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments
    }

    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Fill `out` with the indices (ascending, distinct) of the segments `path` is an input of.
    /// `path` is repository-relative and `/`-separated.
    pub fn segments_for(&self, path: &[u8], scratch: &mut MatchScratch, out: &mut Vec<u32>) {
        out.clear();
        // How many owner lists went into `out` (more than one needs sorting).
        let mut lists = 0;
        if !self.prefix.is_empty()
            && let Some(slash) = path.iter().rposition(|&b| b == b'/')
        {
            let dir = &path[..slash];
            if scratch.dir_owner != self.id || scratch.dir != dir {
                self.dir_hits(dir, &mut scratch.dir_hits);
                scratch.dir.clear();
                scratch.dir.extend_from_slice(dir);
                scratch.dir_owner = self.id;
            }
            if !scratch.dir_hits.is_empty() {
                out.extend_from_slice(&scratch.dir_hits);
                lists += 1;
            }
        }
        if let Some(owners) = self.literal.get(path) {
            out.extend_from_slice(owners);
            lists += 1;
        }
        let mut cand = None;
        if !self.include.is_empty() {
            let c = cand.insert(Candidate::from_bytes(path));
            self.include.matches_candidate_into(c, &mut scratch.globs);
            for &g in &scratch.globs {
                out.extend_from_slice(&self.include_owners[g]);
            }
            lists += scratch.globs.len();
        }
        if out.is_empty() {
            return;
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
        if self.exclude.is_empty() {
            return;
        }
        let cand = cand.get_or_insert_with(|| Candidate::from_bytes(path));
        self.exclude
            .matches_candidate_into(cand, &mut scratch.globs);
        if scratch.globs.is_empty() {
            return;
        }
        scratch.excluded.clear();
        for &g in &scratch.globs {
            scratch.excluded.extend_from_slice(&self.exclude_owners[g]);
        }
        out.retain(|s| !scratch.excluded.contains(s));
    }

    /// The segments whose `DIR/**` globs match every file below directory `dir`: those whose
    /// `DIR` is `dir` or one of its ancestors.
    fn dir_hits(&self, dir: &[u8], out: &mut Vec<u32>) {
        out.clear();
        let mut lists = 0;
        let ancestors = dir
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| &dir[..i])
            .chain(std::iter::once(dir));
        for a in ancestors {
            if let Some(owners) = self.prefix.get(a) {
                out.extend_from_slice(owners);
                lists += 1;
            }
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// True when `path` is an input of at least one segment.
    pub fn is_covered(&self, path: &[u8], scratch: &mut MatchScratch) -> bool {
        let mut out = std::mem::take(&mut scratch.covered);
        self.segments_for(path, scratch, &mut out);
        let covered = !out.is_empty();
        scratch.covered = out;
        covered
    }
}

/// An include glob whose matches need no glob engine.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PlainGlob<'a> {
    /// No special character: matches exactly this path.
    Path(&'a str),
    /// `DIR/**` with a non-empty plain `DIR`: matches every path that starts with `DIR/`.
    Dir(&'a str),
}

/// Classify `pattern` (see [`PlainGlob`]); `None` when it needs the glob engine. Conservative:
/// any character with a meaning in some glob context (`* ? [ ] { } , \`) disqualifies.
pub(crate) fn plain_glob(pattern: &str) -> Option<PlainGlob<'_>> {
    let plain = |s: &str| !s.is_empty() && !s.contains(['*', '?', '[', ']', '{', '}', ',', '\\']);
    if plain(pattern) {
        return Some(PlainGlob::Path(pattern));
    }
    let dir = pattern.strip_suffix("/**")?;
    plain(dir).then_some(PlainGlob::Dir(dir))
}

/// FxHash-style hashing for the matcher's short byte-string keys (SipHash's DoS resistance buys
/// nothing here: the keys come from checkdef.toml and the lookups from the repository).
#[derive(Debug, Default, Clone, Copy)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

#[derive(Debug)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(26) ^ w).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(26) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(26) ^ i as u64).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

#[derive(Default)]
struct Distinct {
    index: HashMap<String, usize>,
    globs: Vec<Glob>,
    owners: Vec<Vec<u32>>,
}

impl Distinct {
    fn add(&mut self, pattern: &str, segment: u32) {
        let idx = *self.index.entry(pattern.to_owned()).or_insert_with(|| {
            self.globs
                .push(compile_glob(pattern).expect("validated while loading"));
            self.owners.push(Vec::new());
            self.globs.len() - 1
        });
        if self.owners[idx].last() != Some(&segment) {
            self.owners[idx].push(segment);
        }
    }

    fn build(self) -> Result<(GlobSet, Vec<Vec<u32>>), globset::Error> {
        let mut b = GlobSetBuilder::new();
        for g in self.globs {
            b.add(g);
        }
        Ok((b.build()?, self.owners))
    }
}

/// Compile one pattern with checkdef's glob semantics: `*` and `?` stay within one path
/// component, `**` spans any number, `{a,b}` alternates, `[...]` classes, `\` escapes.
pub fn compile_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}
