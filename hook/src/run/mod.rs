//! The engine behind `checkdef run` and the pre-push hook: look every selected segment up
//! (local cache, then remote, all concurrently), run the misses in parallel — each in a fresh
//! directory holding only its inputs — and store (and push) the passing results.
pub mod durations;
pub mod events;
pub mod exec;
pub mod isolate;
pub mod json;
pub mod lines;
pub mod sandbox;
pub mod startup_probe;
pub mod supervise;
pub mod sweep;
pub mod view;
pub mod warm;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use cache_proto::store_path::StorePath;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;

use crate::cache::{Caches, Lookup, Source};
use crate::config::{Runner, Sandbox};
use crate::context::{Env, SandboxSettings};
use crate::git::{Repo, Target};
use crate::manifest::InputHash;
use crate::plan::{Plan, SegmentPlan};
use crate::result::{RESULT_FORMAT, ResultRecord, SourceCommit, Status, StoredResult};

pub use events::{Event, Reporter, Warning};
pub use exec::Verdict;
use exec::{ExecSpec, LineSink};
use lines::Piece;

/// Options of one engine invocation.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub jobs: usize,
    pub push: bool,
    /// Read every local hit's log (for `-v` and `--junit`); otherwise a stamped local hit
    /// costs a few `stat`s and reports no log.
    pub hit_logs: bool,
    /// checkdef's environment: where `PATH` and the passthrough variables of a check come from,
    /// and the values `redact_env` names.
    pub env: Env,
    /// Where sandboxes go and how they are made.
    pub sandbox: SandboxSettings,
    /// The binary providing the supervisor stage of every check (`__supervise`):
    /// [`exec::SELF_EXE`] in checkdef, the checkdef binary when a test drives the library.
    pub supervisor: PathBuf,
    /// `[defaults] redact_env`: variables whose values are replaced by `[redacted:NAME]` in
    /// every log before it is stored, pushed or printed as a failure tail.
    pub redact_env: Vec<String>,
    /// `--force`: look nothing up, run every segment (passes are stored; an entry already in
    /// the cache is kept, entries being immutable).
    pub force: bool,
    /// The push's budget: when this instant passes, the checks still running are stopped and
    /// those not started are not started; both end as [`Verdict::OverBudget`] (with the budget
    /// it came from), never stored. `None`: no limit.
    pub deadline: Option<(Instant, Duration)>,
    /// Warn before starting when the misses are expected to take longer than
    /// [`SLOW_OVER_SSH`] (a push over SSH without a budget).
    pub warn_if_slow: bool,
}

/// Above this expected time for a push's misses, a push over SSH without a budget is warned:
/// hosted remotes close an idle SSH session after a few minutes (docs/hook.md#the-push-budget).
pub const SLOW_OVER_SSH: Duration = Duration::from_secs(180);

/// Where a segment's verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache(Source),
    Run,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Cache(s) => s.as_str(),
            Origin::Run => "run",
        }
    }
}

/// What became of one segment.
#[derive(Debug, Clone)]
pub struct SegmentOutcome {
    pub name: String,
    /// Passed (run here, or a cached pass), or how it failed; its status, exit code and
    /// reason follow from it.
    pub verdict: Verdict,
    pub origin: Origin,
    /// Time spent on it in this invocation (lookup or run).
    pub duration_s: f64,
    /// Duration of the run that produced a cached result.
    pub original_duration_s: Option<f64>,
    pub input_hash: InputHash,
    pub store_path: StorePath,
    pub signed_by: Option<String>,
    pub log: Vec<u8>,
    pub warnings: Vec<String>,
    /// How the check ran (`None` for cached results) ...
    pub runner: Option<Runner>,
    /// ... and, when it ran fresh although its segment allows the warm runner, why.
    pub runner_note: Option<String>,
}

/// Everything one invocation decided.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub commit: Option<String>,
    pub segments: Vec<SegmentOutcome>,
    pub wall_s: f64,
    pub interrupted: bool,
    /// How many checks could run at once (`--jobs`), for [`RunReport::seconds_saved`].
    pub jobs: usize,
}

impl SegmentOutcome {
    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }

    pub fn status(&self) -> Status {
        self.verdict.status()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.verdict.exit_code()
    }

    /// Why it failed, as the checklist, JSON and JUnit say it (`None` when it passed).
    pub fn reason(&self) -> Option<String> {
        self.verdict.reason()
    }
}

impl RunReport {
    pub fn passed(&self) -> usize {
        self.segments.iter().filter(|s| s.passed()).count()
    }
    pub fn failed(&self) -> usize {
        self.segments.iter().filter(|s| !s.passed()).count()
    }
    /// Checks that started here (one stopped before its turn has no runner: it never ran).
    pub fn ran(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.origin == Origin::Run && s.runner.is_some())
            .count()
    }
    pub fn cached(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s.origin, Origin::Cache(_)))
            .count()
    }
    /// How much longer this run would have taken had the cached segments run again: every
    /// segment's duration (a cached one's original run) scheduled in order on `jobs` slots, as
    /// the runner schedules its checks, minus this run's wall time; never negative. Adding the
    /// cached durations up instead would count segments that run side by side twice, and claim
    /// more than a plain run of everything takes.
    pub fn seconds_saved(&self) -> f64 {
        if self.cached() == 0 {
            return 0.0;
        }
        let mut slots = vec![0.0_f64; self.jobs.max(1)];
        for s in &self.segments {
            let d = match s.origin {
                Origin::Cache(_) => s.original_duration_s.unwrap_or(0.0),
                Origin::Run => s.duration_s,
            };
            if let Some(free) = slots.iter_mut().min_by(|a, b| a.total_cmp(b)) {
                *free += d.max(0.0);
            }
        }
        let without = slots.iter().copied().fold(0.0, f64::max);
        (without - self.wall_s).max(0.0)
    }
    pub fn all_passed(&self) -> bool {
        !self.interrupted && self.failed() == 0
    }
}

/// A cancellation switch flipped by Ctrl-C or SIGTERM.
/// Flipped already when a signal came before the run (during the plan).
pub fn interrupt_channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(crate::signals::received().is_some())
}

/// Listen for SIGINT/SIGTERM (see [`crate::signals`], installed when the command started) and
/// flip `tx`. Must be called inside the runtime.
pub fn watch_signals(tx: watch::Sender<bool>) {
    let _ = crate::signals::install();
    tokio::spawn(async move {
        crate::signals::wait().await;
        let _ = tx.send(true);
    });
}

