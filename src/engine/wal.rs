//! Write-ahead log segments.
//!
//! One write group is one checksummed record, so recovery replays a group whole or not at all
//! (readers never see half an EXEC, even after a crash). The byte layout is in
//! `docs/FORMAT.md`, section "WAL".

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::{Error, Result};
use super::storage::{Storage, WritableFile};
use super::types::{Entry, Kind, SeqNo};

/// First six bytes of every segment.
pub const WAL_MAGIC: [u8; 6] = *b"SKVWAL";
/// Format version written in the segment header.
pub const WAL_VERSION: u16 = 1;
/// Segment header: magic + version (u16 LE).
pub const WAL_HEADER_LEN: u64 = 8;

/// crc32 (u32) + payload length (u32).
const RECORD_HEADER_LEN: usize = 8;
/// kind, type_tag, seqno, expire_at, key_len, value_len.
const ENTRY_FIXED_LEN: usize = 1 + 1 + 8 + 8 + 4 + 4;
const COUNT_LEN: usize = 4;
/// A record holds at least one entry; this also makes a zero-filled region invalid.
const MIN_PAYLOAD_LEN: usize = COUNT_LEN + ENTRY_FIXED_LEN;
/// Keep the encode buffer from pinning the memory of one huge group forever.
const RETAINED_BUF_BYTES: usize = 1 << 20;

fn header_bytes() -> [u8; WAL_HEADER_LEN as usize] {
    let mut h = [0u8; WAL_HEADER_LEN as usize];
    h[..6].copy_from_slice(&WAL_MAGIC);
    h[6..8].copy_from_slice(&WAL_VERSION.to_le_bytes());
    h
}

/// Appends groups to one segment.
pub struct WalWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Set when a failed append could not be undone: the tail holds garbage, so appending
    /// after it would turn a torn tail into mid-log corruption.
    broken: Option<String>,
    /// Space is reserved this many bytes ahead of the end (0: never).
    prealloc_chunk: u64,
}

impl WalWriter {
    /// Creates a new, empty segment at `path` (replacing any file there) and writes its header.
    /// The header is not synced; the first [`Self::sync`] covers it. Syncing the directory is
    /// the caller's job.
    pub fn create(storage: &dyn Storage, path: &Path) -> Result<WalWriter> {
        let mut file = storage
            .create(path)
            .map_err(|e| Error::io(format!("creating WAL segment {}", path.display()), e))?;
        if let Err(e) = file.append(&header_bytes()) {
            // An empty file is a valid empty segment in any position; a partial header is not.
            let _ = file.truncate(0);
            return Err(Error::io(
                format!("writing the header of WAL segment {}", path.display()),
                e,
            ));
        }
        Ok(WalWriter {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            broken: None,
            prealloc_chunk: 0,
        })
    }

    /// Reserves disk space `chunk` bytes at a time ahead of the appends (see
    /// [`WritableFile::preallocate`]): an fdatasync after an append then commits no
    /// file-size change. On this machine's ext4 that took a 1.5 KB append + fdatasync from
    /// ~140 to ~105 µs. Only small groups (many syncs per byte) reserve: reserving writes
    /// the space twice. The reserved tail reads as zeros, which replay takes for the end of
    /// the log; [`Self::trim`] cuts it off when the segment is done.
    pub fn preallocating(mut self, chunk: u64) -> WalWriter {
        self.prealloc_chunk = chunk;
        self
    }

