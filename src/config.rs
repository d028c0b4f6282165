//! TOML configuration: every field optional with a safe default, unknown fields refused, and
//! every error reduced to one line that names the field (the operator fixes one thing at a time).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::{EngineConfig, FsyncPolicy};

/// Compaction policy names accepted in the config and by `AGENT SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactionPolicy {
    Leveled,
    Tiered,
}

impl CompactionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionPolicy::Leveled => "leveled",
            CompactionPolicy::Tiered => "tiered",
        }
    }
}

/// The whole server configuration after defaults, file, flags and environment are combined.
/// `Debug` is written by hand so the token never reaches a log line.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub bind: String,
    pub port: u16,
    pub dir: PathBuf,
    /// Admin token; `None` means "generate one into `<dir>/admin.token` on first start".
    pub token: Option<String>,
    pub fsync: FsyncPolicy,
    pub databases: u32,
    pub maxclients: u32,
    pub max_bulk_bytes: u64,
    pub max_multibulk_len: u64,
    /// Cap on the request input one client holds: unparsed bytes, the arguments of a partly
    /// received request, and commands queued by MULTI (Redis' client-query-buffer-limit).
    pub query_buffer_bytes: u64,
    /// Hard limit on replies buffered for one client; above it the client is disconnected.
    pub client_output_buffer_bytes: u64,
    pub memtable_bytes: u64,
    pub max_immutables: u32,
    pub block_cache_bytes: u64,
    pub bloom_bits_per_key: u32,
    pub l0_compaction_trigger: u32,
    pub l0_stop_trigger: u32,
    pub table_target_bytes: u64,
    pub compaction_policy: CompactionPolicy,
    /// Event-loop threads serving client connections (0: on the shared multi-thread runtime).
    pub io_threads: u32,
    /// Event loops in use: 0 = as many as measurably help (one while it keeps up), else
    /// exactly this many of the `io_threads`.
    pub io_loops: u32,
    /// Niceness of the flush and compaction threads (0..=19; 0 = same as the server).
    pub background_nice: u32,
    /// Milliseconds without writes after which L0 is merged into L1 (0: never on idle).
    pub idle_compaction_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1".to_string(),
            port: 6379,
            dir: PathBuf::from("./data"),
            token: None,
            fsync: FsyncPolicy::Always,
            databases: 16,
            maxclients: 10_000,
            max_bulk_bytes: 512 * 1024 * 1024,
            max_multibulk_len: 1_048_576,
            query_buffer_bytes: 1024 * 1024 * 1024,
            client_output_buffer_bytes: 64 * 1024 * 1024,
            memtable_bytes: 64 * 1024 * 1024,
            max_immutables: 4,
            block_cache_bytes: 128 * 1024 * 1024,
            bloom_bits_per_key: 10,
            l0_compaction_trigger: 4,
            l0_stop_trigger: 20,
            table_target_bytes: 64 * 1024 * 1024,
            compaction_policy: CompactionPolicy::Leveled,
            io_threads: default_io_threads(),
            io_loops: 0,
            background_nice: 0,
            idle_compaction_ms: 200,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("fsync", &self.fsync)
            .field("databases", &self.databases)
            .field("maxclients", &self.maxclients)
            .field("max_bulk_bytes", &self.max_bulk_bytes)
            .field("max_multibulk_len", &self.max_multibulk_len)
            .field("query_buffer_bytes", &self.query_buffer_bytes)
            .field(
                "client_output_buffer_bytes",
                &self.client_output_buffer_bytes,
            )
            .field("memtable_bytes", &self.memtable_bytes)
            .field("max_immutables", &self.max_immutables)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("l0_compaction_trigger", &self.l0_compaction_trigger)
            .field("l0_stop_trigger", &self.l0_stop_trigger)
            .field("table_target_bytes", &self.table_target_bytes)
            .field("compaction_policy", &self.compaction_policy)
            .field("io_threads", &self.io_threads)
            .field("io_loops", &self.io_loops)
            .field("background_nice", &self.background_nice)
            .field("idle_compaction_ms", &self.idle_compaction_ms)
            .finish()
    }
}

/// One IO thread per CPU core.
pub fn default_io_threads() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(64) as u32)
}

