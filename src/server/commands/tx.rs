//! MULTI / EXEC / DISCARD / WATCH.
//!
//! EXEC turns the queue into one closure evaluated by the ingest agent over its view: it first
//! checks the WATCHed keys, then runs each queued command in order, each producing its own
//! reply (a runtime error does not undo the others). Commands that iterate the keyspace or
//! talk to the server (SCAN, FLUSHDB, CLIENT ...) cannot run inside the view; when the queue
//! holds some, the data commands between them are sent as separate groups, in order.

use bytes::Bytes;

use super::{e_arity, e_int, lookup, parse_i64, DataCtx, Handler, Job, Reader, Store};
use crate::server::connection::{Conn, Watched};
use crate::server::resp::Reply;

pub fn multi(c: &mut Conn) -> Reply {
    if c.multi.is_some() {
        return Reply::err("ERR MULTI calls can not be nested");
    }
    c.multi = Some(Vec::new());
    c.multi_dirty = false;
    c.info.lock().multi = Some(0);
    Reply::ok()
}

pub fn discard(c: &mut Conn) -> Reply {
    if c.multi.is_none() {
        return Reply::err("ERR DISCARD without MULTI");
    }
    c.multi = None;
    c.multi_dirty = false;
    c.watched.clear();
    c.info.lock().multi = None;
    Reply::ok()
}

pub fn watch(c: &mut Conn, a: &[Bytes]) -> Reply {
    if c.multi.is_some() {
        return Reply::err("ERR WATCH inside MULTI is not allowed");
    }
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let ctx = c.data_ctx();
    for k in &a[1..] {
        let key = ctx.key(k);
        if c.watched.iter().any(|w| w.key == key) {
            continue;
        }
        let version = match engine.key_version(&key) {
            Ok(v) => v,
            Err(e) => return super::e_engine(&e),
        };
        let live = match engine.get(&key) {
            Ok(v) => v.is_some(),
            Err(e) => return super::e_engine(&e),
        };
        c.watched.push(Watched { key, version, live });
    }
    Reply::ok()
}

/// One queued command, prepared for the view or for the connection.
enum Item {
    Ready(Reply),
    Read(super::ReadFn),
    Write(super::WriteFn),
}

enum Segment {
    Data(Vec<Item>),
    Conn(Vec<Bytes>),
}

/// Evaluated inside the ingest agent: WATCH check, then every item in order.
fn run_items(st: &mut dyn Store, watched: &[Watched], items: Vec<Item>) -> Reply {
    for w in watched {
        let changed = match st.key_version(&w.key) {
            Ok(v) => v != w.version,
            Err(e) => return super::e_engine(&e),
        };
        // A key that was live at WATCH and has expired since counts as modified.
        let expired = w.live
            && match st.get(&w.key) {
                Ok(v) => v.is_none(),
                Err(e) => return super::e_engine(&e),
            };
        if changed || expired {
            return Reply::NilArray;
        }
    }
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        out.push(match it {
            Item::Ready(r) => r,
            Item::Read(f) => f(st as &mut dyn Reader),
            Item::Write(f) => f(st),
        });
    }
    Reply::Array(out)
}

