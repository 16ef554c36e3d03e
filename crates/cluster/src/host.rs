//! A storage node: hosts replicas of many Raft groups (multi-raft) over one
//! sled tree and one write-ahead log, and serves proposals and reads for
//! them. Group 0, when hosted, is the control plane's replica on this node.
//!
//! Lifecycle of a replica: [`Host::start_group`] recovers its log from the
//! WAL (or starts it empty), starts Raft, and registers it with the gRPC
//! transport; the replica placement names first initialises the membership.
//! [`Host::remove_group`] stops it, logs a removal record so recovery
//! forgets its log, and deletes its keys from sled.
//!
//! Checkpoints: every `checkpoint_interval_ms`, each group's durable purge
//! point is logged again in the open segment and the WAL segments below
//! every group's durable purge point are deleted. A purge point becomes
//! durable only once its record is written, after sled has been flushed and
//! fsynced (`LogSet::with_durable_flush`, `dynaraft_raft::purger`).
//!
//! Log tails are bounded by bytes as well as by entries: a group whose
//! unpurged tail passes [`MAX_LOG_TAIL_BYTES`] is compacted (snapshot,
//! purge) by the next checkpoint, which runs as soon as some tail is over
//! the bound (checked every [`CHECKPOINT_POLL_MS`]) rather than on the
//! interval. Openraft's policy counts entries (`snapshot_after_entries`,
//! `keep_entries_after_snapshot`), so without it 400 KB items kept gigabytes
//! of log in memory and in the WAL, and a restart had to read them all.

use crate::ClusterError;
use crate::wire::GroupStats;
use arc_swap::ArcSwap;
use dynaraft_model::{Item, KeySchema};
pub use dynaraft_raft::Timing;
use dynaraft_raft::grpc::{Channels, Registry};
use dynaraft_raft::log_store::{DurableFlush, LogSet, VoteFile};
use dynaraft_raft::state_machine::GroupStateMachine;
use dynaraft_raft::{NodeId, NodeInfo, RaftGroup};
use dynaraft_storage::command::Command;
use dynaraft_storage::committer::Committer;
pub use dynaraft_storage::kv::Engine;
use dynaraft_storage::kv::{OpenError, Store, StoreMemory};
use dynaraft_storage::read::{self, IndexRead, Page, ReadOptions};
use dynaraft_storage::txn;
pub use dynaraft_storage::wal::WAL_SEGMENT_BYTES;
use dynaraft_storage::wal::Wal;
use dynaraft_storage::{Outcome, Span, StorageError, machine};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often covered WAL segments are deleted, by default.
pub const CHECKPOINT_INTERVAL_MS: u64 = 10_000;
/// Largest unpurged log tail of a group before a checkpoint compacts it, in
/// bytes (a bound on the WAL, on the tails' memory and on what a restart
/// reads, whatever the size of the entries).
pub const MAX_LOG_TAIL_BYTES: u64 = 64 * 1024 * 1024;
/// The node's memory budget unless configured, in bytes: what its
/// resident set should stay under with any workload.
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;
/// Percent of the memory budget given to the store's cache.
pub const STORE_CACHE_PERCENT: u64 = 20;
/// Percent of the memory budget given to each of fjall's memtables.
pub const MEMTABLE_PERCENT: u64 = 4;
/// Percent of the memory budget the groups' unpurged log tails may hold
/// together (each one also stays under [`MAX_LOG_TAIL_BYTES`]); the rest
/// is for requests, connections, the allocator and the program itself.
pub const LOG_TAILS_PERCENT: u64 = 10;
/// How often the checkpoint loop looks for a tail over
/// [`MAX_LOG_TAIL_BYTES`], in milliseconds.
pub const CHECKPOINT_POLL_MS: u64 = 1_000;
/// How long a node goes without applying a write before it compacts
/// (`Host::compact_idle`), in milliseconds, unless configured.
pub const IDLE_COMPACTION_AFTER_MS: u64 = 5_000;
/// Least a node must have written to its store since its last idle
/// compaction for the next one to run, in bytes (a trickle of writes
/// should not flush a memtable of a few items every few seconds).
pub const IDLE_COMPACTION_MIN_WRITTEN_BYTES: u64 = 1024 * 1024;
/// An idle compaction also merges the store's whole tree (a major
/// compaction, which rewrites it) only when what was written since the last
/// merge is at least this percentage of the bytes in the store's tables: the
/// merge's cost stays in proportion to the writes that made the garbage.
pub const IDLE_MERGE_WRITTEN_PERCENT: u64 = 25;
/// Smallest open WAL segment an idle compaction closes (so that the next
/// checkpoint can delete it), in bytes.
pub const IDLE_CLOSE_SEGMENT_BYTES: u64 = 1024 * 1024;
/// Longest an idle compaction waits for the groups' logs to be purged
/// durably through what they applied, in milliseconds (a leader keeps what
/// a lagging follower still needs; the compaction goes on without it).
pub const IDLE_PURGE_WAIT_MS: u64 = 10_000;
/// Idle compactions a node has finished (a counter).
pub const IDLE_COMPACTIONS_METRIC: &str = "dynaraft_idle_compactions_total";
/// How long opening waits for the store's and the WAL's file locks (a
/// previous instance in the same process may still be releasing them), in
/// milliseconds.
pub const LOCK_WAIT_MS: u64 = 3_000;
/// Pause between attempts to take the store's or the WAL's file lock, in
/// milliseconds.
pub const LOCK_RETRY_MS: u64 = 20;
pub use dynaraft_storage::kv::DEFAULT_ENGINE;
/// How long shutdown waits for the groups' Raft tasks to release storage,
/// in milliseconds (all groups together).
pub const GROUP_STOP_WAIT_MS: u64 = 3_000;
/// How long shutdown waits for the store's last flush, in milliseconds (a
/// store that met a disk error may never finish it).
pub const STORE_FLUSH_WAIT_MS: u64 = 2_000;
/// How long shutdown waits for the node's own tasks to end, in milliseconds.
pub const TASKS_STOP_WAIT_MS: u64 = 5_000;
/// How long a replica leaving its group waits for the writes it had taken
/// to be answered before its Raft stops, in milliseconds (see
/// [`Host::remove_group`]).
pub const PROPOSALS_DRAIN_WAIT_MS: u64 = 2_000;

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub id: NodeId,
    /// Availability zone label, e.g. `az-a`.
    pub az: String,
    /// Address peers and routers use to reach this node's gRPC endpoint.
    pub addr: String,
    /// Data directory; `None` keeps everything in memory (nothing durable).
    pub data_dir: Option<PathBuf>,
    pub timing: Timing,
    pub checkpoint_interval_ms: u64,
    /// How long the node goes without a write before it compacts
    /// ([`Host::compact_idle`]), in milliseconds; 0: never.
    pub idle_compaction_after_ms: u64,
    /// Size at which a WAL segment is closed, in bytes.
    pub wal_segment_bytes: u64,
    /// Peer address -> address to dial instead (see `Channels::with_routes`).
    pub routes: HashMap<String, String>,
    /// The state machine's engine for a new data directory (an existing
    /// one keeps its own; see `kv::Engine::of_dir`).
    pub engine: Engine,
    /// What the node's resident memory should stay under, in bytes; the
    /// store's cache and the log tails' bound are shares of it.
    pub memory_limit_bytes: u64,
    /// Mutual TLS with every peer and client of the node's gRPC port
    /// (`dynaraft_raft::tls`); `None` serves and dials plaintext.
    pub peer_tls: Option<Arc<dynaraft_raft::tls::PeerTls>>,
    /// Encryption at rest: the keys that seal the store's values and the
    /// WAL's commands (`dynaraft_storage::cipher`); `None` writes plaintext.
    pub encryption: Option<Arc<dynaraft_storage::cipher::KeyRing>>,
}

