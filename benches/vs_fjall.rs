//! Engine-level side-by-side benchmark: sndv-kv's engine against fjall, through their
//! public APIs, one operation per call, no sync per write (our `FsyncPolicy::Never`,
//! fjall's default of writing to OS buffers only).
//!
//! Each (engine, workload) runs in a child process (this binary re-executed with `child
//! ...`) on a fresh temporary directory, so peak RSS (VmHWM) and `/proc/self/io`
//! `write_bytes` belong to that one engine. Systems are interleaved (A B A B) and every cell
//! is the median of the repetitions.
//!
//! Workloads: 16-byte random keys, 100-byte values;
//! - `fill T`: fillrandom 2,000,000 keys from T writer threads;
//! - `overwrite T`: preload 2,000,000 keys (not timed), then overwrite 2,000,000 random
//!   existing keys from T threads;
//! - `read T`: preload 1,000,000 keys (not timed), then readrandom 1,000,000 present keys
//!   and readmissing 200,000 absent keys from T reader threads.
//!
//! Write amplification = the child's `write_bytes` (WAL, tables, manifest, everything,
//! measured after the engine is closed/dropped) / user bytes put (key + value).
//!
//! Run: `cargo bench --bench vs_fjall`
//! Env: `VS_FJALL_REPS` (default 3), `VS_FJALL_QUICK=1` (sizes / 10).
//! Writes `target/compare/vs_fjall.csv`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sndv_kv::engine::{Engine, EngineConfig, FsyncPolicy, Op, View};
use sndv_kv::procfs;

const VALUE_LEN: usize = 100;
const KEY_LEN: usize = 16;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Key number `i`: 16 pseudo-random bytes (distinct for distinct `i` in practice).
fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&splitmix(i).to_be_bytes());
    k[8..].copy_from_slice(&splitmix(i ^ 0x5555_AAAA_5555_AAAA).to_be_bytes());
    k
}

fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [b'v'; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_be_bytes());
    v
}

/// What the child measures for one engine.
trait Kv: Send + Sync {
    fn put(&self, k: &[u8], v: &[u8]);
    /// true if found
    fn get(&self, k: &[u8]) -> bool;
}

struct Ours(Engine);

impl Kv for Ours {
    fn put(&self, k: &[u8], v: &[u8]) {
        let (k, v) = (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v));
        let op: Op<()> = Box::new(move |view: &mut View<'_>| view.put(k, v, None));
        self.0.write(vec![op]).expect("write");
    }
    fn get(&self, k: &[u8]) -> bool {
        self.0.get(k).expect("get").is_some()
    }
}

struct Fjall {
    _db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Kv for Fjall {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).expect("insert");
    }
    fn get(&self, k: &[u8]) -> bool {
        self.ks.get(k).expect("get").is_some()
    }
}

fn open(engine: &str, dir: &Path) -> Box<dyn Kv> {
    match engine {
        "sndv" => {
            let cfg = EngineConfig {
                fsync: FsyncPolicy::Never,
                ..EngineConfig::default()
            };
            Box::new(Ours(Engine::open(dir, cfg).expect("open sndv")))
        }
        "fjall" => {
            let db = fjall::Database::builder(dir).open().expect("open fjall");
            let ks = db
                .keyspace("bench", fjall::KeyspaceCreateOptions::default)
                .expect("keyspace");
            Box::new(Fjall { _db: db, ks })
        }
        other => panic!("unknown engine {other}"),
    }
}

