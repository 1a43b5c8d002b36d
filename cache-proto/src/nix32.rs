//! Nix's base-32 encoding ("nix32").
//!
//! Wire format: the alphabet is `0123456789abcdfghijklmnpqrsvwxyz` (no `e o t u`). The input is
//! read as one little-endian bit string (bit `k` is bit `k % 8` of byte `k / 8`), and character
//! `i` of an output of length `L` holds bits `5*(L-1-i) .. 5*(L-1-i)+4`. So the *last* input byte
//! drives the *first* characters. This is not RFC 4648. An input of `n` bytes encodes to
//! `ceil(n * 8 / 5)` characters: 52 for sha256, 32 for a store-path hash part.
//!
//! Mirrors `printHash32` / `parseHash32` of Nix 2.8, including the rejection of strings whose
//! high bits overflow the last byte. Decoding is stricter than Nix in one point: the length must
//! be the canonical length of some byte count (Nix checks that through its hash-length table).

use thiserror::Error;

/// The 32 characters of nix-base32, in digit order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Errors from [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Nix32Error {
    /// A character outside the nix-base32 alphabet.
    #[error("invalid nix-base32 character {ch:?} at position {pos}")]
    InvalidChar { ch: char, pos: usize },
    /// The length is not `ceil(n * 8 / 5)` for any byte count `n`.
    #[error("nix-base32 string of length {len} has no canonical byte length")]
    InvalidLength { len: usize },
    /// The first character carries bits beyond the last decoded byte.
    #[error("nix-base32 string has non-zero bits beyond its last byte")]
    Overflow,
}

/// Number of nix-base32 characters needed for `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 { 0 } else { (n * 8 - 1) / 5 + 1 }
}

fn digit_value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Whether `c` is one of the 32 nix-base32 characters.
pub fn is_nix32_char(c: char) -> bool {
    c.is_ascii() && digit_value(c as u8).is_some()
}

/// Encodes bytes as nix-base32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let mut c = u16::from(bytes[i]) >> j;
        if i + 1 < bytes.len() {
            c |= u16::from(bytes[i + 1]) << (8 - j);
        }
        out.push(char::from(ALPHABET[usize::from(c & 0x1f)]));
    }
    out
}

/// Decodes a nix-base32 string.
pub fn decode(s: &str) -> Result<Vec<u8>, Nix32Error> {
    if let Some((pos, ch)) = s.chars().enumerate().find(|&(_, c)| !is_nix32_char(c)) {
        return Err(Nix32Error::InvalidChar { ch, pos });
    }
    let chars = s.as_bytes();
    let size = chars.len() * 5 / 8;
    if encoded_len(size) != chars.len() {
        return Err(Nix32Error::InvalidLength { len: chars.len() });
    }
    let mut out = vec![0u8; size];
    for (n, &ch) in chars.iter().rev().enumerate() {
        // Checked above: every byte is an alphabet character.
        let d = u16::from(digit_value(ch).unwrap_or(0));
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= ((d << j) & 0xff) as u8;
        let carry = d >> (8 - j);
        if i + 1 < size {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Nix32Error::Overflow);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn doc_vectors() {
        let mut one = vec![0u8; 32];
        one[31] = 1;
        assert_eq!(
            encode(&one),
            "0080000000000000000000000000000000000000000000000000"
        );
        assert_eq!(
            encode(&unhex("0102030405060708090a0b0c0d0e0f1011121314")),
            "2h9i448h1w70s30b184hh1q60l2060h1"
        );
        assert_eq!(
            encode(&unhex("d41d8cd98f00b204e9800998ecf8427e")),
            "3y8bwfr609h3lh9ch0izcqq7fl"
        );
        assert_eq!(
            encode(&unhex(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(
            decode("1iiwxjkhiq1x078s2hb681gnsr92n92jg0amrlmysrs9qsvmg5q0").unwrap(),
            unhex("009757b7c64967ed2bcd55812745b222656d5f406641a1d1013de008a7ec3cc6")
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encode(&[]), "");
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            decode("e000000000000000000000000000000000000000000000000000"),
            Err(Nix32Error::InvalidChar { ch: 'e', pos: 0 })
        );
        assert_eq!(
            decode(&format!("{}é", "0".repeat(51))),
            Err(Nix32Error::InvalidChar { ch: 'é', pos: 51 })
        );
        // 52 chars carry 260 bits; the top 4 bits of the first char must be zero.
        assert_eq!(
            decode("z000000000000000000000000000000000000000000000000000"),
            Err(Nix32Error::Overflow)
        );
        assert!(decode("1000000000000000000000000000000000000000000000000000").is_ok());
        assert_eq!(decode("000"), Err(Nix32Error::InvalidLength { len: 3 }));
    }
}
