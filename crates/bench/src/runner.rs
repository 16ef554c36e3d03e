//! A benchmark run: create and load the table if needed, then drive the
//! workload from `concurrency` workers for the warm-up and the measured
//! window, and merge their histograms.
//!
//! Closed loop (the default): each worker sends its next request when the
//! last one is answered, so throughput is what the server sustains at that
//! concurrency. Fixed rate (`--rate`): requests are due on a global
//! schedule of `rate` per second, and latency runs from when a request was
//! due, not when a busy worker got round to sending it, so a stalled server
//! is charged for every request it delayed (no coordinated omission). The
//! schedule is released by a pacer thread every [`PACER_TICK_US`]: tokio's
//! timer has millisecond ticks, and workers sleeping on it left in bursts
//! of `rate / 1000` requests at once, a queue of the client's making.

use crate::client::{Conn, Endpoint};
use crate::keys::{self, Distribution, GROUP_ITEMS};
use crate::ops::{self, Ctx, Failure, Inserts, Outcome, Protocol};
use crate::stats::{Stats, Summary};
use crate::workload::{Layout, OpKind, Workload};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// Items per BatchWriteItem while loading (DynamoDB's maximum).
pub const LOAD_BATCH_ITEMS: u64 = 25;
/// Attempts at a load batch's unprocessed items before giving up.
const LOAD_ATTEMPTS: u32 = 10;
/// Pause between polls of a new table's status, in milliseconds.
const TABLE_POLL_MS: u64 = 100;
/// Polls before a table that never becomes ACTIVE is an error.
const TABLE_POLLS: u32 = 600;
/// Interval of the progress line, in milliseconds.
const PROGRESS_INTERVAL_MS: u64 = 1000;
/// How often the fixed-rate pacer releases the requests that have come
/// due, in microseconds.
pub const PACER_TICK_US: u64 = 100;
/// Tries at picking a record whose insert did not fail (workload D).
const PICK_ATTEMPTS: u32 = 8;

/// When to load the records before measuring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// Only when this run created the table.
    Auto,
    Always,
    Never,
}

/// `dynaraft bench`'s flags.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// The endpoint under test.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// What the endpoint speaks.
    #[arg(long, value_enum, default_value = "dynamodb")]
    pub protocol: Protocol,
    /// YCSB workload: a, b, c, d, e, f, or put (100% PutItem).
    #[arg(long, value_enum, default_value = "c")]
    pub workload: Workload,
    /// Key distribution (default: the workload's, zipfian or latest).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Table name (default: bench, or bench-range for workload E).
    #[arg(long)]
    pub table: Option<String>,
    /// Records loaded before the run.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Size of each item, in bytes (about: keys and attribute names count).
    #[arg(long, default_value_t = 1000)]
    pub item_bytes: usize,
    /// Concurrent requests (one connection each).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Unmeasured warm-up before it, in seconds.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Fixed-rate mode: requests per second on a schedule (open loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Strongly consistent reads (GetItem and Query; read-modify-write always reads consistently).
    #[arg(long)]
    pub consistent_reads: bool,
    /// Request timeout, in milliseconds (a timeout is an error).
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Seed for key choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// When to load the records.
    #[arg(long, value_enum, default_value = "auto")]
    pub load: LoadMode,
    /// Region for the request signature.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Create the table with a stream of this view type (NEW_IMAGE,
    /// OLD_IMAGE, NEW_AND_OLD_IMAGES, KEYS_ONLY) to measure its cost.
    #[arg(long)]
    pub stream_view_type: Option<String>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Global tables: make the table global with a replica in this region
    /// (a peer region of the endpoint's) and measure replication lag to it
    /// while the workload runs (see `replica`).
    #[arg(long, requires = "replica_endpoint")]
    pub replica_region: Option<String>,
    /// The DynamoDB endpoint of --replica-region, where the lag probes read.
    #[arg(long, requires = "replica_region")]
    pub replica_endpoint: Option<String>,
    /// Back the table up when the window opens, restore it after (see
    /// `backup`).
    #[arg(long)]
    pub backup: bool,
    /// With --backup: turn point-in-time recovery on before the window,
    /// and time a restore to the window's start after it.
    #[arg(long, requires = "backup")]
    pub pitr: bool,
    /// With --pitr: then export the table as of the window's start into
    /// this bucket of the server's object store (which must exist), and
    /// import the export into a new table, each timed.
    #[arg(long, requires = "pitr")]
    pub export_bucket: Option<String>,
    /// The server's process id, when it runs on this machine: also report
    /// the CPU time it spent per successful operation over the measured
    /// window (Linux `/proc`), which the throughput alone hides when the
    /// load generator shares its cores.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

