//! Table-level tests against a `BTreeMap` model, through the real file system.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::engine::error::Error;
use crate::engine::storage::{FsStorage, Storage};
use crate::engine::types::{Entry, Kind};

/// Versions of each key, newest first.
type Model = BTreeMap<Bytes, Vec<Entry>>;

fn flatten(m: &Model) -> Vec<Entry> {
    m.values().flatten().cloned().collect()
}

fn model_get(m: &Model, key: &[u8], snap: u64) -> Option<Entry> {
    m.get(key)?.iter().find(|e| e.seqno <= snap).cloned()
}

fn random_model(rng: &mut StdRng, keys: usize) -> Model {
    let mut m = Model::new();
    let mut seq = 1u64;
    while m.len() < keys {
        // A small alphabet and varied lengths give shared prefixes, and the empty key.
        let len = rng.gen_range(0..24);
        let key: Vec<u8> = (0..len).map(|_| b"abcd"[rng.gen_range(0..4)]).collect();
        let versions = m.entry(Bytes::from(key.clone())).or_default();
        for _ in 0..rng.gen_range(1..5) {
            seq += rng.gen_range(1..4);
            let e = if rng.gen_bool(0.2) {
                Entry::delete(Bytes::from(key.clone()), seq)
            } else {
                let vlen = match rng.gen_range(0..10) {
                    0 => 0,
                    1 => rng.gen_range(1000..=10_000),
                    _ => rng.gen_range(1..100),
                };
                let value: Vec<u8> = (0..vlen).map(|_| rng.gen()).collect();
                let expire = if rng.gen_bool(0.3) {
                    rng.gen_range(1..1_000_000)
                } else {
                    0
                };
                Entry::put(Bytes::from(key.clone()), seq, Bytes::from(value), expire)
            };
            versions.push(e);
        }
    }
    // Newest first within a key; seqnos were handed out ascending.
    for v in m.values_mut() {
        v.sort_by_key(|e| std::cmp::Reverse(e.seqno));
    }
    m
}

fn write_table(path: &Path, entries: &[Entry], opts: &TableOptions) -> TableProps {
    write_table_with(path, entries, opts, |w| w)
}

/// [`write_table`] through a writer adjusted by `setup` first.
fn write_table_with(
    path: &Path,
    entries: &[Entry],
    opts: &TableOptions,
    setup: impl FnOnce(TableWriter) -> TableWriter,
) -> TableProps {
    let file = FsStorage.create(path).unwrap();
    let mut w = setup(TableWriter::new(file, opts));
    assert!(w.is_empty());
    for e in entries {
        w.add(e).unwrap();
    }
    assert_eq!(w.is_empty(), entries.is_empty());
    let approx = w.approx_size();
    let props = w.finish().unwrap();
    assert!(approx <= props.file_size);
    props
}

fn open(path: &Path) -> crate::engine::error::Result<Arc<Table>> {
    Table::open(&FsStorage, path, 7).map(Arc::new)
}

fn collect(t: &Arc<Table>, start: Bound<&[u8]>) -> Vec<Entry> {
    t.iter(start).map(|r| r.unwrap()).collect()
}

fn expected_props(m: &Model, file_size: u64) -> TableProps {
    let all = flatten(m);
    let expiries: Vec<u64> = all
        .iter()
        .map(|e| e.expire_at)
        .filter(|&x| x != 0)
        .collect();
    TableProps {
        smallest_key: m.keys().next().cloned().unwrap_or_default(),
        largest_key: m.keys().last().cloned().unwrap_or_default(),
        min_seqno: all.iter().map(|e| e.seqno).min().unwrap_or(0),
        max_seqno: all.iter().map(|e| e.seqno).max().unwrap_or(0),
        min_expire: expiries.iter().copied().min().unwrap_or(0),
        max_expire: expiries.iter().copied().max().unwrap_or(0),
        entries: all.len() as u64,
        tombstones: all.iter().filter(|e| e.kind == Kind::Delete).count() as u64,
        type_tags: all.iter().fold(0, |acc, e| acc | 1 << e.type_tag),
        file_size,
    }
}

