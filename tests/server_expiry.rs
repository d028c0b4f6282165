//! Expiry: absolute times are checked exactly (PXAT/PEXPIRETIME); a short PX is awaited by
//! polling, never by asserting on elapsed time.
mod server_support;

use std::time::{Duration, Instant};

use redis::Commands;
use server_support::Server;

#[test]
fn expiry() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = redis::cmd("SET")
        .arg("abs")
        .arg("v")
        .arg("PXAT")
        .arg(4_102_444_800_000u64)
        .query(&mut c)
        .unwrap();
    let t: i64 = redis::cmd("PEXPIRETIME").arg("abs").query(&mut c).unwrap();
    assert_eq!(t, 4_102_444_800_000);
    let t: i64 = redis::cmd("EXPIRETIME").arg("abs").query(&mut c).unwrap();
    assert_eq!(t, 4_102_444_800);
    let ttl: i64 = c.ttl("abs").unwrap();
    assert!(ttl > 0);
    assert_eq!(c.persist::<_, i64>("abs").unwrap(), 1);
    assert_eq!(c.ttl::<_, i64>("abs").unwrap(), -1);
    // A time in the past deletes.
    let _: () = redis::cmd("PEXPIREAT")
        .arg("abs")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(c.exists::<_, i64>("abs").unwrap(), 0);

    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(50)
        .query(&mut c)
        .unwrap();
    let _: () = c.set("counter", 10).unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg("counter")
        .arg(50)
        .query(&mut c)
        .unwrap();
    let t0 = Instant::now();
    while c.exists::<_, i64>("short").unwrap() == 1 {
        assert!(t0.elapsed() < Duration::from_secs(30), "never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    while c.exists::<_, i64>("counter").unwrap() == 1 {
        assert!(t0.elapsed() < Duration::from_secs(30), "never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.get::<_, Option<String>>("short").unwrap(), None);
    assert_eq!(c.pttl::<_, i64>("short").unwrap(), -2);
    // INCR on an expired key starts from nothing.
    assert_eq!(c.incr::<_, _, i64>("counter", 1).unwrap(), 1);
    assert_eq!(c.ttl::<_, i64>("counter").unwrap(), -1);
}
