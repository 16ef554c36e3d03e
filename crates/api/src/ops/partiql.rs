//! PartiQL statements planned onto the JSON operations.
//!
//! A statement becomes the request of the operation DynamoDB would run for
//! it, in that operation's JSON shape, and then goes through that
//! operation's own parse, validate and execute: so conditions, capacity,
//! streams and errors are the same as for the JSON API.
//!
//! - `SELECT` with an equality on every key attribute of the table (and
//!   nothing else) is a GetItem; with an equality on the partition key it
//!   is a Query (a sort-key condition goes into KeyConditionExpression, the
//!   rest into FilterExpression); otherwise a Scan filtered by the whole
//!   WHERE. A WHERE that names a key attribute again beyond the key
//!   condition (`sk > 1 AND sk < 5`) is scanned too, as a Query filter may
//!   not name key attributes.
//! - `INSERT` is a PutItem conditioned on the key not existing
//!   (DuplicateItemException otherwise).
//! - `UPDATE` is an UpdateItem of the full key in the WHERE, conditioned on
//!   the item existing and on the rest of the WHERE.
//! - `DELETE` is a DeleteItem of the full key, conditioned on the item not
//!   existing or the rest of the WHERE holding (a missing item is success).
//! - `EXISTS(SELECT ...)` is a transaction's ConditionCheck.
//!
//! Statement names and values are rendered as `#pN` and `:vN` placeholders,
//! so any attribute name and value survives the translation.

use crate::Api;
use crate::error::ApiError;
use crate::params::active_table;
use dynaraft_cluster::Table;
use dynaraft_expr::partiql::{
    Action, CmpOp, Expr, PartiqlError, Returning, Select, Statement, Target, attribute_json,
};
use dynaraft_expr::{Path, PathElem};
use dynaraft_model::value::item_to_json;
use dynaraft_model::{AttributeValue, Item, KeySchema};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// DynamoDB's message for an UPDATE, DELETE or single-item read whose WHERE
/// does not fix the whole key.
pub const NEED_FULL_KEY: &str =
    "Where clause does not contain a mandatory equality on all key attributes";

impl From<PartiqlError> for ApiError {
    fn from(e: PartiqlError) -> Self {
        ApiError::Validation(e.0)
    }
}

/// How one statement runs: the operation and its request.
pub enum Plan {
    /// GetItem, already typed (the hot path of a SELECT by key).
    Get(GetPlan),
    Query(Value, Option<Vec<Path>>),
    Scan(Value, Option<Vec<Path>>),
    Put(Value),
    Update(Value),
    Delete(Value),
    /// A transaction's condition check (`EXISTS`).
    Check(Value),
}

/// A SELECT by full key: GetItem's checked parts.
pub struct GetPlan {
    pub table: Arc<Table>,
    /// The table's name as the statement wrote it.
    pub name: String,
    pub key: Item,
    /// The top-level attributes read (`None`: all).
    pub roots: Option<Vec<Path>>,
    /// The statement's projection (`None`: `*`).
    pub output: Option<Vec<Path>>,
}

impl GetPlan {
    /// The read as a TransactGetItems `Get` member.
    pub fn request(&self) -> Value {
        let mut r = Render::new(&[]);
        let mut req = json!({ "TableName": self.name, "Key": item_to_json(&self.key) });
        if let Some(roots) = &self.roots {
            req["ProjectionExpression"] = json!(r.paths(roots));
        }
        r.finish(&mut req);
        req
    }
}

impl Plan {
    /// The table the statement reads or writes.
    pub fn table(&self) -> &str {
        let r = match self {
            Plan::Get(g) => return &g.name,
            Plan::Query(r, _) | Plan::Scan(r, _) => r,
            Plan::Put(r) | Plan::Update(r) | Plan::Delete(r) | Plan::Check(r) => r,
        };
        r.get("TableName").and_then(Value::as_str).unwrap_or("")
    }
}

