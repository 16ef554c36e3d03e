//! DescribeTable.
use super::TableInput;
use crate::Api;
use crate::error::ApiError;
use crate::params::resource_name;
use serde_json::{Value, json};

pub async fn execute(api: &Api, input: TableInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("DescribeTable", &name))?;
    let t = super::named_table(api, &name)?;
    Ok(json!({ "Table": super::describe(api, &t.meta).await? }))
}
