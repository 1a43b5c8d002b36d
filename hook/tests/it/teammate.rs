//! Sharing results through a real HTTP binary cache (nginx with PUT): signed pushes, remote hits
//! on another machine, untrusted or tampered entries, outages, and interop with real Nix.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{CmdOut, TestRepo, narinfos_in, shell_layout};

/// A shared cache on nginx, a signing key and a repository with the fast shell layout.
struct Team {
    repo: TestRepo,
    nginx: testkit::Nginx,
    secret: PathBuf,
    public: String,
}

impl Team {
    fn new(config: Option<&str>) -> Option<Team> {
        let repo = TestRepo::new();
        let nginx = testkit::Nginx::start(&repo.tmp.path().join("served"), None)?;
        shell_layout(&repo);
        if let Some(c) = config {
            repo.write("checkdef.toml", c);
        }
        repo.commit("init");
        let (secret, public) = keygen(&repo, "ci.example.org-1");
        Some(Team {
            repo,
            nginx,
            secret,
            public,
        })
    }

    /// `checkdef run --json ARGS` as the machine that owns the secret key (cache dir A).
    fn run_signed(&self, args: &[&str]) -> CmdOut {
        let url = self.nginx.url();
        let secret = self.secret.to_str().unwrap();
        self.repo.run_json(
            args,
            &[
                ("CHECKDEF_REMOTE", url.as_str()),
                ("CHECKDEF_SECRET_KEY_FILE", secret),
            ],
        )
    }

    /// `checkdef run --json ARGS` as a teammate: cache dir `cache`, trusting `trusted`.
    fn run_teammate(&self, cache: &Path, trusted: &str, args: &[&str]) -> CmdOut {
        let url = self.nginx.url();
        self.repo.run_json(
            args,
            &[
                ("CHECKDEF_REMOTE", url.as_str()),
                ("CHECKDEF_TRUSTED_PUBLIC_KEYS", trusted),
                ("CHECKDEF_CACHE_DIR", cache.to_str().unwrap()),
            ],
        )
    }

    fn fresh_cache(&self, name: &str) -> PathBuf {
        let p = self.repo.tmp.path().join(name);
        std::fs::create_dir(&p).unwrap();
        p
    }

    fn served_narinfos(&self) -> Vec<PathBuf> {
        narinfos_in(self.nginx.root())
    }

    fn served_nars(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.nginx.root().join("nar"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// `checkdef keygen NAME --out <tmp>/NAME.secret`: (secret key file, public key).
fn keygen(repo: &TestRepo, name: &str) -> (PathBuf, String) {
    let secret = repo.tmp.path().join(format!("{name}.secret"));
    let out = repo.checkdef_env(&["keygen", name, "--out", secret.to_str().unwrap()], &[]);
    out.expect_code(0);
    let public = out.stdout.trim().to_owned();
    assert!(public.starts_with(&format!("{name}:")), "{public}");
    (secret, public)
}

/// The hash part of a store path (`/nix/store/<32 chars>-name`).
fn hash_part(store_path: &str) -> &str {
    let base = store_path.strip_prefix("/nix/store/").unwrap();
    &base[..32]
}

/// nginx's access log once it has stopped growing (nginx writes a line after it has answered,
/// so the last request's line can trail the client's exit).
fn settled_log(nginx: &testkit::Nginx) -> Vec<String> {
    let mut last = nginx.access_log();
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let now = nginx.access_log();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Lines of `stderr` that are warnings mentioning `needle`.
fn warnings_about<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains("warning") && l.contains(needle))
        .collect()
}

#[test]
fn a_signed_push_is_a_remote_hit_for_a_teammate_and_then_local() {
    let Some(t) = Team::new(None) else { return };
    let a = t.run_signed(&[]);
    a.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(a.source(s), "run");
        assert_eq!(a.seg(s)["signed_by"], "ci.example.org-1", "{s}");
    }
    let served = t.served_narinfos();
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(t.nginx.root().join("nix-cache-info").is_file());
    let puts = settled_log(&t.nginx)
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains(".narinfo"))
        .count();
    assert_eq!(puts, 2, "{:?}", t.nginx.access_log());

