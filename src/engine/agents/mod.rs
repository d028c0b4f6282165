//! The agents: each observes the blackboard and acts on its own thread.

pub mod compaction;
pub mod flush;
pub mod ingest;

use std::sync::Arc;

use super::blackboard::Blackboard;

/// Runs an agent's loop; a panic poisons the engine instead of vanishing silently.
pub(crate) fn spawn(
    name: &'static str,
    bb: Arc<Blackboard>,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sndv-{name}"))
        .spawn(move || {
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
