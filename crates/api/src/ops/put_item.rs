//! PutItem.
use super::write::{WriteOptions, WriteRequest, checked_condition, write};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_model::MAX_ITEM_BYTES;
use dynaraft_model::value::item_size_bytes;
use dynaraft_storage::WriteKind;
use serde_json::Value;
use std::sync::Arc;

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let opts = WriteOptions::from_body(body, true)?;
    let (table, request) = plan(api, body, opts.old_on_failure)?;
    let w = write(api, &table, request).await?;
    let attrs = (opts.return_values == "ALL_OLD")
        .then(|| w.old.clone())
        .flatten();
    Ok(opts.response(&name, attrs, &w))
}

/// Parses and validates a put (PutItem, or a transaction's Put).
pub fn plan(
    api: &Api,
    body: &Value,
    old_on_failure: bool,
) -> Result<(Arc<Table>, WriteRequest), ApiError> {
    let name = table_name(body)?;
    let item = required_item(body, "Item", "item")?;
    let (condition, input) = checked_condition(body)?;
    let table = active_table(api, &name)?;
    table.schema.validate_item_key(&item)?;
    if item_size_bytes(&item) > MAX_ITEM_BYTES {
        return Err(ApiError::validation(
            "Item size has exceeded the maximum allowed size",
        ));
    }
    let key = table.schema.key_of(&item);
    let kind = WriteKind::Put;
    let request =
        WriteRequest::conditional(kind, key, Some(item), condition, &input, old_on_failure);
    Ok((table, request))
}
