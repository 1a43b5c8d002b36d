//! Running one check: `sh -c COMMAND` in its own process group, with a controlled environment,
//! stdout and stderr captured (interleaved, as they arrive) into one log.
//!
//! The process group matters twice: Ctrl-C/SIGTERM must stop every process a check started
//! (pytest workers, servers a test spawned), and when the check's shell exits, anything it left
//! running in the background is killed so it cannot hold the log pipes open or outlive the run.
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// Logs beyond this size keep their head and tail; the middle is replaced by a marker line.
pub const MAX_LOG_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub cwd: PathBuf,
    pub command: String,
    /// The complete environment of the check (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that starts `sh -c COMMAND` for us: the sandbox entry
    /// (`checkdef __sandbox --spec FILE --`, see `run/isolate.rs`). Empty: run `sh` directly.
    pub wrapper: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// `Some(code)` when the shell exited; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration: Duration,
    pub log: Vec<u8>,
    /// True when the run was cancelled (Ctrl-C, SIGTERM): its outcome must never be stored.
    pub cancelled: bool,
}

impl ExecOutcome {
    pub fn passed(&self) -> bool {
        !self.cancelled && self.exit_code == Some(0)
    }
}

/// Called with each complete output line (without the newline), for live streaming and progress.
pub type LineSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Run `spec`. `cancel` flipping to true kills the whole process group (TERM, then KILL after a
/// grace period) and returns with `cancelled = true`.
pub async fn execute(
    spec: &ExecSpec,
    mut cancel: watch::Receiver<bool>,
    on_line: Option<LineSink>,
) -> std::io::Result<ExecOutcome> {
    let started = Instant::now();
    let mut cmd = match spec.wrapper.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg("/bin/sh");
            c
        }
        None => tokio::process::Command::new("/bin/sh"),
    };
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|p| p as i32);
    let log = Arc::new(Mutex::new(LogBuf::default()));
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, log.clone(), on_line.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, log.clone(), on_line.clone())));

    let mut cancelled = *cancel.borrow();
    let status = if cancelled {
        kill_group(pgid, libc::SIGKILL);
        child.wait().await?
    } else {
        tokio::select! {
            st = child.wait() => st?,
            _ = wait_cancel(&mut cancel) => {
                cancelled = true;
                kill_group(pgid, libc::SIGTERM);
                match tokio::time::timeout(Duration::from_secs(3), child.wait()).await {
                    Ok(st) => st?,
                    Err(_) => {
                        kill_group(pgid, libc::SIGKILL);
                        child.wait().await?
                    }
                }
            }
        }
    };
    // Whatever the shell left behind goes too, so the pipes reach EOF.
    kill_group(pgid, libc::SIGKILL);
    for pump in [out, err].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    }
    let duration = started.elapsed();
    use std::os::unix::process::ExitStatusExt;
    let log = std::mem::take(&mut *log.lock().expect("log lock")).finish();
    Ok(ExecOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        duration,
        log,
        cancelled,
    })
}

async fn wait_cancel(rx: &mut watch::Receiver<bool>) {
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

/// Send `sig` to the process group led by `pgid`.
fn kill_group(pgid: Option<i32>, sig: i32) {
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    log: Arc<Mutex<LogBuf>>,
    on_line: Option<LineSink>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        log.lock().expect("log lock").push(chunk);
        if let Some(sink) = &on_line {
            pending.extend_from_slice(chunk);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                sink(&line[..line.len() - 1]);
            }
        }
    }
    if let (Some(sink), false) = (&on_line, pending.is_empty()) {
        sink(&pending);
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

    fn spec(cmd: &str) -> (ExecSpec, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let spec = ExecSpec {
            cwd: dir.path().to_path_buf(),
            command: cmd.into(),
            env: vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                ("X".into(), "42".into()),
            ],
            wrapper: Vec::new(),
        };
        (spec, dir)
    }

    #[tokio::test]
    async fn captures_output_env_and_exit_code() {
        let (s, _d) =
            spec("echo out; echo err >&2; echo x=$X; test -z \"$HOME\" && echo nohome; exit 3");
        let (_tx, rx) = watch::channel(false);
        let o = execute(&s, rx, None).await.unwrap();
        assert_eq!(o.exit_code, Some(3));
        assert!(!o.passed());
        let log = String::from_utf8(o.log).unwrap();
        for want in ["out", "err", "x=42", "nohome"] {
            assert!(log.contains(want), "{want} missing from {log:?}");
        }
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let (s, d) = spec("(sleep 30; touch late) & sleep 30");
        let (tx, rx) = watch::channel(false);
        let t = tokio::spawn(async move { execute(&s, rx, None).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(true).unwrap();
        let o = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert!(o.cancelled);
        assert!(!o.passed());
        assert!(o.duration < Duration::from_secs(10));
        assert!(!d.path().join("late").exists());
    }

    #[tokio::test]
    async fn background_leftovers_do_not_hold_the_run() {
        let (s, _d) = spec("sleep 30 & echo done");
        let (_tx, rx) = watch::channel(false);
        let o = tokio::time::timeout(Duration::from_secs(10), execute(&s, rx, None))
            .await
            .expect("a background process kept the run alive")
            .unwrap();
        assert!(o.passed());
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
