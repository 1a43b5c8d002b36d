use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("checkdef.toml"))
}

fn err(text: &str) -> String {
    parse(text).expect_err("should fail").to_string()
}

const MINIMAL: &str = r#"
version = 1
[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "true"
"#;

#[test]
fn budget_and_its_policy() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.hook.budget, None);
    assert_eq!(c.hook.on_budget, OnBudget::Block);
    let c = parse(&format!(
        "{MINIMAL}[hook]\nbudget = \"2m\"\non-budget = \"defer\"\n"
    ))
    .unwrap();
    assert_eq!(c.hook.budget, Some(std::time::Duration::from_secs(120)));
    assert_eq!(c.hook.on_budget, OnBudget::Defer);
    let e = err(&format!("{MINIMAL}[hook]\nbudget = \"soon\"\n"));
    assert!(
        e.starts_with("checkdef.toml:8:10: budget: invalid duration"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}[hook]\non-budget = \"wait\"\n"));
    assert!(e.starts_with("checkdef.toml:8:"), "{e}");
}

#[test]
fn timeouts_come_from_the_segment_then_the_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.segments[0].timeout, DEFAULT_CHECK_TIMEOUT);
    assert_eq!(c.fingerprint_timeout, DEFAULT_FINGERPRINT_TIMEOUT);
    let c = parse(
        "version = 1\n[defaults]\ntimeout = \"moderate\"\nfingerprint_timeout = \"5s\"\n\
             [[segment]]\nname = \"a\"\ninclude = [\"a\"]\ncommand = \"true\"\n\
             [[segment]]\nname = \"b\"\ninclude = [\"b\"]\ncommand = \"true\"\ntimeout = \"3s\"\n",
    )
    .unwrap();
    assert_eq!(c.segments[0].timeout, std::time::Duration::from_secs(300));
    assert_eq!(c.segments[1].timeout, std::time::Duration::from_secs(3));
    assert_eq!(c.fingerprint_timeout, std::time::Duration::from_secs(5));
    let e = err(
        "version = 1\n[defaults]\nfingerprint_timeout = \"0s\"\n[[segment]]\nname = \"a\"\ninclude = [\"a\"]\ncommand = \"true\"\n",
    );
    assert!(
        e.contains(
            "checkdef.toml:3:23: fingerprint_timeout: duration `0s` must be longer than zero"
        ),
        "{e}"
    );
}

#[test]
fn minimal() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.segments.len(), 1);
    let s = &c.segments[0];
    assert_eq!(s.name, "foo");
    assert_eq!(s.include, vec!["src/foo/**"]);
    assert_eq!(s.passthrough, vec!["PATH"]);
    assert_eq!(s.sandbox, Sandbox::Filtered);
    assert_eq!(c.hook.mode, HookMode::All);
    assert_eq!(c.hook.commits, HookCommits::Tip);
    assert_eq!(c.hook.tags, HookTags::Check);
    assert_eq!(c.cache, CacheConfig::default());
}