/// Look every segment up, with the time each lookup took: the local cache a few segments at a
/// time (its reads and hashing run on tokio's blocking pool, which starts a thread for every
/// task no idle thread can take: 100 lookups at once started 300 threads), then every local
/// miss at the remote at once. With `need_log`, local hits carry their logs (see
/// [`Caches::lookup_local`]). Used by `run` and by `plan`/`explain` for their statuses.
pub async fn lookup_all(
    caches: &Arc<Caches>,
    segments: &[SegmentPlan],
    need_log: bool,
) -> Vec<(Lookup, f64)> {
    let local: Vec<(Lookup, f64)> = futures_util::stream::iter(segments.iter().map(|s| {
        let caches = caches.clone();
        async move {
            let t = Instant::now();
            let mut lookup = caches
                .lookup_local(&s.store_path, &s.name, &s.input_hash, need_log)
                .await;
            if let Some(hit) = &mut lookup.hit {
                // Callers need a hit's record and log; its manifest (as long as the segment's
                // inputs) was checked against the input hash. Free it now, so the next lookups
                // reuse the memory instead of faulting in fresh pages.
                hit.result.manifest = String::new();
            }
            (lookup, t.elapsed().as_secs_f64())
        }
    }))
    .buffered(local_lookup_parallelism())
    .collect()
    .await;
    futures_util::future::join_all(segments.iter().zip(local).map(|(s, (lookup, took))| {
        let caches = caches.clone();
        async move {
            if lookup.hit.is_some() || !caches.has_remote() {
                return (lookup, took);
            }
            let t = Instant::now();
            let mut lookup = caches
                .lookup_remote(&s.store_path, &s.name, &s.input_hash, lookup.warnings)
                .await;
            if let Some(hit) = &mut lookup.hit {
                hit.result.manifest = String::new(); // as for local hits
            }
            (lookup, took + t.elapsed().as_secs_f64())
        }
    }))
    .await
}

/// Run the engine over `plan` (whose segments are already the selected ones), telling
/// `reporter` what happens.
pub async fn run_plan(
    repo: &Repo,
    plan: &Plan,
    caches: Arc<Caches>,
    opts: &RunOptions,
    cancel: watch::Receiver<bool>,
    reporter: Arc<dyn Reporter>,
) -> Result<RunReport> {
    let started = Instant::now();
    let commit = commit_label(plan);
    let warn = |w: &str| reporter.report(Event::Warning(Warning::plain(w)));

    for w in snapshot_warnings(plan) {
        warn(&w);
    }

    // 1. Every lookup, within one fresh remote budget.
    let lookups = look_up(&caches, plan, opts).await;

    let mut outcomes: Vec<Option<SegmentOutcome>> = vec![None; plan.segments.len()];
    let mut misses = Vec::new();
    for (i, (s, (lookup, took))) in plan.segments.iter().zip(lookups).enumerate() {
        for w in &lookup.warnings {
            warn(w);
        }
        match lookup.hit {
            Some(hit) => {
                let o = cached_outcome(s, hit, took, lookup.warnings);
                reporter.report(Event::Cached(&o));
                outcomes[i] = Some(o);
            }
            None => misses.push((i, lookup.warnings)),
        }
    }

    // 2. Misses, `jobs` at a time, the longest expected first (see [`durations::order`]),
    // each in its sandbox, after removing what killed runs left in the sandbox directory.
    let mut history =
        (!misses.is_empty()).then(|| durations::History::load(&caches.settings.local_dir));
    if let Some(h) = &history {
        misses = order_misses(plan, misses, h, opts, &*reporter);
    }
    let views = if misses.is_empty() {
        None
    } else {
        let parent = opts.sandbox.parent_dir();
        if parent.to_str().is_none() {
            // A check is told its TMPDIR (a directory in there) as text: a lossy spelling would
            // name a directory that is not there.
            return Err(crate::exit::usage_hint(
                format!("the sandbox directory {} is not UTF-8", parent.display()),
                "set CHECKDEF_SANDBOX_DIR (or TMPDIR) to a directory whose path is UTF-8",
            ));
        }
        sweep::sweep(&parent);
        Some(Views::new(
            repo,
            plan,
            opts,
            &caches.settings.local_dir,
            &*reporter,
        )?)
    };
    // Declared before the running futures, which borrow it.
    let local = caches.settings.local_dir.clone();
    let mut queue = misses.into_iter();
    // Declared after the views (it lives in their directory) and before the running checks (so
    // its servers outlive them).
    let pool: Pool = std::cell::OnceCell::new();
    let jobs = opts.jobs.max(1);
    // `jobs` checks run at once; as many more are prepared meanwhile (input lock taken, sandbox
    // set up, a warm check's holder in it) and wait for a slot, so a check starts as soon as
    // another ends, even when two end together.
    let slots = tokio::sync::Semaphore::new(jobs);
    let slots = &slots;
    let mut running = FuturesUnordered::new();
    // Results being stored, while the next checks start; the checks in the order they ended,
    // and the results stored but not reported yet.
    let mut finishing = FuturesUnordered::new();
    let mut ended: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut stored: std::collections::HashMap<usize, (SegmentOutcome, bool)> =
        std::collections::HashMap::new();
    let mut interrupted = *cancel.borrow();
    // What the checks see: flipped on Ctrl-C/SIGTERM (forwarded from `cancel`) or when the
    // budget runs out. Which of the two it was is `interrupted` / `over_budget`.
    let (stop_tx, stop_rx) = watch::channel(interrupted);
    let mut user_cancel = cancel.clone();
    let mut over_budget = opts
        .deadline
        .is_some_and(|(d, _)| Instant::now() >= d && queue.len() > 0);
    let budget = opts.deadline.map(|(_, b)| b).unwrap_or_default();
    loop {
        while running.len() < 2 * jobs && !interrupted && !over_budget {
            let Some((i, warnings)) = queue.next() else {
                break;
            };
            let miss = Miss {
                repo,
                plan,
                seg: &plan.segments[i],
                views: views.as_ref().expect("views exist when there are misses"),
                opts,
                caches: &caches,
                local: &local,
                reporter: &reporter,
                pool: &pool,
                slots,
            };
            let stop = stop_rx.clone();
            running.push(async move { (i, warnings, miss.start(stop).await) });
        }
        if running.is_empty() && finishing.is_empty() {
            break;
        }
        let next = tokio::select! {
            // A check that may start (or has ended) goes before storing a result: a slot is
            // never kept waiting for a signature, a compression or an upload.
            biased;
            Some(n) = running.next(), if !running.is_empty() => n,
            Some((i, o, cancelled)) = finishing.next(), if !finishing.is_empty() => {
                stored.insert(i, (o, cancelled));
                // Reported in the order the checks ended, whichever result was stored first.
                while let Some(&first) = ended.front()
                    && let Some((o, cancelled)) = stored.remove(&first)
                {
                    ended.pop_front();
                    reporter.report(Event::Finished {
                        outcome: &o,
                        interrupted: cancelled,
                    });
                    if !cancelled && let Some(h) = &mut history {
                        h.record(&plan.segments[first].name, o.duration_s);
                    }
                    outcomes[first] = Some(o);
                }
                continue;
            }
            _ = exec::wait_cancel(&mut user_cancel), if !interrupted => {
                interrupted = true;
                let _ = stop_tx.send(true);
                continue;
            }
            _ = sleep_until(opts.deadline.map(|(d, _)| d)), if !over_budget && !interrupted => {
                over_budget = true;
                let _ = stop_tx.send(true);
                continue;
            }
        };
        let (i, warnings, done) = next;
        let seg = &plan.segments[i];
        let (outcome, input_lock, runner, runner_note) = match done {
            Done::Cached(o) => {
                reporter.report(Event::Cached(&o));
                outcomes[i] = Some(o);
                continue;
            }
            Done::NotStarted => continue,
            Done::Ran(o, lock, runner, note) => (o, lock, runner, note),
        };
        let mut outcome = outcome;
        let cancelled = outcome.verdict.cancelled();
        if cancelled {
            if over_budget && !interrupted {
                outcome.verdict = Verdict::OverBudget(budget);
            } else {
                interrupted = true;
            }
        }
        let ran = Ran {
            outcome,
            cancelled,
            warnings,
            runner,
            runner_note,
        };
        let (views, caches, reporter) = (views.as_ref(), &caches, &*reporter);
        ended.push_back(i);
        finishing.push(async move {
            let o = finish_ran(plan, seg, ran, views, caches, opts, reporter).await;
            // Held until this check's result is stored.
            drop(input_lock);
            (i, o, cancelled)
        });
    }
    if let Some(mut h) = history {
        // Cached results' original durations predict the next miss of those segments.
        for o in outcomes.iter().flatten() {
            if let (Origin::Cache(_), Some(d)) = (o.origin, o.original_duration_s) {
                h.record(&o.name, d);
            }
        }
        h.save();
    }
    if interrupted || over_budget {
        not_started(plan, &mut outcomes, interrupted, budget, &*reporter);
    }
    // 3. Uploads that failed in earlier runs (a 401 before the credentials were set, an
    //    outage): retried now, so the team gets them although this run found them locally.
    if opts.push && !interrupted {
        for w in caches.retry_pending().await {
            warn(&w);
        }
    }
    // Part of the summary: printed with --quiet and --json too (on stderr).
    if let Some(line) = caches.upload_summary() {
        reporter.report(Event::Summary(&line));
    }
    Ok(RunReport {
        commit,
        segments: outcomes.into_iter().flatten().collect(),
        wall_s: started.elapsed().as_secs_f64(),
        interrupted,
        jobs: opts.jobs.max(1),
    })
}

