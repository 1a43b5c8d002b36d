//! The supervisor stage: `checkdef __supervise [--grace-ms N] [--cwd DIR] -- PROGRAM ARGS...`,
//! a re-exec of checkdef that stands between checkdef and every check, so that no check outlives
//! checkdef, however checkdef ends (SIGKILL included).
//!
//! It is small and single-threaded, and is dispatched from `main` before any runtime starts.
//! It makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`: every orphaned descendant of the
//! check is reparented to it, not to init, even one that left the check's process group with
//! `setsid`), enters `--cwd`, and spawns `PROGRAM ARGS` in a process group of its own. Its stdin is
//! one end of a socket pair whose other end only checkdef holds:
//!
//! * checkdef writes `t` to ask for termination (a timeout or Ctrl-C), and end of file on that
//!   socket means checkdef is gone: either way the check's group gets SIGTERM, up to the grace
//!   period to finish, then SIGKILL;
//! * when the program exits, whatever it left running (its group, and every descendant that was
//!   reparented here) is killed, so nothing holds the log pipes or the sandbox;
//! * last, the supervisor writes one line back on the socket — `exited CODE`, `signaled SIGNAL`
//!   or `cannot-start MESSAGE` — and exits 0.
//!
//! Why not `PR_SET_PDEATHSIG`: it fires when the parent *thread* that forked ends, not the parent
//! process, and a signal the supervisor cannot handle without `unsafe` would kill it before it
//! could clean up. End of file on a socket is exact and needs neither.
//!
//! Who watches the supervisor? It does not start `PROGRAM` itself but a **guard**
//! (`checkdef __guard --parent PID -- PROGRAM ARGS...`, [`guard_main`]), the leader of the
//! check's process group, which runs `PROGRAM` and waits on two pidfds: its program's and the
//! supervisor's. When the program ends, the guard exits with its status (re-raising a signal),
//! so the supervisor sees the program's own status. When the supervisor ends first (SIGKILLed,
//! or killed by a terminal's signal), the guard kills everything below it: it is a child
//! subreaper too, so every descendant that is not in the group any more is still its child.
//! A parent-death signal could only kill the guard itself, not the processes below it; a pidfd
//! of the parent lets the guard act on the parent's death. The guard checks that its parent
//! is still the supervisor *after* opening that pidfd, so a supervisor that dies before the
//! guard starts watching is noticed as well.
//!
//! The stage only spawns the argv it is given, so other stages (a namespace sandbox) chain after
//! it: checkdef → supervisor → guard → sandbox → `sh -c`.
use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::process::{group_alive, kill_group};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__supervise";

/// The hidden subcommand of the guard stage between the supervisor and the program.
pub const GUARD: &str = "__guard";

/// The message checkdef writes to ask for termination.
pub const TERMINATE: u8 = b't';

/// How the supervised program ended, as reported on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Exited(i32),
    Signaled(i32),
    CannotStart(String),
}

impl Report {
    pub fn render(&self) -> String {
        match self {
            Report::Exited(c) => format!("exited {c}\n"),
            Report::Signaled(s) => format!("signaled {s}\n"),
            // One line: the message must not contain a newline.
            Report::CannotStart(m) => format!("cannot-start {}\n", m.replace('\n', " ")),
        }
    }

    pub fn parse(text: &str) -> Option<Report> {
        let line = text.strip_suffix('\n')?;
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "exited" => rest.parse().ok().map(Report::Exited),
            "signaled" => rest.parse().ok().map(Report::Signaled),
            "cannot-start" => Some(Report::CannotStart(rest.to_owned())),
            _ => None,
        }
    }
}

/// The argv (after the program) that runs `argv` under the supervisor.
pub fn args(grace: Duration, cwd: &std::path::Path, argv: &[OsString]) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        SUBCOMMAND.into(),
        "--grace-ms".into(),
        grace.as_millis().to_string().into(),
        "--cwd".into(),
        cwd.as_os_str().to_owned(),
        "--".into(),
    ];
    out.extend(argv.iter().cloned());
    out
}

