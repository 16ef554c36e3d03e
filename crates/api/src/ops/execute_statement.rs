//! ExecuteStatement: one PartiQL statement, planned onto GetItem, Query,
//! Scan, PutItem, UpdateItem or DeleteItem (`partiql::plan`) and run
//! through that operation. A SELECT answers a page of `Items` and a
//! `NextToken` bound to its statement; a write answers `Items: []`, or the
//! item its RETURNING clause asks for.

use super::partiql::{self, Plan};
use super::{delete_item, get_item, put_item, query, scan, update_item};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use base64::Engine as _;
use dynaraft_expr::Path;
use dynaraft_expr::partiql::{MAX_STATEMENT_BYTES, Statement, output_name, parse};
use dynaraft_model::value::{item_from_json, item_to_json};
use dynaraft_model::wire::{Flag, Int, List, Str};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Longest NextToken accepted, in characters.
pub const MAX_NEXT_TOKEN_CHARS: usize = 32768;

/// ExecuteStatement's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub statement: Option<Str>,
    pub parameters: Option<List<Value>>,
    pub consistent_read: Option<Flag>,
    pub next_token: Option<Str>,
    pub return_consumed_capacity: Option<Str>,
    pub limit: Option<Int>,
    pub return_values_on_condition_check_failure: Option<Str>,
}

/// What a statement's run adds to the planned request.
#[derive(Default)]
pub struct RunOptions {
    pub consistent: bool,
    pub limit: Option<i64>,
    pub start_key: Option<Value>,
    pub capacity: Option<String>,
    pub on_failure: Option<String>,
}

impl RunOptions {
    /// ReturnConsumedCapacity (already checked) as a mode.
    fn capacity_mode(&self) -> CapacityMode {
        match self.capacity.as_deref() {
            Some("TOTAL") => CapacityMode::Total,
            Some("INDEXES") => CapacityMode::Indexes,
            _ => CapacityMode::None,
        }
    }
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let api = &api.for_partiql();
    let mut v = Violations::default();
    check_statement(&mut v, input.statement.as_deref(), "statement");
    check_parameters(&mut v, input.parameters.as_ref(), "parameters");
    if let Some(Int(l)) = input.limit
        && l < 1
    {
        v.add(
            Some(&l.to_string()),
            "limit",
            "Member must have value greater than or equal to 1",
        );
    }
    if input
        .next_token
        .as_ref()
        .is_some_and(|t| t.len() > MAX_NEXT_TOKEN_CHARS)
    {
        v.add_unquoted(
            "nextToken",
            &format!("Member must have length less than or equal to {MAX_NEXT_TOKEN_CHARS}"),
        );
    }
    capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    v.check()?;
    let text = input.statement.map(|s| s.0).unwrap_or_default();
    let params = input.parameters.map(|p| p.0).unwrap_or_default();
    let stmt = parse_bound(&text, &params)?;
    if matches!(stmt, Statement::Exists(_)) {
        return Err(ApiError::validation(
            "EXISTS is supported only inside ExecuteTransaction",
        ));
    }
    let start_key = match input.next_token {
        Some(t) => Some(decode_token(&t, fingerprint(&text, &params))?),
        None => None,
    };
    let plan = partiql::plan(api, &stmt, &params, false)?;
    let opts = RunOptions {
        consistent: input.consistent_read.is_some_and(|f| f.0),
        limit: input.limit.map(|l| l.0),
        start_key,
        capacity: input.return_consumed_capacity.map(|s| s.0),
        on_failure: input.return_values_on_condition_check_failure.map(|s| s.0),
    };
    let (mut out, last_key) = run(api, plan, &opts).await?;
    if let Some(k) = last_key {
        out["NextToken"] = json!(encode_token(fingerprint(&text, &params), &k));
        out["LastEvaluatedKey"] = k;
    }
    Ok(out)
}

