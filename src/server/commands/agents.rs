//! AGENT LIST / AGENT INFO <name> / AGENT SET <name> <policy>: the engine's agents as the
//! blackboard reports them.

use bytes::Bytes;

use super::{e_arity, e_subcommand};
use crate::engine::AgentStats;
use crate::server::connection::Conn;
use crate::server::resp::Reply;

fn agent_map(a: &AgentStats) -> Reply {
    Reply::Map(vec![
        (Reply::bulk_str("name"), Reply::bulk_str(&a.name)),
        (Reply::bulk_str("state"), Reply::bulk_str(&a.state)),
        (Reply::bulk_str("policy"), Reply::bulk_str(&a.policy)),
        (Reply::bulk_str("tasks"), Reply::Int(a.tasks as i64)),
        (
            Reply::bulk_str("bytes_read"),
            Reply::Int(a.bytes_read as i64),
        ),
        (
            Reply::bulk_str("bytes_written"),
            Reply::Int(a.bytes_written as i64),
        ),
        (Reply::bulk_str("busy_ms"), Reply::Int(a.busy_ms as i64)),
    ])
}

pub fn agent(c: &mut Conn, a: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_lowercase();
    let engine = match c.engine() {
        Ok(e) => e,
        Err(r) => return r,
    };
    match sub.as_str() {
        "list" => {
            if a.len() != 2 {
                return e_arity("agent|list");
            }
            Reply::Array(engine.stats().agents.iter().map(agent_map).collect())
        }
        "info" => {
            if a.len() != 3 {
                return e_arity("agent|info");
            }
            let name = String::from_utf8_lossy(&a[2]);
            match engine.stats().agents.iter().find(|x| x.name == name) {
                Some(ag) => agent_map(ag),
                None => Reply::err(format!("ERR no such agent '{name}'")),
            }
        }
        "set" => {
            if a.len() != 4 {
                return e_arity("agent|set");
            }
            let name = String::from_utf8_lossy(&a[2]).to_ascii_lowercase();
            let policy = String::from_utf8_lossy(&a[3]).to_ascii_lowercase();
            if !engine.stats().agents.iter().any(|x| x.name == name) {
                return Reply::err(format!("ERR no such agent '{name}'"));
            }
            if name != "compaction" {
                return Reply::err(format!(
                    "ERR agent '{name}' has no swappable policy (only 'compaction' has)"
                ));
            }
            match engine.set_compaction_policy(&policy) {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::err(format!("ERR {e}")),
            }
        }
        "help" => Reply::Array(
            [
                "AGENT <subcommand> [<arg> ...]. Subcommands are:",
                "LIST",
                "    List the engine's agents with their state, policy and counters.",
                "INFO <name>",
                "    Show one agent.",
                "SET <name> <policy>",
                "    Swap an agent's policy (e.g. compaction leveled|tiered).",
                "HELP",
                "    Print this help.",
            ]
            .iter()
            .map(|s| Reply::Simple((*s).into()))
            .collect(),
        ),
        _ => e_subcommand("agent", &a[1]),
    }
}
