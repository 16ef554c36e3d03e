//! Global tables (version 2019.11.21): UpdateTable's `ReplicaUpdates`,
//! DescribeTable's `Replicas`, and the calls regions make to each other
//! (`DynaraftReplication_20261203.<Op>`, see `dynaraft_cluster::peer`):
//!
//! - `CreateReplica`: create the table here as a replica of a global table
//!   (same keys, indexes and throughput, a NEW_AND_OLD_IMAGES stream).
//! - `UpdateReplicas`: another region was added to or removed from the
//!   global table.
//! - `DeleteReplica`: delete this region's replica.
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
use crate::params::parse_body;
use crate::scope::display_name;
use dynaraft_cluster::Table;
use dynaraft_cluster::backup::plain_write;
use dynaraft_cluster::peer::{PeerError, PeerRegions, valid_region_name};
use dynaraft_model::value::item_from_json;
use dynaraft_model::wire::{List, Obj, Str};
use dynaraft_storage::catalog::{REPLICA_ACTIVE, REPLICA_CREATING};
use dynaraft_storage::global::Origin;
use dynaraft_storage::replica::{GlobalWrite, Version};
use dynaraft_storage::{Command, Outcome, ReplicaMeta, Replication, TableMeta, WriteCommand};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// DescribeTable's `GlobalTableVersion` of a table with replicas.
pub const GLOBAL_TABLE_VERSION: &str = "2019.11.21";
/// The replication calls served (after the replication target prefix).
pub const REPLICATION_OPERATIONS: &[&str] = &[
    "ApplyWrites",
    "CreateReplica",
    "DeleteReplica",
    "UpdateReplicas",
];
/// Most writes one `ApplyWrites` carries.
pub const MAX_APPLY_WRITES: usize = 1024;
/// Writes of one `ApplyWrites` proposed at once.
pub const APPLY_CONCURRENCY: usize = 32;
/// The stream view a global table's stream has (DynamoDB enables it when
/// the first replica is added).
const REPLICA_STREAM_VIEW: &str = "NEW_AND_OLD_IMAGES";

/// One `Replicas` entry of DescribeTable.
pub fn replica_description(r: &ReplicaMeta, partitions: usize) -> Value {
    let mut d = json!({"RegionName": r.region, "ReplicaStatus": r.status});
    if r.status == REPLICA_CREATING && partitions > 0 {
        let done = r.copied.len().min(partitions) * 100 / partitions;
        d["ReplicaStatusPercentProgress"] = json!(done.to_string());
    }
    d
}

/// One `ReplicaUpdates` member: one of its actions.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicaUpdateIn {
    pub create: Option<Obj<RegionIn>>,
    pub update: Option<Obj<RegionIn>>,
    pub delete: Option<Obj<RegionIn>>,
}

/// The region of a replica action (its overrides are not read).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RegionIn {
    pub region_name: Option<Str>,
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

/// UpdateTable with `ReplicaUpdates`: one Create or Delete.
pub async fn replica_updates(
    api: &Api,
    t: &Table,
    updates: &List<Obj<ReplicaUpdateIn>>,
) -> Result<Value, ApiError> {
    let [update] = updates.0.as_slice() else {
        return Err(invalid(
            "dynaraft takes one replica update per UpdateTable request",
        ));
    };
    let region = |r: &Obj<RegionIn>| -> Result<String, ApiError> {
        let name = r.region_name.as_deref().unwrap_or_default();
        if valid_region_name(name) {
            Ok(name.to_string())
        } else {
            Err(invalid(format!("{name:?} is not a region name")))
        }
    };
    let name = display_name(&t.meta.name).to_string();
    let meta = match (
        update.create.as_ref(),
        update.update.as_ref(),
        update.delete.as_ref(),
    ) {
        (Some(c), None, None) => {
            let r = region(c)?;
            api.authorize(|| crate::auth::Access::table("CreateTableReplica", &name))?;
            add_replica(api, t, &r).await?
        }
        (None, None, Some(d)) => {
            let r = region(d)?;
            api.authorize(|| crate::auth::Access::table("DeleteTableReplica", &name))?;
            remove_replica(api, t, &r).await?
        }
        (None, Some(_), None) => {
            return Err(invalid(
                "replica Update (per-replica overrides) is not supported by dynaraft yet",
            ));
        }
        (None, None, None) => {
            return Err(invalid(
                "One of ReplicationGroupUpdate.Create, ReplicationGroupUpdate.Update, ReplicationGroupUpdate.Delete must not be null",
            ));
        }
        _ => {
            return Err(invalid(
                "A ReplicationGroupUpdate can hold only one of Create, Update or Delete",
            ));
        }
    };
    Ok(json!({ "TableDescription": describe(api, &meta).await? }))
}

