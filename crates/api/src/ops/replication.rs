//! Global tables (version 2019.11.21): UpdateTable's `ReplicaUpdates`,
//! DescribeTable's `Replicas`, and the calls regions make to each other
//! (`DynaraftReplication_20261203.<Op>`, see `dynaraft_cluster::peer`):
//!
//! - `CreateReplica`: create the table here as a replica of a global table
//!   (same keys, indexes and throughput, a NEW_AND_OLD_IMAGES stream).
//! - `UpdateReplicas`: another region was added to or removed from the
//!   global table.
//! - `DeleteReplica`: delete this region's replica.
//! - `UpdateReplicaSettings`: another region set this replica's overrides.
//! - `ApplySettings`: an UpdateTable or UpdateTimeToLive made in another
//!   region, which DynamoDB applies to every replica (billing mode,
//!   throughput, global indexes, time to live; deletion protection, tags
//!   and backups stay each region's own).
//! - `ApplyWrites`: writes replicated from another region, each with its
//!   version; each is applied only if later than the item's (last writer
//!   wins, `dynaraft_storage::replica`).
//!
//! Adding a replica in region R, from this region L: R creates the table
//! (listing L and every other replica), every other replica hears of R,
//! then L lists R as CREATING. Each region's replicator copies the items
//! written there to R and follows its change log; R is ACTIVE here once
//! every partition here copied. A call that fails leaves this region's
//! table as it was (retrying the UpdateTable is safe: every step is
//! idempotent).

use super::create_table::{self, CreateTableInput};
use super::{TableInput, describe, key_schema_json};
use crate::Api;
use crate::error::ApiError;
use crate::params::Violations;
use crate::params::parse_body;
use crate::scope::display_name;
use dynaraft_cluster::Table;
use dynaraft_cluster::backup::plain_write;
use dynaraft_cluster::peer::{PeerError, PeerRegions, valid_region_name};
use dynaraft_model::value::item_from_json;
use dynaraft_model::wire::{Int, List, Obj, Str};
use dynaraft_storage::catalog::{REPLICA_ACTIVE, REPLICA_CREATING};
use dynaraft_storage::global::Origin;
use dynaraft_storage::replica::{GlobalWrite, Version};
use dynaraft_storage::{
    Command, Outcome, ReplicaMeta, ReplicaSettings, Replication, TableMeta, WriteCommand,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// DescribeTable's `GlobalTableVersion` of a table with replicas.
pub const GLOBAL_TABLE_VERSION: &str = "2019.11.21";
/// The replication calls served (after the replication target prefix).
pub const REPLICATION_OPERATIONS: &[&str] = &[
    "ApplySettings",
    "ApplyWrites",
    "CreateReplica",
    "DeleteReplica",
    "UpdateReplicaSettings",
    "UpdateReplicas",
];
/// Most writes one `ApplyWrites` carries.
pub const MAX_APPLY_WRITES: usize = 1024;
/// Writes of one `ApplyWrites` proposed at once.
pub const APPLY_CONCURRENCY: usize = 32;
/// The stream view a global table's stream has (DynamoDB enables it when
/// the first replica is added).
const REPLICA_STREAM_VIEW: &str = "NEW_AND_OLD_IMAGES";

/// Table class names a replica may override its class with.
const TABLE_CLASSES: &[&str] = &["STANDARD", "STANDARD_INFREQUENT_ACCESS"];
/// DescribeTable's `GlobalTableSettingsReplicationMode` of a table with
/// replicas: settings follow the group, each replica may override some.
const SETTINGS_REPLICATION_MODE: &str = "ENABLED_WITH_OVERRIDES";
/// DynamoDB's refusal of a replica action naming the region it is sent to.
const LOCAL_REGION: &str = "Cannot add, delete, or update the local region through ReplicaUpdates. Use CreateTable, DeleteTable, or UpdateTable as required.";

/// The table-level global table fields of DescribeTable.
pub fn describe_global(d: &mut Value, meta: &TableMeta) {
    let Some(rep) = meta.replication.as_ref().filter(|r| !r.replicas.is_empty()) else {
        return;
    };
    d["GlobalTableVersion"] = json!(GLOBAL_TABLE_VERSION);
    d["GlobalTableSettingsReplicationMode"] = json!(SETTINGS_REPLICATION_MODE);
    d["Replicas"] = rep
        .replicas
        .iter()
        .map(|r| replica_description(r, meta))
        .collect();
}

/// One `Replicas` entry of DescribeTable: another region's replica, with
/// its settings where they differ from this region's (its overrides).
fn replica_description(r: &ReplicaMeta, meta: &TableMeta) -> Value {
    let mut d = json!({"RegionName": r.region, "ReplicaStatus": r.status});
    let partitions = meta.partitions.len();
    if r.status == REPLICA_CREATING && partitions > 0 {
        let done = r.copied.len().min(partitions) * 100 / partitions;
        d["ReplicaStatusPercentProgress"] = json!(done.to_string());
    }
    let provisioned = !meta.pay_per_request();
    let s = &r.settings;
    if let Some(rcu) = s
        .read_capacity
        .filter(|v| provisioned && *v != meta.read_capacity)
    {
        d["ProvisionedThroughputOverride"] = json!({"ReadCapacityUnits": rcu});
    }
    if let Some(max) = s.max_read_request_units {
        d["OnDemandThroughputOverride"] = json!({"MaxReadRequestUnits": max});
    }
    if let Some(class) = s.table_class.as_deref().filter(|c| *c != "STANDARD") {
        d["ReplicaTableClassSummary"] = json!({"TableClass": class});
    }
    if !meta.global_indexes.is_empty() {
        d["GlobalSecondaryIndexes"] = meta
            .global_indexes
            .iter()
            .map(|g| {
                let mut ix = json!({"IndexName": g.index.name});
                let theirs = s.index_read_capacity.get(&g.index.name).copied();
                if let Some(rcu) = theirs.filter(|v| provisioned && *v != g.read_capacity) {
                    ix["ProvisionedThroughputOverride"] = json!({"ReadCapacityUnits": rcu});
                }
                ix
            })
            .collect();
    }
    d
}

/// One `ReplicaUpdates` member: one of its actions.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicaUpdateIn {
    pub create: Option<Obj<ReplicaActionIn>>,
    pub update: Option<Obj<ReplicaActionIn>>,
    pub delete: Option<Obj<ReplicaActionIn>>,
}

