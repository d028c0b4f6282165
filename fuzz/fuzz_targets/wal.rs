//! WAL recovery over arbitrary bytes: either the raw input is the segment, or a valid segment
//! built from the input is then truncated / bit-flipped as the input says. Recovery must
//! answer records, a torn tail or a corruption error: never a panic, a hang or an allocation
//! by a declared length.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sndv_kv::engine::wal::{self, WalWriter};
use sndv_kv::engine::{Entry, FsStorage};

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("sndv-fuzz-wal-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d.join("000001.log")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let p = path();
    if ctl & 1 == 0 {
        if std::fs::write(p, rest).is_err() {
            return;
        }
    } else {
        // Groups of entries taken from the input, then damage described by its tail.
        let (body, damage) = rest.split_at(rest.len() - rest.len().min(12));
        let Ok(mut w) = WalWriter::create(&FsStorage, p) else {
            return;
        };
        let mut seq = 1u64;
        for group in body.chunks(24) {
            let entries: Vec<Entry> = group
                .chunks(6)
                .map(|c| {
                    let key = Bytes::copy_from_slice(&c[..c.len().min(3)]);
                    seq += 1;
                    if c[0] & 1 == 0 {
                        Entry::delete(key, seq)
                    } else {
                        Entry::put(key, seq, Bytes::copy_from_slice(c), u64::from(c[0]))
                    }
                })
                .collect();
            if w.append(&entries).is_err() {
                return;
            }
        }
        drop(w);
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
    let is_last = ctl & 2 == 0;
    let mut n = 0usize;
    let _ = wal::replay(&FsStorage, p, is_last, |group| n += group.len());
});
