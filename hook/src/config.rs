//! `checkdef.toml`: parsing, validation and the resolved, immutable [`Config`].
//!
//! The file lives at the repository root (`--config PATH` overrides the location; glob patterns
//! stay relative to the repository root either way). Parsing is strict: unknown keys, an unknown
//! `version`, duplicate segment names, segments without inputs or command, invalid names, globs,
//! keys or environment variable names are errors that name the file, line and column
//! (`checkdef.toml:12:11: ...`). The full reference is `docs/configuration.md`.
//!
//! The resolved [`Config`] holds one [`Segment`] per `[[segment]]` with `[defaults]` merged in,
//! and a [`Matcher`] that matches a path against the globs of *all* segments in one pass: one
//! [`GlobSet`] over every distinct include glob and one over every distinct exclude glob, whose
//! match indices map back to the segments that declared them.
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

/// The file name looked up at the repository root.
pub const FILE_NAME: &str = "checkdef.toml";

/// The only configuration format version this checkdef understands.
pub const VERSION: i64 = 1;

/// Longest segment name: `checkdef-<name>` must fit Nix's 211-character store path name limit.
pub const MAX_SEGMENT_NAME_LEN: usize = 211 - "checkdef-".len();

/// Default cache timeout when `[cache] timeout-secs` is not set.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// A check's time limit when neither the segment nor `[defaults]` sets `timeout`: Bazel's
/// `long` (15 minutes). Bazel's default, `moderate` (5 minutes), is for one test target; a
/// segment is usually a whole suite, and a limit that fails honest pushes is worse than a late
/// answer to a hung one.
pub const DEFAULT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// A fingerprint command's time limit unless `[defaults] fingerprint_timeout` sets one. They
/// print a version or a lock state; a minute is ample, and every plan, run and push waits on them.
pub const DEFAULT_FINGERPRINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The configuration file names pytest looks for, in its order of precedence (pytest 9's
/// `CONFIG_LOADERS_BY_NAME`; pytest 8 reads all but the two `.toml` ones). pytest searches
/// each of them in the common ancestor of its test arguments and every directory above it, so
/// the `tests` shorthand adds each name in every directory on a test's path.
pub const PYTEST_CONFIG_FILES: [&str; 7] = [
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
];

/// Files besides the configuration that pytest reads, in every directory from the rootdir down
/// to a test: `conftest.py` (loaded), `__init__.py` (it decides a test module's package and so
/// its import name, and is imported), and `setup.py`, whose presence makes its directory the
/// rootdir when no configuration file is found (and the rootdir decides which conftest.py files
/// are loaded).
pub const PYTEST_PATH_FILES: [&str; 3] = ["conftest.py", "__init__.py", "setup.py"];

/// A configuration problem, located in the file when possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (it is missing, unreadable or not UTF-8).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is malformed or fails validation.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        message: String,
    },
}

impl ConfigError {
    /// True when the configuration file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// How a segment's check is sandboxed when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// The check sees only its declared inputs (the default).
    #[default]
    Filtered,
    /// The check sees every file of the snapshot; only the declared inputs are hashed.
    Full,
}

impl Sandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Filtered => "filtered",
            Sandbox::Full => "full",
        }
    }
}

/// Which remote results are accepted (`[cache] accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accept {
    /// Results signed by any key in `trusted-public-keys` (the default).
    #[default]
    Trusted,
    /// Only results signed by keys labelled `ci`.
    CiOnly,
}

/// What the pre-push hook checks (`[hook] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    /// Every segment (cached ones cost a lookup only). The default.
    #[default]
    All,
    /// Only segments touched by the pushed commits.
    Affected,
}

/// Which commits of a pushed branch the pre-push hook checks (`[hook] commits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookCommits {
    /// The commit each pushed ref will point to (the default; see docs/hook.md for why).
    #[default]
    Tip,
    /// Every commit the push adds to the remote, each with its own checkdef.toml.
    All,
}

/// Whether the pre-push hook checks pushed tags (`[hook] tags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookTags {
    /// Each distinct tagged commit is checked once (the default).
    #[default]
    Check,
    /// Pushed tags are not checked (a push of branches and tags still checks the branches).
    Skip,
}

/// One trusted public key, `name:base64` as Nix writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The part before the colon (it prefixes signatures).
    pub name: String,
    /// The whole `name:base64` string.
    pub key: String,
    /// Optional label, e.g. `ci`.
    pub label: Option<String>,
}

/// The `[cache]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheConfig {
    /// Remote binary cache URL (`http://`, `https://` or `file://`).
    pub remote: Option<String>,
    pub trusted_public_keys: Vec<TrustedKey>,
    pub accept: Accept,
    /// Network timeout; [`DEFAULT_TIMEOUT_SECS`] when unset.
    pub timeout_secs: Option<u64>,
}

impl CacheConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))
    }
}

/// The `[hook]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookConfig {
    pub mode: HookMode,
    pub commits: HookCommits,
    pub tags: HookTags,
}

/// A resolved segment: `[defaults]` merged in, the `tests` shorthand expanded.
#[derive(Debug)]
pub struct Segment {
    pub name: String,
    pub description: Option<String>,
    /// Effective include globs: the defaults' first, then the segment's own, then those the
    /// `tests` shorthand adds. Distinct, in that order.
    pub include: Vec<String>,
    /// Effective exclude globs (defaults' then own). Excludes win over includes.
    pub exclude: Vec<String>,
    /// The include globs written in checkdef.toml (defaults' then own, distinct): those the
    /// `tests` shorthand adds name optional files and are not reported when they match nothing.
    pub declared_include: Vec<String>,
    /// The shell command (`sh -c`), or the one the `tests` shorthand expands to.
    pub command: String,
    /// The `tests` shorthand as written, if used.
    pub tests: Option<Vec<String>>,
    /// Hashed environment: defaults overlaid with the segment's own values.
    pub env: BTreeMap<String, String>,
    /// Variables visible to the run but not hashed: sorted, distinct, always containing `PATH`
    /// unless `PATH` is in `env`; never a name that is in `env`.
    pub passthrough: Vec<String>,
    /// Fingerprints (defaults' then own), distinct by [`Fingerprint::key`]. When none is
    /// declared anywhere (no `fingerprint` key at all) and the command runs Python, the
    /// environment of that interpreter (see [`crate::pyenv`]).
    pub fingerprint: Vec<Fingerprint>,
    /// For fingerprint commands declared with `watch` (everywhere they are declared): what
    /// their output depends on, so it can be reused across invocations (see
    /// [`crate::plan::fingerprint`]). A command not listed here runs on every invocation.
    pub fingerprint_watch: BTreeMap<String, Vec<String>>,
    pub sandbox: Sandbox,
    /// `network = true`: the check keeps the host's network (by default it has only its own
    /// loopback interface). Hashed (the manifest's `sandbox` line says `+network`).
    pub network: bool,
    /// The check's time limit (`timeout`, else `[defaults] timeout`, else
    /// [`DEFAULT_CHECK_TIMEOUT`]). Not hashed: a pass within any limit is a pass.
    pub timeout: std::time::Duration,
    matcher: OnceLock<(GlobSet, GlobSet)>,
}

