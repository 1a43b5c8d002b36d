//! Concurrency and crash safety of the caches: concurrent runs on one repository and cache,
//! concurrent identical pushes to one HTTP cache, writers killed at any point, tampered entries,
//! and least-recently-used eviction.
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime};

use cache_proto::narinfo::NarInfo;
use cache_proto::signing::SecretKey;

use crate::faults::{CmdOut, checkdef_cmd, narinfos_in, tree, write_key};
use crate::support::TestRepo;

/// `n` fast shell segments `s0`…: each sleeps a little (so two runs overlap) and passes.
fn many_segments(repo: &TestRepo, n: usize, sleep: &str) {
    let mut config = String::from("version = 1\n");
    for i in 0..n {
        repo.write(&format!("src/s{i}/value"), &format!("ok {i}\n"));
        config.push_str(&format!(
            "\n[[segment]]\nname = \"s{i}\"\ninclude = [\"src/s{i}/**\"]\ncommand = \"sleep {sleep}; echo s{i}; grep -q ok src/s{i}/value\"\n"
        ));
    }
    repo.write("checkdef.toml", &config);
    repo.commit("segments");
}

struct Env {
    repo: TestRepo,
    tmpdir: PathBuf,
}

impl Env {
    fn new(n: usize, sleep: &str) -> Env {
        let repo = TestRepo::new();
        many_segments(&repo, n, sleep);
        let tmpdir = repo.tmp.path().join("tmp");
        std::fs::create_dir_all(&tmpdir).unwrap();
        Env { repo, tmpdir }
    }

    fn cmd(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
        let mut cmd = checkdef_cmd(&self.repo, &self.repo.root, args);
        cmd.env("TMPDIR", &self.tmpdir).envs(env.iter().copied());
        cmd
    }

    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.cmd(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn checkdef")
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        CmdOut::from_output(self.cmd(args, env).output().expect("run checkdef"))
    }

    /// `checkdef cache verify` on a directory of pushed results, trusting `public` (copies of
    /// remote results count only with a trusted signature).
    fn verify_pushed(&self, dir: &Path, public: &str) -> CmdOut {
        let mut cmd = self.cmd(&["cache", "verify"], &[]);
        cmd.env("CHECKDEF_CACHE_DIR", dir)
            .env("CHECKDEF_TRUSTED_PUBLIC_KEYS", public);
        let out = CmdOut::from_output(cmd.output().unwrap());
        out.expect_code(0);
        out
    }

    /// `checkdef cache verify` on `cache` (the local cache directory by default).
    fn verify(&self, cache: Option<&Path>) -> CmdOut {
        let mut cmd = self.cmd(&["cache", "verify"], &[]);
        if let Some(c) = cache {
            cmd.env("CHECKDEF_CACHE_DIR", c);
        }
        let out = CmdOut::from_output(cmd.output().unwrap());
        out.expect_code(0);
        out
    }
}

/// The counts in `checkdef cache verify`'s summary: (valid, bad removed, strays removed).
fn verify_counts(out: &CmdOut) -> (usize, usize, usize) {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("valid entries"))
        .unwrap_or_else(|| panic!("no summary in {}", out.stderr));
    let num_before = |word: &str| -> usize {
        let i = line.find(word).unwrap();
        line[..i]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        num_before("valid entries"),
        num_before("bad entries"),
        num_before("stray files"),
    )
}

fn all_passed(out: &CmdOut, n: usize, sources: &[&str]) {
    out.expect_code(0);
    let segs = out.json["segments"].as_array().unwrap();
    assert_eq!(segs.len(), n);
    for s in segs {
        assert_eq!(s["status"], "passed", "{}", out.stderr);
        assert!(
            sources.contains(&s["source"].as_str().unwrap()),
            "{s}\n{}",
            out.stderr
        );
    }
}

