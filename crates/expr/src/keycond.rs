//! KeyConditionExpression: an equality on the partition key and at most one
//! condition on the sort key, checked against the key schema.

use crate::ast::{CmpOp, Condition, Operand, Path, PathElem};
use crate::{ExprError, ExprKind};
use dynaraft_model::{AttributeValue, KeySchema};

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
    pub hash: AttributeValue,
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
    if conds.len() > 2 {
        return Err(ExprError::invalid(
            ExprKind::KeyCondition,
            "The expression contains too many conditions; Conditions can be of length 1 or 2 only",
        ));
    }
    let mut hash = None;
    let mut range = None;
    for c in conds {
        let p = part(c)?;
        if p.attr == schema.hash.name {
            if hash.is_some() {
                return Err(err(
                    "KeyConditionExpressions must only contain one condition per key",
                ));
            }
            match p.range {
                RangeCondition::Eq(v) => hash = Some(v),
                _ => return Err(err("Query key condition not supported")),
            }
        } else if schema.range.as_ref().is_some_and(|r| r.name == p.attr) {
            if range.is_some() {
                return Err(err(
                    "KeyConditionExpressions must only contain one condition per key",
                ));
            }
            range = Some(p.range);
        } else {
            return Err(err(format!(
                "Query condition missed key schema element: {}",
                missing(schema, &hash)
            )));
        }
    }
    let Some(hash) = hash else {
        return Err(err(format!(
            "Query condition missed key schema element: {}",
            schema.hash.name
        )));
    };
    check_type(&hash, schema.hash.ty.attr_type())?;
    if let (Some(r), Some(ka)) = (&range, &schema.range) {
        let t = ka.ty.attr_type();
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
            }
            RangeCondition::BeginsWith(v) => {
                if matches!(v, AttributeValue::N(_)) || t == dynaraft_model::AttrType::N {
                    return Err(crate::parser::operand_type_error(
                        ExprKind::KeyCondition,
                        "begins_with",
                        v,
                    ));
                }
                check_type(v, t)?;
            }
            RangeCondition::Eq(v)
            | RangeCondition::Lt(v)
            | RangeCondition::Le(v)
            | RangeCondition::Gt(v)
            | RangeCondition::Ge(v) => check_type(v, t)?,
        }
    }
    Ok(KeyCondition { hash, range })
}

/// The key attribute a condition on a non-key attribute displaced.
fn missing(schema: &KeySchema, hash: &Option<AttributeValue>) -> String {
    if hash.is_none() {
        schema.hash.name.clone()
    } else {
        schema
            .range
            .as_ref()
            .map_or(schema.hash.name.clone(), |r| r.name.clone())
    }
}

fn check_type(v: &AttributeValue, t: dynaraft_model::AttrType) -> Result<(), ExprError> {
    if v.attr_type() != t {
        return Err(err(
            "One or more parameter values were invalid: Condition parameter type does not match schema type",
        ));
    }
    Ok(())
}
