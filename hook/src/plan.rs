//! The plan: for one snapshot, each segment's inputs, manifest, input hash and store path, and
//! (relative to a base commit) whether the segment is touched. Pure of caches: cache status is
//! looked up by the caller (see [`CacheState`]).
//!
//! Cost: one walk of the snapshot (one tree walk for a commit, never reading blobs), one
//! combined glob match per path, one diff when a base is given, and each distinct fingerprint
//! command run once per process.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cache_proto::store_path::StorePath;
use gix::ObjectId;
use gix::bstr::{BStr, BString};

use crate::config::{Config, Fingerprint, MatchScratch, Matcher, Sandbox, Segment};
use crate::context::Env;
use crate::git::{FileMode, GitError, Input, Repo, Target, Visit, sort_inputs};
use crate::manifest::{self, InputHash, ManifestSpec};

/// Version of the plan's JSON document (`checkdef plan --json`).
pub const JSON_VERSION: u32 = 1;

/// Errors while building a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("fingerprint command `{command}` {source}")]
    FingerprintSpawn {
        command: String,
        #[source]
        source: crate::process::BoundedError,
    },
    #[error("no Python interpreter `{interpreter}` for the environment fingerprint (PATH={path})")]
    PythonNotFound { interpreter: String, path: String },
    #[error(
        "`{path}` {reason}: `{interpreter}` is a shim, which picks the interpreter by that file, \
         so the environment checkdef fingerprints here would not be the one the check runs"
    )]
    StaleVersionFile {
        path: String,
        reason: String,
        interpreter: String,
    },
    #[error(
        "fingerprint command `{command}` failed ({status}){}",
        stderr_suffix(stderr)
    )]
    FingerprintFailed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {}", s.lines().take(3).collect::<Vec<_>>().join(" / "))
    }
}

/// Where fingerprint outputs are kept from one invocation to the next. The caller decides
/// (checkdef: the local cache's fingerprint directory, `cache::layout::FingerprintDir`), so
/// the plan knows neither where the local cache is nor how it is laid out.
pub trait FingerprintStore: Sync {
    /// The directory the built-in Python environment fingerprints are kept in (`None`: they
    /// are not kept).
    fn dir(&self) -> Option<&Path>;

    /// The directory watched commands' outputs are kept in. Kept outputs decide input hashes
    /// without running anything, so this is `None` unless the directory is private (checked
    /// on every call: it may create the local cache).
    fn private_dir(&self) -> Option<&Path>;
}

/// No store: fingerprint outputs are not kept (each runs once per process).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFingerprintStore;

impl FingerprintStore for NoFingerprintStore {
    fn dir(&self) -> Option<&Path> {
        None
    }
    fn private_dir(&self) -> Option<&Path> {
        None
    }
}

/// A segment's cache status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheState {
    /// The result is in the local cache.
    HitLocal,
    /// The result is in the remote cache.
    HitRemote,
    /// The check has to run.
    Miss,
}

impl CacheState {
    /// `hit-local`, `hit-remote` or `miss` (as in the JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::HitLocal => "hit-local",
            CacheState::HitRemote => "hit-remote",
            CacheState::Miss => "miss",
        }
    }
}

/// One segment of a plan.
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    /// Index into [`Config::segments`].
    pub index: usize,
    pub name: String,
    pub description: Option<String>,
    /// The SHA-256 of [`manifest`](Self::manifest).
    pub input_hash: InputHash,
    /// `/nix/store/<hash>-checkdef-<name>`, see [`store_path_for`].
    pub store_path: StorePath,
    /// See [`manifest::platform`].
    pub platform: String,
    /// The repository's object format (part of the manifest).
    pub object_format: gix::hash::Kind,
    /// The inputs, sorted by path bytes.
    pub inputs: Vec<Input>,
    /// The listing of each directory around the inputs (see [`crate::listing`]); hashed.
    pub listings: Vec<(BString, String)>,
    /// Whether a changed path since the base hits this segment; `None` without a base.
    pub touched: Option<bool>,
    /// Shell command, run with `sh -c`.
    pub command: String,
    /// Hashed environment set for the run.
    pub env: BTreeMap<String, String>,
    /// Variables passed through unhashed (always includes `PATH` unless it is in `env`).
    pub passthrough: Vec<String>,
    pub sandbox: Sandbox,
    /// `network = true` (see [`crate::config::Segment::network`]).
    pub network: bool,
    /// How the check is started (not hashed).
    pub runner: crate::config::Runner,
    /// `no_tests` (see [`crate::config::NoTests`]); hashed.
    pub no_tests: crate::config::NoTests,
    /// Fingerprint command → its stdout (hashed).
    pub fingerprints: BTreeMap<String, Vec<u8>>,
    /// Declared include globs and `tests` paths that match none of the inputs (a typo, a
    /// renamed directory, an uncommitted file), reported as warnings.
    pub unmatched: Vec<Unmatched>,
    /// The check's time limit (not hashed).
    pub timeout: Duration,
}

