//! A binary cache behind HTTP(S), spoken to the way Nix 2.8 does.
//!
//! Requests, relative to the cache URL (with or without a trailing slash):
//!
//! * `GET nix-cache-info`; when 404, `PUT` it with `Content-Type: text/x-nix-cache-info`;
//! * `GET <hash>.narinfo` (404 or 403 = absent);
//! * `GET <narinfo URL>` for the NAR;
//! * `HEAD nar/<file hash>.nar.zst`, then `PUT` it with `Content-Type: application/x-nix-nar`
//!   when absent, then `PUT <hash>.narinfo` with `Content-Type: text/x-nix-narinfo`.
//!
//! Authentication: a bearer token (`Authorization: Bearer …`), else basic auth from the URL's
//! user info or from a netrc file (matched by host, sent pre-emptively as curl does).
//!
//! Robustness: one connection pool per store value (clones share it, so lookups can run
//! concurrently); a connect timeout and a whole-request timeout; bounded retries with
//! exponential backoff and jitter on connection errors, timeouts, 5xx and 429, none on other
//! 4xx; response bodies are read with a size cap, so an over-long body is an error.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::netrc::Netrc;
use super::{Backend, StoreError, Trust, store_methods};
use crate::cache_info::CacheInfo;
use crate::redact::RedactedUrl;

