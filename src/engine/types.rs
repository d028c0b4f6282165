//! Entries shared by the WAL, the memtable and the tables.

use bytes::Bytes;

/// Sequence number: every put or delete gets the next one; newest wins by seqno.
pub type SeqNo = u64;

/// Type tag of a value. Strings only today; the tag is stored so other types need no format break.
pub const TYPE_STRING: u8 = 0;

/// Whether an entry sets a value or removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Delete = 0,
    Put = 1,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Delete),
            1 => Some(Kind::Put),
            _ => None,
        }
    }
}

/// One version of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Bytes,
    pub seqno: SeqNo,
    pub kind: Kind,
    /// [`TYPE_STRING`] today. Zero for deletes.
    pub type_tag: u8,
    /// Absolute expiry in unix milliseconds; 0 means no expiry.
    pub expire_at: u64,
    /// Empty for deletes.
    pub value: Bytes,
}

/// True for a put that has not expired at `now_ms` (`expire_at` 0: never).
fn is_live(kind: Kind, expire_at: u64, now_ms: u64) -> bool {
    kind == Kind::Put && (expire_at == 0 || expire_at > now_ms)
}

/// What a point lookup finds: an entry's fields without its key (the caller has the key, and
/// a lookup that copied or reference-counted it for every GET would pay for nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub seqno: SeqNo,
    pub kind: Kind,
    pub type_tag: u8,
    pub expire_at: u64,
    pub value: Bytes,
}

impl Found {
    /// True when the entry holds a value that has not expired at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        is_live(self.kind, self.expire_at, now_ms)
    }

    pub fn into_entry(self, key: Bytes) -> Entry {
        Entry {
            key,
            seqno: self.seqno,
            kind: self.kind,
            type_tag: self.type_tag,
            expire_at: self.expire_at,
            value: self.value,
        }
    }
}

impl Entry {
    /// The key and the rest.
    pub fn into_parts(self) -> (Bytes, Found) {
        let found = Found {
            seqno: self.seqno,
            kind: self.kind,
            type_tag: self.type_tag,
            expire_at: self.expire_at,
            value: self.value,
        };
        (self.key, found)
    }

    pub fn put(key: Bytes, seqno: SeqNo, value: Bytes, expire_at: u64) -> Entry {
        Entry {
            key,
            seqno,
            kind: Kind::Put,
            type_tag: TYPE_STRING,
            expire_at,
            value,
        }
    }

    pub fn delete(key: Bytes, seqno: SeqNo) -> Entry {
        Entry {
            key,
            seqno,
            kind: Kind::Delete,
            type_tag: 0,
            expire_at: 0,
            value: Bytes::new(),
        }
    }

    /// True when the entry holds a value that has not expired at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        is_live(self.kind, self.expire_at, now_ms)
    }

    /// Bytes this entry accounts for in memory budgets (key + value + fixed overhead).
    pub fn approx_size(&self) -> usize {
        self.key.len() + self.value.len() + 32
    }
}
