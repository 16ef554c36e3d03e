//! KeyConditionExpression: an equality on the partition key and at most one
//! condition on the sort key, checked against the key schema.
//!
//! A multi-attribute key (a global index's) needs an equality on every
//! partition-key attribute; its sort-key attributes are conditioned left to
//! right without gaps, every one an equality but the last, which may be any
//! sort-key condition. The order of the clauses in the expression does not
//! matter.

use crate::ast::{CmpOp, Condition, Operand, Path, PathElem};
use crate::{ExprError, ExprKind};
use dynaraft_model::{AttributeValue, KeyAttr, KeySchema};

#[derive(Debug, Clone, PartialEq)]
pub enum RangeCondition {
    Eq(AttributeValue),
    Lt(AttributeValue),
    Le(AttributeValue),
    Gt(AttributeValue),
    Ge(AttributeValue),
    Between(AttributeValue, AttributeValue),
    BeginsWith(AttributeValue),
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyCondition {
    /// The partition-key values, in key-schema order.
    pub hash: Vec<AttributeValue>,
    /// Values the leading sort-key attributes equal, in key-schema order.
    pub sort_eq: Vec<AttributeValue>,
    /// The condition on the sort-key attribute after those, if any.
    pub range: Option<RangeCondition>,
}

fn err(msg: impl Into<String>) -> ExprError {
    ExprError(msg.into())
}

fn flatten(c: Condition, out: &mut Vec<Condition>) -> Result<(), ExprError> {
    match c {
        Condition::And(a, b) => {
            flatten(*a, out)?;
            flatten(*b, out)
        }
        Condition::Or(..) => Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "Invalid operator used in KeyConditionExpression: OR",
        )),
        Condition::Not(..) => Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "Invalid operator used in KeyConditionExpression: NOT",
        )),
        other => {
            out.push(other);
            Ok(())
        }
    }
}

/// One key condition split into (attribute, operator, values).
struct Part {
    attr: String,
    range: RangeCondition,
}

fn key_attr(p: &Path) -> Result<String, ExprError> {
    match p.elems.as_slice() {
        [PathElem::Attr(a)] => Ok(a.clone()),
        _ => Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "KeyConditionExpressions cannot have conditions on nested attributes",
        )),
    }
}

fn value(o: Operand) -> Result<AttributeValue, ExprError> {
    match o {
        Operand::Value(v) => Ok(v),
        _ => Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        )),
    }
}

fn part(c: Condition) -> Result<Part, ExprError> {
    match c {
        Condition::Cmp(a, op, b) => {
            let (path, v, op) = match (a, b) {
                (Operand::Path(p), v) => (p, v, op),
                (v @ Operand::Value(_), Operand::Path(p)) => (p, v, flip(op)),
                _ => return Err(err("Query key condition not supported")),
            };
            let v = value(v)?;
            let range = match op {
                CmpOp::Eq => RangeCondition::Eq(v),
                CmpOp::Lt => RangeCondition::Lt(v),
                CmpOp::Le => RangeCondition::Le(v),
                CmpOp::Gt => RangeCondition::Gt(v),
                CmpOp::Ge => RangeCondition::Ge(v),
                CmpOp::Ne => {
                    return Err(ExprError::invalid(
                        ExprKind::KeyCondition,
                        "Unsupported operator in KeyConditionExpression: <>",
                    ));
                }
            };
            Ok(Part {
                attr: key_attr(&path)?,
                range,
            })
        }
        Condition::Between(Operand::Path(p), lo, hi) => Ok(Part {
            attr: key_attr(&p)?,
            range: RangeCondition::Between(value(lo)?, value(hi)?),
        }),
        Condition::BeginsWith(Operand::Path(p), v) => Ok(Part {
            attr: key_attr(&p)?,
            range: RangeCondition::BeginsWith(value(v)?),
        }),
        Condition::In(..) => Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "Invalid operator used in KeyConditionExpression: IN",
        )),
        Condition::AttributeExists(_)
        | Condition::AttributeNotExists(_)
        | Condition::AttributeType(..)
        | Condition::Contains(..) => Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "Invalid operator used in KeyConditionExpression: function",
        )),
        _ => Err(err("Query key condition not supported")),
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        o => o,
    }
}