/// Warnings about the snapshot itself: segments without inputs, patterns that match nothing.
fn snapshot_warnings(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .segments
        .iter()
        // Version files are every segment's inputs (see `plan.rs`): not what its globs matched.
        .filter(|s| {
            s.inputs
                .iter()
                .all(|i| crate::pyenv::is_version_file(i.path.as_ref()))
        })
        .map(|s| {
            format!(
                "segment {} matches no files in this snapshot; check its include globs",
                s.name
            )
        })
        .collect();
    out.extend(crate::plan::unmatched_warnings(plan));
    out
}

/// Every segment's lookup, within one fresh remote budget (`--force`: none, all misses).
async fn look_up(caches: &Arc<Caches>, plan: &Plan, opts: &RunOptions) -> Vec<(Lookup, f64)> {
    caches.begin_lookups();
    if opts.force {
        plan.segments
            .iter()
            .map(|_| {
                let nothing = Lookup {
                    hit: None,
                    warnings: Vec::new(),
                };
                (nothing, 0.0)
            })
            .collect()
    } else {
        lookup_all(caches, &plan.segments, opts.hit_logs).await
    }
}

/// A segment's passing result found in a cache (`took`: the lookup's time).
fn cached_outcome(
    seg: &SegmentPlan,
    hit: crate::cache::Hit,
    took: f64,
    warnings: Vec<String>,
) -> SegmentOutcome {
    SegmentOutcome {
        name: seg.name.clone(),
        verdict: Verdict::Passed,
        origin: Origin::Cache(hit.source),
        duration_s: took,
        original_duration_s: Some(hit.result.record.duration_s),
        input_hash: seg.input_hash,
        store_path: seg.store_path.clone(),
        signed_by: hit.signed_by,
        log: hit.result.log,
        warnings,
        runner: None,
        runner_note: None,
    }
}

/// The misses in the order they start: the longest expected first (see [`durations::order`]).
/// With [`RunOptions::warn_if_slow`], a warning when they are expected to take longer than
/// [`SLOW_OVER_SSH`].
fn order_misses(
    plan: &Plan,
    misses: Vec<(usize, Vec<String>)>,
    history: &durations::History,
    opts: &RunOptions,
    reporter: &dyn Reporter,
) -> Vec<(usize, Vec<String>)> {
    let expected: Vec<(Option<f64>, usize)> = misses
        .iter()
        .map(|(i, _)| {
            let seg = &plan.segments[*i];
            (history.get(&seg.name), seg.inputs.len())
        })
        .collect();
    let mut slots: Vec<Option<(usize, Vec<String>)>> = misses.into_iter().map(Some).collect();
    let ordered = durations::order(&expected)
        .into_iter()
        .filter_map(|k| slots[k].take())
        .collect();
    if opts.warn_if_slow {
        let known: Vec<f64> = expected.iter().filter_map(|(d, _)| *d).collect();
        let eta = expected_wall(&known, opts.jobs.max(1));
        if eta > SLOW_OVER_SSH.as_secs_f64() {
            let message = format!(
                "the checks to run are expected to take about {} (earlier runs), while git holds the SSH connection to the remote idle; hosted remotes close idle SSH sessions after a few minutes, and the push then fails after the checks",
                crate::duration::display(Duration::from_secs_f64(eta.round()))
            );
            reporter.report(Event::Warning(Warning {
                message: &message,
                hint: Some(
                    "set a budget, e.g. [hook] budget = \"3m\" with on-budget = \"defer\" in checkdef.toml (or CHECKDEF_BUDGET=3m), or run `checkdef run` (or `checkdef warm`) before pushing",
                ),
            }));
        }
    }
    ordered
}

/// The segments that never started, once the run was interrupted or ran out of budget: each
/// reported as failed (not run, or over the budget), never as passed.
fn not_started(
    plan: &Plan,
    outcomes: &mut [Option<SegmentOutcome>],
    interrupted: bool,
    budget: Duration,
    reporter: &dyn Reporter,
) {
    let verdict = if interrupted {
        Verdict::NotRun
    } else {
        Verdict::OverBudget(budget)
    };
    let mut log = verdict.log_marker(false).unwrap_or_default();
    log.push('\n');
    for (i, slot) in outcomes.iter_mut().enumerate() {
        if slot.is_none() {
            let seg = &plan.segments[i];
            let o = SegmentOutcome {
                name: seg.name.clone(),
                verdict: verdict.clone(),
                origin: Origin::Run,
                duration_s: 0.0,
                original_duration_s: None,
                input_hash: seg.input_hash,
                store_path: seg.store_path.clone(),
                signed_by: None,
                log: log.clone().into_bytes(),
                warnings: Vec::new(),
                runner: None,
                runner_note: None,
            };
            if !interrupted {
                reporter.report(Event::Finished {
                    outcome: &o,
                    interrupted: true,
                });
            }
            *slot = Some(o);
        }
    }
}

/// A check that ran here (or was stopped), as the scheduler hands it on.
struct Ran {
    /// Its outcome; a cancelled one's verdict already says whether the budget stopped it.
    outcome: exec::ExecOutcome,
    /// Stopped by Ctrl-C, SIGTERM or the budget: its log is partial, it is never stored.
    cancelled: bool,
    warnings: Vec<String>,
    runner: Runner,
    runner_note: Option<String>,
}

/// pytest's exit code when it collected no tests.
const PYTEST_NO_TESTS: i32 = 5;