impl HostConfig {
    pub fn new(id: NodeId, az: &str, addr: &str, data_dir: Option<PathBuf>) -> HostConfig {
        HostConfig {
            id,
            az: az.into(),
            addr: addr.into(),
            data_dir,
            timing: Timing::default(),
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS,
            idle_compaction_after_ms: IDLE_COMPACTION_AFTER_MS,
            wal_segment_bytes: WAL_SEGMENT_BYTES,
            routes: HashMap::new(),
            engine: DEFAULT_ENGINE,
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            peer_tls: None,
            encryption: None,
        }
    }

    /// The store's shares of the memory budget: [`STORE_CACHE_PERCENT`]
    /// for its cache, [`MEMTABLE_PERCENT`] for a memtable.
    pub fn store_memory(&self) -> StoreMemory {
        StoreMemory {
            cache_bytes: self.memory_limit_bytes / 100 * STORE_CACHE_PERCENT,
            memtable_bytes: self.memory_limit_bytes / 100 * MEMTABLE_PERCENT,
        }
    }

    /// Most bytes every group's unpurged log tail holds together:
    /// [`LOG_TAILS_PERCENT`] of the memory budget.
    pub fn log_tails_bytes(&self) -> u64 {
        self.memory_limit_bytes / 100 * LOG_TAILS_PERCENT
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            addr: self.addr.clone(),
            az: self.az.clone(),
        }
    }
}

/// Runs a scan of the store on the blocking pool.
async fn scan_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, ClusterError> {
    let done = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Fatal(format!("a store scan did not finish: {e}")))?;
    Ok(done?)
}

/// A running storage node. Cloning shares it.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: HostConfig,
    /// The state machines' store (every group's keys).
    store: Store,
    /// Writes every group's applied batches, merged when they coincide.
    committer: Committer,
    wal: Wal,
    logs: tokio::sync::Mutex<LogSet>,
    channels: Channels,
    registry: Registry,
    /// Hosted groups; replaced whole on change so lookups take no lock.
    groups: ArcSwap<HashMap<u64, RaftGroup>>,
    /// Serialises starting and removing groups.
    changing: tokio::sync::Mutex<()>,
    /// Removed groups whose data is still being deleted (outside
    /// `changing`, so other groups start meanwhile); none of them may start
    /// again until it is gone.
    dropping: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Groups this node held before it lost its data directory: their
    /// replicas may not start until their leaders no longer count this node
    /// as a voter (see `node::rejoin_lost_replicas`).
    held_back: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// Poked after every proposal this node commits, so the index feeder
    /// delivers a write's change record at once instead of at its next
    /// poll (one stored permit: pokes between passes are not lost).
    feed_wakeup: tokio::sync::Notify,
    /// The load of the groups this node serves (splits by heat).
    heat: crate::heat::Heat,
    stop: watch::Sender<bool>,
    /// Node tasks still running; shutdown waits for zero.
    tasks: watch::Sender<usize>,
}

