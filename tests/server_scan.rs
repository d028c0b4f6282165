//! SCAN over 10,000 keys with MATCH: every matching key exactly once, cursors usable from
//! another connection (client pools switch connections).
mod server_support;

use std::collections::HashSet;

use server_support::Server;

#[test]
fn scan_10000_with_match() {
    let s = Server::start();
    let mut c = s.conn();
    let mut other = s.conn();
    let mut p = redis::pipe();
    for i in 0..10_000 {
        p.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
        if i % 10 == 0 {
            p.cmd("SET").arg(format!("other:{i}")).arg(i).ignore();
        }
    }
    let _: () = p.query(&mut c).unwrap();
    let mut seen = HashSet::new();
    let mut cursor: u64 = 0;
    let mut calls = 0;
    loop {
        // Alternate connections: the cursor is server-wide.
        let conn = if calls % 2 == 0 { &mut c } else { &mut other };
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(500)
            .query(conn)
            .unwrap();
        for k in keys {
            assert!(k.starts_with("user:"), "{k}");
            assert!(seen.insert(k), "duplicate key");
        }
        calls += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(calls < 1000, "scan does not terminate");
    }
    assert_eq!(seen.len(), 10_000);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 11_000);
    let keys: Vec<String> = redis::cmd("KEYS").arg("other:1?").query(&mut c).unwrap();
    assert_eq!(keys, vec!["other:10".to_string()]);
    let keys: Vec<String> = redis::cmd("KEYS").arg("other:1??").query(&mut c).unwrap();
    assert_eq!(keys.len(), 10); // other:100 .. other:190
}
