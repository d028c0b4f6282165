//! The compaction agent. On every blackboard change it asks the current policy for a task,
//! validates it (a bad task is counted and skipped, never run), runs it and installs the result
//! through `apply`. The engine, not the policy, keeps two floors: L0 is compacted once it holds
//! `min(2 × l0_compaction_trigger, l0_stop_trigger)` tables whatever the policy says, and
//! tables whose expiring entries have all expired are rewritten to reclaim their space.
//!
//! Dropping rules (correctness rule 6): tombstones and expired entries go only when no table
//! below the output level overlaps the task's key range; entries hidden by a prefix drop
//! always go. Within the task only the newest version of each key is kept: readers that hold
//! an older `Arc<Version>` keep the input tables (and their files) alive on their own.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::engine::blackboard::{AgentState, Blackboard};
use crate::engine::compaction::{
    expired_reclaim_task, is_bottom, l0_floor_task, next_expiry, task_range, validate, LevelsView,
    PolicyStats, Task, TaskKind,
};
use crate::engine::error::{Error, IoContext, Result};
use crate::engine::iter::{MergeIter, NewestIter, Source};
use crate::engine::manifest::Edit;
use crate::engine::sstable::Table;
use crate::engine::types::{Entry, Kind, SeqNo};
use crate::engine::version::{TableHandle, Version, NUM_LEVELS};

use super::flush::write_table;

/// Entries merged between two looks at the shutdown flag.
const CANCEL_CHECK_EVERY: u32 = 256;
/// Longest timed wait for the next expiry (the clock may be adjusted meanwhile).
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(60);

/// Where a task came from (for counters and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Policy,
    Floor,
    Reclaim,
    Idle,
}

/// The policy's idle task, once writes have been quiet for `idle_compaction_ms`; else how long
/// until they will have been (None: no idle task to wait for).
fn idle_pick(
    bb: &Blackboard,
    view: &LevelsView,
    ps: &PolicyStats,
) -> (Option<(Task, Origin)>, Option<Duration>) {
    let after = bb.cfg.idle_compaction_ms;
    if after == 0 {
        return (None, None);
    }
    let quiet_ms = bb.quiet_ms();
    let Some(task) = bb
        .policy()
        .idle_task(view, ps)
        .filter(|t| validate(view, t).is_ok())
    else {
        return (None, None);
    };
    if quiet_ms >= after {
        (Some((task, Origin::Idle)), None)
    } else {
        (None, Some(Duration::from_millis(after - quiet_ms)))
    }
}

struct Done {
    read: u64,
    written: u64,
    /// The tables written (none for a trivial move).
    outputs: Vec<Arc<Table>>,
    /// Largest key per input level, for the round-robin cursors.
    ends: Vec<(usize, Bytes)>,
}

