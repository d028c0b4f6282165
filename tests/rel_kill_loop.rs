//! Kill -9 through the server: the real binary with fsync always (config_safe.toml, with a
//! small memtable so flushes and compactions run between kills), several connections writing
//! SET / DEL / INCR / MULTI-EXEC on keys each connection owns, SIGKILL at a random moment,
//! restart on the same directory. After every restart:
//! - every acknowledged write holds its value, except that the one write in flight on a
//!   connection at the kill may or may not have happened;
//! - a MULTI writes one marker to all its keys: all carry it or none does;
//! - the server starts every time.
//!
//! `SNDV_REL_ROUNDS` sets the number of rounds (default 30); `SNDV_REL_SEED` the seed.
mod rel_support;
mod server_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rel_support::{enc, Client, R};
use server_support::{Server, TOKEN};

const CONNECTIONS: usize = 4;

/// The operation a connection sent and has no reply for yet.
#[derive(Debug, Clone)]
enum Pending {
    Set(String, String),
    Del(String),
    Incr(String),
    Multi(Vec<String>, String),
}

/// What one connection knows: the last acknowledged state of each of its keys
/// (`None` = absent) and the write in flight, if any.
#[derive(Debug, Default, Clone)]
struct Model {
    acked: BTreeMap<String, Option<String>>,
    pending: Option<Pending>,
    ops: u64,
}

fn ok(r: &R) -> bool {
    *r == R::Simple("OK".into())
}

/// One random write, recorded before sending and settled when its reply arrives. An I/O error
/// (the server was killed) leaves it pending.
fn step(
    c: &mut Client,
    m: &mut Model,
    rng: &mut StdRng,
    id: usize,
    tag: &str,
) -> std::io::Result<()> {
    let n = m.ops;
    m.ops += 1;
    let value = |rng: &mut StdRng| {
        // Mostly small values, sometimes a few KiB so memtables fill and flush.
        let pad = if rng.gen_bool(0.2) {
            rng.gen_range(0..4096)
        } else {
            0
        };
        format!("{tag}-{n}-{}", "x".repeat(pad))
    };
    match rng.gen_range(0..10) {
        0..=3 => {
            let k = format!("c{id}:s{}", rng.gen_range(0..12));
            let v = value(rng);
            m.pending = Some(Pending::Set(k.clone(), v.clone()));
            let r = c.cmd(&[b"SET", k.as_bytes(), v.as_bytes()])?;
            assert!(ok(&r), "SET {k}: {r:?}");
            m.acked.insert(k, Some(v));
        }
        4 => {
            let k = format!("c{id}:s{}", rng.gen_range(0..12));
            m.pending = Some(Pending::Del(k.clone()));
            let r = c.cmd(&[b"DEL", k.as_bytes()])?;
            let was = m.acked.get(&k).cloned().flatten().is_some();
            assert_eq!(r, R::Int(was as i64), "DEL {k}");
            m.acked.insert(k, None);
        }
        5..=7 => {
            let k = format!("c{id}:n{}", rng.gen_range(0..4));
            m.pending = Some(Pending::Incr(k.clone()));
            let r = c.cmd(&[b"INCR", k.as_bytes()])?;
            let before: i64 = m
                .acked
                .get(&k)
                .cloned()
                .flatten()
                .map(|s| s.parse().expect("counter"))
                .unwrap_or(0);
            assert_eq!(r, R::Int(before + 1), "INCR {k}");
            m.acked.insert(k, Some((before + 1).to_string()));
        }
        _ => {
            let marker = value(rng);
            let mut keys: Vec<String> = (0..6).map(|j| format!("c{id}:m{j}")).collect();
            let take = rng.gen_range(2..=6);
            keys.truncate(take);
            m.pending = Some(Pending::Multi(keys.clone(), marker.clone()));
            let mut out = enc(&[b"MULTI"]);
            for k in &keys {
                out.extend(enc(&[b"SET", k.as_bytes(), marker.as_bytes()]));
            }
            out.extend(enc(&[b"EXEC"]));
            c.send(&out)?;
            assert!(ok(&c.read()?));
            for _ in &keys {
                assert_eq!(c.read()?, R::Simple("QUEUED".into()));
            }
            match c.read()? {
                R::Array(Some(items)) if items.len() == keys.len() && items.iter().all(ok) => {}
                other => panic!("EXEC: {other:?}"),
            }
            for k in keys {
                m.acked.insert(k, Some(marker.clone()));
            }
        }
    }
    m.pending = None;
    Ok(())
}

