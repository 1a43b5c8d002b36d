//! `checkdef init`: inspect a Python repository and draft a `checkdef.toml` whose segments are
//! its pytest test modules, each with the repository files its tests import.
//!
//! What is inspected (all from the file list of the work tree, so ignored files never count):
//!
//! * pytest's configuration at the root, in pytest's own order: `pytest.ini` (or
//!   `.pytest.ini`), `pyproject.toml` with `[tool.pytest.ini_options]` or `[tool.pytest]`,
//!   `tox.ini` with `[pytest]`, `setup.cfg` with `[tool:pytest]`; of it, `testpaths`,
//!   `python_files` and `pythonpath` are used;
//! * test modules: files matching `python_files` (default `test_*.py` and `*_test.py`) below
//!   `testpaths` (default: everywhere), skipping hidden directories, virtual environments,
//!   `node_modules`, `build` and `dist`;
//! * the layout: **src** when `src/` holds a package or module (then `PYTHONPATH = "src"` is set
//!   unless pytest's `pythonpath` is), else **flat** (packages at the root, which
//!   `python3 -m pytest` puts on `sys.path`);
//! * `conftest.py` files and lockfiles (`uv.lock`, `poetry.lock`, `pdm.lock`, `Pipfile.lock`,
//!   `requirements*.txt`, `requirements/*.txt`).
//!
//! Segments: one per test module. A segment's inputs are its test (the `tests` shorthand,
//! which also adds every file pytest reads for it: its configuration files and the
//! `conftest.py`, `__init__.py` and `setup.py` files on the test's path), plus everything its tests and those conftest files import from the repository,
//! transitively ([`deps`]), plus data files the tests name.
pub mod deps;
pub mod pyimports;
pub mod pytest;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::Path;

pub use deps::{Deps, RepoFiles};
pub use pytest::PytestConfig;

/// Lockfile names recognised at the repository root.
pub const LOCKFILES: [&str; 4] = ["uv.lock", "poetry.lock", "pdm.lock", "Pipfile.lock"];

/// Directories never searched for tests (besides hidden ones), as pytest's `norecursedirs`.
const SKIP_DIRS: [&str; 8] = [
    "node_modules",
    "venv",
    "env",
    "build",
    "dist",
    "site-packages",
    "__pycache__",
    "_darcs",
];

/// The repository's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Packages under `src/`.
    Src,
    /// Packages at the root.
    Flat,
}

/// A drafted segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDraft {
    pub name: String,
    /// The test modules (or one directory) given to the `tests` shorthand.
    pub tests: Vec<String>,
    /// Extra inputs: imported files, package globs and data files, sorted.
    pub include: Vec<String>,
    /// Top-level repository modules the tests import, for a comment.
    pub imports: Vec<String>,
    /// The line where the module can skip itself as a whole at import (see
    /// [`pyimports::Scan::module_skip`]): the draft suggests `no_tests = "pass"` in a comment
    /// (never on its own: a skip can also come from an input the sandbox hid).
    pub skips_itself: Option<usize>,
}

/// What [`inspect`] found, and the draft.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub layout: Layout,
    /// Top-level packages and modules of the import root (`src/` or the root).
    pub packages: Vec<String>,
    pub pytest: PytestConfig,
    /// pytest configuration files present at the root.
    pub config_files: Vec<String>,
    pub lockfiles: Vec<String>,
    pub conftests: Vec<String>,
    pub test_modules: Vec<String>,
    /// `PYTHONPATH = "src"` is set for every segment.
    pub set_pythonpath: bool,
    pub segments: Vec<SegmentDraft>,
    /// Things a person should check, one line each.
    pub review: Vec<String>,
}

/// Errors of [`inspect`].
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("no test modules found (looked for {patterns} {where_})")]
    NoTests { patterns: String, where_: String },
}

