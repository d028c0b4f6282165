//! RESP glue: request decoding (multibulk and inline) and reply encoding (RESP2 and RESP3).
//!
//! Requests are decoded by hand rather than through the redis-protocol crate: the server must
//! enforce Redis' limits (pre-auth sizes, bulk and multibulk caps) *while* a frame arrives,
//! never allocate by a client-declared length, and keep the partial state of a huge request
//! between reads instead of re-parsing it from the start on every read.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};

/// Redis' PROTO_INLINE_MAX_SIZE: an inline line or a length header must fit in this.
pub const INLINE_MAX: usize = 64 * 1024;
/// Before AUTH Redis accepts at most this many elements ...
pub const UNAUTH_MAX_MULTIBULK: i64 = 10;
/// ... and bulk strings of at most this many bytes.
pub const UNAUTH_MAX_BULK: i64 = 16384;
/// Largest buffer reservation made for a bulk in flight; the rest grows as bytes arrive.
const MAX_RESERVE: usize = 1024 * 1024;

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk: u64,
    pub max_multibulk: u64,
    pub authenticated: bool,
}

/// A protocol error: the text after `-ERR Protocol error: `. The connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str, pub Option<u8>);

impl ProtocolError {
    pub fn reply_text(&self) -> String {
        match self.1 {
            Some(c) => format!("ERR Protocol error: {}'{}'", self.0, c as char),
            None => format!("ERR Protocol error: {}", self.0),
        }
    }
}

/// Incremental request decoder; keeps a partly received multibulk between reads.
#[derive(Debug, Default)]
pub struct RequestParser {
    in_multibulk: bool,
    remaining: usize,
    args: Vec<Bytes>,
    /// Bytes held in `args`: they left the read buffer but still count against the client's
    /// query buffer limit (as Redis counts argv memory), or a request of many bulks could
    /// grow without bound.
    args_bytes: usize,
    bulk_len: Option<usize>,
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn parse_int(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse::<i64>().ok()
}

impl RequestParser {
    /// True while a request is partly received (a disconnect now loses it).
    pub fn in_progress(&self) -> bool {
        self.in_multibulk
    }

    /// Bytes of a partly received request already taken out of the read buffer.
    pub fn buffered_bytes(&self) -> usize {
        self.args_bytes
    }

