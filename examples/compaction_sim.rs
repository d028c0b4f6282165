//! Compares compaction policies in seconds, without I/O: the engine's own policy code runs
//! over fake tables fed by a synthetic stream of flushes (see `sndv_kv::engine::compaction::sim`).
//!
//! `cargo run --release --example compaction_sim -- --policy both`

use clap::Parser;
use sndv_kv::engine::compaction::sim::{Sim, SimConfig, SimReport};
use sndv_kv::engine::compaction::{policy_by_name, POLICY_NAMES};

#[derive(Parser, Debug)]
struct Args {
    /// leveled | tiered | both
    #[arg(long, default_value = "both")]
    policy: String,
    /// Distinct keys the stream draws from (uniformly).
    #[arg(long, default_value_t = 1_000_000)]
    keyspace: u64,
    /// Keys per flush (one L0 table each).
    #[arg(long, default_value_t = 20_000)]
    flush_keys: usize,
    #[arg(long, default_value_t = 500)]
    flushes: usize,
    /// Bytes per entry (key + value + overhead).
    #[arg(long, default_value_t = 128)]
    entry_bytes: u64,
    #[arg(long, default_value_t = 2 << 20)]
    table_target_bytes: u64,
    #[arg(long, default_value_t = 10 << 20)]
    level_base_bytes: u64,
    #[arg(long, default_value_t = 4)]
    l0_trigger: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn print(r: &SimReport) {
    println!(
        "| {:8} | {:>6.2} | {:>8.2} | {:>8} | {:>6.2} | {:>8.2} | {:>11} | {:>6} |",
        r.policy,
        r.write_amp,
        r.read_amp,
        r.max_runs,
        r.space_amp,
        r.max_space_amp,
        r.compactions,
        r.trivial_moves
    );
}

fn main() {
    let a = Args::parse();
    let names: Vec<&str> = match a.policy.as_str() {
        "both" => POLICY_NAMES.to_vec(),
        one => vec![one],
    };
    let cfg = SimConfig {
        keyspace: a.keyspace,
        flush_keys: a.flush_keys,
        flushes: a.flushes,
        entry_bytes: a.entry_bytes,
        table_target_bytes: a.table_target_bytes,
        level_base_bytes: a.level_base_bytes,
        l0_compaction_trigger: a.l0_trigger,
        seed: a.seed,
        ..SimConfig::default()
    };
    println!(
        "stream: {} flushes x {} keys over {} keys, {} B/entry ({:.0} MiB written by users); \
         table target {:.1} MiB, L1 target {:.1} MiB, ratio 10, L0 trigger {}",
        cfg.flushes,
        cfg.flush_keys,
        cfg.keyspace,
        cfg.entry_bytes,
        mib(cfg.flushes as u64 * cfg.flush_keys as u64 * cfg.entry_bytes),
        mib(cfg.table_target_bytes),
        mib(cfg.level_base_bytes),
        cfg.l0_compaction_trigger
    );
    let mut reports = Vec::new();
    for n in names {
        let p = match policy_by_name(n) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        };
        reports.push(Sim::run_stream(cfg.clone(), p.as_ref()));
    }
    println!();
    println!("| policy   | write amp | read amp (tables/lookup) | max runs | space amp | max space amp | compactions | trivial moves |");
    println!("|----------|-----------|--------------------------|----------|-----------|---------------|-------------|---------------|");
    for r in &reports {
        println!(
            "| {:8} | {:>9.2} | {:>24.2} | {:>8} | {:>9.2} | {:>13.2} | {:>11} | {:>13} |",
            r.policy,
            r.write_amp,
            r.read_amp,
            r.max_runs,
            r.space_amp,
            r.max_space_amp,
            r.compactions,
            r.trivial_moves
        );
    }
    for r in &reports {
        println!();
        println!("{}: files / MiB per level", r.policy);
        println!("| level | files | MiB |");
        println!("|-------|-------|-----|");
        for (i, l) in r.levels.iter().enumerate() {
            println!("| L{i} | {} | {:.1} |", l.files, mib(l.bytes));
        }
    }
    if reports.is_empty() {
        print(&SimReport::default());
    }
}
