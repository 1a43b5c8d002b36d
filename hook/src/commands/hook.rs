//! `checkdef hook pre-push REMOTE URL`: git's pre-push hook. Reads the ref lines on stdin once,
//! and verifies the pushed commits from their git objects (never the work tree), each with its
//! own `checkdef.toml`: each selected segment must have a passing result, from the cache or from
//! a run, or the push is blocked. Which commits are checked is `[hook] commits` (the tip of each
//! pushed ref, or every new commit) and `[hook] tags`. A cache outage never blocks a push by
//! itself. See docs/hook.md.
use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Result;
use gix::ObjectId;

use crate::cache::Caches;
use crate::config::{CacheConfig, Config, FILE_NAME, HookCommits, HookMode, HookTags, OnBudget};
use crate::context::{Context, config_error, plan_error};
use crate::exit::{Code, usage, usage_hint, usage_hints};
use crate::git::{FileMode, Repo, Target};
use crate::prepush;
use crate::printer::Printer;
use crate::report::{self, HumanReporter};
use crate::run::{self, Origin, RunOptions};

/// How to get past the hook when it cannot help; every message that blocks a push for a reason
/// other than a failing check ends with it.
const BYPASS: &str = "git push --no-verify, or CHECKDEF_SKIP=1 git push";

pub fn pre_push(ctx: &Context, remote: &str, url: &str) -> Result<Code> {
    // The budget counts from the moment git started the hook.
    let started = std::time::Instant::now();
    let p = &ctx.printer;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| {
        usage(format!(
            "cannot read the ref list git writes to the pre-push hook's stdin: {e}"
        ))
    })?;
    match &ctx.settings.skip {
        crate::context::Skip::Yes => {
            p.warn("CHECKDEF_SKIP is set — this push is NOT verified");
            return Ok(Code::Success);
        }
        crate::context::Skip::NotUnderstood(v) => p.warn(&format!(
            "CHECKDEF_SKIP={v:?} is not understood, so the checks run (CHECKDEF_SKIP=1 skips them)"
        )),
        crate::context::Skip::No => {}
    }
    let updates =
        prepush::parse_stdin(&input).map_err(|e| usage(format!("pre-push input: {e}")))?;
    if updates.is_empty() {
        return Ok(Code::Success);
    }
    let repo = ctx.open_repo()?;
    // git passes a URL as typed when the push names no remote, credentials included.
    let shown_remote = cache_proto::RedactedUrl::new(remote);
    let push = prepush::plan_push(repo.gix(), remote, &updates).map_err(|e| {
        usage_hint(
            e.to_string(),
            "fetch the missing objects or push from a complete clone",
        )
    })?;
    let style = p.style();
    for s in &push.skipped {
        p.info(&style.dim(&format!("checkdef: {}: {}", s.remote_ref, s.reason)));
    }
    if push.checks.is_empty() {
        return Ok(Code::Success);
    }
    let mut configs = Configs::new(&repo, ctx.settings.config_flag.as_deref(), p)?;

    // 1. The commits to check, each once, from the policy of each pushed commit's own
    //    checkdef.toml. Every pushed ref's commit must have one.
    let units = collect_units(&repo, remote, &shown_remote, &push, &mut configs, p)?;
    if units.is_empty() {
        return Ok(Code::Success);
    }

    // 2. Check them.
    let jobs = ctx.settings.default_jobs();
    let ssh = is_ssh_url(url);
    if let crate::context::BudgetOverride::Invalid(why) = &ctx.settings.budget {
        p.warn(&format!(
            "CHECKDEF_BUDGET: {why}; using [hook] budget from {FILE_NAME}"
        ));
    }
    let rt = ctx.runtime()?;
    // Checks stopped at the budget: (commit, segments, policy, budget).
    let mut over: Vec<Over> = Vec::new();
    let mut caches: Vec<(CacheConfig, Arc<Caches>)> = Vec::new();
    let mut failed: Vec<(Unit, Vec<String>)> = Vec::new();
    let mut failed_ranges: HashSet<usize> = HashSet::new();
    let mut interrupted = false;
    for unit in &units {
        let sha = short(unit.commit);
        let Some(cfg) = configs.get(unit.commit)? else {
            // Only an intermediate commit can get here (a pushed ref's commit without one was
            // refused above): it predates checkdef.toml, or removed it for a while.
            p.info(&style.dim(&format!(
                "checkdef: {sha} has no {FILE_NAME}: nothing to check in it"
            )));
            continue;
        };
        if !unit.tip && failed_ranges.contains(&unit.range) {
            p.info(&style.dim(&format!(
                "checkdef: {sha} not checked: an earlier commit of {} already failed",
                unit.refs.join(", ")
            )));
            continue;
        }
        p.line(&style.bold(&checking_line(unit, &shown_remote)));
        if let Some(note) = configs.worktree_note(&cfg) {
            p.line(&style.yellow(&note));
        }
        let caches = match caches.iter().find(|(c, _)| *c == cfg.config.cache) {
            Some((_, c)) => c.clone(),
            None => {
                let c = open_caches(ctx, &cfg.config.cache)?;
                caches.push((cfg.config.cache.clone(), c.clone()));
                c
            }
        };
        let budget = ctx.settings.budget.apply(cfg.config.hook.budget);
        let opts = RunOptions {
            jobs,
            hit_logs: p.is_verbose(),
            deadline: budget.map(|b| (started + b, b)),
            warn_if_slow: ssh && budget.is_none(),
            ..super::run_options(ctx, &cfg.config)
        };
        let report = check_commit(ctx, &repo, &rt, &cfg.config, unit, &opts, &caches)?;
        if report.interrupted {
            interrupted = true;
            break;
        }
        let (stopped, names) = stopped_and_failed(&report);
        if !stopped.is_empty()
            && let Some((_, b)) = opts.deadline
        {
            over.push(Over {
                commit: unit.commit,
                names: stopped,
                policy: cfg.config.hook.on_budget,
                budget: b,
            });
        }
        if !names.is_empty() {
            failed_ranges.insert(unit.range);
            failed.push((unit.clone(), names));
        }
    }
    if interrupted {
        p.line("checkdef: interrupted — push blocked, nothing partial was stored");
        return Ok(Code::Interrupted);
    }
    conclude(ctx, &repo, &over, &failed)
}