/// A pattern of a segment that matches none of its inputs in this snapshot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unmatched {
    Include(String),
    Tests(String),
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmatched::Include(g) => write!(f, "include glob `{g}`"),
            Unmatched::Tests(t) => write!(f, "tests path `{t}`"),
        }
    }
}

/// The declared include globs and `tests` paths of `seg` that match none of `inputs` (sorted
/// by path bytes). Plain paths and `DIR/**` cost a binary search; other globs one pass over
/// the inputs together. A segment without inputs reports nothing here (it gets its own
/// warning).
pub fn unmatched(seg: &Segment, inputs: &[Input]) -> Vec<Unmatched> {
    use crate::config::{PlainGlob, plain_glob};
    let mut out = Vec::new();
    if inputs
        .iter()
        .all(|i| crate::pyenv::is_version_file(i.path.as_ref()))
    {
        return out;
    }
    let has_path = |p: &str| {
        inputs
            .binary_search_by(|i| i.path.as_slice().cmp(p.as_bytes()))
            .is_ok()
    };
    let has_below = |d: &str| {
        let prefix = format!("{d}/");
        let at = inputs.partition_point(|i| i.path.as_slice() < prefix.as_bytes());
        inputs
            .get(at)
            .is_some_and(|i| i.path.starts_with(prefix.as_bytes()))
    };
    let mut complex = Vec::new();
    for g in &seg.declared_include {
        let found = match plain_glob(g) {
            Some(PlainGlob::Path(p)) => has_path(p),
            Some(PlainGlob::Dir(d)) => has_below(d),
            None => {
                complex.push(g);
                continue;
            }
        };
        if !found {
            out.push(Unmatched::Include(g.clone()));
        }
    }
    if !complex.is_empty() {
        let mut b = globset::GlobSetBuilder::new();
        for g in &complex {
            if let Ok(glob) = crate::config::compile_glob(g) {
                b.add(glob);
            }
        }
        if let Ok(set) = b.build() {
            let mut seen = vec![false; complex.len()];
            let mut left = complex.len();
            let mut hits = Vec::new();
            for i in inputs {
                set.matches_candidate_into(
                    &globset::Candidate::from_bytes(i.path.as_slice()),
                    &mut hits,
                );
                for &h in &hits {
                    if !seen[h] {
                        seen[h] = true;
                        left -= 1;
                    }
                }
                if left == 0 {
                    break;
                }
            }
            for (g, seen) in complex.iter().zip(seen) {
                if !seen {
                    out.push(Unmatched::Include((*g).clone()));
                }
            }
        }
    }
    for t in seg.tests.iter().flatten() {
        let file = crate::config::test_file(t);
        if !has_path(file) && !has_below(file) {
            out.push(Unmatched::Tests(t.clone()));
        }
    }
    out
}

/// One warning per unmatched pattern, naming the segments it belongs to (a `[defaults]` glob
/// that matches nothing is one line, not one per segment).
pub fn unmatched_warnings(plan: &Plan) -> Vec<String> {
    let mut by: BTreeMap<&Unmatched, Vec<&str>> = BTreeMap::new();
    for s in &plan.segments {
        for u in &s.unmatched {
            by.entry(u).or_default().push(&s.name);
        }
    }
    by.into_iter()
        .map(|(u, segs)| {
            format!(
                "{u} matches no file in this snapshot (segment{} {}); check its spelling, or that the file is committed",
                if segs.len() == 1 { "" } else { "s" },
                segs.join(", ")
            )
        })
        .collect()
}

impl SegmentPlan {
    /// Whether its command is plainly a pytest run (what `no_tests` and the warm runner
    /// recognise; the `tests` shorthand expands to one).
    pub fn command_is_pytest(&self) -> bool {
        crate::run::warm::is_pytest_command(&self.command)
    }

    /// What the manifest is made of.
    pub fn spec(&self) -> ManifestSpec<'_> {
        ManifestSpec {
            segment: &self.name,
            platform: &self.platform,
            object_format: self.object_format,
            sandbox: self.sandbox,
            network: self.network,
            command: &self.command,
            no_tests: self.no_tests,
            env: &self.env,
            fingerprints: &self.fingerprints,
            listings: &self.listings,
            inputs: &self.inputs,
        }
    }

    /// The canonical manifest (see [`crate::manifest`]); rendered on demand, since only runs
    /// and `explain` need the text (the input hash is computed without holding it).
    pub fn manifest(&self) -> String {
        manifest::render(&self.spec())
    }
}

/// The plan for one snapshot.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    /// The commit checked; in work-tree mode the `HEAD` commit (`None` on an unborn branch).
    pub commit: Option<ObjectId>,
    /// The base commit `touched` is relative to.
    pub base: Option<ObjectId>,
    /// See [`manifest::platform`].
    pub platform: String,
    /// The selected segments, in configuration order.
    pub segments: Vec<SegmentPlan>,
    /// With a base: changed paths that are an input of no segment, sorted.
    pub untracked_touched: Option<Vec<BString>>,
    /// Whether a checkout converts files (see [`Repo::checkout_rules`]): inputs are then
    /// materialised through `.gitattributes` and the filters, and every segment's manifest
    /// lists the rules.
    pub convert: bool,
}

