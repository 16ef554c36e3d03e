//! TransactWriteItems: up to 100 (`transaction::MAX_TRANSACT_ITEMS`) Put, Update, Delete and
//! ConditionCheck items across tables, applied all or none (the commit
//! protocol is in `dynaraft_cluster::txn`). A ClientRequestToken makes a
//! retry within ten minutes return success without applying it again.

use super::transaction::{check_items, items, reasons};
use super::write::{WriteRequest, command};
use super::{delete_item, put_item, update_item};
use crate::Api;
use crate::enums::{ReturnMetrics, ReturnOnFailure, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::txn::{TxnResult, TxnWrite};
use dynaraft_model::value::item_size_bytes;
use dynaraft_model::wire::{List, Obj, Str};
use dynaraft_storage::txn::Failure;
use dynaraft_storage::{WriteCommand, WriteKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// Most bytes of items one transaction writes (4 MB).
pub const MAX_TRANSACT_BYTES: usize = 4 * 1024 * 1024;
/// Longest ClientRequestToken, in characters.
pub const MAX_CLIENT_TOKEN_CHARS: usize = 36;

/// TransactWriteItems' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub transact_items: Option<List<Obj<TransactWriteItem>>>,
    pub return_consumed_capacity: Option<Str>,
    pub return_item_collection_metrics: Option<Str>,
    pub client_request_token: Option<Str>,
}

/// One member of TransactItems: exactly one of its four writes. Each is
/// read with its single-item operation's shape; the legacy parameters
/// (Expected, AttributeUpdates) are not members of a transaction's writes
/// and are dropped, as DynamoDB ignores them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TransactWriteItem {
    pub condition_check: Option<Obj<delete_item::Input>>,
    pub put: Option<Obj<put_item::Input>>,
    pub delete: Option<Obj<delete_item::Input>>,
    pub update: Option<Obj<update_item::Input>>,
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

/// Checks one TransactItems member and finds its table.
fn plan_item(
    api: &Api,
    entry: TransactWriteItem,
) -> Result<(std::sync::Arc<dynaraft_cluster::Table>, WriteRequest), ApiError> {
    let count = [
        entry.condition_check.is_some(),
        entry.put.is_some(),
        entry.delete.is_some(),
        entry.update.is_some(),
    ]
    .into_iter()
    .filter(|p| *p)
    .count();
    if count == 0 {
        return Err(ApiError::validation(
            "Invalid Request: TransactWriteRequest should contain Delete or Put or Update request",
        ));
    }
    if count > 1 {
        return Err(ApiError::validation(
            "TransactItems can only contain one of Check, Put, Update or Delete",
        ));
    }
    if let Some(Obj(p)) = entry.put {
        let input = put_item::Input {
            expected: None,
            conditional_operator: None,
            ..p
        };
        let old = old_on_failure(input.return_values_on_condition_check_failure.as_ref())?;
        let name = resource_name(input.table_name.as_ref())?;
        return put_item::plan(api, &name, input, old);
    }
    if let Some(Obj(u)) = entry.update {
        let input = update_item::Input {
            expected: None,
            conditional_operator: None,
            attribute_updates: None,
            ..u
        };
        let old = old_on_failure(input.return_values_on_condition_check_failure.as_ref())?;
        let name = resource_name(input.table_name.as_ref())?;
        let (table, req, _) = update_item::plan(api, &name, input, old)?;
        return Ok((table, req));
    }
    let (kind, d) = match (entry.delete, entry.condition_check) {
        (Some(Obj(d)), _) => (WriteKind::Delete, d),
        (None, Some(Obj(c))) => (WriteKind::Check, c),
        (None, None) => {
            return Err(ApiError::validation(
                "Invalid Request: TransactWriteRequest should contain Delete or Put or Update request",
            ));
        }
    };
    let input = delete_item::Input {
        expected: None,
        conditional_operator: None,
        ..d
    };
    let old = old_on_failure(input.return_values_on_condition_check_failure.as_ref())?;
    let name = resource_name(input.table_name.as_ref())?;
    delete_item::plan(api, &name, input, kind, old)
}

/// A digest of the request's writes (as their commands: canonical JSON of
/// keys, items, expressions, names and values), telling a retry from
/// another request under the same ClientRequestToken.
pub fn fingerprint(writes: &[(String, &WriteCommand)]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (table, cmd) in writes {
        h.update(table.as_bytes());
        h.update([0]);
        // A command always serializes (string keys, no floats); an empty
        // result would only make two requests look alike to the digest.
        h.update(serde_json::to_vec(cmd).unwrap_or_default());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The ClientRequestToken, checked for length.
fn check_client_token(v: &mut Violations, token: Option<&Str>) {
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
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let api = &api.within("TransactWriteItems");
    let mut v = Violations::default();
    check_items(&mut v, input.transact_items.as_ref());
    check_client_token(&mut v, input.client_request_token.as_ref());
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    ReturnMetrics::member(
        &mut v,
        input.return_item_collection_metrics.as_ref(),
        "returnItemCollectionMetrics",
    );
    v.check()?;
    let token = input.client_request_token.map(|t| t.0);
    let entries = items(input.transact_items)?;
    let n = entries.len();
    let mut writes = Vec::with_capacity(n);
    let mut old_on_failure = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    // Each table and the write units its items cost.
    let mut by_table: BTreeMap<String, (std::sync::Arc<dynaraft_cluster::Table>, f64)> =
        BTreeMap::new();
    let mut total_bytes = 0usize;
    for (pos, entry) in entries.into_iter().enumerate() {
        // An item whose key has the wrong type cancels the transaction
        // with a ValidationError reason for it; DynamoDB stops at the first
        // such item, so the others' reasons are None.
        let (table, req) = match plan_item(api, entry) {
            Ok(p) => p,
            Err(ApiError::KeySchema(m)) => {
                return Err(ApiError::TransactionCanceled {
                    reasons: reasons(n, &[(pos as u32, Failure::Invalid(m))], &[]),
                });
            }
            Err(e) => return Err(e),
        };
        let name = crate::scope::display_name(&table.meta.name);
        super::write::authorize(api, name, &table, &req, None)?;
        let write = command(api, &table, &req)?;
        if !seen.insert((table.meta.name.clone(), write.storage_key.clone())) {
            return Err(ApiError::validation(
                "Transaction request cannot include multiple operations on one item",
            ));
        }
        let bytes = req.item.as_ref().map_or(0, item_size_bytes);
        total_bytes += bytes;
        // Transactional writes cost two units per kilobyte written.
        by_table
            .entry(table.meta.name.clone())
            .or_insert_with(|| (table.clone(), 0.0))
            .1 += 2.0 * write_units(bytes);
        old_on_failure.push(req.old_on_failure);
        writes.push(TxnWrite { table, write });
    }
    if total_bytes > MAX_TRANSACT_BYTES {
        return Err(ApiError::validation(
            "Transaction payload size cannot exceed 4 MB",
        ));
    }
    let digest = fingerprint(
        &writes
            .iter()
            .map(|w| (w.table.meta.name.clone(), &w.write))
            .collect::<Vec<_>>(),
    );
    // Each table's capacity for the whole transaction, before it runs;
    // charged when it commits, given back otherwise.
    let capacity = &api.cfg.capacity;
    let dir = crate::capacity::Dir::Write;
    let tickets = capacity
        .reserve_tables(dir, by_table.values().cloned().collect())
        .map_err(|t| super::throttled(api, t))?;
    let txn = fastrand::u128(..);
    let result = api.router.transact_write(txn, &writes, token, digest).await;
    let committed = matches!(result, Ok(TxnResult::Committed));
    capacity.settle_tables(dir, tickets, |t| match by_table.get(&t.meta.name) {
        Some((_, u)) if committed => *u,
        _ => 0.0,
    });
    let result = result?;
    match result {
        TxnResult::Committed => {
            let mut out = json!({});
            let units: BTreeMap<String, f64> = by_table
                .values()
                .map(|(t, u)| (crate::scope::display_name(&t.meta.name).to_string(), *u))
                .collect();
            insert_consumed_list(&mut out, mode, &units, true);
            Ok(out)
        }
        TxnResult::Canceled(failures) => Err(ApiError::TransactionCanceled {
            reasons: reasons(n, &failures, &old_on_failure),
        }),
        TxnResult::InProgress => Err(ApiError::TransactionInProgress),
        TxnResult::Mismatch => Err(ApiError::IdempotentParameterMismatch),
    }
}
