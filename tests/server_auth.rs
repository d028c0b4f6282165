//! Authentication cannot be skipped; Redis' texts and pre-auth limits apply.
mod server_support;

use server_support::{Server, TOKEN};

#[test]
fn auth_required() {
    let s = Server::start();
    let mut r = s.raw();
    assert_eq!(
        r.roundtrip("GET k\r\n"),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        r.roundtrip("SET k v\r\n"),
        b"-NOAUTH Authentication required.\r\n"
    );
    // Unknown command and wrong arity get their normal error first.
    assert_eq!(
        r.roundtrip("FOO a\r\n"),
        b"-ERR unknown command 'FOO', with args beginning with: 'a' \r\n"
    );
    assert_eq!(
        r.roundtrip("GET\r\n"),
        b"-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert!(String::from_utf8_lossy(&r.roundtrip("HELLO 3\r\n"))
        .starts_with("-NOAUTH HELLO must be called with the client already authenticated"));
    assert_eq!(
        r.roundtrip("AUTH wrong\r\n"),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        r.roundtrip(&format!("AUTH someone {TOKEN}\r\n")),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        r.roundtrip(&format!("AUTH default {TOKEN}\r\n")),
        b"+OK\r\n"
    );
    assert_eq!(r.roundtrip("PING\r\n"), b"+PONG\r\n");
    // RESET needs a new AUTH.
    assert_eq!(r.roundtrip("RESET\r\n"), b"+RESET\r\n");
    assert_eq!(
        r.roundtrip("PING\r\n"),
        b"-NOAUTH Authentication required.\r\n"
    );
    // HELLO with AUTH authenticates and switches protocol.
    let hello = r.roundtrip(&format!("HELLO 3 AUTH default {TOKEN}\r\n"));
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(r.roundtrip("GET nothing\r\n"), b"_\r\n");

    // A fresh connection through the client library with the token works.
    let mut c = s.conn();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn pre_auth_limits() {
    let s = Server::start();
    let mut r = s.raw();
    r.send(b"*11\r\n");
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(r.closed());
    let mut r = s.raw();
    r.send(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n");
    assert_eq!(
        r.read_replies(1),
        b"-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(r.closed());
    // After AUTH the same sizes are fine.
    let mut r = s.raw_authed();
    let big = vec![b'x'; 20_000];
    r.send(&server_support::resp(&[b"SET", b"big", &big]));
    assert_eq!(r.read_replies(1), b"+OK\r\n");
}