/// A replica action: its region and, for Create and Update, the replica's
/// own settings (Delete carries the region only).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicaActionIn {
    pub region_name: Option<Str>,
    #[serde(rename = "KMSMasterKeyId")]
    pub kms_master_key_id: Option<Str>,
    pub provisioned_throughput_override: Option<Obj<ReadOverrideIn>>,
    pub on_demand_throughput_override: Option<Obj<OnDemandOverrideIn>>,
    pub global_secondary_indexes: Option<List<Obj<ReplicaIndexIn>>>,
    pub table_class_override: Option<Str>,
}

/// ProvisionedThroughputOverride: read capacity only.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReadOverrideIn {
    pub read_capacity_units: Option<Int>,
}

/// OnDemandThroughputOverride: a read maximum only.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct OnDemandOverrideIn {
    pub max_read_request_units: Option<Int>,
}

/// One ReplicaGlobalSecondaryIndex: an index's overrides in the replica.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicaIndexIn {
    pub index_name: Option<Str>,
    pub provisioned_throughput_override: Option<Obj<ReadOverrideIn>>,
    pub on_demand_throughput_override: Option<Obj<OnDemandOverrideIn>>,
}

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("One or more parameter values were invalid: {msg}"))
}

/// The deployment's peer regions, or why replicas cannot be made here.
fn peers(api: &Api) -> Result<Arc<PeerRegions>, ApiError> {
    let peers = api.cfg.peer_regions.clone().ok_or_else(|| {
        invalid("this deployment has no peer regions (start it with --peer-region)")
    })?;
    if !api.scope.is_shared() {
        // A per-key database (embedded without --shared-db) is nobody's
        // global table.
        return Err(invalid(
            "global tables need the shared database (--shared-db)",
        ));
    }
    Ok(peers)
}

/// A failed call to `region`, as the client that asked for it sees it.
fn peer_failed(region: &str, e: PeerError) -> ApiError {
    invalid(format!(
        "the replica in region {region} could not be changed: {e}"
    ))
}

