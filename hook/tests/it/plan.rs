//! Input hashes, snapshots, touched paths and the `plan`/`explain` commands against real git.
use checkdef::config::Config;
use checkdef::git::{FileMode, Repo, Target};
use checkdef::plan::build_plan;

use crate::support::{SEED_CONFIG, TestRepo, seed_layout, segment_field};

fn seeded() -> TestRepo {
    let repo = TestRepo::new();
    seed_layout(&repo);
    repo.commit("seed");
    repo
}

fn rev_hash(repo: &TestRepo, seg: &str) -> String {
    repo.hash(seg, &["--rev", "HEAD"])
}

#[test]
fn outside_the_segment_only_names_in_the_directories_around_its_inputs_count() {
    let repo = seeded();
    repo.write("docs/guide.md", "guide\n");
    repo.commit("docs");
    let foo = rev_hash(&repo, "foo-tests");
    // Contents of files that are not inputs never count.
    repo.write("README.md", "changed\n");
    repo.commit("edit outside");
    assert_eq!(rev_hash(&repo, "foo-tests"), foo);
    // Names in a directory that holds none of foo's inputs (and is no ancestor of one) do not.
    repo.write("docs/new.md", "new\n");
    repo.commit("add outside");
    assert_eq!(rev_hash(&repo, "foo-tests"), foo);
    repo.rename("docs/new.md", "docs/renamed.md");
    repo.commit("rename outside");
    assert_eq!(rev_hash(&repo, "foo-tests"), foo);
    repo.write("src/bar/extra.py", "\n");
    repo.commit("a file of another segment's package");
    assert_eq!(rev_hash(&repo, "foo-tests"), foo);
    // Names next to an input do: a check sees them (as placeholders) and can list them.
    repo.write("tests/data.json", "{}\n");
    repo.commit("data next to the test");
    let with_data = rev_hash(&repo, "foo-tests");
    assert_ne!(with_data, foo);
    // As do those of the root, an ancestor of every input directory.
    repo.rename("README.md", "docs/README.md");
    repo.commit("a root entry moved");
    assert_ne!(rev_hash(&repo, "foo-tests"), with_data);
    // Another segment's input changing leaves foo alone but changes bar.
    let foo = rev_hash(&repo, "foo-tests");
    let bar = rev_hash(&repo, "bar-tests");
    repo.write("src/bar/__init__.py", "BAR = 2\n");
    repo.commit("bar");
    assert_eq!(rev_hash(&repo, "foo-tests"), foo);
    assert_ne!(rev_hash(&repo, "bar-tests"), bar);
}

#[test]
fn changed_when_an_input_changes_content_mode_or_path() {
    let repo = seeded();
    let mut seen = vec![rev_hash(&repo, "foo-tests")];
    let step = |repo: &TestRepo, seen: &mut Vec<String>, what: &str| {
        repo.commit(what);
        let h = rev_hash(repo, "foo-tests");
        assert!(!seen.contains(&h), "{what}: hash did not change");
        seen.push(h);
    };
    repo.write("src/foo/__init__.py", "FOO = 2\n");
    step(&repo, &mut seen, "content");
    repo.chmod("src/foo/__init__.py", 0o755);
    step(&repo, &mut seen, "chmod +x");
    repo.rename("src/foo/__init__.py", "src/foo/core.py");
    step(&repo, &mut seen, "rename within the segment");
    repo.write("src/foo/extra.py", "\n");
    step(&repo, &mut seen, "new input");
    repo.remove("src/foo/extra.py");
    repo.commit("remove input");
    assert_eq!(
        rev_hash(&repo, "foo-tests"),
        seen[3],
        "back to the earlier inputs"
    );
    repo.write("pytest.ini", "[pytest]\naddopts = -x\n");
    step(&repo, &mut seen, "global input");
}

#[test]
fn changed_when_command_env_or_fingerprint_changes() {
    let repo = seeded();
    let h0 = repo.hash("foo-tests", &[]);
    let variants = [
        SEED_CONFIG.replace("-q tests/test_foo.py", "-x tests/test_foo.py"),
        SEED_CONFIG.replace("PYTHONPATH = \"src\"", "PYTHONPATH = \"lib\""),
        SEED_CONFIG.replace("env = {", "fingerprint = [\"echo toolchain-1\"]\nenv = {"),
        SEED_CONFIG.replace("env = {", "fingerprint = [\"echo toolchain-2\"]\nenv = {"),
    ];
    let mut seen = vec![h0.clone()];
    for v in &variants {
        repo.write("checkdef.toml", v);
        let h = repo.hash("foo-tests", &[]);
        assert!(
            !seen.contains(&h),
            "config change did not change the hash:\n{v}"
        );
        seen.push(h);
    }
    // Unhashed settings do not matter.
    repo.write(
        "checkdef.toml",
        &SEED_CONFIG
            .replace("env = {", "passthrough = [\"TERM\"]\nenv = {")
            .replace(
                "name = \"foo-tests\"",
                "name = \"foo-tests\"\ndescription = \"Foo\"",
            ),
    );
    assert_eq!(repo.hash("foo-tests", &[]), h0);
}

