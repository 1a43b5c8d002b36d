//! Values that must never be shown in full: URLs that may carry credentials, and secrets.
//!
//! Every URL this crate puts into an error or a `Debug` output goes through [`RedactedUrl`], and
//! callers should display URLs the same way (a cache URL from a configuration file or an
//! environment variable may hold `user:password@`). What is hidden:
//!
//! * the user info of `scheme://user:password@host/…`, whole (a user name alone is often a token,
//!   as in `https://TOKEN@host/`): it is shown as `***@`;
//! * the value of every query parameter whose name looks like it holds a secret (`token`,
//!   `secret`, `password`, `signature`, `credential`, `key`, `auth`, `session`…: S3 and presigned
//!   URLs put credentials there): `?X-Amz-Signature=***`.
//!
//! A URL that does not parse is treated as hostile: everything between `://` and the last `@`
//! is hidden, so a password with a stray `/` or `#` in it is not shown either. Nothing else is
//! changed, so a URL without credentials is displayed exactly as it was written.
//!
//! [`Secret`] wraps a value (a token, a password, an S3 secret key) whose `Debug` and `Display`
//! never show it.
use std::fmt;

/// What replaces a hidden value.
pub const MASK: &str = "***";

/// Query parameter names (lower-cased substrings) whose values are hidden.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "signature",
    "credential",
    "key",
    "auth",
    "session",
];

/// A URL (or anything that may be one) in the form that is safe to print: see the module docs.
/// It only holds the redacted text, so no formatting of it can ever show the original.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Redacts `url`.
    pub fn new(url: &str) -> RedactedUrl {
        RedactedUrl(redact_url(url))
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for RedactedUrl {
    fn from(url: &str) -> Self {
        RedactedUrl::new(url)
    }
}

impl From<String> for RedactedUrl {
    fn from(url: String) -> Self {
        RedactedUrl::new(&url)
    }
}

impl From<&String> for RedactedUrl {
    fn from(url: &String) -> Self {
        RedactedUrl::new(url)
    }
}

/// `url` with its credentials hidden (see the module docs); unchanged when it has none.
pub fn redact_url(url: &str) -> String {
    let (head, query_and_fragment) = match url.find(['?', '#']) {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let mut out = redact_userinfo(url, head);
    out.push_str(&redact_query(query_and_fragment));
    out
}

/// `head` (a URL up to its query) with the user info replaced by [`MASK`]; `whole` is the full
/// URL, parsed to tell a well-formed URL from a hostile one.
fn redact_userinfo(whole: &str, head: &str) -> String {
    let Some(scheme_end) = head.find("://") else {
        return head.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &head[rest_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = match rest[..authority_end].rfind('@') {
        Some(at) => Some(at),
        // No `@` in the authority: a well-formed URL then has no user info (an `@` further on
        // is part of the path). One that does not parse may hide a password with a `/` in it.
        None if rest.contains('@') && reqwest::Url::parse(whole).is_err() => rest.rfind('@'),
        None => None,
    };
    match at {
        Some(at) => format!("{}{MASK}{}", &head[..rest_start], &rest[at..]),
        None => head.to_owned(),
    }
}

/// `?a=b&c=d#frag` with the values of secret-looking parameters replaced by [`MASK`].
fn redact_query(s: &str) -> String {
    let Some(q) = s.strip_prefix('?') else {
        return s.to_owned();
    };
    let (query, fragment) = match q.find('#') {
        Some(i) => q.split_at(i),
        None => (q, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("?{}{fragment}", pairs.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// A value that is never shown: `Debug` and `Display` print `***`. Read it with
/// [`Secret::expose`] where it is used (an `Authorization` header, a signing request).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: only for sending it, never for messages.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for u in [
            "http://127.0.0.1:8080",
            "https://cache.example.org/checkdef/",
            "https://host/path/with@sign",
            "file:///srv/cache",
            "/srv/cache",
            "s3://bucket?region=eu-west-1&endpoint=minio.local",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(u), u);
        }
    }

    #[test]
    fn user_info_is_hidden() {
        assert_eq!(
            redact_url("http://user:pass@host:8080/x"),
            "http://***@host:8080/x"
        );
        assert_eq!(
            redact_url("https://TOKEN@github.com/"),
            "https://***@github.com/"
        );
        assert_eq!(redact_url("http://u:p@ss@host/"), "http://***@host/");
        // Not a valid URL: a password with a `/` is hidden too.
        assert_eq!(redact_url("http://u:pa/ss@host/x"), "http://***@host/x");
        assert_eq!(redact_url("http://u:pa ss@host"), "http://***@host");
        assert_eq!(redact_url("http://u:s3cret@"), "http://***@");
    }

    #[test]
    fn secret_query_values_are_hidden() {
        assert_eq!(
            redact_url(
                "https://b.s3.amazonaws.com/x?X-Amz-Credential=AKIA&X-Amz-Signature=abc&x=1#f"
            ),
            "https://b.s3.amazonaws.com/x?X-Amz-Credential=***&X-Amz-Signature=***&x=1#f"
        );
        assert_eq!(
            redact_url("s3://bucket?access_key=AK&secret_key=SK&region=r"),
            "s3://bucket?access_key=***&secret_key=***&region=r"
        );
        assert_eq!(
            redact_url("http://a:b@h/?token=t"),
            "http://***@h/?token=***"
        );
    }

    #[test]
    fn no_formatting_shows_a_secret() {
        let u = RedactedUrl::from("http://alice:hunter2@host/");
        assert!(!format!("{u} {u:?} {}", u.as_str()).contains("hunter2"));
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
