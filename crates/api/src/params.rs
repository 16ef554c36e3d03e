//! Helpers shared by the operations: typed access to request fields with
//! DynamoDB's validation messages, expression set-up, capacity accounting.

use crate::Api;
use crate::error::ApiError;
use dynaraft_cluster::Table;
use dynaraft_expr::Substitutions;
use dynaraft_model::value::item_from_json;
use dynaraft_model::{AttributeValue, Item};
use dynaraft_storage::TableStatus;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const MIN_TABLE_NAME_CHARS: usize = 3;
pub const MAX_TABLE_NAME_CHARS: usize = 255;
/// Bytes per write capacity unit.
pub const WCU_BYTES: usize = 1024;
/// Bytes per read capacity unit.
pub const RCU_BYTES: usize = 4096;

/// Collects constraint violations into DynamoDB's combined message.
#[derive(Default)]
pub struct Violations(Vec<String>);

impl Violations {
    pub fn add(&mut self, value: Option<&str>, path: &str, constraint: &str) {
        let v = match value {
            Some(v) => format!("'{v}'"),
            None => "null".into(),
        };
        self.0.push(format!(
            "Value {v} at '{path}' failed to satisfy constraint: {constraint}"
        ));
    }
    pub fn check(self) -> Result<(), ApiError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(ApiError::validation(format!(
                "1 validation error detected: {}",
                self.0[0]
            ))),
            n => Err(ApiError::validation(format!(
                "{n} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

pub fn wrong_type(expected: &str) -> ApiError {
    ApiError::Serialization(Some(format!(
        "Unexpected value type in payload, expected {expected}"
    )))
}

pub fn opt_str<'a>(body: &'a Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type("string")),
    }
}

pub fn opt_bool(body: &Value, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type("boolean")),
    }
}

pub fn opt_i64(body: &Value, field: &str) -> Result<Option<i64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| wrong_type("integer")),
    }
}

pub fn opt_object<'a>(
    body: &'a Value,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ApiError::Serialization(Some(
            "Start of structure or map found where not expected".into(),
        ))),
    }
}

pub fn opt_array<'a>(body: &'a Value, field: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(ApiError::Serialization(Some(
            "Start of list found where not expected".into(),
        ))),
    }
}

/// The constraints DynamoDB puts on table and index names: 3 to 255
/// characters of `[a-zA-Z0-9_.-]`.
pub fn check_table_name(v: &mut Violations, name: Option<&str>, path: &str) {
    match name {
        None => v.add(None, path, "Member must not be null"),
        Some(n) => {
            let chars = n.chars().count();
            if chars < MIN_TABLE_NAME_CHARS {
                v.add(
                    Some(n),
                    path,
                    "Member must have length greater than or equal to 3",
                );
            }
            if chars > MAX_TABLE_NAME_CHARS {
                v.add(
                    Some(n),
                    path,
                    "Member must have length less than or equal to 255",
                );
            }
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                v.add(
                    Some(n),
                    path,
                    "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
                );
            }
        }
    }
}

pub fn table_name(body: &Value) -> Result<String, ApiError> {
    let name = opt_str(body, "TableName")?;
    let mut v = Violations::default();
    check_table_name(&mut v, name, "tableName");
    v.check()?;
    Ok(name.unwrap_or_default().to_string())
}

/// A table that accepts item operations (ACTIVE or UPDATING).
pub fn active_table(api: &Api, name: &str) -> Result<Arc<Table>, ApiError> {
    match api.router.table(name) {
        Some(t) if matches!(t.meta.status, TableStatus::Active | TableStatus::Updating) => Ok(t),
        _ => Err(ApiError::not_found()),
    }
}

pub fn enum_value<'a>(
    body: &'a Value,
    field: &str,
    path: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, ApiError> {
    let v = opt_str(body, field)?;
    if let Some(s) = v
        && !allowed.contains(&s)
    {
        let mut vs = Violations::default();
        vs.add(
            Some(s),
            path,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        );
        vs.check()?;
    }
    Ok(v)
}

pub fn required_item(body: &Value, field: &str, path: &str) -> Result<Item, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => {
            let mut v = Violations::default();
            v.add(None, path, "Member must not be null");
            v.check()?;
            Ok(Item::new())
        }
        Some(j) => Ok(item_from_json(j)?),
    }
}

/// The expression inputs of one request: the client's
/// ExpressionAttributeNames/Values plus whatever the legacy translation
/// generated. Built once per request, after DynamoDB's mixing rules.
pub struct ExprInput {
    pub names: BTreeMap<String, String>,
    pub values: Item,
}

