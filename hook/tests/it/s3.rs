//! The team cache in an S3 bucket: a real S3 server (`s3s-fs`, which checks SigV4 signatures
//! and honours `If-None-Match: *`) on 127.0.0.1, reached through Nix's `s3://` store URL.
//!
//! Covered: a push then a teammate's hits from an empty local cache (below a key prefix, NAR
//! before narinfo), real Nix copying the bucket's objects with signatures required, a wrong
//! secret, no credentials, a missing bucket, concurrent writers, and faults injected by a proxy
//! in front of the server (error statuses, resets, stalls) on lookups and on pushes. Each
//! failure is a miss or a skipped push with one warning, the exit code is the tests', and the
//! run ends within [`TIME_BOUND`]. Outside CI these tests skip when `s3s-fs` is missing; under
//! `CI` they fail.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::{FaultProxy, ProxyFault, S3Server};

use crate::support::{CmdOut, SHELL_CONFIG, TestRepo, narinfos_in, shell_layout};

/// Generous bound on one `checkdef run` against a failing bucket with `timeout-secs = 2`.
const TIME_BOUND: Duration = Duration::from_secs(15);

const ACCESS: &str = "checkdef-test";
const SECRET: &str = "s3cret-Key-For-Tests-Only";

/// A repository with the two fast shell segments, a signing key and an S3 server with the
/// bucket `team`.
struct Team {
    repo: TestRepo,
    s3: S3Server,
    secret: PathBuf,
    public: String,
}

impl Team {
    fn new() -> Option<Team> {
        let s3 = S3Server::start(ACCESS, SECRET, &["team"])?;
        let repo = TestRepo::new();
        shell_layout(&repo);
        repo.write(
            "checkdef.toml",
            &format!("{SHELL_CONFIG}\n[cache]\ntimeout-secs = 2\n"),
        );
        repo.commit("init");
        let secret = repo.tmp.path().join("ci.secret");
        let out = repo.checkdef_env(
            &[
                "keygen",
                "ci.example.org-1",
                "--out",
                secret.to_str().unwrap(),
            ],
            &[],
        );
        out.expect_code(0);
        let public = out.stdout.trim().to_owned();
        Some(Team {
            repo,
            s3,
            secret,
            public,
        })
    }

    /// `checkdef run --json` against `remote` with the local cache `cache`, these AWS
    /// variables (nothing inherited), trusting the team key, and signing when `sign`.
    fn run(&self, remote: &str, cache: &Path, aws: &[(&str, &str)], sign: bool) -> CmdOut {
        let mut cmd = self
            .repo
            .checkdef_cmd_in(&self.repo.root, &["run", "--json"]);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                cmd.env_remove(k);
            }
        }
        cmd.env("CHECKDEF_REMOTE", remote)
            .env("CHECKDEF_CACHE_DIR", cache)
            .env("CHECKDEF_TRUSTED_PUBLIC_KEYS", &self.public)
            .envs(aws.iter().copied());
        if sign {
            cmd.env("CHECKDEF_SECRET_KEY_FILE", &self.secret);
        }
        CmdOut::from_output(cmd.output().expect("run checkdef"))
    }

    /// A fresh, empty local cache directory.
    fn fresh_cache(&self, name: &str) -> PathBuf {
        let dir = self.repo.tmp.path().join("caches").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Push both results to `team` (signed) from a fresh local cache.
    fn push(&self, remote: &str) -> CmdOut {
        let cache = self.fresh_cache("pusher");
        let r = self.run(remote, &cache, &good_keys(), true);
        r.expect_code(0);
        assert!(warnings(&r).is_empty(), "{}", r.stderr);
        r
    }
}

fn good_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]
}

