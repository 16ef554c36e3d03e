//! Query, and the read-side expression handling shared with Scan, GetItem
//! and BatchGetItem.
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_expr::projection::project;
use dynaraft_expr::{
    Condition, ExprKind, Operand, Path, Substitutions, parse_condition, parse_key_condition,
    parse_projection,
};
use dynaraft_model::value::{item_from_json, item_to_json};
use dynaraft_model::wire::{List, Str};
use dynaraft_model::{Item, KeySchema};
use dynaraft_storage::global::GLOBAL_ENTRY_ID;
use dynaraft_storage::index::{entry_storage_key, holds};
use dynaraft_storage::read::{IndexRead, MAX_PAGE_BYTES, Page, ReadOptions, query_bounds};
use dynaraft_storage::{IndexMeta, IndexStatus, Projection};
use serde_json::{Value, json};

/// ProjectionExpression or AttributesToGet, when it is the request's only
/// expression (GetItem, BatchGetItem).
pub fn projection(body: &Value) -> Result<Option<Vec<Path>>, ApiError> {
    let expr = opt_str(body, "ProjectionExpression")?;
    let input = ExprInput::from_body(body, &["ProjectionExpression"], &["AttributesToGet"])?;
    let mut subs = input.subs();
    let p = projection_with(body, expr, &mut subs)?;
    subs.check_unused()?;
    Ok(p)
}

fn projection_with(
    body: &Value,
    expr: Option<&str>,
    subs: &mut Substitutions,
) -> Result<Option<Vec<Path>>, ApiError> {
    let legacy = member::<List<Str>>(body, "AttributesToGet")?;
    projection_of(expr, legacy.as_ref().map(|l| l.0.as_slice()), subs)
}

/// ProjectionExpression, or the legacy AttributesToGet, as paths.
pub fn projection_of(
    expr: Option<&str>,
    legacy: Option<&[Str]>,
    subs: &mut Substitutions,
) -> Result<Option<Vec<Path>>, ApiError> {
    if legacy.is_some_and(|l| l.is_empty()) {
        let mut v = Violations::default();
        v.add(
            Some("[]"),
            "attributesToGet",
            "Member must have length greater than or equal to 1",
        );
        v.check()?;
    }
    match (expr, legacy) {
        (Some(_), Some(_)) => Err(ApiError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}",
        )),
        (Some(e), None) => Ok(Some(parse_projection(e, subs)?)),
        (None, Some(names)) => {
            let mut out = Vec::new();
            for n in names {
                if out.iter().any(|p: &Path| p.root() == &**n) {
                    return Err(ApiError::validation(format!(
                        "One or more parameter values were invalid: Duplicate value in attribute name: {}",
                        &**n
                    )));
                }
                out.push(Path::attr(n));
            }
            Ok(Some(out))
        }
        (None, None) => Ok(None),
    }
}

/// Filter, projection and select of a Query or Scan, parsed with one set of
/// substitutions.
pub struct ReadExprs {
    pub filter: Option<Condition>,
    pub projection: Option<Vec<Path>>,
    pub count_only: bool,
    /// Select=ALL_ATTRIBUTES was asked for.
    pub all_attributes: bool,
}

/// The index a Query or Scan names, resolved against the table: what the
/// storage read needs, and the index's key schema.
pub struct IndexTarget {
    pub read: IndexRead,
    pub meta: IndexMeta,
}

impl IndexTarget {
    /// `IndexName` of the request, if any; DynamoDB's error for an index
    /// the table does not have, for a strongly consistent read of a global
    /// index, and for a global index still being backfilled.
    pub fn from_body(
        body: &Value,
        table: &Table,
        consistent: bool,
    ) -> Result<Option<IndexTarget>, ApiError> {
        let Some(name) = opt_str(body, "IndexName")? else {
            return Ok(None);
        };
        if let Some((id, meta)) = table.meta.local_index(name) {
            return Ok(Some(IndexTarget {
                read: IndexRead {
                    id,
                    global: None,
                    schema: meta.key_schema(),
                    fetch_base: false,
                },
                meta: meta.clone(),
            }));
        }
        let g = table.meta.global_index(name).ok_or_else(|| {
            ApiError::validation(format!(
                "The table does not have the specified index: {name}"
            ))
        })?;
        if consistent {
            return Err(ApiError::validation(
                "Consistent reads are not supported on global secondary indexes",
            ));
        }
        if g.status != IndexStatus::Active {
            return Err(ApiError::validation(format!(
                "Cannot read from backfilling global secondary index: {name}"
            )));
        }
        Ok(Some(IndexTarget {
            read: IndexRead {
                id: GLOBAL_ENTRY_ID,
                global: Some(g.id),
                schema: g.index.key_schema(),
                fetch_base: false,
            },
            meta: g.index.clone(),
        }))
    }

