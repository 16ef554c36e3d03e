//! Sampled load of the groups a node serves, for splits by heat (issue 21).
//!
//! Every request a node serves for a data group is counted in the group's
//! current window of [`HEAT_WINDOW_MS`]; requests aimed at one key (a
//! GetItem, a write, a Query, a transaction's keys) also enter a bounded
//! reservoir sample of the keys' hashes. A [`LoadReport`] gives the rate of
//! the last completed window, the lowest rate of the last
//! [`HEAT_SUSTAIN_WINDOWS`] (a load sustained that long), where a split
//! would halve the sampled load, and a key holding most of it: a split
//! cannot cool one hot partition key, so such a partition is reported, not
//! split (`crate::split`).

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one load window, in milliseconds.
pub const HEAT_WINDOW_MS: u64 = 5_000;
/// Consecutive completed windows a load must last to count as sustained.
pub const HEAT_SUSTAIN_WINDOWS: usize = 3;
/// Key hashes sampled per window (a reservoir: each request of the window
/// is equally likely to be in it).
pub const HEAT_SAMPLE_KEYS: usize = 256;
/// Share of the sampled load, in percent, that makes one key hot.
pub const HOT_KEY_SHARE_PERCENT: u64 = 80;
/// Sustained requests per second at which a partition splits unless
/// configured otherwise (one DynamoDB partition serves up to 3,000 reads
/// or 1,000 writes per second); 0 turns splits by heat off.
pub const DEFAULT_SPLIT_LOAD_OPS_PER_S: u64 = 3_000;
/// The same for the embedded server: off, since one process gains no
/// capacity from more partitions, only more groups to run (see
/// docs/decisions.md).
pub const DEFAULT_EMBEDDED_SPLIT_LOAD_OPS_PER_S: u64 = 0;

/// A group's recent load, as the replica that answers saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests per second over the last completed window (0 before one
    /// completes).
    pub ops_per_s: u64,
    /// The lowest rate of the last [`HEAT_SUSTAIN_WINDOWS`] completed
    /// windows (0 until that many completed).
    pub sustained_ops_per_s: u64,
    /// The hash at which a split would best halve the sampled load of
    /// those windows (`None`: fewer than two keys of the range sampled).
    pub split_at: Option<u64>,
    /// The hash of the partition key holding at least
    /// [`HOT_KEY_SHARE_PERCENT`] of the sampled load, if one does.
    pub hot_key: Option<u64>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    ops: u64,
    /// Requests aimed at one key (the reservoir's population).
    keyed: u64,
    sample: Vec<u64>,
}

impl Window {
    fn new(started: Instant) -> Window {
        Window {
            started,
            ops: 0,
            keyed: 0,
            sample: Vec::new(),
        }
    }
}

/// A completed window: its requests, and its sample with the number of
/// keyed requests each sampled hash stands for.
#[derive(Debug)]
struct Done {
    ops: u64,
    weight: f64,
    sample: Vec<u64>,
}

#[derive(Debug)]
struct GroupLoad {
    current: Window,
    done: VecDeque<Done>,
    /// The group's range at the last report: when it narrows (a split),
    /// the windows before it measured load the group no longer serves.
    span: Option<(u64, Option<u64>)>,
}

impl GroupLoad {
    /// Closes the current window if it is over (and counts windows that
    /// passed without a request as idle).
    fn rotate(&mut self, now: Instant) {
        let window = Duration::from_millis(HEAT_WINDOW_MS);
        let elapsed = now.saturating_duration_since(self.current.started);
        if elapsed < window {
            return;
        }
        let passed = elapsed.as_millis() / u128::from(HEAT_WINDOW_MS);
        // The next window starts on the grid, so windows stay equal.
        let whole = u32::try_from(passed).unwrap_or(u32::MAX);
        let next = self
            .current
            .started
            .checked_add(window.saturating_mul(whole))
            .map_or(now, |t| t.min(now));
        let closed = std::mem::replace(&mut self.current, Window::new(next));
        let weight = match closed.sample.len() {
            0 => 0.0,
            n => closed.keyed as f64 / n as f64,
        };
        self.push(Done {
            ops: closed.ops,
            weight,
            sample: closed.sample,
        });
        let idle = usize::try_from(passed.saturating_sub(1)).unwrap_or(usize::MAX);
        for _ in 0..idle.min(HEAT_SUSTAIN_WINDOWS) {
            self.push(Done {
                ops: 0,
                weight: 0.0,
                sample: Vec::new(),
            });
        }
    }

