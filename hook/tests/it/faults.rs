//! Fault injection: a misbehaving or hostile remote cache never yields a wrong PASS, never
//! writes outside the cache and temp dirs, and never costs more than a bounded time.
//!
//! An in-test HTTP/1.1 server (std threads over a `TcpListener` on 127.0.0.1) serves entries
//! that the real `checkdef` first pushed, signed, to a `file://` cache, and replaces chosen
//! paths by faults: error statuses, resets, stalls, truncated and over-long bodies, lying
//! narinfos, hostile NARs, decompression bombs and forged results. Every case drives the real
//! `checkdef run --json` and checks: the segment is a miss (`source` = `run`), there is a
//! one-line warning, the real run decides the exit code, the run ends within [`TIME_BOUND`],
//! and no file appeared outside the cache and TMPDIR (which must be empty again).
//!
//! `cargo test -p checkdef --test it faults -- --nocapture` prints the table of cases that
//! docs/security.md reproduces; `CHECKDEF_FAULT_TABLE=FILE` also appends it to FILE.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_proto::compression::compress_zstd;
use cache_proto::hash::Sha256Hash;
use cache_proto::narinfo::NarInfo;
use cache_proto::signing::SecretKey;
use cache_proto::store_path::StorePath;
use checkdef::result::{RESULT_FORMAT, ResultRecord, Status, StoredResult};

use crate::support::{TestRepo, hermetic};

/// Generous bound on one `checkdef run` against a faulty remote with `timeout-secs = 2`.
pub const TIME_BOUND: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The fault server.

/// What the server does with a request for one path.
#[derive(Clone)]
pub enum Reply {
    /// The status with an empty body.
    Status(u16),
    /// 200 with this body and a correct `Content-Length`.
    Body(Vec<u8>),
    /// Read nothing, close with unread data: the kernel answers with a TCP reset.
    Reset,
    /// Accept and never answer (until the server stops).
    Stall,
    /// Claim `claimed` bytes in `Content-Length`, send `body` (shorter), close.
    Truncated { body: Vec<u8>, claimed: u64 },
    /// Claim `claimed` bytes in `Content-Length`, send `body` (longer), close.
    OverLong { body: Vec<u8>, claimed: u64 },
    /// 200 with a chunked body (no `Content-Length`).
    Chunked(Vec<u8>),
}

#[derive(Default)]
struct State {
    /// Files served with 200 (and accepted by PUT).
    files: HashMap<String, Vec<u8>>,
    /// Faults by request path, looked up as `METHOD path`, `path`, `METHOD *`, then `*`.
    routes: HashMap<String, Reply>,
    /// `METHOD PATH` of every request.
    log: Vec<String>,
}

