//! One module per DynamoDB operation. Each parses and validates its request
//! completely before it proposes anything, so bad input never causes a
//! partial write.

mod backups;
mod batch_execute_statement;
mod batch_get_item;
mod batch_write_item;
mod continuous_backups;
mod contributor_insights;
mod create_table;
mod delete_item;
mod delete_table;
mod describe_endpoints;
mod describe_limits;
mod describe_table;
mod execute_statement;
mod execute_transaction;
mod get_item;
mod index_defs;
mod jobs;
mod legacy_global_tables;
mod list_tables;
mod partiql;
mod put_item;
mod query;
mod read;
pub mod replication;
mod resource_policy;
mod scan;
mod streams;
mod table_defs;
mod tags;
mod time_to_live;
mod transact_get_items;
mod transact_write_items;
mod transaction;
mod update_item;
mod update_table;
pub mod write;

pub use table_defs::stream_label;

use crate::Api;
use crate::error::ApiError;
use crate::params::parse_body;
use crate::scope::display_name;
use dynaraft_model::wire::Str;
use dynaraft_model::{KeyAttr, KeySchema};
use dynaraft_storage::{
    Command, IndexMeta, IndexStatus, Outcome, Projection, TableMeta, TableStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Builds the operation table: the names served ([`OPERATIONS`]) and
/// [`dispatch`], one line per operation.
macro_rules! operations {
    ($api:ident, $body:ident; $($name:literal => $call:expr,)*) => {
        /// Every operation served, by its `X-Amz-Target` name.
        pub const OPERATIONS: &[&str] = &[$($name),*];

        /// Parses `body` as the operation's request and executes it.
        ///
        /// Each operation runs as a boxed future of its own: unboxed, this
        /// function's poll frame held room for every operation's at once
        /// (904 KB in a debug build), and a request path that reached
        /// openraft's read index from here overflowed a 2 MiB worker stack.
        pub async fn dispatch($api: &Api, op: &str, $body: &[u8]) -> Result<Value, ApiError> {
            match op {
                $($name => Box::pin(async move { $call }).await,)*
                _ => Err(unknown_operation(op)),
            }
        }
    };
}

operations! { api, body;
    "BatchExecuteStatement" => batch_execute_statement::execute(api, parse_body(body)?).await,
    "CreateBackup" => backups::create(api, parse_body(body)?).await,
    "DeleteBackup" => backups::delete(api, parse_body(body)?).await,
    "DescribeBackup" => backups::describe(api, parse_body(body)?),
    "ListBackups" => backups::list(api, parse_body(body)?),
    "RestoreTableFromBackup" => backups::restore(api, parse_body(body)?).await,
    "BatchGetItem" => batch_get_item::execute(api, parse_body(body)?).await,
    "BatchWriteItem" => batch_write_item::execute(api, parse_body(body)?).await,
    "CreateTable" => create_table::execute(api, parse_body(body)?).await,
    "DeleteItem" => delete_item::execute(api, parse_body(body)?).await,
    "DeleteTable" => delete_table::execute(api, parse_body(body)?).await,
    "DescribeContinuousBackups" => continuous_backups::describe(api, parse_body(body)?),
    "UpdateContinuousBackups" => continuous_backups::update(api, parse_body(body)?).await,
    "RestoreTableToPointInTime" => backups::restore_to_point_in_time(api, parse_body(body)?).await,
    "DescribeEndpoints" => describe_endpoints::execute(api),
    "CreateGlobalTable" => legacy_global_tables::create(api, parse_body(body)?),
    "DescribeGlobalTable" => legacy_global_tables::describe(api, parse_body(body)?),
    "DescribeGlobalTableSettings" => legacy_global_tables::settings(api, parse_body(body)?, "DescribeGlobalTableSettings"),
    "ListGlobalTables" => legacy_global_tables::list(api, parse_body(body)?),
    "UpdateGlobalTable" => legacy_global_tables::update(api, parse_body(body)?),
    "UpdateGlobalTableSettings" => legacy_global_tables::settings(api, parse_body(body)?, "UpdateGlobalTableSettings"),
    "DescribeTableReplicaAutoScaling" => legacy_global_tables::describe_replica_auto_scaling(api, parse_body(body)?),
    "ExportTableToPointInTime" => jobs::export(api, parse_body(body)?).await,
    "DescribeExport" => jobs::describe_export(api, parse_body(body)?),
    "ListExports" => jobs::list_exports(api, parse_body(body)?),
    "ImportTable" => jobs::import(api, parse_body(body)?).await,
    "DescribeImport" => jobs::describe_import(api, parse_body(body)?),
    "ListImports" => jobs::list_imports(api, parse_body(body)?),
    "DescribeContributorInsights" => contributor_insights::describe(api, parse_body(body)?),
    "ListContributorInsights" => contributor_insights::list(api, parse_body(body)?),
    "UpdateContributorInsights" => contributor_insights::update(api, parse_body(body)?).await,
    "DescribeLimits" => describe_limits::execute(api),
    "PutResourcePolicy" => resource_policy::put(api, parse_body(body)?).await,
    "GetResourcePolicy" => resource_policy::get(api, parse_body(body)?),
    "DeleteResourcePolicy" => resource_policy::delete(api, parse_body(body)?).await,
    "DescribeTable" => describe_table::execute(api, parse_body(body)?).await,
    "DescribeTimeToLive" => time_to_live::describe(api, parse_body(body)?),
    "ExecuteStatement" => execute_statement::execute(api, parse_body(body)?).await,
    "ExecuteTransaction" => execute_transaction::execute(api, parse_body(body)?).await,
    "GetItem" => get_item::execute(api, parse_body(body)?).await,
    "ListTables" => list_tables::execute(api, parse_body(body)?),
    "ListTagsOfResource" => tags::list(api, parse_body(body)?).await,
    "PutItem" => put_item::execute(api, parse_body(body)?).await,
    "Query" => query::execute(api, parse_body(body)?).await,
    "Scan" => scan::execute(api, parse_body(body)?).await,
    "TagResource" => tags::tag(api, parse_body(body)?).await,
    "TransactGetItems" => transact_get_items::execute(api, parse_body(body)?).await,
    "TransactWriteItems" => transact_write_items::execute(api, parse_body(body)?).await,
    "UntagResource" => tags::untag(api, parse_body(body)?).await,
    "UpdateItem" => update_item::execute(api, parse_body(body)?).await,
    "UpdateTable" => update_table::execute(api, parse_body(body)?, replication::Change { request: body, from_client: true }).await,
    "UpdateTimeToLive" => time_to_live::update(api, parse_body(body)?, replication::Change { request: body, from_client: true }).await,
}

/// The DynamoDB Streams operations (`DynamoDBStreams_20120810.<Op>`).
pub const STREAM_OPERATIONS: &[&str] = &[
    "DescribeStream",
    "GetRecords",
    "GetShardIterator",
    "ListStreams",
];

/// Parses `body` as the DynamoDB Streams operation's request and executes it.
pub async fn dispatch_streams(api: &Api, op: &str, body: &[u8]) -> Result<Value, ApiError> {
    match op {
        "DescribeStream" => streams::describe_stream(api, parse_body(body)?).await,
        "GetRecords" => streams::get_records(api, parse_body(body)?).await,
        "GetShardIterator" => streams::get_shard_iterator(api, parse_body(body)?).await,
        "ListStreams" => streams::list_streams(api, parse_body(body)?),
        _ => Err(unknown_operation(op)),
    }
}

/// DynamoDB operations this server does not implement yet; they answer
/// UnknownOperationException with a message saying so
/// (docs/compatibility.md lists them too).
pub const UNIMPLEMENTED: &[&str] = &[
    "DescribeKinesisStreamingDestination",
    "DisableKinesisStreamingDestination",
    "EnableKinesisStreamingDestination",
    "UpdateKinesisStreamingDestination",
    "UpdateTableReplicaAutoScaling",
];

/// The request of the operations that name only a table (DescribeTable,
/// DeleteTable, DescribeTimeToLive, DescribeContinuousBackups).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TableInput {
    pub table_name: Option<Str>,
}