impl Segment {
    /// Whether `path` (repository-relative, `/`-separated) is one of this segment's inputs.
    /// Compiles this segment's own matcher on first use; bulk matching should use
    /// [`Config::matcher`] instead.
    pub fn is_match(&self, path: &[u8]) -> bool {
        let (inc, exc) = self.matcher.get_or_init(|| {
            let build = |globs: &[String]| {
                let mut b = GlobSetBuilder::new();
                for g in globs {
                    b.add(compile_glob(g).expect("validated while loading"));
                }
                // Cannot fail: loading built the combined matcher, whose sets hold every glob
                // that needs the regex engine (a segment's are a subset, so smaller; plain
                // paths and `DIR/**` compile to literal and prefix matches, no regex).
                b.build().expect("built while loading")
            };
            (build(&self.include), build(&self.exclude))
        });
        let cand = Candidate::from_bytes(path);
        inc.is_match_candidate(&cand) && !exc.is_match_candidate(&cand)
    }
}

/// What a fingerprint hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fingerprint {
    /// The stdout of a shell command.
    Command(String),
    /// The environment of a Python interpreter (`{ python = "python3" }`, see [`crate::pyenv`]).
    Python(String),
}

impl Fingerprint {
    /// How it is named in the manifest (`fingerprint <key>`) and in `fingerprint_watch`.
    pub fn key(&self) -> String {
        match self {
            Fingerprint::Command(c) => c.clone(),
            Fingerprint::Python(i) => crate::pyenv::key(i),
        }
    }
}

/// The resolved, immutable configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub segments: Vec<Segment>,
    pub cache: CacheConfig,
    pub hook: HookConfig,
    /// Variables whose values are redacted from stored logs (`[defaults] redact_env`).
    pub redact_env: Vec<String>,
    /// Time limit of each fingerprint command (`[defaults] fingerprint_timeout`).
    pub fingerprint_timeout: std::time::Duration,
    matcher: Matcher,
}

impl Config {
    /// Load `explicit` if given, else `<repo_root>/checkdef.toml`.
    pub fn load(repo_root: &Path, explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => repo_root.join(FILE_NAME),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::parse(&text, &path)
    }

    /// Parse and validate `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            text,
            path,
            glob_spans: Default::default(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        resolve(raw, &ctx)
    }

    /// The segment named `name` and its index.
    pub fn segment(&self, name: &str) -> Option<(usize, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
    }

    /// The combined matcher over all segments.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}

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
    fn new(segments: &[Segment]) -> Result<Matcher, globset::Error> {
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

/// A glob for messages: a pattern can be megabytes long.
fn clip_glob(p: &str) -> String {
    const MAX: usize = 80;
    if p.len() <= MAX {
        return p.to_owned();
    }
    let mut end = MAX;
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &p[..end], p.len())
}

/// The located error for a configuration whose globs parse but do not compile: the first glob
/// (in file order) that fails to compile on its own, else the segment whose globs are too much
/// together.
fn locate_uncompilable(
    segments: &[Segment],
    segment_spans: &[Range<usize>],
    err: &globset::Error,
    ctx: &Ctx<'_>,
) -> ConfigError {
    let alone = |g: &str| {
        let glob = compile_glob(g).ok()?;
        GlobSetBuilder::new().add(glob).build().err()
    };
    let spans = ctx.glob_spans.borrow();
    let mut globs: Vec<(&str, Range<usize>)> = segments
        .iter()
        .flat_map(|s| s.include.iter().chain(&s.exclude))
        .filter(|g| plain_glob(g).is_none())
        .filter_map(|g| Some((g.as_str(), spans.get(g.as_str())?.clone())))
        .collect();
    globs.sort_by_key(|(_, span)| span.start);
    globs.dedup_by_key(|(g, _)| *g);
    for (g, span) in &globs {
        if let Some(e) = alone(g) {
            return ctx.error(
                span.clone(),
                format!(
                    "invalid glob `{}`: too large to compile ({})\nhint: split it into several simpler globs",
                    clip_glob(g),
                    e.kind()
                ),
            );
        }
    }
    // Each compiles alone: point at the segment with the most globs that need the engine.
    let i = segments
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| {
            s.include
                .iter()
                .chain(&s.exclude)
                .filter(|g| plain_glob(g).is_none())
                .map(String::len)
                .sum::<usize>()
        })
        .map_or(0, |(i, _)| i);
    ctx.error(
        segment_spans.get(i).cloned().unwrap_or(0..0),
        format!(
            "the globs of the configuration are too large to compile together ({}), the largest share being segment `{}`'s\nhint: use fewer or simpler globs (plain paths and `DIR/**` cost nothing)",
            err.kind(),
            segments.get(i).map_or("", |s| s.name.as_str())
        ),
    )
}

/// Compile one pattern with checkdef's glob semantics: `*` and `?` stay within one path
/// component, `**` spans any number, `{a,b}` alternates, `[...]` classes, `\` escapes.
pub fn compile_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) structures.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Spanned<i64>,
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    segment: Vec<Spanned<RawSegment>>,
    #[serde(default)]
    cache: Option<RawCache>,
    #[serde(default)]
    hook: Option<RawHook>,
}

type SpannedList = Vec<Spanned<String>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    include: SpannedList,
    #[serde(default)]
    exclude: SpannedList,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    passthrough: SpannedList,
    #[serde(default)]
    fingerprint: Option<Vec<Spanned<RawFingerprint>>>,
    #[serde(default)]
    redact_env: SpannedList,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    fingerprint_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    include: Option<Spanned<SpannedList>>,
    #[serde(default)]
    exclude: SpannedList,
    #[serde(default)]
    command: Option<Spanned<String>>,
    #[serde(default)]
    tests: Option<Spanned<SpannedList>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    passthrough: SpannedList,
    #[serde(default)]
    fingerprint: Option<Vec<Spanned<RawFingerprint>>>,
    #[serde(default)]
    sandbox: Sandbox,
    #[serde(default)]
    network: bool,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default)]
    remote: Option<Spanned<String>>,
    #[serde(default, rename = "trusted-public-keys")]
    trusted_public_keys: Vec<Spanned<RawKey>>,
    #[serde(default)]
    accept: Option<Spanned<Accept>>,
    #[serde(default, rename = "timeout-secs")]
    timeout_secs: Option<Spanned<i64>>,
}

/// Deserialise a value written either as a string or as a table (`T::from_table`), as the
/// trusted keys and fingerprints accept.
fn string_or_table<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: StringOrTable,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: StringOrTable> serde::de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(T::EXPECTING)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            Ok(T::from_string(v.to_owned()))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                .map(T::from_table)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

trait StringOrTable: Sized {
    type Table: for<'de> Deserialize<'de>;
    const EXPECTING: &'static str;
    fn from_string(s: String) -> Self;
    fn from_table(t: Self::Table) -> Self;
}

