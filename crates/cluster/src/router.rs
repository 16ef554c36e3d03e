//! The router: sends each request to the replica that can serve it.
//!
//! A write goes to the leader of the partition owning the item's key hash
//! (the partition map is in the catalog); a strongly consistent read also
//! goes to the leader, which confirms its leadership with a quorum (read
//! index) before reading; an eventually consistent read may be served by
//! any replica, the local one first. Leaders learned from `NotLeader`
//! replies are remembered per group. A request that finds no leader (an
//! election in progress, a replica still starting) is retried with backoff
//! for up to [`ROUTE_DEADLINE_MS`]; one whose proposal was accepted but did
//! not commit in time fails as unavailable rather than being retried,
//! because it may still commit. A node whose call fails in transport or
//! times out becomes a suspect for [`SUSPECT_MS`]: it is dropped as its
//! groups' known leader, its leader hints are not followed, and replicas
//! are tried before it, so one dead, paused or cut-off node costs the
//! requests that were already waiting on it, not every request after them.
//!
//! Scan and multi-partition reads walk the partitions in hash order and
//! share one page budget (items and bytes) across them.
//!
//! The partition map is a cache. Every attempt re-reads the group's
//! replicas from the newest catalog, and each request carries the epoch of
//! the partition it was resolved to; a node whose catalog has a newer epoch
//! rejects it (`StaleEpoch`, with its catalog version), and the router waits
//! until its own catalog has reached that version, resolves the key again
//! and retries. Caveat: range reads are clamped to a partition's range
//! before they are routed; when splits exist, a stale range read will have
//! to be re-clamped too, not only re-routed.

use crate::ClusterError;
use crate::catalog::{CatalogWatch, Table};
use crate::host::Host;
use crate::node::ControlMember;
use crate::remote::Remote;
use crate::txn::{Failpoint, TXN_WRITE_SETTLE_ATTEMPTS};
use crate::wire::{self, GroupStats, Reply, Request};
use arc_swap::ArcSwap;
use dynaraft_model::Item;
use dynaraft_raft::NodeId;
use dynaraft_storage::catalog::{key_hash, partition_index};
use dynaraft_storage::command::Command;
use dynaraft_storage::machine::CATALOG_GROUP;
use dynaraft_storage::read::{IndexRead, Page, ReadOptions};
use dynaraft_storage::txn::TxnState;
use dynaraft_storage::{NodeRecord, Outcome, PartitionMeta, StorageError, TableMeta, WriteCommand};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest a request keeps looking for a leader, in milliseconds.
pub const ROUTE_DEADLINE_MS: u64 = 10_000;
/// First pause between routing attempts, doubled up to the maximum.
pub const ROUTE_BACKOFF_MIN_MS: u64 = 5;
pub const ROUTE_BACKOFF_MAX_MS: u64 = 200;
/// How long a node whose call failed in transport or timed out is tried
/// only as a last resort, in milliseconds (a success clears it sooner).
pub const SUSPECT_MS: u64 = 2_000;
/// Longest a catalog change waits to appear in this router's catalog.
pub const CATALOG_VISIBLE_TIMEOUT_MS: u64 = 5_000;
/// Longest a write waits for its partition's global indexes to catch up
/// (back-pressure) before it is refused, in milliseconds.
pub const INDEX_BACKPRESSURE_WAIT_MS: u64 = 5_000;
/// Longest a global-index read waits for the base partitions hosted in
/// this process to deliver the changes they had logged when it arrived
/// (see [`Router::await_index_delivery`]), in milliseconds.
pub const INDEX_READ_CATCH_UP_MS: u64 = 250;
/// How often that wait looks again, in milliseconds.
const INDEX_READ_CATCH_UP_POLL_MS: u64 = 1;

#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<CatalogWatch>,
    /// The storage node in this process, if any.
    local: Option<Host>,
    /// Control-plane replicas and their addresses, for catalog changes
    /// (known before the catalog is).
    control: Vec<ControlMember>,
    remote: Remote,
    /// Last known leader per group (replaced whole on change).
    leaders: ArcSwap<HashMap<u64, NodeId>>,
    /// Nodes whose last call failed in transport or timed out, and until
    /// when they are tried only when no other replica is left (replaced
    /// whole on change; read lock-free on every request).
    suspects: ArcSwap<HashMap<NodeId, tokio::time::Instant>>,
    /// Where transactions coordinated here stop (tests' fault injection).
    #[cfg(feature = "failpoints")]
    failpoint: std::sync::Mutex<Failpoint>,
    /// A deliberately broken mode, for proving that `dynaraft-chaos`'s
    /// checker catches lost writes: single-item writes are answered as
    /// written before their proposal has even been sent.
    #[cfg(feature = "failpoints")]
    unsafe_ack_before_commit: AtomicBool,
}

