//! The I/O layer: reading and publishing store paths in a binary cache.
//!
//! Layout (Nix's `file://`, `http(s)://` and `s3://` binary caches):
//!
//! ```text
//! <cache>/nix-cache-info                   StoreDir: /nix/store
//! <cache>/<hash part>.narinfo              see [`crate::narinfo`]
//! <cache>/nar/<nix32 file hash>.nar.zst    the NAR, zstd-compressed (what this crate writes)
//! ```
//!
//! Reading mirrors Nix's substituter (§9 and §11 of the reference): GET the narinfo (absent on
//! 404/403), check that its `StorePath` is the one asked for and that a trusted key signed it,
//! then GET the NAR relative to the cache root, decompress it with a size cap, and compare its
//! sha256 and size with `NarHash`/`NarSize`. This crate also checks `FileHash`/`FileSize` when
//! present (Nix does not) and that the NAR is well formed. Any failure is an error, never a
//! silent hit; the caller treats it as a miss. Nothing is cached between calls except a
//! successful `nix-cache-info` check, so a miss is never remembered.
//!
//! Publishing mirrors `nix copy --to` (§8): make sure `nix-cache-info` exists, skip the path
//! when its narinfo already exists (published narinfos are immutable), upload the NAR (unless
//! a HEAD finds it) and only then the narinfo, so that a narinfo never points at a missing NAR.
//!
//! Trust: a store starts with [`Trust::Keys`] and no key, which accepts nothing; set the trusted
//! keys (or [`Trust::Local`] for a cache the caller wrote itself) with `with_trust`.

mod file;
mod http;
pub mod netrc;
mod s3;
mod sigv4;

use std::future::Future;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::cache_info::{CacheInfo, CacheInfoError, MAX_CACHE_INFO_SIZE};
use crate::compression::{self, Compression, CompressionError};
use crate::hash::{HashingReader, Sha256Hash};
use crate::nar::{self, NarError, NarLimits};
use crate::narinfo::{MAX_NARINFO_SIZE, NarInfo, NarInfoError};
use crate::redact::RedactedUrl;
use crate::signing::{PublicKey, SecretKey};
use crate::store_path::StorePath;

pub use file::FileStore;
pub use http::{HttpConfig, HttpStore};
pub use s3::{CredentialSource, S3Config, S3Location, S3Store, resolve_credentials};
pub use sigv4::Credentials;

/// `Content-Type` of NAR uploads (also when compressed), as Nix sends it.
pub const NAR_CONTENT_TYPE: &str = "application/x-nix-nar";
/// `Content-Type` of narinfo uploads.
pub const NARINFO_CONTENT_TYPE: &str = "text/x-nix-narinfo";
/// `Content-Type` of `nix-cache-info` uploads.
pub const CACHE_INFO_CONTENT_TYPE: &str = "text/x-nix-cache-info";

/// Which narinfos a store accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The caller trusts the cache itself (for example one it wrote): no signature is needed,
    /// but hashes and sizes are still checked.
    Local,
    /// A narinfo needs a valid signature by one of these keys. An empty list accepts nothing.
    Keys(Vec<PublicKey>),
}

impl Default for Trust {
    fn default() -> Self {
        Trust::Keys(Vec::new())
    }
}

/// A verified store path fetched from a cache.
#[derive(Clone)]
pub struct Fetched {
    /// The narinfo, signature checked.
    pub narinfo: NarInfo,
    /// The uncompressed NAR, checked against `NarHash` and `NarSize`.
    pub nar: Vec<u8>,
    /// The file as the cache served it (compressed as `Compression` says), checked against
    /// `FileHash` and `FileSize` when given; it decompresses to `nar`.
    pub file: Vec<u8>,
    /// The trusted key that signed the narinfo (`None` under [`Trust::Local`]).
    pub signed_by: Option<String>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("narinfo", &self.narinfo)
            .field("nar", &format_args!("<{} bytes>", self.nar.len()))
            .field("file", &format_args!("<{} bytes>", self.file.len()))
            .field("signed_by", &self.signed_by)
            .finish()
    }
}

/// What [`Store::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The NAR and narinfo were written.
    Uploaded,
    /// A narinfo for the path already existed; nothing was written.
    AlreadyPresent,
}

