//! Soak: the release binary under steady load with flushes and compactions running.
//!
//! ```sh
//! cargo build --release --bins --examples
//! ./target/release/examples/soak 600 200     # seconds, connections
//! ```
//!
//! Each connection owns its keys and runs 70% GET / 30% SET, half of the SETs with a random
//! TTL. Every GET is checked against the connection's model (the last acknowledged value, or
//! nothing once its TTL has passed). Every 10 s it prints the server's anonymous RSS
//! (RssAnon), throughput and the engine's stall/flush/compaction counters from INFO. At the
//! end every key must hold its last acknowledged value (keys with a TTL: that value or
//! expired, and PEXPIRETIME within the window the SET was sent in).
//!
//! Exit status 0 only if there were no errors, the final check passed and RSS stayed flat
//! (the last window's maximum within 10% of the first window's after warm-up).
//! The server binary is `target/release/sndv-kv` next to this example, or `$SNDV_KV_BIN`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOKEN: &str = "soak-token-1f2e3d4c5b6a79880123456789";
const KEYS_PER_CONN: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
enum R {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<R>),
}

fn decode(b: &[u8]) -> Option<(R, usize)> {
    let nl = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..nl]).ok()?;
    let next = nl + 2;
    match *b.first()? {
        b'+' => Some((R::Simple(line.to_string()), next)),
        b'-' => Some((R::Err(line.to_string()), next)),
        b':' => Some((R::Int(line.parse().ok()?), next)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((R::Bulk(None), next));
            }
            let end = next + len as usize;
            if b.len() < end + 2 {
                return None;
            }
            Some((R::Bulk(Some(b[next..end].to_vec())), end + 2))
        }
        b'*' => {
            let len: i64 = line.parse().ok()?;
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..len.max(0) {
                let (r, n) = decode(&b[pos..])?;
                items.push(r);
                pos += n;
            }
            Some((R::Array(items), pos))
        }
        _ => None,
    }
}

struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_secs(120)))?;
        sock.set_nodelay(true)?;
        let mut c = Client {
            sock,
            buf: Vec::new(),
        };
        match c.cmd(&[b"AUTH", TOKEN.as_bytes()])? {
            R::Simple(s) if s == "OK" => Ok(c),
            other => Err(std::io::Error::other(format!("AUTH: {other:?}"))),
        }
    }

    fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<R> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        self.sock.write_all(&v)?;
        loop {
            if let Some((r, n)) = decode(&self.buf) {
                self.buf.drain(..n);
                return Ok(r);
            }
            let mut tmp = [0u8; 65536];
            let n = self.sock.read(&mut tmp)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The last acknowledged SET of a key: its value and the window its expiry lies in.
#[derive(Clone)]
struct Acked {
    value: Vec<u8>,
    /// (earliest, latest) absolute expiry in unix ms: the TTL added to the times the SET was
    /// sent and acknowledged.
    expire: Option<(u64, u64)>,
}

fn info_field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or("?")
        .trim()
        .to_string()
}

struct Counters {
    ops: AtomicU64,
    gets: AtomicU64,
    sets: AtomicU64,
    errors: AtomicU64,
}

