//! The flush agent: writes the oldest immutable memtable to an L0 table, installs it through
//! `apply`, then deletes the WAL segments that memtable covered.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::blackboard::{AgentState, Blackboard};
use crate::engine::error::{IoContext, Result};
use crate::engine::manifest::{Edit, TableMeta};
use crate::engine::memtable::Memtable;
use crate::engine::sstable::{Table, TableOptions, TableWriter};
use crate::engine::version::TableHandle;

pub(crate) fn run(bb: Arc<Blackboard>) {
    let Some(status) = bb.agent("flush").cloned() else {
        return;
    };
    loop {
        let ep = bb.epoch();
        if bb.is_shutdown() {
            break;
        }
        let v = bb.current();
        let work = bb
            .poisoned()
            .is_none()
            .then(|| v.imms.last().cloned())
            .flatten();
        let Some(imm) = work else {
            bb.wait_change(ep, None);
            continue;
        };
        status.set(AgentState::Working);
        let t = Instant::now();
        match flush_one(&bb, &imm) {
            Ok(bytes) => {
                *bb.flush_error.lock() = None;
                status.tasks.fetch_add(1, Relaxed);
                status.bytes_written.fetch_add(bytes, Relaxed);
                bb.counters.flushes.fetch_add(1, Relaxed);
                status.set(AgentState::Idle);
            }
            Err(e) => {
                tracing::warn!(error = %e, "flush failed; will retry");
                bb.counters.flush_failures.fetch_add(1, Relaxed);
                *bb.flush_error.lock() = Some(e.to_string());
                status.set(AgentState::Idle);
                bb.notify();
                // Back off before retrying (e.g. until space returns); shutdown cuts it short.
                let ep = bb.epoch();
                bb.wait_change(ep, Some(Duration::from_millis(200)));
            }
        }
        status
            .busy_us
            .fetch_add(t.elapsed().as_micros() as u64, Relaxed);
    }
    status.set(AgentState::Stopped);
}

pub(crate) fn table_options(bb: &Blackboard) -> TableOptions {
    TableOptions {
        block_size: bb.cfg.block_size,
        bloom_bits_per_key: bb.cfg.bloom_bits_per_key,
    }
}

/// Writes a sorted stream into one finished, synced table; `None` if the stream was empty.
pub(crate) fn write_table(
    bb: &Blackboard,
    id: u64,
    level: u8,
    entries: &mut dyn Iterator<Item = Result<crate::engine::types::Entry>>,
) -> Result<Option<Arc<TableHandle>>> {
    let path = bb.table_path(id);
    let file = bb
        .storage
        .create(&path)
        .ctx(|| format!("creating {}", path.display()))?;
    let mut w = TableWriter::new(file, &table_options(bb));
    let res = (|| {
        for e in entries {
            w.add(&e?)?;
        }
        Ok::<_, crate::engine::Error>(())
    })();
    if let Err(e) = res {
        drop(w);
        let _ = bb.storage.remove(&path);
        return Err(e);
    }
    if w.is_empty() {
        drop(w);
        let _ = bb.storage.remove(&path);
        return Ok(None);
    }
    if let Err(e) = w.finish() {
        let _ = bb.storage.remove(&path);
        return Err(e);
    }
    open_handle(bb, id, level).map(Some)
}

/// Opens a finished table; its size and key range come from the table's own properties.
pub(crate) fn open_handle(bb: &Blackboard, id: u64, level: u8) -> Result<Arc<TableHandle>> {
    let path = bb.table_path(id);
    let table = Arc::new(Table::open_cached(
        bb.storage.as_ref(),
        &path,
        id,
        bb.cache.clone(),
    )?);
    let p = table.props();
    let meta = TableMeta {
        id,
        level,
        size: p.file_size,
        smallest: p.smallest_key.clone(),
        largest: p.largest_key.clone(),
        min_seqno: p.min_seqno,
        max_seqno: p.max_seqno,
    };
    Ok(Arc::new(TableHandle::new(
        meta,
        table,
        bb.storage.clone(),
        path,
    )))
}

/// Returns the bytes written.
fn flush_one(bb: &Blackboard, imm: &Arc<Memtable>) -> Result<u64> {
    let v = bb.current();
    let id = bb.new_file_number();
    // Inside one memtable only the newest version of a key can matter to any reader that will
    // use the table (older snapshots still hold this memtable).
    let mut it = imm
        .iter_newest()
        .filter(|r| r.as_ref().map_or(true, |e| !v.is_dropped(e)));
    let handle = write_table(bb, id, 0, &mut it)?;
    if handle.is_some() {
        bb.storage
            .sync_dir(&bb.dir)
            .ctx(|| format!("syncing directory {}", bb.dir.display()))?;
    }
    // The oldest WAL segment still needed is the oldest one of the memtables left.
    let log_number = v
        .imms
        .iter()
        .filter(|m| !Arc::ptr_eq(m, imm))
        .chain(std::iter::once(&v.mem))
        .flat_map(|m| m.wal_numbers())
        .min();
    let bytes = handle.as_ref().map_or(0, |h| h.meta.size);
    let edit = Edit {
        added: handle.iter().map(|h| h.meta.clone()).collect(),
        log_number,
        ..Default::default()
    };
    let res = bb.apply(edit, |cur| {
        let mut nv = cur.clone();
        nv.imms.retain(|m| !Arc::ptr_eq(m, imm));
        if let Some(h) = &handle {
            nv.levels[0].insert(0, h.clone());
        }
        nv
    });
    if let Err(e) = res {
        if let Some(h) = handle {
            h.mark_obsolete();
        }
        return Err(e);
    }
    bb.counters.table_bytes_written.fetch_add(bytes, Relaxed);
    for n in imm.wal_numbers() {
        let p = bb.wal_path(n);
        if let Err(e) = bb.storage.remove(&p) {
            tracing::warn!(file = %p.display(), error = %e, "could not remove flushed WAL segment");
        }
    }
    Ok(bytes)
}
