//! `TestCluster`: storage nodes in given zones in this process, each with
//! its own data directory and a gRPC endpoint on 127.0.0.1, the first three
//! of them control-plane members, plus a standalone router serving the
//! DynamoDB API on port 0. Nodes can be killed (shut down) and restarted on
//! the same address and data directory.

use crate::client_for;
use aws_sdk_dynamodb::Client;
use dynaraft_api::{Api, ApiConfig, Server};
use dynaraft_cluster::host::HostConfig;
use dynaraft_cluster::node::{ClusterNode, ControlMember, NodeConfig, RouterNode};
pub use dynaraft_cluster::split::DEFAULT_SPLIT_SIZE_BYTES;
use dynaraft_raft::Timing;
use dynaraft_raft::tls::PeerTls;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Raft timing of test clusters: fast elections so failover tests are short.
pub fn test_timing() -> Timing {
    Timing {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..Timing::default()
    }
}

/// Control-plane members of a test cluster: its first nodes.
pub const TEST_CONTROL_MEMBERS: usize = 3;
/// Replace-after time of test clusters unless a test sets one, in
/// milliseconds: long enough that no test re-replicates by accident.
pub const TEST_REPLACE_AFTER_MS: u64 = 600_000;

pub struct TestCluster {
    pub client: Client,
    pub api_addr: SocketAddr,
    /// Every node: id, address and zone.
    pub all: Vec<ControlMember>,
    /// The control-plane members (the first nodes).
    pub members: Vec<ControlMember>,
    replace_after_ms: u64,
    split_size_bytes: u64,
    nodes: Vec<Option<ClusterNode>>,
    root: PathBuf,
    server: Option<Server>,
    router: Option<RouterNode>,
    /// Mutual TLS on every node's gRPC port and the router's calls.
    peer_tls: Option<Arc<PeerTls>>,
}

impl TestCluster {
    /// Boots `n` nodes in zones az-a, az-b, ... and a router; tables are
    /// created with `partitions` partitions each.
    pub async fn start(name: &str, n: usize, partitions: usize) -> TestCluster {
        let zones: Vec<String> = (0..n)
            .map(|i| format!("az-{}", (b'a' + i as u8) as char))
            .collect();
        Self::start_in(
            name,
            &zones,
            partitions,
            TEST_REPLACE_AFTER_MS,
            DEFAULT_SPLIT_SIZE_BYTES,
        )
        .await
    }

    /// Boots one node per entry of `zones` (node i + 1 in `zones[i]`) and a
    /// router; down nodes' replicas move after `replace_after_ms`, and
    /// partitions split at `split_size_bytes`.
    pub async fn start_in(
        name: &str,
        zones: &[String],
        partitions: usize,
        replace_after_ms: u64,
        split_size_bytes: u64,
    ) -> TestCluster {
        let settings = (replace_after_ms, split_size_bytes);
        Self::boot(name, zones, partitions, settings, None).await
    }

    /// Boots three nodes (az-a, az-b, az-c) and a router, every gRPC
    /// connection between them mutual TLS with `tls`.
    pub async fn start_with_peer_tls(name: &str, tls: Arc<PeerTls>) -> TestCluster {
        let zones: Vec<String> = ["az-a", "az-b", "az-c"].map(String::from).to_vec();
        let settings = (TEST_REPLACE_AFTER_MS, DEFAULT_SPLIT_SIZE_BYTES);
        Self::boot(name, &zones, 1, settings, Some(tls)).await
    }

