//! `checkdef init` on fixture repositories (src layout, flat layout, nested test packages with a
//! conftest chain and pytest plugins, a directory of many modules, each its own segment): the drafted segments must
//! pass with real pytest in checkdef's filtered sandbox, and must be precise (an edit reruns
//! only the segments that import the edited file).
use crate::run::have_pytest;
use crate::support::{CmdOut, TestRepo};

/// The drafted configuration as a TOML table.
fn drafted(repo: &TestRepo) -> toml::Table {
    let text = std::fs::read_to_string(repo.path("checkdef.toml")).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn segment<'a>(cfg: &'a toml::Table, name: &str) -> &'a toml::Table {
    cfg["segment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_table().unwrap())
        .find(|s| s["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no segment {name} in {cfg:#?}"))
}

fn strings(v: Option<&toml::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn names(cfg: &toml::Table) -> Vec<String> {
    cfg["segment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

fn init(repo: &TestRepo, args: &[&str]) -> CmdOut {
    let mut full = vec!["init"];
    full.extend_from_slice(args);
    repo.checkdef_text(&full, &[])
}

/// `checkdef run --json` must pass every segment; returns it.
fn run_all_pass(repo: &TestRepo) -> CmdOut {
    let out = repo.run_json(&[], &[]);
    assert_eq!(
        out.code,
        0,
        "segments drafted by init must pass in the sandbox\nstdout:\n{}\nstderr:\n{}\nconfig:\n{}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(repo.path("checkdef.toml")).unwrap()
    );
    out
}

fn src_layout_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "pyproject.toml",
        "[project]\nname = \"demo\"\nversion = \"0\"\n\n[tool.pytest.ini_options]\naddopts = \"-p no:cacheprovider\"\n",
    )
    .write("uv.lock", "version = 1\n")
    .write(".gitignore", "__pycache__/\n.pytest_cache/\n")
    .write("src/foo/__init__.py", "from .core import greet\n")
    .write(
        "src/foo/core.py",
        "from foo.util import shout\n\n\ndef greet(n):\n    return shout(\"hi \" + n)\n",
    )
    .write("src/foo/util.py", "def shout(s):\n    return s.upper()\n")
    .write(
        "src/bar/__init__.py",
        "\"\"\"Bar.\n\nimport nothing_from_a_docstring\n\"\"\"\nfrom foo.util import shout\n\nVALUE = shout(\"bar\")\n",
    )
    .write("src/bar/extra.py", "X = 1\n")
    .write("src/unused/__init__.py", "raise RuntimeError('never imported by a test')\n")
    .write(
        "tests/test_foo.py",
        "import foo\n\n\ndef test_greet():\n    assert foo.greet(\"a\") == \"HI A\"\n",
    )
    .write(
        "tests/test_bar.py",
        "from bar import VALUE\nfrom bar.extra import (\n    X,\n)\n\n\ndef test_bar():\n    assert VALUE == \"BAR\" and X == 1\n",
    )
    .write(
        "tests/test_data.py",
        "from pathlib import Path\n\nDATA = Path(__file__).parent / \"data\" / \"input.txt\"\n\n\ndef test_data():\n    assert DATA.read_text() == \"hello\\n\"\n",
    )
    .write("tests/data/input.txt", "hello\n");
    repo.commit("src layout");
    repo
}

#[test]
fn init_src_layout_drafts_precise_segments_that_pass() {
    if !have_pytest() {
        return;
    }
    let repo = src_layout_repo();
    let out = init(&repo, &[]);
    out.expect_code(0);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("layout       src (packages under src/)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("pytest       pyproject.toml"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("lockfiles    uv.lock"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("review:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("tests/data/**"),
        "data dir listed for review"
    );

    let cfg = drafted(&repo);
    assert_eq!(names(&cfg), ["bar-tests", "data-tests", "foo-tests"]);
    let defaults = cfg["defaults"].as_table().unwrap();
    assert_eq!(
        strings(defaults.get("include")),
        ["pyproject.toml", "uv.lock"]
    );
    assert_eq!(defaults["env"]["PYTHONPATH"].as_str(), Some("src"));
    // The environment (interpreter and installed distributions), not only `python3 --version`.
    let fp = defaults["fingerprint"].as_array().unwrap();
    assert_eq!(fp.len(), 1, "{fp:?}");
    assert_eq!(fp[0]["python"].as_str(), Some("python3"));
    assert_eq!(
        strings(segment(&cfg, "foo-tests").get("include")),
        ["src/foo/**"]
    );
    assert_eq!(
        strings(segment(&cfg, "bar-tests").get("include")),
        [
            "src/bar/**",
            "src/foo/__init__.py",
            "src/foo/core.py",
            "src/foo/util.py"
        ]
    );
    assert_eq!(
        strings(segment(&cfg, "data-tests").get("include")),
        ["tests/data/**"]
    );
    assert_eq!(
        strings(segment(&cfg, "foo-tests").get("tests")),
        ["tests/test_foo.py"]
    );

    let r1 = run_all_pass(&repo);
    for s in ["foo-tests", "bar-tests", "data-tests"] {
        assert_eq!(r1.source(s), "run", "{s}");
    }
    // An edit to bar's own module reruns bar-tests only.
    repo.write("src/bar/extra.py", "X = 1  # edited\n");
    let r2 = run_all_pass(&repo);
    assert_eq!(r2.source("bar-tests"), "run");
    assert_eq!(r2.source("foo-tests"), "local");
    assert_eq!(r2.source("data-tests"), "local");
    // foo.util is imported by both.
    repo.write(
        "src/foo/util.py",
        "def shout(s):\n    return s.upper()  # edited\n",
    );
    let r3 = run_all_pass(&repo);
    assert_eq!(r3.source("bar-tests"), "run");
    assert_eq!(r3.source("foo-tests"), "run");
    assert_eq!(r3.source("data-tests"), "local");
    // A package no test imports is an input of nothing.
    repo.write("src/unused/__init__.py", "X = 2\n");
    let r4 = run_all_pass(&repo);
    assert_eq!(r4.json["summary"]["ran"], 0);
}

#[test]
fn init_flat_layout_with_testpaths_and_helpers() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\ntestpaths = tests\naddopts = -p no:cacheprovider\n")
        .write("requirements.txt", "pytest\n")
        .write("requirements-dev.txt", "ruff\n")
        .write(".gitignore", "__pycache__/\n")
        .write("app/__init__.py", "")
        .write("app/models.py", "class User:\n    name = \"u\"\n")
        .write(
            "app/views.py",
            "from .models import User\n\n\ndef show():\n    return User.name\n",
        )
        .write("app/admin.py", "raise RuntimeError('not imported')\n")
        .write("tests/helpers.py", "def make():\n    return 1\n")
        .write(
            "tests/test_views.py",
            "from app.views import show\nfrom helpers import make\n\n\ndef test_show():\n    assert show() == \"u\" and make() == 1\n",
        )
        .write(
            "tests/test_models.py",
            "from app import models\n\n\ndef test_models():\n    assert models.User.name == \"u\"\n",
        )
        .write("tools/test_tool.py", "def test_never_collected():\n    assert False\n");
    repo.commit("flat");
    let out = init(&repo, &[]);
    out.expect_code(0);
    assert!(out.stderr.contains("layout       flat"), "{}", out.stderr);
    let cfg = drafted(&repo);
    assert_eq!(
        names(&cfg),
        ["models-tests", "views-tests"],
        "testpaths honoured"
    );
    let defaults = cfg["defaults"].as_table().unwrap();
    assert!(
        defaults.get("env").is_none(),
        "flat layout needs no PYTHONPATH"
    );
    assert_eq!(
        strings(defaults.get("include")),
        ["pytest.ini", "requirements-dev.txt", "requirements.txt"]
    );
    assert_eq!(
        strings(segment(&cfg, "views-tests").get("include")),
        [
            "app/__init__.py",
            "app/models.py",
            "app/views.py",
            "tests/helpers.py"
        ]
    );
    assert_eq!(
        strings(segment(&cfg, "models-tests").get("include")),
        ["app/__init__.py", "app/models.py"]
    );
    let r = run_all_pass(&repo);
    assert_eq!(r.json["summary"]["ran"], 2);
}

