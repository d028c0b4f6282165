//! Server-level side-by-side benchmark: sndv-kv against redis-server, with redis-benchmark.
//!
//! Default mode (`cargo bench --bench compare`): starts, each on a free loopback port and a
//! fresh temporary directory,
//! - `sndv-safe`: sndv-kv with `config_safe.toml` (fsync always),
//! - `sndv-fast`: sndv-kv with `config_fast.toml` (no fsync),
//! - `redis-always`: `redis-server --appendonly yes --appendfsync always --save ''`,
//! - `redis-none`: `redis-server --appendonly no --save ''`,
//!
//! preloads every key `key:000000000000`..`key:000000999999` (redis-benchmark's `-r` names)
//! with 100-byte values through a pipelined raw client, checks the GET hit rate, then runs
//! `redis-benchmark --csv -t set|get -d 100 -r 1000000 -c 50 -P 1|16`, interleaving the two
//! systems of each pair (safe ↔ redis-always, fast ↔ redis-none) for every repetition.
//! Every cell is the median of the repetitions: ops/s, p50 and p99 (redis-benchmark's csv)
//! and the server's CPU seconds per million operations (utime+stime from /proc/PID/stat).
//! Writes `target/compare/compare.csv`, `target/compare/compare_samples.csv` and
//! `target/compare/compare.png`.
//!
//! `cargo bench --bench compare -- bigload`: 10,000,000 keys `key:0`..`key:9999999` into
//! sndv-kv (safe config): load rate, DBSIZE, random GET rate, peak RssAnon, disk size,
//! write amplification, and restart time after kill -9 with a nearly full memtable; then
//! the same load into redis-server without persistence for its RSS.
//!
//! Env: `COMPARE_REPS` (default 3), `COMPARE_QUICK=1` (100,000 keys, ~1.5 s runs),
//! `COMPARE_SECS` (target seconds per redis-benchmark run, default 7),
//! `BIGLOAD_KEYS` (default 10,000,000), `SNDV_KV_BIN` (binary to run instead of the one
//! cargo built).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sndv_kv::procfs;

const TOKEN: &str = "compare-bench-token";
const VALUE_LEN: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !run_by_cargo_bench(&args) {
        return;
    }
    if args.iter().any(|a| a == "bigload") {
        bigload();
    } else {
        compare();
    }
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

// ---------------------------------------------------------------------------------------
// Servers

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Sys {
    SndvSafe,
    RedisAlways,
    SndvFast,
    RedisNone,
}

impl Sys {
    fn name(self) -> &'static str {
        match self {
            Sys::SndvSafe => "sndv-safe",
            Sys::RedisAlways => "redis-always",
            Sys::SndvFast => "sndv-fast",
            Sys::RedisNone => "redis-none",
        }
    }
}

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn sndv_bin() -> PathBuf {
    match std::env::var_os("SNDV_KV_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_sndv-kv")),
    }
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn bench_tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("compare-{tag}-"))
        .tempdir()
        .expect("tempdir")
}

fn start_sndv(config: &str, dir: tempfile::TempDir, port: u16) -> Server {
    let child = Command::new(sndv_bin())
        .arg("--config")
        .arg(repo_file(config))
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir.path())
        .arg("--token")
        .arg(TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sndv-kv (cargo build --release --bin sndv-kv)");
    let s = Server { child, port, dir };
    wait_ready(s.port);
    s
}

fn start_redis(persist: bool, dir: tempfile::TempDir, port: u16) -> Server {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir.path())
        .args(["--requirepass", TOKEN, "--save", ""]);
    if persist {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let s = Server { child, port, dir };
    wait_ready(s.port);
    s
}

fn start(sys: Sys) -> Server {
    let dir = bench_tempdir(sys.name());
    let port = free_port();
    match sys {
        Sys::SndvSafe => start_sndv("config_safe.toml", dir, port),
        Sys::SndvFast => start_sndv("config_fast.toml", dir, port),
        Sys::RedisAlways => start_redis(true, dir, port),
        Sys::RedisNone => start_redis(false, dir, port),
    }
}

