//! Hostile NARs: each must be a clean error (never a panic), and `unpack` must write nothing
//! outside its destination and leave no partial destination behind.

use std::fs;
use std::path::Path;

use cache_proto::nar::{self, NarError, NarLimits};

use crate::common::{self, Raw};

/// Names of the entries of a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs the archive through `parse`, `validate` and `unpack`, checks that all three fail, that
/// nothing appeared outside the destination and that the destination is gone. Returns the
/// error of `parse`.
fn reject(bytes: &[u8], limits: &NarLimits) -> NarError {
    let parse_err = nar::parse(bytes, limits).expect_err("parse must fail");
    nar::validate(bytes, limits).expect_err("validate must fail");

    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("sentinel"), b"keep").unwrap();
    let dest = tmp.path().join("dest");
    let unpack_err = nar::unpack(bytes, &dest, limits).expect_err("unpack must fail");
    assert_eq!(
        std::mem::discriminant(&unpack_err),
        std::mem::discriminant(&parse_err),
        "unpack: {unpack_err}; parse: {parse_err}"
    );
    assert_eq!(
        listing(tmp.path()),
        ["outside"],
        "partial destination left behind"
    );
    assert_eq!(listing(&outside), ["sentinel"]);
    assert_eq!(fs::read(outside.join("sentinel")).unwrap(), b"keep");

    // Also into an existing empty directory: it stays, empty.
    let dest2 = tmp.path().join("dest2");
    fs::create_dir(&dest2).unwrap();
    nar::unpack(bytes, &dest2, limits).expect_err("unpack into empty dir must fail");
    assert!(listing(&dest2).is_empty());
    assert_eq!(listing(&outside), ["sentinel"]);
    parse_err
}

fn dir_with(entries: Vec<Raw>) -> Vec<u8> {
    Raw::nar(Raw::dir(entries))
}

fn file(name: &[u8]) -> Raw {
    Raw::entry(name, Raw::regular(b"pwned"))
}

