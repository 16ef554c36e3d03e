//! DescribeTable.
use crate::Api;
use crate::error::ApiError;
use crate::params::table_name;
use serde_json::{Value, json};

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let t = api.router.table(&name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {name} not found"
        ))
    })?;
    Ok(json!({ "Table": super::describe(api, &t.meta).await? }))
}