/// A [`Router`] that does not keep it (nor the node in its process)
/// alive: for registries that outlive the servers they list.
#[derive(Clone)]
pub struct WeakRouter(std::sync::Weak<Inner>);

impl WeakRouter {
    /// The router, while something else still holds it.
    pub fn upgrade(&self) -> Option<Router> {
        self.0.upgrade().map(|inner| Router { inner })
    }
}

impl Router {
    /// A handle that does not keep this router alive.
    pub fn downgrade(&self) -> WeakRouter {
        WeakRouter(Arc::downgrade(&self.inner))
    }

    pub fn new(
        catalog: Arc<CatalogWatch>,
        local: Option<Host>,
        control: Vec<ControlMember>,
        remote: Remote,
    ) -> Router {
        Router {
            inner: Arc::new(Inner {
                catalog,
                local,
                control,
                remote,
                leaders: ArcSwap::from_pointee(HashMap::new()),
                suspects: ArcSwap::from_pointee(HashMap::new()),
                #[cfg(feature = "failpoints")]
                failpoint: std::sync::Mutex::new(Failpoint::None),
                #[cfg(feature = "failpoints")]
                unsafe_ack_before_commit: AtomicBool::new(false),
            }),
        }
    }

    /// Makes transactions coordinated by this router stop at `f`, as if
    /// their coordinator died there (fault injection for tests).
    #[cfg(feature = "failpoints")]
    pub fn set_txn_failpoint(&self, f: Failpoint) {
        if let Ok(mut g) = self.inner.failpoint.lock() {
            *g = f;
        }
    }

    /// Breaks durability on purpose: single-item writes are acknowledged
    /// before the quorum commits them (or even evaluates their condition).
    /// Only the hidden `--unsafe-ack-before-commit` flag sets it, to show
    /// that the fault harness's checker can fail.
    #[cfg(feature = "failpoints")]
    pub fn set_unsafe_ack_before_commit(&self, on: bool) {
        self.inner
            .unsafe_ack_before_commit
            .store(on, Ordering::Relaxed);
    }

    #[cfg(feature = "failpoints")]
    pub(crate) fn txn_failpoint(&self) -> Failpoint {
        self.inner.failpoint.lock().map_or(Failpoint::None, |g| *g)
    }

    /// Without the `failpoints` feature transactions never stop early.
    #[cfg(not(feature = "failpoints"))]
    pub(crate) fn txn_failpoint(&self) -> Failpoint {
        Failpoint::None
    }

    pub fn catalog(&self) -> &CatalogWatch {
        &self.inner.catalog
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.inner.catalog.table(name)
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.inner.catalog.get().tables.values().cloned().collect()
    }

    /// Applies a catalog command through the control plane and waits until
    /// this router's catalog shows it.
    pub async fn change_catalog(&self, cmd: Command) -> Result<Outcome, ClusterError> {
        if matches!(cmd, Command::CreateTable(_)) {
            self.wait_for_zones().await?;
        }
        let (outcome, index) = match self
            .route(Target::Control, true, &Request::Propose(Box::new(cmd)))
            .await?
        {
            Reply::Proposed(o, i) => (o, i),
            _ => return Err(ClusterError::Unavailable("unexpected reply".into())),
        };
        let visible = self.inner.catalog.wait_for(index);
        tokio::time::timeout(Duration::from_millis(CATALOG_VISIBLE_TIMEOUT_MS), visible)
            .await
            .map_err(|_| ClusterError::Unavailable("catalog change not yet visible".into()))?;
        Ok(outcome)
    }

