//! The two-region scenario (global tables, issue 22): two three-zone
//! clusters as regions us-east-1 and eu-west-1, each the other's peer
//! region through a link the harness can cut. Clients in both regions put
//! and delete the same few keys at once while the schedule cuts and heals
//! the link between the regions and kills -9 (and restarts) a node of one
//! region or the other. At the end every fault is healed, and the check:
//!
//! - **identical**: both regions hold the same items, item for item, once
//!   replication has caught up (within [`CONVERGE_TIMEOUT_MS`]);
//! - **last writer wins**: each key ends with a value some client wrote
//!   (or absent after a delete), and no acknowledged write to the key
//!   began more than [`CLOCK_MARGIN_MS`] after the winning write's
//!   acknowledgement: such a write is later by every region's clock (all
//!   processes share this machine's), so it must have won;
//! - **nothing lost or resurrected** follows from it: an acknowledged
//!   write loses only to a later write, and a deleted key comes back only
//!   by a later put.
//!
//! Writes that failed or timed out may or may not have been applied; they
//! may be the winner but never have to be.

use crate::cluster::{Cluster, ClusterConfig};
use crate::workload;
use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, CreateReplicationGroupMemberAction, ReplicationGroupUpdate, ScalarAttributeType,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The regions, in the order of their clusters.
pub const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
/// Keys the clients of both regions write (few, so they conflict).
pub const KEYS: u64 = 16;
/// A write that began this long after another's acknowledgement is later
/// by the regions' clocks, in milliseconds (both are this machine's; a
/// version is taken between a write's start and its acknowledgement, and a
/// local write is raised at most 1 ms past the version before it).
pub const CLOCK_MARGIN_MS: u64 = 5;
/// How long both regions have to agree after every fault is healed, in
/// milliseconds.
pub const CONVERGE_TIMEOUT_MS: u64 = 120_000;
/// Shortest and longest fault, in milliseconds.
const FAULT_MIN_MS: u64 = 2_000;
const FAULT_MAX_MS: u64 = 6_000;
/// Pause between faults, in milliseconds.
const QUIET_MS: u64 = 2_000;
/// How often an open connection through a cut link looks at the cut, in
/// milliseconds.
const LINK_POLL_MS: u64 = 20;
/// Pause between two comparisons of the regions' contents, in milliseconds.
const CONVERGE_POLL_MS: u64 = 500;
/// Pause of a client after a write that failed, in milliseconds.
const FAILED_WRITE_PAUSE_MS: u64 = 50;
/// The table of the scenario.
const TABLE: &str = "chaos-global";

pub struct GlobalConfig {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub seed: u64,
    pub run_ms: u64,
    /// Clients per region.
    pub clients: usize,
    /// The first region's router port; its nodes use the three after it,
    /// the second region the four after those.
    pub base_port: u16,
}

/// One client write as it was seen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Write {
    pub region: usize,
    pub key: u64,
    /// `None`: a delete.
    pub value: Option<String>,
    /// Wall clock, Unix milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Acknowledged; otherwise it failed or timed out (applied or not).
    pub acked: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct GlobalResult {
    pub seed: u64,
    pub faults: Vec<String>,
    pub writes: usize,
    pub acked: usize,
    /// From the last heal until both regions held the same items.
    pub converged_ms: Option<u64>,
    pub violations: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A cuttable TCP forwarder: the link from one region to the other. While
/// cut, new connections are refused and open ones end.
pub struct Link {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
}

impl Link {
    pub async fn to(target: SocketAddr) -> anyhow::Result<Link> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let flag = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    if !flag.load(Ordering::SeqCst) {
                        return; // refused while cut
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        // A cut also ends connections already open.
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = async {
                                while flag.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(LINK_POLL_MS)).await;
                                }
                            } => {}
                        }
                    }
                });
            }
        });
        Ok(Link { addr, open })
    }

    pub fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

