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
        "| scenario | seed | minutes | faults | operations (ok / failed / unknown) | write gap during a fault, median / max | after its heal, max | every node caught up after a heal, median / max | fault-free gap | not linearizable | lost writes | counter / bank violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
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
        let caught: Vec<Option<u64>> = r.episodes.iter().map(|e| e.caught_up_ms).collect();
        let late = caught.iter().filter(|c| c.is_none()).count();
        let times: Vec<u64> = caught.iter().flatten().copied().collect();
        let caught = match (median(times.clone()), times.iter().max()) {
            (Some(m), Some(x)) if late == 0 => format!("{m} / {x} ms"),
            (Some(m), Some(x)) => format!("{m} / {x} ms; {late} not before the next fault"),
            _ if late > 0 => format!("{late} not before the next fault"),
            _ => "-".into(),
        };
        let rep = &r.report;
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {} ({} / {} / {}) | {gap} | {healed} | {caught} | {} ms | {} | {} | {} / {} |",
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
            "  {:>8} ms for {:>6} ms  {:<50} write gap {} ms, after heal {} ms, caught up {}",
            e.episode.start_ms,
            e.episode.duration_ms,
            e.description,
            e.write_gap_ms,
            e.heal_gap_ms,
            e.caught_up_ms
                .map_or("not before the next fault".into(), |ms| format!(
                    "{ms} ms after"
                )),
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
