//! BatchWriteItem: up to 25 puts and deletes across tables, validated in
//! full before any is written; writes run concurrently.
use super::write::{WriteRequest, write};
use crate::Api;
use crate::enums::{ReturnMetrics, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::{Dict, List, Obj, Str, WireItem};
use dynaraft_model::{Item, MAX_ITEM_BYTES};
use dynaraft_storage::WriteKind;
use dynaraft_storage::global::invalid_global_key;
use dynaraft_storage::index::invalid_index_key;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const MAX_BATCH_WRITE_ITEMS: usize = 25;

/// BatchWriteItem's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub request_items: Option<Dict<List<Obj<WriteRequestShape>>>>,
    pub return_consumed_capacity: Option<Str>,
    pub return_item_collection_metrics: Option<Str>,
}

/// One WriteRequest: a PutRequest or a DeleteRequest.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct WriteRequestShape {
    pub put_request: Option<Obj<PutRequest>>,
    pub delete_request: Option<Obj<DeleteRequest>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct PutRequest {
    pub item: Option<WireItem>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteRequest {
    pub key: Option<WireItem>,
}

/// A checked write of the batch: its kind, key and item, and the request
/// as the client would resend it (for UnprocessedItems).
struct Planned {
    kind: WriteKind,
    key: Item,
    item: Option<Item>,
    resend: Value,
}

/// A WriteRequest as DynamoDB's Java model prints it in a message.
fn java_write_request(r: &WriteRequestShape) -> String {
    let put = r.put_request.as_ref().map_or("null".to_string(), |p| {
        let item =
            p.0.item
                .clone()
                .unwrap_or_default()
                .into_item()
                .unwrap_or_default();
        format!("PutRequest(item={})", item_to_json(&item))
    });
    let delete = r.delete_request.as_ref().map_or("null".to_string(), |d| {
        let key =
            d.0.key
                .clone()
                .unwrap_or_default()
                .into_item()
                .unwrap_or_default();
        format!("DeleteRequest(key={})", item_to_json(&key))
    });
    format!("WriteRequest(putRequest={put}, deleteRequest={delete})")
}

/// Checks one WriteRequest against its table, before anything is written.
fn plan_one(api: &Api, table: &Table, r: WriteRequestShape) -> Result<Planned, ApiError> {
    match (r.put_request, r.delete_request) {
        (Some(p), None) => {
            let item = wire_item(p.0.item)?;
            table.schema.validate_item_key(&item)?;
            if item_size_bytes(&item) > MAX_ITEM_BYTES {
                return Err(ApiError::validation(
                    "Item size has exceeded the maximum allowed size",
                ));
            }
            // Index keys too, before anything is written: the apply would
            // refuse this item after others were written.
            let local = table
                .meta
                .local_index_specs(&table.schema, api.cfg.item_collection_limit_bytes);
            let global = table.meta.global_key_specs();
            if let Some(msg) = local
                .and_then(|l| invalid_index_key(&l, &item))
                .or_else(|| invalid_global_key(&global, &item))
            {
                return Err(ApiError::Validation(msg));
            }
            let resend = json!({ "PutRequest": { "Item": item_to_json(&item) } });
            Ok(Planned {
                kind: WriteKind::Put,
                key: table.schema.key_of(&item),
                item: Some(item),
                resend,
            })
        }
        (None, Some(d)) => {
            let key = wire_item(d.0.key)?;
            table.schema.validate_key(&key)?;
            let resend = json!({ "DeleteRequest": { "Key": item_to_json(&key) } });
            Ok(Planned {
                kind: WriteKind::Delete,
                key,
                item: None,
                resend,
            })
        }
        _ => Err(ApiError::validation(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
        )),
    }
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    let metrics = ReturnMetrics::member(
        &mut v,
        input.return_item_collection_metrics.as_ref(),
        "returnItemCollectionMetrics",
    ) == Some(ReturnMetrics::Size);
    v.check()?;
    let request = match input.request_items {
        Some(r) if !r.is_empty() => r,
        _ => {
            return Err(super::batch_get_item::required_request_items(
                "BatchWriteItem",
            ));
        }
    };
    if let Some((name, reqs)) = request
        .iter()
        .find(|(_, r)| r.0.is_empty() || r.0.len() > MAX_BATCH_WRITE_ITEMS)
    {
        // DynamoDB shows the map as Java renders it.
        let shown: Vec<String> = reqs.0.iter().map(|r| java_write_request(&r.0)).collect();
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{{{name}=[{}]}}' at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to {MAX_BATCH_WRITE_ITEMS}, Member must have length greater than or equal to 1]",
            shown.join(", ")
        )));
    }
    let total: usize = request.iter().map(|(_, r)| r.0.len()).sum();
    if total > MAX_BATCH_WRITE_ITEMS {
        return Err(ApiError::validation(
            "Too many items requested for the BatchWriteItem call",
        ));
    }
    let mut plans = Vec::new();
    for (name, reqs) in request.0 {
        let mut v = Violations::default();
        let table_name = check_table_or_arn(&mut v, &name, "requestItems.key").to_string();
        v.check()?;
        let table = active_table(api, &table_name)?;
        let first = plans.len();
        let mut seen = Vec::new();
        for r in reqs.0 {
            let p = plan_one(api, &table, r.0)?;
            let sk = table.schema.storage_key(&p.key);
            if seen.contains(&sk) {
                return Err(ApiError::validation(
                    "Provided list of item keys contains duplicates",
                ));
            }
            seen.push(sk);
            plans.push((name.clone(), table.clone(), p.kind, p.key, p.item, p.resend));
        }
        api.authorize(|| {
            let mine = plans.get(first..).unwrap_or_default();
            let attrs = mine.iter().flat_map(|(_, _, _, key, item, _)| {
                key.keys().chain(item.iter().flat_map(|i| i.keys()))
            });
            crate::auth::Access::table("BatchWriteItem", &table_name)
                .keys(&table.schema, mine.iter().map(|(_, _, _, key, _, _)| key))
                .attributes(attrs.cloned())
        })?;
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
                legacy_update: false,
            };
            (name, raw, write(&api, &table, req).await)
        });
    }
    let mut unprocessed: Map<String, Value> = Map::new();
    let mut units: BTreeMap<String, crate::params::TableUnits> = BTreeMap::new();
    let mut collections: Map<String, Value> = Map::new();
    let mut done = 0;
    let mut throttled = None;
    while let Some(joined) = set.join_next().await {
        let (name, raw, result) =
            joined.map_err(|e| ApiError::InternalServerError(e.to_string()))?;
        if let Err(e @ ApiError::Throttled { .. }) = &result {
            throttled.get_or_insert_with(|| e.clone());
        }
        match result {
            Ok(w) => {
                done += 1;
                units
                    .entry(name.clone())
                    .or_default()
                    .add(w.units(), &w.index_units);
                if let Some(m) = w.collection_metrics().filter(|_| metrics) {
                    let list = collections.entry(name).or_insert_with(|| json!([]));
                    if let Some(a) = list.as_array_mut() {
                        a.push(m);
                    }
                }
            }
            // Unprocessed: the client sends these again (throttled ones
            // once capacity returns).
            Err(
                ApiError::ServiceUnavailable(_)
                | ApiError::TransactionConflict
                | ApiError::Throttled { .. },
            ) => {
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
    // DynamoDB refuses the whole batch only when capacity refused every
    // item; otherwise the refused ones come back unprocessed.
    if let (0, Some(e)) = (done, throttled) {
        return Err(e);
    }
    let mut out = json!({ "UnprocessedItems": unprocessed });
    if !collections.is_empty() {
        out["ItemCollectionMetrics"] = Value::Object(collections);
    }
    crate::params::insert_consumed_parts(&mut out, mode, &units, true);
    Ok(out)
}
