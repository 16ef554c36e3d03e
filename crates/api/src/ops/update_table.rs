//! UpdateTable: billing mode, provisioned throughput, deletion protection,
//! the stream (enable, disable), and global secondary indexes (Create,
//! which backfills the index online, Delete, and Update of an index's
//! throughput), and replicas of a global table (`replication`).
use super::index_defs;
use super::replication::{Change, forget_overrides, forward_settings};
use super::table_defs::{
    AttributeDefinitionIn, IndexIn, StreamChange, StreamSpecificationIn, ThroughputIn,
    attribute_definitions, stream_change, throughput,
};
use crate::Api;
use crate::enums::{BillingMode, WireEnum};
use crate::error::ApiError;
use crate::params::{Violations, resource_name};
use crate::scope::display_name;
use dynaraft_cluster::Table;
use dynaraft_model::wire::{Flag, List, Obj, Str};
use dynaraft_storage::{Command, GlobalIndexMeta, IndexStatus, PartitionMeta, TableStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// UpdateTable's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateTableInput {
    pub table_name: Option<Str>,
    pub attribute_definitions: Option<List<Obj<AttributeDefinitionIn>>>,
    pub billing_mode: Option<Str>,
    pub provisioned_throughput: Option<Obj<ThroughputIn>>,
    pub global_secondary_index_updates: Option<List<Obj<IndexUpdateIn>>>,
    pub deletion_protection_enabled: Option<Flag>,
    pub stream_specification: Option<Obj<StreamSpecificationIn>>,
    pub replica_updates: Option<List<Obj<super::replication::ReplicaUpdateIn>>>,
    pub on_demand_throughput: Option<Obj<super::table_defs::OnDemandIn>>,
    pub warm_throughput: Option<Obj<super::table_defs::WarmIn>>,
}

/// One GlobalSecondaryIndexUpdates member: one of its actions.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IndexUpdateIn {
    pub create: Option<Obj<IndexIn>>,
    pub update: Option<Obj<IndexThroughputIn>>,
    pub delete: Option<Obj<IndexNameIn>>,
}

/// The `Update` action: a global index's new throughput.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IndexThroughputIn {
    pub index_name: Option<Str>,
    pub provisioned_throughput: Option<Obj<ThroughputIn>>,
}

/// The `Delete` action.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IndexNameIn {
    pub index_name: Option<Str>,
}

pub async fn execute(
    api: &Api,
    input: UpdateTableInput,
    change: Change<'_>,
) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("UpdateTable", &name))?;
    let t = super::named_table(api, &name)?;
    if t.meta.status != TableStatus::Active {
        return Err(ApiError::ResourceInUse(format!(
            "Attempt to change a resource which is still in use: Table is being updated: {name}"
        )));
    }
    if let Some(updates) = input.replica_updates.as_ref().filter(|l| !l.0.is_empty()) {
        let others = input.global_secondary_index_updates.is_some()
            || input.billing_mode.is_some()
            || input.provisioned_throughput.is_some()
            || input.stream_specification.is_some()
            || input.deletion_protection_enabled.is_some();
        if others {
            return Err(ApiError::validation(
                "Requests that modify replicas or witnesses must not also modify other fields",
            ));
        }
        return super::replication::replica_updates(api, &t, updates).await;
    }
    let global = t
        .meta
        .replication
        .as_ref()
        .is_some_and(|r| !r.replicas.is_empty());
    if global && let Some(spec) = input.stream_specification.as_deref() {
        return Err(match stream_change(spec)? {
            StreamChange::Disable => {
                ApiError::validation("Disabling Stream is not allowed for a Global Table replica.")
            }
            StreamChange::Enable(_) => invalid(
                "the stream of a global table is its replicas' change log and cannot be changed while it has replicas",
            ),
        });
    }
    // Billing, throughput and global indexes are the same in every replica
    // of a global table: the other regions apply the change first.
    forward_settings(api, &t.meta, "UpdateTable", change).await?;
    let out = apply(api, &t, &name, &input).await?;
    forget_overrides(api, &name, change).await?;
    Ok(out)
}

