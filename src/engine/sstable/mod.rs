//! SSTables: immutable sorted files of entries (key ascending, seqno descending).
//!
//! - `format.rs`: varints, block handles, footer, properties and index encodings,
//! - `block.rs`: data blocks (prefix-compressed keys, restart points),
//! - `bloom.rs`: the per-table bloom filter over user keys,
//! - `writer.rs`: [`TableWriter`], `reader.rs`: [`Table`] and [`TableIter`].
//!
//! The byte layout is written down in `docs/FORMAT.md`.

mod block;
mod bloom;
mod format;
mod reader;
mod writer;

pub use bloom::key_hash;
pub use format::TableProps;

/// A parsed, checksum-verified data block as the block cache holds it.
#[derive(Clone)]
pub struct CachedBlock(block::Block);

impl CachedBlock {
    /// Bytes of block data held (the cache's accounting unit).
    pub fn byte_size(&self) -> usize {
        self.0.byte_size()
    }

    /// A block of one entry whose value is `value_len` bytes (cache tests).
    #[cfg(test)]
    pub fn for_test(value_len: usize) -> CachedBlock {
        let mut b = block::BlockBuilder::default();
        let v = bytes::Bytes::from(vec![b'v'; value_len]);
        b.add(&crate::engine::types::Entry::put(
            bytes::Bytes::from_static(b"k"),
            1,
            v,
            0,
        ));
        CachedBlock(block::Block::parse(bytes::Bytes::from(b.finish())).expect("valid block"))
    }
}
pub use reader::{Table, TableIter, TableStats};
pub use writer::{TableOptions, TableWriter};

#[cfg(test)]
mod tests;
