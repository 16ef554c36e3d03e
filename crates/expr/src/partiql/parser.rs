//! A recursive-descent parser for DynamoDB's PartiQL statements.
//!
//! Condition precedence, loosest first: `OR`, `AND`, `NOT`, then one
//! comparison, `BETWEEN`, `IN` or `IS` over additive terms (`a + 1`).
//! Syntax errors use DynamoDB's detail words: `Unexpected term` where a
//! term should start, `Unexpected keyword` or `Unexpected operator` when a
//! keyword or an operator stands there instead, `Missing right-hand side
//! expression of infix operator` after a trailing `AND`/`OR`/comparison,
//! and `Unexpected token after expression` for anything after a complete
//! statement.

use super::lexer::{Tok, tokenize};
use super::{Action, CmpOp, Expr, PartiqlError, Returning, Select, Statement, Target};
use crate::MAX_NESTING_DEPTH;
use crate::ast::{Path, PathElem};

/// Words that cannot stand as a bare attribute name (quote them: `"value"`).
const KEYWORDS: &[&str] = &[
    "all",
    "and",
    "as",
    "asc",
    "between",
    "by",
    "delete",
    "desc",
    "exists",
    "false",
    "from",
    "in",
    "insert",
    "into",
    "is",
    "like",
    "missing",
    "modified",
    "not",
    "null",
    "or",
    "order",
    "remove",
    "returning",
    "select",
    "set",
    "true",
    "update",
    "value",
    "values",
    "where",
];

/// Keywords that are operators: where a term should start they are an
/// `Unexpected operator`, the others an `Unexpected keyword`.
const OPERATOR_WORDS: &[&str] = &["and", "or", "is", "like", "in", "between"];

