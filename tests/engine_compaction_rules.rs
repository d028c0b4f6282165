//! Compaction rules the engine enforces whatever the policy: task validation, the L0 floor,
//! where tombstones / expired / prefix-dropped entries may go, and caches never serving stale
//! values.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use sndv_kv::engine::compaction::{
    l0_floor_task, CompactionPolicy, LevelsView, PolicyStats, Task, TaskKind,
};
use sndv_kv::engine::{Engine, EngineConfig, FsStorage, FsyncPolicy, ManualClock, Op};

/// Proposes nothing, ever: only the engine's floor compacts.
struct Never;
impl CompactionPolicy for Never {
    fn name(&self) -> &str {
        "never"
    }
    fn choose(&self, _: &LevelsView, _: &PolicyStats) -> Option<Task> {
        None
    }
}

/// Proposes the newest L0 table alone into L1 (skipping older overlapping ones): invalid as
/// soon as L0 holds two overlapping tables.
struct SkipsOlder;
impl CompactionPolicy for SkipsOlder {
    fn name(&self) -> &str {
        "skips-older"
    }
    fn choose(&self, v: &LevelsView, _: &PolicyStats) -> Option<Task> {
        let newest = v.level(0).first()?;
        (v.level(0).len() >= 2).then(|| Task {
            inputs: vec![(0, vec![newest.id])],
            output_level: 1,
            kind: TaskKind::Merge,
            reason: "test: newest L0 table only".into(),
        })
    }
}

/// Merges every table outside L6 (and L6 itself) into L6: everything ends at the bottom.
struct AllToBottom;
impl CompactionPolicy for AllToBottom {
    fn name(&self) -> &str {
        "all-to-bottom"
    }
    fn choose(&self, v: &LevelsView, _: &PolicyStats) -> Option<Task> {
        if v.levels[..6].iter().all(|l| l.is_empty()) {
            return None;
        }
        Some(Task {
            inputs: v
                .levels
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_empty())
                .map(|(i, l)| (i, l.iter().map(|t| t.id).collect()))
                .collect(),
            output_level: 6,
            kind: TaskKind::Merge,
            reason: "test: everything to the bottom".into(),
        })
    }
}

/// L0 (and overlapping L1) into L1 only, leaving deeper levels alone.
struct L0Only;
impl CompactionPolicy for L0Only {
    fn name(&self) -> &str {
        "l0-only"
    }
    fn choose(&self, v: &LevelsView, _: &PolicyStats) -> Option<Task> {
        l0_floor_task(v)
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, cfg: EngineConfig) -> Engine {
    Engine::open_with(dir, cfg, Arc::new(FsStorage), clock.clone()).expect("open")
}

fn tables(e: &Engine) -> Vec<(usize, u64, u64)> {
    // (level, entries, tombstones) per table
    e.levels_view()
        .levels
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |t| (i, t.entries, t.tombstones)))
        .collect()
}

fn fill(e: &Engine, prefix: &str, n: usize, val: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let ops: Vec<Op<()>> = chunk
            .iter()
            .map(|i| put(format!("{prefix}{i:05}"), format!("{val}-{i}")))
            .collect();
        e.write(ops).unwrap();
    }
}

#[test]
fn bad_task_is_rejected_without_data_loss_and_floor_still_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    e.set_policy_object(Arc::new(SkipsOlder));
    assert_eq!(e.compaction_policy(), "skips-older");
    // Every flush overlaps the previous ones (same keys rewritten).
    for round in 0..10 {
        fill(&e, "k", 100, &format!("r{round}"));
        e.flush().unwrap();
    }
    e.wait_for_compactions().unwrap();
    let st = e.stats();
    assert!(st.tasks_rejected > 0, "{st:?}");
    assert!(st.floor_compactions > 0, "the floor compacted L0: {st:?}");
    let floor = 3 * 2; // tiny_config: l0_compaction_trigger 3
    assert!(st.level_stats[0].files < floor, "{st:?}");
    for i in 0..100 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), Some(format!("r9-{i}")));
    }
    e.close().unwrap();
}

#[test]
fn a_policy_that_never_compacts_still_hits_the_l0_floor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    e.set_policy_object(Arc::new(Never));
    for round in 0..20 {
        fill(&e, "k", 60, &format!("r{round}"));
        e.flush().unwrap();
        e.wait_for_compactions().unwrap();
        assert!(
            e.stats().level_stats[0].files < 6,
            "L0 bounded by the floor"
        );
    }
    let st = e.stats();
    assert!(st.floor_compactions > 0, "{st:?}");
    assert_eq!(st.tasks_rejected, 0);
    assert!(st.policy_swaps >= 1);
    for i in 0..60 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), Some(format!("r19-{i}")));
    }
    e.close().unwrap();
}

