//! The read side shared by Query and Scan (and the projections of GetItem,
//! BatchGetItem and TransactGetItems): the index a request names, its
//! filter, projection and Select, where a page resumes, and the page's
//! response. Every function takes typed request members.

use crate::enums::{ConditionalOperator, Select, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_expr::projection::project;
use dynaraft_expr::{
    Condition, ExprKind, Operand, Path, Substitutions, parse_condition, parse_projection,
};
use dynaraft_model::value::item_to_json;
use dynaraft_model::wire::{Int, List, Str};
use dynaraft_model::{Item, KeySchema};
use dynaraft_storage::global::GLOBAL_ENTRY_ID;
use dynaraft_storage::index::{entry_storage_key, holds};
use dynaraft_storage::read::{IndexRead, Page};
use dynaraft_storage::{IndexMeta, IndexStatus, Projection};
use serde_json::{Map, Value, json};

/// Most names in AttributesToGet.
pub const MAX_ATTRIBUTES_TO_GET: usize = 255;

/// The constraints on IndexName: those of a table name (3 to 255
/// characters of `[a-zA-Z0-9_.-]`).
pub fn check_index_name(v: &mut Violations, name: Option<&Str>) {
    if let Some(n) = name {
        check_table_name(v, Some(n), "indexName");
    }
}

/// The constraints on AttributesToGet: 1 to 255 names.
pub fn check_attributes_to_get(v: &mut Violations, names: Option<&List<Str>>) {
    let Some(l) = names else { return };
    if l.0.is_empty() {
        v.add(
            Some("[]"),
            "attributesToGet",
            "Member must have length greater than or equal to 1",
        );
    }
    if l.0.len() > MAX_ATTRIBUTES_TO_GET {
        let shown: Vec<&str> = l.0.iter().map(|s| &**s).collect();
        v.add(
            Some(&format!("[{}]", shown.join(", "))),
            "attributesToGet",
            &format!("Member must have length less than or equal to {MAX_ATTRIBUTES_TO_GET}"),
        );
    }
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
        (Some(_), Some(_)) => Err(mixed_parameters(
            &["AttributesToGet"],
            &["ProjectionExpression"],
        )),
        (Some(e), None) => Ok(Some(parse_projection(e, subs)?)),
        (None, Some(names)) => {
            let mut out = Vec::new();
            for n in names {
                if let Some(p) = attribute_name_problem(n) {
                    return Err(ApiError::validation(format!(
                        "One or more parameter values were invalid: {p}"
                    )));
                }
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

/// Runs `read` of `table` (of its global index `index`, if it names one)
/// once it has read capacity: the least a read consumes is reserved first,
/// in the partition holding `hash` if the read stays in one, and what the
/// read consumed (`bytes` of its result) is charged after.
/// `partition`, the key read and its partition-key attributes (of the
/// table or of `index`), is counted for Contributor Insights when it is
/// enabled.
#[allow(clippy::too_many_arguments)]
pub async fn charged<T>(
    api: &crate::Api,
    table: &Table,
    index: Option<&str>,
    hash: Option<u64>,
    partition: Option<(&[dynaraft_model::KeyAttr], &dynaraft_model::Item)>,
    consistent: bool,
    read: impl std::future::Future<Output = Result<T, dynaraft_cluster::ClusterError>>,
    bytes: impl FnOnce(&T) -> usize,
) -> Result<T, ApiError> {
    use crate::insights::Rule;
    let capacity = &api.cfg.capacity;
    let reserved = capacity.read(table, index, hash, read_units(0, consistent));
    if let Some((hash, key)) = partition {
        let rule = if reserved.is_ok() {
            Rule::Accessed
        } else {
            Rule::Throttled
        };
        capacity.insights.record(table, index, rule, hash, key);
    }
    let ticket = reserved.map_err(|t| super::throttled(api, t))?;
    let result = read.await;
    // A read that failed consumed nothing: its reservation is given back.
    let units = result
        .as_ref()
        .map_or(0.0, |r| read_units(bytes(r), consistent));
    capacity.settle(table, crate::capacity::Dir::Read, ticket, units, |_| 0.0);
    Ok(result?)
}

impl IndexTarget {
    /// The global index's name, for the capacity it draws on (a local
    /// index reads its table's).
    pub fn global_name(&self) -> Option<&str> {
        self.read.global.map(|_| self.meta.name.as_str())
    }
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
    pub fn resolve(
        name: Option<&str>,
        table: &Table,
        consistent: bool,
    ) -> Result<Option<IndexTarget>, ApiError> {
        let Some(name) = name else {
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
            // A global index cannot fetch from the table: asking for an
            // attribute it does not hold is an error, not an omission.
            let missing: Vec<&str> = exprs
                .projection
                .iter()
                .flatten()
                .map(|p| p.root())
                .filter(|a| !held(a))
                .collect();
            if !missing.is_empty() {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: Global secondary index {} does not project [{}]",
                    self.meta.name,
                    missing.join(", ")
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
    fn start_key(&self, key: Option<Item>, table: &KeySchema) -> Result<Option<Vec<u8>>, ApiError> {
        let Some(key) = key else {
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

/// DynamoDB refuses a document path into a key attribute (`pk.a`, `pk[0]`)
/// in a projection, filter or update: the table's key attributes first
/// (`Key: pk`), then its indexes' (`IndexKey: x`).
pub fn check_key_paths<'a>(
    table: &Table,
    paths: impl IntoIterator<Item = &'a Path>,
) -> Result<(), ApiError> {
    let nested: std::collections::BTreeSet<&str> = paths
        .into_iter()
        .filter(|p| p.elems.len() > 1)
        .map(|p| p.root())
        .collect();
    if nested.is_empty() {
        return Ok(());
    }
    let index_keys = table
        .meta
        .global_indexes
        .iter()
        .flat_map(|g| g.index.key.key_attrs())
        .chain(
            table
                .meta
                .local_indexes
                .iter()
                .flat_map(|l| l.key.range.iter()),
        );
    let found = table
        .schema
        .key_attrs()
        .find(|ka| nested.contains(ka.name.as_str()))
        .map(|ka| ("Key", ka))
        .or_else(|| {
            index_keys
                .into_iter()
                .find(|ka| nested.contains(ka.name.as_str()))
                .map(|ka| ("IndexKey", ka))
        });
    match found {
        Some((role, ka)) => Err(ApiError::validation(format!(
            "Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: {role}: {}",
            ka.name
        ))),
        None => Ok(()),
    }
}

/// FilterExpression, or the legacy filter (`QueryFilter`/`ScanFilter`,
/// named `param` in messages, with ConditionalOperator) translated.
pub fn filter_source(
    filter: Option<&Str>,
    legacy: Option<&Map<String, Value>>,
    param: &str,
    operator: Option<ConditionalOperator>,
    input: &mut ExprInput,
) -> Result<Option<String>, ApiError> {
    if let Some(f) = filter {
        return Ok(Some(f.0.clone()));
    }
    match legacy {
        Some(filter) => {
            let mut l = input.legacy();
            let f = l.filter(param, filter, operator.map(WireEnum::as_str))?;
            input.absorb(l, f.as_ref());
            Ok(f)
        }
        None => Ok(None),
    }
}

/// Filter, projection and Select of a Query or Scan, parsed with `subs`.
pub fn read_exprs(
    select: Option<Select>,
    filter_src: Option<&str>,
    projection_expression: Option<&str>,
    attributes_to_get: Option<&List<Str>>,
    subs: &mut Substitutions,
    indexed: bool,
) -> Result<ReadExprs, ApiError> {
    let filter = match filter_src {
        Some(f) => Some(parse_condition(f, ExprKind::Filter, subs)?),
        None => None,
    };
    let legacy = attributes_to_get.map(|l| l.0.as_slice());
    let projection = projection_of(projection_expression, legacy, subs)?;
    match select {
        Some(Select::AllProjectedAttributes) if !indexed => {
            return Err(ApiError::validation(
                "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName",
            ));
        }
        Some(Select::SpecificAttributes) if projection.is_none() => {
            return Err(ApiError::validation(
                "Must specify the AttributesToGet or ProjectionExpression when choosing to get SPECIFIC_ATTRIBUTES",
            ));
        }
        Some(s @ (Select::Count | Select::AllAttributes)) if projection.is_some() => {
            let param = if legacy.is_some() {
                "AttributesToGet"
            } else {
                "ProjectionExpression"
            };
            let what = if s == Select::Count {
                "only the Count"
            } else {
                "ALL_ATTRIBUTES"
            };
            return Err(ApiError::validation(format!(
                "Cannot specify the {param} when choosing to get {what}"
            )));
        }
        _ => {}
    }
    Ok(ReadExprs {
        filter,
        projection,
        count_only: select == Some(Select::Count),
        all_attributes: select == Some(Select::AllAttributes),
    })
}

/// What a read of `table` (named `name`) needs allowed: `action` on the
/// table or its index `index`, the partition-key values of `keys`, and as
/// `dynamodb:Attributes` the key attributes and the projection's top-level
/// names (callers add a filter's). `dynamodb:Select` is what the
/// projection implies (callers with a Select set the request's): a read
/// without one returns every attribute (`ALL_ATTRIBUTES`), so a policy
/// that allows only some attributes can refuse it.
pub fn read_access<'a>(
    action: &'static str,
    name: &str,
    index: Option<&str>,
    schema: &dynaraft_model::KeySchema,
    keys: impl IntoIterator<Item = &'a dynaraft_model::Item>,
    projection: Option<&[Path]>,
) -> crate::auth::Access {
    use crate::auth::{Access, Resource};
    let resource = match index {
        Some(i) => Resource::Index(name.to_string(), i.to_string()),
        None => Resource::Table(name.to_string()),
    };
    let implied = match projection {
        Some(_) => "SPECIFIC_ATTRIBUTES",
        None => "ALL_ATTRIBUTES",
    };
    let key_names = schema
        .hash
        .iter()
        .chain(&schema.range)
        .map(|k| k.name.clone());
    let named = projection.into_iter().flatten();
    Access::new(action, resource)
        .keys(schema, keys)
        .attributes(key_names.chain(named.map(|p| p.root().to_string())))
        .select(Some(implied))
}

/// `access` with a Query's or Scan's filter attributes and Select.
pub fn filtered(
    access: crate::auth::Access,
    exprs: &ReadExprs,
    select: Option<&str>,
) -> crate::auth::Access {
    let mut paths = Vec::new();
    if let Some(f) = &exprs.filter {
        condition_paths(f, &mut paths);
    }
    let access = access.attributes(paths.iter().map(|p| p.root().to_string()));
    match select {
        Some(s) => access.select(Some(s)),
        None => access,
    }
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
        Condition::AttributeType(v, t) => {
            op(v, out);
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

/// Limit, at least 1, checked into `v`.
pub fn check_limit(v: &mut Violations, limit: Option<Int>, style: LimitStyle) -> Option<usize> {
    let l = limit?.0;
    if l < 1 {
        let constraint = "Member must have value greater than or equal to 1";
        match style {
            LimitStyle::Query => v.add_unquoted("Limit", constraint),
            LimitStyle::Scan => v.add(Some(&l.to_string()), "limit", constraint),
        }
        return None;
    }
    usize::try_from(l).ok()
}

/// The storage key a Query or Scan of `table` (or of `index`) resumes
/// after (its ExclusiveStartKey, `start`); for an index, also decides
/// whether base items are fetched for attributes outside its projection.
pub fn resume_after(
    start: Option<Item>,
    table: &KeySchema,
    index: Option<&mut IndexTarget>,
    exprs: &ReadExprs,
) -> Result<Option<Vec<u8>>, ApiError> {
    match index {
        Some(i) => {
            i.read.fetch_base = i.needs_base(exprs, table)?;
            i.start_key(start, table)
        }
        None => table_start_key(start, table),
    }
}

fn bad_start_key() -> ApiError {
    ApiError::validation(
        "The provided starting key is invalid: The provided key element does not match the schema",
    )
}

fn table_start_key(key: Option<Item>, schema: &KeySchema) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let bad = bad_start_key;
    schema.validate_key(&key).map_err(|_| bad())?;
    schema.storage_key(&key).map(Some).ok_or_else(bad)
}

/// The response body of a Query or Scan page of `table`; the items it
/// returns are counted for the table's ReturnedItemCount.
#[allow(clippy::too_many_arguments)]
pub fn answer_page(
    api: &crate::Api,
    table: &Table,
    mut page: Page,
    exprs: &ReadExprs,
    name: &str,
    index: Option<&IndexTarget>,
    mode: CapacityMode,
    consistent: bool,
) -> Value {
    if let Some(f) = &exprs.filter {
        // Filtered items were read (and count toward ScannedCount and
        // capacity) but are not returned.
        page.items.retain(|i| f.eval(Some(i)));
    }
    api.cfg.capacity.returned(table, page.items.len() as u64);
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
    // A read of an index consumes that index's capacity alone.
    let units = read_units(page.read_bytes, consistent);
    let capacity = match index {
        None => consumed(mode, name, units, false),
        Some(ix) => crate::params::consumed_with_indexes(
            mode,
            name,
            None,
            &[crate::params::IndexUnits {
                name: ix.meta.name.clone(),
                global: ix.read.global.is_some(),
                units,
            }],
            false,
        ),
    };
    insert_opt(&mut out, "ConsumedCapacity", capacity);
    out
}