#[test]
fn fingerprint_output_is_hashed() {
    let repo = seeded();
    repo.write(
        "checkdef.toml",
        &SEED_CONFIG.replace("env = {", "fingerprint = [\"cat toolchain.txt\"]\nenv = {"),
    );
    repo.write("toolchain.txt", "v1\n");
    let h1 = repo.hash("foo-tests", &[]);
    repo.write("toolchain.txt", "v2\n");
    assert_ne!(repo.hash("foo-tests", &[]), h1);
    assert!(
        repo.explain("foo-tests", &[])
            .contains("fingerprint-stdout v2\\n\n")
    );
    // A failing fingerprint command is a configuration error.
    repo.write(
        "checkdef.toml",
        &SEED_CONFIG.replace("env = {", "fingerprint = [\"exit 7\"]\nenv = {"),
    );
    let out = repo.checkdef(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fingerprint command `exit 7` failed") && err.contains("hint:"),
        "{err}"
    );
}

/// A fingerprint declared with `watch` runs once and is reused by later invocations until
/// something it watches changes; one without `watch` runs every time.
#[test]
fn watched_fingerprints_are_reused_until_what_they_watch_changes() {
    let repo = seeded();
    let ext = repo.tmp.path().join("ext");
    std::fs::create_dir(&ext).unwrap();
    let (tool, runs, plain_runs) = (
        ext.join("tool-version"),
        ext.join("runs"),
        ext.join("plain"),
    );
    std::fs::write(&tool, "v1\n").unwrap();
    let config = |watch: &str| {
        SEED_CONFIG.replace(
            "env = {",
            &format!(
                "fingerprint = [{{ command = \"echo x >> '{runs}'; cat '{tool}'\", watch = [{watch}] }}, \"echo x >> '{plain}'\"]\nenv = {{",
                runs = runs.display(),
                tool = tool.display(),
                plain = plain_runs.display(),
            ),
        )
    };
    repo.write(
        "checkdef.toml",
        &config(&format!("\"{}\", \"$TOOL_FLAVOR\"", tool.display())),
    );
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let hash = |env: &[(&str, &str)]| {
        let out = repo.checkdef_env(&["plan", "--json"], env);
        out.expect_code(0);
        crate::support::segment_field(&out.json, "foo-tests", "input_hash")
    };
    let h1 = hash(&[]);
    assert_eq!(hash(&[]), h1);
    assert_eq!(
        count(&runs),
        1,
        "the watched command ran once for two plans"
    );
    assert_eq!(count(&plain_runs), 2, "the plain one runs every time");
    assert!(
        repo.cache.join("checkdef-fingerprints").is_dir(),
        "kept in the local cache"
    );

    // The watched file changes: run again, and the new output is hashed.
    std::fs::write(&tool, "v2\n").unwrap();
    let h2 = hash(&[]);
    assert_ne!(h2, h1);
    assert_eq!(count(&runs), 2);
    assert_eq!(hash(&[]), h2);
    assert_eq!(count(&runs), 2);
    // A watched variable changes: run again (its value is not hashed, the output is).
    assert_eq!(hash(&[("TOOL_FLAVOR", "debug")]), h2);
    assert_eq!(count(&runs), 3);
    assert_eq!(hash(&[("TOOL_FLAVOR", "debug")]), h2);
    assert_eq!(count(&runs), 3);

    // A use refreshes a kept output's time (daily); `cache verify` removes outputs unused for
    // a month, and the next plan runs the command again.
    // The directory also keeps git's answer about its system attributes file (not an output).
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(repo.cache.join("checkdef-fingerprints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("git-attr-system-")
        })
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}"); // v1, v2, v2 with TOOL_FLAVOR=debug
    let set_age = |p: &std::path::Path, days: u64| {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 24 * 3600);
        std::fs::File::options()
            .append(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    for p in &kept {
        set_age(p, 40);
    }
    hash(&[]); // uses the v2 output: refreshed
    assert_eq!(count(&runs), 3);
    let out = repo.checkdef(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(0));
    let left: Vec<std::path::PathBuf> = kept.iter().filter(|p| p.exists()).cloned().collect();
    assert_eq!(left.len(), 1, "only the output just used is kept: {left:?}");
    assert_eq!(hash(&[("TOOL_FLAVOR", "debug")]), h2);
    assert_eq!(count(&runs), 4, "its removed output is made again");

    // Bad watch entries are configuration errors naming the file and line.
    repo.write("checkdef.toml", &config("\"$BAD NAME\""));
    let out = repo.checkdef(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkdef.toml:") && err.contains("watch entry `$BAD NAME`"),
        "{err}"
    );
}