/// Errors of the store layer.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A filesystem operation of a file store failed.
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request failed (connection refused, reset, …) after all retries.
    #[error("http request to {url} failed")]
    Http {
        url: RedactedUrl,
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP request timed out after all retries.
    #[error("http request to {url} timed out (limit {timeout:?})")]
    Timeout { url: RedactedUrl, timeout: Duration },
    /// The server answered with an unexpected status.
    #[error("{method} {url} returned http status {status}")]
    Status {
        method: &'static str,
        url: RedactedUrl,
        status: u16,
    },
    /// A response or file was larger than allowed.
    #[error("{url} is larger than the limit of {limit} bytes")]
    TooLarge { url: RedactedUrl, limit: u64 },
    /// The cache URL or a store option is invalid.
    #[error("invalid cache url {url:?}: {reason}")]
    InvalidUrl { url: RedactedUrl, reason: String },
    /// The HTTP client could not be set up.
    #[error("cannot set up the http client for {url}")]
    Client {
        url: RedactedUrl,
        #[source]
        source: reqwest::Error,
    },
    /// The netrc file is malformed or unreadable.
    #[error("netrc file {path}: {reason}")]
    Netrc { path: PathBuf, reason: String },
    /// A narinfo or cache info file is not UTF-8.
    #[error("{url} is not valid utf-8")]
    NotUtf8 { url: RedactedUrl },
    /// A narinfo file is malformed.
    #[error("narinfo {url} is corrupt")]
    NarInfo {
        url: RedactedUrl,
        #[source]
        source: NarInfoError,
    },
    /// The `nix-cache-info` file is malformed or for another store.
    #[error("{url} is not a usable binary cache")]
    CacheInfo {
        url: RedactedUrl,
        #[source]
        source: CacheInfoError,
    },
    /// The narinfo describes another store path than the one asked for.
    #[error("narinfo {url} is for {found}, not {expected}")]
    StorePathMismatch {
        url: RedactedUrl,
        expected: String,
        found: String,
    },
    /// No signature on the narinfo verifies with a trusted key.
    #[error("narinfo {url} for {path} lacks a valid signature from a trusted key")]
    Untrusted { url: RedactedUrl, path: String },
    /// The narinfo's `URL` is absolute, escapes the cache root or has odd characters.
    #[error("narinfo for {path} has an unsafe nar url {nar_url:?}")]
    UnsafeNarUrl { path: String, nar_url: String },
    /// The narinfo points at a NAR file that does not exist.
    #[error("file {url} does not exist in the binary cache")]
    MissingNar { url: RedactedUrl },
    /// The NAR file's size differs from `FileSize`.
    #[error("{url} has {actual} bytes, but the narinfo says FileSize {expected}")]
    FileSizeMismatch {
        url: RedactedUrl,
        expected: u64,
        actual: u64,
    },
    /// The NAR file's hash differs from `FileHash`.
    #[error("hash mismatch for {url}: narinfo says FileHash {expected}, got {actual}")]
    FileHashMismatch {
        url: RedactedUrl,
        expected: String,
        actual: String,
    },
    /// The NAR's hash differs from `NarHash`.
    #[error("hash mismatch importing path {path}: narinfo says NarHash {expected}, got {actual}")]
    NarHashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    /// The NAR's size differs from `NarSize`.
    #[error("size mismatch importing path {path}: narinfo says NarSize {expected}, got {actual}")]
    NarSizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// The NAR is longer than `NarSize` (decompression stopped there).
    #[error("nar of {path} is longer than its NarSize of {expected} bytes")]
    NarTooLong { path: String, expected: u64 },
    /// `NarSize` is over the caller's limit.
    #[error("nar of {path} has NarSize {size}, more than the limit of {limit} bytes")]
    NarOverLimit { path: String, size: u64, limit: u64 },
    /// The compression is unsupported, or decompressing failed.
    #[error("cannot decompress {url}")]
    Decompress {
        url: RedactedUrl,
        #[source]
        source: CompressionError,
    },
    /// The decompressed data is corrupt.
    #[error("corrupt compressed data in {url}")]
    CorruptCompressed {
        url: RedactedUrl,
        #[source]
        source: std::io::Error,
    },
    /// The NAR is malformed.
    #[error("invalid nar for {path}")]
    InvalidNar {
        path: String,
        #[source]
        source: NarError,
    },
    /// An S3 server refused a request (`code` is the error document's `<Code>`, when any).
    #[error("{method} {url} returned http status {status}{}", s3_hint(*.status, .code.as_deref()))]
    S3 {
        method: &'static str,
        url: String,
        status: u16,
        code: Option<String>,
    },
    /// The bucket of an `s3://` store does not exist.
    #[error(
        "bucket {bucket} does not exist on {server}: create it, or fix the bucket name, endpoint= or region= of the s3:// url"
    )]
    NoSuchBucket { bucket: String, server: String },
    /// S3 credentials are incomplete or unreadable (the message never holds a secret).
    #[error("S3 credentials: {reason}")]
    Credentials { reason: String },
    /// A background task panicked or was cancelled.
    #[error("background task for {what} failed")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// ` (CODE): what to do`, for the S3 error codes a misconfiguration produces.
