//! Model test under both compaction policies: random writes, deletes and TTLs against a
//! BTreeMap, with data deep enough to fill L2+ (leveled) and several runs (tiered), a policy
//! swap in the middle, reopen cycles, and reader threads that check during compactions that no
//! key goes missing or backwards.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sndv_kv::engine::{Clock, Engine, EngineConfig, FsStorage, FsyncPolicy, ManualClock, Op};

fn cfg(policy: &str) -> EngineConfig {
    EngineConfig {
        compaction_policy: policy.into(),
        level_base_bytes: 16 << 10,
        level_ratio: 4,
        block_cache_bytes: 256 << 10,
        ..tiny_config(FsyncPolicy::Never)
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, policy: &str) -> Engine {
    Engine::open_with(dir, cfg(policy), Arc::new(FsStorage), clock.clone()).expect("open")
}

#[derive(Clone)]
struct M {
    value: Bytes,
    expire_at: u64,
}

fn live(m: &BTreeMap<Bytes, M>, now: u64) -> Vec<(Bytes, Bytes)> {
    m.iter()
        .filter(|(_, v)| v.expire_at == 0 || v.expire_at > now)
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

fn check_all(e: &Engine, model: &BTreeMap<Bytes, M>, now: u64, when: &str) {
    let got: Vec<(Bytes, Bytes)> = e
        .scan(Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"mono:"))
        .map(|(k, v)| (k, v.data))
        .collect();
    let want = live(model, now);
    assert_eq!(got.len(), want.len(), "{when}: live key count");
    assert!(got == want, "{when}: contents differ");
    for (k, v) in want.iter().step_by(7) {
        assert_eq!(
            e.get(k).unwrap().map(|x| x.data).as_ref(),
            Some(v),
            "{when}"
        );
    }
}

/// Readers of `mono:<i>` keys whose values only grow; `acked[i]` is the last acknowledged one.
fn spawn_readers(
    e: &Engine,
    acked: &Arc<Vec<AtomicU64>>,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..2)
        .map(|_| {
            let (e, acked, stop, done) = (e.clone(), acked.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut checks = 0;
                while !stop.load(Ordering::Relaxed) {
                    for (i, a) in acked.iter().enumerate() {
                        let floor = a.load(Ordering::SeqCst);
                        let got = e.get(format!("mono:{i:02}").as_bytes()).unwrap();
                        let v: u64 = match got {
                            Some(v) => std::str::from_utf8(&v.data).unwrap().parse().unwrap(),
                            None => {
                                assert_eq!(floor, 0, "mono:{i} missing after {floor}");
                                0
                            }
                        };
                        assert!(v >= floor, "mono:{i}: {v} after {floor} was acknowledged");
                        checks += 1;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                checks
            })
        })
        .collect()
}

fn run(first: &str, second: &str) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut e = open(dir.path(), &clock, first);
    let mut model: BTreeMap<Bytes, M> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(0xc0ffee);
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
    let mut mono = 0u64;
    let mut saw_deep = false;
    let mut max_runs = 0;
    let steps = 2400;
    for step in 0..steps {
        let swap_at = steps / 2 + 100;
        if step == swap_at {
            e.set_compaction_policy(second).unwrap();
            let st = e.stats();
            assert_eq!(
                (st.policy_swaps, st.compaction_policy.as_str()),
                (1, second)
            );
        }
        // Reopen every 600 steps; readers run within each engine's lifetime.
        if step % 600 == 0 && step > 0 {
            e.close().unwrap();
            drop(e);
            let policy = if step > swap_at { second } else { first };
            e = open(dir.path(), &clock, policy);
            check_all(&e, &model, clock.now_ms(), &format!("reopen at {step}"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(AtomicU64::new(0));
        let readers = (step % 600 == 1).then(|| spawn_readers(&e, &acked, &stop, &passes));
        let now = clock.now_ms();
        let mut ops: Vec<Op<()>> = Vec::new();
        for _ in 0..8 {
            let k = Bytes::from(format!("k{:05}", rng.gen_range(0..1500)));
            let v = Bytes::from(vec![b'a' + rng.gen_range(0..26u8); rng.gen_range(20..120)]);
            match rng.gen_range(0..10) {
                0 => {
                    ops.push(del(k.clone()));
                    model.remove(&k);
                }
                1 => {
                    let exp = now + rng.gen_range(1..3000);
                    ops.push(put_ttl(k.clone(), v.clone(), exp));
                    model.insert(
                        k,
                        M {
                            value: v,
                            expire_at: exp,
                        },
                    );
                }
                _ => {
                    ops.push(put(k.clone(), v.clone()));
                    model.insert(
                        k,
                        M {
                            value: v,
                            expire_at: 0,
                        },
                    );
                }
            }
        }
        mono += 1;
        let i = (mono % 16) as usize;
        ops.push(put(format!("mono:{i:02}"), format!("{mono}")));
        e.write(ops).unwrap();
        acked[i].store(mono, Ordering::SeqCst);
        if rng.gen_range(0..20) == 0 {
            clock.advance(rng.gen_range(1..200));
        }
        let st = e.stats();
        saw_deep |= st.level_stats.iter().skip(2).any(|l| l.files > 0);
        let runs =
            st.level_stats[0].files + st.level_stats[1..].iter().filter(|l| l.files > 0).count();
        max_runs = max_runs.max(runs);
        if let Some(rs) = readers {
            // Let the readers overlap a stretch of writes (and the compactions they cause):
            // at least 200 writes, and more until the readers made a few passes (bounded).
            let mut n = 0;
            while (n < 200 || (passes.load(Ordering::SeqCst) < 6 && n < 200_000))
                && !rs.iter().any(|r| r.is_finished())
            {
                n += 1;
                let k = format!("k{:05}", rng.gen_range(0..1500));
                e.write(vec![put(k.clone(), "r")]).unwrap();
                model.insert(
                    Bytes::from(k),
                    M {
                        value: Bytes::from_static(b"r"),
                        expire_at: 0,
                    },
                );
            }
            stop.store(true, Ordering::Relaxed);
            // One reader may be starved on a busy machine; together they must have checked.
            let checks: u64 = rs.into_iter().map(|r| r.join().unwrap()).sum();
            assert!(checks > 0);
        }
        if step % 300 == 299 {
            check_all(&e, &model, clock.now_ms(), &format!("step {step}"));
        }
    }
    e.wait_for_compactions().unwrap();
    check_all(&e, &model, clock.now_ms(), "end");
    let st = e.stats();
    eprintln!("{first}->{second}: {st:#?}");
    assert_eq!(st.compaction_policy, second);
    assert_eq!(st.tasks_rejected, 0);
    assert!(saw_deep || max_runs >= 3, "data went deep / several runs");
    if first == "leveled" || second == "leveled" {
        assert!(saw_deep, "leveled put data in L2 or deeper");
    }
    if first == "tiered" || second == "tiered" {
        assert!(max_runs >= 3, "tiered kept several runs: {max_runs}");
    }
    assert!(st.write_amplification > 1.0);
    e.close().unwrap();
}

#[test]
fn leveled_then_tiered_matches_model() {
    run("leveled", "tiered");
}

#[test]
fn tiered_then_leveled_matches_model() {
    run("tiered", "leveled");
}