impl Plan {
    pub fn is_worktree(&self) -> bool {
        self.target == Target::WorkTree
    }

    pub fn segment(&self, name: &str) -> Option<&SegmentPlan> {
        self.segments.iter().find(|s| s.name == name)
    }
}

/// Build the plan for every segment of `config`. `env` is checkdef's environment: the
/// passthrough variables a check gets and fingerprints watch come from it; `store` keeps
/// fingerprint outputs.
pub fn build_plan(
    repo: &Repo,
    config: &Config,
    env: &Env,
    store: &dyn FingerprintStore,
    target: &Target,
    base: Option<ObjectId>,
) -> Result<Plan, PlanError> {
    build_plan_filtered(repo, config, env, store, target, base, |_| true)
}

/// Build the plan for the segments `select` accepts (the others are matched, so they still
/// count for `untracked_touched`, but get no manifest and run no fingerprint command).
pub fn build_plan_filtered(
    repo: &Repo,
    config: &Config,
    env: &Env,
    store: &dyn FingerprintStore,
    target: &Target,
    base: Option<ObjectId>,
    select: impl Fn(&Segment) -> bool,
) -> Result<Plan, PlanError> {
    let commit = match target {
        Target::Commit(c) => Some(*c),
        Target::WorkTree => repo.head_commit()?,
    };
    if let Some(dir) = store.private_dir() {
        crate::git::keep_answers_in(dir);
    }
    let matcher = config.matcher();
    let (mut per_segment, attributes, changed, listings, versions) =
        collect_inputs(repo, config, target, base)?;
    // Asked only by a Python fingerprint that goes through a shim, once.
    let stale_cell = std::cell::OnceCell::new();
    let stale = || {
        stale_cell
            .get_or_init(|| stale_version(repo, target, &versions))
            .clone()
    };
    let checkout_rules = repo.checkout_rules(&attributes)?;
    let (touched, untracked_touched) = match changed {
        None => (None, None),
        Some(changed) => {
            let (t, u) = classify_changes(matcher, &changed);
            (Some(t), Some(u))
        }
    };

    // A `sandbox = "full"` segment sees every file of the snapshot, so every file is an input:
    // hashing only its declared globs could serve a PASS that an undeclared file would break.
    let mut everything: Option<Vec<Input>> = None;
    let roots = view_roots(repo);
    let mut jobs = Vec::new();
    for (index, seg) in config.segments.iter().enumerate() {
        if !select(seg) {
            continue;
        }
        let mut inputs = std::mem::take(&mut per_segment[index]);
        if seg.sandbox == Sandbox::Full {
            if everything.is_none() {
                everything = Some(repo.entries_all(target)?);
            }
            inputs = everything.clone().unwrap_or_default();
        }
        sort_inputs(&mut inputs);
        inputs.dedup_by(|a, b| a.path == b.path);
        let fingerprints = segment_fingerprints(
            repo,
            config,
            seg,
            env,
            store,
            checkout_rules.as_deref(),
            &stale,
        )?;
        jobs.push(Job {
            index,
            seg,
            unmatched: unmatched(seg, &inputs),
            listings: listings.for_inputs(
                &inputs,
                &|id| link_target(repo, target, &inputs, id),
                &roots,
            ),
            inputs,
            fingerprints,
        });
    }
    let platform = manifest::platform();
    let segments = segment_plans(jobs, &platform, repo.object_hash(), touched.as_deref());
    Ok(Plan {
        target: *target,
        commit,
        base,
        platform,
        segments,
        untracked_touched,
        convert: checkout_rules.is_some(),
    })
}

/// The first version file of the repository root by which a shim could pick, for the
/// environment fingerprint's probe (which runs in the work tree), another interpreter than for
/// the check (which runs in a view of the snapshot): in `commit`, one whose content the work tree
/// does not hold (compared as `git add` would clean it), or one the work tree has, not ignored,
/// that the commit lacks; in either mode, one that is a symbolic link (its target is not
/// followed into the view).
fn stale_version(
    repo: &Repo,
    target: &Target,
    versions: &[Input],
) -> Option<crate::pyenv::StaleVersion> {
    let workdir = repo.workdir()?;
    let stale = |path: &str, reason: String| {
        Some(crate::pyenv::StaleVersion {
            path: path.to_owned(),
            reason,
        })
    };
    let root: Vec<&Input> = versions
        .iter()
        .filter(|v| crate::pyenv::is_root_version_file(v.path.as_ref()))
        .collect();
    if let Some(link) = root.iter().find(|v| v.mode == FileMode::Symlink) {
        return stale(
            &link.path.to_string(),
            "is a symbolic link, whose target checkdef does not follow into a check's view".into(),
        );
    }
    let Target::Commit(commit) = target else {
        return None;
    };
    let commit = commit.to_hex_with_len(12).to_string();
    for v in &root {
        let abs = workdir.join(crate::git::native(v.path.as_ref()));
        let on_disk = std::fs::symlink_metadata(&abs)
            .ok()
            .filter(|m| m.is_file())
            .and_then(|_| std::fs::read(&abs).ok());
        let id_of = |bytes: &[u8]| crate::git::blob_id(repo.object_hash(), bytes).ok();
        // The raw bytes first; only when they differ, as `git add` would clean them (eol).
        let same = on_disk.is_some_and(|bytes| {
            id_of(&bytes) == Some(v.id)
                || repo
                    .converter(&Target::WorkTree)
                    .and_then(|mut c| c.to_git(v.path.as_ref(), &bytes))
                    .is_ok_and(|clean| id_of(&clean) == Some(v.id))
        });
        if !same {
            return stale(
                &v.path.to_string(),
                format!("of commit {commit} is not the work tree's"),
            );
        }
    }
    for name in crate::pyenv::VERSION_FILES {
        if root.iter().any(|v| v.path.as_slice() == name.as_bytes()) {
            continue;
        }
        let abs = workdir.join(name);
        if std::fs::symlink_metadata(&abs).is_ok() && !crate::git::is_ignored(workdir, name) {
            return stale(
                name,
                format!("is in the work tree, not ignored, and not in commit {commit}"),
            );
        }
    }
    None
}