#[test]
fn writes_quiet_for_idle_compaction_ms_merge_l0_into_l1() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = EngineConfig {
        // Room for every key below: tables come only from the explicit flushes.
        memtable_bytes: 1 << 20,
        l0_compaction_trigger: 4,
        idle_compaction_ms: 5_000,
        ..tiny_config(FsyncPolicy::Never)
    };
    let e = open(dir.path(), &clock, cfg);
    let l0 = |e: &Engine| e.stats().level_stats[0].files;
    // Two overlapping L0 tables: below the trigger, so the policy leaves them.
    fill(&e, "k", 100, "a");
    e.flush().unwrap();
    fill(&e, "k", 100, "b");
    e.flush().unwrap();
    e.wait_for_compactions().unwrap();
    assert_eq!(l0(&e), 2);
    // 4 s of quiet, then a write, then 4 s more: never 5 s without a write.
    clock.advance(4_000);
    fill(&e, "x", 1, "c");
    clock.advance(4_000);
    e.wait_for_compactions().unwrap();
    assert_eq!(l0(&e), 2, "{:?}", e.stats());
    assert_eq!(e.stats().idle_compactions, 0);
    // Reads cache the newer L0 table's blocks (each key's newest version is there).
    for i in 0..100 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), Some(format!("b-{i}")));
    }
    let cached_l0 = e.stats().cache_bytes;
    assert!(cached_l0 > 0);
    // 5 s since the last write: the agent merges L0 into L1.
    clock.advance(1_000);
    e.wait_for_compactions().unwrap();
    let st = e.stats();
    assert_eq!(st.level_stats[0].files, 0, "{st:?}");
    assert!(st.level_stats[1].files >= 1, "{st:?}");
    assert_eq!(st.idle_compactions, 1, "{st:?}");
    // The merged table is in the cache already, in the room the inputs' blocks left: the
    // L0 blocks were dropped (the output holds the same 100 newest versions, so about as
    // many bytes: both would be about twice that), and reading every key misses nothing.
    assert!(st.warmed_blocks > 0, "{st:?}");
    assert!(
        st.cache_bytes < cached_l0 * 3 / 2,
        "{} cached after the merge, {cached_l0} before",
        st.cache_bytes
    );
    for i in 0..100 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), Some(format!("b-{i}")));
    }
    assert_eq!(e.stats().cache_misses, st.cache_misses, "{:?}", e.stats());
    assert_eq!(get_str(&e, "x00000"), Some("c-0".to_string()));
    // With L0 empty there is nothing more to do, however long it stays quiet.
    clock.advance(60_000);
    e.wait_for_compactions().unwrap();
    assert_eq!(e.stats().idle_compactions, 1);
    e.close().unwrap();
}

#[test]
fn tombstones_are_dropped_only_at_the_bottom_and_never_resurrect() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    e.set_policy_object(Arc::new(AllToBottom));
    fill(&e, "k", 50, "v1");
    e.flush().unwrap();
    e.wait_for_compactions().unwrap();
    assert!(tables(&e).iter().all(|t| t.0 == 6), "{:?}", tables(&e));

    // Delete half; compact L0 → L1 only: the tombstones must stay (v1 lies below).
    e.set_policy_object(Arc::new(L0Only));
    let ops: Vec<Op<()>> = (0..25).map(|i| del(format!("k{i:05}"))).collect();
    e.write(ops).unwrap();
    for _ in 0..3 {
        e.write(vec![put("filler", "x")]).unwrap();
        e.flush().unwrap();
    }
    e.wait_for_compactions().unwrap();
    let t = tables(&e);
    let l1_tombs: u64 = t.iter().filter(|x| x.0 == 1).map(|x| x.2).sum();
    assert_eq!(l1_tombs, 25, "tombstones kept above older data: {t:?}");
    for i in 0..25 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), None);
    }

    // Now everything to the bottom: tombstones and what they hid disappear.
    e.set_policy_object(Arc::new(AllToBottom));
    e.wait_for_compactions().unwrap();
    let t = tables(&e);
    assert!(t.iter().all(|x| x.0 == 6 && x.2 == 0), "{t:?}");
    let entries: u64 = t.iter().map(|x| x.1).sum();
    assert_eq!(entries, 25 + 1, "25 live keys + filler: {t:?}");
    for i in 0..50 {
        let want = (i >= 25).then(|| format!("v1-{i}"));
        assert_eq!(get_str(&e, &format!("k{i:05}")), want);
    }
    e.close().unwrap();
    drop(e);
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    for i in 0..25 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), None, "no resurrection");
    }
    e.close().unwrap();
}

#[test]
fn expired_entries_are_reclaimed_at_the_bottom_and_never_resurrect() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    e.set_policy_object(Arc::new(AllToBottom));
    // v1 without expiry at the bottom, then v2 with a TTL over it.
    fill(&e, "k", 40, "v1");
    e.flush().unwrap();
    e.wait_for_compactions().unwrap();
    let exp = clock_now(&clock) + 1_000;
    let ops: Vec<Op<()>> = (0..40)
        .map(|i| put_ttl(format!("k{i:05}"), format!("v2-{i}"), exp))
        .collect();
    e.write(ops).unwrap();
    e.flush().unwrap();
    e.wait_for_compactions().unwrap();
    let t = tables(&e);
    assert_eq!(
        t.iter().map(|x| x.1).sum::<u64>(),
        40,
        "v1 merged away: {t:?}"
    );
    assert_eq!(get_str(&e, "k00003"), Some("v2-3".into()));

    clock.advance(2_000);
    assert_eq!(get_str(&e, "k00003"), None);
    // Expiry needs no write to be noticed, only a look: the agent re-evaluates on any change.
    e.wait_for_compactions().unwrap();
    let st = e.stats();
    assert!(st.reclaim_compactions >= 1, "{st:?}");
    let t = tables(&e);
    assert_eq!(
        t.iter().map(|x| x.1).sum::<u64>(),
        0,
        "expired data reclaimed: {t:?}"
    );
    for i in 0..40 {
        assert_eq!(get_str(&e, &format!("k{i:05}")), None, "v1 never returns");
    }
    e.close().unwrap();
}

