//! The block cache: parsed data blocks, bounded in bytes, sharded to keep lock hold times short.
//!
//! Keyed by (table id, block number). Tables are immutable and table ids (file numbers) are
//! never reused, so a cached block can never be stale: there is no invalidation to get wrong.
//! A compacted-away table's blocks simply age out. Blocks are copied out of the table's memory
//! map on insert, so the cache holds its own bytes (its budget is real memory) and never keeps a
//! deleted table's mapping alive.
//!
//! Replacement is CLOCK (second chance): a hit only sets the block's reference bit, under the
//! shard lock it takes anyway, where LRU would relink list nodes (several cache lines written
//! per hit). Eviction sweeps a hand over the shard's slots, clearing set bits and evicting the
//! first block found without one, so a block read again since the last sweep stays.
//! Lookups run the caller's code on the block under the shard lock ([`BlockCache::with`]), so
//! a hit does not touch the block's reference count either. A table keeps a [`SlotHint`] per
//! block, so a repeated hit goes straight to the block's slot (one cache line: handle, key,
//! reference bit) instead of probing the shard's map first.
//!
//! There is deliberately no value (row) cache: one would need seqno-checked invalidation on
//! every write to never serve a value older than the last acknowledged write, and the memtable
//! already answers hot recent keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::engine::sstable::CachedBlock;

const SHARDS: usize = 64;
/// Bookkeeping per entry beyond the block bytes (map entry, slot, Bytes header).
const ENTRY_OVERHEAD: usize = 96;

type Key = (u64, u32);

/// A multiplicative hash for (table id, block number): keys are small integers, so a keyed
/// hash (SipHash) would be all cost and no benefit.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

/// Where a block was last seen in its shard: slot number + 1, or 0 for "not known". A table
/// keeps one per data block and passes it with every lookup; a hint whose slot holds that
/// block skips the shard's map (a probe of its control bytes and of its bucket, two cache
/// misses). Hints may go stale when a slot is reused: the slot's own key is checked first, so
/// eviction need not reach back into tables to clear them.
pub type SlotHint = AtomicU32;

/// One cache line: the block's handle (48 bytes), the key that checks a hint, and the flag
/// a hit sets.
#[repr(C, align(64))]
struct Slot {
    /// None: a free slot (its number is on the free list).
    block: Option<CachedBlock>,
    table: u64,
    block_no: u32,
    /// Set by every hit, cleared by the passing hand.
    referenced: bool,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    fn key(&self) -> Key {
        (self.table, self.block_no)
    }

    fn holds(&self, key: Key) -> bool {
        self.block.is_some() && self.key() == key
    }
}

fn hint_of(i: usize) -> u32 {
    // A shard with more than 4G slots goes without hints.
    u32::try_from(i + 1).unwrap_or(0)
}

struct Shard {
    map: HashMap<Key, usize, BuildHasherDefault<KeyHasher>>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
    capacity: usize,
    /// Counted under the shard's lock, which a lookup holds anyway (a shared atomic would be
    /// one more cache line passed between the threads on every read).
    hits: u64,
    misses: u64,
}

fn cost(b: &CachedBlock) -> usize {
    b.byte_size() + ENTRY_OVERHEAD
}

impl Shard {
    /// The slot `hint` names, if that slot holds `key`.
    fn hinted(&self, key: Key, hint: Option<&SlotHint>) -> Option<usize> {
        hint.map(|h| h.load(Ordering::Relaxed) as usize)
            .and_then(|h| h.checked_sub(1))
            .filter(|&i| self.slots.get(i).is_some_and(|s| s.holds(key)))
    }