/// A trusted key: a string `name:base64` or a table `{ key = "...", label = "..." }`.
enum RawKey {
    Plain(String),
    Labelled(RawLabelledKey),
}

impl StringOrTable for RawKey {
    type Table = RawLabelledKey;
    const EXPECTING: &'static str =
        "a string `name:base64` or a table { key = \"name:base64\", label = \"...\" }";
    fn from_string(s: String) -> Self {
        RawKey::Plain(s)
    }
    fn from_table(t: RawLabelledKey) -> Self {
        RawKey::Labelled(t)
    }
}

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_table(d)
    }
}

/// A fingerprint: a command string, `{ command = "...", watch = ["path", "$VAR", ...] }`, or
/// a Python environment `{ python = "python3" }`.
enum RawFingerprint {
    Plain(String),
    Table(RawFingerprintTable),
}

impl RawFingerprint {
    /// The resolved fingerprint (after [`check_fingerprint`] accepted it).
    fn resolved(&self) -> Fingerprint {
        match self {
            RawFingerprint::Plain(c) => Fingerprint::Command(c.clone()),
            RawFingerprint::Table(RawFingerprintTable {
                python: Some(p), ..
            }) => Fingerprint::Python(p.clone()),
            RawFingerprint::Table(t) => Fingerprint::Command(t.command.clone().unwrap_or_default()),
        }
    }

    /// The `watch` list of a watched command.
    fn watch(&self) -> Option<&[String]> {
        match self {
            RawFingerprint::Table(t) if t.command.is_some() => t.watch.as_deref(),
            _ => None,
        }
    }
}

impl StringOrTable for RawFingerprint {
    type Table = RawFingerprintTable;
    const EXPECTING: &'static str = "a command string, a table { command = \"...\", watch = [\"path\", \"$VAR\"] } or { python = \"python3\" }";
    fn from_string(s: String) -> Self {
        RawFingerprint::Plain(s)
    }
    fn from_table(t: RawFingerprintTable) -> Self {
        RawFingerprint::Table(t)
    }
}

