//! One scenario run: start the cluster, open the accounts, run the clients
//! while the schedule injects and heals faults, heal everything, read every
//! key once more, stop the cluster, check the history and time the write
//! unavailability after each fault.

use crate::checker::{self, Report};
use crate::cluster::{Cluster, ClusterConfig};
use crate::faults::{self, Episode, Kind, Timing};
use crate::history::{self, Call, Op, Status};
use crate::splits;
use crate::workload::{self, Recorder};
use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// How long the cluster may take to serve its first table, in milliseconds.
pub const STARTUP_TIMEOUT_MS: u64 = 60_000;
/// How long, after the last fault is healed, every key has to become
/// readable again, in milliseconds.
pub const RECOVERY_TIMEOUT_MS: u64 = 60_000;
/// Pause between retries while the table is created and while the final
/// reads wait for the cluster, in milliseconds.
pub const SETUP_RETRY_MS: u64 = 200;
/// After a fault ends, how long its effect on availability is still
/// counted, in milliseconds.
pub const AFTERMATH_MS: u64 = 5_000;
/// Pause between two rounds of asking every node whether it has caught up
/// after a heal, in milliseconds.
pub const CATCH_UP_POLL_MS: u64 = 100;
/// How long after the run's last heal every node has to have caught up
/// (`/ready`) under the workload before the run fails, in milliseconds.
pub const CATCH_UP_BOUND_MS: u64 = 30_000;

pub struct RunConfig {
    pub name: String,
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub seed: u64,
    pub kinds: Vec<Kind>,
    pub timing: Timing,
    pub clients: usize,
    pub partitions: usize,
    pub base_port: u16,
    pub router_flags: Vec<String>,
    /// Split a random partition of the test table this often while the
    /// faults run, in milliseconds (0: never).
    pub split_every_ms: u64,
    /// The fsync shim, needed by `Kind::FsyncFailure`.
    pub fail_fsync: Option<PathBuf>,
}

#[derive(Serialize)]
pub struct EpisodeResult {
    #[serde(flatten)]
    pub episode: Episode,
    pub description: String,
    /// Longest stretch without a successful probe write on some probe key
    /// while the fault lasted, less the probe interval, in milliseconds.
    pub write_gap_ms: u64,
    /// The same from the fault's end to `AFTERMATH_MS` after it (a healed
    /// node rejoining can disturb the others).
    pub heal_gap_ms: u64,
    /// From the fault's end until every node said it had caught up (its
    /// `/ready`: every group it holds knows its leader and has applied
    /// nearly all it committed), under the workload; `None`: not before the
    /// next fault began.
    pub caught_up_ms: Option<u64>,
}

#[derive(Serialize)]
pub struct RunResult {
    pub name: String,
    pub seed: u64,
    pub run_ms: u64,
    pub warmup_ms: u64,
    pub episodes: Vec<EpisodeResult>,
    /// The same measure over fault-free time before the first fault.
    pub baseline_gap_ms: u64,
    pub report: Report,
}

/// What `result.json` keeps that a new summary needs besides the history.
#[derive(serde::Deserialize)]
pub struct Saved {
    pub name: String,
    pub seed: u64,
    pub run_ms: u64,
    #[serde(default)]
    pub warmup_ms: u64,
    pub episodes: Vec<Episode>,
    /// Per episode, [`EpisodeResult::caught_up_ms`] (absent in results
    /// written before it was measured).
    #[serde(default)]
    pub caught_up_ms: Vec<Option<u64>>,
}