/// Waits until AUTH + PING answers PONG (the server may answer -LOADING before).
fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(mut c) = Client::connect(port) {
            if let Ok(r) = c.cmd(&[b"PING"]) {
                if r == Resp::Simple("PONG".into()) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server on port {port} not ready after 120 s");
}

// ---------------------------------------------------------------------------------------
// A minimal RESP client (enough for AUTH, GET, DBSIZE, INFO and pipelined loads).

#[derive(Debug, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

struct Client {
    w: BufWriter<TcpStream>,
    r: BufReader<TcpStream>,
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        let mut c = Client {
            w: BufWriter::with_capacity(1 << 16, s.try_clone()?),
            r: BufReader::with_capacity(1 << 16, s),
        };
        match c.cmd(&[b"AUTH", TOKEN.as_bytes()])? {
            Resp::Simple(_) => Ok(c),
            other => Err(std::io::Error::other(format!("AUTH: {other:?}"))),
        }
    }

    fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        encode(&mut buf, args);
        self.w.write_all(&buf)
    }

    fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Resp> {
        self.send(args)?;
        self.w.flush()?;
        read_resp(&mut self.r)
    }
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let line = read_line(r)?;
    let (t, rest) = line.split_at(1.min(line.len()));
    let num = || {
        rest.parse::<i64>()
            .map_err(|_| std::io::Error::other(format!("bad RESP line {line:?}")))
    };
    Ok(match t {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(num()?),
        "$" => {
            let n = num()?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut b = vec![0u8; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
        }
        "*" => {
            let n = num()?;
            let mut v = Vec::new();
            for _ in 0..n.max(0) {
                v.push(read_resp(r)?);
            }
            Resp::Array(v)
        }
        _ => return Err(std::io::Error::other(format!("bad RESP line {line:?}"))),
    })
}

/// Streams `SET name(i) value` for i in `range` over one pipelined connection: a writer
/// thread sends, this thread reads the replies. Returns seconds.
fn load(
    port: u16,
    range: std::ops::Range<u64>,
    name: impl Fn(u64) -> String + Send + 'static,
) -> f64 {
    let start = Instant::now();
    let c = Client::connect(port).expect("connect for load");
    let Client { mut w, mut r } = c;
    let n = range.end - range.start;
    let value = vec![b'x'; VALUE_LEN];
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(1 << 20);
        for i in range {
            encode(&mut buf, &[b"SET", name(i).as_bytes(), &value]);
            if buf.len() >= 1 << 20 {
                w.write_all(&buf).expect("load write");
                buf.clear();
            }
        }
        w.write_all(&buf).expect("load write");
        w.flush().expect("load flush");
        w
    });
    for _ in 0..n {
        match read_resp(&mut r).expect("load reply") {
            Resp::Simple(_) => {}
            other => panic!("SET during load answered {other:?}"),
        }
    }
    drop(writer.join().expect("load writer"));
    start.elapsed().as_secs_f64()
}

/// Parallel [`load`] over `conns` connections.
fn load_parallel(port: u16, n: u64, conns: u64, name: fn(u64) -> String) -> f64 {
    let start = Instant::now();
    let per = n.div_ceil(conns);
    let hs: Vec<_> = (0..conns)
        .map(|c| {
            let r = c * per..((c + 1) * per).min(n);
            std::thread::spawn(move || load(port, r, name))
        })
        .collect();
    for h in hs {
        h.join().expect("loader");
    }
    start.elapsed().as_secs_f64()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// GETs `count` random keys of `0..n` pipelined in batches of `batch`; returns (hits, secs).
fn random_gets(port: u16, n: u64, count: u64, seed: u64, name: fn(u64) -> String) -> (u64, f64) {
    let mut c = Client::connect(port).expect("connect for gets");
    let start = Instant::now();
    let batch = 64;
    let mut hits = 0;
    let mut done = 0;
    while done < count {
        let b = batch.min(count - done);
        for j in 0..b {
            let k = splitmix(seed ^ (done + j)) % n;
            c.send(&[b"GET", name(k).as_bytes()]).expect("send GET");
        }
        c.w.flush().expect("flush");
        for _ in 0..b {
            match read_resp(&mut c.r).expect("GET reply") {
                Resp::Bulk(Some(v)) if v.len() == VALUE_LEN => hits += 1,
                Resp::Bulk(_) => {}
                other => panic!("GET answered {other:?}"),
            }
        }
        done += b;
    }
    (hits, start.elapsed().as_secs_f64())
}

fn padded(i: u64) -> String {
    format!("key:{i:012}")
}

fn plain(i: u64) -> String {
    format!("key:{i}")
}

fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let mut c = Client::connect(port).ok()?;
    let Resp::Bulk(Some(b)) = c.cmd(&[b"INFO", section.as_bytes()]).ok()? else {
        return None;
    };
    let text = String::from_utf8_lossy(&b).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

// ---------------------------------------------------------------------------------------
// /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (get(11) + get(12)) as f64 / clk_tck()
}

