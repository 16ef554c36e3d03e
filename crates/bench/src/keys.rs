//! Records, their keys and payloads, and the key distributions.
//!
//! Record `i` of the hash-key table is the item `{pk: "user<i>", ver, v}`;
//! in the range-key table (workload E) records come in groups of
//! [`GROUP_ITEMS`]: record `i` is `{pk: "user<i / GROUP_ITEMS>", sk: i %
//! GROUP_ITEMS, ver, v}`. The payload `v` is a pure function of the record
//! and its version, so every answer can be checked without knowing which
//! write won: a GetItem that returns `ver = 7` must return exactly
//! `payload(i, 7)`.

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution as _, Zipf};

/// Records per partition key in the range-key table (workload E); also the
/// longest Query range (YCSB's default maxscanlength).
pub const GROUP_ITEMS: u64 = 100;

/// YCSB's zipfian constant: the most popular key gets a few percent of
/// the traffic, the distribution of web caches and social feeds.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Bytes of an item that are not payload: attribute names, the key and
/// the version (an estimate; the payload makes up the rest of the item
/// size the user asks for).
pub const ITEM_OVERHEAD_BYTES: usize = 32;

/// How the next record is picked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every record equally likely.
    Uniform,
    /// Zipfian popularity, hot records scattered over the key space.
    Zipfian,
    /// Zipfian over recency: the newest records are the hottest.
    Latest,
}

impl Distribution {
    /// A record in `0..n` (n > 0).
    pub fn pick(self, rng: &mut SmallRng, n: u64) -> u64 {
        let n = n.max(1);
        match self {
            Self::Uniform => rng.random_range(0..n),
            Self::Zipfian => fnv1a(zipf_rank(rng, n)) % n,
            Self::Latest => n - 1 - zipf_rank(rng, n).min(n - 1),
        }
    }
}

/// A zipfian rank in `0..n`, 0 the most popular.
fn zipf_rank(rng: &mut SmallRng, n: u64) -> u64 {
    match Zipf::new(n as f64, ZIPFIAN_THETA) {
        Ok(z) => (z.sample(rng) as u64).saturating_sub(1).min(n - 1),
        Err(_) => 0,
    }
}

/// FNV-1a over the rank's bytes: scatters popular ranks over the records
/// (YCSB's "scrambled zipfian"), so the hot set is not one key range.
fn fnv1a(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The partition key of record `i` in the hash-key table.
pub fn hash_key(i: u64) -> String {
    format!("user{i}")
}

/// The partition and sort key of record `i` in the range-key table.
pub fn range_key(i: u64) -> (String, u64) {
    (format!("user{}", i / GROUP_ITEMS), i % GROUP_ITEMS)
}

/// Payload length for an item of about `item_bytes`.
pub fn payload_len(item_bytes: usize) -> usize {
    item_bytes.saturating_sub(ITEM_OVERHEAD_BYTES).max(1)
}

const PAYLOAD_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The payload of record `i` at version `ver`: `len` characters from a
/// splitmix64 stream seeded by both.
pub fn payload(i: u64, ver: u64, len: usize) -> String {
    let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ver.rotate_left(32);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for k in 0..10 {
            if out.len() == len {
                break;
            }
            let c = PAYLOAD_ALPHABET[((z >> (k * 6)) & 63) as usize];
            out.push(char::from(c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn payload_is_a_function_of_record_and_version() {
        assert_eq!(payload(7, 3, 100), payload(7, 3, 100));
        assert_ne!(payload(7, 3, 100), payload(7, 4, 100));
        assert_ne!(payload(7, 3, 100), payload(8, 3, 100));
        assert_eq!(payload(1, 1, 37).len(), 37);
    }

    #[test]
    fn distributions_stay_in_range_and_skew_as_named() {
        let mut rng = SmallRng::seed_from_u64(1);
        let n = 1000;
        let mut uniform = vec![0u32; n as usize];
        let mut zipf = vec![0u32; n as usize];
        let mut latest_top = 0;
        for _ in 0..100_000 {
            uniform[Distribution::Uniform.pick(&mut rng, n) as usize] += 1;
            zipf[Distribution::Zipfian.pick(&mut rng, n) as usize] += 1;
            if Distribution::Latest.pick(&mut rng, n) >= n - 10 {
                latest_top += 1;
            }
        }
        let hottest = |v: &[u32]| v.iter().copied().max().unwrap_or(0);
        // Uniform: about 100 per record; zipfian: the top record gets
        // several percent; latest: the newest 10 records take a large share.
        assert!(hottest(&uniform) < 200, "uniform max {}", hottest(&uniform));
        assert!(hottest(&zipf) > 5_000, "zipfian max {}", hottest(&zipf));
        assert!(latest_top > 30_000, "latest top-10 share {latest_top}");
    }
}