#[test]
fn init_nested_test_packages_conftest_chain_and_small_modules() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\npythonpath = lib\naddopts = -p no:cacheprovider\n")
        .write(".gitignore", "__pycache__/\n")
        .write("lib/calc/__init__.py", "def add(a, b):\n    return a + b\n")
        .write(
            "lib/calc/fixtures.py",
            "import pytest\n\n\n@pytest.fixture\ndef two():\n    return 2\n",
        )
        .write("conftest.py", "pytest_plugins = [\"calc.fixtures\"]\n")
        .write("tests/__init__.py", "")
        .write(
            "tests/conftest.py",
            "import pytest\n\nfrom tests.support.data import BASE\n\n\n@pytest.fixture\ndef base():\n    return BASE\n",
        )
        .write("tests/support/__init__.py", "")
        .write("tests/support/data.py", "BASE = 40\n")
        .write("tests/unit/__init__.py", "")
        .write(
            "tests/unit/conftest.py",
            "import pytest\n\n\n@pytest.fixture\ndef mid(base, two):\n    return base + two\n",
        )
        .write(
            "tests/unit/test_deep.py",
            "from calc import add\n\n\ndef test_deep(mid):\n    assert add(mid, 0) == 42\n",
        )
        .write("tests/unit/small/__init__.py", "");
    for i in 0..6 {
        repo.write(
            &format!("tests/unit/small/test_s{i}.py"),
            "def test_s(mid):\n    assert mid == 42\n",
        );
    }
    repo.commit("nested");
    let out = init(&repo, &[]);
    out.expect_code(0);
    let cfg = drafted(&repo);
    let mut want: Vec<String> = (0..6).map(|i| format!("unit-small-s{i}-tests")).collect();
    want.push("unit-deep-tests".to_owned());
    assert_eq!(
        names(&cfg),
        want,
        "one segment per test module, in path order"
    );
    let defaults = cfg["defaults"].as_table().unwrap();
    assert!(defaults.get("env").is_none(), "pytest's pythonpath is set");
    let small = segment(&cfg, "unit-small-s0-tests");
    assert_eq!(strings(small.get("tests")), ["tests/unit/small/test_s0.py"]);
    // The __init__.py files on the test's path come with the `tests` shorthand.
    assert_eq!(
        strings(small.get("include")),
        [
            "lib/calc/__init__.py",
            "lib/calc/fixtures.py",
            "tests/support/__init__.py",
            "tests/support/data.py",
        ]
    );
    assert_eq!(
        strings(segment(&cfg, "unit-deep-tests").get("include")),
        [
            "lib/calc/**",
            "tests/support/__init__.py",
            "tests/support/data.py",
        ]
    );
    let r = run_all_pass(&repo);
    assert_eq!(r.json["summary"]["ran"], 7);
    repo.write(
        "tests/unit/small/test_s0.py",
        "def test_s(mid):\n    assert mid == 42  # edited\n",
    );
    let r = run_all_pass(&repo);
    assert_eq!(r.source("unit-small-s0-tests"), "run");
    assert_eq!(r.source("unit-small-s1-tests"), "local");
    assert_eq!(r.source("unit-deep-tests"), "local");
    assert_eq!(r.json["summary"]["ran"], 1);
    repo.write(
        "lib/calc/fixtures.py",
        "import pytest\n\n\n@pytest.fixture\ndef two():\n    return 1 + 1\n",
    );
    let r = run_all_pass(&repo);
    assert_eq!(
        r.json["summary"]["ran"], 7,
        "the plugin is an input of every segment"
    );
    // An edit of a test package's __init__.py reruns the tests below it, and only those.
    repo.write("tests/unit/small/__init__.py", "# edited\n");
    let r = run_all_pass(&repo);
    assert_eq!(r.json["summary"]["ran"], 6);
    assert_eq!(r.source("unit-deep-tests"), "local");
}

