//! NAR compression: `none`, `xz`, `bzip2` and `zstd`, with bounded decompression.
//!
//! Wire format: the narinfo `Compression:` field names the compression of the file at `URL`.
//! Mirrors Nix 2.8:
//!
//! * a missing field means `bzip2`;
//! * for any value other than `none`, the downloaded bytes are auto-detected by their magic
//!   (zstd `28 b5 2f fd`, xz `fd 37 7a 58 5a 00`, bzip2 `BZh`), so a wrong but supported value
//!   still works, and bytes with no known magic fail ("input compression not recognized");
//! * `none` is read as is (a compressed file then fails as "not a nix archive" later).
//!
//! Values Nix knows but this crate does not decode (`br`, `gzip`, `lz4`, `lzip`, `lzma`, …)
//! and unknown values are a clear [`CompressionError::Unsupported`].
//!
//! File names: `nar/<nix32 file hash>` + [`Compression::extension`] (`.nar`, `.nar.xz`,
//! `.nar.bz2`, `.nar.zst`).
//!
//! Decompression is bounded: the reader returned by [`decompress`] fails with an
//! [`OutputLimitExceeded`] error once more than `max_output` bytes would come out, so a
//! decompression bomb costs at most `max_output` bytes of work and memory.

use std::fmt;
use std::io::{self, Cursor, Read, Write};
use std::str::FromStr;

use thiserror::Error;

use crate::clip;

/// zstd frame magic.
pub const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// xz stream magic.
pub const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// bzip2 stream magic.
pub const BZIP2_MAGIC: &[u8] = b"BZh";

/// Level used by [`compress_zstd`] (zstd's default).
pub const ZSTD_LEVEL: i32 = 3;

/// Errors about compression.
#[derive(Debug, Error)]
pub enum CompressionError {
    /// A `Compression:` value this crate cannot decode.
    #[error("unsupported compression {value:?} (supported: none, xz, bzip2, zstd)")]
    Unsupported { value: String },
    /// The declared compression is not `none`, but the bytes carry no known magic.
    #[error("input compression not recognized (declared {declared})")]
    NotRecognized { declared: Compression },
    /// Compressing failed.
    #[error("cannot compress with {format}")]
    Compress {
        format: Compression,
        #[source]
        source: io::Error,
    },
    /// Setting up the decoder failed.
    #[error("cannot start the {format} decoder")]
    Decoder {
        format: Compression,
        #[source]
        source: io::Error,
    },
    /// Reading the compressed input failed.
    #[error("cannot read the compressed input")]
    Read(#[source] io::Error),
}

/// The error inside the [`io::Error`] of a decompressing reader that went past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("decompressed output exceeds the limit of {limit} bytes")]
pub struct OutputLimitExceeded {
    /// The limit that was exceeded.
    pub limit: u64,
}

/// If `e` reports that a decompressing reader exceeded its limit, that limit.
pub fn limit_exceeded(e: &io::Error) -> Option<u64> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<OutputLimitExceeded>())
        .map(|l| l.limit)
}

/// A NAR compression method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain NAR.
    None,
    /// xz (Nix's default for `nix copy`).
    Xz,
    /// bzip2 (what a missing `Compression:` field means).
    Bzip2,
    /// zstd (what this crate writes).
    Zstd,
}

impl Compression {
    /// The compression named by a narinfo `Compression:` field; `None` (field missing) means
    /// bzip2.
    pub fn from_narinfo(value: Option<&str>) -> Result<Self, CompressionError> {
        match value {
            None => Ok(Self::Bzip2),
            Some(v) => v.parse(),
        }
    }

    /// The value for the narinfo `Compression:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
            Self::Zstd => "zstd",
        }
    }

    /// The suffix of the NAR file name, as Nix writes it.
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => ".nar",
            Self::Xz => ".nar.xz",
            Self::Bzip2 => ".nar.bz2",
            Self::Zstd => ".nar.zst",
        }
    }

    /// The compression whose magic starts `prefix`, if any. Needs up to 6 bytes.
    pub fn detect(prefix: &[u8]) -> Option<Self> {
        if prefix.starts_with(ZSTD_MAGIC) {
            Some(Self::Zstd)
        } else if prefix.starts_with(XZ_MAGIC) {
            Some(Self::Xz)
        } else if prefix.starts_with(BZIP2_MAGIC) {
            Some(Self::Bzip2)
        } else {
            None
        }
    }

    /// Compresses `data` in memory.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
        let err = |source| CompressionError::Compress {
            format: self,
            source,
        };
        match self {
            Self::None => Ok(data.to_vec()),
            Self::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).map_err(err),
            Self::Bzip2 => {
                let mut enc =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                enc.write_all(data).map_err(err)?;
                enc.finish().map_err(err)
            }
            Self::Xz => {
                let mut out = Vec::new();
                lzma_rs::xz_compress(&mut io::BufReader::new(data), &mut out).map_err(err)?;
                Ok(out)
            }
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "xz" => Ok(Self::Xz),
            "bzip2" => Ok(Self::Bzip2),
            "zstd" => Ok(Self::Zstd),
            other => Err(CompressionError::Unsupported { value: clip(other) }),
        }
    }
}

/// Compresses `data` with zstd at level [`ZSTD_LEVEL`]. The output is deterministic for a given
/// input, so the NAR file name (its hash) is too.
///
/// # Panics
///
/// Only if zstd cannot allocate its context, which the allocator would abort on anyway.
pub fn compress_zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, ZSTD_LEVEL).expect("in-memory zstd compression does not fail")
}

/// A reader that yields the decompressed bytes, at most `max_output` of them.
pub struct Decompressor<'a> {
    format: Compression,
    inner: Box<dyn Read + Send + 'a>,
}

