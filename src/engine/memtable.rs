//! The sorted in-memory table: a lock-free skip list keyed by (user key, seqno descending), so
//! readers run concurrently with the ingest agent and the newest version of a key comes first.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

use super::types::{Entry, Kind, SeqNo};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct InternalKey {
    /// The key's first 16 bytes, zero-padded, big-endian: ordered like the key itself (a
    /// monotone function of it), so most comparisons of a skip-list search end here without
    /// following the pointer to the key's bytes (a cache miss per comparison otherwise).
    /// Declared first: the derived order compares it first.
    head: u128,
    key: Bytes,
    seqno: Reverse<SeqNo>,
}

fn head_of(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

impl InternalKey {
    fn new(key: Bytes, seqno: SeqNo) -> InternalKey {
        InternalKey {
            head: head_of(&key),
            key,
            seqno: Reverse(seqno),
        }
    }
}

/// A (key, seqno) comparable with the stored [`InternalKey`]s without owning the key: point
/// lookups probe the skip list with a borrowed key instead of copying it into a `Bytes`.
trait KeyView {
    fn parts(&self) -> (u128, &[u8], Reverse<SeqNo>);
}

impl KeyView for InternalKey {
    fn parts(&self) -> (u128, &[u8], Reverse<SeqNo>) {
        (self.head, &self.key, self.seqno)
    }
}

struct Probe<'a> {
    head: u128,
    key: &'a [u8],
    seqno: Reverse<SeqNo>,
}

impl KeyView for Probe<'_> {
    fn parts(&self) -> (u128, &[u8], Reverse<SeqNo>) {
        (self.head, self.key, self.seqno)
    }
}

// Same order as InternalKey's derived Ord (head, key bytes, then seqno descending), as
// Borrow requires.
impl<'a> Borrow<dyn KeyView + 'a> for InternalKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

#[derive(Debug, Clone)]
struct Slot {
    kind: Kind,
    type_tag: u8,
    expire_at: u64,
    value: Bytes,
}

pub struct Memtable {
    map: SkipMap<InternalKey, Slot>,
    bytes: AtomicUsize,
    /// Smallest seqno held (u64::MAX when empty): lets a prefix drop be forgotten once no
    /// memtable or table holds anything older than it.
    min_seqno: AtomicU64,
    max_seqno: AtomicU64,
    /// WAL segments whose records this memtable holds; deleted once it is flushed.
    wal_numbers: parking_lot::Mutex<Vec<u64>>,
}

impl Memtable {
    pub fn new(wal_number: Option<u64>) -> Memtable {
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            min_seqno: AtomicU64::new(u64::MAX),
            max_seqno: AtomicU64::new(0),
            wal_numbers: parking_lot::Mutex::new(wal_number.into_iter().collect()),
        }
    }

    /// Only the ingest agent (or recovery) inserts.
    pub fn insert(&self, e: Entry) {
        self.bytes.fetch_add(e.approx_size(), Ordering::Relaxed);
        self.min_seqno.fetch_min(e.seqno, Ordering::Relaxed);
        self.max_seqno.fetch_max(e.seqno, Ordering::Relaxed);
        self.map.insert(
            InternalKey::new(e.key, e.seqno),
            Slot {
                kind: e.kind,
                type_tag: e.type_tag,
                expire_at: e.expire_at,
                value: e.value,
            },
        );
    }

    /// Newest version of `key` with seqno <= `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: SeqNo) -> Option<Entry> {
        let probe = Probe {
            head: head_of(key),
            key,
            seqno: Reverse(snapshot),
        };
        let e = self
            .map
            .lower_bound(Bound::Included(&probe as &dyn KeyView))?;
        (e.key().key.as_ref() == key).then(|| to_entry(e.key(), e.value()))
    }

    pub fn approx_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
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

    /// Entries from the first whose key >= `start` (or > for Excluded), in (key, seqno desc) order.
    pub fn iter(self: &std::sync::Arc<Self>, start: Bound<&[u8]>) -> MemIter {
        let pos = match start {
            Bound::Unbounded => Pos::Start,
            Bound::Included(k) => Pos::From(InternalKey::new(Bytes::copy_from_slice(k), u64::MAX)),
            // After every version of k: (k, seqno 0) is the last possible one.
            Bound::Excluded(k) => Pos::After(InternalKey::new(Bytes::copy_from_slice(k), 0)),
        };
        MemIter {
            mem: self.clone(),
            pos,
        }
    }
}

fn to_entry(k: &InternalKey, s: &Slot) -> Entry {
    Entry {
        key: k.key.clone(),
        seqno: k.seqno.0,
        kind: s.kind,
        type_tag: s.type_tag,
        expire_at: s.expire_at,
        value: s.value.clone(),
    }
}

enum Pos {
    Start,
    From(InternalKey),
    After(InternalKey),
    Done,
}

/// An owning cursor over a memtable: each step is one O(log n) search from the last key, so it
/// needs no borrow of the skip list and stays valid while the ingest agent inserts.
pub struct MemIter {
    mem: std::sync::Arc<Memtable>,
    pos: Pos,
}

impl Iterator for MemIter {
    type Item = super::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        let found = match &self.pos {
            Pos::Start => self.mem.map.front(),
            Pos::From(k) => self.mem.map.lower_bound(Bound::Included(k)),
            Pos::After(k) => self.mem.map.lower_bound(Bound::Excluded(k)),
            Pos::Done => None,
        };
        match found {
            Some(e) => {
                let out = to_entry(e.key(), e.value());
                self.pos = Pos::After(e.key().clone());
                Some(Ok(out))
            }
            None => {
                self.pos = Pos::Done;
                None
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
        // Keys around the 16-byte head: shorter, longer, zero bytes, shared prefixes.
        let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![0xff; 17]];
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
}
