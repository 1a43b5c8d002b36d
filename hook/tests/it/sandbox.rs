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
    let bin = crate::support::venv_with_pth(
        &repo.tmp.path().join("venv"),
        &format!("{}\n", repo.root.join("src").display()),
    );
    let python = bin.join("python");
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

/// The stores below `cache/checkdef-sandboxes`, each with the repository it names and the paths
/// its segments' inputs layers hold (a layer named by the first path of its `state`).
fn stores(cache: &Path) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(cache.join("checkdef-sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let owner = std::fs::read_to_string(s.path().join("root")).unwrap_or_default();
        let mut layers: Vec<String> = std::fs::read_dir(s.path().join("inputs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|l| {
                let state = std::fs::read_to_string(l.path().join("state")).unwrap_or_default();
                state
                    .lines()
                    .next()
                    .unwrap_or("")
                    .rsplit(' ')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        layers.sort();
        out.push((owner, layers));
    }
    out.sort();
    out
}

/// A shell holding `path`'s flock (`-s`: shared, `-x`: exclusive) until its stdin closes;
/// returned once it holds it.
fn hold_lock(path: &Path, how: &str) -> std::process::Child {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "exec 9<>\"$0\" && flock \"$1\" 9 && echo held && { read _ || true; }",
        ])
        .arg(path)
        .arg(how)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "held\n");
    child
}

/// The inputs layer of `store_owner`'s store holding `path`.
fn layer_dir(cache: &Path, store_owner: &Path, path: &str) -> std::path::PathBuf {
    for s in std::fs::read_dir(cache.join("checkdef-sandboxes"))
        .unwrap()
        .flatten()
    {
        if std::fs::read(s.path().join("root")).unwrap_or_default()
            != store_owner.as_os_str().as_encoded_bytes()
        {
            continue;
        }
        for l in std::fs::read_dir(s.path().join("inputs"))
            .unwrap()
            .flatten()
        {
            let state = std::fs::read_to_string(l.path().join("state")).unwrap_or_default();
            if state
                .lines()
                .any(|line| line.ends_with(&format!(" {path}")))
            {
                return l.path();
            }
        }
    }
    panic!(
        "no layer with {path} in {}'s store: {:?}",
        store_owner.display(),
        stores(cache)
    );
}

