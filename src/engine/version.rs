//! A Version: the memtables and the live tables of every level at one moment. Readers hold an
//! `Arc<Version>`; it is only ever replaced as a whole (by `Blackboard::apply` or a memtable switch).

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::iter::Source;
use super::manifest::{Drop, TableMeta};
use super::memtable::Memtable;
use super::sstable::Table;
use super::storage::Storage;
use super::types::{Entry, Found, SeqNo};
use super::Result;

pub const NUM_LEVELS: usize = 7;

/// A live table and what the MANIFEST says of it. The file is removed when the last handle goes
/// after the table was made obsolete by a compaction, so no reader loses a file under it.
pub struct TableHandle {
    pub meta: TableMeta,
    pub table: Arc<Table>,
    obsolete: AtomicBool,
    storage: Arc<dyn Storage>,
    path: PathBuf,
}

impl TableHandle {
    pub fn new(
        meta: TableMeta,
        table: Arc<Table>,
        storage: Arc<dyn Storage>,
        path: PathBuf,
    ) -> Self {
        TableHandle {
            meta,
            table,
            obsolete: AtomicBool::new(false),
            storage,
            path,
        }
    }

    /// A handle on the same file at another level (trivial move). The old handle must not be
    /// marked obsolete: both name the same file.
    pub fn relevel(&self, level: u8) -> TableHandle {
        let mut meta = self.meta.clone();
        meta.level = level;
        TableHandle::new(
            meta,
            self.table.clone(),
            self.storage.clone(),
            self.path.clone(),
        )
    }

    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.meta.smallest.as_ref() <= key && key <= self.meta.largest.as_ref()
    }

    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.meta.smallest.as_ref() <= hi && lo <= self.meta.largest.as_ref()
    }
}

impl std::ops::Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::SeqCst) {
            // A failure leaves an orphan that the next open removes.
            if let Err(e) = self.storage.remove(&self.path) {
                tracing::warn!(file = %self.path.display(), error = %e, "could not remove obsolete table");
            }
        }
    }
}

#[derive(Clone)]
pub struct Version {
    pub mem: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub imms: Vec<Arc<Memtable>>,
    /// L0 newest first (tables may overlap); L1.. sorted by smallest key, disjoint.
    pub levels: Vec<Vec<Arc<TableHandle>>>,
    pub drops: Arc<Vec<Drop>>,
}

impl Version {
    pub fn new(mem: Arc<Memtable>) -> Version {
        Version {
            mem,
            imms: Vec::new(),
            levels: vec![Vec::new(); NUM_LEVELS],
            drops: Arc::new(Vec::new()),
        }
    }

    /// The newest seqno of a prefix drop that covers `key`, if any.
    pub fn drop_seqno(&self, key: &[u8]) -> Option<SeqNo> {
        self.drops
            .iter()
            .filter(|d| key.starts_with(&d.prefix))
            .map(|d| d.seqno)
            .max()
    }

    /// True when a drop hides this version of its key.
    pub fn is_dropped(&self, e: &Entry) -> bool {
        self.is_dropped_at(&e.key, e.seqno)
    }

    /// True when a drop hides the version `seqno` of `key`.
    pub fn is_dropped_at(&self, key: &[u8], seqno: SeqNo) -> bool {
        // Most versions have no drops at all: skip the prefix walk.
        !self.drops.is_empty() && self.drop_seqno(key).is_some_and(|s| s > seqno)
    }

    /// The newest version of `key` with seqno <= `snapshot`, tombstones included, before drops.
    pub fn lookup(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Found>> {
        // One hash for the memtable indexes and every table's filter.
        let hash = crate::engine::sstable::key_hash(key);
        if let Some(e) = self.mem.get_hashed(key, hash, snapshot) {
            return Ok(Some(e));
        }
        for m in &self.imms {
            if let Some(e) = m.get_hashed(key, hash, snapshot) {
                return Ok(Some(e));
            }
        }
        for t in &self.levels[0] {
            if t.contains(key) {
                if let Some(e) = t.table.get_hashed(key, hash, snapshot)? {
                    return Ok(Some(e));
                }
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.meta.largest.as_ref() < key);
            if let Some(t) = level.get(i) {
                if t.contains(key) {
                    if let Some(e) = t.table.get_hashed(key, hash, snapshot)? {
                        return Ok(Some(e));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Sorted sources of everything from `start` on, newest source first.
    pub fn sources(&self, start: Bound<&[u8]>) -> Vec<Source> {
        let mut out: Vec<Source> = Vec::new();
        out.push(Box::new(self.mem.iter(start)));
        for m in &self.imms {
            out.push(Box::new(m.iter(start)));
        }
        for t in &self.levels[0] {
            out.push(Box::new(t.table.iter(start)));
        }
        for level in &self.levels[1..] {
            if !level.is_empty() {
                out.push(Box::new(LevelIter::new(level.clone(), start)));
            }
        }
        out
    }

    pub fn l0_count(&self) -> usize {
        self.levels[0].len()
    }
}

/// Concatenates the disjoint, sorted tables of one level, opening each only when reached.
struct LevelIter {
    tables: Vec<Arc<TableHandle>>,
    next_table: usize,
    cur: Option<super::sstable::TableIter>,
    start: Bound<Bytes>,
}

impl LevelIter {
    fn new(tables: Vec<Arc<TableHandle>>, start: Bound<&[u8]>) -> LevelIter {
        let first = match start {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => {
                tables.partition_point(|t| t.meta.largest.as_ref() < k)
            }
        };
        LevelIter {
            tables,
            next_table: first,
            cur: None,
            start: match start {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
                Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
            },
        }
    }
}

impl Iterator for LevelIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(it) = &mut self.cur {
                if let Some(r) = it.next() {
                    return Some(r);
                }
            }
            let t = self.tables.get(self.next_table)?.clone();
            self.next_table += 1;
            let start = match &self.start {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(k) => Bound::Included(k.as_ref()),
                Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
            };
            self.cur = Some(t.table.iter(start));
        }
    }
}
