//! The Redis face: listener, limits, graceful shutdown, and the state all connections share.

pub mod adapt;
pub mod auth;
pub mod commands;
pub mod connection;
pub mod io;
pub mod resp;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::Counter;
use crate::engine::{Engine, FsStorage, Storage, SystemClock};

/// Server-wide counters shown by INFO.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: Counter,
    pub commands_processed: Counter,
    pub rejected_connections: Counter,
    pub net_input_bytes: Counter,
    pub net_output_bytes: Counter,
    pub write_groups: Counter,
}

/// What CLIENT LIST / CLIENT INFO show about one connection (never the token).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub name: Option<Bytes>,
    pub db: u8,
    pub proto: u8,
    pub created: Instant,
    pub last_active: Instant,
    pub last_cmd: &'static str,
    pub multi: Option<usize>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// The event loop serving it.
    pub io_thread: usize,
}

impl ClientInfo {
    /// One CLIENT LIST line (without the trailing newline), in Redis' field order.
    pub fn line(&self) -> String {
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={} io-thread={}",
            self.id,
            self.addr,
            self.laddr,
            lossy(&self.name),
            self.created.elapsed().as_secs(),
            self.last_active.elapsed().as_secs(),
            if self.multi.is_some() { "x" } else { "N" },
            self.db,
            self.multi.map(|n| n as i64).unwrap_or(-1),
            self.last_cmd,
            self.proto,
            lossy(&self.lib_name),
            lossy(&self.lib_ver),
            self.io_thread,
        )
    }
}

/// A client-set name or library field as CLIENT LIST shows it (empty when unset).
fn lossy(b: &Option<Bytes>) -> std::borrow::Cow<'_, str> {
    b.as_deref().map_or("".into(), String::from_utf8_lossy)
}

/// SCAN cursors: a bounded, server-wide map from cursor number to the key to resume after,
/// so a client pool may continue a scan on another connection.
#[derive(Debug, Default)]
pub struct CursorTable {
    map: HashMap<u64, (u8, Bytes)>,
    order: VecDeque<u64>,
}

/// Most cursors kept; the oldest is forgotten first.
pub const MAX_CURSORS: usize = 16_384;

impl CursorTable {
    /// Stores a resume point and returns its new, non-zero cursor.
    pub fn insert(&mut self, db: u8, resume_after: Bytes) -> u64 {
        let mut id: u64 = rand::random();
        while id == 0 || self.map.contains_key(&id) {
            id = rand::random();
        }
        // Cursors are opaque, but keep them below 2^63 for clients that parse signed.
        id &= i64::MAX as u64;
        if id == 0 {
            id = 1;
        }
        if self.map.len() >= MAX_CURSORS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.map.insert(id, (db, resume_after));
        self.order.push_back(id);
        id
    }

    /// The resume key of `cursor` in `db`, if the cursor is known. It stays valid (a client
    /// may retry a lost reply); eviction bounds the table.
    pub fn get(&self, db: u8, cursor: u64) -> Option<Bytes> {
        match self.map.get(&cursor) {
            Some((d, k)) if *d == db => Some(k.clone()),
            _ => None,
        }
    }
}

/// State shared by every connection.
pub struct Shared {
    /// Change it with [`Shared::set_config`], which tells the connections.
    pub cfg: RwLock<Config>,
    /// Bumped on every config change: connections keep their copy of the limits until it moves
    /// (a plain load per batch instead of a lock shared by every connection).
    pub cfg_gen: AtomicU64,
    pub token: auth::Token,
    engine: OnceLock<Engine>,
    /// Set when the engine failed to open: commands answer this error.
    pub open_error: OnceLock<String>,
    pub shutdown: watch::Sender<bool>,
    pub clients: Mutex<BTreeMap<u64, Arc<Mutex<ClientInfo>>>>,
    next_client_id: AtomicU64,
    pub cursors: Mutex<CursorTable>,
    pub stats: Stats,
    pub started: Instant,
    pub lastsave: AtomicU64,
    pub bgsave_running: AtomicBool,
    pub run_id: String,
    pub port: u16,
    /// The event loops, when connections run on a pool of more than one.
    pub loops: OnceLock<Arc<io::Loops>>,
}

