//! The ingest agent: owns group commit. It drains queued write requests, evaluates every
//! operation over a [`View`] (current state + earlier operations of the same group), appends one
//! WAL record for the group, syncs per policy, applies the group to the memtable, publishes the
//! group's last seqno and only then acknowledges. It also freezes full memtables.
//!
//! The agent is one component whose work is done by a leader (as in RocksDB's write thread):
//! a writer queues its request, then whoever holds the core lock drains the whole queue. A
//! writer that finds the lock free becomes the leader and commits its own request together
//! with everything queued meanwhile — no thread hand-off when there is no contention — while
//! writers that arrive during a leader's fsync wait and are committed by it as the next group.
//! The agent's own thread only runs the `everysec` timer.

use std::any::Any;
use std::collections::HashMap;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::Xxh3Builder;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::engine::blackboard::{AgentState, AgentStatus, Blackboard};
use crate::engine::error::{Error, Result};
use crate::engine::manifest::{Drop, Edit};
use crate::engine::memtable::Memtable;
use crate::engine::types::{Entry, Found, SeqNo};
use crate::engine::version::Version;
use crate::engine::wal::WalWriter;
use crate::engine::{FsyncPolicy, Value};

/// Delay of one write group above a slowdown trigger.
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);

pub(crate) type AnyBox = Box<dyn Any + Send>;
pub(crate) type ErasedOp = Box<dyn FnOnce(&mut View<'_>) -> AnyBox + Send>;
pub(crate) type WriteResult = Result<Vec<AnyBox>>;

/// Where a write request's results go: its own channel, or one part of a batch that is
/// answered as a whole, so that the writer of a batch is woken once for all its parts.
pub(crate) enum WriteReply {
    One(oneshot::Sender<WriteResult>),
    Part(Arc<Gather>, usize),
}

impl WriteReply {
    pub(crate) fn send(self, r: WriteResult) {
        match self {
            WriteReply::One(tx) => {
                let _ = tx.send(r);
            }
            WriteReply::Part(g, i) => g.fill(i, r),
        }
    }
}

/// The results of a batch of write requests, sent together once the last part is answered.
/// Parts dropped unanswered (the ingest agent panicked) are answered with an error when the
/// last reference goes, so the parts that were answered keep their results.
pub(crate) struct Gather {
    state: Mutex<GatherState>,
}

struct GatherState {
    results: Vec<Option<WriteResult>>,
    left: usize,
    reply: Option<oneshot::Sender<Vec<WriteResult>>>,
    /// Backpressure permits of the whole batch, returned when it is answered.
    permit: Option<OwnedSemaphorePermit>,
}

impl Gather {
    pub(crate) fn new(
        parts: usize,
        reply: oneshot::Sender<Vec<WriteResult>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Arc<Gather> {
        Arc::new(Gather {
            state: Mutex::new(GatherState {
                results: (0..parts).map(|_| None).collect(),
                left: parts,
                reply: Some(reply),
                permit,
            }),
        })
    }

    fn fill(&self, i: usize, r: WriteResult) {
        let mut s = self.state.lock();
        if s.results[i].replace(r).is_none() {
            s.left -= 1;
        }
        if s.left == 0 {
            s.answer();
        }
    }
}

impl GatherState {
    /// Sends the results (once); a part never answered gets an error.
    fn answer(&mut self) {
        if let Some(tx) = self.reply.take() {
            let all = self
                .results
                .drain(..)
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Error::Poisoned(
                            "write request dropped by the ingest agent".into(),
                        ))
                    })
                })
                .collect();
            let _ = tx.send(all);
        }
        self.permit = None;
    }
}

impl std::ops::Drop for Gather {
    fn drop(&mut self) {
        self.state.get_mut().answer();
    }
}