/// A pytest check that collected no tests (exit 5) passes when its segment says `no_tests =
/// "pass"`, read nothing undeclared, and its log ends with pytest's own summary of a session
/// that ran no test ([`ran_no_test`]) — exit code 5 alone also comes from `pytest.exit(...,
/// returncode=5)` after a failure, or a test's `os._exit(5)`. Otherwise it fails as a fresh
/// pytest does, and its log says how to tell checkdef that a module skipped as a whole is
/// fine. `no_tests` is only ever `pass` for pytest checks (the configuration refuses it
/// elsewhere).
fn no_tests_rule(
    seg: &SegmentPlan,
    outcome: &mut exec::ExecOutcome,
    read_only_inputs: bool,
    reporter: &dyn Reporter,
) {
    if outcome.verdict != Verdict::Exit(PYTEST_NO_TESTS) {
        return;
    }
    let line: &[u8] = if seg.no_tests == crate::config::NoTests::Pass {
        if !read_only_inputs {
            return;
        }
        if !ran_no_test(&outcome.log) {
            b"[checkdef: exit 5, but the log does not end with pytest's summary of a session that ran no test (only skipped or deselected ones): a failure, whatever no_tests says]\n"
        } else {
            outcome.verdict = Verdict::Passed;
            b"[checkdef: pytest collected no tests (exit 5): passed, as the segment says no_tests = \"pass\"]\n"
        }
    } else if seg.command_is_pytest() {
        b"[checkdef: pytest collected no tests (exit 5), a failure; if the module is meant to be skipped as a whole here (an optional dependency is missing), set no_tests = \"pass\" on the segment]\n"
    } else {
        return;
    };
    if !outcome.log.is_empty() && !outcome.log.ends_with(b"\n") {
        outcome.log.push(b'\n');
    }
    outcome.log.extend_from_slice(line);
    // Whoever streams the output live sees the line too.
    if reporter.wants_output() {
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line));
        reporter.report(Event::Output {
            segment: &seg.name,
            piece: Piece::Line(text.as_bytes()),
        });
    }
}

/// Whether `log` ends (after blank lines) with pytest's summary line of a session in which no
/// test ran: `no tests ran in 0.01s`, or counts of skipped and deselected tests and warnings
/// only (`1 skipped, 2 deselected in 0.02s`), with or without the `=` rules around it. A
/// failure, an error, a pass, an xfail or anything pytest printed after its summary (the
/// `!!! Exit` banner of `pytest.exit`) is not such a session.
fn ran_no_test(log: &[u8]) -> bool {
    let text = String::from_utf8_lossy(log);
    let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return false;
    };
    let line = last.trim().trim_matches('=').trim();
    let Some((counts, time)) = line.rsplit_once(" in ") else {
        return false;
    };
    // `0.01s`, or `0.01s (0:00:00)` for long sessions.
    let secs = time.split(' ').next().unwrap_or("");
    if secs
        .strip_suffix('s')
        .is_none_or(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    {
        return false;
    }
    if counts == "no tests ran" {
        return true;
    }
    counts.split(", ").all(|part| {
        let mut words = part.split(' ');
        let (Some(n), Some(what), None) = (words.next(), words.next(), words.next()) else {
            return false;
        };
        n.bytes().all(|b| b.is_ascii_digit())
            && !n.is_empty()
            && matches!(what, "skipped" | "deselected" | "warning" | "warnings")
    })
}

/// The outcome of a check that ran: its undeclared reads (which fail it) named in its log and
/// warnings and recorded for `explain`, its log redacted and, when it was stopped, marked;
/// a pass stored (and pushed).
async fn finish_ran(
    plan: &Plan,
    seg: &SegmentPlan,
    ran: Ran,
    views: Option<&Views>,
    caches: &Caches,
    opts: &RunOptions,
    reporter: &dyn Reporter,
) -> SegmentOutcome {
    let Ran {
        mut outcome,
        cancelled,
        warnings,
        runner,
        runner_note,
    } = ran;
    // A read of a file of the snapshot that is not an input fails the check, named.
    let undeclared = views
        .map(|v| v.undeclared(seg, &outcome.log))
        .unwrap_or_default();
    for path in &undeclared {
        outcome.log.extend_from_slice(
            format!("checkdef: {}\n", undeclared_message(&seg.name, path)).as_bytes(),
        );
    }
    if let Some(v) = views
        && !cancelled
    {
        v.record(seg, &undeclared);
    }
    outcome.log = redact(&outcome.log, &redactions(&opts.redact_env, seg, &opts.env));
    if outcome.verdict.passed() && !undeclared.is_empty() {
        outcome.verdict = Verdict::UndeclaredReads(undeclared.len());
    }
    no_tests_rule(seg, &mut outcome, undeclared.is_empty(), reporter);
    let mut o = SegmentOutcome {
        name: seg.name.clone(),
        verdict: outcome.verdict,
        origin: Origin::Run,
        duration_s: outcome.duration.as_secs_f64(),
        original_duration_s: None,
        input_hash: seg.input_hash,
        store_path: seg.store_path.clone(),
        signed_by: None,
        log: outcome.log,
        warnings,
        runner: Some(runner),
        runner_note,
    };
    for path in &undeclared {
        let w = undeclared_message(&seg.name, path);
        reporter.report(Event::Undeclared { message: &w });
        o.warnings.push(w);
    }
    if cancelled {
        // Stopped by Ctrl-C, SIGTERM or the budget (its verdict says which): never stored.
        if let Some(marker) = o.verdict.log_marker(true) {
            o.log.push(b'\n');
            o.log.extend_from_slice(marker.as_bytes());
            o.log.push(b'\n');
        }
    } else if o.verdict == Verdict::Passed {
        // Only a complete, passing, uninterrupted run is ever stored.
        let stored = StoredResult {
            record: record_for(plan, seg, &o, caches, &opts.env),
            manifest: seg.manifest(),
            log: o.log.clone(),
        };
        match caches.store(&seg.store_path, &stored, opts.push).await {
            Ok(crate::cache::Stored::PushFailed(warning)) => {
                reporter.report(Event::Warning(Warning::plain(&warning)));
                o.warnings.push(warning);
            }
            Ok(crate::cache::Stored::Pushed { signer }) => o.signed_by = Some(signer),
            Ok(crate::cache::Stored::Local) => {}
            Err(e) => {
                let w = format!("could not store the result of {}: {e:#}", seg.name);
                reporter.report(Event::Warning(Warning::plain(&w)));
                o.warnings.push(w);
            }
        }
    }
    o
}

/// One miss to start, with what it needs of the run: its input lock (waiting for another
/// process's run of the same check, whose stored pass is then used), its sandbox prepared
/// ahead, then a slot, then the check.
struct Miss<'a> {
    repo: &'a Repo,
    plan: &'a Plan,
    seg: &'a SegmentPlan,
    views: &'a Views,
    opts: &'a RunOptions,
    caches: &'a Arc<Caches>,
    local: &'a std::path::Path,
    reporter: &'a Arc<dyn Reporter>,
    pool: &'a Pool,
    slots: &'a tokio::sync::Semaphore,
}

