//! Test support shared by the workspace's integration tests.
//!
//! * [`require`] finds an external tool; under `CI` a missing tool fails the test instead of
//!   skipping it, so interop coverage cannot silently vanish.
//! * [`Nginx`] runs a private nginx with the WebDAV module on a free loopback port, serving a
//!   directory as a Nix HTTP binary cache that accepts PUT (the set-up `nix copy --to http://`
//!   needs), and stops it on drop.
//! * [`Nix`] runs Debian's Nix 2.8 with a throwaway store, state and narinfo cache, offline.
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
