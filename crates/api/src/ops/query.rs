//! Query: the items of one partition-key value (of the table or of an
//! index), in sort-key order, a page at a time.
use super::read::*;
use crate::Api;
use crate::enums::{ConditionalOperator, Select, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::parse_key_condition;
use dynaraft_model::wire::{Dict, Flag, Int, List, Obj, Str, WireItem};
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions, query_bounds};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Query's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub table_name: Option<Str>,
    pub index_name: Option<Str>,
    pub select: Option<Str>,
    pub attributes_to_get: Option<List<Str>>,
    pub limit: Option<Int>,
    pub consistent_read: Option<Flag>,
    pub key_conditions: Option<Obj<Map<String, Value>>>,
    pub query_filter: Option<Obj<Map<String, Value>>>,
    pub conditional_operator: Option<Str>,
    pub scan_index_forward: Option<Flag>,
    pub exclusive_start_key: Option<WireItem>,
    pub return_consumed_capacity: Option<Str>,
    pub projection_expression: Option<Str>,
    pub filter_expression: Option<Str>,
    pub key_condition_expression: Option<Str>,
    pub expression_attribute_names: Option<Dict<Str>>,
    pub expression_attribute_values: Option<WireItem>,
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    // Constraints, in DynamoDB's order, all reported together.
    let mut v = Violations::default();
    let select = Select::member(&mut v, input.select.as_ref(), "select");
    check_index_name(&mut v, input.index_name.as_ref());
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    let operator = ConditionalOperator::member(
        &mut v,
        input.conditional_operator.as_ref(),
        "conditionalOperator",
    );
    check_attributes_to_get(&mut v, input.attributes_to_get.as_ref());
    let limit = check_limit(&mut v, input.limit, LimitStyle::Query);
    v.check()?;
    let consistent = input.consistent_read.is_some_and(|f| f.0);
    let forward = input.scan_index_forward.is_none_or(|f| f.0);
    let mut exprs_in = ExprInput::from_parts(
        &[
            (
                "KeyConditionExpression",
                input.key_condition_expression.is_some(),
            ),
            ("FilterExpression", input.filter_expression.is_some()),
            (
                "ProjectionExpression",
                input.projection_expression.is_some(),
            ),
        ],
        &[
            ("KeyConditions", input.key_conditions.is_some()),
            ("QueryFilter", input.query_filter.is_some()),
            ("ConditionalOperator", input.conditional_operator.is_some()),
            ("AttributesToGet", input.attributes_to_get.is_some()),
        ],
        input.expression_attribute_names,
        input.expression_attribute_values,
    )?;
    let start = input
        .exclusive_start_key
        .map(WireItem::into_item)
        .transpose()?;
    let table = active_table(api, &name)?;
    let mut index = IndexTarget::resolve(input.index_name.as_deref(), &table, consistent)?;
    let key_schema = index.as_ref().map_or(&table.schema, |i| &i.read.schema);
    let missing = || {
        ApiError::validation(
            "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
        )
    };
    let kce = match (input.key_condition_expression, &input.key_conditions) {
        (Some(k), _) => k.0,
        (None, Some(kc)) => {
            let mut l = exprs_in.legacy();
            let k = l.key_conditions(&kc.0)?.ok_or_else(missing)?;
            exprs_in.absorb(l, Some(&k));
            k
        }
        (None, None) => return Err(missing()),
    };
    let filter_src = filter_source(
        input.filter_expression.as_ref(),
        input.query_filter.as_ref().map(|f| &f.0),
        "queryFilter",
        operator,
        &mut exprs_in,
    )?;
    let mut subs = exprs_in.subs();
    let kc = parse_key_condition(&kce, &mut subs, key_schema)?;
    let exprs = read_exprs(
        select,
        filter_src.as_deref(),
        input.projection_expression.as_deref(),
        input.attributes_to_get.as_ref(),
        &mut subs,
        index.is_some(),
    )?;
    subs.check_unused()?;
    // The partition key queried (of the table or of the index).
    let pk: dynaraft_model::Item = key_schema
        .hash
        .iter()
        .zip(&kc.hash)
        .map(|(a, v)| (a.name.clone(), v.clone()))
        .collect();
    api.authorize(|| {
        let key = pk.clone();
        let access = read_access(
            "Query",
            &name,
            input.index_name.as_deref(),
            key_schema,
            [&key],
            exprs.projection.as_deref(),
        );
        filtered(access, &exprs, input.select.as_deref())
    })?;
    check_key_paths(&table, exprs.projection.iter().flatten())?;
    if let Some(f) = &exprs.filter {
        let mut paths = Vec::new();
        condition_paths(f, &mut paths);
        if let Some(p) = paths.iter().find(|p| key_schema.is_key_attr(p.root())) {
            return Err(ApiError::validation(format!(
                "Filter Expression can only contain non-primary key attributes: Primary key attribute: {}",
                p.root()
            )));
        }
        check_key_paths(&table, paths.iter().copied())?;
    }
    let (lo, hi) = query_bounds(key_schema, &kc)
        .ok_or_else(|| ApiError::validation("Query key condition not supported"))?;
    let start_after = resume_after(start, &table.schema, index.as_mut(), &exprs)?;
    if start_after.is_some() && index.is_none() && table.schema.range.is_empty() {
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
    // The key schema again: the start key needed the index mutably.
    let key_schema = index.as_ref().map_or(&table.schema, |i| &i.read.schema);
    let page = super::read::charged(
        api,
        &table,
        index.as_ref().and_then(IndexTarget::global_name),
        index
            .is_none()
            .then(|| dynaraft_storage::catalog::key_hash(&lo)),
        Some((&key_schema.hash, &pk)),
        consistent,
        api.router.read_range(
            &table,
            index.as_ref().map(|i| &i.read),
            (&lo, Some(&hi)),
            &opts,
            consistent,
        ),
        |p| p.read_bytes,
    )
    .await?;
    Ok(answer_page(
        api,
        &table,
        page,
        &exprs,
        &name,
        index.as_ref(),
        mode,
        consistent,
    ))
}
