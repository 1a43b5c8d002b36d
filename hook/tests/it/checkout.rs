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

/// A repository whose segment `s` copies `data.txt`, as the sandbox holds it, to the returned
/// path outside the sandbox (so a test can compare it with a real checkout's bytes).
fn copying_repo() -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    let seen = repo.tmp.path().join("seen.txt");
    repo.write(
        "checkdef.toml",
        &format!(
            "version = 1\n\n[[segment]]\nname = \"s\"\ninclude = [\"data.txt\"]\n\
             command = \"cp data.txt '{}'\"\n",
            seen.display()
        ),
    );
    repo.write("data.txt", "a\nb\n");
    (repo, seen)
}

/// `git clone` of `repo` into `name` with extra variables; the clone's `data.txt`.
fn cloned_data(repo: &TestRepo, name: &str, env: &[(&str, &str)]) -> Vec<u8> {
    let clone = repo.tmp.path().join(name);
    let out = repo
        .git_cmd_in(
            &repo.root,
            &[
                "clone",
                "-q",
                repo.root.to_str().unwrap(),
                clone.to_str().unwrap(),
            ],
        )
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(clone.join("data.txt")).unwrap()
}

/// What the sandbox held for `data.txt` in a forced run with `args` and `env`.
fn sandbox_data(
    repo: &TestRepo,
    seen: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<u8> {
    let _ = std::fs::remove_file(seen);
    let mut full = vec!["--force"];
    full.extend_from_slice(args);
    let r = repo.run_json(&full, env);
    r.expect_code(0);
    std::fs::read(seen).unwrap()
}

#[test]
fn the_default_global_attributes_file_is_applied_and_hashed_like_git() {
    let (repo, seen) = copying_repo();
    repo.commit("plain");
    let before = repo.hash("s", &["--rev", "HEAD"]);

    // git's default global file ($HOME/.config/git/attributes, core.attributesFile unset),
    // with no .gitattributes in the snapshot at all.
    let global = repo.home.join(".config/git/attributes");
    std::fs::create_dir_all(global.parent().unwrap()).unwrap();
    std::fs::write(&global, "*.txt text eol=crlf\n").unwrap();
    let git = cloned_data(&repo, "clone-home", &[]);
    assert_eq!(git, b"a\r\nb\r\n", "git applies it");
    let with_rule = repo.hash("s", &["--rev", "HEAD"]);
    assert_ne!(with_rule, before, "the global file is part of the hash");
    assert_eq!(sandbox_data(&repo, &seen, &["--rev", "HEAD"], &[]), git);
    assert_eq!(sandbox_data(&repo, &seen, &[], &[]), git, "work-tree mode");

    // $XDG_CONFIG_HOME/git/attributes replaces $HOME/.config/git/attributes.
    let xdg = repo.tmp.path().join("xdg");
    std::fs::create_dir_all(xdg.join("git")).unwrap();
    let xdg_env = [("XDG_CONFIG_HOME", xdg.to_str().unwrap())];
    let git = cloned_data(&repo, "clone-xdg-empty", &xdg_env);
    assert_eq!(git, b"a\nb\n", "git reads only the XDG one");
    assert_eq!(
        sandbox_data(&repo, &seen, &["--rev", "HEAD"], &xdg_env),
        git
    );
    std::fs::write(xdg.join("git/attributes"), "*.txt text eol=crlf\n").unwrap();
    let git = cloned_data(&repo, "clone-xdg", &xdg_env);
    assert_eq!(git, b"a\r\nb\r\n");
    assert_eq!(
        sandbox_data(&repo, &seen, &["--rev", "HEAD"], &xdg_env),
        git
    );

    // A changed rule in the global file is a miss and a different sandbox.
    std::fs::write(&global, "*.txt text eol=lf\n").unwrap();
    assert_ne!(repo.hash("s", &["--rev", "HEAD"]), with_rule);
}

#[test]
fn a_global_attributes_file_added_after_a_pass_is_a_miss_when_the_snapshot_has_gitattributes() {
    let repo = repo_with(&["data.txt", "check.sh"], "sh check.sh");
    repo.write(".gitattributes", "*.md text\n")
        .write("data.txt", "a\nb\n")
        .write("check.sh", "! grep -q \"$(printf '\\r')\" data.txt\n");
    repo.commit("lf data");
    let r = run(&repo, &["--rev", "HEAD"]);
    r.expect_code(0);
    assert_eq!(r.status("s"), "passed", "{}", r.stderr);

    let global = repo.home.join(".config/git/attributes");
    std::fs::create_dir_all(global.parent().unwrap()).unwrap();
    std::fs::write(&global, "*.txt text eol=crlf\n").unwrap();
    let r = run(&repo, &["--rev", "HEAD"]);
    r.expect_code(1);
    assert_eq!(r.status("s"), "failed", "no cached PASS: {}", r.stderr);
}

#[test]
fn core_attributes_file_with_tilde_or_missing_is_read_as_git_reads_it() {
    let (repo, seen) = copying_repo();
    repo.commit("plain");
    // The default global file says CRLF, but an explicit core.attributesFile replaces it even
    // when it names a file that does not exist: git then applies neither.
    let global = repo.home.join(".config/git/attributes");
    std::fs::create_dir_all(global.parent().unwrap()).unwrap();
    std::fs::write(&global, "*.txt text eol=crlf\n").unwrap();
    repo.git(&["config", "core.attributesFile", "~/my-attributes"]);
    let missing_hash = repo.hash("s", &["--rev", "HEAD"]);
    let git = checkout_data(&repo, "co-missing");
    assert_eq!(
        git, b"a\nb\n",
        "git ignores the default file and the missing one"
    );
    assert_eq!(sandbox_data(&repo, &seen, &["--rev", "HEAD"], &[]), git);

    // `~` is the home directory: creating the file there applies it, and is a miss.
    std::fs::write(repo.home.join("my-attributes"), "*.txt text eol=crlf\n").unwrap();
    let git = checkout_data(&repo, "co-tilde");
    assert_eq!(git, b"a\r\nb\r\n");
    assert_ne!(repo.hash("s", &["--rev", "HEAD"]), missing_hash);
    assert_eq!(sandbox_data(&repo, &seen, &["--rev", "HEAD"], &[]), git);
    assert_eq!(sandbox_data(&repo, &seen, &[], &[]), git, "work-tree mode");
}

/// `data.txt` as `git worktree add` of HEAD writes it (the repository's own configuration, such
/// as `core.attributesFile`, applies).
fn checkout_data(repo: &TestRepo, name: &str) -> Vec<u8> {
    let dir = repo.tmp.path().join(name);
    repo.git(&[
        "worktree",
        "add",
        "-q",
        "--detach",
        dir.to_str().unwrap(),
        "HEAD",
    ]);
    let data = std::fs::read(dir.join("data.txt")).unwrap();
    repo.git(&["worktree", "remove", "--force", dir.to_str().unwrap()]);
    data
}

#[test]
fn the_system_attributes_file_git_reports_is_applied_and_hashed() {
    // Real git's system file ($(prefix)/etc/gitattributes) cannot be moved, and tests must not
    // write to it: a `git` first on PATH reports another one, as `git var GIT_ATTR_SYSTEM`
    // does, and passes every other command to the real git.
    let (repo, seen) = copying_repo();
    repo.commit("plain");
    let real_git = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let system = repo.tmp.path().join("etc-gitattributes");
    let bin = repo.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    crate::support::write_executable(
        &bin.join("git"),
        &format!(
            "#!/bin/sh\nif [ \"$1 $2\" = 'var GIT_ATTR_SYSTEM' ]; then\n  echo asked >> '{}'\n  \
             [ -n \"$GIT_ATTR_NOSYSTEM\" ] && exit 1\n  echo '{}'; exit 0\nfi\nexec {} \"$@\"\n",
            repo.tmp.path().join("asked").display(),
            system.display(),
            real_git.trim()
        ),
    );
    let asked = || {
        std::fs::read_to_string(repo.tmp.path().join("asked"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let env = [("PATH", path.as_str())];
    let hash = |env: &[(&str, &str)]| {
        let out = repo.checkdef_env(&["plan", "--json", "--rev", "HEAD"], env);
        out.expect_code(0);
        crate::support::segment_field(&out.json, "s", "input_hash")
    };
    let before = hash(&env);
    std::fs::write(&system, "*.txt text eol=crlf\n").unwrap();
    assert_ne!(hash(&env), before, "the system file is part of the hash");
    assert_eq!(
        sandbox_data(&repo, &seen, &["--rev", "HEAD"], &env),
        b"a\r\nb\r\n"
    );
    assert_eq!(sandbox_data(&repo, &seen, &[], &env), b"a\r\nb\r\n");
    // GIT_ATTR_NOSYSTEM: git skips it, and so does checkdef.
    let nosystem = [("PATH", path.as_str()), ("GIT_ATTR_NOSYSTEM", "1")];
    assert_eq!(hash(&nosystem), before);
    assert_eq!(
        sandbox_data(&repo, &seen, &["--rev", "HEAD"], &nosystem),
        b"a\nb\n"
    );
    // git is asked once per `git` (and GIT_ATTR_NOSYSTEM): a no-op starts no git.
    let n = asked();
    assert!(n >= 1);
    hash(&env);
    hash(&nosystem);
    assert_eq!(asked(), n, "the answer is kept in the local cache");
}

#[test]
fn a_working_tree_encoding_checkdef_cannot_reproduce_fails_loudly_in_both_modes() {
    for encoding in ["UTF-16LE", "UTF-16", "UTF-16BE", "UTF-16LE-BOM", "UTF-32"] {
        let repo = repo_with(&["names.txt"], "grep -qx alice names.txt");
        repo.write("names.txt", "alice\n");
        repo.commit("names");
        repo.write(
            ".gitattributes",
            &format!("names.txt working-tree-encoding={encoding}\n"),
        );
        // Only the attributes: `git add -A` would re-read names.txt as if it were encoded.
        repo.git(&["add", ".gitattributes"]);
        repo.git(&["commit", "-q", "-m", "encoding"]);
        // What `git checkout` writes is not the blob's UTF-8 (so the check fails on a real
        // checkout); the work tree then holds it, for the work-tree run.
        repo.remove("names.txt");
        repo.git(&["checkout", "names.txt"]);
        let git = std::fs::read(repo.path("names.txt")).unwrap();
        assert_ne!(git, b"alice\n", "{encoding}");
        for args in [&["--rev", "HEAD"][..], &[][..]] {
            let r = run(&repo, args);
            assert_ne!(r.code, 0, "{encoding} {args:?}: {}", r.stderr);
            assert!(
                r.stderr.contains("names.txt")
                    && r.stderr
                        .contains(&format!("working-tree-encoding={encoding}")),
                "{encoding} {args:?}: {}",
                r.stderr
            );
        }
    }
}