    /// Whether the request needs attributes the index does not hold: a
    /// local index then reads them from the base item, as DynamoDB does; a
    /// global index returns what it holds, and refuses ALL_ATTRIBUTES
    /// unless it projects everything.
    fn needs_base(&self, exprs: &ReadExprs, table: &KeySchema) -> Result<bool, ApiError> {
        let held = |name: &str| holds(&self.meta.projection, table, &self.read.schema, name);
        if matches!(self.meta.projection, Projection::All) {
            return Ok(false);
        }
        if self.read.global.is_some() {
            if exprs.all_attributes {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported for global secondary index {} because its projection type is not ALL",
                    self.meta.name
                )));
            }
            return Ok(false);
        }
        let mut paths = Vec::new();
        if let Some(f) = &exprs.filter {
            condition_paths(f, &mut paths);
        }
        Ok(exprs.all_attributes
            || paths.iter().any(|p| !held(p.root()))
            || exprs
                .projection
                .as_ref()
                .is_some_and(|ps| ps.iter().any(|p| !held(p.root()))))
    }

    /// The entry key to resume after: ExclusiveStartKey must hold the
    /// table's and the index's key attributes.
    fn start_key(&self, body: &Value, table: &KeySchema) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(key) = start_key_item(body)? else {
            return Ok(None);
        };
        let bad = bad_start_key;
        let attrs: Vec<_> = table
            .key_attrs()
            .chain(self.read.schema.key_attrs())
            .collect();
        let typed = |ka: &&dynaraft_model::KeyAttr| {
            key.get(&ka.name)
                .is_some_and(|v| v.attr_type() == ka.ty.attr_type())
        };
        let names: std::collections::BTreeSet<&str> =
            attrs.iter().map(|ka| ka.name.as_str()).collect();
        if key.len() != names.len() || !attrs.iter().all(typed) {
            return Err(bad());
        }
        entry_storage_key(&self.read.schema, table, &key)
            .map(Some)
            .ok_or_else(bad)
    }
}

/// FilterExpression, or the legacy filter (`QueryFilter`/`ScanFilter` with
/// `ConditionalOperator`) translated.
pub fn filter_source(
    body: &Value,
    legacy_field: &str,
    input: &mut ExprInput,
) -> Result<Option<String>, ApiError> {
    if let Some(f) = opt_str(body, "FilterExpression")? {
        return Ok(Some(f.to_string()));
    }
    match opt_object(body, legacy_field)? {
        Some(filter) => {
            let mut l = input.legacy();
            let param = if legacy_field == "QueryFilter" {
                "queryFilter"
            } else {
                "scanFilter"
            };
            let f = l.filter(param, filter, opt_str(body, "ConditionalOperator")?)?;
            input.absorb(l);
            Ok(f)
        }
        None => Ok(None),
    }
}

