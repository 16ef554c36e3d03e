//! The typed syntax tree. Substitutions are already resolved: a path holds
//! real attribute names and a value operand holds the attribute value.

use dynaraft_model::AttributeValue;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathElem {
    Attr(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub elems: Vec<PathElem>,
}

impl Path {
    pub fn attr(name: &str) -> Path {
        Path {
            elems: vec![PathElem::Attr(name.to_string())],
        }
    }
    /// The top-level attribute name.
    pub fn root(&self) -> &str {
        match self.elems.first() {
            Some(PathElem::Attr(a)) => a,
            _ => "",
        }
    }
}

impl fmt::Display for Path {
    /// DynamoDB's rendering in overlap messages: `[a, b, [3]]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .elems
            .iter()
            .map(|e| match e {
                PathElem::Attr(a) => a.clone(),
                PathElem::Index(i) => format!("[{i}]"),
            })
            .collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Path),
    Value(AttributeValue),
    Size(Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator of a comparison token (`=`, `<>`, `<`, `<=`, `>`, `>=`).
    pub fn from_symbol(sym: &str) -> CmpOp {
        match sym {
            "=" => CmpOp::Eq,
            "<>" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            _ => CmpOp::Ge,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Cmp(Operand, CmpOp, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    AttributeExists(Path),
    AttributeNotExists(Path),
    AttributeType(Operand, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
}
