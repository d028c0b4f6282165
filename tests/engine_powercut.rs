//! Power cuts through the fault-injecting storage, fsync `always`: at random cut points
//! (during WAL appends, rotations, flushes, compactions, MANIFEST edits and recovery itself),
//! every acknowledged write is present after reopen, a group is never half-present, and open
//! succeeds. Disabling any one kind of sync (WAL, table, MANIFEST, directory) makes the same
//! check fail, which shows the check can catch a missing sync.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::groups::*;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sndv_kv::engine::fault::{CutMode, FaultStorage, SyncClass};
use sndv_kv::engine::{Engine, FsyncPolicy, SystemClock};

fn open(dir: &std::path::Path, fs: &FaultStorage) -> sndv_kv::engine::Result<Engine> {
    Engine::open_with(
        dir,
        tiny_config(FsyncPolicy::Always),
        Arc::new(fs.clone()),
        Arc::new(SystemClock),
    )
}

fn make_groups(seed: u64, n: usize) -> Vec<Group> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|g| {
            (0..rng.gen_range(1..5))
                .map(|j| {
                    let k = Bytes::from(format!("key{:03}", rng.gen_range(0..60)));
                    if rng.gen_range(0..8) == 0 {
                        (k, None)
                    } else {
                        let pad = "p".repeat(rng.gen_range(20..160));
                        (k, Some(Bytes::from(format!("g{g}-{j}-{pad}"))))
                    }
                })
                .collect()
        })
        .collect()
}

const GROUPS: usize = 120;

#[test]
fn power_cuts_lose_no_acknowledged_write() {
    let cuts: u64 = std::env::var("SNDV_POWER_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    // Count the operations of one full run to spread the cut points over it.
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultStorage::new();
        let e = open(dir.path(), &fs).unwrap();
        let before = fs.op_count();
        let (_, failed) = run(&e, &make_groups(0, GROUPS));
        assert!(failed.is_none());
        // The compaction agent may not have started yet on a loaded machine.
        e.wait_for_compactions().unwrap();
        let n = fs.op_count() - before;
        let st = e.stats();
        assert!(
            st.flushes > 0 && st.compactions > 0,
            "workload must flush and compact: {st:?}"
        );
        e.close().unwrap();
        n
    };
    assert!(total > 100, "workload too small: {total} ops");
    let mut rng = StdRng::seed_from_u64(0xc0ffee);
    let mut cut_during_recovery = 0;
    let mut interrupted = 0;
    for i in 0..cuts {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultStorage::with_seed(i);
        let groups = make_groups(i, GROUPS);
        let engine = open(dir.path(), &fs).unwrap();
        let at = rng.gen_range(0..total);
        fs.set_fail_after(Some(at));
        let (acked, in_flight) = run(&engine, &groups);
        interrupted += in_flight.is_some() as u64;
        let _ = engine.close();
        drop(engine);
        let mode = if i % 2 == 0 {
            CutMode::DropUnsynced
        } else {
            CutMode::TearUnsynced { seed: i }
        };
        fs.power_cut(mode).unwrap();
        // Every fifth run loses power again in the middle of recovery.
        if i % 5 == 0 {
            fs.set_fail_after(Some(rng.gen_range(0..12)));
            if let Ok(e) = open(dir.path(), &fs) {
                let _ = e.close();
            }
            fs.power_cut(CutMode::DropUnsynced).unwrap();
            cut_during_recovery += 1;
        }
        let engine = open(dir.path(), &fs)
            .unwrap_or_else(|e| panic!("cut {i} at op {at}/{total}: open failed: {e}"));
        if let Err(e) = check(&engine, &acked, &in_flight) {
            panic!("cut {i} at op {at}/{total}: {e}");
        }
        engine.close().unwrap();
    }
    assert!(cut_during_recovery > 0);
    // Most cut points land inside the client-visible workload (the rest in background work).
    assert!(
        interrupted > cuts / 2,
        "only {interrupted} of {cuts} cuts interrupted a write"
    );
    eprintln!("{cuts} cuts over {total} ops, {interrupted} interrupted a write");
}

/// Runs the workload with one kind of sync disabled, cuts power at the end, and reports
/// whether the check noticed.
fn loss_detected(class: SyncClass, seed: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::with_seed(seed);
    fs.set_ignore_sync(class, true);
    let engine = open(dir.path(), &fs).unwrap();
    let (acked, failed) = run(&engine, &make_groups(seed, GROUPS));
    assert!(failed.is_none());
    engine.close().unwrap();
    drop(engine);
    fs.power_cut(CutMode::DropUnsynced).unwrap();
    fs.set_ignore_sync(class, false);
    match open(dir.path(), &fs) {
        Err(_) => true,
        Ok(e) => {
            let r = check(&e, &acked, &None).is_err();
            let _ = e.close();
            r
        }
    }
}

#[test]
fn each_missing_sync_is_caught() {
    for class in [
        SyncClass::Wal,
        SyncClass::Table,
        SyncClass::Manifest,
        SyncClass::Dir,
    ] {
        let caught = (0..5).any(|seed| loss_detected(class, seed));
        assert!(caught, "disabling {class:?} syncs went unnoticed");
    }
}
