//! The in-memory table: every key once in an insert-only skip list (the order, for flushes and
//! scans), each key's versions in a newest-first chain, and a hash index over the keys for
//! point operations.
//!
//! Point reads and overwrites do one hash probe instead of a skip-list search (one cache miss
//! per level of the search over millions of nodes was the largest cost of GET and SET in the
//! profiles). A key new to the memtable is only put in the index and queued; the first reader
//! of the key order after it (a flush, a scan) sorts the queued keys and links them, so the
//! write path never searches the skip list while the index has room.
//!
//! Concurrency: one writer at a time (the ingest leader under its lock, or recovery), any
//! number of readers without locks; linking queued keys into the order happens under the
//! `order` lock. A key record or version, once linked, is never moved or freed before the
//! memtable is dropped, and readers hold the memtable by `Arc`, so the raw pointers below stay
//! valid for as long as a reader can reach them. The writer links a version (Release) before
//! the group's seqno is published; a reader takes the published seqno (Acquire) before it
//! probes or asks for the order, so it sees every version up to its snapshot and skips the
//! newer ones by seqno.

use std::ops::Bound;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;

use super::prefetch;
use super::skiplist::{NodeRef, SkipList};
use super::sstable::key_hash;
use super::types::{Entry, Found, Kind, SeqNo};

/// One version of a key.
struct Ver {
    seqno: SeqNo,
    kind: Kind,
    type_tag: u8,
    expire_at: u64,
    value: Bytes,
    /// The next older version (null at the end). Written before the version is linked.
    next: AtomicPtr<Ver>,
}

/// One key and its versions, newest first. The key's bytes are stored right after the
/// record, in the same allocation ([`KeyRec::alloc`]): a lookup that reaches the record
/// compares the key in the cache lines it already loaded, instead of following a pointer into
/// whatever request buffer the key arrived in, and the record does not keep that buffer alive.
struct KeyRec {
    hash: u64,
    newest: AtomicPtr<Ver>,
    /// The key bytes after the record (derived from the allocation's own pointer).
    key_ptr: *const u8,
    key_len: usize,
}

impl KeyRec {
    fn layout(key_len: usize) -> std::alloc::Layout {
        std::alloc::Layout::new::<KeyRec>()
            .extend(std::alloc::Layout::array::<u8>(key_len).expect("key length fits a layout"))
            .expect("key length fits a layout")
            .0
            .pad_to_align()
    }

    /// A record for `key` with no versions; freed with [`KeyRec::free`].
    fn alloc(hash: u64, key: &[u8]) -> *mut KeyRec {
        let layout = Self::layout(key.len());
        // SAFETY: the layout has a non-zero size (the record itself); the record is written
        // before anything reads it, and the key goes to the bytes after it, inside the
        // allocation (`layout` reserved them).
        unsafe {
            let base = std::alloc::alloc(layout);
            if base.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            let key_ptr = base.add(std::mem::size_of::<KeyRec>());
            ptr::copy_nonoverlapping(key.as_ptr(), key_ptr, key.len());
            let rec = base as *mut KeyRec;
            rec.write(KeyRec {
                hash,
                newest: AtomicPtr::new(ptr::null_mut()),
                key_ptr,
                key_len: key.len(),
            });
            rec
        }
    }

    /// Frees a record made by [`KeyRec::alloc`] and its versions.
    ///
    /// # Safety
    /// `p` came from `alloc`, is freed once, and nothing uses it afterwards.
    unsafe fn free(p: *mut KeyRec) {
        let layout = Self::layout((*p).key_len);
        ptr::drop_in_place(p);
        std::alloc::dealloc(p as *mut u8, layout);
    }

    fn key(&self) -> &[u8] {
        // SAFETY: `alloc` copied `key_len` bytes there; they live as long as the record.
        unsafe { std::slice::from_raw_parts(self.key_ptr, self.key_len) }
    }

    /// The newest version with seqno <= `snapshot`.
    fn version_at(&self, snapshot: SeqNo) -> Option<&Ver> {
        let mut p = self.newest.load(Ordering::Acquire);
        // SAFETY: versions are freed only when the memtable (which owns this record) drops.
        while let Some(v) = unsafe { p.as_ref() } {
            if v.seqno <= snapshot {
                return Some(v);
            }
            p = v.next.load(Ordering::Acquire);
        }
        None
    }

    fn entry(&self, v: &Ver) -> Entry {
        Entry {
            key: Bytes::copy_from_slice(self.key()),
            seqno: v.seqno,
            kind: v.kind,
            type_tag: v.type_tag,
            expire_at: v.expire_at,
            value: v.value.clone(),
        }
    }
}