/// Checks the state after a restart against the model and settles the in-flight write.
fn verify(c: &mut Client, id: usize, m: &mut Model, round: usize) {
    let mut actual = BTreeMap::new();
    let mut keys: Vec<String> = m.acked.keys().cloned().collect();
    match &m.pending {
        Some(Pending::Set(k, _) | Pending::Del(k) | Pending::Incr(k)) => keys.push(k.clone()),
        Some(Pending::Multi(ks, _)) => keys.extend(ks.iter().cloned()),
        None => {}
    }
    for k in keys {
        let v = match c.q(&["GET", &k]) {
            R::Bulk(b) => b.map(|b| String::from_utf8(b).expect("utf8")),
            other => panic!("round {round}: GET {k}: {other:?}"),
        };
        actual.insert(k, v);
    }
    let acked = |k: &str| m.acked.get(k).cloned().flatten();
    let ctx = |k: &str| {
        format!(
            "round {round}, connection {id}, key {k}: acked {:?}, pending {:?}, found {:?}",
            acked(k),
            m.pending,
            actual.get(k)
        )
    };
    let mut exempt: Vec<String> = Vec::new();
    match &m.pending {
        Some(Pending::Set(k, v)) => {
            let a = &actual[k];
            assert!(*a == acked(k) || a.as_ref() == Some(v), "{}", ctx(k));
            exempt.push(k.clone());
        }
        Some(Pending::Del(k)) => {
            let a = &actual[k];
            assert!(*a == acked(k) || a.is_none(), "{}", ctx(k));
            exempt.push(k.clone());
        }
        Some(Pending::Incr(k)) => {
            let before: i64 = acked(k).map(|s| s.parse().expect("counter")).unwrap_or(0);
            let a = &actual[k];
            let after = (before + 1).to_string();
            assert!(*a == acked(k) || a.as_ref() == Some(&after), "{}", ctx(k));
            exempt.push(k.clone());
        }
        Some(Pending::Multi(ks, marker)) => {
            let all_new = ks.iter().all(|k| actual[k].as_ref() == Some(marker));
            let all_old = ks.iter().all(|k| actual[k] == acked(k));
            assert!(
                all_new || all_old,
                "round {round}, connection {id}: MULTI {ks:?} marker {marker:?} half applied: {:?}",
                ks.iter().map(|k| (k, &actual[k])).collect::<Vec<_>>()
            );
            exempt.extend(ks.iter().cloned());
        }
        None => {}
    }
    for k in m.acked.keys() {
        if !exempt.contains(k) {
            assert_eq!(actual[k], acked(k), "{}", ctx(k));
        }
    }
    // The in-flight write's fate is decided now; later rounds build on what is there.
    for (k, v) in actual {
        m.acked.insert(k, v);
    }
    m.pending = None;
}

/// The safe profile (fsync always), with a small memtable so that flushes and compactions run
/// and get killed too.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let safe = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config_safe.toml"))
        .expect("config_safe.toml");
    assert!(safe.contains("fsync = \"always\""));
    let text: String = safe
        .lines()
        .map(|l| {
            if l.starts_with("memtable_bytes") {
                "memtable_bytes = 262144".to_string()
            } else if l.starts_with("table_target_bytes") {
                "table_target_bytes = 262144".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let p = dir.join("safe_small.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn kill_loop(rounds: usize) {
    let seed: u64 = std::env::var("SNDV_REL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("rel_kill_loop: {rounds} rounds, seed {seed} (SNDV_REL_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = write_config(tmp.path());
    let cfg_arg = cfg.to_str().expect("utf8 path").to_string();
    let mut models: Vec<Model> = vec![Model::default(); CONNECTIONS];
    let (mut total_acks, mut total_pending) = (0u64, 0u64);

    for round in 0..rounds {
        let mut srv = Server::start_in(&data, &["--config", &cfg_arg]);
        // Check the previous round's outcome before writing more.
        for (id, m) in models.iter_mut().enumerate() {
            let mut c = Client::authed(srv.port).expect("connect after restart");
            verify(&mut c, id, m, round);
        }
        let acks = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = models
            .drain(..)
            .enumerate()
            .map(|(id, mut m)| {
                let port = srv.port;
                let acks = acks.clone();
                let wseed: u64 = rng.gen();
                std::thread::spawn(move || {
                    let mut rng = StdRng::seed_from_u64(wseed);
                    let tag = format!("r{round}");
                    let Ok(mut c) = Client::connect(port) else {
                        return m;
                    };
                    if c.cmd(&[b"AUTH", TOKEN.as_bytes()]).is_err() {
                        return m;
                    }
                    while step(&mut c, &mut m, &mut rng, id, &tag).is_ok() {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    m
                })
            })
            .collect();
        // Kill at a random moment: after a random amount of progress plus a random delay.
        let want = rng.gen_range(1..400);
        let t0 = Instant::now();
        while acks.load(Ordering::Relaxed) < want && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            acks.load(Ordering::Relaxed) >= want,
            "round {round}: no progress"
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
        srv.kill();
        for w in workers {
            let m = w.join().expect("worker panicked (wrong reply; see above)");
            total_pending += m.pending.is_some() as u64;
            models.push(m);
        }
        total_acks += acks.load(Ordering::Relaxed);
    }
    // A last restart checks the last round.
    let srv = Server::start_in(&data, &["--config", &cfg_arg]);
    for (id, m) in models.iter_mut().enumerate() {
        let mut c = Client::authed(srv.port).expect("connect after restart");
        verify(&mut c, id, m, rounds);
    }
    eprintln!(
        "rel_kill_loop: {rounds} kills, {total_acks} acknowledged writes checked, {total_pending} writes in flight at a kill"
    );
}

#[test]
fn kill9_loop_through_the_server() {
    let rounds = std::env::var("SNDV_REL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    kill_loop(rounds);
}

#[test]
#[ignore = "long: 300 kill rounds"]
fn kill9_loop_through_the_server_long() {
    kill_loop(300);
}
