//! The local cache is also an ordinary Nix `file://` binary cache: what real Nix (`nix copy
//! --to file://DIR`) writes there is Nix's, and `cache verify` and `cache gc` leave it alone,
//! byte for byte (issue 15). Needs Nix: skipped where it is missing, failed under `CI`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::TestRepo;

/// Every file below `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn verify_and_gc_leave_what_real_nix_copied_into_the_cache_alone() {
    let Some(nix) = testkit::Nix::new() else {
        return;
    };
    let repo = TestRepo::new();
    repo.write("a", "a\n").write(
        "checkdef.toml",
        "version = 1\n\n[[segment]]\nname = \"ok\"\ninclude = [\"a\"]\ncommand = \"test -f a\"\n",
    );
    repo.commit("init");
    let run = repo.run_json(&[], &[]);
    run.expect_code(0);
    let ours = run.seg("ok")["store_path"].as_str().unwrap().to_owned();
    let hash_part = |store_path: &str| {
        store_path
            .trim_start_matches("/nix/store/")
            .split('-')
            .next()
            .unwrap()
            .to_owned()
    };
    let ours_narinfo = repo.cache.join(format!("{}.narinfo", hash_part(&ours)));
    assert!(ours_narinfo.is_file(), "checkdef stored its result");

    // Real Nix adds two paths of its own to a store and copies them into the same directory.
    let before = files(&repo.cache);
    let work = nix.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut theirs = Vec::new();
    for (name, text) in [("hello.txt", "hello\n"), ("data-checkdef.json", "{}\n")] {
        std::fs::write(work.join(name), text).unwrap();
        let out = nix
            .cmd("")
            .arg("--store")
            .arg(nix.store_root())
            .args(["store", "add-file"])
            .arg(work.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nix store add-file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        theirs.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let out = nix
        .cmd("")
        .arg("--store")
        .arg(nix.store_root())
        .args(["copy", "--to"])
        .arg(format!("file://{}", repo.cache.display()))
        .args(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix copy --to file://: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nixs: BTreeMap<PathBuf, Vec<u8>> = files(&repo.cache)
        .into_iter()
        .filter(|(p, bytes)| before.get(p) != Some(bytes))
        .collect();
    for t in &theirs {
        let ni = PathBuf::from(format!("{}.narinfo", hash_part(t)));
        assert!(
            nixs.contains_key(&ni),
            "nix wrote {}: {nixs:?}",
            ni.display()
        );
    }
    assert!(
        nixs.keys().any(|p| p.starts_with("nar")),
        "nix wrote its NARs: {:?}",
        nixs.keys()
    );

    // verify keeps everything (checkdef's entry is valid, Nix's are not checkdef's to judge).
    repo.checkdef_env(&["cache", "verify"], &[]).expect_code(0);
    assert!(ours_narinfo.is_file(), "verify kept checkdef's valid entry");
    // gc down to nothing removes checkdef's entries only.
    repo.checkdef_env(&["cache", "gc", "--max-size", "1"], &[])
        .expect_code(0);
    assert!(!ours_narinfo.exists(), "gc removed checkdef's entry");
    let after = files(&repo.cache);
    for (p, bytes) in &nixs {
        assert_eq!(
            after.get(p),
            Some(bytes),
            "{} was changed or removed by verify/gc",
            p.display()
        );
    }

    // And Nix still reads its paths from the cache.
    let fresh = testkit::Nix::new().unwrap();
    let out = fresh
        .cmd("")
        .args(["copy", "--from"])
        .arg(format!("file://{}", repo.cache.display()))
        .arg("--to")
        .arg(fresh.store_root())
        .args(["--option", "require-sigs", "false"])
        .args(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix copy --from file:// after verify and gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in &theirs {
        assert!(
            fresh.store_root().join(t.trim_start_matches('/')).is_file(),
            "{t} arrived"
        );
    }
}
