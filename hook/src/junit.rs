//! `checkdef run --junit FILE`: the run as JUnit XML, for CI systems that display test reports.
//!
//! One `<testsuite name="checkdef">` (inside `<testsuites>`), one `<testcase>` per segment with
//! `classname="checkdef"`, `time` = the seconds spent on it in this run:
//!
//! * a cached pass carries the properties `cached=true`, `source`, `original_duration_s` and a
//!   `<system-out>` note such as `cached (local), original 1.23s`;
//! * a pass that ran carries its log in `<system-out>` (the last 64 KiB);
//! * a failure carries `<failure message="exit 1">` holding the tail of its log, and the log in
//!   `<system-out>`.
//!
//! Every testcase also has the properties `input_hash`, `store_path` and, when signed,
//! `signed_by`. Text is XML-escaped; characters XML 1.0 forbids (most control characters) are
//! replaced by U+FFFD and terminal colour sequences are removed. The file is written through a
//! temporary file and a rename, so a reader never sees half a report.
use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, Result};

use crate::run::{Origin, RunReport, SegmentOutcome};

/// How many log lines a `<failure>` holds.
pub const FAILURE_TAIL_LINES: usize = 50;
/// How many bytes of a log `<system-out>` holds (the end of the log).
pub const SYSTEM_OUT_MAX: usize = 64 * 1024;

/// Write the report for `report` to `path` atomically (creating its directory).
pub fn write(path: &Path, report: &RunReport) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the JUnit report", dir.display()))?;
    }
    let xml = render(report, SystemTime::now());
    crate::fsutil::write_durable(path, xml.as_bytes()).context("cannot write the JUnit report")
}

