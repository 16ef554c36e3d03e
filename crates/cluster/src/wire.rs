//! What travels in `proto/data.proto`'s payloads: requests to a storage
//! node, its replies and its errors, as JSON. The same [`Request`] is
//! executed in-process by the embedded router ([`execute`]), so both paths
//! run the same code on the node side.

use crate::ClusterError;
use crate::catalog::{Catalog, CatalogWatch};
use crate::host::Host;
use dynaraft_model::{Item, KeySchema};
use dynaraft_storage::catalog::key_hash;
use dynaraft_storage::command::Command;
use dynaraft_storage::read::{IndexRead, Page, ReadOptions};
use dynaraft_storage::txn::{IntentView, Slot, TxnId, TxnRecord};
use dynaraft_storage::{NodeRecord, Outcome, StorageError, TableMeta, UserRecord};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest a proposal waits for its commit before failing as unavailable.
pub const PROPOSE_TIMEOUT_MS: u64 = 5_000;
/// Longest a catalog long poll waits for a newer version.
pub const CATALOG_POLL_MS: u64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Boxed: a command holds a whole table's metadata.
    Propose(Box<Command>),
    Get {
        key: Vec<u8>,
        consistent: bool,
    },
    Range {
        schema: KeySchema,
        /// A local index to read instead of the items.
        #[serde(default)]
        index: Option<IndexRead>,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        opts: ReadOptions,
        consistent: bool,
    },
    /// Items with their stamps and intents, at the leader (TransactGetItems).
    TxnRead {
        keys: Vec<Vec<u8>>,
    },
    /// A transaction record, at the leader of its anchor.
    TxnRecord {
        txn: TxnId,
    },
    /// Change records after sequence `after`, at most `max` of them or
    /// about `max_bytes` (a stream's GetRecords).
    Changes {
        after: u64,
        max: usize,
        max_bytes: usize,
    },
    /// Item count and bytes, and those of the first `local_indexes` local
    /// indexes.
    Stats {
        #[serde(default)]
        local_indexes: u8,
    },
    /// Where the partition would split into halves of about equal bytes
    /// (see `dynaraft_storage::split::split_point`).
    SplitPoint {
        index_partition: bool,
    },
    /// The counters of the partition's range from `at`, for a split
    /// prepared there (see `dynaraft_storage::split::prepared_tally`).
    SplitTally {
        at: u64,
        index_partition: bool,
    },
    /// Whether the node is up (the control plane's liveness probe).
    Ping,
    /// The Raft state of every group the node hosts (for `dynaraft admin`).
    Status,
    /// Hand the group's leadership to node `to` (at the group's leader;
    /// the control plane spreads leaders with it, see `crate::leaders`).
    TransferLeader {
        to: u64,
    },
    /// The catalog once its version exceeds `since`, or after
    /// [`CATALOG_POLL_MS`] whatever it is.
    Catalog {
        since: u64,
    },
    /// At the group's leader: remove voter `remove` and/or add `add`
    /// (`dynaraft admin control` for the control group; a node that lost
    /// its data leaving its partitions' voters); answered with the voters
    /// after.
    ChangeVoters {
        remove: Option<u64>,
        add: Option<(u64, dynaraft_raft::NodeInfo)>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Proposed(Outcome, u64),
    Item(Option<Item>),
    /// The item, which a transaction holds (its intent).
    Pending {
        item: Option<Item>,
        intent: IntentView,
    },
    Slots(Vec<Slot>),
    TxnRecord(Option<TxnRecord>),
    Page(Page),
    Changes(ChangeLogPage),
    Stats(GroupStats),
    SplitPoint(Option<u64>),
    SplitTally(Option<dynaraft_storage::split::SplitTally>),
    Pong,
    Status(Vec<GroupStatus>),
    /// A leader transfer was submitted.
    Transferring,
    Catalog(CatalogDoc),
    /// A group's voters after a change.
    Voters(Vec<u64>),
}

/// Part of a partition's change log: encoded records by sequence, the
/// last sequence assigned, and the last removed (records at or below it
/// are gone).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChangeLogPage {
    pub records: Vec<(u64, Vec<u8>)>,
    pub last: u64,
    pub floor: u64,
}

/// A partition's size, as of its replica's last apply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupStats {
    pub count: u64,
    pub bytes: u64,
    /// (entries, bytes) per local index, by id.
    pub indexes: Vec<(u64, u64)>,
    /// The load the answering replica served (see `crate::heat`).
    #[serde(default)]
    pub load: crate::heat::LoadReport,
}

/// One hosted replica's Raft state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// Where the group's replication to each peer region stands (global
    /// tables), as this replica sees it.
    #[serde(default)]
    pub replication: Vec<ReplicationStatus>,
    /// Change records of this base partition its global indexes have not
    /// received yet, as its leader counts them (`None` from a follower).
    #[serde(default)]
    pub index_backlog: Option<u64>,
    /// The group's voters as this replica knows them.
    #[serde(default)]
    pub voters: Vec<u64>,
    /// The last log index this replica purged (`None`: its log still
    /// starts at the group's first entry).
    #[serde(default)]
    pub purged: Option<u64>,
    /// The lowest index a snapshot of the group must be at before a
    /// replica joins from nothing, as this replica's state says
    /// (`dynaraft_storage::split::snapshot_floor`; `Some(u64::MAX)` when
    /// its state could not be read).
    #[serde(default)]
    pub snapshot_floor: Option<u64>,
}

