//! Property tests of the request decoder and the command table: arbitrary bytes never panic
//! and never make the decoder hold more than it was given (plus one bounded reservation);
//! a valid stream decodes to the same commands however it is split into reads.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sndv_kv::server::commands::{self, DataCtx, Handler};
use sndv_kv::server::resp::{Limits, RequestParser};

/// The decoder never reserves more than this beyond the bytes it holds.
const MAX_RESERVE: usize = 1 << 20;

fn limits(authenticated: bool) -> Limits {
    Limits {
        max_bulk: 512 << 20,
        max_multibulk: 1 << 20,
        authenticated,
    }
}

/// Feeds `chunks` one by one; returns the decoded requests and whether a protocol error
/// ended the stream. Checks the memory bound after every step and runs each request's
/// argument parsing.
fn feed(chunks: &[Vec<u8>], authenticated: bool) -> (Vec<Vec<Bytes>>, bool) {
    let lim = limits(authenticated);
    let ctx = DataCtx {
        db: 0,
        max_bulk: 512 << 20,
        now_ms: 1_700_000_000_000,
    };
    let mut p = RequestParser::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut given = 0usize;
    for c in chunks {
        buf.extend_from_slice(c);
        given += c.len();
        loop {
            let r = p.next(&mut buf, &lim);
            assert!(
                buf.capacity() <= given + MAX_RESERVE + 64,
                "buffer capacity {} for {given} bytes given",
                buf.capacity()
            );
            // Parsed arguments: their bytes plus a fixed overhead each (an empty bulk is 6 bytes).
            assert!(p.buffered_bytes() <= given * 8);
            match r {
                Ok(Some(argv)) => {
                    if let Some(spec) = argv.first().and_then(|n| commands::lookup(n)) {
                        if let (true, Handler::Data(f)) = (spec.arity_ok(argv.len()), spec.handler)
                        {
                            let _ = f(&ctx, &argv);
                        }
                    }
                    out.push(argv);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Splits `data` at the given cut points (taken modulo its length).
fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    if data.is_empty() {
        return vec![];
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c % data.len()).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at {
        out.push(data[prev..a].to_vec());
        prev = a;
    }
    out.push(data[prev..].to_vec());
    out
}

fn command_name() -> impl Strategy<Value = Vec<u8>> {
    let names: Vec<&'static str> = commands::COMMANDS.iter().map(|c| c.name).collect();
    prop_oneof![
        proptest::sample::select(names).prop_map(|n| n.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[a-z]{1,6}".prop_map(String::into_bytes),
        any::<i64>().prop_map(|i| i.to_string().into_bytes()),
        proptest::sample::select(vec![
            "EX", "PX", "NX", "XX", "GET", "KEEPTTL", "COUNT", "MATCH"
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (command_name(), proptest::collection::vec(arg(), 0..6)).prop_map(|(n, mut a)| {
        a.insert(0, n);
        a
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        authenticated in any::<bool>(),
    ) {
        feed(&split(&data, &cuts), authenticated);
    }

    #[test]
    fn protocol_looking_bytes_never_panic(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                Just(b"-1".to_vec()), Just(b"0".to_vec()), Just(b"99999999999999999999".to_vec()),
                Just(b"\"".to_vec()), Just(b"'".to_vec()), Just(b"\\x4".to_vec()),
                Just(b" ".to_vec()), Just(b"\n".to_vec()),
                "[0-9]{1,3}".prop_map(String::into_bytes),
                "[a-z]{1,4}".prop_map(String::into_bytes),
            ],
            0..64,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        authenticated in any::<bool>(),
    ) {
        let data: Vec<u8> = parts.concat();
        feed(&split(&data, &cuts), authenticated);
    }

    #[test]
    fn valid_streams_decode_the_same_however_split(
        reqs in proptest::collection::vec(request(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let stream: Vec<u8> = reqs.iter().flat_map(|r| encode(r)).collect();
        let (whole, err) = feed(std::slice::from_ref(&stream), true);
        prop_assert!(!err);
        let want: Vec<Vec<Bytes>> = reqs
            .iter()
            .map(|r| r.iter().map(|a| Bytes::copy_from_slice(a)).collect())
            .collect();
        prop_assert_eq!(&whole, &want);
        let (pieces, err) = feed(&split(&stream, &cuts), true);
        prop_assert!(!err);
        prop_assert_eq!(pieces, want);
    }
}
