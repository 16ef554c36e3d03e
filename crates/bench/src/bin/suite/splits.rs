//! Splits and replica moves under load, on the local three-zone cluster
//! (issue 21: "p99 within 2x of the steady state" while a table grows from
//! one partition to many, and while replicas move onto a node added to a
//! zone).
//!
//! The same two concurrent streams run twice, each on a fresh cluster:
//! YCSB A (reads and updates of the loaded records) at
//! [`SPLIT_MIXED_PER_S`] and inserts of new records at
//! [`SPLIT_INSERTS_PER_S`], for [`SPLIT_WINDOW_S`]. The first cluster keeps
//! the default split size, so its table stays one partition (the steady
//! state); the second splits at [`SPLIT_SIZE_BYTES`], so the inserts make
//! its table split again and again. Then, on the second cluster, YCSB A
//! alone runs for [`MOVE_WINDOW_S`] before and after a fourth node joins
//! az-a, and the control plane moves half of az-a's replicas onto it.

use crate::procs::{self, Cluster, Proc};
use crate::report::{RunResult, SystemResult};
use crate::{SuiteArgs, bench_args, spec};
use anyhow::Context;
use dynaraft_bench::ops::Protocol;
use dynaraft_bench::runner::{BenchArgs, LoadMode, Report};
use dynaraft_bench::workload::Workload;
use std::path::Path;
use std::process::Command;

/// Split size of the growing cluster, in bytes.
pub const SPLIT_SIZE_BYTES: u64 = 512 * 1024;
/// Records loaded first: under one split size, so the table starts as one
/// partition.
pub const SPLIT_RECORDS: u64 = 400;
/// YCSB A's requests per second (fixed rate).
pub const SPLIT_MIXED_PER_S: f64 = 200.0;
/// Inserts per second (fixed rate).
pub const SPLIT_INSERTS_PER_S: f64 = 400.0;
/// Length of each measured window with inserts, in seconds.
pub const SPLIT_WINDOW_S: u64 = 40;
/// Length of each window of YCSB A alone, before and while replicas move,
/// in seconds.
pub const MOVE_WINDOW_S: u64 = 40;
/// Concurrent requests of each stream (enough for its fixed rate).
const STREAM_CONCURRENCY: usize = 16;
const TABLE: &str = "bench-splits";

/// What one window with inserts measured.
struct Window {
    mixed: Report,
    inserts: Report,
    partitions: usize,
}

pub async fn splits(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let binary = std::path::absolute(&args.binary)?;
    let (router_port, node_port) = (args.base_port + 23, args.base_port + 24);
    let steady_dir = std::path::absolute(args.out.join("splits-steady"))?;
    let steady = {
        let c = Cluster::start_with(&binary, &steady_dir, router_port, node_port, 1, "", None)?;
        window(args, &binary, &c, router_port).await?
    };
    let dir = std::path::absolute(args.out.join("splits"))?;
    let node_flags = format!("--split-size-bytes {SPLIT_SIZE_BYTES}");
    let c = Cluster::start_with(&binary, &dir, router_port, node_port, 1, &node_flags, None)?;
    let grown = window(args, &binary, &c, router_port).await?;
    let idle_rss = Some(c.rss_bytes());
    let mut mixed = stream(args, router_port, Workload::A, SPLIT_MIXED_PER_S);
    mixed.duration_s = MOVE_WINDOW_S;
    let before = dynaraft_bench::run(&mixed)
        .await
        .context("before the moves")?;
    let control = std::fs::read_to_string(dir.join("control"))?;
    let mut node = Command::new(&binary);
    node.args(["node", "--id", "4", "--az", "az-a", "--listen"])
        .arg(format!("127.0.0.1:{}", node_port + 3))
        .arg("--data-dir")
        .arg(dir.join("node-4"))
        .args(["--control", control.trim()])
        .args(node_flags.split(' '));
    let fourth = Proc::spawn("node 4", node, &dir.join("node-4.log"))?;
    let during = dynaraft_bench::run(&mixed)
        .await
        .context("during the moves")?;
    let moved = replicas_on(&binary, control.trim(), 4)?;
    let az_a = partitions(&binary, control.trim())?;
    eprintln!(
        "[suite] splits    steady p99 {} ms, splitting (1 -> {} partitions) p99 {} ms; before moves p99 {} ms, during {} moves p99 {} ms",
        dynaraft_bench::stats::ms(steady.mixed.summary.all.p99_us),
        grown.partitions,
        dynaraft_bench::stats::ms(grown.mixed.summary.all.p99_us),
        dynaraft_bench::stats::ms(before.summary.all.p99_us),
        moved,
        dynaraft_bench::stats::ms(during.summary.all.p99_us),
    );
    let loaded_rss = Some(c.rss_bytes() + procs::rss_bytes(fourth.pid()).unwrap_or(0));
    drop(fourth);
    let disk_bytes = Some(procs::disk_bytes(&dir));
    drop(c);
    let run = |label: String, report: Report| RunResult { label, report };
    Ok(SystemResult {
        name: "splits and moves, cluster".into(),
        description: format!(
            "the local three-zone cluster, tables created with one partition; YCSB A at {SPLIT_MIXED_PER_S:.0}/s and inserts at {SPLIT_INSERTS_PER_S:.0}/s together for {SPLIT_WINDOW_S} s over {SPLIT_RECORDS} loaded records of about {} bytes, on a cluster with the default split size (steady: {} partition at the end) and on one splitting at {SPLIT_SIZE_BYTES} bytes (1 -> {} partitions in the window); then on the latter YCSB A alone for {MOVE_WINDOW_S} s, and again while a fourth node joins az-a and the control plane moves replicas onto it ({moved} of {az_a} partitions' az-a replicas on it at the end)",
            args.item_bytes, steady.partitions, grown.partitions
        ),
        startup_ms: None,
        idle_rss,
        loaded_rss,
        disk_bytes,
        runs: vec![
            run(mixed_label("steady"), steady.mixed),
            run(
                format!("inserts at {SPLIT_INSERTS_PER_S:.0}/s, steady"),
                steady.inserts,
            ),
            run(mixed_label("splitting"), grown.mixed),
            run(
                format!("inserts at {SPLIT_INSERTS_PER_S:.0}/s, splitting"),
                grown.inserts,
            ),
            run(mixed_label("before moves"), before),
            run(mixed_label("during moves"), during),
        ],
    })
}

