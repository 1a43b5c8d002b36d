//! A binary cache in an S3 bucket (AWS S3, Cloudflare R2, Garage, MinIO, Ceph, …), addressed
//! with Nix's S3 store URL and spoken to with signed single-object requests.
//!
//! ```text
//! s3://BUCKET[/PREFIX]?region=R&endpoint=HOST[:PORT]&scheme=http|https&profile=P
//! ```
//!
//! * `region`: the SigV4 region (default `us-east-1`, as in Nix; R2 uses `auto`, Garage its
//!   configured `s3_region`);
//! * `endpoint`: an S3-compatible server; absent means AWS. With an endpoint the requests are
//!   path-style (`SCHEME://HOST[:PORT]/BUCKET/KEY`), which every S3-compatible server accepts;
//!   AWS is virtual-host style (`https://BUCKET.s3.REGION.amazonaws.com/KEY`), path-style when
//!   the bucket name has a dot (a dotted name breaks the TLS wildcard certificate). The endpoint
//!   may carry its scheme (`endpoint=http://127.0.0.1:9000`);
//! * `scheme`: `https` (default) or `http`;
//! * `profile`: the profile of the shared credentials file to sign with.
//!
//! The objects are exactly those of an HTTP binary cache, below `PREFIX/` when given:
//! `nix-cache-info`, `<hash>.narinfo`, `nar/<file hash>.nar.zst`. Publishing writes the NAR
//! first and the narinfo last (see [`super`]); `nix-cache-info` and narinfos are created with
//! `If-None-Match: *`, so on servers that honour it the first writer wins and a second one's
//! `412 Precondition Failed` counts as success. Servers that ignore the header overwrite, which
//! is still correct: every narinfo points at a NAR that was written before it, NAR names are
//! their content's hash, and signatures decide what counts.
//!
//! Status handling differs from a plain HTTP cache because S3 says more: `404` is absent unless
//! the bucket itself is missing (`NoSuchBucket`, also checked with one `HEAD` of the bucket on
//! the first absent object, since some servers answer `NoSuchKey` for a missing bucket), and
//! `403` is an error, never "absent" (bad signature, unknown key, expired token, a read-only
//! key that tried to write). Redirects are not followed (a signed request cannot be replayed
//! elsewhere; `PermanentRedirect` means the region is wrong). Retries, timeouts and size caps
//! are those of [`super::HttpStore`].
//!
//! Credentials ([`resolve_credentials`]): with `profile=` in the URL, that profile of the shared
//! credentials file (as Nix does); otherwise `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN`, else the file's `AWS_PROFILE` or `default` profile, else none, and
//! requests go unsigned (a public bucket). No secret is ever part of a message or `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::sigv4::{self, Credentials};
use super::{Backend, StoreError, Trust, store_methods};
use crate::cache_info::CacheInfo;

/// Where an `s3://` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (empty: the bucket root).
    pub prefix: String,
    pub region: String,
    /// `host[:port]` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    /// `http` or `https`.
    pub scheme: String,
    pub profile: Option<String>,
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// 3 to 63 letters, digits, `.`, `-` or `_`, not starting or ending with `.` or `-`.
fn is_bucket_name(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-'])
}

/// Empty, or `/`-separated segments of letters, digits and `-._~+=,@` (no empty, `.` or `..`
/// segment).
fn is_key_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~+=,@".contains(c))
        })
}

/// The `endpoint` parameter: `[http[s]://]HOST[:PORT][/]`, as (its scheme if given, the host);
/// `host_ok` decides which characters a host may have.
fn parse_endpoint(
    v: &str,
    host_ok: impl Fn(&str) -> bool,
) -> Result<(Option<String>, String), String> {
    let (sch, host) = match v.split_once("://") {
        Some((s, h)) if s == "http" || s == "https" => (Some(s.to_owned()), h),
        Some(_) => return Err("the endpoint's scheme must be http or https".into()),
        None => (None, v),
    };
    let host = host.trim_end_matches('/');
    if host.is_empty() || !host_ok(host) {
        return Err(format!(
            "endpoint `{}` is not HOST[:PORT] (no path, no credentials)",
            crate::clip(v)
        ));
    }
    Ok((sch, host.to_owned()))
}

