//! `dynaraft-bench-suite`: the side-by-side benchmark behind `make bench`.
//!
//! In one sitting on one machine it measures the machine's floors (fsync,
//! an empty HTTP round trip), then the embedded server (durable, on disk),
//! dynalite (installed from npm on first use), the local three-zone
//! cluster and, when its binary is there, a three-member etcd, each under
//! the same workloads with the same load generator, and writes the numbers
//! and the verdict on each target to docs/performance.md.

mod growth;
mod procs;
mod report;
mod splits;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dynaraft_bench::floors;
use dynaraft_bench::ops::Protocol;
use dynaraft_bench::runner::{BenchArgs, LoadMode};
use dynaraft_bench::workload::Workload;
use procs::Proc;
use report::{Floors, Results, RunResult, SystemResult};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "dynaraft-bench-suite",
    about = "The side-by-side benchmark behind `make bench`"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every system under every workload and write the report.
    Run(Box<SuiteArgs>),
    /// Render the report again from a results.json (e.g. after editing the
    /// analysis), without measuring anything.
    Report {
        #[arg(long, default_value = "target/bench/results.json")]
        results: PathBuf,
        #[arg(long, default_value = "docs/performance.md")]
        report: PathBuf,
        #[arg(long, default_value = "crates/bench/analysis.md")]
        analysis: PathBuf,
    },
    /// An HTTP server that answers everything with 200 `{}` (the floor).
    #[command(hide = true)]
    EmptyServer {
        #[arg(long)]
        port: u16,
    },
}

#[derive(clap::Args, Clone)]
pub struct SuiteArgs {
    /// The dynaraft binary (a release build).
    #[arg(long)]
    binary: PathBuf,
    /// Where data directories, logs and results.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The markdown report.
    #[arg(long, default_value = "docs/performance.md")]
    report: PathBuf,
    /// Hand-written analysis appended to the report.
    #[arg(long, default_value = "crates/bench/analysis.md")]
    analysis: PathBuf,
    /// Systems to measure (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "embedded,embedded-auth,global,backup,dynalite,cluster,splits,etcd"
    )]
    systems: Vec<String>,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds before each.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Records loaded into each table.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Item size, in bytes.
    #[arg(long, default_value_t = 1000)]
    item_bytes: usize,
    /// Concurrent requests.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Partitions per table in the cluster.
    #[arg(long, default_value_t = 3)]
    partitions: usize,
    /// First of the ports the suite uses (it takes about 30 after it).
    #[arg(long, default_value_t = 18400)]
    base_port: u16,
    /// dynalite version installed from npm.
    #[arg(long, default_value = "3.2.2")]
    dynalite_version: String,
    /// etcd binary (Debian's etcd-server); skipped when absent.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Growth benchmark: the table grows through `--growth-steps-gib`
    /// times this (1 for the full sizes; 0 skips it).
    #[arg(long, default_value_t = 0.01)]
    growth_scale: f64,
    /// Growth benchmark: the table sizes it grows through, in GiB before
    /// `--growth-scale`, ascending (a disk too small for the last can
    /// leave it out).
    #[arg(long, value_delimiter = ',', default_values_t = growth::GROWTH_STEPS_GIB)]
    growth_steps_gib: Vec<f64>,
    /// Measured seconds per workload at each growth step.
    #[arg(long, default_value_t = 5)]
    growth_seconds: u64,
}

/// How long the fsync floor is probed, in seconds.
const FSYNC_PROBE_S: u64 = 3;
/// Longest window of each empty-HTTP floor measurement, in seconds.
const HTTP_FLOOR_MAX_S: u64 = 5;
/// Request timeout of every measured run, in milliseconds (a timeout is an
/// error).
const REQUEST_TIMEOUT_MS: u64 = 5000;

