//! Finding the directory git runs hooks from, the way git does.
//!
//! git looks for `<hooks dir>/pre-push` where the hooks directory is
//! - `core.hooksPath` when set: `~/` is expanded to `$HOME`, an absolute path is used as is, and a
//!   relative path is relative to where git runs hooks, i.e. the root of the work tree (of the
//!   current linked worktree) or, in a bare repository, the git directory;
//! - otherwise `<common git dir>/hooks`: linked worktrees (`git worktree add`) share the hooks of
//!   the main repository, whose directory git finds through `<git dir>/commondir`.
//!
//! The repository facts come from `git` itself ([`Git::locate`], the only place that runs git), so
//! `$GIT_DIR`, `$GIT_WORK_TREE`, `commondir` files and `include`d configuration behave exactly as
//! they do for git. The path arithmetic on those facts is the pure [`resolve_hooks_dir`].
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;

/// The file name of the hook checkdef installs.
pub const PRE_PUSH: &str = "pre-push";
/// Where an existing, foreign `pre-push` hook is moved so checkdef's hook can run it first.
pub const PRE_PUSH_LOCAL: &str = "pre-push.local";

/// What git reports about the repository a directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoLayout {
    /// This worktree's git directory (`git rev-parse --absolute-git-dir`).
    pub git_dir: PathBuf,
    /// The git directory shared by all worktrees (`--git-common-dir`); the same as `git_dir`
    /// outside linked worktrees.
    pub common_dir: PathBuf,
    /// The root of the current work tree (`--show-toplevel`); `None` in a bare repository.
    pub work_tree: Option<PathBuf>,
}

/// Where git runs hooks from for one repository, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookLocation {
    pub layout: RepoLayout,
    /// The raw `core.hooksPath` value, when it is set (and not empty).
    pub hooks_path_config: Option<String>,
    /// Which configuration file set `core.hooksPath` (`git config --show-scope`); `None` when it
    /// is unset or the scope is not known.
    pub hooks_path_scope: Option<ConfigScope>,
    /// The directory git runs hooks from (it may not exist yet).
    pub hooks_dir: PathBuf,
}

impl HookLocation {
    /// Build a location from known facts, resolving the hooks directory like git.
    pub fn new(layout: RepoLayout, hooks_path_config: Option<String>, home: Option<&Path>) -> Self {
        let hooks_path_config = hooks_path_config.filter(|v| !v.is_empty());
        let hooks_dir = resolve_hooks_dir(&layout, hooks_path_config.as_deref(), home);
        HookLocation {
            layout,
            hooks_path_config,
            hooks_path_scope: None,
            hooks_dir,
        }
    }

    /// The same location, knowing which configuration scope set `core.hooksPath`.
    pub fn with_scope(mut self, scope: Option<ConfigScope>) -> Self {
        self.hooks_path_scope = scope.filter(|_| self.hooks_path_config.is_some());
        self
    }

    /// `Some` when the hooks directory is shared beyond this repository: `core.hooksPath` comes
    /// from the user's (global) or the machine's (system) configuration and points outside this
    /// repository's work tree and git directory, so git runs a hook installed there for every
    /// repository that does not override it. A relative global value resolves inside each
    /// repository and is not shared; neither is a value set in this repository's own config.
    pub fn shared(&self) -> Option<ConfigScope> {
        let scope = self.hooks_path_scope?;
        if !scope.is_shared() {
            return None;
        }
        let dir = &self.hooks_dir;
        let inside = |root: &Path| dir.starts_with(root);
        let own = self.layout.work_tree.as_deref().is_some_and(inside)
            || inside(&self.layout.git_dir)
            || inside(&self.layout.common_dir);
        (!own).then_some(scope)
    }

    /// `<hooks dir>/pre-push`.
    pub fn pre_push(&self) -> PathBuf {
        self.hooks_dir.join(PRE_PUSH)
    }

