//! Keeps a storage node's replicas equal to what the catalog assigns it:
//! starts the replicas of new partitions (the first replica named by the
//! original placement, epoch 1, initialises the group's membership, the
//! others too if it stays silent: [`LATE_INITIALIZE_MS`]) and
//! removes those it no longer holds. The catalog is the desired state and
//! Raft membership follows it: the leader of each group changes the voters
//! to the catalog's replicas when they differ (after a re-replication, see
//! `repair`), adding new replicas as learners first so they catch up before
//! they count towards the quorum. Runs on every catalog change and every
//! [`RECONCILE_PERIOD_MS`], since leadership moves without catalog changes.
//!
//! Also feeds the catalog from a local control-plane replica: every applied
//! batch of group 0 republishes the snapshot.

use crate::catalog::{Catalog, CatalogWatch};
use crate::host::Host;
use dynaraft_raft::{NodeInfo, ProposeError, RaftGroup};
use dynaraft_storage::StorageError;
use dynaraft_storage::machine::CATALOG_GROUP;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Pause before retrying a reconciliation that failed, in milliseconds.
pub const RECONCILE_RETRY_MS: u64 = 500;
/// Pause between reconciliations when nothing failed, in milliseconds.
pub const RECONCILE_PERIOD_MS: u64 = 1_000;
/// Pause before reconciling again while a split child waits for its
/// parent's split to apply here, in milliseconds: the child's group has no
/// quorum (and its keys no leader) until two of its replicas start, so a
/// whole period's wait showed as a one-second stall of every request to
/// the child's range (make bench, the splits row).
pub const RECONCILE_CHILD_WAIT_MS: u64 = 10;
/// Longest a membership change may take, including a new replica's catch-up
/// (it is retried after that), in milliseconds.
pub const MEMBERSHIP_CHANGE_TIMEOUT_MS: u64 = 30_000;

/// Reconciles on every catalog change until the node shuts down.
pub async fn run(host: Host, catalog: Arc<CatalogWatch>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = catalog.subscribe();
    loop {
        let pause = match reconcile_once(&host, &catalog.get()).await {
            Ok(Reconciled::Done) => Duration::from_millis(RECONCILE_PERIOD_MS),
            Ok(Reconciled::ChildWaits) => Duration::from_millis(RECONCILE_CHILD_WAIT_MS),
            Err(e) => {
                tracing::warn!(node = host.id(), error = %e, "reconcile failed; will retry");
                Duration::from_millis(RECONCILE_RETRY_MS)
            }
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(pause) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}

/// What a reconciliation left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    Done,
    /// A split child's replica waits for its parent's split to apply here.
    ChildWaits,
}

/// Starts missing replicas, aligns the voters of the groups this node
/// leads, and removes replicas the catalog no longer assigns here, once.
pub async fn reconcile_once(host: &Host, catalog: &Catalog) -> Result<Reconciled, StorageError> {
    if catalog.version == 0 {
        // Nothing known yet: never remove replicas on an empty catalog.
        return Ok(Reconciled::Done);
    }
    let mut outcome = Reconciled::Done;
    let want = catalog.groups_of(host.id());
    for (group, p) in &want {
        match host.group(*group) {
            Some(g) => align_voters(&g, catalog, &p.replicas).await?,
            // Its replica here was lost with the data directory: it starts
            // once its leader no longer counts this node as a voter
            // (`node::rejoin_lost_replicas`).
            None if host.is_held_back(*group) => {}
            None if !may_start(host, p)? => {
                outcome = Reconciled::ChildWaits;
                tracing::debug!(
                    node = host.id(),
                    group,
                    "split child waits for its parent's split here"
                );
            }
            None => {
                // The first replica of the original placement (epoch 1)
                // initialises the membership; the others do too, with the
                // same members, if it has not reached them after
                // LATE_INITIALIZE_MS (it may be down: the partition then
                // forms without it). A replica added later (epoch > 1)
                // joins through the leader's membership change, never by
                // initialising.
                let original = p.epoch == 1;
                let first = p.replicas.first() == Some(&host.id());
                let init = (original && first)
                    .then(|| members(catalog, &p.replicas))
                    .flatten();
                let g = host.start_group(*group, init).await?;
                if original
                    && !first
                    && let Some(m) = members(catalog, &p.replicas)
                {
                    host.spawn(move |_, stop| initialize_late(g, m, stop));
                }
            }
        }
    }
    for g in host.hosted() {
        if g == CATALOG_GROUP || want.contains_key(&g) {
            continue;
        }
        // A replica moved away: if this node still leads the group, it hands
        // the leadership to a replica that stays (whose reconciliation then
        // changes the voters), or else the membership, before leaving. A
        // leader that removed itself would leave the others without one
        // for an election timeout.
        if let (Some(p), Some(group)) = (catalog.partition(g), host.group(g))
            && !hand_over(&group, &p.replicas).await
        {
            align_voters(&group, catalog, &p.replicas).await?;
        }
        host.remove_group(g).await?;
    }
    Ok(outcome)
}

/// Whether this node may start its replica of partition `p`. A split's
/// child shares its parent's key space, so while this node's replica of
/// the parent still owns the child's range (it has not applied the split
/// yet), a child replica here could be handed a snapshot that the parent's
/// older log entries would then overwrite: it waits until the parent's
/// range here no longer covers it (the split applied, or a snapshot
/// narrowed it) or the parent is not hosted here.
fn may_start(host: &Host, p: &dynaraft_storage::PartitionMeta) -> Result<bool, StorageError> {
    let Some(parent) = p.parent.filter(|g| host.group(*g).is_some()) else {
        return Ok(true);
    };
    let span = dynaraft_storage::Span::load(host.tree(), parent)?;
    Ok(!span.owns_hash(p.hash_lo))
}

/// Longest a leader leaving a group waits for its leadership transfer to
/// take effect before it changes the membership itself, in milliseconds.
pub const HAND_OVER_WAIT_MS: u64 = 2_000;

/// How long a replica of a new partition that its placement does not name
/// first waits to hear from the group before initialising the same
/// membership itself, in milliseconds: far more than the first replica
/// takes to initialise, campaign and replicate the membership (a few
/// milliseconds to one election), so it only acts when that replica is
/// down.
pub const LATE_INITIALIZE_MS: u64 = 3_000;

/// Initialises `g` with `members` after [`LATE_INITIALIZE_MS`] if it has
/// still heard of no leader and holds no log (openraft allows several
/// replicas to initialise the same membership; one that already has a log
/// or a vote refuses, which `RaftGroup::initialize` takes as done).
async fn initialize_late(
    g: RaftGroup,
    members: BTreeMap<u64, NodeInfo>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(LATE_INITIALIZE_MS)) => {}
        _ = dynaraft_storage::stop_requested(&mut stop) => return,
    }
    if g.leader().is_some() || g.progress() != (0, 0) {
        return;
    }
    match g.initialize(members).await {
        Ok(()) => tracing::info!(
            group = g.group,
            "no word from the partition's first replica: initialised its membership here"
        ),
        Err(e) => tracing::debug!(group = g.group, error = %e, "late initialisation failed"),
    }
}
/// Pause between checks of whether the transfer took effect, in
/// milliseconds.
const HAND_OVER_POLL_MS: u64 = 10;

