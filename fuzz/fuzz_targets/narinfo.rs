//! `NarInfo::parse` on arbitrary text: never panics, and whatever it accepts renders to a
//! narinfo that parses back to the same rendering (parse ∘ render is a fixed point), with the
//! same fingerprint.
#![no_main]

use cache_proto::narinfo::NarInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(info) = NarInfo::parse(text) else {
        return;
    };
    let rendered = info.render();
    let again = NarInfo::parse(&rendered).expect("a rendered narinfo parses");
    assert_eq!(again.render(), rendered, "render is a fixed point");
    assert_eq!(again.fingerprint(), info.fingerprint());
    assert!(info.verify(&[]).is_none(), "no key, no valid signature");
    let _ = info.reference_paths();
    let _ = info.content_address_matches();
});
