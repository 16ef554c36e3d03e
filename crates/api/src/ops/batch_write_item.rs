//! BatchWriteItem: up to 25 puts and deletes across tables, validated in
//! full before any is written; writes run concurrently.
use super::write::{WriteRequest, write};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_model::value::{item_from_json, item_size_bytes};
use dynaraft_model::{Item, MAX_ITEM_BYTES};
use dynaraft_storage::WriteKind;
use dynaraft_storage::global::invalid_global_key;
use dynaraft_storage::index::invalid_index_key;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const MAX_BATCH_WRITE_ITEMS: usize = 25;

/// A WriteRequest as DynamoDB's Java model prints it in a message.
fn java_write_request(r: &Value) -> String {
    let part = |f: &str| match r.get(f) {
        Some(v) if !v.is_null() => v.to_string(),
        _ => "null".into(),
    };
    format!(
        "WriteRequest(putRequest={}, deleteRequest={})",
        part("PutRequest"),
        part("DeleteRequest")
    )
}

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let mode = capacity_mode(body)?;
    let metrics = enum_value(
        body,
        "ReturnItemCollectionMetrics",
        "returnItemCollectionMetrics",
        &["SIZE", "NONE"],
    )? == Some("SIZE");
    let request = super::batch_get_item::request_items(body, "BatchWriteItem")?;
    let total: usize = request
        .values()
        .map(|v| v.as_array().map_or(0, |a| a.len()))
        .sum();
    if let Some((name, reqs)) = request.iter().find(|(_, r)| {
        r.as_array()
            .is_some_and(|a| a.len() > MAX_BATCH_WRITE_ITEMS)
    }) {
        // DynamoDB shows the map as Java renders it.
        let shown: Vec<String> = reqs
            .as_array()
            .into_iter()
            .flatten()
            .map(java_write_request)
            .collect();
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{{{name}=[{}]}}' at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to {MAX_BATCH_WRITE_ITEMS}, Member must have length greater than or equal to 1]",
            shown.join(", ")
        )));
    }
    if total > MAX_BATCH_WRITE_ITEMS {
        return Err(ApiError::validation(
            "Too many items requested for the BatchWriteItem call",
        ));
    }
    let mut plans = Vec::new();
    for (name, reqs) in request {
        let mut v = Violations::default();
        check_table_name(&mut v, Some(name), "requestItems.key");
        v.check()?;
        let reqs = reqs.as_array().ok_or_else(|| {
            ApiError::Serialization(Some("Start of list found where not expected".into()))
        })?;
        if reqs.is_empty() {
            return Err(ApiError::validation(
                "1 validation error detected: Value '{}' at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 25, Member must have length greater than or equal to 1]",
            ));
        }
        let table = active_table(api, name)?;
        let mut seen = Vec::new();
        for r in reqs {
            let put = r.get("PutRequest").filter(|v| !v.is_null());
            let del = r.get("DeleteRequest").filter(|v| !v.is_null());
            let (kind, key, item, raw): (WriteKind, Item, Option<Item>, Value) = match (put, del) {
                (Some(p), None) => {
                    let item = item_from_json(p.get("Item").unwrap_or(&Value::Null))?;
                    table.schema.validate_item_key(&item)?;
                    if item_size_bytes(&item) > MAX_ITEM_BYTES {
                        return Err(ApiError::validation(
                            "Item size has exceeded the maximum allowed size",
                        ));
                    }
                    // Index keys too, before anything is written: the apply
                    // would refuse this item after others were written.
                    let local = table
                        .meta
                        .local_index_specs(api.cfg.item_collection_limit_bytes);
                    let global = table.meta.global_key_specs();
                    if let Some(msg) = local
                        .and_then(|l| invalid_index_key(&l, &item))
                        .or_else(|| invalid_global_key(&global, &item))
                    {
                        return Err(ApiError::Validation(msg));
                    }
                    (
                        WriteKind::Put,
                        table.schema.key_of(&item),
                        Some(item),
                        r.clone(),
                    )
                }
                (None, Some(d)) => {
                    let key = item_from_json(d.get("Key").unwrap_or(&Value::Null))?;
                    table.schema.validate_key(&key)?;
                    (WriteKind::Delete, key, None, r.clone())
                }
                _ => {
                    return Err(ApiError::validation(
                        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                    ));
                }
            };
            let sk = table.schema.storage_key(&key);
            if seen.contains(&sk) {
                return Err(ApiError::validation(
                    "Provided list of item keys contains duplicates",
                ));
            }
            seen.push(sk);
            plans.push((name.clone(), table.clone(), kind, key, item, raw));
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (name, table, kind, key, item, raw) in plans {
        let api = api.clone();
        set.spawn(async move {
            let req = WriteRequest {
                kind,
                key,
                item,
                condition: None,
                update: None,
                names: BTreeMap::new(),
                values: json!({}),
                old_on_failure: false,
            };
            (name, raw, write(&api, &table, req).await)
        });
    }
    let mut unprocessed: Map<String, Value> = Map::new();
    let mut units: BTreeMap<String, f64> = BTreeMap::new();
    let mut collections: Map<String, Value> = Map::new();
    while let Some(joined) = set.join_next().await {
        let (name, raw, result) =
            joined.map_err(|e| ApiError::InternalServerError(e.to_string()))?;
        match result {
            Ok(w) => {
                *units.entry(name.clone()).or_default() += write_units(w.size());
                if let Some(m) = w.collection_metrics().filter(|_| metrics) {
                    let list = collections.entry(name).or_insert_with(|| json!([]));
                    if let Some(a) = list.as_array_mut() {
                        a.push(m);
                    }
                }
            }
            Err(ApiError::ServiceUnavailable(_) | ApiError::TransactionConflict) => {
                if let Some(a) = unprocessed
                    .entry(name)
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    a.push(raw);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = json!({ "UnprocessedItems": unprocessed });
    if !collections.is_empty() {
        out["ItemCollectionMetrics"] = Value::Object(collections);
    }
    insert_consumed_list(&mut out, mode, &units, true);
    Ok(out)
}
