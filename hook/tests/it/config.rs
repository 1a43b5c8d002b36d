//! Malformed configurations: located errors from the real binary, exit code 2.
use crate::support::{TestRepo, seed_layout};

/// Write `text` as checkdef.toml and run `checkdef plan`; return (exit code, stderr).
fn plan_with(text: &str) -> (Option<i32>, String) {
    let repo = TestRepo::new();
    seed_layout(&repo);
    repo.write("checkdef.toml", text);
    repo.commit("seed");
    let out = repo.checkdef(&["plan"]);
    assert!(out.stdout.is_empty());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_located(text: &str, location: &str, fragment: &str) {
    let (code, err) = plan_with(text);
    assert_eq!(code, Some(2), "{err}");
    let path_loc = format!("checkdef.toml:{location}: ");
    assert!(err.contains(&path_loc), "expected {path_loc} in: {err}");
    assert!(err.contains(fragment), "expected {fragment:?} in: {err}");
    assert!(err.contains("hint:"), "{err}");
}

const SEGMENT: &str = "[[segment]]\nname = \"a\"\ninclude = [\"src/**\"]\ncommand = \"true\"\n";

#[test]
fn unknown_key() {
    assert_located(
        &format!("version = 1\n{SEGMENT}inclde = [\"x\"]\n"),
        "6:1",
        "inclde",
    );
    assert_located(
        &format!("version = 1\n[defaults]\nenvv = {{}}\n{SEGMENT}"),
        "3:1",
        "envv",
    );
    assert_located(
        &format!("version = 1\n[cache]\nremotes = \"x\"\n{SEGMENT}"),
        "3:1",
        "remotes",
    );
}

#[test]
fn unknown_version() {
    assert_located(
        &format!("version = 3\n{SEGMENT}"),
        "1:11",
        "unsupported config version 3",
    );
}

#[test]
fn duplicate_segment_names() {
    assert_located(
        &format!("version = 1\n{SEGMENT}\n{SEGMENT}"),
        "8:8",
        "duplicate segment name `a` (first declared on line 3)",
    );
}

#[test]
fn segment_without_inputs() {
    assert_located(
        "version = 1\n[[segment]]\nname = \"a\"\ncommand = \"true\"\n",
        "3:8",
        "segment `a` has no inputs",
    );
}

#[test]
fn invalid_glob() {
    assert_located(
        "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"src/[a-\"]\ncommand = \"true\"\n",
        "4:12",
        "invalid glob `src/[a-`",
    );
    assert_located(
        "version = 1\n[defaults]\nexclude = [\"**/{x\"]\n[[segment]]\nname = \"a\"\ninclude = [\"s\"]\ncommand = \"true\"\n",
        "3:12",
        "invalid glob",
    );
}

#[test]
fn invalid_values() {
    assert_located(
        "version = 1\n[[segment]]\nname = \"a/b\"\ninclude = [\"s\"]\ncommand = \"true\"\n",
        "3:8",
        "invalid segment name",
    );
    assert_located(
        &format!("version = 1\n{SEGMENT}sandbox = \"docker\"\n"),
        "6:11",
        "docker",
    );
    assert_located(
        &format!("version = 1\n[hook]\nmode = \"some\"\n{SEGMENT}"),
        "3:8",
        "some",
    );
    assert_located(
        &format!("version = 1\n[cache]\ntrusted-public-keys = [\"k:notbase64!\"]\n{SEGMENT}"),
        "3:24",
        "invalid trusted public key",
    );
    assert_located(
        &format!("version = 1\n{SEGMENT}command = \"again\"\n"),
        "6:1",
        "duplicate key",
    );
    assert_located("version = 1\n[[segment]\n", "2:11", "unclosed array table");
}

#[test]
fn valid_full_config_is_accepted() {
    let (code, err) = plan_with(
        r#"version = 1
[defaults]
include = ["pytest.ini"]
exclude = ["**/__pycache__/**"]
env = { PYTHONPATH = "src" }
passthrough = ["HOME"]
fingerprint = ["echo tool-1"]
redact_env = ["SECRET_TOKEN"]

[cache]
remote = "https://cache.example.invalid"
trusted-public-keys = [
  "dev-1:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
  { key = "ci-1:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", label = "ci" },
]
accept = "ci-only"
timeout-secs = 5

[hook]
mode = "affected"

[[segment]]
name = "foo-tests"
description = "Foo module tests"
include = ["src/foo/**", "tests/test_foo.py"]
exclude = ["**/*.md"]
command = "python3 -m pytest -q tests/test_foo.py"
sandbox = "full"
env = { EXTRA = "1" }
passthrough = ["TERM"]

[[segment]]
name = "bar-tests"
tests = ["tests/test_bar.py"]
"#,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("foo-tests") && err.contains("bar-tests"),
        "{err}"
    );
}

#[test]
fn globs_too_complex_to_compile_are_located_errors_not_panics() {
    // Each glob is valid syntax, but compiling it (alone, or all of them together) exceeds the
    // glob engine's size limit; that used to panic (exit 101) after validation.
    let alternatives = (0..200_000)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let huge = format!("{{{alternatives}}}");
    assert_located(
        &format!(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"src/**\",\n  \"{huge}\"]\ncommand = \"true\"\n"
        ),
        "5:3",
        "too large to compile",
    );
    let questions = "a?".repeat(200_000);
    assert_located(
        &format!("version = 1\n[defaults]\nexclude = [\"{questions}\"]\n{SEGMENT}"),
        "3:12",
        "too large to compile",
    );
    // Many globs that each compile, but not together.
    let many: Vec<String> = (0..400)
        .map(|i| format!("\"d{i}/{}\"", "x?".repeat(400)))
        .collect();
    assert_located(
        &format!(
            "version = 1\n{SEGMENT}[[segment]]\nname = \"b\"\ninclude = [{}]\ncommand = \"true\"\n",
            many.join(", ")
        ),
        "6:1",
        "too large to compile together",
    );
    // Its own hint, then the configuration's: each on a line of its own after the message.
    let (_, err) = plan_with(&format!(
        "version = 1\n[defaults]\nexclude = [\"{questions}\"]\n{SEGMENT}"
    ));
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("checkdef.toml:3:12: invalid glob"),
        "{err}"
    );
    assert_eq!(
        lines[1..],
        [
            "hint: split it into several simpler globs",
            "hint: see docs/configuration.md for every key checkdef.toml accepts"
        ],
        "{err}"
    );
    // The message quotes a long glob only in part.
    let (_, err) = plan_with(&format!(
        "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"{huge}\"]\ncommand = \"true\"\n"
    ));
    assert!(err.len() < 2_000, "{} bytes of error", err.len());
}

#[test]
fn no_tests_applies_to_pytest_checks_only() {
    // Exit code 5 is "no tests collected" only to pytest: elsewhere the rule would turn a
    // failing command's exit 5 into a pass.
    assert_located(
        &format!("version = 1\n{SEGMENT}no_tests = \"pass\"\n"),
        "6:12",
        "`no_tests` applies to pytest checks only",
    );
    assert_located(
        &format!("version = 1\n{SEGMENT}no_tests = \"maybe\"\n"),
        "6:12",
        "maybe",
    );
    // On a pytest check it is accepted, and `[defaults] no_tests` leaves other checks alone.
    let ok = format!(
        "version = 1\n[defaults]\nno_tests = \"pass\"\n{SEGMENT}\n[[segment]]\nname = \"b\"\ntests = [\"tests/test_foo.py\"]\nno_tests = \"fail\"\n"
    );
    let (code, err) = plan_with(&ok);
    assert_eq!(code, Some(0), "{err}");
}