#[test]
fn cache_gc_removes_the_layers_of_gone_clones_and_unused_segments_and_keeps_those_in_use() {
    let repo = TestRepo::new();
    crate::support::shell_layout(&repo);
    repo.write("src/baz/value", "ok\n");
    repo.commit("init");
    let clone = repo.clone_to("clone");
    let r = repo.run_json(&[], &[]);
    if !isolated(&r) {
        return;
    }
    r.expect_code(0);
    let mut in_clone = repo.checkdef_cmd_in(&clone, &["run", "--force"]);
    CmdOut::from_output(in_clone.output().unwrap()).expect_code(0);
    let root = repo.root.canonicalize().unwrap();
    let clone = clone.canonicalize().unwrap();
    let both = vec!["src/bar/value".to_owned(), "src/foo/value".to_owned()];
    assert_eq!(
        stores(&repo.cache),
        vec![
            (clone.display().to_string(), both.clone()),
            (root.display().to_string(), both.clone())
        ]
    );
    // `bar` becomes `baz` here; the clone is deleted; a killed run left a lock file.
    repo.write(
        "checkdef.toml",
        &crate::support::SHELL_CONFIG
            .replace("\"bar\"", "\"baz\"")
            .replace("src/bar", "src/baz"),
    );
    repo.commit("bar is baz now");
    repo.run_json(&[], &[]).expect_code(0);
    std::fs::remove_dir_all(&clone).unwrap();
    let locks = repo.cache.join("checkdef-locks");
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::write(locks.join("0".repeat(64)), "").unwrap();
    // Nobody ran `bar` for 31 days, nor `foo` — but a run is using `foo`'s layer right now.
    let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(31 * 86_400);
    let bar = layer_dir(&repo.cache, &root, "src/bar/value");
    let foo = layer_dir(&repo.cache, &root, "src/foo/value");
    for l in [&bar, &foo] {
        let f = std::fs::File::options()
            .write(true)
            .open(l.join("lock"))
            .unwrap();
        f.set_modified(month_ago).unwrap();
    }
    // While a run of the repository holds its store (shared, as every run does), gc leaves
    // every layer of it alone.
    let store_lock = foo
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("skeleton/lock");
    let mut run_in_progress = hold_lock(&store_lock, "-s");
    let during = repo.checkdef_text(&["cache", "gc", "--max-size", "1G"], &[]);
    drop(run_in_progress.stdin.take());
    assert!(run_in_progress.wait().unwrap().success());
    during.expect_code(0);
    // The gone clone's store and the killed run's lock go; this store's layers stay.
    assert!(
        bar.exists()
            && foo.exists()
            && during
                .stderr
                .contains("removed the sandbox layers of 1 repositories")
            && during.stderr.contains(", 0 layers of segments unused")
            && during.stderr.contains("1 lock files of killed runs"),
        "{}",
        during.stderr
    );
    // A run is using `foo`'s layer right now.
    let mut holder = hold_lock(&foo.join("lock"), "-x");
    let gc = repo.checkdef_text(&["cache", "gc", "--max-size", "1G"], &[]);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    gc.expect_code(0);
    assert!(
        gc.stderr
            .contains("removed the sandbox layers of 0 repositories")
            && gc.stderr.contains(", 1 layers of segments unused"),
        "{}",
        gc.stderr
    );
    assert_eq!(
        stores(&repo.cache),
        vec![(
            root.display().to_string(),
            vec!["src/baz/value".to_owned(), "src/foo/value".to_owned()]
        )]
    );
    assert!(!bar.exists() && foo.join("tree/src/foo/value").is_file());
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
    // Nothing in use or current went: the next run still passes, and an edit reruns fine in the
    // kept layers.
    repo.write("src/baz/value", "bad\n");
    repo.commit("break baz");
    let after = repo.run_json(&[], &[]);
    after.expect_code(1);
    assert_eq!(after.status("baz"), "failed");
    assert_eq!(after.status("foo"), "passed");
    assert_eq!(after.source("foo"), "local");
    // A hit does not use a layer: `foo`'s, no longer held, is as unused as before and goes
    // now; then there is nothing left to remove, and gc says nothing about layers.
    // With it goes the stored file of `ok` (baz holds `bad` now), which no layer links any more.
    let again = repo.checkdef_text(&["cache", "gc", "--max-size", "1G"], &[]);
    again.expect_code(0);
    assert!(
        again.stderr.contains("0 repositories")
            && again.stderr.contains(", 1 layers")
            && again
                .stderr
                .contains("and 1 stored files no sandbox layer uses"),
        "{}",
        again.stderr
    );
    let third = repo.checkdef_text(&["cache", "gc", "--max-size", "1G"], &[]);
    third.expect_code(0);
    assert!(
        !third.stderr.contains("removed the sandbox layers")
            && third.stderr.contains("; sandbox layers ")
            && third.stderr.contains("(not counted"),
        "{}",
        third.stderr
    );
    assert_eq!(
        stores(&repo.cache),
        vec![(root.display().to_string(), vec!["src/baz/value".to_owned()])]
    );
}

