//! BatchGetItem: up to 100 keys across tables; keys beyond the 16 MB
//! response limit come back as UnprocessedKeys.
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::projection::project;
use dynaraft_model::value::{item_from_json, item_size_bytes, item_to_json};
use serde_json::{Map, Value, json};

pub const MAX_BATCH_GET_KEYS: usize = 100;
/// Most item bytes returned by one BatchGetItem call (16 MB).
pub const MAX_BATCH_GET_BYTES: usize = 16 * 1024 * 1024;

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let mode = capacity_mode(body)?;
    let request = request_items(body, "BatchGetItem")?;
    let total: usize = request
        .values()
        .map(|t| {
            t.get("Keys")
                .and_then(|k| k.as_array())
                .map_or(0, |k| k.len())
        })
        .sum();
    if total > MAX_BATCH_GET_KEYS {
        // DynamoDB names the first table whose keys take the count past
        // the limit.
        let mut running = 0;
        let over = request
            .iter()
            .find(|(_, t)| {
                running += t
                    .get("Keys")
                    .and_then(|k| k.as_array())
                    .map_or(0, |k| k.len());
                running > MAX_BATCH_GET_KEYS
            })
            .map_or("", |(n, _)| n.as_str());
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at 'RequestItems.{over}.member.Keys' failed to satisfy constraint: Member must have length less than or equal to {MAX_BATCH_GET_KEYS}"
        )));
    }
    // Validate everything before reading anything.
    let mut plans = Vec::new();
    for (name, spec) in request {
        let mut v = Violations::default();
        check_table_name(&mut v, Some(name), "requestItems.key");
        v.check()?;
        let keys = spec.get("Keys").and_then(|k| k.as_array()).ok_or_else(|| {
            ApiError::validation("1 validation error detected: Value null at 'requestItems.keys' failed to satisfy constraint: Member must not be null")
        })?;
        if keys.is_empty() {
            return Err(ApiError::validation(
                "1 validation error detected: Value '[]' at 'requestItems.keys' failed to satisfy constraint: Member must have length greater than or equal to 1",
            ));
        }
        let table = active_table(api, name)?;
        let projection = super::read::tree_projection(spec)?;
        let consistent = opt_bool(spec, "ConsistentRead")?.unwrap_or(false);
        let mut parsed = Vec::new();
        for k in keys {
            let key = item_from_json(k)?;
            table.schema.validate_key(&key)?;
            let sk = table.schema.storage_key(&key).ok_or_else(|| {
                ApiError::validation("The provided key element does not match the schema")
            })?;
            if parsed.iter().any(|(s, _, _): &(Vec<u8>, _, _)| *s == sk) {
                return Err(ApiError::validation(
                    "Provided list of item keys contains duplicates",
                ));
            }
            parsed.push((sk, k.clone(), key));
        }
        plans.push((
            name.clone(),
            spec.clone(),
            table,
            projection,
            consistent,
            parsed,
        ));
    }
    let mut responses = Map::new();
    let mut unprocessed = Map::new();
    let mut capacity = Vec::new();
    let mut bytes = 0usize;
    for (name, spec, table, projection, consistent, keys) in plans {
        let mut items = Vec::new();
        let mut left = Vec::new();
        let mut units = 0.0;
        for (sk, raw, _) in keys {
            if bytes >= MAX_BATCH_GET_BYTES {
                left.push(raw);
                continue;
            }
            let item = api.router.get_item(&table, &sk, consistent).await?;
            let size = item.as_ref().map_or(0, item_size_bytes);
            bytes += size;
            units += read_units(size, consistent);
            if let Some(i) = item {
                let i = match &projection {
                    Some(p) => project(&i, p),
                    None => i,
                };
                items.push(item_to_json(&i));
            }
        }
        responses.insert(name.clone(), Value::Array(items));
        if !left.is_empty() {
            let mut spec = spec.clone();
            spec["Keys"] = Value::Array(left);
            unprocessed.insert(name.clone(), spec);
        }
        if let Some(c) = consumed(mode, &name, units, false) {
            capacity.push(c);
        }
    }
    let mut out = json!({ "Responses": responses, "UnprocessedKeys": unprocessed });
    if mode != CapacityMode::None {
        out["ConsumedCapacity"] = Value::Array(capacity);
    }
    Ok(out)
}

/// RequestItems of BatchGetItem or BatchWriteItem (`op`), present and
/// non-empty.
pub fn request_items<'a>(body: &'a Value, op: &str) -> Result<&'a Map<String, Value>, ApiError> {
    let items = opt_object(body, "RequestItems")?;
    if items.is_none_or(|m| m.is_empty()) {
        return Err(ApiError::validation(format!(
            "The requestItems parameter is required for {op}"
        )));
    }
    let mut v = Violations::default();
    match items {
        None => v.add(None, "requestItems", "Member must not be null"),
        Some(m) if m.is_empty() => v.add(
            Some("{}"),
            "requestItems",
            "Member must have length greater than or equal to 1",
        ),
        _ => {}
    }
    v.check()?;
    items.ok_or_else(|| ApiError::validation("RequestItems is required"))
}
