//! An insert-only skip list for one writer and any number of lock-free readers: the key order
//! of a memtable.
//!
//! Nodes are carved out of an arena (chunks that never move) and never freed before the list
//! drops, so a reader can follow any pointer it loaded for as long as it holds the list. The
//! writer fills a node's forward pointers and then links it bottom level first with Release
//! stores; readers load with Acquire, so a node they reach is fully written. Unlike a general
//! concurrent map there is no removal, hence no epochs, reference counts or marked pointers
//! on the read or write path, and dropping the list frees a few chunks instead of every node.
//!
//! Keys are `Copy` (the memtable stores a fixed-size head and a pointer): nothing to drop.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// With a branching factor of 4, 12 levels keep searches logarithmic up to ~16M keys.
const MAX_HEIGHT: usize = 12;
/// Arena chunk: 256 KiB of zeroed units (null forward pointers need no initialisation).
const CHUNK_UNITS: usize = 16 * 1024;

/// The arena's unit of allocation: every node starts 16-byte aligned (keys may hold u128s).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Unit([u64; 2]);

#[repr(C)]
struct Node<K> {
    key: K,
    /// `height` forward pointers follow the node in memory.
    next: [AtomicPtr<Node<K>>; 0],
}

impl<K> Node<K> {
    fn size(height: usize) -> usize {
        size_of::<Node<K>>() + height * size_of::<AtomicPtr<Node<K>>>()
    }

    /// # Safety
    /// `node` must point at a node allocated with at least `level + 1` forward pointers.
    unsafe fn next<'a>(node: *const Node<K>, level: usize) -> &'a AtomicPtr<Node<K>> {
        // SAFETY: per the contract; the pointers follow the header (repr(C), `next` last).
        unsafe {
            &*ptr::addr_of!((*node).next)
                .cast::<AtomicPtr<Node<K>>>()
                .add(level)
        }
    }
}

/// A node reached by a search or a step. Valid while the list it came from is alive.
pub(crate) struct NodeRef<K>(NonNull<Node<K>>);

impl<K> Clone for NodeRef<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for NodeRef<K> {}

impl<K: Copy> NodeRef<K> {
    /// # Safety
    /// The list the node came from must still be alive.
    pub(crate) unsafe fn key<'a>(self) -> &'a K {
        // SAFETY: per the contract; real nodes' keys are written before they are linked.
        unsafe { &(*self.0.as_ptr()).key }
    }

    /// The following node in key order.
    ///
    /// # Safety
    /// The list the node came from must still be alive.
    pub(crate) unsafe fn next(self) -> Option<NodeRef<K>> {
        // SAFETY: every node has a level-0 pointer; per the contract it is still allocated.
        let p = unsafe { Node::next(self.0.as_ptr(), 0) }.load(Ordering::Acquire);
        NonNull::new(p).map(NodeRef)
    }
}

struct Arena {
    chunks: Vec<Vec<Unit>>,
    /// Units used in the last chunk.
    used: usize,
}

impl Arena {
    fn alloc(&mut self, bytes: usize) -> *mut u8 {
        let units = bytes.div_ceil(size_of::<Unit>());
        let room = self.chunks.last().map_or(0, |c| c.len() - self.used);
        if units > room {
            self.chunks.push(vec![Unit([0; 2]); units.max(CHUNK_UNITS)]);
            self.used = 0;
        }
        let c = self.chunks.last_mut().expect("a chunk was just ensured");
        // SAFETY: `used + units <= len`; the chunk's buffer never moves (it is never grown).
        let p = unsafe { c.as_mut_ptr().add(self.used) };
        self.used += units;
        p.cast()
    }
}

pub(crate) struct SkipList<K> {
    head: NonNull<Node<K>>,
    height: AtomicUsize,
    arena: parking_lot::Mutex<Arena>,
    rng: AtomicU64,
    _keys: PhantomData<K>,
}

// SAFETY: nodes are shared read-only but for their atomics; keys are Send + Sync.
unsafe impl<K: Send + Sync> Send for SkipList<K> {}
unsafe impl<K: Send + Sync> Sync for SkipList<K> {}

