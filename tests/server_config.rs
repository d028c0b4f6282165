//! Start-up: config errors are one line naming the field; a generated token is printed once and
//! stored with mode 0600; maxclients and the output buffer limit hold.
mod server_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server_support::{free_port, resp, Server};

fn run_with_config(text: &str) -> (i32, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sndv-kv"))
        .arg("--config")
        .arg(&path)
        .arg("--dir")
        .arg(tmp.path().join("data"))
        .arg("--port")
        .arg(free_port().to_string())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_are_one_line() {
    let (code, _, err) = run_with_config("fsync = \"sometimes\"\n");
    assert_ne!(code, 0);
    assert_eq!(
        err.trim_end(),
        "config error: field 'fsync': expected one of always, everysec, never"
    );
    let (code, _, err) = run_with_config("colour = 1\n");
    assert_ne!(code, 0);
    assert_eq!(err.trim_end(), "config error: unknown field 'colour'");
    let (code, _, err) = run_with_config("databases = 1000\n");
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("'databases'"), "{err}");
}

#[test]
fn generated_token_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let start = || {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sndv-kv"))
            .arg("--dir")
            .arg(tmp.path())
            .arg("--port")
            .arg(port.to_string())
            .env_remove("SNDV_KV_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it listens, then stop it with SIGTERM and collect its output.
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out1, err1) = start();
    let token = std::fs::read_to_string(tmp.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 32);
    assert!(
        out1.contains(&token),
        "first start prints the token: {out1}"
    );
    assert!(!err1.contains(&token), "token leaked into logs");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (out2, err2) = start();
    assert!(!out2.contains(&token), "later starts must not print it");
    assert!(out2.contains("admin.token"), "{out2}");
    assert!(!err2.contains(&token));
}

#[test]
fn maxclients_and_output_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "maxclients = 2\nclient_output_buffer_bytes = 65536\n").unwrap();
    let s = Server::start_in(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    // The readiness probe's connection may still be closing: retry while the server is full.
    let authed = || {
        let t0 = Instant::now();
        loop {
            let mut r = s.raw();
            let got = r.roundtrip(&format!("AUTH {}\r\n", server_support::TOKEN));
            if got == b"+OK\r\n" {
                return r;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{got:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut a = authed();
    let mut b = authed();
    let t0 = Instant::now();
    loop {
        let mut c = s.raw();
        c.send(b"PING\r\n");
        let got = c.read_replies(1);
        if got == b"-ERR max number of clients reached\r\n" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{got:?}");
        drop(c);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Replies above the output buffer limit disconnect that client only.
    let big = vec![b'x'; 40_000];
    a.send(&resp(&[b"SET", b"big", &big]));
    assert_eq!(a.read_replies(1), b"+OK\r\n");
    let mut many = Vec::new();
    for _ in 0..10 {
        many.extend_from_slice(&resp(&[b"GET", b"big"]));
    }
    a.0.write_all(&many).unwrap();
    assert!(a.closed());
    assert_eq!(b.roundtrip("PING\r\n"), b"+PONG\r\n");
}

#[test]
fn second_process_on_same_dir_fails_cleanly() {
    let s = Server::start();
    let out = Command::new(env!("CARGO_BIN_EXE_sndv-kv"))
        .arg("--dir")
        .arg(&s.dir)
        .arg("--port")
        .arg(free_port().to_string())
        .arg("--token")
        .arg("x")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
    // The first server is unaffected.
    let mut c = s.raw_authed();
    assert_eq!(c.roundtrip("PING\r\n"), b"+PONG\r\n");
}
