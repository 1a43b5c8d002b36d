//! The one context every command starts from: it reads the process environment once (the
//! `CHECKDEF_*` variables, `NO_COLOR`, `CI`, the XDG directories — see [`Settings`]), owns the
//! global output flags and the [`Printer`], opens the repository, loads `checkdef.toml` (honouring
//! `--config` for every command), builds the tokio runtime and knows the default job count.
//!
//! Commands get one immutable [`Context`]; what they hand to the layers below are typed values
//! taken from it (an [`Env`] snapshot, [`SandboxSettings`], [`RemoteEnv`], a cache directory):
//! no module below `commands/` reads the environment itself. The hidden re-exec stages
//! (`__supervise`, `__sandbox`) run before any context exists and read only what their parent
//! passed them.
mod env;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Result;

pub use env::Env;

use crate::cli::{GlobalArgs, Target as CliTarget};
use crate::config::{Config, ConfigError};
use crate::exit::{usage, usage_hint, usage_hints};
use crate::git::{GitError, Repo, Target};
use crate::printer::Printer;

/// Where the local cache lives and which rule put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    pub path: PathBuf,
    pub origin: CacheDirOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheDirOrigin {
    /// `$CHECKDEF_CACHE_DIR`.
    Explicit,
    /// `$XDG_CACHE_HOME/checkdef`.
    XdgCacheHome,
    /// `~/.cache/checkdef`.
    Home,
}

impl CacheDirOrigin {
    /// How `checkdef status` names the rule.
    pub fn describe(self) -> &'static str {
        match self {
            CacheDirOrigin::Explicit => "CHECKDEF_CACHE_DIR",
            CacheDirOrigin::XdgCacheHome => "$XDG_CACHE_HOME/checkdef",
            CacheDirOrigin::Home => "~/.cache/checkdef",
        }
    }
}

impl CacheDir {
    /// The XDG rules: `$CHECKDEF_CACHE_DIR`, else `$XDG_CACHE_HOME/checkdef`, else
    /// `~/.cache/checkdef`; `None` when none of them is set (there is no shared fallback).
    pub fn from_env(env: &Env) -> Option<CacheDir> {
        let at = |path, origin| Some(CacheDir { path, origin });
        if let Some(p) = env.dir("CHECKDEF_CACHE_DIR") {
            return at(p, CacheDirOrigin::Explicit);
        }
        // The XDG base directory specification: a relative path in these variables is invalid
        // and ignored.
        if let Some(p) = env.path("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
            return at(p.join("checkdef"), CacheDirOrigin::XdgCacheHome);
        }
        let home = env.dir("HOME")?;
        at(home.join(".cache").join("checkdef"), CacheDirOrigin::Home)
    }
}

/// What `CHECKDEF_REMOTE` says about the remote cache.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RemoteOverride {
    /// Not set: `[cache] remote` of checkdef.toml decides.
    #[default]
    Unset,
    /// Set but blank: no remote, whatever checkdef.toml says.
    Disabled,
    /// Set: this URL (trimmed) instead of checkdef.toml's.
    Url(String),
}

/// The `CHECKDEF_*` variables about caches, parsed once, so `run`, the hook, `cache push`,
/// `cache verify` and `status` read them alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteEnv {
    pub remote: RemoteOverride,
    /// `CHECKDEF_REMOTE_TOKEN`: a bearer token for an HTTP remote (blank: none).
    pub token: Option<String>,
    /// `CHECKDEF_NETRC_FILE` (not empty).
    pub netrc_file: Option<PathBuf>,
    /// `$HOME`, for the default `~/.netrc`.
    pub home: Option<PathBuf>,
    /// `CHECKDEF_TRUSTED_PUBLIC_KEYS`, space-separated keys added to checkdef.toml's (blank:
    /// none).
    pub trusted_public_keys: Option<String>,
    /// `CHECKDEF_SECRET_KEY_FILE` (not empty).
    pub secret_key_file: Option<PathBuf>,
}

