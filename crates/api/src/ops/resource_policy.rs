//! Resource-based policies: PutResourcePolicy, GetResourcePolicy and
//! DeleteResourcePolicy of a table or of one of its streams. The document
//! is kept in the table's metadata (`TableMeta::resource_policies`) in
//! the canonical form GetResourcePolicy answers, and every later request
//! on the table (or stream) is authorized against it beside the caller's
//! own policies (`Api::authorize`).
//!
//! Differences from DynamoDB: a change applies at once (DynamoDB takes
//! seconds to show it and minutes to enforce it) and there is no 15 s wait
//! between changes; principals are checked for their form, not for
//! existence; policies grant within the table's own account only.

use crate::Api;
use crate::auth::policy::{INVALID_PRINCIPAL, Policy};
use crate::auth::{Access, Resource};
use crate::error::ApiError;
use crate::params::{Arn, Violations};
use dynaraft_model::wire::{Flag, Str};
use dynaraft_storage::{Command, ResourcePolicyMeta, TableMeta};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Largest policy document, in bytes (whitespace counts, as in DynamoDB).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;
/// Longest ResourceArn, in characters.
const MAX_RESOURCE_ARN_CHARS: usize = 1283;
/// ExpectedRevisionId saying no policy may exist yet.
const NO_POLICY: &str = "NO_POLICY";
/// The Version a document without one reads back with (DynamoDB's).
const DEFAULT_VERSION: &str = "2008-10-17";

/// PutResourcePolicy's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PutInput {
    pub resource_arn: Option<Str>,
    pub policy: Option<Str>,
    pub expected_revision_id: Option<Str>,
    pub confirm_remove_self_resource_access: Option<Flag>,
}

/// GetResourcePolicy's and DeleteResourcePolicy's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ArnInput {
    pub resource_arn: Option<Str>,
    pub expected_revision_id: Option<Str>,
}

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("One or more parameter values were invalid: {msg}"))
}

/// What a ResourceArn names: a table of this account and region, or one
/// of its streams; checked as DynamoDB checks it.
struct Target {
    arn: String,
    table: Arc<dynaraft_cluster::Table>,
    /// The stream's label, for a stream's policy.
    stream: Option<String>,
}

impl Target {
    fn name(&self) -> &str {
        crate::scope::display_name(&self.table.meta.name)
    }

    fn current(&self) -> Option<&ResourcePolicyMeta> {
        self.table.meta.resource_policy(self.stream.as_deref())
    }

    fn not_found(&self) -> ApiError {
        ApiError::PolicyNotFound(format!(
            "Resource-based policy not found for the provided ResourceArn: {}",
            self.arn
        ))
    }
}

/// The ResourceArn of a request, checked for its form and constraints.
fn resource_arn(v: &mut Violations, arn: Option<&Str>) -> String {
    match arn.map(|a| a.0.as_str()) {
        None => v.null("resourceArn"),
        Some(a) if a.is_empty() => v.add(
            Some(a),
            "resourceArn",
            "Member must have length greater than or equal to 1",
        ),
        Some(a) if a.chars().count() > MAX_RESOURCE_ARN_CHARS => v.add(
            Some(a),
            "resourceArn",
            &format!("Member must have length less than or equal to {MAX_RESOURCE_ARN_CHARS}"),
        ),
        Some(_) => {}
    }
    arn.map(|a| a.0.clone()).unwrap_or_default()
}

