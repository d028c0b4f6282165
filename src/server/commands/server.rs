//! Server commands: INFO, CONFIG, COMMAND, FLUSHDB/FLUSHALL, SAVE/BGSAVE, TIME, SHUTDOWN,
//! and the keyspace iterators (DBSIZE, KEYS, SCAN, RANDOMKEY).

use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::REDIS_VERSION;
use super::{e_arity, e_int, e_subcommand, e_syntax, eq_ic, glob_match, parse_i64, COMMANDS};
use crate::config::Config;
use crate::engine::Engine;
use crate::server::connection::Conn;
use crate::server::resp::Reply;
use crate::server::unix_secs;

/// The memory allocator's own numbers, for `INFO memory` (Redis reports these from jemalloc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes allocated and not yet freed (Redis' `used_memory`).
    pub allocated: u64,
    /// Bytes in the allocator's active pages: `allocated` plus fragmentation inside them.
    pub active: u64,
    /// Bytes of physical memory the allocator holds, its metadata and not yet returned free
    /// pages included; `None` where the allocator does not say.
    pub resident: Option<u64>,
}

/// Where INFO gets [`AllocatorStats`]: the binary installs its global allocator's probe.
#[derive(Debug, Clone, Copy)]
pub struct AllocatorProbe {
    /// `mem_allocator` in INFO, e.g. `jemalloc-5.3.0`.
    pub name: &'static str,
    pub stats: fn() -> Option<AllocatorStats>,
}

static ALLOCATOR_PROBE: std::sync::OnceLock<AllocatorProbe> = std::sync::OnceLock::new();

/// Installs the allocator probe INFO reports from (once; false if one was already set).
/// Without one (library users, tests) INFO reports the system malloc (`mallinfo2` on glibc).
pub fn set_allocator_probe(p: AllocatorProbe) -> bool {
    ALLOCATOR_PROBE.set(p).is_ok()
}

/// (mem_allocator, stats) from the installed probe, or the system malloc's view.
fn allocator_stats() -> (&'static str, Option<AllocatorStats>) {
    if let Some(p) = ALLOCATOR_PROBE.get() {
        return (p.name, (p.stats)());
    }
    ("libc", libc_malloc_stats())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn libc_malloc_stats() -> Option<AllocatorStats> {
    // SAFETY: mallinfo2 only reads malloc's bookkeeping (taking each arena's lock).
    let mi = unsafe { libc::mallinfo2() };
    Some(AllocatorStats {
        // In-use chunks of every arena plus mmapped chunks.
        allocated: (mi.uordblks + mi.hblkhd) as u64,
        // Everything the arenas got from the system (free chunks included) plus mmapped chunks.
        active: (mi.arena + mi.hblkhd) as u64,
        resident: None,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn libc_malloc_stats() -> Option<AllocatorStats> {
    None
}

/// Keys read per engine scan call while iterating a whole database.
const SCAN_CHUNK: usize = 1024;

fn human(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", U[i])
}

/// End bound of database `db`'s key range.
fn db_end(db: u8) -> Bound<Vec<u8>> {
    if db == u8::MAX {
        Bound::Unbounded
    } else {
        Bound::Excluded(vec![db + 1])
    }
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Walks every live key of `db` (optionally only those starting with `prefix`), calling `f`
/// with the user key and expiry; stops early when `f` returns false.
fn walk_db(
    engine: &Engine,
    db: u8,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], Option<u64>) -> bool,
) -> crate::engine::Result<()> {
    let mut start: Vec<u8> = vec![db];
    start.extend_from_slice(prefix);
    let end = db_end(db);
    let mut lower = Bound::Included(start.clone());
    loop {
        let batch = engine.scan(as_ref_bound(&lower), as_ref_bound(&end), SCAN_CHUNK)?;
        let n = batch.len();
        for (k, v) in &batch {
            if !k.starts_with(&start) {
                return Ok(());
            }
            if !f(&k[1..], v.expire_at) {
                return Ok(());
            }
        }
        match batch.last() {
            Some((k, _)) if n == SCAN_CHUNK => lower = Bound::Excluded(k.to_vec()),
            _ => return Ok(()),
        }
    }
}

/// The literal part of a glob before its first special character (narrows the scan).
fn literal_prefix(pat: &[u8]) -> &[u8] {
    let end = pat
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pat.len());
    &pat[..end]
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Reply> + Send + 'static,
) -> Result<T, Reply> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Reply::err(format!("ERR internal error: {e}"))),
    }
}

