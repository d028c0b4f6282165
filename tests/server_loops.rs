//! Connections move between event loops when the number of loops in use changes (here by
//! `CONFIG SET io_loops`, as the adaptive tuner does by itself): replies stay in order, and a
//! connection's state (MULTI queue, WATCHed keys, database) goes with it.
mod server_support;

use redis::{Commands, Connection};
use server_support::{count_replies, resp, Server};

fn server(io_threads: u32, io_loops: u32) -> (tempfile::TempDir, Server) {
    Server::start_with_config(&format!(
        "io_threads = {io_threads}\nio_loops = {io_loops}\n"
    ))
}

/// Connections per event loop, from CLIENT LIST.
fn per_loop(c: &mut Connection, loops: usize) -> Vec<usize> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(c).unwrap();
    let mut n = vec![0; loops];
    for line in list.lines() {
        let t: usize = line
            .split(' ')
            .find_map(|f| f.strip_prefix("io-thread="))
            .unwrap_or_else(|| panic!("no io-thread in {line}"))
            .parse()
            .unwrap();
        n[t] += 1;
    }
    n
}

fn info_num(c: &mut Connection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {info}"))
        .trim()
        .parse()
        .unwrap()
}

fn set_loops(c: &mut Connection, n: impl redis::ToRedisArgs) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("io_loops")
        .arg(n)
        .query(c)
}

fn ping(c: &mut Connection) {
    let r: String = redis::cmd("PING").query(c).unwrap();
    assert_eq!(r, "PONG");
}

/// Each connection's next request is served where it is, then it moves; the one after is
/// served on its new loop (which CLIENT LIST then shows).
fn settle(conns: &mut [Connection]) {
    for c in conns.iter_mut() {
        ping(c);
        ping(c);
    }
}

#[test]
fn connections_move_between_loops_with_their_state() {
    let (_dir, s) = server(3, 1);
    let mut conns: Vec<Connection> = (0..6).map(|_| s.conn()).collect();
    settle(&mut conns);
    assert_eq!(per_loop(&mut conns[0], 3), vec![6, 0, 0]);
    assert_eq!(info_num(&mut conns[0], "io_threads_active"), 1);
    assert_eq!(info_num(&mut conns[0], "io_loop_moves"), 0);

    // State that must move along: an open MULTI, a WATCHed key, a selected database.
    let _: () = redis::cmd("MULTI").query(&mut conns[1]).unwrap();
    let q: String = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut conns[1])
        .unwrap();
    assert_eq!(q, "QUEUED");
    let _: () = redis::cmd("WATCH").arg("w").query(&mut conns[2]).unwrap();
    let _: () = redis::cmd("SELECT").arg(5).query(&mut conns[3]).unwrap();
    let _: () = conns[3].set("in5", "yes").unwrap();

    set_loops(&mut conns[0], 3).unwrap();
    assert_eq!(info_num(&mut conns[0], "io_threads_active"), 3);
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("io_loops")
        .query(&mut conns[0])
        .unwrap();
    assert_eq!(got, vec!["io_loops".to_string(), "3".to_string()]);
    // conns[1..4] make their next request with state pending, then move.
    let q: String = redis::cmd("SET")
        .arg("b")
        .arg("2")
        .query(&mut conns[1])
        .unwrap();
    assert_eq!(q, "QUEUED");
    let g: Option<String> = conns[2].get("w").unwrap();
    assert_eq!(g, None);
    let g: String = conns[3].get("in5").unwrap();
    assert_eq!(g, "yes");
    // conns[1]'s next request (EXEC) is served on its new loop.
    let r: Vec<String> = redis::cmd("EXEC").query(&mut conns[1]).unwrap();
    assert_eq!(r, vec!["OK", "OK"]);
    settle(&mut conns);
    let n = per_loop(&mut conns[0], 3);
    assert_eq!(n, vec![2, 2, 2], "six connections over three loops");
    assert!(info_num(&mut conns[0], "io_loop_moves") >= 4);
    let _: () = conns[0].set("w", "changed").unwrap();
    let r: Option<Vec<String>> = redis::pipe()
        .atomic()
        .set("x", "1")
        .query(&mut conns[2])
        .unwrap();
    assert_eq!(r, None, "the WATCH survived the move and saw the change");
    let g: String = conns[3].get("in5").unwrap();
    assert_eq!(g, "yes", "still on database 5");
    let a: String = conns[4].get("a").unwrap();
    let b: String = conns[4].get("b").unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("1", "2"));

    // Back to one loop while pipelined clients are in the middle of a request: three raw
    // connections on the three loops (round robin), each stopped right after the header of
    // a request when the server has answered everything before it. Two of them must move;
    // a partly parsed request must not be lost by the move.
    let mut raws: Vec<_> = (0..3).map(|_| s.raw_authed()).collect();
    let mut batch = Vec::new();
    let mut cut = 0;
    for i in 0..2000 {
        if i == 1000 {
            cut = batch.len() + 4;
        }
        batch.extend(resp(&[b"SET", format!("p{i}").as_bytes(), b"v"]));
    }
    assert_eq!(&batch[cut - 4..cut], b"*3\r\n");
    batch.extend(resp(&[b"GET", b"p1999"]));
    set_loops(&mut conns[5], 1).unwrap();
    for raw in raws.iter_mut() {
        raw.send(&batch[..cut]);
        assert_eq!(raw.read_replies(1000), b"+OK\r\n".repeat(1000));
        raw.send(&batch[cut..]);
        let out = raw.read_replies(1001);
        assert_eq!(count_replies(&out), 1001);
        let want: Vec<u8> = b"+OK\r\n"
            .repeat(1000)
            .into_iter()
            .chain(b"$1\r\nv\r\n".iter().copied())
            .collect();
        assert_eq!(out, want);
    }
    settle(&mut conns);
    for raw in raws.iter_mut() {
        assert_eq!(raw.roundtrip("PING\r\n"), b"+PONG\r\n");
        assert_eq!(raw.roundtrip("PING\r\n"), b"+PONG\r\n");
    }
    assert_eq!(per_loop(&mut conns[0], 3), vec![9, 0, 0]);
    assert_eq!(info_num(&mut conns[0], "io_threads_active"), 1);
}

#[test]
fn io_loops_is_checked_against_io_threads() {
    let (_dir, s) = server(2, 0);
    let mut c = s.conn();
    let e = set_loops(&mut c, 3).unwrap_err();
    assert!(e.to_string().contains("io_loops"), "{e}");
    let e = set_loops(&mut c, "many").unwrap_err();
    assert!(e.to_string().contains("integer"), "{e}");
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("io_*")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["io_threads", "2", "io_loops", "0"]);
    // Adaptive: starts on one loop (no load here to make it try two).
    ping(&mut c);
    assert_eq!(per_loop(&mut c, 2), vec![1, 0]);
}
