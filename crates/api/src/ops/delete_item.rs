//! DeleteItem.
use super::write::{WriteOptions, WriteRequest, checked_condition, write};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_storage::WriteKind;
use serde_json::Value;
use std::sync::Arc;

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let opts = WriteOptions::from_body(body, true)?;
    let (table, request) = plan(api, body, WriteKind::Delete, opts.old_on_failure)?;
    let w = write(api, &table, request).await?;
    let attrs = (opts.return_values == "ALL_OLD")
        .then(|| w.old.clone())
        .flatten();
    Ok(opts.response(&name, attrs, &w))
}

/// Parses and validates a keyed write with an optional condition: a delete
/// (DeleteItem, or a transaction's Delete) or a transaction's
/// ConditionCheck (`WriteKind::Check`), whose condition is required.
pub fn plan(
    api: &Api,
    body: &Value,
    kind: WriteKind,
    old_on_failure: bool,
) -> Result<(Arc<Table>, WriteRequest), ApiError> {
    let name = table_name(body)?;
    let key = required_item(body, "Key", "key")?;
    let (condition, input) = checked_condition(body)?;
    if kind == WriteKind::Check && condition.is_none() {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'conditionExpression' failed to satisfy constraint: Member must not be null",
        ));
    }
    let table = active_table(api, &name)?;
    table.schema.validate_key(&key)?;
    let request = WriteRequest::conditional(kind, key, None, condition, &input, old_on_failure);
    Ok((table, request))
}
