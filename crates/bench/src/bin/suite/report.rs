//! The suite's results, and docs/performance.md rendered from them.

use crate::command_line;
use dynaraft_bench::Report;
use dynaraft_bench::runner::PACER_TICK_US;
use dynaraft_bench::stats::{Latencies, Summary, ms};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub seconds: u64,
    pub records: u64,
    pub item_bytes: usize,
    pub concurrency: usize,
    pub floors: Option<Floors>,
    pub systems: Vec<SystemResult>,
    pub growth: Option<crate::growth::Growth>,
    /// Systems (or the growth run) that failed, with why.
    #[serde(default)]
    pub failures: Vec<String>,
    pub suite_seconds: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub filesystem: String,
    pub commit: String,
    pub date: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Floors {
    pub fsync: Summary,
    pub http_one: Summary,
    pub http_many: Summary,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct SystemResult {
    pub name: String,
    pub description: String,
    pub startup_ms: Option<f64>,
    pub idle_rss: Option<u64>,
    pub loaded_rss: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub runs: Vec<RunResult>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    pub label: String,
    pub report: Report,
}

impl Results {
    pub fn new(
        machine: Machine,
        seconds: u64,
        records: u64,
        item_bytes: usize,
        concurrency: usize,
    ) -> Self {
        Self {
            machine,
            seconds,
            records,
            item_bytes,
            concurrency,
            floors: None,
            systems: Vec::new(),
            growth: None,
            failures: Vec::new(),
            suite_seconds: 0.0,
        }
    }

    fn system(&self, name: &str) -> Option<&SystemResult> {
        self.systems.iter().find(|s| s.name == name)
    }

    fn run(&self, system: &str, label: &str) -> Option<&Summary> {
        self.system(system)?
            .runs
            .iter()
            .find(|r| r.label == label)
            .map(|r| &r.report.summary)
    }
}

/// Facts about the machine the numbers come from.
pub fn machine(out: &Path) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let dirty =
        !command_line(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]))
            .is_empty()
            && command_line(Command::new("git").args([
                "status",
                "--porcelain",
                "--untracked-files=no",
            ])) != "?";
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: field(&read("/proc/cpuinfo"), "model name"),
        memory: field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches(" kB")
            .parse::<f64>()
            .map_or_else(
                |_| "?".into(),
                |kib| format!("{:.1} GiB", kib / (1024.0 * 1024.0)),
            ),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        filesystem: command_line(
            Command::new("findmnt")
                .args(["-n", "-o", "FSTYPE", "-T"])
                .arg(out),
        ),
        commit: format!(
            "{}{}",
            command_line(Command::new("git").args(["rev-parse", "--short", "HEAD"])),
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        date: command_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// "a vs b ops/s: ratio", or "-" when either is missing.
fn versus(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a:.0} vs {b:.0} ops/s: {}", ratio(a, b)),
        _ => "-".into(),
    }
}

/// The server's CPU time per operation in microseconds, or "-".
fn cpu_per_op(s: &Summary) -> String {
    s.server_cpu_us_per_op
        .map_or("-".into(), |us| format!("{us:.1}"))
}