/// Statement's constraints (length 1 to [`MAX_STATEMENT_BYTES`]).
pub fn check_statement(v: &mut Violations, s: Option<&str>, path: &str) {
    match s {
        None => v.null(path),
        Some("") => v.add_unquoted(path, "Member must have length greater than or equal to 1"),
        Some(s) if s.len() > MAX_STATEMENT_BYTES => v.add_unquoted(
            path,
            &format!("Member must have length less than or equal to {MAX_STATEMENT_BYTES}"),
        ),
        Some(_) => {}
    }
}

/// One member of a list of statements: its Statement and Parameters.
pub type StatementMember<'a> = (Option<&'a str>, Option<&'a List<Value>>);

/// The constraints of a list of statements (BatchExecuteStatement's
/// Statements, ExecuteTransaction's TransactStatements): present, 1 to
/// `max` members, each member's Statement and Parameters.
pub fn check_statements(
    v: &mut Violations,
    path: &str,
    members: Option<Vec<StatementMember<'_>>>,
    max: usize,
) {
    match members {
        None => v.null(path),
        Some(m) if m.is_empty() => {
            v.add_unquoted(path, "Member must have length greater than or equal to 1")
        }
        Some(m) if m.len() > max => v.add_unquoted(
            path,
            &format!("Member must have length less than or equal to {max}"),
        ),
        Some(m) => {
            for (statement, parameters) in m {
                check_statement(v, statement, &format!("{path}.member.statement"));
                check_parameters(v, parameters, &format!("{path}.member.parameters"));
            }
        }
    }
}

/// Parameters' constraint: at least one when sent.
pub fn check_parameters(v: &mut Violations, p: Option<&List<Value>>, path: &str) {
    if p.is_some_and(|p| p.0.is_empty()) {
        v.add(
            Some("[]"),
            path,
            "Member must have length greater than or equal to 1",
        );
    }
}

/// Parses `text` and checks that `params` binds every `?` (more are
/// accepted, as DynamoDB does).
pub fn parse_bound(text: &str, params: &[Value]) -> Result<Statement, ApiError> {
    let (stmt, wanted) = parse(text)?;
    if params.len() < wanted {
        return Err(ApiError::validation(
            "Number of parameters in request and statement don't match.",
        ));
    }
    Ok(stmt)
}

/// Runs a planned statement; returns the response and, for a read with
/// more to come, the key to continue from.
pub async fn run(
    api: &Api,
    plan: Plan,
    opts: &RunOptions,
) -> Result<(Value, Option<Value>), ApiError> {
    match plan {
        Plan::Get(g) => {
            let mut out = get_item::fetch(
                api,
                &g.table,
                &g.name,
                &g.key,
                g.roots.as_deref(),
                opts.consistent,
                opts.capacity_mode(),
            )
            .await?;
            let items: Vec<Value> = out.get_mut("Item").map(Value::take).into_iter().collect();
            Ok((respond(items, g.output.as_deref(), &out)?, None))
        }
        Plan::Query(mut req, projection) => {
            read_options(&mut req, opts, true);
            let out = query::execute(api, input(req)?).await?;
            page(out, projection.as_deref())
        }
        Plan::Scan(mut req, projection) => {
            read_options(&mut req, opts, true);
            let out = scan::execute(api, input(req)?).await?;
            page(out, projection.as_deref())
        }
        Plan::Put(mut req) => {
            write_options(&mut req, opts);
            let out = put_item::execute(api, input(req)?)
                .await
                .map_err(|e| match e {
                    ApiError::ConditionalCheckFailed { .. } => ApiError::DuplicateItem,
                    e => e,
                })?;
            Ok((respond(vec![], None, &out)?, None))
        }
        Plan::Update(mut req) => {
            write_options(&mut req, opts);
            let out = update_item::execute(api, input(req)?).await?;
            Ok((returned(&out)?, None))
        }
        Plan::Delete(mut req) => {
            write_options(&mut req, opts);
            let out = delete_item::execute(api, input(req)?).await?;
            Ok((returned(&out)?, None))
        }
        Plan::Check(_) => Err(ApiError::validation(
            "EXISTS is supported only inside ExecuteTransaction",
        )),
    }
}

