//! DeleteItem.
use super::write::{WriteOptions, WriteRequest, checked_condition, write};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_storage::WriteKind;
use serde_json::Value;

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let key = required_item(body, "Key", "key")?;
    let opts = WriteOptions::from_body(body, true)?;
    let (condition, input) = checked_condition(body)?;
    let table = active_table(api, &name)?;
    table.schema.validate_key(&key)?;
    let request = WriteRequest::conditional(WriteKind::Delete, key, None, condition, &input, &opts);
    let w = write(api, &table, request).await?;
    let attrs = (opts.return_values == "ALL_OLD")
        .then(|| w.old.clone())
        .flatten();
    Ok(opts.response(&name, attrs, &w))
}
