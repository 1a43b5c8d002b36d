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
use anyhow::Result;

use crate::cli::PlanArgs;
use crate::config::Config;
use crate::context::{Context, plan_error, resolve_rev, resolve_target};
use crate::exit::Code;
use crate::git::Target;
use crate::plan::{self, CacheState, JSON_VERSION, Plan};

/// Each segment's cache status, from the same verified lookups `checkdef run` makes: the
/// local cache first, then the remote (signature, hashes and result checked). Entries that
/// exist but fail a check are misses, with the warning printed on stderr.
/// The caches come back too, for `--explain`.
pub fn lookup_status(
    ctx: &Context,
    config: &Config,
    plan: &Plan,
) -> Result<(Vec<CacheState>, std::sync::Arc<crate::cache::Caches>)> {
    let settings = ctx.cache_settings(&config.cache)?;
    let caches = crate::cache::Caches::open(settings)?;
    let rt = ctx.runtime()?;
    let lookups = rt.block_on(crate::run::lookup_all(&caches, &plan.segments, false));
    let statuses = lookups
        .into_iter()
        .map(|(l, _)| {
            for w in &l.warnings {
                ctx.printer.warn(w);
            }
            match l.hit.map(|h| h.source) {
                Some(crate::cache::Source::Local) => CacheState::HitLocal,
                Some(crate::cache::Source::Remote) => CacheState::HitRemote,
                None => CacheState::Miss,
            }
        })
        .collect();
    Ok((statuses, caches))
}

pub fn run(ctx: &Context, args: &PlanArgs) -> Result<Code> {
    let ws = ctx.open_workspace()?;
    let target = resolve_target(&ws.repo, &args.target)?;
    let base = args
        .base
        .as_deref()
        .map(|b| resolve_rev(&ws.repo, b))
        .transpose()?;
    let plan = ctx
        .plan(&ws.repo, &ws.config, &target, base, |_| true)
        .map_err(plan_error)?;
    for w in plan::unmatched_warnings(&plan) {
        ctx.printer.warn(&w);
    }
    let (statuses, caches) = lookup_status(ctx, &ws.config, &plan)?;
    if args.json {
        let doc = to_json(&plan, &statuses);
        let mut text = serde_json::to_string(&doc)?;
        text.push('\n');
        ctx.printer.stdout(text)?;
    } else {
        ctx.printer.text(&render_table(&plan, &statuses));
    }
    if args.explain {
        ctx.printer
            .text(&super::explain::plan_lines(&caches, &plan, &statuses));
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
    pub input_hash: crate::manifest::InputHash,
    pub store_path: String,
    pub touched: Option<bool>,
    pub status: &'static str,
}

/// Build the `--json` document.
pub fn to_json(plan: &Plan, statuses: &[CacheState]) -> PlanJson {
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
                input_hash: s.input_hash,
                store_path: s.store_path.to_string(),
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
pub fn render_table(plan: &Plan, statuses: &[CacheState]) -> String {
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
            s.input_hash.short(16),
            s.store_path.to_string(),
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
    let hits = statuses.iter().filter(|s| **s != CacheState::Miss).count();
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
