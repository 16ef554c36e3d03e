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
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
        // No Raft state at all: a new data directory, or a lost one (told
        // apart by whether the cluster knows this node already).
        let fresh = host.holds_no_log().await;
        let catalog = Arc::new(CatalogWatch::default());
        let remote = Remote::new(host.channels());
        let c = catalog.clone();
        host.spawn(move |h, _| async move {
            if let Err(e) = service::serve(h, c, listener).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        let member = cfg.control.iter().any(|m| m.id == host.id());
        // What the other members know, asked once, and only by a node with
        // new Raft state (all of it, or its control replica's).
        let probe = if fresh || (member && !host.holds_log(CATALOG_GROUP).await) {
            Probe::ask(&remote, &cfg.control, host.id()).await
        } else {
            Probe::default()
        };
        let (mut local_control, mut lost_voter) = (false, false);
        if member {
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
            // A control-group replica new here (no log, no vote) may be a
            // member that lost its data: see `ControlGroup`.
            match probe.control_group(host.id()) {
                ControlGroup::LostVoter => {
                    tracing::error!(
                        node = host.id(),
                        "this node's control-plane state is new, but the control group still counts it as a voter \
                         (its data directory was lost, replaced or set aside): its control replica rejoins empty \
                         once the leader has removed it from the voters, and is added back once caught up"
                    );
                    lost_voter = true;
                }
                seen => {
                    // Never initialize a group that exists elsewhere.
                    let init = (first && seen == ControlGroup::Unknown).then_some(members);
                    host.start_group(CATALOG_GROUP, init).await?;
                    local_control = true;
                }
            }
        }
        if local_control {
            let c = catalog.clone();
            host.spawn(move |h, stop| reconcile::feed_from_local(h, c, stop));
        } else {
            let addrs = cfg.control.iter().map(|m| m.addr.clone()).collect();
            let (c, r) = (catalog.clone(), remote.clone());
            host.spawn(move |_, stop| remote::feed_catalog(r, addrs, c, stop));
        }
        // The data partitions this node held before its data was lost:
        // none may start here as the voter it was (see
        // `rejoin_lost_replicas`).
        let (seen, lost) = if fresh {
            probe.lost_replicas(host.id())
        } else {
            (0, BTreeSet::new())
        };
        host.hold_back(lost.iter().copied());
        let router = Router::new(
            catalog.clone(),
            Some(host.clone()),
            cfg.control.clone(),
            remote.clone(),
        );
        if lost_voter {
            let (control, r, rm) = (cfg.control.clone(), router.clone(), remote.clone());
            host.spawn(move |h, stop| rejoin_control(h, r, rm, control, stop));
        }
        if !lost.is_empty() {
            tracing::warn!(node = host.id(), groups = ?lost,
                "this node's data directory is new but the cluster knows the node: each partition replica it held \
                 rejoins empty, after its leader removes it from the voters, and is added back once caught up");
            let r = router.clone();
            host.spawn(move |h, stop| rejoin_lost_replicas(h, r, seen, lost, stop));
        }
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

/// What the other control members say of the control group, asked by a
/// member whose own replica of it is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlGroup {
    /// Nobody answered with a replica that has a log: a new cluster (or
    /// none of the others is up), so the first member may initialize it.
    Unknown,
    /// It exists elsewhere and this node is not among its voters: join
    /// empty, to be added (a learner first, then a voter) by the leader.
    Exists,
    /// It exists, counts this node as a voter, and the catalog has this
    /// node registered: this node was a member and lost what it had voted
    /// and acknowledged. Serving that group again as the same voter could
    /// lose committed entries (a quorum that counted it may no longer
    /// hold them), so its replica starts only once the voter is removed
    /// (`rejoin_control`).
    LostVoter,
}

/// Pause between rounds while a node that lost its control-plane state
/// leaves the control group's voters and is added back.
pub const CONTROL_REJOIN_POLL_MS: u64 = 1_000;

/// Longest a node with new Raft state waits for each other control
/// member's answer (all asked at once) before deciding how to start; a
/// member not up yet (a new cluster's) counts as having said nothing.
pub const CONTROL_PROBE_TIMEOUT_MS: u64 = 500;

/// What the other control members answer a node that starts with new Raft
/// state.
#[derive(Default)]
struct Probe {
    /// The control group's voters as the member leading it (else the first
    /// holding it with a log) has them; `None` when no member holds it.
    voters: Option<Vec<NodeId>>,
    /// The catalog of the first member that answered.
    catalog: Option<crate::wire::CatalogDoc>,
}

impl Probe {
    /// Asks every other member for its Raft status and its catalog, all at
    /// once.
    async fn ask(remote: &Remote, control: &[ControlMember], me: NodeId) -> Probe {
        let call = crate::wire::Request::Catalog { since: 0 };
        let others = control.iter().filter(|m| m.id != me);
        let catalogs = join_all(others.map(|m| ask_member(remote, m, &call)));
        let (voters, catalogs) = tokio::join!(control_voters(remote, control, me), catalogs);
        let catalog = catalogs.into_iter().find_map(|r| match r {
            Some(crate::wire::Reply::Catalog(doc)) => Some(doc),
            _ => None,
        });
        Probe { voters, catalog }
    }

    /// Whether the cluster's catalog has node `me` registered (it was
    /// part of the cluster before: not a new cluster's first start).
    fn registered(&self, me: NodeId) -> bool {
        self.catalog
            .as_ref()
            .is_some_and(|doc| doc.nodes.iter().any(|n| n.id == me))
    }

    fn control_group(&self, me: NodeId) -> ControlGroup {
        match &self.voters {
            None => ControlGroup::Unknown,
            Some(v) if v.contains(&me) && self.registered(me) => ControlGroup::LostVoter,
            Some(_) => ControlGroup::Exists,
        }
    }

    /// The data partitions (of tables and global indexes) the catalog
    /// places on `me`, with the catalog's version, when the cluster knew
    /// `me` before; none when nobody answered (a new cluster) or `me` is new
    /// to the cluster.
    fn lost_replicas(&self, me: NodeId) -> (u64, BTreeSet<u64>) {
        match &self.catalog {
            Some(doc) if self.registered(me) => {
                let groups = doc
                    .tables
                    .iter()
                    .flat_map(|t| t.all_partitions())
                    .filter(|p| p.replicas.contains(&me))
                    .map(|p| p.group)
                    .collect();
                (doc.version, groups)
            }
            Some(doc) => (doc.version, BTreeSet::new()),
            None => (0, BTreeSet::new()),
        }
    }
}

/// `call` to control member `m`, within [`CONTROL_PROBE_TIMEOUT_MS`]; `None`
/// when it did not answer.
async fn ask_member(
    remote: &Remote,
    m: &ControlMember,
    call: &crate::wire::Request,
) -> Option<crate::wire::Reply> {
    let limit = Duration::from_millis(CONTROL_PROBE_TIMEOUT_MS);
    tokio::time::timeout(limit, remote.call(&m.addr, 0, 0, call))
        .await
        .ok()
        .and_then(Result::ok)
}

/// The control group's voters as the other members report them (see
/// [`Probe::voters`]).
async fn control_voters(
    remote: &Remote,
    control: &[ControlMember],
    me: NodeId,
) -> Option<Vec<NodeId>> {
    control_status(remote, control, me)
        .await
        .map(|(_, voters)| voters)
}

/// The control group as the other members report it: the member leading
/// it (`None` when none says it does) and its voters as that member (else
/// the first holding the group with a log) has them; `None` when no other
/// member holds the group.
async fn control_status<'a>(
    remote: &Remote,
    control: &'a [ControlMember],
    me: NodeId,
) -> Option<(Option<&'a ControlMember>, Vec<NodeId>)> {
    let others: Vec<&ControlMember> = control.iter().filter(|m| m.id != me).collect();
    let call = crate::wire::Request::Status;
    let answers = join_all(others.iter().map(|m| ask_member(remote, m, &call))).await;
    let held: Vec<(&ControlMember, crate::wire::GroupStatus)> = others
        .into_iter()
        .zip(answers)
        .filter_map(|(m, answer)| match answer {
            Some(crate::wire::Reply::Status(groups)) => groups
                .into_iter()
                .find(|g| g.group == CATALOG_GROUP && g.last_log_index > 0)
                .map(|g| (m, g)),
            _ => None,
        })
        .collect();
    let leader = held.iter().find(|(m, g)| g.leader == Some(m.id));
    let (_, g) = leader.or(held.first())?;
    Some((leader.map(|(m, _)| *m), g.voters.clone()))
}