/// An HTTP/1.1 binary cache on 127.0.0.1 with injectable faults.
pub struct FaultServer {
    port: u16,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FaultServer {
    pub fn start() -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let (s2, st2) = (stop.clone(), state.clone());
        let accept = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s3, st3) = (s2.clone(), st2.clone());
                        std::thread::spawn(move || serve(conn, &st3, &s3));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultServer {
            port,
            stop,
            state,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serve exactly `files` (by path without the leading `/`) and no faults.
    pub fn reset(&self, files: &HashMap<String, Vec<u8>>) {
        let mut st = self.state.lock().unwrap();
        st.files = files.clone();
        st.routes.clear();
        st.log.clear();
    }

    /// Add or replace a served file.
    pub fn put_file(&self, rel: &str, data: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(rel.to_owned(), data);
    }

    /// Inject a fault for `rel` (a path without the leading `/`, or `*` for every path),
    /// optionally for one method only (`PUT *`).
    pub fn route(&self, rel: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(rel.to_owned(), reply);
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn files(&self) -> HashMap<String, Vec<u8>> {
        self.state.lock().unwrap().files.clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn serve(mut conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    // Peek (do not consume) until the header is complete, so a reset can leave it unread.
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let header_len = loop {
        let n = match conn.peek(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(i) = find(&buf[..n], b"\r\n\r\n") {
            break i + 4;
        }
        if n == buf.len() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let head = String::from_utf8_lossy(&buf[..header_len]).into_owned();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("/").to_owned();
    let rel = path.trim_start_matches('/').to_owned();
    let content_length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let reply = {
        let mut st = state.lock().unwrap();
        st.log.push(format!("{method} {path}"));
        [
            format!("{method} {rel}"),
            rel.clone(),
            format!("{method} *"),
            "*".to_owned(),
        ]
        .iter()
        .find_map(|k| st.routes.get(k))
        .cloned()
    };
    if let Some(Reply::Reset) = reply {
        // Unread request bytes make close() send RST instead of FIN.
        drop(conn);
        return;
    }
    let mut consumed = vec![0u8; header_len];
    if conn.read_exact(&mut consumed).is_err() {
        return;
    }
    let mut body = vec![0u8; content_length];
    if conn.read_exact(&mut body).is_err() {
        return;
    }
    let write =
        |conn: &mut TcpStream, status: u16, len: Option<u64>, body: &[u8], head_only: bool| {
            let reason = match status {
                200 => "OK",
                201 => "Created",
                404 => "Not Found",
                429 => "Too Many Requests",
                500 => "Internal Server Error",
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                _ => "Status",
            };
            let mut out = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
            match len {
                Some(l) => out.push_str(&format!("Content-Length: {l}\r\n")),
                None => out.push_str("Transfer-Encoding: chunked\r\n"),
            }
            out.push_str("\r\n");
            let _ = conn.write_all(out.as_bytes());
            if !head_only {
                let _ = conn.write_all(body);
            }
            let _ = conn.flush();
        };
    let head_only = method == "HEAD";
    match reply {
        Some(Reply::Reset) => unreachable!(),
        Some(Reply::Status(s)) => write(&mut conn, s, Some(0), b"", head_only),
        Some(Reply::Body(b)) => write(&mut conn, 200, Some(b.len() as u64), &b, head_only),
        Some(Reply::Stall) => {
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(Reply::Truncated { body: b, claimed }) => {
            write(&mut conn, 200, Some(claimed), &b, head_only)
        }
        Some(Reply::OverLong { body: b, claimed }) => {
            write(&mut conn, 200, Some(claimed), &b, head_only)
        }
        Some(Reply::Chunked(b)) => {
            let mut chunked = Vec::new();
            for c in b.chunks(8192) {
                chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                chunked.extend_from_slice(c);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            write(&mut conn, 200, None, &chunked, head_only)
        }
        None => match method.as_str() {
            "PUT" => {
                state.lock().unwrap().files.insert(rel, body);
                write(&mut conn, 201, Some(0), b"", false)
            }
            _ => {
                let file = state.lock().unwrap().files.get(&rel).cloned();
                match file {
                    Some(f) => write(&mut conn, 200, Some(f.len() as u64), &f, head_only),
                    None => write(&mut conn, 404, Some(0), b"", head_only),
                }
            }
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Building cache entries by hand (including hostile ones).

/// A NAR node written without any validation, so hostile archives can be expressed.
pub enum RawNode {
    File(Vec<u8>),
    Exec(Vec<u8>),
    Link(Vec<u8>),
    Dir(Vec<(Vec<u8>, RawNode)>),
}

fn nar_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
    out.extend(std::iter::repeat_n(0u8, (8 - b.len() % 8) % 8));
}

fn raw_node(out: &mut Vec<u8>, n: &RawNode) {
    nar_str(out, b"(");
    nar_str(out, b"type");
    match n {
        RawNode::File(c) | RawNode::Exec(c) => {
            nar_str(out, b"regular");
            if matches!(n, RawNode::Exec(_)) {
                nar_str(out, b"executable");
                nar_str(out, b"");
            }
            nar_str(out, b"contents");
            nar_str(out, c);
        }
        RawNode::Link(t) => {
            nar_str(out, b"symlink");
            nar_str(out, b"target");
            nar_str(out, t);
        }
        RawNode::Dir(entries) => {
            nar_str(out, b"directory");
            for (name, child) in entries {
                nar_str(out, b"entry");
                nar_str(out, b"(");
                nar_str(out, b"name");
                nar_str(out, name);
                nar_str(out, b"node");
                raw_node(out, child);
                nar_str(out, b")");
            }
        }
    }
    nar_str(out, b")");
}

/// The bytes of a NAR with root `n`, unvalidated.
pub fn raw_nar(n: &RawNode) -> Vec<u8> {
    let mut out = Vec::new();
    nar_str(&mut out, b"nix-archive-1");
    raw_node(&mut out, n);
    out
}

/// A narinfo (signed by `key`, after `tweak`) and its zstd file for `nar` under `path`:
/// `[(narinfo rel, text), (nar rel, file)]`.
pub fn entry_for(
    path: &StorePath,
    nar: &[u8],
    key: Option<&SecretKey>,
    tweak: impl FnOnce(&mut NarInfo),
) -> Vec<(String, Vec<u8>)> {
    entry_with_file(path, nar, compress_zstd(nar), key, tweak)
}

/// Like [`entry_for`] with a given compressed `file` (NarHash/NarSize still from `nar`).
pub fn entry_with_file(
    path: &StorePath,
    nar: &[u8],
    file: Vec<u8>,
    key: Option<&SecretKey>,
    tweak: impl FnOnce(&mut NarInfo),
) -> Vec<(String, Vec<u8>)> {
    let file_hash = Sha256Hash::digest(&file);
    let mut info = NarInfo {
        store_path: path.clone(),
        url: format!("nar/{}.nar.zst", file_hash.nix32()),
        compression: Some("zstd".into()),
        file_hash: Some(file_hash),
        file_size: Some(file.len() as u64),
        nar_hash: Sha256Hash::digest(nar),
        nar_size: nar.len() as u64,
        references: Vec::new(),
        deriver: None,
        sigs: Vec::new(),
        ca: None,
        system: None,
    };
    tweak(&mut info);
    info.sigs.clear();
    if let Some(k) = key {
        info.sign(k);
    }
    vec![
        (
            format!("{}.narinfo", path.hash_part()),
            info.render().into_bytes(),
        ),
        (info.url.clone(), file),
    ]
}

/// The NAR of a checkdef result record with this manifest and log.
pub fn result_nar(record: ResultRecord, manifest: &str) -> Vec<u8> {
    StoredResult {
        record,
        manifest: manifest.to_owned(),
        log: b"forged\n".to_vec(),
    }
    .to_nar()
    .to_bytes()
    .unwrap()
}

/// A result record that claims `status` for `segment` at `input_hash`.
pub fn record(segment: &str, input_hash: &str, status: Status) -> ResultRecord {
    ResultRecord {
        format: RESULT_FORMAT,
        segment: segment.to_owned(),
        status,
        exit_code: Some(if status == Status::Passed { 0 } else { 1 }),
        duration_s: 42.0,
        commit: None,
        input_hash: input_hash.parse().expect("an input hash"),
        command: "true".into(),
        checkdef_version: "0.1.0".into(),
        host: "attacker".into(),
        signer: None,
        finished_at: 1,
    }
}

/// `count` concatenated zstd frames of 16 MiB of zeros each: a few hundred bytes per frame,
/// `count * 16 MiB` when decompressed.
pub fn zstd_bomb(count: usize) -> Vec<u8> {
    let frame = compress_zstd(&vec![0u8; 16 << 20]);
    let mut out = Vec::with_capacity(frame.len() * count);
    for _ in 0..count {
        out.extend_from_slice(&frame);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Running checkdef (self-contained, so these tests depend only on the basic `TestRepo`).

/// Two fast shell segments: `foo` and `bar` pass while `src/<name>/value` reads `ok`.
pub const SHELL_SEGMENTS: &str = r#"version = 1

[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "echo checking foo; grep -qx ok src/foo/value"

[[segment]]
name = "bar"
include = ["src/bar/**"]
command = "echo checking bar; grep -qx ok src/bar/value"
"#;

/// Write the two-segment shell layout with `extra` appended to checkdef.toml (not committed).
pub fn shell_repo_layout(repo: &TestRepo, extra: &str) {
    repo.write("src/foo/value", "ok\n")
        .write("src/bar/value", "ok\n")
        .write("README.md", "readme\n")
        .write("checkdef.toml", &format!("{SHELL_SEGMENTS}{extra}"));
}

/// The built `checkdef` in `dir`: hermetic, no inherited `CHECKDEF_*` variable, the repo's
/// private cache directory. Not yet spawned.
pub fn checkdef_cmd(repo: &TestRepo, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_checkdef"));
    cmd.args(args).current_dir(dir);
    hermetic(&mut cmd, &repo.home);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("CHECKDEF_")) {
            cmd.env_remove(k);
        }
    }
    cmd.env("CHECKDEF_CACHE_DIR", &repo.cache);
    cmd
}

/// Exit code, stdout (parsed as JSON when not empty) and stderr of one checkdef run.
#[derive(Debug)]
pub struct CmdOut {
    pub code: i32,
    pub json: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn from_output(out: std::process::Output) -> CmdOut {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = if stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| {
                panic!("stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{stderr}")
            })
        };
        CmdOut {
            code: out.status.code().unwrap_or(-1),
            json,
            stdout,
            stderr,
        }
    }

    /// The `--json` entry of segment `name`.
    pub fn seg(&self, name: &str) -> &serde_json::Value {
        self.json["segments"]
            .as_array()
            .unwrap_or_else(|| panic!("no segments in {}\nstderr:\n{}", self.json, self.stderr))
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no segment {name} in {}", self.json))
    }

    pub fn source(&self, name: &str) -> &str {
        self.seg(name)["source"].as_str().unwrap()
    }

    pub fn status(&self, name: &str) -> &str {
        self.seg(name)["status"].as_str().unwrap()
    }

    /// The `warning:` lines of stderr.
    pub fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .collect()
    }

    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The `*.narinfo` files directly in `dir`.
pub fn narinfos_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "narinfo"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// The fixture: a repository, keys, and entries pushed by checkdef itself.

/// Every file below `dir`, relative, with `/` separators (symlinks are not followed).
pub fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.insert(rel);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Write a Nix secret key file with mode 0600.
pub fn write_key(path: &Path, key: &SecretKey) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{key}").unwrap();
}

/// Every file below a binary cache directory, by path relative to it.
pub fn read_cache_dir(dir: &Path) -> HashMap<String, Vec<u8>> {
    tree(dir)
        .into_iter()
        .filter(|rel| dir.join(rel).is_file())
        .map(|rel| {
            let data = std::fs::read(dir.join(&rel)).unwrap();
            (rel, data)
        })
        .collect()
}

/// Empty a directory (keeping it).
pub fn clear_dir(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
}

pub struct Fixture {
    pub repo: TestRepo,
    /// The private TMPDIR of every checkdef run.
    pub tmpdir: PathBuf,
    /// Trusted (its public key is in `CHECKDEF_TRUSTED_PUBLIC_KEYS`).
    pub ci: SecretKey,
    pub ci_file: PathBuf,
    /// Not trusted.
    pub stranger: SecretKey,
    /// What checkdef pushed, signed by `ci`, for the committed state: by relative path.
    pub seed: HashMap<String, Vec<u8>>,
    pub foo: StorePath,
    pub bar: StorePath,
}

pub const FAULT_CONFIG_CACHE: &str = "\n[cache]\ntimeout-secs = 2\n";

impl Fixture {
    /// The shell layout (segments `foo` and `bar`), committed, with `timeout-secs = 2`; both
    /// results pushed by checkdef (signed by the `ci` key) to a `file://` cache whose files
    /// are then in [`Fixture::seed`]; the local cache is emptied again.
    pub fn new() -> Fixture {
        let repo = TestRepo::new();
        shell_repo_layout(&repo, FAULT_CONFIG_CACHE);
        repo.commit("init");
        let tmpdir = repo.tmp.path().join("tmp");
        std::fs::create_dir_all(&tmpdir).unwrap();
        let ci = SecretKey::generate("ci.example.org-1").unwrap();
        let stranger = SecretKey::generate("stranger-1").unwrap();
        let ci_file = repo.tmp.path().join("keys/ci.secret");
        write_key(&ci_file, &ci);
        let mut fx = Fixture {
            tmpdir,
            ci,
            ci_file,
            stranger,
            seed: HashMap::new(),
            foo: StorePath::parse("/nix/store/00000000000000000000000000000000-x").unwrap(),
            bar: StorePath::parse("/nix/store/00000000000000000000000000000000-x").unwrap(),
            repo,
        };
        let seed_dir = fx.repo.tmp.path().join("seed");
        let remote = format!("file://{}", seed_dir.display());
        let key_file = fx.ci_file.display().to_string();
        let r = fx.run(
            &[],
            &[
                ("CHECKDEF_REMOTE", &remote),
                ("CHECKDEF_SECRET_KEY_FILE", &key_file),
            ],
        );
        r.expect_code(0);
        assert_eq!(r.source("foo"), "run");
        fx.seed = read_cache_dir(&seed_dir);
        assert_eq!(narinfos_in(&seed_dir).len(), 2);
        std::fs::remove_dir_all(&seed_dir).unwrap();
        fx.foo = StorePath::parse(r.seg("foo")["store_path"].as_str().unwrap()).unwrap();
        fx.bar = StorePath::parse(r.seg("bar")["store_path"].as_str().unwrap()).unwrap();
        fx.reset_local();
        fx
    }

    pub fn ci_public(&self) -> String {
        self.ci.to_public().to_string()
    }

    /// `checkdef run --json ARGS` with the private TMPDIR, the `ci` key trusted, and `env`.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> CmdOut {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        let mut cmd = checkdef_cmd(&self.repo, &self.repo.root, &full);
        cmd.env("TMPDIR", &self.tmpdir)
            .env("CHECKDEF_TRUSTED_PUBLIC_KEYS", self.ci_public())
            .envs(env.iter().copied());
        CmdOut::from_output(cmd.output().expect("run checkdef"))
    }

    /// Empty the local cache and TMPDIR.
    pub fn reset_local(&self) {
        clear_dir(&self.repo.cache);
        clear_dir(&self.tmpdir);
    }

    pub fn narinfo_rel(p: &StorePath) -> String {
        format!("{}.narinfo", p.hash_part())
    }

    /// The seeded narinfo of `p`, parsed.
    pub fn seed_narinfo(&self, p: &StorePath) -> NarInfo {
        let text = String::from_utf8(self.seed[&Self::narinfo_rel(p)].clone()).unwrap();
        NarInfo::parse(&text).unwrap()
    }

    /// The seeded (uncompressed) NAR of `p`.
    pub fn seed_nar(&self, p: &StorePath) -> Vec<u8> {
        let info = self.seed_narinfo(p);
        let file = &self.seed[&info.url];
        zstd_decode(file)
    }
}

fn zstd_decode(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    cache_proto::compression::decompress(
        cache_proto::compression::Compression::Zstd,
        file,
        1 << 30,
    )
    .unwrap()
    .read_to_end(&mut out)
    .unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Running one case.

/// One fault case: how to set the server up and what must happen.
pub struct Case {
    pub name: String,
    /// Files to add or replace, and faults to inject.
    pub files: Vec<(String, Vec<u8>)>,
    pub routes: Vec<(String, Reply)>,
    /// A substring of the expected warning.
    pub warning: &'static str,
    /// The exit code the real run decides.
    pub exit: i32,
}

impl Case {
    pub fn new(name: impl Into<String>, warning: &'static str) -> Case {
        Case {
            name: name.into(),
            files: Vec::new(),
            routes: Vec::new(),
            warning,
            exit: 0,
        }
    }
    pub fn route(mut self, rel: impl Into<String>, r: Reply) -> Case {
        self.routes.push((rel.into(), r));
        self
    }
    pub fn files(mut self, f: Vec<(String, Vec<u8>)>) -> Case {
        self.files.extend(f);
        self
    }
    pub fn exit(mut self, code: i32) -> Case {
        self.exit = code;
        self
    }
}

/// What one case did, for the table.
pub struct Row {
    pub case: String,
    pub foo: String,
    pub exit: i32,
    pub warning: String,
    pub secs: f64,
}

/// Run `case` against a fresh server state and check every invariant; returns the table row.
pub fn run_case(fx: &Fixture, server: &FaultServer, case: &Case) -> Row {
    fx.reset_local();
    server.reset(&fx.seed);
    for (rel, data) in &case.files {
        server.put_file(rel, data.clone());
    }
    for (rel, reply) in &case.routes {
        server.route(rel, reply.clone());
    }
    let before = tree(fx.repo.tmp.path());
    let started = Instant::now();
    let url = server.url();
    let r = fx.run(&[], &[("CHECKDEF_REMOTE", url.as_str())]);
    let took = started.elapsed();
    let ctx = format!(
        "case `{}`\nstdout:\n{}\nstderr:\n{}\nrequests: {:?}",
        case.name,
        r.stdout,
        r.stderr,
        server.log()
    );
    assert_eq!(r.code, case.exit, "exit code; {ctx}");
    assert_eq!(r.source("foo"), "run", "foo must be a miss; {ctx}");
    let expect_status = if case.exit == 0 { "passed" } else { "failed" };
    assert_eq!(r.status("foo"), expect_status, "{ctx}");
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert!(
        (1..=2).contains(&warnings.len()),
        "one warning line (per segment at most) expected; {ctx}"
    );
    assert!(
        warnings.iter().any(|w| w.contains(case.warning)),
        "expected a warning containing {:?}; {ctx}",
        case.warning
    );
    assert!(took < TIME_BOUND, "took {took:?}; {ctx}");
    // Nothing outside the cache and TMPDIR, and TMPDIR is clean again.
    let after = tree(fx.repo.tmp.path());
    let new: Vec<&String> = after
        .difference(&before)
        .filter(|p| !p.starts_with("cache/") && *p != "cache")
        .collect();
    assert!(
        new.is_empty(),
        "files appeared outside the cache: {new:?}; {ctx}"
    );
    assert!(
        tree(&fx.tmpdir).is_empty(),
        "TMPDIR not cleaned: {:?}; {ctx}",
        tree(&fx.tmpdir)
    );
    let warning = warnings
        .iter()
        .find(|w| w.contains(case.warning))
        .unwrap()
        .trim_start_matches("warning: ")
        .to_owned();
    Row {
        case: case.name.clone(),
        foo: format!("{} ({})", r.source("foo"), r.status("foo")),
        exit: r.code,
        warning,
        secs: took.as_secs_f64(),
    }
}

/// Print the rows as a markdown table (and append them to `$CHECKDEF_FAULT_TABLE`).
pub fn report(title: &str, rows: &[Row]) {
    let mut out = format!(
        "\n### {title}\n\n| case | foo | exit | warning (shortened) | time |\n|---|---|---|---|---|\n"
    );
    for r in rows {
        let mut w = r.warning.replace('|', "\\|");
        // Hash parts and ports vary from run to run.
        if w.len() > 160 {
            let mut cut = 160;
            while !w.is_char_boundary(cut) {
                cut -= 1;
            }
            w.truncate(cut);
            w.push('…');
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} s |\n",
            r.case, r.foo, r.exit, w, r.secs
        ));
    }
    eprintln!("{out}");
    if let Some(p) = std::env::var_os("CHECKDEF_FAULT_TABLE") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(out.as_bytes()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

#[test]
fn transport_faults_are_misses_within_the_time_budget() {
    let fx = Fixture::new();
    let server = FaultServer::start();
    let foo_ni = Fixture::narinfo_rel(&fx.foo);
    let foo_nar = fx.seed_narinfo(&fx.foo).url;
    let narinfo_text = fx.seed[&foo_ni].clone();
    let nar_file = fx.seed[&foo_nar].clone();
    let mut cases = Vec::new();
    for status in [500u16, 502, 503, 429] {
        cases.push(
            Case::new(format!("every request answers {status}"), "unavailable")
                .route("*", Reply::Status(status)),
        );
    }
    cases.push(
        Case::new("connection reset on every request", "unavailable").route("*", Reply::Reset),
    );
    cases.push(Case::new("server accepts but never answers", "too slow").route("*", Reply::Stall));
    cases.push(
        Case::new("narinfo body shorter than Content-Length", "unavailable").route(
            &foo_ni,
            Reply::Truncated {
                body: narinfo_text[..narinfo_text.len() / 2].to_vec(),
                claimed: narinfo_text.len() as u64,
            },
        ),
    );
    cases.push(
        Case::new("narinfo body longer than Content-Length", "ignored").route(
            &foo_ni,
            Reply::OverLong {
                body: narinfo_text.clone(),
                claimed: 60,
            },
        ),
    );
    let mut huge = narinfo_text.clone();
    huge.extend(std::iter::repeat_n(b'X', 100 * 1024));
    cases.push(
        Case::new(
            "narinfo of 100 KiB (cap 64 KiB), with Content-Length",
            "larger than the limit",
        )
        .route(&foo_ni, Reply::Body(huge.clone())),
    );
    cases.push(
        Case::new("narinfo of 100 KiB, chunked", "larger than the limit")
            .route(&foo_ni, Reply::Chunked(huge)),
    );
    cases.push(Case::new("NAR request stalls", "too slow").route(&foo_nar, Reply::Stall));
    cases.push(
        Case::new("NAR body shorter than Content-Length", "unavailable").route(
            &foo_nar,
            Reply::Truncated {
                body: nar_file[..nar_file.len() / 2].to_vec(),
                claimed: nar_file.len() as u64,
            },
        ),
    );
    cases
        .push(Case::new("NAR missing (404)", "does not exist").route(&foo_nar, Reply::Status(404)));
    cases.push(
        Case::new("NAR with extra bytes after Content-Length", "ignored").route(
            &foo_nar,
            Reply::OverLong {
                body: [nar_file.clone(), vec![0xff; 4096]].concat(),
                claimed: nar_file.len() as u64 - 1,
            },
        ),
    );
    let rows: Vec<Row> = cases.iter().map(|c| run_case(&fx, &server, c)).collect();

    // Nothing listens at all.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    fx.reset_local();
    let t = Instant::now();
    let url = format!("http://127.0.0.1:{closed}");
    let r = fx.run(&[], &[("CHECKDEF_REMOTE", url.as_str())]);
    let took = t.elapsed();
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run");
    let w: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(w[0].contains("unavailable"), "{}", r.stderr);
    assert!(took < TIME_BOUND);
    let mut rows = rows;
    rows.push(Row {
        case: "connection refused (nothing listens)".into(),
        foo: "run (passed)".into(),
        exit: 0,
        warning: w[0].trim_start_matches("warning: ").to_owned(),
        secs: took.as_secs_f64(),
    });
    report("Transport faults", &rows);
}

#[test]
fn lying_narinfos_are_misses() {
    let fx = Fixture::new();
    let server = FaultServer::start();
    let foo_ni = Fixture::narinfo_rel(&fx.foo);
    let seed = fx.seed_narinfo(&fx.foo);
    let nar = fx.seed_nar(&fx.foo);
    let bar_nar = fx.seed_nar(&fx.bar);
    let lie = |f: &dyn Fn(&mut NarInfo)| {
        let mut i = seed.clone();
        f(&mut i);
        i.render().into_bytes()
    };
    let other_hash = Sha256Hash::digest(b"something else");
    let cases = vec![
        Case::new("NarHash changed, signature kept", "lacks a valid signature")
            .files(vec![(foo_ni.clone(), lie(&|i| i.nar_hash = other_hash))]),
        Case::new(
            "NarHash lies, re-signed by the trusted key",
            "hash mismatch",
        )
        .files(entry_for(&fx.foo, &nar, Some(&fx.ci), |i| {
            i.nar_hash = other_hash
        })),
        Case::new(
            "NarSize too small, re-signed by the trusted key",
            "longer than its NarSize",
        )
        .files(entry_for(&fx.foo, &nar, Some(&fx.ci), |i| i.nar_size -= 8)),
        Case::new(
            "NarSize too large, re-signed by the trusted key",
            "size mismatch",
        )
        .files(entry_for(&fx.foo, &nar, Some(&fx.ci), |i| i.nar_size += 8)),
        Case::new(
            "StorePath of bar served for foo (bar's valid signature)",
            "is for",
        )
        .files(vec![(
            foo_ni.clone(),
            fx.seed[&Fixture::narinfo_rel(&fx.bar)].clone(),
        )]),
        Case::new("Sig is garbage", "lacks a valid signature").files(vec![(
            foo_ni.clone(),
            lie(&|i| i.sigs = vec![format!("{}:AAAA", fx.ci.name())]),
        )]),
        Case::new(
            "Sig of the trusted key over another narinfo",
            "lacks a valid signature",
        )
        .files(vec![(
            foo_ni.clone(),
            lie(&|i| {
                let bar = fx.seed_narinfo(&fx.bar);
                i.sigs = bar.sigs.clone();
            }),
        )]),
        Case::new("no Sig line", "lacks a valid signature")
            .files(vec![(foo_ni.clone(), lie(&|i| i.sigs.clear()))]),
        Case::new(
            "URL escapes the cache (../../etc/passwd), re-signed",
            "unsafe nar url",
        )
        .files(entry_for(&fx.foo, &nar, Some(&fx.ci), |i| {
            i.url = "../../etc/passwd".into()
        })),
        Case::new("FileHash lies, re-signed", "FileHash").files(entry_for(
            &fx.foo,
            &nar,
            Some(&fx.ci),
            |i| i.file_hash = Some(other_hash),
        )),
        Case::new(
            "bar's NAR under foo's path, re-signed",
            "result is for segment `bar`",
        )
        .files(entry_for(&fx.foo, &bar_nar, Some(&fx.ci), |_| {})),
        Case::new("narinfo is not UTF-8", "not valid utf-8")
            .files(vec![(foo_ni.clone(), vec![0xff, 0xfe, b'\n'])]),
        Case::new("narinfo is garbage", "corrupt")
            .files(vec![(foo_ni.clone(), b"hello world\n".to_vec())]),
    ];
    let rows: Vec<Row> = cases.iter().map(|c| run_case(&fx, &server, c)).collect();
    report("Lying narinfos", &rows);
}

#[test]
fn hostile_nars_are_misses_and_write_nothing() {
    let fx = Fixture::new();
    let server = FaultServer::start();
    // A random token names every payload, so a file it created could be found.
    let token = format!(
        "checkdef-escape-{}",
        Sha256Hash::digest(fx.repo.tmp.path().to_string_lossy().as_bytes()).nix32()
    );
    let tok = token.as_bytes().to_vec();
    let dotdot = raw_nar(&RawNode::Dir(vec![
        (
            b"..".to_vec(),
            RawNode::Dir(vec![(tok.clone(), RawNode::File(b"pwned".to_vec()))]),
        ),
        (b"log".to_vec(), RawNode::File(b"x".to_vec())),
    ]));
    let slash = raw_nar(&RawNode::Dir(vec![(
        [b"a/../../".as_slice(), &tok].concat(),
        RawNode::File(b"pwned".to_vec()),
    )]));
    let abs_link = raw_nar(&RawNode::Dir(vec![
        (b"log".to_vec(), RawNode::Link(b"/etc/passwd".to_vec())),
        (
            b"manifest".to_vec(),
            RawNode::Link(b"../../../../etc/shadow".to_vec()),
        ),
        (b"result.json".to_vec(), RawNode::File(b"{}".to_vec())),
    ]));
    let nul = raw_nar(&RawNode::Dir(vec![(
        b"a\0b".to_vec(),
        RawNode::File(b"x".to_vec()),
    )]));
    let unsorted = raw_nar(&RawNode::Dir(vec![
        (b"result.json".to_vec(), RawNode::File(b"{}".to_vec())),
        (b"log".to_vec(), RawNode::File(b"x".to_vec())),
    ]));
    let exec_root = raw_nar(&RawNode::Exec(b"#!/bin/sh\ntouch /tmp/pwned\n".to_vec()));
    let bomb = zstd_bomb(128); // 2 GiB of zeros
    let small_nar = fx.seed_nar(&fx.foo);
    let cases = vec![
        Case::new("NAR entry named `..`", "invalid nar").files(entry_for(
            &fx.foo,
            &dotdot,
            Some(&fx.ci),
            |_| {},
        )),
        Case::new("NAR entry name with `/` (a/../../x)", "invalid nar").files(entry_for(
            &fx.foo,
            &slash,
            Some(&fx.ci),
            |_| {},
        )),
        Case::new("NAR entry name with NUL", "invalid nar").files(entry_for(
            &fx.foo,
            &nul,
            Some(&fx.ci),
            |_| {},
        )),
        Case::new("NAR entries unsorted", "invalid nar").files(entry_for(
            &fx.foo,
            &unsorted,
            Some(&fx.ci),
            |_| {},
        )),
        Case::new(
            "result files are symlinks out of the tree",
            "lacks the regular file",
        )
        .files(entry_for(&fx.foo, &abs_link, Some(&fx.ci), |_| {})),
        Case::new(
            "NAR root is an executable, not a directory",
            "not a directory",
        )
        .files(entry_for(&fx.foo, &exec_root, Some(&fx.ci), |_| {})),
        Case::new("NarSize claims 10 GiB", "more than the limit").files(entry_for(
            &fx.foo,
            &small_nar,
            Some(&fx.ci),
            |i| i.nar_size = 10 << 30,
        )),
        Case::new(
            "zstd bomb: 2 GiB of zeros claimed as 1 MiB",
            "longer than its NarSize",
        )
        .files(entry_with_file(
            &fx.foo,
            &small_nar,
            bomb.clone(),
            Some(&fx.ci),
            |i| i.nar_size = 1 << 20,
        )),
        Case::new(
            "zstd bomb, FileSize omitted, NarSize 1 KiB",
            "larger than the limit",
        )
        .files(entry_with_file(
            &fx.foo,
            &small_nar,
            bomb,
            Some(&fx.ci),
            |i| {
                i.nar_size = 1024;
                i.file_size = None;
            },
        )),
        Case::new(
            "zstd bomb: 3 GiB of zeros, NarSize says 3 GiB (over the 256 MiB result cap)",
            "more than the limit",
        )
        .files(entry_with_file(
            &fx.foo,
            &small_nar,
            zstd_bomb(192),
            Some(&fx.ci),
            |i| i.nar_size = 3 << 30,
        )),
        Case::new(
            "zstd bomb: 256 MiB of zeros, NarSize says 256 MiB (at the cap)",
            "hash mismatch",
        )
        .files(entry_with_file(
            &fx.foo,
            &small_nar,
            zstd_bomb(16),
            Some(&fx.ci),
            |i| i.nar_size = 256 << 20,
        )),
        Case::new("not compressed as declared (garbage file)", "decompress").files(
            entry_with_file(
                &fx.foo,
                &small_nar,
                b"garbage".to_vec(),
                Some(&fx.ci),
                |_| {},
            ),
        ),
    ];
    let rows: Vec<Row> = cases.iter().map(|c| run_case(&fx, &server, c)).collect();
    // No payload anywhere it could have escaped to.
    for dir in [
        fx.repo.tmp.path().to_path_buf(),
        fx.repo.tmp.path().parent().unwrap().to_path_buf(),
        std::env::temp_dir(),
        PathBuf::from("/tmp"),
    ] {
        assert!(
            !tree(&dir).iter().any(|p| p.contains(&token)),
            "a payload file appeared below {}",
            dir.display()
        );
    }
    report("Hostile NARs", &rows);
}

#[test]
fn forged_results_are_misses_and_the_real_run_decides() {
    let fx = Fixture::new();
    let server = FaultServer::start();
    let plan_old = fx.repo.plan_json(&[]);
    let old_foo_hash = crate::support::segment_field(&plan_old, "foo", "input_hash");
    let old_manifest = fx.repo.explain("foo", &[]);
    let bar_hash = crate::support::segment_field(&plan_old, "bar", "input_hash");

    // A valid result, signed by a key that is not trusted.
    let foo_nar = fx.seed_nar(&fx.foo);
    let mut cases = vec![
        Case::new(
            "valid result signed by an untrusted key",
            "lacks a valid signature",
        )
        .files(entry_for(&fx.foo, &foo_nar, Some(&fx.stranger), |_| {})),
        Case::new(
            "result.json says failed (trusted key)",
            "failures are never served",
        )
        .files(entry_for(
            &fx.foo,
            &result_nar(record("foo", &old_foo_hash, Status::Failed), &old_manifest),
            Some(&fx.ci),
            |_| {},
        )),
        Case::new(
            "result.json names segment bar (trusted key)",
            "result is for segment",
        )
        .files(entry_for(
            &fx.foo,
            &result_nar(record("bar", &old_foo_hash, Status::Passed), &old_manifest),
            Some(&fx.ci),
            |_| {},
        )),
        Case::new(
            "result.json names bar's input hash (trusted key)",
            "result is for input hash",
        )
        .files(entry_for(
            &fx.foo,
            &result_nar(record("foo", &bar_hash, Status::Passed), &old_manifest),
            Some(&fx.ci),
            |_| {},
        )),
        Case::new(
            "result.json of an unknown format (trusted key)",
            "result format",
        )
        .files(entry_for(
            &fx.foo,
            &result_nar(
                ResultRecord {
                    format: 99,
                    ..record("foo", &old_foo_hash, Status::Passed)
                },
                &old_manifest,
            ),
            Some(&fx.ci),
            |_| {},
        )),
    ];
    let mut rows: Vec<Row> = cases
        .drain(..)
        .map(|c| run_case(&fx, &server, &c))
        .collect();

    // Now foo really fails; the cache claims it passed.
    fx.repo.write("src/foo/value", "broken\n");
    fx.repo.commit("break foo");
    let plan = fx.repo.plan_json(&[]);
    let new_path =
        StorePath::parse(&crate::support::segment_field(&plan, "foo", "store_path")).unwrap();
    let new_hash = crate::support::segment_field(&plan, "foo", "input_hash");
    let new_manifest = fx.repo.explain("foo", &[]);
    let forged = result_nar(record("foo", &new_hash, Status::Passed), &new_manifest);
    let cases = [
        Case::new(
            "foo fails; consistent forged PASS signed by an untrusted key",
            "lacks a valid signature",
        )
        .files(entry_for(&new_path, &forged, Some(&fx.stranger), |_| {}))
        .exit(1),
        Case::new(
            "foo fails; forged PASS (trusted key) whose manifest is the old one",
            "does not hash to its input hash",
        )
        .files(entry_for(
            &new_path,
            &result_nar(record("foo", &new_hash, Status::Passed), &old_manifest),
            Some(&fx.ci),
            |_| {},
        ))
        .exit(1),
        Case::new(
            "foo fails; the old valid PASS served under the new path (re-signed)",
            "result is for input hash",
        )
        .files(entry_for(&new_path, &foo_nar, Some(&fx.ci), |_| {}))
        .exit(1),
        Case::new(
            "foo fails; the old valid narinfo (and signature) served under the new path",
            "is for",
        )
        .files(vec![(
            Fixture::narinfo_rel(&new_path),
            fx.seed[&Fixture::narinfo_rel(&fx.foo)].clone(),
        )])
        .exit(1),
    ];
    rows.extend(cases.iter().map(|c| run_case(&fx, &server, c)));
    report("Forged results", &rows);
}

// ---------------------------------------------------------------------------------------------
// Trust tiers: labelled keys, `accept = "ci-only"`, and who signed each cached result.

/// A repository whose checkdef.toml trusts `ci` (labelled `ci`) and `dev` (unlabelled), with
/// `accept`; `foo` pushed signed by `dev`, `bar` by `ci`, to the `file://` remote `remote`.
fn tiered(accept: &str) -> (Fixture, String) {
    let fx = Fixture::new();
    let dev = SecretKey::generate("dev-alice-1").unwrap();
    let dev_file = fx.repo.tmp.path().join("keys/dev.secret");
    write_key(&dev_file, &dev);
    let remote = format!("file://{}", fx.repo.tmp.path().join("remote").display());
    let config = |accept: &str| {
        format!(
            "{SHELL_SEGMENTS}\n[cache]\nremote = \"{remote}\"\ntimeout-secs = 2\naccept = \"{accept}\"\ntrusted-public-keys = [\n  {{ key = \"{}\", label = \"ci\" }},\n  \"{}\",\n]\n",
            fx.ci.to_public(),
            dev.to_public()
        )
    };
    // checkdef.toml is not an input of either segment: changing [cache] keeps the hashes.
    fx.repo.write("checkdef.toml", &config("trusted"));
    let push = |segment: &str, key: &Path| {
        let mut cmd = checkdef_cmd(&fx.repo, &fx.repo.root, &["run", "--json", "-s", segment]);
        cmd.env("TMPDIR", &fx.tmpdir)
            .env("CHECKDEF_SECRET_KEY_FILE", key);
        let r = CmdOut::from_output(cmd.output().unwrap());
        r.expect_code(0);
        assert_eq!(r.source(segment), "run");
    };
    push("foo", &dev_file);
    push("bar", &fx.ci_file);
    fx.repo.write("checkdef.toml", &config(accept));
    fx.reset_local();
    (fx, remote)
}

/// `checkdef run` with the configured remote and keys only (no key from the environment).
fn run_plain(fx: &Fixture, args: &[&str]) -> CmdOut {
    let mut cmd = checkdef_cmd(&fx.repo, &fx.repo.root, args);
    cmd.env("TMPDIR", &fx.tmpdir);
    CmdOut::from_output(cmd.output().unwrap())
}

#[test]
fn labelled_keys_show_who_signed_each_cached_result() {
    let (fx, _) = tiered("trusted");
    let r = run_plain(&fx, &["run", "--json"]);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "remote", "{}", r.stderr);
    assert_eq!(r.source("bar"), "remote", "{}", r.stderr);
    assert_eq!(r.seg("foo")["signed_by"], "dev-alice-1");
    assert_eq!(r.seg("bar")["signed_by"], "ci.example.org-1 (ci)");
    assert!(r.warnings().is_empty(), "{}", r.stderr);

    // The human output names the signer too.
    fx.reset_local();
    let r = run_plain(&fx, &["run"]);
    r.expect_code(0);
    assert!(
        r.stderr.lines().any(|l| l.contains("foo")
            && l.contains("cached (remote)")
            && l.contains("signed by dev-alice-1")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("bar") && l.contains("signed by ci.example.org-1 (ci)")),
        "{}",
        r.stderr
    );

    // The copies in the local cache still say who signed them (they count only while that key
    // does).
    let r = run_plain(&fx, &["run", "--json"]);
    assert_eq!(r.source("foo"), "local");
    assert_eq!(r.seg("foo")["signed_by"], "dev-alice-1");
    assert_eq!(r.seg("bar")["signed_by"], "ci.example.org-1 (ci)");
}

#[test]
fn ci_only_rejects_developer_signed_results() {
    let (fx, _) = tiered("ci-only");
    let r = run_plain(&fx, &["run", "--json"]);
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run", "{}", r.stderr);
    assert_eq!(r.source("bar"), "remote", "{}", r.stderr);
    assert_eq!(r.seg("bar")["signed_by"], "ci.example.org-1 (ci)");
    let w = r.warnings();
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(
        w[0].contains("remote result for foo ignored")
            && w[0].contains("lacks a valid signature from a trusted key")
            && w[0].contains("(accept = \"ci-only\": only keys labelled ci count)"),
        "{}",
        r.stderr
    );
    assert_eq!(r.seg("foo")["warnings"].as_array().unwrap().len(), 1);

    // A developer key from the environment is never labelled, so it cannot widen ci-only.
    fx.reset_local();
    let dev_pub = {
        let text = std::fs::read_to_string(fx.repo.tmp.path().join("keys/dev.secret")).unwrap();
        SecretKey::parse(text.trim())
            .unwrap()
            .to_public()
            .to_string()
    };
    let mut cmd = checkdef_cmd(&fx.repo, &fx.repo.root, &["run", "--json"]);
    cmd.env("TMPDIR", &fx.tmpdir)
        .env("CHECKDEF_TRUSTED_PUBLIC_KEYS", &dev_pub);
    let r = CmdOut::from_output(cmd.output().unwrap());
    r.expect_code(0);
    assert_eq!(r.source("foo"), "run", "{}", r.stderr);
    assert_eq!(r.source("bar"), "remote", "{}", r.stderr);
}

#[test]
fn ci_only_without_a_ci_key_is_a_configuration_error() {
    let fx = Fixture::new();
    fx.repo.write(
        "checkdef.toml",
        &format!(
            "{SHELL_SEGMENTS}\n[cache]\naccept = \"ci-only\"\ntrusted-public-keys = [\"{}\"]\n",
            fx.ci.to_public()
        ),
    );
    let r = run_plain(&fx, &["run", "--json"]);
    r.expect_code(2);
    assert!(r.stderr.contains("ci-only"), "{}", r.stderr);
    assert!(r.stderr.contains("checkdef.toml:"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// Secrets in logs: `[defaults] redact_env`.

/// The uncompressed log of every result in a binary cache directory.
fn cached_logs(dir: &Path) -> Vec<Vec<u8>> {
    let files = read_cache_dir(dir);
    let mut logs = Vec::new();
    for (rel, text) in &files {
        if !rel.ends_with(".narinfo") {
            continue;
        }
        let info = NarInfo::parse(std::str::from_utf8(text).unwrap()).unwrap();
        let nar = zstd_decode(&files[&info.url]);
        let node = cache_proto::nar::parse(&nar[..], &Default::default()).unwrap();
        logs.push(StoredResult::from_nar(node).unwrap().log);
    }
    logs
}

#[test]
fn redact_env_masks_secrets_in_stored_pushed_and_printed_logs() {
    let fx = Fixture::new();
    let secret = "s3cr3t-T0KEN-value";
    fx.repo.write(
        "checkdef.toml",
        r#"version = 1

[defaults]
passthrough = ["API_TOKEN", "OTHER_TOKEN"]
redact_env = ["API_TOKEN", "OTHER_TOKEN", "UNSET_TOKEN"]

[[segment]]
name = "foo"
include = ["src/foo/**"]
command = "echo \"token=$API_TOKEN twice $API_TOKEN$API_TOKEN other=$OTHER_TOKEN\"; echo \"to stderr $API_TOKEN\" >&2"

[[segment]]
name = "bar"
include = ["src/bar/**"]
command = "echo \"failing with $API_TOKEN\"; exit 1"
"#,
    );
    let remote_dir = fx.repo.tmp.path().join("remote");
    let remote = format!("file://{}", remote_dir.display());
    let key = fx.ci_file.display().to_string();
    let r = fx.run(
        &[],
        &[
            ("API_TOKEN", secret),
            ("OTHER_TOKEN", "0th3r-v4lue"),
            ("CHECKDEF_REMOTE", &remote),
            ("CHECKDEF_SECRET_KEY_FILE", &key),
        ],
    );
    r.expect_code(1);
    assert_eq!(r.status("foo"), "passed");
    // The failure tail on stderr is redacted too.
    assert!(!r.stderr.contains(secret), "{}", r.stderr);
    assert!(
        r.stderr.contains("failing with [redacted:API_TOKEN]"),
        "{}",
        r.stderr
    );
    for dir in [&fx.repo.cache, &remote_dir] {
        let logs = cached_logs(dir);
        assert_eq!(
            logs.len(),
            1,
            "only foo passed and is stored in {}",
            dir.display()
        );
        let log = String::from_utf8(logs[0].clone()).unwrap();
        assert!(!log.contains(secret), "{log}");
        assert!(!log.contains("0th3r-v4lue"), "{log}");
        assert!(
            log.contains("token=[redacted:API_TOKEN] twice [redacted:API_TOKEN][redacted:API_TOKEN] other=[redacted:OTHER_TOKEN]"),
            "{log}"
        );
        assert!(log.contains("to stderr [redacted:API_TOKEN]"), "{log}");
        // Not one byte of the secret is anywhere in the cache files.
        for (rel, data) in read_cache_dir(dir) {
            assert!(find(&data, secret.as_bytes()).is_none(), "{rel}");
        }
    }
    // `-v` streams each check's output as it runs (bar runs again: failures are not cached),
    // and prints cached logs: redacted as well.
    let r = fx.run(
        &["-v"],
        &[("API_TOKEN", secret), ("OTHER_TOKEN", "0th3r-v4lue")],
    );
    r.expect_code(1);
    assert!(!r.stderr.contains(secret), "{}", r.stderr);
    assert!(!r.stderr.contains("0th3r-v4lue"), "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("bar") && l.contains("failing with [redacted:API_TOKEN]")),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input elsewhere: exit 2 and a message that names the problem.

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let fx = Fixture::new();
    let run = |env: &[(&str, &str)], args: &[&str]| fx.run(args, env);

    // A secret key file others can read.
    let loose = fx.repo.tmp.path().join("keys/loose.secret");
    write_key(&loose, &fx.ci);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let loose_s = loose.display().to_string();
    let r = run(&[("CHECKDEF_SECRET_KEY_FILE", &loose_s)], &[]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("readable by others (mode 644)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);

    // A key file that is not a Nix secret key (a public key, and garbage).
    let bad = fx.repo.tmp.path().join("keys/bad.secret");
    for content in [fx.ci.to_public().to_string(), "not a key".to_owned()] {
        write_key(&bad, &fx.ci);
        std::fs::write(&bad, format!("{content}\n")).unwrap();
        let r = run(&[("CHECKDEF_SECRET_KEY_FILE", bad.to_str().unwrap())], &[]);
        r.expect_code(2);
        assert!(r.stderr.contains("is not a Nix secret key"), "{}", r.stderr);
        assert!(r.stderr.contains(bad.to_str().unwrap()), "{}", r.stderr);
    }

    // A key file that does not exist.
    let r = run(
        &[("CHECKDEF_SECRET_KEY_FILE", "/nonexistent/key.secret")],
        &[],
    );
    r.expect_code(2);
    assert!(
        r.stderr
            .contains("cannot read secret key file /nonexistent/key.secret")
    );

    // A trusted public key from the environment that is not one.
    let r = run(&[("CHECKDEF_TRUSTED_PUBLIC_KEYS", "ci:short")], &[]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("CHECKDEF_TRUSTED_PUBLIC_KEYS"),
        "{}",
        r.stderr
    );

    // A remote URL that is no cache URL.
    let r = run(&[("CHECKDEF_REMOTE", "ftp://example.invalid/cache")], &[]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("ftp://example.invalid/cache"),
        "{}",
        r.stderr
    );

    // An unknown revision is named.
    let r = run(&[], &["--rev", "no-such-rev"]);
    r.expect_code(2);
    assert!(r.stderr.contains("no-such-rev"), "{}", r.stderr);

    // An unreadable checkdef.toml: a directory, and bytes that are not UTF-8.
    let config = fx.repo.path("checkdef.toml");
    let saved = std::fs::read(&config).unwrap();
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    let r = run(&[], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("checkdef.toml"), "{}", r.stderr);
    std::fs::remove_dir(&config).unwrap();
    std::fs::write(&config, b"version = 1\n\xff\xfe\n").unwrap();
    let r = run(&[], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("checkdef.toml"), "{}", r.stderr);
    assert!(r.stderr.to_lowercase().contains("utf-8"), "{}", r.stderr);
    // No checkdef.toml at all.
    std::fs::remove_file(&config).unwrap();
    let r = run(&[], &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("checkdef.toml"), "{}", r.stderr);
    std::fs::write(&config, &saved).unwrap();

    // A segment whose include matches nothing: a warning, and the exit is the tests'.
    let empty = format!(
        "{SHELL_SEGMENTS}\n[[segment]]\nname = \"ghost\"\ninclude = [\"no/such/dir/**\"]\ncommand = \"true\"\n"
    );
    fx.repo.write("checkdef.toml", &empty);
    let r = run(&[], &[]);
    r.expect_code(0);
    assert!(
        r.warnings()
            .iter()
            .any(|w| w.contains("segment ghost matches no files")),
        "{}",
        r.stderr
    );
    fx.repo.write(
        "checkdef.toml",
        &empty.replace("command = \"true\"\n", "command = \"false\"\n"),
    );
    fx.reset_local();
    let r = run(&[], &[]);
    r.expect_code(1);
    assert!(r.stderr.contains("matches no files"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// Pushing to a cache that fails.

#[test]
fn pushes_to_a_failing_cache_are_bounded_and_never_fail_the_run() {
    let fx = Fixture::new();
    let server = FaultServer::start();
    let url = server.url();
    let key = fx.ci_file.display().to_string();
    let mut rows = Vec::new();
    for (name, reply) in [
        ("every PUT answers 500", Reply::Status(500)),
        ("every PUT resets the connection", Reply::Reset),
        ("every PUT stalls", Reply::Stall),
    ] {
        fx.reset_local();
        // An empty cache: lookups are plain misses, then both passing results are pushed.
        server.reset(&HashMap::new());
        server.route("PUT *", reply);
        let t = Instant::now();
        let r = fx.run(
            &[],
            &[
                ("CHECKDEF_REMOTE", url.as_str()),
                ("CHECKDEF_SECRET_KEY_FILE", key.as_str()),
            ],
        );
        let took = t.elapsed();
        let ctx = format!("{name}: {}\n{:?}", r.stderr, server.log());
        r.expect_code(0);
        assert_eq!(r.source("foo"), "run", "{ctx}");
        let w = r.warnings();
        // The first failed push marks the remote down: the other result is not pushed.
        assert_eq!(w.len(), 1, "{ctx}");
        assert!(w[0].contains("could not push"), "{ctx}");
        assert!(took < TIME_BOUND, "took {took:?}; {ctx}");
        // Both results are still in the local cache.
        assert_eq!(narinfos_in(&fx.repo.cache).len(), 2, "{ctx}");
        rows.push(Row {
            case: name.to_owned(),
            foo: format!("{} ({})", r.source("foo"), r.status("foo")),
            exit: r.code,
            warning: w[0].trim_start_matches("warning: ").to_owned(),
            secs: took.as_secs_f64(),
        });
    }
    report("Pushes to a failing cache", &rows);
}

#[test]
fn a_key_named_like_a_trusted_key_cannot_pass_for_it() {
    let (fx, _) = tiered("trusted");
    // An impostor key that takes the CI key's name, added through the environment.
    let impostor = SecretKey::generate(fx.ci.name()).unwrap();
    let mut cmd = checkdef_cmd(&fx.repo, &fx.repo.root, &["run", "--json"]);
    cmd.env("TMPDIR", &fx.tmpdir).env(
        "CHECKDEF_TRUSTED_PUBLIC_KEYS",
        impostor.to_public().to_string(),
    );
    let r = CmdOut::from_output(cmd.output().unwrap());
    r.expect_code(2);
    assert!(
        r.stderr
            .contains("two different trusted public keys are named `ci.example.org-1`"),
        "{}",
        r.stderr
    );
    // The same key again (checkdef.toml and the environment) is accepted; its label stays.
    let mut cmd = checkdef_cmd(&fx.repo, &fx.repo.root, &["run", "--json"]);
    cmd.env("TMPDIR", &fx.tmpdir)
        .env("CHECKDEF_TRUSTED_PUBLIC_KEYS", fx.ci_public());
    let r = CmdOut::from_output(cmd.output().unwrap());
    r.expect_code(0);
    assert_eq!(r.seg("bar")["signed_by"], "ci.example.org-1 (ci)");
}