/// One partition's replication to one peer region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub region: String,
    /// Change records up to this sequence were acknowledged by the region.
    pub shipped: u64,
    /// Records logged since, not yet acknowledged.
    pub backlog: u64,
    /// Age of the oldest of them, in milliseconds (0 without a backlog).
    pub lag_ms: u64,
    /// The items written before replication began were copied.
    pub copied: bool,
}

/// The catalog as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct CatalogDoc {
    pub version: u64,
    pub tables: Vec<TableMeta>,
    pub nodes: Vec<NodeRecord>,
    /// The control plane's users, secrets included: the catalog travels
    /// only between members (mutual TLS closes it to others).
    #[serde(default)]
    pub users: Vec<UserRecord>,
    /// Exports and imports.
    #[serde(default)]
    pub jobs: Vec<dynaraft_storage::jobs::Job>,
}

impl From<&Catalog> for CatalogDoc {
    fn from(c: &Catalog) -> Self {
        CatalogDoc {
            version: c.version,
            tables: c.tables.values().map(|t| t.meta.clone()).collect(),
            nodes: c.nodes.values().cloned().collect(),
            users: c.users.values().cloned().collect(),
            jobs: c.jobs.values().cloned().collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum WireError {
    NotLeader {
        group: u64,
        leader: Option<u64>,
    },
    NoGroup(u64),
    StaleEpoch {
        group: u64,
        version: u64,
    },
    Unavailable(String),
    NoTable(String),
    /// A storage error as the node had it, so that the router maps it
    /// exactly as an in-process one (an Unavailable stays a 503).
    Storage(StorageError),
}

impl From<ClusterError> for WireError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::NotLeader { group, leader } => WireError::NotLeader { group, leader },
            ClusterError::NoGroup(g) => WireError::NoGroup(g),
            ClusterError::StaleEpoch { group, version } => WireError::StaleEpoch { group, version },
            ClusterError::Unreachable(m) | ClusterError::Unavailable(m) => {
                WireError::Unavailable(m)
            }
            ClusterError::NoTable(t) => WireError::NoTable(t),
            ClusterError::Storage(s) => WireError::Storage(s),
        }
    }
}

impl From<WireError> for ClusterError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotLeader { group, leader } => ClusterError::NotLeader { group, leader },
            WireError::NoGroup(g) => ClusterError::NoGroup(g),
            WireError::StaleEpoch { group, version } => ClusterError::StaleEpoch { group, version },
            WireError::Unavailable(m) => ClusterError::Unavailable(m),
            WireError::NoTable(t) => ClusterError::NoTable(t),
            WireError::Storage(s) => ClusterError::Storage(s),
        }
    }
}

/// Rejects a request routed with an older epoch of `group`'s partition
/// than this node's catalog has (epoch 0: not routed by the map). A newer
/// epoch than the node's own is let through: the node's catalog is behind,
/// and Raft, not the map, decides what a replica may do.
fn check_epoch(catalog: &CatalogWatch, group: u64, epoch: u64) -> Result<(), ClusterError> {
    if epoch == 0 {
        return Ok(());
    }
    let c = catalog.get();
    match c.partition(group) {
        Some(p) if p.epoch > epoch => Err(ClusterError::StaleEpoch {
            group,
            version: c.version,
        }),
        _ => Ok(()),
    }
}

