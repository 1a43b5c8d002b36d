//! `checkdef::config::Config::parse` on configurations whose globs are built from a short
//! fuzzed unit repeated up to hundreds of kilobytes: globs that parse but may be too large for
//! the glob engine, alone or together. Loading builds the matcher, so it must either succeed
//! (and then every matcher works) or fail with a located error — never panic.
//!
//! Input: two bytes of repetition count, one byte of glob count (1–8), one byte choosing the
//! list (`include`, `exclude`, `[defaults] exclude`, `tests`), then the unit (UTF-8, made safe
//! for a TOML basic string).
#![no_main]

use std::path::Path;

use checkdef::config::{Config, MatchScratch};
use libfuzzer_sys::fuzz_target;

/// Most bytes of globs one input may produce (the engine's limits are around a few MB).
const MAX_TOTAL: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, count, list, unit @ ..] = data else {
        return;
    };
    let unit: String = String::from_utf8_lossy(unit)
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    if unit.is_empty() {
        return;
    }
    let count = usize::from(count % 8) + 1;
    let reps =
        (usize::from(u16::from_be_bytes([*hi, *lo])) + 1).min(MAX_TOTAL / count / unit.len());
    let globs: Vec<String> = (0..count)
        .map(|i| format!("\"g{i}/{}\"", unit.repeat(reps.max(1))))
        .collect();
    let globs = globs.join(", ");
    let text = match list % 4 {
        0 => format!(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [{globs}]\ncommand = \"true\"\n"
        ),
        1 => format!(
            "version = 1\n[[segment]]\nname = \"a\"\ninclude = [\"src/**\"]\nexclude = [{globs}]\ncommand = \"true\"\n"
        ),
        2 => format!(
            "version = 1\n[defaults]\nexclude = [{globs}]\n[[segment]]\nname = \"a\"\ninclude = [\"src/**\"]\ncommand = \"true\"\n"
        ),
        _ => format!("version = 1\n[[segment]]\nname = \"a\"\ntests = [{globs}]\n"),
    };
    match Config::parse(&text, Path::new("checkdef.toml")) {
        Ok(config) => {
            let matcher = config.matcher();
            let mut scratch = MatchScratch::default();
            let mut out = Vec::new();
            for path in [&b"src/a.py"[..], b"g0/x", b"g1/aaaa", b"\xff"] {
                matcher.segments_for(path, &mut scratch, &mut out);
                for &i in &out {
                    assert!(config.segments[i as usize].is_match(path));
                }
                for seg in &config.segments {
                    let _ = seg.is_match(path);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("checkdef.toml:"), "unlocated error: {msg}");
            assert!(msg.len() < 4096, "error of {} bytes", msg.len());
        }
    }
});
