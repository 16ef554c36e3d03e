//! The growth benchmark: one embedded server, its table loaded in steps
//! of 1, 10 and 50 GB (times `--growth-scale`, for small disks), and at
//! each step GetItem and PutItem throughput and p99 (uniform keys, so the
//! whole table is touched, not a cached hot set), disk bytes per live byte
//! and resident memory. Disk is measured twice: right after the writes,
//! and once the server's idle compaction has run (the issue's "once
//! compaction has run"); GetItem is measured after it.

use crate::procs;
use crate::{SuiteArgs, bench_args, spec};
use dynaraft_bench::keys::Distribution;
use dynaraft_bench::ops::Protocol;
use dynaraft_bench::stats::Summary;
use dynaraft_bench::workload::Workload;
use std::time::{Duration, Instant};

/// Table sizes the benchmark grows through, in GiB (before scaling).
pub const GROWTH_STEPS_GIB: [f64; 3] = [1.0, 10.0, 50.0];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// The server's count of idle compactions finished
/// (`dynaraft_cluster::host::IDLE_COMPACTIONS_METRIC`).
const IDLE_COMPACTIONS_METRIC: &str = "dynaraft_idle_compactions_total";
/// Longest wait for the idle compaction after a step's writes, in seconds
/// (the server starts it 5 s after the last write).
const IDLE_COMPACTION_WAIT_S: u64 = 600;
/// Pause between looks at the server's count of idle compactions, in
/// milliseconds.
const IDLE_COMPACTION_POLL_MS: u64 = 250;
/// Pause after the idle compaction before the disk is measured, in
/// milliseconds: the store deletes the files of the versions it replaced on
/// a thread of its own once their last reader is gone.
const RETIRED_FILES_WAIT_MS: u64 = 1_000;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Growth {
    pub scale: f64,
    /// The sizes asked for, in GiB before `scale` (results written before
    /// the sizes could be chosen ran [`GROWTH_STEPS_GIB`]).
    #[serde(default = "default_steps")]
    pub steps_gib: Vec<f64>,
    pub steps: Vec<Step>,
}

fn default_steps() -> Vec<f64> {
    GROWTH_STEPS_GIB.to_vec()
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub records: u64,
    pub live_bytes: u64,
    /// Records per second while loading this step (BatchWriteItem).
    pub load_per_second: f64,
    pub get: Summary,
    pub put: Summary,
    /// Bytes on disk once the idle compaction after the writes has run
    /// (right after the writes when it did not come: see
    /// `idle_compaction_s`).
    pub disk_bytes: u64,
    /// Bytes on disk right after the step's writes.
    #[serde(default)]
    pub disk_bytes_after_writes: Option<u64>,
    /// Seconds from the end of the writes until the server's idle
    /// compaction had finished; `None`: it did not within
    /// [`IDLE_COMPACTION_WAIT_S`].
    #[serde(default)]
    pub idle_compaction_s: Option<f64>,
    pub rss_bytes: Option<u64>,
}

impl Step {
    /// Bytes on disk per byte of live items.
    pub fn disk_per_live_byte(&self) -> f64 {
        self.disk_bytes as f64 / self.live_bytes.max(1) as f64
    }
}

pub async fn growth(args: &SuiteArgs) -> anyhow::Result<Growth> {
    let sizes = &args.growth_steps_gib;
    if sizes.is_empty()
        || sizes.iter().any(|g| !g.is_finite() || *g <= 0.0)
        || sizes.windows(2).any(|w| w[0] >= w[1])
    {
        anyhow::bail!("--growth-steps-gib must be ascending positive sizes, got {sizes:?}");
    }
    let (proc, url, dir, _) = crate::start_embedded(args, "growth", args.base_port + 15).await?;
    let mut steps = Vec::new();
    let mut loaded = 0u64;
    for &gib in sizes {
        let target = ((gib * args.growth_scale * GIB) / args.item_bytes as f64) as u64;
        let mut b = bench_args(
            args,
            &url,
            Protocol::Dynamodb,
            &spec("growth", Workload::Put),
            None,
        );
        b.table = Some("growth".into());
        b.distribution = Some(Distribution::Uniform);
        b.duration_s = args.growth_seconds;
        let t = Instant::now();
        dynaraft_bench::runner::load_range(&b, loaded..target).await?;
        let load_per_second = (target - loaded) as f64 / t.elapsed().as_secs_f64().max(1e-9);
        loaded = target;
        b.records = loaded;
        b.load = dynaraft_bench::runner::LoadMode::Never;
        let put = dynaraft_bench::run(&b).await?.summary;
        let disk_bytes_after_writes = Some(procs::disk_bytes(&dir));
        let idle_compaction_s = idle_compaction(&url).await;
        let disk_bytes = procs::disk_bytes(&dir);
        b.workload = Workload::C;
        let get = dynaraft_bench::run(&b).await?.summary;
        let step = Step {
            records: loaded,
            live_bytes: loaded * args.item_bytes as u64,
            load_per_second,
            get,
            put,
            disk_bytes,
            disk_bytes_after_writes,
            idle_compaction_s,
            rss_bytes: procs::rss_bytes(proc.pid()),
        };
        eprintln!(
            "[suite] growth    {:>9} records  load {:>7.0}/s  GetItem {:>7.0}/s p99 {} ms  PutItem {:>7.0}/s p99 {} ms  disk/live {:.2} (after the writes {:.2})",
            step.records,
            step.load_per_second,
            step.get.throughput,
            dynaraft_bench::stats::ms(step.get.all.p99_us),
            step.put.throughput,
            dynaraft_bench::stats::ms(step.put.all.p99_us),
            step.disk_per_live_byte(),
            step.disk_bytes_after_writes.unwrap_or(0) as f64 / step.live_bytes.max(1) as f64
        );
        steps.push(step);
    }
    Ok(Growth {
        scale: args.growth_scale,
        steps_gib: sizes.clone(),
        steps,
    })
}

/// Waits, the writes just over, for the server at `url` to finish an idle
/// compaction (then for the files it freed to go); seconds it took, or
/// `None` if none finished within [`IDLE_COMPACTION_WAIT_S`].
async fn idle_compaction(url: &str) -> Option<f64> {
    let since = Instant::now();
    let before = procs::metric(url, IDLE_COMPACTIONS_METRIC)
        .await
        .unwrap_or(0.0);
    while since.elapsed().as_secs() < IDLE_COMPACTION_WAIT_S {
        tokio::time::sleep(Duration::from_millis(IDLE_COMPACTION_POLL_MS)).await;
        if procs::metric(url, IDLE_COMPACTIONS_METRIC)
            .await
            .is_some_and(|n| n > before)
        {
            let took = since.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(RETIRED_FILES_WAIT_MS)).await;
            return Some(took);
        }
    }
    eprintln!(
        "[suite] growth    no idle compaction within {IDLE_COMPACTION_WAIT_S} s: disk measured without"
    );
    None
}
