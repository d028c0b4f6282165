//! The Redis face: listener, limits, graceful shutdown.

pub mod auth;
pub mod resp;

use crate::config::Config;

/// Runs the server until a signal or SHUTDOWN.
pub async fn run(cfg: Config, token: auth::Token) -> Result<(), String> {
    let _ = (cfg, token);
    Err("server not implemented yet".to_string())
}
