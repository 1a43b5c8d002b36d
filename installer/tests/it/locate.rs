//! The hooks directory is found the way git finds it; git itself runs the installed hook there.
use std::fs;
use std::path::Path;

use installer::{Error, install};

use crate::support::{Fake, Sandbox, opts};

/// Push `main` from `dir` to a fresh bare remote and check git ran the installed hook.
fn assert_git_runs_hook(sb: &Sandbox, repo: &Path, dir: &Path, fake: &Fake) {
    fake.clear();
    sb.remote(repo, "remote.git");
    sb.git(dir, &["push", "-q", "origin", "HEAD:refs/heads/pushed"]);
    let stdin = String::from_utf8(fake.stdin("checkdef").expect("git ran the hook")).unwrap();
    assert!(stdin.contains(" refs/heads/pushed "), "{stdin}");
}

#[test]
fn relative_hooks_path_is_relative_to_the_work_tree_root() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    sb.git(&repo, &["config", "core.hooksPath", ".githooks"]);
    let sub = repo.join("deep/sub");
    fs::create_dir_all(&sub).unwrap();
    let from_sub = sb.locate(&sub);
    assert_eq!(from_sub.hooks_dir, repo.join(".githooks"));
    assert_eq!(from_sub.hooks_path_config.as_deref(), Some(".githooks"));
    assert_eq!(from_sub.layout.work_tree.as_deref(), Some(repo.as_path()));
    assert_eq!(sb.locate(&repo), from_sub);
    install(&from_sub, &opts(&fake, false)).unwrap();
    assert!(repo.join(".githooks/pre-push").is_file());
    assert!(!repo.join(".git/hooks/pre-push").exists());
    assert_git_runs_hook(&sb, &repo, &sub, &fake);
}

#[test]
fn absolute_hooks_path_is_used_as_is() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let abs = sb.path().join("shared hooks");
    sb.git(&repo, &["config", "core.hooksPath", abs.to_str().unwrap()]);
    let loc = sb.locate(&repo);
    assert_eq!(loc.hooks_dir, abs);
    install(&loc, &opts(&fake, false)).unwrap();
    assert!(abs.join("pre-push").is_file());
    assert_git_runs_hook(&sb, &repo, &repo, &fake);
}

#[test]
fn tilde_hooks_path_is_expanded_with_home() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    sb.git(&repo, &["config", "core.hooksPath", "~/my-hooks"]);
    let loc = sb.locate(&repo);
    assert_eq!(loc.hooks_dir, sb.home().join("my-hooks"));
    install(&loc, &opts(&fake, false)).unwrap();
    assert_git_runs_hook(&sb, &repo, &repo, &fake);
}

#[test]
fn linked_worktree_installs_into_the_common_hooks_dir() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let wt = sb.path().join("wt");
    sb.git(
        &repo,
        &["worktree", "add", "-q", "-b", "wt", wt.to_str().unwrap()],
    );
    let wt = wt.canonicalize().unwrap();
    let loc = sb.locate(&wt);
    assert_eq!(loc.hooks_dir, repo.join(".git/hooks"));
    assert_eq!(loc.layout.common_dir, repo.join(".git"));
    assert_eq!(loc.layout.git_dir, repo.join(".git/worktrees/wt"));
    assert_eq!(loc.layout.work_tree.as_deref(), Some(wt.as_path()));
    install(&loc, &opts(&fake, false)).unwrap();
    assert!(repo.join(".git/hooks/pre-push").is_file());
    assert_git_runs_hook(&sb, &repo, &wt, &fake);
}

#[test]
fn bare_repository_hooks() {
    let sb = Sandbox::new();
    let bare = sb.path().join("bare.git");
    sb.git(sb.path(), &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let bare = bare.canonicalize().unwrap();
    let loc = sb.locate(&bare);
    assert_eq!(loc.layout.work_tree, None);
    assert_eq!(loc.hooks_dir, bare.join("hooks"));
    sb.git(&bare, &["config", "core.hooksPath", "my-hooks"]);
    assert_eq!(sb.locate(&bare).hooks_dir, bare.join("my-hooks"));
}

#[test]
fn git_dir_variable_is_honoured() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let elsewhere = sb.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let loc = sb
        .locator()
        .env("GIT_DIR", repo.join(".git"))
        .locate(&elsewhere)
        .unwrap();
    assert_eq!(loc.hooks_dir, repo.join(".git/hooks"));
}

#[test]
fn outside_a_repository_is_an_error_naming_the_directory() {
    let sb = Sandbox::new();
    let dir = sb.path().join("not-a-repo");
    fs::create_dir_all(&dir).unwrap();
    let err = sb
        .locator()
        .env("GIT_CEILING_DIRECTORIES", sb.path())
        .locate(&dir)
        .unwrap_err();
    assert!(matches!(err, Error::GitFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-repo"), "{err}");
}

#[test]
fn inside_the_git_dir_is_an_error() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let err = sb.locator().locate(&repo.join(".git")).unwrap_err();
    assert!(matches!(err, Error::NotInWorkTree { .. }), "{err:?}");
}

/// Directory names may hold newlines, even last: git's answers are read one per call, with
/// only the newline git adds removed (was "unexpected output" from outside trial 7).
#[test]
fn directories_whose_names_hold_newlines_are_found() {
    let sb = Sandbox::new();
    let repo = sb.repo("two\nlines\n");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    assert_eq!(loc.hooks_dir, repo.join(".git/hooks"));
    assert_eq!(loc.layout.git_dir, repo.join(".git"));
    assert_eq!(loc.layout.work_tree.as_deref(), Some(repo.as_path()));
    install(&loc, &opts(&fake, false)).unwrap();
    assert_git_runs_hook(&sb, &repo, &repo, &fake);

    let wt = sb.path().join("work\ntree\n");
    sb.git(
        &repo,
        &["worktree", "add", "-q", "-b", "wt", wt.to_str().unwrap()],
    );
    let wt = wt.canonicalize().unwrap();
    let loc = sb.locate(&wt);
    assert_eq!(loc.hooks_dir, repo.join(".git/hooks"));
    assert_eq!(loc.layout.common_dir, repo.join(".git"));
    assert!(
        loc.layout.git_dir.starts_with(repo.join(".git/worktrees")),
        "{:?}",
        loc.layout.git_dir
    );
    assert_eq!(loc.layout.work_tree.as_deref(), Some(wt.as_path()));
}
