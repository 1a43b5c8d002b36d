//! `commits_to_check` against real repositories: the stdin comes from a real `git push` whose
//! pre-push hook records it and then fails, so the repository is still in the state the hook saw.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gix::ObjectId;
use gix::object::Kind;

use super::*;

const LEAKY_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
];

struct Lab {
    tmp: tempfile::TempDir,
    format: &'static str,
}

impl Lab {
    fn new(format: &'static str) -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("home")).unwrap();
        Lab { tmp, format }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        for v in LEAKY_VARS {
            cmd.env_remove(v);
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", self.path("home"))
            .env("GIT_AUTHOR_NAME", "A U Thor")
            .env("GIT_AUTHOR_EMAIL", "author@example.invalid")
            .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
            .env("GIT_COMMITTER_NAME", "C O Mitter")
            .env("GIT_COMMITTER_EMAIL", "committer@example.invalid")
            .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
            .env("LC_ALL", "C");
        cmd
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.cmd(dir, args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    /// A repository `name` (branch `main`, one commit "c1") with a bare remote `origin`.
    fn repo_with_origin(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        let bare = self.path(&format!("{name}-origin.git"));
        let fmt = format!("--object-format={}", self.format);
        self.git(
            self.tmp.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &fmt,
                bare.to_str().unwrap(),
            ],
        );
        self.git(
            self.tmp.path(),
            &["init", "-q", "-b", "main", &fmt, dir.to_str().unwrap()],
        );
        self.git(&dir, &["remote", "add", "origin", bare.to_str().unwrap()]);
        self.commit(&dir, "c1");
        dir
    }

    /// Commit a change to file `name` with message `name`; return the commit id.
    fn commit(&self, dir: &Path, name: &str) -> ObjectId {
        fs::write(dir.join(name), format!("{name}\n")).unwrap();
        self.git(dir, &["add", name]);
        self.git(dir, &["commit", "-q", "-m", name]);
        self.oid(dir, "HEAD")
    }

    fn oid(&self, dir: &Path, rev: &str) -> ObjectId {
        ObjectId::from_hex(self.git(dir, &["rev-parse", rev]).as_bytes()).unwrap()
    }

    /// Run `git push <args>` with a hook that records `$1` and stdin and blocks the push.
    /// Returns (`$1`, stdin).
    fn push_stdin(&self, dir: &Path, args: &[&str]) -> (String, String) {
        let hooks = dir.join(".git/hooks");
        fs::create_dir_all(&hooks).unwrap();
        let rec = self.path("recorded");
        let hook = hooks.join("pre-push");
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nprintf '%s' \"$1\" > '{r}.remote'\ncat > '{r}.stdin'\nexit 1\n",
                r = rec.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        let _ = fs::remove_file(rec.with_extension("stdin"));
        let mut full = vec!["push", "-q"];
        full.extend_from_slice(args);
        let out = self.cmd(dir, &full).output().unwrap();
        assert!(!out.status.success(), "the recording hook blocks the push");
        fs::remove_file(&hook).unwrap();
        let stdin = fs::read_to_string(rec.with_extension("stdin")).unwrap_or_else(|_| {
            panic!("hook did not run: {}", String::from_utf8_lossy(&out.stderr))
        });
        let remote = fs::read_to_string(rec.with_extension("remote")).unwrap();
        (remote, stdin)
    }

    /// Push for real (no hook).
    fn push(&self, dir: &Path, args: &[&str]) {
        let mut full = vec!["push", "-q"];
        full.extend_from_slice(args);
        self.git(dir, &full);
    }

    /// What `commits_to_check` says about `git push <args>` from `dir`.
    fn plan(&self, dir: &Path, args: &[&str]) -> (Vec<RefUpdate>, PushPlan) {
        let (remote, stdin) = self.push_stdin(dir, args);
        let updates = parse_stdin(&stdin).unwrap();
        let repo = open(dir);
        let plan = plan_push(&repo, &remote, &updates).unwrap();
        assert_eq!(
            commits_to_check(&repo, &remote, &updates).unwrap(),
            plan.checks
        );
        (updates, plan)
    }
}

fn open(dir: &Path) -> gix::Repository {
    gix::open_opts(dir, gix::open::Options::isolated()).unwrap()
}

/// Checks in a stable order (git does not promise the order of stdin lines).
fn norm(mut checks: Vec<PushCheck>) -> Vec<PushCheck> {
    for c in &mut checks {
        c.refs.sort();
    }
    checks.sort_by_key(|c| c.commit);
    checks
}

fn check(commit: ObjectId, base: Option<ObjectId>, refs: &[&str]) -> PushCheck {
    PushCheck {
        commit,
        base,
        refs: refs.iter().map(|r| (*r).to_owned()).collect(),
    }
}

#[test]
fn update_of_an_existing_branch_compares_with_the_remote_commit() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    lab.commit(&dir, "c2");
    let c3 = lab.commit(&dir, "c3");
    let (updates, plan) = lab.plan(&dir, &["origin", "main"]);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].kind, UpdateKind::Update);
    assert_eq!(plan.checks, vec![check(c3, Some(c1), &["refs/heads/main"])]);
    assert!(plan.skipped.is_empty());
}

