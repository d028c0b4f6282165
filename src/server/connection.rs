//! One client: read → parse every complete command → dispatch → write replies in order.
//!
//! Consecutive writes of a pipeline are collected into one engine write group; a read or any
//! other command that follows waits for that group first, so a client always reads its own
//! writes. Replies are encoded once per batch and written with one flush.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::debug;

use super::commands::{self, e_arity, e_unknown, DataCtx, EngineReader, Handler, Job, WriteFn};
use super::io::Seat;
use super::resp::{Limits, Reply, RequestParser};
use super::{ClientInfo, Shared};
use crate::engine::{Engine, Op, View};

/// Most writes collected into one group before it is sent (bounds memory per connection).
const MAX_GROUP_OPS: usize = 4096;
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// A key watched by WATCH: its version then, and whether it was live then.
#[derive(Debug, Clone)]
pub struct Watched {
    pub key: Bytes,
    pub version: u64,
    pub live: bool,
}

enum Slot {
    Ready(Reply),
    /// The reply of the i-th op of the pending write group.
    Pending(usize),
}

/// Per-connection state.
pub struct Conn {
    pub shared: Arc<Shared>,
    pub info: Arc<Mutex<ClientInfo>>,
    pub id: u64,
    pub authenticated: bool,
    pub proto: u8,
    pub db: u8,
    /// Queued commands while in MULTI.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queueing error happened: EXEC answers EXECABORT.
    pub multi_dirty: bool,
    /// Bytes of the commands queued by MULTI; they count against the query buffer limit.
    multi_bytes: usize,
    pub watched: Vec<Watched>,
    /// Close after this batch's replies are written (QUIT, protocol error, SHUTDOWN).
    pub close: bool,
    ops: Vec<Op<Reply>>,
    ops_bytes: usize,
    slots: Vec<Slot>,
    /// `max_bulk_bytes` as read at the start of the current batch (one config lock per batch,
    /// not one per command).
    max_bulk: u64,
    /// Commands of the current batch, added to the shared counter once per batch.
    batch_cmds: u64,
    /// The last command's name, copied into the shared [`ClientInfo`] (with the activity
    /// time) once per batch and before commands that read it, not once per command.
    last_cmd: &'static str,
    /// Where in the IO pool this connection belongs.
    seat: Option<Seat>,
    /// Dropped with the connection: shutdown waits for every clone.
    _done: mpsc::Sender<()>,
}

/// Why [`Conn::serve`] returned.
enum Exit {
    Closed,
    /// Continue on this loop (between two requests, nothing buffered).
    Move(Handle),
}

/// Serves one client until it disconnects, errs, or the server shuts down. `seat` places it
/// on one of the pool's loops (none: it runs where it is); `done` is dropped when it ends.
pub async fn handle(
    shared: Arc<Shared>,
    sock: TcpStream,
    peer: SocketAddr,
    seat: Option<Seat>,
    done: mpsc::Sender<()>,
) {
    let id = shared.next_client_id();
    let laddr = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let info = Arc::new(Mutex::new(ClientInfo {
        id,
        addr: peer.to_string(),
        laddr,
        name: None,
        db: 0,
        proto: 2,
        created: Instant::now(),
        last_active: Instant::now(),
        last_cmd: "NULL",
        multi: None,
        lib_name: None,
        lib_ver: None,
        io_thread: 0,
    }));
    shared.clients.lock().insert(id, info.clone());
    let conn = Conn {
        shared: shared.clone(),
        info,
        id,
        authenticated: false,
        proto: 2,
        db: 0,
        multi: None,
        multi_dirty: false,
        multi_bytes: 0,
        watched: Vec::new(),
        close: false,
        ops: Vec::new(),
        ops_bytes: 0,
        slots: Vec::new(),
        max_bulk: shared.cfg.read().max_bulk_bytes,
        batch_cmds: 0,
        last_cmd: "NULL",
        seat,
        _done: done,
    };
    run(Box::new(conn), sock).await
}

/// Serves `conn` on this loop until it ends or moves to another loop, where it goes on.
fn run(mut conn: Box<Conn>, mut sock: TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        match conn.serve(&mut sock).await {
            Ok(Exit::Closed) => {}
            Err(e) => debug!(client = conn.id, "connection ended: {e}"),
            Ok(Exit::Move(to)) => {
                let id = conn.id;
                if let Err(e) = super::io::hand_over(sock, &to, move |sock| run(conn, sock)) {
                    debug!(client = id, "cannot move the connection: {e}");
                }
            }
        }
    })
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.publish_batch();
        self.shared.clients.lock().remove(&self.id);
    }
}