/// One measurement of a system: a workload, maybe at a fraction of the
/// peak an earlier one measured.
struct Spec {
    label: &'static str,
    workload: Workload,
    consistent: bool,
    /// (label of the closed-loop run, fraction of its throughput).
    rate_of: Option<(&'static str, f64)>,
    /// Run on a table of its own with a stream of this view type.
    stream: Option<&'static str>,
    /// Run on a table of its own by this name.
    table: Option<&'static str>,
    /// Read and write with PartiQL statements instead of GetItem/PutItem.
    partiql: bool,
}

const fn spec(label: &'static str, workload: Workload) -> Spec {
    Spec {
        label,
        workload,
        consistent: false,
        rate_of: None,
        stream: None,
        table: None,
        partiql: false,
    }
}

/// Every YCSB workload, closed loop.
const YCSB: [Spec; 7] = [
    spec("C", Workload::C),
    spec("put", Workload::Put),
    spec("A", Workload::A),
    spec("B", Workload::B),
    spec("D", Workload::D),
    spec("E", Workload::E),
    spec("F", Workload::F),
];
const CONSISTENT_C: Spec = Spec {
    label: "C, consistent reads",
    workload: Workload::C,
    consistent: true,
    rate_of: None,
    stream: None,
    table: None,
    partiql: false,
};
const HALF_PEAK_C: Spec = Spec {
    label: "C at half peak",
    workload: Workload::C,
    consistent: false,
    rate_of: Some(("C", 0.5)),
    stream: None,
    table: None,
    partiql: false,
};
/// The label suffix of a cluster's runs through a node's own API.
pub const NODE_API: &str = ", API on node 1";
const NODE_API_C: Spec = spec("C, API on node 1", Workload::C);
const NODE_API_PUT: Spec = spec("put, API on node 1", Workload::Put);
const HALF_PEAK_PUT: Spec = Spec {
    label: "put at half peak",
    workload: Workload::Put,
    consistent: false,
    rate_of: Some(("put", 0.5)),
    stream: None,
    table: None,
    partiql: false,
};
/// PutItem to a table with a NEW_AND_OLD_IMAGES stream (the stream's cost).
const PUT_STREAM: Spec = Spec {
    label: "put, stream",
    workload: Workload::Put,
    consistent: false,
    rate_of: None,
    stream: Some("NEW_AND_OLD_IMAGES"),
    table: Some("bench-stream"),
    partiql: false,
};
/// GetItem as a PartiQL `SELECT` by full key (the cost of the statement
/// layer against "C").
const PARTIQL_C: Spec = Spec {
    label: "C, PartiQL",
    workload: Workload::C,
    consistent: false,
    rate_of: None,
    stream: None,
    table: None,
    partiql: true,
};
/// PutItem of new records, and the same as PartiQL `INSERT`, each on a
/// table of its own (an insert run consumes record numbers).
const INSERT: Spec = Spec {
    label: "insert",
    workload: Workload::Insert,
    consistent: false,
    rate_of: None,
    stream: None,
    table: Some("bench-insert"),
    partiql: false,
};
const PARTIQL_INSERT: Spec = Spec {
    label: "insert, PartiQL",
    workload: Workload::Insert,
    consistent: false,
    rate_of: None,
    stream: None,
    table: Some("bench-insert-partiql"),
    partiql: true,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::EmptyServer { port } => rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            Ok(floors::serve_empty(listener).await?)
        }),
        Cmd::Run(args) => rt.block_on(suite(*args)),
        Cmd::Report {
            results,
            report,
            analysis,
        } => {
            let r: Results = serde_json::from_slice(&std::fs::read(&results)?)
                .with_context(|| format!("reading {}", results.display()))?;
            let analysis = std::fs::read_to_string(&analysis).unwrap_or_default();
            std::fs::write(&report, report::markdown(&r, &analysis))?;
            Ok(())
        }
    }
}

