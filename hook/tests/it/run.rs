//! `checkdef run`: the seed demo with real pytest, failures, filtered sandboxes, Ctrl-C, segment
//! selection, usage errors and the environment a check sees.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{CmdOut, PYTEST_CONFIG, TestRepo, hermetic, pytest_layout};

/// Whether `python3 -m pytest` works here; panics under CI when it does not.
pub fn have_pytest() -> bool {
    let ok = Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if testkit::in_ci() {
            panic!("python3 -m pytest is required for this test under CI");
        }
        eprintln!("SKIP: python3 -m pytest is not available");
    }
    ok
}

fn pytest_repo() -> Option<TestRepo> {
    if !have_pytest() {
        return None;
    }
    let repo = TestRepo::new();
    pytest_layout(&repo);
    repo.commit("seed");
    Some(repo)
}

/// A repository holding `src/x` and the given configuration, committed.
fn shell_repo(config: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("src/x", "x\n").write("checkdef.toml", config);
    repo.commit("init");
    repo
}

#[test]
fn seed_demo_flow_with_real_pytest() {
    let Some(repo) = pytest_repo() else { return };

    let r1 = repo.run_json(&[], &[]);
    r1.expect_code(0);
    assert_eq!(r1.json["commit"], serde_json::Value::Null, "work tree mode");
    for s in ["foo-tests", "bar-tests"] {
        assert_eq!(r1.source(s), "run", "{s}");
        assert_eq!(r1.status(s), "passed", "{s}");
        assert_eq!(r1.seg(s)["exit_code"], 0);
    }
    assert_eq!(r1.json["summary"]["ran"], 2);
    assert_eq!(repo.cached_narinfos().len(), 2);

    let r2 = repo.run_json(&[], &[]);
    r2.expect_code(0);
    for s in ["foo-tests", "bar-tests"] {
        assert_eq!(r2.source(s), "local", "{s}");
        assert_eq!(r2.status(s), "passed");
        assert_eq!(r2.seg(s)["input_hash"], r1.seg(s)["input_hash"]);
    }
    assert_eq!(r2.json["summary"]["cached"], 2);
    assert_eq!(r2.json["summary"]["ran"], 0);

    repo.write("src/foo/__init__.py", "NAME = \"foo\"  # edited\n");
    let r3 = repo.run_json(&[], &[]);
    r3.expect_code(0);
    assert_eq!(r3.source("foo-tests"), "run");
    assert_eq!(r3.status("foo-tests"), "passed");
    assert_eq!(r3.source("bar-tests"), "local");
    assert_ne!(
        r3.seg("foo-tests")["input_hash"],
        r1.seg("foo-tests")["input_hash"]
    );

    // `--rev HEAD` reads the commit, not the edited work tree: both results exist already.
    let head = repo.head();
    let r4 = repo.run_json(&["--rev", "HEAD"], &[]);
    r4.expect_code(0);
    assert_eq!(r4.json["commit"], head.as_str());
    assert_eq!(r4.source("foo-tests"), "local");
    assert_eq!(r4.source("bar-tests"), "local");
    assert_eq!(
        r4.seg("foo-tests")["input_hash"],
        r1.seg("foo-tests")["input_hash"]
    );

    // Committing the edit: the commit's inputs equal the work tree's, so nothing runs.
    let edited = repo.commit("edit foo");
    let r5 = repo.run_json(&["--rev", "HEAD"], &[]);
    r5.expect_code(0);
    assert_eq!(r5.json["commit"], edited.as_str());
    assert_eq!(r5.source("foo-tests"), "local");
    assert_eq!(
        r5.seg("foo-tests")["input_hash"],
        r3.seg("foo-tests")["input_hash"]
    );

    // A commit whose bar changed runs bar only, from the commit's objects.
    repo.write("src/bar/__init__.py", "NAME = \"bar\"  # edited\n");
    repo.commit("edit bar");
    repo.write(
        "src/bar/__init__.py",
        "NAME = \"broken in the work tree only\"\n",
    );
    let r6 = repo.run_json(&["--rev", "HEAD"], &[]);
    r6.expect_code(0);
    assert_eq!(r6.source("foo-tests"), "local");
    assert_eq!(r6.source("bar-tests"), "run");
    assert_eq!(r6.status("bar-tests"), "passed");
}