pub async fn dbsize(c: &mut Conn) -> Reply {
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let db = c.db;
    match blocking(move || {
        let mut n = 0i64;
        walk_db(&engine, db, b"", |_, _| {
            n += 1;
            true
        })
        .map_err(|e| super::e_engine(&e))?;
        Ok(n)
    })
    .await
    {
        Ok(n) => Reply::Int(n),
        Err(r) => r,
    }
}

pub async fn keys(c: &mut Conn, a: &[Bytes]) -> Reply {
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let db = c.db;
    let pat = a[1].clone();
    match blocking(move || {
        let mut out = Vec::new();
        let all = pat.as_ref() == b"*";
        walk_db(&engine, db, literal_prefix(&pat), |k, _| {
            if all || glob_match(&pat, k, false) {
                out.push(Reply::Bulk(Bytes::copy_from_slice(k)));
            }
            true
        })
        .map_err(|e| super::e_engine(&e))?;
        Ok(out)
    })
    .await
    {
        Ok(v) => Reply::Array(v),
        Err(r) => r,
    }
}

pub async fn scan(c: &mut Conn, a: &[Bytes]) -> Reply {
    let Some(cursor) = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return Reply::err("ERR invalid cursor");
    };
    let mut count: usize = 10;
    let mut pattern: Option<Bytes> = None;
    let mut type_filter: Option<Bytes> = None;
    let mut j = 2;
    while j < a.len() {
        let has_next = j + 1 < a.len();
        if eq_ic(&a[j], "count") && has_next {
            match parse_i64(&a[j + 1]) {
                None => return e_int(),
                Some(n) if n < 1 => return e_syntax(),
                Some(n) => count = (n as usize).min(100_000),
            }
        } else if eq_ic(&a[j], "match") && has_next {
            pattern = Some(a[j + 1].clone());
        } else if eq_ic(&a[j], "type") && has_next {
            type_filter = Some(a[j + 1].clone());
        } else {
            return e_syntax();
        }
        j += 2;
    }
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let db = c.db;
    // An unknown (evicted or invented) cursor starts over: duplicates are allowed by SCAN's
    // contract, missing keys are not.
    let resume = if cursor == 0 {
        None
    } else {
        c.shared.cursors.lock().get(db, cursor)
    };
    let res = blocking(move || {
        let lower = match &resume {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(vec![db]),
        };
        let end = db_end(db);
        engine
            .scan(as_ref_bound(&lower), as_ref_bound(&end), count)
            .map_err(|e| super::e_engine(&e))
    })
    .await;
    let batch = match res {
        Ok(b) => b,
        Err(r) => return r,
    };
    let next = if batch.len() < count {
        0
    } else {
        match batch.last() {
            Some((k, _)) => c.shared.cursors.lock().insert(db, k.clone()),
            None => 0,
        }
    };
    let type_ok = type_filter
        .as_ref()
        .is_none_or(|t| t.eq_ignore_ascii_case(b"string"));
    let keys: Vec<Reply> = batch
        .iter()
        .filter(|_| type_ok)
        .map(|(k, _)| &k[1..])
        .filter(|k| pattern.as_ref().is_none_or(|p| glob_match(p, k, false)))
        .map(|k| Reply::Bulk(Bytes::copy_from_slice(k)))
        .collect();
    Reply::Array(vec![Reply::bulk_str(&next.to_string()), Reply::Array(keys)])
}

pub async fn randomkey(c: &mut Conn) -> Reply {
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let db = c.db;
    let res = blocking(move || {
        // Start at a random point of the key space and wrap around: cheap, not uniform.
        let mut start = vec![db];
        start.extend_from_slice(&rand::random::<[u8; 8]>());
        let end = db_end(db);
        let mut got = engine
            .scan(Bound::Included(&start), as_ref_bound(&end), 1)
            .map_err(|e| super::e_engine(&e))?;
        if got.is_empty() {
            got = engine
                .scan(Bound::Included(&[db][..]), as_ref_bound(&end), 1)
                .map_err(|e| super::e_engine(&e))?;
        }
        Ok(got.pop().map(|(k, _)| k.slice(1..)))
    })
    .await;
    match res {
        Ok(Some(k)) => Reply::Bulk(k),
        Ok(None) => Reply::Nil,
        Err(r) => r,
    }
}