#[test]
fn init_never_overwrites_without_force() {
    let repo = TestRepo::new();
    repo.write("tests/test_a.py", "def test_a():\n    pass\n")
        .write("checkdef.toml", "# mine\n");
    let out = init(&repo, &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert!(
        out.stderr.contains("checkdef init --force"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(repo.path("checkdef.toml")).unwrap(),
        "# mine\n"
    );
    let out = init(&repo, &["--force"]);
    out.expect_code(0);
    let cfg = drafted(&repo);
    assert_eq!(names(&cfg), ["a-tests"]);
    // The draft is a valid configuration.
    repo.checkdef_env(&["plan", "--json"], &[]).expect_code(0);
}

#[test]
fn init_without_tests_is_a_usage_error() {
    let repo = TestRepo::new();
    repo.write("src/app.py", "X = 1\n");
    let out = init(&repo, &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no test modules found"),
        "{}",
        out.stderr
    );
    assert!(!repo.path("checkdef.toml").exists());
}

#[test]
fn init_never_proposes_a_pythonpath_that_shadows_the_standard_library_and_groups_computed_imports()
{
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\ntestpaths = tests\n")
        // Like toolz: a package directory holding a module named like the standard library's.
        .write("toolz/__init__.py", "")
        .write("toolz/curried/__init__.py", "")
        .write("toolz/curried/operator.py", "from operator import *\n")
        .write("toolz/curried/exceptions.py", "X = 1\n")
        .write("scripts/helper_tool.py", "Y = 1\n")
        .write(
            "tests/test_a.py",
            "import operator\nimport exceptions\nimport helper_tool\nimport importlib\nm = importlib.import_module('a' + 'b')\nn = __import__('c' + 'd')\n\ndef test_a():\n    assert operator.add(1, 2) == 3\n",
        )
        .write(
            "tests/test_b.py",
            "import importlib\nm = importlib.import_module('x' + 'y')\n\ndef test_b():\n    pass\n",
        );
    repo.commit("init");
    let out = init(&repo, &[]);
    out.expect_code(0);
    let review: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("  - "))
        .collect();
    // `import operator` is the standard library's: no note at all.
    assert!(
        !review
            .iter()
            .any(|l| l.contains("`operator` is not on the import path")),
        "{review:#?}"
    );
    // `exceptions` is in toolz/curried, whose operator.py would shadow the standard library's.
    let exc: Vec<&&str> = review
        .iter()
        .filter(|l| l.contains("`exceptions`"))
        .collect();
    assert_eq!(exc.len(), 1, "{review:#?}");
    assert!(
        exc[0].contains("cannot go on `pythonpath`") && exc[0].contains("`operator`"),
        "{}",
        exc[0]
    );
    assert!(
        !review
            .iter()
            .any(|l| l.contains("add `toolz/curried` to pytest's `pythonpath`"))
    );
    // A directory that shadows nothing may still be proposed.
    assert!(
        review
            .iter()
            .any(|l| l.contains("`helper_tool`")
                && l.contains("add `scripts` to pytest's `pythonpath`")),
        "{review:#?}"
    );
    // The three imports by computed name are one note.
    let dynamic: Vec<&&str> = review
        .iter()
        .filter(|l| l.contains("computed name"))
        .collect();
    assert_eq!(dynamic.len(), 1, "{review:#?}");
    assert!(
        dynamic[0].contains("3 imports by computed name"),
        "{}",
        dynamic[0]
    );
}

/// A test that runs one of the project's modules as a program (`[sys.executable, "-m",
/// "app.cli"]`, simplejson's `test_tool.py` does this) needs that module and what it imports:
/// the drafted segment holds them, so it passes in the sandbox, and an edit of the module reruns it.
#[test]
fn init_follows_modules_a_test_runs_with_dash_m() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(".gitignore", "__pycache__/\n")
        .write("app/__init__.py", "")
        .write("app/fmt.py", "def shout(s):\n    return s.upper()\n")
        .write(
            "app/cli.py",
            "import sys\nfrom app.fmt import shout\n\nprint(shout(sys.argv[1]))\n",
        )
        .write("app/unused.py", "x = 1\n")
        .write(
            "tests/test_cli.py",
            "import subprocess, sys\n\n\ndef test_cli():\n    out = subprocess.run([sys.executable, '-m', 'app.cli', 'hi'], capture_output=True, text=True)\n    assert out.stdout == 'HI\\n', out.stderr\n",
        );
    repo.commit("cli");
    init(&repo, &[]).expect_code(0);
    let cfg = drafted(&repo);
    assert_eq!(
        strings(segment(&cfg, "cli-tests").get("include")),
        ["app/__init__.py", "app/cli.py", "app/fmt.py"]
    );
    let r = run_all_pass(&repo);
    assert_eq!(r.json["summary"]["ran"], 1);
}

