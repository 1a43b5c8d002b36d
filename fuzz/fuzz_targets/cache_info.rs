//! `CacheInfo::parse` on arbitrary text: never panics, and what it accepts round-trips through
//! `render`.
#![no_main]

use cache_proto::cache_info::CacheInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(info) = CacheInfo::parse(text) else {
        return;
    };
    let again = CacheInfo::parse(&info.render()).expect("a rendered nix-cache-info parses");
    assert_eq!(again, info);
});