pub async fn flush(c: &mut Conn, a: &[Bytes], all: bool) -> Reply {
    if a.len() > 2 || (a.len() == 2 && !eq_ic(&a[1], "async") && !eq_ic(&a[1], "sync")) {
        return e_syntax();
    }
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let prefix = if all { vec![] } else { vec![c.db] };
    match blocking(move || engine.drop_prefix(&prefix).map_err(|e| super::e_engine(&e))).await {
        Ok(()) => Reply::ok(),
        Err(r) => r,
    }
}

/// SAVE/BGSAVE: an engine checkpoint into `<dir>/checkpoints/<unix-time>/`.
pub async fn save(c: &mut Conn, background: bool) -> Reply {
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    if c.shared.bgsave_running.swap(true, Ordering::SeqCst) {
        return Reply::err("ERR Background save already in progress");
    }
    let dir = c.shared.cfg.read().dir.join("checkpoints");
    let shared = c.shared.clone();
    let task = async move {
        let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let now = unix_secs();
            let mut dest = dir.join(now.to_string());
            let mut n = 1;
            while dest.exists() {
                dest = dir.join(format!("{now}-{n}"));
                n += 1;
            }
            engine.checkpoint(&dest).map_err(|e| e.to_string())
        })
        .await;
        shared.bgsave_running.store(false, Ordering::SeqCst);
        match res {
            Ok(Ok(())) => {
                shared.lastsave.store(unix_secs(), Ordering::Relaxed);
                tracing::info!("checkpoint saved");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!("checkpoint failed: {e}");
                Err(e)
            }
            Err(e) => Err(e.to_string()),
        }
    };
    if background {
        tokio::spawn(task);
        Reply::simple("Background saving started")
    } else {
        match task.await {
            Ok(()) => Reply::ok(),
            Err(e) => Reply::err(format!("ERR {e}")),
        }
    }
}

pub fn time() -> Reply {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk_str(&d.as_secs().to_string()),
        Reply::bulk_str(&d.subsec_micros().to_string()),
    ])
}

/// SHUTDOWN answers nothing on success: the connection closes, as in Redis.
pub fn shutdown(c: &mut Conn, a: &[Bytes]) -> Option<Reply> {
    for opt in &a[1..] {
        if eq_ic(opt, "abort") {
            return Some(Reply::err("ERR No shutdown in progress."));
        }
        if !["nosave", "save", "now", "force"]
            .iter()
            .any(|o| eq_ic(opt, o))
        {
            return Some(e_syntax());
        }
    }
    tracing::info!("SHUTDOWN requested by client {}", c.id);
    c.shared.trigger_shutdown();
    c.close = true;
    None
}

