//! TransactWriteItems: up to [`MAX_TRANSACT_ITEMS`] Put, Update, Delete and
//! ConditionCheck items across tables, applied all or none (the commit
//! protocol is in `dynaraft_cluster::txn`). A ClientRequestToken makes a
//! retry within ten minutes return success without applying it again.

use super::write::{WriteRequest, command};
use super::{delete_item, put_item, update_item};
use crate::Api;
use crate::enums::{ReturnOnFailure, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::txn::{TxnResult, TxnWrite};
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::Str;
use dynaraft_storage::WriteKind;
use dynaraft_storage::txn::Failure;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// Most items in one transaction (TransactWriteItems or TransactGetItems).
pub const MAX_TRANSACT_ITEMS: usize = 100;
/// Most bytes of items one transaction writes (4 MB).
pub const MAX_TRANSACT_BYTES: usize = 4 * 1024 * 1024;
/// Longest ClientRequestToken, in characters.
pub const MAX_CLIENT_TOKEN_CHARS: usize = 36;

/// The TransactItems list, checked for presence and length.
pub fn transact_items(body: &Value) -> Result<&Vec<Value>, ApiError> {
    let items = opt_array(body, "TransactItems")?;
    let mut v = Violations::default();
    match items {
        None => v.add(None, "transactItems", "Member must not be null"),
        Some(list) if list.is_empty() => v.add(
            Some("[]"),
            "transactItems",
            "Member must have length greater than or equal to 1",
        ),
        Some(list) if list.len() > MAX_TRANSACT_ITEMS => v.add(
            Some(&format!("[{} items]", list.len())),
            "transactItems",
            &format!("Member must have length less than or equal to {MAX_TRANSACT_ITEMS}"),
        ),
        Some(_) => {}
    }
    v.check()?;
    items.ok_or_else(|| ApiError::validation("TransactItems is missing"))
}

/// Reads one TransactItems member's write as its typed shape; the legacy
/// parameters (Expected, AttributeUpdates) are not members of a
/// transaction's writes and are ignored, as DynamoDB ignores them.
fn spec<T: serde::de::DeserializeOwned>(spec: &Value) -> Result<T, ApiError> {
    T::deserialize(spec).map_err(|e| ApiError::Serialization(Some(e.to_string())))
}

/// ReturnValuesOnConditionCheckFailure of one item: ALL_OLD or not.
fn old_on_failure(value: Option<&Str>) -> Result<bool, ApiError> {
    let mut v = Violations::default();
    let on_fail = ReturnOnFailure::member(
        &mut v,
        value,
        "transactItems.member.returnValuesOnConditionCheckFailure",
    );
    v.check()?;
    Ok(on_fail == Some(ReturnOnFailure::AllOld))
}

/// Parses one TransactItems member into its table and write.
fn plan_item(
    api: &Api,
    entry: &Value,
) -> Result<(std::sync::Arc<dynaraft_cluster::Table>, WriteRequest), ApiError> {
    let kinds = ["ConditionCheck", "Put", "Delete", "Update"];
    let present: Vec<&str> = kinds
        .into_iter()
        .filter(|k| entry.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    let kind = match present.as_slice() {
        [one] => *one,
        [] => {
            return Err(ApiError::validation(
                "Invalid Request: TransactWriteRequest should contain Delete or Put or Update request",
            ));
        }
        _ => {
            return Err(ApiError::validation(
                "TransactItems can only contain one of Check, Put, Update or Delete",
            ));
        }
    };
    let raw = entry.get(kind).unwrap_or(&Value::Null);
    if !raw.is_object() {
        return Err(wrong_type("structure"));
    }
    Ok(match kind {
        "Put" => {
            let input = put_item::Input {
                expected: None,
                conditional_operator: None,
                ..spec(raw)?
            };
            let old = old_on_failure(input.return_values_on_condition_check_failure.as_ref())?;
            let name = resource_name(input.table_name.as_ref())?;
            put_item::plan(api, &name, input, old)?
        }
        "Update" => {
            let input = update_item::Input {
                expected: None,
                conditional_operator: None,
                attribute_updates: None,
                ..spec(raw)?
            };
            let old = old_on_failure(input.return_values_on_condition_check_failure.as_ref())?;
            let name = resource_name(input.table_name.as_ref())?;
            let (table, req, _) = update_item::plan(api, &name, input, old)?;
            (table, req)
        }
        _ => {
            let input = delete_item::Input {
                expected: None,
                conditional_operator: None,
                ..spec(raw)?
            };
            let old = old_on_failure(input.return_values_on_condition_check_failure.as_ref())?;
            let name = resource_name(input.table_name.as_ref())?;
            let write = if kind == "Delete" {
                WriteKind::Delete
            } else {
                WriteKind::Check
            };
            delete_item::plan(api, &name, input, write, old)?
        }
    })
}

/// A digest of the request's items, telling a retry from another request.
pub fn fingerprint(items: &[Value]) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(items).unwrap_or_default();
    let digest = sha2::Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ClientRequestToken, checked for length.
fn client_token(body: &Value) -> Result<Option<String>, ApiError> {
    let token = opt_str(body, "ClientRequestToken")?;
    let mut v = Violations::default();
    if let Some(t) = token {
        let n = t.chars().count();
        if n == 0 {
            v.add(
                Some(t),
                "clientRequestToken",
                "Member must have length greater than or equal to 1",
            );
        } else if n > MAX_CLIENT_TOKEN_CHARS {
            v.add(
                Some(t),
                "clientRequestToken",
                &format!("Member must have length less than or equal to {MAX_CLIENT_TOKEN_CHARS}"),
            );
        }
    }
    v.check()?;
    Ok(token.map(str::to_string))
}

/// One CancellationReasons member per item, in request order.
pub fn reasons(n: usize, failures: &[(u32, Failure)], old_on_failure: &[bool]) -> Vec<Value> {
    let mut out = vec![json!({ "Code": "None" }); n];
    for (pos, f) in failures {
        let pos = *pos as usize;
        let Some(slot) = out.get_mut(pos) else {
            continue;
        };
        *slot = match f {
            Failure::ConditionFailed { old } => {
                let mut r = json!({"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"});
                if let Some(old) = old
                    .as_ref()
                    .filter(|_| old_on_failure.get(pos) == Some(&true))
                {
                    r["Item"] = item_to_json(old);
                }
                r
            }
            Failure::Conflict => {
                json!({"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"})
            }
            Failure::Invalid(m) => json!({"Code": "ValidationError", "Message": m}),
            Failure::CollectionTooLarge => {
                json!({"Code": "ItemCollectionSizeLimitExceeded", "Message": "Collection size exceeded."})
            }
            Failure::Throttled => {
                json!({"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity for one or more global secondary indexes. DynamoDB is automatically scaling your index so please try again shortly."})
            }
        };
    }
    out
}

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let items = transact_items(body)?;
    let token = client_token(body)?;
    let mode = capacity_mode(body)?;
    enum_value(
        body,
        "ReturnItemCollectionMetrics",
        "returnItemCollectionMetrics",
        &["SIZE", "NONE"],
    )?;
    let mut writes = Vec::with_capacity(items.len());
    let mut old_on_failure = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    let mut units: BTreeMap<String, f64> = BTreeMap::new();
    let mut total_bytes = 0usize;
    for entry in items {
        let (table, req) = plan_item(api, entry)?;
        let write = command(api, &table, &req)?;
        if !seen.insert((table.meta.name.clone(), write.storage_key.clone())) {
            return Err(ApiError::validation(
                "Transaction request cannot include multiple operations on one item",
            ));
        }
        let bytes = req.item.as_ref().map_or(0, item_size_bytes);
        total_bytes += bytes;
        // Transactional writes cost two units per kilobyte written.
        *units.entry(table.meta.name.clone()).or_default() += 2.0 * write_units(bytes);
        old_on_failure.push(req.old_on_failure);
        writes.push(TxnWrite { table, write });
    }
    if total_bytes > MAX_TRANSACT_BYTES {
        return Err(ApiError::validation(
            "Transaction request size exceeds the maximum allowed size of 4 MB",
        ));
    }
    let txn = fastrand::u128(..);
    let result = api
        .router
        .transact_write(txn, &writes, token, fingerprint(items))
        .await?;
    match result {
        TxnResult::Committed => {
            let mut out = json!({});
            insert_consumed_list(&mut out, mode, &units, true);
            Ok(out)
        }
        TxnResult::Canceled(failures) => Err(ApiError::TransactionCanceled {
            reasons: reasons(items.len(), &failures, &old_on_failure),
        }),
        TxnResult::InProgress => Err(ApiError::TransactionInProgress),
        TxnResult::Mismatch => Err(ApiError::IdempotentParameterMismatch),
    }
}
