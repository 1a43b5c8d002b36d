//! Durations as `checkdef.toml` writes them (`timeout = "3s"`, `"10m"`, `"1h30m"`, `"500ms"`) and
//! Bazel's named test timeouts (`"short"`, `"moderate"`, `"long"`, `"eternal"`), and the one way
//! checkdef prints them back (`timed out after 3s`).
use std::time::Duration;

/// Bazel's test timeout categories, in its own values (`--test_timeout` defaults).
pub const NAMED: &[(&str, Duration)] = &[
    ("short", Duration::from_secs(60)),
    ("moderate", Duration::from_secs(300)),
    ("long", Duration::from_secs(900)),
    ("eternal", Duration::from_secs(3600)),
];

/// The longest duration accepted: a week. Anything longer is almost certainly a typo, and
/// keeps every deadline far from `Instant` overflow.
pub const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parse `text`: one of [`NAMED`], or one or more `<integer><unit>` terms with units `ms`, `s`,
/// `m`, `h` (`"90s"`, `"1h30m"`). The result is positive and at most [`MAX`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Some((_, d)) = NAMED.iter().find(|(n, _)| *n == t) {
        return Ok(*d);
    }
    let bad = || {
        format!(
            "invalid duration `{text}` (expected e.g. \"30s\", \"10m\", \"1h30m\", \"500ms\", or one of \"short\", \"moderate\", \"long\", \"eternal\")"
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let term = n
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(bad)?;
        total = total.checked_add(term).ok_or_else(bad)?;
        if total > MAX {
            return Err(format!("duration `{text}` is longer than a week"));
        }
    }
    if total.is_zero() {
        return Err(format!("duration `{text}` must be longer than zero"));
    }
    Ok(total)
}

/// `d` the way a user would write it: `3s`, `10m`, `1h30m`, `1500ms`.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("h", 3600), ("m", 60)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terms_and_names() {
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("moderate"), Ok(Duration::from_secs(300)));
        for bad in [
            "",
            "3",
            "s",
            "3 s",
            "-3s",
            "3d",
            "1.5s",
            "0s",
            "99999999999999999999h",
            "8d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse("169h").is_err());
    }

    #[test]
    fn displays_as_written() {
        for s in ["3s", "10m", "1h30m", "1500ms", "2h", "1h1s"] {
            assert_eq!(display(parse(s).unwrap()), s);
        }
        assert_eq!(display(Duration::from_secs(90)), "1m30s");
    }
}