/// The target of the symlink whose blob is `id`: from the object database, or in the work
/// tree, for one of `inputs` hashed from the disk (untracked, or retargeted and not staged),
/// from the link on disk when it still has that target.
fn link_target(repo: &Repo, target: &Target, inputs: &[Input], id: &gix::oid) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    if let Ok(t) = repo.read_blob(id) {
        return Some(t);
    }
    if *target != Target::WorkTree {
        return None;
    }
    let workdir = repo.workdir()?;
    inputs
        .iter()
        .filter(|i| i.mode == FileMode::Symlink && i.id == id)
        .find_map(|i| {
            let t = std::fs::read_link(workdir.join(crate::git::native(i.path.as_ref()))).ok()?;
            let t = t.as_os_str().as_bytes().to_vec();
            (crate::git::blob_id(repo.object_hash(), &t).ok()? == id).then_some(t)
        })
}

/// The absolute paths a check sees the repository's snapshot at: its view is mounted at the
/// work tree's canonical path (see `run::Views`), which the path git reports may reach through
/// a symlink of the host. An absolute symlink below one of them names the snapshot's files.
/// None for a bare repository, whose checks see no work tree.
fn view_roots(repo: &Repo) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    let Some(workdir) = repo.workdir() else {
        return Vec::new();
    };
    // A relative spelling (`gix` keeps the one it was discovered by) names no absolute path.
    let given = workdir.is_absolute().then(|| workdir.to_path_buf());
    let mut roots: Vec<Vec<u8>> = given
        .into_iter()
        .chain(workdir.canonicalize().ok())
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    roots.dedup();
    roots
}

/// What one selected segment's plan is made of, before its input hash.
struct Job<'c> {
    index: usize,
    seg: &'c Segment,
    inputs: Vec<Input>,
    listings: Vec<(BString, String)>,
    fingerprints: BTreeMap<String, Vec<u8>>,
    unmatched: Vec<Unmatched>,
}

/// Every segment's matching inputs (by index into [`Config::segments`]), every
/// `.gitattributes` of the snapshot, and with a base the paths changed since it: one walk of
/// the snapshot (one work-tree walk serves both the inputs and the diff).
#[allow(clippy::type_complexity)]
fn collect_inputs(
    repo: &Repo,
    config: &Config,
    target: &Target,
    base: Option<ObjectId>,
) -> Result<
    (
        Vec<Vec<Input>>,
        Vec<Input>,
        Option<Vec<BString>>,
        crate::listing::Listings,
        Vec<Input>,
    ),
    PlanError,
> {
    let mut collect = Collect {
        matcher: config.matcher(),
        scratch: MatchScratch::default(),
        hits: Vec::with_capacity(8),
        per_segment: vec![Vec::new(); config.segments.len()],
        attributes: Vec::new(),
        listings: crate::listing::Listings::default(),
        bytecode: Vec::new(),
        versions: Vec::new(),
    };
    let changed = match (base, target) {
        (Some(base), Target::WorkTree) => {
            // Every path, untracked ones too (the diff needs them), and what the skeleton shows.
            let mut all = AllAndSeen {
                all: crate::git::CollectAll::default(),
                listings: &mut collect.listings,
            };
            repo.walk(target, &mut all)?;
            let mut all = all.all.0;
            crate::git::sort_inputs(&mut all);
            for i in &all {
                if collect.wants(i.path.as_ref()) {
                    collect.visit(i.path.as_ref(), i.mode, &i.id);
                }
            }
            Some(repo.changed_paths_from(base, &all)?)
        }
        (Some(base), Target::Commit(_)) => {
            repo.walk(target, &mut collect)?;
            Some(repo.changed_paths(base, target)?)
        }
        (None, _) => {
            repo.walk(target, &mut collect)?;
            None
        }
    };
    collect.listings.finish();
    // Only committed bytecode (a work tree's `__pycache__` is what imports wrote there).
    if matches!(target, Target::Commit(_)) {
        for inputs in &mut collect.per_segment {
            add_bytecode(inputs, &collect.bytecode);
        }
    }
    if !collect.versions.is_empty() {
        for inputs in &mut collect.per_segment {
            inputs.extend(collect.versions.iter().cloned());
        }
    }
    Ok((
        collect.per_segment,
        collect.attributes,
        changed,
        collect.listings,
        collect.versions,
    ))
}