/// The UpdateTable of a table that is not a replica update.
async fn apply(
    api: &Api,
    t: &Table,
    name: &str,
    input: &UpdateTableInput,
) -> Result<Value, ApiError> {
    let index_updates = input
        .global_secondary_index_updates
        .as_ref()
        .filter(|l| !l.0.is_empty());
    if let Some(updates) = index_updates {
        let meta = index_update(api, t, input, updates).await?;
        return Ok(json!({ "TableDescription": super::describe(api, &meta).await? }));
    }
    let mut v = Violations::default();
    let mode = BillingMode::member(&mut v, input.billing_mode.as_ref(), "billingMode");
    v.check()?;
    let pt = input.provisioned_throughput.as_deref();
    let protection = input.deletion_protection_enabled.map(|f| f.0);
    let stream = input
        .stream_specification
        .as_deref()
        .map(stream_change)
        .transpose()?;
    let on_demand = input.on_demand_throughput.as_deref();
    let warm = input.warm_throughput.as_deref();
    if mode.is_none()
        && pt.is_none()
        && protection.is_none()
        && stream.is_none()
        && on_demand.is_none()
        && warm.is_none()
    {
        return Err(ApiError::validation(
            "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, GlobalSecondaryIndexUpdates or SSESpecification or ReplicaUpdates is required",
        ));
    }
    let mut meta = t.meta.clone();
    // What the table shows before the change: its warm throughput never
    // goes below it (a capacity decrease or a switch of billing mode
    // keeps it).
    let warm_before = super::table_defs::warm_shown(&meta);
    let current = BillingMode::parse(&meta.billing_mode);
    let new_mode = mode.or(current).unwrap_or(BillingMode::Provisioned);
    let now = dynaraft_storage::wall_clock_ms();
    if new_mode == BillingMode::PayPerRequest {
        if pt.is_some() {
            return Err(ApiError::validation(
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
            ));
        }
        meta.read_capacity = 0;
        meta.write_capacity = 0;
    } else {
        let (r, w) = match pt {
            Some(pt) => throughput(pt)?,
            None if current == Some(BillingMode::Provisioned) => {
                (meta.read_capacity, meta.write_capacity)
            }
            None => {
                return Err(ApiError::validation(
                    "One or more parameter values were invalid: ProvisionedThroughput must be specified when BillingMode is PROVISIONED",
                ));
            }
        };
        if pt.is_some()
            && mode.is_none_or(|m| Some(m) == current)
            && r == meta.read_capacity
            && w == meta.write_capacity
        {
            return Err(ApiError::validation(format!(
                "The provisioned throughput for the table will not change. The requested value equals the current value. Current ReadCapacityUnits provisioned for the table: {}. Requested ReadCapacityUnits: {r}. Current WriteCapacityUnits provisioned for the table: {}. Requested WriteCapacityUnits: {w}. Refer to the Amazon DynamoDB Developer Guide for current limits and how to request higher limits.",
                meta.read_capacity, meta.write_capacity
            )));
        }
        if r > meta.read_capacity || w > meta.write_capacity {
            meta.last_increase_ms = now;
        }
        if r < meta.read_capacity || w < meta.write_capacity {
            meta.last_decrease_ms = now;
            meta.decreases_today += 1;
        }
        meta.read_capacity = r;
        meta.write_capacity = w;
    }
    meta.billing_mode = new_mode.as_str().to_string();
    if let Some(o) = on_demand {
        meta.on_demand_max = super::table_defs::on_demand_updated(meta.on_demand_max, o)?;
    }
    meta.warm = Some(warm_before);
    if let Some(w) = warm {
        meta.warm = Some(super::table_defs::warm_requested(&meta, w, false)?);
    }
    if let Some(p) = protection {
        meta.deletion_protection = p;
    }
    match (stream, meta.enabled_stream().is_some()) {
        (Some(StreamChange::Enable(_)), true) => {
            return Err(ApiError::validation(format!(
                "Table already has an enabled stream: TableName: {name}"
            )));
        }
        (Some(StreamChange::Disable), false) => {
            return Err(ApiError::validation(format!(
                "Table has no stream to disable: TableName: {name}"
            )));
        }
        (Some(StreamChange::Enable(view)), false) => {
            meta.push_stream(view.as_str(), now, api.cfg.stream_retention_ms)
        }
        (Some(StreamChange::Disable), true) => {
            if let Some(s) = meta.streams.last_mut() {
                s.disabled_ms = Some(now);
            }
        }
        (None, _) => {}
    }
    let meta = super::store_updating(api, meta, name).await?;
    Ok(json!({ "TableDescription": super::describe(api, &meta).await? }))
}

