//! Hermetic real-git test repositories and a runner for the built `checkdef` binary.
//!
//! Every git and checkdef process gets `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`,
//! `HOME` inside the temp dir, pinned author/committer names and dates (so object ids are
//! stable), and none of the `GIT_DIR`-style variables a surrounding hook might have set.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Variables a git hook exports that would redirect git or gix to another repository.
const GIT_LOCATION_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_CEILING_DIRECTORIES",
    "GIT_PREFIX",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "CHECKDEF_CACHE_DIR",
];

/// Apply the hermetic environment to `cmd`.
pub fn hermetic(cmd: &mut Command, home: &Path) {
    for v in GIT_LOCATION_VARS {
        cmd.env_remove(v);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", home)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.invalid")
        .env("GIT_AUTHOR_DATE", "2005-04-07T22:13:13 +0000")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.invalid")
        .env("GIT_COMMITTER_DATE", "2005-04-07T22:13:13 +0000")
        .env("LC_ALL", "C");
}

/// A temporary directory holding a git repository at `root`, a `home` and a cache directory.
pub struct TestRepo {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub cache: PathBuf,
}

impl TestRepo {
    /// `git init -b main` in a fresh temp dir (SHA-1).
    pub fn new() -> TestRepo {
        Self::with_init_args(&[])
    }

    /// A SHA-256 repository.
    pub fn sha256() -> TestRepo {
        Self::with_init_args(&["--object-format=sha256"])
    }

    /// A repository whose root directory is called `name` (any bytes but `/` and NUL).
    pub fn named(name: &std::ffi::OsStr) -> TestRepo {
        Self::init(name, &[])
    }

    fn with_init_args(extra: &[&str]) -> TestRepo {
        Self::init(std::ffi::OsStr::new("repo"), extra)
    }

    fn init(name: &std::ffi::OsStr, extra: &[&str]) -> TestRepo {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join(name);
        let home = tmp.path().join("home");
        let cache = tmp.path().join("cache");
        for d in [&root, &home, &cache] {
            std::fs::create_dir_all(d).unwrap();
        }
        let repo = TestRepo {
            tmp,
            root,
            home,
            cache,
        };
        let mut args = vec!["init", "-q", "-b", "main"];
        args.extend_from_slice(extra);
        repo.git(&args);
        repo
    }

