//! From test files to the repository files they need: Python's import resolution over the work
//! tree's file list, followed transitively.
//!
//! Resolution mirrors CPython's path-based finder for `python3 -m pytest` in the default
//! `prepend` import mode. The search path (`sys.path`) of a segment is, in order: the *basedir*
//! of each test and `conftest.py` (its directory, or the parent of its topmost package when the
//! directory has an `__init__.py`: pytest inserts it), pytest's `pythonpath` entries, `src` when
//! `PYTHONPATH = "src"` is set, and the repository root (where `python3 -m` starts). For each
//! dotted component a regular package (`name/__init__.py`) wins over a module (`name.py`), and a
//! namespace package (a directory holding Python files, without `__init__.py`) is used only when
//! no search path entry has either.
//!
//! What a file pulls in:
//!
//! * every module an import names, and the `__init__.py` of each package on the way
//!   (`import a.b.c` → `a/__init__.py`, `a/b/__init__.py`, `a/b/c.py`);
//! * for `from P import n`: the submodule `P.n` when it exists (else `n` is an attribute of `P`);
//! * relative imports, from the importing file's directory;
//! * the `__init__.py` of every directory above every file reached (they run first, and pytest
//!   names test modules by them);
//! * when a *test* (or a conftest on its path) imports a package as a whole — `import pkg`,
//!   `from pkg import attr`, `from pkg import *` — the package's whole directory (`pkg/**`),
//!   since its `__init__` may load anything below it lazily; every Python file in it is followed
//!   too;
//! * for tests: files their string literals name (relative to the test's directory or the
//!   root) and data directories next to them (`data`, `fixtures`, `testdata`, …).
//!
//! Modules not in the repository (the standard library, installed packages) are ignored.
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use super::pyimports::{self, Import, ImportKind, Scan};

/// Conventional names of test data directories.
pub const DATA_DIR_NAMES: [&str; 10] = [
    "data",
    "fixtures",
    "testdata",
    "test_data",
    "resources",
    "snapshots",
    "__snapshots__",
    "cassettes",
    "golden",
    "samples",
];

/// The files of a work tree (repository-relative, `/`-separated) and the directories they
/// imply.
#[derive(Debug, Clone, Default)]
pub struct RepoFiles {
    files: BTreeSet<String>,
    dirs: HashSet<String>,
}

impl RepoFiles {
    pub fn new(paths: impl IntoIterator<Item = String>) -> RepoFiles {
        let files: BTreeSet<String> = paths.into_iter().collect();
        let mut dirs = HashSet::new();
        dirs.insert(String::new());
        for f in &files {
            let mut d = f.as_str();
            while let Some((p, _)) = d.rsplit_once('/') {
                if !dirs.insert(p.to_owned()) {
                    break;
                }
                d = p;
            }
        }
        RepoFiles { files, dirs }
    }

    pub fn is_file(&self, p: &str) -> bool {
        self.files.contains(p)
    }

    pub fn is_dir(&self, p: &str) -> bool {
        self.dirs.contains(p)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every file, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(String::as_str)
    }

    /// Every file below `dir` (`""`: all), sorted.
    pub fn under<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.files
            .range(prefix.clone()..)
            .take_while(move |f| f.starts_with(&prefix))
            .map(String::as_str)
    }

    /// The immediate children (files and directories) of `dir`, as full paths, sorted.
    pub fn children(&self, dir: &str) -> impl Iterator<Item = String> + use<> {
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        let mut out: Vec<String> = self
            .under(dir)
            .map(|f| {
                let rest = &f[skip..];
                let first = rest.split('/').next().unwrap_or(rest);
                join(dir, first)
            })
            .collect();
        out.dedup();
        out.into_iter()
    }
}

/// `dir/name` (`name` alone at the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent(p: &str) -> &str {
    super::parent(p)
}