#[test]
fn clean_work_tree_equals_head() {
    let repo = seeded();
    repo.symlink("__init__.py", "src/foo/alias.py");
    repo.write("src/foo/run.sh", "#!/bin/sh\n");
    repo.chmod("src/foo/run.sh", 0o755);
    repo.commit("more kinds");
    let wt = repo.hashes(&[]);
    assert_eq!(wt, repo.hashes(&["--rev", "HEAD"]));
    assert_eq!(wt, repo.hashes(&["--worktree"]));
    // Ignored and unrelated untracked files do not matter.
    repo.write("src/foo/__pycache__/x.pyc", "junk");
    repo.write("src/foo/debug.log", "junk");
    repo.write("notes.txt", "untracked, outside every segment");
    assert_eq!(repo.hashes(&[]), wt);
}

#[test]
fn work_tree_sees_edits_and_untracked_inputs_but_not_ignored_ones() {
    let repo = seeded();
    let head = rev_hash(&repo, "foo-tests");
    repo.write("src/foo/new_module.py", "X = 1\n");
    let with_new = repo.hash("foo-tests", &[]);
    assert_ne!(with_new, head, "untracked input picked up");
    assert!(
        repo.explain("foo-tests", &[])
            .contains(" src/foo/new_module.py\n")
    );
    repo.remove("src/foo/new_module.py");
    assert_eq!(repo.hash("foo-tests", &[]), head);
    repo.write("src/foo/__pycache__/mod.cpython-311.pyc", "bytecode");
    assert_eq!(repo.hash("foo-tests", &[]), head, "ignored file not hashed");
    repo.write("src/foo/__init__.py", "FOO = 99\n");
    let edited = repo.hash("foo-tests", &[]);
    assert_ne!(edited, head);
    // Committing the edit gives the same key the work tree had.
    repo.commit("edit");
    assert_eq!(rev_hash(&repo, "foo-tests"), edited);
    // A deleted tracked input disappears from the work-tree snapshot.
    repo.remove("tests/test_foo.py");
    let manifest = repo.explain("foo-tests", &[]);
    assert!(
        !manifest
            .lines()
            .any(|l| l.starts_with("100644 ") && l.ends_with(" tests/test_foo.py")),
        "{manifest}"
    );
    // chmod +x on disk counts in work-tree mode.
    repo.git(&["checkout", "--", "tests/test_foo.py"]);
    assert_eq!(repo.hash("foo-tests", &[]), edited);
    repo.chmod("src/foo/__init__.py", 0o755);
    assert_ne!(repo.hash("foo-tests", &[]), edited);
}

#[test]
fn skip_worktree_and_assume_unchanged_files_are_hashed_from_the_disk() {
    // From outside trial 6: a flagged file's index blob was hashed whatever the disk held, so
    // a local edit git hides from `git status` kept HEAD's stored pass. Work-tree mode hashes
    // the files on disk: a flag changes nothing.
    let repo = seeded();
    let head = rev_hash(&repo, "foo-tests");
    for flag in ["skip-worktree", "assume-unchanged"] {
        repo.git(&["update-index", &format!("--{flag}"), "src/foo/__init__.py"]);
        assert_eq!(repo.hash("foo-tests", &[]), head, "{flag}, unchanged");
        repo.write("src/foo/__init__.py", "FOO = 22\n");
        let flagged = repo.hash("foo-tests", &[]);
        assert_ne!(flagged, head, "{flag}");
        repo.git(&[
            "update-index",
            &format!("--no-{flag}"),
            "src/foo/__init__.py",
        ]);
        assert_eq!(repo.hash("foo-tests", &[]), flagged, "{flag}: as unflagged");
        repo.git(&["checkout", "--", "src/foo/__init__.py"]);
    }
    // A skip-worktree file absent from the disk (a sparse checkout leaves it out) is a
    // deleted file: no input, whichever of the two made it go.
    repo.remove("tests/test_foo.py");
    let deleted = repo.hash("foo-tests", &[]);
    assert_ne!(deleted, head);
    repo.git(&["update-index", "--skip-worktree", "tests/test_foo.py"]);
    assert_eq!(repo.hash("foo-tests", &[]), deleted);
    let manifest = repo.explain("foo-tests", &[]);
    assert!(
        !manifest
            .lines()
            .any(|l| l.starts_with("100644 ") && l.ends_with(" tests/test_foo.py")),
        "{manifest}"
    );
}

