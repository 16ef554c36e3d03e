//! Recursive-descent parser for all five expression kinds.
//!
//! Condition grammar, lowest precedence first (DynamoDB: NOT > AND > OR,
//! comparisons bind tightest):
//!
//! ```text
//! or      := and ("OR" and)*
//! and     := not ("AND" not)*
//! not     := "NOT" not | primary
//! primary := "(" or ")" | function | operand cmp operand
//!          | operand "BETWEEN" operand "AND" operand
//!          | operand "IN" "(" operand ("," operand)* ")"
//! operand := path | :value | size(path)
//! ```
//!
//! Depth is counted on every recursive descent and capped at
//! [`MAX_NESTING_DEPTH`](crate::MAX_NESTING_DEPTH).

use crate::ast::{CmpOp, Condition, Operand, Path, PathElem};
use crate::lexer::{Tok, Token, lex};
use crate::update::{SetValue, UOperand, UpdateExpr};
use crate::{ExprError, ExprKind, Substitutions, is_reserved};
use crate::{
    MAX_EXPRESSION_BYTES, MAX_IN_OPERANDS, MAX_NESTING_DEPTH, MAX_OPERATORS, MAX_PATH_DEPTH,
};
use dynaraft_model::{AttrType, AttributeValue};

pub struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    kind: ExprKind,
    subs: &'a mut Substitutions,
    depth: usize,
    operators: usize,
    /// DynamoDB's limits on expressions apply (size, operators).
    limited: bool,
}

/// DynamoDB's names for attribute types in update-operand errors.
pub fn type_word(t: AttrType) -> &'static str {
    match t {
        AttrType::S => "STRING",
        AttrType::N => "NUMBER",
        AttrType::B => "BINARY",
        AttrType::Bool => "BOOLEAN",
        AttrType::Null => "NULL",
        AttrType::M => "MAP",
        AttrType::L => "LIST",
        AttrType::Ss => "SS",
        AttrType::Ns => "NS",
        AttrType::Bs => "BS",
    }
}