impl Miss<'_> {
    async fn start(self, stop: watch::Receiver<bool>) -> Done {
        let Miss {
            repo,
            plan,
            seg,
            views,
            opts,
            caches,
            local,
            reporter,
            pool,
            slots,
        } = self;
        // One run per input hash at a time, across processes: a check another checkdef (a
        // background run, a concurrent push) is running is waited for, and its stored result
        // used.
        let lock = match wait_for_input(local, seg, caches, stop.clone(), &**reporter).await {
            Waited::Lock(lock) => lock,
            Waited::Hit(o) => return Done::Cached(*o),
            Waited::Stopped => {
                return Done::Ran(exec::ExecOutcome::stopped(), None, Runner::Process, None);
            }
        };
        let prepared = prepare(repo, plan, seg, views, opts, reporter, Some(pool));
        let mut stopped = stop.clone();
        // A free slot, held until the check ends; `None`: stopped before one was free (reported
        // with those that never started). A warm check's holder sets its sandbox up meanwhile.
        let turn = async {
            tokio::select! {
                biased;
                _ = exec::wait_cancel(&mut stopped) => None,
                slot = slots.acquire() => {
                    let slot = slot.expect("the semaphore is never closed");
                    reporter.report(Event::Started { segment: &seg.name });
                    Some(slot)
                }
            }
        };
        let (outcome, runner, note) = match prepared {
            Ok(p) => {
                let fresh = || prepare(repo, plan, seg, views, opts, reporter, None);
                match run_prepared(p, stop, fresh, turn, pool).await {
                    Some(r) => r,
                    None => return Done::NotStarted,
                }
            }
            Err(e) => {
                let Some(_slot) = turn.await else {
                    return Done::NotStarted;
                };
                (
                    exec::ExecOutcome::not_started(format!("{e:#}")),
                    Runner::Process,
                    None,
                )
            }
        };
        Done::Ran(outcome, lock, runner, note)
    }
}

/// What one started miss came to.
enum Done {
    /// Another process ran it while we waited, and stored a pass.
    Cached(SegmentOutcome),
    /// Prepared, then stopped (Ctrl-C, the budget) before a slot was free: never started.
    NotStarted,
    /// It ran here (holding its input lock, released once its result is stored), or was
    /// stopped while it waited for another process's run.
    Ran(
        exec::ExecOutcome,
        Option<crate::background::InputLock>,
        Runner,
        Option<String>,
    ),
}

enum Waited {
    Lock(Option<crate::background::InputLock>),
    Hit(Box<SegmentOutcome>),
    Stopped,
}

/// Take `seg`'s input lock, waiting while another process holds it; after a wait, a result it
/// stored is used instead of running the check again. A lock that cannot be taken at all (the
/// cache directory is read-only) runs the check without one.
async fn wait_for_input(
    local: &std::path::Path,
    seg: &SegmentPlan,
    caches: &Arc<Caches>,
    mut stop: watch::Receiver<bool>,
    reporter: &dyn Reporter,
) -> Waited {
    use crate::background::InputLock;
    let mut waited = false;
    loop {
        match InputLock::try_acquire(local, &seg.input_hash) {
            Ok(Some(lock)) if !waited => return Waited::Lock(Some(lock)),
            Ok(Some(lock)) => {
                let t = Instant::now();
                let lookup = caches
                    .lookup_local(&seg.store_path, &seg.name, &seg.input_hash, false)
                    .await;
                if let Some(hit) = lookup.hit {
                    let took = t.elapsed().as_secs_f64();
                    return Waited::Hit(Box::new(cached_outcome(seg, hit, took, lookup.warnings)));
                }
                // The other run did not store a pass (it failed, or was stopped): run it here.
                return Waited::Lock(Some(lock));
            }
            Ok(None) => {
                if !waited {
                    waited = true;
                    reporter.report(Event::Waiting { segment: &seg.name });
                }
                tokio::select! {
                    _ = tokio::time::sleep(LOCK_POLL) => {}
                    _ = exec::wait_cancel(&mut stop) => return Waited::Stopped,
                }
            }
            Err(_) => return Waited::Lock(None),
        }
    }
}

/// How often a run waiting for another process's check tries its lock again.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// Sleep until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The wall time of running checks of these durations longest first on `jobs` slots.
fn expected_wall(durations: &[f64], jobs: usize) -> f64 {
    let mut sorted = durations.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut slots = vec![0.0_f64; jobs.max(1)];
    for d in sorted {
        if let Some(free) = slots.iter_mut().min_by(|a, b| a.total_cmp(b)) {
            *free += d.max(0.0);
        }
    }
    slots.into_iter().fold(0.0, f64::max)
}

/// How many local cache lookups run at once: enough to keep every CPU busy hashing while
/// others wait for the disk, few enough that tokio's blocking pool reuses its threads.
pub(crate) fn local_lookup_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// The commit a plan was read from; `None` for a work tree (whose files may differ from HEAD).
fn commit_label(plan: &Plan) -> Option<String> {
    match plan.target {
        Target::Commit(c) => Some(c.to_string()),
        Target::WorkTree => None,
    }
}