/// The source a committed `DIR/__pycache__/NAME.TAG….pyc` is the bytecode of: `DIR/NAME.py`.
fn bytecode_source(path: &BStr) -> Option<BString> {
    use gix::bstr::ByteSlice as _;
    let path: &[u8] = path.as_ref();
    // Called for every path of the snapshot (the no-op push too): the cheap test first.
    if !path.ends_with(b".pyc") {
        return None;
    }
    let (dir, name) = match path.rfind_byte(b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => return None,
    };
    let (parent, cache) = match dir.rfind_byte(b'/') {
        Some(i) => (&dir[..=i], &dir[i + 1..]),
        None => (&b""[..], dir),
    };
    if cache != b"__pycache__" {
        return None;
    }
    let stem = &name[..name.find_byte(b'.')?];
    if stem.is_empty() {
        return None;
    }
    Some([parent, stem, b".py"].concat().into())
}

/// Committed bytecode of a segment's `.py` input is an input of the segment too, whatever its
/// `exclude` says (`**/__pycache__/**` is usual): an import uses a checkout's `.pyc` without
/// looking at the source when it is not hash-checked, and in the sandbox an unreadable
/// placeholder `.pyc` is silently compiled around — the check would pass on the source where a
/// checkout runs the committed bytecode.
fn add_bytecode(inputs: &mut Vec<Input>, bytecode: &[Input]) {
    if bytecode.is_empty() {
        return;
    }
    let have: std::collections::HashSet<BString> = inputs.iter().map(|i| i.path.clone()).collect();
    let extra: Vec<Input> = bytecode
        .iter()
        .filter(|b| !have.contains(&b.path))
        .filter(|b| bytecode_source(b.path.as_ref()).is_some_and(|src| have.contains(&src)))
        .cloned()
        .collect();
    if !extra.is_empty() {
        inputs.extend(extra);
        crate::git::sort_inputs(inputs);
    }
}

/// Every file of the snapshot (as [`crate::git::CollectAll`]), and the skeleton's paths into
/// `listings`.
struct AllAndSeen<'a> {
    all: crate::git::CollectAll,
    listings: &'a mut crate::listing::Listings,
}

impl Visit for AllAndSeen<'_> {
    fn seen(&mut self, path: &BStr, mode: FileMode, id: &gix::oid) {
        self.listings.file(path, mode, id);
    }
    fn wants(&mut self, path: &BStr) -> bool {
        self.all.wants(path)
    }
    fn visit(&mut self, path: &BStr, mode: FileMode, id: &gix::oid) {
        self.all.visit(path, mode, id);
    }
}

/// The outputs of `seg`'s fingerprints (each command run once per process, or read from
/// `store`), and the checkout rules when a checkout converts files.
fn segment_fingerprints(
    repo: &Repo,
    config: &Config,
    seg: &Segment,
    env: &Env,
    store: &dyn FingerprintStore,
    checkout_rules: Option<&str>,
    stale_version: &dyn Fn() -> Option<crate::pyenv::StaleVersion>,
) -> Result<BTreeMap<String, Vec<u8>>, PlanError> {
    let mut fingerprints = BTreeMap::new();
    for fp in &seg.fingerprint {
        let out = match fp {
            Fingerprint::Command(cmd) => {
                let watch = seg.fingerprint_watch.get(cmd).map(Vec::as_slice);
                let limit = config.fingerprint_timeout;
                fingerprint(repo.root(), cmd, watch, limit, env, store)?
            }
            Fingerprint::Python(interpreter) => crate::pyenv::fingerprint(
                repo.root(),
                interpreter,
                &check_env(seg, env),
                config.fingerprint_timeout,
                env,
                store.dir(),
                stale_version,
            )?,
        };
        fingerprints.insert(fp.key(), out);
    }
    // A Python check may run pytest, which reads configuration above the repository (even
    // with `fingerprint = []`: these are not the environment the user turned off, they are
    // files the tests' own configuration may come from).
    let python = seg.tests.is_some()
        || crate::pyenv::command_interpreter(&seg.command).is_some()
        || seg
            .fingerprint
            .iter()
            .any(|f| matches!(f, Fingerprint::Python(_)));
    if python && let Some(above) = crate::pyenv::pytest_files_above(repo.root()) {
        fingerprints.insert(crate::pyenv::ABOVE_KEY.to_owned(), above);
    }
    if let Some(rules) = checkout_rules {
        // What decides the bytes a checkout holds is part of what the result depends on.
        fingerprints.insert(
            crate::git::CHECKOUT_RULES_KEY.to_owned(),
            rules.as_bytes().to_vec(),
        );
    }
    Ok(fingerprints)
}

