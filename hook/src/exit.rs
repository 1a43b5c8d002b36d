//! The documented exit-code table (docs/architecture.md):
//! 0 every check passed (push allowed), 1 a check failed (push blocked),
//! 2 usage or configuration error, 3 internal error, 130 interrupted.
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Internal = 3,
    Interrupted = 130,
}

/// Marks an error as a usage/configuration problem (exit 2) rather than an internal one, with
/// what to do next: printed as `error: MESSAGE`, then each hint as `hint: …` on a line of its
/// own. Where an error is only text (a warning, a background run's record, `status`), its
/// `Display` writes the hints the same way, after the message.
#[derive(Debug)]
pub struct UsageError {
    pub message: String,
    pub hints: Vec<String>,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for h in &self.hints {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UsageError {}

/// Wrap any message as a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    usage_hints(msg, Vec::new())
}

/// A usage error with one hint.
pub fn usage_hint(msg: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    usage_hints(msg, vec![hint.into()])
}

/// A usage error with its hints, in order.
pub fn usage_hints(msg: impl Into<String>, hints: Vec<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError {
        message: msg.into(),
        hints,
    })
}

/// A message and, apart, what to do about it (a refusal that is shown as a line of `status`
/// as well as raised as an error). `Display` writes the hint after the message, as
/// [`UsageError`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nhint: {}", self.message, self.hint)
    }
}

impl From<Hinted> for anyhow::Error {
    fn from(h: Hinted) -> anyhow::Error {
        usage_hint(h.message, h.hint)
    }
}

/// The command was stopped by Ctrl-C or SIGTERM before it could finish (exit 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: nothing was stored")]
pub struct Interrupted;

/// The error of a command that a signal stopped.
pub fn interrupted() -> anyhow::Error {
    anyhow::Error::new(Interrupted)
}

impl Code {
    pub fn from_error(err: &anyhow::Error) -> Code {
        if err.chain().any(|e| e.is::<Interrupted>()) {
            Code::Interrupted
        } else if err.chain().any(|e| e.is::<UsageError>()) {
            Code::Usage
        } else {
            Code::Internal
        }
    }
}

/// An error's message (its chain, `: `-separated, as `{:#}` writes it) and the hints of the
/// [`UsageError`]s in it, outermost first, so that a hint given deep down is printed after the
/// whole message (`error: …` then `hint: …`), not between it and the context added above it.
pub fn message_and_hints(err: &anyhow::Error) -> (String, Vec<String>) {
    let mut message = String::new();
    let mut hints = Vec::new();
    for (i, e) in err.chain().enumerate() {
        if i > 0 {
            message.push_str(": ");
        }
        match e.downcast_ref::<UsageError>() {
            Some(u) => {
                message.push_str(&u.message);
                hints.extend(u.hints.iter().cloned());
            }
            None => message.push_str(&e.to_string()),
        }
    }
    (message, hints)
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_whole_message() {
        let err = usage_hint("no such thing", "make one").context("reading the list");
        let (m, h) = message_and_hints(&err);
        assert_eq!(m, "reading the list: no such thing");
        assert_eq!(h, ["make one"]);
        // As text, the hint follows its message, as it always did.
        assert_eq!(
            format!("{err:#}"),
            "reading the list: no such thing\nhint: make one"
        );
        let two = usage_hints("bad", vec!["a".into(), "b".into()]);
        assert_eq!(
            message_and_hints(&two),
            ("bad".into(), vec!["a".into(), "b".into()])
        );
        assert_eq!(Code::from_error(&two), Code::Usage);
    }
}