/// The operation an `X-Amz-Target` names, as a static name if this server
/// serves it (DynamoDB's or DynamoDB Streams'), else `unknown`: a label
/// value clients cannot multiply.
pub fn served_name(target: &str) -> &'static str {
    let op = target.rsplit('.').next().unwrap_or(target);
    OPERATIONS
        .iter()
        .chain(STREAM_OPERATIONS)
        .chain(replication::REPLICATION_OPERATIONS)
        .chain(crate::console::CONSOLE_OPERATIONS)
        .find(|o| **o == op)
        .copied()
        .unwrap_or("unknown")
}

pub fn is_known(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

/// UnknownOperationException for `op`: DynamoDB's message for a name it
/// does not know, and a plain statement for one of its operations that
/// this server lacks.
pub fn unknown_operation(op: &str) -> ApiError {
    if UNIMPLEMENTED.contains(&op) {
        ApiError::UnknownOperation(format!(
            "Unknown operation exception: {op} is not implemented by dynaraft yet"
        ))
    } else {
        ApiError::UnknownOperation("Unknown operation exception".into())
    }
}

/// The ARN of the stream of the table with catalog name `key` created at
/// `created_ms`.
pub fn stream_arn(api: &Api, key: &str, created_ms: u64) -> String {
    format!(
        "{}/stream/{}",
        table_arn(api, key),
        table_defs::stream_label(created_ms)
    )
}

/// The table a request names `name`, or DynamoDB's ResourceNotFoundException
/// naming it.
pub fn named_table(
    api: &Api,
    name: &str,
) -> Result<std::sync::Arc<dynaraft_cluster::Table>, ApiError> {
    api.table(name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {name} not found"
        ))
    })
}