async fn suite(args: SuiteArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let started = Instant::now();
    let mut results = Results::new(
        report::machine(&args.out),
        args.seconds,
        args.records,
        args.item_bytes,
        args.concurrency,
    );
    results.floors = Some(measure_floors(&args).await?);
    // A system that fails is reported and the others still run; the
    // suite exits with an error at the end.
    for system in args.systems.iter().filter(|s| !s.is_empty()) {
        let r = match system.as_str() {
            "embedded" => embedded(&args).await,
            "embedded-auth" => embedded_auth(&args).await,
            "global" => global(&args).await,
            "backup" => backup(&args).await,
            "dynalite" => dynalite(&args).await,
            "cluster" => cluster(&args).await,
            "splits" => splits::splits(&args).await,
            "etcd" if !args.etcd.exists() => {
                eprintln!("[suite] {} not found: etcd skipped", args.etcd.display());
                continue;
            }
            "etcd" => etcd(&args).await,
            other => anyhow::bail!("unknown system {other:?}"),
        };
        match r {
            Ok(r) => results.systems.push(r),
            Err(e) => {
                eprintln!("[suite] {system} failed: {e:#}");
                results.failures.push(format!("{system}: {e:#}"));
            }
        }
    }
    if args.growth_scale > 0.0 {
        match growth::growth(&args).await {
            Ok(g) => results.growth = Some(g),
            Err(e) => {
                eprintln!("[suite] growth failed: {e:#}");
                results.failures.push(format!("growth: {e:#}"));
            }
        }
    }
    results.suite_seconds = started.elapsed().as_secs_f64();
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    let analysis = std::fs::read_to_string(&args.analysis).unwrap_or_default();
    std::fs::write(&args.report, report::markdown(&results, &analysis))?;
    eprintln!(
        "[suite] wrote {} in {:.0} s",
        args.report.display(),
        results.suite_seconds
    );
    if !results.failures.is_empty() {
        anyhow::bail!("not measured: {}", results.failures.join("; "));
    }
    Ok(())
}

