//! The warm pytest runner: one fork server per interpreter and environment, so that a run of many
//! small pytest segments pays Python's and pytest's start-up once instead of once per segment.
//!
//! A check is *eligible* when its command is plainly `python -m pytest ARGS`, `python3 -m pytest
//! ARGS` or `pytest ARGS` (the `tests = [...]` shorthand expands to the second) with words `sh`
//! would pass through unchanged, the program found on the check's `PATH` is a real interpreter
//! (an ELF file, or a script whose `#!` line names one — not a pyenv-style shim), and the segment
//! does not say `runner = "process"`. Everything else, and every doubt found later, runs the
//! check in a fresh `sh -c` process exactly as before ([`super::exec::execute`]).
//!
//! The server (`warm_server.py`, compiled into the binary and written to a private directory per
//! run) is started through `sh` with the check's environment minus `TMPDIR` and
//! `CHECKDEF_SEGMENT`; that environment and the interpreter's path are the *fingerprint*: checks
//! whose fingerprints differ get different servers. It imports pytest once and then forks one
//! child per check; the child puts itself in its own process group (so cancellation and
//! time-outs kill it and everything it started, as in process mode), takes the check's stdout and
//! stderr pipes (sent over a `SOCK_SEQPACKET` socket), directory, environment, `TMPDIR` and the
//! `sys.path` a fresh interpreter would have there, and runs pytest's own entry point. The parent
//! never runs test code; it refuses (and checkdef falls back) when the check's directory would
//! shadow a module it has loaded, and exits when its own state changed. A server that dies is
//! restarted for later checks (a few times per run); a check it was running is rerun fresh.
use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::exec::{self, ExecOutcome, ExecSpec, LineSink};
use super::isolate;
use super::startup_probe;
use tokio::sync::{oneshot, watch};

/// The server program, written next to nothing else in a private directory at use.
const SERVER_PY: &str = include_str!("warm_server.py");

/// Servers started per fingerprint and run before checkdef stops trying (a server that keeps
/// dying is not worth its start-up).
const MAX_STARTS: u32 = 3;

/// How long a check waits for its server to import pytest before it runs fresh instead.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables that differ between checks of one server: set by the child, not fingerprinted.
const PER_CHECK_VARS: [&str; 2] = ["TMPDIR", "CHECKDEF_SEGMENT"];

/// How the check invokes pytest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `python -m pytest`: `sys.path[0]` is the check's directory.
    Module,
    /// The `pytest` script at this path: `sys.path[0]` is the script's directory.
    Script(PathBuf),
}

impl Mode {
    fn script(&self) -> Option<&PathBuf> {
        match self {
            Mode::Module => None,
            Mode::Script(p) => Some(p),
        }
    }
}

/// What the warm runner needs to run one eligible check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPlan {
    /// The interpreter the command would run (as found on `PATH`, not resolved: a virtual
    /// environment's `bin/python` is a symlink whose location matters).
    pub interpreter: PathBuf,
    pub mode: Mode,
    /// pytest's arguments.
    pub args: Vec<String>,
    /// `sys.orig_argv` of the fresh process.
    pub orig_argv: Vec<String>,
    /// The server's environment: the check's, minus [`PER_CHECK_VARS`].
    pub server_env: BTreeMap<String, String>,
    /// `interpreter` is a script that runs the real interpreter (a pyenv shim): the server is
    /// started through it, as a fresh check's interpreter is, so it gets what the shim adds to
    /// the environment and `sys.orig_argv[0]`; a child gets the same (see warm_server.py).
    pub shim: bool,
}

