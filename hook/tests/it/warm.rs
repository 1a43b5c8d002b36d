//! The warm pytest runner against real pytest: the same segments run with `runner = "process"`
//! and with the warm runner must give the same verdicts, exit codes and (normalised) logs; every
//! doubt must fall back to a fresh process, silently correct.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::run::have_pytest;
use crate::support::{CmdOut, TestRepo};

/// A PATH whose first entry holds the interpreter itself (not a pyenv-style shim, which is never
/// run warm), so that `python3 -m pytest` is eligible.
fn interpreter_path() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    let exe = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let dir = exe.parent().expect("interpreter directory");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `checkdef run --json -v` with this PATH and a cache of its own (so nothing is a hit).
fn run(repo: &TestRepo, path: &str, cache: &str, extra: &[&str]) -> CmdOut {
    let cache = repo.tmp.path().join(cache);
    let mut args = vec!["run", "--json", "-v"];
    args.extend_from_slice(extra);
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &args);
    cmd.env("PATH", path).env("CHECKDEF_CACHE_DIR", &cache);
    CmdOut::from_output(cmd.output().expect("run checkdef"))
}

/// `cmd` (a wrapper: `unshare …`, an interpreter that sets something up) running `inner` (a
/// `checkdef` command of a TestRepo) as its last arguments, with `inner`'s environment.
fn run_under(cmd: &mut Command, inner: &Command) {
    cmd.arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}

/// Each segment's live log lines (`NAME │ line`), with what legitimately differs between two
/// runs replaced: sandbox directories and durations.
fn logs(out: &CmdOut) -> BTreeMap<String, Vec<String>> {
    let mut by_seg: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.stderr.lines() {
        if let Some((name, text)) = line.split_once(" │ ")
            && !text.starts_with("unshared ")
        {
            by_seg
                .entry(name.trim().to_owned())
                .or_default()
                .push(normalise(text));
        }
    }
    by_seg
}

fn normalise(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    // /tmp/checkdef-<segment>-XXXXXX → <sandbox>
    while let Some(i) = rest.find("/checkdef-") {
        let start = rest[..i].rfind([' ', '\'', '"', '(']);
        let start = start.map_or(0, |s| s + 1);
        out.push_str(&rest[..start]);
        let tail = &rest[i + "/checkdef-".len()..];
        let end = tail.find(['/', ' ', '\'', '"', ')']).unwrap_or(tail.len());
        out.push_str("<sandbox>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    // "in 0.12s" → "in <t>"
    let words: Vec<String> = out
        .split(' ')
        .map(|w| {
            let t = w.trim_end_matches([',', ')']);
            let secs = t
                .strip_suffix('s')
                .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok());
            if secs { "<t>".to_owned() } else { w.to_owned() }
        })
        .collect();
    words.join(" ")
}

const PROBE: &str = r#"import os, sys, signal, tempfile

def test_configuration(pytestconfig):
    params = pytestconfig.invocation_params
    print("invocation", params.args, params.plugins, params.dir == __import__("pathlib").Path.cwd())
    print("prog", pytestconfig._parser.prog, "cache_dir", pytestconfig.getini("cache_dir"))
    print("options", len(vars(pytestconfig.option)), pytestconfig.getoption("capture"))


def test_probe():
    import __main__
    print("cwd", os.getcwd())
    print("path", sys.path)
    print("argv", sys.argv)
    print("orig_argv", sys.orig_argv)
    print("executable", sys.executable)
    print("env", sorted(os.environ.items()))
    print("tempdir", tempfile.gettempdir())
    # Where the runners legitimately differ: `sh -c` leads the process group in process mode
    # (and dash leaves descriptors 10 and 251 open in its child); a warm child leads its own.
    print("unshared", "pgid", os.getpgid(0) == os.getpid(), "fds", sorted(os.listdir("/proc/self/fd"), key=int))
    print("stdin", os.readlink("/proc/self/fd/0"))
    print("main", getattr(__main__, "__file__", None), getattr(getattr(__main__, "__spec__", None), "name", None))
    print("flags", sys.flags)
    print("signals", [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD, signal.SIGTERM)])
    print("umask", os.umask(0o22))
    # What the standard streams were made on (Python caches seekable() and the buffer size),
    # and the signals a process the test starts inherits as ignored.
    print("stdio", [(s.seekable(), s.isatty(), s.line_buffering, s.encoding, s.errors, s.buffer.raw.seekable(), getattr(s.buffer, "_CHUNK_SIZE", None)) for s in (sys.__stdin__, sys.__stdout__, sys.__stderr__)])
    print("ignored", [l.split()[1] for l in open("/proc/self/status") if l.startswith("SigIgn")])
    print("json-polluted", hasattr(__import__("json"), "POLLUTED"))
    # The server hands its objects to the collector's permanent generation before it forks:
    # the check's own garbage must still be collected as in a fresh process.
    import gc, weakref
    class Node:
        pass
    node = Node()
    node.me = node
    alive = weakref.ref(node)
    del node
    gc.collect()
    print("gc", gc.isenabled(), "cycle-collected", alive() is None)
"#;

const CHILDREN: &str = r#"import multiprocessing, os, subprocess, sys

def square(x):
    return x * x

def test_subprocess():
    out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"

def test_fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7

def test_spawn_pool():
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(square, [1, 2, 3]) == [1, 4, 9]
"#;

fn side_by_side_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "pytest.ini",
        "[pytest]\npythonpath = src\naddopts = -p no:cacheprovider\n",
    )
    .write("src/pkg/__init__.py", "VALUE = 3\n")
    .write(
        "tests/conftest.py",
        "import pytest\n\n\n@pytest.fixture\ndef answer():\n    return 42\n",
    )
    .write(
        "tests/test_pass.py",
        "import pkg\n\n\ndef test_pkg():\n    assert pkg.VALUE == 3\n\n\ndef test_fixture(answer):\n    assert answer == 42\n",
    )
    .write(
        "tests/test_fail.py",
        "def test_fails():\n    assert [1, 2] == [1, 3]\n\n\ndef test_ok():\n    pass\n",
    )
    .write("tests/test_collect.py", "import no_such_module_here\n")
    .write("tests/test_none.py", "X = 1\n")
    .write(
        "tests/test_tmp.py",
        "def test_tmp(tmp_path):\n    p = tmp_path / 'f.txt'\n    p.write_text('hi')\n    print('tmp', p)\n    assert p.read_text() == 'hi'\n",
    )
    .write("tests/test_children.py", CHILDREN)
    .write(
        "tests/test_pollute.py",
        "import json\n\n\ndef test_pollute():\n    json.POLLUTED = True\n",
    )
    .write("tests/test_probe.py", PROBE)
    // Module teardown at interpreter shutdown: one object says so, another crashes there (a C
    // extension that crashes at exit: pytest has said `1 passed`, the process dies of SIGSEGV).
    .write(
        "tests/test_teardown.py",
        "import os\n\n\nclass Says:\n    def __del__(self, write=os.write):\n        write(1, b'torn down\\n')\n\n\nHELD = Says()\n\n\ndef test_ok():\n    pass\n",
    )
    // The same through the module's globals, as a fresh interpreter still has them then.
    .write(
        "tests/test_exit_at_teardown.py",
        "import os\n\n\nclass Ends:\n    def __del__(self):\n        os.write(2, b'ending\\n')\n        os._exit(7)\n\n\nHELD = Ends()\n\n\ndef test_ok():\n    pass\n",
    )
    .write(
        "tests/test_crash_at_exit.py",
        "import os\nimport signal\n\n\nclass Native:\n    def __del__(self, kill=os.kill, pid=os.getpid, sig=signal.SIGSEGV):\n        kill(pid(), sig)\n\n\nHANDLE = Native()\n\n\ndef test_ok():\n    pass\n",
    )
    .write(
        "checkdef.toml",
        r#"version = 1

[defaults]
include = ["src/**"]

[[segment]]
name = "pass"
tests = ["tests/test_pass.py"]

[[segment]]
name = "fail"
tests = ["tests/test_fail.py"]

[[segment]]
name = "collect-error"
tests = ["tests/test_collect.py"]

[[segment]]
name = "no-tests"
tests = ["tests/test_none.py"]

[[segment]]
name = "tmp-path"
include = ["pytest.ini", "tests/conftest.py", "tests/test_tmp.py"]
command = "python3 -m pytest -s tests/test_tmp.py"

[[segment]]
name = "children"
tests = ["tests/test_children.py"]

[[segment]]
name = "pollute"
tests = ["tests/test_pollute.py"]

[[segment]]
name = "probe-module"
include = ["pytest.ini", "tests/conftest.py", "tests/test_probe.py"]
command = "python3 -m pytest -s -q tests/test_probe.py"

[[segment]]
name = "probe-script"
include = ["pytest.ini", "tests/conftest.py", "tests/test_probe.py"]
command = "pytest -s -q tests/test_probe.py"

[[segment]]
name = "teardown"
tests = ["tests/test_teardown.py"]

[[segment]]
name = "crash-at-exit"
tests = ["tests/test_crash_at_exit.py"]

[[segment]]
name = "exit-at-teardown"
tests = ["tests/test_exit_at_teardown.py"]
"#,
    );
    repo.commit("side by side");
    repo
}

/// Set `runner` in `[defaults]` of the committed checkdef.toml (work-tree run: uncommitted is fine).
fn set_runner(repo: &TestRepo, runner: &str) {
    let text = std::fs::read_to_string(repo.path("checkdef.toml")).unwrap();
    let text = text.replace(
        "[defaults]\n",
        &format!("[defaults]\nrunner = \"{runner}\"\n"),
    );
    std::fs::write(repo.path("checkdef.toml"), text).unwrap();
}

/// One segment, `one`, with one passing test.
fn one_test_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_one.py", "def test_one():\n    pass\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"one\"\ntests = [\"tests/test_one.py\"]\n",
        );
    repo.commit("one test");
    repo
}

#[test]
fn warm_and_process_runners_give_the_same_verdicts_and_logs() {
    if !have_pytest() {
        return;
    }
    let repo = side_by_side_repo();
    let path = interpreter_path();
    let warm = run(&repo, &path, "cache-warm", &[]);
    repo.git(&["checkout", "--", "checkdef.toml"]);
    set_runner(&repo, "process");
    let fresh = run(&repo, &path, "cache-process", &[]);

    let expected = [
        ("pass", "passed", 0),
        ("fail", "failed", 1),
        ("collect-error", "failed", 2),
        ("no-tests", "failed", 5),
        ("tmp-path", "passed", 0),
        ("children", "passed", 0),
        ("pollute", "passed", 0),
        ("probe-module", "passed", 0),
        ("teardown", "passed", 0),
        // Was a wrong PASS from outside trial 8: the warm child ended without the
        // interpreter's finalisation.
        ("crash-at-exit", "failed", 139),
        // Also from outside trial 9: the server held the session's configuration, and through
        // it the test module, which lost its globals before its object's `__del__` ran.
        ("exit-at-teardown", "failed", 7),
    ];
    for (name, status, code) in expected {
        for (out, runner) in [(&warm, "warm"), (&fresh, "process")] {
            let s = out.seg(name);
            assert_eq!(s["status"], status, "{name} ({runner}): {}", out.stderr);
            assert_eq!(s["exit_code"], code, "{name} ({runner}): {}", out.stderr);
            assert_eq!(s["runner"], runner, "{name}: {}", s["runner_note"]);
        }
    }
    // `pytest` is a console script: warm when its #! line names an interpreter binary.
    assert_eq!(
        warm.seg("probe-script")["status"],
        "passed",
        "{}",
        warm.stderr
    );
    assert_eq!(fresh.seg("probe-script")["status"], "passed");
    assert_eq!(warm.code, 1);
    assert_eq!(fresh.code, 1);

    let (w, f) = (logs(&warm), logs(&fresh));
    assert_eq!(
        w.keys().collect::<Vec<_>>(),
        f.keys().collect::<Vec<_>>(),
        "segments with logs"
    );
    for (name, fresh_lines) in &f {
        assert_eq!(&w[name], fresh_lines, "log of {name}, warm vs process");
    }
    // The probe saw what it should: not only the same, but right.
    assert!(
        w["teardown"].iter().any(|l| l == "torn down"),
        "{:?}",
        w["teardown"]
    );
    let probe = w["probe-module"].join("\n");
    assert!(probe.contains("json-polluted False"), "{probe}");
    assert!(probe.contains("stdin /dev/null"), "{probe}");
    assert!(probe.contains("gc True cycle-collected True"), "{probe}");
    // The check starts in the view, mounted at the repository's own path.
    let root = repo.root.canonicalize().unwrap();
    assert!(
        probe.contains(&format!("cwd {}\n", root.display())),
        "{probe}"
    );
    // A warm child is in the group its holder leads (as a fresh check's shell is in the group
    // its sandbox entry leads) and holds the descriptors a fresh check holds (stdio, pytest's
    // own, the probe's directory listing, and whatever checkdef itself was started with):
    // nothing of the server.
    let fds = |out: &CmdOut| {
        let line = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("probe-module"))
            .find_map(|l| l.split_once("unshared pgid False fds "))
            .map(|(_, fds)| fds.to_owned());
        line.unwrap_or_else(|| panic!("no descriptor line: {}", out.stderr))
    };
    let warm_fds = fds(&warm);
    assert!(
        warm_fds.starts_with("['0', '1', '2', '3', '4', '5'"),
        "{warm_fds}"
    );
    assert_eq!(warm_fds, fds(&fresh));
}