fn s3_hint(status: u16, code: Option<&str>) -> String {
    let Some(code) = code else {
        return if status == 403 {
            " (access denied: check the credentials and the bucket policy)".to_owned()
        } else {
            String::new()
        };
    };
    let what = match code {
        "SignatureDoesNotMatch" => {
            "the secret key does not match the access key id (AWS_SECRET_ACCESS_KEY or the credentials file)"
        }
        "InvalidAccessKeyId" | "NotSignedUp" => "the server does not know this access key id",
        "ExpiredToken" | "TokenRefreshRequired" => "the session token expired: renew it",
        "InvalidToken" => "the session token (AWS_SESSION_TOKEN) is not valid",
        "AccessDenied" => {
            "these credentials may not do this (a read-only key cannot push; readers need s3:GetObject and s3:ListBucket)"
        }
        "AuthorizationHeaderMalformed"
        | "PermanentRedirect"
        | "IllegalLocationConstraintException" => {
            "the bucket is in another region: set region= in the s3:// url"
        }
        "RequestTimeTooSkewed" => "this machine's clock is off: fix it (NTP)",
        "SlowDown" | "ServiceUnavailable" | "InternalError" => {
            "the server is overloaded or failing"
        }
        _ => return format!(" ({code})"),
    };
    format!(" ({code}: {what})")
}

