//! Bloom filter over a table's user keys. Filter payload: the bit array, then one byte with the
//! number of probes `k`. Probe `i` sets bit `(h1 + i * h2) mod m` where `h1`/`h2` are the low and
//! high halves of `xxh3_64(key)` and `m` is the number of bits. `k = 0` means "no filter": every
//! key may be present.

use xxhash_rust::xxh3::xxh3_64;

/// Probes beyond this add cost, not accuracy, for any sane bits-per-key.
const MAX_PROBES: u32 = 30;

/// Collects key hashes while a table is written (8 bytes per key, not the keys themselves).
#[derive(Default)]
pub struct BloomBuilder {
    hashes: Vec<u64>,
}

impl BloomBuilder {
    /// Each distinct key once; the writer skips repeats of the previous key.
    pub fn add(&mut self, key: &[u8]) {
        self.hashes.push(xxh3_64(key));
    }

    pub fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        if bits_per_key == 0 {
            return vec![0];
        }
        // ln 2 * bits per key minimises false positives.
        let k = ((f64::from(bits_per_key) * 0.69).round() as u32).clamp(1, MAX_PROBES);
        // A floor of 64 bits keeps tiny tables from having absurd false-positive rates.
        let bits = (self.hashes.len() as u64 * u64::from(bits_per_key)).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let m = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &h in &self.hashes {
            for bit in probes(h, k, m) {
                out[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        out[bytes] = k as u8;
        out
    }
}

fn probes(h: u64, k: u32, m: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (h & 0xffff_ffff, h >> 32);
    (0..u64::from(k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

/// Checks a filter payload's shape (called once when a table is opened).
pub fn validate(filter: &[u8]) -> Result<(), &'static str> {
    match filter.split_last() {
        None => Err("empty filter block"),
        Some((&0, _)) => Ok(()),
        Some((&k, bits)) if u32::from(k) <= MAX_PROBES && !bits.is_empty() => Ok(()),
        Some(_) => Err("bad filter parameters"),
    }
}

/// False means the key is certainly absent. `filter` must have passed [`validate`]; anything
/// else answers true, which is always safe.
pub fn may_contain(filter: &[u8], key: &[u8]) -> bool {
    let Some((&k, bits)) = filter.split_last() else {
        return true;
    };
    if k == 0 || bits.is_empty() {
        return true;
    }
    let m = bits.len() as u64 * 8;
    probes(xxh3_64(key), u32::from(k), m)
        .all(|bit| bits[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_low_fp_rate() {
        let mut b = BloomBuilder::default();
        for i in 0..10_000u32 {
            b.add(format!("present-{i}").as_bytes());
        }
        let f = b.finish(10);
        validate(&f).unwrap();
        for i in 0..10_000u32 {
            assert!(may_contain(&f, format!("present-{i}").as_bytes()));
        }
        let fp = (0..10_000u32)
            .filter(|i| may_contain(&f, format!("absent-{i}").as_bytes()))
            .count();
        assert!(fp < 200, "false positive rate {fp}/10000 over 2%");
    }

    #[test]
    fn empty_and_disabled_filters() {
        let f = BloomBuilder::default().finish(10);
        validate(&f).unwrap();
        assert!(!may_contain(&f, b"x"));
        let f = BloomBuilder::default().finish(0);
        validate(&f).unwrap();
        assert!(may_contain(&f, b"x"));
        assert!(validate(&[]).is_err());
        assert!(validate(&[200]).is_err());
        assert!(validate(&[0xff, 31]).is_err());
    }
}
