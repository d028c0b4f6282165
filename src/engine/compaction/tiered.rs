//! Size-tiered compaction over the engine's levels.
//!
//! Mapping: every L0 table is a sorted run; every non-empty level L1..L6 holds exactly one
//! sorted run (its tables are disjoint), and deeper runs are older. Runs in age order are
//! `[L0 newest .. L0 oldest, L1, L2, .., L6]` (empty levels skipped).
//!
//! Rules, in order:
//! 1. Space: when the runs newer than the oldest one add up to more than
//!    `MAX_SPACE_AMP` times the oldest, merge everything into L6 (bounds space amplification
//!    under overwrites).
//! 2. Size ratio: from the newest run on, take older runs while each is at most `SIZE_RATIO`
//!    times the bytes taken so far (similar sizes); an L0 start always takes every older L0
//!    table too. Merge when that is at least `l0_compaction_trigger` runs. The output replaces
//!    the oldest input run in its level, or, when all inputs are L0 tables, goes to the free
//!    level just above the shallowest run (L6 if there is none).
//! 3. If L0 needs a slot but L1 is taken, move the run just above the shallowest free level
//!    down by one (a metadata-only trivial move); with no free level, merge into L1.
//!
//! Fewer rewrites than leveled (a byte is rewritten once per merge it takes part in, and runs
//! of similar size merge rarely), more read amplification (up to six runs plus L0) and more
//! space amplification (overwritten keys live in several runs until they merge).

use super::{CompactionPolicy, LevelsView, PolicyStats, Task, TaskKind};

#[derive(Debug, Default, Clone, Copy)]
pub struct Tiered;

/// Rule 2: an older run joins while its size <= SIZE_RATIO * bytes taken so far.
const SIZE_RATIO: f64 = 2.0;
/// Rule 1: newer runs may hold this many times the oldest run's bytes before a full merge.
const MAX_SPACE_AMP: f64 = 2.0;

struct Run {
    level: usize,
    ids: Vec<u64>,
    size: u64,
}

fn runs(v: &LevelsView) -> Vec<Run> {
    let mut out: Vec<Run> = v
        .level(0)
        .iter()
        .map(|t| Run {
            level: 0,
            ids: vec![t.id],
            size: t.size,
        })
        .collect();
    for l in 1..v.levels.len() {
        let tables = v.level(l);
        if !tables.is_empty() {
            out.push(Run {
                level: l,
                ids: tables.iter().map(|t| t.id).collect(),
                size: tables.iter().map(|t| t.size).sum(),
            });
        }
    }
    out
}

fn task_of(runs: &[Run], output_level: usize, reason: String) -> Task {
    let mut inputs: Vec<(usize, Vec<u64>)> = Vec::new();
    for r in runs {
        match inputs.last_mut() {
            Some((l, ids)) if *l == r.level => ids.extend(&r.ids),
            _ => inputs.push((r.level, r.ids.clone())),
        }
    }
    Task {
        inputs,
        output_level,
        kind: TaskKind::Merge,
        reason,
    }
}

impl CompactionPolicy for Tiered {
    fn name(&self) -> &str {
        "tiered"
    }

    fn choose(&self, v: &LevelsView, s: &PolicyStats) -> Option<Task> {
        let deepest = v.levels.len().checked_sub(1)?;
        let rs = runs(v);
        let n0 = v.level(0).len();
        let min_merge = s.l0_compaction_trigger.max(2);
        if rs.len() >= 2 {
            let oldest = rs.last()?.size;
            let newer: u64 = rs[..rs.len() - 1].iter().map(|r| r.size).sum();
            if newer as f64 > MAX_SPACE_AMP * oldest as f64 {
                return Some(task_of(
                    &rs,
                    deepest,
                    format!("space amplification: {newer} bytes over a {oldest}-byte base"),
                ));
            }
        }
        for start in 0..rs.len() {
            let mut acc = rs[start].size;
            let mut end = start + 1;
            while end < rs.len() && rs[end].size as f64 <= SIZE_RATIO * acc as f64 {
                acc += rs[end].size;
                end += 1;
            }
            if start < n0 {
                end = end.max(n0);
            }
            if end - start < min_merge {
                continue;
            }
            let oldest = &rs[end - 1];
            let reason = format!("{} runs of similar size", end - start);
            if oldest.level > 0 {
                return Some(task_of(&rs[start..end], oldest.level, reason));
            }
            // All inputs are L0 tables: they need a free level above every other run.
            let shallowest = rs.get(end).map_or(deepest + 1, |r| r.level);
            if shallowest > 1 {
                return Some(task_of(
                    &rs[start..end],
                    (shallowest - 1).min(deepest),
                    reason,
                ));
            }
            // L1 is taken: make room by pushing a run down into a free level, if any.
            let free = (2..=deepest).find(|&l| v.level(l).is_empty());
            if let Some(free) = free {
                let above = free - 1;
                return Some(Task {
                    inputs: vec![(above, v.level(above).iter().map(|t| t.id).collect())],
                    output_level: free,
                    kind: TaskKind::TrivialMove,
                    reason: format!("make room: L{above} run moves to L{free}"),
                });
            }
            return Some(task_of(
                &rs[start..=end],
                1,
                format!("{reason}, merged into L1 (no free level)"),
            ));
        }
        None
    }

    fn pending_bytes(&self, v: &LevelsView, s: &PolicyStats) -> u64 {
        if v.level(0).len() >= s.l0_compaction_trigger.max(2) {
            v.level_bytes(0)
        } else {
            0
        }
    }

    fn scores(&self, v: &LevelsView, s: &PolicyStats) -> Vec<f64> {
        let mut out = vec![0.0; v.levels.len()];
        if let Some(o) = out.first_mut() {
            *o = v.level(0).len() as f64 / s.l0_compaction_trigger.max(2) as f64;
        }
        out
    }
}