/// A top-level name in the check's directory that would shadow a module the server imported,
/// a shim with a version file near, a non-plain command, `runner = "process"`: all run fresh
/// (and pass).
#[test]
fn doubts_run_in_a_fresh_process() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    let shim_dir = repo.tmp.path().join("shims");
    std::fs::create_dir(&shim_dir).unwrap();
    let shim = shim_dir.join("python3");
    let real = path.split(':').next().unwrap();
    crate::support::write_executable(&shim, &format!("#!/bin/sh\nexec {real}/python3 \"$@\"\n"));
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_a.py", "def test_a():\n    pass\n")
        // A namespace portion named like a module pytest imports: it shadows nothing.
        .write(
            "email/notes.txt",
            "a directory named like a module pytest imports\n",
        );
    let text = r#"version = 1

[[segment]]
name = "shadow"
include = ["pytest.ini", "tests/**", "email/**"]
command = "python3 -m pytest tests"

[[segment]]
name = "not-plain"
include = ["pytest.ini", "tests/**"]
command = "python3 -m pytest tests && true"

[[segment]]
name = "opted-out"
include = ["pytest.ini", "tests/**"]
command = "python3 -m pytest tests"
runner = "process"

[[segment]]
name = "warm"
include = ["pytest.ini", "tests/**"]
command = "python3 -m pytest tests"
"#;
    repo.write("checkdef.toml", text);
    repo.commit("doubts");
    let out = run(&repo, &path, "cache-1", &[]);
    out.expect_code(0);
    assert_eq!(out.seg("shadow")["runner"], "warm", "{}", out.seg("shadow"));
    for (name, why) in [
        ("not-plain", "not a plain word list"),
        ("opted-out", "runner = \"process\""),
    ] {
        let s = out.seg(name);
        assert_eq!(s["status"], "passed", "{name}");
        assert_eq!(s["runner"], "process", "{name}");
        let note = s["runner_note"].as_str().unwrap_or_default();
        assert!(note.contains(why), "{name}: {note}");
    }
    assert_eq!(out.seg("warm")["runner"], "warm", "{}", out.seg("warm"));

    // The same repository with a shim first on PATH runs warm, through the shim ...
    let shimmed = format!("{}:{path}", shim_dir.display());
    let out = run(&repo, &shimmed, "cache-2", &["-s", "warm"]);
    out.expect_code(0);
    assert_eq!(out.seg("warm")["runner"], "warm", "{}", out.seg("warm"));
    // ... but not when a version file (untracked, so not in the view) could make the shim
    // pick one interpreter for the server and another for the check.
    repo.write(".python-version", "3.0.0\n");
    let out = run(&repo, &shimmed, "cache-2", &["-s", "warm", "--force"]);
    out.expect_code(0);
    let s = out.seg("warm");
    assert_eq!(s["runner"], "process");
    assert!(
        s["runner_note"]
            .as_str()
            .unwrap_or_default()
            .contains(".python-version could pick another interpreter for the warm server"),
        "{s}"
    );
    // And the human output says so, with what to change (it would be slow without a word).
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "-s", "warm", "--force"]);
    cmd.env("PATH", &shimmed)
        .env("CHECKDEF_CACHE_DIR", repo.tmp.path().join("cache-2"));
    let human = CmdOut::from_output(cmd.output().unwrap());
    human.expect_code(0);
    assert!(
        human
            .stderr
            .contains("note: 1 check ran in fresh processes, not in the warm pytest runner: ")
            && human
                .stderr
                .contains("hint: put the interpreter's own directory first on PATH"),
        "{}",
        human.stderr
    );

    std::fs::remove_file(repo.path(".python-version")).unwrap();
    // A regular package of that name would shadow it: a fresh process (in every segment, as
    // the view shows every segment the whole tree).
    repo.write("email/__init__.py", "SHADOW = True\n");
    repo.commit("a package named email");
    let out = run(&repo, &path, "cache-1b", &["-s", "shadow"]);
    // As under plain pytest, that package breaks pytest itself.
    out.expect_code(1);
    let s = out.seg("shadow");
    assert_eq!(s["runner"], "process", "{s}");
    let note = s["runner_note"].as_str().unwrap_or_default();
    assert!(note.contains("would shadow the module email"), "{note}");
}

/// What a session imports only once it runs (pdb and the modules pdb imports, for pytest's
/// debugging plugin) is no module of the server's in a child: a repository module of one of
/// those names is what the child's pdb imports, as a fresh session's does.
#[test]
fn a_repository_module_named_like_one_a_session_imports_later_is_the_one_it_gets() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        // pdb subclasses cmd.Cmd: the repository's own must do for it.
        .write("cmd.py", "MINE = True\n\n\nclass Cmd:\n    pass\n")
        .write(
            "tests/test_cmd.py",
            "import cmd\n\n\ndef test_the_repository_s_cmd():\n    assert getattr(cmd, 'MINE', False), cmd.__file__\n",
        )
        .write(
            "checkdef.toml",
            r#"version = 1

[[segment]]
name = "cmd"
include = ["pytest.ini", "cmd.py", "tests/**"]
command = "python3 -m pytest tests"
"#,
        );
    repo.commit("a module named cmd");
    let out = run(&repo, &path, "cache", &[]);
    out.expect_code(0);
    let s = out.seg("cmd");
    // Warm, and pdb (which pytest imports once the session runs) found the repository's `cmd`,
    // as in a fresh session: the server holds no module a fresh session imports only later.
    assert_eq!(s["status"], "passed", "{s}");
    assert_eq!(s["runner"], "warm", "{s}");
}

/// A check that kills its warm server: the check is rerun in a fresh process (and passes there),
/// and the next check gets a new server.
#[test]
fn a_dead_server_means_a_fresh_rerun_and_a_new_server() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_kill.py",
            "import os, signal\n\n\ndef test_kill_the_server():\n    with open(f'/proc/{os.getppid()}/cmdline', 'rb') as f:\n        parent = f.read()\n    if b'server.py' in parent:\n        os.kill(os.getppid(), signal.SIGKILL)\n        signal.pause()\n",
        )
        .write("tests/test_after.py", "def test_after():\n    pass\n")
        .write(
            "checkdef.toml",
            r#"version = 1

[[segment]]
name = "killer"
include = ["pytest.ini", "tests/test_kill.py"]
command = "python3 -m pytest tests/test_kill.py"

[[segment]]
name = "after"
include = ["pytest.ini", "tests/test_after.py"]
command = "python3 -m pytest tests/test_after.py"
"#,
        );
    repo.commit("killer");
    let out = run(&repo, &interpreter_path(), "cache", &["-j", "1"]);
    out.expect_code(0);
    let k = out.seg("killer");
    assert_eq!(k["status"], "passed", "{}", out.stderr);
    assert_eq!(k["runner"], "process");
    assert!(
        k["runner_note"]
            .as_str()
            .unwrap_or_default()
            .contains("died"),
        "{k}"
    );
    assert_eq!(out.seg("after")["runner"], "warm", "{}", out.seg("after"));
}

#[test]
fn the_normaliser_only_hides_sandboxes_and_durations() {
    assert_eq!(
        normalise("rootdir: /tmp/checkdef-a.b-XyZ123/src and 1 passed in 0.12s"),
        "rootdir: <sandbox>/src and 1 passed in <t>"
    );
    assert_eq!(normalise("E   assert 1 == 2"), "E   assert 1 == 2");
}