/// The regions of `meta`'s replicas.
fn replica_regions(meta: &TableMeta) -> Vec<String> {
    meta.replication
        .iter()
        .flat_map(|r| r.replicas.iter().map(|r| r.region.clone()))
        .collect()
}

async fn add_replica(api: &Api, t: &Table, region: &str) -> Result<TableMeta, ApiError> {
    let peers = peers(api)?;
    let name = display_name(&t.meta.name).to_string();
    if region == peers.local() {
        return Err(invalid(format!(
            "table {name} is in region {region} already"
        )));
    }
    if !peers.knows(region) {
        return Err(invalid(format!(
            "region {region} is not a peer region of this deployment (--peer-region)"
        )));
    }
    let existing = replica_regions(&t.meta);
    if existing.iter().any(|r| r == region) {
        return Err(invalid(format!(
            "table {name} already has a replica in region {region}"
        )));
    }
    let mut meta = t.meta.clone();
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
    // 1. The new replica, listing this region and every other replica.
    let mut group: Vec<String> = existing.clone();
    group.push(peers.local().to_string());
    let body = json!({
        "TableName": t.meta.name,
        "SourceRegion": peers.local(),
        "Replicas": group,
        "Table": create_request(&meta)?,
    });
    peers
        .call(region, "CreateReplica", &body)
        .await
        .map_err(|e| peer_failed(region, e))?;
    // 2. Every other replica copies its own writes to it and follows.
    tell_replicas(&peers, t, &existing, "Add", region).await?;
    // 3. This region lists it, CREATING until every partition copied.
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
    });
    super::store_updating(api, meta, &name).await
}

/// Tells each replica in `others` that `region` was added to (`change`
/// "Add") or removed from ("Remove") the global table `t`.
async fn tell_replicas(
    peers: &PeerRegions,
    t: &Table,
    others: &[String],
    change: &str,
    region: &str,
) -> Result<(), ApiError> {
    for other in others.iter().filter(|r| *r != region) {
        let body = json!({
            "TableName": t.meta.name,
            "SourceRegion": peers.local(),
            change: [region],
        });
        peers
            .call(other, "UpdateReplicas", &body)
            .await
            .map_err(|e| peer_failed(other, e))?;
    }
    Ok(())
}

async fn remove_replica(api: &Api, t: &Table, region: &str) -> Result<TableMeta, ApiError> {
    let peers = peers(api)?;
    let name = display_name(&t.meta.name).to_string();
    let existing = replica_regions(&t.meta);
    if !existing.iter().any(|r| r == region) {
        return Err(invalid(format!(
            "table {name} has no replica in region {region}"
        )));
    }
    let body = json!({"TableName": t.meta.name, "SourceRegion": peers.local()});
    peers
        .call(region, "DeleteReplica", &body)
        .await
        .map_err(|e| peer_failed(region, e))?;
    tell_replicas(&peers, t, &existing, "Remove", region).await?;
    let mut meta = t.meta.clone();
    if let Some(rep) = meta.replication.as_mut() {
        rep.replicas.retain(|r| r.region != region);
    }
    super::store_updating(api, meta, &name).await
}

/// The CreateTable request that makes `meta`'s replica in another region:
/// same keys, attributes, indexes, billing and throughput, and the global
/// table's stream (tags and deletion protection are each replica's own).
fn create_request(meta: &TableMeta) -> Result<Value, ApiError> {
    let projection = |p: &dynaraft_storage::Projection| {
        let mut v = json!({"ProjectionType": p.type_name()});
        if let dynaraft_storage::Projection::Include(attrs) = p {
            v["NonKeyAttributes"] = json!(attrs);
        }
        v
    };
    let provisioned = meta.billing_mode != "PAY_PER_REQUEST";
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
            "ReadCapacityUnits": meta.read_capacity,
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
                    ix["ProvisionedThroughput"] = json!({
                        "ReadCapacityUnits": g.read_capacity,
                        "WriteCapacityUnits": g.write_capacity,
                    });
                }
                ix
            })
            .collect();
    }
    Ok(req)
}

/// Dispatches a replication call from a peer region.
pub async fn dispatch(api: &Api, op: &str, body: &[u8]) -> Result<Value, ApiError> {
    let body: Value = parse_body(body)?;
    match op {
        "ApplyWrites" => apply_writes(api, &body).await,
        "CreateReplica" => create_replica(api, &body).await,
        "DeleteReplica" => delete_replica(api, &body).await,
        "UpdateReplicas" => update_replicas(api, &body).await,
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
    let t = api.table(name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {name} not found"
        ))
    })?;
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
    let replicas = group
        .into_iter()
        .filter(|r| r != peers.local())
        .map(|region| ReplicaMeta {
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
            });
        }
    }
    let meta = super::change_table(api, Command::ReplaceTableMeta(meta), name).await?;
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
                        provisioned: t.meta.billing_mode != "PAY_PER_REQUEST",
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