impl Conn {
    async fn serve(&mut self, sock: &mut TcpStream) -> std::io::Result<Exit> {
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return Ok(Exit::Closed);
        }
        if let Some(i) = super::io::current_loop() {
            self.info.lock().io_thread = i;
        }
        // One shutdown waiter for the connection's life, not one registered and removed in
        // the watch channel's shared waiter list around every read.
        let mut stop = std::pin::pin!(shutdown.changed());
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut parser = RequestParser::default();
        // (output buffer, bulk, multibulk, query buffer) limits and the config generation
        // they were read at.
        let mut limits = (0usize, 0u64, 0u64, 0usize);
        let mut limits_gen = u64::MAX;
        loop {
            if self.shared.is_shutting_down() {
                return Ok(Exit::Closed);
            }
            // Read first: the stop future is then polled only when no input is ready.
            let n = tokio::select! {
                biased;
                r = sock.read_buf(&mut inbuf) => r?,
                _ = &mut stop => return Ok(Exit::Closed),
            };
            if n == 0 {
                return Ok(Exit::Closed);
            }
            self.shared
                .stats
                .net_input_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            let gen = self.shared.cfg_gen.load(Ordering::Acquire);
            if gen != limits_gen {
                let c = self.shared.cfg.read();
                limits = (
                    c.client_output_buffer_bytes as usize,
                    c.max_bulk_bytes,
                    c.max_multibulk_len,
                    c.query_buffer_bytes as usize,
                );
                limits_gen = gen;
            }
            let (max_out, max_bulk, max_mb, max_query) = limits;
            self.max_bulk = max_bulk;
            loop {
                let lim = Limits {
                    max_bulk,
                    max_multibulk: max_mb,
                    authenticated: self.authenticated,
                };
                match parser.next(&mut inbuf, &lim) {
                    Ok(Some(argv)) => {
                        if argv.is_empty() {
                            continue;
                        }
                        self.dispatch(argv, &mut out).await;
                        if self.multi.is_some() && self.multi_bytes + inbuf.len() > max_query {
                            // Redis' client-query-buffer-limit covers queued MULTI commands.
                            debug!(client = self.id, "query buffer limit reached, closing");
                            self.flush_writes().await;
                            return Ok(Exit::Closed);
                        }
                        if self.ops.is_empty() {
                            self.encode_ready(&mut out);
                        }
                        if out.len() > max_out {
                            // Redis' hard output-buffer limit: drop the client, not the server.
                            debug!(client = self.id, "output buffer limit reached, closing");
                            // Writes already parsed still happen, as they would in Redis.
                            self.flush_writes().await;
                            return Ok(Exit::Closed);
                        }
                        if self.close {
                            break;
                        }
                    }
                    Ok(None) => {
                        if inbuf.len() + parser.buffered_bytes() > max_query {
                            // Redis' client-query-buffer-limit: drop the client silently.
                            debug!(client = self.id, "query buffer limit reached, closing");
                            return Ok(Exit::Closed);
                        }
                        break;
                    }
                    Err(pe) => {
                        self.flush_writes().await;
                        self.slots.push(Slot::Ready(Reply::err(pe.reply_text())));
                        self.close = true;
                        break;
                    }
                }
            }
            self.flush_writes().await;
            self.encode_ready(&mut out);
            self.publish_batch();
            if !out.is_empty() {
                sock.write_all(&out).await?;
                self.shared
                    .stats
                    .net_output_bytes
                    .fetch_add(out.len() as u64, Ordering::Relaxed);
                out.clear();
                if out.capacity() > 1024 * 1024 {
                    out = BytesMut::with_capacity(16 * 1024);
                }
            }
            if self.close {
                let _ = sock.shutdown().await;
                return Ok(Exit::Closed);
            }
            // Between two requests with nothing buffered: the moment to change loops.
            if inbuf.is_empty() && !parser.in_progress() {
                if let Some(to) = self.seat.as_ref().and_then(Seat::move_to) {
                    return Ok(Exit::Move(to));
                }
            }
        }
    }

    /// Publishes this batch's activity (commands counted, last command, time) for INFO and
    /// CLIENT LIST.
    fn publish_batch(&mut self) {
        if self.batch_cmds > 0 {
            let mut info = self.info.lock();
            info.last_active = Instant::now();
            info.last_cmd = self.last_cmd;
            drop(info);
            self.shared
                .stats
                .commands_processed
                .fetch_add(self.batch_cmds, Ordering::Relaxed);
            self.batch_cmds = 0;
        }
    }

    fn encode_ready(&mut self, out: &mut BytesMut) {
        for s in self.slots.drain(..) {
            match s {
                Slot::Ready(r) => r.encode(self.proto, out),
                // Callers flush the write group before encoding.
                Slot::Pending(_) => {
                    Reply::err("ERR internal error: reply not ready").encode(self.proto, out)
                }
            }
        }
    }

    /// Sends the pending write group (if any) and turns its slots into replies.
    pub async fn flush_writes(&mut self) {
        if self.ops.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.ops);
        self.ops_bytes = 0;
        let n = ops.len();
        let res = match self.shared.engine() {
            Some(e) => super::io::write(e, ops).await,
            None => Err(crate::engine::Error::Closed),
        };
        self.shared
            .stats
            .write_groups
            .fetch_add(1, Ordering::Relaxed);
        let mut replies: Vec<Option<Reply>> = match res {
            Ok(r) => r.into_iter().map(Some).collect(),
            Err(e) => (0..n).map(|_| Some(commands::e_engine(&e))).collect(),
        };
        for s in self.slots.iter_mut() {
            if let Slot::Pending(i) = *s {
                let r = replies
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_else(|| Reply::err("ERR internal error: missing reply"));
                *s = Slot::Ready(r);
            }
        }
    }

    fn reply(&mut self, r: Reply) {
        self.slots.push(Slot::Ready(r));
    }

    pub fn data_ctx(&self) -> DataCtx {
        DataCtx {
            now_ms: self.shared.engine().map(|e| e.now_ms()).unwrap_or(0),
            db: self.db,
            max_bulk: self.max_bulk,
        }
    }

    /// The engine, or the reply to give while it is not available.
    pub fn engine(&self) -> Result<Engine, Reply> {
        match self.shared.engine() {
            Some(e) => Ok(e.clone()),
            None => match self.shared.open_error.get() {
                Some(e) => Err(Reply::err(format!("ERR engine failed to open: {e}"))),
                None => Err(Reply::err("LOADING Redis is loading the dataset in memory")),
            },
        }
    }

    async fn dispatch(&mut self, argv: Vec<Bytes>, out: &mut BytesMut) {
        self.batch_cmds += 1;
        let spec = commands::lookup(&argv[0]);
        self.last_cmd = spec.map_or("unknown", |s| s.name);
        let Some(spec) = spec else {
            self.flag_multi_error();
            self.reply(e_unknown(&argv));
            return;
        };
        if !spec.arity_ok(argv.len()) {
            self.flag_multi_error();
            self.reply(e_arity(spec.name));
            return;
        }
        if !self.authenticated && spec.flags & commands::NOAUTH == 0 {
            self.flag_multi_error();
            self.reply(Reply::err("NOAUTH Authentication required."));
            return;
        }
        if self.shared.engine().is_none() && spec.flags & commands::LOADING == 0 {
            self.flag_multi_error();
            let r = match self.engine() {
                Err(r) => r,
                Ok(_) => Reply::err("LOADING Redis is loading the dataset in memory"),
            };
            self.reply(r);
            return;
        }
        if self.multi.is_some() && spec.flags & commands::NOQUEUE == 0 {
            if let Some(q) = self.multi.as_mut() {
                if q.is_empty() {
                    // A new transaction: its queue starts empty.
                    self.multi_bytes = 0;
                }
                self.multi_bytes += argv
                    .iter()
                    .map(|a| a.len() + std::mem::size_of::<Bytes>())
                    .sum::<usize>();
                q.push(argv);
                let n = q.len();
                self.info.lock().multi = Some(n);
            }
            self.reply(Reply::simple("QUEUED"));
            return;
        }
        match spec.handler {
            Handler::Data(f) => {
                let ctx = self.data_ctx();
                let job = f(&ctx, &argv);
                self.run_job(job, &argv, ctx.now_ms).await;
            }
            Handler::Conn => {
                self.flush_writes().await;
                // INFO and friends must see this batch's commands counted.
                self.publish_batch();
                // Earlier replies go out in the protocol they were produced under (HELLO and
                // RESET change it).
                self.encode_ready(out);
                if let Some(r) = self.run_conn(spec.name, &argv).await {
                    self.reply(r);
                }
            }
        }
    }

    fn flag_multi_error(&mut self) {
        if self.multi.is_some() {
            self.multi_dirty = true;
        }
    }

    async fn run_job(&mut self, job: Job, argv: &[Bytes], now_ms: u64) {
        match job {
            Job::Reply(r) => self.reply(r),
            Job::Write(w) => {
                let size: usize = argv.iter().map(|a| a.len() + 16).sum();
                self.push_write(w, size);
                if self.ops.len() >= MAX_GROUP_OPS || self.ops_bytes >= MAX_GROUP_BYTES {
                    self.flush_writes().await;
                }
            }
            Job::Read(f) => {
                // Read-your-writes: the pending group must be applied first. Waiting for it
                // takes time, so the clock is read again after it.
                let waited = !self.ops.is_empty();
                self.flush_writes().await;
                // Borrowed, not cloned: an Arc clone per read is a contended atomic between
                // the worker threads.
                let r = match self.shared.engine() {
                    Some(engine) => {
                        // Otherwise the clock as read for this command's context: one read per
                        // command.
                        let now = if waited { engine.now_ms() } else { now_ms };
                        let mut rd = EngineReader { now, engine };
                        f(&mut rd)
                    }
                    None => match self.engine() {
                        Err(r) => r,
                        Ok(_) => Reply::err("LOADING Redis is loading the dataset in memory"),
                    },
                };
                self.reply(r);
            }
        }
    }

    fn push_write(&mut self, w: WriteFn, size: usize) {
        let idx = self.ops.len();
        self.ops.push(Box::new(move |v: &mut View<'_>| w(v)));
        self.ops_bytes += size;
        self.slots.push(Slot::Pending(idx));
    }

    /// Sends one closure as its own write group and waits for its reply.
    pub async fn write_one(
        &mut self,
        f: impl FnOnce(&mut View<'_>) -> Reply + Send + 'static,
    ) -> Reply {
        self.flush_writes().await;
        let engine = match self.engine() {
            Ok(e) => e,
            Err(r) => return r,
        };
        let op: Op<Reply> = Box::new(f);
        match engine.write_async(vec![op]).await {
            Ok(mut v) => v
                .pop()
                .unwrap_or_else(|| Reply::err("ERR internal error: missing reply")),
            Err(e) => commands::e_engine(&e),
        }
    }

    /// Commands that need the connection or the server.
    pub async fn run_conn(&mut self, name: &str, argv: &[Bytes]) -> Option<Reply> {
        use commands::{agents, connection as c, server as s, tx};
        Some(match name {
            "ping" => c::ping(self, argv),
            "echo" => Reply::Bulk(argv[1].clone()),
            "auth" => c::auth(self, argv),
            "hello" => c::hello(self, argv),
            "reset" => c::reset(self),
            "quit" => {
                self.close = true;
                Reply::ok()
            }
            "select" => c::select(self, argv),
            "client" => c::client(self, argv),
            "info" => s::info(self, argv),
            "config" => s::config(self, argv),
            "command" => s::command(self, argv),
            "flushdb" => s::flush(self, argv, false).await,
            "flushall" => s::flush(self, argv, true).await,
            "save" => s::save(self, false).await,
            "bgsave" => s::save(self, true).await,
            "lastsave" => Reply::Int(self.shared.lastsave.load(Ordering::Relaxed) as i64),
            "time" => s::time(),
            "shutdown" => return s::shutdown(self, argv),
            "dbsize" => s::dbsize(self).await,
            "keys" => s::keys(self, argv).await,
            "scan" => s::scan(self, argv).await,
            "randomkey" => s::randomkey(self).await,
            "agent" => agents::agent(self, argv),
            "multi" => tx::multi(self),
            "exec" => tx::exec(self).await,
            "discard" => tx::discard(self),
            "watch" => tx::watch(self, argv),
            "unwatch" => {
                self.watched.clear();
                Reply::ok()
            }
            _ => e_unknown(argv),
        })
    }
}
