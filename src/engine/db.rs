//! [`Engine`]: open (recovery), the read path, the write entry points and shutdown.

use std::any::Any;
use std::collections::BTreeSet;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Semaphore};

use super::agents::ingest::{ErasedOp, Gather, Ingest, Request, WriteReply};
use super::agents::{self, flush};
use super::blackboard::{AgentStatus, Blackboard};
use super::cache::BlockCache;
use super::clock::{Clock, SystemClock};
use super::compaction::{self, CompactionPolicy, LevelsView};
use super::error::{Error, IoContext, Result};
use super::iter::{MergeIter, NewestIter};
use super::manifest::{self, ManifestState, ManifestWriter, MANIFEST_FILE};
use super::memtable::Memtable;
use super::storage::{FsStorage, Storage};
use super::types::SeqNo;
use super::version::{TableHandle, Version, NUM_LEVELS};
use super::wal::{self, WalWriter};
use super::{AgentStats, EngineConfig, EngineStats, LevelStats, Op, Value};

/// A handle to an open engine; clones share it. `close()` (or dropping the last handle) stops
/// the agents.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    bb: Arc<Blackboard>,
    ingest: Arc<Ingest>,
    permits: Arc<Semaphore>,
    permit_total: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: File,
}

/// Holds the data directory's LOCK file with an exclusive flock.
fn lock_dir(db: &Path) -> Result<File> {
    use std::os::unix::io::AsRawFd;
    let path = db.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(Error::Locked(db.to_path_buf()));
    }
    Ok(f)
}

/// `NNNNNN.ext` → NNNNNN
fn file_number(name: &str, ext: &str) -> Option<u64> {
    name.strip_suffix(ext)?.parse().ok()
}

impl Engine {
    /// Opens (recovering if needed) the engine whose files live in `<dir>/db/`.
    pub fn open(dir: impl AsRef<Path>, cfg: EngineConfig) -> Result<Engine> {
        Self::open_with(dir, cfg, Arc::new(FsStorage), Arc::new(SystemClock))
    }

