//! `checkdef hook pre-push REMOTE URL`: git's pre-push hook. Reads the ref lines on stdin once,
//! and verifies every distinct pushed commit from its git objects (never the work tree): each
//! selected segment must have a passing result, from the cache or from a run, or the push is
//! blocked. A cache outage never blocks a push by itself.
use std::io::Read as _;
use std::path::Path;

use anyhow::Result;

use crate::cache::{self, Caches};
use crate::commands::plan::{open_context, plan_error};
use crate::commands::run::{default_jobs, runtime};
use crate::config::HookMode;
use crate::exit::{Code, usage};
use crate::git::Target;
use crate::plan;
use crate::prepush::{self, PushCheck};
use crate::report::{self, Style};
use crate::result::Status;
use crate::run::{self, RunOptions};

pub fn pre_push(config_flag: Option<&Path>, remote: &str, url: &str) -> Result<Code> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| {
        usage(format!(
            "cannot read the ref list git writes to the pre-push hook's stdin: {e}"
        ))
    })?;
    if std::env::var_os("CHECKDEF_SKIP").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("checkdef: warning: CHECKDEF_SKIP is set — this push is NOT verified");
        return Ok(Code::Success);
    }
    let updates =
        prepush::parse_stdin(&input).map_err(|e| usage(format!("pre-push input: {e}")))?;
    if updates.is_empty() {
        return Ok(Code::Success);
    }
    let ctx = open_context(config_flag)?;
    // git passes a URL as typed when the push names no remote, credentials included.
    let shown_remote = cache_proto::RedactedUrl::new(remote);
    let push = prepush::plan_push(ctx.repo.gix(), remote, &updates).map_err(|e| {
        usage(format!(
            "{e}\nhint: fetch the missing objects or push from a complete clone"
        ))
    })?;
    let style = Style::detect(false, false);
    for s in &push.skipped {
        report::line(
            None,
            &style.dim(&format!("checkdef: {}: {}", s.remote_ref, s.reason)),
        );
    }
    if push.checks.is_empty() {
        return Ok(Code::Success);
    }
    let settings = cache::settings_from(&ctx.config.cache)?;
    let caches = Caches::open(settings)?;
    let opts = RunOptions {
        jobs: default_jobs(),
        push: true,
        verbose: false,
        hit_logs: false,
        style,
        redact_env: ctx.config.redact_env.clone(),
    };
    if url.starts_with("ssh://") || url.contains('@') {
        report::line(
            None,
            &style.dim("checkdef: note: the SSH connection is open while checks run; long runs may hit the server's idle timeout"),
        );
    }
    let rt = runtime()?;
    let mut failed: Vec<(PushCheck, Vec<String>)> = Vec::new();
    let mut interrupted = false;
    for check in &push.checks {
        let short = short_owned(&check.commit.to_string());
        let base = check.base.map(|b| short_owned(&b.to_string()));
        report::line(
            None,
            &style.bold(&format!(
                "checkdef: checking {short} → {shown_remote} {} ({})",
                check.refs.join(", "),
                match &base {
                    Some(b) => format!("remote has {b}"),
                    None => "all new to the remote".to_owned(),
                }
            )),
        );
        let target = Target::Commit(check.commit);
        let all = plan::build_plan_filtered(&ctx.repo, &ctx.config, &target, check.base, |_| true)
            .map_err(plan_error)?;
        let touched: Vec<&str> = all
            .segments
            .iter()
            .filter(|s| s.touched != Some(false))
            .map(|s| s.name.as_str())
            .collect();
        if check.base.is_some() {
            report::line(
                None,
                &format!(
                    "checkdef: touched segments: {}",
                    if touched.is_empty() {
                        "none".to_owned()
                    } else {
                        touched.join(", ")
                    }
                ),
            );
        }
        let mut plan = all;
        if ctx.config.hook.mode == HookMode::Affected && check.base.is_some() {
            plan.segments.retain(|s| s.touched == Some(true));
            if plan.segments.is_empty() {
                report::line(
                    None,
                    "checkdef: mode = \"affected\": no segment touched, nothing to check",
                );
                continue;
            }
        }
        let report = rt.block_on(async {
            let (tx, rx) = run::interrupt_channel();
            run::watch_signals(tx);
            run::run_plan(&ctx.repo, &plan, caches.clone(), &opts, rx).await
        })?;
        report::line(None, &run::summary_line(&report, &style));
        if report.interrupted {
            interrupted = true;
            break;
        }
        if !report.all_passed() {
            let names = report
                .segments
                .iter()
                .filter(|s| s.status == Status::Failed)
                .map(|s| s.name.clone())
                .collect();
            failed.push((check.clone(), names));
        }
    }
    if interrupted {
        eprintln!("checkdef: interrupted — push blocked, nothing partial was stored");
        return Ok(Code::Interrupted);
    }
    if failed.is_empty() {
        return Ok(Code::Success);
    }
    eprintln!();
    eprintln!("{}", style.red(&style.bold("checkdef: push blocked")));
    for (check, names) in &failed {
        let sha = check.commit.to_string();
        eprintln!(
            "  {} ({}) failed: {}",
            short(&sha),
            check.refs.join(", "),
            names.join(", ")
        );
        for n in names {
            eprintln!("    reproduce: checkdef run --rev {sha} --segment {n} -v");
        }
    }
    eprintln!("  bypass (not recommended): git push --no-verify, or CHECKDEF_SKIP=1 git push");
    Ok(Code::Failed)
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

fn short_owned(s: &str) -> String {
    short(s).to_owned()
}
