//! The agents: each observes the blackboard and acts on its own thread.

pub mod compaction;
pub mod flush;
pub mod ingest;

use std::sync::Arc;

use super::blackboard::Blackboard;

/// Runs an agent's loop at niceness `nice` (0: the process' own); a panic poisons the engine
/// instead of vanishing silently.
pub(crate) fn spawn(
    name: &'static str,
    bb: Arc<Blackboard>,
    nice: i32,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sndv-{name}"))
        .spawn(move || {
            if nice > 0 {
                lower_priority(nice);
            }
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                bb.poison(format!("{name} agent panicked: {msg}"));
            }
        })
}

/// Raises the calling thread's niceness by `nice` (on Linux a thread id names one thread).
/// Best effort: a refusal only leaves the thread at normal priority.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (cur + nice).min(19)) != 0 {
            tracing::warn!(
                "could not lower background thread priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
