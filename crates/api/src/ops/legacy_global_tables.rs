//! The global table calls of version 2017.11.29 (CreateGlobalTable,
//! DescribeGlobalTable, ListGlobalTables, UpdateGlobalTable,
//! DescribeGlobalTableSettings, UpdateGlobalTableSettings), answered as
//! DynamoDB answers them today: it creates no global table of that version
//! any more, so there is none to describe, update or list (a version
//! 2019.11.21 global table, made with UpdateTable `ReplicaUpdates`, is not
//! one of them). Also DescribeTableReplicaAutoScaling of a version
//! 2019.11.21 global table, which has no auto scaling here.

use super::TableInput;
use crate::Api;
use crate::auth::{Access, Resource};
use crate::error::ApiError;
use crate::params::{Violations, bounded_limit, check_table_name, resource_name};
use dynaraft_model::wire::{Int, List, Obj, Str};
use serde::Deserialize;
use serde_json::{Value, json};

/// DynamoDB's refusal of a global table of version 2017.11.29.
const LEGACY_UNSUPPORTED: &str = "One or more parameter values were invalid: DynamoDB global tables version 2017.11.29 is not supported. We recommend using DynamoDB global tables version 2019.11.21, instead of version 2017.11.29 (Legacy).";
/// Most global tables ListGlobalTables may be asked for per page.
const MAX_LIST_GLOBAL_TABLES: i64 = 100;

/// The request of the calls naming one global table (DescribeGlobalTable,
/// DescribeGlobalTableSettings, UpdateGlobalTableSettings, whose other
/// members are not read: the table never exists).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct GlobalTableInput {
    pub global_table_name: Option<Str>,
}

/// CreateGlobalTable's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGlobalTableInput {
    pub global_table_name: Option<Str>,
    pub replication_group: Option<List<Obj<RegionIn>>>,
}

/// A Replica of a ReplicationGroup or a replica action.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RegionIn {
    pub region_name: Option<Str>,
}

/// UpdateGlobalTable's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateGlobalTableInput {
    pub global_table_name: Option<Str>,
    pub replica_updates: Option<List<Obj<ReplicaUpdateIn>>>,
}

/// One of UpdateGlobalTable's ReplicaUpdates.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicaUpdateIn {
    pub create: Option<Obj<RegionIn>>,
    pub delete: Option<Obj<RegionIn>>,
}

/// ListGlobalTables' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListGlobalTablesInput {
    pub exclusive_start_global_table_name: Option<Str>,
    pub limit: Option<Int>,
    pub region_name: Option<Str>,
}

/// The global table name a request gives, checked as DynamoDB checks it.
fn global_table_name(v: &mut Violations, name: Option<&Str>) -> String {
    let name = name.map(|n| n.0.as_str());
    check_table_name(v, name, "globalTableName");
    name.unwrap_or_default().to_string()
}

fn authorize(api: &Api, action: &'static str, name: &str) -> Result<(), ApiError> {
    let arn = format!("arn:aws:dynamodb::{}:global-table/{name}", api.account());
    api.authorize(|| Access::new(action, Resource::Arn(arn.clone())))
}

fn not_found(name: &str) -> ApiError {
    ApiError::GlobalTableNotFound(format!("Global table with name: '{name}' does not exist."))
}

pub fn create(api: &Api, input: CreateGlobalTableInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let name = global_table_name(&mut v, input.global_table_name.as_ref());
    v.required(input.replication_group.as_ref(), "replicationGroup");
    for r in input.replication_group.iter().flat_map(|l| l.0.iter()) {
        v.required(r.region_name.as_ref(), "replicationGroup.member.regionName");
    }
    v.check()?;
    authorize(api, "CreateGlobalTable", &name)?;
    Err(ApiError::validation(LEGACY_UNSUPPORTED))
}

pub fn describe(api: &Api, input: GlobalTableInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let name = global_table_name(&mut v, input.global_table_name.as_ref());
    v.check()?;
    authorize(api, "DescribeGlobalTable", &name)?;
    Err(ApiError::GlobalTableNotFound(format!(
        "Global table not found: Global table with name: '{name}' does not exist."
    )))
}

