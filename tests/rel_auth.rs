//! Authentication cannot be skipped, and the token does not leak:
//! - every command of the server's table answers NOAUTH before AUTH (or its arity error
//!   first, as Redis does) and has no effect; only AUTH, HELLO (with AUTH), RESET and QUIT
//!   work, on every connection, pipelined and around MULTI;
//! - wrong tokens answer WRONGPASS;
//! - the token never appears in trace-level logs, INFO, CLIENT LIST or CONFIG GET *; the
//!   generated token file is mode 0600.
mod rel_support;

use std::os::unix::fs::PermissionsExt;

use rel_support::{enc, Bin, Client, R, TOKEN};
use sndv_kv::server::commands::{self, CommandSpec};

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn is_pre_auth(spec: &CommandSpec) -> bool {
    spec.flags & commands::NOAUTH != 0
}

/// `n` arguments (the name included) for `spec`: keys and numbers that a real command would
/// accept, so only authentication can stop it.
fn argv(spec: &CommandSpec, n: usize) -> Vec<Vec<u8>> {
    let mut v = vec![spec.name.to_uppercase().into_bytes()];
    for i in 1..n {
        v.push(if i == 1 {
            b"victim".to_vec()
        } else {
            b"1".to_vec()
        });
    }
    v
}

fn send_argv(c: &mut Client, a: &[Vec<u8>]) -> R {
    let refs: Vec<&[u8]> = a.iter().map(|x| x.as_slice()).collect();
    c.cmd(&refs).expect("reply")
}

fn start_plain(tmp: &tempfile::TempDir, name: &str, log: &str) -> Bin {
    let dir = tmp.path().join("data");
    Bin::start(
        &dir,
        &["--token", TOKEN],
        &[("RUST_LOG", log)],
        Some(TOKEN),
        name,
    )
}

#[test]
fn every_command_needs_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start_plain(&tmp, "noauth", "warn");
    let mut admin = Client::authed(srv.port).unwrap();
    assert_eq!(
        admin.q(&["SET", "victim", "intact"]),
        R::Simple("OK".into())
    );

    let mut c = Client::connect(srv.port).unwrap();
    let mut checked = 0;
    for spec in commands::COMMANDS {
        if is_pre_auth(spec) {
            continue;
        }
        let want = spec.arity.unsigned_abs() as usize;
        // With a valid argument count: NOAUTH, whatever the command (SHUTDOWN, FLUSHALL...).
        for n in [want, want + 1, want + 2] {
            if spec.arity > 0 && n != want {
                continue;
            }
            let r = send_argv(&mut c, &argv(spec, n));
            assert_eq!(r, R::Err(NOAUTH.into()), "{} with {n} args", spec.name);
            checked += 1;
        }
        // With a wrong count: the arity error comes first, as in Redis.
        let wrong = if spec.arity > 0 { want + 1 } else { want - 1 };
        if wrong >= 1 {
            let r = send_argv(&mut c, &argv(spec, wrong));
            assert_eq!(
                r,
                R::Err(format!(
                    "ERR wrong number of arguments for '{}' command",
                    spec.name
                )),
                "{} with {wrong} args",
                spec.name
            );
        }
    }
    assert!(checked > 50, "only {checked} commands checked");
    // Subcommands too (CLIENT LIST, CONFIG GET, COMMAND, AGENT ...), and lower case.
    for line in [
        "client list",
        "CLIENT SETNAME x",
        "CONFIG GET *",
        "config set maxclients 1",
        "COMMAND",
        "COMMAND COUNT",
        "AGENT LIST",
        "INFO",
        "DBSIZE",
        "KEYS *",
        "SCAN 0",
        "SELECT 1",
        "PING",
        "ECHO hi",
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH victim",
        "FLUSHALL",
        "SHUTDOWN NOSAVE",
    ] {
        let r = c.q(&line.split(' ').collect::<Vec<_>>());
        assert_eq!(r, R::Err(NOAUTH.into()), "{line}");
    }
    // Nothing happened: the key is intact and the server is up.
    assert_eq!(admin.q(&["GET", "victim"]).bulk(), Some(&b"intact"[..]));
    assert_eq!(admin.q(&["DBSIZE"]), R::Int(1));
    let cfg = admin.q(&["CONFIG", "GET", "maxclients"]).text();
    assert!(!cfg.contains("\"1\""), "{cfg}");
}

