//! Commands: what is appended to the log and applied by a state machine.
//! A command is self-contained and deterministic: it carries the time
//! stamped by the proposer, the storage key computed by the router, and the
//! expression sources, which the state machine re-parses when it applies
//! (parsing is pure, so every replica reaches the same outcome).

use crate::catalog::{GlobalIndexMeta, NodeRecord, TableMeta, TableStatus, UserRecord};
use crate::global::IndexBatch;
use crate::txn::{Prepare, TxnId};
use dynaraft_model::wire::WireItem;
use dynaraft_model::{Item, ModelError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// One log entry: a command and the proposer's wall-clock time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub ts_ms: u64,
    pub cmd: Command,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Catalog group: create a table; the group id is assigned on apply.
    CreateTable(TableMeta),
    /// Catalog group: move a table to a new status.
    SetTableStatus { name: String, status: TableStatus },
    /// Catalog group: replace a table's mutable settings (throughput,
    /// billing mode, tags), keyed by name.
    ReplaceTableMeta(TableMeta),
    /// Catalog group: forget a table (nodes then remove its groups).
    DropTable { name: String },
    /// Catalog group: mark a registered node as draining (or not).
    SetDraining { node: u64, draining: bool },
    /// Catalog group: add or update a storage node in the registry.
    RegisterNode(NodeRecord),
    /// Catalog group: add or replace a user (credentials and policies).
    PutUser(UserRecord),
    /// Catalog group: remove a user.
    DeleteUser { access_key_id: String },
    /// Catalog group: move `group`'s replica from node `old` to node `new`
    /// (re-replication after `old` stayed down), bumping the partition's
    /// epoch. Applying it twice changes nothing the second time.
    ReplaceReplica {
        table: String,
        group: u64,
        old: u64,
        new: u64,
    },
    /// Catalog group: add a global index to a table (UpdateTable); its id
    /// and partitions are assigned on apply, and the table is UPDATING
    /// until every base partition has backfilled it.
    AddGlobalIndex {
        table: String,
        index: GlobalIndexMeta,
        /// AttributeDefinitions of the new index's keys, added to the table's.
        attributes: Vec<(String, String)>,
    },
    /// Catalog group: set a global index's provisioned throughput.
    SetIndexThroughput {
        table: String,
        index: String,
        read: u64,
        write: u64,
    },
    /// Catalog group: remove a global index (its groups are then removed).
    DropGlobalIndex { table: String, index: String },
    /// Catalog group: base partition `group` finished backfilling index
    /// `index`; the last one makes the index ACTIVE.
    IndexBackfilled {
        table: String,
        index: u32,
        group: u64,
    },
    /// Catalog group: begin splitting partition `group` of `table` (or of
    /// its global index `index`) at hash `at`: allocates the child's group
    /// id and records the split as pending. A split already pending for the
    /// partition stays as it is. The outcome is the table.
    BeginSplit {
        table: String,
        index: Option<u32>,
        group: u64,
        at: u64,
    },
    /// Catalog group: the partition's group applied its pending split:
    /// record the child partition (same replicas, epoch 1) and bump the
    /// parent's epoch. Applying it twice changes nothing the second time.
    FinishSplit {
        table: String,
        index: Option<u32>,
        group: u64,
        /// The parent's leader when it applied the split, if known: the
        /// child's first replica (which initialises and first leads it),
        /// since it applied the split first.
        #[serde(default)]
        first: Option<u64>,
        /// The parent's last change-log sequence before the split (what
        /// `Split` answered): where the parent's stream shard closes.
        #[serde(default)]
        closed_at: Option<u64>,
    },
    /// Data group: a single-item write.
    Write(WriteCommand),
    /// Data group: writes of distinct keys applied in order as one entry
    /// (a chunk copied by a backup or a restore), up to the first one that
    /// is not written (`Outcome::Batched`). Refused whole if the group owns
    /// any of the keys no more.
    WriteBatch(Vec<WriteCommand>),
    /// Base data group: begin backfilling global index `index`.
    StartBackfill { index: u32 },
    /// Base data group: the backfill of `index` resumes after `next`
    /// (`None`: it is finished).
    BackfillProgress { index: u32, next: Option<Vec<u8>> },
    /// Base data group: change records up to `upto` were delivered to the
    /// global indexes; removed unless `retain` (a stream keeps them).
    TrimChangeLog {
        upto: u64,
        #[serde(default)]
        retain: bool,
    },
    /// Base data group: remove delivered change records older than
    /// `before_ms` (a stream's retention), at most `max` of them.
    PurgeChangeLog { before_ms: u64, max: u64 },
    /// Index data group: entries fed from a base partition.
    IndexApply(IndexBatch),
    /// Data group: its share of a transaction (see `txn`).
    TxnPrepare(Box<Prepare>),
    /// Anchor data group: commit or abort a transaction (first decision
    /// wins) and resolve the anchor's own intents on `keys`.
    TxnDecide {
        txn: TxnId,
        commit: bool,
        keys: Vec<Vec<u8>>,
        /// The anchor's hash, which the group must still own (a split may
        /// have moved the record); `None` from a proposer that predates it.
        #[serde(default)]
        anchor_hash: Option<u64>,
    },
    /// Data group: apply or drop a decided transaction's intents on `keys`.
    TxnResolve {
        txn: TxnId,
        commit: bool,
        keys: Vec<Vec<u8>>,
    },
    /// Data group: begin counting the changes to the counters of the range
    /// from hash `at`, so that a split there can take the range's counters
    /// from a tally made outside the apply (`split::prepare`).
    PrepareSplit { at: u64 },
    /// Data group: split in place at hash `at`, handing `[at, hi)` to the
    /// new group `child` (see `split`); `index_partition`: the group is a
    /// global index's partition.
    Split {
        at: u64,
        child: u64,
        index_partition: bool,
        /// The child's counters as tallied on a snapshot after a
        /// `PrepareSplit` at `at` (`split::prepared_tally`); without it, or
        /// when it no longer matches, the apply counts them itself.
        #[serde(default)]
        tally: Option<crate::split::SplitTally>,
    },
    /// Anchor data group: every participant of `txn` is resolved.
    TxnFinish { txn: TxnId },
    /// Anchor data group: drop records past the idempotency window.
    TxnForget { txns: Vec<TxnId> },
    /// Catalog group: partition `group` of `table` copied its items to the
    /// replica in `region`; when every partition has, the replica is ACTIVE.
    ReplicaCopied {
        table: String,
        region: String,
        group: u64,
    },
    /// Data group of a global table: begin replicating to region `peer`,
    /// this deployment being region `region` (see `replica::start`). The
    /// outcome is the peer's cursor.
    StartReplication { region: String, peer: String },
    /// Data group: region `peer` acknowledged the change records up to
    /// `upto` (and, when `copied`, the copy of the items written before).
    ReplicationShipped {
        peer: String,
        upto: u64,
        copied: bool,
    },
    /// Data group: stop replicating to region `peer`.
    StopReplication { peer: String },
    /// Data group: keep every change after the log's last record for
    /// `holder` (a backup copying the partition), logging every write
    /// until released (`crate::backup`). Outcome: the pin's sequence.
    PinChangeLog { holder: String },
    /// Data group: release `holder`'s pin.
    UnpinChangeLog { holder: String },
    /// Data group: move `holder`'s pin up to sequence `upto` (a recovery
    /// period's oldest changes, no longer needed).
    AdvancePin { holder: String, upto: u64 },
    /// Catalog group: the partition `group` finished copying items into
    /// `table` (a backup's hidden table, or a table being restored), with
    /// `items` items of `bytes` bytes. The last partition makes the backup
    /// AVAILABLE, or the restored table ACTIVE.
    PartitionCopied {
        table: String,
        group: u64,
        items: u64,
        bytes: u64,
    },
    /// Catalog group: records export or import `0` (created, or its
    /// progress); a job already finished is never changed again.
    PutJob(Box<crate::jobs::Job>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteKind {
    Put,
    Update,
    Delete,
    /// A transaction's ConditionCheck: the item is only checked (and held).
    Check,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteCommand {
    pub kind: WriteKind,
    /// Order-preserving storage key of the item.
    pub storage_key: Vec<u8>,
    /// The key attributes, used to create an item on update.
    pub key: JsonDoc,
    /// The new item for Put.
    pub item: Option<JsonDoc>,
    pub condition: Option<String>,
    pub update: Option<String>,
    pub names: BTreeMap<String, String>,
    /// ExpressionAttributeValues.
    pub values: JsonDoc,
    /// The table's local secondary indexes, maintained in the same apply.
    #[serde(default)]
    pub local: Option<crate::index::LocalIndexes>,
    /// The table's global indexes: their key types are checked, and the
    /// write is logged for them when the list is not empty.
    #[serde(default)]
    pub global: Vec<crate::global::GlobalKeySpec>,
    /// `update` translates legacy AttributeUpdates: a type mismatch gets
    /// that parameter's message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy_update: bool,
    /// The table has a stream: the change is logged for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Who makes the change (a client, Time to Live, another region).
    #[serde(default)]
    pub origin: crate::global::Origin,
    /// The table is global: the write is versioned and logged (boxed: most
    /// writes are not, and every log entry carries the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated: Option<Box<crate::replica::GlobalWrite>>,
}

impl WriteCommand {
    /// The region a global table's write is stamped with.
    pub fn region(&self) -> Option<&str> {
        self.replicated.as_ref().map(|g| g.region.as_str())
    }

    /// The version a write replicated from another region got there.
    pub fn version(&self) -> Option<&crate::replica::Version> {
        self.replicated.as_ref().and_then(|g| g.version.as_ref())
    }
}

/// A DynamoDB JSON map (an item, a key, ExpressionAttributeValues) carried
/// as its JSON text. A write's entry stays in memory until its group purges
/// its log, is cloned for the apply and for each follower, and is written to
/// the WAL and the network as JSON. As text it is one allocation to clone
/// and to free and is written out as it is; as a parsed tree it was dozens
/// of small allocations, freed in bursts of thousands at every purge. The
/// state machine parses it where it applies it. Serialized, it is the same
/// JSON as the tree was, so logs written before read back unchanged.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonDoc(Box<RawValue>);

impl JsonDoc {
    pub fn new(v: &serde_json::Value) -> JsonDoc {
        JsonDoc::of(v)
    }

    /// An item, key or set of values as its DynamoDB JSON, written straight
    /// from the values (`AttributeValue`'s `Serialize`), the same text as
    /// through `item_to_json`'s tree.
    pub fn from_item(item: &Item) -> JsonDoc {
        JsonDoc::of(item)
    }

    /// `doc` as JSON text. Neither a `Value` nor an item can fail to
    /// serialize (string keys, values written as text); if one ever did,
    /// the document would be `null`, which [`JsonDoc::item`] refuses, so
    /// the write would be refused at apply, never stored wrong.
    fn of(doc: &impl Serialize) -> JsonDoc {
        JsonDoc(serde_json::value::to_raw_value(doc).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// JSON `null` (what a command without the document carries).
    pub fn null() -> JsonDoc {
        JsonDoc(RawValue::NULL.to_owned())
    }

    /// The document parsed as a map of attribute values, in one pass (the
    /// typed API's `WireItem`, no `Value` tree), with the same validation
    /// as a request's item.
    pub fn item(&self) -> Result<Item, ModelError> {
        serde_json::from_str::<WireItem>(self.0.get())
            .map_err(|e| ModelError::Serialization(e.to_string()))?
            .into_item()
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Result<Entry, crate::StorageError> {
        serde_json::from_slice(bytes)
            .map_err(|e| crate::StorageError::Corrupt(format!("log entry: {e}")))
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.cmd {
            Command::CreateTable(m) => format!("CreateTable({})", m.name),
            Command::SetTableStatus { name, status } => {
                format!("SetTableStatus({name}, {})", status.as_str())
            }
            Command::ReplaceTableMeta(m) => format!("ReplaceTableMeta({})", m.name),
            Command::DropTable { name } => format!("DropTable({name})"),
            Command::RegisterNode(n) => format!("RegisterNode({}@{})", n.id, n.az),
            // Never the secret.
            Command::PutUser(u) => format!("PutUser({})", u.access_key_id),
            Command::DeleteUser { access_key_id } => format!("DeleteUser({access_key_id})"),
            Command::SetDraining { node, draining } => format!("SetDraining({node}, {draining})"),
            Command::ReplaceReplica {
                table,
                group,
                old,
                new,
            } => format!("ReplaceReplica({table}, group {group}, {old} -> {new})"),
            Command::SetIndexThroughput { table, index, .. } => {
                format!("SetIndexThroughput({table}, {index})")
            }
            Command::AddGlobalIndex { table, index, .. } => {
                format!("AddGlobalIndex({table}, {})", index.index.name)
            }
            Command::DropGlobalIndex { table, index } => {
                format!("DropGlobalIndex({table}, {index})")
            }
            Command::IndexBackfilled {
                table,
                index,
                group,
            } => format!("IndexBackfilled({table}, {index}, group {group})"),
            Command::Write(w) => format!("{:?}({} key bytes)", w.kind, w.storage_key.len()),
            Command::WriteBatch(ws) => format!("WriteBatch({} writes)", ws.len()),
            Command::StartBackfill { index } => format!("StartBackfill({index})"),
            Command::BackfillProgress { index, next } => {
                format!("BackfillProgress({index}, done: {})", next.is_none())
            }
            Command::TrimChangeLog { upto, retain } => format!("TrimChangeLog({upto}, {retain})"),
            Command::PurgeChangeLog { before_ms, max } => {
                format!("PurgeChangeLog(< {before_ms} ms, {max})")
            }
            Command::IndexApply(b) => format!("IndexApply(from {}, {} ops)", b.source, b.ops.len()),
            Command::TxnPrepare(p) => format!("TxnPrepare({:x}, {} ops)", p.txn, p.ops.len()),
            Command::TxnDecide { txn, commit, .. } => format!("TxnDecide({txn:x}, {commit})"),
            Command::TxnResolve { txn, commit, .. } => format!("TxnResolve({txn:x}, {commit})"),
            Command::TxnFinish { txn } => format!("TxnFinish({txn:x})"),
            Command::TxnForget { txns } => format!("TxnForget({} records)", txns.len()),
            Command::ReplicaCopied {
                table,
                region,
                group,
            } => format!("ReplicaCopied({table}, {region}, group {group})"),
            Command::StartReplication { region, peer } => {
                format!("StartReplication({region} -> {peer})")
            }
            Command::ReplicationShipped { peer, upto, copied } => {
                format!("ReplicationShipped({peer}, {upto}, copied: {copied})")
            }
            Command::StopReplication { peer } => format!("StopReplication({peer})"),
            Command::PinChangeLog { holder } => format!("PinChangeLog({holder})"),
            Command::UnpinChangeLog { holder } => format!("UnpinChangeLog({holder})"),
            Command::AdvancePin { holder, upto } => format!("AdvancePin({holder}, {upto})"),
            Command::PartitionCopied { table, group, .. } => {
                format!("PartitionCopied({table}, group {group})")
            }
            Command::PutJob(j) => format!("PutJob({}, {})", j.arn, j.status),
            Command::Split { at, child, .. } => format!("Split(at {at:#x}, child {child})"),
            Command::PrepareSplit { at } => format!("PrepareSplit(at {at:#x})"),
            Command::BeginSplit {
                table, group, at, ..
            } => format!("BeginSplit({table}, group {group} at {at:#x})"),
            Command::FinishSplit { table, group, .. } => {
                format!("FinishSplit({table}, group {group})")
            }
        };
        write!(f, "{what}@{}", self.ts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynaraft_model::value::{item_from_json, item_to_json};
    use serde_json::json;

    /// A write logged when its documents were parsed trees, with spaces
    /// where a hand-written or older encoder put them.
    const LOGGED_AS_TREES: &str = r#"{"ts_ms": 7, "cmd": {"Write": {
        "kind": "Put", "storage_key": [1, 2],
        "key": {"pk": {"S": "a"}},
        "item": {"pk": {"S": "a"}, "n": {"N": "1.50"}, "l": {"L": [{"BOOL": true}]}},
        "condition": null, "update": null, "names": {},
        "values": {":v": {"S": "x"}}}}}"#;

    /// Documents carried as text write the same JSON the trees wrote, and
    /// entries logged from trees read back with the same items.
    #[test]
    fn documents_as_text_keep_the_logged_json() {
        let item = json!({"pk": {"S": "a"}, "n": {"N": "1.50"}});
        let doc = JsonDoc::new(&item);
        assert_eq!(serde_json::to_string(&doc).unwrap(), item.to_string());

        let entry = Entry::decode(LOGGED_AS_TREES.as_bytes()).unwrap();
        let Command::Write(w) = &entry.cmd else {
            panic!("not a write: {entry}");
        };
        let expected = json!({"pk": {"S": "a"}, "n": {"N": "1.50"}, "l": {"L": [{"BOOL": true}]}});
        let parsed = w.item.as_ref().unwrap().item().unwrap();
        assert_eq!(parsed, item_from_json(&expected).unwrap());
        assert_eq!(
            w.key.item().unwrap(),
            item_from_json(&json!({"pk": {"S": "a"}})).unwrap()
        );
        assert_eq!(w.values.item().unwrap().len(), 1);
        // Written from the values, an item is the text its tree made.
        assert_eq!(
            JsonDoc::from_item(&parsed).as_str(),
            item_to_json(&parsed).to_string()
        );

        let again = Entry::decode(&entry.encode()).unwrap();
        let Command::Write(w2) = &again.cmd else {
            panic!("not a write: {again}");
        };
        assert_eq!(w2.item.as_ref().unwrap().item().unwrap(), parsed);
    }

    /// A command without a document carries JSON null, which is not a map.
    #[test]
    fn a_missing_document_is_null_and_not_an_item() {
        assert_eq!(JsonDoc::null().as_str(), "null");
        assert!(JsonDoc::null().item().is_err());
    }
}