    pub fn open_with(
        dir: impl AsRef<Path>,
        cfg: EngineConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine> {
        cfg.validate()?;
        let db = dir.as_ref().join("db");
        storage
            .create_dir_all(&db)
            .ctx(|| format!("creating {}", db.display()))?;
        let lock = lock_dir(&db)?;
        let names = storage
            .list(&db)
            .ctx(|| format!("listing {}", db.display()))?;
        let mpath = db.join(MANIFEST_FILE);
        let mut state = if names.iter().any(|n| n == MANIFEST_FILE) {
            manifest::recover(storage.as_ref(), &mpath)?
        } else {
            ManifestState {
                next_file: 1,
                ..Default::default()
            }
        };

        let cache =
            (cfg.block_cache_bytes > 0).then(|| Arc::new(BlockCache::new(cfg.block_cache_bytes)));

        // Tables the MANIFEST lists.
        let mut max_file = state.next_file;
        let mut last_seqno = state.last_seqno;
        let mut levels: Vec<Vec<Arc<TableHandle>>> = vec![Vec::new(); NUM_LEVELS];
        for meta in state.tables.values() {
            let path = db.join(format!("{:06}.sst", meta.id));
            let table = super::sstable::Table::open_cached(
                storage.as_ref(),
                &path,
                meta.id,
                cache.clone(),
            )?;
            last_seqno = last_seqno.max(table.props().max_seqno);
            max_file = max_file.max(meta.id + 1);
            let level = (meta.level as usize).min(NUM_LEVELS - 1);
            levels[level].push(Arc::new(TableHandle::new(
                meta.clone(),
                Arc::new(table),
                storage.clone(),
                path,
            )));
        }
        levels[0].sort_by_key(|t| std::cmp::Reverse(t.meta.max_seqno));
        for l in &mut levels[1..] {
            l.sort_by(|a, b| a.meta.smallest.cmp(&b.meta.smallest));
        }

        // WAL segments newer than the MANIFEST's log number, oldest first.
        let segs: BTreeSet<u64> = names
            .iter()
            .filter_map(|n| file_number(n, ".log"))
            .filter(|&n| n >= state.log_number)
            .collect();
        // Sized for every segment being a full memtable (the index only speeds lookups up).
        let recovered = Arc::new(Memtable::with_budget(
            None,
            cfg.memtable_bytes.saturating_mul(segs.len().max(1)),
        ));
        let last_seg = segs.iter().next_back().copied();
        for &n in &segs {
            let path = db.join(format!("{n:06}.log"));
            let out = wal::replay(storage.as_ref(), &path, Some(n) == last_seg, |group| {
                for e in group {
                    recovered.insert(e);
                }
            })?;
            if out.torn_bytes > 0 {
                tracing::warn!(file = %path.display(), bytes = out.torn_bytes, "dropped torn WAL tail");
            }
            if out.unused_bytes > 0 {
                tracing::debug!(file = %path.display(), bytes = out.unused_bytes, "dropped unused WAL space");
            }
            last_seqno = last_seqno.max(out.max_seqno);
            recovered.add_wal_number(n);
            max_file = max_file.max(n + 1);
        }
        for n in &names {
            if let Some(x) = file_number(n, ".sst").or_else(|| file_number(n, ".log")) {
                max_file = max_file.max(x + 1);
            }
        }

        // A fresh segment for new writes; then the MANIFEST rewritten to say which segments
        // still matter; only then are orphans removed.
        let wal_n = max_file;
        let next_file = wal_n + 1;
        let wal = WalWriter::create(storage.as_ref(), &db.join(format!("{wal_n:06}.log")))?
            .preallocating(cfg.wal_prealloc_chunk());
        storage
            .sync_dir(&db)
            .ctx(|| format!("syncing directory {}", db.display()))?;
        state.next_file = next_file;
        state.last_seqno = last_seqno;
        let keep_recovered = !recovered.is_empty();
        state.log_number = if keep_recovered {
            segs.iter().next().copied().unwrap_or(wal_n)
        } else {
            wal_n
        };
        let writer = ManifestWriter::rewrite(storage.as_ref(), &db, &state)?;
        for n in &names {
            let orphan = match (file_number(n, ".sst"), file_number(n, ".log")) {
                (Some(id), _) => !state.tables.contains_key(&id),
                (_, Some(w)) => w < state.log_number,
                _ => n.ends_with(".tmp"),
            };
            if orphan {
                let p = db.join(n);
                if let Err(e) = storage.remove(&p) {
                    tracing::warn!(file = %p.display(), error = %e, "could not remove orphan file");
                }
            }
        }

        let mut version = Version::new(Arc::new(Memtable::with_budget(
            Some(wal_n),
            cfg.memtable_bytes,
        )));
        version.levels = levels;
        version.drops = Arc::new(state.drops.clone());
        if keep_recovered {
            version.imms.push(recovered);
        }
        let agents_status = vec![
            Arc::new(AgentStatus::new("ingest", "group-commit")),
            Arc::new(AgentStatus::new("flush", "oldest-first")),
            Arc::new(AgentStatus::new("compaction", &cfg.compaction_policy)),
        ];
        let bb = Arc::new(
            Blackboard::new(
                db,
                storage,
                clock,
                cfg.clone(),
                version,
                writer,
                state,
                last_seqno,
                next_file,
                agents_status,
            )
            .with_cache(cache),
        );

        let ingest = Arc::new(Ingest::new(bb.clone(), wal));
        let spawn_err = |e| Error::io("starting agent threads", e);
        let timer = ingest.clone();
        let nice = cfg.background_nice;
        let threads = vec![
            agents::spawn("ingest", bb.clone(), 0, move || timer.run_timer()).map_err(spawn_err)?,
            {
                let b = bb.clone();
                agents::spawn("flush", bb.clone(), nice, move || flush::run(b))
                    .map_err(spawn_err)?
            },
            {
                let b = bb.clone();
                agents::spawn("compaction", bb.clone(), nice, move || {
                    agents::compaction::run(b)
                })
                .map_err(spawn_err)?
            },
        ];
        let permit_total = (cfg.write_queue_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Ok(Engine {
            inner: Arc::new(Inner {
                bb,
                ingest,
                permits: Arc::new(Semaphore::new(permit_total)),
                permit_total,
                threads: Mutex::new(threads),
                _lock: lock,
            }),
        })
    }

    fn bb(&self) -> &Blackboard {
        &self.inner.bb
    }

    /// The live (present, unexpired) value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.get_at(key, self.bb().clock.now_ms())
    }

    /// [`Engine::get`] with expiry judged at `now_ms` (a caller that already read the clock).
    pub fn get_at(&self, key: &[u8], now_ms: u64) -> Result<Option<Value>> {
        let (snap, v) = self.bb().snapshot();
        Ok(v.lookup(key, snap)?
            .filter(|e| e.is_live(now_ms) && !v.is_dropped_at(key, e.seqno))
            .map(Value::from_found))
    }

    /// Seqno of the newest version of `key` (put, delete, or a prefix drop covering it); 0 if
    /// none. WATCH compares it before and after.
    pub fn key_version(&self, key: &[u8]) -> Result<SeqNo> {
        let (snap, v) = self.bb().snapshot();
        let s = v.lookup(key, snap)?.map_or(0, |e| e.seqno);
        Ok(s.max(v.drop_seqno(key).unwrap_or(0)))
    }

    /// Queues a request and leads until it is answered (blocking the calling thread).
    fn submit_and_drive(&self, req: Request) -> Result<()> {
        self.inner.ingest.submit(req)?;
        self.inner.ingest.drive();
        Ok(())
    }

    fn stopped(&self) -> Error {
        match self.bb().poisoned() {
            Some(why) => Error::Poisoned(why),
            None => Error::Closed,
        }
    }

    /// Applies a group of operations atomically; returns their results once the group is
    /// durable per the fsync policy. Blocks the calling thread.
    pub fn write<T: Send + 'static>(&self, ops: Vec<Op<T>>) -> Result<Vec<T>> {
        self.bb().check_poison()?;
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.submit_and_drive(Request::Write {
            ops: erase(ops),
            reply: WriteReply::One(reply),
            permit: None,
        })?;
        unbox(futures::executor::block_on(rx).map_err(|_| self.stopped())??)
    }