/// The primitive operations a cache offers. Paths are relative to the cache root.
pub(crate) trait Backend: Send + Sync {
    /// Reads a file; `Ok(None)` when absent; [`StoreError::TooLarge`] over `max` bytes.
    fn get(
        &self,
        rel: &str,
        max: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Whether a file exists.
    fn exists(&self, rel: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Writes a file (atomically where the backend can).
    fn put(
        &self,
        rel: &str,
        data: Vec<u8>,
        content_type: &'static str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The URL of a file, for messages.
    fn location(&self, rel: &str) -> String;
}

fn narinfo_rel(p: &StorePath) -> String {
    format!("{}.narinfo", p.hash_part())
}

/// Checks that a narinfo `URL` stays below the cache root: relative, no `.`/`..`/empty
/// segments, and only characters Nix and common caches use.
pub(crate) fn safe_nar_url(p: &StorePath, url: &str) -> Result<String, StoreError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._+=~,@".contains(c);
    let ok = !url.is_empty()
        && url
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(ok_char));
    if ok {
        Ok(url.to_owned())
    } else {
        Err(StoreError::UnsafeNarUrl {
            path: p.to_string(),
            nar_url: crate::clip(url),
        })
    }
}

fn check_trust(info: &NarInfo, trust: &Trust, url: &str) -> Result<Option<String>, StoreError> {
    match trust {
        Trust::Local => Ok(None),
        Trust::Keys(keys) => info
            .verify(keys)
            .map(Some)
            .ok_or_else(|| StoreError::Untrusted {
                url: url.into(),
                path: info.store_path.to_string(),
            }),
    }
}

async fn narinfo_impl<B: Backend>(
    b: &B,
    trust: &Trust,
    p: &StorePath,
) -> Result<Option<(NarInfo, Option<String>)>, StoreError> {
    let rel = narinfo_rel(p);
    let Some(bytes) = b.get(&rel, MAX_NARINFO_SIZE as u64).await? else {
        return Ok(None);
    };
    let url = b.location(&rel);
    let text = String::from_utf8(bytes).map_err(|_| StoreError::NotUtf8 {
        url: url.as_str().into(),
    })?;
    let info = NarInfo::parse(&text).map_err(|source| StoreError::NarInfo {
        url: url.as_str().into(),
        source,
    })?;
    if info.store_path != *p {
        return Err(StoreError::StorePathMismatch {
            url: url.into(),
            expected: p.to_string(),
            found: info.store_path.to_string(),
        });
    }
    let signed_by = check_trust(&info, trust, &url)?;
    Ok(Some((info, signed_by)))
}

/// The largest compressed file accepted for a NAR of at most `max_nar` bytes (compression
/// can add a little to incompressible data).
fn compressed_cap(max_nar: u64) -> u64 {
    max_nar
        .saturating_add(max_nar / 64)
        .saturating_add(64 * 1024)
}

async fn fetch_impl<B: Backend>(
    b: &B,
    trust: &Trust,
    p: &StorePath,
    limits: &NarLimits,
) -> Result<Option<Fetched>, StoreError> {
    let Some((info, signed_by)) = narinfo_impl(b, trust, p).await? else {
        return Ok(None);
    };
    if info.nar_size > limits.max_total {
        return Err(StoreError::NarOverLimit {
            path: p.to_string(),
            size: info.nar_size,
            limit: limits.max_total,
        });
    }
    let rel = safe_nar_url(p, &info.url)?;
    let url = b.location(&rel);
    let compression = Compression::from_narinfo(info.compression.as_deref()).map_err(|source| {
        StoreError::Decompress {
            url: url.as_str().into(),
            source,
        }
    })?;
    let cap = compressed_cap(info.nar_size);
    if info.file_size.is_some_and(|size| size > cap) {
        return Err(StoreError::TooLarge {
            url: url.into(),
            limit: cap,
        });
    }
    let Some(file) = b.get(&rel, cap).await? else {
        return Err(StoreError::MissingNar { url: url.into() });
    };
    if let Some(expected) = info.file_size
        && expected != file.len() as u64
    {
        return Err(StoreError::FileSizeMismatch {
            url: url.into(),
            expected,
            actual: file.len() as u64,
        });
    }
    let limits = *limits;
    let what = url.clone();
    let (narinfo, nar, file) = tokio::task::spawn_blocking(move || {
        decode_and_verify(&info, &file, compression, &url, &limits).map(|nar| (info, nar, file))
    })
    .await
    .map_err(|source| StoreError::Task { what, source })??;
    Ok(Some(Fetched {
        narinfo,
        nar,
        file,
        signed_by,
    }))
}

fn decode_and_verify(
    info: &NarInfo,
    file: &[u8],
    compression: Compression,
    url: &str,
    limits: &NarLimits,
) -> Result<Vec<u8>, StoreError> {
    let path = info.store_path.to_string();
    if let Some(expected) = &info.file_hash {
        let actual = Sha256Hash::digest(file);
        if actual != *expected {
            return Err(StoreError::FileHashMismatch {
                url: url.into(),
                expected: expected.to_nix_string(),
                actual: actual.to_nix_string(),
            });
        }
    }
    let decoder = compression::decompress(compression, file, info.nar_size).map_err(|source| {
        StoreError::Decompress {
            url: url.into(),
            source,
        }
    })?;
    let mut reader = HashingReader::new(decoder);
    let mut nar = Vec::with_capacity(usize::try_from(info.nar_size).unwrap_or(0));
    if let Err(e) = reader.read_to_end(&mut nar) {
        if compression::limit_exceeded(&e).is_some() {
            return Err(StoreError::NarTooLong {
                path,
                expected: info.nar_size,
            });
        }
        return Err(StoreError::CorruptCompressed {
            url: url.into(),
            source: e,
        });
    }
    let (hash, size) = reader.finish();
    if size != info.nar_size {
        return Err(StoreError::NarSizeMismatch {
            path,
            expected: info.nar_size,
            actual: size,
        });
    }
    if hash != info.nar_hash {
        return Err(StoreError::NarHashMismatch {
            path,
            expected: info.nar_hash.to_nix_string(),
            actual: hash.to_nix_string(),
        });
    }
    nar::validate(&nar[..], limits).map_err(|source| StoreError::InvalidNar { path, source })?;
    Ok(nar)
}

async fn read_cache_info<B: Backend>(b: &B) -> Result<Option<CacheInfo>, StoreError> {
    let rel = "nix-cache-info";
    let Some(bytes) = b.get(rel, MAX_CACHE_INFO_SIZE as u64).await? else {
        return Ok(None);
    };
    let url = b.location(rel);
    let text = String::from_utf8(bytes).map_err(|_| StoreError::NotUtf8 {
        url: url.as_str().into(),
    })?;
    CacheInfo::parse(&text)
        .map(Some)
        .map_err(|source| StoreError::CacheInfo {
            url: url.into(),
            source,
        })
}

async fn ensure_cache_info_impl<B: Backend>(
    b: &B,
    once: &tokio::sync::OnceCell<CacheInfo>,
) -> Result<CacheInfo, StoreError> {
    once.get_or_try_init(|| async {
        if let Some(info) = read_cache_info(b).await? {
            return Ok(info);
        }
        let info = CacheInfo::default();
        b.put(
            "nix-cache-info",
            info.render().into_bytes(),
            CACHE_INFO_CONTENT_TYPE,
        )
        .await?;
        Ok(info)
    })
    .await
    .cloned()
}

/// Builds the narinfo for a NAR compressed into `file`.
fn build_narinfo(
    p: &StorePath,
    nar_hash: Sha256Hash,
    nar_size: u64,
    file: &[u8],
    references: &[StorePath],
    keys: &[SecretKey],
) -> NarInfo {
    let file_hash = Sha256Hash::digest(file);
    let mut refs: Vec<String> = references.iter().map(StorePath::base_name).collect();
    refs.sort();
    refs.dedup();
    let mut info = NarInfo {
        store_path: p.clone(),
        url: format!("nar/{}{}", file_hash.nix32(), Compression::Zstd.extension()),
        compression: Some(Compression::Zstd.as_str().to_owned()),
        file_hash: Some(file_hash),
        file_size: Some(file.len() as u64),
        nar_hash,
        nar_size,
        references: refs,
        deriver: None,
        sigs: Vec::new(),
        ca: None,
        system: None,
    };
    for k in keys {
        info.sign(k);
    }
    info
}

async fn publish_impl<B: Backend>(
    b: &B,
    once: &tokio::sync::OnceCell<CacheInfo>,
    p: &StorePath,
    nar: &[u8],
    references: &[StorePath],
    keys: &[SecretKey],
) -> Result<PublishOutcome, StoreError> {
    ensure_cache_info_impl(b, once).await?;
    let rel = narinfo_rel(p);
    if b.get(&rel, MAX_NARINFO_SIZE as u64).await?.is_some() {
        return Ok(PublishOutcome::AlreadyPresent);
    }
    let owned = nar.to_vec();
    let path = p.to_string();
    let (nar_hash, nar_size, file) = tokio::task::spawn_blocking(move || {
        let limits = NarLimits {
            max_total: owned.len() as u64,
            max_file: owned.len() as u64,
            ..NarLimits::default()
        };
        nar::validate(&owned[..], &limits).map_err(|source| StoreError::InvalidNar {
            path: path.clone(),
            source,
        })?;
        let file = compression::compress_zstd(&owned);
        Ok::<_, StoreError>((Sha256Hash::digest(&owned), owned.len() as u64, file))
    })
    .await
    .map_err(|source| StoreError::Task {
        what: format!("compressing {p}"),
        source,
    })??;
    let info = build_narinfo(p, nar_hash, nar_size, &file, references, keys);
    if !b.exists(&info.url).await? {
        b.put(&info.url, file, NAR_CONTENT_TYPE).await?;
    }
    b.put(&rel, info.render().into_bytes(), NARINFO_CONTENT_TYPE)
        .await?;
    Ok(PublishOutcome::Uploaded)
}

async fn import_impl<B: Backend>(
    b: &B,
    once: &tokio::sync::OnceCell<CacheInfo>,
    fetched: &Fetched,
) -> Result<PublishOutcome, StoreError> {
    ensure_cache_info_impl(b, once).await?;
    let p = &fetched.narinfo.store_path;
    let rel = narinfo_rel(p);
    if b.get(&rel, MAX_NARINFO_SIZE as u64).await?.is_some() {
        return Ok(PublishOutcome::AlreadyPresent);
    }
    // The file goes where its content says, whatever the source named it: `URL` is not
    // signed, so a source could otherwise point the copy at any name in this cache. It is
    // always written (atomically replacing a file of that name), so a damaged leftover can
    // never end up behind a fresh narinfo.
    let mut info = fetched.narinfo.clone();
    let compression = Compression::from_narinfo(info.compression.as_deref()).map_err(|source| {
        StoreError::Decompress {
            url: b.location(&info.url).into(),
            source,
        }
    })?;
    let file_hash = Sha256Hash::digest(&fetched.file);
    info.url = format!("nar/{}{}", file_hash.nix32(), compression.extension());
    info.file_hash = Some(file_hash);
    info.file_size = Some(fetched.file.len() as u64);
    b.put(&info.url, fetched.file.clone(), NAR_CONTENT_TYPE)
        .await?;
    b.put(&rel, info.render().into_bytes(), NARINFO_CONTENT_TYPE)
        .await?;
    Ok(PublishOutcome::Uploaded)
}

/// A binary cache: a local directory, an HTTP server or an S3 bucket.
#[derive(Debug, Clone)]
pub enum Store {
    /// A `file://` cache.
    File(FileStore),
    /// An `http://` or `https://` cache.
    Http(HttpStore),
    /// An `s3://` cache.
    S3(S3Store),
}

impl From<FileStore> for Store {
    fn from(s: FileStore) -> Self {
        Store::File(s)
    }
}

impl From<HttpStore> for Store {
    fn from(s: HttpStore) -> Self {
        Store::Http(s)
    }
}

impl From<S3Store> for Store {
    fn from(s: S3Store) -> Self {
        Store::S3(s)
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::File($s) => $e,
            Store::Http($s) => $e,
            Store::S3($s) => $e,
        }
    };
}

