//! Shared by the `server_*` tests: starts the built binary on a free port with a temp dir and a
//! token, waits until it answers PING, and kills it on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789";

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// A fresh server in a new temp dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// A server in a fresh directory configured by `toml` (a config file written beside its
    /// data directory); both live as long as the returned guard.
    pub fn start_with_config(toml: &str) -> (tempfile::TempDir, Server) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("server.toml");
        std::fs::write(&cfg, toml).expect("write the config file");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create the data directory");
        let s = Server::start_in(&data, &["--config", cfg.to_str().expect("utf-8 path")]);
        (dir, s)
    }

    /// A server on `dir` (reused across restarts), with extra CLI args.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(env!("CARGO_BIN_EXE_sndv-kv"))
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(dir)
                .arg("--token")
                .arg(TOKEN)
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn sndv-kv");
            let mut s = Server {
                child: Some(child),
                port,
                dir: dir.to_path_buf(),
                _tmp: None,
            };
            if s.wait_ready(Duration::from_secs(20)) {
                return s;
            }
            s.kill();
        }
        panic!("sndv-kv did not start");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let cmd = format!("AUTH {TOKEN}\r\nPING\r\n");
                if s.write_all(cmd.as_bytes()).is_ok() {
                    let mut buf = [0u8; 64];
                    let mut got = Vec::new();
                    while got.len() < 12 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if got.starts_with(b"+OK\r\n+PONG\r\n") {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://:{TOKEN}@127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("connection")
    }

    /// A raw socket, not authenticated.
    pub fn raw(&self) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw(s)
    }

    /// A raw socket after AUTH.
    pub fn raw_authed(&self) -> Raw {
        let mut r = self.raw();
        assert_eq!(r.roundtrip(&format!("AUTH {TOKEN}\r\n")), b"+OK\r\n");
        r
    }

    /// Graceful stop (SIGTERM), waiting for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("server did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn term(&self) {
        if let Some(c) = self.child.as_ref() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }

    /// Waits for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if t0.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                panic!("server did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw RESP connection for byte-level checks.
pub struct Raw(pub TcpStream);

impl Raw {
    pub fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).expect("write");
    }

    /// Reads until `n` complete top-level replies have arrived (or EOF).
    pub fn read_replies(&mut self, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            if count_replies(&got) >= n {
                return got;
            }
            match self.0.read(&mut buf) {
                Ok(0) => return got,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) => panic!(
                    "read from {:?}: {e}; got so far {:?}",
                    self.0.peer_addr(),
                    String::from_utf8_lossy(&got)
                ),
            }
        }
    }

    pub fn roundtrip(&mut self, cmd: &str) -> Vec<u8> {
        self.send(cmd.as_bytes());
        self.read_replies(1)
    }

    /// True when the server closed the connection (reads EOF or reset).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.0.read(&mut buf) {
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

/// Encodes a command as a RESP multibulk.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Number of complete top-level RESP replies at the start of `b`.
pub fn count_replies(b: &[u8]) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while let Some(end) = reply_end(b, pos) {
        pos = end;
        n += 1;
    }
    n
}

/// End offset of the reply starting at `pos`, if complete.
pub fn reply_end(b: &[u8], pos: usize) -> Option<usize> {
    if pos >= b.len() {
        return None;
    }
    let line_end = pos + b[pos..].windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[pos + 1..line_end]).ok()?;
    let next = line_end + 2;
    match b[pos] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
        b'$' | b'=' | b'!' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some(next);
            }
            let end = next + len as usize + 2;
            (end <= b.len()).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let len: i64 = line.parse().ok()?;
            let items = if b[pos] == b'%' || b[pos] == b'|' {
                len * 2
            } else {
                len
            };
            let mut p = next;
            for _ in 0..items.max(0) {
                p = reply_end(b, p)?;
            }
            Some(p)
        }
        _ => None,
    }
}
