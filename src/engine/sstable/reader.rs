//! Reads a table through a memory map. Opening verifies everything except the data blocks;
//! each data block's checksum is verified when the block is read.

use std::cmp::Ordering;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::block::{Block, BlockIter};
use super::bloom;
use super::format::{
    cmp_internal, decode_index, BlockHandle, Decoder, Footer, IndexEntry, TableProps, CRC_LEN,
    FOOTER_LEN,
};
use super::CachedBlock;
use crate::engine::cache::{BlockCache, SlotHint};
use crate::engine::counter::Counter;
use crate::engine::error::{Error, Result};
use crate::engine::storage::Storage;
use crate::engine::types::{Entry, Found};

/// Lets the whole mapped file be a `Bytes`, so blocks are cheap zero-copy slices of it.
struct MapOwner(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Read counters of one table (relaxed; for stats only).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Data blocks read and checksummed (by get and iter).
    pub blocks_read: u64,
    /// Bloom filter lookups (get and may_contain).
    pub bloom_checks: u64,
    /// Lookups the filter answered "absent" without reading a block.
    pub bloom_negatives: u64,
}

/// An open, immutable table. Shared as `Arc<Table>`.
pub struct Table {
    id: u64,
    path: PathBuf,
    data: Bytes,
    props: TableProps,
    index: Vec<IndexEntry>,
    /// Search keys of the index, one per entry, for point lookups: see [`IndexHeads`].
    heads: IndexHeads,
    filter: Bytes,
    blocks_read: Counter,
    bloom_checks: Counter,
    bloom_negatives: Counter,
    cache: Option<Arc<BlockCache>>,
    /// Per data block, where the cache last held it (see [`SlotHint`]).
    cache_hints: Box<[SlotHint]>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("props", &self.props)
            .finish_non_exhaustive()
    }
}

/// Eight bytes of every index key, taken after the prefix all of a table's index keys share,
/// big-endian and zero-padded, in one array. A point lookup binary-searches these (a few
/// cache lines, 8 bytes per block) and compares whole keys only where the eight bytes are
/// equal, instead of following each probed entry to its key bytes elsewhere in memory.
///
/// Keys that share the prefix order like their windows: `window(a) < window(b)` implies
/// `a < b` (a zero pad sorts like the end of a shorter key), so a differing window settles
/// a comparison and an equal one defers to the full compare.
struct IndexHeads {
    prefix: Bytes,
    heads: Vec<u64>,
}

fn window(key: &[u8], skip: usize) -> u64 {
    let mut b = [0u8; 8];
    let rest = key.get(skip..).unwrap_or(&[]);
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(b)
}