impl WarmPlan {
    fn fingerprint(&self) -> String {
        // NUL cannot occur in paths or variables: an unambiguous key.
        let mut key = self.interpreter.to_string_lossy().into_owned();
        for (k, v) in &self.server_env {
            key.push('\0');
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        key
    }
}

/// How a check's note ends when the interpreter on its `PATH` is a script that is not a shim
/// the warm runner can start its server through.
const NOT_AN_INTERPRETER: &str = " is not an interpreter binary (a shim?)";

/// How a check's note ends when a version file near the repository or the warm server could
/// make a shim pick another interpreter for one than for the other.
const SHIM_VERSION_FILE: &str =
    " could pick another interpreter for the warm server than for the check (a shim)";

/// Whether a fresh check's runner note says its interpreter was a shim it could not run warm:
/// a set-up the user can change (see [`crate::report::runner_hint`]).
pub fn note_is_shim(note: &str) -> bool {
    note.ends_with(NOT_AN_INTERPRETER) || note.ends_with(SHIM_VERSION_FILE)
}

/// Why the server of `plan` must not start: a `PYTHON*` variable of its environment names a
/// path in the repository at `root` (an absolute `PYTHONPATH` entry into the work tree, a
/// `PYTHONPYCACHEPREFIX` there): the server would import (a `sitecustomize`, `.pth` files) or
/// write there outside the sandbox, from the work tree rather than the commit. Relative
/// entries are resolved in the server's own empty directory, and in each child's.
pub fn repository_doubt(plan: &WarmPlan, root: &Path) -> Option<String> {
    let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    for (k, v) in plan
        .server_env
        .iter()
        .filter(|(k, _)| k.starts_with("PYTHON"))
    {
        for entry in v.split(':').map(Path::new).filter(|p| p.is_absolute()) {
            let canonical = std::fs::canonicalize(entry).ok();
            if entry.starts_with(root)
                || entry.starts_with(&real)
                || canonical.is_some_and(|c| c.starts_with(&real))
            {
                return Some(format!(
                    "{k} names {} in the repository (the warm server would read the work tree \
                     outside the sandbox)",
                    entry.display()
                ));
            }
        }
    }
    None
}

/// When `plan` runs through a shim: why its server, started in `server_dir`, might get another
/// interpreter than a fresh check started in `check_dir` — a version file in either or above
/// either (the check's own directory is the view's, which holds no untracked file, so one on
/// the disk there is a doubt too), or no work tree (`check_dir` `None`). `None` when nothing can
/// tell them apart.
pub fn shim_doubt(plan: &WarmPlan, check_dir: Option<&Path>, server_dir: &Path) -> Option<String> {
    if !plan.shim {
        return None;
    }
    let Some(check_dir) = check_dir else {
        return Some("a shim, and no work tree to compare version files in".to_owned());
    };
    for start in [check_dir, server_dir] {
        for dir in start.ancestors() {
            for name in crate::pyenv::VERSION_FILES {
                let f = dir.join(name);
                if std::fs::symlink_metadata(&f).is_ok() {
                    return Some(format!(
                        "{}: {}{SHIM_VERSION_FILE}",
                        plan.interpreter.display(),
                        f.display()
                    ));
                }
            }
        }
    }
    None
}

/// Whether `command` (run by `sh -c` with `env`) can run warm, and how; `Err` says why not.
pub fn plan(command: &str, env: &[(String, String)]) -> Result<WarmPlan, String> {
    let words = shell_words(command).ok_or("the command is not a plain word list")?;
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let (interpreter, mode, args, orig_argv) = match words.as_slice() {
        [py, m, pytest, rest @ ..] if is_python(py) && m == "-m" && pytest == "pytest" => {
            let found = which(py, path)?;
            // A script (`#!`) in the interpreter's place is a shim: the server starts through
            // it. Anything else that is not an ELF file is no interpreter.
            if !is_elf(&found) && !is_script(&found) {
                return Err(format!("{}{NOT_AN_INTERPRETER}", found.display()));
            }
            let mut orig = vec![py.clone(), "-m".into(), "pytest".into()];
            orig.extend(rest.iter().cloned());
            (found, Mode::Module, rest.to_vec(), orig)
        }
        [pytest, rest @ ..] if pytest == "pytest" || pytest == "py.test" => {
            let script = which(pytest, path)?;
            let interpreter = shebang(&script)?;
            let mut orig = vec![
                interpreter.display().to_string(),
                script.display().to_string(),
            ];
            orig.extend(rest.iter().cloned());
            (interpreter, Mode::Script(script), rest.to_vec(), orig)
        }
        _ => return Err("not a plain pytest command".into()),
    };
    // The server is told paths in JSON, which holds text: a path that is not UTF-8 could only
    // reach it changed (a lossy spelling names another file).
    for p in [Some(&interpreter), mode.script()].into_iter().flatten() {
        utf8(p)?;
    }
    let server_env: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| !PER_CHECK_VARS.contains(&k.as_str()))
        .cloned()
        .collect();
    if server_env.contains_key("PWD") {
        return Err("the check sets PWD".into());
    }
    let shim = !is_elf(&interpreter);
    Ok(WarmPlan {
        interpreter,
        mode,
        args,
        orig_argv,
        server_env,
        shim,
    })
}

/// Whether `command` is plainly a pytest run (`python -m pytest ...`, `pytest ...`): the shapes
/// [`plan`] serves warm, whatever the interpreter on `PATH` turns out to be.
pub fn is_pytest_command(command: &str) -> bool {
    match shell_words(command).as_deref() {
        Some([py, m, pytest, ..]) => is_python(py) && m == "-m" && pytest == "pytest",
        Some([pytest, ..]) => pytest == "pytest" || pytest == "py.test",
        _ => false,
    }
}

/// `python`, `python3` or `python3.N`.
fn is_python(word: &str) -> bool {
    match word.strip_prefix("python") {
        Some("") | Some("3") => true,
        Some(v) => v
            .strip_prefix("3.")
            .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Split `command` into the words `sh` would run, or `None` when `sh` would do more than split
/// and unquote: expansions, globs, redirections, operators, comments, assignments or tildes are
/// all "not plain", and such a command runs in a fresh process.
pub fn shell_words(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => word.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' | '\\' | '!' => return None,
                        ch => word.push(ch),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next()? {
                    '\n' => return None,
                    ch => word.push(ch),
                }
            }
            c if c.is_ascii_alphanumeric() || "_-./:=+,@%".contains(c) || !c.is_ascii() => {
                // `=` in the first word is an assignment, `~` and `#` never get here.
                if c == '=' && words.is_empty() {
                    return None;
                }
                in_word = true;
                word.push(c);
            }
            _ => return None,
        }
    }
    if in_word {
        words.push(word);
    }
    (!words.is_empty()).then_some(words)
}

/// The file `sh` would run for `name` with this `PATH`. Relative or empty entries (the check's
/// own directory) are a doubt: what they find depends on the sandbox, not on the server.
fn which(name: &str, path: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    for dir in path.split(':') {
        if dir.is_empty() || !dir.starts_with('/') {
            return Err(format!("PATH has a relative entry `{dir}`"));
        }
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!("{name} is not on PATH"))
}

pub(crate) fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *b"#!")
}

fn is_elf(path: &Path) -> bool {
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *b"\x7fELF")
}

/// The interpreter of a `pytest` console script: a `#!/absolute/python` line without arguments
/// naming an interpreter binary.
fn shebang(script: &Path) -> Result<PathBuf, String> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(script)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let first = head[..n].split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = std::str::from_utf8(first).map_err(|_| "the #! line is not UTF-8".to_owned())?;
    let interp = line
        .strip_prefix("#!")
        .map(str::trim)
        .filter(|i| i.starts_with('/') && !i.contains([' ', '\t']))
        .ok_or_else(|| format!("{} does not start with #!/path/to/python", script.display()))?;
    let interp = PathBuf::from(interp);
    if !is_elf(&interp) {
        return Err(format!("{} is not an interpreter binary", interp.display()));
    }
    Ok(interp)
}