impl Host {
    /// Opens the node's storage and recovers every group's log. Groups are
    /// started by [`Host::start_group`]. Must run inside a tokio runtime.
    pub async fn open(cfg: HostConfig) -> Result<Host, StorageError> {
        let (store, wal, records, votes) = match &cfg.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                dynaraft_storage::identity::claim(dir, cfg.id, cfg.encryption.as_deref())?;
                let memory = cfg.store_memory();
                let store = when_unlocked(|| Store::open_in(dir, cfg.engine, memory))
                    .await?
                    .sealed_with(cfg.encryption.clone());
                tracing::info!(
                    engine = ?store.engine(),
                    encrypted = cfg.encryption.is_some(),
                    "state machine store opened"
                );
                let wal_dir = dir.join("wal");
                let (wal, records) = when_unlocked(|| {
                    Wal::open_sealed(&wal_dir, cfg.wal_segment_bytes, cfg.encryption.clone())
                })
                .await?;
                let votes = VoteFile::open(Some(dir.join("votes.json")))?;
                (store, wal, records, votes)
            }
            None => (
                Store::temporary()?,
                Wal::disabled(),
                Vec::new(),
                VoteFile::open(None)?,
            ),
        };
        let mut logs = LogSet::recover(wal.clone(), votes, &records)?;
        if cfg.data_dir.is_some() {
            let durable = store.clone();
            let flush: DurableFlush =
                Arc::new(move || durable.flush_durably().map_err(std::io::Error::other));
            logs = logs.with_durable_flush(flush);
        }
        let committer = Committer::start(store.clone())?;
        let (stop, _) = watch::channel(false);
        let channels = Channels::with_routes(cfg.routes.clone()).with_tls(cfg.peer_tls.clone());
        let host = Host {
            inner: Arc::new(Inner {
                cfg,
                store,
                committer,
                wal,
                logs: tokio::sync::Mutex::new(logs),
                channels,
                registry: Registry::default(),
                groups: ArcSwap::from_pointee(HashMap::new()),
                changing: tokio::sync::Mutex::new(()),
                dropping: std::sync::Mutex::new(std::collections::HashSet::new()),
                held_back: std::sync::Mutex::new(std::collections::BTreeSet::new()),
                feed_wakeup: tokio::sync::Notify::new(),
                heat: crate::heat::Heat::default(),
                stop,
                tasks: watch::channel(0).0,
            }),
        };
        if host.inner.cfg.data_dir.is_some() {
            host.spawn(checkpoint_loop);
            host.spawn(node_metrics_loop);
        }
        Ok(host)
    }

    pub fn id(&self) -> NodeId {
        self.inner.cfg.id
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.cfg
    }

    /// Why this node can no longer write, if it cannot: its WAL or its
    /// store failed (see `Wal::failure`), or a replica's Raft stopped on a
    /// storage error (a vote, a log entry or an apply that could not be
    /// written or read). Readiness reports it.
    pub fn storage_failure(&self) -> Option<String> {
        self.inner
            .wal
            .failure()
            .or_else(|| self.inner.committer.failure())
            .or_else(|| {
                let groups = self.inner.groups.load();
                groups.values().find_map(RaftGroup::failure)
            })
    }

    pub fn tree(&self) -> &Store {
        &self.inner.store
    }

    /// Whether this node is caught up and serving (its readiness for a
    /// rolling restart): it can write, and every group it holds a replica
    /// of knows its leader and has applied all but at most
    /// [`READY_MAX_LAG_ENTRIES`] of what the group committed. Why not, if
    /// it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(why) = self.storage_failure() {
            return Err(why);
        }
        let groups = self.inner.groups.load();
        if groups.is_empty() {
            return Err("no group started yet".into());
        }
        for (id, g) in groups.iter() {
            match g.catch_up_lag() {
                None => return Err(format!("group {id} knows no leader yet")),
                Some(lag) if lag > READY_MAX_LAG_ENTRIES => {
                    return Err(format!("group {id} is {lag} entries behind"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Hands the leadership of every group this node leads to the voter
    /// that has most of its log, all at once, and waits up to
    /// [`HAND_OFF_WAIT_MS`] for each to take it: a node about to stop
    /// (a rolling restart) leaves no group waiting out an election
    /// timeout. Returns how many groups it still leads.
    pub async fn hand_off_leaderships(&self) -> usize {
        let wait = Duration::from_millis(HAND_OFF_WAIT_MS);
        let led: Vec<RaftGroup> = self
            .inner
            .groups
            .load()
            .values()
            .filter(|g| g.is_leader())
            .cloned()
            .collect();
        let mut handing = tokio::task::JoinSet::new();
        let mut kept = 0;
        for g in led {
            match g.best_successor() {
                Some(to) => {
                    handing.spawn(async move {
                        crate::reconcile::hand_leadership_to(&g, to, wait).await
                    });
                }
                None => {
                    tracing::debug!(group = g.group, "no voter to hand leadership to");
                    kept += 1;
                }
            }
        }
        let mut handed = 0;
        while let Some(moved) = handing.join_next().await {
            match moved {
                Ok(true) => handed += 1,
                _ => kept += 1,
            }
        }
        tracing::info!(handed, kept, "leaderships handed off before stopping");
        kept
    }

    /// The node's gRPC channels (one per peer), shared by Raft and data calls.
    pub fn channels(&self) -> Channels {
        self.inner.channels.clone()
    }

    /// The gRPC registry of hosted groups (for the transport server).
    pub fn registry(&self) -> Registry {
        self.inner.registry.clone()
    }

    /// A receiver that flips to true when the node shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Runs `f(host, shutdown)` as a node task: shutdown waits for it.
    pub fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(Host, watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let tasks = self.inner.tasks.clone();
        tasks.send_modify(|n| *n += 1);
        let fut = f(self.clone(), self.shutdown_signal());
        tokio::spawn(async move {
            // `fut` (and the Host it holds) is consumed before the count
            // drops, so shutdown never returns while a task holds sled.
            fut.await;
            tasks.send_modify(|n| *n -= 1);
        });
    }

    pub fn group(&self, group: u64) -> Option<RaftGroup> {
        self.inner.groups.load().get(&group).cloned()
    }

    pub fn hosted(&self) -> Vec<u64> {
        let mut g: Vec<u64> = self.inner.groups.load().keys().copied().collect();
        g.sort_unstable();
        g
    }

    /// Starts this node's replica of `group` if it is not running. When
    /// `init` is given and the group has no membership yet, it becomes the
    /// group's first membership.
    pub async fn start_group(
        &self,
        group: u64,
        init: Option<BTreeMap<NodeId, NodeInfo>>,
    ) -> Result<RaftGroup, StorageError> {
        let _changing = self.inner.changing.lock().await;
        if let Some(g) = self.group(group) {
            return Ok(g);
        }
        if self.is_dropping(group) {
            return Err(StorageError::Unavailable(format!(
                "group {group}'s earlier replica here is still being deleted"
            )));
        }
        let log = self.inner.logs.lock().await.store(group);
        let sm = GroupStateMachine::new(group, self.inner.store.clone())?
            .with_committer(self.inner.committer.clone());
        let network = self.inner.channels.factory(group);
        let g =
            RaftGroup::start(self.id(), group, &self.inner.cfg.timing, log, sm, network).await?;
        self.inner.registry.register(group, g.raft.clone());
        let mut map = HashMap::clone(&self.inner.groups.load());
        map.insert(group, g.clone());
        self.inner.groups.store(Arc::new(map));
        if let Some(members) = init {
            g.initialize(members).await?;
        }
        tracing::debug!(node = self.id(), group, "replica started");
        Ok(g)
    }

    /// Stops this node's replica of `group` and deletes its log and data.
    /// The data is deleted after the group-change lock is released (a
    /// large table's took seconds, and every other group's start waited on
    /// it); the group cannot start here again until it is gone.
    pub async fn remove_group(&self, group: u64) -> Result<(), StorageError> {
        {
            let _changing = self.inner.changing.lock().await;
            let Some(g) = self.group(group) else {
                return Ok(());
            };
            let mut map = HashMap::clone(&self.inner.groups.load());
            map.remove(&group);
            self.inner.groups.store(Arc::new(map));
            // Writes this replica had taken (it led the group until it
            // handed the leadership over) are answered with their outcome
            // before Raft stops under them: they commit through the new
            // leader and apply here, which needs Raft's messages still
            // delivered. New ones are refused as not-the-leader, which the
            // router retries elsewhere.
            let limit = Duration::from_millis(PROPOSALS_DRAIN_WAIT_MS);
            if !g.close_proposals(limit).await {
                tracing::warn!(
                    node = self.id(),
                    group,
                    "writes were still unanswered when the replica left its group"
                );
            }
            self.inner.registry.unregister(group);
            self.inner.heat.forget(group);
            g.shutdown().await;
            self.inner.logs.lock().await.remove(group).await?;
            if let Ok(mut d) = self.inner.dropping.lock() {
                d.insert(group);
            }
        }
        // Batch by batch, off the runtime's threads. A failure leaves the
        // group marked: it must not start over half-deleted data.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let store = self.inner.store.clone();
            let from = after.take();
            let last = tokio::task::spawn_blocking(move || {
                machine::drop_group_step(&store, group, from.as_deref())
            })
            .await
            .map_err(|e| StorageError::Unavailable(format!("dropping group {group}: {e}")))??;
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        if let Ok(mut d) = self.inner.dropping.lock() {
            d.remove(&group);
        }
        tracing::debug!(node = self.id(), group, "replica removed");
        Ok(())
    }

    /// Keeps `groups`' replicas from starting here (`Host::release`
    /// lets each go).
    pub fn hold_back(&self, groups: impl IntoIterator<Item = u64>) {
        if let Ok(mut h) = self.inner.held_back.lock() {
            h.extend(groups);
        }
    }

    /// Whether `group`'s replica is held back (see [`Host::hold_back`]).
    pub fn is_held_back(&self, group: u64) -> bool {
        // A poisoned lock means a panic mid-update: assume the worst.
        self.inner
            .held_back
            .lock()
            .map_or(true, |h| h.contains(&group))
    }

    /// Lets `group`'s replica start again.
    pub fn release(&self, group: u64) {
        if let Ok(mut h) = self.inner.held_back.lock() {
            h.remove(&group);
        }
    }

    /// Whether this node holds no Raft state at all (a new or lost data
    /// directory).
    pub async fn holds_no_log(&self) -> bool {
        self.inner.logs.lock().await.is_empty()
    }

    fn is_dropping(&self, group: u64) -> bool {
        // A poisoned lock means a panic mid-update: assume the worst.
        self.inner
            .dropping
            .lock()
            .map_or(true, |d| d.contains(&group))
    }

    fn hosted_group(&self, group: u64) -> Result<RaftGroup, ClusterError> {
        self.group(group).ok_or(ClusterError::NoGroup(group))
    }

    /// Replicates `cmd` in `group` (this replica must lead it), stamped with
    /// this node's clock, and returns the outcome and log index.
    pub async fn propose(&self, group: u64, cmd: Command) -> Result<(Outcome, u64), ClusterError> {
        let g = self.hosted_group(group)?;
        let r = match g.propose(dynaraft_storage::wall_clock_ms(), cmd).await {
            // Refused because the group split: an error the router retries
            // on the new map, never an outcome a caller could take for an
            // answer.
            Ok((Outcome::WrongRange(why), _)) => Err(StorageError::WrongRange(why).into()),
            r => r.map_err(|e| with_group(e.into(), group)),
        };
        if r.is_ok() {
            self.inner.feed_wakeup.notify_one();
        }
        r
    }

    /// Resolves after the next committed proposal on this node (or at once
    /// if one happened since the last call).
    pub async fn proposal_committed(&self) {
        self.inner.feed_wakeup.notified().await
    }

    /// Waits until a local read of `group` is linearizable, when asked for
    /// or while this replica, its group's only voter, replays its log after
    /// a restart ([`RaftGroup::sole_voter_catching_up`]: the embedded server
    /// then answers no read without the writes it acknowledged); an
    /// eventually consistent one is refused, with the leader as a hint,
    /// while this replica is still catching up after joining
    /// ([`RaftGroup::serves_stale_reads`]).
    async fn read_barrier(&self, group: u64, consistent: bool) -> Result<(), ClusterError> {
        let g = self.hosted_group(group)?;
        if consistent || g.sole_voter_catching_up() {
            g.linearize()
                .await
                .map_err(|e| with_group(e.into(), group))?;
        } else if !g.serves_stale_reads() {
            return Err(ClusterError::NotLeader {
                group,
                leader: g.leader(),
            });
        }
        Ok(())
    }

    /// The item at `storage_key`, and the intent of a transaction holding
    /// it, if any.
    pub async fn read_item(
        &self,
        group: u64,
        storage_key: &[u8],
        consistent: bool,
    ) -> Result<(Option<Item>, Option<txn::IntentView>), ClusterError> {
        self.read_barrier(group, consistent).await?;
        let tree = &self.inner.store;
        // The intent first: an item read after it is at least as new, so a
        // transaction resolved in between is seen applied, not missed.
        let span = owns(Span::load(tree, group)?, storage_key)?;
        let intent = txn::read_intent(tree, span, storage_key)?;
        Ok((machine::read_item(tree, span, storage_key)?, intent))
    }

    /// Items with their stamps and intents, read at the leader
    /// (TransactGetItems).
    pub async fn read_slots(
        &self,
        group: u64,
        keys: &[Vec<u8>],
    ) -> Result<Vec<txn::Slot>, ClusterError> {
        self.read_barrier(group, true).await?;
        let tree = &self.inner.store;
        let span = Span::load(tree, group)?;
        let slots: Result<Vec<_>, ClusterError> = keys
            .iter()
            .map(|k| Ok(txn::read_slot(tree, owns(span, k)?, k)?))
            .collect();
        slots
    }

    /// A transaction record, read at the leader.
    pub async fn read_record(
        &self,
        group: u64,
        id: txn::TxnId,
    ) -> Result<Option<txn::TxnRecord>, ClusterError> {
        self.read_barrier(group, true).await?;
        let ov = machine::Overlay::new(&self.inner.store);
        Ok(txn::record(&ov, group, id)?)
    }

    /// Reads `[lo, hi)` of the group's items, or of one of its local
    /// indexes, after the consistency barrier.
    pub async fn read_range(
        &self,
        group: u64,
        schema: &KeySchema,
        index: Option<&IndexRead>,
        bounds: (&[u8], Option<&[u8]>),
        opts: &ReadOptions,
        consistent: bool,
    ) -> Result<Page, ClusterError> {
        self.read_barrier(group, consistent).await?;
        let tree = &self.inner.store;
        let span = Span::load(tree, group)?;
        Ok(read::read_range(tree, span, schema, index, bounds, opts)?)
    }

    /// Change records of a hosted group after `after` (see
    /// [`crate::wire::Request::Changes`]), as of its last apply.
    pub fn read_changes(
        &self,
        group: u64,
        after: u64,
        limits: (usize, usize),
    ) -> Result<crate::wire::ChangeLogPage, ClusterError> {
        self.hosted_group(group)?;
        let tree = &self.inner.store;
        let (last, floor) = dynaraft_storage::global::change_log_bounds(tree, group)?;
        let records =
            dynaraft_storage::global::read_changes_raw(tree, group, after.max(floor), limits)?;
        Ok(crate::wire::ChangeLogPage {
            records,
            last,
            floor,
        })
    }

    /// Where a hosted group would split (see
    /// `dynaraft_storage::split::split_point`), as of its last apply. The
    /// scan reads the whole partition, so it runs off the async workers.
    pub async fn split_point(
        &self,
        group: u64,
        index_partition: bool,
    ) -> Result<Option<u64>, ClusterError> {
        self.hosted_group(group)?;
        let tree = self.inner.store.clone();
        scan_blocking(move || {
            let span = Span::load(&tree, group)?;
            dynaraft_storage::split::split_point(&tree, span, index_partition)
        })
        .await
    }

    /// The counters of a hosted group's range from `at`, tallied on a
    /// snapshot for a split prepared there (see
    /// `dynaraft_storage::split::prepared_tally`); `None` when this replica
    /// has not applied that prepare. Off the async workers, as it reads
    /// half the partition.
    pub async fn split_tally(
        &self,
        group: u64,
        at: u64,
        index_partition: bool,
    ) -> Result<Option<dynaraft_storage::split::SplitTally>, ClusterError> {
        self.hosted_group(group)?;
        let tree = self.inner.store.clone();
        scan_blocking(move || {
            dynaraft_storage::split::prepared_tally(&tree, group, at, index_partition)
        })
        .await
    }

    /// Item count and item bytes of a hosted group, and (entries, bytes) of
    /// its first `local_indexes` local indexes, as of its last apply, with
    /// the load this replica served.
    pub fn stats(&self, group: u64, local_indexes: u8) -> Result<GroupStats, ClusterError> {
        self.hosted_group(group)?;
        let tree = &self.inner.store;
        let (count, bytes) = machine::group_stats(tree, group)?;
        let indexes = (0..local_indexes)
            .map(|id| dynaraft_storage::index::index_stats(tree, group, id))
            .collect::<Result<_, _>>()?;
        let span = Span::load(tree, group)?;
        let load = self
            .inner
            .heat
            .report(group, span.lo, span.hi, std::time::Instant::now());
        Ok(GroupStats {
            count,
            bytes,
            indexes,
            load,
        })
    }

    /// The size and load of every data group this node holds a replica
    /// of, for its `/metrics` (groups whose counters cannot be read at the
    /// moment, such as one being removed, are left out).
    pub fn group_gauges(&self) -> Vec<GroupGauge> {
        let me = self.id();
        let mut out: Vec<GroupGauge> = self
            .inner
            .groups
            .load()
            .iter()
            .filter(|(id, _)| **id != dynaraft_storage::machine::CATALOG_GROUP)
            .filter_map(|(id, g)| {
                let s = self.stats(*id, 0).ok()?;
                Some(GroupGauge {
                    group: *id,
                    items: s.count,
                    bytes: s.bytes,
                    ops_per_s: s.load.ops_per_s,
                    leader: g.leader() == Some(me),
                })
            })
            .collect();
        out.sort_by_key(|g| g.group);
        out
    }

    /// Hands hosted group `group`'s leadership to node `to` (this replica
    /// must lead it; see `RaftGroup::transfer_leader`).
    pub async fn transfer_leader(&self, group: u64, to: u64) -> Result<(), ClusterError> {
        let g = self.hosted_group(group)?;
        g.transfer_leader(to)
            .await
            .map_err(|e| with_group(e.into(), group))
    }

    /// Whether this node holds a log or a vote of `group` (a replica that
    /// never had either is new here: its data directory is new, or lost).
    pub async fn holds_log(&self, group: u64) -> bool {
        self.inner.logs.lock().await.holds(group)
    }

    /// At `group`'s leader: removes voter `remove` and/or adds `add` (as a
    /// learner until it has caught up, then a voter, in one joint change);
    /// the voters after. Refused when the change would leave no voter,
    /// names a voter twice or removes a node that is not one.
    pub async fn change_voters(
        &self,
        group: u64,
        remove: Option<u64>,
        add: Option<(u64, NodeInfo)>,
    ) -> Result<Vec<u64>, ClusterError> {
        let g = self.hosted_group(group)?;
        if !g.is_leader() {
            return Err(ClusterError::Unavailable(format!(
                "node {} does not lead group {group} (leader: {:?})",
                self.id(),
                g.leader()
            )));
        }
        let mut voters = g.voter_infos();
        if let Some(id) = remove
            && voters.remove(&id).is_none()
        {
            return Err(ClusterError::Unavailable(format!(
                "node {id} is not a voter of group {group} (voters: {:?})",
                voters.keys().collect::<Vec<_>>()
            )));
        }
        if let Some((id, info)) = add {
            if voters.contains_key(&id) {
                return Err(ClusterError::Unavailable(format!(
                    "node {id} is already a voter of group {group}"
                )));
            }
            voters.insert(id, info);
        }
        if voters.is_empty() {
            return Err(ClusterError::Unavailable(format!(
                "group {group} cannot be left without a voter"
            )));
        }
        let ids = voters.keys().copied().collect();
        g.change_voters(voters)
            .await
            .map_err(|e| with_group(e.into(), group))?;
        Ok(ids)
    }

    /// Counts a request served for hosted data group `group`, aimed at the
    /// key hashing to `hash` (`None`: it spans keys), for splits by heat.
    pub fn note_load(&self, group: u64, hash: Option<u64>) {
        if group != machine::CATALOG_GROUP && self.inner.groups.load().contains_key(&group) {
            self.inner.heat.note(group, hash, std::time::Instant::now());
        }
    }

    /// Makes the WAL shorter: re-logs purge points, then deletes covered
    /// closed segments, then asks the groups still holding back the oldest
    /// segment to snapshot and purge their logs (done by the next
    /// checkpoint). Returns how many segments were deleted.
    pub async fn checkpoint(&self) -> Result<usize, StorageError> {
        let (relogged, heavy) = {
            let logs = self.inner.logs.lock().await;
            let relogged = logs.relog_purges().await?;
            let heavy = self.heavy_groups(&logs);
            if !heavy.is_empty() {
                // Their purges should not wait out the purger's usual pause.
                logs.hurry_purges();
            }
            (relogged, heavy)
        };
        let wal = self.inner.wal.clone();
        let (deleted, pinning) = tokio::task::spawn_blocking(move || {
            // Groups without a log here were removed: nothing to keep.
            let mut all = relogged.points;
            for g in wal.closed_groups() {
                all.entry(g).or_insert(u64::MAX);
            }
            let deleted = match relogged.through {
                Some(through) => wal.checkpoint(&all, through)?,
                None => 0,
            };
            Ok::<_, StorageError>((deleted, wal.pinning_groups(&all)))
        })
        .await
        .map_err(|e| StorageError::Fatal(e.to_string()))??;
        let mut compact: Vec<u64> = pinning.into_iter().chain(heavy).collect();
        compact.sort_unstable();
        compact.dedup();
        for g in compact.iter().filter_map(|g| self.group(*g)) {
            g.compact().await;
        }
        Ok(deleted)
    }

    /// Gives back the disk that writes left behind once the node is idle:
    /// the store seals its journal and flushes its memtable (and with
    /// `merge` compacts its whole tree, dropping overwritten versions), every
    /// group's log is purged through what it applied, and the open WAL
    /// segment is closed so that the checkpoint that follows deletes it. Each
    /// step is one a busy node also takes, sooner or later; here none waits
    /// for a size to be reached.
    pub async fn compact_idle(&self, merge: bool) -> Result<(), StorageError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.compact_idle(merge))
            .await
            .map_err(|e| StorageError::Fatal(e.to_string()))??;
        let groups: Vec<RaftGroup> = self.inner.groups.load().values().cloned().collect();
        let wait = Duration::from_millis(IDLE_PURGE_WAIT_MS);
        let deadline = tokio::time::Instant::now() + wait;
        let floors: Vec<(u64, u64)> =
            futures_util::future::join_all(groups.iter().map(|g| async move {
                let (_, applied) = g.progress();
                g.purge_start(applied, wait).await;
                (g.group, applied)
            }))
            .await;
        // The purges above are in memory; their records reach the WAL after
        // the purger's next durable flush of the store.
        self.inner.logs.lock().await.hurry_purges();
        loop {
            let durable = self.inner.logs.lock().await.purged();
            let behind = floors
                .iter()
                .any(|(g, floor)| durable.get(g).is_some_and(|p| p < floor));
            if !behind || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(dynaraft_raft::group::PURGE_POLL_MS)).await;
        }
        self.inner
            .wal
            .close_segment(IDLE_CLOSE_SEGMENT_BYTES)
            .await?;
        self.checkpoint().await?;
        metrics::counter!(IDLE_COMPACTIONS_METRIC).increment(1);
        Ok(())
    }

    /// Whether some group's log tail is over [`MAX_LOG_TAIL_BYTES`], or
    /// the tails together over the node's share for them.
    async fn tails_over_bound(&self) -> bool {
        !self.heavy_groups(&*self.inner.logs.lock().await).is_empty()
    }

    /// The groups to compact now (see [`heavy_groups`]).
    fn heavy_groups(&self, logs: &LogSet) -> Vec<u64> {
        heavy_groups(logs, self.inner.cfg.log_tails_bytes())
    }

    /// Stops every group and task and waits until they have exited, so the
    /// data directory can be reopened. Other clones become unusable. Bounded
    /// (a node whose disk failed may never finish a flush): what outlives
    /// the waits is logged, and a reopen waits for its locks.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let groups = self.inner.groups.swap(Arc::new(HashMap::new()));
        for (id, g) in groups.iter() {
            self.inner.registry.unregister(*id);
            g.shutdown().await;
        }
        // The state machine (and its sled handle) goes with Raft's last
        // task; its applied watch closes then.
        let mut closing: Vec<_> = groups.values().map(|g| g.applied.clone()).collect();
        drop(groups);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(GROUP_STOP_WAIT_MS);
        for rx in &mut closing {
            let closed = async { while rx.changed().await.is_ok() {} };
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                tracing::warn!("a group's state machine outlived shutdown");
            }
        }
        let flush = Duration::from_millis(STORE_FLUSH_WAIT_MS);
        if tokio::time::timeout(flush, self.inner.store.flush_soon())
            .await
            .is_err()
        {
            tracing::warn!(
                "the store's last flush did not finish; the WAL holds every write; the store is left open"
            );
            // sled's last handle flushes when dropped, and after ENOSPC that
            // flush never returns (docs/reliability.md): the drop ending this
            // function would block the shutdown for good. One handle is
            // leaked instead, so that no drop is ever the last; the process
            // is exiting, or could never reopen the directory anyway.
            std::mem::forget(self.inner.store.clone());
        }
        let mut tasks = self.inner.tasks.subscribe();
        let stopped = tasks.wait_for(|n| *n == 0);
        if tokio::time::timeout(Duration::from_millis(TASKS_STOP_WAIT_MS), stopped)
            .await
            .is_err()
        {
            tracing::warn!("some node tasks outlived shutdown");
        }
    }
}

