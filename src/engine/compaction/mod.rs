//! Compaction decisions, separated from compaction work.
//!
//! A [`CompactionPolicy`] looks at a [`LevelsView`] (what tables exist where, their key ranges,
//! sizes, seqno and expiry ranges) and proposes a [`Task`]. It is pure: no I/O, no clock, no
//! locks, so the same code runs inside the engine and inside `examples/compaction_sim.rs` over
//! fake tables. The engine (agents/compaction.rs) then [`validate`]s the task, runs it and
//! decides by itself which tombstones and expired entries may be dropped; a policy can make
//! compaction slow or wasteful, never incorrect.
//!
//! Two policies ship: [`leveled::Leveled`] and [`tiered::Tiered`]; `policy_by_name` builds them
//! from their names ("leveled", "tiered").

pub mod leveled;
pub mod sim;
pub mod tiered;

use std::sync::Arc;

use bytes::Bytes;

use super::error::{Error, Result};
use super::version::{Version, NUM_LEVELS};
use super::EngineConfig;

pub use leveled::Leveled;
pub use tiered::Tiered;

/// The names `policy_by_name` accepts.
pub const POLICY_NAMES: &[&str] = &["leveled", "tiered"];

/// What a policy knows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub id: u64,
    pub size: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
    pub min_seqno: u64,
    pub max_seqno: u64,
    pub entries: u64,
    pub tombstones: u64,
    /// Smallest nonzero expiry (unix ms), 0 if nothing in the table expires.
    pub min_expire: u64,
    /// Largest expiry, 0 if nothing in the table expires.
    pub max_expire: u64,
}

impl TableInfo {
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest.as_ref() <= hi && lo <= self.largest.as_ref()
    }
}

/// The tables of every level, as the engine's Version holds them: L0 newest first (tables may
/// overlap), L1.. sorted by smallest key and disjoint.
#[derive(Debug, Clone, Default)]
pub struct LevelsView {
    pub levels: Vec<Vec<TableInfo>>,
}

impl LevelsView {
    pub fn from_version(v: &Version) -> LevelsView {
        LevelsView {
            levels: v
                .levels
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|t| {
                            let p = t.table.props();
                            TableInfo {
                                id: t.meta.id,
                                size: t.meta.size,
                                smallest: t.meta.smallest.clone(),
                                largest: t.meta.largest.clone(),
                                min_seqno: t.meta.min_seqno,
                                max_seqno: t.meta.max_seqno,
                                entries: p.entries,
                                tombstones: p.tombstones,
                                min_expire: p.min_expire,
                                max_expire: p.max_expire,
                            }
                        })
                        .collect()
                })
                .collect(),
        }
    }

    pub fn level(&self, n: usize) -> &[TableInfo] {
        self.levels.get(n).map_or(&[], |l| l.as_slice())
    }

    pub fn level_bytes(&self, n: usize) -> u64 {
        self.level(n).iter().map(|t| t.size).sum()
    }

    pub fn find(&self, level: usize, id: u64) -> Option<&TableInfo> {
        self.level(level).iter().find(|t| t.id == id)
    }

    /// Tables of `level` overlapping `[lo, hi]`.
    pub fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<&TableInfo> {
        self.level(level)
            .iter()
            .filter(|t| t.overlaps(lo, hi))
            .collect()
    }

    /// Deepest level holding any table (0 if none).
    pub fn deepest_nonempty(&self) -> usize {
        (0..self.levels.len())
            .rev()
            .find(|&l| !self.level(l).is_empty())
            .unwrap_or(0)
    }
}

/// Tuning and engine-kept state a policy reads. Plain values, so a policy stays pure.
#[derive(Debug, Clone)]
pub struct PolicyStats {
    pub l0_compaction_trigger: usize,
    /// Target size of L1; Ln's is `level_base_bytes * level_ratio^(n-1)`.
    pub level_base_bytes: u64,
    pub level_ratio: u64,
    pub table_target_bytes: u64,
    /// Per level: the largest key of the last table compacted out of it (leveled round robin).
    pub cursors: Vec<Option<Bytes>>,
    /// Wall clock, for expiry-aware policies (ms).
    pub now_ms: u64,
}

impl PolicyStats {
    pub fn from_config(cfg: &EngineConfig) -> PolicyStats {
        PolicyStats {
            l0_compaction_trigger: cfg.l0_compaction_trigger,
            level_base_bytes: cfg.level_base_bytes,
            level_ratio: cfg.level_ratio,
            table_target_bytes: cfg.table_target_bytes,
            cursors: vec![None; NUM_LEVELS],
            now_ms: 0,
        }
    }

