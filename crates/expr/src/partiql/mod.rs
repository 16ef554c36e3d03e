//! PartiQL for DynamoDB: the statements ExecuteStatement,
//! BatchExecuteStatement and ExecuteTransaction carry.
//!
//! Text is lexed ([`lexer`]) and parsed ([`parser`]) into a [`Statement`];
//! nothing here knows tables or runs anything. The API layer plans a
//! statement onto the JSON operations (GetItem, Query, Scan, PutItem,
//! UpdateItem, DeleteItem, the transactions) by rendering its conditions as
//! DynamoDB expressions, so conditions, capacity and streams behave exactly
//! as they do for those operations.
//!
//! The subset is DynamoDB's: `SELECT`, `INSERT ... VALUE`, `UPDATE ... SET |
//! REMOVE`, `DELETE`, and `EXISTS(SELECT ...)` inside transactions;
//! literals of every DynamoDB type (`'text'`, numbers, `TRUE`, `NULL`,
//! `{'k': v}`, `[v]`, `<<v>>`) and `?` parameters. Syntax errors carry
//! DynamoDB's envelope, `Statement wasn't well formed, can't be processed:`
//! and its detail words.
//!
//! Pure: depends only on `dynaraft-model` and serde_json; input is bounded
//! by [`MAX_STATEMENT_BYTES`] and nesting by [`crate::MAX_NESTING_DEPTH`].

pub mod lexer;
pub mod parser;
mod value;

pub use parser::parse;
pub use value::attribute_json;

pub use crate::ast::CmpOp;
use crate::ast::{Path, PathElem};

/// Longest statement DynamoDB accepts, in characters.
pub const MAX_STATEMENT_BYTES: usize = 8192;

/// Prefix of every syntax error, as DynamoDB words it.
pub const NOT_WELL_FORMED: &str = "Statement wasn't well formed, can't be processed: ";

/// A ValidationException message for a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PartiqlError(pub String);

impl PartiqlError {
    /// A syntax error with DynamoDB's envelope and `detail`.
    pub fn syntax(detail: &str) -> PartiqlError {
        PartiqlError(format!("{NOT_WELL_FORMED}{detail}"))
    }
}

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select(Select),
    /// `EXISTS(SELECT ...)`: a condition check, only inside a transaction.
    Exists(Select),
    Insert {
        target: Target,
        value: Expr,
    },
    Update {
        target: Target,
        actions: Vec<Action>,
        filter: Expr,
        returning: Option<Returning>,
    },
    Delete {
        target: Target,
        filter: Expr,
        returning: Option<Returning>,
    },
}

impl Statement {
    /// Whether the statement only reads (SELECT).
    pub fn is_read(&self) -> bool {
        matches!(self, Statement::Select(_))
    }
}

/// A table, or one of its indexes (`"Table"."Index"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub table: String,
    pub index: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// `None` for `*`.
    pub projection: Option<Vec<Path>>,
    pub target: Target,
    pub filter: Option<Expr>,
    /// ORDER BY keys, `true` for DESC.
    pub order: Vec<(Path, bool)>,
}

/// One action of an UPDATE.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Set(Path, Expr),
    Remove(Path),
}

/// `RETURNING ... *`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returning {
    AllOld,
    ModifiedOld,
    AllNew,
    ModifiedNew,
}

/// An expression: a value, a path, or a condition over them.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Path(Path),
    Str(String),
    /// A number literal as written.
    Num(String),
    Bool(bool),
    Null,
    /// The `n`th `?` of the statement, from 0.
    Param(usize),
    /// `{'k': v, ...}`, in the order written.
    Map(Vec<(String, Expr)>),
    /// `[v, ...]`
    List(Vec<Expr>),
    /// `<<v, ...>>`: a set.
    Bag(Vec<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Between(Box<Expr>, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `x IS [NOT] MISSING`
    IsMissing(Box<Expr>, bool),
    /// `x IS [NOT] NULL`
    IsNull(Box<Expr>, bool),
    /// A function call; the name lower-cased.
    Call(String, Vec<Expr>),
    /// `a + b` (`true`) or `a - b`.
    Arith(bool, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Whether this is a value (a literal or a parameter).
    pub fn is_value(&self) -> bool {
        matches!(
            self,
            Expr::Str(_)
                | Expr::Num(_)
                | Expr::Bool(_)
                | Expr::Null
                | Expr::Param(_)
                | Expr::Map(_)
                | Expr::List(_)
                | Expr::Bag(_)
        )
    }

    /// The top-level conjuncts of this condition (`a AND b AND c`).
    pub fn conjuncts(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                other => out.push(other),
            }
        }
        out
    }

    /// Whether any path in this expression starts at one of `roots`.
    pub fn mentions(&self, roots: &[&str]) -> bool {
        let any = |es: &[Expr]| es.iter().any(|e| e.mentions(roots));
        match self {
            Expr::Path(p) => roots.contains(&p.root()),
            Expr::Str(_) | Expr::Num(_) | Expr::Bool(_) | Expr::Null | Expr::Param(_) => false,
            Expr::Map(m) => m.iter().any(|(_, e)| e.mentions(roots)),
            Expr::List(l) | Expr::Bag(l) | Expr::Call(_, l) => any(l),
            Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) | Expr::Arith(_, a, b) => {
                a.mentions(roots) || b.mentions(roots)
            }
            Expr::Between(a, b, c) => a.mentions(roots) || b.mentions(roots) || c.mentions(roots),
            Expr::In(a, l) => a.mentions(roots) || any(l),
            Expr::Not(a) | Expr::IsMissing(a, _) | Expr::IsNull(a, _) => a.mentions(roots),
        }
    }
}

/// The attribute a projected path is returned under: its last name
/// (`SELECT a.b[0]` answers `{"b": ...}`).
pub fn output_name(path: &Path) -> &str {
    path.elems
        .iter()
        .rev()
        .find_map(|e| match e {
            PathElem::Attr(a) => Some(a.as_str()),
            PathElem::Index(_) => None,
        })
        .unwrap_or("")
}

#[cfg(test)]
mod tests;