fn check_against_model(t: &Arc<Table>, m: &Model, rng: &mut StdRng) {
    let all = flatten(m);
    assert_eq!(*t.props(), expected_props(m, t.props().file_size));
    for (k, versions) in m {
        let mut snaps = vec![0, u64::MAX];
        for v in versions {
            snaps.extend([v.seqno, v.seqno - 1, v.seqno + 1]);
        }
        for s in snaps {
            assert_eq!(t.get(k, s).unwrap(), model_get(m, k, s), "key {k:?} at {s}");
        }
    }
    for _ in 0..500 {
        let k: Vec<u8> = (0..rng.gen_range(0..26))
            .map(|_| b"abcde"[rng.gen_range(0..5)])
            .collect();
        assert_eq!(t.get(&k, u64::MAX).unwrap(), model_get(m, &k, u64::MAX));
    }

    assert_eq!(collect(t, Bound::Unbounded), all);
    let mut probes: Vec<Vec<u8>> = m.keys().step_by(37).map(|k| k.to_vec()).collect();
    probes.extend([
        b"".to_vec(),
        b"abc\x00".to_vec(),
        b"zzzz".to_vec(),
        b"b".to_vec(),
        // Excluded must skip every version of a key even when they span blocks.
        b"bbhot".to_vec(),
    ]);
    for p in probes {
        let inc: Vec<Entry> = all.iter().filter(|e| e.key >= p).cloned().collect();
        let exc: Vec<Entry> = all.iter().filter(|e| e.key > p).cloned().collect();
        assert_eq!(collect(t, Bound::Included(&p)), inc, "from {p:?}");
        assert_eq!(collect(t, Bound::Excluded(&p)), exc, "after {p:?}");
    }
}

#[test]
fn roundtrip_against_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let mut m = random_model(&mut rng, 3000);
    // One key whose versions span several blocks.
    let hot = Bytes::from_static(b"bbhot");
    let hot_versions: Vec<Entry> = (0..400u64)
        .rev()
        .map(|i| {
            Entry::put(
                hot.clone(),
                1_000_000 + i * 2,
                Bytes::from(vec![7u8; 50]),
                0,
            )
        })
        .collect();
    m.insert(hot, hot_versions);

    for (i, block_size) in [4096, 256, 0].into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.sst"));
        let opts = TableOptions {
            block_size,
            ..TableOptions::default()
        };
        let props = write_table(&path, &flatten(&m), &opts);
        assert_eq!(props.file_size, std::fs::metadata(&path).unwrap().len());
        let t = open(&path).unwrap();
        assert_eq!(t.id(), 7);
        assert_eq!(t.path(), path);
        assert_eq!(*t.props(), props);
        assert!(t.data_blocks() > 1);
        check_against_model(&t, &m, &mut rng);
    }
}

#[test]
fn version_1_tables_with_plain_filters_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(43);
    let m = random_model(&mut rng, 3000);
    let path = dir.path().join("v1.sst");
    write_table_with(&path, &flatten(&m), &TableOptions::default(), |w| {
        w.version_1()
    });
    let bytes = std::fs::read(&path).unwrap();
    let footer = &bytes[bytes.len() - 64..];
    assert_eq!(footer[48..52], 1u32.to_le_bytes(), "a version 1 footer");
    let t = open(&path).unwrap();
    // Every present key passes the plain filter and reads back; absent ones mostly do not.
    check_against_model(&t, &m, &mut rng);
    for k in m.keys() {
        assert!(t.may_contain(k), "{k:?}");
    }
    let fp = (0..10_000u32)
        .filter(|i| t.may_contain(format!("nokey{i:08}").as_bytes()))
        .count();
    assert!(fp < 300, "false positive rate {fp}/10000");
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Table>();
    send::<TableIter>();
    send::<TableWriter>();
}

