//! The command table and what the families share.
//!
//! Data commands (strings, keys) are written against two small traits, [`Reader`] and
//! [`Store`], so that the same code runs over the engine's write-group [`View`] (writes, EXEC),
//! over a plain engine snapshot (reads outside MULTI), and over an in-memory map in unit tests.
//! Commands that need the connection or the whole server (AUTH, SCAN, FLUSHDB, INFO ...) are
//! marked [`Handler::Conn`] and run by the connection.

pub mod agents;
pub mod connection;
pub mod keys;
pub mod server;
pub mod strings;
pub mod tx;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;

use super::resp::Reply;
use crate::engine::{self, Engine, Value, View};

/// Reads a command may do, inside or outside a write group.
pub trait Reader {
    /// Live (unexpired) value of a full (db-prefixed) key.
    fn get(&mut self, key: &[u8]) -> engine::Result<Option<Value>>;
    fn key_version(&mut self, key: &[u8]) -> engine::Result<u64>;
    fn now_ms(&self) -> u64;
}

/// Writes, only inside a write group (atomic with the group's other operations).
pub trait Store: Reader {
    fn put(&mut self, key: Bytes, value: Bytes, expire_at: Option<u64>);
    fn delete(&mut self, key: Bytes);
}

impl Reader for View<'_> {
    fn get(&mut self, key: &[u8]) -> engine::Result<Option<Value>> {
        View::get(self, key)
    }
    fn key_version(&mut self, key: &[u8]) -> engine::Result<u64> {
        View::key_version(self, key)
    }
    fn now_ms(&self) -> u64 {
        View::now_ms(self)
    }
}

impl Store for View<'_> {
    fn put(&mut self, key: Bytes, value: Bytes, expire_at: Option<u64>) {
        View::put(self, key, value, expire_at)
    }
    fn delete(&mut self, key: Bytes) {
        View::delete(self, key)
    }
}

/// Reads straight from the engine (outside MULTI; the connection has no pending writes).
pub struct EngineReader<'a> {
    pub engine: &'a Engine,
    pub now: u64,
}

impl Reader for EngineReader<'_> {
    fn get(&mut self, key: &[u8]) -> engine::Result<Option<Value>> {
        self.engine.get_at(key, self.now)
    }
    fn key_version(&mut self, key: &[u8]) -> engine::Result<u64> {
        self.engine.key_version(key)
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
}

pub type ReadFn = Box<dyn FnOnce(&mut dyn Reader) -> Reply + Send>;
pub type WriteFn = Box<dyn FnOnce(&mut dyn Store) -> Reply + Send>;

/// What a data command turns into once its arguments are parsed.
pub enum Job {
    /// Answer without touching data (argument errors).
    Reply(Reply),
    Read(ReadFn),
    Write(WriteFn),
}

impl Job {
    pub fn read(f: impl FnOnce(&mut dyn Reader) -> Reply + Send + 'static) -> Job {
        Job::Read(Box::new(f))
    }
    pub fn write(f: impl FnOnce(&mut dyn Store) -> Reply + Send + 'static) -> Job {
        Job::Write(Box::new(f))
    }
}

/// Per-call context of a data command.
#[derive(Debug, Clone, Copy)]
pub struct DataCtx {
    pub db: u8,
    /// Largest string a command may build (APPEND, SETRANGE).
    pub max_bulk: u64,
    /// The engine clock when the command was parsed; only for Redis' overflow checks of
    /// relative expiry times (evaluation uses the view's clock).
    pub now_ms: u64,
}

impl DataCtx {
    /// The engine key: the database index byte, then the user's key.
    pub fn key(&self, user_key: &[u8]) -> Bytes {
        let mut k = Vec::with_capacity(user_key.len() + 1);
        k.push(self.db);
        k.extend_from_slice(user_key);
        Bytes::from(k)
    }
}

pub type DataFn = fn(&DataCtx, &[Bytes]) -> Job;

#[derive(Clone, Copy)]
pub enum Handler {
    Data(DataFn),
    /// Run by the connection (needs connection or server state).
    Conn,
}

