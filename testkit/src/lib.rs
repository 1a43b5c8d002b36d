//! Test support shared by the workspace's integration tests.
//!
//! * [`require`] finds an external tool; under `CI` a missing tool fails the test instead of
//!   skipping it, so interop coverage cannot silently vanish.
//! * [`Nginx`] runs a private nginx with the WebDAV module on a free loopback port, serving a
//!   directory as a Nix HTTP binary cache that accepts PUT (the set-up `nix copy --to http://`
//!   needs), and stops it on drop.
//! * [`Nix`] runs Debian's Nix 2.8 with a throwaway store, state and narinfo cache, offline.
//! * [`S3Server`] runs `s3s-fs`, a real S3 server (SigV4, conditional writes), on a free loopback
//!   port with a temporary root; [`FaultProxy`] sits in front of it and injects resets, stalls
//!   and error statuses per request.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// True when running under CI, where interop tests must not skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Locate `tool` on PATH (or in the usual sbin dirs). Returns `None` when it is missing and we are
/// not in CI (the caller then skips with a message); panics in CI.
pub fn require(tool: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let c = d.join(tool);
        if c.is_file() {
            return Some(c);
        }
    }
    if in_ci() {
        panic!("{tool} is required for this test under CI; run scripts/test.sh (it installs it)");
    }
    eprintln!(
        "SKIP: {tool} not found (set up with scripts/test.sh); this test fails instead under CI"
    );
    None
}

/// A free TCP port on 127.0.0.1 (best effort: the port is released before the server binds).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Run a command and return its output, panicking with stdout/stderr on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private nginx serving `root` as a Nix binary cache with PUT, on 127.0.0.1.
pub struct Nginx {
    state: tempfile::TempDir,
    root: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Nginx {
    /// Start nginx for `root` (created if missing). `basic_auth` = Some(("user","pass")) protects
    /// every request. Returns `None` when nginx is missing outside CI.
    pub fn start(root: &Path, basic_auth: Option<(&str, &str)>) -> Option<Nginx> {
        let bin = require("nginx")?;
        std::fs::create_dir_all(root).expect("create cache root");
        let root = root.canonicalize().expect("canonical cache root");
        let state = tempfile::Builder::new()
            .prefix("checkdef-nginx")
            .tempdir()
            .expect("nginx state dir");
        for d in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(state.path().join("tmp").join(d)).unwrap();
        }
        let auth = match basic_auth {
            Some((u, p)) => {
                std::fs::write(state.path().join("htpasswd"), format!("{u}:{{PLAIN}}{p}\n"))
                    .unwrap();
                format!(
                    "auth_basic \"nix cache\"; auth_basic_user_file {}/htpasswd;",
                    state.path().display()
                )
            }
            None => String::new(),
        };
        // Retry on a port race: another process may grab the port between probe and bind.
        for _ in 0..5 {
            let port = free_port();
            let s = state.path().display();
            let r = root.display();
            let user = if is_root() { "user root root;" } else { "" };
            let conf = format!(
                r#"{user}
daemon on;
worker_processes 1;
pid {s}/nginx.pid;
error_log {s}/error.log warn;
events {{ worker_connections 256; }}
http {{
  types {{ text/x-nix-narinfo narinfo; application/x-nix-nar nar; }}
  default_type application/octet-stream;
  log_format cache '$request_method $request_uri $status user="$remote_user"';
  access_log {s}/access.log cache;
  client_body_temp_path {s}/tmp/client_body;
  proxy_temp_path {s}/tmp/proxy;
  fastcgi_temp_path {s}/tmp/fastcgi;
  uwsgi_temp_path {s}/tmp/uwsgi;
  scgi_temp_path {s}/tmp/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    root {r};
    {auth}
    location = /nix-cache-info {{ default_type text/x-nix-cache-info; dav_methods PUT; }}
    location / {{ dav_methods PUT DELETE; create_full_put_path on; dav_access user:rw group:r all:r; }}
  }}
}}
"#
            );
            std::fs::write(state.path().join("nginx.conf"), conf).unwrap();
            let out = Command::new(&bin)
                .arg("-p")
                .arg(state.path())
                .arg("-c")
                .arg(state.path().join("nginx.conf"))
                .output()
                .expect("spawn nginx");
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                if err.contains("Address already in use") {
                    continue;
                }
                panic!("nginx failed to start: {err}");
            }
            let n = Nginx {
                state,
                root,
                port,
                bin,
            };
            n.wait_ready();
            return Some(n);
        }
        panic!("could not find a free port for nginx");
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not start listening on port {}", self.port);
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Access log lines so far: `METHOD URI STATUS user="…"`.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .arg("-p")
            .arg(self.state.path())
            .arg("-c")
            .arg(self.state.path().join("nginx.conf"))
            .args(["-s", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::metadata("/proc/self")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            })
            .unwrap_or(false)
}