/// For a node that lost its control-plane state (see
/// [`ControlGroup::LostVoter`]): asks the control group's leader to remove
/// it from the voters (the remaining voters, a quorum, hold every committed
/// catalog change; a removal they cannot commit, with another member down,
/// is retried), starts its control replica empty once removed, and asks the
/// leader to add it back: a learner until caught up, then a voter
/// (`Host::change_voters`). An operator's `dynaraft admin control` doing
/// either step meanwhile is simply seen in the next round.
async fn rejoin_control(
    host: Host,
    router: Router,
    remote: Remote,
    control: Vec<ControlMember>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let me = host.id();
    let Some(info) = control.iter().find(|m| m.id == me).map(|m| NodeInfo {
        addr: m.addr.clone(),
        az: m.az.clone(),
    }) else {
        return;
    };
    let mut started = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(CONTROL_REJOIN_POLL_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut stop) => return,
        }
        let Some((Some(leader), voters)) = control_status(&remote, &control, me).await else {
            continue;
        };
        let (remove, add) = match (voters.contains(&me), started) {
            (true, true) => {
                tracing::info!(node = me, "back among the control group's voters");
                return;
            }
            (true, false) => (Some(me), None),
            (false, _) => {
                if !started {
                    if let Err(e) = host.start_group(CATALOG_GROUP, None).await {
                        tracing::warn!(error = %e, "control replica did not start; retrying");
                        continue;
                    }
                    started = true;
                    tracing::info!(
                        node = me,
                        "removed from the control group's voters: its control replica started empty, to be added back"
                    );
                }
                (None, Some((me, info.clone())))
            }
        };
        match router
            .change_voters(leader.id, CATALOG_GROUP, remove, add)
            .await
        {
            Ok(v) => tracing::info!(node = me, voters = ?v, "control group voters changed"),
            Err(e) => tracing::warn!(error = %e, "control group voter change failed; retrying"),
        }
    }
}

