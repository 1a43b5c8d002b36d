//! The resolved configuration types, and `checkdef.toml` as written (the raw serde structures).
use std::collections::BTreeMap;
use std::sync::OnceLock;

use globset::{Candidate, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::*;

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

/// How a segment's check is started (`runner`, in a segment or `[defaults]`). Not part of the
/// input hash: both runners give the same verdict and log (see `run/warm.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    /// A plain pytest command runs as a child of a warm pytest server; any other command, and
    /// any doubt, runs as a fresh process (the default).
    #[default]
    Warm,
    /// Always a fresh `sh -c` process.
    Process,
}

impl Runner {
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::Warm => "warm",
            Runner::Process => "process",
        }
    }
}

/// What a pytest check that collects no tests (pytest's exit code 5: every test of the module
/// deselected, or the module skipped as a whole, e.g. for a missing optional dependency)
/// counts as (`no_tests`, in a segment or `[defaults]`). Hashed: the manifest says `no-tests
/// pass`, so a result stored under one rule never answers for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoTests {
    /// A failure, as for a fresh `pytest` of that module (the default).
    #[default]
    Fail,
    /// A pass.
    Pass,
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
pub struct KeyEntry {
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
    pub trusted_public_keys: Vec<KeyEntry>,
    pub accept: Accept,
    /// Network timeout; [`DEFAULT_TIMEOUT_SECS`] when unset.
    pub timeout_secs: Option<u64>,
}

impl CacheConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))
    }
}

/// What the pre-push hook does with checks still running when its `budget` runs out
/// (`[hook] on-budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBudget {
    /// Stop them and refuse the push (the default: nothing reaches the remote unchecked).
    #[default]
    Block,
    /// Let the push proceed and finish them in a detached background run.
    Defer,
}

/// The `[hook]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookConfig {
    pub mode: HookMode,
    pub commits: HookCommits,
    pub tags: HookTags,
    /// How long a push may spend on checks (`[hook] budget`; `None`: no limit, the default).
    pub budget: Option<std::time::Duration>,
    pub on_budget: OnBudget,
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
    pub runner: Runner,
    /// `no_tests` (only ever `Pass` for a pytest check).
    pub no_tests: NoTests,
    pub(super) matcher: OnceLock<(GlobSet, GlobSet)>,
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

// ---------------------------------------------------------------------------------------------
// Raw (as written) structures.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) version: Spanned<i64>,
    #[serde(default)]
    pub(super) defaults: Option<RawDefaults>,
    #[serde(default)]
    pub(super) segment: Vec<Spanned<RawSegment>>,
    #[serde(default)]
    pub(super) cache: Option<RawCache>,
    #[serde(default)]
    pub(super) hook: Option<RawHook>,
}

type SpannedList = Vec<Spanned<String>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[serde(default)]
    pub(super) include: SpannedList,
    #[serde(default)]
    pub(super) exclude: SpannedList,
    #[serde(default)]
    pub(super) env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub(super) passthrough: SpannedList,
    #[serde(default)]
    pub(super) fingerprint: Option<Vec<Spanned<RawFingerprint>>>,
    #[serde(default)]
    pub(super) redact_env: SpannedList,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) fingerprint_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) runner: Option<Runner>,
    #[serde(default)]
    pub(super) no_tests: Option<NoTests>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSegment {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) include: Option<Spanned<SpannedList>>,
    #[serde(default)]
    pub(super) exclude: SpannedList,
    #[serde(default)]
    pub(super) command: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tests: Option<Spanned<SpannedList>>,
    #[serde(default)]
    pub(super) env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub(super) passthrough: SpannedList,
    #[serde(default)]
    pub(super) fingerprint: Option<Vec<Spanned<RawFingerprint>>>,
    #[serde(default)]
    pub(super) sandbox: Sandbox,
    #[serde(default)]
    pub(super) network: bool,
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) runner: Option<Runner>,
    #[serde(default)]
    pub(super) no_tests: Option<Spanned<NoTests>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    #[serde(default)]
    pub(super) remote: Option<Spanned<String>>,
    #[serde(default, rename = "trusted-public-keys")]
    pub(super) trusted_public_keys: Vec<Spanned<RawKey>>,
    #[serde(default)]
    pub(super) accept: Option<Spanned<Accept>>,
    #[serde(default, rename = "timeout-secs")]
    pub(super) timeout_secs: Option<Spanned<i64>>,
}

/// Deserialise a value written either as a string or as a table (`T::from_table`), as the
/// trusted keys and fingerprints accept.
pub(super) fn string_or_table<'de, D, T>(d: D) -> Result<T, D::Error>
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

pub(super) trait StringOrTable: Sized {
    type Table: for<'de> Deserialize<'de>;
    const EXPECTING: &'static str;
    fn from_string(s: String) -> Self;
    fn from_table(t: Self::Table) -> Self;
}

/// A trusted key: a string `name:base64` or a table `{ key = "...", label = "..." }`.
pub(super) enum RawKey {
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
pub(super) enum RawFingerprint {
    Plain(String),
    Table(RawFingerprintTable),
}

impl RawFingerprint {
    /// The resolved fingerprint (after [`check_fingerprint`] accepted it).
    pub(super) fn resolved(&self) -> Fingerprint {
        match self {
            RawFingerprint::Plain(c) => Fingerprint::Command(c.clone()),
            RawFingerprint::Table(RawFingerprintTable {
                python: Some(p), ..
            }) => Fingerprint::Python(p.clone()),
            RawFingerprint::Table(t) => Fingerprint::Command(t.command.clone().unwrap_or_default()),
        }
    }

    /// The `watch` list of a watched command.
    pub(super) fn watch(&self) -> Option<&[String]> {
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
pub(super) struct RawFingerprintTable {
    #[serde(default)]
    pub(super) command: Option<String>,
    #[serde(default)]
    pub(super) watch: Option<Vec<String>>,
    #[serde(default)]
    pub(super) python: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLabelledKey {
    pub(super) key: String,
    #[serde(default)]
    pub(super) label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    #[serde(default)]
    pub(super) mode: HookMode,
    #[serde(default)]
    pub(super) commits: HookCommits,
    #[serde(default)]
    pub(super) tags: HookTags,
    #[serde(default)]
    pub(super) budget: Option<Spanned<String>>,
    #[serde(default, rename = "on-budget")]
    pub(super) on_budget: OnBudget,
}