async fn measure_floors(args: &SuiteArgs) -> anyhow::Result<Floors> {
    eprintln!("[suite] floors: fsync and an empty HTTP round trip");
    let fsync = floors::fsync_latency(&args.out.join("fsync"), Duration::from_secs(FSYNC_PROBE_S))?;
    let port = args.base_port;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["empty-server", "--port", &port.to_string()]);
    let server = Proc::spawn("empty server", cmd, &args.out.join("empty-server.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    procs::wait_ready(&url, false, Instant::now()).await?;
    let window = Duration::from_secs(args.seconds.min(HTTP_FLOOR_MAX_S));
    let one = floors::http_round_trips(&url, 1, window).await;
    let many = floors::http_round_trips(&url, args.concurrency, window).await;
    drop(server);
    Ok(Floors {
        fsync,
        http_one: one,
        http_many: many,
    })
}

fn bench_args(
    args: &SuiteArgs,
    url: &str,
    protocol: Protocol,
    s: &Spec,
    rate: Option<f64>,
) -> BenchArgs {
    BenchArgs {
        endpoint: url.to_string(),
        protocol: if s.partiql {
            Protocol::Partiql
        } else {
            protocol
        },
        workload: s.workload,
        distribution: None,
        table: s.table.map(str::to_string),
        records: args.records,
        item_bytes: args.item_bytes,
        concurrency: args.concurrency,
        duration_s: args.seconds,
        warmup_s: args.warmup_s,
        rate,
        consistent_reads: s.consistent,
        timeout_ms: REQUEST_TIMEOUT_MS,
        seed: None,
        load: LoadMode::Auto,
        region: "us-east-1".into(),
        quiet: true,
        replica_region: None,
        replica_endpoint: None,
        stream_view_type: s.stream.map(str::to_string),
        backup: false,
        pitr: false,
        export_bucket: None,
        server_pid: None,
    }
}

/// Run `specs` against one endpoint, served by process `server` when it
/// is one process (its CPU time per operation is measured).
async fn workloads(
    args: &SuiteArgs,
    system: &str,
    url: &str,
    protocol: Protocol,
    specs: &[&Spec],
    server: Option<u32>,
) -> anyhow::Result<Vec<RunResult>> {
    let mut runs: Vec<RunResult> = Vec::new();
    for s in specs {
        let rate = s.rate_of.and_then(|(label, fraction)| {
            runs.iter()
                .find(|r| r.label == label)
                .map(|r| r.report.summary.throughput * fraction)
        });
        let bench = BenchArgs {
            server_pid: server,
            ..bench_args(args, url, protocol, s, rate)
        };
        let report = dynaraft_bench::run(&bench)
            .await
            .with_context(|| format!("{system}, workload {}", s.label))?;
        let sum = &report.summary;
        eprintln!(
            "[suite] {system:<9} {:<22} {:>8.0} ops/s  p50 {:>6} ms  p99 {:>6} ms  errors {}",
            s.label,
            sum.throughput,
            dynaraft_bench::stats::ms(sum.all.p50_us),
            dynaraft_bench::stats::ms(sum.all.p99_us),
            sum.errors
        );
        runs.push(RunResult {
            label: s.label.to_string(),
            report,
        });
    }
    Ok(runs)
}

/// A fresh `dynaraft embedded` on disk under `out/name`, once it answers:
/// the process, its URL, its data directory and how long it took to start.
async fn start_embedded(
    args: &SuiteArgs,
    name: &str,
    port: u16,
) -> anyhow::Result<(Proc, String, PathBuf, Duration)> {
    start_embedded_with(args, name, port, &[], false).await
}

/// [`start_embedded`] with more flags (`https`: they make it serve TLS).
async fn start_embedded_with(
    args: &SuiteArgs,
    name: &str,
    port: u16,
    flags: &[&std::ffi::OsStr],
    https: bool,
) -> anyhow::Result<(Proc, String, PathBuf, Duration)> {
    let dir = args.out.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = Command::new(&args.binary);
    cmd.arg("embedded").arg("--data-dir").arg(&dir).args([
        "--port",
        &port.to_string(),
        "--instant-transitions",
    ]);
    cmd.args(flags);
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}");
    let t = Instant::now();
    let proc = Proc::spawn(name, cmd, &args.out.join(format!("{name}.log")))?;
    let startup = procs::wait_ready(&url, false, t).await?;
    Ok((proc, url, dir, startup))
}

async fn embedded(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let (proc, url, dir, startup) = start_embedded(args, "embedded", args.base_port + 1).await?;
    let idle_rss = procs::rss_bytes(proc.pid());
    let specs: Vec<&Spec> = YCSB
        .iter()
        .chain([
            &CONSISTENT_C,
            &HALF_PEAK_C,
            &HALF_PEAK_PUT,
            &PUT_STREAM,
            &PARTIQL_C,
            &INSERT,
            &PARTIQL_INSERT,
        ])
        .collect();
    let runs = workloads(
        args,
        "embedded",
        &url,
        Protocol::Dynamodb,
        &specs,
        Some(proc.pid()),
    )
    .await?;
    Ok(SystemResult {
        name: "embedded".into(),
        description: "`dynaraft embedded`, data on disk, every write fsynced (group commit) before it is acknowledged".into(),
        startup_ms: Some(startup.as_secs_f64() * 1000.0),
        idle_rss,
        loaded_rss: procs::rss_bytes(proc.pid()),
        disk_bytes: Some(procs::disk_bytes(&dir)),
        runs,
    })
}

