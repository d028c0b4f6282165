//! Leveled compaction: L0 is compacted by file count, L1..L5 by size against a target that
//! grows by `level_ratio` per level (`level_base_bytes * ratio^(n-1)`). The level with the
//! highest score (count / trigger for L0, bytes / target for Ln) goes first. In Ln one table is
//! picked round robin after the level's cursor key, so successive compactions sweep the key
//! space instead of hammering one range; it merges with the overlapping tables of Ln+1, or is
//! simply moved down (no rewrite) when nothing there overlaps it.
//!
//! Few sorted runs (one per level + L0), so reads probe few tables; every byte is rewritten
//! about `ratio` times per level it passes through. Once writes go quiet, L0 is merged into L1
//! whatever its count ([`CompactionPolicy::idle_task`]).

use super::{l0_floor_task, CompactionPolicy, LevelsView, PolicyStats, Task, TaskKind};

#[derive(Debug, Default, Clone, Copy)]
pub struct Leveled;

impl Leveled {
    fn level_scores(v: &LevelsView, s: &PolicyStats) -> Vec<f64> {
        let n = v.levels.len();
        let mut out = vec![0.0; n];
        if n == 0 {
            return out;
        }
        out[0] = v.level(0).len() as f64 / s.l0_compaction_trigger.max(1) as f64;
        // The deepest level has nowhere to go, so it never scores.
        for (l, score) in out.iter_mut().enumerate().take(n.saturating_sub(1)).skip(1) {
            *score = v.level_bytes(l) as f64 / s.target(l) as f64;
        }
        out
    }
}

impl CompactionPolicy for Leveled {
    fn name(&self) -> &str {
        "leveled"
    }

    fn choose(&self, v: &LevelsView, s: &PolicyStats) -> Option<Task> {
        let scores = Self::level_scores(v, s);
        let (level, score) = scores
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, sc)| *sc >= 1.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if level == 0 {
            let mut t = l0_floor_task(v)?;
            t.reason = format!("L0 has {} tables (score {score:.2})", v.level(0).len());
            return Some(t);
        }
        let tables = v.level(level);
        let pick = s
            .cursor(level)
            .and_then(|c| tables.iter().find(|t| t.smallest > *c))
            .or_else(|| tables.first())?;
        let below: Vec<u64> = v
            .overlapping(level + 1, &pick.smallest, &pick.largest)
            .iter()
            .map(|t| t.id)
            .collect();
        let reason = format!("L{level} score {score:.2}: table {}", pick.id);
        if below.is_empty() {
            return Some(Task {
                inputs: vec![(level, vec![pick.id])],
                output_level: level + 1,
                kind: TaskKind::TrivialMove,
                reason,
            });
        }
        Some(Task {
            inputs: vec![(level, vec![pick.id]), (level + 1, below)],
            output_level: level + 1,
            kind: TaskKind::Merge,
            reason,
        })
    }

    /// L0 bytes once L0 is over its trigger, plus the bytes over target of every level.
    fn pending_bytes(&self, v: &LevelsView, s: &PolicyStats) -> u64 {
        let mut p = 0;
        if v.level(0).len() >= s.l0_compaction_trigger {
            p += v.level_bytes(0);
        }
        for l in 1..v.levels.len().saturating_sub(1) {
            p += v.level_bytes(l).saturating_sub(s.target(l));
        }
        p
    }

    fn scores(&self, v: &LevelsView, s: &PolicyStats) -> Vec<f64> {
        Self::level_scores(v, s)
    }

    /// Every L0 table into L1: a point read then probes one table per level instead of
    /// every L0 table too, and the overlap between L0 and L1 (older versions of the same
    /// keys) stops taking block-cache space. Deeper levels follow through `choose` if L1 is
    /// then over its target.
    fn idle_task(&self, v: &LevelsView, _s: &PolicyStats) -> Option<Task> {
        let mut t = l0_floor_task(v)?;
        t.reason = format!("idle: L0 has {} tables", v.level(0).len());
        if t.inputs.len() == 1 && t.inputs[0].1.len() == 1 {
            // One table and nothing under it in L1: it moves down as it is.
            t.kind = TaskKind::TrivialMove;
        }
        Some(t)
    }
}
