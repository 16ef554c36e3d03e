//! Document paths: overlap checks, and reading, writing and removing the
//! value at a path inside an item.

use crate::ast::{Path, PathElem};
use crate::{ExprError, ExprKind};
use dynaraft_model::{AttributeValue, Item};

/// DynamoDB rejects two paths in one projection or update when one is a
/// prefix of the other (overlap) or when they index the same parent both as
/// a map and as a list (conflict).
pub fn check_disjoint(kind: ExprKind, paths: &[Path]) -> Result<(), ExprError> {
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[..i] {
            let mut conflict = false;
            let mut prefix = true;
            for (x, y) in b.elems.iter().zip(a.elems.iter()) {
                if x == y {
                    continue;
                }
                prefix = false;
                if matches!(
                    (x, y),
                    (PathElem::Attr(_), PathElem::Index(_))
                        | (PathElem::Index(_), PathElem::Attr(_))
                ) {
                    conflict = true;
                }
                break;
            }
            if prefix {
                return Err(ExprError::invalid(
                    kind,
                    format!(
                        "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: {b}, path two: {a}"
                    ),
                ));
            }
            if conflict {
                return Err(ExprError::invalid(
                    kind,
                    format!(
                        "Two document paths conflict with each other; must remove or rewrite one of these paths; path one: {b}, path two: {a}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The value at `path`, if every step exists with the right container type.
pub fn get<'a>(item: &'a Item, path: &Path) -> Option<&'a AttributeValue> {
    let mut elems = path.elems.iter();
    let mut cur = match elems.next()? {
        PathElem::Attr(a) => item.get(a)?,
        PathElem::Index(_) => return None,
    };
    for e in elems {
        cur = match (e, cur) {
            (PathElem::Attr(a), AttributeValue::M(m)) => m.get(a)?,
            (PathElem::Index(i), AttributeValue::L(l)) => l.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidPath;

/// Writes `value` at `path`. The parent must exist; a list index past the
/// end appends. Fails when a step is missing or of the wrong type.
pub fn set(item: &mut Item, path: &Path, value: AttributeValue) -> Result<(), InvalidPath> {
    let (last, parents) = path.elems.split_last().ok_or(InvalidPath)?;
    if parents.is_empty() {
        return match last {
            PathElem::Attr(a) => {
                item.insert(a.clone(), value);
                Ok(())
            }
            PathElem::Index(_) => Err(InvalidPath),
        };
    }
    let parent = get_mut(item, parents).ok_or(InvalidPath)?;
    match (last, parent) {
        (PathElem::Attr(a), AttributeValue::M(m)) => {
            m.insert(a.clone(), value);
            Ok(())
        }
        (PathElem::Index(i), AttributeValue::L(l)) => {
            if *i < l.len() {
                l[*i] = value;
            } else {
                l.push(value);
            }
            Ok(())
        }
        _ => Err(InvalidPath),
    }
}

/// Removes the value at `path`. A missing attribute, map key or list
/// element is not an error, but a missing or wrongly typed parent is, as
/// in DynamoDB (`REMOVE a.b` where `a` is a string or absent).
pub fn remove(item: &mut Item, path: &Path) -> Result<(), InvalidPath> {
    let (last, parents) = path.elems.split_last().ok_or(InvalidPath)?;
    if parents.is_empty() {
        return match last {
            PathElem::Attr(a) => {
                item.remove(a);
                Ok(())
            }
            PathElem::Index(_) => Err(InvalidPath),
        };
    }
    match (last, get_mut(item, parents)) {
        (PathElem::Attr(a), Some(AttributeValue::M(m))) => {
            m.remove(a);
            Ok(())
        }
        (PathElem::Index(i), Some(AttributeValue::L(l))) => {
            if *i < l.len() {
                l.remove(*i);
            }
            Ok(())
        }
        _ => Err(InvalidPath),
    }
}

fn get_mut<'a>(item: &'a mut Item, elems: &[PathElem]) -> Option<&'a mut AttributeValue> {
    let (first, rest) = elems.split_first()?;
    let mut cur = match first {
        PathElem::Attr(a) => item.get_mut(a)?,
        PathElem::Index(_) => return None,
    };
    for e in rest {
        cur = match (e, cur) {
            (PathElem::Attr(a), AttributeValue::M(m)) => m.get_mut(a)?,
            (PathElem::Index(i), AttributeValue::L(l)) => l.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}