    fn push(&mut self, d: Done) {
        if self.done.len() == HEAT_SUSTAIN_WINDOWS {
            self.done.pop_front();
        }
        self.done.push_back(d);
    }

    fn report(&self, lo: u64, hi: Option<u64>) -> LoadReport {
        let per_s = |ops: u64| ops * 1_000 / HEAT_WINDOW_MS;
        let ops_per_s = self.done.back().map_or(0, |d| per_s(d.ops));
        let sustained_ops_per_s = if self.done.len() < HEAT_SUSTAIN_WINDOWS {
            0
        } else {
            self.done.iter().map(|d| per_s(d.ops)).min().unwrap_or(0)
        };
        let in_range = |h: &u64| *h >= lo && hi.is_none_or(|hi| *h < hi);
        let mut weighted: Vec<(u64, f64)> = self
            .done
            .iter()
            .flat_map(|d| {
                d.sample
                    .iter()
                    .filter(|h| in_range(h))
                    .map(|h| (*h, d.weight))
            })
            .collect();
        weighted.sort_unstable_by_key(|(h, _)| *h);
        // One entry per distinct hash, with its load.
        let mut keys: Vec<(u64, f64)> = Vec::new();
        for (h, w) in weighted {
            match keys.last_mut() {
                Some((last, sum)) if *last == h => *sum += w,
                _ => keys.push((h, w)),
            }
        }
        let total: f64 = keys.iter().map(|(_, w)| w).sum();
        let hot_key = keys
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|(_, w)| total > 0.0 && *w * 100.0 >= total * HOT_KEY_SHARE_PERCENT as f64)
            .map(|(h, _)| *h);
        // Splitting before keys[i] leaves keys[..i] on the left.
        let mut left = 0.0;
        let mut split_at: Option<(u64, f64)> = None;
        for (i, (h, w)) in keys.iter().enumerate() {
            if i > 0 && *h > lo {
                let imbalance = (2.0 * left - total).abs();
                if split_at.is_none_or(|(_, best)| imbalance < best) {
                    split_at = Some((*h, imbalance));
                }
            }
            left += w;
        }
        LoadReport {
            ops_per_s,
            sustained_ops_per_s,
            split_at: split_at.map(|(h, _)| h),
            hot_key,
        }
    }
}

/// The load of every group a node serves.
#[derive(Debug, Default)]
pub struct Heat {
    groups: Mutex<HashMap<u64, GroupLoad>>,
}

impl Heat {
    /// Counts one request for `group`, aimed at the key hashing to `hash`
    /// (`None`: a request spanning keys, such as a Scan's page).
    pub fn note(&self, group: u64, hash: Option<u64>, now: Instant) {
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        let g = groups.entry(group).or_insert_with(|| GroupLoad {
            current: Window::new(now),
            done: VecDeque::new(),
            span: None,
        });
        g.rotate(now);
        g.current.ops += 1;
        let Some(hash) = hash else { return };
        let w = &mut g.current;
        w.keyed += 1;
        if w.sample.len() < HEAT_SAMPLE_KEYS {
            w.sample.push(hash);
        } else {
            let slot = fastrand::u64(0..w.keyed);
            if let Some(s) = usize::try_from(slot).ok().and_then(|i| w.sample.get_mut(i)) {
                *s = hash;
            }
        }
    }

    /// The load of `group`, whose range is now `[lo, hi)`. When the range
    /// changed since the last report (the group split), what was counted
    /// is dropped and measuring starts again: those requests were partly
    /// for keys another group now serves.
    pub fn report(&self, group: u64, lo: u64, hi: Option<u64>, now: Instant) -> LoadReport {
        let Ok(mut groups) = self.groups.lock() else {
            return LoadReport::default();
        };
        let Some(g) = groups.get_mut(&group) else {
            return LoadReport::default();
        };
        if g.span.is_some_and(|s| s != (lo, hi)) {
            g.current = Window::new(now);
            g.done.clear();
        }
        g.span = Some((lo, hi));
        g.rotate(now);
        g.report(lo, hi)
    }

