//! Checks and fingerprint commands are bounded and never outlive checkdef: timeouts, SIGKILL
//! of checkdef, leftover sandboxes, background children holding pipes, output without
//! newlines, and failures to start (issue 15). No assertion is on wall-clock time: waits are
//! hang guards only.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{CmdOut, TestRepo};

/// Far beyond anything these tests need on a loaded machine; only a hang trips it.
const HANG_GUARD: Duration = Duration::from_secs(240);

/// Wait for `child`'s output, killing it and failing the test at the hang guard.
fn output_within_guard(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
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

/// Whether process `pid` still runs (a zombie does not count: it runs nothing).
pub fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest.trim_start());
    !state.is_empty() && !state.starts_with('Z')
}

/// Wait (up to the hang guard) until none of `pids` runs; the ones still running.
pub fn survivors(pids: &[u32]) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
        if left.is_empty() || start.elapsed() > HANG_GUARD {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (up to the hang guard) for `path` to hold a pid.
pub fn read_pid(path: &Path) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A repository with `config` committed and a directory `pids` the checks write into.
fn repo_with(config: &str) -> (TestRepo, PathBuf) {
    let repo = TestRepo::new();
    let pids = repo.tmp.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    repo.write("a", "a\n").write(
        "checkdef.toml",
        &config.replace("@PIDS@", pids.to_str().unwrap()),
    );
    repo.commit("init");
    (repo, pids)
}

#[test]
fn a_check_at_its_timeout_fails_and_its_whole_group_is_killed() {
    let (repo, pids) = repo_with(
        r#"version = 1

[[segment]]
name = "hangs"
include = ["a"]
timeout = "3s"
env = { PIDS = "@PIDS@" }
command = "echo started; echo $$ > $PIDS/sh; sleep 300 & echo $! > $PIDS/bg; trap '' TERM; sleep 301; echo late"

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    let junit = repo.tmp.path().join("junit.xml");
    let mut cmd = repo.checkdef_cmd_in(
        &repo.root,
        &["run", "--json", "--junit", junit.to_str().unwrap()],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = CmdOut::from_output(output_within_guard(cmd.spawn().unwrap(), "checkdef run"));
    out.expect_code(1);
    assert_eq!(out.status("hangs"), "failed");
    assert_eq!(
        out.seg("hangs")["reason"],
        "timed out after 3s",
        "{}",
        out.json
    );
    assert_eq!(out.status("quick"), "passed");
    assert!(out.seg("quick")["reason"].is_null());
    assert!(
        out.stderr.contains("FAILED  timed out after 3s"),
        "{}",
        out.stderr
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<failure message=\"timed out after 3s\""),
        "{xml}"
    );
    // The shell, the background child and the child that ignored SIGTERM are all gone.
    let all = [read_pid(&pids.join("sh")), read_pid(&pids.join("bg"))];
    assert!(
        survivors(&all).is_empty(),
        "still running: {:?}",
        survivors(&all)
    );
    // A timed-out run is never stored.
    assert_eq!(
        repo.run_json(&["--segment", "hangs"], &[]).source("hangs"),
        "run"
    );
}

#[test]
fn a_timeout_must_be_a_duration() {
    let repo = TestRepo::new();
    repo.write("a", "a\n").write(
        "checkdef.toml",
        "version = 1\n\n[defaults]\ntimeout = \"10m\"\n\n[[segment]]\nname = \"x\"\ninclude = [\"a\"]\ncommand = \"true\"\ntimeout = \"3 minutes\"\n",
    );
    let out = repo.checkdef_env(&["plan"], &[]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("checkdef.toml:10:11: timeout: invalid duration `3 minutes`"),
        "{}",
        out.stderr
    );
}

#[test]
fn checks_do_not_outlive_a_killed_checkdef_and_their_sandboxes_are_swept() {
    let (repo, pids) = repo_with(
        r#"version = 1

[[segment]]
name = "hangs"
include = ["a"]
env = { PIDS = "@PIDS@" }
command = "pwd > $PIDS/cwd; echo $$ > $PIDS/sh; setsid sh -c 'echo $$ > $PIDS/escaped; exec sleep 300' & trap '' TERM; sleep 301"

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    let (mut checkdef, base, env) =
        spawn_with_sandboxes(&repo, &["run", "--segment", "hangs"], false);
    let env = [(env[0].0, env[0].1.as_str())];
    let all = [read_pid(&pids.join("sh")), read_pid(&pids.join("escaped"))];
    let cwd = PathBuf::from(
        std::fs::read_to_string(pids.join("cwd"))
            .unwrap()
            .trim()
            .to_owned(),
    );
    // The check's working directory is the repository's own path (its isolated view) or, where
    // the kernel offers no isolation, a copy inside its sandbox: find the sandbox by its name.
    let _ = cwd;
    let sandbox = find_sandbox(&base, "hangs").expect("the check's sandbox exists while it runs");
    assert!(sandbox.starts_with(&base), "{}", sandbox.display());

    checkdef.kill().unwrap(); // SIGKILL
    checkdef.wait().unwrap();
    assert!(
        survivors(&all).is_empty(),
        "still running: {:?}",
        survivors(&all)
    );
    assert!(sandbox.exists(), "a killed run cannot remove its sandbox");

    // The next run that runs anything sweeps it.
    let out = repo.run_json(&["--segment", "quick"], &env);
    out.expect_code(0);
    assert!(!sandbox.exists(), "{} was not swept", sandbox.display());
}

/// Field `n` (1-based, after the command name) of `/proc/PID/stat`: 1 state, 2 ppid, 3 pgrp.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(n - 1).map(str::to_owned)
}

/// Live (not zombie) processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| stat_field(*p, 3).as_deref() == Some(&pgid.to_string()) && running(*p))
        .collect()
}

#[test]
fn checks_do_not_outlive_a_killed_supervisor() {
    let (repo, pids) = repo_with(
        r#"version = 1

[[segment]]
name = "hangs"
include = ["a"]
env = { PIDS = "@PIDS@" }
command = "setsid sh -c 'echo $$ > $PIDS/escaped; exec sleep 300' & sleep 302 & echo $! > $PIDS/bg; echo $$ > $PIDS/sh; wait"

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    let (checkdef, base, env) =
        spawn_with_sandboxes(&repo, &["run", "--json", "--segment", "hangs"], true);
    let env = [(env[0].0, env[0].1.as_str())];
    let sh = read_pid(&pids.join("sh"));
    let all = [
        sh,
        read_pid(&pids.join("bg")),
        read_pid(&pids.join("escaped")),
    ];
    let pgid: u32 = stat_field(sh, 3).unwrap().parse().unwrap();
    assert!(!group_members(pgid).is_empty());
    // The supervisor: the child of checkdef running `checkdef __supervise`.
    let me = checkdef.id().to_string();
    let supervisor = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            stat_field(*p, 2).as_deref() == Some(&me)
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__supervise"))
        })
        .expect("checkdef runs the check under a __supervise process");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let left = survivors(&all);
    assert!(left.is_empty(), "still running: {left:?}");
    let start = Instant::now();
    while !group_members(pgid).is_empty() && start.elapsed() < HANG_GUARD {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(group_members(pgid), Vec::<u32>::new(), "the check's group");
    // checkdef itself carries on and says the check was lost (never a pass).
    let out = CmdOut::from_output(output_within_guard(checkdef, "checkdef run"));
    out.expect_code(1);
    assert_eq!(out.status("hangs"), "failed");

    // Nothing of the check is left in the sandbox directory after the next run.
    repo.run_json(&["--segment", "quick"], &env).expect_code(0);
    assert_eq!(find_sandbox(&base, "hangs"), None);
}

#[test]
fn a_live_runs_sandbox_is_never_swept() {
    let (repo, pids) = repo_with(
        r#"version = 1

[[segment]]
name = "waits"
include = ["a"]
env = { PIDS = "@PIDS@" }
command = "pwd > $PIDS/cwd; while [ ! -e $PIDS/go ]; do sleep 0.05; done; test -f a"

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    let (waiting, _base, env) =
        spawn_with_sandboxes(&repo, &["run", "--json", "--segment", "waits"], true);
    let env = [(env[0].0, env[0].1.as_str())];
    let start = Instant::now();
    while !pids.join("cwd").exists() {
        assert!(start.elapsed() < HANG_GUARD, "the check never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another run in the same base, while the first one's check runs.
    repo.run_json(&["--segment", "quick"], &env).expect_code(0);
    std::fs::write(pids.join("go"), "").unwrap();
    let out = CmdOut::from_output(output_within_guard(waiting, "checkdef run"));
    out.expect_code(0);
    assert_eq!(out.status("waits"), "passed");
}

#[test]
fn a_fingerprint_child_holding_stdout_does_not_hold_plan_or_run() {
    let (repo, pids) = repo_with(
        r#"version = 1

[defaults]
fingerprint = ["echo v1; sleep 300 & echo $! > @PIDS@/bg"]

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    for args in [&["plan", "--json"][..], &["run", "--json"]] {
        std::fs::remove_file(pids.join("bg")).ok();
        let mut cmd = repo.checkdef_cmd_in(&repo.root, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = CmdOut::from_output(output_within_guard(cmd.spawn().unwrap(), args[0]));
        out.expect_code(0);
        let bg = read_pid(&pids.join("bg"));
        assert!(
            survivors(&[bg]).is_empty(),
            "the fingerprint's child survived"
        );
    }
}

#[test]
fn a_fingerprint_that_never_ends_is_an_error_at_its_limit() {
    let (repo, _pids) = repo_with(
        r#"version = 1

[defaults]
fingerprint = ["sleep 300"]
fingerprint_timeout = "1s"

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    let mut cmd = repo.checkdef_cmd_in(&repo.root, &["plan"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = CmdOut::from_output(output_within_guard(cmd.spawn().unwrap(), "checkdef plan"));
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("fingerprint command `sleep 300` timed out after 1s"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("fingerprint_timeout"), "{}", out.stderr);
}

#[test]
fn verbose_output_without_newlines_is_streamed_in_bounded_memory() {
    // A gigabyte without a newline, under an address-space limit far below it: memory must
    // not grow with the line (it grew, and each chunk rescanned the whole pending line: 32 MB
    // took 47 s).
    let (repo, _pids) = repo_with(
        r#"version = 1

[[segment]]
name = "flood"
include = ["a"]
command = "head -c 1073741824 /dev/zero | tr '\\0' x; echo; echo done"
"#,
    );
    // `ulimit -v` in KiB: 768 MiB of address space for checkdef (and its check).
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg("ulimit -v 786432 && exec \"$0\" run --json -v 2>/dev/null")
        .arg(env!("CARGO_BIN_EXE_checkdef"))
        .current_dir(&repo.root);
    crate::support::hermetic(&mut sh, &repo.home);
    crate::support::clear_checkdef_env(&mut sh);
    // glibc reserves 64 MiB of address space per malloc arena (one per thread, up to 8 per
    // CPU): bound them, so the limit measures checkdef's data and not the machine's core count.
    sh.env("CHECKDEF_CACHE_DIR", &repo.cache)
        .env("MALLOC_ARENA_MAX", "2");
    sh.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = CmdOut::from_output(output_within_guard(sh.spawn().unwrap(), "checkdef run -v"));
    out.expect_code(0);
    assert_eq!(out.status("flood"), "passed");
}

#[test]
fn verbose_shows_carriage_return_progress_as_a_few_lines() {
    let (repo, _pids) = repo_with(
        r#"version = 1

[[segment]]
name = "bar"
include = ["a"]
command = "i=0; while [ $i -lt 2000 ]; do printf '\\r%d/2000' $i; i=$((i+1)); done; printf '\\r2000/2000 done\\n'"
"#,
    );
    let out = repo.checkdef_env(&["run", "-v"], &[]);
    out.expect_code(0);
    let shown: Vec<&str> = out.stderr.lines().filter(|l| l.contains("/2000")).collect();
    assert!(
        shown.iter().any(|l| l.ends_with("bar │ 2000/2000 done")),
        "{}",
        out.stderr
    );
    // Redraws are throttled: far fewer lines than the 2,000 redraws (a hang guard-like bound:
    // it holds unless the loop takes hours).
    assert!(shown.len() < 200, "{} progress lines", shown.len());
}

#[test]
fn failures_to_start_and_signals_say_what_they_are() {
    let long = format!(": {}", "x".repeat(200 * 1024));
    let (repo, _pids) = repo_with(&format!(
        r#"version = 1

[[segment]]
name = "too-long"
include = ["a"]
command = "{long}"

[[segment]]
name = "killed"
include = ["a"]
command = "kill -9 $$"

[[segment]]
name = "segv"
include = ["a"]
command = "kill -SEGV $$"

[[segment]]
name = "bus"
include = ["a"]
command = "kill -BUS $$"

[[segment]]
name = "exits"
include = ["a"]
command = "exit 3"
"#
    ));
    let out = repo.run_json(&[], &[]);
    out.expect_code(1);
    let reason = |s: &str| out.seg(s)["reason"].as_str().unwrap_or("").to_owned();
    assert!(
        reason("too-long").starts_with("could not start: Argument list too long"),
        "{}",
        reason("too-long")
    );
    assert_eq!(reason("killed"), "killed by SIGKILL");
    // Signals Rust's runtime handles in checkdef's own stages too (the guard re-raises them).
    assert_eq!(reason("segv"), "killed by SIGSEGV");
    assert_eq!(reason("bus"), "killed by SIGBUS");
    assert_eq!(reason("exits"), "exit 3");
    assert_eq!(out.seg("exits")["exit_code"], 3);
    assert!(!out.stderr.contains("killed by a signal"), "{}", out.stderr);
}

#[test]
fn the_progress_bar_handles_output_without_newlines() {
    // On a terminal (a pty from util-linux `script`, part of every Debian), where the progress
    // bar shows each check's last line: 128 MiB without a newline (quadratic before: 32 MB took
    // 47 s, so this took many minutes).
    let (repo, _pids) = repo_with(
        r#"version = 1

[[segment]]
name = "flood"
include = ["a"]
command = "head -c 134217728 /dev/zero | tr '\\0' x; echo; echo done"
"#,
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec"])
        .arg(format!("{} run", env!("CARGO_BIN_EXE_checkdef")))
        .arg("/dev/null")
        .current_dir(&repo.root);
    crate::support::hermetic(&mut cmd, &repo.home);
    crate::support::clear_checkdef_env(&mut cmd);
    cmd.env("CHECKDEF_CACHE_DIR", &repo.cache)
        .env_remove("CI")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = output_within_guard(cmd.spawn().unwrap(), "checkdef run on a terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
    // Whether the bar redraws once more with the last line before the check ends depends on
    // the bar's tick, not on checkdef: only the bounded time (the guard) is asserted here.
    assert!(
        text.contains("flood") && text.contains("xxxxxxxx"),
        "the bar never showed the check's output: {text}"
    );
}

/// The sandbox directory of segment `name` below `base` (sandboxes live in `base/checkdef-UID/`).
fn find_sandbox(base: &std::path::Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("checkdef-{name}-");
    let mut dirs = vec![base.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                return Some(p);
            }
            if d == base {
                dirs.push(p);
            }
        }
    }
    None
}

/// A private sandbox directory for `repo`'s runs (`CHECKDEF_SANDBOX_DIR`), so a test can look
/// into it, and `checkdef run ARGS` spawned there with piped or discarded output.
fn spawn_with_sandboxes(
    repo: &TestRepo,
    args: &[&str],
    piped: bool,
) -> (Child, PathBuf, [(&'static str, String); 1]) {
    let base = repo.tmp.path().join("sandboxes");
    std::fs::create_dir(&base).unwrap();
    let env = [("CHECKDEF_SANDBOX_DIR", base.to_str().unwrap().to_owned())];
    let mut cmd = repo.checkdef_cmd_in(&repo.root, args);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if piped {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    (cmd.spawn().unwrap(), base, env)
}

/// One check more than `-j` is prepared ahead: its input lock taken and its sandbox made while
/// the others run, so it starts as soon as a slot frees (issue 19.3). One stopped while it
/// waits (Ctrl-C) never starts, is reported as not run, and leaves no sandbox behind.
#[test]
fn the_next_check_is_prepared_while_one_runs_and_a_stop_before_its_slot_leaves_nothing() {
    let (repo, pids) = repo_with(
        r#"version = 1

[[segment]]
name = "first"
include = ["a", "checkdef.toml"]
env = { PIDS = "@PIDS@" }
command = "echo $$ > $PIDS/first; while [ ! -e $PIDS/go ]; do sleep 0.05; done"

[[segment]]
name = "second"
include = ["a"]
env = { PIDS = "@PIDS@" }
command = "echo $$ > $PIDS/second"
"#,
    );
    let (checkdef, base, env) = spawn_with_sandboxes(&repo, &["run", "-j", "1"], true);
    read_pid(&pids.join("first"));
    let start = Instant::now();
    while find_sandbox(&base, "second").is_none() {
        assert!(
            start.elapsed() < HANG_GUARD,
            "the second check's sandbox was never prepared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pids.join("second").exists(),
        "the prepared check started before a slot was free"
    );
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &checkdef.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = output_within_guard(checkdef, "an interrupted run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(!pids.join("second").exists(), "{stderr}");
    assert!(
        find_sandbox(&base, "second").is_none() && find_sandbox(&base, "first").is_none(),
        "sandboxes left behind: {stderr}"
    );

    // Let the first one end: both run, one after the other.
    std::fs::write(pids.join("go"), "").unwrap();
    let env = [(env[0].0, env[0].1.as_str())];
    let out = repo.run_json(&["-j", "1"], &env);
    out.expect_code(0);
    assert_eq!(out.seg("second")["status"], "passed");
    read_pid(&pids.join("second"));
}

#[test]
fn a_check_ignores_no_signal_checkdef_s_stages_were_started_with() {
    // glibc's posix_spawn leaves its two internal signals (32, 33) ignored in the program it
    // starts, and ignored stays ignored across exec: the check's shell had them.
    let (repo, _pids) = repo_with(
        r#"version = 1

[[segment]]
name = "sig"
include = ["a"]
command = "grep SigIgn /proc/$$/status"
"#,
    );
    let out = repo.run_json(&["-v"], &[]);
    out.expect_code(0);
    let line = out
        .stderr
        .lines()
        .find_map(|l| l.split_once("SigIgn:").map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    let mask = u64::from_str_radix(&line, 16).unwrap();
    assert_eq!(mask & (0b11 << 31), 0, "signals 32/33 ignored: {line}");
}

#[test]
fn what_a_fingerprint_leaves_in_another_session_does_not_outlive_checkdef() {
    // A daemon in a session of its own (`setsid`, or a `.pth` that starts one with
    // `start_new_session`) escapes every kill of the fingerprint's process group; it used to
    // be left running after `plan` and `run` returned.
    let (repo, pids) = repo_with(
        r#"version = 1

[defaults]
fingerprint = ["setsid sh -c 'echo $$ > @PIDS@/daemon; exec sleep 300' < /dev/null > /dev/null 2>&1 & while [ ! -s @PIDS@/daemon ]; do sleep 0.01; done; echo v1"]

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    for args in [&["plan", "--json"][..], &["run", "--json"]] {
        std::fs::remove_file(pids.join("daemon")).ok();
        let mut cmd = repo.checkdef_cmd_in(&repo.root, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = CmdOut::from_output(output_within_guard(cmd.spawn().unwrap(), args[0]));
        out.expect_code(0);
        let daemon = read_pid(&pids.join("daemon"));
        let sid = stat_field(daemon, 4);
        let left = survivors(&[daemon]);
        for p in &left {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        assert!(
            left.is_empty(),
            "`checkdef {}` left the fingerprint's daemon {daemon} (session {sid:?}) running",
            args[0]
        );
    }
}

/// Start `checkdef args` in `repo` with SIGINT ignored (as `setsid cmd &` or a shell without
/// job control starts a background command), and wait for `pidfile` to name the fingerprint's
/// process.
fn start_with_sigint_ignored(repo: &TestRepo, args: &[&str], pidfile: &Path) -> (Child, u32) {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = repo.checkdef_cmd_in(&repo.root, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: signal(2) only, between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let pid = read_pid(pidfile);
    (child, pid)
}

#[test]
fn a_signal_while_a_fingerprint_runs_stops_everything_and_stores_nothing() {
    // SIGINT during a slow fingerprint (a `.pth` that sleeps in the interpreter query) was
    // lost when checkdef had inherited it ignored: the run went on and stored its results.
    // SIGTERM then killed checkdef but left the query running.
    let (repo, pids) = repo_with(
        r#"version = 1

[defaults]
fingerprint = ["echo $$ > @PIDS@/fp; sleep 300; echo v1"]

[[segment]]
name = "quick"
include = ["a"]
command = "echo fine"
"#,
    );
    for (signal, args) in [
        ("-INT", &["run", "--json"][..]),
        ("-TERM", &["run", "--json"][..]),
        ("-INT", &["plan"][..]),
    ] {
        std::fs::remove_file(pids.join("fp")).ok();
        let (child, fp) = start_with_sigint_ignored(&repo, args, &pids.join("fp"));
        let st = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = output_within_guard(child, args[0]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(130),
            "`checkdef {}` after {signal}: {stderr}",
            args[0]
        );
        assert!(stderr.contains("interrupted"), "{stderr}");
        assert!(
            survivors(&[fp]).is_empty(),
            "the fingerprint command {fp} outlived `checkdef {}` ({signal})",
            args[0]
        );
        assert!(
            repo.cached_narinfos().is_empty(),
            "{:?}",
            repo.cached_narinfos()
        );
    }
}
