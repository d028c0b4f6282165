//! Model test: random puts, deletes, TTL writes, read-modify-writes, gets and scans against a
//! BTreeMap, with tiny memtables (many flushes and compactions), clock jumps and reopen cycles.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sndv_kv::engine::{Engine, FsyncPolicy, ManualClock, Op, View};

#[derive(Clone, Debug)]
struct M {
    value: Bytes,
    expire_at: u64,
}

fn live(m: &BTreeMap<Bytes, M>, now: u64) -> BTreeMap<Bytes, Bytes> {
    m.iter()
        .filter(|(_, v)| v.expire_at == 0 || v.expire_at > now)
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    Engine::open_with(
        dir,
        tiny_config(FsyncPolicy::Never),
        Arc::new(sndv_kv::engine::FsStorage),
        clock.clone(),
    )
    .expect("open")
}

fn key(i: u32) -> Bytes {
    Bytes::from(format!("k{i:04}"))
}

#[test]
fn engine_matches_btreemap_model() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut engine = open(dir.path(), &clock);
    let mut model: BTreeMap<Bytes, M> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let ops = 6000;
    for step in 0..ops {
        let now = clock.now();
        match rng.gen_range(0..100) {
            // A group of several plain writes.
            0..=39 => {
                let n = rng.gen_range(1..6);
                let mut group: Vec<Op<()>> = Vec::new();
                for _ in 0..n {
                    let k = key(rng.gen_range(0..300));
                    let v = Bytes::from(vec![b'a' + rng.gen_range(0..26u8); rng.gen_range(0..200)]);
                    match rng.gen_range(0..10) {
                        0..=1 => {
                            group.push(del(k.clone()));
                            model.remove(&k);
                        }
                        2..=3 => {
                            let exp = now + rng.gen_range(1..500);
                            group.push(put_ttl(k.clone(), v.clone(), exp));
                            model.insert(
                                k,
                                M {
                                    value: v,
                                    expire_at: exp,
                                },
                            );
                        }
                        _ => {
                            group.push(put(k.clone(), v.clone()));
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
                engine.write(group).unwrap();
            }
            // Two INCRs of one key in one group both count; expired keys start from nothing.
            40..=49 => {
                let k = key(rng.gen_range(0..300));
                let res = engine
                    .write(vec![incr(k.clone()), incr(k.clone())])
                    .unwrap();
                let start = model
                    .get(&k)
                    .filter(|m| m.expire_at == 0 || m.expire_at > now)
                    .and_then(|m| std::str::from_utf8(&m.value).ok()?.parse::<i64>().ok())
                    .unwrap_or(0);
                assert_eq!(res, vec![start + 1, start + 2], "incr at step {step}");
                model.insert(
                    k,
                    M {
                        value: Bytes::from((start + 2).to_string()),
                        expire_at: 0,
                    },
                );
            }
            // APPEND keeps the TTL, as Redis does.
            50..=54 => {
                let k = key(rng.gen_range(0..300));
                let kk = k.clone();
                let op: Op<usize> = Box::new(move |v: &mut View<'_>| {
                    let (mut cur, exp) = v
                        .get(&kk)
                        .unwrap()
                        .map(|x| (x.data.to_vec(), x.expire_at))
                        .unwrap_or((Vec::new(), None));
                    cur.extend_from_slice(b"+x");
                    let n = cur.len();
                    v.put(kk, Bytes::from(cur), exp);
                    n
                });
                let n = engine.write(vec![op]).unwrap()[0];
                let e = model.entry(k).or_insert(M {
                    value: Bytes::new(),
                    expire_at: 0,
                });
                if e.expire_at != 0 && e.expire_at <= now {
                    *e = M {
                        value: Bytes::new(),
                        expire_at: 0,
                    };
                }
                let mut nv = e.value.to_vec();
                nv.extend_from_slice(b"+x");
                e.value = Bytes::from(nv);
                assert_eq!(n, e.value.len());
            }
            55..=79 => {
                let k = key(rng.gen_range(0..300));
                let want = live(&model, now).get(&k).cloned();
                let got = engine.get(&k).unwrap().map(|v| v.data);
                assert_eq!(got, want, "get {k:?} at step {step}");
            }
            80..=87 => {
                let a = rng.gen_range(0..300);
                let b = a + rng.gen_range(0..80);
                let limit = rng.gen_range(1..50);
                let (ka, kb) = (key(a), key(b));
                let got: Vec<(Bytes, Bytes)> = engine
                    .scan(Bound::Included(&ka), Bound::Excluded(&kb), limit)
                    .unwrap()
                    .into_iter()
                    .map(|(k, v)| (k, v.data))
                    .collect();
                let want: Vec<(Bytes, Bytes)> = live(&model, now)
                    .range(ka..kb)
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "scan at step {step}");
            }
            88..=93 => clock.advance(rng.gen_range(1..200)),
            94..=96 => engine.flush().unwrap(),
            _ => {
                engine.close().unwrap();
                drop(engine);
                engine = open(dir.path(), &clock);
            }
        }
    }
    // Everything, once more, after a final reopen.
    engine.close().unwrap();
    drop(engine);
    let engine = open(dir.path(), &clock);
    let now = clock.now();
    let all: Vec<(Bytes, Bytes)> = engine
        .scan(Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.data))
        .collect();
    let want: Vec<(Bytes, Bytes)> = live(&model, now).into_iter().collect();
    assert_eq!(all, want);
    let st = engine.stats();
    eprintln!("final stats: {st:?}");
    assert!(
        st.levels.iter().map(|l| l.0).sum::<usize>() > 0,
        "tables were written"
    );
    engine.close().unwrap();
}

trait Now {
    fn now(&self) -> u64;
}
impl Now for ManualClock {
    fn now(&self) -> u64 {
        use sndv_kv::engine::Clock;
        self.now_ms()
    }
}

#[test]
fn readers_never_see_a_partial_group() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let engine = open(dir.path(), &clock);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let e = engine.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rows = e.scan_prefix(b"g:", 100).unwrap();
                    if let Some((_, first)) = rows.first() {
                        assert_eq!(rows.len(), 10, "a group is visible whole");
                        assert!(
                            rows.iter().all(|(_, v)| v.data == first.data),
                            "partial group seen"
                        );
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for round in 0..1500u32 {
        let val = Bytes::from(format!("{round:08}{}", "x".repeat(64)));
        let group: Vec<Op<()>> = (0..10)
            .map(|i| put(format!("g:{i}"), val.clone()))
            .collect();
        engine.write(group).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Together, not each: on a busy machine one reader may be starved for the whole run.
    let checks: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0);
    assert!(
        engine.stats().flushes > 0,
        "flushes happened during the test"
    );
    engine.close().unwrap();
}
