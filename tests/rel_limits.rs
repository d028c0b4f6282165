//! Hostile clients against the real binary. Each attack is bounded: it gets the documented
//! error or a close of that one connection, never more memory than a limit allows. Meanwhile
//! a sentinel client keeps getting PING/SET/GET answers, and the server's anonymous memory
//! (RssAnon) stays under 600 MiB throughout.
//!
//! One test function: the parts share one server and must not overlap with each other.
mod rel_support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rel_support::{enc, rss_anon, Bin, Client, R, TOKEN};

const RSS_LIMIT: u64 = 600 << 20;
const CONNECTIONS: usize = 5_000;
const QUERY_LIMIT: usize = 128 << 20;

/// Streams `chunk` after `head` until the server drops the connection; panics if it accepts
/// `cap` bytes. Returns the bytes it took.
fn flood_until_closed(c: &mut Client, head: &[u8], chunk: &[u8], cap: usize, what: &str) -> usize {
    c.sock
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut sent = 0;
    let mut res = c.sock.write_all(head);
    while res.is_ok() && sent < cap {
        res = c.sock.write_all(chunk);
        sent += chunk.len();
    }
    match res {
        Ok(()) => panic!("{what}: the server accepted {sent} bytes"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{what}: the server stopped reading but kept the connection: {e}"
        ),
    }
    sent
}

/// Reads one reply and then expects the connection to be closed.
fn expect_error_and_close(c: &mut Client, want: &str) {
    let r = c.read().expect("an error reply before the close");
    assert_eq!(r, R::Err(want.into()));
    assert!(
        c.wait_closed(Duration::from_secs(60)),
        "connection not closed after {want}"
    );
}

/// Raises this process' soft RLIMIT_NOFILE to its hard limit (the server, started after
/// this, inherits it) and returns the new limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return 0;
        }
    }
    lim.rlim_cur
}

struct Sentinel {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sentinel {
    fn start(port: u16) -> Sentinel {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut c = Client::authed(port).expect("sentinel connects");
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                assert_eq!(c.q(&["PING"]), R::Simple("PONG".into()), "sentinel PING");
                let v = format!("v{i}");
                assert_eq!(c.q(&["SET", "sentinel", &v]), R::Simple("OK".into()));
                assert_eq!(c.q(&["GET", "sentinel"]).bulk(), Some(v.as_bytes()));
                i += 1;
                r.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Sentinel {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) until the sentinel completed a few more rounds: it is still served.
    fn still_served(&self, what: &str) {
        let start = self.rounds.load(Ordering::Relaxed);
        let t0 = Instant::now();
        while self.rounds.load(Ordering::Relaxed) < start + 3 {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "sentinel starved during {what}"
            );
            assert!(
                !self.thread.as_ref().is_some_and(|t| t.is_finished()),
                "sentinel failed during {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sentinel got a wrong answer");
        }
    }
}

/// Samples the server's RssAnon until stopped; returns the maximum seen.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(r) = rss_anon(pid) {
                max = max.max(r);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        max
    })
}

