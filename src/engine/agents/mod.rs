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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use crate::engine::{Engine, EngineConfig};

    /// (thread name, niceness) of this process' threads.
    fn threads() -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for t in std::fs::read_dir("/proc/self/task").unwrap() {
            let p = t.unwrap().path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(p.join("comm")),
                std::fs::read_to_string(p.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            // Fields after the parenthesised name: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let nice = rest.split(' ').nth(16).unwrap().parse().unwrap();
            out.push((comm.trim().to_string(), nice));
        }
        out
    }

    #[test]
    fn background_threads_run_at_the_niceness_asked() {
        let dir = tempfile::tempdir().unwrap();
        let base = threads()[0].1;
        let cfg = EngineConfig {
            background_nice: 3,
            ..EngineConfig::default()
        };
        let engine = Engine::open(dir.path(), cfg).unwrap();
        // Other tests' engines run at the base niceness; a thread at base + 3 can only be
        // ours. A new thread lowers its own priority first thing: poll until it has.
        let want = (base + 3).min(19);
        let seen = |name: &str| threads().iter().any(|(n, v)| n == name && *v == want);
        for _ in 0..10_000 {
            if seen("sndv-flush") && seen("sndv-compaction") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(seen("sndv-flush"), "{:?}", threads());
        assert!(seen("sndv-compaction"), "{:?}", threads());
        if base + 3 <= 19 {
            assert!(
                !seen("sndv-ingest"),
                "the ingest timer keeps the base priority"
            );
        }
        drop(engine);
    }
}