/// The load generator's user in the authenticated runs: its table and
/// indexes, everything but deleting them, as an application's policy reads.
const BENCH_AUTH_FILE: &str = r#"{"users": [{
  "access_key_id": "bench", "secret_access_key": "bench-secret", "account_id": "000000000000",
  "policies": [{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "dynamodb:*",
     "Resource": ["arn:aws:dynamodb:us-east-1:000000000000:table/bench*",
                  "arn:aws:dynamodb:us-east-1:000000000000:table/bench*/index/*"]},
    {"Effect": "Allow", "Action": ["dynamodb:ListTables", "dynamodb:DescribeLimits"], "Resource": "*"},
    {"Effect": "Deny", "Action": ["dynamodb:DeleteTable", "dynamodb:UpdateTable"],
     "Resource": "arn:aws:dynamodb:*:*:table/*",
     "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.1"}}}]}]}]}"#;

/// Rounds of each workload in the security-cost runs: the plain and the
/// secure server take turns, and the median round of each is reported.
const SECURE_ROUNDS: usize = 3;
/// The label suffix of the plain server's rounds in the security-cost
/// system.
pub const WITHOUT_SECURITY: &str = ", without security";

/// The embedded server with every request over TLS, authenticated (SigV4)
/// and authorized (the policy of [`BENCH_AUTH_FILE`]), under GetItem and
/// PutItem: the cost of security. A plain `embedded` server on the same
/// machine is measured in the same sitting, round for round in turns
/// ([`SECURE_ROUNDS`], the order swapped each round), so that the ratio
/// compares runs minutes apart at most rather than the `embedded` system's
/// from another part of the suite. The certificate is made here and
/// trusted by the load generator.
async fn embedded_auth(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let auth = args.out.join("bench-auth.json");
    std::fs::write(&auth, BENCH_AUTH_FILE)?;
    let (cert, key) = (
        args.out.join("bench-tls.crt"),
        args.out.join("bench-tls.key"),
    );
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    let pair = rcgen::KeyPair::generate()?;
    let certificate = params.self_signed(&pair)?;
    std::fs::write(&cert, certificate.pem())?;
    std::fs::write(&key, pair.serialize_pem())?;
    dynaraft_bench::client::trust_ca(certificate.pem().as_bytes())?;
    let flags = [
        std::ffi::OsStr::new("--auth-file"),
        auth.as_os_str(),
        std::ffi::OsStr::new("--tls-cert"),
        cert.as_os_str(),
        std::ffi::OsStr::new("--tls-key"),
        key.as_os_str(),
    ];
    let (proc, url, dir, startup) =
        start_embedded_with(args, "embedded-auth", args.base_port + 16, &flags, true).await?;
    let (plain_proc, plain_url, _, _) =
        start_embedded(args, "embedded-paired", args.base_port + 17).await?;
    let idle_rss = procs::rss_bytes(proc.pid());
    let mut runs = Vec::new();
    for spec in [&YCSB[0], &YCSB[1]] {
        let (mut secure, mut plain) = (Vec::new(), Vec::new());
        for round in 0..SECURE_ROUNDS {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_secure in order {
                let (u, system, pid, into) = if is_secure {
                    (&url, "embedded-auth", proc.pid(), &mut secure)
                } else {
                    (&plain_url, "embedded-paired", plain_proc.pid(), &mut plain)
                };
                let protocol = Protocol::Dynamodb;
                into.append(&mut workloads(args, system, u, protocol, &[spec], Some(pid)).await?);
            }
        }
        runs.push(median_round(secure, spec.label)?);
        runs.push(median_round(
            plain,
            &format!("{}{WITHOUT_SECURITY}", spec.label),
        )?);
    }
    Ok(SystemResult {
        name: "embedded, TLS and authenticated".into(),
        description: format!(
            "`dynaraft embedded --tls-cert --tls-key --auth-file`: the `embedded` server with every request over HTTPS (TLS 1.3, kept-alive connections), its SigV4 signature verified and the request authorized by an IAM policy. Rows \"{WITHOUT_SECURITY}\" are a plain `embedded` server measured in the same sitting: {SECURE_ROUNDS} rounds each, in turns, the median round of each shown"
        ),
        startup_ms: Some(startup.as_secs_f64() * 1000.0),
        idle_rss,
        loaded_rss: procs::rss_bytes(proc.pid()),
        disk_bytes: Some(procs::disk_bytes(&dir)),
        runs,
    })
}