    /// `<hooks dir>/pre-push.local`, where a pre-existing hook is kept while checkdef's is installed.
    pub fn pre_push_local(&self) -> PathBuf {
        self.hooks_dir.join(PRE_PUSH_LOCAL)
    }
}

/// The configuration file a value came from, as `git config --show-scope` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigScope {
    /// `/etc/gitconfig` (or `$GIT_CONFIG_SYSTEM`): every user of the machine.
    System,
    /// `~/.gitconfig`, `$XDG_CONFIG_HOME/git/config` (or `$GIT_CONFIG_GLOBAL`): every repository
    /// of the user.
    Global,
    /// This repository's `.git/config`.
    Local,
    /// This worktree's `config.worktree`.
    Worktree,
    /// `git -c` or `$GIT_CONFIG_PARAMETERS`/`GIT_CONFIG_COUNT`: this invocation only.
    Command,
}

impl ConfigScope {
    fn parse(word: &[u8]) -> Option<ConfigScope> {
        Some(match word {
            b"system" => ConfigScope::System,
            b"global" => ConfigScope::Global,
            b"local" => ConfigScope::Local,
            b"worktree" => ConfigScope::Worktree,
            b"command" => ConfigScope::Command,
            _ => return None,
        })
    }

    /// The name git gives the scope.
    pub fn name(self) -> &'static str {
        match self {
            ConfigScope::System => "system",
            ConfigScope::Global => "global",
            ConfigScope::Local => "local",
            ConfigScope::Worktree => "worktree",
            ConfigScope::Command => "command",
        }
    }

    /// Whether a value from this scope applies to other repositories too.
    pub fn is_shared(self) -> bool {
        matches!(self, ConfigScope::System | ConfigScope::Global)
    }
}

impl std::fmt::Display for ConfigScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The hooks directory for `layout` given the value of `core.hooksPath` (if any) and `$HOME`.
///
/// `~` and `~/…` are expanded with `home` (left as they are when `home` is `None`); other
/// relative values are relative to the work tree root, or to the git directory in a bare repository.
pub fn resolve_hooks_dir(
    layout: &RepoLayout,
    hooks_path: Option<&str>,
    home: Option<&Path>,
) -> PathBuf {
    let Some(value) = hooks_path.filter(|v| !v.is_empty()) else {
        return layout.common_dir.join("hooks");
    };
    let expanded: PathBuf = match (value.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(value),
    };
    if expanded.is_absolute() {
        return expanded;
    }
    let base = layout.work_tree.as_deref().unwrap_or(&layout.git_dir);
    // `Path::join` + `components` drops inner `.` components (`./.husky` → `.husky`).
    base.join(expanded).components().collect()
}

/// Locate the hooks directory of the repository containing `cwd`, using `git` from `PATH` with the
/// inherited environment.
pub fn locate(cwd: &Path) -> Result<HookLocation, Error> {
    Git::new().locate(cwd)
}

/// How to run `git` (the program and extra environment variables), for [`Git::locate`].
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    /// Variables to set (`Some`) or remove (`None`), in order.
    envs: Vec<(OsString, Option<OsString>)>,
}

impl Default for Git {
    fn default() -> Self {
        Self::new()
    }
}

impl Git {
    /// `git` from `PATH`, inheriting the environment.
    pub fn new() -> Self {
        Git {
            program: PathBuf::from("git"),
            envs: Vec::new(),
        }
    }