/// The cache tag of bytecode for checks of `plan`'s interpreter and environment: `server`'s
/// once it serves (then recorded in `dir`), else the one recorded by an earlier run's server of
/// the same interpreter binary (path, size, mtime, inode) and bytecode-relevant variables.
/// `None` when unknown yet, or when the server offers no bytecode.
pub fn cache_tag(server: &Server, plan: &WarmPlan, dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&plan.interpreter).ok()?;
    let mut key = format!(
        "{}\0{}\0{}\0{}",
        plan.interpreter.display(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        meta.ino()
    );
    for var in ["PYTHONOPTIMIZE", "PYTHONNODEBUGRANGES"] {
        key.push('\0');
        key.push_str(plan.server_env.get(var).map_or("", String::as_str));
    }
    let record = dir.join(format!("tag-{}", super::view::key(key.as_bytes())));
    match &*server.state.borrow() {
        State::Ready(tag) => {
            let text = tag.as_deref().unwrap_or("none");
            if std::fs::read_to_string(&record).ok().as_deref() != Some(text) {
                let _ = std::fs::create_dir_all(dir)
                    .and_then(|()| crate::fsutil::write_atomic(&record, text.as_bytes()));
            }
            tag.clone()
        }
        State::Starting => std::fs::read_to_string(&record)
            .ok()
            .filter(|t| t != "none" && !t.is_empty()),
        _ => None,
    }
}

/// Why a warm check must run in a fresh process instead.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing of the check ran: its sandbox is untouched.
    NotStarted(String),
    /// The check may have run (partly): it needs a fresh sandbox.
    Lost(String),
}

/// A warm check that started: its pid and the end of its run.
pub struct WarmChild {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
}

/// How a warm check ended.
#[derive(Debug)]
pub enum Exit {
    Status(ExitStatus),
    /// The child failed before any test code ran: run the check fresh.
    SetupFailed(String),
}

/// The servers of one run. Dropping it closes every server's socket, which ends them.
pub struct WarmPool {
    // Fields drop in order: the servers end before their directory goes.
    slots: Mutex<HashMap<String, Slot>>,
    dir: super::sandbox::RunDir,
    probes: Option<PathBuf>,
}

#[derive(Default)]
struct Slot {
    server: Option<Arc<Server>>,
    starts: u32,
    /// Set when a server refused to serve (import-time output, missing features): permanent.
    refused: Option<String>,
}

impl WarmPool {
    /// A pool whose private directory holds the server program, the empty directory servers
    /// start in, their TMPDIR and their stderr logs. It lies in the directory every sandbox
    /// lives in, which checks never see (and a killed run's is swept like its sandboxes).
    /// `probes`: where clean verdicts of the start-up probe are kept between runs.
    pub fn new(parent: &Path, probes: Option<PathBuf>) -> std::io::Result<WarmPool> {
        let dir = super::sandbox::RunDir::new(parent, "warm")?;
        std::fs::write(dir.path().join("server.py"), SERVER_PY)?;
        std::fs::create_dir(dir.path().join("cwd"))?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        Ok(WarmPool {
            slots: Mutex::new(HashMap::new()),
            dir,
            probes,
        })
    }

    /// The server for `plan`'s fingerprint, started now if there is none (so its start-up
    /// overlaps the preparation of other checks); `Err` says why the check must run fresh.
    pub fn server(&self, plan: &WarmPlan) -> Result<Arc<Server>, String> {
        let mut slots = self.slots.lock().expect("warm pool lock");
        let n = slots.len();
        let slot = slots.entry(plan.fingerprint()).or_default();
        if let Some(s) = &slot.server {
            match &*s.state.borrow() {
                State::Starting | State::Ready(_) => return Ok(s.clone()),
                State::Refused(why) => {
                    slot.refused = Some(why.clone());
                }
                State::Dead(_) => {}
            }
        }
        if let Some(why) = &slot.refused {
            return Err(why.clone());
        }
        if slot.starts >= MAX_STARTS {
            return Err(format!(
                "the warm server died {MAX_STARTS} times in this run"
            ));
        }
        slot.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("server-{n}-{}.log", slot.starts));
        let server = Arc::new(
            Server::spawn(self.dir.path(), plan, &log, self.probes.clone())
                .map_err(|e| format!("could not start the warm server: {e}"))?,
        );
        slot.server = Some(server.clone());
        Ok(server)
    }
}

#[derive(Debug, Clone)]
enum State {
    Starting,
    /// Serving; with the interpreter's cache tag when it offers bytecode (see `compile`).
    Ready(Option<String>),
    Refused(String),
    Dead(String),
}

struct Pending {
    started: Option<oneshot::Sender<Result<i32, String>>>,
    exit: Option<oneshot::Sender<Exit>>,
    /// The child said it could not set up; its exit follows.
    setup_failed: Option<String>,
}

/// One fork server.
pub struct Server {
    sock: OwnedFd,
    state: watch::Receiver<State>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    next_id: AtomicU64,
    process: Mutex<std::process::Child>,
}