impl<K: Copy> SkipList<K> {
    pub(crate) fn new() -> SkipList<K> {
        assert!(align_of::<Node<K>>() <= align_of::<Unit>());
        let mut arena = Arena {
            chunks: Vec::new(),
            used: 0,
        };
        // The head's key is never read; its bytes stay zero.
        let head = arena.alloc(Node::<K>::size(MAX_HEIGHT)).cast::<Node<K>>();
        SkipList {
            head: NonNull::new(head).expect("arena memory is not null"),
            height: AtomicUsize::new(1),
            arena: parking_lot::Mutex::new(arena),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            _keys: PhantomData,
        }
    }

    pub(crate) fn first(&self) -> Option<NodeRef<K>> {
        // SAFETY: the head has MAX_HEIGHT pointers and lives as long as `self`.
        let p = unsafe { Node::next(self.head.as_ptr(), 0) }.load(Ordering::Acquire);
        NonNull::new(p).map(NodeRef)
    }

    /// The first node whose key is not `before` the target (`before(k)`: k sorts below it),
    /// and, if asked, the last node before it on every level.
    fn search(
        &self,
        before: &impl Fn(&K) -> bool,
        mut prev: Option<&mut [*const Node<K>; MAX_HEIGHT]>,
    ) -> Option<NodeRef<K>> {
        let mut x: *const Node<K> = self.head.as_ptr();
        let mut level = self.height.load(Ordering::Acquire) - 1;
        loop {
            // SAFETY: `x` is the head or a node linked on `level` (so it has that level).
            let next = unsafe { Node::next(x, level) }.load(Ordering::Acquire);
            // SAFETY: a linked node is fully written and lives as long as `self`.
            if !next.is_null() && before(unsafe { &(*next).key }) {
                x = next;
                continue;
            }
            if let Some(p) = prev.as_deref_mut() {
                p[level] = x;
            }
            if level == 0 {
                return NonNull::new(next).map(NodeRef);
            }
            level -= 1;
        }
    }

    /// The first node whose key is not `before` the target.
    pub(crate) fn seek(&self, before: impl Fn(&K) -> bool) -> Option<NodeRef<K>> {
        self.search(&before, None)
    }

    /// Writer only (one at a time). Links `key` where `before` places it; the caller makes
    /// sure no equal key is present.
    pub(crate) fn insert(&self, key: K, before: impl Fn(&K) -> bool) {
        let mut prev = [self.head.as_ptr() as *const Node<K>; MAX_HEIGHT];
        self.search(&before, Some(&mut prev));
        let height = self.random_height();
        let cur = self.height.load(Ordering::Relaxed);
        if height > cur {
            // Levels above the old height start from the head (already in `prev`). Readers
            // that see the new height before the node find null there and go down.
            self.height.store(height, Ordering::Release);
        }
        let node = self
            .arena
            .lock()
            .alloc(Node::<K>::size(height))
            .cast::<Node<K>>();
        // SAFETY: fresh arena memory with room for the header and `height` pointers, aligned
        // to 16 (asserted >= the node's alignment); unreachable until linked below.
        unsafe {
            ptr::addr_of_mut!((*node).key).write(key);
            for (level, p) in prev.iter().enumerate().take(height) {
                let succ = Node::next(*p, level).load(Ordering::Relaxed);
                Node::next(node, level).store(succ, Ordering::Relaxed);
            }
            for (level, p) in prev.iter().enumerate().take(height) {
                Node::next(*p, level).store(node, Ordering::Release);
            }
        }
    }

