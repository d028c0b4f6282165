//! Faults: a failed fsync poisons (reads go on, restart recovers), ENOSPC answers an error and
//! writes resume once space returns, LOCK keeps a second open out, damaged WAL and table files
//! give errors (never wrong data, never a panic).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use sndv_kv::engine::fault::{FaultKind, FaultStorage};
use sndv_kv::engine::{Engine, EngineConfig, Error, FsyncPolicy, SystemClock};

fn open_fs(dir: &Path, fs: &FaultStorage, cfg: EngineConfig) -> Engine {
    Engine::open_with(dir, cfg, Arc::new(fs.clone()), Arc::new(SystemClock)).unwrap()
}

fn big_memtable() -> EngineConfig {
    EngineConfig {
        fsync: FsyncPolicy::Always,
        ..EngineConfig::default()
    }
}

#[test]
fn failed_fsync_poisons_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new();
    let e = open_fs(dir.path(), &fs, big_memtable());
    e.write(vec![put("a", "1")]).unwrap();
    fs.fail_nth_sync(0, FaultKind::Eio);
    let err = e.write(vec![put("b", "2")]).unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    // Never retried: later writes fail too, even though the disk "works" again.
    let err = e.write(vec![put("c", "3")]).unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("sync"), "{err}");
    assert!(e.stats().poisoned.is_some());
    // Reads keep working.
    assert_eq!(get_str(&e, "a").as_deref(), Some("1"));
    assert!(e.close().is_err(), "close reports the poison");
    drop(e);
    let e = open_fs(dir.path(), &fs, big_memtable());
    assert_eq!(get_str(&e, "a").as_deref(), Some("1"));
    assert_eq!(get_str(&e, "c"), None);
    e.write(vec![put("d", "4")]).unwrap();
    e.close().unwrap();
}

#[test]
fn enospc_on_write_is_an_error_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new();
    let e = open_fs(dir.path(), &fs, big_memtable());
    e.write(vec![put("a", "1")]).unwrap();
    fs.set_no_space(true);
    for _ in 0..3 {
        let err = e.write(vec![put("b", "2"), put("c", "3")]).unwrap_err();
        assert!(err.is_no_space(), "{err}");
        assert!(err.to_string().contains("no space left on device"), "{err}");
    }
    assert_eq!(get_str(&e, "a").as_deref(), Some("1"));
    assert_eq!(get_str(&e, "b"), None);
    fs.set_no_space(false);
    e.write(vec![put("d", "4")]).unwrap();
    assert!(e.stats().poisoned.is_none());
    e.close().unwrap();
    drop(e);
    let e = open_fs(dir.path(), &fs, big_memtable());
    assert_eq!(get_str(&e, "a").as_deref(), Some("1"));
    assert_eq!(
        get_str(&e, "b"),
        None,
        "the failed group left nothing behind"
    );
    assert_eq!(get_str(&e, "d").as_deref(), Some("4"));
    e.close().unwrap();
}

#[test]
fn enospc_while_flushing_fails_stalled_writers_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new();
    let cfg = EngineConfig {
        max_immutables: 1,
        ..tiny_config(FsyncPolicy::Always)
    };
    let e = open_fs(dir.path(), &fs, cfg.clone());
    let mut acked = Vec::new();
    // Fill until a write fails: flushes hit ENOSPC, so writers soon stall behind them.
    fs.set_no_space(true);
    let mut failures = 0;
    for i in 0..200 {
        match e.write(vec![put(format!("k{i}"), "v".repeat(100))]) {
            Ok(_) => acked.push(i),
            Err(err) => {
                assert!(err.is_no_space(), "{err}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0);
    fs.set_no_space(false);
    // Space is back: writes succeed again without a restart (flushes catch up first).
    let mut ok = false;
    for i in 200..400 {
        if e.write(vec![put(format!("k{i}"), "v")]).is_ok() {
            acked.push(i);
            ok = true;
            break;
        }
    }
    assert!(ok, "writes resumed once space returned");
    e.flush().unwrap();
    for i in &acked {
        assert!(get_str(&e, &format!("k{i}")).is_some(), "k{i}");
    }
    e.close().unwrap();
}

#[test]
fn lock_keeps_a_second_open_out() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), big_memtable()).unwrap();
    match Engine::open(dir.path(), big_memtable()) {
        Err(Error::Locked(_)) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("second open succeeded"),
    }
    e.close().unwrap();
    drop(e);
    Engine::open(dir.path(), big_memtable())
        .unwrap()
        .close()
        .unwrap();
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Writes `n` single-key groups with fsync always into the WAL only (big memtable).
fn wal_only(dir: &Path, n: usize) {
    let e = Engine::open(dir, big_memtable()).unwrap();
    for i in 0..n {
        e.write(vec![put(format!("k{i:03}"), format!("value-{i}"))])
            .unwrap();
    }
    e.close().unwrap();
}

#[test]
fn truncated_wal_keeps_every_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    wal_only(dir.path(), 20);
    let wal = files_with_ext(dir.path(), "log").pop().unwrap();
    let full = std::fs::read(&wal).unwrap();
    // Each record here is the same size; cut anywhere within the last three.
    let rec = 4 + 4 + 4 + 1 + 1 + 8 + 8 + 4 + 4 + 4 + "value-10".len();
    let lo = full.len().saturating_sub(3 * rec + 8);
    for cut in lo..full.len() {
        let d2 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d2.path().join("db")).unwrap();
        for f in std::fs::read_dir(dir.path().join("db")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, d2.path().join("db").join(f.file_name().unwrap())).unwrap();
        }
        let w2 = d2.path().join("db").join(wal.file_name().unwrap());
        std::fs::write(&w2, &full[..cut]).unwrap();
        let e = Engine::open(d2.path(), big_memtable())
            .unwrap_or_else(|err| panic!("open after cut at {cut}: {err}"));
        // Keys are written in order: the present ones are a prefix, k000..k016 at least.
        let present: Vec<bool> = (0..20)
            .map(|i| get_str(&e, &format!("k{i:03}")).is_some())
            .collect();
        let n = present.iter().take_while(|p| **p).count();
        assert!(
            present[n..].iter().all(|p| !p),
            "cut {cut}: a hole in {present:?}"
        );
        assert!(n >= 16, "cut {cut}: only {n} records survived");
        for i in 0..n {
            assert_eq!(get_str(&e, &format!("k{i:03}")), Some(format!("value-{i}")));
        }
        e.close().unwrap();
    }
}

