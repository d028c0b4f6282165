//! A compaction simulator: runs a policy over fake tables (sorted key lists with sizes, no
//! I/O) fed by a synthetic stream of flushes, and measures write, read and space
//! amplification. Used by `examples/compaction_sim.rs` and by the policy unit tests (which also
//! check that every task a shipped policy proposes validates).
//!
//! Model: every entry has the same size; a flush writes `flush_keys` distinct random keys from
//! `0..keyspace` as one L0 table; a merge keeps the newest version of each key (there are no
//! deletes) and splits its output at the table target size. The engine's L0 floor is applied
//! as the agent applies it.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    l0_floor_task, validate, CompactionPolicy, LevelsView, PolicyStats, TableInfo, Task, TaskKind,
};
use crate::engine::version::NUM_LEVELS;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub keyspace: u64,
    pub flush_keys: usize,
    pub flushes: usize,
    pub entry_bytes: u64,
    pub table_target_bytes: u64,
    pub l0_compaction_trigger: usize,
    pub l0_stop_trigger: usize,
    pub level_base_bytes: u64,
    pub level_ratio: u64,
    /// Random point lookups for the read-amplification estimate.
    pub lookups: usize,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            keyspace: 1_000_000,
            flush_keys: 20_000,
            flushes: 500,
            entry_bytes: 128,
            table_target_bytes: 2 << 20,
            l0_compaction_trigger: 4,
            l0_stop_trigger: 20,
            level_base_bytes: 10 << 20,
            level_ratio: 10,
            lookups: 20_000,
            seed: 42,
        }
    }
}

struct SimTable {
    info: TableInfo,
    /// (key, seqno), key ascending, one version per key.
    keys: Vec<(u64, u64)>,
}

fn key_bytes(k: u64) -> Bytes {
    Bytes::copy_from_slice(&k.to_be_bytes())
}

/// Per-level numbers at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct SimLevel {
    pub files: usize,
    pub bytes: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub policy: String,
    pub user_bytes: u64,
    /// Bytes written by flushes and compactions.
    pub written_bytes: u64,
    pub compactions: u64,
    pub trivial_moves: u64,
    pub floor_compactions: u64,
    pub rejected: u64,
    /// written / user.
    pub write_amp: f64,
    /// Mean tables whose key range covers a random key (tables probed by a lookup without
    /// bloom filters), sampled after every flush once compactions settled.
    pub read_amp: f64,
    /// Worst sorted-run count seen after any flush (L0 tables + non-empty levels).
    pub max_runs: usize,
    /// Stored entries / distinct live keys at the end.
    pub space_amp: f64,
    /// Worst space amplification seen after any flush's compactions.
    pub max_space_amp: f64,
    pub levels: Vec<SimLevel>,
}