/// Runs `open` (of the store or the WAL) until it is not refused for a
/// lock held by a previous instance of this node in the same process, whose
/// threads end shortly after it is dropped, for at most
/// [`LOCK_WAIT_MS`].
async fn when_unlocked<T>(
    mut open: impl FnMut() -> Result<T, OpenError>,
) -> Result<T, StorageError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(LOCK_WAIT_MS);
    loop {
        match open() {
            Ok(opened) => return Ok(opened),
            Err(OpenError::Locked) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(LOCK_RETRY_MS)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn with_group(e: ClusterError, group: u64) -> ClusterError {
    match e {
        ClusterError::NotLeader { leader, .. } => ClusterError::NotLeader { group, leader },
        other => other,
    }
}

/// Most log entries a replica may have left to apply and still count as
/// caught up (see [`Host::readiness`]).
pub const READY_MAX_LAG_ENTRIES: u64 = 100;
/// Longest a stopping node waits for its groups to take the leadership it
/// handed off, in milliseconds.
pub const HAND_OFF_WAIT_MS: u64 = 3_000;

/// One data group's size and load as this node's replica sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupGauge {
    pub group: u64,
    pub items: u64,
    pub bytes: u64,
    /// Requests this replica served a second, over the last load window.
    pub ops_per_s: u64,
    /// This node leads the group.
    pub leader: bool,
}

/// How often a node publishes its Raft gauges and looks for leader
/// changes, in milliseconds.
pub const NODE_METRICS_INTERVAL_MS: u64 = 1_000;

/// Publishes the node's Raft metrics every [`NODE_METRICS_INTERVAL_MS`]:
/// groups hosted and led, leader changes seen (a group whose known leader
/// differs from the last look's; changes and back within one interval are
/// not seen), the largest apply lag of any group in entries (its log's
/// last index past what it applied), and the unpurged log tails' bytes.
async fn node_metrics_loop(host: Host, mut shutdown: watch::Receiver<bool>) {
    let mut leaders: HashMap<u64, NodeId> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(NODE_METRICS_INTERVAL_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => break,
        }
        let groups = host.inner.groups.load();
        let (mut led, mut changes, mut max_lag) = (0u64, 0u64, 0u64);
        for (id, g) in groups.iter() {
            let leader = g.leader();
            if leader == Some(host.id()) {
                led += 1;
            }
            if let Some(now) = leader
                && leaders.insert(*id, now).is_some_and(|before| before != now)
            {
                changes += 1;
            }
            let (last, applied) = g.progress();
            max_lag = max_lag.max(last.saturating_sub(applied));
        }
        leaders.retain(|id, _| groups.contains_key(id));
        let tail: u64 = host.inner.logs.lock().await.tail_bytes().values().sum();
        metrics::gauge!("dynaraft_raft_groups").set(groups.len() as f64);
        metrics::gauge!("dynaraft_raft_groups_led").set(led as f64);
        metrics::counter!("dynaraft_raft_leader_changes_total").increment(changes);
        metrics::gauge!("dynaraft_raft_apply_lag_entries").set(max_lag as f64);
        metrics::gauge!("dynaraft_raft_log_tail_bytes").set(tail as f64);
    }
}