#[test]
fn a_failing_segment_exits_1_prints_its_log_tail_and_is_not_cached() {
    let repo = shell_repo(
        r#"version = 1

[[segment]]
name = "good"
include = ["src/**"]
command = "echo fine"

[[segment]]
name = "bad"
include = ["src/**"]
command = "echo first-output-line; echo 'AssertionError: tail-marker-7f3' >&2; exit 3"
"#,
    );
    let r1 = repo.run_json(&[], &[]);
    r1.expect_code(1);
    assert_eq!(r1.status("bad"), "failed");
    assert_eq!(r1.seg("bad")["exit_code"], 3);
    assert_eq!(r1.status("good"), "passed");
    assert!(
        r1.stderr.contains("AssertionError: tail-marker-7f3"),
        "log tail missing from stderr:\n{}",
        r1.stderr
    );
    assert!(r1.stderr.contains("first-output-line"), "{}", r1.stderr);
    assert_eq!(r1.json["summary"]["failed"], 1);
    // Only the passing segment was stored.
    let stored = repo.cached_narinfos();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let bad_path = r1.seg("bad")["store_path"].as_str().unwrap().to_owned();
    let bad_hash_part = &bad_path["/nix/store/".len().."/nix/store/".len() + 32];
    assert!(
        !stored
            .iter()
            .any(|p| p.to_string_lossy().contains(bad_hash_part))
    );

    let r2 = repo.run_json(&[], &[]);
    r2.expect_code(1);
    assert_eq!(
        r2.source("bad"),
        "run",
        "a failure is never served from the cache"
    );
    assert_eq!(r2.status("bad"), "failed");
    assert_eq!(r2.source("good"), "local");
}

#[test]
fn an_undeclared_import_fails_in_the_filtered_sandbox_and_passes_with_sandbox_full() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    pytest_layout(&repo);
    // test_foo also needs bar, which foo-tests does not declare.
    repo.write(
        "tests/test_foo.py",
        "import bar\nimport foo\n\n\ndef test_foo():\n    assert foo.NAME == \"foo\"\n    assert bar.NAME == \"bar\"\n",
    );
    repo.commit("foo uses bar");

    // Plain pytest in the repository passes: every file is there.
    let mut plain = Command::new("python3");
    plain
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_foo.py",
        ])
        .current_dir(&repo.root);
    hermetic(&mut plain, &repo.home);
    let out = plain.output().unwrap();
    assert!(
        out.status.success(),
        "plain pytest should pass: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let r = repo.run_json(&["--segment", "foo-tests"], &[]);
    r.expect_code(1);
    assert_eq!(r.status("foo-tests"), "failed");
    // Isolated, the sandbox names the file; without isolation, the import is missing.
    assert!(
        r.stderr.contains(
            "foo-tests: read src/bar/__init__.py, which is not an input of this segment (add it to include)"
        ) || (r.stderr.contains("sandbox: NOT isolated")
            && r.stderr.contains("No module named 'bar'")),
        "{}",
        r.stderr
    );
    assert!(repo.cached_narinfos().is_empty());

    repo.write(
        "checkdef.toml",
        &PYTEST_CONFIG.replace(
            "name = \"foo-tests\"\n",
            "name = \"foo-tests\"\nsandbox = \"full\"\n",
        ),
    );
    let r = repo.run_json(&["--segment", "foo-tests"], &[]);
    r.expect_code(0);
    assert_eq!(r.source("foo-tests"), "run");
    assert_eq!(r.status("foo-tests"), "passed");
}

pub fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie (state Z) has exited; only its parent's bookkeeping is left.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