#[test]
fn init_suggests_no_tests_pass_for_a_module_that_skips_itself_as_a_whole() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(".gitignore", "__pycache__/\n")
        .write("app/__init__.py", "def two():\n    return 2\n")
        .write(
            "tests/test_optional.py",
            "import pytest\nyaml = pytest.importorskip('surely_not_installed_anywhere')\n\n\ndef test_dump():\n    assert yaml.dump(1)\n",
        )
        .write(
            "tests/test_app.py",
            "import pytest\nfrom app import two\n\n\ndef test_two():\n    pytest.importorskip('surely_not_installed_anywhere')\n\n\ndef test_two_is_two():\n    assert two() == 2\n",
        );
    repo.commit("app");
    init(&repo, &[]).expect_code(0);
    let cfg = drafted(&repo);
    // Suggested, never set on its own: a skip can also come from an input the sandbox hid.
    assert!(segment(&cfg, "optional-tests").get("no_tests").is_none());
    assert!(segment(&cfg, "app-tests").get("no_tests").is_none());
    let text = std::fs::read_to_string(repo.path("checkdef.toml")).unwrap();
    assert_eq!(text.matches("# no_tests = \"pass\"").count(), 1, "{text}");
    assert!(
        text.contains("# tests/test_optional.py:2 can skip the whole module"),
        "{text}"
    );
    let strict = repo.run_json(&[], &[]);
    strict.expect_code(1);
    assert_eq!(strict.status("optional-tests"), "failed");
    assert_eq!(strict.status("app-tests"), "passed");
    // Uncommented, the module skipped as a whole passes, as in a whole-suite pytest.
    repo.write(
        "checkdef.toml",
        &text.replace("# no_tests = \"pass\"", "no_tests = \"pass\""),
    );
    let r = run_all_pass(&repo);
    assert_eq!(r.json["summary"]["ran"], 1);
    // The rule hides nothing else: a failing test in the module fails.
    repo.write(
        "tests/test_optional.py",
        "import pytest\n\n\ndef test_dump():\n    assert False\n",
    );
    repo.commit("the dependency is required now, and the test fails");
    let failing = repo.run_json(&[], &[]);
    failing.expect_code(1);
    assert_eq!(failing.status("optional-tests"), "failed");
}

