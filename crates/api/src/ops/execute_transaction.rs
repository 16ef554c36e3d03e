//! ExecuteTransaction: up to 100 PartiQL statements applied all or none,
//! on the TransactWriteItems and TransactGetItems machinery: all reads
//! (SELECT by full key), or all writes (INSERT, UPDATE, DELETE, and
//! `EXISTS(SELECT ...)` as a condition check). A cancelled transaction
//! answers TransactionCanceledException with one reason per statement; an
//! INSERT of a key that exists is a `DuplicateItem` reason.

use super::execute_statement::{check_statements, input, parse_bound, project};
use super::partiql::{self, Plan};
use super::transaction::MAX_TRANSACT_ITEMS;
use super::{transact_get_items, transact_write_items};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::partiql::Statement;
use dynaraft_model::wire::{List, Obj, Str};
use serde::Deserialize;
use serde_json::{Value, json};

/// ExecuteTransaction's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub transact_statements: Option<List<Obj<ParameterizedStatement>>>,
    pub client_request_token: Option<Str>,
    pub return_consumed_capacity: Option<Str>,
}

/// One member of TransactStatements.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ParameterizedStatement {
    pub statement: Option<Str>,
    pub parameters: Option<List<Value>>,
}

pub async fn execute(api: &Api, input_: Input) -> Result<Value, ApiError> {
    let api = &api.for_partiql();
    let mut v = Violations::default();
    let members = input_.transact_statements.as_ref().map(|l| {
        l.0.iter()
            .map(|m| (m.statement.as_deref(), m.parameters.as_ref()))
            .collect()
    });
    check_statements(&mut v, "transactStatements", members, MAX_TRANSACT_ITEMS);
    capacity_member(&mut v, input_.return_consumed_capacity.as_ref());
    v.check()?;
    let statements: Vec<ParameterizedStatement> = input_
        .transact_statements
        .map(|s| s.0.into_iter().map(|o| o.0).collect())
        .unwrap_or_default();
    let mut parsed = Vec::with_capacity(statements.len());
    for (i, s) in statements.iter().enumerate() {
        let params = s.parameters.as_ref().map(|p| p.0.as_slice()).unwrap_or(&[]);
        let stmt = parse_bound(s.statement.as_deref().unwrap_or(""), params)
            .map_err(|e| in_statement(i, e))?;
        parsed.push((stmt, params));
    }
    let reads = parsed.iter().filter(|(s, _)| s.is_read()).count();
    if reads > 0 && reads < parsed.len() {
        return Err(ApiError::validation(
            "ExecuteTransaction API does not support both read and write operations in the same request.",
        ));
    }
    let mut plans = Vec::with_capacity(parsed.len());
    for (i, (stmt, params)) in parsed.iter().enumerate() {
        if matches!(
            stmt,
            Statement::Update {
                returning: Some(_),
                ..
            } | Statement::Delete {
                returning: Some(_),
                ..
            }
        ) {
            return Err(in_statement(
                i,
                ApiError::validation("RETURNING is not supported in ExecuteTransaction"),
            ));
        }
        plans.push(partiql::plan(api, stmt, params, true).map_err(|e| in_statement(i, e))?);
    }
    let capacity = input_.return_consumed_capacity.map(|s| s.0);
    if reads > 0 {
        return read_all(api, plans, capacity).await;
    }
    let inserts: Vec<bool> = parsed
        .iter()
        .map(|(s, _)| matches!(s, Statement::Insert { .. }))
        .collect();
    let items: Vec<Value> = plans
        .into_iter()
        .map(|p| match p {
            Plan::Put(r) => json!({ "Put": r }),
            Plan::Update(r) => json!({ "Update": r }),
            Plan::Delete(r) => json!({ "Delete": r }),
            Plan::Check(r) | Plan::Query(r, _) | Plan::Scan(r, _) => {
                json!({ "ConditionCheck": r })
            }
            Plan::Get(g) => json!({ "ConditionCheck": g.request() }),
        })
        .collect();
    let mut req = json!({ "TransactItems": items });
    if let Some(t) = input_.client_request_token {
        req["ClientRequestToken"] = json!(t.0);
    }
    if let Some(c) = capacity {
        req["ReturnConsumedCapacity"] = json!(c);
    }
    match transact_write_items::execute(api, input(req)?).await {
        Ok(out) => {
            let mut resp = json!({});
            insert_opt(
                &mut resp,
                "ConsumedCapacity",
                out.get("ConsumedCapacity").cloned(),
            );
            Ok(resp)
        }
        Err(ApiError::TransactionCanceled { reasons }) => Err(ApiError::TransactionCanceled {
            reasons: duplicate_reasons(reasons, &inserts),
        }),
        Err(e) => Err(e),
    }
}

/// A transaction of reads: one `Item` (or `{}`) per statement.
async fn read_all(
    api: &Api,
    plans: Vec<Plan>,
    capacity: Option<String>,
) -> Result<Value, ApiError> {
    let mut gets = Vec::with_capacity(plans.len());
    let mut projections = Vec::with_capacity(plans.len());
    for p in plans {
        if let Plan::Get(g) = p {
            gets.push(json!({ "Get": g.request() }));
            projections.push(g.output);
        }
    }
    let mut req = json!({ "TransactItems": gets });
    if let Some(c) = capacity {
        req["ReturnConsumedCapacity"] = json!(c);
    }
    let out = transact_get_items::execute(api, input(req)?).await?;
    let mut responses = Vec::with_capacity(projections.len());
    let got = out
        .get("Responses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (r, projection) in got.into_iter().zip(&projections) {
        responses.push(match (r.get("Item"), projection) {
            (Some(i), Some(p)) => json!({ "Item": project(i, p)? }),
            (Some(i), None) => json!({ "Item": i }),
            (None, _) => json!({}),
        });
    }
    let mut resp = json!({ "Responses": responses });
    insert_opt(
        &mut resp,
        "ConsumedCapacity",
        out.get("ConsumedCapacity").cloned(),
    );
    Ok(resp)
}

/// An INSERT's failed condition is DynamoDB's `DuplicateItem` reason.
fn duplicate_reasons(reasons: Vec<Value>, inserts: &[bool]) -> Vec<Value> {
    reasons
        .into_iter()
        .zip(inserts.iter().chain(std::iter::repeat(&false)))
        .map(|(r, insert)| {
            let failed = r.get("Code").and_then(Value::as_str) == Some("ConditionalCheckFailed");
            if *insert && failed {
                json!({ "Code": "DuplicateItem", "Message": "Duplicate primary key exists in table" })
            } else {
                r
            }
        })
        .collect()
}

/// A statement's validation error, naming the statement as DynamoDB does.
fn in_statement(i: usize, e: ApiError) -> ApiError {
    match e {
        ApiError::Validation(m) => {
            ApiError::Validation(format!("Validation failed in TransactStatements[{i}]: {m}"))
        }
        e => e,
    }
}