    /// Cuts reserved space past the last record and syncs, so that a finished segment ends at
    /// its last record (replay refuses a bad tail in any segment but the last).
    pub fn trim(&mut self) -> Result<()> {
        self.check_usable()?;
        let len = self.file.len();
        if self.file.reserved() > len {
            self.file
                .truncate(len)
                .and_then(|()| self.file.sync())
                .map_err(|e| {
                    Error::io(
                        format!("trimming WAL {} to {len} bytes", self.path.display()),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    fn reserve_for(&mut self, n: usize) {
        /// Groups above this size are appended without reserving: a sync per this many bytes
        /// gains little, and reserving writes every byte twice (zeros, then the record).
        const MAX_RESERVING_GROUP: usize = 8 << 10;
        if n > MAX_RESERVING_GROUP {
            return;
        }
        let end = self.file.len() + n as u64;
        // Half a chunk ahead, so that the reserved zeros have been written back by the time
        // appends reach them.
        if self.prealloc_chunk == 0 || end + self.prealloc_chunk / 2 <= self.file.reserved() {
            return;
        }
        if let Err(e) = self.file.preallocate(end + self.prealloc_chunk) {
            // Appends still work, only slower to sync: not worth failing a write for.
            tracing::debug!(file = %self.path.display(), error = %e, "WAL preallocation failed");
        }
    }

    /// Appends one record holding the whole group. `entries` must be non-empty with
    /// consecutive seqnos (replay checks this, so a violation is refused here, not later).
    ///
    /// On a failed write the file is cut back to where the record started, so the log stays
    /// valid and later appends work (ENOSPC is reported as [`Error::NoSpace`]). If that cut
    /// fails too, the error is an [`Error::Io`] saying the log could not be repaired, and the
    /// writer refuses every later append and sync.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check_usable()?;
        self.buf.clear();
        encode_record(&mut self.buf, entries)?;
        self.reserve_for(self.buf.len());
        let start = self.file.len();
        let res = self.file.append(&self.buf);
        if self.buf.capacity() > RETAINED_BUF_BYTES {
            self.buf = Vec::new();
        }
        match res {
            Ok(()) => Ok(()),
            Err(e) => Err(self.undo_partial(start, e)),
        }
    }

    fn undo_partial(&mut self, start: u64, cause: io::Error) -> Error {
        match self.file.truncate(start) {
            Ok(()) => Error::io(
                format!(
                    "appending to WAL {} (record at offset {start} undone)",
                    self.path.display()
                ),
                cause,
            ),
            Err(te) => {
                let context = format!(
                    "WAL {} could not be repaired: append failed ({cause}) and truncating back \
                     to offset {start} failed",
                    self.path.display()
                );
                self.broken = Some(context.clone());
                // Not Error::io: a truncate failing with ENOSPC must not look retryable.
                Error::Io {
                    context,
                    source: te,
                }
            }
        }
    }

    fn check_usable(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::Io {
                context: format!("WAL {} is unusable", self.path.display()),
                source: io::Error::other(why.clone()),
            }),
        }
    }

    /// fdatasync. Any error here must poison the engine (never retry an fsync).
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        self.file
            .sync()
            .map_err(|e| Error::io(format!("syncing WAL {}", self.path.display()), e))
    }

    /// Bytes in the segment, header included.
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// True when no record has been appended (only the header is there).
    pub fn is_empty(&self) -> bool {
        self.file.len() <= WAL_HEADER_LEN
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn encode_record(out: &mut Vec<u8>, entries: &[Entry]) -> Result<()> {
    let first = entries
        .first()
        .ok_or_else(|| Error::Invalid("WAL append of an empty group".into()))?;
    let mut payload_len = COUNT_LEN;
    for (i, e) in entries.iter().enumerate() {
        if e.seqno != first.seqno.wrapping_add(i as u64) {
            return Err(Error::Invalid(format!(
                "WAL group seqnos are not consecutive: entry {i} has {} after first {}",
                e.seqno, first.seqno
            )));
        }
        if e.key.len() > u32::MAX as usize || e.value.len() > u32::MAX as usize {
            return Err(Error::Invalid("WAL entry key or value over 4 GiB".into()));
        }
        payload_len = payload_len.saturating_add(ENTRY_FIXED_LEN + e.key.len() + e.value.len());
    }
    let payload_len_u32 = u32::try_from(payload_len)
        .map_err(|_| Error::Invalid(format!("WAL group of {payload_len} bytes is over 4 GiB")))?;
    let count = u32::try_from(entries.len())
        .map_err(|_| Error::Invalid("WAL group has too many entries".into()))?;

    out.reserve(RECORD_HEADER_LEN + payload_len);
    let start = out.len();
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&payload_len_u32.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for e in entries {
        out.push(e.kind as u8);
        out.push(e.type_tag);
        out.extend_from_slice(&e.seqno.to_le_bytes());
        out.extend_from_slice(&e.expire_at.to_le_bytes());
        out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.key);
        out.extend_from_slice(&e.value);
    }
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What [`replay`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Records (groups) replayed.
    pub records: u64,
    /// Entries replayed.
    pub entries: u64,
    /// Length of the valid prefix (the file's length after a torn tail was cut).
    pub valid_len: u64,
    /// Bytes of torn tail dropped (0 if the segment ended cleanly), not counting
    /// `unused_bytes`.
    pub torn_bytes: u64,
    /// Zero bytes after the last record of the last segment, dropped with the torn tail:
    /// preallocated space never written (or a torn write that left only zeros).
    pub unused_bytes: u64,
    /// Highest seqno replayed; 0 if none.
    pub max_seqno: SeqNo,
}

/// A structurally valid record found at some offset.
struct RecordInfo {
    len: usize,
    count: usize,
    first_seqno: SeqNo,
    last_seqno: SeqNo,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Validates the record starting at `buf[0]` without allocating; `Err` says why it is bad.
/// Every length is checked against the bytes actually present before it is used.
fn check_record(buf: &[u8]) -> std::result::Result<RecordInfo, String> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(format!(
            "incomplete record header ({} bytes left)",
            buf.len()
        ));
    }
    let crc = le_u32(buf, 0);
    let payload_len = le_u32(buf, 4) as usize;
    if payload_len < MIN_PAYLOAD_LEN {
        return Err(format!("bad payload length {payload_len}"));
    }
    let avail = buf.len() - RECORD_HEADER_LEN;
    if payload_len > avail {
        return Err(format!(
            "record of {payload_len} payload bytes extends past the end ({avail} left)"
        ));
    }
    let end = RECORD_HEADER_LEN + payload_len;
    if crc32fast::hash(&buf[4..end]) != crc {
        return Err("checksum mismatch".into());
    }
    let p = &buf[RECORD_HEADER_LEN..end];
    let count = le_u32(p, 0) as usize;
    if count == 0 || count > (payload_len - COUNT_LEN) / ENTRY_FIXED_LEN {
        return Err(format!("bad entry count {count}"));
    }
    let mut pos = COUNT_LEN;
    let mut first_seqno = 0;
    let mut last_seqno: SeqNo = 0;
    for i in 0..count {
        if p.len() - pos < ENTRY_FIXED_LEN {
            return Err(format!("entry {i} truncated"));
        }
        if Kind::from_u8(p[pos]).is_none() {
            return Err(format!("entry {i} has bad kind {}", p[pos]));
        }
        let seqno = le_u64(p, pos + 2);
        let klen = le_u32(p, pos + 18) as usize;
        let vlen = le_u32(p, pos + 22) as usize;
        pos += ENTRY_FIXED_LEN;
        if klen > p.len() - pos || vlen > p.len() - pos - klen {
            return Err(format!("entry {i} key/value lengths exceed the record"));
        }
        pos += klen + vlen;
        if i == 0 {
            first_seqno = seqno;
        } else if seqno != last_seqno.wrapping_add(1) {
            return Err(format!("entry {i} seqno {seqno} is not consecutive"));
        }
        last_seqno = seqno;
    }
    if pos != p.len() {
        return Err(format!("{} trailing bytes in record", p.len() - pos));
    }
    Ok(RecordInfo {
        len: end,
        count,
        first_seqno,
        last_seqno,
    })
}

/// Builds the entries of a record that [`check_record`] accepted. Keys and values are copied
/// so the memtable does not pin the whole segment buffer.
fn decode_entries(buf: &[u8], info: &RecordInfo) -> Vec<Entry> {
    let p = &buf[RECORD_HEADER_LEN..info.len];
    let mut out = Vec::with_capacity(info.count);
    let mut pos = COUNT_LEN;
    for _ in 0..info.count {
        // check_record proved every kind valid; Delete is unreachable as a fallback.
        let kind = Kind::from_u8(p[pos]).unwrap_or(Kind::Delete);
        let type_tag = p[pos + 1];
        let seqno = le_u64(p, pos + 2);
        let expire_at = le_u64(p, pos + 10);
        let klen = le_u32(p, pos + 18) as usize;
        let vlen = le_u32(p, pos + 22) as usize;
        pos += ENTRY_FIXED_LEN;
        let key = Bytes::copy_from_slice(&p[pos..pos + klen]);
        pos += klen;
        let value = Bytes::copy_from_slice(&p[pos..pos + vlen]);
        pos += vlen;
        out.push(Entry {
            key,
            seqno,
            kind,
            type_tag,
            expire_at,
            value,
        });
    }
    out
}

/// Cheap rejection before paying for a checksum while scanning byte by byte.
fn plausible_start(buf: &[u8]) -> bool {
    if buf.len() < RECORD_HEADER_LEN + MIN_PAYLOAD_LEN {
        return false;
    }
    let payload_len = le_u32(buf, 4) as usize;
    let count = le_u32(buf, RECORD_HEADER_LEN) as usize;
    payload_len >= MIN_PAYLOAD_LEN
        && payload_len <= buf.len() - RECORD_HEADER_LEN
        && count >= 1
        && count <= (payload_len - COUNT_LEN) / ENTRY_FIXED_LEN
        && buf[RECORD_HEADER_LEN + COUNT_LEN] <= 1
}

/// First offset at or after `from` where a complete valid record starts whose seqnos are
/// newer than `after_seqno`. The seqno condition keeps a stale record embedded in a user's
/// value (in a torn last write) from being mistaken for real data after the tear.
fn find_valid_record(data: &[u8], from: usize, after_seqno: SeqNo) -> Option<usize> {
    (from..data.len()).find(|&off| {
        let b = &data[off..];
        plausible_start(b)
            && matches!(check_record(b), Ok(info) if after_seqno == 0 || info.first_seqno > after_seqno)
    })
}

enum HeaderState {
    Valid,
    /// Incomplete or zero-filled: what a crash during segment creation leaves.
    Torn,
    Bad(String),
}

fn check_header(data: &[u8]) -> HeaderState {
    let want = header_bytes();
    let n = data.len().min(want.len());
    let got = &data[..n];
    if n == want.len() && got == want {
        return HeaderState::Valid;
    }
    if n == want.len() && got[..6] == WAL_MAGIC {
        let version = u16::from_le_bytes([got[6], got[7]]);
        return HeaderState::Bad(format!("unsupported WAL format version {version}"));
    }
    let torn = if n < want.len() {
        got.iter().zip(want.iter()).all(|(&g, &w)| g == w || g == 0)
    } else {
        got.iter().all(|&g| g == 0)
    };
    if torn {
        HeaderState::Torn
    } else {
        HeaderState::Bad("bad magic: not a WAL segment".into())
    }
}

/// Reads the segment at `path` and calls `f` once per record (one group), in order.
///
/// With `is_last` (the newest segment), a bad or incomplete record with no valid record
/// anywhere after it is a torn tail: replay stops there, the file is truncated to
/// `valid_len` (synced), and the outcome reports `torn_bytes`. A bad record followed by a
/// valid one, or any bad record in an older segment, is [`Error::Corruption`] naming the file
/// and the bad record's offset; `f` has then already seen the records before it.
/// An empty file is a valid empty segment in any position.
pub fn replay(
    storage: &dyn Storage,
    path: &Path,
    is_last: bool,
    mut f: impl FnMut(Vec<Entry>),
) -> Result<ReplayOutcome> {
    let data = storage
        .read(path)
        .map_err(|e| Error::io(format!("reading WAL {}", path.display()), e))?;
    let mut out = ReplayOutcome::default();
    if data.is_empty() {
        return Ok(out);
    }

    let mut off = match check_header(&data) {
        HeaderState::Valid => WAL_HEADER_LEN as usize,
        HeaderState::Bad(reason) => return Err(Error::corruption(path, 0, reason)),
        HeaderState::Torn => {
            if !is_last {
                return Err(Error::corruption(
                    path,
                    0,
                    "incomplete segment header in a segment that is not the last",
                ));
            }
            if let Some(next) = find_valid_record(&data, 1, 0) {
                return Err(Error::corruption(
                    path,
                    0,
                    format!("bad segment header followed by a valid record at offset {next}"),
                ));
            }
            0
        }
    };

    if off > 0 {
        while off < data.len() {
            let info = match check_record(&data[off..]) {
                Ok(info) => info,
                Err(reason) => {
                    if !is_last {
                        return Err(Error::corruption(
                            path,
                            off as u64,
                            format!("{reason} (in a segment that is not the last)"),
                        ));
                    }
                    if let Some(next) = find_valid_record(&data, off + 1, out.max_seqno) {
                        return Err(Error::corruption(
                            path,
                            off as u64,
                            format!("{reason}; a valid record follows at offset {next}"),
                        ));
                    }
                    break;
                }
            };
            let entries = decode_entries(&data[off..], &info);
            out.records += 1;
            out.entries += info.count as u64;
            out.max_seqno = out.max_seqno.max(info.last_seqno);
            off += info.len;
            f(entries);
        }
    }

    out.valid_len = off as u64;
    let tail = &data[off..];
    let torn = tail.len() - tail.iter().rev().take_while(|&&b| b == 0).count();
    out.torn_bytes = torn as u64;
    out.unused_bytes = (tail.len() - torn) as u64;
    if !tail.is_empty() {
        storage.truncate(path, out.valid_len).map_err(|e| {
            Error::io(
                format!(
                    "truncating the torn tail of WAL {} to {} bytes",
                    path.display(),
                    out.valid_len
                ),
                e,
            )
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::FsStorage;

    fn group(first_seqno: u64, n: usize, tag: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                let s = first_seqno + i as u64;
                let key = Bytes::from(format!("key-{tag}-{i}"));
                match (s + tag) % 4 {
                    0 => Entry::delete(key, s),
                    1 => Entry::put(key, s, Bytes::new(), 0),
                    2 => Entry::put(
                        key,
                        s,
                        Bytes::from(vec![(s % 251) as u8; 40]),
                        1_700_000 + s,
                    ),
                    _ => Entry::put(key, s, Bytes::from(format!("v{s}")), 0),
                }
            })
            .collect()
    }

    /// Writes `groups` to a fresh segment; returns the path and each record's start offset.
    fn write_segment(dir: &Path, name: &str, groups: &[Vec<Entry>]) -> (PathBuf, Vec<u64>) {
        let path = dir.join(name);
        let mut w = WalWriter::create(&FsStorage, &path).unwrap();
        let mut offsets = Vec::new();
        for g in groups {
            offsets.push(w.len());
            w.append(g).unwrap();
        }
        w.sync().unwrap();
        (path, offsets)
    }

    fn replay_all(path: &Path, is_last: bool) -> Result<(Vec<Vec<Entry>>, ReplayOutcome)> {
        let mut got = Vec::new();
        let out = replay(&FsStorage, path, is_last, |g| got.push(g))?;
        Ok((got, out))
    }

    fn sample_groups(n: usize) -> Vec<Vec<Entry>> {
        let mut seq = 1;
        (0..n)
            .map(|i| {
                let g = group(seq, 1 + i % 3, i as u64);
                seq += g.len() as u64;
                g
            })
            .collect()
    }

    #[test]
    fn roundtrip_many_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut groups = sample_groups(200);
        let mut seq = groups.iter().map(|g| g.len() as u64).sum::<u64>() + 1;
        // A big value and a big tombstone-only group.
        groups.push(vec![Entry::put(
            Bytes::from_static(b"big"),
            seq,
            Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>()),
            u64::MAX,
        )]);
        seq += 1;
        groups.push(
            (0..500)
                .map(|i| Entry::delete(Bytes::from(format!("d{i}")), seq + i))
                .collect(),
        );
        let (path, _) = write_segment(dir.path(), "000001.log", &groups);
        let (got, out) = replay_all(&path, false).unwrap();
        assert_eq!(got, groups);
        assert_eq!(out.records, groups.len() as u64);
        assert_eq!(
            out.entries,
            groups.iter().map(|g| g.len() as u64).sum::<u64>()
        );
        assert_eq!(out.max_seqno, seq + 499);
        assert_eq!(out.torn_bytes, 0);
        assert_eq!(out.valid_len, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn empty_and_header_only_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_segment(dir.path(), "1.log", &[]);
        for last in [false, true] {
            let (got, out) = replay_all(&path, last).unwrap();
            assert!(got.is_empty());
            assert_eq!(out.valid_len, WAL_HEADER_LEN);
        }
        let empty = dir.path().join("2.log");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(replay_all(&empty, false).unwrap().1.valid_len, 0);
    }

    #[test]
    fn refuses_bad_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(&FsStorage, &dir.path().join("1.log")).unwrap();
        assert!(matches!(w.append(&[]), Err(Error::Invalid(_))));
        let bad = vec![
            Entry::delete(Bytes::from_static(b"a"), 5),
            Entry::delete(Bytes::from_static(b"b"), 7),
        ];
        assert!(matches!(w.append(&bad), Err(Error::Invalid(_))));
        assert_eq!(w.len(), WAL_HEADER_LEN);
    }

    #[test]
    fn torn_at_every_offset_of_the_last_two_records() {
        let dir = tempfile::tempdir().unwrap();
        let groups = sample_groups(6);
        let (path, offsets) = write_segment(dir.path(), "src.log", &groups);
        let full = std::fs::read(&path).unwrap();
        let mut ends: Vec<u64> = offsets[1..].to_vec();
        ends.push(full.len() as u64);
        let cut_path = dir.path().join("cut.log");
        for cut in offsets[offsets.len() - 2]..full.len() as u64 {
            std::fs::write(&cut_path, &full[..cut as usize]).unwrap();
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            let valid_len = if complete == 0 {
                WAL_HEADER_LEN
            } else {
                ends[complete - 1]
            };
            let (got, out) = replay_all(&cut_path, true).unwrap();
            assert_eq!(got, groups[..complete], "cut at {cut}");
            assert_eq!(out.valid_len, valid_len, "cut at {cut}");
            assert_eq!(out.torn_bytes + out.unused_bytes, cut - valid_len);
            assert_eq!(std::fs::metadata(&cut_path).unwrap().len(), valid_len);
            let (again, out2) = replay_all(&cut_path, true).unwrap();
            assert_eq!(again, got);
            assert_eq!(out2.torn_bytes, 0);
            // Once cut, the segment is clean even as an older segment.
            assert!(replay_all(&cut_path, false).is_ok());
        }
    }

    #[test]
    fn torn_header_is_dropped_only_in_the_last_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        for cut in 1..WAL_HEADER_LEN as usize {
            std::fs::write(&path, &header_bytes()[..cut]).unwrap();
            assert!(matches!(
                replay_all(&path, false),
                Err(Error::Corruption { offset: 0, .. })
            ));
            let (got, out) = replay_all(&path, true).unwrap();
            assert!(got.is_empty());
            assert_eq!((out.valid_len, out.torn_bytes), (0, cut as u64));
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        }
        // A zero-filled file (size extended, data never written) is torn too.
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert_eq!(replay_all(&path, true).unwrap().1.valid_len, 0);
    }

