//! The sandbox of a miss (issue "No wrong PASS"): a check reads its inputs and the system, and
//! nothing else of the repository — not by absolute path, not through an editable install, not
//! through `/proc/PID/cwd` of checkdef itself; reading a file that is not an input fails and is
//! named; no network unless `network = true`; checkdef's local cache is out of reach.
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use crate::run::have_pytest;
use crate::support::{CmdOut, TestRepo};

/// True when this system isolates checks (the run did not warn that it cannot). Under CI an
/// unisolated system fails the test instead of letting it pass silently.
fn isolated(out: &CmdOut) -> bool {
    if out.stderr.contains("sandbox: NOT isolated") {
        if testkit::in_ci() {
            panic!(
                "this test needs unprivileged user namespaces and overlayfs (CI must provide them): {}",
                out.stderr
            );
        }
        eprintln!(
            "SKIP: checks are not isolated on this system: {}",
            out.stderr
        );
        return false;
    }
    true
}

fn config(segments: &str) -> String {
    format!("version = 1\n\n{segments}")
}

#[test]
fn a_repository_file_read_by_absolute_path_outside_the_globs_fails_and_is_named() {
    let repo = TestRepo::new();
    let data = repo.root.join("data/config.txt");
    repo.write("data/config.txt", "good\n")
        .write("src/check.sh", "grep -qx good \"$DATA\"\n");
    repo.write(
        "checkdef.toml",
        &config(&format!(
            r#"[[segment]]
name = "abs"
include = ["src/**"]
env = {{ DATA = "{}" }}
command = "sh src/check.sh"

[[segment]]
name = "proc-cwd"
include = ["src/**"]
command = "cat /proc/$PPID/cwd/data/config.txt"
"#,
            data.display()
        )),
    );
    repo.commit("init");
    let r = repo.run_json(&[], &[]);
    if !isolated(&r) {
        return;
    }
    r.expect_code(1);
    assert_eq!(r.status("abs"), "failed", "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "abs: read data/config.txt, which is not an input of this segment (add it to include)"
        ),
        "{}",
        r.stderr
    );
    // checkdef's own cwd is the work tree: /proc/PID/cwd of a process outside the sandbox
    // is not a way around it.
    assert_eq!(r.status("proc-cwd"), "failed", "{}", r.stderr);
    assert!(repo.cached_narinfos().is_empty());

    // Declared, it passes; and breaking it then reruns (the file is an input now).
    let cfg = std::fs::read_to_string(repo.path("checkdef.toml")).unwrap();
    repo.write(
        "checkdef.toml",
        &cfg.replacen(
            r#"include = ["src/**"]"#,
            r#"include = ["src/**", "data/**"]"#,
            1,
        ),
    );
    repo.commit("declare data");
    let r = repo.run_json(&["--segment", "abs"], &[]);
    r.expect_code(0);
    repo.write("data/config.txt", "broken\n");
    repo.commit("break data");
    let r = repo.run_json(&["--segment", "abs"], &[]);
    r.expect_code(1);
    assert_eq!(r.source("abs"), "run");
}