struct Args {
    grace: Duration,
    cwd: Option<PathBuf>,
    argv: Vec<OsString>,
}

fn parse_args(args: &[OsString]) -> Result<Args, String> {
    let mut grace = crate::process::GRACE;
    let mut cwd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--") => {
                let argv: Vec<OsString> = it.cloned().collect();
                if argv.is_empty() {
                    return Err("no program after --".into());
                }
                return Ok(Args { grace, cwd, argv });
            }
            Some("--grace-ms") => {
                let v = it.next().and_then(|v| v.to_str()?.parse().ok());
                grace = Duration::from_millis(v.ok_or("--grace-ms needs milliseconds")?);
            }
            Some("--cwd") => cwd = Some(PathBuf::from(it.next().ok_or("--cwd needs a path")?)),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    Err("missing -- PROGRAM".into())
}

/// Entry point of the stage; `args` follow the subcommand.
// Dispatched before any context or printer exists (single-threaded, small): a bad command line
// is reported on stderr directly.
#[allow(clippy::print_stderr)]
pub fn main(args: &[OsString]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("checkdef {SUBCOMMAND}: {e} (an internal stage of checkdef run)");
            return ExitCode::from(2);
        }
    };
    default_internal_signals();
    let stdin = std::io::stdin();
    let ctl = stdin.as_fd();
    let report = supervise(&args, ctl);
    // If checkdef is gone nobody reads this; EPIPE is fine (Rust ignores SIGPIPE).
    let _ = rustix::io::write(ctl, report.render().as_bytes());
    ExitCode::SUCCESS
}

fn supervise(args: &Args, ctl: BorrowedFd<'_>) -> Report {
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        // Still useful without it: the group is killed, only setsid escapees are missed.
        let _ = writeln!(
            std::io::stderr(),
            "checkdef: warning: cannot become a child subreaper: {e}"
        );
    }
    if let Some(cwd) = &args.cwd
        && let Err(e) = std::env::set_current_dir(cwd)
    {
        return Report::CannotStart(format!("working directory {}: {e}", cwd.display()));
    }
    let program = &args.argv[0];
    // The program runs under a guard that kills it if this supervisor dies (see the module
    // documentation): a forked child of this process, the leader of a group of its own.
    let me = rustix::process::getpid();
    let guarded = fork_stage(Stage::NewGroup, || i32::from(guard(me, &args.argv)));
    let child_pid = match guarded {
        Ok(pid) => pid,
        Err(e) => {
            return Report::CannotStart(format!("{}: {e}", program.to_string_lossy()));
        }
    };
    let pid = child_pid.as_raw_nonzero().get() as u32;
    let mut status: Option<WaitStatus> = None;
    match rustix::process::pidfd_open(child_pid, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => {
            if !wait_exit_or_terminate(&pidfd, ctl) {
                terminate(pid, child_pid, args.grace, &mut status);
            }
        }
        // No pidfd (a kernel before 5.3): wait for the program; termination requests and
        // checkdef's death are then only noticed after it ends.
        Err(_) => {
            if let Ok(Some((_, st))) =
                rustix::process::waitpid(Some(child_pid), WaitOptions::empty())
            {
                status = Some(st);
            }
        }
    }
    sweep(pid, child_pid, &mut status);
    match status {
        Some(st) => match (st.exit_status(), st.terminating_signal()) {
            (Some(code), _) => Report::Exited(code),
            (None, Some(sig)) => Report::Signaled(sig),
            _ => Report::Signaled(Signal::KILL.as_raw()),
        },
        None => Report::Signaled(Signal::KILL.as_raw()),
    }
}

/// How a forked stage starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The leader of a process group of its own, stdin on `/dev/null` (the guard: the
    /// supervisor's stdin is its socket to checkdef, which must not outlive the supervisor).
    NewGroup,
    /// In its parent's group, with its parent's stdin (the sandbox entry below the guard).
    Inherit,
}