/// Inspect the repository at `root` whose work-tree files are `files` (repository-relative,
/// `/`-separated) and draft its segments. Reads the Python files it needs from disk.
pub fn inspect(root: &Path, files: RepoFiles) -> Result<Inspection, InitError> {
    let read = |p: &str| std::fs::read(root.join(p)).ok();
    inspect_in(&files, &read, deps::environment_modules(root))
}

/// [`inspect`] with the file reader given (for tests), not knowing the Python environment.
pub fn inspect_with(
    files: &RepoFiles,
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Inspection, InitError> {
    inspect_in(files, read, None)
}

/// [`inspect`] with the file reader and the environment's top-level module names given.
pub fn inspect_in(
    files: &RepoFiles,
    read: &dyn Fn(&str) -> Option<Vec<u8>>,
    environment: Option<HashSet<String>>,
) -> Result<Inspection, InitError> {
    let pytest = pytest::load(files, read);
    let mut review = Vec::new();
    if pytest.file.is_none() {
        review.push(
            "no pytest configuration file at the root: pytest then picks its rootdir from the test paths it is given; a pytest.ini (or [tool.pytest.ini_options]) makes runs predictable".to_owned(),
        );
    }
    let config_files: Vec<String> = crate::config::PYTEST_CONFIG_FILES
        .iter()
        .filter(|f| files.is_file(f))
        .map(|f| f.to_string())
        .collect();

    let src_layout = files
        .children("src")
        .any(|c| c.ends_with(".py") || files.is_file(&format!("{c}/__init__.py")));
    let layout = if src_layout {
        Layout::Src
    } else {
        Layout::Flat
    };
    let import_root = if src_layout { "src" } else { "" };
    let set_pythonpath = src_layout && pytest.pythonpath.is_none();

    let mut base_roots: Vec<String> = Vec::new();
    if let Some(pp) = &pytest.pythonpath {
        base_roots.extend(pp.iter().map(|p| normalize_dir(p)));
    }
    if set_pythonpath {
        base_roots.push("src".to_owned());
    }
    base_roots.push(String::new());
    dedup_keep_order(&mut base_roots);

    let packages: Vec<String> = files
        .children(import_root)
        .filter_map(|c| {
            let name = c.rsplit('/').next().unwrap_or(&c);
            if let Some(stem) = name.strip_suffix(".py") {
                (stem != "conftest" && stem != "setup" && !is_test_name(name, &pytest))
                    .then(|| stem.to_owned())
            } else if files.is_file(&format!("{c}/__init__.py")) {
                (name != "tests" && name != "test").then(|| name.to_owned())
            } else {
                None
            }
        })
        .collect();

    let lockfiles = lockfiles_of(files);

    let skipped = skipped_dirs(files);
    let in_scope = |p: &str| {
        !p.split('/')
            .any(|c| c.starts_with('.') || SKIP_DIRS.contains(&c))
            && !skipped.iter().any(|d| p.starts_with(&format!("{d}/")))
    };
    let conftests: Vec<String> = files
        .iter()
        .filter(|p| (*p == "conftest.py" || p.ends_with("/conftest.py")) && in_scope(p))
        .map(str::to_owned)
        .collect();
    let test_modules: Vec<String> = files
        .iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            is_test_name(name, &pytest) && in_scope(p) && pytest.in_testpaths(p)
        })
        .map(str::to_owned)
        .collect();
    if test_modules.is_empty() {
        return Err(InitError::NoTests {
            patterns: pytest.python_files.join(" "),
            where_: if pytest.testpaths.is_empty() {
                "anywhere in the work tree".to_owned()
            } else {
                format!("below testpaths = {}", pytest.testpaths.join(" "))
            },
        });
    }

    let mut resolver = deps::Resolver::new(files, read, base_roots)
        .with_environment(environment)
        .with_test_modules(test_modules.iter().cloned());
    let mut dynamic: BTreeSet<String> = BTreeSet::new();
    let mut drafts = Vec::new();
    let mut used_names = HashSet::new();
    let mut data_seen: Vec<(BTreeSet<String>, Vec<String>)> = Vec::new();
    // One segment per test module: a change reruns only the modules that depend on it. (An
    // earlier rule put a directory of many or small modules into one segment to save pytest
    // start-ups; docs/benchmarks.md, "One segment per test module", measures why it went.)
    let all_tests: BTreeSet<String> = test_modules.iter().cloned().collect();
    for module in &test_modules {
        let starts: Vec<String> = conftests_on_path(module, files)
            .into_iter()
            .chain(std::iter::once(module.clone()))
            .collect();
        let deps = resolver.closure(&starts);
        let tests = vec![module.clone()];
        let name = unique_name(&segment_name(module, false), &mut used_names);
        // What the `tests` shorthand adds anyway.
        let mut implied: HashSet<String> =
            crate::config::pytest_inputs(tests.iter().map(String::as_str))
                .into_iter()
                .collect();
        implied.extend(config_files.iter().cloned());
        implied.extend(lockfiles.iter().cloned());
        let include = segment_include(&deps, &tests, &implied, files, &all_tests);
        data_seen.push((
            deps.nearby_data_dirs.clone(),
            deps.data_dirs
                .iter()
                .chain(&deps.data_files)
                .cloned()
                .collect::<Vec<_>>(),
        ));
        for note in &deps.notes {
            review.push(note.clone());
        }
        dynamic.extend(deps.dynamic.iter().cloned());
        if !deps.data_dirs.is_empty() || !deps.data_files.is_empty() {
            let listed: Vec<String> = deps
                .data_dirs
                .iter()
                .map(|d| format!("{d}/**"))
                .chain(deps.data_files.iter().cloned())
                .collect();
            review.push(format!(
                "{name}: added data its tests may read: {} (remove what they do not need)",
                listed.join(", ")
            ));
        }
        let skips_itself = read(module)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|src| pyimports::scan(&src).module_skip);
        drafts.push(SegmentDraft {
            skips_itself,
            name,
            tests,
            include: include.into_iter().collect(),
            imports: deps.top_level.iter().cloned().collect(),
        });
    }
    review.extend(unclaimed_data_notes(&data_seen));
    review.extend(dynamic_imports_note(&dynamic));
    review.sort();
    review.dedup();
    Ok(Inspection {
        layout,
        packages,
        pytest,
        config_files,
        lockfiles,
        conftests,
        test_modules,
        set_pythonpath,
        segments: drafts,
        review,
    })
}

