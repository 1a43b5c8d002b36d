//! Fresh install, idempotence, uninstall, status.
use std::fs;

use installer::{Error, HookState, InstallAction, UninstallReport, install, status, uninstall};

use crate::support::{Sandbox, mode, opts, snapshot, write_exec};

#[test]
fn fresh_install_writes_an_executable_hook_that_git_runs() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let remote = sb.remote(&repo, "remote.git");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    assert_eq!(loc.hooks_dir, repo.join(".git/hooks"));

    let report = install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(report.action, InstallAction::Created);
    assert_eq!(report.hook, repo.join(".git/hooks/pre-push"));
    assert_eq!(report.moved_aside, None);
    assert_eq!(report.chained, None);
    assert_eq!(mode(&report.hook), 0o755);
    let content = fs::read_to_string(&report.hook).unwrap();
    assert!(
        content.starts_with("#!/bin/sh\n# checkdef pre-push hook v1"),
        "{content}"
    );
    assert!(content.contains(&fake.exe.display().to_string()));
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(&loc.hooks_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");

    // git itself runs the hook, which calls the binary with the remote, URL and ref lines.
    sb.git(&repo, &["push", "-q", "origin", "main"]);
    let head = sb.git(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(
        fake.args("checkdef").unwrap(),
        format!("hook\npre-push\norigin\n{}\n", remote.display())
    );
    let zero = "0".repeat(40);
    assert_eq!(
        String::from_utf8(fake.stdin("checkdef").unwrap()).unwrap(),
        format!("refs/heads/main {head} refs/heads/main {zero}\n")
    );

    // A failing check blocks the push.
    fs::write(repo.join("README"), "changed\n").unwrap();
    sb.git(&repo, &["commit", "-qam", "second"]);
    fake.set_exit("checkdef", 1);
    let out = sb
        .git_cmd(&repo, &["push", "-q", "origin", "main"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(sb.git(&remote, &["rev-parse", "main"]), head);
}

#[test]
fn install_twice_is_one_install() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    // With a pre-existing hook, so a second move would show.
    write_exec(&loc.pre_push(), b"#!/bin/sh\nexit 0\n", 0o755);

    let first = install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(first.action, InstallAction::Created);
    let after_first = snapshot(&loc.hooks_dir);
    let second = install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(second.action, InstallAction::Unchanged);
    assert_eq!(second.moved_aside, None);
    assert_eq!(second.chained, Some(loc.pre_push_local()));
    assert_eq!(snapshot(&loc.hooks_dir), after_first);
}

#[test]
fn reinstall_with_another_binary_updates_the_path_only() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    write_exec(&loc.pre_push(), b"#!/bin/sh\nexit 0\n", 0o700);
    install(&loc, &opts(&fake, false)).unwrap();
    let mut other = opts(&fake, false);
    other.checkdef_exe = sb.path().join("elsewhere/checkdef");
    let report = install(&loc, &other).unwrap();
    assert_eq!(report.action, InstallAction::Updated);
    let content = fs::read_to_string(loc.pre_push()).unwrap();
    assert!(content.contains("elsewhere/checkdef"));
    // Still knows it moved the original aside: uninstall restores it.
    uninstall(&loc, false).unwrap();
    assert_eq!(fs::read(loc.pre_push()).unwrap(), b"#!/bin/sh\nexit 0\n");
    assert_eq!(mode(&loc.pre_push()), 0o700);
}

#[test]
fn uninstall_restores_the_hooks_dir_exactly() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    // An original hook with unusual bytes and mode.
    write_exec(
        &loc.pre_push(),
        b"#!/bin/sh\r\n# no trailing newline\n\xff exit 3",
        0o750,
    );
    let before = snapshot(&loc.hooks_dir);

    let report = install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(report.moved_aside, Some(loc.pre_push_local()));
    assert_ne!(snapshot(&loc.hooks_dir), before);
    let removed = uninstall(&loc, false).unwrap();
    assert_eq!(
        removed,
        UninstallReport::Removed {
            hook: loc.pre_push(),
            restored: Some(loc.pre_push_local()),
            left_in_place: None,
        }
    );
    assert_eq!(snapshot(&loc.hooks_dir), before);
}

#[test]
fn uninstall_after_fresh_install_restores_the_hooks_dir_exactly() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    // A pre-push.local that install did not create stays where it is.
    write_exec(&loc.pre_push_local(), b"#!/bin/sh\nexit 0\n", 0o755);
    let before = snapshot(&loc.hooks_dir);
    let report = install(&loc, &opts(&fake, false)).unwrap();
    assert_eq!(report.chained, Some(loc.pre_push_local()));
    let removed = uninstall(&loc, false).unwrap();
    assert_eq!(
        removed,
        UninstallReport::Removed {
            hook: loc.pre_push(),
            restored: None,
            left_in_place: Some(loc.pre_push_local()),
        }
    );
    assert_eq!(snapshot(&loc.hooks_dir), before);
}

