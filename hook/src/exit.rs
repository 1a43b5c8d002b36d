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

/// Marks an error as a usage/configuration problem (exit 2) rather than an internal one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Wrap any message as a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

impl Code {
    pub fn from_error(err: &anyhow::Error) -> Code {
        if err.chain().any(|e| e.is::<UsageError>()) {
            Code::Usage
        } else {
            Code::Internal
        }
    }
}

/// An error's message (its chain, `: `-separated) and its hints: every line of it that starts
/// with `hint: `, in order, so that a hint given deep down is printed after the whole message
/// (`error: …` then `hint: …`), not between it and the context added above it.
pub fn message_and_hints(err: &anyhow::Error) -> (String, Vec<String>) {
    let text = format!("{err:#}");
    let mut message = Vec::new();
    let mut hints = Vec::new();
    for line in text.split('\n') {
        match line.strip_prefix("hint: ") {
            Some(h) => hints.push(h.to_owned()),
            None => message.push(line),
        }
    }
    (message.join("\n"), hints)
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
        let err = usage("no such thing\nhint: make one").context("reading the list");
        let (m, h) = message_and_hints(&err);
        assert_eq!(m, "reading the list: no such thing");
        assert_eq!(h, ["make one"]);
    }
}