/// What a file needs, transitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// Every file reached (the starting files included).
    pub files: BTreeSet<String>,
    /// Package directories imported as a whole by a test: inputs as `dir/**`.
    pub globs: BTreeSet<String>,
    /// Data directories next to the tests: inputs as `dir/**`.
    pub data_dirs: BTreeSet<String>,
    /// Files named by the tests' string literals (also in `files`).
    pub data_files: BTreeSet<String>,
    /// Conventionally named data directories next to the tests or above them (`data`,
    /// `fixtures`, …), whether or not a test names them.
    pub nearby_data_dirs: BTreeSet<String>,
    /// Top-level names of the repository modules imported (absolute imports only).
    pub top_level: BTreeSet<String>,
    /// Review notes (modules outside the import path).
    pub notes: Vec<String>,
    /// `file:line` of each import by computed name (`import_module`/`__import__`): reported
    /// together, as one note (most load installed plugins, not repository files).
    pub dynamic: Vec<String>,
}

/// A resolved import target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Module,
    /// A regular or namespace package.
    Package(String),
}

/// Resolves imports over a [`RepoFiles`]; caches each file's scan.
pub struct Resolver<'a> {
    files: &'a RepoFiles,
    read: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    base_roots: Vec<String>,
    scans: HashMap<String, Rc<Scan>>,
    has_py: HashMap<String, bool>,
    /// Module or package name → the first file defining it anywhere in the repository.
    modules_by_name: Option<HashMap<String, String>>,
    /// Top-level module names the Python environment provides (standard library, built-in
    /// and installed); `None` when unknown. A directory holding one of them is never
    /// proposed for `pythonpath`: it would shadow that module.
    environment: Option<HashSet<String>>,
    /// The repository's test modules (each one segment's): a package included as a whole does
    /// not pull in the test modules below it (a flat layout's `pkg/tests/`); importing one
    /// does.
    test_modules: HashSet<String>,
}

impl<'a> Resolver<'a> {
    /// `base_roots`: pytest's `pythonpath`, then `src` when set, then `""` (the root).
    pub fn new(
        files: &'a RepoFiles,
        read: &'a dyn Fn(&str) -> Option<Vec<u8>>,
        base_roots: Vec<String>,
    ) -> Self {
        Resolver {
            files,
            read,
            base_roots,
            scans: HashMap::new(),
            has_py: HashMap::new(),
            modules_by_name: None,
            environment: None,
            test_modules: HashSet::new(),
        }
    }

    /// Set the repository's test modules (see [`Resolver::test_modules`]).
    pub fn with_test_modules(mut self, tests: impl IntoIterator<Item = String>) -> Self {
        self.test_modules = tests.into_iter().collect();
        self
    }

    /// Set the environment's top-level module names (see [`environment_modules`]).
    pub fn with_environment(mut self, modules: Option<HashSet<String>>) -> Self {
        self.environment = modules;
        self
    }

    fn scan(&mut self, file: &str) -> Rc<Scan> {
        if let Some(s) = self.scans.get(file) {
            return s.clone();
        }
        let scan = match (self.read)(file) {
            Some(bytes) => pyimports::scan(&String::from_utf8_lossy(&bytes)),
            None => Scan::default(),
        };
        let rc = Rc::new(scan);
        self.scans.insert(file.to_owned(), rc.clone());
        rc
    }

    /// Whether `dir` holds a Python file at any depth.
    fn dir_has_py(&mut self, dir: &str) -> bool {
        if let Some(&b) = self.has_py.get(dir) {
            return b;
        }
        let b = self.files.under(dir).any(|f| f.ends_with(".py"));
        self.has_py.insert(dir.to_owned(), b);
        b
    }

    /// pytest's basedir for a test or conftest file (see the module documentation).
    pub fn basedir(&self, file: &str) -> String {
        let mut d = parent(file).to_owned();
        if d.is_empty() || !self.files.is_file(&join(&d, "__init__.py")) {
            return d;
        }
        loop {
            let p = parent(&d).to_owned();
            if p.is_empty() || !self.files.is_file(&join(&p, "__init__.py")) {
                return p;
            }
            d = p;
        }
    }

    /// One component `name` inside directory `dir`: a regular package, a module, or (when
    /// `namespace`) a namespace package.
    fn component(&mut self, dir: &str, name: &str, namespace: bool) -> Option<(Found, String)> {
        let p = join(dir, name);
        let init = join(&p, "__init__.py");
        if self.files.is_file(&init) {
            return Some((Found::Package(p), init));
        }
        let module = format!("{p}.py");
        if self.files.is_file(&module) {
            return Some((Found::Module, module));
        }
        if namespace && self.files.is_dir(&p) && self.dir_has_py(&p) {
            return Some((Found::Package(p), String::new()));
        }
        None
    }