#[test]
fn empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sst");
    let props = write_table(&path, &[], &TableOptions::default());
    assert_eq!(props.entries, 0);
    let t = open(&path).unwrap();
    assert_eq!(t.get(b"", u64::MAX).unwrap(), None);
    assert!(collect(&t, Bound::Unbounded).is_empty());
    assert!(collect(&t, Bound::Included(b"a")).is_empty());
}

#[test]
fn bloom_skips_blocks_and_has_low_fp_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sst");
    let entries: Vec<Entry> = (0..10_000u32)
        .map(|i| {
            Entry::put(
                Bytes::from(format!("key{i:08}")),
                1,
                Bytes::from_static(b"v"),
                0,
            )
        })
        .collect();
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    write_table(&path, &sorted, &TableOptions::default());
    let t = open(&path).unwrap();
    for e in &sorted {
        assert!(t.may_contain(&e.key));
    }
    let fp = (0..10_000u32)
        .filter(|i| t.may_contain(format!("nokey{i:08}").as_bytes()))
        .count();
    assert!(fp < 200, "false positive rate {fp}/10000 over 2%");

    assert_eq!(t.stats().bloom_negatives, 10_000 - fp as u64);
    // Absent keys the filter rejects read no block; present keys read exactly one.
    let before = t.stats().blocks_read;
    for i in 0..100u32 {
        let k = format!("nokey{i:08}");
        if !t.may_contain(k.as_bytes()) {
            assert_eq!(t.get(k.as_bytes(), u64::MAX).unwrap(), None);
        }
    }
    assert_eq!(t.stats().blocks_read, before);
    assert_eq!(t.get(b"key00000042", 1).unwrap().unwrap().value, "v");
    assert_eq!(t.stats().blocks_read, before + 1);
}

#[test]
fn writer_rejects_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let e = |k: &'static [u8], s| Entry::put(Bytes::from_static(k), s, Bytes::new(), 0);
    let cases: [(Entry, Entry); 4] = [
        (e(b"b", 5), e(b"a", 9)),
        (e(b"b", 5), e(b"b", 5)),
        (e(b"b", 5), e(b"b", 6)),
        (e(b"b", 5), e(b"", 1)),
    ];
    for (first, second) in cases {
        let file = FsStorage.create(&dir.path().join("o.sst")).unwrap();
        let mut w = TableWriter::new(file, &TableOptions::default());
        w.add(&first).unwrap();
        assert!(matches!(w.add(&second), Err(Error::Invalid(_))));
    }
    let file = FsStorage.create(&dir.path().join("t.sst")).unwrap();
    let mut w = TableWriter::new(file, &TableOptions::default());
    let mut bad = e(b"a", 1);
    bad.type_tag = 64;
    assert!(matches!(w.add(&bad), Err(Error::Invalid(_))));
    w.add(&e(b"b", 5)).unwrap();
    w.add(&e(b"b", 4)).unwrap();
    w.add(&e(b"c", 9)).unwrap();
    assert_eq!(w.finish().unwrap().entries, 3);
}

fn is_corruption(e: &Error) -> bool {
    matches!(e, Error::Corruption { .. })
}

