//! Event-loop threads for client connections.
//!
//! Each IO thread runs a single-threaded tokio runtime; a connection is handed to one of them
//! when accepted and stays there until it closes or is told to move (below). A thread that
//! finds its socket ready runs the command itself instead of waking another worker to steal
//! it: on loopback benchmarks tokio's work-stealing runtime spent a large share of its time in
//! wake-ups and context switches between its two workers.
//!
//! Not every loop is used at once: [`tune`] keeps connections on one loop while it keeps up
//! and spreads them over more only while that measurably serves more commands (`adapt.rs`
//! has the rules and the numbers behind them; `io_loops` fixes the count instead). A
//! connection moves between two requests, with nothing buffered: its socket is taken off one
//! loop's reactor and registered with the other's, and its state goes with it. A loop
//! commits a short write group itself, fsync included (as Redis syncs its AOF on its loop);
//! a long group with an fsync, or one that may stall behind flush or compaction, goes to the
//! blocking pool (see `Engine::lead_async`), so the loop keeps serving its other clients.
//!
//! Writes are committed once per pass of the loop, as Redis syncs its AOF once per pass: a
//! connection hands its write group to the loop's [`LoopWrites`] and waits; the loop's
//! committer task lets every other connection with input ready run first, then sends all
//! their groups to the engine as one batch and is woken once when the batch is durable
//! (instead of one wake-up, one system call, per connection). Each connection's group stays
//! atomic on its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};

use super::adapt::{LoopTuner, Tick};
use super::resp::Reply;
use crate::engine::{self, Engine, Op};

/// Blocking-pool threads per IO thread.
const BLOCKING_THREADS: usize = 4;

pub struct IoPool {
    loops: Arc<Loops>,
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// The event loops and which connection should be on which. New connections go to loops
/// `0..active`; a connection whose loop is told otherwise moves after its current request.
pub struct Loops {
    loops: Vec<(Handle, Arc<IdleMeter>)>,
    active: AtomicUsize,
    next: AtomicUsize,
    /// Each open connection's wanted loop, by seat number.
    seats: Mutex<HashMap<u64, Arc<AtomicUsize>>>,
    next_seat: AtomicU64,
    /// Connections that moved to another loop.
    moves: AtomicU64,
}

/// How long one loop waited for input: parked with no write batch of its own in flight
/// (waiting for a batch to commit is work, not idleness).
struct IdleMeter {
    epoch: Instant,
    /// Nanoseconds idle up to the last wake-up.
    idle_ns: AtomicU64,
    /// When the current idle park began (nanoseconds after `epoch`, plus one); 0: not idle.
    since: AtomicU64,
}

impl IdleMeter {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn park(&self, writes: &LoopWrites) {
        if !writes.in_flight.load(Ordering::Relaxed) {
            self.since.store(self.now(), Ordering::Relaxed);
        }
    }

    fn unpark(&self) {
        let since = self.since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let d = self.now().saturating_sub(since);
            self.idle_ns.fetch_add(d, Ordering::Relaxed);
        }
    }

    /// Nanoseconds idle so far, the current park included.
    fn idle(&self) -> u64 {
        let since = self.since.load(Ordering::Relaxed);
        let cur = if since != 0 {
            self.now().saturating_sub(since)
        } else {
            0
        };
        self.idle_ns.load(Ordering::Relaxed) + cur
    }
}