impl<'de> Deserialize<'de> for RawFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_table(d)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFingerprintTable {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    watch: Option<Vec<String>>,
    #[serde(default)]
    python: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabelledKey {
    key: String,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    #[serde(default)]
    mode: HookMode,
    #[serde(default)]
    commits: HookCommits,
    #[serde(default)]
    tags: HookTags,
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
    /// Where each glob was first written (the `tests` entry for those the shorthand adds), to
    /// locate a glob that parses but does not compile (see [`locate_uncompilable`]).
    glob_spans: std::cell::RefCell<HashMap<String, Range<usize>>>,
}

impl Ctx<'_> {
    fn note_glob(&self, glob: &str, span: Range<usize>) {
        self.glob_spans
            .borrow_mut()
            .entry(glob.to_owned())
            .or_insert(span);
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim_end().replace('\n', "; ");
        self.error(e.span().unwrap_or(0..0), message)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn resolve(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    if *raw.version.get_ref() != VERSION {
        return Err(ctx.error(
            raw.version.span(),
            format!(
                "unsupported config version {} (this checkdef understands version {VERSION})",
                raw.version.get_ref()
            ),
        ));
    }
    let defaults = raw.defaults.unwrap_or_default();
    for g in defaults.include.iter().chain(&defaults.exclude) {
        check_glob(g, ctx)?;
    }
    check_env_map(&defaults.env, ctx)?;
    for v in defaults.passthrough.iter().chain(&defaults.redact_env) {
        check_var_name(v, ctx)?;
    }
    for f in defaults.fingerprint.iter().flatten() {
        check_fingerprint(f, ctx)?;
    }
    duration_field(defaults.timeout.as_ref(), "timeout", ctx)?;
    let fingerprint_timeout = duration_field(
        defaults.fingerprint_timeout.as_ref(),
        "fingerprint_timeout",
        ctx,
    )?
    .unwrap_or(DEFAULT_FINGERPRINT_TIMEOUT);

    if raw.segment.is_empty() {
        return Err(ctx.error(
            raw.version.span(),
            "no [[segment]] is declared (add at least one segment with a name, include and command)",
        ));
    }
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut segments = Vec::with_capacity(raw.segment.len());
    let mut segment_spans = Vec::with_capacity(raw.segment.len());
    for spanned in raw.segment {
        let seg_span = spanned.span();
        segment_spans.push(seg_span.clone());
        let seg = spanned.into_inner();
        let name = seg.name.get_ref().clone();
        check_segment_name(&seg.name, ctx)?;
        if let Some(first) = seen.get(&name) {
            let (line, _) = line_column(ctx.text, first.start);
            return Err(ctx.error(
                seg.name.span(),
                format!("duplicate segment name `{name}` (first declared on line {line})"),
            ));
        }
        seen.insert(name.clone(), seg.name.span());
        segments.push(resolve_segment(seg, seg_span, &defaults, ctx)?);
    }

    let cache = match raw.cache {
        Some(c) => resolve_cache(c, ctx)?,
        None => CacheConfig::default(),
    };
    let hook = raw
        .hook
        .map(|h| HookConfig {
            mode: h.mode,
            commits: h.commits,
            tags: h.tags,
        })
        .unwrap_or_default();
    let redact_env = distinct(defaults.redact_env.iter().map(|s| s.get_ref().clone()));
    // Validation by building what will be used: a glob can parse and still be too large for
    // the glob engine (alone, or together with the others).
    let matcher = Matcher::new(&segments)
        .map_err(|e| locate_uncompilable(&segments, &segment_spans, &e, ctx))?;
    Ok(Config {
        path: ctx.path.to_path_buf(),
        segments,
        cache,
        hook,
        redact_env,
        fingerprint_timeout,
        matcher,
    })
}

/// A duration-valued field (`timeout`), validated with file:line:column.
fn duration_field(
    value: Option<&Spanned<String>>,
    field: &str,
    ctx: &Ctx<'_>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    value
        .map(|v| {
            crate::duration::parse(v.get_ref())
                .map_err(|why| ctx.error(v.span(), format!("{field}: {why}")))
        })
        .transpose()
}

fn resolve_segment(
    seg: RawSegment,
    seg_span: Range<usize>,
    defaults: &RawDefaults,
    ctx: &Ctx<'_>,
) -> Result<Segment, ConfigError> {
    let name = seg.name.get_ref().clone();
    let own_include = seg
        .include
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or(&[]);
    let tests = seg.tests.as_ref().map(|l| l.get_ref().as_slice());
    if own_include.is_empty() && tests.is_none_or(|t| t.is_empty()) {
        let span = seg.include.as_ref().map_or(seg.name.span(), |l| l.span());
        return Err(ctx.error(
            span,
            format!(
                "segment `{name}` has no inputs (give it `include = [...]` globs or the pytest `tests = [...]` shorthand)"
            ),
        ));
    }
    for g in own_include.iter().chain(&seg.exclude) {
        check_glob(g, ctx)?;
    }
    let command = match (&seg.command, &seg.tests) {
        (Some(c), Some(t)) => {
            let span = if c.span().start > t.span().start {
                c.span()
            } else {
                t.span()
            };
            return Err(ctx.error(
                span,
                format!("segment `{name}` sets both `command` and `tests`; use one of them"),
            ));
        }
        (Some(c), None) => {
            check_nonempty(c, "command", ctx)?;
            c.get_ref().clone()
        }
        (None, Some(t)) => {
            if t.get_ref().is_empty() {
                return Err(ctx.error(
                    t.span(),
                    format!("segment `{name}` has an empty `tests` list"),
                ));
            }
            for test in t.get_ref() {
                check_test_path(test, ctx)?;
            }
            pytest_command(t.get_ref().iter().map(|s| s.get_ref().as_str()))
        }
        (None, None) => {
            return Err(ctx.error(
                seg.name.span().start..seg_span.end.min(seg.name.span().end),
                format!("segment `{name}` has no `command` (or pytest `tests = [...]` shorthand)"),
            ));
        }
    };

    let mut include: Vec<String> = defaults
        .include
        .iter()
        .chain(own_include)
        .map(|s| s.get_ref().clone())
        .collect();
    let declared_include = distinct(include.clone());
    if let Some(tests) = tests {
        include.extend(pytest_inputs(tests.iter().map(|s| s.get_ref().as_str())));
        for t in tests {
            for g in pytest_inputs([t.get_ref().as_str()]) {
                ctx.note_glob(&g, t.span());
            }
        }
    }
    let include = distinct(include);
    let exclude = distinct(
        defaults
            .exclude
            .iter()
            .chain(&seg.exclude)
            .map(|s| s.get_ref().clone()),
    );

    check_env_map(&seg.env, ctx)?;
    for v in &seg.passthrough {
        check_var_name(v, ctx)?;
    }
    for f in seg.fingerprint.iter().flatten() {
        check_fingerprint(f, ctx)?;
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in defaults.env.iter().chain(&seg.env) {
        env.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    let mut passthrough: Vec<String> = defaults
        .passthrough
        .iter()
        .chain(&seg.passthrough)
        .map(|s| s.get_ref().clone())
        .chain(std::iter::once("PATH".to_owned()))
        .filter(|v| !env.contains_key(v))
        .collect();
    passthrough.sort();
    passthrough.dedup();
    let timeout = match duration_field(seg.timeout.as_ref(), "timeout", ctx)? {
        Some(t) => t,
        None => duration_field(defaults.timeout.as_ref(), "timeout", ctx)?
            .unwrap_or(DEFAULT_CHECK_TIMEOUT),
    };
    let declared = || {
        defaults
            .fingerprint
            .iter()
            .flatten()
            .chain(seg.fingerprint.iter().flatten())
    };
    let mut fingerprint: Vec<Fingerprint> = Vec::new();
    for f in declared() {
        let f = f.get_ref().resolved();
        if !fingerprint.iter().any(|known| known.key() == f.key()) {
            fingerprint.push(f);
        }
    }
    // Nothing declared (not even `fingerprint = []`): a check that runs Python depends on its
    // environment, so that is hashed by default (docs/configuration.md).
    if defaults.fingerprint.is_none() && seg.fingerprint.is_none() {
        let interpreter = match &seg.tests {
            Some(_) => Some("python3"),
            None => crate::pyenv::command_interpreter(&command),
        };
        if let Some(i) = interpreter {
            fingerprint.push(Fingerprint::Python(i.to_owned()));
        }
    }
    // A command is reused across invocations only if every declaration of it says what it
    // depends on; the watch lists of several declarations add up.
    let mut fingerprint_watch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for fp in &fingerprint {
        let Fingerprint::Command(cmd) = fp else {
            continue;
        };
        let mut watch = Vec::new();
        let all_watched = declared()
            .filter(|f| f.get_ref().resolved() == *fp)
            .all(|f| match f.get_ref().watch() {
                None => false,
                Some(w) => {
                    watch.extend(w.iter().cloned());
                    true
                }
            });
        if all_watched {
            watch.sort();
            watch.dedup();
            fingerprint_watch.insert(cmd.clone(), watch);
        }
    }

    Ok(Segment {
        name,
        description: seg.description,
        include,
        exclude,
        declared_include,
        command,
        tests: seg.tests.map(|t| {
            t.into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect()
        }),
        env,
        passthrough,
        fingerprint,
        fingerprint_watch,
        sandbox: seg.sandbox,
        network: seg.network,
        timeout,
        matcher: OnceLock::new(),
    })
}

fn resolve_cache(c: RawCache, ctx: &Ctx<'_>) -> Result<CacheConfig, ConfigError> {
    if let Some(remote) = &c.remote {
        let url = remote.get_ref();
        let ok = ["http://", "https://", "file://", "s3://"]
            .iter()
            .any(|scheme| {
                url.len() > scheme.len() && url[..scheme.len()].eq_ignore_ascii_case(scheme)
            });
        if !ok || url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(ctx.error(
                remote.span(),
                format!(
                    "invalid cache remote `{}` (expected an http://, https://, s3:// or file:// URL)",
                    cache_proto::RedactedUrl::new(url)
                ),
            ));
        }
        if url.starts_with("s3://")
            && let Err(e) = cache_proto::store::S3Location::parse(url)
        {
            return Err(ctx.error(remote.span(), format!("invalid cache remote: {e}")));
        }
    }
    let mut keys = Vec::new();
    for k in &c.trusted_public_keys {
        let (key, label) = match k.get_ref() {
            RawKey::Plain(s) => (s.clone(), None),
            RawKey::Labelled(l) => (l.key.clone(), l.label.clone()),
        };
        let name = check_public_key(&key).map_err(|why| {
            ctx.error(
                k.span(),
                format!("invalid trusted public key `{key}`: {why}"),
            )
        })?;
        if let Some(label) = &label
            && (label.is_empty() || label.chars().any(char::is_whitespace))
        {
            return Err(ctx.error(
                k.span(),
                format!("invalid key label `{label}` (expected a word such as `ci`)"),
            ));
        }
        if keys.iter().any(|t: &TrustedKey| t.key == key) {
            return Err(ctx.error(
                k.span(),
                format!("trusted public key `{name}` is listed twice"),
            ));
        }
        keys.push(TrustedKey { name, key, label });
    }
    let accept = c.accept.as_ref().map(|a| *a.get_ref()).unwrap_or_default();
    if accept == Accept::CiOnly && !keys.iter().any(|k| k.label.as_deref() == Some("ci")) {
        let span = c.accept.as_ref().map(|a| a.span()).unwrap_or(0..0);
        return Err(ctx.error(
            span,
            "accept = \"ci-only\" needs at least one trusted public key labelled \"ci\" (write it as { key = \"...\", label = \"ci\" })",
        ));
    }
    let timeout_secs = match &c.timeout_secs {
        Some(t) if *t.get_ref() <= 0 || *t.get_ref() > 3600 => {
            return Err(ctx.error(t.span(), "timeout-secs must be between 1 and 3600"));
        }
        Some(t) => Some(*t.get_ref() as u64),
        None => None,
    };
    Ok(CacheConfig {
        remote: c.remote.map(Spanned::into_inner),
        trusted_public_keys: keys,
        accept,
        timeout_secs,
    })
}

/// Check `name:base64` where the base64 part decodes to a 32-byte ed25519 key; return the name.
fn check_public_key(key: &str) -> Result<String, &'static str> {
    use base64::Engine as _;
    let (name, b64) = key.split_once(':').ok_or("expected `name:base64`")?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the key name before `:` is empty or contains whitespace");
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after `:` is not valid base64")?;
    if bytes.len() != 32 {
        return Err("the decoded key is not 32 bytes (an ed25519 public key)");
    }
    Ok(name.to_owned())
}

fn check_segment_name(name: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let why = if n.is_empty() {
        Some("it is empty".to_owned())
    } else if n.starts_with('.') {
        Some("it starts with `.`".to_owned())
    } else if n.len() > MAX_SEGMENT_NAME_LEN {
        Some(format!(
            "it is longer than {MAX_SEGMENT_NAME_LEN} characters"
        ))
    } else {
        n.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._+?=-".contains(*c)))
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        Some(why) => Err(ctx.error(
            name.span(),
            format!("invalid segment name `{n}`: {why} (allowed: letters, digits and . _ + ? = -)"),
        )),
        None => Ok(()),
    }
}

fn check_glob(g: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let p = g.get_ref();
    ctx.note_glob(p, g.span());
    let why = if p.is_empty() {
        Some("it is empty".to_owned())
    } else if p.starts_with('/') {
        Some("patterns are relative to the repository root; remove the leading `/`".to_owned())
    } else if p == "." || p.starts_with("./") || p.split('/').any(|c| c == ".." || c == ".") {
        Some(
            "`.` and `..` components never match; write the path from the repository root"
                .to_owned(),
        )
    } else if p.ends_with('/') {
        Some(format!(
            "patterns match files, not directories; write `{p}**`"
        ))
    } else {
        compile_glob(p).err().map(|e| e.kind().to_string())
    };
    match why {
        Some(why) => Err(ctx.error(g.span(), format!("invalid glob `{}`: {why}", clip_glob(p)))),
        None => Ok(()),
    }
}

fn check_var_name(v: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let n = v.get_ref();
    if n.is_empty() || n.contains('=') || n.contains('\0') || n.chars().any(char::is_whitespace) {
        return Err(ctx.error(v.span(), format!("invalid environment variable name `{n}`")));
    }
    Ok(())
}

fn check_env_map(
    env: &BTreeMap<Spanned<String>, Spanned<String>>,
    ctx: &Ctx<'_>,
) -> Result<(), ConfigError> {
    for (k, v) in env {
        check_var_name(k, ctx)?;
        if v.get_ref().contains('\0') {
            return Err(ctx.error(
                v.span(),
                format!("the value of `{}` contains a NUL byte", k.get_ref()),
            ));
        }
    }
    Ok(())
}

fn check_nonempty(s: &Spanned<String>, what: &str, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    if s.get_ref().trim().is_empty() {
        return Err(ctx.error(s.span(), format!("empty {what}")));
    }
    if s.get_ref().contains('\0') {
        return Err(ctx.error(s.span(), format!("{what} contains a NUL byte")));
    }
    Ok(())
}

fn check_fingerprint(f: &Spanned<RawFingerprint>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    if let RawFingerprint::Table(t) = f.get_ref() {
        let problem = match (&t.command, &t.watch, &t.python) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => None,
            (Some(_), None, None) => Some(
                "missing field `watch` (a watched command needs `watch = [...]`; a plain command is just a string)",
            ),
            (Some(_), _, Some(_)) => Some(
                "a fingerprint table has either `command` (with `watch`) or `python`, not both",
            ),
            (None, _, None) => {
                Some("a fingerprint table needs `command` (with `watch`) or `python`")
            }
            (None, Some(_), Some(_)) => Some(
                "`watch` belongs to a command; `{ python = ... }` tracks its environment itself",
            ),
        };
        if let Some(p) = problem {
            return Err(ctx.error(f.span(), p));
        }
        if let Some(p) = &t.python {
            let p = Spanned::new(f.span(), p.clone());
            check_nonempty(&p, "python interpreter", ctx)?;
            return Ok(());
        }
    }
    let command = Spanned::new(f.span(), f.get_ref().resolved().key());
    check_nonempty(&command, "fingerprint command", ctx)?;
    if let Some(watch) = f.get_ref().watch() {
        for entry in watch {
            // Variable names follow the rule of `passthrough`; paths must not be empty.
            let what = match entry.strip_prefix('$') {
                Some(var)
                    if var.is_empty()
                        || var.contains(['=', '\0'])
                        || var.chars().any(char::is_whitespace) =>
                {
                    "an environment variable name after `$`"
                }
                Some(_) => continue,
                None if entry.trim().is_empty() || entry.contains('\0') => "a file path",
                None => continue,
            };
            return Err(ctx.error(
                f.span(),
                format!(
                    "fingerprint `{}`: watch entry `{entry}` is not {what}",
                    command.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

fn check_test_path(t: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let file = test_file(t.get_ref());
    if file.is_empty()
        || file.starts_with('/')
        || file
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        || t.get_ref().contains('\0')
    {
        return Err(ctx.error(
            t.span(),
            format!(
                "invalid test path `{}` (expected a file or directory relative to the repository root, optionally with ::node)",
                t.get_ref()
            ),
        ));
    }
    Ok(())
}

/// The file or directory part of a pytest node id (`tests/test_a.py::test_x` → `tests/test_a.py`).
pub(crate) fn test_file(test: &str) -> &str {
    test.split_once("::").map_or(test, |(f, _)| f)
}

/// `python3 -m pytest <tests>` with each test quoted for `sh` when needed.
pub fn pytest_command<'a>(tests: impl IntoIterator<Item = &'a str>) -> String {
    let mut cmd = String::from("python3 -m pytest");
    for t in tests {
        cmd.push(' ');
        cmd.push_str(&shell_quote(t));
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=+,@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The inputs the `tests` shorthand adds: the tests themselves (as a file or a directory), and
/// every file pytest itself reads for them in each directory from the repository root down to
/// each test (the test itself, when it is a directory, included): the configuration files
/// ([`PYTEST_CONFIG_FILES`]) and [`PYTEST_PATH_FILES`]. A directory test's `<dir>/**` covers
/// what lies below it.
pub fn pytest_inputs<'a>(tests: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut dirs: Vec<String> = vec![String::new()];
    let mut own: Vec<String> = Vec::new();
    for t in tests {
        let file = test_file(t).trim_end_matches('/');
        let escaped = globset::escape(file);
        own.push(escaped.clone());
        own.push(format!("{escaped}/**"));
        let comps: Vec<&str> = file.split('/').collect();
        // Every proper prefix is a directory on the path. The entry itself is one too unless
        // it names a module (a directory test's `/**` covers its files already, but pytest's
        // configuration search starts there, so they are listed for clarity).
        let last = if file.ends_with(".py") {
            comps.len() - 1
        } else {
            comps.len()
        };
        for k in 1..=last {
            dirs.push(comps[..k].join("/"));
        }
    }
    for d in distinct(dirs) {
        for name in PYTEST_CONFIG_FILES.iter().chain(&PYTEST_PATH_FILES) {
            out.push(if d.is_empty() {
                (*name).to_owned()
            } else {
                format!("{}/{name}", globset::escape(&d))
            });
        }
    }
    out.extend(own);
    distinct(out)
}

fn distinct(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("checkdef.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("should fail").to_string()
    }

    const MINIMAL: &str = r#"
version = 1
[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "true"
"#;

    #[test]
    fn timeouts_come_from_the_segment_then_the_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.segments[0].timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(c.fingerprint_timeout, DEFAULT_FINGERPRINT_TIMEOUT);
        let c = parse(
            "version = 1\n[defaults]\ntimeout = \"moderate\"\nfingerprint_timeout = \"5s\"\n\
             [[segment]]\nname = \"a\"\ninclude = [\"a\"]\ncommand = \"true\"\n\
             [[segment]]\nname = \"b\"\ninclude = [\"b\"]\ncommand = \"true\"\ntimeout = \"3s\"\n",
        )
        .unwrap();
        assert_eq!(c.segments[0].timeout, std::time::Duration::from_secs(300));
        assert_eq!(c.segments[1].timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.fingerprint_timeout, std::time::Duration::from_secs(5));
        let e = err(
            "version = 1\n[defaults]\nfingerprint_timeout = \"0s\"\n[[segment]]\nname = \"a\"\ninclude = [\"a\"]\ncommand = \"true\"\n",
        );
        assert!(
            e.contains(
                "checkdef.toml:3:23: fingerprint_timeout: duration `0s` must be longer than zero"
            ),
            "{e}"
        );
    }

    #[test]
    fn minimal() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.segments.len(), 1);
        let s = &c.segments[0];
        assert_eq!(s.name, "foo");
        assert_eq!(s.include, vec!["src/foo/**"]);
        assert_eq!(s.passthrough, vec!["PATH"]);
        assert_eq!(s.sandbox, Sandbox::Filtered);
        assert_eq!(c.hook.mode, HookMode::All);
        assert_eq!(c.hook.commits, HookCommits::Tip);
        assert_eq!(c.hook.tags, HookTags::Check);
        assert_eq!(c.cache, CacheConfig::default());
    }

    #[test]
    fn watched_fingerprints_merge_only_when_every_declaration_watches() {
        let text = r#"
version = 1
[defaults]
fingerprint = [
  { command = "python3 --version", watch = [".python-version"] },
  { command = "node --version", watch = [".nvmrc"] },
]

[[segment]]
name = "a"
include = ["a/**"]
command = "true"
fingerprint = [{ command = "python3 --version", watch = ["$PYENV_VERSION", ".python-version"] }]

[[segment]]
name = "b"
include = ["b/**"]
command = "true"
fingerprint = ["python3 --version", "uv pip freeze"]
"#;
        let c = parse(text).unwrap();
        let (a, b) = (&c.segments[0], &c.segments[1]);
        let keys = |s: &Segment| {
            s.fingerprint
                .iter()
                .map(Fingerprint::key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(a), vec!["python3 --version", "node --version"]);
        assert_eq!(
            a.fingerprint_watch.get("python3 --version").unwrap(),
            &vec!["$PYENV_VERSION".to_owned(), ".python-version".to_owned()]
        );
        assert_eq!(
            keys(b),
            vec!["python3 --version", "node --version", "uv pip freeze"]
        );
        assert!(
            !b.fingerprint_watch.contains_key("python3 --version"),
            "declared plain in b: runs every time"
        );
        assert!(b.fingerprint_watch.contains_key("node --version"));
        assert!(!b.fingerprint_watch.contains_key("uv pip freeze"));

        for (bad, why) in [
            (r#"{ command = "x", watch = [""] }"#, "is not a file path"),
            (
                r#"{ command = "x", watch = ["$"] }"#,
                "is not an environment variable name",
            ),
            (r#"{ command = "x" }"#, "missing field `watch`"),
            (
                r#"{ command = "x", watch = [], extra = 1 }"#,
                "unknown field `extra`",
            ),
            (
                r#"{ command = "", watch = [] }"#,
                "empty fingerprint command",
            ),
            ("3", "a command string, a table"),
        ] {
            let text = format!(
                "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"a/**\"]\ncommand = \"true\"\nfingerprint = [{bad}]\n"
            );
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(":6:"), "{bad}: {e}");
        }
    }

    #[test]
    fn python_environment_is_the_default_fingerprint_of_python_checks() {
        let text = r#"
version = 1
[[segment]]
name = "short"
tests = ["tests/test_a.py"]

[[segment]]
name = "venv"
include = ["a/**"]
command = ".venv/bin/python -m pytest"

[[segment]]
name = "make"
include = ["a/**"]
command = "make test"

[[segment]]
name = "narrowed"
tests = ["tests/test_a.py"]
fingerprint = []

[[segment]]
name = "explicit"
include = ["a/**"]
command = "true"
fingerprint = [{ python = "python3.11" }, "python3 --version"]
"#;
        let c = parse(text).unwrap();
        let fp = |i: usize| c.segments[i].fingerprint.clone();
        assert_eq!(fp(0), vec![Fingerprint::Python("python3".into())]);
        assert_eq!(fp(1), vec![Fingerprint::Python(".venv/bin/python".into())]);
        assert_eq!(fp(2), vec![]);
        assert_eq!(fp(3), vec![], "fingerprint = [] turns the default off");
        assert_eq!(
            fp(4),
            vec![
                Fingerprint::Python("python3.11".into()),
                Fingerprint::Command("python3 --version".into())
            ]
        );
        assert_eq!(fp(4)[0].key(), r#"{ python = "python3.11" }"#);
        // Declared in [defaults]: no segment gets the default on top.
        let c = parse("version = 1\n[defaults]\nfingerprint = [\"node --version\"]\n[[segment]]\nname = \"a\"\ntests = [\"t.py\"]\n").unwrap();
        assert_eq!(
            c.segments[0].fingerprint,
            vec![Fingerprint::Command("node --version".into())]
        );
        for (bad, why) in [
            (
                r#"{ python = "python3", watch = [] }"#,
                "`watch` belongs to a command",
            ),
            (r#"{ python = "python3", command = "x" }"#, "not both"),
            (r#"{ python = "" }"#, "empty python interpreter"),
            ("{}", "needs `command`"),
        ] {
            let text = format!(
                "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"a/**\"]\ncommand = \"true\"\nfingerprint = [{bad}]\n"
            );
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(":6:"), "{bad}: {e}");
        }
    }

    #[test]
    fn pytest_inputs_cover_every_file_pytest_reads_on_the_test_paths() {
        let got = pytest_inputs(["tests/unit/test_a.py::test_x", "it"]);
        for dir in ["", "tests/", "tests/unit/", "it/"] {
            for name in PYTEST_CONFIG_FILES.iter().chain(&PYTEST_PATH_FILES) {
                let want = format!("{dir}{name}");
                assert!(got.contains(&want), "{want} in {got:?}");
            }
        }
        for want in [
            "tests/unit/test_a.py",
            "it",
            "it/**",
            "pytest.toml",
            ".pytest.toml",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} in {got:?}");
        }
        assert!(
            !got.iter().any(|g| (g.starts_with("tests/unit/test_a.py/")
                && g != "tests/unit/test_a.py/**")
                || g.contains("::")),
            "{got:?}"
        );
        // Globs in a test path are escaped: `[` is a literal character of the directory name.
        let got = pytest_inputs(["t[1]/test_a.py"]);
        let want = format!("{}/conftest.py", globset::escape("t[1]"));
        assert!(got.contains(&want), "{want} in {got:?}");
    }

    #[test]
    fn full_example_merges_defaults() {
        let text = r#"
version = 1
[defaults]
include = ["pytest.ini", "conftest.py"]
exclude = ["**/__pycache__/**"]
env = { PYTHONPATH = "src", A = "1" }
passthrough = ["HOME"]
fingerprint = ["python3 --version"]
redact_env = ["TOKEN"]

[cache]
remote = "https://cache.example.org"
trusted-public-keys = [
  "dev-1:11qvo4Ukx8FPzoz0b4xybAOAK1dzLuiUjn+JP2cgXu4=",
  { key = "ci-1:11qvo4Ukx8FPzoz0b4xybAOAK1dzLuiUjn+JP2cgXu8=", label = "ci" },
]
accept = "ci-only"
timeout-secs = 5

[hook]
mode = "affected"
commits = "all"
tags = "skip"

[[segment]]
name = "foo-tests"
description = "Foo module tests"
include = ["src/foo/**", "tests/test_foo.py"]
exclude = ["**/*.md"]
command = "python3 -m pytest -q tests/test_foo.py"
env = { A = "2" }
passthrough = ["TERM", "A"]
sandbox = "full"

[[segment]]
name = "bar-tests"
tests = ["tests/unit/test_bar.py::test_x"]
"#;
        let c = parse(text).unwrap();
        let foo = &c.segments[0];
        assert_eq!(
            foo.include,
            vec![
                "pytest.ini",
                "conftest.py",
                "src/foo/**",
                "tests/test_foo.py"
            ]
        );
        assert_eq!(foo.exclude, vec!["**/__pycache__/**", "**/*.md"]);
        assert_eq!(foo.env.get("A").unwrap(), "2");
        assert_eq!(foo.env.get("PYTHONPATH").unwrap(), "src");
        assert_eq!(foo.passthrough, vec!["HOME", "PATH", "TERM"]);
        assert_eq!(
            foo.fingerprint,
            vec![Fingerprint::Command("python3 --version".into())]
        );
        assert_eq!(foo.sandbox, Sandbox::Full);
        assert_eq!(foo.description.as_deref(), Some("Foo module tests"));
        let bar = &c.segments[1];
        assert_eq!(
            bar.command,
            "python3 -m pytest tests/unit/test_bar.py::test_x"
        );
        for needed in [
            "pyproject.toml",
            "tox.ini",
            "setup.cfg",
            "tests/unit/test_bar.py",
            "tests/conftest.py",
            "tests/unit/conftest.py",
        ] {
            assert!(
                bar.include.iter().any(|g| g == needed),
                "{needed} in {:?}",
                bar.include
            );
        }
        assert_eq!(c.cache.accept, Accept::CiOnly);
        assert_eq!(c.cache.trusted_public_keys.len(), 2);
        assert_eq!(c.cache.trusted_public_keys[1].label.as_deref(), Some("ci"));
        assert_eq!(c.cache.trusted_public_keys[1].name, "ci-1");
        assert_eq!(c.cache.timeout(), std::time::Duration::from_secs(5));
        assert_eq!(c.hook.mode, HookMode::Affected);
        assert_eq!(c.hook.commits, HookCommits::All);
        assert_eq!(c.hook.tags, HookTags::Skip);
        assert_eq!(c.redact_env, vec!["TOKEN"]);
    }

    #[test]
    fn unknown_key_is_located() {
        let e = err(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"x\"]\ncommand = \"true\"\ncomand = \"x\"\n",
        );
        assert!(e.starts_with("checkdef.toml:6:1: "), "{e}");
        assert!(e.contains("comand"), "{e}");
    }

    #[test]
    fn unknown_version() {
        let e = err("version = 2\n");
        assert!(
            e.starts_with("checkdef.toml:1:11: unsupported config version 2"),
            "{e}"
        );
    }

    #[test]
    fn missing_version() {
        let e = err("[[segment]]\nname = \"a\"\ninclude = [\"x\"]\ncommand = \"true\"\n");
        assert!(e.contains("version"), "{e}");
    }

    #[test]
    fn duplicate_names() {
        let e = err(&format!(
            "{MINIMAL}\n[[segment]]\nname = \"foo\"\ninclude = [\"y\"]\ncommand = \"true\"\n"
        ));
        assert!(
            e.starts_with(
                "checkdef.toml:9:8: duplicate segment name `foo` (first declared on line 4)"
            ),
            "{e}"
        );
    }

    #[test]
    fn no_inputs() {
        let e = err("version = 1\n[[segment]]\nname = \"a\"\ninclude = []\ncommand = \"true\"\n");
        assert!(
            e.starts_with("checkdef.toml:4:11: segment `a` has no inputs"),
            "{e}"
        );
        let e = err("version = 1\n[[segment]]\nname = \"a\"\ncommand = \"true\"\n");
        assert!(
            e.starts_with("checkdef.toml:3:8: segment `a` has no inputs"),
            "{e}"
        );
    }

    #[test]
    fn invalid_glob() {
        let e = err(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"ok/**\", \"src/{a\"]\ncommand = \"true\"\n",
        );
        assert!(
            e.starts_with("checkdef.toml:4:21: invalid glob `src/{a`"),
            "{e}"
        );
        let e = err(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"/abs\"]\ncommand = \"true\"\n",
        );
        assert!(e.contains("leading `/`"), "{e}");
        let e = err(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"src/\"]\ncommand = \"true\"\n",
        );
        assert!(e.contains("write `src/**`"), "{e}");
    }

    #[test]
    fn bad_names_and_values() {
        let e = err(
            "version = 1\n[[segment]]\nname = \"a b\"\ninclude = [\"x\"]\ncommand = \"true\"\n",
        );
        assert!(
            e.starts_with("checkdef.toml:3:8: invalid segment name `a b`"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}sandbox = \"none\"\n"));
        assert!(e.starts_with("checkdef.toml:7:"), "{e}");
        let e = err(&format!("{MINIMAL}tests = [\"t.py\"]\n"));
        assert!(e.contains("both `command` and `tests`"), "{e}");
        let e = err(&format!("{MINIMAL}[hook]\nmode = \"some\"\n"));
        assert!(e.starts_with("checkdef.toml:8:"), "{e}");
        let e = err(&format!("{MINIMAL}[hook]\ncommits = \"every\"\n"));
        assert!(
            e.starts_with("checkdef.toml:8:") && e.contains("tip"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}[hook]\ntags = \"no\"\n"));
        assert!(
            e.starts_with("checkdef.toml:8:") && e.contains("skip"),
            "{e}"
        );
        let e = err(&format!(
            "{MINIMAL}[cache]\ntrusted-public-keys = [\"nocolon\"]\n"
        ));
        assert!(e.contains("expected `name:base64`"), "{e}");
        let e = err(&format!("{MINIMAL}[cache]\nremote = \"ftp://x\"\n"));
        assert!(
            e.starts_with("checkdef.toml:8:10: invalid cache remote"),
            "{e}"
        );
        let e = err(&format!(
            "{MINIMAL}[cache]\nremote = \"s3://bucket?region=eu-west-1&compression=xz\"\n"
        ));
        assert!(
            e.starts_with("checkdef.toml:8:10: invalid cache remote")
                && e.contains("unsupported store parameter `compression`"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}[cache]\naccept = \"ci-only\"\n"));
        assert!(e.contains("labelled \"ci\""), "{e}");
        let e = err(&format!("{MINIMAL}[cache]\ntimeout-secs = 0\n"));
        assert!(e.contains("timeout-secs"), "{e}");
        let e = err("version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"x\"]\n");
        assert!(e.contains("has no `command`"), "{e}");
        let e = err("version = 1\n");
        assert!(e.contains("no [[segment]]"), "{e}");
        let e = err("version = 1\n[defaults]\nenv = { \"A=B\" = \"x\" }\n");
        assert!(e.contains("invalid environment variable name `A=B`"), "{e}");
    }

    #[test]
    fn labelled_key_errors_name_the_field() {
        let e = err(&format!(
            "{MINIMAL}[cache]\ntrusted-public-keys = [{{ key = \"a:b\", lable = \"ci\" }}]\n"
        ));
        assert!(e.contains("unknown field `lable`"), "{e}");
        let e = err(&format!("{MINIMAL}[cache]\ntrusted-public-keys = [3]\n"));
        assert!(e.contains("name:base64"), "{e}");
    }

    #[test]
    fn syntax_error_is_located() {
        let e = err("version = 1\n[[segment]\n");
        assert!(e.starts_with("checkdef.toml:2:"), "{e}");
    }

    #[test]
    fn plain_globs_are_recognised_conservatively() {
        assert_eq!(
            plain_glob("pytest.ini"),
            Some(PlainGlob::Path("pytest.ini"))
        );
        assert_eq!(plain_glob("a/b c.py"), Some(PlainGlob::Path("a/b c.py")));
        assert_eq!(plain_glob("src/a/**"), Some(PlainGlob::Dir("src/a")));
        assert_eq!(plain_glob("a//**"), Some(PlainGlob::Dir("a/")));
        for other in [
            "**", "/**", "a/**/b", "a/*", "a/**/**", "*.py", "a?", "[ab]", "{a,b}", "a,b", "a\\*",
            "a/b**", "**/a",
        ] {
            assert_eq!(plain_glob(other), None, "{other}");
        }
    }

    /// The split matcher agrees with one plain GlobSet per segment, for paths that share
    /// directories in every order (the directory memo must never go stale).
    #[test]
    fn split_matcher_agrees_with_globset() {
        use proptest::prelude::*;
        let globs = [
            "a/**", "a/b/**", "a", "a/b", "b/**", "a/b/c.py", "a/*.py", "**/c.py", "a//**",
            "{a,b}/**", "a b/**", "ü/**", "a/b\\*c",
        ];
        let comps = ["a", "b", "c.py", "", "a b", "ü", "b*c", "x\n"];
        let cfg = |sel: &[(usize, bool, usize)]| {
            let mut text = String::from("version = 1\n");
            for (i, &(g, excl, g2)) in sel.iter().enumerate() {
                let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
                text.push_str(&format!(
                    "[[segment]]\nname = \"s{i}\"\ninclude = [{}, {}]\ncommand = \"true\"\n",
                    q(globs[g]),
                    q(globs[g2])
                ));
                if excl {
                    text.push_str("exclude = [\"**/c.py\"]\n");
                }
            }
            parse(&text).unwrap()
        };
        let strategy = (
            proptest::collection::vec((0..globs.len(), any::<bool>(), 0..globs.len()), 1..6),
            proptest::collection::vec(proptest::collection::vec(0..comps.len(), 1..5), 1..30),
        );
        proptest!(ProptestConfig::with_cases(300), |((sel, paths) in strategy)| {
            let c = cfg(&sel);
            let m = c.matcher();
            let mut scratch = MatchScratch::default();
            let mut out = Vec::new();
            for p in &paths {
                let path = p.iter().map(|&i| comps[i]).collect::<Vec<_>>().join("/");
                m.segments_for(path.as_bytes(), &mut scratch, &mut out);
                let expected: Vec<u32> = c
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_match(path.as_bytes()))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(&out, &expected, "path {:?}", path);
            }
        });
    }

    #[test]
    fn line_column_counts_chars() {
        assert_eq!(line_column("ab\nçd", 5), (2, 2));
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn matcher_maps_globs_to_segments() {
        let text = r#"
version = 1
[defaults]
include = ["pytest.ini"]
[[segment]]
name = "a"
include = ["src/a/**", "docs/{a,b}.txt", "*.cfg"]
exclude = ["**/*.md"]
command = "true"
[[segment]]
name = "b"
include = ["src/**/b.py", "**/*.md"]
command = "true"
"#;
        let c = parse(text).unwrap();
        let m = c.matcher();
        let mut scratch = MatchScratch::default();
        let mut out = Vec::new();
        let mut hits = |p: &str| {
            m.segments_for(p.as_bytes(), &mut scratch, &mut out);
            out.clone()
        };
        assert_eq!(hits("pytest.ini"), vec![0, 1]);
        assert_eq!(hits("src/a/x/y.py"), vec![0]);
        assert_eq!(hits("src/a/b.py"), vec![0, 1]);
        assert_eq!(hits("src/a/README.md"), vec![1]);
        assert_eq!(hits("docs/a.txt"), vec![0]);
        assert_eq!(hits("docs/c.txt"), Vec::<u32>::new());
        assert_eq!(hits("setup.cfg"), vec![0]);
        assert_eq!(
            hits("sub/setup.cfg"),
            Vec::<u32>::new(),
            "* stays in one component"
        );
        assert_eq!(hits("src/b.py"), vec![1], "** matches zero components");
        assert!(c.segments[0].is_match(b"src/a/x.py"));
        assert!(!c.segments[0].is_match(b"src/a/x.md"));
        assert!(c.segments[1].is_match(b"src/a/x.md"));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(
            pytest_command(["t/a.py", "t/b c.py", "it's"]),
            "python3 -m pytest t/a.py 't/b c.py' 'it'\\''s'"
        );
    }
}