impl<'a> Parser<'a> {
    pub fn new(
        src: &'a str,
        kind: ExprKind,
        subs: &'a mut Substitutions,
    ) -> Result<Parser<'a>, ExprError> {
        let limited = subs.limits(src);
        if limited && src.len() > MAX_EXPRESSION_BYTES {
            return Err(ExprError::invalid(
                kind,
                format!(
                    "Expression size has exceeded the maximum allowed size; expression size: {}",
                    src.len()
                ),
            ));
        }
        if src.trim().is_empty() {
            return Err(ExprError::invalid(kind, "The expression can not be empty;"));
        }
        let toks = lex(src, kind)?;
        Ok(Parser {
            src,
            toks,
            pos: 0,
            kind,
            subs,
            depth: 0,
            operators: 0,
            limited,
        })
    }

    // ---- token helpers -------------------------------------------------

    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.toks.get(self.pos + n).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Tok) -> Result<(), ExprError> {
        if *self.peek() == t {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    fn err(&self, detail: impl AsRef<str>) -> ExprError {
        ExprError::invalid(self.kind, detail)
    }

    /// `Syntax error; token: "<tok>", near: "<prev tok> <tok> <next tok>"`.
    pub fn syntax_error(&self) -> ExprError {
        let cur = self.toks.get(self.pos);
        let token = match cur {
            Some(Token { tok: Tok::Eof, .. }) | None => "<EOF>".to_string(),
            Some(t) => self.src[t.start..t.end].to_string(),
        };
        let start = if self.pos > 0 {
            self.toks.get(self.pos - 1).map_or(0, |t| t.start)
        } else {
            cur.map_or(0, |t| t.start)
        };
        let end = match self.toks.get(self.pos + 1) {
            Some(t) if t.tok != Tok::Eof => t.end,
            _ => cur.map_or(self.src.len(), |t| t.end),
        };
        let near = self.src.get(start..end).unwrap_or("");
        self.err(format!(
            "Syntax error; token: \"{token}\", near: \"{near}\""
        ))
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(self.err("The expression has too many nesting levels"));
        }
        Ok(())
    }

    fn count_operator(&mut self) -> Result<(), ExprError> {
        self.operators += 1;
        if self.limited && self.operators > MAX_OPERATORS {
            return Err(self.err(format!(
                "The expression contains too many operators; operator count: {}",
                self.operators
            )));
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), ExprError> {
        if *self.peek() != Tok::Eof {
            return Err(self.syntax_error());
        }
        Ok(())
    }

    // ---- paths and operands --------------------------------------------

    fn path_elem_name(&mut self) -> Result<String, ExprError> {
        match self.peek().clone() {
            Tok::Ident(w) => {
                if is_reserved(&w) {
                    return Err(self.err(format!(
                        "Attribute name is a reserved keyword; reserved keyword: {w}"
                    )));
                }
                self.pos += 1;
                Ok(w)
            }
            Tok::Name(n) => {
                self.pos += 1;
                self.subs.name(self.kind, &n)
            }
            _ => Err(self.syntax_error()),
        }
    }

    pub fn path(&mut self) -> Result<Path, ExprError> {
        let mut elems = vec![PathElem::Attr(self.path_elem_name()?)];
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.pos += 1;
                    elems.push(PathElem::Attr(self.path_elem_name()?));
                }
                Tok::LBracket => {
                    self.pos += 1;
                    let idx = match self.bump() {
                        // DynamoDB's list indexes are 32-bit signed.
                        Tok::Int(d) => d
                            .parse::<i32>()
                            .ok()
                            .and_then(|i| usize::try_from(i).ok())
                            .ok_or_else(|| self.err("List index is too large"))?,
                        _ => {
                            self.pos -= 1;
                            return Err(self.syntax_error());
                        }
                    };
                    self.expect(Tok::RBracket)?;
                    elems.push(PathElem::Index(idx));
                }
                _ => break,
            }
            if elems.len() > MAX_PATH_DEPTH {
                return Err(self.err("The document path has too many nesting levels"));
            }
        }
        Ok(Path { elems })
    }

    fn value(&mut self, token: &str) -> Result<AttributeValue, ExprError> {
        self.subs.value(self.kind, token)
    }

    fn is_function_call(&self) -> bool {
        matches!(self.peek(), Tok::Ident(_)) && *self.peek_at(1) == Tok::LParen
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        match self.peek().clone() {
            Tok::Value(v) => {
                self.pos += 1;
                Ok(Operand::Value(self.value(&v)?))
            }
            Tok::Ident(w) if self.is_function_call() => {
                if w.as_str() != "size" {
                    if is_condition_function(&w) {
                        return Err(self.err(format!(
                            "The function is not allowed to be used this way in an expression; function: {w}"
                        )));
                    }
                    return Err(self.err(format!("Invalid function name; function: {w}")));
                }
                self.count_operator()?;
                self.pos += 2;
                let arg = self.operand()?;
                let mut operands = 1;
                while *self.peek() == Tok::Comma {
                    self.pos += 1;
                    self.operand()?;
                    operands += 1;
                }
                if operands != 1 {
                    return Err(self.err(format!(
                        "Incorrect number of operands for operator or function; operator or function: size, number of operands: {operands}"
                    )));
                }
                self.expect(Tok::RParen)?;
                match arg {
                    Operand::Path(p) => Ok(Operand::Size(p)),
                    // The size of a constant is a constant, as DynamoDB
                    // evaluates it.
                    Operand::Value(v) => match crate::eval::size_of(&v) {
                        Some(n) => Ok(Operand::Value(AttributeValue::N(
                            dynaraft_model::Number::from_i64(n as i64),
                        ))),
                        None => Err(operand_type_error(self.kind, "size", &v)),
                    },
                    Operand::Size(_) => Err(operand_type_error_name(self.kind, "size", "N")),
                }
            }
            Tok::Ident(_) | Tok::Name(_) => Ok(Operand::Path(self.path()?)),
            _ => Err(self.syntax_error()),
        }
    }

    // ---- conditions ----------------------------------------------------

    pub fn condition_expression(mut self) -> Result<Condition, ExprError> {
        let c = self.or()?;
        self.finish()?;
        Ok(c)
    }

    fn or(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            self.count_operator()?;
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.not()?;
        while self.eat_keyword("AND") {
            self.count_operator()?;
            let right = self.not()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ExprError> {
        if self.eat_keyword("NOT") {
            self.count_operator()?;
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ExprError> {
        if *self.peek() == Tok::LParen {
            self.pos += 1;
            // `((...))`: reject before recursing, so piles of parentheses cost nothing.
            if *self.peek() == Tok::LParen && self.paren_wraps_whole() {
                return Err(self.err("The expression has redundant parentheses;"));
            }
            self.enter()?;
            let inner = self.or()?;
            self.depth -= 1;
            self.expect(Tok::RParen)?;
            return Ok(inner);
        }
        if let Tok::Ident(w) = self.peek().clone()
            && self.is_function_call()
            && w.as_str() != "size"
        {
            return self.function(&w);
        }
        let left = self.operand()?;
        match self.peek().clone() {
            Tok::Cmp(sym) => {
                self.pos += 1;
                self.count_operator()?;
                let op = CmpOp::from_symbol(sym);
                let right = self.operand()?;
                self.check_comparable(op.symbol(), &[&left, &right])?;
                self.check_distinct(op.symbol(), &left, &right)?;
                Ok(Condition::Cmp(left, op, right))
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("BETWEEN") => {
                self.pos += 1;
                self.count_operator()?;
                let lo = self.operand()?;
                if !self.eat_keyword("AND") {
                    return Err(self.syntax_error());
                }
                let hi = self.operand()?;
                self.check_comparable("BETWEEN", &[&left, &lo, &hi])?;
                if let (Operand::Value(a), Operand::Value(b)) = (&lo, &hi)
                    && a.attr_type() != b.attr_type()
                {
                    return Err(self.err(format!(
                        "The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: AttributeValue: {}, upper bound operand: AttributeValue: {}",
                        brace(a),
                        brace(b)
                    )));
                }
                if let (Operand::Value(a), Operand::Value(b)) = (&lo, &hi)
                    && crate::eval::compare(a, b) == Some(std::cmp::Ordering::Greater)
                {
                    return Err(self.err(format!(
                            "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {}, upper bound operand: AttributeValue: {}",
                            brace(a), brace(b)
                        )));
                }
                Ok(Condition::Between(left, lo, hi))
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("IN") => {
                self.pos += 1;
                self.count_operator()?;
                self.expect(Tok::LParen)?;
                let mut list = vec![self.operand()?];
                while *self.peek() == Tok::Comma {
                    self.pos += 1;
                    list.push(self.operand()?);
                    if list.len() > MAX_IN_OPERANDS {
                        return Err(self.err(format!(
                            "The IN operator is provided with too many operands; number of operands: {}",
                            list.len()
                        )));
                    }
                }
                self.expect(Tok::RParen)?;
                Ok(Condition::In(left, list))
            }
            _ => Err(self.syntax_error()),
        }
    }

    /// Whether the `(` at `pos - 1` closes exactly after a parenthesised
    /// group that starts at `pos`, as in `((a = :v))`.
    fn paren_wraps_whole(&self) -> bool {
        let mut depth = 0usize;
        let mut i = self.pos;
        while let Some(t) = self.toks.get(i) {
            match t.tok {
                Tok::LParen => depth += 1,
                Tok::RParen => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return matches!(self.toks.get(i + 1).map(|t| &t.tok), Some(Tok::RParen));
                    }
                }
                Tok::Eof => return false,
                _ => {}
            }
            i += 1;
        }
        false
    }

    fn check_comparable(&self, op: &str, operands: &[&Operand]) -> Result<(), ExprError> {
        if op == "=" || op == "<>" {
            return Ok(());
        }
        for o in operands {
            if let Operand::Value(v) = o
                && !matches!(v.attr_type(), AttrType::S | AttrType::N | AttrType::B)
            {
                return Err(operand_type_error(self.kind, op, v));
            }
        }
        Ok(())
    }

    fn function(&mut self, name: &str) -> Result<Condition, ExprError> {
        self.count_operator()?;
        self.enter()?;
        self.pos += 2; // name and "("
        // Function names are case-sensitive in DynamoDB (`BEGINS_WITH(...)`
        // is an invalid function name), unlike keywords.
        let operands = match name {
            "attribute_exists" | "attribute_not_exists" => 1,
            "attribute_type" | "begins_with" | "contains" => 2,
            "size" => return Err(self.syntax_error()),
            "if_not_exists" | "list_append" => {
                return Err(self.err(format!(
                    "The function is not allowed in a condition expression; function: {name}"
                )));
            }
            _ => {
                return Err(self.err(format!("Invalid function name; function: {name}")));
            }
        };
        let mut args = vec![self.operand()?];
        while *self.peek() == Tok::Comma {
            self.pos += 1;
            args.push(self.operand()?);
        }
        self.expect(Tok::RParen)?;
        if args.len() != operands {
            return Err(self.operand_count(name, args.len()));
        }
        let mut it = args.into_iter();
        let (Some(a), b) = (it.next(), it.next()) else {
            return Err(self.operand_count(name, 0));
        };
        if let Some(b) = &b {
            self.check_distinct(name, &a, b)?;
        }
        let cond = match (name, b) {
            ("attribute_exists" | "attribute_not_exists", None) => {
                let Operand::Path(p) = a else {
                    return Err(self.err(format!(
                        "Operator or function requires a document path; operator or function: {name}"
                    )));
                };
                if name == "attribute_exists" {
                    Condition::AttributeExists(p)
                } else {
                    Condition::AttributeNotExists(p)
                }
            }
            // The first operand may be a value too: DynamoDB evaluates
            // attribute_type(:v, :t) on the value.
            ("attribute_type", Some(t)) => {
                if let Operand::Size(_) = a {
                    return Err(operand_type_error_name(self.kind, name, "N"));
                }
                match &t {
                    Operand::Value(AttributeValue::S(s)) if AttrType::from_descriptor(s).is_some() => {}
                    Operand::Value(AttributeValue::S(s)) => {
                        return Err(self.err(format!(
                            "Invalid attribute type name found; type: {s}, valid types: {{B,NULL,SS,BOOL,L,BS,N,NS,S,M}}"
                        )))
                    }
                    Operand::Value(v) => return Err(operand_type_error(self.kind, name, v)),
                    // The type must be a value (":t"), not a path.
                    Operand::Path(_) | Operand::Size(_) => {
                        return Err(operand_type_error_name(self.kind, name, "PATH"));
                    }
                }
                Condition::AttributeType(a, t)
            }
            ("begins_with", Some(b)) => {
                for o in [&a, &b] {
                    if let Operand::Value(v) = o
                        && !matches!(v.attr_type(), AttrType::S | AttrType::B)
                    {
                        return Err(operand_type_error(self.kind, name, v));
                    }
                }
                Condition::BeginsWith(a, b)
            }
            ("contains", Some(b)) => Condition::Contains(a, b),
            (_, b) => return Err(self.operand_count(name, 1 + usize::from(b.is_some()))),
        };
        self.depth -= 1;
        Ok(cond)
    }

    /// DynamoDB refuses a comparison or a two-operand function whose
    /// operands are one document path.
    fn check_distinct(&self, op: &str, a: &Operand, b: &Operand) -> Result<(), ExprError> {
        match (a, b) {
            (Operand::Path(x), Operand::Path(y)) if x == y => {
                let shown: Vec<String> = x
                    .elems
                    .iter()
                    .map(|e| match e {
                        PathElem::Attr(n) => n.clone(),
                        PathElem::Index(i) => format!("[{i}]"),
                    })
                    .collect();
                Err(self.err(format!(
                    "The first operand must be distinct from the remaining operands for this operator or function; operator: {op}, first operand: [{}]",
                    shown.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// A function given `n` operands, not the number it takes.
    fn operand_count(&self, name: &str, n: usize) -> ExprError {
        self.err(format!(
            "Incorrect number of operands for operator or function; operator or function: {name}, number of operands: {n}"
        ))
    }

    // ---- projections ---------------------------------------------------

    pub fn projection_expression(mut self) -> Result<Vec<Path>, ExprError> {
        let mut paths = vec![self.path()?];
        while *self.peek() == Tok::Comma {
            self.pos += 1;
            paths.push(self.path()?);
        }
        self.finish()?;
        crate::paths::check_disjoint(self.kind, &paths)?;
        Ok(paths)
    }

    // ---- updates -------------------------------------------------------

    pub fn update_expression(mut self) -> Result<UpdateExpr, ExprError> {
        let mut u = UpdateExpr::default();
        let mut seen: Vec<&'static str> = Vec::new();
        if *self.peek() == Tok::Eof {
            return Err(self.syntax_error());
        }
        while *self.peek() != Tok::Eof {
            let clause = match self.peek() {
                Tok::Ident(w) if w.eq_ignore_ascii_case("SET") => "SET",
                Tok::Ident(w) if w.eq_ignore_ascii_case("REMOVE") => "REMOVE",
                Tok::Ident(w) if w.eq_ignore_ascii_case("ADD") => "ADD",
                Tok::Ident(w) if w.eq_ignore_ascii_case("DELETE") => "DELETE",
                _ => return Err(self.syntax_error()),
            };
            if seen.contains(&clause) {
                return Err(self.err(format!(
                    "The \"{clause}\" section can only be used once in an update expression;"
                )));
            }
            seen.push(clause);
            self.pos += 1;
            loop {
                self.update_action(clause, &mut u)?;
                if *self.peek() != Tok::Comma {
                    break;
                }
                self.pos += 1;
            }
        }
        let all: Vec<Path> = u.targets().cloned().collect();
        crate::paths::check_disjoint(self.kind, &all)?;
        Ok(u)
    }

    fn update_action(&mut self, clause: &str, u: &mut UpdateExpr) -> Result<(), ExprError> {
        self.count_operator()?;
        let path = self.path()?;
        match clause {
            "SET" => {
                self.expect(Tok::Cmp("="))?;
                let v = self.set_value()?;
                u.set.push((path, v));
            }
            "REMOVE" => u.remove.push(path),
            _ => {
                let v = match self.bump() {
                    Tok::Value(v) => self.value(&v)?,
                    _ => {
                        self.pos -= 1;
                        return Err(self.syntax_error());
                    }
                };
                let ok = if clause == "ADD" {
                    matches!(
                        v.attr_type(),
                        AttrType::N | AttrType::Ss | AttrType::Ns | AttrType::Bs
                    )
                } else {
                    matches!(v.attr_type(), AttrType::Ss | AttrType::Ns | AttrType::Bs)
                };
                if !ok {
                    return Err(self.err(format!(
                        "Incorrect operand type for operator or function; operator: {clause}, operand type: {}",
                        type_word(v.attr_type())
                    )));
                }
                if clause == "ADD" {
                    u.add.push((path, v));
                } else {
                    u.delete.push((path, v));
                }
            }
        }
        Ok(())
    }

    fn set_value(&mut self) -> Result<SetValue, ExprError> {
        let a = self.update_operand()?;
        let op = match self.peek() {
            Tok::Plus => '+',
            Tok::Minus => '-',
            _ => return Ok(SetValue::Operand(a)),
        };
        self.pos += 1;
        self.count_operator()?;
        let b = self.update_operand()?;
        for o in [&a, &b] {
            if let UOperand::Value(v) = o
                && v.attr_type() != AttrType::N
            {
                return Err(self.err(format!(
                        "Incorrect operand type for operator or function; operator or function: {op}, operand type: {}",
                        v.attr_type()
                    )));
            }
        }
        Ok(if op == '+' {
            SetValue::Plus(a, b)
        } else {
            SetValue::Minus(a, b)
        })
    }

    fn update_operand(&mut self) -> Result<UOperand, ExprError> {
        match self.peek().clone() {
            Tok::Value(v) => {
                self.pos += 1;
                Ok(UOperand::Value(self.value(&v)?))
            }
            Tok::Ident(w) if self.is_function_call() => {
                self.count_operator()?;
                self.enter()?;
                self.pos += 2;
                let r = match w.as_str() {
                    "if_not_exists" => {
                        let p = self.path()?;
                        self.expect(Tok::Comma)?;
                        let d = self.update_operand()?;
                        UOperand::IfNotExists(p, Box::new(d))
                    }
                    "list_append" => {
                        let a = self.update_operand()?;
                        self.expect(Tok::Comma)?;
                        let b = self.update_operand()?;
                        for o in [&a, &b] {
                            if let UOperand::Value(v) = o
                                && v.attr_type() != AttrType::L
                            {
                                return Err(operand_type_error(self.kind, "list_append", v));
                            }
                            // DynamoDB parses a list_append of a list_append
                            // but refuses it.
                            if let UOperand::ListAppend(..) = o {
                                return Err(self.err(
                                    "The function is not allowed to be used this way in an expression; function: list_append",
                                ));
                            }
                        }
                        UOperand::ListAppend(Box::new(a), Box::new(b))
                    }
                    _ if is_condition_function(&w) || w == "size" => {
                        return Err(self.err(format!(
                            "The function is not allowed in an update expression; function: {w}"
                        )));
                    }
                    _ => return Err(self.err(format!("Invalid function name; function: {w}"))),
                };
                self.expect(Tok::RParen)?;
                self.depth -= 1;
                Ok(r)
            }
            Tok::Ident(_) | Tok::Name(_) => Ok(UOperand::Path(self.path()?)),
            _ => Err(self.syntax_error()),
        }
    }
}

fn is_condition_function(w: &str) -> bool {
    matches!(
        w,
        "attribute_exists" | "attribute_not_exists" | "attribute_type" | "begins_with" | "contains"
    )
}

fn brace(v: &AttributeValue) -> String {
    let j = v.to_json();
    match j.as_object().and_then(|m| m.iter().next()) {
        Some((k, v)) => format!(
            "{{{k}:{}}}",
            v.as_str().map(str::to_string).unwrap_or(v.to_string())
        ),
        None => String::new(),
    }
}

pub fn operand_type_error(kind: ExprKind, f: &str, v: &AttributeValue) -> ExprError {
    operand_type_error_name(kind, f, v.attr_type().descriptor())
}

fn operand_type_error_name(kind: ExprKind, f: &str, t: &str) -> ExprError {
    ExprError::invalid(
        kind,
        format!(
            "Incorrect operand type for operator or function; operator or function: {f}, operand type: {t}"
        ),
    )
}