pub(crate) enum Request {
    Write {
        ops: Vec<ErasedOp>,
        reply: WriteReply,
        /// Backpressure permits, returned when the request is done.
        permit: Option<OwnedSemaphorePermit>,
    },
    DropPrefix {
        prefix: Bytes,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Freeze the active memtable (if not empty) so the flush agent writes it out.
    Freeze { reply: oneshot::Sender<Result<()>> },
}

/// The current state plus the earlier operations of the same group, as seen by an operation.
pub struct View<'a> {
    version: &'a Version,
    entries: &'a mut Vec<Entry>,
    /// Index into `entries` of each key's newest pending version, for `entries[..indexed]`:
    /// built only when an operation reads, so groups of plain writes never hash a key.
    pending: HashMap<Bytes, usize, Xxh3Builder>,
    indexed: usize,
    next_seqno: SeqNo,
    now: u64,
}

impl View<'_> {
    /// Brings `pending` up to date with `entries`.
    fn index_pending(&mut self) {
        for i in self.indexed..self.entries.len() {
            self.pending.insert(self.entries[i].key.clone(), i);
        }
        self.indexed = self.entries.len();
    }

    fn newest(&mut self, key: &[u8]) -> Result<Option<Found>> {
        self.index_pending();
        if let Some(&i) = self.pending.get(key) {
            return Ok(Some(self.entries[i].clone().into_parts().1));
        }
        // Everything applied so far is visible: the ingest agent is the only writer.
        let e = self.version.lookup(key, SeqNo::MAX)?;
        Ok(e.filter(|e| !self.version.is_dropped_at(key, e.seqno)))
    }

    /// The live (present, unexpired) value of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        Ok(self
            .newest(key)?
            .filter(|e| e.is_live(self.now))
            .map(Value::from_found))
    }

    /// Seqno of the newest version of `key` (put, delete or prefix drop); 0 if none.
    pub fn key_version(&mut self, key: &[u8]) -> Result<SeqNo> {
        self.index_pending();
        if let Some(&i) = self.pending.get(key) {
            return Ok(self.entries[i].seqno);
        }
        let e = self.version.lookup(key, SeqNo::MAX)?.map_or(0, |e| e.seqno);
        Ok(e.max(self.version.drop_seqno(key).unwrap_or(0)))
    }

    pub fn put(&mut self, key: Bytes, value: Bytes, expire_at: Option<u64>) {
        let e = Entry::put(key, self.next_seqno, value, expire_at.unwrap_or(0));
        self.push(e);
    }

    pub fn delete(&mut self, key: Bytes) {
        let e = Entry::delete(key, self.next_seqno);
        self.push(e);
    }

    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Forgets everything pushed since `mark` (entries length, next seqno).
    fn rollback(&mut self, mark: (usize, SeqNo)) {
        self.entries.truncate(mark.0);
        self.next_seqno = mark.1;
        // Rebuilt from the kept entries when next needed.
        self.pending.clear();
        self.indexed = 0;
    }

    fn push(&mut self, e: Entry) {
        self.next_seqno += 1;
        self.entries.push(e);
    }
}

impl Value {
    pub(crate) fn from_found(e: Found) -> Value {
        Value {
            data: e.value,
            expire_at: (e.expire_at != 0).then_some(e.expire_at),
            seqno: e.seqno,
            type_tag: e.type_tag,
        }
    }
}

/// Requests waiting for a leader.
struct Queue {
    reqs: Vec<Request>,
    closed: bool,
}

/// The ingest agent: a queue and the core that only the current leader touches.
pub(crate) struct Ingest {
    bb: Arc<Blackboard>,
    queue: Mutex<Queue>,
    /// A std mutex, not parking_lot's: see [`Ingest::lock_core`].
    core: std::sync::Mutex<Core>,
    /// True while a leader holds `core`.
    leading: AtomicBool,
    /// Operations in the batch the current (or last) leader is committing.
    leading_ops: AtomicUsize,
}

/// The core, held: `leading` is true for as long as the guard lives.
struct CoreGuard<'a> {
    guard: std::sync::MutexGuard<'a, Core>,
    leading: &'a AtomicBool,
}

impl<'a> CoreGuard<'a> {
    fn new(guard: std::sync::MutexGuard<'a, Core>, leading: &'a AtomicBool) -> Self {
        leading.store(true, Ordering::Release);
        CoreGuard { guard, leading }
    }
}

