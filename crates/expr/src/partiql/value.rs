//! PartiQL literals as DynamoDB attribute values (their JSON form).

use super::{Expr, PartiqlError};
use dynaraft_model::number::Number;
use serde_json::{Map, Value, json};

/// The attribute value (as DynamoDB JSON) of the literal `e`, with `?`
/// bound from `params`; `None` if `e` is not a value (a path, a condition).
/// A number that breaks DynamoDB's rules names where it sits in the value:
/// `... under root.m[1]`.
pub fn attribute_json(e: &Expr, params: &[Value]) -> Result<Option<Value>, PartiqlError> {
    convert(e, params, "root")
}

fn convert(e: &Expr, params: &[Value], at: &str) -> Result<Option<Value>, PartiqlError> {
    Ok(Some(match e {
        Expr::Str(s) => json!({ "S": s }),
        Expr::Num(n) => json!({ "N": number(n, at)? }),
        Expr::Bool(b) => json!({ "BOOL": b }),
        Expr::Null => json!({ "NULL": true }),
        Expr::Param(i) => params.get(*i).cloned().ok_or_else(|| {
            PartiqlError("Number of parameters in request and statement don't match.".into())
        })?,
        Expr::Map(members) => {
            let mut m = Map::with_capacity(members.len());
            for (k, v) in members {
                let inner = convert(v, params, &format!("{at}.{k}"))?.ok_or_else(not_value)?;
                m.insert(k.clone(), inner);
            }
            json!({ "M": m })
        }
        Expr::List(items) => {
            let mut l = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                l.push(convert(v, params, &format!("{at}[{i}]"))?.ok_or_else(not_value)?);
            }
            json!({ "L": l })
        }
        Expr::Bag(items) => bag(items, at)?,
        _ => return Ok(None),
    }))
}

fn not_value() -> PartiqlError {
    PartiqlError::syntax("Expected a literal value")
}

/// A number literal, checked against DynamoDB's range and precision.
fn number(n: &str, at: &str) -> Result<String, PartiqlError> {
    Number::parse(n)
        .map(|_| n.to_string())
        .map_err(|e| PartiqlError(format!("{e} under {at}")))
}

/// `<<...>>`: a string set or a number set. Parameters and other kinds
/// cannot be members, as in DynamoDB.
fn bag(items: &[Expr], at: &str) -> Result<Value, PartiqlError> {
    let unsupported = || PartiqlError("Unsupported data type in Bag".into());
    if items.iter().all(|e| matches!(e, Expr::Str(_))) && !items.is_empty() {
        let ss: Vec<&String> = items
            .iter()
            .filter_map(|e| match e {
                Expr::Str(s) => Some(s),
                _ => None,
            })
            .collect();
        return Ok(json!({ "SS": ss }));
    }
    if items.iter().all(|e| matches!(e, Expr::Num(_))) && !items.is_empty() {
        let mut ns = Vec::with_capacity(items.len());
        for (i, e) in items.iter().enumerate() {
            if let Expr::Num(n) = e {
                ns.push(number(n, &format!("{at}[{i}]"))?);
            }
        }
        return Ok(json!({ "NS": ns }));
    }
    Err(unsupported())
}
