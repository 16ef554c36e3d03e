//! Scan, including parallel scan (Segment / TotalSegments).
use super::read::*;
use crate::Api;
use crate::enums::{ConditionalOperator, Select, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_model::wire::{Dict, Flag, Int, List, Obj, Str, WireItem};
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions, segment_bounds};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Most segments of a parallel scan.
pub const MAX_TOTAL_SEGMENTS: i64 = 1_000_000;

/// Scan's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub table_name: Option<Str>,
    pub index_name: Option<Str>,
    pub attributes_to_get: Option<List<Str>>,
    pub limit: Option<Int>,
    pub select: Option<Str>,
    pub scan_filter: Option<Obj<Map<String, Value>>>,
    pub conditional_operator: Option<Str>,
    pub exclusive_start_key: Option<WireItem>,
    pub return_consumed_capacity: Option<Str>,
    pub total_segments: Option<Int>,
    pub segment: Option<Int>,
    pub projection_expression: Option<Str>,
    pub filter_expression: Option<Str>,
    pub expression_attribute_names: Option<Dict<Str>>,
    pub expression_attribute_values: Option<WireItem>,
    pub consistent_read: Option<Flag>,
}

/// Segment and TotalSegments' ranges, checked into `v`.
fn check_segments(v: &mut Violations, segment: Option<Int>, total: Option<Int>) {
    if let Some(Int(t)) = total {
        if t < 1 {
            v.add(
                Some(&t.to_string()),
                "totalSegments",
                "Member must have value greater than or equal to 1",
            );
        }
        if t > MAX_TOTAL_SEGMENTS {
            v.add(
                Some(&t.to_string()),
                "totalSegments",
                "Member must have value less than or equal to 1000000",
            );
        }
    }
    if let Some(Int(s)) = segment {
        if s < 0 {
            v.add(
                Some(&s.to_string()),
                "segment",
                "Member must have value greater than or equal to 0",
            );
        }
        if s > MAX_TOTAL_SEGMENTS - 1 {
            v.add(
                Some(&s.to_string()),
                "segment",
                "Member must have value less than or equal to 999999",
            );
        }
    }
}

/// The segment to scan, when the request asks for one of several.
fn segment_of(segment: Option<Int>, total: Option<Int>) -> Result<Option<(u32, u32)>, ApiError> {
    match (segment.map(|s| s.0), total.map(|t| t.0)) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ApiError::validation(
            "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
        )),
        (None, Some(_)) => Err(ApiError::validation(
            "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
        )),
        (Some(s), Some(t)) if s >= t => Err(ApiError::validation(format!(
            "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {s} is not less than TotalSegments: {t}"
        ))),
        // Both were range-checked (0..=999999 and 1..=1000000).
        (Some(s), Some(t)) => Ok(u32::try_from(s).ok().zip(u32::try_from(t).ok())),
    }
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
    check_segments(&mut v, input.segment, input.total_segments);
    let limit = check_limit(&mut v, input.limit, LimitStyle::Scan);
    check_attributes_to_get(&mut v, input.attributes_to_get.as_ref());
    v.check()?;
    let seg = segment_of(input.segment, input.total_segments)?;
    let consistent = input.consistent_read.is_some_and(|f| f.0);
    let mut exprs_in = ExprInput::from_parts(
        &[
            ("FilterExpression", input.filter_expression.is_some()),
            (
                "ProjectionExpression",
                input.projection_expression.is_some(),
            ),
        ],
        &[
            ("ScanFilter", input.scan_filter.is_some()),
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
    let filter_src = filter_source(
        input.filter_expression.as_ref(),
        input.scan_filter.as_ref().map(|f| &f.0),
        "scanFilter",
        operator,
        &mut exprs_in,
    )?;
    let mut subs = exprs_in.subs();
    let exprs = read_exprs(
        select,
        filter_src.as_deref(),
        input.projection_expression.as_deref(),
        input.attributes_to_get.as_ref(),
        &mut subs,
        index.is_some(),
    )?;
    subs.check_unused()?;
    api.authorize(|| {
        let schema = index.as_ref().map_or(&table.schema, |i| &i.read.schema);
        let index_name = input.index_name.as_deref();
        let access = read_access(
            "Scan",
            &name,
            index_name,
            schema,
            [],
            exprs.projection.as_deref(),
        );
        filtered(access, &exprs, input.select.as_deref())
    })?;
    check_key_paths(&table, exprs.projection.iter().flatten())?;
    if let Some(f) = &exprs.filter {
        let mut paths = Vec::new();
        condition_paths(f, &mut paths);
        check_key_paths(&table, paths.iter().copied())?;
    }
    let start_after = resume_after(start, &table.schema, index.as_mut(), &exprs)?;
    let (lo, hi) = match seg {
        Some((s, t)) => segment_bounds(s, t),
        None => (Vec::new(), None),
    };
    if let Some(start) = &start_after
        && (start < &lo || hi.as_ref().is_some_and(|h| start >= h))
    {
        return Err(ApiError::validation(
            "The provided Exclusive start key does not map to the provided Segment and TotalSegments values.",
        ));
    }
    let opts = ReadOptions {
        forward: true,
        start_after,
        limit,
        max_bytes: MAX_PAGE_BYTES,
    };
    let page = super::read::charged(
        api,
        &table,
        index.as_ref().and_then(IndexTarget::global_name),
        None,
        None,
        consistent,
        api.router.read_range(
            &table,
            index.as_ref().map(|i| &i.read),
            (&lo, hi.as_deref()),
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
