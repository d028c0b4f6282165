//! Byte-level pieces shared by the writer and the reader: varints, block handles, the footer,
//! the properties block and the index block. The layout is documented in `docs/FORMAT.md`.

use std::cmp::Ordering;
use std::path::Path;

use bytes::Bytes;

use crate::engine::error::Error;

/// The last 8 bytes of every table; ASCII "SNDV-SST" so a hex dump shows what the file is.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SNDV-SST");
/// Version 2 tables have blocked bloom filters (`bloom.rs`); the reader also opens version 1
/// tables (plain filters), and a version 1 reader refuses version 2 tables by this number.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest table version this build still reads.
const OLDEST_READABLE_VERSION: u32 = 1;
pub const FOOTER_LEN: usize = 64;
/// Every block is followed by the crc32 of its payload.
pub const CRC_LEN: usize = 4;

/// Order of entries in a table: key ascending, then seqno descending (newest first).
pub fn cmp_internal(a_key: &[u8], a_seq: u64, b_key: &[u8], b_seq: u64) -> Ordering {
    a_key.cmp(b_key).then(b_seq.cmp(&a_seq))
}

/// A structural problem `at` bytes into the buffer being decoded. Decoders stay free of paths
/// and file offsets; [`Bad::at_file`] adds them where they are known.
#[derive(Debug)]
pub struct Bad {
    pub at: usize,
    pub reason: &'static str,
}

impl Bad {
    pub fn at_file(self, path: &Path, base: u64, what: &str) -> Error {
        Error::corruption(
            path,
            base.saturating_add(self.at as u64),
            format!("{what}: {}", self.reason),
        )
    }
}

/// Bounds-checked reads from a byte slice; every length is checked against what is left
/// before anything is sliced or allocated.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Decoder { buf, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn bad(&self, reason: &'static str) -> Bad {
        Bad {
            at: self.pos,
            reason,
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.bad("length runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Bad> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(b))
    }

    pub fn u64(&mut self) -> Result<u64, Bad> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// Unsigned LEB128, at most 10 bytes.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, Bad> {
        // Lengths, prefix counts, kinds and zero expiries are one byte: decode those inline.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, Bad> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or(&[]);
        let mut v = 0u64;
        for (i, &b) in rest.iter().take(10).enumerate() {
            if i == 9 && b > 1 {
                return Err(Bad {
                    at: start,
                    reason: "varint overflows u64",
                });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos = start + i + 1;
                return Ok(v);
            }
        }
        Err(Bad {
            at: start,
            reason: if rest.len() < 10 {
                "truncated varint"
            } else {
                "varint too long"
            },
        })
    }

    /// A varint that is a length: it must fit in what is left of the buffer.
    pub fn length(&mut self) -> Result<usize, Bad> {
        let start = self.pos;
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= self.buf.len().saturating_sub(self.pos))
            .ok_or(Bad {
                at: start,
                reason: "length larger than the block",
            })
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends the crc32 of `payload` to it, making it a block as stored on disk.
pub fn seal(mut payload: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

/// Where a block's payload lives; its crc follows at `offset + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

impl BlockHandle {
    /// End of the block including its crc, `None` if that overflows.
    pub fn end(&self) -> Option<u64> {
        self.offset
            .checked_add(self.size)?
            .checked_add(CRC_LEN as u64)
    }
}

/// The fixed-size tail of a table: where the meta blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub filter: BlockHandle,
    pub index: BlockHandle,
    pub props: BlockHandle,
    /// [`FORMAT_VERSION`] for tables written now.
    pub version: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut v = Vec::with_capacity(FOOTER_LEN);
        for h in [self.filter, self.index, self.props] {
            v.extend_from_slice(&h.offset.to_le_bytes());
            v.extend_from_slice(&h.size.to_le_bytes());
        }
        v.extend_from_slice(&self.version.to_le_bytes());
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v.extend_from_slice(&MAGIC.to_le_bytes());
        let mut out = [0u8; FOOTER_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// `buf` must be exactly the last [`FOOTER_LEN`] bytes of the file.
    pub fn decode(buf: &[u8]) -> Result<Footer, Bad> {
        if buf.len() != FOOTER_LEN {
            return Err(Bad {
                at: 0,
                reason: "footer has the wrong size",
            });
        }
        // Magic first: a file that is not a table (or was cut short) says so plainly.
        let mut d = Decoder::at(buf, 56);
        if d.u64()? != MAGIC {
            return Err(Bad {
                at: 56,
                reason: "bad magic number (not a table, or truncated)",
            });
        }
        let mut d = Decoder::at(buf, 52);
        if d.u32()? != crc32fast::hash(&buf[..52]) {
            return Err(Bad {
                at: 52,
                reason: "footer checksum mismatch",
            });
        }
        let mut d = Decoder::new(buf);
        let mut handle = || -> Result<BlockHandle, Bad> {
            Ok(BlockHandle {
                offset: d.u64()?,
                size: d.u64()?,
            })
        };
        let (filter, index, props) = (handle()?, handle()?, handle()?);
        let version = d.u32()?;
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Bad {
                at: 48,
                reason: "unsupported format version",
            });
        }
        Ok(Footer {
            filter,
            index,
            props,
            version,
        })
    }
}

/// Summary of a table, stored in its properties block and kept in memory by the reader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableProps {
    pub smallest_key: Bytes,
    pub largest_key: Bytes,
    pub min_seqno: u64,
    pub max_seqno: u64,
    /// Smallest nonzero `expire_at`, 0 if no entry expires.
    pub min_expire: u64,
    /// Largest `expire_at`, 0 if no entry expires.
    pub max_expire: u64,
    pub entries: u64,
    pub tombstones: u64,
    /// Bit `1 << type_tag` for every type tag present.
    pub type_tags: u64,
    pub file_size: u64,
}

