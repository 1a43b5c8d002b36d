//! `checkdef plan [--rev REV | --worktree] [--base REV] [--json]`: each segment's input hash,
//! store path, touched flag and cache status. Human output is a table on stderr; `--json`
//! prints one document on stdout:
//!
//! ```json
//! {"version":1,"commit":"<hex>"|null,"worktree":false,"base":"<hex>"|null,
//!  "segments":[{"name":"foo-tests","input_hash":"<64 hex>","store_path":"/nix/store/…",
//!               "touched":true|false|null,"status":"hit-local"|"hit-remote"|"miss"}],
//!  "untracked_touched":["README.md"]|null}
//! ```
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{PlanArgs, Target as CliTarget};
use crate::config::{Config, ConfigError};
use crate::exit::{Code, usage};
use crate::git::{GitError, Repo, Target};
use crate::plan::{self, JSON_VERSION, Plan, PlanError, Status};

/// The repository and configuration a command works on.
pub struct Context {
    pub repo: Repo,
    pub config: Config,
}

/// Open the repository around the current directory and load its configuration (`--config`
/// overrides the location). Failures are usage errors (exit 2) with a hint.
pub fn open_context(config_flag: Option<&Path>) -> Result<Context> {
    let repo = open_repo()?;
    let config = Config::load(repo.root(), config_flag).map_err(|e| config_error(&e))?;
    Ok(Context { repo, config })
}

/// Open the repository around the current directory (a usage error with a hint when there is
/// none).
pub fn open_repo() -> Result<Repo> {
    let cwd = std::env::current_dir()
        .map_err(|e| usage(format!("cannot read the current directory: {e}")))?;
    Repo::discover(&cwd).map_err(|e| {
        usage(format!(
            "{e}\nhint: run checkdef inside a git work tree, or pass -C DIR"
        ))
    })
}

pub fn config_error(e: &ConfigError) -> anyhow::Error {
    match e {
        ConfigError::Read { path, .. } if e.is_not_found() => usage(format!(
            "no configuration file at {}\nhint: run `checkdef init` to draft one (a Python/pytest repository), write checkdef.toml at the repository root by hand (docs/configuration.md), or pass --config PATH",
            path.display()
        )),
        ConfigError::Read { .. } => usage(format!(
            "{e}\nhint: check the file's permissions and that it is UTF-8"
        )),
        ConfigError::Invalid { .. } => usage(format!(
            "{e}\nhint: see docs/configuration.md for every key checkdef.toml accepts"
        )),
    }
}

/// The snapshot the flags select: `--rev REV` (a commit), else the work tree.
pub fn resolve_target(repo: &Repo, target: &CliTarget) -> Result<Target> {
    match &target.rev {
        Some(rev) => Ok(Target::Commit(resolve_rev(repo, rev)?)),
        None => {
            repo.require_workdir().map_err(|e| {
                usage(format!(
                    "{e}\nhint: pass --rev REV to check a commit of a bare repository"
                ))
            })?;
            Ok(Target::WorkTree)
        }
    }
}

/// Resolve a revision, mapping failures to usage errors with a hint.
pub fn resolve_rev(repo: &Repo, rev: &str) -> Result<gix::ObjectId> {
    repo.resolve_commit(rev).map_err(|e| match e {
        GitError::BadRevision { .. } | GitError::NotACommit { .. } => usage(format!(
            "{e}\nhint: pass a commit id, branch or tag that exists in this repository (`git fetch` first if it is remote)"
        )),
        other => anyhow::Error::new(other),
    })
}

/// Map plan errors: a failing fingerprint command is a configuration problem (exit 2).
pub fn plan_error(e: PlanError) -> anyhow::Error {
    match e {
        PlanError::FingerprintSpawn {
            source: crate::process::BoundedError::TimedOut(_),
            ..
        } => usage(format!(
            "{e}\nhint: a fingerprint command must print and exit; raise `[defaults] fingerprint_timeout` in checkdef.toml if it is just slow"
        )),
        PlanError::PythonNotFound { .. } => usage(format!(
            "{e}\nhint: install it, put it on PATH, or name another interpreter with `fingerprint = [{{ python = \"...\" }}]` in checkdef.toml (`fingerprint = []` turns the default off)"
        )),
        PlanError::FingerprintSpawn { .. } | PlanError::FingerprintFailed { .. } => usage(format!(
            "{e}\nhint: fix the command in `fingerprint = [...]` of checkdef.toml; it runs with `sh -c` at the repository root"
        )),
        PlanError::Git(g) => anyhow::Error::new(g).context("cannot read the snapshot"),
    }
}

/// The local cache directory by the XDG rules (see [`crate::cache::local_dir`]).
pub fn local_cache_dir() -> Option<PathBuf> {
    crate::cache::local_dir()
}