/// Real Nix (Debian's nix-bin 2.8) with a private store root, state and narinfo cache, offline.
pub struct Nix {
    dir: tempfile::TempDir,
    nix: PathBuf,
}

impl Nix {
    /// `None` outside CI when Nix is not installed.
    pub fn new() -> Option<Nix> {
        let nix = require("nix")?;
        let dir = tempfile::Builder::new()
            .prefix("checkdef-nix")
            .tempdir()
            .expect("nix temp dir");
        for d in ["xdg-cache", "xdg-config", "xdg-data", "home", "store"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Some(Nix { dir, nix })
    }

    /// A chroot store (`--store DIR`) that starts empty.
    pub fn store_root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A fresh working directory inside this Nix sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `nix ARGS…` (new CLI) with hermetic settings; `extra_config` lines go into NIX_CONFIG.
    pub fn cmd(&self, extra_config: &str) -> Command {
        self.command(&self.nix, extra_config)
    }

    /// Another Nix program (`nix-store`, `nix-build`…) with the same hermetic environment.
    pub fn tool(&self, name: &str, extra_config: &str) -> Command {
        let bin = self.nix.with_file_name(name);
        self.command(&bin, extra_config)
    }

    fn command(&self, bin: &Path, extra_config: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(bin);
        c.env("XDG_CACHE_HOME", d.join("xdg-cache"))
            .env("XDG_CONFIG_HOME", d.join("xdg-config"))
            .env("XDG_DATA_HOME", d.join("xdg-data"))
            .env("HOME", d.join("home"))
            .env(
                "NIX_CONFIG",
                format!(
                    "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nconnect-timeout = 5\n{extra_config}"
                ),
            );
        c
    }
}

/// Finds the `s3s-fs` binary: `$S3S_FS`, then PATH, then `$CARGO_HOME/bin` and
/// `~/.cargo/bin` (where `cargo install` puts it). Like [`require`]: `None` outside CI when it
/// is missing, a panic under CI.
pub fn require_s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "S3S_FS={} does not exist", p.display());
        return Some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(c) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(c).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    if let Some(p) = dirs.iter().map(|d| d.join("s3s-fs")).find(|p| p.is_file()) {
        return Some(p);
    }
    if in_ci() {
        panic!(
            "s3s-fs is required for this test under CI; run scripts/test.sh (it runs `cargo install s3s-fs --version 0.14.1 --features binary --locked`)"
        );
    }
    eprintln!(
        "SKIP: s3s-fs not found (cargo install s3s-fs --version 0.14.1 --features binary); this test fails instead under CI"
    );
    None
}

/// A private S3 server (`s3s-fs`: signature-checking, honours `If-None-Match: *`) on a free
/// loopback port, storing buckets as directories of a temporary root. Killed on drop.
pub struct S3Server {
    root: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
    access_key: String,
    secret_key: String,
}

