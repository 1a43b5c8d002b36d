//! A tiny in-memory HTTP/1.1 server on 127.0.0.1 for the HTTP store tests: GET, HEAD and PUT
//! on a map of paths, a request log, and scripted faults (status codes, stalls, dropped
//! connections, oversized bodies).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body_len: usize,
}

/// A scripted misbehaviour for the next request to a (method, path).
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Never answer.
    Stall,
    /// Close the connection without answering.
    Close,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    log: Vec<Logged>,
    faults: HashMap<(String, String), VecDeque<Fault>>,
    stall_all: bool,
}

pub struct Server {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(handle(stream, st.clone()));
            }
        });
        Server { addr, state, task }
    }

    /// `http://127.0.0.1:<port><prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("http://{}{prefix}", self.addr)
    }

    pub fn fault(&self, method: &str, path: &str, fault: Fault, times: usize) {
        let mut s = self.state.lock().unwrap();
        let q = s
            .faults
            .entry((method.to_owned(), path.to_owned()))
            .or_default();
        for _ in 0..times {
            q.push_back(fault);
        }
    }

    pub fn stall_all(&self) {
        self.state.lock().unwrap().stall_all = true;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// The log as `METHOD path` lines.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .iter()
            .map(|l| format!("{} {}", l.method, l.path))
            .collect()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().files.get(path).cloned()
    }

    pub fn put_file(&self, path: &str, data: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_owned(), data);
    }

    pub fn remove_file(&self, path: &str) {
        self.state.lock().unwrap().files.remove(path);
    }

    pub fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.lock().unwrap().files.keys().cloned().collect();
        v.sort();
        v
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn handle(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            lines.push(line.trim_end().to_owned());
        }
        let Some(request_line) = lines.first() else {
            return;
        };
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let header = |name: &str| {
            lines[1..].iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let (fault, stall_all) = {
            let mut s = state.lock().unwrap();
            s.log.push(Logged {
                method: method.clone(),
                path: path.clone(),
                content_type: header("content-type"),
                authorization: header("authorization"),
                body_len: len,
            });
            let fault = s
                .faults
                .get_mut(&(method.clone(), path.clone()))
                .and_then(VecDeque::pop_front);
            (fault, s.stall_all)
        };
        if stall_all || matches!(fault, Some(Fault::Stall)) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        if matches!(fault, Some(Fault::Close)) {
            return;
        }
        let (code, payload, head_len) = if let Some(Fault::Status(code)) = fault {
            (code, Vec::new(), 0)
        } else {
            let mut s = state.lock().unwrap();
            match method.as_str() {
                "GET" => match s.files.get(&path) {
                    Some(data) => (200, data.clone(), data.len()),
                    None => (404, Vec::new(), 0),
                },
                "HEAD" => match s.files.get(&path) {
                    Some(data) => (200, Vec::new(), data.len()),
                    None => (404, Vec::new(), 0),
                },
                "PUT" => {
                    s.files.insert(path.clone(), body);
                    (201, Vec::new(), 0)
                }
                _ => (405, Vec::new(), 0),
            }
        };
        let content_length = if method == "HEAD" {
            head_len
        } else {
            payload.len()
        };
        let head = format!(
            "HTTP/1.1 {code} {}\r\nContent-Length: {content_length}\r\nConnection: keep-alive\r\n\r\n",
            reason(code)
        );
        let stream = reader.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if method != "HEAD" && stream.write_all(&payload).await.is_err() {
            return;
        }
        let _ = stream.flush().await;
    }
}
