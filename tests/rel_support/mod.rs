//! Shared by the `rel_*` tests: an in-process server over any `Storage` (for fault injection),
//! a small blocking RESP client that decodes replies, and process memory probes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sndv_kv::config::Config;
use sndv_kv::engine::Storage;
use sndv_kv::server::auth::Token;

/// The same token `server_support` starts the binary with, so both helpers talk to either.
pub const TOKEN: &str = "test-token-0123456789abcdef0123456789";

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum R {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<R>>),
}

impl R {
    pub fn is_err(&self) -> bool {
        matches!(self, R::Err(_))
    }
    pub fn err_text(&self) -> Option<&str> {
        match self {
            R::Err(s) => Some(s),
            _ => None,
        }
    }
    pub fn bulk(&self) -> Option<&[u8]> {
        match self {
            R::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
    pub fn text(&self) -> String {
        match self {
            R::Simple(s) | R::Err(s) => s.clone(),
            R::Int(i) => i.to_string(),
            R::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            R::Bulk(None) | R::Array(None) => "(nil)".to_string(),
            R::Array(Some(v)) => format!("{v:?}"),
        }
    }
}

/// Decodes one reply at the start of `b`: the reply and its length, or `None` if incomplete.
pub fn decode(b: &[u8]) -> Option<(R, usize)> {
    let nl = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..nl]).ok()?;
    let next = nl + 2;
    match *b.first()? {
        b'+' => Some((R::Simple(line.to_string()), next)),
        b'-' => Some((R::Err(line.to_string()), next)),
        b':' => Some((R::Int(line.parse().ok()?), next)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((R::Bulk(None), next));
            }
            let end = next + len as usize;
            if b.len() < end + 2 {
                return None;
            }
            Some((R::Bulk(Some(b[next..end].to_vec())), end + 2))
        }
        b'*' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((R::Array(None), next));
            }
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..len {
                let (r, n) = decode(&b[pos..])?;
                items.push(r);
                pos += n;
            }
            Some((R::Array(Some(items)), pos))
        }
        _ => None,
    }
}

/// Encodes a command as a RESP multibulk.
pub fn enc(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// A blocking RESP client that keeps unread bytes between replies.
pub struct Client {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        // Generous: only a hung server trips it, never a slow machine.
        sock.set_read_timeout(Some(Duration::from_secs(120)))?;
        let _ = sock.set_nodelay(true);
        Ok(Client {
            sock,
            buf: Vec::new(),
        })
    }

    /// Wraps an already connected socket.
    pub fn from_stream(sock: TcpStream) -> Client {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(120)));
        Client {
            sock,
            buf: Vec::new(),
        }
    }

    pub fn authed(port: u16) -> std::io::Result<Client> {
        let mut c = Client::connect(port)?;
        let r = c.cmd(&[b"AUTH", TOKEN.as_bytes()])?;
        if r != R::Simple("OK".into()) {
            return Err(std::io::Error::other(format!("AUTH answered {r:?}")));
        }
        Ok(c)
    }

    pub fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(b)
    }

    /// The next reply; an error if the connection closed first.
    pub fn read(&mut self) -> std::io::Result<R> {
        loop {
            if let Some((r, n)) = decode(&self.buf) {
                self.buf.drain(..n);
                return Ok(r);
            }
            let mut tmp = [0u8; 65536];
            let n = self.sock.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<R> {
        self.send(&enc(args))?;
        self.read()
    }

    /// `cmd` with string arguments, panicking on I/O errors (tests only).
    pub fn q(&mut self, args: &[&str]) -> R {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a)
            .unwrap_or_else(|e| panic!("{args:?}: connection failed: {e}"))
    }

    /// Reads until EOF or a reset, discarding data; true if the server closed the connection
    /// (false if the read timed out first).
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let _ = self.sock.set_read_timeout(Some(timeout));
        let mut tmp = [0u8; 65536];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

/// A value of an `INFO` field, e.g. `info_field(&info, "stall_ms_max")`.
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

/// A server running in this process over a given storage, stopped on drop.
pub struct InProc {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// The configuration the in-process tests start from: `dir`, the test token, fsync always.
pub fn base_config(dir: &Path) -> Config {
    Config {
        dir: dir.to_path_buf(),
        token: Some(TOKEN.to_string()),
        ..Config::default()
    }
}

impl InProc {
    /// Starts the server on a free port and waits until the engine answers (not -LOADING).
    pub fn start(cfg: Config, storage: Arc<dyn Storage>) -> InProc {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let port = l.local_addr().map_err(|e| e.to_string())?.port();
                let _ = port_tx.send(port);
                let token = Token::new(TOKEN.as_bytes().to_vec());
                sndv_kv::server::run_with_storage(l, cfg, token, storage, async move {
                    let _ = stop_rx.await;
                })
                .await
            })
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("in-process server bound a port");
        let s = InProc {
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        let t0 = Instant::now();
        loop {
            if let Ok(mut c) = Client::authed(port) {
                if c.q(&["PING"]) == R::Simple("PONG".into()) {
                    return s;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "in-process server never became ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (closing the engine) and returns what `run_with_storage` returned.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), String> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err("server thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// RssAnon of process `pid` in bytes, from /proc/<pid>/status.
pub fn rss_anon(pid: u32) -> Option<u64> {
    sndv_kv::procfs::status_bytes(&pid.to_string(), "RssAnon")
}

/// The server binary as a child process whose pid and stderr the test can see.
pub struct Bin {
    pub child: Option<std::process::Child>,
    pub port: u16,
    /// stdout and stderr of the process, for tests that inspect what it printed.
    pub stdout_path: std::path::PathBuf,
    pub stderr_path: std::path::PathBuf,
}

impl Bin {
    /// Starts `sndv-kv --port <free> --dir <dir> <args>` with `envs` (and no inherited
    /// SNDV_KV_TOKEN), output captured to files in `dir`'s parent; waits for PING with `token`.
    pub fn start(
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        token: Option<&str>,
        name: &str,
    ) -> Bin {
        let logs = dir.parent().unwrap_or(dir).to_path_buf();
        let stdout_path = logs.join(format!("{name}.stdout"));
        let stderr_path = logs.join(format!("{name}.stderr"));
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
                l.local_addr().expect("addr").port()
            };
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sndv-kv"));
            cmd.arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(dir)
                .args(args)
                .env_remove("SNDV_KV_TOKEN")
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
                .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
            for (k, v) in envs {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn sndv-kv");
            let mut b = Bin {
                child: Some(child),
                port,
                stdout_path: stdout_path.clone(),
                stderr_path: stderr_path.clone(),
            };
            let tok = token.map(str::to_string).unwrap_or_else(|| {
                // Generated on first start: read it from the token file once it exists.
                let t0 = Instant::now();
                loop {
                    if let Ok(t) = std::fs::read_to_string(dir.join("admin.token")) {
                        if !t.trim().is_empty() {
                            return t.trim().to_string();
                        }
                    }
                    assert!(t0.elapsed() < Duration::from_secs(30), "no admin.token");
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            if b.wait_ready(&tok) {
                return b;
            }
            b.kill();
        }
        panic!("sndv-kv did not start");
    }

    fn wait_ready(&mut self, token: &str) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok(mut c) = Client::connect(self.port) {
                if c.cmd(&[b"AUTH", token.as_bytes()]).ok() == Some(R::Simple("OK".into()))
                    && c.cmd(&[b"PING"]).ok() == Some(R::Simple("PONG".into()))
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("server did not stop on SIGTERM");
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        self.kill();
    }
}