/// The commits a push checks, each once, in push order: per pushed ref, its commit, and with
/// `[hook] commits = "all"` (from that commit's own checkdef.toml) every commit new to the
/// remote; tags are skipped when `[hook] tags = "skip"`. Every pushed ref's commit must have a
/// checkdef.toml.
fn collect_units(
    repo: &Repo,
    remote: &str,
    shown_remote: &cache_proto::RedactedUrl,
    push: &prepush::PushPlan,
    configs: &mut Configs<'_>,
    p: &Printer,
) -> Result<Vec<Unit>> {
    let style = p.style();
    let mut units: Vec<Unit> = Vec::new();
    let mut index: HashMap<ObjectId, usize> = HashMap::new();
    let mut tracking: Option<Vec<ObjectId>> = None;
    for (range, check) in push.checks.iter().enumerate() {
        let Some(cfg) = configs.get(check.commit)? else {
            return Err(usage_hint(
                format!(
                    "commit {} ({}) has no {FILE_NAME} at its root, so checkdef cannot tell what to check",
                    short(check.commit),
                    check.refs.join(", ")
                ),
                format!(
                    "commit a {FILE_NAME} (see docs/configuration.md), or push without the checks: {BYPASS}"
                ),
            ));
        };
        let tags_only = check.refs.iter().all(|r| r.starts_with("refs/tags/"));
        if tags_only && cfg.config.hook.tags == HookTags::Skip {
            p.info(&style.dim(&format!(
                "checkdef: {}: not checked ([hook] tags = \"skip\")",
                check.refs.join(", ")
            )));
            continue;
        }
        let all = !tags_only && cfg.config.hook.commits == HookCommits::All;
        let commits = match (all, check.base) {
            (true, Some(base)) => {
                // Not what the remote has: neither below the base nor below any of its
                // branches we know (a merge of another pushed branch adds nothing new).
                let mut hidden = match &tracking {
                    Some(t) => t.clone(),
                    None => tracking
                        .insert(
                            prepush::tracking_tips(repo.gix(), remote)
                                .map_err(|e| usage(e.to_string()))?,
                        )
                        .clone(),
                };
                hidden.push(base);
                let mut new = repo.new_commits(check.commit, &hidden)?;
                // A ref moved to a commit the remote already has adds no commit, but its own
                // commit is still what the ref will point to: check it, as with "tip".
                if !new.contains(&check.commit) {
                    new.push(check.commit);
                }
                new
            }
            (true, None) => {
                p.info(&style.dim(&format!(
                        "checkdef: {}: no commit of {shown_remote} is known here, so the whole history would be new; checking only {} ([hook] commits = \"all\" needs a base: fetch first)",
                        check.refs.join(", "),
                        short(check.commit)
                    )),
                );
                vec![check.commit]
            }
            (false, _) => vec![check.commit],
        };
        for c in commits {
            let is_tip = c == check.commit;
            match index.get(&c) {
                Some(&i) => {
                    let u = &mut units[i];
                    for r in &check.refs {
                        if !u.refs.contains(r) {
                            u.refs.push(r.clone());
                        }
                    }
                    u.tip |= is_tip;
                }
                None => {
                    let base = if all {
                        repo.first_parent(c)?
                    } else {
                        check.base
                    };
                    index.insert(c, units.len());
                    units.push(Unit {
                        commit: c,
                        base,
                        base_from_remote: !all,
                        refs: check.refs.clone(),
                        tip: is_tip,
                        range,
                    });
                }
            }
        }
    }
    Ok(units)
}