#[test]
fn two_runs_at_once_share_the_cache_without_corrupting_it() {
    let n = 6;
    let env = Env::new(n, "0.1");
    let remote_dir = env.repo.tmp.path().join("remote");
    let remote = format!("file://{}", remote_dir.display());
    let key = SecretKey::generate("ci-1").unwrap();
    let key_file = env.repo.tmp.path().join("keys/ci.secret");
    write_key(&key_file, &key);
    let key_s = key_file.display().to_string();
    let vars = [
        ("CHECKDEF_REMOTE", remote.as_str()),
        ("CHECKDEF_SECRET_KEY_FILE", key_s.as_str()),
    ];
    for round in 0..3 {
        crate::faults::clear_dir(&env.repo.cache);
        let _ = std::fs::remove_dir_all(&remote_dir);
        let a = env.spawn(&["run", "--json", "--jobs", "3"], &vars);
        let b = env.spawn(&["run", "--json", "--jobs", "3"], &vars);
        let a = CmdOut::from_output(a.wait_with_output().unwrap());
        let b = CmdOut::from_output(b.wait_with_output().unwrap());
        for out in [&a, &b] {
            all_passed(out, n, &["run", "local"]);
            assert!(
                out.stderr.lines().all(|l| !l.starts_with("warning:")),
                "round {round}: {}",
                out.stderr
            );
        }
        assert_eq!(narinfos_in(&env.repo.cache).len(), n);
        assert_eq!(narinfos_in(&remote_dir).len(), n);
        assert!(tree(&env.tmpdir).is_empty(), "{:?}", tree(&env.tmpdir));
        let (valid, bad, _) = verify_counts(&env.verify(None));
        assert_eq!((valid, bad), (n, 0), "round {round}");
        let public = key.to_public().to_string();
        let (valid, bad, _) = verify_counts(&env.verify_pushed(&remote_dir, &public));
        assert_eq!((valid, bad), (n, 0), "round {round}");
    }
    let again = env.run(&["run", "--json"], &[]);
    all_passed(&again, n, &["local"]);
}

#[test]
fn identical_results_pushed_at_once_to_nginx_are_idempotent() {
    let env = Env::new(4, "0.1");
    let root = env.repo.tmp.path().join("nginx-root");
    let Some(nginx) = testkit::Nginx::start(&root, None) else {
        return;
    };
    let key = SecretKey::generate("ci-1").unwrap();
    let key_file = env.repo.tmp.path().join("keys/ci.secret");
    write_key(&key_file, &key);
    let key_s = key_file.display().to_string();
    let public = key.to_public().to_string();
    let url = nginx.url();
    let caches: Vec<PathBuf> = (0..3)
        .map(|i| env.repo.tmp.path().join(format!("cache-{i}")))
        .collect();
    let vars = |cache: &Path| -> Vec<(String, String)> {
        vec![
            ("CHECKDEF_REMOTE".into(), url.clone()),
            ("CHECKDEF_SECRET_KEY_FILE".into(), key_s.clone()),
            ("CHECKDEF_TRUSTED_PUBLIC_KEYS".into(), public.clone()),
            ("CHECKDEF_CACHE_DIR".into(), cache.display().to_string()),
        ]
    };
    // Two machines (separate local caches) run and push the same results at the same time.
    let spawn = |cache: &Path| {
        env.cmd(&["run", "--json"], &[])
            .envs(vars(cache))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&caches[0]);
    let b = spawn(&caches[1]);
    let a = CmdOut::from_output(a.wait_with_output().unwrap());
    let b = CmdOut::from_output(b.wait_with_output().unwrap());
    for out in [&a, &b] {
        all_passed(out, 4, &["run", "remote"]);
        assert!(!out.stderr.contains("could not push"), "{}", out.stderr);
    }
    assert_eq!(narinfos_in(&root).len(), 4);
    let (valid, bad, _) = verify_counts(&env.verify_pushed(&root, &public));
    assert_eq!((valid, bad), (4, 0));
    // Every narinfo points at a NAR that exists and is signed by the key.
    for p in narinfos_in(&root) {
        let info = NarInfo::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert!(root.join(&info.url).is_file(), "{}", info.url);
        assert!(info.verify(&[key.to_public()]).is_some());
    }
    // A third machine gets every result from the remote and uploads nothing.
    let puts_before = nginx
        .access_log()
        .iter()
        .filter(|l| l.starts_with("PUT"))
        .count();
    let c = CmdOut::from_output(
        env.cmd(&["run", "--json"], &[])
            .envs(vars(&caches[2]))
            .output()
            .unwrap(),
    );
    all_passed(&c, 4, &["remote"]);
    let puts_after = nginx
        .access_log()
        .iter()
        .filter(|l| l.starts_with("PUT"))
        .count();
    assert_eq!(puts_before, puts_after, "{:?}", nginx.access_log());
}

