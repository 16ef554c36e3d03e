//! The summary table of a suite of runs, as Markdown.

use crate::run::RunResult;
use std::fmt::Write;

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

pub fn summary(results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | seed | minutes | faults | operations (ok / failed / unknown) | write gap during a fault, median / max | after its heal, max | fault-free gap | not linearizable | lost writes | counter / bank violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let gaps: Vec<u64> = r.episodes.iter().map(|e| e.write_gap_ms).collect();
        let gap = match (median(gaps.clone()), gaps.iter().max()) {
            (Some(m), Some(x)) => format!("{m} / {x} ms"),
            _ => "-".into(),
        };
        let healed = r
            .episodes
            .iter()
            .map(|e| e.heal_gap_ms)
            .max()
            .map_or("-".into(), |m| format!("{m} ms"));
        let rep = &r.report;
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {} ({} / {} / {}) | {gap} | {healed} | {} ms | {} | {} | {} / {} |",
            r.name,
            r.seed,
            r.run_ms as f64 / 60_000.0,
            r.episodes.len(),
            rep.operations,
            rep.ok,
            rep.failed,
            rep.unknown,
            r.baseline_gap_ms,
            rep.nonlinearizable.len(),
            rep.lost_writes.len(),
            rep.counter_violations.len(),
            rep.bank_violations.len(),
        );
    }
    out
}

/// Per-fault lines of one run, and the violations found, for the console.
pub fn details(r: &RunResult) -> String {
    let mut out = String::new();
    for e in &r.episodes {
        let _ = writeln!(
            out,
            "  {:>8} ms for {:>6} ms  {:<50} write gap {} ms, after heal {} ms",
            e.episode.start_ms, e.episode.duration_ms, e.description, e.write_gap_ms, e.heal_gap_ms
        );
    }
    let rep = &r.report;
    for v in &rep.nonlinearizable {
        let _ = writeln!(
            out,
            "  NOT LINEARIZABLE: key {} — shortest violating sub-history:",
            v.key
        );
        for line in &v.sub_history {
            let _ = writeln!(out, "    {line}");
        }
    }
    for k in &rep.undecided {
        let _ = writeln!(out, "  undecided (search limit): key {k}");
    }
    for l in rep
        .lost_writes
        .iter()
        .chain(&rep.counter_violations)
        .chain(&rep.bank_violations)
    {
        let _ = writeln!(out, "  VIOLATION: {l}");
    }
    out
}