/// Opens `bytes` as a table and checks that every answer is either the model's or a
/// corruption error. Returns true if corruption was detected anywhere.
fn correct_or_err(path: &Path, bytes: &[u8], m: &Model) -> bool {
    std::fs::write(path, bytes).unwrap();
    let t = match open(path) {
        Err(e) => {
            assert!(is_corruption(&e), "unexpected error kind: {e}");
            return true;
        }
        Ok(t) => t,
    };
    let mut detected = false;
    for (k, versions) in m {
        for s in [u64::MAX, versions[versions.len() - 1].seqno, 0] {
            match t.get(k, s) {
                Ok(got) => assert_eq!(got, model_get(m, k, s), "wrong answer for {k:?}"),
                Err(e) => {
                    assert!(is_corruption(&e), "unexpected error kind: {e}");
                    detected = true;
                }
            }
        }
    }
    let all = flatten(m);
    for start in [Bound::Unbounded, Bound::Included(&b"c"[..])] {
        let want: Vec<&Entry> = match start {
            Bound::Included(p) => all.iter().filter(|e| e.key.as_ref() >= p).collect(),
            _ => all.iter().collect(),
        };
        let mut it = t.iter(start);
        let mut n = 0;
        for r in it.by_ref() {
            match r {
                Ok(e) => {
                    assert_eq!(Some(&&e), want.get(n), "wrong entry {n} from iter");
                    n += 1;
                }
                Err(e) => {
                    assert!(is_corruption(&e), "unexpected error kind: {e}");
                    detected = true;
                    break;
                }
            }
        }
        assert!(it.next().is_none(), "iterator continued after an error");
        if !detected {
            assert_eq!(n, want.len());
        }
    }
    detected
}

fn small_model() -> Model {
    let mut m = Model::new();
    let mut seq = 1;
    for i in 0..40u32 {
        let key = Bytes::from(format!("{}{i:03}", ["a", "b", "c", "d"][i as usize % 4]));
        let n = if i % 7 == 0 { 6 } else { 1 };
        let mut versions = Vec::new();
        for j in 0..n as u64 {
            seq += 1;
            versions.push(if j % 3 == 1 {
                Entry::delete(key.clone(), seq)
            } else {
                Entry::put(
                    key.clone(),
                    seq,
                    Bytes::from(vec![b'v'; (i % 5 * 7) as usize]),
                    j,
                )
            });
        }
        versions.reverse();
        m.entry(key).or_default().extend(versions);
    }
    m
}

#[test]
fn every_byte_flip_is_detected_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model();
    let good = dir.path().join("good.sst");
    let opts = TableOptions {
        block_size: 128,
        bloom_bits_per_key: 10,
    };
    write_table(&good, &flatten(&m), &opts);
    let bytes = std::fs::read(&good).unwrap();
    assert!(open(&good).unwrap().data_blocks() >= 5);

    let bad = dir.path().join("bad.sst");
    assert!(!correct_or_err(&bad, &bytes, &m));
    for pos in 0..bytes.len() {
        for pattern in [0x01, 0xff] {
            let mut b = bytes.clone();
            b[pos] ^= pattern;
            // Every byte is under some checksum (or is the magic), so a flip is always caught.
            assert!(correct_or_err(&bad, &b, &m), "flip at {pos} went unnoticed");
        }
    }
}

