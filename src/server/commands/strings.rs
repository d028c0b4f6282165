//! String commands. Every read-modify-write runs inside a write-group closure so it is atomic
//! and sees earlier writes of the same group (two INCRs in one pipeline both count).

use bytes::{Bytes, BytesMut};

use super::{e_float, e_int, e_syntax, eq_ic, parse_f64, parse_i64, DataCtx, Job, Reader, Store};
use crate::server::resp::Reply;
use crate::tri;

/// How a write sets the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry (a plain SET clears any TTL).
    Clear,
    /// Keep the current TTL (KEEPTTL, INCR, APPEND ...).
    Keep,
    /// Relative milliseconds from the moment the group is evaluated.
    In(u64),
    /// Absolute unix milliseconds (may already be past: then the key is deleted).
    At(i64),
}

impl Expiry {
    /// The absolute expiry to store, given the old value's; `Err(())` when already expired.
    fn resolve(self, now: u64, old: Option<u64>) -> Result<Option<u64>, ()> {
        match self {
            Expiry::Clear => Ok(None),
            Expiry::Keep => Ok(old),
            Expiry::In(ms) => Ok(Some(now.saturating_add(ms))),
            Expiry::At(at) => {
                if at <= 0 || (at as u64) <= now {
                    Err(())
                } else {
                    Ok(Some(at as u64))
                }
            }
        }
    }
}

/// Writes `value` with `expiry`; a time already past deletes the key instead (as Redis does).
pub fn put_with(st: &mut dyn Store, key: Bytes, value: Bytes, expiry: Expiry, old: Option<u64>) {
    let now = st.now_ms();
    match expiry.resolve(now, old) {
        Ok(exp) => st.put(key, value, exp),
        Err(()) => st.delete(key),
    }
}

/// Parses an EX/PX/EXAT/PXAT value as Redis does: not an integer → integer error; ≤ 0 or
/// overflowing (a relative time counts from `now_ms`) → `invalid expire time in '<cmd>' command`.
pub fn parse_expire(
    arg: &[u8],
    unit_secs: bool,
    absolute: bool,
    cmd: &str,
    now_ms: u64,
) -> Result<Expiry, Reply> {
    let v = parse_i64(arg).ok_or_else(e_int)?;
    let invalid = || Reply::err(format!("ERR invalid expire time in '{cmd}' command"));
    if v <= 0 || (unit_secs && v > i64::MAX / 1000) {
        return Err(invalid());
    }
    let ms = if unit_secs { v * 1000 } else { v };
    if absolute {
        Ok(Expiry::At(ms))
    } else {
        // Redis also rejects a relative time whose absolute form would overflow.
        if ms.checked_add(now_ms as i64).is_none() {
            return Err(invalid());
        }
        Ok(Expiry::In(ms as u64))
    }
}

