//! The growth benchmark: one embedded server, its table loaded in steps
//! of 1, 10 and 50 GB (times `--growth-scale`, for small disks), and at
//! each step GetItem and PutItem throughput and p99 (uniform keys, so the
//! whole table is touched, not a cached hot set), disk bytes per live byte
//! and resident memory.

use crate::procs;
use crate::{SuiteArgs, bench_args, spec};
use dynaraft_bench::keys::Distribution;
use dynaraft_bench::ops::Protocol;
use dynaraft_bench::stats::Summary;
use dynaraft_bench::workload::Workload;
use std::time::Instant;

/// Table sizes the benchmark grows through, in GiB (before scaling).
pub const GROWTH_STEPS_GIB: [f64; 3] = [1.0, 10.0, 50.0];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

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
    pub disk_bytes: u64,
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
        b.workload = Workload::C;
        let get = dynaraft_bench::run(&b).await?.summary;
        let step = Step {
            records: loaded,
            live_bytes: loaded * args.item_bytes as u64,
            load_per_second,
            get,
            put,
            disk_bytes: procs::disk_bytes(&dir),
            rss_bytes: procs::rss_bytes(proc.pid()),
        };
        eprintln!(
            "[suite] growth    {:>9} records  load {:>7.0}/s  GetItem {:>7.0}/s p99 {} ms  PutItem {:>7.0}/s p99 {} ms  disk/live {:.2}",
            step.records,
            step.load_per_second,
            step.get.throughput,
            dynaraft_bench::stats::ms(step.get.all.p99_us),
            step.put.throughput,
            dynaraft_bench::stats::ms(step.put.all.p99_us),
            step.disk_per_live_byte()
        );
        steps.push(step);
    }
    Ok(Growth {
        scale: args.growth_scale,
        steps_gib: sizes.clone(),
        steps,
    })
}
