//! Checkpoints through the server: SAVE and BGSAVE each leave `<dir>/checkpoints/<unix-time>/`,
//! which a new server opens as its data directory. Every key acknowledged before the save is
//! there, keys written after it are not, and deletes and overwrites before it are kept.

mod server_support;

use redis::Connection;
use server_support::Server;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const N: usize = 3_000;

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|rd| rd.map(|e| e.expect("dir entry").path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn lastsave(c: &mut Connection) -> i64 {
    redis::cmd("LASTSAVE").query(c).expect("LASTSAVE")
}

fn server_secs(c: &mut Connection) -> i64 {
    let t: Vec<String> = redis::cmd("TIME").query(c).expect("TIME");
    t[0].parse().expect("TIME seconds")
}

fn info_field(c: &mut Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {info:?}"))
        .to_string()
}

fn set_many(c: &mut Connection, keys: impl Iterator<Item = (String, String)>) {
    let mut p = redis::pipe();
    for (k, v) in keys {
        p.cmd("SET").arg(k).arg(v).ignore();
    }
    p.query::<()>(c).expect("pipelined SETs");
}

fn get(c: &mut Connection, k: &str) -> Option<String> {
    redis::cmd("GET").arg(k).query(c).expect("GET")
}

fn dbsize(c: &mut Connection) -> usize {
    redis::cmd("DBSIZE").query(c).expect("DBSIZE")
}

/// The keys written before SAVE: `k<i>` = `v<i>`, with every 10th deleted and every 7th
/// overwritten.
fn expected_before_save(i: usize) -> Option<String> {
    if i.is_multiple_of(10) {
        None
    } else if i.is_multiple_of(7) {
        Some(format!("w{i}"))
    } else {
        Some(format!("v{i}"))
    }
}

fn check_saved_keys(c: &mut Connection) {
    for i in 0..N {
        assert_eq!(
            get(c, &format!("k{i}")),
            expected_before_save(i),
            "key k{i}"
        );
    }
}

#[test]
fn save_and_bgsave_checkpoints_open_as_data_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let mut s = Server::start_in(&dir, &[]);
    let mut c = s.conn();

    set_many(&mut c, (0..N).map(|i| (format!("k{i}"), format!("v{i}"))));
    set_many(
        &mut c,
        (0..N)
            .filter(|i| i.is_multiple_of(7))
            .map(|i| (format!("k{i}"), format!("w{i}"))),
    );
    let mut p = redis::pipe();
    for i in (0..N).step_by(10) {
        p.cmd("DEL").arg(format!("k{i}")).ignore();
    }
    p.query::<()>(&mut c).expect("DELs");
    // A key in another database.
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).expect("SELECT");
    let _: () = redis::cmd("SET")
        .arg("db3")
        .arg("x")
        .query(&mut c)
        .expect("SET");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).expect("SELECT");
    let live = dbsize(&mut c);
    assert_eq!(live, N - N.div_ceil(10));

    let before = lastsave(&mut c);
    let ok: String = redis::cmd("SAVE").query(&mut c).expect("SAVE");
    assert_eq!(ok, "OK");
    let saved_at = lastsave(&mut c);
    assert!(
        saved_at >= before,
        "LASTSAVE went back: {before} -> {saved_at}"
    );
    let _: () = redis::cmd("SET")
        .arg("after-save")
        .arg("1")
        .query(&mut c)
        .expect("SET");
    let after_save = checkpoints(&dir);
    assert_eq!(after_save.len(), 1, "{after_save:?}");
    let first = after_save[0].clone();

    // LASTSAVE has a one-second resolution: let the server's clock pass the SAVE's second so
    // BGSAVE's completion shows as a change (bounded wait, nothing asserted on time).
    let t0 = Instant::now();
    while server_secs(&mut c) <= saved_at {
        assert!(t0.elapsed() < Duration::from_secs(30), "server clock stuck");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reply: String = redis::cmd("BGSAVE").query(&mut c).expect("BGSAVE");
    assert_eq!(reply, "Background saving started");
    let t0 = Instant::now();
    while lastsave(&mut c) <= saved_at {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "BGSAVE did not finish: rdb_bgsave_in_progress:{}",
            info_field(&mut c, "persistence", "rdb_bgsave_in_progress")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _: () = redis::cmd("SET")
        .arg("after-bgsave")
        .arg("1")
        .query(&mut c)
        .expect("SET");
    let all = checkpoints(&dir);
    assert_eq!(all.len(), 2, "{all:?}");
    let second = all
        .iter()
        .find(|p| **p != first)
        .expect("BGSAVE's checkpoint")
        .clone();
    for cp in &all {
        let name = cp.file_name().and_then(|n| n.to_str()).expect("name");
        let secs = name.split('-').next().expect("seconds");
        assert!(secs.parse::<u64>().is_ok(), "checkpoint name {name:?}");
    }
    drop(c);
    s.stop();

    // The SAVE checkpoint: everything acknowledged before SAVE, nothing after.
    let mut s1 = Server::start_in(&first, &[]);
    let mut c = s1.conn();
    check_saved_keys(&mut c);
    assert_eq!(get(&mut c, "after-save"), None);
    assert_eq!(get(&mut c, "after-bgsave"), None);
    assert_eq!(dbsize(&mut c), live);
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).expect("SELECT");
    assert_eq!(get(&mut c, "db3"), Some("x".into()));
    drop(c);
    s1.stop();

    // The BGSAVE checkpoint also has the key written between the two.
    let mut s2 = Server::start_in(&second, &[]);
    let mut c = s2.conn();
    check_saved_keys(&mut c);
    assert_eq!(get(&mut c, "after-save"), Some("1".into()));
    assert_eq!(get(&mut c, "after-bgsave"), None);
    assert_eq!(dbsize(&mut c), live + 1);
    drop(c);
    s2.stop();

    // The original data dir is untouched by the checkpoints and their reopening.
    let s3 = Server::start_in(&dir, &[]);
    let mut c = s3.conn();
    check_saved_keys(&mut c);
    assert_eq!(get(&mut c, "after-save"), Some("1".into()));
    assert_eq!(get(&mut c, "after-bgsave"), Some("1".into()));
    assert_eq!(dbsize(&mut c), live + 2);
}
