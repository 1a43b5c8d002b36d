//! Background runs: `checkdef warm [--rev REV]` (pre-warming, also what the post-commit hook
//! calls), the checks a push hands on at its budget, and the hidden `__background` stage both
//! start. See [`crate::background`] for the records and locks.
//!
//! A background run is checkdef re-executed as `checkdef __background ...`, detached from
//! whatever started it: stdin is `/dev/null` and stdout/stderr go to its log in the local cache
//! (so it never holds git's pipes, and `git push` / `git commit` return while it runs), and its
//! first act is `setsid`, so it has its own session and process group (a Ctrl-C or a hangup
//! of the terminal the push ran in does not reach it). Its checks run under the usual
//! supervisor, so they never outlive it; killed (even by SIGKILL), it releases its locks.
use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{Context as _, Result};
use gix::ObjectId;

use crate::background::{self, Reason, Record, SegmentEnd, State};
use crate::cache::{self, Caches};
use crate::cli::{BackgroundArgs, WarmArgs};
use crate::config::{Config, FILE_NAME};
use crate::context::{Context, config_error, plan_error, resolve_rev};
use crate::exit::{Code, usage};
use crate::git::{Repo, Target};
use crate::printer::Style;
use crate::report::{self, HumanReporter};
use crate::run;

/// The hidden subcommand of a background run.
pub const STAGE: &str = "__background";

/// `checkdef warm`: start REV's checks in the background and return at once.
pub fn warm(ctx: &Context, args: &WarmArgs) -> Result<Code> {
    let repo = ctx.open_repo()?;
    let rev = args.rev.as_deref().unwrap_or("HEAD");
    let commit = resolve_rev(&repo, rev)?;
    let id = background::new_id();
    let log = spawn(ctx, &repo, commit, &[], Reason::Warm, &id)?;
    ctx.printer.info(&format!(
        "checkdef: warming {} in the background (at low priority); `checkdef status` shows it, log: {}",
        &commit.to_string()[..12],
        log.display()
    ));
    Ok(Code::Success)
}

/// Start a detached background run of `segments` (all of them when empty) of `commit`;
/// returns its log's path at once.
pub fn spawn(
    ctx: &Context,
    repo: &Repo,
    commit: ObjectId,
    segments: &[String],
    reason: Reason,
    id: &str,
) -> Result<PathBuf> {
    let local = cache::private_local_dir(&ctx.settings)?;
    let dir = background::runs_dir(&local);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = background::log_path(&local, id);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the checkdef binary")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = &ctx.settings.config_flag {
        let c = std::path::absolute(c).unwrap_or_else(|_| c.to_path_buf());
        cmd.arg("--config").arg(c);
    }
    cmd.arg(STAGE)
        .arg("--id")
        .arg(id)
        .arg("--reason")
        .arg(reason.as_str())
        .arg("--rev")
        .arg(commit.to_string());
    for s in segments {
        cmd.arg("--segment").arg(s);
    }
    cmd.current_dir(repo.root())
        // A commit hook's index (a lock file while `git commit` runs) is not this run's.
        .env_remove("GIT_INDEX_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    // Not waited for: it outlives this process (and is reparented when this one exits); the
    // sweep of orphans at the end of this command leaves it alone.
    let child = cmd.spawn().context("starting the background run")?;
    crate::process::detached(child.id());
    Ok(log_path)
}

/// The `__background` stage.
pub fn background_main(ctx: &Context, args: &BackgroundArgs) -> Result<Code> {
    // Its own session: no terminal signals, not in the push's process group.
    let _ = rustix::process::setsid();
    if args.reason == Reason::Warm {
        lower_priority();
    }
    let local = cache::private_local_dir(&ctx.settings)?;
    let _life = background::hold_life_lock(&local, &args.id)
        .with_context(|| format!("locking the record of background run {}", args.id))?;
    let repo = ctx.open_repo()?;
    let commit = resolve_rev(&repo, &args.rev)?;
    let mut record = Record {
        version: 1,
        id: args.id.clone(),
        pid: std::process::id(),
        reason: args.reason,
        commit: commit.to_string(),
        repo: repo.root().to_path_buf(),
        requested: args.segments.clone(),
        started_at: background::now_secs(),
        finished_at: None,
        segments: Vec::new(),
        reported: false,
        superseded: false,
    };
    background::save(&local, &record)?;
    let _turn = if args.reason == Reason::Warm {
        let turn = background::wait_warm_turn(&local).context("waiting for the warm lock")?;
        if background::newer_warm(&local, &record.repo, &record.id) {
            record.superseded = true;
            record.reported = true; // nothing to say
            record.finished_at = Some(background::now_secs());
            background::save(&local, &record)?;
            ctx.printer
                .line("checkdef: superseded by a newer warm of this repository; nothing run");
            return Ok(Code::Success);
        }
        Some(turn)
    } else {
        None
    };
    let outcome = run_commit(ctx, &repo, commit, &args.segments);
    let code = match outcome {
        Ok(report) => {
            record.segments = report
                .segments
                .iter()
                .map(|s| SegmentEnd {
                    name: s.name.clone(),
                    status: s.status().as_str().to_owned(),
                    source: s.origin.as_str().to_owned(),
                    reason: s.reason(),
                })
                .collect();
            if report.all_passed() {
                Code::Success
            } else {
                Code::Failed
            }
        }
        Err(e) => {
            ctx.printer.error(&e);
            record.segments = vec![SegmentEnd {
                name: "(all)".into(),
                status: "failed".into(),
                source: "run".into(),
                reason: Some(format!("{e:#}")),
            }];
            Code::from_error(&e)
        }
    };
    record.finished_at = Some(background::now_secs());
    background::save(&local, &record)?;
    background::prune(&local);
    Ok(code)
}