impl S3Location {
    /// Parses Nix's S3 store URL (see the module docs).
    pub fn parse(url: &str) -> Result<S3Location, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: crate::clip(url).into(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 store url starts with s3://".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.contains('#') || query.contains('#') {
            return Err(invalid("a fragment (#…) is not allowed".into()));
        }
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if !is_bucket_name(bucket) {
            return Err(invalid(format!(
                "`{}` is not a bucket name (3 to 63 letters, digits, `.`, `-` or `_`)",
                crate::clip(bucket)
            )));
        }
        let prefix = prefix.trim_end_matches('/');
        if !is_key_prefix(prefix) {
            return Err(invalid(format!(
                "`{}` is not a usable key prefix (segments of letters, digits and -._~+=,@)",
                crate::clip(prefix)
            )));
        }
        let mut loc = S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: "us-east-1".into(),
            endpoint: None,
            scheme: "https".into(),
            profile: None,
        };
        let mut scheme_param = None;
        let mut endpoint_scheme = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)
                .ok_or_else(|| invalid(format!("parameter `{k}` is not valid percent-encoding")))?;
            if v.is_empty() {
                return Err(invalid(format!("parameter `{k}` has no value")));
            }
            let v_ok = |v: &str| {
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
            };
            match k {
                "region" if v_ok(&v) && !v.contains([':', '[', ']']) => loc.region = v,
                "profile" if v_ok(&v) && !v.contains([':', '[', ']']) => loc.profile = Some(v),
                "scheme" if v == "http" || v == "https" => scheme_param = Some(v),
                "scheme" => {
                    return Err(invalid(format!(
                        "scheme must be http or https, not `{}`",
                        crate::clip(&v)
                    )));
                }
                "endpoint" => {
                    let (sch, host) = parse_endpoint(&v, v_ok).map_err(invalid)?;
                    endpoint_scheme = sch;
                    loc.endpoint = Some(host);
                }
                "region" | "profile" => {
                    return Err(invalid(format!(
                        "parameter `{k}` has an invalid value `{}`",
                        crate::clip(&v)
                    )));
                }
                other => {
                    return Err(invalid(format!(
                        "unsupported store parameter `{}` (checkdef reads region, endpoint, scheme and profile)",
                        crate::clip(other)
                    )));
                }
            }
        }
        match (scheme_param, endpoint_scheme) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(format!(
                    "scheme={a} contradicts the endpoint's {b}://"
                )));
            }
            (Some(s), _) | (None, Some(s)) => loc.scheme = s,
            (None, None) => {}
        }
        Ok(loc)
    }

    /// `scheme://host` of the server and the path of the bucket on it (empty for virtual-host
    /// style, `/BUCKET` for path style).
    fn origin_and_bucket_path(&self) -> (String, String) {
        match &self.endpoint {
            Some(host) => (
                format!("{}://{host}", self.scheme),
                format!("/{}", self.bucket),
            ),
            None if self.bucket.contains('.') => (
                format!("{}://s3.{}.amazonaws.com", self.scheme, self.region),
                format!("/{}", self.bucket),
            ),
            None => (
                format!(
                    "{}://{}.s3.{}.amazonaws.com",
                    self.scheme, self.bucket, self.region
                ),
                String::new(),
            ),
        }
    }

    /// The object key of `rel` (a path relative to the cache root).
    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// `s3://BUCKET[/PREFIX]`, without parameters.
    pub fn root(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Where [`resolve_credentials`] found the credentials (for `checkdef status`; no values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and maybe `AWS_SESSION_TOKEN`).
    Environment { session_token: bool },
    /// A profile of the shared credentials file.
    File { path: PathBuf, profile: String },
    /// None found: requests are sent unsigned.
    Anonymous,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Environment { session_token } => write!(
                f,
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY{} from the environment",
                if *session_token {
                    " / AWS_SESSION_TOKEN"
                } else {
                    ""
                }
            ),
            CredentialSource::File { path, profile } => {
                write!(f, "profile `{profile}` of {}", path.display())
            }
            CredentialSource::Anonymous => {
                write!(
                    f,
                    "none (requests are unsigned: only a public bucket answers)"
                )
            }
        }
    }
}

