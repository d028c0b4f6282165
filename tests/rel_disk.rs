//! A full or failing disk, seen through the server (the real server code, in process, over the
//! fault-injecting storage; the real disk is never filled):
//! - ENOSPC: writes answer `-ERR ... no space left on device ...`, also writers stalled behind a
//!   failing flush; reads keep answering; writes work again once space returns, no restart;
//! - a failed fsync (EIO or ENOSPC): writes answer an error until restart, reads go on, and a
//!   restart (also after a power cut) recovers every acknowledged write.
mod rel_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rel_support::{base_config, info_field, Client, InProc, R};
use sndv_kv::engine::fault::{CutMode, FaultKind, FaultStorage, Gate, SyncClass};

/// Key → last acknowledged value.
type Acked = BTreeMap<String, String>;

fn set_ok(c: &mut Client, acked: &mut Acked, k: &str, v: &str) {
    assert_eq!(c.q(&["SET", k, v]), R::Simple("OK".into()), "SET {k}");
    acked.insert(k.to_string(), v.to_string());
}

fn check_all(c: &mut Client, acked: &Acked) {
    for (k, v) in acked {
        assert_eq!(c.q(&["GET", k]).bulk(), Some(v.as_bytes()), "key {k}");
    }
}

fn assert_no_space(r: &R) {
    let t = r
        .err_text()
        .unwrap_or_else(|| panic!("not an error: {r:?}"));
    assert!(t.starts_with("ERR "), "{t}");
    assert!(t.contains("no space left on device"), "{t}");
}