#[test]
fn hostile_clients_are_bounded() {
    let nofile = raise_nofile();
    let tmp = tempfile::tempdir().unwrap();
    // Defaults except a query buffer limit well under the memory bound checked here (Redis'
    // default, 1 GiB, is above it by design).
    let cfg = tmp.path().join("limits.toml");
    std::fs::write(&cfg, format!("query_buffer_bytes = {QUERY_LIMIT}\n")).unwrap();
    let srv = Bin::start(
        &tmp.path().join("data"),
        &["--token", TOKEN, "--config", cfg.to_str().unwrap()],
        &[],
        Some(TOKEN),
        "limits",
    );
    let port = srv.port;
    let stop_rss = Arc::new(AtomicBool::new(false));
    let rss = rss_sampler(srv.pid(), stop_rss.clone());
    let sentinel = Sentinel::start(port);
    sentinel.still_served("start-up");

    // A 600 MiB bulk header: refused at once (limit 512 MiB), nothing allocated for it.
    let mut c = Client::authed(port).unwrap();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$629145600\r\n")
        .unwrap();
    expect_error_and_close(&mut c, "ERR Protocol error: invalid bulk length");
    // A bulk within the limit that never arrives: only what is sent is buffered.
    let mut c = Client::authed(port).unwrap();
    c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870000\r\n")
        .unwrap();
    c.send(&vec![b'x'; 4 << 20]).unwrap();
    sentinel.still_served("a half-sent 512 MiB bulk");
    drop(c);
    // A 10^9-element multibulk header.
    let mut c = Client::authed(port).unwrap();
    c.send(b"*1000000000\r\n").unwrap();
    expect_error_and_close(&mut c, "ERR Protocol error: invalid multibulk length");
    // Within the element limit, declared but never sent: nothing allocated by the count.
    let mut c = Client::authed(port).unwrap();
    c.send(b"*1048576\r\n$3\r\nSET\r\n").unwrap();
    sentinel.still_served("a declared 1M-element request");
    drop(c);
    sentinel.still_served("oversize headers");

    // A never-ending inline line, authenticated or not: stream until the server gives up.
    for authed in [true, false] {
        let mut c = if authed {
            Client::authed(port).unwrap()
        } else {
            Client::connect(port).unwrap()
        };
        let chunk = vec![b'a'; 4096];
        let mut sent = 0usize;
        while sent < (64 << 20) {
            if c.sock.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        assert!(sent < (64 << 20), "server kept reading an endless line");
        // The error may be lost to a reset if unread bytes were still in flight; when it
        // arrives it is the documented one.
        if let Ok(r) = c.read() {
            assert_eq!(
                r,
                R::Err("ERR Protocol error: too big inline request".into())
            );
        }
    }
    sentinel.still_served("endless inline lines");

    // Oversize requests before AUTH: Redis' pre-auth limits.
    for (req, err) in [
        (
            &b"*11\r\n"[..],
            "ERR Protocol error: unauthenticated multibulk length",
        ),
        (
            b"*1000000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*2\r\n$4\r\nAUTH\r\n$16385\r\n",
            "ERR Protocol error: unauthenticated bulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$629145600\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
    ] {
        let mut c = Client::connect(port).unwrap();
        c.send(req).unwrap();
        expect_error_and_close(&mut c, err);
    }
    // A long but legal pre-auth inline request gets NOAUTH, not memory.
    let mut c = Client::connect(port).unwrap();
    let mut line = b"SET k ".to_vec();
    line.extend(vec![b'v'; 60_000]);
    line.extend_from_slice(b"\r\n");
    c.send(&line).unwrap();
    assert_eq!(
        c.read().unwrap(),
        R::Err("NOAUTH Authentication required.".into())
    );
    sentinel.still_served("pre-auth oversize requests");

    // Arguments already parsed count against the query buffer limit: a request of many 1 MiB
    // bulks (1 GiB declared) ...
    let mut c = Client::authed(port).unwrap();
    let mut bulk = b"$1048576\r\n".to_vec();
    bulk.extend(vec![b'q'; 1 << 20]);
    bulk.extend_from_slice(b"\r\n");
    let sent = flood_until_closed(
        &mut c,
        b"*1024\r\n$4\r\nMSET\r\n",
        &bulk,
        1 << 30,
        "many bulks",
    );
    eprintln!("rel_limits: many-bulk request cut after {} MiB", sent >> 20);
    sentinel.still_served("a request of many bulks");
    // ... and so do commands queued by MULTI.
    let mut c = Client::authed(port).unwrap();
    let set = enc(&[b"SET", b"queued", &vec![b'm'; 1 << 20]]);
    let sent = flood_until_closed(&mut c, &enc(&[b"MULTI"]), &set, 1 << 30, "MULTI queue");
    eprintln!("rel_limits: MULTI queue cut after {} MiB", sent >> 20);
    sentinel.still_served("a MULTI queue flood");

    // A client pipelining GETs of a large value and never reading: its output buffer hits
    // the limit (64 MiB) and it alone is disconnected.
    let mut admin = Client::authed(port).unwrap();
    let big = vec![b'b'; 4 << 20];
    assert_eq!(
        admin.cmd(&[b"SET", b"big", &big]).unwrap(),
        R::Simple("OK".into())
    );
    let mut hog = Client::authed(port).unwrap();
    // A stuck write (the server neither reading nor closing) fails the test instead of
    // hanging it.
    hog.sock
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let batch: Vec<u8> = std::iter::repeat_n(&b"GET big\r\n"[..], 64)
        .flatten()
        .copied()
        .collect();
    let mut cut = None;
    for i in 0..100_000 {
        if let Err(e) = hog.sock.write_all(&batch) {
            cut = Some((i, e));
            break;
        }
    }
    let (i, e) = cut.expect("a client that never reads was never disconnected");
    assert!(
        !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "server stopped reading but kept the client after {i} batches: {e}"
    );
    assert!(hog.wait_closed(Duration::from_secs(60)));
    assert_eq!(admin.q(&["STRLEN", "big"]), R::Int(4 << 20));
    sentinel.still_served("an output-buffer hog");

    // 5,000 connections, half of them authenticated, opened in paced batches.
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if nofile < CONNECTIONS as u64 + 100 {
        let msg = format!(
            "RLIMIT_NOFILE hard limit {nofile} < {}: skipping the {CONNECTIONS}-connection part",
            CONNECTIONS + 100
        );
        assert!(!ci, "{msg} (CI=true requires it)");
        eprintln!("{msg}");
    } else {
        let mut conns: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
        let mut authed = 0;
        let auth = enc(&[b"AUTH", TOKEN.as_bytes()]);
        while conns.len() < CONNECTIONS {
            let batch_start = conns.len();
            for _ in 0..250 {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                if conns.len().is_multiple_of(2) {
                    s.write_all(&auth).expect("auth");
                    authed += 1;
                }
                conns.push(s);
            }
            // Pace: the server has answered this batch's last connections before the next.
            for s in conns[batch_start..].iter().rev().take(2) {
                let mut c = Client::from_stream(s.try_clone().expect("clone"));
                let r = c.q(&["PING"]);
                assert!(
                    r == R::Simple("PONG".into())
                        || r == R::Simple("OK".into())
                        || r == R::Err("NOAUTH Authentication required.".into()),
                    "{r:?}"
                );
            }
        }
        sentinel.still_served("5,000 open connections");
        let info = admin.q(&["INFO", "clients"]).text();
        let n: usize = rel_support::info_field(&info, "connected_clients")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > CONNECTIONS, "connected_clients {n}: {info}");
        eprintln!(
            "rel_limits: {} connections open ({authed} authenticated)",
            n
        );
        drop(conns);
    }
    sentinel.still_served("the end");
    sentinel.finish();
    stop_rss.store(true, Ordering::Relaxed);
    let max_rss = rss.join().unwrap();
    eprintln!("rel_limits: max RssAnon {} MiB", max_rss >> 20);
    assert!(max_rss > 0, "RssAnon was never read");
    assert!(
        max_rss < RSS_LIMIT,
        "server RssAnon reached {} MiB",
        max_rss >> 20
    );
}