impl RemoteEnv {
    pub fn from_env(env: &Env) -> RemoteEnv {
        let text = |k: &str| {
            env.var(k)
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned)
        };
        RemoteEnv {
            remote: match env.var("CHECKDEF_REMOTE") {
                None => RemoteOverride::Unset,
                Some(v) if v.trim().is_empty() => RemoteOverride::Disabled,
                Some(v) => RemoteOverride::Url(v.trim().to_owned()),
            },
            token: text("CHECKDEF_REMOTE_TOKEN"),
            netrc_file: env.path("CHECKDEF_NETRC_FILE"),
            home: env.path("HOME"),
            trusted_public_keys: text("CHECKDEF_TRUSTED_PUBLIC_KEYS"),
            secret_key_file: env.path("CHECKDEF_SECRET_KEY_FILE"),
        }
    }

    /// The remote URL and where it came from (`CHECKDEF_REMOTE` or `checkdef.toml`), given
    /// `[cache] remote`; `None` when there is none.
    pub fn remote_url<'a>(
        &'a self,
        configured: Option<&'a str>,
    ) -> Option<(&'a str, &'static str)> {
        match &self.remote {
            RemoteOverride::Disabled => None,
            RemoteOverride::Url(u) => Some((u.as_str(), "CHECKDEF_REMOTE")),
            RemoteOverride::Unset => configured.map(|u| (u, "checkdef.toml")),
        }
    }

    /// The netrc file an HTTP remote's credentials are read from, and whether it exists:
    /// `CHECKDEF_NETRC_FILE`, else `~/.netrc` when that exists.
    pub fn netrc(&self) -> Option<(PathBuf, bool)> {
        if let Some(p) = &self.netrc_file {
            return Some((p.clone(), p.is_file()));
        }
        let p = self.home.as_ref()?.join(".netrc");
        p.is_file().then_some((p, true))
    }
}

/// Where sandboxes go and how they are made (`CHECKDEF_SANDBOX_DIR`, `CHECKDEF_SANDBOX_WRITES`,
/// `CHECKDEF_ISOLATION`; see `run/sandbox.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// The directory new sandboxes are created in: `$CHECKDEF_SANDBOX_DIR` when set and not
    /// empty, else the system's temporary directory (`$TMPDIR`, else `/tmp`).
    pub base: PathBuf,
    /// An isolated check's writes into its view go to a tmpfs of its own (the default), not to
    /// disk (`CHECKDEF_SANDBOX_WRITES=disk`).
    pub writes_in_memory: bool,
    /// `CHECKDEF_ISOLATION=off`: never isolate.
    pub isolation_off: bool,
}

impl SandboxSettings {
    pub fn from_env(env: &Env) -> SandboxSettings {
        SandboxSettings {
            base: env.dir("CHECKDEF_SANDBOX_DIR").unwrap_or_else(|| {
                // What `std::env::temp_dir` answers, from the snapshot.
                env.dir("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"))
            }),
            writes_in_memory: env
                .var_os("CHECKDEF_SANDBOX_WRITES")
                .is_none_or(|v| v != "disk"),
            isolation_off: env.var_os("CHECKDEF_ISOLATION").is_some_and(|v| v == "off"),
        }
    }

    /// This user's directory of sandboxes: `<base>/checkdef-<uid>`.
    pub fn parent_dir(&self) -> PathBuf {
        self.base
            .join(format!("checkdef-{}", rustix::process::getuid().as_raw()))
    }
}

/// How human output looks: the global flags merged with `NO_COLOR`, `CI` and
/// `CHECKDEF_NO_PROGRESS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputSettings {
    pub quiet: bool,
    pub verbose: bool,
    /// `--no-progress`, `CHECKDEF_NO_PROGRESS` or `CI`: no progress bars.
    pub no_progress: bool,
    /// `--no-color` or `NO_COLOR`.
    pub no_color: bool,
}

impl OutputSettings {
    pub fn new(flags: &GlobalArgs, env: &Env) -> OutputSettings {
        OutputSettings {
            quiet: flags.quiet,
            verbose: flags.verbose,
            no_progress: flags.no_progress
                || env.is_set("CHECKDEF_NO_PROGRESS")
                || env.is_set("CI"),
            no_color: flags.no_color || env.is_set("NO_COLOR"),
        }
    }
}

/// Everything a command may read about its surroundings, read once.
#[derive(Debug)]
pub struct Settings {
    pub env: Env,
    pub output: OutputSettings,
    /// `--config PATH`: the configuration file instead of `<root>/checkdef.toml`.
    pub config_flag: Option<PathBuf>,
    pub cache_dir: Option<CacheDir>,
    pub remote: RemoteEnv,
    pub sandbox: SandboxSettings,
    /// `CHECKDEF_SKIP`: whether the hook lets the push through unchecked.
    pub skip: Skip,
    /// `CHECKDEF_BUDGET`: the push budget instead of `[hook] budget`.
    pub budget: BudgetOverride,
    jobs: OnceLock<usize>,
}

