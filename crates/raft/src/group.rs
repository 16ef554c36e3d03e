//! One Raft group on one node: its Raft instance, built from a log store on
//! the node WAL and the group's state machine, with a `propose` that returns
//! the command's outcome once a quorum has committed and the entry applied.

use crate::log_store::LogStore;
use crate::state_machine::GroupStateMachine;
use crate::types::{NodeId, Raft};
use dynaraft_storage::command::{Command, Entry};
use dynaraft_storage::{Outcome, StorageError};
use std::sync::Arc;

/// Elections a new group's first replica starts, [`FIRST_ELECTION_RETRY_MS`]
/// apart, while it knows no leader (then the election timeout takes over).
pub const FIRST_ELECTION_TRIES: u32 = 20;
/// Pause between them, in milliseconds.
pub const FIRST_ELECTION_RETRY_MS: u64 = 50;

/// Raft timing for cross-AZ links (milliseconds) and log retention.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a (metadata-only) snapshot after this many entries, which lets
    /// the in-memory log tail be purged: it bounds the tail's length.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log after a snapshot, for slightly lagging
    /// followers. 0 by default: openraft schedules a purge after each new
    /// snapshot at the snapshot less this many entries, and asserts that it
    /// never falls below a purge still pending (one asked for explicitly,
    /// by a compaction or a split's snapshot floor, and held back by a
    /// replication in flight); with entries kept, a snapshot built within
    /// that many entries of such a purge panicked the group's Raft core in
    /// debug builds. A leader still purges nothing a replication in flight
    /// reads; a follower that is down when its entries go gets a snapshot.
    pub keep_entries_after_snapshot: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            // A zone's loss must cost writes less than 3 s: followers wait
            // out the dead leader's lease (the longest election timeout)
            // before they grant a vote, so failover takes 1.5-2.5 s here.
            // openraft bounds heartbeat and append RPCs by the heartbeat
            // interval, so links between zones need a round trip under it.
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 750,
            election_timeout_max_ms: 1500,
            snapshot_after_entries: 5000,
            keep_entries_after_snapshot: 0,
        }
    }
}

/// How far each group's heartbeat interval is spread around the configured
/// one, in percent either way. Groups started together (a table's
/// partitions, a node's groups after a restart) would otherwise heartbeat in
/// lockstep forever; with different periods they drift apart.
pub const HEARTBEAT_JITTER_PERCENT: u64 = 10;

/// Pause between checks of whether a purge asked for took effect, in
/// milliseconds.
pub const PURGE_POLL_MS: u64 = 20;

/// The heartbeat interval of `group`: `base_ms` spread by up to
/// [`HEARTBEAT_JITTER_PERCENT`], fixed per group (a splitmix of its id).
pub fn jittered_heartbeat_ms(base_ms: u64, group: u64) -> u64 {
    let mut z = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let spread = base_ms * HEARTBEAT_JITTER_PERCENT / 100;
    (base_ms - spread + z % (2 * spread + 1)).max(1)
}

/// A network a group can run on (the in-process router or gRPC): openraft's
/// factory bound, named here so callers need not name openraft types.
pub trait GroupNetwork:
    openraft::network::RaftNetworkFactory<
        crate::types::TypeConfig,
        Network: openraft::network::NetSnapshot<
            crate::types::TypeConfig,
            SnapshotData = crate::types::SnapshotBytes,
        >,
    >
{
}

impl<N> GroupNetwork for N where
    N: openraft::network::RaftNetworkFactory<
            crate::types::TypeConfig,
            Network: openraft::network::NetSnapshot<
                crate::types::TypeConfig,
                SnapshotData = crate::types::SnapshotBytes,
            >,
        >
{
}

#[derive(Clone)]
pub struct RaftGroup {
    pub node: NodeId,
    pub group: u64,
    pub raft: Raft,
    /// The state machine's last applied index.
    pub applied: tokio::sync::watch::Receiver<u64>,
    /// How long a leader may go without a quorum's acknowledgement before
    /// it stops accepting proposals (the shortest election timeout), in
    /// milliseconds.
    quorum_lease_ms: u64,
    /// Coalesces concurrent proposals into batches.
    proposer: crate::propose::Proposer,
    /// Set once this replica has applied a membership that names it a
    /// voter (see [`RaftGroup::serves_stale_reads`]).
    joined: Arc<std::sync::atomic::AtomicBool>,
    /// One more than the highest term in which this replica, as the
    /// group's only voter, passed a read index (see
    /// [`RaftGroup::linearize`]); 0 for none.
    sole_read_term: Arc<std::sync::atomic::AtomicU64>,
}

