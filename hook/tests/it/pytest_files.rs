//! The `tests = [...]` shorthand's inputs are every file pytest itself reads for those tests:
//! its configuration files (each name pytest 8 and 9 accept, in every directory from the
//! repository root down to each test), and the `conftest.py` and `__init__.py` files on each
//! test's path. A check that depends on one of them must see it in the sandbox, and a change to
//! one must rerun the check instead of serving a stale PASS. Real pytest throughout; each test
//! first shows plain pytest in the work tree failing, so a checkdef PASS would be a wrong one.
use std::process::Command;

use crate::run::have_pytest;
use crate::support::{TestRepo, hermetic};

/// pytest 9 or later (it reads `pytest.toml`); panics under CI when it is older.
fn have_pytest_9() -> bool {
    if !have_pytest() {
        return false;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import pytest; print(pytest.__version__.split('.')[0])",
        ])
        .output()
        .expect("python3");
    let major: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if major < 9 {
        if testkit::in_ci() {
            panic!("pytest >= 9 is required for this test under CI (pytest.toml)");
        }
        eprintln!("SKIP: pytest {major} does not read pytest.toml");
        return false;
    }
    true
}

/// Exit code of plain `python3 -m pytest ARGS` in the work tree.
fn plain_pytest(repo: &TestRepo, args: &[&str]) -> i32 {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args)
        .current_dir(&repo.root)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    hermetic(&mut cmd, &repo.home);
    cmd.output()
        .expect("run pytest")
        .status
        .code()
        .unwrap_or(-1)
}

const XPASS_TEST: &str = "import pytest\n\n\n@pytest.mark.xfail(reason=\"was broken\")\ndef test_fixed():\n    assert True\n";

/// A repository with one shorthand segment `a-tests` over `test`, committed.
fn repo_with(files: &[(&str, &str)], test: &str) -> TestRepo {
    let repo = TestRepo::new();
    for (p, c) in files {
        repo.write(p, c);
    }
    repo.write(".gitignore", "__pycache__/\n.pytest_cache/\n")
        .write(
            "checkdef.toml",
            &format!("version = 1\n\n[[segment]]\nname = \"a-tests\"\ntests = [\"{test}\"]\n"),
        );
    repo.commit("init");
    repo
}

/// `checkdef run --json` of the committed HEAD: its exit code and the segment's source.
fn run_head(repo: &TestRepo) -> (i32, String) {
    let out = repo.run_json(&["--rev", "HEAD"], &[("PYTHONDONTWRITEBYTECODE", "1")]);
    let source = out.source("a-tests").to_owned();
    (out.code, source)
}

#[test]
fn shorthand_reruns_when_pytest_toml_changes_and_fails_like_plain_pytest() {
    if !have_pytest_9() {
        return;
    }
    // pytest.toml (pytest 9's own format) makes an unexpected pass of an xfail test a failure.
    let repo = repo_with(
        &[
            ("pytest.toml", "[pytest]\nxfail_strict = false\n"),
            ("tests/test_a.py", XPASS_TEST),
        ],
        "tests/test_a.py",
    );
    assert_eq!(run_head(&repo), (0, "run".to_owned()));
    repo.write("pytest.toml", "[pytest]\nxfail_strict = true\n");
    repo.commit("strict xfail");
    assert_eq!(
        plain_pytest(&repo, &["tests/test_a.py"]),
        1,
        "plain pytest fails"
    );
    assert_eq!(
        run_head(&repo),
        (1, "run".to_owned()),
        "pytest.toml is an input of the shorthand: the check reruns, sees it and fails"
    );
}

#[test]
fn shorthand_sees_a_pytest_config_file_in_a_directory_on_the_test_path() {
    if !have_pytest() {
        return;
    }
    // tests/.pytest.ini is the first configuration pytest finds for tests/unit/test_a.py.
    let repo = repo_with(
        &[
            ("tests/.pytest.ini", "[pytest]\nxfail_strict = true\n"),
            ("tests/unit/test_a.py", XPASS_TEST),
        ],
        "tests/unit/test_a.py",
    );
    assert_eq!(
        plain_pytest(&repo, &["tests/unit/test_a.py"]),
        1,
        "plain pytest fails"
    );
    assert_eq!(
        run_head(&repo),
        (1, "run".to_owned()),
        "the check must see tests/.pytest.ini and fail like plain pytest"
    );
}

