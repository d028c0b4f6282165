//! Real-engine comparison of compaction policies: load N random 16-byte keys with 100-byte
//! values, overwrite all of them in another random order, then read a sample back. Reports
//! ops/s per phase, write amplification, files/bytes per level, stalls and cache hits.
//!
//! `cargo run --release --example policy_bench -- --policy leveled`
//! (fsync never; run one policy per invocation, nothing else heavy at the same time).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sndv_kv::engine::{Engine, EngineConfig, EngineStats, FsyncPolicy, Op, View};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "leveled")]
    policy: String,
    #[arg(long, default_value_t = 2_000_000)]
    keys: usize,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Writer threads; each writes groups of `batch` puts.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 200_000)]
    reads: usize,
    #[arg(long, default_value_t = 32 << 20)]
    memtable_bytes: usize,
    #[arg(long, default_value_t = 16 << 20)]
    table_target_bytes: u64,
    #[arg(long, default_value_t = 64 << 20)]
    level_base_bytes: u64,
    #[arg(long, default_value_t = 64 << 20)]
    block_cache_bytes: usize,
    /// Data directory (default: a fresh one under the system temp dir, removed at the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn put_op(k: Bytes, v: Bytes) -> Op<()> {
    Box::new(move |view: &mut View<'_>| view.put(k, v, None))
}

fn load(e: &Engine, keys: &Arc<Vec<Bytes>>, order: &[usize], a: &Args, round: u8) -> f64 {
    let order = Arc::new(order.to_vec());
    let t = Instant::now();
    let per = order.len().div_ceil(a.writers);
    let handles: Vec<_> = (0..a.writers)
        .map(|w| {
            let (e, keys, order) = (e.clone(), keys.clone(), order.clone());
            let (batch, vb) = (a.batch, a.value_bytes);
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(w as u64 + 1000 * round as u64);
                let mine = &order[(w * per).min(order.len())..((w + 1) * per).min(order.len())];
                for chunk in mine.chunks(batch) {
                    let ops: Vec<Op<()>> = chunk
                        .iter()
                        .map(|&i| {
                            let mut v = vec![round; vb];
                            rng.fill(&mut v[..8.min(vb)]);
                            put_op(keys[i].clone(), Bytes::from(v))
                        })
                        .collect();
                    e.write(ops).expect("write");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    order.len() as f64 / t.elapsed().as_secs_f64()
}

fn print_levels(st: &EngineStats) {
    println!("| level | files | MiB | score |");
    println!("|-------|-------|-----|-------|");
    for (i, l) in st.level_stats.iter().enumerate() {
        println!(
            "| L{i} | {} | {:.1} | {:.2} |",
            l.files,
            l.bytes as f64 / (1 << 20) as f64,
            l.score
        );
    }
}

fn main() {
    let a = Args::parse();
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    let cfg = EngineConfig {
        fsync: FsyncPolicy::Never,
        compaction_policy: a.policy.clone(),
        memtable_bytes: a.memtable_bytes,
        table_target_bytes: a.table_target_bytes,
        level_base_bytes: a.level_base_bytes,
        block_cache_bytes: a.block_cache_bytes,
        ..EngineConfig::default()
    };
    println!(
        "policy {} | {} keys x (16 B key + {} B value) | {} writers x {}-put groups | fsync never | \
         memtable {} MiB, tables {} MiB, L1 target {} MiB (ratio {}), L0 trigger {}, block cache {} MiB",
        a.policy,
        a.keys,
        a.value_bytes,
        a.writers,
        a.batch,
        cfg.memtable_bytes >> 20,
        cfg.table_target_bytes >> 20,
        cfg.level_base_bytes >> 20,
        cfg.level_ratio,
        cfg.l0_compaction_trigger,
        cfg.block_cache_bytes >> 20
    );
    let e = Engine::open(&dir, cfg).expect("open");
    let mut rng = StdRng::seed_from_u64(7);
    let keys: Arc<Vec<Bytes>> = Arc::new(
        (0..a.keys)
            .map(|_| {
                let mut k = [0u8; 16];
                rng.fill(&mut k[..]);
                Bytes::copy_from_slice(&k)
            })
            .collect(),
    );
    let mut order: Vec<usize> = (0..a.keys).collect();
    let load_ops = load(&e, &keys, &order, &a, 1);
    order.shuffle(&mut rng);
    let t = Instant::now();
    let over_ops = load(&e, &keys, &order, &a, 2);
    let write_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    e.flush().expect("flush");
    e.wait_for_compactions().expect("settle");
    let settle_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut found = 0;
    for _ in 0..a.reads {
        let k = &keys[rng.gen_range(0..keys.len())];
        found += e.get(k).expect("get").is_some() as usize;
    }
    let read_ops = a.reads as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, a.reads, "every key is present");
    let st = e.stats();
    let disk: u64 = st.level_stats.iter().map(|l| l.bytes).sum();
    println!();
    println!("| metric | value |");
    println!("|--------|-------|");
    println!("| load (ops/s) | {load_ops:.0} |");
    println!("| overwrite (ops/s) | {over_ops:.0} (phase {write_secs:.1} s) |");
    println!("| settle after overwrite (s) | {settle_secs:.1} |");
    println!("| random get (ops/s, 1 thread) | {read_ops:.0} |");
    println!(
        "| write amplification ((WAL + tables) / user) | {:.2} |",
        st.write_amplification
    );
    println!(
        "| compaction tasks / trivial moves / floor | {} / {} / {} |",
        st.compactions, st.trivial_moves, st.floor_compactions
    );
    println!(
        "| stalls (count, total ms, max ms) / slowdowns | {}, {}, {} / {} |",
        st.stalls, st.stall_ms_total, st.stall_ms_max, st.slowdowns
    );
    println!(
        "| live table bytes (MiB) / space amp vs {} MiB user data | {:.1} / {:.2} |",
        (a.keys * (16 + a.value_bytes)) >> 20,
        disk as f64 / (1 << 20) as f64,
        disk as f64 / (a.keys * (16 + a.value_bytes)) as f64
    );
    println!(
        "| block cache hits / misses | {} / {} |",
        st.cache_hits, st.cache_misses
    );
    println!();
    print_levels(&st);
    e.close().expect("close");
}
