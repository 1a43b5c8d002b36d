//! `checkdef::config::Config::parse` on arbitrary text: never panics (every error is a located
//! `ConfigError`), and an accepted configuration can match paths with its compiled globs.
#![no_main]

use std::path::Path;

use checkdef::config::{Config, MatchScratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("checkdef.toml")) {
        Ok(config) => {
            let matcher = config.matcher();
            let mut scratch = MatchScratch::default();
            let mut out = Vec::new();
            for path in [
                &b"src/a.py"[..],
                b"tests/test_x.py",
                b"a/b/c",
                b"README.md",
                b"\xff",
            ] {
                matcher.segments_for(path, &mut scratch, &mut out);
                for &i in &out {
                    assert!((i as usize) < config.segments.len());
                    assert!(config.segments[i as usize].is_match(path));
                }
                for seg in &config.segments {
                    let _ = seg.is_match(path);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("checkdef.toml"), "unlocated error: {msg}");
        }
    }
});
