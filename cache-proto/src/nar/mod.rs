//! NAR, the Nix ARchive format: writing, parsing and unpacking.
//!
//! Wire format (as `nix-store --dump` writes it):
//!
//! ```text
//! nar   = str("nix-archive-1") node
//! node  = str("(") str("type") body str(")")
//! body  = str("regular") [ str("executable") str("") ] str("contents") str(<bytes>)
//!       | str("symlink") str("target") str(<target>)
//!       | str("directory") { str("entry") str("(") str("name") str(<name>)
//!                                         str("node") node str(")") }
//! str(s) = u64le(len(s)) s <zero padding to a multiple of 8>
//! ```
//!
//! Directory entries are sorted by the raw bytes of their names. A file is executable when its
//! owner-execute bit is set. Nothing else is recorded (no times, owners or other mode bits).
//!
//! The writer ([`dump_path`], [`write_node`]) is byte-exact with Nix 2.8. The reader ([`parse`],
//! [`validate`], [`unpack`]) is stricter than Nix, because a NAR from a cache is hostile input:
//! it rejects bad magic and tokens, names that are empty, `.`, `..` or contain `/` or NUL,
//! unsorted or duplicate entries, non-zero padding, an `executable` marker with a non-empty
//! value, symlink targets that are empty or contain NUL, lengths over [`NarLimits`],
//! truncation, and any byte after the root node. Lengths are checked before anything is
//! allocated, so a forged length costs nothing.
//!
//! [`unpack`] only creates new files (`O_EXCL`), never follows symlinks while it writes, and
//! sets modes `0o755` (directories, executables) and `0o644` (other files), like Nix's store.

//!
//! Layout: [`writer`] (serialising), [`reader`] (the strict parser and its visitors), [`unpack`]
//! (writing a NAR to disk).
mod reader;
mod unpack;
mod writer;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::hash::{HashingWriter, Sha256Hash};

use reader::*;
pub use reader::{parse, validate};
pub use unpack::unpack;
pub use writer::{dump_path, write_node};

pub(super) const MAGIC: &[u8] = b"nix-archive-1";
pub(super) const PAD: [u8; 8] = [0; 8];
/// Longest token of the grammar, so longer strings in token position fail before allocation.
pub(super) const MAX_TOKEN: u64 = 16;

/// Limits that bound the work and memory a NAR reader spends on hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarLimits {
    /// Longest entry name, in bytes (default 255, Linux's `NAME_MAX`).
    pub max_name: usize,
    /// Longest symlink target, in bytes (default 4095, Linux's `PATH_MAX` less one).
    pub max_target: usize,
    /// Largest regular file, in bytes (default 1 GiB).
    pub max_file: u64,
    /// Largest whole NAR, in bytes (default 4 GiB).
    pub max_total: u64,
    /// Deepest directory nesting (default 256).
    pub max_depth: usize,
    /// Most directory entries in the whole archive (default 1,000,000).
    pub max_entries: u64,
}

impl Default for NarLimits {
    fn default() -> Self {
        Self {
            max_name: 255,
            max_target: 4095,
            max_file: 1 << 30,
            max_total: 4 << 30,
            max_depth: 256,
            max_entries: 1_000_000,
        }
    }
}

/// Errors from writing, parsing and unpacking NARs.
#[derive(Debug, Error)]
pub enum NarError {
    /// A filesystem operation failed.
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading the NAR stream failed.
    #[error("cannot read the nar stream at offset {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// Writing the NAR stream failed.
    #[error("cannot write the nar stream")]
    Write(#[source] io::Error),
    /// A file type NAR cannot hold.
    #[error(
        "cannot archive {path}: it is a {kind}; only regular files, symlinks and directories can be archived"
    )]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A file changed while it was archived.
    #[error("file {path} changed while it was being archived")]
    FileChanged { path: PathBuf },
    /// The stream does not start with `nix-archive-1`.
    #[error("input is not a nix archive (bad magic)")]
    BadMagic,
    /// The stream ends early.
    #[error("nar is truncated at offset {offset}")]
    Truncated { offset: u64 },
    /// Another token than the grammar allows.
    #[error("expected {expected} at offset {offset} of the nar, found {found}")]
    UnexpectedToken {
        offset: u64,
        expected: &'static str,
        found: String,
    },
    /// Padding bytes that are not zero.
    #[error("non-zero padding at offset {offset} of the nar")]
    NonZeroPadding { offset: u64 },
    /// An invalid entry name.
    #[error("invalid entry name {name:?} in directory {dir:?} at offset {offset}: {reason}")]
    InvalidName {
        offset: u64,
        dir: String,
        name: String,
        reason: &'static str,
    },
    /// An invalid symlink target.
    #[error("invalid symlink target for {entry:?} at offset {offset}: {reason}")]
    InvalidTarget {
        offset: u64,
        entry: String,
        reason: &'static str,
    },
    /// Entries out of order.
    #[error(
        "entry {name:?} in directory {dir:?} at offset {offset} is not sorted after {previous:?}"
    )]
    Unsorted {
        offset: u64,
        dir: String,
        name: String,
        previous: String,
    },
    /// The same name twice in a directory.
    #[error("duplicate entry {name:?} in directory {dir:?} at offset {offset}")]
    Duplicate {
        offset: u64,
        dir: String,
        name: String,
    },
    /// A length over a [`NarLimits`] field.
    #[error("{what} of {len} bytes at offset {offset} exceeds the limit of {limit}")]
    TooLong {
        what: &'static str,
        offset: u64,
        len: u64,
        limit: u64,
    },
    /// The archive is larger than `max_total`.
    #[error("nar exceeds the limit of {limit} bytes at offset {offset}")]
    TooLarge { offset: u64, limit: u64 },
    /// Directories nested deeper than `max_depth`.
    #[error("nar nests directories deeper than {limit} at offset {offset}")]
    TooDeep { offset: u64, limit: usize },
    /// More entries than `max_entries`.
    #[error("nar has more than {limit} directory entries at offset {offset}")]
    TooManyEntries { offset: u64, limit: u64 },
    /// Bytes after the root node.
    #[error("trailing data after the nar root node at offset {offset}")]
    TrailingData { offset: u64 },
    /// [`unpack`] was given a destination that exists and is not an empty directory.
    #[error("unpack destination {path} already exists and is not an empty directory")]
    DestinationExists { path: PathBuf },
}

