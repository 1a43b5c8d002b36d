//! The one printer: every line of human output checkdef writes goes through [`Printer`] (uv's
//! printer is the model). Human output goes to stderr, so that stdout carries only data (JSON,
//! manifests, completion scripts, the man page), which goes through [`Printer::stdout`].
//!
//! The global flags decide what is shown: `-q` keeps failures, warnings, errors and summaries;
//! `-v` asks for more (a run streams its checks' output); `--no-progress` (or
//! `CHECKDEF_NO_PROGRESS`, or `CI`) turns progress bars off; `--no-color` (or `NO_COLOR`) turns
//! colour off. Colour and progress bars are only ever shown on a terminal. Warnings are spelled
//! one way (`warning: …`), errors too (`error: …`), each hint on its own line after its message
//! (`hint: …`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal as _, Write as _};

use indicatif::MultiProgress;

use crate::context::OutputSettings;

/// Colours (when enabled) for human output.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    pub progress: bool,
    pub quiet: bool,
}

impl Style {
    /// Plain text, no progress bars.
    pub fn plain() -> Style {
        Style {
            color: false,
            progress: false,
            quiet: false,
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

/// How much a command says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    verbosity: Verbosity,
    style: Style,
}

impl Printer {
    /// The printer for `output`, on this process's stderr.
    pub fn new(output: OutputSettings) -> Printer {
        Printer::for_terminal(output, std::io::stderr().is_terminal())
    }

    /// The printer for `output` when stderr is (or is not) a terminal.
    pub fn for_terminal(output: OutputSettings, tty: bool) -> Printer {
        let verbosity = match (output.quiet, output.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        };
        Printer {
            verbosity,
            style: Style {
                color: tty && !output.no_color,
                progress: tty && !output.no_progress && verbosity == Verbosity::Normal,
                quiet: verbosity == Verbosity::Quiet,
            },
        }
    }

    /// This printer, quiet: for a command whose stdout is a document (`run --json`), so that
    /// its stderr stays short.
    pub fn quieter(self, quiet: bool) -> Printer {
        if !quiet {
            return self;
        }
        Printer {
            verbosity: Verbosity::Quiet,
            style: Style {
                progress: false,
                quiet: true,
                ..self.style
            },
        }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    pub fn is_quiet(&self) -> bool {
        self.verbosity == Verbosity::Quiet
    }

    pub fn is_verbose(&self) -> bool {
        self.verbosity == Verbosity::Verbose
    }

    /// A line on stderr, shown whatever the verbosity (failures, summaries, results).
    pub fn line(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }

    /// Text on stderr as it is (no newline added).
    pub fn text(&self, text: &str) {
        let _ = write!(std::io::stderr().lock(), "{text}");
    }

    /// A line on stderr above the progress bars of `progress` (when there are any).
    pub fn line_above(&self, progress: Option<&MultiProgress>, text: &str) {
        match progress {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => self.line(text),
        }
    }

    /// A line that `-q` leaves out (notes, progress of the work).
    pub fn info(&self, text: &str) {
        if !self.is_quiet() {
            self.line(text);
        }
    }

    /// `warning: MESSAGE` (yellow on a terminal).
    pub fn warn(&self, message: &str) {
        self.line(&self.warning_line(message));
    }

    /// The one spelling of a warning.
    pub fn warning_line(&self, message: &str) -> String {
        self.style.yellow(&format!("warning: {message}"))
    }

    /// `hint: …`, on its own line.
    pub fn hint(&self, hint: &str) {
        self.line(&self.hint_line(hint));
    }

    /// The one spelling of a hint.
    pub fn hint_line(&self, hint: &str) -> String {
        format!("hint: {hint}")
    }

    /// `error: …` with the error's chain, then its hints, each on its own line.
    pub fn error(&self, err: &anyhow::Error) {
        let (message, hints) = crate::exit::message_and_hints(err);
        self.line(&format!("error: {message}"));
        for h in hints {
            self.hint(&h);
        }
    }

    /// Data on stdout (a JSON document, a manifest, a script).
    pub fn stdout(&self, data: impl AsRef<[u8]>) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(data.as_ref())?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_style_has_no_escapes() {
        let s = Style::plain();
        assert_eq!(s.red("x"), "x");
        let c = Style { color: true, ..s };
        assert_eq!(c.red("x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn colour_and_progress_only_on_a_terminal_and_when_allowed() {
        let out = OutputSettings::default();
        let p = Printer::for_terminal(out, false);
        assert!(!p.style().color && !p.style().progress);
        let p = Printer::for_terminal(out, true);
        assert!(p.style().color && p.style().progress);
        let p = Printer::for_terminal(
            OutputSettings {
                no_color: true,
                no_progress: true,
                ..out
            },
            true,
        );
        assert!(!p.style().color && !p.style().progress);
        let v = Printer::for_terminal(
            OutputSettings {
                verbose: true,
                ..out
            },
            true,
        );
        assert!(
            !v.style().progress && v.is_verbose(),
            "-v streams output instead"
        );
        let q = Printer::for_terminal(out, true).quieter(true);
        assert!(q.is_quiet() && !q.style().progress && q.style().quiet);
    }
}
