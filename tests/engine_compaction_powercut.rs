//! Power cuts while compactions run under each policy: merges into deep levels, trivial moves
//! (MANIFEST-only) and obsolete-table deletion. At ≥1,000 random cut points (fsync `always`),
//! every acknowledged write is present after reopen and the in-flight group is all-or-nothing.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::groups::*;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sndv_kv::engine::fault::{CutMode, FaultStorage};
use sndv_kv::engine::{Engine, EngineConfig, FsyncPolicy, SystemClock};

fn cfg(policy: &str) -> EngineConfig {
    EngineConfig {
        compaction_policy: policy.into(),
        level_base_bytes: 8 << 10,
        level_ratio: 3,
        l0_compaction_trigger: 2,
        ..tiny_config(FsyncPolicy::Always)
    }
}

fn open(dir: &std::path::Path, fs: &FaultStorage, policy: &str) -> sndv_kv::engine::Result<Engine> {
    Engine::open_with(
        dir,
        cfg(policy),
        Arc::new(fs.clone()),
        Arc::new(SystemClock),
    )
}

/// Ascending fresh keys (their tables overlap nothing, so leveled moves them down without a
/// rewrite) mixed with overwrites and deletes of a hot set (real merges, dropped versions).
fn make_groups(seed: u64, n: usize) -> Vec<Group> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fresh = 0u32;
    (0..n)
        .map(|g| {
            (0..rng.gen_range(1..4))
                .map(|j| {
                    let pad = "p".repeat(rng.gen_range(40..200));
                    match rng.gen_range(0..10) {
                        0..=4 => {
                            fresh += 1;
                            let k = Bytes::from(format!("a{fresh:06}"));
                            (k, Some(Bytes::from(format!("g{g}-{j}-{pad}"))))
                        }
                        5 => (Bytes::from(format!("h{:02}", rng.gen_range(0..30))), None),
                        _ => {
                            let k = Bytes::from(format!("h{:02}", rng.gen_range(0..30)));
                            (k, Some(Bytes::from(format!("g{g}-{j}-{pad}"))))
                        }
                    }
                })
                .collect()
        })
        .collect()
}

const GROUPS: usize = 150;

/// Ops of one uninterrupted run, after checking that it compacts the way the test needs.
fn count_ops(policy: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new();
    let e = open(dir.path(), &fs, policy).unwrap();
    let before = fs.op_count();
    let (_, failed) = run(&e, &make_groups(0, GROUPS));
    assert!(failed.is_none());
    // Count the compactions the workload leaves behind too: cut points land in them as well.
    e.wait_for_compactions().unwrap();
    let n = fs.op_count() - before;
    let st = e.stats();
    // How many depends on how flushes and compactions interleave on a busy machine; the cut
    // points only need some compaction work to land in.
    assert!(
        st.compactions > 0,
        "{policy}: workload must compact: {st:?}"
    );
    if policy == "leveled" {
        assert!(
            st.trivial_moves > 0,
            "leveled workload must move tables: {st:?}"
        );
        assert!(
            st.level_stats.iter().skip(2).any(|l| l.files > 0),
            "leveled workload must reach L2: {st:?}"
        );
    }
    e.close().unwrap();
    n
}

fn cuts(policy: &str, cuts: u64, seed: u64) {
    let total = count_ops(policy);
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..cuts {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultStorage::with_seed(seed ^ i);
        let groups = make_groups(i, GROUPS);
        let engine = open(dir.path(), &fs, policy).unwrap();
        let at = rng.gen_range(0..total);
        fs.set_fail_after(Some(at));
        let (acked, in_flight) = run(&engine, &groups);
        let _ = engine.close();
        drop(engine);
        let mode = if i % 2 == 0 {
            CutMode::DropUnsynced
        } else {
            CutMode::TearUnsynced { seed: i }
        };
        fs.power_cut(mode).unwrap();
        let engine = open(dir.path(), &fs, policy)
            .unwrap_or_else(|e| panic!("{policy} cut {i} at op {at}/{total}: open failed: {e}"));
        if let Err(e) = check(&engine, &acked, &in_flight) {
            panic!("{policy} cut {i} at op {at}/{total}: {e}");
        }
        engine.close().unwrap();
    }
    eprintln!("{policy}: {cuts} cuts over {total} ops");
}

fn n_cuts() -> u64 {
    std::env::var("SNDV_POWER_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn power_cuts_during_leveled_compactions_and_moves() {
    cuts("leveled", n_cuts() * 6 / 10, 0x1e7e1ed);
}

#[test]
fn power_cuts_during_tiered_compactions() {
    cuts("tiered", n_cuts() * 4 / 10, 0x7133ed);
}