impl std::ops::Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        // Cleared while the mutex is still held (the guard field drops after this body).
        self.leading.store(false, Ordering::Release);
    }
}

impl std::ops::Deref for CoreGuard<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.guard
    }
}

impl std::ops::DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.guard
    }
}

/// The state of group commit; whoever holds its lock is the leader.
struct Core {
    bb: Arc<Blackboard>,
    wal: WalWriter,
    next_seqno: SeqNo,
    dirty: bool,
    last_sync: Instant,
    status: Arc<AgentStatus>,
    closed: bool,
    /// Pending compaction bytes of a Version. A Weak (not the pointer) so the allocation cannot
    /// be reused by a newer Version while cached, and no tables are kept alive.
    pending_cache: Option<(std::sync::Weak<Version>, u64)>,
}

struct Pending {
    reply: WriteReply,
    results: Vec<AnyBox>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Ingest {
    pub(crate) fn new(bb: Arc<Blackboard>, wal: WalWriter) -> Ingest {
        let next_seqno = bb.visible() + 1;
        let status = bb
            .agent("ingest")
            .cloned()
            .unwrap_or_else(|| Arc::new(AgentStatus::new("ingest", "group-commit")));
        Ingest {
            bb: bb.clone(),
            queue: Mutex::new(Queue {
                reqs: Vec::new(),
                closed: false,
            }),
            leading: AtomicBool::new(false),
            leading_ops: AtomicUsize::new(0),
            core: std::sync::Mutex::new(Core {
                bb,
                wal,
                next_seqno,
                dirty: false,
                last_sync: Instant::now(),
                status,
                closed: false,
                pending_cache: None,
            }),
        }
    }

    /// Waits for the core. A leader committing a short batch (a few single-command writes:
    /// pipeline 1) is done within a time slice, so the waiter yields its core a few times
    /// first, as parking_lot's lock does; behind a long batch those yields are wasted system
    /// calls (and with more writers than cores, most of the ingest's system time: 4 writer
    /// threads on 2 cores made ~1M involuntary context switches per 2M writes), so the waiter
    /// goes straight to the mutex, which spins briefly and then sleeps in the kernel.
    fn lock_core(&self) -> CoreGuard<'_> {
        const SHORT_BATCH_OPS: usize = 4;
        const YIELDS: usize = 7;
        if self.leading_ops.load(Ordering::Relaxed) <= SHORT_BATCH_OPS {
            for _ in 0..YIELDS {
                if let Some(g) = self.try_lock_core() {
                    return g;
                }
                std::thread::yield_now();
            }
        }
        // A panic inside `lead` is caught there (and poisons the engine, not the mutex);
        // a poisoned mutex still holds a consistent core.
        let g = self.core.lock().unwrap_or_else(|p| p.into_inner());
        CoreGuard::new(g, &self.leading)
    }