/// The segments' plans: first the segments, then their input hashes (in parallel) from the
/// same fields `manifest()` renders, and the store paths that follow from them.
fn segment_plans(
    jobs: Vec<Job<'_>>,
    platform: &str,
    object_format: gix::hash::Kind,
    touched: Option<&[bool]>,
) -> Vec<SegmentPlan> {
    let placeholder_hash = InputHash::placeholder();
    let placeholder = store_path_for(&placeholder_hash, "checkdef");
    let mut segments: Vec<SegmentPlan> = jobs
        .into_iter()
        .map(|job| SegmentPlan {
            index: job.index,
            name: job.seg.name.clone(),
            description: job.seg.description.clone(),
            input_hash: placeholder_hash,
            store_path: placeholder.clone(),
            platform: platform.to_owned(),
            object_format,
            inputs: job.inputs,
            listings: job.listings,
            touched: touched.map(|t| t[job.index]),
            command: job.seg.command.clone(),
            env: job.seg.env.clone(),
            passthrough: job.seg.passthrough.clone(),
            sandbox: job.seg.sandbox,
            unmatched: job.unmatched,
            network: job.seg.network,
            runner: job.seg.runner,
            no_tests: job.seg.no_tests,
            fingerprints: job.fingerprints,
            timeout: job.seg.timeout,
        })
        .collect();
    let hashes = parallel_map(&segments, |s| manifest::spec_hash(&s.spec()));
    for (s, input_hash) in segments.iter_mut().zip(hashes) {
        s.store_path = store_path_for(&input_hash, &s.name);
        s.input_hash = input_hash;
    }
    segments
}

/// `f` over `items` on up to `available_parallelism` threads (sequentially for small inputs);
/// results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("manifest worker panicked"))
            .collect()
    });
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// For each segment whether a changed path hits it, and the changed paths no segment covers.
pub fn classify_changes(matcher: &Matcher, changed: &[BString]) -> (Vec<bool>, Vec<BString>) {
    let mut touched = vec![false; matcher.len()];
    let mut uncovered = Vec::new();
    let mut scratch = MatchScratch::default();
    let mut hits = Vec::new();
    for path in changed {
        if crate::pyenv::is_version_file(path.as_ref()) {
            // An input of every segment (see `Collect::versions`).
            touched.iter_mut().for_each(|t| *t = true);
            continue;
        }
        matcher.segments_for(path, &mut scratch, &mut hits);
        if hits.is_empty() {
            uncovered.push(path.clone());
        }
        for &s in &hits {
            touched[s as usize] = true;
        }
    }
    (touched, uncovered)
}

/// The store path of a segment's result: `cache_proto::store_path::for_input_key` with key
/// `checkdef-v1:<input hash>` and name `checkdef-<segment>` (Nix's input-addressed scheme).
pub fn store_path_for(input_hash: &InputHash, segment: &str) -> StorePath {
    cache_proto::store_path::for_input_key(
        &format!("checkdef-v1:{input_hash}"),
        &format!("checkdef-{segment}"),
    )
    .expect("segment names are validated to make valid store path names")
}

struct Collect<'a> {
    matcher: &'a Matcher,
    scratch: MatchScratch,
    hits: Vec<u32>,
    per_segment: Vec<Vec<Input>>,
    /// Every `.gitattributes` of the snapshot, input or not: they decide what a checkout holds.
    attributes: Vec<Input>,
    /// The names in every directory of the snapshot (see [`crate::listing`]).
    listings: crate::listing::Listings,
    /// Committed bytecode (`…/__pycache__/NAME.TAG.pyc`), input or not: see [`add_bytecode`].
    bytecode: Vec<Input>,
    /// The version files of the snapshot (`.python-version`, …), inputs of every segment: a
    /// shim picks the interpreter of any command by them, in the directory it runs in.
    versions: Vec<Input>,
}