impl ExprInput {
    /// Checks the rules for combining expression and legacy parameters and
    /// parses the names and values. `expressions` are the operation's
    /// expression parameters, `legacy` its non-expression ones.
    pub fn from_body(
        body: &Value,
        expressions: &[&str],
        legacy: &[&str],
    ) -> Result<ExprInput, ApiError> {
        let present = |f: &str| body.get(f).is_some_and(|v| !v.is_null());
        let exprs: Vec<&str> = expressions.iter().copied().filter(|f| present(f)).collect();
        if !exprs.is_empty() {
            // KeyConditions may be combined with a FilterExpression.
            let keycond_ok = !present("KeyConditionExpression");
            let mixed: Vec<&str> = legacy
                .iter()
                .copied()
                .filter(|f| present(f))
                .filter(|f| !(keycond_ok && *f == "KeyConditions"))
                .collect();
            if !mixed.is_empty() {
                return Err(ApiError::validation(format!(
                    "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
                    mixed.join(", "),
                    exprs.join(", ")
                )));
            }
        }
        let names = opt_object(body, "ExpressionAttributeNames")?;
        let values = opt_object(body, "ExpressionAttributeValues")?;
        if names.is_some() && exprs.is_empty() {
            return Err(ApiError::validation(
                "ExpressionAttributeNames can only be specified when using expressions",
            ));
        }
        let value_exprs: Vec<&str> = expressions
            .iter()
            .filter(|e| **e != "ProjectionExpression")
            .copied()
            .collect();
        if values.is_some() && !value_exprs.is_empty() && !value_exprs.iter().any(|f| present(f)) {
            return Err(ApiError::validation(format!(
                "ExpressionAttributeValues can only be specified when using expressions: {} {} null",
                value_exprs.join(" and "),
                if value_exprs.len() > 1 { "are" } else { "is" }
            )));
        }
        if names.is_some_and(|n| n.is_empty()) {
            return Err(ApiError::validation(
                "ExpressionAttributeNames must not be empty",
            ));
        }
        if values.is_some_and(|v| v.is_empty()) {
            return Err(ApiError::validation(
                "ExpressionAttributeValues must not be empty",
            ));
        }
        let mut name_map = BTreeMap::new();
        for (k, v) in names.into_iter().flatten() {
            let s = v.as_str().ok_or_else(|| wrong_type("string"))?;
            name_map.insert(k.clone(), s.to_string());
        }
        let mut value_map = Item::new();
        for (k, v) in values.into_iter().flatten() {
            let av = AttributeValue::from_json(v).map_err(|e| match e {
                dynaraft_model::ModelError::Validation(m) => ApiError::validation(format!(
                    "ExpressionAttributeValues contains invalid value: {m} for key {k}"
                )),
                other => other.into(),
            })?;
            value_map.insert(k.clone(), av);
        }
        Ok(ExprInput {
            names: name_map,
            values: value_map,
        })
    }

    /// A translator for legacy parameters that avoids the client's placeholders.
    pub fn legacy(&self) -> dynaraft_expr::legacy::Legacy {
        dynaraft_expr::legacy::Legacy::avoiding(self.names.keys().chain(self.values.keys()))
    }

    /// Takes in the names and values a legacy translation generated.
    pub fn absorb(&mut self, l: dynaraft_expr::legacy::Legacy) {
        self.names.extend(l.names);
        self.values.extend(l.values);
    }

    /// Fresh substitutions (with usage tracking) for parsing.
    pub fn subs(&self) -> Substitutions {
        Substitutions::new(self.names.clone(), self.values.clone())
    }

    /// The values as DynamoDB JSON, for a logged command.
    pub fn values_json(&self) -> Value {
        dynaraft_model::value::item_to_json(&self.values)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CapacityMode {
    None,
    Total,
    Indexes,
}

pub fn capacity_mode(body: &Value) -> Result<CapacityMode, ApiError> {
    Ok(
        match enum_value(
            body,
            "ReturnConsumedCapacity",
            "returnConsumedCapacity",
            &["INDEXES", "TOTAL", "NONE"],
        )? {
            Some("TOTAL") => CapacityMode::Total,
            Some("INDEXES") => CapacityMode::Indexes,
            _ => CapacityMode::None,
        },
    )
}

/// Write units for a write touching an item of `bytes` (at least one).
pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(WCU_BYTES).max(1) as f64
}

/// Read units for reading `bytes` (at least one 4 KB unit; halved when
/// eventually consistent).
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(RCU_BYTES).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

pub fn consumed(mode: CapacityMode, table: &str, units: f64, write: bool) -> Option<Value> {
    let kind = if write {
        "WriteCapacityUnits"
    } else {
        "ReadCapacityUnits"
    };
    match mode {
        CapacityMode::None => None,
        CapacityMode::Total => {
            Some(json!({"TableName": table, "CapacityUnits": units, kind: units}))
        }
        CapacityMode::Indexes => Some(json!({
            "TableName": table, "CapacityUnits": units, kind: units,
            "Table": {"CapacityUnits": units, kind: units}
        })),
    }
}

/// Adds `ConsumedCapacity` as a list with one entry per table (the batch
/// and transaction operations), unless capacity is not requested.
pub fn insert_consumed_list(
    out: &mut Value,
    mode: CapacityMode,
    units: &BTreeMap<String, f64>,
    write: bool,
) {
    if mode != CapacityMode::None {
        let caps: Vec<Value> = units
            .iter()
            .filter_map(|(n, u)| consumed(mode, n, *u, write))
            .collect();
        out["ConsumedCapacity"] = Value::Array(caps);
    }
}

pub fn insert_opt(out: &mut Value, key: &str, v: Option<Value>) {
    if let (Some(v), Some(o)) = (v, out.as_object_mut()) {
        o.insert(key.to_string(), v);
    }
}
