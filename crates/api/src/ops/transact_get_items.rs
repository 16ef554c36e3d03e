//! TransactGetItems: up to 100 items across tables, read as of one moment
//! (see `dynaraft_cluster::txn`); items a running transaction holds cancel
//! the read with TransactionConflict, as in DynamoDB.

use super::transact_write_items::{reasons, transact_items};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::projection::project;
use dynaraft_model::value::{item_from_json, item_size_bytes, item_to_json};
use dynaraft_storage::txn::Failure;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let items = transact_items(body)?;
    let mode = capacity_mode(body)?;
    let mut keys = Vec::with_capacity(items.len());
    let mut projections = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    // A key that does not match its table's schema cancels the read with a
    // ValidationError reason for that item, as DynamoDB reports it.
    let mut invalid: Vec<(u32, Failure)> = Vec::new();
    for (pos, entry) in items.iter().enumerate() {
        let spec = entry.get("Get").filter(|g| g.is_object()).ok_or_else(|| {
            ApiError::validation(
                "1 validation error detected: Value null at 'transactItems.member.get' failed to satisfy constraint: Member must not be null",
            )
        })?;
        let name = table_name(spec)?;
        let key = item_from_json(spec.get("Key").unwrap_or(&Value::Null))?;
        let projection = super::read::tree_projection(spec)?;
        let table = active_table(api, &name)?;
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
            reasons: reasons(items.len(), &invalid, &[]),
        });
    }
    let read = match api.router.transact_get(&keys).await? {
        Ok(read) => read,
        Err(held) => {
            let failures: Vec<(u32, Failure)> =
                held.into_iter().map(|p| (p, Failure::Conflict)).collect();
            return Err(ApiError::TransactionCanceled {
                reasons: reasons(items.len(), &failures, &[]),
            });
        }
    };
    let mut units: BTreeMap<String, f64> = BTreeMap::new();
    let mut responses = Vec::with_capacity(read.len());
    for ((item, projection), (table, _)) in read.into_iter().zip(&projections).zip(&keys) {
        // Transactional reads cost two strongly consistent units per 4 KB.
        let size = item.as_ref().map_or(0, item_size_bytes);
        *units.entry(table.meta.name.clone()).or_default() += 2.0 * read_units(size, true);
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