impl BenchArgs {
    pub fn table_name(&self) -> String {
        match (&self.table, self.workload.layout()) {
            (Some(t), _) => t.clone(),
            (None, Layout::Hash) => "bench".into(),
            (None, Layout::Range) => "bench-range".into(),
        }
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            protocol: self.protocol,
            table: self.table_name(),
            layout: self.workload.layout(),
            payload_len: keys::payload_len(self.item_bytes),
            consistent_reads: self.consistent_reads,
            stream_view_type: self.stream_view_type.clone(),
            statements: ops::Statements::new(&self.table_name(), self.workload.layout()),
        }
    }
}

/// Why a run could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad arguments: {0}")]
    Args(String),
    #[error("setting up the table: {0}")]
    Setup(String),
}

/// A finished run: what was asked and what was measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub endpoint: String,
    pub protocol: Protocol,
    pub workload: Workload,
    pub distribution: Distribution,
    pub records: u64,
    pub item_bytes: usize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub consistent_reads: bool,
    pub seed: u64,
    pub summary: Summary,
    /// Replication lag to --replica-region, when measured.
    #[serde(default)]
    pub replication_lag: Option<crate::replica::LagSummary>,
    /// Backup and restore times, with --backup.
    #[serde(default)]
    pub backup: Option<crate::backup::BackupSummary>,
}

/// Load (if needed) and measure.
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let (endpoint, ctx, created) = prepare(args).await?;
    if args.load == LoadMode::Always || (args.load == LoadMode::Auto && created) {
        load(args, &endpoint, &ctx).await?;
    }
    let probe = match (&args.replica_region, &args.replica_endpoint) {
        (Some(region), Some(url)) => {
            crate::replica::ensure_replica(&endpoint, &ctx.table, region).await?;
            let replica =
                Endpoint::parse(url, region).map_err(|e| BenchError::Args(e.to_string()))?;
            Some(tokio::spawn(crate::replica::probe(
                endpoint.clone(),
                Arc::new(replica),
                ctx.table.clone(),
                Duration::from_secs(args.warmup_s),
                Duration::from_secs(args.duration_s),
            )))
        }
        _ => None,
    };
    if args.pitr {
        crate::backup::enable_pitr(&endpoint, &ctx.table).await?;
    }
    let backup = args.backup.then(|| {
        tokio::spawn(crate::backup::run(
            endpoint.clone(),
            ctx.table.clone(),
            Duration::from_secs(args.warmup_s),
            Duration::from_secs(args.duration_s),
            args.pitr,
            args.export_bucket.clone(),
        ))
    });
    let mut report = measure(args, endpoint, ctx).await;
    if let Some(p) = probe {
        report.replication_lag = p.await.ok();
    }
    if let Some(b) = backup {
        let summary = b
            .await
            .map_err(|e| BenchError::Setup(format!("the backup task failed: {e}")))?;
        report.backup = Some(summary?);
    }
    Ok(report)
}