pub fn get(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    Job::read(move |r: &mut dyn Reader| match tri!(r.get(&key)) {
        Some(v) => Reply::Bulk(v.data),
        None => Reply::Nil,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct SetOpts {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    expiry: Option<Expiry>,
}

/// Parses SET/GETEX options with Redis' rules (one expiry kind; NX xor XX; KEEPTTL xor expiry).
fn parse_opts(args: &[Bytes], is_set: bool, cmd: &str, now_ms: u64) -> Result<SetOpts, Reply> {
    let mut o = SetOpts::default();
    // (index of the value, seconds?, absolute?)
    let mut exp_arg: Option<(usize, bool, bool)> = None;
    let mut j = 0;
    while j < args.len() {
        let opt = &args[j];
        let has_next = j + 1 < args.len();
        let no_exp = exp_arg.is_none() && !o.keepttl && !o.persist;
        if is_set && eq_ic(opt, "nx") && !o.xx {
            o.nx = true;
        } else if is_set && eq_ic(opt, "xx") && !o.nx {
            o.xx = true;
        } else if is_set && eq_ic(opt, "get") {
            o.get = true;
        } else if is_set && eq_ic(opt, "keepttl") && no_exp {
            o.keepttl = true;
        } else if !is_set && eq_ic(opt, "persist") && no_exp {
            o.persist = true;
        } else if no_exp && has_next && eq_ic(opt, "ex") {
            exp_arg = Some((j + 1, true, false));
            j += 1;
        } else if no_exp && has_next && eq_ic(opt, "px") {
            exp_arg = Some((j + 1, false, false));
            j += 1;
        } else if no_exp && has_next && eq_ic(opt, "exat") {
            exp_arg = Some((j + 1, true, true));
            j += 1;
        } else if no_exp && has_next && eq_ic(opt, "pxat") {
            exp_arg = Some((j + 1, false, true));
            j += 1;
        } else {
            return Err(e_syntax());
        }
        j += 1;
    }
    if let Some((i, secs, abs)) = exp_arg {
        o.expiry = Some(parse_expire(&args[i], secs, abs, cmd, now_ms)?);
    }
    Ok(o)
}

pub fn set(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let o = match parse_opts(&a[3..], true, "set", ctx.now_ms) {
        Ok(o) => o,
        Err(r) => return Job::Reply(r),
    };
    let key = ctx.key(&a[1]);
    let val = a[2].clone();
    let expiry = match (o.expiry, o.keepttl) {
        (Some(e), _) => e,
        (None, true) => Expiry::Keep,
        (None, false) => Expiry::Clear,
    };
    if !(o.nx || o.xx || o.get || o.keepttl) {
        // A plain SET does not depend on the old value: skip the lookup, which would run on
        // the ingest agent's thread (memtable, then bloom filters and blocks of the tables).
        return Job::write(move |st: &mut dyn Store| {
            put_with(st, key, val, expiry, None);
            Reply::ok()
        });
    }
    Job::write(move |st: &mut dyn Store| {
        let old = tri!(st.get(&key));
        let old_reply = || match &old {
            Some(v) => Reply::Bulk(v.data.clone()),
            None => Reply::Nil,
        };
        if (o.nx && old.is_some()) || (o.xx && old.is_none()) {
            return if o.get { old_reply() } else { Reply::Nil };
        }
        let old_exp = old.as_ref().and_then(|v| v.expire_at);
        put_with(st, key, val, expiry, old_exp);
        if o.get {
            old_reply()
        } else {
            Reply::ok()
        }
    })
}

pub fn setnx(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    let val = a[2].clone();
    Job::write(move |st: &mut dyn Store| {
        if tri!(st.get(&key)).is_some() {
            return Reply::Int(0);
        }
        st.put(key, val, None);
        Reply::Int(1)
    })
}

fn setex_generic(ctx: &DataCtx, a: &[Bytes], secs: bool, cmd: &str) -> Job {
    let expiry = match parse_expire(&a[2], secs, false, cmd, ctx.now_ms) {
        Ok(e) => e,
        Err(r) => return Job::Reply(r),
    };
    let key = ctx.key(&a[1]);
    let val = a[3].clone();
    Job::write(move |st: &mut dyn Store| {
        put_with(st, key, val, expiry, None);
        Reply::ok()
    })
}

pub fn setex(ctx: &DataCtx, a: &[Bytes]) -> Job {
    setex_generic(ctx, a, true, "setex")
}

pub fn psetex(ctx: &DataCtx, a: &[Bytes]) -> Job {
    setex_generic(ctx, a, false, "psetex")
}

pub fn getdel(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    Job::write(move |st: &mut dyn Store| match tri!(st.get(&key)) {
        Some(v) => {
            st.delete(key);
            Reply::Bulk(v.data)
        }
        None => Reply::Nil,
    })
}

pub fn getex(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let o = match parse_opts(&a[2..], false, "getex", ctx.now_ms) {
        Ok(o) => o,
        Err(r) => return Job::Reply(r),
    };
    let key = ctx.key(&a[1]);
    Job::write(move |st: &mut dyn Store| {
        let Some(v) = tri!(st.get(&key)) else {
            return Reply::Nil;
        };
        if let Some(e) = o.expiry {
            put_with(st, key, v.data.clone(), e, v.expire_at);
        } else if o.persist && v.expire_at.is_some() {
            st.put(key, v.data.clone(), None);
        }
        Reply::Bulk(v.data)
    })
}

pub fn getset(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    let val = a[2].clone();
    Job::write(move |st: &mut dyn Store| {
        let old = tri!(st.get(&key));
        st.put(key, val, None);
        match old {
            Some(v) => Reply::Bulk(v.data),
            None => Reply::Nil,
        }
    })
}

pub fn mget(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let keys: Vec<Bytes> = a[1..].iter().map(|k| ctx.key(k)).collect();
    Job::read(move |r: &mut dyn Reader| {
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            out.push(match tri!(r.get(k)) {
                Some(v) => Reply::Bulk(v.data),
                None => Reply::Nil,
            });
        }
        Reply::Array(out)
    })
}

fn pairs(ctx: &DataCtx, a: &[Bytes], name: &str) -> Result<Vec<(Bytes, Bytes)>, Reply> {
    if a.len().is_multiple_of(2) {
        return Err(super::e_arity(name));
    }
    Ok(a[1..]
        .chunks(2)
        .map(|c| (ctx.key(&c[0]), c[1].clone()))
        .collect())
}

pub fn mset(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let kv = match pairs(ctx, a, "mset") {
        Ok(kv) => kv,
        Err(r) => return Job::Reply(r),
    };
    Job::write(move |st: &mut dyn Store| {
        for (k, v) in kv {
            st.put(k, v, None);
        }
        Reply::ok()
    })
}

pub fn msetnx(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let kv = match pairs(ctx, a, "msetnx") {
        Ok(kv) => kv,
        Err(r) => return Job::Reply(r),
    };
    Job::write(move |st: &mut dyn Store| {
        for (k, _) in &kv {
            if tri!(st.get(k)).is_some() {
                return Reply::Int(0);
            }
        }
        for (k, v) in kv {
            st.put(k, v, None);
        }
        Reply::Int(1)
    })
}

fn incr_generic(ctx: &DataCtx, a: &[Bytes], by: i64) -> Job {
    let key = ctx.key(&a[1]);
    Job::write(move |st: &mut dyn Store| {
        let old = tri!(st.get(&key));
        let (cur, exp) = match &old {
            Some(v) => match parse_i64(&v.data) {
                Some(n) => (n, v.expire_at),
                None => return e_int(),
            },
            None => (0, None),
        };
        let Some(new) = cur.checked_add(by) else {
            return Reply::err("ERR increment or decrement would overflow");
        };
        st.put(key, Bytes::from(new.to_string()), exp);
        Reply::Int(new)
    })
}

pub fn incr(ctx: &DataCtx, a: &[Bytes]) -> Job {
    incr_generic(ctx, a, 1)
}

pub fn decr(ctx: &DataCtx, a: &[Bytes]) -> Job {
    incr_generic(ctx, a, -1)
}

pub fn incrby(ctx: &DataCtx, a: &[Bytes]) -> Job {
    match parse_i64(&a[2]) {
        Some(by) => incr_generic(ctx, a, by),
        None => Job::Reply(e_int()),
    }
}

pub fn decrby(ctx: &DataCtx, a: &[Bytes]) -> Job {
    match parse_i64(&a[2]) {
        Some(i64::MIN) => Job::Reply(Reply::err("ERR decrement would overflow")),
        Some(by) => incr_generic(ctx, a, -by),
        None => Job::Reply(e_int()),
    }
}

/// Formats an INCRBYFLOAT result: plain decimal, no exponent. Redis computes in `long double`
/// and prints 17 decimals with trailing zeros removed, which hides the binary noise of sums
/// like 0.1 + 0.2; in `f64` we get the same effect by preferring the 15-significant-digit form
/// when it is within a few ulps of the exact result.
pub fn format_float(v: f64) -> String {
    let short: Option<f64> = format!("{v:.14e}").parse().ok();
    let v = match short {
        Some(sv) if (sv - v).abs() <= v.abs() * 4.0 * f64::EPSILON => sv,
        _ => v,
    };
    let s = format!("{v}");
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

pub fn incrbyfloat(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let Some(by) = parse_f64(&a[2]) else {
        return Job::Reply(e_float());
    };
    let key = ctx.key(&a[1]);
    Job::write(move |st: &mut dyn Store| {
        let old = tri!(st.get(&key));
        let (cur, exp) = match &old {
            Some(v) => match parse_f64(&v.data) {
                Some(n) => (n, v.expire_at),
                None => return e_float(),
            },
            None => (0.0, None),
        };
        let new = cur + by;
        if !new.is_finite() {
            return Reply::err("ERR increment would produce NaN or Infinity");
        }
        let s = Bytes::from(format_float(new));
        st.put(key, s.clone(), exp);
        Reply::Bulk(s)
    })
}

fn too_big() -> Reply {
    Reply::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
}

pub fn append(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    let add = a[2].clone();
    let max = ctx.max_bulk;
    Job::write(move |st: &mut dyn Store| {
        let old = tri!(st.get(&key));
        let (data, exp) = match old {
            Some(v) => {
                if (v.data.len() + add.len()) as u64 > max {
                    return too_big();
                }
                let mut b = BytesMut::with_capacity(v.data.len() + add.len());
                b.extend_from_slice(&v.data);
                b.extend_from_slice(&add);
                (b.freeze(), v.expire_at)
            }
            None => (add, None),
        };
        let len = data.len() as i64;
        st.put(key, data, exp);
        Reply::Int(len)
    })
}

pub fn strlen(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let key = ctx.key(&a[1]);
    Job::read(move |r: &mut dyn Reader| {
        Reply::Int(tri!(r.get(&key)).map(|v| v.data.len() as i64).unwrap_or(0))
    })
}

pub fn getrange(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let (Some(mut start), Some(mut end)) = (parse_i64(&a[2]), parse_i64(&a[3])) else {
        return Job::Reply(e_int());
    };
    let key = ctx.key(&a[1]);
    Job::read(move |r: &mut dyn Reader| {
        let Some(v) = tri!(r.get(&key)) else {
            return Reply::Bulk(Bytes::new());
        };
        let len = v.data.len() as i64;
        if start < 0 && end < 0 && start > end {
            return Reply::Bulk(Bytes::new());
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0);
        if end >= len {
            end = len - 1;
        }
        if start > end || len == 0 {
            return Reply::Bulk(Bytes::new());
        }
        Reply::Bulk(v.data.slice(start as usize..=end as usize))
    })
}

pub fn setrange(ctx: &DataCtx, a: &[Bytes]) -> Job {
    let Some(offset) = parse_i64(&a[2]) else {
        return Job::Reply(e_int());
    };
    if offset < 0 {
        return Job::Reply(Reply::err("ERR offset is out of range"));
    }
    let key = ctx.key(&a[1]);
    let patch = a[3].clone();
    let max = ctx.max_bulk;
    let offset = offset as u64;
    Job::write(move |st: &mut dyn Store| {
        let old = tri!(st.get(&key));
        if patch.is_empty() {
            // Nothing to write: report the current length without creating the key.
            return Reply::Int(old.map(|v| v.data.len() as i64).unwrap_or(0));
        }
        if offset + patch.len() as u64 > max {
            return too_big();
        }
        let (cur, exp) = match old {
            Some(v) => (v.data, v.expire_at),
            None => (Bytes::new(), None),
        };
        let off = offset as usize;
        let new_len = cur.len().max(off + patch.len());
        let mut b = BytesMut::with_capacity(new_len);
        b.extend_from_slice(&cur);
        b.resize(new_len, 0);
        b[off..off + patch.len()].copy_from_slice(&patch);
        st.put(key, b.freeze(), exp);
        Reply::Int(new_len as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::super::mem::{run, MemStore};
    use crate::server::resp::Reply;

    fn b(s: &str) -> Reply {
        Reply::bulk_str(s)
    }

    #[test]
    fn set_get_options() {
        let mut st = MemStore {
            now: 1_000_000,
            ..Default::default()
        };
        assert_eq!(run(&mut st, "set k v"), Reply::ok());
        assert_eq!(run(&mut st, "get k"), b("v"));
        assert_eq!(run(&mut st, "set k w nx"), Reply::Nil);
        assert_eq!(run(&mut st, "set k w nx get"), b("v"));
        assert_eq!(run(&mut st, "set k w xx get"), b("v"));
        assert_eq!(run(&mut st, "set x w xx"), Reply::Nil);
        assert_eq!(
            run(&mut st, "set k v nx xx"),
            Reply::err("ERR syntax error")
        );
        assert_eq!(
            run(&mut st, "set k v ex 10 px 10"),
            Reply::err("ERR syntax error")
        );
        assert_eq!(
            run(&mut st, "set k v keepttl ex 10"),
            Reply::err("ERR syntax error")
        );
        assert_eq!(run(&mut st, "set k v ex"), Reply::err("ERR syntax error"));
        assert_eq!(
            run(&mut st, "set k v ex 0"),
            Reply::err("ERR invalid expire time in 'set' command")
        );
        assert_eq!(
            run(&mut st, "set k v ex x"),
            Reply::err("ERR value is not an integer or out of range")
        );
        assert_eq!(run(&mut st, "set k v px 100"), Reply::ok());
        assert_eq!(run(&mut st, "pttl k"), Reply::Int(100));
        assert_eq!(run(&mut st, "set k v2 keepttl"), Reply::ok());
        assert_eq!(run(&mut st, "pttl k"), Reply::Int(100));
        st.now += 100;
        assert_eq!(run(&mut st, "get k"), Reply::Nil);
        assert_eq!(run(&mut st, "set k v pxat 5"), Reply::ok());
        assert_eq!(run(&mut st, "exists k"), Reply::Int(0));
    }

    #[test]
    fn counters() {
        let mut st = MemStore::default();
        assert_eq!(run(&mut st, "incr n"), Reply::Int(1));
        assert_eq!(run(&mut st, "incrby n 10"), Reply::Int(11));
        assert_eq!(run(&mut st, "decrby n 20"), Reply::Int(-9));
        assert_eq!(run(&mut st, "set n 9223372036854775807"), Reply::ok());
        assert_eq!(
            run(&mut st, "incr n"),
            Reply::err("ERR increment or decrement would overflow")
        );
        assert_eq!(run(&mut st, "set s abc"), Reply::ok());
        assert_eq!(
            run(&mut st, "incr s"),
            Reply::err("ERR value is not an integer or out of range")
        );
        assert_eq!(run(&mut st, "set f 10.5"), Reply::ok());
        assert_eq!(run(&mut st, "incrbyfloat f 0.1"), b("10.6"));
        assert_eq!(run(&mut st, "incrbyfloat f -10.6"), b("0"));
        assert_eq!(run(&mut st, "set g 0.1"), Reply::ok());
        assert_eq!(run(&mut st, "incrbyfloat g 0.2"), b("0.3"));
        assert_eq!(run(&mut st, "set g 1.2345678901234567"), Reply::ok());
        assert_eq!(run(&mut st, "incrbyfloat g 0"), b("1.2345678901234567"));
        assert_eq!(
            run(&mut st, "incrbyfloat g 1e20"),
            b("100000000000000000000")
        );
        assert_eq!(
            run(&mut st, "incrbyfloat s 1"),
            Reply::err("ERR value is not a valid float")
        );
    }

    #[test]
    fn ranges() {
        let mut st = MemStore::default();
        assert_eq!(run(&mut st, "append k Hello"), Reply::Int(5));
        assert_eq!(run(&mut st, "append k World"), Reply::Int(10));
        assert_eq!(run(&mut st, "getrange k 0 4"), b("Hello"));
        assert_eq!(run(&mut st, "getrange k -3 -1"), b("rld"));
        assert_eq!(run(&mut st, "getrange k 5 1"), b(""));
        assert_eq!(run(&mut st, "setrange k 5 _"), Reply::Int(10));
        assert_eq!(run(&mut st, "get k"), b("Hello_orld"));
        assert_eq!(run(&mut st, "setrange z 2 x"), Reply::Int(3));
        assert_eq!(run(&mut st, "get z"), Reply::bulk(&b"\0\0x"[..]));
        assert_eq!(run(&mut st, "setrange y 2 "), Reply::Int(0));
        assert_eq!(
            run(&mut st, "setrange k 536870912 x"),
            Reply::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        );
        assert_eq!(run(&mut st, "strlen k"), Reply::Int(10));
        assert_eq!(run(&mut st, "mset a 1 b 2"), Reply::ok());
        assert_eq!(run(&mut st, "msetnx a 1 c 2"), Reply::Int(0));
        assert_eq!(
            run(&mut st, "mset a 1 b"),
            Reply::err("ERR wrong number of arguments for 'mset' command")
        );
        assert_eq!(
            run(&mut st, "mget a b c"),
            Reply::Array(vec![b("1"), b("2"), Reply::Nil])
        );
    }
}