    /// Resolve `comps` starting inside package directory `dir`; files executed go to `chain`.
    fn find_from(&mut self, dir: &str, comps: &[&str], chain: &mut Vec<String>) -> Option<Found> {
        let mut dir = dir.to_owned();
        let mut found = None;
        for (i, c) in comps.iter().enumerate() {
            let (f, file) = self.component(&dir, c, true)?;
            if !file.is_empty() {
                chain.push(file);
            }
            match &f {
                Found::Package(p) => dir = p.clone(),
                Found::Module if i + 1 < comps.len() => return Some(Found::Module),
                Found::Module => {}
            }
            found = Some(f);
        }
        found
    }

    /// Resolve an absolute dotted name over the search path `roots`.
    fn find_abs(
        &mut self,
        roots: &[String],
        comps: &[&str],
        chain: &mut Vec<String>,
    ) -> Option<Found> {
        let first = comps.first()?;
        let mut hit = None;
        for r in roots {
            if let Some(h) = self.component(r, first, false) {
                hit = Some((r.clone(), h));
                break;
            }
        }
        if hit.is_none() {
            for r in roots {
                if let Some(h) = self.component(r, first, true) {
                    hit = Some((r.clone(), h));
                    break;
                }
            }
        }
        let (_, (found, file)) = hit?;
        if !file.is_empty() {
            chain.push(file);
        }
        match found {
            Found::Package(dir) if comps.len() > 1 => self.find_from(&dir, &comps[1..], chain),
            f => Some(f),
        }
    }