pub fn info(c: &mut Conn, a: &[Bytes]) -> Reply {
    let wanted: Vec<String> = a[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let sh = &c.shared;
    let cfg = sh.cfg.read().clone();
    let stats = sh.engine().map(|e| e.stats());
    let mut out = String::new();
    let mut section = |title: &str, body: String| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {title}\r\n{body}");
    };
    if want("server") {
        let up = sh.started.elapsed().as_secs();
        section(
            "Server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nsndv_kv_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                sh.run_id,
                sh.port,
                up / 86400
            ),
        );
    }
    if want("clients") {
        section(
            "Clients",
            format!(
                "connected_clients:{}\r\nmaxclients:{}\r\n",
                sh.clients.lock().len(),
                cfg.maxclients
            ),
        );
    }
    if want("memory") {
        let memtable = stats.as_ref().map(|s| s.memtable_bytes).unwrap_or(0);
        let cache = stats.as_ref().map(|s| s.cache_bytes).unwrap_or(0);
        let (allocator, alloc) = allocator_stats();
        // As Redis: used_memory is what the allocator says is allocated.
        let used = alloc.map(|a| a.allocated).unwrap_or(0);
        let mut b = format!(
            "used_memory:{used}\r\nused_memory_human:{}\r\n",
            human(used)
        );
        if let Some(rss) = crate::procfs::status_bytes("self", "VmRSS") {
            // Includes the mapped table files' resident pages; rss_anon does not.
            let _ = write!(
                b,
                "used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\n",
                human(rss)
            );
        }
        if let Some(anon) = crate::procfs::status_bytes("self", "RssAnon") {
            let _ = write!(b, "rss_anon:{anon}\r\n");
        }
        if let Some(a) = alloc {
            let _ = write!(
                b,
                "allocator_allocated:{}\r\nallocator_active:{}\r\n",
                a.allocated, a.active
            );
            if let Some(r) = a.resident {
                let _ = write!(b, "allocator_resident:{r}\r\n");
            }
        }
        let _ = write!(
            b,
            "mem_allocator:{allocator}\r\nmemtable_bytes:{memtable}\r\nblock_cache_bytes:{cache}\r\nblock_cache_bytes_limit:{}\r\nmaxmemory:0\r\n",
            cfg.block_cache_bytes
        );
        section("Memory", b);
    }
    if want("persistence") {
        section(
            "Persistence",
            format!(
                "loading:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\naof_enabled:0\r\nwal_fsync:{}\r\n",
                u8::from(sh.engine().is_none()),
                u8::from(sh.bgsave_running.load(Ordering::Relaxed)),
                sh.lastsave.load(Ordering::Relaxed),
                format!("{:?}", cfg.fsync).to_ascii_lowercase(),
            ),
        );
    }
    if want("stats") {
        let s = &sh.stats;
        // Event loops in use now (of io_threads) and connections moved between them.
        let (loops, moves) = match sh.loops.get() {
            Some(l) => (l.active(), l.moves()),
            None => (cfg.io_threads.min(1) as usize, 0),
        };
        section(
            "Stats",
            format!(
                "total_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nwrite_groups:{}\r\nio_threads_active:{loops}\r\nio_loop_moves:{moves}\r\n",
                s.connections_received.load(Ordering::Relaxed),
                s.commands_processed.load(Ordering::Relaxed),
                s.rejected_connections.load(Ordering::Relaxed),
                s.net_input_bytes.load(Ordering::Relaxed),
                s.net_output_bytes.load(Ordering::Relaxed),
                s.write_groups.load(Ordering::Relaxed),
            ),
        );
    }
    if want("replication") {
        section(
            "Replication",
            "role:master\r\nconnected_slaves:0\r\n".to_string(),
        );
    }
    if want("keyspace") {
        let mut body = String::new();
        if let Some(engine) = sh.engine() {
            // An estimate: each database is counted up to a cap so INFO stays cheap.
            const CAP: u64 = 10_000;
            let mut capped = false;
            for db in 0..cfg.databases.min(256) as u8 {
                let (mut keys, mut expires) = (0u64, 0u64);
                let _ = walk_db(engine, db, b"", |_, exp| {
                    keys += 1;
                    if exp.is_some() {
                        expires += 1;
                    }
                    keys < CAP
                });
                if keys >= CAP {
                    capped = true;
                }
                if keys > 0 {
                    let _ = write!(body, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
                }
            }
            if capped {
                let _ = write!(
                    body,
                    "keyspace_estimate:counts capped at {CAP} per db (DBSIZE is exact)\r\n"
                );
            }
        }
        section("Keyspace", body);
    }
    if let Some(st) = &stats {
        if want("lsm") {
            let mut b = format!(
                "visible_seqno:{}\r\nmemtable_bytes:{}\r\nimmutables:{}\r\nuser_bytes:{}\r\nwal_bytes:{}\r\ntable_bytes_written:{}\r\nflushes:{}\r\ncompactions:{}\r\nstalls:{}\r\nstall_ms_total:{}\r\nstall_ms_max:{}\r\npoisoned:{}\r\n",
                st.visible_seqno,
                st.memtable_bytes,
                st.immutables,
                st.user_bytes,
                st.wal_bytes,
                st.table_bytes_written,
                st.flushes,
                st.compactions,
                st.stalls,
                st.stall_ms_total,
                st.stall_ms_max,
                st.poisoned.as_deref().map(|p| p.replace(['\r', '\n'], " ")).unwrap_or_else(|| "no".to_string()),
            );
            let _ = write!(
                b,
                "block_cache_hits:{}\r\nblock_cache_misses:{}\r\nblock_cache_warmed_blocks:{}\r\n",
                st.cache_hits, st.cache_misses, st.warmed_blocks
            );
            let _ = write!(
                b,
                "trivial_moves:{}\r\nfloor_compactions:{}\r\nidle_compactions:{}\r\nreclaim_compactions:{}\r\n",
                st.trivial_moves, st.floor_compactions, st.idle_compactions, st.reclaim_compactions
            );
            for (i, (files, bytes)) in st.levels.iter().enumerate() {
                let _ = write!(b, "level{i}:files={files},bytes={bytes}\r\n");
            }
            section("Lsm", b);
        }
        if want("agents") {
            let mut b = String::new();
            for ag in &st.agents {
                let _ = write!(
                    b,
                    "agent_{}:state={},policy={},tasks={},bytes_read={},bytes_written={},busy_ms={}\r\n",
                    ag.name, ag.state, ag.policy, ag.tasks, ag.bytes_read, ag.bytes_written, ag.busy_ms
                );
            }
            section("Agents", b);
        }
    }
    Reply::Verbatim(Bytes::from(out))
}