/// Microseconds as "x.xx ms", or "-".
fn ms_or_dash(us: Option<u64>) -> String {
    us.map_or("-".into(), |us| format!("{} ms", ms(us)))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// One row of a latency table.
fn row(label: &str, s: &Summary, l: &Latencies, extra: &str) -> String {
    format!(
        "| {label} | {:.0} | {} | {} | {} | {} | {} | {}{extra} |\n",
        s.throughput,
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        s.errors,
        s.conflicts
    )
}

/// docs/performance.md.
pub fn markdown(r: &Results, analysis: &str) -> String {
    let mut md = String::new();
    let m = &r.machine;
    let _ = writeln!(md, "# Performance\n");
    let _ = writeln!(
        md,
        "Generated by `make bench` on {} from commit {} in {:.0} s. Do not edit by hand: the numbers come from \
         `crates/bench` (the suite), the analysis from `crates/bench/analysis.md`.\n",
        m.date, m.commit, r.suite_seconds
    );
    let _ = writeln!(md, "## The machine\n");
    let _ = writeln!(
        md,
        "{} CPUs ({}), {} of memory, Linux {}, data on {}. The load generator runs on the same machine and \
         competes with the server for the same cores, as it does for every system below.\n",
        m.cpus, m.cpu_model, m.memory, m.kernel, m.filesystem
    );
    let _ = writeln!(md, "## How it was measured\n");
    let _ = writeln!(
        md,
        "Every number comes from `dynaraft bench` (the same load generator for every system): {} records of \
         about {} bytes loaded first, then each workload closed-loop at {} concurrent requests (one HTTP/1.1 \
         connection each, every request SigV4-signed) for {} s after a warm-up. \"At half peak\" runs are \
         fixed-rate (open loop) at half the closed-loop throughput of the same workload, with latency counted \
         from when each request was due; a pacer thread releases the schedule every {} ms, so requests leave \
         evenly rather than in bursts on tokio's millisecond timer. Every answer is checked (the item's payload \
         is a function of its version; a Query must return exactly the records in its range); a non-200, a timeout or a wrong answer \
         is an error and is not throughput. Latencies are in milliseconds, over successful operations. Where one process serves a \
         system, \"server CPU µs/op\" is the CPU time (user and system, every thread) it spent in the measured window per \
         successful operation, from `/proc`: what a request costs the server, which throughput hides when the load generator \
         shares its cores. Workloads \
         (YCSB): A 50% GetItem / 50% PutItem; B 95/5; C 100% GetItem; D 95% GetItem of the latest records / 5% \
         new records; E 95% Query of 1-100 items / 5% new records; F 50% GetItem / 50% read-modify-write (a \
         PutItem conditional on the version read; lost races are conflicts, not throughput); put 100% PutItem; \
         insert 100% PutItem of new records, on a table of its own. \"PartiQL\" rows send the same reads and \
         writes as ExecuteStatement: SELECT by full key, INSERT, with `?` parameters. \
         Keys are zipfian (D: latest). GetItem and Query are eventually consistent unless the row says otherwise.\n",
        r.records,
        r.item_bytes,
        r.concurrency,
        r.seconds,
        PACER_TICK_US as f64 / 1000.0
    );
    if !r.failures.is_empty() {
        let _ = writeln!(md, "## Not measured in this run\n");
        for f in &r.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
        let _ = writeln!(md);
    }
    targets(&mut md, r);
    floors(&mut md, r);
    systems(&mut md, r);
    resources(&mut md, r);
    growth(&mut md, r);
    if !analysis.trim().is_empty() {
        let _ = writeln!(md, "{}", analysis.trim_end());
    }
    md
}

/// Issue 27's targets: embedded GetItem, PutItem and YCSB A throughput as a
/// multiple of dynalite's in the same sitting.
const TARGET_GET_VS_DYNALITE: f64 = 5.0;
const TARGET_PUT_VS_DYNALITE: f64 = 3.0;
const TARGET_A_VS_DYNALITE: f64 = 3.0;
/// Embedded durable PutItem as a multiple of the report issue 27 measured
/// against ("today's"): `make bench` of that commit, in ops/s. Another
/// sitting, so this ratio carries the 10-20% spread between sittings.
const TARGET_PUT_VS_BASELINE: f64 = 1.5;
const BASELINE_PUT_OPS_S: f64 = 8181.0;
const BASELINE_REPORT: &str = "commit 858d44a, 2026-11-25";
/// Bytes on disk per byte of live items, at every size of the growth run.
const TARGET_DISK_PER_LIVE_BYTE: f64 = 2.0;
/// Cluster replicated PutItem as a multiple of three-member etcd's.
const TARGET_CLUSTER_VS_ETCD: f64 = 1.5;
/// Cluster eventually consistent GetItem as a share of embedded's.
const TARGET_CLUSTER_READ_FRACTION: f64 = 0.7;
/// p99 at half peak, in microseconds; idle RSS, in bytes; start-up, in
/// milliseconds; cluster PutItem p99, in microseconds.
/// Least share of plain PutItem throughput kept with a stream enabled.
const TARGET_STREAM_PUT_FRACTION: f64 = 0.9;
/// Least share of GetItem and PutItem throughput kept with TLS,
/// authentication and authorization on (issue 24).
const TARGET_SECURE_FRACTION: f64 = 0.9;
/// A PartiQL statement keeps at least this share of its JSON operation's
/// throughput (issue: parsing and planning must not dominate).
const TARGET_PARTIQL_FRACTION: f64 = 0.75;
const TARGET_EMBEDDED_P99_US: u64 = 2_000;
const TARGET_IDLE_RSS_BYTES: u64 = 30 * 1024 * 1024;
const TARGET_STARTUP_MS: f64 = 200.0;
const TARGET_CLUSTER_P99_US: u64 = 10_000;
/// Replication lag of a global table at 1,000 writes a second, p99, in
/// milliseconds.
const TARGET_REPLICATION_LAG_P99_MS: f64 = 1000.0;
/// Write p99 while a backup runs, at most this times that without one.
const TARGET_BACKUP_P99_FACTOR: f64 = 2.0;
/// Client p99 while a table splits, or while replicas move, at most this
/// times that without (issue 21).
const TARGET_SPLIT_P99_FACTOR: f64 = 2.0;

fn targets(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
    let mut line = |target: &str, measured: String, met: Option<bool>| {
        let verdict = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {target} | {measured} | {verdict} |");
    };
    let tp = |sys: &str, label: &str| r.run(sys, label).map(|s| s.throughput);
    let p99 = |sys: &str, label: &str| r.run(sys, label).map(|s| s.all.p99_us);
    for (label, what, factor) in [
        ("C", "GetItem", TARGET_GET_VS_DYNALITE),
        ("put", "durable PutItem", TARGET_PUT_VS_DYNALITE),
        ("A", "YCSB A", TARGET_A_VS_DYNALITE),
    ] {
        let (ours, theirs) = (tp("embedded", label), tp("dynalite", label));
        line(
            &format!("embedded {what} >= {factor}x dynalite"),
            versus(ours, theirs),
            ours.zip(theirs).map(|(a, b)| a >= factor * b),
        );
    }
    let put = tp("embedded", "put");
    line(
        &format!(
            "embedded durable PutItem >= {TARGET_PUT_VS_BASELINE}x that of the report when issue 27 was filed \
             ({BASELINE_PUT_OPS_S:.0} ops/s, {BASELINE_REPORT}; another sitting)"
        ),
        put.map_or("-".into(), |p| {
            format!("{p:.0} ops/s: {:.2}x", p / BASELINE_PUT_OPS_S)
        }),
        put.map(|p| p >= TARGET_PUT_VS_BASELINE * BASELINE_PUT_OPS_S),
    );
    let (streamed, plain) = (tp("embedded", "put, stream"), tp("embedded", "put"));
    line(
        "embedded PutItem with a NEW_AND_OLD_IMAGES stream >= 90% of without",
        versus(streamed, plain),
        streamed
            .zip(plain)
            .map(|(a, b)| a >= TARGET_STREAM_PUT_FRACTION * b),
    );
    for (label, what) in [("C", "GetItem"), ("put", "PutItem")] {
        const SECURE: &str = "embedded, TLS and authenticated";
        let (secure, plain) = (
            tp(SECURE, label),
            tp(SECURE, &format!("{label}{}", crate::WITHOUT_SECURITY)),
        );
        let cpu = |label: &str| r.run(SECURE, label).map_or("-".to_string(), cpu_per_op);
        let without = format!("{label}{}", crate::WITHOUT_SECURITY);
        line(
            &format!("embedded {what} with TLS, SigV4 and IAM policies >= 90% of without"),
            format!(
                "{} (server CPU {} vs {} µs per op)",
                versus(secure, plain),
                cpu(label),
                cpu(&without)
            ),
            secure
                .zip(plain)
                .map(|(a, b)| a >= TARGET_SECURE_FRACTION * b),
        );
    }
    for (statement, plain, what) in [
        ("C, PartiQL", "C", "SELECT by full key >= 75% of GetItem"),
        (
            "insert, PartiQL",
            "insert",
            "INSERT >= 75% of PutItem of new items",
        ),
    ] {
        let (a, b) = (tp("embedded", statement), tp("embedded", plain));
        line(
            &format!("embedded PartiQL {what}"),
            versus(a, b),
            a.zip(b).map(|(a, b)| a >= TARGET_PARTIQL_FRACTION * b),
        );
    }
    for label in ["C at half peak", "put at half peak"] {
        let v = p99("embedded", label);
        line(
            &format!("embedded p99 < 2 ms, {label}"),
            ms_or_dash(v),
            v.map(|us| us < TARGET_EMBEDDED_P99_US),
        );
    }
    let emb = r.system("embedded");
    let rss = emb.and_then(|s| s.idle_rss);
    line(
        "embedded idle RSS < 30 MiB",
        rss.map_or("-".into(), mib),
        rss.map(|b| b < TARGET_IDLE_RSS_BYTES),
    );
    let start = emb.and_then(|s| s.startup_ms);
    line(
        "embedded start-up < 200 ms",
        start.map_or("-".into(), |t| format!("{t:.0} ms")),
        start.map(|t| t < TARGET_STARTUP_MS),
    );
    if let Some(g) = &r.growth {
        let ratios: Vec<f64> = g
            .steps
            .iter()
            .map(crate::growth::Step::disk_per_live_byte)
            .collect();
        line(
            &format!(
                "disk <= {TARGET_DISK_PER_LIVE_BYTE} bytes per live byte at every size of the growth benchmark, once compaction has run"
            ),
            g.steps
                .iter()
                .zip(&ratios)
                .map(|(s, r)| {
                    let compacted = if s.idle_compaction_s.is_some() {
                        ""
                    } else {
                        " (not after an idle compaction)"
                    };
                    format!("{r:.2} at {}{compacted}", mib(s.live_bytes))
                })
                .collect::<Vec<_>>()
                .join(", "),
            (!ratios.is_empty()).then(|| {
                g.steps.iter().all(|s| s.idle_compaction_s.is_some())
                    && ratios.iter().all(|r| *r <= TARGET_DISK_PER_LIVE_BYTE)
            }),
        );
    }
    // The cluster through its router, then through node 1's own API.
    for (via, suffix) in [("the router", ""), ("node 1's API", crate::NODE_API)] {
        let put = format!("put{suffix}");
        let (ours, etcd) = (tp("cluster", &put), tp("etcd", "put"));
        line(
            &format!(
                "cluster replicated PutItem >= {TARGET_CLUSTER_VS_ETCD}x etcd 3 members, through {via}"
            ),
            versus(ours, etcd),
            ours.zip(etcd).map(|(a, b)| a >= TARGET_CLUSTER_VS_ETCD * b),
        );
        let v = p99("cluster", &put);
        line(
            &format!("cluster PutItem p99 < 10 ms (closed loop, peak), through {via}"),
            ms_or_dash(v),
            v.map(|us| us < TARGET_CLUSTER_P99_US),
        );
        let (c, e) = (tp("cluster", &format!("C{suffix}")), tp("embedded", "C"));
        line(
            &format!(
                "cluster eventually consistent GetItem >= {TARGET_CLUSTER_READ_FRACTION}x embedded, through {via}"
            ),
            versus(c, e),
            c.zip(e).map(|(a, b)| a >= TARGET_CLUSTER_READ_FRACTION * b),
        );
    }
    let lag = r
        .systems
        .iter()
        .flat_map(|s| &s.runs)
        .find_map(|run| run.report.replication_lag.as_ref());
    let put_p99 = |label: &str| {
        r.systems
            .iter()
            .flat_map(|s| &s.runs)
            .find(|run| run.label == label)
            .map(|run| run.report.summary.all.p99_us)
    };
    let (during, before) = (
        put_p99("put at 500/s, during a backup"),
        put_p99("put at 500/s"),
    );
    let (measured, met) = p99_within(during, before, TARGET_BACKUP_P99_FACTOR);
    line(
        "a backup does not stall writes: PutItem p99 during a backup within 2x of without",
        measured,
        met,
    );
    for (what, phase, baseline) in [
        ("a table splitting 1 -> many", "splitting", "steady"),
        (
            "replicas moving to an added node",
            "during moves",
            "before moves",
        ),
    ] {
        let label = crate::splits::mixed_label;
        let (during, before) = (
            p99("splits and moves, cluster", &label(phase)),
            p99("splits and moves, cluster", &label(baseline)),
        );
        let (measured, met) = p99_within(during, before, TARGET_SPLIT_P99_FACTOR);
        line(
            &format!("cluster p99 with {what} within 2x of without"),
            measured,
            met,
        );
    }
    line(
        "global table: replication lag p99 under 1 s at 1,000 writes/s",
        lag.map_or("-".into(), |l| {
            format!("{:.1} ms ({} missing)", l.p99_ms, l.missing)
        }),
        lag.map(|l| l.p99_ms < TARGET_REPLICATION_LAG_P99_MS && l.missing == 0),
    );
    let _ = writeln!(md);
}

/// "during vs before" (p99s in microseconds) and whether `during` is at
/// most `factor` times `before`; `None` when either was not measured.
fn p99_within(during: Option<u64>, before: Option<u64>, factor: f64) -> (String, Option<bool>) {
    match (during, before) {
        (Some(d), Some(b)) => (
            format!("{} vs {}", ms_or_dash(Some(d)), ms_or_dash(Some(b))),
            Some(d as f64 <= factor * b as f64),
        ),
        _ => ("-".into(), None),
    }
}

fn floors(md: &mut String, r: &Results) {
    let Some(f) = &r.floors else { return };
    let _ = writeln!(md, "## The machine's floors\n");
    let _ = writeln!(
        md,
        "| floor | per second | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---|---|---|---|---|"
    );
    for (name, s) in [
        ("4 KiB append + fdatasync, one at a time", &f.fsync),
        (
            "empty HTTP round trip (signed request, 200 `{}`), 1 connection",
            &f.http_one,
        ),
        (
            &format!("empty HTTP round trip, {} connections", r.concurrency) as &str,
            &f.http_many,
        ),
    ] {
        let l = &s.all;
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {} | {} | {} | {} |",
            s.throughput,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    }
    let _ = writeln!(
        md,
        "\nThe empty round trip at {} connections is the ceiling for any server on this machine with this \
         client: the client's share of the two cores (signing, parsing) is already in it.\n",
        r.concurrency
    );
}

fn systems(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Results\n");
    for sys in &r.systems {
        let _ = writeln!(md, "### {}\n\n{}.\n", sys.name, sys.description);
        let versus = if sys.name == "dynalite" || sys.name == "etcd" {
            ""
        } else {
            " | vs dynalite"
        };
        let cpu = sys
            .runs
            .iter()
            .any(|run| run.report.summary.server_cpu_us_per_op.is_some());
        let cpu_head = if cpu { " | server CPU µs/op" } else { "" };
        let _ = writeln!(
            md,
            "| workload | ops/s | p50 | p99 | p99.9 | max | errors | conflicts{cpu_head}{versus} |"
        );
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|---{}{}|",
            if cpu { "|---" } else { "" },
            if versus.is_empty() { "" } else { "|---" }
        );
        for run in &sys.runs {
            let s = &run.report.summary;
            let mut extra = String::new();
            if cpu {
                extra += &format!(" | {}", cpu_per_op(s));
            }
            if !versus.is_empty() {
                let theirs = r.run("dynalite", &run.label).map_or(0.0, |d| d.throughput);
                extra += &format!(" | {}", ratio(s.throughput, theirs));
            }
            md.push_str(&row(&run.label, s, &s.all, &extra));
        }
        let failures: Vec<_> = sys
            .runs
            .iter()
            .flat_map(|run| {
                run.report
                    .summary
                    .failures
                    .iter()
                    .map(move |f| (&run.label, f))
            })
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(md, "\nErrors:\n");
            for (label, f) in failures {
                let _ = writeln!(
                    md,
                    "- {label}: {} x{} (e.g. `{}`)",
                    f.class,
                    f.count,
                    f.example.replace('`', "'")
                );
            }
        }
        for run in &sys.runs {
            if let Some(lag) = &run.report.replication_lag {
                let _ = writeln!(
                    md,
                    "\nReplication lag under \"{}\" ({} probes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} never seen in the other region.",
                    run.label, lag.probes, lag.p50_ms, lag.p99_ms, lag.max_ms, lag.missing
                );
            }
            if let Some(b) = &run.report.backup {
                let _ = writeln!(
                    md,
                    "\nUnder \"{}\": the backup of {} items ({:.2} GiB) was AVAILABLE {:.1} s after CreateBackup; RestoreTableFromBackup took {:.1} s to ACTIVE{}.",
                    run.label,
                    b.items,
                    b.bytes as f64 / (1u64 << 30) as f64,
                    b.backup_s,
                    b.restore_s,
                    match b.pitr_restore_s {
                        Some(s) => format!(", RestoreTableToPointInTime {s:.1} s"),
                        None => String::new(),
                    }
                );
                if let (Some(e), Some(i)) = (b.export_s, b.import_s) {
                    let _ = writeln!(
                        md,
                        "ExportTableToPointInTime of the table as of the window's start ({} items, {:.2} GiB billed) was COMPLETED in {e:.1} s; ImportTable of its data files into a new table in {i:.1} s.",
                        b.export_items,
                        b.export_bytes as f64 / (1u64 << 30) as f64,
                    );
                }
                if let Some(first) = &b.first_refusal {
                    let _ = writeln!(
                        md,
                        "{} status polls were refused or unanswered and retried; the first: `{}`.",
                        b.refused_polls,
                        first.replace('`', "'")
                    );
                }
            }
        }
        let _ = writeln!(md);
    }
}

