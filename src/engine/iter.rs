//! K-way merge of sorted entry sources, by (key ascending, seqno descending).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use bytes::Bytes;

use super::types::{Entry, SeqNo};
use super::Result;

pub type Source = Box<dyn Iterator<Item = Result<Entry>> + Send>;

struct Head {
    entry: Entry,
    src: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    // Max-heap, so the smallest (key, Reverse(seqno)) must compare greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        (&other.entry.key, Reverse(other.entry.seqno), other.src).cmp(&(
            &self.entry.key,
            Reverse(self.entry.seqno),
            self.src,
        ))
    }
}

/// Every entry of every source, merged. Errors are passed through once, then the merge ends.
pub struct MergeIter {
    sources: Vec<Source>,
    heap: BinaryHeap<Head>,
    failed: bool,
    started: bool,
}

impl MergeIter {
    pub fn new(sources: Vec<Source>) -> MergeIter {
        MergeIter {
            sources,
            heap: BinaryHeap::new(),
            failed: false,
            started: false,
        }
    }

    fn pull(&mut self, src: usize) -> Result<()> {
        if let Some(r) = self.sources[src].next() {
            self.heap.push(Head { entry: r?, src });
        }
        Ok(())
    }
}

impl Iterator for MergeIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        if self.failed {
            return None;
        }
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                if let Err(e) = self.pull(i) {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let head = self.heap.pop()?;
        if let Err(e) = self.pull(head.src) {
            self.failed = true;
            return Some(Err(e));
        }
        Some(Ok(head.entry))
    }
}

/// For each key, the newest version with seqno <= `snapshot` (tombstones included; the caller
/// decides what a tombstone or an expired entry means).
pub struct NewestIter<I> {
    inner: I,
    snapshot: SeqNo,
    last_key: Option<Bytes>,
}

impl<I: Iterator<Item = Result<Entry>>> NewestIter<I> {
    pub fn new(inner: I, snapshot: SeqNo) -> Self {
        NewestIter {
            inner,
            snapshot,
            last_key: None,
        }
    }
}

impl<I: Iterator<Item = Result<Entry>>> Iterator for NewestIter<I> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            let e = match self.inner.next()? {
                Ok(e) => e,
                Err(err) => return Some(Err(err)),
            };
            if e.seqno > self.snapshot || self.last_key.as_ref() == Some(&e.key) {
                continue;
            }
            self.last_key = Some(e.key.clone());
            return Some(Ok(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(v: Vec<(&'static str, u64)>) -> Source {
        Box::new(v.into_iter().map(|(k, s)| {
            Ok(Entry::put(
                Bytes::from_static(k.as_bytes()),
                s,
                Bytes::new(),
                0,
            ))
        }))
    }

    #[test]
    fn merges_by_key_then_seqno_desc() {
        let m = MergeIter::new(vec![
            src(vec![("a", 5), ("c", 9)]),
            src(vec![("a", 7), ("b", 1)]),
            src(vec![]),
        ]);
        let got: Vec<(Bytes, u64)> = m.map(|e| e.unwrap()).map(|e| (e.key, e.seqno)).collect();
        let want: Vec<(Bytes, u64)> = [("a", 7), ("a", 5), ("b", 1), ("c", 9)]
            .iter()
            .map(|(k, s)| (Bytes::from_static(k.as_bytes()), *s))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn newest_respects_snapshot() {
        let m = MergeIter::new(vec![src(vec![("a", 7), ("a", 5), ("b", 9)])]);
        let got: Vec<u64> = NewestIter::new(m, 6).map(|e| e.unwrap().seqno).collect();
        assert_eq!(got, vec![5]);
    }
}