/// Parameters CONFIG GET knows: (name, current value). Never includes the token.
fn config_params(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("save", String::new()),
        ("appendonly", "no".to_string()),
        ("databases", cfg.databases.to_string()),
        ("maxclients", cfg.maxclients.to_string()),
        ("bind", cfg.bind.clone()),
        ("port", cfg.port.to_string()),
        ("dir", cfg.dir.display().to_string()),
        ("fsync", format!("{:?}", cfg.fsync).to_ascii_lowercase()),
        ("proto-max-bulk-len", cfg.max_bulk_bytes.to_string()),
        ("max_bulk_bytes", cfg.max_bulk_bytes.to_string()),
        ("max_multibulk_len", cfg.max_multibulk_len.to_string()),
        ("query_buffer_bytes", cfg.query_buffer_bytes.to_string()),
        (
            "client_output_buffer_bytes",
            cfg.client_output_buffer_bytes.to_string(),
        ),
        ("memtable_bytes", cfg.memtable_bytes.to_string()),
        ("max_immutables", cfg.max_immutables.to_string()),
        ("block_cache_bytes", cfg.block_cache_bytes.to_string()),
        ("bloom_bits_per_key", cfg.bloom_bits_per_key.to_string()),
        (
            "l0_compaction_trigger",
            cfg.l0_compaction_trigger.to_string(),
        ),
        ("l0_stop_trigger", cfg.l0_stop_trigger.to_string()),
        ("table_target_bytes", cfg.table_target_bytes.to_string()),
        (
            "compaction_policy",
            cfg.compaction_policy.as_str().to_string(),
        ),
        ("idle_compaction_ms", cfg.idle_compaction_ms.to_string()),
        ("io_threads", cfg.io_threads.to_string()),
        ("io_loops", cfg.io_loops.to_string()),
    ]
}