/// Each segment's cache status, from the same verified lookups `checkdef run` makes: the
/// local cache first, then the remote (signature, hashes and result checked). Entries that
/// exist but fail a check are misses, with the warning printed on stderr.
pub fn lookup_status(config: &Config, plan: &Plan) -> Result<Vec<Status>> {
    let settings = crate::cache::settings_from(&config.cache)?;
    let caches = crate::cache::Caches::open(settings)?;
    let rt = crate::commands::run::runtime()?;
    let lookups = rt.block_on(crate::run::lookup_all(&caches, &plan.segments, false));
    Ok(lookups
        .into_iter()
        .map(|(l, _)| {
            for w in &l.warnings {
                eprintln!("checkdef: warning: {w}");
            }
            match l.hit.map(|h| h.source) {
                Some(crate::cache::Source::Local) => Status::HitLocal,
                Some(crate::cache::Source::Remote) => Status::HitRemote,
                None => Status::Miss,
            }
        })
        .collect())
}

pub fn run(config_flag: Option<&Path>, args: &PlanArgs) -> Result<Code> {
    let ctx = open_context(config_flag)?;
    let target = resolve_target(&ctx.repo, &args.target)?;
    let base = args
        .base
        .as_deref()
        .map(|b| resolve_rev(&ctx.repo, b))
        .transpose()?;
    let plan = plan::build_plan(&ctx.repo, &ctx.config, &target, base).map_err(plan_error)?;
    for w in plan::unmatched_warnings(&plan) {
        eprintln!("checkdef: warning: {w}");
    }
    let statuses = lookup_status(&ctx.config, &plan)?;
    if args.json {
        let doc = to_json(&plan, &statuses);
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        eprint!("{}", render_table(&plan, &statuses));
    }
    if args.explain {
        eprint!("{}", super::explain::plan_lines(&plan, &statuses));
    }
    // The process ends here: skip freeing ~2 allocations per input one by one.
    std::mem::forget(plan);
    Ok(Code::Success)
}

/// The `--json` document (see the module documentation); fields serialise in this order.
#[derive(Debug, serde::Serialize)]
pub struct PlanJson {
    pub version: u32,
    pub commit: Option<String>,
    pub worktree: bool,
    pub base: Option<String>,
    pub segments: Vec<SegmentJson>,
    pub untracked_touched: Option<Vec<String>>,
}

/// One segment of [`PlanJson`].
#[derive(Debug, serde::Serialize)]
pub struct SegmentJson {
    pub name: String,
    pub input_hash: String,
    pub store_path: String,
    pub touched: Option<bool>,
    pub status: &'static str,
}

/// Build the `--json` document.
pub fn to_json(plan: &Plan, statuses: &[Status]) -> PlanJson {
    PlanJson {
        version: JSON_VERSION,
        commit: plan.commit.map(|c| c.to_string()),
        worktree: plan.is_worktree(),
        base: plan.base.map(|c| c.to_string()),
        segments: plan
            .segments
            .iter()
            .zip(statuses)
            .map(|(s, st)| SegmentJson {
                name: s.name.clone(),
                input_hash: s.input_hash.clone(),
                store_path: s.store_path.clone(),
                touched: s.touched,
                status: st.as_str(),
            })
            .collect(),
        untracked_touched: plan.untracked_touched.as_ref().map(|paths| {
            paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        }),
    }
}

/// The aligned table printed on stderr.
pub fn render_table(plan: &Plan, statuses: &[Status]) -> String {
    let mut out = String::new();
    let what = match (&plan.target, plan.commit) {
        (Target::Commit(c), _) => format!("commit {}", short(&c.to_string())),
        (Target::WorkTree, Some(head)) => format!("work tree (HEAD {})", short(&head.to_string())),
        (Target::WorkTree, None) => "work tree (no commits yet)".to_owned(),
    };
    let base = plan
        .base
        .map(|b| format!(", touched relative to {}", short(&b.to_string())))
        .unwrap_or_default();
    out.push_str(&format!("plan for {what}{base}\n"));
    let with_touched = plan.base.is_some();
    let mut rows: Vec<Vec<String>> = vec![];
    let mut header = vec!["SEGMENT", "STATUS"];
    if with_touched {
        header.push("TOUCHED");
    }
    header.extend(["INPUTS", "INPUT HASH", "STORE PATH"]);
    rows.push(header.into_iter().map(String::from).collect());
    for (s, st) in plan.segments.iter().zip(statuses) {
        let mut row = vec![s.name.clone(), st.as_str().to_owned()];
        if with_touched {
            row.push(if s.touched == Some(true) { "yes" } else { "no" }.to_owned());
        }
        row.extend([
            s.inputs.len().to_string(),
            s.input_hash[..16].to_owned(),
            s.store_path.clone(),
        ]);
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let hits = statuses.iter().filter(|s| **s != Status::Miss).count();
    let misses = statuses.len() - hits;
    out.push_str(&format!(
        "{} segment{}: {hits} cached, {misses} to run\n",
        statuses.len(),
        if statuses.len() == 1 { "" } else { "s" }
    ));
    if let Some(paths) = &plan.untracked_touched
        && !paths.is_empty()
    {
        out.push_str(&format!(
            "{} changed path{} covered by no segment:\n",
            paths.len(),
            if paths.len() == 1 { "" } else { "s" }
        ));
        for p in paths.iter().take(20) {
            out.push_str(&format!("  {}\n", crate::manifest::escape(p)));
        }
        if paths.len() > 20 {
            out.push_str(&format!("  … and {} more\n", paths.len() - 20));
        }
    }
    out
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}
