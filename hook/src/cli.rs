//! Command-line interface (clap derive). Flags are merged with `CHECKDEF_*` variables and
//! checkdef.toml in the settings step of each command.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "checkdef", version, about = "Skip tests that already passed on the same inputs", long_about = None)]
pub struct Cli {
    /// Path of the configuration file (default: checkdef.toml at the repository root).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Run as if started in this directory.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,
    #[command(flatten)]
    pub globals: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Output flags every subcommand takes.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct GlobalArgs {
    /// Say more: `run` and the hook stream each check's output live and replay stored logs of
    /// cached results.
    #[arg(long, short = 'v', global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Only print failures, warnings and the summary.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// No progress bars (also `CHECKDEF_NO_PROGRESS`, and under `CI`).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// No colour (also `NO_COLOR`).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// Which snapshot of the repository to check.
#[derive(Debug, Args, Clone, Default)]
pub struct Target {
    /// Check this commit (any rev git understands), reading only its objects.
    #[arg(long, value_name = "REV", conflicts_with = "worktree")]
    pub rev: Option<String>,
    /// Check the files on disk (tracked and untracked-not-ignored). The default.
    #[arg(long)]
    pub worktree: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show each segment's input hash, store path and cache status.
    Plan(PlanArgs),
    /// Print a segment's canonical input manifest.
    Explain(ExplainArgs),
    /// Run the segments whose results are not cached; store and share the passing ones.
    Run(RunArgs),
    /// Generate a Nix-format signing key pair.
    Keygen(KeygenArgs),
    /// Install checkdef's git pre-push hook.
    Install(InstallArgs),
    /// Remove checkdef's pre-push hook and restore any hook it had moved aside.
    Uninstall(UninstallArgs),
    /// Maintain the local cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Entry points called by git hooks.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Draft a commented checkdef.toml for a Python (pytest) repository.
    Init(InitArgs),
    /// Show the hook, configuration, caches and keys checkdef would use here.
    Status,
    /// Start a commit's checks in the background (low priority) and return at once, so that
    /// the push finds their results cached.
    Warm(WarmArgs),
    /// A background run (started by `checkdef warm` or a push's budget).
    #[command(name = "__background", hide = true)]
    Background(BackgroundArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print checkdef's man page (roff) on stdout.
    Man,
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// The commit to warm (any rev git understands; default HEAD).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackgroundArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long, value_enum)]
    pub reason: crate::background::Reason,
    #[arg(long)]
    pub rev: String,
    #[arg(long = "segment")]
    pub segments: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Replace an existing checkdef.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: Target,
    /// Mark segments touched since this commit.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// For every segment that misses, say what changed since its most recent local result.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The segment to explain.
    pub segment: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only these segments (repeatable).
    #[arg(long = "segment", short = 's', value_name = "NAME")]
    pub segments: Vec<String>,
    /// How many checks run at once (default: number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Do not upload results to the remote cache.
    #[arg(long)]
    pub no_push: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit XML report to FILE (one testcase per segment).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run every selected segment even when its result is cached (and store the results).
    #[arg(long, alias = "no-cache")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key name, e.g. `ci.example.org-1` (it prefixes signatures).
    pub name: String,
    /// Where to write the secret key (mode 0600). Default: `<NAME>.secret` in checkdef's
    /// directory of the user's configuration (`$XDG_CONFIG_HOME/checkdef/keys/`, else
    /// `~/.config/checkdef/keys/`), never the repository.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Install even when another hook manager owns the hooks directory.
    #[arg(long)]
    pub force: bool,
    /// Only report what is installed.
    #[arg(long)]
    pub status: bool,
    /// Install into the hooks directory that a global or system `core.hooksPath` shares with
    /// every repository using it: each of their pushes then runs checkdef.
    #[arg(long)]
    pub global: bool,
    /// Also install a post-commit hook that runs `checkdef warm` after each commit.
    #[arg(long)]
    pub warm: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Check every local entry (hashes, signatures, result validity); remove bad ones.
    Verify,
    /// Remove least-recently-used entries until the cache is at most SIZE (e.g. 500M, 2G).
    Gc {
        #[arg(long, value_name = "SIZE")]
        max_size: String,
    },
    /// Upload this repository's local results that the remote lacks (signed), and retry the
    /// uploads that failed in earlier runs.
    Push(PushArgs),
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only say what would be uploaded (reads the remote, writes nothing, needs no key).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Remove the hook even if it was edited by hand.
    #[arg(long)]
    pub force: bool,
    /// Remove the hook from the hooks directory that a global or system `core.hooksPath` shares
    /// with every repository using it.
    #[arg(long)]
    pub global: bool,
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Called by git's pre-push hook: `checkdef hook pre-push REMOTE URL` with ref lines on stdin.
    PrePush { remote: String, url: String },
}
