//! Shared fixtures: the deterministic key of the reference (§7.1), the NAR vector trees, and
//! a raw NAR builder for hostile archives.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use cache_proto::nar::{self, NarNode};
use cache_proto::{PublicKey, SecretKey};

pub const SECRET: &str = "test-cache-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==";
pub const PUBLIC: &str = "test-cache-1:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";

pub fn secret() -> SecretKey {
    SecretKey::parse(SECRET).unwrap()
}

pub fn public() -> PublicKey {
    PublicKey::parse(PUBLIC).unwrap()
}

/// Writes a file and sets its mode exactly (independent of the umask).
pub fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The tree of NAR test vector 2 (§1.4), created under `root/t`.
pub fn vector2_dir(root: &Path) -> PathBuf {
    let t = root.join("t");
    fs::create_dir_all(t.join("sub")).unwrap();
    write_file(&t.join("a.txt"), b"hi\n", 0o644);
    write_file(&t.join("run.sh"), b"#!/bin/sh\necho ok\n", 0o755);
    std::os::unix::fs::symlink("a.txt", t.join("link")).unwrap();
    write_file(&t.join("sub/b"), b"x", 0o644);
    t
}

/// The NAR of a path, via `dump_path`.
pub fn dump(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let n = nar::dump_path(path, &mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

/// The tree of vector 2, in memory.
pub fn vector2_tree() -> NarNode {
    let reg = |c: &[u8], executable| NarNode::Regular {
        executable,
        contents: c.to_vec(),
    };
    let mut sub = BTreeMap::new();
    sub.insert(b"b".to_vec(), reg(b"x", false));
    let mut root = BTreeMap::new();
    root.insert(b"a.txt".to_vec(), reg(b"hi\n", false));
    root.insert(
        b"link".to_vec(),
        NarNode::Symlink {
            target: b"a.txt".to_vec(),
        },
    );
    root.insert(b"run.sh".to_vec(), reg(b"#!/bin/sh\necho ok\n", true));
    root.insert(b"sub".to_vec(), NarNode::Directory(sub));
    NarNode::Directory(root)
}

/// Builds NAR byte streams token by token, including invalid ones.
#[derive(Default, Clone)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    pub fn new() -> Self {
        Self::default()
    }

    /// A NAR string: length, bytes, zero padding.
    pub fn s(mut self, bytes: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len() + (8 - bytes.len() % 8) % 8, 0);
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn cat(mut self, other: Raw) -> Self {
        self.0.extend_from_slice(&other.0);
        self
    }

    pub fn magic() -> Self {
        Self::new().s(b"nix-archive-1")
    }

    pub fn regular(contents: &[u8]) -> Self {
        Self::new()
            .s(b"(")
            .s(b"type")
            .s(b"regular")
            .s(b"contents")
            .s(contents)
            .s(b")")
    }

    pub fn symlink(target: &[u8]) -> Self {
        Self::new()
            .s(b"(")
            .s(b"type")
            .s(b"symlink")
            .s(b"target")
            .s(target)
            .s(b")")
    }

    pub fn entry(name: &[u8], node: Raw) -> Self {
        Self::new()
            .s(b"entry")
            .s(b"(")
            .s(b"name")
            .s(name)
            .s(b"node")
            .cat(node)
            .s(b")")
    }

    pub fn dir(entries: Vec<Raw>) -> Self {
        let mut r = Self::new().s(b"(").s(b"type").s(b"directory");
        for e in entries {
            r = r.cat(e);
        }
        r.s(b")")
    }

    /// A whole archive around a root node.
    pub fn nar(root: Raw) -> Vec<u8> {
        Self::magic().cat(root).0
    }
}