/// Authorizes `action` on `arn`, then finds what it names.
fn target(api: &Api, arn: String, action: &'static str) -> Result<Target, ApiError> {
    if !arn.starts_with("arn:") {
        return Err(invalid(format!("ARNs must start with 'arn:': {arn}")));
    }
    let parts = Arn::parse(&arn);
    let Some((parts, resource)) = parts.and_then(|p| p.resource.map(|r| (p, r))) else {
        return Err(invalid(format!("Invalid resource Arn: {arn}")));
    };
    if parts.partition != "aws" || parts.service != "dynamodb" || parts.region != api.region() {
        return Err(invalid(format!("Invalid resource Arn: {arn}")));
    }
    if parts.account != api.account() {
        return Err(ApiError::validation(
            "This action is only supported by accounts that match the resource owner\u{2019}s account.",
        ));
    }
    let Some(path) = resource.strip_prefix("table/") else {
        return Err(invalid(format!(
            "Provided Arn is not a DynamoDB resource arn: {arn}"
        )));
    };
    let (table, stream) = match path.split_once('/') {
        None => (path, None),
        Some((t, rest)) => match rest.split_once('/') {
            Some(("stream", label)) if !label.is_empty() => (t, Some(label.to_string())),
            Some(("index", _)) => {
                return Err(invalid(format!(
                    "Invalid resource arn provided, only table or stream is accepted. Provided resource arn: {arn}"
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "Provided Arn is not a DynamoDB resource arn: {arn}"
                )));
            }
        },
    };
    api.authorize(|| Access::new(action, Resource::Arn(arn.clone())))?;
    let t = api.table(table).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: Table: {table} not found"
        ))
    })?;
    if let Some(label) = &stream {
        let known = t
            .meta
            .streams
            .iter()
            .any(|s| super::stream_label(s.created_ms) == *label);
        if !known {
            return Err(ApiError::ResourceNotFound(format!(
                "Requested resource not found: Stream: {label} not found for Table: {table}"
            )));
        }
    }
    Ok(Target {
        arn,
        table: t,
        stream,
    })
}

/// Refuses a change expected of revision `expected` when the policy is at
/// another (DynamoDB's PolicyNotFoundException wording).
fn check_revision(t: &Target, expected: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let prefix = "Resource-based policy not found for the provided ResourceArn";
    match (t.current(), expected) {
        (None, NO_POLICY) => Ok(()),
        (Some(p), NO_POLICY) => Err(ApiError::PolicyNotFound(format!(
            "{prefix}: Requested policy update expecting none to be present for table {}, but a policy exists with revision id {}.",
            t.name(),
            p.revision_id
        ))),
        (None, _) => Err(t.not_found()),
        (Some(p), e) if p.revision_id == e => Ok(()),
        (Some(p), e) => Err(ApiError::PolicyNotFound(format!(
            "{prefix}: Requested update for policy with revision id {e}, but the policy associated to target table {} has revision id {}.",
            t.name(),
            p.revision_id
        ))),
    }
}

/// Stores `policy` (None: none) as the target's resource-based policy.
async fn store(api: &Api, t: &Target, policy: Option<ResourcePolicyMeta>) -> Result<(), ApiError> {
    let mut meta: TableMeta = t.table.meta.clone();
    meta.resource_policies
        .retain(|p| p.stream.as_deref() != t.stream.as_deref());
    meta.resource_policies.extend(policy);
    super::change_table(api, Command::ReplaceTableMeta(meta), &t.table.meta.name).await?;
    Ok(())
}

/// A revision id after `current`: the time in milliseconds (one more than
/// the current revision's if the clock has not passed it).
fn next_revision(current: Option<&ResourcePolicyMeta>) -> String {
    let now = dynaraft_storage::wall_clock_ms();
    let after = current
        .and_then(|p| p.revision_id.parse::<u64>().ok())
        .map_or(0, |r| r + 1);
    now.max(after).to_string()
}

