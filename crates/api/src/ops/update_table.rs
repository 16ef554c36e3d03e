//! UpdateTable: billing mode, provisioned throughput and deletion
//! protection. Index and stream updates arrive with their issues.
use crate::Api;
use crate::error::ApiError;
use crate::params::{enum_value, opt_bool, table_name};
use dynaraft_storage::{Command, TableStatus};
use serde_json::{Value, json};

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    for field in [
        "GlobalSecondaryIndexUpdates",
        "StreamSpecification",
        "ReplicaUpdates",
    ] {
        if body.get(field).is_some_and(|x| !x.is_null()) {
            return Err(ApiError::validation(format!(
                "{field} is not supported by dynaraft yet"
            )));
        }
    }
    let t = api.router.table(&name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {name} not found"
        ))
    })?;
    if t.meta.status != TableStatus::Active {
        return Err(ApiError::ResourceInUse(format!(
            "Attempt to change a resource which is still in use: Table is being updated: {name}"
        )));
    }
    let mode = enum_value(
        body,
        "BillingMode",
        "billingMode",
        &["PROVISIONED", "PAY_PER_REQUEST"],
    )?;
    let pt = body.get("ProvisionedThroughput").filter(|x| !x.is_null());
    let protection = opt_bool(body, "DeletionProtectionEnabled")?;
    if mode.is_none() && pt.is_none() && protection.is_none() {
        return Err(ApiError::validation(
            "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, GlobalSecondaryIndexUpdates or SSESpecification or ReplicaUpdates is required",
        ));
    }
    let mut meta = t.meta.clone();
    let new_mode = mode.unwrap_or(&meta.billing_mode).to_string();
    let now = dynaraft_storage::wall_clock_ms();
    if new_mode == "PAY_PER_REQUEST" {
        if pt.is_some() {
            return Err(ApiError::validation(
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
            ));
        }
        meta.read_capacity = 0;
        meta.write_capacity = 0;
    } else {
        let (r, w) = match pt {
            Some(pt) => super::create_table::throughput(pt)?,
            None if meta.billing_mode == "PROVISIONED" => (meta.read_capacity, meta.write_capacity),
            None => {
                return Err(ApiError::validation(
                    "One or more parameter values were invalid: ProvisionedThroughput must be specified when BillingMode is PROVISIONED",
                ));
            }
        };
        if pt.is_some() && mode.is_none() && r == meta.read_capacity && w == meta.write_capacity {
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
    meta.billing_mode = new_mode;
    if let Some(p) = protection {
        meta.deletion_protection = p;
    }
    let instant = api.cfg.transition_delay_ms == 0;
    meta.status = if instant {
        TableStatus::Active
    } else {
        TableStatus::Updating
    };
    let meta = super::change_table(api, Command::ReplaceTableMeta(meta), &name).await?;
    if !instant {
        super::schedule_transition(api, name, Some(TableStatus::Active));
    }
    Ok(json!({ "TableDescription": super::describe(api, &meta).await? }))
}