impl IoPool {
    /// Starts `n` (at least 1) event-loop threads, of which the first `active` take
    /// connections.
    pub fn start(n: usize, active: usize) -> std::io::Result<IoPool> {
        let n = n.max(1);
        let (stop, _) = watch::channel(false);
        let epoch = Instant::now();
        let mut loops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let writes = Arc::new(LoopWrites::default());
            let meter = Arc::new(IdleMeter {
                epoch,
                idle_ns: AtomicU64::new(0),
                since: AtomicU64::new(0),
            });
            let (w, m, m2) = (writes.clone(), meter.clone(), meter.clone());
            // Blocking work from a loop is short (leading a write group past a sync, a
            // FLUSHDB, a checkpoint): a few threads, queued beyond that, instead of tokio's
            // default of up to 512 per runtime (each thread costs memory, see RELIABILITY.md).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(BLOCKING_THREADS)
                .on_thread_park(move || m.park(&w))
                .on_thread_unpark(move || m2.unpark())
                .build()?;
            loops.push((rt.handle().clone(), meter));
            rt.spawn(commit_loop(writes.clone()));
            let mut rx = stop.subscribe();
            let t = std::thread::Builder::new()
                .name(format!("sndv-io-{i}"))
                .spawn(move || {
                    LOOP_WRITES.with(|w| *w.borrow_mut() = Some(writes));
                    LOOP_INDEX.with(|x| x.set(i));
                    rt.block_on(async move {
                        // Runs the thread's connections until the pool stops.
                        while !*rx.borrow_and_update() {
                            if rx.changed().await.is_err() {
                                break;
                            }
                        }
                    });
                    // Dropping the runtime cancels whatever is left (connections have been
                    // told to stop and waited for by then).
                })?;
            threads.push(t);
        }
        let loops = Arc::new(Loops {
            loops,
            active: AtomicUsize::new(active.clamp(1, n)),
            next: AtomicUsize::new(0),
            seats: Mutex::new(HashMap::new()),
            next_seat: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        });
        Ok(IoPool {
            loops,
            threads,
            stop,
        })
    }

    pub fn loops(&self) -> &Arc<Loops> {
        &self.loops
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

impl Loops {
    /// Event-loop threads.
    pub fn count(&self) -> usize {
        self.loops.len()
    }

    /// Loops that take connections now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Connections moved from one loop to another so far.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// A seat for a new connection on one of the active loops (round robin), and that loop.
    pub fn seat(self: &Arc<Self>) -> (Seat, &Handle) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.active().max(1);
        let want = Arc::new(AtomicUsize::new(i));
        let id = self.next_seat.fetch_add(1, Ordering::Relaxed);
        self.seats.lock().insert(id, want.clone());
        let seat = Seat {
            loops: self.clone(),
            id,
            want,
        };
        (seat, &self.loops[i].0)
    }

    /// Uses the first `n` loops (clamped to 1..=len) and spreads the connections over them
    /// evenly, moving as few as possible.
    pub fn set_active(&self, n: usize) {
        let k = n.clamp(1, self.count());
        let seats = self.seats.lock();
        self.active.store(k, Ordering::Relaxed);
        let quota = seats.len().div_ceil(k);
        let mut count = vec![0usize; k];
        let mut movers = Vec::new();
        for want in seats.values() {
            let w = want.load(Ordering::Relaxed);
            if w < k && count[w] < quota {
                count[w] += 1;
            } else {
                movers.push(want);
            }
        }
        for want in movers {
            let (i, _) = count
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| **c)
                .unwrap_or((0, &0));
            count[i] += 1;
            want.store(i, Ordering::Relaxed);
        }
    }

    /// Each loop's idle nanoseconds so far.
    fn idle(&self) -> Vec<u64> {
        self.loops.iter().map(|(_, m)| m.idle()).collect()
    }
}

/// A connection's place in the pool: which loop it should be on. Dropped with the
/// connection.
pub struct Seat {
    loops: Arc<Loops>,
    id: u64,
    want: Arc<AtomicUsize>,
}

impl Seat {
    /// The loop this connection should move to, if it is not on it.
    pub fn move_to(&self) -> Option<Handle> {
        let w = self.want.load(Ordering::Relaxed);
        if Some(w) == current_loop() {
            return None;
        }
        let (h, _) = self.loops.loops.get(w)?;
        self.loops.moves.fetch_add(1, Ordering::Relaxed);
        Some(h.clone())
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.loops.seats.lock().remove(&self.id);
    }
}

/// The IO thread this code runs on (its index), if it runs on one.
pub fn current_loop() -> Option<usize> {
    Some(LOOP_INDEX.with(Cell::get)).filter(|&i| i != usize::MAX)
}

/// Moves `sock` onto the loop behind `to` (off this reactor, registered with that one) and
/// runs `then` with it there. Fails only if the socket cannot leave this reactor; if the other
/// loop cannot register it, `then` is dropped (closing what it holds) and that is logged.
pub fn hand_over<F, Fut>(sock: tokio::net::TcpStream, to: &Handle, then: F) -> std::io::Result<()>
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sock = sock.into_std()?;
    to.spawn(async move {
        match tokio::net::TcpStream::from_std(sock) {
            Ok(sock) => then(sock).await,
            Err(e) => tracing::warn!("cannot register a connection on its IO thread: {e}"),
        }
    });
    Ok(())
}

