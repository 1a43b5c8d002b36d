//! `checkdef explain SEGMENT [--rev REV | --worktree]`: print the segment's canonical manifest
//! (the exact text its input hash is computed from) on stdout, and on stderr its input hash,
//! store path and — when the local cache does not have its result — exactly what changed since
//! the most recent result of that segment in the local cache: inputs added, removed or
//! modified (by blob id), mode changes, environment, fingerprint outputs, command, sandbox and
//! platform (see [`crate::manifest::diff`]).
//!
//! "Most recent" is the most recently used local entry named `checkdef-<SEGMENT>` (a hit
//! refreshes its stamp; `cache gc` evicts by the same time), other than the segment's current
//! store path, that passes every check a lookup applies (see `Caches::previous_result`). `checkdef plan --explain` and `checkdef run --json` use the
//! same comparison, one line per segment.
use std::path::Path;

use anyhow::Result;

use crate::cache::{Caches, Previous};
use crate::cli::ExplainArgs;
use crate::context::{Context, plan_error, resolve_target};
use crate::exit::{Code, usage_hint};
use crate::manifest::{self, ManifestDiff};
use crate::plan::{CacheState, Plan, SegmentPlan};

/// Why `seg` misses compared with its most recent local result: `Ok(Some(diff))`, `Ok(None)`
/// when there is no earlier result, `Err(reason)` when the earlier manifest cannot be read.
pub fn compare(
    caches: &Caches,
    seg: &SegmentPlan,
) -> Result<Option<(Previous, ManifestDiff)>, String> {
    let Some(prev) = caches.previous_result(&seg.name, &seg.store_path) else {
        return Ok(None);
    };
    let diff = manifest::diff_texts(&prev.result.manifest, &seg.manifest())
        .map_err(|e| format!("the earlier result's manifest cannot be compared ({e})"))?;
    Ok(Some((prev, diff)))
}

/// The one-line explanation of a miss, or `None` when no earlier result exists.
pub fn summary_line(caches: &Caches, seg: &SegmentPlan) -> Option<String> {
    match compare(caches, seg) {
        Ok(Some((_, d))) => Some(d.summary()),
        Ok(None) => None,
        Err(e) => Some(e),
    }
}

/// `checkdef plan --explain`: one line per missing segment.
pub fn plan_lines(caches: &Caches, plan: &Plan, statuses: &[CacheState]) -> String {
    let mut out = String::new();
    for (s, st) in plan.segments.iter().zip(statuses) {
        if *st != CacheState::Miss {
            continue;
        }
        let line = summary_line(caches, s)
            .unwrap_or_else(|| "no earlier result in the local cache".to_owned());
        out.push_str(&format!("{}: {line}\n", s.name));
    }
    out
}

/// The human explanation printed on stderr by `checkdef explain`.
pub fn render_explanation(caches: &Caches, seg: &SegmentPlan, status: CacheState) -> String {
    let mut out = format!(
        "input hash {}\nstore path {}\n",
        seg.input_hash, seg.store_path
    );
    match status {
        CacheState::HitLocal => {
            out.push_str("hit: the local cache has this result\n");
            return out;
        }
        CacheState::HitRemote => {
            out.push_str("hit: the remote cache has this result (signed by a trusted key)\n");
            return out;
        }
        CacheState::Miss => {}
    }
    let dir = caches.settings.local_dir.as_path();
    match compare(caches, seg) {
        Ok(None) => out.push_str(&format!(
            "miss: no earlier result of {} in the local cache {} to compare with\n",
            seg.name,
            dir.display()
        )),
        Err(e) => out.push_str(&format!("miss: {e}\n")),
        Ok(Some((prev, diff))) => {
            let commit = prev
                .result
                .record
                .commit
                .as_ref()
                .map(|c| {
                    let id = &c.id[..c.id.len().min(12)];
                    let worktree = if c.worktree { "+worktree" } else { "" };
                    format!(", commit {id}{worktree}")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "miss: compared with the most recent local result of {} ({}{commit}):\n",
                seg.name, prev.store_path
            ));
            for line in diff.details() {
                out.push_str("  ");
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str(&format!("summary: {}\n", diff.summary()));
        }
    }
    out
}

pub fn run(ctx: &Context, args: &ExplainArgs) -> Result<Code> {
    let ws = ctx.open_workspace()?;
    if ws.config.segment(&args.segment).is_none() {
        let names: Vec<&str> = ws.config.segments.iter().map(|s| s.name.as_str()).collect();
        return Err(usage_hint(
            format!(
                "no segment named `{}` in {}",
                args.segment,
                ws.config.path.display()
            ),
            format!("segments are: {}", names.join(", ")),
        ));
    }
    let target = resolve_target(&ws.repo, &args.target)?;
    let plan = ctx
        .plan(&ws.repo, &ws.config, &target, None, |s| {
            s.name == args.segment
        })
        .map_err(plan_error)?;
    let seg = plan.segment(&args.segment).expect("selected above");
    ctx.printer.stdout(seg.manifest())?;
    let (statuses, caches) = super::plan::lookup_status(ctx, &ws.config, &plan)?;
    let status = statuses.first().copied().unwrap_or(CacheState::Miss);
    let dir = ctx.settings.cache_path();
    ctx.printer.text(&render_explanation(&caches, seg, status));
    if let Some(line) = dir.and_then(|d| last_run_line(d, &ws.repo, seg)) {
        ctx.printer.line(&line);
    }
    Ok(Code::Success)
}

/// What the segment's last sandboxed run read without declaring it (see `run/view.rs`).
fn last_run_line(cache: &Path, repo: &crate::git::Repo, seg: &SegmentPlan) -> Option<String> {
    let root = repo
        .workdir()
        .and_then(|w| w.canonicalize().ok())
        .unwrap_or_else(|| repo.git_dir().to_path_buf());
    let store = crate::run::view::store_for(cache, &root);
    let rec = crate::run::view::load_last_run(&store, &seg.name)?;
    let when = if rec.input_hash == seg.input_hash {
        "these inputs"
    } else {
        "other inputs"
    };
    // Silent when there were none: explain's output is about what needs attention.
    (!rec.undeclared.is_empty()).then(|| {
        format!(
            "undeclared reads in the last run: {} ({when}; add them to include)",
            rec.undeclared.join(", ")
        )
    })
}