/// The lock and requirements files of the repository (`LOCKFILES` at the root,
/// `requirements*.txt`, `requirements/*.txt`), sorted.
fn lockfiles_of(files: &RepoFiles) -> Vec<String> {
    let mut lockfiles: Vec<String> = LOCKFILES
        .iter()
        .filter(|f| files.is_file(f))
        .map(|f| f.to_string())
        .collect();
    for f in files.children("") {
        if f.starts_with("requirements") && f.ends_with(".txt") && files.is_file(&f) {
            lockfiles.push(f);
        }
    }
    for f in files.children("requirements") {
        if f.ends_with(".txt") && files.is_file(&f) {
            lockfiles.push(f);
        }
    }
    lockfiles.sort();
    lockfiles.dedup();
    lockfiles
}

/// The `include` globs of the segment of `tests`: what the tests import and read (`deps`),
/// less what the `tests` shorthand and the files every segment gets (`implied`) cover.
fn segment_include(
    deps: &deps::Deps,
    tests: &[String],
    implied: &HashSet<String>,
    files: &RepoFiles,
    all_tests: &BTreeSet<String>,
) -> BTreeSet<String> {
    let covered_by_tests = |p: &str| {
        tests
            .iter()
            .any(|t| p == t || p.starts_with(&format!("{t}/")))
    };
    let mut include: BTreeSet<String> = BTreeSet::new();
    // What the package globs cover: whole directories, and files listed one by one.
    let mut whole: Vec<String> = Vec::new();
    let mut listed: HashSet<String> = HashSet::new();
    for g in &deps.globs {
        if !covered_by_tests(g) {
            package_globs(g, files, all_tests, &mut whole, &mut listed);
        }
    }
    for d in &whole {
        include.insert(format!("{}/**", globset::escape(d)));
    }
    for f in &listed {
        include.insert(globset::escape(f));
    }
    for f in &deps.files {
        let under_glob = listed.contains(f)
            || whole
                .iter()
                .any(|g| g.is_empty() || f.starts_with(&format!("{g}/")));
        if !under_glob && !covered_by_tests(f) && !implied.contains(&globset::escape(f)) {
            include.insert(globset::escape(f));
        }
    }
    for d in &deps.data_dirs {
        if !covered_by_tests(d) {
            include.insert(format!("{}/**", globset::escape(d)));
        }
    }
    include
}

