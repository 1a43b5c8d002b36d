//! Interop tests: cache-proto against real Nix 2.8 and a real nginx cache with PUT.
//!
//! Three groups:
//!
//! * **Live Nix** (`nar_*`, `keys_*`, `nix_*`, `publish_*`): run Debian's Nix 2.8 through
//!   [`testkit::Nix`] (private HOME/XDG dirs, so a fresh narinfo cache per scenario; no
//!   substituters; chroot stores, never `/nix/store`) and nginx through [`testkit::Nginx`].
//!   Outside CI they skip with a message when a tool is missing; under `CI` they fail.
//! * **Golden files** (`golden_*`): read files that Nix 2.8 wrote once, committed under
//!   `tests/data/` (see its README.md and `make-golden.sh`), so they run everywhere, without Nix.
//!   `golden_tree_nar_is_still_what_nix_writes` re-checks those files against live Nix.
//!
//! Byte-for-byte means: NARs, hashes, store paths, key files and signatures are compared as
//! exact strings or bytes with what Nix produced, never just "parses OK".

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cache_proto::compression::{self, Compression};
use cache_proto::nar::{self, NarNode};
use cache_proto::store_path::{self, for_input_key, make_fixed_output_path};
use cache_proto::{
    FileStore, HttpConfig, HttpStore, NarInfo, NarLimits, PublicKey, PublishOutcome, SecretKey,
    Sha256Hash, StoreError, StorePath, Trust,
};
use testkit::{Nginx, Nix, run_ok};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The committed golden files (written by Nix 2.8, see `tests/data/README.md`).
fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn read_data(rel: &str) -> Vec<u8> {
    fs::read(data(rel)).unwrap_or_else(|e| panic!("read golden file {rel}: {e}"))
}

fn read_data_str(rel: &str) -> String {
    String::from_utf8(read_data(rel)).unwrap_or_else(|_| panic!("{rel} is not utf-8"))
}

/// `tests/data/tree.facts`: what Nix said about the golden tree (`key: value` lines).
fn facts() -> BTreeMap<String, String> {
    read_data_str("tree.facts")
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("tree.facts line is `key: value`");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn fact(name: &str) -> String {
    facts()
        .remove(name)
        .unwrap_or_else(|| panic!("tree.facts has no {name}"))
}

/// Writes a file and sets its mode exactly (independent of the umask).
fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree `tests/data/make-golden.sh` builds, created as `root/tree`: a regular file, an
/// executable, two symlinks (relative, dangling absolute), nested directories, an empty file,
/// an empty directory, non-UTF-8 contents, and top-level names that sort as raw bytes
/// `1 A B _ a "a b" b` (digits < upper case < `_` < lower case; `a` < `a b` < `b`).
fn golden_tree(root: &Path) -> PathBuf {
    let t = root.join("tree");
    fs::create_dir_all(t.join("A/sub")).unwrap();
    fs::create_dir_all(t.join("b")).unwrap();
    write_file(&t.join("1"), b"one\n", 0o644);
    write_file(&t.join("A/sub/x"), b"x", 0o644);
    write_file(&t.join("A/bytes"), b"\x00\x01\xff not utf-8\n", 0o644);
    symlink("/nowhere/dangling", t.join("A/abs-link")).unwrap();
    symlink("a", t.join("B")).unwrap();
    write_file(&t.join("_"), b"", 0o644);
    write_file(&t.join("a"), b"alpha\n", 0o644);
    write_file(&t.join("a b"), b"#!/bin/sh\necho \"a b\"\n", 0o755);
    t
}

/// Size of the random file in [`interop_tree`]: about 100 KB, not a multiple of 8 (padding).
const RANDOM_LEN: usize = 100_001;

/// The golden tree plus `A/sub/random.bin`, 100 KB of fresh random bytes.
fn interop_tree(root: &Path) -> PathBuf {
    let t = golden_tree(root);
    let mut random = vec![0u8; RANDOM_LEN];
    getrandom::fill(&mut random).expect("random bytes");
    write_file(&t.join("A/sub/random.bin"), &random, 0o644);
    t
}

/// Our NAR of `path`.
fn dump(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let n = nar::dump_path(path, &mut out).unwrap_or_else(|e| panic!("dump {path:?}: {e}"));
    assert_eq!(n, out.len() as u64, "dump_path's byte count");
    out
}

/// Compares two byte strings without printing them whole: sizes, hashes and the first
/// difference.
#[track_caller]
fn assert_same_bytes(ours: &[u8], theirs: &[u8], what: &str) {
    if ours == theirs {
        return;
    }
    let at = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let window = |b: &[u8]| b[at.min(b.len())..(at + 16).min(b.len())].to_vec();
    panic!(
        "{what}: ours has {} bytes (sha256 {}), Nix's has {} bytes (sha256 {}); first difference \
         at offset {at:#x}: ours {:02x?}, Nix's {:02x?}",
        ours.len(),
        Sha256Hash::digest(ours).to_hex(),
        theirs.len(),
        Sha256Hash::digest(theirs).to_hex(),
        window(ours),
        window(theirs),
    );
}

/// Asserts that two trees have the same NAR (type, names, contents, executable bits and
/// symlink targets; nothing else is part of a store path).
#[track_caller]
fn assert_same_tree(got: &Path, want: &Path) {
    assert_same_bytes(
        &dump(got),
        &dump(want),
        &format!("tree {} vs {}", got.display(), want.display()),
    );
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout)
        .expect("utf-8 output")
        .trim()
        .to_owned()
}