/// One replica action of a request.
enum Action<'a> {
    Create(&'a ReplicaActionIn),
    Update(&'a ReplicaActionIn),
    Delete(&'a ReplicaActionIn),
}

impl<'a> Action<'a> {
    fn of(u: &'a ReplicaUpdateIn) -> Result<Self, ApiError> {
        match (
            u.create.as_deref(),
            u.update.as_deref(),
            u.delete.as_deref(),
        ) {
            (Some(a), None, None) => Ok(Action::Create(a)),
            (None, Some(a), None) => Ok(Action::Update(a)),
            (None, None, Some(a)) => Ok(Action::Delete(a)),
            (None, None, None) => Err(no_actions()),
            _ => Err(ApiError::validation(
                "Update table operation with more than one type of replica actions not allowed.",
            )),
        }
    }

    fn input(&self) -> &'a ReplicaActionIn {
        match self {
            Action::Create(a) | Action::Update(a) | Action::Delete(a) => a,
        }
    }
}

fn no_actions() -> ApiError {
    ApiError::validation(
        "There are no actions specified in the Replica Update Action of the request.",
    )
}

/// DynamoDB's refusal of an Update or Delete of a region that holds no
/// replica of the table.
fn not_a_member(region: &str) -> ApiError {
    ApiError::validation(format!(
        "Update global table operation failed because one or more replicas were not part of the global table. Please retry the request without these replicas: [{region}]."
    ))
}

/// UpdateTable with `ReplicaUpdates`: one Create or Delete, or Updates.
pub async fn replica_updates(
    api: &Api,
    t: &Table,
    updates: &List<Obj<ReplicaUpdateIn>>,
) -> Result<Value, ApiError> {
    let actions = updates
        .0
        .iter()
        .map(|u| Action::of(u))
        .collect::<Result<Vec<_>, _>>()?;
    let membership = actions
        .iter()
        .filter(|a| !matches!(a, Action::Update(_)))
        .count();
    if membership > 1 {
        return Err(ApiError::validation(
            "Update table operation with more than one create or delete replica actions not allowed.",
        ));
    }
    if membership == 1 && actions.len() > 1 {
        return Err(ApiError::validation(
            "Update table operation with more than one type of replica actions not allowed.",
        ));
    }
    let peers = peers(api)?;
    let mut regions = Vec::with_capacity(actions.len());
    for a in &actions {
        let name = a.input().region_name.as_deref().unwrap_or_default();
        if !valid_region_name(name) {
            return Err(invalid(format!("{name:?} is not a region name")));
        }
        if name == peers.local() {
            return Err(ApiError::validation(LOCAL_REGION));
        }
        regions.push(name.to_string());
    }
    let name = display_name(&t.meta.name).to_string();
    let mut meta = t.meta.clone();
    for (a, region) in actions.iter().zip(&regions) {
        meta = match a {
            Action::Create(a) => {
                api.authorize(|| crate::auth::Access::table("CreateTableReplica", &name))?;
                let settings = settings_of(&meta, a, &Default::default(), false)?;
                add_replica(api, &peers, &meta, region, settings).await?
            }
            Action::Delete(_) => {
                api.authorize(|| crate::auth::Access::table("DeleteTableReplica", &name))?;
                remove_replica(api, &peers, &meta, region).await?
            }
            Action::Update(a) => {
                let current = meta
                    .replication
                    .iter()
                    .flat_map(|r| r.replicas.iter())
                    .find(|r| r.region == *region)
                    .ok_or_else(|| not_a_member(region))?
                    .settings
                    .clone();
                let settings = settings_of(&meta, a, &current, true)?;
                update_replica(api, &peers, &meta, region, settings).await?
            }
        };
    }
    Ok(json!({ "TableDescription": describe(api, &meta).await? }))
}

/// The settings a replica action gives its replica: `current` with what
/// the action overrides. `update`: an Update action, which must change
/// something and may not name an index the table lacks (a Create's unknown
/// index is ignored, as DynamoDB does).
fn settings_of(
    meta: &TableMeta,
    a: &ReplicaActionIn,
    current: &ReplicaSettings,
    update: bool,
) -> Result<ReplicaSettings, ApiError> {
    if a.kms_master_key_id.is_some() {
        return Err(invalid(
            "KMSMasterKeyId: dynaraft encrypts every replica with its node's own key (--encryption-key-file); a replica takes no key of its own",
        ));
    }
    let provisioned = !meta.pay_per_request();
    let on_demand_throughput = || {
        invalid(
            "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
        )
    };
    let mut v = Violations::default();
    let mut read_units = |o: &ReadOverrideIn, path: &str| -> Option<u64> {
        match o.read_capacity_units.as_ref().map(|i| i.0) {
            None => {
                v.null(&format!("{path}.readCapacityUnits"));
                None
            }
            Some(x) if x < 1 => {
                v.add(
                    Some(&x.to_string()),
                    &format!("{path}.readCapacityUnits"),
                    "Member must have value greater than or equal to 1",
                );
                None
            }
            Some(x) => Some(x.unsigned_abs()),
        }
    };
    let mut s = current.clone();
    let mut changed = false;
    if let Some(o) = a.provisioned_throughput_override.as_deref() {
        changed = true;
        let units = read_units(o, "provisionedThroughputOverride");
        if !provisioned && update {
            return Err(on_demand_throughput());
        }
        if provisioned {
            s.read_capacity = units.or(s.read_capacity);
        }
    }
    for ix in a.global_secondary_indexes.iter().flat_map(|l| l.0.iter()) {
        changed = true;
        let ix_name = ix.index_name.as_deref().unwrap_or_default();
        let known = meta.global_indexes.iter().any(|g| g.index.name == ix_name);
        if !known && update {
            return Err(invalid(format!(
                "table {} has no global secondary index {ix_name}",
                display_name(&meta.name)
            )));
        }
        if ix.on_demand_throughput_override.is_some() {
            return Err(invalid(
                "a replica index's OnDemandThroughputOverride is not supported by dynaraft yet",
            ));
        }
        if let Some(o) = ix.provisioned_throughput_override.as_deref() {
            let units = read_units(o, "globalSecondaryIndexes.provisionedThroughputOverride");
            if !provisioned && update {
                return Err(on_demand_throughput());
            }
            if let Some(units) = units.filter(|_| known && provisioned) {
                s.index_read_capacity.insert(ix_name.to_string(), units);
            }
        }
    }
    if let Some(o) = a.on_demand_throughput_override.as_deref() {
        changed = true;
        match o.max_read_request_units.as_ref().map(|i| i.0) {
            Some(x) if x == -1 || x >= 1 => s.max_read_request_units = Some(x).filter(|x| *x != -1),
            Some(x) => v.add(
                Some(&x.to_string()),
                "onDemandThroughputOverride.maxReadRequestUnits",
                "Member must have value greater than or equal to 1, or -1 for no maximum",
            ),
            None => {}
        }
    }
    if let Some(class) = a.table_class_override.as_deref() {
        changed = true;
        if TABLE_CLASSES.contains(&class) {
            s.table_class = Some(class.to_string()).filter(|c| c != "STANDARD");
        } else {
            v.add(
                Some(class),
                "tableClassOverride",
                "Member must satisfy enum value set: [STANDARD_INFREQUENT_ACCESS, STANDARD]",
            );
        }
    }
    v.check()?;
    if update && !changed {
        return Err(no_actions());
    }
    Ok(s)
}

/// What this region's own table is, as another region records it.
fn own_settings(meta: &TableMeta) -> ReplicaSettings {
    if meta.pay_per_request() {
        return ReplicaSettings::default();
    }
    ReplicaSettings {
        read_capacity: Some(meta.read_capacity),
        index_read_capacity: meta
            .global_indexes
            .iter()
            .map(|g| (g.index.name.clone(), g.read_capacity))
            .collect(),
        ..Default::default()
    }
}

/// `s`, a replica's settings as this region knows them, with what it
/// leaves unsaid filled in from this region's own (which it inherits).
fn known(meta: &TableMeta, s: &ReplicaSettings) -> ReplicaSettings {
    let own = own_settings(meta);
    let mut k = s.clone();
    k.read_capacity = k.read_capacity.or(own.read_capacity);
    for (ix, units) in own.index_read_capacity {
        k.index_read_capacity.entry(ix).or_insert(units);
    }
    k
}

/// Every member of `meta`'s global table but `except`, with its settings
/// as this region knows them (this region's own included): what `except`
/// records of them.
fn members(peers: &PeerRegions, meta: &TableMeta, except: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(peers.local().to_string(), json!(own_settings(meta)));
    for r in meta.replication.iter().flat_map(|r| r.replicas.iter()) {
        if r.region != except {
            m.insert(r.region.clone(), json!(known(meta, &r.settings)));
        }
    }
    Value::Object(m)
}

/// The settings a call lists per region under `Members`.
fn member_settings(body: &Value) -> Result<BTreeMap<String, ReplicaSettings>, ApiError> {
    match body.get("Members") {
        None => Ok(BTreeMap::new()),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|_| invalid("Members must map region names to replica settings")),
    }
}