/// Longest a snapshot may take to reach a follower and be installed, in
/// milliseconds. The transport sends a group's whole snapshot in one
/// message bounded by this; openraft's default (200 ms) let no snapshot of
/// more than a few megabytes through, so a follower that had fallen behind
/// a large group was sent the snapshot again and again and never caught up
/// (found by tests/scripts/cluster_disk_full.sh: 50 attempts at 150 MB).
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 120_000;

/// Why a proposal did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; retry at `leader` (if known).
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    /// The group cannot make progress now (no quorum, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<ProposeError> for StorageError {
    fn from(e: ProposeError) -> Self {
        StorageError::Unavailable(e.to_string())
    }
}

impl RaftGroup {
    pub async fn start<N: GroupNetwork>(
        node: NodeId,
        group: u64,
        timing: &Timing,
        log: LogStore,
        sm: GroupStateMachine,
        network: N,
    ) -> Result<RaftGroup, StorageError> {
        let config = openraft::Config {
            cluster_name: format!("dynaraft-group-{group}"),
            heartbeat_interval: jittered_heartbeat_ms(timing.heartbeat_interval_ms, group),
            election_timeout_min: timing.election_timeout_min_ms,
            election_timeout_max: timing.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(timing.snapshot_after_entries),
            max_in_snapshot_log_to_keep: timing.keep_entries_after_snapshot,
            // A replica that was cut off or paused asks before it bumps its
            // term, so on its return it cannot depose a healthy leader.
            enable_pre_vote: Some(true),
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StorageError::Fatal(e.to_string()))?;
        let applied = sm.applied();
        let raft = Raft::new(node, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| StorageError::Fatal(e.to_string()))?;
        Ok(RaftGroup {
            node,
            group,
            proposer: crate::propose::Proposer::start(raft.clone()),
            raft,
            applied,
            quorum_lease_ms: timing.election_timeout_min_ms,
            joined: Arc::default(),
            sole_read_term: Arc::default(),
        })
    }

    /// Makes `members` the group's first voters. Only one replica (the one
    /// the placement names first) calls this; on a group that already has
    /// a membership it does nothing.
    pub async fn initialize(
        &self,
        members: std::collections::BTreeMap<NodeId, crate::NodeInfo>,
    ) -> Result<(), StorageError> {
        use openraft::error::{InitializeError, RaftError};
        match self.raft.initialize(members).await {
            Ok(()) => {
                // Campaign now rather than after an election timeout, and
                // again shortly while no leader is known: the other
                // replicas start the group at about the same time, and a
                // vote request that finds none of them up would otherwise
                // wait out a whole timeout. A new group (a new table's, a
                // split's child) then serves in milliseconds.
                let g = self.clone();
                tokio::spawn(async move {
                    for _ in 0..FIRST_ELECTION_TRIES {
                        if g.leader().is_some() {
                            return;
                        }
                        if let Err(e) = g.raft.trigger().elect(false).await {
                            tracing::debug!(group = g.group, error = %e, "election not triggered");
                            return;
                        }
                        let pause = std::time::Duration::from_millis(FIRST_ELECTION_RETRY_MS);
                        tokio::time::sleep(pause).await;
                    }
                });
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StorageError::Unavailable(e.to_string())),
        }
    }

    /// (last log index, last applied index) of this replica.
    pub fn progress(&self) -> (u64, u64) {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        (
            m.last_log_index.unwrap_or(0),
            m.last_applied.map_or(0, |l| l.index),
        )
    }

    /// How far this replica's state machine is behind what its group has
    /// committed, in log entries (the leader's commit index as last
    /// reported, less what was applied here); `None` while no leader is
    /// known.
    pub fn catch_up_lag(&self) -> Option<u64> {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.current_leader?;
        let committed = m.cluster_committed.map_or(0, |l| l.index);
        let applied = m.last_applied.map_or(0, |l| l.index);
        Some(committed.saturating_sub(applied))
    }

    /// From the leader: the voter other than this one that has matched
    /// the most of its log (the best to hand leadership to), if any.
    pub fn best_successor(&self) -> Option<NodeId> {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let voters: std::collections::BTreeSet<NodeId> =
            m.membership_config.membership().voter_ids().collect();
        let replication = m.replication.as_ref()?;
        replication
            .iter()
            .filter(|(id, _)| **id != self.node && voters.contains(*id))
            .max_by_key(|(_, matched)| matched.map_or(0, |l| l.index))
            .map(|(id, _)| *id)
    }