/// Plans `stmt` with its `?` bound from `params`. `single_item` asks for a
/// read of one item by its full key (batches and transactions).
pub fn plan(
    api: &Api,
    stmt: &Statement,
    params: &[Value],
    single_item: bool,
) -> Result<Plan, ApiError> {
    let mut r = Render::new(params);
    match stmt {
        Statement::Select(s) => plan_select(api, s, &mut r, single_item),
        Statement::Exists(s) => {
            let (table, key, rest) = keyed(api, &s.target, s.filter.as_ref(), &mut r)?;
            if s.target.index.is_some() {
                return Err(ApiError::validation("EXISTS cannot read an index"));
            }
            let cond = r.exists_and(&table.schema, &rest)?;
            Ok(Plan::Check(r.request(
                &s.target.table,
                key,
                Some(cond),
                None,
            )))
        }
        Statement::Insert { target, value } => {
            let table = find_table(api, target)?;
            let item = attribute_json(value, params)?
                .and_then(|v| v.get("M").cloned())
                .ok_or_else(|| PartiqlError::syntax("Expected a tuple in VALUE"))?;
            let cond = r.key_test(&table.schema, false)?;
            let mut req = r.request(&target.table, Value::Null, Some(cond), None);
            req["Item"] = item;
            Ok(Plan::Put(req))
        }
        Statement::Update {
            target,
            actions,
            filter,
            returning,
        } => {
            let (table, key, rest) = keyed(api, target, Some(filter), &mut r)?;
            let cond = r.exists_and(&table.schema, &rest)?;
            let update = r.update(actions)?;
            let mut req = r.request(&target.table, key, Some(cond), returning_values(*returning));
            req["UpdateExpression"] = json!(update);
            Ok(Plan::Update(req))
        }
        Statement::Delete {
            target,
            filter,
            returning,
        } => {
            let (table, key, rest) = keyed(api, target, Some(filter), &mut r)?;
            let cond = if rest.is_empty() {
                None
            } else {
                let missing = r.key_test(&table.schema, false)?;
                Some(format!("{missing} OR {}", r.all(&rest)?))
            };
            let req = r.request(&target.table, key, cond, returning_values(*returning));
            Ok(Plan::Delete(req))
        }
    }
}

fn returning_values(r: Option<Returning>) -> Option<&'static str> {
    r.map(|r| match r {
        Returning::AllOld => "ALL_OLD",
        Returning::ModifiedOld => "UPDATED_OLD",
        Returning::AllNew => "ALL_NEW",
        Returning::ModifiedNew => "UPDATED_NEW",
    })
}

fn find_table(api: &Api, target: &Target) -> Result<Arc<Table>, ApiError> {
    if let Some(ix) = &target.index {
        let t = active_table(api, &target.table)?;
        if t.meta.global_index(ix).is_none() && !t.meta.local_indexes.iter().any(|l| &l.name == ix)
        {
            return Err(ApiError::not_found());
        }
        return Ok(t);
    }
    active_table(api, &target.table)
}

/// The key schema a statement on `target` reads by: the table's, or its
/// index's.
fn target_schema(table: &Table, target: &Target) -> KeySchema {
    let Some(ix) = &target.index else {
        return table.schema.clone();
    };
    if let Some(g) = table.meta.global_index(ix) {
        return g.index.key.clone();
    }
    table
        .meta
        .local_indexes
        .iter()
        .find(|l| &l.name == ix)
        .map(|l| l.key.clone())
        .unwrap_or_else(|| table.schema.clone())
}

/// A single-item statement's table, its key (from equalities on every key
/// attribute in the WHERE), and the WHERE's other conjuncts.
fn keyed<'a>(
    api: &Api,
    target: &Target,
    filter: Option<&'a Expr>,
    r: &mut Render,
) -> Result<(Arc<Table>, Value, Vec<&'a Expr>), ApiError> {
    let table = find_table(api, target)?;
    let schema = target_schema(&table, target);
    let conjuncts = filter.map(Expr::conjuncts).unwrap_or_default();
    let (key, rest) = split_key(&schema, &conjuncts, true, r.params)?;
    if key.len() < schema.hash.len() + schema.range.len() {
        return Err(ApiError::validation(NEED_FULL_KEY));
    }
    Ok((table, Value::Object(key.into_iter().collect()), rest))
}