/// Set a file's modification time to `secs_ago` seconds in the past.
fn age(path: &Path, secs_ago: u64) {
    let f = std::fs::File::options().append(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .unwrap();
}

/// The narinfo of segment `name` in the local cache, and the path of its NAR.
fn entry_of(env: &Env, name: &str) -> (PathBuf, PathBuf) {
    let plan = env.repo.plan_json(&[]);
    let store_path = crate::support::segment_field(&plan, name, "store_path");
    let hash = store_path
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap()
        .to_owned();
    let ni = env.repo.cache.join(format!("{hash}.narinfo"));
    let info = NarInfo::parse(&std::fs::read_to_string(&ni).unwrap()).unwrap();
    (ni, env.repo.cache.join(info.url))
}

#[test]
fn killed_writers_never_leave_an_entry_that_reads_as_valid() {
    let n = 4;
    let env = Env::new(n, "0");
    // Real SIGKILLs at many points of a run (lookups, sandboxes, stores).
    for i in 0..12u64 {
        crate::faults::clear_dir(&env.repo.cache);
        let mut child = env.spawn(&["run", "--json", "--jobs", "2"], &[]);
        std::thread::sleep(Duration::from_millis(15 * i));
        let _ = child.kill();
        let _ = child.wait();
        let out = env.run(&["run", "--json"], &[]);
        all_passed(&out, n, &["run", "local"]);
        let (valid, bad, _) = verify_counts(&env.verify(None));
        assert_eq!((valid, bad), (n, 0), "after a kill at {} ms", 15 * i);
    }
    // A killed run's sandboxes are left in TMPDIR (it had no chance to clean up); they are
    // never read by anyone and hold only copies of inputs.

    // Simulated torn states: checked by every reader, and removed by `cache verify`.
    let (ni, nar) = entry_of(&env, "s0");
    std::fs::remove_file(&nar).unwrap();
    let out = env.run(&["run", "--json"], &[]);
    out.expect_code(0);
    assert_eq!(out.source("s0"), "run", "{}", out.stderr);
    let w: Vec<&str> = out.warnings();
    assert_eq!(w.len(), 1, "{}", out.stderr);
    assert!(
        w[0].contains("local cache entry for s0 ignored"),
        "{}",
        out.stderr
    );
    // The rerun's result replaced the broken entry.
    let out = env.run(&["run", "--json"], &[]);
    assert_eq!(out.source("s0"), "local", "{}", out.stderr);
    assert!(ni.exists());

    // A truncated NAR and a truncated narinfo. (Locate both first: any lookup, even `plan`'s,
    // unpublishes a broken entry it finds.)
    let (_, nar1) = entry_of(&env, "s1");
    let (ni2, _) = entry_of(&env, "s2");
    let data = std::fs::read(&nar1).unwrap();
    std::fs::write(&nar1, &data[..data.len() / 2]).unwrap();
    let text = std::fs::read_to_string(&ni2).unwrap();
    std::fs::write(&ni2, &text[..text.len() / 2]).unwrap();
    // Leftover temporary files of killed writers: an old one and a fresh one.
    let old_tmp = env.repo.cache.join(".x.narinfo.tmp-1-0-0000000000000000");
    let young_tmp = env
        .repo
        .cache
        .join("nar/.y.nar.zst.tmp-1-1-0000000000000000");
    std::fs::write(&old_tmp, "StorePath: garbage").unwrap();
    std::fs::write(&young_tmp, "garbage").unwrap();
    age(&old_tmp, 7200);
    let verify = env.verify(None);
    let (valid, bad, strays) = verify_counts(&verify);
    assert_eq!((valid, bad), (n - 2, 2), "{}", verify.stderr);
    // The old temporary file and the orphaned NAR of the torn narinfo are not valid entries;
    // the fresh temporary file may belong to a writer that is still running.
    assert!(!old_tmp.exists());
    assert!(young_tmp.exists());
    assert!(strays >= 1, "{}", verify.stderr);
    let out = env.run(&["run", "--json"], &[]);
    all_passed(&out, n, &["run", "local"]);
    assert_eq!(out.source("s1"), "run");
    assert_eq!(out.source("s2"), "run");
    let (valid, bad, _) = verify_counts(&env.verify(None));
    assert_eq!((valid, bad), (n, 0));
}

#[test]
fn cache_verify_removes_tampered_entries() {
    let n = 4;
    let env = Env::new(n, "0");
    env.run(&["run", "--json"], &[]).expect_code(0);
    // Locate every entry first: any lookup (even `plan`'s) unpublishes a broken entry it finds.
    let (_, nar0) = entry_of(&env, "s0");
    let (ni1, _) = entry_of(&env, "s1");
    let (ni2, _) = entry_of(&env, "s2");
    let (ni3, _) = entry_of(&env, "s3");
    // s0: a flipped byte in the compressed NAR.
    let mut data = std::fs::read(&nar0).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&nar0, data).unwrap();
    // s1: the narinfo of s2 stored under s1's name.
    std::fs::copy(&ni2, &ni1).unwrap();
    // s3: a consistent entry (hashes match) whose result says `failed`.
    {
        use checkdef::result::{Status, StoredResult};
        let info = NarInfo::parse(&std::fs::read_to_string(&ni3).unwrap()).unwrap();
        let store = cache_proto::store::FileStore::new(&env.repo.cache)
            .with_trust(cache_proto::store::Trust::Local);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fetched = rt
            .block_on(store.fetch(&info.store_path, &Default::default()))
            .unwrap()
            .unwrap();
        let node = cache_proto::nar::parse(&fetched.nar[..], &Default::default()).unwrap();
        let mut result = StoredResult::from_nar(node).unwrap();
        result.record.status = Status::Failed;
        std::fs::remove_file(&ni3).unwrap();
        let nar = result.to_nar().to_bytes().unwrap();
        rt.block_on(store.publish(&info.store_path, &nar, &[], &[]))
            .unwrap();
    }
    let verify = env.verify(None);
    assert_eq!(verify_counts(&verify), (1, 3, 0), "{}", verify.stderr);
    for (seg, why) in [
        ("s0", "hash mismatch"),
        ("s1", "is stored as"),
        ("s3", "failures are never served"),
    ] {
        let _ = seg;
        assert!(
            verify
                .stderr
                .lines()
                .any(|l| l.contains("removing") && l.contains(why)),
            "{why}: {}",
            verify.stderr
        );
    }
    assert_eq!(narinfos_in(&env.repo.cache).len(), 1);
    // Readers never took them for hits in between, and the next run restores them.
    let out = env.run(&["run", "--json"], &[]);
    all_passed(&out, n, &["run", "local"]);
    assert_eq!(out.source("s2"), "local");
    assert_eq!(out.source("s0"), "run");
    assert_eq!(verify_counts(&env.verify(None)), (n, 0, 0));
}

