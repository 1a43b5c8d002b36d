//! The Nix binary cache protocol, as spoken by Nix 2.8.
//!
//! This crate keeps the pure formats apart from I/O:
//!
//! * [`nix32`]: Nix's base-32 encoding (reversed bit order, alphabet without `e o t u`).
//! * [`hash`]: SHA-256 digests in Nix's notations (`sha256:<nix32>`, `sha256:<hex>`, SRI).
//! * [`store_path`]: `/nix/store/<hash>-<name>` paths and `makeStorePath`.
//! * [`nar`]: the NAR archive format (streaming writer, hardened reader and unpacker).
//! * [`narinfo`]: `.narinfo` files, their fingerprints and signatures.
//! * [`signing`]: Nix's ed25519 key format (`name:base64`).
//! * [`cache_info`]: the `nix-cache-info` file at the cache root.
//! * [`redact`]: URLs and secrets in the form that is safe to print.
//! * [`compression`]: the NAR compressions (`none`, `xz`, `bzip2`, `zstd`) with bounded output.
//! * [`store`]: the I/O layer, a `file://` store, an HTTP store (GET/HEAD/PUT) and an S3
//!   store (the same objects, SigV4-signed).
//!
//! The library never prints; every failure is a typed error naming the offending field, line,
//! path or URL.
#![forbid(unsafe_code)]

pub mod cache_info;
pub mod compression;
pub mod hash;
pub mod nar;
pub mod narinfo;
pub mod nix32;
pub mod redact;
pub mod signing;
pub mod store;
pub mod store_path;

pub use cache_info::CacheInfo;
pub use compression::Compression;
pub use hash::Sha256Hash;
pub use nar::{NarLimits, NarNode};
pub use narinfo::NarInfo;
pub use redact::{RedactedUrl, Secret};
pub use signing::{PublicKey, SecretKey};
pub use store::{
    Fetched, FileStore, HttpConfig, HttpStore, PublishOutcome, S3Config, S3Store, Store,
    StoreError, Trust,
};
pub use store_path::{STORE_DIR, StorePath};

/// Shortens a value taken from untrusted input so that error messages stay readable.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