/// The end of a push that was not interrupted: it proceeds when nothing failed and no check
/// stopped at a blocking budget (deferred checks handed on to background runs), else it is
/// blocked, with what to run to finish or reproduce each check.
fn conclude(
    ctx: &Context,
    repo: &Repo,
    over: &[Over],
    failed: &[(Unit, Vec<String>)],
) -> Result<Code> {
    let p = &ctx.printer;
    let style = p.style();
    let blocking = over.iter().any(|o| o.policy == OnBudget::Block);
    if failed.is_empty() && !blocking {
        // Deferred checks go on in the background; the push proceeds.
        for o in over {
            let id = crate::background::new_id();
            let names = o.names.join(", ");
            let b = crate::duration::display(o.budget);
            match super::warm::spawn(
                ctx,
                repo,
                o.commit,
                &o.names,
                crate::background::Reason::Deferred,
                &id,
            ) {
                Ok(log) => p.warn(&format!(
                    "not finished within the push budget of {b}, handed on to a background run: {names} ({}); this push proceeds WITHOUT their verdict\n  the next checkdef command (or `checkdef status`) says how they ended; log: {}",
                    short(o.commit),
                    log.display()
                )),
                Err(e) => {
                    // Nothing would finish them: the push must not proceed unchecked.
                    p.line(&style.red(&style.bold(&format!(
                        "checkdef: push blocked: {names} did not finish within the budget of {b} and could not be handed on to a background run: {e:#}"
                    ))));
                    p.line(&format!(
                        "  finish them: checkdef run --rev {}, then push again (their results will be cached)",
                        o.commit
                    ));
                    return Ok(Code::Failed);
                }
            }
        }
        return Ok(Code::Success);
    }
    p.line("");
    p.line(&style.red(&style.bold("checkdef: push blocked")));
    for o in over {
        let b = crate::duration::display(o.budget);
        let names = o.names.join(", ");
        if o.policy == OnBudget::Defer {
            p.line(&format!(
                "  {} not finished within the push budget of {b} (not deferred: the push is blocked anyway): {names}",
                short(o.commit)
            ));
        } else {
            p.line(&format!(
                "  {} not finished within the push budget of {b} (stopped): {names}",
                short(o.commit)
            ));
        }
        p.line(&format!(
            "    finish them: checkdef run --rev {}, then push again (the push will find their results cached)",
            o.commit
        ));
        p.line(
            "    or let pushes hand them on: [hook] on-budget = \"defer\", or a larger budget (CHECKDEF_BUDGET=15m git push)",
        );
    }
    for (unit, names) in failed {
        let sha = unit.commit.to_string();
        p.line(&format!(
            "  {} ({}{}) failed: {}",
            short(unit.commit),
            if unit.tip { "" } else { "a commit below " },
            unit.refs.join(", "),
            names.join(", ")
        ));
        for n in names {
            p.line(&format!(
                "    reproduce: checkdef run --rev {sha} --segment {n} -v"
            ));
        }
    }
    p.line(&format!("  bypass (not recommended): {BYPASS}"));
    Ok(Code::Failed)
}

