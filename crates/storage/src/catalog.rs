//! Table metadata, owned by the catalog group (group 0). In the cluster this
//! becomes the control plane's state; here it is the one-node case.

use dynaraft_model::{KeyAttr, KeySchema, ScalarType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableStatus {
    #[default]
    Creating,
    Active,
    Updating,
    Deleting,
}

impl TableStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TableStatus::Creating => "CREATING",
            TableStatus::Active => "ACTIVE",
            TableStatus::Updating => "UPDATING",
            TableStatus::Deleting => "DELETING",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    /// The table's partitions in hash order; group ids and replicas are
    /// assigned when the control plane applies CreateTable.
    pub partitions: Vec<PartitionMeta>,
    pub status: TableStatus,
    pub created_ms: u64,
    pub hash_key: (String, String),
    pub range_key: Option<(String, String)>,
    /// AttributeDefinitions: (name, type descriptor).
    pub attributes: Vec<(String, String)>,
    pub billing_mode: String,
    pub read_capacity: u64,
    pub write_capacity: u64,
    pub tags: BTreeMap<String, String>,
    pub deletion_protection: bool,
    pub last_increase_ms: u64,
    pub last_decrease_ms: u64,
    pub decreases_today: u64,
    /// Time to Live: the attribute holding the expiry (epoch seconds), when enabled.
    #[serde(default)]
    pub ttl_attribute: Option<String>,
    /// Local secondary indexes, fixed at creation; an index's position is
    /// its id in the partitions' key space.
    #[serde(default)]
    pub local_indexes: Vec<IndexMeta>,
    /// Global secondary indexes, each with partitions of its own.
    #[serde(default)]
    pub global_indexes: Vec<GlobalIndexMeta>,
    /// The id the next global index gets (ids are never reused, so a
    /// re-created index never meets state of the one it replaces).
    #[serde(default)]
    pub next_index_id: u32,
    /// The table's streams (DynamoDB Streams), oldest first; the last is
    /// the latest. A disabled stream stays readable until its retention
    /// ends; enabling again starts a new stream.
    #[serde(default)]
    pub streams: Vec<StreamMeta>,
    /// A global table (version 2019.11.21): this deployment's region and
    /// the table's other replicas. `None` for a table of one region (boxed:
    /// commands carry table descriptions inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Box<Replication>>,
    /// Set on the hidden table that holds an on-demand backup's items
    /// (`crate::backup`): what the backup is of, and how far it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<BackupMeta>>,
    /// Set on a table restored from a backup: where from, and whether its
    /// items are still being copied in (it stays CREATING until they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RestoreMeta>>,
    /// Point-in-time recovery, when enabled: every partition's change log
    /// is pinned ([`PITR_HOLDER`]) and kept for the recovery period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<Box<PitrMeta>>,
    /// The ImportArn loading this table (ImportTable): it stays CREATING
    /// until the import finishes, and is deleted if the import fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importing: Option<Box<str>>,
    /// Resource-based policies (PutResourcePolicy): the table's, and its
    /// streams' by stream label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_policies: Vec<ResourcePolicyMeta>,
    /// OnDemandThroughput: the most read and write request units a second
    /// an on-demand table serves (unset: no maximum).
    #[serde(default, skip_serializing_if = "OnDemandMax::is_unset")]
    pub on_demand_max: OnDemandMax,
    /// Contributor Insights of the table and its global indexes, once
    /// enabled for them (UpdateContributorInsights).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insights: Vec<InsightsMeta>,
    /// WarmThroughput asked for, or raised by a capacity increase or a
    /// switch to on-demand: read and write units a second it never goes
    /// below (DescribeTable shows the larger of it and the table's base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<(u64, u64)>,
}