fn warnings(r: &CmdOut) -> Vec<&str> {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

/// Both segments ran (misses), passed, exit 0, exactly one warning containing `needle`.
#[track_caller]
fn one_warning_and_local_runs(r: &CmdOut, needle: &str, ctx: &str) {
    let ctx = format!("{ctx}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, 0, "{ctx}");
    for s in ["foo", "bar"] {
        assert_eq!(r.source(s), "run", "{s}: {ctx}");
        assert_eq!(r.status(s), "passed", "{s}: {ctx}");
    }
    let w = warnings(r);
    assert_eq!(w.len(), 1, "exactly one warning; {ctx}");
    assert!(
        w[0].contains(needle),
        "warning should mention {needle:?}; {ctx}"
    );
    // `-- --nocapture` shows what a user sees in each case.
    eprintln!("| {} | {} |", ctx.lines().next().unwrap_or(""), w[0]);
    for secret in [SECRET, "wrong-secret"] {
        assert!(!r.stderr.contains(secret), "a secret was printed; {ctx}");
    }
}

#[test]
fn s3_push_then_a_teammate_hits_from_an_empty_cache() {
    let Some(t) = Team::new() else { return };
    // Through a (faultless) proxy, to see the order of the requests.
    let proxy = FaultProxy::start(t.s3.port());
    let remote = format!(
        "s3://team/checkdef/v1?endpoint={}&scheme=http&region=us-east-1",
        proxy.endpoint()
    );
    let a = t.push(&remote);
    let keys = t.s3.keys("team");
    let narinfos: Vec<&String> = keys.iter().filter(|k| k.ends_with(".narinfo")).collect();
    let nars: Vec<&String> = keys.iter().filter(|k| k.ends_with(".nar.zst")).collect();
    assert_eq!(narinfos.len(), 2, "{keys:?}");
    assert_eq!(nars.len(), 2, "{keys:?}");
    assert!(
        keys.contains(&"checkdef/v1/nix-cache-info".to_owned()),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("checkdef/v1/") && !k.contains("//")),
        "the same layout as an HTTP cache, below the prefix: {keys:?}"
    );
    // Every narinfo is written after its NAR.
    let log = proxy.log();
    for s in ["foo", "bar"] {
        let store_path = a.seg(s)["store_path"].as_str().unwrap();
        let hash = &store_path["/nix/store/".len()..][..32];
        let ni = log
            .iter()
            .position(|l| l.starts_with("PUT") && l.contains(&format!("{hash}.narinfo")))
            .unwrap_or_else(|| panic!("no PUT of {hash}.narinfo in {log:?}"));
        let text = std::fs::read_to_string(
            t.s3.bucket_dir("team")
                .join(format!("checkdef/v1/{hash}.narinfo")),
        )
        .unwrap();
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
            .to_owned();
        let nar = log
            .iter()
            .position(|l| l.starts_with("PUT") && l.ends_with(&url))
            .unwrap_or_else(|| panic!("no PUT of {url} in {log:?}"));
        assert!(nar < ni, "NAR first, narinfo last: {log:?}");
    }

    // A teammate: another, empty local cache, and a key that may read.
    let cache = t.fresh_cache("teammate");
    let started = Instant::now();
    let b = t.run(&remote, &cache, &good_keys(), false);
    let took = started.elapsed();
    b.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(b.source(s), "remote", "{}", b.stderr);
        assert_eq!(b.seg(s)["signed_by"], "ci.example.org-1", "{}", b.stderr);
    }
    assert!(warnings(&b).is_empty(), "{}", b.stderr);
    assert!(took < TIME_BOUND);
    // The hits were copied locally: the next run needs no bucket at all.
    assert_eq!(narinfos_in(&cache).len(), 2);
    let c = t.run(
        "s3://team?endpoint=127.0.0.1:1&scheme=http",
        &cache,
        &good_keys(),
        false,
    );
    c.expect_code(0);
    assert_eq!(c.source("foo"), "local", "{}", c.stderr);

    // Pushing again writes nothing: the narinfos exist.
    proxy.clear();
    let again = t.fresh_cache("pusher-again");
    let r = t.run(&remote, &again, &good_keys(), true);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "remote");
    assert!(
        !proxy.log().iter().any(|l| l.starts_with("PUT")),
        "{:?}",
        proxy.log()
    );
}