#[test]
fn new_branch_compares_with_the_nearest_commit_the_remote_has() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c2 = lab.commit(&dir, "c2");
    lab.push(&dir, &["origin", "main"]);
    // main moves on and is pushed; the feature branch forks from c2.
    lab.git(&dir, &["checkout", "-q", "-b", "feature", &c2.to_string()]);
    lab.commit(&dir, "f1");
    let f2 = lab.commit(&dir, "f2");
    lab.git(&dir, &["checkout", "-q", "main"]);
    lab.commit(&dir, "c3");
    lab.push(&dir, &["origin", "main"]);
    let (updates, plan) = lab.plan(&dir, &["origin", "feature"]);
    assert!(updates[0].is_create());
    assert_eq!(
        plan.checks,
        vec![check(f2, Some(c2), &["refs/heads/feature"])]
    );
}

#[test]
fn new_branch_without_tracking_refs_is_all_new() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    let (_, plan) = lab.plan(&dir, &["origin", "main"]);
    assert_eq!(plan.checks, vec![check(c1, None, &["refs/heads/main"])]);
}

#[test]
fn remote_oid_missing_locally_falls_back_to_tracking_refs() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    // Someone else pushes c-other to main; we never fetch it.
    let other = lab.path("other");
    lab.git(
        lab.tmp.path(),
        &[
            "clone",
            "-q",
            lab.path("r-origin.git").to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    let theirs = lab.commit(&other, "theirs");
    lab.push(&other, &["origin", "main"]);
    let ours = lab.commit(&dir, "ours");
    let (updates, plan) = lab.plan(&dir, &["--force", "origin", "main"]);
    assert_eq!(updates[0].remote_oid, theirs);
    assert!(!open(&dir).has_object(theirs));
    assert_eq!(
        plan.checks,
        vec![check(ours, Some(c1), &["refs/heads/main"])]
    );
}

#[test]
fn tags_are_peeled_to_commits() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    let c2 = lab.commit(&dir, "c2");
    lab.git(&dir, &["tag", "light"]);
    lab.git(&dir, &["tag", "-a", "-m", "annotated", "annotated"]);
    let tag_object = lab.oid(&dir, "refs/tags/annotated");
    assert_ne!(tag_object, c2);

    let (updates, plan) = lab.plan(&dir, &["origin", "light"]);
    assert!(updates[0].is_tag());
    assert_eq!(plan.checks, vec![check(c2, Some(c1), &["refs/tags/light"])]);

    let (updates, plan) = lab.plan(&dir, &["origin", "annotated"]);
    assert_eq!(updates[0].local_oid, tag_object);
    assert_eq!(
        plan.checks,
        vec![check(c2, Some(c1), &["refs/tags/annotated"])]
    );

    // Both tags and the branch in one push: one check for c2.
    let (updates, plan) = lab.plan(&dir, &["origin", "main", "light", "annotated"]);
    assert_eq!(updates.len(), 3);
    assert_eq!(
        norm(plan.checks),
        norm(vec![check(
            c2,
            Some(c1),
            &["refs/heads/main", "refs/tags/light", "refs/tags/annotated"]
        )])
    );
}