/// Applies the settings this region's replica was given to its own
/// table: its read capacity in `meta`, its indexes' by their own catalog
/// command (a table's metadata does not carry index changes).
async fn apply_own(api: &Api, meta: &mut TableMeta, s: &ReplicaSettings) -> Result<(), ApiError> {
    if meta.pay_per_request() {
        return Ok(());
    }
    if let Some(units) = s.read_capacity {
        meta.read_capacity = units;
    }
    for g in &meta.global_indexes {
        match s.index_read_capacity.get(&g.index.name) {
            Some(read) if *read != g.read_capacity => {
                let cmd = Command::SetIndexThroughput {
                    table: meta.name.clone(),
                    index: g.index.name.clone(),
                    read: *read,
                    write: g.write_capacity,
                };
                super::change_table(api, cmd, &meta.name).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The regions of `meta`'s replicas.
fn replica_regions(meta: &TableMeta) -> Vec<String> {
    meta.replication
        .iter()
        .flat_map(|r| r.replicas.iter().map(|r| r.region.clone()))
        .collect()
}

/// Adds a replica in `region` to the table `meta`, with `settings` its own.
async fn add_replica(
    api: &Api,
    peers: &PeerRegions,
    meta: &TableMeta,
    region: &str,
    settings: ReplicaSettings,
) -> Result<TableMeta, ApiError> {
    let name = display_name(&meta.name).to_string();
    if !peers.knows(region) {
        return Err(invalid(format!(
            "region {region} is not a peer region of this deployment (--peer-region)"
        )));
    }
    let existing = replica_regions(meta);
    if existing.iter().any(|r| r == region) {
        return Err(already_tables(&name));
    }
    let mut meta = meta.clone();
    match meta.enabled_stream() {
        Some(s) if s.view_type != REPLICA_STREAM_VIEW => {
            return Err(invalid(format!(
                "table {name} has a stream of view type {}; a global table's stream is {REPLICA_STREAM_VIEW}",
                s.view_type
            )));
        }
        Some(_) => {}
        None => meta.push_stream(
            REPLICA_STREAM_VIEW,
            dynaraft_storage::wall_clock_ms(),
            api.cfg.stream_retention_ms,
        ),
    }
    // 1. The new replica, listing this region and every other replica
    //    with what each of them is.
    let mut group: Vec<String> = existing.clone();
    group.push(peers.local().to_string());
    let body = json!({
        "TableName": meta.name,
        "SourceRegion": peers.local(),
        "Replicas": group,
        "Members": members(peers, &meta, region),
        "Table": create_request(&meta, &settings)?,
    });
    peers
        .call(region, "CreateReplica", &body)
        .await
        .map_err(|e| match e {
            // The region has a table of that name (a replica being deleted,
            // or a table of its own).
            PeerError::Refused { ref type_name, .. }
                if type_name.ends_with("ResourceInUseException") =>
            {
                already_tables(&name)
            }
            e => peer_failed(region, e),
        })?;
    // 2. Every other replica copies its own writes to it and follows.
    let added = json!({"Add": [region]});
    tell_replicas(peers, &meta, &existing, region, &added).await?;
    // 3. This region lists it, CREATING until every partition copied.
    let settings = known(&meta, &settings);
    let rep = meta.replication.get_or_insert_with(|| {
        Box::new(Replication {
            region: peers.local().to_string(),
            replicas: Vec::new(),
        })
    });
    rep.replicas.push(ReplicaMeta {
        region: region.to_string(),
        status: REPLICA_CREATING.to_string(),
        copied: Vec::new(),
        settings,
    });
    super::store_updating(api, meta, &name).await
}

/// DynamoDB's refusal of a replica Create where the region has the table.
fn already_tables(name: &str) -> ApiError {
    ApiError::validation(format!(
        "Failed to create a the new replica of table with name: \u{2018}{name}\u{2019} because one or more replicas already existed as tables."
    ))
}

/// Tells each replica in `others` but `region` the news `change` of the
/// global table `meta` (`Add` or `Remove` a region, or its `Settings`).
async fn tell_replicas(
    peers: &PeerRegions,
    meta: &TableMeta,
    others: &[String],
    region: &str,
    change: &Value,
) -> Result<(), ApiError> {
    for other in others.iter().filter(|r| *r != region) {
        let mut body = json!({
            "TableName": meta.name,
            "SourceRegion": peers.local(),
        });
        if let (Some(b), Some(c)) = (body.as_object_mut(), change.as_object()) {
            b.extend(c.clone());
        }
        peers
            .call(other, "UpdateReplicas", &body)
            .await
            .map_err(|e| peer_failed(other, e))?;
    }
    Ok(())
}

async fn remove_replica(
    api: &Api,
    peers: &PeerRegions,
    meta: &TableMeta,
    region: &str,
) -> Result<TableMeta, ApiError> {
    let name = display_name(&meta.name).to_string();
    let existing = replica_regions(meta);
    if !existing.iter().any(|r| r == region) {
        return Err(not_a_member(region));
    }
    let body = json!({"TableName": meta.name, "SourceRegion": peers.local()});
    peers
        .call(region, "DeleteReplica", &body)
        .await
        .map_err(|e| peer_failed(region, e))?;
    let removed = json!({"Remove": [region]});
    tell_replicas(peers, meta, &existing, region, &removed).await?;
    let mut meta = meta.clone();
    if let Some(rep) = meta.replication.as_mut() {
        rep.replicas.retain(|r| r.region != region);
    }
    super::store_updating(api, meta, &name).await
}

/// Gives the replica in `region` its new `settings`: that region applies
/// them to its own table, every other replica records them.
async fn update_replica(
    api: &Api,
    peers: &PeerRegions,
    meta: &TableMeta,
    region: &str,
    settings: ReplicaSettings,
) -> Result<TableMeta, ApiError> {
    let name = display_name(&meta.name).to_string();
    let settings = known(meta, &settings);
    let body = json!({
        "TableName": meta.name,
        "SourceRegion": peers.local(),
        "Settings": settings,
        "Members": members(peers, meta, region),
    });
    peers
        .call(region, "UpdateReplicaSettings", &body)
        .await
        .map_err(|e| peer_failed(region, e))?;
    let news = json!({"Members": {region: settings}});
    tell_replicas(peers, meta, &replica_regions(meta), region, &news).await?;
    let mut meta = meta.clone();
    for r in meta
        .replication
        .iter_mut()
        .flat_map(|r| r.replicas.iter_mut())
    {
        if r.region == region {
            r.settings = settings.clone();
        }
    }
    super::store_updating(api, meta, &name).await
}

/// The CreateTable request that makes `meta`'s replica in another region:
/// same keys, attributes, indexes, billing and throughput (read capacity
/// as `settings` override it), and the global table's stream (tags and
/// deletion protection are each replica's own).
fn create_request(meta: &TableMeta, settings: &ReplicaSettings) -> Result<Value, ApiError> {
    let projection = |p: &dynaraft_storage::Projection| {
        let mut v = json!({"ProjectionType": p.type_name()});
        if let dynaraft_storage::Projection::Include(attrs) = p {
            v["NonKeyAttributes"] = json!(attrs);
        }
        v
    };
    let provisioned = !meta.pay_per_request();
    let mut req = json!({
        "TableName": display_name(&meta.name),
        "AttributeDefinitions": meta.attributes.iter()
            .map(|(n, t)| json!({"AttributeName": n, "AttributeType": t}))
            .collect::<Vec<_>>(),
        "KeySchema": key_schema_json(&meta.key_schema()?),
        "BillingMode": if provisioned { "PROVISIONED" } else { "PAY_PER_REQUEST" },
        "StreamSpecification": {"StreamEnabled": true, "StreamViewType": REPLICA_STREAM_VIEW},
    });
    if provisioned {
        req["ProvisionedThroughput"] = json!({
            "ReadCapacityUnits": settings.read_capacity.unwrap_or(meta.read_capacity),
            "WriteCapacityUnits": meta.write_capacity,
        });
    }
    if !meta.local_indexes.is_empty() {
        req["LocalSecondaryIndexes"] = meta
            .local_indexes
            .iter()
            .map(|ix| {
                json!({
                    "IndexName": ix.name,
                    "KeySchema": key_schema_json(&ix.key),
                    "Projection": projection(&ix.projection),
                })
            })
            .collect();
    }
    if !meta.global_indexes.is_empty() {
        req["GlobalSecondaryIndexes"] = meta
            .global_indexes
            .iter()
            .map(|g| {
                let mut ix = json!({
                    "IndexName": g.index.name,
                    "KeySchema": key_schema_json(&g.index.key),
                    "Projection": projection(&g.index.projection),
                });
                if provisioned {
                    let read = settings.index_read_capacity.get(&g.index.name);
                    ix["ProvisionedThroughput"] = json!({
                        "ReadCapacityUnits": read.copied().unwrap_or(g.read_capacity),
                        "WriteCapacityUnits": g.write_capacity,
                    });
                }
                ix
            })
            .collect();
    }
    Ok(req)
}

/// A table settings change (UpdateTable, UpdateTimeToLive): the request as
/// sent, and whether it is a client's of this region, which every other
/// replica of a global table applies too, or another region's.
#[derive(Clone, Copy)]
pub struct Change<'a> {
    pub request: &'a [u8],
    pub from_client: bool,
}

/// UpdateTable members that change only this region's table.
const REGIONAL_UPDATE_MEMBERS: &[&str] = &["DeletionProtectionEnabled"];
/// UpdateTable members every replica applies.
const GROUP_UPDATE_MEMBERS: &[&str] = &[
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexUpdates",
];

/// Applies a client's settings change of a global table in every other
/// region first (each validates it as this region will), so a change
/// refused or unreachable anywhere is made nowhere here. `op` is the
/// operation, `meta` the table as it is.
pub async fn forward_settings(
    api: &Api,
    meta: &TableMeta,
    op: &str,
    change: Change<'_>,
) -> Result<(), ApiError> {
    let others = replica_regions(meta);
    if !change.from_client || others.is_empty() {
        return Ok(());
    }
    let mut request: Value = parse_body(change.request)?;
    let Some(members) = request.as_object_mut() else {
        return Ok(());
    };
    if op == "UpdateTable" {
        members.retain(|k, _| !REGIONAL_UPDATE_MEMBERS.contains(&k.as_str()));
        if !GROUP_UPDATE_MEMBERS
            .iter()
            .any(|m| members.contains_key(*m))
        {
            return Ok(());
        }
    }
    members.insert("TableName".into(), json!(meta.name));
    let peers = peers(api)?;
    for region in &others {
        let body = json!({
            "TableName": meta.name,
            "SourceRegion": peers.local(),
            "Operation": op,
            "Request": request,
        });
        peers
            .call(region, "ApplySettings", &body)
            .await
            .map_err(|e| peer_failed(region, e))?;
    }
    Ok(())
}

/// After an UpdateTable applied in every region: the replicas' recorded
/// read capacities it made equal to this region's are forgotten (a
/// throughput change replaces every override, as in DynamoDB).
pub async fn forget_overrides(api: &Api, name: &str, change: Change<'_>) -> Result<(), ApiError> {
    let Some(t) = api.table(name) else {
        return Ok(());
    };
    let Some(rep) = t
        .meta
        .replication
        .as_ref()
        .filter(|r| !r.replicas.is_empty())
    else {
        return Ok(());
    };
    let request: Value = parse_body(change.request)?;
    let table_wide = request.get("ProvisionedThroughput").is_some();
    let billing = request.get("BillingMode").is_some();
    let indexes: Vec<&str> = request["GlobalSecondaryIndexUpdates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|u| ["Update", "Delete"].map(|a| u[a]["IndexName"].as_str()))
        .flatten()
        .collect();
    let mut rep = rep.clone();
    for r in &mut rep.replicas {
        let s = &mut r.settings;
        if table_wide || billing {
            s.read_capacity = None;
        }
        if billing {
            s.index_read_capacity.clear();
        }
        for ix in &indexes {
            s.index_read_capacity.remove(*ix);
        }
    }
    if t.meta.replication.as_ref() == Some(&rep) {
        return Ok(());
    }
    let meta = TableMeta {
        replication: Some(rep),
        ..t.meta.clone()
    };
    super::change_table(api, Command::ReplaceTableMeta(meta), name).await?;
    Ok(())
}

/// Another region's UpdateTable or UpdateTimeToLive of a global table,
/// applied here as that operation (its own validation and authorization).
async fn apply_settings(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "TableName")?;
    let (_, source) = source(api, body)?;
    replicated_table(api, body, &source)?;
    let request = body
        .get("Request")
        .filter(|r| r["TableName"].as_str() == Some(name))
        .ok_or_else(|| invalid("Request must be a request naming TableName"))?;
    let request = serde_json::to_vec(request).map_err(invalid)?;
    let change = Change {
        request: &request,
        from_client: false,
    };
    match field(body, "Operation")? {
        "UpdateTable" => super::update_table::execute(api, parse_body(&request)?, change).await,
        "UpdateTimeToLive" => super::time_to_live::update(api, parse_body(&request)?, change).await,
        op => Err(invalid(format!("{op} is not a table settings operation"))),
    }
}

/// Dispatches a replication call from a peer region.
pub async fn dispatch(api: &Api, op: &str, body: &[u8]) -> Result<Value, ApiError> {
    let body: Value = parse_body(body)?;
    match op {
        "ApplyWrites" => apply_writes(api, &body).await,
        "CreateReplica" => create_replica(api, &body).await,
        "DeleteReplica" => delete_replica(api, &body).await,
        "UpdateReplicas" => update_replicas(api, &body).await,
        "UpdateReplicaSettings" => update_replica_settings(api, &body).await,
        "ApplySettings" => apply_settings(api, &body).await,
        _ => Err(super::unknown_operation(op)),
    }
}

/// A string member of a replication call.
fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body[name]
        .as_str()
        .ok_or_else(|| ApiError::validation(format!("{name} is required")))
}

/// The calling region: a known peer's name.
fn source(api: &Api, body: &Value) -> Result<(Arc<PeerRegions>, String), ApiError> {
    let peers = peers(api)?;
    let source = field(body, "SourceRegion")?;
    if !peers.knows(source) {
        return Err(invalid(format!(
            "region {source} is not a peer region of this deployment (--peer-region)"
        )));
    }
    Ok((peers, source.to_string()))
}

/// Region names listed under `name` in a call (none when absent).
fn regions(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    let Some(list) = body.get(name) else {
        return Ok(Vec::new());
    };
    list.as_array()
        .ok_or_else(|| ApiError::validation(format!("{name} must be a list")))?
        .iter()
        .map(|r| match r.as_str() {
            Some(r) if valid_region_name(r) => Ok(r.to_string()),
            _ => Err(invalid(format!("{r} is not a region name"))),
        })
        .collect()
}

/// The table a call names, which must be a global table that `source`
/// is a replica of.
fn replicated_table(api: &Api, body: &Value, source: &str) -> Result<Arc<Table>, ApiError> {
    let name = field(body, "TableName")?;
    let t = super::named_table(api, name)?;
    if !replica_regions(&t.meta).iter().any(|r| r == source) {
        return Err(invalid(format!(
            "region {source} holds no replica of table {name} here"
        )));
    }
    Ok(t)
}

async fn create_replica(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "TableName")?;
    api.authorize(|| crate::auth::Access::table("CreateTableReplica", name))?;
    let (peers, source) = source(api, body)?;
    let group = regions(body, "Replicas")?;
    if !group.contains(&source) {
        return Err(invalid("Replicas must list the calling region"));
    }
    if let Some(t) = api.table(name) {
        // Asked again (a retried UpdateTable): the same replica is fine.
        if replica_regions(&t.meta).contains(&source) {
            return Ok(json!({ "TableDescription": describe(api, &t.meta).await? }));
        }
        return Err(ApiError::ResourceInUse(format!(
            "Table already exists: {name}"
        )));
    }
    let mut settings = member_settings(body)?;
    let replicas = group
        .into_iter()
        .filter(|r| r != peers.local())
        .map(|region| ReplicaMeta {
            settings: settings.remove(&region).unwrap_or_default(),
            region,
            status: REPLICA_ACTIVE.to_string(),
            copied: Vec::new(),
        })
        .collect();
    let replication = Replication {
        region: peers.local().to_string(),
        replicas,
    };
    let table = serde_json::to_vec(&body["Table"]).map_err(invalid)?;
    let input: CreateTableInput = parse_body(&table)?;
    if input.table_name.as_deref() != Some(name) {
        return Err(invalid("Table.TableName must be TableName"));
    }
    create_table::create(api, input, Some(replication)).await
}

async fn update_replicas(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "TableName")?;
    api.authorize(|| crate::auth::Access::table("UpdateTable", name))?;
    let (peers, source) = source(api, body)?;
    let t = replicated_table(api, body, &source)?;
    let (add, remove) = (regions(body, "Add")?, regions(body, "Remove")?);
    let settings = member_settings(body)?;
    let mut meta = t.meta.clone();
    let Some(rep) = meta.replication.as_mut() else {
        return Err(invalid(format!("table {name} is not a global table")));
    };
    rep.replicas.retain(|r| !remove.contains(&r.region));
    for region in add {
        if region != peers.local() && !rep.replicas.iter().any(|r| r.region == region) {
            // This region copies its own writes to the new one.
            rep.replicas.push(ReplicaMeta {
                region,
                status: REPLICA_CREATING.to_string(),
                copied: Vec::new(),
                settings: Default::default(),
            });
        }
    }
    record_settings(rep, settings);
    let meta = super::change_table(api, Command::ReplaceTableMeta(meta), name).await?;
    Ok(json!({ "TableDescription": describe(api, &meta).await? }))
}