/// Ctrl-C during a warm check kills the check's whole process group (a subprocess it started
/// included), stores nothing, and leaves no server or server directory behind.
#[test]
fn ctrl_c_kills_a_warm_check_and_everything_it_started() {
    use crate::run::{process_is_gone, wait_for_file};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let pidfile = repo.tmp.path().join("sleeper.pid");
    let tmpdir = repo.tmp.path().join("tmpdir");
    std::fs::create_dir(&tmpdir).unwrap();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_slow.py",
            "import os, subprocess, time\n\n\ndef test_slow():\n    p = subprocess.Popen(['sleep', '300'])\n    with open(os.environ['PIDFILE'], 'w') as f:\n        f.write(f'{p.pid}\\n')\n    time.sleep(300)\n",
        )
        .write(
            "checkdef.toml",
            &format!(
                r#"version = 1

[[segment]]
name = "slow"
tests = ["tests/test_slow.py"]
env = {{ PIDFILE = "{}" }}
"#,
                pidfile.display()
            ),
        );
    repo.commit("slow");
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json"]);
    cmd.env("PATH", interpreter_path())
        .env("TMPDIR", &tmpdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let sleeper: u32 = wait_for_file(&pidfile, Duration::from_secs(60))
        .trim()
        .parse()
        .unwrap();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // A guard against hanging, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "checkdef ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = CmdOut::from_output(child.wait_with_output().unwrap());
    out.expect_code(130);
    assert_eq!(out.seg("slow")["status"], "failed");
    assert_eq!(out.seg("slow")["runner"], "warm", "{}", out.seg("slow"));
    assert!(repo.cached_narinfos().is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !process_is_gone(sleeper) {
        assert!(
            Instant::now() < deadline,
            "the check's child {sleeper} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = std::fs::read_dir(&tmpdir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}

/// A test module per route out of the sandbox (hook/tests/it/sandbox.rs has the same routes as
/// shell commands): each must fail, and the same way, under both runners.
const ESCAPES: &[(&str, &str)] = &[
    (
        "abs",
        "import os\n\n\ndef test_abs():\n    assert open(os.environ['DATA']).read() == 'good\\n'\n",
    ),
    (
        "proc",
        "import os\n\n\ndef test_proc():\n    found = []\n    for pid in os.listdir('/proc'):\n        if pid.isdigit():\n            try:\n                with open(f'/proc/{pid}/cwd/data/config.txt') as f:\n                    found.append((pid, f.read()))\n            except OSError:\n                pass\n    assert found, 'no way out through /proc'\n",
    ),
    (
        "cache",
        "import os\n\n\ndef test_cache():\n    with open(os.environ['PLANT'], 'w') as f:\n        f.write('forged')\n",
    ),
    (
        "offline",
        "import os, socket\n\n\ndef test_offline():\n    socket.create_connection(('127.0.0.1', int(os.environ['PORT'])), timeout=5).close()\n",
    ),
    (
        "caps",
        "import os\n\n\ndef test_caps():\n    status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n    print('status', {k: status[k] for k in ('Uid', 'Gid', 'CapInh', 'CapPrm', 'CapEff', 'CapAmb', 'NoNewPrivs')})\n    assert int(status['CapEff'], 16) == 0 and int(status['CapPrm'], 16) == 0\n    assert status['NoNewPrivs'].strip() == '1'\n    assert os.readlink('/proc/self/ns/user') != os.environ['HOST_USERNS']\n",
    ),
];

/// Warm children get the isolation of a fresh check (issue "No wrong PASS"): a non-input read by
/// absolute path fails and is named, `/proc/PID/cwd` of processes outside (checkdef's is the
/// work tree) is closed, the local cache cannot be written, the network is off unless
/// `network = true` (the check's own loopback works), and no capability is left.
#[test]
fn warm_children_are_isolated_like_fresh_checks() {
    if !have_pytest() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let repo = TestRepo::new();
    let data = repo.root.join("data/config.txt");
    repo.write("data/config.txt", "good\n")
        .write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n");
    let caches: Vec<PathBuf> = ["cache-warm", "cache-process"]
        .iter()
        .map(|c| repo.tmp.path().join(c))
        .collect();
    let mut cfg = String::from("version = 1\n");
    for (case, code) in ESCAPES
        .iter()
        .copied()
        .chain([("online", ESCAPES[3].1), ("loopback", LOOPBACK)])
    {
        repo.write(&format!("tests/test_{case}.py"), code);
        for runner in ["warm", "process"] {
            let plant = repo.tmp.path().join(format!("cache-{runner}/planted"));
            cfg.push_str(&format!(
                r#"
[[segment]]
name = "{case}-{runner}"
include = ["pytest.ini", "tests/test_{case}.py"]
command = "python3 -m pytest -q -s tests/test_{case}.py"
runner = "{runner}"
network = {network}
env = {{ DATA = "{data}", PLANT = "{plant}", PORT = "{port}", HOST_USERNS = "{userns}" }}
"#,
                network = case == "online",
                data = data.display(),
                plant = plant.display(),
                userns = std::fs::read_link("/proc/self/ns/user").unwrap().display(),
            ));
        }
    }
    repo.write("checkdef.toml", &cfg);
    repo.commit("escapes");
    for c in &caches {
        std::fs::create_dir_all(c).unwrap();
    }
    // One run, both runners side by side; each runner's checks try to write into the cache the
    // run uses.
    let mut outs = Vec::new();
    for (runner, cache) in ["warm", "process"].iter().zip(&caches) {
        let sel: Vec<String> = ESCAPES
            .iter()
            .map(|(c, _)| *c)
            .chain(["online", "loopback"])
            .flat_map(|c| ["-s".to_owned(), format!("{c}-{runner}")])
            .collect();
        let sel: Vec<&str> = sel.iter().map(String::as_str).collect();
        let out = run(
            &repo,
            &interpreter_path(),
            cache.file_name().unwrap().to_str().unwrap(),
            &sel,
        );
        if out.stderr.contains("sandbox: NOT isolated") {
            assert!(!testkit::in_ci(), "CI must isolate checks: {}", out.stderr);
            eprintln!("SKIP: checks are not isolated here");
            return;
        }
        outs.push((runner, out));
    }
    for (runner, out) in &outs {
        for (case, status) in [
            ("abs", "failed"),
            ("proc", "failed"),
            ("cache", "failed"),
            ("offline", "failed"),
            ("caps", "passed"),
            ("online", "passed"),
            ("loopback", "passed"),
        ] {
            let name = format!("{case}-{runner}");
            let s = out.seg(&name);
            assert_eq!(s["status"], status, "{name}: {}", out.stderr);
            assert_eq!(s["runner"], **runner, "{name}: {}", s["runner_note"]);
        }
        let err = &out.stderr;
        assert!(
            err.contains(&format!(
                "abs-{runner}: read data/config.txt, which is not an input of this segment"
            )),
            "{err}"
        );
        assert!(err.contains("no way out through /proc"), "{err}");
        assert!(!err.contains("'good\\n')]"), "{err}");
        assert!(
            !repo
                .tmp
                .path()
                .join(format!("cache-{runner}/planted"))
                .exists(),
            "a {runner} check wrote into the local cache"
        );
    }
    // What the checks saw of themselves is the same under both runners.
    let status_line = |out: &CmdOut, runner: &str| {
        out.stderr
            .lines()
            .find(|l| l.starts_with(&format!("caps-{runner}")) && l.contains("status {"))
            .map(|l| l.split_once(" │ ").unwrap().1.to_owned())
            .unwrap_or_else(|| panic!("no status line: {}", out.stderr))
    };
    assert_eq!(
        status_line(&outs[0].1, "warm"),
        status_line(&outs[1].1, "process")
    );
    drop(listener);
}

const LOOPBACK: &str = "import socket\n\n\ndef test_loopback():\n    s = socket.socket()\n    s.bind(('127.0.0.1', 0))\n    s.listen()\n    socket.create_connection(s.getsockname(), timeout=5).close()\n";

/// A warm check that leaves a child in its group and another in a session of its own, and
/// writes their pids, its own and its server's (its parent) into `PIDS`.
const LINGER: &str = "import os, subprocess, time\n\n\ndef test_linger():\n    d = os.environ['PIDS']\n    bg = subprocess.Popen(['sleep', '300'])\n    esc = subprocess.Popen(['sleep', '301'], start_new_session=True)\n    for name, pid in [('bg', bg.pid), ('escaped', esc.pid), ('check', os.getpid()), ('server', os.getppid())]:\n        with open(os.path.join(d, name + '.tmp'), 'w') as f:\n            f.write(f'{pid}\\n')\n        os.rename(os.path.join(d, name + '.tmp'), os.path.join(d, name))\n    time.sleep(300)\n";

fn linger_repo(timeout: &str) -> (TestRepo, PathBuf) {
    let repo = TestRepo::new();
    let pids = repo.tmp.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_linger.py", LINGER)
        .write(
            "checkdef.toml",
            &format!(
                r#"version = 1

[[segment]]
name = "linger"
tests = ["tests/test_linger.py"]
timeout = "{timeout}"
env = {{ PIDS = "{}" }}
"#,
                pids.display()
            ),
        );
    repo.commit("linger");
    (repo, pids)
}

fn linger_pids(pids: &std::path::Path) -> Vec<u32> {
    ["check", "bg", "escaped", "server"]
        .iter()
        .map(|n| crate::lifecycle::read_pid(&pids.join(n)))
        .collect()
}

/// At its `timeout` a warm check fails like a fresh one, and what it started goes with it: its
/// group (through its holder's supervisor) and what left the group (reparented to the check's
/// child, then to its server, which kills it).
#[test]
fn a_warm_check_at_its_timeout_fails_and_everything_it_started_is_killed() {
    if !have_pytest() {
        return;
    }
    // Long enough for pytest to start and write the pids on a loaded machine (a hang guard, not
    // a timing assertion: the check sleeps 300 s).
    let (repo, pids) = linger_repo("30s");
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json"]);
    cmd.env("PATH", interpreter_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = CmdOut::from_output(cmd.output().unwrap());
    out.expect_code(1);
    let s = out.seg("linger");
    assert_eq!(s["runner"], "warm", "{s}");
    assert_eq!(s["reason"], "timed out after 30s", "{}", out.stderr);
    let all = linger_pids(&pids);
    let left = crate::lifecycle::survivors(&all[..3]);
    assert!(left.is_empty(), "still running: {left:?} of {all:?}");
    // The server ended with the run.
    assert!(crate::lifecycle::survivors(&all[3..]).is_empty());
}

/// A SIGKILL of checkdef kills warm checks, what they started, and their servers.
#[test]
fn warm_checks_and_servers_do_not_outlive_a_killed_checkdef() {
    if !have_pytest() {
        return;
    }
    let (repo, pids) = linger_repo("15m");
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json"]);
    cmd.env("PATH", interpreter_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut checkdef = cmd.spawn().unwrap();
    let all = linger_pids(&pids);
    assert!(crate::lifecycle::running(all[3]), "the server runs");
    checkdef.kill().unwrap(); // SIGKILL
    checkdef.wait().unwrap();
    let left = crate::lifecycle::survivors(&all);
    assert!(left.is_empty(), "still running: {left:?} of {all:?}");
}

/// The warm server compiles the inputs' modules once (hash-checked bytecode, one per blob);
/// later checks import that bytecode instead of compiling, and it never outlives its source: a
/// package removed from the inputs is not kept alive as a namespace package by a `__pycache__`
/// left in the layer, and an edited module is never run from the old bytecode.
#[test]
fn bytecode_from_the_server_is_used_and_goes_with_its_source() {
    // The server compiles each `.py` input once; a later child loads that code instead of
    // compiling the module, and nothing of it is on disk in the view: a `__pycache__` appears
    // only when an import writes it, as in a fresh process.
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("pkg/__init__.py", "")
        .write("pkg/mod.py", "VALUE = 1\n")
        .write("pkg/gone/__init__.py", "")
        .write("pkg/gone/util.py", "X = 1\n")
        .write("pkg/data/sample.py", "NEVER_IMPORTED = 1\n")
        .write("later/__init__.py", "LATER = 1\n")
        // Compiling this warns (an invalid escape: a DeprecationWarning before Python 3.12, a
        // SyntaxWarning since): no bytecode may hide that from a check.
        .write("pkg/warns.py", "PATTERN = \"\\d\"\n")
        .write(
            "tests/test_warns.py",
            "def test_warns():\n    import pkg.warns\n",
        )
        .write(
            "tests/test_mod.py",
            r#"import importlib
import os

import pkg.mod


def test_mod():
    # No bytecode before an import writes it; then the import's own.
    assert os.listdir("pkg/data") == ["sample.py"]
    assert os.listdir("later") == ["__init__.py"]
    import later
    assert sorted(os.listdir("later")) == ["__init__.py", "__pycache__"]
    with open(pkg.mod.__cached__, "rb") as f:
        flags = int.from_bytes(f.read()[4:8], "little")
    print("value", pkg.mod.VALUE, "pyc-flags", flags)
    try:
        importlib.import_module("pkg.gone")
        print("gone importable")
    except ImportError:
        print("gone missing")
"#,
        )
        .write(
            "checkdef.toml",
            r#"version = 1

[[segment]]
name = "mod"
include = ["pytest.ini", "pkg/**", "later/**", "tests/test_mod.py"]
command = "python3 -m pytest -s -q tests/test_mod.py"
env = { CHECKDEF_WARM_TRACE = "1" }

[[segment]]
name = "warns"
include = ["pytest.ini", "pkg/**", "tests/test_warns.py"]
command = "python3 -m pytest -q -W error::DeprecationWarning -W error::SyntaxWarning tests/test_warns.py"
"#,
        );
    repo.commit("init");
    let path = interpreter_path();
    let probe = |extra: &[&str]| {
        let out = run(&repo, &path, "cache", extra);
        out.expect_code(1);
        assert_eq!(out.seg("mod")["status"], "passed", "{}", out.stderr);
        assert_eq!(out.seg("mod")["runner"], "warm", "{}", out.stderr);
        // Failed each time, as a fresh process fails it.
        let w = out.seg("warns");
        assert_eq!(
            (w["status"].as_str(), w["runner"].as_str()),
            (Some("failed"), Some("warm"))
        );
        let line = out
            .stderr
            .lines()
            .filter_map(|l| l.split_once(" │ ").map(|(_, t)| t))
            .filter(|t| {
                t.starts_with("value") || t.starts_with("gone") || t.starts_with("checkdef-warm:")
            })
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!line.is_empty(), "no probe lines: {}", out.stderr);
        (line, out)
    };
    // The first run compiles (and has the server compile); the next one loads the server's
    // code for pkg/__init__.py, pkg/mod.py and later/__init__.py (pkg/gone/__init__.py is the
    // same empty blob as pkg/__init__.py: each code object serves once, the second compiles),
    // and the pyc on disk is the timestamp-based one its own import wrote (flags 0), as fresh.
    let (first, _) = probe(&[]);
    assert!(
        first.starts_with("value 1 pyc-flags 0")
            && first.ends_with("0 modules from the server's bytecode"),
        "{first}"
    );
    let (second, _) = probe(&["--force"]);
    assert_eq!(
        second,
        "value 1 pyc-flags 0 gone importable checkdef-warm: 3 modules from the server's bytecode"
    );
    // An edit: never the old module's code.
    repo.write("pkg/mod.py", "VALUE = 2  # edited\n");
    repo.write(
        "tests/test_mod.py",
        &std::fs::read_to_string(repo.root.join("tests/test_mod.py"))
            .unwrap()
            .replace(
                "print(\"value\"",
                "assert pkg.mod.VALUE == 2\n    print(\"value\"",
            ),
    );
    repo.commit("edit");
    let (edited, _) = probe(&[]);
    assert!(edited.starts_with("value 2 "), "{edited}");
    // The package goes, and with it its directory.
    std::fs::remove_dir_all(repo.root.join("pkg/gone")).unwrap();
    repo.commit("remove pkg.gone");
    let (removed, _) = probe(&[]);
    assert!(removed.contains("gone missing"), "{removed}");
    // `cache gc` drops the bytecode of blobs no layer holds (the old pkg/mod.py's, pkg/gone/util.py's;
    // pkg/gone/__init__.py is the empty blob pkg/__init__.py still is),
    // and keeps the rest, which the next run uses.
    let cache = repo.tmp.path().join("cache");
    let store_pycs = || -> Vec<PathBuf> {
        let mut out = Vec::new();
        for r in std::fs::read_dir(cache.join("checkdef-sandboxes"))
            .unwrap()
            .flatten()
        {
            for t in std::fs::read_dir(r.path().join("pyc"))
                .into_iter()
                .flatten()
                .flatten()
            {
                for f in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
                    if f.path().extension().is_some_and(|e| e == "pyc") {
                        out.push(f.path());
                    }
                }
            }
        }
        out.sort();
        out
    };
    let before = store_pycs();
    let mut gc = repo.checkdef_cmd_in(&repo.root, &["cache", "gc", "--max-size", "1G"]);
    gc.env("CHECKDEF_CACHE_DIR", &cache);
    CmdOut::from_output(gc.output().unwrap()).expect_code(0);
    let left = store_pycs();
    assert_eq!(before.len() - left.len(), 2, "{before:?} -> {left:?}");
    let (after_gc, _) = probe(&["--force"]);
    assert!(
        after_gc.starts_with("value 2 pyc-flags 0")
            && after_gc.ends_with("3 modules from the server's bytecode"),
        "{after_gc}"
    );
}

/// A shim (pyenv's kind: a script that adds to the environment, some of it naming the directory
/// it starts in, then execs the interpreter by its full path) runs warm, and its checks see
/// what fresh checks through the same shim see.
#[test]
fn a_check_through_a_shim_runs_warm_and_sees_what_a_fresh_one_sees() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    let real = path.split(':').next().unwrap().to_owned();
    let shim_dir = repo.tmp.path().join("shims");
    std::fs::create_dir(&shim_dir).unwrap();
    let shim = shim_dir.join("python3");
    crate::support::write_executable(
        &shim,
        &format!(
            "#!/bin/sh\nFAKE_SHIM_DIR=$(pwd -P); export FAKE_SHIM_DIR\nFAKE_SHIM_PATH=\"$(pwd -P)/src:/usr/lib\"; export FAKE_SHIM_PATH\nFAKE_SHIM=1; export FAKE_SHIM\nPATH=\"{real}:$PATH\"; export PATH\nexec {real}/python3 \"$@\"\n"
        ),
    );
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_env.py",
            "import os, sys\n\n\ndef test_env():\n    for k in ('FAKE_SHIM', 'FAKE_SHIM_DIR', 'FAKE_SHIM_PATH', 'PWD'):\n        print(k, os.environ.get(k))\n    print('PATH0', os.environ['PATH'].split(':')[0])\n    print('argv0', sys.orig_argv[0])\n    print('exe', sys.executable)\n    print('cwd', os.getcwd())\n",
        )
        .write(
            "checkdef.toml",
            "version = 1\n\n[defaults]\n\n[[segment]]\nname = \"env\"\ninclude = [\"pytest.ini\", \"tests/**\"]\ncommand = \"python3 -m pytest -s -q tests/test_env.py\"\n",
        );
    repo.commit("shim");
    let shimmed = format!("{}:{path}", shim_dir.display());
    let warm = run(&repo, &shimmed, "cache-warm", &[]);
    warm.expect_code(0);
    assert_eq!(warm.seg("env")["runner"], "warm", "{}", warm.seg("env"));
    set_runner(&repo, "process");
    let fresh = run(&repo, &shimmed, "cache-process", &[]);
    fresh.expect_code(0);
    assert_eq!(fresh.seg("env")["runner"], "process");
    let (w, f) = (logs(&warm), logs(&fresh));
    assert_eq!(w["env"], f["env"], "warm vs process through the shim");
    let seen = w["env"].join("\n");
    let root = repo.root.canonicalize().unwrap();
    for want in [
        "FAKE_SHIM 1".to_owned(),
        format!("FAKE_SHIM_DIR {}", root.display()),
        format!("FAKE_SHIM_PATH {}/src:/usr/lib", root.display()),
        format!("PATH0 {real}"),
        format!("argv0 {real}/python3"),
    ] {
        assert!(seen.contains(&want), "{want} in:\n{seen}");
    }
}

/// What a fresh interpreter works out from the check's directory, or does at its start and end,
/// and a forked child of a server started elsewhere does not: each segment here passes in such
/// a child and fails fresh (an outside trial found every one of them), so each must fail — run
/// fresh for a doubt found before the session (a `sitecustomize` on a relative PYTHONPATH, an
/// absolute PYTHONPATH into the repository, a zip on sys.path, a relative PYTHONUSERBASE,
/// PYTHONINSPECT) or after it (a module next to the tests, on the sys.path entry pytest adds,
/// shadowing one the server loaded), or warm at a fresh process's stack depth.
#[test]
fn what_a_fresh_interpreter_sees_at_its_start_and_end_fails_warm_too() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    let root = repo.root.canonicalize().unwrap();
    let version = Command::new("python3")
        .args([
            "-c",
            "import sys; print('python%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap().trim().to_owned();
    let toml_test =
        "import tomllib\n\n\ndef test_toml():\n    assert tomllib.loads('a = 1') == {'a': 1}\n";
    let stub = "def loads(s):\n    raise NotImplementedError('the repository stub')\n";
    let ctypes_test =
        "import ctypes\n\n\ndef test_ctypes():\n    assert hasattr(ctypes, 'sizeof')\n";
    let strict =
        "import os\n\n\ndef test_lenient():\n    assert os.environ.get('APP_STRICT') is None\n";
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("site/sitecustomize.py", "import os\nos.environ['APP_STRICT'] = '1'\n")
        .write("tests/test_site.py", strict)
        .write("ta/tomllib.py", stub)
        .write("ta/test_toml.py", toml_test)
        .write("abs/tomllib.py", stub)
        .write("tests/test_abs.py", toml_test)
        .write("tests/test_zip.py", toml_test)
        .write(
            &format!(".pyuser/lib/{version}/site-packages/strict.pth"),
            "import os; os.environ['APP_STRICT'] = '1'\n",
        )
        .write("tests/test_userbase.py", strict)
        .write(
            "tests/test_depth.py",
            "import sys\n\n\ndef recurse(n):\n    return 0 if n == 0 else 1 + recurse(n - 1)\n\n\ndef test_capacity():\n    old = sys.getrecursionlimit()\n    sys.setrecursionlimit(200)\n    n = 0\n    try:\n        while True:\n            recurse(n)\n            n += 1\n    except RecursionError:\n        pass\n    finally:\n        sys.setrecursionlimit(old)\n    print('capacity', n)\n",
        )
        .write("tests/test_inspect.py", "def test_ok():\n    pass\n")
        // pytest puts its `pythonpath` entries on sys.path and takes them off again at the end.
        .write("tini/pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\npythonpath = lib\n")
        // ctypes: a module the server imports for itself, which no fresh session holds.
        .write("tini/lib/ctypes/__init__.py", "SHADOW = 1\n")
        .write("tini/test_ctypes.py", ctypes_test)
        // A conftest that imports with an entry of its own on sys.path, then removes it.
        .write("tcon/lib/ctypes/__init__.py", "SHADOW = 1\n")
        .write(
            "tcon/conftest.py",
            "import os, sys\n\np = os.path.join(os.path.dirname(__file__), 'lib')\nsys.path.insert(0, p)\nimport ctypes  # noqa: E402,F401\nsys.path.remove(p)\n",
        )
        .write("tcon/test_ctypes.py", ctypes_test)
        // pytest's -p no:junitxml: a fresh session never imports xml.etree for it.
        .write("txml/xml/__init__.py", "SAMPLE = '<a/>'\n")
        .write(
            "txml/test_xml.py",
            "import xml.etree.ElementTree as ET\n\n\ndef test_xml():\n    assert ET.fromstring('<a/>').tag == 'a'\n",
        )
        // Finalisation: an unflushable stdout is exit 120; a status beyond 64 bits is 255.
        .write(
            "tflush/conftest.py",
            "import atexit, sys\n\n\ndef _report():\n    sys.stdout = open('/dev/full', 'w')\n    print('summary')\n\n\natexit.register(_report)\n",
        )
        .write("tflush/test_ok.py", "def test_ok():\n    pass\n")
        .write(
            "tbig/conftest.py",
            "def pytest_sessionfinish(session, exitstatus):\n    session.exitstatus = int(exitstatus) | (1 << 64)\n",
        )
        .write("tbig/test_ok.py", "def test_ok():\n    pass\n");
    let zip = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('tomllib.py', sys.argv[2])\n",
        ])
        .arg(repo.root.join("vendor.zip"))
        .arg(stub)
        .status()
        .unwrap();
    assert!(zip.success());
    let seg = |name: &str, include: &str, test: &str, env: &str| {
        format!(
            "[[segment]]\nname = \"{name}\"\ninclude = [\"pytest.ini\", {include}]\ncommand = \"python3 -m pytest -q {test}\"\n{env}\n"
        )
    };
    let config = [
        "version = 1\n\n".to_owned(),
        seg(
            "site",
            "\"site/**\", \"tests/test_site.py\"",
            "tests/test_site.py",
            "env = { PYTHONPATH = \"site\" }\n",
        ),
        seg("shadow", "\"ta/**\"", "ta/test_toml.py", ""),
        seg(
            "abs",
            "\"abs/**\", \"tests/test_abs.py\"",
            "tests/test_abs.py",
            &format!("env = {{ PYTHONPATH = \"{}/abs\" }}\n", root.display()),
        ),
        seg(
            "zip",
            "\"vendor.zip\", \"tests/test_zip.py\"",
            "tests/test_zip.py",
            "env = { PYTHONPATH = \"vendor.zip\" }\n",
        ),
        seg(
            "userbase",
            "\".pyuser/**\", \"tests/test_userbase.py\"",
            "tests/test_userbase.py",
            "env = { PYTHONUSERBASE = \".pyuser\" }\n",
        ),
        seg(
            "depth",
            "\"tests/test_depth.py\"",
            "-s tests/test_depth.py",
            "",
        ),
        seg(
            "depth-fresh",
            "\"tests/test_depth.py\"",
            "-s tests/test_depth.py",
            "runner = \"process\"\n",
        ),
        seg(
            "ini",
            "\"tini/**\"",
            "-c tini/pytest.ini tini/test_ctypes.py",
            "",
        ),
        seg("conftest", "\"tcon/**\"", "tcon/test_ctypes.py", ""),
        seg(
            "noplugin",
            "\"txml/**\"",
            "-p no:junitxml txml/test_xml.py",
            "",
        ),
        seg("flush", "\"tflush/**\"", "tflush/test_ok.py", ""),
        seg("bigexit", "\"tbig/**\"", "tbig/test_ok.py", ""),
        seg(
            "inspect",
            "\"tests/test_inspect.py\"",
            "tests/test_inspect.py",
            "env = { PYTHONINSPECT = \"1\" }\n",
        ),
    ]
    .concat();
    repo.write("checkdef.toml", &config);
    repo.commit("what a fresh interpreter sees");
    // The work tree's copy works: a server that imports it passes what the commit fails.
    repo.write(
        "abs/tomllib.py",
        "def loads(s):\n    k, v = s.split('=')\n    return {k.strip(): int(v)}\n",
    );
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(1);
    for (name, runner, note) in [
        ("site", "process", "holds sitecustomize"),
        // tomllib is no module a session holds before it reads its configuration.
        ("shadow", "warm", ""),
        ("abs", "process", "in the repository"),
        ("zip", "process", "is a file (a zip?)"),
        // The probe of the environment's start-up sees site look for the user site there.
        (
            "userbase",
            "process",
            "looks at the current directory (.pyuser",
        ),
        ("inspect", "process", "PYTHONINSPECT is set"),
        // Nothing the server loaded for itself: imported as a fresh session imports them.
        ("ini", "warm", ""),
        ("conftest", "warm", ""),
        ("noplugin", "process", "-p no:junitxml"),
        ("flush", "warm", ""),
        ("bigexit", "warm", ""),
    ] {
        let s = out.seg(name);
        assert_eq!(s["status"], "failed", "{name}: {s}\n{}", out.stderr);
        assert_eq!(s["runner"], runner, "{name}: {s}");
        let got = s["runner_note"].as_str().unwrap_or_default();
        assert!(got.contains(note), "{name}: {got}");
    }
    // As deep in the stack as a fresh session: the same recursion fits under the same limit.
    assert_eq!(out.seg("depth")["runner"], "warm");
    assert_eq!(out.seg("depth-fresh")["runner"], "process");
    let logs = logs(&out);
    let capacity = |name: &str| {
        logs[name]
            .iter()
            .find(|l| l.contains("capacity "))
            .unwrap_or_else(|| panic!("{name}: {:?}", logs[name]))
            .clone()
    };
    assert_eq!(capacity("depth"), capacity("depth-fresh"));
}

/// An editable install puts the repository on the server's sys.path (a `.pth` in the venv):
/// a check runs warm and imports the commit's files from the view, never the work tree's; and
/// when the server itself loaded a module from the work tree (a `.pth` that puts the
/// repository first), its checks run fresh.
#[test]
fn an_editable_install_runs_warm_from_the_view_and_a_server_that_read_the_work_tree_does_not() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let root = repo.root.canonicalize().unwrap();
    let mut venvs = Vec::new();
    for (name, pth) in [
        ("plain", format!("{}/src\n", root.display())),
        (
            "first",
            format!("import sys; sys.path.insert(0, '{}/lib')\n", root.display()),
        ),
    ] {
        let bin = crate::support::venv_with_pth(&repo.tmp.path().join(name), &pth);
        venvs.push(format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ));
    }
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("src/foo/__init__.py", "NAME = 'foo'\n")
        .write(
            "tests/test_foo.py",
            "import foo\n\n\ndef test_foo():\n    assert foo.NAME == 'foo'\n",
        )
        // pytest imports iniconfig with itself: the server, from the work tree's copy.
        .write("lib/iniconfig/__init__.py", "raise ImportError('the committed iniconfig')\n")
        .write("tests/test_toml.py", "def test_toml():\n    pass\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"foo\"\ninclude = [\"src/**\"]\ntests = [\"tests/test_foo.py\"]\n\n[[segment]]\nname = \"toml\"\ninclude = [\"lib/**\"]\ntests = [\"tests/test_toml.py\"]\n",
        );
    repo.commit("an editable install");
    // The work tree differs from the commit; the commit is what is checked.
    repo.write("src/foo/__init__.py", "NAME = 'broken'\n");
    std::fs::remove_dir_all(repo.root.join("lib/iniconfig")).unwrap();
    let copied = Command::new("python3")
        .args([
            "-c",
            "import iniconfig, os, shutil, sys\nshutil.copytree(os.path.dirname(iniconfig.__file__), sys.argv[1])\n",
        ])
        .arg(repo.root.join("lib/iniconfig"))
        .status()
        .unwrap();
    assert!(copied.success());
    let plain = run(
        &repo,
        &venvs[0],
        "cache-plain",
        &["--rev", "HEAD", "-s", "foo"],
    );
    plain.expect_code(0);
    assert_eq!(plain.seg("foo")["runner"], "warm", "{}", plain.stdout);
    let first = run(
        &repo,
        &venvs[1],
        "cache-first",
        &["--rev", "HEAD", "-s", "toml"],
    );
    first.expect_code(1);
    let s = first.seg("toml");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["runner"], "process", "{s}");
    let note = s["runner_note"].as_str().unwrap_or_default();
    assert!(note.contains("from the repository's work tree"), "{note}");
}