impl Shared {
    pub fn new(cfg: Config, token: auth::Token) -> Shared {
        let (tx, _rx) = watch::channel(false);
        let run_id: String = (0..40)
            .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap_or('0'))
            .collect();
        let port = cfg.port;
        Shared {
            cfg: RwLock::new(cfg),
            cfg_gen: AtomicU64::new(0),
            token,
            engine: OnceLock::new(),
            open_error: OnceLock::new(),
            shutdown: tx,
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            cursors: Mutex::new(CursorTable::default()),
            stats: Stats::default(),
            started: Instant::now(),
            lastsave: AtomicU64::new(unix_secs()),
            bgsave_running: AtomicBool::new(false),
            run_id,
            port,
            loops: OnceLock::new(),
        }
    }

    /// Replaces the config and tells the connections (they re-read their limits).
    pub fn set_config(&self, cfg: Config) {
        *self.cfg.write() = cfg;
        self.cfg_gen.fetch_add(1, Ordering::Release);
    }

    /// The engine once it is open; `None` while loading.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.get()
    }

    pub fn set_engine(&self, e: Engine) {
        let _ = self.engine.set(e);
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn trigger_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the server until SIGINT/SIGTERM or SHUTDOWN, then closes the engine.
pub async fn run(cfg: Config, token: auth::Token) -> Result<(), String> {
    let addr = format!("{}:{}", cfg.bind, cfg.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    info!("listening on {addr}");
    serve(listener, cfg, token).await
}

/// Serves on an already bound listener (tests bind port 0 themselves) until SIGINT/SIGTERM or
/// SHUTDOWN.
pub async fn serve(listener: TcpListener, cfg: Config, token: auth::Token) -> Result<(), String> {
    serve_inner(
        listener,
        cfg,
        token,
        Arc::new(FsStorage),
        Box::pin(wait_for_signal()),
    )
    .await
}

/// Runs the server in-process over `storage` on an already bound listener until `stop`
/// completes or a client sends SHUTDOWN. No OS signal handler is installed, so a test process
/// can run several servers and keep its own signal handling. This is how tests put the server
/// over a fault-injecting storage; the binary never does (faults are not a runtime option).
pub async fn run_with_storage(
    listener: TcpListener,
    cfg: Config,
    token: auth::Token,
    storage: Arc<dyn Storage>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let stop = async move {
        stop.await;
        "stop request"
    };
    serve_inner(listener, cfg, token, storage, Box::pin(stop)).await
}

type StopFuture = std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>;

async fn serve_inner(
    listener: TcpListener,
    cfg: Config,
    token: auth::Token,
    storage: Arc<dyn Storage>,
    signals: StopFuture,
) -> Result<(), String> {
    let mut cfg = cfg;
    // INFO reports the port actually bound (tests bind port 0).
    if let Ok(a) = listener.local_addr() {
        cfg.port = a.port();
    }
    let dir = cfg.dir.clone();
    let ecfg = cfg.engine_config();
    let shared = Arc::new(Shared::new(cfg, token));
    // Subscribed before the engine opens: a receiver created later would count a shutdown
    // already triggered (e.g. a failed open: the data dir is locked) as seen, and never exit.
    let mut shutdown_rx = shared.shutdown.subscribe();

    // Open (recover) the engine in the background; until then commands answer -LOADING.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let res = tokio::task::spawn_blocking(move || {
                Engine::open_with(&dir, ecfg, storage, Arc::new(SystemClock))
            })
            .await;
            match res {
                Ok(Ok(engine)) => {
                    info!("engine ready in {} ms", t0.elapsed().as_millis());
                    shared.set_engine(engine);
                }
                Ok(Err(e)) => {
                    error!("cannot open the engine: {e}");
                    let _ = shared.open_error.set(e.to_string());
                    shared.trigger_shutdown();
                }
                Err(e) => {
                    error!("engine open task failed: {e}");
                    let _ = shared.open_error.set(e.to_string());
                    shared.trigger_shutdown();
                }
            }
        });
    }

    // Connections run on their own event-loop threads (see io.rs); 0 threads: on this runtime.
    let (io_threads, io_loops) = {
        let c = shared.cfg.read();
        (c.io_threads as usize, c.io_loops as usize)
    };
    let pool = match io_threads {
        0 => None,
        n => Some(
            io::IoPool::start(n, io_loops.max(1))
                .map_err(|e| format!("cannot start the IO threads: {e}"))?,
        ),
    };
    let tuner = pool.as_ref().filter(|p| p.loops().count() > 1).map(|p| {
        let loops = p.loops().clone();
        let _ = shared.loops.set(loops.clone());
        let (s1, s2) = (shared.clone(), shared.clone());
        tokio::spawn(io::tune(
            loops,
            move || s1.stats.commands_processed.load(Ordering::Relaxed),
            move || match s2.cfg.read().io_loops {
                0 => None,
                n => Some(n as usize),
            },
        ))
    });

    // Every connection holds a clone; when all are dropped, all connections have finished.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut signals = signals;

    loop {
        tokio::select! {
            res = listener.accept() => {
                let (sock, peer) = match res {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                accept_one(&shared, pool.as_ref(), sock, peer, done_tx.clone());
            }
            _ = shutdown_rx.changed() => {
                info!("shutdown requested");
                break;
            }
            sig = &mut signals => {
                info!("received {sig}, shutting down");
                shared.trigger_shutdown();
                break;
            }
        }
    }

    // Stop accepting, let connections finish their in-flight commands, then close the engine.
    drop(listener);
    if let Some(t) = tuner {
        t.abort();
    }
    drop(done_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), done_rx.recv()).await;
    if let Some(pool) = pool {
        let _ = tokio::task::spawn_blocking(move || pool.shutdown()).await;
    }
    if let Some(engine) = shared.engine() {
        let engine = engine.clone();
        match tokio::task::spawn_blocking(move || engine.close()).await {
            Ok(Ok(())) => info!("engine closed"),
            Ok(Err(e)) => error!("engine close failed: {e}"),
            Err(e) => error!("engine close task failed: {e}"),
        }
    }
    match shared.open_error.get() {
        Some(e) => Err(format!("engine failed to open: {e}")),
        None => Ok(()),
    }
}