/// The round of median throughput among `rounds`, labelled `label`.
fn median_round(mut rounds: Vec<RunResult>, label: &str) -> anyhow::Result<RunResult> {
    rounds.sort_by(|a, b| {
        a.report
            .summary
            .throughput
            .total_cmp(&b.report.summary.throughput)
    });
    let middle = rounds.len() / 2;
    let mut run = rounds
        .into_iter()
        .nth(middle)
        .ok_or_else(|| anyhow::anyhow!("no round of {label} ran"))?;
    run.label = label.to_string();
    Ok(run)
}

/// Writes a second the global-table run sends to one region (the issue's
/// steady load).
const GLOBAL_WRITES_PER_S: f64 = 1000.0;
/// The regions of the global-table run.
const GLOBAL_REGIONS: (&str, &str) = ("us-east-1", "eu-west-1");

/// Two embedded servers as the two regions of a global table: PutItem at
/// [`GLOBAL_WRITES_PER_S`] to the first while probes measure how soon its
/// writes are readable in the second (`dynaraft_bench::replica`).
async fn global(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let (east, west) = GLOBAL_REGIONS;
    let (pe, pw) = (args.base_port + 20, args.base_port + 21);
    let flags = |region: &str, peer: &str, port: u16| -> Vec<std::ffi::OsString> {
        [
            "--shared-db".to_string(),
            "--region".into(),
            region.into(),
            "--peer-region".into(),
            format!("{peer}=http://127.0.0.1:{port}"),
        ]
        .into_iter()
        .map(Into::into)
        .collect()
    };
    let (fe, fw) = (flags(east, west, pw), flags(west, east, pe));
    fn refs(f: &[std::ffi::OsString]) -> Vec<&std::ffi::OsStr> {
        f.iter().map(|s| s.as_os_str()).collect()
    }
    let (proc, url, dir, startup) =
        start_embedded_with(args, "global-east", pe, &refs(&fe), false).await?;
    let (_west_proc, west_url, _, _) =
        start_embedded_with(args, "global-west", pw, &refs(&fw), false).await?;
    let idle_rss = procs::rss_bytes(proc.pid());
    let spec = spec("put at 1000/s, replicated", Workload::Put);
    let mut bench = bench_args(
        args,
        &url,
        Protocol::Dynamodb,
        &spec,
        Some(GLOBAL_WRITES_PER_S),
    );
    bench.table = Some("bench-global".into());
    bench.replica_region = Some(west.into());
    bench.replica_endpoint = Some(west_url);
    let report = dynaraft_bench::run(&bench)
        .await
        .context("global, replicated put")?;
    if let Some(lag) = &report.replication_lag {
        eprintln!(
            "[suite] global    replication lag p50 {:.1} ms  p99 {:.1} ms  missing {}",
            lag.p50_ms, lag.p99_ms, lag.missing
        );
    }
    Ok(SystemResult {
        name: "global table, two embedded regions".into(),
        description: format!(
            "two `dynaraft embedded` servers on disk as regions {east} and {west} of a global table (each the other's `--peer-region`); PutItem at {GLOBAL_WRITES_PER_S:.0}/s to {east} while a probe writes there every {} ms and reads {west} every {} ms until the write shows",
            dynaraft_bench::replica::LAG_PROBE_INTERVAL_MS,
            dynaraft_bench::replica::LAG_POLL_MS
        ),
        startup_ms: Some(startup.as_secs_f64() * 1000.0),
        idle_rss,
        loaded_rss: procs::rss_bytes(proc.pid()),
        disk_bytes: Some(procs::disk_bytes(&dir)),
        runs: vec![RunResult {
            label: spec.label.to_string(),
            report,
        }],
    })
}