/// Finds the credentials for a store whose URL names `profile` (or not), reading variables
/// through `env` (normally `std::env::var`). See the module docs for the order. A profile that
/// was asked for (by `profile=` or `AWS_PROFILE`) must exist; the `default` profile may not.
pub fn resolve_credentials(
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<Credentials>, CredentialSource), StoreError> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let cred_err = |reason: String| StoreError::Credentials { reason };
    if profile.is_none() {
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                let token = var("AWS_SESSION_TOKEN");
                let source = CredentialSource::Environment {
                    session_token: token.is_some(),
                };
                return Ok((
                    Some(Credentials {
                        access_key_id: id.trim().to_owned(),
                        secret_access_key: secret.trim().to_owned(),
                        session_token: token.map(|t| t.trim().to_owned()),
                    }),
                    source,
                ));
            }
            (Some(_), None) => {
                return Err(cred_err(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, or unset both to use the credentials file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(cred_err(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both, or unset both to use the credentials file".into(),
                ));
            }
            (None, None) => {}
        }
    }
    let (name, asked) = match (profile, var("AWS_PROFILE")) {
        (Some(p), _) => (p.to_owned(), true),
        (None, Some(p)) => (p.trim().to_owned(), true),
        (None, None) => ("default".to_owned(), false),
    };
    let path = match var("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => PathBuf::from(p),
        None => match var("HOME") {
            Some(h) => PathBuf::from(h).join(".aws").join("credentials"),
            None if asked => {
                return Err(cred_err(format!(
                    "profile `{name}` was asked for, but neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set"
                )));
            }
            None => return Ok((None, CredentialSource::Anonymous)),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !asked => {
            return Ok((None, CredentialSource::Anonymous));
        }
        Err(e) => {
            return Err(cred_err(format!(
                "cannot read the credentials file {} for profile `{name}`: {e}",
                path.display()
            )));
        }
    };
    match parse_profile(&text, &name).map_err(|why| {
        cred_err(format!(
            "credentials file {}: {why} (profile `{name}`)",
            path.display()
        ))
    })? {
        Some(c) => Ok((
            Some(c),
            CredentialSource::File {
                path,
                profile: name,
            },
        )),
        None if asked => Err(cred_err(format!(
            "the credentials file {} has no profile `{name}`",
            path.display()
        ))),
        None => Ok((None, CredentialSource::Anonymous)),
    }
}

