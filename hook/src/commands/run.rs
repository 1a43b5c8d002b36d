//! `checkdef run [--rev REV | --worktree] [--segment NAME]... [--jobs N] [--no-push] [--json]
//! [-v|--verbose] [-q]`: plan, look up, run the misses, store and push the passes.
//!
//! Exit codes: 0 every selected segment passed, 1 any failed, 2 usage/configuration error,
//! 130 interrupted (nothing partial stored).
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::cache::{self, Caches};
use crate::cli::RunArgs;
use crate::commands::plan::{open_context, plan_error, resolve_target};
use crate::exit::{Code, usage};
use crate::plan;
use crate::report::{self, Style};
use crate::run::{self, RunOptions};

/// A runtime for one command: one thread is plenty (the work is waiting on children and
/// sockets), and it starts in microseconds.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Default parallelism: the number of CPUs.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn run(config_flag: Option<&Path>, args: &RunArgs) -> Result<Code> {
    let ctx = open_context(config_flag)?;
    for name in &args.segments {
        if ctx.config.segment(name).is_none() {
            let known: Vec<&str> = ctx
                .config
                .segments
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(usage(format!(
                "unknown segment `{name}`\nhint: checkdef.toml declares: {}",
                known.join(", ")
            )));
        }
    }
    if args.jobs == Some(0) {
        return Err(usage("--jobs must be at least 1"));
    }
    let target = resolve_target(&ctx.repo, &args.target)?;
    let selected =
        |s: &crate::config::Segment| args.segments.is_empty() || args.segments.contains(&s.name);
    let plan = plan::build_plan_filtered(&ctx.repo, &ctx.config, &target, None, selected)
        .map_err(plan_error)?;
    let settings = cache::settings_from(&ctx.config.cache)?;
    let caches = Caches::open(settings)?;
    let style = Style::detect(args.quiet || args.json, args.verbose);
    let opts = RunOptions {
        jobs: args.jobs.unwrap_or_else(default_jobs),
        push: !args.no_push,
        verbose: args.verbose,
        hit_logs: args.verbose || args.junit.is_some(),
        style,
        redact_env: ctx.config.redact_env.clone(),
        force: args.force,
    };
    let rt = runtime()?;
    let report = rt.block_on(async {
        let (tx, rx) = run::interrupt_channel();
        run::watch_signals(tx);
        run::run_plan(&ctx.repo, &plan, caches, &opts, rx).await
    })?;
    if let Some(path) = &args.junit {
        crate::junit::write(path, &report)?;
    }
    if args.json {
        let mut doc = run::json_report(&report);
        super::explain::annotate_run_json(&mut doc, &plan);
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &doc)?;
        writeln!(out)?;
    }
    if !args.json || !args.quiet {
        report::line(None, &run::summary_line(&report, &style));
    }
    Ok(if report.interrupted {
        Code::Interrupted
    } else if report.all_passed() {
        Code::Success
    } else {
        Code::Failed
    })
}