impl Drop for KeyRec {
    fn drop(&mut self) {
        let mut p = *self.newest.get_mut();
        while !p.is_null() {
            // SAFETY: every version was made by Box::into_raw and is owned by one chain.
            let mut v = unsafe { Box::from_raw(p) };
            p = *v.next.get_mut();
        }
    }
}

/// The skip list's key: the record, ordered by its key bytes.
#[derive(Clone, Copy)]
struct RecKey {
    /// The key's first 32 bytes, zero-padded, big-endian: ordered like the key itself, so most
    /// comparisons of a skip-list search end here without following the pointer to the record
    /// and then to its key bytes (two cache misses). Declared first: it is compared first.
    head: Head,
    rec: *const KeyRec,
}

// SAFETY: the record is immutable but for its atomics, and lives as long as the memtable.
unsafe impl Send for RecKey {}
unsafe impl Sync for RecKey {}

impl RecKey {
    fn rec(&self) -> &KeyRec {
        // SAFETY: see the type's Send/Sync note; records outlive the skip list's nodes.
        unsafe { &*self.rec }
    }

    fn probe(&self) -> Probe<'_> {
        Probe {
            head: self.head,
            key: self.rec().key(),
        }
    }

    fn order(&self, other: &RecKey) -> std::cmp::Ordering {
        (self.head, self.rec().key()).cmp(&(other.head, other.rec().key()))
    }

    /// Writer of `list` only: links this key where it sorts (it must not be there yet).
    fn link_into(self, list: &SkipList<RecKey>) {
        let p = self.probe();
        list.insert(self, |n| n.before(&p));
    }

    /// True when this key sorts before `p`'s.
    fn before(&self, p: &Probe) -> bool {
        (self.head, self.rec().key()) < (p.head, p.key)
    }

    fn is(&self, p: &Probe) -> bool {
        self.head == p.head && self.rec().key() == p.key
    }
}

type Head = (u128, u128);