/// The JUnit XML document.
pub fn render(report: &RunReport, now: SystemTime) -> String {
    let tests = report.segments.len();
    let failures = report.failed();
    let time = format!("{:.3}", report.wall_s);
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"checkdef\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"checkdef\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\" timestamp=\"{}\">",
        iso8601(now)
    );
    x.push_str("    <properties>\n");
    if let Some(c) = &report.commit {
        property(&mut x, 6, "commit", c);
    }
    property(&mut x, 6, "checkdef_version", env!("CARGO_PKG_VERSION"));
    property(
        &mut x,
        6,
        "cached",
        &format!("{} of {tests}", report.cached()),
    );
    property(
        &mut x,
        6,
        "seconds_saved",
        &format!("{:.2}", report.seconds_saved()),
    );
    x.push_str("    </properties>\n");
    for s in &report.segments {
        testcase(&mut x, s);
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

fn testcase(x: &mut String, s: &SegmentOutcome) {
    let _ = writeln!(
        x,
        "    <testcase classname=\"checkdef\" name=\"{}\" time=\"{:.3}\">",
        attr(&s.name),
        s.duration_s
    );
    x.push_str("      <properties>\n");
    let cached = matches!(s.origin, Origin::Cache(_));
    property(x, 8, "source", s.origin.as_str());
    property(x, 8, "cached", if cached { "true" } else { "false" });
    if let Some(d) = s.original_duration_s {
        property(x, 8, "original_duration_s", &format!("{d:.2}"));
    }
    property(x, 8, "input_hash", &s.input_hash.to_hex());
    property(x, 8, "store_path", &s.store_path.to_string());
    if let Some(k) = &s.signed_by {
        property(x, 8, "signed_by", k);
    }
    x.push_str("      </properties>\n");
    let log = String::from_utf8_lossy(&s.log);
    if !s.passed() {
        let _ = writeln!(
            x,
            "      <failure message=\"{}\" type=\"failed\">{}</failure>",
            attr(&failure_message(s)),
            text(&tail_lines(&log, FAILURE_TAIL_LINES))
        );
    }
    let out = match s.origin {
        Origin::Cache(src) => format!(
            "cached ({}), original {}",
            src.as_str(),
            crate::report::secs(s.original_duration_s.unwrap_or(0.0))
        ),
        Origin::Run => tail_bytes(&log, SYSTEM_OUT_MAX).to_owned(),
    };
    let _ = writeln!(x, "      <system-out>{}</system-out>", text(&out));
    x.push_str("    </testcase>\n");
}

fn failure_message(s: &SegmentOutcome) -> String {
    s.verdict.to_string()
}

fn property(x: &mut String, indent: usize, name: &str, value: &str) {
    let _ = writeln!(
        x,
        "{:indent$}<property name=\"{}\" value=\"{}\"/>",
        "",
        attr(name),
        attr(value)
    );
}

fn tail_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        let _ = writeln!(out, "… {start} earlier lines");
    }
    for l in &lines[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn tail_bytes(log: &str, max: usize) -> &str {
    if log.len() <= max {
        return log;
    }
    let mut start = log.len() - max;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

/// Characters XML 1.0 allows.
fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` without terminal escape sequences (`ESC [ … final`, `ESC ] … BEL`, and lone `ESC x`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(d) = chars.next() {
                    if d == '\x07' {
                        break;
                    }
                    if d == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn escape(s: &str, in_attr: bool) -> String {
    let s = strip_ansi(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attr => out.push_str("&quot;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if in_attr => out.push_str("&#9;"),
            c if xml_char_ok(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// Escaped for an attribute value in double quotes.
pub fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escaped for element content.
pub fn text(s: &str) -> String {
    escape(s, false)
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, as JUnit's `timestamp` expects.
pub fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Source;
    use crate::result::Status;
    use std::time::Duration;

    fn outcome(name: &str, status: Status, origin: Origin, log: &str) -> SegmentOutcome {
        SegmentOutcome {
            name: name.to_owned(),
            verdict: match status {
                Status::Passed => crate::run::Verdict::Passed,
                Status::Failed => crate::run::Verdict::Exit(1),
            },
            origin,
            duration_s: 0.5,
            original_duration_s: matches!(origin, Origin::Cache(_)).then_some(1.234),
            input_hash: "ab".repeat(32).parse().unwrap(),
            store_path: cache_proto::store_path::StorePath::parse(&format!(
                "/nix/store/{}-checkdef-{name}",
                "a".repeat(32)
            ))
            .unwrap(),
            signed_by: None,
            log: log.as_bytes().to_vec(),
            warnings: Vec::new(),
            runner: None,
            runner_note: None,
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(attr("a<b>&\"c\"\n"), "a&lt;b&gt;&amp;&quot;c&quot;&#10;");
        assert_eq!(text("x\x01y\x1b[31mred\x1b[0m\tz"), "x\u{FFFD}yred\tz");
        assert_eq!(text("]]>"), "]]&gt;");
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(iso8601(t), "2024-02-29T23:59:59");
    }

    #[test]
    fn document_shape() {
        let report = RunReport {
            commit: Some("c0ffee".into()),
            segments: vec![
                outcome(
                    "foo-tests",
                    Status::Passed,
                    Origin::Cache(Source::Local),
                    "",
                ),
                outcome(
                    "bar-tests",
                    Status::Failed,
                    Origin::Run,
                    "E   assert 1 == 2 <oops> & \"more\"\n",
                ),
            ],
            wall_s: 1.5,
            interrupted: false,
            jobs: 2,
        };
        let x = render(&report, SystemTime::UNIX_EPOCH);
        assert!(
            x.contains("<testsuite name=\"checkdef\" tests=\"2\" failures=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<system-out>cached (local), original 1.23s</system-out>"),
            "{x}"
        );
        assert!(
            x.contains("<property name=\"cached\" value=\"true\"/>"),
            "{x}"
        );
        assert!(
            x.contains(
                "<failure message=\"exit 1\" type=\"failed\">E   assert 1 == 2 &lt;oops&gt; &amp; \"more\"\n</failure>"
            ),
            "{x}"
        );
        assert_eq!(x.matches("<testcase ").count(), 2);
        assert_eq!(x.matches("</testcase>").count(), 2);
    }
}