/// Contributor Insights of a table (`index` None) or of one of its global
/// indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsightsMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    pub enabled: bool,
    /// ContributorInsightsMode THROTTLED_KEYS (else
    /// ACCESSED_AND_THROTTLED_KEYS).
    pub throttled_only: bool,
    /// When it was last enabled or disabled, in Unix milliseconds
    /// (LastUpdateDateTime).
    pub updated_ms: u64,
    /// When its rules were made (their names' suffix): the enable that
    /// found it disabled.
    pub rules_ms: u64,
}

impl TableMeta {
    /// The Contributor Insights of the table (`index` None) or of one of
    /// its global indexes, if ever enabled.
    pub fn insights_of(&self, index: Option<&str>) -> Option<&InsightsMeta> {
        self.insights.iter().find(|i| i.index.as_deref() == index)
    }
}

/// An on-demand table's OnDemandThroughput maximums, in request units a
/// second; `None` has no maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandMax {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<u64>,
}

impl OnDemandMax {
    pub fn is_unset(&self) -> bool {
        self.read.is_none() && self.write.is_none()
    }
}

/// One resource-based policy of a table or of one of its streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePolicyMeta {
    /// The stream's label, or `None` for the table's own policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The policy document, in the canonical form GetResourcePolicy
    /// answers.
    pub document: String,
    /// Its RevisionId: the time it was put, in milliseconds since the
    /// epoch.
    pub revision_id: String,
}

impl TableMeta {
    /// Whether the table is billed per request (on-demand), not by
    /// provisioned capacity.
    pub fn pay_per_request(&self) -> bool {
        self.billing_mode == "PAY_PER_REQUEST"
    }

    /// The resource-based policy of the table (`stream` None) or of the
    /// stream with that label.
    pub fn resource_policy(&self, stream: Option<&str>) -> Option<&ResourcePolicyMeta> {
        self.resource_policies
            .iter()
            .find(|p| p.stream.as_deref() == stream)
    }
}

/// The change-log pin holder of point-in-time recovery.
pub const PITR_HOLDER: &str = "~pitr";
/// RecoveryPeriodInDays unless set, and its bounds, in days (DynamoDB's).
pub const DEFAULT_RECOVERY_PERIOD_DAYS: u64 = 35;
pub const MIN_RECOVERY_PERIOD_DAYS: u64 = 1;
pub const MAX_RECOVERY_PERIOD_DAYS: u64 = 35;
/// A day, in milliseconds.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Point-in-time recovery of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitrMeta {
    /// When it was enabled (every partition pinned), in Unix milliseconds:
    /// no restore goes further back.
    pub since_ms: u64,
    /// RecoveryPeriodInDays: how far back a restore may go.
    pub period_days: u64,
}

impl PitrMeta {
    /// EarliestRestorableDateTime at `now_ms`, in Unix milliseconds.
    pub fn earliest_ms(&self, now_ms: u64) -> u64 {
        self.since_ms
            .max(now_ms.saturating_sub(self.period_days.saturating_mul(DAY_MS)))
    }
}

/// BackupStatus of a backup whose items are still being copied.
pub const BACKUP_CREATING: &str = "CREATING";
/// BackupStatus of a backup that can be restored.
pub const BACKUP_AVAILABLE: &str = "AVAILABLE";

/// An on-demand backup, kept on the hidden table holding its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// BackupName.
    pub name: String,
    /// The backed-up table as it was when the backup was requested: its
    /// catalog name, key schema, indexes, stream, TTL and capacity (its
    /// partitions are those the backup copies from).
    pub source: Box<TableMeta>,
    /// The moment the backup holds the table at (BackupCreationDateTime),
    /// in Unix milliseconds: every write with a timestamp at or before it,
    /// none after.
    pub at_ms: u64,
    /// CREATING or AVAILABLE ([`BACKUP_CREATING`], [`BACKUP_AVAILABLE`]).
    pub status: String,
    /// The source partitions (groups) whose items are in the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<u64>,
    /// Items and bytes copied in, summed over the partitions done.
    #[serde(default)]
    pub items: u64,
    #[serde(default)]
    pub bytes: u64,
    /// A snapshot the server takes for point-in-time recovery (restores
    /// redo the log from it): never listed, described or restored by name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
}