async fn checkpoint_loop(host: Host, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(host.inner.cfg.checkpoint_interval_ms.max(1));
    let poll = every.min(Duration::from_millis(CHECKPOINT_POLL_MS));
    let mut last = tokio::time::Instant::now();
    let idle_after = host.inner.cfg.idle_compaction_after_ms;
    let mut idle = IdleWatch::new(
        host.inner.store.written_bytes(),
        idle_after,
        tokio::time::Instant::now(),
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => break,
        }
        let written = host.inner.store.written_bytes();
        if idle_after > 0 && idle.due(written, tokio::time::Instant::now()) {
            let store = host.inner.store.clone();
            let tables = tokio::task::spawn_blocking(move || store.table_bytes())
                .await
                .ok()
                .and_then(Result::ok);
            let merge = idle.merge_due(written, tables);
            tracing::info!(merge, "idle compaction started");
            let started = std::time::Instant::now();
            match host.compact_idle(merge).await {
                Ok(()) => {
                    tracing::info!(
                        merge,
                        seconds = started.elapsed().as_secs_f64(),
                        "idle compaction done"
                    );
                    idle.done(written, merge);
                    last = tokio::time::Instant::now();
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "idle compaction failed");
                    idle.done(written, false);
                }
            }
        }
        if last.elapsed() < every && !host.tails_over_bound().await {
            continue;
        }
        last = tokio::time::Instant::now();
        if let Err(e) = host.checkpoint().await {
            tracing::error!(error = %e, "checkpoint failed");
        }
    }
}