pub fn wait_for_file(path: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_stops_the_run_kills_the_check_and_stores_nothing() {
    stop_the_run_with("-INT");
}

#[test]
fn sighup_stops_the_run_as_sigint_does() {
    // A closed terminal or a dropped ssh connection: its default action killed checkdef at
    // once, leaving the check's sandbox (and the warm server's directory) behind.
    stop_the_run_with("-HUP");
}

fn stop_the_run_with(signal: &str) {
    let repo = TestRepo::new();
    let pidfile = repo.tmp.path().join("child.pid");
    let tmpdir = repo.tmp.path().join("tmpdir");
    std::fs::create_dir(&tmpdir).unwrap();
    repo.write("src/x", "x\n").write(
        "checkdef.toml",
        &format!(
            r#"version = 1

[[segment]]
name = "slow"
include = ["src/**"]
env = {{ PIDFILE = "{}" }}
command = "sleep 30 & echo $! > \"$PIDFILE\"; wait"

[[segment]]
name = "later"
include = ["src/**"]
command = "echo never started"
"#,
            pidfile.display()
        ),
    );
    repo.commit("init");
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json", "--jobs", "1"]);
    cmd.env("TMPDIR", &tmpdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let sleeper: u32 = wait_for_file(&pidfile, Duration::from_secs(20))
        .trim()
        .parse()
        .unwrap();
    assert!(!process_is_gone(sleeper));
    // The sandbox exists while the check runs (and the next check's, prepared meanwhile).
    let sandboxes = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("checkdef-"))
            .collect()
    };
    // Sandboxes live in the user's directory of the temporary directory (`checkdef-UID/`).
    let during: Vec<String> = sandboxes(&tmpdir)
        .into_iter()
        .flat_map(|d| sandboxes(&tmpdir.join(d)))
        .collect();
    assert!(
        during.iter().any(|n| n.starts_with("checkdef-slow-")) && during.len() <= 2,
        "{during:?}"
    );

    let sent = Instant::now();
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "checkdef ignored {signal}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = CmdOut::from_output(child.wait_with_output().unwrap());
    assert!(sent.elapsed() < Duration::from_secs(15));
    out.expect_code(130);
    assert_eq!(out.json["interrupted"], true);
    assert_eq!(out.status("slow"), "failed");
    assert_eq!(out.status("later"), "failed");
    // `later` never started: it is not counted as run (from outside trial 9).
    assert_eq!(out.json["summary"]["ran"], 1, "{}", out.json["summary"]);
    assert!(
        repo.cached_narinfos().is_empty(),
        "{:?}",
        repo.cached_narinfos()
    );
    assert!(sandboxes(&tmpdir).is_empty(), "{:?}", sandboxes(&tmpdir));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_is_gone(sleeper) {
        assert!(
            Instant::now() < deadline,
            "the check's child {sleeper} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_skip_worktree_or_assume_unchanged_edit_is_what_the_check_sees() {
    // From outside trial 6: the index blob of a flagged file was hashed and put in the
    // sandbox, so a local edit passed on the committed content (a cold cache failed instead:
    // "changed while checkdef was reading it").
    let repo = shell_repo(
        "version = 1\n\n[[segment]]\nname = \"conf\"\ninclude = [\"src/**\"]\ncommand = \"cat src/x; grep -qx x src/x\"\n",
    );
    for flag in ["skip-worktree", "assume-unchanged"] {
        repo.run_json(&[], &[]).expect_code(0);
        repo.git(&["update-index", &format!("--{flag}"), "src/x"]);
        repo.write("src/x", "edited\n");
        let warm = repo.run_json(&[], &[]);
        assert_eq!(warm.source("conf"), "run", "{flag}: {}", warm.stderr);
        assert_eq!(warm.status("conf"), "failed", "{flag}");
        let cold_cache = repo.home.join(format!("cold-{flag}"));
        let cold = repo.run_json(&[], &[("CHECKDEF_CACHE_DIR", cold_cache.to_str().unwrap())]);
        assert_eq!(cold.status("conf"), "failed", "{flag}");
        assert!(cold.stderr.contains("edited"), "{flag}: {}", cold.stderr);
        assert!(!cold.stderr.contains("changed while"), "{}", cold.stderr);
        repo.git(&["update-index", &format!("--no-{flag}"), "src/x"]);
        repo.git(&["checkout", "--", "src/x"]);
    }
}

#[test]
fn segment_selection_and_usage_errors() {
    let repo = shell_repo(
        r#"version = 1

[[segment]]
name = "foo"
include = ["src/**"]
command = "true"

[[segment]]
name = "bar"
include = ["src/**"]
command = "true"
"#,
    );
    let r = repo.run_json(&["--segment", "foo"], &[]);
    r.expect_code(0);
    assert_eq!(r.sources(), vec![("foo".to_owned(), "run".to_owned())]);
    let r = repo.run_json(&["-s", "bar", "-s", "foo"], &[]);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "local");
    assert_eq!(r.source("bar"), "run");

    let r = repo.run_json(&["--segment", "nope"], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("unknown segment `nope`"), "{}", r.stderr);
    assert!(r.stderr.contains("foo, bar"), "{}", r.stderr);

    let r = repo.run_json(&["--jobs", "0"], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("--jobs"), "{}", r.stderr);

    let r = repo.run_json(&["--rev", "no-such-rev"], &[]);
    r.expect_code(2);

    let elsewhere = repo.tmp.path().join("not-a-repo");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = CmdOut::from_output(
        repo.checkdef_cmd_in(&elsewhere, &["run", "--json"])
            .env("GIT_CEILING_DIRECTORIES", repo.tmp.path())
            .output()
            .unwrap(),
    );
    out.expect_code(2);
    assert!(out.stderr.contains("git"), "{}", out.stderr);

    repo.write(
        "checkdef.toml",
        "version = 1\n[[segment]]\nname = \"x\"\ninclude = [\"src/**\"\n",
    );
    let r = repo.run_json(&[], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("checkdef.toml:"), "{}", r.stderr);
    repo.write(
        "checkdef.toml",
        "version = 1\n[[segment]]\nname = \"x\"\ninclude = [\"src/**\"]\ncomand = \"true\"\n",
    );
    let r = repo.run_json(&[], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("checkdef.toml:5"), "{}", r.stderr);
}

#[test]
fn declared_env_reaches_the_check_and_changes_the_hash() {
    let config = |greeting: &str| {
        format!(
            r#"version = 1

[defaults]
env = {{ GREETING = "{greeting}" }}

[[segment]]
name = "greet"
include = ["src/**"]
command = "echo \"greeting=$GREETING\"; test \"$GREETING\" = hello"
"#
        )
    };
    let repo = shell_repo(&config("hello"));
    let r1 = repo.run_json(&[], &[]);
    r1.expect_code(0);
    assert_eq!(r1.source("greet"), "run");
    // The same variable in checkdef's own environment changes nothing: declared env wins.
    let r2 = repo.run_json(&[], &[("GREETING", "other")]);
    r2.expect_code(0);
    assert_eq!(r2.source("greet"), "local");

    repo.write("checkdef.toml", &config("hola"));
    let r3 = repo.run_json(&[], &[]);
    assert_ne!(r3.seg("greet")["input_hash"], r1.seg("greet")["input_hash"]);
    assert_eq!(r3.source("greet"), "run");
    // The check saw the new value (its test compares it with `hello`).
    r3.expect_code(1);
    assert!(r3.stderr.contains("greeting=hola"), "{}", r3.stderr);
}

#[test]
fn passthrough_reaches_the_check_without_changing_the_hash() {
    let repo = shell_repo(
        r#"version = 1

[defaults]
passthrough = ["MY_TOKEN"]

[[segment]]
name = "token"
include = ["src/**"]
command = "echo \"token=$MY_TOKEN\"; test -n \"$MY_TOKEN\""
"#,
    );
    let r0 = repo.run_json(&[], &[]);
    r0.expect_code(1);
    assert!(
        r0.stderr.contains("token=\n") || r0.stderr.contains("token="),
        "{}",
        r0.stderr
    );
    let r1 = repo.run_json(&[], &[("MY_TOKEN", "first")]);
    r1.expect_code(0);
    assert_eq!(r1.source("token"), "run");
    assert_eq!(r1.seg("token")["input_hash"], r0.seg("token")["input_hash"]);
    let r2 = repo.run_json(&[], &[("MY_TOKEN", "second")]);
    r2.expect_code(0);
    assert_eq!(r2.source("token"), "local");
    assert_eq!(r2.seg("token")["input_hash"], r1.seg("token")["input_hash"]);
}

#[test]
fn home_and_other_variables_are_hidden_unless_passed_through() {
    let repo = shell_repo(
        r#"version = 1

[[segment]]
name = "hidden"
include = ["src/**"]
command = "echo \"home=$HOME other=$SOME_OTHER_VAR\"; test -z \"$HOME\" && test -z \"$SOME_OTHER_VAR\" && test -n \"$PATH\""

[[segment]]
name = "visible"
include = ["src/**"]
passthrough = ["HOME"]
command = "echo \"home=$HOME\"; test -n \"$HOME\" && test -d \"$HOME\""
"#,
    );
    let r = repo.run_json(&[], &[("SOME_OTHER_VAR", "leak")]);
    r.expect_code(0);
    assert_eq!(r.status("hidden"), "passed");
    assert_eq!(r.status("visible"), "passed");
    // HOME reached `visible` as checkdef's own HOME (`-v` replays the stored log).
    let r = repo.checkdef_env(&["run", "-v", "--segment", "visible"], &[]);
    r.expect_code(0);
    let want = format!("home={}", repo.home.display());
    assert!(r.stderr.contains(&want), "{want} not in:\n{}", r.stderr);
    let r = repo.checkdef_env(&["run", "-v", "--segment", "hidden"], &[]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("home= other=\n") || r.stderr.contains("home= other="),
        "{}",
        r.stderr
    );
}

/// Where the sandbox goes: the temporary directory by default, `CHECKDEF_SANDBOX_DIR` when set
/// (in `checkdef-<uid>/`); the check's `TMPDIR` inside it; both removed afterwards. Isolated,
/// the check's working directory is the repository's own path (the view is mounted there);
/// without isolation, a copy of the inputs in the sandbox.
#[test]
fn sandboxes_go_to_the_temporary_directory_or_where_told() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path();
    let repo = shell_repo(&format!(
        r#"version = 1

[[segment]]
name = "where"
include = ["src/**"]
env = {{ OUT = "{}" }}
command = "pwd > \"$OUT/pwd\"; echo \"$TMPDIR\" > \"$OUT/tmp\"; touch \"$TMPDIR/scratch\""
"#,
        out.display()
    ));
    let read = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let run = |env: &[(&str, &str)]| {
        let mut cmd = repo.checkdef_cmd_in(&repo.root, &["run", "--json"]);
        cmd.envs(env.iter().copied());
        let o = CmdOut::from_output(cmd.output().unwrap());
        o.expect_code(0);
        assert_eq!(o.source("where"), "run", "{}", o.stderr);
        let isolated = !o.stderr.contains("sandbox: NOT isolated");
        (
            PathBuf::from(read("pwd")),
            PathBuf::from(read("tmp")),
            isolated,
        )
    };
    let empty = |d: &Path| std::fs::read_dir(d).unwrap().count() == 0;
    let root = repo.root.canonicalize().unwrap();

    let tmpdir = repo.tmp.path().join("tmpdir");
    std::fs::create_dir(&tmpdir).unwrap();
    let (pwd, tmp, isolated) = run(&[("TMPDIR", tmpdir.to_str().unwrap())]);
    assert!(tmp.starts_with(&tmpdir) && tmp.ends_with("tmp"), "{tmp:?}");
    if isolated {
        assert_eq!(pwd, root);
    } else {
        assert_eq!(tmp, pwd.parent().unwrap().join("tmp"));
    }
    assert!(empty(&tmpdir), "removed after the run");

    let chosen = repo.tmp.path().join("sandboxes");
    std::fs::create_dir(&chosen).unwrap();
    let other_cache = repo.tmp.path().join("cache2");
    let (pwd, tmp, isolated) = run(&[
        ("TMPDIR", tmpdir.to_str().unwrap()),
        ("CHECKDEF_SANDBOX_DIR", chosen.to_str().unwrap()),
        ("CHECKDEF_CACHE_DIR", other_cache.to_str().unwrap()),
    ]);
    assert!(tmp.starts_with(&chosen), "{tmp:?}");
    if isolated {
        assert_eq!(pwd, root);
    }
    assert!(empty(&chosen) && empty(&tmpdir), "removed after the run");
}

