//! Data blocks: entries with prefix-compressed keys, and restart points (entries stored with
//! their full key) so a seek binary-searches the restarts and then decodes only a few entries.

use std::cmp::Ordering;
use std::ops::Range;

use bytes::Bytes;

use super::format::{cmp_internal, put_varint, Bad, Decoder};
use crate::engine::types::{Entry, Found, Kind};

/// Entries between restart points: bounds the linear part of a seek.
pub const RESTART_INTERVAL: usize = 16;

#[derive(Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    last_seqno: u64,
    count: usize,
}

impl BlockBuilder {
    /// The caller guarantees order; the builder only encodes.
    pub fn add(&mut self, e: &Entry) {
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            // Invariant: the writer cuts a block as soon as it reaches block_size, which it
            // clamps far below 4 GiB, so every entry starts at an offset that fits in u32.
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            self.last_key
                .iter()
                .zip(e.key.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let b = &mut self.buf;
        put_varint(b, shared as u64);
        put_varint(b, (e.key.len() - shared) as u64);
        put_varint(b, e.value.len() as u64);
        put_varint(b, e.seqno);
        b.push(e.kind as u8);
        b.push(e.type_tag);
        put_varint(b, e.expire_at);
        b.extend_from_slice(&e.key[shared..]);
        b.extend_from_slice(&e.value);
        self.last_key.clear();
        self.last_key.extend_from_slice(&e.key);
        self.last_seqno = e.seqno;
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the payload [`Self::finish`] would return.
    pub fn size_estimate(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    pub fn last_seqno(&self) -> u64 {
        self.last_seqno
    }

    /// Returns the block payload (without crc) and resets the builder.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts.clear();
        self.last_key.clear();
        self.count = 0;
        out
    }
}

/// A checksum-verified block payload whose trailer has been validated.
#[derive(Clone)]
pub struct Block {
    data: Bytes,
    /// Entries occupy `data[..entries_end]`; the restart array follows.
    entries_end: u32,
    num_restarts: u32,
    /// Restart offsets 1..=[`HEAD_RESTARTS`] (the first is always 0; a 4 KiB block of
    /// ~130-byte entries has two or three), kept beside the block's handle: a point read finds
    /// them in the cache slot it already loaded instead of waiting for the line at the
    /// block's end. The handle stays 48 bytes, so it fits one cache line with its slot's key and flag.
    heads: [u32; HEAD_RESTARTS],
}

const HEAD_RESTARTS: usize = 2;

impl Block {
    /// The same block over its own copy of the bytes (for caching: a slice of a table's
    /// memory map would keep the whole mapping alive).
    pub fn detached(&self) -> Block {
        Block {
            data: Bytes::copy_from_slice(&self.data),
            entries_end: self.entries_end,
            num_restarts: self.num_restarts,
            heads: self.heads,
        }
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        self.data.len()
    }

    pub fn parse(data: Bytes) -> Result<Block, Bad> {
        let len = data.len();
        if len < 4 {
            return Err(Bad {
                at: 0,
                reason: "block too short",
            });
        }
        let n = Decoder::at(&data, len - 4).u32()? as usize;
        let entries_end = n
            .checked_mul(4)
            .and_then(|b| (len - 4).checked_sub(b))
            .ok_or(Bad {
                at: len - 4,
                reason: "restart count larger than the block",
            })?;
        if n == 0 {
            return Err(Bad {
                at: len - 4,
                reason: "block without entries",
            });
        }
        // Validated once here so a seek can trust them: first is 0, strictly ascending, in range.
        let mut d = Decoder::at(&data, entries_end);
        let mut prev: Option<usize> = None;
        let mut heads = [0u32; HEAD_RESTARTS];
        for i in 0..n {
            let at = d.pos();
            let r32 = d.u32()?;
            if let Some(h) = i.checked_sub(1).and_then(|j| heads.get_mut(j)) {
                *h = r32;
            }
            let r = r32 as usize;
            let ok = match prev {
                None => r == 0,
                Some(p) => r > p,
            } && r < entries_end;
            if !ok {
                return Err(Bad {
                    at,
                    reason: "bad restart point",
                });
            }
            prev = Some(r);
        }
        // Blocks are written at most a few MiB long; a damaged handle may claim more.
        let small = |v: usize| {
            u32::try_from(v).map_err(|_| Bad {
                at: 0,
                reason: "block larger than 4 GiB",
            })
        };
        Ok(Block {
            entries_end: small(entries_end)?,
            num_restarts: small(n)?,
            data,
            heads,
        })
    }

    fn entries_end(&self) -> usize {
        self.entries_end as usize
    }

    fn num_restarts(&self) -> usize {
        self.num_restarts as usize
    }

    fn restart(&self, i: usize) -> Result<usize, Bad> {
        match i {
            // Validated by `parse`.
            0 => Ok(0),
            _ if i <= HEAD_RESTARTS && i < self.num_restarts() => Ok(self.heads[i - 1] as usize),
            _ => Ok(Decoder::at(&self.data, self.entries_end() + 4 * i).u32()? as usize),
        }
    }

    pub fn iter(self) -> BlockIter {
        BlockIter {
            block: self,
            pos: 0,
            key: Vec::new(),
            pending: None,
        }
    }
}

/// An entry whose key is held by the caller's key buffer.
struct Raw {
    seqno: u64,
    kind: Kind,
    type_tag: u8,
    expire_at: u64,
    value: Range<usize>,
}

/// An entry's header: its key is `shared` bytes of the previous key, then `suffix`.
struct Head {
    shared: usize,
    suffix: Range<usize>,
    raw: Raw,
    next: usize,
}

/// Decodes the entry at `pos` of `entries` without touching any key buffer.
fn decode_head(entries: &[u8], pos: usize) -> Result<Head, Bad> {
    let mut d = Decoder::at(entries, pos);
    // Checked against the previous key by the caller (too large to be a length is too large).
    let shared = usize::try_from(d.varint()?).unwrap_or(usize::MAX);
    let unshared = d.length()?;
    let value_len = d.length()?;
    let seqno = d.varint()?;
    let kind_at = d.pos();
    let kind = Kind::from_u8(d.u8()?).ok_or(Bad {
        at: kind_at,
        reason: "unknown entry kind",
    })?;
    let type_tag = d.u8()?;
    let expire_at = d.varint()?;
    let kstart = d.pos();
    d.bytes(unshared)?;
    let vstart = d.pos();
    d.bytes(value_len)?;
    Ok(Head {
        shared,
        suffix: kstart..vstart,
        raw: Raw {
            seqno,
            kind,
            type_tag,
            expire_at,
            value: vstart..vstart + value_len,
        },
        next: d.pos(),
    })
}

/// Decodes the entry at `pos` of `entries`, rebuilding its key in `key` (which must hold the
/// previous key, or be empty at a restart point). Returns the entry and the next position.
fn decode_entry(entries: &[u8], pos: usize, key: &mut Vec<u8>) -> Result<(Raw, usize), Bad> {
    let h = decode_head(entries, pos)?;
    if h.shared > key.len() {
        return Err(Bad {
            at: pos,
            reason: "shared key prefix longer than the previous key",
        });
    }
    key.truncate(h.shared);
    key.extend_from_slice(&entries[h.suffix]);
    Ok((h.raw, h.next))
}

/// The whole key and seqno of the entry at restart point `pos` (stored without a shared
/// prefix), as a slice of the block: a binary search compares it in place.
fn restart_key(entries: &[u8], pos: usize) -> Result<(&[u8], u64), Bad> {
    let h = decode_head(entries, pos)?;
    if h.shared != 0 {
        return Err(Bad {
            at: pos,
            reason: "shared key prefix longer than the previous key",
        });
    }
    Ok((&entries[h.suffix], h.raw.seqno))
}

impl Block {
    /// The first entry at or after (key, seqno) in table order, if it is a version of `key`:
    /// the newest version with seqno <= `seqno` when this block holds it.
    pub fn get(&self, key: &[u8], seqno: u64) -> Result<Option<Found>, Bad> {
        let entries = &self.data[..self.entries_end()];
        // The search below reads these restart entries one after another: ask for them all
        // at once.
        crate::engine::prefetch(entries.as_ptr());
        for &r in &self.heads[..(self.num_restarts() - 1).min(HEAD_RESTARTS)] {
            crate::engine::prefetch(entries.as_ptr().wrapping_add(r as usize));
        }
        let (mut lo, mut hi) = (0, self.num_restarts());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (k, s) = restart_key(entries, self.restart(mid)?)?;
            if cmp_internal(k, s, key, seqno) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // `lo` restarts begin below the target; the answer is after the last of them.
        // The scan never rebuilds a key: it keeps how many leading bytes the previous entry's
        // key has in common with `key` (`matched`) while that entry sorted below the target.
        // An entry sharing more than `matched` bytes with its predecessor has the same byte
        // as it at position `matched`, which is below `key`'s, so it sorts below too;
        // otherwise its first `shared` bytes are `key`'s, and its suffix alone is compared
        // with the rest of `key`.
        let mut pos = self.restart(lo.saturating_sub(1))?;
        // Each entry's position comes from decoding the one before, so the scan would wait
        // for one cache miss after another; asking for the interval's lines (up to the next
        // restart, whose entry may be the answer) first keeps them in flight together.
        let end = if lo < self.num_restarts() {
            self.restart(lo)?.saturating_add(64)
        } else {
            self.entries_end()
        };
        let end = end.min(self.entries_end());
        let base = entries.as_ptr() as usize;
        let mut line = (base + pos) & !63;
        while line < base + end {
            crate::engine::prefetch(line as *const u8);
            line += 64;
        }
        let (mut matched, mut prev_len) = (0usize, 0usize);
        while pos < self.entries_end() {
            let h = decode_head(entries, pos)?;
            if h.shared > prev_len {
                return Err(Bad {
                    at: pos,
                    reason: "shared key prefix longer than the previous key",
                });
            }
            prev_len = h.shared + h.suffix.len();
            if h.shared <= matched {
                let suffix = &entries[h.suffix];
                // `matched` never exceeds `key.len()`.
                let rest = &key[h.shared..];
                let same = suffix.iter().zip(rest).take_while(|(a, b)| a == b).count();
                matched = h.shared + same;
                match suffix.get(same).cmp(&rest.get(same)) {
                    // A longer key, or a larger byte: past `key`, which is absent.
                    Ordering::Greater => return Ok(None),
                    Ordering::Equal if h.raw.seqno <= seqno => {
                        let raw = h.raw;
                        return Ok(Some(Found {
                            seqno: raw.seqno,
                            kind: raw.kind,
                            type_tag: raw.type_tag,
                            expire_at: raw.expire_at,
                            // Copied: see `BlockIter::materialize`.
                            value: Bytes::copy_from_slice(&self.data[raw.value]),
                        }));
                    }
                    // A smaller key, or a version newer than the snapshot.
                    _ => {}
                }
            }
            pos = h.next;
        }
        Ok(None)
    }
}

/// Walks a block in order. After an error its state is undefined; callers stop using it.
pub struct BlockIter {
    block: Block,
    pos: usize,
    key: Vec<u8>,
    /// The entry a seek landed on, returned by the next call to [`Self::next_entry`].
    pending: Option<Entry>,
}

impl BlockIter {
    fn step(&mut self) -> Result<Option<Raw>, Bad> {
        if self.pos >= self.block.entries_end() {
            return Ok(None);
        }
        let entries = &self.block.data[..self.block.entries_end()];
        let (raw, next) = decode_entry(entries, self.pos, &mut self.key)?;
        self.pos = next;
        Ok(Some(raw))
    }

    fn materialize(&self, raw: Raw) -> Entry {
        Entry {
            key: Bytes::copy_from_slice(&self.key),
            seqno: raw.seqno,
            kind: raw.kind,
            type_tag: raw.type_tag,
            expire_at: raw.expire_at,
            // Copied, not sliced from the map: a value kept long (e.g. in a cache) must not pin
            // the map of a table that compaction has deleted. The range was bounds-checked
            // by the decoder.
            value: Bytes::copy_from_slice(&self.block.data[raw.value]),
        }
    }

    /// Positions at the first entry >= (key, seqno) in table order (key asc, seqno desc).
    pub fn seek(&mut self, key: &[u8], seqno: u64) -> Result<(), Bad> {
        let entries = &self.block.data[..self.block.entries_end()];
        let mut scratch = Vec::new();
        let (mut lo, mut hi) = (0, self.block.num_restarts());
        while lo < hi {
            let mid = (lo + hi) / 2;
            scratch.clear();
            let (raw, _) = decode_entry(entries, self.block.restart(mid)?, &mut scratch)?;
            if cmp_internal(&scratch, raw.seqno, key, seqno) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // `lo` restarts begin below the target; the answer is after the last of them.
        self.pos = self.block.restart(lo.saturating_sub(1))?;
        self.key.clear();
        self.pending = None;
        while let Some(raw) = self.step()? {
            if cmp_internal(&self.key, raw.seqno, key, seqno) != Ordering::Less {
                self.pending = Some(self.materialize(raw));
                break;
            }
        }
        Ok(())
    }

    pub fn next_entry(&mut self) -> Result<Option<Entry>, Bad> {
        if let Some(e) = self.pending.take() {
            return Ok(Some(e));
        }
        Ok(self.step()?.map(|raw| self.materialize(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let mut v = Vec::new();
        for k in 0..100u32 {
            let key = Bytes::from(format!("key{:05}", k * 2));
            for s in (1..=3u64).rev() {
                let seq = u64::from(k) * 10 + s;
                if s == 2 {
                    v.push(Entry::delete(key.clone(), seq));
                } else {
                    v.push(Entry::put(
                        key.clone(),
                        seq,
                        Bytes::from(vec![k as u8; s as usize]),
                        s,
                    ));
                }
            }
        }
        v
    }

    fn build(es: &[Entry]) -> Block {
        let mut b = BlockBuilder::default();
        for e in es {
            b.add(e);
        }
        let payload = b.finish();
        assert!(b.is_empty());
        Block::parse(Bytes::from(payload)).unwrap()
    }

    #[test]
    fn roundtrip_and_seek() {
        let es = entries();
        let block = build(&es);
        let mut it = block.clone().iter();
        for e in &es {
            assert_eq!(it.next_entry().unwrap().as_ref(), Some(e));
        }
        assert!(it.next_entry().unwrap().is_none());

        // Seek to every entry, to positions between entries, and past the end.
        for (i, e) in es.iter().enumerate() {
            let mut it = block.clone().iter();
            it.seek(&e.key, e.seqno).unwrap();
            assert_eq!(it.next_entry().unwrap().as_ref(), Some(e));
            let mut it = block.clone().iter();
            it.seek(&e.key, u64::MAX).unwrap();
            let first = es.iter().position(|x| x.key == e.key).unwrap();
            assert_eq!(it.next_entry().unwrap().as_ref(), Some(&es[first]));
            let mut it = block.clone().iter();
            // Between key00002 and key00004 lies key00003: lands on the next key's newest.
            let mut k = e.key.to_vec();
            k.push(0);
            it.seek(&k, u64::MAX).unwrap();
            let next = es[i..].iter().find(|x| x.key.as_ref() > k.as_slice());
            assert_eq!(it.next_entry().unwrap().as_ref(), next);
        }
        let mut it = block.iter();
        it.seek(b"zzz", 0).unwrap();
        assert!(it.next_entry().unwrap().is_none());
    }

    #[test]
    fn bad_trailers_are_refused() {
        assert!(Block::parse(Bytes::from_static(b"ab")).is_err());
        assert!(Block::parse(Bytes::from_static(&[0, 0, 0, 0])).is_err());
        assert!(Block::parse(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])).is_err());
        // A restart pointing past the entries.
        assert!(Block::parse(Bytes::from_static(&[1, 9, 0, 0, 0, 1, 0, 0, 0])).is_err());
    }
}
