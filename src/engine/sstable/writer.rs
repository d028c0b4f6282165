//! Writes a table front to back: data blocks as they fill, then filter, index, properties
//! and footer.

use std::cmp::Ordering;

use bytes::Bytes;

use super::block::BlockBuilder;
use super::bloom::BloomBuilder;
use super::format::{
    cmp_internal, encode_index, seal, BlockHandle, Footer, IndexEntry, TableProps, CRC_LEN,
    FOOTER_LEN, FORMAT_VERSION,
};
use crate::engine::error::{Error, IoContext, Result};
use crate::engine::storage::WritableFile;
use crate::engine::types::{Entry, Kind};

/// Largest accepted block size. Keeps every offset inside a block within u32 (restart points).
const MAX_BLOCK_SIZE: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    /// Target payload size of a data block; a block is cut once it reaches this.
    pub block_size: usize,
    /// 0 disables the filter (every lookup reads a block).
    pub bloom_bits_per_key: u32,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size: 4096,
            bloom_bits_per_key: 10,
        }
    }
}

/// Builds one table. On any error the file is in an unknown state: drop the writer and
/// delete the file.
pub struct TableWriter {
    file: Box<dyn WritableFile>,
    block_size: usize,
    bloom_bits_per_key: u32,
    block: BlockBuilder,
    index: Vec<IndexEntry>,
    bloom: BloomBuilder,
    /// Tests only: write a version 1 table (plain filter), as older builds did.
    version_1: bool,
    props: TableProps,
    /// Last key and seqno added, to enforce order across blocks.
    last: Option<(Bytes, u64)>,
    /// Bytes handed to the file so far.
    offset: u64,
}

impl TableWriter {
    pub fn new(file: Box<dyn WritableFile>, opts: &TableOptions) -> TableWriter {
        TableWriter {
            file,
            block_size: opts.block_size.min(MAX_BLOCK_SIZE),
            bloom_bits_per_key: opts.bloom_bits_per_key,
            block: BlockBuilder::default(),
            index: Vec::new(),
            bloom: BloomBuilder::default(),
            version_1: false,
            props: TableProps {
                min_seqno: u64::MAX,
                ..TableProps::default()
            },
            last: None,
            offset: 0,
        }
    }

    /// Entries must come in table order: key ascending, seqno descending, no repeats.
    pub fn add(&mut self, e: &Entry) -> Result<()> {
        if e.type_tag >= 64 {
            return Err(Error::Invalid(format!(
                "table entry type tag {} out of range (max 63)",
                e.type_tag
            )));
        }
        let new_key = match &self.last {
            None => true,
            Some((k, s)) => match cmp_internal(k, *s, &e.key, e.seqno) {
                Ordering::Less => k != &e.key,
                _ => {
                    return Err(Error::Invalid(format!(
                        "table entries out of order: {:?}@{} after {:?}@{}",
                        e.key, e.seqno, k, s
                    )))
                }
            },
        };
        if new_key {
            self.bloom.add(&e.key);
        }
        let p = &mut self.props;
        if p.entries == 0 {
            p.smallest_key = e.key.clone();
        }
        p.min_seqno = p.min_seqno.min(e.seqno);
        p.max_seqno = p.max_seqno.max(e.seqno);
        if e.expire_at != 0 && (p.min_expire == 0 || e.expire_at < p.min_expire) {
            p.min_expire = e.expire_at;
        }
        p.max_expire = p.max_expire.max(e.expire_at);
        p.entries += 1;
        if e.kind == Kind::Delete {
            p.tombstones += 1;
        }
        p.type_tags |= 1u64 << e.type_tag;

        self.block.add(e);
        self.last = Some((e.key.clone(), e.seqno));
        if self.block.size_estimate() >= self.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Bytes written plus the open data block; the meta blocks are not counted.
    pub fn approx_size(&self) -> u64 {
        let open = if self.block.is_empty() {
            0
        } else {
            self.block.size_estimate() + CRC_LEN
        };
        self.offset + open as u64
    }

    pub fn is_empty(&self) -> bool {
        self.props.entries == 0
    }

    fn write_block(&mut self, payload: Vec<u8>) -> Result<BlockHandle> {
        let handle = BlockHandle {
            offset: self.offset,
            size: payload.len() as u64,
        };
        let sealed = seal(payload);
        let file = &mut self.file;
        file.append(&sealed)
            .ctx(|| format!("write table {}", file.path().display()))?;
        self.offset += sealed.len() as u64;
        Ok(handle)
    }

    fn flush_block(&mut self) -> Result<()> {
        let last_key = Bytes::copy_from_slice(self.block.last_key());
        let last_seqno = self.block.last_seqno();
        let payload = self.block.finish();
        let handle = self.write_block(payload)?;
        self.index.push(IndexEntry {
            last_key,
            last_seqno,
            handle,
        });
        Ok(())
    }

    /// Tests only: make this a version 1 table (plain bloom filter), as builds before the
    /// blocked filter wrote them, to check that such tables still read.
    #[cfg(test)]
    pub fn version_1(mut self) -> Self {
        self.version_1 = true;
        self
    }

    /// Writes the remaining blocks and the footer and syncs the file. An empty table is valid
    /// (`props.entries == 0`, empty key range), though callers normally check [`Self::is_empty`].
    pub fn finish(mut self) -> Result<TableProps> {
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        let (filter, version) = if self.version_1 {
            (self.bloom.finish_plain(self.bloom_bits_per_key), 1)
        } else {
            (self.bloom.finish(self.bloom_bits_per_key), FORMAT_VERSION)
        };
        let filter = self.write_block(filter)?;
        let mut index = Vec::new();
        encode_index(&self.index, &mut index);
        let index = self.write_block(index)?;

        if let Some((k, _)) = &self.last {
            self.props.largest_key = k.clone();
        }
        if self.props.entries == 0 {
            self.props.min_seqno = 0;
        }
        // The properties hold the file size, whose encoding has a fixed width: measure first.
        let mut probe = Vec::new();
        self.props.encode(&mut probe);
        self.props.file_size = self.offset + (probe.len() + CRC_LEN + FOOTER_LEN) as u64;
        let mut payload = Vec::with_capacity(probe.len());
        self.props.encode(&mut payload);
        let props = self.write_block(payload)?;

        let footer = Footer {
            filter,
            index,
            props,
            version,
        }
        .encode();
        let file = &mut self.file;
        file.append(&footer)
            .ctx(|| format!("write table {}", file.path().display()))?;
        file.sync()
            .ctx(|| format!("sync table {}", file.path().display()))?;
        debug_assert_eq!(file.len(), self.props.file_size);
        Ok(self.props)
    }
}