fn record_for(
    plan: &Plan,
    seg: &SegmentPlan,
    o: &SegmentOutcome,
    caches: &Caches,
    env: &Env,
) -> ResultRecord {
    let signer = (caches.can_push() || caches.settings.secret_key.is_some())
        .then(|| {
            caches
                .settings
                .secret_key
                .as_ref()
                .map(|k| k.name().to_owned())
        })
        .flatten();
    ResultRecord {
        format: RESULT_FORMAT,
        segment: seg.name.clone(),
        status: o.status(),
        exit_code: o.exit_code(),
        duration_s: o.duration_s,
        commit: match plan.target {
            Target::Commit(c) => Some(SourceCommit::commit(c.to_string())),
            Target::WorkTree => plan
                .commit
                .map(|c| SourceCommit::worktree_on(c.to_string())),
        },
        input_hash: seg.input_hash,
        command: seg.command.clone(),
        checkdef_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: hostname(env),
        signer,
        finished_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

fn hostname(env: &Env) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| env.var("HOSTNAME").map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `SEGMENT: read PATH, which is not an input of this segment (add it to include)`.
pub fn undeclared_message(segment: &str, path: &str) -> String {
    format!("{segment}: read {path}, which is not an input of this segment (add it to include)")
}

/// What every sandbox of one run shares: whether checks are isolated, the skeleton of the
/// snapshot, where persistent layers live, what is hidden and exposed.
struct Views {
    /// The repository's path: the view is mounted here (`None` for a bare repository).
    root: Option<PathBuf>,
    /// `<local cache>/checkdef-sandboxes/<repository key>`.
    store: Option<PathBuf>,
    skeleton: Option<view::Skeleton>,
    hide: Vec<PathBuf>,
    expose: Vec<PathBuf>,
    exe: PathBuf,
    /// This user's directory of sandboxes ([`SandboxSettings::parent_dir`]).
    parent: PathBuf,
}

impl Views {
    fn new(
        repo: &Repo,
        plan: &Plan,
        opts: &RunOptions,
        local: &std::path::Path,
        reporter: &dyn Reporter,
    ) -> Result<Views> {
        let isolation = sandbox::isolation(&opts.sandbox);
        let root = repo.workdir().and_then(|w| w.canonicalize().ok());
        // The sandbox layers' store is the repository's: its work tree, or its git directory.
        let owner = root.clone().unwrap_or_else(|| repo.git_dir().to_path_buf());
        let store = Some(view::store_for(local, &owner));
        let mut views = Views {
            root,
            store,
            skeleton: None,
            hide: Vec::new(),
            expose: Vec::new(),
            exe: std::env::current_exe().context("locating the checkdef binary")?,
            parent: opts.sandbox.parent_dir(),
        };
        if let sandbox::Isolation::Unavailable(_) = &isolation {
            let message = format!("sandbox: {}", isolation.describe());
            reporter.report(Event::Warning(Warning::plain(&message)));
            return Ok(views);
        }
        let private = views.parent.clone();
        // It must exist now to be hidden from the checks (it is removed when empty).
        sandbox::create_parent(&private)
            .with_context(|| format!("creating {}", private.display()))?;
        if let Some(store) = &views.store {
            // Best effort: a store without its mark is judged by its own time in `cache gc`.
            let _ = view::mark_used(store, &owner);
        }
        let skeleton = view::Skeleton::prepare(
            &view::RepoListing(repo, &plan.target),
            views.store.as_deref(),
            &private,
        )
        .context("preparing the sandbox skeleton")?;
        if let Some(root) = &views.root {
            views.expose = view::environments(root, &skeleton.paths);
        }
        views.skeleton = Some(skeleton);
        views.hide = [local.to_path_buf(), private]
            .into_iter()
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        Ok(views)
    }

    fn isolated(&self) -> bool {
        self.skeleton.is_some()
    }

    fn undeclared(&self, seg: &SegmentPlan, log: &[u8]) -> Vec<String> {
        match (&self.skeleton, &self.root) {
            (Some(sk), Some(root)) => view::undeclared_reads(log, root, &sk.paths, &seg.inputs),
            _ => Vec::new(),
        }
    }

    /// Keep the undeclared reads of this run for `checkdef explain`.
    fn record(&self, seg: &SegmentPlan, undeclared: &[String]) {
        if let (Some(store), true) = (&self.store, self.isolated()) {
            let rec = view::LastRun {
                input_hash: seg.input_hash,
                finished_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                undeclared: undeclared.to_vec(),
            };
            let _ = view::save_last_run(store, &seg.name, &rec);
        }
    }
}

impl Drop for Views {
    fn drop(&mut self) {
        // A private skeleton goes first, then the sandboxes' directory if no other run uses it.
        self.skeleton = None;
        let _ = std::fs::remove_dir(&self.parent);
    }
}

/// A running check's private directory and the persistent layer it holds locked.
struct Prepared {
    _inputs: Option<view::InputsLayer>,
    _dir: sandbox::RunDir,
}

/// A check ready to start: its sandbox, command, output sink and, when it can run warm, how
/// (else why not).
struct Ready {
    prepared: Prepared,
    spec: ExecSpec,
    sink: Option<LineSink>,
    warm: std::result::Result<Warm, String>,
}

/// The server a check was prepared with, or, when it died while the check waited for its slot
/// (a check before it killed it), the pool's current one, restarted if need be.
fn live_server(
    server: Arc<warm::Server>,
    plan: &warm::WarmPlan,
    pool: &Pool,
) -> std::result::Result<Arc<warm::Server>, String> {
    if !server.is_dead() {
        return Ok(server);
    }
    match pool
        .get()
        .and_then(|p| p.as_ref().ok())
        .map(|p| p.server(plan))
    {
        Some(r) => r,
        None => Ok(server),
    }
}

/// What a check needs to run warm: its server and plan, the holder's directory, whether the
/// holder enters a sandbox, the check's directory.
struct Warm {
    server: Arc<warm::Server>,
    plan: warm::WarmPlan,
    /// Where its server's bytecode and cache tag are kept (see [`warm::cache_tag`]).
    pyc_dir: Option<PathBuf>,
    dir: PathBuf,
    isolated: bool,
    cwd: PathBuf,
    /// What of the work tree the view shows as it is (relative; see `isolate::Spec::expose`):
    /// the server may have read from there, the rest of the repository is a doubt.
    expose: Vec<PathBuf>,
    /// The store's bytecode of the check's `.py` inputs (see `view::Acquired::bytecode`).
    bytecode: Vec<PathBuf>,
}

/// The warm servers of one run, created when the first eligible check needs one.
type Pool = std::cell::OnceCell<std::result::Result<warm::WarmPool, String>>;

/// Run a prepared check: warm when it can, else in a fresh process — also when the warm runner
/// gives up after the check may have started, in a fresh sandbox from `fresh` (unless cancelled).
/// `turn` is the check's slot (see [`Miss::start`]); `None` when it was stopped before its turn.
async fn run_prepared<T>(
    ready: Ready,
    cancel: watch::Receiver<bool>,
    fresh: impl FnOnce() -> Result<Ready>,
    turn: impl std::future::Future<Output = Option<T>>,
    pool: &Pool,
) -> Option<(exec::ExecOutcome, Runner, Option<String>)> {
    let Ready {
        prepared,
        spec,
        sink,
        warm,
    } = ready;
    let note = match warm {
        Err(why) => why,
        Ok(w) => {
            let Warm {
                server,
                plan,
                pyc_dir,
                dir,
                isolated,
                cwd,
                expose,
                bytecode,
            } = w;
            let check = warm::HeldCheck {
                spec: &spec,
                dir: &dir,
                plan: &plan,
                place: warm::Place {
                    isolated,
                    cwd: &cwd,
                    expose: &expose,
                    bytecode: &bytecode,
                },
                cancel: cancel.clone(),
                on_line: sink.clone(),
            };
            let (held, served) =
                warm::run_held(check, turn, || live_server(server, &plan, pool)).await;
            if let (Some(dir), Some(server)) = (&pyc_dir, &served) {
                // The server has served (or died): record its cache tag for later runs.
                let _ = warm::cache_tag(server, &plan, dir);
            }
            return Some(match held {
                warm::Held::NotStarted => return None,
                warm::Held::Ran(o, None) => (o, Runner::Warm, None),
                warm::Held::Ran(o, Some(why)) => (o, Runner::Process, Some(why)),
                warm::Held::Lost(why) => {
                    drop(prepared);
                    if *cancel.borrow() {
                        return Some((exec::ExecOutcome::interrupted(), Runner::Warm, Some(why)));
                    }
                    match fresh() {
                        Ok(r) => {
                            let o = exec::execute(&r.spec, cancel, r.sink.clone()).await;
                            drop(r.prepared);
                            (o, Runner::Process, Some(why))
                        }
                        Err(e) => (
                            exec::ExecOutcome::not_started(format!("{e:#}")),
                            Runner::Process,
                            Some(why),
                        ),
                    }
                }
            });
        }
    };
    let _slot = turn.await?;
    let o = exec::execute(&spec, cancel, sink).await;
    drop(prepared);
    Some((o, Runner::Process, Some(note)))
}

/// Set a segment's sandbox up and build its command spec.
fn prepare(
    repo: &Repo,
    plan: &Plan,
    seg: &SegmentPlan,
    views: &Views,
    opts: &RunOptions,
    reporter: &Arc<dyn Reporter>,
    pool: Option<&Pool>,
) -> Result<Ready> {
    let entries;
    let inputs = match seg.sandbox {
        Sandbox::Filtered => &seg.inputs,
        Sandbox::Full => {
            entries = repo.entries_all(&plan.target)?;
            &entries
        }
    };
    let dir = sandbox::RunDir::new(&views.parent, &seg.name).with_context(|| {
        format!(
            "creating the sandbox directory in {}",
            views.parent.display()
        )
    })?;
    let d = dir.path().to_path_buf();
    let tmp = d.join("tmp");
    let env = run_env(seg, &tmp, &opts.env);
    let warm = warm_server(seg, &env, views, pool);
    // A warm check starts as a holder, which enters the sandbox and waits (run/warm.rs).
    let hold: Vec<std::ffi::OsString> = match &warm {
        Ok(_) => {
            for f in [isolate::HOLD_READY, isolate::HOLD_CTL] {
                rustix::fs::mkfifoat(
                    rustix::fs::CWD,
                    d.join(f),
                    rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
                )
                .with_context(|| format!("creating {}", d.join(f).display()))?;
            }
            vec!["--hold".into(), d.clone().into_os_string()]
        }
        Err(_) => Vec::new(),
    };
    let mut bytecode = Vec::new();
    let (prepared, cwd, wrapper) = match &views.skeleton {
        None => {
            // No isolation: a copy of the inputs, as before (held for a warm check).
            let src = d.join("src");
            view::InputsLayer::private(repo, &plan.target, &src, inputs, plan.convert)
                .with_context(|| format!("materialising the inputs of {}", seg.name))?;
            let p = Prepared {
                _inputs: None,
                _dir: dir,
            };
            let wrapper = if hold.is_empty() {
                Vec::new()
            } else {
                [views.exe.clone().into_os_string(), isolate::ENTRY.into()]
                    .into_iter()
                    .chain(hold.iter().cloned())
                    .chain(["--".into()])
                    .collect()
            };
            (p, src, wrapper)
        }
        Some(skeleton) => {
            let isolated = Isolated {
                repo,
                plan,
                seg,
                views,
                opts,
                skeleton,
                dir: &d,
                tmp: &tmp,
            };
            let (layer, wrapper, code) = isolated.prepare(inputs, &warm, &hold)?;
            bytecode = code;
            let p = Prepared {
                _inputs: Some(layer),
                _dir: dir,
            };
            (p, d.clone(), wrapper)
        }
    };
    let spec = ExecSpec {
        supervisor: opts.supervisor.clone(),
        cwd,
        argv: wrapper
            .into_iter()
            .chain(ExecSpec::shell(&seg.command))
            .collect(),
        env,
        timeout: seg.timeout,
    };
    let sink = output_sink(seg, opts, reporter);
    let warm = warm.map(|(server, plan)| Warm {
        server,
        plan,
        pyc_dir: views.store.as_deref().map(view::pyc_dir),
        dir: d.clone(),
        isolated: views.isolated(),
        // Where the sandbox entry changes to: the view at the repository's path.
        cwd: if views.isolated() {
            views.root.clone().unwrap_or_else(|| d.join("view"))
        } else {
            spec.cwd.clone()
        },
        expose: if views.isolated() {
            views.expose.clone()
        } else {
            Vec::new()
        },
        bytecode,
    });
    Ok(Ready {
        prepared,
        spec,
        sink,
        warm,
    })
}

/// The warm server a check runs in and its plan, or why it runs as a fresh process
/// (`pool`: `None` when it is rerun after the warm runner gave up).
fn warm_server(
    seg: &SegmentPlan,
    env: &[(String, String)],
    views: &Views,
    pool: Option<&Pool>,
) -> std::result::Result<(Arc<warm::Server>, warm::WarmPlan), String> {
    match (seg.runner, pool) {
        (Runner::Process, _) => Err("runner = \"process\"".to_owned()),
        (Runner::Warm, None) => Err("rerun after the warm runner gave up".to_owned()),
        (Runner::Warm, Some(pool)) => warm::plan(&seg.command, env).and_then(|wplan| {
            if let Some(why) = warm::shim_doubt(&wplan, views.root.as_deref(), &views.parent) {
                return Err(why);
            }
            if let Some(why) = views
                .root
                .as_deref()
                .and_then(|root| warm::repository_doubt(&wplan, root))
            {
                return Err(why);
            }
            let pool = pool.get_or_init(|| {
                warm::WarmPool::new(
                    &views.parent,
                    views.store.as_ref().map(|s| s.join("probes")),
                )
                .map_err(|e| format!("no warm pool: {e}"))
            });
            let pool = pool.as_ref().map_err(Clone::clone)?;
            Ok((pool.server(&wplan)?, wplan))
        }),
    }
}

/// What setting up an isolated check's view needs: the run's shared skeleton and views, the
/// check's private directory and TMPDIR.
struct Isolated<'a> {
    repo: &'a Repo,
    plan: &'a Plan,
    seg: &'a SegmentPlan,
    views: &'a Views,
    opts: &'a RunOptions,
    skeleton: &'a view::Skeleton,
    dir: &'a std::path::Path,
    tmp: &'a std::path::Path,
}

impl Isolated<'_> {
    /// The check's inputs layer (the persistent one when it can be had, else a private copy)
    /// and the sandbox entry's command line (`hold`: the warm holder's arguments) with the
    /// overlay's spec: the inputs over the skeleton, a writable layer, what is hidden and
    /// exposed.
    fn prepare(
        &self,
        inputs: &[crate::git::Input],
        warm: &std::result::Result<(Arc<warm::Server>, warm::WarmPlan), String>,
        hold: &[std::ffi::OsString],
    ) -> Result<(view::InputsLayer, Vec<std::ffi::OsString>, Vec<PathBuf>)> {
        let Isolated {
            repo,
            plan,
            seg,
            views,
            opts,
            skeleton,
            dir: d,
            tmp,
        } = *self;
        // With checkout rules (.gitattributes, filters) what a file holds depends on more
        // than its blob id, which is all the persistent layer's state records: such
        // snapshots get a fresh private copy every time.
        // A warm check's server offers bytecode of the inputs: its cache tag once it is
        // serving, or the one an earlier run's server of this interpreter reported.
        let pycs = match (&warm, &views.store) {
            (Ok((server, wplan)), Some(store)) => {
                let dir = view::pyc_dir(store);
                let tag = warm::cache_tag(server, wplan, &dir);
                Some(view::PycStore { dir, tag })
            }
            _ => None,
        };
        let persistent = match &views.store {
            Some(store) if !plan.convert => view::InputsLayer::acquire(
                repo,
                &plan.target,
                store,
                &seg.name,
                inputs,
                pycs.as_ref(),
            )
            .with_context(|| format!("materialising the inputs of {}", seg.name))?,
            _ => None,
        };
        let mut bytecode = Vec::new();
        let layer = match persistent {
            Some(a) => {
                if let (Ok((server, _)), Some(p)) = (&warm, &pycs) {
                    for chunk in a.missing_pycs.chunks(200) {
                        server.compile(&p.dir, chunk);
                    }
                }
                bytecode = a.bytecode;
                a.layer
            }
            None => view::InputsLayer::private(
                repo,
                &plan.target,
                &d.join("inputs"),
                inputs,
                plan.convert,
            )
            .with_context(|| format!("materialising the inputs of {}", seg.name))?,
        };
        let root = match &views.root {
            Some(r) => r.clone(),
            None => {
                let v = d.join("view");
                std::fs::create_dir(&v).with_context(|| format!("creating {}", v.display()))?;
                v
            }
        };
        let in_memory = opts.sandbox.writes_in_memory;
        // A private inputs layer or skeleton (another run holds the persistent one, or
        // checkout rules apply) lives in that directory: it must not be covered.
        let private_layer = [&layer.tree, &skeleton.tree]
            .iter()
            .any(|t| t.starts_with(&views.parent));
        let (upper, work) = if in_memory && views.root.is_some() && !private_layer {
            // A mount point for the check's own tmpfs: the directory every sandbox lives in,
            // hidden from the check anyway (not for a bare repository, whose view is there,
            // nor when a layer of the view is a private copy there, which it would cover).
            (views.parent.clone(), d.join("work"))
        } else if in_memory {
            let p = d.join("writes");
            std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
            (p, d.join("work"))
        } else {
            for sub in ["upper", "work"] {
                let p = d.join(sub);
                std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
            }
            (d.join("upper"), d.join("work"))
        };
        let spec = isolate::Spec {
            root,
            lower: vec![layer.tree.clone(), skeleton.tree.clone()],
            upper,
            work,
            tmp: tmp.to_path_buf(),
            hide: views.hide.clone(),
            expose: views.expose.clone(),
            network: seg.network,
            writes_in_memory: in_memory,
        };
        // The spec travels on the command line: no file to write and remove.
        let wrapper = [views.exe.clone().into_os_string(), isolate::ENTRY.into()]
            .into_iter()
            .chain(hold.iter().cloned())
            .chain([
                "--spec-json".into(),
                serde_json::to_string(&spec)?.into(),
                "--".into(),
            ])
            .collect();
        Ok((layer, wrapper, bytecode))
    }
}