pub fn config(c: &mut Conn, a: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    match sub.as_str() {
        "get" => {
            if a.len() < 3 {
                return e_arity("config|get");
            }
            let cfg = c.shared.cfg.read().clone();
            let mut pairs = Vec::new();
            for (name, val) in config_params(&cfg) {
                if a[2..].iter().any(|p| glob_match(p, name.as_bytes(), true)) {
                    pairs.push((Reply::bulk_str(name), Reply::bulk_str(&val)));
                }
            }
            Reply::Map(pairs)
        }
        "set" => {
            if a.len() < 4 || !a.len().is_multiple_of(2) {
                return e_arity("config|set");
            }
            let mut cfg = c.shared.cfg.read().clone();
            for pair in a[2..].chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                let failed = |why: &str| {
                    Reply::err(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                    ))
                };
                let num = || {
                    std::str::from_utf8(&pair[1])
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                };
                let slot: &mut u64 = match name.as_str() {
                    "maxclients" => {
                        let Some(n) = num() else {
                            return failed("argument couldn't be parsed into an integer");
                        };
                        if n == 0 || n > u32::MAX as u64 {
                            return failed("argument must be between 1 and 4294967295 inclusive");
                        }
                        cfg.maxclients = n as u32;
                        continue;
                    }
                    "max_bulk_bytes" | "proto-max-bulk-len" => &mut cfg.max_bulk_bytes,
                    "max_multibulk_len" => &mut cfg.max_multibulk_len,
                    "query_buffer_bytes" => &mut cfg.query_buffer_bytes,
                    "client_output_buffer_bytes" => &mut cfg.client_output_buffer_bytes,
                    "io_loops" => {
                        let Some(n) = num().filter(|&n| n <= u32::MAX as u64) else {
                            return failed("argument couldn't be parsed into an integer");
                        };
                        cfg.io_loops = n as u32;
                        continue;
                    }
                    other => {
                        if config_params(&cfg).iter().any(|(n, _)| *n == other) {
                            return failed("can't set immutable config");
                        }
                        return Reply::err(format!(
                            "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                        ));
                    }
                };
                match num() {
                    Some(n) => *slot = n,
                    None => return failed("argument couldn't be parsed into an integer"),
                }
            }
            if let Err(e) = cfg.validate() {
                return Reply::err(format!("ERR CONFIG SET failed - {}", e.0));
            }
            let loops = cfg.io_loops as usize;
            c.shared.set_config(cfg);
            if let (Some(pool), 1..) = (c.shared.loops.get(), loops) {
                // At once, so that the next request of each connection already moves it.
                pool.set_active(loops);
            }
            Reply::ok()
        }
        "resetstat" => {
            if a.len() != 2 {
                return e_arity("config|resetstat");
            }
            let s = &c.shared.stats;
            for x in [
                &s.commands_processed,
                &s.connections_received,
                &s.rejected_connections,
                &s.net_input_bytes,
                &s.net_output_bytes,
                &s.write_groups,
            ] {
                x.store(0, Ordering::Relaxed);
            }
            Reply::ok()
        }
        "rewrite" => {
            Reply::err("ERR CONFIG REWRITE is not supported by sndv-kv; edit the TOML file")
        }
        "help" => Reply::Array(
            [
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value>",
                "    Set the configuration <directive> to <value> (live fields only).",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|s| Reply::Simple((*s).into()))
            .collect(),
        ),
        _ => e_subcommand("config", &a[1]),
    }
}

fn command_info(spec: &super::CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::bulk_str(spec.name),
        Reply::Int(spec.arity as i64),
        Reply::Set(
            spec.flag_names()
                .into_iter()
                .map(|f| Reply::Simple(f.into()))
                .collect(),
        ),
        Reply::Int(spec.first_key as i64),
        Reply::Int(spec.last_key as i64),
        Reply::Int(spec.step as i64),
        Reply::Set(vec![Reply::Simple(format!("@{}", spec.group).into())]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

pub fn command(_c: &mut Conn, a: &[Bytes]) -> Reply {
    if a.len() == 1 {
        return Reply::Array(COMMANDS.iter().map(command_info).collect());
    }
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    match sub.as_str() {
        "count" => {
            if a.len() != 2 {
                return e_arity("command|count");
            }
            Reply::Int(COMMANDS.len() as i64)
        }
        "list" => Reply::Array(COMMANDS.iter().map(|c| Reply::bulk_str(c.name)).collect()),
        "info" => {
            if a.len() == 2 {
                return Reply::Array(COMMANDS.iter().map(command_info).collect());
            }
            Reply::Array(
                a[2..]
                    .iter()
                    .map(|n| {
                        super::lookup(n)
                            .map(command_info)
                            .unwrap_or(Reply::NilArray)
                    })
                    .collect(),
            )
        }
        "docs" => {
            let specs: Vec<&super::CommandSpec> = if a.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                a[2..].iter().filter_map(|n| super::lookup(n)).collect()
            };
            Reply::Map(
                specs
                    .into_iter()
                    .map(|s| {
                        (
                            Reply::bulk_str(s.name),
                            Reply::Map(vec![
                                (Reply::bulk_str("summary"), Reply::bulk_str(s.summary)),
                                (Reply::bulk_str("since"), Reply::bulk_str("1.0.0")),
                                (Reply::bulk_str("group"), Reply::bulk_str(s.group)),
                            ]),
                        )
                    })
                    .collect(),
            )
        }
        _ => e_subcommand("command", &a[1]),
    }
}