/// The inputs of package directory `dir` taken as a whole (a test imports the package): all
/// of it (`whole`), unless test modules lie below it — a flat layout's `pkg/tests/` — which are
/// other segments' tests: then each subdirectory without test modules whole, and the other
/// files beside test modules one by one (`listed`), so an edit of one test module does not
/// rerun every segment that imports the package. A test's own module, and what it imports,
/// are its inputs anyway.
fn package_globs(
    dir: &str,
    files: &RepoFiles,
    all_tests: &BTreeSet<String>,
    whole: &mut Vec<String>,
    listed: &mut HashSet<String>,
) {
    let prefix = format!("{dir}/");
    if dir.is_empty() || !all_tests.iter().any(|t| t.starts_with(&prefix)) {
        whole.push(dir.to_owned());
        return;
    }
    for child in files.children(dir) {
        if files.is_dir(&child) {
            package_globs(&child, files, all_tests, whole, listed);
        } else if !all_tests.contains(&child) {
            listed.insert(child);
        }
    }
}

/// A note for each data directory near tests that no segment took in (`data_seen`: per
/// segment, the data directories near its tests and the data it took in).
fn unclaimed_data_notes(data_seen: &[(BTreeSet<String>, Vec<String>)]) -> Vec<String> {
    let mut notes = Vec::new();
    let mut nearby: BTreeSet<String> = BTreeSet::new();
    let mut taken: Vec<String> = Vec::new();
    for (n, t) in data_seen {
        nearby.extend(n.iter().cloned());
        taken.extend(t.iter().cloned());
    }
    for d in nearby {
        let prefix = format!("{d}/");
        if !taken.iter().any(|t| *t == d || t.starts_with(&prefix)) {
            notes.push(format!(
                "{d}/ looks like test data but no test names it, so it is no segment's input: add \"{d}/**\" to the include of the segments whose tests read it"
            ));
        }
    }
    notes
}

/// One note for every import by computed name: checkdef cannot follow them, and most load
/// installed plugins rather than repository files, so one line to check is enough.
fn dynamic_imports_note(dynamic: &BTreeSet<String>) -> Option<String> {
    if dynamic.is_empty() {
        return None;
    }
    const SHOWN: usize = 4;
    let mut places: Vec<&str> = dynamic.iter().take(SHOWN).map(String::as_str).collect();
    let more = dynamic.len().saturating_sub(SHOWN);
    let more_text = format!("and {more} more");
    if more > 0 {
        places.push(&more_text);
    }
    Some(format!(
        "{} import{} by computed name (import_module/__import__) that checkdef cannot follow: {}; only if one loads a file of this repository that no segment includes does it need adding to that segment's include",
        dynamic.len(),
        if dynamic.len() == 1 { "" } else { "s" },
        places.join(", ")
    ))
}

/// Directories holding a virtual environment (`pyvenv.cfg`) or an installed tree.
fn skipped_dirs(files: &RepoFiles) -> Vec<String> {
    files
        .iter()
        .filter(|p| *p == "pyvenv.cfg" || p.ends_with("/pyvenv.cfg"))
        .map(|p| parent(p).to_owned())
        .collect()
}