fn head_of(key: &[u8]) -> Head {
    let mut b = [0u8; 32];
    let n = key.len().min(32);
    b[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = b.split_at(16);
    (
        u128::from_be_bytes(hi.try_into().expect("16 bytes")),
        u128::from_be_bytes(lo.try_into().expect("16 bytes")),
    )
}

struct Probe<'a> {
    head: Head,
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(key: &'a [u8]) -> Probe<'a> {
        Probe {
            head: head_of(key),
            key,
        }
    }
}

/// Open-addressing hash index over the key records (linear probing, never shrinks). Sized
/// once; when it reaches half full it stops taking new keys and says so (`full`), and lookups
/// that miss fall back to the skip list: it only ever speeds lookups up, never answers wrong.
///
/// A slot holds the record's address in its low 48 bits and 16 bits of the key's hash above
/// them, so a probe passes other keys' slots (and answers "absent", the common case for keys
/// that live in the tables) without loading their records. The slots are an anonymous
/// mapping: zero pages until written, and huge pages where the kernel allows (one TLB entry
/// per 2 MiB instead of per 4 KiB for probes that land anywhere in it).
struct Index {
    map: memmap2::MmapMut,
    mask: usize,
    used: AtomicUsize,
    full: AtomicBool,
}

/// Index slots per memtable byte budget: one per 64 bytes, filled to at most half, covers
/// entries of 128 bytes and more on average (smaller ones overflow to the skip list).
const BYTES_PER_SLOT: usize = 64;
const MIN_SLOTS: usize = 1024;
const ADDR_BITS: u32 = 48;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;

fn tag_of(hash: u64) -> u64 {
    // The top bits: the slot number comes from the low ones.
    (hash >> ADDR_BITS) << ADDR_BITS
}

impl Index {
    fn new(budget_bytes: usize) -> Index {
        let mut cap = (budget_bytes / BYTES_PER_SLOT)
            .clamp(MIN_SLOTS, 1 << 30)
            .next_power_of_two();
        // A budget the system will not map (a huge memtable_bytes) gets the smallest index:
        // lookups then fall back to the skip list sooner, nothing else changes.
        let map = match memmap2::MmapMut::map_anon(cap * 8) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(bytes = cap * 8, error = %e, "memtable index: mapping refused, using the smallest index");
                cap = MIN_SLOTS;
                memmap2::MmapMut::map_anon(cap * 8)
                    .expect("memtable index: 8 KiB anonymous mapping")
            }
        };
        #[cfg(target_os = "linux")]
        {
            // Best effort: without it the index works the same, with more TLB misses.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Index {
            map,
            mask: cap - 1,
            used: AtomicUsize::new(0),
            full: AtomicBool::new(false),
        }
    }

    fn slots(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, `cap * 8` bytes long, zero-filled (all-zero
        // AtomicU64s) and lives as long as `self`; all access goes through the atomics.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.mask + 1) }
    }

    fn bytes(&self) -> usize {
        self.map.len()
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<&KeyRec> {
        let slots = self.slots();
        let tag = tag_of(hash);
        let mut i = hash as usize & self.mask;
        loop {
            let s = slots[i].load(Ordering::Acquire);
            if s == 0 {
                return None;
            }
            if s & !ADDR_MASK == tag {
                // SAFETY: records live as long as the memtable that owns this index.
                let rec = unsafe { &*((s & ADDR_MASK) as *const KeyRec) };
                if rec.hash == hash && rec.key() == key {
                    return Some(rec);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Writer only. The key must not be in the index yet. False when the index is full (the
    /// key was not added).
    fn add(&self, rec: *const KeyRec, hash: u64) -> bool {
        let slots = self.slots();
        let used = self.used.load(Ordering::Relaxed);
        let addr = rec as u64;
        if self.full.load(Ordering::Relaxed)
            || (used + 1) * 2 > slots.len()
            || addr & !ADDR_MASK != 0
            || addr == 0
        {
            self.full.store(true, Ordering::Release);
            return false;
        }
        let mut i = hash as usize & self.mask;
        while slots[i].load(Ordering::Relaxed) != 0 {
            i = (i + 1) & self.mask;
        }
        slots[i].store(addr | tag_of(hash), Ordering::Release);
        self.used.store(used + 1, Ordering::Relaxed);
        true
    }
}

/// A version unlinked because another with the same seqno replaced it (recovery only).
struct Unlinked(*mut Ver);
// SAFETY: only the memtable's owner frees it, on drop.
unsafe impl Send for Unlinked {}

/// The key order, brought up to date only when someone needs it (see [`Memtable::ordered`]).
struct Order {
    /// Records of keys in the index but not yet in the current list, in arrival order.
    pending: Vec<RecKey>,
    /// Every list that has been current, the current one last. Earlier ones stay allocated
    /// until the memtable drops: an iterator may still be walking one. Each replacement holds
    /// at least 1.5x its predecessor's keys, so together they are at most ~2x the current.
    /// Boxed: `Memtable::list` points at the current one, which must not move when the
    /// vector grows.
    #[allow(clippy::vec_box)]
    lists: Vec<Box<SkipList<RecKey>>>,
    /// Keys in the current list.
    linked: usize,
}

pub struct Memtable {
    /// The current list of [`Order::lists`]: every key, in key order, but those still
    /// pending. Readers load it (Acquire) after bringing it up to date under `order`.
    list: AtomicPtr<SkipList<RecKey>>,
    order: parking_lot::Mutex<Order>,
    index: Index,
    unlinked: parking_lot::Mutex<Vec<Unlinked>>,
    versions: AtomicUsize,
    bytes: AtomicUsize,
    /// Smallest seqno held (u64::MAX when empty): lets a prefix drop be forgotten once no
    /// memtable or table holds anything older than it.
    min_seqno: AtomicU64,
    max_seqno: AtomicU64,
    /// WAL segments whose records this memtable holds; deleted once it is flushed.
    wal_numbers: parking_lot::Mutex<Vec<u64>>,
}

impl Drop for Memtable {
    fn drop(&mut self) {
        // Each record is either pending or in the current list (the older lists hold a subset
        // of the current one's).
        let order = self.order.get_mut();
        for k in order.pending.drain(..) {
            // SAFETY: made by KeyRec::alloc in `add_rec`, pending exactly once, unreachable now.
            unsafe { KeyRec::free(k.rec as *mut KeyRec) };
        }
        let mut n = order.lists.last().and_then(|l| l.first());
        // SAFETY: the list is alive until after this loop.
        let mut ahead = unsafe { Lookahead::new(n) };
        while let Some(node) = n {
            // SAFETY: the list is alive (it is dropped after this); each record was made by
            // KeyRec::alloc in `add_rec`, is in the list exactly once, and nothing can reach
            // it once the memtable is being dropped. The lookahead is always ahead of `node`,
            // so it never reads a freed record.
            unsafe {
                ahead.step();
                n = node.next();
                KeyRec::free(node.key().rec as *mut KeyRec);
            }
        }
        for u in self.unlinked.get_mut().drain(..) {
            // SAFETY: unlinked versions were made by Box::into_raw and are in no chain.
            drop(unsafe { Box::from_raw(u.0) });
        }
    }
}

/// Hash index budget of a memtable made with [`Memtable::new`] (tests, small tables).
const DEFAULT_BUDGET: usize = 4 << 20;

impl Memtable {
    pub fn new(wal_number: Option<u64>) -> Memtable {
        Memtable::with_budget(wal_number, DEFAULT_BUDGET)
    }

    /// A memtable expected to hold about `budget_bytes` of entries (sizes its hash index).
    pub fn with_budget(wal_number: Option<u64>, budget_bytes: usize) -> Memtable {
        let m = Memtable {
            list: AtomicPtr::new(ptr::null_mut()),
            order: parking_lot::Mutex::new(Order {
                pending: Vec::new(),
                lists: Vec::new(),
                linked: 0,
            }),
            index: Index::new(budget_bytes),
            unlinked: parking_lot::Mutex::new(Vec::new()),
            versions: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            min_seqno: AtomicU64::new(u64::MAX),
            max_seqno: AtomicU64::new(0),
            wal_numbers: parking_lot::Mutex::new(wal_number.into_iter().collect()),
        };
        m.install(&mut m.order.lock(), SkipList::new(), 0);
        m
    }

    /// Makes `list` (holding `linked` keys) the current one.
    fn install(&self, order: &mut Order, list: SkipList<RecKey>, linked: usize) {
        let mut b = Box::new(list);
        self.list.store(&mut *b, Ordering::Release);
        order.lists.push(b);
        order.linked = linked;
    }

    /// The current list; complete only up to the last [`Memtable::ordered`] call.
    fn list(&self) -> &SkipList<RecKey> {
        // SAFETY: set at construction, and every list ever installed stays allocated (in
        // `order.lists`) until `self` drops.
        unsafe { &*self.list.load(Ordering::Acquire) }
    }

    /// The list with every key added so far. New keys are only indexed on the write path
    /// (a skip-list insert is a dozen or more cache misses over a large table); the first
    /// reader of the order after them sorts them, then either inserts them one by one (few)
    /// or merges them with the current list into a new one built in order (many: the usual
    /// case of a flush, which reads the order once, at the end).
    fn ordered(&self) -> &SkipList<RecKey> {
        let mut order = self.order.lock();
        if !order.pending.is_empty() {
            let mut new = std::mem::take(&mut order.pending);
            new.sort_unstable_by(|a, b| a.order(b));
            let cur = self.list();
            if new.len() * 2 < order.linked {
                for k in &new {
                    k.link_into(cur);
                }
                order.linked += new.len();
            } else {
                let linked = order.linked + new.len();
                let merged = SkipList::from_sorted(MergeSorted {
                    // SAFETY: the current list stays allocated while `self` lives.
                    old: cur.first(),
                    new: new.into_iter().peekable(),
                });
                self.install(&mut order, merged, linked);
            }
        }
        self.list()
    }

    fn find_rec(&self, hash: u64, key: &[u8]) -> Option<&KeyRec> {
        if let Some(r) = self.index.find(hash, key) {
            return Some(r);
        }
        if !self.index.full.load(Ordering::Acquire) {
            return None;
        }
        // Keys outside the index are never pending: the current list has them.
        let p = Probe::new(key);
        let n = self.list().seek(|k| k.before(&p))?;
        // SAFETY: the node and its record live as long as `self`.
        let k = unsafe { n.key() };
        k.is(&p).then(|| k.rec())
    }

    /// Writer only: a new key's record, put in the index and queued for the key order (or,
    /// once the index is full, linked into the order at once).
    fn add_rec(&self, hash: u64, key: &[u8]) -> &KeyRec {
        let head = head_of(key);
        let p: *const KeyRec = KeyRec::alloc(hash, key);
        let rk = RecKey { head, rec: p };
        // Queued before the caller links a version, so before that version's seqno is
        // published: a reader that takes a snapshot and then asks for the order finds it.
        let mut order = self.order.lock();
        if self.index.add(p, hash) {
            order.pending.push(rk);
        } else {
            rk.link_into(self.list());
            order.linked += 1;
        }
        drop(order);
        // SAFETY: just allocated; freed only when `self` drops.
        unsafe { &*p }
    }

    /// Only the ingest agent (or recovery) inserts: one writer at a time.
    pub fn insert(&self, e: Entry) {
        self.bytes.fetch_add(e.approx_size(), Ordering::Relaxed);
        self.min_seqno.fetch_min(e.seqno, Ordering::Relaxed);
        self.max_seqno.fetch_max(e.seqno, Ordering::Relaxed);
        self.versions.fetch_add(1, Ordering::Relaxed);
        let hash = key_hash(&e.key);
        let rec = match self.find_rec(hash, &e.key) {
            Some(r) => r,
            None => self.add_rec(hash, &e.key),
        };
        let seqno = e.seqno;
        let v = Box::into_raw(Box::new(Ver {
            seqno,
            kind: e.kind,
            type_tag: e.type_tag,
            expire_at: e.expire_at,
            value: e.value,
            next: AtomicPtr::new(ptr::null_mut()),
        }));
        // Keep the chain newest first. New versions nearly always go first (seqnos grow).
        let mut link = &rec.newest;
        loop {
            let cur = link.load(Ordering::Acquire);
            // SAFETY: linked versions live as long as `self`; `v` is ours until stored.
            match unsafe { cur.as_ref() } {
                Some(c) if c.seqno > seqno => link = &c.next,
                Some(c) if c.seqno == seqno => {
                    unsafe { &*v }
                        .next
                        .store(c.next.load(Ordering::Acquire), Ordering::Relaxed);
                    link.store(v, Ordering::Release);
                    // Readers may still be looking at it: freed with the memtable.
                    self.unlinked.lock().push(Unlinked(cur));
                    self.versions.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                _ => {
                    unsafe { &*v }.next.store(cur, Ordering::Relaxed);
                    link.store(v, Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Newest version of `key` with seqno <= `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        self.get_hashed(key, key_hash(key), snapshot)
            .map(|f| f.into_entry(Bytes::copy_from_slice(key)))
    }

    /// [`Memtable::get`] without the key (the caller has it: no reference to it is taken),
    /// given the key's [`key_hash`] (the one the table filters use too).
    pub fn get_hashed(&self, key: &[u8], hash: u64, snapshot: SeqNo) -> Option<Found> {
        let rec = self.find_rec(hash, key)?;
        rec.version_at(snapshot).map(|v| Found {
            seqno: v.seqno,
            kind: v.kind,
            type_tag: v.type_tag,
            expire_at: v.expire_at,
            value: v.value.clone(),
        })
    }

    /// Bytes of the entries held (keys + values + a fixed overhead each).
    pub fn approx_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes of the hash index (allocated up front; its pages become resident as it fills).
    pub fn index_bytes(&self) -> usize {
        self.index.bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.load(Ordering::Relaxed) == 0
    }

    /// Number of versions held.
    pub fn len(&self) -> usize {
        self.versions.load(Ordering::Relaxed)
    }

    pub fn min_seqno(&self) -> SeqNo {
        self.min_seqno.load(Ordering::Relaxed)
    }

    pub fn max_seqno(&self) -> SeqNo {
        self.max_seqno.load(Ordering::Relaxed)
    }

    pub fn wal_numbers(&self) -> Vec<u64> {
        self.wal_numbers.lock().clone()
    }

    pub fn add_wal_number(&self, n: u64) {
        self.wal_numbers.lock().push(n);
    }

    /// Entries from the first whose key >= `start` (or > for Excluded), in (key, seqno desc)
    /// order.
    /// Callers take their snapshot first: every key with a version up to it is then in the
    /// order this reads.
    pub fn iter(self: &std::sync::Arc<Self>, start: Bound<&[u8]>) -> MemIter {
        self.iter_with(start, false)
    }

    /// Only the newest version of each key, in key order (a flush: the older versions of a key
    /// in one memtable matter only to snapshots that still hold the memtable). Older versions
    /// are skipped without being copied out.
    pub fn iter_newest(self: &std::sync::Arc<Self>) -> MemIter {
        self.iter_with(Bound::Unbounded, true)
    }

    fn iter_with(self: &std::sync::Arc<Self>, start: Bound<&[u8]>, newest_only: bool) -> MemIter {
        let list = self.ordered();
        let cur = match start {
            Bound::Unbounded => list.first(),
            Bound::Included(k) => {
                let p = Probe::new(k);
                list.seek(|n| n.before(&p))
            }
            Bound::Excluded(k) => {
                let p = Probe::new(k);
                let n = list.seek(|n| n.before(&p));
                // SAFETY: the list lives as long as `self`.
                match n {
                    Some(x) if unsafe { x.key() }.is(&p) => unsafe { x.next() },
                    other => other,
                }
            }
        };
        // SAFETY: nodes live as long as the memtable.
        let ver = cur.map_or(ptr::null_mut(), |n| {
            unsafe { n.key() }.rec().newest.load(Ordering::Acquire)
        });
        MemIter {
            cur,
            ver,
            // SAFETY: the iterator holds the memtable, hence the list.
            ahead: unsafe { Lookahead::new(cur) },
            newest_only,
            _mem: self.clone(),
        }
    }
}

/// Runs ahead of a walk over a list in key order and asks the CPU for the records (and
/// their newest versions) the walk reaches a few steps later. Records and versions sit where
/// they were allocated, in arrival order, so a walk in key order would otherwise wait for
/// one cache miss after another; this way several are in flight at once.
#[derive(Clone, Copy)]
struct Lookahead {
    /// Where the record is requested.
    far: Option<NodeRef<RecKey>>,
    /// Where the (by now loaded) record's newest version is requested.
    near: Option<NodeRef<RecKey>>,
}

const LOOKAHEAD_FAR: usize = 8;
const LOOKAHEAD_NEAR: usize = 4;

impl Lookahead {
    /// # Safety
    /// The list `from` is in must outlive the lookahead.
    unsafe fn new(from: Option<NodeRef<RecKey>>) -> Lookahead {
        let skip = |mut n: Option<NodeRef<RecKey>>, k: usize| {
            for _ in 0..k {
                // SAFETY: per the contract.
                n = n.and_then(|x| unsafe { x.next() });
            }
            n
        };
        Lookahead {
            far: skip(from, LOOKAHEAD_FAR),
            near: skip(from, LOOKAHEAD_NEAR),
        }
    }

    /// One step of the walk.
    ///
    /// # Safety
    /// As for [`Lookahead::new`]; records ahead of the walk must not have been freed.
    unsafe fn step(&mut self) {
        // SAFETY: per the contract.
        unsafe {
            if let Some(f) = self.far {
                prefetch(f.key().rec);
                self.far = f.next();
            }
            if let Some(n) = self.near {
                prefetch(n.key().rec().newest.load(Ordering::Relaxed));
                self.near = n.next();
            }
        }
    }
}

/// The keys of a list and a sorted batch of new ones (disjoint), in order.
struct MergeSorted {
    old: Option<NodeRef<RecKey>>,
    new: std::iter::Peekable<std::vec::IntoIter<RecKey>>,
}

impl Iterator for MergeSorted {
    type Item = RecKey;

    fn next(&mut self) -> Option<RecKey> {
        // SAFETY: the old list stays allocated while its memtable lives, which outlasts this.
        let old = self.old.map(|n| unsafe { *n.key() });
        match (old, self.new.peek()) {
            (Some(o), Some(n)) if n.order(&o) == std::cmp::Ordering::Less => self.new.next(),
            (Some(o), _) => {
                self.old = self.old.and_then(|n| unsafe { n.next() });
                Some(o)
            }
            (None, _) => self.new.next(),
        }
    }
}

/// An owning cursor over a memtable: it holds its place in the skip list (a node, which
/// lives as long as the memtable it holds), so each step is O(1), and stays valid while the
/// writer inserts.
pub struct MemIter {
    /// The current key's node.
    cur: Option<NodeRef<RecKey>>,
    /// The next version of the current key to return; null: go to the next key.
    ver: *mut Ver,
    ahead: Lookahead,
    /// Return only the first (newest) version of each key.
    newest_only: bool,
    _mem: std::sync::Arc<Memtable>,
}

// SAFETY: `ver` points into the memtable held by `_mem`; versions are immutable once linked
// but for their atomics.
unsafe impl Send for MemIter {}

impl Iterator for MemIter {
    type Item = super::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let node = self.cur?;
            // SAFETY: `_mem` keeps the list and its nodes alive.
            let rec = unsafe { node.key() }.rec();
            // SAFETY: see `ver`.
            if let Some(v) = unsafe { self.ver.as_ref() } {
                self.ver = if self.newest_only {
                    ptr::null_mut()
                } else {
                    v.next.load(Ordering::Acquire)
                };
                return Some(Ok(rec.entry(v)));
            }
            // SAFETY: as above.
            self.cur = unsafe { node.next() };
            unsafe { self.ahead.step() };
            if let Some(n) = self.cur {
                self.ver = unsafe { n.key() }.rec().newest.load(Ordering::Acquire);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn put(k: &str, seq: u64, v: &str) -> Entry {
        Entry::put(
            Bytes::copy_from_slice(k.as_bytes()),
            seq,
            Bytes::copy_from_slice(v.as_bytes()),
            0,
        )
    }

    #[test]
    fn iter_newest_yields_each_keys_newest_version_once() {
        let m = Arc::new(Memtable::new(None));
        let mut seq = 0;
        for round in 0..3u64 {
            for k in 0..500u64 {
                // Keys with 1, 2 or 3 versions; some newest versions are deletes.
                if k % 3 >= round {
                    seq += 1;
                    if (k + round) % 7 == 0 {
                        m.insert(Entry::delete(Bytes::from(format!("k{k:04}")), seq));
                    } else {
                        m.insert(put(&format!("k{k:04}"), seq, &format!("v{round}")));
                    }
                }
            }
        }
        let all: Vec<Entry> = m.iter(Bound::Unbounded).map(|r| r.unwrap()).collect();
        let want: Vec<Entry> =
            crate::engine::iter::NewestIter::new(all.into_iter().map(Ok), u64::MAX)
                .map(|r| r.unwrap())
                .collect();
        let got: Vec<Entry> = m.iter_newest().map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 500);
        assert_eq!(got, want);
        assert!(got.iter().any(|e| e.kind == Kind::Delete));
    }

    #[test]
    fn newest_version_at_snapshot() {
        let m = Memtable::new(None);
        m.insert(put("a", 1, "a1"));
        m.insert(put("a", 5, "a5"));
        m.insert(Entry::delete(Bytes::from_static(b"a"), 7));
        m.insert(put("b", 3, "b3"));
        assert_eq!(m.get(b"a", 10).map(|e| e.kind), Some(Kind::Delete));
        assert_eq!(m.get(b"a", 6).map(|e| e.value), Some(Bytes::from("a5")));
        assert_eq!(m.get(b"a", 4).map(|e| e.value), Some(Bytes::from("a1")));
        assert!(m.get(b"a", 0).is_none());
        assert!(m.get(b"ab", 10).is_none());
        assert_eq!(m.min_seqno(), 1);
        assert_eq!(m.max_seqno(), 7);
    }

    #[test]
    fn head_prefix_keeps_key_order() {
        // Keys around the 32-byte head: shorter, longer, zero bytes, shared prefixes.
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0xff; 17],
            vec![0; 32],
            vec![0; 33],
            vec![0xff; 33],
        ];
        let mut x = 7u64;
        for _ in 0..500 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 59) as usize + 10; // 10..=41
            let k: Vec<u8> = (0..len)
                .map(|i| [0u8, 1, b'a', 0xff][((x >> (i % 60)) & 3) as usize])
                .collect();
            keys.push(k);
        }
        let m = Arc::new(Memtable::new(None));
        for (i, k) in keys.iter().enumerate() {
            m.insert(Entry::put(
                Bytes::copy_from_slice(k),
                i as u64 + 1,
                Bytes::from_static(b"v"),
                0,
            ));
        }
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        let got: Vec<Vec<u8>> = m
            .iter(Bound::Unbounded)
            .map(|e| e.unwrap().key.to_vec())
            .collect::<Vec<_>>();
        let mut got_dedup = got.clone();
        got_dedup.dedup();
        assert_eq!(got_dedup, sorted);
        for k in &keys {
            assert_eq!(m.get(k, u64::MAX).map(|e| e.key.to_vec()), Some(k.clone()));
        }
        assert!(m.get(b"\x00key", u64::MAX).is_none());
    }

    #[test]
    fn iter_orders_and_bounds() {
        let m = Arc::new(Memtable::new(None));
        for (k, s) in [("b", 2), ("a", 1), ("b", 4), ("c", 3)] {
            m.insert(put(k, s, "v"));
        }
        let all: Vec<_> = m
            .iter(Bound::Unbounded)
            .map(|e| e.map(|e| (e.key, e.seqno)))
            .collect::<Result<_, _>>()
            .unwrap();
        let keys: Vec<(&[u8], u64)> = all.iter().map(|(k, s)| (k.as_ref(), *s)).collect();
        assert_eq!(keys, vec![(&b"a"[..], 1), (b"b", 4), (b"b", 2), (b"c", 3)]);
        let from_b: Vec<u64> = m
            .iter(Bound::Included(b"b"))
            .map(|e| e.unwrap().seqno)
            .collect();
        assert_eq!(from_b, vec![4, 2, 3]);
        let after_b: Vec<u64> = m
            .iter(Bound::Excluded(b"b"))
            .map(|e| e.unwrap().seqno)
            .collect();
        assert_eq!(after_b, vec![3]);
    }

    #[test]
    fn index_overflow_falls_back_to_the_skip_list() {
        // The smallest index (1024 slots) stops taking keys at 512: the rest are found through
        // the skip list, overwrites of both kinds of keys land in the right chain.
        let m = Arc::new(Memtable::with_budget(None, 0));
        for i in 0..3000u64 {
            m.insert(put(&format!("k{i:05}"), i + 1, "v1"));
        }
        assert!(m.index.full.load(Ordering::Relaxed));
        for i in (0..3000u64).step_by(7) {
            m.insert(put(&format!("k{i:05}"), 10_000 + i, "v2"));
        }
        for i in 0..3000u64 {
            let k = format!("k{i:05}");
            let want = if i % 7 == 0 { "v2" } else { "v1" };
            assert_eq!(m.get(k.as_bytes(), u64::MAX).unwrap().value, want, "{k}");
            assert_eq!(m.get(k.as_bytes(), i + 1).unwrap().value, "v1", "{k}");
            assert!(m.get(k.as_bytes(), i).is_none(), "{k}");
        }
        assert!(m.get(b"k99999", u64::MAX).is_none());
        assert_eq!(m.len(), 3000 + 3000usize.div_ceil(7));
        let n = m.iter(Bound::Unbounded).count();
        assert_eq!(n, m.len());
    }

    #[test]
    fn versions_out_of_order_and_same_seqno() {
        // Recovery may insert in any order; the chain stays newest first and a second entry
        // with the same (key, seqno) replaces the first, as a map would.
        let m = Arc::new(Memtable::new(None));
        for s in [5, 1, 9, 3, 7] {
            m.insert(put("a", s, &format!("a{s}")));
        }
        m.insert(put("a", 3, "a3-again"));
        let seqs: Vec<u64> = m.iter(Bound::Unbounded).map(|e| e.unwrap().seqno).collect();
        assert_eq!(seqs, vec![9, 7, 5, 3, 1]);
        assert_eq!(m.get(b"a", 4).unwrap().value, "a3-again");
        assert_eq!(m.get(b"a", 8).unwrap().value, "a7");
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn readers_see_every_published_version_and_nothing_newer() {
        // One writer inserts versions and publishes each seqno after linking it; readers take
        // the published seqno first, then must find each key's newest version at or below it.
        use std::sync::atomic::AtomicBool;
        const KEYS: u64 = 2000;
        let m = Arc::new(Memtable::with_budget(None, 64 << 10));
        let visible = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (m, visible, done) = (m.clone(), visible.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut x = r as u64 + 1;
                    let mut checked = 0u64;
                    while !done.load(Ordering::Acquire) || checked < 1000 {
                        let snap = visible.load(Ordering::Acquire);
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let k = (x >> 33) % KEYS;
                        // Seqno s writes key (s-1) % KEYS with value s.
                        let newest = (0..=snap).rev().find(|s| *s > 0 && (s - 1) % KEYS == k);
                        let got = m.get(format!("k{k}").as_bytes(), snap).map(|e| e.seqno);
                        assert_eq!(got, newest, "key {k} at snapshot {snap}");
                        checked += 1;
                    }
                })
            })
            .collect();
        for s in 1..=KEYS * 5 {
            m.insert(put(&format!("k{}", (s - 1) % KEYS), s, &s.to_string()));
            visible.store(s, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap();
        }
    }

    #[test]
    fn order_catches_up_with_keys_added_between_scans() {
        // Rounds of new keys of very different sizes between scans: few (inserted one by
        // one), many (merged into a rebuilt list), and past the index's capacity (linked at
        // once); every scan must list exactly the keys so far, in order, from any start.
        use std::collections::BTreeMap;
        let m = Arc::new(Memtable::with_budget(None, 64 << 10));
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut x = 99u64;
        let mut seq = 0;
        for round in [1usize, 3, 500, 2, 40, 2000, 7, 900, 1, 3000, 5] {
            for _ in 0..round {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = format!("k{:06}", (x >> 33) % 20_000).into_bytes();
                seq += 1;
                m.insert(put(std::str::from_utf8(&k).unwrap(), seq, "v"));
                model.insert(k, seq);
            }
            let got: Vec<(Vec<u8>, u64)> = m
                .iter(Bound::Unbounded)
                .map(|e| e.map(|e| (e.key.to_vec(), e.seqno)).unwrap())
                .filter(|(k, s)| model.get(k) == Some(s))
                .collect();
            let want: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, s)| (k.clone(), *s)).collect();
            assert_eq!(got, want, "after a round of {round}");
            let mid = b"k010000".as_slice();
            let from: Vec<Vec<u8>> = m
                .iter(Bound::Excluded(mid))
                .map(|e| e.unwrap().key.to_vec())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let want: Vec<Vec<u8>> = model
                .keys()
                .filter(|k| k.as_slice() > mid)
                .cloned()
                .collect();
            assert_eq!(from, want);
        }
        assert!(
            m.index.full.load(Ordering::Relaxed),
            "the test should overflow the index"
        );
    }

    #[test]
    fn scans_during_writes_see_every_key_of_their_snapshot() {
        // Readers take the published seqno, then scan: each key first written at or below it
        // must be there, in order, while the writer keeps adding keys.
        use std::sync::atomic::AtomicBool;
        let m = Arc::new(Memtable::with_budget(None, 1 << 20));
        let visible = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, visible, done) = (m.clone(), visible.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut scans = 0;
                    while !done.load(Ordering::Acquire) || scans < 5 {
                        let snap = visible.load(Ordering::Acquire);
                        let keys: Vec<u64> = m
                            .iter(Bound::Unbounded)
                            .map(|e| e.unwrap())
                            .filter(|e| e.seqno <= snap)
                            .map(|e| std::str::from_utf8(&e.key[1..]).unwrap().parse().unwrap())
                            .collect();
                        // Seqno s writes key number s * 7919 % 100_000 (all distinct here).
                        let mut want: Vec<u64> = (1..=snap).map(|s| s * 7919 % 100_000).collect();
                        want.sort_by_key(|k| format!("{k:06}"));
                        assert_eq!(keys, want, "snapshot {snap}");
                        scans += 1;
                    }
                })
            })
            .collect();
        for s in 1..=20_000u64 {
            m.insert(put(&format!("k{:06}", s * 7919 % 100_000), s, "v"));
            visible.store(s, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().unwrap();
        }
    }
}
