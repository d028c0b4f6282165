//! sndv-kv: a Redis-protocol compatible key-value server on its own LSM-tree engine whose
//! background work is done by agents coordinating through a shared blackboard.
//!
//! Layout (see `docs/` and the README for more):
//! - [`engine`]: the storage engine, usable as a library without the server.
//!   - `storage.rs` the file-system trait (real, and `fault.rs` for tests),
//!   - `wal.rs` log segments, `memtable.rs`, `sstable/` tables, `manifest.rs` version edits,
//!   - `blackboard.rs` the shared state (current Version, visible seqno, signals, stats),
//!   - `agents/` one file per agent (ingest, flush, compaction).
//! - [`server`]: the Redis face (RESP over TCP, one file per command family).
//! - [`config`]: TOML configuration with defaults and validation.

pub mod config;
pub mod engine;
pub mod procfs;
pub mod server;
