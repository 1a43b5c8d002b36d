//! The built-in Python environment fingerprint, `fingerprint = [{ python = "python3" }]`, and
//! the default of every segment whose command runs Python.
//!
//! What it hashes: the interpreter's real path (after symlinks, as `sys.executable` resolves),
//! its implementation and version, and every installed distribution (`name==version`, from the
//! `*.dist-info`/`*.egg-info` metadata found in the directories of the interpreter's
//! `sys.path`), and what each `sys.path` directory holds (the names of its entries, in
//! `sys.path` order: a directory a `.pth` adds, or a module that is no distribution's). A venv
//! with one more package, another interpreter or an upgraded package is another fingerprint,
//! so a result from one environment is a miss in the other. Directory paths are not hashed, so
//! the same packages in another checkout (or on a teammate's machine) share results; a module
//! edited in place, outside the repository, is not seen (docs/configuration.md).
//!
//! Why it costs nothing on a no-op: `sys.path` is learnt by running the interpreter once (with
//! the check's own environment: `PATH`, the passthrough variables and `env`), and the output
//! is kept in the local cache directory (`checkdef-fingerprints/`) together with the `stat`
//! identity of every `sys.path` directory. Installing, upgrading or removing a distribution
//! adds or removes a `*.dist-info` entry, which changes its directory's mtime, so while every
//! directory's identity is unchanged the kept output is reused: a few `stat`s, no process.
//! The key it is kept under names the interpreter as found (its path and identity, and the
//! real file's), the venv's `pyvenv.cfg`, the environment the probe ran with, and for an
//! interpreter that is a script (a pyenv shim) the `.python-version` files it may read.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::fsutil::FileId;
use crate::plan::PlanError;

/// Files by which version managers (pyenv, asdf, mise, rtx) pick the interpreter a shim runs,
/// looked for in the directory a shim starts in and every directory above it.
pub const VERSION_FILES: [&str; 12] = [
    ".python-version",
    ".python-versions",
    ".tool-versions",
    ".mise.toml",
    "mise.toml",
    ".mise.local.toml",
    "mise.local.toml",
    ".config/mise.toml",
    ".config/mise/config.toml",
    ".mise/config.toml",
    "mise/config.toml",
    ".rtx.toml",
];

/// Whether `path` (relative to the repository root) is one of [`VERSION_FILES`] in some
/// directory. Called for every path of the snapshot: the cheap test first.
pub fn is_version_file(path: &[u8]) -> bool {
    if !(path.ends_with(b"version") || path.ends_with(b"versions") || path.ends_with(b".toml")) {
        return false;
    }
    VERSION_FILES.iter().any(|name| {
        let name = name.as_bytes();
        path == name
            || (path.len() > name.len()
                && path.ends_with(name)
                && path[path.len() - name.len() - 1] == b'/')
    })
}

/// Whether `path` is one of [`VERSION_FILES`] of the repository root itself (where the
/// environment fingerprint's probe starts, so the one a shim reads for it).
pub fn is_root_version_file(path: &[u8]) -> bool {
    VERSION_FILES.iter().any(|name| path == name.as_bytes())
}

/// Version of the kept record's format and of the rendered output.
const FORMAT: &str = "checkdef-python-env 3";

/// The manifest key of the environment of `interpreter` (how it is written in checkdef.toml).
pub fn key(interpreter: &str) -> String {
    format!("{{ python = {interpreter:?} }}")
}

/// A version file of the repository root by which a shim would pick one interpreter for the
/// fingerprint and another for the check (see `plan::stale_version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleVersion {
    pub path: String,
    /// What is wrong with it, after its name ("of commit … is not the work tree's").
    pub reason: String,
}