#[test]
fn data_committed_next_to_a_test_that_globs_for_it_reruns_the_check_never_a_stored_pass() {
    // A data-driven test finds its cases by listing a directory none of whose files is an
    // input. With no data it passes with no cases; once the data is committed the check must
    // run again (and fail, loudly, on reading files that are not its inputs), not answer with
    // the pass stored before.
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write(
            "tests/test_golden.py",
            "import pathlib, pytest\nCASES = sorted(pathlib.Path(__file__).parent.glob('*/*.expected'))\n\n\n@pytest.mark.parametrize('path', CASES, ids=str)\ndef test_golden(path):\n    assert int(path.read_text()) < 3\n",
        )
        .write("tests/NOTES", "first\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"golden\"\ntests = [\"tests/test_golden.py\"]\n",
        );
    repo.commit("tests, no data yet");
    let first = repo.run_json(&["--rev", "HEAD"], &[]);
    if !isolated(&first) {
        return;
    }
    first.expect_code(0);
    assert_eq!(first.source("golden"), "run");
    // Another file's contents next to the test: not a listing change, still a hit.
    repo.write("tests/NOTES", "second\n");
    repo.commit("notes");
    let notes = repo.run_json(&["--rev", "HEAD"], &[]);
    notes.expect_code(0);
    assert_eq!(notes.source("golden"), "local");
    for i in 1..=3 {
        repo.write(&format!("tests/golden/c{i}.expected"), &format!("{i}\n"));
    }
    repo.commit("golden data");
    let data = repo.run_json(&["--rev", "HEAD"], &[]);
    data.expect_code(1);
    assert_eq!(data.source("golden"), "run");
    assert_eq!(data.status("golden"), "failed");
    assert!(
        data.stderr
            .contains("read tests/golden/c1.expected, which is not an input"),
        "{}",
        data.stderr
    );
    let why = repo.checkdef_env(&["plan", "--explain", "--rev", "HEAD"], &[]);
    assert!(
        why.stderr
            .contains("golden: names changed in 1 directory (tests)"),
        "{}",
        why.stderr
    );
    // Declared, the data is read and the failing case fails.
    let config = std::fs::read_to_string(repo.path("checkdef.toml")).unwrap();
    repo.write(
        "checkdef.toml",
        &config.replace(
            "tests = [\"tests/test_golden.py\"]\n",
            "tests = [\"tests/test_golden.py\"]\ninclude = [\"tests/golden/**\"]\n",
        ),
    );
    repo.commit("declare the data");
    let declared = repo.run_json(&["--rev", "HEAD"], &[]);
    declared.expect_code(1);
    assert!(
        !declared.stderr.contains("which is not an input")
            && declared.stderr.contains("1 failed, 2 passed"),
        "{}",
        declared.stderr
    );
}

#[test]
fn a_shim_in_the_sandbox_reads_the_version_file_the_fingerprint_saw() {
    // pyenv's shim picks the interpreter from `.python-version`. A committed one that is no
    // input was an empty placeholder in the view, so the shim fell back to the system's
    // interpreter while the fingerprint (taken in the work tree) described pyenv's. The work
    // tree's version files, tracked or not, are in every view.
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let real = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let shims = repo.tmp.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let shim = shims.join("python3");
    crate::support::write_executable(
        &shim,
        &format!(
            "#!/bin/sh\nv=$(cat .python-version 2>/dev/null)\n[ \"$v\" = real ] && exec {real} \"$@\"\necho \"shim: the system interpreter (version file: '$v')\" >&2\nexit 3\n"
        ),
    );
    repo.write(".python-version", "real\n")
        .write("tests/test_x.py", "def test_x():\n    pass\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"x\"\ninclude = [\"tests/**\"]\ncommand = \"python3 -m pytest -q -p no:cacheprovider tests/test_x.py\"\nfingerprint = []\n",
        );
    repo.commit("a committed .python-version");
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        let mut cmd = repo.checkdef_cmd_in(&repo.root, args);
        cmd.env("PATH", &path);
        CmdOut::from_output(cmd.output().unwrap())
    };
    let committed = run(&["run", "--json", "--rev", "HEAD"]);
    if !isolated(&committed) {
        return;
    }
    assert_eq!(
        committed.seg("x")["status"],
        "passed",
        "{}",
        committed.stderr
    );
    // Untracked (ignored, as `pyenv local` users often keep it): the same, for a commit.
    repo.git(&["rm", "-q", "--cached", ".python-version"]);
    repo.write(".gitignore", ".python-version\n");
    repo.commit("the version file is the developer's own");
    let untracked = run(&["run", "--json", "--rev", "HEAD", "--force"]);
    assert_eq!(
        untracked.seg("x")["status"],
        "passed",
        "{}",
        untracked.stderr
    );
    // Without one, the shim's fallback is what the check gets (and fails loudly here).
    std::fs::remove_file(repo.path(".python-version")).unwrap();
    let none = run(&["run", "--json", "--rev", "HEAD", "--force"]);
    assert_eq!(none.seg("x")["status"], "failed");
    assert!(
        none.stderr.contains("the system interpreter"),
        "{}",
        none.stderr
    );
}