    fn get(&mut self, key: Key, hint: Option<&SlotHint>) -> Option<&CachedBlock> {
        let found = self.hinted(key, hint).or_else(|| {
            let i = *self.map.get(&key)?;
            if let Some(h) = hint {
                h.store(hint_of(i), Ordering::Relaxed);
            }
            Some(i)
        });
        match found {
            Some(i) => {
                self.hits += 1;
                let slot = &mut self.slots[i];
                slot.referenced = true;
                slot.block.as_ref()
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// The slot holding `key`, found through its hint or the map, without counting a lookup.
    fn find(&self, key: Key, hint: Option<&SlotHint>) -> Option<usize> {
        self.hinted(key, hint)
            .or_else(|| self.map.get(&key).copied())
    }

    /// Drops `key`'s block if it is cached.
    fn remove(&mut self, key: Key, hint: Option<&SlotHint>) {
        let Some(i) = self.find(key, hint) else {
            return;
        };
        if let Some(old) = self.slots[i].block.take() {
            self.bytes -= cost(&old);
            self.map.remove(&key);
            self.free.push(i);
        }
    }

    /// Evicts the slot the hand is on if its bit is clear (clearing it otherwise) and moves
    /// the hand on. Only called with at least one block cached.
    fn tick(&mut self) {
        let i = self.hand;
        self.hand = (self.hand + 1) % self.slots.len();
        let slot = &mut self.slots[i];
        if slot.block.is_none() {
            return;
        }
        if slot.referenced {
            slot.referenced = false;
            return;
        }
        let old = slot.block.take().expect("checked above");
        self.bytes -= cost(&old);
        self.map.remove(&slot.key());
        self.free.push(i);
    }

    fn insert(&mut self, key: Key, b: CachedBlock, hint: Option<&SlotHint>) {
        let c = cost(&b);
        if c > self.capacity {
            return;
        }
        if let Some(&i) = self.map.get(&key) {
            // Another reader cached the same block meanwhile: keep one copy. A larger copy
            // may put the shard over budget: shed blocks until it fits.
            let old = self.slots[i]
                .block
                .replace(b)
                .expect("mapped slots hold a block");
            if let Some(h) = hint {
                h.store(hint_of(i), Ordering::Relaxed);
            }
            self.bytes = self.bytes - cost(&old) + c;
            while self.bytes > self.capacity && !self.map.is_empty() {
                self.tick();
            }
        } else {
            while self.bytes + c > self.capacity && !self.map.is_empty() {
                self.tick();
            }
            let slot = Slot {
                block: Some(b),
                table: key.0,
                block_no: key.1,
                // New blocks start unreferenced: one read is not yet a reason to stay.
                referenced: false,
            };
            let i = match self.free.pop() {
                Some(i) => {
                    self.slots[i] = slot;
                    i
                }
                None => {
                    self.slots.push(slot);
                    self.slots.len() - 1
                }
            };
            self.map.insert(key, i);
            if let Some(h) = hint {
                h.store(hint_of(i), Ordering::Relaxed);
            }
            self.bytes += c;
        }
    }
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
                        map: HashMap::default(),
                        slots: Vec::new(),
                        free: Vec::new(),
                        hand: 0,
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

    /// Runs `f` on the cached block, under its shard's lock (keep `f` short: a block search).
    /// Runs `f` on the cached block under its shard's lock. `hint` is the caller's
    /// [`SlotHint`] for this block, if it keeps one (read and updated here).
    pub fn with<R>(
        &self,
        table: u64,
        block: u32,
        hint: Option<&SlotHint>,
        f: impl FnOnce(&CachedBlock) -> R,
    ) -> Option<R> {
        let key = (table, block);
        self.shard(key).lock().get(key, hint).map(f)
    }

    pub fn get(&self, table: u64, block: u32, hint: Option<&SlotHint>) -> Option<CachedBlock> {
        self.with(table, block, hint, CachedBlock::clone)
    }

    /// Inserts, evicting blocks of the shard that were not read since the hand last passed
    /// them until it fits. A block larger than a whole shard is not cached.
    pub fn insert(&self, table: u64, block: u32, hint: Option<&SlotHint>, b: CachedBlock) {
        let key = (table, block);
        self.shard(key).lock().insert(key, b, hint);
    }

    /// Drops a block of a table that no version uses any more, so its space goes to live
    /// blocks at once instead of when the clock hand comes round (the hint finds it without
    /// the map when it is still where it was last read).
    pub fn remove(&self, table: u64, block: u32, hint: Option<&SlotHint>) {
        let key = (table, block);
        self.shard(key).lock().remove(key, hint);
    }

    /// Caches a block only into free space: nothing is evicted for it. `size` is the block's
    /// size on disk; `load` reads it, and runs only when the block is not cached yet and its
    /// shard has room. Returns false when the shard had no room.
    pub fn fill_free<E>(
        &self,
        table: u64,
        block: u32,
        hint: Option<&SlotHint>,
        size: usize,
        load: impl FnOnce() -> Result<CachedBlock, E>,
    ) -> Result<bool, E> {
        let key = (table, block);
        let shard = self.shard(key);
        {
            let sh = shard.lock();
            if sh.find(key, hint).is_some() {
                return Ok(true);
            }
            if sh.bytes + size + ENTRY_OVERHEAD > sh.capacity {
                return Ok(false);
            }
        }
        let b = load()?;
        let mut sh = shard.lock();
        if sh.find(key, hint).is_some() {
            return Ok(true);
        }
        if sh.bytes + cost(&b) > sh.capacity {
            return Ok(false);
        }
        sh.insert(key, b, hint);
        Ok(true)
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
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(blocks: usize, block_bytes: usize) -> Shard {
        Shard {
            map: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
            capacity: blocks * (CachedBlock::for_test(block_bytes).byte_size() + ENTRY_OVERHEAD),
            hits: 0,
            misses: 0,
        }
    }

    fn present(s: &mut Shard, ids: std::ops::Range<u64>) -> Vec<u64> {
        ids.filter(|&t| s.map.contains_key(&(t, 0))).collect()
    }

    #[test]
    fn a_block_read_since_the_hand_passed_survives_eviction() {
        let mut s = shard(4, 100);
        for t in 0..4 {
            s.insert((t, 0), CachedBlock::for_test(100), None);
        }
        assert!(s.get((0, 0), None).is_some());
        assert!(s.get((2, 0), None).is_some());
        // Two new blocks push out the two that nobody read: 1 and 3.
        s.insert((4, 0), CachedBlock::for_test(100), None);
        s.insert((5, 0), CachedBlock::for_test(100), None);
        assert_eq!(present(&mut s, 0..6), vec![0, 2, 4, 5]);
        // The hand cleared 0's and 2's bits on its way: unread since, they go next.
        s.get((4, 0), None);
        s.insert((6, 0), CachedBlock::for_test(100), None);
        s.insert((7, 0), CachedBlock::for_test(100), None);
        assert_eq!(present(&mut s, 0..8), vec![4, 5, 6, 7]);
        assert_eq!((s.hits, s.misses), (3, 0));
        assert!(s.get((1, 0), None).is_none());
        assert_eq!(s.misses, 1);
    }

    #[test]
    fn removed_blocks_free_their_space_and_fill_free_never_evicts() {
        let one = CachedBlock::for_test(100).byte_size() + ENTRY_OVERHEAD;
        // One shard's worth of room for three blocks (every key below maps to some shard;
        // the whole cache holds SHARDS shards of that size).
        let c = BlockCache::new(3 * one * SHARDS);
        let hints: Vec<SlotHint> = (0..64).map(|_| SlotHint::new(0)).collect();
        for b in 0..64u32 {
            c.insert(7, b, Some(&hints[b as usize]), CachedBlock::for_test(100));
        }
        let before = c.len();
        assert!(before > 0);
        // Removing through the hints (and through the map, without one) drops every block.
        for b in 0..32u32 {
            c.remove(7, b, Some(&hints[b as usize]));
        }
        for b in 32..64u32 {
            c.remove(7, b, None);
        }
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // Removing what is not there is a no-op.
        c.remove(7, 0, Some(&hints[0]));

        // fill_free: loads and caches into free space, skips cached blocks without loading,
        // and reports a full shard without loading or evicting.
        let loads = std::cell::Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(CachedBlock::for_test(100))
        };
        assert_eq!(c.fill_free(9, 0, None, 100, load), Ok(true));
        assert_eq!(c.fill_free(9, 0, None, 100, load), Ok(true));
        assert_eq!(loads.get(), 1);
        let key = (9u64, 0u32);
        let full = c.shard(key);
        {
            let mut sh = full.lock();
            while sh.bytes + one <= sh.capacity {
                let n = sh.map.len() as u32;
                sh.insert((10, n), CachedBlock::for_test(100), None);
            }
        }
        let held = full.lock().map.len();
        // Another key of the same (full) shard.
        let other = (0..10_000u32)
            .map(|b| (11u64, b))
            .find(|&k| std::ptr::eq(c.shard(k), full))
            .unwrap();
        assert_eq!(c.fill_free(other.0, other.1, None, 100, load), Ok(false));
        assert_eq!(loads.get(), 1);
        assert_eq!(full.lock().map.len(), held);
        // A failed load is the caller's error, and nothing is cached.
        let e = c.fill_free(12, 0, None, 100, || Err::<CachedBlock, _>("bad block"));
        assert_eq!(e, Err("bad block"));
        assert!(c.get(12, 0, None).is_none());
    }

    #[test]
    fn bytes_stay_within_capacity_and_reinserts_replace() {
        let mut s = shard(8, 300);
        let cap = s.capacity;
        for t in 0..1000u64 {
            // Mixed sizes; some bigger than a slot's share, none bigger than the shard.
            let len = [10, 300, 1000, 50][t as usize % 4];
            s.insert((t % 37, 0), CachedBlock::for_test(len), None);
            assert!(s.bytes <= cap, "{} > {cap}", s.bytes);
            let held: usize = s
                .slots
                .iter()
                .filter_map(|x| x.block.as_ref())
                .map(cost)
                .sum();
            assert_eq!(held, s.bytes);
            assert_eq!(
                s.map.len(),
                s.slots.iter().filter(|x| x.block.is_some()).count()
            );
            for (&k, &i) in &s.map {
                assert_eq!(s.slots[i].key(), k);
            }
        }
        // A block larger than the shard is not cached (and evicts nothing).
        let before = s.map.len();
        s.insert((99, 0), CachedBlock::for_test(cap), None);
        assert!(!s.map.contains_key(&(99, 0)));
        assert_eq!(s.map.len(), before);
    }

    #[test]
    fn the_cache_counts_hits_and_misses_and_lends_blocks() {
        let c = BlockCache::new(1 << 20);
        assert!(c.with(1, 2, None, |_| ()).is_none());
        c.insert(1, 2, None, CachedBlock::for_test(64));
        assert_eq!(
            c.with(1, 2, None, CachedBlock::byte_size),
            Some(CachedBlock::for_test(64).byte_size())
        );
        assert!(c.get(1, 2, None).is_some());
        assert!(c.get(2, 1, None).is_none());
        assert_eq!((c.hits(), c.misses(), c.len()), (2, 2, 1));
        assert!(c.bytes() > 64 && c.bytes() <= c.capacity());
    }

    #[test]
    fn hints_find_blocks_and_stale_hints_fall_back_to_the_map() {
        let mut s = shard(2, 100);
        let (h0, h1) = (SlotHint::new(0), SlotHint::new(0));
        s.insert((10, 0), CachedBlock::for_test(100), Some(&h0));
        s.insert((11, 0), CachedBlock::for_test(100), Some(&h1));
        assert_ne!(h0.load(Ordering::Relaxed), 0);
        assert_ne!(h0.load(Ordering::Relaxed), h1.load(Ordering::Relaxed));
        // Fast path: the hinted slot holds the block.
        assert!(s.get((10, 0), Some(&h0)).is_some());
        // A hint pointing at another block's slot is not believed.
        assert!(s.get((10, 0), Some(&h1)).is_some());
        assert_eq!(
            h1.load(Ordering::Relaxed),
            h0.load(Ordering::Relaxed),
            "refreshed from the map"
        );
        // Two new blocks evict both (the hand clears the bits first); 11's slot is reused.
        let stale = SlotHint::new(0);
        assert!(s.get((11, 0), Some(&stale)).is_some());
        let old = stale.load(Ordering::Relaxed);
        s.insert((12, 0), CachedBlock::for_test(100), None);
        s.insert((13, 0), CachedBlock::for_test(100), None);
        assert!(s.slots[old as usize - 1].block.is_some());
        assert!(
            s.get((11, 0), Some(&stale)).is_none(),
            "slot {old} was reused"
        );
        // A hint to a slot left free finds nothing either: one large block evicts two small
        // ones and takes one of their slots.
        let mut t = shard(2, 100);
        let (g1, g2) = (SlotHint::new(0), SlotHint::new(0));
        t.insert((1, 0), CachedBlock::for_test(100), Some(&g1));
        t.insert((2, 0), CachedBlock::for_test(100), Some(&g2));
        t.insert((3, 0), CachedBlock::for_test(150), None);
        let free: Vec<&SlotHint> = [&g1, &g2]
            .into_iter()
            .filter(|g| {
                t.slots[g.load(Ordering::Relaxed) as usize - 1]
                    .block
                    .is_none()
            })
            .collect();
        assert_eq!(free.len(), 1);
        assert!(t.get((1, 0), Some(&g1)).is_none());
        assert!(t.get((2, 0), Some(&g2)).is_none());
        assert!(t.get((3, 0), None).is_some());
    }
}
