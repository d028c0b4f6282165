//! The blackboard: the one shared state the agents observe and act on — the current Version
//! (replaced only through [`Blackboard::apply`] or a memtable switch), the visible seqno, the
//! change signal agents wait on, poisoning, and the counters behind `stats()`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use super::cache::BlockCache;
use super::clock::Clock;
use super::compaction::{self, CompactionPolicy, LevelsView, PolicyStats};
use super::error::{Error, Result};
use super::manifest::{Edit, ManifestState, ManifestWriter};
use super::storage::Storage;
use super::types::SeqNo;
use super::version::Version;
use super::EngineConfig;

/// Monotonic counters, readable without locks.
#[derive(Default)]
pub struct Counters {
    pub user_bytes: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub table_bytes_written: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    pub stalls: AtomicU64,
    pub stall_us_total: AtomicU64,
    pub stall_us_max: AtomicU64,
    pub groups: AtomicU64,
    pub flush_failures: AtomicU64,
    pub compaction_failures: AtomicU64,
    pub policy_swaps: AtomicU64,
    pub tasks_cancelled: AtomicU64,
    pub tasks_rejected: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub floor_compactions: AtomicU64,
    pub idle_compactions: AtomicU64,
    /// Blocks of idle-merge outputs read into the block cache's free space (or found there).
    pub warmed_blocks: AtomicU64,
    pub reclaim_compactions: AtomicU64,
    pub slowdowns: AtomicU64,
    /// Gauge: pending compaction bytes of the last Version ingest looked at.
    pub pending_compaction_bytes: AtomicU64,
}

/// What one agent is doing, for `INFO agents` and `AGENT INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Idle,
    Working,
    Stalled,
    Poisoned,
    Stopped,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Idle => "idle",
            AgentState::Working => "working",
            AgentState::Stalled => "stalled",
            AgentState::Poisoned => "poisoned",
            AgentState::Stopped => "stopped",
        }
    }
}

pub struct AgentStatus {
    pub name: &'static str,
    pub state: Mutex<AgentState>,
    pub policy: Mutex<String>,
    pub tasks: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub busy_us: AtomicU64,
}

impl AgentStatus {
    pub fn new(name: &'static str, policy: &str) -> AgentStatus {
        AgentStatus {
            name,
            state: Mutex::new(AgentState::Idle),
            policy: Mutex::new(policy.to_string()),
            tasks: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
        }
    }

    pub fn set(&self, s: AgentState) {
        *self.state.lock() = s;
    }
}

struct ApplyState {
    manifest: ManifestWriter,
    state: ManifestState,
}

pub struct Blackboard {
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub cfg: EngineConfig,
    version: RwLock<Arc<Version>>,
    apply: Mutex<ApplyState>,
    visible: AtomicU64,
    /// Engine-clock time of the last published write (kept only with idle compaction on).
    last_write_ms: AtomicU64,
    next_file: AtomicU64,
    poison: Mutex<Option<String>>,
    poisoned: AtomicBool,
    shutdown: AtomicBool,
    /// Bumped on every change agents may care about; they wait on `changed`.
    epoch: Mutex<u64>,
    changed: Condvar,
    /// Set while flushes keep failing (e.g. a full disk) so stalled writers fail instead of waiting.
    pub flush_error: Mutex<Option<String>>,
    pub counters: Counters,
    pub agents: Vec<Arc<AgentStatus>>,
    /// The compaction policy in charge; swapped whole, read by the compaction agent per task.
    policy: RwLock<Arc<dyn CompactionPolicy>>,
    /// Data blocks shared by every table of this engine (None when sized 0).
    pub cache: Option<Arc<BlockCache>>,
    /// The last epoch at which the compaction agent found nothing to do (see
    /// [`Blackboard::wait_compaction_idle`]).
    compaction_idle_epoch: AtomicU64,
}

