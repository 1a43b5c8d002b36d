//! Nix store paths and their computation.
//!
//! Wire format: `/nix/store/<hash part>-<name>`. The hash part is 32 nix-base32 characters (a
//! 160-bit digest); the name uses only `[A-Za-z0-9+\-._?=]`, does not start with `.` and has at
//! most 211 characters (Nix 2.8 rejects 212 with "has a name longer than 211 characters").
//!
//! [`make_store_path`] mirrors Nix's `makeStorePath`:
//!
//! ```text
//! fingerprint = "<type>:sha256:<inner hash, hex>:/nix/store:<name>"
//! hash part   = nix32(xor-fold-to-20-bytes(sha256(fingerprint)))
//! ```
//!
//! [`for_input_key`] mints an input-addressed path from a tool's own input key (scheme A of the
//! reference: type `output:out`, inner hash `sha256(key)`), the way Nix names derivation outputs.
//! [`make_fixed_output_path`] and [`make_text_path`] give the content-addressed paths of
//! `nix-store --add`, `--add-fixed` and `builtins.toFile`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::clip;
use crate::hash::Sha256Hash;
use crate::nix32;

/// The only store directory this crate supports.
pub const STORE_DIR: &str = "/nix/store";
/// Length of the hash part of a base name.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix 2.8 accepts.
pub const MAX_NAME_LEN: usize = 211;

/// Errors about store paths and names.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorePathError {
    /// The path is not directly inside `/nix/store`.
    #[error("store path {path:?} is not directly inside {STORE_DIR}")]
    NotInStore { path: String },
    /// Too short to hold 32 hash characters, a dash and a name.
    #[error("store path {path:?} is too short to hold a hash part and a name")]
    TooShort { path: String },
    /// A character outside nix-base32 in the hash part.
    #[error("store path {path:?} contains illegal nix-base32 character {ch:?} in its hash part")]
    BadHashChar { path: String, ch: char },
    /// No `-` between the hash part and the name.
    #[error("store path {path:?} lacks the '-' after its hash part")]
    MissingDash { path: String },
    /// The name is empty.
    #[error("store path name is empty")]
    EmptyName,
    /// The name is longer than 211 characters.
    #[error("store path name {name:?} has {len} characters, more than the limit of 211")]
    NameTooLong { name: String, len: usize },
    /// The name starts with a dot.
    #[error("store path name {name:?} starts with a dot")]
    LeadingDot { name: String },
    /// The name contains a character outside `[A-Za-z0-9+\-._?=]`.
    #[error("store path name {name:?} contains illegal character {ch:?}")]
    BadNameChar { name: String, ch: char },
    /// A flat or non-recursive fixed-output path was asked to carry references.
    #[error("flat fixed-output path {name:?} cannot have references")]
    FlatWithReferences { name: String },
}

/// Checks a store path name against Nix's rules.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong {
            name: clip(name),
            len: name.chars().count(),
        });
    }
    if name.starts_with('.') {
        return Err(StorePathError::LeadingDot { name: clip(name) });
    }
    if let Some(ch) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
    {
        return Err(StorePathError::BadNameChar {
            name: clip(name),
            ch,
        });
    }
    Ok(())
}

/// A store path: a 32-character nix-base32 hash part and a valid name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    /// `<hash part>-<name>`, validated.
    base: String,
}