/// Checks a run's history and times its faults.
pub fn summarize(saved: Saved, ops: &[Op]) -> RunResult {
    let end = |e: &Episode| (e.start_ms + e.duration_ms).min(saved.run_ms);
    let episodes = saved
        .episodes
        .iter()
        .enumerate()
        .map(|(i, e)| EpisodeResult {
            episode: *e,
            description: e.fault.to_string(),
            write_gap_ms: write_gap_ms(ops, e.start_ms, end(e)),
            heal_gap_ms: write_gap_ms(ops, end(e), (end(e) + AFTERMATH_MS).min(saved.run_ms)),
            caught_up_ms: saved.caught_up_ms.get(i).copied().flatten(),
        })
        .collect();
    let first = saved.episodes.first().map_or(saved.run_ms, |e| e.start_ms);
    RunResult {
        baseline_gap_ms: write_gap_ms(ops, saved.warmup_ms / 2, first),
        report: checker::check(ops),
        episodes,
        name: saved.name,
        seed: saved.seed,
        run_ms: saved.run_ms,
        warmup_ms: saved.warmup_ms,
    }
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<RunResult> {
    let _ = std::fs::remove_dir_all(&cfg.dir);
    std::fs::create_dir_all(&cfg.dir)?;
    let schedule = faults::schedule(cfg.seed, &cfg.kinds, cfg.timing);
    let mut plan = String::new();
    for e in &schedule {
        plan.push_str(&format!(
            "{:>8} ms  {:>6} ms  {}\n",
            e.start_ms, e.duration_ms, e.fault
        ));
    }
    std::fs::write(cfg.dir.join("schedule.txt"), &plan)?;
    println!("[{}] seed {} — fault schedule:\n{plan}", cfg.name, cfg.seed);

    let mut cluster = Cluster::start(ClusterConfig {
        binary: cfg.binary.clone(),
        dir: cfg.dir.join("cluster"),
        base_port: cfg.base_port,
        partitions: cfg.partitions,
        seed: cfg.seed,
        router_flags: cfg.router_flags.clone(),
        node_flags: Vec::new(),
        faketime: if cfg.kinds.contains(&Kind::ClockSkew) {
            Some(crate::cluster::find_faketime().ok_or_else(|| {
                anyhow::anyhow!("clock skew needs Debian's libfaketime: apt-get install libfaketime (make chaos does)")
            })?)
        } else {
            None
        },
        fail_fsync: if cfg.kinds.contains(&Kind::FsyncFailure) {
            Some(cfg.fail_fsync.clone().ok_or_else(|| {
                anyhow::anyhow!("failing fsyncs needs the shim: --fail-fsync-lib (make chaos builds it)")
            })?)
        } else {
            None
        },
        spare: cfg
            .kinds
            .contains(&Kind::Replace)
            .then_some(crate::cluster::SpareConfig {
                replace_after_ms: crate::faults::REPLACE_AFTER_MS,
            }),
    })
    .await?;
    let result = drive(&cfg, &mut cluster, &schedule).await;
    cluster.stop().await;
    let (ops, caught_up_ms) = result?;
    history::write_history(&cfg.dir.join("history.jsonl"), &ops)?;
    let saved = Saved {
        name: cfg.name.clone(),
        seed: cfg.seed,
        run_ms: cfg.timing.run_ms,
        warmup_ms: cfg.timing.warmup_ms,
        episodes: schedule,
        caught_up_ms,
    };
    let result = summarize(saved, &ops);
    std::fs::write(
        cfg.dir.join("result.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    Ok(result)
}

async fn drive(
    cfg: &RunConfig,
    cluster: &mut Cluster,
    schedule: &[Episode],
) -> anyhow::Result<(Vec<Op>, Vec<Option<u64>>)> {
    let client = workload::client(cluster.router_addr);
    create_table(&client, workload::TABLE, ("k", ScalarAttributeType::S))
        .await
        .context("creating the table")?;
    let start = Instant::now();
    let (rec, mut rx) = Recorder::new(start);
    let collector = tokio::spawn(async move {
        let mut ops = Vec::new();
        while let Some(op) = rx.recv().await {
            ops.push(op);
        }
        ops
    });
    for i in 0..workload::ACCOUNTS {
        let call = Call::Put {
            key: workload::account(i),
            val: rec.unique(),
            cnt: workload::OPENING_BALANCE,
        };
        let op = rec.run(&client, 0, call).await;
        anyhow::ensure!(
            op.status == Status::Ok,
            "opening account {i}: {:?}",
            op.error
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for c in 0..cfg.clients {
        let who = c as u32 + 1;
        let seed = cfg.seed.wrapping_mul(31).wrapping_add(who as u64);
        let cl = workload::client(cluster.router_addr);
        tasks.push(tokio::spawn(workload::run_client(
            cl,
            rec.clone(),
            who,
            seed,
            stop_rx.clone(),
        )));
    }
    for p in 0..workload::PROBES {
        let who = 1000 + p as u32;
        let cl = workload::client(cluster.router_addr);
        tasks.push(tokio::spawn(workload::run_probe(
            cl,
            rec.clone(),
            who,
            workload::probe(p),
            stop_rx.clone(),
        )));
    }
    let splitter = (cfg.split_every_ms > 0).then(|| {
        tokio::spawn(splits::run(
            cluster.binary().to_path_buf(),
            cluster.control.clone(),
            Duration::from_millis(cfg.split_every_ms),
            cfg.seed,
            cfg.name.clone(),
            stop_rx.clone(),
        ))
    });
    let mut caught_up = Vec::new();
    for e in schedule {
        tokio::time::sleep_until(start + Duration::from_millis(e.start_ms)).await;
        println!(
            "[{}] {:>7.1}s inject: {}",
            cfg.name,
            start.elapsed().as_secs_f64(),
            e.fault
        );
        faults::inject(cluster, e.fault).await?;
        tokio::time::sleep_until(start + Duration::from_millis(e.start_ms + e.duration_ms)).await;
        println!(
            "[{}] {:>7.1}s heal",
            cfg.name,
            start.elapsed().as_secs_f64()
        );
        cluster.heal()?;
        let next = schedule
            .get(caught_up.len() + 1)
            .map_or(cfg.timing.run_ms, |n| n.start_ms);
        let took = catch_up(cluster, start + Duration::from_millis(next)).await;
        println!(
            "[{}] {:>7.1}s every node caught up: {}",
            cfg.name,
            start.elapsed().as_secs_f64(),
            took.map_or("not before the next fault".into(), |ms| format!(
                "{ms} ms after the heal"
            )),
        );
        caught_up.push(took);
    }
    tokio::time::sleep_until(start + Duration::from_millis(cfg.timing.run_ms)).await;
    cluster.heal()?;
    let bound = Duration::from_millis(CATCH_UP_BOUND_MS);
    let last = catch_up(cluster, Instant::now() + bound).await;
    anyhow::ensure!(
        last.is_some(),
        "a node had not caught up {CATCH_UP_BOUND_MS} ms after the last heal (see the nodes' /ready and logs in {})",
        cluster.dir().display()
    );
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(s) = splitter {
        let (begun, partitions) = s.await?;
        println!(
            "[{}] {begun} splits begun during the run; the table has {partitions} partitions",
            cfg.name
        );
    }
    final_reads(&client, &rec).await?;
    drop(rec);
    Ok((collector.await?, caught_up))
}

/// Milliseconds until every node of `cluster` says it has caught up
/// (`Cluster::node_ready`), asked every `CATCH_UP_POLL_MS`; `None` if
/// one has not by `deadline`.
async fn catch_up(cluster: &Cluster, deadline: Instant) -> Option<u64> {
    let began = Instant::now();
    loop {
        let mut all = true;
        for i in 0..cluster.nodes.len() {
            all &= cluster.node_ready(i).await;
        }
        if all {
            return Some(began.elapsed().as_millis() as u64);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(CATCH_UP_POLL_MS)).await;
    }
}

/// Creates on-demand table `table` with hash key `key` of `key_type`,
/// retrying while the cluster settles, and waits until it is ACTIVE.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    (key, key_type): (&str, ScalarAttributeType),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
    loop {
        let r = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(key_type.clone())
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .send()
            .await;
        let exists = matches!(&r, Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()));
        if r.is_ok() || exists {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "table not created: {r:?}");
        tokio::time::sleep(Duration::from_millis(SETUP_RETRY_MS)).await;
    }
    loop {
        let d = client.describe_table().table_name(table).send().await;
        if d.as_ref()
            .ok()
            .and_then(|d| d.table())
            .and_then(|t| t.table_status())
            == Some(&TableStatus::Active)
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "table not active: {d:?}");
        tokio::time::sleep(Duration::from_millis(SETUP_RETRY_MS)).await;
    }
}

/// Reads every key with ConsistentRead until each read succeeds (after
/// the faults are healed), then takes a TransactGetItems of the accounts.
async fn final_reads(client: &aws_sdk_dynamodb::Client, rec: &Recorder) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(RECOVERY_TIMEOUT_MS);
    for key in workload::all_keys() {
        loop {
            let op = rec.run(client, 0, Call::Read { key: key.clone() }).await;
            if op.status == Status::Ok {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{key} still unreadable: {:?}",
                op.error
            );
            tokio::time::sleep(Duration::from_millis(SETUP_RETRY_MS)).await;
        }
    }
    let keys = (0..workload::ACCOUNTS).map(workload::account).collect();
    loop {
        let op = rec
            .run(
                client,
                0,
                Call::Snapshot {
                    keys: Vec::clone(&keys),
                },
            )
            .await;
        if op.status == Status::Ok {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "accounts unreadable: {:?}",
            op.error
        );
        tokio::time::sleep(Duration::from_millis(SETUP_RETRY_MS)).await;
    }
}

/// The longest stretch in `[from_ms, to_ms]` during which some probe key
/// had no successful write, less the probe interval (the stretch a healthy
/// probe shows), in milliseconds.
pub fn write_gap_ms(ops: &[Op], from_ms: u64, to_ms: u64) -> u64 {
    let (from, to) = (from_ms * 1000, to_ms * 1000);
    let mut worst = 0;
    for p in 0..workload::PROBES {
        let key = workload::probe(p);
        let mut last = from;
        for op in ops {
            let Call::Put { key: k, .. } = &op.call else {
                continue;
            };
            if *k != key || op.status != Status::Ok || op.ret_us < from {
                continue;
            }
            let t = op.ret_us.min(to);
            worst = worst.max(t.saturating_sub(last));
            last = t;
            if op.ret_us >= to {
                break;
            }
        }
        worst = worst.max(to.saturating_sub(last));
    }
    (worst / 1000).saturating_sub(workload::PROBE_INTERVAL_MS)
}
