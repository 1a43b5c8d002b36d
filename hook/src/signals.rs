//! Ctrl-C, SIGTERM and SIGHUP, from the first moment of a command that runs anything.
//!
//! Before, only the run phase listened (tokio's signal streams, registered when the checks
//! started): a signal during the plan (a slow fingerprint query, a `.pth` that sleeps) either
//! killed checkdef at once and left the query running in its own process group, or, when
//! checkdef had inherited SIGINT ignored (started by `setsid cmd &` or a job-control-less
//! shell), was lost while the run went on to store results. Now [`install`] puts one handler
//! on both signals at the start of the command; it records the first signal and writes a byte to
//! a pipe. Blocking waits ([`crate::process::run_bounded`]) poll that pipe and stop what they
//! started, the run phase awaits it ([`wait`]), and the command exits 130 with nothing stored.
//!
//! The handler only does two async-signal-safe things (an atomic store and `write(2)` to a
//! non-blocking pipe), and keeps `errno`.
use std::os::fd::{BorrowedFd, FromRawFd as _, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The write end of the wake-up pipe, for the handler (-1 before [`install`]).
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// The read end, for waiters.
static READ: OnceLock<OwnedFd> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: errno is thread-local; restoring it is what a handler must do.
    #[allow(unsafe_code)]
    let saved = unsafe { *libc::__errno_location() };
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) on a descriptor this process keeps open for its whole life;
        // a full pipe (EAGAIN) only means a waiter has a byte to read already.
        #[allow(unsafe_code)]
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
    // SAFETY: as above.
    #[allow(unsafe_code)]
    unsafe {
        *libc::__errno_location() = saved;
    }
}

/// Handle SIGINT, SIGTERM and SIGHUP from now on (idempotent). SIGHUP is what a closed
/// terminal or a dropped ssh connection sends: its default action left the sandboxes behind. A signal that was ignored when checkdef
/// started is handled as well: the run phase always did, and one rule for the whole command is
/// what a user can predict.
pub fn install() -> std::io::Result<()> {
    if READ.get().is_some() {
        return Ok(());
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    #[allow(unsafe_code)]
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two new descriptors that nothing else owns; the write end is kept for ever (the
    // handler may run at any time until the process ends).
    #[allow(unsafe_code)]
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    if READ.set(read).is_err() {
        // Another thread installed it meanwhile.
        // SAFETY: our own new descriptor.
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fds[1]);
        }
        return Ok(());
    }
    WAKE.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; SA_RESTART
        // keeps other system calls from failing with EINTR.
        #[allow(unsafe_code)]
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The signal that asked this command to stop, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// A descriptor that becomes readable when a signal arrives (never read from here), for
/// blocking waits to poll beside their own; `None` before [`install`].
pub fn wake_fd() -> Option<BorrowedFd<'static>> {
    use std::os::fd::AsFd as _;
    READ.get().map(|fd| fd.as_fd())
}

/// Wait (in the runtime) until a signal arrives; never returns without [`install`].
pub async fn wait() {
    loop {
        if received().is_some() {
            return;
        }
        let Some(fd) = READ.get().and_then(|fd| fd.try_clone().ok()) else {
            return std::future::pending().await;
        };
        // SAFETY: `fd` is an OwnedFd the AsyncFd owns: open, and the same, for its whole life.
        #[allow(unsafe_code)]
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        let Ok(afd) = registered else {
            return std::future::pending().await;
        };
        // Readable as long as a byte is in the pipe: nothing reads it, every waiter sees it.
        if let Ok(mut guard) = afd.readable().await {
            guard.retain_ready();
        }
        if received().is_some() {
            return;
        }
    }
}