/// Runs `cmd` with `input` on stdin; returns stdout, panics on failure.
fn stdout_with_stdin(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `cmd`, which must fail; returns its stderr.
fn stderr_of_failure(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{cmd:?} unexpectedly succeeded; stderr: {stderr}"
    );
    stderr
}

/// The string value of `"key":"…"` in Nix's JSON output (flat values only).
fn json_string(json: &str, key: &str) -> String {
    let pat = format!("\"{key}\":\"");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let len = json[start..].find('"').expect("closing quote");
    json[start..start + len].to_owned()
}

/// The strings of the array `"key":[…]` in Nix's JSON output (empty when absent).
fn json_strings(json: &str, key: &str) -> Vec<String> {
    let pat = format!("\"{key}\":[");
    let Some(start) = json.find(&pat).map(|i| i + pat.len()) else {
        return Vec::new();
    };
    let len = json[start..].find(']').expect("closing bracket");
    json[start..start + len]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_owned())
        .collect()
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Where a store path's tree lives inside a chroot store.
fn in_chroot(root: &Path, p: &StorePath) -> PathBuf {
    root.join("nix/store").join(p.as_base_name())
}

/// `nix key generate-secret --key-name NAME` into `dir/NAME.sec`, and its public key (from
/// `nix key convert-secret-to-public`).
fn nix_keypair(nix: &Nix, dir: &Path, name: &str) -> (PathBuf, String, String) {
    let secret = stdout_of(
        nix.cmd("")
            .args(["key", "generate-secret", "--key-name", name]),
    );
    let file = dir.join(format!("{name}.sec"));
    fs::create_dir_all(dir).unwrap();
    fs::write(&file, &secret).unwrap();
    let public = stdout_with_stdin(
        nix.cmd("").args(["key", "convert-secret-to-public"]),
        &secret,
    );
    (file, secret, public)
}

/// `nix-store --store ROOT --add PATH`.
fn nix_add(nix: &Nix, path: &Path) -> StorePath {
    let out = stdout_of(
        nix.tool("nix-store", "")
            .arg("--store")
            .arg(nix.store_root())
            .arg("--add")
            .arg(path),
    );
    StorePath::parse(&out).unwrap_or_else(|e| panic!("nix-store --add printed {out:?}: {e}"))
}

/// `nix path-info --json` of `p` in the Nix instance's chroot store.
fn nix_path_info(nix: &Nix, p: &StorePath) -> String {
    stdout_of(
        nix.cmd("")
            .args(["path-info", "--json", "--store"])
            .arg(nix.store_root())
            .arg(p.to_string()),
    )
}

/// Recursive copy of a plain directory of regular files.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. NAR serialisation and NarHash against `nix-store --dump` / `nix hash path`

#[test]
fn nar_dump_is_byte_identical_to_nix_store_dump() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tree = interop_tree(tmp.path());
    // The whole tree, then every kind of node as a NAR root of its own.
    for rel in [
        "",
        "1",
        "a b",
        "B",
        "_",
        "b",
        "A",
        "A/abs-link",
        "A/sub",
        "A/sub/random.bin",
    ] {
        let path = if rel.is_empty() {
            tree.clone()
        } else {
            tree.join(rel)
        };
        let theirs = run_ok(nix.tool("nix-store", "").arg("--dump").arg(&path)).stdout;
        let ours = dump(&path);
        assert_same_bytes(&ours, &theirs, &format!("NAR of tree/{rel}"));
        // Our reader takes Nix's NAR and writes it back unchanged.
        let node = nar::parse(&theirs[..], &NarLimits::default())
            .unwrap_or_else(|e| panic!("parse Nix's NAR of tree/{rel}: {e}"));
        assert_same_bytes(&node.to_bytes().unwrap(), &theirs, "parse + write_node");
    }
    let whole = dump(&tree);
    assert!(whole.len() > RANDOM_LEN, "the random file is in the NAR");
}

