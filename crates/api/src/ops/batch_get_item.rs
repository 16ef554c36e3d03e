//! BatchGetItem: up to 100 keys across tables; keys beyond the 16 MB
//! response limit come back as UnprocessedKeys.
use super::read::projection_of;
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::Path;
use dynaraft_expr::projection::project;
use dynaraft_model::Item;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::{Dict, Flag, List, Obj, Str, WireItem};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub const MAX_BATCH_GET_KEYS: usize = 100;
/// Most item bytes returned by one BatchGetItem call (16 MB).
pub const MAX_BATCH_GET_BYTES: usize = 16 * 1024 * 1024;

/// BatchGetItem's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub request_items: Option<Dict<Obj<KeysAndAttributes>>>,
    pub return_consumed_capacity: Option<Str>,
}

/// The keys to read from one table, and how.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct KeysAndAttributes {
    pub keys: Option<List<WireItem>>,
    pub attributes_to_get: Option<List<Str>>,
    pub consistent_read: Option<Flag>,
    pub projection_expression: Option<Str>,
    pub expression_attribute_names: Option<Dict<Str>>,
}

impl KeysAndAttributes {
    /// The table's entry of UnprocessedKeys: the same options, `keys`.
    fn unprocessed(&self, keys: Vec<Value>) -> Value {
        let mut out = json!({ "Keys": keys });
        if let Some(p) = &self.projection_expression {
            out["ProjectionExpression"] = json!(p.0);
        }
        if let Some(a) = &self.attributes_to_get {
            out["AttributesToGet"] = json!(a.0.iter().map(|s| s.0.as_str()).collect::<Vec<_>>());
        }
        if let Some(c) = self.consistent_read {
            out["ConsistentRead"] = json!(c.0);
        }
        if let Some(n) = &self.expression_attribute_names {
            let names: Map<String, Value> =
                n.iter().map(|(k, v)| (k.clone(), json!(v.0))).collect();
            out["ExpressionAttributeNames"] = Value::Object(names);
        }
        out
    }
}