pub fn from_condition(c: Condition, schema: &KeySchema) -> Result<KeyCondition, ExprError> {
    let mut conds = Vec::new();
    flatten(c, &mut conds)?;
    let multi = schema.is_multi_attribute();
    let most = if multi { schema.key_attrs().count() } else { 2 };
    if conds.len() > most {
        return Err(ExprError::invalid(
            ExprKind::KeyCondition,
            if multi {
                format!(
                    "The expression contains too many conditions; Conditions can be of length 1 to {most} only"
                )
            } else {
                "The expression contains too many conditions; Conditions can be of length 1 or 2 only".into()
            },
        ));
    }
    let mut hash: Vec<Option<RangeCondition>> = vec![None; schema.hash.len()];
    let mut range: Vec<Option<RangeCondition>> = vec![None; schema.range.len()];
    let mut off_key = false;
    for c in conds {
        let p = part(c)?;
        let slot = match schema.hash.iter().position(|k| k.name == p.attr) {
            Some(i) => hash.get_mut(i),
            None => match schema.range.iter().position(|k| k.name == p.attr) {
                Some(j) => range.get_mut(j),
                None => {
                    off_key = true;
                    continue;
                }
            },
        };
        let Some(slot) = slot else {
            return Err(err("Query key condition not supported"));
        };
        if slot.is_some() {
            return Err(err(
                "KeyConditionExpressions must only contain one condition per key",
            ));
        }
        *slot = Some(p.range);
    }
    if off_key {
        // A condition on an attribute outside the key: DynamoDB names the
        // key attribute it displaced, whatever the clauses' order, or (the
        // key being complete without it) does not support the condition.
        return Err(err(match missing(schema, &hash, &range) {
            Some(name) => format!("Query condition missed key schema element: {name}"),
            None => "Query key condition not supported".to_string(),
        }));
    }
    let mut hash_values = Vec::with_capacity(hash.len());
    for (ka, c) in schema.hash.iter().zip(hash) {
        match (c, multi) {
            (Some(RangeCondition::Eq(v)), _) => hash_values.push((ka, v)),
            (None, false) => {
                return Err(err(format!(
                    "Query condition missed key schema element: {}",
                    ka.name
                )));
            }
            (Some(_), false) => return Err(err("Query key condition not supported")),
            (None, true) => {
                return Err(err(format!(
                    "Query condition missed key schema element: {}: every HASH key attribute of a multi-attribute key needs an equality condition",
                    ka.name
                )));
            }
            (Some(_), true) => {
                return Err(err(format!(
                    "Query key condition not supported: HASH key attribute {} of a multi-attribute key needs an equality condition",
                    ka.name
                )));
            }
        }
    }
    let (sort_eq, last) = sort_conditions(schema, range)?;
    for (ka, v) in &hash_values {
        check_type(v, ka.ty.attr_type())?;
    }
    for (ka, v) in &sort_eq {
        check_type(v, ka.ty.attr_type())?;
    }
    if let Some((ka, r)) = &last {
        check_range_types(r, ka.ty.attr_type())?;
    }
    Ok(KeyCondition {
        hash: hash_values.into_iter().map(|(_, v)| v).collect(),
        sort_eq: sort_eq.into_iter().map(|(_, v)| v).collect(),
        range: last.map(|(_, r)| r),
    })
}

type SortConditions<'a> = (
    Vec<(&'a KeyAttr, AttributeValue)>,
    Option<(&'a KeyAttr, RangeCondition)>,
);

/// The sort-key conditions by attribute (in key-schema order) as the
/// equalities of a leading run of attributes and the condition on the next.
fn sort_conditions(
    schema: &KeySchema,
    range: Vec<Option<RangeCondition>>,
) -> Result<SortConditions<'_>, ExprError> {
    let mut eq = Vec::new();
    let mut last: Option<(&KeyAttr, RangeCondition)> = None;
    let mut gap: Option<&KeyAttr> = None;
    for (ka, c) in schema.range.iter().zip(range) {
        let Some(c) = c else {
            gap = gap.or(Some(ka));
            continue;
        };
        let before = gap.or(last.as_ref().map(|(k, _)| *k));
        if let Some(before) = before {
            return Err(err(format!(
                "Query key condition not supported: RANGE key attributes are conditioned left to right; {} has a condition, so {} needs an equality condition",
                ka.name, before.name
            )));
        }
        match c {
            RangeCondition::Eq(v) => eq.push((ka, v)),
            other => last = Some((ka, other)),
        }
    }
    Ok((eq, last))
}

fn check_range_types(r: &RangeCondition, t: dynaraft_model::AttrType) -> Result<(), ExprError> {
    match r {
        RangeCondition::Between(a, b) => {
            check_type(a, t)?;
            check_type(b, t)?;
            if crate::eval::compare(a, b) == Some(std::cmp::Ordering::Greater) {
                return Err(ExprError::invalid(
                    ExprKind::KeyCondition,
                    "The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                ));
            }
            Ok(())
        }
        RangeCondition::BeginsWith(v) => {
            if matches!(v, AttributeValue::N(_)) || t == dynaraft_model::AttrType::N {
                return Err(crate::parser::operand_type_error(
                    ExprKind::KeyCondition,
                    "begins_with",
                    v,
                ));
            }
            check_type(v, t)
        }
        RangeCondition::Eq(v)
        | RangeCondition::Lt(v)
        | RangeCondition::Le(v)
        | RangeCondition::Gt(v)
        | RangeCondition::Ge(v) => check_type(v, t),
    }
}

/// The key attribute a condition on a non-key attribute displaced: the
/// first partition-key attribute without a condition, else the first such
/// sort-key attribute; `None` when every key attribute has one.
fn missing(
    schema: &KeySchema,
    hash: &[Option<RangeCondition>],
    range: &[Option<RangeCondition>],
) -> Option<String> {
    let unset = |attrs: &[KeyAttr], conds: &[Option<RangeCondition>]| {
        attrs
            .iter()
            .zip(conds)
            .find(|(_, c)| c.is_none())
            .map(|(ka, _)| ka.name.clone())
    };
    unset(&schema.hash, hash).or_else(|| unset(&schema.range, range))
}

fn check_type(v: &AttributeValue, t: dynaraft_model::AttrType) -> Result<(), ExprError> {
    if v.attr_type() != t {
        return Err(err(
            "One or more parameter values were invalid: Condition parameter type does not match schema type",
        ));
    }
    Ok(())
}
