//! SSTable reader over arbitrary bytes: either the raw input is the file, or a valid table
//! built from the input is then damaged as the input says. Open, point lookups and full
//! iteration must give entries or errors: never a panic, a hang, or an allocation by a
//! declared length.
#![no_main]

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sndv_kv::engine::sstable::{Table, TableOptions, TableWriter};
use sndv_kv::engine::{Entry, FsStorage, Storage};

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("sndv-fuzz-sst-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d.join("000001.sst")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let p = path();
    let mut probes: Vec<Bytes> = Vec::new();
    if ctl & 1 == 0 {
        if std::fs::write(p, rest).is_err() {
            return;
        }
        probes.push(Bytes::new());
        if !rest.is_empty() {
            probes.push(Bytes::copy_from_slice(&rest[..rest.len().min(4)]));
        }
    } else {
        let (body, damage) = rest.split_at(rest.len() - rest.len().min(12));
        // Table order: key ascending, seqno descending.
        let mut entries: Vec<Entry> = body
            .chunks(5)
            .enumerate()
            .map(|(i, c)| {
                let key = Bytes::copy_from_slice(&c[..c.len().min(2)]);
                let seq = 1000 - i as u64;
                if c[0] & 3 == 0 {
                    Entry::delete(key, seq)
                } else {
                    Entry::put(key, seq, Bytes::copy_from_slice(c), u64::from(c[0] & 4))
                }
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key).then(b.seqno.cmp(&a.seqno)));
        entries.dedup_by(|a, b| a.key == b.key && a.seqno == b.seqno);
        probes.extend(entries.iter().map(|e| e.key.clone()));
        let Ok(file) = FsStorage.create(p) else {
            return;
        };
        let opts = TableOptions {
            // Small blocks so a few entries span several blocks and the index matters.
            block_size: 64 + usize::from(ctl >> 2),
            bloom_bits_per_key: u32::from(ctl >> 4),
        };
        let mut w = TableWriter::new(file, &opts);
        for e in &entries {
            if w.add(e).is_err() {
                return;
            }
        }
        if w.finish().is_err() {
            return;
        }
        let Ok(mut bytes) = std::fs::read(p) else {
            return;
        };
        for d in damage.chunks(3) {
            if bytes.is_empty() {
                break;
            }
            let at = (usize::from(d[0]) << 8 | usize::from(*d.get(1).unwrap_or(&0))) % bytes.len();
            match d.get(2) {
                Some(0) => bytes.truncate(at),
                Some(x) => bytes[at] ^= *x,
                None => {}
            }
        }
        if std::fs::write(p, &bytes).is_err() {
            return;
        }
    }
    let Ok(table) = Table::open(&FsStorage, p, 1) else {
        return;
    };
    let table = Arc::new(table);
    let _ = table.props();
    for k in &probes {
        let _ = table.may_contain(k);
        let _ = table.get(k, u64::MAX);
        let _ = table.get(k, 500);
    }
    // Bounded: a damaged table must end (or err) rather than loop.
    for (i, e) in table.iter(Bound::Unbounded).enumerate() {
        if e.is_err() || i > 100_000 {
            break;
        }
    }
    if let Some(k) = probes.first() {
        for e in table.iter(Bound::Excluded(k)).take(1000) {
            if e.is_err() {
                break;
            }
        }
    }
});