/// When a node is idle enough to compact (see [`Host::compact_idle`]):
/// `after` without a write to its store, once at least
/// [`IDLE_COMPACTION_MIN_WRITTEN_BYTES`] were written since the last
/// compaction.
struct IdleWatch {
    after: Duration,
    /// The store's written bytes when last seen changing, and when.
    seen: u64,
    since: tokio::time::Instant,
    /// Written bytes at the end of the last idle compaction, and of the
    /// last one that merged the tree.
    compacted: u64,
    merged: u64,
}

impl IdleWatch {
    fn new(written: u64, after_ms: u64, now: tokio::time::Instant) -> IdleWatch {
        IdleWatch {
            after: Duration::from_millis(after_ms),
            seen: written,
            since: now,
            compacted: written,
            merged: written,
        }
    }

    /// Whether to compact now, given the store's written bytes at `now`.
    fn due(&mut self, written: u64, now: tokio::time::Instant) -> bool {
        if written != self.seen {
            self.seen = written;
            self.since = now;
            return false;
        }
        written.saturating_sub(self.compacted) >= IDLE_COMPACTION_MIN_WRITTEN_BYTES
            && now.duration_since(self.since) >= self.after
    }

    /// Whether the compaction due should also merge the tree, the store's
    /// tables holding `tables` bytes (unknown: it merges).
    fn merge_due(&self, written: u64, tables: Option<u64>) -> bool {
        let since = u128::from(written.saturating_sub(self.merged));
        tables.is_none_or(|t| since * 100 >= u128::from(t) * u128::from(IDLE_MERGE_WRITTEN_PERCENT))
    }

