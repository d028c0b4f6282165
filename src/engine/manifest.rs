//! The MANIFEST: a checksummed log of version edits (tables added and removed, the oldest WAL
//! segment still needed, the next file number, the last sequence number, prefix drops).
//! Rewritten atomically as one snapshot edit on every open; appended (and synced) by `apply`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes};

use super::error::{Error, IoContext, Result};
use super::storage::{Storage, WritableFile};
use super::types::SeqNo;

pub const MANIFEST_FILE: &str = "MANIFEST";
const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 8;

/// What the MANIFEST knows of a live table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    pub id: u64,
    pub level: u8,
    pub size: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
    pub min_seqno: SeqNo,
    pub max_seqno: SeqNo,
}

/// A prefix drop: every version under `prefix` with seqno < `seqno` is gone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Drop {
    pub prefix: Bytes,
    pub seqno: SeqNo,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    pub added: Vec<TableMeta>,
    /// (level, table id)
    pub removed: Vec<(u8, u64)>,
    pub log_number: Option<u64>,
    pub next_file: Option<u64>,
    pub last_seqno: Option<SeqNo>,
    pub drops_added: Vec<Drop>,
    pub drops_removed: Vec<Drop>,
}

/// The state the MANIFEST describes, built by replaying its edits.
#[derive(Debug, Clone, Default)]
pub struct ManifestState {
    pub tables: BTreeMap<u64, TableMeta>,
    pub log_number: u64,
    pub next_file: u64,
    pub last_seqno: SeqNo,
    pub drops: Vec<Drop>,
}

impl ManifestState {
    pub fn apply(&mut self, e: &Edit) {
        for (_, id) in &e.removed {
            self.tables.remove(id);
        }
        for t in &e.added {
            self.tables.insert(t.id, t.clone());
        }
        if let Some(n) = e.log_number {
            self.log_number = self.log_number.max(n);
        }
        if let Some(n) = e.next_file {
            self.next_file = self.next_file.max(n);
        }
        if let Some(n) = e.last_seqno {
            self.last_seqno = self.last_seqno.max(n);
        }
        self.drops.retain(|d| !e.drops_removed.contains(d));
        self.drops.extend(e.drops_added.iter().cloned());
    }

    /// One edit that recreates this state.
    pub fn snapshot(&self) -> Edit {
        Edit {
            added: self.tables.values().cloned().collect(),
            removed: vec![],
            log_number: Some(self.log_number),
            next_file: Some(self.next_file),
            last_seqno: Some(self.last_seqno),
            drops_added: self.drops.clone(),
            drops_removed: vec![],
        }
    }
}

fn put_bytes(b: &mut Vec<u8>, s: &[u8]) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s);
}

fn put_drop(b: &mut Vec<u8>, d: &Drop) {
    put_bytes(b, &d.prefix);
    b.put_u64_le(d.seqno);
}

pub fn encode_edit(e: &Edit) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.put_u8(FORMAT_VERSION);
    p.put_u32_le(e.added.len() as u32);
    for t in &e.added {
        p.put_u64_le(t.id);
        p.put_u8(t.level);
        p.put_u64_le(t.size);
        put_bytes(&mut p, &t.smallest);
        put_bytes(&mut p, &t.largest);
        p.put_u64_le(t.min_seqno);
        p.put_u64_le(t.max_seqno);
    }
    p.put_u32_le(e.removed.len() as u32);
    for (level, id) in &e.removed {
        p.put_u8(*level);
        p.put_u64_le(*id);
    }
    for v in [e.log_number, e.next_file, e.last_seqno] {
        match v {
            Some(n) => {
                p.put_u8(1);
                p.put_u64_le(n);
            }
            None => p.put_u8(0),
        }
    }
    p.put_u32_le(e.drops_added.len() as u32);
    e.drops_added.iter().for_each(|d| put_drop(&mut p, d));
    p.put_u32_le(e.drops_removed.len() as u32);
    e.drops_removed.iter().for_each(|d| put_drop(&mut p, d));

    let mut rec = Vec::with_capacity(HEADER + p.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&(p.len() as u32).to_le_bytes());
    h.update(&p);
    rec.put_u32_le(h.finalize());
    rec.put_u32_le(p.len() as u32);
    rec.extend_from_slice(&p);
    rec
}

