//! A snapshot of the process environment, taken once when a command starts.
//!
//! Everything below `commands/` that needs a variable — the `CHECKDEF_*` settings, the values a
//! check's `passthrough` hands on, the `$VAR`s a fingerprint watches, `HOME` for `~/` paths,
//! `AWS_*` for an S3 remote — reads it from this value, never from `std::env`. So one command
//! sees one environment throughout, and the library can be driven (and tested) with any
//! environment, not only the one the test process happens to have.
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<OsString, OsString>,
    /// The working directory when the snapshot was taken: relative paths in variables are
    /// relative to it (see [`Env::dir`]).
    cwd: Option<PathBuf>,
}

impl Env {
    /// The current process environment.
    pub fn capture() -> Env {
        Env {
            vars: std::env::vars_os().collect(),
            cwd: std::env::current_dir().ok(),
        }
    }

    /// An environment holding exactly `pairs` (tests, and library callers that want control).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Env
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            cwd: None,
        }
    }

    /// The same environment, with relative paths taken relative to `cwd`.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Env {
        self.cwd = Some(cwd.into());
        self
    }

    /// The value of `name`, as `std::env::var_os` would return it.
    pub fn var_os(&self, name: &str) -> Option<&OsStr> {
        self.vars.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// The value of `name` when it is set and valid UTF-8 (as `std::env::var(..).ok()`).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.var_os(name).and_then(OsStr::to_str)
    }

    /// The value of `name` when it is set and not empty.
    pub fn non_empty(&self, name: &str) -> Option<&OsStr> {
        self.var_os(name).filter(|v| !v.is_empty())
    }

    /// Whether `name` is set to something (an empty value counts as unset).
    pub fn is_set(&self, name: &str) -> bool {
        self.non_empty(name).is_some()
    }

    /// `name` as a path, when set and not empty.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.non_empty(name).map(PathBuf::from)
    }

    /// `name` as a directory to use from anywhere: a relative value is made absolute against the
    /// working directory checkdef started in. Such paths end up in places that do not share
    /// checkdef's working directory (the sandbox, which mounts over the repository and starts
    /// the check elsewhere; background runs), where a relative path would name something else
    /// or nothing at all.
    pub fn dir(&self, name: &str) -> Option<PathBuf> {
        let p = self.path(name)?;
        Some(match &self.cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p,
        })
    }

    /// A lookup function in the shape `cache_proto`'s credential resolution takes.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |k| self.var(k).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_it_holds() {
        let env = Env::from_pairs([("A", "1"), ("EMPTY", "")]);
        assert_eq!(env.var("A"), Some("1"));
        assert_eq!(env.var("B"), None);
        assert!(env.var_os("EMPTY").is_some());
        assert!(!env.is_set("EMPTY"));
        assert!(env.is_set("A"));
    }
}