pub const WRITE: u32 = 1;
pub const READONLY: u32 = 2;
pub const ADMIN: u32 = 4;
/// Allowed before AUTH.
pub const NOAUTH: u32 = 8;
/// Allowed while the engine is still loading.
pub const LOADING: u32 = 16;
pub const FAST: u32 = 32;
/// Not queued by MULTI (run at once: EXEC, DISCARD, MULTI, WATCH, QUIT, RESET).
pub const NOQUEUE: u32 = 64;

pub struct CommandSpec {
    pub name: &'static str,
    /// Redis convention: N exact, -N at least N (the name counts).
    pub arity: i32,
    pub flags: u32,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub group: &'static str,
    pub summary: &'static str,
    pub handler: Handler,
}

impl CommandSpec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let a = self.arity as i64;
        if a >= 0 {
            argc == a
        } else {
            argc >= -a
        }
    }
    pub fn is_write(&self) -> bool {
        self.flags & WRITE != 0
    }

    /// Flag names as COMMAND INFO shows them.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.flags & WRITE != 0 {
            v.push("write");
        }
        if self.flags & READONLY != 0 {
            v.push("readonly");
        }
        if self.flags & ADMIN != 0 {
            v.push("admin");
        }
        if self.flags & NOAUTH != 0 {
            v.push("no_auth");
        }
        if self.flags & LOADING != 0 {
            v.push("loading");
        }
        if self.flags & FAST != 0 {
            v.push("fast");
        }
        v
    }
}

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, ($f:expr, $l:expr, $s:expr), $group:literal, $summary:literal, $h:expr) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            group: $group,
            summary: $summary,
            handler: $h,
        }
    };
}

use Handler::{Conn, Data};

