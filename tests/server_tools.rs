//! Real Redis tools against the server: `redis-cli` (plain commands, both output formats, and
//! `--pipe` mass insertion) and `redis-benchmark` (quiet and CSV output). The expected outputs
//! are what redis-cli 7.0.15 prints against redis-server 7.0.15. Without the tools the tests are
//! skipped with a message, unless CI=true (then they fail).
//!
//! The mass insertion and the benchmark are heavy, so the tests of this file take turns.

mod server_support;

use server_support::{Server, TOKEN};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static HEAVY: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tool's path, or `None` (test skipped) when it is missing outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is required in CI (install redis-tools)");
        }
        eprintln!("skipping: {name} not found (install redis-tools; with CI=true this fails)");
    }
    found
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` feeding it `input`, killing it (and failing) after `limit`.
fn run(mut cmd: Command, input: Vec<u8>, limit: Duration) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        // A tool that exits early closes its end; the error shows up in its output instead.
        let _ = stdin.write_all(&input);
    });
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned();
    Out {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn cli_cmd(cli: &PathBuf, s: &Server, extra: &[&str]) -> Command {
    let mut c = Command::new(cli);
    c.args(["--no-auth-warning", "-a", TOKEN, "-h", "127.0.0.1", "-p"])
        .arg(s.port.to_string())
        .args(extra);
    c
}

/// One redis-cli invocation; its stdout (checked to have exited 0 with nothing on stderr).
fn cli(cli_path: &PathBuf, s: &Server, args: &[&str]) -> String {
    let o = run(
        cli_cmd(cli_path, s, args),
        Vec::new(),
        Duration::from_secs(60),
    );
    assert_eq!(
        o.code,
        Some(0),
        "redis-cli {args:?}: stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    assert_eq!(o.stderr, "", "redis-cli {args:?} wrote to stderr");
    o.stdout
}

#[test]
fn redis_cli_commands_print_what_redis_prints() {
    let Some(path) = tool("redis-cli") else {
        return;
    };
    let _turn = one_at_a_time();
    let s = Server::start();
    // Output to a pipe: redis-cli's raw format.
    let raw: &[(&[&str], &str)] = &[
        (&["SET", "k", "v"], "OK\n"),
        (&["GET", "k"], "v\n"),
        (&["DEL", "k"], "1\n"),
        (&["GET", "k"], "\n"),
        (&["DEL", "k"], "0\n"),
        (&["SET", "n", "1"], "OK\n"),
        (&["INCR", "n"], "2\n"),
        (&["SET", "t", "x"], "OK\n"),
        (
            &["INCR", "t"],
            "ERR value is not an integer or out of range\n\n",
        ),
        (&["MSET", "a", "1", "b", "2"], "OK\n"),
        (&["MGET", "a", "b", "zz"], "1\n2\n\n"),
        (&["SET", "sp", "two words"], "OK\n"),
        (&["GET", "sp"], "two words\n"),
        (&["DBSIZE"], "5\n"),
    ];
    for (args, want) in raw {
        assert_eq!(cli(&path, &s, args), *want, "redis-cli {args:?}");
    }
    // The format a terminal gets.
    let pretty: &[(&[&str], &str)] = &[
        (&["SET", "k", "v"], "OK\n"),
        (&["GET", "k"], "\"v\"\n"),
        (&["DEL", "k"], "(integer) 1\n"),
        (&["GET", "k"], "(nil)\n"),
        (
            &["INCR", "t"],
            "(error) ERR value is not an integer or out of range\n",
        ),
        (&["MGET", "a", "b", "zz"], "1) \"1\"\n2) \"2\"\n3) (nil)\n"),
        (&["DBSIZE"], "(integer) 5\n"),
    ];
    for (args, want) in pretty {
        let mut a = vec!["--no-raw"];
        a.extend_from_slice(args);
        assert_eq!(cli(&path, &s, &a), *want, "redis-cli {a:?}");
    }
    // A wrong token: redis-cli reports the failed AUTH, then the server's NOAUTH.
    let mut c = Command::new(&path);
    c.args(["--no-auth-warning", "-a", "wrong-token", "-h", "127.0.0.1"])
        .arg("-p")
        .arg(s.port.to_string())
        .args(["GET", "k"]);
    let o = run(c, Vec::new(), Duration::from_secs(60));
    assert_eq!(
        o.stderr,
        "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.\n"
    );
    assert_eq!(o.stdout, "NOAUTH Authentication required.\n\n");
}

/// The mass-insertion stream of the Redis docs: one RESP SET per key.
fn set_stream(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 48);
    for i in 0..n {
        let k = format!("key:{i}");
        let val = format!("value:{i}");
        v.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{val}\r\n",
                k.len(),
                val.len()
            )
            .as_bytes(),
        );
    }
    v
}

#[test]
fn redis_cli_pipe_mass_insertion() {
    let Some(path) = tool("redis-cli") else {
        return;
    };
    let _turn = one_at_a_time();
    let s = Server::start();
    const N: usize = 100_000;
    let o = run(
        cli_cmd(&path, &s, &["--pipe"]),
        set_stream(N),
        Duration::from_secs(600),
    );
    assert_eq!(
        o.code,
        Some(0),
        "redis-cli --pipe: stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    assert!(
        o.stdout
            .lines()
            .any(|l| l == format!("errors: 0, replies: {N}")),
        "redis-cli --pipe reported: {:?} (stderr {:?})",
        o.stdout,
        o.stderr
    );
    assert_eq!(cli(&path, &s, &["DBSIZE"]), format!("{N}\n"));
    for i in [0, 1, 4_999, 50_000, N - 1] {
        assert_eq!(
            cli(&path, &s, &["GET", &format!("key:{i}")]),
            format!("value:{i}\n")
        );
    }
}

/// Test names redis-benchmark prints for `-t ping,set,get,incr,mset`.
const BENCH_TESTS: &[&str] = &[
    "PING_INLINE",
    "PING_MBULK",
    "SET",
    "GET",
    "INCR",
    "MSET (10 keys)",
];

fn bench_cmd(path: &PathBuf, s: &Server, extra: &str) -> Command {
    let mut c = Command::new(path);
    c.args(["-a", TOKEN, "-h", "127.0.0.1", "-p"])
        .arg(s.port.to_string())
        .args(["-t", "ping,set,get,incr,mset", "-n", "20000", "-P", "16"])
        .arg(extra);
    c
}

fn assert_no_errors(what: &str, o: &Out) {
    assert_eq!(
        o.code,
        Some(0),
        "{what}: stdout {:?} stderr {:?}",
        o.stdout,
        o.stderr
    );
    for line in o.stdout.lines().chain(o.stderr.lines()) {
        let lower = line.to_ascii_lowercase();
        assert!(
            !line.contains("ERR") && !lower.contains("error") && !lower.contains("warning"),
            "{what} printed: {line:?}"
        );
    }
}

#[test]
fn redis_benchmark_runs_clean() {
    let Some(path) = tool("redis-benchmark") else {
        return;
    };
    let _turn = one_at_a_time();
    let s = Server::start();

    let o = run(
        bench_cmd(&path, &s, "-q"),
        Vec::new(),
        Duration::from_secs(600),
    );
    assert_no_errors("redis-benchmark -q", &o);
    // Progress lines end in '\r' and are overwritten; the final one of each test ends in '\n'.
    let finals: Vec<&str> = o
        .stdout
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| l.contains("requests per second"))
        .collect();
    for t in BENCH_TESTS {
        let prefix = format!("{t}: ");
        let line = finals
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no result line for {t} in {:?}", o.stdout));
        let rps = line[prefix.len()..].split(' ').next().unwrap_or("");
        assert!(
            rps.parse::<f64>().is_ok_and(|r| r > 0.0),
            "bad rate in {line:?}"
        );
    }
    assert_eq!(finals.len(), BENCH_TESTS.len(), "{finals:?}");

    let o = run(
        bench_cmd(&path, &s, "--csv"),
        Vec::new(),
        Duration::from_secs(600),
    );
    assert_no_errors("redis-benchmark --csv", &o);
    let mut lines = o.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
             \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\""
        ),
        "{:?}",
        o.stdout
    );
    let rows: Vec<Vec<String>> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split(',')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, BENCH_TESTS, "{:?}", o.stdout);
    for r in &rows {
        assert_eq!(r.len(), 8, "{r:?}");
        for f in &r[1..] {
            assert!(
                f.parse::<f64>().is_ok_and(|x| x.is_finite() && x >= 0.0),
                "bad field in {r:?}"
            );
        }
        assert!(r[1].parse::<f64>().is_ok_and(|x| x > 0.0), "{r:?}");
    }
    // The server is still healthy afterwards.
    let mut c = s.conn();
    let pong: String = redis::cmd("PING").query(&mut c).expect("ping");
    assert_eq!(pong, "PONG");
}