/// How often the loop count is reconsidered.
pub const TUNE_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Adjusts the number of active loops to the load (see `adapt.rs`) until the server stops;
/// `fixed()` returns the operator's count (`io_loops`), if set, which then applies instead.
pub async fn tune(
    loops: Arc<Loops>,
    commands: impl Fn() -> u64,
    fixed: impl Fn() -> Option<usize>,
) {
    let mut tuner = LoopTuner::new(loops.count());
    let mut iv = tokio::time::interval(TUNE_PERIOD);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Instant::now(), commands(), loops.idle());
    loop {
        iv.tick().await;
        let now = (Instant::now(), commands(), loops.idle());
        let secs = now.0.duration_since(last.0).as_secs_f64();
        let active = loops.active();
        if let Some(n) = fixed() {
            if n != active {
                loops.set_active(n);
            }
            tuner = LoopTuner::new(loops.count());
            last = now;
            continue;
        }
        if tuner.active() != active {
            // The count was fixed until now: start over from what is in use.
            tuner = LoopTuner::starting_at(loops.count(), active);
        }
        let busy: f64 = (0..active)
            .map(|i| {
                let idle = now.2[i].saturating_sub(last.2[i]) as f64 / 1e9;
                (1.0 - idle / secs.max(1e-9)).clamp(0.0, 1.0)
            })
            .sum();
        let t = Tick {
            secs,
            cmds: now.1.saturating_sub(last.1),
            busy,
        };
        if let Some(n) = tuner.tick(t) {
            tracing::debug!("event loops: {active} -> {n} ({t:?})");
            loops.set_active(n);
        }
        last = now;
    }
}

type WriteReply = oneshot::Sender<engine::Result<Vec<Reply>>>;

/// The write groups that one event loop's connections are waiting on, not yet sent to the
/// engine.
#[derive(Default)]
pub struct LoopWrites {
    pending: Mutex<Pending>,
    /// Tells the committer that `pending` went from empty to not empty.
    ready: Notify,
    /// A batch is being committed.
    in_flight: AtomicBool,
}

/// One batch: each connection's group and where its replies go, in the same order.
#[derive(Default)]
struct Pending {
    engine: Option<Engine>,
    groups: Vec<Vec<Op<Reply>>>,
    replies: Vec<WriteReply>,
}

thread_local! {
    /// The current thread's loop, on IO threads.
    static LOOP_WRITES: RefCell<Option<Arc<LoopWrites>>> = const { RefCell::new(None) };
    /// The current IO thread's index; `usize::MAX` elsewhere.
    static LOOP_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Applies one connection's write group (atomically) and returns its replies once it is
/// durable per the fsync policy. On an IO thread the group joins the loop's next batch;
/// elsewhere it goes to the engine directly.
pub async fn write(engine: &Engine, ops: Vec<Op<Reply>>) -> engine::Result<Vec<Reply>> {
    let Some(w) = LOOP_WRITES.with(|w| w.borrow().clone()) else {
        return engine.write_async(ops).await;
    };
    let (tx, rx) = oneshot::channel();
    let first = {
        let mut p = w.pending.lock();
        p.engine.get_or_insert_with(|| engine.clone());
        p.groups.push(ops);
        p.replies.push(tx);
        p.groups.len() == 1
    };
    if first {
        // Same thread: a local wake-up, no system call.
        w.ready.notify_one();
    }
    rx.await.unwrap_or(Err(engine::Error::Closed))
}

/// The loop's committer: one batch in flight at a time; what arrives meanwhile is the next.
async fn commit_loop(w: Arc<LoopWrites>) {
    loop {
        w.ready.notified().await;
        // Runs after the loop has polled its sockets again and run every connection that had
        // input, so their writes join this batch.
        tokio::task::yield_now().await;
        let Pending {
            engine,
            groups,
            replies,
        } = std::mem::take(&mut *w.pending.lock());
        let Some(engine) = engine else {
            continue;
        };
        w.in_flight.store(true, Ordering::Relaxed);
        let res = engine.write_many_async(groups).await;
        w.in_flight.store(false, Ordering::Relaxed);
        match res {
            Ok(results) => {
                for (tx, r) in replies.into_iter().zip(results) {
                    let _ = tx.send(r);
                }
            }
            Err(e) => {
                for tx in replies {
                    let _ = tx.send(Err(e.copy()));
                }
            }
        }
    }
}