/// A package of bytecode alone (`textwrap/__init__.pyc`, no source) in the check's directory is
/// a package a fresh interpreter imports at pytest's start instead of the standard library's:
/// the check runs fresh, and fails as it does there.
#[test]
fn a_package_of_bytecode_alone_named_like_a_module_pytest_imports_runs_fresh() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_ok.py", "def test_ok():\n    pass\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"sourceless\"\ninclude = [\"pytest.ini\", \"textwrap/**\"]\ntests = [\"tests/test_ok.py\"]\n",
        );
    let pyc = Command::new("python3")
        .args([
            "-c",
            "import os, py_compile, sys, tempfile\nd = tempfile.mkdtemp()\nsrc = os.path.join(d, '__init__.py')\nopen(src, 'w').write(\"raise ImportError('the repository textwrap')\\n\")\nos.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)\npy_compile.compile(src, cfile=sys.argv[1])\n",
        ])
        .arg(repo.root.join("textwrap/__init__.pyc"))
        .status()
        .unwrap();
    assert!(pyc.success());
    repo.commit("a package of bytecode alone");
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(1);
    let s = out.seg("sourceless");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["runner"], "process", "{s}");
    let note = s["runner_note"].as_str().unwrap_or_default();
    assert!(note.contains("would shadow the module textwrap"), "{note}");
}

