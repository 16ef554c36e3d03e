//! DescribeContinuousBackups and UpdateContinuousBackups: on-demand
//! backups are on for every table (ContinuousBackupsStatus ENABLED, as
//! DynamoDB has it), and point-in-time recovery is turned on and off here.
//! Turning it on pins every partition's change log (`PITR_HOLDER`), so that
//! every change from then on is kept for the recovery period; a restore to
//! a time copies the live table and undoes the changes after it
//! (`dynaraft_cluster::backup`).
use super::TableInput;
use crate::Api;
use crate::error::ApiError;
use crate::params::resource_name;
use dynaraft_model::wire::{Flag, Int, Obj, Str};
use dynaraft_storage::catalog::{
    DEFAULT_RECOVERY_PERIOD_DAYS, MAX_RECOVERY_PERIOD_DAYS, MIN_RECOVERY_PERIOD_DAYS, PITR_HOLDER,
    PitrMeta,
};
use dynaraft_storage::{Command, TableMeta, TableStatus};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateInput {
    pub table_name: Option<Str>,
    pub point_in_time_recovery_specification: Option<Obj<Specification>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Specification {
    pub point_in_time_recovery_enabled: Option<Flag>,
    pub recovery_period_in_days: Option<Int>,
}

/// ContinuousBackupsDescription of `meta` at `now_ms`.
fn description(meta: &TableMeta, now_ms: u64) -> Value {
    let pitr = match meta.pitr.as_deref() {
        Some(p) => json!({
            "PointInTimeRecoveryStatus": "ENABLED",
            "RecoveryPeriodInDays": p.period_days,
            "EarliestRestorableDateTime": p.earliest_ms(now_ms) as f64 / 1000.0,
            "LatestRestorableDateTime": now_ms as f64 / 1000.0,
        }),
        None => json!({"PointInTimeRecoveryStatus": "DISABLED"}),
    };
    json!({
        "ContinuousBackupsStatus": "ENABLED",
        "PointInTimeRecoveryDescription": pitr,
    })
}

pub fn describe(api: &Api, input: TableInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("DescribeContinuousBackups", &name))?;
    let t = api
        .table(&name)
        .ok_or_else(|| ApiError::TableNotFound(format!("Table not found: {name}")))?;
    let now = dynaraft_storage::wall_clock_ms();
    Ok(json!({"ContinuousBackupsDescription": description(&t.meta, now)}))
}

pub async fn update(api: &Api, input: UpdateInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let Some(spec) = input.point_in_time_recovery_specification.as_deref() else {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'pointInTimeRecoverySpecification' failed to satisfy constraint: Member must not be null",
        ));
    };
    let Some(enabled) = spec.point_in_time_recovery_enabled.as_ref().map(|f| f.0) else {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'pointInTimeRecoverySpecification.pointInTimeRecoveryEnabled' failed to satisfy constraint: Member must not be null",
        ));
    };
    let period = spec.recovery_period_in_days.as_ref().map(|i| i.0);
    if let Some(p) = period
        && !(MIN_RECOVERY_PERIOD_DAYS as i64..=MAX_RECOVERY_PERIOD_DAYS as i64).contains(&p)
    {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{p}' at 'pointInTimeRecoverySpecification.recoveryPeriodInDays' failed to satisfy constraint: Member must have value between {MIN_RECOVERY_PERIOD_DAYS} and {MAX_RECOVERY_PERIOD_DAYS}"
        )));
    }
    if period.is_some() && !enabled {
        return Err(ApiError::validation(
            "RecoveryPeriodInDays can only be set when PointInTimeRecoveryEnabled is true",
        ));
    }
    api.authorize(|| crate::auth::Access::table("UpdateContinuousBackups", &name))?;
    let t = api
        .table(&name)
        .ok_or_else(|| ApiError::TableNotFound(format!("Table not found: {name}")))?;
    if !matches!(t.meta.status, TableStatus::Active | TableStatus::Updating) {
        return Err(ApiError::TableNotFound(format!("Table not found: {name}")));
    }
    let mut meta = t.meta.clone();
    meta.pitr = match (enabled, t.meta.pitr.as_deref()) {
        (false, _) => None,
        (true, Some(p)) => Some(Box::new(PitrMeta {
            period_days: period.map_or(p.period_days, |d| d as u64),
            ..p.clone()
        })),
        (true, None) => {
            // Every partition keeps its changes from here on; only then
            // does the window open.
            super::backups::pin_all(api, &t.meta, PITR_HOLDER).await?;
            Some(Box::new(PitrMeta {
                since_ms: dynaraft_storage::wall_clock_ms(),
                period_days: period.map_or(DEFAULT_RECOVERY_PERIOD_DAYS, |d| d as u64),
            }))
        }
    };
    let meta = super::change_table(api, Command::ReplaceTableMeta(meta), &name).await?;
    let now = dynaraft_storage::wall_clock_ms();
    Ok(json!({"ContinuousBackupsDescription": description(&meta, now)}))
}
