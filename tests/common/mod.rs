//! Helpers shared by the engine scenario tests.
#![allow(dead_code)]

pub mod groups;

use std::sync::Arc;

use bytes::Bytes;
use sndv_kv::engine::{Engine, EngineConfig, FsyncPolicy, Op, View};

/// A configuration with tiny memtables and tables so that flushes and compactions happen often.
pub fn tiny_config(fsync: FsyncPolicy) -> EngineConfig {
    EngineConfig {
        memtable_bytes: 4 << 10,
        max_immutables: 2,
        fsync,
        block_size: 512,
        table_target_bytes: 8 << 10,
        l0_compaction_trigger: 3,
        l0_stop_trigger: 12,
        ..EngineConfig::default()
    }
}

pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op<()> {
    let (k, v) = (key.into(), value.into());
    Box::new(move |view: &mut View<'_>| view.put(k, v, None))
}

pub fn put_ttl(key: impl Into<Bytes>, value: impl Into<Bytes>, expire_at: u64) -> Op<()> {
    let (k, v) = (key.into(), value.into());
    Box::new(move |view: &mut View<'_>| view.put(k, v, Some(expire_at)))
}

pub fn del(key: impl Into<Bytes>) -> Op<()> {
    let k = key.into();
    Box::new(move |view: &mut View<'_>| view.delete(k))
}

/// INCR as the server does it: a missing or expired key starts from 0.
pub fn incr(key: impl Into<Bytes>) -> Op<i64> {
    let k = key.into();
    Box::new(move |view: &mut View<'_>| {
        let cur = view
            .get(&k)
            .expect("read in view")
            .and_then(|v| std::str::from_utf8(&v.data).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        view.put(k, Bytes::from((cur + 1).to_string()), None);
        cur + 1
    })
}

pub fn get_str(e: &Engine, key: &str) -> Option<String> {
    e.get(key.as_bytes())
        .expect("get")
        .map(|v| String::from_utf8_lossy(&v.data).into_owned())
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
