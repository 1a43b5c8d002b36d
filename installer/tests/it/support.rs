//! Hermetic real-git test repositories: no system or global config, `HOME` inside the temp dir,
//! pinned author/committer names and dates, and no `GIT_*` variables leaking in from a hook that
//! may be running these tests.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use installer::{Git, HookLocation};
use tempfile::TempDir;

const LEAKY_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CEILING_DIRECTORIES",
    "GIT_PREFIX",
];

pub struct Sandbox {
    pub tmp: TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("temp dir");
        let s = Sandbox { tmp };
        fs::create_dir_all(s.home()).unwrap();
        s
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GIT_CONFIG_NOSYSTEM", "1".into()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".into()),
            ("HOME", self.home().display().to_string()),
            ("GIT_AUTHOR_NAME", "Test Author".into()),
            ("GIT_AUTHOR_EMAIL", "author@example.invalid".into()),
            ("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z".into()),
            ("GIT_COMMITTER_NAME", "Test Committer".into()),
            ("GIT_COMMITTER_EMAIL", "committer@example.invalid".into()),
            ("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z".into()),
            ("LC_ALL", "C".into()),
        ]
    }

    /// A `git` command in `dir` with the hermetic environment.
    pub fn git_cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        for v in LEAKY_VARS {
            cmd.env_remove(v);
        }
        for (k, v) in self.envs() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run git and return its trimmed stdout; panic with stderr on failure.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_cmd(dir, args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    /// The installer's `Git` with the same environment.
    pub fn locator(&self) -> Git {
        let mut g = Git::new();
        for v in LEAKY_VARS {
            g = g.env_remove(*v);
        }
        for (k, v) in self.envs() {
            g = g.env(k, v);
        }
        g
    }

    pub fn locate(&self, dir: &Path) -> HookLocation {
        self.locator().locate(dir).expect("locate")
    }

    /// A new repository `name` with branch `main` and one commit.
    pub fn repo(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        self.git(&dir, &["init", "-q", "-b", "main"]);
        fs::write(dir.join("README"), "hello\n").unwrap();
        self.git(&dir, &["add", "README"]);
        self.git(&dir, &["commit", "-q", "-m", "initial"]);
        dir.canonicalize().unwrap()
    }

    /// A bare repository `name`, added to `repo` as remote `origin`.
    pub fn remote(&self, repo: &Path, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        self.git(
            self.path(),
            &["init", "-q", "--bare", "-b", "main", dir.to_str().unwrap()],
        );
        self.git(repo, &["remote", "add", "origin", dir.to_str().unwrap()]);
        dir
    }

    /// A fake checkdef binary that records its arguments and stdin under `<dir>/checkdef.*`
    /// and exits with the number in `<dir>/checkdef.exit` (0 when absent).
    pub fn fake_checkdef(&self) -> Fake {
        let dir = self.path().join("fake-checkdef");
        fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("checkdef");
        recording_script(&exe, &dir, "checkdef");
        Fake { dir, exe }
    }
}

/// A recording script: appends to nothing, overwrites `<out>/<name>.args` (one argument a line)
/// and `<out>/<name>.stdin`, and exits with the content of `<out>/<name>.exit` (default 0).
pub fn recording_script(path: &Path, out: &Path, name: &str) {
    let o = out.display();
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{o}/{name}.args'\ncat > '{o}/{name}.stdin'\n\
         code=0\n[ -f '{o}/{name}.exit' ] && code=$(cat '{o}/{name}.exit')\nexit \"$code\"\n"
    );
    write_exec(path, script.as_bytes(), 0o755);
}

pub struct Fake {
    pub dir: PathBuf,
    pub exe: PathBuf,
}

impl Fake {
    pub fn args(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(format!("{name}.args"))).ok()
    }

    pub fn stdin(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.dir.join(format!("{name}.stdin"))).ok()
    }

    pub fn set_exit(&self, name: &str, code: i32) {
        fs::write(self.dir.join(format!("{name}.exit")), code.to_string()).unwrap();
    }

    pub fn clear(&self) {
        for entry in fs::read_dir(&self.dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some() {
                fs::remove_file(p).unwrap();
            }
        }
    }
}

pub fn write_exec(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let mut f = fs::File::create(path).unwrap();
    f.write_all(content).unwrap();
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every entry under `dir`: relative path → (kind and bytes or link target, mode).
pub type Snapshot = BTreeMap<PathBuf, (String, Vec<u8>, u32)>;

pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let m = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap();
            out.insert(
                rel,
                (
                    "link".into(),
                    target.into_os_string().into_encoded_bytes(),
                    0,
                ),
            );
        } else if meta.is_dir() {
            out.insert(rel, ("dir".into(), Vec::new(), m));
            walk(root, &path, out);
        } else {
            out.insert(rel, ("file".into(), fs::read(&path).unwrap(), m));
        }
    }
}

/// Run a hook script with `sh`, giving it `args` and exactly `stdin`.
pub fn run_hook(hook: &Path, args: &[&str], stdin: &[u8], path_env: Option<&str>) -> Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(hook)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("spawn sh");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The options the tests install with.
pub fn opts(fake: &Fake, force: bool) -> installer::InstallOptions {
    installer::InstallOptions {
        checkdef_exe: fake.exe.clone(),
        force,
        global: false,
    }
}
