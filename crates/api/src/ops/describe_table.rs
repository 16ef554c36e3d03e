//! DescribeTable.
use crate::Api;
use crate::error::ApiError;
use crate::params::table_name;
use serde_json::{Value, json};

pub fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let t = api.node.table(&name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {name} not found"
        ))
    })?;
    Ok(json!({ "Table": super::describe(api, &t.meta) }))
}
