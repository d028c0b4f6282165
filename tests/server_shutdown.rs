//! SIGTERM and SHUTDOWN stop cleanly: in-flight commands finish and every acknowledged write
//! is there after a restart.
mod server_support;

use std::time::Duration;

use server_support::{count_replies, resp, Server};

#[test]
fn sigterm_keeps_acknowledged_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(tmp.path(), &[]);
    let mut raw = s.raw_authed();
    let mut batch = Vec::new();
    for i in 0..5000 {
        batch.extend_from_slice(&resp(&[b"SET", format!("k{i}").as_bytes(), b"v"]));
    }
    // Write from another thread: the server may stop reading mid-way.
    let mut w = raw.0.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut w, &batch);
    });
    std::thread::sleep(Duration::from_millis(20));
    s.term();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match std::io::Read::read(&mut raw.0, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = writer.join();
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    let acked = count_replies(&got);
    eprintln!("{acked} of 5000 writes acknowledged before SIGTERM took effect");
    assert!(got[..].starts_with(b"+OK\r\n") || acked == 0);
    assert!(
        got.windows(5).filter(|w| w == b"+OK\r\n").count() == acked,
        "only +OK replies expected"
    );

    let s2 = Server::start_in(tmp.path(), &[]);
    let mut r2 = s2.raw_authed();
    for i in 0..acked {
        let reply = r2.roundtrip(&format!("EXISTS k{i}\r\n"));
        assert_eq!(reply, b":1\r\n", "acknowledged k{i} lost ({acked} acked)");
    }
}

#[test]
fn shutdown_command_exits_cleanly() {
    let mut s = Server::start();
    let mut raw = s.raw_authed();
    assert_eq!(raw.roundtrip("SET a 1\r\n"), b"+OK\r\n");
    raw.send(b"SHUTDOWN\r\n");
    assert!(raw.closed());
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
}