impl Decompressor<'_> {
    /// The format actually used (after auto-detection).
    pub fn format(&self) -> Compression {
        self.format
    }
}

impl Read for Decompressor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl fmt::Debug for Decompressor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Decompresses `reader` according to the declared compression (see the module docs for the
/// auto-detection rules). The returned reader fails with [`OutputLimitExceeded`] (see
/// [`limit_exceeded`]) as soon as more than `max_output` bytes would come out.
pub fn decompress<'a, R: Read + Send + 'a>(
    declared: Compression,
    mut reader: R,
    max_output: u64,
) -> Result<Decompressor<'a>, CompressionError> {
    if declared == Compression::None {
        return Ok(Decompressor {
            format: Compression::None,
            inner: Box::new(Bounded::new(reader, max_output)),
        });
    }
    let mut prefix = [0u8; 6];
    let mut got = 0;
    while got < prefix.len() {
        match reader.read(&mut prefix[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CompressionError::Read(e)),
        }
    }
    let format =
        Compression::detect(&prefix[..got]).ok_or(CompressionError::NotRecognized { declared })?;
    let input = Cursor::new(prefix[..got].to_vec()).chain(reader);
    let inner: Box<dyn Read + Send + 'a> = match format {
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(input)
                .map_err(|source| CompressionError::Decoder { format, source })?;
            Box::new(Bounded::new(dec, max_output))
        }
        Compression::Bzip2 => Box::new(Bounded::new(
            bzip2::read::MultiBzDecoder::new(input),
            max_output,
        )),
        Compression::Xz => Box::new(XzReader::Pending(Some(Box::new(input)), max_output)),
        Compression::None => Box::new(Bounded::new(input, max_output)),
    };
    Ok(Decompressor { format, inner })
}

/// Passes at most `limit` bytes through and fails if the inner reader has more.
struct Bounded<R> {
    inner: R,
    limit: u64,
    produced: u64,
}

impl<R: Read> Bounded<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            limit,
            produced: 0,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.limit - self.produced;
        if left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(over_limit(self.limit)),
            };
        }
        let max = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        self.produced += n as u64;
        Ok(n)
    }
}

fn over_limit(limit: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, OutputLimitExceeded { limit })
}

/// A `Write` into memory that refuses to grow past `limit`.
struct CappedVec {
    buf: Vec<u8>,
    limit: u64,
}

impl Write for CappedVec {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() as u64 + data.len() as u64 > self.limit {
            return Err(over_limit(self.limit));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// lzma-rs decodes xz only from a `BufRead` into a `Write`, so the whole (bounded) output is
/// decoded on the first read.
enum XzReader<'a> {
    Pending(Option<Box<dyn Read + Send + 'a>>, u64),
    Done(Cursor<Vec<u8>>),
}

impl Read for XzReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let XzReader::Pending(input, limit) = self {
            let Some(input) = input.take() else {
                return Err(io::Error::other("xz decoder failed earlier"));
            };
            let mut out = CappedVec {
                buf: Vec::new(),
                limit: *limit,
            };
            lzma_rs::xz_decompress(&mut io::BufReader::new(input), &mut out).map_err(
                |e| match e {
                    lzma_rs::error::Error::IoError(e)
                    | lzma_rs::error::Error::HeaderTooShort(e) => e,
                    other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
                },
            )?;
            *self = XzReader::Done(Cursor::new(out.buf));
        }
        match self {
            XzReader::Done(c) => c.read(buf),
            XzReader::Pending(..) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Compression) {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let packed = c.compress(&data).unwrap();
        assert_eq!(
            Compression::detect(&packed),
            (c != Compression::None).then_some(c)
        );
        let mut out = Vec::new();
        let mut d = decompress(c, &packed[..], data.len() as u64).unwrap();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(d.format(), c);
        assert_eq!(out, data);
        // One byte less than needed: the limit error.
        let mut d = decompress(c, &packed[..], data.len() as u64 - 1).unwrap();
        let err = d.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(
            limit_exceeded(&err),
            Some(data.len() as u64 - 1),
            "{c}: {err}"
        );
    }

    #[test]
    fn roundtrips() {
        for c in [
            Compression::None,
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
        ] {
            roundtrip(c);
        }
    }

    #[test]
    fn autodetect_and_names() {
        let packed = compress_zstd(b"hello");
        let mut d = decompress(Compression::Bzip2, &packed[..], 100).unwrap();
        assert_eq!(d.format(), Compression::Zstd);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(matches!(
            decompress(
                Compression::Xz,
                &b"\x0d\0\0\0\0\0\0\0nix-archive-1"[..],
                100
            ),
            Err(CompressionError::NotRecognized {
                declared: Compression::Xz
            })
        ));
        assert_eq!(Compression::from_narinfo(None).unwrap(), Compression::Bzip2);
        for bad in ["br", "gzip", "lz4", "lzip", "lzma", "foo", ""] {
            assert!(matches!(
                Compression::from_narinfo(Some(bad)),
                Err(CompressionError::Unsupported { .. })
            ));
        }
        assert_eq!(Compression::Zstd.extension(), ".nar.zst");
        assert_eq!(Compression::Xz.extension(), ".nar.xz");
        assert_eq!(Compression::Bzip2.extension(), ".nar.bz2");
        assert_eq!(Compression::None.extension(), ".nar");
    }

    #[test]
    fn bomb_is_bounded() {
        let zeros = vec![0u8; 8 << 20];
        let packed = compress_zstd(&zeros);
        assert!(packed.len() < 4096);
        let mut d = decompress(Compression::Zstd, &packed[..], 1 << 20).unwrap();
        let err = d.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(limit_exceeded(&err), Some(1 << 20));
    }
}
