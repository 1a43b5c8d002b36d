//! The installer's error type. Every variant names the path (or command) it is about; messages are
//! lowercase fragments and the cause stays in `source()`. Hints ("what to do next") are left to the
//! caller, which knows the command line.
use std::io;
use std::path::PathBuf;

use crate::detect::Detection;
use crate::locate::ConfigScope;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `git` could not be started at all.
    #[error("cannot run `{program}` in {dir}")]
    GitSpawn {
        program: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `git` ran and failed (for example: not a repository).
    #[error("`git {args}` failed in {dir}: {stderr}")]
    GitFailed {
        args: String,
        dir: PathBuf,
        stderr: String,
    },
    /// `git` printed something the installer did not expect.
    #[error("unexpected output from `git {args}` in {dir}: {output:?}")]
    GitOutput {
        args: String,
        dir: PathBuf,
        output: String,
    },
    /// The directory is inside a non-bare repository's git directory, not its work tree.
    #[error("{dir} is inside the git directory of a repository with a work tree")]
    NotInWorkTree { dir: PathBuf },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the hooks directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The hook path exists but is not a file (a directory, say).
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// Another hook manager owns the hooks directory and `force` was not given.
    #[error("the hooks directory {hooks_dir} is managed by {}", names(detections))]
    Managed {
        hooks_dir: PathBuf,
        detections: Vec<Detection>,
    },
    /// A foreign `pre-push` exists and so does `pre-push.local`: there is nowhere to move it.
    #[error(
        "{hook} is not checkdef's and {local} already exists, so the existing hook cannot be moved aside"
    )]
    ChainSlotTaken { hook: PathBuf, local: PathBuf },
    /// checkdef's hook was edited after it was installed; replacing or removing it would lose the edits.
    #[error("{path} is checkdef's hook but was edited after it was installed")]
    Modified { path: PathBuf },
    /// The hook to move aside (or already in `pre-push.local`) is itself a checkdef hook.
    #[error("{path} is a checkdef hook itself; chaining it would run checkdef twice")]
    SelfChain { path: PathBuf },
    /// `core.hooksPath` from the user's or the machine's configuration points outside the
    /// repository: a hook written there runs for every repository that uses that configuration.
    #[error(
        "core.hooksPath = {value} comes from the {scope} git configuration, so {hooks_dir} is the hooks directory of every repository {}, not only of this one",
        reach(*scope)
    )]
    SharedHooksDir {
        hooks_dir: PathBuf,
        value: String,
        scope: ConfigScope,
    },
    /// The hook script is text; the binary's path must be UTF-8 to be written into it.
    #[error("the path of the checkdef binary is not valid UTF-8: {path}")]
    NonUtf8Exe { path: PathBuf },
    /// The path of the checkdef binary must be absolute so the hook works from any directory.
    #[error("the path of the checkdef binary is not absolute: {path}")]
    RelativeExe { path: PathBuf },
}

fn names(detections: &[Detection]) -> String {
    let mut names: Vec<&str> = detections.iter().map(|d| d.manager.name()).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        "another tool".to_owned()
    } else {
        names.join(" and ")
    }
}

fn reach(scope: ConfigScope) -> &'static str {
    match scope {
        ConfigScope::System => "on this machine",
        _ => "of this user",
    }
}