impl Store {
    /// Opens a store from a URL: `file:///dir` or an absolute path for a [`FileStore`],
    /// `http://…` or `https://…` for an [`HttpStore`] with default [`HttpConfig`] settings,
    /// `s3://…` for an [`S3Store`] with default settings and the environment's credentials
    /// ([`S3Config::from_env`]). The store trusts nothing until [`Store::with_trust`].
    pub fn open(url: &str) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(StoreError::InvalidUrl {
                    url: url.into(),
                    reason: "a file url needs an absolute path".into(),
                });
            }
            return Ok(Store::File(FileStore::new(path)));
        }
        if url.starts_with('/') {
            return Ok(Store::File(FileStore::new(url)));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(Store::Http(HttpStore::new(HttpConfig::new(url))?));
        }
        if url.starts_with("s3://") {
            return Ok(Store::S3(S3Store::new(S3Config::from_env(url)?)?));
        }
        Err(StoreError::InvalidUrl {
            url: url.into(),
            reason: "expected file://, http://, https:// or s3://".into(),
        })
    }

    /// Sets which narinfos are accepted.
    pub fn with_trust(self, trust: Trust) -> Self {
        match self {
            Store::File(s) => Store::File(s.with_trust(trust)),
            Store::Http(s) => Store::Http(s.with_trust(trust)),
            Store::S3(s) => Store::S3(s.with_trust(trust)),
        }
    }

    /// The cache URL, for messages (without credentials).
    pub fn url(&self) -> String {
        dispatch!(self, s => s.url())
    }

    /// The narinfo of `p`, checked against the request and the trust setting; `Ok(None)` when
    /// the cache does not have it.
    pub async fn narinfo(&self, p: &StorePath) -> Result<Option<NarInfo>, StoreError> {
        dispatch!(self, s => s.narinfo(p).await)
    }

    /// The narinfo and verified NAR of `p`; `Ok(None)` when the cache does not have it. Every
    /// check failure is an error.
    pub async fn fetch(
        &self,
        p: &StorePath,
        limits: &NarLimits,
    ) -> Result<Option<Fetched>, StoreError> {
        dispatch!(self, s => s.fetch(p, limits).await)
    }

    /// Publishes `nar` as `p` (zstd-compressed, signed with every key of `keys`); idempotent.
    pub async fn publish(
        &self,
        p: &StorePath,
        nar: &[u8],
        references: &[StorePath],
        keys: &[SecretKey],
    ) -> Result<PublishOutcome, StoreError> {
        dispatch!(self, s => s.publish(p, nar, references, keys).await)
    }

    /// Adds a path fetched from another cache as served, signatures included; idempotent.
    pub async fn import(&self, fetched: &Fetched) -> Result<PublishOutcome, StoreError> {
        dispatch!(self, s => s.import(fetched).await)
    }

    /// Reads `nix-cache-info` (checking `StoreDir`) and writes it when absent.
    pub async fn ensure_cache_info(&self) -> Result<CacheInfo, StoreError> {
        dispatch!(self, s => s.ensure_cache_info().await)
    }

    /// Reads `nix-cache-info` without writing anything; `Ok(None)` when absent.
    pub async fn cache_info(&self) -> Result<Option<CacheInfo>, StoreError> {
        dispatch!(self, s => s.cache_info().await)
    }
}