#[test]
fn s3_objects_copied_out_of_the_bucket_are_a_cache_real_nix_accepts() {
    let Some(t) = Team::new() else { return };
    let remote = t.s3.url("team");
    let a = t.push(&remote);
    // Download every object with signed GETs (what any S3 client would do) into a directory.
    let mut cfg = cache_proto::S3Config::new(remote.clone());
    cfg.credentials = Some(cache_proto::store::Credentials {
        access_key_id: ACCESS.into(),
        secret_access_key: SECRET.into(),
        session_token: None,
    });
    let store = cache_proto::S3Store::new(cfg).unwrap();
    let dir = t.repo.tmp.path().join("downloaded");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = t.s3.keys("team");
    assert_eq!(keys.len(), 5, "{keys:?}");
    for key in &keys {
        let body = rt
            .block_on(store.get_object(key, 1 << 30))
            .unwrap()
            .unwrap_or_else(|| panic!("{key} listed but not served"));
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    for s in ["foo", "bar"] {
        let Some(nix) = testkit::Nix::new() else {
            return;
        };
        let store_path = a.seg(s)["store_path"].as_str().unwrap();
        let out = nix
            .cmd("")
            .args(["copy", "--from"])
            .arg(format!("file://{}", dir.display()))
            .arg("--to")
            .arg(nix.store_root())
            .args(["--option", "require-sigs", "true"])
            .args(["--option", "trusted-public-keys", &t.public])
            .arg(store_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nix copy {store_path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let copied = nix.store_root().join(store_path.trim_start_matches('/'));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(copied.join("result.json")).unwrap()).unwrap();
        assert_eq!(record["status"], "passed");
        assert_eq!(record["segment"], s);
        assert_eq!(record["signer"], "ci.example.org-1");
    }
}

#[test]
fn s3_bad_credentials_and_a_missing_bucket_are_one_warning_each() {
    let Some(t) = Team::new() else { return };
    let remote = t.s3.url("team");
    t.push(&remote);
    let wrong = [
        ("AWS_ACCESS_KEY_ID", ACCESS),
        ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
    ];
    let unknown = [
        ("AWS_ACCESS_KEY_ID", "nobody"),
        ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
    ];
    let creds_file = t.repo.tmp.path().join("aws-credentials");
    std::fs::write(
        &creds_file,
        "[other]\naws_access_key_id = x\naws_secret_access_key = y\n",
    )
    .unwrap();
    let file = creds_file.to_str().unwrap();
    let missing = t.s3.url("no-such-bucket");
    // (name, url, AWS variables, what the warning says)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let mut cases: Vec<Case> = vec![
        (
            "wrong secret",
            remote.clone(),
            wrong.to_vec(),
            "SignatureDoesNotMatch",
        ),
        (
            "unknown access key",
            remote.clone(),
            unknown.to_vec(),
            "403",
        ),
        ("no credentials at all", remote.clone(), vec![], "403"),
        (
            "a profile the credentials file lacks",
            format!("{remote}&profile=ci"),
            vec![("AWS_SHARED_CREDENTIALS_FILE", file)],
            "has no profile `ci`",
        ),
        (
            "missing bucket",
            missing.clone(),
            good_keys(),
            "bucket no-such-bucket does not exist",
        ),
    ];
    // The shared credentials file: the right profile works (no warning, hits).
    std::fs::write(
        &creds_file,
        format!("[ci]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    let cache = t.fresh_cache("profile");
    let r = t.run(
        &format!("{remote}&profile=ci"),
        &cache,
        &[("AWS_SHARED_CREDENTIALS_FILE", file)],
        false,
    );
    r.expect_code(0);
    assert_eq!(r.source("foo"), "remote", "{}", r.stderr);
    assert!(warnings(&r).is_empty(), "{}", r.stderr);
    std::fs::write(
        &creds_file,
        "[other]\naws_access_key_id = x\naws_secret_access_key = y\n",
    )
    .unwrap();

    for (name, url, env, needle) in cases.drain(..) {
        for sign in [false, true] {
            let cache = t.fresh_cache("bad");
            let started = Instant::now();
            let r = t.run(&url, &cache, &env, sign);
            let ctx = format!("case `{name}` (signing: {sign})");
            one_warning_and_local_runs(&r, needle, &ctx);
            assert!(started.elapsed() < TIME_BOUND, "{ctx}");
            // Results are still stored locally.
            assert_eq!(narinfos_in(&cache).len(), 2, "{ctx}");
        }
    }
    // A push to a missing bucket must not create it (s3s-fs would on a PUT).
    assert!(!t.s3.bucket_dir("no-such-bucket").exists());
}

#[test]
fn s3_concurrent_writers_leave_one_consistent_entry_per_result() {
    let Some(t) = Team::new() else { return };
    let remote = t.s3.url("team");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let cache = t.fresh_cache(&format!("writer-{i}"));
            let mut cmd = t.repo.checkdef_cmd_in(&t.repo.root, &["run", "--json"]);
            for (k, _) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                    cmd.env_remove(k);
                }
            }
            cmd.env("CHECKDEF_REMOTE", &remote)
                .env("CHECKDEF_CACHE_DIR", &cache)
                .env("CHECKDEF_TRUSTED_PUBLIC_KEYS", &t.public)
                .env("CHECKDEF_SECRET_KEY_FILE", &t.secret)
                .envs(good_keys())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let r = CmdOut::from_output(child.wait_with_output().unwrap());
        r.expect_code(0);
        // A writer that lost a race got 412 for a narinfo (or found it): never a warning.
        assert!(warnings(&r).is_empty(), "{}", r.stderr);
    }
    let keys = t.s3.keys("team");
    let narinfos: Vec<&String> = keys.iter().filter(|k| k.ends_with(".narinfo")).collect();
    assert_eq!(narinfos.len(), 2, "{keys:?}");
    // Each narinfo points at a NAR that exists, and a teammate hits both.
    for ni in narinfos {
        let text = std::fs::read_to_string(t.s3.bucket_dir("team").join(ni)).unwrap();
        let url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
        assert!(keys.contains(&url.to_owned()), "{ni} -> {url}: {keys:?}");
    }
    let cache = t.fresh_cache("teammate");
    let r = t.run(&remote, &cache, &good_keys(), false);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "remote", "{}", r.stderr);
    assert_eq!(r.source("bar"), "remote", "{}", r.stderr);
}