    /// Size target of level `n` (n >= 1).
    pub fn target(&self, n: usize) -> u64 {
        let mut t = self.level_base_bytes.max(1);
        for _ in 1..n {
            t = t.saturating_mul(self.level_ratio.max(2));
        }
        t
    }

    pub fn cursor(&self, level: usize) -> Option<&Bytes> {
        self.cursors.get(level).and_then(|c| c.as_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Read the inputs, merge them, write new tables at the output level.
    Merge,
    /// Re-level the input tables (all of one level) without rewriting them: nothing in the way
    /// overlaps them, so only the MANIFEST changes.
    TrivialMove,
}

/// A proposed compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// (level, table ids) per input level.
    pub inputs: Vec<(usize, Vec<u64>)>,
    pub output_level: usize,
    pub kind: TaskKind,
    /// For logs and stats: why the policy wants this.
    pub reason: String,
}

impl Task {
    pub fn input_count(&self) -> usize {
        self.inputs.iter().map(|(_, ids)| ids.len()).sum()
    }

    pub fn min_input_level(&self) -> Option<usize> {
        self.inputs
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(l, _)| *l)
            .min()
    }

    pub fn has_input(&self, level: usize, id: u64) -> bool {
        self.inputs
            .iter()
            .any(|(l, ids)| *l == level && ids.contains(&id))
    }

    pub fn includes_level(&self, level: usize) -> bool {
        self.inputs
            .iter()
            .any(|(l, ids)| *l == level && !ids.is_empty())
    }
}

/// Decides what to compact next. Implementations must be pure (the simulator runs them over
/// fake tables) and cheap (called after every flush and compaction).
pub trait CompactionPolicy: Send + Sync {
    fn name(&self) -> &str;
    fn choose(&self, v: &LevelsView, stats: &PolicyStats) -> Option<Task>;
    /// Bytes this policy still wants to rewrite (backpressure). Default: nothing pending.
    fn pending_bytes(&self, _v: &LevelsView, _stats: &PolicyStats) -> u64 {
        0
    }
    /// Per level, how urgently the policy wants it compacted (>= 1.0: it will). For stats.
    fn scores(&self, v: &LevelsView, _stats: &PolicyStats) -> Vec<f64> {
        vec![0.0; v.levels.len()]
    }
    /// What to do once writes have gone quiet and `choose` has nothing (see
    /// `EngineConfig::idle_compaction_ms`): work that makes reads cheaper but that the policy
    /// would not spend write bandwidth on while writes flow. Default: nothing.
    fn idle_task(&self, _v: &LevelsView, _stats: &PolicyStats) -> Option<Task> {
        None
    }
}

/// Builds a shipped policy by name; an unknown name lists the choices.
pub fn policy_by_name(name: &str) -> Result<Arc<dyn CompactionPolicy>> {
    match name {
        "leveled" => Ok(Arc::new(Leveled)),
        "tiered" => Ok(Arc::new(Tiered)),
        other => Err(Error::Invalid(format!(
            "unknown compaction policy '{other}' (choices: {})",
            POLICY_NAMES.join(", ")
        ))),
    }
}

/// Smallest and largest key over the task's inputs.
pub fn task_range(v: &LevelsView, t: &Task) -> Option<(Bytes, Bytes)> {
    let mut lo: Option<Bytes> = None;
    let mut hi: Option<Bytes> = None;
    for (level, ids) in &t.inputs {
        for id in ids {
            let ti = v.find(*level, *id)?;
            if lo.as_ref().is_none_or(|l| ti.smallest < *l) {
                lo = Some(ti.smallest.clone());
            }
            if hi.as_ref().is_none_or(|h| ti.largest > *h) {
                hi = Some(ti.largest.clone());
            }
        }
    }
    Some((lo?, hi?))
}

