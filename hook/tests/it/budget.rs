//! The push-time budget and pre-warming (issue 17), end to end: real `git commit` and
//! `git push` through the installed hooks, real pytest checks, real background runs.
//!
//! No assertion is on wall-clock time. The slow checks wait for a *gate* file the test creates
//! (so "the push returned while the check still runs" is a state, not a race), the budget is a
//! few seconds, and every wait is a generous hang guard. Every test kills whatever background
//! run it left ([`Background`] on drop), so no process outlives a test.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{CmdOut, TestRepo, rev_parse_in};

/// Far beyond anything these tests need on a loaded machine; only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(240);

/// A pytest check that records each run in `$MARKS/<segment>.runs`, waits for `$MARKS/gate`, and
/// then passes (or fails when `$MARKS/fail` exists).
const SLOW_TEST: &str = r#"import os
import time


def test_slow():
    marks = os.environ["MARKS"]
    with open(os.path.join(marks, "slow.runs"), "a") as f:
        f.write("%d\n" % os.getpid())
    while not os.path.exists(os.path.join(marks, "gate")):
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(marks, "fail"))
"#;

const QUICK_TEST: &str = r#"import os


def test_quick():
    with open(os.path.join(os.environ["MARKS"], "quick.runs"), "a") as f:
        f.write("%d\n" % os.getpid())
"#;

