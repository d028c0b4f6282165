//! The compaction agent. For now one rule keeps L0 bounded: when L0 reaches its trigger, merge
//! every L0 table with the overlapping L1 tables into new L1 tables. (The policy-driven agent
//! of "Engine II" replaces this.)

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::blackboard::{AgentState, Blackboard};
use crate::engine::error::{IoContext, Result};
use crate::engine::iter::{MergeIter, NewestIter, Source};
use crate::engine::manifest::Edit;
use crate::engine::types::{Entry, Kind, SeqNo};
use crate::engine::version::{TableHandle, Version};

use super::flush::write_table;

pub(crate) fn run(bb: Arc<Blackboard>) {
    let Some(status) = bb.agent("compaction").cloned() else {
        return;
    };
    loop {
        let ep = bb.epoch();
        if bb.is_shutdown() {
            break;
        }
        let v = bb.current();
        if bb.poisoned().is_some() || v.l0_count() < bb.cfg.l0_compaction_trigger {
            bb.wait_change(ep, None);
            continue;
        }
        status.set(AgentState::Working);
        let t = Instant::now();
        match compact_l0(&bb, &v) {
            Ok((read, written)) => {
                status.tasks.fetch_add(1, Relaxed);
                status.bytes_read.fetch_add(read, Relaxed);
                status.bytes_written.fetch_add(written, Relaxed);
                bb.counters.compactions.fetch_add(1, Relaxed);
                bb.counters.compaction_bytes_read.fetch_add(read, Relaxed);
                bb.counters.table_bytes_written.fetch_add(written, Relaxed);
                status.set(AgentState::Idle);
            }
            Err(e) => {
                tracing::warn!(error = %e, "compaction failed; will retry");
                bb.counters.compaction_failures.fetch_add(1, Relaxed);
                status.set(AgentState::Idle);
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

/// Merges all of L0 with the overlapping part of L1. Returns (bytes read, bytes written).
fn compact_l0(bb: &Blackboard, v: &Version) -> Result<(u64, u64)> {
    let l0: Vec<Arc<TableHandle>> = v.levels[0].clone();
    let lo = l0
        .iter()
        .map(|t| t.meta.smallest.clone())
        .min()
        .unwrap_or_default();
    let hi = l0
        .iter()
        .map(|t| t.meta.largest.clone())
        .max()
        .unwrap_or_default();
    let l1: Vec<Arc<TableHandle>> = v.levels[1]
        .iter()
        .filter(|t| t.overlaps(&lo, &hi))
        .cloned()
        .collect();
    // Nothing lives below L1 here, so tombstones and expired entries can go.
    let bottom = v.levels[2..].iter().all(|l| l.is_empty());
    let now = bb.clock.now_ms();
    let mut sources: Vec<Source> = Vec::new();
    for t in l0.iter().chain(l1.iter()) {
        sources.push(Box::new(t.table.iter(std::ops::Bound::Unbounded)));
    }
    let read: u64 = l0.iter().chain(l1.iter()).map(|t| t.meta.size).sum();
    let merged = NewestIter::new(MergeIter::new(sources), SeqNo::MAX);
    let mut kept = merged.filter(|r| match r {
        Ok(e) => keep(v, e, bottom, now),
        Err(_) => true,
    });
    let mut outputs: Vec<Arc<TableHandle>> = Vec::new();
    let target = bb.cfg.table_target_bytes;
    loop {
        if bb.is_shutdown() {
            for o in &outputs {
                o.mark_obsolete();
            }
            return Err(crate::engine::Error::Closed);
        }
        let id = bb.new_file_number();
        let mut written = 0u64;
        let mut chunk = std::iter::from_fn(|| {
            if written >= target {
                return None;
            }
            let r = kept.next()?;
            if let Ok(e) = &r {
                written += (e.key.len() + e.value.len() + 24) as u64;
            }
            Some(r)
        });
        match write_table(bb, id, 1, &mut chunk) {
            Ok(Some(h)) => outputs.push(h),
            Ok(None) => break,
            Err(e) => {
                for o in &outputs {
                    o.mark_obsolete();
                }
                return Err(e);
            }
        }
    }
    if !outputs.is_empty() {
        bb.storage
            .sync_dir(&bb.dir)
            .ctx(|| format!("syncing directory {}", bb.dir.display()))?;
    }
    let written: u64 = outputs.iter().map(|t| t.meta.size).sum();
    let mut edit = Edit::default();
    edit.removed.extend(l0.iter().map(|t| (0u8, t.meta.id)));
    edit.removed.extend(l1.iter().map(|t| (1u8, t.meta.id)));
    edit.added.extend(outputs.iter().map(|t| t.meta.clone()));
    let gone = |t: &Arc<TableHandle>| l0.iter().chain(l1.iter()).any(|x| x.meta.id == t.meta.id);
    let res = bb.apply(edit, |cur| {
        let mut nv = cur.clone();
        nv.levels[0].retain(|t| !gone(t));
        nv.levels[1].retain(|t| !gone(t));
        nv.levels[1].extend(outputs.iter().cloned());
        nv.levels[1].sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        nv
    });
    if let Err(e) = res {
        for o in &outputs {
            o.mark_obsolete();
        }
        return Err(e);
    }
    for t in l0.iter().chain(l1.iter()) {
        t.mark_obsolete();
    }
    Ok((read, written))
}

/// Where no older version can reappear below, tombstones, expired and dropped entries go.
fn keep(v: &Version, e: &Entry, bottom: bool, now: u64) -> bool {
    if v.is_dropped(e) {
        // A drop hides every older version everywhere, so the entry can always go.
        return false;
    }
    if !bottom {
        return true;
    }
    !(e.kind == Kind::Delete || (e.expire_at != 0 && e.expire_at <= now))
}