pub(crate) fn run(bb: Arc<Blackboard>) {
    let Some(status) = bb.agent("compaction").cloned() else {
        return;
    };
    *status.policy.lock() = bb.policy().name().to_string();
    let mut cursors: Vec<Option<Bytes>> = vec![None; NUM_LEVELS];
    loop {
        let ep = bb.epoch();
        if bb.is_shutdown() {
            break;
        }
        if bb.poisoned().is_some() {
            bb.wait_change(ep, None);
            continue;
        }
        let v = bb.current();
        let view = LevelsView::from_version(&v);
        let mut ps = bb.policy_stats();
        ps.cursors = cursors.clone();
        let (idle, idle_wait) = match pick(&bb, &view, &ps) {
            Some(p) => (Some(p), None),
            None => idle_pick(&bb, &view, &ps),
        };
        let Some((task, origin)) = idle else {
            bb.set_compaction_idle(ep);
            let expiry = next_expiry(&view, ps.now_ms)
                .map(|t| Duration::from_millis(t - ps.now_ms + 1).min(MAX_EXPIRY_WAIT));
            let timeout = match (expiry, idle_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            bb.wait_change(ep, timeout);
            continue;
        };
        status.set(AgentState::Working);
        let t = Instant::now();
        tracing::debug!(reason = %task.reason, ?origin, "compaction task");
        match run_task(&bb, &v, &view, &task) {
            Ok(done) => {
                status.tasks.fetch_add(1, Relaxed);
                status.bytes_read.fetch_add(done.read, Relaxed);
                status.bytes_written.fetch_add(done.written, Relaxed);
                let c = &bb.counters;
                c.compactions.fetch_add(1, Relaxed);
                c.compaction_bytes_read.fetch_add(done.read, Relaxed);
                c.table_bytes_written.fetch_add(done.written, Relaxed);
                if task.kind == TaskKind::TrivialMove {
                    c.trivial_moves.fetch_add(1, Relaxed);
                }
                match origin {
                    Origin::Floor => c.floor_compactions.fetch_add(1, Relaxed),
                    Origin::Reclaim => c.reclaim_compactions.fetch_add(1, Relaxed),
                    Origin::Idle => c.idle_compactions.fetch_add(1, Relaxed),
                    Origin::Policy => 0,
                };
                if origin == Origin::Idle {
                    warm_cache(&bb, &done.outputs);
                }
                for (level, key) in done.ends {
                    if let Some(c) = cursors.get_mut(level) {
                        *c = Some(key);
                    }
                }
                status.set(AgentState::Idle);
            }
            Err(Error::Closed) if bb.is_shutdown() => {
                bb.counters.tasks_cancelled.fetch_add(1, Relaxed);
                tracing::info!(reason = %task.reason, "compaction cancelled by shutdown");
            }
            Err(e) => {
                tracing::warn!(error = %e, reason = %task.reason, "compaction failed; will retry");
                bb.counters.compaction_failures.fetch_add(1, Relaxed);
                status.set(AgentState::Idle);
                // Bounded backoff after an I/O failure (e.g. until space returns); any change
                // or shutdown cuts it short.
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

/// The policy's task if it validates, overridden by the L0 floor, else expired-data reclaim.
fn pick(bb: &Blackboard, view: &LevelsView, ps: &PolicyStats) -> Option<(Task, Origin)> {
    let policy = bb.policy();
    let floor = (bb.cfg.l0_compaction_trigger * 2).min(bb.cfg.l0_stop_trigger);
    let l0_deep = view.level(0).len() >= floor;
    let floor_task = || {
        l0_floor_task(view)
            .filter(|t| validate(view, t).is_ok())
            .map(|t| (t, Origin::Floor))
    };
    match policy.choose(view, ps) {
        Some(t) => match validate(view, &t) {
            Ok(()) if l0_deep && !t.includes_level(0) => floor_task(),
            Ok(()) => Some((t, Origin::Policy)),
            Err(why) => {
                bb.counters.tasks_rejected.fetch_add(1, Relaxed);
                tracing::warn!(policy = policy.name(), reason = %t.reason, %why, "compaction task rejected");
                if l0_deep {
                    floor_task()
                } else {
                    None
                }
            }
        },
        None if l0_deep => floor_task(),
        None => expired_reclaim_task(view, ps.now_ms).map(|t| (t, Origin::Reclaim)),
    }
}

/// The handles of a task's inputs, as (level, handle), in task order.
fn inputs_of(v: &Version, task: &Task) -> Result<Vec<(usize, Arc<TableHandle>)>> {
    let mut out = Vec::new();
    for (level, ids) in &task.inputs {
        for id in ids {
            let h = v
                .levels
                .get(*level)
                .and_then(|l| l.iter().find(|t| t.meta.id == *id))
                .ok_or_else(|| Error::Invalid(format!("table {id} vanished from L{level}")))?;
            out.push((*level, h.clone()));
        }
    }
    Ok(out)
}

fn ends_of(inputs: &[(usize, Arc<TableHandle>)]) -> Vec<(usize, Bytes)> {
    let mut ends: Vec<(usize, Bytes)> = Vec::new();
    for (level, h) in inputs {
        match ends.iter_mut().find(|(l, _)| l == level) {
            Some((_, k)) if h.meta.largest > *k => *k = h.meta.largest.clone(),
            Some(_) => {}
            None => ends.push((*level, h.meta.largest.clone())),
        }
    }
    ends
}

/// Installs `outputs` at `out` in place of `inputs`, through the one `apply`.
fn install(
    bb: &Blackboard,
    inputs: &[(usize, Arc<TableHandle>)],
    outputs: &[Arc<TableHandle>],
    out: usize,
) -> Result<()> {
    let mut edit = Edit::default();
    edit.removed
        .extend(inputs.iter().map(|(l, t)| (*l as u8, t.meta.id)));
    edit.added.extend(outputs.iter().map(|t| t.meta.clone()));
    let gone = |t: &Arc<TableHandle>| inputs.iter().any(|(_, x)| x.meta.id == t.meta.id);
    bb.apply(edit, |cur| {
        let mut nv = cur.clone();
        for level in nv.levels.iter_mut() {
            level.retain(|t| !gone(t));
        }
        if let Some(level) = nv.levels.get_mut(out) {
            level.extend(outputs.iter().cloned());
            level.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        }
        nv
    })
}

/// After an idle task: writes went quiet, so reads are what comes next. The merged tables'
/// blocks go into the space the inputs' blocks left, instead of being read from the file one
/// miss at a time on the clients' threads. Stops as soon as writes resume.
fn warm_cache(bb: &Blackboard, tables: &[Arc<Table>]) {
    let quiet = bb.quiet_ms();
    let stop = || bb.is_shutdown() || bb.quiet_ms() < quiet;
    for t in tables {
        match t.warm_cache(&stop) {
            Ok(n) => {
                bb.counters.warmed_blocks.fetch_add(n as u64, Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "warming the block cache failed");
                return;
            }
        }
    }
}

fn run_task(bb: &Blackboard, v: &Version, view: &LevelsView, task: &Task) -> Result<Done> {
    let inputs = inputs_of(v, task)?;
    let out = task.output_level;
    let ends = ends_of(&inputs);
    if task.kind == TaskKind::TrivialMove {
        let moved: Vec<Arc<TableHandle>> = inputs
            .iter()
            .map(|(_, h)| Arc::new(h.relevel(out as u8)))
            .collect();
        // The files stay: neither the old handles nor the new ones are obsolete.
        install(bb, &inputs, &moved, out)?;
        return Ok(Done {
            read: 0,
            written: 0,
            outputs: Vec::new(),
            ends,
        });
    }
    let (lo, hi) =
        task_range(view, task).ok_or_else(|| Error::Invalid("task inputs vanished".into()))?;
    let bottom = is_bottom(view, out, &lo, &hi);
    let now = bb.clock.now_ms();
    let sources: Vec<Source> = inputs
        .iter()
        .map(|(_, t)| Box::new(t.table.iter_uncached()) as Source)
        .collect();
    let read: u64 = inputs.iter().map(|(_, t)| t.meta.size).sum();
    let merged = NewestIter::new(MergeIter::new(sources), SeqNo::MAX);
    let mut kept = merged.filter(|r| match r {
        Ok(e) => keep(v, e, bottom, now),
        Err(_) => true,
    });
    let mut outputs: Vec<Arc<TableHandle>> = Vec::new();
    let abandon = |outputs: &[Arc<TableHandle>]| {
        // Dropping the last handle of an obsolete table deletes its file.
        for o in outputs {
            o.mark_obsolete();
        }
    };
    let target = bb.cfg.table_target_bytes;
    let mut since_check = 0u32;
    loop {
        if bb.is_shutdown() {
            abandon(&outputs);
            return Err(Error::Closed);
        }
        let id = bb.new_file_number();
        let mut written = 0u64;
        let mut cancelled = false;
        let mut chunk = std::iter::from_fn(|| {
            if written >= target {
                return None;
            }
            since_check += 1;
            if since_check >= CANCEL_CHECK_EVERY {
                since_check = 0;
                if bb.is_shutdown() {
                    cancelled = true;
                    return Some(Err(Error::Closed));
                }
            }
            let r = kept.next()?;
            if let Ok(e) = &r {
                written += (e.key.len() + e.value.len() + 24) as u64;
            }
            Some(r)
        });
        let res = write_table(bb, id, out as u8, &mut chunk);
        match res {
            Ok(Some(h)) => outputs.push(h),
            Ok(None) => break,
            Err(e) => {
                abandon(&outputs);
                return Err(if cancelled { Error::Closed } else { e });
            }
        }
    }
    // A task that finished writing while shutdown began is abandoned too: close() should not
    // wait for (or depend on) a MANIFEST write it did not ask for.
    if bb.is_shutdown() {
        abandon(&outputs);
        return Err(Error::Closed);
    }
    if !outputs.is_empty() {
        if let Err(e) = bb
            .storage
            .sync_dir(&bb.dir)
            .ctx(|| format!("syncing directory {}", bb.dir.display()))
        {
            abandon(&outputs);
            return Err(e);
        }
    }
    let written: u64 = outputs.iter().map(|t| t.meta.size).sum();
    if let Err(e) = install(bb, &inputs, &outputs, out) {
        abandon(&outputs);
        return Err(e);
    }
    for (_, t) in &inputs {
        t.mark_obsolete();
        // Their cached blocks make room now, not when the clock hand finds them unread (a
        // reader still on the old version reads them from the file meanwhile).
        t.table.forget_cached();
    }
    Ok(Done {
        read,
        written,
        outputs: outputs.iter().map(|h| h.table.clone()).collect(),
        ends,
    })
}

/// Whether a merged entry is written out. A prefix drop hides every older version everywhere,
/// so such entries always go; tombstones and expired entries only at the bottom of their range.
fn keep(v: &Version, e: &Entry, bottom: bool, now: u64) -> bool {
    if v.is_dropped(e) {
        return false;
    }
    if !bottom {
        return true;
    }
    !(e.kind == Kind::Delete || (e.expire_at != 0 && e.expire_at <= now))
}