/// The sink of a check's live output, when the reporter wants it: each piece redacted like the
/// stored log (line by line: a value spanning a line break is not recognised here).
fn output_sink(
    seg: &SegmentPlan,
    opts: &RunOptions,
    reporter: &Arc<dyn Reporter>,
) -> Option<LineSink> {
    reporter.wants_output().then(|| {
        let reds = redactions(&opts.redact_env, seg, &opts.env);
        let reporter = reporter.clone();
        let name = seg.name.clone();
        Arc::new(move |p: Piece<'_>| {
            let redacted;
            let piece = if reds.is_empty() {
                p
            } else {
                let (Piece::Line(l) | Piece::Progress(l)) = p;
                redacted = redact(l, &reds);
                match p {
                    Piece::Line(_) => Piece::Line(&redacted),
                    Piece::Progress(_) => Piece::Progress(&redacted),
                }
            };
            reporter.report(Event::Output {
                segment: &name,
                piece,
            });
        }) as LineSink
    })
}

/// The complete environment of a check: PATH, the passthrough variables (not hashed), the
/// declared env (hashed), and a private TMPDIR (`tmp`, created here).
fn run_env(seg: &SegmentPlan, tmp: &std::path::Path, environ: &Env) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |k: &str, v: String, env: &mut Vec<(String, String)>| {
        if seen.insert(k.to_owned()) {
            env.push((k.to_owned(), v));
        }
    };
    // Declared env wins over everything else.
    for (k, v) in &seg.env {
        push(k, v.clone(), &mut env);
    }
    if let Some(path) = environ.var("PATH") {
        push("PATH", path.to_owned(), &mut env);
    }
    for k in &seg.passthrough {
        if let Some(v) = environ.var(k) {
            push(k, v.to_owned(), &mut env);
        }
    }
    if std::fs::create_dir(tmp).is_ok() {
        push("TMPDIR", tmp.display().to_string(), &mut env);
    }
    push("CHECKDEF_SEGMENT", seg.name.clone(), &mut env);
    env
}