    #[test]
    fn foreign_or_future_files_are_never_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        std::fs::write(&path, b"hello, this is not a log").unwrap();
        assert!(matches!(
            replay_all(&path, true),
            Err(Error::Corruption { offset: 0, .. })
        ));
        let mut future = header_bytes().to_vec();
        future[6] = 9;
        future.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &future).unwrap();
        let err = replay_all(&path, true).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), future);
    }

    #[test]
    fn bit_flip_in_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let groups = sample_groups(5);
        let (path, offsets) = write_segment(dir.path(), "src.log", &groups);
        let full = std::fs::read(&path).unwrap();
        let last = *offsets.last().unwrap() as usize;
        let p = dir.path().join("flip.log");
        for i in last..full.len() {
            for bit in [0, 7] {
                let mut d = full.clone();
                d[i] ^= 1 << bit;
                std::fs::write(&p, &d).unwrap();
                let (got, out) = replay_all(&p, true).unwrap();
                assert_eq!(got, groups[..4], "flip at {i}");
                assert_eq!(out.valid_len, last as u64);
                assert_eq!(std::fs::metadata(&p).unwrap().len(), last as u64);
            }
        }
    }

    #[test]
    fn bit_flip_in_middle_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let groups = sample_groups(5);
        let (path, offsets) = write_segment(dir.path(), "src.log", &groups);
        let full = std::fs::read(&path).unwrap();
        let p = dir.path().join("flip.log");
        let (start, end) = (offsets[2] as usize, offsets[3] as usize);
        for i in start..end {
            let mut d = full.clone();
            d[i] ^= 0x10;
            std::fs::write(&p, &d).unwrap();
            for last in [true, false] {
                match replay_all(&p, last) {
                    Err(Error::Corruption { file, offset, .. }) => {
                        assert_eq!(file, p);
                        assert_eq!(offset, start as u64, "flip at {i}");
                    }
                    other => panic!("flip at {i}: expected corruption, got {other:?}"),
                }
            }
            // Corruption never truncates.
            assert_eq!(std::fs::read(&p).unwrap(), d);
        }
    }

    #[test]
    fn torn_end_of_an_older_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let groups = sample_groups(3);
        let (path, offsets) = write_segment(dir.path(), "1.log", &groups);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        match replay_all(&path, false) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!(file, path);
                assert_eq!(offset, offsets[2]);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            full.len() as u64 - 3
        );
    }

    #[test]
    fn zero_filled_tail_is_dropped_as_unused() {
        let dir = tempfile::tempdir().unwrap();
        let groups = sample_groups(3);
        let (path, _) = write_segment(dir.path(), "1.log", &groups);
        let good = std::fs::metadata(&path).unwrap().len();
        let mut d = std::fs::read(&path).unwrap();
        d.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &d).unwrap();
        let (got, out) = replay_all(&path, true).unwrap();
        assert_eq!(got, groups);
        assert_eq!(
            (out.valid_len, out.torn_bytes, out.unused_bytes),
            (good, 0, 4096)
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    /// A preallocating writer's segment after a crash (never trimmed) ends in zeros: replayed
    /// whole as the last segment; trimmed, it is clean in any position. Its appends must not
    /// pay a size change per sync: the file is longer than its records.
    #[test]
    fn preallocated_segment_replays_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let groups = sample_groups(40);
        let mut w = WalWriter::create(&FsStorage, &path)
            .unwrap()
            .preallocating(4096);
        for g in &groups {
            w.append(g).unwrap();
            w.sync().unwrap();
            let on_disk = std::fs::metadata(&path).unwrap().len();
            assert!(on_disk >= w.len() + 2048, "{on_disk} vs {}", w.len());
        }
        let valid = w.len();
        // A crash: the writer is gone without trimming.
        drop(w);
        let copy = dir.path().join("2.log");
        std::fs::copy(&path, &copy).unwrap();
        assert!(
            matches!(replay_all(&copy, false), Err(Error::Corruption { .. })),
            "an untrimmed segment is not clean as an older segment"
        );
        let (got, out) = replay_all(&path, true).unwrap();
        assert_eq!(got, groups);
        assert_eq!((out.valid_len, out.torn_bytes), (valid, 0));
        assert!(out.unused_bytes >= 2048);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid);

        // Trimmed by its writer, the segment is clean as an older segment too.
        let mut w = WalWriter::create(&FsStorage, &path)
            .unwrap()
            .preallocating(1 << 20);
        w.append(&groups[0]).unwrap();
        w.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), w.len());
        w.append(&groups[1]).unwrap();
        w.sync().unwrap();
        w.trim().unwrap();
        let (got, out) = replay_all(&path, false).unwrap();
        assert_eq!(got, groups[..2]);
        assert_eq!(out.torn_bytes + out.unused_bytes, 0);

        // A large group is appended without reserving (that would write it twice).
        let big = vec![Entry::put(
            Bytes::from("big"),
            1,
            Bytes::from(vec![7u8; 64 << 10]),
            0,
        )];
        let mut w = WalWriter::create(&FsStorage, &path)
            .unwrap()
            .preallocating(1 << 20);
        w.append(&big).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), w.len());
    }

    #[test]
    fn stale_record_inside_a_torn_value_is_not_valid_data() {
        let dir = tempfile::tempdir().unwrap();
        // A value that happens to contain a well-formed old record.
        let mut embedded = Vec::new();
        encode_record(&mut embedded, &group(1, 2, 0)).unwrap();
        let groups = vec![
            group(10, 2, 1),
            vec![Entry::put(
                Bytes::from_static(b"k"),
                12,
                Bytes::from(embedded),
                0,
            )],
        ];
        let (path, offsets) = write_segment(dir.path(), "1.log", &groups);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 1]).unwrap();
        let (got, out) = replay_all(&path, true).unwrap();
        assert_eq!(got, groups[..1]);
        assert_eq!(out.valid_len, offsets[1]);
    }

    mod with_faults {
        use super::*;
        use crate::engine::fault::{CutMode, FaultKind, FaultStorage};

        fn replay_on(s: &FaultStorage, path: &Path) -> (Vec<Vec<Entry>>, ReplayOutcome) {
            let mut got = Vec::new();
            let out = replay(s, path, true, |g| got.push(g)).unwrap();
            (got, out)
        }

        #[test]
        fn enospc_append_is_undone_and_later_appends_work() {
            let dir = tempfile::tempdir().unwrap();
            let s = FaultStorage::with_seed(7);
            let path = dir.path().join("000001.log");
            let mut w = WalWriter::create(&s, &path).unwrap();
            let groups = sample_groups(6);
            w.append(&groups[0]).unwrap();
            w.append(&groups[1]).unwrap();
            for _ in 0..5 {
                let start = w.len();
                s.set_no_space(true);
                let err = w.append(&groups[2]).unwrap_err();
                assert!(err.is_no_space(), "{err}");
                assert_eq!(w.len(), start);
                assert_eq!(std::fs::metadata(&path).unwrap().len(), start);
                s.set_no_space(false);
            }
            s.fail_nth_write(0, FaultKind::Enospc);
            assert!(w.append(&groups[2]).unwrap_err().is_no_space());
            for g in &groups[2..] {
                w.append(g).unwrap();
            }
            w.sync().unwrap();
            let (got, out) = replay_on(&s, &path);
            assert_eq!(got, groups);
            assert_eq!(out.torn_bytes, 0);
        }

        #[test]
        fn unrepairable_append_poisons_the_writer() {
            let dir = tempfile::tempdir().unwrap();
            let s = FaultStorage::new();
            let path = dir.path().join("1.log");
            let mut w = WalWriter::create(&s, &path).unwrap();
            s.set_fail_after(Some(0));
            match w.append(&group(1, 3, 0)) {
                Err(Error::Io { context, .. }) => {
                    assert!(context.contains("could not be repaired"), "{context}")
                }
                other => panic!("expected Io, got {other:?}"),
            }
            assert!(matches!(w.append(&group(4, 1, 0)), Err(Error::Io { .. })));
            assert!(matches!(w.sync(), Err(Error::Io { .. })));
        }

        #[test]
        fn failed_sync_is_an_error() {
            let dir = tempfile::tempdir().unwrap();
            let s = FaultStorage::new();
            let mut w = WalWriter::create(&s, &dir.path().join("1.log")).unwrap();
            w.append(&group(1, 1, 0)).unwrap();
            s.fail_nth_sync(0, FaultKind::Eio);
            assert!(matches!(w.sync(), Err(Error::Io { .. })));
        }

        /// Synced groups always survive a torn power cut; replay never reports corruption and
        /// returns a prefix of what was written.
        #[test]
        fn power_cut_keeps_every_synced_group() {
            let groups = sample_groups(12);
            for seed in 0..60u64 {
                let dir = tempfile::tempdir().unwrap();
                let s = FaultStorage::with_seed(seed);
                let path = dir.path().join("1.log");
                let mut w = WalWriter::create(&s, &path).unwrap();
                s.sync_dir(dir.path()).unwrap();
                let synced = (seed % 12) as usize;
                for (i, g) in groups.iter().enumerate() {
                    w.append(g).unwrap();
                    if i + 1 == synced {
                        w.sync().unwrap();
                    }
                }
                drop(w);
                s.power_cut(CutMode::TearUnsynced { seed }).unwrap();
                let (got, out) = replay_on(&s, &path);
                assert!(got.len() >= synced, "seed {seed}: lost synced groups");
                assert_eq!(got, groups[..got.len()]);
                assert_eq!(std::fs::metadata(&path).unwrap().len(), out.valid_len);
            }
        }
    }
}