#[test]
fn tags_of_trees_and_blobs_need_no_check() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    lab.push(&dir, &["origin", "main"]);
    let tree = lab.oid(&dir, "HEAD^{tree}");
    let blob = lab.oid(&dir, "HEAD:c1");
    lab.git(&dir, &["tag", "tree-tag", &tree.to_string()]);
    lab.git(
        &dir,
        &["tag", "-a", "-m", "blob", "blob-tag", &blob.to_string()],
    );
    let (_, mut plan) = lab.plan(&dir, &["origin", "tree-tag", "blob-tag"]);
    assert!(plan.checks.is_empty());
    plan.skipped.sort_by(|a, b| b.remote_ref.cmp(&a.remote_ref));
    assert_eq!(
        plan.skipped,
        vec![
            Skipped {
                remote_ref: "refs/tags/tree-tag".into(),
                reason: SkipReason::NotACommit {
                    oid: tree,
                    kind: Kind::Tree
                },
            },
            Skipped {
                remote_ref: "refs/tags/blob-tag".into(),
                reason: SkipReason::NotACommit {
                    oid: blob,
                    kind: Kind::Blob
                },
            },
        ]
    );
    assert!(plan.skipped[0].reason.to_string().contains("not a commit"));
}

#[test]
fn deletions_need_no_check() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    lab.git(&dir, &["branch", "gone"]);
    lab.push(&dir, &["origin", "main", "gone"]);
    let (updates, plan) = lab.plan(&dir, &["origin", ":gone"]);
    assert!(updates[0].is_delete());
    assert!(plan.checks.is_empty());
    assert_eq!(
        plan.skipped,
        vec![Skipped {
            remote_ref: "refs/heads/gone".into(),
            reason: SkipReason::Delete
        }]
    );
}

#[test]
fn notes_need_no_check() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.git(&dir, &["notes", "add", "-m", "reviewed"]);
    let (_, plan) = lab.plan(&dir, &["origin", "main", "refs/notes/commits"]);
    assert_eq!(plan.checks, vec![check(c1, None, &["refs/heads/main"])]);
    assert_eq!(
        plan.skipped,
        vec![Skipped {
            remote_ref: "refs/notes/commits".into(),
            reason: SkipReason::Notes
        }]
    );
}

#[test]
fn several_refs_with_one_commit_are_checked_once() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.git(&dir, &["branch", "old"]);
    lab.push(&dir, &["origin", "main", "old"]);
    let c2 = lab.commit(&dir, "c2");
    lab.git(&dir, &["branch", "-f", "old"]);
    lab.push(&dir, &["origin", "old"]);
    let c3 = lab.commit(&dir, "c3");
    // c3 goes to main (remote has c1), old (remote has c2) and two new branches.
    let (updates, plan) = lab.plan(
        &dir,
        &[
            "origin",
            "main",
            "main:old",
            "main:refs/heads/a",
            "main:refs/heads/b",
        ],
    );
    assert_eq!(updates.len(), 4);
    let old = updates
        .iter()
        .find(|u| u.remote_ref == "refs/heads/old")
        .unwrap();
    assert_eq!(old.remote_oid, c2);
    // Bases c1 (main) and c2 (old, a, b: merge base with the tracking refs) merge to c1.
    assert_eq!(
        norm(plan.checks),
        norm(vec![check(
            c3,
            Some(c1),
            &[
                "refs/heads/main",
                "refs/heads/old",
                "refs/heads/a",
                "refs/heads/b"
            ]
        )])
    );
}

#[test]
fn distinct_commits_are_each_checked() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    lab.git(&dir, &["checkout", "-q", "-b", "x"]);
    let x = lab.commit(&dir, "x");
    lab.git(&dir, &["checkout", "-q", "main"]);
    let m = lab.commit(&dir, "m");
    let (_, plan) = lab.plan(&dir, &["origin", "main", "x"]);
    assert_eq!(
        norm(plan.checks),
        norm(vec![
            check(m, Some(c1), &["refs/heads/main"]),
            check(x, Some(c1), &["refs/heads/x"])
        ])
    );
}

#[test]
fn pushing_another_branch_to_main_checks_that_branch() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    lab.git(&dir, &["checkout", "-q", "-b", "other"]);
    let other = lab.commit(&dir, "other");
    lab.git(&dir, &["checkout", "-q", "main"]);
    let head = lab.commit(&dir, "head");
    // An uncommitted change in the work tree is irrelevant too.
    fs::write(dir.join("dirty"), "x").unwrap();
    let (updates, plan) = lab.plan(&dir, &["origin", "other:main"]);
    assert_eq!(updates[0].local_ref, "refs/heads/other");
    assert_eq!(
        plan.checks,
        vec![check(other, Some(c1), &["refs/heads/main"])]
    );
    assert_ne!(other, head);
}

