//! `checkdef init [--force]`: draft a commented `checkdef.toml` for a Python repository (see
//! [`crate::init`] for what is inspected and how segments are chosen). Never overwrites an
//! existing file without `--force`; writes atomically. What was found and what to review goes
//! to stderr.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use gix::bstr::BStr;

use crate::cli::InitArgs;
use crate::config::{Config, FILE_NAME};
use crate::exit::{Code, usage, usage_hint};
use crate::git::{FileMode, Repo, Target, Visit};
use crate::init::{self, RepoFiles};

/// Records every path of a snapshot without hashing anything.
#[derive(Default)]
struct Paths(Vec<String>);

impl Visit for Paths {
    fn wants(&mut self, path: &BStr) -> bool {
        if let Ok(p) = std::str::from_utf8(path) {
            self.0.push(p.to_owned());
        }
        false
    }
    fn visit(&mut self, _path: &BStr, _mode: FileMode, _id: &gix::oid) {}
}

/// The work tree's files (tracked, and untracked that are not ignored).
pub fn worktree_files(repo: &Repo) -> Result<RepoFiles> {
    let mut paths = Paths::default();
    repo.walk(&Target::WorkTree, &mut paths)
        .context("cannot list the files of the work tree")?;
    Ok(RepoFiles::new(paths.0))
}

pub fn run(ctx: &crate::context::Context, args: &InitArgs) -> Result<Code> {
    let config_flag = ctx.settings.config_flag.as_deref();
    let p = &ctx.printer;
    let cwd = std::env::current_dir()
        .map_err(|e| usage(format!("cannot read the current directory: {e}")))?;
    let repo = Repo::discover(&cwd).map_err(|e| {
        usage_hint(
            e.to_string(),
            "run checkdef init at the root of a git work tree (git init first), or pass -C DIR",
        )
    })?;
    let root = repo
        .require_workdir()
        .map_err(|e| usage_hint(e.to_string(), "checkdef init needs a work tree"))?
        .to_path_buf();
    let out: PathBuf = match config_flag {
        Some(p) => cwd.join(p),
        None => root.join(FILE_NAME),
    };
    if out.exists() && !args.force {
        return Err(usage_hint(
            format!(
                "{} already exists; checkdef init never overwrites it",
                out.display()
            ),
            "edit it by hand, or run `checkdef init --force` to replace it with a fresh draft",
        ));
    }
    let files = worktree_files(&repo)?;
    let ins = init::inspect(&root, files).map_err(|e| {
        usage_hint(
            e.to_string(),
            "checkdef init drafts segments for pytest test modules; for other test runners write checkdef.toml by hand (docs/configuration.md)",
        )
    })?;
    let text = init::render(&ins);
    let config = Config::parse(&text, &out)
        .map_err(|e| anyhow::anyhow!("the drafted configuration is invalid (a bug): {e}"))?;

    p.line(&format!("checkdef init: inspected {}", root.display()));
    p.text(&init::summary(&ins));
    crate::fsutil::write_durable(&out, text.as_bytes())?;
    p.line(&format!(
        "checkdef: wrote {} ({} segment{})",
        out.display(),
        ins.segments.len(),
        if ins.segments.len() == 1 { "" } else { "s" }
    ));
    if !ins.review.is_empty() {
        p.line("review:");
        for r in &ins.review {
            p.line(&format!("  - {r}"));
        }
    }
    // The same warnings `plan` and `run` give, now rather than at the first run. A plan that
    // cannot be built (a fingerprint failing) is reported by those commands with its hint.
    if let Ok(plan) = ctx.plan(&repo, &config, &Target::WorkTree, None, |_| true) {
        for w in crate::plan::unmatched_warnings(&plan) {
            p.warn(&w);
        }
    }
    p.info(
        "next: `checkdef plan` shows each segment's inputs and hash, `checkdef run` runs them (each in a sandbox holding only its inputs), `checkdef install` adds the pre-push hook",
    );
    Ok(Code::Success)
}