    async fn boot(
        name: &str,
        zones: &[String],
        partitions: usize,
        (replace_after_ms, split_size_bytes): (u64, u64),
        peer_tls: Option<Arc<PeerTls>>,
    ) -> TestCluster {
        let n = zones.len();
        let root =
            std::env::temp_dir().join(format!("dynaraft-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut listeners = Vec::new();
        let mut all = Vec::new();
        for (i, az) in zones.iter().enumerate() {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr").to_string();
            all.push(ControlMember {
                id: i as u64 + 1,
                addr,
                az: az.clone(),
            });
            listeners.push(l);
        }
        let mut c = TestCluster {
            client: client_for("127.0.0.1:1".parse().expect("addr")),
            api_addr: "127.0.0.1:1".parse().expect("addr"),
            members: all.iter().take(TEST_CONTROL_MEMBERS).cloned().collect(),
            all,
            replace_after_ms,
            split_size_bytes,
            nodes: Vec::new(),
            root,
            server: None,
            router: None,
            peer_tls,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let node = c.open(i, l).await;
            c.nodes.push(Some(node));
        }
        let router = RouterNode::start(&c.members, Default::default(), c.peer_tls.clone());
        assert!(
            router.ready(Duration::from_secs(10)).await,
            "catalog never loaded"
        );
        let cfg = ApiConfig {
            transition_delay_ms: 0,
            partitions_per_table: partitions,
            // As `dynaraft router --allow-unauthenticated`: requests are
            // authenticated once the control plane keeps users.
            auth: Some(Arc::new(dynaraft_api::auth::Auth::without_file(
                "us-east-1",
                true,
            ))),
            ..ApiConfig::default()
        };
        let api = Api::new(router.router.clone(), Arc::new(cfg));
        let server = Server::start(api, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("start router");
        c.api_addr = server.addr;
        c.client = client_for(server.addr);
        c.server = Some(server);
        c.router = Some(router);
        c.wait_registered(n).await;
        c
    }

    async fn open(&self, i: usize, listener: tokio::net::TcpListener) -> ClusterNode {
        let m = &self.all[i];
        let dir = self.root.join(format!("node-{}", m.id));
        let mut host = HostConfig::new(m.id, &m.az, &m.addr, Some(dir));
        host.timing = test_timing();
        host.peer_tls = self.peer_tls.clone();
        let cfg = NodeConfig {
            host,
            control: self.members.clone(),
            ttl_sweep_interval_ms: crate::TEST_TTL_SWEEP_MS,
            replace_after_ms: self.replace_after_ms,
            split: dynaraft_cluster::split::SplitPolicy {
                size_bytes: self.split_size_bytes,
                ..Default::default()
            },
            peer_regions: None,
            object_store: None,
            pitr_snapshot_interval_ms: crate::TEST_CLUSTER_PITR_SNAPSHOT_MS,
        };
        ClusterNode::start(cfg, listener).await.expect("start node")
    }

    /// Waits until `n` nodes are in the registry the router reads.
    async fn wait_registered(&self, n: usize) {
        let router = self.router.as_ref().expect("router");
        for _ in 0..200 {
            if router.router.catalog().get().nodes.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nodes did not register");
    }

    /// The router behind the cluster's API endpoint.
    pub fn router(&self) -> &dynaraft_cluster::Router {
        &self.router.as_ref().expect("router").router
    }

    /// The node with index `i`, if running.
    pub fn node(&self, i: usize) -> Option<&ClusterNode> {
        self.nodes.get(i).and_then(|n| n.as_ref())
    }

    /// Stops node `i` (all its replicas and its endpoint), like losing it.
    pub async fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i).and_then(Option::take) {
            n.shutdown().await;
        }
    }

    /// Adds a node (not a control member) in zone `az`; its index.
    pub async fn add_node(&mut self, az: &str) -> usize {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let i = self.all.len();
        self.all.push(ControlMember {
            id: i as u64 + 1,
            addr: l.local_addr().expect("addr").to_string(),
            az: az.to_string(),
        });
        let node = self.open(i, l).await;
        self.nodes.push(Some(node));
        self.wait_registered(i + 1).await;
        i
    }

    /// Starts node `i` again on its address and data directory.
    pub async fn restart(&mut self, i: usize) {
        let addr = self.all[i].addr.clone();
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let node = self.open(i, listener.expect("rebind node address")).await;
        self.nodes[i] = Some(node);
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        if let Some(r) = self.router.take() {
            r.stop();
        }
        for i in 0..self.nodes.len() {
            self.kill(i).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(r) = self.router.take() {
            r.stop();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