/// The server's compiled code stands in for a compile only where that compile could not have
/// turned out otherwise: a test that lowers the recursion limit or the integer digit limit
/// before an import, or audits compiles, sees what a fresh process sees — also on the second
/// run, when the server has compiled those modules.
#[test]
fn the_server_s_bytecode_is_used_only_where_a_compile_would_give_it() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    let terms = vec!["a"; 600].join(" + ");
    let digits = "7".repeat(1000);
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("pkg/__init__.py", "")
        .write("pkg/gen.py", &format!("def total(a):\n    return {terms}\n"))
        .write("pkg/consts.py", &format!("P = {digits}\n"))
        .write("pkg/mod2.py", "X = 1\n")
        .write(
            "tests/test_rec.py",
            "import sys\n\n\ndef test_rec():\n    sys.setrecursionlimit(120)\n    import pkg.gen\n    assert pkg.gen.total(1) == 600\n",
        )
        .write(
            "tests/test_digits.py",
            "import sys\n\n\ndef test_digits():\n    sys.set_int_max_str_digits(640)\n    import pkg.consts\n",
        )
        .write(
            "tests/test_audit.py",
            "import sys\n\nseen = []\n\n\ndef hook(event, args):\n    if event == 'compile' and str(args[1]).endswith('mod2.py'):\n        seen.append(args[1])\n\n\ndef test_audit():\n    sys.addaudithook(hook)\n    import pkg.mod2\n    assert not seen, seen\n",
        )
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"rec\"\ninclude = [\"pytest.ini\", \"pkg/**\"]\ntests = [\"tests/test_rec.py\"]\n\n[[segment]]\nname = \"digits\"\ninclude = [\"pytest.ini\", \"pkg/**\"]\ntests = [\"tests/test_digits.py\"]\n\n[[segment]]\nname = \"audit\"\ninclude = [\"pytest.ini\", \"pkg/**\"]\ntests = [\"tests/test_audit.py\"]\n",
        );
    repo.commit("modules whose compile a test constrains");
    for extra in [&["--rev", "HEAD"][..], &["--rev", "HEAD", "--force"][..]] {
        let out = run(&repo, &path, "cache", extra);
        out.expect_code(1);
        for name in ["rec", "digits", "audit"] {
            let s = out.seg(name);
            assert_eq!(
                s["status"], "failed",
                "{name} {extra:?}: {s}\n{}",
                out.stderr
            );
            assert_eq!(s["runner"], "warm", "{name}: {s}");
        }
    }
}

/// A session killed by a signal ends as the check's `sh -c` would have ended it: with dash, which
/// waits for its command, exit 128+N — the same verdict, exit code and reason under both runners.
#[test]
fn a_session_killed_by_a_signal_is_reported_as_a_fresh_one_is() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let path = interpreter_path();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_alarm.py",
            "import os, signal\n\n\ndef test_alarm():\n    os.kill(os.getpid(), signal.SIGALRM)\n",
        )
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"w\"\ntests = [\"tests/test_alarm.py\"]\n\n[[segment]]\nname = \"p\"\ntests = [\"tests/test_alarm.py\"]\nrunner = \"process\"\n",
        );
    repo.commit("a test killed by SIGALRM");
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(1);
    let (w, p) = (out.seg("w"), out.seg("p"));
    assert_eq!(w["runner"], "warm", "{w}");
    assert_eq!(w["status"], "failed", "{w}");
    assert_eq!(
        (&w["exit_code"], &w["reason"]),
        (&p["exit_code"], &p["reason"]),
        "warm {w}\nprocess {p}"
    );
}

/// A SIGKILL of a warm check's supervisor stage kills the check and what it started at once —
/// its guard kills the process group the warm child joined — while the server, and the run's
/// other checks, go on (before, the check ran on until the run ended and its server with it).
#[test]
fn a_killed_supervisor_takes_its_warm_check_with_it_and_the_server_goes_on() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let pids = repo.tmp.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    let done = repo.tmp.path().join("done");
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_linger.py", LINGER)
        // Keeps the run, and so the shared server, alive until the test says so; fails when that
        // never comes (a hang guard of 60 s: the killed check would otherwise live as long as
        // the run, this one included, and the test below would wait for it).
        .write(
            "tests/test_wait.py",
            "import os, time\n\n\ndef test_wait():\n    for _ in range(600):\n        if os.path.exists(os.environ['DONE']):\n            return\n        time.sleep(0.1)\n    raise AssertionError('the killed check outlived its supervisor')\n",
        )
        .write(
            "checkdef.toml",
            &format!(
                "version = 1\n\n[defaults]\nenv = {{ PIDS = \"{}\", DONE = \"{}\" }}\n\n[[segment]]\nname = \"linger\"\ntests = [\"tests/test_linger.py\"]\ntimeout = \"15m\"\n\n[[segment]]\nname = \"wait\"\ntests = [\"tests/test_wait.py\"]\n",
                pids.display(),
                done.display()
            ),
        );
    repo.commit("a lingering check and one that waits");
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json", "-j", "2"]);
    cmd.env("PATH", interpreter_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let checkdef = cmd.spawn().unwrap();
    let all = linger_pids(&pids);
    let (check, server) = (all[0], all[3]);
    // The guard leads the check's group; its parent is the supervisor stage.
    let field = |pid: u32, n: usize| -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.split_whitespace().nth(n).unwrap().parse().unwrap()
    };
    let guard = field(check, 2);
    let supervisor = field(guard, 1);
    let st = Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let left = crate::lifecycle::survivors(&all[..3]);
    // Gone while the server still serves the other check.
    let server_ran = crate::lifecycle::running(server);
    std::fs::write(&done, "").unwrap();
    let out = CmdOut::from_output(checkdef.wait_with_output().unwrap());
    assert!(left.is_empty(), "still running: {left:?} of {all:?}");
    assert!(server_ran, "the check went only with its server");
    out.expect_code(1);
    assert_eq!(out.seg("linger")["status"], "failed");
    assert_eq!(out.seg("wait")["status"], "passed");
}

