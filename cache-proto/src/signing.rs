//! Nix's ed25519 signing keys.
//!
//! Wire format (`nix key generate-secret`, `nix key convert-secret-to-public`):
//!
//! * secret key: `<name>:base64(seed[32] || public[32])` (the NaCl/libsodium secret-key layout);
//! * public key: `<name>:base64(public[32])`;
//! * signature: `<name>:base64(ed25519(seed, message)[64])`, one per `Sig:` line of a narinfo.
//!
//! ed25519 is deterministic, so signatures are byte-identical to those of Nix (libsodium).
//! Verification uses the strict ed25519 rules (canonical `S`, no small-order keys), which accept
//! every signature libsodium produces.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::clip;

/// Errors about keys.
#[derive(Debug, Error)]
pub enum KeyError {
    /// No `:` between the name and the key material.
    #[error("key has no ':' between its name and its base64 data")]
    MissingColon,
    /// The key name is empty or has a `:` or whitespace.
    #[error("key name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The key material is not base64.
    #[error("key {name:?} has invalid base64 data")]
    Base64 {
        name: String,
        #[source]
        source: base64::DecodeError,
    },
    /// The key material has the wrong length.
    #[error("key {name:?} has {got} bytes of key data; expected {expected}")]
    BadLength {
        name: String,
        expected: usize,
        got: usize,
    },
    /// The public half of a secret key does not belong to its seed.
    #[error("secret key {name:?} has a public half that does not match its seed")]
    PublicMismatch { name: String },
    /// The bytes are not a valid ed25519 public key.
    #[error("public key {name:?} is not a valid ed25519 point")]
    InvalidPublicKey { name: String },
    /// The operating system's random generator failed.
    #[error("cannot get random bytes for a new key")]
    Random(#[source] getrandom::Error),
}

/// Checks a key name: non-empty, without `:` or whitespace.
pub fn validate_key_name(name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains(':') {
        "it contains ':'"
    } else if name.chars().any(char::is_whitespace) {
        "it contains whitespace"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(KeyError::InvalidName {
        name: clip(name),
        reason,
    })
}

fn split_key(s: &str) -> Result<(&str, Vec<u8>), KeyError> {
    let (name, data) = s.trim().split_once(':').ok_or(KeyError::MissingColon)?;
    validate_key_name(name)?;
    let bytes = BASE64.decode(data).map_err(|source| KeyError::Base64 {
        name: name.to_owned(),
        source,
    })?;
    Ok((name, bytes))
}

/// An ed25519 secret key with its Nix name.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses `name:base64(seed || public)`; surrounding whitespace (a key file's final newline)
    /// is ignored. The public half must match the seed.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key(s)?;
        let raw: [u8; 64] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::BadLength {
                name: name.to_owned(),
                expected: 64,
                got: bytes.len(),
            })?;
        let key = SigningKey::from_keypair_bytes(&raw).map_err(|_| KeyError::PublicMismatch {
            name: name.to_owned(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// A key from a 32-byte seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        validate_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A fresh key from the operating system's random generator.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        let key = Self::from_seed(name, seed);
        seed.fill(0);
        key
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn to_public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `msg`, giving `name:base64(signature)` as it goes on a `Sig:` line.
    pub fn sign(&self, msg: impl AsRef<[u8]>) -> String {
        let sig = self.key.sign(msg.as_ref());
        format!("{}:{}", self.name, BASE64.encode(sig.to_bytes()))
    }
}

impl fmt::Display for SecretKey {
    /// Nix's secret key format, `name:base64(seed || public)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public", &self.to_public().to_string())
            .finish_non_exhaustive()
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An ed25519 public key with its Nix name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(public)`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key(s)?;
        let raw: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::BadLength {
                name: name.to_owned(),
                expected: 32,
                got: bytes.len(),
            })?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::InvalidPublicKey {
            name: name.to_owned(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` (`name:base64(signature)`) is this key's valid signature of `msg`. A
    /// signature under another key name never verifies.
    pub fn verify(&self, msg: impl AsRef<[u8]>, sig: &str) -> bool {
        let Some((name, data)) = sig.split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = BASE64.decode(data) else {
            return false;
        };
        let Ok(raw) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let sig = Signature::from_bytes(&raw);
        self.key.verify_strict(msg.as_ref(), &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    /// Nix's public key format, `name:base64(public)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Parses a whitespace-separated list of public keys, as in Nix's `trusted-public-keys`.
pub fn parse_public_keys(list: &str) -> Result<Vec<PublicKey>, KeyError> {
    list.split_whitespace().map(PublicKey::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-cache-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==";
    const PUBLIC: &str = "test-cache-1:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";

    #[test]
    fn deterministic_key() {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        let sk = SecretKey::from_seed("test-cache-1", seed).unwrap();
        assert_eq!(sk.to_string(), SECRET);
        assert_eq!(sk.to_public().to_string(), PUBLIC);
        let parsed = SecretKey::parse(&format!("{SECRET}\n")).unwrap();
        assert_eq!(parsed.to_string(), SECRET);
        assert_eq!(PublicKey::parse(PUBLIC).unwrap(), sk.to_public());
        assert!(!format!("{sk:?}").contains("AAECAwQF"));
    }

    #[test]
    fn signature_vector() {
        let sk = SecretKey::parse(SECRET).unwrap();
        let fp = "1;/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep;sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4;128;";
        let sig = sk.sign(fp);
        assert_eq!(
            sig,
            "test-cache-1:xTRu5uoZemodoorTdc2jnkTRk6RfglZGz9GSmbsHge/6umf8PWPOrgO9CUB6Cg9D5fNz7tqxeY3eKI1D5krsCQ=="
        );
        let pk = PublicKey::parse(PUBLIC).unwrap();
        assert!(pk.verify(fp, &sig));
        assert!(!pk.verify(format!("{fp}x"), &sig));
        assert!(!pk.verify(fp, &sig.replacen("test-cache-1", "other", 1)));
        assert!(!pk.verify(fp, "test-cache-1:AAAA"));
        assert!(!pk.verify(fp, "garbage"));
    }

    #[test]
    fn bad_keys() {
        assert!(matches!(
            SecretKey::parse("nocolon"),
            Err(KeyError::MissingColon)
        ));
        assert!(matches!(
            SecretKey::parse(":AAAA"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            PublicKey::parse("a b:AAAA"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            PublicKey::parse("k:!!!"),
            Err(KeyError::Base64 { .. })
        ));
        assert!(matches!(
            SecretKey::parse(PUBLIC),
            Err(KeyError::BadLength {
                expected: 64,
                got: 32,
                ..
            })
        ));
        // Flip one bit of the public half.
        let mut bytes = BASE64.decode(&SECRET[13..]).unwrap();
        bytes[40] ^= 1;
        let tampered = format!("test-cache-1:{}", BASE64.encode(&bytes));
        assert!(matches!(
            SecretKey::parse(&tampered),
            Err(KeyError::PublicMismatch { .. })
        ));
    }

    #[test]
    fn generated_keys_work() {
        let a = SecretKey::generate("ci-1").unwrap();
        let b = SecretKey::generate("ci-1").unwrap();
        assert_ne!(a.to_string(), b.to_string());
        let again = SecretKey::parse(&a.to_string()).unwrap();
        let sig = again.sign(b"msg");
        assert!(a.to_public().verify(b"msg", &sig));
        assert!(!b.to_public().verify(b"msg", &sig));
        assert!(SecretKey::generate("bad name").is_err());
        let keys = parse_public_keys(&format!(" {PUBLIC}\n{} ", a.to_public())).unwrap();
        assert_eq!(keys.len(), 2);
    }
}