#[test]
fn nar_hash_matches_nix_hash_path() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tree = interop_tree(tmp.path());
    for path in [tree.clone(), tree.join("a b"), tree.join("B")] {
        let ours = Sha256Hash::digest(&dump(&path));
        let hash_path =
            |extra: &[&str]| stdout_of(nix.cmd("").args(["hash", "path"]).args(extra).arg(&path));
        assert_eq!(hash_path(&[]), ours.to_sri(), "SRI of {path:?}");
        assert_eq!(hash_path(&["--base32"]), ours.nix32(), "nix32 of {path:?}");
        assert_eq!(hash_path(&["--base16"]), ours.to_hex(), "hex of {path:?}");
        // Our NarHash parser takes every notation Nix prints.
        for s in [
            ours.to_sri(),
            format!("sha256:{}", ours.nix32()),
            format!("sha256:{}", ours.to_hex()),
        ] {
            assert_eq!(Sha256Hash::parse(&s).unwrap(), ours, "{s}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. cache-proto publishes to nginx; real Nix copies from it

/// What [`publish_fixture`] put into its nginx cache.
struct Published {
    nginx: Nginx,
    _cache: tempfile::TempDir,
    tree_src: tempfile::TempDir,
    key: SecretKey,
    dep: StorePath,
    main: StorePath,
    main_nar: Vec<u8>,
}

const DEP_CONTENTS: &[u8] = b"I am a dependency published by cache-proto\n";

/// Publishes two input-addressed paths with [`HttpStore`] to a fresh nginx: a dependency (one
/// file) and the interop tree, which lists the dependency as a reference. Both signed with a
/// key we generated.
fn publish_fixture() -> Option<Published> {
    let cache = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(&cache.path().join("cache"), None)?;
    let tree_src = tempfile::tempdir().unwrap();
    let tree = interop_tree(tree_src.path());
    let dep_file = tree_src.path().join("dep");
    write_file(&dep_file, DEP_CONTENTS, 0o644);

    let key = SecretKey::generate("checkdef-interop-1").unwrap();
    let dep = for_input_key("checkdef-interop:v1:dep", "interop-dep").unwrap();
    let main = for_input_key("checkdef-interop:v1:tree", "interop-tree").unwrap();
    let main_nar = dump(&tree);
    let store = HttpStore::new(HttpConfig::new(nginx.url()))
        .unwrap()
        .with_trust(Trust::Keys(vec![key.to_public()]));
    block_on(async {
        let keys = [key.clone()];
        let dep_nar = dump(&dep_file);
        assert_eq!(
            store.publish(&dep, &dep_nar, &[], &keys).await.unwrap(),
            PublishOutcome::Uploaded
        );
        assert_eq!(
            store
                .publish(&main, &main_nar, std::slice::from_ref(&dep), &keys)
                .await
                .unwrap(),
            PublishOutcome::Uploaded
        );
        // Idempotent against a real server: the narinfo exists, nothing is written again.
        assert_eq!(
            store
                .publish(&main, &main_nar, std::slice::from_ref(&dep), &keys)
                .await
                .unwrap(),
            PublishOutcome::AlreadyPresent
        );
    });
    Some(Published {
        nginx,
        _cache: cache,
        tree_src,
        key,
        dep,
        main,
        main_nar,
    })
}

/// `nix copy --from <nginx> --to <fresh chroot store>` with signatures required and only
/// `trusted` trusted, by a fresh Nix (fresh narinfo cache).
fn nix_copy_from(nix: &Nix, url: &str, trusted: &str, p: &StorePath) -> Command {
    let mut cmd = nix.cmd("");
    cmd.args(["copy", "--from", url, "--to"])
        .arg(nix.store_root())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", trusted])
        .arg(p.to_string());
    cmd
}

#[test]
fn publish_with_http_store_is_accepted_by_nix_copy_from_nginx() {
    let Some(nix) = Nix::new() else { return };
    let Some(p) = publish_fixture() else { return };
    let public = p.key.to_public().to_string();

    // The upload order Nix itself uses: cache info first, then per path NAR before narinfo.
    let log = p.nginx.access_log();
    let at = |needle: &str| {
        log.iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in the nginx log:\n{}", log.join("\n")))
    };
    assert!(at("PUT /nix-cache-info 201") < at("PUT /nar/"));
    for sp in [&p.dep, &p.main] {
        let narinfo_file = p.nginx.root().join(format!("{}.narinfo", sp.hash_part()));
        let info = NarInfo::parse(&fs::read_to_string(narinfo_file).unwrap()).unwrap();
        let nar_put = at(&format!("PUT /{} 201", info.url));
        let narinfo_put = at(&format!("PUT /{}.narinfo 201", sp.hash_part()));
        assert!(
            nar_put < narinfo_put,
            "{sp}: NAR PUT (line {nar_put}) must come before narinfo PUT (line {narinfo_put}):\n{}",
            log.join("\n")
        );
        assert_eq!(info.compression.as_deref(), Some("zstd"));
        assert!(info.url.ends_with(".nar.zst"), "{}", info.url);
    }
    assert!(
        at(&format!("PUT /{}.narinfo 201", p.dep.hash_part()))
            < at(&format!("PUT /{}.narinfo 201", p.main.hash_part())),
        "the reference is published before the path that refers to it"
    );

    run_ok(&mut nix_copy_from(&nix, &p.nginx.url(), &public, &p.main));

    // The closure arrived: the tree byte for byte, the dependency, the reference, our sig.
    let root = nix.store_root();
    assert_same_tree(&in_chroot(&root, &p.main), &p.tree_src.path().join("tree"));
    assert_eq!(fs::read(in_chroot(&root, &p.dep)).unwrap(), DEP_CONTENTS);
    let info = nix_path_info(&nix, &p.main);
    assert_eq!(
        json_string(&info, "narHash"),
        Sha256Hash::digest(&p.main_nar).to_sri()
    );
    assert_eq!(
        json_strings(&info, "references"),
        vec![p.dep.to_string()],
        "{info}"
    );
    let sigs = json_strings(&info, "signatures");
    assert_eq!(sigs.len(), 1, "{info}");
    assert!(sigs[0].starts_with("checkdef-interop-1:"), "{info}");
}

#[test]
fn publish_with_http_store_signed_by_untrusted_key_is_refused_by_nix() {
    let Some(nix) = Nix::new() else { return };
    let Some(p) = publish_fixture() else { return };
    // Same key name, different key: only the signature itself can tell them apart.
    let wrong = SecretKey::generate("checkdef-interop-1")
        .unwrap()
        .to_public()
        .to_string();
    assert_ne!(wrong, p.key.to_public().to_string());
    let stderr = stderr_of_failure(&mut nix_copy_from(&nix, &p.nginx.url(), &wrong, &p.main));
    assert!(
        stderr.contains("lacks a valid signature"),
        "unexpected refusal: {stderr}"
    );
    assert!(!in_chroot(&nix.store_root(), &p.main).exists());
}

// ---------------------------------------------------------------------------------------------
// 3. Nix writes caches; cache-proto reads them

/// Checks a path cache-proto fetched from a cache Nix wrote: the NAR is the tree's, the
/// narinfo renders back to Nix's bytes, and the NAR unpacks to the original tree.
fn check_fetched(fetched: &cache_proto::Fetched, narinfo_text: &str, tree: &Path, scratch: &Path) {
    assert_same_bytes(&fetched.nar, &dump(tree), "fetched NAR");
    assert_eq!(fetched.narinfo.nar_hash, Sha256Hash::digest(&fetched.nar));
    assert_eq!(fetched.narinfo.nar_size, fetched.nar.len() as u64);
    assert!(fetched.narinfo.content_address_matches(), "Nix's CA claim");
    assert_eq!(
        fetched.narinfo.render(),
        narinfo_text,
        "our render of Nix's narinfo"
    );
    let dest = scratch.join("unpacked");
    nar::unpack(&fetched.nar[..], &dest, &NarLimits::default()).unwrap();
    assert_same_tree(&dest, tree);
    let mode = |rel: &str| fs::metadata(dest.join(rel)).unwrap().permissions().mode();
    assert_eq!(mode("a b") & 0o100, 0o100, "executable bit survives");
    assert_eq!(mode("a") & 0o100, 0, "no executable bit on a plain file");
    assert_eq!(fs::read_link(dest.join("B")).unwrap(), Path::new("a"));
    assert_eq!(
        fs::read_link(dest.join("A/abs-link")).unwrap(),
        Path::new("/nowhere/dangling")
    );
    assert!(fs::read_dir(dest.join("b")).unwrap().next().is_none());
    assert_eq!(fs::read(dest.join("_")).unwrap(), b"");
    assert_eq!(
        fs::read(dest.join("A/sub/random.bin")).unwrap(),
        fs::read(tree.join("A/sub/random.bin")).unwrap()
    );
}

#[test]
fn nix_copy_to_file_caches_is_read_by_file_store() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tree = interop_tree(tmp.path());

    // `nix-store --add` computes the same content-addressed path as we do.
    let p = nix_add(&nix, &tree);
    let nar_hash = Sha256Hash::digest(&dump(&tree));
    assert_eq!(
        p,
        make_fixed_output_path(true, &nar_hash, "tree", &[], false).unwrap()
    );

    let (sec_file, _, public) = nix_keypair(&nix, &tmp.path().join("keys"), "nix-interop-1");
    let (_, _, other_public) = nix_keypair(&nix, &tmp.path().join("keys"), "nix-interop-2");
    run_ok(
        nix.cmd("")
            .args(["store", "sign", "--store"])
            .arg(nix.store_root())
            .arg("--key-file")
            .arg(&sec_file)
            .arg(p.to_string()),
    );
    let public = PublicKey::parse(&public).unwrap();
    let other_public = PublicKey::parse(&other_public).unwrap();

    // (store URL query, Compression: line, NAR file suffix)
    for (query, compression, suffix) in [
        ("", "xz", ".nar.xz"), // Nix's default
        ("?compression=zstd", "zstd", ".nar.zst"),
        ("?compression=bzip2", "bzip2", ".nar.bz2"),
        ("?compression=none", "none", ".nar"),
    ] {
        let dir = tmp.path().join(format!("cache-{compression}"));
        run_ok(
            nix.cmd("")
                .args(["copy", "--store"])
                .arg(nix.store_root())
                .arg("--to")
                .arg(format!("file://{}{query}", dir.display()))
                .arg(p.to_string()),
        );
        let narinfo_text =
            fs::read_to_string(dir.join(format!("{}.narinfo", p.hash_part()))).unwrap();
        let store = FileStore::new(&dir).with_trust(Trust::Keys(vec![public.clone()]));
        let fetched = block_on(store.fetch(&p, &NarLimits::default()))
            .unwrap_or_else(|e| panic!("{compression}: {e:?}"))
            .expect("the path is in the cache");
        assert_eq!(fetched.signed_by.as_deref(), Some("nix-interop-1"));
        assert_eq!(fetched.narinfo.compression.as_deref(), Some(compression));
        assert!(fetched.narinfo.url.ends_with(suffix), "{narinfo_text}");
        let cache_info = block_on(store.cache_info())
            .unwrap()
            .expect("nix-cache-info");
        assert_eq!(cache_info.store_dir, "/nix/store");
        let scratch = tmp.path().join(format!("scratch-{compression}"));
        fs::create_dir(&scratch).unwrap();
        check_fetched(&fetched, &narinfo_text, &tree, &scratch);

        // Signed by a key we do not trust: refused.
        let untrusted = FileStore::new(&dir).with_trust(Trust::Keys(vec![other_public.clone()]));
        let err = block_on(untrusted.fetch(&p, &NarLimits::default())).unwrap_err();
        assert!(matches!(err, StoreError::Untrusted { .. }), "{err:?}");
    }
}

#[test]
fn nix_copy_to_nginx_is_read_by_http_store() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Some(nginx) = Nginx::start(&tmp.path().join("cache"), None) else {
        return;
    };
    let tree = interop_tree(tmp.path());
    let p = nix_add(&nix, &tree);
    let (sec_file, _, public) = nix_keypair(&nix, &tmp.path().join("keys"), "nix-interop-http-1");
    // Unsigned in the store; Nix signs while uploading (`?secret-key=`), xz by default.
    run_ok(
        nix.cmd("")
            .args(["copy", "--store"])
            .arg(nix.store_root())
            .arg("--to")
            .arg(format!("{}?secret-key={}", nginx.url(), sec_file.display()))
            .arg(p.to_string()),
    );
    let log = nginx.access_log();
    assert!(
        log.iter().any(|l| l.starts_with("PUT /nix-cache-info 201")),
        "Nix created nix-cache-info:\n{}",
        log.join("\n")
    );

    let store = HttpStore::new(HttpConfig::new(nginx.url()))
        .unwrap()
        .with_trust(Trust::Keys(vec![PublicKey::parse(&public).unwrap()]));
    let cache_info = block_on(store.cache_info())
        .unwrap()
        .expect("nix-cache-info");
    assert_eq!(cache_info.store_dir, "/nix/store");
    let fetched = block_on(store.fetch(&p, &NarLimits::default()))
        .unwrap()
        .expect("the path is in the cache");
    assert_eq!(fetched.signed_by.as_deref(), Some("nix-interop-http-1"));
    assert_eq!(fetched.narinfo.compression.as_deref(), Some("xz"));
    let narinfo_text =
        fs::read_to_string(nginx.root().join(format!("{}.narinfo", p.hash_part()))).unwrap();
    let scratch = tmp.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    check_fetched(&fetched, &narinfo_text, &tree, &scratch);

    // A path the cache does not have is a clean miss (nginx answers 404).
    let absent = for_input_key("checkdef-interop:v1:absent", "absent").unwrap();
    assert!(block_on(store.narinfo(&absent)).unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// 4. Keys and signatures

#[test]
fn keys_nix_generated_secret_parses_and_derives_nix_public_key() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for name in ["checkdef-keys-1", "cache.example.org-1"] {
        let (_, secret, public) = nix_keypair(&nix, tmp.path(), name);
        let sk = SecretKey::parse(&secret).unwrap_or_else(|e| panic!("{secret}: {e}"));
        assert_eq!(sk.name(), name);
        assert_eq!(sk.to_public().to_string(), public);
        assert_eq!(sk.to_string(), secret, "our rendering of Nix's secret key");
        assert_eq!(PublicKey::parse(&public).unwrap(), sk.to_public());
    }
}

#[test]
fn keys_our_generated_key_signs_exactly_like_nix_store_sign() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ours = SecretKey::generate("checkdef-ours-1").unwrap();
    let key_file = tmp.path().join("ours.sec");
    fs::write(&key_file, format!("{ours}\n")).unwrap();
    // Nix reads our secret key file and derives the same public key.
    assert_eq!(
        stdout_with_stdin(
            nix.cmd("").args(["key", "convert-secret-to-public"]),
            &ours.to_string()
        ),
        ours.to_public().to_string()
    );

    // A path without references (source CA) and a text path with one reference.
    let tree = golden_tree(tmp.path());
    let tree_path = nix_add(&nix, &tree);
    let withref = stdout_of(
        nix.cmd("")
            .args(["eval", "--raw", "--store"])
            .arg(nix.store_root())
            .args([
                "--expr",
                r#"let g = builtins.toFile "greeting" "signed by us\n"; in builtins.toFile "withref" "see ${g}\n""#,
            ]),
    );
    let withref = StorePath::parse(&withref).unwrap();
    run_ok(
        nix.cmd("")
            .args(["store", "sign", "-r", "--store"])
            .arg(nix.store_root())
            .arg("--key-file")
            .arg(&key_file)
            .arg(tree_path.to_string())
            .arg(withref.to_string()),
    );

    let root = nix.store_root();
    for p in [&tree_path, &withref] {
        let info_json = nix_path_info(&nix, p);
        let nix_sigs = json_strings(&info_json, "signatures");
        assert_eq!(nix_sigs.len(), 1, "{info_json}");
        let nar = dump(&in_chroot(&root, p));
        let references: Vec<String> = json_strings(&info_json, "references")
            .iter()
            .map(|r| StorePath::parse(r).unwrap().base_name())
            .collect();
        let mut info = NarInfo {
            store_path: p.clone(),
            url: "nar/unused.nar".into(),
            compression: Some("none".into()),
            file_hash: None,
            file_size: None,
            nar_hash: Sha256Hash::digest(&nar),
            nar_size: nar.len() as u64,
            references,
            deriver: None,
            sigs: Vec::new(),
            ca: None,
            system: None,
        };
        assert_eq!(
            info.nar_hash.to_sri(),
            json_string(&info_json, "narHash"),
            "{p}"
        );
        info.sign(&ours);
        assert_eq!(info.sigs, nix_sigs, "signature of {}", info.fingerprint());
        assert_eq!(
            info.verify(&[ours.to_public()]).as_deref(),
            Some("checkdef-ours-1")
        );
    }
    assert!(
        nix_path_info(&nix, &withref).contains("-greeting"),
        "the text path has its reference"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Golden files written by Nix 2.8 (no Nix needed)

#[test]
fn golden_tree_nar_matches_our_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = golden_tree(tmp.path());
    let golden = read_data("tree.nar");
    assert_same_bytes(&dump(&tree), &golden, "our dump vs golden tree.nar");

    let hash = Sha256Hash::digest(&golden);
    assert_eq!(hash.to_sri(), fact("nar-hash-sri"));
    assert_eq!(hash.nix32(), fact("nar-hash-nix32"));
    assert_eq!(hash.to_hex(), fact("nar-hash-hex"));
    assert_eq!(golden.len().to_string(), fact("nar-size"));
    assert_eq!(
        make_fixed_output_path(true, &hash, "tree", &[], false)
            .unwrap()
            .to_string(),
        fact("store-path")
    );

    // Parsing Nix's NAR gives the tree we expect, and writing it back gives Nix's bytes.
    let node = nar::parse(&golden[..], &NarLimits::default()).unwrap();
    let NarNode::Directory(top) = &node else {
        panic!("root is a directory")
    };
    let names: Vec<&[u8]> = top.keys().map(Vec::as_slice).collect();
    assert_eq!(
        names,
        [&b"1"[..], b"A", b"B", b"_", b"a", b"a b", b"b"],
        "raw byte order"
    );
    assert_eq!(
        top[&b"a b"[..]],
        NarNode::Regular {
            executable: true,
            contents: b"#!/bin/sh\necho \"a b\"\n".to_vec()
        }
    );
    assert_eq!(
        top[&b"B"[..]],
        NarNode::Symlink {
            target: b"a".to_vec()
        }
    );
    assert_eq!(top[&b"b"[..]], NarNode::Directory(BTreeMap::new()));
    assert_same_bytes(&node.to_bytes().unwrap(), &golden, "parse + write_node");
    assert_eq!(node.nar_hash().unwrap(), (hash, golden.len() as u64));
}

#[test]
fn golden_keys_parse_and_agree() {
    let secret_text = read_data_str("golden-key.sec");
    let public_text = read_data_str("golden-key.pub");
    let sk = SecretKey::parse(&secret_text).unwrap();
    let pk = PublicKey::parse(&public_text).unwrap();
    assert_eq!(sk.name(), "checkdef-golden-1");
    assert_eq!(sk.to_public(), pk);
    assert_eq!(sk.to_string(), secret_text.trim());
    assert_eq!(pk.to_string(), public_text.trim());
}

/// Every narinfo of the golden caches: (cache dir name, store path, narinfo text).
fn golden_narinfos() -> Vec<(String, StorePath, String)> {
    let mut out = Vec::new();
    for cache in ["cache-xz", "cache-zstd", "cache-bzip2"] {
        for e in fs::read_dir(data(cache)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".narinfo") {
                let text = read_data_str(&format!("{cache}/{name}"));
                let info = NarInfo::parse(&text).unwrap_or_else(|e| panic!("{cache}/{name}: {e}"));
                assert!(name.starts_with(info.store_path.hash_part()), "{name}");
                out.push((cache.to_owned(), info.store_path, text));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(out.len(), 5, "3 paths in cache-xz, the tree in the others");
    out
}

#[test]
fn golden_narinfos_parse_render_and_verify() {
    let golden_pk = PublicKey::parse(&read_data_str("golden-key.pub")).unwrap();
    let unrelated = SecretKey::from_seed("checkdef-golden-1", [7; 32])
        .unwrap()
        .to_public();
    let withref = StorePath::parse(&fact("withref-path")).unwrap();
    for (cache, p, text) in golden_narinfos() {
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.render(), text, "{cache}/{p}: render is byte-identical");
        assert_eq!(
            info.verify(std::slice::from_ref(&golden_pk)).as_deref(),
            Some("checkdef-golden-1"),
            "{cache}/{p}: Nix's signature over {}",
            info.fingerprint()
        );
        assert_eq!(info.verify(std::slice::from_ref(&unrelated)), None);
        assert!(
            info.content_address_matches(),
            "{cache}/{p}: CA {:?}",
            info.ca
        );
        // Every signed field matters.
        let mut tampered = info.clone();
        tampered.nar_size += 1;
        assert_eq!(tampered.verify(std::slice::from_ref(&golden_pk)), None);
        // Re-signing with the golden secret key reproduces Nix's signature exactly.
        let sk = SecretKey::parse(&read_data_str("golden-key.sec")).unwrap();
        let mut resigned = info.clone();
        resigned.sigs.clear();
        resigned.sign(&sk);
        assert_eq!(resigned.sigs, info.sigs, "{cache}/{p}");
        if p == withref {
            assert_eq!(info.references.len(), 1);
            assert!(
                info.fingerprint()
                    .ends_with(";/nix/store/9l7mn1pmcxp3s01cbqy8x07chs55b7cr-greeting"),
                "{}",
                info.fingerprint()
            );
        }
    }
}

#[test]
fn golden_nars_decompress_to_their_nar_hash() {
    let tree_path = StorePath::parse(&fact("store-path")).unwrap();
    let golden_nar = read_data("tree.nar");
    for (cache, p, text) in golden_narinfos() {
        let info = NarInfo::parse(&text).unwrap();
        let file = read_data(&format!("{cache}/{}", info.url));
        assert_eq!(Some(file.len() as u64), info.file_size, "{cache}/{p}");
        assert_eq!(
            Some(Sha256Hash::digest(&file)),
            info.file_hash,
            "{cache}/{p}"
        );
        let declared = Compression::from_narinfo(info.compression.as_deref()).unwrap();
        assert_eq!(
            Compression::detect(&file),
            Some(declared),
            "{cache}/{p}: magic bytes"
        );
        assert!(info.url.ends_with(declared.extension()), "{}", info.url);
        let mut nar = Vec::new();
        compression::decompress(declared, &file[..], info.nar_size)
            .unwrap()
            .read_to_end(&mut nar)
            .unwrap();
        assert_eq!(nar.len() as u64, info.nar_size, "{cache}/{p}");
        assert_eq!(Sha256Hash::digest(&nar), info.nar_hash, "{cache}/{p}");
        nar::validate(&nar[..], &NarLimits::default()).unwrap();
        if p == tree_path {
            assert_same_bytes(&nar, &golden_nar, &format!("{cache}: tree NAR"));
        }
    }
}

#[test]
fn golden_caches_fetch_and_unpack_with_file_store() {
    let golden_pk = PublicKey::parse(&read_data_str("golden-key.pub")).unwrap();
    let tree_path = StorePath::parse(&fact("store-path")).unwrap();
    let withref = StorePath::parse(&fact("withref-path")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let want = golden_tree(tmp.path());
    for cache in ["cache-xz", "cache-zstd", "cache-bzip2"] {
        // A private copy, so that nothing can ever write into the source tree.
        let dir = tmp.path().join(cache);
        copy_dir(&data(cache), &dir);
        let store = FileStore::new(&dir).with_trust(Trust::Keys(vec![golden_pk.clone()]));
        let f = block_on(store.fetch(&tree_path, &NarLimits::default()))
            .unwrap()
            .expect("tree is cached");
        assert_eq!(f.signed_by.as_deref(), Some("checkdef-golden-1"));
        let dest = tmp.path().join(format!("unpacked-{cache}"));
        nar::unpack(&f.nar[..], &dest, &NarLimits::default()).unwrap();
        assert_same_tree(&dest, &want);
        let mode = fs::metadata(dest.join("a b")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{cache}: executable");
    }

    let store = FileStore::new(tmp.path().join("cache-xz"))
        .with_trust(Trust::Keys(vec![golden_pk.clone()]));
    let f = block_on(store.fetch(&withref, &NarLimits::default()))
        .unwrap()
        .expect("withref is cached");
    let greeting =
        StorePath::parse("/nix/store/9l7mn1pmcxp3s01cbqy8x07chs55b7cr-greeting").unwrap();
    assert_eq!(f.narinfo.reference_paths().unwrap(), vec![greeting.clone()]);
    assert_eq!(
        nar::parse(&f.nar[..], &NarLimits::default()).unwrap(),
        NarNode::Regular {
            executable: false,
            contents: format!("see {greeting}\n").into_bytes()
        }
    );
    let g = block_on(store.fetch(&greeting, &NarLimits::default()))
        .unwrap()
        .expect("greeting is cached");
    assert_eq!(
        nar::parse(&g.nar[..], &NarLimits::default()).unwrap(),
        NarNode::Regular {
            executable: false,
            contents: b"hello binary cache\n".to_vec()
        }
    );
    // Nix's text-path rule, recomputed: the path matches its contents and reference.
    assert_eq!(
        store_path::make_text_path(
            "withref",
            format!("see {greeting}\n").as_bytes(),
            std::slice::from_ref(&greeting)
        )
        .unwrap(),
        withref
    );
    // Missing path: a clean miss.
    let absent = for_input_key("checkdef-interop:v1:absent", "absent").unwrap();
    assert!(
        block_on(store.fetch(&absent, &NarLimits::default()))
            .unwrap()
            .is_none()
    );
}

#[test]
fn golden_tree_nar_is_still_what_nix_writes() {
    let Some(nix) = Nix::new() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tree = golden_tree(tmp.path());
    let theirs = run_ok(nix.tool("nix-store", "").arg("--dump").arg(&tree)).stdout;
    assert_same_bytes(
        &read_data("tree.nar"),
        &theirs,
        "golden tree.nar vs nix-store --dump",
    );
    assert_eq!(
        stdout_of(nix.cmd("").args(["hash", "path"]).arg(&tree)),
        fact("nar-hash-sri")
    );
    assert_eq!(nix_add(&nix, &tree).to_string(), fact("store-path"));
    let public = stdout_with_stdin(
        nix.cmd("").args(["key", "convert-secret-to-public"]),
        &read_data_str("golden-key.sec"),
    );
    assert_eq!(public, read_data_str("golden-key.pub").trim());
}