/// Where a restored table came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMeta {
    /// The catalog name of the hidden table holding the backup (empty for
    /// a restore to a point in time).
    #[serde(default)]
    pub backup_table: String,
    /// A restore to a point in time: the catalog name of the live table
    /// whose partitions are copied and their changes since undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_table: Option<String>,
    /// The backup's ARN (none for a restore to a point in time) and its
    /// source table's ARN, as RestoreSummary reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_backup_arn: Option<String>,
    pub source_table_arn: String,
    /// RestoreDateTime: the moment the restored items are of, in Unix
    /// milliseconds.
    pub restore_ms: u64,
    /// Whether items are still being copied in.
    pub in_progress: bool,
    /// The partitions (groups) to copy in (the backup's, or the source
    /// table's), and those done.
    pub sources: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<u64>,
    /// A restore to a point in time from the point-in-time snapshot
    /// `backup_table`, taken at this moment: the snapshot's items are
    /// copied in, then the source's changes after it, up to `restore_ms`,
    /// redone (`sources` holds the snapshot's partitions and the
    /// source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redo_from_ms: Option<u64>,
}

/// ReplicaStatus of a replica whose items are being copied.
pub const REPLICA_CREATING: &str = "CREATING";
/// ReplicaStatus of a replica that follows every write.
pub const REPLICA_ACTIVE: &str = "ACTIVE";

/// Where a global table lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// This deployment's region: what its writes are stamped with.
    pub region: String,
    /// The other regions holding a replica, in the order they were added.
    pub replicas: Vec<ReplicaMeta>,
}

/// One other region's replica of a global table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMeta {
    pub region: String,
    /// DynamoDB's ReplicaStatus: CREATING while the items written before
    /// are copied to it, ACTIVE.
    pub status: String,
    /// The partitions (groups) that finished copying their items to it
    /// while it is CREATING.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<u64>,
    /// That replica's own settings, where known (DynamoDB's per-replica
    /// overrides).
    #[serde(default, skip_serializing_if = "ReplicaSettings::is_empty")]
    pub settings: ReplicaSettings,
}

/// What a replica's table may set for itself (UpdateTable ReplicaUpdates'
/// overrides). DescribeTable shows another region's value as an override
/// where it differs from this region's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSettings {
    /// Its table's read capacity units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_capacity: Option<u64>,
    /// Its global indexes' read capacity units, by index name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub index_read_capacity: BTreeMap<String, u64>,
    /// Its on-demand maximum read request units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_read_request_units: Option<i64>,
    /// Its table class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_class: Option<String>,
}

impl ReplicaSettings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How long a stream keeps its records unless configured otherwise, in
/// milliseconds (DynamoDB: 24 h).
pub const STREAM_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

fn default_stream_retention_ms() -> u64 {
    STREAM_RETENTION_MS
}

/// One stream of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// StreamViewType: KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES.
    pub view_type: String,
    /// When the stream was created, in Unix milliseconds (its label).
    pub created_ms: u64,
    /// When it was disabled (`None`: it is enabled).
    pub disabled_ms: Option<u64>,
    /// How long its records are kept, in milliseconds: the router's
    /// setting when the stream was enabled (catalogs from before the
    /// setting existed read as [`STREAM_RETENTION_MS`]).
    #[serde(default = "default_stream_retention_ms")]
    pub retention_ms: u64,
}

impl TableMeta {
    /// The region a global table's writes are stamped with (`None`: the
    /// table is not global).
    pub fn replication_region(&self) -> Option<String> {
        self.replication.as_ref().map(|r| r.region.clone())
    }

