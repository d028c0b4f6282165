//! RESP request decoder + command table + argument parsing over arbitrary bytes, delivered in
//! arbitrary chunks, before and after AUTH. Must never panic, hang or allocate by a declared
//! length.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sndv_kv::server::commands::{self, DataCtx, Handler};
use sndv_kv::server::resp::{Limits, RequestParser};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let lim = Limits {
        max_bulk: 1 << 20,
        max_multibulk: 1 << 16,
        authenticated: ctl & 1 == 1,
    };
    // Chunk size for delivering the stream (1..=64, or all at once).
    let chunk = match (ctl >> 1) & 63 {
        0 => rest.len().max(1),
        n => n as usize,
    };
    let ctx = DataCtx {
        db: 0,
        max_bulk: 1 << 20,
        now_ms: 1_700_000_000_000,
    };
    let mut parser = RequestParser::default();
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parser.next(&mut buf, &lim) {
                Ok(Some(argv)) => run(&ctx, &argv),
                Ok(None) => break,
                Err(e) => {
                    let _ = e.reply_text();
                    return;
                }
            }
        }
    }
});

fn run(ctx: &DataCtx, argv: &[Bytes]) {
    let Some(name) = argv.first() else {
        return;
    };
    let Some(spec) = commands::lookup(name) else {
        let _ = commands::e_unknown(argv);
        return;
    };
    if !spec.arity_ok(argv.len()) {
        return;
    }
    // Argument parsing of data commands happens here, before any engine access.
    if let Handler::Data(f) = spec.handler {
        let _ = f(ctx, argv);
    }
}