/// Implements the public methods of a concrete store over its [`Backend`].
macro_rules! store_methods {
    () => {
        /// Sets which narinfos are accepted.
        pub fn with_trust(mut self, trust: $crate::store::Trust) -> Self {
            self.trust = trust;
            self
        }

        /// The narinfo of `p`, checked against the request and the trust setting; `Ok(None)`
        /// when the cache does not have it.
        pub async fn narinfo(
            &self,
            p: &$crate::store_path::StorePath,
        ) -> Result<Option<$crate::narinfo::NarInfo>, $crate::store::StoreError> {
            Ok($crate::store::narinfo_impl(self, &self.trust, p)
                .await?
                .map(|(info, _)| info))
        }

        /// The narinfo and verified NAR of `p`; `Ok(None)` when the cache does not have it.
        /// Every check failure is an error.
        pub async fn fetch(
            &self,
            p: &$crate::store_path::StorePath,
            limits: &$crate::nar::NarLimits,
        ) -> Result<Option<$crate::store::Fetched>, $crate::store::StoreError> {
            $crate::store::fetch_impl(self, &self.trust, p, limits).await
        }

        /// Publishes `nar` as `p` (zstd-compressed, signed with every key of `keys`):
        /// skipped when a narinfo exists, NAR first, narinfo last.
        pub async fn publish(
            &self,
            p: &$crate::store_path::StorePath,
            nar: &[u8],
            references: &[$crate::store_path::StorePath],
            keys: &[$crate::signing::SecretKey],
        ) -> Result<$crate::store::PublishOutcome, $crate::store::StoreError> {
            $crate::store::publish_impl(self, &self.cache_info, p, nar, references, keys).await
        }

        /// Adds a path fetched (and so verified) from another cache: the file byte for byte as
        /// it was served (no recompression) under `nar/<FileHash>.<ext>`, and the narinfo with
        /// every signature (which still verify: `URL`, `FileHash` and `FileSize` are not
        /// signed). Skipped when a narinfo exists; the file first, the narinfo last.
        pub async fn import(
            &self,
            fetched: &$crate::store::Fetched,
        ) -> Result<$crate::store::PublishOutcome, $crate::store::StoreError> {
            $crate::store::import_impl(self, &self.cache_info, fetched).await
        }

        /// Reads `nix-cache-info` (checking `StoreDir`) and writes it when absent. A success
        /// is remembered for the life of this store value.
        pub async fn ensure_cache_info(
            &self,
        ) -> Result<$crate::cache_info::CacheInfo, $crate::store::StoreError> {
            $crate::store::ensure_cache_info_impl(self, &self.cache_info).await
        }

        /// Reads `nix-cache-info` without writing anything; `Ok(None)` when absent.
        pub async fn cache_info(
            &self,
        ) -> Result<Option<$crate::cache_info::CacheInfo>, $crate::store::StoreError> {
            $crate::store::read_cache_info(self).await
        }
    };
}
pub(crate) use store_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nar_urls() {
        let p = StorePath::parse("/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep").unwrap();
        for good in [
            "nar/1bpbj8ygbwi3nlsn2a83k0vnma1h0hkzblx5hxyl7w90ghwsikrc.nar.zst",
            "nar/plain-dep.nar",
            "x.nar",
        ] {
            assert!(safe_nar_url(&p, good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "nar/../../x",
            "nar//x",
            "./x",
            "http://evil/x",
            "nar/%2e%2e/x",
            "nar/x?y",
            "nar\\x",
            "nar/x y",
        ] {
            assert!(
                matches!(safe_nar_url(&p, bad), Err(StoreError::UnsafeNarUrl { .. })),
                "{bad}"
            );
        }
    }
}
