//! Small, bounded child processes: process-group signals, signal names, and
//! [`run_bounded`], which runs a short command (a fingerprint) with a time limit and stops
//! reading its output when the command itself exits.
//!
//! Why not `Command::output()`: it reads until every writer of the pipes has closed them, so a
//! command that leaves a background child holding its stdout (`echo v; sleep 25 &`) holds the
//! caller for as long as that child lives, and one that never ends holds it for ever.
use std::io::ErrorKind;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal};

/// How long a process group gets between SIGTERM and SIGKILL (Bazel's process-wrapper gives
/// its `--local_termination_grace_seconds`, 15 s by default; checks here are local and a
/// push is waiting, so less).
pub const GRACE: Duration = Duration::from_secs(3);

/// Send `sig` to the process group `pgid`; a group that is already gone is not an error.
pub fn kill_group(pgid: u32, sig: Signal) {
    if let Some(pid) = pid(pgid) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// Whether any process (zombies included) is still in group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    pid(pgid).is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
}

/// A pid that is safe to signal as a group: never 0 or 1 (ourselves, init, everything).
fn pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw)
        .ok()
        .filter(|p| *p > 1)
        .and_then(Pid::from_raw)
}

/// `SIGKILL` for 9, `signal 64` for numbers without a common name.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// Pids of children that are meant to outlive this process (a detached background run):
/// [`sweep_orphans`] leaves them alone.
static DETACHED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Make this process the reaper of every orphan below it (`PR_SET_CHILD_SUBREAPER`), so that
/// what a command's descendants leave behind after they end is reparented here, not to init,
/// even when it left their process group and session (a `.pth` that starts a daemon with
/// `start_new_session`, in a fingerprint query or in a warm server's start-up, escapes every
/// group kill). [`sweep_orphans`] kills them when the command is done. Checks have their own
/// reaper (the supervisor stage); this catches what runs outside one. A checkdef killed by
/// SIGKILL cannot sweep: what was adopted then goes to init.
pub fn adopt_orphans() {
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// Record `pid`, a child started to outlive this process, so that no sweep kills it.
pub fn detached(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        DETACHED.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }
}

/// The children of this process (every thread's), zombies included.
fn children_of_mine() -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Kill and reap every child of this process but the [`detached`] ones, repeatedly (killing one
/// reparents its own children here), until none is left; how many were killed. Call it when
/// every child this command started itself has been waited for: what is left was adopted.
pub fn sweep_orphans() -> usize {
    let keep = DETACHED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut killed = 0;
    // Bounded: a fork bomb below us must not hold the exit for ever.
    for _ in 0..1000 {
        let left: Vec<i32> = children_of_mine()
            .into_iter()
            .filter(|p| !keep.contains(p))
            .collect();
        if left.is_empty() {
            break;
        }
        for &p in &left {
            if let Some(pid) = Pid::from_raw(p) {
                if rustix::process::kill_process(pid, Signal::KILL).is_ok() {
                    killed += 1;
                }
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            }
        }
    }
    killed
}

/// What [`run_bounded`] collected.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("could not start: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("timed out after {}", crate::duration::display(*.0))]
    TimedOut(Duration),
    #[error("printed more than {} MiB", .0 >> 20)]
    TooMuchOutput(usize),
    #[error("interrupted by {}", signal_name(*.0))]
    Interrupted(i32),
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// Run `cmd` (stdin closed, stdout and stderr captured) in its own process group for at most
/// `limit`, keeping at most `max_output` bytes of stdout. Output ends when the command's own
/// process exits: whatever it wrote is read, then the rest of its group (background children
/// that may still hold the pipes) is killed. At the limit the group gets SIGTERM, then SIGKILL
/// after [`GRACE`].
pub fn run_bounded(
    cmd: &mut Command,
    limit: Duration,
    max_output: usize,
) -> Result<Captured, BoundedError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(BoundedError::Spawn)?;
    let pgid = child.id();
    let result = collect(&mut child, limit, max_output);
    // Success or not, nothing of the group outlives this call.
    kill_group(pgid, Signal::KILL);
    let status = child.wait().map_err(BoundedError::Io)?;
    result.map(|(stdout, stderr)| Captured {
        status,
        stdout,
        stderr,
    })
}

type Outputs = (Vec<u8>, Vec<u8>);