/// Whether `word` (a command's first word) names a Python interpreter: `python`, `python3`,
/// `python3.11`, or a path ending in one (`.venv/bin/python`).
pub fn is_interpreter(word: &str) -> bool {
    let base = word.rsplit('/').next().unwrap_or(word);
    let Some(rest) = base.strip_prefix("python") else {
        return false;
    };
    rest.is_empty()
        || rest
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `word` names a pytest script (`pytest`, `py.test`, `.venv/bin/pytest`): its
/// interpreter is the one its `#!` line names (see [`fingerprint`]).
pub fn is_pytest_script(word: &str) -> bool {
    let base = word.rsplit('/').next().unwrap_or(word);
    base == "pytest" || base == "py.test"
}

/// The interpreter (or pytest script) a command runs, in any of its simple commands (`cd src &&
/// python3 …`, `make lint; pytest`), after variable assignments and the wrappers that run
/// their arguments (`PYTHONPATH=src python3 -m pytest`, `env python3 …`, `exec pytest`): a check
/// that runs Python depends on its environment, however the command is spelled.
pub fn command_interpreter(command: &str) -> Option<&str> {
    const WRAPPERS: [&str; 6] = ["env", "exec", "command", "nice", "nohup", "time"];
    command
        .split(['\n', ';', '&', '|', '(', ')', '`'])
        .find_map(|simple| {
            let mut wrapped = false;
            // The wrappers' options that take a value (`env -u NAME`, `env -C DIR`, `nice -n N`).
            let mut operand = false;
            simple
                .split_whitespace()
                .find(|w| {
                    let assignment = w.split_once('=').is_some_and(|(name, _)| {
                        !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    });
                    let option = wrapped && w.starts_with('-');
                    let skip = assignment || WRAPPERS.contains(w) || option || operand;
                    operand = option && matches!(*w, "-u" | "-C" | "-n");
                    wrapped |= WRAPPERS.contains(w);
                    !skip
                })
                .filter(|w| is_interpreter(w) || is_pytest_script(w))
        })
}

/// The rendered fingerprint of `interpreter`'s environment for a check run in `root` with
/// exactly `env` (see the module docs). Each distinct (root, interpreter, env) is computed once
/// per process, and kept in `kept_dir` (when given) while the `sys.path` directories are
/// unchanged.
pub fn fingerprint(
    root: &Path,
    interpreter: &str,
    env: &[(String, String)],
    limit: std::time::Duration,
    environ: &crate::context::Env,
    kept_dir: Option<&Path>,
    stale_version: &dyn Fn() -> Option<StaleVersion>,
) -> Result<Vec<u8>, PlanError> {
    type Cache = Mutex<HashMap<(PathBuf, String, Vec<(String, String)>), Vec<u8>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mem_key = (root.to_path_buf(), interpreter.to_owned(), env.to_vec());
    if let Some(out) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&mem_key)
    {
        return Ok(out.clone());
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let not_found = || PlanError::PythonNotFound {
        interpreter: interpreter.to_owned(),
        path: path_var.unwrap_or("").to_owned(),
    };
    let mut exe = find_executable(root, interpreter, path_var).ok_or_else(not_found)?;
    if !is_interpreter(interpreter) {
        // A pytest script: the environment is its interpreter's (a pipx-installed pytest runs
        // in a venv of its own, not in `python3`'s). A shim whose `#!` names no Python (pyenv's
        // is bash) picks the same version as `python3` on the same PATH.
        exe = python_behind(root, &exe, path_var)
            .or_else(|| find_executable(root, "python3", path_var))
            .ok_or_else(not_found)?;
    }
    if crate::run::warm::is_script(&exe)
        && let Some(stale) = stale_version()
    {
        // A shim picks the interpreter by the version file the probe sees here, in the work
        // tree; the check, in a view of the commit, gets the commit's: the fingerprint would
        // describe another interpreter than the one that runs.
        return Err(PlanError::StaleVersionFile {
            path: stale.path,
            reason: stale.reason,
            interpreter: exe.display().to_string(),
        });
    }
    let kept = kept_dir.map(|d| d.join(format!("python-{}", probe_key(root, &exe, env, environ))));
    let out = match kept.as_deref().and_then(read_kept) {
        Some(out) => out,
        None => {
            let (dirs, out) = compute(root, interpreter, &exe, env, limit)?;
            if let Some(p) = &kept {
                // Only saves time: failing to keep it is no reason to fail the plan.
                let _ = crate::fsutil::write_atomic(p, &render_kept(&dirs, &out));
            }
            out
        }
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(mem_key, out.clone());
    Ok(out)
}

/// `interpreter` as `sh` would start it: relative to `root` when it contains a `/`, else the
/// first executable file of that name on `path_var`.
fn find_executable(root: &Path, interpreter: &str, path_var: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let is_exe = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if interpreter.contains('/') {
        let p = root.join(interpreter);
        return is_exe(&p).then_some(p);
    }
    std::env::split_paths(path_var?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(interpreter))
        .find(|p| is_exe(p))
}

/// The manifest key of the pytest files above the repository (see [`pytest_files_above`]).
pub const ABOVE_KEY: &str = "pytest files above the repository";

/// The files above the repository root that pytest reads: its configuration files (pytest
/// looks for them from the tests' common directory up to `/`, and takes the first it finds
/// outside the repository when the repository has none of its own, even a `~/tox.ini`), a
/// `setup.py` (which makes its directory the rootdir), and the `conftest.py` files between
/// such a rootdir and the tests. Each one present, by its path relative to the root
/// (`../pytest.ini`) and the sha256 of its content; `None` when there is none, the common case,
/// which leaves every input hash as it was. Computed once per process for each root.
pub fn pytest_files_above(root: &Path) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256};
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, Option<Vec<u8>>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(root) {
        return v.clone();
    }
    let mut out = String::new();
    let mut up = String::new();
    let mut dir = root.parent();
    while let Some(d) = dir {
        up.push_str("../");
        let names = crate::config::PYTEST_CONFIG_FILES
            .iter()
            .chain(&["setup.py", "conftest.py"]);
        for name in names {
            let p = d.join(name);
            if !p.is_file() {
                continue;
            }
            let digest = std::fs::read(&p).map_or_else(
                |e| format!("unreadable ({})", e.kind()),
                |b| hex::encode(Sha256::digest(&b)),
            );
            out.push_str(&format!("{up}{name} {digest}\n"));
        }
        dir = d.parent();
    }
    let v = (!out.is_empty()).then(|| out.into_bytes());
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(root.to_path_buf(), v.clone());
    v
}