#[test]
fn a_symlink_that_is_no_input_is_a_symlink_in_the_view() {
    // A committed link to a data directory: as an empty placeholder file, `glob` through it
    // found nothing and the check passed where pytest fails (even on a fresh run).
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("tests/golden/a.txt", "a\n")
        .symlink("../golden", "tests/unit/golden");
    repo.write(
        "tests/unit/test_g.py",
        "import glob, os, pathlib\nHERE = pathlib.Path(__file__).parent\n\n\ndef test_g():\n    link = HERE / 'golden'\n    print('isdir', link.is_dir(), 'islink', link.is_symlink(), 'target', os.readlink(link))\n    assert glob.glob(str(link / '*.bad')) == []\n",
    )
    .write(
        "checkdef.toml",
        "version = 1\n\n[[segment]]\nname = \"g\"\ninclude = [\"pytest.ini\", \"tests/unit/test_g.py\"]\ncommand = \"python3 -m pytest -s -q tests/unit/test_g.py\"\n",
    );
    repo.commit("a link to the golden data");
    let first = repo.run_json(&["--rev", "HEAD", "-v"], &[]);
    if !isolated(&first) {
        return;
    }
    first.expect_code(0);
    assert!(
        first
            .stderr
            .contains("isdir True islink True target ../golden"),
        "{}",
        first.stderr
    );
    repo.write("tests/golden/x.bad", "bad\n");
    repo.commit("bad data behind the link");
    // The linked directory's names are part of the hash: no stored pass answers.
    let after = repo.run_json(&["--rev", "HEAD"], &[]);
    after.expect_code(1);
    assert_eq!(after.source("g"), "run");
    assert_eq!(after.status("g"), "failed");
}

#[test]
fn a_linked_directory_is_hashed_through_other_links_and_absolute_targets() {
    // From outside trial 7: a link whose target goes through another link
    // (`in/link -> ../other/sub`, `other -> data`), or names the repository by its absolute
    // path, was resolved lexically (or not at all), so `data/sub`, which the check lists
    // through it, was not hashed: a file added there kept a stored pass that a checkout fails.
    let shell = |n: u32| {
        config(&format!(
            "[[segment]]\nname = \"plugins\"\ninclude = [\"in/**\"]\ncommand = \"test $(ls in/link | wc -l) -eq {n}\"\n"
        ))
    };
    let absolute = |repo: &TestRepo| {
        let root = repo.root.canonicalize().unwrap();
        format!("{}/data/sub", root.display())
    };
    type Target = fn(&TestRepo) -> String;
    let variants: [(&str, Target); 4] = [
        ("through a link", |_| "../other/sub".into()),
        ("to a link to a linked directory", |_| "hop".into()),
        ("absolute", absolute),
        ("absolute, through a link", |repo| {
            format!("{}/other/sub", repo.root.canonicalize().unwrap().display())
        }),
    ];
    for (what, target) in variants {
        let repo = TestRepo::new();
        repo.write("data/sub/one", "1\n")
            .write("checkdef.toml", &shell(1));
        repo.symlink("data", "other");
        repo.symlink("../other/sub", "in/hop");
        repo.symlink(&target(&repo), "in/link");
        repo.commit("one plugin");
        for mode in [&["--rev", "HEAD"][..], &[]] {
            let r = repo.run_json(mode, &[]);
            if !isolated(&r) {
                return;
            }
            assert_eq!(
                r.status("plugins"),
                "passed",
                "{what} {mode:?}: {}",
                r.stderr
            );
        }
        repo.write("data/sub/two", "2\n");
        repo.commit("a second one, seen through in/link");
        let listing = repo.explain("plugins", &["--rev", "HEAD"]);
        assert!(listing.contains("listing data/sub "), "{what}: {listing}");
        for mode in [&["--rev", "HEAD"][..], &[]] {
            let r = repo.run_json(mode, &[]);
            assert_eq!(r.source("plugins"), "run", "{what} {mode:?}: {}", r.stderr);
            assert_eq!(r.status("plugins"), "failed", "{what} {mode:?}");
        }
    }
}