/// Run `stage` in a forked child and return the child's pid; the child exits with what `stage`
/// returns. Instead of an `exec` of checkdef's own binary for the next stage (dynamic linking,
/// relocations and start-up of a 15 MB executable, twice per check), the child goes on in this
/// process's image; like an exec'd one it holds no descriptor but 0, 1 and 2.
fn fork_stage(how: Stage, stage: impl FnOnce() -> i32) -> std::io::Result<Pid> {
    // SAFETY: the supervisor and the guard are single-threaded (dispatched from `main` before
    // any runtime starts; they start no thread), so the child of `fork` is a complete copy of
    // the only thread, with no lock held by another: it may run any code. It never returns
    // into its caller: it ends in `_exit` below.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        return Pid::from_raw(pid).ok_or_else(|| std::io::Error::other("fork returned no pid"));
    }
    if how == Stage::NewGroup {
        let _ = rustix::process::setpgid(None, None);
        if let Ok(null) = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        ) {
            let mut stdin = unsafe_stdin();
            let _ = rustix::io::dup2(&null, &mut stdin);
            std::mem::forget(stdin);
        }
    }
    // What an exec would have closed (descriptors are close-on-exec here), closed now.
    // SAFETY: close_range(2) takes plain integers and closes descriptors of this process only;
    // nothing in this child uses one above 2 afterwards.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let code = stage();
    let _ = std::io::stderr().flush();
    // SAFETY: ends this process at once, without running the parent's exit handlers twice.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

/// Descriptor 0 as an owned descriptor, to `dup2` onto (forgotten afterwards, never closed).
fn unsafe_stdin() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: descriptor 0 is open (the stage's stdin); the caller forgets the value, so it is
    // never closed through it.
    #[allow(unsafe_code)]
    unsafe {
        std::os::fd::OwnedFd::from_raw_fd(0)
    }
}

/// Entry point of the guard stage as a command (`__guard --parent PID -- PROGRAM ARGS...`);
/// `args` follow the subcommand. The supervisor forks its guard ([`guard`]); the command stays
/// for a checkdef of another version that execs this one.
pub fn guard_main(args: &[OsString]) -> ExitCode {
    let (parent, argv) = match args {
        [flag, pid, dashdash, argv @ ..]
            if flag == "--parent" && dashdash == "--" && !argv.is_empty() =>
        {
            match pid
                .to_str()
                .and_then(|p| p.parse().ok())
                .and_then(Pid::from_raw)
            {
                Some(pid) => (pid, argv),
                None => return guard_usage(),
            }
        }
        _ => return guard_usage(),
    };
    ExitCode::from(guard(parent, argv))
}