/// Checks the arguments and creates the table if needed; `true` when this
/// call created it (etcd has no tables: always `true`).
async fn prepare(args: &BenchArgs) -> Result<(Arc<Endpoint>, Arc<Ctx>, bool), BenchError> {
    check_args(args)?;
    let endpoint = Arc::new(
        Endpoint::parse(&args.endpoint, &args.region)
            .map_err(|e| BenchError::Args(e.to_string()))?,
    );
    let ctx = Arc::new(args.ctx());
    let created = match args.protocol {
        Protocol::Dynamodb | Protocol::Partiql => create_table(&endpoint, &ctx).await?,
        Protocol::Etcd => true,
    };
    Ok((endpoint, ctx, created))
}

fn check_args(args: &BenchArgs) -> Result<(), BenchError> {
    if args.records == 0 || args.concurrency == 0 {
        return Err(BenchError::Args(
            "--records and --concurrency must be positive".into(),
        ));
    }
    if args.workload.layout() == Layout::Range && args.records < GROUP_ITEMS {
        return Err(BenchError::Args(format!(
            "workload E needs --records of at least {GROUP_ITEMS}"
        )));
    }
    if args.protocol == Protocol::Etcd
        && !matches!(
            args.workload,
            Workload::A | Workload::B | Workload::C | Workload::Put
        )
    {
        return Err(BenchError::Args(
            "against etcd only workloads a, b, c and put".into(),
        ));
    }
    if args.replica_region.is_some()
        && (args.protocol == Protocol::Etcd || args.workload.layout() != Layout::Hash)
    {
        return Err(BenchError::Args(
            "--replica-region needs a DynamoDB endpoint and a workload on a hash-key table".into(),
        ));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(BenchError::Args("--rate must be a positive number".into()));
    }
    Ok(())
}