#[test]
fn s3_faults_are_misses_or_skipped_pushes_within_the_budget() {
    let Some(t) = Team::new() else { return };
    let proxy = FaultProxy::start(t.s3.port());
    let via_proxy = |bucket: &str| {
        format!(
            "s3://{bucket}?endpoint={}&scheme=http&region=us-east-1",
            proxy.endpoint()
        )
    };
    t.push(&t.s3.url("team"));
    // Lookups of pushed results.
    let lookups = [
        (
            "every request answers 500",
            ProxyFault::Status(500),
            "unavailable",
        ),
        (
            "every request answers 503 SlowDown",
            ProxyFault::Status(503),
            "SlowDown",
        ),
        (
            "every connection is reset",
            ProxyFault::Reset,
            "unavailable",
        ),
        ("the server never answers", ProxyFault::Stall, "too slow"),
    ];
    for (name, fault, needle) in lookups {
        proxy.clear();
        proxy.set(None, fault);
        let cache = t.fresh_cache("lookup");
        let started = Instant::now();
        let r = t.run(&via_proxy("team"), &cache, &good_keys(), false);
        let took = started.elapsed();
        one_warning_and_local_runs(&r, needle, &format!("lookup: {name}; {:?}", proxy.log()));
        assert!(took < TIME_BOUND, "{name}: {took:?}");
    }
    // Pushes into a bucket that is a cache but has no entries yet: reads work, writes fail
    // (the first failing PUT is a NAR's).
    std::fs::create_dir_all(t.s3.bucket_dir("empty")).unwrap();
    std::fs::write(
        t.s3.bucket_dir("empty").join("nix-cache-info"),
        "StoreDir: /nix/store\n",
    )
    .unwrap();
    let pushes = [
        ("every PUT answers 500", ProxyFault::Status(500)),
        ("every PUT is reset", ProxyFault::Reset),
        ("every PUT stalls", ProxyFault::Stall),
    ];
    for (name, fault) in pushes {
        proxy.clear();
        proxy.set(Some("PUT"), fault);
        let cache = t.fresh_cache("push");
        let started = Instant::now();
        let r = t.run(&via_proxy("empty"), &cache, &good_keys(), true);
        let took = started.elapsed();
        one_warning_and_local_runs(&r, "could not push", &format!("push: {name}"));
        assert!(took < TIME_BOUND, "{name}: {took:?}");
        assert_eq!(narinfos_in(&cache).len(), 2, "{name}");
        // The first failed push stops the others: at most one result's PUTs were tried.
        assert!(
            !t.s3.keys("empty").iter().any(|k| k.ends_with(".narinfo")),
            "{name}: {:?}",
            t.s3.keys("empty")
        );
    }
}

