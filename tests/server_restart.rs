//! Data survives a graceful restart and a kill -9 (fsync always).
mod server_support;

use redis::Commands;
use server_support::Server;

#[test]
fn data_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut s = Server::start_in(tmp.path(), &[]);
        let mut c = s.conn();
        for i in 0..200 {
            let _: () = c.set(format!("k{i}"), i).unwrap();
        }
        let _: () = redis::cmd("SET")
            .arg("ttl")
            .arg("v")
            .arg("EX")
            .arg(10_000)
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
        let _: () = c.set("in3", "yes").unwrap();
        s.stop();
    }
    {
        let mut s = Server::start_in(tmp.path(), &[]);
        let mut c = s.conn();
        assert_eq!(c.get::<_, i64>("k199").unwrap(), 199);
        assert!(c.ttl::<_, i64>("ttl").unwrap() > 9_000);
        let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(n, 201);
        let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
        assert_eq!(c.get::<_, String>("in3").unwrap(), "yes");
        let _: () = c.set("after_kill", "1").unwrap();
        s.kill();
    }
    {
        let s = Server::start_in(tmp.path(), &[]);
        let mut c = s.conn();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
        assert_eq!(c.get::<_, String>("after_kill").unwrap(), "1");
    }
}