    fn try_lock_core(&self) -> Option<CoreGuard<'_>> {
        let g = match self.core.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(CoreGuard::new(g, &self.leading))
    }

    /// Queues a request; `Closed` once the engine shuts down.
    pub(crate) fn submit(&self, req: Request) -> Result<()> {
        self.submit_all(std::iter::once(req))
    }

    /// Queues several requests at once (one lock), in order; `Closed` once the engine shuts
    /// down.
    pub(crate) fn submit_all(&self, reqs: impl IntoIterator<Item = Request>) -> Result<()> {
        let mut q = self.queue.lock();
        if q.closed {
            return Err(match self.bb.poisoned() {
                Some(why) => Error::Poisoned(why),
                None => Error::Closed,
            });
        }
        q.reqs.extend(reqs);
        Ok(())
    }

    /// Leads until the queue is empty, waiting for the lock if another leader has it. When
    /// this returns, every request queued before the call has been answered.
    pub(crate) fn drive(&self) {
        loop {
            let mut core = self.lock_core();
            self.lead(&mut core);
            drop(core);
            // A request queued while we released the lock would have no leader otherwise.
            if self.queue.lock().reqs.is_empty() {
                return;
            }
        }
    }

    /// Leads if no one else does; otherwise the current leader answers our request.
    /// From async code (`in_runtime`: a multi-thread tokio runtime), a leader that may block
    /// (fsync, stall) first hands its worker's other tasks to the runtime with
    /// `block_in_place`. Only the writer that won the lock does so, so at most one worker at a
    /// time is handed off and the runtime does not grow threads per waiting writer.
    pub(crate) fn try_drive(&self, in_runtime: bool) {
        while let Some(mut core) = self.try_lock_core() {
            if in_runtime && self.may_block() {
                tokio::task::block_in_place(|| self.lead(&mut core));
            } else {
                self.lead(&mut core);
            }
            drop(core);
            if self.queue.lock().reqs.is_empty() {
                return;
            }
        }
    }

    /// True while a leader holds the core. A request queued before this returned true is
    /// answered by that leader: it checks the queue again after it lets go of the core.
    pub(crate) fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// True when leading may block for long (fsync, stalls), so an async caller should tell
    /// its runtime first.
    pub(crate) fn may_block(&self) -> bool {
        self.bb.cfg.fsync == FsyncPolicy::Always || self.may_stall()
    }

    /// True when the next group may wait for flush or compaction (or be delayed for them).
    pub(crate) fn may_stall(&self) -> bool {
        let cfg = &self.bb.cfg;
        let v = self.bb.current();
        // One short of the slowdown trigger: a group about to be delayed counts as blocking.
        v.imms.len() >= cfg.max_immutables
            || v.l0_count() >= slowdown_l0(cfg).saturating_sub(1)
            || self
                .bb
                .counters
                .pending_compaction_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
                >= cfg.pending_compaction_bytes_slowdown
    }

    fn lead(&self, core: &mut Core) {
        loop {
            let batch = std::mem::take(&mut self.queue.lock().reqs);
            if batch.is_empty() {
                return;
            }
            let ops = batch
                .iter()
                .map(|r| match r {
                    Request::Write { ops, .. } => ops.len(),
                    _ => 1,
                })
                .sum();
            self.leading_ops.store(ops, Ordering::Relaxed);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.process(batch)));
            if let Err(p) = r {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.bb.poison(format!("ingest agent panicked: {msg}"));
            }
        }
    }

    /// The agent's own thread: the `everysec` timer, until shutdown.
    pub(crate) fn run_timer(&self) {
        let everysec = self.bb.cfg.fsync == FsyncPolicy::Everysec;
        loop {
            let ep = self.bb.epoch();
            if self.bb.is_shutdown() {
                break;
            }
            if everysec {
                self.lock_core().timer_sync();
            }
            self.bb.wait_change(
                ep,
                Some(Duration::from_millis(if everysec { 250 } else { 1000 })),
            );
        }
    }

    /// Refuses new requests, answers queued ones with `Closed` and syncs the WAL.
    pub(crate) fn close(&self) {
        let mut core = self.lock_core();
        let left = {
            let mut q = self.queue.lock();
            q.closed = true;
            std::mem::take(&mut q.reqs)
        };
        for r in left {
            r.fail(Error::Closed);
        }
        core.close();
    }
}

