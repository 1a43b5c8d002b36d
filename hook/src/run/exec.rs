//! Running one check: its argv (`/bin/sh -c COMMAND`) under the supervisor stage
//! ([`super::supervise`]) in a process group of its own, with a controlled environment and a
//! time limit, stdout and stderr captured (interleaved, as they arrive) into one log.
//!
//! The process group and the supervisor matter: a timeout, Ctrl-C or SIGTERM must stop every
//! process a check started (pytest workers, servers a test spawned); when the check's shell
//! exits, anything it left running is killed so it cannot hold the log pipes open; and when
//! checkdef itself dies, even by SIGKILL, the supervisor kills the check.
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::lines::{Piece, Splitter};
use super::supervise::{self, Report};
use crate::result::Status;

/// Logs beyond this size keep their head and tail; the middle is replaced by a marker line.
pub const MAX_LOG_BYTES: usize = 8 << 20;

/// The program that is re-executed as the supervisor stage: this very binary (the path stays
/// valid even if the file was replaced or deleted since checkdef started).
pub const SELF_EXE: &str = "/proc/self/exe";

#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The binary providing the supervisor stage ([`SELF_EXE`] in checkdef).
    pub supervisor: PathBuf,
    pub cwd: PathBuf,
    /// What to run (`/bin/sh -c COMMAND`; other stages may wrap it).
    pub argv: Vec<OsString>,
    /// The complete environment of the check (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// At this limit the check's group gets SIGTERM, then SIGKILL after [`crate::process::GRACE`].
    pub timeout: Duration,
}

impl ExecSpec {
    /// `/bin/sh -c command`.
    pub fn shell(command: &str) -> Vec<OsString> {
        vec!["/bin/sh".into(), "-c".into(), command.into()]
    }
}

/// How a check ended: the one verdict, from which its status (passed or failed), its exit code
/// and the reason it failed are all derived, so that they cannot disagree. Only
/// [`Verdict::Passed`] passes, and only a pass is ever stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The command exited 0 (and read nothing it did not declare).
    Passed,
    /// The command exited with a non-zero code.
    Exit(i32),
    /// A signal ended it (not one checkdef sent).
    Signal(i32),
    /// It reached its `timeout`.
    TimedOut(Duration),
    /// It never ran: the sandbox, the exec of the supervisor or of the shell failed.
    CouldNotStart(String),
    /// The sandbox entry stage could not enter the check's sandbox: it exited
    /// [`super::isolate::ENTRY_FAILED`] with this reason (see [`entry_failure`]).
    CouldNotEnter(String),
    /// Ctrl-C or SIGTERM stopped it.
    Interrupted,
    /// Ctrl-C or SIGTERM came before it started.
    NotRun,
    /// The push's `[hook] budget` ran out while it ran or before it started; it was stopped
    /// (or never started) and its outcome is unknown.
    OverBudget(Duration),
    /// checkdef lost track of it (the supervisor stage failed).
    Lost(String),
    /// It exited 0, but read files of the snapshot that are not its inputs (how many).
    UndeclaredReads(usize),
}

/// Why the sandbox entry stage could not enter the check's sandbox, when that is how the check
/// ended: exit [`super::isolate::ENTRY_FAILED`] with the entry's message as the log's first line
/// (nothing of the check can come before it, the check never started). A check that prints
/// the same line and exits 125 itself is labelled "could not start" too: a failure either way.
fn entry_failure(code: i32, log: &[u8]) -> Option<String> {
    const PREFIX: &[u8] = b"checkdef: could not enter the sandbox: ";
    if code != super::isolate::ENTRY_FAILED || !log.starts_with(PREFIX) {
        return None;
    }
    let rest = &log[PREFIX.len()..];
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    Some(String::from_utf8_lossy(line).into_owned())
}

impl Verdict {
    pub fn passed(&self) -> bool {
        *self == Verdict::Passed
    }

    /// `passed` or `failed`, as results and documents say it.
    pub fn status(&self) -> Status {
        if self.passed() {
            Status::Passed
        } else {
            Status::Failed
        }
    }