/// CreateTable (on-demand) and wait for ACTIVE; false if it existed.
async fn create_table(endpoint: &Arc<Endpoint>, ctx: &Ctx) -> Result<bool, BenchError> {
    let mut conn = Conn::new(endpoint.clone());
    let (schema, defs) = match ctx.layout {
        Layout::Hash => (
            json!([{"AttributeName": "pk", "KeyType": "HASH"}]),
            json!([{"AttributeName": "pk", "AttributeType": "S"}]),
        ),
        Layout::Range => (
            json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]),
            json!([{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}]),
        ),
    };
    let mut body = json!({
        "TableName": ctx.table, "KeySchema": schema, "AttributeDefinitions": defs,
        "BillingMode": "PAY_PER_REQUEST",
    });
    if let Some(view) = &ctx.stream_view_type {
        body["StreamSpecification"] = json!({"StreamEnabled": true, "StreamViewType": view});
    }
    let created = match ops::call(&mut conn, "CreateTable", &body).await {
        Ok(_) => true,
        Err(f) if f.class.ends_with("ResourceInUseException") => false,
        Err(f) => {
            return Err(BenchError::Setup(format!(
                "CreateTable: {} {}",
                f.class, f.detail
            )));
        }
    };
    let describe = json!({"TableName": ctx.table});
    for _ in 0..TABLE_POLLS {
        match ops::call(&mut conn, "DescribeTable", &describe).await {
            Ok(v) if v.pointer("/Table/TableStatus").and_then(Value::as_str) == Some("ACTIVE") => {
                return Ok(created);
            }
            Ok(_) => {}
            Err(f) => {
                return Err(BenchError::Setup(format!(
                    "DescribeTable: {} {}",
                    f.class, f.detail
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(TABLE_POLL_MS)).await;
    }
    Err(BenchError::Setup(format!(
        "table {} never became ACTIVE",
        ctx.table
    )))
}

/// Write records `0..records` at version 0, `concurrency` batches at a time.
async fn load(
    args: &BenchArgs,
    endpoint: &Arc<Endpoint>,
    ctx: &Arc<Ctx>,
) -> Result<(), BenchError> {
    let started = Instant::now();
    load_records(endpoint, ctx, args.concurrency, 0..args.records).await?;
    if !args.quiet {
        eprintln!(
            "[bench] loaded {} records of {} bytes into {} in {:.1} s",
            args.records,
            args.item_bytes,
            ctx.table,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Creates the table if needed and writes records `range` at version 0
/// (the growth benchmark loads a table in steps this way).
pub async fn load_range(args: &BenchArgs, range: std::ops::Range<u64>) -> Result<(), BenchError> {
    let (endpoint, ctx, _) = prepare(args).await?;
    load_records(&endpoint, &ctx, args.concurrency, range).await
}

async fn load_records(
    endpoint: &Arc<Endpoint>,
    ctx: &Arc<Ctx>,
    concurrency: usize,
    range: std::ops::Range<u64>,
) -> Result<(), BenchError> {
    let next = Arc::new(AtomicU64::new(range.start));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (endpoint, ctx, next, end) = (endpoint.clone(), ctx.clone(), next.clone(), range.end);
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(endpoint);
            loop {
                let from = next.fetch_add(LOAD_BATCH_ITEMS, Ordering::Relaxed);
                if from >= end {
                    return Ok(());
                }
                let to = (from + LOAD_BATCH_ITEMS).min(end);
                load_batch(&mut conn, &ctx, from..to).await?;
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| BenchError::Setup(e.to_string()))??;
    }
    Ok(())
}

/// Loads are idempotent (every record is written at version 0), so a
/// transport error (a keep-alive connection the server closed, a reset) is
/// retried on a fresh connection; measured runs never retry.
async fn load_batch(
    conn: &mut Conn,
    ctx: &Ctx,
    records: std::ops::Range<u64>,
) -> Result<(), BenchError> {
    if ctx.protocol == Protocol::Etcd {
        for r in records {
            let mut attempt = 0;
            loop {
                match ctx.write(conn, r, 0, None).await {
                    Outcome::Failed(f)
                        if f.class == ops::TRANSPORT_ERROR && attempt + 1 < LOAD_ATTEMPTS =>
                    {
                        backoff(attempt).await;
                        attempt += 1;
                    }
                    Outcome::Failed(f) => {
                        return Err(BenchError::Setup(format!("load: {} {}", f.class, f.detail)));
                    }
                    _ => break,
                }
            }
        }
        return Ok(());
    }
    let puts: Vec<Value> = records
        .map(|r| json!({"PutRequest": {"Item": ctx.item(r, 0)}}))
        .collect();
    let mut pending = json!({ ctx.table.clone(): puts });
    for attempt in 0..LOAD_ATTEMPTS {
        match ops::call(conn, "BatchWriteItem", &json!({"RequestItems": pending})).await {
            Ok(v) => match v.get("UnprocessedItems") {
                Some(u) if u.as_object().is_some_and(|m| !m.is_empty()) => pending = u.clone(),
                _ => return Ok(()),
            },
            Err(f) if f.class == ops::TRANSPORT_ERROR => {}
            Err(f) => {
                return Err(BenchError::Setup(format!(
                    "BatchWriteItem: {} {}",
                    f.class, f.detail
                )));
            }
        }
        backoff(attempt).await;
    }
    Err(BenchError::Setup(format!(
        "BatchWriteItem did not complete in {LOAD_ATTEMPTS} attempts"
    )))
}

/// First pause before a load retry, in milliseconds; it doubles per
/// attempt up to 64 times this.
const LOAD_BACKOFF_MS: u64 = 10;

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(LOAD_BACKOFF_MS << attempt.min(6))).await;
}

/// What the workers share.
struct Shared {
    args: BenchArgs,
    ctx: Arc<Ctx>,
    endpoint: Arc<Endpoint>,
    distribution: Distribution,
    inserts: Inserts,
    /// Records in complete groups (workload E queries only those).
    full_group_records: u64,
    started: Instant,
    measure_from: Instant,
    end: Instant,
    next_slot: AtomicU64,
    /// Fixed rate: a permit for each request that has come due, released by
    /// [`pace`].
    due: Semaphore,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Slowest answer since the last progress line, in microseconds.
    slowest_us: AtomicU64,
}

/// Drive the workload and merge the workers' measurements.
async fn measure(args: &BenchArgs, endpoint: Arc<Endpoint>, ctx: Arc<Ctx>) -> Report {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let distribution = args
        .distribution
        .unwrap_or(args.workload.default_distribution());
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup_s);
    let shared = Arc::new(Shared {
        args: args.clone(),
        ctx,
        endpoint,
        distribution,
        inserts: Inserts::new(args.records),
        full_group_records: args.records / GROUP_ITEMS * GROUP_ITEMS,
        started,
        measure_from,
        end: measure_from + Duration::from_secs(args.duration_s),
        next_slot: AtomicU64::new(0),
        due: Semaphore::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        slowest_us: AtomicU64::new(0),
    });
    let server_cpu = args.server_pid.map(|pid| {
        let (from, end) = (shared.measure_from, shared.end);
        tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let before = process_cpu_time(pid)?;
            tokio::time::sleep_until(end.into()).await;
            process_cpu_time(pid)?.checked_sub(before)
        })
    });
    let done = Arc::new(AtomicBool::new(false));
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), done.clone())));
    let pacer = args.rate.map(|rate| {
        let shared = shared.clone();
        std::thread::spawn(move || pace(&shared, rate))
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| tokio::spawn(worker(shared.clone(), seed.wrapping_add(w as u64))))
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        if let Ok(s) = w.await {
            stats.merge(&s);
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(p) = pacer {
        let _ = p.join();
    }
    if let Some(p) = progress {
        let _ = p.await;
    }
    let mut summary = stats.summarize(args.duration_s as f64);
    if let Some(cpu) = server_cpu {
        summary.server_cpu_us_per_op = cpu
            .await
            .ok()
            .flatten()
            .filter(|_| summary.ok > 0)
            .map(|d| d.as_secs_f64() * 1e6 / summary.ok as f64);
    }
    Report {
        endpoint: args.endpoint.clone(),
        protocol: args.protocol,
        workload: args.workload,
        distribution,
        records: args.records,
        item_bytes: args.item_bytes,
        concurrency: args.concurrency,
        rate: args.rate,
        consistent_reads: args.consistent_reads,
        seed,
        summary,
        replication_lag: None,
        backup: None,
    }
}

/// CPU time (user and system, every thread's, exited ones included)
/// process `pid` has used, from `/proc/PID/stat`; `None` without `/proc`
/// or such a process.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses:
    // state is field 3, utime 14 and stime 15 (proc(5)).
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the C library.
    let ticks_per_s = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|t| *t > 0)?;
    let ticks = utime.checked_add(stime)?;
    Some(
        Duration::from_secs(ticks / ticks_per_s)
            + Duration::from_nanos((ticks % ticks_per_s) * 1_000_000_000 / ticks_per_s),
    )
}

