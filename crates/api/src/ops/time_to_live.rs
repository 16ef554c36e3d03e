//! DescribeTimeToLive and UpdateTimeToLive. Expired items are deleted by
//! the storage node's sweeper (`dynaraft_storage::ttl`).
use super::TableInput;
use crate::Api;
use crate::error::ApiError;
use crate::params::{Violations, resource_name};
use dynaraft_model::wire::{Flag, Obj, Str};
use serde::Deserialize;

/// UpdateTimeToLive's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateInput {
    pub table_name: Option<Str>,
    pub time_to_live_specification: Option<Obj<Specification>>,
}

/// TimeToLiveSpecification.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Specification {
    pub enabled: Option<Flag>,
    pub attribute_name: Option<Str>,
}
use dynaraft_storage::{Command, TableStatus};
use serde_json::{Value, json};

/// Longest TTL attribute name.
pub const MAX_TTL_ATTRIBUTE_CHARS: usize = 255;

pub fn describe(api: &Api, input: TableInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("DescribeTimeToLive", &name))?;
    let t = super::named_table(api, &name)?;
    Ok(match &t.meta.ttl_attribute {
        Some(a) => {
            json!({"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": a}})
        }
        None => json!({"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}),
    })
}

pub async fn update(
    api: &Api,
    input: UpdateInput,
    change: super::replication::Change<'_>,
) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("UpdateTimeToLive", &name))?;
    let spec = input.time_to_live_specification.as_ref().map(|s| &s.0);
    let enabled = spec.and_then(|s| s.enabled).map(|f| f.0);
    let attr = spec.and_then(|s| s.attribute_name.as_deref());
    let mut v = Violations::default();
    match spec {
        None => v.add(None, "timeToLiveSpecification", "Member must not be null"),
        Some(_) => {
            if enabled.is_none() {
                v.add(
                    None,
                    "timeToLiveSpecification.enabled",
                    "Member must not be null",
                );
            }
            match attr {
                None => v.add(
                    None,
                    "timeToLiveSpecification.attributeName",
                    "Member must not be null",
                ),
                Some(a) if a.is_empty() => v.add(
                    Some(a),
                    "timeToLiveSpecification.attributeName",
                    "Member must have length greater than or equal to 1",
                ),
                Some(a) if a.chars().count() > MAX_TTL_ATTRIBUTE_CHARS => v.add(
                    Some(a),
                    "timeToLiveSpecification.attributeName",
                    "Member must have length less than or equal to 255",
                ),
                _ => {}
            }
        }
    }
    v.check()?;
    let (enabled, attr) = (enabled.unwrap_or(false), attr.unwrap_or_default());
    let t = super::named_table(api, &name)?;
    if t.meta.status != TableStatus::Active {
        return Err(ApiError::ResourceInUse(format!(
            "Attempt to change a resource which is still in use: Table is not ACTIVE: {name}"
        )));
    }
    let mut meta = t.meta.clone();
    match (&meta.ttl_attribute, enabled) {
        (Some(_), true) => return Err(ApiError::validation("TimeToLive is already enabled")),
        (None, false) => return Err(ApiError::validation("TimeToLive is already disabled")),
        (Some(current), false) if current != attr => {
            return Err(ApiError::validation(format!(
                "TimeToLive is active on a different AttributeName: current value is {current}"
            )));
        }
        _ => {}
    }
    // Every replica of a global table keeps the same time to live.
    super::replication::forward_settings(api, &meta, "UpdateTimeToLive", change).await?;
    meta.ttl_attribute = enabled.then(|| attr.to_string());
    super::change_table(api, Command::ReplaceTableMeta(meta), &name).await?;
    Ok(json!({"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attr}}))
}
