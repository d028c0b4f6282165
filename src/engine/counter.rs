//! A statistics counter that many threads add to without sharing one cache line.

use std::sync::atomic::{AtomicU64, Ordering};

const COUNTER_SHARDS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A counter added to on hot paths (every command, every table lookup): one cache line per
/// shard, and each thread adds to its own shard, so threads do not pass one line back and forth
/// on every operation. Reads sum the shards. Same method names as `AtomicU64`.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [Shard; COUNTER_SHARDS],
}

fn counter_shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) as usize % COUNTER_SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Counter {
    pub fn fetch_add(&self, n: u64, order: Ordering) {
        self.shards[counter_shard()].0.fetch_add(n, order);
    }

    pub fn load(&self, order: Ordering) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.0.load(order)))
    }

    /// Sets the total to `v` (CONFIG RESETSTAT sets 0).
    pub fn store(&self, v: u64, order: Ordering) {
        for (i, s) in self.shards.iter().enumerate() {
            s.0.store(if i == 0 { v } else { 0 }, order);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_threads_and_resets() {
        let c = std::sync::Arc::new(Counter::default());
        let ts: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.fetch_add(2, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(c.load(Ordering::Relaxed), 8000);
        c.store(5, Ordering::Relaxed);
        assert_eq!(c.load(Ordering::Relaxed), 5);
    }
}
