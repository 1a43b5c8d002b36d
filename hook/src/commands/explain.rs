//! `checkdef explain SEGMENT [--rev REV | --worktree]`: print the segment's canonical manifest
//! (the exact text its input hash is computed from) on stdout, and on stderr its input hash,
//! store path and — when the local cache does not have its result — exactly what changed since
//! the most recent result of that segment in the local cache: inputs added, removed or
//! modified (by blob id), mode changes, environment, fingerprint outputs, command, sandbox and
//! platform (see [`crate::manifest::diff`]).
//!
//! "Most recent" is the newest `<cache>/*.narinfo` (by modification time; hits refresh it)
//! whose store path is named `checkdef-<SEGMENT>`, other than the segment's current store path,
//! that unpacks to a valid result. `checkdef plan --explain` and `checkdef run --json` use the
//! same comparison, one line per segment.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;
use cache_proto::nar::{self, NarLimits};
use cache_proto::narinfo::NarInfo;
use cache_proto::store::{FileStore, Trust};

use super::plan::{local_cache_dir, open_context, plan_error, resolve_target};
use crate::cli::ExplainArgs;
use crate::exit::{Code, usage};
use crate::manifest::{self, ManifestDiff};
use crate::plan::{self, Plan, SegmentPlan, Status};
use crate::result::StoredResult;

/// An earlier result of a segment, read from the local cache.
#[derive(Debug, Clone)]
pub struct Previous {
    pub store_path: String,
    pub result: StoredResult,
    pub modified: SystemTime,
}

/// The most recent valid result named `checkdef-<segment>` in the local cache `dir`, other than
/// `current_store_path`. Must not be called from inside a tokio runtime.
pub fn previous_result(dir: &Path, segment: &str, current_store_path: &str) -> Option<Previous> {
    let name = format!("checkdef-{segment}");
    let current = plan::hash_part(current_store_path);
    let mut candidates: Vec<(SystemTime, PathBuf, NarInfo)> = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(stem) = file_name.strip_suffix(".narinfo") else {
            continue;
        };
        if stem.starts_with('.') || stem == current {
            continue;
        }
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(info) = NarInfo::parse(&text) else {
            continue;
        };
        if info.store_path.name() != name || info.store_path.hash_part() != stem {
            continue;
        }
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        candidates.push((mtime, path, info));
    }
    if candidates.is_empty() {
        return None;
    }
    // Newest first; equal times by path so the choice is stable.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let store = FileStore::new(dir).with_trust(Trust::Local);
    let limits = NarLimits::default();
    for (modified, _, info) in candidates {
        let Ok(Some(fetched)) = rt.block_on(store.fetch(&info.store_path, &limits)) else {
            continue;
        };
        let Ok(node) = nar::parse(&fetched.nar[..], &limits) else {
            continue;
        };
        let Ok(result) = StoredResult::from_nar(node) else {
            continue;
        };
        if result
            .validate_hit(segment, &result.record.input_hash)
            .is_err()
        {
            continue;
        }
        return Some(Previous {
            store_path: info.store_path.to_string(),
            result,
            modified,
        });
    }
    None
}

/// Why `seg` misses compared with its most recent local result: `Ok(Some(diff))`, `Ok(None)`
/// when there is no earlier result, `Err(reason)` when the earlier manifest cannot be read.
pub fn compare(dir: &Path, seg: &SegmentPlan) -> Result<Option<(Previous, ManifestDiff)>, String> {
    let Some(prev) = previous_result(dir, &seg.name, &seg.store_path) else {
        return Ok(None);
    };
    let diff = manifest::diff_texts(&prev.result.manifest, &seg.manifest())
        .map_err(|e| format!("the earlier result's manifest cannot be compared ({e})"))?;
    Ok(Some((prev, diff)))
}

/// The one-line explanation of a miss, or `None` when no earlier result exists.
pub fn summary_line(dir: Option<&Path>, seg: &SegmentPlan) -> Option<String> {
    match compare(dir?, seg) {
        Ok(Some((_, d))) => Some(d.summary()),
        Ok(None) => None,
        Err(e) => Some(e),
    }
}