#[test]
fn pipelined_multi_and_other_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start_plain(&tmp, "pipeline", "warn");

    // One write with everything: only the AUTH in the middle unlocks what follows it.
    let mut c = Client::connect(srv.port).unwrap();
    let mut out = Vec::new();
    for a in [
        &[&b"SET"[..], b"k", b"before"][..],
        &[b"AUTH", b"wrong"],
        &[b"GET", b"k"],
        &[b"AUTH", TOKEN.as_bytes()],
        &[b"SET", b"k", b"after"],
        &[b"GET", b"k"],
        &[b"RESET"],
        &[b"GET", b"k"],
    ] {
        out.extend(enc(a));
    }
    out.extend_from_slice(b"GET k\r\n");
    c.send(&out).unwrap();
    let got: Vec<R> = (0..9).map(|_| c.read().unwrap()).collect();
    assert_eq!(
        got,
        vec![
            R::Err(NOAUTH.into()),
            R::Err(WRONGPASS.into()),
            R::Err(NOAUTH.into()),
            R::Simple("OK".into()),
            R::Simple("OK".into()),
            R::Bulk(Some(b"after".to_vec())),
            R::Simple("RESET".into()),
            R::Err(NOAUTH.into()),
            R::Err(NOAUTH.into()),
        ]
    );

    // MULTI before AUTH is NOAUTH; nothing gets queued, EXEC is NOAUTH too.
    let mut c = Client::connect(srv.port).unwrap();
    assert_eq!(c.q(&["MULTI"]), R::Err(NOAUTH.into()));
    assert_eq!(c.q(&["SET", "k", "in-multi"]), R::Err(NOAUTH.into()));
    assert_eq!(c.q(&["EXEC"]), R::Err(NOAUTH.into()));
    assert_eq!(c.q(&["AUTH", TOKEN]), R::Simple("OK".into()));
    assert_eq!(c.q(&["EXEC"]), R::Err("ERR EXEC without MULTI".into()));
    assert_eq!(c.q(&["GET", "k"]).bulk(), Some(&b"after"[..]));
    // RESET inside MULTI drops the transaction and the authentication.
    assert_eq!(c.q(&["MULTI"]), R::Simple("OK".into()));
    assert_eq!(c.q(&["SET", "k", "queued"]), R::Simple("QUEUED".into()));
    assert_eq!(c.q(&["RESET"]), R::Simple("RESET".into()));
    assert_eq!(c.q(&["EXEC"]), R::Err(NOAUTH.into()));
    assert_eq!(c.q(&["GET", "k"]), R::Err(NOAUTH.into()));

    // Authenticating one connection authenticates no other.
    let _authed: Vec<Client> = (0..5).map(|_| Client::authed(srv.port).unwrap()).collect();
    for _ in 0..20 {
        let mut c = Client::connect(srv.port).unwrap();
        assert_eq!(c.q(&["GET", "k"]), R::Err(NOAUTH.into()));
        assert_eq!(c.q(&["PING"]), R::Err(NOAUTH.into()));
    }

    // Wrong tokens, in every form.
    let mut c = Client::connect(srv.port).unwrap();
    let longer = format!("{TOKEN}x");
    let shorter = &TOKEN[..TOKEN.len() - 1];
    let upper = TOKEN.to_uppercase();
    for args in [
        vec!["AUTH", "wrong"],
        vec!["AUTH", ""],
        vec!["AUTH", &longer],
        vec!["AUTH", shorter],
        vec!["AUTH", &upper],
        vec!["AUTH", "default", "wrong"],
        vec!["AUTH", "admin", TOKEN],
        vec!["HELLO", "3", "AUTH", "default", "wrong"],
        vec!["HELLO", "2", "AUTH", "root", TOKEN],
    ] {
        assert_eq!(c.q(&args), R::Err(WRONGPASS.into()), "{args:?}");
        assert_eq!(c.q(&["GET", "k"]), R::Err(NOAUTH.into()), "after {args:?}");
    }
    let hello = c.q(&["HELLO", "3"]);
    assert!(
        hello.text().starts_with("NOAUTH HELLO must be called"),
        "{hello:?}"
    );
    // The commands that work before AUTH.
    let mut q = Client::connect(srv.port).unwrap();
    assert_eq!(q.q(&["RESET"]), R::Simple("RESET".into()));
    assert_eq!(q.q(&["GET", "k"]), R::Err(NOAUTH.into()));
    assert_eq!(q.q(&["QUIT"]), R::Simple("OK".into()));
    assert!(q.wait_closed(std::time::Duration::from_secs(60)));
    let mut h = Client::connect(srv.port).unwrap();
    assert!(matches!(
        h.q(&["HELLO", "2", "AUTH", "default", TOKEN]),
        R::Array(Some(_))
    ));
    assert_eq!(h.q(&["GET", "k"]).bulk(), Some(&b"after"[..]));
    // AUTH with a valid token after failures works (no lock-out).
    assert_eq!(c.q(&["AUTH", "default", TOKEN]), R::Simple("OK".into()));
    assert_eq!(c.q(&["GET", "k"]).bulk(), Some(&b"after"[..]));
}