#[test]
fn watched_fingerprints_merge_only_when_every_declaration_watches() {
    let text = r#"
version = 1
[defaults]
fingerprint = [
  { command = "python3 --version", watch = [".python-version"] },
  { command = "node --version", watch = [".nvmrc"] },
]

[[segment]]
name = "a"
include = ["a/**"]
command = "true"
fingerprint = [{ command = "python3 --version", watch = ["$PYENV_VERSION", ".python-version"] }]

[[segment]]
name = "b"
include = ["b/**"]
command = "true"
fingerprint = ["python3 --version", "uv pip freeze"]
"#;
    let c = parse(text).unwrap();
    let (a, b) = (&c.segments[0], &c.segments[1]);
    let keys = |s: &Segment| {
        s.fingerprint
            .iter()
            .map(Fingerprint::key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(a), vec!["python3 --version", "node --version"]);
    assert_eq!(
        a.fingerprint_watch.get("python3 --version").unwrap(),
        &vec!["$PYENV_VERSION".to_owned(), ".python-version".to_owned()]
    );
    assert_eq!(
        keys(b),
        vec!["python3 --version", "node --version", "uv pip freeze"]
    );
    assert!(
        !b.fingerprint_watch.contains_key("python3 --version"),
        "declared plain in b: runs every time"
    );
    assert!(b.fingerprint_watch.contains_key("node --version"));
    assert!(!b.fingerprint_watch.contains_key("uv pip freeze"));

    for (bad, why) in [
        (r#"{ command = "x", watch = [""] }"#, "is not a file path"),
        (
            r#"{ command = "x", watch = ["$"] }"#,
            "is not an environment variable name",
        ),
        (r#"{ command = "x" }"#, "missing field `watch`"),
        (
            r#"{ command = "x", watch = [], extra = 1 }"#,
            "unknown field `extra`",
        ),
        (
            r#"{ command = "", watch = [] }"#,
            "empty fingerprint command",
        ),
        ("3", "a command string, a table"),
    ] {
        let text = format!(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"a/**\"]\ncommand = \"true\"\nfingerprint = [{bad}]\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains(":6:"), "{bad}: {e}");
    }
}

#[test]
fn python_environment_is_the_default_fingerprint_of_python_checks() {
    let text = r#"
version = 1
[[segment]]
name = "short"
tests = ["tests/test_a.py"]

[[segment]]
name = "venv"
include = ["a/**"]
command = ".venv/bin/python -m pytest"

[[segment]]
name = "make"
include = ["a/**"]
command = "make test"

[[segment]]
name = "narrowed"
tests = ["tests/test_a.py"]
fingerprint = []

[[segment]]
name = "explicit"
include = ["a/**"]
command = "true"
fingerprint = [{ python = "python3.11" }, "python3 --version"]
"#;
    let c = parse(text).unwrap();
    let fp = |i: usize| c.segments[i].fingerprint.clone();
    assert_eq!(fp(0), vec![Fingerprint::Python("python3".into())]);
    assert_eq!(fp(1), vec![Fingerprint::Python(".venv/bin/python".into())]);
    assert_eq!(fp(2), vec![]);
    assert_eq!(fp(3), vec![], "fingerprint = [] turns the default off");
    assert_eq!(
        fp(4),
        vec![
            Fingerprint::Python("python3.11".into()),
            Fingerprint::Command("python3 --version".into())
        ]
    );
    assert_eq!(fp(4)[0].key(), r#"{ python = "python3.11" }"#);
    // Declared in [defaults]: no segment gets the default on top.
    let c = parse("version = 1\n[defaults]\nfingerprint = [\"node --version\"]\n[[segment]]\nname = \"a\"\ntests = [\"t.py\"]\n").unwrap();
    assert_eq!(
        c.segments[0].fingerprint,
        vec![Fingerprint::Command("node --version".into())]
    );
    for (bad, why) in [
        (
            r#"{ python = "python3", watch = [] }"#,
            "`watch` belongs to a command",
        ),
        (r#"{ python = "python3", command = "x" }"#, "not both"),
        (r#"{ python = "" }"#, "empty python interpreter"),
        ("{}", "needs `command`"),
    ] {
        let text = format!(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"a/**\"]\ncommand = \"true\"\nfingerprint = [{bad}]\n"
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains(":6:"), "{bad}: {e}");
    }
}

#[test]
fn pytest_inputs_cover_every_file_pytest_reads_on_the_test_paths() {
    let got = pytest_inputs(["tests/unit/test_a.py::test_x", "it"]);
    for dir in ["", "tests/", "tests/unit/", "it/"] {
        for name in PYTEST_CONFIG_FILES.iter().chain(&PYTEST_PATH_FILES) {
            let want = format!("{dir}{name}");
            assert!(got.contains(&want), "{want} in {got:?}");
        }
    }
    for want in [
        "tests/unit/test_a.py",
        "it",
        "it/**",
        "pytest.toml",
        ".pytest.toml",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} in {got:?}");
    }
    assert!(
        !got.iter().any(|g| (g.starts_with("tests/unit/test_a.py/")
            && g != "tests/unit/test_a.py/**")
            || g.contains("::")),
        "{got:?}"
    );
    // Globs in a test path are escaped: `[` is a literal character of the directory name.
    let got = pytest_inputs(["t[1]/test_a.py"]);
    let want = format!("{}/conftest.py", globset::escape("t[1]"));
    assert!(got.contains(&want), "{want} in {got:?}");
}

#[test]
fn full_example_merges_defaults() {
    let text = r#"
version = 1
[defaults]
include = ["pytest.ini", "conftest.py"]
exclude = ["**/__pycache__/**"]
env = { PYTHONPATH = "src", A = "1" }
passthrough = ["HOME"]
fingerprint = ["python3 --version"]
redact_env = ["TOKEN"]

[cache]
remote = "https://cache.example.org"
trusted-public-keys = [
  "dev-1:11qvo4Ukx8FPzoz0b4xybAOAK1dzLuiUjn+JP2cgXu4=",
  { key = "ci-1:11qvo4Ukx8FPzoz0b4xybAOAK1dzLuiUjn+JP2cgXu8=", label = "ci" },
]
accept = "ci-only"
timeout-secs = 5

[hook]
mode = "affected"
commits = "all"
tags = "skip"

[[segment]]
name = "foo-tests"
description = "Foo module tests"
include = ["src/foo/**", "tests/test_foo.py"]
exclude = ["**/*.md"]
command = "python3 -m pytest -q tests/test_foo.py"
env = { A = "2" }
passthrough = ["TERM", "A"]
sandbox = "full"

[[segment]]
name = "bar-tests"
tests = ["tests/unit/test_bar.py::test_x"]
"#;
    let c = parse(text).unwrap();
    let foo = &c.segments[0];
    assert_eq!(
        foo.include,
        vec![
            "pytest.ini",
            "conftest.py",
            "src/foo/**",
            "tests/test_foo.py"
        ]
    );
    assert_eq!(foo.exclude, vec!["**/__pycache__/**", "**/*.md"]);
    assert_eq!(foo.env.get("A").unwrap(), "2");
    assert_eq!(foo.env.get("PYTHONPATH").unwrap(), "src");
    assert_eq!(foo.passthrough, vec!["HOME", "PATH", "TERM"]);
    assert_eq!(
        foo.fingerprint,
        vec![Fingerprint::Command("python3 --version".into())]
    );
    assert_eq!(foo.sandbox, Sandbox::Full);
    assert_eq!(foo.description.as_deref(), Some("Foo module tests"));
    let bar = &c.segments[1];
    assert_eq!(
        bar.command,
        "python3 -m pytest tests/unit/test_bar.py::test_x"
    );
    for needed in [
        "pyproject.toml",
        "tox.ini",
        "setup.cfg",
        "tests/unit/test_bar.py",
        "tests/conftest.py",
        "tests/unit/conftest.py",
    ] {
        assert!(
            bar.include.iter().any(|g| g == needed),
            "{needed} in {:?}",
            bar.include
        );
    }
    assert_eq!(c.cache.accept, Accept::CiOnly);
    assert_eq!(c.cache.trusted_public_keys.len(), 2);
    assert_eq!(c.cache.trusted_public_keys[1].label.as_deref(), Some("ci"));
    assert_eq!(c.cache.trusted_public_keys[1].name, "ci-1");
    assert_eq!(c.cache.timeout(), std::time::Duration::from_secs(5));
    assert_eq!(c.hook.mode, HookMode::Affected);
    assert_eq!(c.hook.commits, HookCommits::All);
    assert_eq!(c.hook.tags, HookTags::Skip);
    assert_eq!(c.redact_env, vec!["TOKEN"]);
}

#[test]
fn unknown_key_is_located() {
    let e = err(
        "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"x\"]\ncommand = \"true\"\ncomand = \"x\"\n",
    );
    assert!(e.starts_with("checkdef.toml:6:1: "), "{e}");
    assert!(e.contains("comand"), "{e}");
}

#[test]
fn unknown_version() {
    let e = err("version = 2\n");
    assert!(
        e.starts_with("checkdef.toml:1:11: unsupported config version 2"),
        "{e}"
    );
}

#[test]
fn missing_version() {
    let e = err("[[segment]]\nname = \"a\"\ninclude = [\"x\"]\ncommand = \"true\"\n");
    assert!(e.contains("version"), "{e}");
}

#[test]
fn duplicate_names() {
    let e = err(&format!(
        "{MINIMAL}\n[[segment]]\nname = \"foo\"\ninclude = [\"y\"]\ncommand = \"true\"\n"
    ));
    assert!(
        e.starts_with("checkdef.toml:9:8: duplicate segment name `foo` (first declared on line 4)"),
        "{e}"
    );
}

#[test]
fn no_inputs() {
    let e = err("version = 1\n[[segment]]\nname = \"a\"\ninclude = []\ncommand = \"true\"\n");
    assert!(
        e.starts_with("checkdef.toml:4:11: segment `a` has no inputs"),
        "{e}"
    );
    let e = err("version = 1\n[[segment]]\nname = \"a\"\ncommand = \"true\"\n");
    assert!(
        e.starts_with("checkdef.toml:3:8: segment `a` has no inputs"),
        "{e}"
    );
}

#[test]
fn invalid_glob() {
    let e = err(
        "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"ok/**\", \"src/{a\"]\ncommand = \"true\"\n",
    );
    assert!(
        e.starts_with("checkdef.toml:4:21: invalid glob `src/{a`"),
        "{e}"
    );
    let e =
        err("version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"/abs\"]\ncommand = \"true\"\n");
    assert!(e.contains("leading `/`"), "{e}");
    let e =
        err("version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"src/\"]\ncommand = \"true\"\n");
    assert!(e.contains("write `src/**`"), "{e}");
}

#[test]
fn bad_names_and_values() {
    let e =
        err("version = 1\n[[segment]]\nname = \"a b\"\ninclude = [\"x\"]\ncommand = \"true\"\n");
    assert!(
        e.starts_with("checkdef.toml:3:8: invalid segment name `a b`"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}sandbox = \"none\"\n"));
    assert!(e.starts_with("checkdef.toml:7:"), "{e}");
    let e = err(&format!("{MINIMAL}tests = [\"t.py\"]\n"));
    assert!(e.contains("both `command` and `tests`"), "{e}");
    let e = err(&format!("{MINIMAL}[hook]\nmode = \"some\"\n"));
    assert!(e.starts_with("checkdef.toml:8:"), "{e}");
    let e = err(&format!("{MINIMAL}[hook]\ncommits = \"every\"\n"));
    assert!(
        e.starts_with("checkdef.toml:8:") && e.contains("tip"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}[hook]\ntags = \"no\"\n"));
    assert!(
        e.starts_with("checkdef.toml:8:") && e.contains("skip"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}[cache]\ntrusted-public-keys = [\"nocolon\"]\n"
    ));
    assert!(e.contains("expected `name:base64`"), "{e}");
    let e = err(&format!("{MINIMAL}[cache]\nremote = \"ftp://x\"\n"));
    assert!(
        e.starts_with("checkdef.toml:8:10: invalid cache remote"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}[cache]\nremote = \"s3://bucket?region=eu-west-1&compression=xz\"\n"
    ));
    assert!(
        e.starts_with("checkdef.toml:8:10: invalid cache remote")
            && e.contains("unsupported store parameter `compression`"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}[cache]\naccept = \"ci-only\"\n"));
    assert!(e.contains("labelled \"ci\""), "{e}");
    let e = err(&format!("{MINIMAL}[cache]\ntimeout-secs = 0\n"));
    assert!(e.contains("timeout-secs"), "{e}");
    let e = err("version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"x\"]\n");
    assert!(e.contains("has no `command`"), "{e}");
    let e = err("version = 1\n");
    assert!(e.contains("no [[segment]]"), "{e}");
    let e = err("version = 1\n[defaults]\nenv = { \"A=B\" = \"x\" }\n");
    assert!(e.contains("invalid environment variable name `A=B`"), "{e}");
}

#[test]
fn labelled_key_errors_name_the_field() {
    let e = err(&format!(
        "{MINIMAL}[cache]\ntrusted-public-keys = [{{ key = \"a:b\", lable = \"ci\" }}]\n"
    ));
    assert!(e.contains("unknown field `lable`"), "{e}");
    let e = err(&format!("{MINIMAL}[cache]\ntrusted-public-keys = [3]\n"));
    assert!(e.contains("name:base64"), "{e}");
}

#[test]
fn syntax_error_is_located() {
    let e = err("version = 1\n[[segment]\n");
    assert!(e.starts_with("checkdef.toml:2:"), "{e}");
}

#[test]
fn plain_globs_are_recognised_conservatively() {
    assert_eq!(
        plain_glob("pytest.ini"),
        Some(PlainGlob::Path("pytest.ini"))
    );
    assert_eq!(plain_glob("a/b c.py"), Some(PlainGlob::Path("a/b c.py")));
    assert_eq!(plain_glob("src/a/**"), Some(PlainGlob::Dir("src/a")));
    assert_eq!(plain_glob("a//**"), Some(PlainGlob::Dir("a/")));
    for other in [
        "**", "/**", "a/**/b", "a/*", "a/**/**", "*.py", "a?", "[ab]", "{a,b}", "a,b", "a\\*",
        "a/b**", "**/a",
    ] {
        assert_eq!(plain_glob(other), None, "{other}");
    }
}

/// The split matcher agrees with one plain GlobSet per segment, for paths that share
/// directories in every order (the directory memo must never go stale).
#[test]
fn split_matcher_agrees_with_globset() {
    use proptest::prelude::*;
    let globs = [
        "a/**", "a/b/**", "a", "a/b", "b/**", "a/b/c.py", "a/*.py", "**/c.py", "a//**", "{a,b}/**",
        "a b/**", "ü/**", "a/b\\*c",
    ];
    let comps = ["a", "b", "c.py", "", "a b", "ü", "b*c", "x\n"];
    let cfg = |sel: &[(usize, bool, usize)]| {
        let mut text = String::from("version = 1\n");
        for (i, &(g, excl, g2)) in sel.iter().enumerate() {
            let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
            text.push_str(&format!(
                "[[segment]]\nname = \"s{i}\"\ninclude = [{}, {}]\ncommand = \"true\"\n",
                q(globs[g]),
                q(globs[g2])
            ));
            if excl {
                text.push_str("exclude = [\"**/c.py\"]\n");
            }
        }
        parse(&text).unwrap()
    };
    let strategy = (
        proptest::collection::vec((0..globs.len(), any::<bool>(), 0..globs.len()), 1..6),
        proptest::collection::vec(proptest::collection::vec(0..comps.len(), 1..5), 1..30),
    );
    proptest!(ProptestConfig::with_cases(300), |((sel, paths) in strategy)| {
        let c = cfg(&sel);
        let m = c.matcher();
        let mut scratch = MatchScratch::default();
        let mut out = Vec::new();
        for p in &paths {
            let path = p.iter().map(|&i| comps[i]).collect::<Vec<_>>().join("/");
            m.segments_for(path.as_bytes(), &mut scratch, &mut out);
            let expected: Vec<u32> = c
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_match(path.as_bytes()))
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(&out, &expected, "path {:?}", path);
        }
    });
}

#[test]
fn line_column_counts_chars() {
    assert_eq!(line_column("ab\nçd", 5), (2, 2));
    assert_eq!(line_column("", 0), (1, 1));
}

#[test]
fn matcher_maps_globs_to_segments() {
    let text = r#"
version = 1
[defaults]
include = ["pytest.ini"]
[[segment]]
name = "a"
include = ["src/a/**", "docs/{a,b}.txt", "*.cfg"]
exclude = ["**/*.md"]
command = "true"
[[segment]]
name = "b"
include = ["src/**/b.py", "**/*.md"]
command = "true"
"#;
    let c = parse(text).unwrap();
    let m = c.matcher();
    let mut scratch = MatchScratch::default();
    let mut out = Vec::new();
    let mut hits = |p: &str| {
        m.segments_for(p.as_bytes(), &mut scratch, &mut out);
        out.clone()
    };
    assert_eq!(hits("pytest.ini"), vec![0, 1]);
    assert_eq!(hits("src/a/x/y.py"), vec![0]);
    assert_eq!(hits("src/a/b.py"), vec![0, 1]);
    assert_eq!(hits("src/a/README.md"), vec![1]);
    assert_eq!(hits("docs/a.txt"), vec![0]);
    assert_eq!(hits("docs/c.txt"), Vec::<u32>::new());
    assert_eq!(hits("setup.cfg"), vec![0]);
    assert_eq!(
        hits("sub/setup.cfg"),
        Vec::<u32>::new(),
        "* stays in one component"
    );
    assert_eq!(hits("src/b.py"), vec![1], "** matches zero components");
    assert!(c.segments[0].is_match(b"src/a/x.py"));
    assert!(!c.segments[0].is_match(b"src/a/x.md"));
    assert!(c.segments[1].is_match(b"src/a/x.md"));
}

#[test]
fn shell_quoting() {
    assert_eq!(
        pytest_command(["t/a.py", "t/b c.py", "it's"]),
        "python3 -m pytest t/a.py 't/b c.py' 'it'\\''s'"
    );
}