/// An in-memory NAR tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarNode {
    /// A regular file.
    Regular { executable: bool, contents: Vec<u8> },
    /// A symbolic link, stored verbatim.
    Symlink { target: Vec<u8> },
    /// A directory; the map keeps entries sorted by raw bytes, as NAR requires.
    Directory(BTreeMap<Vec<u8>, NarNode>),
}

impl NarNode {
    /// Serialises the tree as a NAR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NarError> {
        let mut out = Vec::new();
        write_node(self, &mut out)?;
        Ok(out)
    }

    /// The NAR hash and size of this tree.
    pub fn nar_hash(&self) -> Result<(Sha256Hash, u64), NarError> {
        let mut w = HashingWriter::new(io::sink());
        write_node(self, &mut w)?;
        let (_, hash, size) = w.finish();
        Ok((hash, size))
    }
}

pub(super) fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

pub(super) fn show(bytes: &[u8]) -> String {
    crate::clip(&String::from_utf8_lossy(bytes))
}

pub(super) fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("name is empty")
    } else if name == b"." || name == b".." {
        Err("name is '.' or '..'")
    } else if name.contains(&b'/') {
        Err("name contains '/'")
    } else if name.contains(&0) {
        Err("name contains a nul byte")
    } else {
        Ok(())
    }
}

pub(super) fn check_target(target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        Err("target is empty")
    } else if target.contains(&0) {
        Err("target contains a nul byte")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(contents: &[u8], executable: bool) -> NarNode {
        NarNode::Regular {
            executable,
            contents: contents.to_vec(),
        }
    }

    fn vector2_tree() -> NarNode {
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

    #[test]
    fn vector1_in_memory() {
        let bytes = reg(b"hello binary cache\n", false).to_bytes().unwrap();
        assert_eq!(bytes.len(), 136);
        assert_eq!(
            Sha256Hash::digest(&bytes).to_hex(),
            "819a98f92c3d6b263f3fc3a29c019f340e4cfc89fc1465fa6144495ca738768a"
        );
        assert_eq!(
            parse(&bytes[..], &NarLimits::default()).unwrap(),
            reg(b"hello binary cache\n", false)
        );
    }

    #[test]
    fn vector2_in_memory() {
        let tree = vector2_tree();
        let bytes = tree.to_bytes().unwrap();
        assert_eq!(bytes.len(), 1080);
        assert_eq!(
            Sha256Hash::digest(&bytes).to_hex(),
            "009757b7c64967ed2bcd55812745b222656d5f406641a1d1013de008a7ec3cc6"
        );
        assert_eq!(tree.nar_hash().unwrap().1, 1080);
        assert_eq!(parse(&bytes[..], &NarLimits::default()).unwrap(), tree);
        assert_eq!(validate(&bytes[..], &NarLimits::default()).unwrap(), 1080);
    }

    #[test]
    fn writer_rejects_bad_names() {
        let mut root = BTreeMap::new();
        root.insert(b"..".to_vec(), reg(b"", false));
        assert!(matches!(
            NarNode::Directory(root).to_bytes(),
            Err(NarError::InvalidName { .. })
        ));
        assert!(matches!(
            NarNode::Symlink { target: vec![] }.to_bytes(),
            Err(NarError::InvalidTarget { .. })
        ));
    }

    #[test]
    fn trailing_and_truncated() {
        let mut bytes = vector2_tree().to_bytes().unwrap();
        for cut in [0, 5, 8, 100, 1079] {
            let err = parse(&bytes[..cut], &NarLimits::default()).unwrap_err();
            assert!(
                matches!(err, NarError::Truncated { .. } | NarError::BadMagic),
                "{cut}: {err}"
            );
        }
        bytes.push(0);
        assert!(matches!(
            parse(&bytes[..], &NarLimits::default()),
            Err(NarError::TrailingData { offset: 1080 })
        ));
    }
}