/// The environment's start-up code (a `.pth` import line of a venv) runs once in the warm
/// server, in its own empty directory, and in a fresh check in the check's directory: code that
/// looks there (a `.pth` that loads `.env`) must keep the checks fresh, where it finds the
/// committed `.env`; start-up code that looks at nothing there keeps them warm.
#[test]
fn start_up_code_that_looks_at_the_check_s_directory_keeps_its_checks_fresh() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let load = "os.path.exists(p) and os.environ.update(dict(l.strip().split('=', 1) for l in open(p) if '=' in l))";
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(".env", "BROKEN=1\n")
        .write(
            "tests/test_env.py",
            "import os\n\n\ndef test_env():\n    assert 'BROKEN' not in os.environ\n    assert os.environ.get('CHECKDEF_PTH_RAN') == '1'\n",
        )
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"env\"\ninclude = [\".env\"]\ntests = [\"tests/test_env.py\"]\n",
        );
    repo.commit("a .env that breaks the test");
    let mark = "os.environ.setdefault('CHECKDEF_PTH_RAN', '1')";
    for (name, pth, runner, note) in [
        (
            "relative",
            format!("import os; p = '.env'; {mark}; {load}\n"),
            "process",
            "looks at the current directory (.env)",
        ),
        (
            "getcwd",
            format!("import os; p = os.path.join(os.getcwd(), '.env'); {mark}; {load}\n"),
            "process",
            "asks for the current directory",
        ),
        (
            "pwd",
            format!("import os; p = os.environ.get('PWD', '') + '/.env'; {mark}; {load}\n"),
            "process",
            "looks at the current directory (.env)",
        ),
        (
            "proc",
            format!("import os; p = '/proc/%d/cwd/.env' % os.getpid(); {mark}; {load}\n"),
            "process",
            "looks at the current directory (/proc/",
        ),
        (
            "listing",
            format!("import os; p = '.env'; {mark}; '.env' in os.listdir() and {load}\n"),
            "process",
            "looks at the current directory (.)",
        ),
        (
            "tmpdir",
            format!("import os; p = os.path.join(os.environ['TMPDIR'], 'x'); {mark}; {load}\n"),
            "process",
            "looks at its TMPDIR (x)",
        ),
        (
            "subprocess",
            format!(
                "import os, subprocess; p = '/nonexistent'; {mark}; subprocess.run(['true'])\n"
            ),
            "process",
            "starts a process",
        ),
    ] {
        let bin = crate::support::venv_with_pth(&repo.tmp.path().join(name), &pth);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = run(&repo, &path, &format!("cache-{name}"), &["--rev", "HEAD"]);
        let s = out.seg("env");
        // The last two look elsewhere than at `.env`: fresh, and passing.
        let expected = if matches!(name, "subprocess" | "tmpdir") {
            "passed"
        } else {
            "failed"
        };
        assert_eq!(s["status"], expected, "{name}: {s}\n{}", out.stderr);
        assert_eq!(s["runner"], runner, "{name}: {s}");
        let got = s["runner_note"].as_str().unwrap_or_default();
        assert!(
            got.contains("start-up code") && got.contains(note),
            "{name}: {got}"
        );
    }
    // Start-up code that looks at nothing of the check's runs once, in the server.
    let bin = crate::support::venv_with_pth(
        &repo.tmp.path().join("clean"),
        &format!("import os; {mark}\n"),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(&repo, &path, "cache-clean", &["--rev", "HEAD"]);
    out.expect_code(0);
    assert_eq!(out.seg("env")["runner"], "warm", "{}", out.stdout);
}

/// The start-up probe runs while the warm server imports pytest, not after: the server says
/// how it was started before that import. Start-up code (an import hook a `.pth` installs) makes
/// each of the two wait, in its import of pytest, until the other is there too (ten seconds at
/// most): only overlapping processes both meet.
#[test]
fn the_start_up_probe_runs_while_the_warm_server_imports_pytest() {
    if !have_pytest() {
        return;
    }
    let repo = one_test_repo();
    let meet = repo.tmp.path().join("meet");
    std::fs::create_dir(&meet).unwrap();
    let venv = repo.tmp.path().join("venv");
    let bin = crate::support::venv_with_pth(&venv, "import checkdef_meet\n");
    let site = crate::support::venv_site_packages(&venv);
    std::fs::write(
        site.join("checkdef_meet.py"),
        format!(
            r#"import os, sys, time

MEET = {meet:?}
ROLES = {{"server.py": "probe.py", "probe.py": "server.py"}}
ROLE = next((os.path.basename(a) for a in sys.orig_argv if os.path.basename(a) in ROLES), None)


class Meet:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest" and ROLE is not None:
            sys.meta_path.remove(self)
            open(os.path.join(MEET, ROLE), "w").close()
            for _ in range(200):
                if os.path.exists(os.path.join(MEET, ROLES[ROLE])):
                    open(os.path.join(MEET, ROLE + ".met"), "w").close()
                    break
                time.sleep(0.05)
        return None


sys.meta_path.insert(0, Meet())
"#,
            meet = meet.display().to_string()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(0);
    assert_eq!(out.seg("one")["runner"], "warm", "{}", out.stdout);
    for role in ["server.py", "probe.py"] {
        assert!(meet.join(role).exists(), "{role} never imported pytest");
        assert!(
            meet.join(format!("{role}.met")).exists(),
            "{role} imported pytest alone: the probe ran before or after the server's import"
        );
    }
}

/// A clean verdict of the start-up probe is kept between runs with what the probe looked at,
/// and is worth nothing once one of those files changed: a `.pth` rewritten to load `.env`
/// after a clean run is probed again, and its checks run fresh.
#[test]
fn a_kept_clean_start_up_verdict_goes_when_the_start_up_code_changes() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(".env", "BROKEN=1\n")
        .write(
            "tests/test_env.py",
            "import os\n\n\ndef test_env():\n    assert 'BROKEN' not in os.environ\n",
        )
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"env\"\ninclude = [\".env\"]\ntests = [\"tests/test_env.py\"]\n",
        );
    repo.commit("a .env that breaks the test");
    let venv = repo.tmp.path().join("venv");
    let bin = crate::support::venv_with_pth(&venv, "import os\n");
    // Older than the two seconds within which a change could go unseen.
    let aged = Command::new("find")
        .arg(&venv)
        .args(["-exec", "touch", "-h", "-d", "-1 hour", "{}", "+"])
        .status()
        .unwrap();
    assert!(aged.success());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kept = || {
        let store = repo.tmp.path().join("cache/checkdef-sandboxes");
        std::fs::read_dir(store)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|s| {
                std::fs::read_dir(s.path().join("probes"))
                    .into_iter()
                    .flatten()
            })
            .count()
    };
    for round in 0..2 {
        let out = run(&repo, &path, "cache", &["--rev", "HEAD", "--force"]);
        out.expect_code(0);
        assert_eq!(out.seg("env")["runner"], "warm", "{round}: {}", out.stdout);
        assert_eq!(kept(), 1, "{round}");
    }
    let pth = crate::support::venv_site_packages(&venv).join("__editable__.foo-0.1.pth");
    std::fs::write(
        &pth,
        "import os; os.path.exists('.env') and os.environ.update(dict(l.strip().split('=', 1) for l in open('.env') if '=' in l))\n",
    )
    .unwrap();
    let out = run(&repo, &path, "cache", &["--rev", "HEAD", "--force"]);
    let s = out.seg("env");
    assert_eq!(s["status"], "failed", "{s}\n{}", out.stderr);
    assert_eq!(s["runner"], "process", "{s}");
    assert!(
        s["runner_note"]
            .as_str()
            .unwrap_or_default()
            .contains("looks at the current directory (.env)"),
        "{s}"
    );
}

/// checkdef runs checks as another user than itself (in a user namespace that maps none of
/// its ids) and without HOME, so a fresh start-up computes another user site than the warm
/// server's, which started outside the sandbox as checkdef's user. Where neither exists, a warm
/// child says what a fresh one says (`site.USER_BASE`); where the server's exists (a `pip
/// install --user` as root: on its sys.path, not on the check's), its checks run fresh, and a
/// test that imports from there fails as it does fresh. The second case overlays checkdef's
/// home in a private mount namespace, so nothing real is touched.
#[test]
fn the_user_site_is_the_check_s_not_the_warm_server_s() {
    if !have_pytest() {
        return;
    }
    let home = Command::new("python3")
        .args([
            "-c",
            "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_dir)",
        ])
        .output()
        .expect("python3");
    let home = String::from_utf8(home.stdout).unwrap().trim().to_owned();
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_user_base.py",
            "import os, site\n\n\ndef test_user_base():\n    assert site.USER_BASE == os.path.expanduser('~/.local')\n    assert site.USER_SITE == site.getusersitepackages()\n",
        )
        .write(
            "tests/test_user_import.py",
            "def test_user_import():\n    import checkdef_user_only  # noqa: F401\n",
        )
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"base\"\ntests = [\"tests/test_user_base.py\"]\n\n[[segment]]\nname = \"import\"\ntests = [\"tests/test_user_import.py\"]\n",
        );
    repo.commit("tests of the user site");
    let path = interpreter_path();
    let out = run(&repo, &path, "cache-plain", &["--rev", "HEAD"]);
    assert_eq!(out.seg("base")["status"], "passed", "{}", out.stderr);
    assert_eq!(out.seg("base")["runner"], "warm", "{}", out.stdout);
    assert_eq!(out.seg("import")["status"], "failed", "{}", out.stderr);

    // The server's user site exists: in a mount namespace of checkdef's own, over its home.
    let layer = repo.tmp.path().join("home-layer");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    let version = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap().trim().to_owned();
    let user_site = format!("{home}/.local/lib/python{version}/site-packages");
    let inner = repo.checkdef_cmd_in(&repo.root, &["run", "--json", "-v", "--rev", "HEAD"]);
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t overlay overlay -o \"lowerdir=$1,upperdir=$2/upper,workdir=$2/work\" \"$1\" \
             && mkdir -p \"$3\" && echo 'X = 1' > \"$3/checkdef_user_only.py\" && shift 3 \
             && exec \"$@\"",
        )
        .arg("sh")
        .arg(&home)
        .arg(&layer)
        .arg(&user_site)
        .current_dir(&repo.root);
    run_under(&mut cmd, &inner);
    cmd.env("PATH", &path).env(
        "CHECKDEF_CACHE_DIR",
        repo.tmp.path().join("cache-user-site"),
    );
    let raw = cmd.output().expect("unshare");
    if raw.status.code() != Some(0) && raw.status.code() != Some(1) {
        let why = String::from_utf8_lossy(&raw.stderr).into_owned();
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: no private mount namespace with an overlay over {home} here: {why}"
        );
        eprintln!("skipped the user site that exists: {why}");
        return;
    }
    let out = CmdOut::from_output(raw);
    let s = out.seg("import");
    assert_eq!(s["status"], "failed", "warm: {s}\n{}", out.stderr);
    assert_eq!(s["runner"], "process", "{s}");
    assert!(
        s["runner_note"]
            .as_str()
            .unwrap_or_default()
            .contains("user site"),
        "{s}"
    );
    assert!(
        !std::path::Path::new(&user_site)
            .join("checkdef_user_only.py")
            .exists(),
        "the overlay leaked into the real {home}"
    );
}

/// What the interpreter's start-up does to the environment reaches a warm child as it reaches a
/// fresh check: a variable a `sitecustomize` removes is gone (it came back before), and one it
/// makes of the server's TMPDIR (which is no check's) keeps the checks fresh.
#[test]
fn start_up_changes_to_the_environment_are_the_check_s() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let site = repo.tmp.path().join("site");
    std::fs::create_dir_all(site.join("scrub")).unwrap();
    std::fs::create_dir_all(site.join("tmpdir")).unwrap();
    std::fs::write(
        site.join("scrub/sitecustomize.py"),
        "import os\nos.environ.pop('SECRET_TOKEN', None)\n",
    )
    .unwrap();
    std::fs::write(
        site.join("tmpdir/sitecustomize.py"),
        "import os\nos.environ['SCRATCH'] = os.path.join(os.environ['TMPDIR'], 'scratch')\n",
    )
    .unwrap();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_scrub.py",
            "import os, sys\n\n\ndef test_scrubbed():\n    assert 'sitecustomize' in sys.modules\n    assert 'SECRET_TOKEN' not in os.environ\n",
        )
        .write(
            "tests/test_scratch.py",
            "import os\n\n\ndef test_scratch():\n    assert os.environ['SCRATCH'] == os.path.join(os.environ['TMPDIR'], 'scratch')\n",
        )
        .write(
            "checkdef.toml",
            &format!(
                "version = 1\n\n[[segment]]\nname = \"scrub\"\ntests = [\"tests/test_scrub.py\"]\nenv = {{ PYTHONPATH = \"{}\", SECRET_TOKEN = \"x\" }}\n\n[[segment]]\nname = \"scratch\"\ntests = [\"tests/test_scratch.py\"]\nenv = {{ PYTHONPATH = \"{}\" }}\n",
                site.join("scrub").display(),
                site.join("tmpdir").display()
            ),
        );
    repo.commit("start-up code that changes the environment");
    let out = run(&repo, &interpreter_path(), "cache", &["--rev", "HEAD"]);
    let scrub = out.seg("scrub");
    assert_eq!(scrub["status"], "passed", "{scrub}\n{}", out.stderr);
    assert_eq!(scrub["runner"], "warm", "{scrub}");
    let scratch = out.seg("scratch");
    assert_eq!(scratch["status"], "passed", "{scratch}\n{}", out.stderr);
    assert_eq!(scratch["runner"], "process", "{scratch}");
    assert!(
        scratch["runner_note"]
            .as_str()
            .unwrap_or_default()
            .contains("names the warm server's TMPDIR"),
        "{scratch}"
    );
}