/// Parses one statement; returns it and how many `?` parameters it has.
pub fn parse(src: &str) -> Result<(Statement, usize), PartiqlError> {
    let mut p = Parser {
        toks: tokenize(src)?,
        pos: 0,
        params: 0,
        depth: 0,
    };
    let stmt = p.statement()?;
    p.eat(&Tok::Punct(";"));
    if *p.peek() != Tok::Eof {
        return Err(PartiqlError::syntax("Unexpected token after expression"));
    }
    Ok((stmt, p.params))
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    params: usize,
    depth: usize,
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).unwrap_or(&Tok::Eof)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.toks.get(self.pos + n).unwrap_or(&Tok::Eof)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        let hit = self.peek() == t;
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn at_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.at_kw(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect_kw(&mut self, kw: &str, detail: &str) -> Result<(), PartiqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(PartiqlError::syntax(detail))
        }
    }

    fn expect(&mut self, t: Tok, detail: &str) -> Result<(), PartiqlError> {
        if self.eat(&t) {
            Ok(())
        } else {
            Err(PartiqlError::syntax(detail))
        }
    }

    fn statement(&mut self) -> Result<Statement, PartiqlError> {
        if self.eat_kw("select") {
            return Ok(Statement::Select(self.select()?));
        }
        if self.eat_kw("exists") {
            self.expect(Tok::Punct("("), "Expected (")?;
            self.expect_kw("select", "Expected SELECT")?;
            let select = self.select()?;
            self.expect(Tok::Punct(")"), "Expected )")?;
            return Ok(Statement::Exists(select));
        }
        if self.eat_kw("insert") {
            self.expect_kw("into", "Expected INTO")?;
            let target = self.target("Expected identifier for simple path")?;
            if !self.eat_kw("value") {
                return Err(PartiqlError::syntax("Unexpected token after expression"));
            }
            let value = self.additive()?;
            return Ok(Statement::Insert { target, value });
        }
        if self.eat_kw("update") {
            let target = self.target("Expected identifier for simple path")?;
            self.no_alias()?;
            let actions = self.actions()?;
            let filter = self.where_clause()?;
            let returning = self.returning()?;
            return Ok(Statement::Update {
                target,
                actions,
                filter,
                returning,
            });
        }
        if self.eat_kw("delete") {
            self.expect_kw("from", "Expected FROM")?;
            let target = self.target("Expected identifier for simple path")?;
            self.no_alias()?;
            let filter = self.where_clause()?;
            let returning = self.returning()?;
            if returning.is_some_and(|r| r != Returning::AllOld) {
                return Err(PartiqlError(
                    "Unsupported returning clause for DELETE: only ALL OLD * is supported".into(),
                ));
            }
            return Ok(Statement::Delete {
                target,
                filter,
                returning,
            });
        }
        Err(PartiqlError::syntax("Expected data manipulation"))
    }

    fn select(&mut self) -> Result<Select, PartiqlError> {
        let projection = if self.eat(&Tok::Punct("*")) {
            None
        } else {
            let mut paths = vec![self.path_term()?];
            while self.eat(&Tok::Punct(",")) {
                paths.push(self.path_term()?);
            }
            Some(paths)
        };
        self.expect_kw("from", "Unexpected term")?;
        let target = self.target("Unexpected term")?;
        self.no_alias()?;
        let filter = if self.eat_kw("where") {
            Some(self.condition()?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_kw("order") {
            self.expect_kw("by", "Expected BY")?;
            loop {
                let path = self.path_term()?;
                let desc = if self.eat_kw("desc") {
                    true
                } else {
                    self.eat_kw("asc");
                    false
                };
                order.push((path, desc));
                if !self.eat(&Tok::Punct(",")) {
                    break;
                }
            }
        }
        Ok(Select {
            projection,
            target,
            filter,
            order,
        })
    }

    /// A table name, or `"Table"."Index"`.
    fn target(&mut self, missing: &str) -> Result<Target, PartiqlError> {
        let table = self.name().ok_or_else(|| PartiqlError::syntax(missing))?;
        let index = if self.eat(&Tok::Punct(".")) {
            Some(
                self.name()
                    .ok_or_else(|| PartiqlError::syntax("Expected identifier for simple path"))?,
            )
        } else {
            None
        };
        Ok(Target { table, index })
    }

    /// A name: quoted, or a bare word that is not a keyword.
    fn name(&mut self) -> Option<String> {
        match self.peek().clone() {
            Tok::Quoted(n) => {
                self.pos += 1;
                Some(n)
            }
            Tok::Ident(n) if !is_keyword(&n) => {
                self.pos += 1;
                Some(n)
            }
            _ => None,
        }
    }

    /// DynamoDB refuses table aliases (`FROM t x`, `FROM t AS x`).
    fn no_alias(&self) -> Result<(), PartiqlError> {
        match self.peek() {
            Tok::Ident(w) if w.eq_ignore_ascii_case("as") || !is_keyword(w) => {
                Err(PartiqlError("Aliasing is not supported".into()))
            }
            Tok::Quoted(_) => Err(PartiqlError("Aliasing is not supported".into())),
            _ => Ok(()),
        }
    }

    fn where_clause(&mut self) -> Result<Expr, PartiqlError> {
        if !self.eat_kw("where") {
            return Err(PartiqlError(
                "Where clause does not contain a mandatory equality on all key attributes".into(),
            ));
        }
        self.condition()
    }

    fn actions(&mut self) -> Result<Vec<Action>, PartiqlError> {
        let mut out = Vec::new();
        loop {
            if self.eat_kw("set") {
                loop {
                    let path = self.path_term()?;
                    self.expect(Tok::Cmp("="), "Expected =")?;
                    out.push(Action::Set(path, self.additive()?));
                    if !self.eat(&Tok::Punct(",")) {
                        break;
                    }
                }
            } else if self.eat_kw("remove") {
                loop {
                    out.push(Action::Remove(self.path_term()?));
                    if !self.eat(&Tok::Punct(",")) {
                        break;
                    }
                }
            } else if out.is_empty() {
                return Err(PartiqlError::syntax("Expected SET or REMOVE"));
            } else {
                return Ok(out);
            }
        }
    }

    fn returning(&mut self) -> Result<Option<Returning>, PartiqlError> {
        if !self.eat_kw("returning") {
            return Ok(None);
        }
        let all = if self.eat_kw("all") {
            true
        } else {
            self.expect_kw("modified", "Expected ALL or MODIFIED")?;
            false
        };
        let old = if self.eat_kw("old") {
            true
        } else {
            self.expect_kw("new", "Expected OLD or NEW")?;
            false
        };
        self.expect(Tok::Punct("*"), "Expected *")?;
        Ok(Some(match (all, old) {
            (true, true) => Returning::AllOld,
            (false, true) => Returning::ModifiedOld,
            (true, false) => Returning::AllNew,
            (false, false) => Returning::ModifiedNew,
        }))
    }

    /// A term that must be a document path (projections, SET and REMOVE
    /// targets, ORDER BY).
    fn path_term(&mut self) -> Result<Path, PartiqlError> {
        match self.primary()? {
            Expr::Path(p) => Ok(p),
            _ => Err(PartiqlError::syntax("Expected identifier for simple path")),
        }
    }

    fn enter(&mut self) -> Result<(), PartiqlError> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(PartiqlError::syntax("Statement nested too deeply"));
        }
        Ok(())
    }

    fn condition(&mut self) -> Result<Expr, PartiqlError> {
        self.enter()?;
        let mut left = self.conjunction()?;
        while self.eat_kw("or") {
            self.rhs_present()?;
            left = Expr::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Expr, PartiqlError> {
        let mut left = self.negation()?;
        while self.eat_kw("and") {
            self.rhs_present()?;
            left = Expr::And(Box::new(left), Box::new(self.negation()?));
        }
        Ok(left)
    }

    fn negation(&mut self) -> Result<Expr, PartiqlError> {
        if self.eat_kw("not") {
            self.enter()?;
            let inner = self.negation()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.predicate()
    }

    /// After an infix operator: something must follow.
    fn rhs_present(&self) -> Result<(), PartiqlError> {
        match self.peek() {
            Tok::Eof | Tok::Punct(";") => Err(PartiqlError::syntax(
                "Missing right-hand side expression of infix operator",
            )),
            _ => Ok(()),
        }
    }

    fn predicate(&mut self) -> Result<Expr, PartiqlError> {
        let left = self.additive()?;
        if let Tok::Cmp(op) = self.peek().clone() {
            self.pos += 1;
            self.rhs_present()?;
            let op = CmpOp::from_symbol(op);
            return Ok(Expr::Cmp(op, Box::new(left), Box::new(self.additive()?)));
        }
        let negated = self.at_kw("not")
            && matches!(self.peek_at(1), Tok::Ident(w) if w.eq_ignore_ascii_case("between") || w.eq_ignore_ascii_case("in"));
        if negated {
            self.pos += 1;
        }
        let e = if self.eat_kw("between") {
            let low = self.additive()?;
            self.expect_kw("and", "Expected AND")?;
            let high = self.additive()?;
            Expr::Between(Box::new(left), Box::new(low), Box::new(high))
        } else if self.eat_kw("in") {
            Expr::In(Box::new(left), self.in_list()?)
        } else if self.eat_kw("is") {
            let not = self.eat_kw("not");
            if self.eat_kw("missing") {
                return Ok(Expr::IsMissing(Box::new(left), not));
            }
            if self.eat_kw("null") {
                return Ok(Expr::IsNull(Box::new(left), not));
            }
            return Err(PartiqlError::syntax("Expected type name"));
        } else if self.at_kw("like") {
            return Err(PartiqlError("Unsupported operation: LIKE".into()));
        } else {
            return Ok(left);
        };
        Ok(if negated { Expr::Not(Box::new(e)) } else { e })
    }

    /// The operands of `IN`: `[a, b]`, `(a, b)` or `<<a, b>>`.
    fn in_list(&mut self) -> Result<Vec<Expr>, PartiqlError> {
        let close = match self.bump() {
            Tok::Punct("[") => Tok::Punct("]"),
            Tok::Punct("(") => Tok::Punct(")"),
            Tok::Bag("<<") => Tok::Bag(">>"),
            _ => return Err(PartiqlError::syntax("Expected a list after IN")),
        };
        self.sequence(close)
    }

    /// Comma-separated terms up to `close`.
    fn sequence(&mut self, close: Tok) -> Result<Vec<Expr>, PartiqlError> {
        let mut out = Vec::new();
        if self.eat(&close) {
            return Ok(out);
        }
        loop {
            out.push(self.additive()?);
            if self.eat(&close) {
                return Ok(out);
            }
            self.expect(Tok::Punct(","), "Expected , or the end of the list")?;
        }
    }

    fn additive(&mut self) -> Result<Expr, PartiqlError> {
        let mut left = self.primary()?;
        loop {
            let plus = match self.peek() {
                Tok::Punct("+") => true,
                Tok::Punct("-") => false,
                _ => return Ok(left),
            };
            self.pos += 1;
            self.rhs_present()?;
            left = Expr::Arith(plus, Box::new(left), Box::new(self.primary()?));
        }
    }

    fn primary(&mut self) -> Result<Expr, PartiqlError> {
        self.enter()?;
        let e = self.primary_inner();
        self.depth -= 1;
        e
    }

    fn primary_inner(&mut self) -> Result<Expr, PartiqlError> {
        match self.bump() {
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Num(n) => Ok(Expr::Num(n)),
            Tok::Param => {
                self.params += 1;
                Ok(Expr::Param(self.params - 1))
            }
            Tok::Punct("-") => match self.bump() {
                Tok::Num(n) => Ok(Expr::Num(format!("-{n}"))),
                _ => Err(PartiqlError::syntax("Unexpected operator")),
            },
            Tok::Punct("(") => {
                let e = self.condition()?;
                self.expect(Tok::Punct(")"), "Expected )")?;
                Ok(e)
            }
            Tok::Punct("{") => self.map(),
            Tok::Punct("[") => Ok(Expr::List(self.sequence(Tok::Punct("]"))?)),
            Tok::Bag("<<") => Ok(Expr::Bag(self.sequence(Tok::Bag(">>"))?)),
            Tok::Quoted(n) => self.path_from(n),
            Tok::Ident(w) => self.word(w),
            Tok::Eof | Tok::Punct(";" | ")" | "]" | "}" | ",") => {
                Err(PartiqlError::syntax("Unexpected term"))
            }
            _ => Err(PartiqlError::syntax("Unexpected operator")),
        }
    }

    /// A bare word where a term starts: a literal keyword, a function
    /// call or the root of a path.
    fn word(&mut self, w: String) -> Result<Expr, PartiqlError> {
        let lower = w.to_ascii_lowercase();
        match lower.as_str() {
            "true" => return Ok(Expr::Bool(true)),
            "false" => return Ok(Expr::Bool(false)),
            "null" => return Ok(Expr::Null),
            _ => {}
        }
        if *self.peek() == Tok::Punct("(") && !is_keyword(&lower) {
            self.pos += 1;
            let args = self.sequence(Tok::Punct(")"))?;
            return Ok(Expr::Call(lower, args));
        }
        if OPERATOR_WORDS.contains(&lower.as_str()) {
            return Err(PartiqlError::syntax("Unexpected operator"));
        }
        if is_keyword(&lower) {
            return Err(PartiqlError::syntax("Unexpected keyword"));
        }
        self.path_from(w)
    }

    /// `{'k': v, ...}`
    fn map(&mut self) -> Result<Expr, PartiqlError> {
        let mut out = Vec::new();
        if self.eat(&Tok::Punct("}")) {
            return Ok(Expr::Map(out));
        }
        loop {
            let key = match self.bump() {
                Tok::Str(k) | Tok::Quoted(k) => k,
                _ => return Err(PartiqlError::syntax("Expected a string key in a tuple")),
            };
            self.expect(Tok::Punct(":"), "Expected :")?;
            out.push((key, self.additive()?));
            if self.eat(&Tok::Punct("}")) {
                return Ok(Expr::Map(out));
            }
            self.expect(Tok::Punct(","), "Expected , or }")?;
        }
    }

    /// A path whose first name is `root`: `.name`, `[n]` and `['name']`
    /// steps follow.
    fn path_from(&mut self, root: String) -> Result<Expr, PartiqlError> {
        let mut elems = vec![PathElem::Attr(root)];
        loop {
            if self.eat(&Tok::Punct(".")) {
                let n = self
                    .name()
                    .ok_or_else(|| PartiqlError::syntax("Expected identifier for simple path"))?;
                elems.push(PathElem::Attr(n));
            } else if self.eat(&Tok::Punct("[")) {
                match self.bump() {
                    Tok::Num(n) => {
                        let i = n
                            .parse::<usize>()
                            .map_err(|_| PartiqlError::syntax("Expected a list index"))?;
                        elems.push(PathElem::Index(i));
                    }
                    Tok::Str(s) => elems.push(PathElem::Attr(s)),
                    _ => return Err(PartiqlError::syntax("Expected a list index")),
                }
                self.expect(Tok::Punct("]"), "Expected ]")?;
            } else {
                break;
            }
            if elems.len() > crate::MAX_PATH_DEPTH {
                return Err(PartiqlError::syntax("Path nested too deeply"));
            }
        }
        Ok(Expr::Path(Path { elems }))
    }
}