#[test]
fn gc_evicts_the_least_recently_used_entries_first() {
    let n = 4;
    let env = Env::new(n, "0");
    env.run(&["run", "--json"], &[]).expect_code(0);
    let entries: Vec<(PathBuf, PathBuf)> =
        (0..n).map(|i| entry_of(&env, &format!("s{i}"))).collect();
    let size = |(ni, nar): &(PathBuf, PathBuf)| {
        std::fs::metadata(ni).unwrap().len() + std::fs::metadata(nar).unwrap().len()
    };
    // Last used: s2 longest ago, then s0, s3, s1. The last use is the stamp's mtime (the
    // narinfo's for an entry without a stamp).
    let stamp = |ni: &PathBuf| {
        let hash_part = ni.file_stem().unwrap().to_str().unwrap();
        ni.parent().unwrap().join("checkdef-stamps").join(hash_part)
    };
    for (i, secs) in [(2usize, 4000u64), (0, 3000), (3, 2000), (1, 1000)] {
        assert!(stamp(&entries[i].0).is_file(), "a stored result is stamped");
        age(&entries[i].0, secs);
        age(&stamp(&entries[i].0), secs);
    }
    // A hit refreshes a time older than an hour: s2 becomes the most recently used.
    let out = env.run(&["run", "--json", "-s", "s2"], &[]);
    assert_eq!(out.source("s2"), "local");
    let total: u64 = entries.iter().map(size).sum();
    // Room for all but the two least recently used (s0, then s3).
    let max = total - size(&entries[0]) - size(&entries[3]);
    let out = env.run(&["cache", "gc", "--max-size", &max.to_string()], &[]);
    out.expect_code(0);
    let left: Vec<bool> = entries.iter().map(|(ni, _)| ni.exists()).collect();
    assert_eq!(left, vec![false, true, true, false], "{}", out.stderr);
    assert!(!entries[0].1.exists() && !entries[3].1.exists());
    assert!(
        !stamp(&entries[0].0).exists() && !stamp(&entries[3].0).exists(),
        "an evicted entry's stamp goes with it"
    );
    // One byte less evicts s1 as well; s2 (just used) stays.
    let out = env.run(&["cache", "gc", "--max-size", &(max - 1).to_string()], &[]);
    out.expect_code(0);
    let left: Vec<bool> = entries.iter().map(|(ni, _)| ni.exists()).collect();
    assert_eq!(left, vec![false, false, true, false], "{}", out.stderr);
    assert_eq!(verify_counts(&env.verify(None)), (1, 0, 0));
}