fn worker(
    id: usize,
    port: u16,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    errors: Arc<Mutex<Vec<String>>>,
) -> HashMap<usize, Acked> {
    let mut model: HashMap<usize, Acked> = HashMap::new();
    let mut rng = StdRng::seed_from_u64(id as u64 * 7919 + now_ms());
    let fail = |msg: String| {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut e = errors.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() < 50 {
            e.push(msg);
        }
    };
    let mut c = match Client::connect(port) {
        Ok(c) => c,
        Err(e) => {
            fail(format!("conn {id}: connect: {e}"));
            return model;
        }
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.gen_range(0..KEYS_PER_CONN);
        let key = format!("soak:{id}:{k}");
        n += 1;
        if rng.gen_bool(0.7) {
            let t0 = now_ms();
            let r = c.cmd(&[b"GET", key.as_bytes()]);
            let t1 = now_ms();
            let ok = match (&r, model.get(&k)) {
                (Ok(R::Bulk(None)), None) => true,
                (Ok(R::Bulk(None)), Some(a)) => a.expire.is_some_and(|(lo, _)| lo <= t1),
                (Ok(R::Bulk(Some(v))), Some(a)) => {
                    *v == a.value && a.expire.is_none_or(|(_, hi)| t0 < hi)
                }
                _ => false,
            };
            if !ok {
                fail(format!(
                    "conn {id}: GET {key}: {r:?}, expected {:?}",
                    model
                        .get(&k)
                        .map(|a| (String::from_utf8_lossy(&a.value).into_owned(), a.expire))
                ));
                if r.is_err() {
                    return model;
                }
            }
            counters.gets.fetch_add(1, Ordering::Relaxed);
        } else {
            let len = rng.gen_range(16..1024);
            let mut value = format!("{id}:{n}:").into_bytes();
            value.resize(len, b'a' + (n % 26) as u8);
            let ttl: Option<u64> = rng.gen_bool(0.5).then(|| rng.gen_range(200..120_000));
            let t0 = now_ms();
            let r = match ttl {
                Some(px) => c.cmd(&[
                    b"SET",
                    key.as_bytes(),
                    &value,
                    b"PX",
                    px.to_string().as_bytes(),
                ]),
                None => c.cmd(&[b"SET", key.as_bytes(), &value]),
            };
            let t1 = now_ms();
            match r {
                Ok(R::Simple(s)) if s == "OK" => {
                    model.insert(
                        k,
                        Acked {
                            value,
                            expire: ttl.map(|px| (t0 + px, t1 + px)),
                        },
                    );
                }
                other => {
                    // Unknown outcome: the key is no longer checkable.
                    model.remove(&k);
                    fail(format!("conn {id}: SET {key}: {other:?}"));
                    if other.is_err() {
                        return model;
                    }
                }
            }
            counters.sets.fetch_add(1, Ordering::Relaxed);
        }
        counters.ops.fetch_add(1, Ordering::Relaxed);
    }
    model
}

fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SNDV_KV_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/soak → target/release/sndv-kv
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("sndv-kv"))
        .unwrap_or_else(|| PathBuf::from("target/release/sndv-kv"))
}