#[test]
fn shorthand_reruns_when_an_init_py_on_the_test_path_breaks() {
    if !have_pytest() {
        return;
    }
    let repo = repo_with(
        &[
            ("tests/__init__.py", ""),
            ("tests/unit/__init__.py", ""),
            (
                "tests/unit/test_a.py",
                "def test_a():\n    assert __name__ == \"tests.unit.test_a\"\n",
            ),
        ],
        "tests/unit/test_a.py",
    );
    assert_eq!(
        run_head(&repo),
        (0, "run".to_owned()),
        "the test package's __init__.py files are in the sandbox, so the module's name is \
         the one plain pytest gives it"
    );
    repo.write(
        "tests/__init__.py",
        "raise RuntimeError(\"broken package\")\n",
    );
    repo.commit("break the test package");
    assert_eq!(
        plain_pytest(&repo, &["tests/unit/test_a.py"]),
        2,
        "plain pytest fails"
    );
    let (code, source) = run_head(&repo);
    assert_eq!((code, source.as_str()), (1, "run"), "not a cached PASS");
}

#[test]
fn shorthand_reruns_when_a_conftest_on_the_test_path_changes() {
    if !have_pytest() {
        return;
    }
    let repo = repo_with(
        &[
            (
                "tests/conftest.py",
                "import pytest\n\n\n@pytest.fixture\ndef answer():\n    return 42\n",
            ),
            (
                "tests/unit/test_a.py",
                "def test_a(answer):\n    assert answer == 42\n",
            ),
        ],
        "tests/unit/test_a.py",
    );
    assert_eq!(run_head(&repo), (0, "run".to_owned()));
    repo.write(
        "tests/conftest.py",
        "import pytest\n\n\n@pytest.fixture\ndef answer():\n    return 41\n",
    );
    repo.commit("wrong answer");
    assert_eq!(
        plain_pytest(&repo, &["tests/unit/test_a.py"]),
        1,
        "plain pytest fails"
    );
    assert_eq!(run_head(&repo), (1, "run".to_owned()));
}

#[test]
fn configuration_above_the_repository_is_hashed_for_both_runners() {
    if !have_pytest() {
        return;
    }
    // With no pytest configuration of its own, pytest takes the first one it finds above the
    // repository (a ../pytest.ini, a ~/tox.ini), and a conftest.py between that rootdir and the
    // tests. They are no input, and a pass stayed cached after one appeared.
    for runner in ["warm", "process"] {
        let repo = TestRepo::new();
        repo.write("tests/test_a.py", XPASS_TEST)
            .write(".gitignore", "__pycache__/\n.pytest_cache/\n")
            .write(
                "checkdef.toml",
                &format!(
                    "version = 1\n\n[defaults]\nrunner = \"{runner}\"\n\n[[segment]]\nname = \"a-tests\"\ntests = [\"tests/test_a.py\"]\n\n[[segment]]\nname = \"b-tests\"\ncommand = \"cd tests && python3 -m pytest -q test_a.py\"\ninclude = [\"tests/**\"]\n"
                ),
            );
        repo.commit("init");
        let above = repo.root.parent().unwrap().join("pytest.ini");
        assert_eq!(run_head(&repo), (0, "run".to_owned()), "{runner}");
        std::fs::write(&above, "[pytest]\nxfail_strict = true\n").unwrap();
        assert_eq!(
            plain_pytest(&repo, &["tests/test_a.py"]),
            1,
            "plain pytest fails"
        );
        let out = repo.run_json(&["--rev", "HEAD"], &[("PYTHONDONTWRITEBYTECODE", "1")]);
        for seg in ["a-tests", "b-tests"] {
            assert_eq!(
                (out.status(seg), out.source(seg)),
                ("failed", "run"),
                "{runner} {seg}: ../pytest.ini is part of the hash\n{}",
                out.stderr
            );
        }
        // A conftest.py above, between that rootdir and the tests, is too.
        std::fs::write(&above, "[pytest]\n").unwrap();
        assert_eq!(run_head(&repo).0, 0, "{runner}");
        std::fs::write(
            repo.root.parent().unwrap().join("conftest.py"),
            "def pytest_collection_modifyitems(items):\n    raise SystemExit(3)\n",
        )
        .unwrap();
        assert_ne!(
            plain_pytest(&repo, &["tests/test_a.py"]),
            0,
            "plain pytest fails"
        );
        assert_eq!(
            run_head(&repo),
            (1, "run".to_owned()),
            "{runner}: conftest.py above"
        );
    }
}