/// Records what other regions' replicas are (`Members` of a call).
fn record_settings(rep: &mut Replication, mut settings: BTreeMap<String, ReplicaSettings>) {
    for r in &mut rep.replicas {
        if let Some(s) = settings.remove(&r.region) {
            r.settings = s;
        }
    }
}

/// Another region gave this region's replica new settings (`Settings`,
/// applied to its own table) and says what every other member is
/// (`Members`, recorded).
async fn update_replica_settings(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "TableName")?;
    api.authorize(|| crate::auth::Access::table("UpdateTable", name))?;
    let (_, source) = source(api, body)?;
    let t = replicated_table(api, body, &source)?;
    let own: ReplicaSettings = serde_json::from_value(body["Settings"].clone())
        .map_err(|_| invalid("Settings must be a replica's settings"))?;
    let mut meta = t.meta.clone();
    apply_own(api, &mut meta, &own).await?;
    if let Some(rep) = meta.replication.as_mut() {
        record_settings(rep, member_settings(body)?);
    }
    let meta = super::store_updating(api, meta, name).await?;
    Ok(json!({ "TableDescription": describe(api, &meta).await? }))
}

async fn delete_replica(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "TableName")?;
    api.authorize(|| crate::auth::Access::table("DeleteTableReplica", name))?;
    let (_, source) = source(api, body)?;
    let t = replicated_table(api, body, &source)?;
    // No longer global: its own DeleteTable takes it from here.
    let mut meta = t.meta.clone();
    if let Some(rep) = meta.replication.as_mut() {
        rep.replicas.clear();
    }
    super::change_table(api, Command::ReplaceTableMeta(meta), name).await?;
    let input = TableInput {
        table_name: Some(Str(name.to_string())),
    };
    super::delete_table::execute(api, input).await
}

