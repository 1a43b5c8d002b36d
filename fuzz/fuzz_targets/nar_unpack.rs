//! `nar::unpack` of arbitrary bytes into `<tmp>/jail/out`: never panics, and never creates,
//! changes or removes anything outside `out` — not in `jail`, and not through a symlink the
//! archive planted (a sibling `bait` directory stays untouched). On error, `out` is gone.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use cache_proto::nar::{self, NarLimits};
use libfuzzer_sys::fuzz_target;

fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let limits = NarLimits {
        max_name: 64,
        max_target: 256,
        max_file: 64 << 10,
        max_total: 1 << 20,
        max_depth: 16,
        max_entries: 256,
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let jail = tmp.path().join("jail");
    let bait = tmp.path().join("bait");
    std::fs::create_dir(&jail).unwrap();
    std::fs::create_dir(&bait).unwrap();
    std::fs::write(bait.join("keep"), b"keep").unwrap();
    let out = jail.join("out");
    let result = nar::unpack(data, &out, &limits);
    // Only `jail/out` (and what is below it) may exist in `jail`.
    for p in listing(&jail) {
        assert!(
            p == "out" || p.starts_with("out/"),
            "unpack created jail/{p}"
        );
    }
    assert_eq!(
        listing(&bait),
        BTreeSet::from(["keep".to_owned()]),
        "unpack touched a sibling directory"
    );
    assert_eq!(std::fs::read(bait.join("keep")).unwrap(), b"keep");
    let top = listing(tmp.path());
    for p in &top {
        assert!(
            p == "jail" || p == "bait" || p.starts_with("jail/") || p.starts_with("bait/"),
            "unpack created {p} next to the destination"
        );
    }
    match result {
        Ok(()) => {
            // What was unpacked archives back to the same bytes.
            let mut again = Vec::new();
            nar::dump_path(&out, &mut again).expect("dump what was unpacked");
            assert_eq!(again, data, "unpack then dump is the identity");
        }
        Err(_) => assert!(
            std::fs::symlink_metadata(&out).is_err(),
            "a failed unpack left {} behind",
            out.display()
        ),
    }
});