pub struct Sim {
    cfg: SimConfig,
    levels: Vec<Vec<SimTable>>,
    next_id: u64,
    seqno: u64,
    cursors: Vec<Option<Bytes>>,
    report: SimReport,
    distinct: std::collections::HashSet<u64>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        Sim {
            cfg,
            levels: (0..NUM_LEVELS).map(|_| Vec::new()).collect(),
            next_id: 1,
            seqno: 1,
            cursors: vec![None; NUM_LEVELS],
            report: SimReport::default(),
            distinct: Default::default(),
        }
    }

    fn make_table(&mut self, keys: Vec<(u64, u64)>) -> Option<SimTable> {
        let (first, last) = (keys.first()?.0, keys.last()?.0);
        let id = self.next_id;
        self.next_id += 1;
        let info = TableInfo {
            id,
            size: keys.len() as u64 * self.cfg.entry_bytes,
            smallest: key_bytes(first),
            largest: key_bytes(last),
            min_seqno: keys.iter().map(|k| k.1).min().unwrap_or(0),
            max_seqno: keys.iter().map(|k| k.1).max().unwrap_or(0),
            entries: keys.len() as u64,
            tombstones: 0,
            min_expire: 0,
            max_expire: 0,
        };
        Some(SimTable { info, keys })
    }

    pub fn view(&self) -> LevelsView {
        LevelsView {
            levels: self
                .levels
                .iter()
                .map(|l| l.iter().map(|t| t.info.clone()).collect())
                .collect(),
        }
    }

    fn stats(&self) -> PolicyStats {
        PolicyStats {
            l0_compaction_trigger: self.cfg.l0_compaction_trigger,
            level_base_bytes: self.cfg.level_base_bytes,
            level_ratio: self.cfg.level_ratio,
            table_target_bytes: self.cfg.table_target_bytes,
            cursors: self.cursors.clone(),
            now_ms: 0,
        }
    }

    pub fn flush(&mut self, mut keys: Vec<u64>) {
        keys.sort_unstable();
        keys.dedup();
        let entries: Vec<(u64, u64)> = keys
            .iter()
            .map(|&k| {
                self.seqno += 1;
                (k, self.seqno)
            })
            .collect();
        self.distinct.extend(keys.iter().copied());
        let bytes = entries.len() as u64 * self.cfg.entry_bytes;
        self.report.user_bytes += bytes;
        self.report.written_bytes += bytes;
        if let Some(t) = self.make_table(entries) {
            self.levels[0].insert(0, t);
        }
    }

    /// Runs tasks until the policy (and the floor) have nothing left to do.
    pub fn settle(&mut self, policy: &dyn CompactionPolicy) {
        // A policy that keeps proposing work forever is a bug; the cap keeps the sim finite.
        for _ in 0..10_000 {
            let view = self.view();
            let floor = (self.cfg.l0_compaction_trigger * 2).min(self.cfg.l0_stop_trigger);
            let l0_deep = view.level(0).len() >= floor;
            let task = match policy.choose(&view, &self.stats()) {
                Some(t) if validate(&view, &t).is_ok() => {
                    if l0_deep && !t.includes_level(0) {
                        self.report.floor_compactions += 1;
                        l0_floor_task(&view)
                    } else {
                        Some(t)
                    }
                }
                Some(_) => {
                    self.report.rejected += 1;
                    if l0_deep {
                        self.report.floor_compactions += 1;
                        l0_floor_task(&view)
                    } else {
                        None
                    }
                }
                None if l0_deep => {
                    self.report.floor_compactions += 1;
                    l0_floor_task(&view)
                }
                None => None,
            };
            let Some(task) = task else { return };
            self.run(&task);
        }
    }

    fn take(&mut self, level: usize, id: u64) -> Option<SimTable> {
        let i = self.levels[level].iter().position(|t| t.info.id == id)?;
        Some(self.levels[level].remove(i))
    }

    fn run(&mut self, task: &Task) {
        let mut inputs = Vec::new();
        for (level, ids) in &task.inputs {
            // As the agent does: the level's cursor moves to the largest key compacted out.
            let mut end: Option<Bytes> = None;
            for id in ids {
                if let Some(t) = self.take(*level, *id) {
                    if end.as_ref().is_none_or(|k| t.info.largest > *k) {
                        end = Some(t.info.largest.clone());
                    }
                    inputs.push(t);
                }
            }
            if let (Some(c), Some(e)) = (self.cursors.get_mut(*level), end) {
                *c = Some(e);
            }
        }
        let out = task.output_level;
        self.report.compactions += 1;
        if task.kind == TaskKind::TrivialMove {
            self.report.trivial_moves += 1;
            self.levels[out].extend(inputs);
        } else {
            let mut all: Vec<(u64, u64)> = inputs.into_iter().flat_map(|t| t.keys).collect();
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            all.dedup_by_key(|e| e.0);
            let per_table = (self.cfg.table_target_bytes / self.cfg.entry_bytes).max(1) as usize;
            self.report.written_bytes += all.len() as u64 * self.cfg.entry_bytes;
            for chunk in all.chunks(per_table) {
                if let Some(t) = self.make_table(chunk.to_vec()) {
                    self.levels[out].push(t);
                }
            }
        }
        self.levels[out].sort_by(|a, b| a.info.smallest.cmp(&b.info.smallest));
    }

    fn runs(&self) -> usize {
        self.levels[0].len() + self.levels[1..].iter().filter(|l| !l.is_empty()).count()
    }

    fn space_amp(&self) -> f64 {
        let stored: u64 = self.levels.iter().flatten().map(|t| t.info.entries).sum();
        stored as f64 / self.distinct.len().max(1) as f64
    }

    /// Feeds the configured stream through `policy` and measures.
    pub fn run_stream(cfg: SimConfig, policy: &dyn CompactionPolicy) -> SimReport {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut sim = Sim::new(cfg.clone());
        sim.report.policy = policy.name().to_string();
        let per_sample = (cfg.lookups / cfg.flushes.max(1)).max(1);
        let (mut probes, mut lookups) = (0u64, 0u64);
        for _ in 0..cfg.flushes {
            let keys: Vec<u64> = (0..cfg.flush_keys)
                .map(|_| rng.gen_range(0..cfg.keyspace))
                .collect();
            sim.flush(keys);
            sim.settle(policy);
            sim.report.max_runs = sim.report.max_runs.max(sim.runs());
            sim.report.max_space_amp = sim.report.max_space_amp.max(sim.space_amp());
            for _ in 0..per_sample {
                let k = key_bytes(rng.gen_range(0..cfg.keyspace));
                lookups += 1;
                for l in &sim.levels {
                    probes += l
                        .iter()
                        .filter(|t| t.info.smallest <= k && k <= t.info.largest)
                        .count() as u64;
                }
            }
        }
        let r = &mut sim.report;
        r.write_amp = r.written_bytes as f64 / r.user_bytes.max(1) as f64;
        r.read_amp = probes as f64 / lookups.max(1) as f64;
        r.levels = sim
            .levels
            .iter()
            .map(|l| SimLevel {
                files: l.len(),
                bytes: l.iter().map(|t| t.info.size).sum(),
            })
            .collect();
        let space = sim.space_amp();
        sim.report.space_amp = space;
        sim.report
    }
}