/// What `CHECKDEF_BUDGET` says about the push budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetOverride {
    /// Unset or empty: `[hook] budget` decides.
    Unset,
    /// `off`, `none` or `0`: no budget, whatever checkdef.toml says.
    Off,
    Set(std::time::Duration),
    /// Not a duration: the hook warns and uses `[hook] budget` (an invalid variable must not
    /// block every push).
    Invalid(String),
}

impl BudgetOverride {
    pub fn from_env(env: &Env) -> BudgetOverride {
        let Some(v) = env
            .var("CHECKDEF_BUDGET")
            .map(str::trim)
            .filter(|v| !v.is_empty())
        else {
            return BudgetOverride::Unset;
        };
        if matches!(v, "off" | "none" | "0") {
            return BudgetOverride::Off;
        }
        match crate::duration::parse(v) {
            Ok(d) => BudgetOverride::Set(d),
            Err(why) => BudgetOverride::Invalid(why),
        }
    }

    /// The budget of a push whose checkdef.toml says `configured`.
    pub fn apply(&self, configured: Option<std::time::Duration>) -> Option<std::time::Duration> {
        match self {
            BudgetOverride::Unset | BudgetOverride::Invalid(_) => configured,
            BudgetOverride::Off => None,
            BudgetOverride::Set(d) => Some(*d),
        }
    }
}

/// `CHECKDEF_SKIP`: `1`, `true`, `yes` or `on` skip the hook's checks; unset, empty, `0`,
/// `false`, `no` or `off` do not. Anything else does not either, with a warning: it used to
/// skip (every value but `0` did), and `CHECKDEF_SKIP=false` letting a push through unchecked
/// is the opposite of what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    No,
    Yes,
    NotUnderstood(String),
}

impl Skip {
    fn from_env(value: Option<&std::ffi::OsStr>) -> Skip {
        let Some(v) = value else { return Skip::No };
        let v = v.to_string_lossy();
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Skip::Yes,
            "" | "0" | "false" | "no" | "off" => Skip::No,
            _ => Skip::NotUnderstood(v.into_owned()),
        }
    }
}

impl Settings {
    pub fn new(flags: &GlobalArgs, config_flag: Option<PathBuf>, env: Env) -> Settings {
        Settings {
            output: OutputSettings::new(flags, &env),
            config_flag,
            cache_dir: CacheDir::from_env(&env),
            remote: RemoteEnv::from_env(&env),
            sandbox: SandboxSettings::from_env(&env),
            skip: Skip::from_env(env.non_empty("CHECKDEF_SKIP")),
            budget: BudgetOverride::from_env(&env),
            jobs: OnceLock::new(),
            env,
        }
    }

    /// The local cache directory's path, when there is one.
    pub fn cache_path(&self) -> Option<&Path> {
        self.cache_dir.as_ref().map(|d| d.path.as_path())
    }

