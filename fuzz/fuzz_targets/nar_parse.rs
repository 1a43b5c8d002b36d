//! `nar::parse` and `nar::validate` on arbitrary bytes, with small limits: never panic, agree
//! with each other, and every accepted archive is canonical (writing the tree back gives the
//! input bytes exactly, and its hash and size are those of the input).
#![no_main]

use cache_proto::hash::Sha256Hash;
use cache_proto::nar::{self, NarLimits};
use libfuzzer_sys::fuzz_target;

fn limits() -> NarLimits {
    NarLimits {
        max_name: 64,
        max_target: 256,
        max_file: 1 << 20,
        max_total: 4 << 20,
        max_depth: 32,
        max_entries: 10_000,
    }
}

fuzz_target!(|data: &[u8]| {
    let l = limits();
    let parsed = nar::parse(data, &l);
    let validated = nar::validate(data, &l);
    match (&parsed, &validated) {
        (Ok(tree), Ok(len)) => {
            assert_eq!(*len, data.len() as u64);
            let bytes = tree.to_bytes().expect("an accepted tree can be written");
            assert_eq!(bytes, data, "accepted NARs are canonical");
            let (hash, size) = tree.nar_hash().expect("hashing an accepted tree");
            assert_eq!(size, data.len() as u64);
            assert_eq!(hash, Sha256Hash::digest(data));
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "parse and validate disagree: {:?} vs {:?}",
            parsed.as_ref().err(),
            validated.as_ref().err()
        ),
    }
});