/// Takes an equality (`attr = value`) on each key attribute of `schema` out
/// of `conjuncts`; returns the key found and the conjuncts left. With
/// `range`, sort-key attributes are taken too.
fn split_key<'a>(
    schema: &KeySchema,
    conjuncts: &[&'a Expr],
    range: bool,
    params: &[Value],
) -> Result<(BTreeMap<String, Value>, Vec<&'a Expr>), ApiError> {
    let attrs: Vec<_> = schema
        .hash
        .iter()
        .chain(schema.range.iter().filter(|_| range))
        .collect();
    let mut key = BTreeMap::new();
    let mut rest = Vec::new();
    for c in conjuncts {
        let found = match c {
            Expr::Cmp(CmpOp::Eq, a, b) => match (a.as_ref(), b.as_ref()) {
                (Expr::Path(p), v) | (v, Expr::Path(p)) if v.is_value() && p.elems.len() == 1 => {
                    attrs.iter().find(|k| k.name == p.root()).map(|k| (k, v))
                }
                _ => None,
            },
            _ => None,
        };
        match found {
            Some((k, v)) if !key.contains_key(&k.name) => {
                let value = attribute_json(v, params)?.unwrap_or(Value::Null);
                let ty = value.as_object().and_then(|o| o.keys().next().cloned());
                if ty.as_deref() != Some(k.ty.descriptor()) {
                    return Err(ApiError::validation(
                        "Key attribute's data type should match its data type in table's schema",
                    ));
                }
                key.insert(k.name.clone(), value);
            }
            _ => rest.push(*c),
        }
    }
    Ok((key, rest))
}