/// A reader that turns every short read into one error.
struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn need(&self, n: usize) -> std::result::Result<(), String> {
        if self.0.remaining() < n {
            Err(format!("truncated field: need {n} bytes"))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn bytes(&mut self) -> std::result::Result<Bytes, String> {
        let n = self.u32()? as usize;
        self.need(n)?;
        let b = Bytes::copy_from_slice(&self.0[..n]);
        self.0.advance(n);
        Ok(b)
    }
    fn opt(&mut self) -> std::result::Result<Option<u64>, String> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(self.u64()?),
            t => return Err(format!("bad option tag {t}")),
        })
    }
    /// A count that cannot exceed what the remaining bytes could hold.
    fn count(&mut self, min_item: usize) -> std::result::Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.0.remaining() {
            return Err(format!("count {n} exceeds record"));
        }
        Ok(n)
    }
}

pub fn decode_edit(payload: &[u8]) -> std::result::Result<Edit, String> {
    let mut c = Cur(payload);
    let v = c.u8()?;
    if v != FORMAT_VERSION {
        return Err(format!("unknown manifest format version {v}"));
    }
    let mut e = Edit::default();
    for _ in 0..c.count(41)? {
        e.added.push(TableMeta {
            id: c.u64()?,
            level: c.u8()?,
            size: c.u64()?,
            smallest: c.bytes()?,
            largest: c.bytes()?,
            min_seqno: c.u64()?,
            max_seqno: c.u64()?,
        });
    }
    for _ in 0..c.count(9)? {
        e.removed.push((c.u8()?, c.u64()?));
    }
    e.log_number = c.opt()?;
    e.next_file = c.opt()?;
    e.last_seqno = c.opt()?;
    for _ in 0..c.count(12)? {
        e.drops_added.push(Drop {
            prefix: c.bytes()?,
            seqno: c.u64()?,
        });
    }
    for _ in 0..c.count(12)? {
        e.drops_removed.push(Drop {
            prefix: c.bytes()?,
            seqno: c.u64()?,
        });
    }
    if c.0.has_remaining() {
        return Err("trailing bytes in edit".into());
    }
    Ok(e)
}

/// Replays a MANIFEST. A damaged record that reaches the end of the file is a torn append
/// (that edit was never acknowledged) and is ignored; damage with data after it is corruption.
pub fn recover(storage: &dyn Storage, path: &Path) -> Result<ManifestState> {
    let data = storage
        .read(path)
        .ctx(|| format!("reading {}", path.display()))?;
    let mut st = ManifestState::default();
    let mut off = 0usize;
    while off < data.len() {
        let rest = &data[off..];
        let torn = |reason: &str| -> Result<ManifestState> {
            Err(Error::corruption(path, off as u64, reason))
        };
        if rest.len() < HEADER {
            tracing::warn!(file = %path.display(), offset = off, "ignoring torn MANIFEST tail");
            break;
        }
        let crc = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        if HEADER + len > rest.len() {
            tracing::warn!(file = %path.display(), offset = off, "ignoring torn MANIFEST tail");
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[4..8]);
        h.update(&rest[HEADER..HEADER + len]);
        if h.finalize() != crc {
            if HEADER + len == rest.len() {
                tracing::warn!(file = %path.display(), offset = off, "ignoring torn MANIFEST tail");
                break;
            }
            return torn("checksum mismatch");
        }
        match decode_edit(&rest[HEADER..HEADER + len]) {
            Ok(e) => st.apply(&e),
            Err(reason) => return torn(&reason),
        }
        off += HEADER + len;
    }
    Ok(st)
}