/// One GlobalSecondaryIndexUpdates action, as parsed.
enum IndexAction<'a> {
    Create(&'a IndexIn),
    Update(&'a IndexThroughputIn),
    Delete(&'a str),
}

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("One or more parameter values were invalid: {msg}"))
}

/// Applies GlobalSecondaryIndexUpdates: at most one Create or Delete per
/// request (as in DynamoDB), any number of throughput Updates.
async fn index_update(
    api: &Api,
    t: &Table,
    input: &UpdateTableInput,
    updates: &List<Obj<IndexUpdateIn>>,
) -> Result<dynaraft_storage::TableMeta, ApiError> {
    let mut actions = Vec::new();
    let mut seen = BTreeSet::new();
    for u in &updates.0 {
        let action = match (
            u.create.as_deref(),
            u.update.as_deref(),
            u.delete.as_deref(),
        ) {
            (Some(c), None, None) => IndexAction::Create(c),
            (None, Some(x), None) => IndexAction::Update(x),
            (None, None, Some(d)) => IndexAction::Delete(d.index_name.as_deref().unwrap_or("")),
            (None, None, None) => {
                return Err(invalid(
                    "One of GlobalSecondaryIndexUpdate.Update, GlobalSecondaryIndexUpdate.Create, GlobalSecondaryIndexUpdate.Delete must not be null",
                ));
            }
            _ => {
                return Err(invalid(
                    "A GlobalSecondaryIndexUpdate can hold only one of Update, Create or Delete",
                ));
            }
        };
        let name = match &action {
            IndexAction::Create(c) => c.index_name.as_deref().unwrap_or(""),
            IndexAction::Update(x) => x.index_name.as_deref().unwrap_or(""),
            IndexAction::Delete(n) => n,
        };
        if !seen.insert(name.to_string()) {
            return Err(invalid(format!(
                "Only one global secondary index update per index is allowed simultaneously. Index: {name}"
            )));
        }
        actions.push(action);
    }
    let online = actions
        .iter()
        .filter(|a| !matches!(a, IndexAction::Update(_)))
        .count();
    if online > 1 {
        return Err(ApiError::LimitExceeded(
            "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table".into(),
        ));
    }
    let mut meta = t.meta.clone();
    for (i, action) in actions.iter().enumerate() {
        let cmd = match action {
            IndexAction::Create(c) => create_command(api, t, input, c, i + 1)?,
            IndexAction::Delete(n) => {
                known_index(t, n)?;
                Command::DropGlobalIndex {
                    table: t.meta.name.clone(),
                    index: n.to_string(),
                }
            }
            IndexAction::Update(x) => update_command(t, x)?,
        };
        meta = super::change_table(api, cmd, &t.meta.name).await?;
    }
    Ok(meta)
}

fn known_index<'a>(t: &'a Table, name: &str) -> Result<&'a GlobalIndexMeta, ApiError> {
    t.meta.global_index(name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Index: {name} not found for table: {}",
            display_name(&t.meta.name)
        ))
    })
}

