//! Uploads: `checkdef cache push` for results that were local before a remote was set up, the
//! retry of uploads that failed, and the one line per run that says what was uploaded.
use std::path::PathBuf;

use crate::support::{CmdOut, TestRepo, narinfos_in, shell_layout};

/// `checkdef keygen NAME --out <tmp>/NAME.secret`: (secret key file, public key).
fn keygen(repo: &TestRepo, name: &str) -> (PathBuf, String) {
    let secret = repo.tmp.path().join(format!("{name}.secret"));
    let out = repo.checkdef_env(&["keygen", name, "--out", secret.to_str().unwrap()], &[]);
    out.expect_code(0);
    (secret, out.stdout.trim().to_owned())
}

fn puts(nginx: &testkit::Nginx) -> usize {
    // nginx logs a request after answering it: give the last line a moment.
    std::thread::sleep(std::time::Duration::from_millis(200));
    nginx
        .access_log()
        .iter()
        .filter(|l| l.starts_with("PUT "))
        .count()
}

#[test]
fn cache_push_uploads_the_local_results_the_remote_lacks_once() {
    let repo = TestRepo::new();
    let Some(nginx) = testkit::Nginx::start(&repo.tmp.path().join("served"), None) else {
        return;
    };
    shell_layout(&repo);
    repo.commit("init");
    // Results made before there was a remote: local only.
    repo.run_json(&[], &[]).expect_code(0);
    let url = nginx.url();
    let (secret, public) = keygen(&repo, "alice-1");
    let remote = [("CHECKDEF_REMOTE", url.as_str())];

    // Adding the remote uploads nothing by itself: both are local hits.
    let out = repo.checkdef_env(
        &["run"],
        &[
            ("CHECKDEF_REMOTE", url.as_str()),
            ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
        ],
    );
    out.expect_code(0);
    assert!(!out.stderr.contains("uploaded"), "{}", out.stderr);
    assert_eq!(narinfos_in(nginx.root()).len(), 0);

    let dry = repo.checkdef_env(&["cache", "push", "--dry-run"], &remote);
    dry.expect_code(0);
    assert!(
        dry.stderr
            .contains(&format!("would upload 2 results to {url}; 0 already there")),
        "{}",
        dry.stderr
    );
    assert_eq!(puts(&nginx), 0, "a dry run writes nothing");

    let nokey = repo.checkdef_env(&["cache", "push"], &remote);
    nokey.expect_code(2);
    assert!(
        nokey.stderr.contains("CHECKDEF_SECRET_KEY_FILE"),
        "{}",
        nokey.stderr
    );

    let signed = [
        ("CHECKDEF_REMOTE", url.as_str()),
        ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
    ];
    let push = repo.checkdef_env(&["cache", "push"], &signed);
    push.expect_code(0);
    assert!(
        push.stderr
            .contains(&format!("uploaded 2 results to {url}; 0 already there")),
        "{}",
        push.stderr
    );
    assert_eq!(narinfos_in(nginx.root()).len(), 2);

    // Idempotent: nothing is uploaded twice.
    let before = puts(&nginx);
    let again = repo.checkdef_env(&["cache", "push"], &signed);
    again.expect_code(0);
    assert!(
        again
            .stderr
            .contains(&format!("uploaded 0 results to {url}; 2 already there")),
        "{}",
        again.stderr
    );
    assert_eq!(puts(&nginx), before);

    // Signed: a teammate who trusts the key gets remote hits.
    let b = repo.tmp.path().join("cache-b");
    std::fs::create_dir(&b).unwrap();
    let r = repo.run_json(
        &[],
        &[
            ("CHECKDEF_REMOTE", url.as_str()),
            ("CHECKDEF_TRUSTED_PUBLIC_KEYS", public.as_str()),
            ("CHECKDEF_CACHE_DIR", b.to_str().unwrap()),
        ],
    );
    r.expect_code(0);
    assert_eq!(r.source("foo"), "remote", "{}", r.stderr);
    assert_eq!(r.source("bar"), "remote");
}

#[test]
fn a_failed_upload_is_retried_by_the_next_run() {
    let repo = TestRepo::new();
    let Some(nginx) =
        testkit::Nginx::start(&repo.tmp.path().join("served"), Some(("ci", "s3cret")))
    else {
        return;
    };
    shell_layout(&repo);
    repo.commit("init");
    let url = nginx.url();
    let (secret, _) = keygen(&repo, "ci-1");
    let netrc = repo.tmp.path().join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login ci password s3cret\n").unwrap();
    let run = |with_netrc: bool| -> CmdOut {
        let mut env = vec![
            ("CHECKDEF_REMOTE", url.as_str()),
            ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
        ];
        if with_netrc {
            env.push(("CHECKDEF_NETRC_FILE", netrc.to_str().unwrap()));
        }
        repo.checkdef_env(&["run"], &env)
    };
    // 401 before the credentials are set up: a warning, not a failed run.
    let first = run(false);
    first.expect_code(0);
    assert!(
        first.stderr.contains("401") && first.stderr.contains("the next run retries it"),
        "{}",
        first.stderr
    );
    assert!(!first.stderr.contains("uploaded"), "{}", first.stderr);
    assert_eq!(narinfos_in(nginx.root()).len(), 0);

    // The next run finds both locally, and uploads them now.
    let second = run(true);
    second.expect_code(0);
    assert!(
        second.stderr.contains("cached (local)"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!(
            "checkdef: uploaded 2 results to {url} (2 from earlier runs whose upload had failed)"
        )),
        "{}",
        second.stderr
    );
    assert!(!second.stderr.contains("s3cret"));
    assert_eq!(narinfos_in(nginx.root()).len(), 2);

    // Done: the third run uploads nothing and says nothing about uploads.
    let before = puts(&nginx);
    let third = run(true);
    third.expect_code(0);
    assert!(!third.stderr.contains("uploaded"), "{}", third.stderr);
    assert_eq!(puts(&nginx), before);
}

#[test]
fn a_run_says_what_it_uploaded() {
    let repo = TestRepo::new();
    let Some(nginx) = testkit::Nginx::start(&repo.tmp.path().join("served"), None) else {
        return;
    };
    shell_layout(&repo);
    repo.commit("init");
    let url = nginx.url();
    let (secret, _) = keygen(&repo, "ci-1");
    let env = [
        ("CHECKDEF_REMOTE", url.as_str()),
        ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
    ];
    let out = repo.checkdef_env(&["run", "--json"], &env);
    out.expect_code(0);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("uploaded"))
        .collect();
    assert_eq!(
        lines,
        [format!("checkdef: uploaded 2 results to {url}")],
        "{}",
        out.stderr
    );
}