/// The Python interpreter a script's `#!` line runs: an absolute path to one, or
/// `/usr/bin/env [-S] python3` looked up on `path_var`.
fn python_behind(root: &Path, script: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    use std::io::Read as _;
    let mut head = [0u8; 512];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n]
        .strip_prefix(b"#!")?
        .split(|b| *b == b'\n')
        .next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if first.ends_with("/env") {
        let program = words.find(|w| !w.starts_with('-'))?;
        return (is_interpreter(program) && !program.contains('/'))
            .then(|| find_executable(root, program, path_var))
            .flatten();
    }
    (first.starts_with('/') && is_interpreter(first)).then(|| PathBuf::from(first))
}

fn identity(path: &Path) -> String {
    FileId::of(path).map_or_else(|| "absent".to_owned(), |id| id.to_string())
}

/// What decides which `sys.path` the probe sees (see the module docs), hashed.
fn probe_key(
    root: &Path,
    exe: &Path,
    env: &[(String, String)],
    environ: &crate::context::Env,
) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut k = String::from(FORMAT);
    k.push('\n');
    let _ = writeln!(k, "root {}", root.display());
    let _ = writeln!(k, "exe {} {}", exe.display(), identity(exe));
    if let Ok(real) = std::fs::canonicalize(exe) {
        let _ = writeln!(k, "real {} {}", real.display(), identity(&real));
    }
    // A venv's interpreter is a symlink to the base one: its `pyvenv.cfg` is what differs.
    if let Some(venv) = exe.parent().and_then(Path::parent) {
        let cfg = venv.join("pyvenv.cfg");
        let _ = writeln!(k, "pyvenv {} {}", cfg.display(), identity(&cfg));
    }
    for (name, value) in env {
        let _ = writeln!(k, "env {name}={value:?}");
    }
    let is_script = std::fs::read(exe).is_ok_and(|b| b.starts_with(b"#!"));
    if is_script {
        // A shim (pyenv) picks the interpreter from these.
        let mut dir = Some(root);
        while let Some(d) = dir {
            let f = d.join(".python-version");
            let _ = writeln!(k, "version-file {} {}", f.display(), identity(&f));
            dir = d.parent();
        }
        for var in ["PYENV_ROOT", "HOME"] {
            if let Some(base) = environ.var_os(var) {
                let base = PathBuf::from(base);
                let f = if var == "HOME" {
                    base.join(".pyenv").join("version")
                } else {
                    base.join("version")
                };
                let _ = writeln!(k, "version-file {} {}", f.display(), identity(&f));
            }
        }
    }
    hex::encode(Sha256::digest(k.as_bytes()))
}