impl Server {
    /// Kill the server's process group (it forked no check: it never served).
    fn kill(&self) {
        if let Ok(p) = self.process.lock()
            && let Some(pid) = rustix::process::Pid::from_raw(p.id() as i32)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // End of file on its socket (for the reader thread's copy too) makes the server kill
        // any check still running and exit; a server that does not is killed.
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Both);
        if let Ok(mut p) = self.process.lock() {
            for _ in 0..100 {
                if !matches!(p.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

#[derive(Deserialize)]
struct Reply {
    ready: Option<bool>,
    reason: Option<String>,
    started: Option<u64>,
    pid: Option<i32>,
    fallback: Option<u64>,
    setup_failed: Option<u64>,
    exited: Option<u64>,
    status: Option<i32>,
    cache_tag: Option<String>,
    executable: Option<PathBuf>,
    exec_env: Option<BTreeMap<String, String>>,
}

/// Where a warm child runs: in the sandbox its holder entered (`isolated`: namespaces to join),
/// in `cwd`, with `expose` (relative) of the work tree shown as it is, and with what bytecode.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub isolated: bool,
    pub cwd: &'a Path,
    pub expose: &'a [PathBuf],
    /// Compiled modules of its inputs, for it to read before it enters the sandbox.
    pub bytecode: &'a [PathBuf],
}

impl Server {
    /// Whether this server has died (a check prepared earlier may still hold it).
    pub fn is_dead(&self) -> bool {
        matches!(&*self.state.borrow(), State::Dead(_))
    }

    /// Ask the server to compile each `(source, blob id)` into `store/<tag>/<blob id>.pyc`
    /// (run/warm_server.py, `compile_blobs`); it checks that the source is that blob. Nothing
    /// waits for it: a later check finds the bytecode, or compiles the module itself.
    pub fn compile(&self, store: &Path, sources: &[(PathBuf, String)]) {
        if sources.is_empty() {
            return;
        }
        let Ok(store) = utf8(store) else {
            return;
        };
        let list: Vec<(&str, &str)> = sources
            .iter()
            // One that is not UTF-8 is left to the check, which compiles it itself.
            .filter_map(|(p, id)| Some((utf8(p).ok()?, id.as_str())))
            .collect();
        let request = serde_json::json!({ "compile": list, "store": store });
        // Never blocks; a request that does not fit now is dropped.
        let _ = rustix::net::send(
            &self.sock,
            request.to_string().as_bytes(),
            rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
        );
    }

    fn spawn(
        dir: &Path,
        plan: &WarmPlan,
        log: &Path,
        probes: Option<PathBuf>,
    ) -> std::io::Result<Server> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let mut env = plan.server_env.clone();
        let tmp = dir.join("tmp");
        let tmp =
            utf8(&tmp).map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
        env.insert("TMPDIR".into(), tmp.to_owned());
        let spawn_env = serde_json::to_string(&env).expect("strings serialise");
        // Through `sh`, like a check: it exports what `sh` exports (PWD); stdin is /dev/null.
        // Its stdout and stderr are a pipe, as a check's are: Python makes its standard streams
        // at start-up, and a child keeps them (only the descriptors under them are the check's),
        // so they must have been made on the same kind of file (`seekable()`, buffer sizes).
        let (out_r, out_w) = std::io::pipe()?;
        let mut command = std::process::Command::new("/bin/sh");
        // Its children inherit what it ignores: none of glibc's own two signals, as for a
        // check's supervisor stage (`posix_spawn` leaves them ignored).
        // SAFETY: the hook makes two raw rt_sigaction calls, async-signal-safe, no allocation.
        // The socket becomes its descriptor 3 here, not by a redirection of `sh`'s (dash keeps
        // copies, 10 and 251, open across its exec): the server then starts with 0-3 only, and
        // whatever else it holds at its top the start-up code opened (see warm_server.py).
        let sock_fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
        // SAFETY: the hook makes raw rt_sigaction, sigprocmask, dup2, fcntl and close_range
        // calls, all async-signal-safe, on a descriptor this process holds open until the spawn
        // returns; no allocation.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                super::supervise::default_internal_signals();
                if sock_fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(sock_fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // No signal blocked (checkdef's own mask, or one it inherited), as in a fresh
                // check: a child would inherit it (a test's SIGALRM timeout would never fire).
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing else checkdef holds (or inherited) reaches it, as none reaches a fresh
                // check: close-on-exec for all above 3 (CLOSE_RANGE_CLOEXEC, Linux 5.11).
                if libc::syscall(
                    libc::SYS_close_range,
                    4u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let process = command
            .arg("-c")
            .arg("exec \"$0\" \"$1\"")
            .arg(&plan.interpreter)
            .arg(dir.join("server.py"))
            .current_dir(dir.join("cwd"))
            .env_clear()
            .envs(&env)
            .env("CHECKDEF_WARM_SPAWN_ENV", spawn_env)
            .stdin(std::process::Stdio::null())
            .stdout(out_w.try_clone()?)
            .stderr(out_w)
            .process_group(0)
            .spawn()?;
        drop(command);
        drop(theirs);
        // Copied to the log (what it says before it dies is how its death is reported).
        let (copied_tx, copied) = std::sync::mpsc::channel();
        let mut log_file = std::fs::File::create(log)?;
        std::thread::Builder::new()
            .name("checkdef-warm-log".into())
            .spawn(move || {
                let mut out_r = out_r;
                let _ = std::io::copy(&mut out_r, &mut log_file);
                let _ = copied_tx.send(());
            })?;
        let (state_tx, state) = watch::channel(State::Starting);
        let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
        let reader = ours.try_clone()?;
        let p = pending.clone();
        let log = log.to_path_buf();
        let probe = ProbePlace {
            dir: log.with_extension("probe"),
            server_cwd: dir.join("cwd"),
            cache: probes,
        };
        std::thread::Builder::new()
            .name("checkdef-warm".into())
            .spawn(move || read_replies(reader, state_tx, p, log, copied, probe))?;
        Ok(Server {
            sock: ours,
            state,
            pending,
            next_id: AtomicU64::new(1),
            process: Mutex::new(process),
        })
    }

    /// Start the check `plan` in the sandbox `holder` entered (`isolated`: namespaces to join),
    /// in its process `group`, in `cwd` with `env`; `Err` says why it must run fresh instead.
    pub async fn start(
        &self,
        plan: &WarmPlan,
        holder: i32,
        group: i32,
        place: Place<'_>,
        env: &[(String, String)],
    ) -> Result<WarmChild, Refusal> {
        let Place {
            isolated,
            cwd,
            expose,
            bytecode,
        } = place;
        let mut state = self.state.clone();
        let ready = tokio::time::timeout(
            READY_TIMEOUT,
            state.wait_for(|s| !matches!(s, State::Starting)),
        )
        .await
        .map(|s| {
            s.map(|s| s.clone())
                .unwrap_or_else(|_| State::Dead("gone".into()))
        })
        .unwrap_or_else(|_| State::Dead("the warm server took too long to start".to_owned()));
        match ready {
            State::Ready(_) => {}
            State::Refused(why) | State::Dead(why) => {
                // A server that will not serve holds nothing the fresh checks may wait for (a
                // lock its start-up code took): it goes now, not when the run ends.
                self.kill();
                return Err(Refusal::NotStarted(why));
            }
            State::Starting => unreachable!("waited for another state"),
        }

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(
            id,
            Pending {
                started: Some(started_tx),
                exit: Some(exit_tx),
                setup_failed: None,
            },
        );
        if let Some(why) = [cwd]
            .into_iter()
            .chain(expose.iter().map(PathBuf::as_path))
            .chain(bytecode.iter().map(PathBuf::as_path))
            .find_map(|p| utf8(p).err())
        {
            return Err(Refusal::NotStarted(why));
        }
        let (mode, script) = match &plan.mode {
            Mode::Module => ("module", None),
            Mode::Script(p) => ("script", Some(p.display().to_string())),
        };
        let request = serde_json::json!({
            "run": id,
            "holder": holder,
            "group": group,
            "isolated": isolated,
            "cwd": cwd,
            "exposed": expose,
            "bytecode": bytecode,
            "env": env.iter().cloned().collect::<BTreeMap<_, _>>(),
            "args": plan.args,
            "mode": mode,
            "script": script,
            "orig_argv": plan.orig_argv,
            "argv0_from_server": plan.shim,
        });
        // Never blocks: a server that does not read is in doubt.
        let sent = rustix::net::send(
            &self.sock,
            request.to_string().as_bytes(),
            rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
        );
        if let Err(e) = sent {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(Refusal::NotStarted(format!(
                "could not reach the warm server: {e}"
            )));
        }
        match started_rx.await {
            Ok(Ok(pid)) => Ok(WarmChild { pid, exit: exit_rx }),
            Ok(Err(why)) => Err(Refusal::NotStarted(why)),
            // It may have forked the check before it died: never reuse this sandbox.
            Err(_) => Err(Refusal::Lost("the warm server died".into())),
        }
    }
}

/// `p` as the text the server is told (see [`plan`]), or why the check must run fresh.
fn utf8(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| {
        format!(
            "the path {} is not UTF-8 (the warm server is told paths as text)",
            p.display()
        )
    })
}

/// Where the probe of a server's start-up runs, and the directory the server started in.
struct ProbePlace {
    dir: PathBuf,
    server_cwd: PathBuf,
    cache: Option<PathBuf>,
}

impl ProbePlace {
    /// The probe's verdict on the start-up of `executable` with `env` (on the reader thread: the
    /// tracer must be the thread that forked the probe).
    fn verdict(&self, executable: &Path, env: &BTreeMap<String, String>) -> startup_probe::Verdict {
        let verdict = startup_probe::Probe {
            executable,
            env,
            server_cwd: &self.server_cwd,
            dir: &self.dir,
            cache: self.cache.as_deref(),
        }
        .run();
        let _ = std::fs::remove_dir_all(&self.dir);
        verdict
    }
}

/// The first message of warm_server.py, sent before it imports pytest: `HELLO`, the
/// interpreter's path and the variables it was started with, NUL-separated (no JSON encoder is
/// loaded yet).
const HELLO: &[u8] = b"checkdef-warm-hello";

/// How the server says it was started, from its hello message.
fn parse_hello(msg: &[u8]) -> Option<(PathBuf, BTreeMap<String, String>)> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut parts = msg.split(|&b| b == 0);
    if parts.next()? != HELLO {
        return None;
    }
    let executable = parts.next().filter(|e| e.starts_with(b"/"))?;
    let mut env = BTreeMap::new();
    for item in parts {
        let item = std::str::from_utf8(item).ok()?;
        let (k, v) = item.split_once('=')?;
        env.insert(k.to_owned(), v.to_owned());
    }
    Some((PathBuf::from(std::ffi::OsStr::from_bytes(executable)), env))
}

/// The reader thread of one server: dispatch every reply until end of file, then fail every
/// check still waiting (a started one is rerun fresh by the caller).
fn read_replies(
    sock: OwnedFd,
    state: watch::Sender<State>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    log: PathBuf,
    copied: std::sync::mpsc::Receiver<()>,
    probe: ProbePlace,
) {
    // A SOCK_SEQPACKET read returns exactly one message (the ready one carries an environment).
    let mut sock = std::fs::File::from(sock);
    let mut buf = vec![0u8; 1 << 20];
    // The probe's verdict on the start-up the hello described: the probe runs while the server
    // imports pytest, instead of after it.
    let mut early: Option<(PathBuf, BTreeMap<String, String>, startup_probe::Verdict)> = None;
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if buf[..n].starts_with(HELLO) {
            if early.is_none()
                && let Some((executable, env)) = parse_hello(&buf[..n])
            {
                let verdict = probe.verdict(&executable, &env);
                early = Some((executable, env, verdict));
            }
            continue;
        }
        let Ok(reply) = serde_json::from_slice::<Reply>(&buf[..n]) else {
            break;
        };
        if reply.ready == Some(true) {
            // No check is sent before this.
            let verdict = match (&reply.executable, &reply.exec_env) {
                (Some(executable), Some(env)) => match early.take() {
                    // The hello and the ready message describe the same start-up.
                    Some((e, v, verdict)) if &e == executable && &v == env => verdict,
                    _ => probe.verdict(executable, env),
                },
                _ => startup_probe::Verdict::Doubt(
                    "the warm server could not say how it was started".to_owned(),
                ),
            };
            let next = match verdict {
                // What the start-up looked for in vain goes to the server's shadow check before
                // any check (one socket: messages arrive in order).
                startup_probe::Verdict::Clean(missing) => {
                    use std::io::Write as _;
                    let msg = serde_json::json!({ "startup_missing": missing }).to_string();
                    match sock.write(msg.as_bytes()) {
                        Ok(n) if n == msg.len() => State::Ready(reply.cache_tag),
                        _ => State::Refused(
                            "could not tell the warm server what its start-up looked for".into(),
                        ),
                    }
                }
                startup_probe::Verdict::Doubt(why) => State::Refused(why),
            };
            let _ = state.send(next);
            continue;
        }
        let mut pending = pending.lock().expect("pending lock");
        if let Some(ok) = reply.ready {
            let _ = state.send(if ok {
                State::Ready(reply.cache_tag)
            } else {
                State::Refused(reply.reason.unwrap_or_default())
            });
        } else if let (Some(id), Some(pid)) = (reply.started, reply.pid) {
            if let Some(tx) = pending.get_mut(&id).and_then(|p| p.started.take()) {
                let _ = tx.send(Ok(pid));
            }
        } else if let Some(id) = reply.fallback {
            if let Some(mut p) = pending.remove(&id)
                && let Some(tx) = p.started.take()
            {
                let _ = tx.send(Err(reply.reason.unwrap_or_default()));
            }
        } else if let Some(id) = reply.setup_failed {
            if let Some(p) = pending.get_mut(&id) {
                p.setup_failed = Some(reply.reason.unwrap_or_default());
            }
        } else if let (Some(id), Some(status)) = (reply.exited, reply.status) {
            use std::os::unix::process::ExitStatusExt as _;
            if let Some(mut p) = pending.remove(&id)
                && let Some(tx) = p.exit.take()
            {
                let _ = tx.send(match p.setup_failed {
                    Some(why) => Exit::SetupFailed(why),
                    None => Exit::Status(ExitStatus::from_raw(status)),
                });
            }
        }
    }
    // Its last words reach the log once every writer of the pipe is gone (a child of the
    // server's may hold it a moment longer).
    let _ = copied.recv_timeout(Duration::from_millis(500));
    let why = std::fs::read_to_string(&log)
        .ok()
        .map(|s| s.trim().lines().last().unwrap_or("").to_owned())
        .filter(|s| !s.is_empty())
        .map_or_else(
            || "the warm server exited".to_owned(),
            |l| format!("the warm server exited: {l}"),
        );
    state.send_if_modified(|s| {
        if matches!(s, State::Refused(_)) {
            false
        } else {
            *s = State::Dead(why);
            true
        }
    });
    // Dropping the senders tells every waiting check.
    pending.lock().expect("pending lock").clear();
}

/// How a check that was prepared for the warm runner ended up running.
pub enum Held {
    /// It ran warm, or — `Some(why)` — fresh in the same sandbox, nothing of it having run warm.
    Ran(ExecOutcome, Option<String>),
    /// It may have run (partly) warm and has no verdict: rerun it in a fresh sandbox.
    Lost(String),
    /// Stopped (Ctrl-C, the budget) before its turn came: nothing of it ran, its holder is gone.
    NotStarted,
}

/// A warm check's holder and what the server needs to fork the check into its sandbox.
pub struct HeldCheck<'a> {
    pub spec: &'a ExecSpec,
    /// The holder's directory (its FIFOs).
    pub dir: &'a Path,
    pub plan: &'a WarmPlan,
    pub place: Place<'a>,
    pub cancel: watch::Receiver<bool>,
    pub on_line: Option<LineSink>,
}