/// Runs `f(i)` for i in 0..n split over `threads` threads; returns seconds.
fn parallel(threads: usize, n: u64, f: impl Fn(u64) + Sync) -> f64 {
    let start = Instant::now();
    let per = n / threads as u64;
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let f = &f;
            s.spawn(move || {
                for i in t * per..(t + 1) * per {
                    f(i);
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn child(engine: &str, workload: &str, threads: usize, scale: u64) {
    let dir = tempfile::Builder::new()
        .prefix("vs_fjall")
        .tempdir_in(std::env::temp_dir())
        .expect("tempdir");
    let kv: Arc<dyn Kv> = Arc::from(open(engine, dir.path()));
    let entry = (KEY_LEN + VALUE_LEN) as u64;
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut user_bytes = 0u64;
    match workload {
        "fill" => {
            let n = 2_000_000 / scale;
            let secs = parallel(threads, n, |i| kv.put(&key(i), &value(i)));
            user_bytes += n * entry;
            out.push(("fillrandom".into(), n as f64 / secs));
        }
        "overwrite" => {
            let n = 2_000_000 / scale;
            parallel(1, n, |i| kv.put(&key(i), &value(i)));
            let secs = parallel(threads, n, |i| {
                let j = splitmix(i ^ 0xABCD) % n;
                kv.put(&key(j), &value(i));
            });
            user_bytes += 2 * n * entry;
            out.push(("overwrite".into(), n as f64 / secs));
        }
        "read" => {
            let n = 1_000_000 / scale;
            parallel(1, n, |i| kv.put(&key(i), &value(i)));
            user_bytes += n * entry;
            let found = std::sync::atomic::AtomicU64::new(0);
            let secs = parallel(threads, n, |i| {
                if kv.get(&key(splitmix(i ^ 0x1234) % n)) {
                    found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            assert_eq!(
                found.load(std::sync::atomic::Ordering::Relaxed),
                n / threads as u64 * threads as u64,
                "{engine}: present keys not found"
            );
            out.push(("readrandom".into(), n as f64 / secs));
            let m = 200_000 / scale;
            let secs = parallel(threads, m, |i| {
                assert!(!kv.get(&key(n + 1 + i)), "{engine}: absent key found");
            });
            out.push(("readmissing".into(), m as f64 / secs));
        }
        other => panic!("unknown workload {other}"),
    }
    // Dropping closes: ours joins its agents, fjall persists its journal.
    drop(kv);
    let written = procfs::field("self", "io", "write_bytes").unwrap_or(0);
    let hwm_kib = procfs::field("self", "status", "VmHWM").unwrap_or(0);
    for (phase, ops) in out {
        println!(
            "RESULT {phase} {ops:.0} {:.3} {hwm_kib}",
            written as f64 / user_bytes as f64
        );
    }
}

struct Cell {
    ops: Vec<f64>,
    wa: Vec<f64>,
    rss_mib: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = std::env::var("VS_FJALL_QUICK").is_ok_and(|v| v == "1");
    let scale = if quick { 10 } else { 1 };
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2], &args[3], args[4].parse().expect("threads"), scale);
        return;
    }
    if !run_by_cargo_bench(&args) {
        return;
    }
    let reps: usize = std::env::var("VS_FJALL_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let exe = std::env::current_exe().expect("current exe");
    let engines = ["sndv", "fjall"];
    let workloads = [
        ("fill", 1),
        ("fill", 4),
        ("overwrite", 1),
        ("overwrite", 4),
        ("read", 1),
        ("read", 2),
    ];
    // (phase, threads, engine) -> samples
    let mut cells: BTreeMap<(String, usize, &str), Cell> = BTreeMap::new();
    let mut order: Vec<(String, usize)> = Vec::new();
    for rep in 0..reps {
        for &(w, t) in &workloads {
            for e in engines {
                eprintln!("rep {}/{reps}: {e} {w} {t} thread(s)", rep + 1);
                let out = Command::new(&exe)
                    .args(["child", e, w, &t.to_string()])
                    .output()
                    .expect("run child");
                assert!(
                    out.status.success(),
                    "child {e} {w} {t} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.first() != Some(&"RESULT") {
                        continue;
                    }
                    let phase = f[1].to_string();
                    if !order.contains(&(phase.clone(), t)) {
                        order.push((phase.clone(), t));
                    }
                    let c = cells.entry((phase, t, e)).or_insert(Cell {
                        ops: vec![],
                        wa: vec![],
                        rss_mib: vec![],
                    });
                    c.ops.push(f[2].parse().unwrap_or(f64::NAN));
                    c.wa.push(f[3].parse().unwrap_or(f64::NAN));
                    c.rss_mib
                        .push(f[4].parse::<f64>().unwrap_or(f64::NAN) / 1024.0);
                }
            }
        }
    }
    println!(
        "\n### Engine vs fjall {} (machine: {}; {reps} repetitions, medians{})\n",
        fjall_version(),
        machine(),
        if quick { "; QUICK: sizes / 10" } else { "" }
    );
    println!("| workload | threads | sndv ops/s | fjall ops/s | ratio | sndv WA | fjall WA | sndv peak RSS MiB | fjall peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = std::fs::create_dir_all("target/compare");
    let mut csv = String::from("workload,threads,engine,ops_per_s,write_amp,peak_rss_mib,reps\n");
    for (phase, t) in &order {
        let get = |e: &str| {
            let c = &cells[&(phase.clone(), *t, e)];
            (median(&c.ops), median(&c.wa), median(&c.rss_mib))
        };
        let (so, sw, sr) = get("sndv");
        let (fo, fw, fr) = get("fjall");
        let reads = phase.starts_with("read");
        let wa = |x: f64| {
            if reads {
                "-".to_string()
            } else {
                format!("{x:.2}")
            }
        };
        println!(
            "| {phase} | {t} | {so:.0} | {fo:.0} | {:.2} | {} | {} | {sr:.0} | {fr:.0} |",
            so / fo,
            wa(sw),
            wa(fw)
        );
        for (e, o, w, r) in [("sndv", so, sw, sr), ("fjall", fo, fw, fr)] {
            csv.push_str(&format!("{phase},{t},{e},{o:.0},{w:.3},{r:.1},{reps}\n"));
        }
    }
    let path = "target/compare/vs_fjall.csv";
    match std::fs::File::create(path).and_then(|mut f| f.write_all(csv.as_bytes())) {
        Ok(()) => println!("\nCSV: {path}"),
        Err(e) => eprintln!("cannot write {path}: {e}"),
    }
    println!("ratio = sndv / fjall ops/s (> 1: sndv faster). Read workloads' WA is omitted (their writes are the preload).");
}

/// `cargo bench` passes `--bench`; `cargo test --benches/--all-targets` does not: then only
/// say how to run, so a test run never starts servers or long loads.
fn run_by_cargo_bench(args: &[String]) -> bool {
    if args.iter().any(|a| a == "--bench") {
        return true;
    }
    eprintln!("benchmark harness: run it with `cargo bench --bench NAME`; skipped");
    false
}

fn fjall_version() -> &'static str {
    // Kept in step with Cargo.lock by hand; shown so a table says what it compared against.
    "3.1"
}
