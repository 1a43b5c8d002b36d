//! An existing hook is moved to pre-push.local and run first with the same arguments and stdin.
use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use installer::{Error, install, script};

use crate::support::{Fake, Sandbox, mode, opts, recording_script, run_hook, snapshot, write_exec};

/// Install over a recording `pre-push` ("local" in the fake's directory).
fn chained_setup(sb: &Sandbox) -> (PathBuf, Fake, installer::HookLocation) {
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    recording_script(&loc.pre_push(), &fake.dir, "local");
    let original = fs::read(loc.pre_push()).unwrap();
    let report = install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(report.moved_aside, Some(loc.pre_push_local()));
    assert_eq!(report.chained, Some(loc.pre_push_local()));
    assert_eq!(fs::read(loc.pre_push_local()).unwrap(), original);
    assert_eq!(mode(&loc.pre_push_local()), 0o755);
    (repo, fake, loc)
}

#[test]
fn chained_hook_and_checkdef_get_the_same_args_and_full_stdin() {
    let sb = Sandbox::new();
    let (_repo, fake, loc) = chained_setup(&sb);
    let z = "0".repeat(40);
    let a = "a".repeat(40);
    let b = "b".repeat(40);
    let stdin =
        format!("refs/heads/main {a} refs/heads/main {b}\nrefs/tags/v1 {a} refs/tags/v1 {z}\n");
    let out = run_hook(
        &loc.pre_push(),
        &["origin", "git@example.invalid:x y.git"],
        stdin.as_bytes(),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fake.args("local").unwrap(),
        "origin\ngit@example.invalid:x y.git\n"
    );
    assert_eq!(
        fake.args("checkdef").unwrap(),
        "hook\npre-push\norigin\ngit@example.invalid:x y.git\n"
    );
    for who in ["local", "checkdef"] {
        assert_eq!(fake.stdin(who).unwrap(), stdin.as_bytes(), "{who}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn stdin_is_passed_on_byte_for_byte() {
    let sb = Sandbox::new();
    let (_repo, fake, loc) = chained_setup(&sb);
    let inputs: [&[u8]; 5] = [
        b"",
        b"\n",
        b"no newline",
        b"two\n\n\n",
        b" leading and trailing spaces \n",
    ];
    for input in inputs {
        fake.clear();
        let out = run_hook(&loc.pre_push(), &["origin", "url"], input, None);
        assert!(out.status.success());
        assert_eq!(fake.stdin("local").unwrap(), input);
        assert_eq!(fake.stdin("checkdef").unwrap(), input);
    }
}

#[test]
fn failing_chained_hook_blocks_the_push_with_its_exit_code() {
    let sb = Sandbox::new();
    let (_repo, fake, loc) = chained_setup(&sb);
    fake.set_exit("local", 7);
    let out = run_hook(&loc.pre_push(), &["origin", "url"], b"x\n", None);
    assert_eq!(out.status.code(), Some(7));
    assert!(fake.stdin("local").is_some());
    assert!(
        fake.stdin("checkdef").is_none(),
        "checkdef must not run after the chained hook failed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pre-push.local failed (exit 7)"),
        "{stderr}"
    );
}

#[test]
fn failing_checkdef_fails_the_hook() {
    let sb = Sandbox::new();
    let (_repo, fake, loc) = chained_setup(&sb);
    fake.set_exit("checkdef", 1);
    let out = run_hook(&loc.pre_push(), &["origin", "url"], b"x\n", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(fake.stdin("local").is_some());
}

#[test]
fn non_executable_chained_hook_is_skipped_like_git_would() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    recording_script(&loc.pre_push(), &fake.dir, "local");
    fs::set_permissions(
        loc.pre_push(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(mode(&loc.pre_push_local()), 0o644);
    let out = run_hook(&loc.pre_push(), &["origin", "url"], b"x\n", None);
    assert!(out.status.success());
    assert!(fake.stdin("local").is_none());
    assert_eq!(fake.stdin("checkdef").unwrap(), b"x\n");
}

#[test]
fn git_push_runs_both_with_every_ref_line() {
    let sb = Sandbox::new();
    let (repo, fake, _loc) = chained_setup(&sb);
    sb.remote(&repo, "remote.git");
    sb.git(&repo, &["branch", "other"]);
    sb.git(&repo, &["tag", "v1"]);
    sb.git(&repo, &["push", "-q", "origin", "main", "other", "v1"]);
    for who in ["local", "checkdef"] {
        let stdin = String::from_utf8(fake.stdin(who).unwrap()).unwrap();
        assert_eq!(stdin.lines().count(), 3, "{who}: {stdin}");
        assert!(stdin.contains("refs/heads/other "), "{who}: {stdin}");
        assert!(stdin.contains("refs/tags/v1 "), "{who}: {stdin}");
    }
}

#[test]
fn occupied_chain_slot_is_refused_and_nothing_changes() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    write_exec(&loc.pre_push(), b"#!/bin/sh\nexit 0\n", 0o755);
    write_exec(&loc.pre_push_local(), b"#!/bin/sh\nexit 1\n", 0o755);
    let before = snapshot(&loc.hooks_dir);
    let err = install(&loc, &opts(&fake, true)).unwrap_err();
    assert!(matches!(&err, Error::ChainSlotTaken { hook, local }
        if *hook == loc.pre_push() && *local == loc.pre_push_local()));
    assert!(err.to_string().contains("pre-push.local"), "{err}");
    assert_eq!(snapshot(&loc.hooks_dir), before);
}

#[test]
fn checkdef_hook_in_the_chain_slot_is_refused() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    let ours = script::render(&script::ScriptParams {
        kind: script::HookKind::PrePush,
        checkdef_exe: fake.exe.clone(),
        moved_aside: false,
    });
    write_exec(&loc.pre_push_local(), ours.as_bytes(), 0o755);
    let err = install(&loc, &opts(&fake, false)).unwrap_err();
    assert!(matches!(err, Error::SelfChain { .. }), "{err}");
    assert!(!loc.pre_push().exists());
}

#[test]
fn symlinked_hook_is_moved_as_a_symlink_and_restored() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    let target = sb.path().join("shared-hook");
    recording_script(&target, &fake.dir, "local");
    symlink(&target, loc.pre_push()).unwrap();
    let before = snapshot(&loc.hooks_dir);
    install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(fs::read_link(loc.pre_push_local()).unwrap(), target);
    let out = run_hook(&loc.pre_push(), &["origin", "url"], b"l\n", None);
    assert!(out.status.success());
    assert_eq!(fake.stdin("local").unwrap(), b"l\n");
    installer::uninstall(&loc, false).unwrap();
    assert_eq!(snapshot(&loc.hooks_dir), before);
}