/// Run a check whose `spec` starts a holder (`checkdef __sandbox --hold DIR …`, see
/// `run/isolate.rs`) under the supervisor stage: once the holder has entered the sandbox, the
/// server forks the check into it; the holder then ends as the check ended (`exit N`,
/// `signal N`), or, when the server cannot be sure to behave like a fresh process, runs the
/// command itself (`exec`), so the check's sandbox, supervisor, time limit and log are those of
/// the process runner either way.
///
/// The holder starts at once and sets the sandbox up while other checks run; the check itself
/// waits for `turn` (a free slot, held until the check ends; `None`: stopped first), and its
/// time limit and duration count from then. `server` is asked for the live server only then
/// (one that died meanwhile is replaced); the server that served is returned.
pub async fn run_held<T>(
    check: HeldCheck<'_>,
    turn: impl std::future::Future<Output = Option<T>>,
    server: impl FnOnce() -> Result<Arc<Server>, String>,
) -> (Held, Option<Arc<Server>>) {
    use tokio::io::AsyncBufReadExt as _;
    use tokio::net::unix::pipe;
    let HeldCheck {
        spec,
        dir,
        plan,
        place,
        cancel,
        on_line,
    } = check;
    let ready = match pipe::OpenOptions::new()
        // Read-write: no end of file before the holder opened its end.
        .read_write(true)
        .open_receiver(dir.join(isolate::HOLD_READY))
    {
        Ok(r) => r,
        Err(e) => return (Held::Lost(format!("opening the holder's FIFO: {e}")), None),
    };
    let (gate_tx, gate) = watch::channel(false);
    let held = exec::execute_gated(spec, cancel, on_line, gate);
    tokio::pin!(held);
    tokio::pin!(turn);
    // Its turn may come before the holder is ready (a slot was free): the gate opens then, so
    // that a holder which cannot set up is timed and stopped as a fresh check is.
    let mut slot = None;
    let mut line = String::new();
    let mut ready = tokio::io::BufReader::new(ready);
    let ids = loop {
        tokio::select! {
            // The holder ended first: it could not enter the sandbox (said in the log, as for a
            // fresh check), or the check was stopped.
            o = &mut held => return (Held::Ran(o, None), None),
            t = &mut turn, if slot.is_none() && !gate_tx.is_closed() => match t {
                Some(t) => {
                    slot = Some(t);
                    let _ = gate_tx.send(true);
                }
                None => {
                    // Stopped before its turn: `held` saw the same stop and ends the holder.
                    let _ = held.await;
                    return (Held::NotStarted, None);
                }
            },
            r = ready.read_line(&mut line) => break r.ok().and_then(|_| {
                let (pid, pgid) = line.strip_prefix("ready ")?.trim().split_once(' ')?;
                Some((pid.parse::<i32>().ok()?, pgid.parse::<i32>().ok()?))
            }),
        }
    };
    let Some((holder, group)) = ids else {
        let o = held.await;
        return (Held::Ran(o, None), None);
    };
    if slot.is_none() {
        tokio::select! {
            o = &mut held => return (Held::Ran(o, None), None),
            t = &mut turn => match t {
                Some(t) => slot = Some(t),
                None => {
                    let _ = held.await;
                    return (Held::NotStarted, None);
                }
            },
        }
        let _ = gate_tx.send(true);
    }
    let _slot = slot;
    // A plain descriptor, not tokio's: its `try_write` refuses until the runtime has polled the
    // FIFO writable, and an order refused would leave the holder waiting for ever. Non-blocking
    // only so the open cannot wait (the holder opened its end before it said "ready").
    use std::os::unix::fs::OpenOptionsExt as _;
    let ctl = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(dir.join(isolate::HOLD_CTL))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = held.await;
            return (
                Held::Lost(format!("opening the holder's order FIFO: {e}")),
                None,
            );
        }
    };
    let order = |o: String| {
        use std::io::Write as _;
        // The FIFO is empty and the order far below PIPE_BUF: it is written whole, at once.
        let r = (&ctl).write_all(o.as_bytes());
        drop(r);
    };
    let server = match server() {
        Ok(s) => s,
        Err(why) => {
            order("exec\n".into());
            return (Held::Ran(held.await, Some(why)), None);
        }
    };
    let held_result = serve(&server, held, order, plan, holder, group, place, &spec.env).await;
    (held_result, Some(server))
}