#[test]
fn unchanged_tracked_files_are_not_reread() {
    let repo = TestRepo::new();
    seed_layout(&repo);
    let files = [
        "src/foo/__init__.py",
        "src/bar/__init__.py",
        "tests/test_foo.py",
        "tests/test_bar.py",
        "pytest.ini",
        "README.md",
        ".gitignore",
        "checkdef.toml",
    ];
    for f in files {
        repo.age(f); // so the index entries are not racily clean
    }
    repo.commit("seed");
    let r = Repo::discover(&repo.root).unwrap();
    let mut all = checkdef::git::CollectAll::default();
    let stats = r.walk_worktree(&mut all).unwrap();
    assert_eq!(
        (stats.reused, stats.hashed, stats.untracked),
        (files.len(), 0, 0)
    );
    let mut listed = all.0.clone();
    checkdef::git::sort_inputs(&mut listed);
    assert_eq!(
        listed,
        r.tree_entries_all(r.resolve_commit("HEAD").unwrap())
            .unwrap()
    );

    // Only the edited file is read again.
    repo.write("src/foo/__init__.py", "FOO = 7\n");
    let mut all = checkdef::git::CollectAll::default();
    let stats = r.walk_worktree(&mut all).unwrap();
    assert_eq!((stats.reused, stats.hashed), (files.len() - 1, 1));
    let foo = all
        .0
        .iter()
        .find(|i| i.path == "src/foo/__init__.py")
        .unwrap();
    assert_eq!(
        foo.id,
        checkdef::git::blob_id(r.object_hash(), b"FOO = 7\n").unwrap()
    );
    // Untracked files are hashed (they have no index entry).
    repo.write("src/foo/new.py", "");
    let stats = r
        .walk_worktree(&mut checkdef::git::CollectAll::default())
        .unwrap();
    assert_eq!((stats.hashed, stats.untracked), (2, 1));
}

/// Enough files that the stat calls are split between threads: whatever the split, the
/// work-tree snapshot is exactly what committing it gives.
#[test]
fn a_large_work_tree_agrees_with_the_commit_of_it() {
    let repo = TestRepo::new();
    repo.write(
        "checkdef.toml",
        "version = 1\n\n[[segment]]\nname = \"all\"\ninclude = [\"**\"]\ncommand = \"true\"\n",
    );
    let n = 6000;
    for i in 0..n {
        repo.write(&format!("d{:02}/f{i:05}.txt", i / 100), &format!("{i}\n"));
    }
    repo.commit("many files");
    let r = Repo::discover(&repo.root).unwrap();
    let walk = || {
        let mut all = checkdef::git::CollectAll::default();
        r.walk_worktree(&mut all).unwrap();
        checkdef::git::sort_inputs(&mut all.0);
        all.0
    };
    let head = || {
        r.tree_entries_all(r.resolve_commit("HEAD").unwrap())
            .unwrap()
    };
    assert_eq!(walk().len(), n + 1);
    assert_eq!(walk(), head());
    // Edits at the start, the middle and the end of the index; a deletion, a mode change and
    // an untracked file among them.
    repo.write("d00/f00000.txt", "first\n");
    repo.write("d30/f03000.txt", "middle\n");
    repo.write(&format!("d59/f{:05}.txt", n - 1), "last\n");
    repo.remove("d45/f04500.txt");
    repo.chmod("d15/f01500.txt", 0o755);
    repo.write("d30/new.txt", "untracked\n");
    let snapshot = walk();
    assert_eq!(snapshot.len(), n + 1);
    assert_ne!(snapshot, head());
    repo.commit("the work tree");
    assert_eq!(snapshot, head());
}