    /// Enables a new stream of `view_type` at `now_ms`. A new stream gets a
    /// label (and ARN) of its own, even within the millisecond the last one
    /// was made in.
    pub fn push_stream(&mut self, view_type: &str, now_ms: u64, retention_ms: u64) {
        let after_last = self.streams.last().map_or(0, |s| s.created_ms + 1);
        self.streams.push(StreamMeta {
            view_type: view_type.to_string(),
            created_ms: now_ms.max(after_last),
            disabled_ms: None,
            retention_ms,
        });
    }

    /// The enabled stream, if any: writes are logged for it.
    pub fn enabled_stream(&self) -> Option<&StreamMeta> {
        self.streams.last().filter(|s| s.disabled_ms.is_none())
    }

    /// Whether some stream may still be read at `now_ms` (enabled, or
    /// disabled less than a retention period ago), so change records must
    /// be kept for it.
    pub fn stream_readable(&self, now_ms: u64) -> bool {
        self.streams.iter().any(|s| {
            s.disabled_ms
                .is_none_or(|d| now_ms < d.saturating_add(s.retention_ms))
        })
    }

    /// How long the table's change records are kept for its streams, in
    /// milliseconds: the longest retention of any of them (the streams of a
    /// table share its change log).
    pub fn stream_retention_ms(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.retention_ms)
            .max()
            .unwrap_or(STREAM_RETENTION_MS)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexStatus {
    #[default]
    Creating,
    Active,
}

impl IndexStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexStatus::Creating => "CREATING",
            IndexStatus::Active => "ACTIVE",
        }
    }
}

/// A global secondary index: its definition, status and partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalIndexMeta {
    pub id: u32,
    pub index: IndexMeta,
    pub status: IndexStatus,
    /// Created on a table that may hold items (UpdateTable): each base
    /// partition backfills it, and it turns ACTIVE when all have.
    pub backfill: bool,
    /// Base partitions (groups) whose backfill finished.
    pub backfilled: Vec<u64>,
    pub partitions: Vec<PartitionMeta>,
    pub read_capacity: u64,
    pub write_capacity: u64,
}

/// The position in `parts` (in hash order) of the partition whose hash
/// range contains `hash`.
pub fn partition_index(parts: &[PartitionMeta], hash: u64) -> Option<usize> {
    parts.iter().rposition(|p| p.hash_lo <= hash)
}

/// Which attributes an index entry holds besides the table's and the
/// index's key attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Projection {
    All,
    KeysOnly,
    Include(Vec<String>),
}

impl Projection {
    pub fn type_name(&self) -> &'static str {
        match self {
            Projection::All => "ALL",
            Projection::KeysOnly => "KEYS_ONLY",
            Projection::Include(_) => "INCLUDE",
        }
    }
}

/// A secondary index: its name, key and projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IndexMetaRepr")]
pub struct IndexMeta {
    pub name: String,
    pub key: KeySchema,
    pub projection: Projection,
}

/// A stored [`IndexMeta`]: today's, or one written before multi-attribute
/// keys, whose key is a (name, type descriptor) pair per role.
#[derive(Deserialize)]
struct IndexMetaRepr {
    name: String,
    #[serde(default)]
    key: Option<KeySchema>,
    #[serde(default)]
    hash_key: Option<(String, String)>,
    #[serde(default)]
    range_key: Option<(String, String)>,
    projection: Projection,
}

impl TryFrom<IndexMetaRepr> for IndexMeta {
    type Error = String;
    fn try_from(r: IndexMetaRepr) -> Result<IndexMeta, String> {
        let key = match (r.key, r.hash_key) {
            (Some(key), _) => key,
            (None, Some(hash)) => KeySchema::simple(
                key_attr(&hash)?,
                r.range_key.as_ref().map(key_attr).transpose()?,
            ),
            (None, None) => return Err(format!("index {} has no key", r.name)),
        };
        Ok(IndexMeta {
            name: r.name,
            key,
            projection: r.projection,
        })
    }
}