#[test]
fn bad_names() {
    for name in [&b".."[..], b".", b"a/b", b"/abs", b"a\0b", b"", b"../x"] {
        let err = reject(&dir_with(vec![file(name)]), &NarLimits::default());
        assert!(
            matches!(err, NarError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
}

#[test]
fn unsorted_and_duplicate_entries() {
    let err = reject(
        &dir_with(vec![file(b"b"), file(b"a")]),
        &NarLimits::default(),
    );
    assert!(matches!(err, NarError::Unsorted { .. }), "{err}");
    let err = reject(
        &dir_with(vec![file(b"a"), file(b"a")]),
        &NarLimits::default(),
    );
    assert!(matches!(err, NarError::Duplicate { .. }), "{err}");
}

#[test]
fn symlink_then_file_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("victim");
    fs::create_dir(&target).unwrap();
    let t = target.to_str().unwrap().as_bytes();
    // `a -> victim`, then a directory `a` holding `b`: a duplicate name.
    let bytes = dir_with(vec![
        Raw::entry(b"a", Raw::symlink(t)),
        Raw::entry(b"a", Raw::dir(vec![file(b"b")])),
    ]);
    let err = reject(&bytes, &NarLimits::default());
    assert!(matches!(err, NarError::Duplicate { .. }), "{err}");
    // `a -> victim`, then an entry named `a/b`.
    let bytes = dir_with(vec![Raw::entry(b"a", Raw::symlink(t)), file(b"a/b")]);
    let err = reject(&bytes, &NarLimits::default());
    assert!(matches!(err, NarError::InvalidName { .. }), "{err}");
    // `a -> victim` then a later sibling: fine, but nothing is written into the victim.
    let bytes = dir_with(vec![Raw::entry(b"a", Raw::symlink(t)), file(b"b")]);
    let dest = tmp.path().join("dest");
    nar::unpack(&bytes[..], &dest, &NarLimits::default()).unwrap();
    assert!(fs::read_dir(&target).unwrap().next().is_none());
    assert_eq!(fs::read_link(dest.join("a")).unwrap(), target);
}

#[test]
fn bad_padding() {
    let mut bytes = Raw::nar(Raw::regular(b"x"));
    // The contents "x" come right before their 7 padding bytes and the closing ")".
    let pos = bytes.len() - 24;
    assert_eq!(bytes[pos], b'x');
    bytes[pos + 1] = 1;
    let err = reject(&bytes, &NarLimits::default());
    assert!(matches!(err, NarError::NonZeroPadding { .. }), "{err}");
    // Padding of a token.
    let mut bytes = Raw::nar(Raw::regular(b""));
    bytes[8 + 13] = b'!';
    assert!(matches!(
        reject(&bytes, &NarLimits::default()),
        NarError::BadMagic
    ));
}

#[test]
fn huge_length_claims() {
    let limits = NarLimits::default();
    // A file claiming 2^60 bytes.
    let bytes = Raw::magic()
        .s(b"(")
        .s(b"type")
        .s(b"regular")
        .s(b"contents")
        .u64(1 << 60)
        .raw(b"short")
        .0;
    let err = reject(&bytes, &limits);
    assert!(
        matches!(err, NarError::TooLong { what: "file", .. }),
        "{err}"
    );
    // Within max_file but over max_total.
    let small = NarLimits {
        max_total: 4096,
        ..limits
    };
    let bytes = Raw::magic()
        .s(b"(")
        .s(b"type")
        .s(b"regular")
        .s(b"contents")
        .u64(100_000)
        .0;
    let err = reject(&bytes, &small);
    assert!(matches!(err, NarError::TooLarge { .. }), "{err}");
    // Within every limit, but the data is missing.
    let bytes = Raw::magic()
        .s(b"(")
        .s(b"type")
        .s(b"regular")
        .s(b"contents")
        .u64(1 << 20)
        .raw(&[7u8; 100])
        .0;
    let err = reject(&bytes, &limits);
    assert!(matches!(err, NarError::Truncated { .. }), "{err}");
    // A name, a symlink target and a token claiming u64::MAX bytes.
    let bytes = Raw::magic()
        .s(b"(")
        .s(b"type")
        .s(b"directory")
        .s(b"entry")
        .s(b"(")
        .s(b"name")
        .u64(u64::MAX)
        .0;
    let err = reject(&bytes, &limits);
    assert!(
        matches!(
            err,
            NarError::TooLong {
                what: "entry name",
                ..
            }
        ),
        "{err}"
    );
    let bytes = Raw::magic()
        .s(b"(")
        .s(b"type")
        .s(b"symlink")
        .s(b"target")
        .u64(u64::MAX)
        .0;
    let err = reject(&bytes, &limits);
    assert!(
        matches!(
            err,
            NarError::TooLong {
                what: "symlink target",
                ..
            }
        ),
        "{err}"
    );
    let bytes = Raw::magic().u64(u64::MAX).0;
    let err = reject(&bytes, &limits);
    assert!(matches!(err, NarError::UnexpectedToken { .. }), "{err}");
    let bytes = Raw::new().u64(u64::MAX).0;
    assert!(matches!(reject(&bytes, &limits), NarError::BadMagic));
}

#[test]
fn truncated_everywhere() {
    let bytes = common::vector2_tree().to_bytes().unwrap();
    for cut in 0..bytes.len() {
        let err = nar::parse(&bytes[..cut], &NarLimits::default()).unwrap_err();
        assert!(
            matches!(err, NarError::Truncated { .. } | NarError::BadMagic),
            "cut at {cut}: {err}"
        );
    }
    for cut in [7, 300, 700, 1000, 1079] {
        reject(&bytes[..cut], &NarLimits::default());
    }
}

#[test]
fn trailing_garbage() {
    let mut bytes = common::vector2_tree().to_bytes().unwrap();
    bytes.extend_from_slice(&Raw::regular(b"second root").0);
    let err = reject(&bytes, &NarLimits::default());
    assert!(
        matches!(err, NarError::TrailingData { offset: 1080 }),
        "{err}"
    );
}

#[test]
fn bad_magic_and_tokens() {
    let limits = NarLimits::default();
    assert!(matches!(
        reject(
            &Raw::new().s(b"nix-archive-2").cat(Raw::regular(b"")).0,
            &limits
        ),
        NarError::BadMagic
    ));
    assert!(matches!(reject(b"", &limits), NarError::BadMagic));
    assert!(matches!(
        reject(b"\x28\xb5\x2f\xfd garbage", &limits),
        NarError::BadMagic
    ));
    let fifo = Raw::nar(Raw::new().s(b"(").s(b"type").s(b"fifo").s(b")"));
    assert!(matches!(
        reject(&fifo, &limits),
        NarError::UnexpectedToken { .. }
    ));
    let exec_with_value = Raw::nar(
        Raw::new()
            .s(b"(")
            .s(b"type")
            .s(b"regular")
            .s(b"executable")
            .s(b"yes")
            .s(b"contents")
            .s(b"")
            .s(b")"),
    );
    assert!(matches!(
        reject(&exec_with_value, &limits),
        NarError::UnexpectedToken { .. }
    ));
    let no_close = Raw::magic().cat(
        Raw::new()
            .s(b"(")
            .s(b"type")
            .s(b"regular")
            .s(b"contents")
            .s(b"")
            .s(b"("),
    );
    assert!(matches!(
        reject(&no_close.0, &limits),
        NarError::UnexpectedToken { .. }
    ));
}

#[test]
fn bad_symlink_targets() {
    for target in [&b""[..], b"a\0b"] {
        let err = reject(&Raw::nar(Raw::symlink(target)), &NarLimits::default());
        assert!(matches!(err, NarError::InvalidTarget { .. }), "{err}");
    }
}

#[test]
fn depth_and_entry_limits() {
    let mut node = Raw::regular(b"deep");
    for _ in 0..300 {
        node = Raw::dir(vec![Raw::entry(b"d", node)]);
    }
    let err = reject(&Raw::nar(node), &NarLimits::default());
    assert!(matches!(err, NarError::TooDeep { limit: 256, .. }), "{err}");

    let many = dir_with((0..5u8).map(|i| file(&[b'a' + i])).collect());
    let limits = NarLimits {
        max_entries: 4,
        ..NarLimits::default()
    };
    let err = reject(&many, &limits);
    assert!(
        matches!(err, NarError::TooManyEntries { limit: 4, .. }),
        "{err}"
    );
    let long_name = dir_with(vec![file(&[b'n'; 256])]);
    let err = reject(&long_name, &NarLimits::default());
    assert!(
        matches!(
            err,
            NarError::TooLong {
                what: "entry name",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn random_garbage_never_panics() {
    let valid = common::vector2_tree().to_bytes().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut bytes = valid.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = next() as u8;
        }
        // Whatever the parser accepts must be canonical: writing it back gives the input.
        if let Ok(tree) = nar::parse(&bytes[..], &NarLimits::default()) {
            assert_eq!(tree.to_bytes().unwrap(), bytes);
        }
    }
}
