//! A process' counters from `/proc` (Linux; elsewhere every read is `None`). One parser for
//! INFO, the tests, the soak and the benchmarks.

/// The number after `name:` in `/proc/<pid>/<file>` (`pid` a number or `self`), its unit
/// dropped: `status` memory fields are KiB, `io` fields bytes, `Threads` a count.
pub fn field(pid: &str, file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A memory field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `VmHWM`...) in bytes.
pub fn status_bytes(pid: &str, name: &str) -> Option<u64> {
    field(pid, "status", name).map(|kib| kib * 1024)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reads_own_status_and_io() {
        assert!(super::status_bytes("self", "VmRSS").is_some_and(|b| b > 0));
        assert!(super::field("self", "status", "Threads").is_some_and(|n| n >= 1));
        assert!(super::field("self", "io", "write_bytes").is_some());
        assert!(super::field("self", "status", "NoSuchField").is_none());
    }
}
