//! AGENT LIST / INFO / SET through the server: `AGENT SET compaction tiered` while another
//! connection writes; the swap shows in AGENT INFO and INFO, and no write is lost.
mod server_support;

use redis::Commands;
use server_support::Server;

#[test]
fn agent_set_swaps_compaction_policy_while_writing() {
    let s = Server::start();
    let mut admin = s.conn();
    let names: Vec<redis::Value> = redis::cmd("AGENT").arg("LIST").query(&mut admin).unwrap();
    assert!(
        names.len() >= 3,
        "ingest, flush and compaction agents: {names:?}"
    );

    let writer = {
        let client = s.client();
        std::thread::spawn(move || {
            let mut c = client.get_connection().unwrap();
            for i in 0..3000 {
                let _: () = c.set(format!("w{i}"), format!("v{i}")).unwrap();
            }
        })
    };
    let ok: String = redis::cmd("AGENT")
        .arg("SET")
        .arg("compaction")
        .arg("tiered")
        .query(&mut admin)
        .unwrap();
    assert_eq!(ok, "OK");
    writer.join().unwrap();

    let info: redis::InfoDict = redis::cmd("AGENT")
        .arg("INFO")
        .arg("compaction")
        .query(&mut admin)
        .map(|v: Vec<String>| {
            let text: String = v
                .chunks(2)
                .map(|kv| format!("{}:{}\r\n", kv[0], kv.get(1).cloned().unwrap_or_default()))
                .collect();
            redis::InfoDict::new(&text)
        })
        .unwrap();
    assert_eq!(info.get::<String>("policy").as_deref(), Some("tiered"));

    let bad: redis::RedisResult<String> = redis::cmd("AGENT")
        .arg("SET")
        .arg("compaction")
        .arg("nonsense")
        .query(&mut admin);
    assert!(bad.is_err());
    let bad: redis::RedisResult<String> = redis::cmd("AGENT")
        .arg("SET")
        .arg("flush")
        .arg("tiered")
        .query(&mut admin);
    assert!(bad.is_err());

    for i in (0..3000).step_by(97) {
        let v: String = admin.get(format!("w{i}")).unwrap();
        assert_eq!(v, format!("v{i}"));
    }
}