/// Pause between rounds while replicas lost with the data directory wait
/// to leave their groups' voters.
pub const REJOIN_RETRY_MS: u64 = 1_000;

/// For each data partition whose replica here was lost with the data
/// directory: asks the group's leader to remove this node from the voters
/// (an empty replica counted as a voter could help elect a leader without
/// entries it had acknowledged), then starts the replica empty; the
/// leader's reconciler then adds it back as a learner and makes it a voter
/// once caught up (`reconcile::align_voters`). Also used for every replica
/// that joins a running group from nothing (`reconcile::Reconciled::rejoin`:
/// a split child whose state as of the split will never be here, a replica
/// moved here), once the voters that answer have purged their logs through
/// the group's snapshot floor. A group gone from the catalog,
/// or no longer placed here, is simply let go, judged only by a catalog at
/// least as new as version `seen` (the one `lost` was read from: an older
/// one, such as the empty catalog before the first arrives, would let every
/// group go).
pub(crate) async fn rejoin_lost_replicas(
    host: Host,
    router: Router,
    seen: u64,
    mut lost: BTreeSet<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !lost.is_empty() {
        let catalog = router.catalog().get();
        let mut done = Vec::new();
        for &group in lost.iter().filter(|_| catalog.version >= seen) {
            let Some((_, p)) = catalog.partitions.get(&group) else {
                done.push(group);
                continue;
            };
            if !p.replicas.contains(&host.id()) {
                done.push(group);
                continue;
            }
            let Some(voters) = left_voters(&router, group, &p.replicas, host.id()).await else {
                continue;
            };
            // Starting from nothing, this replica may only start once no
            // voter that could lead would send it entries from before the
            // group's last split, or from the start of a split child's log
            // (which assumes the state inherited at the split).
            if !crate::reconcile::voters_past_floor(&router, group, &voters).await {
                tracing::debug!(
                    group,
                    "waiting for the voters to purge their logs through the group's snapshot floor"
                );
                continue;
            }
            match host.start_group(group, None).await {
                Ok(_) => {
                    tracing::info!(
                        node = host.id(),
                        group,
                        "lost replica left the voters and started empty; its leader adds it back"
                    );
                    done.push(group);
                }
                Err(e) => tracing::warn!(group, error = %e, "lost replica did not start; retrying"),
            }
        }
        for group in done {
            lost.remove(&group);
            host.release(group);
        }
        if lost.is_empty() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(REJOIN_RETRY_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut stop) => return,
        }
    }
}

/// `group`'s voters once its leader (among `replicas`) no longer counts
/// `me` among them, asking it to remove `me` when it still does; `None`
/// until then.
async fn left_voters(
    router: &Router,
    group: u64,
    replicas: &[NodeId],
    me: NodeId,
) -> Option<Vec<NodeId>> {
    // The catalog's replicas first; then a leader one of them names that
    // the catalog no longer lists (a replica moving away still leads).
    let mut ask: Vec<NodeId> = replicas.iter().copied().filter(|r| *r != me).collect();
    let mut i = 0;
    while let Some(&r) = ask.get(i) {
        i += 1;
        let Ok(groups) = router.node_status(r).await else {
            continue;
        };
        let Some(g) = groups.into_iter().find(|g| g.group == group) else {
            continue;
        };
        if g.leader != Some(r) {
            if let Some(l) = g.leader.filter(|l| *l != me && !ask.contains(l)) {
                ask.push(l);
            }
            continue;
        }
        if !g.voters.contains(&me) {
            return Some(g.voters);
        }
        match router.change_voters(r, group, Some(me), None).await {
            Ok(voters) => return (!voters.contains(&me)).then_some(voters),
            Err(e) => {
                tracing::debug!(group, error = %e, "removing the lost replica failed; retrying")
            }
        }
    }
    None
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
    let (c, r) = (catalog.clone(), router.clone());
    host.spawn(move |h, stop| reconcile::run(h, c, r, stop));
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
