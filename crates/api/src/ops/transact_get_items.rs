//! TransactGetItems: up to 100 items across tables, read as of one moment
//! (see `dynaraft_cluster::txn`); items a running transaction holds cancel
//! the read with TransactionConflict, as in DynamoDB.

use super::read::projection_of;
use super::transaction::{check_items, items, reasons};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::projection::project;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::{Dict, List, Obj, Str, WireItem};
use dynaraft_storage::txn::Failure;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// TransactGetItems' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub transact_items: Option<List<Obj<TransactGetItem>>>,
    pub return_consumed_capacity: Option<Str>,
}

/// One member of TransactItems.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TransactGetItem {
    pub get: Option<Obj<Get>>,
}

/// The item one member reads, and which of its attributes.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Get {
    pub table_name: Option<Str>,
    pub key: Option<WireItem>,
    pub projection_expression: Option<Str>,
    pub expression_attribute_names: Option<Dict<Str>>,
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let api = &api.within("TransactGetItems");
    let mut v = Violations::default();
    check_items(&mut v, input.transact_items.as_ref());
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    v.check()?;
    let items = items(input.transact_items)?;
    let mut keys = Vec::with_capacity(items.len());
    let mut projections = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    // A key that does not match its table's schema cancels the read with a
    // ValidationError reason for that item, as DynamoDB reports it.
    let mut invalid: Vec<(u32, Failure)> = Vec::new();
    let n = items.len();
    for (pos, entry) in items.into_iter().enumerate() {
        let Some(Obj(get)) = entry.get else {
            return Err(ApiError::validation(
                "1 validation error detected: Value null at 'transactItems.member.get' failed to satisfy constraint: Member must not be null",
            ));
        };
        let name = resource_name(get.table_name.as_ref())?;
        let mut v = Violations::default();
        v.required(get.key.as_ref(), "transactItems.member.get.key");
        v.check()?;
        let exprs = ExprInput::from_parts(
            &[("ProjectionExpression", get.projection_expression.is_some())],
            &[],
            get.expression_attribute_names,
            None,
        )?;
        let mut subs = exprs.subs();
        let projection = projection_of(get.projection_expression.as_deref(), None, &mut subs)?;
        subs.check_unused()?;
        let key = wire_item(get.key)?;
        let table = active_table(api, &name)?;
        api.authorize(|| {
            let schema = &table.schema;
            super::read::read_access(
                "GetItem",
                &name,
                None,
                schema,
                [&key],
                projection.as_deref(),
            )
        })?;
        let checked = table
            .schema
            .validate_key(&key)
            .map_err(ApiError::from)
            .and_then(|()| {
                table.schema.storage_key(&key).ok_or_else(|| {
                    ApiError::validation("The provided key element does not match the schema")
                })
            });
        let storage_key = match checked {
            Ok(k) => k,
            Err(ApiError::Validation(m)) => {
                invalid.push((pos as u32, Failure::Invalid(m)));
                continue;
            }
            Err(e) => return Err(e),
        };
        if !seen.insert((name, storage_key.clone())) {
            return Err(ApiError::validation(
                "Transaction request cannot include multiple operations on one item",
            ));
        }
        keys.push((table, storage_key));
        projections.push(projection);
    }
    if !invalid.is_empty() {
        return Err(ApiError::TransactionCanceled {
            reasons: reasons(n, &invalid, &[]),
        });
    }
    // Each table's capacity: two strongly consistent units per item
    // reserved before the read, the sizes read charged after.
    let capacity = &api.cfg.capacity;
    let dir = crate::capacity::Dir::Read;
    let mut least: BTreeMap<String, (std::sync::Arc<dynaraft_cluster::Table>, f64)> =
        BTreeMap::new();
    for (table, _) in &keys {
        least
            .entry(table.meta.name.clone())
            .or_insert_with(|| (table.clone(), 0.0))
            .1 += 2.0 * read_units(0, true);
    }
    let tickets = capacity
        .reserve_tables(dir, least.into_values().collect())
        .map_err(|t| super::throttled(api, t))?;
    let read = api.router.transact_get(&keys).await;
    let mut used: BTreeMap<&str, f64> = BTreeMap::new();
    if let Ok(Ok(items)) = &read {
        for (item, (table, _)) in items.iter().zip(&keys) {
            let size = item.as_ref().map_or(0, item_size_bytes);
            *used.entry(table.meta.name.as_str()).or_default() += 2.0 * read_units(size, true);
        }
    }
    capacity.settle_tables(dir, tickets, |t| {
        used.get(t.meta.name.as_str()).copied().unwrap_or(0.0)
    });
    let read = match read? {
        Ok(read) => read,
        Err(held) => {
            let failures: Vec<(u32, Failure)> =
                held.into_iter().map(|p| (p, Failure::Conflict)).collect();
            return Err(ApiError::TransactionCanceled {
                reasons: reasons(n, &failures, &[]),
            });
        }
    };
    let mut units: BTreeMap<String, f64> = BTreeMap::new();
    let mut responses = Vec::with_capacity(read.len());
    for ((item, projection), (table, _)) in read.into_iter().zip(&projections).zip(&keys) {
        // Transactional reads cost two strongly consistent units per 4 KB.
        let size = item.as_ref().map_or(0, item_size_bytes);
        *units
            .entry(crate::scope::display_name(&table.meta.name).to_string())
            .or_default() += 2.0 * read_units(size, true);
        let item = match (projection, item) {
            (Some(p), Some(i)) => Some(project(&i, p)),
            (_, i) => i,
        };
        responses.push(match item {
            Some(i) => json!({ "Item": item_to_json(&i) }),
            None => json!({}),
        });
    }
    let mut out = json!({ "Responses": responses });
    insert_consumed_list(&mut out, mode, &units, false);
    Ok(out)
}