/// Records of the backup run's table: about 1 GiB at the suite's item size
/// of 1,000 bytes (the issue's table).
const BACKUP_RECORDS: u64 = 1 << 20;
/// Writes a second while the table is backed up, and the length of each
/// of the two measured windows (without and with a backup), in seconds.
const BACKUP_WRITES_PER_S: f64 = 500.0;
const BACKUP_WINDOW_S: u64 = 30;
/// The bucket (a directory of the server's object store) the backup run
/// exports to and imports from.
const EXPORT_BUCKET: &str = "bench";

/// The embedded server with a table of [`BACKUP_RECORDS`]: PutItem at
/// [`BACKUP_WRITES_PER_S`] for a window, then again with point-in-time
/// recovery on and a backup taken as the window opens (its latencies are
/// those of a table being backed up); then timed restores from the backup
/// and to the second window's start.
async fn backup(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let (proc, url, dir, startup) = start_embedded(args, "backup", args.base_port + 22).await?;
    let idle_rss = procs::rss_bytes(proc.pid());
    let plain = spec("put at 500/s", Workload::Put);
    let during = spec("put at 500/s, during a backup", Workload::Put);
    let mut bench = bench_args(
        args,
        &url,
        Protocol::Dynamodb,
        &plain,
        Some(BACKUP_WRITES_PER_S),
    );
    bench.table = Some("bench-backup".into());
    bench.records = BACKUP_RECORDS;
    bench.duration_s = BACKUP_WINDOW_S;
    let quiet = dynaraft_bench::run(&bench)
        .await
        .context("backup, plain put")?;
    bench.load = LoadMode::Never;
    bench.backup = true;
    bench.pitr = true;
    // The embedded server's object store is DATA_DIR/objects; a bucket is
    // a directory of it.
    std::fs::create_dir_all(dir.join("objects").join(EXPORT_BUCKET))?;
    bench.export_bucket = Some(EXPORT_BUCKET.into());
    let report = dynaraft_bench::run(&bench)
        .await
        .context("backup, put during a backup")?;
    if let Some(b) = &report.backup {
        eprintln!(
            "[suite] backup    {} items: backup {:.1} s, restore {:.1} s, to a point in time {:.1} s, export {:.1} s, import {:.1} s",
            b.items,
            b.backup_s,
            b.restore_s,
            b.pitr_restore_s.unwrap_or(0.0),
            b.export_s.unwrap_or(0.0),
            b.import_s.unwrap_or(0.0)
        );
    }
    Ok(SystemResult {
        name: "backups, embedded".into(),
        description: format!(
            "`dynaraft embedded` on disk, a table of {BACKUP_RECORDS} items of about {} bytes; PutItem at {BACKUP_WRITES_PER_S:.0}/s for {BACKUP_WINDOW_S} s, then again with point-in-time recovery on and a backup requested as the window opens; after it, RestoreTableFromBackup and RestoreTableToPointInTime (to the second window's start, so its writes are undone) timed until the restored table is ACTIVE, then ExportTableToPointInTime (as of the same moment, to the server's directory object store) and ImportTable of the export's files, each timed until COMPLETED",
            args.item_bytes
        ),
        startup_ms: Some(startup.as_secs_f64() * 1000.0),
        idle_rss,
        loaded_rss: procs::rss_bytes(proc.pid()),
        disk_bytes: Some(procs::disk_bytes(&dir)),
        runs: vec![
            RunResult {
                label: plain.label.to_string(),
                report: quiet,
            },
            RunResult {
                label: during.label.to_string(),
                report,
            },
        ],
    })
}