fn is_test_name(name: &str, pytest: &PytestConfig) -> bool {
    name.ends_with(".py") && name != "conftest.py" && pytest.matches_python_files(name)
}

/// `conftest.py` in every directory on `test`'s path (the root included) that exists.
pub fn conftests_on_path(test: &str, files: &RepoFiles) -> Vec<String> {
    let mut out = Vec::new();
    let mut dir = String::new();
    if files.is_file("conftest.py") {
        out.push("conftest.py".to_owned());
    }
    let comps: Vec<&str> = test.split('/').collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        if !dir.is_empty() {
            dir.push('/');
        }
        dir.push_str(c);
        let p = format!("{dir}/conftest.py");
        if files.is_file(&p) {
            out.push(p);
        }
    }
    out
}

/// The directory part of a repository path (`""` at the root).
pub fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn normalize_dir(p: &str) -> String {
    let p = p.trim().trim_start_matches("./").trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_owned()
    }
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// A segment name from a test module or directory path: the path's components without
/// `tests`/`test`/`src`, the module's `test_` prefix or `_test` suffix dropped, joined with
/// `-`, then `-tests` (`tests/unit/test_foo.py` → `unit-foo-tests`; `tests/test_foo.py` →
/// `foo-tests`; directory `tests/api` → `api-tests`; directory `tests` → `tests`).
pub fn segment_name(path: &str, is_dir: bool) -> String {
    let mut comps: Vec<String> = path.split('/').map(str::to_owned).collect();
    if !is_dir && let Some(last) = comps.last_mut() {
        let stem = last.strip_suffix(".py").unwrap_or(last);
        let core = stem
            .strip_prefix("test_")
            .or_else(|| stem.strip_suffix("_test"))
            .filter(|s| !s.is_empty())
            .unwrap_or(stem);
        *last = core.to_owned();
    }
    // Directory names that say nothing go; a module's own name stays (`test_testing.py` is
    // `testing-tests`, not `tests`).
    let last = comps.len().saturating_sub(1);
    let kept: Vec<String> = comps
        .into_iter()
        .enumerate()
        .filter(|(i, c)| {
            (!is_dir && *i == last && !c.is_empty())
                || !matches!(c.as_str(), "tests" | "test" | "src" | "testing" | "")
        })
        .map(|(_, c)| c)
        .collect();
    let base = kept.join("-");
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+?=-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let mut name = name.trim_matches(|c| c == '-' || c == '.').to_owned();
    // Keep names short (the limit is 202 characters): keep the end, which is the most specific.
    if name.len() > 100 {
        let cut = name.len() - 100;
        name = name[cut..].trim_start_matches(['-', '.']).to_owned();
    }
    if name.is_empty() {
        "tests".to_owned()
    } else {
        format!("{name}-tests")
    }
}

