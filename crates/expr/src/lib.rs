//! The DynamoDB expression language: ConditionExpression, FilterExpression,
//! KeyConditionExpression, ProjectionExpression and UpdateExpression.
//!
//! Text is lexed ([`lexer`]), parsed into a typed AST ([`ast`]) with
//! `#name`/`:value` substitution done at parse time, validated statically
//! (reserved words, operand types, overlapping paths, key-condition shape),
//! and then evaluated against items ([`eval`], [`update`], [`projection`]).
//! Every error is a `ValidationException` with DynamoDB's wording.
//!
//! Pure: depends only on `dynaraft-model`; no I/O, no clock. Recursion is
//! bounded by [`MAX_NESTING_DEPTH`] and input by [`MAX_EXPRESSION_BYTES`],
//! so no client string can overflow the stack or burn unbounded CPU.

pub mod ast;
pub mod eval;
pub mod keycond;
pub mod legacy;
pub mod lexer;
pub mod parser;
pub mod partiql;
pub mod paths;
pub mod projection;
pub mod update;

use dynaraft_model::{AttributeValue, Item};
use std::collections::{BTreeMap, BTreeSet};

pub use ast::{Condition, Operand, Path, PathElem};
pub use keycond::{KeyCondition, RangeCondition};
pub use update::{UpdateError, UpdateExpr};

/// Longest expression string DynamoDB accepts, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest nesting of parentheses, NOTs and functions we parse: as many
/// as the operators DynamoDB allows ([`MAX_OPERATORS`]), so the operator
/// count is the limit a valid expression meets first.
pub const MAX_NESTING_DEPTH: usize = 300;
/// Most elements in one document path (DynamoDB nests at most 32 levels).
pub const MAX_PATH_DEPTH: usize = 32;
/// Most operands of an `IN` list.
pub const MAX_IN_OPERANDS: usize = 100;
/// Most operators or functions in one expression.
pub const MAX_OPERATORS: usize = 300;

/// Which parameter an expression came from; it prefixes every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprKind {
    Condition,
    Filter,
    KeyCondition,
    Projection,
    Update,
}

impl ExprKind {
    pub fn param(self) -> &'static str {
        match self {
            ExprKind::Condition => "ConditionExpression",
            ExprKind::Filter => "FilterExpression",
            ExprKind::KeyCondition => "KeyConditionExpression",
            ExprKind::Projection => "ProjectionExpression",
            ExprKind::Update => "UpdateExpression",
        }
    }
}

/// A `ValidationException` message, exactly as DynamoDB words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

impl ExprError {
    pub fn invalid(kind: ExprKind, detail: impl AsRef<str>) -> ExprError {
        ExprError(format!("Invalid {}: {}", kind.param(), detail.as_ref()))
    }
}

/// `ExpressionAttributeNames` and `ExpressionAttributeValues` of one request,
/// with a record of which were used, so unused ones can be reported.
#[derive(Debug, Default)]
pub struct Substitutions {
    names: BTreeMap<String, String>,
    values: Item,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
    /// Expressions' sizes and operator counts are not checked: they were
    /// checked where the request arrived (a state machine applying a
    /// logged write).
    unlimited: bool,
    /// Expressions the client never wrote (translations of legacy
    /// parameters, which have no such limits), exempt from them too.
    translations: BTreeSet<String>,
}

impl Substitutions {
    pub fn new(names: BTreeMap<String, String>, values: Item) -> Substitutions {
        Substitutions {
            names,
            values,
            ..Default::default()
        }
    }

    /// These substitutions with the request limits on expressions lifted
    /// (see the `unlimited` field).
    pub fn unlimited(mut self) -> Substitutions {
        self.unlimited = true;
        self
    }

    /// These substitutions, with `src` marked as a translation of legacy
    /// parameters (exempt from the limits on expressions).
    pub fn with_translation(mut self, src: impl Into<String>) -> Substitutions {
        self.translations.insert(src.into());
        self
    }

    /// Whether the limits on expressions apply to `src`.
    pub(crate) fn limits(&self, src: &str) -> bool {
        !self.unlimited && !self.translations.contains(src)
    }

    pub fn name(&mut self, kind: ExprKind, token: &str) -> Result<String, ExprError> {
        match self.names.get(token) {
            Some(n) => {
                self.used_names.insert(token.to_string());
                Ok(n.clone())
            }
            None => Err(ExprError::invalid(
                kind,
                format!(
                    "An expression attribute name used in the document path is not defined; attribute name: {token}"
                ),
            )),
        }
    }

    pub fn value(&mut self, kind: ExprKind, token: &str) -> Result<AttributeValue, ExprError> {
        match self.values.get(token) {
            Some(v) => {
                self.used_values.insert(token.to_string());
                Ok(v.clone())
            }
            None => Err(ExprError::invalid(
                kind,
                format!(
                    "An expression attribute value used in expression is not defined; attribute value: {token}"
                ),
            )),
        }
    }

    /// After every expression of a request is parsed: DynamoDB rejects
    /// names and values that no expression used.
    pub fn check_unused(&self) -> Result<(), ExprError> {
        let unused_names: Vec<&str> = self
            .names
            .keys()
            .filter(|k| !self.used_names.contains(*k))
            .map(|s| s.as_str())
            .collect();
        if !unused_names.is_empty() {
            return Err(ExprError(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                unused_names.join(", ")
            )));
        }
        let unused_values: Vec<&str> = self
            .values
            .keys()
            .filter(|k| !self.used_values.contains(*k))
            .map(|s| s.as_str())
            .collect();
        if !unused_values.is_empty() {
            return Err(ExprError(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                unused_values.join(", ")
            )));
        }
        Ok(())
    }
}

/// True when `word` is on DynamoDB's reserved-word list (case-insensitive).
/// Binary search over the sorted list, comparing without allocating.
pub fn is_reserved(word: &str) -> bool {
    static WORDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let words = WORDS.get_or_init(|| {
        let mut w: Vec<&'static str> = include_str!("reserved_words.txt")
            .split_ascii_whitespace()
            .collect();
        w.sort_unstable();
        w
    });
    let upper = |b: &u8| b.to_ascii_uppercase();
    words
        .binary_search_by(|w| w.bytes().cmp(word.bytes().map(|b| upper(&b))))
        .is_ok()
}

pub fn parse_condition(
    src: &str,
    kind: ExprKind,
    subs: &mut Substitutions,
) -> Result<Condition, ExprError> {
    parser::Parser::new(src, kind, subs)?.condition_expression()
}

pub fn parse_update(src: &str, subs: &mut Substitutions) -> Result<UpdateExpr, ExprError> {
    parser::Parser::new(src, ExprKind::Update, subs)?.update_expression()
}

pub fn parse_projection(src: &str, subs: &mut Substitutions) -> Result<Vec<Path>, ExprError> {
    parser::Parser::new(src, ExprKind::Projection, subs)?.projection_expression()
}

pub fn parse_key_condition(
    src: &str,
    subs: &mut Substitutions,
    schema: &dynaraft_model::KeySchema,
) -> Result<KeyCondition, ExprError> {
    let cond = parse_condition(src, ExprKind::KeyCondition, subs)?;
    keycond::from_condition(cond, schema)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reserved_words_are_case_insensitive() {
        for w in ["ABORT", "abort", "Status", "zone", "name", "FLATTERN"] {
            assert!(super::is_reserved(w), "{w}");
        }
        for w in ["Nom", "abortx", "", "statuses", "_name"] {
            assert!(!super::is_reserved(w), "{w}");
        }
    }
}