/// The guard: run `argv` and exit with its status; the program's failure to start is reported
/// on stderr with status 127 (the supervisor's caller names it from the log). When `argv` is
/// checkdef's own sandbox entry, it is forked rather than exec'd.
fn guard(parent: Pid, argv: &[OsString]) -> u8 {
    // Watch the parent first, then make sure it is still our parent: a supervisor that died
    // before `pidfd_open` has left us to init (or another subreaper) and there is no one to
    // report to.
    let parent_fd = rustix::process::pidfd_open(parent, rustix::process::PidfdFlags::empty());
    if rustix::process::getppid() != Some(parent) {
        return GUARD_ORPHANED;
    }
    let Ok(parent_fd) = parent_fd else {
        // No pidfd (a kernel before 5.3): become the program, as without a guard.
        let err = Command::new(&argv[0]).args(&argv[1..]).exec();
        let _ = writeln!(
            std::io::stderr(),
            "checkdef: cannot start {}: {err}",
            argv[0].to_string_lossy()
        );
        return 127;
    };
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let started = if is_sandbox_entry(argv) {
        let rest = argv[2..].to_vec();
        fork_stage(Stage::Inherit, move || {
            crate::run::isolate::entry_main(&rest)
        })
    } else {
        Command::new(&argv[0])
            .args(&argv[1..])
            .spawn()
            .and_then(|c| {
                Pid::from_raw(c.id() as i32).ok_or_else(|| std::io::Error::other("no pid"))
            })
    };
    let child_pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            // The supervisor reports what the check could not start as; keep the cause.
            let _ = writeln!(
                std::io::stderr(),
                "checkdef: cannot start {}: {e}",
                argv[0].to_string_lossy()
            );
            return 127;
        }
    };
    let Ok(child_fd) = rustix::process::pidfd_open(child_pid, rustix::process::PidfdFlags::empty())
    else {
        return pass_on(rustix::process::waitpid(
            Some(child_pid),
            WaitOptions::empty(),
        ));
    };
    loop {
        let mut fds = [
            PollFd::new(&child_fd, PollFlags::IN),
            PollFd::new(&parent_fd, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        if !fds[0].revents().is_empty() {
            // Descendants left behind become the supervisor's when we exit (it is the next
            // subreaper up), and it kills them.
            return pass_on(rustix::process::waitpid(
                Some(child_pid),
                WaitOptions::empty(),
            ));
        }
        if !fds[1].revents().is_empty() {
            break;
        }
    }
    // The supervisor is gone: kill every descendant. All of them are our children or become
    // ours when their parent dies (we are a subreaper), so killing children until none is left
    // reaches the whole tree, including those that left the process group.
    loop {
        for pid in children() {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    // Last, the group we lead, ourselves with it: a warm check is no descendant of ours (the
    // warm server forked it) but joined this group; its server reaps it and kills what it left.
    kill_group(
        rustix::process::getpgrp().as_raw_nonzero().get() as u32,
        Signal::KILL,
    );
    GUARD_ORPHANED
}

/// The guard's status when its supervisor died: nobody reads it.
const GUARD_ORPHANED: u8 = 125;

fn guard_usage() -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "checkdef {GUARD}: internal stage of checkdef run: {GUARD} --parent PID -- PROGRAM ARGS..."
    );
    ExitCode::from(2)
}

/// Exit as the program did: its exit code, or the same signal.
fn pass_on(status: rustix::io::Result<Option<(Pid, WaitStatus)>>) -> u8 {
    let Ok(Some((_, st))) = status else {
        return 127;
    };
    if let Some(code) = st.exit_status() {
        return code as u8;
    }
    if let Some(sig) = st.terminating_signal() {
        if let Some(signal) = Signal::from_named_raw(sig) {
            // Rust's runtime handles SIGSEGV and SIGBUS (to report stack overflows); with its
            // handler the kill below would return, and the status would read 128+N.
            if signal == Signal::SEGV || signal == Signal::BUS {
                default_disposition(sig);
            }
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        }
        // Still here: a signal we ignore (SIGPIPE) or cannot name; the shell's convention.
        return (128 + sig).clamp(0, 255) as u8;
    }
    127
}

/// glibc's `posix_spawn` (how checkdef starts this stage) leaves the two signals glibc keeps
/// for itself (32 and 33, below `SIGRTMIN`) ignored in the new program, and ignored signals
/// stay ignored across `exec`: every check would inherit them, where a process a shell starts
/// has none. Back to the default, with the raw system call (glibc's `sigaction` refuses them);
/// this stage is single-threaded and nobody sends it either.
#[cfg(target_arch = "x86_64")]
pub(crate) fn default_internal_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    for sig in [32, 33] {
        let action = KernelSigaction {
            handler: 0, // SIG_DFL
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction with a valid, initialised kernel sigaction of the kernel's
        // layout (8-byte mask) and no old-action pointer; SIG_DFL needs no restorer.
        #[allow(unsafe_code)]
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// Elsewhere the kernel's sigaction layout differs: left as it is.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn default_internal_signals() {}

/// The default disposition for `sig`.
fn default_disposition(sig: i32) {
    // SAFETY: setting a signal's disposition to the default touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Whether `argv` is checkdef's own sandbox entry (`checkdef __sandbox …`, as the run builds it
/// from its own executable), which the guard forks instead of executing.
fn is_sandbox_entry(argv: &[OsString]) -> bool {
    argv.len() > 2
        && argv[1] == crate::run::isolate::ENTRY
        && std::env::current_exe().is_ok_and(|me| std::path::Path::new(&argv[0]) == me)
}

/// Block until the program exits (`true`) or termination is asked for or checkdef is gone
/// (`false`).
fn wait_exit_or_terminate(pidfd: &impl AsFd, ctl: BorrowedFd<'_>) -> bool {
    loop {
        let mut fds = [
            PollFd::new(pidfd, PollFlags::IN),
            PollFd::from_borrowed_fd(ctl, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
        if !fds[0].revents().is_empty() {
            return true;
        }
        if !fds[1].revents().is_empty() {
            let mut b = [0u8; 1];
            match rustix::io::read(ctl, &mut b) {
                Ok(1) if b[0] != TERMINATE => continue,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                // `t`, end of file (checkdef is gone) or an error on the socket.
                _ => return false,
            }
        }
    }
}

/// SIGTERM to the program's group and every reparented descendant; up to `grace` for all of
/// them to finish.
fn terminate(pgid: u32, child: Pid, grace: Duration, status: &mut Option<WaitStatus>) {
    kill_group(pgid, Signal::TERM);
    for pid in children() {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        reap_ready(child, status);
        if !group_alive(pgid) && children().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kill everything left — the group, then every child of ours, repeatedly, as killing one
/// reparents its own children here — and reap until no child is left.
fn sweep(pgid: u32, child: Pid, status: &mut Option<WaitStatus>) {
    loop {
        kill_group(pgid, Signal::KILL);
        for pid in children() {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, st))) => {
                if pid == child {
                    *status = Some(st);
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            // ECHILD: nothing is left.
            Err(_) => return,
        }
    }
}

/// Reap every child that has already ended, keeping the program's status.
fn reap_ready(child: Pid, status: &mut Option<WaitStatus>) {
    while let Ok(Some((pid, st))) = rustix::process::wait(WaitOptions::NOHANG) {
        if pid == child {
            *status = Some(st);
        }
    }
}

/// Our children: `/proc/self/task/<pid>/children` (this stage is single-threaded), else a scan of
/// `/proc/*/stat` for our pid as the parent.
fn children() -> Vec<Pid> {
    let me = rustix::process::getpid();
    let raw = me.as_raw_nonzero().get();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{raw}/children")) {
        return text
            .split_ascii_whitespace()
            .filter_map(|p| p.parse().ok().and_then(Pid::from_raw))
            .collect();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(1)?.parse().ok())
                    == Some(raw)
            })
        })
        .filter_map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Exited(0),
            Report::Exited(3),
            Report::Signaled(9),
            Report::CannotStart("/bin/sh: No such file or directory (os error 2)".into()),
        ] {
            assert_eq!(Report::parse(&r.render()), Some(r));
        }
        assert_eq!(
            Report::parse(&Report::CannotStart("a\nb".into()).render()),
            Some(Report::CannotStart("a b".into()))
        );
        assert_eq!(Report::parse(""), None);
        assert_eq!(Report::parse("exited x\n"), None);
    }

    #[test]
    fn arguments_round_trip() {
        let argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), "echo --cwd".into()];
        let a = args(Duration::from_millis(1500), "/tmp/x".as_ref(), &argv);
        let parsed = parse_args(&a[1..]).unwrap();
        assert_eq!(parsed.grace, Duration::from_millis(1500));
        assert_eq!(parsed.cwd.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert_eq!(parsed.argv, argv);
        assert!(parse_args(&["--".into()]).is_err());
    }
}