#[test]
fn init_in_a_flat_layout_with_tests_inside_the_packages_keeps_each_test_module_its_own() {
    // Tests live inside their packages (toolz's layout), and app's tests import the lib package
    // as a whole, lib/tests/ included. An edit of one test module must rerun that module's
    // segment only.
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(".gitignore", "__pycache__/\n")
        .write("lib/__init__.py", "from lib.core import two\n")
        .write("lib/core.py", "def two():\n    return 2\n")
        .write("lib/sub/__init__.py", "")
        .write("lib/tests/__init__.py", "")
        .write("lib/tests/helpers.py", "THREE = 3\n")
        .write("lib/tests/data.txt", "2\n")
        .write(
            "lib/tests/test_lib.py",
            "import lib\n\n\ndef test_lib():\n    assert lib.two() == 2\n",
        )
        .write("app/__init__.py", "")
        .write("app/tests/__init__.py", "")
        .write(
            "app/tests/test_app.py",
            "import lib\nfrom lib.tests.helpers import THREE\n\n\ndef test_app():\n    assert lib.two() + 1 == THREE\n",
        );
    repo.commit("flat");
    init(&repo, &[]).expect_code(0);
    let cfg = drafted(&repo);
    let app = strings(segment(&cfg, "app-app-tests").get("include"));
    assert!(
        app.contains(&"lib/core.py".to_owned())
            && app.contains(&"lib/sub/**".to_owned())
            && app.contains(&"lib/tests/data.txt".to_owned())
            && app.contains(&"lib/tests/helpers.py".to_owned())
            && !app.iter().any(|p| p.contains("test_lib") || p == "lib/**"),
        "{app:?}"
    );
    repo.commit("checkdef.toml");
    run_all_pass(&repo);
    repo.write(
        "lib/tests/test_lib.py",
        "import lib\n\n\ndef test_lib():\n    assert lib.two() == 2  # edited\n",
    );
    repo.commit("edit test_lib");
    let r = repo.run_json(&[], &[]);
    r.expect_code(0);
    assert_eq!(r.source("app-app-tests"), "local");
    assert_eq!(r.source("lib-lib-tests"), "run");
    // The package's own code is both segments' input.
    repo.write("lib/core.py", "def two():\n    return 3\n");
    repo.commit("break core");
    let broken = repo.run_json(&[], &[]);
    broken.expect_code(1);
    assert_eq!(broken.status("app-app-tests"), "failed");
    assert_eq!(broken.status("lib-lib-tests"), "failed");
}
