//! The ingest agent: owns group commit. It drains queued write requests, evaluates every
//! operation over a [`View`] (current state + earlier operations of the same group), appends one
//! WAL record for the group, syncs per policy, applies the group to the memtable, publishes the
//! group's last seqno and only then acknowledges. It also freezes full memtables.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::engine::blackboard::{AgentState, AgentStatus, Blackboard};
use crate::engine::error::{Error, Result};
use crate::engine::manifest::{Drop, Edit};
use crate::engine::memtable::Memtable;
use crate::engine::types::{Entry, SeqNo};
use crate::engine::version::Version;
use crate::engine::wal::WalWriter;
use crate::engine::{FsyncPolicy, Value};

/// Delay of one write group above a slowdown trigger.
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);

pub(crate) type AnyBox = Box<dyn Any + Send>;
pub(crate) type ErasedOp = Box<dyn FnOnce(&mut View<'_>) -> AnyBox + Send>;
pub(crate) type WriteReply = oneshot::Sender<Result<Vec<AnyBox>>>;

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
    /// Index into `entries` of each key's newest pending version.
    pending: HashMap<Bytes, usize>,
    next_seqno: SeqNo,
    now: u64,
}

impl View<'_> {
    fn newest(&self, key: &[u8]) -> Result<Option<Entry>> {
        if let Some(&i) = self.pending.get(key) {
            return Ok(Some(self.entries[i].clone()));
        }
        // Everything applied so far is visible: the ingest agent is the only writer.
        let e = self.version.lookup(key, SeqNo::MAX)?;
        Ok(e.filter(|e| !self.version.is_dropped(e)))
    }

    /// The live (present, unexpired) value of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        Ok(self
            .newest(key)?
            .filter(|e| e.is_live(self.now))
            .map(Value::from_entry))
    }

    /// Seqno of the newest version of `key` (put, delete or prefix drop); 0 if none.
    pub fn key_version(&mut self, key: &[u8]) -> Result<SeqNo> {
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
        self.pending = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
    }

    fn push(&mut self, e: Entry) {
        self.next_seqno += 1;
        self.pending.insert(e.key.clone(), self.entries.len());
        self.entries.push(e);
    }
}

impl Value {
    pub(crate) fn from_entry(e: Entry) -> Value {
        Value {
            data: e.value,
            expire_at: (e.expire_at != 0).then_some(e.expire_at),
            seqno: e.seqno,
            type_tag: e.type_tag,
        }
    }
}

pub(crate) struct Ingest {
    bb: Arc<Blackboard>,
    rx: Receiver<Request>,
    wal: WalWriter,
    next_seqno: SeqNo,
    dirty: bool,
    last_sync: Instant,
    status: Arc<AgentStatus>,
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
    pub(crate) fn new(bb: Arc<Blackboard>, rx: Receiver<Request>, wal: WalWriter) -> Ingest {
        let next_seqno = bb.visible() + 1;
        let status = bb
            .agent("ingest")
            .cloned()
            .unwrap_or_else(|| Arc::new(AgentStatus::new("ingest", "group-commit")));
        Ingest {
            bb,
            rx,
            wal,
            next_seqno,
            dirty: false,
            last_sync: Instant::now(),
            status,
            pending_cache: None,
        }
    }

    pub(crate) fn run(mut self) {
        let mut held: Option<Request> = None;
        loop {
            let req = match held.take() {
                Some(r) => r,
                None => match self.recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            match req {
                Request::Write { ops, reply, permit } => {
                    held = self.group(ops, reply, permit);
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
        if self.dirty && self.bb.poisoned().is_none() {
            if let Err(e) = self.wal.sync() {
                tracing::error!(error = %e, "final WAL sync failed");
            }
        }
        self.status.set(AgentState::Stopped);
    }

    /// Next request; `None` once the engine shuts down. Runs the `everysec` timer meanwhile.
    fn recv(&mut self) -> Option<Request> {
        loop {
            if self.bb.is_shutdown() {
                return None;
            }
            let wait = if self.dirty && self.bb.cfg.fsync == FsyncPolicy::Everysec {
                Duration::from_secs(1).saturating_sub(self.last_sync.elapsed())
            } else {
                // Wake now and then to notice shutdown even if no sender is left to wake us.
                Duration::from_millis(200)
            };
            match self.rx.recv_timeout(wait) {
                Ok(r) => return Some(r),
                Err(RecvTimeoutError::Timeout) => self.timer_sync(),
                Err(RecvTimeoutError::Disconnected) => return None,
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

    /// Evaluates and commits one group starting with `ops`; returns a non-write request that
    /// ended the group, to be handled next.
    fn group(
        &mut self,
        ops: Vec<ErasedOp>,
        reply: WriteReply,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<Request> {
        if let Err(e) = self.bb.check_poison().and_then(|_| self.wait_for_room()) {
            let _ = reply.send(Err(e));
            return None;
        }
        self.status.set(AgentState::Working);
        let started = Instant::now();
        let version = self.bb.current();
        let mut entries = Vec::new();
        let mut view = View {
            version: &version,
            entries: &mut entries,
            pending: HashMap::new(),
            next_seqno: self.next_seqno,
            now: self.bb.clock.now_ms(),
        };
        let mut pending = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some((ops, reply, permit));
        let mut held = None;
        while let Some((ops, reply, permit)) = next.take() {
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
                    // A panicking operation fails its own request and leaves no trace; nothing
                    // was written yet, so the engine need not be poisoned.
                    view.rollback(mark);
                    let _ = reply.send(Err(Error::Invalid(
                        "write operation panicked; request discarded".into(),
                    )));
                }
            }
            if bytes >= self.bb.cfg.max_group_bytes {
                break;
            }
            match self.rx.try_recv() {
                Ok(Request::Write { ops, reply, permit }) => next = Some((ops, reply, permit)),
                Ok(other) => held = Some(other),
                Err(_) => {}
            }
        }
        let outcome = self.commit(entries);
        for p in pending {
            let r = match &outcome {
                Ok(()) => Ok(p.results),
                Err(e) => Err(clone_err(e)),
            };
            let _ = p.reply.send(r);
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
        held
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
                p
            }
        }
    }

    /// Writers wait here while immutables, L0 or pending compaction bytes are at their limit
    /// (counted as a stall), and are delayed a little above the slowdown triggers so that
    /// compaction can catch up before a hard stop.
    fn wait_for_room(&mut self) -> Result<()> {
        let cfg = self.bb.cfg.clone();
        let slow_l0 = cfg
            .l0_slowdown_trigger
            .clamp(cfg.l0_compaction_trigger, cfg.l0_stop_trigger);
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
        self.dirty = false;
        self.last_sync = Instant::now();
        let n = self.bb.new_file_number();
        let wal = WalWriter::create(self.bb.storage.as_ref(), &self.bb.wal_path(n))?;
        if let Err(e) = self.bb.storage.sync_dir(&self.bb.dir) {
            let why = format!("directory sync at WAL rotation failed: {e}");
            self.bb.poison(why.clone());
            return Err(Error::Poisoned(why));
        }
        self.wal = wal;
        let mem = Arc::new(Memtable::new(Some(n)));
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

/// Every request of a failed group gets the same error.
fn clone_err(e: &Error) -> Error {
    match e {
        Error::NoSpace { context } => Error::NoSpace {
            context: context.clone(),
        },
        Error::Poisoned(s) => Error::Poisoned(s.clone()),
        Error::Closed => Error::Closed,
        other => Error::Poisoned(other.to_string()),
    }
}