/// If this replica leads `group`, hands the leadership to one of
/// `replicas` (the catalog's, which this node is no longer among) that is
/// a voter, and waits for it to take effect. Whether this replica no longer
/// leads.
async fn hand_over(group: &RaftGroup, replicas: &[u64]) -> bool {
    if !group.is_leader() {
        return true;
    }
    let voters = group.voters();
    let Some(to) = replicas.iter().copied().find(|r| voters.contains(r)) else {
        return false;
    };
    hand_leadership_to(group, to, Duration::from_millis(HAND_OVER_WAIT_MS)).await
}

/// From the leader: hands `group`'s leadership to voter `to` and waits up
/// to `wait` for it to take effect. Whether this replica no longer leads.
pub(crate) async fn hand_leadership_to(group: &RaftGroup, to: u64, wait: Duration) -> bool {
    if let Err(e) = group.transfer_leader(to).await {
        tracing::debug!(group = group.group, to, error = %e, "leader hand-over not started");
        return false;
    }
    let deadline = tokio::time::Instant::now() + wait;
    while group.is_leader() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(HAND_OVER_POLL_MS)).await;
    }
    let moved = !group.is_leader();
    tracing::info!(group = group.group, to, moved, "leadership handed over");
    moved
}

/// On the group's leader, changes the voters to `replicas` if they differ.
async fn align_voters(
    group: &RaftGroup,
    catalog: &Catalog,
    replicas: &[u64],
) -> Result<(), StorageError> {
    let want: BTreeSet<u64> = replicas.iter().copied().collect();
    if !group.is_leader() || group.voters() == want {
        return Ok(());
    }
    let Some(voters) = members(catalog, replicas) else {
        return Err(StorageError::Unavailable(format!(
            "group {}: a replica is not registered yet",
            group.group
        )));
    };
    tracing::info!(group = group.group, from = ?group.voters(), to = ?want, "changing voters");
    let limit = Duration::from_millis(MEMBERSHIP_CHANGE_TIMEOUT_MS);
    match tokio::time::timeout(limit, group.change_voters(voters)).await {
        Ok(Ok(())) | Ok(Err(ProposeError::NotLeader { .. })) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(StorageError::Unavailable(format!(
            "group {}: membership change timed out",
            group.group
        ))),
    }
}

/// The replicas' addresses and zones; `None` while one is not registered.
fn members(catalog: &Catalog, replicas: &[u64]) -> Option<BTreeMap<u64, NodeInfo>> {
    replicas
        .iter()
        .map(|id| {
            catalog.nodes.get(id).map(|n| {
                (
                    *id,
                    NodeInfo {
                        addr: n.addr.clone(),
                        az: n.az.clone(),
                    },
                )
            })
        })
        .collect()
}

/// Republishes the catalog from the local control-group replica after
/// every batch it applies, until the node shuts down.
pub async fn feed_from_local(
    host: Host,
    catalog: Arc<CatalogWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(group) = host.group(CATALOG_GROUP) else {
        tracing::error!("no local control-plane replica to feed the catalog from");
        return;
    };
    let mut applied = group.applied.clone();
    drop(group);
    loop {
        match Catalog::load(host.tree()) {
            Ok(c) => catalog.publish(c),
            Err(e) => tracing::error!(error = %e, "catalog load failed"),
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}