    /// Waits (up to [`ROUTE_DEADLINE_MS`]) until a storage node of every
    /// zone the control members are in has registered, so that a new
    /// table's partitions are placed in all of them: placement uses the
    /// registry, and a table placed while a zone is missing would stay
    /// under-replicated.
    async fn wait_for_zones(&self) -> Result<(), ClusterError> {
        let wanted: BTreeSet<&str> = self.inner.control.iter().map(|m| m.az.as_str()).collect();
        let mut changes = self.inner.catalog.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ROUTE_DEADLINE_MS);
        loop {
            let catalog = self.inner.catalog.get();
            let zones: BTreeSet<&str> = catalog.nodes.values().map(|n| n.az.as_str()).collect();
            if wanted.is_subset(&zones) {
                return Ok(());
            }
            let missing: Vec<_> = wanted.difference(&zones).collect();
            let msg = format!("no storage node has registered yet in zones {missing:?}");
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(ClusterError::Unavailable(msg)),
            }
        }
    }

    /// Applies a single-item write in the partition owning its key. While
    /// the partition's global indexes lag too far behind, the write is
    /// retried for up to [`INDEX_BACKPRESSURE_WAIT_MS`] (then its outcome
    /// says so).
    pub async fn write(&self, table: &Table, cmd: WriteCommand) -> Result<Outcome, ClusterError> {
        #[cfg(feature = "failpoints")]
        if self.inner.unsafe_ack_before_commit.load(Ordering::Relaxed)
            && let Some(table) = self.table(&table.meta.name)
        {
            let router = self.clone();
            tokio::spawn(async move { router.write_committed(&table, cmd).await });
            return Ok(Outcome::Written {
                old: None,
                new: None,
                collection_bytes: None,
            });
        }
        self.write_committed(table, cmd).await
    }

    async fn write_committed(
        &self,
        table: &Table,
        cmd: WriteCommand,
    ) -> Result<Outcome, ClusterError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(INDEX_BACKPRESSURE_WAIT_MS);
        let mut backoff = ROUTE_BACKOFF_MIN_MS;
        let mut settled = 0;
        let target = Target::key(table, &cmd.storage_key);
        let key = cmd.storage_key.clone();
        let call = Request::Propose(Box::new(Command::Write(cmd)));
        loop {
            let outcome = match self.route(target.clone(), true, &call).await? {
                Reply::Proposed(o, _) => o,
                _ => return Err(ClusterError::Unavailable("unexpected reply".into())),
            };
            // A transaction holds the item: settle it if it is decided or
            // abandoned, then try again.
            if let Outcome::TxnConflict(intent) = &outcome
                && settled < TXN_WRITE_SETTLE_ATTEMPTS
            {
                settled += 1;
                let state = self.settle(&table.meta.name, &key, intent).await;
                if state.is_ok_and(|s| s != TxnState::Pending) {
                    continue;
                }
                return Ok(outcome);
            }
            if !matches!(outcome, Outcome::IndexLagging) || tokio::time::Instant::now() >= deadline
            {
                return Ok(outcome);
            }
            let name = table.meta.name.clone();
            metrics::counter!("dynaraft_index_backpressure_retries_total", "table" => name)
                .increment(1);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(ROUTE_BACKOFF_MAX_MS);
        }
    }

    /// Proposes `cmd` to the partition of `table` (or of its global index
    /// `index`) whose hash range holds `hash`.
    pub async fn propose_at(
        &self,
        table: &str,
        index: Option<u32>,
        hash: u64,
        cmd: Command,
    ) -> Result<Outcome, ClusterError> {
        let target = Target::Partition { table, index, hash };
        match self
            .route(target, true, &Request::Propose(Box::new(cmd)))
            .await?
        {
            Reply::Proposed(o, _) => Ok(o),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    pub async fn get_item(
        &self,
        table: &Table,
        storage_key: &[u8],
        consistent: bool,
    ) -> Result<Option<Item>, ClusterError> {
        let call = Request::Get {
            key: storage_key.to_vec(),
            consistent,
        };
        let target = Target::key(table, storage_key);
        match self.route(target, consistent, &call).await? {
            Reply::Item(i) => Ok(i),
            Reply::Pending { item, intent } => self.committed_view(item, &intent).await,
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Reads `[lo, hi)` of the table (or of one of its local indexes) across
    /// the partitions it overlaps, in `opts`' direction, stopping when the
    /// item limit or byte budget is used up. A partition that split since
    /// the map was read refuses its old range; the page is then read again
    /// on the newer map, within [`ROUTE_DEADLINE_MS`].
    pub async fn read_range(
        &self,
        table: &Table,
        index: Option<&IndexRead>,
        bounds: (&[u8], Option<&[u8]>),
        opts: &ReadOptions,
        consistent: bool,
    ) -> Result<Page, ClusterError> {
        if index.and_then(|i| i.global).is_some() {
            self.await_index_delivery(table).await?;
        }
        until_mapped(|refused| async move {
            if refused == 0 {
                return self
                    .read_range_once(table, index, bounds, opts, consistent)
                    .await;
            }
            let newer = self.fresh_table(&table.meta.name)?;
            self.read_range_once(&newer, index, bounds, opts, consistent)
                .await
        })
        .await
    }

    /// `name` as the newest catalog has it.
    pub(crate) fn fresh_table(&self, name: &str) -> Result<Arc<Table>, ClusterError> {
        self.inner
            .catalog
            .table(name)
            .ok_or_else(|| ClusterError::NoTable(name.to_string()))
    }

    /// One attempt of [`Router::read_range`] on `table`'s map.
    async fn read_range_once(
        &self,
        table: &Table,
        index: Option<&IndexRead>,
        (lo, hi): (&[u8], Option<&[u8]>),
        opts: &ReadOptions,
        consistent: bool,
    ) -> Result<Page, ClusterError> {
        let global = index.and_then(|i| i.global);
        let parts = table
            .meta
            .partitions_of(global)
            .ok_or_else(|| ClusterError::Unavailable("index is gone".into()))?;
        let mut order: Vec<usize> = (0..parts.len()).collect();
        if !opts.forward {
            order.reverse();
        }
        let resume = opts
            .start_after
            .as_deref()
            .and_then(|k| partition_index(parts, key_hash(k)));
        let mut page = Page::default();
        for i in order {
            let skip = resume.is_some_and(|r| if opts.forward { i < r } else { i > r });
            let Some((plo, phi)) = clamp(parts, i, lo, hi).filter(|_| !skip) else {
                continue;
            };
            let sub = ReadOptions {
                forward: opts.forward,
                start_after: opts.start_after.clone(),
                limit: opts.limit.map(|l| l.saturating_sub(page.scanned)),
                max_bytes: opts.max_bytes.saturating_sub(page.read_bytes),
            };
            let call = Request::Range {
                schema: table.schema.clone(),
                index: index.cloned(),
                lo: plo,
                hi: phi,
                opts: sub,
                consistent,
            };
            let target = Target::Partition {
                table: &table.meta.name,
                index: global,
                hash: parts[i].hash_lo,
            };
            let got = match self.route(target, consistent, &call).await? {
                Reply::Page(got) => got,
                _ => return Err(ClusterError::Unavailable("unexpected reply".into())),
            };
            page.items.extend(got.items);
            page.scanned += got.scanned;
            page.read_bytes += got.read_bytes;
            if got.last_key.is_some() {
                page.last_key = got.last_key;
                break;
            }
        }
        Ok(page)
    }

    /// Before a global-index read: waits, at most
    /// [`INDEX_READ_CATCH_UP_MS`], until every base partition of `table`
    /// hosted in this process has delivered to its indexes the changes it
    /// had logged when the read arrived. Global indexes stay eventually
    /// consistent, as in DynamoDB; this only keeps a write followed by an
    /// index read in one process (the embedded mode, like DynamoDB Local,
    /// whose indexes are synchronous) from seeing the index one delivery
    /// behind. Partitions hosted elsewhere are not waited for.
    async fn await_index_delivery(&self, table: &Table) -> Result<(), ClusterError> {
        let Some(host) = &self.inner.local else {
            return Ok(());
        };
        let tree = host.tree();
        let mut pending = Vec::new();
        for p in &table.meta.partitions {
            if host.group(p.group).is_none() {
                continue;
            }
            let (logged, delivered) = dynaraft_storage::global::change_log_state(tree, p.group)?;
            if logged > delivered {
                pending.push((p.group, logged));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(INDEX_READ_CATCH_UP_MS);
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(INDEX_READ_CATCH_UP_POLL_MS)).await;
            let mut still = Vec::with_capacity(pending.len());
            for (group, logged) in pending {
                let (_, delivered) = dynaraft_storage::global::change_log_state(tree, group)?;
                if delivered < logged {
                    still.push((group, logged));
                }
            }
            pending = still;
        }
        Ok(())
    }

    /// Change records of the table partition whose hash range starts at
    /// `hash_lo`, after sequence `after` (a stream's shard), read at its
    /// leader.
    pub async fn read_changes(
        &self,
        table: &Table,
        hash_lo: u64,
        after: u64,
        (max, max_bytes): (usize, usize),
    ) -> Result<wire::ChangeLogPage, ClusterError> {
        let target = Target::Partition {
            table: &table.meta.name,
            index: None,
            hash: hash_lo,
        };
        let call = Request::Changes {
            after,
            max,
            max_bytes,
        };
        match self.route(target, true, &call).await? {
            Reply::Changes(page) => Ok(page),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Why the storage node in this process can no longer write, if it
    /// cannot (a router without one has nothing to report).
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.local.as_ref().and_then(Host::storage_failure)
    }

    /// Item count and bytes of a table, and (entries, bytes) of each local
    /// index, summed over its partitions.
    pub async fn stats(&self, meta: &TableMeta) -> Result<GroupStats, ClusterError> {
        self.sum_stats(meta, None).await
    }

    /// (entries, bytes) of global index `index`, summed over its partitions.
    pub async fn index_stats(
        &self,
        meta: &TableMeta,
        index: u32,
    ) -> Result<(u64, u64), ClusterError> {
        let s = self.sum_stats(meta, Some(index)).await?;
        Ok((s.count, s.bytes))
    }

    async fn sum_stats(
        &self,
        meta: &TableMeta,
        global: Option<u32>,
    ) -> Result<GroupStats, ClusterError> {
        let local_indexes = if global.is_some() {
            0
        } else {
            meta.local_indexes.len() as u8
        };
        let mut total = GroupStats {
            indexes: vec![(0, 0); local_indexes as usize],
            ..GroupStats::default()
        };
        let parts = meta.partitions_of(global).unwrap_or_default();
        for p in parts {
            let target = Target::Partition {
                table: &meta.name,
                index: global,
                hash: p.hash_lo,
            };
            let call = Request::Stats { local_indexes };
            if let Reply::Stats(s) = self.route(target, false, &call).await? {
                total.count += s.count;
                total.bytes += s.bytes;
                for (t, (c, b)) in total.indexes.iter_mut().zip(s.indexes) {
                    t.0 += c;
                    t.1 += b;
                }
            }
        }
        Ok(total)
    }

    /// Item count, bytes and load of one partition of `table` (or of its
    /// global index `index`), from its leader (which serves every write).
    pub async fn partition_stats(
        &self,
        table: &str,
        index: Option<u32>,
        p: &PartitionMeta,
    ) -> Result<GroupStats, ClusterError> {
        let target = Target::Partition {
            table,
            index,
            hash: p.hash_lo,
        };
        match self
            .route(target, true, &Request::Stats { local_indexes: 0 })
            .await?
        {
            Reply::Stats(s) => Ok(s),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Where one partition would split, from its leader.
    pub async fn split_point(
        &self,
        table: &str,
        index: Option<u32>,
        p: &PartitionMeta,
    ) -> Result<Option<u64>, ClusterError> {
        let target = Target::Partition {
            table,
            index,
            hash: p.hash_lo,
        };
        let call = Request::SplitPoint {
            index_partition: index.is_some(),
        };
        match self.route(target, true, &call).await? {
            Reply::SplitPoint(at) => Ok(at),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// The counters of one partition's range from `at`, tallied by its
    /// leader for a split prepared there (`None`: the split counts them
    /// in its apply).
    pub async fn split_tally(
        &self,
        table: &str,
        index: Option<u32>,
        p: &PartitionMeta,
        at: u64,
    ) -> Result<Option<dynaraft_storage::split::SplitTally>, ClusterError> {
        let target = Target::Partition {
            table,
            index,
            hash: p.hash_lo,
        };
        let call = Request::SplitTally {
            at,
            index_partition: index.is_some(),
        };
        match self.route(target, true, &call).await? {
            Reply::SplitTally(t) => Ok(t),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// The Raft state of every group node `id` hosts (one attempt).
    pub async fn node_status(&self, id: NodeId) -> Result<Vec<wire::GroupStatus>, ClusterError> {
        match self.attempt(id, CATALOG_GROUP, 0, &Request::Status).await? {
            Reply::Status(groups) => Ok(groups),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// The cluster as this router's catalog has it, joined with every
    /// node's answers (one attempt each; with every partition's stats when
    /// `with_stats`), for the web console.
    pub async fn survey(&self, with_stats: bool) -> crate::survey::Survey {
        let catalog = self.inner.catalog.get();
        let tables = catalog.tables.values().map(|t| t.meta.clone()).collect();
        let nodes = catalog.nodes.values().cloned().collect();
        let status_of = |n: NodeRecord| async move { self.node_status(n.id).await.ok() };
        let stats_of = |n: NodeRecord, group: u64| async move {
            let call = Request::Stats { local_indexes: 0 };
            match self.attempt(n.id, group, 0, &call).await {
                Ok(Reply::Stats(s)) => Some(s),
                _ => None,
            }
        };
        crate::survey::Survey::gather(
            catalog.version,
            tables,
            nodes,
            status_of,
            stats_of,
            with_stats,
        )
        .await
    }

    /// Asks node `id`, which leads `group`, to hand it to node `to` (one
    /// attempt, no retries).
    pub async fn transfer_leader(
        &self,
        id: NodeId,
        group: u64,
        to: NodeId,
    ) -> Result<(), ClusterError> {
        match self
            .attempt(id, group, 0, &Request::TransferLeader { to })
            .await?
        {
            Reply::Transferring => Ok(()),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Asks node `id`, which leads `group`, to remove voter `remove` and/or
    /// add `add` (`Host::change_voters`; one attempt, no retries); the
    /// voters after.
    pub async fn change_voters(
        &self,
        id: NodeId,
        group: u64,
        remove: Option<NodeId>,
        add: Option<(NodeId, dynaraft_raft::NodeInfo)>,
    ) -> Result<Vec<u64>, ClusterError> {
        let call = Request::ChangeVoters { remove, add };
        match self.attempt(id, group, 0, &call).await? {
            Reply::Voters(v) => Ok(v),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Whether node `id` answers (one attempt, no retries).
    pub async fn ping(&self, id: NodeId) -> Result<(), ClusterError> {
        match self.attempt(id, CATALOG_GROUP, 0, &Request::Ping).await? {
            Reply::Pong => Ok(()),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Where `target` is now, by the newest catalog.
    fn place(&self, target: &Target) -> Result<Placement, ClusterError> {
        let placement = match target {
            Target::Control => Placement {
                group: CATALOG_GROUP,
                replicas: self.inner.control.iter().map(|m| m.id).collect(),
                epoch: 0,
            },
            Target::Partition { table, index, hash } => {
                let t = self
                    .inner
                    .catalog
                    .table(table)
                    .ok_or_else(|| ClusterError::NoTable(table.to_string()))?;
                let parts = t.meta.partitions_of(*index).unwrap_or_default();
                let p = partition_index(parts, *hash).and_then(|i| parts.get(i));
                let p = p.ok_or_else(|| {
                    ClusterError::Unavailable(format!("table {table} has no such partition"))
                })?;
                Placement {
                    group: p.group,
                    replicas: p.replicas.clone(),
                    epoch: p.epoch,
                }
            }
        };
        // `route` picks replicas by index: never hand it an empty list.
        if placement.replicas.is_empty() {
            return Err(ClusterError::Unavailable(format!(
                "group {} has no replicas",
                placement.group
            )));
        }
        Ok(placement)
    }

    /// Tries replicas of `target`'s group until one serves `call`,
    /// following leader hints and newer maps, within [`ROUTE_DEADLINE_MS`].
    pub(crate) async fn route(
        &self,
        target: Target<'_>,
        needs_leader: bool,
        call: &Request,
    ) -> Result<Reply, ClusterError> {
        let mut at = self.place(&target)?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ROUTE_DEADLINE_MS);
        let mut node = self.first_target(at.group, &at.replicas, needs_leader);
        let mut backoff = ROUTE_BACKOFF_MIN_MS;
        let mut rotation = 0usize;
        loop {
            let err = match self.attempt(node, at.group, at.epoch, call).await {
                Ok(reply) => {
                    if needs_leader {
                        self.remember_leader(at.group, node);
                    }
                    self.clear_suspect(node);
                    return Ok(reply);
                }
                Err(e) => e,
            };
            if matches!(
                err,
                ClusterError::Unreachable(_) | ClusterError::Unavailable(_)
            ) {
                // Dead, paused, cut off, or a leader that cannot commit:
                // later requests start elsewhere.
                self.suspect(node);
                self.forget_leader(at.group, node);
            }
            match err {
                ClusterError::NotLeader {
                    leader: Some(l), ..
                } if l != node && at.replicas.contains(&l) && !self.is_suspect(l) => {
                    node = l;
                    continue;
                }
                ClusterError::StaleEpoch { version, .. } => {
                    let newer = self.inner.catalog.wait_for(version);
                    let limit = Duration::from_millis(CATALOG_VISIBLE_TIMEOUT_MS);
                    let _ = tokio::time::timeout(limit, newer).await;
                }
                ClusterError::NotLeader { .. }
                | ClusterError::NoGroup(_)
                | ClusterError::Unreachable(_) => {}
                // The group split after the map was read: a call keyed by
                // one hash finds the new owner on the newer map (the
                // refusal changed nothing). Calls whose keys were grouped
                // by partition (ranges, index batches, a transaction's
                // shares) are grouped again by their callers instead.
                ClusterError::Storage(StorageError::WrongRange(_)) if keyed_by_one_hash(call) => {}
                // A read that failed in transit is safe to try elsewhere; a
                // proposal's fate is unknown, so it is not retried here.
                ClusterError::Unavailable(_) if !matches!(call, Request::Propose(_)) => {}
                other => return Err(self.unless_dropped(&target, other)),
            }
            if tokio::time::Instant::now() >= deadline {
                let e = ClusterError::Unavailable(format!(
                    "no replica of group {} could serve the request in time",
                    at.group
                ));
                return Err(self.unless_dropped(&target, e));
            }
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(ROUTE_BACKOFF_MAX_MS);
            rotation += 1;
            // The map may have changed (replicas moved, epoch bumped).
            at = self.place(&target)?;
            node = self.healthy_first(&at.replicas, rotation);
        }
    }

    /// `err`, unless the target's table has left the catalog meanwhile: a
    /// request that failed because its table was deleted under it (its
    /// groups stopped) fails as a request for a missing table.
    fn unless_dropped(&self, target: &Target, err: ClusterError) -> ClusterError {
        match target {
            Target::Partition { table, .. } if self.inner.catalog.table(table).is_none() => {
                ClusterError::NoTable(table.to_string())
            }
            _ => err,
        }
    }

    /// The replica at `rotation` (mod the number of replicas), or the next
    /// one after it that is not suspect, if any.
    fn healthy_first(&self, replicas: &[NodeId], rotation: usize) -> NodeId {
        let n = replicas.len();
        (0..n)
            .map(|i| replicas[(rotation + i) % n])
            .find(|r| !self.is_suspect(*r))
            .unwrap_or(replicas[rotation % n])
    }

    fn is_suspect(&self, node: NodeId) -> bool {
        self.inner
            .suspects
            .load()
            .get(&node)
            .is_some_and(|until| tokio::time::Instant::now() < *until)
    }

    fn suspect(&self, node: NodeId) {
        let until = tokio::time::Instant::now() + Duration::from_millis(SUSPECT_MS);
        update(&self.inner.suspects, |m| {
            m.insert(node, until);
        });
    }

    fn clear_suspect(&self, node: NodeId) {
        if !self.inner.suspects.load().contains_key(&node) {
            return;
        }
        update(&self.inner.suspects, |m| {
            m.remove(&node);
        });
    }

    fn forget_leader(&self, group: u64, node: NodeId) {
        if self.inner.leaders.load().get(&group) != Some(&node) {
            return;
        }
        update(&self.inner.leaders, |m| {
            m.remove(&group);
        });
    }

    fn first_target(&self, group: u64, replicas: &[NodeId], needs_leader: bool) -> NodeId {
        let local = self.inner.local.as_ref().map(Host::id);
        let local_replica = local.filter(|l| replicas.contains(l));
        if !needs_leader && let Some(l) = local_replica {
            return l;
        }
        if let Some(l) = self.inner.leaders.load().get(&group)
            && replicas.contains(l)
            && !self.is_suspect(*l)
        {
            return *l;
        }
        match local_replica {
            Some(l) => l,
            None => self.healthy_first(replicas, 0),
        }
    }

    /// The node that last served `group` as its leader, if any did.
    pub fn known_leader(&self, group: u64) -> Option<NodeId> {
        self.inner.leaders.load().get(&group).copied()
    }

    fn remember_leader(&self, group: u64, leader: NodeId) {
        if self.inner.leaders.load().get(&group) == Some(&leader) {
            return;
        }
        update(&self.inner.leaders, |m| {
            m.insert(group, leader);
        });
    }

    /// One attempt at one replica: in-process when it is the local node.
    async fn attempt(
        &self,
        target: NodeId,
        group: u64,
        epoch: u64,
        call: &Request,
    ) -> Result<Reply, ClusterError> {
        if let Some(h) = &self.inner.local
            && h.id() == target
        {
            return wire::execute(h, &self.inner.catalog, group, epoch, call.clone()).await;
        }
        let addr = match self.inner.catalog.get().nodes.get(&target) {
            Some(n) => n.addr.clone(),
            None => self
                .inner
                .control
                .iter()
                .find(|m| m.id == target)
                .map(|m| m.addr.clone())
                .ok_or_else(|| ClusterError::Unreachable(format!("node {target} is unknown")))?,
        };
        self.inner.remote.call(&addr, group, epoch, call).await
    }
}

/// Replaces a shared map with a changed copy (readers never lock).
fn update<K: Clone + Eq + std::hash::Hash, V: Clone>(
    map: &ArcSwap<HashMap<K, V>>,
    change: impl Fn(&mut HashMap<K, V>),
) {
    map.rcu(|m| {
        let mut m = HashMap::clone(m);
        change(&mut m);
        m
    });
}

/// What a request is routed to: the control group, or the partition of a
/// table (or of its global index `index`) whose hash range holds `hash`
/// (resolved again from the newest catalog on every attempt).
#[derive(Clone)]
pub(crate) enum Target<'a> {
    Control,
    Partition {
        table: &'a str,
        index: Option<u32>,
        hash: u64,
    },
}

impl<'a> Target<'a> {
    /// The partition owning `storage_key` (its first 8 bytes are the hash).
    pub(crate) fn key(table: &'a Table, storage_key: &[u8]) -> Target<'a> {
        Target::hash(table, key_hash(storage_key))
    }

    fn hash(table: &'a Table, hash: u64) -> Target<'a> {
        Target::Partition {
            table: &table.meta.name,
            index: None,
            hash,
        }
    }
}

/// A group, where its replicas are and the epoch of its partition.
struct Placement {
    group: u64,
    replicas: Vec<NodeId>,
    epoch: u64,
}

/// Runs `attempt` again while it is refused because a partition split
/// since its keys were mapped (`WrongRange`: nothing was done), backing off
/// between attempts, until it is not or [`ROUTE_DEADLINE_MS`] has passed.
/// `attempt` is told how many refusals came before it, so that after one
/// it maps its keys on the newer catalog.
pub(crate) async fn until_mapped<T, F: Future<Output = Result<T, ClusterError>>>(
    mut attempt: impl FnMut(u32) -> F,
) -> Result<T, ClusterError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ROUTE_DEADLINE_MS);
    let mut backoff = ROUTE_BACKOFF_MIN_MS;
    let mut refused = 0;
    loop {
        match attempt(refused).await {
            Err(ClusterError::Storage(StorageError::WrongRange(why)))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(%why, "refused for a split; mapping again");
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(ROUTE_BACKOFF_MAX_MS);
                refused += 1;
            }
            r => return r,
        }
    }
}

/// Whether `call` names keys of one hash only (so the partition owning
/// that hash on a newer map owns all of them).
fn keyed_by_one_hash(call: &Request) -> bool {
    match call {
        Request::Get { .. } => true,
        Request::Propose(cmd) => matches!(**cmd, Command::Write(_)),
        _ => false,
    }
}

/// `[lo, hi)` intersected with the key range of partition `i` of `parts`
/// (in hash order); `None` if empty.
fn clamp(
    parts: &[PartitionMeta],
    i: usize,
    lo: &[u8],
    hi: Option<&[u8]>,
) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let p = parts.get(i)?;
    let plo = p.hash_lo.to_be_bytes().to_vec();
    let phi = parts.get(i + 1).map(|n| n.hash_lo.to_be_bytes().to_vec());
    let lo = if lo > plo.as_slice() {
        lo.to_vec()
    } else {
        plo
    };
    let hi = match (hi, phi) {
        (Some(a), Some(b)) => Some(if a < b.as_slice() { a.to_vec() } else { b }),
        (Some(a), None) => Some(a.to_vec()),
        (None, b) => b,
    };
    if hi.as_ref().is_some_and(|h| *h <= lo) {
        return None;
    }
    Some((lo, hi))
}