impl Visit for Collect<'_> {
    fn seen(&mut self, path: &BStr, mode: FileMode, id: &gix::oid) {
        self.listings.file(path, mode, id);
        if bytecode_source(path).is_some()
            && matches!(mode, FileMode::Regular | FileMode::Executable)
        {
            self.bytecode.push(Input {
                mode,
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
    }

    fn wants(&mut self, path: &BStr) -> bool {
        self.matcher
            .segments_for(path, &mut self.scratch, &mut self.hits);
        !self.hits.is_empty()
            || crate::git::is_attributes_file(path)
            || crate::pyenv::is_version_file(path)
    }

    fn visit(&mut self, path: &BStr, mode: FileMode, id: &gix::oid) {
        if crate::pyenv::is_version_file(path) {
            self.versions.push(Input {
                mode,
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
        if crate::git::is_attributes_file(path) {
            self.attributes.push(Input {
                mode,
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
        for &s in &self.hits {
            self.per_segment[s as usize].push(Input {
                mode,
                id: id.to_owned(),
                path: path.to_owned(),
            });
        }
    }
}

/// The variables a segment's check runs with that its environment fingerprint's probe sees too:
/// the declared `env` and the passthrough variables' current values (`PATH` among them), sorted.
fn check_env(seg: &Segment, environ: &Env) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = seg
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in &seg.passthrough {
        if let Some(v) = environ.var(k) {
            env.push((k.clone(), v.to_owned()));
        }
    }
    env.sort();
    env
}

/// The stdout of fingerprint command `cmd`, run with `sh -c` in `root`; each distinct
/// (root, command) runs once per process. With `watch` (the command was declared with a
/// `watch` list), the output is also kept in `store`'s private directory under a key made of
/// everything it is declared to depend on (see [`watch_key`]) and reused by later invocations
/// while that key is unchanged: a no-op run then spawns nothing.
pub fn fingerprint(
    root: &Path,
    cmd: &str,
    watch: Option<&[String]>,
    limit: Duration,
    env: &Env,
    store: &dyn FingerprintStore,
) -> Result<Vec<u8>, PlanError> {
    type Cache = Mutex<HashMap<(PathBuf, String), Vec<u8>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (root.to_path_buf(), cmd.to_owned());
    if let Some(out) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(out.clone());
    }
    let stored = watch.and_then(|w| {
        // Kept outputs decide input hashes: only from a private directory (a local cache that
        // is not private is refused, with exit 2, when the caches are opened).
        let dir = store.private_dir()?;
        Some(dir.join(watch_key(root, cmd, w, env)))
    });
    let out = match stored {
        None => run_fingerprint(root, cmd, limit)?,
        Some(p) => match std::fs::read(&p) {
            Ok(out) => {
                // Its last use, for `cache verify`; refreshed daily so uses do not write.
                if std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| crate::fsutil::older_than(t, Duration::from_secs(24 * 3600)))
                {
                    crate::fsutil::touch(&p);
                }
                out
            }
            Err(_) => {
                let out = run_fingerprint(root, cmd, limit)?;
                // Only saves time: a failure to keep it is no reason to fail the plan.
                let _ = crate::fsutil::write_atomic(&p, &out);
                out
            }
        },
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, out.clone());
    Ok(out)
}

/// A fingerprint's output is hashed into every manifest that names it; more than this is a
/// mistake (a command that dumps a tree), not a version.
pub const MAX_FINGERPRINT_OUTPUT: usize = 16 << 20;

/// Run one fingerprint command: bounded by `limit`, its output ending when the command exits
/// (see [`crate::process::run_bounded`]).
fn run_fingerprint(root: &Path, cmd: &str, limit: Duration) -> Result<Vec<u8>, PlanError> {
    let output = crate::process::run_bounded(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(root),
        limit,
        MAX_FINGERPRINT_OUTPUT,
    )
    .map_err(|source| PlanError::FingerprintSpawn {
        command: cmd.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(PlanError::FingerprintFailed {
            command: cmd.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output.stdout)
}

/// The key a watched fingerprint's output is kept under: sha256 over the repository root, the
/// command, `PATH`, the executable the command's first word resolves to (its real path and
/// `stat` identity), and for each `watch` entry either the value of `$VAR` or the `stat`
/// identity (device, inode, size, mtime, ctime) of the path — relative to the repository root,
/// or to `$HOME` with `~/` — or that it is absent. Any change to any of them, an upgraded
/// interpreter included, makes a new key and so a new run.
pub fn watch_key(root: &Path, cmd: &str, watch: &[String], env: &Env) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut k = String::from("checkdef-fingerprint 1\n");
    let _ = writeln!(k, "root {}", root.display());
    let _ = writeln!(k, "command {cmd}");
    let path_var = env.var_os("PATH").map(std::ffi::OsStr::to_os_string);
    let _ = writeln!(k, "PATH {:?}", path_var);
    if let Some(exe) = first_word_executable(root, cmd, path_var.as_deref()) {
        let _ = writeln!(k, "exe {} {}", exe.display(), identity(&exe));
    }
    for entry in watch {
        match entry.strip_prefix('$') {
            Some(var) => {
                let _ = writeln!(k, "env {var} {:?}", env.var_os(var));
            }
            None => {
                let path = match entry.strip_prefix("~/") {
                    Some(rest) => env
                        .var_os("HOME")
                        .map(|h| PathBuf::from(h).join(rest))
                        .unwrap_or_else(|| PathBuf::from(entry)),
                    None => root.join(entry),
                };
                let _ = writeln!(k, "file {} {}", path.display(), identity(&path));
            }
        }
    }
    hex::encode(Sha256::digest(k.as_bytes()))
}

/// `dev ino size mtime ctime` of `path` (following symlinks), or `absent`.
fn identity(path: &Path) -> String {
    crate::fsutil::FileId::of(path).map_or_else(|| "absent".to_owned(), |id| id.to_string())
}

/// The real path of the program the command starts with, as `sh` would find it: relative to
/// `root` when it contains a `/`, else the first executable file of that name on `PATH`.
/// `None` when the command starts otherwise (an assignment, a shell keyword or builtin, a
/// quote) or nothing is found.
fn first_word_executable(
    root: &Path,
    cmd: &str,
    path_var: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let word = cmd.split_whitespace().next()?;
    if word.contains(['=', '\'', '"', '$', '`', '\\']) {
        return None;
    }
    let candidate = if word.contains('/') {
        Some(root.join(word))
    } else {
        std::env::split_paths(path_var?)
            .map(|d| d.join(word))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }?;
    std::fs::canonicalize(candidate).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_bytecode_names_its_source() {
        let src = |p: &str| bytecode_source(p.into()).map(|s| s.to_string());
        assert_eq!(
            src("src/pkg/__pycache__/__init__.cpython-311.pyc").as_deref(),
            Some("src/pkg/__init__.py")
        );
        assert_eq!(
            src("__pycache__/m.cpython-311.opt-1.pyc").as_deref(),
            Some("m.py")
        );
        assert_eq!(src("pkg/m.pyc"), None);
        assert_eq!(src("pkg/__pycache__/m.py"), None);
        assert_eq!(src("pkg/__pycache__/.cpython-311.pyc"), None);
        assert_eq!(src("m.cpython-311.pyc"), None);
    }

    #[test]
    fn a_changed_version_file_touches_every_segment() {
        let text = "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"a/**\"]\ncommand = \"true\"\n[[segment]]\nname = \"b\"\ninclude = [\"b/**\"]\ncommand = \"true\"\n";
        let c = crate::config::Config::parse(text, std::path::Path::new("checkdef.toml")).unwrap();
        let changed = |p: &[&str]| {
            let paths: Vec<BString> = p.iter().map(|s| BString::from(*s)).collect();
            classify_changes(c.matcher(), &paths)
        };
        assert_eq!(changed(&["a/x"]).0, [true, false]);
        assert_eq!(changed(&["sub/.python-version"]).0, [true, true]);
        assert_eq!(changed(&[".tool-versions"]), (vec![true, true], vec![]));
        assert!(crate::pyenv::is_version_file(b".config/mise.toml"));
        assert!(crate::pyenv::is_version_file(b"x/.config/mise.toml"));
        assert!(!crate::pyenv::is_version_file(b"x/notmise.toml"));
        assert!(!crate::pyenv::is_version_file(b"pyproject.toml"));
        assert!(!crate::pyenv::is_version_file(b"my.python-version"));
    }

    #[test]
    fn store_path_matches_the_nix_scheme() {
        // Vector from docs (scheme A): key `mytool-v1:inputhash=0123abcd`, name `mytool-result`.
        let p =
            cache_proto::store_path::for_input_key("mytool-v1:inputhash=0123abcd", "mytool-result")
                .unwrap()
                .to_string();
        assert_eq!(
            p,
            "/nix/store/8dbh9dxr2mncgjrnqzj4nk6hlf49p3wp-mytool-result"
        );
        let zeros: InputHash = "0".repeat(64).parse().unwrap();
        let path = store_path_for(&zeros, "foo-tests");
        let ours = path.to_string();
        assert!(
            ours.starts_with("/nix/store/") && ours.ends_with("-checkdef-foo-tests"),
            "{ours}"
        );
        assert_eq!(path.hash_part().len(), 32);
        let ones: InputHash = "1".repeat(64).parse().unwrap();
        assert_ne!(path, store_path_for(&ones, "foo-tests"));
        // The key is the hex spelling, as before the hash had a type.
        assert_eq!(
            path,
            cache_proto::store_path::for_input_key(
                &format!("checkdef-v1:{}", "0".repeat(64)),
                "checkdef-foo-tests"
            )
            .unwrap()
        );
    }

    #[test]
    fn the_first_word_resolves_like_sh_finds_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var_os("PATH");
        let sh = first_word_executable(dir.path(), "sh -c 'echo'", path.as_deref()).unwrap();
        assert!(sh.is_absolute() && sh.is_file(), "{sh:?}");
        for not_a_program in ["FOO=1 sh", "'sh' -c x", "$SHELL -c x", "", "   "] {
            assert_eq!(
                first_word_executable(dir.path(), not_a_program, path.as_deref()),
                None,
                "{not_a_program:?}"
            );
        }
        let tool = dir.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            first_word_executable(dir.path(), "./tool --version", None),
            Some(std::fs::canonicalize(&tool).unwrap())
        );
        // The key follows the program: replacing it (an upgrade) changes the key.
        let k1 = watch_key(dir.path(), "./tool --version", &[], &Env::capture());
        assert_eq!(
            watch_key(dir.path(), "./tool --version", &[], &Env::capture()),
            k1
        );
        std::fs::remove_file(&tool).unwrap();
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(
            watch_key(dir.path(), "./tool --version", &[], &Env::capture()),
            k1
        );
    }

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn fingerprint_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = "echo run >> count; echo v1";
        assert_eq!(
            fingerprint(
                dir.path(),
                cmd,
                None,
                LIMIT,
                &Env::default(),
                &NoFingerprintStore
            )
            .unwrap(),
            b"v1\n"
        );
        assert_eq!(
            fingerprint(
                dir.path(),
                cmd,
                None,
                LIMIT,
                &Env::default(),
                &NoFingerprintStore
            )
            .unwrap(),
            b"v1\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("count")).unwrap(),
            "run\n"
        );
        let e = fingerprint(
            dir.path(),
            "echo oops >&2; exit 3",
            None,
            LIMIT,
            &Env::default(),
            &NoFingerprintStore,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("failed") && e.contains("oops"), "{e}");
    }
}
