//! Evaluation of conditions and filters against an item. A condition never
//! fails at run time: an operand that does not resolve, or operands of
//! different types, make the comparison false, as in DynamoDB.

use crate::ast::{CmpOp, Condition, Operand};
use crate::paths;
use dynaraft_model::{AttributeValue, Item, Number};
use std::borrow::Cow;
use std::cmp::Ordering;

impl Condition {
    /// Evaluates against `item`; a missing item behaves as an empty one.
    pub fn eval(&self, item: Option<&Item>) -> bool {
        let empty = Item::new();
        eval(self, item.unwrap_or(&empty))
    }
}

fn eval(c: &Condition, item: &Item) -> bool {
    match c {
        Condition::And(a, b) => eval(a, item) && eval(b, item),
        Condition::Or(a, b) => eval(a, item) || eval(b, item),
        Condition::Not(a) => !eval(a, item),
        Condition::Cmp(a, op, b) => {
            let (a, b) = (resolve(a, item), resolve(b, item));
            match (a, b, op) {
                (Some(a), Some(b), CmpOp::Eq) => values_equal(&a, &b),
                // `<>` is the negation of `=`: true when either side is
                // missing, both sides included.
                (Some(a), Some(b), CmpOp::Ne) => !values_equal(&a, &b),
                (_, _, CmpOp::Ne) => true,
                (Some(a), Some(b), op) => match compare(&a, &b) {
                    Some(o) => match op {
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Le => o != Ordering::Greater,
                        CmpOp::Gt => o == Ordering::Greater,
                        CmpOp::Ge => o != Ordering::Less,
                        CmpOp::Eq | CmpOp::Ne => false,
                    },
                    None => false,
                },
                _ => false,
            }
        }
        Condition::Between(v, lo, hi) => {
            match (resolve(v, item), resolve(lo, item), resolve(hi, item)) {
                (Some(v), Some(lo), Some(hi)) => {
                    matches!(compare(&v, &lo), Some(Ordering::Greater | Ordering::Equal))
                        && matches!(compare(&v, &hi), Some(Ordering::Less | Ordering::Equal))
                }
                _ => false,
            }
        }
        Condition::In(v, list) => match resolve(v, item) {
            Some(v) => list
                .iter()
                .any(|o| resolve(o, item).is_some_and(|x| values_equal(&v, &x))),
            None => false,
        },
        Condition::AttributeExists(p) => paths::get(item, p).is_some(),
        Condition::AttributeNotExists(p) => paths::get(item, p).is_none(),
        Condition::AttributeType(v, t) => match (resolve(v, item), resolve(t, item)) {
            (Some(v), Some(t)) => match t.as_ref() {
                AttributeValue::S(s) => v.attr_type().descriptor() == s,
                _ => false,
            },
            _ => false,
        },
        Condition::BeginsWith(a, b) => match (resolve(a, item), resolve(b, item)) {
            (Some(a), Some(b)) => match (a.as_ref(), b.as_ref()) {
                (AttributeValue::S(a), AttributeValue::S(b)) => a.starts_with(b.as_str()),
                (AttributeValue::B(a), AttributeValue::B(b)) => a.starts_with(b),
                _ => false,
            },
            _ => false,
        },
        Condition::Contains(a, b) => match (resolve(a, item), resolve(b, item)) {
            (Some(a), Some(b)) => contains(&a, &b),
            _ => false,
        },
    }
}

fn contains(hay: &AttributeValue, needle: &AttributeValue) -> bool {
    match (hay, needle) {
        (AttributeValue::S(h), AttributeValue::S(n)) => h.contains(n.as_str()),
        (AttributeValue::B(h), AttributeValue::B(n)) => {
            n.is_empty() || h.windows(n.len()).any(|w| w == n.as_slice())
        }
        (AttributeValue::Ss(h), AttributeValue::S(n)) => h.contains(n),
        (AttributeValue::Ns(h), AttributeValue::N(n)) => h.contains(n),
        (AttributeValue::Bs(h), AttributeValue::B(n)) => h.contains(n),
        (AttributeValue::L(h), n) => h.iter().any(|x| values_equal(x, n)),
        _ => false,
    }
}

/// The value of an operand, or `None` when its path does not resolve.
pub fn resolve<'a>(o: &'a Operand, item: &'a Item) -> Option<Cow<'a, AttributeValue>> {
    match o {
        Operand::Value(v) => Some(Cow::Borrowed(v)),
        Operand::Path(p) => paths::get(item, p).map(Cow::Borrowed),
        Operand::Size(p) => {
            let n = size_of(paths::get(item, p)?)?;
            Some(Cow::Owned(AttributeValue::N(Number::from_i64(n as i64))))
        }
    }
}

/// What `size()` answers for a value: bytes of a string or binary, members
/// of a set, list or map; `None` for types without a size.
pub fn size_of(v: &AttributeValue) -> Option<usize> {
    Some(match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Ss(v) => v.len(),
        AttributeValue::Ns(v) => v.len(),
        AttributeValue::Bs(v) => v.len(),
        AttributeValue::L(v) => v.len(),
        AttributeValue::M(v) => v.len(),
        _ => return None,
    })
}

/// Ordering of two scalars of the same type (S, N or B); `None` otherwise.
pub fn compare(a: &AttributeValue, b: &AttributeValue) -> Option<Ordering> {
    match (a, b) {
        (AttributeValue::S(a), AttributeValue::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (AttributeValue::N(a), AttributeValue::N(b)) => Some(a.cmp(b)),
        (AttributeValue::B(a), AttributeValue::B(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Deep equality, with sets compared as sets.
pub fn values_equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    fn same_set<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
        let mut x = a.to_vec();
        let mut y = b.to_vec();
        x.sort();
        y.sort();
        x == y
    }
    match (a, b) {
        (AttributeValue::Ss(a), AttributeValue::Ss(b)) => same_set(a, b),
        (AttributeValue::Ns(a), AttributeValue::Ns(b)) => same_set(a, b),
        (AttributeValue::Bs(a), AttributeValue::Bs(b)) => same_set(a, b),
        (AttributeValue::L(a), AttributeValue::L(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_equal(x, y))
        }
        (AttributeValue::M(a), AttributeValue::M(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}