/// `checkdef: checking SHA → REMOTE REFS (BASE)`: the line that starts a commit's checks.
fn checking_line(unit: &Unit, shown_remote: &cache_proto::RedactedUrl) -> String {
    format!(
        "checkdef: checking {} → {shown_remote} {}{} ({})",
        short(unit.commit),
        unit.refs.join(", "),
        if unit.tip { "" } else { " (a commit below it)" },
        match unit.base {
            Some(b) if unit.base_from_remote => format!("remote has {}", short(b)),
            Some(b) => format!("compared with its parent {}", short(b)),
            None => "all new to the remote".to_owned(),
        }
    )
}

/// The segments of a commit's run that the push's budget stopped, and those that failed
/// otherwise.
fn stopped_and_failed(report: &run::RunReport) -> (Vec<String>, Vec<String>) {
    let over = |s: &&run::SegmentOutcome| matches!(s.verdict, run::Verdict::OverBudget(_));
    let stopped = report
        .segments
        .iter()
        .filter(over)
        .map(|s| s.name.clone())
        .collect();
    let failed = report
        .segments
        .iter()
        .filter(|s| !s.passed() && !over(s))
        .map(|s| s.name.clone())
        .collect();
    (stopped, failed)
}

/// Plan and run one commit's checks, printing the touched segments, the checklist and the
/// summary line.
fn check_commit(
    ctx: &Context,
    repo: &Repo,
    rt: &tokio::runtime::Runtime,
    config: &Config,
    unit: &Unit,
    opts: &RunOptions,
    caches: &Arc<Caches>,
) -> Result<run::RunReport> {
    let p = &ctx.printer;
    let style = p.style();
    let target = Target::Commit(unit.commit);
    let plan = ctx
        .plan(repo, config, &target, unit.base, |_| true)
        .map_err(plan_error)?;
    if unit.base.is_some() {
        let touched: Vec<&str> = plan
            .segments
            .iter()
            .filter(|s| s.touched != Some(false))
            .map(|s| s.name.as_str())
            .collect();
        p.line(&format!(
            "checkdef: touched segments: {}",
            if touched.is_empty() {
                "none".to_owned()
            } else {
                touched.join(", ")
            }
        ));
        // Changed files no segment takes in: a data file a test would read, committed
        // without its segment's include, is where a stale pass hides (docs/security.md).
        if let Some(paths) = plan.untracked_touched.as_ref().filter(|p| !p.is_empty()) {
            const SHOWN: usize = 3;
            let shown: Vec<String> = paths
                .iter()
                .take(SHOWN)
                .map(|p| crate::manifest::escape(p))
                .collect();
            let more = paths.len().saturating_sub(SHOWN);
            p.info(&style.dim(&format!(
                "checkdef: {} changed file{} {} no segment's input: {}{} (a test that reads them needs them in its include)",
                paths.len(),
                if paths.len() == 1 { "" } else { "s" },
                if paths.len() == 1 { "is" } else { "are" },
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            )));
        }
    }
    let reporter = Arc::new(HumanReporter::for_plan(*p, p.is_verbose(), &plan));
    let report = rt.block_on(async {
        let (tx, rx) = run::interrupt_channel();
        run::watch_signals(tx);
        run::run_plan(repo, &plan, caches.clone(), opts, rx, reporter).await
    })?;
    report::runner_hint(p, &report);
    p.line(&report::summary_line(&report, &style));
    if config.hook.mode == HookMode::Affected
        && let Some(base) = unit.base
    {
        // An untouched segment counts as checked only when a passing result proves it:
        // that the remote has the base commit proves nothing (it may have been pushed
        // with --no-verify).
        let unproven: Vec<&str> = plan
            .segments
            .iter()
            .zip(&report.segments)
            .filter(|(s, o)| s.touched == Some(false) && o.origin == Origin::Run)
            .map(|(s, _)| s.name.as_str())
            .collect();
        if !unproven.is_empty() {
            p.info(&style.dim(&format!(
                        "checkdef: mode = \"affected\": {} untouched since {}, but no passing result proved it, so it was checked (a commit can reach the remote without checks: --no-verify)",
                        unproven.join(", "),
                        short(base)
                    )),
                );
        }
    }
    Ok(report)
}

