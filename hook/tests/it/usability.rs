//! The small things a new user meets in the first hour: where `keygen` puts the secret, warnings
//! for patterns that match nothing, `run --force`, an honest "saved by the cache", and errors
//! that say what to do next.
use crate::support::{TestRepo, shell_layout};

#[test]
fn keygen_without_out_keeps_the_secret_out_of_the_repository() {
    use std::os::unix::fs::PermissionsExt as _;
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    let out = repo.checkdef_text(&["keygen", "dev-1"], &[]);
    out.expect_code(0);
    let secret = repo.home.join(".config/checkdef/keys/dev-1.secret");
    assert!(secret.is_file(), "{}", out.stderr);
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(secret.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(
        out.stderr.contains(&secret.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stdout.starts_with("dev-1:"), "{}", out.stdout);
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "nothing new in the repository"
    );
    // XDG_CONFIG_HOME wins over ~/.config; an existing key is never overwritten.
    let xdg = repo.tmp.path().join("xdg");
    let out = repo.checkdef_text(
        &["keygen", "dev-1"],
        &[("XDG_CONFIG_HOME", xdg.to_str().unwrap())],
    );
    out.expect_code(0);
    assert!(xdg.join("checkdef/keys/dev-1.secret").is_file());
    let again = repo.checkdef_text(&["keygen", "dev-1"], &[]);
    again.expect_code(2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

const TYPO_CONFIG: &str = r#"version = 1

[defaults]
include = ["setup.cfg"]        # no such file

[[segment]]
name = "foo"
include = ["src/foo/**", "src/fooo/**", "src/*.toml"]
command = "grep -qx ok src/foo/value"

[[segment]]
name = "bar"
include = ["src/bar/**"]
tests = ["tests/test_gone.py"]
"#;

#[test]
fn globs_and_tests_paths_that_match_nothing_are_warned_by_plan_and_run() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.write("checkdef.toml", TYPO_CONFIG);
    repo.commit("init");
    let expect = |stderr: &str| {
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("matches no file"))
            .collect();
        assert_eq!(warnings.len(), 4, "{stderr}");
        for needle in [
            "include glob `setup.cfg` matches no file in this snapshot (segments foo, bar)",
            "include glob `src/fooo/**` matches no file in this snapshot (segment foo)",
            "include glob `src/*.toml` matches no file in this snapshot (segment foo)",
            "tests path `tests/test_gone.py` matches no file in this snapshot (segment bar)",
        ] {
            assert!(
                warnings.iter().any(|w| w.contains(needle)),
                "{needle}\n{stderr}"
            );
        }
        // pytest's optional files that the shorthand adds are never reported.
        assert!(!stderr.contains("conftest.py` matches"), "{stderr}");
    };
    let plan = repo.checkdef_text(&["plan"], &[]);
    plan.expect_code(0);
    expect(&plan.stderr);
    let run = repo.checkdef_text(&["run", "-s", "foo"], &[]);
    run.expect_code(0);
    let foo_only: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("matches no file"))
        .collect();
    assert_eq!(foo_only.len(), 3, "{}", run.stderr);
    // Fixed: no warning.
    repo.write("checkdef.toml", crate::support::SHELL_CONFIG);
    let plan = repo.checkdef_text(&["plan"], &[]);
    assert!(!plan.stderr.contains("matches no file"), "{}", plan.stderr);
}

#[test]
fn run_force_runs_every_segment_and_no_cache_is_its_alias() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    repo.run_json(&[], &[]).expect_code(0);
    let cached = repo.run_json(&[], &[]);
    assert_eq!(cached.source("foo"), "local");
    for flag in ["--force", "--no-cache"] {
        let out = repo.run_json(&[flag], &[]);
        out.expect_code(0);
        assert_eq!(out.source("foo"), "run", "{flag}");
        assert_eq!(out.source("bar"), "run", "{flag}");
        assert_eq!(out.json["summary"]["cached"], 0);
    }
    // What a forced run passes is stored like any other result.
    repo.write("src/bar/value", "ok\nmore\n");
    let out = repo.run_json(&["--force", "-s", "bar"], &[]);
    out.expect_code(0);
    assert_eq!(out.source("bar"), "run");
    let after = repo.run_json(&["-s", "bar"], &[]);
    assert_eq!(
        after.source("bar"),
        "local",
        "forced results are stored too"
    );
}