/// Reads a planned request as its operation's input.
pub fn input<T: DeserializeOwned>(req: Value) -> Result<T, ApiError> {
    serde_json::from_value(req).map_err(|e| ApiError::Serialization(Some(e.to_string())))
}

fn read_options(req: &mut Value, opts: &RunOptions, paged: bool) {
    if opts.consistent {
        req["ConsistentRead"] = json!(true);
    }
    if let Some(c) = &opts.capacity {
        req["ReturnConsumedCapacity"] = json!(c);
    }
    if paged {
        if let Some(l) = opts.limit {
            req["Limit"] = json!(l);
        }
        if let Some(k) = &opts.start_key {
            req["ExclusiveStartKey"] = k.clone();
        }
    }
}

fn write_options(req: &mut Value, opts: &RunOptions) {
    if let Some(c) = &opts.capacity {
        req["ReturnConsumedCapacity"] = json!(c);
    }
    if let Some(f) = &opts.on_failure {
        req["ReturnValuesOnConditionCheckFailure"] = json!(f);
    }
}

/// A Query's or Scan's page as ExecuteStatement answers it.
fn page(out: Value, projection: Option<&[Path]>) -> Result<(Value, Option<Value>), ApiError> {
    let items = out
        .get("Items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let resp = respond(items, projection, &out)?;
    Ok((resp, out.get("LastEvaluatedKey").cloned()))
}

/// `{"Items": [the returned attributes]}` of an UPDATE or DELETE.
fn returned(out: &Value) -> Result<Value, ApiError> {
    let items: Vec<Value> = out.get("Attributes").cloned().into_iter().collect();
    respond(items, None, out)
}

/// `{"Items": ...}` with the items reshaped for `projection` and the
/// operation's consumed capacity.
fn respond(items: Vec<Value>, projection: Option<&[Path]>, out: &Value) -> Result<Value, ApiError> {
    let items = match projection {
        Some(paths) => items
            .iter()
            .map(|i| project(i, paths))
            .collect::<Result<Vec<_>, _>>()?,
        None => items,
    };
    let mut resp = json!({ "Items": items });
    if let Some(c) = out.get("ConsumedCapacity") {
        resp["ConsumedCapacity"] = c.clone();
    }
    Ok(resp)
}

/// A projected item as PartiQL returns it: each selected path's value
/// under the path's last name (`SELECT a.b` answers `{"b": ...}`).
pub fn project(item: &Value, paths: &[Path]) -> Result<Value, ApiError> {
    let item = item_from_json(item)?;
    let mut out = dynaraft_model::Item::new();
    for p in paths {
        if let Some(v) = dynaraft_expr::paths::get(&item, p) {
            out.insert(output_name(p).to_string(), v.clone());
        }
    }
    Ok(item_to_json(&out))
}

/// A hash of a statement and its parameters, so a NextToken only continues
/// the statement that made it (FNV-1a, 64 bits).
fn fingerprint(text: &str, params: &[Value]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let params = Value::Array(params.to_vec()).to_string();
    for b in text.bytes().chain(params.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn encode_token(fingerprint: u64, key: &Value) -> String {
    let body = json!({ "s": fingerprint.to_string(), "k": key }).to_string();
    base64::engine::general_purpose::STANDARD.encode(body)
}

fn decode_token(token: &str, fingerprint: u64) -> Result<Value, ApiError> {
    let invalid = || ApiError::validation("The provided NextToken is not valid for this statement");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| invalid())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if v.get("s").and_then(Value::as_str) != Some(fingerprint.to_string().as_str()) {
        return Err(invalid());
    }
    v.get("k").cloned().ok_or_else(invalid)
}
