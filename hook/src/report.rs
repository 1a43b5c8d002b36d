//! Human output on stderr, in the seed's spirit: one line per segment, failures followed by the
//! tail of their log, then a summary. Colour only when stderr is a terminal and `NO_COLOR` is
//! unset; every line still reads correctly without colour or emoji. Progress bars only on a TTY,
//! never under `CI`, `--quiet`, `--verbose` (which streams output instead) or
//! `CHECKDEF_NO_PROGRESS`.
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How many log lines follow a failure.
pub const FAILURE_TAIL_LINES: usize = 25;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    pub progress: bool,
    pub quiet: bool,
}

impl Style {
    pub fn detect(quiet: bool, verbose: bool) -> Style {
        let tty = std::io::stderr().is_terminal();
        let env_set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        Style {
            color: tty && !env_set("NO_COLOR"),
            progress: tty
                && !quiet
                && !verbose
                && !env_set("CI")
                && !env_set("CHECKDEF_NO_PROGRESS"),
            quiet,
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// Seconds with two decimals, the unit the seed uses.
pub fn secs(d: f64) -> String {
    format!("{d:.2}s")
}

/// Print a line to stderr, above any progress bars.
pub fn line(progress: Option<&MultiProgress>, text: &str) {
    match progress {
        Some(mp) => {
            let _ = mp.println(text);
        }
        None => {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

/// The last `n` lines of a log, lossily decoded, each indented.
pub fn log_tail(log: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!(
            "    … {start} earlier lines (run with -v for the full log)\n"
        ));
    }
    for l in &lines[start..] {
        out.push_str("    ");
        out.push_str(&as_shown(l));
        out.push('\n');
    }
    out
}

/// The longest log line a failure tail shows whole; longer ones keep their end.
pub const TAIL_LINE_CHARS: usize = 2000;

/// A log line as a terminal would leave it: what follows its last `\r` (tqdm-style progress
/// redraws the line in place), and at most [`TAIL_LINE_CHARS`] characters of its end.
fn as_shown(line: &str) -> std::borrow::Cow<'_, str> {
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or(line);
    let chars = line.chars().count();
    if chars <= TAIL_LINE_CHARS {
        return line.into();
    }
    let skip = chars - TAIL_LINE_CHARS;
    let rest: String = line.chars().skip(skip).collect();
    format!("… ({skip} characters) {rest}").into()
}

/// Progress display: one spinner per running check with its elapsed time and last output line.
pub struct Progress {
    mp: MultiProgress,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
        }
    }

    pub fn multi(&self) -> &MultiProgress {
        &self.mp
    }

    pub fn start(&self, name: &str, width: usize) -> ProgressBar {
        let pb = self.mp.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:{width}}}  running  {{elapsed:>4}}  {{wide_msg:.dim}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        pb.set_style(style);
        pb.set_prefix(name.to_owned());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let log = (1..=30).map(|i| format!("l{i}\n")).collect::<String>();
        let t = log_tail(log.as_bytes(), 3);
        assert!(t.contains("27 earlier lines"));
        assert!(t.ends_with("    l28\n    l29\n    l30\n"));
        assert_eq!(log_tail(b"one", 5), "    one\n");
    }

    #[test]
    fn tail_lines_show_what_a_terminal_would() {
        let t = log_tail(b"\r 10%\r 50%\r100% done\nnext\r\n", 5);
        assert_eq!(t, "    100% done\n    next\n");
        let long = "y".repeat(TAIL_LINE_CHARS + 10);
        let t = log_tail(long.as_bytes(), 1);
        assert!(t.starts_with("    … (10 characters) y"), "{}", &t[..40]);
        assert_eq!(
            t.trim_end().chars().filter(|c| *c == 'y').count(),
            TAIL_LINE_CHARS
        );
    }

    #[test]
    fn plain_style_has_no_escapes() {
        let s = Style {
            color: false,
            progress: false,
            quiet: false,
        };
        assert_eq!(s.red("x"), "x");
        let c = Style { color: true, ..s };
        assert_eq!(c.red("x"), "\x1b[31mx\x1b[0m");
    }
}