    /// Everything the files `starts` (tests and their conftest files) need.
    pub fn closure(&mut self, starts: &[String]) -> Deps {
        let mut roots: Vec<String> = starts.iter().map(|s| self.basedir(s)).collect();
        roots.extend(self.base_roots.iter().cloned());
        let mut seen_roots = HashSet::new();
        roots.retain(|r| seen_roots.insert(r.clone()));

        let mut deps = Deps::default();
        let mut queue: VecDeque<(String, bool)> =
            starts.iter().map(|s| (s.clone(), true)).collect();
        let mut visited: HashSet<String> = HashSet::new();
        let mut unresolved_checked: HashSet<String> = HashSet::new();
        while let Some((file, is_test)) = queue.pop_front() {
            if !visited.insert(file.clone()) {
                continue;
            }
            deps.files.insert(file.clone());
            // The __init__.py of every directory above.
            let mut d = parent(&file);
            while !d.is_empty() {
                let init = join(d, "__init__.py");
                if init != file && self.files.is_file(&init) {
                    queue.push_back((init, false));
                }
                d = parent(d);
            }
            if !file.ends_with(".py") {
                continue;
            }
            let scan = self.scan(&file);
            for imp in &scan.imports {
                self.follow(
                    &file,
                    imp,
                    is_test,
                    &roots,
                    &mut deps,
                    &mut queue,
                    &mut unresolved_checked,
                );
            }
            for line in &scan.dynamic {
                deps.dynamic.push(format!("{file}:{line}"));
            }
            for dir in self.loaded_by_name(&file, &scan, is_test, &roots, &mut queue) {
                self.glob(&dir, &mut deps, &mut queue);
            }
            if is_test {
                self.data_for(&file, &scan, &mut deps, &mut queue);
            }
        }
        deps
    }

    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        file: &str,
        imp: &Import,
        is_test: bool,
        roots: &[String],
        deps: &mut Deps,
        queue: &mut VecDeque<(String, bool)>,
        unresolved_checked: &mut HashSet<String>,
    ) {
        let comps: Vec<&str> = if imp.module.is_empty() {
            Vec::new()
        } else {
            imp.module.split('.').collect()
        };
        if comps.iter().any(|c| c.is_empty()) {
            return;
        }
        let mut chain = Vec::new();
        let target = if imp.level > 0 {
            let mut base = parent(file);
            for _ in 1..imp.level {
                if base.is_empty() {
                    return;
                }
                base = parent(base);
            }
            if comps.is_empty() {
                Some(Found::Package(base.to_owned()))
            } else {
                self.find_from(base, &comps, &mut chain)
            }
        } else {
            self.find_abs(roots, &comps, &mut chain)
        };
        let Some(target) = target else {
            // A submodule a package of the repository makes at import time (toolz's `tlz`
            // builds `tlz.curried`): the package is there, so it is what the import needs,
            // as a whole (what it makes the submodule from is in it, as a rule).
            if imp.level == 0 && comps.len() > 1 {
                for k in (1..comps.len()).rev() {
                    let mut chain = Vec::new();
                    if let Some(Found::Package(dir)) = self.find_abs(roots, &comps[..k], &mut chain)
                    {
                        deps.top_level.insert(comps[0].to_owned());
                        queue.extend(chain.into_iter().map(|f| (f, false)));
                        if !dir.is_empty() && !file.starts_with(&format!("{dir}/")) {
                            self.glob(&dir, deps, queue);
                        }
                        return;
                    }
                }
            }
            if imp.level == 0 && unresolved_checked.insert(comps[0].to_owned()) {
                self.note_outside_path(file, imp, comps[0], deps);
            }
            if imp.level > 0 {
                self.note_untracked(file, imp, &comps, deps);
            }
            return;
        };
        if imp.level == 0 {
            deps.top_level.insert(comps[0].to_owned());
        }
        for f in chain {
            queue.push_back((f, false));
        }
        // Package directories the import uses as a whole.
        let mut wholes: Vec<String> = Vec::new();
        match (imp.kind, target) {
            (ImportKind::From, Found::Package(dir)) => {
                for n in &imp.names {
                    if n == "*" {
                        wholes.push(dir.clone());
                        continue;
                    }
                    let mut sub = Vec::new();
                    match self.find_from(&dir, &[n.as_str()], &mut sub) {
                        Some(found) => {
                            for f in sub {
                                queue.push_back((f, false));
                            }
                            if let Found::Package(p) = found {
                                wholes.push(p);
                            }
                        }
                        None => wholes.push(dir.clone()),
                    }
                }
            }
            (ImportKind::From, Found::Module) | (_, Found::Module) => {}
            (_, Found::Package(dir)) => wholes.push(dir),
        }
        for dir in wholes {
            // Only for tests; never the importing test's own package, never the root.
            if is_test && !dir.is_empty() && !file.starts_with(&format!("{dir}/")) {
                self.glob(&dir, deps, queue);
            }
        }
    }

    /// The repository packages whose modules `file` may load by computed name, as a registry
    /// of plugins does (`import_module("pkg.readers." + name)`): each package a string literal
    /// `"a.b."` names (the prefix such a call adds a name to, wherever the literal is kept),
    /// and, when a module of a package calls `import_module`/`__import__` with any other
    /// argument, that package itself (its siblings are what it loads, as a rule). More inputs
    /// than needed cost reruns; fewer make the check fail on the read it was denied.
    fn loaded_by_name(
        &mut self,
        file: &str,
        scan: &Scan,
        is_test: bool,
        roots: &[String],
        queue: &mut VecDeque<(String, bool)>,
    ) -> Vec<String> {
        let mut dirs = Vec::new();
        for s in &scan.strings {
            let Some(prefix) = s.strip_suffix('.') else {
                continue;
            };
            if !pyimports::is_dotted_name(prefix) {
                continue;
            }
            let comps: Vec<&str> = prefix.split('.').collect();
            let mut chain = Vec::new();
            if let Some(Found::Package(dir)) = self.find_abs(roots, &comps, &mut chain)
                && !dir.is_empty()
            {
                queue.extend(chain.into_iter().map(|f| (f, false)));
                dirs.push(dir);
            }
        }
        let dir = parent(file);
        if !is_test
            && !scan.dynamic.is_empty()
            && !dir.is_empty()
            && self.files.is_file(&join(dir, "__init__.py"))
        {
            dirs.push(dir.to_owned());
        }
        dirs
    }

    /// Include a package directory as a whole and follow every Python file in it.
    fn glob(&mut self, dir: &str, deps: &mut Deps, queue: &mut VecDeque<(String, bool)>) {
        if !deps.globs.insert(dir.to_owned()) {
            return;
        }
        let py: Vec<String> = self
            .files
            .under(dir)
            .filter(|f| f.ends_with(".py") && !self.test_modules.contains(*f))
            .map(str::to_owned)
            .collect();
        for f in py {
            queue.push_back((f, false));
        }
    }

    /// A relative import of a module git does not track but the work tree has (a generated
    /// `_version.py` that `.gitignore` lists): no view holds it, so every check importing it
    /// fails; say so, with what to do.
    fn note_untracked(&mut self, file: &str, imp: &Import, comps: &[&str], deps: &mut Deps) {
        let mut base = parent(file);
        for _ in 1..imp.level {
            base = parent(base);
        }
        let module = join(base, &comps.join("/"));
        for candidate in [format!("{module}.py"), format!("{module}/__init__.py")] {
            if !self.files.is_file(&candidate) && (self.read)(&candidate).is_some() {
                deps.notes.push(format!(
                    "{file}:{}: imports {candidate}, which git does not track (ignored, or not added; generated at build time?): checks run on tracked files and their segment's inputs only, so commit it, or make the segment's command generate it first",
                    imp.line
                ));
                return;
            }
        }
    }

    /// A module not found on the search path but present elsewhere in the repository.
    fn note_outside_path(&mut self, file: &str, imp: &Import, top: &str, deps: &mut Deps) {
        let files = self.files;
        let index = self.modules_by_name.get_or_insert_with(|| {
            let mut m: HashMap<String, String> = HashMap::new();
            for f in files.iter() {
                let name = if let Some(pkg) = f.strip_suffix("/__init__.py") {
                    pkg.rsplit('/').next().unwrap_or(pkg)
                } else if let Some(stem) = f.strip_suffix(".py") {
                    stem.rsplit('/').next().unwrap_or(stem)
                } else {
                    continue;
                };
                m.entry(name.to_owned()).or_insert_with(|| f.to_owned());
            }
            m
        });
        let Some(path) = index.get(top).cloned() else {
            return;
        };
        let Some(env) = &self.environment else {
            // Unknown environment: `import operator` may well be the standard library's.
            deps.notes.push(format!(
                "{file}:{}: `{}` is not on the import path, but {path} exists (python3 could not be asked whether `{top}` is a standard-library or installed module): if the test means that file, add it to the segment's include",
                imp.line, imp.module
            ));
            return;
        };
        // The import resolves to the environment's module (`import operator` next to a
        // `toolz/curried/operator.py`): nothing to do.
        if env.contains(top) {
            return;
        }
        // Putting the directory on `pythonpath` makes every module in it importable by its
        // bare name: refuse when one of them would shadow the environment's.
        let dir = if let Some(pkg) = path.strip_suffix("/__init__.py") {
            parent(pkg)
        } else {
            parent(&path)
        };
        let shadowed: Vec<String> = files
            .children(dir)
            .filter_map(|c| {
                let name = c.rsplit('/').next().unwrap_or(&c);
                let module = name
                    .strip_suffix(".py")
                    .or_else(|| files.is_file(&format!("{c}/__init__.py")).then_some(name))?;
                env.contains(module).then(|| module.to_owned())
            })
            .collect();
        if shadowed.is_empty() {
            let shown = if dir.is_empty() { "." } else { dir };
            deps.notes.push(format!(
                "{file}:{}: `{}` is not on the import path, but {path} exists: add `{shown}` to pytest's `pythonpath` (then run `checkdef init --force` again) or {path} to the segment's include",
                imp.line, imp.module
            ));
        } else {
            deps.notes.push(format!(
                "{file}:{}: `{}` is not on the import path, but {path} exists; its directory cannot go on `pythonpath` (its {} would shadow the installed or standard-library module{} of that name): if the test means that file, add it to the segment's include",
                imp.line,
                imp.module,
                shadowed.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                if shadowed.len() == 1 { "" } else { "s" }
            ));
        }
    }

    /// Data a test file may read: files and data-only directories its string literals name,
    /// relative to its own directory, any directory above it, or the root
    /// (`Path(__file__).parent / "data"`, `open("tests/data/x.json")`). Conventionally named
    /// data directories nearby that no string names only get a review note.
    fn data_for(
        &mut self,
        file: &str,
        scan: &Scan,
        deps: &mut Deps,
        queue: &mut VecDeque<(String, bool)>,
    ) {
        let dir = parent(file);
        let mut bases = vec![dir];
        let mut d = dir;
        while !d.is_empty() {
            d = parent(d);
            bases.push(d);
        }
        for s in &scan.strings {
            // A leading `/` is usually the tail of a joined path (`HERE + '/data.txt'`, as in
            // boltons' tests); only files of the repository are ever taken, so an absolute path
            // elsewhere cannot match by accident unless the repository mirrors it.
            let s = s
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/');
            if s.is_empty()
                || s.contains("://")
                || s.split('/').any(|c| c == ".." || c == "." || c.is_empty())
                || s.trim() != s
            {
                continue;
            }
            for base in &bases {
                let cand = join(base, s);
                if cand != file && self.files.is_file(&cand) {
                    if deps.data_files.insert(cand.clone()) {
                        queue.push_back((cand, false));
                    }
                    break;
                }
                if self.files.is_dir(&cand)
                    && !self.dir_has_py(&cand)
                    && !file.starts_with(&format!("{cand}/"))
                {
                    deps.data_dirs.insert(cand);
                    break;
                }
            }
        }
        for base in &bases[..bases.len() - 1] {
            for name in DATA_DIR_NAMES {
                let cand = join(base, name);
                if self.files.is_dir(&cand) && self.files.under(&cand).any(|f| !f.ends_with(".py"))
                {
                    deps.nearby_data_dirs.insert(cand);
                }
            }
        }
    }
}

