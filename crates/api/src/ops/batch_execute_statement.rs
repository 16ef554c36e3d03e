//! BatchExecuteStatement: up to 25 single-item PartiQL statements, all
//! reads (SELECT by full key) or all writes (INSERT, UPDATE, DELETE). Not a
//! transaction: each statement succeeds or fails on its own, and a failure
//! is an `Error` in its place of `Responses`, with HTTP 200.

use super::execute_statement::{RunOptions, check_statements, parse_bound, run};
use super::partiql;
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::partiql::Statement;
use dynaraft_model::wire::{Flag, List, Obj, Str};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Most statements in one batch.
pub const MAX_BATCH_STATEMENTS: usize = 25;

/// BatchExecuteStatement's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub statements: Option<List<Obj<BatchStatement>>>,
    pub return_consumed_capacity: Option<Str>,
}

/// One member of Statements.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct BatchStatement {
    pub statement: Option<Str>,
    pub parameters: Option<List<Value>>,
    pub consistent_read: Option<Flag>,
    pub return_values_on_condition_check_failure: Option<Str>,
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let api = &api.for_partiql();
    let mut v = Violations::default();
    let members = input.statements.as_ref().map(|l| {
        l.0.iter()
            .map(|m| (m.statement.as_deref(), m.parameters.as_ref()))
            .collect()
    });
    check_statements(&mut v, "statements", members, MAX_BATCH_STATEMENTS);
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    v.check()?;
    let statements: Vec<BatchStatement> = input
        .statements
        .map(|s| s.0.into_iter().map(|o| o.0).collect())
        .unwrap_or_default();
    let parsed: Vec<Result<Statement, ApiError>> = statements
        .iter()
        .map(|s| {
            let params = s.parameters.as_ref().map(|p| p.0.as_slice()).unwrap_or(&[]);
            parse_bound(s.statement.as_deref().unwrap_or(""), params)
        })
        .collect();
    let reads = parsed.iter().flatten().filter(|s| s.is_read()).count();
    let parsed_ok = parsed.iter().flatten().count();
    if reads > 0 && reads < parsed_ok {
        return Err(ApiError::validation(
            "Unsupported operation: A batch must contain either all read or all write statements",
        ));
    }
    let capacity = input.return_consumed_capacity.map(|s| s.0);
    let mut responses = Vec::with_capacity(statements.len());
    let mut units: BTreeMap<String, f64> = BTreeMap::new();
    for (s, stmt) in statements.iter().zip(parsed) {
        let params = s.parameters.as_ref().map(|p| p.0.as_slice()).unwrap_or(&[]);
        let opts = RunOptions {
            consistent: s.consistent_read.is_some_and(|f| f.0),
            capacity: capacity.clone(),
            on_failure: s
                .return_values_on_condition_check_failure
                .as_ref()
                .map(|f| f.0.clone()),
            ..Default::default()
        };
        let mut table = None;
        let result = async {
            let stmt = stmt?;
            if matches!(stmt, Statement::Exists(_)) {
                return Err(ApiError::validation(
                    "EXISTS is supported only inside ExecuteTransaction",
                ));
            }
            let plan = partiql::plan(api, &stmt, params, true)?;
            table = Some(plan.table().to_string());
            let read = stmt.is_read();
            run(api, plan, &opts).await.map(|(out, _)| (out, read))
        }
        .await;
        responses.push(match result {
            Ok((out, read)) => {
                let name = table.clone().unwrap_or_default();
                if let Some(u) = out
                    .get("ConsumedCapacity")
                    .and_then(|c| c.get("CapacityUnits"))
                    .and_then(Value::as_f64)
                {
                    *units.entry(name.clone()).or_default() += u;
                }
                let mut r = json!({ "TableName": name });
                if read
                    && let Some(item) = out
                        .get("Items")
                        .and_then(Value::as_array)
                        .and_then(|i| i.first())
                {
                    r["Item"] = item.clone();
                }
                r
            }
            Err(e) => error_entry(&e, table),
        });
    }
    let mut out = json!({ "Responses": responses });
    insert_consumed_list(&mut out, mode, &units, reads == 0);
    Ok(out)
}

/// A failed statement's place in `Responses`.
fn error_entry(e: &ApiError, table: Option<String>) -> Value {
    let (_, body) = e.to_response();
    let mut err = json!({ "Code": e.batch_code() });
    if let Some(m) = body.get("message").or_else(|| body.get("Message")) {
        err["Message"] = m.clone();
    }
    if let ApiError::ConditionalCheckFailed { item: Some(i) } = e {
        err["Item"] = i.clone();
    }
    let mut r = json!({ "Error": err });
    if let Some(t) = table {
        r["TableName"] = json!(t);
    }
    r
}
