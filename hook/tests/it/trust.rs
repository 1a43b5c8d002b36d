//! Trust is checked when a cached result is used, not when it was downloaded: a local copy of a
//! remote result is a hit only while a key trusted *now* signed it (a `ci` key under
//! `accept = "ci-only"`), on the stamp fast path as on a full read, and `cache verify` applies
//! the same rule; results this machine ran stay hits. And the local cache is private: never a
//! shared predictable path, never a directory someone else owns or can write.
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use cache_proto::signing::SecretKey;

use crate::faults::{CmdOut, Fixture, SHELL_SEGMENTS, checkdef_cmd, narinfos_in, write_key};

/// The fixture's signed entries (foo and bar, signed by the `ci` key) served by a `file://`
/// remote; returns its URL.
fn serve_seed(fx: &Fixture) -> String {
    let dir = fx.repo.tmp.path().join("remote");
    for (rel, data) in &fx.seed {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    format!("file://{}", dir.display())
}

/// `checkdef ARGS` (any subcommand) with the fixture's TMPDIR and only `env` set.
fn cmd(fx: &Fixture, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
    let mut c = checkdef_cmd(&fx.repo, &fx.repo.root, args);
    c.env("TMPDIR", &fx.tmpdir).envs(env.iter().copied());
    CmdOut::from_output(c.output().expect("run checkdef"))
}

/// `checkdef plan --json` status of every segment, sorted by name.
fn plan_statuses(fx: &Fixture, env: &[(&str, &str)]) -> (Vec<(String, String)>, String) {
    let out = cmd(fx, &["plan", "--json"], env);
    out.expect_code(0);
    let mut v: Vec<(String, String)> = out.json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    (v, out.stderr)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn remove_stamps(fx: &Fixture) {
    let _ = std::fs::remove_dir_all(fx.repo.cache.join("checkdef-stamps"));
}

#[test]
fn a_local_copy_of_a_remote_result_counts_only_while_its_signer_is_trusted() {
    let fx = Fixture::new();
    let remote = serve_seed(&fx);
    let ci = fx.ci_public();
    let trusted = [("CHECKDEF_TRUSTED_PUBLIC_KEYS", ci.as_str())];
    let untrusted = [("CHECKDEF_TRUSTED_PUBLIC_KEYS", "")];

    let r = cmd(
        &fx,
        &["run", "--json"],
        &[("CHECKDEF_REMOTE", &remote), trusted[0]],
    );
    r.expect_code(0);
    assert_eq!((r.source("foo"), r.source("bar")), ("remote", "remote"));
    // The copy is a local hit that still says who signed it.
    let r = cmd(&fx, &["run", "--json"], &trusted);
    r.expect_code(0);
    assert_eq!((r.source("foo"), r.source("bar")), ("local", "local"));
    assert_eq!(
        r.seg("foo")["signed_by"],
        "ci.example.org-1",
        "{}",
        r.stdout
    );

    // The key is no longer trusted: both copies are misses, from their stamps (the fast path)…
    let (s, stderr) = plan_statuses(&fx, &untrusted);
    assert_eq!(s, pairs(&[("bar", "miss"), ("foo", "miss")]), "{stderr}");
    assert!(
        stderr.contains("not signed by a key trusted now"),
        "{stderr}"
    );
    // … and from a full read.
    remove_stamps(&fx);
    let (s, stderr) = plan_statuses(&fx, &untrusted);
    assert_eq!(s, pairs(&[("bar", "miss"), ("foo", "miss")]), "{stderr}");
    // Trusted again: hits again (the copies were kept).
    let (s, stderr) = plan_statuses(&fx, &trusted);
    assert_eq!(
        s,
        pairs(&[("bar", "hit-local"), ("foo", "hit-local")]),
        "{stderr}"
    );
    let v = cmd(&fx, &["cache", "verify"], &trusted);
    v.expect_code(0);
    assert!(v.stderr.contains("2 valid entries, 0 bad"), "{}", v.stderr);

    // `cache verify` applies the same rule: without the key the copies go.
    let v = cmd(&fx, &["cache", "verify"], &untrusted);
    v.expect_code(0);
    assert!(v.stderr.contains("2 bad entries removed"), "{}", v.stderr);
    assert!(
        v.stderr.contains("not signed by a key trusted now"),
        "{}",
        v.stderr
    );
    assert!(narinfos_in(&fx.repo.cache).is_empty());

    // An untrusted copy makes the check run, and this machine's own pass replaces it: the next
    // run is a local hit, and `cache verify` keeps what this machine ran.
    let r = cmd(
        &fx,
        &["run", "--json"],
        &[("CHECKDEF_REMOTE", &remote), trusted[0]],
    );
    assert_eq!(r.source("foo"), "remote");
    let r = cmd(&fx, &["run", "--json"], &untrusted);
    r.expect_code(0);
    assert_eq!(
        (r.source("foo"), r.source("bar")),
        ("run", "run"),
        "{}",
        r.stderr
    );
    let r = cmd(&fx, &["run", "--json"], &untrusted);
    r.expect_code(0);
    assert_eq!(
        (r.source("foo"), r.source("bar")),
        ("local", "local"),
        "{}",
        r.stderr
    );
    assert!(r.seg("foo")["signed_by"].is_null());
    let v = cmd(&fx, &["cache", "verify"], &untrusted);
    assert!(v.stderr.contains("2 valid entries, 0 bad"), "{}", v.stderr);
}

#[test]
fn ci_only_ignores_a_local_copy_signed_by_a_developer_but_keeps_what_this_machine_ran() {
    let fx = Fixture::new();
    let dev = SecretKey::generate("dev-alice-1").unwrap();
    let dev_file = fx.repo.tmp.path().join("keys/dev.secret");
    write_key(&dev_file, &dev);
    let remote = format!("file://{}", fx.repo.tmp.path().join("remote").display());
    let config = |accept: &str| {
        format!(
            "{SHELL_SEGMENTS}\n[cache]\nremote = \"{remote}\"\ntimeout-secs = 2\naccept = \"{accept}\"\ntrusted-public-keys = [\n  {{ key = \"{}\", label = \"ci\" }},\n  \"{}\",\n]\n",
            fx.ci.to_public(),
            dev.to_public()
        )
    };
    let dev_s = dev_file.to_str().unwrap();
    fx.repo.write("checkdef.toml", &config("trusted"));
    // Alice's machine runs foo and pushes it, signed with her key.
    let r = cmd(
        &fx,
        &["run", "--json", "-s", "foo"],
        &[("CHECKDEF_SECRET_KEY_FILE", dev_s)],
    );
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run");
    // Another machine copies it while Alice's key counts.
    fx.reset_local();
    let r = cmd(&fx, &["run", "--json", "-s", "foo"], &[]);
    assert_eq!(r.source("foo"), "remote", "{}", r.stderr);
    assert_eq!(r.seg("foo")["signed_by"], "dev-alice-1");
    let r = cmd(&fx, &["run", "--json", "-s", "foo"], &[]);
    assert_eq!(r.source("foo"), "local", "{}", r.stderr);

    // Under ci-only the local copy is worth nothing, from its stamp as from a full read.
    fx.repo.write("checkdef.toml", &config("ci-only"));
    let off = [("CHECKDEF_REMOTE", "")];
    let (s, stderr) = plan_statuses(&fx, &off);
    assert_eq!(s, pairs(&[("bar", "miss"), ("foo", "miss")]), "{stderr}");
    assert!(stderr.contains("accept = \"ci-only\""), "{stderr}");
    remove_stamps(&fx);
    let (s, stderr) = plan_statuses(&fx, &off);
    assert_eq!(s, pairs(&[("bar", "miss"), ("foo", "miss")]), "{stderr}");

    // What this machine runs stays a hit under ci-only, also when it signs with a developer
    // key (a narinfo signed like a teammate's copy), and also without its stamp.
    let r = cmd(
        &fx,
        &["run", "--json", "-s", "foo"],
        &[off[0], ("CHECKDEF_SECRET_KEY_FILE", dev_s)],
    );
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run", "{}", r.stderr);
    for _ in 0..2 {
        let r = cmd(&fx, &["run", "--json", "-s", "foo"], &off);
        r.expect_code(0);
        assert_eq!(r.source("foo"), "local", "{}", r.stderr);
        remove_stamps(&fx);
    }
    let v = cmd(&fx, &["cache", "verify"], &off);
    assert!(v.stderr.contains("1 valid entries, 0 bad"), "{}", v.stderr);
}

// ---------------------------------------------------------------------------------------------
// A private local cache.

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `nobody`'s uid and gid from /etc/passwd.
fn nobody() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("nobody:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// `checkdef ARGS` with the local cache at `dir`.
fn with_cache(fx: &Fixture, dir: &Path, args: &[&str]) -> CmdOut {
    cmd(fx, args, &[("CHECKDEF_CACHE_DIR", dir.to_str().unwrap())])
}

fn assert_refused(out: &CmdOut, dir: &Path, fragment: &str) {
    out.expect_code(2);
    assert!(
        out.stderr.contains(&dir.display().to_string()) && out.stderr.contains(fragment),
        "expected {fragment:?} about {} in:\n{}",
        dir.display(),
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(
        std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "checkdef wrote into a refused cache: {:?}",
        crate::faults::tree(dir)
    );
}

#[test]
fn without_a_home_there_is_no_shared_fallback_cache() {
    let fx = Fixture::new();
    let shared = Path::new("/tmp/.cache/checkdef");
    let existed = shared.exists();
    for args in [&["run", "--json"][..], &["plan"], &["cache", "verify"]] {
        let mut c = checkdef_cmd(&fx.repo, &fx.repo.root, args);
        c.env("TMPDIR", &fx.tmpdir)
            .env_remove("HOME")
            .env_remove("CHECKDEF_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME");
        let out = CmdOut::from_output(c.output().unwrap());
        out.expect_code(2);
        assert!(out.stderr.contains("HOME"), "{}", out.stderr);
        assert!(out.stderr.contains("CHECKDEF_CACHE_DIR"), "{}", out.stderr);
        assert!(!out.stderr.contains("/tmp/.cache"), "{}", out.stderr);
    }
    if !existed {
        assert!(!shared.exists(), "checkdef created {}", shared.display());
    }
    // `status` says so instead of failing.
    let mut c = checkdef_cmd(&fx.repo, &fx.repo.root, &["status"]);
    c.env_remove("HOME").env_remove("CHECKDEF_CACHE_DIR");
    let out = CmdOut::from_output(c.output().unwrap());
    out.expect_code(0);
    assert!(out.stderr.contains("local cache   none"), "{}", out.stderr);
}

#[test]
fn a_cache_directory_others_can_write_or_own_is_refused() {
    let fx = Fixture::new();
    let base = fx.repo.tmp.path();

    // Created by checkdef: private.
    let fresh = base.join("fresh/cache");
    with_cache(&fx, &fresh, &["run", "--json"]).expect_code(0);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");

    // Writable by others or by the group: refused, nothing written, for every command that
    // uses the cache; `status` reports it.
    for m in [0o777, 0o770, 0o733] {
        let dir = base.join(format!("shared-{m:o}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
        for args in [
            &["run", "--json"][..],
            &["plan"],
            &["cache", "verify"],
            &["cache", "gc", "--max-size", "1G"],
        ] {
            assert_refused(&with_cache(&fx, &dir, args), &dir, "writable by");
        }
        let out = with_cache(&fx, &dir, &["status"]);
        out.expect_code(0);
        assert!(out.stderr.contains("REFUSED"), "{}", out.stderr);
    }
    // Sticky /tmp-style directories are not private either.
    let sticky = base.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    assert_refused(
        &with_cache(&fx, &sticky, &["run", "--json"]),
        &sticky,
        "writable by",
    );

    // Owned by someone else (as root in CI: a directory chowned to nobody), also through a
    // symlink of our own.
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this test as root"
        );
        return;
    }
    let (uid, gid) = nobody().expect("a nobody user in /etc/passwd");
    let theirs = base.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [&["run", "--json"][..], &["plan"], &["cache", "verify"]] {
        assert_refused(&with_cache(&fx, &theirs, args), &theirs, "owned by");
    }
    let link = base.join("link");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    let out = with_cache(&fx, &link, &["run", "--json"]);
    out.expect_code(2);
    assert!(out.stderr.contains("owned by"), "{}", out.stderr);
}

/// `cache verify` judges copies by the configuration the command line names: `--config`
/// (it used to read `<root>/checkdef.toml` whatever `--config` said).
#[test]
fn cache_verify_honours_config() {
    let fx = Fixture::new();
    let remote = serve_seed(&fx);
    let ci = fx.ci_public();
    let r = cmd(
        &fx,
        &["run", "--json"],
        &[
            ("CHECKDEF_REMOTE", &remote),
            ("CHECKDEF_TRUSTED_PUBLIC_KEYS", ci.as_str()),
        ],
    );
    r.expect_code(0);
    assert_eq!((r.source("foo"), r.source("bar")), ("remote", "remote"));
    // checkdef.toml trusts no key; the file --config names trusts the ci key.
    let alt = fx.repo.tmp.path().join("alt.toml");
    std::fs::write(
        &alt,
        format!("{SHELL_SEGMENTS}\n[cache]\ntrusted-public-keys = [\"{ci}\"]\n"),
    )
    .unwrap();
    let untrusted = [("CHECKDEF_TRUSTED_PUBLIC_KEYS", "")];
    let v = cmd(
        &fx,
        &["--config", alt.to_str().unwrap(), "cache", "verify"],
        &untrusted,
    );
    v.expect_code(0);
    assert!(v.stderr.contains("2 valid entries, 0 bad"), "{}", v.stderr);
    // A --config that names no file is an error, not an empty list of trusted keys.
    let missing = fx.repo.tmp.path().join("missing.toml");
    let v = cmd(
        &fx,
        &["--config", missing.to_str().unwrap(), "cache", "verify"],
        &untrusted,
    );
    v.expect_code(2);
    assert_eq!(narinfos_in(&fx.repo.cache).len(), 2, "{}", v.stderr);
}