/// What `pip install -e .` leaves behind: a `.pth` file in the environment's site-packages
/// naming the repository's `src`. Without a sandbox at the repository's path, the check would
/// import the work tree's files.
#[test]
fn an_editable_install_imports_from_the_sandbox_never_the_work_tree() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let venv = repo.tmp.path().join("venv");
    let st = Command::new("python3")
        .args(["-m", "venv", "--without-pip", "--system-site-packages"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(st.success(), "python3 -m venv failed");
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::write(
        site.join("__editable__.foo-0.1.pth"),
        format!("{}\n", repo.root.join("src").display()),
    )
    .unwrap();
    let python = venv.join("bin/python");
    repo.write("src/foo/__init__.py", "NAME = \"foo\"\n")
        .write(
            "tests/test_foo.py",
            "import foo\n\n\ndef test_foo():\n    assert foo.NAME == \"foo\"\n",
        )
        .write("pytest.ini", "[pytest]\n")
        .write(
            "checkdef.toml",
            &config(&format!(
                r#"[[segment]]
name = "declared"
include = ["pytest.ini", "src/foo/**", "tests/test_foo.py"]
command = "{py} -m pytest -q -p no:cacheprovider tests/test_foo.py"

[[segment]]
name = "undeclared"
include = ["pytest.ini", "tests/test_foo.py"]
command = "{py} -m pytest -q -p no:cacheprovider tests/test_foo.py"
"#,
                py = python.display()
            )),
        );
    repo.commit("init");
    // The work tree differs from the commit; the commit is what is checked.
    repo.write("src/foo/__init__.py", "NAME = \"broken\"\n");
    let r = repo.run_json(&["--rev", "HEAD"], &[]);
    if !isolated(&r) {
        return;
    }
    assert_eq!(r.status("declared"), "passed", "{}", r.stderr);
    assert_eq!(r.status("undeclared"), "failed", "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "undeclared: read src/foo/__init__.py, which is not an input of this segment"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_read_of_a_non_input_is_named_and_explain_shows_it() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("tests/data.txt", "42\n")
        .write(
            "tests/test_data.py",
            "def test_data():\n    assert open('tests/data.txt').read() == '42\\n'\n",
        )
        .write(
            "checkdef.toml",
            &config(
                r#"[[segment]]
name = "foo-tests"
include = ["tests/test_data.py"]
command = "python3 -m pytest -q -p no:cacheprovider tests/test_data.py"
"#,
            ),
        );
    repo.commit("init");
    let r = repo.run_json(&[], &[]);
    if !isolated(&r) {
        return;
    }
    r.expect_code(1);
    let msg =
        "foo-tests: read tests/data.txt, which is not an input of this segment (add it to include)";
    assert!(r.stderr.contains(msg), "{}", r.stderr);
    let warnings = r.seg("foo-tests")["warnings"].to_string();
    assert!(warnings.contains("tests/data.txt"), "{warnings}");
    let out = repo.checkdef(&["explain", "foo-tests"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("undeclared reads in the last run: tests/data.txt"),
        "{err}"
    );
}

/// The shared skeleton is reused while its key (the commit's tree, or the index's checksum) is
/// unchanged: a file added since the last run, by a commit or by `git add` (also with git's
/// `index.skipHash`, which leaves the index checksum zero), must still be a placeholder in the
/// next view, or a check that swallows the failed read of a non-input would pass.
#[test]
fn a_file_added_since_the_last_run_is_a_denied_read_in_the_next_one() {
    let repo = TestRepo::new();
    repo.write("src/a", "a\n").write(
        "checkdef.toml",
        &config(
            r#"[[segment]]
name = "reader"
include = ["src/a"]
command = "cat src/a; for f in src/*.txt; do cat \"$f\"; done; true"
"#,
        ),
    );
    repo.commit("init");
    let r = repo.run_json(&["--rev", "HEAD"], &[]);
    if !isolated(&r) {
        return;
    }
    r.expect_code(0);
    let named = |r: &CmdOut, file: &str| {
        r.expect_code(1);
        let msg = format!("reader: read {file}, which is not an input of this segment");
        assert!(r.stderr.contains(&msg), "{file}: {}", r.stderr);
    };
    // A new commit: a new tree.
    repo.write("src/committed.txt", "x\n");
    repo.commit("add committed.txt");
    named(
        &repo.run_json(&["--rev", "HEAD", "--force"], &[]),
        "src/committed.txt",
    );
    // The work tree: the index changed.
    repo.checkdef(&["run", "-q", "--force"]);
    repo.write("src/staged.txt", "x\n");
    repo.git(&["add", "src/staged.txt"]);
    named(&repo.run_json(&["--force"], &[]), "src/staged.txt");
    // No checksum to trust: an index of the same size, with one path exchanged for another.
    repo.git(&["config", "index.skipHash", "true"]);
    repo.git(&["rm", "-q", "--cached", "src/staged.txt"]);
    repo.write("src/first.txt", "x\n")
        .write("src/other.txt", "x\n");
    repo.git(&["add", "src/first.txt"]);
    named(&repo.run_json(&["--force"], &[]), "src/first.txt");
    repo.git(&["rm", "-q", "--cached", "src/first.txt"]);
    repo.git(&["add", "src/other.txt"]);
    named(&repo.run_json(&["--force"], &[]), "src/other.txt");
}

#[test]
fn the_network_is_refused_unless_the_segment_allows_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)\""
    );
    // The check's own loopback works: a test may serve on 127.0.0.1 and connect to itself.
    let own = "python3 -c \"import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); socket.create_connection(s.getsockname(), timeout=5)\"";
    let repo = TestRepo::new();
    repo.write("src/x", "x\n").write(
        "checkdef.toml",
        &config(&format!(
            r#"[[segment]]
name = "offline"
include = ["src/**"]
command = "{c}"

[[segment]]
name = "online"
include = ["src/**"]
network = true
command = "{c}"

[[segment]]
name = "own-loopback"
include = ["src/**"]
command = "{own}"
"#,
            c = connect.replace('"', "\\\""),
            own = own.replace('"', "\\\"")
        )),
    );
    repo.commit("init");
    let r = repo.run_json(&[], &[]);
    if !isolated(&r) {
        return;
    }
    assert_eq!(r.status("offline"), "failed", "{}", r.stderr);
    assert_eq!(r.status("online"), "passed", "{}", r.stderr);
    assert_eq!(r.status("own-loopback"), "passed", "{}", r.stderr);
    // `network` is part of what a result is for.
    let off = repo.hash("offline", &[]);
    let on = repo.hash("online", &[]);
    assert_ne!(off, on);
    drop(listener);
}