pub fn read_exprs(
    body: &Value,
    filter_src: Option<&str>,
    subs: &mut Substitutions,
    indexed: bool,
) -> Result<ReadExprs, ApiError> {
    let select = enum_value(
        body,
        "Select",
        "select",
        &[
            "SPECIFIC_ATTRIBUTES",
            "COUNT",
            "ALL_ATTRIBUTES",
            "ALL_PROJECTED_ATTRIBUTES",
        ],
    )?;
    let filter = match filter_src {
        Some(f) => Some(parse_condition(f, ExprKind::Filter, subs)?),
        None => None,
    };
    let projection = projection_with(body, opt_str(body, "ProjectionExpression")?, subs)?;
    match select {
        Some("ALL_PROJECTED_ATTRIBUTES") if !indexed => {
            return Err(ApiError::validation(
                "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName",
            ));
        }
        Some("SPECIFIC_ATTRIBUTES") if projection.is_none() => {
            return Err(ApiError::validation(
                "Must specify the AttributesToGet or ProjectionExpression when choosing to get SPECIFIC_ATTRIBUTES",
            ));
        }
        Some("COUNT") | Some("ALL_ATTRIBUTES") if projection.is_some() => {
            let param = if body.get("AttributesToGet").is_some_and(|v| !v.is_null()) {
                "AttributesToGet"
            } else {
                "ProjectionExpression"
            };
            return Err(ApiError::validation(format!(
                "Cannot specify the {param} when choosing to get {}",
                if select == Some("COUNT") {
                    "only the Count"
                } else {
                    "ALL_ATTRIBUTES"
                }
            )));
        }
        _ => {}
    }
    Ok(ReadExprs {
        filter,
        projection,
        count_only: select == Some("COUNT"),
        all_attributes: select == Some("ALL_ATTRIBUTES"),
    })
}

pub fn condition_paths<'a>(c: &'a Condition, out: &mut Vec<&'a Path>) {
    let op = |o: &'a Operand, out: &mut Vec<&'a Path>| {
        if let Operand::Path(p) | Operand::Size(p) = o {
            out.push(p);
        }
    };
    match c {
        Condition::Cmp(a, _, b) | Condition::BeginsWith(a, b) | Condition::Contains(a, b) => {
            op(a, out);
            op(b, out);
        }
        Condition::Between(a, b, d) => {
            op(a, out);
            op(b, out);
            op(d, out);
        }
        Condition::In(a, l) => {
            op(a, out);
            l.iter().for_each(|x| op(x, out));
        }
        Condition::And(a, b) | Condition::Or(a, b) => {
            condition_paths(a, out);
            condition_paths(b, out);
        }
        Condition::Not(a) => condition_paths(a, out),
        Condition::AttributeExists(p) | Condition::AttributeNotExists(p) => out.push(p),
        Condition::AttributeType(p, t) => {
            out.push(p);
            op(t, out);
        }
    }
}

/// How an operation's validator names the Limit member: Query's (the
/// newer one) quotes no value and keeps the member's own spelling, Scan's
/// quotes the value at `limit`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LimitStyle {
    Query,
    Scan,
}

pub fn limit(body: &Value, style: LimitStyle) -> Result<Option<usize>, ApiError> {
    match opt_i64(body, "Limit")? {
        Some(l) if l < 1 => {
            let mut v = Violations::default();
            let constraint = "Member must have value greater than or equal to 1";
            match style {
                LimitStyle::Query => v.add_unquoted("Limit", constraint),
                LimitStyle::Scan => v.add(Some(&l.to_string()), "limit", constraint),
            }
            v.check()?;
            Ok(None)
        }
        Some(l) => Ok(Some(l as usize)),
        None => Ok(None),
    }
}

/// The storage key a Query or Scan of `table` (or of `index`) resumes
/// after; for an index, also decides whether base items are fetched for
/// attributes outside its projection.
pub fn resume_after(
    body: &Value,
    table: &KeySchema,
    index: Option<&mut IndexTarget>,
    exprs: &ReadExprs,
) -> Result<Option<Vec<u8>>, ApiError> {
    match index {
        Some(i) => {
            i.read.fetch_base = i.needs_base(exprs, table)?;
            i.start_key(body, table)
        }
        None => start_key(body, table),
    }
}

/// ExclusiveStartKey of the request, parsed.
fn start_key_item(body: &Value) -> Result<Option<Item>, ApiError> {
    match body.get("ExclusiveStartKey").filter(|v| !v.is_null()) {
        Some(j) => Ok(Some(item_from_json(j)?)),
        None => Ok(None),
    }
}

fn bad_start_key() -> ApiError {
    ApiError::validation(
        "The provided starting key is invalid: The provided key element does not match the schema",
    )
}

fn start_key(body: &Value, schema: &KeySchema) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(key) = start_key_item(body)? else {
        return Ok(None);
    };
    let bad = bad_start_key;
    schema.validate_key(&key).map_err(|_| bad())?;
    schema.storage_key(&key).map(Some).ok_or_else(bad)
}