#[test]
fn flipped_bits_in_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    wal_only(dir.path(), 20);
    let wal = files_with_ext(dir.path(), "log").pop().unwrap();
    let full = std::fs::read(&wal).unwrap();
    // In the last record: a torn tail, dropped.
    let mut bad = full.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x10;
    std::fs::write(&wal, &bad).unwrap();
    let e = Engine::open(dir.path(), big_memtable()).unwrap();
    assert_eq!(get_str(&e, "k018").as_deref(), Some("value-18"));
    assert_eq!(get_str(&e, "k019"), None);
    e.close().unwrap();
    drop(e);
    // In a middle record: corruption, reported with the file and offset.
    let dir = tempfile::tempdir().unwrap();
    wal_only(dir.path(), 20);
    let wal = files_with_ext(dir.path(), "log").pop().unwrap();
    let mut bad = std::fs::read(&wal).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&wal, &bad).unwrap();
    match Engine::open(dir.path(), big_memtable()) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, wal);
            assert!(offset as usize <= mid);
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("open succeeded over a corrupt middle record"),
    }
}

#[test]
fn damaged_tables_give_errors_never_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        block_size: 512,
        ..big_memtable()
    };
    {
        let e = Engine::open(dir.path(), cfg.clone()).unwrap();
        for i in 0..400 {
            e.write(vec![put(
                format!("k{i:04}"),
                format!("value-{i}-{}", "x".repeat(i % 50)),
            )])
            .unwrap();
        }
        e.flush().unwrap();
        e.close().unwrap();
    }
    let sst = files_with_ext(dir.path(), "sst").pop().unwrap();
    let orig = std::fs::read(&sst).unwrap();
    let len = orig.len();
    // Positions across data blocks, index, filter, properties and footer.
    let mut positions: Vec<usize> = (0..len).step_by(37).collect();
    positions.extend(len.saturating_sub(200)..len);
    let (mut open_errors, mut read_errors) = (0, 0);
    for &p in &positions {
        let mut bad = orig.clone();
        bad[p] ^= 0x5a;
        std::fs::write(&sst, &bad).unwrap();
        let e = match Engine::open(dir.path(), cfg.clone()) {
            Ok(e) => e,
            Err(err) => {
                assert!(matches!(err, Error::Corruption { .. }), "byte {p}: {err}");
                assert!(err.to_string().contains(".sst"), "names the file: {err}");
                open_errors += 1;
                continue;
            }
        };
        for i in (0..400).step_by(7) {
            match e.get(format!("k{i:04}").as_bytes()) {
                Ok(v) => assert_eq!(
                    v.map(|v| v.data),
                    Some(bytes::Bytes::from(format!(
                        "value-{i}-{}",
                        "x".repeat(i % 50)
                    ))),
                    "byte {p}: wrong data for k{i:04}"
                ),
                Err(err) => {
                    assert!(matches!(err, Error::Corruption { .. }), "{err}");
                    read_errors += 1;
                }
            }
        }
        e.close().unwrap();
    }
    std::fs::write(&sst, &orig).unwrap();
    assert!(
        open_errors > 0 && read_errors > 0,
        "{open_errors} open, {read_errors} read errors"
    );
}

#[test]
fn a_panicking_operation_fails_only_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), big_memtable()).unwrap();
    let boom: sndv_kv::engine::Op<()> = Box::new(|v: &mut sndv_kv::engine::View<'_>| {
        v.put(
            bytes::Bytes::from("half"),
            bytes::Bytes::from("written"),
            None,
        );
        panic!("bug in an operation");
    });
    let err = e.write(vec![put("x", "1"), boom]).unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert_eq!(get_str(&e, "x"), None, "the request is all-or-nothing");
    assert_eq!(get_str(&e, "half"), None);
    e.write(vec![put("y", "2")]).unwrap();
    assert_eq!(get_str(&e, "y").as_deref(), Some("2"));
    assert!(e.stats().poisoned.is_none());
    e.close().unwrap();
}
