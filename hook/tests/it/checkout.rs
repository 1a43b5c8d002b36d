//! The check sees what a checkout holds: `.gitattributes` conversions (`text eol=crlf`, `ident`)
//! and configured clean/smudge filters are applied when inputs are materialised, in commit mode
//! and work-tree mode alike, and everything that decides them is part of the input hash.
use crate::support::{CmdOut, TestRepo};

/// A repository with `checkdef.toml` declaring one segment `s` over `include`, running `command`.
fn repo_with(include: &[&str], command: &str) -> TestRepo {
    let repo = TestRepo::new();
    let globs: Vec<String> = include.iter().map(|g| format!("\"{g}\"")).collect();
    repo.write(
        "checkdef.toml",
        &format!(
            "version = 1\n\n[[segment]]\nname = \"s\"\ninclude = [{}]\ncommand = \"{command}\"\n",
            globs.join(", ")
        ),
    );
    repo.write(".gitignore", "__pycache__/\n");
    repo
}

fn run(repo: &TestRepo, args: &[&str]) -> CmdOut {
    repo.run_json(args, &[])
}

#[test]
fn eol_crlf_inputs_are_materialised_as_a_checkout_holds_them_with_real_pytest() {
    let repo = repo_with(
        &["data.txt", "tests/test_data.py"],
        "python3 -m pytest -q -p no:cacheprovider tests/test_data.py",
    );
    repo.write(".gitattributes", "*.txt text eol=crlf\n")
        .write("data.txt", "a\nb\n")
        .write(
            "tests/test_data.py",
            "def test_checkout_has_crlf():\n    assert open('data.txt', 'rb').read() == b'a\\r\\nb\\r\\n'\n",
        );
    let head = repo.commit("crlf data");
    // What git itself checks out.
    let clone = repo.clone_to("clone");
    assert_eq!(
        std::fs::read(clone.join("data.txt")).unwrap(),
        b"a\r\nb\r\n"
    );

    let r = run(&repo, &["--rev", &head]);
    r.expect_code(0);
    assert_eq!(r.status("s"), "passed");
    // The work tree's file is LF on disk (written before the attributes applied), but a
    // checkout of it holds CRLF: the work-tree run sees what a checkout would.
    std::fs::remove_dir_all(&repo.cache).unwrap();
    let r = run(&repo, &[]);
    r.expect_code(0);
}

#[test]
fn a_clean_smudge_filter_is_applied_and_a_worktree_run_copies_what_it_hashes() {
    let repo = repo_with(&["value.dat", "check.sh"], "sh check.sh");
    repo.git(&["config", "filter.up.clean", "tr a-z A-Z"]);
    repo.git(&["config", "filter.up.smudge", "tr A-Z a-z"]);
    repo.write(".gitattributes", "*.dat filter=up\n")
        .write("value.dat", "ok\n")
        .write("check.sh", "grep -qx ok value.dat\n");
    let head = repo.commit("filtered value");
    // The blob is the cleaned form; a checkout holds the smudged one.
    assert_eq!(repo.git(&["cat-file", "-p", "HEAD:value.dat"]), "OK\n");

    // Work-tree mode, cold: the index holds the cleaned blob; the copy must match it.
    let r = run(&repo, &[]);
    r.expect_code(0);
    assert_eq!(r.status("s"), "passed", "{}", r.stderr);
    let r = run(&repo, &["--rev", &head]);
    r.expect_code(0);
    let before = repo.hash("s", &["--rev", &head]);
    assert_eq!(repo.hash("s", &[]), before, "work tree and commit agree");

    // A different smudge command changes what a checkout holds: a new hash, and the check
    // sees the new bytes (no cached PASS).
    repo.git(&["config", "filter.up.smudge", "cat"]);
    let after = repo.hash("s", &["--rev", &head]);
    assert_ne!(after, before);
    let r = run(&repo, &["--rev", &head]);
    r.expect_code(1);
    assert_eq!(r.status("s"), "failed");
}

#[test]
fn ident_is_expanded_in_the_sandbox() {
    let repo = repo_with(&["id.txt", "check.sh"], "sh check.sh");
    repo.write(".gitattributes", "id.txt ident\n")
        .write("id.txt", "$Id$\n")
        .write(
            "check.sh",
            "grep -q '^[$]Id: [0-9a-f]\\{40\\} [$]$' id.txt\n",
        );
    let head = repo.commit("ident");
    let r = run(&repo, &["--rev", &head]);
    r.expect_code(0);
    assert_eq!(r.status("s"), "passed", "{}", r.stderr);
}

#[test]
fn gitattributes_decide_the_hash_even_when_they_are_not_an_input() {
    let repo = repo_with(&["data.txt"], "true");
    repo.write("data.txt", "a\n");
    repo.commit("plain");
    let plain = repo.hash("s", &["--rev", "HEAD"]);
    let manifest = repo.checkdef_text(&["explain", "s", "--rev", "HEAD"], &[]);
    assert!(
        !manifest.stdout.contains("(checkout"),
        "no attributes, no checkout rules: {}",
        manifest.stdout
    );
    repo.write(".gitattributes", "*.txt text eol=crlf\n");
    repo.commit("attributes");
    let crlf = repo.hash("s", &["--rev", "HEAD"]);
    assert_ne!(crlf, plain);
    repo.write(".gitattributes", "*.txt text eol=lf\n");
    repo.commit("other attributes");
    assert_ne!(repo.hash("s", &["--rev", "HEAD"]), crlf);
}