#[test]
fn a_module_skipped_as_a_whole_fails_unless_the_segment_says_no_tests_pass() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write(
        "tests/test_optional.py",
        "import pytest\npytest.importorskip('surely_not_installed_anywhere')\n\ndef test_x():\n    assert False\n",
    )
    .write(
        "tests/test_empty.py",
        "# every test was removed, by mistake\n",
    )
    .write(
        "checkdef.toml",
        "version = 1\n\n[[segment]]\nname = \"optional\"\ntests = [\"tests/test_optional.py\"]\n\n[[segment]]\nname = \"empty\"\ntests = [\"tests/test_empty.py\"]\n",
    );
    repo.commit("init");
    // As a fresh `pytest tests/test_optional.py` exits 5, the check fails, and says what to do.
    let r = repo.run_json(&[], &[]);
    r.expect_code(1);
    for s in ["optional", "empty"] {
        assert_eq!(r.status(s), "failed", "{s}");
    }
    assert!(
        r.stderr
            .contains("pytest collected no tests (exit 5), a failure")
            && r.stderr.contains("set no_tests = \"pass\" on the segment"),
        "{}",
        r.stderr
    );
    // Streamed live (`-v`), the line is there too.
    let live = repo.run_json(&["-v"], &[]);
    assert!(
        live.stderr
            .contains("optional │ [checkdef: pytest collected no tests (exit 5), a failure"),
        "{}",
        live.stderr
    );
    // The segment says so: a pass, stored; the other one still fails.
    let config = std::fs::read_to_string(repo.path("checkdef.toml")).unwrap();
    repo.write(
        "checkdef.toml",
        &config.replace(
            "tests = [\"tests/test_optional.py\"]\n",
            "tests = [\"tests/test_optional.py\"]\nno_tests = \"pass\"\n",
        ),
    );
    repo.commit("the optional module may be skipped");
    let r = repo.run_json(&[], &[]);
    r.expect_code(1);
    assert_eq!(r.status("optional"), "passed");
    assert_eq!(r.source("optional"), "run");
    assert_eq!(r.status("empty"), "failed");
    let again = repo.run_json(&[], &[]);
    assert_eq!(again.source("optional"), "local");
    // Back to the default: the stored pass does not answer for the stricter rule.
    repo.write("checkdef.toml", &config);
    repo.commit("strict again");
    let strict = repo.run_json(&[], &[]);
    strict.expect_code(1);
    assert_eq!(strict.status("optional"), "failed");
    assert_eq!(strict.source("optional"), "run");
    // A test that fails is never hidden by the rule: only exit 5 is.
    repo.write(
        "tests/test_optional.py",
        "def test_x():\n    assert False\n",
    );
    repo.write(
        "checkdef.toml",
        &config.replace(
            "tests = [\"tests/test_optional.py\"]\n",
            "tests = [\"tests/test_optional.py\"]\nno_tests = \"pass\"\n",
        ),
    );
    repo.commit("the module runs after all, and fails");
    let failing = repo.run_json(&[], &[]);
    assert_eq!(failing.status("optional"), "failed");
    // Exit code 5 that is no empty session: `pytest.exit(returncode=5)` after a failure, and a
    // test's `os._exit(5)` — failures, whatever the rule says.
    for (i, body) in [
        "import pytest\n\n\ndef test_bad():\n    assert False\n\n\ndef test_stop():\n    pytest.exit('stop', returncode=5)\n",
        "import os\n\n\ndef test_ok():\n    pass\n\n\ndef test_crash():\n    os._exit(5)\n",
    ]
    .into_iter()
    .enumerate()
    {
        repo.write("tests/test_optional.py", body);
        repo.commit(&format!("exit 5 from a test, {i}"));
        let r = repo.run_json(&[], &[]);
        assert_eq!(r.status("optional"), "failed", "{body}: {}", r.stderr);
        assert_eq!(r.seg("optional")["exit_code"], 5);
        assert!(
            r.stderr
                .contains("does not end with pytest's summary of a session that ran no test"),
            "{}",
            r.stderr
        );
    }
}
