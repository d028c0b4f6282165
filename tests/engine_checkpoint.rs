//! Checkpoints open as data directories holding every write acknowledged before them; prefix
//! drops hide keys at once, survive reopen, and order correctly with later writes.

mod common;

use common::*;
use sndv_kv::engine::{Engine, FsyncPolicy};

#[test]
fn checkpoint_opens_as_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), tiny_config(FsyncPolicy::Always)).unwrap();
    for i in 0..500 {
        e.write(vec![put(format!("k{i}"), format!("v{i}"))])
            .unwrap();
    }
    e.write(vec![del("k7")]).unwrap();
    let cp = dir.path().join("checkpoints").join("1");
    e.checkpoint(&cp).unwrap();
    // Writes after the checkpoint are not in it.
    e.write(vec![put("after", "x"), put("k1", "changed")])
        .unwrap();
    e.close().unwrap();
    drop(e);
    let c = Engine::open(&cp, tiny_config(FsyncPolicy::Always)).unwrap();
    for i in 0..500 {
        let want = (i != 7).then(|| format!("v{i}"));
        assert_eq!(get_str(&c, &format!("k{i}")), want, "k{i}");
    }
    assert_eq!(get_str(&c, "after"), None);
    c.close().unwrap();
    // The original still has everything.
    let e = Engine::open(dir.path(), tiny_config(FsyncPolicy::Always)).unwrap();
    assert_eq!(get_str(&e, "k1").as_deref(), Some("changed"));
    assert_eq!(get_str(&e, "after").as_deref(), Some("x"));
    e.close().unwrap();
}

#[test]
fn drop_prefix_hides_keys_at_once_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), tiny_config(FsyncPolicy::Always)).unwrap();
    for i in 0..300 {
        e.write(vec![
            put(format!("\x01k{i}"), "a"),
            put(format!("\x02k{i}"), "b"),
        ])
        .unwrap();
    }
    let before = e.key_version(b"\x01k5").unwrap();
    e.drop_prefix(b"\x01").unwrap();
    assert!(
        e.key_version(b"\x01k5").unwrap() > before,
        "WATCH sees the drop"
    );
    assert!(e.scan_prefix(b"\x01", 10).unwrap().is_empty());
    assert_eq!(e.scan_prefix(b"\x02", 1000).unwrap().len(), 300);
    // A write after the drop is visible.
    e.write(vec![put("\x01k5", "new")]).unwrap();
    assert_eq!(get_str(&e, "\x01k5").as_deref(), Some("new"));
    e.close().unwrap();
    drop(e);
    let e = Engine::open(dir.path(), tiny_config(FsyncPolicy::Always)).unwrap();
    assert_eq!(get_str(&e, "\x01k5").as_deref(), Some("new"));
    assert_eq!(get_str(&e, "\x01k6"), None);
    assert_eq!(e.scan_prefix(b"\x01", 1000).unwrap().len(), 1);
    assert_eq!(e.scan_prefix(b"\x02", 1000).unwrap().len(), 300);
    e.close().unwrap();
}