/// The kept record: the first line is [`FORMAT`], then `dir <identity>\t<path>` for each
/// `sys.path` directory, an empty line, and the output.
fn render_kept(dirs: &[(PathBuf, String)], out: &[u8]) -> Vec<u8> {
    let mut s = format!("{FORMAT}\n");
    for (path, id) in dirs {
        s.push_str(&format!("dir {id}\t{}\n", path.display()));
    }
    s.push('\n');
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(out);
    bytes
}

/// The kept output, if every directory it was listed from is unchanged.
fn read_kept(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let split = bytes.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let mut lines = head.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    for line in lines {
        let (id, dir) = line.strip_prefix("dir ")?.split_once('\t')?;
        if identity(Path::new(dir)) != id {
            return None;
        }
    }
    Some(bytes[split + 2..].to_vec())
}

/// Printed by the probe: the real interpreter, its version, and the `sys.path` directories
/// outside the repository (the current directory, or a `PYTHONPATH` entry into it, holds the
/// check's files, not its environment). It starts without `site` (`-S`) and runs it only once
/// those entries are gone, without its customize modules (a `.pth` file of an editable install
/// may put the repository back), and writes no bytecode (`-B`): no `sitecustomize` or `.pth` of
/// the work tree runs outside the sandbox, and nothing is written into it. It runs in the
/// repository (a shim picks its interpreter from the version file there).
const PROBE: &str = r#"
import os, sys
root = os.path.realpath(os.getcwd())
def inside(p):
    p = os.path.realpath(os.path.abspath(p))
    return p == root or p.startswith(root.rstrip(os.sep) + os.sep)
sys.path[:] = [p for p in sys.path if isinstance(p, str) and not inside(p)]
import site
# A .pth file (an editable install) may put the repository back: no customize module from there.
site.execsitecustomize = site.execusercustomize = lambda: None
site.main()
import platform
print("python", os.path.realpath(sys.executable))
print("version", sys.implementation.name, platform.python_version())
for p in sys.path:
    if p and "\n" not in p and os.path.isdir(p) and not inside(p):
        print("path", os.path.abspath(p))
"#;

/// `sys.path` directories with their `stat` identities.
type Dirs = Vec<(PathBuf, String)>;

/// Run the probe and list the distributions: the directories (with their identities, taken
/// before listing them) and the rendered output.
fn compute(
    root: &Path,
    interpreter: &str,
    exe: &Path,
    env: &[(String, String)],
    limit: std::time::Duration,
) -> Result<(Dirs, Vec<u8>), PlanError> {
    let what = key(interpreter);
    // Bounded like every fingerprint command (see `crate::process::run_bounded`).
    let output = crate::process::run_bounded(
        std::process::Command::new(exe)
            .args(["-S", "-B", "-c"])
            .arg(PROBE)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(root),
        limit,
        crate::plan::MAX_FINGERPRINT_OUTPUT,
    )
    .map_err(|source| PlanError::FingerprintSpawn {
        command: what.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(PlanError::FingerprintFailed {
            command: what,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut python = None;
    let mut version = None;
    let mut dirs = Vec::new();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("python", p)) => python = Some(p.to_owned()),
            Some(("version", v)) => version = Some(v.to_owned()),
            Some(("path", p)) => {
                let p = PathBuf::from(p);
                if !dirs.iter().any(|(d, _)| *d == p) {
                    let id = identity(&p);
                    dirs.push((p, id));
                }
            }
            _ => {}
        }
    }
    let (Some(python), Some(version)) = (python, version) else {
        return Err(PlanError::FingerprintFailed {
            command: what,
            status: output.status,
            stderr: format!("unexpected probe output: {}", text.trim()),
        });
    };
    let mut dists = BTreeSet::new();
    let mut names = Vec::new();
    for (dir, _) in &dirs {
        names.push(list_distributions(dir, &mut dists));
    }
    let mut out = format!("python {python}\nversion {version}\n");
    for d in dists {
        out.push_str("distribution ");
        out.push_str(&d);
        out.push('\n');
    }
    // What each `sys.path` directory offers to import, in `sys.path` order, without its path:
    // a directory a `.pth` adds (`conda develop`, a hand-written one) or a module dropped into
    // site-packages, neither of them a distribution, changes what a test imports.
    // (An empty directory offers nothing: a venv of its own with no package is the same.)
    for digest in names.iter().flatten() {
        out.push_str(&format!("path {digest}\n"));
    }
    Ok((dirs, out.into_bytes()))
}

/// Add `name==version` for every distribution whose metadata is directly in `dir`; returns the
/// sha256 of the sorted names of its entries (`__pycache__` aside): which modules, packages and
/// `.pth` files it holds; `None` when it holds none.
fn list_distributions(dir: &Path, out: &mut BTreeSet<String>) -> Option<String> {
    use sha2::{Digest, Sha256};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Some("unreadable".to_owned());
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name != "__pycache__" {
            names.push(name.as_encoded_bytes().to_vec());
        }
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let metadata = if let Some(stem) = name.strip_suffix(".dist-info") {
            Some((stem, path.join("METADATA")))
        } else if let Some(stem) = name.strip_suffix(".egg-info") {
            // A directory holding PKG-INFO, or (distutils) the PKG-INFO file itself.
            let file = if path.is_dir() {
                path.join("PKG-INFO")
            } else {
                path.clone()
            };
            Some((stem, file))
        } else {
            None
        };
        let Some((stem, file)) = metadata else {
            continue;
        };
        let (name, version) = read_metadata(&file).unwrap_or_else(|| from_stem(stem));
        out.insert(format!("{}=={version}", normalize(&name)));
    }
    if names.is_empty() {
        return None;
    }
    names.sort();
    let mut h = Sha256::new();
    for n in &names {
        h.update(n);
        h.update(b"\0");
    }
    Some(hex::encode(h.finalize()))
}

