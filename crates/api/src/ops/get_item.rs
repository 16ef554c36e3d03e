//! GetItem.
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::projection::project;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use serde_json::{Value, json};

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let key = required_item(body, "Key", "key")?;
    let consistent = opt_bool(body, "ConsistentRead")?.unwrap_or(false);
    let mode = capacity_mode(body)?;
    let projection = super::query::projection(body)?;
    let table = active_table(api, &name)?;
    table.schema.validate_key(&key)?;
    let sk = table.schema.storage_key(&key).ok_or_else(|| {
        ApiError::validation("The provided key element does not match the schema")
    })?;
    let item = api.router.get_item(&table, &sk, consistent).await?;
    let size = item.as_ref().map_or(0, item_size_bytes);
    let mut out = json!({});
    let item = match (&projection, item) {
        (Some(p), Some(i)) => Some(project(&i, p)),
        (None, i) => i,
        (_, None) => None,
    };
    insert_opt(&mut out, "Item", item.as_ref().map(item_to_json));
    insert_opt(
        &mut out,
        "ConsumedCapacity",
        consumed(mode, &name, read_units(size, consistent), false),
    );
    Ok(out)
}
