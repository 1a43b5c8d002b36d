//! What the engine tells whoever watches a run. The engine never prints: `checkdef run` and the
//! hook pass a reporter that prints (`crate::report::HumanReporter`), tests pass one that
//! records.
use super::SegmentOutcome;
use super::lines::Piece;

/// One thing that happened during a run, in the order it happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Something to know that does not fail the run by itself (a segment without inputs, a glob
    /// matching nothing, a cache that failed, checks that cannot be isolated).
    Warning(Warning<'a>),
    /// A segment's passing result came from a cache.
    Cached(&'a SegmentOutcome),
    /// A segment's check starts.
    Started { segment: &'a str },
    /// Another process (a background run, another push) is running this segment's check for
    /// the same inputs; the run waits for it and then uses its stored result.
    Waiting { segment: &'a str },
    /// A piece of a running check's output (already redacted), only when
    /// [`Reporter::wants_output`].
    Output { segment: &'a str, piece: Piece<'a> },
    /// A check read a file of the snapshot that is not one of its inputs (this fails it).
    Undeclared { message: &'a str },
    /// A segment's check ended (`interrupted`: stopped by Ctrl-C, SIGTERM or the push's budget,
    /// and its log is partial).
    Finished {
        outcome: &'a SegmentOutcome,
        interrupted: bool,
    },
    /// A line of the run's summary (the uploads of this run).
    Summary(&'a str),
}

/// A warning: what happened and, apart from it, what to do about it. As text (`Display`), the
/// hint follows the message on a line of its own (`hint: …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warning<'a> {
    pub message: &'a str,
    pub hint: Option<&'a str>,
}

impl<'a> Warning<'a> {
    /// A warning without a hint.
    pub fn plain(message: &'a str) -> Warning<'a> {
        Warning {
            message,
            hint: None,
        }
    }
}

impl std::fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)?;
        if let Some(h) = self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

/// The receiver of a run's [`Event`]s. Called from the engine's one thread, and for
/// [`Event::Output`] from the tasks reading the checks' output.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event<'_>);

    /// Whether live output is wanted ([`Event::Output`]); the engine skips the work of splitting
    /// it into lines otherwise.
    fn wants_output(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_as_text_has_its_hint_on_a_line_of_its_own() {
        assert_eq!(Warning::plain("slow").to_string(), "slow");
        let w = Warning {
            message: "slow",
            hint: Some("set a budget"),
        };
        assert_eq!(w.to_string(), "slow\nhint: set a budget");
    }
}