/// One table's part of the batch, checked: what to read and how.
struct TablePlan {
    name: String,
    table: std::sync::Arc<dynaraft_cluster::Table>,
    projection: Option<Vec<Path>>,
    consistent: bool,
    /// Storage key and key, per requested key in order.
    keys: Vec<(Vec<u8>, Item)>,
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    v.check()?;
    let request = match input.request_items {
        Some(r) if !r.is_empty() => r,
        _ => return Err(required_request_items("BatchGetItem")),
    };
    let mut running = 0;
    for (name, t) in request.iter() {
        running += t.keys.as_ref().map_or(0, |k| k.0.len());
        if running > MAX_BATCH_GET_KEYS {
            // DynamoDB names the table whose keys take the count past the
            // limit.
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value at 'RequestItems.{name}.member.Keys' failed to satisfy constraint: Member must have length less than or equal to {MAX_BATCH_GET_KEYS}"
            )));
        }
    }
    // Check everything before reading anything.
    let mut plans = Vec::new();
    let mut specs = Vec::new();
    for (name, spec) in request.0 {
        let spec = spec.0;
        let mut v = Violations::default();
        let table_name = check_table_or_arn(&mut v, &name, "requestItems.key").to_string();
        match spec.keys.as_ref() {
            None => v.null("requestItems.keys"),
            Some(k) if k.0.is_empty() => v.add(
                Some("[]"),
                "requestItems.keys",
                "Member must have length greater than or equal to 1",
            ),
            Some(_) => {}
        }
        v.check()?;
        let exprs = ExprInput::from_parts(
            &[("ProjectionExpression", spec.projection_expression.is_some())],
            &[("AttributesToGet", spec.attributes_to_get.is_some())],
            spec.expression_attribute_names.clone(),
            None,
        )?;
        let mut subs = exprs.subs();
        let projection = projection_of(
            spec.projection_expression.as_deref(),
            spec.attributes_to_get.as_ref().map(|l| l.0.as_slice()),
            &mut subs,
        )?;
        subs.check_unused()?;
        let keys: Vec<Item> = spec
            .keys
            .iter()
            .flat_map(|l| l.0.iter().cloned())
            .map(WireItem::into_item)
            .collect::<Result<_, _>>()?;
        let table = active_table(api, &table_name)?;
        let mut parsed: Vec<(Vec<u8>, Item)> = Vec::with_capacity(keys.len());
        for key in keys {
            table.schema.validate_key(&key)?;
            let sk = table.schema.storage_key(&key).ok_or_else(|| {
                ApiError::validation("The provided key element does not match the schema")
            })?;
            if parsed.iter().any(|(s, _)| *s == sk) {
                return Err(ApiError::validation(
                    "Provided list of item keys contains duplicates",
                ));
            }
            parsed.push((sk, key));
        }
        api.authorize(|| {
            let keys = parsed.iter().map(|(_, k)| k);
            let schema = &table.schema;
            super::read::read_access(
                "BatchGetItem",
                &table_name,
                None,
                schema,
                keys,
                projection.as_deref(),
            )
        })?;
        super::read::check_key_paths(&table, projection.iter().flatten())?;
        let consistent = spec.consistent_read.is_some_and(|f| f.0);
        plans.push(TablePlan {
            name,
            table,
            projection,
            consistent,
            keys: parsed,
        });
        specs.push(spec);
    }
    let mut responses = Map::new();
    let mut unprocessed = Map::new();
    let mut capacity = Vec::new();
    let mut bytes = 0usize;
    let mut throttled = None;
    let mut read_any = false;
    for (plan, spec) in plans.into_iter().zip(&specs) {
        let mut items = Vec::new();
        let mut left = Vec::new();
        let mut units = 0.0;
        for (sk, key) in plan.keys {
            if bytes >= MAX_BATCH_GET_BYTES {
                left.push(item_to_json(&key));
                continue;
            }
            let hash = dynaraft_storage::catalog::key_hash(&sk);
            let read = super::read::charged(
                api,
                &plan.table,
                None,
                Some(hash),
                Some((&plan.table.schema.hash, &key)),
                plan.consistent,
                api.router.get_item(&plan.table, &sk, plan.consistent),
                |i| i.as_ref().map_or(0, item_size_bytes),
            )
            .await;
            let item = match read {
                Ok(item) => item,
                // Refused for capacity: the key comes back unprocessed.
                Err(e @ ApiError::Throttled { .. }) => {
                    throttled.get_or_insert(e);
                    left.push(item_to_json(&key));
                    continue;
                }
                Err(e) => return Err(e),
            };
            read_any = true;
            let size = item.as_ref().map_or(0, item_size_bytes);
            bytes += size;
            units += read_units(size, plan.consistent);
            if let Some(i) = item {
                let i = match &plan.projection {
                    Some(p) => project(&i, p),
                    None => i,
                };
                items.push(item_to_json(&i));
            }
        }
        responses.insert(plan.name.clone(), Value::Array(items));
        if !left.is_empty() {
            unprocessed.insert(plan.name.clone(), spec.unprocessed(left));
        }
        if let Some(c) = consumed(mode, &plan.name, units, false) {
            capacity.push(c);
        }
    }
    // DynamoDB refuses the whole batch only when capacity refused every
    // key; otherwise the refused ones come back unprocessed.
    if let (false, Some(e)) = (read_any, throttled) {
        return Err(e);
    }
    let mut out = json!({ "Responses": responses, "UnprocessedKeys": unprocessed });
    if mode != CapacityMode::None {
        out["ConsumedCapacity"] = Value::Array(capacity);
    }
    Ok(out)
}

/// DynamoDB's answer to a batch without RequestItems (or with none).
pub fn required_request_items(op: &str) -> ApiError {
    ApiError::validation(format!("The requestItems parameter is required for {op}"))
}