#[test]
fn a_link_retargeted_on_disk_has_the_listing_of_its_new_directory() {
    // In the work tree the view holds an input link as it is on disk, where the listings are
    // the index's: the directory hashed must be the one the link on disk names.
    let repo = TestRepo::new();
    repo.write("data/sub/one", "1\n")
        .write("data/new/one", "1\n")
        .write(
            "checkdef.toml",
            &config(
                "[[segment]]\nname = \"plugins\"\ninclude = [\"in/**\"]\ncommand = \"test $(ls in/link | wc -l) -eq 1\"\n",
            ),
        );
    repo.symlink("data", "other");
    repo.symlink("../other/sub", "in/link");
    repo.commit("one plugin");
    std::fs::remove_file(repo.path("in/link")).unwrap();
    repo.symlink("../other/new", "in/link");
    let r = repo.run_json(&[], &[]);
    if !isolated(&r) {
        return;
    }
    assert_eq!(r.status("plugins"), "passed", "{}", r.stderr);
    // A second file staged behind the new target, the link itself still unstaged.
    repo.write("data/new/two", "2\n");
    repo.git(&["add", "data/new/two"]);
    let after = repo.run_json(&[], &[]);
    assert_eq!(after.source("plugins"), "run", "{}", after.stderr);
    assert_eq!(after.status("plugins"), "failed");
}

#[test]
fn a_link_to_a_file_through_a_linked_directory_reads_an_input_or_fails() {
    // What a check reads through `in/f -> ../other/one` (`other -> data`) is `data/one`: an
    // input whose edit misses when it is declared, an unreadable placeholder otherwise (the
    // check fails; the log names the link, which is an input, so no undeclared read is named).
    let repo = TestRepo::new();
    repo.write("data/one", "1\n").write(
        "checkdef.toml",
        &config(
            "[[segment]]\nname = \"declared\"\ninclude = [\"in/**\", \"data/one\"]\ncommand = \"grep -qx 1 in/f\"\n\n[[segment]]\nname = \"undeclared\"\ninclude = [\"in/**\"]\ncommand = \"grep -qx 1 in/f\"\n",
        ),
    );
    repo.symlink("data", "other");
    repo.symlink("../other/one", "in/f");
    repo.commit("a link to a file through a linked directory");
    let r = repo.run_json(&["--rev", "HEAD"], &[]);
    if !isolated(&r) {
        return;
    }
    assert_eq!(r.status("declared"), "passed", "{}", r.stderr);
    assert_eq!(r.status("undeclared"), "failed", "{}", r.stderr);
    assert!(r.stderr.contains("in/f: Permission denied"), "{}", r.stderr);
    repo.write("data/one", "2\n");
    repo.commit("the file behind the links changes");
    let after = repo.run_json(&["--rev", "HEAD"], &[]);
    assert_eq!(after.source("declared"), "run", "{}", after.stderr);
    assert_eq!(after.status("declared"), "failed");
}