fn plan_select(api: &Api, s: &Select, r: &mut Render, single_item: bool) -> Result<Plan, ApiError> {
    let table = find_table(api, &s.target)?;
    let schema = target_schema(&table, &s.target);
    let conjuncts = s.filter.as_ref().map(Expr::conjuncts).unwrap_or_default();
    let (full, rest) = split_key(&schema, &conjuncts, true, r.params)?;
    let whole = schema.hash.len() + schema.range.len();
    let by_key = full.len() == whole && rest.is_empty() && s.target.index.is_none();
    if single_item && !by_key {
        return Err(ApiError::validation(NEED_FULL_KEY));
    }
    let projection = s.projection.clone();
    // The top-level attributes only: a projected list keeps just the
    // selected elements, so `l[1]` could not be found in it afterwards.
    let roots = projection.as_ref().map(|paths| {
        let mut roots: Vec<Path> = Vec::new();
        for p in paths {
            let root = Path::attr(p.root());
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        roots
    });
    if by_key && s.order.is_empty() {
        let mut key = Item::new();
        for (k, v) in full {
            key.insert(k, AttributeValue::from_json(&v)?);
        }
        return Ok(Plan::Get(GetPlan {
            table,
            name: s.target.table.clone(),
            key,
            roots,
            output: projection,
        }));
    }
    let mut req = r.request(&s.target.table, Value::Null, None, None);
    if let Some(roots) = &roots {
        req["ProjectionExpression"] = json!(r.paths(roots));
    }
    if let Some(ix) = &s.target.index {
        req["IndexName"] = json!(ix);
    }
    // A Query needs an equality on every partition-key attribute; its
    // filter may not name a key attribute, so such a WHERE is scanned.
    let (hash, after_hash) = split_key(&schema, &conjuncts, false, r.params)?;
    let keys: Vec<&str> = schema
        .hash
        .iter()
        .chain(schema.range.iter())
        .chain(table.schema.hash.iter().chain(table.schema.range.iter()))
        .map(|k| k.name.as_str())
        .collect();
    let mut range_cond = None;
    let mut filter = Vec::new();
    for c in after_hash {
        let on_range = schema.range.len() == 1
            && range_cond.is_none()
            && range_condition(
                c,
                schema.range.first().map(|k| k.name.as_str()).unwrap_or(""),
            );
        if on_range {
            range_cond = Some(c);
        } else {
            filter.push(c);
        }
    }
    let queryable = hash.len() == schema.hash.len() && !filter.iter().any(|c| c.mentions(&keys));
    if !queryable {
        if !s.order.is_empty() {
            return Err(ApiError::validation(
                "Must have WHERE clause in the statement when using ORDER BY clause.",
            ));
        }
        if let Some(f) = &s.filter {
            req["FilterExpression"] = json!(r.condition(f)?);
        }
        r.finish(&mut req);
        return Ok(Plan::Scan(req, projection));
    }
    let mut kce: Vec<String> = Vec::new();
    for (name, v) in &hash {
        kce.push(format!("{} = {}", r.name(name), r.value_json(v.clone())));
    }
    if let Some(c) = range_cond {
        kce.push(r.condition(c)?);
    }
    req["KeyConditionExpression"] = json!(kce.join(" AND "));
    if !filter.is_empty() {
        req["FilterExpression"] = json!(r.all(&filter)?);
    }
    for (path, desc) in &s.order {
        let k = path.root();
        if path.elems.len() != 1 || !keys.contains(&k) {
            return Err(ApiError::validation(format!(
                "Order by is supported only on key attributes: {k}"
            )));
        }
        if *desc {
            req["ScanIndexForward"] = json!(false);
        }
    }
    r.finish(&mut req);
    Ok(Plan::Query(req, projection))
}

/// Whether `c` is a condition a Query accepts on the sort key `range`.
fn range_condition(c: &Expr, range: &str) -> bool {
    let is_range = |e: &Expr| matches!(e, Expr::Path(p) if p.elems.len() == 1 && p.root() == range);
    match c {
        Expr::Cmp(op, a, b) => {
            *op != CmpOp::Ne && ((is_range(a) && b.is_value()) || (is_range(b) && a.is_value()))
        }
        Expr::Between(a, lo, hi) => is_range(a) && lo.is_value() && hi.is_value(),
        Expr::Call(f, args) => {
            f == "begins_with"
                && args.len() == 2
                && args.first().is_some_and(is_range)
                && args.get(1).is_some_and(Expr::is_value)
        }
        _ => false,
    }
}

/// Where a condition is rendered: how tightly its surroundings bind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Binding {
    Or,
    And,
    Not,
}

/// Renders statement parts as DynamoDB expressions, collecting the
/// placeholder names and values they use.
struct Render<'p> {
    params: &'p [Value],
    names: Map<String, Value>,
    by_name: BTreeMap<String, String>,
    values: Map<String, Value>,
}