async fn dynalite(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let cli = procs::dynalite(&args.out.join("dynalite"), &args.dynalite_version)?;
    let port = args.base_port + 2;
    let mut cmd = Command::new("node");
    cmd.arg(&cli).args(["--port", &port.to_string()]);
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let proc = Proc::spawn("dynalite", cmd, &args.out.join("dynalite.log"))?;
    let startup = procs::wait_ready(&url, false, t).await?;
    let idle_rss = procs::rss_bytes(proc.pid());
    let specs: Vec<&Spec> = YCSB.iter().collect();
    let runs = workloads(
        args,
        "dynalite",
        &url,
        Protocol::Dynamodb,
        &specs,
        Some(proc.pid()),
    )
    .await?;
    Ok(SystemResult {
        name: "dynalite".into(),
        description: format!(
            "dynalite {} on Node {}, in memory, nothing fsynced",
            args.dynalite_version,
            node_version()
        ),
        startup_ms: Some(startup.as_secs_f64() * 1000.0),
        idle_rss,
        loaded_rss: procs::rss_bytes(proc.pid()),
        disk_bytes: None,
        runs,
    })
}

async fn cluster(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let dir = std::path::absolute(args.out.join("cluster"))?;
    let router_port = args.base_port + 3;
    let api_port = args.base_port + 27;
    let cluster = procs::Cluster::start_with(
        &args.binary,
        &dir,
        router_port,
        args.base_port + 4,
        args.partitions,
        "",
        Some(api_port),
    )?;
    let idle_rss = Some(cluster.rss_bytes());
    let url = format!("http://127.0.0.1:{router_port}");
    let specs: Vec<&Spec> = YCSB.iter().chain([&CONSISTENT_C, &HALF_PEAK_PUT]).collect();
    let mut runs = workloads(args, "cluster", &url, Protocol::Dynamodb, &specs, None).await?;
    // The same cluster through node 1's own API (`node --api-listen`).
    let node_url = format!("http://127.0.0.1:{api_port}");
    let node_specs = [&NODE_API_C, &NODE_API_PUT];
    runs.extend(
        workloads(
            args,
            "cluster",
            &node_url,
            Protocol::Dynamodb,
            &node_specs,
            None,
        )
        .await?,
    );
    Ok(SystemResult {
        name: "cluster".into(),
        description: format!(
            "three `dynaraft node` processes (az-a, az-b, az-c) and a `dynaraft router`, {} partitions per table, every write on a quorum and fsynced; rows marked \"{}\" send the requests to node 1's own API (`node --api-listen`) instead of the router",
            args.partitions, NODE_API
        ),
        startup_ms: None,
        idle_rss,
        loaded_rss: Some(cluster.rss_bytes()),
        disk_bytes: Some(procs::disk_bytes(&dir)),
        runs,
    })
}

async fn etcd(args: &SuiteArgs) -> anyhow::Result<SystemResult> {
    let dir = args.out.join("etcd");
    let port = args.base_port + 10;
    let t = Instant::now();
    let members = procs::etcd(&args.etcd, &dir, port)?;
    let url = format!("http://127.0.0.1:{port}");
    let startup = procs::wait_ready(&url, true, t).await?;
    let rss = |m: &[Proc]| {
        m.iter()
            .filter_map(|p| procs::rss_bytes(p.pid()))
            .sum::<u64>()
    };
    let idle_rss = Some(rss(&members));
    let specs = [&YCSB[0], &YCSB[1]];
    let runs = workloads(args, "etcd", &url, Protocol::Etcd, &specs, None).await?;
    Ok(SystemResult {
        name: "etcd".into(),
        description: format!(
            "etcd {} from Debian, three members, v3 JSON gateway on one member, linearizable reads",
            etcd_version(&args.etcd)
        ),
        startup_ms: Some(startup.as_secs_f64() * 1000.0),
        idle_rss,
        loaded_rss: Some(rss(&members)),
        disk_bytes: Some(procs::disk_bytes(&dir)),
        runs,
    })
}

fn node_version() -> String {
    command_line(Command::new("node").arg("--version"))
}

fn etcd_version(binary: &Path) -> String {
    let out = command_line(Command::new(binary).arg("--version"));
    out.split_whitespace().nth(2).unwrap_or("?").to_string()
}

/// The first line a command prints, or "?".
pub fn command_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
