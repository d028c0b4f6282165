//! INFO memory: the allocator's numbers (jemalloc in the binary, as Redis reports them), the
//! process' RSS and the engine's own buffers.
mod server_support;

use redis::Commands;
use server_support::Server;

fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

fn num(info: &str, name: &str) -> u64 {
    field(info, name)
        .unwrap_or_else(|| panic!("no {name} in {info}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e} in {info}"))
}

#[test]
fn info_memory_reports_the_allocator_rss_and_engine_buffers() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..200 {
        let _: () = c.set(format!("k{i}"), vec![b'x'; 1000]).unwrap();
    }
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    assert!(info.starts_with("# Memory\r\n"), "{info}");

    let allocator = field(&info, "mem_allocator").expect("mem_allocator");
    if cfg!(feature = "jemalloc") {
        assert!(allocator.starts_with("jemalloc-5."), "{allocator}");
    } else {
        assert_eq!(allocator, "libc");
    }
    let used = num(&info, "used_memory");
    let allocated = num(&info, "allocator_allocated");
    let active = num(&info, "allocator_active");
    // used_memory is the allocator's allocated bytes, read in the same call.
    assert_eq!(used, allocated);
    // A server with 200 KB of values in its memtable has allocated at least that.
    assert!(used > 200_000, "{info}");
    assert!(active >= allocated, "{info}");
    if cfg!(feature = "jemalloc") {
        assert!(num(&info, "allocator_resident") >= active, "{info}");
    }
    assert!(field(&info, "used_memory_human").is_some());
    let rss = num(&info, "used_memory_rss");
    let anon = num(&info, "rss_anon");
    assert!(anon > 0 && rss >= anon, "{info}");
    assert!(num(&info, "memtable_bytes") >= 200_000, "{info}");
    let limit = num(&info, "block_cache_bytes_limit");
    assert!(num(&info, "block_cache_bytes") <= limit, "{info}");

    // `INFO` without a section includes it too.
    let all: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(all.contains("\r\nallocator_allocated:"), "{all}");
}

/// A server with 64 KiB memtables (so a few hundred SETs make tables) and the given
/// `idle_compaction_ms`, in a fresh directory that lives as long as the returned guard.
fn small_memtable_server(idle_compaction_ms: u64) -> (tempfile::TempDir, Server) {
    Server::start_with_config(&format!(
        "memtable_bytes = 65536\nmax_immutables = 2\nidle_compaction_ms = {idle_compaction_ms}\n"
    ))
}

#[test]
fn info_lsm_counts_block_cache_hits_and_misses() {
    // No idle merge: the table read twice below must stay the same table.
    let (_dir, s) = small_memtable_server(0);
    let mut c = s.conn();
    for i in 0..600 {
        let _: () = c.set(format!("k{i:04}"), vec![b'v'; 1000]).unwrap();
    }
    let lsm =
        |c: &mut redis::Connection| -> String { redis::cmd("INFO").arg("lsm").query(c).unwrap() };
    // Wait (without a clock: by polling the state) until the memtables are in tables.
    let mut info = lsm(&mut c);
    for _ in 0..2000 {
        if num(&info, "immutables") == 0 && num(&info, "flushes") > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        info = lsm(&mut c);
    }
    assert!(num(&info, "flushes") > 0, "{info}");
    let (h0, m0) = (
        num(&info, "block_cache_hits"),
        num(&info, "block_cache_misses"),
    );
    // The first keys were flushed long ago: reading one twice is a miss, then a hit.
    for _ in 0..2 {
        let v: Vec<u8> = c.get("k0000").unwrap();
        assert_eq!(v.len(), 1000);
    }
    let info = lsm(&mut c);
    assert!(num(&info, "block_cache_misses") > m0, "{info}");
    assert!(num(&info, "block_cache_hits") > h0, "{info}");
}

#[test]
fn writes_going_quiet_merge_l0_into_l1_and_info_counts_it() {
    let (_dir, s) = small_memtable_server(1);
    let mut c = s.conn();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("idle_compaction_ms")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec!["idle_compaction_ms".to_string(), "1".to_string()]);
    // A few memtables' worth: below l0_compaction_trigger (4) tables, so only going quiet
    // compacts them.
    for i in 0..150 {
        let _: () = c.set(format!("k{i:04}"), vec![b'v'; 1000]).unwrap();
    }
    let lsm =
        |c: &mut redis::Connection| -> String { redis::cmd("INFO").arg("lsm").query(c).unwrap() };
    // Poll the state (no clock in the test): the merge runs once the last write is 1 ms old.
    let mut info = lsm(&mut c);
    for _ in 0..4000 {
        if num(&info, "idle_compactions") > 0 && info.contains("level0:files=0,") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        info = lsm(&mut c);
    }
    assert!(num(&info, "flushes") > 0, "{info}");
    assert!(num(&info, "idle_compactions") > 0, "{info}");
    assert!(info.contains("level0:files=0,"), "{info}");
    for i in [0, 77, 149] {
        let v: Vec<u8> = c.get(format!("k{i:04}")).unwrap();
        assert_eq!(v.len(), 1000);
    }
}