/// Checks of one commit that the push's budget stopped (or never started).
struct Over {
    commit: ObjectId,
    names: Vec<String>,
    policy: OnBudget,
    budget: std::time::Duration,
}

/// Whether git talks to `url` over SSH (`ssh://`, `git+ssh://`, `ssh+git://`, or the scp-like
/// `[user@]host:path`), where the connection sits open and idle while the hook runs.
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "git+ssh" | "ssh+git");
    }
    // scp-like syntax: a colon before any slash (git's rule), and not a local path.
    match url.find(':') {
        Some(colon) => colon > 0 && !url[..colon].contains('/'),
        None => false,
    }
}

/// One commit to check.
#[derive(Debug, Clone)]
struct Unit {
    commit: ObjectId,
    /// What `touched` is relative to: the remote's commit for a pushed ref's commit under
    /// `commits = "tip"`, the first parent under `commits = "all"`.
    base: Option<ObjectId>,
    /// Whether `base` is what the remote has (else it is the first parent).
    base_from_remote: bool,
    /// The pushed refs it goes to (or lies below).
    refs: Vec<String>,
    /// Whether it is the commit of a pushed ref (not only a commit below one).
    tip: bool,
    /// Which pushed ref line's range it came from first.
    range: usize,
}

/// A configuration read from a commit (or from `--config`).
struct Loaded {
    config: Config,
    /// The blob it was read from; `None` for `--config`.
    blob: Option<ObjectId>,
    /// The commit it was first read from, for messages.
    commit: ObjectId,
    text: Vec<u8>,
}

/// Each pushed commit's checkdef.toml, parsed once per distinct blob.
struct Configs<'r> {
    repo: &'r Repo,
    explicit: Option<Rc<Loaded>>,
    by_commit: HashMap<ObjectId, Option<Rc<Loaded>>>,
    by_blob: HashMap<ObjectId, Rc<Loaded>>,
    /// The work tree's checkdef.toml (`None`: bare, or no such file).
    worktree: Option<Option<Vec<u8>>>,
    noted: HashSet<Option<ObjectId>>,
}

