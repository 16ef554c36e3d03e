//! The legacy (pre-expression) parameters, translated into expression text
//! with generated `#` and `:` placeholders: `Expected` + `ConditionalOperator`
//! into a ConditionExpression, `QueryFilter`/`ScanFilter` into a
//! FilterExpression, `KeyConditions` into a KeyConditionExpression and
//! `AttributeUpdates` into an UpdateExpression.
//!
//! Translating to text (not straight to the AST) means a legacy request then
//! takes exactly the path of an expression request: the same validation, the
//! same logged command, the same evaluation. Placeholders cannot collide with
//! the client's because DynamoDB forbids mixing the two styles.

use crate::ExprError;
use dynaraft_model::{AttrType, AttributeValue, Item};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const OPERATORS: &str =
    "[IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]";

/// Operators a key condition may use.
const KEY_OPERATORS: &[&str] = &["EQ", "LE", "LT", "GE", "GT", "BEGINS_WITH", "BETWEEN"];
/// Every ComparisonOperator.
const ALL_OPERATORS: &[&str] = &[
    "IN",
    "NULL",
    "BETWEEN",
    "LT",
    "NOT_CONTAINS",
    "EQ",
    "GT",
    "NOT_NULL",
    "NE",
    "LE",
    "BEGINS_WITH",
    "GE",
    "CONTAINS",
];

/// Names and values generated while translating.
#[derive(Debug, Default)]
pub struct Legacy {
    pub names: BTreeMap<String, String>,
    pub values: Item,
    next: usize,
    /// Placeholders the client already uses (only KeyConditions may be
    /// combined with expressions), never generated again.
    taken: std::collections::BTreeSet<String>,
}

fn invalid(msg: impl AsRef<str>) -> ExprError {
    ExprError(format!(
        "One or more parameter values were invalid: {}",
        msg.as_ref()
    ))
}

fn parse_value(v: &Value) -> Result<AttributeValue, ExprError> {
    AttributeValue::from_json(v).map_err(|e| ExprError(e.to_string()))
}

impl Legacy {
    pub fn new() -> Legacy {
        Legacy::default()
    }