/// A directory with only the external tools the hook script needs (`cat`, `dirname`).
fn minimal_path(sb: &Sandbox) -> PathBuf {
    let dir = sb.path().join("tools");
    fs::create_dir_all(&dir).unwrap();
    for tool in ["cat", "dirname"] {
        let found = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} not on PATH"));
        symlink(found, dir.join(tool)).unwrap();
    }
    dir
}

fn install_with_missing_binary(sb: &Sandbox) -> (Fake, installer::HookLocation) {
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    let mut o = opts(&fake, false);
    o.checkdef_exe = sb.path().join("gone/checkdef");
    install(&loc, &o).unwrap();
    (fake, loc)
}

#[test]
fn missing_binary_blocks_with_the_bypass_hint() {
    let sb = Sandbox::new();
    let (_fake, loc) = install_with_missing_binary(&sb);
    let tools = minimal_path(&sb);
    let out = run_hook(
        &loc.pre_push(),
        &["origin", "url"],
        b"x\n",
        Some(tools.to_str().unwrap()),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gone/checkdef does not exist"), "{stderr}");
    assert!(stderr.contains("git push --no-verify"), "{stderr}");
}

#[test]
fn missing_binary_falls_back_to_checkdef_on_path() {
    let sb = Sandbox::new();
    let (fake, loc) = install_with_missing_binary(&sb);
    let tools = minimal_path(&sb);
    let path = format!("{}:{}", tools.display(), fake.dir.display());
    let out = run_hook(&loc.pre_push(), &["origin", "url"], b"y\n", Some(&path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.stdin("checkdef").unwrap(), b"y\n");
    assert_eq!(
        fake.args("checkdef").unwrap(),
        "hook\npre-push\norigin\nurl\n"
    );
}

#[test]
fn post_commit_hook_is_chained_run_by_git_commit_and_uninstalled_exactly() {
    use installer::{HookKind, InstallAction, UninstallReport, install_hook, uninstall_hook};
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    let post = loc.hooks_dir.join("post-commit");
    let local = loc.hooks_dir.join("post-commit.local");
    recording_script(&post, &fake.dir, "local");
    let before = snapshot(&loc.hooks_dir);

    let report = install_hook(&loc, HookKind::PostCommit, &opts(&fake, false)).unwrap();
    assert_eq!(report.action, InstallAction::Created);
    assert_eq!(report.moved_aside.as_deref(), Some(local.as_path()));
    assert!(!loc.pre_push().exists(), "only the post-commit hook");
    // Idempotent, like the pre-push hook.
    let again = install_hook(&loc, HookKind::PostCommit, &opts(&fake, false)).unwrap();
    assert_eq!(again.action, InstallAction::Unchanged);

    // git runs it after a commit: the chained hook first, then `checkdef warm`, and a failing
    // chained hook does not stop checkdef (git ignores post-commit's status anyway).
    fake.set_exit("local", 3);
    sb.git(&repo, &["commit", "-q", "--allow-empty", "-m", "x"]);
    assert_eq!(fake.args("local").unwrap(), "\n", "run, with no arguments");
    assert_eq!(fake.args("checkdef").unwrap(), "warm\n--quiet\n");

    // A pre-push install does not mistake checkdef's post-commit script for its own, and
    // uninstalling one kind leaves the other.
    install(&loc, &opts(&fake, false)).unwrap();
    let r = uninstall_hook(&loc, HookKind::PostCommit, false).unwrap();
    assert!(
        matches!(
            r,
            UninstallReport::Removed {
                restored: Some(_),
                ..
            }
        ),
        "{r:?}"
    );
    assert!(loc.pre_push().exists());
    installer::uninstall(&loc, false).unwrap();
    assert_eq!(snapshot(&loc.hooks_dir), before);
}