#[test]
fn globs_double_star_alternates_and_excludes() {
    let repo = TestRepo::new();
    repo.write(
        "checkdef.toml",
        r#"version = 1
[[segment]]
name = "s"
include = ["pkg/**/*.py", "conf/{a,b}.ini", "top/*.txt"]
exclude = ["**/generated/**", "pkg/**/test_*.py"]
command = "true"
"#,
    );
    for f in [
        "pkg/x.py",
        "pkg/deep/er/y.py",
        "pkg/deep/z.txt",
        "pkg/generated/g.py",
        "pkg/sub/test_a.py",
        "conf/a.ini",
        "conf/b.ini",
        "conf/c.ini",
        "top/t.txt",
        "top/nested/t.txt",
    ] {
        repo.write(f, f);
    }
    repo.commit("layout");
    let m = repo.explain("s", &["--rev", "HEAD"]);
    let inputs: Vec<&str> = m
        .lines()
        .skip_while(|l| !l.starts_with("inputs "))
        .skip(1)
        .map(|l| l.splitn(3, ' ').nth(2).unwrap())
        .collect();
    assert_eq!(
        inputs,
        [
            "conf/a.ini",
            "conf/b.ini",
            "pkg/deep/er/y.py",
            "pkg/x.py",
            "top/t.txt"
        ]
    );
}

#[test]
fn opens_from_a_subdirectory_and_a_linked_worktree() {
    let repo = seeded();
    let want = repo.plan_json(&[]);
    let sub = repo.path("src/foo");
    assert_eq!(repo.plan_json_in(&sub, &[])["segments"], want["segments"]);
    let out = repo.checkdef_in(&repo.root, &["-C", "src/bar", "plan", "--json"]);
    assert!(out.status.success());

    let wt = repo.tmp.path().join("linked");
    repo.git(&["worktree", "add", "-q", "-b", "other", wt.to_str().unwrap()]);
    let in_wt = repo.plan_json_in(&wt, &[]);
    assert_eq!(in_wt["segments"], want["segments"]);
    assert_eq!(in_wt["commit"], want["commit"]);
    // The linked work tree is its own snapshot.
    std::fs::write(wt.join("src/foo/__init__.py"), "FOO = 3\n").unwrap();
    let changed = repo.plan_json_in(&wt.join("tests"), &[]);
    assert_ne!(
        segment_field(&changed, "foo-tests", "input_hash"),
        segment_field(&want, "foo-tests", "input_hash")
    );
    assert_eq!(
        segment_field(&changed, "bar-tests", "input_hash"),
        segment_field(&want, "bar-tests", "input_hash")
    );
    assert_eq!(
        repo.plan_json(&[])["segments"],
        want["segments"],
        "main work tree untouched"
    );
}

