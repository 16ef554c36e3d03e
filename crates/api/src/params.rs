//! Helpers shared by the operations: typed access to request fields with
//! DynamoDB's validation messages, expression set-up, capacity accounting.

use crate::Api;
use crate::error::ApiError;
use dynaraft_cluster::Table;
use dynaraft_expr::Substitutions;
use dynaraft_model::Item;
use dynaraft_model::wire::{Dict, Int, Str, WireItem};
use dynaraft_storage::TableStatus;
use serde_json::{Value, json};
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
    /// A required member the request lacks.
    pub fn null(&mut self, path: &str) {
        self.add(None, path, "Member must not be null");
    }

    /// `Member must not be null` when `value` is absent.
    pub fn required<T>(&mut self, value: Option<&T>, path: &str) {
        if value.is_none() {
            self.null(path);
        }
    }

    pub fn add(&mut self, value: Option<&str>, path: &str, constraint: &str) {
        let v = match value {
            Some(v) => format!("'{v}'"),
            None => "null".into(),
        };
        self.0.push(format!(
            "Value {v} at '{path}' failed to satisfy constraint: {constraint}"
        ));
    }
    /// A violation reported without the value, as DynamoDB's newer
    /// validators word it: `Value at 'Limit' failed to satisfy ...`.
    pub fn add_unquoted(&mut self, path: &str, constraint: &str) {
        self.0.push(format!(
            "Value at '{path}' failed to satisfy constraint: {constraint}"
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

/// A Limit member of 1 to `max` (`max` when absent), its violations added
/// to `v` (ListTables, ListStreams, DescribeStream, GetRecords).
pub fn bounded_limit(v: &mut Violations, l: Option<&Int>, max: i64, path: &str) -> usize {
    let Some(l) = l.map(|l| l.0) else {
        return usize::try_from(max).unwrap_or(usize::MAX);
    };
    if l < 1 {
        v.add(
            Some(&l.to_string()),
            path,
            "Member must have value greater than or equal to 1",
        );
    }
    if l > max {
        v.add(
            Some(&l.to_string()),
            path,
            &format!("Member must have value less than or equal to {max}"),
        );
    }
    usize::try_from(l.clamp(1, max)).unwrap_or(1)
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

/// Longest table ARN an item operation accepts in TableName, in characters.
pub const MAX_TABLE_ARN_CHARS: usize = 1024;

/// A table named by name or ARN where a request may use either (the keys
/// of BatchGetItem's and BatchWriteItem's RequestItems): checked, and the
/// table's name.
pub fn check_table_or_arn<'a>(v: &mut Violations, name: &'a str, path: &str) -> &'a str {
    if name.starts_with("arn:") {
        if name.chars().count() > MAX_TABLE_ARN_CHARS {
            v.add(
                Some(name),
                path,
                &format!("Member must have length less than or equal to {MAX_TABLE_ARN_CHARS}"),
            );
        }
    } else {
        check_table_name(v, Some(name), path);
    }
    table_of_arn(name)
}

/// TableName of an item operation, which may also be a table ARN; checked
/// before the request's other constraints and reported alone, as DynamoDB
/// does (an empty name fails only its minimum length of 1).
pub fn resource_name(name: Option<&Str>) -> Result<String, ApiError> {
    let mut v = Violations::default();
    let table = match name.map(|n| n.0.as_str()) {
        None => {
            v.null("tableName");
            ""
        }
        Some("") => {
            v.add(
                Some(""),
                "tableName",
                "Member must have length greater than or equal to 1",
            );
            ""
        }
        Some(n) => check_table_or_arn(&mut v, n, "tableName"),
    };
    v.check()?;
    Ok(table.to_string())
}

/// The parts of an ARN, `arn:PARTITION:SERVICE:REGION:ACCOUNT[:RESOURCE]`.
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: Option<&'a str>,
}

impl<'a> Arn<'a> {
    /// `s` split into its parts; `None` if it is not an ARN of at least
    /// partition, service, region and account.
    pub fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut parts = s.strip_prefix("arn:")?.splitn(5, ':');
        Some(Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next(),
        })
    }
}

