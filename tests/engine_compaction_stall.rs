//! Backpressure and shutdown around slow compactions, with table I/O held by a FaultStorage
//! gate: writers stall instead of growing memory, and close() cancels a compaction in flight.

mod common;

use std::sync::Arc;

use common::*;
use sndv_kv::engine::compaction::{CompactionPolicy, LevelsView, PolicyStats, Task};
use sndv_kv::engine::fault::{FaultStorage, Gate, SyncClass};
use sndv_kv::engine::{Engine, EngineConfig, FsyncPolicy, ManualClock, Op, Storage};

struct Never;
impl CompactionPolicy for Never {
    fn name(&self) -> &str {
        "never"
    }
    fn choose(&self, _: &LevelsView, _: &PolicyStats) -> Option<Task> {
        None
    }
}

fn open(dir: &std::path::Path, fs: &Arc<FaultStorage>, cfg: EngineConfig) -> Engine {
    let storage: Arc<dyn Storage> = fs.clone();
    Engine::open_with(dir, cfg, storage, Arc::new(ManualClock::new(1_000_000))).expect("open")
}

fn agent_state(e: &Engine, name: &str) -> String {
    e.stats()
        .agents
        .into_iter()
        .find(|a| a.name == name)
        .map(|a| a.state)
        .unwrap_or_default()
}

/// Spins (yielding) until `cond` holds; bounded so a bug fails instead of hanging.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..20_000_000u64 {
        if cond() {
            return;
        }
        std::thread::yield_now();
    }
    panic!("gave up waiting for {what}");
}

#[test]
fn write_flood_stalls_writers_instead_of_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultStorage::new());
    let cfg = tiny_config(FsyncPolicy::Never);
    let e = open(dir.path(), &fs, cfg.clone());
    // Table files cannot be written: neither flush nor compaction makes progress.
    let gate = Gate::closed(Some(SyncClass::Table));
    fs.set_gate(Some(gate.clone()));
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            for i in 0..400u32 {
                let ops: Vec<Op<()>> = (0..4)
                    .map(|j| put(format!("w{i:05}-{j}"), "v".repeat(100)))
                    .collect();
                e.write(ops).unwrap();
            }
        })
    };
    gate.wait_for_waiters(1);
    wait_until("the ingest agent to stall", || {
        agent_state(&e, "ingest") == "stalled"
    });
    let st = e.stats();
    assert!(st.immutables <= cfg.max_immutables, "{st:?}");
    // One memtable past its switch size by at most one group.
    assert!(
        st.memtable_bytes <= (cfg.memtable_bytes + cfg.max_group_bytes) as u64,
        "{st:?}"
    );
    gate.open();
    writer.join().unwrap();
    e.flush().unwrap();
    let st = e.stats();
    assert!(
        st.stalls > 0 && st.stall_ms_max <= st.stall_ms_total,
        "{st:?}"
    );
    assert_eq!(get_str(&e, "w00399-3").map(|v| v.len()), Some(100));
    e.close().unwrap();
}

#[test]
fn l0_slowdown_engages_and_the_floor_bounds_l0_when_compaction_lags() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultStorage::new());
    // A never-compacting policy: only the floor (at 2 x trigger = 6) keeps L0 down, and the
    // slowdown trigger sits below it, so writers are delayed before the floor kicks in.
    let cfg = EngineConfig {
        l0_compaction_trigger: 3,
        l0_slowdown_trigger: 4,
        l0_stop_trigger: 6,
        ..tiny_config(FsyncPolicy::Never)
    };
    let e = open(dir.path(), &fs, cfg);
    e.set_policy_object(Arc::new(Never));
    for i in 0..3000u32 {
        e.write(vec![put(format!("s{:05}", i % 700), "v".repeat(60))])
            .unwrap();
    }
    e.wait_for_compactions().unwrap();
    let st = e.stats();
    assert!(st.slowdowns > 0, "{st:?}");
    assert!(st.floor_compactions > 0, "{st:?}");
    assert!(st.level_stats[0].files <= 6, "{st:?}");
    e.close().unwrap();
}

#[test]
fn shutdown_cancels_a_compaction_held_open_and_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultStorage::new());
    let cfg = tiny_config(FsyncPolicy::Always);
    let e = open(dir.path(), &fs, cfg.clone());
    e.set_policy_object(Arc::new(Never));
    // Five overlapping L0 tables: above the leveled trigger (3), below the floor (6).
    for round in 0..5 {
        let ops: Vec<Op<()>> = (0..30)
            .map(|i| put(format!("k{i:03}"), format!("r{round}-{i}")))
            .collect();
        e.write(ops).unwrap();
        e.flush().unwrap();
    }
    e.wait_for_compactions().unwrap();
    assert_eq!(e.stats().level_stats[0].files, 5);
    let gate = Gate::closed(Some(SyncClass::Table));
    fs.set_gate(Some(gate.clone()));
    e.set_compaction_policy("leveled").unwrap();
    // The compaction's first output table is now parked at the gate.
    gate.wait_for_waiters(1);
    let closer = {
        let e = e.clone();
        std::thread::spawn(move || e.close())
    };
    // The idle flush agent stops as soon as shutdown begins; then let the compaction move.
    wait_until("shutdown to begin", || {
        agent_state(&e, "flush") == "stopped"
    });
    gate.open();
    closer.join().unwrap().unwrap();
    let st = e.stats();
    assert_eq!(st.tasks_cancelled, 1, "{st:?}");
    assert_eq!(st.compactions, 0, "{st:?}");
    drop(e);

    // Reopen with a trigger above 5 so that no compaction races the checks below.
    let calm = EngineConfig {
        l0_compaction_trigger: 10,
        l0_stop_trigger: 20,
        ..cfg
    };
    let e = open(dir.path(), &fs, calm);
    let st = e.stats();
    assert_eq!(st.level_stats[0].files, 5, "inputs untouched: {st:?}");
    for i in 0..30 {
        assert_eq!(get_str(&e, &format!("k{i:03}")), Some(format!("r4-{i}")));
    }
    // Only the live tables remain on disk: the abandoned output was deleted.
    let ssts = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .filter(|d| {
            d.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".sst")
        })
        .count();
    assert_eq!(ssts, 5);
    e.close().unwrap();
}

#[test]
fn pending_compaction_bytes_slow_writers_down() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultStorage::new());
    // Any byte over target counts: every group while L1+ is over target is delayed, and
    // writers stop while the compaction agent works those bytes off. (The stall count below
    // may also include stalls on full immutables; the slowdown count is this path alone.)
    let cfg = EngineConfig {
        level_base_bytes: 1024,
        level_ratio: 2,
        pending_compaction_bytes_slowdown: 1,
        pending_compaction_bytes_stop: 1,
        ..tiny_config(FsyncPolicy::Never)
    };
    let e = open(dir.path(), &fs, cfg);
    for i in 0..1500u32 {
        e.write(vec![put(
            format!("p{:05}", (i * 7919) % 1000),
            "v".repeat(80),
        )])
        .unwrap();
    }
    e.wait_for_compactions().unwrap();
    let st = e.stats();
    assert!(st.slowdowns > 0, "{st:?}");
    assert!(st.stalls > 0, "{st:?}");
    for i in [0u32, 1, 500, 999] {
        assert_eq!(get_str(&e, &format!("p{i:05}")).map(|v| v.len()), Some(80));
    }
    e.close().unwrap();
}