fn collect(child: &mut Child, limit: Duration, max_output: usize) -> Result<Outputs, BoundedError> {
    let io = BoundedError::Io;
    let out_pipe = child
        .stdout
        .take()
        .ok_or_else(|| io(ErrorKind::Other.into()))?;
    let err_pipe = child
        .stderr
        .take()
        .ok_or_else(|| io(ErrorKind::Other.into()))?;
    let pid = Pid::from_child(child);
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| io(e.into()))?;
    for p in [out_pipe.as_fd(), err_pipe.as_fd()] {
        let flags = rustix::fs::fcntl_getfl(p).map_err(|e| io(e.into()))?;
        rustix::fs::fcntl_setfl(p, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| io(e.into()))?;
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut open = [true, true];
    let deadline = Instant::now() + limit;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            terminate(child.id(), &pidfd);
            return Err(BoundedError::TimedOut(limit));
        }
        let timeout = Timespec::try_from(remaining).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        if let Some(sig) = crate::signals::received() {
            terminate(child.id(), &pidfd);
            return Err(BoundedError::Interrupted(sig));
        }
        let mut fds = vec![PollFd::new(&pidfd, PollFlags::IN)];
        let pipes = [out_pipe.as_fd(), err_pipe.as_fd()];
        let watched: Vec<usize> = (0..2).filter(|&i| open[i]).collect();
        for &i in &watched {
            fds.push(PollFd::from_borrowed_fd(pipes[i], PollFlags::IN));
        }
        // A signal to checkdef (Ctrl-C, SIGTERM) wakes this wait too: see crate::signals.
        if let Some(wake) = crate::signals::wake_fd() {
            fds.push(PollFd::from_borrowed_fd(wake, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io(e.into())),
        }
        let exited = !fds[0].revents().is_empty();
        let ready: Vec<usize> = watched
            .iter()
            .zip(&fds[1..1 + watched.len()])
            .filter(|(_, f)| !f.revents().is_empty())
            .map(|(&i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let buf = if i == 0 { &mut stdout } else { &mut stderr };
            open[i] = drain(pipes[i], buf, max_output)?;
        }
        if exited {
            // Everything the command wrote before exiting is in the pipes now; a background
            // child may write more, but that is not the command's output.
            kill_group(child.id(), Signal::KILL);
            for (i, pipe) in pipes.iter().enumerate() {
                if open[i] {
                    let buf = if i == 0 { &mut stdout } else { &mut stderr };
                    drain(*pipe, buf, max_output)?;
                }
            }
            return Ok((stdout, stderr));
        }
    }
}

/// Read what `fd` holds now into `buf`; `false` at end of file.
fn drain(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, max: usize) -> Result<bool, BoundedError> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match rustix::io::read(fd, &mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                if buf.len() + n > max {
                    return Err(BoundedError::TooMuchOutput(max));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(rustix::io::Errno::AGAIN) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(BoundedError::Io(e.into())),
        }
    }
}

/// SIGTERM to the group, up to [`GRACE`] for the command to exit, then SIGKILL.
fn terminate(pgid: u32, pidfd: &impl AsFd) {
    kill_group(pgid, Signal::TERM);
    let grace = Timespec::try_from(GRACE).unwrap_or(Timespec {
        tv_sec: 3,
        tv_nsec: 0,
    });
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let _ = rustix::event::poll(&mut fds, Some(&grace));
    kill_group(pgid, Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn captures_both_streams_and_the_status() {
        let c = run_bounded(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(60),
            1 << 20,
        )
        .unwrap();
        assert_eq!(c.status.code(), Some(3));
        assert_eq!(c.stdout, b"out\n");
        assert_eq!(c.stderr, b"err\n");
    }

    #[test]
    fn output_larger_than_a_pipe_is_read_whole() {
        let c = run_bounded(
            &mut sh("head -c 300000 /dev/zero"),
            Duration::from_secs(60),
            1 << 20,
        )
        .unwrap();
        assert_eq!(c.stdout.len(), 300_000);
        let e = run_bounded(
            &mut sh("head -c 300000 /dev/zero"),
            Duration::from_secs(60),
            1000,
        )
        .unwrap_err();
        assert!(matches!(e, BoundedError::TooMuchOutput(1000)), "{e}");
    }

    #[test]
    fn a_background_child_holding_stdout_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo v; sleep 300 & echo $! > {}", pidfile.display());
        // The limit is far beyond the hang guard of the test harness: returning at all
        // shows the background child did not hold us.
        let c = run_bounded(&mut sh(&script), Duration::from_secs(3600), 1 << 20).unwrap();
        assert!(c.status.success());
        assert_eq!(c.stdout, b"v\n");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The leftover was killed with the group.
        assert!(gone(pid), "the background child {pid} survived");
    }

    /// Whether `pid` is gone or a zombie, waiting as long as a loaded machine may need for a
    /// SIGKILL to land (a hang guard, not a timing assertion).
    fn gone(pid: i32) -> bool {
        for _ in 0..600 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            if state.is_empty() || state.starts_with('Z') {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn a_command_that_never_ends_is_terminated_at_the_limit() {
        let e = run_bounded(&mut sh("sleep 300"), Duration::from_millis(200), 1 << 20).unwrap_err();
        assert!(matches!(e, BoundedError::TimedOut(_)));
        assert_eq!(e.to_string(), "timed out after 200ms");
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "signal 40");
    }
}