    /// Use another git executable.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Set an environment variable for git (and for `~` expansion when it is `HOME`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), Some(value.into())));
        self
    }

    /// Remove an inherited environment variable for git (`GIT_DIR` from an enclosing hook, say).
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), None));
        self
    }

    fn home(&self) -> Option<PathBuf> {
        let home = match self.envs.iter().rev().find(|(k, _)| k == "HOME") {
            Some((_, value)) => value.clone(),
            None => std::env::var_os("HOME"),
        };
        home.filter(|h| !h.is_empty()).map(PathBuf::from)
    }

    /// Ask git where the repository containing `cwd` keeps its hooks.
    ///
    /// Runs `git rev-parse --is-bare-repository --is-inside-work-tree`, `git rev-parse` with
    /// `--absolute-git-dir`, `--git-common-dir` and (in a work tree) `--show-toplevel`, each on
    /// its own, and `git config --get core.hooksPath`.
    pub fn locate(&self, cwd: &Path) -> Result<HookLocation, Error> {
        let cwd = if cwd.is_absolute() {
            cwd.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| Error::Read {
                    path: cwd.to_path_buf(),
                    source,
                })?
                .join(cwd)
        };
        // One question per call for the paths: a directory's name may hold newlines (even
        // last), so only the newline git ends its answer with is removed.
        let answer = |args: &[&str]| -> Result<Vec<u8>, Error> {
            let mut out = self
                .run(&cwd, args)?
                .ok_or_else(|| self.failed(&cwd, args, ""))?;
            if out.pop() != Some(b'\n') || out.is_empty() {
                return Err(unexpected(&cwd, args, &out));
            }
            Ok(out)
        };
        let args = ["rev-parse", "--is-bare-repository", "--is-inside-work-tree"];
        let flags = answer(&args)?;
        let (bare, inside) = match flags.split(|b| *b == b'\n').collect::<Vec<_>>().as_slice() {
            [bare, inside] => (*bare == b"true", *inside == b"true"),
            _ => return Err(unexpected(&cwd, &args, &flags)),
        };
        let git_dir = bytes_to_path(&answer(&["rev-parse", "--absolute-git-dir"])?);
        let common_dir = cwd.join(bytes_to_path(&answer(&["rev-parse", "--git-common-dir"])?));
        let common_dir = common_dir.canonicalize().unwrap_or(common_dir);
        let work_tree = if bare {
            None
        } else if inside {
            Some(bytes_to_path(&answer(&["rev-parse", "--show-toplevel"])?))
        } else {
            return Err(Error::NotInWorkTree { dir: cwd });
        };
        let layout = RepoLayout {
            git_dir,
            common_dir,
            work_tree,
        };
        // Exit status 1 means "not set". `--show-scope` prefixes the value that wins (the last
        // one) with the scope it came from and a tab.
        let args = ["config", "--show-scope", "--get", "core.hooksPath"];
        let (scope, hooks_path) = match self.run(&cwd, &args)? {
            None => (None, None),
            Some(out) => {
                let out = out.strip_suffix(b"\n").unwrap_or(&out);
                let tab = out
                    .iter()
                    .position(|b| *b == b'\t')
                    .ok_or_else(|| unexpected(&cwd, &args, out))?;
                let value = String::from_utf8_lossy(&out[tab + 1..]).into_owned();
                (ConfigScope::parse(&out[..tab]), Some(value))
            }
        };
        Ok(HookLocation::new(layout, hooks_path, self.home().as_deref()).with_scope(scope))
    }

    /// Run git; `Ok(None)` when it exits with status 1 (used by `git config --get` for "unset").
    fn run(&self, cwd: &Path, args: &[&str]) -> Result<Option<Vec<u8>>, Error> {
        let mut cmd = Command::new(&self.program);
        cmd.args(args).current_dir(cwd);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.output().map_err(|source| Error::GitSpawn {
            program: self.program.clone(),
            dir: cwd.to_path_buf(),
            source,
        })?;
        match out.status.code() {
            Some(0) => Ok(Some(out.stdout)),
            Some(1) => Ok(None),
            _ => Err(self.failed(cwd, args, &String::from_utf8_lossy(&out.stderr))),
        }
    }

    fn failed(&self, cwd: &Path, args: &[&str], stderr: &str) -> Error {
        Error::GitFailed {
            args: args.join(" "),
            dir: cwd.to_path_buf(),
            stderr: stderr.trim().to_owned(),
        }
    }
}

fn unexpected(cwd: &Path, args: &[&str], output: &[u8]) -> Error {
    Error::GitOutput {
        args: args.join(" "),
        dir: cwd.to_path_buf(),
        output: String::from_utf8_lossy(output).into_owned(),
    }
}