/// Counts a client's request in its group's load (see `crate::heat`):
/// reads and writes of one key by the key's hash, a transaction's by each
/// of its keys, a Query by its partition key, a Scan's page by none. The
/// system's own requests (copies, index deliveries, a transaction's later
/// phases, stats) are not counted.
fn note_load(host: &Host, group: u64, req: &Request) {
    let one_hash = |lo: &[u8], hi: Option<&[u8]>| {
        let h = lo.first_chunk::<8>()?;
        (hi?.first_chunk::<8>()? == h).then(|| u64::from_be_bytes(*h))
    };
    match req {
        Request::Get { key, .. } => host.note_load(group, Some(key_hash(key))),
        Request::TxnRead { keys } => {
            for k in keys {
                host.note_load(group, Some(key_hash(k)));
            }
        }
        Request::Range { lo, hi, .. } => host.note_load(group, one_hash(lo, hi.as_deref())),
        Request::Propose(cmd) => match cmd.as_ref() {
            Command::Write(w) => host.note_load(group, Some(key_hash(&w.storage_key))),
            Command::TxnPrepare(p) => {
                for op in &p.ops {
                    host.note_load(group, Some(key_hash(&op.write.storage_key)));
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Serves one request on `host` (and, for the catalog, from `catalog`),
/// sent with `epoch` of the group's partition.
pub async fn execute(
    host: &Host,
    catalog: &CatalogWatch,
    group: u64,
    epoch: u64,
    req: Request,
) -> Result<Reply, ClusterError> {
    check_epoch(catalog, group, epoch)?;
    note_load(host, group, &req);
    Ok(match req {
        Request::Propose(cmd) => {
            let fut = host.propose(group, *cmd);
            let (o, i) = tokio::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS), fut)
                .await
                .map_err(|_| {
                    ClusterError::Unavailable(format!("group {group} did not commit in time"))
                })??;
            Reply::Proposed(o, i)
        }
        Request::Get { key, consistent } => match host.read_item(group, &key, consistent).await? {
            (item, None) => Reply::Item(item),
            (item, Some(intent)) => Reply::Pending { item, intent },
        },
        Request::TxnRead { keys } => Reply::Slots(host.read_slots(group, &keys).await?),
        Request::TxnRecord { txn } => Reply::TxnRecord(host.read_record(group, txn).await?),
        Request::Range {
            schema,
            index,
            lo,
            hi,
            opts,
            consistent,
        } => {
            let bounds = (lo.as_slice(), hi.as_deref());
            let index = index.as_ref();
            let page = host.read_range(group, &schema, index, bounds, &opts, consistent);
            Reply::Page(page.await?)
        }
        Request::Changes {
            after,
            max,
            max_bytes,
        } => Reply::Changes(host.read_changes(group, after, (max, max_bytes))?),
        Request::Stats { local_indexes } => Reply::Stats(host.stats(group, local_indexes)?),
        Request::SplitPoint { index_partition } => {
            Reply::SplitPoint(host.split_point(group, index_partition).await?)
        }
        Request::SplitTally {
            at,
            index_partition,
        } => Reply::SplitTally(host.split_tally(group, at, index_partition).await?),
        Request::Ping => Reply::Pong,
        Request::TransferLeader { to } => {
            host.transfer_leader(group, to).await?;
            Reply::Transferring
        }
        // Boxed: a membership change's future is large, and every
        // in-process call's future would otherwise carry its size.
        Request::ChangeVoters { remove, add } => {
            Reply::Voters(Box::pin(host.change_voters(group, remove, add)).await?)
        }
        Request::Status => Reply::Status(
            host.hosted()
                .into_iter()
                .filter_map(|g| host.group(g))
                .map(|g| {
                    let (last_log_index, applied_index) = g.progress();
                    GroupStatus {
                        group: g.group,
                        leader: g.leader(),
                        last_log_index,
                        applied_index,
                        replication: crate::replicate::status(host.tree(), g.group),
                        index_backlog: g
                            .is_leader()
                            .then(|| {
                                dynaraft_storage::global::change_log_state(host.tree(), g.group)
                            })
                            .and_then(Result::ok)
                            .map(|(seq, delivered)| seq.saturating_sub(delivered)),
                        voters: g.voters().into_iter().collect(),
                        purged: g.log_progress().1,
                        snapshot_floor: dynaraft_storage::split::snapshot_floor(
                            host.tree(),
                            g.group,
                        )
                        .unwrap_or(Some(u64::MAX)),
                    }
                })
                .collect(),
        ),
        Request::Catalog { since } => {
            let newer = catalog.wait_for(since + 1);
            let _ = tokio::time::timeout(Duration::from_millis(CATALOG_POLL_MS), newer).await;
            Reply::Catalog(CatalogDoc::from(catalog.get().as_ref()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynaraft_storage::PartitionMeta;

    /// A catalog at `version` with one table whose one partition is group 7
    /// at `epoch`.
    fn catalog_with(version: u64, epoch: u64) -> CatalogWatch {
        let table = TableMeta {
            name: "t".into(),
            partitions: vec![PartitionMeta {
                group: 7,
                hash_lo: 0,
                replicas: vec![1, 2, 3],
                epoch,
                ..PartitionMeta::default()
            }],
            hash_key: ("p".into(), "S".into()),
            ..TableMeta::default()
        };
        let watch = CatalogWatch::default();
        watch.publish(
            Catalog::from_doc(CatalogDoc {
                version,
                tables: vec![table],
                nodes: Vec::new(),
                users: Vec::new(),
                jobs: Vec::new(),
            })
            .unwrap(),
        );
        watch
    }

    #[test]
    fn only_requests_routed_with_an_older_epoch_are_stale() {
        let watch = catalog_with(40, 3);
        match check_epoch(&watch, 7, 2) {
            Err(ClusterError::StaleEpoch { group, version }) => {
                assert_eq!((group, version), (7, 40))
            }
            other => panic!("expected a stale epoch, got {other:?}"),
        }
        // Same epoch; a newer one (this node's catalog is behind); a request
        // not routed by the map; a group this node's catalog does not know.
        for (group, epoch) in [(7, 3), (7, 4), (7, 0), (8, 1)] {
            assert!(check_epoch(&watch, group, epoch).is_ok(), "{group}@{epoch}");
        }
    }
}
