//! Memtable micro-benchmark: inserts 1,000,000 random `key:NNNNNNNNNNNN` keys (about 630,000
//! distinct, 100-byte values) into one memtable, walks it in key order (which first sorts
//! the keys new since the last walk) and drops it; three rounds, times per operation.
//!
//! `cargo run --release --example memtable_walk`. Numbers in docs/PERFORMANCE.md.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sndv_kv::engine::memtable::Memtable;
use sndv_kv::engine::types::Entry;

fn main() {
    let n = 1_000_000u64;
    let mut x = 12345u64;
    let keys: Vec<Bytes> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Bytes::from(format!("key:{:012}", (x >> 20) % 1_000_000))
        })
        .collect();
    let value = Bytes::from(vec![b'x'; 100]);
    for round in 0..3 {
        let m = Arc::new(Memtable::with_budget(None, 256 << 20));
        let t = Instant::now();
        for (i, k) in keys.iter().enumerate() {
            m.insert(Entry::put(k.clone(), i as u64 + 1, value.clone(), 0));
        }
        let insert = t.elapsed();
        let t = Instant::now();
        let walked = m.iter(Bound::Unbounded).count();
        let walk = t.elapsed();
        let t = Instant::now();
        drop(m);
        let dropped = t.elapsed();
        println!(
            "round {round}: insert {:.0} ns/op, walk {walked} entries {:.0} ns/entry, drop {:.1} ms",
            insert.as_nanos() as f64 / n as f64,
            walk.as_nanos() as f64 / walked as f64,
            dropped.as_secs_f64() * 1e3
        );
    }
}