    /// Default parallelism: the number of CPUs (asked on first use: the no-op path never
    /// needs it).
    pub fn default_jobs(&self) -> usize {
        *self.jobs.get_or_init(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// The repository and configuration a command works on.
pub struct Workspace {
    pub repo: Repo,
    pub config: Config,
}

/// One command's context: settings and printer.
pub struct Context {
    pub settings: Settings,
    pub printer: Printer,
}

impl Context {
    /// The context of this process: its environment, and the global flags.
    pub fn new(flags: &GlobalArgs, config_flag: Option<PathBuf>) -> Context {
        Context::with_env(flags, config_flag, Env::capture())
    }

    pub fn with_env(flags: &GlobalArgs, config_flag: Option<PathBuf>, env: Env) -> Context {
        let settings = Settings::new(flags, config_flag, env);
        let printer = Printer::new(settings.output);
        Context { settings, printer }
    }

    pub fn env(&self) -> &Env {
        &self.settings.env
    }

    /// Where plans keep fingerprint outputs: the local cache's fingerprint directory.
    pub fn fingerprints(&self) -> crate::cache::layout::FingerprintDir {
        crate::cache::layout::FingerprintDir::new(self.settings.cache_path())
    }

    /// The plan of the segments of `config` that `select` accepts, in `repo` at `target`
    /// (`base`: the commit a push starts from), with this context's environment and
    /// fingerprint store: every command plans the same way.
    pub fn plan(
        &self,
        repo: &Repo,
        config: &crate::config::Config,
        target: &crate::git::Target,
        base: Option<gix::ObjectId>,
        select: impl Fn(&crate::config::Segment) -> bool,
    ) -> std::result::Result<crate::plan::Plan, crate::plan::PlanError> {
        crate::plan::build_plan_filtered(
            repo,
            config,
            self.env(),
            &self.fingerprints(),
            target,
            base,
            select,
        )
    }

    /// Open the repository around the current directory (a usage error with a hint when
    /// there is none).
    pub fn open_repo(&self) -> Result<Repo> {
        let cwd = std::env::current_dir()
            .map_err(|e| usage(format!("cannot read the current directory: {e}")))?;
        Repo::discover(&cwd).map_err(|e| {
            usage_hint(
                e.to_string(),
                "run checkdef inside a git work tree, or pass -C DIR",
            )
        })
    }

    /// `checkdef.toml` of `repo` (or `--config`), as it is on disk.
    pub fn load_config(&self, repo: &Repo) -> Result<Config, ConfigError> {
        Config::load(repo.root(), self.settings.config_flag.as_deref())
    }

    /// Open the repository and load its configuration. Failures are usage errors (exit 2)
    /// with a hint.
    pub fn open_workspace(&self) -> Result<Workspace> {
        let repo = self.open_repo()?;
        let config = self.load_config(&repo).map_err(|e| config_error(&e))?;
        Ok(Workspace { repo, config })
    }

    /// The cache settings for `[cache]` of a configuration, merged with the environment.
    pub fn cache_settings(
        &self,
        config: &crate::config::CacheConfig,
    ) -> Result<crate::cache::CacheSettings> {
        crate::cache::settings_from(config, &self.settings)
    }

    /// A runtime for one command: one thread is plenty (the work is waiting on children and
    /// sockets), and it starts in microseconds.
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?)
    }
}

pub fn config_error(e: &ConfigError) -> anyhow::Error {
    match e {
        ConfigError::Read { path, .. } if e.is_not_found() => usage_hint(
            format!("no configuration file at {}", path.display()),
            "run `checkdef init` to draft one (a Python/pytest repository), write checkdef.toml at the repository root by hand (docs/configuration.md), or pass --config PATH",
        ),
        ConfigError::Read { .. } => usage_hint(
            e.to_string(),
            "check the file's permissions and that it is UTF-8",
        ),
        ConfigError::Invalid { .. } => usage_hints(
            e.without_hint(),
            e.hints_then("see docs/configuration.md for every key checkdef.toml accepts"),
        ),
    }
}

/// The snapshot the flags select: `--rev REV` (a commit), else the work tree.
pub fn resolve_target(repo: &Repo, target: &CliTarget) -> Result<Target> {
    match &target.rev {
        Some(rev) => Ok(Target::Commit(resolve_rev(repo, rev)?)),
        None => {
            repo.require_workdir().map_err(|e| {
                usage_hint(
                    e.to_string(),
                    "pass --rev REV to check a commit of a bare repository",
                )
            })?;
            Ok(Target::WorkTree)
        }
    }
}

/// Resolve a revision, mapping failures to usage errors with a hint.
pub fn resolve_rev(repo: &Repo, rev: &str) -> Result<gix::ObjectId> {
    repo.resolve_commit(rev).map_err(|e| match e {
        GitError::BadRevision { .. } | GitError::NotACommit { .. } => usage_hint(e.to_string(), "pass a commit id, branch or tag that exists in this repository (`git fetch` first if it is remote)"),
        other => anyhow::Error::new(other),
    })
}

/// Map plan errors: a failing fingerprint command is a configuration problem (exit 2).
pub fn plan_error(e: crate::plan::PlanError) -> anyhow::Error {
    use crate::plan::PlanError;
    match e {
        PlanError::FingerprintSpawn {
            source: crate::process::BoundedError::Interrupted(_),
            ..
        } => crate::exit::interrupted(),
        PlanError::FingerprintSpawn {
            source: crate::process::BoundedError::TimedOut(_),
            ..
        } => usage_hint(
            e.to_string(),
            "a fingerprint command must print and exit; raise `[defaults] fingerprint_timeout` in checkdef.toml if it is just slow",
        ),
        PlanError::PythonNotFound { .. } => usage_hint(
            e.to_string(),
            "install it, put it on PATH, or name another interpreter with `fingerprint = [{ python = \"...\" }]` in checkdef.toml (`fingerprint = []` turns the default off)",
        ),
        PlanError::StaleVersionFile { .. } => usage_hint(
            e.to_string(),
            "check that commit in a checkout of it (`git worktree add DIR COMMIT`), make the work tree's file the commit's, or put the interpreter's own directory first on PATH instead of the shim",
        ),
        PlanError::FingerprintSpawn { .. } | PlanError::FingerprintFailed { .. } => usage_hint(
            e.to_string(),
            "fix the command in `fingerprint = [...]` of checkdef.toml; it runs with `sh -c` at the repository root",
        ),
        PlanError::Git(g) => anyhow::Error::new(g).context("cannot read the snapshot"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_token_is_read_once_and_alike() {
        // `status` and `run` used to disagree about a blank token (one ignored it, the other
        // sent it as a bearer token).
        let env = Env::from_pairs([("CHECKDEF_REMOTE_TOKEN", "  "), ("CHECKDEF_REMOTE", " ")]);
        let r = RemoteEnv::from_env(&env);
        assert_eq!(r.token, None);
        assert_eq!(r.remote, RemoteOverride::Disabled);
        assert_eq!(r.remote_url(Some("https://c.example")), None);
        let env = Env::from_pairs([("CHECKDEF_REMOTE", " https://x.example ")]);
        let r = RemoteEnv::from_env(&env);
        assert_eq!(
            r.remote_url(Some("https://c.example")),
            Some(("https://x.example", "CHECKDEF_REMOTE"))
        );
    }

    #[test]
    fn cache_dir_follows_the_xdg_rules() {
        let d =
            |pairs: &[(&str, &str)]| CacheDir::from_env(&Env::from_pairs(pairs.iter().copied()));
        assert_eq!(d(&[]), None);
        assert_eq!(
            d(&[("HOME", "/h")]).unwrap().path,
            PathBuf::from("/h/.cache/checkdef")
        );
        let x = d(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]).unwrap();
        assert_eq!(
            (x.path, x.origin),
            (PathBuf::from("/x/checkdef"), CacheDirOrigin::XdgCacheHome)
        );
        let c = d(&[
            ("HOME", "/h"),
            ("CHECKDEF_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", ""),
        ])
        .unwrap();
        assert_eq!(
            (c.path, c.origin),
            (PathBuf::from("/c"), CacheDirOrigin::Explicit)
        );
    }

    #[test]
    fn relative_directories_are_taken_from_where_checkdef_started() {
        let env = |pairs: &[(&str, &str)]| Env::from_pairs(pairs.iter().copied()).with_cwd("/w/r");
        let c = CacheDir::from_env(&env(&[("CHECKDEF_CACHE_DIR", "../x")])).unwrap();
        assert_eq!(c.path, PathBuf::from("/w/r/../x"));
        // A relative XDG_CACHE_HOME is invalid (XDG spec): the next rule decides.
        let c = CacheDir::from_env(&env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])).unwrap();
        assert_eq!(
            (c.path, c.origin),
            (PathBuf::from("/h/.cache/checkdef"), CacheDirOrigin::Home)
        );
        let s = SandboxSettings::from_env(&env(&[("CHECKDEF_SANDBOX_DIR", "sb")]));
        assert_eq!(s.base, PathBuf::from("/w/r/sb"));
        let s = SandboxSettings::from_env(&env(&[("TMPDIR", "t")]));
        assert_eq!(s.base, PathBuf::from("/w/r/t"));
    }

    #[test]
    fn sandbox_setting_wins_over_the_temporary_directory() {
        let s = SandboxSettings::from_env(&Env::from_pairs([("CHECKDEF_SANDBOX_DIR", "/dev/shm")]));
        assert_eq!(s.base, PathBuf::from("/dev/shm"));
        let s = SandboxSettings::from_env(&Env::from_pairs([("TMPDIR", "/t")]));
        assert_eq!(s.base, PathBuf::from("/t"));
        assert!(s.writes_in_memory && !s.isolation_off);
    }
}
