//! AWS Signature Version 4 for single-object S3 requests, signed in the `Authorization` header.
//!
//! What is implemented is exactly what [`super::s3`] sends: `GET`, `HEAD` and `PUT` of one
//! object with an empty query string and the payload's SHA-256 in `x-amz-content-sha256`. The
//! steps follow AWS's "Signature Version 4 signing process":
//!
//! 1. canonical request: `METHOD\nURI\nQUERY\nheaders (lower-case name:trimmed value, sorted)\n\n
//!    signed header names (;-joined)\npayload hash`, where the URI is percent-encoded per
//!    segment (S3 does not double-encode);
//! 2. string to sign: `AWS4-HMAC-SHA256\n<amz date>\n<date>/<region>/s3/aws4_request\n
//!    hex(sha256(canonical request))`;
//! 3. signing key: HMAC-SHA256 chained over `"AWS4" + secret`, date, region, `s3`,
//!    `aws4_request`; the signature is hex(HMAC(signing key, string to sign)).
//!
//! HMAC (RFC 2104) is written out over `sha2` instead of pulling in a crate for twenty lines.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The SHA-256 of an empty payload, hex (what a `GET` or `HEAD` signs).
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// HMAC-SHA256 of `msg` under `key` (RFC 2104, block size 64).
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `YYYYMMDDTHHMMSSZ` for `t` (UTC), the `x-amz-date` format.
pub(crate) fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Percent-encodes a URI path the way SigV4 wants it for S3: every byte except the unreserved
/// `A-Z a-z 0-9 - . _ ~` and the `/` separators.
pub(crate) fn uri_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Access key, secret and optional session token. `Debug` never shows the secret or token.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One request to sign.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The already percent-encoded path (see [`uri_encode_path`]).
    pub path: &'a str,
    /// `host` or `host:port`, exactly as the `Host` header will carry it.
    pub host: &'a str,
    /// Other headers to sign, lower-case names (`content-type`, `if-none-match`, …).
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

/// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256`, the session token
/// when there is one, and `authorization`.
pub(crate) fn sign(
    creds: &Credentials,
    region: &str,
    req: &Request<'_>,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    let date_time = amz_date(now);
    let date = &date_time[..8];
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), req.host.to_owned()),
        ("x-amz-content-sha256".into(), req.payload_sha256.to_owned()),
        ("x-amz-date".into(), date_time.clone()),
    ];
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    for (k, v) in req.headers {
        headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{}\n{}\n\n", req.method, req.path);
    for (k, v) in &headers {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(req.payload_sha256);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    let mut out = vec![
        ("x-amz-date", date_time),
        ("x-amz-content-sha256", req.payload_sha256.to_owned()),
    ];
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed},Signature={signature}",
            creds.access_key_id
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block size is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        assert_eq!(amz_date(t), "20130524T000000Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // 2024-02-29T23:59:59Z (a leap day).
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "20240229T235959Z"
        );
    }

    #[test]
    fn path_encoding() {
        assert_eq!(uri_encode_path("/b/nar/x.nar.zst"), "/b/nar/x.nar.zst");
        assert_eq!(uri_encode_path("/b/a b+c"), "/b/a%20b%2Bc");
    }

    /// AWS's documented example "GET Object" (Signature Version 4, header-based auth).
    #[test]
    fn aws_get_object_example() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let req = Request {
            method: "GET",
            path: "/test.txt",
            host: "examplebucket.s3.amazonaws.com",
            headers: &[("range", "bytes=0-9")],
            payload_sha256: EMPTY_SHA256,
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let h = sign(&creds, "us-east-1", &req, t);
        let auth = &h.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(!format!("{creds:?}").contains("EXAMPLEKEY"));
    }
}