fn resources(md: &mut String, r: &Results) {
    let _ = writeln!(md, "## Start-up, memory and disk\n");
    let _ = writeln!(
        md,
        "| system | start-up | RSS idle | RSS after the workloads | disk after the workloads |\n|---|---|---|---|---|"
    );
    for sys in &r.systems {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            sys.name,
            sys.startup_ms.map_or("-".into(), |t| format!("{t:.0} ms")),
            sys.idle_rss.map_or("-".into(), mib),
            sys.loaded_rss.map_or("-".into(), mib),
            sys.disk_bytes.map_or("-".into(), mib)
        );
    }
    let _ = writeln!(
        md,
        "\nStart-up runs from spawning the process to its first answered request (the cluster's is left out: \
         `deploy/local/cluster.sh` waits for node registration). RSS is summed over a system's processes.\n"
    );
}

fn growth(md: &mut String, r: &Results) {
    let Some(g) = &r.growth else { return };
    let _ = writeln!(md, "## Growth\n");
    let _ = writeln!(
        md,
        "One embedded server (on disk, durable) whose table grows through {} of about {} bytes per item \
         ({} GiB scaled by {}; `make bench-growth` runs the full sizes). At each size: GetItem and \
         PutItem closed loop at {} connections, uniform keys (the whole table is touched, not a hot set). \
         Disk is what the file system allocated under the data directory (what `du` shows), right after \
         the PutItem run and again once the server's idle compaction has run (5 s after the last write it \
         flushes its memtable and journal, purges the Raft log, closes the WAL segment and, when enough \
         was written, merges the tree; GetItem is measured after it). A `-` for the compaction: \
         \"disk then\" was measured right after the writes (none finished within the wait, or the \
         results predate it).\n",
        g.steps
            .iter()
            .map(|s| mib(s.live_bytes))
            .collect::<Vec<_>>()
            .join(", "),
        r.item_bytes,
        g.steps_gib
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        g.scale,
        r.concurrency
    );
    let _ = writeln!(
        md,
        "| live data | records | load (records/s) | PutItem ops/s | PutItem p99 | disk after the writes | idle compaction done after | disk then | disk / live | GetItem ops/s | GetItem p99 | RSS |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &g.steps {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} | {:.0} | {} | {} |",
            mib(s.live_bytes),
            s.records,
            s.load_per_second,
            s.put.throughput,
            ms(s.put.all.p99_us),
            s.disk_bytes_after_writes.map_or("-".into(), mib),
            s.idle_compaction_s
                .map_or("-".into(), |t| format!("{t:.1} s")),
            mib(s.disk_bytes),
            s.disk_per_live_byte(),
            s.get.throughput,
            ms(s.get.all.p99_us),
            s.rss_bytes.map_or("-".into(), mib)
        );
    }
    let _ = writeln!(md);
}
