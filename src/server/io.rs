//! Event-loop threads for client connections.
//!
//! Each IO thread runs a single-threaded tokio runtime; a connection is handed to one of them
//! when accepted and lives there until it closes. A connection's task then never moves between
//! threads, and a thread that finds its socket ready runs the command itself instead of waking
//! another worker to steal it: on loopback benchmarks tokio's work-stealing runtime spent a
//! large share of its time in wake-ups and context switches between its two workers. Work that
//! may block (fsync, a write stall) leaves the loop for the blocking pool (see
//! `Engine::write_async`), so one slow write does not hold up the thread's other clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::watch;

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
            let mut rx = stop.subscribe();
            let t = std::thread::Builder::new()
                .name(format!("sndv-io-{i}"))
                .spawn(move || {
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
