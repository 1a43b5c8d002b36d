//! `checkdef explain SEGMENT [--rev REV | --worktree]`: print the segment's canonical manifest
//! (the exact text its input hash is computed from) on stdout. Diffing two manifests answers
//! "why did this miss?".
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;

use super::plan::{open_context, plan_error, resolve_target};
use crate::cli::ExplainArgs;
use crate::exit::{Code, usage};
use crate::plan;

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
    out.write_all(seg.manifest.as_bytes())?;
    out.flush()?;
    eprintln!(
        "input hash {}\nstore path {}",
        seg.input_hash, seg.store_path
    );
    Ok(Code::Success)
}