#[cfg(unix)]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::new(&*String::from_utf8_lossy(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(work_tree: Option<&str>) -> RepoLayout {
        RepoLayout {
            git_dir: PathBuf::from("/r/.git/worktrees/w"),
            common_dir: PathBuf::from("/r/.git"),
            work_tree: work_tree.map(PathBuf::from),
        }
    }

    #[test]
    fn default_is_common_dir_hooks() {
        let l = layout(Some("/w"));
        assert_eq!(
            resolve_hooks_dir(&l, None, None),
            Path::new("/r/.git/hooks")
        );
        assert_eq!(
            resolve_hooks_dir(&l, Some(""), None),
            Path::new("/r/.git/hooks")
        );
    }

    #[test]
    fn relative_is_relative_to_work_tree() {
        let l = layout(Some("/w"));
        assert_eq!(
            resolve_hooks_dir(&l, Some(".husky/_"), None),
            Path::new("/w/.husky/_")
        );
        assert_eq!(
            resolve_hooks_dir(&l, Some("./hooks"), None),
            Path::new("/w/hooks")
        );
    }

    #[test]
    fn relative_in_bare_repo_is_relative_to_git_dir() {
        let l = RepoLayout {
            git_dir: PathBuf::from("/b.git"),
            common_dir: PathBuf::from("/b.git"),
            work_tree: None,
        };
        assert_eq!(
            resolve_hooks_dir(&l, Some("my-hooks"), None),
            Path::new("/b.git/my-hooks")
        );
    }

    #[test]
    fn absolute_and_home() {
        let l = layout(Some("/w"));
        assert_eq!(
            resolve_hooks_dir(&l, Some("/etc/hooks"), None),
            Path::new("/etc/hooks")
        );
        let home = Path::new("/home/u");
        assert_eq!(
            resolve_hooks_dir(&l, Some("~/hooks"), Some(home)),
            Path::new("/home/u/hooks")
        );
        assert_eq!(
            resolve_hooks_dir(&l, Some("~"), Some(home)),
            Path::new("/home/u")
        );
        // `~user` is not expanded (git would look the user up); it stays a relative path.
        assert_eq!(
            resolve_hooks_dir(&l, Some("~u/h"), Some(home)),
            Path::new("/w/~u/h")
        );
    }

    #[test]
    fn only_a_global_or_system_value_outside_the_repository_is_shared() {
        let at = |value: &str, scope| {
            HookLocation::new(layout(Some("/w")), Some(value.into()), None)
                .with_scope(Some(scope))
                .shared()
        };
        assert_eq!(
            at("/etc/hooks", ConfigScope::Global),
            Some(ConfigScope::Global)
        );
        assert_eq!(
            at("/etc/hooks", ConfigScope::System),
            Some(ConfigScope::System)
        );
        assert_eq!(at("/etc/hooks", ConfigScope::Local), None);
        assert_eq!(at("/etc/hooks", ConfigScope::Worktree), None);
        assert_eq!(at("/etc/hooks", ConfigScope::Command), None);
        // Relative global values land in each repository; absolute ones inside it are its own.
        assert_eq!(at(".githooks", ConfigScope::Global), None);
        assert_eq!(at("/w/hooks", ConfigScope::Global), None);
        assert_eq!(at("/r/.git/hooks", ConfigScope::Global), None);
        // Unset: nothing is shared, whatever the scope claims.
        let unset =
            HookLocation::new(layout(Some("/w")), None, None).with_scope(Some(ConfigScope::Global));
        assert_eq!(unset.shared(), None);
    }

    #[test]
    fn empty_value_counts_as_unset() {
        let loc = HookLocation::new(layout(None), Some(String::new()), None);
        assert_eq!(loc.hooks_path_config, None);
        assert_eq!(loc.pre_push(), Path::new("/r/.git/hooks/pre-push"));
    }
}