/// `(value, replacement)` for each `redact_env` variable: its value in the check's declared
/// `env` and in checkdef's own environment (where passthrough values come from), skipping empty
/// values; longest first, so a value that contains another is replaced whole.
pub fn redactions(names: &[String], seg: &SegmentPlan, env: &Env) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for name in names {
        let replacement = format!("[redacted:{name}]").into_bytes();
        let values = seg
            .env
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .into_iter()
            .chain(env.var_os(name).map(|v| {
                use std::os::unix::ffi::OsStrExt as _;
                v.as_bytes().to_vec()
            }));
        for v in values {
            if !v.is_empty() && !out.iter().any(|(known, _)| *known == v) {
                out.push((v, replacement.clone()));
            }
        }
    }
    out.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    out
}

/// `log` with every occurrence of each value replaced (leftmost first, never re-scanning a
/// replacement).
pub fn redact(log: &[u8], redactions: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    if redactions.is_empty() {
        return log.to_vec();
    }
    let mut out = Vec::with_capacity(log.len());
    let mut i = 0;
    'scan: while i < log.len() {
        for (value, replacement) in redactions {
            if log[i..].starts_with(value) {
                out.extend_from_slice(replacement);
                i += value.len();
                continue 'scan;
            }
        }
        out.push(log[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str, origin: Origin, took: f64, original: Option<f64>) -> SegmentOutcome {
        SegmentOutcome {
            name: name.into(),
            verdict: Verdict::Passed,
            origin,
            duration_s: took,
            original_duration_s: original,
            input_hash: InputHash::placeholder(),
            store_path: crate::plan::store_path_for(&InputHash::placeholder(), "checkdef"),
            signed_by: None,
            log: Vec::new(),
            warnings: Vec::new(),
            runner: None,
            runner_note: None,
        }
    }

    #[test]
    fn only_pytest_s_summary_of_a_session_without_tests_counts_as_no_tests() {
        for ok in [
            "collected 0 items / 1 skipped\n\n============================== 1 skipped in 0.00s ==============================\n",
            "\nno tests ran in 0.00s\n\n",
            "2 deselected in 0.01s\n",
            "1 skipped, 2 deselected, 1 warning in 1.20s (0:00:01)\n",
        ] {
            assert!(ran_no_test(ok.as_bytes()), "{ok:?}");
        }
        for not in [
            // pytest.exit(returncode=5) after a failure: the summary, then its banner.
            "FAILED t.py::test_bad - assert False\n1 failed in 0.28s\n!!!!! _pytest.outcomes.Exit: stop !!!!!\n",
            "1 failed in 0.28s\n",
            "1 passed, 1 skipped in 0.01s\n",
            "1 xfailed in 0.01s\n",
            "1 error in 0.01s\n",
            // A test's os._exit(5): no summary at all.
            "collected 2 items\n\nt.py .",
            "",
            "no tests ran in soon\n",
        ] {
            assert!(!ran_no_test(not.as_bytes()), "{not:?}");
        }
    }

    #[test]
    fn saved_time_never_adds_up_segments_that_run_side_by_side() {
        let cached = |n, d| seg(n, Origin::Cache(Source::Local), 0.001, Some(d));
        let report = |segments, wall_s, jobs| RunReport {
            commit: None,
            segments,
            wall_s,
            interrupted: false,
            jobs,
        };
        // Two 11 s segments on two slots: a plain run takes 11 s, not 22 s.
        let r = report(vec![cached("a", 11.0), cached("b", 11.0)], 0.01, 2);
        assert!(
            (r.seconds_saved() - 10.99).abs() < 1e-9,
            "{}",
            r.seconds_saved()
        );
        // One slot: they would have run one after the other.
        let r = report(vec![cached("a", 11.0), cached("b", 11.0)], 0.01, 1);
        assert!((r.seconds_saved() - 21.99).abs() < 1e-9);
        // One ran (10.7 s) while the other was cached (11 s): running it too would have cost
        // 0.3 s more on two slots.
        let r = report(
            vec![seg("a", Origin::Run, 10.7, None), cached("b", 11.0)],
            10.7,
            2,
        );
        assert!((r.seconds_saved() - 0.3).abs() < 1e-9);
        // Nothing cached: nothing saved.
        let r = report(vec![seg("a", Origin::Run, 3.0, None)], 3.0, 2);
        assert_eq!(r.seconds_saved(), 0.0);
    }
}