/// Settings of an [`HttpStore`].
#[derive(Clone)]
pub struct HttpConfig {
    /// The cache root, `http://…` or `https://…`, with or without a trailing slash.
    pub url: String,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one whole request, body included. Size it for the largest NAR you transfer.
    pub request_timeout: Duration,
    /// Extra attempts after a failure that may be transient.
    pub retries: u32,
    /// A netrc file for basic auth (a missing file means no credentials, as with curl).
    pub netrc: Option<PathBuf>,
    /// A bearer token, sent as `Authorization: Bearer <token>`; takes precedence over netrc.
    pub bearer_token: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl HttpConfig {
    /// Defaults: connect timeout 5 s, request timeout 60 s, 3 retries, no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            retries: 3,
            netrc: None,
            bearer_token: None,
            user_agent: format!("cache-proto/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &RedactedUrl::new(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("netrc", &self.netrc)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

#[derive(Clone)]
enum Auth {
    None,
    Basic { login: String, password: String },
    Bearer(String),
}

/// An `http(s)://` binary cache.
#[derive(Clone)]
pub struct HttpStore {
    client: reqwest::Client,
    /// The cache root without trailing slash and without user info.
    base: String,
    auth: Arc<Auth>,
    retries: u32,
    request_timeout: Duration,
    trust: Trust,
    cache_info: Arc<OnceCell<CacheInfo>>,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &*self.auth {
            Auth::None => "none",
            Auth::Basic { .. } => "basic",
            Auth::Bearer(_) => "bearer",
        };
        f.debug_struct("HttpStore")
            .field("url", &self.base)
            .field("auth", &auth)
            .field("retries", &self.retries)
            .field("request_timeout", &self.request_timeout)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// What one request is for.
enum Op<'a> {
    Get {
        max: u64,
    },
    Head,
    Put {
        data: &'a [u8],
        content_type: &'static str,
    },
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

fn absent(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN
}

fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

impl HttpStore {
    /// Builds the store and its connection pool. It trusts nothing until
    /// [`HttpStore::with_trust`].
    pub fn new(config: HttpConfig) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: config.url.as_str().into(),
            reason: reason.to_owned(),
        };
        let mut url = reqwest::Url::parse(&config.url).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "store parameters (query or fragment) are not supported",
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid("the url has no host"))?
            .to_owned();
        let url_login = (!url.username().is_empty()).then(|| Auth::Basic {
            login: url.username().to_owned(),
            password: url.password().unwrap_or_default().to_owned(),
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let base = url.as_str().trim_end_matches('/').to_owned();

        let auth = if let Some(token) = &config.bearer_token {
            Auth::Bearer(token.clone())
        } else if let Some(a) = url_login {
            a
        } else if let Some(path) = &config.netrc {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let netrc = Netrc::parse(&text).map_err(|e| StoreError::Netrc {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                    netrc
                        .credentials_for(&host)
                        .map_or(Auth::None, |c| Auth::Basic {
                            login: c.login,
                            password: c.password,
                        })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Auth::None,
                Err(e) => {
                    return Err(StoreError::Netrc {
                        path: path.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        } else {
            Auth::None
        };

        // reqwest is built with `rustls-no-provider`: install ring as the process default
        // (an already installed provider is fine).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|source| StoreError::Client {
                url: base.as_str().into(),
                source,
            })?;
        Ok(Self {
            client,
            base,
            auth: Arc::new(auth),
            retries: config.retries,
            request_timeout: config.request_timeout,
            trust: Trust::default(),
            cache_info: Arc::new(OnceCell::new()),
        })
    }

    /// The cache URL, without credentials or trailing slash.
    pub fn url(&self) -> String {
        self.base.clone()
    }

    store_methods!();

    fn failure(&self, url: &str, e: reqwest::Error) -> Failure {
        let retryable = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
        let error = if e.is_timeout() {
            StoreError::Timeout {
                url: url.into(),
                timeout: self.request_timeout,
            }
        } else {
            StoreError::Http {
                url: url.into(),
                source: e.without_url(),
            }
        };
        Failure { error, retryable }
    }

    fn status_failure(method: &'static str, url: &str, status: StatusCode) -> Failure {
        Failure {
            error: StoreError::Status {
                method,
                url: url.into(),
                status: status.as_u16(),
            },
            retryable: retryable_status(status),
        }
    }

    async fn once(&self, url: &str, op: &Op<'_>) -> Result<Outcome, Failure> {
        let (method, name) = match op {
            Op::Get { .. } => (Method::GET, "GET"),
            Op::Head => (Method::HEAD, "HEAD"),
            Op::Put { .. } => (Method::PUT, "PUT"),
        };
        let mut req = self.client.request(method, url);
        req = match &*self.auth {
            Auth::None => req,
            Auth::Basic { login, password } => req.basic_auth(login, Some(password)),
            Auth::Bearer(token) => req.bearer_auth(token),
        };
        if let Op::Put { data, content_type } = op {
            req = req.header(CONTENT_TYPE, *content_type).body(data.to_vec());
        }
        let mut resp = req.send().await.map_err(|e| self.failure(url, e))?;
        let status = resp.status();
        match op {
            Op::Get { max } => {
                if absent(status) {
                    return Ok(Outcome::Body(None));
                }
                if !status.is_success() {
                    return Err(Self::status_failure(name, url, status));
                }
                let too_large = || Failure {
                    error: StoreError::TooLarge {
                        url: url.into(),
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
                // A server without HEAD support gets the PUT anyway.
                if absent(status)
                    || status == StatusCode::METHOD_NOT_ALLOWED
                    || status == StatusCode::NOT_IMPLEMENTED
                {
                    Ok(Outcome::Exists(false))
                } else if status.is_success() {
                    Ok(Outcome::Exists(true))
                } else {
                    Err(Self::status_failure(name, url, status))
                }
            }
            Op::Put { .. } => {
                if status.is_success() {
                    Ok(Outcome::Done)
                } else {
                    Err(Self::status_failure(name, url, status))
                }
            }
        }
    }

    async fn run(&self, rel: &str, op: Op<'_>) -> Result<Outcome, StoreError> {
        let url = self.location(rel);
        let mut attempt = 0u32;
        loop {
            match self.once(&url, &op).await {
                Ok(outcome) => return Ok(outcome),
                Err(Failure { error, retryable }) => {
                    if !retryable || attempt >= self.retries {
                        return Err(error);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// 100 ms, 200 ms, 400 ms, … capped at 5 s, plus up to 25 % jitter.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1u64 << attempt.min(16)).min(5_000);
    let jitter = getrandom::u64().unwrap_or(0) % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

impl Backend for HttpStore {
    async fn get(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.run(rel, Op::Get { max }).await? {
            Outcome::Body(b) => Ok(b),
            _ => Ok(None),
        }
    }

    async fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        match self.run(rel, Op::Head).await? {
            Outcome::Exists(e) => Ok(e),
            _ => Ok(false),
        }
    }

    async fn put(
        &self,
        rel: &str,
        data: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), StoreError> {
        self.run(
            rel,
            Op::Put {
                data: &data,
                content_type,
            },
        )
        .await
        .map(|_| ())
    }

    fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_and_redaction() {
        let a = HttpStore::new(HttpConfig::new("http://127.0.0.1:1/cache/")).unwrap();
        let b = HttpStore::new(HttpConfig::new("http://127.0.0.1:1/cache")).unwrap();
        assert_eq!(a.url(), "http://127.0.0.1:1/cache");
        assert_eq!(a.location("x.narinfo"), b.location("x.narinfo"));
        let c = HttpStore::new(HttpConfig::new("http://u:secret@127.0.0.1:1/")).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:1");
        assert!(!format!("{c:?}").contains("secret"));
        let mut cfg = HttpConfig::new("https://cache.example/");
        cfg.bearer_token = Some("tok-secret".into());
        assert!(!format!("{cfg:?}").contains("tok-secret"));
        assert!(HttpStore::new(cfg).is_ok());
        for bad in ["ftp://x/", "http://x/?priority=1", "not a url"] {
            assert!(matches!(
                HttpStore::new(HttpConfig::new(bad)),
                Err(StoreError::InvalidUrl { .. })
            ));
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert!(backoff(0) >= Duration::from_millis(100));
        assert!(backoff(0) <= Duration::from_millis(125));
        assert!(backoff(3) >= Duration::from_millis(800));
        assert!(backoff(30) <= Duration::from_millis(6_250));
    }
}