impl S3Server {
    /// Start `s3s-fs` with these credentials and the given buckets already created. `None`
    /// outside CI when `s3s-fs` is missing.
    pub fn start(access_key: &str, secret_key: &str, buckets: &[&str]) -> Option<S3Server> {
        let bin = require_s3s_fs()?;
        let root = tempfile::Builder::new()
            .prefix("checkdef-s3")
            .tempdir()
            .expect("s3 root dir");
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        for b in buckets {
            std::fs::create_dir_all(data.join(b)).unwrap();
        }
        // Retry on a port race: another process may take the port between probe and bind.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(root.path().join("server.log")).unwrap();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", access_key, "--secret-key", secret_key])
                .arg(&data)
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                return Some(S3Server {
                    root,
                    port,
                    child,
                    access_key: access_key.to_owned(),
                    secret_key: secret_key.to_owned(),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(root.path().join("server.log")).unwrap_or_default();
        panic!("s3s-fs did not start listening:\n{log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for `endpoint=`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET[/PREFIX]?endpoint=127.0.0.1:PORT&scheme=http&region=us-east-1`.
    pub fn url(&self, bucket_and_prefix: &str) -> String {
        format!(
            "s3://{bucket_and_prefix}?endpoint={}&scheme=http&region=us-east-1",
            self.endpoint()
        )
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The directory holding bucket `name`'s objects (keys are relative paths below it).
    pub fn bucket_dir(&self, name: &str) -> PathBuf {
        self.root.path().join("data").join(name)
    }

    /// Every object key of `bucket` (s3s-fs's own metadata files excluded), sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        let dir = self.bucket_dir(bucket);
        walk(&dir, &dir, &mut out);
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`FaultProxy`] does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFault {
    /// Forward it.
    Pass,
    /// Close the connection with the request unread: the kernel sends a TCP reset.
    Reset,
    /// Never answer (until the proxy is dropped or 60 s pass).
    Stall,
    /// Answer this status with an S3 error document (`<Code>InternalError</Code>`, or
    /// `SlowDown` for 503) instead of forwarding.
    Status(u16),
}

#[derive(Default)]
struct ProxyState {
    /// Fault by method (`PUT`), else by `*`; none = pass.
    faults: std::collections::HashMap<String, ProxyFault>,
    log: Vec<String>,
}

/// A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a server on `upstream`. Each
/// request gets its own upstream connection with `Connection: close` (the proxy only reads the
/// request head and body; the signature does not cover that header), so every request is
/// judged on its own even when the client keeps connections alive.
pub struct FaultProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let (s2, st2) = (stop.clone(), state.clone());
        let accept = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s3, st3) = (s2.clone(), st2.clone());
                        std::thread::spawn(move || proxy_one(conn, upstream, &st3, &s3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            stop,
            state,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for `endpoint=`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Apply `fault` to requests with this method (`Some("PUT")`) or to all (`None`); clears
    /// the other faults.
    pub fn set(&self, method: Option<&str>, fault: ProxyFault) {
        let mut st = self.state.lock().unwrap();
        st.faults.clear();
        st.faults.insert(method.unwrap_or("*").to_owned(), fault);
    }

    /// Forward everything again and forget the request log.
    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap();
        st.faults.clear();
        st.log.clear();
    }

    /// `METHOD PATH` of every request so far.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn proxy_one(
    mut conn: std::net::TcpStream,
    upstream: u16,
    state: &std::sync::Mutex<ProxyState>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read as _, Write as _};
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    // Peek (do not consume) until the head is complete, so a reset can leave it unread.
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let head_len = loop {
        let n = match conn.peek(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if n == buf.len() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("/").to_owned();
    let fault = {
        let mut st = state.lock().unwrap();
        st.log.push(format!("{method} {path}"));
        st.faults
            .get(&method)
            .or_else(|| st.faults.get("*"))
            .cloned()
            .unwrap_or(ProxyFault::Pass)
    };
    if fault == ProxyFault::Reset {
        drop(conn);
        return;
    }
    let mut consumed = vec![0u8; head_len];
    if conn.read_exact(&mut consumed).is_err() {
        return;
    }
    let content_length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; content_length];
    if conn.read_exact(&mut body).is_err() {
        return;
    }
    match fault {
        ProxyFault::Reset => unreachable!(),
        ProxyFault::Stall => {
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        ProxyFault::Status(status) => {
            let code = if status == 503 {
                "SlowDown"
            } else {
                "InternalError"
            };
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected</Message></Error>"
            );
            let body = if method == "HEAD" { "" } else { doc.as_str() };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                doc.len()
            );
        }
        ProxyFault::Pass => {
            let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            // Forward the head with `Connection: close`, so the response ends at EOF.
            let mut out = String::new();
            for line in head.trim_end_matches("\r\n\r\n").split("\r\n") {
                if line
                    .split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
                {
                    continue;
                }
                out.push_str(line);
                out.push_str("\r\n");
            }
            out.push_str("Connection: close\r\n\r\n");
            if up.write_all(out.as_bytes()).is_err() || up.write_all(&body).is_err() {
                return;
            }
            let mut response = Vec::new();
            let _ = up.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = up.read_to_end(&mut response);
            let _ = conn.write_all(&response);
        }
    }
    let _ = conn.flush();
}