/// `Name` and `Version` from the headers of a core metadata file.
fn read_metadata(file: &Path) -> Option<(String, String)> {
    use std::io::{BufRead as _, BufReader};
    let f = std::fs::File::open(file).ok()?;
    let (mut name, mut version) = (None, None);
    for line in BufReader::new(f).lines() {
        let line = line.ok()?;
        if line.is_empty() {
            break; // the headers end at the first empty line
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        }
        if name.is_some() && version.is_some() {
            break;
        }
    }
    Some((name?, version?))
}

/// `name-version[-pyX.Y]` from a metadata directory's name, when its file cannot be read.
fn from_stem(stem: &str) -> (String, String) {
    let mut parts = stem.splitn(3, '-');
    let name = parts.next().unwrap_or(stem).to_owned();
    let version = parts.next().unwrap_or("unknown").to_owned();
    (name, version)
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_` and `.` become one `-`.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters() {
        for w in [
            "python",
            "python3",
            "python3.11",
            ".venv/bin/python",
            "/usr/bin/python3",
        ] {
            assert!(is_interpreter(w), "{w}");
        }
        for w in [
            "pythonx",
            "python3.",
            "pytest",
            "py",
            "sh",
            "python3-config",
        ] {
            assert!(!is_interpreter(w), "{w}");
        }
        assert_eq!(command_interpreter("python3 -m pytest -q"), Some("python3"));
        assert_eq!(command_interpreter("make test"), None);
        for (command, interpreter) in [
            ("pytest -q", "pytest"),
            (".venv/bin/pytest tests", ".venv/bin/pytest"),
            ("PYTHONPATH=src python3 -m pytest", "python3"),
            ("env -u X A=1 python3.11 run.py", "python3.11"),
            ("cd src && python3 -m pytest", "python3"),
            ("make lint; exec py.test", "py.test"),
            ("(cd x; .venv/bin/python t.py)", ".venv/bin/python"),
        ] {
            assert_eq!(command_interpreter(command), Some(interpreter), "{command}");
        }
        assert_eq!(command_interpreter("echo python3"), None);
        assert_eq!(command_interpreter("cargo test -- pytest"), None);
    }

    #[test]
    fn names() {
        assert_eq!(normalize("Foo_Bar.baz"), "foo-bar-baz");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(
            from_stem("toolz-0.12.0-py3.11"),
            ("toolz".into(), "0.12.0".into())
        );
    }

    #[test]
    fn kept_record_checks_its_directories() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir(&site).unwrap();
        let rec = dir.path().join("rec");
        let dirs = vec![(site.clone(), identity(&site))];
        std::fs::write(&rec, render_kept(&dirs, b"python x\n")).unwrap();
        assert_eq!(read_kept(&rec).unwrap(), b"python x\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir(site.join("extra-1.0.dist-info")).unwrap();
        assert!(
            read_kept(&rec).is_none(),
            "a new distribution invalidates it"
        );
    }
}
