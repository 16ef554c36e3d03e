//! Latency histograms (HDR, microseconds) and outcome counts, per worker
//! while the run lasts, merged into a [`Summary`] at the end.

use crate::ops::Failure;
use crate::workload::{OP_KINDS, OpKind};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency a histogram records, in microseconds (longer ones are
/// clamped to it): far above any request timeout.
pub const MAX_LATENCY_US: u64 = 600_000_000;
/// Significant decimal digits the histograms keep.
const HISTOGRAM_DIGITS: u8 = 3;

/// One worker's (or the merged) measurements.
pub struct Stats {
    /// Successful operations' latencies, per kind.
    hist: Vec<Histogram<u64>>,
    /// Every measured operation's latency, whatever its outcome.
    all: Histogram<u64>,
    conflicts: u64,
    failures: BTreeMap<String, (u64, String)>,
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1,
    // high >= 2 * low, digits <= 5); nothing from outside reaches them.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_DIGITS)
        .expect("constant histogram bounds are valid")
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            hist: OP_KINDS.iter().map(|_| histogram()).collect(),
            all: histogram(),
            conflicts: 0,
            failures: BTreeMap::new(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

impl Stats {
    pub fn ok(&mut self, kind: OpKind, latency: Duration) {
        let us = micros(latency);
        if let Some(h) = self.hist.get_mut(kind.index()) {
            h.saturating_record(us);
        }
        self.all.saturating_record(us);
    }

    pub fn conflict(&mut self, latency: Duration) {
        self.conflicts += 1;
        self.all.saturating_record(micros(latency));
    }

    pub fn failed(&mut self, failure: Failure, latency: Duration) {
        self.all.saturating_record(micros(latency));
        let entry = self
            .failures
            .entry(failure.class)
            .or_insert_with(|| (0, failure.detail));
        entry.0 += 1;
    }

    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.hist.iter_mut().zip(&other.hist) {
            let _ = mine.add(theirs);
        }
        let _ = self.all.add(&other.all);
        self.conflicts += other.conflicts;
        for (class, (n, detail)) in &other.failures {
            let entry = self
                .failures
                .entry(class.clone())
                .or_insert_with(|| (0, detail.clone()));
            entry.0 += n;
        }
    }

    /// The summary of a measured window of `seconds`.
    pub fn summarize(&self, seconds: f64) -> Summary {
        let ok: u64 = self.hist.iter().map(Histogram::len).sum();
        let errors: u64 = self.failures.values().map(|(n, _)| n).sum();
        let per_op = OP_KINDS
            .iter()
            .zip(&self.hist)
            .filter(|(_, h)| !h.is_empty())
            .map(|(kind, h)| Latencies::of(kind.name(), h, seconds))
            .collect();
        Summary {
            seconds,
            ok,
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            conflicts: self.conflicts,
            errors,
            failures: self
                .failures
                .iter()
                .map(|(class, (n, detail))| FailureCount {
                    class: class.clone(),
                    count: *n,
                    example: detail.clone(),
                })
                .collect(),
            per_op,
            all: Latencies::of("all (any outcome)", &self.all, seconds),
            server_cpu_us_per_op: None,
        }
    }
}

/// The measured result of a run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub seconds: f64,
    /// Operations that succeeded with a right answer.
    pub ok: u64,
    /// `ok` per second: the only throughput reported.
    pub throughput: f64,
    pub conflicts: u64,
    pub errors: u64,
    pub failures: Vec<FailureCount>,
    /// Latencies of successful operations, per kind.
    pub per_op: Vec<Latencies>,
    /// Latencies of every operation, including failures and conflicts.
    pub all: Latencies,
    /// CPU time the server process spent per successful operation over the
    /// window, in microseconds (with `--server-pid`).
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FailureCount {
    pub class: String,
    pub count: u64,
    pub example: String,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Latencies {
    pub op: String,
    pub count: u64,
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latencies {
    fn of(op: &str, h: &Histogram<u64>, seconds: f64) -> Self {
        Self {
            op: op.to_string(),
            count: h.len(),
            per_second: if seconds > 0.0 {
                h.len() as f64 / seconds
            } else {
                0.0
            },
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:.0} ops/s ({} ok in {:.1} s), {} errors, {} conflicts",
            self.throughput, self.ok, self.seconds, self.errors, self.conflicts
        )?;
        if let Some(us) = self.server_cpu_us_per_op {
            writeln!(f, "server CPU {us:.2} µs per successful operation")?;
        }
        writeln!(
            f,
            "{:<20} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        )?;
        for l in self.per_op.iter().chain(std::iter::once(&self.all)) {
            writeln!(
                f,
                "{:<20} {:>10} {:>10.0} {:>9} {:>9} {:>9} {:>9}",
                l.op,
                l.count,
                l.per_second,
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            )?;
        }
        for fc in &self.failures {
            writeln!(f, "error: {} x{} (e.g. {})", fc.class, fc.count, fc.example)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_conflicts_are_not_throughput() {
        let mut a = Stats::default();
        a.ok(OpKind::Read, Duration::from_micros(100));
        a.conflict(Duration::from_micros(200));
        let mut b = Stats::default();
        b.ok(OpKind::Update, Duration::from_micros(300));
        b.failed(
            Failure::new("HTTP 500 ", "boom"),
            Duration::from_micros(5_000),
        );
        a.merge(&b);
        let s = a.summarize(2.0);
        assert_eq!((s.ok, s.errors, s.conflicts), (2, 1, 1));
        assert_eq!(s.throughput, 1.0);
        assert_eq!(s.all.count, 4);
        assert_eq!(s.per_op.len(), 2);
        assert!(s.all.max_us >= 4_990, "{}", s.all.max_us);
    }
}