/// DescribeGlobalTableSettings and UpdateGlobalTableSettings (`action`):
/// the global table they name does not exist.
pub fn settings(
    api: &Api,
    input: GlobalTableInput,
    action: &'static str,
) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let name = global_table_name(&mut v, input.global_table_name.as_ref());
    v.check()?;
    authorize(api, action, &name)?;
    Err(not_found(&name))
}

/// UpdateGlobalTable: adding a replica is refused for the version (before
/// the table is looked for, as DynamoDB does); anything else names a
/// global table that does not exist.
pub fn update(api: &Api, input: UpdateGlobalTableInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let name = global_table_name(&mut v, input.global_table_name.as_ref());
    v.required(input.replica_updates.as_ref(), "replicaUpdates");
    for u in input.replica_updates.iter().flat_map(|l| l.0.iter()) {
        for (action, path) in [(&u.create, "create"), (&u.delete, "delete")] {
            if let Some(a) = action {
                let path = format!("replicaUpdates.member.{path}.regionName");
                v.required(a.region_name.as_ref(), &path);
            }
        }
    }
    v.check()?;
    authorize(api, "UpdateGlobalTable", &name)?;
    let updates = input.replica_updates.map(|l| l.0).unwrap_or_default();
    if updates.is_empty() {
        return Err(ApiError::validation(
            "One or more parameter values were invalid",
        ));
    }
    if updates.iter().any(|u| u.create.is_some()) {
        return Err(ApiError::validation(LEGACY_UNSUPPORTED));
    }
    Err(not_found(&name))
}

/// ListGlobalTables: no global table of version 2017.11.29 exists (its
/// RegionName filter has nothing to filter).
pub fn list(api: &Api, input: ListGlobalTablesInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    bounded_limit(
        &mut v,
        input.limit.as_ref(),
        MAX_LIST_GLOBAL_TABLES,
        "limit",
    );
    if let Some(start) = input.exclusive_start_global_table_name.as_deref() {
        check_table_name(&mut v, Some(start), "exclusiveStartGlobalTableName");
    }
    if let Some(region) = input.region_name.as_deref().filter(|r| r.is_empty()) {
        v.add(
            Some(region),
            "regionName",
            "Member must have length greater than or equal to 1",
        );
    }
    v.check()?;
    api.authorize(|| Access::new("ListGlobalTables", Resource::Any))?;
    Ok(json!({ "GlobalTables": [] }))
}

/// DescribeTableReplicaAutoScaling of a version 2019.11.21 global table:
/// every replica (this region's first) and its indexes, with no auto
/// scaling settings, since dynaraft scales nothing on its own.
pub fn describe_replica_auto_scaling(api: &Api, input: TableInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| Access::table("DescribeTableReplicaAutoScaling", &name))?;
    let not_global =
        || ApiError::ResourceNotFound(format!("Global table with name: {name} does not exist."));
    let t = api.table(&name).ok_or_else(not_global)?;
    let meta = &t.meta;
    let rep = meta
        .replication
        .as_ref()
        .filter(|r| !r.replicas.is_empty())
        .ok_or_else(not_global)?;
    let indexes: Vec<Value> = meta
        .global_indexes
        .iter()
        .map(|g| json!({"IndexName": g.index.name, "IndexStatus": g.status.as_str()}))
        .collect();
    let replica = |region: &str, status: &str| {
        let mut r = json!({"RegionName": region, "ReplicaStatus": status});
        if !indexes.is_empty() {
            r["GlobalSecondaryIndexes"] = json!(indexes);
        }
        r
    };
    let mut replicas = vec![replica(&rep.region, meta.status.as_str())];
    replicas.extend(rep.replicas.iter().map(|r| replica(&r.region, &r.status)));
    Ok(json!({
        "TableAutoScalingDescription": {
            "TableName": crate::scope::display_name(&meta.name),
            "TableStatus": meta.status.as_str(),
            "Replicas": replicas,
        }
    }))
}