/// A configuration problem, already phrased as the one line start-up prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses TOML text. Errors name the offending field on one line.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // serde's message for a bad value lacks the key; find it by trying keys one by one.
            ConfigError(locate_field_error(text).unwrap_or_else(|| toml_error_line(&e)))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// Checks ranges serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &str, why: &str) -> Result<(), ConfigError> {
            Err(ConfigError(format!("field '{field}': {why}")))
        }
        if self.bind.trim().is_empty() {
            return bad("bind", "must not be empty");
        }
        if self.port == 0 {
            return bad("port", "must be between 1 and 65535");
        }
        if self.dir.as_os_str().is_empty() {
            return bad("dir", "must not be empty");
        }
        if let Some(t) = &self.token {
            if t.is_empty() {
                return bad("token", "must not be empty (omit it to generate one)");
            }
            if t.len() > 16384
                || t.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return bad(
                    "token",
                    "must be at most 16384 bytes without spaces or control characters",
                );
            }
        }
        if self.databases == 0 || self.databases > 256 {
            return bad("databases", "must be between 1 and 256");
        }
        if self.io_threads > 256 {
            return bad("io_threads", "must be at most 256");
        }
        if self.io_loops > self.io_threads {
            return bad(
                "io_loops",
                "must be at most io_threads (0: as many as help, the default)",
            );
        }
        if self.maxclients == 0 {
            return bad("maxclients", "must be at least 1");
        }
        if self.max_bulk_bytes < 1024 || self.max_bulk_bytes > 4 * 1024 * 1024 * 1024 {
            return bad("max_bulk_bytes", "must be between 1024 and 4294967296");
        }
        if self.max_multibulk_len == 0 || self.max_multibulk_len > i32::MAX as u64 {
            return bad("max_multibulk_len", "must be between 1 and 2147483647");
        }
        if self.query_buffer_bytes < 64 * 1024 {
            return bad("query_buffer_bytes", "must be at least 65536");
        }
        if self.client_output_buffer_bytes < 64 * 1024 {
            return bad("client_output_buffer_bytes", "must be at least 65536");
        }
        if self.memtable_bytes < 64 * 1024 {
            return bad("memtable_bytes", "must be at least 65536");
        }
        if self.max_immutables == 0 {
            return bad("max_immutables", "must be at least 1");
        }
        if self.bloom_bits_per_key > 64 {
            return bad("bloom_bits_per_key", "must be between 0 and 64");
        }
        if self.l0_compaction_trigger == 0 {
            return bad("l0_compaction_trigger", "must be at least 1");
        }
        if self.l0_stop_trigger <= self.l0_compaction_trigger {
            return bad(
                "l0_stop_trigger",
                "must be greater than l0_compaction_trigger",
            );
        }
        if self.table_target_bytes < 64 * 1024 {
            return bad("table_target_bytes", "must be at least 65536");
        }
        if self.background_nice > 19 {
            return bad("background_nice", "must be between 0 and 19");
        }
        Ok(())
    }

    /// The engine's part of the configuration.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            memtable_bytes: clamp_usize(self.memtable_bytes),
            max_immutables: self.max_immutables as usize,
            fsync: self.fsync,
            block_size: 4096,
            bloom_bits_per_key: self.bloom_bits_per_key,
            l0_compaction_trigger: self.l0_compaction_trigger as usize,
            l0_stop_trigger: self.l0_stop_trigger as usize,
            table_target_bytes: self.table_target_bytes,
            // A group should not outgrow the memtable it lands in.
            max_group_bytes: clamp_usize((self.memtable_bytes / 4).max(64 * 1024)),
            write_queue_bytes: clamp_usize((self.memtable_bytes / 2).max(1024 * 1024)),
            block_cache_bytes: clamp_usize(self.block_cache_bytes),
            compaction_policy: self.compaction_policy.as_str().to_string(),
            background_nice: self.background_nice as i32,
            idle_compaction_ms: self.idle_compaction_ms,
            // Level sizing keeps the engine's defaults.
            ..EngineConfig::default()
        }
    }
}

