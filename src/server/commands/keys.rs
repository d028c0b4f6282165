//! Generic key commands (DEL, EXISTS, TTL family, RENAME). KEYS, SCAN, RANDOMKEY and DBSIZE
//! iterate the keyspace and live in `server.rs` helpers run by the connection.

use bytes::Bytes;

use super::strings::{put_with, Expiry};
use super::{e_int, eq_ic, parse_i64, DataCtx, Job, Reader, Store};
use crate::server::resp::Reply;
use crate::tri;

pub fn del(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let keys: Vec<Bytes> = a[1..].iter().map(|k| ctx.key(k)).collect();
    Job::write(move |st: &mut dyn Store| {
        let mut n = 0;
        for k in keys {
            if tri!(st.get(&k)).is_some() {
                st.delete(k);
                n += 1;
            }
        }
        Reply::Int(n)
    })
}

pub fn exists(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let keys: Vec<Bytes> = a[1..].iter().map(|k| ctx.key(k)).collect();
    Job::read(move |r: &mut dyn Reader| {
        let mut n = 0;
        for k in &keys {
            if tri!(r.get(k)).is_some() {
                n += 1;
            }
        }
        Reply::Int(n)
    })
}

pub fn type_(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    Job::read(move |r: &mut dyn Reader| match tri!(r.get(&key)) {
        Some(_) => Reply::simple("string"),
        None => Reply::simple("none"),
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn expire_generic(ctx: &DataCtx, a: &[Bytes], secs: bool, absolute: bool, cmd: &str) -> Job {
    // Redis checks the options before the time argument.
    let mut f = ExpireFlags::default();
    for opt in &a[3..] {
        if eq_ic(opt, "nx") {
            f.nx = true;
        } else if eq_ic(opt, "xx") {
            f.xx = true;
        } else if eq_ic(opt, "gt") {
            f.gt = true;
        } else if eq_ic(opt, "lt") {
            f.lt = true;
        } else {
            return Job::Reply(Reply::err(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if f.nx && (f.xx || f.gt || f.lt) {
        return Job::Reply(Reply::err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if f.gt && f.lt {
        return Job::Reply(Reply::err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let Some(when) = parse_i64(&a[2]) else {
        return Job::Reply(e_int());
    };
    let invalid = Reply::err(format!("ERR invalid expire time in '{cmd}' command"));
    let when_ms = if secs {
        match when.checked_mul(1000) {
            Some(v) => v,
            None => return Job::Reply(invalid),
        }
    } else {
        when
    };
    let key = ctx.key(&a[1]);
    Job::write(move |st: &mut dyn Store| {
        let now = st.now_ms();
        let at = if absolute {
            when_ms
        } else {
            match when_ms.checked_add(now as i64) {
                Some(v) => v,
                None => return invalid,
            }
        };
        let Some(v) = tri!(st.get(&key)) else {
            return Reply::Int(0);
        };
        // A key without TTL counts as an infinite TTL for GT/LT.
        let cur = v.expire_at;
        if f.nx && cur.is_some() {
            return Reply::Int(0);
        }
        if f.xx && cur.is_none() {
            return Reply::Int(0);
        }
        if f.gt && cur.is_none_or(|c| at <= c as i64) {
            return Reply::Int(0);
        }
        if f.lt && cur.is_some_and(|c| at >= c as i64) {
            return Reply::Int(0);
        }
        put_with(st, key, v.data, Expiry::At(at), cur);
        Reply::Int(1)
    })
}

pub fn expire(ctx: &DataCtx, a: &[Bytes]) -> Job {
    expire_generic(ctx, a, true, false, "expire")
}
pub fn pexpire(ctx: &DataCtx, a: &[Bytes]) -> Job {
    expire_generic(ctx, a, false, false, "pexpire")
}
pub fn expireat(ctx: &DataCtx, a: &[Bytes]) -> Job {
    expire_generic(ctx, a, true, true, "expireat")
}
pub fn pexpireat(ctx: &DataCtx, a: &[Bytes]) -> Job {
    expire_generic(ctx, a, false, true, "pexpireat")
}

#[derive(Clone, Copy)]
enum TtlKind {
    Ttl,
    Pttl,
    ExpireTime,
    PexpireTime,
}

fn ttl_generic(ctx: &DataCtx, a: &[Bytes], kind: TtlKind) -> Job {
    let key = ctx.key(&a[1]);
    Job::read(move |r: &mut dyn Reader| {
        let Some(v) = tri!(r.get(&key)) else {
            return Reply::Int(-2);
        };
        let Some(at) = v.expire_at else {
            return Reply::Int(-1);
        };
        let left = at.saturating_sub(r.now_ms()) as i64;
        Reply::Int(match kind {
            TtlKind::Ttl => (left + 500) / 1000,
            TtlKind::Pttl => left,
            TtlKind::ExpireTime => (at / 1000) as i64,
            TtlKind::PexpireTime => at as i64,
        })
    })
}

pub fn ttl(ctx: &DataCtx, a: &[Bytes]) -> Job {
    ttl_generic(ctx, a, TtlKind::Ttl)
}
pub fn pttl(ctx: &DataCtx, a: &[Bytes]) -> Job {
    ttl_generic(ctx, a, TtlKind::Pttl)
}
pub fn expiretime(ctx: &DataCtx, a: &[Bytes]) -> Job {
    ttl_generic(ctx, a, TtlKind::ExpireTime)
}
pub fn pexpiretime(ctx: &DataCtx, a: &[Bytes]) -> Job {
    ttl_generic(ctx, a, TtlKind::PexpireTime)
}

pub fn persist(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    Job::write(move |st: &mut dyn Store| match tri!(st.get(&key)) {
        Some(v) if v.expire_at.is_some() => {
            st.put(key, v.data, None);
            Reply::Int(1)
        }
        _ => Reply::Int(0),
    })
}

fn rename_generic(ctx: &DataCtx, a: &[Bytes], nx: bool) -> Job {
    let src = ctx.key(&a[1]);
    let dst = ctx.key(&a[2]);
    Job::write(move |st: &mut dyn Store| {
        let Some(v) = tri!(st.get(&src)) else {
            return Reply::err("ERR no such key");
        };
        if src == dst {
            return if nx { Reply::Int(0) } else { Reply::ok() };
        }
        if nx && tri!(st.get(&dst)).is_some() {
            return Reply::Int(0);
        }
        st.put(dst, v.data, v.expire_at);
        st.delete(src);
        if nx {
            Reply::Int(1)
        } else {
            Reply::ok()
        }
    })
}

pub fn rename(ctx: &DataCtx, a: &[Bytes]) -> Job {
    rename_generic(ctx, a, false)
}
pub fn renamenx(ctx: &DataCtx, a: &[Bytes]) -> Job {
    rename_generic(ctx, a, true)
}

#[cfg(test)]
mod tests {
    use super::super::mem::{run, MemStore};
    use crate::server::resp::Reply;

    #[test]
    fn expire_options() {
        let mut st = MemStore {
            now: 10_000,
            ..Default::default()
        };
        assert_eq!(run(&mut st, "set k v"), Reply::ok());
        assert_eq!(run(&mut st, "ttl k"), Reply::Int(-1));
        assert_eq!(run(&mut st, "expire k 100 xx"), Reply::Int(0));
        assert_eq!(run(&mut st, "expire k 100 gt"), Reply::Int(0));
        assert_eq!(run(&mut st, "expire k 100 lt"), Reply::Int(1));
        assert_eq!(run(&mut st, "ttl k"), Reply::Int(100));
        assert_eq!(run(&mut st, "expire k 50 nx"), Reply::Int(0));
        assert_eq!(run(&mut st, "expire k 200 gt"), Reply::Int(1));
        assert_eq!(run(&mut st, "expire k 300 lt"), Reply::Int(0));
        assert_eq!(run(&mut st, "pexpiretime k"), Reply::Int(210_000));
        assert_eq!(run(&mut st, "expiretime k"), Reply::Int(210));
        assert_eq!(
            run(&mut st, "expire k 10 nx xx"),
            Reply::err("ERR NX and XX, GT or LT options at the same time are not compatible")
        );
        assert_eq!(
            run(&mut st, "expire k 10 gt lt"),
            Reply::err("ERR GT and LT options at the same time are not compatible")
        );
        assert_eq!(
            run(&mut st, "expire k 10 foo"),
            Reply::err("ERR Unsupported option foo")
        );
        assert_eq!(run(&mut st, "persist k"), Reply::Int(1));
        assert_eq!(run(&mut st, "persist k"), Reply::Int(0));
        assert_eq!(run(&mut st, "expire k -1"), Reply::Int(1));
        assert_eq!(run(&mut st, "exists k"), Reply::Int(0));
        assert_eq!(run(&mut st, "ttl k"), Reply::Int(-2));
        assert_eq!(run(&mut st, "expire k 10"), Reply::Int(0));
    }

    #[test]
    fn rename_and_del() {
        let mut st = MemStore::default();
        assert_eq!(run(&mut st, "rename a b"), Reply::err("ERR no such key"));
        assert_eq!(run(&mut st, "set a 1"), Reply::ok());
        assert_eq!(run(&mut st, "set c 1"), Reply::ok());
        assert_eq!(run(&mut st, "renamenx a c"), Reply::Int(0));
        assert_eq!(run(&mut st, "rename a b"), Reply::ok());
        assert_eq!(run(&mut st, "exists a b c b"), Reply::Int(3));
        assert_eq!(run(&mut st, "type b"), Reply::simple("string"));
        assert_eq!(run(&mut st, "type a"), Reply::simple("none"));
        assert_eq!(run(&mut st, "del a b c"), Reply::Int(2));
    }
}