    /// Decodes the next complete request from `buf`, consuming its bytes. `Ok(None)` means more
    /// bytes are needed; `Ok(Some(empty))` is a request that gets no reply (empty inline line).
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        lim: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if !self.in_multibulk {
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] != b'*' {
                return parse_inline(buf);
            }
            let Some(nl) = find_crlf(buf) else {
                if buf.len() > INLINE_MAX {
                    return Err(ProtocolError("too big mbulk count string", None));
                }
                return Ok(None);
            };
            let n = match parse_int(&buf[1..nl]) {
                Some(n) if n <= lim.max_multibulk as i64 => n,
                _ => return Err(ProtocolError("invalid multibulk length", None)),
            };
            if !lim.authenticated && n > UNAUTH_MAX_MULTIBULK {
                return Err(ProtocolError("unauthenticated multibulk length", None));
            }
            buf.advance(nl + 2);
            if n <= 0 {
                return Ok(Some(Vec::new()));
            }
            self.in_multibulk = true;
            self.remaining = n as usize;
            // Never trust the declared count for allocation.
            self.args = Vec::with_capacity(self.remaining.min(64));
        }
        while self.remaining > 0 {
            let len = match self.bulk_len {
                Some(l) => l,
                None => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    if buf[0] != b'$' {
                        return Err(ProtocolError("expected '$', got ", Some(buf[0])));
                    }
                    let Some(nl) = find_crlf(buf) else {
                        if buf.len() > INLINE_MAX {
                            return Err(ProtocolError("too big bulk count string", None));
                        }
                        return Ok(None);
                    };
                    let l = match parse_int(&buf[1..nl]) {
                        Some(l) if l >= 0 && l as u64 <= lim.max_bulk => l,
                        _ => return Err(ProtocolError("invalid bulk length", None)),
                    };
                    if !lim.authenticated && l > UNAUTH_MAX_BULK {
                        return Err(ProtocolError("unauthenticated bulk length", None));
                    }
                    buf.advance(nl + 2);
                    self.bulk_len = Some(l as usize);
                    l as usize
                }
            };
            if buf.len() < len + 2 {
                let want = (len + 2 - buf.len()).min(MAX_RESERVE);
                buf.reserve(want);
                return Ok(None);
            }
            let data = buf.split_to(len).freeze();
            // Redis skips the two bytes after the payload without looking at them.
            buf.advance(2);
            // Per-argument overhead counted too, so many empty bulks also add up.
            self.args_bytes += len + std::mem::size_of::<Bytes>();
            self.args.push(data);
            self.remaining -= 1;
            self.bulk_len = None;
        }
        self.in_multibulk = false;
        self.args_bytes = 0;
        Ok(Some(std::mem::take(&mut self.args)))
    }
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_MAX {
            return Err(ProtocolError("too big inline request", None));
        }
        return Ok(None);
    };
    let line = buf.split_to(nl + 1);
    let mut line = &line[..nl];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    match split_args(line) {
        Some(args) => Ok(Some(args.into_iter().map(Bytes::from).collect())),
        None => Err(ProtocolError("unbalanced quotes in request", None)),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline request like redis' `sdssplitargs`: spaces separate arguments,
/// "double quotes" take C escapes (\n, \xHH, ...), 'single quotes' only \'.
/// `None` on unbalanced quotes (or a closing quote not followed by a space).
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex_val(line[i + 2]), hex_val(line[i + 3])) {
                        cur.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < n {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if insq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if is_space(c) => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

/// One reply, encoded for the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(Cow<'static, str>),
    /// Full error text without the leading '-', e.g. `ERR syntax error`.
    Error(Cow<'static, str>),
    Int(i64),
    Bulk(Bytes),
    /// Null bulk string (`$-1` / `_`).
    Nil,
    /// Null array (`*-1` / `_`): EXEC aborted by WATCH.
    NilArray,
    Array(Vec<Reply>),
    /// RESP3 map; a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 set (`~`); an array in RESP2.
    Set(Vec<Reply>),
    /// RESP3 verbatim text (`=`); a bulk string in RESP2.
    Verbatim(Bytes),
    /// RESP3 double (`,`); a bulk string in RESP2.
    Double(f64),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }
    pub fn simple(s: &'static str) -> Reply {
        Reply::Simple(Cow::Borrowed(s))
    }
    pub fn err(s: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error(s.into())
    }
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }
    pub fn bulk_str(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the wire form of this reply for protocol `proto` (2 or 3).
    pub fn encode(&self, proto: u8, out: &mut BytesMut) {
        use std::fmt::Write as _;
        let resp3 = proto >= 3;
        match self {
            Reply::Simple(s) => {
                out.extend_from_slice(b"+");
                out.extend_from_slice(sanitize(s).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.extend_from_slice(b"-");
                out.extend_from_slice(sanitize(s).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(i) => {
                let _ = write!(Fmt(out), ":{i}\r\n");
            }
            Reply::Bulk(b) => encode_bulk(b"$", b, out),
            Reply::Nil => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
            Reply::NilArray => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"*-1\r\n" }),
            Reply::Array(items) => {
                let _ = write!(Fmt(out), "*{}\r\n", items.len());
                for r in items {
                    r.encode(proto, out);
                }
            }
            Reply::Set(items) => {
                let tag = if resp3 { '~' } else { '*' };
                let _ = write!(Fmt(out), "{tag}{}\r\n", items.len());
                for r in items {
                    r.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    let _ = write!(Fmt(out), "%{}\r\n", pairs.len());
                } else {
                    let _ = write!(Fmt(out), "*{}\r\n", pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Verbatim(b) => {
                if resp3 {
                    let _ = write!(Fmt(out), "={}\r\ntxt:", b.len() + 4);
                    out.extend_from_slice(b);
                    out.extend_from_slice(b"\r\n");
                } else {
                    encode_bulk(b"$", b, out);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if resp3 {
                    let _ = write!(Fmt(out), ",{s}\r\n");
                } else {
                    encode_bulk(b"$", s.as_bytes(), out);
                }
            }
        }
    }
}

fn encode_bulk(prefix: &[u8], b: &[u8], out: &mut BytesMut) {
    out.reserve(prefix.len() + 24 + b.len());
    out.extend_from_slice(prefix);
    put_decimal(b.len() as u64, out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through `fmt` (every bulk reply has a length).
fn put_decimal(mut n: u64, out: &mut BytesMut) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Simple strings and errors cannot carry CR/LF; Redis replaces them with spaces.
fn sanitize(s: &str) -> Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        Cow::Borrowed(s)
    }
}

/// Formats like RESP3 doubles: `inf`, `-inf`, `nan`, otherwise the shortest exact form.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{d}")
    }
}

/// `fmt::Write` over a BytesMut without an intermediate String.
struct Fmt<'a>(&'a mut BytesMut);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(auth: bool) -> Limits {
        Limits {
            max_bulk: 1024 * 1024,
            max_multibulk: 1000,
            authenticated: auth,
        }
    }

    fn parse_all(input: &[u8], auth: bool) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.next(&mut buf, &lim(auth))? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_pipeline() {
        let r = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n", true).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], vec![Bytes::from("GET"), Bytes::from("k")]);
        assert_eq!(r[1], vec![Bytes::from("PING")]);
    }

    #[test]
    fn byte_by_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut p = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            if let Some(r) = p.next(&mut buf, &lim(true)).unwrap() {
                got = Some(r);
            }
        }
        assert_eq!(got.unwrap()[2], Bytes::from("hello"));
        assert!(buf.is_empty());
    }

    #[test]
    fn limits() {
        assert_eq!(
            parse_all(b"*2000\r\n", true).unwrap_err().reply_text(),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n$99999999\r\n", true)
                .unwrap_err()
                .reply_text(),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            parse_all(b"*11\r\n", false).unwrap_err().reply_text(),
            "ERR Protocol error: unauthenticated multibulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\n$16385\r\n", false)
                .unwrap_err()
                .reply_text(),
            "ERR Protocol error: unauthenticated bulk length"
        );
        assert_eq!(
            parse_all(b"*1\r\nfoo\r\n", true).unwrap_err().reply_text(),
            "ERR Protocol error: expected '$', got 'f'"
        );
        assert_eq!(
            parse_all(b"*x\r\n", true).unwrap_err().reply_text(),
            "ERR Protocol error: invalid multibulk length"
        );
        let big = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(
            parse_all(&big, true).unwrap_err().reply_text(),
            "ERR Protocol error: too big inline request"
        );
    }

    #[test]
    fn parsed_arguments_stay_counted_until_the_request_completes() {
        let mut p = RequestParser::default();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel"[..]);
        assert_eq!(p.next(&mut buf, &lim(true)).unwrap(), None);
        assert!(p.buffered_bytes() >= 4, "{}", p.buffered_bytes());
        buf.extend_from_slice(b"lo\r\n");
        assert!(p.next(&mut buf, &lim(true)).unwrap().is_some());
        assert_eq!(p.buffered_bytes(), 0);
    }

    #[test]
    fn inline() {
        let r = parse_all(b"set k \"a b\\x41\\n\"\r\n\r\nget 'it''s'\n", true);
        assert!(r.is_err()); // 'it''s' closing quote followed by a quote
        let r = parse_all(b"set k \"a b\\x41\\n\"\r\n\r\nget 'it\\'s'\n", true).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0][2], Bytes::from("a bA\n"));
        assert!(r[1].is_empty());
        assert_eq!(r[2][1], Bytes::from("it's"));
        assert_eq!(
            parse_all(b"get \"abc\n", true).unwrap_err().reply_text(),
            "ERR Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn encode_resp2_resp3() {
        let r = Reply::Map(vec![(Reply::bulk_str("a"), Reply::Int(1))]);
        let mut b = BytesMut::new();
        r.encode(2, &mut b);
        assert_eq!(&b[..], b"*2\r\n$1\r\na\r\n:1\r\n");
        b.clear();
        r.encode(3, &mut b);
        assert_eq!(&b[..], b"%1\r\n$1\r\na\r\n:1\r\n");
        b.clear();
        Reply::Nil.encode(3, &mut b);
        Reply::NilArray.encode(2, &mut b);
        Reply::Verbatim(Bytes::from("x")).encode(3, &mut b);
        assert_eq!(&b[..], b"_\r\n*-1\r\n=5\r\ntxt:x\r\n");
    }

    #[test]
    fn bulk_lengths_in_decimal() {
        for n in [0usize, 1, 9, 10, 99, 100, 12345, 1 << 20] {
            let mut b = BytesMut::new();
            Reply::Bulk(Bytes::from(vec![b'x'; n])).encode(2, &mut b);
            let head = format!("${n}\r\n");
            assert_eq!(&b[..head.len()], head.as_bytes());
            assert_eq!(b.len(), head.len() + n + 2);
        }
    }
}
