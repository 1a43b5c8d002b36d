//! `.narinfo` files: parsing, rendering, fingerprints and signatures.
//!
//! Wire format: `Key: value` lines (key, colon, exactly one space, value), each ended by LF.
//! Nix 2.8 writes the keys in this order:
//!
//! ```text
//! StorePath: /nix/store/<hash>-<name>          required
//! URL: nar/<nix32 file hash>.nar.zst           required, relative to the cache root
//! Compression: zstd                            missing means bzip2
//! FileHash: sha256:<nix32>                     of the file at URL
//! FileSize: <decimal>
//! NarHash: sha256:<nix32>                      required; hex and SRI are accepted too
//! NarSize: <decimal>                           required, not 0
//! References: <base name> <base name> …        space-separated base names, may be empty
//! Deriver: <hash>-<name>.drv
//! Sig: <key name>:<base64 signature>           one line per signature
//! CA: fixed:r:sha256:<nix32>
//! ```
//!
//! Mirrors Nix 2.8: unknown keys are ignored, a missing required key makes the file corrupt,
//! and a `\r` is fatal (Nix reports it as an illegal character of the store path). This parser
//! is stricter where Nix is loose or undefined: a known key (other than `Sig`) may appear only
//! once, every line needs `": "`, numbers are plain decimals, and the file has a size limit.
//! Errors carry the 1-based line number and the key.
//!
//! The signed fingerprint is
//! `1;<store path>;sha256:<nix32 NarHash>;<NarSize>;<sorted full reference paths, comma-joined>`;
//! URL, Compression, FileHash, FileSize, Deriver, CA and System are not signed.

use thiserror::Error;

use crate::clip;
use crate::hash::{HashError, Sha256Hash};
use crate::signing::{PublicKey, SecretKey};
use crate::store_path::{self, STORE_DIR, StorePath, StorePathError};

/// Largest narinfo this crate reads.
pub const MAX_NARINFO_SIZE: usize = 64 * 1024;

/// Errors from [`NarInfo::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NarInfoError {
    /// The file is larger than [`MAX_NARINFO_SIZE`].
    #[error("narinfo has {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// A carriage return (CRLF line endings).
    #[error("line {line}: carriage return in narinfo (lines must end with LF only)")]
    CarriageReturn { line: usize },
    /// A line without `:`.
    #[error("line {line}: expected 'Key: value', found {text:?}")]
    MissingColon { line: usize, text: String },
    /// The colon is not followed by exactly one space.
    #[error("line {line}: key {key:?} must be followed by ': ' and the value")]
    BadSeparator { line: usize, key: String },
    /// A key other than `Sig` appears twice.
    #[error("line {line}: duplicate key {key:?}")]
    Duplicate { line: usize, key: String },
    /// A required key is missing.
    #[error("narinfo lacks the required key {key:?}")]
    MissingKey { key: &'static str },
    /// A store path value is invalid.
    #[error("line {line}: invalid store path in {key:?}")]
    StorePath {
        line: usize,
        key: &'static str,
        #[source]
        source: StorePathError,
    },
    /// A hash value is invalid.
    #[error("line {line}: invalid hash in {key:?}")]
    Hash {
        line: usize,
        key: &'static str,
        #[source]
        source: HashError,
    },
    /// A number value is invalid.
    #[error("line {line}: {key:?} value {value:?} is not a decimal number")]
    Number {
        line: usize,
        key: &'static str,
        value: String,
    },
    /// `NarSize: 0`.
    #[error("line {line}: NarSize is 0")]
    ZeroNarSize { line: usize },
    /// An empty `URL`.
    #[error("line {line}: URL is empty")]
    EmptyUrl { line: usize },
}

/// The contents of a `.narinfo` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The store path this file describes.
    pub store_path: StorePath,
    /// Location of the (compressed) NAR, relative to the cache root.
    pub url: String,
    /// The `Compression:` value as written; `None` when missing (which means bzip2).
    pub compression: Option<String>,
    /// sha256 of the file at `url`.
    pub file_hash: Option<Sha256Hash>,
    /// Size of the file at `url`.
    pub file_size: Option<u64>,
    /// sha256 of the uncompressed NAR.
    pub nar_hash: Sha256Hash,
    /// Size of the uncompressed NAR; never 0.
    pub nar_size: u64,
    /// Base names (`<hash>-<name>`) of the referenced store paths.
    pub references: Vec<String>,
    /// Base name of the deriver, if known.
    pub deriver: Option<String>,
    /// `name:base64` signatures, one per `Sig:` line.
    pub sigs: Vec<String>,
    /// Content-address claim, e.g. `fixed:r:sha256:<nix32>`.
    pub ca: Option<String>,
    /// `System:` (ignored by Nix 2.8).
    pub system: Option<String>,
}