impl StorePath {
    /// Parses a full path, `/nix/store/<hash>-<name>`.
    pub fn parse(full: &str) -> Result<Self, StorePathError> {
        let base = full
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base| !base.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore { path: clip(full) })?;
        Self::check_base(base, full)
    }

    /// Parses a base name, `<hash>-<name>` (the form used in `References:` and `Deriver:`).
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        Self::check_base(base, base)
    }

    /// Builds a path from a hash part and a name, validating both.
    pub fn from_parts(hash_part: &str, name: &str) -> Result<Self, StorePathError> {
        Self::from_base_name(&format!("{hash_part}-{name}"))
    }

    fn check_base(base: &str, shown: &str) -> Result<Self, StorePathError> {
        if base.len() < HASH_PART_LEN + 2 {
            if let Some(ch) = base.chars().find(|&c| c == '/') {
                return Err(StorePathError::BadHashChar {
                    path: clip(shown),
                    ch,
                });
            }
            return Err(StorePathError::TooShort { path: clip(shown) });
        }
        if let Some(ch) = base
            .chars()
            .take(HASH_PART_LEN)
            .find(|&c| !nix32::is_nix32_char(c))
        {
            return Err(StorePathError::BadHashChar {
                path: clip(shown),
                ch,
            });
        }
        // The first 32 characters are ASCII, so byte 32 is a char boundary.
        if base.as_bytes()[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::MissingDash { path: clip(shown) });
        }
        validate_name(&base[HASH_PART_LEN + 1..])?;
        Ok(Self {
            base: base.to_owned(),
        })
    }

    /// The 32-character hash part, which names the `.narinfo` file.
    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_PART_LEN]
    }

    /// The name after the dash.
    pub fn name(&self) -> &str {
        &self.base[HASH_PART_LEN + 1..]
    }

    /// `<hash>-<name>`, as an owned string.
    pub fn base_name(&self) -> String {
        self.base.clone()
    }

    /// `<hash>-<name>`, borrowed.
    pub fn as_base_name(&self) -> &str {
        &self.base
    }

    /// `/nix/store/<hash>-<name>`.
    pub fn to_full_path(&self) -> String {
        format!("{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Display for StorePath {
    /// The full path, `/nix/store/<hash>-<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({STORE_DIR}/{})", self.base)
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// XOR-folds a digest to `size` bytes (Nix's `compressHash`).
pub fn compress_hash(digest: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    if size == 0 {
        return out;
    }
    for (i, b) in digest.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

/// Nix's `makeStorePath(type, inner, name)` for the store directory `/nix/store`.
pub fn make_store_path(
    type_: &str,
    inner: &Sha256Hash,
    name: &str,
) -> Result<StorePath, StorePathError> {
    validate_name(name)?;
    let fingerprint = format!("{type_}:sha256:{}:{STORE_DIR}:{name}", inner.to_hex());
    let digest = Sha256Hash::digest(fingerprint.as_bytes());
    let hash_part = nix32::encode(&compress_hash(&digest.0, 20));
    Ok(StorePath {
        base: format!("{hash_part}-{name}"),
    })
}

/// The input-addressed path for a result keyed by `key` (scheme A: `inner = sha256(key)`, type
/// `output:out`). `key` should name the tool, its version and the input hash.
pub fn for_input_key(key: &str, name: &str) -> Result<StorePath, StorePathError> {
    make_store_path("output:out", &Sha256Hash::digest(key.as_bytes()), name)
}

fn type_with_refs(base: &str, references: &[StorePath], self_ref: bool) -> String {
    let mut refs: Vec<String> = references.iter().map(StorePath::to_full_path).collect();
    refs.sort();
    refs.dedup();
    let mut t = base.to_owned();
    for r in refs {
        t.push(':');
        t.push_str(&r);
    }
    if self_ref {
        t.push_str(":self");
    }
    t
}

/// The path of a fixed-output (content-addressed) store object. With `recursive` the hash is
/// the sha256 of the NAR (`nix-store --add`, CA `fixed:r:sha256:…`, type `source`); without,
/// it is the sha256 of the flat file (`--add-fixed sha256`, CA `fixed:sha256:…`), which cannot
/// have references.
pub fn make_fixed_output_path(
    recursive: bool,
    hash: &Sha256Hash,
    name: &str,
    references: &[StorePath],
    self_ref: bool,
) -> Result<StorePath, StorePathError> {
    if recursive {
        return make_store_path(&type_with_refs("source", references, self_ref), hash, name);
    }
    if !references.is_empty() || self_ref {
        return Err(StorePathError::FlatWithReferences { name: clip(name) });
    }
    let inner = format!("fixed:out:sha256:{}:", hash.to_hex());
    make_store_path("output:out", &Sha256Hash::digest(inner.as_bytes()), name)
}

/// The path of a text file (`builtins.toFile`, `.drv` files): type `text:<refs>`, inner hash
/// the sha256 of the contents.
pub fn make_text_path(
    name: &str,
    contents: &[u8],
    references: &[StorePath],
) -> Result<StorePath, StorePathError> {
    make_text_path_from_hash(name, &Sha256Hash::digest(contents), references)
}

/// Like [`make_text_path`], from the sha256 of the contents (as in a `text:sha256:…` CA).
pub fn make_text_path_from_hash(
    name: &str,
    hash: &Sha256Hash,
    references: &[StorePath],
) -> Result<StorePath, StorePathError> {
    make_store_path(&type_with_refs("text", references, false), hash, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_key_vector() {
        let inner = Sha256Hash::digest(b"mytool-v1:inputhash=0123abcd");
        assert_eq!(
            inner.to_hex(),
            "b342585f6c2d742d2944f1a049531bafa1503bbf1f1b6d5a567d90533fb3f8a9"
        );
        let p = for_input_key("mytool-v1:inputhash=0123abcd", "mytool-result").unwrap();
        assert_eq!(
            p.to_string(),
            "/nix/store/8dbh9dxr2mncgjrnqzj4nk6hlf49p3wp-mytool-result"
        );
        assert_eq!(p.hash_part(), "8dbh9dxr2mncgjrnqzj4nk6hlf49p3wp");
        assert_eq!(p.name(), "mytool-result");
    }

    #[test]
    fn source_vector() {
        let nar_hash = Sha256Hash::parse(
            "sha256:819a98f92c3d6b263f3fc3a29c019f340e4cfc89fc1465fa6144495ca738768a",
        )
        .unwrap();
        let p = make_fixed_output_path(true, &nar_hash, "hello.txt", &[], false).unwrap();
        assert_eq!(
            p.to_string(),
            "/nix/store/5m5ci15djpxd4bs7xa0208nhkhi6cbp3-hello.txt"
        );
        let flat = Sha256Hash::digest(b"hello binary cache\n");
        let p = make_fixed_output_path(false, &flat, "hello.txt", &[], false).unwrap();
        assert_eq!(
            p.to_string(),
            "/nix/store/xalih81zqmzdn3wxkyp4a97bvyl79yyw-hello.txt"
        );
    }

    #[test]
    fn text_vectors() {
        let g = make_text_path("greeting", b"hello binary cache\n", &[]).unwrap();
        assert_eq!(
            g.to_string(),
            "/nix/store/9l7mn1pmcxp3s01cbqy8x07chs55b7cr-greeting"
        );
        let contents = format!("see {g}\n");
        let w = make_text_path("withref", contents.as_bytes(), std::slice::from_ref(&g)).unwrap();
        assert_eq!(
            w.to_string(),
            "/nix/store/clkyqf8a0rxyvv16j2y426wjbvsfscnx-withref"
        );
    }

    #[test]
    fn parse_and_names() {
        let p = StorePath::parse("/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep").unwrap();
        assert_eq!(p.base_name(), "ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep");
        assert_eq!(
            StorePath::from_base_name("ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep").unwrap(),
            p
        );
        let h = "ziazvcjkvjf2v53qi67g8fq2fq4gyk8d";
        assert!(StorePath::from_parts(h, &"a".repeat(211)).is_ok());
        assert!(matches!(
            StorePath::from_parts(h, &"a".repeat(212)),
            Err(StorePathError::NameTooLong { len: 212, .. })
        ));
        assert!(matches!(
            StorePath::from_parts(h, ".hidden"),
            Err(StorePathError::LeadingDot { .. })
        ));
        for bad in ["a b", "a/b", "a\rb", "ä", "a:b", "a@b"] {
            assert!(
                matches!(
                    StorePath::from_parts(h, bad),
                    Err(StorePathError::BadNameChar { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(StorePath::from_parts(h, "a+b-c.d_e?f=g").is_ok());
        assert!(matches!(
            StorePath::parse("/gnu/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-x"),
            Err(StorePathError::NotInStore { .. })
        ));
        assert!(matches!(
            StorePath::parse("/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-x/bin"),
            Err(StorePathError::NotInStore { .. })
        ));
        assert!(matches!(
            StorePath::from_base_name("eiazvcjkvjf2v53qi67g8fq2fq4gyk8d-x"),
            Err(StorePathError::BadHashChar { ch: 'e', .. })
        ));
        assert!(matches!(
            StorePath::from_base_name("ziazvcjkvjf2v53qi67g8fq2fq4gyk8d_x"),
            Err(StorePathError::MissingDash { .. })
        ));
        assert!(matches!(
            StorePath::from_base_name("ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-"),
            Err(StorePathError::TooShort { .. })
        ));
        assert!(matches!(
            StorePath::from_base_name("/nix/store/x"),
            Err(StorePathError::BadHashChar { ch: '/', .. })
        ));
    }
}