impl IndexMeta {
    pub fn key_schema(&self) -> KeySchema {
        self.key.clone()
    }
}

/// A key attribute from its (name, type descriptor) pair.
pub fn key_attr((n, t): &(String, String)) -> Result<KeyAttr, String> {
    Ok(KeyAttr {
        name: n.clone(),
        ty: ScalarType::from_descriptor(t)
            .ok_or_else(|| format!("key attribute {n} has type {t:?}"))?,
    })
}

impl TableMeta {
    /// What a write command carries to maintain the local indexes (`None`
    /// for a table without any), with collections limited to `limit_bytes`.
    pub fn local_index_specs(
        &self,
        table: &KeySchema,
        limit_bytes: u64,
    ) -> Option<crate::index::LocalIndexes> {
        if self.local_indexes.is_empty() {
            return None;
        }
        let indexes = self
            .local_indexes
            .iter()
            .filter_map(|i| {
                Some(crate::index::LocalIndexSpec {
                    name: i.name.clone(),
                    sort: i.key.range.first()?.clone(),
                    projection: i.projection.clone(),
                })
            })
            .collect();
        Some(crate::index::LocalIndexes {
            table: table.clone(),
            indexes,
            collection_limit_bytes: limit_bytes,
        })
    }

    /// The global index named `name`.
    pub fn global_index(&self, name: &str) -> Option<&GlobalIndexMeta> {
        self.global_indexes.iter().find(|g| g.index.name == name)
    }

    /// What a write command carries for the global indexes: their keys, to
    /// check types (and, being non-empty, to log the write for them).
    pub fn global_key_specs(&self) -> Vec<crate::global::GlobalKeySpec> {
        self.global_indexes
            .iter()
            .map(|g| crate::global::GlobalKeySpec {
                name: g.index.name.clone(),
                schema: g.index.key_schema(),
            })
            .collect()
    }

    /// Every partition: the table's, then each global index's.
    pub fn all_partitions(&self) -> impl Iterator<Item = &PartitionMeta> {
        self.partitions
            .iter()
            .chain(self.global_indexes.iter().flat_map(|g| &g.partitions))
    }

    /// Every partition, mutably.
    pub fn all_partitions_mut(&mut self) -> impl Iterator<Item = &mut PartitionMeta> {
        self.partitions.iter_mut().chain(
            self.global_indexes
                .iter_mut()
                .flat_map(|g| g.partitions.iter_mut()),
        )
    }

    /// The local index named `name`, with its id.
    pub fn local_index(&self, name: &str) -> Option<(u8, &IndexMeta)> {
        self.local_indexes
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == name)
            .map(|(id, i)| (id as u8, i))
    }

    /// The table's key; a type descriptor that is not S, N or B (a
    /// damaged catalog) is an error.
    pub fn key_schema(&self) -> Result<KeySchema, crate::StorageError> {
        let attr = |k| key_attr(k).map_err(crate::StorageError::Corrupt);
        Ok(KeySchema::simple(
            attr(&self.hash_key)?,
            self.range_key.as_ref().map(attr).transpose()?,
        ))
    }

    /// The partition owning `storage_key` (whose first 8 bytes are the hash).
    pub fn partition_for_key(&self, storage_key: &[u8]) -> Option<&PartitionMeta> {
        self.partition_for_hash(key_hash(storage_key))
    }

    /// The partition whose hash range contains `hash`.
    pub fn partition_for_hash(&self, hash: u64) -> Option<&PartitionMeta> {
        self.partitions
            .get(partition_index(&self.partitions, hash)?)
    }

    /// The partitions of the table (`index` `None`) or of its global index
    /// with id `index`; `None` if there is no such index.
    pub fn partitions_of(&self, index: Option<u32>) -> Option<&[PartitionMeta]> {
        match index {
            None => Some(&self.partitions),
            Some(id) => self
                .global_indexes
                .iter()
                .find(|g| g.id == id)
                .map(|g| g.partitions.as_slice()),
        }
    }

    /// A stable table id derived from the first group and creation time.
    pub fn table_id(&self) -> String {
        let group = self.partitions.first().map_or(0, |p| p.group);
        let h = fnv1a(&format!("{}:{}:{}", self.name, group, self.created_ms));
        let h2 = fnv1a(&format!("{}:{}", h, self.name));
        let s = format!("{h:016x}{h2:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &s[0..8],
            &s[8..12],
            &s[12..16],
            &s[16..20],
            &s[20..32]
        )
    }
}