/// A throughput Update of a global index (provisioned tables only).
fn update_command(t: &Table, x: &IndexThroughputIn) -> Result<Command, ApiError> {
    let name = x.index_name.as_deref().unwrap_or("");
    known_index(t, name)?;
    if BillingMode::parse(&t.meta.billing_mode) == Some(BillingMode::PayPerRequest) {
        return Err(invalid(format!(
            "ProvisionedThroughput should not be specified for index: {name} when BillingMode is PAY_PER_REQUEST"
        )));
    }
    let pt = x.provisioned_throughput.as_deref().ok_or_else(|| {
        invalid(format!(
            "ProvisionedThroughput must be specified for index: {name}"
        ))
    })?;
    let (read, write) = throughput(pt)?;
    Ok(Command::SetIndexThroughput {
        table: t.meta.name.clone(),
        index: name.to_string(),
        read,
        write,
    })
}

/// The catalog command creating the index of `Create` action `c` (member
/// `n` of the list), validated against the table.
fn create_command(
    api: &Api,
    t: &Table,
    input: &UpdateTableInput,
    c: &IndexIn,
    n: usize,
) -> Result<Command, ApiError> {
    if t.meta.global_indexes.len() >= index_defs::MAX_GLOBAL_INDEXES {
        return Err(ApiError::LimitExceeded(format!(
            "The number of global secondary indexes exceeds the per-table limit of {}",
            index_defs::MAX_GLOBAL_INDEXES
        )));
    }
    if t.meta
        .global_indexes
        .iter()
        .any(|g| g.status == IndexStatus::Creating)
    {
        return Err(ApiError::LimitExceeded(
            "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table".into(),
        ));
    }
    let mut defined = t.meta.attributes.clone();
    let requested = attribute_definitions(input.attribute_definitions.as_ref())?;
    for (name, ty) in &requested {
        match defined.iter().find(|(n, _)| n == name) {
            Some((_, old)) if old != ty => {
                return Err(invalid(format!(
                    "Attribute {name} is already defined as {old} and cannot be redefined as {ty}"
                )));
            }
            Some(_) => {}
            None => defined.push((name.clone(), ty.clone())),
        }
    }
    let mut names: BTreeSet<String> = t
        .meta
        .local_indexes
        .iter()
        .map(|i| i.name.clone())
        .chain(t.meta.global_indexes.iter().map(|g| g.index.name.clone()))
        .collect();
    if let Some(name) = c.index_name.as_deref()
        && names.contains(name)
    {
        return Err(invalid(format!(
            "Index {name} already exists on table {}",
            display_name(&t.meta.name)
        )));
    }
    let pay_per_request =
        BillingMode::parse(&t.meta.billing_mode) == Some(BillingMode::PayPerRequest);
    // The new index's key attributes must be defined in this request's
    // AttributeDefinitions, even those the table already knows.
    let (index, (read, write)) =
        index_defs::global_create(c, n, &requested, pay_per_request, &mut names)?;
    let existing: Vec<_> = t
        .meta
        .local_indexes
        .iter()
        .chain(t.meta.global_indexes.iter().map(|g| &g.index))
        .chain(std::iter::once(&index))
        .collect();
    index_defs::check_projected(&existing)?;
    let schema = index.key_schema();
    let attributes = defined
        .into_iter()
        .filter(|(n, _)| schema.is_key_attr(n))
        .collect();
    Ok(Command::AddGlobalIndex {
        table: t.meta.name.clone(),
        index: GlobalIndexMeta {
            id: 0,
            index,
            status: IndexStatus::Creating,
            backfill: true,
            backfilled: Vec::new(),
            partitions: PartitionMeta::even_split(api.cfg.partitions_per_table),
            read_capacity: read,
            write_capacity: write,
        },
        attributes,
    })
}