#[test]
fn s3_status_probes_the_bucket_and_names_the_credentials_source_only() {
    let Some(t) = Team::new() else { return };
    let remote = t.s3.url("team");
    t.push(&remote);
    let status = |aws: &[(&str, &str)]| {
        let mut cmd = t.repo.checkdef_cmd_in(&t.repo.root, &["status"]);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                cmd.env_remove(k);
            }
        }
        cmd.env("CHECKDEF_REMOTE", &remote)
            .envs(aws.iter().copied());
        let r = CmdOut::from_output(cmd.output().unwrap());
        r.expect_code(0);
        assert!(!r.stderr.contains(SECRET), "{}", r.stderr);
        r.stderr
    };
    let out = status(&good_keys());
    assert!(
        out.contains("reachable (nix-cache-info: StoreDir /nix/store"),
        "{out}"
    );
    assert!(
        out.contains("credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment"),
        "{out}"
    );
    let out = status(&[
        ("AWS_ACCESS_KEY_ID", ACCESS),
        ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
    ]);
    assert!(
        out.contains("UNREACHABLE") && out.contains("SignatureDoesNotMatch"),
        "{out}"
    );
    assert!(!out.contains("wrong-secret"), "{out}");
    let out = status(&[("AWS_ACCESS_KEY_ID", ACCESS)]);
    assert!(
        out.contains("credentials: UNUSABLE (S3 credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        "{out}"
    );
}

#[test]
fn s3_cache_push_uploads_local_results_into_the_bucket() {
    let Some(t) = Team::new() else { return };
    let remote = t.s3.url("team");
    // Results made before there was a remote: local only.
    let local = t.fresh_cache("alice");
    let mut cmd = t.repo.checkdef_cmd_in(&t.repo.root, &["run", "--json"]);
    cmd.env("CHECKDEF_CACHE_DIR", &local);
    CmdOut::from_output(cmd.output().unwrap()).expect_code(0);
    let mut cmd = t.repo.checkdef_cmd_in(&t.repo.root, &["cache", "push"]);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
            cmd.env_remove(k);
        }
    }
    cmd.env("CHECKDEF_CACHE_DIR", &local)
        .env("CHECKDEF_REMOTE", &remote)
        .env("CHECKDEF_SECRET_KEY_FILE", &t.secret)
        .envs(good_keys());
    let push = CmdOut::from_output(cmd.output().unwrap());
    push.expect_code(0);
    assert!(
        push.stderr.contains("uploaded 2 results"),
        "{}",
        push.stderr
    );
    let keys = t.s3.keys("team");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".narinfo")).count(),
        2,
        "{keys:?}"
    );
    // A teammate hits both, signed by the key `cache push` signed with.
    let cache = t.fresh_cache("teammate");
    let r = t.run(&remote, &cache, &good_keys(), false);
    r.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(r.source(s), "remote", "{}", r.stderr);
        assert_eq!(r.seg(s)["signed_by"], "ci.example.org-1");
    }
}