/// One partition of a table: a contiguous range of the 64-bit key hash,
/// replicated by one Raft group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub group: u64,
    /// Smallest hash the partition owns; it owns up to the next partition's.
    pub hash_lo: u64,
    /// Storage nodes holding a replica, at most one per availability zone.
    pub replicas: Vec<u64>,
    /// Bumped whenever the range or the replicas change.
    pub epoch: u64,
    /// The group this partition was split from (its stream shard's
    /// parent); `None` for a partition created with its table or index.
    #[serde(default)]
    pub parent: Option<u64>,
    /// A split the control plane began and has not recorded as done (see
    /// `Command::BeginSplit`).
    #[serde(default)]
    pub splitting: Option<PendingSplit>,
    /// Where the partition's stream shards closed: for each split of this
    /// partition, oldest first, the last change-log sequence logged before
    /// it. The partition's shard of generation `g` holds the records after
    /// `shard_ends[g - 1]` (the first, from the log's start) up to
    /// `shard_ends[g]`; the last generation is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_ends: Vec<u64>,
    /// The generation of `parent`'s shard that this partition's first
    /// shard continues; `None` for a partition created with its table, or
    /// split before shard lineage was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_shard: Option<u32>,
}

/// A split in progress: the partition's upper range from `at` goes to
/// group `child`, whose id is allocated when the split begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSplit {
    pub at: u64,
    pub child: u64,
}

impl PartitionMeta {
    /// `count` partitions splitting the hash space evenly, not yet placed.
    pub fn even_split(count: usize) -> Vec<PartitionMeta> {
        let count = count.clamp(1, MAX_PARTITIONS_PER_TABLE) as u128;
        (0..count)
            .map(|i| PartitionMeta {
                group: 0,
                hash_lo: ((u64::MAX as u128 + 1) * i / count) as u64,
                replicas: Vec::new(),
                epoch: 1,
                parent: None,
                splitting: None,
                shard_ends: Vec::new(),
                parent_shard: None,
            })
            .collect()
    }
}

/// The partition-key hash a storage key starts with (0 if it is shorter).
pub fn key_hash(storage_key: &[u8]) -> u64 {
    storage_key
        .first_chunk::<8>()
        .map_or(0, |b| u64::from_be_bytes(*b))
}

/// Most partitions a table is created with.
pub const MAX_PARTITIONS_PER_TABLE: usize = 256;

/// A storage node as the control plane knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    /// Address of the node's internal gRPC endpoint.
    pub addr: String,
    /// Availability zone label.
    pub az: String,
    /// Set by `dynaraft admin drain`: the node's replicas move to other
    /// nodes of its zone and no new replica is placed on it.
    #[serde(default)]
    pub draining: bool,
    /// The node encrypts its data directory at rest (`cipher`).
    #[serde(default)]
    pub encrypted: bool,
}

/// A user kept by the control plane (`dynaraft admin put-user`): the same
/// fields as a user of an auth file. The policies are IAM documents as
/// JSON; the API layer parses them (and the admin command checks them
/// before proposing).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub policies: Vec<serde_json::Value>,
}

fn fnv1a(s: &str) -> u64 {
    // A stable, dependency-free FNV-1a; only used to derive display ids.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
