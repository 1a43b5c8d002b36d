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

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The command exited with a non-zero code.
    Exit(i32),
    /// A signal ended it (not one checkdef sent).
    Signal(i32),
    /// It reached its `timeout`.
    TimedOut(Duration),
    /// It never ran: the sandbox, the exec of the supervisor or of the shell failed.
    CouldNotStart(String),
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
    Some(format!(
        "entering the sandbox: {}",
        String::from_utf8_lossy(line)
    ))
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Exit(c) => write!(f, "exit {c}"),
            Failure::Signal(s) => write!(f, "killed by {}", crate::process::signal_name(*s)),
            Failure::TimedOut(d) => write!(f, "timed out after {}", crate::duration::display(*d)),
            Failure::CouldNotStart(why) => write!(f, "could not start: {why}"),
            Failure::Interrupted => f.write_str("interrupted"),
            Failure::NotRun => f.write_str("not run (interrupted)"),
            Failure::OverBudget(d) => write!(
                f,
                "not finished within the push budget of {}",
                crate::duration::display(*d)
            ),
            Failure::Lost(why) => f.write_str(why),
            Failure::UndeclaredReads(_) => {
                f.write_str("exit 0, but read files that are not its inputs")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// `Some(code)` when the check's shell exited by itself.
    pub exit_code: Option<i32>,
    /// `None` when it passed.
    pub failure: Option<Failure>,
    pub duration: Duration,
    pub log: Vec<u8>,
}

impl ExecOutcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// True when the run was cancelled (Ctrl-C, SIGTERM): its outcome must never be stored.
    pub fn cancelled(&self) -> bool {
        matches!(self.failure, Some(Failure::Interrupted | Failure::NotRun))
    }

    /// An outcome for a check stopped before it started (while it waited for another
    /// process's run of the same check).
    pub fn stopped() -> ExecOutcome {
        ExecOutcome {
            exit_code: None,
            log: Vec::new(),
            failure: Some(Failure::NotRun),
            duration: Duration::ZERO,
        }
    }

    /// An outcome for a check that could not start.
    pub fn not_started(why: String) -> ExecOutcome {
        ExecOutcome {
            exit_code: None,
            log: format!("checkdef: could not start the check: {why}\n").into_bytes(),
            failure: Some(Failure::CouldNotStart(why)),
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
/// (TERM, then KILL after a grace period); a cancelled run fails with [`Failure::Interrupted`].
pub async fn execute(
    spec: &ExecSpec,
    mut cancel: watch::Receiver<bool>,
    on_line: Option<LineSink>,
) -> ExecOutcome {
    let started = Instant::now();
    match run(spec, &mut cancel, on_line, started).await {
        Ok(o) => o,
        Err(e) => ExecOutcome::not_started(describe_spawn_error(&e, spec)),
    }
}

async fn run(
    spec: &ExecSpec,
    cancel: &mut watch::Receiver<bool>,
    on_line: Option<LineSink>,
    started: Instant,
) -> std::io::Result<ExecOutcome> {
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
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        // Only if the supervisor does not answer long after the grace period.
        let fallback = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(fallback);
        loop {
            let request = tokio::select! {
                _ = &mut read => break,
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
    let exit_code = match (&report, stop) {
        (Some(Report::Exited(c)), None) => Some(*c),
        _ => None,
    };
    let failure = match (stop, report) {
        (Some(Stop::Cancel), _) => Some(Failure::Interrupted),
        (Some(Stop::Timeout), _) => Some(Failure::TimedOut(spec.timeout)),
        (None, Some(Report::Exited(0))) => None,
        (None, Some(Report::Exited(c))) => Some(match entry_failure(c, &log) {
            Some(why) => Failure::CouldNotStart(why),
            None => Failure::Exit(c),
        }),
        (None, Some(Report::Signaled(s))) => Some(Failure::Signal(s)),
        (None, Some(Report::CannotStart(why))) => Some(Failure::CouldNotStart(why)),
        (None, None) => Some(Failure::Lost(format!(
            "checkdef's supervisor stage ended without a report ({status})"
        ))),
    };
    match &failure {
        Some(Failure::TimedOut(_)) | Some(Failure::CouldNotStart(_)) | Some(Failure::Lost(_)) => {
            if let Some(f) = &failure {
                if !log.is_empty() && !log.ends_with(b"\n") {
                    log.push(b'\n');
                }
                log.extend_from_slice(format!("[checkdef: {f}]\n").as_bytes());
            }
        }
        _ => {}
    }
    Ok(ExecOutcome {
        exit_code,
        failure,
        duration,
        log,
    })
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
            Some("entering the sandbox: mounting the overlay at /r: ENOENT")
        );
        // Another exit code, or a log that does not start with the entry's message, is the
        // check's own exit.
        assert_eq!(entry_failure(1, log), None);
        assert_eq!(entry_failure(125, b"some output\n"), None);
    }

    #[test]
    fn failures_say_what_happened() {
        assert_eq!(Failure::Exit(3).to_string(), "exit 3");
        assert_eq!(Failure::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(
            Failure::TimedOut(Duration::from_secs(3)).to_string(),
            "timed out after 3s"
        );
        assert_eq!(
            Failure::CouldNotStart("Argument list too long (os error 7)".into()).to_string(),
            "could not start: Argument list too long (os error 7)"
        );
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
