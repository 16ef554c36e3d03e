//! What TransactWriteItems and TransactGetItems share: the TransactItems
//! list's limits and the cancellation reasons they answer with.

use crate::error::ApiError;
use crate::params::Violations;
use dynaraft_model::value::item_to_json;
use dynaraft_model::wire::{List, Obj};
use dynaraft_storage::txn::Failure;
use serde_json::{Value, json};

/// Most items in one transaction (TransactWriteItems or TransactGetItems).
pub const MAX_TRANSACT_ITEMS: usize = 100;

/// The TransactItems list, checked for presence and length into `v`.
pub fn check_items<T>(v: &mut Violations, items: Option<&List<Obj<T>>>) {
    match items {
        None => v.null("transactItems"),
        Some(list) if list.0.is_empty() => v.add(
            Some("[]"),
            "transactItems",
            "Member must have length greater than or equal to 1",
        ),
        Some(list) if list.0.len() > MAX_TRANSACT_ITEMS => v.add(
            Some(&format!("[{} items]", list.0.len())),
            "transactItems",
            &format!("Member must have length less than or equal to {MAX_TRANSACT_ITEMS}"),
        ),
        Some(_) => {}
    }
}

/// The list once [`check_items`] passed.
pub fn items<T>(items: Option<List<Obj<T>>>) -> Result<Vec<T>, ApiError> {
    Ok(items
        .ok_or_else(|| ApiError::validation("TransactItems is missing"))?
        .0
        .into_iter()
        .map(|o| o.0)
        .collect())
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