/// DynamoDB's error for a request `throttle` refused, naming the table's
/// or index's ARN.
pub fn throttled(api: &Api, throttle: crate::capacity::Throttle) -> ApiError {
    let mut resource = table_arn(api, &throttle.table);
    if let Some(ix) = &throttle.index {
        resource.push_str("/index/");
        resource.push_str(ix);
    }
    ApiError::Throttled { throttle, resource }
}

/// The ARN of the table with catalog name `key`, in the request's region.
pub fn table_arn(api: &Api, key: &str) -> String {
    format!(
        "arn:aws:dynamodb:{}:{}:table/{}",
        api.region(),
        api.account(),
        display_name(key)
    )
}

/// TableDescription as DescribeTable, UpdateTable and DeleteTable return
/// it, with the table's current counts and sizes.
pub async fn describe(api: &Api, meta: &TableMeta) -> Result<Value, ApiError> {
    describe_table(api, meta, true).await
}

/// TableDescription of a table CreateTable just made: empty by definition,
/// so nothing is asked of its partitions (which a racing DeleteTable may
/// already have dropped; the create still succeeded).
pub async fn describe_created(api: &Api, meta: &TableMeta) -> Result<Value, ApiError> {
    describe_table(api, meta, false).await
}

async fn describe_table(api: &Api, meta: &TableMeta, measure: bool) -> Result<Value, ApiError> {
    let stats = if measure {
        api.router.stats(meta).await?
    } else {
        Default::default()
    };
    let (count, bytes) = (stats.count, stats.bytes);
    let secs = |ms: u64| ms as f64 / 1000.0;
    let key_schema = key_schema_json(&meta.key_schema()?);
    let mut throughput = json!({
        "NumberOfDecreasesToday": meta.decreases_today,
        "ReadCapacityUnits": meta.read_capacity,
        "WriteCapacityUnits": meta.write_capacity,
    });
    if meta.last_increase_ms > 0 {
        throughput["LastIncreaseDateTime"] = json!(secs(meta.last_increase_ms));
    }
    if meta.last_decrease_ms > 0 {
        throughput["LastDecreaseDateTime"] = json!(secs(meta.last_decrease_ms));
    }
    let mut d = json!({
        "TableName": display_name(&meta.name),
        "TableStatus": meta.status.as_str(),
        "CreationDateTime": secs(meta.created_ms),
        "AttributeDefinitions": meta.attributes.iter()
            .map(|(n, t)| json!({"AttributeName": n, "AttributeType": t})).collect::<Vec<_>>(),
        "KeySchema": key_schema,
        "ProvisionedThroughput": throughput,
        "TableSizeBytes": bytes,
        "ItemCount": count,
        "TableArn": table_arn(api, &meta.name),
        "TableId": meta.table_id(),
        "DeletionProtectionEnabled": meta.deletion_protection,
    });
    if !meta.local_indexes.is_empty() {
        let table_arn = table_arn(api, &meta.name);
        let indexes: Vec<Value> = meta
            .local_indexes
            .iter()
            .enumerate()
            .map(|(id, ix)| {
                let (count, bytes) = stats.indexes.get(id).copied().unwrap_or((0, 0));
                index_description(ix, &table_arn, count, bytes)
            })
            .collect();
        d["LocalSecondaryIndexes"] = Value::Array(indexes);
    }
    if !meta.global_indexes.is_empty() {
        let table_arn = table_arn(api, &meta.name);
        let mut indexes = Vec::new();
        for g in &meta.global_indexes {
            let (count, bytes) = if measure {
                api.router.index_stats(meta, g.id).await?
            } else {
                (0, 0)
            };
            let mut ix = index_description(&g.index, &table_arn, count, bytes);
            ix["IndexStatus"] = json!(g.status.as_str());
            if g.status == IndexStatus::Creating {
                ix["Backfilling"] = json!(g.backfill);
            }
            ix["ProvisionedThroughput"] = json!({
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": g.read_capacity,
                "WriteCapacityUnits": g.write_capacity,
            });
            indexes.push(ix);
        }
        d["GlobalSecondaryIndexes"] = Value::Array(indexes);
    }
    if let Some(s) = meta.enabled_stream() {
        d["StreamSpecification"] = json!({
            "StreamEnabled": true,
            "StreamViewType": s.view_type,
        });
    }
    if let Some(s) = meta.streams.last() {
        d["LatestStreamLabel"] = json!(table_defs::stream_label(s.created_ms));
        d["LatestStreamArn"] = json!(stream_arn(api, &meta.name, s.created_ms));
    }
    // Every node that holds data encrypts it at rest (`--encryption-key-file`):
    // said as DynamoDB says it for server-side encryption. Otherwise the
    // description has none, as DynamoDB's default shows (compatibility.md:
    // here that means not encrypted).
    let nodes = api.router.catalog().get();
    if !nodes.nodes.is_empty() && nodes.nodes.values().all(|n| n.encrypted) {
        d["SSEDescription"] = json!({"Status": "ENABLED", "SSEType": "AES256"});
    }
    replication::describe_global(&mut d, meta);
    if let Some(r) = &meta.restore {
        d["RestoreSummary"] = backups::restore_summary(r);
    }
    // WarmThroughput: an on-demand table's initial throughput (DynamoDB's
    // default) or a provisioned table's capacity, or more where asked for
    // or once provisioned.
    let (warm_read, warm_write) = table_defs::warm_shown(meta);
    d["WarmThroughput"] = json!({
        "ReadUnitsPerSecond": warm_read,
        "WriteUnitsPerSecond": warm_write,
        "Status": "ACTIVE",
    });
    let mut on_demand = serde_json::Map::new();
    if let Some(r) = meta.on_demand_max.read {
        on_demand.insert("MaxReadRequestUnits".into(), json!(r));
    }
    if let Some(w) = meta.on_demand_max.write {
        on_demand.insert("MaxWriteRequestUnits".into(), json!(w));
    }
    if !on_demand.is_empty() {
        d["OnDemandThroughput"] = Value::Object(on_demand);
    }
    if meta.pay_per_request() {
        d["BillingModeSummary"] = json!({
            "BillingMode": "PAY_PER_REQUEST",
            "LastUpdateToPayPerRequestDateTime": secs(meta.created_ms),
        });
    }
    Ok(d)
}