impl<'r> Configs<'r> {
    fn new(repo: &'r Repo, explicit: Option<&Path>, p: &Printer) -> Result<Configs<'r>> {
        let explicit = match explicit {
            None => None,
            Some(path) => {
                let config = Config::load(repo.root(), Some(path)).map_err(|e| config_error(&e))?;
                p.line(&format!(
                        "checkdef: note: --config {} is used for every pushed commit instead of its own {FILE_NAME}",
                        path.display()
                    ),
                );
                Some(Rc::new(Loaded {
                    config,
                    blob: None,
                    commit: ObjectId::null(repo.object_hash()),
                    text: Vec::new(),
                }))
            }
        };
        Ok(Configs {
            repo,
            explicit,
            by_commit: HashMap::new(),
            by_blob: HashMap::new(),
            worktree: None,
            noted: HashSet::new(),
        })
    }

    /// The configuration `commit` is checked with: its own checkdef.toml (`None` when it has
    /// none). An invalid one is a usage error naming `<commit>:checkdef.toml:line:column`.
    fn get(&mut self, commit: ObjectId) -> Result<Option<Rc<Loaded>>> {
        if let Some(e) = &self.explicit {
            return Ok(Some(e.clone()));
        }
        if let Some(c) = self.by_commit.get(&commit) {
            return Ok(c.clone());
        }
        let loaded = match self.repo.root_file_at(commit, FILE_NAME)? {
            None => None,
            Some((mode, blob, text)) => {
                let name = PathBuf::from(format!("{}:{FILE_NAME}", short(commit)));
                if mode == FileMode::Symlink {
                    return Err(usage_hint(
                        format!(
                            "{} is a symbolic link; checkdef reads the configuration from the commit's objects and needs a regular file",
                            name.display()
                        ),
                        format!(
                            "commit {FILE_NAME} as a file, or push without the checks: {BYPASS}"
                        ),
                    ));
                }
                match self.by_blob.get(&blob) {
                    Some(l) => Some(l.clone()),
                    None => {
                        let parsed = std::str::from_utf8(&text)
                            .map_err(|_| {
                                usage_hint(
                                    format!("{} is not UTF-8", name.display()),
                                    format!(
                                        "fix it in a new commit, or push without the checks: {BYPASS}"
                                    ),
                                )
                            })
                            .and_then(|t| {
                                Config::parse(t, &name).map_err(|e| {
                                    usage_hints(
                                        e.without_hint(),
                                        e.hints_then(format!(
                                            "that is {FILE_NAME} as committed in {} (`git show {}`); fix it in a new commit (see docs/configuration.md), or push without the checks: {BYPASS}",
                                            short(commit),
                                            name.display()
                                        )),
                                    )
                                })
                            })?;
                        let l = Rc::new(Loaded {
                            config: parsed,
                            blob: Some(blob),
                            commit,
                            text,
                        });
                        self.by_blob.insert(blob, l.clone());
                        Some(l)
                    }
                }
            }
        };
        self.by_commit.insert(commit, loaded.clone());
        Ok(loaded)
    }

    /// Once per distinct configuration: a note when the work tree's checkdef.toml is not the
    /// one the commit is checked with.
    fn worktree_note(&mut self, cfg: &Loaded) -> Option<String> {
        let blob = cfg.blob?;
        if !self.noted.insert(Some(blob)) {
            return None;
        }
        let worktree = self.worktree.get_or_insert_with(|| {
            let dir = self.repo.workdir()?;
            std::fs::read(dir.join(FILE_NAME)).ok()
        });
        let commit = short(cfg.commit);
        match worktree {
            Some(text) if *text == cfg.text => None,
            Some(_) => Some(format!(
                "checkdef: note: the work tree's {FILE_NAME} differs from the one committed in {commit}; checking with the committed one (uncommitted changes to {FILE_NAME} are not used)"
            )),
            None if self.repo.workdir().is_some() => Some(format!(
                "checkdef: note: the work tree has no {FILE_NAME}; checking with the one committed in {commit}"
            )),
            None => None,
        }
    }
}

/// The caches for `config`. A remote that cannot even be opened (a malformed `CHECKDEF_REMOTE`,
/// a `file://` path that is not a directory) is a warning: the push is checked locally, as it
/// is when the remote is unreachable.
fn open_caches(ctx: &Context, config: &CacheConfig) -> Result<Arc<Caches>> {
    let settings = ctx.cache_settings(config)?;
    if settings.remote.is_none() {
        return Caches::open(settings);
    }
    match Caches::open(settings) {
        Ok(c) => Ok(c),
        Err(e) if Code::from_error(&e) == Code::Usage => {
            let p = &ctx.printer;
            p.warn(&format!("{e:#}"));
            p.warn("checking this push without the remote cache");
            p.hint(&format!(
                "fix CHECKDEF_REMOTE (or [cache] remote in {FILE_NAME}), or unset it"
            ));
            let mut settings = ctx.cache_settings(config)?;
            settings.remote = None;
            Caches::open(settings)
        }
        Err(e) => Err(e),
    }
}

fn short(id: ObjectId) -> String {
    let s = id.to_string();
    s[..s.len().min(12)].to_owned()
}

#[cfg(test)]
mod budget_tests {
    use super::is_ssh_url;

    #[test]
    fn ssh_push_urls_are_recognised_as_git_does() {
        for url in [
            "ssh://git@github.com/o/r.git",
            "git+ssh://host/r",
            "git@github.com:o/r.git",
            "host:r.git",
        ] {
            assert!(is_ssh_url(url), "{url}");
        }
        for url in [
            "https://github.com/o/r.git",
            "file:///srv/r.git",
            "/srv/r.git",
            "./a:b",
            "../remote.git",
            "origin",
        ] {
            assert!(!is_ssh_url(url), "{url}");
        }
    }
}