async fn apply_writes(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "TableName")?;
    api.authorize(|| crate::auth::Access::table("ReplicateWrites", name))?;
    let (_, source) = source(api, body)?;
    let t = replicated_table(api, body, &source)?;
    let Some(local) = t.meta.replication_region() else {
        return Err(invalid(format!("table {name} is not a global table")));
    };
    let writes = body["Writes"]
        .as_array()
        .ok_or_else(|| ApiError::validation("Writes must be a list"))?;
    if writes.len() > MAX_APPLY_WRITES {
        return Err(invalid(format!(
            "at most {MAX_APPLY_WRITES} writes per call"
        )));
    }
    let commands = writes
        .iter()
        .map(|w| replicated_command(&t, &local, w))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut applied, mut superseded) = (0u64, 0u64);
    for chunk in commands.chunks(APPLY_CONCURRENCY) {
        let writes = chunk.iter().map(|c| api.router.write(&t, c.clone()));
        for outcome in futures_util::future::join_all(writes).await {
            match outcome? {
                Outcome::Written { .. } => applied += 1,
                Outcome::Superseded => superseded += 1,
                Outcome::Invalid(m) => return Err(ApiError::Validation(m)),
                Outcome::TxnConflict(_) => return Err(ApiError::TransactionConflict),
                Outcome::IndexLagging => {
                    return Err(ApiError::IndexBackPressure {
                        provisioned: !t.meta.pay_per_request(),
                    });
                }
                Outcome::CollectionTooLarge => {
                    return Err(ApiError::ItemCollectionSizeLimitExceeded);
                }
                other => {
                    tracing::error!(?other, "unexpected outcome of a replicated write");
                    return Err(ApiError::InternalServerError(
                        "Internal server error".into(),
                    ));
                }
            }
        }
    }
    Ok(json!({"Applied": applied, "Superseded": superseded}))
}