fn clock_now(c: &ManualClock) -> u64 {
    use sndv_kv::engine::Clock;
    c.now_ms()
}

#[test]
fn dropped_prefix_is_discarded_by_compaction_and_space_falls() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    e.set_policy_object(Arc::new(AllToBottom));
    fill(&e, "p:", 300, "pppppppppppppppppppppppppppppppp");
    fill(&e, "q:", 50, "q");
    e.flush().unwrap();
    e.wait_for_compactions().unwrap();
    let bytes = |e: &Engine| -> u64 { e.stats().level_stats.iter().map(|l| l.bytes).sum() };
    let before = bytes(&e);
    e.drop_prefix(b"p:").unwrap();
    assert_eq!(get_str(&e, "p:00001"), None);
    // Any new table makes the test policy merge everything again.
    e.write(vec![put("z", "1")]).unwrap();
    e.flush().unwrap();
    e.wait_for_compactions().unwrap();
    let after = bytes(&e);
    assert!(after * 3 < before, "space fell: {before} -> {after}");
    let entries: u64 = tables(&e).iter().map(|x| x.1).sum();
    assert_eq!(entries, 51);
    assert_eq!(get_str(&e, "q:00007"), Some("q-7".into()));
    e.close().unwrap();
}

/// A GET right after an acknowledged write sees that write, never an older cached value, while
/// compactions (and the block cache) churn underneath.
#[test]
fn gets_never_see_older_values_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = EngineConfig {
        block_cache_bytes: 64 << 10,
        level_base_bytes: 16 << 10,
        ..tiny_config(FsyncPolicy::Never)
    };
    let e = open(dir.path(), &clock, cfg);
    const KEYS: usize = 40;
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (e, acked, stop, passes) = (e.clone(), acked.clone(), stop.clone(), passes.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in 0..KEYS {
                        let floor = acked[k].load(Ordering::SeqCst);
                        let got = e.get(format!("c{k:03}").as_bytes()).unwrap();
                        let v: u64 = got
                            .map(|v| std::str::from_utf8(&v.data).unwrap()[..8].parse().unwrap())
                            .unwrap_or(0);
                        assert!(
                            v >= floor,
                            "key {k}: read {v} after {floor} was acknowledged"
                        );
                        n += 1;
                    }
                    passes.fetch_add(1, Ordering::SeqCst);
                }
                n
            })
        })
        .collect();
    let pad = "x".repeat(100);
    // Stops early if a reader failed. At least 300 rounds, and more until the readers made a few passes (bounded).
    let mut round = 0u64;
    while (round < 300 || (passes.load(Ordering::SeqCst) < 4 && round < 100_000))
        && !readers.iter().any(|r| r.is_finished())
    {
        round += 1;
        let ops: Vec<Op<()>> = (0..KEYS)
            .map(|k| put(format!("c{k:03}"), format!("{round:08}{pad}")))
            .collect();
        e.write(ops).unwrap();
        for a in acked.iter() {
            a.store(round, Ordering::SeqCst);
        }
        let got = get_str(&e, "c007").unwrap();
        assert_eq!(&got[..8], format!("{round:08}"), "read-your-write");
    }
    stop.store(true, Ordering::Relaxed);
    // One reader may be starved on a busy machine; together they must have checked.
    let checks: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0);
    let st = e.stats();
    assert!(st.cache_hits > 0 && st.cache_misses > 0, "{st:?}");
    assert!(st.cache_bytes <= st.cache_capacity, "{st:?}");
    assert!(st.compactions > 0, "{st:?}");
    e.close().unwrap();
}

#[test]
fn unknown_policy_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let e = open(dir.path(), &clock, tiny_config(FsyncPolicy::Never));
    let err = e.set_compaction_policy("fifo").unwrap_err().to_string();
    assert!(err.contains("leveled") && err.contains("tiered"), "{err}");
    e.set_compaction_policy("tiered").unwrap();
    assert_eq!(e.stats().compaction_policy, "tiered");
    let agent = e
        .stats()
        .agents
        .into_iter()
        .find(|a| a.name == "compaction")
        .unwrap();
    assert_eq!(agent.policy, "tiered");
    e.close().unwrap();
    let bad = EngineConfig {
        compaction_policy: "fifo".into(),
        ..tiny_config(FsyncPolicy::Never)
    };
    let err = Engine::open(tempfile::tempdir().unwrap().path(), bad)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("compaction_policy"), "{err}");
    let _ = Bytes::new();
}