/// The label of YCSB A's run in `phase` (the report's targets find it).
pub fn mixed_label(phase: &str) -> String {
    format!("A at {SPLIT_MIXED_PER_S:.0}/s, {phase}")
}

/// One stream's settings: `workload` at `rate` on the splits table.
fn stream(args: &SuiteArgs, router_port: u16, workload: Workload, rate: f64) -> BenchArgs {
    let url = format!("http://127.0.0.1:{router_port}");
    let mut b = bench_args(
        args,
        &url,
        Protocol::Dynamodb,
        &spec("splits", workload),
        Some(rate),
    );
    b.table = Some(TABLE.into());
    b.records = SPLIT_RECORDS;
    b.concurrency = STREAM_CONCURRENCY;
    b.duration_s = SPLIT_WINDOW_S;
    b.load = LoadMode::Never;
    b
}

/// Loads the table, then runs YCSB A and the inserts together; the
/// table's partitions at the end.
async fn window(
    args: &SuiteArgs,
    binary: &Path,
    c: &Cluster,
    router_port: u16,
) -> anyhow::Result<Window> {
    let mixed = stream(args, router_port, Workload::A, SPLIT_MIXED_PER_S);
    dynaraft_bench::runner::load_range(&mixed, 0..SPLIT_RECORDS).await?;
    let inserts = stream(args, router_port, Workload::Insert, SPLIT_INSERTS_PER_S);
    let (mixed, inserts) = tokio::join!(dynaraft_bench::run(&mixed), dynaraft_bench::run(&inserts));
    let control = std::fs::read_to_string(c.dir().join("control"))?;
    Ok(Window {
        mixed: mixed.context("YCSB A")?,
        inserts: inserts.context("inserts")?,
        partitions: partitions(binary, control.trim())?,
    })
}

/// `dynaraft admin partitions --json` of the cluster, the table's rows.
fn rows(binary: &Path, control: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = Command::new(binary)
        .args(["admin", "--control", control, "partitions", "--json"])
        .output()
        .context("dynaraft admin partitions")?;
    anyhow::ensure!(
        out.status.success(),
        "admin partitions: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(rows
        .into_iter()
        .filter(|r| r["table"] == TABLE && r["index"].is_null())
        .collect())
}

/// The table's partitions.
fn partitions(binary: &Path, control: &str) -> anyhow::Result<usize> {
    Ok(rows(binary, control)?.len())
}

/// The table's partitions with a replica on node `id`.
fn replicas_on(binary: &Path, control: &str, id: u64) -> anyhow::Result<usize> {
    let on = |r: &serde_json::Value| {
        r["replicas"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|x| x.as_u64() == Some(id)))
    };
    Ok(rows(binary, control)?.iter().filter(|r| on(r)).count())
}