/// The credentials of profile `name` in an AWS shared credentials file (INI: `[name]` or
/// `[profile name]` sections of `key = value` lines, `#`/`;` comments). Error messages name
/// lines and keys, never values.
fn parse_profile(text: &str, name: &str) -> Result<Option<Credentials>, String> {
    let mut in_profile = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let section = section
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: a section header needs a closing `]`", n + 1))?
                .trim();
            let section = section.strip_prefix("profile ").unwrap_or(section).trim();
            in_profile = section == name;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = value`", n + 1))?;
        let v = v.trim().to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" | "aws_security_token" => token = Some(v),
            _ => {}
        }
    }
    if !found {
        return Ok(None);
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token.filter(|t| !t.is_empty()),
        })),
        _ => Err("the profile needs both aws_access_key_id and aws_secret_access_key".into()),
    }
}

/// Settings of an [`S3Store`].
#[derive(Clone)]
pub struct S3Config {
    /// The `s3://` store URL.
    pub url: String,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one whole request, body included.
    pub request_timeout: Duration,
    /// Extra attempts after a failure that may be transient.
    pub retries: u32,
    /// Signing credentials; `None` sends unsigned requests.
    pub credentials: Option<Credentials>,
    /// Why the credentials could not be found ([`resolve_credentials`]'s error, which never
    /// holds a secret). When set, every request fails with [`StoreError::Credentials`] without
    /// being sent, so the caller meets it where it handles an unreachable store.
    pub credentials_error: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl S3Config {
    /// Defaults as [`super::HttpConfig::new`]; no credentials (see [`resolve_credentials`]).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            retries: 3,
            credentials: None,
            credentials_error: None,
            user_agent: format!("cache-proto/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Sets `credentials` (or `credentials_error`) from [`resolve_credentials`]'s answer.
    pub fn with_resolved(
        mut self,
        resolved: Result<(Option<Credentials>, CredentialSource), StoreError>,
    ) -> Self {
        match resolved {
            Ok((c, _)) => self.credentials = c,
            Err(StoreError::Credentials { reason }) => self.credentials_error = Some(reason),
            Err(e) => self.credentials_error = Some(e.to_string()),
        }
        self
    }

    /// [`S3Config::new`] with the credentials [`resolve_credentials`] finds in the process
    /// environment (a failure to find them is kept in `credentials_error`).
    pub fn from_env(url: impl Into<String>) -> Result<Self, StoreError> {
        let cfg = Self::new(url);
        let loc = S3Location::parse(&cfg.url)?;
        Ok(
            cfg.with_resolved(resolve_credentials(loc.profile.as_deref(), &|k| {
                std::env::var(k).ok()
            })),
        )
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("url", &self.url)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("credentials", &self.credentials)
            .field("credentials_error", &self.credentials_error)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// An `s3://` binary cache.
#[derive(Clone)]
pub struct S3Store {
    client: reqwest::Client,
    loc: Arc<S3Location>,
    url: String,
    /// `scheme://host[:port]`.
    origin: String,
    /// `host[:port]` as the `Host` header carries it (signed).
    host: String,
    /// `/BUCKET` (path style) or empty (virtual-host style).
    bucket_path: String,
    credentials: Option<Arc<Credentials>>,
    credentials_error: Option<Arc<str>>,
    retries: u32,
    request_timeout: Duration,
    trust: Trust,
    cache_info: Arc<OnceCell<CacheInfo>>,
    /// Set once a `HEAD` of the bucket did not say "no such bucket".
    bucket_seen: Arc<OnceCell<()>>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.url)
            .field("origin", &self.origin)
            .field("signed", &self.credentials.is_some())
            .field("retries", &self.retries)
            .field("request_timeout", &self.request_timeout)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

enum Op<'a> {
    Get {
        max: u64,
    },
    Head,
    Put {
        data: &'a [u8],
        content_type: &'static str,
        /// Send `If-None-Match: *`.
        create_only: bool,
    },
    HeadBucket,
}

enum Outcome {
    Body(Option<Vec<u8>>),
    Exists(bool),
    Done,
}

struct Failure {
    error: StoreError,
    retryable: bool,
}

/// Largest S3 error document read (they are a few hundred bytes).
const MAX_ERROR_BODY: usize = 16 * 1024;

/// The `<Code>` of an S3 error document.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = text[start..start + len].trim();
    (!code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| code.to_owned())
}

impl S3Store {
    /// Builds the store and its connection pool. It trusts nothing until
    /// [`S3Store::with_trust`].
    pub fn new(config: S3Config) -> Result<Self, StoreError> {
        let loc = S3Location::parse(&config.url)?;
        let (origin, bucket_path) = loc.origin_and_bucket_path();
        let parsed = reqwest::Url::parse(&origin).map_err(|e| StoreError::InvalidUrl {
            url: crate::clip(&config.url).into(),
            reason: format!("endpoint: {e}"),
        })?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(StoreError::InvalidUrl {
                    url: crate::clip(&config.url).into(),
                    reason: "the endpoint has no host".into(),
                });
            }
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            // A signed request is only valid for its own host and path.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| StoreError::Client {
                url: loc.root().into(),
                source,
            })?;
        Ok(Self {
            client,
            url: config.url.clone(),
            origin,
            host,
            bucket_path,
            loc: Arc::new(loc),
            credentials: config.credentials.map(Arc::new),
            credentials_error: config.credentials_error.map(Arc::from),
            retries: config.retries,
            request_timeout: config.request_timeout,
            trust: Trust::default(),
            cache_info: Arc::new(OnceCell::new()),
            bucket_seen: Arc::new(OnceCell::new()),
        })
    }

    /// The store URL as configured (it holds no secrets).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Where the URL points.
    pub fn location_info(&self) -> &S3Location {
        &self.loc
    }

    /// Whether requests are signed.
    pub fn is_signed(&self) -> bool {
        self.credentials.is_some()
    }

    /// Reads one object below the cache root (`nix-cache-info`, `<hash>.narinfo`, `nar/…`):
    /// `Ok(None)` when absent, [`StoreError::TooLarge`] over `max` bytes.
    pub async fn get_object(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Backend::get(self, rel, max).await
    }

    store_methods!();

    /// The encoded request path of `rel`, or of the bucket itself for `None`.
    fn path_of(&self, rel: Option<&str>) -> String {
        match rel {
            Some(rel) => {
                sigv4::uri_encode_path(&format!("{}/{}", self.bucket_path, self.loc.key(rel)))
            }
            None if self.bucket_path.is_empty() => "/".to_owned(),
            None => sigv4::uri_encode_path(&self.bucket_path),
        }
    }

    fn failure(&self, url: &str, e: reqwest::Error) -> Failure {
        let retryable = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
        let error = if e.is_timeout() {
            StoreError::Timeout {
                url: url.to_owned().into(),
                timeout: self.request_timeout,
            }
        } else {
            StoreError::Http {
                url: url.to_owned().into(),
                source: e.without_url(),
            }
        };
        Failure { error, retryable }
    }

    /// The error for a refused request; reads the error document's `<Code>` when there is one.
    async fn refused(
        &self,
        method: &'static str,
        url: &str,
        mut resp: reqwest::Response,
    ) -> Failure {
        let status = resp.status();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
        let code = error_code(&body).or_else(|| {
            resp.headers()
                .get("x-amz-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        if code.as_deref() == Some("NoSuchBucket") {
            return Failure {
                error: self.no_such_bucket(),
                retryable: false,
            };
        }
        // 409 is S3's "a conditional write to this key is in progress": retry, and the next
        // attempt finds the object (412).
        let retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::CONFLICT
            || code.as_deref() == Some("SlowDown");
        Failure {
            error: StoreError::S3 {
                method,
                url: url.to_owned(),
                status: status.as_u16(),
                code,
            },
            retryable,
        }
    }

    fn no_such_bucket(&self) -> StoreError {
        StoreError::NoSuchBucket {
            bucket: self.loc.bucket.clone(),
            server: self.origin.clone(),
        }
    }

    async fn once(&self, rel: Option<&str>, url: &str, op: &Op<'_>) -> Result<Outcome, Failure> {
        let (method, name) = match op {
            Op::Get { .. } => (Method::GET, "GET"),
            Op::Head | Op::HeadBucket => (Method::HEAD, "HEAD"),
            Op::Put { .. } => (Method::PUT, "PUT"),
        };
        if let Some(reason) = &self.credentials_error {
            return Err(Failure {
                error: StoreError::Credentials {
                    reason: reason.to_string(),
                },
                retryable: false,
            });
        }
        let path = self.path_of(rel);
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.origin));
        let mut extra: Vec<(&str, &str)> = Vec::new();
        let payload_hash = match op {
            Op::Put {
                data,
                content_type,
                create_only,
            } => {
                extra.push(("content-type", content_type));
                if *create_only {
                    extra.push(("if-none-match", "*"));
                }
                sigv4::sha256_hex(data)
            }
            _ => sigv4::EMPTY_SHA256.to_owned(),
        };
        for (k, v) in &extra {
            req = req.header(*k, *v);
        }
        if let Some(creds) = &self.credentials {
            let signed = sigv4::sign(
                creds,
                &self.loc.region,
                &sigv4::Request {
                    method: name,
                    path: &path,
                    host: &self.host,
                    headers: &extra,
                    payload_sha256: &payload_hash,
                },
                SystemTime::now(),
            );
            for (k, v) in signed {
                req = req.header(k, v);
            }
        }
        if let Op::Put { data, .. } = op {
            req = req.body(data.to_vec());
        }
        let mut resp = req.send().await.map_err(|e| self.failure(url, e))?;
        let status = resp.status();
        match op {
            Op::Get { max } => {
                if status == StatusCode::NOT_FOUND {
                    let failure = self.refused(name, url, resp).await;
                    return match failure.error {
                        StoreError::NoSuchBucket { .. } => Err(failure),
                        _ => Ok(Outcome::Body(None)),
                    };
                }
                if !status.is_success() {
                    return Err(self.refused(name, url, resp).await);
                }
                let too_large = || Failure {
                    error: StoreError::TooLarge {
                        url: url.to_owned().into(),
                        limit: *max,
                    },
                    retryable: false,
                };
                if resp.content_length().is_some_and(|len| len > *max) {
                    return Err(too_large());
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| self.failure(url, e))? {
                    if body.len() as u64 + chunk.len() as u64 > *max {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(Outcome::Body(Some(body)))
            }
            Op::Head => {
                // A HEAD has no error document. 403 is what S3 answers for a missing object to
                // a key without s3:ListBucket: "not known to exist", and the PUT that follows
                // tells whether the key may write.
                if status.is_success() {
                    Ok(Outcome::Exists(true))
                } else if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN {
                    Ok(Outcome::Exists(false))
                } else {
                    Err(self.refused(name, url, resp).await)
                }
            }
            // 403: a key without s3:ListBucket may not ask; assume the bucket is there.
            Op::HeadBucket if status == StatusCode::NOT_FOUND => Ok(Outcome::Exists(false)),
            Op::HeadBucket if status.is_success() || status == StatusCode::FORBIDDEN => {
                Ok(Outcome::Exists(true))
            }
            Op::HeadBucket => Err(self.refused(name, url, resp).await),
            Op::Put { .. } => {
                // 412: the object exists (If-None-Match: *), written by someone else.
                if status.is_success() || status == StatusCode::PRECONDITION_FAILED {
                    Ok(Outcome::Done)
                } else {
                    Err(self.refused(name, url, resp).await)
                }
            }
        }
    }

    async fn run(&self, rel: Option<&str>, op: Op<'_>) -> Result<Outcome, StoreError> {
        let url = match rel {
            Some(rel) => self.location(rel),
            None => format!("s3://{}", self.loc.bucket),
        };
        let mut attempt = 0u32;
        loop {
            match self.once(rel, &url, &op).await {
                Ok(outcome) => return Ok(outcome),
                Err(Failure { error, retryable }) => {
                    if !retryable || attempt >= self.retries {
                        return Err(error);
                    }
                    tokio::time::sleep(super::http::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Called when an object is absent: some servers answer `NoSuchKey` inside a missing
    /// bucket (and create it on the first PUT), so ask about the bucket itself, once.
    async fn check_bucket(&self) -> Result<(), StoreError> {
        self.bucket_seen
            .get_or_try_init(|| async {
                match self.run(None, Op::HeadBucket).await? {
                    Outcome::Exists(false) => Err(self.no_such_bucket()),
                    _ => Ok(()),
                }
            })
            .await
            .map(|_| ())
    }
}

impl Backend for S3Store {
    async fn get(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.run(Some(rel), Op::Get { max }).await? {
            Outcome::Body(Some(b)) => Ok(Some(b)),
            _ => {
                self.check_bucket().await?;
                Ok(None)
            }
        }
    }

    async fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        match self.run(Some(rel), Op::Head).await? {
            Outcome::Exists(true) => Ok(true),
            _ => {
                self.check_bucket().await?;
                Ok(false)
            }
        }
    }

    async fn put(
        &self,
        rel: &str,
        data: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), StoreError> {
        // NARs are named by their content's hash and always written (so a damaged object under
        // that name is replaced); narinfos and nix-cache-info are created only if absent.
        let create_only = rel == "nix-cache-info" || rel.ends_with(".narinfo");
        self.run(
            Some(rel),
            Op::Put {
                data: &data,
                content_type,
                create_only,
            },
        )
        .await
        .map(|_| ())
    }

    fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.loc.root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let l = S3Location::parse("s3://cache").unwrap();
        assert_eq!(
            l,
            S3Location {
                bucket: "cache".into(),
                prefix: String::new(),
                region: "us-east-1".into(),
                endpoint: None,
                scheme: "https".into(),
                profile: None,
            }
        );
        assert_eq!(
            l.origin_and_bucket_path(),
            (
                "https://cache.s3.us-east-1.amazonaws.com".into(),
                String::new()
            )
        );
        let l = S3Location::parse(
            "s3://team-cache/checkdef/v1/?region=garage&endpoint=127.0.0.1:3900&scheme=http&profile=ci",
        )
        .unwrap();
        assert_eq!(l.prefix, "checkdef/v1");
        assert_eq!(l.region, "garage");
        assert_eq!(l.profile.as_deref(), Some("ci"));
        assert_eq!(
            l.origin_and_bucket_path(),
            ("http://127.0.0.1:3900".into(), "/team-cache".into())
        );
        assert_eq!(l.key("x.narinfo"), "checkdef/v1/x.narinfo");
        assert_eq!(l.root(), "s3://team-cache/checkdef/v1");
        let l = S3Location::parse("s3://b.with.dots?region=eu-west-1").unwrap();
        assert_eq!(
            l.origin_and_bucket_path(),
            (
                "https://s3.eu-west-1.amazonaws.com".into(),
                "/b.with.dots".into()
            )
        );
        let l = S3Location::parse("s3://abc?endpoint=http%3A%2F%2Fminio.lan%3A9000%2F").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("minio.lan:9000"));
        assert_eq!(l.scheme, "http");
        for bad in [
            "s3://",
            "s3://ab",
            "s3://-abc",
            "s3://abc/../x",
            "s3://abc//x",
            "s3://abc?region=",
            "s3://abc?scheme=ftp",
            "s3://abc?endpoint=http://u:p@host/",
            "s3://abc?endpoint=host/path",
            "s3://abc?endpoint=https://h&scheme=http",
            "s3://abc?compression=xz",
            "s3://abc?region=a%zz",
            "s3://abc#frag",
            "http://abc",
        ] {
            assert!(
                matches!(S3Location::parse(bad), Err(StoreError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn credentials_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "# team file\n[default]\naws_access_key_id = DEFAULTID\naws_secret_access_key = defaultsecret\n\n\
             [profile ci]\naws_access_key_id=CIID\naws_secret_access_key=cisecret\naws_session_token=citoken\n\
             [broken]\naws_access_key_id = X\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        // Environment first.
        let (c, s) = resolve_credentials(
            None,
            &env_of(&[
                ("AWS_ACCESS_KEY_ID", "ENVID"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_SHARED_CREDENTIALS_FILE", f),
            ]),
        )
        .unwrap();
        assert_eq!(c.unwrap().access_key_id, "ENVID");
        assert_eq!(
            s,
            CredentialSource::Environment {
                session_token: false
            }
        );
        // profile= in the URL picks the file's profile even with variables set (as Nix does).
        let (c, s) = resolve_credentials(
            Some("ci"),
            &env_of(&[
                ("AWS_ACCESS_KEY_ID", "ENVID"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_SHARED_CREDENTIALS_FILE", f),
            ]),
        )
        .unwrap();
        let c = c.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("CIID", Some("citoken"))
        );
        assert!(matches!(s, CredentialSource::File { ref profile, .. } if profile == "ci"));
        // AWS_PROFILE, then default.
        let (c, _) = resolve_credentials(
            None,
            &env_of(&[("AWS_PROFILE", "ci"), ("AWS_SHARED_CREDENTIALS_FILE", f)]),
        )
        .unwrap();
        assert_eq!(c.unwrap().access_key_id, "CIID");
        let (c, _) =
            resolve_credentials(None, &env_of(&[("AWS_SHARED_CREDENTIALS_FILE", f)])).unwrap();
        assert_eq!(c.unwrap().access_key_id, "DEFAULTID");
        // HOME/.aws/credentials; none at all is anonymous.
        let (c, s) = resolve_credentials(None, &env_of(&[("HOME", "/nonexistent")])).unwrap();
        assert!(c.is_none());
        assert_eq!(s, CredentialSource::Anonymous);
        // Errors: a named profile that is missing, an incomplete one, half the variables.
        for (profile, env) in [
            (Some("nope"), vec![("AWS_SHARED_CREDENTIALS_FILE", f)]),
            (
                None,
                vec![("AWS_PROFILE", "nope"), ("HOME", "/nonexistent")],
            ),
            (Some("broken"), vec![("AWS_SHARED_CREDENTIALS_FILE", f)]),
            (None, vec![("AWS_ACCESS_KEY_ID", "ENVID")]),
        ] {
            let e = resolve_credentials(profile, &env_of(&env)).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, StoreError::Credentials { .. }), "{msg}");
            for value in ["cisecret", "defaultsecret", "citoken", "ENVID", "CIID"] {
                assert!(!msg.contains(value), "{msg}");
            }
        }
    }

    #[test]
    fn error_codes() {
        let doc = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>";
        assert_eq!(error_code(doc).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code(b"<Error><Code>a b</Code></Error>"), None);
        assert_eq!(error_code(b"nothing"), None);
    }

    /// Against a real S3 server: `If-None-Match: *` is sent for narinfos (the first writer
    /// wins and the loser's 412 is a success), NARs are overwritten, a missing bucket is
    /// `NoSuchBucket` even where the server says `NoSuchKey`, a wrong secret is a 403.
    #[test]
    fn conditional_create_and_bucket_checks_against_s3s_fs() {
        let Some(server) = testkit::S3Server::start("ak", "sk-secret", &["bkt"]) else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = |bucket: &str, secret: &str| {
            let mut cfg = S3Config::new(server.url(&format!("{bucket}/pre")));
            cfg.credentials = Some(Credentials {
                access_key_id: "ak".into(),
                secret_access_key: secret.into(),
                session_token: None,
            });
            cfg.retries = 0;
            S3Store::new(cfg).unwrap()
        };
        let s = store("bkt", "sk-secret");
        rt.block_on(async {
            assert_eq!(s.get("x.narinfo", 1024).await.unwrap(), None);
            assert!(!s.exists("x.narinfo").await.unwrap());
            s.put("x.narinfo", b"first".to_vec(), "text/x-nix-narinfo")
                .await
                .unwrap();
            s.put("x.narinfo", b"second".to_vec(), "text/x-nix-narinfo")
                .await
                .unwrap();
            assert_eq!(
                s.get("x.narinfo", 1024).await.unwrap().as_deref(),
                Some(&b"first"[..])
            );
            s.put("nar/a.nar.zst", b"one".to_vec(), "application/x-nix-nar")
                .await
                .unwrap();
            s.put("nar/a.nar.zst", b"two".to_vec(), "application/x-nix-nar")
                .await
                .unwrap();
            assert_eq!(
                s.get("nar/a.nar.zst", 1024).await.unwrap().as_deref(),
                Some(&b"two"[..])
            );
            assert!(s.exists("nar/a.nar.zst").await.unwrap());
            assert!(matches!(
                s.get("nar/a.nar.zst", 2).await,
                Err(StoreError::TooLarge { .. })
            ));
            let missing = store("nope-bucket", "sk-secret");
            let e = missing.get("x.narinfo", 1024).await.unwrap_err();
            assert!(matches!(e, StoreError::NoSuchBucket { .. }), "{e}");
            let wrong = store("bkt", "wrong");
            let e = wrong.get("x.narinfo", 1024).await.unwrap_err();
            assert!(
                matches!(&e, StoreError::S3 { status: 403, code: Some(c), .. } if c == "SignatureDoesNotMatch"),
                "{e}"
            );
            assert!(e.to_string().contains("secret key does not match"), "{e}");
            assert!(!e.to_string().contains("wrong"), "{e}");
        });
        assert!(server.bucket_dir("bkt").join("pre/x.narinfo").is_file());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut cfg = S3Config::new("s3://bucket?endpoint=127.0.0.1:1&scheme=http");
        cfg.credentials = Some(Credentials {
            access_key_id: "id".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        });
        assert!(!format!("{cfg:?}").contains("secret\""));
        assert!(!format!("{cfg:?}").contains("very-secret"));
        let s = S3Store::new(cfg).unwrap();
        let d = format!("{s:?}");
        assert!(
            !d.contains("very-secret") && !d.contains("token-secret"),
            "{d}"
        );
        assert_eq!(s.path_of(Some("nar/a.nar.zst")), "/bucket/nar/a.nar.zst");
        assert_eq!(s.path_of(None), "/bucket");
        assert_eq!(s.host, "127.0.0.1:1");
    }
}
