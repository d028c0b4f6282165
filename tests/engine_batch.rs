//! `Engine::write_many_async`: several write requests queued together (an event loop's
//! writes of one pass) are evaluated in order, each atomic on its own, and answered together.

mod common;

use bytes::Bytes;
use common::*;
use sndv_kv::engine::{Engine, EngineConfig, Error, FsyncPolicy, Op, View};

fn set(key: &'static str, value: &'static str) -> Op<i64> {
    Box::new(move |v: &mut View<'_>| {
        v.put(Bytes::from(key), Bytes::from(value), None);
        0
    })
}

fn boom() -> Op<i64> {
    Box::new(|v: &mut View<'_>| {
        v.put(Bytes::from("never"), Bytes::from("written"), None);
        panic!("operation fails on purpose")
    })
}

async fn batch_semantics(e: &Engine) {
    let res = e
        .write_many_async(vec![
            vec![set("a", "1")],
            vec![incr("a")],
            // Its own put is rolled back; the other requests are not affected.
            vec![incr("a"), boom()],
            vec![incr("a"), incr("b")],
            vec![],
        ])
        .await
        .expect("batch queued");
    assert_eq!(res.len(), 5);
    assert_eq!(res[0].as_ref().unwrap(), &vec![0]);
    // Each request sees the ones before it in the batch.
    assert_eq!(res[1].as_ref().unwrap(), &vec![2]);
    assert!(matches!(res[2], Err(Error::Invalid(_))), "{:?}", res[2]);
    assert_eq!(res[3].as_ref().unwrap(), &vec![3, 1]);
    assert!(res[4].as_ref().unwrap().is_empty());
    assert_eq!(get_str(e, "a").as_deref(), Some("3"));
    assert_eq!(get_str(e, "b").as_deref(), Some("1"));
    assert_eq!(get_str(e, "never"), None);
    assert!(e.write_many_async::<i64>(vec![]).await.unwrap().is_empty());
}

fn config(fsync: FsyncPolicy) -> EngineConfig {
    EngineConfig {
        // Every request its own group, and fewer backpressure permits than operations:
        // the batch is answered once, after its last group.
        max_group_bytes: 1,
        write_queue_bytes: 2048,
        ..tiny_config(fsync)
    }
}

#[test]
fn batch_on_an_event_loop_with_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config(FsyncPolicy::Always)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(batch_semantics(&e));
    // The runtime's blocking pool may hold a clone of the engine.
    drop(rt);
    e.close().unwrap();
    drop(e);
    // Durable: a reopened engine has the batch.
    let e = Engine::open(dir.path(), config(FsyncPolicy::Always)).unwrap();
    assert_eq!(get_str(&e, "a").as_deref(), Some("3"));
    assert_eq!(get_str(&e, "never"), None);
}

#[test]
fn batch_on_a_multi_thread_runtime_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config(FsyncPolicy::Never)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(batch_semantics(&e));
}

#[test]
fn batches_from_many_tasks_keep_each_requests_order() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), tiny_config(FsyncPolicy::Always)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts: Vec<Vec<i64>> = rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..50 {
                        let r = e
                            .write_many_async(vec![vec![incr("n")], vec![incr("n"), incr("n")]])
                            .await
                            .unwrap();
                        for part in r {
                            seen.extend(part.unwrap());
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut all: Vec<i64> = counts.iter().flatten().copied().collect();
    for c in &counts {
        // Three increments per batch, in request order, each batch after the previous one.
        assert!(c.windows(2).all(|w| w[0] < w[1]), "{c:?}");
    }
    all.sort_unstable();
    assert_eq!(all, (1..=8 * 50 * 3).collect::<Vec<i64>>());
    assert_eq!(get_str(&e, "n").as_deref(), Some("1200"));
}
