//! MULTI/EXEC: a WATCH conflict from a second connection aborts; runtime errors don't undo.
mod server_support;

use redis::Commands;
use server_support::Server;

#[test]
fn watch_conflict_aborts() {
    let s = Server::start();
    let mut a = s.conn();
    let mut b = s.conn();
    let _: () = a.set("w", "1").unwrap();
    let _: () = redis::cmd("WATCH").arg("w").query(&mut a).unwrap();
    // Another client writes the same value: still a modification.
    let _: () = b.set("w", "1").unwrap();
    let r: Option<(String, i64)> = redis::pipe()
        .atomic()
        .set("x", "y")
        .incr("w", 1)
        .query(&mut a)
        .unwrap();
    assert_eq!(r, None, "EXEC must abort");
    assert_eq!(a.get::<_, Option<String>>("x").unwrap(), None);

    // Without interference it commits, and reads inside see earlier writes of the block.
    let _: () = redis::cmd("WATCH").arg("w").query(&mut a).unwrap();
    let r: Option<(String, i64, String)> = redis::pipe()
        .atomic()
        .set("x", "y")
        .incr("w", 1)
        .get("x")
        .query(&mut a)
        .unwrap();
    assert_eq!(r, Some(("OK".to_string(), 2, "y".to_string())));
}

#[test]
fn runtime_error_does_not_undo() {
    let s = Server::start();
    let mut raw = s.raw_authed();
    raw.send(b"SET t text\r\nMULTI\r\nSET a 1\r\nINCR t\r\nSET b 2\r\nEXEC\r\n");
    let got = raw.read_replies(6);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n"
    );
    // A queueing error discards the whole transaction.
    raw.send(b"MULTI\r\nSET c 1\r\nNOPE\r\nEXEC\r\nEXISTS c\r\n");
    let got = raw.read_replies(5);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+QUEUED\r\n-ERR unknown command 'NOPE', with args beginning with: \r\n-EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n"
    );
}
