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
use crate::router::Router;
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
/// Longest the leader of a split group waits for its own log to be purged
/// through the group's snapshot floor before adding a replica (it retries
/// after that), in milliseconds.
pub const SNAPSHOT_FLOOR_WAIT_MS: u64 = 5_000;
/// Longest a membership change may take, including a new replica's catch-up
/// (it is retried after that), in milliseconds.
pub const MEMBERSHIP_CHANGE_TIMEOUT_MS: u64 = 30_000;

/// Reconciles on every catalog change until the node shuts down. Replicas
/// that must join their group from nothing (a split child whose inherited
/// state will never be here, a replica moved here) are handed to
/// `node::rejoin_lost_replicas` (through `router`), like a replica lost
/// with the data directory.
pub async fn run(
    host: Host,
    catalog: Arc<CatalogWatch>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = catalog.subscribe();
    loop {
        let current = catalog.get();
        let pause = match reconcile_once(&host, &current, &router).await {
            Ok(done) => {
                if !done.rejoin.is_empty() {
                    host.hold_back(done.rejoin.iter().copied());
                    let (r, seen, groups) = (router.clone(), current.version, done.rejoin);
                    host.spawn(move |h, stop| {
                        crate::node::rejoin_lost_replicas(h, r, seen, groups, stop)
                    });
                }
                Duration::from_millis(if done.child_waits {
                    RECONCILE_CHILD_WAIT_MS
                } else {
                    RECONCILE_PERIOD_MS
                })
            }
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
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// A split child's replica waits for its parent's split to apply here.
    pub child_waits: bool,
    /// Groups whose replica here must join from nothing, through the
    /// leader (a split child whose state as of the split will never be
    /// here, [`ChildStart::Rejoin`]; a replica new here in a group that
    /// already runs): it leaves the voters if still counted, and is sent a
    /// snapshot.
    pub rejoin: BTreeSet<u64>,
}

/// Starts missing replicas, aligns the voters of the groups this node
/// leads, and removes replicas the catalog no longer assigns here, once.
pub async fn reconcile_once(
    host: &Host,
    catalog: &Catalog,
    router: &Router,
) -> Result<Reconciled, StorageError> {
    if catalog.version == 0 {
        // Nothing known yet: never remove replicas on an empty catalog.
        return Ok(Reconciled::default());
    }
    let mut outcome = Reconciled::default();
    let want = catalog.groups_of(host.id());
    for (group, p) in &want {
        let start = match host.group(*group) {
            Some(g) => {
                // A split group's replica purges its log through its
                // snapshot floor soon after reaching it (one snapshot): a
                // replica joining later from nothing is then sent a
                // snapshot past it by whichever replica leads, never the
                // entries that wrote to what a split gave away
                // (`voters_past_floor`).
                if let Some(floor) = dynaraft_storage::split::snapshot_floor(host.tree(), *group)?
                    && g.progress().1 > 0
                    && let Err(e) = g.ask_purge_start(floor).await
                {
                    tracing::debug!(group, error = %e, "purging a split group's log start failed");
                }
                align_voters(host, &g, catalog, &p.replicas, router).await?;
                continue;
            }
            // Its replica here was lost with the data directory: it starts
            // once its leader no longer counts this node as a voter
            // (`node::rejoin_lost_replicas`).
            None if host.is_held_back(*group) => continue,
            None => child_start(host, catalog, p)?,
        };
        match start {
            ChildStart::Wait => {
                outcome.child_waits = true;
                tracing::debug!(
                    node = host.id(),
                    group,
                    "split child waits for its parent's split here"
                );
            }
            ChildStart::Rejoin => {
                tracing::warn!(
                    node = host.id(),
                    group,
                    parent = ?p.parent,
                    "this node will never hold the split child's state as of its split (the parent's replica \
                     here was brought past the split by a snapshot, or no ancestor is here): its replica \
                     joins empty, from a snapshot of the leader"
                );
                outcome.rejoin.insert(*group);
            }
            // A replica added to a group that already runs (epoch > 1: moved
            // or re-replicated here), with no Raft state here, joins as a
            // lost one does: this node may still count as a voter (its
            // earlier replica here was removed while the membership kept
            // it, or its disk was lost), and an empty voter could help elect
            // a leader without entries it acknowledged; and it must be sent
            // a snapshot past the group's snapshot floor.
            ChildStart::Start if p.epoch != 1 && !host.holds_log(*group).await => {
                tracing::info!(
                    node = host.id(),
                    group,
                    "a replica new here joins the running group through its leader"
                );
                outcome.rejoin.insert(*group);
            }
            ChildStart::Start => {
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
            align_voters(host, &group, catalog, &p.replicas, router).await?;
        }
        host.remove_group(g).await?;
    }
    Ok(outcome)
}

/// Whether this node may start its replica of partition `p` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStart {
    /// Not a split child, or its state as of the split is here: this
    /// node's replica of the parent applied the split, which stored the
    /// child's span (`Span::stored`). The child's log starts after the
    /// split, so a replica may only start on that state.
    Start,
    /// A replica here of an ancestor still owns the child's range (it has
    /// not applied the split yet), or an ancestor placed here has not
    /// started (a chain of splits while this node was cut off): a child
    /// replica started now would run on state the ancestors' older log
    /// entries still change.
    Wait,
    /// Nothing here will ever hold the child's state as of the split: the
    /// nearest ancestor here was brought past the split by a snapshot
    /// (which carries only its own, narrowed range), or none is placed
    /// here. Started as it is, the replica would apply the child's log
    /// from its start onto missing or stale items; it must leave the
    /// voters and join empty, from a snapshot of the leader.
    Rejoin,
}

/// Most ancestors [`child_start`] walks (a bound on a corrupt catalog's
/// cycle; real chains are as long as the splits of one range).
const MAX_ANCESTORS: usize = 64;

/// How this node may start its replica of partition `p` (see
/// [`ChildStart`]).
pub fn child_start(
    host: &Host,
    catalog: &Catalog,
    p: &dynaraft_storage::PartitionMeta,
) -> Result<ChildStart, StorageError> {
    let stored = || dynaraft_storage::Span::stored(host.tree(), p.group);
    if p.parent.is_none() || stored()?.is_some() {
        return Ok(ChildStart::Start);
    }
    let mut next = p.parent;
    for _ in 0..MAX_ANCESTORS {
        let Some(a) = next else { break };
        if host.group(a).is_some() {
            let span = dynaraft_storage::Span::load(host.tree(), a)?;
            return Ok(if span.owns_hash(p.hash_lo) {
                ChildStart::Wait
            } else if stored()?.is_some() {
                // The parent's apply of the split narrows its span and
                // stores the child's in one batch, but the child's was read
                // first: a split applied between the two reads shows no
                // child and a narrowed parent, which is not a parent
                // brought past the split.
                ChildStart::Start
            } else {
                ChildStart::Rejoin
            });
        }
        let Some(ap) = catalog.partition(a) else {
            break;
        };
        if ap.replicas.contains(&host.id()) && !host.is_held_back(a) {
            return Ok(ChildStart::Wait);
        }
        next = ap.parent;
    }
    Ok(ChildStart::Rejoin)
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
/// A replica joining from nothing must be sent a snapshot past the group's
/// snapshot floor by whichever voter leads, so a change that adds one waits
/// until the voters that stay have purged their logs through it
/// (`voters_past_floor`).
async fn align_voters(
    host: &Host,
    group: &RaftGroup,
    catalog: &Catalog,
    replicas: &[u64],
    router: &Router,
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
    let current = group.voters();
    if want.iter().any(|r| !current.contains(r)) {
        let floor = dynaraft_storage::split::snapshot_floor(host.tree(), group.group)?;
        if let Some(floor) = floor {
            group
                .purge_start(floor, Duration::from_millis(SNAPSHOT_FLOOR_WAIT_MS))
                .await;
        }
        // The voters that stay are the ones that could lead and send the
        // new replicas entries; those leaving (a down node being replaced)
        // need not answer.
        let staying: Vec<u64> = current.intersection(&want).copied().collect();
        if !voters_past_floor(router, group.group, &staying).await {
            return Err(StorageError::Unavailable(format!(
                "group {}: not every voter has purged its log through the group's snapshot floor \
                 yet, so a joining replica could be sent entries from before a split",
                group.group
            )));
        }
    }
    tracing::info!(group = group.group, from = ?current, to = ?want, "changing voters");
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

/// Whether every one of `voters` that answers reports `group`'s log
/// purged through the highest snapshot floor any of them reports (so that
/// whichever leads sends a replica joining from nothing a snapshot past
/// every split, never the entries before it); true when none reports a
/// floor, false when none answers. A voter that is down is not waited for:
/// a replica replacing it must not wait for it to come back. Left open: a
/// voter down now that comes back, is elected before it has purged its
/// own log, and sends a joining replica the entries from before a split;
/// each replica purges within a reconciliation of applying the split.
pub(crate) async fn voters_past_floor(router: &Router, group: u64, voters: &[u64]) -> bool {
    let mut seen = Vec::new();
    for &v in voters {
        let Ok(groups) = router.node_status(v).await else {
            continue;
        };
        let Some(s) = groups.into_iter().find(|s| s.group == group) else {
            continue;
        };
        seen.push((s.purged, s.snapshot_floor));
    }
    if seen.is_empty() {
        return false;
    }
    let Some(floor) = seen.iter().filter_map(|(_, f)| *f).max() else {
        return true;
    };
    seen.iter()
        .all(|(purged, _)| purged.is_some_and(|p| p >= floor))
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