    /// Drops what was counted for `group` (no longer hosted).
    pub fn forget(&self, group: u64) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.remove(&group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 7;
    const WINDOW: Duration = Duration::from_millis(HEAT_WINDOW_MS);

    /// Feeds `per_window` requests in each of `windows` windows, the i-th
    /// of a window aimed at `key(i)`, and returns the time after them.
    fn feed(
        heat: &Heat,
        t0: Instant,
        windows: u32,
        per_window: u64,
        key: impl Fn(u64) -> Option<u64>,
    ) -> Instant {
        for w in 0..windows {
            let start = t0 + WINDOW * w;
            for i in 0..per_window {
                heat.note(G, key(i), start + Duration::from_micros(i));
            }
        }
        t0 + WINDOW * windows
    }

    #[test]
    fn rates_are_per_second_and_sustained_only_after_enough_windows() {
        let heat = Heat::default();
        let t0 = Instant::now();
        let per_window = 1_000 * HEAT_WINDOW_MS / 1_000;
        let end = feed(&heat, t0, 2, per_window, Some);
        let r = heat.report(G, 0, None, end);
        assert_eq!(r.ops_per_s, 1_000);
        assert_eq!(
            r.sustained_ops_per_s, 0,
            "two windows are not yet sustained"
        );
        let end = feed(&heat, end, 1, per_window / 2, Some);
        let r = heat.report(G, 0, None, end);
        assert_eq!((r.ops_per_s, r.sustained_ops_per_s), (500, 500));
        // Quiet windows bring the sustained rate down to nothing.
        let r = heat.report(G, 0, None, end + WINDOW * 2);
        assert_eq!((r.ops_per_s, r.sustained_ops_per_s), (0, 0));
        assert_eq!(heat.report(G + 1, 0, None, end), LoadReport::default());
    }

    #[test]
    fn the_split_point_halves_the_sampled_load_without_cutting_a_key() {
        let heat = Heat::default();
        let t0 = Instant::now();
        // Keys 100..110 and, three times as loaded, 1_000..1_010: the
        // load halves between 1_002 and 1_003 (19 of 40 parts left of it).
        let key = |i: u64| {
            let k = i % 40;
            Some(if k < 10 {
                100 + k
            } else {
                1_000 + (k - 10) / 3
            })
        };
        let end = feed(&heat, t0, 3, 4_000, key);
        let r = heat.report(G, 0, None, end);
        let at = r.split_at.expect("a split point");
        assert!((1_002..=1_005).contains(&at), "split at {at}");
        assert_eq!(r.hot_key, None);
        assert_eq!(r.sustained_ops_per_s, 800);
        // The group split at 1_000: it measures its load again from here,
        // and samples of keys it no longer owns are left out (the rate
        // still counts them: the test sends them anyway).
        let r = heat.report(G, 0, Some(1_000), end);
        assert_eq!(r, LoadReport::default());
        let end = feed(&heat, end, 3, 4_000, key);
        let r = heat.report(G, 0, Some(1_000), end);
        assert_eq!(r.sustained_ops_per_s, 800);
        let at = r.split_at.expect("a split point");
        assert!((103..=107).contains(&at), "split at {at}");
        // Scans (no key) count in the rate but not in the sample.
        let end2 = feed(&heat, end, 3, 4_000, |_| None);
        let r = heat.report(G, 0, Some(1_000), end2);
        assert_eq!(r.sustained_ops_per_s, 800);
        assert_eq!(r.split_at, None);
    }

    #[test]
    fn one_key_with_most_of_the_load_is_hot() {
        let heat = Heat::default();
        let t0 = Instant::now();
        let end = feed(&heat, t0, 3, 3_000, |i| {
            Some(if i % 10 == 0 { 50 + i } else { 42 })
        });
        let r = heat.report(G, 0, None, end);
        assert_eq!(r.hot_key, Some(42));
        let one = feed(&heat, end, 3, 3_000, |_| Some(9));
        let r = heat.report(G, 0, None, one);
        assert_eq!((r.hot_key, r.split_at), (Some(9), None));
        heat.forget(G);
        assert_eq!(heat.report(G, 0, None, one), LoadReport::default());
    }
}