impl Request {
    fn fail(self, e: Error) {
        match self {
            Request::Write { reply, .. } => reply.send(Err(e)),
            Request::DropPrefix { reply, .. } | Request::Freeze { reply } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

impl Core {
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.bb.poisoned().is_none() {
            if self.dirty {
                if let Err(e) = self.wal.sync() {
                    tracing::error!(error = %e, "final WAL sync failed");
                }
            }
            // Not needed for replay (the last segment may end in zeros); tidier on disk.
            if let Err(e) = self.wal.trim() {
                tracing::warn!(error = %e, "final WAL trim failed");
            }
        }
        self.status.set(AgentState::Stopped);
    }

    /// Handles a batch in order: consecutive writes are committed as groups.
    fn process(&mut self, batch: Vec<Request>) {
        let mut reqs = batch.into_iter().peekable();
        while let Some(req) = reqs.next() {
            if self.closed {
                req.fail(Error::Closed);
                continue;
            }
            match req {
                Request::Write { ops, reply, permit } => {
                    let mut group = vec![(ops, reply, permit)];
                    while let Some(Request::Write { .. }) = reqs.peek() {
                        if let Some(Request::Write { ops, reply, permit }) = reqs.next() {
                            group.push((ops, reply, permit));
                        }
                    }
                    self.groups(group);
                }
                Request::DropPrefix { prefix, reply } => {
                    let _ = reply.send(self.drop_prefix(prefix));
                }
                Request::Freeze { reply } => {
                    let r = if self.bb.current().mem.is_empty() {
                        Ok(())
                    } else {
                        self.rotate()
                    };
                    let _ = reply.send(r);
                }
            }
        }
    }

    fn timer_sync(&mut self) {
        if self.dirty
            && self.bb.cfg.fsync == FsyncPolicy::Everysec
            && self.last_sync.elapsed() >= Duration::from_secs(1)
        {
            if let Err(e) = self.wal.sync() {
                self.bb.poison(format!("WAL sync failed: {e}"));
            }
            self.dirty = false;
            self.last_sync = Instant::now();
        }
    }

    /// Evaluates and commits consecutive write requests, as few groups as the group byte
    /// limit allows.
    fn groups(&mut self, reqs: Vec<(Vec<ErasedOp>, WriteReply, Option<OwnedSemaphorePermit>)>) {
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            if let Err(e) = self.bb.check_poison().and_then(|_| self.wait_for_room()) {
                for (_, reply, _) in reqs {
                    reply.send(Err(e.copy()));
                }
                return;
            }
            self.status.set(AgentState::Working);
            let started = Instant::now();
            let version = self.bb.current();
            let mut entries = Vec::new();
            let mut view = View {
                version: &version,
                entries: &mut entries,
                pending: HashMap::default(),
                indexed: 0,
                next_seqno: self.next_seqno,
                now: self.bb.clock.now_ms(),
            };
            let mut pending = Vec::new();
            let mut bytes = 0usize;
            while bytes < self.bb.cfg.max_group_bytes {
                let Some((ops, reply, permit)) = reqs.next() else {
                    break;
                };
                let mark = (view.entries.len(), view.next_seqno);
                let eval = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ops.into_iter().map(|op| op(&mut view)).collect::<Vec<_>>()
                }));
                match eval {
                    Ok(results) => {
                        bytes += view.entries[mark.0..]
                            .iter()
                            .map(Entry::approx_size)
                            .sum::<usize>();
                        pending.push(Pending {
                            reply,
                            results,
                            _permit: permit,
                        });
                    }
                    Err(_) => {
                        // A panicking operation fails its own request and leaves no trace;
                        // nothing was written yet, so the engine need not be poisoned.
                        view.rollback(mark);
                        reply.send(Err(Error::Invalid(
                            "write operation panicked; request discarded".into(),
                        )));
                    }
                }
            }
            let outcome = self.commit(entries);
            for p in pending {
                let r = match &outcome {
                    Ok(()) => Ok(p.results),
                    Err(e) => Err(e.copy()),
                };
                p.reply.send(r);
            }
            self.status.busy_us.fetch_add(
                started.elapsed().as_micros() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            self.status.set(AgentState::Idle);
            if outcome.is_ok() && version.mem.approx_bytes() >= self.bb.cfg.memtable_bytes {
                if let Err(e) = self.rotate() {
                    tracing::warn!(error = %e, "memtable switch failed; will retry");
                }
            }
        }
    }

    fn commit(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let c = &self.bb.counters;
        let before = self.wal.len();
        if let Err(e) = self.wal.append(&entries) {
            if !e.is_no_space() {
                self.bb.poison(format!("WAL append failed: {e}"));
            }
            return Err(e);
        }
        use std::sync::atomic::Ordering::Relaxed;
        c.wal_bytes.fetch_add(self.wal.len() - before, Relaxed);
        let user: usize = entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        c.user_bytes.fetch_add(user as u64, Relaxed);
        c.groups.fetch_add(1, Relaxed);
        self.status.tasks.fetch_add(1, Relaxed);
        self.status
            .bytes_written
            .fetch_add(self.wal.len() - before, Relaxed);
        match self.bb.cfg.fsync {
            FsyncPolicy::Always => {
                if let Err(e) = self.wal.sync() {
                    // Never retry a failed fsync: the kernel may have dropped the dirty pages.
                    let why = format!("WAL sync failed: {e}");
                    self.bb.poison(why.clone());
                    return Err(Error::Poisoned(why));
                }
            }
            FsyncPolicy::Everysec => {
                self.dirty = true;
                self.timer_sync();
            }
            FsyncPolicy::Never => self.dirty = true,
        }
        let last = entries.last().map_or(self.next_seqno, |e| e.seqno);
        let mem = self.bb.current().mem.clone();
        for e in entries {
            mem.insert(e);
        }
        self.next_seqno = last + 1;
        self.bb.publish(last);
        Ok(())
    }

    /// Bytes the compaction policy still wants to rewrite, recomputed only when the Version
    /// changes (this runs once per group).
    fn pending_compaction(&mut self, v: &Arc<Version>) -> u64 {
        match &self.pending_cache {
            Some((w, p)) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(v)) => *p,
            _ => {
                let p = self.bb.pending_compaction_bytes(v);
                self.pending_cache = Some((Arc::downgrade(v), p));
                // Published for `may_block`, which cannot afford to compute it.
                self.bb
                    .counters
                    .pending_compaction_bytes
                    .store(p, std::sync::atomic::Ordering::Relaxed);
                p
            }
        }
    }

    /// Writers wait here while immutables, L0 or pending compaction bytes are at their limit
    /// (counted as a stall), and are delayed a little above the slowdown triggers so that
    /// compaction can catch up before a hard stop.
    fn wait_for_room(&mut self) -> Result<()> {
        let cfg = self.bb.cfg.clone();
        let slow_l0 = slowdown_l0(&cfg);
        let mut stall_start: Option<Instant> = None;
        let mut slowed = false;
        let r = loop {
            let ep = self.bb.epoch();
            let v = self.bb.current();
            let pending = self.pending_compaction(&v);
            // Stopping on pending bytes only while compaction works on them: a policy that
            // chooses to leave bytes over target must not stall writers forever.
            let compacting = self
                .bb
                .agent("compaction")
                .is_some_and(|a| *a.state.lock() == AgentState::Working);
            let full = v.imms.len() >= cfg.max_immutables
                || v.l0_count() >= cfg.l0_stop_trigger
                || (compacting && pending >= cfg.pending_compaction_bytes_stop);
            if !full {
                let slow =
                    v.l0_count() >= slow_l0 || pending >= cfg.pending_compaction_bytes_slowdown;
                if slow && !slowed && stall_start.is_none() {
                    slowed = true;
                    self.bb
                        .counters
                        .slowdowns
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // A bounded delay per group, not a wait for a condition.
                    std::thread::sleep(SLOWDOWN_DELAY);
                    continue;
                }
                break Ok(());
            }
            if let Err(e) = self.bb.check_poison() {
                break Err(e);
            }
            if self.bb.is_shutdown() {
                break Err(Error::Closed);
            }
            if let Some(why) = self.bb.flush_error.lock().clone() {
                break Err(Error::NoSpace {
                    context: format!("writes stalled behind failing background work: {why}"),
                });
            }
            if stall_start.is_none() {
                stall_start = Some(Instant::now());
                self.status.set(AgentState::Stalled);
            }
            self.bb.wait_change(ep, Some(Duration::from_millis(500)));
        };
        if let Some(t) = stall_start {
            use std::sync::atomic::Ordering::Relaxed;
            let us = t.elapsed().as_micros() as u64;
            let c = &self.bb.counters;
            c.stalls.fetch_add(1, Relaxed);
            c.stall_us_total.fetch_add(us, Relaxed);
            c.stall_us_max.fetch_max(us, Relaxed);
            self.status.set(AgentState::Idle);
        }
        r
    }

    /// Freezes the memtable: sync the old segment (whatever the policy), start a new one,
    /// make it durable in the directory, then switch.
    fn rotate(&mut self) -> Result<()> {
        if let Err(e) = self.wal.sync() {
            let why = format!("WAL sync at rotation failed: {e}");
            self.bb.poison(why.clone());
            return Err(Error::Poisoned(why));
        }
        // Before the next segment exists: replay refuses a bad tail in a segment but the last.
        if let Err(e) = self.wal.trim() {
            let why = format!("WAL trim at rotation failed: {e}");
            self.bb.poison(why.clone());
            return Err(Error::Poisoned(why));
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        let n = self.bb.new_file_number();
        let wal = WalWriter::create(self.bb.storage.as_ref(), &self.bb.wal_path(n))?
            .preallocating(self.bb.cfg.wal_prealloc_chunk());
        if let Err(e) = self.bb.storage.sync_dir(&self.bb.dir) {
            let why = format!("directory sync at WAL rotation failed: {e}");
            self.bb.poison(why.clone());
            return Err(Error::Poisoned(why));
        }
        self.wal = wal;
        let mem = Arc::new(Memtable::with_budget(Some(n), self.bb.cfg.memtable_bytes));
        self.bb.switch(|v| {
            let mut nv = v.clone();
            nv.imms.insert(0, v.mem.clone());
            nv.mem = mem;
            nv
        });
        Ok(())
    }

    fn drop_prefix(&mut self, prefix: Bytes) -> Result<()> {
        self.bb.check_poison()?;
        let seqno = self.next_seqno;
        let d = Drop { prefix, seqno };
        let edit = Edit {
            drops_added: vec![d.clone()],
            last_seqno: Some(seqno),
            ..Default::default()
        };
        self.bb.apply(edit, |v| {
            let mut nv = v.clone();
            let mut drops = (*v.drops).clone();
            drops.push(d);
            nv.drops = Arc::new(drops);
            nv
        })?;
        self.next_seqno = seqno + 1;
        self.bb.publish(seqno);
        Ok(())
    }
}

