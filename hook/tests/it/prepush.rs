//! The pre-push hook end to end: `checkdef install`, then real `git push` to a bare repository
//! in a temp dir, so git itself calls the hook with its arguments and ref lines.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{
    CmdOut, SHELL_CONFIG, TestRepo, rev_parse_in, shell_layout, write_executable,
};

/// A repository with the shell layout committed on `main`, a bare remote `origin`, and (unless
/// told otherwise) checkdef's hook installed.
struct Pushy {
    repo: TestRepo,
    bare: PathBuf,
}

impl Pushy {
    fn new() -> Pushy {
        let p = Pushy::without_hook();
        p.install().expect_code(0);
        p
    }

    fn without_hook() -> Pushy {
        let repo = TestRepo::new();
        shell_layout(&repo);
        repo.commit("init");
        let bare = repo.add_bare_remote("origin", "remote");
        Pushy { repo, bare }
    }

    fn install(&self) -> CmdOut {
        self.repo.checkdef_env(&["install"], &[])
    }

    fn uninstall(&self) -> CmdOut {
        self.repo.checkdef_env(&["uninstall"], &[])
    }

    /// `git push ARGS` from the repository root.
    fn push(&self, args: &[&str]) -> CmdOut {
        self.push_env(args, &[])
    }

    fn push_env(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut full = vec!["push"];
        full.extend_from_slice(args);
        self.repo.git_out(&full, env)
    }

    /// What the remote's `rev` points to.
    fn remote(&self, rev: &str) -> Option<String> {
        rev_parse_in(&self.bare, rev)
    }

    fn break_bar(&self) {
        self.repo.write("src/bar/value", "broken\n");
    }

    fn fix_bar(&self) {
        self.repo.write("src/bar/value", "ok\n");
    }

    fn hooks_dir(&self) -> PathBuf {
        self.repo.root.join(".git/hooks")
    }
}

fn short(sha: &str) -> &str {
    &sha[..12]
}

/// Lines of the hook's output that report a segment (the checklist).
fn checklist<'a>(stderr: &'a str, segment: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains("PASSED") || l.contains("FAILED"))
        .filter(|l| l.split_whitespace().nth(1) == Some(segment))
        .collect()
}

/// Every file under `dir`: relative path → (bytes, mode).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    (std::fs::read(&p).unwrap(), meta.permissions().mode()),
                );
            }
        }
    }
    out
}