/// Every command the server knows.
pub static COMMANDS: &[CommandSpec] = &[
    // strings
    cmd!(
        "get",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "string",
        "Get the value of a key",
        Data(strings::get)
    ),
    cmd!(
        "set",
        -3,
        WRITE,
        (1, 1, 1),
        "string",
        "Set the string value of a key",
        Data(strings::set)
    ),
    cmd!(
        "getdel",
        2,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Get the value of a key and delete the key",
        Data(strings::getdel)
    ),
    cmd!(
        "getex",
        -2,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Get the value of a key and optionally set its expiration",
        Data(strings::getex)
    ),
    cmd!(
        "getset",
        3,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Set the string value of a key and return its old value",
        Data(strings::getset)
    ),
    cmd!(
        "setnx",
        3,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Set the value of a key, only if the key does not exist",
        Data(strings::setnx)
    ),
    cmd!(
        "setex",
        4,
        WRITE,
        (1, 1, 1),
        "string",
        "Set the value and expiration of a key",
        Data(strings::setex)
    ),
    cmd!(
        "psetex",
        4,
        WRITE,
        (1, 1, 1),
        "string",
        "Set the value and expiration in milliseconds of a key",
        Data(strings::psetex)
    ),
    cmd!(
        "mget",
        -2,
        READONLY | FAST,
        (1, -1, 1),
        "string",
        "Get the values of all the given keys",
        Data(strings::mget)
    ),
    cmd!(
        "mset",
        -3,
        WRITE,
        (1, -1, 2),
        "string",
        "Set multiple keys to multiple values",
        Data(strings::mset)
    ),
    cmd!(
        "msetnx",
        -3,
        WRITE,
        (1, -1, 2),
        "string",
        "Set multiple keys to multiple values, only if none of the keys exist",
        Data(strings::msetnx)
    ),
    cmd!(
        "incr",
        2,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Increment the integer value of a key by one",
        Data(strings::incr)
    ),
    cmd!(
        "decr",
        2,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Decrement the integer value of a key by one",
        Data(strings::decr)
    ),
    cmd!(
        "incrby",
        3,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Increment the integer value of a key by the given amount",
        Data(strings::incrby)
    ),
    cmd!(
        "decrby",
        3,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Decrement the integer value of a key by the given number",
        Data(strings::decrby)
    ),
    cmd!(
        "incrbyfloat",
        3,
        WRITE | FAST,
        (1, 1, 1),
        "string",
        "Increment the float value of a key by the given amount",
        Data(strings::incrbyfloat)
    ),
    cmd!(
        "append",
        3,
        WRITE,
        (1, 1, 1),
        "string",
        "Append a value to a key",
        Data(strings::append)
    ),
    cmd!(
        "strlen",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "string",
        "Get the length of the value stored in a key",
        Data(strings::strlen)
    ),
    cmd!(
        "getrange",
        4,
        READONLY,
        (1, 1, 1),
        "string",
        "Get a substring of the string stored at a key",
        Data(strings::getrange)
    ),
    cmd!(
        "substr",
        4,
        READONLY,
        (1, 1, 1),
        "string",
        "Get a substring of the string stored at a key",
        Data(strings::getrange)
    ),
    cmd!(
        "setrange",
        4,
        WRITE,
        (1, 1, 1),
        "string",
        "Overwrite part of a string at key starting at the specified offset",
        Data(strings::setrange)
    ),
    // keys
    cmd!(
        "del",
        -2,
        WRITE,
        (1, -1, 1),
        "generic",
        "Delete a key",
        Data(keys::del)
    ),
    cmd!(
        "unlink",
        -2,
        WRITE | FAST,
        (1, -1, 1),
        "generic",
        "Delete a key asynchronously",
        Data(keys::del)
    ),
    cmd!(
        "exists",
        -2,
        READONLY | FAST,
        (1, -1, 1),
        "generic",
        "Determine if a key exists",
        Data(keys::exists)
    ),
    cmd!(
        "type",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "generic",
        "Determine the type stored at key",
        Data(keys::type_)
    ),
    cmd!(
        "expire",
        -3,
        WRITE | FAST,
        (1, 1, 1),
        "generic",
        "Set a key's time to live in seconds",
        Data(keys::expire)
    ),
    cmd!(
        "pexpire",
        -3,
        WRITE | FAST,
        (1, 1, 1),
        "generic",
        "Set a key's time to live in milliseconds",
        Data(keys::pexpire)
    ),
    cmd!(
        "expireat",
        -3,
        WRITE | FAST,
        (1, 1, 1),
        "generic",
        "Set the expiration for a key as a UNIX timestamp",
        Data(keys::expireat)
    ),
    cmd!(
        "pexpireat",
        -3,
        WRITE | FAST,
        (1, 1, 1),
        "generic",
        "Set the expiration for a key as a UNIX timestamp specified in milliseconds",
        Data(keys::pexpireat)
    ),
    cmd!(
        "ttl",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "generic",
        "Get the time to live for a key in seconds",
        Data(keys::ttl)
    ),
    cmd!(
        "pttl",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "generic",
        "Get the time to live for a key in milliseconds",
        Data(keys::pttl)
    ),
    cmd!(
        "expiretime",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "generic",
        "Get the expiration Unix timestamp for a key",
        Data(keys::expiretime)
    ),
    cmd!(
        "pexpiretime",
        2,
        READONLY | FAST,
        (1, 1, 1),
        "generic",
        "Get the expiration Unix timestamp for a key in milliseconds",
        Data(keys::pexpiretime)
    ),
    cmd!(
        "persist",
        2,
        WRITE | FAST,
        (1, 1, 1),
        "generic",
        "Remove the expiration from a key",
        Data(keys::persist)
    ),
    cmd!(
        "rename",
        3,
        WRITE,
        (1, 2, 1),
        "generic",
        "Rename a key",
        Data(keys::rename)
    ),
    cmd!(
        "renamenx",
        3,
        WRITE | FAST,
        (1, 2, 1),
        "generic",
        "Rename a key, only if the new key does not exist",
        Data(keys::renamenx)
    ),
    cmd!(
        "keys",
        2,
        READONLY,
        (0, 0, 0),
        "generic",
        "Find all keys matching the given pattern",
        Conn
    ),
    cmd!(
        "scan",
        -2,
        READONLY,
        (0, 0, 0),
        "generic",
        "Incrementally iterate the keys space",
        Conn
    ),
    cmd!(
        "randomkey",
        1,
        READONLY,
        (0, 0, 0),
        "generic",
        "Return a random key from the keyspace",
        Conn
    ),
    cmd!(
        "dbsize",
        1,
        READONLY | FAST,
        (0, 0, 0),
        "server",
        "Return the number of keys in the selected database",
        Conn
    ),
    // connection
    cmd!(
        "ping",
        -1,
        FAST,
        (0, 0, 0),
        "connection",
        "Ping the server",
        Conn
    ),
    cmd!(
        "echo",
        2,
        FAST,
        (0, 0, 0),
        "connection",
        "Echo the given string",
        Conn
    ),
    cmd!(
        "auth",
        -2,
        NOAUTH | LOADING | FAST,
        (0, 0, 0),
        "connection",
        "Authenticate to the server",
        Conn
    ),
    cmd!(
        "hello",
        -1,
        NOAUTH | LOADING | FAST,
        (0, 0, 0),
        "connection",
        "Handshake with Redis",
        Conn
    ),
    cmd!(
        "reset",
        1,
        NOAUTH | LOADING | FAST | NOQUEUE,
        (0, 0, 0),
        "connection",
        "Reset the connection",
        Conn
    ),
    cmd!(
        "quit",
        -1,
        NOAUTH | LOADING | FAST | NOQUEUE,
        (0, 0, 0),
        "connection",
        "Close the connection",
        Conn
    ),
    cmd!(
        "select",
        2,
        LOADING | FAST,
        (0, 0, 0),
        "connection",
        "Change the selected database for the current connection",
        Conn
    ),
    cmd!(
        "client",
        -2,
        LOADING,
        (0, 0, 0),
        "connection",
        "A container for client connection commands",
        Conn
    ),
    // server
    cmd!(
        "info",
        -1,
        LOADING,
        (0, 0, 0),
        "server",
        "Get information and statistics about the server",
        Conn
    ),
    cmd!(
        "config",
        -2,
        ADMIN | LOADING,
        (0, 0, 0),
        "server",
        "A container for server configuration commands",
        Conn
    ),
    cmd!(
        "command",
        -1,
        LOADING,
        (0, 0, 0),
        "server",
        "Get array of Redis command details",
        Conn
    ),
    cmd!(
        "flushdb",
        -1,
        WRITE,
        (0, 0, 0),
        "server",
        "Remove all keys from the current database",
        Conn
    ),
    cmd!(
        "flushall",
        -1,
        WRITE,
        (0, 0, 0),
        "server",
        "Remove all keys from all databases",
        Conn
    ),
    cmd!(
        "save",
        1,
        ADMIN,
        (0, 0, 0),
        "server",
        "Synchronously save the dataset to disk",
        Conn
    ),
    cmd!(
        "bgsave",
        -1,
        ADMIN,
        (0, 0, 0),
        "server",
        "Asynchronously save the dataset to disk",
        Conn
    ),
    cmd!(
        "lastsave",
        1,
        LOADING | FAST,
        (0, 0, 0),
        "server",
        "Get the UNIX time stamp of the last successful save to disk",
        Conn
    ),
    cmd!(
        "time",
        1,
        LOADING | FAST,
        (0, 0, 0),
        "server",
        "Return the current server time",
        Conn
    ),
    cmd!(
        "shutdown",
        -1,
        ADMIN | LOADING,
        (0, 0, 0),
        "server",
        "Synchronously save the dataset to disk and then shut down the server",
        Conn
    ),
    cmd!(
        "agent",
        -2,
        ADMIN | LOADING,
        (0, 0, 0),
        "server",
        "List, inspect and configure the engine's agents (sndv-kv)",
        Conn
    ),
    // transactions
    cmd!(
        "multi",
        1,
        LOADING | FAST | NOQUEUE,
        (0, 0, 0),
        "transactions",
        "Mark the start of a transaction block",
        Conn
    ),
    cmd!(
        "exec",
        1,
        NOQUEUE,
        (0, 0, 0),
        "transactions",
        "Execute all commands issued after MULTI",
        Conn
    ),
    cmd!(
        "discard",
        1,
        LOADING | FAST | NOQUEUE,
        (0, 0, 0),
        "transactions",
        "Discard all commands issued after MULTI",
        Conn
    ),
    cmd!(
        "watch",
        -2,
        LOADING | FAST | NOQUEUE,
        (1, -1, 1),
        "transactions",
        "Watch the given keys to determine execution of the MULTI/EXEC block",
        Conn
    ),
    cmd!(
        "unwatch",
        1,
        LOADING | FAST | NOQUEUE,
        (0, 0, 0),
        "transactions",
        "Forget about all watched keys",
        Conn
    ),
];