/// The warm server builds the first step of a session's configuration once (pytest's plugin
/// manager, its plugins registered, their options added) and a child's session uses it when its
/// own call would have built the same: what the options say, the invocation directory and the
/// arguments are the check's. With a `-p` in the arguments (which a fresh call applies before it
/// registers pytest's plugins) the child builds its own, and the verdict is a fresh one's.
#[test]
fn a_prebuilt_configuration_is_the_check_s_own() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let test = "import os, sys, pathlib\n\n\ndef test_config(pytestconfig):\n    p = pytestconfig.invocation_params\n    assert p.dir == pathlib.Path.cwd()\n    assert p.args == tuple(sys.argv[1:])\n    assert pytestconfig.getini('cache_dir') == os.path.join(os.environ.get('TOX_ENV_DIR', ''), '.pytest_cache')\n    assert pytestconfig.getoption('plugin_marker', None) == os.environ.get('WANT_MARKER')\n";
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_config.py", test)
        .write(
            "tests/marker_plugin.py",
            "def pytest_addoption(parser):\n    parser.addoption('--plugin-marker', dest='plugin_marker', default='from-plugin')\n",
        )
        .write(
            "checkdef.toml",
            r#"version = 1

[defaults]
env = { CHECKDEF_WARM_TRACE_CONFIG = "1" }

[[segment]]
name = "plain"
include = ["pytest.ini", "tests/test_config.py"]
command = "python3 -m pytest -s tests/test_config.py"

[[segment]]
name = "tox"
include = ["pytest.ini", "tests/test_config.py"]
command = "python3 -m pytest -s tests/test_config.py"
env = { CHECKDEF_WARM_TRACE_CONFIG = "1", TOX_ENV_DIR = "/tox/env" }

[[segment]]
name = "plugin"
include = ["pytest.ini", "tests/test_config.py", "tests/marker_plugin.py"]
command = "python3 -m pytest -s -p tests.marker_plugin tests/test_config.py"
env = { CHECKDEF_WARM_TRACE_CONFIG = "1", WANT_MARKER = "from-plugin", PYTHONPATH = "." }
"#,
        );
    repo.commit("configuration checks");
    let path = interpreter_path();
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(0);
    let trace = |seg: &str| {
        out.stderr
            .lines()
            .filter_map(|l| l.split_once(" │ "))
            .filter(|(n, t)| n.trim() == seg && t.starts_with("checkdef-warm: prebuilt"))
            .map(|(_, t)| t.to_owned())
            .collect::<Vec<_>>()
    };
    // Only for the pytest versions the server knows the first step of (warm_server.py,
    // _PREBUILT_VERSIONS); with any other the children build it as a fresh session does.
    let version = Command::new("python3")
        .args(["-c", "import pytest; print(pytest.__version__)"])
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    let known = ["9.1.", "9.2."].iter().any(|v| version.starts_with(v));
    let used = if known { "used" } else { "not used" };
    for (seg, used) in [("plain", used), ("tox", used), ("plugin", "not used")] {
        let s = out.seg(seg);
        assert_eq!(s["status"], "passed", "{seg}: {}", out.stderr);
        assert_eq!(s["runner"], "warm", "{seg}: {s}");
        assert_eq!(
            trace(seg),
            [format!("checkdef-warm: prebuilt configuration {used}")],
            "{seg}"
        );
    }
}

/// What the server's start-up and pytest import did, as a fork carries it into a child, against
/// what a fresh process has (each once a verdict that differed between the runners):
/// - a module pytest's import looked for and did not find (`copy` tries `org`, `subprocess`
///   `msvcrt`) that the check's directory holds: a fresh session imports it; the check runs
///   fresh (as it does when the server loaded the name);
/// - a timer the start-up armed (a CPU-time watchdog) is not inherited by a fork: fresh;
/// - a sitecustomize's `random.seed(N)`, a file it left open (`logging.basicConfig`) and the
///   main thread's `native_id` are the check's as in a fresh process, warm;
/// - `-p ' no:junitxml'` blocks the plugin in pytest (which strips the value): fresh;
/// - start-up code that imports a module it does not find (`try: import project_startup`)
///   finds the check's through a relative PYTHONPATH entry when fresh: fresh.
#[test]
fn what_a_fork_carries_over_is_what_a_fresh_process_has() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let site = repo.tmp.path().join("site");
    std::fs::create_dir_all(site.join("state")).unwrap();
    std::fs::create_dir_all(site.join("timer")).unwrap();
    std::fs::create_dir_all(site.join("hook")).unwrap();
    std::fs::create_dir_all(site.join("ns/acme")).unwrap();
    std::fs::write(
        site.join("ns/sitecustomize.py"),
        "try:\n    import acme.localconf  # noqa: F401\nexcept ImportError:\n    pass\n",
    )
    .unwrap();
    std::fs::write(
        site.join("hook/sitecustomize.py"),
        "try:\n    import project_startup  # noqa: F401\nexcept ImportError:\n    pass\n",
    )
    .unwrap();
    let log = repo.tmp.path().join("startup.log");
    std::fs::write(
        site.join("state/sitecustomize.py"),
        format!(
            "import logging, random\nrandom.seed(1234)\nlogging.basicConfig(filename={:?}, level=logging.INFO)\n",
            log.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        site.join("timer/sitecustomize.py"),
        "import signal\nsignal.signal(signal.SIGPROF, lambda *a: None)\nsignal.setitimer(signal.ITIMER_PROF, 600)\n",
    )
    .unwrap();
    let state_test = "import logging, os, random, threading\n\n\ndef test_state():\n    assert random.random() == random.Random(1234).random()\n    logging.getLogger('t').info('logged')\n    assert os.path.isdir('/proc/self/task/%d' % threading.current_thread().native_id)\n";
    let timer_test = "import signal\n\n\ndef test_timer():\n    assert signal.getitimer(signal.ITIMER_PROF)[0] > 0\n";
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_state.py", state_test)
        .write("tests/test_timer.py", timer_test)
        .write("tests/test_a.py", "def test_a():\n    pass\n")
        .write(
            "tests/test_startup.py",
            "import os\n\n\ndef test_startup():\n    assert os.environ.get('FROM_STARTUP') == '1'\n",
        )
        .write("project_startup.py", "import os\nos.environ['FROM_STARTUP'] = '1'\n")
        .write("src/acme/localconf.py", "import os\nos.environ['FROM_STARTUP'] = '1'\n");
    let text = format!(
        r#"version = 1

[[segment]]
name = "state"
include = ["pytest.ini", "tests/test_state.py"]
command = "python3 -m pytest tests/test_state.py"
env = {{ PYTHONPATH = "{state}" }}

[[segment]]
name = "timer"
include = ["pytest.ini", "tests/test_timer.py"]
command = "python3 -m pytest tests/test_timer.py"
env = {{ PYTHONPATH = "{timer}" }}

[[segment]]
name = "startup-import"
include = ["pytest.ini", "tests/test_startup.py", "project_startup.py"]
command = "python3 -m pytest tests/test_startup.py"
env = {{ PYTHONPATH = "{hook}:." }}

[[segment]]
name = "namespace-import"
include = ["pytest.ini", "tests/test_startup.py", "src/acme/localconf.py"]
command = "python3 -m pytest tests/test_startup.py"
env = {{ PYTHONPATH = "{ns}:src" }}

[[segment]]
name = "junitxml"
include = ["pytest.ini", "tests/test_a.py"]
command = "python3 -m pytest -p ' no:junitxml' tests/test_a.py"
"#,
        state = site.join("state").display(),
        timer = site.join("timer").display(),
        hook = site.join("hook").display(),
        ns = site.join("ns").display()
    );
    repo.write("checkdef.toml", &text);
    repo.commit("what a fork carries over");
    let out = run(&repo, &interpreter_path(), "cache", &["--rev", "HEAD"]);
    for (seg, status, runner, note) in [
        ("state", "passed", "warm", ""),
        ("timer", "passed", "process", "armed a timer (ITIMER_PROF)"),
        ("junitxml", "passed", "process", "-p no:junitxml"),
        // The start-up code's `import project_startup` found nothing in the server; a fresh
        // start-up finds the repository's through the relative PYTHONPATH entry.
        (
            "startup-import",
            "passed",
            "process",
            "project_startup, which the warm server looked for and did not find",
        ),
        // ... and a submodule of a namespace package the check's src/acme/ extends.
        (
            "namespace-import",
            "passed",
            "process",
            "acme.localconf, which the warm server looked for and did not find",
        ),
    ] {
        let s = out.seg(seg);
        assert_eq!(s["status"], status, "{seg}: {s}\n{}", out.stderr);
        assert_eq!(s["runner"], runner, "{seg}: {s}");
        let got = s["runner_note"].as_str().unwrap_or_default();
        assert!(got.contains(note), "{seg}: {got}");
    }
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("INFO:t:logged"), "{logged:?}");
    // And again (with the clean verdict kept, its names are kept with it).
    let again = run(
        &repo,
        &interpreter_path(),
        "cache",
        &["--rev", "HEAD", "--force", "-s", "startup-import"],
    );
    let s = again.seg("startup-import");
    assert_eq!(
        (s["status"].as_str(), s["runner"].as_str()),
        (Some("passed"), Some("process")),
        "{s}"
    );

    // Names pytest's import looked for in vain, each in a repository of its own (at the root,
    // where every check starts, they break every fresh session).
    for (file, name) in [("org/__init__.py", "org"), ("msvcrt.py", "msvcrt")] {
        let repo = TestRepo::new();
        repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
            .write("tests/test_a.py", "def test_a():\n    pass\n")
            .write(file, "raise RuntimeError('a fresh session imports me')\n")
            .write(
                "checkdef.toml",
                &format!(
                    "version = 1\n\n[[segment]]\nname = \"a\"\ninclude = [\"pytest.ini\", \"tests/test_a.py\", \"{file}\"]\ncommand = \"python3 -m pytest tests/test_a.py\"\n"
                ),
            );
        repo.commit("a name pytest looks for");
        let out = run(&repo, &interpreter_path(), "cache", &["--rev", "HEAD"]);
        let s = out.seg("a");
        assert_eq!(s["status"], "failed", "{name}: {s}\n{}", out.stderr);
        assert_eq!(s["runner"], "process", "{name}: {s}");
        let got = s["runner_note"].as_str().unwrap_or_default();
        assert!(
            got.contains(&format!(
                "{name}, which the warm server looked for and did not find"
            )),
            "{name}: {got}"
        );
    }
}

/// What `checkdef run` itself was started with — a descriptor its parent left open, a signal
/// its parent blocked — reaches no fresh check, and no warm child either: a test that reads
/// the descriptor (a host file outside the sandbox) or counts on SIGALRM (a timeout) sees what
/// it sees fresh.
#[test]
fn what_checkdef_inherited_reaches_no_warm_child() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let outside = repo.tmp.path().join("outside.txt");
    std::fs::write(&outside, "a host file\n").unwrap();
    let test = "import os, signal\n\n\ndef test_inherited():\n    held = []\n    for fd in os.listdir('/proc/self/fd'):\n        try:\n            held.append(os.readlink('/proc/self/fd/' + fd))\n        except OSError:\n            pass\n    assert not [h for h in held if h.endswith('outside.txt')], held\n    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()\n";
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_inherited.py", test)
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"warm\"\ntests = [\"tests/test_inherited.py\"]\n\n[[segment]]\nname = \"fresh\"\ntests = [\"tests/test_inherited.py\"]\nrunner = \"process\"\n",
        );
    repo.commit("inherited");
    let inner = repo.checkdef_cmd_in(&repo.root, &["run", "--json", "-v", "--rev", "HEAD"]);
    // Started by a parent that left descriptors open on a host file and SIGALRM and SIGUSR2
    // blocked.
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(
            "import os, signal, sys\n\
             fd = os.open(sys.argv[1], os.O_RDONLY)\n\
             os.dup2(fd, 57)\n\
             signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR2})\n\
             os.execv(sys.argv[2], sys.argv[2:])\n",
        )
        .arg(&outside)
        .current_dir(&repo.root);
    run_under(&mut cmd, &inner);
    cmd.env("PATH", interpreter_path())
        .env("CHECKDEF_CACHE_DIR", repo.tmp.path().join("cache"));
    let out = CmdOut::from_output(cmd.output().expect("checkdef"));
    for (seg, runner) in [("warm", "warm"), ("fresh", "process")] {
        let s = out.seg(seg);
        assert_eq!(s["status"], "passed", "{seg}: {s}\n{}", out.stderr);
        assert_eq!(s["runner"], runner, "{seg}: {s}");
    }
}