    fn done(&mut self, written: u64, merged: bool) {
        self.compacted = written;
        if merged {
            self.merged = written;
        }
    }
}

/// The groups whose unpurged log tail is over [`MAX_LOG_TAIL_BYTES`], and
/// while the tails together hold more than `total_bytes`, the largest of
/// the others too, until what remains fits.
fn heavy_groups(logs: &LogSet, total_bytes: u64) -> Vec<u64> {
    let mut tails: Vec<(u64, u64)> = logs.tail_bytes().into_iter().collect();
    tails.sort_unstable_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    let mut remaining: u64 = tails.iter().map(|(_, b)| b).sum();
    let mut heavy = Vec::new();
    for (group, bytes) in tails {
        if bytes <= MAX_LOG_TAIL_BYTES && remaining <= total_bytes {
            break;
        }
        heavy.push(group);
        remaining -= bytes;
    }
    heavy
}

/// `span`, when it owns `storage_key`; otherwise its group split since the
/// caller mapped the key ([`StorageError::WrongRange`]).
fn owns(span: Span, storage_key: &[u8]) -> Result<Span, StorageError> {
    if span.owns(storage_key) {
        Ok(span)
    } else {
        Err(StorageError::WrongRange(format!(
            "group {} no longer owns key hash {:#x}",
            span.group,
            dynaraft_storage::catalog::key_hash(storage_key)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A removed group whose data is still being deleted does not start
    /// again over it; once deleted, it may.
    #[tokio::test]
    async fn a_group_being_deleted_does_not_start_again() {
        let host = Host::open(HostConfig::new(1, "az-a", "127.0.0.1:1", None))
            .await
            .expect("host");
        host.start_group(7, Some(one(1))).await.expect("start");
        host.remove_group(7).await.expect("remove");
        assert!(!host.is_dropping(7), "deleted, so no longer marked");
        if let Ok(mut d) = host.inner.dropping.lock() {
            d.insert(7);
        }
        match host.start_group(7, Some(one(1))).await {
            Err(StorageError::Unavailable(why)) => assert!(why.contains("still being deleted")),
            other => panic!(
                "started over a group being deleted: {:?}",
                other.map(|g| g.group)
            ),
        }
        // Other groups start meanwhile.
        host.start_group(8, Some(one(1)))
            .await
            .expect("another group");
        if let Ok(mut d) = host.inner.dropping.lock() {
            d.remove(&7);
        }
        host.start_group(7, Some(one(1)))
            .await
            .expect("start again");
    }

    /// A membership of node `id` alone.
    fn one(id: NodeId) -> BTreeMap<NodeId, NodeInfo> {
        BTreeMap::from([(
            id,
            NodeInfo {
                addr: "127.0.0.1:1".into(),
                az: "az-a".into(),
            },
        )])
    }

    /// A replica leaving its group while writes stream in answers each
    /// write it had taken with its outcome, and refuses later ones as not
    /// the leader or as no longer hosted (which the router sends
    /// elsewhere): none gets "unavailable", whose outcome a caller cannot
    /// know.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_leaving_its_group_answers_the_writes_it_took() {
        // On disk, so that each write waits for an fsync and some are in
        // flight when the replica leaves.
        let dir = std::env::temp_dir().join(format!("dynaraft-leaving-{}", fastrand::u64(..)));
        let cfg = HostConfig::new(1, "az-a", "127.0.0.1:1", Some(dir.clone()));
        let host = Host::open(cfg).await.expect("host");
        let g = host.start_group(7, Some(one(1))).await.expect("start");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while g.leader() != Some(1) {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(g);
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let host = host.clone();
            writers.spawn(async move {
                let mut answered = 0u64;
                loop {
                    let noop = Command::PurgeChangeLog {
                        before_ms: 0,
                        max: 1,
                    };
                    match host.propose(7, noop).await {
                        Ok(_) => answered += 1,
                        Err(ClusterError::NotLeader { .. } | ClusterError::NoGroup(7)) => {
                            return Ok(answered);
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        host.remove_group(7).await.expect("remove");
        let mut answered = 0;
        while let Some(w) = writers.join_next().await {
            match w.expect("writer task") {
                Ok(n) => answered += n,
                Err(e) => panic!("a write taken before the replica left got: {e:?}"),
            }
        }
        host.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(answered > 0, "no write was answered before the removal");
    }

    /// A replica started from nothing to join a running group (moved here,
    /// a split child, a lost replica) answers no eventually consistent read
    /// until it has caught up and become a voter: it holds no items yet,
    /// and an item that exists would read as missing. A voter answers.
    #[tokio::test]
    async fn a_replica_still_joining_refuses_eventually_consistent_reads() {
        let host = Host::open(HostConfig::new(1, "az-a", "127.0.0.1:1", None))
            .await
            .expect("host");
        host.start_group(9, None).await.expect("start joining");
        match host.read_item(9, b"k", false).await {
            Err(ClusterError::NotLeader {
                group: 9,
                leader: None,
            }) => {}
            other => panic!("a joining replica answered: {other:?}"),
        }
        let voters = BTreeMap::from([(
            1,
            NodeInfo {
                addr: "127.0.0.1:1".into(),
                az: "az-a".into(),
            },
        )]);
        host.start_group(10, Some(voters))
            .await
            .expect("start voter");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match host.read_item(10, b"k", false).await {
                Ok((None, None)) => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "the group's voter did not answer: {other:?}"
                ),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