    /// The async form of [`Engine::write`]; waits (without blocking a thread) for queue room.
    pub async fn write_async<T: Send + 'static>(&self, ops: Vec<Op<T>>) -> Result<Vec<T>> {
        self.bb().check_poison()?;
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let n = ops.len();
        let permit = self.write_permits(n).await?;
        let (reply, rx) = oneshot::channel();
        self.inner.ingest.submit(Request::Write {
            ops: erase(ops),
            reply: WriteReply::One(reply),
            permit: Some(permit),
        })?;
        self.lead_async(n);
        unbox(rx.await.map_err(|_| self.stopped())??)
    }

    /// Several independent write requests, each applied atomically as by
    /// [`Engine::write_async`], queued together and answered together: the caller is woken
    /// once for all of them. An event loop uses it to commit the writes of every connection
    /// that was ready in one pass (as Redis syncs its AOF once per pass). The outer error
    /// means nothing was queued; each request has its own result otherwise.
    pub async fn write_many_async<T: Send + 'static>(
        &self,
        writes: Vec<Vec<Op<T>>>,
    ) -> Result<Vec<Result<Vec<T>>>> {
        self.bb().check_poison()?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let total: usize = writes.iter().map(Vec::len).sum();
        let permit = self.write_permits(total).await?;
        let (reply, rx) = oneshot::channel();
        let gather = Gather::new(writes.len(), reply, Some(permit));
        self.inner
            .ingest
            .submit_all(
                writes
                    .into_iter()
                    .enumerate()
                    .map(|(i, ops)| Request::Write {
                        ops: erase(ops),
                        reply: WriteReply::Part(gather.clone(), i),
                        permit: None,
                    }),
            )?;
        drop(gather);
        self.lead_async(total);
        let results = rx.await.map_err(|_| self.stopped())?;
        Ok(results.into_iter().map(|r| r.and_then(unbox)).collect())
    }

    /// Backpressure: waits (without blocking a thread) for queue room for `ops` operations
    /// (at least one permit, at most all of them).
    async fn write_permits(&self, ops: usize) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let want = (ops.max(1) as u32).min(self.inner.permit_total as u32);
        self.inner
            .permits
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| self.stopped())
    }

    /// Makes sure a leader commits what this async writer queued (`ops` operations). On a
    /// multi-thread runtime a leader that may block (fsync, stall) first hands its worker's
    /// other tasks to the runtime with `block_in_place`. A single-threaded event loop leads a
    /// short group itself, fsync included, as Redis syncs its AOF on its event loop: handing
    /// it to the blocking pool cost two thread wake-ups per group (safe SET at pipeline 1:
    /// 0.7 context switches per SET against 0.2 inline, 46–50K against 60–66K SET/s). A long
    /// group with an fsync goes to the blocking pool, so that the loop parses the next
    /// requests meanwhile (inline cost 4–9% at pipeline 16), and so does one that may stall
    /// behind flush or compaction, so that the loop keeps serving its other clients.
    fn lead_async(&self, ops: usize) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        /// Longest group an event loop commits and syncs itself.
        const INLINE_SYNC_OPS: usize = 64;
        let ingest = &self.inner.ingest;
        let hand_off = || {
            (ops > INLINE_SYNC_OPS && self.bb().cfg.fsync == super::FsyncPolicy::Always)
                || ingest.may_stall()
        };
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => ingest.try_drive(true),
            Ok(_) if hand_off() => {
                // Only when no one leads: one blocking-pool task per group, not per writer
                // (the pool would otherwise start a thread for every writer waiting).
                if !ingest.is_leading() {
                    let engine = self.clone();
                    drop(tokio::task::spawn_blocking(move || {
                        engine.inner.ingest.try_drive(false)
                    }));
                }
            }
            // Wait for a current leader rather than park this task and be woken from
            // another thread when it is done.
            _ => ingest.drive(),
        }
    }

    /// Live keys in `[start, end)` key order, at most `limit`, from one snapshot.
    pub fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Value)>> {
        let (snap, v) = self.bb().snapshot();
        let now = self.bb().clock.now_ms();
        let mut out = Vec::new();
        for r in NewestIter::new(MergeIter::new(v.sources(start)), snap) {
            if out.len() >= limit {
                break;
            }
            let e = r?;
            let past_end = match end {
                Bound::Unbounded => false,
                Bound::Included(k) => e.key.as_ref() > k,
                Bound::Excluded(k) => e.key.as_ref() >= k,
            };
            if past_end {
                break;
            }
            if e.is_live(now) && !v.is_dropped(&e) {
                let (key, found) = e.into_parts();
                out.push((key, Value::from_found(found)));
            }
        }
        Ok(out)
    }

    /// Live keys starting with `prefix`, in order, at most `limit`.
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Bytes, Value)>> {
        match prefix_end(prefix) {
            Some(end) => self.scan(Bound::Included(prefix), Bound::Excluded(&end), limit),
            None => self.scan(Bound::Included(prefix), Bound::Unbounded, limit),
        }
    }

    /// Drops every key under `prefix` at once (FLUSHDB); compaction reclaims the space.
    pub fn drop_prefix(&self, prefix: &[u8]) -> Result<()> {
        self.bb().check_poison()?;
        let (reply, rx) = oneshot::channel();
        self.submit_and_drive(Request::DropPrefix {
            prefix: Bytes::copy_from_slice(prefix),
            reply,
        })?;
        futures::executor::block_on(rx).map_err(|_| self.stopped())?
    }

    pub fn now_ms(&self) -> u64 {
        self.bb().clock.now_ms()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.bb().clock.clone()
    }

    /// Freezes the memtable and waits until every immutable memtable is in a table.
    pub fn flush(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.submit_and_drive(Request::Freeze { reply })?;
        futures::executor::block_on(rx).map_err(|_| self.stopped())??;
        loop {
            let ep = self.bb().epoch();
            if self.bb().current().imms.is_empty() {
                return Ok(());
            }
            self.bb().check_poison()?;
            if self.bb().is_shutdown() {
                return Err(Error::Closed);
            }
            if let Some(why) = self.bb().flush_error.lock().clone() {
                return Err(Error::Invalid(format!("flush failed: {why}")));
            }
            self.bb()
                .wait_change(ep, Some(std::time::Duration::from_millis(500)));
        }
    }

    /// Flushes, then hard-links the live tables and writes a MANIFEST listing them into
    /// `dest/db`, so `dest` opens as a data directory.
    pub fn checkpoint(&self, dest: &Path) -> Result<()> {
        self.flush()?;
        let bb = self.bb();
        let ddb = dest.join("db");
        bb.storage
            .create_dir_all(&ddb)
            .ctx(|| format!("creating {}", ddb.display()))?;
        let mut state = bb.manifest_state();
        // The checkpoint has no WAL: everything it holds is in its tables.
        state.log_number = state.next_file;
        for id in state.tables.keys() {
            let name = format!("{id:06}.sst");
            bb.storage
                .hard_link(&bb.dir.join(&name), &ddb.join(&name))
                .ctx(|| format!("linking {name} into {}", ddb.display()))?;
        }
        ManifestWriter::rewrite(bb.storage.as_ref(), &ddb, &state)?;
        Ok(())
    }

    /// Swaps the compaction policy at run time: "leveled" or "tiered". A task in flight
    /// finishes under the old policy; the swap is counted in `policy_swaps`.
    pub fn set_compaction_policy(&self, name: &str) -> Result<()> {
        let p = compaction::policy_by_name(name)?;
        self.bb().set_policy(p);
        Ok(())
    }

    /// Installs any policy object (tests and experiments).
    pub fn set_policy_object(&self, policy: Arc<dyn CompactionPolicy>) {
        self.bb().set_policy(policy);
    }

    /// What every live table holds (level, key range, size, entries, tombstones, expiry
    /// range), as the compaction policy sees it.
    pub fn levels_view(&self) -> LevelsView {
        LevelsView::from_version(&self.bb().current())
    }

    /// Name of the compaction policy in charge.
    pub fn compaction_policy(&self) -> String {
        self.bb().policy().name().to_string()
    }

    /// Waits until the compaction agent has looked at the current state and found nothing
    /// more to do. Compactions go on in the background regardless; this is for tests and tools.
    pub fn wait_for_compactions(&self) -> Result<()> {
        self.bb().wait_compaction_idle()
    }

    pub fn stats(&self) -> EngineStats {
        let bb = self.bb();
        let v = bb.current();
        let c = &bb.counters;
        let view = LevelsView::from_version(&v);
        let policy = bb.policy();
        let ps = bb.policy_stats();
        let scores = policy.scores(&view, &ps);
        let user_bytes = c.user_bytes.load(Relaxed);
        let written = c.wal_bytes.load(Relaxed) + c.table_bytes_written.load(Relaxed);
        let cache = bb.cache.as_deref();
        EngineStats {
            level_stats: view
                .levels
                .iter()
                .enumerate()
                .map(|(i, l)| LevelStats {
                    files: l.len(),
                    bytes: l.iter().map(|t| t.size).sum(),
                    score: scores.get(i).copied().unwrap_or(0.0),
                })
                .collect(),
            compaction_policy: policy.name().to_string(),
            policy_swaps: c.policy_swaps.load(Relaxed),
            tasks_cancelled: c.tasks_cancelled.load(Relaxed),
            tasks_rejected: c.tasks_rejected.load(Relaxed),
            trivial_moves: c.trivial_moves.load(Relaxed),
            floor_compactions: c.floor_compactions.load(Relaxed),
            idle_compactions: c.idle_compactions.load(Relaxed),
            warmed_blocks: c.warmed_blocks.load(Relaxed),
            reclaim_compactions: c.reclaim_compactions.load(Relaxed),
            compaction_failures: c.compaction_failures.load(Relaxed),
            pending_compaction_bytes: policy.pending_bytes(&view, &ps),
            slowdowns: c.slowdowns.load(Relaxed),
            cache_hits: cache.map_or(0, |c| c.hits()),
            cache_misses: cache.map_or(0, |c| c.misses()),
            cache_bytes: cache.map_or(0, |c| c.bytes()),
            cache_capacity: cache.map_or(0, |c| c.capacity()),
            write_amplification: if user_bytes == 0 {
                0.0
            } else {
                written as f64 / user_bytes as f64
            },
            visible_seqno: bb.visible(),
            memtable_bytes: v.mem.approx_bytes() as u64,
            immutables: v.imms.len(),
            levels: v
                .levels
                .iter()
                .map(|l| (l.len(), l.iter().map(|t| t.meta.size).sum()))
                .collect(),
            user_bytes: c.user_bytes.load(Relaxed),
            wal_bytes: c.wal_bytes.load(Relaxed),
            table_bytes_written: c.table_bytes_written.load(Relaxed),
            flushes: c.flushes.load(Relaxed),
            compactions: c.compactions.load(Relaxed),
            stalls: c.stalls.load(Relaxed),
            stall_ms_total: c.stall_us_total.load(Relaxed) / 1000,
            stall_ms_max: c.stall_us_max.load(Relaxed) / 1000,
            poisoned: bb.poisoned(),
            agents: bb
                .agents
                .iter()
                .map(|a| AgentStats {
                    name: a.name.to_string(),
                    state: a.state.lock().as_str().to_string(),
                    policy: a.policy.lock().clone(),
                    tasks: a.tasks.load(Relaxed),
                    bytes_read: a.bytes_read.load(Relaxed),
                    bytes_written: a.bytes_written.load(Relaxed),
                    busy_ms: a.busy_us.load(Relaxed) / 1000,
                })
                .collect(),
        }
    }

    /// Stops the agents (joining their threads) and syncs the WAL. Idempotent.
    pub fn close(&self) -> Result<()> {
        self.inner.shutdown();
        match self.bb().poisoned() {
            Some(why) => Err(Error::Poisoned(why)),
            None => Ok(()),
        }
    }

    /// The data directory's `db/` folder.
    pub fn db_dir(&self) -> PathBuf {
        self.bb().dir.clone()
    }
}

impl Inner {
    fn shutdown(&self) {
        self.bb.begin_shutdown();
        self.permits.close();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.ingest.close();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn erase<T: Send + 'static>(ops: Vec<Op<T>>) -> Vec<ErasedOp> {
    ops.into_iter()
        .map(|op| -> ErasedOp { Box::new(move |v| Box::new(op(v)) as Box<dyn Any + Send>) })
        .collect()
}

fn unbox<T: 'static>(results: Vec<Box<dyn Any + Send>>) -> Result<Vec<T>> {
    Ok(results
        .into_iter()
        .map(|b| match b.downcast::<T>() {
            Ok(t) => *t,
            // Each result was boxed from a T by `erase`.
            Err(_) => unreachable!("write result of another type"),
        })
        .collect())
}

/// The smallest key greater than every key starting with `prefix`; `None` if there is none.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