async fn worker(shared: Arc<Shared>, seed: u64) -> Stats {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut conn = Conn::new(shared.endpoint.clone());
    let mut stats = Stats::default();
    let op_timeout = Duration::from_millis(shared.args.timeout_ms);
    loop {
        let start = match shared.args.rate {
            None => Instant::now(),
            Some(rate) => {
                // A permit means the next slot is due (or overdue).
                match shared.due.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return stats, // never closed; no more slots
                }
                let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
                shared.started + Duration::from_secs_f64(slot as f64 / rate)
            }
        };
        if start >= shared.end {
            return stats;
        }
        let kind = shared.args.workload.kind_for(rng.random_range(0..100));
        let outcome = match timeout(op_timeout, execute(&shared, &mut conn, &mut rng, kind)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                conn.reset();
                Outcome::Failed(Failure::new(
                    "timeout",
                    format!("no answer in {} ms", shared.args.timeout_ms),
                ))
            }
        };
        let latency = start.elapsed();
        let counter = if matches!(outcome, Outcome::Failed(_)) {
            &shared.errors
        } else {
            &shared.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
        shared
            .slowest_us
            .fetch_max(latency.as_micros() as u64, Ordering::Relaxed);
        if start < shared.measure_from {
            continue;
        }
        match outcome {
            Outcome::Ok => stats.ok(kind, latency),
            Outcome::Conflict => stats.conflict(latency),
            Outcome::Failed(f) => stats.failed(f, latency),
        }
    }
}