/// Samples RssAnon of `pid` every 100 ms until stopped; returns the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    h: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let h = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(
                    procfs::field(&pid.to_string(), "status", "RssAnon").unwrap_or(0),
                    Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            stop,
            peak,
            h: Some(h),
        }
    }
    fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
    fn stop(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
        self.peak_mib()
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Waits (at most 20 s) until none of `pids` used CPU for 300 ms, so one system's background
/// work (flush, compaction, AOF rewrite) does not run during the other's measurement.
fn settle(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = || pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
    let mut last = total();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = total();
        if now - last < 0.02 {
            return;
        }
        last = now;
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(String::new(), |kib| {
            format!(", {:.1} GiB RAM", kib as f64 / 1048576.0)
        });
    format!("{model}, {cores} cores{mem}")
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// redis-benchmark

#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu_per_mop: f64,
}

fn redis_benchmark(
    port: u16,
    pid: u32,
    test: &str,
    pipeline: u32,
    n: u64,
    keyspace: u64,
) -> Sample {
    let cpu0 = cpu_secs(pid);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-a", TOKEN])
        .args(["--csv", "-t", test, "-d", "100", "-c", "50"])
        .args(["-r", &keyspace.to_string(), "-n", &n.to_string()])
        .args(["-P", &pipeline.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let cpu = cpu_secs(pid) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("\"{}\"", test.to_uppercase())))
        .unwrap_or_else(|| {
            panic!(
                "redis-benchmark gave no {test} row: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let f: Vec<f64> = row
        .split(',')
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    Sample {
        rps: f[1],
        p50: f[4],
        p99: f[6],
        cpu_per_mop: cpu / (n as f64 / 1e6),
    }
}

fn compare() {
    let quick = std::env::var("COMPARE_QUICK").is_ok_and(|v| v == "1");
    let reps = env_num("COMPARE_REPS", if quick { 1 } else { 3 }) as usize;
    let target_secs = env_num("COMPARE_SECS", if quick { 2 } else { 7 }) as f64;
    let keys: u64 = if quick { 100_000 } else { 1_000_000 };
    let machine = machine();
    eprintln!("machine: {machine}; {reps} repetitions; {keys} keys; ~{target_secs} s per run");

    let systems = [
        Sys::SndvSafe,
        Sys::RedisAlways,
        Sys::SndvFast,
        Sys::RedisNone,
    ];
    let mut servers: BTreeMap<Sys, Server> = BTreeMap::new();
    let mut load_secs: BTreeMap<Sys, f64> = BTreeMap::new();
    let mut hit_rate: BTreeMap<Sys, f64> = BTreeMap::new();
    for sys in systems {
        let s = start(sys);
        let secs = load_parallel(s.port, keys, 2, padded);
        let (hits, _) = random_gets(s.port, keys, 10_000, 7, padded);
        eprintln!(
            "{}: preloaded {keys} keys in {secs:.1} s ({:.0} SET/s), GET hit rate {:.2}%",
            sys.name(),
            keys as f64 / secs,
            hits as f64 / 100.0
        );
        load_secs.insert(sys, secs);
        hit_rate.insert(sys, hits as f64 / 10_000.0);
        servers.insert(sys, s);
    }
    let pids: Vec<u32> = servers.values().map(Server::pid).collect();
    settle(&pids);

    let pairs = [
        (Sys::SndvSafe, Sys::RedisAlways),
        (Sys::SndvFast, Sys::RedisNone),
    ];
    let cells: Vec<(&str, u32)> = vec![("set", 1), ("set", 16), ("get", 1), ("get", 16)];
    // Calibrate -n per (system, cell) so one run takes about target_secs.
    let mut n_of: BTreeMap<(Sys, &str, u32), u64> = BTreeMap::new();
    for &(test, p) in &cells {
        for sys in systems {
            let s = &servers[&sys];
            let probe = if p == 1 { 20_000 } else { 200_000 };
            let smp = redis_benchmark(s.port, s.pid(), test, p, probe, keys);
            let n = ((smp.rps * target_secs) as u64).clamp(10_000, 50_000_000);
            n_of.insert((sys, test, p), n);
        }
    }
    settle(&pids);
    let mut samples: BTreeMap<(Sys, &str, u32), Vec<Sample>> = BTreeMap::new();
    let mut raw = String::from("rep,system,test,pipeline,n,rps,p50_ms,p99_ms,cpu_s_per_mop\n");
    for rep in 0..reps {
        for &(test, p) in &cells {
            for &(a, b) in &pairs {
                for sys in [a, b] {
                    let s = &servers[&sys];
                    let n = n_of[&(sys, test, p)];
                    let smp = redis_benchmark(s.port, s.pid(), test, p, n, keys);
                    eprintln!(
                        "rep {}/{reps} {} {test} P{p}: {:.0} ops/s p50 {} p99 {} cpu {:.2} s/Mop",
                        rep + 1,
                        sys.name(),
                        smp.rps,
                        smp.p50,
                        smp.p99,
                        smp.cpu_per_mop
                    );
                    let _ = writeln!(
                        raw,
                        "{},{},{test},{p},{n},{:.0},{:.3},{:.3},{:.3}",
                        rep + 1,
                        sys.name(),
                        smp.rps,
                        smp.p50,
                        smp.p99,
                        smp.cpu_per_mop
                    );
                    samples.entry((sys, test, p)).or_default().push(smp);
                    settle(&pids);
                }
            }
        }
    }
    // After the runs: hit rate again (SETs overwrote the same keys).
    for (sys, s) in &servers {
        let (hits, _) = random_gets(s.port, keys, 10_000, 11, padded);
        hit_rate.insert(*sys, hit_rate[sys].min(hits as f64 / 10_000.0));
    }
    let med = |sys: Sys, test: &str, p: u32| -> Sample {
        let v = &samples[&(sys, test, p)];
        let m = |f: fn(&Sample) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        Sample {
            rps: m(|s| s.rps),
            p50: m(|s| s.p50),
            p99: m(|s| s.p99),
            cpu_per_mop: m(|s| s.cpu_per_mop),
        }
    };

    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {machine}. Date: {date}. {reps} repetitions (interleaved A B A B), medians. \
         redis-benchmark -c 50 -d 100 -r {keys}, ~{target_secs} s per run; {keys} keys preloaded."
    );
    let mut csv = String::from(
        "pair,test,pipeline,system,rps,p50_ms,p99_ms,cpu_s_per_mop,ratio_rps,ratio_p50,ratio_p99,ratio_cpu\n",
    );
    for &(a, b) in &pairs {
        let _ = writeln!(
            md,
            "\n#### {} vs {} (machine: {machine})\n",
            a.name(),
            b.name()
        );
        let _ = writeln!(
            md,
            "| test | P | {a} ops/s | {b} ops/s | ratio | {a} p50 ms | {b} p50 ms | ratio | {a} p99 ms | {b} p99 ms | ratio | {a} CPU s/Mop | {b} CPU s/Mop | ratio |",
            a = a.name(),
            b = b.name()
        );
        let _ = writeln!(
            md,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for &(test, p) in &cells {
            let (x, y) = (med(a, test, p), med(b, test, p));
            let _ = writeln!(
                md,
                "| {} | {p} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.2} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} |",
                test.to_uppercase(),
                x.rps,
                y.rps,
                x.rps / y.rps,
                x.p50,
                y.p50,
                x.p50 / y.p50,
                x.p99,
                y.p99,
                x.p99 / y.p99,
                x.cpu_per_mop,
                y.cpu_per_mop,
                x.cpu_per_mop / y.cpu_per_mop
            );
            for (sys, s) in [(a, x), (b, y)] {
                let _ = writeln!(
                    csv,
                    "{}/{},{test},{p},{},{:.0},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
                    a.name(),
                    b.name(),
                    sys.name(),
                    s.rps,
                    s.p50,
                    s.p99,
                    s.cpu_per_mop,
                    x.rps / y.rps,
                    x.p50 / y.p50,
                    x.p99 / y.p99,
                    x.cpu_per_mop / y.cpu_per_mop
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\nratio = sndv-kv / Redis (ops/s: > 1 is sndv-kv faster; latency and CPU: < 1 is sndv-kv better)."
    );
    let _ = writeln!(md, "\nPreload ({keys} keys, 2 pipelined connections) and GET hit rate (10,000 random keys, before and after the runs, the lower shown):\n");
    let _ = writeln!(md, "| system | preload SET/s | GET hit rate |");
    let _ = writeln!(md, "|---|---:|---:|");
    for sys in systems {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2}% |",
            sys.name(),
            keys as f64 / load_secs[&sys],
            hit_rate[&sys] * 100.0
        );
    }
    println!("\n{md}");

    for (_, s) in servers {
        s.stop();
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare");
    let _ = std::fs::create_dir_all(&out);
    for (name, body) in [
        ("compare.csv", &csv),
        ("compare_samples.csv", &raw),
        ("compare.md", &md),
    ] {
        if let Err(e) = std::fs::write(out.join(name), body) {
            eprintln!("cannot write {name}: {e}");
        }
    }
    let bars: Vec<(String, f64, f64)> = pairs
        .iter()
        .flat_map(|&(a, b)| {
            cells
                .iter()
                .map(move |&(t, p)| (a, b, t, p))
                .collect::<Vec<_>>()
        })
        .map(|(a, b, t, p)| {
            (
                format!(
                    "{} P{p} {}",
                    t.to_uppercase(),
                    a.name().trim_start_matches("sndv-")
                ),
                med(a, t, p).rps,
                med(b, t, p).rps,
            )
        })
        .collect();
    match chart(&out.join("compare.png"), &bars, &machine) {
        Ok(()) => println!("Chart: target/compare/compare.png; CSV: target/compare/compare.csv"),
        Err(e) => eprintln!("chart not drawn: {e}"),
    }
}

/// Grouped bars: per cell, sndv-kv and Redis ops/s, on a log scale (P1 and P16 differ ~10x).
fn chart(path: &Path, bars: &[(String, f64, f64)], machine: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let font = ["DejaVuSans.ttf", "LiberationSans-Regular.ttf"]
        .iter()
        .flat_map(|f| {
            [
                format!("/usr/share/fonts/truetype/dejavu/{f}"),
                format!("/usr/share/fonts/truetype/liberation/{f}"),
            ]
        })
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("no DejaVuSans/LiberationSans font found")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "bad font")?;
    let root = BitMapBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = bars
        .iter()
        .flat_map(|b| [b.1, b.2])
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let n = bars.len();
    let mut ch = ChartBuilder::on(&root)
        .caption(
            format!("sndv-kv vs Redis 7.0.15, redis-benchmark ops/s (log) — {machine}"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (1000f64..max * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    ch.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("ops/s")
        .draw()
        .map_err(|e| e.to_string())?;
    let sndv = RGBColor(0x2a, 0x7a, 0xb9);
    let redis = RGBColor(0xd6, 0x2d, 0x20);
    for (i, (label, a, b)) in bars.iter().enumerate() {
        let x = i as f64;
        for (off, v, c) in [(0.1, *a, sndv), (0.5, *b, redis)] {
            if v.is_finite() && v > 1000.0 {
                ch.draw_series(std::iter::once(Rectangle::new(
                    [(x + off, 1000.0), (x + off + 0.38, v)],
                    c.filled(),
                )))
                .map_err(|e| e.to_string())?;
            }
        }
        root.draw(&Text::new(
            label.clone(),
            (82 + (i as i32) * (1100 - 94) / n as i32, 528),
            ("sans-serif", 13),
        ))
        .map_err(|e| e.to_string())?;
    }
    for (j, (name, c)) in [
        ("sndv-kv (safe: fsync always / fast: no fsync)", sndv),
        (
            "Redis (always: AOF fsync always / none: no persistence)",
            redis,
        ),
    ]
    .iter()
    .enumerate()
    {
        let y = 40 + 20 * j as i32;
        root.draw(&Rectangle::new([(100, y), (114, y + 12)], c.filled()))
            .map_err(|e| e.to_string())?;
        root.draw(&Text::new(name.to_string(), (120, y), ("sans-serif", 14)))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// bigload

fn bigload() {
    let keys = env_num("BIGLOAD_KEYS", 10_000_000);
    let machine = machine();
    eprintln!("bigload: {keys} keys; machine: {machine}");
    let mut md = String::new();

    // sndv-kv, safe config.
    let s = start(Sys::SndvSafe);
    let pid = s.pid();
    let sampler = RssSampler::start(pid);
    let io0 = procfs::field(&pid.to_string(), "io", "write_bytes").unwrap_or(0);
    let load_s = load_parallel(s.port, keys, 2, plain);
    let load_rss = sampler.peak_mib();
    eprintln!("sndv-kv: loaded {keys} keys in {load_s:.1} s");
    let mut c = Client::connect(s.port).expect("connect");
    let t = Instant::now();
    let dbsize = match c.cmd(&[b"DBSIZE"]).expect("DBSIZE") {
        Resp::Int(n) => n,
        other => panic!("DBSIZE answered {other:?}"),
    };
    let dbsize_secs = t.elapsed().as_secs_f64();
    let reads = 1_000_000.min(keys);
    let read_rate = |seed: u64| {
        let t = Instant::now();
        let hs: Vec<_> = (0..2u64)
            .map(|th| {
                let port = s.port;
                std::thread::spawn(move || random_gets(port, keys, reads / 2, seed + th, plain).0)
            })
            .collect();
        let hits: u64 = hs.into_iter().map(|h| h.join().expect("reader")).sum();
        (hits, t.elapsed().as_secs_f64())
    };
    // Right after the load (the compaction agent is still at work, including the idle
    // merge of L0 once writes stopped), then again once the server is idle.
    let (hits, read_secs) = read_rate(99);
    settle(&[pid]);
    let (hits2, read_secs2) = read_rate(199);
    let idle_merges = info_field(s.port, "lsm", "idle_compactions").unwrap_or_default();
    let user = info_field(s.port, "lsm", "user_bytes").and_then(|v| v.parse::<f64>().ok());
    let wal = info_field(s.port, "lsm", "wal_bytes").and_then(|v| v.parse::<f64>().ok());
    let tables =
        info_field(s.port, "lsm", "table_bytes_written").and_then(|v| v.parse::<f64>().ok());
    let io_written = procfs::field(&pid.to_string(), "io", "write_bytes")
        .unwrap_or(0)
        .saturating_sub(io0) as f64;
    let user_sent = keys as f64 * (plain(keys / 2).len() + VALUE_LEN) as f64;
    let disk = dir_bytes(s.dir.path());

    // Restart: fill the memtable to ~90% with keys written after the last flush, the last of
    // them a probe whose only copy is in the WAL, then kill -9 and time until it reads back.
    let memtable_cap = 64u64 << 20; // config_safe.toml memtable_bytes
    let flushes0 = info_field(s.port, "lsm", "flushes");
    let mut extra = 0u64;
    loop {
        let mt: u64 = info_field(s.port, "lsm", "memtable_bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if mt >= memtable_cap * 9 / 10 || extra > 2_000_000 {
            break;
        }
        let chunk = ((memtable_cap * 9 / 10 - mt) / 200).clamp(1000, 100_000);
        load(s.port, keys + extra..keys + extra + chunk, plain);
        extra += chunk;
    }
    let mt_before: u64 = info_field(s.port, "lsm", "memtable_bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let probe_val = format!("probe-{}", splitmix(keys));
    match c
        .cmd(&[b"SET", b"restart:probe", probe_val.as_bytes()])
        .expect("SET probe")
    {
        Resp::Simple(_) => {}
        other => panic!("SET probe: {other:?}"),
    }
    let flushes1 = info_field(s.port, "lsm", "flushes");
    drop(c);
    let peak_rss = sampler.stop();
    let Server {
        mut child,
        port,
        dir,
    } = s;
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let t_kill = Instant::now();
    let _ = child.wait();
    let child = Command::new(sndv_bin())
        .arg("--config")
        .arg(repo_file("config_safe.toml"))
        .args(["--port", &port.to_string(), "--token", TOKEN])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restart sndv-kv");
    let restarted = loop {
        if t_kill.elapsed() > Duration::from_secs(600) {
            panic!("no successful GET within 600 s of the restart");
        }
        if let Ok(mut c) = Client::connect(port) {
            if let Ok(Resp::Bulk(Some(v))) = c.cmd(&[b"GET", b"restart:probe"]) {
                assert_eq!(v, probe_val.as_bytes(), "probe value after restart");
                break t_kill.elapsed().as_secs_f64();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Server { child, port, dir }.stop();

    let _ = writeln!(
        md,
        "#### 10M keys into sndv-kv (config_safe.toml) (machine: {machine})\n"
    );
    let _ = writeln!(md, "| metric | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| keys loaded (`key:0`..`key:{}`, 100-byte values, 2 pipelined connections) | {keys} |",
        keys - 1
    );
    let _ = writeln!(
        md,
        "| load rate | {:.0} SET/s ({load_s:.1} s) |",
        keys as f64 / load_s
    );
    let _ = writeln!(md, "| DBSIZE | {dbsize} ({dbsize_secs:.1} s) |");
    let _ = writeln!(
        md,
        "| random GETs (2 connections, pipeline 64) right after DBSIZE, compactions running | {:.0} GET/s, {:.2}% hits of {reads} |",
        reads as f64 / read_secs,
        hits as f64 * 100.0 / reads as f64
    );
    let _ = writeln!(
        md,
        "| random GETs once the server is idle (idle compactions so far: {idle_merges}) | {:.0} GET/s, {:.2}% hits of {reads} |",
        reads as f64 / read_secs2,
        hits2 as f64 * 100.0 / reads as f64
    );
    let _ = writeln!(md, "| peak RssAnon during load | {load_rss:.0} MiB |");
    let _ = writeln!(
        md,
        "| peak RssAnon (load + DBSIZE + reads + memtable refill) | {peak_rss:.0} MiB |"
    );
    let _ = writeln!(
        md,
        "| data on disk after load + reads | {:.0} MiB |",
        disk as f64 / 1048576.0
    );
    if let (Some(u), Some(w), Some(t)) = (user, wal, tables) {
        let _ = writeln!(
            md,
            "| write amplification (INFO lsm: (wal_bytes + table_bytes_written) / user_bytes) | {:.2} |",
            (w + t) / u
        );
    }
    let _ = writeln!(
        md,
        "| write amplification (/proc write_bytes / (key + value bytes sent)) | {:.2} |",
        io_written / user_sent
    );
    let _ = writeln!(
        md,
        "| restart: kill -9 → first GET of a WAL-only key (memtable {:.0} MiB of 64, flushes {} → {}) | {restarted:.2} s |",
        mt_before as f64 / 1048576.0,
        flushes0.as_deref().unwrap_or("?"),
        flushes1.as_deref().unwrap_or("?")
    );

    // Redis, no persistence: the same load, for its RSS.
    let r = start(Sys::RedisNone);
    let sampler = RssSampler::start(r.pid());
    let rload = load_parallel(r.port, keys, 2, plain);
    let mut c = Client::connect(r.port).expect("connect redis");
    let rsize = match c.cmd(&[b"DBSIZE"]).expect("DBSIZE") {
        Resp::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    let rrss = sampler.stop();
    r.stop();
    let _ = writeln!(
        md,
        "| redis-server (no persistence): same load | {:.0} SET/s, DBSIZE {rsize}, peak RssAnon {rrss:.0} MiB |",
        keys as f64 / rload
    );
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare");
    let _ = std::fs::create_dir_all(&out);
    if let Err(e) = std::fs::write(out.join("bigload.md"), &md) {
        eprintln!("cannot write bigload.md: {e}");
    }
}