fn start_server(dir: &std::path::Path) -> Result<(Child, u16), String> {
    let cfg = dir.join("soak.toml");
    // The safe profile (fsync always) with a small memtable and tables so that flushes and
    // compactions run all the time.
    std::fs::write(
        &cfg,
        "fsync = \"always\"\nmemtable_bytes = 1048576\ntable_target_bytes = 1048576\nblock_cache_bytes = 16777216\nmaxclients = 1000\n",
    )
    .map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new(server_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("--dir")
        .arg(dir.join("data"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--token")
        .arg(TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", server_bin().display()))?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(mut c) = Client::connect(port) {
            if matches!(c.cmd(&[b"PING"]), Ok(R::Simple(s)) if s == "PONG") {
                return Ok((child, port));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("server did not start".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600);
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tempdir: {e}");
            std::process::exit(2);
        }
    };
    let (mut child, port) = match start_server(tmp.path()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let pid = child.id();
    println!("soak: {secs} s, {conns} connections, server pid {pid}, port {port}");
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters {
        ops: AtomicU64::new(0),
        gets: AtomicU64::new(0),
        sets: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let errors = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..conns)
        .map(|id| {
            let (s, c, e) = (stop.clone(), counters.clone(), errors.clone());
            std::thread::spawn(move || (id, worker(id, port, s, c, e)))
        })
        .collect();

    let mut admin = match Client::connect(port) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("admin connect: {e}");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new(); // (second, RssAnon)
    let mut last_ops = 0;
    let mut max_stall = String::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        let next =
            Duration::from_secs((samples.len() as u64 + 1) * 10).min(Duration::from_secs(secs));
        std::thread::sleep(next.saturating_sub(t0.elapsed()));
        let t = t0.elapsed().as_secs();
        let rss = sndv_kv::procfs::status_bytes(&pid.to_string(), "RssAnon").unwrap_or(0);
        samples.push((t, rss));
        let info = match admin.cmd(&[b"INFO", b"everything"]) {
            Ok(R::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
            other => format!("{other:?}"),
        };
        let ops = counters.ops.load(Ordering::Relaxed);
        max_stall = info_field(&info, "stall_ms_max");
        // Where the anonymous memory is: the allocator's view (allocated = live heap,
        // resident = what it holds) and the engine's own buffers.
        let mib = |name: &str| {
            info_field(&info, name)
                .parse::<u64>()
                .map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64))
                .unwrap_or_else(|_| "?".into())
        };
        let tables: u64 = info
            .lines()
            .filter(|l| l.starts_with("level"))
            .filter_map(|l| {
                l.split_once("files=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        println!(
            "t={t:>4}s rss_anon={:>4}MiB threads={:>3} ops/s={:>6} errors={} stalls={} stall_ms_max={} flushes={} compactions={} | alloc={} allocated={} active={} resident={} cache={} memtable={} immutables={} tables={tables} l0={} l1={}",
            rss >> 20,
            sndv_kv::procfs::field(&pid.to_string(), "status", "Threads").unwrap_or(0),
            (ops - last_ops) / 10,
            counters.errors.load(Ordering::Relaxed),
            info_field(&info, "stalls"),
            max_stall,
            info_field(&info, "flushes"),
            info_field(&info, "compactions"),
            info_field(&info, "mem_allocator"),
            mib("allocator_allocated"),
            mib("allocator_active"),
            mib("allocator_resident"),
            mib("block_cache_bytes"),
            mib("memtable_bytes"),
            info_field(&info, "immutables"),
            info_field(&info, "level0"),
            info_field(&info, "level1"),
        );
        last_ops = ops;
    }
    stop.store(true, Ordering::Relaxed);
    let mut models = Vec::new();
    for w in workers {
        match w.join() {
            Ok(m) => models.push(m),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    // Final check: every key holds its last acknowledged value (or expired, for TTL keys).
    let mut checked = 0u64;
    let mut expired = 0u64;
    let mut final_errors = 0u64;
    for (id, model) in models {
        for (k, a) in model {
            let key = format!("soak:{id}:{k}");
            let v = admin.cmd(&[b"GET", key.as_bytes()]);
            let pexp = admin.cmd(&[b"PEXPIRETIME", key.as_bytes()]);
            let now = now_ms();
            let ok = match (&v, &pexp, a.expire) {
                (Ok(R::Bulk(Some(b))), Ok(R::Int(-1)), None) => *b == a.value,
                (Ok(R::Bulk(Some(b))), Ok(R::Int(t)), Some((lo, hi))) => {
                    *b == a.value && (lo..=hi).contains(&(*t as u64))
                }
                (Ok(R::Bulk(None)), Ok(R::Int(-2)), Some((lo, _))) => {
                    expired += 1;
                    lo <= now
                }
                _ => false,
            };
            checked += 1;
            if !ok {
                final_errors += 1;
                if final_errors <= 20 {
                    println!(
                        "final check: {key}: GET {v:?} PEXPIRETIME {pexp:?}, expected {:?} expiring in {:?}",
                        String::from_utf8_lossy(&a.value),
                        a.expire
                    );
                }
            }
        }
    }
    let info = match admin.cmd(&[b"INFO", b"everything"]) {
        Ok(R::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    if !info.is_empty() {
        max_stall = info_field(&info, "stall_ms_max");
    }
    let _ = admin.cmd(&[b"SHUTDOWN"]);
    let _ = child.wait();

    // RSS flatness: warm-up is the first fifth; the windows are a minute (or a tenth of the
    // run, if shorter).
    let warm = secs / 5;
    let win = (secs / 10).clamp(10, 60);
    let max_in = |a: u64, b: u64| {
        samples
            .iter()
            .filter(|(t, _)| *t > a && *t <= b)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    };
    let first = max_in(warm, warm + win);
    let last = max_in(secs.saturating_sub(win), secs);
    let flat = first > 0 && last as f64 <= first as f64 * 1.10;
    let errs = counters.errors.load(Ordering::Relaxed);
    let per_win: Vec<String> = (0..secs.div_ceil(win))
        .map(|i| format!("{}", max_in(i * win, (i + 1) * win) >> 20))
        .collect();
    println!(
        "rss_anon max per {win} s window (MiB): {}",
        per_win.join(", ")
    );
    println!(
        "soak done: ops={} gets={} sets={} errors={errs} final_check={checked} keys ({expired} expired) final_errors={final_errors} stall_ms_max={max_stall} rss_anon first_window_max={}MiB last_window_max={}MiB flat={flat}",
        counters.ops.load(Ordering::Relaxed),
        counters.gets.load(Ordering::Relaxed),
        counters.sets.load(Ordering::Relaxed),
        first >> 20,
        last >> 20,
    );
    for e in errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("error: {e}");
    }
    let ok = errs == 0 && final_errors == 0 && flat;
    std::process::exit(if ok { 0 } else { 1 });
}