/// The second half of [`run_held`]: the check's turn has come and its holder is ready.
#[allow(clippy::too_many_arguments)]
async fn serve(
    server: &Server,
    mut held: std::pin::Pin<&mut impl std::future::Future<Output = ExecOutcome>>,
    order: impl Fn(String),
    plan: &WarmPlan,
    holder: i32,
    group: i32,
    place: Place<'_>,
    env: &[(String, String)],
) -> Held {
    let started = tokio::select! {
        o = &mut held => return Held::Ran(o, None),
        s = server.start(plan, holder, group, place, env) => s,
    };
    let child = match started {
        Ok(c) => c,
        Err(Refusal::NotStarted(why)) => {
            order("exec\n".into());
            return Held::Ran(held.await, Some(why));
        }
        Err(Refusal::Lost(why)) => {
            order("lost\n".into());
            let _ = held.await;
            return Held::Lost(why);
        }
    };
    let exit = tokio::select! {
        // Stopped (a time-out, Ctrl-C): the holder's group, the warm child in it, is gone.
        o = &mut held => return Held::Ran(o, None),
        e = child.exit => e,
    };
    use std::os::unix::process::ExitStatusExt as _;
    match exit {
        Ok(Exit::Status(st)) => {
            order(match (st.code(), st.signal()) {
                (Some(c), _) => format!("exit {c}\n"),
                // As the check's `sh -c` would have ended: a shell that waits for its command
                // (dash) says so and exits 128+N when it was killed by signal N.
                (None, Some(s)) if shell_waits() => {
                    format!("died {s}{}\n", if st.core_dumped() { " core" } else { "" })
                }
                (None, Some(s)) => format!("signal {s}\n"),
                _ => "exit 1\n".into(),
            });
            Held::Ran(held.await, None)
        }
        Ok(Exit::SetupFailed(why)) => {
            order("exec\n".into());
            Held::Ran(
                held.await,
                Some(format!("the warm child could not set up: {why}")),
            )
        }
        Err(_) => {
            order("lost\n".into());
            let _ = held.await;
            Held::Lost("the warm server died while the check ran".into())
        }
    }
}