impl IndexHeads {
    fn new(index: &[IndexEntry]) -> IndexHeads {
        // Index keys ascend, so the first and last share the prefix all of them share.
        let prefix = match (index.first(), index.last()) {
            (Some(f), Some(l)) => {
                let n = f
                    .last_key
                    .iter()
                    .zip(l.last_key.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                f.last_key.slice(..n)
            }
            _ => Bytes::new(),
        };
        let heads = index
            .iter()
            .map(|ie| window(&ie.last_key, prefix.len()))
            .collect();
        IndexHeads { prefix, heads }
    }

    /// The first index entry for which `before(i)` is false (`before` must be true for a
    /// prefix of the entries and false after, as for `slice::partition_point`). `before(i)`
    /// must mean "entry i's key sorts before `key`" up to ties on equal keys.
    fn partition_point(&self, key: &[u8], before: impl Fn(usize) -> bool) -> usize {
        let n = self.heads.len();
        if !key.starts_with(&self.prefix) {
            // All index keys start with the prefix; `key` does not, so it is below all of
            // them or above all of them. One comparison says which.
            return if n > 0 && before(0) { n } else { 0 };
        }
        let kh = window(key, self.prefix.len());
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let less = match self.heads[mid].cmp(&kh) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => before(mid),
            };
            if less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Verifies the block at `h` against its crc and returns its payload.
fn read_block(data: &Bytes, path: &Path, h: BlockHandle, what: &str) -> Result<Bytes> {
    let bad = |reason: &str| Error::corruption(path, h.offset, format!("{what}: {reason}"));
    let end = h
        .end()
        .filter(|&e| e <= data.len() as u64)
        .ok_or_else(|| bad("block runs past the end of the file"))?;
    // Both fit in usize: they are at most data.len().
    let (start, crc_at) = (h.offset as usize, (end as usize) - CRC_LEN);
    let payload = &data[start..crc_at];
    let stored = Decoder::at(data, crc_at)
        .u32()
        .map_err(|b| b.at_file(path, 0, what))?;
    if crc32fast::hash(payload) != stored {
        return Err(Error::corruption(
            path,
            crc_at as u64,
            format!("{what}: checksum mismatch"),
        ));
    }
    Ok(data.slice(start..crc_at))
}

impl Table {
    pub fn open(storage: &dyn Storage, path: &Path, id: u64) -> Result<Table> {
        Self::open_cached(storage, path, id, None)
    }

    /// Opens a table whose data blocks go through `cache` (table ids must be unique among
    /// the tables sharing a cache: the cache key is (id, block number)).
    pub fn open_cached(
        storage: &dyn Storage,
        path: &Path,
        id: u64,
        cache: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let map = storage
            .map(path)
            .map_err(|e| Error::io(format!("map table {}", path.display()), e))?;
        let data = Bytes::from_owner(MapOwner(map));
        let len = data.len();
        let Some(footer_at) = len.checked_sub(FOOTER_LEN) else {
            return Err(Error::corruption(
                path,
                0,
                "file shorter than a table footer",
            ));
        };
        let footer = Footer::decode(&data[footer_at..])
            .map_err(|b| b.at_file(path, footer_at as u64, "footer"))?;

        // Layout: data blocks, filter, index, properties, footer, each directly after the last.
        let meta_at = footer.filter.offset;
        let mut expect = meta_at;
        for (h, what) in [
            (footer.filter, "filter"),
            (footer.index, "index"),
            (footer.props, "properties"),
        ] {
            if h.offset != expect {
                return Err(Error::corruption(
                    path,
                    footer_at as u64,
                    format!("footer: {what} block misplaced"),
                ));
            }
            expect = h.end().filter(|&e| e <= footer_at as u64).ok_or_else(|| {
                Error::corruption(
                    path,
                    footer_at as u64,
                    format!("footer: {what} block out of range"),
                )
            })?;
        }
        if expect != footer_at as u64 {
            return Err(Error::corruption(
                path,
                footer_at as u64,
                "footer: gap before the footer",
            ));
        }

        let raw = read_block(&data, path, footer.props, "properties")?;
        let props = TableProps::decode(&raw)
            .map_err(|b| b.at_file(path, footer.props.offset, "properties"))?;
        if props.file_size != len as u64 {
            return Err(Error::corruption(
                path,
                footer.props.offset,
                format!(
                    "properties: file size {} but the file has {len} bytes",
                    props.file_size
                ),
            ));
        }

        let raw = read_block(&data, path, footer.index, "index")?;
        let index = decode_index(&raw, meta_at)
            .map_err(|b| b.at_file(path, footer.index.offset, "index"))?;
        let consistent = match index.last() {
            None => props.entries == 0,
            Some(last) => props.entries > 0 && last.last_key == props.largest_key,
        };
        if !consistent {
            return Err(Error::corruption(
                path,
                footer.index.offset,
                "index does not match the properties",
            ));
        }

        let filter = read_block(&data, path, footer.filter, "filter")?;
        bloom::validate(&filter)
            .map_err(|r| Error::corruption(path, footer.filter.offset, format!("filter: {r}")))?;

        Ok(Table {
            id,
            path: path.to_path_buf(),
            data,
            props,
            heads: IndexHeads::new(&index),
            cache_hints: index.iter().map(|_| SlotHint::new(0)).collect(),
            index,
            filter,
            blocks_read: Counter::default(),
            bloom_checks: Counter::default(),
            bloom_negatives: Counter::default(),
            cache,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn props(&self) -> &TableProps {
        &self.props
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            blocks_read: self.blocks_read.load(Relaxed),
            bloom_checks: self.bloom_checks.load(Relaxed),
            bloom_negatives: self.bloom_negatives.load(Relaxed),
        }
    }

    /// Number of data blocks (block numbers for [`Self::read_data_block`] are `0..n`).
    pub fn data_blocks(&self) -> usize {
        self.index.len()
    }

    /// Block `i` for an iterator: from the cache if it is there; read from the file otherwise
    /// and, with `fill_cache`, kept in the cache. (Point lookups search a cached block in
    /// place instead: [`Table::get_hashed`].)
    fn read_data_block(&self, i: usize, fill_cache: bool) -> Result<BlockIter> {
        if let Some(c) = &self.cache {
            if let Some(CachedBlock(b)) = c.get(self.id, i as u32, self.cache_hints.get(i)) {
                return Ok(b.iter());
            }
        }
        self.load_block(i, fill_cache).map(Block::iter)
    }

    /// Block `i` read from the file (crc checked) and, with `fill_cache`, put in the cache.
    fn load_block(&self, i: usize, fill_cache: bool) -> Result<Block> {
        let Some(ie) = self.index.get(i) else {
            return Err(Error::corruption(
                &self.path,
                0,
                "data block number out of range",
            ));
        };
        self.blocks_read.fetch_add(1, Relaxed);
        let raw = read_block(&self.data, &self.path, ie.handle, "data block")?;
        let block = Block::parse(raw).map_err(|b| self.block_error(i, b))?;
        if let Some(c) = self.cache.as_ref().filter(|_| fill_cache) {
            // Block numbers fit in u32: a table with 2^32 blocks would be terabytes.
            c.insert(
                self.id,
                i as u32,
                self.cache_hints.get(i),
                CachedBlock(block.detached()),
            );
        }
        Ok(block)
    }

    /// Drops this table's blocks from the block cache (the table has left the LSM tree).
    /// Only blocks this table ever cached have a hint, so the others cost nothing.
    pub fn forget_cached(&self) {
        let Some(c) = &self.cache else { return };
        for (i, h) in self.cache_hints.iter().enumerate() {
            if h.load(Relaxed) != 0 {
                c.remove(self.id, i as u32, Some(h));
            }
        }
    }

    /// Reads this table's data blocks into the block cache's free space, in key order, without
    /// evicting anything; stops when `stop` says so. Returns how many blocks were added or
    /// already cached.
    pub fn warm_cache(&self, stop: &dyn Fn() -> bool) -> Result<usize> {
        let Some(c) = &self.cache else { return Ok(0) };
        let mut n = 0;
        for (i, ie) in self.index.iter().enumerate() {
            if stop() {
                break;
            }
            let cached = c.fill_free(
                self.id,
                i as u32,
                self.cache_hints.get(i),
                ie.handle.size as usize,
                || self.load_block(i, false).map(|b| CachedBlock(b.detached())),
            )?;
            n += usize::from(cached);
        }
        Ok(n)
    }

    fn block_error(&self, i: usize, bad: super::format::Bad) -> Error {
        let base = self.index.get(i).map_or(0, |ie| ie.handle.offset);
        bad.at_file(&self.path, base, "data block")
    }

    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(bloom::key_hash(key))
    }

    /// [`Table::may_contain`] for a key whose `bloom::key_hash` the caller already has.
    pub fn may_contain_hash(&self, hash: u64) -> bool {
        self.bloom_checks.fetch_add(1, Relaxed);
        let yes = bloom::may_contain_hash(&self.filter, hash);
        if !yes {
            self.bloom_negatives.fetch_add(1, Relaxed);
        }
        yes
    }

    /// The newest version of `key` with seqno <= `snapshot`, tombstones included.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Result<Option<Entry>> {
        let found = self.get_hashed(key, bloom::key_hash(key), snapshot)?;
        Ok(found.map(|f| f.into_entry(Bytes::copy_from_slice(key))))
    }

    /// [`Table::get`] without the key (the caller has it), given the key's `bloom::key_hash`
    /// (computed once per lookup, not per table).
    pub fn get_hashed(&self, key: &[u8], hash: u64, snapshot: u64) -> Result<Option<Found>> {
        if !self.may_contain_hash(hash) {
            return Ok(None);
        }
        // Blocks are indexed by their last entry, so the first block whose last entry is at or
        // after (key, snapshot) holds the answer if any block does, even when the versions of
        // `key` span several blocks.
        let before = |i: usize| {
            let ie = &self.index[i];
            cmp_internal(&ie.last_key, ie.last_seqno, key, snapshot) == Ordering::Less
        };
        let i = self.heads.partition_point(key, before);
        if i == self.index.len() {
            return Ok(None);
        }
        // A cached block is searched in place, under its cache shard's lock.
        let cached = self.cache.as_ref().and_then(|c| {
            c.with(
                self.id,
                i as u32,
                self.cache_hints.get(i),
                |CachedBlock(b)| b.get(key, snapshot),
            )
        });
        let found = match cached {
            Some(r) => r,
            None => self.load_block(i, true)?.get(key, snapshot),
        };
        found.map_err(|b| self.block_error(i, b))
    }

    /// All entries in table order from the first whose key is >= `start`
    /// (`Excluded(k)` skips every version of `k`).
    pub fn iter(self: &Arc<Self>, start: Bound<&[u8]>) -> TableIter {
        self.iter_with(start, true)
    }

    /// A whole-table read that leaves the block cache as it is (compaction: its blocks are
    /// read once, and caching them would push out the blocks that reads come back for, and
    /// fill the cache during a bulk load that reads nothing).
    pub fn iter_uncached(self: &Arc<Self>) -> TableIter {
        self.iter_with(Bound::Unbounded, false)
    }

    fn iter_with(self: &Arc<Self>, start: Bound<&[u8]>, fill_cache: bool) -> TableIter {
        let (seek, skip) = match start {
            Bound::Unbounded => (None, None),
            Bound::Included(k) => (Some(k.to_vec()), None),
            Bound::Excluded(k) => (Some(k.to_vec()), Some(k.to_vec())),
        };
        let next_block = seek.as_deref().map_or(0, |k| {
            self.index.partition_point(|ie| ie.last_key.as_ref() < k)
        });
        TableIter {
            fill_cache,
            table: Arc::clone(self),
            next_block,
            block: None,
            cur_block: 0,
            seek,
            skip,
            done: false,
        }
    }
}

/// Iterator over a table's entries; owns its table. Yields `None` after an error.
pub struct TableIter {
    fill_cache: bool,
    table: Arc<Table>,
    next_block: usize,
    block: Option<BlockIter>,
    cur_block: usize,
    /// Applied to the first block loaded (lazily, so its errors surface through `next`).
    seek: Option<Vec<u8>>,
    /// Versions of this key are dropped (`Bound::Excluded`).
    skip: Option<Vec<u8>>,
    done: bool,
}

impl TableIter {
    fn advance(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(it) = self.block.as_mut() {
                let next = it
                    .next_entry()
                    .map_err(|b| self.table.block_error(self.cur_block, b))?;
                match next {
                    Some(e) if self.skip.as_deref() == Some(e.key.as_ref()) => continue,
                    Some(e) => {
                        self.skip = None;
                        return Ok(Some(e));
                    }
                    None => self.block = None,
                }
            }
            if self.next_block >= self.table.index.len() {
                return Ok(None);
            }
            let i = self.next_block;
            let mut it = self.table.read_data_block(i, self.fill_cache)?;
            if let Some(k) = self.seek.take() {
                it.seek(&k, u64::MAX)
                    .map_err(|b| self.table.block_error(i, b))?;
            }
            self.block = Some(it);
            self.cur_block = i;
            self.next_block += 1;
        }
    }
}

impl Iterator for TableIter {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
