//! Data survives a graceful restart and a kill -9 (fsync always, and fsync never for a process kill).
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

/// config_fast.toml (fsync never): every acknowledged write was handed to the kernel before
/// its reply, so a kill -9 of the process (not of the machine) loses none of them.
#[test]
fn fast_profile_loses_no_acknowledged_write_on_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config_fast.toml");
    let n = 5_000;
    {
        let mut s = Server::start_in(tmp.path(), &["--config", cfg]);
        let mut c = s.conn();
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.set(format!("k{i}"), format!("v{i}")).ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
        let _: () = c.set("last", "acknowledged").unwrap();
        s.kill();
    }
    let s = Server::start_in(tmp.path(), &["--config", cfg]);
    let mut c = s.conn();
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, n + 1);
    for i in (0..n).step_by(97) {
        assert_eq!(
            c.get::<_, String>(format!("k{i}")).unwrap(),
            format!("v{i}")
        );
    }
    assert_eq!(c.get::<_, String>("last").unwrap(), "acknowledged");
}