fn accept_one(
    shared: &Arc<Shared>,
    pool: Option<&io::IoPool>,
    mut sock: tokio::net::TcpStream,
    peer: SocketAddr,
    done: mpsc::Sender<()>,
) {
    shared
        .stats
        .connections_received
        .fetch_add(1, Ordering::Relaxed);
    let _ = sock.set_nodelay(true);
    let max = shared.cfg.read().maxclients as usize;
    if shared.clients.lock().len() >= max {
        shared
            .stats
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = sock
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            let _ = sock.shutdown().await;
        });
        return;
    }
    let shared = shared.clone();
    let Some(pool) = pool else {
        tokio::spawn(connection::handle(shared, sock, peer, None, done));
        return;
    };
    let (seat, handle) = pool.loops().seat();
    let moved = io::hand_over(sock, handle, move |sock| {
        connection::handle(shared, sock, peer, Some(seat), done)
    });
    if let Err(e) = moved {
        warn!("cannot hand the connection to an IO thread: {e}");
    }
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Before the engine is open, data commands answer -LOADING while AUTH, INFO and friends
    /// work.
    #[tokio::test]
    async fn loading_until_engine_is_open() {
        let shared = Arc::new(Shared::new(
            Config::default(),
            auth::Token::new(b"t".to_vec()),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let s2 = shared.clone();
        tokio::spawn(async move {
            let (sock, peer) = listener.accept().await.expect("accept");
            let (done, _) = mpsc::channel(1);
            connection::handle(s2, sock, peer, None, done).await;
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET k\r\nAUTH t\r\nPING\r\nGET k\r\nINFO persistence\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("loading:1") {
            let n = c.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with(
            "-NOAUTH Authentication required.\r\n+OK\r\n-LOADING Redis is loading the dataset in memory\r\n-LOADING Redis is loading the dataset in memory\r\n$"
        ), "{text}");
    }

    #[test]
    fn cursor_table_is_bounded() {
        let mut t = CursorTable::default();
        let first = t.insert(0, Bytes::from_static(b"a"));
        assert_eq!(t.get(0, first), Some(Bytes::from_static(b"a")));
        assert_eq!(t.get(1, first), None);
        for _ in 0..MAX_CURSORS {
            t.insert(0, Bytes::from_static(b"b"));
        }
        assert_eq!(t.get(0, first), None);
        assert!(t.map.len() <= MAX_CURSORS);
    }
}