#[test]
fn plan_json_shape() {
    let repo = seeded();
    let head = repo.head();
    let v = repo.plan_json(&["--rev", "HEAD"]);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "base",
            "commit",
            "segments",
            "untracked_touched",
            "version",
            "worktree"
        ]
    );
    assert_eq!(v["version"], 1);
    assert_eq!(v["commit"], head.as_str());
    assert_eq!(v["worktree"], false);
    assert!(v["base"].is_null() && v["untracked_touched"].is_null());
    let segs = v["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0]["name"], "foo-tests", "config order");
    for s in segs {
        let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["input_hash", "name", "status", "store_path", "touched"]
        );
        let h = s["input_hash"].as_str().unwrap();
        assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let p = s["store_path"].as_str().unwrap();
        let name = s["name"].as_str().unwrap();
        assert!(
            p.starts_with("/nix/store/") && p.ends_with(&format!("-checkdef-{name}")),
            "{p}"
        );
        assert_eq!(
            p.len(),
            "/nix/store/".len() + 32 + 1 + "checkdef-".len() + name.len()
        );
        assert_eq!(s["status"], "miss");
        assert!(s["touched"].is_null());
    }
    // Work tree: HEAD's commit plus "worktree": true. stdout holds only the document.
    let out = repo.checkdef(&["plan", "--json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let w: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(w["commit"], head.as_str());
    assert_eq!(w["worktree"], true);
    // A corrupt cache entry is not a hit: lookups are verified, not file-existence checks.
    let store_path = segs[0]["store_path"].as_str().unwrap();
    let hash_part = &store_path["/nix/store/".len().."/nix/store/".len() + 32];
    std::fs::write(
        repo.cache.join(format!("{hash_part}.narinfo")),
        "StorePath: x\n",
    )
    .unwrap();
    let v = repo.plan_json(&["--rev", "HEAD"]);
    assert_eq!(segment_field(&v, "foo-tests", "status"), "miss");
    // A real, passing result turns the miss into hit-local.
    let out = repo.checkdef(&["run", "--rev", "HEAD", "--segment", "foo-tests", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = repo.plan_json(&["--rev", "HEAD"]);
    assert_eq!(segment_field(&v, "foo-tests", "status"), "hit-local");
    assert_eq!(segment_field(&v, "bar-tests", "status"), "miss");
    // Human output goes to stderr only.
    let out = repo.checkdef(&["plan"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SEGMENT") && err.contains("foo-tests") && err.contains("hit-local"),
        "{err}"
    );
}

#[test]
fn touched_and_untracked_touched_with_base() {
    let repo = seeded();
    let base = repo.head();
    repo.write("src/foo/__init__.py", "FOO = 2\n");
    repo.write("README.md", "changed\n");
    repo.write("docs/guide.md", "new\n");
    let head = repo.commit("touch foo and docs");
    let v = repo.plan_json(&["--rev", "HEAD", "--base", &base]);
    assert_eq!(v["base"], base.as_str());
    assert_eq!(segment_field(&v, "foo-tests", "touched"), "true");
    assert_eq!(segment_field(&v, "bar-tests", "touched"), "false");
    assert_eq!(
        v["untracked_touched"],
        serde_json::json!(["README.md", "docs/guide.md"])
    );

    // A rename counts for both paths: moving a bar test into foo touches both.
    repo.rename("tests/test_bar.py", "src/foo/test_bar.py");
    repo.commit("move");
    let v = repo.plan_json(&["--rev", "HEAD", "--base", &head]);
    assert_eq!(segment_field(&v, "foo-tests", "touched"), "true");
    assert_eq!(segment_field(&v, "bar-tests", "touched"), "true");
    assert_eq!(v["untracked_touched"], serde_json::json!([]));

    // Global inputs touch every segment; the work tree counts against the base too.
    repo.write("pytest.ini", "[pytest]\nx=1\n");
    repo.write("scratch.txt", "untracked\n");
    let v = repo.plan_json(&["--base", "HEAD"]);
    assert_eq!(v["worktree"], true);
    assert_eq!(segment_field(&v, "foo-tests", "touched"), "true");
    assert_eq!(segment_field(&v, "bar-tests", "touched"), "true");
    assert_eq!(v["untracked_touched"], serde_json::json!(["scratch.txt"]));

    // An untracked input counts as touched in work-tree mode; an ignored one does not.
    repo.git(&["checkout", "--", "pytest.ini"]);
    repo.write("src/bar/new.py", "\n");
    repo.write("src/foo/__pycache__/x.pyc", "junk");
    let v = repo.plan_json(&["--base", "HEAD"]);
    assert_eq!(segment_field(&v, "foo-tests", "touched"), "false");
    assert_eq!(segment_field(&v, "bar-tests", "touched"), "true");

    // Same commit: nothing touched.
    let v = repo.plan_json(&["--rev", "HEAD", "--base", "HEAD"]);
    assert_eq!(segment_field(&v, "foo-tests", "touched"), "false");
}

#[test]
fn tree_diff_matches_git() {
    let repo = seeded();
    let base = repo.head();
    repo.write("src/foo/__init__.py", "changed\n");
    repo.chmod("tests/test_bar.py", 0o755);
    repo.rename("src/bar/__init__.py", "lib/bar/__init__.py");
    repo.write("a/b/c/d.txt", "deep\n");
    repo.remove("README.md");
    repo.write("README.md/inner", "file became a directory\n");
    let head = repo.commit("many changes");
    let git: Vec<String> = repo
        .git(&["diff", "--no-renames", "--name-only", &base, &head])
        .lines()
        .map(String::from)
        .collect();
    let r = Repo::discover(&repo.root).unwrap();
    let ours: Vec<String> = r
        .changed_paths(
            r.resolve_commit(&base).unwrap(),
            &Target::Commit(r.resolve_commit(&head).unwrap()),
        )
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    let mut git_sorted = git.clone();
    git_sorted.sort();
    assert_eq!(ours, git_sorted);
}

#[test]
fn symlinks_and_submodules() {
    let repo = seeded();
    // A nested repository registered as a submodule (gitlink) at src/foo/vendored.
    let sub = repo.path("src/foo/vendored");
    std::fs::create_dir_all(&sub).unwrap();
    repo.git_in(&sub, &["init", "-q", "-b", "main"]);
    std::fs::write(sub.join("lib.py"), "V = 1\n").unwrap();
    repo.git_in(&sub, &["add", "-A"]);
    repo.git_in(&sub, &["commit", "-q", "-m", "sub"]);
    let sub_head = repo.git_in(&sub, &["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{sub_head},src/foo/vendored"),
    ]);
    repo.symlink("../../tests/test_foo.py", "src/foo/link.py");
    repo.git(&["add", "src/foo/link.py"]);
    repo.git(&["commit", "-q", "-m", "symlink and submodule"]);

    let m = repo.explain("foo-tests", &["--rev", "HEAD"]);
    let link_blob = repo
        .git(&["rev-parse", "HEAD:src/foo/link.py"])
        .trim()
        .to_owned();
    assert!(
        m.contains(&format!("120000 {link_blob} src/foo/link.py\n")),
        "{m}"
    );
    assert!(
        m.contains(&format!("160000 {sub_head} src/foo/vendored\n")),
        "{m}"
    );
    assert!(
        !m.contains("vendored/lib.py"),
        "submodule contents are not inputs"
    );
    // The symlink's blob is its target, not the file it points to.
    let r = Repo::discover(&repo.root).unwrap();
    assert_eq!(
        r.read_blob(&gix::ObjectId::from_hex(link_blob.as_bytes()).unwrap())
            .unwrap(),
        b"../../tests/test_foo.py"
    );
    // Work tree == HEAD, including the checked-out submodule.
    assert_eq!(repo.hashes(&[]), repo.hashes(&["--rev", "HEAD"]));
    // Retargeting the link changes the hash.
    std::fs::remove_file(repo.path("src/foo/link.py")).unwrap();
    repo.symlink("../../tests/test_bar.py", "src/foo/link.py");
    assert_ne!(
        repo.hash("foo-tests", &[]),
        repo.hash("foo-tests", &["--rev", "HEAD"])
    );
    // A new commit in the submodule changes the work-tree hash (it is recorded by commit).
    std::fs::remove_file(repo.path("src/foo/link.py")).unwrap();
    repo.symlink("../../tests/test_foo.py", "src/foo/link.py");
    let before = repo.hash("foo-tests", &[]);
    std::fs::write(sub.join("lib.py"), "V = 2\n").unwrap();
    repo.git_in(&sub, &["commit", "-q", "-am", "sub 2"]);
    assert_ne!(repo.hash("foo-tests", &[]), before);
}

#[test]
fn materialize_writes_files_modes_and_links() {
    let repo = seeded();
    repo.chmod("tests/test_foo.py", 0o755);
    repo.symlink("test_foo.py", "tests/alias.py");
    repo.commit("modes");
    let r = Repo::discover(&repo.root).unwrap();
    let head = r.resolve_commit("HEAD").unwrap();
    let entries = r.tree_entries_all(head).unwrap();
    assert!(entries.iter().any(|e| e.mode == FileMode::Symlink));
    for target in [Target::Commit(head), Target::WorkTree] {
        let dest = tempfile::tempdir().unwrap();
        let stats = r.materialize(&target, &entries, dest.path()).unwrap();
        assert_eq!(stats.symlinks, 1);
        assert_eq!(stats.files, entries.len() - 1);
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(dest.path().join("tests/test_foo.py")).unwrap();
        assert_eq!(md.permissions().mode() & 0o111, 0o111);
        let md = std::fs::metadata(dest.path().join("tests/test_bar.py")).unwrap();
        assert_eq!(md.permissions().mode() & 0o111, 0);
        assert_eq!(
            std::fs::read_link(dest.path().join("tests/alias.py")).unwrap(),
            std::path::Path::new("test_foo.py")
        );
        assert_eq!(
            std::fs::read_to_string(dest.path().join("src/foo/__init__.py")).unwrap(),
            "FOO = 1\n"
        );
    }
    // Work-tree copies must still match the planned ids.
    repo.write("src/foo/__init__.py", "FOO = 5\n");
    let dest = tempfile::tempdir().unwrap();
    let err = r
        .materialize(&Target::WorkTree, &entries, dest.path())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("changed while checkdef was reading it"),
        "{err}"
    );
}

#[test]
fn library_plan_matches_cli_and_exposes_run_inputs() {
    let repo = seeded();
    let r = Repo::discover(&repo.root).unwrap();
    let config = Config::load(r.root(), None).unwrap();
    let head = r.resolve_commit("HEAD").unwrap();
    let plan = build_plan(
        &r,
        &config,
        &checkdef::context::Env::capture(),
        &checkdef::plan::NoFingerprintStore,
        &Target::Commit(head),
        None,
    )
    .unwrap();
    let foo = plan.segment("foo-tests").unwrap();
    assert_eq!(
        foo.input_hash.to_string(),
        repo.hash("foo-tests", &["--rev", "HEAD"])
    );
    assert_eq!(foo.command, "python3 -m pytest -q tests/test_foo.py");
    assert_eq!(foo.env.get("PYTHONPATH").map(String::as_str), Some("src"));
    assert_eq!(foo.passthrough, ["PATH"]);
    let paths: Vec<String> = foo.inputs.iter().map(|i| i.path.to_string()).collect();
    assert_eq!(
        paths,
        ["pytest.ini", "src/foo/__init__.py", "tests/test_foo.py"]
    );
    assert_eq!(
        foo.manifest(),
        repo.explain("foo-tests", &["--rev", "HEAD"])
    );
    assert_eq!(plan.commit, Some(head));
}

#[test]
fn tags_are_peeled_and_sha256_repos_work() {
    let repo = seeded();
    repo.git(&["tag", "-a", "-m", "release", "v1"]);
    assert_eq!(
        repo.hashes(&["--rev", "v1"]),
        repo.hashes(&["--rev", "HEAD"])
    );
    let v = repo.plan_json(&["--rev", "v1"]);
    assert_eq!(v["commit"], repo.head().as_str());

    let repo = TestRepo::sha256();
    seed_layout(&repo);
    repo.commit("seed");
    let m = repo.explain("foo-tests", &["--rev", "HEAD"]);
    assert!(m.contains("object-format sha256\n"), "{m}");
    let blob = repo
        .git(&["rev-parse", "HEAD:src/foo/__init__.py"])
        .trim()
        .to_owned();
    assert_eq!(blob.len(), 64);
    assert!(m.contains(&blob));
    assert_eq!(repo.hashes(&[]), repo.hashes(&["--rev", "HEAD"]));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let not_repo = TestRepo::new();
    // Not a repository.
    let out = not_repo.checkdef_in(tmp.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a git repository") && err.contains("hint:"),
        "{err}"
    );
    // Missing config.
    let out = not_repo.checkdef(&["plan"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkdef.toml") && err.contains("hint:"),
        "{err}"
    );

    let repo = seeded();
    for args in [
        &["plan", "--rev", "no-such-branch"][..],
        &["plan", "--base", "deadbeef"],
        &["explain", "foo-tests", "--rev", "HEAD~5"],
    ] {
        let out = repo.checkdef(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("hint:"), "{args:?}: {err}");
    }
    let out = repo.checkdef(&["explain", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("foo-tests, bar-tests"), "{err}");
}

#[test]
fn explicit_config_path_keeps_globs_relative_to_the_root() {
    let repo = seeded();
    let elsewhere = repo.tmp.path().join("conf/custom.toml");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::write(&elsewhere, SEED_CONFIG).unwrap();
    repo.remove("checkdef.toml");
    let out = repo.checkdef_in(
        &repo.path("src"),
        &[
            "--config",
            elsewhere.to_str().unwrap(),
            "plan",
            "--json",
            "--rev",
            "HEAD",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = repo.explain(
        "foo-tests",
        &["--rev", "HEAD", "--config", elsewhere.to_str().unwrap()],
    );
    assert!(m.contains(" src/foo/__init__.py\n"));
    assert_eq!(
        segment_field(&v, "foo-tests", "input_hash"),
        checkdef::manifest::input_hash(&m).to_string()
    );
}

#[test]
fn a_full_sandbox_segment_hashes_every_file_of_the_snapshot() {
    let repo = seeded();
    repo.write(
        "checkdef.toml",
        &SEED_CONFIG.replace(
            "name = \"foo-tests\"",
            "name = \"foo-tests\"\nsandbox = \"full\"",
        ),
    );
    repo.commit("full sandbox for foo");
    let foo = repo.hash("foo-tests", &["--rev", "HEAD"]);
    let bar = repo.hash("bar-tests", &["--rev", "HEAD"]);
    // README.md is declared by neither segment, but the full sandbox lets foo's check read it.
    repo.write("README.md", "changed\n");
    repo.commit("edit outside every include");
    assert_ne!(repo.hash("foo-tests", &["--rev", "HEAD"]), foo);
    assert_eq!(repo.hash("bar-tests", &["--rev", "HEAD"]), bar);
    assert!(
        repo.explain("foo-tests", &["--rev", "HEAD"])
            .contains(" README.md\n")
    );
}