/// Whether `sh -c COMMAND` waits for a single command rather than becoming it (dash waits and
/// exits 128+N for a command killed by signal N; bash execs it, and is killed by N itself).
/// Asked once per process: `sh -c 'readlink /proc/self'` prints its own pid when sh exec'd it.
fn shell_waits() -> bool {
    static WAITS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WAITS.get_or_init(|| {
        let Ok(child) = std::process::Command::new("/bin/sh")
            .args(["-c", "readlink /proc/self"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            return false;
        };
        let pid = child.id();
        match child.wait_with_output() {
            Ok(out) => String::from_utf8_lossy(&out.stdout).trim() != pid.to_string(),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_messages() {
        let (exe, env) = parse_hello(b"checkdef-warm-hello\0/usr/bin/python3\0A=1\0B=x=y").unwrap();
        assert_eq!(exe, Path::new("/usr/bin/python3"));
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env.len(), 2);
        // A relative or missing interpreter, an entry without `=`, bytes that are not UTF-8, or
        // another first word: no hello (the probe runs after the ready message).
        for bad in [
            &b"checkdef-warm-hello\0python3\0A=1"[..],
            b"checkdef-warm-hello",
            b"checkdef-warm-hello\0/p\0A",
            b"checkdef-warm-hello\0/p\0A=\xff",
            b"checkdef-warm-hellos\0/p\0A=1",
        ] {
            assert!(parse_hello(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn plain_words_only() {
        let w = |s: &str| shell_words(s);
        assert_eq!(
            w("python3 -m pytest -q 't/b c.py' 'it'\\''s' x::y").unwrap(),
            ["python3", "-m", "pytest", "-q", "t/b c.py", "it's", "x::y"]
        );
        assert_eq!(w("pytest \"a b\"").unwrap(), ["pytest", "a b"]);
        assert_eq!(w("pytest -k 'a or b'").unwrap(), ["pytest", "-k", "a or b"]);
        for not_plain in [
            "pytest; true",
            "pytest && x",
            "pytest | tee",
            "pytest > log",
            "pytest $X",
            "pytest \"$X\"",
            "pytest `x`",
            "pytest t/*.py",
            "pytest ~/t",
            "pytest # comment",
            "A=1 pytest",
            "pytest 'unterminated",
            "(pytest)",
            "pytest\nfalse",
            "",
            "   ",
        ] {
            assert_eq!(w(not_plain), None, "{not_plain:?}");
        }
    }

    #[test]
    fn python_names() {
        for ok in ["python", "python3", "python3.11"] {
            assert!(is_python(ok), "{ok}");
        }
        for no in [
            "python2",
            "python3.",
            "python3.x",
            "pythonw",
            "ipython",
            "py",
        ] {
            assert!(!is_python(no), "{no}");
        }
    }

    fn env(path: &str) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), path.into()),
            ("TMPDIR".into(), "/tmp/x".into()),
            ("CHECKDEF_SEGMENT".into(), "s".into()),
            ("A".into(), "1".into()),
        ]
    }

    #[test]
    fn eligibility_and_fingerprints() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // An "interpreter": any ELF file will do for planning.
        let elf = std::fs::read_link("/proc/self/exe").unwrap();
        std::os::unix::fs::symlink(&elf, bin.join("python3")).unwrap();
        let shim = bin.join("python");
        std::fs::write(&shim, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
        let script = bin.join("pytest");
        std::fs::write(
            &script,
            format!("#!{}\nimport pytest\n", bin.join("python3").display()),
        )
        .unwrap();
        for f in [&shim, &script] {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = bin.display().to_string();

        let p = plan("python3 -m pytest -q tests/test_a.py", &env(&path)).unwrap();
        assert_eq!(p.interpreter, bin.join("python3"));
        assert_eq!(p.mode, Mode::Module);
        assert_eq!(p.args, ["-q", "tests/test_a.py"]);
        assert!(!p.server_env.contains_key("TMPDIR"));
        assert!(!p.server_env.contains_key("CHECKDEF_SEGMENT"));
        let other_test = plan("python3 -m pytest tests/test_b.py", &env(&path)).unwrap();
        assert_eq!(
            p.fingerprint(),
            other_test.fingerprint(),
            "one server for both"
        );
        let mut e = env(&path);
        e[3].1 = "2".into();
        assert_ne!(
            p.fingerprint(),
            plan("python3 -m pytest", &e).unwrap().fingerprint(),
            "another environment, another server"
        );

        let s = plan("pytest tests", &env(&path)).unwrap();
        assert_eq!(s.mode, Mode::Script(script.clone()));
        assert_eq!(s.interpreter, bin.join("python3"));
        assert!(!p.shim && !s.shim);

        // `python` is a `#!` script that runs python3: a shim, served through itself.
        let shim = plan("python -m pytest", &env(&path)).unwrap();
        assert!(shim.shim);
        assert_eq!(shim.interpreter, bin.join("python"));
        assert_ne!(shim.fingerprint(), p.fingerprint());
        // Nothing but an ELF file or a `#!` script is an interpreter.
        std::fs::write(bin.join("python3.98"), "not a program\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                bin.join("python3.98"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }

        for (cmd, path, why) in [
            (
                "python3.98 -m pytest",
                path.as_str(),
                "not an interpreter binary",
            ),
            ("python3 -m pytest", "relative:/bin", "relative entry"),
            ("python3 -m pytest", "", "relative entry"),
            (
                "python3 -X dev -m pytest",
                path.as_str(),
                "not a plain pytest",
            ),
            ("python3 -m unittest", path.as_str(), "not a plain pytest"),
            (
                "python3 -m pytest $A",
                path.as_str(),
                "not a plain word list",
            ),
            ("python3.99 -m pytest", path.as_str(), "not on PATH"),
        ] {
            let e = plan(cmd, &env(path)).unwrap_err();
            assert!(e.contains(why), "{cmd} with PATH={path}: {e}");
        }
    }
}