fn number(line: usize, key: &'static str, value: &str) -> Result<u64, NarInfoError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NarInfoError::Number {
            line,
            key,
            value: clip(value),
        });
    }
    value.parse().map_err(|_| NarInfoError::Number {
        line,
        key,
        value: clip(value),
    })
}

/// The key and value of line `line_no`: `Key: value`, exactly one space after the colon and no
/// carriage return.
fn split_line(line_no: usize, line: &str) -> Result<(&str, &str), NarInfoError> {
    if line.contains('\r') {
        return Err(NarInfoError::CarriageReturn { line: line_no });
    }
    let Some((key, rest)) = line.split_once(':') else {
        return Err(NarInfoError::MissingColon {
            line: line_no,
            text: clip(line),
        });
    };
    match rest.strip_prefix(' ') {
        Some(v) if !v.starts_with([' ', '\t']) => Ok((key, v)),
        _ => Err(NarInfoError::BadSeparator {
            line: line_no,
            key: clip(key),
        }),
    }
}

/// A store path's base name as a narinfo lists it (`References`, `Deriver`), checked.
fn base_name(name: &str) -> Result<String, crate::store_path::StorePathError> {
    Ok(StorePath::from_base_name(name)?.base_name())
}

impl NarInfo {
    /// Parses a narinfo (see the module docs for the rules).
    pub fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        if text.len() > MAX_NARINFO_SIZE {
            return Err(NarInfoError::TooLarge {
                size: text.len(),
                limit: MAX_NARINFO_SIZE,
            });
        }
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut sigs: Vec<String> = Vec::new();
        let mut ca = None;
        let mut system = None;

        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines = if text.is_empty() {
            None
        } else {
            Some(body.split('\n'))
        };
        for (idx, line) in lines.into_iter().flatten().enumerate() {
            let line_no = idx + 1;
            let (key, value) = split_line(line_no, line)?;
            macro_rules! once {
                ($slot:ident, $key:literal, $value:expr) => {{
                    if $slot.is_some() {
                        return Err(NarInfoError::Duplicate {
                            line: line_no,
                            key: $key.to_owned(),
                        });
                    }
                    $slot = Some($value);
                }};
            }
            let path_err = |key: &'static str| {
                move |source| NarInfoError::StorePath {
                    line: line_no,
                    key,
                    source,
                }
            };
            let hash_err = |key: &'static str| {
                move |source| NarInfoError::Hash {
                    line: line_no,
                    key,
                    source,
                }
            };
            match key {
                "StorePath" => once!(
                    store_path,
                    "StorePath",
                    StorePath::parse(value).map_err(path_err("StorePath"))?
                ),
                "URL" => {
                    if value.is_empty() {
                        return Err(NarInfoError::EmptyUrl { line: line_no });
                    }
                    once!(url, "URL", value.to_owned())
                }
                "Compression" => once!(compression, "Compression", value.to_owned()),
                "FileHash" => once!(
                    file_hash,
                    "FileHash",
                    Sha256Hash::parse(value).map_err(hash_err("FileHash"))?
                ),
                "FileSize" => once!(file_size, "FileSize", number(line_no, "FileSize", value)?),
                "NarHash" => once!(
                    nar_hash,
                    "NarHash",
                    Sha256Hash::parse(value).map_err(hash_err("NarHash"))?
                ),
                "NarSize" => {
                    let n = number(line_no, "NarSize", value)?;
                    if n == 0 {
                        return Err(NarInfoError::ZeroNarSize { line: line_no });
                    }
                    once!(nar_size, "NarSize", n)
                }
                "References" => {
                    let refs = value
                        .split(' ')
                        .filter(|r| !r.is_empty())
                        .map(|r| base_name(r).map_err(path_err("References")))
                        .collect::<Result<Vec<_>, _>>()?;
                    once!(references, "References", refs)
                }
                "Deriver" => {
                    let d = if value == "unknown-deriver" {
                        None
                    } else {
                        Some(base_name(value).map_err(path_err("Deriver"))?)
                    };
                    once!(deriver, "Deriver", d)
                }
                "Sig" if !sigs.iter().any(|s| s == value) => sigs.push(value.to_owned()),
                "CA" => once!(ca, "CA", value.to_owned()),
                "System" => once!(system, "System", value.to_owned()),
                _ => {}
            }
        }
        Ok(NarInfo {
            store_path: store_path.ok_or(NarInfoError::MissingKey { key: "StorePath" })?,
            url: url.ok_or(NarInfoError::MissingKey { key: "URL" })?,
            compression,
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(NarInfoError::MissingKey { key: "NarHash" })?,
            nar_size: nar_size.ok_or(NarInfoError::MissingKey { key: "NarSize" })?,
            references: references.unwrap_or_default(),
            deriver: deriver.flatten(),
            sigs,
            ca,
            system,
        })
    }

    /// Renders the file in Nix's key order. `Compression:` is always written (`bzip2` when the
    /// field is `None`, which is what a missing line means), `References: ` keeps its trailing
    /// space when empty, and hashes use `sha256:<nix32>`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(512);
        let mut line = |k: &str, v: &str| {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        };
        line("StorePath", &self.store_path.to_string());
        line("URL", &self.url);
        line(
            "Compression",
            self.compression.as_deref().unwrap_or("bzip2"),
        );
        if let Some(h) = &self.file_hash {
            line("FileHash", &h.to_nix_string());
        }
        if let Some(s) = self.file_size {
            line("FileSize", &s.to_string());
        }
        line("NarHash", &self.nar_hash.to_nix_string());
        line("NarSize", &self.nar_size.to_string());
        line("References", &self.references.join(" "));
        if let Some(d) = &self.deriver {
            line("Deriver", d);
        }
        for s in &self.sigs {
            line("Sig", s);
        }
        if let Some(ca) = &self.ca {
            line("CA", ca);
        }
        if let Some(sys) = &self.system {
            line("System", sys);
        }
        out
    }

    /// The string Nix signs:
    /// `1;<path>;sha256:<nix32>;<size>;<sorted full reference paths, comma-joined>`.
    pub fn fingerprint(&self) -> String {
        let mut refs: Vec<String> = self
            .references
            .iter()
            .map(|r| format!("{STORE_DIR}/{r}"))
            .collect();
        refs.sort();
        format!(
            "1;{};{};{};{}",
            self.store_path,
            self.nar_hash.to_nix_string(),
            self.nar_size,
            refs.join(",")
        )
    }

    /// Adds `key`'s signature of the fingerprint (unless that exact signature is already
    /// there).
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(self.fingerprint());
        if !self.sigs.contains(&sig) {
            self.sigs.push(sig);
        }
    }

    /// The name of the first key of `keys` (in their order) that has a valid signature on this
    /// narinfo, if any.
    pub fn verify(&self, keys: &[PublicKey]) -> Option<String> {
        let fp = self.fingerprint();
        keys.iter()
            .find(|k| self.sigs.iter().any(|s| k.verify(&fp, s)))
            .map(|k| k.name().to_owned())
    }

    /// The references as store paths.
    pub fn reference_paths(&self) -> Result<Vec<StorePath>, StorePathError> {
        self.references
            .iter()
            .map(|r| StorePath::from_base_name(r))
            .collect()
    }

    /// Whether the `CA:` claim recomputes to the store path, which makes the path trustworthy
    /// without a signature in Nix (scheme B of the reference). Understands `fixed:r:sha256:…`,
    /// `fixed:sha256:…` and `text:sha256:…`. The NAR must still be checked against `NarHash`.
    pub fn content_address_matches(&self) -> bool {
        let Some(ca) = &self.ca else { return false };
        let Ok(refs) = self.reference_paths() else {
            return false;
        };
        let self_ref = refs.contains(&self.store_path);
        let others: Vec<StorePath> = refs.into_iter().filter(|r| *r != self.store_path).collect();
        let name = self.store_path.name();
        let computed = if let Some(h) = ca.strip_prefix("fixed:r:") {
            Sha256Hash::parse(h).ok().and_then(|h| {
                store_path::make_fixed_output_path(true, &h, name, &others, self_ref).ok()
            })
        } else if let Some(h) = ca.strip_prefix("fixed:") {
            Sha256Hash::parse(h).ok().and_then(|h| {
                store_path::make_fixed_output_path(false, &h, name, &others, self_ref).ok()
            })
        } else if let Some(h) = ca.strip_prefix("text:") {
            Sha256Hash::parse(h)
                .ok()
                .filter(|_| !self_ref)
                .and_then(|h| store_path::make_text_path_from_hash(name, &h, &others).ok())
        } else {
            None
        };
        computed.as_ref() == Some(&self.store_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-cache-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==";

    const OUT: &str = "StorePath: /nix/store/l9yxkc7y6q60r6f1dq2y9cf75hw2bcva-demo-out
URL: nar/1dg1ypnll6nxvcpsrx7rhag1z8adl4iwk4hfs7z5sjsndgfrcs3v.nar.zst
Compression: zstd
FileHash: sha256:1dg1ypnll6nxvcpsrx7rhag1z8adl4iwk4hfs7z5sjsndgfrcs3v
FileSize: 324
NarHash: sha256:1qsi7f37c5ar95n8zfdj6y4hxzwqsv9jjnrqfbgs6pml6y68wvkf
NarSize: 1144
References: ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep
Deriver: pk75rs8x0dwfx0nrazxbrqdcxfa8lrs1-demo-out.drv
Sig: test-cache-1:TPtt6p5Rnio71vJsw7BLB/NKzc1o4wndMUpEpzGnx+CTDZrWPBAxy59kNQ9myDRrowuuqh9hORHrcri5j7CgAQ==
";

    #[test]
    fn roundtrip_and_signature() {
        let info = NarInfo::parse(OUT).unwrap();
        assert_eq!(info.render(), OUT);
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/l9yxkc7y6q60r6f1dq2y9cf75hw2bcva-demo-out;sha256:1qsi7f37c5ar95n8zfdj6y4hxzwqsv9jjnrqfbgs6pml6y68wvkf;1144;/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep"
        );
        let sk = SecretKey::parse(SECRET).unwrap();
        assert_eq!(
            info.verify(&[sk.to_public()]).as_deref(),
            Some("test-cache-1")
        );
        let mut resigned = info.clone();
        resigned.sigs.clear();
        resigned.sign(&sk);
        assert_eq!(resigned.sigs, info.sigs);
        resigned.nar_size += 1;
        assert_eq!(resigned.verify(&[sk.to_public()]), None);
    }

    #[test]
    fn errors_have_lines() {
        let crlf = OUT.replace('\n', "\r\n");
        assert_eq!(
            NarInfo::parse(&crlf),
            Err(NarInfoError::CarriageReturn { line: 1 })
        );
        let no_nar_size = OUT.replace("NarSize: 1144\n", "");
        assert_eq!(
            NarInfo::parse(&no_nar_size),
            Err(NarInfoError::MissingKey { key: "NarSize" })
        );
        let dup = format!("{OUT}URL: x\n");
        assert_eq!(
            NarInfo::parse(&dup),
            Err(NarInfoError::Duplicate {
                line: 11,
                key: "URL".into()
            })
        );
        let two_spaces = OUT.replace("NarSize: 1144", "NarSize:  1144");
        assert!(matches!(
            NarInfo::parse(&two_spaces),
            Err(NarInfoError::BadSeparator { line: 7, .. })
        ));
        let zero = OUT.replace("NarSize: 1144", "NarSize: 0");
        assert_eq!(
            NarInfo::parse(&zero),
            Err(NarInfoError::ZeroNarSize { line: 7 })
        );
        let full_ref = OUT.replace("References: ", "References: /nix/store/");
        assert!(matches!(
            NarInfo::parse(&full_ref),
            Err(NarInfoError::StorePath {
                line: 8,
                key: "References",
                ..
            })
        ));
        assert!(matches!(
            NarInfo::parse(&OUT.replace("NarSize: 1144", "NarSize: +1144")),
            Err(NarInfoError::Number { line: 7, .. })
        ));
        assert!(matches!(
            NarInfo::parse(&"X".repeat(MAX_NARINFO_SIZE + 1)),
            Err(NarInfoError::TooLarge { .. })
        ));
        assert_eq!(
            NarInfo::parse(""),
            Err(NarInfoError::MissingKey { key: "StorePath" })
        );
    }
}