pub async fn run(cfg: GlobalConfig) -> anyhow::Result<GlobalResult> {
    let _ = std::fs::remove_dir_all(&cfg.dir);
    std::fs::create_dir_all(&cfg.dir)?;
    let routers = [cfg.base_port, cfg.base_port + 4].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    // links[i]: region i's way to the other region's router.
    let links = [Link::to(routers[1]).await?, Link::to(routers[0]).await?];
    let mut clusters = Vec::new();
    for i in 0..2 {
        let peer = format!("{}=http://{}", REGIONS[1 - i], links[i].addr);
        let flags = vec![
            "--region".to_string(),
            REGIONS[i].into(),
            "--peer-region".into(),
            peer,
        ];
        let cluster = Cluster::start(ClusterConfig {
            binary: cfg.binary.clone(),
            dir: cfg.dir.join(REGIONS[i]),
            base_port: routers[i].port(),
            partitions: 2,
            seed: cfg.seed + i as u64,
            router_flags: flags.clone(),
            node_flags: flags,
            faketime: None,
            fail_fsync: None,
            spare: None,
        })
        .await?;
        clusters.push(cluster);
    }
    let result = drive(&cfg, &mut clusters, &links, routers).await;
    for c in clusters {
        c.stop().await;
    }
    let result = result?;
    std::fs::write(
        cfg.dir.join("result.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    Ok(result)
}

async fn drive(
    cfg: &GlobalConfig,
    clusters: &mut [Cluster],
    links: &[Link; 2],
    routers: [SocketAddr; 2],
) -> anyhow::Result<GlobalResult> {
    let clients = routers.map(workload::client);
    setup(&clients).await.context("making the global table")?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (region, client) in clients.iter().enumerate() {
        for c in 0..cfg.clients {
            let (client, stop) = (client.clone(), stop.clone());
            let seed = cfg.seed ^ ((region as u64) << 16 | c as u64);
            tasks.push(tokio::spawn(write_loop(client, region, c, seed, stop)));
        }
    }
    // The faults: the link cut both ways, or a node of one region killed.
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut faults = Vec::new();
    let end = Instant::now() + Duration::from_millis(cfg.run_ms);
    while Instant::now() + Duration::from_millis(FAULT_MAX_MS + QUIET_MS) < end {
        tokio::time::sleep(Duration::from_millis(QUIET_MS)).await;
        let hold = Duration::from_millis(rng.u64(FAULT_MIN_MS..=FAULT_MAX_MS));
        match rng.u8(0..3) {
            0 => {
                faults.push(format!(
                    "link between the regions cut for {} ms",
                    hold.as_millis()
                ));
                links.iter().for_each(|l| l.set(false));
                tokio::time::sleep(hold).await;
                links.iter().for_each(|l| l.set(true));
            }
            kind => {
                let region = rng.usize(0..2);
                let node = rng.usize(0..3);
                faults.push(format!(
                    "kill -9 of {} node {}{} for {} ms",
                    REGIONS[region],
                    node + 1,
                    if kind == 2 { " with the link cut" } else { "" },
                    hold.as_millis()
                ));
                if kind == 2 {
                    links.iter().for_each(|l| l.set(false));
                }
                clusters[region].kill_node(node).await;
                tokio::time::sleep(hold).await;
                clusters[region].start_node(node)?;
                links.iter().for_each(|l| l.set(true));
            }
        }
    }
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::SeqCst);
    let mut writes = Vec::new();
    for t in tasks {
        writes.extend(t.await.unwrap_or_default());
    }
    for c in clusters.iter_mut() {
        c.heal()?;
    }
    links.iter().for_each(|l| l.set(true));
    let healed = Instant::now();
    let mut converged_ms = None;
    let mut last = (BTreeMap::new(), BTreeMap::new());
    while healed.elapsed() < Duration::from_millis(CONVERGE_TIMEOUT_MS) {
        if let (Ok(a), Ok(b)) = (contents(&clients[0]).await, contents(&clients[1]).await) {
            if a == b {
                converged_ms = Some(healed.elapsed().as_millis() as u64);
                last = (a, b);
                break;
            }
            last = (a, b);
        }
        tokio::time::sleep(Duration::from_millis(CONVERGE_POLL_MS)).await;
    }
    let mut violations = Vec::new();
    if converged_ms.is_none() {
        let differ = (0..KEYS).filter(|k| last.0.get(k) != last.1.get(k)).count();
        violations.push(format!(
            "the regions still differ on {differ} keys {} s after every fault healed",
            CONVERGE_TIMEOUT_MS / 1000
        ));
    }
    violations.extend(check(&writes, &last.0));
    let history = writes
        .iter()
        .filter_map(|w| serde_json::to_string(w).ok())
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(cfg.dir.join("writes.jsonl"), history)?;
    Ok(GlobalResult {
        seed: cfg.seed,
        faults,
        writes: writes.len(),
        acked: writes.iter().filter(|w| w.acked).count(),
        converged_ms,
        violations,
    })
}

/// Creates the table in the first region and makes it global, retrying
/// while the clusters settle.
async fn setup(clients: &[Client; 2]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_millis(crate::run::STARTUP_TIMEOUT_MS);
    let retry = || tokio::time::sleep(Duration::from_millis(crate::run::SETUP_RETRY_MS));
    crate::run::create_table(&clients[0], TABLE, ("pk", ScalarAttributeType::N)).await?;
    loop {
        let create = CreateReplicationGroupMemberAction::builder()
            .region_name(REGIONS[1])
            .build()?;
        let _ = clients[0]
            .update_table()
            .table_name(TABLE)
            .replica_updates(ReplicationGroupUpdate::builder().create(create).build())
            .send()
            .await;
        let d = clients[0].describe_table().table_name(TABLE).send().await;
        let active = d.ok().and_then(|d| d.table).is_some_and(|t| {
            t.replicas()
                .iter()
                .any(|r| r.replica_status().is_some_and(|s| s.as_str() == "ACTIVE"))
        });
        if active {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the replica never became ACTIVE");
        retry().await;
    }
}

/// Puts (mostly) and deletes random keys until `stop`.
async fn write_loop(
    client: Client,
    region: usize,
    c: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Vec<Write> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = rng.u64(0..KEYS);
        let value = (rng.u8(0..5) != 0).then(|| format!("{}-{c}-{n}", REGIONS[region]));
        n += 1;
        let start_ms = now_ms();
        let pk = AttributeValue::N(key.to_string());
        let acked = match &value {
            Some(v) => client
                .put_item()
                .table_name(TABLE)
                .item("pk", pk)
                .item("v", AttributeValue::S(v.clone()))
                .send()
                .await
                .is_ok(),
            None => client
                .delete_item()
                .table_name(TABLE)
                .key("pk", pk)
                .send()
                .await
                .is_ok(),
        };
        out.push(Write {
            region,
            key,
            value,
            start_ms,
            end_ms: now_ms(),
            acked,
        });
        if !acked {
            tokio::time::sleep(Duration::from_millis(FAILED_WRITE_PAUSE_MS)).await;
        }
    }
    out
}

/// Every item of the table, key -> value, read consistently.
async fn contents(client: &Client) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(TABLE)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in page.items() {
            if let (Some(AttributeValue::N(k)), Some(AttributeValue::S(v))) =
                (item.get("pk"), item.get("v"))
            {
                out.insert(k.parse()?, v.clone());
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(out);
        }
    }
}

