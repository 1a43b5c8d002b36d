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

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}