impl Blackboard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        cfg: EngineConfig,
        version: Version,
        manifest: ManifestWriter,
        state: ManifestState,
        visible: SeqNo,
        next_file: u64,
        agents: Vec<Arc<AgentStatus>>,
    ) -> Blackboard {
        // The config was validated, so the name is known; leveled is the safe fallback anyway.
        let opened_ms = clock.now_ms();
        let policy = compaction::policy_by_name(&cfg.compaction_policy)
            .unwrap_or_else(|_| Arc::new(compaction::Leveled));
        Blackboard {
            policy: RwLock::new(policy),
            cache: None,
            compaction_idle_epoch: AtomicU64::new(0),
            dir,
            storage,
            clock,
            cfg,
            version: RwLock::new(Arc::new(version)),
            apply: Mutex::new(ApplyState { manifest, state }),
            visible: AtomicU64::new(visible),
            last_write_ms: AtomicU64::new(opened_ms),
            next_file: AtomicU64::new(next_file),
            poison: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            epoch: Mutex::new(0),
            changed: Condvar::new(),
            flush_error: Mutex::new(None),
            counters: Counters::default(),
            agents,
        }
    }

    /// Shares `cache` with the blackboard (the tables opened during recovery already use it).
    pub fn with_cache(mut self, cache: Option<Arc<BlockCache>>) -> Blackboard {
        self.cache = cache;
        self
    }

    pub fn policy(&self) -> Arc<dyn CompactionPolicy> {
        self.policy.read().clone()
    }

    /// Installs a new compaction policy. A task already running finishes under the old one;
    /// the agent is woken to re-evaluate under the new one.
    pub fn set_policy(&self, p: Arc<dyn CompactionPolicy>) {
        let name = p.name().to_string();
        *self.policy.write() = p;
        self.counters.policy_swaps.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = self.agent("compaction") {
            *a.policy.lock() = name.clone();
        }
        tracing::info!(policy = %name, "compaction policy swapped");
        self.notify();
    }

    /// Policy inputs for the current config (cursors empty, clock now).
    pub fn policy_stats(&self) -> PolicyStats {
        let mut ps = PolicyStats::from_config(&self.cfg);
        ps.now_ms = self.clock.now_ms();
        ps
    }

    /// Bytes the current policy still wants to rewrite in `v`.
    pub fn pending_compaction_bytes(&self, v: &Version) -> u64 {
        self.policy()
            .pending_bytes(&LevelsView::from_version(v), &self.policy_stats())
    }

    /// Called by the compaction agent when, at `epoch`, it had nothing to do. Wakes waiters
    /// without bumping the epoch (which would wake the agent itself again).
    pub fn set_compaction_idle(&self, epoch: u64) {
        self.compaction_idle_epoch.store(epoch, Ordering::SeqCst);
        let _ep = self.epoch.lock();
        self.changed.notify_all();
    }

    /// Waits until the compaction agent has seen every change up to now and found nothing
    /// left to do (or the engine stops). For tests and tools: "compactions have settled".
    pub fn wait_compaction_idle(&self) -> Result<()> {
        self.notify();
        let target = self.epoch();
        loop {
            self.check_poison()?;
            if self.is_shutdown() {
                return Err(Error::Closed);
            }
            let mut ep = self.epoch.lock();
            if self.compaction_idle_epoch.load(Ordering::SeqCst) >= target {
                return Ok(());
            }
            // Timed so a missed wake-up costs a moment, not a hang.
            self.changed.wait_for(&mut ep, Duration::from_millis(200));
        }
    }

    pub fn current(&self) -> Arc<Version> {
        self.version.read().clone()
    }

    /// Readers take the Version first, then the seqno. Everything in that Version's tables and
    /// immutables was published before it was installed (so is <= the seqno), and the seqno
    /// only filters out groups still being inserted into its active memtable; groups published
    /// into a newer memtable after the Version was taken stay invisible as a whole, so the
    /// reader sees a consistent prefix that includes every group acknowledged before the read.
    /// The other order is unsafe with compaction: a reader delayed between the two loads could
    /// get a Version whose compactions already replaced every version of a key at or below its
    /// seqno by a newer one, and see the key as missing.
    pub fn snapshot(&self) -> (SeqNo, Arc<Version>) {
        let v = self.current();
        let s = self.visible.load(Ordering::Acquire);
        (s, v)
    }

    pub fn visible(&self) -> SeqNo {
        self.visible.load(Ordering::Acquire)
    }

    pub fn publish(&self, seqno: SeqNo) {
        self.visible.store(seqno, Ordering::Release);
        if self.cfg.idle_compaction_ms > 0 {
            self.last_write_ms
                .store(self.clock.now_ms(), Ordering::Relaxed);
        }
    }

    /// Milliseconds (engine clock) since the last published write, or since the engine
    /// opened. Only kept up to date while `idle_compaction_ms` is on.
    pub fn quiet_ms(&self) -> u64 {
        self.clock
            .now_ms()
            .saturating_sub(self.last_write_ms.load(Ordering::Relaxed))
    }

    pub fn new_file_number(&self) -> u64 {
        self.next_file.fetch_add(1, Ordering::SeqCst)
    }

    pub fn db_dir(&self) -> &Path {
        &self.dir
    }

    pub fn table_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:06}.sst"))
    }

    pub fn wal_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n:06}.log"))
    }

    /// The one way to change the tables of the Version: checks the edit's inputs are still live,
    /// appends the edit to the MANIFEST (synced), then installs the Version `change` builds from
    /// the current one. A failed MANIFEST sync poisons.
    pub fn apply(&self, mut edit: Edit, change: impl FnOnce(&Version) -> Version) -> Result<()> {
        self.check_poison()?;
        let mut ap = self.apply.lock();
        let cur = self.current();
        for (level, id) in &edit.removed {
            let live = cur
                .levels
                .get(*level as usize)
                .is_some_and(|l| l.iter().any(|t| t.meta.id == *id));
            if !live {
                return Err(Error::Invalid(format!(
                    "stale edit: table {id} is not live at L{level}"
                )));
            }
        }
        edit.next_file = Some(self.next_file.load(Ordering::SeqCst));
        edit.last_seqno = Some(edit.last_seqno.unwrap_or(0).max(self.visible()));
        if let Err(e) = ap.manifest.append(&edit) {
            if let Error::Poisoned(why) = &e {
                self.poison(why.clone());
            }
            return Err(e);
        }
        ap.state.apply(&edit);
        let next = change(&cur);
        *self.version.write() = Arc::new(next);
        drop(ap);
        self.notify();
        Ok(())
    }

    /// Installs a Version change that the MANIFEST does not record (memtable switches).
    pub fn switch(&self, change: impl FnOnce(&Version) -> Version) {
        let _ap = self.apply.lock();
        let cur = self.current();
        *self.version.write() = Arc::new(change(&cur));
        drop(_ap);
        self.notify();
    }

    pub fn manifest_state(&self) -> ManifestState {
        self.apply.lock().state.clone()
    }

    pub fn notify(&self) {
        *self.epoch.lock() += 1;
        self.changed.notify_all();
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.lock()
    }

    /// Waits until the epoch moves past `seen` (or `timeout` passes); returns the new epoch.
    pub fn wait_change(&self, seen: u64, timeout: Option<Duration>) -> u64 {
        let mut ep = self.epoch.lock();
        if *ep == seen && !self.is_shutdown() {
            match timeout {
                Some(t) => {
                    self.changed.wait_for(&mut ep, t);
                }
                None => self.changed.wait(&mut ep),
            }
        }
        *ep
    }

    pub fn poison(&self, why: String) {
        let mut p = self.poison.lock();
        if p.is_none() {
            tracing::error!(reason = %why, "engine poisoned: writes refused until restart");
            *p = Some(why);
            self.poisoned.store(true, Ordering::SeqCst);
        }
        drop(p);
        for a in &self.agents {
            a.set(AgentState::Poisoned);
        }
        self.notify();
    }

    pub fn poisoned(&self) -> Option<String> {
        if self.poisoned.load(Ordering::SeqCst) {
            self.poison.lock().clone()
        } else {
            None
        }
    }

    pub fn check_poison(&self) -> Result<()> {
        match self.poisoned() {
            Some(why) => Err(Error::Poisoned(why)),
            None => Ok(()),
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.notify();
    }

    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub fn agent(&self, name: &str) -> Option<&Arc<AgentStatus>> {
        self.agents.iter().find(|a| a.name == name)
    }
}