#[test]
fn equal_files_are_one_stored_file_across_layers_but_never_one_file_in_a_view() {
    // Layers hard-link their files to one stored file per blob. Two equal test modules of one
    // segment must still be two files: pytest tells same-named modules apart by
    // `os.path.samefile`, and one inode for both made it run the first twice and pass where a
    // checkout fails ("import file mismatch").
    use std::os::unix::fs::MetadataExt as _;
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let test = "from lib import shared\n\n\ndef test_same():\n    assert shared.X == 1\n";
    repo.write("pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
        .write("lib/shared.py", "X = 1\n")
        .write("tests/x/test_same.py", test)
        .write("tests/y/test_same.py", test)
        .write("tests/z/test_other.py", test)
        .write(
            "checkdef.toml",
            &config(
                "[[segment]]\nname = \"dup\"\ninclude = [\"pytest.ini\", \"lib/**\", \"tests/x/**\", \"tests/y/**\"]\ncommand = \"python3 -m pytest -q tests/x/test_same.py tests/y/test_same.py\"\n\n[[segment]]\nname = \"other\"\ninclude = [\"pytest.ini\", \"lib/**\", \"tests/z/**\"]\ncommand = \"python3 -m pytest -q tests/z/test_other.py\"\n",
            ),
        );
    repo.commit("two equal test modules of one name");
    let r = repo.run_json(&["--rev", "HEAD", "-v"], &[]);
    if !isolated(&r) {
        return;
    }
    r.expect_code(1);
    assert_eq!(r.status("other"), "passed");
    assert_eq!(r.status("dup"), "failed");
    assert!(r.stderr.contains("import file mismatch"), "{}", r.stderr);
    let root = repo.root.canonicalize().unwrap();
    let ino = |layer: &Path, path: &str| {
        let m = std::fs::metadata(layer.join("tree").join(path)).unwrap();
        (m.dev(), m.ino())
    };
    let dup = layer_dir(&repo.cache, &root, "tests/x/test_same.py");
    let other = layer_dir(&repo.cache, &root, "tests/z/test_other.py");
    assert_eq!(ino(&dup, "lib/shared.py"), ino(&other, "lib/shared.py"));
    assert_eq!(
        ino(&dup, "tests/x/test_same.py"),
        ino(&other, "tests/z/test_other.py")
    );
    assert_ne!(
        ino(&dup, "tests/x/test_same.py"),
        ino(&dup, "tests/y/test_same.py")
    );
}

#[test]
fn an_input_directory_that_becomes_a_file_or_a_link_updates_the_kept_layer() {
    // The kept inputs layer is updated from the difference: a directory whose files went and
    // whose name is a file now must not be in the way ("File exists", then a pass on the next
    // run only).
    let repo = TestRepo::new();
    repo.write("conf/v.txt", "old\n").write(
        "checkdef.toml",
        &config(
            "[[segment]]\nname = \"c\"\ninclude = [\"conf\", \"conf/**\", \"link\", \"link/**\"]\ncommand = \"test -f conf && grep -qx GOOD conf || test -f conf/v.txt\"\n",
        ),
    );
    repo.write("link/x.txt", "x\n");
    repo.commit("conf and link are directories");
    let r = repo.run_json(&["--rev", "HEAD"], &[]);
    if !isolated(&r) {
        return;
    }
    r.expect_code(0);
    std::fs::remove_dir_all(repo.root.join("conf")).unwrap();
    std::fs::remove_dir_all(repo.root.join("link")).unwrap();
    repo.write("conf", "GOOD\n").symlink("conf", "link");
    repo.commit("conf is a file, link a link");
    let after = repo.run_json(&["--rev", "HEAD"], &[]);
    assert_eq!(after.status("c"), "passed", "{}", after.stderr);
}

#[test]
fn committed_bytecode_of_an_input_is_an_input_whatever_the_excludes() {
    // A checkout imports a committed unchecked-hash .pyc without reading the source; in the
    // sandbox its unreadable placeholder was compiled around silently, and the check passed on
    // the source (both runners).
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    repo.write("src/pkg/__init__.py", "def value():\n    return 1\n")
        .write(
            "tests/test_value.py",
            "import pkg\n\n\ndef test_value():\n    assert pkg.value() == 1\n",
        )
        .write(
            "checkdef.toml",
            &config(
                "[defaults]\nexclude = [\"**/__pycache__/**\", \"**/*.pyc\"]\n\n[[segment]]\nname = \"v\"\ninclude = [\"src/**\"]\ntests = [\"tests/test_value.py\"]\nenv = { PYTHONPATH = \"src\" }\nrunner = \"process\"\n",
            ),
        );
    let made = Command::new("python3")
        .args([
            "-c",
            "import importlib.util, os, py_compile, sys, tempfile\nsrc = sys.argv[1]\nd = tempfile.mkdtemp()\nother = os.path.join(d, '__init__.py')\nopen(other, 'w').write('def value():\\n    return 2\\n')\npy_compile.compile(other, cfile=importlib.util.cache_from_source(src), dfile=src, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n",
        ])
        .arg(repo.root.join("src/pkg/__init__.py"))
        .status()
        .unwrap();
    assert!(made.success());
    repo.commit("committed bytecode that disagrees with its source");
    let r = repo.run_json(&["--rev", "HEAD"], &[]);
    if !isolated(&r) {
        return;
    }
    assert_eq!(r.status("v"), "failed", "{}", r.stderr);
}