    /// The leader this replica currently knows of.
    pub fn leader(&self) -> Option<NodeId> {
        use openraft::async_runtime::watch::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The voters of the group's membership as this replica knows it (both
    /// halves while a joint membership is in effect).
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().voter_ids().collect()
    }

    /// [`RaftGroup::voters`] once this replica has applied the membership
    /// that names them (so it is committed); `None` while it has not.
    pub fn applied_voters(&self) -> Option<std::collections::BTreeSet<NodeId>> {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let at = m.membership_config.log_id().as_ref().map(|l| l.index);
        let applied = m.last_applied.as_ref().map(|l| l.index);
        (at <= applied).then(|| m.membership_config.membership().voter_ids().collect())
    }

    /// The voters of the group's membership with their addresses and zones
    /// (both halves while a joint membership is in effect).
    pub fn voter_infos(&self) -> std::collections::BTreeMap<NodeId, crate::NodeInfo> {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(*id))
            .map(|(id, info)| (*id, info.clone()))
            .collect()
    }

    /// Why this replica's Raft stopped, if a storage error (or a panic)
    /// stopped it: its log, vote or state machine could not be written or
    /// read. A replica shut down on purpose reports nothing.
    pub fn failure(&self) -> Option<String> {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        match &m.running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(e) => Some(format!("group {}: {e}", self.group)),
        }
    }

    /// Whether this replica may answer an eventually consistent read. A
    /// replica joins its group as a learner and is made a voter only once
    /// it has caught up, so one that has applied a membership naming it a
    /// voter holds every write committed before it joined; before that (a
    /// replica moved here, a split child started from nothing) it may hold
    /// nothing yet, and an item written minutes ago would read as missing.
    /// The leader always may. Once true, it stays true for this replica's
    /// life, so a membership change in flight (its entry appended, not yet
    /// applied) does not turn a caught-up voter away.
    pub fn serves_stale_reads(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.joined.load(Ordering::Acquire) {
            return true;
        }
        let joined = self.is_leader()
            || self
                .applied_voters()
                .is_some_and(|voters| voters.contains(&self.node));
        if joined {
            self.joined.store(true, Ordering::Release);
        }
        joined
    }

    /// Whether this replica is its group's only voter and has not yet
    /// passed a read index in its current term ([`RaftGroup::linearize`]):
    /// after a restart, until its log's replay is applied. Eventual
    /// consistency would allow a read then to miss acknowledged writes; the
    /// embedded server, like DynamoDB Local, makes even those reads wait.
    pub fn sole_voter_catching_up(&self) -> bool {
        let (sole, term) = self.sole_voter_lead();
        sole && !term.is_some_and(|t| self.sole_read_passed(t))
    }

    /// Whether this replica, as its group's only voter, has passed a read
    /// index in `term` (see [`RaftGroup::linearize`]).
    fn sole_read_passed(&self, term: u64) -> bool {
        use std::sync::atomic::Ordering;
        self.sole_read_term.load(Ordering::Acquire) == term.saturating_add(1)
    }

    /// Whether this replica is the group's leader now.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node)
    }

    /// Hands the group's leadership to voter `to`, from the leader, while
    /// the membership is not changing: `to` campaigns as soon as it holds
    /// this leader's log, and the other voters stop honouring this
    /// leader's lease. Returns once the transfer is submitted; the caller
    /// watches for the new leader.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        if to == self.node {
            return Ok(());
        }
        let settled = {
            use openraft::async_runtime::watch::WatchReceiver;
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            let membership = m.membership_config.membership();
            membership.get_joint_config().len() == 1 && membership.voter_ids().any(|v| v == to)
        };
        if !settled {
            return Err(ProposeError::Unavailable(format!(
                "node {to} is not a settled voter of group {}",
                self.group
            )));
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    /// Makes `voters` the group's voters, from the leader: each new one
    /// joins as a learner and is waited for until it has caught up (from
    /// the log or a snapshot), then the voter set is replaced in one joint
    /// change; replicas left out leave the membership.
    pub async fn change_voters(
        &self,
        voters: std::collections::BTreeMap<NodeId, crate::NodeInfo>,
    ) -> Result<(), ProposeError> {
        let current = self.voters();
        for (id, info) in &voters {
            if !current.contains(id) {
                // A replica joining starts from nothing: a log the leader
                // still remembers it holding (it was a learner, or a member
                // removed and back) is gone, and that is expected of a
                // learner. Ignored when the leader has no progress for it.
                if let Ok(Err(e)) = self.raft.trigger().allow_next_revert(id, true).await {
                    tracing::debug!(group = self.group, node = id, error = %e, "allow_next_revert");
                }
                let added = self.raft.add_learner(*id, info.clone(), true).await;
                added.map_err(propose_error)?;
            }
        }
        let ids = voters
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>();
        let change = openraft::ChangeMembers::ReplaceAllVoters(ids);
        self.raft
            .change_membership(change, false)
            .await
            .map_err(propose_error)?;
        Ok(())
    }

    /// Whether this replica is the group's only voter.
    fn sole_voter(&self) -> bool {
        self.sole_voter_lead().0
    }

    /// Whether this replica is the group's only voter, and the term it
    /// leads in if it does, both from one view of the metrics.
    fn sole_voter_lead(&self) -> (bool, Option<u64>) {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let mut voters = m.membership_config.membership().voter_ids();
        let sole = voters.next() == Some(self.node) && voters.next().is_none();
        let leads = sole && m.current_leader == Some(self.node);
        (sole, leads.then_some(m.current_term))
    }

    /// Whether this replica leads but no quorum has acknowledged it for
    /// longer than the shortest election timeout: it is cut off, the others
    /// are electing or have elected a new leader, and anything proposed here
    /// could only wait for a commit that cannot come. Such a leader refuses
    /// new work as "not leader, leader unknown", so routers try the other
    /// replicas at once instead of waiting out the proposal timeout (the
    /// lease-based admission openraft itself adopts in a later release).
    fn lost_quorum(&self) -> bool {
        use openraft::Instant;
        use openraft::async_runtime::watch::WatchReceiver;
        if self.sole_voter() {
            return false;
        }
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.current_leader != Some(self.node) {
            return false;
        }
        m.last_quorum_acked.as_ref().is_some_and(|acked| {
            acked.elapsed() > std::time::Duration::from_millis(self.quorum_lease_ms)
        })
    }

    /// Waits until a read of the local state machine is linearizable: this
    /// replica is the leader, a quorum confirmed it (read index), and
    /// everything committed before the call has been applied.
    pub async fn linearize(&self) -> Result<(), ProposeError> {
        use std::sync::atomic::Ordering;
        // The only voter needs no quorum, and once it has applied its
        // term's first entry everything it acknowledges is applied before
        // the answer: reads skip the read index from then on. Not before:
        // entries acknowledged before a restart (or by a former leader)
        // are in its log but applied only after it wins its term, and a
        // read in between missed them (tests/scripts/split_crash.py: a
        // consistent Scan right after kill -9 lacked acknowledged puts).
        let sole = self.sole_voter_lead().1;
        if sole.is_some_and(|t| self.sole_read_passed(t)) {
            return Ok(());
        }
        if self.lost_quorum() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        match self
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
        {
            Ok(_) => {
                if let Some(t) = sole {
                    // The read index was taken in term `t` or a later one,
                    // after its first entry was applied.
                    self.sole_read_term
                        .fetch_max(t.saturating_add(1), Ordering::AcqRel);
                }
                Ok(())
            }
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                }),
                None => Err(ProposeError::Unavailable(e.to_string())),
            },
        }
    }

    /// Makes sure this replica's log is purged through at least index
    /// `floor`, snapshotting first if need be, waiting up to `wait`; whether
    /// it is. Once it is, a replica that joins with nothing is sent a
    /// snapshot taken at or after `floor` rather than the log from its
    /// start (see `dynaraft_storage::split::snapshot_floor` for why a split
    /// group needs that).
    pub async fn purge_start(&self, floor: u64, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.ask_purge_start(floor).await {
                Ok(true) => return true,
                Ok(false) if tokio::time::Instant::now() < deadline => {}
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!(group = self.group, error = %e, "snapshot or purge trigger failed");
                    return false;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(PURGE_POLL_MS)).await;
        }
    }

    /// One step of [`RaftGroup::purge_start`] without waiting: whether the
    /// log is purged through `floor`; if not, asks for a snapshot at what
    /// this replica has applied (unless the latest is there already) and
    /// for the purge up to it, both done in the background. Always asking
    /// up to the newest index matters: a purge scheduled while this replica
    /// led and a replication read those entries stays pending after it
    /// stops leading, and openraft takes it up again only for a higher
    /// index.
    pub async fn ask_purge_start(&self, floor: u64) -> Result<bool, ProposeError> {
        let (snapshot, purged) = self.log_progress();
        if purged.is_some_and(|p| p >= floor) {
            return Ok(true);
        }
        let (_, applied) = self.progress();
        let trigger = self.raft.trigger();
        let unavailable = |e: openraft::error::Fatal<crate::types::TypeConfig>| {
            ProposeError::Unavailable(e.to_string())
        };
        if snapshot.is_none_or(|s| s < applied) {
            trigger.snapshot().await.map_err(unavailable)?;
        }
        trigger.purge_log(applied).await.map_err(unavailable)?;
        Ok(false)
    }

    /// One step towards a log purged through what the group has applied
    /// (see [`RaftGroup::ask_purge_start`]); openraft purges only what a
    /// snapshot covers, and only once no replication still reads those
    /// entries.
    pub async fn compact(&self) {
        let (_, applied) = self.progress();
        if let Err(e) = self.ask_purge_start(applied).await {
            tracing::warn!(group = self.group, error = %e, "snapshot or purge trigger failed");
        }
    }

    /// Refuses new proposals and waits at most `limit` for those already
    /// taken to be answered (see [`Proposer::close_and_drain`]); whether
    /// they all were.
    ///
    /// [`Proposer::close_and_drain`]: crate::propose::Proposer::close_and_drain
    pub async fn close_proposals(&self, limit: std::time::Duration) -> bool {
        self.proposer.close_and_drain(limit).await
    }

    /// Stops the group's Raft tasks.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.group, error = %e, "raft shutdown failed");
        }
    }

    /// (last snapshot index, last purged index) of this node's log.
    pub fn log_progress(&self) -> (Option<u64>, Option<u64>) {
        use openraft::async_runtime::watch::WatchReceiver;
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
    }

    /// Replicates `cmd`, stamped with `ts_ms`, and returns its outcome and
    /// log index once a quorum has committed it and it has been applied here.
    pub async fn propose(&self, ts_ms: u64, cmd: Command) -> Result<(Outcome, u64), ProposeError> {
        if self.lost_quorum() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        let write = self.proposer.propose(Entry { ts_ms, cmd });
        tokio::pin!(write);
        // While the write waits for its commit, a leader that loses its
        // quorum says so within a fraction of the lease instead of at the
        // proposal timeout: the caller learns sooner that the outcome is
        // unknown (the entry may still commit if the cut heals in time).
        let check = std::time::Duration::from_millis((self.quorum_lease_ms / 4).max(1));
        loop {
            tokio::select! {
                r = &mut write => return r,
                _ = tokio::time::sleep(check) => {
                    if self.lost_quorum() {
                        return Err(ProposeError::Unavailable(
                            "the leader lost its quorum while the write waited to commit".into(),
                        ));
                    }
                }
            }
        }
    }
}