#[test]
fn truncation_and_extension_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model();
    let good = dir.path().join("good.sst");
    write_table(
        &good,
        &flatten(&m),
        &TableOptions {
            block_size: 128,
            bloom_bits_per_key: 10,
        },
    );
    let bytes = std::fs::read(&good).unwrap();
    let bad: PathBuf = dir.path().join("bad.sst");
    for len in 0..bytes.len() {
        std::fs::write(&bad, &bytes[..len]).unwrap();
        let e = open(&bad).unwrap_err();
        assert!(is_corruption(&e), "cut at {len}: {e}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&bad, &longer).unwrap();
    assert!(open(&bad).is_err());
    // Garbage in front shifts every offset.
    let mut shifted = vec![0u8; 16];
    shifted.extend_from_slice(&bytes);
    std::fs::write(&bad, &shifted).unwrap();
    assert!(open(&bad).is_err());
}

#[test]
fn random_damage_to_a_large_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let m = random_model(&mut rng, 300);
    let good = dir.path().join("good.sst");
    write_table(&good, &flatten(&m), &TableOptions::default());
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("bad.sst");
    for _ in 0..300 {
        let mut b = bytes.clone();
        // Bias towards the tail, where the meta blocks are small targets.
        let pos = if rng.gen_bool(0.5) {
            rng.gen_range(0..b.len())
        } else {
            b.len() - 1 - rng.gen_range(0..b.len().min(2048))
        };
        b[pos] ^= rng.gen_range(1..=255u8);
        assert!(
            correct_or_err(&bad, &b, &m),
            "damage at {pos} went unnoticed"
        );
    }
    // A missing file is an I/O error, not corruption.
    let e = open(&dir.path().join("missing.sst")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
}

#[test]
fn compaction_reads_leave_the_block_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let m = random_model(&mut rng, 2000);
    let path = dir.path().join("c.sst");
    write_table(&path, &flatten(&m), &TableOptions::default());
    let cache = Arc::new(crate::engine::cache::BlockCache::new(64 << 20));
    let t = Arc::new(Table::open_cached(&FsStorage, &path, 3, Some(cache.clone())).unwrap());
    assert!(t.data_blocks() > 1);
    // A whole-table read for compaction yields everything and caches nothing.
    let all: Vec<Entry> = t.iter_uncached().map(|r| r.unwrap()).collect();
    assert_eq!(all, flatten(&m));
    assert_eq!(cache.len(), 0);
    // A user scan and point reads do fill it, and an uncached read then uses what is there.
    assert_eq!(collect(&t, Bound::Unbounded), all);
    assert_eq!(cache.len(), t.data_blocks());
    let hits = cache.hits();
    assert_eq!(t.iter_uncached().count(), all.len());
    assert_eq!(cache.hits(), hits + t.data_blocks() as u64);
}

#[test]
fn point_reads_with_a_long_shared_prefix() {
    // Every key starts with the same 9 bytes (the index search skips them), one key is the
    // prefix itself, some continue with zero bytes; lookups come from inside and outside it.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(77);
    let prefix = b"user:0000";
    let mut m = Model::new();
    for (k, versions) in random_model(&mut rng, 3000) {
        let mut key = prefix.to_vec();
        key.extend(k.iter().map(|&b| if b == b'd' { 0 } else { b }));
        let key = Bytes::from(key);
        let vs: Vec<Entry> = versions
            .into_iter()
            .map(|mut e| {
                e.key = key.clone();
                e
            })
            .collect();
        m.entry(key).or_default().extend(vs);
    }
    for v in m.values_mut() {
        v.sort_by_key(|e| std::cmp::Reverse(e.seqno));
        v.dedup_by_key(|e| e.seqno);
    }
    assert!(m.contains_key(prefix.as_slice()));
    for (i, block_size) in [4096, 256].into_iter().enumerate() {
        let path = dir.path().join(format!("p{i}.sst"));
        let opts = TableOptions {
            block_size,
            ..TableOptions::default()
        };
        write_table(&path, &flatten(&m), &opts);
        let t = open(&path).unwrap();
        assert!(t.data_blocks() > 10);
        for (k, versions) in &m {
            for s in [0, u64::MAX, versions[0].seqno, versions[0].seqno - 1] {
                assert_eq!(
                    t.get(k, s).unwrap(),
                    model_get(&m, k, s),
                    "key {k:?} at {s}"
                );
            }
            // Just above and below each key: absent, or the neighbour's answer is not taken.
            let mut above = k.to_vec();
            above.push(0);
            assert_eq!(
                t.get(&above, u64::MAX).unwrap(),
                model_get(&m, &above, u64::MAX)
            );
        }
        for probe in [
            b"".as_slice(),
            b"a",
            b"user:",
            b"user:000",
            b"user:0000\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"user:0001",
            b"user:00000",
            b"zzz",
        ] {
            assert_eq!(
                t.get(probe, u64::MAX).unwrap(),
                model_get(&m, probe, u64::MAX),
                "probe {probe:?}"
            );
        }
    }
}