/// The WarmThroughput DynamoDB reports for an on-demand table it was not
/// asked to warm, in read and write units a second.
pub const ON_DEMAND_WARM_READ_UNITS_PER_S: u64 = 12_000;
pub const ON_DEMAND_WARM_WRITE_UNITS_PER_S: u64 = 4_000;

/// A KeySchema as DynamoDB shows it: the HASH elements, then the RANGE
/// ones, in key-schema order.
pub fn key_schema_json(schema: &KeySchema) -> Vec<Value> {
    let role = |attrs: &[KeyAttr], role: &str| -> Vec<Value> {
        attrs
            .iter()
            .map(|ka| json!({"AttributeName": ka.name, "KeyType": role}))
            .collect()
    };
    let mut keys = role(&schema.hash, "HASH");
    keys.extend(role(&schema.range, "RANGE"));
    keys
}

/// One entry of DescribeTable's LocalSecondaryIndexes (and the common part
/// of a GlobalSecondaryIndexes entry).
fn index_description(ix: &IndexMeta, table_arn: &str, count: u64, bytes: u64) -> Value {
    let keys = key_schema_json(&ix.key);
    let mut projection = json!({ "ProjectionType": ix.projection.type_name() });
    if let Projection::Include(attrs) = &ix.projection {
        projection["NonKeyAttributes"] = json!(attrs);
    }
    json!({
        "IndexName": ix.name,
        "KeySchema": keys,
        "Projection": projection,
        "IndexSizeBytes": bytes,
        "ItemCount": count,
        "IndexArn": format!("{table_arn}/index/{}", ix.name),
    })
}