#[test]
fn pushing_to_a_url_has_no_tracking_refs() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    let m = lab.commit(&dir, "m");
    lab.git(&dir, &["checkout", "-q", "-b", "topic"]);
    let t = lab.commit(&dir, "t");
    let url = lab.path("r-origin.git");
    let url = url.to_str().unwrap();
    let (remote, _) = lab.push_stdin(&dir, &[url, "topic"]);
    assert_eq!(remote, url);
    let (_, plan) = lab.plan(&dir, &[url, "main", "topic"]);
    // main: the remote has c1, known locally; topic: new, and a URL has no tracking refs.
    assert_eq!(
        norm(plan.checks),
        norm(vec![
            check(m, Some(c1), &["refs/heads/main"]),
            check(t, None, &["refs/heads/topic"])
        ])
    );
}

#[test]
fn unrelated_history_falls_back_to_the_remote_default_branch() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    lab.push(&dir, &["origin", "main"]);
    lab.git(&dir, &["checkout", "-q", "--orphan", "pages"]);
    let p = lab.commit(&dir, "p");
    let (_, plan) = lab.plan(&dir, &["origin", "pages"]);
    assert_eq!(plan.checks, vec![check(p, None, &["refs/heads/pages"])]);
    lab.git(&dir, &["remote", "set-head", "origin", "main"]);
    let (_, plan) = lab.plan(&dir, &["origin", "pages"]);
    assert_eq!(plan.checks, vec![check(p, Some(c1), &["refs/heads/pages"])]);
}

#[test]
fn sha256_repositories() {
    let lab = Lab::new("sha256");
    let dir = lab.repo_with_origin("r");
    let c1 = lab.oid(&dir, "HEAD");
    assert_eq!(c1.kind(), gix::hash::Kind::Sha256);
    let (updates, plan) = lab.plan(&dir, &["origin", "main"]);
    assert_eq!(
        updates[0].remote_oid,
        ObjectId::null(gix::hash::Kind::Sha256)
    );
    assert_eq!(plan.checks, vec![check(c1, None, &["refs/heads/main"])]);
    lab.push(&dir, &["origin", "main"]);
    let c2 = lab.commit(&dir, "c2");
    lab.git(&dir, &["tag", "-a", "-m", "v", "v1"]);
    lab.git(&dir, &["checkout", "-q", "-b", "f"]);
    let f = lab.commit(&dir, "f");
    let (updates, plan) = lab.plan(&dir, &["origin", "main", "f", "v1"]);
    assert!(
        updates
            .iter()
            .all(|u| u.hash_kind() == gix::hash::Kind::Sha256)
    );
    assert_eq!(
        norm(plan.checks),
        norm(vec![
            check(c2, Some(c1), &["refs/heads/main", "refs/tags/v1"]),
            check(f, Some(c1), &["refs/heads/f"])
        ])
    );
}

#[test]
fn empty_push_has_nothing_to_check() {
    let lab = Lab::new("sha1");
    let dir = lab.repo_with_origin("r");
    let repo = open(&dir);
    assert_eq!(commits_to_check(&repo, "origin", &[]).unwrap(), vec![]);
}

#[test]
fn wrong_hash_kind_and_missing_objects_are_errors() {
    let lab = Lab::new("sha256");
    let dir = lab.repo_with_origin("r");
    let repo = open(&dir);
    let sha1 = parse_stdin(&format!(
        "refs/heads/main {} refs/heads/main {}\n",
        "1".repeat(40),
        "0".repeat(40)
    ))
    .unwrap();
    let err = commits_to_check(&repo, "origin", &sha1).unwrap_err();
    assert!(matches!(err, RangeError::HashKind { .. }), "{err}");
    assert!(err.to_string().contains("refs/heads/main"));
    let missing = parse_stdin(&format!(
        "refs/heads/main {} refs/heads/main {}\n",
        "1".repeat(64),
        "0".repeat(64)
    ))
    .unwrap();
    let err = commits_to_check(&repo, "origin", &missing).unwrap_err();
    assert!(matches!(err, RangeError::MissingObject { .. }), "{err}");
}