/// `checkdef plan --explain`: one line per missing segment.
pub fn plan_lines(plan: &Plan, statuses: &[Status]) -> String {
    let dir = local_cache_dir();
    let mut out = String::new();
    for (s, st) in plan.segments.iter().zip(statuses) {
        if *st != Status::Miss {
            continue;
        }
        let line = summary_line(dir.as_deref(), s)
            .unwrap_or_else(|| "no earlier result in the local cache".to_owned());
        out.push_str(&format!("{}: {line}\n", s.name));
    }
    out
}

/// Add `"explain"` to each segment of a `checkdef run --json` document: for segments that ran,
/// the one-line summary of what changed since their most recent earlier local result (`null`
/// when there is none); `null` for cached segments.
pub fn annotate_run_json(doc: &mut serde_json::Value, plan: &Plan) {
    let dir = local_cache_dir();
    let Some(segs) = doc.get_mut("segments").and_then(|s| s.as_array_mut()) else {
        return;
    };
    for s in segs {
        let ran = s.get("source").and_then(|v| v.as_str()) == Some("run");
        let explain = match (ran, s.get("name").and_then(|n| n.as_str())) {
            (true, Some(name)) => plan
                .segment(name)
                .and_then(|seg| summary_line(dir.as_deref(), seg)),
            _ => None,
        };
        if let Some(obj) = s.as_object_mut() {
            obj.insert("explain".to_owned(), explain.into());
        }
    }
}

/// The human explanation printed on stderr by `checkdef explain`.
pub fn render_explanation(dir: Option<&Path>, seg: &SegmentPlan, status: Status) -> String {
    let mut out = format!(
        "input hash {}\nstore path {}\n",
        seg.input_hash, seg.store_path
    );
    match status {
        Status::HitLocal => {
            out.push_str("hit: the local cache has this result\n");
            return out;
        }
        Status::HitRemote => {
            out.push_str("hit: the remote cache has this result (signed by a trusted key)\n");
            return out;
        }
        Status::Miss => {}
    }
    let Some(dir) = dir else {
        out.push_str("miss: no local cache directory (set CHECKDEF_CACHE_DIR or HOME)\n");
        return out;
    };
    match compare(dir, seg) {
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
                .as_deref()
                .map(|c| {
                    let (id, rest) = c.split_at(c.find('+').unwrap_or(c.len()));
                    format!(", commit {}{rest}", &id[..id.len().min(12)])
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

pub fn run(config_flag: Option<&Path>, args: &ExplainArgs) -> Result<Code> {
    let ctx = open_context(config_flag)?;
    if ctx.config.segment(&args.segment).is_none() {
        let names: Vec<&str> = ctx
            .config
            .segments
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        return Err(usage(format!(
            "no segment named `{}` in {}\nhint: segments are: {}",
            args.segment,
            ctx.config.path.display(),
            names.join(", ")
        )));
    }
    let target = resolve_target(&ctx.repo, &args.target)?;
    let plan = plan::build_plan_filtered(&ctx.repo, &ctx.config, &target, None, |s| {
        s.name == args.segment
    })
    .map_err(plan_error)?;
    let seg = plan.segment(&args.segment).expect("selected above");
    let mut out = std::io::stdout().lock();
    out.write_all(seg.manifest().as_bytes())?;
    out.flush()?;
    let status = super::plan::lookup_status(&ctx.config, &plan)?
        .first()
        .copied()
        .unwrap_or(Status::Miss);
    eprint!(
        "{}",
        render_explanation(local_cache_dir().as_deref(), seg, status)
    );
    if let Some(line) = last_run_line(&ctx.repo, seg) {
        eprintln!("{line}");
    }
    Ok(Code::Success)
}

/// What the segment's last sandboxed run read without declaring it (see `run/view.rs`).
fn last_run_line(repo: &crate::git::Repo, seg: &SegmentPlan) -> Option<String> {
    let cache = local_cache_dir()?;
    let root = repo
        .workdir()
        .and_then(|w| w.canonicalize().ok())
        .unwrap_or_else(|| repo.git_dir().to_path_buf());
    let store = crate::run::view::store_for(&cache, &root);
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
