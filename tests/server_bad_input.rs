//! Bad input closes only the offending connection; another client keeps working.
mod server_support;

use redis::Commands;
use server_support::{resp, Server};

#[test]
fn bad_input_is_contained() {
    let s = Server::start();
    let mut good = s.conn();
    let mut check = |i: i64| {
        let _: () = good.set("alive", i).unwrap();
        assert_eq!(good.get::<_, i64>("alive").unwrap(), i);
    };

    // Malformed RESP.
    let mut r = s.raw_authed();
    r.send(b"*1\r\n+PING\r\n");
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: expected '$', got '+'\r\n"
    );
    assert!(r.closed());
    check(1);

    // Oversize bulk and multibulk headers (nothing is allocated for them).
    let mut r = s.raw_authed();
    r.send(b"*1\r\n$999999999999\r\n");
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(r.closed());
    let mut r = s.raw_authed();
    r.send(b"*99999999999\r\n");
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    assert!(r.closed());
    check(2);

    // Oversize pre-auth request.
    let mut r = s.raw();
    r.send(b"*1000\r\n");
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(r.closed());
    check(3);

    // 10,000 junk bytes without a newline: too big for an inline request.
    let mut r = s.raw_authed();
    let junk: Vec<u8> = (0..65_537u32).map(|i| b'a' + (i % 26) as u8).collect();
    r.send(&junk);
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: too big inline request\r\n"
    );
    assert!(r.closed());
    // 10,000 random-ish bytes with newlines and binary: the server survives whatever it says.
    let mut r = s.raw_authed();
    let mut x: u32 = 12345;
    let junk: Vec<u8> = (0..10_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let _ = std::io::Write::write_all(&mut r.0, &junk);
    drop(r);
    check(4);

    // Half a command, then disconnect.
    let mut r = s.raw_authed();
    let full = resp(&[b"SET", b"half", b"value"]);
    r.send(&full[..full.len() - 4]);
    drop(r);
    check(5);
    assert_eq!(good.exists::<_, i64>("half").unwrap(), 0);

    // Empty inline lines get no reply.
    let mut r = s.raw_authed();
    r.send(b"\r\n\r\nPING\r\n");
    assert_eq!(r.read_replies(1), b"+PONG\r\n");
}