pub async fn put(api: &Api, input: PutInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let arn = resource_arn(&mut v, input.resource_arn.as_ref());
    let text = input.policy.as_ref().map(|p| p.0.as_str());
    match text {
        None => v.null("policy"),
        Some("") => v.add(
            Some(""),
            "policy",
            "Member must have length greater than or equal to 1",
        ),
        Some(_) => {}
    }
    if let Some(e) = input
        .expected_revision_id
        .as_deref()
        .filter(|e| e.is_empty())
    {
        v.add(
            Some(e),
            "expectedRevisionId",
            "Member must have length greater than or equal to 1",
        );
    }
    v.check()?;
    let t = target(api, arn, "PutResourcePolicy")?;
    let text = text.unwrap_or_default();
    if text.len() > MAX_POLICY_BYTES {
        return Err(too_large(text));
    }
    let (policy, document) = parse(text)?;
    check_revision(&t, input.expected_revision_id.as_deref())?;
    let confirmed = input
        .confirm_remove_self_resource_access
        .is_some_and(|f| f.0);
    if let Some(p) = &api.principal
        && !confirmed
        && p.denied_by(
            &policy,
            "dynamodb:PutResourcePolicy",
            &Resource::Arn(t.arn.clone()),
        )
    {
        return Err(ApiError::AccessDenied(
            "The new resource policy will not allow you to update the resource policy in the future."
                .into(),
        ));
    }
    let current = t.current();
    if let Some(p) = current.filter(|p| p.document == document) {
        // The same policy again changes nothing, not even its revision.
        return Ok(json!({"RevisionId": p.revision_id}));
    }
    let revision_id = next_revision(current);
    let meta = ResourcePolicyMeta {
        stream: t.stream.clone(),
        document,
        revision_id: revision_id.clone(),
    };
    store(api, &t, Some(meta)).await?;
    Ok(json!({"RevisionId": revision_id}))
}

pub fn get(api: &Api, input: ArnInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let arn = resource_arn(&mut v, input.resource_arn.as_ref());
    v.check()?;
    let t = target(api, arn, "GetResourcePolicy")?;
    let p = t.current().ok_or_else(|| t.not_found())?;
    Ok(json!({"Policy": p.document, "RevisionId": p.revision_id}))
}

pub async fn delete(api: &Api, input: ArnInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let arn = resource_arn(&mut v, input.resource_arn.as_ref());
    v.check()?;
    let t = target(api, arn, "DeleteResourcePolicy")?;
    let expected = input.expected_revision_id.as_deref();
    if t.current().is_none() && expected.is_none() {
        // Nothing to delete: done, as DynamoDB answers it.
        return Ok(json!({}));
    }
    check_revision(&t, expected)?;
    let revision_id = next_revision(t.current());
    store(api, &t, None).await?;
    Ok(json!({"RevisionId": revision_id}))
}

/// The policy a CreateTable's ResourcePolicy gives the new table.
pub fn created(text: &str) -> Result<ResourcePolicyMeta, ApiError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(too_large(text));
    }
    let (_, document) = parse(text)?;
    Ok(ResourcePolicyMeta {
        stream: None,
        document,
        revision_id: next_revision(None),
    })
}

fn too_large(text: &str) -> ApiError {
    invalid(format!(
        "Invalid policy document: the policy is {} bytes, over the maximum of {MAX_POLICY_BYTES}",
        text.len()
    ))
}

/// A policy document for a resource: parsed (every statement must name
/// its principals, Sids must be unique) and in its canonical form.
pub fn parse(text: &str) -> Result<(Policy, String), ApiError> {
    let document_error = |e: String| {
        if e.contains(INVALID_PRINCIPAL) {
            invalid(INVALID_PRINCIPAL)
        } else {
            invalid(format!("Invalid policy document: {e}"))
        }
    };
    let raw: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("Invalid policy document: {e}")))?;
    let policy: Policy =
        serde_json::from_value(raw.clone()).map_err(|e| document_error(e.to_string()))?;
    if policy.statements.iter().any(|s| s.principal.is_none()) {
        return Err(document_error(
            "every statement of a resource-based policy must have a Principal".into(),
        ));
    }
    let mut sids: Vec<&str> = policy
        .statements
        .iter()
        .filter_map(|s| s.sid.as_deref())
        .collect();
    sids.sort_unstable();
    if sids.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(document_error(
            "Statement IDs (SID) in a single policy must be unique.".into(),
        ));
    }
    Ok((policy, canonical(&raw)))
}

/// The document as GetResourcePolicy answers it: minified, keys in IAM's
/// order, one-element lists as their element, account principals as their
/// root ARN, and a Version (2008-10-17 when it had none).
fn canonical(doc: &Value) -> String {
    let mut out = Map::new();
    let version = doc
        .get("Version")
        .cloned()
        .unwrap_or(json!(DEFAULT_VERSION));
    out.insert("Version".into(), version);
    if let Some(id) = doc.get("Id") {
        out.insert("Id".into(), id.clone());
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(one) => vec![one.clone()],
        None => Vec::new(),
    };
    let ordered: Vec<Value> = statements.iter().map(canonical_statement).collect();
    out.insert("Statement".into(), Value::Array(ordered));
    ordered_json(&out, &["Version", "Id", "Statement"])
}