/// Finds a command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    static MAP: OnceLock<HashMap<&'static str, &'static CommandSpec>> = OnceLock::new();
    let map = MAP.get_or_init(|| COMMANDS.iter().map(|c| (c.name, c)).collect());
    if name.len() > 32 {
        return None;
    }
    // Lower-cased on the stack: this runs for every command.
    let mut buf = [0u8; 32];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    map.get(std::str::from_utf8(lower).ok()?).copied()
}

// ---- shared replies and argument parsing ----

pub fn e_syntax() -> Reply {
    Reply::err("ERR syntax error")
}
pub fn e_int() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}
pub fn e_float() -> Reply {
    Reply::err("ERR value is not a valid float")
}
pub fn e_arity(name: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}
pub fn e_engine(e: &engine::Error) -> Reply {
    match e {
        engine::Error::NoSpace { .. } => Reply::err(format!("ERR write failed: {e}")),
        engine::Error::Closed => Reply::err("ERR server is shutting down"),
        _ => Reply::err(format!("ERR {e}")),
    }
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` exactly as Redis builds it.
pub fn e_unknown(argv: &[Bytes]) -> Reply {
    let mut args = String::new();
    for a in argv.iter().skip(1) {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        let s = String::from_utf8_lossy(a);
        let cut: String = s.chars().take(room).collect();
        args.push_str(&format!("'{cut}' "));
    }
    let name = String::from_utf8_lossy(&argv[0]);
    let name: String = name.chars().take(128).collect();
    Reply::err(format!(
        "ERR unknown command '{name}', with args beginning with: {args}"
    ))
}

/// `ERR unknown subcommand 'x'. Try CLIENT HELP.`
pub fn e_subcommand(cmd: &str, sub: &[u8]) -> Reply {
    let sub: String = String::from_utf8_lossy(sub).chars().take(128).collect();
    Reply::err(format!(
        "ERR unknown subcommand '{sub}'. Try {} HELP.",
        cmd.to_ascii_uppercase()
    ))
}

/// Redis' strict integer syntax (string2ll): optional '-', no '+', no spaces, no leading zeros.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if b == b"-0" {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Redis' float syntax for INCRBYFLOAT: no spaces, no NaN.
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.len() > 5000 || s.starts_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

pub fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Evaluates an engine call inside a command, turning its error into the reply.
#[macro_export]
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::server::commands::e_engine(&e),
        }
    };
}

/// Redis glob matching (stringmatchlen): `*`, `?`, `[a-z]`, `[^x]`, `\x`.
pub fn glob_match(pat: &[u8], s: &[u8], nocase: bool) -> bool {
    fn lower(c: u8, nocase: bool) -> u8 {
        if nocase {
            c.to_ascii_lowercase()
        } else {
            c
        }
    }
    fn inner(p: &[u8], s: &[u8], nocase: bool, depth: usize) -> bool {
        if depth > 1000 {
            return false;
        }
        let (mut pi, mut si) = (0, 0);
        while pi < p.len() {
            match p[pi] {
                b'*' => {
                    while pi + 1 < p.len() && p[pi + 1] == b'*' {
                        pi += 1;
                    }
                    if pi + 1 == p.len() {
                        return true;
                    }
                    for start in si..=s.len() {
                        if inner(&p[pi + 1..], &s[start..], nocase, depth + 1) {
                            return true;
                        }
                    }
                    return false;
                }
                b'?' => {
                    if si >= s.len() {
                        return false;
                    }
                    si += 1;
                }
                b'[' => {
                    if si >= s.len() {
                        return false;
                    }
                    pi += 1;
                    let not = pi < p.len() && p[pi] == b'^';
                    if not {
                        pi += 1;
                    }
                    let mut matched = false;
                    loop {
                        if pi >= p.len() {
                            // Unterminated class: Redis treats the end as closing it.
                            pi -= 1;
                            break;
                        }
                        if p[pi] == b'\\' && pi + 2 < p.len() {
                            pi += 1;
                            if p[pi] == s[si] {
                                matched = true;
                            }
                        } else if p[pi] == b']' {
                            break;
                        } else if pi + 2 < p.len() && p[pi + 1] == b'-' {
                            let (mut a, mut b) = (lower(p[pi], nocase), lower(p[pi + 2], nocase));
                            if a > b {
                                std::mem::swap(&mut a, &mut b);
                            }
                            let c = lower(s[si], nocase);
                            if c >= a && c <= b {
                                matched = true;
                            }
                            pi += 2;
                        } else if lower(p[pi], nocase) == lower(s[si], nocase) {
                            matched = true;
                        }
                        pi += 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    si += 1;
                }
                b'\\' if pi + 1 < p.len() => {
                    pi += 1;
                    if si >= s.len() || lower(p[pi], nocase) != lower(s[si], nocase) {
                        return false;
                    }
                    si += 1;
                }
                c => {
                    if si >= s.len() || lower(c, nocase) != lower(s[si], nocase) {
                        return false;
                    }
                    si += 1;
                }
            }
            pi += 1;
        }
        si == s.len()
    }
    inner(pat, s, nocase, 0)
}

#[cfg(test)]
pub mod mem {
    //! An in-memory [`Store`] for unit tests of command logic.
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct MemStore {
        pub map: BTreeMap<Vec<u8>, (Bytes, Option<u64>, u64)>,
        pub now: u64,
        pub seq: u64,
    }

    impl Reader for MemStore {
        fn get(&mut self, key: &[u8]) -> engine::Result<Option<Value>> {
            Ok(self.map.get(key).and_then(|(d, exp, seq)| {
                if exp.is_some_and(|e| e <= self.now) {
                    None
                } else {
                    Some(Value {
                        data: d.clone(),
                        expire_at: *exp,
                        seqno: *seq,
                        type_tag: 0,
                    })
                }
            }))
        }
        fn key_version(&mut self, key: &[u8]) -> engine::Result<u64> {
            Ok(self.map.get(key).map(|v| v.2).unwrap_or(0))
        }
        fn now_ms(&self) -> u64 {
            self.now
        }
    }

    impl Store for MemStore {
        fn put(&mut self, key: Bytes, value: Bytes, expire_at: Option<u64>) {
            self.seq += 1;
            self.map.insert(key.to_vec(), (value, expire_at, self.seq));
        }
        fn delete(&mut self, key: Bytes) {
            self.map.remove(key.as_ref());
        }
    }

    /// Runs one command line over the store, as EXEC would.
    pub fn run(st: &mut MemStore, line: &str) -> Reply {
        let argv: Vec<Bytes> = line
            .split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        let Some(spec) = lookup(&argv[0]) else {
            return e_unknown(&argv);
        };
        if !spec.arity_ok(argv.len()) {
            return e_arity(spec.name);
        }
        let Handler::Data(f) = spec.handler else {
            panic!("not a data command: {line}");
        };
        let ctx = DataCtx {
            db: 0,
            max_bulk: 512 * 1024 * 1024,
            now_ms: st.now,
        };
        match f(&ctx, &argv) {
            Job::Reply(r) => r,
            Job::Read(f) => f(st),
            Job::Write(f) => f(st),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints() {
        assert_eq!(parse_i64(b"12"), Some(12));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"0"), Some(0));
        for bad in [
            &b"+1"[..],
            b" 1",
            b"01",
            b"-0",
            b"",
            b"1.0",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"anything", false));
        assert!(glob_match(b"h?llo", b"hello", false));
        assert!(glob_match(b"h[ae]llo", b"hallo", false));
        assert!(!glob_match(b"h[^e]llo", b"hello", false));
        assert!(glob_match(b"h[a-b]llo", b"hbllo", false));
        assert!(glob_match(b"key:*:x", b"key:12:x", false));
        assert!(!glob_match(b"key:*:x", b"key:12:y", false));
        assert!(glob_match(b"a\\*b", b"a*b", false));
        assert!(!glob_match(b"a\\*b", b"axb", false));
        assert!(glob_match(b"HELLO", b"hello", true));
    }

    #[test]
    fn unknown_text() {
        let r = e_unknown(&[Bytes::from("foo"), Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(
            r,
            Reply::err("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
    }

    #[test]
    fn table_names_are_lowercase_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(seen.insert(c.name), "duplicate {}", c.name);
        }
        assert!(lookup(b"GeT").is_some());
    }
}