fn clamp_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Turns toml/serde's multi-line error into one line that names the field.
fn toml_error_line(e: &toml::de::Error) -> String {
    let msg = e.message().replace('\n', " ");
    let msg = msg.trim();
    // serde reports unknown fields as "unknown field `x`, expected one of ..."
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            return format!("unknown field '{}'", &rest[..end]);
        }
    }
    msg.to_string()
}

/// Builds the one-line message for a bad value of `field`.
fn field_error(field: &str, msg: &str) -> String {
    let msg = msg.replace('\n', " ");
    let msg = msg
        .trim()
        .trim_start_matches("unknown variant ")
        .trim()
        .to_string();
    format!("field '{field}': {msg}")
}

/// Deserializes `text` key by key so a bad value's error can name its key.
fn locate_field_error(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    for (key, value) in table.iter() {
        let mut one = toml::Table::new();
        one.insert(key.clone(), value.clone());
        if let Err(e) = toml::Value::Table(one).try_into::<Config>() {
            let m = e.message();
            if m.starts_with("unknown field") {
                return Some(format!("unknown field '{key}'"));
            }
            if let Some(rest) = m.strip_prefix("unknown variant ") {
                // `x`, expected one of `a`, `b` → expected one of a, b
                let expected = rest
                    .split_once("expected ")
                    .map(|(_, e)| e.replace('`', ""))
                    .unwrap_or_default();
                return Some(format!("field '{key}': expected {expected}"));
            }
            return Some(field_error(key, m));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_toml("").expect("empty config");
        assert_eq!(c.port, 6379);
        assert_eq!(c.bind, "127.0.0.1");
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.databases, 16);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::from_toml("porty = 1\n").expect_err("unknown");
        assert_eq!(e.to_string(), "config error: unknown field 'porty'");
    }

    #[test]
    fn bad_enum_names_field() {
        let e = Config::from_toml("fsync = \"sometimes\"\n").expect_err("bad fsync");
        assert_eq!(
            e.to_string(),
            "config error: field 'fsync': expected one of always, everysec, never"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn bad_type_names_field() {
        let e = Config::from_toml("port = \"x\"\n").expect_err("bad port");
        assert!(e.to_string().contains("'port'"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn debug_hides_token() {
        let c = Config::from_toml("token = \"s3cret-value\"\n").expect("config");
        assert!(!format!("{c:?}").contains("s3cret-value"));
    }

    #[test]
    fn range_checks() {
        let e = Config::from_toml("databases = 0\n").expect_err("bad");
        assert!(e.to_string().contains("field 'databases'"));
        let e =
            Config::from_toml("l0_compaction_trigger = 8\nl0_stop_trigger = 4\n").expect_err("bad");
        assert!(e.to_string().contains("field 'l0_stop_trigger'"));
        let e = Config::from_toml("background_nice = 20\n").expect_err("bad");
        assert!(e.to_string().contains("field 'background_nice'"));
        let c = Config::from_toml("background_nice = 7\n").expect("config");
        assert_eq!(c.engine_config().background_nice, 7);
        assert_eq!(Config::default().engine_config().idle_compaction_ms, 200);
        let c = Config::from_toml("idle_compaction_ms = 0\n").expect("config");
        assert_eq!(c.engine_config().idle_compaction_ms, 0);
        let e = Config::from_toml("idle_compaction_ms = -1\n").expect_err("bad");
        assert!(e.to_string().contains("idle_compaction_ms"), "{e}");
        let c = Config::from_toml("io_threads = 4\nio_loops = 4\n").expect("config");
        assert_eq!((c.io_threads, c.io_loops), (4, 4));
        assert_eq!(Config::default().io_loops, 0, "adaptive by default");
        let e = Config::from_toml("io_threads = 2\nio_loops = 3\n").expect_err("bad");
        assert!(e.to_string().contains("field 'io_loops'"), "{e}");
        let e = Config::from_toml("io_threads = 0\nio_loops = 1\n").expect_err("bad");
        assert!(e.to_string().contains("field 'io_loops'"), "{e}");
    }

    #[test]
    fn shipped_configs_parse() {
        for f in ["config_safe.toml", "config_fast.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            let c = Config::from_file(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
            if f == "config_safe.toml" {
                assert_eq!(c.fsync, FsyncPolicy::Always);
            } else {
                assert_eq!(c.fsync, FsyncPolicy::Never);
            }
        }
    }
}
