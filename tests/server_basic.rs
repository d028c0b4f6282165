//! Strings and keys through the `redis` crate.
mod server_support;

use redis::Commands;
use server_support::Server;

#[test]
fn strings_and_keys() {
    let s = Server::start();
    let mut c = s.conn();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(c.decr::<_, _, i64>("n", 2).unwrap(), 3);
    assert_eq!(c.append::<_, _, i64>("k", "w").unwrap(), 2);
    assert_eq!(c.strlen::<_, i64>("k").unwrap(), 2);
    let _: () = c.mset(&[("a", "1"), ("b", "2")]).unwrap();
    let v: Vec<Option<String>> = c.mget(&["a", "b", "zz"]).unwrap();
    assert_eq!(v, vec![Some("1".into()), Some("2".into()), None]);
    assert_eq!(c.exists::<_, i64>(&["a", "b", "zz"]).unwrap(), 2);
    assert_eq!(c.del::<_, i64>(&["a", "zz"]).unwrap(), 1);
    let t: String = redis::cmd("TYPE").arg("b").query(&mut c).unwrap();
    assert_eq!(t, "string");
    let _: () = c.rename("b", "c").unwrap();
    assert_eq!(c.get::<_, Option<String>>("b").unwrap(), None);
    assert_eq!(c.get::<_, String>("c").unwrap(), "2");
    let f: f64 = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1.5")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, 1.5);
    let old: Option<String> = redis::cmd("SET")
        .arg("c")
        .arg("3")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("2"));
    let r: redis::RedisResult<i64> = c.incr("k", 1);
    let e = r.unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 4); // k n c f
                      // Databases are separate.
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
    let _: () = c.set("k", "db1").unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "vw");
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(info.contains("redis_version:7.0.15"));
    assert!(!info.contains(server_support::TOKEN));
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(!list.contains(server_support::TOKEN));
    // CLIENT LIST shows each connection's last command: another connection's last batch, and
    // the caller's own CLIENT LIST.
    let mut other = s.conn();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("x")
        .arg("1")
        .cmd("GET")
        .arg("x")
        .query(&mut other)
        .unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut other).unwrap();
    let _: Option<String> = other.get("x").unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let line = |id: i64| {
        list.lines()
            .find(|l| l.starts_with(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("no client {id} in {list}"))
            .to_string()
    };
    assert!(line(id).contains(" cmd=get "), "{}", line(id));
    let me: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(line(me).contains(" cmd=client "), "{}", line(me));
}