/// A failed client write or membership change: a redirect when openraft
/// names a leader to forward to, unavailable otherwise.
fn propose_error(
    e: openraft::error::RaftError<
        crate::types::TypeConfig,
        openraft::error::ClientWriteError<crate::types::TypeConfig>,
    >,
) -> ProposeError {
    match e {
        openraft::error::RaftError::APIError(e) => write_error(e),
        openraft::error::RaftError::Fatal(f) => ProposeError::Unavailable(f.to_string()),
    }
}

/// A rejected write: a redirect when openraft refused it before appending
/// it, unavailable (outcome unknown) otherwise. An entry discarded from
/// this node's log after it was appended (`LogEntryDiscarded`) may still
/// have committed through another leader, so it is not a redirect: a
/// caller retrying it elsewhere could apply it twice.
pub(crate) fn write_error(
    e: openraft::errors::ClientWriteError<crate::types::TypeConfig>,
) -> ProposeError {
    match e {
        openraft::errors::ClientWriteError::ForwardToLeader(f) => ProposeError::NotLeader {
            leader: f.leader_id,
        },
        other => ProposeError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_spread_within_the_jitter_and_differ_between_groups() {
        let beats: Vec<u64> = (0..64).map(|g| jittered_heartbeat_ms(250, g)).collect();
        assert!(beats.iter().all(|&b| (225..=275).contains(&b)), "{beats:?}");
        let distinct: std::collections::BTreeSet<_> = beats.iter().collect();
        assert!(distinct.len() > 20, "{distinct:?}");
    }
}