/// The last-writer-wins check of the final contents against the writes.
pub fn check(writes: &[Write], last: &BTreeMap<u64, String>) -> Vec<String> {
    let mut violations = Vec::new();
    for key in 0..KEYS {
        let on_key: Vec<&Write> = writes.iter().filter(|w| w.key == key).collect();
        let fin = last.get(&key);
        // The writes that could have left this state (acknowledged or not).
        let winners: Vec<&&Write> = on_key.iter().filter(|w| w.value.as_ref() == fin).collect();
        let Some(latest_end) = winners.iter().map(|w| w.end_ms).max() else {
            if fin.is_some() || on_key.iter().any(|w| w.acked) {
                violations.push(format!("key {key} ends as {fin:?}, which no client wrote"));
            }
            continue;
        };
        if let Some(later) = on_key
            .iter()
            .filter(|w| w.acked && w.start_ms > latest_end + CLOCK_MARGIN_MS)
            .max_by_key(|w| w.start_ms)
        {
            violations.push(format!(
                "key {key} ends as {fin:?} (written by {} ms at the latest), but {:?} in {} began at {} ms and was acknowledged: a later write was lost{}",
                latest_end,
                later.value,
                REGIONS[later.region],
                later.start_ms,
                if fin.is_none() { "" } else { " (or a deleted item came back)" }
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(region: usize, value: Option<&str>, start_ms: u64, end_ms: u64, acked: bool) -> Write {
        Write {
            region,
            key: 1,
            value: value.map(str::to_string),
            start_ms,
            end_ms,
            acked,
        }
    }

    #[test]
    fn the_check_finds_a_lost_later_write_and_a_resurrection() {
        let writes = vec![
            w(0, Some("a"), 100, 110, true),
            w(1, Some("b"), 200, 210, true),
            w(0, None, 300, 310, true),
        ];
        let end = |v: Option<&str>| {
            let mut m = BTreeMap::new();
            if let Some(v) = v {
                m.insert(1, v.to_string());
            }
            m
        };
        assert!(check(&writes, &end(None)).is_empty(), "the delete was last");
        assert_eq!(
            check(&writes, &end(Some("b"))).len(),
            1,
            "a deleted item came back"
        );
        assert_eq!(check(&writes, &end(Some("a"))).len(), 1);
        assert_eq!(check(&writes, &end(Some("z"))).len(), 1, "never written");
        // Overlapping writes may end either way; an unacknowledged one may win.
        let overlap = vec![
            w(0, Some("a"), 100, 150, true),
            w(1, Some("b"), 120, 130, true),
        ];
        assert!(check(&overlap, &end(Some("a"))).is_empty());
        assert!(check(&overlap, &end(Some("b"))).is_empty());
        let lost = vec![
            w(0, Some("a"), 100, 110, true),
            w(1, Some("b"), 200, 210, false),
        ];
        assert!(check(&lost, &end(Some("a"))).is_empty());
        assert!(check(&lost, &end(Some("b"))).is_empty());
    }
}
