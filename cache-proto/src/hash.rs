//! SHA-256 digests and the notations Nix uses for them.
//!
//! Wire format: Nix 2.8 accepts `sha256:<nix32>` (52 characters), `sha256:<hex>` (64),
//! `sha256:<base64>` (44) and SRI `sha256-<base64>` wherever it parses a hash, including the
//! `NarHash` and `FileHash` fields of a `.narinfo`. Nix itself always *writes*
//! `sha256:<nix32>`, and that canonical form is what goes into signature fingerprints; see
//! [`Sha256Hash::to_nix_string`].
//!
//! [`HashingReader`] and [`HashingWriter`] hash and count a byte stream on the fly, as Nix does
//! while it dumps or imports a NAR.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::clip;
use crate::nix32::{self, Nix32Error};

/// Errors from [`Sha256Hash::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HashError {
    /// Neither `sha256:` nor `sha256-` in front.
    #[error("hash {value:?} has no 'sha256:' or 'sha256-' prefix")]
    MissingAlgorithm { value: String },
    /// Another algorithm than sha256.
    #[error("hash {value:?} uses algorithm {algorithm:?}; only sha256 is supported")]
    UnsupportedAlgorithm { value: String, algorithm: String },
    /// The digest has a length that fits none of the encodings.
    #[error("hash {value:?} has a digest of {len} characters, which is no sha256 encoding")]
    BadLength { value: String, len: usize },
    /// Bad nix-base32.
    #[error("hash {value:?} is not valid nix-base32")]
    Nix32 {
        value: String,
        #[source]
        source: Nix32Error,
    },
    /// Bad hexadecimal.
    #[error("hash {value:?} is not valid hexadecimal")]
    Hex { value: String },
    /// Bad base64, or base64 of the wrong length.
    #[error("hash {value:?} is not valid base64 of 32 bytes")]
    Base64 { value: String },
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// Hashes `data`.
    pub fn digest(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Parses `sha256:<nix32>`, `sha256:<hex>`, `sha256:<base64>` or SRI `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Self, HashError> {
        let value = || clip(s);
        if let Some(rest) = s.strip_prefix("sha256:") {
            return match rest.len() {
                52 => {
                    let bytes = nix32::decode(rest).map_err(|source| HashError::Nix32 {
                        value: value(),
                        source,
                    })?;
                    Ok(Self(to_array(&bytes).ok_or_else(|| {
                        HashError::BadLength {
                            value: value(),
                            len: rest.len(),
                        }
                    })?))
                }
                64 => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(rest, &mut out)
                        .map_err(|_| HashError::Hex { value: value() })?;
                    Ok(Self(out))
                }
                44 => Self::from_base64(rest).ok_or_else(|| HashError::Base64 { value: value() }),
                len => Err(HashError::BadLength {
                    value: value(),
                    len,
                }),
            };
        }
        if let Some(rest) = s.strip_prefix("sha256-") {
            return Self::from_base64(rest).ok_or_else(|| HashError::Base64 { value: value() });
        }
        let algorithm = s.split([':', '-']).next().unwrap_or_default();
        if algorithm.len() < s.len() {
            return Err(HashError::UnsupportedAlgorithm {
                value: value(),
                algorithm: clip(algorithm),
            });
        }
        Err(HashError::MissingAlgorithm { value: value() })
    }

    fn from_base64(s: &str) -> Option<Self> {
        let bytes = BASE64.decode(s).ok()?;
        to_array(&bytes).map(Self)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `sha256:<nix32>`: the form Nix writes and signs.
    pub fn to_nix_string(&self) -> String {
        format!("sha256:{}", self.nix32())
    }

    /// The bare nix-base32 digest (52 characters), as used in NAR file names.
    pub fn nix32(&self) -> String {
        nix32::encode(&self.0)
    }

    /// The bare lowercase hexadecimal digest (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// SRI notation, `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", BASE64.encode(self.0))
    }
}

fn to_array(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl fmt::Display for Sha256Hash {
    /// Same as [`Sha256Hash::to_nix_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({})", self.to_nix_string())
    }
}

impl FromStr for Sha256Hash {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A [`Read`] adapter that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Number of bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.count
    }

    /// The digest and length of everything read so far.
    pub fn finish(self) -> (Sha256Hash, u64) {
        let (_, hash, count) = self.into_parts();
        (hash, count)
    }

    /// The inner reader, the digest and the length of everything read so far.
    pub fn into_parts(self) -> (R, Sha256Hash, u64) {
        (
            self.inner,
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A [`Write`] adapter that hashes and counts every byte written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Number of bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.count
    }

    /// The inner writer, the digest and the length of everything written.
    pub fn finish(self) -> (W, Sha256Hash, u64) {
        (
            self.inner,
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIX32: &str = "sha256:12kn72kmqja4c7x6a57wi7y4q3ilkw0rr8n37wzjcsrx5kwri6l1";
    const HEX: &str = "819a98f92c3d6b263f3fc3a29c019f340e4cfc89fc1465fa6144495ca738768a";
    const SRI: &str = "sha256-gZqY+Sw9ayY/P8OinAGfNA5M/In8FGX6YURJXKc4doo=";

    #[test]
    fn notations_agree() {
        let a = Sha256Hash::parse(NIX32).unwrap();
        let b = Sha256Hash::parse(&format!("sha256:{HEX}")).unwrap();
        let c = Sha256Hash::parse(SRI).unwrap();
        let d = Sha256Hash::parse(
            &format!("sha256:{HEX}")
                .to_uppercase()
                .replace("SHA256", "sha256"),
        )
        .unwrap();
        let e = Sha256Hash::parse(&format!("sha256:{}", &SRI[7..])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a, d);
        assert_eq!(a, e);
        assert_eq!(a.to_nix_string(), NIX32);
        assert_eq!(a.to_hex(), HEX);
        assert_eq!(a.to_sri(), SRI);
        assert_eq!(a.to_string(), NIX32);
        assert_eq!(a.nix32(), &NIX32[7..]);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Sha256Hash::parse(HEX),
            Err(HashError::MissingAlgorithm { .. })
        ));
        assert!(matches!(
            Sha256Hash::parse("md5:3y8bwfr609h3lh9ch0izcqq7fl"),
            Err(HashError::UnsupportedAlgorithm { algorithm, .. }) if algorithm == "md5"
        ));
        assert!(matches!(
            Sha256Hash::parse("sha256:abc"),
            Err(HashError::BadLength { len: 3, .. })
        ));
        assert!(matches!(
            Sha256Hash::parse(&format!("sha256:{}", "g".repeat(64))),
            Err(HashError::Hex { .. })
        ));
        assert!(matches!(
            Sha256Hash::parse(&format!("sha256:{}", "e".repeat(52))),
            Err(HashError::Nix32 { .. })
        ));
        assert!(matches!(
            Sha256Hash::parse("sha256-AAAA"),
            Err(HashError::Base64 { .. })
        ));
    }

    #[test]
    fn streaming() {
        let data = b"hello binary cache\n";
        let mut r = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).unwrap();
        assert_eq!(r.bytes_read(), 19);
        let (h, n) = r.finish();
        assert_eq!(n, 19);
        assert_eq!(h, Sha256Hash::digest(data));
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(data).unwrap();
        let (inner, h2, n2) = w.finish();
        assert_eq!((inner.as_slice(), h2, n2), (&data[..], h, 19));
    }
}
