//! A pipeline of 1,000 commands through the async `redis` client: replies in order, and the
//! writes of one pipeline (one engine write group) see each other.
mod server_support;

use server_support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_1000() {
    let s = Server::start();
    let client = s.client();
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("async connection");
    let mut p = redis::pipe();
    for i in 0..1000 {
        match i % 4 {
            0 => p.cmd("SET").arg(format!("k{i}")).arg(i),
            1 => p.cmd("INCR").arg("counter"),
            2 => p.cmd("GET").arg(format!("k{}", i - 2)),
            _ => p.cmd("APPEND").arg("log").arg("x"),
        };
    }
    let replies: Vec<redis::Value> = p.query_async(&mut c).await.expect("pipeline");
    assert_eq!(replies.len(), 1000);
    for (i, r) in replies.iter().enumerate() {
        match i % 4 {
            0 => assert_eq!(*r, redis::Value::Okay, "reply {i}"),
            1 => assert_eq!(*r, redis::Value::Int((i / 4 + 1) as i64), "reply {i}"),
            2 => assert_eq!(
                *r,
                redis::Value::BulkString(format!("{}", i - 2).into_bytes()),
                "reply {i}"
            ),
            _ => assert_eq!(*r, redis::Value::Int((i / 4 + 1) as i64), "reply {i}"),
        }
    }
    let n: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut c)
        .await
        .expect("get");
    assert_eq!(n, 250);
}

fn write_groups(raw: &mut server_support::Raw) -> u64 {
    let info = raw.roundtrip("INFO stats\r\n");
    let text = String::from_utf8_lossy(&info);
    text.lines()
        .find_map(|l| l.strip_prefix("write_groups:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_groups in INFO stats")
}

#[test]
fn consecutive_writes_share_a_group() {
    let s = Server::start();
    let mut raw = s.raw_authed();
    let before = write_groups(&mut raw);
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend_from_slice(&server_support::resp(&[
            b"INCR",
            format!("c{}", i % 10).as_bytes(),
        ]));
    }
    raw.send(&batch);
    let replies = raw.read_replies(1000);
    assert_eq!(server_support::count_replies(&replies), 1000);
    let after = write_groups(&mut raw);
    // One group per read of the socket, not one per command.
    assert!(
        after - before < 200,
        "{} groups for 1000 writes",
        after - before
    );
    assert_eq!(raw.roundtrip("GET c3\r\n"), b"$3\r\n100\r\n");
}

/// Connections on the same event loop have their writes committed in one batch: each still
/// gets its own replies, in its own order, and every increment lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_get_their_own_replies() {
    let s = Server::start();
    let client = s.client();
    let mut tasks = Vec::new();
    for conn in 0..12 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .expect("async connection");
            let mut shared = Vec::new();
            for i in 1..=60i64 {
                let mut p = redis::pipe();
                p.cmd("INCR").arg("shared");
                p.cmd("INCR").arg(format!("own:{conn}"));
                p.cmd("SET").arg(format!("last:{conn}")).arg(i).ignore();
                let (s, own): (i64, i64) = p.query_async(&mut c).await.expect("pipeline");
                assert_eq!(own, i, "connection {conn}");
                shared.push(s);
            }
            shared
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let shared = t.await.expect("task");
        assert!(shared.windows(2).all(|w| w[0] < w[1]), "{shared:?}");
        all.extend(shared);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=12 * 60).collect::<Vec<i64>>());
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for conn in 0..12 {
        let last: i64 = redis::cmd("GET")
            .arg(format!("last:{conn}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(last, 60);
    }
}