/// Stamps (`checkdef-stamps/`) make a local hit cost a few `stat`s; they must never make a
/// changed entry count as a hit, and callers that need the log still get it.
#[test]
fn stamped_hits_are_served_without_reading_the_nar_but_never_hide_a_change() {
    use checkdef::cache::{Accept, CacheSettings, Caches};
    use checkdef::result::StoredResult;

    let n = 2;
    let env = Env::new(n, "0");
    env.run(&["run", "--json"], &[]).expect_code(0);
    let (ni0, nar0) = entry_of(&env, "s0");
    let hash_part = ni0.file_stem().unwrap().to_str().unwrap().to_owned();
    let stamp = env.repo.cache.join("checkdef-stamps").join(&hash_part);
    assert!(stamp.is_file(), "storing a result stamps it");

    // Through the library: a lookup that does not need the log is answered by the stamp (no
    // manifest, no log); one that needs it reads the NAR.
    let plan = env.repo.plan_json(&[]);
    let store_path = crate::support::segment_field(&plan, "s0", "store_path");
    let input_hash: checkdef::manifest::InputHash =
        crate::support::segment_field(&plan, "s0", "input_hash")
            .parse()
            .unwrap();
    let path = cache_proto::store_path::StorePath::parse(&store_path).unwrap();
    let caches = Caches::open(CacheSettings {
        local_dir: env.repo.cache.clone(),
        remote: None,
        trusted_keys: Vec::new(),
        accept: Accept::Trusted,
        secret_key: None,
        remote_budget: Duration::from_secs(1),
        netrc: None,
        bearer_token: None,
        env: Default::default(),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let look = |need_log: bool| -> Option<StoredResult> {
        rt.block_on(caches.lookup_local(&path, "s0", &input_hash, need_log))
            .hit
            .map(|h| h.result)
    };
    let fast = look(false).expect("a stamped hit");
    assert!(fast.log.is_empty() && fast.manifest.is_empty());
    assert_eq!(fast.record.input_hash, input_hash);
    let full = look(true).expect("a full hit");
    assert_eq!(String::from_utf8_lossy(&full.log), "s0\n");
    assert!(!full.manifest.is_empty());

    // `-v` prints a cached result's log, so it reads the NAR.
    let out = env.run(&["run", "-v", "-s", "s0"], &[]);
    out.expect_code(0);
    assert!(
        out.stderr.lines().any(|l| l.trim() == "s0"),
        "{}",
        out.stderr
    );

    // One byte changed in place, size and mtime restored: only the ctime tells, and the
    // stamp must not match. The lookup reads the NAR, finds the corruption, and the real run
    // decides.
    let mtime = std::fs::metadata(&nar0).unwrap().modified().unwrap();
    let mut data = std::fs::read(&nar0).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&nar0, &data).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&nar0)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert!(
        look(false).is_none(),
        "a changed NAR is never a stamped hit"
    );
    assert!(
        !stamp.exists(),
        "the broken entry's stamp was removed with it"
    );
    let out = env.run(&["run", "--json"], &[]);
    all_passed(&out, n, &["run", "local"]);
    assert_eq!(out.source("s0"), "run", "{}", out.stderr);
    assert_eq!(out.source("s1"), "local", "{}", out.stderr);
    assert!(stamp.is_file(), "the rerun's result is stamped again");

    // A stamp left behind by an entry removed by hand is swept by `cache verify`.
    let (ni1, _) = entry_of(&env, "s1");
    let stamp1 = env
        .repo
        .cache
        .join("checkdef-stamps")
        .join(ni1.file_stem().unwrap());
    std::fs::remove_file(&ni1).unwrap();
    assert!(stamp1.exists());
    let verify = env.verify(None);
    assert!(!stamp1.exists(), "{}", verify.stderr);
    assert!(stamp.exists(), "a valid entry keeps its stamp");
}
