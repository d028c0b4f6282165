//! Public engine API (draft signatures; bodies land with the engine).
#![allow(unused_variables, dead_code)]

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::{Clock, Result, SeqNo, Storage};

/// When the WAL is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fdatasync before any acknowledgement.
    Always,
    /// a timer syncs once a second.
    Everysec,
    /// never synced by the engine (survives a process crash, not a power cut).
    Never,
}

/// Engine tuning. Every field has a safe default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub memtable_bytes: usize,
    pub max_immutables: usize,
    pub fsync: FsyncPolicy,
    pub block_size: usize,
    pub bloom_bits_per_key: u32,
    pub l0_compaction_trigger: usize,
    pub l0_stop_trigger: usize,
    pub table_target_bytes: u64,
    /// Upper bound of one group commit (bytes of queued operations drained at once).
    pub max_group_bytes: usize,
    /// Backpressure: bytes of operations queued for the ingest agent before writers wait.
    pub write_queue_bytes: usize,
    pub block_cache_bytes: usize,
}

/// A live value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub data: Bytes,
    /// Absolute expiry, unix ms.
    pub expire_at: Option<u64>,
    /// Seqno of this version.
    pub seqno: SeqNo,
    pub type_tag: u8,
}

/// One operation of a write group, evaluated by the ingest agent over a [`View`].
pub type Op<T> = Box<dyn FnOnce(&mut View<'_>) -> T + Send>;

/// The current state plus the earlier operations of the same group.
pub struct View<'a> {
    _p: std::marker::PhantomData<&'a ()>,
}

impl View<'_> {
    /// Live (present, unexpired at `now_ms`) value of `key`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        todo!()
    }
    /// Seqno of the newest version of `key` (put, delete or prefix drop); 0 if none. For WATCH.
    pub fn key_version(&mut self, key: &[u8]) -> Result<SeqNo> {
        todo!()
    }
    pub fn put(&mut self, key: Bytes, value: Bytes, expire_at: Option<u64>) {
        todo!()
    }
    pub fn delete(&mut self, key: Bytes) {
        todo!()
    }
    pub fn now_ms(&self) -> u64 {
        todo!()
    }
}

#[derive(Clone)]
pub struct Engine {}

impl Engine {
    pub fn open(dir: impl AsRef<Path>, cfg: EngineConfig) -> Result<Engine> {
        todo!()
    }
    pub fn open_with(
        dir: impl AsRef<Path>,
        cfg: EngineConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine> {
        todo!()
    }
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        todo!()
    }
    pub fn key_version(&self, key: &[u8]) -> Result<SeqNo> {
        todo!()
    }
    pub fn write<T: Send + 'static>(&self, ops: Vec<Op<T>>) -> Result<Vec<T>> {
        todo!()
    }
    pub async fn write_async<T: Send + 'static>(&self, ops: Vec<Op<T>>) -> Result<Vec<T>> {
        todo!()
    }
    /// Live keys in `[start, end)` order, at most `limit`, from one snapshot.
    pub fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Value)>> {
        todo!()
    }
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Bytes, Value)>> {
        todo!()
    }
    /// Drops every key under `prefix` at once (FLUSHDB); space is reclaimed later.
    pub fn drop_prefix(&self, prefix: &[u8]) -> Result<()> {
        todo!()
    }
    pub fn now_ms(&self) -> u64 {
        todo!()
    }
    /// Freezes the memtable and waits until every immutable memtable is in a table.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }
    /// Flushes, then hard-links the live tables and copies the MANIFEST into `dest/db`.
    pub fn checkpoint(&self, dest: &Path) -> Result<()> {
        todo!()
    }
    pub fn stats(&self) -> EngineStats {
        todo!()
    }
    pub fn close(&self) -> Result<()> {
        todo!()
    }
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub visible_seqno: SeqNo,
    pub memtable_bytes: u64,
    pub immutables: usize,
    /// Per level: (files, bytes).
    pub levels: Vec<(usize, u64)>,
    pub user_bytes: u64,
    pub wal_bytes: u64,
    pub table_bytes_written: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub stalls: u64,
    pub stall_ms_total: u64,
    pub stall_ms_max: u64,
    pub poisoned: Option<String>,
    pub agents: Vec<AgentStats>,
}

#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    pub name: String,
    /// idle / working / stalled / poisoned
    pub state: String,
    pub policy: String,
    pub tasks: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub busy_ms: u64,
}
