//! The blackboard LSM engine, usable as a library without the server.
//!
//! Write path: [`Engine::write`] queues a group of operations for the ingest agent, which
//! evaluates them over a [`View`], logs the group as one WAL record, applies it to the memtable
//! and publishes its last seqno. Read path: [`Engine::get`] takes the visible seqno, then the
//! current Version, and looks in memtable → immutables → L0 → L1.. without holding a lock.

pub mod agents;
pub mod blackboard;
pub mod cache;
pub mod clock;
pub mod compaction;
pub mod counter;
pub mod error;
pub mod fault;
pub mod iter;
pub mod manifest;
pub mod memtable;
mod skiplist;
pub mod sstable;
pub mod storage;
pub mod types;
pub mod version;
pub mod wal;

mod db;

use bytes::Bytes;

pub use agents::ingest::View;
pub use clock::{Clock, ManualClock, SystemClock};
pub use counter::Counter;
pub use db::Engine;
pub use error::{Error, Result};
pub use storage::{FsStorage, Storage, WritableFile};
pub use types::{Entry, Kind, SeqNo};

/// One operation of a write group, evaluated by the ingest agent over a [`View`].
pub type Op<T> = Box<dyn FnOnce(&mut View<'_>) -> T + Send>;

/// When the WAL is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fdatasync before any acknowledgement.
    Always,
    /// a timer syncs once a second.
    Everysec,
    /// never synced by the engine (survives a process crash, not a power cut).
    Never,
}

/// Engine tuning. Every field has a safe default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub memtable_bytes: usize,
    pub max_immutables: usize,
    pub fsync: FsyncPolicy,
    pub block_size: usize,
    pub bloom_bits_per_key: u32,
    pub l0_compaction_trigger: usize,
    pub l0_stop_trigger: usize,
    pub table_target_bytes: u64,
    /// Upper bound of one group commit (bytes of queued operations drained at once).
    pub max_group_bytes: usize,
    /// Backpressure: bytes of operations queued for the ingest agent before writers wait.
    pub write_queue_bytes: usize,
    pub block_cache_bytes: usize,
    /// "leveled" or "tiered"; swappable at run time with `Engine::set_compaction_policy`.
    pub compaction_policy: String,
    /// Leveled: target size of L1; Ln's target is `level_base_bytes * level_ratio^(n-1)`.
    pub level_base_bytes: u64,
    pub level_ratio: u64,
    /// Above this many L0 tables each write group is delayed a little (clamped to the
    /// compaction and stop triggers).
    pub l0_slowdown_trigger: usize,
    /// Backpressure on bytes the compaction policy still wants to rewrite: delay each group
    /// above the first, stop writers above the second (while compaction can make progress).
    pub pending_compaction_bytes_slowdown: u64,
    pub pending_compaction_bytes_stop: u64,
    /// Niceness (0..=19) of the flush and compaction threads: above 0 the scheduler lets
    /// foreground work (serving clients) go first when the cores are busy. Backpressure
    /// (slowdown and stop triggers) still bounds how far background work may fall behind.
    pub background_nice: i32,
    /// With `fsync = always`, WAL space is reserved this many bytes ahead (at most a
    /// memtable's worth) so that the sync after each group commits no file-size change; 0
    /// turns it off. Unused reserved space is cut off when a segment is done.
    pub wal_preallocate_bytes: u64,
    /// When no write has been published for this long (by the engine's clock) and the
    /// compaction agent has nothing else to do, it asks the policy for an idle task (leveled:
    /// merge L0 into L1), so that reads after a burst of writes probe fewer tables. 0 turns
    /// it off.
    pub idle_compaction_ms: u64,
}