#[test]
fn install_creates_a_missing_hooks_dir_and_uninstall_leaves_it() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    fs::remove_dir_all(repo.join(".git/hooks")).unwrap();
    let loc = sb.locate(&repo);
    install(&loc, &opts(&fake, false)).unwrap();
    assert!(loc.pre_push().is_file());
    uninstall(&loc, false).unwrap();
    assert!(!loc.pre_push().exists());
}

#[test]
fn uninstall_when_not_installed_is_a_no_op() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let loc = sb.locate(&repo);
    let before = snapshot(&loc.hooks_dir);
    assert_eq!(
        uninstall(&loc, false).unwrap(),
        UninstallReport::NotInstalled {
            hook: loc.pre_push(),
            foreign: false
        }
    );
    write_exec(&loc.pre_push(), b"#!/bin/sh\nexit 0\n", 0o755);
    let with_foreign = snapshot(&loc.hooks_dir);
    assert_eq!(
        uninstall(&loc, true).unwrap(),
        UninstallReport::NotInstalled {
            hook: loc.pre_push(),
            foreign: true
        }
    );
    assert_eq!(snapshot(&loc.hooks_dir), with_foreign);
    fs::remove_file(loc.pre_push()).unwrap();
    assert_eq!(snapshot(&loc.hooks_dir), before);
}

#[test]
fn edited_hook_is_kept_unless_forced() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    write_exec(&loc.pre_push(), b"#!/bin/sh\necho original\n", 0o755);
    install(&loc, &opts(&fake, false)).unwrap();
    let mut content = fs::read_to_string(loc.pre_push()).unwrap();
    content.push_str("echo my addition\n");
    fs::write(loc.pre_push(), &content).unwrap();

    let err = uninstall(&loc, false).unwrap_err();
    assert!(
        matches!(&err, Error::Modified { path } if *path == loc.pre_push()),
        "{err}"
    );
    assert_eq!(fs::read_to_string(loc.pre_push()).unwrap(), content);
    let err = install(&loc, &opts(&fake, false)).unwrap_err();
    assert!(matches!(err, Error::Modified { .. }));
    assert!(err.to_string().contains("pre-push"));
    match status(&loc).unwrap().state {
        HookState::Ours { modified, .. } => assert!(modified),
        other => panic!("{other:?}"),
    }

    let removed = uninstall(&loc, true).unwrap();
    assert!(matches!(
        removed,
        UninstallReport::Removed {
            restored: Some(_),
            ..
        }
    ));
    assert_eq!(
        fs::read(loc.pre_push()).unwrap(),
        b"#!/bin/sh\necho original\n"
    );
}

#[test]
fn lost_executable_bit_is_repaired_by_reinstall() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);
    install(&loc, &opts(&fake, false)).unwrap();
    fs::set_permissions(
        loc.pre_push(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    match status(&loc).unwrap().state {
        HookState::Ours { executable, .. } => assert!(!executable),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        install(&loc, &opts(&fake, false)).unwrap().action,
        InstallAction::Updated
    );
    assert_eq!(mode(&loc.pre_push()), 0o755);
}

#[test]
fn status_reports_what_is_installed() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let fake = sb.fake_checkdef();
    let loc = sb.locate(&repo);

    let s = status(&loc).unwrap();
    assert_eq!(s.state, HookState::Absent);
    assert_eq!(s.hook, loc.pre_push());
    assert_eq!(s.chained, None);
    assert!(s.managers.is_empty());

    write_exec(&loc.pre_push(), b"#!/bin/sh\nexit 0\n", 0o755);
    assert_eq!(
        status(&loc).unwrap().state,
        HookState::Foreign { executable: true }
    );

    install(&loc, &opts(&fake, false)).unwrap();
    let s = status(&loc).unwrap();
    assert_eq!(
        s.state,
        HookState::Ours {
            version: 1,
            checkdef_exe: Some(fake.exe.clone()),
            exe_exists: true,
            modified: false,
            executable: true,
        }
    );
    assert_eq!(s.chained, Some((loc.pre_push_local(), true)));
    assert_eq!(s.location, loc);

    fs::remove_file(&fake.exe).unwrap();
    match status(&loc).unwrap().state {
        HookState::Ours { exe_exists, .. } => assert!(!exe_exists),
        other => panic!("{other:?}"),
    }
}

#[test]
fn relative_or_non_utf8_binary_paths_are_refused() {
    let sb = Sandbox::new();
    let repo = sb.repo("repo");
    let loc = sb.locate(&repo);
    let rel = installer::InstallOptions {
        checkdef_exe: "target/debug/checkdef".into(),
        force: false,
        global: false,
    };
    assert!(matches!(
        install(&loc, &rel),
        Err(Error::RelativeExe { .. })
    ));
    use std::os::unix::ffi::OsStrExt;
    let bad = installer::InstallOptions {
        checkdef_exe: std::ffi::OsStr::from_bytes(b"/bin/\xffcheckdef").into(),
        force: false,
        global: false,
    };
    assert!(matches!(install(&loc, &bad), Err(Error::NonUtf8Exe { .. })));
    assert!(!loc.pre_push().exists());
}