async fn execute(shared: &Shared, conn: &mut Conn, rng: &mut SmallRng, kind: OpKind) -> Outcome {
    let ctx = &shared.ctx;
    let dist = shared.distribution;
    let result = match kind {
        OpKind::Read => {
            let record = pick_readable(shared, rng);
            ctx.read(conn, record, ctx.consistent_reads)
                .await
                .map(|_| ())
        }
        OpKind::Update => {
            let record = dist.pick(rng, shared.args.records);
            return ctx
                .write(conn, record, rng.random::<u32>().into(), None)
                .await;
        }
        OpKind::Insert => {
            let record = shared.inserts.begin();
            let outcome = ctx.write(conn, record, 0, None).await;
            shared
                .inserts
                .finish(record, matches!(outcome, Outcome::Ok));
            return outcome;
        }
        OpKind::Scan => {
            let start = dist.pick(rng, shared.full_group_records);
            ctx.scan(conn, start, rng.random_range(1..=GROUP_ITEMS))
                .await
        }
        OpKind::ReadModifyWrite => {
            let record = dist.pick(rng, shared.args.records);
            match ctx.read(conn, record, true).await {
                Ok(ver) => {
                    return ctx
                        .write(conn, record, ver.wrapping_add(1), Some(ver))
                        .await;
                }
                Err(f) => Err(f),
            }
        }
    };
    match result {
        Ok(()) => Outcome::Ok,
        Err(f) => Outcome::Failed(f),
    }
}

/// Releases the fixed-rate schedule: every [`PACER_TICK_US`], a permit for
/// each request that has come due since the last tick. Once the run is over
/// it releases one more per worker: each then takes a slot past the end
/// and stops. Runs on its own thread, whose sleeps are not bound to tokio's
/// millisecond timer.
fn pace(shared: &Shared, rate: f64) {
    let mut released: u64 = 0;
    loop {
        let now = Instant::now();
        // Slot k is due at k / rate: slots 0..=elapsed * rate are due now.
        let due = (now.saturating_duration_since(shared.started).as_secs_f64() * rate) as u64 + 1;
        if due > released {
            shared.due.add_permits((due - released) as usize);
            released = due;
        }
        if now >= shared.end {
            shared.due.add_permits(shared.args.concurrency);
            return;
        }
        std::thread::sleep(Duration::from_micros(PACER_TICK_US));
    }
}

/// A record a read may ask for: loaded, or inserted and acknowledged.
fn pick_readable(shared: &Shared, rng: &mut SmallRng) -> u64 {
    let n = shared.inserts.readable();
    for _ in 0..PICK_ATTEMPTS {
        let record = shared.distribution.pick(rng, n);
        if shared.inserts.certain(record) {
            return record;
        }
    }
    rng.random_range(0..shared.args.records)
}

/// A line a second on stderr: throughput, errors and the slowest answer of
/// the last second.
async fn progress(shared: Arc<Shared>, done: Arc<AtomicBool>) {
    let tty = std::io::stderr().is_terminal();
    let (mut last_ok, mut last_err) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
    tick.tick().await;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let (ok, err) = (
            shared.ok.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
        );
        let slowest_ms = shared.slowest_us.swap(0, Ordering::Relaxed) as f64 / 1000.0;
        let t = shared.started.elapsed().as_secs_f64();
        let phase = if Instant::now() < shared.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        let line = format!(
            "[bench] {} {:>5.1}s {:>8} ops/s {:>6} errors/s slowest {:>7.2} ms (total {} ok, {} errors)",
            phase,
            t,
            ok - last_ok,
            err - last_err,
            slowest_ms,
            ok,
            err
        );
        let mut e = std::io::stderr().lock();
        let _ = if tty {
            write!(e, "\r{line}")
        } else {
            writeln!(e, "{line}")
        };
        (last_ok, last_err) = (ok, err);
    }
    if tty {
        eprintln!();
    }
}