/// A live value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub data: Bytes,
    /// Absolute expiry, unix ms.
    pub expire_at: Option<u64>,
    /// Seqno of this version.
    pub seqno: SeqNo,
    pub type_tag: u8,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub visible_seqno: SeqNo,
    pub memtable_bytes: u64,
    pub immutables: usize,
    /// Per level: (files, bytes).
    pub levels: Vec<(usize, u64)>,
    pub user_bytes: u64,
    pub wal_bytes: u64,
    pub table_bytes_written: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub stalls: u64,
    pub stall_ms_total: u64,
    pub stall_ms_max: u64,
    pub poisoned: Option<String>,
    pub agents: Vec<AgentStats>,
    /// Per level: files, bytes and the current policy's score (>= 1.0: it wants to compact).
    pub level_stats: Vec<LevelStats>,
    /// Name of the compaction policy in charge.
    pub compaction_policy: String,
    pub policy_swaps: u64,
    /// Compaction tasks abandoned at shutdown (their outputs deleted).
    pub tasks_cancelled: u64,
    /// Tasks a policy proposed that failed validation (nothing was run).
    pub tasks_rejected: u64,
    pub trivial_moves: u64,
    /// Compactions the engine ran on its own: the L0 floor and expired-data reclaim.
    pub floor_compactions: u64,
    pub reclaim_compactions: u64,
    /// Idle tasks run after writes went quiet (see `EngineConfig::idle_compaction_ms`).
    pub idle_compactions: u64,
    /// Blocks of idle tasks' output tables read into free block-cache space afterwards.
    pub warmed_blocks: u64,
    pub compaction_failures: u64,
    /// Bytes the policy still wants to rewrite (drives backpressure).
    pub pending_compaction_bytes: u64,
    /// Write groups delayed by the slowdown triggers.
    pub slowdowns: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    pub cache_capacity: u64,
    /// (wal_bytes + table_bytes_written) / user_bytes; 0 before any write.
    pub write_amplification: f64,
}

/// One level in [`EngineStats::level_stats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelStats {
    pub files: usize,
    pub bytes: u64,
    pub score: f64,
}

#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    pub name: String,
    /// idle / working / stalled / poisoned
    pub state: String,
    pub policy: String,
    pub tasks: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub busy_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memtable_bytes: 64 << 20,
            max_immutables: 2,
            fsync: FsyncPolicy::Always,
            block_size: 4096,
            bloom_bits_per_key: 10,
            l0_compaction_trigger: 4,
            l0_stop_trigger: 20,
            table_target_bytes: 64 << 20,
            max_group_bytes: 4 << 20,
            write_queue_bytes: 64 << 20,
            block_cache_bytes: 64 << 20,
            compaction_policy: "leveled".to_string(),
            level_base_bytes: 256 << 20,
            level_ratio: 10,
            l0_slowdown_trigger: 8,
            pending_compaction_bytes_slowdown: 64 << 30,
            pending_compaction_bytes_stop: 256 << 30,
            background_nice: 0,
            wal_preallocate_bytes: 4 << 20,
            idle_compaction_ms: 0,
        }
    }
}

impl EngineConfig {
    /// How far ahead the WAL reserves space (0: not at all); see `wal_preallocate_bytes`.
    pub fn wal_prealloc_chunk(&self) -> u64 {
        if self.fsync == FsyncPolicy::Always {
            self.wal_preallocate_bytes.min(self.memtable_bytes as u64)
        } else {
            0
        }
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, why: &str| Err(Error::Config(format!("field '{f}': {why}")));
        if self.memtable_bytes < 1024 {
            return bad("memtable_bytes", "must be at least 1024");
        }
        if self.max_immutables == 0 {
            return bad("max_immutables", "must be at least 1");
        }
        if !(256..=1 << 20).contains(&self.block_size) {
            return bad("block_size", "must be between 256 and 1048576");
        }
        if self.bloom_bits_per_key > 64 {
            return bad("bloom_bits_per_key", "must be at most 64");
        }
        if self.l0_compaction_trigger < 2 {
            return bad("l0_compaction_trigger", "must be at least 2");
        }
        if self.l0_stop_trigger <= self.l0_compaction_trigger {
            return bad("l0_stop_trigger", "must be above l0_compaction_trigger");
        }
        if self.table_target_bytes < 1024 {
            return bad("table_target_bytes", "must be at least 1024");
        }
        if self.max_group_bytes == 0 || self.write_queue_bytes == 0 {
            return bad("write_queue_bytes", "must be positive");
        }
        if !compaction::POLICY_NAMES.contains(&self.compaction_policy.as_str()) {
            return bad(
                "compaction_policy",
                &format!("must be one of: {}", compaction::POLICY_NAMES.join(", ")),
            );
        }
        if self.level_base_bytes < 1024 {
            return bad("level_base_bytes", "must be at least 1024");
        }
        if !(2..=1000).contains(&self.level_ratio) {
            return bad("level_ratio", "must be between 2 and 1000");
        }
        if !(0..=19).contains(&self.background_nice) {
            return bad("background_nice", "must be between 0 and 19");
        }
        if self.pending_compaction_bytes_stop < self.pending_compaction_bytes_slowdown {
            return bad(
                "pending_compaction_bytes_stop",
                "must be at least pending_compaction_bytes_slowdown",
            );
        }
        Ok(())
    }
}

/// Hints the CPU to start loading `p`'s cache line.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
