//! On-demand backups: CreateBackup, DescribeBackup, ListBackups,
//! DeleteBackup and RestoreTableFromBackup. A backup's items are kept in a
//! hidden table and copied by `dynaraft_cluster::backup` (see there for how
//! a backup holds its table at exactly one moment).
use super::{change_table, describe_created, key_schema_json, table_arn};
use crate::Api;
use crate::error::ApiError;
use crate::params::{Violations, bounded_limit, check_table_name, resource_name};
use crate::scope::display_name;
use dynaraft_cluster::Table;
use dynaraft_cluster::backup::{BACKUP_TABLE_PREFIX, backup_table_name, hidden_table};
use dynaraft_model::wire::{Flag, Int, List, Obj, Str};
use dynaraft_storage::catalog::{BACKUP_AVAILABLE, BACKUP_CREATING, BackupMeta, RestoreMeta};
use dynaraft_storage::{Command, Outcome, PartitionMeta, TableMeta, TableStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Most summaries one ListBackups page holds.
pub const MAX_LIST_BACKUPS_LIMIT: i64 = 100;
/// Shortest and longest BackupArn, in characters.
const MIN_BACKUP_ARN_CHARS: usize = 37;
const MAX_BACKUP_ARN_CHARS: usize = 1024;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateInput {
    pub table_name: Option<Str>,
    pub backup_name: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ArnInput {
    pub backup_arn: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListInput {
    pub table_name: Option<Str>,
    pub limit: Option<Int>,
    pub time_range_lower_bound: Option<Value>,
    pub time_range_upper_bound: Option<Value>,
    pub exclusive_start_backup_arn: Option<Str>,
    pub backup_type: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ThroughputOverride {
    pub read_capacity_units: Option<Int>,
    pub write_capacity_units: Option<Int>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IndexOverride {
    pub index_name: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RestoreInput {
    pub target_table_name: Option<Str>,
    pub backup_arn: Option<Str>,
    #[serde(flatten)]
    pub overrides: Overrides,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PitrRestoreInput {
    pub source_table_arn: Option<Str>,
    pub source_table_name: Option<Str>,
    pub target_table_name: Option<Str>,
    pub use_latest_restorable_time: Option<Flag>,
    pub restore_date_time: Option<Value>,
    #[serde(flatten)]
    pub overrides: Overrides,
}

/// What a restore may change of the source's definitions.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Overrides {
    pub billing_mode_override: Option<Str>,
    pub provisioned_throughput_override: Option<Obj<ThroughputOverride>>,
    pub global_secondary_index_override: Option<List<Obj<IndexOverride>>>,
    pub local_secondary_index_override: Option<List<Obj<IndexOverride>>>,
    // SSESpecificationOverride and OnDemandThroughputOverride are accepted
    // and have no effect (docs/compatibility.md).
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A new backup's id: its moment in milliseconds and 8 hex digits, as
/// DynamoDB's backup ARNs end (`01489173575360-b308cd7d`).
fn new_id(at_ms: u64) -> String {
    format!("{at_ms:014}-{:08x}", fastrand::u32(..))
}

/// The ARN of the backup kept in hidden table `hidden`.
fn backup_arn(api: &Api, b: &BackupMeta, hidden: &str) -> String {
    let id = hidden.strip_prefix(BACKUP_TABLE_PREFIX).unwrap_or(hidden);
    format!("{}/backup/{id}", table_arn(api, &b.source.name))
}

/// The backup an ARN names, if it is one of the request's scope, once
/// the caller may do `action` to it (authorized on the ARN before anything
/// is looked up, so a refused caller learns nothing of what exists).
fn find(
    api: &Api,
    arn: Option<&Str>,
    path: &str,
    action: &'static str,
) -> Result<(Arc<Table>, BackupMeta), ApiError> {
    let mut v = Violations::default();
    match arn.map(|a| a.0.as_str()) {
        None => v.null(path),
        Some(a) if a.chars().count() < MIN_BACKUP_ARN_CHARS => v.add(
            Some(a),
            path,
            &format!("Member must have length greater than or equal to {MIN_BACKUP_ARN_CHARS}"),
        ),
        Some(a) if a.chars().count() > MAX_BACKUP_ARN_CHARS => v.add(
            Some(a),
            path,
            &format!("Member must have length less than or equal to {MAX_BACKUP_ARN_CHARS}"),
        ),
        Some(_) => {}
    }
    v.check()?;
    let arn = arn.map(|a| a.0.as_str()).unwrap_or_default();
    api.authorize(|| crate::auth::Access::new(action, crate::auth::Resource::Arn(arn.into())))?;
    let not_found = || ApiError::BackupNotFound(format!("Backup not found: {arn}"));
    let id = arn
        .rsplit_once("/backup/")
        .map(|(_, id)| id)
        .ok_or_else(not_found)?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(not_found());
    }
    let t = api
        .router
        .table(&backup_table_name(id))
        .ok_or_else(not_found)?;
    let b = t
        .meta
        .backup
        .as_deref()
        .filter(|b| !b.system)
        .cloned()
        .ok_or_else(not_found)?;
    if !api.scope.owns(&b.source.name) || backup_arn(api, &b, &t.meta.name) != arn {
        return Err(not_found());
    }
    Ok((t, b))
}

/// Pins the change log of every partition of `meta` for `holder`
/// (`Command::PinChangeLog`): from each pin on, every change is logged and
/// kept until the holder releases it.
pub(super) async fn pin_all(api: &Api, meta: &TableMeta, holder: &str) -> Result<(), ApiError> {
    for p in &meta.partitions {
        let pin = Command::PinChangeLog {
            holder: holder.to_string(),
        };
        match api
            .router
            .propose_at(&meta.name, None, p.hash_lo, pin)
            .await?
        {
            Outcome::Sequence(_) => {}
            other => {
                tracing::error!(?other, "unexpected outcome of PinChangeLog");
                return Err(ApiError::InternalServerError(
                    "Internal server error".into(),
                ));
            }
        }
    }
    Ok(())
}

/// BackupDetails of backup `b`, kept in `hidden`.
fn details(api: &Api, b: &BackupMeta, hidden: &str) -> Value {
    let mut d = json!({
        "BackupArn": backup_arn(api, b, hidden),
        "BackupName": b.name,
        "BackupStatus": b.status,
        "BackupType": "USER",
        "BackupCreationDateTime": secs(b.at_ms),
    });
    if b.status == BACKUP_AVAILABLE {
        d["BackupSizeBytes"] = json!(b.bytes);
    }
    d
}

/// BackupDescription: the backup, its source table and the source's
/// features, as they were at the backup's moment.
fn description(api: &Api, b: &BackupMeta, hidden: &str) -> Result<Value, ApiError> {
    let s = &b.source;
    let mut source = json!({
        "TableName": display_name(&s.name),
        "TableId": s.table_id(),
        "TableArn": table_arn(api, &s.name),
        "KeySchema": key_schema_json(&s.key_schema()?),
        "TableCreationDateTime": secs(s.created_ms),
        "ProvisionedThroughput": {
            "ReadCapacityUnits": s.read_capacity,
            "WriteCapacityUnits": s.write_capacity,
        },
        "BillingMode": s.billing_mode,
    });
    if b.status == BACKUP_AVAILABLE {
        source["TableSizeBytes"] = json!(b.bytes);
        source["ItemCount"] = json!(b.items);
    }
    let mut features = json!({});
    let index = |ix: &dynaraft_storage::IndexMeta| -> Value {
        let mut d = super::index_description(ix, "", 0, 0);
        if let Some(d) = d.as_object_mut() {
            for gone in ["IndexSizeBytes", "ItemCount", "IndexArn"] {
                d.remove(gone);
            }
        }
        d
    };
    if !s.local_indexes.is_empty() {
        features["LocalSecondaryIndexes"] = s.local_indexes.iter().map(index).collect();
    }
    if !s.global_indexes.is_empty() {
        features["GlobalSecondaryIndexes"] = s
            .global_indexes
            .iter()
            .map(|g| {
                let mut ix = index(&g.index);
                ix["ProvisionedThroughput"] = json!({
                    "ReadCapacityUnits": g.read_capacity,
                    "WriteCapacityUnits": g.write_capacity,
                });
                ix
            })
            .collect();
    }
    if let Some(st) = s.enabled_stream() {
        features["StreamDescription"] =
            json!({"StreamEnabled": true, "StreamViewType": st.view_type});
    }
    if let Some(attr) = &s.ttl_attribute {
        features["TimeToLiveDescription"] =
            json!({"TimeToLiveStatus": "ENABLED", "AttributeName": attr});
    }
    Ok(json!({
        "BackupDetails": details(api, b, hidden),
        "SourceTableDetails": source,
        "SourceTableFeatureDetails": features,
    }))
}

pub async fn create(api: &Api, input: CreateInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let mut v = Violations::default();
    // BackupName has a table name's constraints.
    check_table_name(&mut v, input.backup_name.as_deref(), "backupName");
    v.check()?;
    let backup_name = input.backup_name.map(|n| n.0).unwrap_or_default();
    api.authorize(|| crate::auth::Access::table("CreateBackup", &name))?;
    let t = api
        .table(&name)
        .ok_or_else(|| ApiError::TableNotFound(format!("Table not found: {name}")))?;
    let splitting = t.meta.partitions.iter().any(|p| p.splitting.is_some());
    if !matches!(t.meta.status, TableStatus::Active | TableStatus::Updating) || splitting {
        return Err(ApiError::TableInUse(format!("Table is in use: {name}")));
    }
    // Pin every partition's change log, then choose the moment: every
    // change after it is in the log, to be undone from the copy.
    let holder_id = new_id(dynaraft_storage::wall_clock_ms());
    let holder = backup_table_name(&holder_id);
    pin_all(api, &t.meta, &holder).await?;
    let at_ms = dynaraft_storage::wall_clock_ms();
    let hidden = hidden_table(&holder_id, &backup_name, &t.meta, at_ms);
    let meta = change_table(api, Command::CreateTable(hidden), &holder).await?;
    let b = meta
        .backup
        .as_deref()
        .ok_or_else(|| ApiError::InternalServerError("Internal server error".into()))?;
    Ok(json!({"BackupDetails": details(api, b, &meta.name)}))
}

pub fn describe(api: &Api, input: ArnInput) -> Result<Value, ApiError> {
    let (t, b) = find(
        api,
        input.backup_arn.as_ref(),
        "backupArn",
        "DescribeBackup",
    )?;
    Ok(json!({"BackupDescription": description(api, &b, &t.meta.name)?}))
}

pub async fn delete(api: &Api, input: ArnInput) -> Result<Value, ApiError> {
    let (t, b) = find(api, input.backup_arn.as_ref(), "backupArn", "DeleteBackup")?;
    let restoring = api
        .router
        .tables()
        .iter()
        .filter_map(|r| r.meta.restore.as_ref())
        .any(|r| r.in_progress && r.backup_table == t.meta.name);
    if b.status == BACKUP_CREATING || restoring {
        return Err(ApiError::BackupInUse(format!(
            "Backup is being {}: {}",
            if restoring { "restored" } else { "created" },
            backup_arn(api, &b, &t.meta.name)
        )));
    }
    let mut desc = description(api, &b, &t.meta.name)?;
    let drop = Command::DropTable {
        name: t.meta.name.clone(),
    };
    match api.router.change_catalog(drop).await? {
        Outcome::Table(_) => {}
        _ => {
            return Err(ApiError::BackupNotFound(format!(
                "Backup not found: {}",
                backup_arn(api, &b, &t.meta.name)
            )));
        }
    }
    desc["BackupDetails"]["BackupStatus"] = json!("DELETED");
    Ok(json!({"BackupDescription": desc}))
}

/// A ListBackups time bound: epoch seconds.
fn time_bound(v: Option<&Value>, path: &str) -> Result<Option<f64>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::Serialization(Some(format!(
            "class java.lang.String can not be converted to an Long for {path}"
        )))),
    }
}

pub fn list(api: &Api, input: ListInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    if let Some(n) = input.table_name.as_deref()
        && !n.starts_with("arn:")
    {
        check_table_name(&mut v, Some(n), "tableName");
    }
    let limit = bounded_limit(
        &mut v,
        input.limit.as_ref(),
        MAX_LIST_BACKUPS_LIMIT,
        "limit",
    );
    let kind = input.backup_type.as_deref().unwrap_or("USER");
    if !["USER", "SYSTEM", "AWS_BACKUP", "ALL"].contains(&kind) {
        v.add(
            Some(kind),
            "backupType",
            "Member must satisfy enum value set: [USER, SYSTEM, AWS_BACKUP, ALL]",
        );
    }
    v.check()?;
    let lower = time_bound(input.time_range_lower_bound.as_ref(), "TimeRangeLowerBound")?;
    let upper = time_bound(input.time_range_upper_bound.as_ref(), "TimeRangeUpperBound")?;
    api.authorize(|| crate::auth::Access::new("ListBackups", crate::auth::Resource::Any))?;
    let table = input
        .table_name
        .as_deref()
        .map(crate::params::table_of_arn)
        .map(|n| api.scope.table_key(n).into_owned());
    let mut backups: Vec<(String, BackupMeta)> = api
        .router
        .tables()
        .into_iter()
        .filter_map(|t| Some((t.meta.name.clone(), t.meta.backup.as_deref()?.clone())))
        .filter(|(_, b)| !b.system && api.scope.owns(&b.source.name))
        .filter(|(_, b)| table.as_ref().is_none_or(|n| *n == b.source.name))
        .filter(|(_, b)| lower.is_none_or(|l| secs(b.at_ms) >= l))
        .filter(|(_, b)| upper.is_none_or(|u| secs(b.at_ms) < u))
        // Only user backups exist here: SYSTEM and AWS_BACKUP list nothing.
        .filter(|_| kind == "USER" || kind == "ALL")
        .collect();
    backups.sort_by(|a, b| (a.1.at_ms, &a.0).cmp(&(b.1.at_ms, &b.0)));
    if let Some(start) = input.exclusive_start_backup_arn.as_deref()
        && let Some(i) = backups
            .iter()
            .position(|(hidden, b)| backup_arn(api, b, hidden) == start)
    {
        backups.drain(..=i);
    }
    let summaries: Vec<Value> = backups
        .iter()
        .take(limit)
        .map(|(hidden, b)| {
            let mut s = details(api, b, hidden);
            s["TableName"] = json!(display_name(&b.source.name));
            s["TableId"] = json!(b.source.table_id());
            s["TableArn"] = json!(table_arn(api, &b.source.name));
            s
        })
        .collect();
    let mut out = json!({"BackupSummaries": summaries});
    if backups.len() > limit
        && let Some((hidden, b)) = backups.get(limit.saturating_sub(1))
    {
        out["LastEvaluatedBackupArn"] = json!(backup_arn(api, b, hidden));
    }
    Ok(out)
}

pub async fn restore(api: &Api, input: RestoreInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    check_table_name(
        &mut v,
        input.target_table_name.as_deref(),
        "targetTableName",
    );
    v.check()?;
    let target = input
        .target_table_name
        .as_deref()
        .unwrap_or_default()
        .to_string();
    api.authorize(|| crate::auth::Access::table("RestoreTableFromBackup", &target))?;
    let (hidden, b) = find(
        api,
        input.backup_arn.as_ref(),
        "backupArn",
        "RestoreTableFromBackup",
    )?;
    if b.status != BACKUP_AVAILABLE {
        return Err(ApiError::BackupInUse(format!(
            "Backup is being created: {}",
            backup_arn(api, &b, &hidden.meta.name)
        )));
    }
    if api.table(&target).is_some() {
        return Err(ApiError::TableAlreadyExists(format!(
            "Table already exists: {target}"
        )));
    }
    let from = RestoreMeta {
        backup_table: hidden.meta.name.clone(),
        source_table: None,
        source_backup_arn: Some(backup_arn(api, &b, &hidden.meta.name)),
        source_table_arn: table_arn(api, &b.source.name),
        restore_ms: b.at_ms,
        in_progress: true,
        sources: hidden.meta.partitions.iter().map(|p| p.group).collect(),
        copied: Vec::new(),
        redo_from_ms: None,
    };
    let meta = restored_meta(api, &input.overrides, &b.source, &target, from)?;
    let mut d = create_restored(api, meta, &target).await?;
    // While items are copied in, DynamoDB reports the backup's size.
    d["TableSizeBytes"] = json!(b.bytes);
    d["ItemCount"] = json!(b.items);
    Ok(json!({"TableDescription": d}))
}

/// Creates the restored table `meta` (`target`: as the request named it).
async fn create_restored(api: &Api, meta: TableMeta, target: &str) -> Result<Value, ApiError> {
    let created = match change_table(api, Command::CreateTable(meta), target).await {
        Err(ApiError::ResourceInUse(_)) => {
            return Err(ApiError::TableAlreadyExists(format!(
                "Table already exists: {target}"
            )));
        }
        other => other?,
    };
    describe_created(api, &created).await
}

/// RestoreTableToPointInTime: a new table holding the source as it was at
/// RestoreDateTime (or the latest restorable time), within the source's
/// recovery window.
pub async fn restore_to_point_in_time(
    api: &Api,
    input: PitrRestoreInput,
) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    check_table_name(
        &mut v,
        input.target_table_name.as_deref(),
        "targetTableName",
    );
    if let Some(n) = input.source_table_name.as_deref() {
        check_table_name(&mut v, Some(n), "sourceTableName");
    }
    v.check()?;
    let source = match (
        input.source_table_arn.as_ref(),
        input.source_table_name.as_ref(),
    ) {
        (Some(arn), None) => crate::params::table_of_arn(arn).to_string(),
        (None, Some(name)) => name.0.clone(),
        _ => {
            return Err(ApiError::validation(
                "Exactly one of SourceTableArn or SourceTableName must be specified",
            ));
        }
    };
    let target = input
        .target_table_name
        .as_deref()
        .unwrap_or_default()
        .to_string();
    api.authorize(|| crate::auth::Access::table("RestoreTableToPointInTime", &source))?;
    let t = api
        .table(&source)
        .ok_or_else(|| ApiError::TableNotFound(format!("Table not found: {source}")))?;
    let Some(pitr) = t.meta.pitr.as_deref() else {
        return Err(ApiError::PointInTimeRecoveryUnavailable(format!(
            "Point in time recovery is not enabled for table '{source}'"
        )));
    };
    let now = dynaraft_storage::wall_clock_ms();
    let latest = input
        .use_latest_restorable_time
        .as_ref()
        .is_some_and(|f| f.0);
    let at_ms = match (latest, input.restore_date_time.as_ref()) {
        (true, Some(_)) => {
            return Err(ApiError::validation(
                "Only one of RestoreDateTime or UseLatestRestorableTime can be specified",
            ));
        }
        (true, None) => now,
        (false, Some(Value::Number(n))) => n.as_f64().map_or(0, |s| (s * 1000.0).round() as u64),
        (false, Some(_)) => {
            return Err(ApiError::Serialization(Some(
                "class java.lang.String can not be converted to an Long for RestoreDateTime".into(),
            )));
        }
        (false, None) => {
            return Err(ApiError::validation(
                "Either RestoreDateTime or UseLatestRestorableTime must be specified",
            ));
        }
    };
    if at_ms < pitr.earliest_ms(now) || at_ms > now {
        return Err(ApiError::InvalidRestoreTime(
            "Restore time must be between the EarliestRestorableDateTime and the LatestRestorableDateTime of the table".into(),
        ));
    }
    if api.table(&target).is_some() {
        return Err(ApiError::TableAlreadyExists(format!(
            "Table already exists: {target}"
        )));
    }
    let live: Vec<u64> = t.meta.partitions.iter().map(|p| p.group).collect();
    let mut from = RestoreMeta {
        backup_table: String::new(),
        source_table: Some(t.meta.name.clone()),
        source_backup_arn: None,
        source_table_arn: table_arn(api, &t.meta.name),
        restore_ms: at_ms,
        in_progress: true,
        sources: live.clone(),
        copied: Vec::new(),
        redo_from_ms: None,
    };
    // The latest point-in-time snapshot at or before the time, if it is
    // nearer than now: its items, and the changes after it redone, instead
    // of the live table with every change since the time undone.
    let catalog = api.router.catalog().get();
    let snapshot = dynaraft_cluster::backup::snapshots_of(&catalog, &t.meta.name)
        .filter(|(_, b)| b.status == BACKUP_AVAILABLE)
        .filter(|(_, b)| b.at_ms <= at_ms && b.at_ms >= pitr.earliest_ms(now))
        .max_by_key(|(_, b)| b.at_ms);
    if let Some((snap, b)) = snapshot
        && at_ms - b.at_ms < now.saturating_sub(at_ms)
    {
        from.backup_table = snap.meta.name.clone();
        from.redo_from_ms = Some(b.at_ms);
        from.sources = snap
            .meta
            .partitions
            .iter()
            .map(|p| p.group)
            .chain(live)
            .collect();
    }
    let meta = restored_meta(api, &input.overrides, &t.meta, &target, from)?;
    let d = create_restored(api, meta, &target).await?;
    Ok(json!({"TableDescription": d}))
}

/// The restored table: the backup's source definitions with the
/// request's overrides, CREATING until its items are copied in. Streams,
/// TTL, tags and deletion protection are not restored, as in DynamoDB.
fn restored_meta(
    api: &Api,
    input: &Overrides,
    s: &TableMeta,
    target: &str,
    from: RestoreMeta,
) -> Result<TableMeta, ApiError> {
    let mut billing = s.billing_mode.clone();
    let (mut rcu, mut wcu) = (s.read_capacity, s.write_capacity);
    if let Some(mode) = input.billing_mode_override.as_deref() {
        if !["PROVISIONED", "PAY_PER_REQUEST"].contains(&mode) {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{mode}' at 'billingModeOverride' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
            )));
        }
        billing = mode.to_string();
    }
    if let Some(pt) = input.provisioned_throughput_override.as_deref() {
        let units = |u: &Option<Int>| u.as_ref().map(|i| i.0).filter(|n| *n >= 1);
        match (
            units(&pt.read_capacity_units),
            units(&pt.write_capacity_units),
        ) {
            (Some(r), Some(w)) => (rcu, wcu) = (r as u64, w as u64),
            _ => {
                return Err(ApiError::validation(
                    "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified and at least 1",
                ));
            }
        }
    }
    if billing == "PAY_PER_REQUEST" {
        (rcu, wcu) = (0, 0);
    } else if rcu == 0 || wcu == 0 {
        return Err(ApiError::validation(
            "One or more parameter values were invalid: ProvisionedThroughput must be specified when BillingMode is PROVISIONED",
        ));
    }
    let keep = |over: &Option<List<Obj<IndexOverride>>>, names: Vec<&str>, what: &str| {
        let Some(list) = over else {
            return Ok(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        };
        let mut kept = Vec::new();
        for ix in &list.0 {
            let n = ix.index_name.as_deref().unwrap_or_default();
            if !names.contains(&n) {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: {what} {n} is not an index of the backup's table"
                )));
            }
            kept.push(n.to_string());
        }
        Ok(kept)
    };
    let gsis = keep(
        &input.global_secondary_index_override,
        s.global_indexes
            .iter()
            .map(|g| g.index.name.as_str())
            .collect(),
        "GlobalSecondaryIndexOverride",
    )?;
    let lsis = keep(
        &input.local_secondary_index_override,
        s.local_indexes.iter().map(|l| l.name.as_str()).collect(),
        "LocalSecondaryIndexOverride",
    )?;
    let partitions = s.partitions.len().max(1);
    let global_indexes: Vec<_> = s
        .global_indexes
        .iter()
        .filter(|g| gsis.contains(&g.index.name))
        .enumerate()
        .map(|(id, g)| dynaraft_storage::GlobalIndexMeta {
            id: id as u32,
            index: g.index.clone(),
            status: dynaraft_storage::IndexStatus::Active,
            backfill: false,
            backfilled: Vec::new(),
            partitions: PartitionMeta::even_split(partitions),
            read_capacity: if billing == "PAY_PER_REQUEST" {
                0
            } else {
                g.read_capacity.max(1)
            },
            write_capacity: if billing == "PAY_PER_REQUEST" {
                0
            } else {
                g.write_capacity.max(1)
            },
        })
        .collect();
    let local_indexes: Vec<_> = s
        .local_indexes
        .iter()
        .filter(|l| lsis.contains(&l.name))
        .cloned()
        .collect();
    Ok(TableMeta {
        name: api.scope.table_key(target).into_owned(),
        partitions: PartitionMeta::even_split(partitions),
        status: TableStatus::Creating,
        created_ms: 0,
        hash_key: s.hash_key.clone(),
        range_key: s.range_key.clone(),
        attributes: s.attributes.clone(),
        billing_mode: billing.clone(),
        read_capacity: rcu,
        write_capacity: wcu,
        tags: Default::default(),
        deletion_protection: false,
        last_increase_ms: 0,
        last_decrease_ms: 0,
        decreases_today: 0,
        ttl_attribute: None,
        local_indexes,
        next_index_id: global_indexes.len() as u32,
        global_indexes,
        streams: Vec::new(),
        replication: None,
        backup: None,
        restore: Some(Box::new(from)),
        pitr: None,
        importing: None,
        resource_policies: Vec::new(),
        // An on-demand restore keeps the source's maximums.
        on_demand_max: if billing == "PAY_PER_REQUEST" {
            s.on_demand_max
        } else {
            Default::default()
        },
        insights: Vec::new(),
        warm: None,
    })
}

/// RestoreSummary of a restored table.
pub fn restore_summary(r: &RestoreMeta) -> Value {
    let mut s = json!({
        "SourceTableArn": r.source_table_arn,
        "RestoreDateTime": secs(r.restore_ms),
        "RestoreInProgress": r.in_progress,
    });
    if let Some(arn) = &r.source_backup_arn {
        s["SourceBackupArn"] = json!(arn);
    }
    s
}