/// Exercises every place a token might leak and returns what the server showed.
fn poke_everything(port: u16, token: &str) -> String {
    let mut shown = String::new();
    let mut c = Client::connect(port).unwrap();
    for args in [
        vec!["AUTH", "wrong"],
        vec!["AUTH", &format!("{token}x")],
        vec!["AUTH", "someone", token],
        vec!["HELLO", "3", "AUTH", "default", &format!("x{token}")],
    ] {
        let _ = c.q(&args);
    }
    let mut c = Client::connect(port).unwrap();
    let hello = c.q(&[
        "HELLO",
        "2",
        "AUTH",
        "default",
        token,
        "SETNAME",
        "leakcheck",
    ]);
    assert!(!hello.is_err(), "{hello:?}");
    let mut other = Client::connect(port).unwrap();
    assert_eq!(other.q(&["AUTH", token]), R::Simple("OK".into()));
    for args in [
        vec!["INFO", "everything"],
        vec!["INFO"],
        vec!["CLIENT", "LIST"],
        vec!["CLIENT", "INFO"],
        vec!["CONFIG", "GET", "*"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["CONFIG", "GET", "token"],
        vec!["AGENT", "LIST"],
        vec!["COMMAND", "INFO", "auth"],
    ] {
        let r = c.q(&args);
        assert!(!r.is_err(), "{args:?}: {r:?}");
        shown.push_str(&format!("{r:?}\n"));
    }
    // A transaction and a few writes so the trace logs have something to say.
    assert_eq!(c.q(&["MULTI"]), R::Simple("OK".into()));
    assert_eq!(c.q(&["SET", "a", "1"]), R::Simple("QUEUED".into()));
    assert!(matches!(c.q(&["EXEC"]), R::Array(Some(_))));
    assert_eq!(c.q(&["SET", "b", "2"]), R::Simple("OK".into()));
    assert_eq!(c.q(&["AUTH", token]), R::Simple("OK".into()));
    shown
}

#[test]
fn token_never_leaks() {
    // Configured token, trace-level logs.
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = start_plain(&tmp, "trace", "trace");
    let shown = poke_everything(srv.port, TOKEN);
    assert!(!shown.contains(TOKEN), "token shown to a client:\n{shown}");
    srv.stop();
    let log = std::fs::read_to_string(&srv.stderr_path).unwrap();
    assert!(
        log.contains("listening on"),
        "logs were not captured: {log}"
    );
    assert!(!log.contains(TOKEN), "token in the logs");
    let out = std::fs::read_to_string(&srv.stdout_path).unwrap();
    assert!(!out.contains(TOKEN), "configured token printed: {out}");

    // The same through SNDV_KV_TOKEN.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let env_token = "env-token-9d8c7b6a5f4e3d2c1b0a";
    let mut srv = Bin::start(
        &dir,
        &[],
        &[("RUST_LOG", "trace"), ("SNDV_KV_TOKEN", env_token)],
        Some(env_token),
        "env",
    );
    let shown = poke_everything(srv.port, env_token);
    assert!(!shown.contains(env_token), "{shown}");
    srv.stop();
    let log = std::fs::read_to_string(&srv.stderr_path).unwrap();
    assert!(!log.contains(env_token), "env token in the logs");

    // Generated token: stored 0600, printed once on stdout, nowhere else.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut srv = Bin::start(&dir, &[], &[("RUST_LOG", "trace")], None, "gen1");
    let file = dir.join("admin.token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.len() >= 32, "weak generated token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token mode {mode:o}");
    let shown = poke_everything(srv.port, &token);
    assert!(!shown.contains(&token), "{shown}");
    srv.stop();
    let log = std::fs::read_to_string(&srv.stderr_path).unwrap();
    assert!(!log.contains(&token), "generated token in the logs");
    let out = std::fs::read_to_string(&srv.stdout_path).unwrap();
    assert_eq!(out.matches(&token).count(), 1, "printed once: {out}");
    // Later starts reuse it and print only the path.
    let mut srv = Bin::start(&dir, &[], &[("RUST_LOG", "trace")], Some(&token), "gen2");
    srv.stop();
    let out = std::fs::read_to_string(&srv.stdout_path).unwrap();
    assert!(!out.contains(&token), "{out}");
    assert!(out.contains("admin.token"), "{out}");
    let log = std::fs::read_to_string(&srv.stderr_path).unwrap();
    assert!(!log.contains(&token), "generated token in the logs");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