    /// A list of `keys`, which must be strictly ascending, built by appending: each node is
    /// linked after the tail of every level it reaches (no search), and consecutive keys sit
    /// next to each other in the arena, so a later walk in order reads memory in order.
    pub(crate) fn from_sorted(keys: impl IntoIterator<Item = K>) -> SkipList<K> {
        let l = SkipList::new();
        let mut tail = [l.head.as_ptr() as *const Node<K>; MAX_HEIGHT];
        let mut top = 1;
        {
            let mut arena = l.arena.lock();
            for key in keys {
                let height = l.random_height();
                let node = arena.alloc(Node::<K>::size(height)).cast::<Node<K>>();
                // SAFETY: fresh zeroed arena memory for the header and `height` pointers (null:
                // the node is the last on every level it reaches); the list is not shared yet.
                unsafe {
                    ptr::addr_of_mut!((*node).key).write(key);
                    for (level, t) in tail.iter_mut().enumerate().take(height) {
                        Node::next(*t, level).store(node, Ordering::Relaxed);
                        *t = node;
                    }
                }
                top = top.max(height);
            }
        }
        // Published to readers by whoever shares the list (a Release store of its address).
        l.height.store(top, Ordering::Relaxed);
        l
    }

    fn random_height(&self) -> usize {
        // xorshift64*; only the writer draws.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // Each further level with probability 1/4: two random bits per level.
        let h = 1 + (r.trailing_zeros() / 2) as usize;
        h.min(MAX_HEIGHT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn collect(l: &SkipList<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        let mut n = l.first();
        while let Some(x) = n {
            // SAFETY: `l` is alive for the whole loop.
            unsafe {
                out.push(*x.key());
                n = x.next();
            }
        }
        out
    }

    #[test]
    fn ordered_seek_and_many_levels() {
        let l = SkipList::<u64>::new();
        assert!(l.first().is_none());
        let mut x = 1u64;
        let mut keys = Vec::new();
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = x >> 40;
            if keys.contains(&k) {
                continue;
            }
            keys.push(k);
            l.insert(k, |n| *n < k);
        }
        keys.sort();
        assert_eq!(collect(&l), keys);
        assert!(l.height.load(Ordering::Relaxed) > 3);
        for probe in [0, keys[0], keys[100] + 1, keys[keys.len() - 1], u64::MAX] {
            let want = keys.iter().copied().find(|&k| k >= probe);
            // SAFETY: `l` is alive.
            let got = l.seek(|n| *n < probe).map(|r| unsafe { *r.key() });
            assert_eq!(got, want, "probe {probe}");
        }
    }

    #[test]
    fn built_from_sorted_keys_then_inserted_into() {
        let keys: Vec<u64> = (0..10_000u64).map(|i| i * 3).collect();
        let l = SkipList::from_sorted(keys.iter().copied());
        assert_eq!(collect(&l), keys);
        assert!(l.height.load(Ordering::Relaxed) > 3);
        for probe in [0, 1, 2999, 3000, 29_997, 29_998] {
            let want = keys.iter().copied().find(|&k| k >= probe);
            // SAFETY: `l` is alive.
            let got = l.seek(|n| *n < probe).map(|r| unsafe { *r.key() });
            assert_eq!(got, want, "probe {probe}");
        }
        // Searches and inserts work on a built list like on any other.
        for k in [1u64, 4, 29_999, 100_000] {
            l.insert(k, |n| *n < k);
        }
        let mut want = keys.clone();
        want.extend([1, 4, 29_999, 100_000]);
        want.sort();
        assert_eq!(collect(&l), want);
        assert!(SkipList::<u64>::from_sorted([]).first().is_none());
    }

    #[test]
    fn readers_see_a_sorted_prefix_while_the_writer_inserts() {
        let l = Arc::new(SkipList::<u64>::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (l, stop) = (l.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut rounds = 0;
                    while !stop.load(Ordering::Relaxed) || rounds == 0 {
                        let v = collect(&l);
                        assert!(v.windows(2).all(|w| w[0] < w[1]));
                        rounds += 1;
                    }
                })
            })
            .collect();
        for i in 0..50_000u64 {
            let k = i.wrapping_mul(0x9e37_79b9) % 1_000_003;
            if l.seek(|n| *n < k).map(|r| unsafe { *r.key() }) != Some(k) {
                l.insert(k, |n| *n < k);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let v = collect(&l);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }
}