fn run_commit(
    ctx: &Context,
    repo: &Repo,
    commit: ObjectId,
    segments: &[String],
) -> Result<run::RunReport> {
    let config = match &ctx.settings.config_flag {
        Some(_) => ctx.load_config(repo).map_err(|e| config_error(&e))?,
        None => {
            let Some((_, _, text)) = repo.root_file_at(commit, FILE_NAME)? else {
                return Err(usage(format!(
                    "commit {commit} has no {FILE_NAME}: nothing to check"
                )));
            };
            let text = String::from_utf8(text)
                .map_err(|_| usage(format!("{commit}:{FILE_NAME} is not UTF-8")))?;
            let name = PathBuf::from(format!("{}:{FILE_NAME}", &commit.to_string()[..12]));
            Config::parse(&text, &name).map_err(|e| usage(e.to_string()))?
        }
    };
    let target = Target::Commit(commit);
    let selected = |s: &crate::config::Segment| segments.is_empty() || segments.contains(&s.name);
    let plan = ctx
        .plan(repo, &config, &target, None, selected)
        .map_err(plan_error)?;
    let caches = Caches::open(ctx.cache_settings(&config.cache)?)?;
    let opts = super::run_options(ctx, &config);
    let reporter = Arc::new(HumanReporter::for_plan(ctx.printer, false, &plan));
    let rt = ctx.runtime()?;
    let report = rt.block_on(async {
        let (tx, rx) = run::interrupt_channel();
        run::watch_signals(tx);
        run::run_plan(repo, &plan, caches, &opts, rx, reporter).await
    })?;
    ctx.printer
        .line(&report::summary_line(&report, &ctx.printer.style()));
    Ok(report)
}

/// Pre-warming must not slow down what the developer does meanwhile: the lowest CPU priority
/// (nice 19) and the idle I/O class, inherited by every check it starts. Best effort.
fn lower_priority() {
    let _ = rustix::process::nice(19);
    // ioprio_set(IOPRIO_WHO_PROCESS, 0 = this process, IOPRIO_CLASS_IDLE << 13): rustix has no
    // wrapper for it, and it takes only integers.
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    #[allow(unsafe_code)]
    // SAFETY: a raw syscall with three integer arguments and no memory passed to the kernel.
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// Say how the background runs that ended since the last command ended: a failure loudly, a
/// run that died (killed) as a warning, a pass in one line. Called before every command.
pub fn report_ended(ctx: &Context) {
    let Some(local) = ctx.settings.cache_path() else {
        return;
    };
    if !background::runs_dir(local).is_dir() {
        return;
    }
    let style = ctx.printer.style();
    for (r, state) in background::unreported(local) {
        for line in ended_lines(&r, state, local, &style) {
            ctx.printer.line(&line);
        }
    }
}

fn ended_lines(r: &Record, state: State, local: &Path, style: &Style) -> Vec<String> {
    let sha = &r.commit[..r.commit.len().min(12)];
    let what = match r.reason {
        Reason::Deferred => format!("deferred from a push of {sha}"),
        Reason::Warm => format!("warming {sha}"),
    };
    let log = background::log_path(local, &r.id);
    let mut out = Vec::new();
    match state {
        State::Running => {}
        State::Died => out.push(style.yellow(&format!(
            "checkdef: warning: the background run {what} ({}) ended without finishing (killed?): its checks have no verdict\n  log: {}\n  run them: checkdef run --rev {}",
            r.repo.display(),
            log.display(),
            r.commit
        ))),
        State::Finished => {
            let failed = r.failed();
            if failed.is_empty() {
                out.push(style.dim(&format!(
                    "checkdef: the background run {what} finished: {} passed",
                    r.segments.len()
                )));
            } else {
                out.push(style.red(&style.bold(&format!(
                    "checkdef: A BACKGROUND CHECK FAILED ({what}, in {}):",
                    r.repo.display()
                ))));
                for f in failed {
                    out.push(style.red(&format!(
                        "  ❌ {}  FAILED  {}",
                        f.name,
                        f.reason.as_deref().unwrap_or("failed")
                    )));
                    out.push(format!(
                        "    reproduce: checkdef run --rev {} --segment {} -v",
                        r.commit, f.name
                    ));
                }
                if r.reason == Reason::Deferred {
                    out.push(style.red(
                        "  that commit was pushed without this verdict: fix it and push again",
                    ));
                }
                out.push(format!("  log: {}", log.display()));
            }
        }
    }
    out
}

/// `checkdef status` rows: the running and the most recent background runs.
pub fn status_lines(ctx: &Context, limit: usize) -> Vec<String> {
    let Some(local) = ctx.settings.cache_path() else {
        return Vec::new();
    };
    background::list(local)
        .into_iter()
        .take(limit)
        .map(|(r, state)| {
            let sha = &r.commit[..r.commit.len().min(12)];
            let what = match &r.requested[..] {
                [] => "all segments".to_owned(),
                names => names.join(", "),
            };
            let how = match state {
                State::Running => format!("running (pid {})", r.pid),
                State::Died => "ended without finishing (killed?)".to_owned(),
                State::Finished if r.superseded => {
                    "superseded by a newer warm (not run)".to_owned()
                }
                State::Finished => {
                    let failed: Vec<&str> = r.failed().iter().map(|s| s.name.as_str()).collect();
                    if failed.is_empty() {
                        format!("finished: {} passed", r.segments.len())
                    } else {
                        format!("FAILED: {}", failed.join(", "))
                    }
                }
            };
            format!(
                "{} {sha} ({what}): {how}; log {}",
                r.reason.as_str(),
                background::log_path(local, &r.id).display()
            )
        })
        .collect()
}
