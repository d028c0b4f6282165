//! Event-loop threads for client connections.
//!
//! Each IO thread runs a single-threaded tokio runtime; a connection is handed to one of them
//! when accepted and lives there until it closes. A connection's task then never moves between
//! threads, and a thread that finds its socket ready runs the command itself instead of waking
//! another worker to steal it: on loopback benchmarks tokio's work-stealing runtime spent a
//! large share of its time in wake-ups and context switches between its two workers. A loop
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

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch, Notify};

use super::resp::Reply;
use crate::engine::{self, Engine, Op};

/// Blocking-pool threads per IO thread.
const BLOCKING_THREADS: usize = 4;

pub struct IoPool {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    next: AtomicUsize,
}

impl IoPool {
    /// Starts `n` (at least 1) event-loop threads.
    pub fn start(n: usize) -> std::io::Result<IoPool> {
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            // Blocking work from a loop is short (leading a write group past a sync, a
            // FLUSHDB, a checkpoint): a few threads, queued beyond that, instead of tokio's
            // default of up to 512 per runtime (each thread costs memory, see RELIABILITY.md).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(BLOCKING_THREADS)
                .build()?;
            handles.push(rt.handle().clone());
            let writes = Arc::new(LoopWrites::default());
            rt.spawn(commit_loop(writes.clone()));
            let mut rx = stop.subscribe();
            let t = std::thread::Builder::new()
                .name(format!("sndv-io-{i}"))
                .spawn(move || {
                    LOOP_WRITES.with(|w| *w.borrow_mut() = Some(writes));
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
        Ok(IoPool {
            handles,
            threads,
            stop,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread for the next connection (round robin).
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
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
        match engine.write_many_async(groups).await {
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
