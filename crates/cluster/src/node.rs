//! A storage node of a multi-node cluster: the [`Host`] with its gRPC
//! endpoint, a control-plane replica when the node is one of the control
//! members, the catalog (read locally from that replica, or long-polled
//! from the control members), registration in the node registry, the
//! reconciler and the TTL sweeper. A router in the same process shares the
//! node's channels and calls the node itself in-process.

use crate::catalog::CatalogWatch;
use crate::host::{Host, HostConfig};
use crate::remote::{self, Remote};
use crate::router::Router;
use crate::{ClusterError, feed, reconcile, repair, service, split, ttl};
use dynaraft_raft::grpc::Channels;
use dynaraft_raft::{NodeId, NodeInfo};
use dynaraft_storage::machine::CATALOG_GROUP;
use dynaraft_storage::{Command, NodeRecord, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Pause between attempts to register in the node registry.
pub const REGISTER_RETRY_MS: u64 = 500;

/// A member of the control plane, as every node and router is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    pub id: NodeId,
    pub addr: String,
    pub az: String,
}

impl ControlMember {
    /// Parses `id=host:port@az`.
    pub fn parse(s: &str) -> Result<ControlMember, String> {
        let (id, rest) = s
            .split_once('=')
            .ok_or(format!("expected id=addr@az, got {s:?}"))?;
        let (addr, az) = rest
            .split_once('@')
            .ok_or(format!("expected id=addr@az, got {s:?}"))?;
        let id = id.parse().map_err(|_| format!("bad node id in {s:?}"))?;
        Ok(ControlMember {
            id,
            addr: addr.into(),
            az: az.into(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub host: HostConfig,
    pub control: Vec<ControlMember>,
    pub ttl_sweep_interval_ms: u64,
    /// How long a node may stay silent before its replicas are re-created
    /// on another node of its zone (see `repair`).
    pub replace_after_ms: u64,
    /// When partitions split (by size and by load, see `split`).
    pub split: crate::split::SplitPolicy,
    /// This deployment's region and its peers, for global tables; `None`:
    /// no replicator runs.
    pub peer_regions: Option<Arc<crate::peer::PeerRegions>>,
    /// Where exports write and imports read (`--object-store`); `None`:
    /// exports and imports fail.
    pub object_store: Option<Arc<crate::objects::ObjectStore>>,
    /// How often point-in-time recovery snapshots a table, in
    /// milliseconds (0: never; restores then undo from the live table).
    pub pitr_snapshot_interval_ms: u64,
}

/// A running storage node.
#[derive(Clone)]
pub struct ClusterNode {
    pub host: Host,
    pub router: Router,
    pub catalog: Arc<CatalogWatch>,
}

impl ClusterNode {
    /// Opens the node and serves it on `listener` (whose address must be
    /// `cfg.host.addr`). Returns at once; registration, the catalog and the
    /// node's replicas follow in the background.
    pub async fn start(
        cfg: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<ClusterNode, StorageError> {
        let host = Host::open(cfg.host.clone()).await?;
        let catalog = Arc::new(CatalogWatch::default());
        let remote = Remote::new(host.channels());
        let c = catalog.clone();
        host.spawn(move |h, _| async move {
            if let Err(e) = service::serve(h, c, listener).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        if cfg.control.iter().any(|m| m.id == host.id()) {
            let first = cfg.control.iter().map(|m| m.id).min() == Some(host.id());
            let members: BTreeMap<NodeId, NodeInfo> = cfg
                .control
                .iter()
                .map(|m| {
                    let info = NodeInfo {
                        addr: m.addr.clone(),
                        az: m.az.clone(),
                    };
                    (m.id, info)
                })
                .collect();
            host.start_group(CATALOG_GROUP, first.then_some(members))
                .await?;
            let c = catalog.clone();
            host.spawn(move |h, stop| reconcile::feed_from_local(h, c, stop));
        } else {
            let addrs = cfg.control.iter().map(|m| m.addr.clone()).collect();
            let (c, r) = (catalog.clone(), remote.clone());
            host.spawn(move |_, stop| remote::feed_catalog(r, addrs, c, stop));
        }
        let router = Router::new(
            catalog.clone(),
            Some(host.clone()),
            cfg.control.clone(),
            remote,
        );
        let record = NodeRecord {
            id: host.id(),
            addr: cfg.host.addr.clone(),
            az: cfg.host.az.clone(),
            draining: false,
            encrypted: cfg.host.encryption.is_some() && cfg.host.data_dir.is_some(),
        };
        let r = router.clone();
        host.spawn(move |_, stop| register(r, record, stop));
        if cfg.control.iter().any(|m| m.id == host.id()) {
            let (r, after) = (router.clone(), Duration::from_millis(cfg.replace_after_ms));
            host.spawn(move |h, stop| repair::run(h, r, after, stop));
            let (r, policy) = (router.clone(), cfg.split);
            host.spawn(move |h, stop| split::run(h, r, policy, stop));
        }
        spawn_replica_tasks(
            &host,
            &router,
            &catalog,
            cfg.ttl_sweep_interval_ms,
            cfg.peer_regions.clone(),
            cfg.object_store.clone(),
            cfg.pitr_snapshot_interval_ms,
        );
        Ok(ClusterNode {
            host,
            router,
            catalog,
        })
    }

    /// Stops every group and task at once, as losing the node would (its
    /// groups elect new leaders after an election timeout).
    pub async fn shutdown(self) {
        let ClusterNode { host, router, .. } = self;
        drop(router);
        host.shutdown().await;
    }

    /// Stops the node the way a rolling restart wants it (SIGTERM): first
    /// hands the leadership of the groups it leads to their other voters
    /// (`Host::hand_off_leaderships`), so no group waits out an election
    /// timeout, then [`shutdown`](Self::shutdown).
    pub async fn drain_and_shutdown(self) {
        self.host.hand_off_leaderships().await;
        self.shutdown().await;
    }
}

/// Starts the tasks that follow the catalog on a node: the reconciler
/// (starts and removes replicas), the global index feeder and the TTL
/// sweeper.
pub(crate) fn spawn_replica_tasks(
    host: &Host,
    router: &Router,
    catalog: &Arc<CatalogWatch>,
    ttl_sweep_ms: u64,
    peers: Option<Arc<crate::peer::PeerRegions>>,
    objects: Option<Arc<crate::objects::ObjectStore>>,
    pitr_snapshot_ms: u64,
) {
    let c = catalog.clone();
    host.spawn(move |h, stop| reconcile::run(h, c, stop));
    let (c, r) = (catalog.clone(), router.clone());
    host.spawn(move |h, stop| feed::run(h, r, c, stop));
    let c = catalog.clone();
    let every = Duration::from_millis(ttl_sweep_ms.max(1));
    host.spawn(move |h, stop| ttl::run(h, c, every, stop));
    let (c, r) = (catalog.clone(), router.clone());
    host.spawn(move |h, stop| crate::txn::run(h, r, c, stop));
    let (c, r) = (catalog.clone(), router.clone());
    host.spawn(move |h, stop| crate::backup::run(h, r, c, pitr_snapshot_ms, stop));
    let (c, r) = (catalog.clone(), router.clone());
    host.spawn(move |h, stop| crate::jobs::run(h, r, c, objects, stop));
    if let Some(peers) = peers {
        let (c, r) = (catalog.clone(), router.clone());
        host.spawn(move |h, stop| crate::replicate::run(h, r, c, peers, stop));
    }
}

/// Records the node (address and zone) in the registry through `router`,
/// unless the router's catalog already has it exactly so.
pub(crate) async fn register_once(
    router: &Router,
    record: &NodeRecord,
) -> Result<(), ClusterError> {
    let known = router.catalog().get().nodes.get(&record.id).cloned();
    if known.is_some_and(|n| n.addr == record.addr && n.az == record.az) {
        return Ok(());
    }
    router
        .change_catalog(Command::RegisterNode(record.clone()))
        .await?;
    tracing::info!(node = record.id, az = %record.az, "registered");
    Ok(())
}

/// Registers the node until the control plane has it.
async fn register(
    router: Router,
    record: NodeRecord,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match register_once(&router, &record).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "registration failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(REGISTER_RETRY_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut stop) => return,
        }
    }
}

/// A router with no storage of its own (the `router` role): it reads the
/// catalog from the control members and calls storage nodes over gRPC.
pub struct RouterNode {
    pub router: Router,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RouterNode {
    /// Starts a router that reaches the nodes at the keys of `routes`
    /// through the addresses they map to (empty: directly), over mutual
    /// TLS when `tls` is given.
    pub fn start(
        control: &[ControlMember],
        routes: HashMap<String, String>,
        tls: Option<Arc<dynaraft_raft::tls::PeerTls>>,
    ) -> RouterNode {
        let catalog = Arc::new(CatalogWatch::default());
        let remote = Remote::new(Channels::with_routes(routes).with_tls(tls));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let addrs = control.iter().map(|m| m.addr.clone()).collect();
        tokio::spawn(remote::feed_catalog(
            remote.clone(),
            addrs,
            catalog.clone(),
            stopped,
        ));
        RouterNode {
            router: Router::new(catalog, None, control.to_vec(), remote),
            stop,
        }
    }

    /// Waits until the catalog has been read once (or `timeout` passes).
    pub async fn ready(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.router.catalog().wait_for(1))
            .await
            .is_ok()
    }

    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}