#[test]
fn saved_by_the_cache_never_adds_up_segments_that_ran_side_by_side() {
    let repo = TestRepo::new();
    repo.write("a/x", "1\n").write("b/x", "1\n").write(
        "checkdef.toml",
        "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"a/**\"]\ncommand = \"sleep 0.3\"\n\n[[segment]]\nname = \"b\"\ninclude = [\"b/**\"]\ncommand = \"sleep 0.3\"\n",
    );
    repo.commit("init");
    let first = repo.run_json(&["-j", "2"], &[]);
    first.expect_code(0);
    let originals: Vec<f64> = ["a", "b"]
        .iter()
        .map(|s| first.seg(s)["duration_s"].as_f64().unwrap())
        .collect();
    let cached = repo.run_json(&["-j", "2"], &[]);
    cached.expect_code(0);
    let saved = cached.json["summary"]["seconds_saved"].as_f64().unwrap();
    let longest = originals.iter().copied().fold(0.0, f64::max);
    // Two slots: a run of both takes as long as the longer one, not the sum.
    assert!(saved <= longest + 1e-9, "saved {saved} > longest {longest}");
    assert!(saved > 0.0);
    // One slot: they would have run one after the other.
    let serial = repo.run_json(&["-j", "1"], &[]);
    let saved1 = serial.json["summary"]["seconds_saved"].as_f64().unwrap();
    assert!(saved1 > longest, "{saved1} {originals:?}");
}

#[test]
fn errors_say_what_to_do_next() {
    // No configuration file: suggest `checkdef init`.
    let repo = TestRepo::new();
    repo.write("README.md", "x\n");
    repo.commit("init");
    let out = repo.checkdef_text(&["plan"], &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no configuration file") && out.stderr.contains("`checkdef init`"),
        "{}",
        out.stderr
    );
    // `install` outside a repository: plain words, no git command line.
    let outside = repo.tmp.path().join("not-a-repo");
    std::fs::create_dir(&outside).unwrap();
    for cmd in ["install", "uninstall"] {
        let out = crate::support::CmdOut::from_output(
            repo.checkdef_cmd_in(&outside, &[cmd])
                .env("GIT_CEILING_DIRECTORIES", repo.tmp.path())
                .output()
                .unwrap(),
        );
        out.expect_code(2);
        assert!(
            out.stderr.contains("is not inside a git repository")
                && out.stderr.contains(&format!("`checkdef {cmd}`")),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("rev-parse"), "{}", out.stderr);
    }
}

/// `checkdef install` where a hook manager (lefthook) runs the hooks: each manager's hint is
/// followed by the snippet it introduces, then the hint to install anyway. The snippet used to
/// be printed above the hints, apart from the line that introduces it ("add this to
/// lefthook.yml:" directly followed by the next hint).
#[test]
fn a_hook_managers_hint_is_followed_by_its_snippet() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.write("lefthook.yml", "pre-commit:\n  commands: {}\n");
    repo.commit("init");
    let out = repo.checkdef_text(&["install"], &[]);
    out.expect_code(2);
    let err = &out.stderr;
    assert!(err.starts_with("error: "), "{err}");
    let at = err
        .find("\nhint: to run checkdef from lefthook, add this to lefthook.yml:\n\n    pre-push:\n")
        .unwrap_or_else(|| panic!("the hint and its snippet: {err}"));
    // The detection is part of the message, above the hints.
    assert!(err[..at].contains("lefthook.yml"), "{err}");
    assert!(
        err[at..].contains(
            "      use_stdin: true\n\n  then run: lefthook install\nhint: or run `checkdef install --force`"
        ),
        "{err}"
    );
}
