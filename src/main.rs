//! `sndv-kv` binary: CLI + config, tracing, token, then the server until a signal or SHUTDOWN.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sndv_kv::config::Config;
use sndv_kv::server::auth::{self, TokenSource};
use sndv_kv::server::{self as srv};

/// jemalloc, as Redis uses: its per-thread caches and arenas are bounded and it returns freed
/// pages to the system over time, where glibc malloc kept growing per-thread arenas under the
/// soak (docs/RELIABILITY.md). Only the binary: the library and its tests use the system malloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read by jemalloc itself under this symbol name): freed pages go
/// back to the system after about a second instead of ten. Memtables of tens of MiB are freed
/// at every flush; with the default decay a fast write load kept hundreds of MiB of freed pages
/// resident (10M-key load: peak RssAnon 803 MiB with the default, 658 MiB with this).
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
pub struct MallocConf(*const u8);

// SAFETY: points at a static, immutable, NUL-terminated string.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for MallocConf {}

#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr().cast());

/// `INFO memory` numbers from jemalloc (stats are refreshed by advancing its epoch).
#[cfg(feature = "jemalloc")]
fn jemalloc_stats() -> Option<srv::commands::server::AllocatorStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(srv::commands::server::AllocatorStats {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        resident: Some(stats::resident::read().ok()? as u64),
    })
}

/// A Redis-protocol compatible key-value server on its own LSM-tree engine.
#[derive(Debug, Parser)]
#[command(name = "sndv-kv", version)]
struct Cli {
    /// TOML configuration file (see config_safe.toml / config_fast.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file).
    #[arg(long)]
    bind: Option<String>,
    /// TCP port (overrides the file).
    #[arg(long)]
    port: Option<u16>,
    /// Data directory (overrides the file).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Admin token (overrides the file; env SNDV_KV_TOKEN overrides both).
    #[arg(long)]
    token: Option<String>,
}

fn load_config(cli: &Cli) -> Result<Config, sndv_kv::config::ConfigError> {
    let mut cfg = match &cli.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(b) = &cli.bind {
        cfg.bind = b.clone();
    }
    if let Some(p) = cli.port {
        cfg.port = p;
    }
    if let Some(d) = &cli.dir {
        cfg.dir = d.clone();
    }
    if let Some(t) = &cli.token {
        cfg.token = Some(t.clone());
    }
    if let Ok(t) = std::env::var("SNDV_KV_TOKEN") {
        cfg.token = Some(t);
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; they clutter log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    #[cfg(feature = "jemalloc")]
    srv::commands::server::set_allocator_probe(srv::commands::server::AllocatorProbe {
        // "5.3.0-1-g..." → "jemalloc-5.3.0", as Redis prints it.
        name: Box::leak(
            format!(
                "jemalloc-{}",
                tikv_jemalloc_ctl::version::read()
                    .unwrap_or("?")
                    .split('-')
                    .next()
                    .unwrap_or("?")
            )
            .into_boxed_str(),
        ),
        stats: jemalloc_stats,
    });

    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&cfg.dir) {
        eprintln!("cannot create data directory {}: {e}", cfg.dir.display());
        return ExitCode::from(1);
    }
    let (token, source) = match auth::load_or_generate(cfg.token.as_deref(), &cfg.dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot load or create the admin token: {e}");
            return ExitCode::from(1);
        }
    };
    match &source {
        TokenSource::Generated(path) => {
            // The one place the secret is shown: the operator needs it once.
            println!(
                "generated admin token (saved to {}): {}",
                path.display(),
                String::from_utf8_lossy(token.expose())
            );
        }
        TokenSource::File(path) => println!("admin token: see {}", path.display()),
        TokenSource::Configured => {}
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(srv::run(cfg, token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server stopped: {e}");
            ExitCode::from(1)
        }
    }
}
