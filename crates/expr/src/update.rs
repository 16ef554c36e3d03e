//! UpdateExpression: SET (with `+`, `-`, `if_not_exists`, `list_append`),
//! REMOVE, ADD and DELETE. Every right-hand side is computed from the item
//! as it was before the update, then the actions are applied; the parser
//! has already rejected overlapping paths, so the order cannot matter.

use crate::ast::{Path, PathElem};
use crate::paths;
use dynaraft_model::{AttributeValue, Item};

#[derive(Debug, Clone, PartialEq)]
pub enum UOperand {
    Path(Path),
    Value(AttributeValue),
    IfNotExists(Path, Box<UOperand>),
    ListAppend(Box<UOperand>, Box<UOperand>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    Operand(UOperand),
    Plus(UOperand, UOperand),
    Minus(UOperand, UOperand),
}

/// An UpdateExpression from its clauses' actions, each already rendered
/// (`#a = :v`, `#b`, ...), in DynamoDB's clause order; empty lists are left
/// out, and no action at all gives an empty string.
pub fn render_clauses(
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    delete: Vec<String>,
) -> String {
    let mut clauses = Vec::new();
    for (word, actions) in [
        ("SET", set),
        ("REMOVE", remove),
        ("ADD", add),
        ("DELETE", delete),
    ] {
        if !actions.is_empty() {
            clauses.push(format!("{word} {}", actions.join(", ")));
        }
    }
    clauses.join(" ")
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateExpr {
    pub set: Vec<(Path, SetValue)>,
    pub remove: Vec<Path>,
    pub add: Vec<(Path, AttributeValue)>,
    pub delete: Vec<(Path, AttributeValue)>,
}

/// A run-time failure of an update; each is a `ValidationException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("The provided expression refers to an attribute that does not exist in the item")]
    MissingAttribute,
    #[error("An operand in the update expression has an incorrect data type")]
    IncorrectType,
    #[error("The document path provided in the update expression is invalid for update")]
    InvalidPath,
    #[error("{0}")]
    Number(String),
}

/// DynamoDB's error for an arithmetic result it cannot store: a result
/// needing more than 38 significant digits is reported as an overflow too
/// (ScyllaDB's test_update_expression_plus_imprecise records this).
fn arithmetic_error(e: dynaraft_model::number::NumberError) -> UpdateError {
    use dynaraft_model::number::NumberError;
    match e {
        NumberError::Precision => UpdateError::Number(NumberError::Overflow.to_string()),
        e => UpdateError::Number(e.to_string()),
    }
}

impl UpdateExpr {
    /// Every path the update writes or removes.
    pub fn targets(&self) -> impl Iterator<Item = &Path> {
        self.set
            .iter()
            .map(|(p, _)| p)
            .chain(self.remove.iter())
            .chain(self.add.iter().map(|(p, _)| p))
            .chain(self.delete.iter().map(|(p, _)| p))
    }

    /// Applies the update to `item` (an existing item).
    pub fn apply(&self, item: &mut Item) -> Result<(), UpdateError> {
        self.apply_to(item, true)
    }