/// Statement keys in the order GetResourcePolicy writes them.
const STATEMENT_ORDER: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

fn canonical_statement(st: &Value) -> Value {
    let Some(map) = st.as_object() else {
        return st.clone();
    };
    let mut out = Map::new();
    for key in STATEMENT_ORDER {
        let Some(v) = map.get(*key) else {
            continue;
        };
        let v = match *key {
            "Principal" | "NotPrincipal" => canonical_principal(v),
            "Action" | "NotAction" | "Resource" | "NotResource" => single(v),
            _ => v.clone(),
        };
        out.insert((*key).to_string(), v);
    }
    // Kept as a string in the stored form, ordered when written out.
    Value::String(ordered_json(&out, STATEMENT_ORDER))
}

fn canonical_principal(v: &Value) -> Value {
    let Some(map) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    for (kind, names) in map {
        let list: Vec<Value> = match names {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        let mut named: Vec<Value> = Vec::new();
        for n in list {
            let n = match n.as_str() {
                Some(s)
                    if kind == "AWS" && s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    json!(format!("arn:aws:iam::{s}:root"))
                }
                _ => n,
            };
            if !named.contains(&n) {
                named.push(n);
            }
        }
        out.insert(kind.clone(), single(&Value::Array(named)));
    }
    Value::Object(out)
}

/// A one-element list as its element.
fn single(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 1 => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    }
}

/// `map` as minified JSON with its keys in `order` (statements, kept as
/// strings by [`canonical_statement`], written as they are).
fn ordered_json(map: &Map<String, Value>, order: &[&str]) -> String {
    let mut parts = Vec::new();
    for key in order {
        let Some(v) = map.get(*key) else {
            continue;
        };
        let value = match (*key, v) {
            ("Statement", Value::Array(statements)) => {
                let written: Vec<String> = statements
                    .iter()
                    .map(|s| match s {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                format!("[{}]", written.join(","))
            }
            _ => v.to_string(),
        };
        parts.push(format!("{}:{value}", Value::String((*key).to_string())));
    }
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_back_in_canonical_form() {
        let (_, doc) = parse(
            r#"{"Statement": {"Resource": ["arn:aws:dynamodb:us-east-1:111122223333:table/T"],
                "Action": ["dynamodb:GetItem"], "Effect": "Allow",
                "Principal": {"AWS": ["111122223333", "arn:aws:iam::111122223333:root"]}}}"#,
        )
        .expect("valid");
        assert_eq!(
            doc,
            r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"dynamodb:GetItem","Resource":"arn:aws:dynamodb:us-east-1:111122223333:table/T"}]}"#
        );
    }

    #[test]
    fn policies_without_principals_or_with_bad_ones_are_refused() {
        let refused = |doc: &str| match parse(doc) {
            Err(ApiError::Validation(m)) => m,
            other => panic!("{doc}: {other:?}"),
        };
        let m = refused(
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}}"#,
        );
        assert!(m.contains("must have a Principal"), "{m}");
        let m = refused(
            r#"{"Statement": {"Effect": "Allow", "Principal": {"AWS": "bob"}, "Action": "dynamodb:*", "Resource": "*"}}"#,
        );
        assert_eq!(
            m,
            "One or more parameter values were invalid: Invalid principal in policy document."
        );
        let m = refused(
            r#"{"Statement": [{"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "dynamodb:GetItem", "Resource": "*"},
                              {"Sid": "a", "Effect": "Deny", "Principal": "*", "Action": "dynamodb:PutItem", "Resource": "*"}]}"#,
        );
        assert!(m.contains("must be unique"), "{m}");
        assert!(
            refused("{")
                .starts_with("One or more parameter values were invalid: Invalid policy document:")
        );
    }
}