    /// The exit code of the check's shell, when it exited by itself (`None` when it was
    /// stopped, killed by a signal, or never ran).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Verdict::Passed | Verdict::UndeclaredReads(_) => Some(0),
            Verdict::Exit(c) => Some(*c),
            Verdict::CouldNotEnter(_) => Some(super::isolate::ENTRY_FAILED),
            Verdict::Signal(_)
            | Verdict::TimedOut(_)
            | Verdict::CouldNotStart(_)
            | Verdict::Interrupted
            | Verdict::NotRun
            | Verdict::OverBudget(_)
            | Verdict::Lost(_) => None,
        }
    }

    /// Why it failed, as the checklist, the JSON document and JUnit say it (`None` when it
    /// passed).
    pub fn reason(&self) -> Option<String> {
        (!self.passed()).then(|| self.to_string())
    }

    /// Ctrl-C or SIGTERM stopped it (while it ran or waited): its outcome must never be stored,
    /// and the engine decides whether the push's budget was the cause.
    pub fn cancelled(&self) -> bool {
        matches!(self, Verdict::Interrupted | Verdict::NotRun)
    }

    /// The line checkdef appends to the log of a check that ended so (`started`: it ran, or
    /// waited for another process's run, rather than never being started), when its output
    /// does not say it by itself. The one source of every `[checkdef: …]` verdict marker.
    pub fn log_marker(&self, started: bool) -> Option<String> {
        match self {
            // Not sent by checkdef (its time limit is `TimedOut`): on a machine with swap
            // off, most often the kernel's out-of-memory killer, which says so only in its log.
            Verdict::Signal(s) if *s == libc::SIGKILL => Some(
                "[checkdef: killed by SIGKILL, which checkdef did not send: most often the kernel's out-of-memory killer (`dmesg` says); checks have no memory limit of their own]"
                    .to_owned(),
            ),
            Verdict::Passed
            | Verdict::Exit(_)
            | Verdict::Signal(_)
            | Verdict::UndeclaredReads(_) => None,
            Verdict::TimedOut(_)
            | Verdict::CouldNotStart(_)
            | Verdict::CouldNotEnter(_)
            | Verdict::Lost(_) => Some(format!("[checkdef: {self}]")),
            Verdict::Interrupted | Verdict::NotRun if started => {
                Some("[checkdef: interrupted]".to_owned())
            }
            Verdict::Interrupted | Verdict::NotRun => {
                Some("[checkdef: not started, interrupted]".to_owned())
            }
            Verdict::OverBudget(_) if started => Some(format!("[checkdef: {self}]")),
            Verdict::OverBudget(_) => Some(format!("[checkdef: not started: {self}]")),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Passed => f.write_str("passed"),
            Verdict::Exit(c) => write!(f, "exit {c}"),
            Verdict::Signal(s) => write!(f, "killed by {}", crate::process::signal_name(*s)),
            Verdict::TimedOut(d) => write!(f, "timed out after {}", crate::duration::display(*d)),
            Verdict::CouldNotStart(why) => write!(f, "could not start: {why}"),
            Verdict::CouldNotEnter(why) => {
                write!(f, "could not start: entering the sandbox: {why}")
            }
            Verdict::Interrupted => f.write_str("interrupted"),
            Verdict::NotRun => f.write_str("not run (interrupted)"),
            Verdict::OverBudget(d) => write!(
                f,
                "not finished within the push budget of {}",
                crate::duration::display(*d)
            ),
            Verdict::Lost(why) => f.write_str(why),
            Verdict::UndeclaredReads(_) => {
                f.write_str("exit 0, but read files that are not its inputs")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub verdict: Verdict,
    pub duration: Duration,
    pub log: Vec<u8>,
}

impl ExecOutcome {
    /// An outcome for a check stopped before it started (while it waited for another
    /// process's run of the same check).
    pub fn stopped() -> ExecOutcome {
        ExecOutcome {
            verdict: Verdict::NotRun,
            log: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// An outcome for a check that was interrupted before anything of it could be kept.
    pub fn interrupted() -> ExecOutcome {
        ExecOutcome {
            verdict: Verdict::Interrupted,
            log: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// An outcome for a check that could not start.
    pub fn not_started(why: String) -> ExecOutcome {
        ExecOutcome {
            log: format!("checkdef: could not start the check: {why}\n").into_bytes(),
            verdict: Verdict::CouldNotStart(why),
            duration: Duration::ZERO,
        }
    }
}

/// Called with each piece of live output (lines, and `\r` progress redraws), for `-v` streaming
/// and the progress bar; see [`super::lines`].
pub type LineSink = Arc<dyn Fn(Piece<'_>) + Send + Sync>;

/// Why checkdef asked the supervisor to stop the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
}

/// Run `spec`. `cancel` flipping to true, or the time limit, stops the whole process group
/// (TERM, then KILL after a grace period); a cancelled run fails with [`Verdict::Interrupted`].
pub async fn execute(
    spec: &ExecSpec,
    cancel: watch::Receiver<bool>,
    on_line: Option<LineSink>,
) -> ExecOutcome {
    let (_open, gate) = watch::channel(true);
    execute_gated(spec, cancel, on_line, gate).await
}

/// [`execute`] for a process that is started ahead of its turn (a warm check's holder sets its
/// sandbox up while other checks run): its time limit and its duration count from the moment
/// `gate` turns true (or from the start, if the process ends first).
pub async fn execute_gated(
    spec: &ExecSpec,
    mut cancel: watch::Receiver<bool>,
    on_line: Option<LineSink>,
    gate: watch::Receiver<bool>,
) -> ExecOutcome {
    match run(spec, &mut cancel, on_line, gate).await {
        Ok(o) => o,
        Err(e) => ExecOutcome::not_started(describe_spawn_error(&e, spec)),
    }
}

async fn run(
    spec: &ExecSpec,
    cancel: &mut watch::Receiver<bool>,
    on_line: Option<LineSink>,
    mut gate: watch::Receiver<bool>,
) -> std::io::Result<ExecOutcome> {
    let mut started = Instant::now();
    let mut open = *gate.borrow_and_update();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let mut cmd = tokio::process::Command::new(&spec.supervisor);
    cmd.arg0("checkdef")
        .args(supervise::args(
            crate::process::GRACE,
            &spec.cwd,
            &spec.argv,
        ))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a Ctrl-C on the terminal reaches checkdef only, which then asks the
        // supervisor to stop the check in order.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    drop(cmd); // closes our copy of the supervisor's end of the socket
    let (mut rd, mut wr) = tokio::net::UnixStream::from_std(ours)?.into_split();
    let log = Arc::new(Mutex::new(LogBuf::default()));
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, log.clone(), on_line.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, log.clone(), on_line.clone())));

    let mut report = Vec::new();
    let mut stop: Option<Stop> = None;
    {
        let read = rd.read_to_end(&mut report);
        tokio::pin!(read);
        let far = Duration::MAX / 4;
        let deadline = tokio::time::sleep(if open { spec.timeout } else { far });
        tokio::pin!(deadline);
        // Only if the supervisor does not answer long after the grace period.
        let fallback = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(fallback);
        loop {
            let request = tokio::select! {
                _ = &mut read => break,
                r = gate.changed(), if !open => {
                    if r.is_err() || *gate.borrow_and_update() {
                        // Its turn (or the gate went: nothing will hold it back any more).
                        open = true;
                        started = Instant::now();
                        deadline.as_mut().reset(tokio::time::Instant::now() + spec.timeout);
                    }
                    continue;
                }
                _ = &mut deadline, if stop.is_none() => Stop::Timeout,
                _ = wait_cancel(cancel), if stop.is_none() => Stop::Cancel,
                _ = &mut fallback, if stop.is_some() => {
                    let _ = child.start_kill();
                    break;
                }
            };
            stop = Some(request);
            let _ = wr.write_all(&[supervise::TERMINATE]).await;
            fallback.as_mut().reset(
                tokio::time::Instant::now() + crate::process::GRACE + Duration::from_secs(10),
            );
        }
    }
    drop(wr);
    let status = child.wait().await?;
    for pump in [out, err].into_iter().flatten() {
        // Everything holding the pipes is gone once the supervisor has exited; the bound is
        // for a process that escaped it (e.g. handed the pipe to an unrelated daemon).
        let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    }
    let duration = started.elapsed();
    let mut log = std::mem::take(&mut *log.lock().expect("log lock")).finish();
    let report = Report::parse(&String::from_utf8_lossy(&report));
    let verdict = verdict_of(stop, report, &log, spec.timeout, status);
    // An interruption's marker waits for the engine, which knows whether the budget caused it.
    if !verdict.cancelled()
        && let Some(marker) = verdict.log_marker(true)
    {
        if !log.is_empty() && !log.ends_with(b"\n") {
            log.push(b'\n');
        }
        log.extend_from_slice(marker.as_bytes());
        log.push(b'\n');
    }
    Ok(ExecOutcome {
        verdict,
        duration,
        log,
    })
}

/// The verdict on a check from what checkdef asked of the supervisor (`stop`), what the
/// supervisor reported, and the start of the check's log (see [`entry_failure`]).
fn verdict_of(
    stop: Option<Stop>,
    report: Option<Report>,
    log: &[u8],
    timeout: Duration,
    status: std::process::ExitStatus,
) -> Verdict {
    match (stop, report) {
        (Some(Stop::Cancel), _) => Verdict::Interrupted,
        (Some(Stop::Timeout), _) => Verdict::TimedOut(timeout),
        (None, Some(Report::Exited(0))) => Verdict::Passed,
        (None, Some(Report::Exited(c))) => match entry_failure(c, log) {
            Some(why) => Verdict::CouldNotEnter(why),
            None => Verdict::Exit(c),
        },
        (None, Some(Report::Signaled(s))) => Verdict::Signal(s),
        (None, Some(Report::CannotStart(why))) => Verdict::CouldNotStart(why),
        (None, None) => Verdict::Lost(format!(
            "checkdef's supervisor stage ended without a report ({status})"
        )),
    }
}

/// A spawn error of the supervisor stage, said as what it is.
fn describe_spawn_error(e: &std::io::Error, spec: &ExecSpec) -> String {
    if e.raw_os_error() == Some(libc::E2BIG) {
        let len: usize = spec.argv.iter().map(|a| a.len() + 1).sum();
        let env: usize = spec.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        return format!(
            "{e}: the command is {len} bytes and its environment {env} (Linux limits one argument to 128 KiB); put a long command in a script"
        );
    }
    if e.kind() == std::io::ErrorKind::NotFound {
        return format!(
            "{e}: checkdef cannot re-execute itself as {} (is /proc mounted?)",
            spec.supervisor.display()
        );
    }
    e.to_string()
}

pub(crate) async fn wait_cancel(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    log: Arc<Mutex<LogBuf>>,
    on_line: Option<LineSink>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut splitter = Splitter::default();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        log.lock().expect("log lock").push(chunk);
        if let Some(sink) = &on_line {
            splitter.push(chunk, &mut |p| sink(p));
        }
    }
    if let Some(sink) = &on_line {
        splitter.finish(&mut |p| sink(p));
    }
}

/// A log that keeps at most [`MAX_LOG_BYTES`]: the first half and the most recent half.
#[derive(Default)]
struct LogBuf {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl LogBuf {
    fn push(&mut self, mut data: &[u8]) {
        let half = MAX_LOG_BYTES / 2;
        if self.head.len() < half {
            let take = data.len().min(half - self.head.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        self.tail.extend(data);
        while self.tail.len() > half {
            let excess = self.tail.len() - half;
            self.tail.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn finish(self) -> Vec<u8> {
        let mut out = self.head;
        if self.dropped > 0 {
            out.extend_from_slice(
                format!("\n[checkdef: {} bytes of output omitted]\n", self.dropped).as_bytes(),
            );
        }
        out.extend(self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_that_could_not_be_entered_is_a_check_that_could_not_start() {
        let log =
            b"checkdef: could not enter the sandbox: mounting the overlay at /r: ENOENT\nmore\n";
        assert_eq!(
            entry_failure(125, log).as_deref(),
            Some("mounting the overlay at /r: ENOENT")
        );
        let v = Verdict::CouldNotEnter("mounting the overlay at /r: ENOENT".into());
        assert_eq!(
            v.to_string(),
            "could not start: entering the sandbox: mounting the overlay at /r: ENOENT"
        );
        // The entry stage's own exit code, as the check's shell would have reported it.
        assert_eq!(v.exit_code(), Some(125));
        // Another exit code, or a log that does not start with the entry's message, is the
        // check's own exit.
        assert_eq!(entry_failure(1, log), None);
        assert_eq!(entry_failure(125, b"some output\n"), None);
    }

    #[test]
    fn failures_say_what_happened() {
        assert_eq!(Verdict::Exit(3).to_string(), "exit 3");
        assert_eq!(Verdict::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(
            Verdict::TimedOut(Duration::from_secs(3)).to_string(),
            "timed out after 3s"
        );
        assert_eq!(
            Verdict::CouldNotStart("Argument list too long (os error 7)".into()).to_string(),
            "could not start: Argument list too long (os error 7)"
        );
    }

    #[test]
    fn status_exit_code_and_reason_follow_from_the_verdict() {
        let budget = Verdict::OverBudget(Duration::from_secs(180));
        let all = [
            Verdict::Passed,
            Verdict::Exit(3),
            Verdict::Signal(9),
            Verdict::TimedOut(Duration::from_secs(3)),
            Verdict::CouldNotStart("x".into()),
            Verdict::CouldNotEnter("y".into()),
            Verdict::Interrupted,
            Verdict::NotRun,
            budget.clone(),
            Verdict::Lost("z".into()),
            Verdict::UndeclaredReads(2),
        ];
        for v in &all {
            // Only one variant passes; every other one is a failure with a reason.
            assert_eq!(v.passed(), *v == Verdict::Passed, "{v:?}");
            assert_eq!(v.status() == Status::Passed, v.passed(), "{v:?}");
            assert_eq!(v.reason().is_none(), v.passed(), "{v:?}");
        }
        let codes: Vec<Option<i32>> = all.iter().map(Verdict::exit_code).collect();
        assert_eq!(
            codes,
            [
                Some(0),
                Some(3),
                None,
                None,
                None,
                Some(125),
                None,
                None,
                None,
                None,
                Some(0)
            ]
        );
        // The log markers, as they always read.
        assert_eq!(
            Verdict::Interrupted.log_marker(true).as_deref(),
            Some("[checkdef: interrupted]")
        );
        assert_eq!(
            Verdict::NotRun.log_marker(true).as_deref(),
            Some("[checkdef: interrupted]")
        );
        assert_eq!(
            Verdict::NotRun.log_marker(false).as_deref(),
            Some("[checkdef: not started, interrupted]")
        );
        assert_eq!(
            budget.log_marker(true).as_deref(),
            Some("[checkdef: not finished within the push budget of 3m]")
        );
        assert_eq!(
            budget.log_marker(false).as_deref(),
            Some("[checkdef: not started: not finished within the push budget of 3m]")
        );
        assert_eq!(
            Verdict::TimedOut(Duration::from_secs(3))
                .log_marker(true)
                .as_deref(),
            Some("[checkdef: timed out after 3s]")
        );
        assert_eq!(Verdict::Exit(1).log_marker(true), None);
        assert_eq!(Verdict::Signal(libc::SIGSEGV).log_marker(true), None);
        assert!(
            Verdict::Signal(libc::SIGKILL)
                .log_marker(true)
                .is_some_and(|m| m.contains("out-of-memory killer"))
        );
        assert_eq!(Verdict::Passed.log_marker(true), None);
    }

    #[test]
    fn huge_logs_keep_head_and_tail() {
        let mut l = LogBuf::default();
        l.push(b"HEAD");
        for _ in 0..(MAX_LOG_BYTES / 1000) * 2 {
            l.push(&[b'x'; 1000]);
        }
        l.push(b"TAIL");
        let out = l.finish();
        assert!(out.len() <= MAX_LOG_BYTES + 100);
        assert!(out.starts_with(b"HEAD"));
        assert!(out.ends_with(b"TAIL"));
        assert!(String::from_utf8_lossy(&out).contains("omitted"));
    }
}