    /// Run git in the repository root; panics with its stderr when it fails. Returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args)
    }

    /// Run git in `dir`.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(dir);
        hermetic(&mut cmd, &self.home);
        let out = cmd.output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Write a file (creating parent directories).
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    pub fn rename(&self, from: &str, to: &str) {
        let to = self.path(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(self.path(from), to).unwrap();
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// `git add -A && git commit`; returns the new commit id.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// `git clone` of the repository into `name` beside it; its path.
    pub fn clone_to(&self, name: &str) -> PathBuf {
        let clone = self.tmp.path().join(name);
        self.git(&[
            "clone",
            "-q",
            self.root.to_str().unwrap(),
            clone.to_str().unwrap(),
        ]);
        clone
    }

    /// Run the built binary in the repository root.
    pub fn checkdef(&self, args: &[&str]) -> Output {
        self.checkdef_in(&self.root, args)
    }

    /// Run the built binary in `dir` with the hermetic environment and this repo's cache dir.
    pub fn checkdef_in(&self, dir: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_checkdef"));
        cmd.args(args).current_dir(dir);
        hermetic(&mut cmd, &self.home);
        cmd.env("CHECKDEF_CACHE_DIR", &self.cache);
        cmd.output().expect("run checkdef")
    }

    /// `checkdef plan --json <args>` run in `dir`, which must succeed.
    pub fn plan_json_in(&self, dir: &Path, args: &[&str]) -> Value {
        let mut full = vec!["plan", "--json"];
        full.extend_from_slice(args);
        let out = self.checkdef_in(dir, &full);
        assert!(
            out.status.success(),
            "checkdef {full:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad json ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn plan_json(&self, args: &[&str]) -> Value {
        self.plan_json_in(&self.root, args)
    }

    /// Input hash of `segment` from `checkdef plan --json <args>`.
    pub fn hash(&self, segment: &str, args: &[&str]) -> String {
        segment_field(&self.plan_json(args), segment, "input_hash")
    }

    /// Input hashes of all segments, by name, from `checkdef plan --json <args>`.
    pub fn hashes(&self, args: &[&str]) -> Vec<(String, String)> {
        let v = self.plan_json(args);
        v["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_owned(),
                    s["input_hash"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// `checkdef explain SEGMENT <args>` stdout.
    pub fn explain(&self, segment: &str, args: &[&str]) -> String {
        let mut full = vec!["explain", segment];
        full.extend_from_slice(args);
        let out = self.checkdef(&full);
        assert!(
            out.status.success(),
            "explain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Set a file's modification time far in the past (so git's index entry is not racy).
    pub fn age(&self, rel: &str) {
        let f = std::fs::File::options()
            .write(true)
            .open(self.path(rel))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
            .unwrap();
    }
}

/// `field` of the segment named `name` in a plan JSON document.
pub fn segment_field(plan: &Value, name: &str, field: &str) -> String {
    let seg = plan["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no segment {name} in {plan}"));
    match &seg[field] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The two-segment Python layout of the seed demo, with a config; not committed.
pub fn seed_layout(repo: &TestRepo) {
    repo.write("src/foo/__init__.py", "FOO = 1\n")
        .write("src/bar/__init__.py", "BAR = 1\n")
        .write("tests/test_foo.py", "def test_foo(): pass\n")
        .write("tests/test_bar.py", "def test_bar(): pass\n")
        .write("pytest.ini", "[pytest]\n")
        .write("README.md", "readme\n")
        .write(".gitignore", "__pycache__/\n*.log\n")
        .write("checkdef.toml", SEED_CONFIG);
}

pub const SEED_CONFIG: &str = r#"version = 1

[defaults]
include = ["pytest.ini"]
env = { PYTHONPATH = "src" }

[[segment]]
name = "foo-tests"
include = ["src/foo/**", "tests/test_foo.py"]
command = "python3 -m pytest -q tests/test_foo.py"

[[segment]]
name = "bar-tests"
include = ["src/bar/**", "tests/test_bar.py"]
command = "python3 -m pytest -q tests/test_bar.py"
"#;

// ---------------------------------------------------------------------------------------------
// Running `checkdef run`, pushes and caches (used by the run, prepush and teammate tests).

/// Remove every `CHECKDEF_*` variable `cmd` would inherit from the test process.
pub fn clear_checkdef_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("CHECKDEF_")) {
            cmd.env_remove(k);
        }
    }
}

/// The outcome of one `checkdef` (or `git`) invocation: exit code, stdout (also parsed as JSON
/// when it is one JSON document, else `Null`) and stderr.
#[derive(Debug)]
pub struct CmdOut {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn from_output(out: Output) -> CmdOut {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // `Null` unless stdout is one JSON document (`--json`); `seg` then shows what it was.
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        CmdOut {
            code: out.status.code().unwrap_or(-1),
            json,
            stdout,
            stderr,
        }
    }

    /// The `--json` entry of segment `name`.
    pub fn seg(&self, name: &str) -> &Value {
        self.json["segments"]
            .as_array()
            .unwrap_or_else(|| {
                panic!(
                    "no segments in stdout:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no segment {name} in {}", self.json))
    }

    /// `source` of segment `name`: `run`, `local` or `remote`.
    pub fn source(&self, name: &str) -> &str {
        self.seg(name)["source"].as_str().unwrap()
    }

    /// `status` of segment `name`: `passed` or `failed`.
    pub fn status(&self, name: &str) -> &str {
        self.seg(name)["status"].as_str().unwrap()
    }

    /// `(name, source)` of every segment, in order.
    pub fn sources(&self) -> Vec<(String, String)> {
        self.json["segments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["name"].as_str().unwrap().to_owned(),
                            s["source"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Panic with everything printed unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl TestRepo {
    /// The built `checkdef` in `dir`: hermetic environment, no inherited `CHECKDEF_*` variable,
    /// this repository's private cache directory. Not yet spawned.
    pub fn checkdef_cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_checkdef"));
        cmd.args(args).current_dir(dir);
        hermetic(&mut cmd, &self.home);
        clear_checkdef_env(&mut cmd);
        cmd.env("CHECKDEF_CACHE_DIR", &self.cache);
        cmd
    }

    /// `checkdef ARGS` in the repository root with extra variables.
    pub fn checkdef_env(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut cmd = self.checkdef_cmd_in(&self.root, args);
        cmd.envs(env.iter().copied());
        CmdOut::from_output(cmd.output().expect("run checkdef"))
    }

    /// `checkdef run --json ARGS` in the repository root with extra variables.
    pub fn run_json(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        self.checkdef_env(&full, env)
    }

    /// A hermetic `git ARGS` in `dir` (not yet spawned) whose hooks see this repository's cache
    /// and no inherited `CHECKDEF_*` variable.
    pub fn git_cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(dir);
        hermetic(&mut cmd, &self.home);
        clear_checkdef_env(&mut cmd);
        cmd.env("CHECKDEF_CACHE_DIR", &self.cache);
        cmd
    }

    /// `git ARGS` in the repository root, returning its output whatever the exit status
    /// (for pushes that a hook may block).
    pub fn git_out(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut cmd = self.git_cmd_in(&self.root, args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run git");
        CmdOut {
            code: out.status.code().unwrap_or(-1),
            json: Value::Null,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A bare repository `<tmp>/<name>.git` added as remote `remote` of this repository.
    pub fn add_bare_remote(&self, remote: &str, name: &str) -> PathBuf {
        let bare = self.tmp.path().join(format!("{name}.git"));
        let s = bare.to_str().unwrap();
        self.git_in(self.tmp.path(), &["init", "-q", "--bare", "-b", "main", s]);
        self.git(&["remote", "add", remote, s]);
        bare
    }

    /// The narinfo files in the local cache directory.
    pub fn cached_narinfos(&self) -> Vec<PathBuf> {
        narinfos_in(&self.cache)
    }
}

/// The `*.narinfo` files directly in `dir` (a binary cache root).
pub fn narinfos_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "narinfo"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `git rev-parse REV` in a (bare) repository `dir`, or `None` when it does not resolve.
pub fn rev_parse_in(dir: &Path, rev: &str) -> Option<String> {
    let mut cmd = Command::new("git");
    cmd.args(["rev-parse", "--verify", "-q", rev])
        .current_dir(dir);
    hermetic(&mut cmd, dir);
    let out = cmd.output().expect("run git rev-parse");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// The seed demo with real pytest: packages `src/foo` and `src/bar`, tests that import them,
/// `pytest.ini` with `pythonpath = src`, and one segment per package (not committed).
pub fn pytest_layout(repo: &TestRepo) {
    repo.write("src/foo/__init__.py", "NAME = \"foo\"\n")
        .write("src/bar/__init__.py", "NAME = \"bar\"\n")
        .write(
            "tests/test_foo.py",
            "import foo\n\n\ndef test_foo():\n    assert foo.NAME == \"foo\"\n",
        )
        .write(
            "tests/test_bar.py",
            "import bar\n\n\ndef test_bar():\n    assert bar.NAME == \"bar\"\n",
        )
        .write("pytest.ini", "[pytest]\npythonpath = src\n")
        .write(".gitignore", "__pycache__/\n.pytest_cache/\n")
        .write("checkdef.toml", PYTEST_CONFIG);
}

pub const PYTEST_CONFIG: &str = r#"version = 1

[defaults]
include = ["pytest.ini"]

[[segment]]
name = "foo-tests"
include = ["src/foo/**", "tests/test_foo.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_foo.py"

[[segment]]
name = "bar-tests"
include = ["src/bar/**", "tests/test_bar.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_bar.py"
"#;

/// A fast shell-only layout: segments `foo` and `bar` pass while `src/<name>/value` reads `ok`
/// (not committed).
pub fn shell_layout(repo: &TestRepo) {
    repo.write("src/foo/value", "ok\n")
        .write("src/bar/value", "ok\n")
        .write("README.md", "readme\n")
        .write("checkdef.toml", SHELL_CONFIG);
}

pub const SHELL_CONFIG: &str = r#"version = 1

[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "echo checking foo; grep -qx ok src/foo/value"

[[segment]]
name = "bar"
include = ["src/bar/**"]
command = "echo checking bar; grep -qx ok src/bar/value"
"#;

impl TestRepo {
    /// `checkdef ARGS` in the repository root with extra variables, stdout kept as text (not
    /// parsed as JSON): for commands whose stdout is a manifest, a key or a script.
    pub fn checkdef_text(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut cmd = self.checkdef_cmd_in(&self.root, args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run checkdef");
        CmdOut {
            code: out.status.code().unwrap_or(-1),
            json: Value::Null,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Write `content` to `path` (creating its directory) as an executable file.
pub fn write_executable(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A venv at `dir` on the system's packages (pytest included) whose site-packages holds a `.pth`
/// file with `pth` (an editable install's line, or an `import` line); returns its `bin/`.
pub fn venv_with_pth(dir: &Path, pth: &str) -> PathBuf {
    let st = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip", "--system-site-packages"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "python3 -m venv failed");
    std::fs::write(
        venv_site_packages(dir).join("__editable__.foo-0.1.pth"),
        pth,
    )
    .unwrap();
    dir.join("bin")
}

/// The `site-packages` directory of the venv at `dir` (`lib/pythonX.Y/site-packages`).
pub fn venv_site_packages(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages")
}