/// A warm server that will not serve is killed at once, not when the run ends: start-up code
/// that takes a lock for the interpreter's life blocks the probe behind the server (so the
/// server never becomes ready), and the fresh check that runs instead would wait on the lock the
/// server holds until its time limit. (Takes the 60 s the probe and the server are given.)
#[test]
fn a_server_that_will_not_serve_holds_nothing_the_fresh_checks_wait_for() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let lock = repo.tmp.path().join("start-up.lock");
    let pth = format!(
        "import sys, fcntl; hasattr(sys, 'checkdef_lock') or (setattr(sys, 'checkdef_lock', open({:?}, 'w')), fcntl.flock(sys.checkdef_lock, fcntl.LOCK_EX))\n",
        lock.display().to_string()
    );
    let bin = crate::support::venv_with_pth(&repo.tmp.path().join("venv"), &pth);
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/test_a.py", "def test_a():\n    pass\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"a\"\ntests = [\"tests/test_a.py\"]\ntimeout = \"90s\"\n",
        );
    repo.commit("a lock at start-up");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    let s = out.seg("a");
    assert_eq!(s["status"], "passed", "{s}\n{}", out.stderr);
    assert_eq!(s["runner"], "process", "{s}");
    let note = s["runner_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("took too long to start") || note.contains("start-up took over"),
        "{s}"
    );
}

/// A kept clean verdict of the start-up probe goes when a `sys.path` directory that did not
/// exist when it was kept appears: Python remembers the missing entry from its own start-up, so
/// the start-up code's imports never look at it, and a `sitecustomize` put there later (one
/// that loads `.env` from the current directory) would otherwise run in the server only.
#[test]
fn a_kept_clean_verdict_goes_when_a_sys_path_directory_appears() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let extra = repo.tmp.path().join("extra");
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(".env", "BROKEN=1\n")
        .write(
            "tests/test_env.py",
            "import os\n\n\ndef test_env():\n    assert 'BROKEN' not in os.environ\n",
        )
        .write(
            "checkdef.toml",
            &format!(
                "version = 1\n\n[[segment]]\nname = \"env\"\ninclude = [\".env\"]\ntests = [\"tests/test_env.py\"]\nenv = {{ PYTHONPATH = \"{}\" }}\n",
                extra.display()
            ),
        );
    repo.commit("a .env that breaks the test");
    let path = interpreter_path();
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(0);
    assert_eq!(out.seg("env")["runner"], "warm", "{}", out.stdout);
    std::fs::create_dir(&extra).unwrap();
    std::fs::write(
        extra.join("sitecustomize.py"),
        "import os\nos.path.exists('.env') and os.environ.update(dict(l.strip().split('=', 1) for l in open('.env') if '=' in l))\n",
    )
    .unwrap();
    let out = run(&repo, &path, "cache", &["--rev", "HEAD", "--force"]);
    let s = out.seg("env");
    assert_eq!(s["status"], "failed", "{s}\n{}", out.stderr);
    assert_eq!(s["runner"], "process", "{s}");
}

/// A daemon the environment's start-up code starts in a session of its own (a `.pth` with
/// `start_new_session`) runs in every Python: the fingerprint query, the start-up probe, the
/// warm server, the fresh check. Killing their process groups never reached it; the warm
/// server's and the query's outlived `checkdef run`.
#[test]
fn daemons_the_start_up_code_starts_do_not_outlive_the_run() {
    if !have_pytest() {
        return;
    }
    let repo = one_test_repo();
    let pids = repo.tmp.path().join("daemons");
    std::fs::create_dir(&pids).unwrap();
    let venv = repo.tmp.path().join("venv");
    let bin = crate::support::venv_with_pth(&venv, "import checkdef_daemon\n");
    let site = crate::support::venv_site_packages(&venv);
    std::fs::write(
        site.join("checkdef_daemon.py"),
        format!(
            r#"import os, subprocess, sys
if "CHECKDEF_DAEMON" not in os.environ:
    env = dict(os.environ, CHECKDEF_DAEMON="1")
    d = subprocess.Popen(
        [sys.executable, "-S", "-c", "import time; time.sleep(300)"],
        start_new_session=True, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        open(os.path.join({pids:?}, str(d.pid)), "w").close()
    except OSError:
        pass  # the sandbox: its own daemon dies with the check's supervisor
"#,
            pids = pids.display().to_string()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(&repo, &path, "cache", &["--rev", "HEAD"]);
    out.expect_code(0);
    let started: Vec<u32> = std::fs::read_dir(&pids)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    assert!(!started.is_empty(), "no daemon was started");
    let left = crate::lifecycle::survivors(&started);
    for p in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "daemons of the start-up code outlived checkdef run: {left:?} of {started:?}"
    );
}

/// A repository and a cache under directories whose names are not UTF-8 (the cache's with the
/// characters overlayfs splits its options on) are checked by both runners with the right
/// verdicts: the warm runner, told paths as text, says so and runs the check fresh (a lossy
/// spelling would name another directory); a sandbox's description, told to its stages as
/// JSON, keeps the bytes; overlayfs is given them escaped. (Was a panic from outside trial 7,
/// and "could not start" for a cache directory with a `,` or `:`.)
#[test]
fn paths_that_are_not_utf8_are_checked_by_both_runners() {
    use std::os::unix::ffi::OsStrExt as _;
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::named(std::ffi::OsStr::from_bytes(b"repo-\xff"));
    let path = interpreter_path();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("src/m.py", "def f():\n    return 1\n")
        .write(
            "tests/test_m.py",
            "import sys\nsys.path.insert(0, 'src')\nfrom m import f\n\ndef test_f():\n    assert f() == 1\n",
        );
    let text = r#"version = 1

[[segment]]
name = "warm"
include = ["pytest.ini", "src/**", "tests/**"]
command = "python3 -m pytest tests"

[[segment]]
name = "fresh"
include = ["pytest.ini", "src/**", "tests/**"]
command = "python3 -m pytest tests"
runner = "process"
"#;
    repo.write("checkdef.toml", text);
    repo.commit("not utf-8");
    let cache_dir = repo
        .tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"cache-\xfe,a:b\\c"));
    let go = |extra: &[&str]| {
        let mut args = vec!["run", "--json", "-v"];
        args.extend_from_slice(extra);
        let mut cmd = repo.checkdef_cmd_in(&repo.root, &args);
        cmd.env("PATH", &path).env("CHECKDEF_CACHE_DIR", &cache_dir);
        CmdOut::from_output(cmd.output().expect("run checkdef"))
    };
    let out = go(&[]);
    out.expect_code(0);
    for name in ["warm", "fresh"] {
        assert_eq!(out.seg(name)["status"], "passed", "{}", out.seg(name));
        assert_eq!(out.seg(name)["runner"], "process", "{}", out.seg(name));
    }
    let note = out.seg("warm")["runner_note"].as_str().unwrap_or_default();
    assert!(note.contains("is not UTF-8"), "{note}");
    let out = go(&[]);
    out.expect_code(0);
    for name in ["warm", "fresh"] {
        assert_eq!(out.seg(name)["source"], "local", "{}", out.seg(name));
    }
    // Broken in the work tree: both fail.
    repo.write("src/m.py", "def f():\n    return 2\n");
    let out = go(&["--worktree"]);
    out.expect_code(1);
    for name in ["warm", "fresh"] {
        assert_eq!(out.seg(name)["status"], "failed", "{}", out.seg(name));
    }
    // Sandboxes in a directory that is not UTF-8: a check would be told a TMPDIR that is not
    // there (a lossy spelling); the run says so and what to do, and runs nothing.
    let sandboxes = repo
        .tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"sandboxes-\xfe"));
    std::fs::create_dir(&sandboxes).unwrap();
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--worktree"]);
    cmd.env("PATH", &path)
        .env("CHECKDEF_CACHE_DIR", &cache_dir)
        .env("CHECKDEF_SANDBOX_DIR", &sandboxes);
    let out = CmdOut::from_output(cmd.output().expect("run checkdef"));
    out.expect_code(2);
    assert!(
        out.stderr.contains("is not UTF-8")
            && out.stderr.contains("hint: set CHECKDEF_SANDBOX_DIR"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&sandboxes).unwrap().count(), 0);
}

/// The processes whose command line holds every one of `words` (a sandbox holder of a segment).
fn processes_with(words: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline);
        if words.iter().all(|w| text.contains(w)) && crate::lifecycle::running(pid) {
            found.push(pid);
        }
    }
    found
}

/// A warm check that waits for a slot has its sandbox set up meanwhile (its holder is there
/// while another check runs), but its time limit and duration count from its turn; stopped
/// while it waits, it is reported as never started and its holder goes.
#[test]
fn a_check_waiting_for_its_slot_is_set_up_ahead_and_timed_from_its_turn() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let marks = repo.tmp.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_long.py",
            "import os, time\n\n\ndef test_long():\n    open(os.path.join(os.environ['MARKS'], 'long'), 'w').close()\n    time.sleep(float(os.environ['SLEEP']))\n",
        )
        .write("tests/test_short.py", "def test_short():\n    pass\n")
        // More inputs: with no durations known, `long` is started first.
        .write("extra/a.txt", "a\n")
        .write("extra/b.txt", "b\n");
    let config = |sleep: &str| {
        format!(
            r#"version = 1

[[segment]]
name = "long"
include = ["pytest.ini", "tests/test_long.py", "extra/**"]
command = "python3 -m pytest tests/test_long.py"
env = {{ MARKS = "{marks}", SLEEP = "{sleep}" }}

[[segment]]
name = "short-wait"
include = ["pytest.ini", "tests/test_short.py"]
command = "python3 -m pytest tests/test_short.py"
timeout = "5s"
env = {{ ROUND = "{sleep}" }}
"#,
            marks = marks.display()
        )
    };
    repo.write("checkdef.toml", &config("8"));
    repo.commit("two checks");
    let path = interpreter_path();
    let out = run(&repo, &path, "cache", &["-j", "1"]);
    out.expect_code(0);
    let (long, short) = (out.seg("long"), out.seg("short-wait"));
    assert_eq!(long["runner"], "warm", "{long}");
    assert_eq!(short["runner"], "warm", "{short}");
    assert_eq!(short["status"], "passed", "{short}");
    assert!(
        short["duration_s"].as_f64().unwrap() < long["duration_s"].as_f64().unwrap(),
        "its duration counts from its turn: {short} {long}"
    );

    // Stopped while it waits: its holder was there, and goes; it never started.
    repo.write("checkdef.toml", &config("300"));
    repo.commit("longer");
    let _ = std::fs::remove_file(marks.join("long"));
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json", "-j", "1"]);
    cmd.env("PATH", &path)
        .env("CHECKDEF_CACHE_DIR", repo.tmp.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let checkdef = cmd.spawn().unwrap();
    let start = std::time::Instant::now();
    while !marks.join("long").exists() {
        assert!(start.elapsed().as_secs() < 120, "the long check never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut holders = processes_with(&["__sandbox", "--hold", "checkdef-short-wait"]);
    while holders.is_empty() {
        assert!(
            start.elapsed().as_secs() < 120,
            "no holder is set up for the waiting check"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        holders = processes_with(&["__sandbox", "--hold", "checkdef-short-wait"]);
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(checkdef.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = CmdOut::from_output(checkdef.wait_with_output().unwrap());
    out.expect_code(130);
    let short = out.seg("short-wait");
    assert_eq!(short["status"], "failed", "{short}");
    assert_eq!(short["reason"], "not run (interrupted)", "{short}");
    assert!(
        crate::lifecycle::survivors(&holders).is_empty(),
        "the waiting check's holder outlived the run: {holders:?}"
    );
}