/// Moves the table with catalog name `name` to its next status after the
/// configured delay.
pub fn schedule_transition(api: &Api, name: String, to: Option<TableStatus>) {
    let api = api.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(api.cfg.transition_delay_ms)).await;
        let cmd = match to {
            Some(status) => Command::SetTableStatus {
                name: name.clone(),
                status,
            },
            None => Command::DropTable { name: name.clone() },
        };
        let event = catalog_event(&cmd);
        match api.router.change_catalog(cmd).await {
            Ok(_) => log_catalog_event(event),
            Err(e) => tracing::error!(table = %name, error = %e, "table status transition failed"),
        }
    });
}

/// Finishes transitions interrupted by a restart.
pub fn resume_transitions(api: &Api) {
    for t in api.router.tables() {
        match t.meta.status {
            // A table UPDATING for an index being created turns ACTIVE
            // when the control plane sees the backfill finish.
            TableStatus::Updating
                if t.meta
                    .global_indexes
                    .iter()
                    .any(|g| g.status == IndexStatus::Creating) => {}
            // A restored table turns ACTIVE when its items are copied in.
            TableStatus::Creating if t.meta.restore.as_ref().is_some_and(|r| r.in_progress) => {}
            // An imported table turns ACTIVE when the import finishes.
            TableStatus::Creating if t.meta.importing.is_some() => {}
            TableStatus::Creating | TableStatus::Updating => {
                schedule_transition(api, t.meta.name.clone(), Some(TableStatus::Active))
            }
            TableStatus::Deleting => schedule_transition(api, t.meta.name.clone(), None),
            TableStatus::Active => {}
        }
    }
}

/// Applies a catalog command for table `name` and returns the table as it
/// now is, or DynamoDB's error for a table that exists or does not.
pub async fn change_table(api: &Api, cmd: Command, name: &str) -> Result<TableMeta, ApiError> {
    let event = catalog_event(&cmd);
    match api.router.change_catalog(cmd).await? {
        Outcome::Table(m) => {
            log_catalog_event(event);
            Ok(*m)
        }
        Outcome::TableExists => Err(ApiError::ResourceInUse(format!(
            "Table already exists: {}",
            display_name(name)
        ))),
        // A catalog change that lost a race with another (found by the
        // control plane, which checks again).
        Outcome::Invalid(m) => Err(ApiError::Validation(m)),
        Outcome::DeletionProtected => Err(deletion_protected(display_name(name))),
        _ => Err(ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {} not found",
            display_name(name)
        ))),
    }
}

/// Stores a table's changed settings `meta` (`name`: as the request
/// called it) UPDATING, ACTIVE again after the transition delay.
pub async fn store_updating(
    api: &Api,
    mut meta: TableMeta,
    name: &str,
) -> Result<TableMeta, ApiError> {
    let instant = api.cfg.transition_delay_ms == 0;
    meta.status = if instant {
        TableStatus::Active
    } else {
        TableStatus::Updating
    };
    let meta = change_table(api, Command::ReplaceTableMeta(meta), name).await?;
    if !instant {
        schedule_transition(api, meta.name.clone(), Some(TableStatus::Active));
    }
    Ok(meta)
}

/// DeleteTable's refusal of a table with deletion protection.
pub fn deletion_protected(name: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Table '{name}' can't be deleted while DeletionProtectionEnabled is set to True"
    ))
}

/// What a catalog command does to which table, for the log: `(event,
/// table, index)`.
fn catalog_event(cmd: &Command) -> Option<(&'static str, String, Option<String>)> {
    Some(match cmd {
        Command::CreateTable(m) => ("table created", m.name.clone(), None),
        Command::ReplaceTableMeta(m) => ("table updated", m.name.clone(), None),
        Command::SetTableStatus { name, status } => {
            let what = match status {
                TableStatus::Creating => "table creating",
                TableStatus::Updating => "table updating",
                TableStatus::Active => "table active",
                TableStatus::Deleting => "table deleting",
            };
            (what, name.clone(), None)
        }
        Command::DropTable { name } => ("table deleted", name.clone(), None),
        Command::AddGlobalIndex { table, index, .. } => (
            "index created",
            table.clone(),
            Some(index.index.name.clone()),
        ),
        Command::DropGlobalIndex { table, index } => {
            ("index deleted", table.clone(), Some(index.clone()))
        }
        Command::SetIndexThroughput { table, index, .. } => {
            ("index throughput set", table.clone(), Some(index.clone()))
        }
        _ => return None,
    })
}

/// One info line per table and index event the API applied.
fn log_catalog_event(event: Option<(&'static str, String, Option<String>)>) {
    if let Some((what, table, index)) = event {
        let table = display_name(&table);
        match index {
            Some(index) => tracing::info!(table, index, "{what}"),
            None => tracing::info!(table, "{what}"),
        }
    }
}