impl<'p> Render<'p> {
    fn new(params: &'p [Value]) -> Render<'p> {
        Render {
            params,
            names: Map::new(),
            by_name: BTreeMap::new(),
            values: Map::new(),
        }
    }

    /// A request for `table` with `key`, a condition and ReturnValues.
    fn request(
        &mut self,
        table: &str,
        key: Value,
        condition: Option<String>,
        return_values: Option<&str>,
    ) -> Value {
        let mut req = json!({ "TableName": table });
        if !key.is_null() {
            req["Key"] = key;
        }
        if let Some(c) = condition {
            req["ConditionExpression"] = json!(c);
        }
        if let Some(rv) = return_values {
            req["ReturnValues"] = json!(rv);
        }
        self.finish(&mut req);
        req
    }

    /// Adds the names and values used so far to `req`.
    fn finish(&self, req: &mut Value) {
        if !self.names.is_empty() {
            req["ExpressionAttributeNames"] = Value::Object(self.names.clone());
        }
        if !self.values.is_empty() {
            req["ExpressionAttributeValues"] = Value::Object(self.values.clone());
        }
    }

    fn name(&mut self, n: &str) -> String {
        if let Some(p) = self.by_name.get(n) {
            return p.clone();
        }
        let p = format!("#p{}", self.by_name.len());
        self.by_name.insert(n.to_string(), p.clone());
        self.names.insert(p.clone(), json!(n));
        p
    }

    fn path(&mut self, path: &Path) -> String {
        let mut out = String::new();
        for e in &path.elems {
            match e {
                PathElem::Attr(a) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&self.name(a));
                }
                PathElem::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    fn paths(&mut self, paths: &[Path]) -> String {
        let rendered: Vec<String> = paths.iter().map(|p| self.path(p)).collect();
        rendered.join(", ")
    }

    fn value_json(&mut self, v: Value) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), v);
        p
    }

    /// A value, a path or `size(path)`, as an operand.
    fn operand(&mut self, e: &Expr) -> Result<String, ApiError> {
        match e {
            Expr::Path(p) => Ok(self.path(p)),
            Expr::Call(f, args) if f == "size" => match args.as_slice() {
                [a] => Ok(format!("size({})", self.operand(a)?)),
                _ => Err(unsupported(e)),
            },
            _ => match attribute_json(e, self.params)? {
                Some(v) => Ok(self.value_json(v)),
                None => Err(unsupported(e)),
            },
        }
    }

    /// The conjunction of `conds`.
    fn all(&mut self, conds: &[&Expr]) -> Result<String, ApiError> {
        let parts: Result<Vec<String>, ApiError> =
            conds.iter().map(|c| self.nested(c, Binding::And)).collect();
        Ok(parts?.join(" AND "))
    }

    /// `attribute_exists(pk)` (or `attribute_not_exists`): whether the
    /// item of the statement's key exists.
    fn key_test(&mut self, schema: &KeySchema, exists: bool) -> Result<String, ApiError> {
        let hash = schema.hash.first().ok_or_else(|| {
            ApiError::InternalServerError("a table without a partition key".into())
        })?;
        let f = if exists {
            "attribute_exists"
        } else {
            "attribute_not_exists"
        };
        Ok(format!("{f}({})", self.name(&hash.name)))
    }

    /// `attribute_exists(key) AND rest`: the item exists and `rest` holds.
    fn exists_and(&mut self, schema: &KeySchema, rest: &[&Expr]) -> Result<String, ApiError> {
        let exists = self.key_test(schema, true)?;
        if rest.is_empty() {
            return Ok(exists);
        }
        Ok(format!("{exists} AND {}", self.all(rest)?))
    }

    fn condition(&mut self, e: &Expr) -> Result<String, ApiError> {
        self.nested(e, Binding::Or)
    }

    /// `e` rendered as an operand of `within`, parenthesized only where
    /// precedence needs it (DynamoDB refuses redundant parentheses).
    fn nested(&mut self, e: &Expr, within: Binding) -> Result<String, ApiError> {
        Ok(match e {
            Expr::Or(a, b) => {
                let s = format!(
                    "{} OR {}",
                    self.nested(a, Binding::Or)?,
                    self.nested(b, Binding::Or)?
                );
                if within == Binding::Or {
                    s
                } else {
                    format!("({s})")
                }
            }
            Expr::And(a, b) => {
                let s = format!(
                    "{} AND {}",
                    self.nested(a, Binding::And)?,
                    self.nested(b, Binding::And)?
                );
                if within == Binding::Not {
                    format!("({s})")
                } else {
                    s
                }
            }
            Expr::Not(a) => format!("NOT {}", self.nested(a, Binding::Not)?),
            other => self.atom(other)?,
        })
    }

    /// A comparison, BETWEEN, IN, IS or function condition.
    fn atom(&mut self, e: &Expr) -> Result<String, ApiError> {
        Ok(match e {
            Expr::Cmp(op, a, b) => {
                format!("{} {} {}", self.operand(a)?, op.symbol(), self.operand(b)?)
            }
            Expr::Between(a, lo, hi) => format!(
                "{} BETWEEN {} AND {}",
                self.operand(a)?,
                self.operand(lo)?,
                self.operand(hi)?
            ),
            Expr::In(a, list) => {
                let a = self.operand(a)?;
                let items: Result<Vec<String>, ApiError> =
                    list.iter().map(|v| self.operand(v)).collect();
                format!("{a} IN ({})", items?.join(", "))
            }
            Expr::IsMissing(a, negated) => {
                let f = if *negated {
                    "attribute_exists"
                } else {
                    "attribute_not_exists"
                };
                format!("{f}({})", self.operand(a)?)
            }
            Expr::IsNull(a, negated) => {
                let test = format!(
                    "attribute_type({}, {})",
                    self.operand(a)?,
                    self.value_json(json!({"S": "NULL"}))
                );
                if *negated {
                    format!("NOT {test}")
                } else {
                    test
                }
            }
            Expr::Call(f, args)
                if matches!(
                    f.as_str(),
                    "begins_with"
                        | "contains"
                        | "attribute_exists"
                        | "attribute_not_exists"
                        | "attribute_type"
                ) =>
            {
                let args: Result<Vec<String>, ApiError> =
                    args.iter().map(|a| self.operand(a)).collect();
                format!("{f}({})", args?.join(", "))
            }
            other => return Err(unsupported(other)),
        })
    }

    /// An UpdateExpression for UPDATE's actions.
    fn update(&mut self, actions: &[Action]) -> Result<String, ApiError> {
        let (mut set, mut remove, mut add, mut delete) = (vec![], vec![], vec![], vec![]);
        for a in actions {
            match a {
                Action::Remove(p) => remove.push(self.path(p)),
                Action::Set(p, Expr::Call(f, args)) if f == "set_add" || f == "set_delete" => {
                    let (Some(Expr::Path(src)), Some(v), 2) =
                        (args.first(), args.get(1), args.len())
                    else {
                        return Err(ApiError::validation(format!(
                            "{f} takes the attribute and a set: {f}(path, <<...>>)"
                        )));
                    };
                    if src != p {
                        return Err(ApiError::validation(format!(
                            "{f} must name the attribute it sets"
                        )));
                    }
                    let clause = format!("{} {}", self.path(p), self.operand(v)?);
                    if f == "set_add" {
                        add.push(clause)
                    } else {
                        delete.push(clause)
                    }
                }
                Action::Set(p, v) => {
                    let target = self.path(p);
                    let value = self.set_value(v)?;
                    set.push(format!("{target} = {value}"));
                }
            }
        }
        Ok(dynaraft_expr::update::render_clauses(
            set, remove, add, delete,
        ))
    }

    /// The right-hand side of `SET path = ...`.
    fn set_value(&mut self, v: &Expr) -> Result<String, ApiError> {
        match v {
            Expr::Arith(plus, a, b) => Ok(format!(
                "{} {} {}",
                self.operand(a)?,
                if *plus { "+" } else { "-" },
                self.operand(b)?
            )),
            Expr::Call(f, args) if f == "list_append" && args.len() == 2 => {
                let args: Result<Vec<String>, ApiError> =
                    args.iter().map(|a| self.operand(a)).collect();
                Ok(format!("list_append({})", args?.join(", ")))
            }
            Expr::Call(f, args) if f == "if_not_exists" && args.len() == 2 => {
                let args: Result<Vec<String>, ApiError> =
                    args.iter().map(|a| self.operand(a)).collect();
                Ok(format!("if_not_exists({})", args?.join(", ")))
            }
            other => self.operand(other),
        }
    }
}

fn unsupported(e: &Expr) -> ApiError {
    let what = match e {
        Expr::Call(f, _) => format!("function {f}"),
        Expr::Arith(..) => "arithmetic here".to_string(),
        _ => "this expression here".to_string(),
    };
    ApiError::validation(format!("Unsupported operation: {what}"))
}