/// Checks that running `t` keeps every read correct, whatever policy proposed it:
/// - inputs exist at the levels named, no duplicates, at least one;
/// - output level in 1..7 and at least the deepest input level (equal only as a rewrite in
///   place: tiered run merges and expired-data reclaim);
/// - an L0 input set includes every older L0 table overlapping the task's key range (else an
///   older version would stay above a newer one);
/// - no table outside the task overlaps the task's range at any level below the shallowest
///   input down to the output level (else the output would land below older data, or overlap
///   a disjoint level);
/// - a trivial move has exactly one input table and goes to a deeper level.
pub fn validate(v: &LevelsView, t: &Task) -> std::result::Result<(), String> {
    if t.input_count() == 0 {
        return Err("task has no inputs".into());
    }
    if t.output_level == 0 || t.output_level >= NUM_LEVELS {
        return Err(format!("output level {} out of range 1..7", t.output_level));
    }
    let mut seen = std::collections::HashSet::new();
    let mut max_in = 0;
    for (level, ids) in &t.inputs {
        if *level >= NUM_LEVELS {
            return Err(format!("input level {level} out of range"));
        }
        for id in ids {
            if v.find(*level, *id).is_none() {
                return Err(format!("input table {id} is not live at L{level}"));
            }
            if !seen.insert(*id) {
                return Err(format!("input table {id} listed twice"));
            }
        }
        if !ids.is_empty() {
            max_in = max_in.max(*level);
        }
    }
    if t.output_level < max_in {
        return Err(format!(
            "output level {} above input level {max_in}",
            t.output_level
        ));
    }
    let min_in = t.min_input_level().unwrap_or(0);
    if t.kind == TaskKind::TrivialMove && (max_in != min_in || t.output_level <= min_in) {
        return Err("a trivial move takes tables of one level to a deeper level".into());
    }
    let Some((lo, hi)) = task_range(v, t) else {
        return Err("input tables vanished".into());
    };
    if t.includes_level(0) {
        let newest_in = v
            .level(0)
            .iter()
            .filter(|x| t.has_input(0, x.id))
            .map(|x| x.max_seqno)
            .max()
            .unwrap_or(0);
        for x in v.level(0) {
            if !t.has_input(0, x.id) && x.max_seqno < newest_in && x.overlaps(&lo, &hi) {
                return Err(format!(
                    "L0 task skips older overlapping table {} (max seqno {} < {newest_in})",
                    x.id, x.max_seqno
                ));
            }
        }
    }
    for level in (min_in + 1)..=t.output_level {
        for x in v.overlapping(level, &lo, &hi) {
            if !t.has_input(level, x.id) {
                return Err(format!(
                    "table {} at L{level} overlaps the task's range but is not an input",
                    x.id
                ));
            }
        }
    }
    Ok(())
}

/// True when no table below `output_level` overlaps `[lo, hi]`: no older version of a key in
/// that range can exist under the output, so tombstones and expired entries may go.
pub fn is_bottom(v: &LevelsView, output_level: usize, lo: &[u8], hi: &[u8]) -> bool {
    ((output_level + 1)..v.levels.len()).all(|l| v.overlapping(l, lo, hi).is_empty())
}

/// The engine's L0 floor, used whatever the policy says once L0 is too deep: every L0 table
/// and the overlapping L1 tables into L1. Valid under both shipped layouts.
pub fn l0_floor_task(v: &LevelsView) -> Option<Task> {
    let l0 = v.level(0);
    if l0.is_empty() {
        return None;
    }
    let lo = l0.iter().map(|t| t.smallest.clone()).min()?;
    let hi = l0.iter().map(|t| t.largest.clone()).max()?;
    let l1: Vec<u64> = v.overlapping(1, &lo, &hi).iter().map(|t| t.id).collect();
    let mut inputs = vec![(0, l0.iter().map(|t| t.id).collect())];
    if !l1.is_empty() {
        inputs.push((1, l1));
    }
    Some(Task {
        inputs,
        output_level: 1,
        kind: TaskKind::Merge,
        reason: format!("L0 floor: {} tables", l0.len()),
    })
}

/// Reclaims space held by expired data: a table at L1+ whose every expiring entry has expired
/// (`max_expire <= now`) and that sits at the bottom of its key range is rewritten in place,
/// which drops those entries. Tables with nothing below are the only ones where that works;
/// others are reached when the policy pushes them down.
pub fn expired_reclaim_task(v: &LevelsView, now_ms: u64) -> Option<Task> {
    for level in 1..v.levels.len() {
        for t in v.level(level) {
            if t.max_expire != 0
                && t.max_expire <= now_ms
                && is_bottom(v, level, &t.smallest, &t.largest)
            {
                return Some(Task {
                    inputs: vec![(level, vec![t.id])],
                    output_level: level,
                    kind: TaskKind::Merge,
                    reason: format!("expired data in table {} at L{level}", t.id),
                });
            }
        }
    }
    None
}

/// The earliest future expiry over all tables, if any (for a timed wake-up).
pub fn next_expiry(v: &LevelsView, now_ms: u64) -> Option<u64> {
    v.levels
        .iter()
        .flatten()
        .filter(|t| t.max_expire > now_ms)
        .map(|t| t.max_expire)
        .min()
}

#[cfg(test)]
mod tests;