/// Once space is back, a flush that failed is retried after a short back-off; until it
/// succeeds a writer that would stall may still get the error. Retries (bounded) until OK.
fn set_eventually(c: &mut Client, acked: &mut Acked, k: &str) {
    let t0 = Instant::now();
    loop {
        match c.q(&["SET", k, "1"]) {
            R::Simple(s) if s == "OK" => break,
            other => assert_no_space(&other),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "writes never resumed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    acked.insert(k.to_string(), "1".to_string());
}

/// Waits (bounded) for a condition on `INFO` output.
fn wait_info(c: &mut Client, what: &str, ok: impl Fn(&str) -> bool) {
    let t0 = Instant::now();
    loop {
        let info = c.q(&["INFO", "everything"]).text();
        if ok(&info) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}; INFO:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn enospc_answers_errors_reads_go_on_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new();
    let mut cfg = base_config(dir.path());
    // Tiny memtable and a single immutable: flushes are needed all the time, so a failing
    // flush soon stalls writers.
    cfg.memtable_bytes = 64 * 1024;
    cfg.max_immutables = 1;
    let srv = InProc::start(cfg.clone(), Arc::new(fs.clone()));
    let mut c = Client::authed(srv.port).unwrap();
    let mut acked = Acked::new();
    let val = "v".repeat(1000);
    for i in 0..300 {
        set_ok(&mut c, &mut acked, &format!("a{i}"), &format!("{i}{val}"));
    }

    // 1. The disk is full: every write answers the error; nothing half-written shows.
    fs.set_no_space(true);
    for i in 0..20 {
        assert_no_space(&c.q(&["SET", &format!("full{i}"), "x"]));
        assert_no_space(&c.q(&["INCR", "counter"]));
        assert_no_space(&c.q(&["DEL", "a1"]));
    }
    // A pipelined MULTI/EXEC fails as a whole.
    c.send(&rel_support::enc(&[b"MULTI"])).unwrap();
    c.send(&rel_support::enc(&[b"SET", b"tx1", b"1"])).unwrap();
    c.send(&rel_support::enc(&[b"SET", b"tx2", b"2"])).unwrap();
    c.send(&rel_support::enc(&[b"EXEC"])).unwrap();
    assert_eq!(c.read().unwrap(), R::Simple("OK".into()));
    assert_eq!(c.read().unwrap(), R::Simple("QUEUED".into()));
    assert_eq!(c.read().unwrap(), R::Simple("QUEUED".into()));
    let exec = c.read().unwrap();
    match &exec {
        R::Err(_) => assert_no_space(&exec),
        R::Array(Some(items)) => items.iter().for_each(assert_no_space),
        other => panic!("EXEC on a full disk: {other:?}"),
    }
    assert_eq!(c.q(&["PING"]), R::Simple("PONG".into()));
    check_all(&mut c, &acked);
    assert_eq!(c.q(&["GET", "full0"]), R::Bulk(None));
    assert_eq!(c.q(&["EXISTS", "tx1", "tx2", "counter"]), R::Int(0));

    // 2. Space returns: writes work again without a restart.
    fs.set_no_space(false);
    set_eventually(&mut c, &mut acked, "back");
    check_all(&mut c, &acked);

    // 3. Writers stalled behind a flush that then fails for lack of space get the error
    //    instead of waiting forever. The gate holds the flush so the stall is certain.
    let gate = Gate::closed(Some(SyncClass::Table));
    fs.set_gate(Some(gate.clone()));
    let port = srv.port;
    let writer = std::thread::spawn(move || {
        let mut w = Client::authed(port).unwrap();
        let mut acked = Acked::new();
        let val = "w".repeat(1000);
        for i in 0.. {
            let (k, v) = (format!("s{i}"), format!("{i}{val}"));
            match w.q(&["SET", &k, &v]) {
                R::Simple(s) if s == "OK" => {
                    acked.insert(k, v);
                }
                other => return (acked, other),
            }
        }
        unreachable!()
    });
    wait_info(&mut c, "the ingest agent to stall", |i| {
        info_field(i, "agent_ingest").is_some_and(|s| s.starts_with("state=stalled"))
    });
    // Reads answer while writers are stalled.
    check_all(&mut c, &acked);
    fs.set_no_space(true);
    gate.open();
    let (w_acked, w_err) = writer.join().unwrap();
    assert_no_space(&w_err);
    acked.extend(w_acked);
    // Further writes fail fast too (WAL append or stall behind the failing flush).
    for i in 0..5 {
        assert_no_space(&c.q(&["SET", &format!("full2_{i}"), "x"]));
    }
    check_all(&mut c, &acked);

    // 4. Space returns: flushes catch up and writes succeed again, still no restart.
    fs.set_gate(None);
    fs.set_no_space(false);
    set_eventually(&mut c, &mut acked, "after");
    for i in 0..200 {
        set_ok(&mut c, &mut acked, &format!("b{i}"), &format!("{i}{val}"));
    }
    let info = c.q(&["INFO", "lsm"]).text();
    assert_eq!(
        info_field(&info, "poisoned").as_deref(),
        Some("no"),
        "{info}"
    );
    check_all(&mut c, &acked);
    drop(c);
    srv.stop().unwrap();

    // Nothing acknowledged was lost, even through a power cut.
    fs.power_cut(CutMode::DropUnsynced).unwrap();
    let srv = InProc::start(cfg, Arc::new(fs.clone()));
    let mut c = Client::authed(srv.port).unwrap();
    check_all(&mut c, &acked);
    assert_eq!(c.q(&["EXISTS", "full0", "tx1", "counter"]), R::Int(0));
    drop(c);
    srv.stop().unwrap();
}

fn fsync_failure_poisons_until_restart(kind: FaultKind) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new();
    // The default (large) memtable: the only syncs are the WAL's, so the injected failure
    // hits a commit.
    let cfg = base_config(dir.path());
    let srv = InProc::start(cfg.clone(), Arc::new(fs.clone()));
    let mut c = Client::authed(srv.port).unwrap();
    let mut acked = Acked::new();
    for i in 0..100 {
        set_ok(&mut c, &mut acked, &format!("k{i}"), &i.to_string());
    }
    assert_eq!(c.q(&["INCR", "n"]), R::Int(1));
    acked.insert("n".into(), "1".into());

    fs.fail_nth_sync(0, kind);
    let first = c.q(&["SET", "doomed", "x"]);
    assert!(first.is_err(), "{first:?}");
    // Never retried: every later write fails although the disk "works" again, on every
    // connection.
    let mut other = Client::authed(srv.port).unwrap();
    for i in 0..10 {
        for cl in [&mut c, &mut other] {
            let r = cl.q(&["SET", &format!("later{i}"), "x"]);
            let t = r.err_text().unwrap_or_else(|| panic!("{r:?}"));
            assert!(t.starts_with("ERR ") && t.contains("poisoned"), "{t}");
            assert!(cl.q(&["INCR", "n"]).is_err());
        }
    }
    // Reads continue.
    check_all(&mut c, &acked);
    check_all(&mut other, &acked);
    let info = c.q(&["INFO", "lsm"]).text();
    assert_ne!(
        info_field(&info, "poisoned").as_deref(),
        Some("no"),
        "{info}"
    );
    drop((c, other));
    // Closing a poisoned engine reports the poison; the server still stops.
    let _ = srv.stop();

    // A restart recovers every acknowledged write, also after losing everything unsynced.
    fs.power_cut(CutMode::DropUnsynced).unwrap();
    let srv = InProc::start(cfg, Arc::new(fs.clone()));
    let mut c = Client::authed(srv.port).unwrap();
    check_all(&mut c, &acked);
    assert_eq!(c.q(&["EXISTS", "later0"]), R::Int(0));
    // Writable again.
    assert_eq!(c.q(&["INCR", "n"]), R::Int(2));
    drop(c);
    srv.stop().unwrap();
}

#[test]
fn fsync_eio_poisons_until_restart() {
    fsync_failure_poisons_until_restart(FaultKind::Eio);
}

#[test]
fn fsync_enospc_poisons_until_restart() {
    fsync_failure_poisons_until_restart(FaultKind::Enospc);
}