    let b = t.fresh_cache("cache-b");
    let r = t.run_teammate(&b, &t.public, &[]);
    r.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(r.source(s), "remote", "{s}");
        assert_eq!(r.status(s), "passed");
        assert_eq!(r.seg(s)["signed_by"], "ci.example.org-1");
        assert_eq!(r.seg(s)["input_hash"], a.seg(s)["input_hash"]);
        assert!(r.seg(s)["original_duration_s"].is_number());
    }
    assert_eq!(r.json["summary"]["cached"], 2);
    // B's local copies are the remote's entries byte for byte, signatures included.
    let mut copied = crate::support::narinfos_in(&b);
    copied.sort();
    assert_eq!(copied.len(), 2);
    for ni in &copied {
        let name = ni.file_name().unwrap();
        let remote = std::fs::read(t.nginx.root().join(name)).unwrap();
        assert_eq!(std::fs::read(ni).unwrap(), remote, "{}", ni.display());
        let info =
            cache_proto::narinfo::NarInfo::parse(&String::from_utf8(remote).unwrap()).unwrap();
        assert_eq!(
            std::fs::read(b.join(&info.url)).unwrap(),
            std::fs::read(t.nginx.root().join(&info.url)).unwrap()
        );
        assert!(info.sigs.iter().any(|s| s.starts_with("ci.example.org-1:")));
    }

    let r = t.run_teammate(&b, &t.public, &[]);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "local");
    assert_eq!(r.source("bar"), "local");
    // The local hits cost no narinfo request: the last run only read its own cache.
    let gets_before = settled_log(&t.nginx)
        .iter()
        .filter(|l| l.starts_with("GET "))
        .count();
    let r = t.run_teammate(&b, &t.public, &[]);
    r.expect_code(0);
    let gets_after = settled_log(&t.nginx)
        .iter()
        .filter(|l| l.starts_with("GET "))
        .count();
    assert_eq!(gets_before, gets_after, "{:?}", t.nginx.access_log());

    // The human checklist names the source and the signer.
    let c = t.fresh_cache("cache-c");
    let url = t.nginx.url();
    let r = t.repo.checkdef_env(
        &["run"],
        &[
            ("CHECKDEF_REMOTE", url.as_str()),
            ("CHECKDEF_TRUSTED_PUBLIC_KEYS", t.public.as_str()),
            ("CHECKDEF_CACHE_DIR", c.to_str().unwrap()),
        ],
    );
    r.expect_code(0);
    for s in ["foo", "bar"] {
        assert!(
            r.stderr.lines().any(|l| l.contains(s)
                && l.contains("cached (remote)")
                && l.contains("signed by ci.example.org-1")),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_result_signed_by_an_untrusted_key_is_a_miss_with_a_warning() {
    let Some(t) = Team::new(None) else { return };
    t.run_signed(&[]).expect_code(0);
    let (_, other_public) = keygen(&t.repo, "someone-else-1");
    let b = t.fresh_cache("cache-b");
    let r = t.run_teammate(&b, &other_public, &[]);
    r.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(r.source(s), "run", "{s}");
        assert_eq!(r.status(s), "passed");
        assert_eq!(r.seg(s)["signed_by"], serde_json::Value::Null);
        let w = warnings_about(&r.stderr, &format!("for {s} "));
        assert_eq!(w.len(), 1, "one warning line for {s}:\n{}", r.stderr);
        assert_eq!(r.seg(s)["warnings"].as_array().unwrap().len(), 1);
    }
    // No key at all: the same.
    let c = t.fresh_cache("cache-c");
    let r = t.run_teammate(&c, "", &[]);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run");
    assert_eq!(
        warnings_about(&r.stderr, "for foo ").len(),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn a_nar_changed_on_the_server_is_a_miss_with_a_warning() {
    let Some(t) = Team::new(None) else { return };
    t.run_signed(&[]).expect_code(0);
    let nars = t.served_nars();
    assert_eq!(nars.len(), 2, "{nars:?}");
    for nar in &nars {
        let mut bytes = std::fs::read(nar).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(nar, bytes).unwrap();
    }
    let b = t.fresh_cache("cache-b");
    let r = t.run_teammate(&b, &t.public, &[]);
    r.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(r.source(s), "run", "{s}");
        assert_eq!(r.status(s), "passed");
        assert_eq!(
            warnings_about(&r.stderr, &format!("for {s} ")).len(),
            1,
            "{}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("mismatch"), "{}", r.stderr);
    // What B stored is its own run, not the tampered download.
    let r = t.run_teammate(&b, &t.public, &[]);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "local");
    assert!(r.seg("foo")["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn a_deleted_nar_is_a_miss_with_a_warning() {
    let Some(t) = Team::new(None) else { return };
    t.run_signed(&[]).expect_code(0);
    for nar in t.served_nars() {
        std::fs::remove_file(nar).unwrap();
    }
    let b = t.fresh_cache("cache-b");
    let r = t.run_teammate(&b, &t.public, &[]);
    r.expect_code(0);
    for s in ["foo", "bar"] {
        assert_eq!(r.source(s), "run", "{s}");
        assert_eq!(r.status(s), "passed");
        assert_eq!(
            warnings_about(&r.stderr, &format!("for {s} ")).len(),
            1,
            "{}",
            r.stderr
        );
    }
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

const ONE_FAILS: &str = r#"version = 1

[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "grep -qx ok src/foo/value"

[[segment]]
name = "bar"
include = ["src/bar/**"]
command = "echo bar is broken; exit 1"
"#;

#[test]
fn an_unreachable_remote_costs_a_warning_not_the_verdict() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    let (secret, public) = keygen(&repo, "k-1");
    let url = format!("http://127.0.0.1:{}", closed_port());
    let env = [
        ("CHECKDEF_REMOTE", url.as_str()),
        ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
        ("CHECKDEF_TRUSTED_PUBLIC_KEYS", public.as_str()),
    ];
    let started = Instant::now();
    let r = repo.run_json(&[], &env);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run");
    assert_eq!(r.source("bar"), "run");
    let down: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("warning") && l.contains("unavailable"))
        .collect();
    assert_eq!(down.len(), 1, "one outage warning:\n{}", r.stderr);
    // The results were still stored locally.
    let r = repo.run_json(&[], &env);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "local");

    // With a failing check, the exit code is the tests' verdict.
    repo.write("checkdef.toml", ONE_FAILS);
    let started = Instant::now();
    let r = repo.run_json(&[], &env);
    assert!(started.elapsed() < Duration::from_secs(20));
    r.expect_code(1);
    assert_eq!(r.status("bar"), "failed");
    assert_eq!(r.status("foo"), "passed");
}

#[test]
fn a_stalled_remote_is_bounded_by_the_timeout() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.write(
        "checkdef.toml",
        &format!(
            "{}\n[cache]\ntimeout-secs = 2\n",
            crate::support::SHELL_CONFIG
        ),
    );
    repo.commit("init");
    let (secret, public) = keygen(&repo, "k-1");
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let r = repo.run_json(
        &[],
        &[
            ("CHECKDEF_REMOTE", url.as_str()),
            ("CHECKDEF_SECRET_KEY_FILE", secret.to_str().unwrap()),
            ("CHECKDEF_TRUSTED_PUBLIC_KEYS", public.as_str()),
        ],
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}\n{}",
        r.stderr
    );
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run");
    assert_eq!(r.source("bar"), "run");
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains(&url)),
        "{}",
        r.stderr
    );
}

