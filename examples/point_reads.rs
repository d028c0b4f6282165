//! Point-read micro-benchmark, in process (no network): fills an engine in `DIR` with
//! 2,500,000 random SETs over 1,000,000 `key:NNNNNNNNNNNN` keys (100-byte values, fsync
//! never, as the server's safe profile sizes its memtable and 128 MiB block cache), flushes
//! and lets compaction settle; later runs on the same `DIR` reuse that data. Then one thread
//! warms up with 500,000 GETs and times 2,000,000 random GETs (about 92% hits).
//!
//! `cargo run --release --example point_reads -- DIR`. Run two builds against the same `DIR`
//! alternately to compare them; numbers in docs/PERFORMANCE.md.

use std::time::Instant;

use bytes::Bytes;
use sndv_kv::engine::{Engine, EngineConfig, FsyncPolicy, Op, View};

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: point_reads DIR");
        std::process::exit(2);
    };
    let cfg = EngineConfig {
        fsync: FsyncPolicy::Never,
        block_cache_bytes: 128 << 20,
        ..EngineConfig::default()
    };
    let fresh = !std::path::Path::new(&dir).join("db").exists();
    let e = Engine::open(&dir, cfg).expect("open");
    let n = 1_000_000u64;
    if fresh {
        let mut x = 1u64;
        for _ in 0..25_000 {
            let ops: Vec<Op<()>> = (0..100)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = Bytes::from(format!("key:{:012}", (x >> 33) % n));
                    let v = Bytes::from(vec![b'x'; 100]);
                    Box::new(move |w: &mut View<'_>| w.put(k, v, None)) as Op<()>
                })
                .collect();
            e.write(ops).expect("write");
        }
        e.flush().expect("flush");
        e.wait_for_compactions().expect("compactions");
    }
    let keys: Vec<Vec<u8>> = (0..2_000_000u64)
        .map(|i| {
            let k = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % n;
            format!("key:{k:012}").into_bytes()
        })
        .collect();
    for k in &keys[..500_000] {
        let _ = e.get(k).expect("get");
    }
    let t = Instant::now();
    let hits = keys
        .iter()
        .filter(|k| e.get(k).expect("get").is_some())
        .count();
    let el = t.elapsed();
    println!(
        "{:.0} ns/GET, {hits} hits of {}; tables per level (files, bytes): {:?}",
        el.as_nanos() as f64 / keys.len() as f64,
        keys.len(),
        e.stats().levels
    );
    e.close().expect("close");
}