    /// A translator that will not generate any of `taken`.
    pub fn avoiding<'a>(taken: impl IntoIterator<Item = &'a String>) -> Legacy {
        Legacy {
            taken: taken.into_iter().cloned().collect(),
            ..Legacy::default()
        }
    }

    fn fresh(&mut self, prefix: char) -> String {
        loop {
            let k = format!("{prefix}legacy{}", self.next);
            self.next += 1;
            if !self.taken.contains(&k) {
                return k;
            }
        }
    }

    fn name(&mut self, attr: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| *v == attr) {
            return k.clone();
        }
        let k = self.fresh('#');
        self.names.insert(k.clone(), attr.to_string());
        k
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let k = self.fresh(':');
        self.values.insert(k.clone(), v);
        k
    }

    /// One `ComparisonOperator` condition on `attr` as expression text.
    fn comparison(
        &mut self,
        param: &str,
        attr: &str,
        op: &str,
        list: &[Value],
    ) -> Result<String, ExprError> {
        let (count_ok, types): (bool, &[AttrType]) = match op {
            "EQ" | "NE" => (list.len() == 1, &[]),
            "LE" | "LT" | "GE" | "GT" => {
                (list.len() == 1, &[AttrType::S, AttrType::N, AttrType::B])
            }
            "CONTAINS" | "NOT_CONTAINS" => {
                (list.len() == 1, &[AttrType::S, AttrType::N, AttrType::B])
            }
            "BEGINS_WITH" => (list.len() == 1, &[AttrType::S, AttrType::B]),
            "NULL" | "NOT_NULL" => (list.is_empty(), &[]),
            "IN" => (!list.is_empty(), &[AttrType::S, AttrType::N, AttrType::B]),
            "BETWEEN" => (list.len() == 2, &[AttrType::S, AttrType::N, AttrType::B]),
            other => {
                return Err(ExprError(format!(
                    "1 validation error detected: Value '{other}' at '{param}.{attr}.member.comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: {OPERATORS}"
                )));
            }
        };
        if !count_ok {
            return Err(invalid(format!(
                "Invalid number of argument(s) for the {op} ComparisonOperator"
            )));
        }
        let values: Vec<AttributeValue> = list.iter().map(parse_value).collect::<Result<_, _>>()?;
        if let Some(first) = values.first()
            && values.iter().any(|v| v.attr_type() != first.attr_type())
        {
            return Err(invalid(
                "AttributeValues inside AttributeValueList must be of same type",
            ));
        }
        if !types.is_empty()
            && let Some(v) = values.iter().find(|v| !types.contains(&v.attr_type()))
        {
            return Err(invalid(format!(
                "ComparisonOperator {op} is not valid for {} AttributeValue type",
                v.attr_type()
            )));
        }
        if op == "BETWEEN"
            && let [a, b] = values.as_slice()
            && crate::eval::compare(a, b) == Some(std::cmp::Ordering::Greater)
        {
            return Err(ExprError(
                        "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound".into(),
                    ));
        }
        let n = self.name(attr);
        let mut vs: Vec<String> = values.into_iter().map(|v| self.value(v)).collect();
        let first = vs.first().cloned().unwrap_or_default();
        Ok(match op {
            "EQ" => format!("{n} = {first}"),
            "NE" => format!("{n} <> {first}"),
            "LE" => format!("{n} <= {first}"),
            "LT" => format!("{n} < {first}"),
            "GE" => format!("{n} >= {first}"),
            "GT" => format!("{n} > {first}"),
            "CONTAINS" => format!("contains({n}, {first})"),
            // Unlike NE, NOT_CONTAINS is false for a missing attribute.
            "NOT_CONTAINS" => format!("(attribute_exists({n}) AND NOT contains({n}, {first}))"),
            "BEGINS_WITH" => format!("begins_with({n}, {first})"),
            "NULL" => format!("attribute_not_exists({n})"),
            "NOT_NULL" => format!("attribute_exists({n})"),
            "IN" => format!("{n} IN ({})", vs.join(", ")),
            _ => {
                let hi = vs.pop().unwrap_or_default();
                format!("{n} BETWEEN {first} AND {hi}")
            }
        })
    }

    fn join(
        parts: Vec<String>,
        conditional_operator: Option<&str>,
    ) -> Result<Option<String>, ExprError> {
        let op = match conditional_operator {
            None | Some("AND") => " AND ",
            Some("OR") => " OR ",
            Some(other) => {
                return Err(ExprError(format!(
                    "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [OR, AND]"
                )));
            }
        };
        Ok(if parts.is_empty() {
            None
        } else {
            Some(parts.join(op))
        })
    }

    /// `Expected` (+ `ConditionalOperator`) as a ConditionExpression.
    pub fn expected(
        &mut self,
        expected: &Map<String, Value>,
        conditional_operator: Option<&str>,
    ) -> Result<Option<String>, ExprError> {
        let mut parts = Vec::new();
        for (attr, c) in expected {
            let op = c.get("ComparisonOperator").and_then(Value::as_str);
            let exists = c.get("Exists").and_then(Value::as_bool);
            let value = c.get("Value").filter(|v| !v.is_null());
            let list = c.get("AttributeValueList").and_then(Value::as_array);
            let part = match op {
                Some(op) => {
                    if exists.is_some() {
                        return Err(invalid(format!(
                            "Exists and ComparisonOperator cannot be used together for Attribute: {attr}"
                        )));
                    }
                    if value.is_some() && list.is_some() {
                        return Err(invalid(format!(
                            "Value and AttributeValueList cannot be used together for Attribute: {attr}"
                        )));
                    }
                    let values: Vec<Value> = match (value, list) {
                        (Some(v), _) => vec![v.clone()],
                        (None, Some(l)) => l.clone(),
                        (None, None) => vec![],
                    };
                    self.comparison("expected", attr, op, &values)?
                }
                None if list.is_some() => {
                    return Err(invalid(format!(
                        "AttributeValueList can only be used with a ComparisonOperator for Attribute: {attr}"
                    )));
                }
                None => match (exists.unwrap_or(true), value) {
                    (true, None) => {
                        let shown = exists.map_or("null".to_string(), |e| e.to_string());
                        return Err(invalid(format!(
                            "Value must be provided when Exists is {shown} for Attribute: {attr}"
                        )));
                    }
                    (false, Some(_)) => {
                        return Err(invalid(format!(
                            "Value cannot be used when Exists is false for Attribute: {attr}"
                        )));
                    }
                    (true, Some(v)) => {
                        self.comparison("expected", attr, "EQ", std::slice::from_ref(v))?
                    }
                    (false, None) => self.comparison("expected", attr, "NULL", &[])?,
                },
            };
            parts.push(part);
        }
        Self::join(parts, conditional_operator)
    }

    /// `QueryFilter` / `ScanFilter` (+ `ConditionalOperator`) as a FilterExpression.
    pub fn filter(
        &mut self,
        param: &str,
        filter: &Map<String, Value>,
        conditional_operator: Option<&str>,
    ) -> Result<Option<String>, ExprError> {
        let mut parts = Vec::new();
        for (attr, c) in filter {
            let op = c
                .get("ComparisonOperator")
                .and_then(Value::as_str)
                .unwrap_or("");
            let list = c
                .get("AttributeValueList")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            parts.push(self.comparison(param, attr, op, &list)?);
        }
        Self::join(parts, conditional_operator)
    }

    /// `KeyConditions` as a KeyConditionExpression.
    pub fn key_conditions(
        &mut self,
        conds: &Map<String, Value>,
    ) -> Result<Option<String>, ExprError> {
        let mut parts = Vec::new();
        for (attr, c) in conds {
            let op = c
                .get("ComparisonOperator")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !KEY_OPERATORS.contains(&op) && ALL_OPERATORS.contains(&op) {
                return Err(ExprError(
                    "Attempted conditional constraint is not an indexable operation".into(),
                ));
            }
            let list = c
                .get("AttributeValueList")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            parts.push(self.comparison("keyConditions", attr, op, &list)?);
        }
        Self::join(parts, None)
    }

    /// `AttributeUpdates` as an UpdateExpression.
    pub fn attribute_updates(
        &mut self,
        updates: &Map<String, Value>,
    ) -> Result<Option<String>, ExprError> {
        let (mut set, mut remove, mut add, mut delete) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (attr, u) in updates {
            let action = u.get("Action").and_then(Value::as_str).unwrap_or("PUT");
            let value = u
                .get("Value")
                .filter(|v| !v.is_null())
                .map(parse_value)
                .transpose()?;
            let n = self.name(attr);
            match (action, value) {
                ("PUT", Some(v)) => {
                    let v = self.value(v);
                    set.push(format!("{n} = {v}"));
                }
                ("DELETE", None) => remove.push(n),
                ("DELETE", Some(v)) => {
                    if !matches!(v.attr_type(), AttrType::Ss | AttrType::Ns | AttrType::Bs) {
                        return Err(invalid(format!(
                            "DELETE action with value is not supported for the type {}",
                            v.attr_type()
                        )));
                    }
                    let v = self.value(v);
                    delete.push(format!("{n} {v}"));
                }
                ("ADD", Some(AttributeValue::L(l))) => {
                    // Legacy ADD on a list appends to it.
                    let empty = self.value(AttributeValue::L(vec![]));
                    let v = self.value(AttributeValue::L(l));
                    set.push(format!(
                        "{n} = list_append(if_not_exists({n}, {empty}), {v})"
                    ));
                }
                ("ADD", Some(v)) => {
                    if !matches!(
                        v.attr_type(),
                        AttrType::N | AttrType::Ss | AttrType::Ns | AttrType::Bs
                    ) {
                        return Err(invalid(format!(
                            "ADD action is not supported for the type {}",
                            v.attr_type()
                        )));
                    }
                    let v = self.value(v);
                    add.push(format!("{n} {v}"));
                }
                ("PUT" | "ADD", None) => {
                    return Err(invalid(
                        "Only DELETE action is allowed when no attribute value is specified",
                    ));
                }
                (other, _) => {
                    return Err(ExprError(format!(
                        "1 validation error detected: Value '{other}' at 'attributeUpdates.{attr}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
                    )));
                }
            }
        }
        let expr = crate::update::render_clauses(set, remove, add, delete);
        Ok((!expr.is_empty()).then_some(expr))
    }
}
