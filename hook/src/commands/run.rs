//! `checkdef run [--rev REV | --worktree] [--segment NAME]... [--jobs N] [--no-push] [--json]
//! [-v|--verbose] [-q]`: plan, look up, run the misses, store and push the passes.
//!
//! Exit codes: 0 every selected segment passed, 1 any failed, 2 usage/configuration error,
//! 130 interrupted (nothing partial stored).
use std::sync::Arc;

use anyhow::Result;

use crate::cache::Caches;
use crate::cli::RunArgs;
use crate::context::{Context, plan_error, resolve_target};
use crate::exit::{Code, usage, usage_hint};
use crate::report::{self, HumanReporter};
use crate::run::{self, RunOptions};

pub fn run(ctx: &Context, args: &RunArgs) -> Result<Code> {
    let ws = ctx.open_workspace()?;
    for name in &args.segments {
        if ws.config.segment(name).is_none() {
            let known: Vec<&str> = ws.config.segments.iter().map(|s| s.name.as_str()).collect();
            return Err(usage_hint(
                format!("unknown segment `{name}`"),
                format!("checkdef.toml declares: {}", known.join(", ")),
            ));
        }
    }
    if args.jobs == Some(0) {
        return Err(usage("--jobs must be at least 1"));
    }
    let target = resolve_target(&ws.repo, &args.target)?;
    let selected =
        |s: &crate::config::Segment| args.segments.is_empty() || args.segments.contains(&s.name);
    let plan = ctx
        .plan(&ws.repo, &ws.config, &target, None, selected)
        .map_err(plan_error)?;
    let settings = ctx.cache_settings(&ws.config.cache)?;
    let caches = Caches::open(settings)?;
    // With --json the document is the output: stderr says only what -q would.
    let printer = ctx.printer.quieter(args.json);
    let verbose = ctx.printer.is_verbose();
    let opts = RunOptions {
        jobs: args.jobs.unwrap_or_else(|| ctx.settings.default_jobs()),
        push: !args.no_push,
        hit_logs: verbose || args.junit.is_some(),
        force: args.force,
        ..super::run_options(ctx, &ws.config)
    };
    let reporter = Arc::new(HumanReporter::for_plan(printer, verbose, &plan));
    let rt = ctx.runtime()?;
    let report = rt.block_on(async {
        let (tx, rx) = run::interrupt_channel();
        run::watch_signals(tx);
        run::run_plan(&ws.repo, &plan, caches.clone(), &opts, rx, reporter).await
    })?;
    if let Some(path) = &args.junit {
        crate::junit::write(path, &report)?;
    }
    if args.json {
        let doc = run::json::run_json(&report, |o| {
            plan.segment(&o.name)
                .and_then(|seg| super::explain::summary_line(&caches, seg))
        });
        let mut text = serde_json::to_string(&doc)?;
        text.push('\n');
        ctx.printer.stdout(text)?;
    }
    report::runner_hint(&printer, &report);
    if !args.json || !ctx.printer.is_quiet() {
        printer.line(&report::summary_line(&report, &printer.style()));
    }
    Ok(if report.interrupted {
        Code::Interrupted
    } else if report.all_passed() {
        Code::Success
    } else {
        Code::Failed
    })
}
