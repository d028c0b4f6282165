//! The block cache: parsed data blocks, bounded in bytes, sharded to keep lock hold times short.
//!
//! Keyed by (table id, block number). Tables are immutable and table ids (file numbers) are
//! never reused, so a cached block can never be stale: there is no invalidation to get wrong.
//! A compacted-away table's blocks simply age out. Blocks are copied out of the table's memory
//! map on insert, so the cache holds its own bytes (its budget is real memory) and never keeps a
//! deleted table's mapping alive.
//!
//! There is deliberately no value (row) cache: one would need seqno-checked invalidation on
//! every write to never serve a value older than the last acknowledged write, and the memtable
//! already answers hot recent keys.

use lru::LruCache;
use parking_lot::Mutex;

use crate::engine::sstable::CachedBlock;

const SHARDS: usize = 64;
/// Bookkeeping per entry beyond the block bytes (key, LRU links, Bytes header).
const ENTRY_OVERHEAD: usize = 96;

type Key = (u64, u32);

struct Shard {
    lru: LruCache<Key, CachedBlock>,
    bytes: usize,
    capacity: usize,
    /// Counted under the shard's lock, which a lookup holds anyway (a shared atomic would be
    /// one more cache line passed between the threads on every read).
    hits: u64,
    misses: u64,
}

pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    capacity: usize,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &self.capacity)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl BlockCache {
    /// A cache holding at most `capacity` bytes (split evenly over the shards).
    pub fn new(capacity: usize) -> BlockCache {
        let per = capacity / SHARDS;
        BlockCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::unbounded(),
                        bytes: 0,
                        capacity: per,
                        hits: 0,
                        misses: 0,
                    })
                })
                .collect(),
            capacity,
        }
    }

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        // A multiplicative mix: blocks of one table spread over the shards.
        let h = (key.0 ^ (u64::from(key.1) << 32) ^ u64::from(key.1))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    pub fn get(&self, table: u64, block: u32) -> Option<CachedBlock> {
        let key = (table, block);
        let mut s = self.shard(key).lock();
        let got = s.lru.get(&key).cloned();
        match got {
            Some(_) => s.hits += 1,
            None => s.misses += 1,
        }
        got
    }

    /// Inserts, evicting least recently used blocks of the shard until it fits. A block larger
    /// than a whole shard is not cached.
    pub fn insert(&self, table: u64, block: u32, b: CachedBlock) {
        let key = (table, block);
        let cost = b.byte_size() + ENTRY_OVERHEAD;
        let mut s = self.shard(key).lock();
        if cost > s.capacity {
            return;
        }
        if let Some(old) = s.lru.put(key, b) {
            s.bytes -= old.byte_size() + ENTRY_OVERHEAD;
        }
        s.bytes += cost;
        while s.bytes > s.capacity {
            match s.lru.pop_lru() {
                Some((_, old)) => s.bytes -= old.byte_size() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().bytes as u64).sum()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    pub fn hits(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().hits).sum()
    }

    pub fn misses(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().misses).sum()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().lru.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