/// The write command of one replicated write of `t`.
fn replicated_command(t: &Table, local: &str, w: &Value) -> Result<WriteCommand, ApiError> {
    let bad = |what: &str| invalid(format!("a replicated write's {what} is malformed"));
    let key = item_from_json(&w["Key"]).map_err(|_| bad("Key"))?;
    let item = match w.get("Item") {
        Some(i) => Some(item_from_json(i).map_err(|_| bad("Item"))?),
        None => None,
    };
    let version = Version {
        ts_ms: w["Version"]["TimestampMs"]
            .as_u64()
            .ok_or_else(|| bad("Version"))?,
        region: w["Version"]["Region"]
            .as_str()
            .filter(|r| valid_region_name(r))
            .ok_or_else(|| bad("Version"))?
            .to_string(),
    };
    let storage_key = t.schema.storage_key(&key).ok_or_else(|| bad("Key"))?;
    if item
        .as_ref()
        .is_some_and(|i| t.schema.storage_key(&t.schema.key_of(i)).as_ref() != Some(&storage_key))
    {
        return Err(bad("Item (its key is not Key)"));
    }
    // A put or delete like any other (with no limit on the item's
    // collection: the item's own region accepted it under its limit, and a
    // replica refusing it would hold back every later write of the
    // partition), versioned and marked as replicated.
    let write = plain_write(t, &key, item.as_ref()).ok_or_else(|| bad("Key"))?;
    Ok(WriteCommand {
        origin: Origin::Replica,
        replicated: Some(Box::new(GlobalWrite {
            region: local.to_string(),
            version: Some(version),
        })),
        ..write
    })
}