#[test]
fn a_passing_push_lands_a_breaking_commit_is_rejected_and_a_reworded_one_runs_nothing() {
    let p = Pushy::new();
    let first = p.repo.head();
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert_eq!(p.remote("main").as_deref(), Some(first.as_str()));
    assert!(
        r.stderr.contains(&format!(
            "checkdef: checking {} → origin refs/heads/main",
            short(&first)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(checklist(&r.stderr, "foo").len(), 1, "{}", r.stderr);
    assert!(
        r.stdout.is_empty(),
        "the hook prints only to stderr: {}",
        r.stdout
    );
    assert_eq!(p.repo.cached_narinfos().len(), 2, "results stored");

    p.break_bar();
    let bad = p.repo.commit("break bar");
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        p.remote("main").as_deref(),
        Some(first.as_str()),
        "remote ref moved"
    );
    assert!(r.stderr.contains("checkdef: push blocked"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{} (refs/heads/main) failed: bar", short(&bad))),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "reproduce: checkdef run --rev {bad} --segment bar"
        )),
        "{}",
        r.stderr
    );
    assert!(checklist(&r.stderr, "bar")[0].contains("FAILED"));
    assert!(checklist(&r.stderr, "foo")[0].contains("cached (local)"));

    // Fix it (a new tree for foo too), push: foo runs, bar is the first commit's result.
    p.fix_bar();
    p.repo.write("src/foo/more", "more\n");
    let fixed = p.repo.commit("fix bar, more foo");
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert_eq!(p.remote("main").as_deref(), Some(fixed.as_str()));
    assert!(r.stderr.contains("touched segments: foo"), "{}", r.stderr);
    assert!(!checklist(&r.stderr, "foo")[0].contains("cached"));
    assert!(checklist(&r.stderr, "bar")[0].contains("cached (local)"));

    // Reword the pushed commit and force-push it: same trees, nothing to run.
    p.repo.git(&[
        "commit",
        "-q",
        "--amend",
        "-m",
        "fix bar, more foo (reworded)",
    ]);
    let reworded = p.repo.head();
    assert_ne!(reworded, fixed);
    let r = p.push(&["--force", "origin", "main"]);
    r.expect_code(0);
    assert_eq!(p.remote("main").as_deref(), Some(reworded.as_str()));
    for s in ["foo", "bar"] {
        let lines = checklist(&r.stderr, s);
        assert_eq!(lines.len(), 1, "{}", r.stderr);
        assert!(lines[0].contains("cached (local)"), "{}", r.stderr);
    }
    assert!(r.stderr.contains("(0 ran, 2 cached)"), "{}", r.stderr);
}

#[test]
fn an_existing_pre_push_hook_is_chained_with_the_same_stdin() {
    let p = Pushy::without_hook();
    let seen = p.repo.tmp.path().join("chained.stdin");
    let args = p.repo.tmp.path().join("chained.args");
    let verdict = p.repo.tmp.path().join("chained.exit");
    std::fs::write(&verdict, "0\n").unwrap();
    let old = format!(
        "#!/bin/sh\ncat > '{}'\necho \"$1 $2\" > '{}'\nexit $(cat '{}')\n",
        seen.display(),
        args.display(),
        verdict.display()
    );
    write_executable(&p.hooks_dir().join("pre-push"), &old);
    let r = p.install();
    r.expect_code(0);
    assert_eq!(
        std::fs::read_to_string(p.hooks_dir().join("pre-push.local")).unwrap(),
        old
    );

    let head = p.repo.head();
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    let zeros = "0".repeat(40);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("refs/heads/main {head} refs/heads/main {zeros}\n")
    );
    assert_eq!(
        std::fs::read_to_string(&args).unwrap(),
        format!("origin {}\n", p.bare.display())
    );
    // checkdef saw the same line.
    assert!(
        r.stderr.contains(&format!(
            "checking {} → origin refs/heads/main",
            short(&head)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("main").as_deref(), Some(head.as_str()));

    // The chained hook's failure blocks the push, and checkdef does not run.
    std::fs::write(&verdict, "3\n").unwrap();
    p.repo.write("src/foo/more", "more\n");
    let next = p.repo.commit("more");
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("pre-push.local failed (exit 3)"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("checkdef: checking"), "{}", r.stderr);
    assert_eq!(p.remote("main").as_deref(), Some(head.as_str()));
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("refs/heads/main {next} refs/heads/main {head}\n")
    );
}

#[test]
fn core_hooks_path_relative_and_absolute() {
    let p = Pushy::without_hook();
    p.repo.git(&["config", "core.hooksPath", "myhooks"]);
    p.install().expect_code(0);
    assert!(p.repo.path("myhooks/pre-push").is_file());
    assert!(!p.hooks_dir().join("pre-push").exists());
    // Also from a subdirectory: the same place, nothing new.
    let before = snapshot(&p.repo.path("myhooks"));
    let sub = p.repo.path("src/foo");
    let out = CmdOut::from_output(p.repo.checkdef_cmd_in(&sub, &["install"]).output().unwrap());
    out.expect_code(0);
    assert_eq!(snapshot(&p.repo.path("myhooks")), before);
    // myhooks/ is untracked: keep it out of the pushed commits' way.
    p.repo.write(".gitignore", "myhooks/\n");
    let c1 = p.repo.commit("ignore hooks");
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert!(r.stderr.contains("checkdef: checking"), "{}", r.stderr);
    assert_eq!(p.remote("main").as_deref(), Some(c1.as_str()));

    p.uninstall().expect_code(0);
    let abs = p.repo.tmp.path().join("abs-hooks");
    p.repo
        .git(&["config", "core.hooksPath", abs.to_str().unwrap()]);
    p.install().expect_code(0);
    assert!(abs.join("pre-push").is_file());
    p.break_bar();
    p.repo.commit("break bar");
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("checkdef: push blocked"), "{}", r.stderr);
    assert_eq!(p.remote("main").as_deref(), Some(c1.as_str()));
}