fn unique_name(base: &str, used: &mut HashSet<String>) -> String {
    let mut name = base.to_owned();
    let mut n = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list(out: &mut String, key: &str, items: &[String]) {
    let one_line = format!(
        "{key} = [{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if one_line.len() <= 96 {
        out.push_str(&one_line);
        out.push('\n');
    } else {
        let _ = writeln!(out, "{key} = [");
        for s in items {
            let _ = writeln!(out, "  {},", toml_str(s));
        }
        out.push_str("]\n");
    }
}

/// The commented `checkdef.toml` for an inspection.
pub fn render(ins: &Inspection) -> String {
    let mut out = String::new();
    out.push_str(
        "# checkdef.toml, drafted by `checkdef init`. Review it (see the notes `checkdef init`\n\
         # printed), run `checkdef run`, then commit it. Reference: docs/configuration.md.\n\
         #\n\
         # One segment per pytest module. A segment's inputs are its tests, the files pytest\n\
         # reads for them (configuration, conftest.py and __init__.py files on their paths,\n\
         # added by `tests = [...]`), [defaults] include, and the repository\n\
         # files its tests import, followed transitively (the `include` lists below). A test\n\
         # that imports a package as a whole gets the package's directory (`pkg/**`),\n\
         # without the test modules in it (other segments' tests).\n\
         # Each segment runs in a sandbox holding only those inputs, so a missing input fails\n\
         # loudly instead of being silently ignored.\n\
         version = 1\n\n[defaults]\n",
    );
    let mut defaults_include: Vec<String> = ins.config_files.clone();
    defaults_include.extend(ins.lockfiles.iter().cloned());
    if !defaults_include.is_empty() {
        out.push_str(
            "# Inputs of every segment: pytest's configuration and the lockfiles (a change to one\n\
             # reruns every segment).\n",
        );
        let escaped: Vec<String> = defaults_include
            .iter()
            .map(|f| globset::escape(f))
            .collect();
        toml_list(&mut out, "include", &escaped);
    }
    out.push_str("exclude = [\"**/__pycache__/**\", \"**/*.pyc\"]\n");
    if ins.set_pythonpath {
        out.push_str(
            "# src layout and no `pythonpath` in pytest's configuration: let `import pkg` find\n\
             # src/pkg inside the sandbox (hashed, so changing it reruns everything).\n\
             env = { PYTHONPATH = \"src\" }\n",
        );
    }
    out.push_str(
        "# The Python environment is part of every result: the interpreter (real path and\n\
         # version) and every installed distribution (name and version), so another venv,\n\
         # interpreter or package version reruns everything. Re-read only when a site-packages\n\
         # directory changes. Add commands for more (e.g. \"sha256sum /etc/ssl/cert.pem\"), or\n\
         # write `fingerprint = []` to hash no environment at all (docs/configuration.md).\n\
         fingerprint = [{ python = \"python3\" }]\n",
    );
    for s in &ins.segments {
        out.push_str("\n[[segment]]\n");
        let _ = writeln!(out, "name = {}", toml_str(&s.name));
        toml_list(&mut out, "tests", &s.tests);
        if !s.imports.is_empty() {
            let _ = writeln!(
                out,
                "# imports from this repository: {}",
                s.imports.join(", ")
            );
        }
        if !s.include.is_empty() {
            toml_list(&mut out, "include", &s.include);
        }
        if let (Some(line), Some(module)) = (s.skips_itself, s.tests.first()) {
            let _ = writeln!(
                out,
                "# {module}:{line} can skip the whole module (a missing optional dependency):\n\
                 # pytest then collects no tests from it, which fails this segment (a whole-suite\n\
                 # pytest reports it skipped). If that is fine here, uncomment the next line; but a\n\
                 # module that skips because the sandbox hid a file it imports (one no include\n\
                 # names) then passes too, so check its inputs first.\n\
                 # no_tests = \"pass\""
            );
        }
    }
    out
}

/// The human summary printed on stderr by `checkdef init`.
pub fn summary(ins: &Inspection) -> String {
    let mut out = String::new();
    let layout = match ins.layout {
        Layout::Src => "src (packages under src/)",
        Layout::Flat => "flat (packages at the root)",
    };
    let _ = writeln!(out, "  layout       {layout}");
    if !ins.packages.is_empty() {
        let _ = writeln!(out, "  packages     {}", ins.packages.join(", "));
    }
    match &ins.pytest.file {
        Some(f) => {
            let mut extra = Vec::new();
            if let Some(pp) = &ins.pytest.pythonpath {
                extra.push(format!("pythonpath = {}", pp.join(" ")));
            }
            if !ins.pytest.testpaths.is_empty() {
                extra.push(format!("testpaths = {}", ins.pytest.testpaths.join(" ")));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join("; "))
            };
            let _ = writeln!(out, "  pytest       {f}{extra}");
        }
        None => {
            let _ = writeln!(out, "  pytest       no configuration file");
        }
    }
    let dirs: BTreeSet<&str> = ins.test_modules.iter().map(|t| parent(t)).collect();
    let _ = writeln!(
        out,
        "  tests        {} module{} in {} director{}",
        ins.test_modules.len(),
        plural(ins.test_modules.len()),
        dirs.len(),
        if dirs.len() == 1 { "y" } else { "ies" }
    );
    if !ins.conftests.is_empty() {
        let _ = writeln!(out, "  conftest.py  {}", ins.conftests.join(", "));
    }
    if !ins.lockfiles.is_empty() {
        let _ = writeln!(out, "  lockfiles    {}", ins.lockfiles.join(", "));
    }
    if ins.set_pythonpath {
        let _ = writeln!(out, "  env          PYTHONPATH=src (src layout)");
    }
    let _ = writeln!(
        out,
        "  segments     {}",
        ins.segments
            .iter()
            .map(|s| format!(
                "{} ({} test{}, {} extra input pattern{})",
                s.name,
                s.tests.len(),
                plural(s.tests.len()),
                s.include.len(),
                plural(s.include.len())
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn files(list: &[(&str, &str)]) -> (RepoFiles, BTreeMap<String, Vec<u8>>) {
        let map: BTreeMap<String, Vec<u8>> = list
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        (RepoFiles::new(map.keys().cloned()), map)
    }

    fn draft(list: &[(&str, &str)]) -> Inspection {
        let (f, map) = files(list);
        inspect_with(&f, &|p| map.get(p).cloned()).unwrap()
    }

    fn seg<'a>(ins: &'a Inspection, name: &str) -> &'a SegmentDraft {
        ins.segments
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:#?}", ins.segments))
    }

    #[test]
    fn names() {
        assert_eq!(segment_name("tests/test_foo.py", false), "foo-tests");
        assert_eq!(
            segment_name("tests/unit/test_foo.py", false),
            "unit-foo-tests"
        );
        assert_eq!(segment_name("pkg/io_test.py", false), "pkg-io-tests");
        assert_eq!(segment_name("tests/api", true), "api-tests");
        assert_eq!(segment_name("tests", true), "tests");
        // click's tests/test_testing.py: the module's name is kept.
        assert_eq!(
            segment_name("tests/test_testing.py", false),
            "testing-tests"
        );
        assert_eq!(segment_name("tests/test_tests.py", false), "tests-tests");
        let long = format!("tests/{}/test_x.py", "d".repeat(300));
        assert!(segment_name(&long, false).len() <= 106);
        assert_eq!(
            segment_name("tests/my tests/test_a b.py", false),
            "my-tests-a-b-tests"
        );
    }

    #[test]
    fn src_layout_seed() {
        let ins = draft(&[
            ("src/foo/__init__.py", "X = 1\n"),
            ("src/foo/impl.py", "from .util import y\n"),
            ("src/foo/util.py", "y = 2\n"),
            ("src/bar/__init__.py", "from foo.impl import *\n"),
            ("src/bar/extra.py", ""),
            ("tests/test_foo.py", "import foo\n"),
            ("tests/test_bar.py", "from bar import extra\n"),
            ("pytest.ini", "[pytest]\n"),
            ("uv.lock", ""),
        ]);
        assert_eq!(ins.layout, Layout::Src);
        assert!(ins.set_pythonpath);
        assert_eq!(ins.packages, ["bar", "foo"]);
        assert_eq!(seg(&ins, "foo-tests").include, ["src/foo/**"]);
        // bar imports foo.impl (a star import inside a module: not a glob), which imports util.
        assert_eq!(
            seg(&ins, "bar-tests").include,
            [
                "src/bar/__init__.py",
                "src/bar/extra.py",
                "src/foo/__init__.py",
                "src/foo/impl.py",
                "src/foo/util.py"
            ]
        );
        let text = render(&ins);
        crate::config::Config::parse(&text, Path::new("checkdef.toml")).unwrap();
        assert!(text.contains("env = { PYTHONPATH = \"src\" }"), "{text}");
        assert!(
            text.contains("include = [\"pytest.ini\", \"uv.lock\"]"),
            "{text}"
        );
    }

    #[test]
    fn pythonpath_from_pytest_config_wins() {
        let ins = draft(&[
            ("src/foo/__init__.py", ""),
            ("tests/test_foo.py", "from foo import x\n"),
            (
                "pyproject.toml",
                "[project]\nname='x'\n[tool.pytest.ini_options]\npythonpath = [\"src\"]\n",
            ),
        ]);
        assert!(!ins.set_pythonpath);
        assert_eq!(ins.pytest.file.as_deref(), Some("pyproject.toml"));
        assert_eq!(seg(&ins, "foo-tests").include, ["src/foo/**"]);
    }

    #[test]
    fn flat_layout_with_helpers_and_conftest_imports() {
        let ins = draft(&[
            ("app/__init__.py", ""),
            ("app/core.py", "import app.models\n"),
            ("app/models.py", ""),
            ("lib.py", ""),
            ("conftest.py", "from app.core import thing\n"),
            ("tests/helpers.py", "import lib\n"),
            (
                "tests/test_core.py",
                "import helpers\nfrom app.core import run\n",
            ),
        ]);
        assert_eq!(ins.layout, Layout::Flat);
        assert!(!ins.set_pythonpath);
        assert_eq!(
            seg(&ins, "core-tests").include,
            [
                "app/__init__.py",
                "app/core.py",
                "app/models.py",
                "lib.py",
                "tests/helpers.py"
            ]
        );
    }

    #[test]
    fn every_test_module_is_its_own_segment_however_many_share_a_directory() {
        let mut list = vec![("pkg/__init__.py", ""), ("pkg/other.py", "")];
        let names: Vec<String> = (0..30).map(|i| format!("tests/api/test_{i}.py")).collect();
        for n in &names {
            list.push((n.as_str(), "import pkg\n"));
        }
        list.push(("tests/test_one.py", "from pkg import other\n"));
        list.push(("tests/__init__.py", ""));
        list.push(("tests/api/__init__.py", ""));
        list.push(("pytest.toml", "[pytest]\n"));
        let ins = draft(&list);
        assert_eq!(ins.segments.len(), 31);
        let api = seg(&ins, "api-7-tests");
        assert_eq!(api.tests, ["tests/api/test_7.py"]);
        // The test package's __init__.py files and pytest.toml come with the shorthand.
        assert_eq!(api.include, ["pkg/**"]);
        assert_eq!(ins.config_files, ["pytest.toml"]);
        assert_eq!(
            seg(&ins, "one-tests").include,
            ["pkg/__init__.py", "pkg/other.py"]
        );
        let text = render(&ins);
        let cfg = crate::config::Config::parse(&text, Path::new("checkdef.toml")).unwrap();
        let api = cfg
            .segments
            .iter()
            .find(|s| s.name == "api-7-tests")
            .unwrap();
        for want in ["tests/__init__.py", "tests/api/__init__.py", "pytest.toml"] {
            assert!(
                api.include.iter().any(|g| g == want),
                "{want}: {:?}",
                api.include
            );
        }
    }

    #[test]
    fn data_named_by_a_test_is_its_input_and_unnamed_data_is_a_note() {
        let ins = draft(&[
            ("tests/test_a.py", "P = 'data'\n"),
            ("tests/test_b.py", "def test(): pass\n"),
            ("tests/data/x.json", "{}"),
            ("tests/fixtures/y.csv", ""),
        ]);
        assert_eq!(seg(&ins, "a-tests").include, ["tests/data/**"]);
        assert!(seg(&ins, "b-tests").include.is_empty());
        let notes: Vec<&String> = ins
            .review
            .iter()
            .filter(|r| r.contains("looks like test data"))
            .collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("tests/fixtures/"));
    }

    #[test]
    fn no_tests_is_an_error() {
        let (f, map) = files(&[("src/a.py", "")]);
        assert!(inspect_with(&f, &|p| map.get(p).cloned()).is_err());
    }
}