fn config(hook: &str, marks: &Path) -> String {
    format!(
        r#"version = 1

{hook}

[defaults]
env = {{ MARKS = "{marks}" }}

[[segment]]
name = "slow"
include = ["tests/test_slow.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_slow.py"

[[segment]]
name = "quick"
include = ["tests/test_quick.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_quick.py"
"#,
        marks = marks.display()
    )
}

/// A repository with the two pytest checks committed, a bare remote and checkdef's hook(s).
struct Setup {
    // First, so it is dropped (and kills leftovers) before the temp dir goes.
    bg: Background,
    repo: TestRepo,
    bare: PathBuf,
    marks: PathBuf,
}

impl Setup {
    fn new(hook: &str, install: &[&str]) -> Setup {
        let repo = TestRepo::new();
        let marks = repo.tmp.path().join("marks");
        std::fs::create_dir(&marks).unwrap();
        repo.write("tests/test_slow.py", SLOW_TEST)
            .write("tests/test_quick.py", QUICK_TEST)
            .write(".gitignore", "__pycache__/\n")
            .write("checkdef.toml", &config(hook, &marks));
        let mut args = vec!["install"];
        args.extend_from_slice(install);
        repo.checkdef_env(&args, &[]).expect_code(0);
        let bare = repo.add_bare_remote("origin", "remote");
        let bg = Background {
            cache: repo.cache.clone(),
        };
        Setup {
            repo,
            bare,
            marks,
            bg,
        }
    }

    fn open_gate(&self) {
        std::fs::write(self.marks.join("gate"), "").unwrap();
    }

    fn runs(&self, segment: &str) -> usize {
        std::fs::read_to_string(self.marks.join(format!("{segment}.runs")))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Wait (hang guard) until `slow` has started `n` times.
    fn wait_runs(&self, segment: &str, n: usize) {
        let start = Instant::now();
        while self.runs(segment) < n {
            if start.elapsed() > HANG_GUARD {
                panic!(
                    "waited too long for {segment} to start {n} time(s); background logs:\n{}",
                    self.bg.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (hang guard) until the last recorded run of `segment` is alive. After a push that
    /// stopped its own run and returned, that is the background run's (the push's, if it got
    /// as far as starting pytest within the budget, is gone).
    fn wait_live(&self, segment: &str) {
        let start = Instant::now();
        loop {
            let last = std::fs::read_to_string(self.marks.join(format!("{segment}.runs")))
                .unwrap_or_default()
                .lines()
                .last()
                .and_then(|l| l.parse::<u32>().ok());
            if last.is_some_and(running) {
                return;
            }
            if start.elapsed() > HANG_GUARD {
                panic!(
                    "waited too long for a live run of {segment}; background logs:\n{}",
                    self.bg.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn push(&self) -> CmdOut {
        let mut cmd = self
            .repo
            .git_cmd_in(&self.repo.root, &["push", "origin", "main"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        output_within_guard(cmd.spawn().unwrap(), "git push")
    }

    /// `git add -A && git commit` with the hooks seeing this repository's cache; the new commit.
    fn commit_with_hooks(&self, msg: &str) -> String {
        self.repo.git(&["add", "-A"]);
        let mut cmd = self
            .repo
            .git_cmd_in(&self.repo.root, &["commit", "-q", "-m", msg]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        output_within_guard(cmd.spawn().unwrap(), "git commit").expect_code(0);
        self.repo.head()
    }

    fn remote_main(&self) -> Option<String> {
        rev_parse_in(&self.bare, "refs/heads/main")
    }
}

/// The background runs of one cache; on drop, every one still running is killed (SIGKILL; its
/// checks die with it, see run/supervise.rs) and reaped by init, so no test leaks processes.
struct Background {
    cache: PathBuf,
}

impl Background {
    fn records(&self) -> Vec<Value> {
        let dir = self.cache.join("checkdef-background");
        let mut out: Vec<Value> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_owned());
        out
    }

    /// Every background log, for failure messages.
    fn logs(&self) -> String {
        let dir = self.cache.join("checkdef-background");
        let mut out = String::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                out.push_str(&format!("== {}\n", e.path().display()));
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// Wait (hang guard) for `n` records, and return them.
    fn wait_started(&self, n: usize) -> Vec<Value> {
        wait_for("a background run to start", || self.records().len() >= n);
        self.records()
    }

    /// Wait (hang guard) until every background run has finished, and return the records.
    fn wait_finished(&self) -> Vec<Value> {
        wait_for("the background runs to finish", || {
            self.records()
                .iter()
                .all(|r| !r["finished_at"].is_null() || !running(pid(r)))
        });
        self.records()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for r in self.records() {
            if r["finished_at"].is_null() && running(pid(&r)) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid(&r) as i32).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
        }
    }
}

/// How segment `name` ended in a background run's record.
fn segment_end<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["segments"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {record}"))
}

fn pid(record: &Value) -> u32 {
    record["pid"].as_u64().unwrap() as u32
}

/// Whether process `pid` still runs (a zombie does not count: it runs nothing).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest.trim_start());
    !state.is_empty() && !state.starts_with('Z')
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG_GUARD, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn output_within_guard(mut child: Child, what: &str) -> CmdOut {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return CmdOut::from_output(child.wait_with_output().unwrap());
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} hung (killed after {HANG_GUARD:?}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn at_the_budget_block_stops_the_running_check_and_refuses_the_push() {
    let s = Setup::new("[hook]\nbudget = \"3s\"\non-budget = \"block\"", &[]);
    let head = s.repo.commit("init");
    // The gate never opens: only the budget can end the slow check.
    let out = s.push();
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.remote_main(), None, "nothing was pushed");
    assert!(
        out.stderr
            .contains("not finished within the push budget of 3s (stopped): slow"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "finish them: checkdef run --rev {head}, then push again"
        )),
        "{}",
        out.stderr
    );
    // The stopped check's pytest (if it got as far as starting) is gone (its group was stopped by the supervisor).
    let pids: Vec<u32> = std::fs::read_to_string(s.marks.join("slow.runs"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    wait_for("the stopped check to be gone", || {
        pids.iter().all(|p| !running(*p))
    });
    // Nothing went to the background.
    assert!(s.bg.records().is_empty());

    // Finishing it as told, then pushing again, is all hits.
    s.open_gate();
    let before = s.runs("slow");
    let run = s.repo.run_json(&["--rev", &head], &[]);
    run.expect_code(0);
    assert_eq!(run.source("slow"), "run");
    let out = s.push();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.remote_main().as_deref(), Some(head.as_str()));
    assert!(out.stderr.contains("0 ran, 2 cached"), "{}", out.stderr);
    assert_eq!(s.runs("slow"), before + 1);
}

#[test]
fn at_the_budget_defer_pushes_and_the_check_finishes_in_the_background() {
    let s = Setup::new("[hook]\nbudget = \"3s\"\non-budget = \"defer\"", &[]);
    let head = s.repo.commit("init");
    let out = s.push();
    // The push returned (and pushed) while the slow check still waits for its gate.
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(s.remote_main().as_deref(), Some(head.as_str()));
    assert!(
        out.stderr.contains(
            "not finished within the push budget of 3s, handed on to a background run: slow"
        ),
        "{}",
        out.stderr
    );
    let records = s.bg.wait_started(1);
    assert_eq!(records[0]["reason"], "deferred");
    // On a loaded machine the quick one may not have made it within the budget either.
    let requested = records[0]["requested"].as_array().unwrap();
    assert!(requested.contains(&"slow".into()), "{records:?}");
    s.wait_live("slow");
    assert!(!s.marks.join("gate").exists());
    let status = s.repo.checkdef_env(&["status"], &[]);
    assert!(
        status.stderr.contains("deferred") && status.stderr.contains("running (pid"),
        "{}",
        status.stderr
    );

    s.open_gate();
    let records = s.bg.wait_finished();
    let slow = segment_end(&records[0], "slow");
    assert_eq!(slow["status"], "passed", "{records:?}");
    assert_eq!(slow["source"], "run", "{records:?}");
    let runs = s.runs("slow");
    // Its result was stored like any run's: the next run of that commit is all hits.
    let run = s.repo.run_json(&["--rev", &head], &[]);
    run.expect_code(0);
    assert_eq!(run.source("slow"), "local");
    assert!(
        run.stderr.contains("deferred from a push of") && run.stderr.contains("finished: "),
        "the next command says how it ended:\n{}",
        run.stderr
    );
    assert_eq!(s.runs("slow"), runs);
}

#[test]
fn a_deferred_check_that_fails_is_reported_loudly_by_the_next_command() {
    let s = Setup::new("[hook]\nbudget = \"3s\"\non-budget = \"defer\"", &[]);
    let head = s.repo.commit("init");
    std::fs::write(s.marks.join("fail"), "").unwrap();
    let out = s.push();
    assert_eq!(out.code, 0, "{}", out.stderr);
    s.bg.wait_started(1);
    s.wait_live("slow");
    s.open_gate();
    let records = s.bg.wait_finished();
    assert_eq!(
        segment_end(&records[0], "slow")["status"],
        "failed",
        "{records:?}"
    );

    let next = s.repo.checkdef_env(&["plan"], &[]);
    assert!(
        next.stderr.contains("A BACKGROUND CHECK FAILED"),
        "{}",
        next.stderr
    );
    assert!(
        next.stderr.contains(&format!(
            "reproduce: checkdef run --rev {head} --segment slow -v"
        )),
        "{}",
        next.stderr
    );
    // Said once; `checkdef status` still lists it.
    let again = s.repo.checkdef_env(&["plan"], &[]);
    assert!(!again.stderr.contains("BACKGROUND"), "{}", again.stderr);
    let status = s.repo.checkdef_env(&["status"], &[]);
    assert!(status.stderr.contains("FAILED: slow"), "{}", status.stderr);
    // A failure is never stored.
    std::fs::remove_file(s.marks.join("fail")).unwrap();
    assert_eq!(
        s.repo.run_json(&["--rev", &head], &[]).source("slow"),
        "run"
    );
}

#[test]
fn warm_after_commit_then_the_push_is_all_hits_and_uninstall_restores_the_hooks() {
    let s = Setup::new("", &["--warm"]);
    // A post-commit hook that was there first is chained, as pre-push hooks are.
    let hooks = s.repo.root.join(".git/hooks");
    let post = hooks.join("post-commit");
    let local = hooks.join("post-commit.local");
    assert!(post.exists());
    let mine = "#!/bin/sh\necho mine >> \"$MARKS_POST\"\n";
    s.repo.checkdef_env(&["uninstall"], &[]).expect_code(0);
    assert!(!post.exists());
    std::fs::write(&post, mine).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&post, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.repo
        .checkdef_env(&["install", "--warm"], &[])
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(&local).unwrap(), mine);
    let status = s.repo.checkdef_env(&["install", "--status"], &[]);
    status.expect_code(0);
    assert!(
        status.stderr.contains("post-commit hook: checkdef's at")
            || status.stdout.contains("post-commit hook: checkdef's at"),
        "install --status names the pre-warming hook: {}{}",
        status.stdout,
        status.stderr
    );

    // `git commit` returns while the warm run's slow check waits for its gate.
    s.repo.git(&["add", "-A"]);
    let post_marks = s.marks.join("post");
    let mut cmd = s
        .repo
        .git_cmd_in(&s.repo.root, &["commit", "-q", "-m", "init"]);
    cmd.env("MARKS_POST", &post_marks)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    output_within_guard(cmd.spawn().unwrap(), "git commit").expect_code(0);
    assert_eq!(std::fs::read_to_string(&post_marks).unwrap(), "mine\n");
    let records = s.bg.wait_started(1);
    assert_eq!(records[0]["reason"], "warm");
    s.wait_runs("slow", 1);
    assert!(!s.marks.join("gate").exists());
    s.open_gate();
    s.bg.wait_finished();

    let out = s.push();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("0 ran, 2 cached"), "{}", out.stderr);
    assert_eq!((s.runs("slow"), s.runs("quick")), (1, 1));

    s.repo.checkdef_env(&["uninstall"], &[]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&post).unwrap(), mine);
    assert!(!local.exists());
}

#[test]
fn a_push_that_needs_a_check_a_warm_run_is_running_waits_for_it_and_runs_it_once() {
    let s = Setup::new("", &[]);
    s.repo.commit("init");
    s.repo.checkdef_env(&["warm"], &[]).expect_code(0);
    s.bg.wait_started(1);
    s.wait_runs("slow", 1); // the warm run holds slow's lock now
    let err = s.repo.tmp.path().join("push.err");
    let mut cmd = s.repo.git_cmd_in(&s.repo.root, &["push", "origin", "main"]);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut push = cmd.spawn().unwrap();
    wait_for("the push to wait for the warm run", || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("slow is being run by another checkdef")
    });
    s.open_gate();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = push.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > HANG_GUARD {
            let _ = push.kill();
            panic!("git push hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(s.runs("slow"), 1, "run once, by the warm run:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("slow") && l.contains("cached (local)")),
        "{stderr}"
    );
    s.bg.wait_finished();
}

#[test]
fn a_sigkilled_background_run_leaves_no_lock_behind() {
    let s = Setup::new("", &[]);
    let head = s.repo.commit("init");
    s.repo
        .checkdef_env(&["warm", "--rev", &head], &[])
        .expect_code(0);
    let records = s.bg.wait_started(1);
    s.wait_runs("slow", 1);
    let check: u32 = std::fs::read_to_string(s.marks.join("slow.runs"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let bg = pid(&records[0]);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(bg as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for("the killed run and its check to be gone", || {
        !running(bg) && !running(check)
    });

    // The next command says so, and runs the check itself instead of waiting for a lock.
    s.open_gate();
    let run = s.repo.run_json(&["--rev", &head], &[]);
    run.expect_code(0);
    assert_eq!(run.source("slow"), "run");
    assert!(
        run.stderr.contains("ended without finishing"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("being run by another"),
        "{}",
        run.stderr
    );
    assert_eq!(s.runs("slow"), 2);
    let status = s.repo.checkdef_env(&["status"], &[]);
    assert!(
        status.stderr.contains("ended without finishing"),
        "{}",
        status.stderr
    );
}

#[test]
fn a_long_push_over_ssh_without_a_budget_is_warned_and_checkdef_budget_sets_one() {
    let s = Setup::new("", &[]);
    s.repo.commit("init");
    // Earlier runs say slow takes ten minutes.
    std::fs::create_dir_all(&s.repo.cache).unwrap();
    std::fs::write(
        s.repo.cache.join("checkdef-durations.json"),
        r#"{"slow": [600.0, 1700000000], "quick": [1.0, 1700000000]}"#,
    )
    .unwrap();
    // An "ssh" that runs the remote command locally: git talks to the bare repository over
    // an ssh:// URL without any network.
    let ssh = s.repo.tmp.path().join("fake-ssh");
    std::fs::write(&ssh, "#!/bin/sh\nshift\nexec sh -c \"$1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let url = format!("ssh://localhost{}", s.bare.display());
    let ssh_env = [
        ("GIT_SSH_COMMAND", ssh.to_str().unwrap()),
        ("GIT_SSH_VARIANT", "simple"),
    ];
    s.open_gate();
    let out = s.repo.git_out(&["push", &url, "main"], &ssh_env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("expected to take about 10m")
            && out.stderr.contains("[hook] budget = \"3m\""),
        "{}",
        out.stderr
    );
    assert!(s.remote_main().is_some());

    // CHECKDEF_BUDGET sets a budget for one push (and then there is nothing to warn about).
    std::fs::remove_file(s.marks.join("gate")).unwrap();
    s.repo
        .write("tests/test_slow.py", &format!("{SLOW_TEST}\n# changed\n"));
    let head = s.repo.commit("change slow");
    let mut env = ssh_env.to_vec();
    env.push(("CHECKDEF_BUDGET", "3s"));
    let out = s.repo.git_out(&["push", &url, "main"], &env);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("expected to take"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("not finished within the push budget of 3s (stopped): slow"),
        "{}",
        out.stderr
    );
    assert_ne!(s.remote_main().as_deref(), Some(head.as_str()));
}

#[test]
fn commits_in_a_row_warm_one_at_a_time_and_only_the_newest_waiting_one_runs() {
    let s = Setup::new("", &["--warm"]);
    s.commit_with_hooks("one"); // its warm run takes the turn, and waits for the gate
    s.bg.wait_started(1);
    s.wait_runs("slow", 1);
    s.repo
        .write("tests/test_slow.py", &format!("{SLOW_TEST}\n# two\n"));
    s.commit_with_hooks("two");
    s.repo
        .write("tests/test_slow.py", &format!("{SLOW_TEST}\n# three\n"));
    let three = s.commit_with_hooks("three");
    s.bg.wait_started(3);
    // Only the first runs a check while the others queue behind it.
    assert_eq!(s.runs("slow"), 1);
    s.open_gate();
    let records = s.bg.wait_finished();
    let superseded: Vec<bool> = records
        .iter()
        .map(|r| r["superseded"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(superseded, [false, true, false], "{records:?}");
    assert_eq!(records[2]["commit"], three.as_str());
    assert_eq!(s.runs("slow"), 2, "commit two was never run");
    let status = s.repo.checkdef_env(&["status"], &[]);
    assert!(status.stderr.contains("superseded"), "{}", status.stderr);
}