/// The top-level module names the environment of `python3` provides, asked once from
/// `python3` run in `root`: `sys.stdlib_module_names`, `sys.builtin_module_names` and every
/// module or package on its `sys.path` (outside `root`). `None` when python3 cannot say.
pub fn environment_modules(root: &std::path::Path) -> Option<HashSet<String>> {
    const PROBE: &str = r#"
import os, pkgutil, sys
names = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
root = os.path.realpath(os.getcwd())
dirs = []
for p in sys.path:
    if not p or not os.path.isdir(p):
        continue
    real = os.path.realpath(p)
    if real == root or real.startswith(root + os.sep):
        continue
    dirs.append(p)
names.update(m.name for m in pkgutil.iter_modules(dirs))
print("\n".join(sorted(names)))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(PROBE)
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let names: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    // Without the standard library's names the answer is no use (Python before 3.10).
    names.contains("operator").then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver_for(
        list: &[(&str, &str)],
        roots: &[&str],
    ) -> (RepoFiles, HashMap<String, String>, Vec<String>) {
        let files = RepoFiles::new(list.iter().map(|(p, _)| p.to_string()));
        let map = list
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        (files, map, roots.iter().map(|s| s.to_string()).collect())
    }

    fn closure(list: &[(&str, &str)], roots: &[&str], starts: &[&str]) -> Deps {
        let (files, map, roots) = resolver_for(list, roots);
        let read = move |p: &str| map.get(p).map(|s| s.as_bytes().to_vec());
        let mut r = Resolver::new(&files, &read, roots);
        let starts: Vec<String> = starts.iter().map(|s| s.to_string()).collect();
        r.closure(&starts)
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repo_files_queries() {
        let f = RepoFiles::new(["a/b/c.py", "a/d.py", "e.txt"].map(String::from));
        assert!(f.is_dir("a/b") && f.is_dir("") && !f.is_dir("a/b/c.py"));
        assert_eq!(f.children("").collect::<Vec<_>>(), ["a", "e.txt"]);
        assert_eq!(f.children("a").collect::<Vec<_>>(), ["a/b", "a/d.py"]);
        assert_eq!(f.under("a").count(), 2);
    }

    #[test]
    fn dotted_imports_pull_in_package_inits() {
        let d = closure(
            &[
                ("src/a/__init__.py", ""),
                ("src/a/b/__init__.py", ""),
                ("src/a/b/c.py", "from ..x import y\n"),
                ("src/a/x.py", ""),
                ("src/a/unused.py", ""),
                ("tests/test_c.py", "import a.b.c\n"),
            ],
            &["src", ""],
            &["tests/test_c.py"],
        );
        assert_eq!(
            d.files,
            set(&[
                "src/a/__init__.py",
                "src/a/b/__init__.py",
                "src/a/b/c.py",
                "src/a/x.py",
                "tests/test_c.py"
            ])
        );
        assert!(d.globs.is_empty());
        assert_eq!(d.top_level, set(&["a"]));
    }

    #[test]
    fn package_root_import_by_a_test_is_a_glob() {
        let d = closure(
            &[
                ("src/a/__init__.py", "from .impl import f\n"),
                ("src/a/impl.py", "import b.util\n"),
                ("src/a/sub/__init__.py", ""),
                ("src/b/__init__.py", ""),
                ("src/b/util.py", ""),
                ("src/b/other.py", ""),
                ("tests/test_a.py", "from a import f\nfrom b import util\n"),
            ],
            &["src", ""],
            &["tests/test_a.py"],
        );
        assert_eq!(d.globs, set(&["src/a"]));
        assert!(d.files.contains("src/b/util.py") && d.files.contains("src/b/__init__.py"));
        assert!(!d.files.contains("src/b/other.py"));
        assert!(
            d.files.contains("src/a/sub/__init__.py"),
            "followed inside the glob"
        );
    }

    #[test]
    fn basedir_and_test_packages() {
        let list = [
            ("tests/__init__.py", ""),
            ("tests/unit/__init__.py", ""),
            (
                "tests/unit/test_x.py",
                "from tests.helpers import h\nfrom . import local\n",
            ),
            ("tests/unit/local.py", ""),
            ("tests/helpers.py", ""),
            ("tests/plain/test_y.py", "import sibling\n"),
            ("tests/plain/sibling.py", ""),
        ];
        let (files, map, roots) = resolver_for(&list, &[""]);
        let read = move |p: &str| map.get(p).map(|s| s.as_bytes().to_vec());
        let mut r = Resolver::new(&files, &read, roots);
        assert_eq!(r.basedir("tests/unit/test_x.py"), "");
        assert_eq!(r.basedir("tests/plain/test_y.py"), "tests/plain");
        let d = r.closure(&["tests/unit/test_x.py".to_owned()]);
        assert_eq!(
            d.files,
            set(&[
                "tests/__init__.py",
                "tests/helpers.py",
                "tests/unit/__init__.py",
                "tests/unit/local.py",
                "tests/unit/test_x.py"
            ])
        );
        assert!(d.globs.is_empty(), "a test's own package is never globbed");
        let d = r.closure(&["tests/plain/test_y.py".to_owned()]);
        assert!(d.files.contains("tests/plain/sibling.py"));
    }

    #[test]
    fn plugins_data_and_notes() {
        let d = closure(
            &[
                ("conftest.py", "pytest_plugins = ['plugins.db']\n"),
                ("plugins/__init__.py", ""),
                ("plugins/db.py", ""),
                (
                    "tests/test_io.py",
                    "import importlib\nm = importlib.import_module(x)\nopen('data/in.json')\nimport tool\nP = HERE + '/lines.txt'\n",
                ),
                ("tests/data/in.json", "{}"),
                ("tests/lines.txt", ""),
                ("tests/fixtures/big.csv", ""),
                ("scripts/tool.py", ""),
            ],
            &[""],
            &["conftest.py", "tests/test_io.py"],
        );
        assert!(d.files.contains("plugins/db.py"));
        assert_eq!(
            d.data_files,
            set(&["tests/data/in.json", "tests/lines.txt"])
        );
        assert!(d.data_dirs.is_empty());
        assert_eq!(d.nearby_data_dirs, set(&["tests/data", "tests/fixtures"]));
        assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
        assert_eq!(d.dynamic, ["tests/test_io.py:2"]);
        assert!(d.notes.iter().any(|n| n.contains("scripts/tool.py")));
    }

    #[test]
    fn a_submodule_a_package_makes_at_import_takes_the_package() {
        // toolz's tlz: `tlz/__init__.py` builds `tlz.curried` from toolz when imported.
        let d = closure(
            &[
                ("tlz/__init__.py", "from . import _build_tlz\n"),
                ("tlz/_build_tlz.py", "import toolz\n"),
                ("toolz/__init__.py", ""),
                ("toolz/curried/__init__.py", ""),
                ("tests/test_tlz.py", "import tlz.curried\n"),
            ],
            &[""],
            &["tests/test_tlz.py"],
        );
        assert!(d.globs.contains("tlz"), "{:?}", d.globs);
        assert!(d.files.contains("tlz/_build_tlz.py") && d.files.contains("toolz/__init__.py"));
        assert!(d.notes.is_empty(), "{:?}", d.notes);
    }

    #[test]
    fn an_imported_module_git_does_not_track_is_named() {
        let files = RepoFiles::new(
            ["src/hum/__init__.py", "src/hum/num.py", "tests/test_num.py"].map(String::from),
        );
        let read = |p: &str| match p {
            "src/hum/__init__.py" => {
                Some(b"from ._version import __version__\nfrom .num import x\n".to_vec())
            }
            // On disk, ignored by git: generated at build time.
            "src/hum/_version.py" => Some(b"__version__ = '1'\n".to_vec()),
            "tests/test_num.py" => Some(b"import hum\n".to_vec()),
            _ => Some(Vec::new()),
        };
        let mut r = Resolver::new(&files, &read, vec!["src".into(), "".into()]);
        let d = r.closure(&["tests/test_num.py".to_owned()]);
        assert!(d.files.contains("src/hum/num.py"));
        assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
        assert!(
            d.notes[0].starts_with(
                "src/hum/__init__.py:1: imports src/hum/_version.py, which git does not track"
            ),
            "{:?}",
            d.notes
        );
    }

    #[test]
    fn packages_a_registry_loads_by_computed_name_are_inputs() {
        // docutils' way: `import_module('docutils.readers.' + name)` in readers/__init__.py, a
        // language registry calling `import_module(package + name)` with its prefix kept in a
        // class attribute, and a subclass naming another package's prefix.
        let d = closure(
            &[
                ("doc/__init__.py", ""),
                (
                    "doc/core.py",
                    "from doc import readers, languages\nfrom doc.rst import langs\n",
                ),
                (
                    "doc/readers/__init__.py",
                    "from importlib import import_module\ndef get(n):\n    return import_module('doc.readers.' + n)\n",
                ),
                ("doc/readers/standalone.py", ""),
                (
                    "doc/languages/__init__.py",
                    "from importlib import import_module\nclass Importer:\n    def load(self, n):\n        return import_module(self.prefix + n)\n",
                ),
                ("doc/languages/en.py", ""),
                ("doc/rst/__init__.py", ""),
                (
                    "doc/rst/langs/__init__.py",
                    "from doc.languages import Importer\nclass R(Importer):\n    prefix = 'doc.rst.langs.'\n",
                ),
                ("doc/rst/langs/de.py", ""),
                ("doc/writers/__init__.py", ""),
                ("doc/writers/html.py", ""),
                (
                    "tests/test_core.py",
                    "import doc.core\nprint('e.g.', 'etc.')\n",
                ),
            ],
            &[""],
            &["tests/test_core.py"],
        );
        for f in [
            "doc/readers/standalone.py",
            "doc/languages/en.py",
            "doc/rst/langs/de.py",
        ] {
            assert!(d.files.contains(f), "{f}: {:?}", d.files);
        }
        assert_eq!(
            d.globs,
            set(&["doc/languages", "doc/readers", "doc/rst/langs"])
        );
        // Nothing loads the writers by name: they stay out.
        assert!(!d.files.contains("doc/writers/html.py"), "{:?}", d.files);
    }

    #[test]
    fn regular_package_beats_namespace_on_an_earlier_root() {
        let d = closure(
            &[
                ("src/pkg/__init__.py", ""),
                ("pkg/readme.py", ""),
                ("tests/test_p.py", "import pkg\n"),
            ],
            &["", "src"],
            &["tests/test_p.py"],
        );
        assert_eq!(d.globs, set(&["src/pkg"]));
    }
}
