//! `dump_path` and `unpack` on real files.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use cache_proto::nar::{self, NarError, NarLimits, NarNode};

use crate::common::{self, dump};

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn unpack_then_dump_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::vector2_dir(tmp.path());
    let bytes = dump(&src);
    let dest = tmp.path().join("out");
    nar::unpack(&bytes[..], &dest, &NarLimits::default()).unwrap();
    assert_eq!(dump(&dest), bytes);
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(mode(&dest.join("a.txt")), 0o644);
    assert_eq!(mode(&dest.join("run.sh")), 0o755);
    assert_eq!(mode(&dest.join("sub")), 0o755);
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap().to_str(),
        Some("a.txt")
    );

    // Into an existing empty directory.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    nar::unpack(&bytes[..], &empty, &NarLimits::default()).unwrap();
    assert_eq!(dump(&empty), bytes);

    // A single file and a single symlink as the root.
    let f = NarNode::Regular {
        executable: true,
        contents: b"#!/bin/sh\n".to_vec(),
    }
    .to_bytes()
    .unwrap();
    let fdest = tmp.path().join("file");
    nar::unpack(&f[..], &fdest, &NarLimits::default()).unwrap();
    assert_eq!(mode(&fdest), 0o755);
    assert_eq!(dump(&fdest), f);
    let l = NarNode::Symlink {
        target: b"/nonexistent".to_vec(),
    }
    .to_bytes()
    .unwrap();
    let ldest = tmp.path().join("link");
    nar::unpack(&l[..], &ldest, &NarLimits::default()).unwrap();
    assert_eq!(dump(&ldest), l);
}

#[test]
fn unpack_refuses_used_destinations() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = common::vector2_tree().to_bytes().unwrap();
    let full = tmp.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"").unwrap();
    assert!(matches!(
        nar::unpack(&bytes[..], &full, &NarLimits::default()),
        Err(NarError::DestinationExists { .. })
    ));
    assert_eq!(fs::read(full.join("x")).unwrap(), b"");
    let file = tmp.path().join("file");
    fs::write(&file, b"data").unwrap();
    assert!(matches!(
        nar::unpack(&bytes[..], &file, &NarLimits::default()),
        Err(NarError::DestinationExists { .. })
    ));
    // A symlink to an empty directory is not followed.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    assert!(matches!(
        nar::unpack(&bytes[..], &link, &NarLimits::default()),
        Err(NarError::DestinationExists { .. })
    ));
    assert!(fs::read_dir(&empty).unwrap().next().is_none());
}

#[test]
fn dump_rejects_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    fs::create_dir(&d).unwrap();
    let sock = d.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = nar::dump_path(&d, &mut Vec::new()).unwrap_err();
    match &err {
        NarError::UnsupportedFileType { path, kind } => {
            assert_eq!(path, &sock);
            assert_eq!(*kind, "socket");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("sock"));
    let missing = tmp.path().join("missing");
    match nar::dump_path(&missing, &mut Vec::new()).unwrap_err() {
        NarError::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn dump_of_empty_dir_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("empty");
    fs::create_dir(&d).unwrap();
    assert_eq!(
        dump(&d),
        NarNode::Directory(Default::default()).to_bytes().unwrap()
    );
    let f = tmp.path().join("f");
    common::write_file(&f, b"", 0o600);
    assert_eq!(
        dump(&f),
        NarNode::Regular {
            executable: false,
            contents: vec![]
        }
        .to_bytes()
        .unwrap()
    );
}