/// The L0 table count from which write groups are delayed (within the configured triggers).
fn slowdown_l0(cfg: &crate::engine::EngineConfig) -> usize {
    cfg.l0_slowdown_trigger
        .clamp(cfg.l0_compaction_trigger, cfg.l0_stop_trigger)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: u32) -> WriteResult {
        Ok(vec![Box::new(v) as AnyBox])
    }

    fn value(r: &WriteResult) -> Option<u32> {
        r.as_ref()
            .ok()
            .map(|v| *v[0].downcast_ref::<u32>().unwrap())
    }

    #[test]
    fn gather_answers_once_all_parts_are_in_in_part_order() {
        let (tx, mut rx) = oneshot::channel();
        let g = Gather::new(3, tx, None);
        WriteReply::Part(g.clone(), 2).send(ok(20));
        WriteReply::Part(g.clone(), 0).send(ok(0));
        assert!(rx.try_recv().is_err(), "answered before the last part");
        WriteReply::Part(g.clone(), 1).send(Err(Error::Closed));
        let all = rx.try_recv().expect("answered");
        assert_eq!(value(&all[0]), Some(0));
        assert!(matches!(all[1], Err(Error::Closed)));
        assert_eq!(value(&all[2]), Some(20));
        drop(g);
    }

    #[test]
    fn gather_dropped_with_parts_unanswered_keeps_the_answered_ones() {
        let (tx, mut rx) = oneshot::channel();
        let g = Gather::new(3, tx, None);
        WriteReply::Part(g.clone(), 1).send(ok(1));
        // Parts 0 and 2 are dropped unanswered (as a panicking leader would drop them).
        drop(WriteReply::Part(g.clone(), 0));
        drop(g);
        let all = rx.try_recv().expect("answered on drop");
        assert!(matches!(all[0], Err(Error::Poisoned(_))));
        assert_eq!(value(&all[1]), Some(1));
        assert!(matches!(all[2], Err(Error::Poisoned(_))));
    }
}