#[test]
fn a_failing_segment_is_never_pushed() {
    let Some(t) = Team::new(Some(ONE_FAILS)) else {
        return;
    };
    let r = t.run_signed(&[]);
    r.expect_code(1);
    let served = t.served_narinfos();
    assert_eq!(served.len(), 1, "{served:?}");
    let bar = hash_part(r.seg("bar")["store_path"].as_str().unwrap()).to_owned();
    let foo = hash_part(r.seg("foo")["store_path"].as_str().unwrap()).to_owned();
    assert!(served[0].ends_with(format!("{foo}.narinfo")));
    assert!(
        !settled_log(&t.nginx)
            .iter()
            .any(|l| l.starts_with("PUT") && l.contains(&bar))
    );
    assert!(
        t.repo
            .cached_narinfos()
            .iter()
            .all(|p| !p.to_string_lossy().contains(&bar))
    );
}

#[test]
fn real_nix_copies_a_pushed_result_with_signatures_required() {
    let Some(t) = Team::new(None) else { return };
    let a = t.run_signed(&[]);
    a.expect_code(0);
    for s in ["foo", "bar"] {
        let Some(nix) = testkit::Nix::new() else {
            return;
        };
        let store_path = a.seg(s)["store_path"].as_str().unwrap();
        let out = nix
            .cmd("")
            .args(["copy", "--from", &t.nginx.url(), "--to"])
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
        let dir = nix.store_root().join(store_path.trim_start_matches('/'));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
        assert_eq!(record["status"], "passed");
        assert_eq!(record["segment"], s);
        assert_eq!(record["input_hash"], a.seg(s)["input_hash"]);
        assert_eq!(record["signer"], "ci.example.org-1");
        assert!(dir.join("manifest").is_file());
        assert!(
            String::from_utf8_lossy(&std::fs::read(dir.join("log")).unwrap())
                .contains(&format!("checking {s}"))
        );

        // The same copy with another trusted key is refused by Nix.
        let other = testkit::Nix::new().unwrap();
        let (_, wrong) = keygen(&t.repo, &format!("wrong-{s}-1"));
        let out = other
            .cmd("")
            .args(["copy", "--from", &t.nginx.url(), "--to"])
            .arg(other.store_root())
            .args(["--option", "require-sigs", "true"])
            .args(["--option", "trusted-public-keys", &wrong])
            .arg(store_path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "nix accepted an untrusted signature");
    }
}