impl TableProps {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.smallest_key);
        put_bytes(out, &self.largest_key);
        for v in [
            self.min_seqno,
            self.max_seqno,
            self.min_expire,
            self.max_expire,
            self.entries,
            self.tombstones,
            self.type_tags,
            self.file_size,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub fn decode(buf: &[u8]) -> Result<TableProps, Bad> {
        let mut d = Decoder::new(buf);
        let n = d.length()?;
        let smallest_key = Bytes::copy_from_slice(d.bytes(n)?);
        let n = d.length()?;
        let largest_key = Bytes::copy_from_slice(d.bytes(n)?);
        let props = TableProps {
            smallest_key,
            largest_key,
            min_seqno: d.u64()?,
            max_seqno: d.u64()?,
            min_expire: d.u64()?,
            max_expire: d.u64()?,
            entries: d.u64()?,
            tombstones: d.u64()?,
            type_tags: d.u64()?,
            file_size: d.u64()?,
        };
        if !d.is_empty() {
            return Err(d.bad("trailing bytes after the properties"));
        }
        Ok(props)
    }
}

/// One data block as the index sees it: its last entry and where it is.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub last_key: Bytes,
    pub last_seqno: u64,
    pub handle: BlockHandle,
}

pub fn encode_index(entries: &[IndexEntry], out: &mut Vec<u8>) {
    for e in entries {
        put_bytes(out, &e.last_key);
        put_varint(out, e.last_seqno);
        put_varint(out, e.handle.offset);
        put_varint(out, e.handle.size);
    }
}

/// Decodes the index; keys are slices of `buf` (no copy). Also checks what can be checked
/// without reading data blocks: blocks tile `[0, data_end)` in order, last entries ascend.
pub fn decode_index(buf: &Bytes, data_end: u64) -> Result<Vec<IndexEntry>, Bad> {
    let mut d = Decoder::new(buf);
    // No capacity from any length field: the vector grows with what actually decodes.
    let mut out: Vec<IndexEntry> = Vec::new();
    let mut expect_offset = 0u64;
    while !d.is_empty() {
        let at = d.pos();
        let n = d.length()?;
        let start = d.pos();
        d.bytes(n)?;
        let last_key = buf.slice(start..start + n);
        let last_seqno = d.varint()?;
        let handle = BlockHandle {
            offset: d.varint()?,
            size: d.varint()?,
        };
        let bad = |reason| Bad { at, reason };
        if handle.offset != expect_offset {
            return Err(bad("data blocks are not contiguous"));
        }
        expect_offset = handle
            .end()
            .filter(|&e| e <= data_end)
            .ok_or(bad("data block runs past the data area"))?;
        if let Some(prev) = out.last() {
            if cmp_internal(&prev.last_key, prev.last_seqno, &last_key, last_seqno)
                != Ordering::Less
            {
                return Err(bad("index keys out of order"));
            }
        }
        out.push(IndexEntry {
            last_key,
            last_seqno,
            handle,
        });
    }
    if expect_offset != data_end {
        return Err(Bad {
            at: buf.len(),
            reason: "index does not cover the data area",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_and_rejects() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut d = Decoder::new(&b);
            assert_eq!(d.varint().unwrap(), v);
            assert!(d.is_empty());
            // Every strict prefix is truncated.
            for cut in 0..b.len() {
                assert!(Decoder::new(&b[..cut]).varint().is_err());
            }
        }
        assert!(Decoder::new(&[0xff; 10]).varint().is_err());
        assert!(
            Decoder::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        // A length bigger than what is left is refused before any slicing.
        let mut b = Vec::new();
        put_varint(&mut b, 5);
        b.extend_from_slice(b"abcd");
        assert!(Decoder::new(&b).length().is_err());
    }

    #[test]
    fn footer_roundtrip() {
        let f = Footer {
            filter: BlockHandle { offset: 1, size: 2 },
            index: BlockHandle { offset: 3, size: 4 },
            props: BlockHandle { offset: 5, size: 6 },
            version: FORMAT_VERSION,
        };
        let b = f.encode();
        assert_eq!(&b[56..], b"SNDV-SST");
        assert_eq!(Footer::decode(&b).unwrap(), f);
        for i in 0..FOOTER_LEN {
            let mut c = b;
            c[i] ^= 0x01;
            assert!(Footer::decode(&c).is_err(), "flip at {i} undetected");
        }
        // Version 1 tables still open; versions outside 1..=FORMAT_VERSION do not.
        for (v, ok) in [
            (0, false),
            (1, true),
            (FORMAT_VERSION, true),
            (FORMAT_VERSION + 1, false),
        ] {
            let g = Footer { version: v, ..f };
            assert_eq!(Footer::decode(&g.encode()).is_ok(), ok, "version {v}");
        }
    }

    #[test]
    fn props_roundtrip() {
        let p = TableProps {
            smallest_key: Bytes::from_static(b"a"),
            largest_key: Bytes::from_static(b"zz"),
            min_seqno: 1,
            max_seqno: 9,
            min_expire: 0,
            max_expire: 7,
            entries: 3,
            tombstones: 1,
            type_tags: 1,
            file_size: 1234,
        };
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(TableProps::decode(&b).unwrap(), p);
        for cut in 0..b.len() {
            assert!(TableProps::decode(&b[..cut]).is_err());
        }
    }
}