    /// Applies the update to `item`, which is only the key when the item
    /// did not exist (`existed` false). DynamoDB lets a REMOVE under a
    /// missing parent pass on a missing item, and refuses it on an
    /// existing one.
    pub fn apply_to(&self, item: &mut Item, existed: bool) -> Result<(), UpdateError> {
        let old = item.clone();
        let mut writes: Vec<(&Path, Option<AttributeValue>)> = Vec::new();
        for (p, v) in &self.set {
            writes.push((p, Some(set_value(v, &old)?)));
        }
        for (p, v) in &self.add {
            writes.push((p, Some(add(paths::get(&old, p), v)?)));
        }
        for (p, v) in &self.delete {
            writes.push((p, delete(paths::get(&old, p), v)?));
        }
        // Writes past the end of a list append in index order, as in
        // DynamoDB (`SET a[84] = :x, a[17] = :y` appends y, then x); the
        // paths are disjoint, so the order matters for nothing else.
        writes.sort_by_key(|(p, _)| index_key(p));
        for (p, v) in writes {
            match v {
                Some(v) => paths::set(item, p, v).map_err(|_| UpdateError::InvalidPath)?,
                None => paths::remove(item, p).map_err(|_| UpdateError::InvalidPath)?,
            }
        }
        // Remove list elements from the highest index down, so that earlier
        // removals do not shift the positions of later ones.
        let mut removes: Vec<&Path> = self.remove.iter().collect();
        removes.sort_by_key(|p| std::cmp::Reverse(index_key(p)));
        for p in removes {
            if paths::remove(item, p).is_err() && existed {
                return Err(UpdateError::InvalidPath);
            }
        }
        Ok(())
    }
}

fn index_key(p: &Path) -> Option<usize> {
    match p.elems.last() {
        Some(PathElem::Index(i)) => Some(*i),
        _ => None,
    }
}

fn set_value(v: &SetValue, item: &Item) -> Result<AttributeValue, UpdateError> {
    match v {
        SetValue::Operand(o) => operand(o, item),
        SetValue::Plus(a, b) | SetValue::Minus(a, b) => {
            let (a, b) = (operand(a, item)?, operand(b, item)?);
            let (AttributeValue::N(a), AttributeValue::N(b)) = (a, b) else {
                return Err(UpdateError::IncorrectType);
            };
            let r = if matches!(v, SetValue::Plus(..)) {
                a.checked_add(&b)
            } else {
                a.checked_sub(&b)
            };
            r.map(AttributeValue::N).map_err(arithmetic_error)
        }
    }
}

fn operand(o: &UOperand, item: &Item) -> Result<AttributeValue, UpdateError> {
    match o {
        UOperand::Value(v) => Ok(v.clone()),
        UOperand::Path(p) => paths::get(item, p)
            .cloned()
            .ok_or(UpdateError::MissingAttribute),
        UOperand::IfNotExists(p, d) => match paths::get(item, p) {
            Some(v) => Ok(v.clone()),
            None => operand(d, item),
        },
        UOperand::ListAppend(a, b) => match (operand(a, item)?, operand(b, item)?) {
            (AttributeValue::L(mut a), AttributeValue::L(b)) => {
                a.extend(b);
                Ok(AttributeValue::L(a))
            }
            _ => Err(UpdateError::IncorrectType),
        },
    }
}

fn add(old: Option<&AttributeValue>, v: &AttributeValue) -> Result<AttributeValue, UpdateError> {
    fn union<T: PartialEq + Clone>(a: &[T], b: &[T]) -> Vec<T> {
        let mut out = a.to_vec();
        for x in b {
            if !out.contains(x) {
                out.push(x.clone());
            }
        }
        out
    }
    Ok(match (old, v) {
        (None, v) => v.clone(),
        (Some(AttributeValue::N(a)), AttributeValue::N(b)) => {
            AttributeValue::N(a.checked_add(b).map_err(arithmetic_error)?)
        }
        (Some(AttributeValue::Ss(a)), AttributeValue::Ss(b)) => AttributeValue::Ss(union(a, b)),
        (Some(AttributeValue::Ns(a)), AttributeValue::Ns(b)) => AttributeValue::Ns(union(a, b)),
        (Some(AttributeValue::Bs(a)), AttributeValue::Bs(b)) => AttributeValue::Bs(union(a, b)),
        _ => return Err(UpdateError::IncorrectType),
    })
}

/// Set difference; `None` when the set becomes empty (the attribute goes).
fn delete(
    old: Option<&AttributeValue>,
    v: &AttributeValue,
) -> Result<Option<AttributeValue>, UpdateError> {
    fn minus<T: PartialEq + Clone>(a: &[T], b: &[T]) -> Vec<T> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    }
    let r = match (old, v) {
        (None, _) => return Ok(None),
        (Some(AttributeValue::Ss(a)), AttributeValue::Ss(b)) => AttributeValue::Ss(minus(a, b)),
        (Some(AttributeValue::Ns(a)), AttributeValue::Ns(b)) => AttributeValue::Ns(minus(a, b)),
        (Some(AttributeValue::Bs(a)), AttributeValue::Bs(b)) => AttributeValue::Bs(minus(a, b)),
        _ => return Err(UpdateError::IncorrectType),
    };
    let empty = match &r {
        AttributeValue::Ss(v) => v.is_empty(),
        AttributeValue::Ns(v) => v.is_empty(),
        AttributeValue::Bs(v) => v.is_empty(),
        _ => false,
    };
    Ok(if empty { None } else { Some(r) })
}
