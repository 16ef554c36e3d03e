//! Real `dynaraft` processes on 127.0.0.1: three storage nodes (az-a, az-b,
//! az-c, all control-plane members) and a router, with tiny snapshot, WAL
//! segment and checkpoint settings so that log purges and WAL segment
//! deletions happen within seconds. Nodes are killed with SIGKILL: first
//! one zone during a write loop, then every node at once in the middle of
//! writes. After the restarts, every acknowledged write must be readable
//! with a strongly consistent read, which is what the WAL's recovery of
//! purged logs (purge records re-logged at checkpoints, segments deleted
//! below them) has to get right.

use aws_sdk_dynamodb::Client;
use dynaraft_tests::numbered::{assert_readable, put};
use dynaraft_tests::{client_for, create_table};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Proc {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(args: Vec<String>, log: PathBuf) -> Proc {
        let mut p = Proc {
            args,
            log,
            child: None,
        };
        p.restart();
        p
    }

    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dynaraft"))
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dynaraft");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster {
    dir: PathBuf,
    nodes: Vec<Proc>,
    router: Proc,
    client: Client,
    /// Each node also serves the DynamoDB API (`--api-listen`).
    node_clients: Vec<Client>,
}

impl Cluster {
    fn start(name: &str, engine: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("dynaraft-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let addrs: Vec<String> = ZONES
            .iter()
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let control = addrs
            .iter()
            .zip(ZONES)
            .enumerate()
            .map(|(i, (a, z))| format!("{}={a}@{z}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let api_ports: Vec<u16> = ZONES.iter().map(|_| free_port()).collect();
        let nodes = ZONES
            .iter()
            .enumerate()
            .map(|(i, az)| {
                let args = [
                    "node",
                    &format!("--id={}", i + 1),
                    &format!("--az={az}"),
                    &format!("--listen={}", addrs[i]),
                    &format!(
                        "--data-dir={}",
                        dir.join(format!("node-{}", i + 1)).display()
                    ),
                    &format!("--control={control}"),
                    "--heartbeat-ms=50",
                    "--election-timeout-ms=300",
                    "--snapshot-after-entries=20",
                    "--wal-segment-bytes=16384",
                    "--checkpoint-interval-ms=200",
                    &format!("--engine={engine}"),
                    &format!("--api-listen=127.0.0.1:{}", api_ports[i]),
                    "--partitions-per-table=2",
                    "--transition-delay-ms=0",
                    "--allow-unauthenticated",
                ];
                let args = args.iter().map(|s| s.to_string()).collect();
                Proc::start(args, dir.join(format!("node-{}.log", i + 1)))
            })
            .collect();
        let port = free_port();
        let args = [
            "router",
            &format!("--port={port}"),
            &format!("--control={control}"),
            "--partitions-per-table=2",
            "--transition-delay-ms=0",
            // The test signs with any key.
            "--allow-unauthenticated",
        ];
        let router = Proc::start(
            args.iter().map(|s| s.to_string()).collect(),
            dir.join("router.log"),
        );
        let client = client_for(format!("127.0.0.1:{port}").parse().expect("addr"));
        let node_clients = api_ports
            .iter()
            .map(|p| client_for(format!("127.0.0.1:{p}").parse().expect("addr")))
            .collect();
        Cluster {
            dir,
            nodes,
            router,
            client,
            node_clients,
        }
    }

    fn wal_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{}", i + 1)).join("wal")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.router.kill9();
        for n in &mut self.nodes {
            n.kill9();
        }
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` every 100 ms until it holds or `secs` pass.
async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn first_segment_gone(wal: &Path) -> bool {
    !wal.join("wal-000000000001.log").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_a_zone_and_of_every_node_loses_no_acknowledged_write() {
    kill_nine_of_a_zone_and_of_every_node("sled").await;
}

/// The same with the state machines on fjall (`--engine fjall`): its
/// journal is persisted only at checkpoints, and whatever a kill -9 takes
/// from it must come back from the Raft WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_on_fjall_loses_no_acknowledged_write() {
    kill_nine_of_a_zone_and_of_every_node("fjall").await;
}

async fn kill_nine_of_a_zone_and_of_every_node(engine: &str) {
    let mut c = Cluster::start(&format!("kill9-{engine}"), engine);
    let client = c.client.clone();
    eventually(30, "the router to serve", || async {
        client.list_tables().send().await.is_ok()
    })
    .await;
    create_table(&c.client, "orders", None).await;
    let mut acked = Vec::new();
    for i in 0..200 {
        assert!(put(&c.client, i).await, "healthy cluster rejected k{i}");
        acked.push(i);
    }

    // One zone, kill -9, while writing: writes resume on the other two.
    // Node 1 initialised every group, so it usually leads them all and its
    // loss forces elections.
    c.nodes[0].kill9();
    let mut last = Instant::now();
    let mut gap = Duration::ZERO;
    let mut resumed = 0;
    for i in 1000..1100 {
        if put(&c.client, i).await {
            acked.push(i);
            resumed += 1;
            gap = gap.max(last.elapsed());
            last = Instant::now();
        }
    }
    eprintln!("az-a killed: {resumed} of 100 writes acknowledged, longest gap {gap:?}");
    assert!(
        resumed >= 90,
        "only {resumed} of 100 writes acknowledged with az-a down"
    );
    assert!(gap < Duration::from_secs(8), "writes stalled for {gap:?}");
    c.nodes[0].restart();
    assert_readable(&c.client, &acked).await;

    // Purges have run and the first WAL segment is gone on every node
    // (az-a catches up after its restart), so recovery below starts from
    // re-logged purge points, not from the beginning of the log.
    eventually(30, "every node to delete its first WAL segment", || {
        let gone = (0..3).all(|i| first_segment_gone(&c.wal_dir(i)));
        async move { gone }
    })
    .await;

    // Every node at once, kill -9, in the middle of a write loop.
    let done = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (client, done) = (c.client.clone(), done.clone());
        tokio::spawn(async move {
            for i in 2000..100_000 {
                if put(&client, i).await {
                    done.lock().expect("lock").push(i);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in &mut c.nodes {
        n.kill9();
    }
    writer.abort();
    let _ = writer.await;
    let during = done.lock().expect("lock").clone();
    assert!(
        !during.is_empty(),
        "no write was acknowledged before the crash"
    );
    eprintln!(
        "{} writes acknowledged in the last 1.5 s before kill -9 of every node",
        during.len()
    );
    acked.extend(during);
    for n in &mut c.nodes {
        n.restart();
    }
    let client = c.client.clone();
    eventually(30, "writes to be accepted after the restart", || {
        let client = client.clone();
        async move { put(&client, 200_000).await }
    })
    .await;
    assert_readable(&c.client, &acked).await;
    // Every group recovered its log: a write to a partition whose replicas
    // failed to start could still succeed on the other two, so look.
    for i in 0..ZONES.len() {
        let log =
            std::fs::read_to_string(c.dir.join(format!("node-{}.log", i + 1))).unwrap_or_default();
        for broken in RECOVERY_FAILURES {
            assert!(
                !log.contains(broken),
                "node {} failed to recover a group's log: {broken}",
                i + 1
            );
        }
    }
}

/// `dynaraft node --api-listen`: every storage node serves the DynamoDB
/// API beside the router. A table created through one node is there on the
/// others; a write through any node is read back through every node,
/// strongly consistent at once and eventually consistent soon after, and
/// through the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_api() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let c = Cluster::start("node-api", "fjall");
    for (i, client) in c.node_clients.iter().enumerate() {
        let client = client.clone();
        eventually(30, &format!("node {}'s API to serve", i + 1), || {
            let client = client.clone();
            async move { client.list_tables().send().await.is_ok() }
        })
        .await;
    }
    create_table(&c.node_clients[1], "orders", None).await;
    let mut written = Vec::new();
    for (j, client) in c.node_clients.iter().enumerate() {
        for i in 0..20 {
            let k = j * 100 + i;
            assert!(put(client, k).await, "node {} rejected k{k}", j + 1);
            written.push(k);
        }
    }
    for client in c.node_clients.iter().chain([&c.client]) {
        assert_readable(client, &written).await;
    }
    for (j, client) in c.node_clients.iter().enumerate() {
        for k in &written {
            let client = client.clone();
            eventually(10, &format!("node {} to read k{k}", j + 1), || {
                let client = client.clone();
                async move {
                    let got = client
                        .get_item()
                        .table_name("orders")
                        .key("pk", AttributeValue::S(format!("k{k}")))
                        .send()
                        .await
                        .expect("eventually consistent GetItem");
                    got.item().and_then(|i| i.get("n")) == Some(&AttributeValue::N(k.to_string()))
                }
            })
            .await;
        }
    }
}

/// What openraft reports when a recovered log does not fit the state
/// machine (a hole after the purge point, an inversion).
const RECOVERY_FAILURES: [&str; 3] = [
    "log entry not found",
    "Cannot re-apply logs",
    "inverted log order",
];