pub async fn exec(c: &mut Conn) -> Reply {
    let Some(queue) = c.multi.take() else {
        return Reply::err("ERR EXEC without MULTI");
    };
    let dirty = std::mem::replace(&mut c.multi_dirty, false);
    let mut watched = std::mem::take(&mut c.watched);
    c.info.lock().multi = None;
    if dirty {
        return Reply::err("EXECABORT Transaction discarded because of previous errors.");
    }

    // Split the queue into view-evaluable runs and connection commands. SELECT is resolved
    // here so later commands of the queue use the database it selects.
    let mut db = c.db;
    let dbs = c.shared.cfg.read().databases as i64;
    let max_bulk = c.shared.cfg.read().max_bulk_bytes;
    let now_ms = c.data_ctx().now_ms;
    let mut segments: Vec<Segment> = Vec::new();
    let mut cur: Vec<Item> = Vec::new();
    for argv in queue {
        let Some(spec) = lookup(&argv[0]) else {
            cur.push(Item::Ready(super::e_unknown(&argv)));
            continue;
        };
        match spec.handler {
            Handler::Data(f) => {
                let ctx = DataCtx {
                    db,
                    max_bulk,
                    now_ms,
                };
                cur.push(match f(&ctx, &argv) {
                    Job::Reply(r) => Item::Ready(r),
                    Job::Read(f) => Item::Read(f),
                    Job::Write(f) => Item::Write(f),
                });
            }
            Handler::Conn if spec.name == "select" => {
                cur.push(Item::Ready(match parse_i64(&argv[1]) {
                    None => e_int(),
                    Some(i) if i < 0 || i >= dbs => Reply::err("ERR DB index is out of range"),
                    Some(i) => {
                        db = i as u8;
                        Reply::ok()
                    }
                }));
            }
            Handler::Conn if spec.name == "echo" => {
                cur.push(Item::Ready(Reply::Bulk(argv[1].clone())))
            }
            Handler::Conn if spec.name == "ping" => cur.push(Item::Ready(match argv.len() {
                1 => Reply::simple("PONG"),
                2 => Reply::Bulk(argv[1].clone()),
                _ => e_arity("ping"),
            })),
            Handler::Conn => {
                if !cur.is_empty() {
                    segments.push(Segment::Data(std::mem::take(&mut cur)));
                }
                segments.push(Segment::Conn(argv));
            }
        }
    }
    if !cur.is_empty() || segments.is_empty() {
        segments.push(Segment::Data(cur));
    }

    let mut results = Vec::new();
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            Segment::Data(items) => {
                // The WATCH check belongs to the first group only.
                let w = std::mem::take(&mut watched);
                let r = c
                    .write_one(move |v: &mut crate::engine::View<'_>| run_items(v, &w, items))
                    .await;
                match r {
                    Reply::Array(rs) => results.extend(rs),
                    Reply::NilArray if i == 0 => return Reply::NilArray,
                    other => return other,
                }
            }
            Segment::Conn(argv) => {
                if i == 0 && !watched.is_empty() {
                    let w = std::mem::take(&mut watched);
                    let r = c
                        .write_one(move |v: &mut crate::engine::View<'_>| run_items(v, &w, vec![]))
                        .await;
                    if r == Reply::NilArray {
                        return r;
                    }
                }
                let name = lookup(&argv[0]).map(|s| s.name).unwrap_or("");
                // Connection commands see the database selected earlier in the queue.
                c.db = db;
                let r = Box::pin(c.run_conn(name, &argv)).await;
                results.push(r.unwrap_or_else(Reply::ok));
            }
        }
    }
    c.db = db;
    c.info.lock().db = db;
    Reply::Array(results)
}

#[cfg(test)]
mod tests {
    use super::super::mem::MemStore;
    use super::super::{lookup, DataCtx, Handler, Job};
    use super::*;

    fn item(line: &str) -> Item {
        let argv: Vec<Bytes> = line
            .split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        let Some(spec) = lookup(&argv[0]) else {
            panic!("unknown {line}");
        };
        let Handler::Data(f) = spec.handler else {
            panic!("not data {line}");
        };
        let ctx = DataCtx {
            db: 0,
            max_bulk: 1 << 29,
            now_ms: 0,
        };
        match f(&ctx, &argv) {
            Job::Reply(r) => Item::Ready(r),
            Job::Read(f) => Item::Read(f),
            Job::Write(f) => Item::Write(f),
        }
    }

    fn watch(st: &mut MemStore, key: &[u8]) -> Watched {
        let k = Bytes::copy_from_slice(&[&[0u8][..], key].concat());
        Watched {
            version: st.key_version(&k).unwrap(),
            live: st.get(&k).unwrap().is_some(),
            key: k,
        }
    }

    #[test]
    fn exec_runs_in_order_and_errors_do_not_undo() {
        let mut st = MemStore::default();
        let r = run_items(
            &mut st,
            &[],
            vec![
                item("set t text"),
                item("incr t"),
                item("set a 1"),
                item("get a"),
            ],
        );
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::ok(),
                Reply::err("ERR value is not an integer or out of range"),
                Reply::ok(),
                Reply::bulk_str("1"),
            ])
        );
    }

    #[test]
    fn watch_detects_write_and_expiry() {
        let mut st = MemStore {
            now: 1000,
            ..Default::default()
        };
        run_items(&mut st, &[], vec![item("set k v"), item("set e v px 10")]);
        let wk = watch(&mut st, b"k");
        let we = watch(&mut st, b"e");
        let wm = watch(&mut st, b"missing");
        // Untouched: commits.
        let r = run_items(&mut st, &[wk.clone(), wm.clone()], vec![item("get k")]);
        assert_eq!(r, Reply::Array(vec![Reply::bulk_str("v")]));
        // Same value written again: aborts.
        run_items(&mut st, &[], vec![item("set k v")]);
        assert_eq!(
            run_items(&mut st, &[wk], vec![item("get k")]),
            Reply::NilArray
        );
        // Live at WATCH, expired now: aborts.
        st.now += 20;
        assert_eq!(
            run_items(&mut st, &[we], vec![item("get k")]),
            Reply::NilArray
        );
        // A missing key that got created: aborts.
        run_items(&mut st, &[], vec![item("set missing 1")]);
        assert_eq!(run_items(&mut st, &[wm], vec![]), Reply::NilArray);
    }
}
