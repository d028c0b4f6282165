//! Engine micro-benchmarks (criterion): put of 16-byte keys with 100-byte values, fsync
//! `never`, from 1 and 4 writer threads; get of present and absent keys.
//!
//! Run: `cargo bench --bench engine`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sndv_kv::engine::{Engine, EngineConfig, FsyncPolicy, Op, View};

fn key(i: u64) -> Bytes {
    // 16 bytes, spread over the key space.
    Bytes::from(format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

fn put_op(i: u64) -> Op<()> {
    let (k, v) = (key(i), Bytes::from(vec![b'v'; 100]));
    Box::new(move |view: &mut View<'_>| view.put(k, v, None))
}

fn config() -> EngineConfig {
    EngineConfig {
        fsync: FsyncPolicy::Never,
        ..EngineConfig::default()
    }
}

fn bench_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("put");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for threads in [1u64, 4] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), config()).unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        g.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads);
                let start = Instant::now();
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        let e = engine.clone();
                        let c = counter.clone();
                        std::thread::spawn(move || {
                            for _ in 0..per {
                                let i = c.fetch_add(1, Ordering::Relaxed);
                                e.write(vec![put_op(i)]).unwrap();
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                start.elapsed()
            })
        });
        engine.close().unwrap();
    }
    g.finish();
}

fn bench_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config()).unwrap();
    let n = 200_000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        engine
            .write(chunk.iter().map(|&i| put_op(i)).collect())
            .unwrap();
    }
    // Half of the keys in tables, half in the memtable.
    engine.flush().unwrap();
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("present", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            assert!(engine.get(&key(i)).unwrap().is_some());
        })
    });
    g.bench_function("absent", |b| {
        b.iter(|| {
            i += 1;
            assert!(engine.get(&key(n + i)).unwrap().is_none());
        })
    });
    g.finish();
    engine.close().unwrap();
}

criterion_group!(benches, bench_put, bench_get);
criterion_main!(benches);