/// The table name of a table ARN (`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME`),
/// or `name` itself when it is not an ARN.
pub fn table_of_arn(name: &str) -> &str {
    match name.strip_prefix("arn:") {
        Some(rest) => rest
            .split_once(":table/")
            .map_or(name, |(_, t)| t.split('/').next().unwrap_or(t)),
        None => name,
    }
}

/// Reads a request body of shape `T` (DynamoDB's serialization pass).
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    dynaraft_model::wire::from_body(bytes).map_err(|e| match e {
        dynaraft_model::ModelError::Serialization(m) if m.is_empty() => {
            ApiError::Serialization(None)
        }
        other => other.into(),
    })
}

/// The key schema's verdict on an item (or key) of a write: a missing key
/// attribute is a ValidationException; a key attribute of the wrong type is
/// [`ApiError::KeySchema`], which a transaction reports as that item's
/// ValidationError, as DynamoDB does.
pub fn key_verdict(
    schema: &dynaraft_model::KeySchema,
    item: &Item,
    checked: Result<(), dynaraft_model::ModelError>,
) -> Result<(), ApiError> {
    match checked {
        Ok(()) => Ok(()),
        Err(e) if schema.key_attrs().all(|k| item.contains_key(&k.name)) => {
            Err(ApiError::KeySchema(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Longest name of a key attribute (in AttributeDefinitions and key
/// schemas), in characters.
pub const MAX_KEY_ATTRIBUTE_NAME_CHARS: usize = 255;

/// The length constraints on a key attribute's name, checked into `v`.
pub fn check_key_attribute_name(v: &mut Violations, name: &str, path: &str) {
    let n = name.chars().count();
    if n < 1 {
        v.add(
            Some(name),
            path,
            "Member must have length greater than or equal to 1",
        );
    }
    if n > MAX_KEY_ATTRIBUTE_NAME_CHARS {
        v.add(
            Some(name),
            path,
            &format!(
                "Member must have length less than or equal to {MAX_KEY_ATTRIBUTE_NAME_CHARS}"
            ),
        );
    }
}

/// Longest attribute name, in bytes (DynamoDB's limit for names outside
/// key schemas).
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 65535;

/// Why `name` cannot be an attribute name, if it cannot: empty, or longer
/// than [`MAX_ATTRIBUTE_NAME_BYTES`].
pub fn attribute_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("Empty attribute name".into());
    }
    if name.len() > MAX_ATTRIBUTE_NAME_BYTES {
        return Some(format!(
            "Attribute name is too large, must be less than or equal to {MAX_ATTRIBUTE_NAME_BYTES} bytes"
        ));
    }
    None
}

/// A decoded item (or key) of a typed request, or DynamoDB's validation
/// error for its first invalid value or attribute name.
pub fn wire_item(item: Option<WireItem>) -> Result<Item, ApiError> {
    let item = item.unwrap_or_default().into_item()?;
    if let Some(p) = item.keys().find_map(|k| attribute_name_problem(k)) {
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: {p}"
        )));
    }
    Ok(item)
}

/// A table that accepts item operations (ACTIVE or UPDATING).
pub fn active_table(api: &Api, name: &str) -> Result<Arc<Table>, ApiError> {
    match api.table(name) {
        Some(t) if matches!(t.meta.status, TableStatus::Active | TableStatus::Updating) => Ok(t),
        _ => Err(ApiError::not_found()),
    }
}

/// The expression inputs of one request: the client's
/// ExpressionAttributeNames/Values plus whatever the legacy translation
/// generated. Built once per request, after DynamoDB's mixing rules.
pub struct ExprInput {
    pub names: BTreeMap<String, String>,
    pub values: Item,
    /// Expressions translated from legacy parameters, which DynamoDB
    /// does not hold to the limits on expressions.
    pub translations: Vec<String>,
}

impl ExprInput {
    /// The same rules for a typed request: `expressions` are the
    /// operation's expression parameters with whether each was sent,
    /// `legacy` the non-expression ones sent.
    pub fn from_parts(
        expressions: &[(&str, bool)],
        legacy: &[(&str, bool)],
        names: Option<Dict<Str>>,
        values: Option<WireItem>,
    ) -> Result<ExprInput, ApiError> {
        let exprs: Vec<&str> = expressions
            .iter()
            .filter(|(_, p)| *p)
            .map(|(f, _)| *f)
            .collect();
        if !exprs.is_empty() {
            // KeyConditions may be combined with a FilterExpression.
            let keycond_ok = !exprs.contains(&"KeyConditionExpression");
            let mixed: Vec<&str> = legacy
                .iter()
                .filter(|(f, p)| *p && !(keycond_ok && *f == "KeyConditions"))
                .map(|(f, _)| *f)
                .collect();
            if !mixed.is_empty() {
                return Err(mixed_parameters(&mixed, &exprs));
            }
        }
        if names.is_some() && exprs.is_empty() {
            return Err(ApiError::validation(
                "ExpressionAttributeNames can only be specified when using expressions",
            ));
        }
        let value_exprs: Vec<&str> = expressions
            .iter()
            .filter(|(e, _)| *e != "ProjectionExpression")
            .map(|(e, _)| *e)
            .collect();
        let any_value_expr = expressions
            .iter()
            .any(|(e, p)| *p && *e != "ProjectionExpression");
        if values.is_some() && !value_exprs.is_empty() && !any_value_expr {
            return Err(ApiError::validation(format!(
                "ExpressionAttributeValues can only be specified when using expressions: {} {} null",
                value_exprs.join(" and "),
                if value_exprs.len() > 1 { "are" } else { "is" }
            )));
        }
        if names.as_ref().is_some_and(|n| n.is_empty()) {
            return Err(ApiError::validation(
                "ExpressionAttributeNames must not be empty",
            ));
        }
        if values.as_ref().is_some_and(|v| v.is_empty()) {
            return Err(ApiError::validation(
                "ExpressionAttributeValues must not be empty",
            ));
        }
        let name_map: BTreeMap<String, String> = names
            .into_iter()
            .flat_map(|d| d.0)
            .map(|(k, v)| (k, v.0))
            .collect();
        if let Some((k, p)) = name_map
            .iter()
            .find_map(|(k, v)| attribute_name_problem(v).map(|p| (k, p)))
        {
            return Err(ApiError::validation(format!(
                "ExpressionAttributeNames contains invalid value: {p} for key {k}"
            )));
        }
        let values = values.unwrap_or_default();
        if let Some((k, m)) = values.first_invalid() {
            return Err(ApiError::validation(format!(
                "ExpressionAttributeValues contains invalid value: {m} for key {k}"
            )));
        }
        let value_map = values.into_item()?;
        Ok(ExprInput {
            names: name_map,
            values: value_map,
            translations: Vec::new(),
        })
    }

    /// A translator for legacy parameters that avoids the client's placeholders.
    pub fn legacy(&self) -> dynaraft_expr::legacy::Legacy {
        dynaraft_expr::legacy::Legacy::avoiding(self.names.keys().chain(self.values.keys()))
    }

    /// Takes in the names and values a legacy translation generated.
    /// Takes in the names and values a legacy translation generated, and
    /// the expression it produced (if any).
    pub fn absorb(&mut self, l: dynaraft_expr::legacy::Legacy, translation: Option<&String>) {
        self.names.extend(l.names);
        self.values.extend(l.values);
        self.translations.extend(translation.cloned());
    }

    /// Fresh substitutions (with usage tracking) for parsing.
    pub fn subs(&self) -> Substitutions {
        self.translations.iter().fold(
            Substitutions::new(self.names.clone(), self.values.clone()),
            |s, t| s.with_translation(t.as_str()),
        )
    }

    /// The values as DynamoDB JSON, for a logged command.
    pub fn values_json(&self) -> Value {
        dynaraft_model::value::item_to_json(&self.values)
    }
}

/// DynamoDB's refusal of expression and legacy parameters together.
pub fn mixed_parameters(legacy: &[&str], exprs: &[&str]) -> ApiError {
    ApiError::validation(format!(
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
        legacy.join(", "),
        exprs.join(", ")
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CapacityMode {
    None,
    Total,
    Indexes,
}

/// ReturnConsumedCapacity of a request: its constraint checked into `v`,
/// and the mode it asks for.
pub fn capacity_member(v: &mut Violations, value: Option<&Str>) -> CapacityMode {
    use crate::enums::WireEnum;
    crate::enums::ReturnCapacity::member(v, value, "returnConsumedCapacity").into()
}

impl From<Option<crate::enums::ReturnCapacity>> for CapacityMode {
    fn from(v: Option<crate::enums::ReturnCapacity>) -> Self {
        use crate::enums::ReturnCapacity as R;
        match v {
            Some(R::Total) => CapacityMode::Total,
            Some(R::Indexes) => CapacityMode::Indexes,
            Some(R::None) | None => CapacityMode::None,
        }
    }
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

/// Capacity units one secondary index consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexUnits {
    pub name: String,
    /// A global index (else a local one).
    pub global: bool,
    pub units: f64,
}

/// ConsumedCapacity of a request on `table` that consumed `units` of the
/// table itself (`None` for a read of an index alone) and `indexes` of its
/// secondary indexes: the total, and with INDEXES each one's share.
pub fn consumed_with_indexes(
    mode: CapacityMode,
    table: &str,
    units: Option<f64>,
    indexes: &[IndexUnits],
    write: bool,
) -> Option<Value> {
    let kind = if write {
        "WriteCapacityUnits"
    } else {
        "ReadCapacityUnits"
    };
    let total = units.unwrap_or(0.0) + indexes.iter().map(|i| i.units).sum::<f64>();
    let mut c = consumed(mode, table, total, write)?;
    if mode == CapacityMode::Indexes {
        match units {
            Some(u) => c["Table"] = json!({"CapacityUnits": u, kind: u}),
            None => {
                if let Some(o) = c.as_object_mut() {
                    o.remove("Table");
                }
            }
        }
        for (global, member) in [
            (true, "GlobalSecondaryIndexes"),
            (false, "LocalSecondaryIndexes"),
        ] {
            let per: serde_json::Map<String, Value> = indexes
                .iter()
                .filter(|i| i.global == global)
                .map(|i| {
                    (
                        i.name.clone(),
                        json!({"CapacityUnits": i.units, kind: i.units}),
                    )
                })
                .collect();
            if !per.is_empty() {
                c[member] = Value::Object(per);
            }
        }
    }
    Some(c)
}

/// Capacity a batch consumed in one table: the table's own units and each
/// secondary index's, summed over the batch's items.
#[derive(Debug, Default, Clone)]
pub struct TableUnits {
    pub table: f64,
    pub indexes: Vec<IndexUnits>,
}

impl TableUnits {
    pub fn add(&mut self, table: f64, indexes: &[IndexUnits]) {
        self.table += table;
        for i in indexes {
            match self.indexes.iter_mut().find(|e| e.name == i.name) {
                Some(e) => e.units += i.units,
                None => self.indexes.push(i.clone()),
            }
        }
    }
}

/// Adds `ConsumedCapacity` as a list with one entry per table, each with
/// its indexes' shares (BatchWriteItem), unless capacity is not requested.
pub fn insert_consumed_parts(
    out: &mut Value,
    mode: CapacityMode,
    units: &BTreeMap<String, TableUnits>,
    write: bool,
) {
    if mode != CapacityMode::None {
        let caps: Vec<Value> = units
            .iter()
            .filter_map(|(n, u)| consumed_with_indexes(mode, n, Some(u.table), &u.indexes, write))
            .collect();
        out["ConsumedCapacity"] = Value::Array(caps);
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
