//! Connection commands: PING, AUTH, HELLO, RESET, SELECT, CLIENT.

use bytes::Bytes;

use super::{e_arity, e_int, e_subcommand, e_syntax, eq_ic, parse_i64};
use crate::server::connection::Conn;
use crate::server::resp::Reply;

pub const REDIS_VERSION: &str = "7.0.15";

pub fn ping(_c: &mut Conn, a: &[Bytes]) -> Reply {
    match a.len() {
        1 => Reply::simple("PONG"),
        2 => Reply::Bulk(a[1].clone()),
        _ => e_arity("ping"),
    }
}

fn wrongpass() -> Reply {
    Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
}

/// Checks a user/password pair: only the `default` user exists, its password is the token.
fn check(c: &Conn, user: Option<&[u8]>, pass: &[u8]) -> bool {
    let user_ok = user.is_none_or(|u| u == b"default");
    // Compare even when the user is wrong so timing says nothing about the token.
    let pass_ok = c.shared.token.matches(pass);
    user_ok && pass_ok
}

pub fn auth(c: &mut Conn, a: &[Bytes]) -> Reply {
    let ok = match a.len() {
        2 => check(c, None, &a[1]),
        3 => check(c, Some(&a[1]), &a[2]),
        _ => return e_syntax(),
    };
    if ok {
        c.authenticated = true;
        Reply::ok()
    } else {
        wrongpass()
    }
}

/// Redis accepts client names of printable ASCII without spaces.
fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn bad_name() -> Reply {
    Reply::err("ERR Client names cannot contain spaces, newlines or special characters.")
}

pub fn hello(c: &mut Conn, a: &[Bytes]) -> Reply {
    let mut ver = None;
    let mut j = 1;
    if a.len() >= 2 {
        match parse_i64(&a[1]) {
            Some(v) if (2..=3).contains(&v) => ver = Some(v as u8),
            Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
            None => return Reply::err("ERR Protocol version is not an integer or out of range"),
        }
        j = 2;
    }
    let mut creds: Option<(Bytes, Bytes)> = None;
    let mut name: Option<Bytes> = None;
    while j < a.len() {
        let more = a.len() - 1 - j;
        if eq_ic(&a[j], "auth") && more >= 2 {
            creds = Some((a[j + 1].clone(), a[j + 2].clone()));
            j += 3;
        } else if eq_ic(&a[j], "setname") && more >= 1 {
            name = Some(a[j + 1].clone());
            j += 2;
        } else {
            return Reply::err(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[j])
            ));
        }
    }
    if let Some((u, p)) = creds {
        if !check(c, Some(&u), &p) {
            return wrongpass();
        }
        c.authenticated = true;
    }
    if !c.authenticated {
        return Reply::err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(n) = name {
        if !valid_name(&n) {
            return bad_name();
        }
        c.info.lock().name = if n.is_empty() { None } else { Some(n) };
    }
    if let Some(v) = ver {
        c.proto = v;
        c.info.lock().proto = v;
    }
    Reply::Map(vec![
        (Reply::bulk_str("server"), Reply::bulk_str("redis")),
        (Reply::bulk_str("version"), Reply::bulk_str(REDIS_VERSION)),
        (Reply::bulk_str("proto"), Reply::Int(c.proto as i64)),
        (Reply::bulk_str("id"), Reply::Int(c.id as i64)),
        (Reply::bulk_str("mode"), Reply::bulk_str("standalone")),
        (Reply::bulk_str("role"), Reply::bulk_str("master")),
        (Reply::bulk_str("modules"), Reply::Array(vec![])),
    ])
}

pub fn reset(c: &mut Conn) -> Reply {
    c.multi = None;
    c.multi_dirty = false;
    c.watched.clear();
    c.db = 0;
    c.proto = 2;
    // The default user needs the token, so a reset connection must authenticate again.
    c.authenticated = false;
    let mut info = c.info.lock();
    info.db = 0;
    info.proto = 2;
    info.name = None;
    info.multi = None;
    Reply::simple("RESET")
}

pub fn select(c: &mut Conn, a: &[Bytes]) -> Reply {
    let Some(idx) = parse_i64(&a[1]) else {
        return e_int();
    };
    let dbs = c.shared.cfg.read().databases as i64;
    if idx < 0 || idx >= dbs {
        return Reply::err("ERR DB index is out of range");
    }
    c.db = idx as u8;
    c.info.lock().db = c.db;
    Reply::ok()
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "LIST [options ...]",
    "    Return information about client connections.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set client library name or version (answers OK as Redis 7.2 does).",
    "HELP",
    "    Print this help.",
];

pub fn client(c: &mut Conn, a: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    let arity = |n: usize, exact: bool| -> Option<Reply> {
        let ok = if exact { a.len() == n } else { a.len() >= n };
        (!ok).then(|| e_arity(&format!("client|{sub}")))
    };
    match sub.as_str() {
        "help" => Reply::Array(
            CLIENT_HELP
                .iter()
                .map(|s| Reply::Simple((*s).into()))
                .collect(),
        ),
        "id" => arity(2, true).unwrap_or(Reply::Int(c.id as i64)),
        "getname" => arity(2, true).unwrap_or_else(|| match &c.info.lock().name {
            Some(n) => Reply::Bulk(n.clone()),
            None => Reply::Nil,
        }),
        "setname" => {
            if let Some(r) = arity(3, true) {
                return r;
            }
            if !valid_name(&a[2]) {
                return bad_name();
            }
            c.info.lock().name = if a[2].is_empty() {
                None
            } else {
                Some(a[2].clone())
            };
            Reply::ok()
        }
        "setinfo" => {
            if let Some(r) = arity(4, true) {
                return r;
            }
            if eq_ic(&a[2], "lib-name") {
                if !valid_name(&a[3]) {
                    return Reply::err(
                        "ERR lib-name cannot contain spaces, newlines or special characters.",
                    );
                }
                c.info.lock().lib_name = Some(a[3].clone());
            } else if eq_ic(&a[2], "lib-ver") {
                if !valid_name(&a[3]) {
                    return Reply::err(
                        "ERR lib-ver cannot contain spaces, newlines or special characters.",
                    );
                }
                c.info.lock().lib_ver = Some(a[3].clone());
            } else {
                return Reply::err(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(&a[2])
                ));
            }
            Reply::ok()
        }
        "info" => arity(2, true).unwrap_or_else(|| {
            let line = c.info.lock().line();
            Reply::Verbatim(Bytes::from(format!("{line}\n")))
        }),
        "list" => {
            let clients: Vec<_> = c.shared.clients.lock().values().cloned().collect();
            let mut s = String::new();
            for ci in clients {
                s.push_str(&ci.lock().line());
                s.push('\n');
            }
            Reply::Verbatim(Bytes::from(s))
        }
        "no-evict" | "no-touch" | "reply" | "tracking" | "caching" | "pause" | "unpause"
        | "kill" | "getredir" | "trackinginfo" => Reply::err(format!(
            "ERR CLIENT {} is not supported by sndv-kv",
            sub.to_ascii_uppercase()
        )),
        _ => e_subcommand("client", &a[1]),
    }
}