/// The open MANIFEST, appended to by `apply`.
pub struct ManifestWriter {
    file: Box<dyn WritableFile>,
    path: PathBuf,
}

impl ManifestWriter {
    /// Writes `state` as one snapshot edit to a temp file and renames it over the MANIFEST.
    pub fn rewrite(storage: &dyn Storage, dir: &Path, state: &ManifestState) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join("MANIFEST.tmp");
        let ctx = || format!("writing {}", tmp.display());
        let mut file = storage.create(&tmp).ctx(ctx)?;
        file.append(&encode_edit(&state.snapshot())).ctx(ctx)?;
        file.sync().ctx(ctx)?;
        storage
            .rename(&tmp, &path)
            .ctx(|| format!("renaming {} to MANIFEST", tmp.display()))?;
        storage
            .sync_dir(dir)
            .ctx(|| format!("syncing directory {}", dir.display()))?;
        Ok(ManifestWriter { file, path })
    }

    /// Appends one edit and syncs it. A failed append is undone and returned (ENOSPC can pass);
    /// a failed sync, or an append that cannot be undone, is [`Error::Poisoned`].
    pub fn append(&mut self, e: &Edit) -> Result<()> {
        let rec = encode_edit(e);
        let start = self.file.len();
        if let Err(err) = self.file.append(&rec) {
            // Leave no partial record behind: the next append must start on a record boundary.
            if let Err(t) = self.file.truncate(start) {
                return Err(Error::Poisoned(format!(
                    "could not undo a failed append to {}: {t}",
                    self.path.display()
                )));
            }
            return Err(Error::io(
                format!("appending to {}", self.path.display()),
                err,
            ));
        }
        self.file
            .sync()
            .map_err(|e| Error::Poisoned(format!("syncing {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::FsStorage;

    fn meta(id: u64) -> TableMeta {
        TableMeta {
            id,
            level: 0,
            size: 100,
            smallest: Bytes::from("a"),
            largest: Bytes::from("z"),
            min_seqno: 1,
            max_seqno: 9,
        }
    }

    #[test]
    fn edits_roundtrip_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let st = ManifestState::default();
        let mut w = ManifestWriter::rewrite(&FsStorage, dir.path(), &st).unwrap();
        let e1 = Edit {
            added: vec![meta(3), meta(4)],
            log_number: Some(5),
            next_file: Some(6),
            last_seqno: Some(100),
            drops_added: vec![Drop {
                prefix: Bytes::from("\x01"),
                seqno: 50,
            }],
            ..Default::default()
        };
        assert_eq!(decode_edit(&encode_edit(&e1)[HEADER..]).unwrap(), e1);
        w.append(&e1).unwrap();
        w.append(&Edit {
            removed: vec![(0, 3)],
            ..Default::default()
        })
        .unwrap();
        let got = recover(&FsStorage, &dir.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(got.tables.keys().copied().collect::<Vec<_>>(), vec![4]);
        assert_eq!((got.log_number, got.next_file, got.last_seqno), (5, 6, 100));
        assert_eq!(got.drops.len(), 1);
    }

    #[test]
    fn torn_tail_ignored_middle_damage_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        let mut w =
            ManifestWriter::rewrite(&FsStorage, dir.path(), &ManifestState::default()).unwrap();
        for i in 0..3 {
            w.append(&Edit {
                added: vec![meta(10 + i)],
                ..Default::default()
            })
            .unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        let rec = encode_edit(&Edit {
            added: vec![meta(12)],
            ..Default::default()
        })
        .len();
        // Every cut inside the last record loses exactly that record.
        for cut in full.len() - rec + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let st = recover(&FsStorage, &path).unwrap();
            assert_eq!(st.tables.len(), 2, "cut at {cut}");
        }
        // A flipped byte in a middle record is reported with its offset.
        let mut bad = full.clone();
        let mid = full.len() - 2 * rec;
        bad[mid + HEADER + 3] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        match recover(&FsStorage, &path) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, mid as u64),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