#[test]
fn install_refuses_a_global_hooks_path_outside_the_repository_unless_global() {
    let p = Pushy::without_hook();
    let tmp = p.repo.tmp.path();
    let shared = tmp.join("global-hooks");
    let gitconfig = tmp.join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!("[core]\n\thooksPath = {}\n", shared.display()),
    )
    .unwrap();
    let g = gitconfig.to_str().unwrap();
    let env = [("GIT_CONFIG_GLOBAL", g)];
    let checkdef = |args: &[&str]| p.repo.checkdef_env(args, &env);

    // Refused, saying why and what --global would do; nothing is written anywhere.
    let r = checkdef(&["install"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("global git configuration"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&shared.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("checkdef install --global"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("every push"), "{}", r.stderr);
    assert!(!shared.exists(), "nothing may be installed there");
    assert!(!p.hooks_dir().join("pre-push").exists());
    let st = checkdef(&["install", "--status"]);
    st.expect_code(0);
    assert!(
        st.stderr.contains("shared with other repositories"),
        "{}",
        st.stderr
    );

    // --global installs there, and git runs it for this repository's pushes.
    checkdef(&["install", "--global"]).expect_code(0);
    assert!(shared.join("pre-push").is_file());
    let r = p.push_env(&["origin", "main"], &env);
    r.expect_code(0);
    assert!(r.stderr.contains("checkdef: checking"), "{}", r.stderr);

    // Uninstall is symmetric: refused without --global, the hook left in place.
    let r = checkdef(&["uninstall"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("checkdef uninstall --global"),
        "{}",
        r.stderr
    );
    assert!(shared.join("pre-push").is_file());
    checkdef(&["uninstall", "--global"]).expect_code(0);
    assert!(!shared.join("pre-push").exists());

    // A repository-local core.hooksPath wins over the global one and needs no flag, even when
    // it is an absolute path outside the repository.
    let own = tmp.join("own-hooks");
    p.repo
        .git(&["config", "core.hooksPath", own.to_str().unwrap()]);
    checkdef(&["install"]).expect_code(0);
    assert!(own.join("pre-push").is_file());
    checkdef(&["uninstall"]).expect_code(0);
    p.repo.git(&["config", "--unset", "core.hooksPath"]);

    // A relative global value lands inside each repository: not shared, no flag needed.
    std::fs::write(&gitconfig, "[core]\n\thooksPath = .githooks\n").unwrap();
    checkdef(&["install"]).expect_code(0);
    assert!(p.repo.path(".githooks/pre-push").is_file());
    assert!(!shared.join("pre-push").exists());
}

#[test]
fn a_linked_worktree_uses_the_shared_hook_and_checks_its_own_commit() {
    let p = Pushy::new();
    p.push(&["origin", "main"]).expect_code(0);
    let wt = p.repo.tmp.path().join("wt");
    p.repo.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "feature",
        wt.to_str().unwrap(),
    ]);
    std::fs::write(wt.join("src/bar/value"), "broken\n").unwrap();
    p.repo
        .git_in(&wt, &["commit", "-q", "-am", "break bar in the worktree"]);
    let push_from_wt = |args: &[&str]| {
        let mut full = vec!["push"];
        full.extend_from_slice(args);
        let mut cmd = p.repo.git_cmd_in(&wt, &full);
        let out = cmd.output().unwrap();
        CmdOut::from_output(out)
    };
    let r = push_from_wt(&["origin", "feature"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("failed: bar"), "{}", r.stderr);
    assert_eq!(p.remote("feature"), None);

    std::fs::write(wt.join("src/bar/value"), "ok\n").unwrap();
    std::fs::write(wt.join("src/bar/more"), "more\n").unwrap();
    p.repo.git_in(&wt, &["add", "-A"]);
    p.repo.git_in(&wt, &["commit", "-q", "-m", "fix bar"]);
    let tip = p.repo.git_in(&wt, &["rev-parse", "HEAD"]).trim().to_owned();
    let r = push_from_wt(&["origin", "feature"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains(&format!(
            "checking {} → origin refs/heads/feature",
            short(&tip)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("feature").as_deref(), Some(tip.as_str()));
}

#[test]
fn deleting_a_branch_runs_nothing() {
    let p = Pushy::new();
    p.repo.git(&["branch", "topic"]);
    p.push(&["origin", "main", "topic"]).expect_code(0);
    assert!(p.remote("topic").is_some());
    // Even with every local result gone and a broken work tree, a deletion checks nothing.
    std::fs::remove_dir_all(&p.repo.cache).unwrap();
    p.break_bar();
    let r = p.push(&["origin", "--delete", "topic"]);
    r.expect_code(0);
    assert_eq!(p.remote("topic"), None);
    assert!(!r.stderr.contains("checkdef: checking"), "{}", r.stderr);
    assert!(checklist(&r.stderr, "bar").is_empty(), "{}", r.stderr);
    assert!(!p.repo.cache.exists() || p.repo.cached_narinfos().is_empty());
}

#[test]
fn a_new_branch_is_compared_with_what_the_remote_has() {
    let p = Pushy::new();
    let main = p.repo.head();
    p.push(&["origin", "main"]).expect_code(0);
    p.repo.git(&["checkout", "-q", "-b", "feature"]);
    p.repo.write("src/foo/more", "more\n");
    let tip = p.repo.commit("more foo");
    let r = p.push(&["origin", "feature"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains(&format!(
            "checking {} → origin refs/heads/feature (remote has {})",
            short(&tip),
            short(&main)
        )),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("touched segments: foo\n"), "{}", r.stderr);
    assert_eq!(p.remote("feature").as_deref(), Some(tip.as_str()));
}

#[test]
fn an_annotated_tag_checks_the_commit_it_points_to() {
    let p = Pushy::new();
    let good = p.repo.head();
    p.push(&["origin", "main"]).expect_code(0);
    p.repo.git(&["tag", "-a", "-m", "release 1", "v1"]);
    let r = p.push(&["origin", "v1"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains(&format!("checking {} → origin refs/tags/v1", short(&good))),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("v1^{commit}").as_deref(), Some(good.as_str()));

    p.break_bar();
    let bad = p.repo.commit("break bar");
    p.repo.git(&["tag", "-a", "-m", "release 2", "v2"]);
    // Move main back so only the tag carries the broken commit.
    p.repo.git(&["reset", "-q", "--hard", &good]);
    let r = p.push(&["origin", "v2"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{} (refs/tags/v2) failed: bar", short(&bad))),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("v2"), None);
}

#[test]
fn several_refs_with_one_bad_block_the_whole_push_and_name_it() {
    let p = Pushy::new();
    let base = p.repo.head();
    p.push(&["origin", "main"]).expect_code(0);
    let branch = |name: &str, edit: &dyn Fn()| {
        p.repo.git(&["checkout", "-q", "-b", name, &base]);
        edit();
        p.repo.commit(name)
    };
    let a = branch("a", &|| {
        p.repo.write("src/foo/a", "a\n");
    });
    let b = branch("b", &|| p.break_bar());
    let c = branch("c", &|| {
        p.repo.write("src/foo/c", "c\n");
    });
    p.repo.git(&["checkout", "-q", "main"]);
    let r = p.push(&["origin", "a", "b", "c"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    for (sha, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert!(
            r.stderr.contains(&format!(
                "checking {} → origin refs/heads/{name}",
                short(sha)
            )),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(p.remote(name), None, "{name} landed");
    }
    assert!(
        r.stderr
            .contains(&format!("{} (refs/heads/b) failed: bar", short(&b))),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("(refs/heads/a) failed") && !r.stderr.contains("(refs/heads/c) failed"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("reproduce: checkdef run --rev {b} --segment bar")),
        "{}",
        r.stderr
    );
}

#[test]
fn pushing_other_to_main_checks_other_not_the_checkout() {
    let p = Pushy::new();
    let base = p.repo.head();
    p.push(&["origin", "main"]).expect_code(0);
    p.repo.git(&["checkout", "-q", "-b", "other"]);
    p.repo.write("src/foo/other", "other\n");
    let other = p.repo.commit("other");
    p.repo.git(&["checkout", "-q", "main"]);
    // The checked-out commit is broken, and so is the work tree.
    p.break_bar();
    p.repo.commit("break bar on main");
    p.repo.write("src/foo/value", "dirty\n");
    p.repo.write("src/bar/untracked", "junk\n");
    let r = p.push(&["origin", "other:main"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains(&format!(
            "checking {} → origin refs/heads/main",
            short(&other)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("main").as_deref(), Some(other.as_str()));
    assert_ne!(p.remote("main").as_deref(), Some(base.as_str()));

    // And the other way round: a clean, passing checkout does not vouch for a broken ref.
    p.repo.git(&["checkout", "-q", "-f", "other"]);
    p.repo.git(&["clean", "-qfd"]);
    let r = p.push(&["origin", "main:refs/heads/release"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("failed: bar"), "{}", r.stderr);
    assert_eq!(p.remote("release"), None);
}

#[test]
fn install_then_uninstall_leaves_the_hooks_dir_byte_identical() {
    let p = Pushy::without_hook();
    let hooks = p.hooks_dir();
    // A foreign hook that install moves aside and uninstall puts back.
    write_executable(&hooks.join("pre-push"), "#!/bin/sh\nexit 0\n");
    let before = snapshot(&hooks);
    p.install().expect_code(0);
    let installed = snapshot(&hooks);
    assert_ne!(installed, before);
    assert!(hooks.join("pre-push.local").is_file());
    // Install twice is one install: nothing changes, nothing is chained to itself.
    p.install().expect_code(0);
    assert_eq!(snapshot(&hooks), installed);
    let hook = std::fs::read_to_string(hooks.join("pre-push")).unwrap();
    assert_eq!(hook.matches("hook pre-push").count(), 1, "{hook}");
    assert!(hook.contains(env!("CARGO_BIN_EXE_checkdef")), "{hook}");
    p.uninstall().expect_code(0);
    assert_eq!(snapshot(&hooks), before);

    // Without a previous hook too.
    std::fs::remove_file(hooks.join("pre-push")).unwrap();
    let before = snapshot(&hooks);
    p.install().expect_code(0);
    p.install().expect_code(0);
    assert!(!hooks.join("pre-push.local").exists());
    p.uninstall().expect_code(0);
    assert_eq!(snapshot(&hooks), before);
    // Uninstalling again changes nothing.
    p.uninstall().expect_code(0);
    assert_eq!(snapshot(&hooks), before);
}

#[test]
fn checkdef_skip_bypasses_the_checks_with_a_warning() {
    let p = Pushy::new();
    p.break_bar();
    let bad = p.repo.commit("break bar");
    let r = p.push_env(&["origin", "main"], &[("CHECKDEF_SKIP", "1")]);
    r.expect_code(0);
    assert!(r.stderr.contains("CHECKDEF_SKIP is set"), "{}", r.stderr);
    assert!(r.stderr.contains("NOT verified"), "{}", r.stderr);
    assert!(!r.stderr.contains("checkdef: checking"), "{}", r.stderr);
    assert_eq!(p.remote("main").as_deref(), Some(bad.as_str()));
    // CHECKDEF_SKIP=0 does not skip.
    p.fix_bar();
    p.repo.write("src/bar/more", "x\n");
    p.repo.commit("fix");
    p.break_bar();
    p.repo.commit("break again");
    for value in ["0", "false", "No", "off"] {
        let r = p.push_env(&["origin", "main"], &[("CHECKDEF_SKIP", value)]);
        assert_ne!(r.code, 0, "CHECKDEF_SKIP={value}: {}", r.stderr);
        assert!(!r.stderr.contains("NOT verified"), "{}", r.stderr);
    }
    // A value it does not understand skips nothing (every value but 0 used to skip).
    let r = p.push_env(&["origin", "main"], &[("CHECKDEF_SKIP", "maybe")]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("is not understood"), "{}", r.stderr);
    assert_eq!(p.remote("main").as_deref(), Some(bad.as_str()));
    let r = p.push_env(&["origin", "main"], &[("CHECKDEF_SKIP", "true")]);
    r.expect_code(0);
}

#[test]
fn hook_mode_affected_counts_an_untouched_segment_only_when_a_result_proves_it() {
    let p = Pushy::without_hook();
    let marker = p.repo.tmp.path().join("bar-must-not-run");
    // bar passes until the marker exists; the marker is outside the repository.
    let config = |mode: &str| {
        format!(
            "{}\n[hook]\nmode = \"{mode}\"\n",
            SHELL_CONFIG.replace(
                "command = \"echo checking bar; grep -qx ok src/bar/value\"",
                &format!(
                    "command = \"echo checking bar; test ! -e '{}'\"",
                    marker.display()
                ),
            )
        )
    };
    p.repo.write("checkdef.toml", &config("affected"));
    p.repo.commit("affected mode");
    p.install().expect_code(0);
    // No base (the remote is empty): everything is checked.
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert_eq!(checklist(&r.stderr, "bar").len(), 1, "{}", r.stderr);

    // bar's passing result proves it: a push touching foo only costs bar a lookup.
    std::fs::write(&marker, "").unwrap();
    p.repo.write("src/foo/more", "more\n");
    let c = p.repo.commit("touch foo only");
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert_eq!(p.remote("main").as_deref(), Some(c.as_str()));
    assert!(r.stderr.contains("touched segments: foo\n"), "{}", r.stderr);
    assert!(
        checklist(&r.stderr, "bar")[0].contains("cached (local)"),
        "{}",
        r.stderr
    );

    // Without a result, that the remote has the base proves nothing (it may have arrived
    // with --no-verify): bar is checked, fails, and blocks the push.
    std::fs::remove_dir_all(&p.repo.cache).unwrap();
    p.repo.write("src/foo/more", "more 2\n");
    p.repo.commit("touch foo again");
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("failed: bar"), "{}", r.stderr);
    assert!(
        r.stderr.contains("bar untouched since") && r.stderr.contains("no passing result"),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("main").as_deref(), Some(c.as_str()));
}

#[test]
fn hook_mode_affected_does_not_trust_a_commit_pushed_with_no_verify() {
    let p = Pushy::without_hook();
    p.repo.write(
        "checkdef.toml",
        &format!("{SHELL_CONFIG}\n[hook]\nmode = \"affected\"\n"),
    );
    p.repo.commit("affected mode");
    p.install().expect_code(0);
    p.push(&["origin", "main"]).expect_code(0);
    p.break_bar();
    let bad = p.repo.commit("break bar");
    p.push(&["--no-verify", "origin", "main"]).expect_code(0);
    assert_eq!(p.remote("main").as_deref(), Some(bad.as_str()));
    // The next push touches foo only; bar is still broken and no result proves it.
    p.repo.write("src/foo/more", "more\n");
    let next = p.repo.commit("touch foo");
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{} (refs/heads/main) failed: bar", short(&next))),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("main").as_deref(), Some(bad.as_str()));
}

#[test]
fn an_uncommitted_command_true_does_not_let_a_broken_commit_through() {
    let p = Pushy::new();
    p.break_bar();
    let bad = p.repo.commit("break bar");
    // Not committed: the work tree's checkdef.toml says bar always passes.
    p.repo.write(
        "checkdef.toml",
        &SHELL_CONFIG.replace(
            "command = \"echo checking bar; grep -qx ok src/bar/value\"",
            "command = \"true\"",
        ),
    );
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("{} (refs/heads/main) failed: bar", short(&bad))),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("the work tree's checkdef.toml differs")
            && r.stderr.contains("checking with the committed one"),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("main"), None);
}

#[test]
fn a_branch_that_adds_a_failing_segment_fails_when_pushed_from_another_checkout() {
    let p = Pushy::new();
    let main = p.repo.head();
    p.push(&["origin", "main"]).expect_code(0);
    p.repo.git(&["checkout", "-q", "-b", "feature"]);
    p.repo.write(
        "checkdef.toml",
        &format!(
            "{SHELL_CONFIG}\n[[segment]]\nname = \"baz\"\ninclude = [\"src/baz/**\"]\ncommand = \"grep -qx ok src/baz/value\"\n"
        ),
    );
    p.repo.write("src/baz/value", "broken\n");
    let feature = p.repo.commit("add a failing segment");
    // Push the branch from a checkout of main, whose checkdef.toml has no `baz`.
    p.repo.git(&["checkout", "-q", "main"]);
    assert_eq!(p.repo.head(), main);
    let r = p.push(&["origin", "feature"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} (refs/heads/feature) failed: baz",
            short(&feature)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("feature"), None);
}

#[test]
fn a_bad_checkdef_toml_in_the_pushed_commit_names_the_commit_and_line() {
    let p = Pushy::new();
    p.repo.write(
        "checkdef.toml",
        &format!("{SHELL_CONFIG}\n[hook]\nmode = \"some\"\n"),
    );
    let bad = p.repo.commit("bad config");
    // The work tree's copy is fine again: the committed one is what counts.
    p.repo.write("checkdef.toml", SHELL_CONFIG);
    let r = p.push(&["origin", "main"]);
    assert_eq!(r.code, 1, "git reports a failed hook as 1: {}", r.stderr);
    let line = SHELL_CONFIG.lines().count() + 3;
    assert!(
        r.stderr
            .contains(&format!("{}:checkdef.toml:{line}:", short(&bad))),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--no-verify"), "{}", r.stderr);
    assert_eq!(p.remote("main"), None);
}

#[test]
fn a_pushed_commit_without_checkdef_toml_is_refused_with_a_hint_to_bypass() {
    let p = Pushy::new();
    p.repo.git(&["checkout", "-q", "--orphan", "pages"]);
    p.repo.git(&["rm", "-rq", "--cached", "."]);
    for f in [
        "checkdef.toml",
        "src/foo/value",
        "src/bar/value",
        "README.md",
    ] {
        p.repo.remove(f);
    }
    p.repo.write("index.html", "<p>hi</p>\n");
    let pages = p.repo.commit("pages");
    let r = p.push(&["origin", "pages"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "commit {} (refs/heads/pages) has no checkdef.toml",
            short(&pages)
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("git push --no-verify") && r.stderr.contains("CHECKDEF_SKIP=1"),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("pages"), None);
    p.push_env(&["origin", "pages"], &[("CHECKDEF_SKIP", "1")])
        .expect_code(0);
    assert_eq!(p.remote("pages").as_deref(), Some(pages.as_str()));
}

#[test]
fn a_local_ref_with_a_space_is_read_from_the_right() {
    let p = Pushy::new();
    let first = p.repo.head();
    p.repo.write("src/foo/more", "more\n");
    p.repo.commit("fix the bug");
    p.repo.write("src/foo/more", "more 2\n");
    p.repo.commit("later");
    let r = p.push(&["origin", "HEAD^{/fix the}:refs/heads/y"]);
    r.expect_code(0);
    let fixed = p.repo.git(&["rev-parse", "HEAD^"]).trim().to_owned();
    assert_ne!(fixed, first);
    assert_eq!(p.remote("y").as_deref(), Some(fixed.as_str()));
    assert!(
        r.stderr
            .contains(&format!("checking {} → origin refs/heads/y", short(&fixed))),
        "{}",
        r.stderr
    );
}

#[test]
fn commits_all_blocks_a_failing_commit_below_the_tip_and_names_it() {
    let p = Pushy::without_hook();
    let counter = p.repo.tmp.path().join("bar-runs");
    let config = |commits: &str| {
        format!(
            "{}\n[hook]\ncommits = \"{commits}\"\n",
            SHELL_CONFIG.replace(
                "command = \"echo checking bar; grep -qx ok src/bar/value\"",
                &format!(
                    "command = \"echo run >> '{}'; grep -qx ok src/bar/value\"",
                    counter.display()
                ),
            )
        )
    };
    p.repo.write("checkdef.toml", &config("all"));
    p.repo.commit("commits = all");
    p.install().expect_code(0);
    p.push(&["origin", "main"]).expect_code(0);
    let runs = || {
        std::fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = runs();
    // Three new commits: one touches foo, one breaks bar, the tip fixes bar.
    p.repo.write("src/foo/more", "more\n");
    let c1 = p.repo.commit("more foo");
    p.break_bar();
    let c2 = p.repo.commit("break bar");
    p.fix_bar();
    p.repo.write("src/bar/extra", "x\n");
    let c3 = p.repo.commit("fix bar");
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} (a commit below refs/heads/main) failed: bar",
            short(&c2)
        )),
        "{}",
        r.stderr
    );
    for c in [&c1, &c2, &c3] {
        assert!(
            r.stderr.contains(&format!("checking {}", short(c))),
            "{c}: {}",
            r.stderr
        );
    }
    // c1 left bar's inputs alone: its bar result is the previous commit's (a hash, no run);
    // bar ran for c2 (fails) and c3 (passes).
    assert_eq!(runs() - before, 2, "{}", r.stderr);
    assert_ne!(p.remote("main").as_deref(), Some(c3.as_str()));

    // The same push with commits = "tip" (committed) checks the tip only, and it passes.
    p.repo.write("checkdef.toml", &config("tip"));
    let tip = p.repo.commit("commits = tip");
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert!(
        !r.stderr.contains(&format!("checking {}", short(&c2))),
        "{}",
        r.stderr
    );
    assert_eq!(p.remote("main").as_deref(), Some(tip.as_str()));
}

#[test]
fn push_tags_checks_each_distinct_commit_once_or_skips_tags() {
    let p = Pushy::new();
    let first = p.repo.head();
    p.push(&["origin", "main"]).expect_code(0);
    p.repo.write("src/foo/more", "more\n");
    let second = p.repo.commit("more");
    p.push(&["origin", "main"]).expect_code(0);
    // Five tags on two commits, lightweight and annotated.
    p.repo.git(&["tag", "v1", &first]);
    p.repo.git(&["tag", "-a", "-m", "one", "v1.0", &first]);
    p.repo.git(&["tag", "v2", &second]);
    p.repo.git(&["tag", "-a", "-m", "two", "v2.0", &second]);
    p.repo.git(&["tag", "latest", &second]);
    let r = p.push(&["origin", "--tags"]);
    r.expect_code(0);
    assert_eq!(
        r.stderr.matches("checkdef: checking").count(),
        2,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("(0 ran, 2 cached)"), "{}", r.stderr);

    // tags = "skip": tags are not checked, even a tag of a broken commit.
    p.repo.write(
        "checkdef.toml",
        &format!("{SHELL_CONFIG}\n[hook]\ntags = \"skip\"\n"),
    );
    p.break_bar();
    p.repo.commit("tags skip, break bar");
    p.repo.git(&["tag", "v3"]);
    let r = p.push(&["origin", "v3"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("refs/tags/v3: not checked ([hook] tags = \"skip\")"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("checkdef: checking"), "{}", r.stderr);
    // The branch is still checked.
    let r = p.push(&["origin", "main"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
}

#[test]
fn an_invalid_checkdef_remote_during_a_push_warns_and_checks_locally() {
    let p = Pushy::new();
    for (i, bad) in ["not a url", "ftp://cache.example.invalid/x"]
        .iter()
        .enumerate()
    {
        let to = format!("main:refs/heads/t{i}");
        let r = p.push_env(&["origin", &to], &[("CHECKDEF_REMOTE", bad)]);
        r.expect_code(0);
        assert!(r.stderr.contains("warning:"), "{bad}: {}", r.stderr);
        assert!(
            r.stderr.contains("without the remote cache"),
            "{bad}: {}",
            r.stderr
        );
    }
}

#[test]
fn every_pushed_commit_gets_the_remote_budget_not_only_the_first() {
    // Two refs whose `slow` segment must run (longer than the 1 s remote budget) and whose
    // `foo` results CI already pushed: the second commit's lookups must still reach the remote.
    let p = Pushy::without_hook();
    let Some(nginx) = testkit::Nginx::start(&p.repo.tmp.path().join("served"), None) else {
        return;
    };
    p.repo.write(
        "checkdef.toml",
        r#"version = 1

[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "grep -qx ok src/foo/value"

[[segment]]
name = "slow"
include = ["src/slow/**"]
command = "sleep 1.2"

[cache]
timeout-secs = 1
"#,
    );
    p.repo.write("src/slow/x", "0\n");
    let base = p.repo.commit("slow segment");
    for name in ["a", "b"] {
        p.repo.git(&["checkout", "-q", "-b", name, &base]);
        p.repo.write("src/foo/x", &format!("{name}\n"));
        p.repo.write("src/slow/x", &format!("{name}\n"));
        p.repo.commit(name);
    }
    p.repo.git(&["checkout", "-q", "main"]);
    let secret = p.repo.tmp.path().join("ci.secret");
    let key = p
        .repo
        .checkdef_env(&["keygen", "ci-1", "--out", secret.to_str().unwrap()], &[]);
    key.expect_code(0);
    let public = key.stdout.trim().to_owned();
    let ci_cache = p.repo.tmp.path().join("ci-cache");
    let url = nginx.url();
    for name in ["a", "b"] {
        p.repo
            .run_json(
                &["--rev", name, "--segment", "foo"],
                &[
                    ("CHECKDEF_REMOTE", url.as_str()),
                    ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
                    ("CHECKDEF_CACHE_DIR", ci_cache.to_str().unwrap()),
                ],
            )
            .expect_code(0);
    }
    p.install().expect_code(0);
    let r = p.push_env(
        &["origin", "a", "b"],
        &[
            ("CHECKDEF_REMOTE", url.as_str()),
            ("CHECKDEF_TRUSTED_PUBLIC_KEYS", public.as_str()),
        ],
    );
    r.expect_code(0);
    let foo = checklist(&r.stderr, "foo");
    assert_eq!(foo.len(), 2, "{}", r.stderr);
    for l in foo {
        assert!(l.contains("cached (remote)"), "{}", r.stderr);
    }
    assert!(!r.stderr.contains("too slow"), "{}", r.stderr);
}

#[test]
fn a_stalled_remote_costs_one_budget_per_push_not_one_per_commit() {
    let p = Pushy::without_hook();
    p.repo.write(
        "checkdef.toml",
        &format!("{SHELL_CONFIG}\n[cache]\ntimeout-secs = 1\n"),
    );
    let base = p.repo.commit("timeout");
    for name in ["a", "b", "c"] {
        p.repo.git(&["checkout", "-q", "-b", name, &base]);
        p.repo.write("src/foo/x", &format!("{name}\n"));
        p.repo.commit(name);
    }
    p.repo.git(&["checkout", "-q", "main"]);
    p.install().expect_code(0);
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let started = std::time::Instant::now();
    let r = p.push_env(
        &["origin", "a", "b", "c"],
        &[("CHECKDEF_REMOTE", url.as_str())],
    );
    let took = started.elapsed();
    r.expect_code(0);
    assert!(
        took < std::time::Duration::from_secs(20),
        "took {took:?}\n{}",
        r.stderr
    );
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("warning") && l.contains(&url))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    for name in ["a", "b", "c"] {
        assert!(p.remote(name).is_some(), "{name}");
    }
}

#[test]
fn commits_all_checks_only_what_the_remote_lacks_and_always_the_tip() {
    let p = Pushy::without_hook();
    p.repo.write(
        "checkdef.toml",
        &format!("{SHELL_CONFIG}\n[hook]\ncommits = \"all\"\n"),
    );
    p.repo.commit("commits = all");
    p.install().expect_code(0);
    p.repo.write("src/foo/more", "1\n");
    let older = p.repo.commit("one");
    p.repo.write("src/foo/more", "2\n");
    p.repo.commit("two");
    p.push(&["origin", "main"]).expect_code(0);
    // A new branch at a commit the remote already has: nothing new, but its commit is checked.
    let r = p.push(&["origin", &format!("{older}:refs/heads/old")]);
    r.expect_code(0);
    assert_eq!(
        r.stderr.matches("checkdef: checking").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("checking {}", short(&older))),
        "{}",
        r.stderr
    );
    // A branch off main with one commit: only that commit, not main's history again.
    p.repo.git(&["checkout", "-q", "-b", "topic"]);
    p.repo.write("src/bar/more", "x\n");
    let topic = p.repo.commit("topic");
    let r = p.push(&["origin", "topic"]);
    r.expect_code(0);
    assert_eq!(
        r.stderr.matches("checkdef: checking").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("checking {}", short(&topic))),
        "{}",
        r.stderr
    );
}

#[test]
fn a_push_names_the_changed_files_no_segment_takes_in() {
    let p = Pushy::new();
    p.push(&["origin", "main"]).expect_code(0);
    p.repo.write("src/foo/more", "more\n");
    p.repo.write("data/cases/c1.txt", "1\n");
    p.repo.commit("foo, and data no segment includes");
    let r = p.push(&["origin", "main"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains(
            "1 changed file is no segment's input: data/cases/c1.txt (a test that reads them needs them in its include)"
        ),
        "{}",
        r.stderr
    );
    // Only the files of the push: a push that changes inputs only says nothing of the kind.
    p.repo.write("src/foo/more", "more, again\n");
    p.repo.commit("foo only");
    let quiet = p.push(&["origin", "main"]);
    quiet.expect_code(0);
    assert!(
        !quiet.stderr.contains("no segment's input"),
        "{}",
        quiet.stderr
    );
}