/// The response body of a Query or Scan page.
pub fn page_response(
    mut page: Page,
    exprs: &ReadExprs,
    name: &str,
    mode: CapacityMode,
    consistent: bool,
) -> Value {
    if let Some(f) = &exprs.filter {
        // Filtered items were read (and count toward ScannedCount and
        // capacity) but are not returned.
        page.items.retain(|i| f.eval(Some(i)));
    }
    let mut out = json!({ "Count": page.items.len(), "ScannedCount": page.scanned });
    if !exprs.count_only {
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|i| match &exprs.projection {
                Some(p) => item_to_json(&project(i, p)),
                None => item_to_json(i),
            })
            .collect();
        out["Items"] = Value::Array(items);
    }
    insert_opt(
        &mut out,
        "LastEvaluatedKey",
        page.last_key.as_ref().map(item_to_json),
    );
    insert_opt(
        &mut out,
        "ConsumedCapacity",
        consumed(mode, name, read_units(page.read_bytes, consistent), false),
    );
    out
}

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let mode = capacity_mode(body)?;
    let limit = limit(body, LimitStyle::Query)?;
    let consistent = opt_bool(body, "ConsistentRead")?.unwrap_or(false);
    let forward = opt_bool(body, "ScanIndexForward")?.unwrap_or(true);
    let mut input = ExprInput::from_body(
        body,
        &[
            "KeyConditionExpression",
            "FilterExpression",
            "ProjectionExpression",
        ],
        &[
            "KeyConditions",
            "QueryFilter",
            "ConditionalOperator",
            "AttributesToGet",
        ],
    )?;
    let table = active_table(api, &name)?;
    let mut index = IndexTarget::from_body(body, &table, consistent)?;
    let key_schema = index.as_ref().map_or(&table.schema, |i| &i.read.schema);
    let missing = || {
        ApiError::validation(
            "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
        )
    };
    let kce = match (
        opt_str(body, "KeyConditionExpression")?,
        opt_object(body, "KeyConditions")?,
    ) {
        (Some(k), _) => k.to_string(),
        (None, Some(kc)) => {
            let mut l = input.legacy();
            let k = l.key_conditions(kc)?.ok_or_else(missing)?;
            input.absorb(l);
            k
        }
        (None, None) => return Err(missing()),
    };
    let filter_src = filter_source(body, "QueryFilter", &mut input)?;
    let mut subs = input.subs();
    let kc = parse_key_condition(&kce, &mut subs, key_schema)?;
    let exprs = read_exprs(body, filter_src.as_deref(), &mut subs, index.is_some())?;
    subs.check_unused()?;
    if let Some(f) = &exprs.filter {
        let mut paths = Vec::new();
        condition_paths(f, &mut paths);
        if let Some(p) = paths.iter().find(|p| key_schema.is_key_attr(p.root())) {
            return Err(ApiError::validation(format!(
                "Filter Expression can only contain non-primary key attributes: Primary key attribute: {}",
                p.root()
            )));
        }
    }
    let (lo, hi) = query_bounds(key_schema, &kc)
        .ok_or_else(|| ApiError::validation("Query key condition not supported"))?;
    let start_after = resume_after(body, &table.schema, index.as_mut(), &exprs)?;
    if start_after.is_some() && index.is_none() && table.schema.range.is_none() {
        return Err(ApiError::validation(
            "The provided starting key is invalid: ExclusiveStartKey cannot be used to Query a table without a sort key",
        ));
    }
    if let Some(start) = &start_after
        && (start < &lo || start >= &hi)
    {
        return Err(ApiError::validation(
            "The provided starting key is outside query boundaries based on provided conditions",
        ));
    }
    let opts = ReadOptions {
        forward,
        start_after,
        limit,
        max_bytes: MAX_PAGE_BYTES,
    };
    let page = api
        .router
        .read_range(
            &table,
            index.as_ref().map(|i| &i.read),
            (&lo, Some(&hi)),
            &opts,
            consistent,
        )
        .await?;
    Ok(page_response(page, &exprs, &name, mode, consistent))
}
