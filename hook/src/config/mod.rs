//! `checkdef.toml`: parsing, validation and the resolved, immutable [`Config`].
//!
//! The file lives at the repository root (`--config PATH` overrides the location; glob patterns
//! stay relative to the repository root either way). Parsing is strict: unknown keys, an unknown
//! `version`, duplicate segment names, segments without inputs or command, invalid names, globs,
//! keys or environment variable names are errors that name the file, line and column
//! (`checkdef.toml:12:11: ...`). The full reference is `docs/configuration.md`.
//!
//! The resolved [`Config`] holds one [`Segment`] per `[[segment]]` with `[defaults]` merged in,
//! and a [`Matcher`] that matches a path against the globs of *all* segments in one pass: one
//! [`GlobSet`] over every distinct include glob and one over every distinct exclude glob, whose
//! match indices map back to the segments that declared them.
//!
//! Layout: [`schema`] (the resolved types and the file as written), [`validation`] (from what
//! is written to the resolved [`Config`], with located errors), [`matcher`] (the combined glob
//! matcher) and [`pytest`] (the `tests` shorthand).
mod matcher;
mod pytest;
mod schema;
#[cfg(test)]
mod tests;
mod validation;

use std::path::{Path, PathBuf};

pub use matcher::*;
pub use pytest::*;
pub use schema::*;
use validation::*;

/// The file name looked up at the repository root.
pub const FILE_NAME: &str = "checkdef.toml";

/// The only configuration format version this checkdef understands.
pub const VERSION: i64 = 1;

/// Longest segment name: `checkdef-<name>` must fit Nix's 211-character store path name limit.
pub const MAX_SEGMENT_NAME_LEN: usize = 211 - "checkdef-".len();

/// Default cache timeout when `[cache] timeout-secs` is not set.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// A check's time limit when neither the segment nor `[defaults]` sets `timeout`: Bazel's
/// `long` (15 minutes). Bazel's default, `moderate` (5 minutes), is for one test target; a
/// segment is usually a whole suite, and a limit that fails honest pushes is worse than a late
/// answer to a hung one.
pub const DEFAULT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// A fingerprint command's time limit unless `[defaults] fingerprint_timeout` sets one. They
/// print a version or a lock state; a minute is ample, and every plan, run and push waits on them.
pub const DEFAULT_FINGERPRINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A configuration problem, located in the file when possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (it is missing, unreadable or not UTF-8).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is malformed or fails validation (as text, the hint follows the message on a
    /// line of its own, `hint: …`).
    #[error("{}:{line}:{column}: {message}{}", path.display(), hint_line(hint))]
    Invalid {
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        message: String,
        /// What to do about it, when there is more to say than the message.
        hint: Option<String>,
    },
}

fn hint_line(hint: &Option<String>) -> String {
    hint.as_ref()
        .map_or_else(String::new, |h| format!("\nhint: {h}"))
}

impl ConfigError {
    /// What to do about it, apart from the message.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { hint, .. } => hint.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }

    /// The message without its hint.
    pub fn without_hint(&self) -> String {
        match self {
            ConfigError::Invalid {
                path,
                line,
                column,
                message,
                ..
            } => format!("{}:{line}:{column}: {message}", path.display()),
            ConfigError::Read { .. } => self.to_string(),
        }
    }

    /// Its hint (if any), then `more`: the hints of an error that adds `more` to this one.
    pub fn hints_then(&self, more: impl Into<String>) -> Vec<String> {
        self.hint()
            .map(str::to_owned)
            .into_iter()
            .chain([more.into()])
            .collect()
    }

    /// True when the configuration file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The resolved, immutable configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub segments: Vec<Segment>,
    pub cache: CacheConfig,
    pub hook: HookConfig,
    /// Variables whose values are redacted from stored logs (`[defaults] redact_env`).
    pub redact_env: Vec<String>,
    /// Time limit of each fingerprint command (`[defaults] fingerprint_timeout`).
    pub fingerprint_timeout: std::time::Duration,
    matcher: Matcher,
}

impl Config {
    /// Load `explicit` if given, else `<repo_root>/checkdef.toml`.
    pub fn load(repo_root: &Path, explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => repo_root.join(FILE_NAME),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Config::parse(&text, &path)
    }

    /// Parse and validate `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            text,
            path,
            glob_spans: Default::default(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        resolve(raw, &ctx)
    }

    /// The segment named `name` and its index.
    pub fn segment(&self, name: &str) -> Option<(usize, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
    }

    /// The combined matcher over all segments.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }
}