#[test]
fn a_check_cannot_write_into_the_local_cache() {
    let repo = TestRepo::new();
    let planted = repo.cache.join("planted.narinfo");
    std::fs::write(repo.cache.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    repo.write("src/x", "x\n").write(
        "checkdef.toml",
        &config(&format!(
            r#"[[segment]]
name = "writer"
include = ["src/**"]
command = "echo forged > {}"
"#,
            planted.display()
        )),
    );
    repo.commit("init");
    let r = repo.run_json(&[], &[]);
    if !isolated(&r) {
        return;
    }
    assert_eq!(r.status("writer"), "failed", "{}", r.stderr);
    assert!(!planted.exists(), "the check wrote into the local cache");
    assert!(!Path::new(&planted).exists());
}

/// Where the kernel cannot isolate (here: forced off), checks run as before, in a copy of their
/// inputs, and the run says so once.
#[test]
fn without_isolation_checks_run_in_a_copy_and_the_run_says_so_once() {
    let repo = TestRepo::new();
    repo.write("src/x", "x\n").write(
        "checkdef.toml",
        &config(
            r#"[[segment]]
name = "a"
include = ["src/**"]
command = "test -f src/x"

[[segment]]
name = "b"
include = ["src/**"]
command = "test -f src/x"
"#,
        ),
    );
    repo.commit("init");
    let r = repo.run_json(&[], &[("CHECKDEF_ISOLATION", "off")]);
    r.expect_code(0);
    assert_eq!(
        r.stderr
            .matches("warning: sandbox: NOT isolated (CHECKDEF_ISOLATION=off)")
            .count(),
        1,
        "{}",
        r.stderr
    );
    // A run with nothing to run has nothing to say about sandboxes.
    let r = repo.run_json(&[], &[("CHECKDEF_ISOLATION", "off")]);
    assert!(!r.stderr.contains("sandbox:"), "{}", r.stderr);
}

/// A relative `CHECKDEF_CACHE_DIR` (or sandbox directory) names a directory relative to where
/// checkdef started, not relative to wherever a sandbox stage runs: the check runs and passes,
/// and its result lands in that directory (it used to fail with exit 125, "mounting the overlay:
/// No such file or directory").
#[test]
fn a_relative_cache_and_sandbox_directory_work_like_absolute_ones() {
    let repo = TestRepo::new();
    repo.write("a.txt", "hi\n").write(
        "checkdef.toml",
        &config(
            "[[segment]]\nname = \"a\"\ninclude = [\"a.txt\"]\ncommand = \"grep -qx hi a.txt\"\n",
        ),
    );
    repo.commit("init");
    let rel_cache = repo.tmp.path().join("rel-cache");
    std::fs::create_dir(&rel_cache).unwrap();
    std::fs::set_permissions(
        &rel_cache,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::create_dir(repo.tmp.path().join("rel-sandboxes")).unwrap();
    let r = repo.run_json(
        &[],
        &[
            ("CHECKDEF_CACHE_DIR", "../rel-cache"),
            ("CHECKDEF_SANDBOX_DIR", "../rel-sandboxes"),
        ],
    );
    if !isolated(&r) {
        return;
    }
    r.expect_code(0);
    assert_eq!(r.status("a"), "passed", "{}", r.stderr);
    assert_eq!(
        crate::support::narinfos_in(&rel_cache).len(),
        1,
        "{}",
        r.stderr
    );
    assert!(crate::support::narinfos_in(&repo.cache).is_empty());
}
