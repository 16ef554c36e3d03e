//! Scan, including parallel scan (Segment / TotalSegments).
use super::query::{
    IndexTarget, LimitStyle, filter_source, limit, page_response, read_exprs, resume_after,
};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions, segment_bounds};
use serde_json::Value;

/// Most segments of a parallel scan.
pub const MAX_TOTAL_SEGMENTS: i64 = 1_000_000;

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let mode = capacity_mode(body)?;
    let limit = limit(body, LimitStyle::Scan)?;
    let consistent = opt_bool(body, "ConsistentRead")?.unwrap_or(false);
    let segment = opt_i64(body, "Segment")?;
    let total = opt_i64(body, "TotalSegments")?;
    let mut v = Violations::default();
    if let Some(s) = segment {
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
    if let Some(t) = total {
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
    v.check()?;
    let seg = match (segment, total) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ApiError::validation(
                "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::validation(
                "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
            ));
        }
        (Some(s), Some(t)) if s >= t => {
            return Err(ApiError::validation(format!(
                "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {s} is not less than TotalSegments: {t}"
            )));
        }
        (Some(s), Some(t)) => Some((s as u32, t as u32)),
    };
    let table = active_table(api, &name)?;
    let mut index = IndexTarget::from_body(body, &table, consistent)?;
    let mut input = ExprInput::from_body(
        body,
        &["FilterExpression", "ProjectionExpression"],
        &["ScanFilter", "ConditionalOperator", "AttributesToGet"],
    )?;
    let filter_src = filter_source(body, "ScanFilter", &mut input)?;
    let mut subs = input.subs();
    let exprs = read_exprs(body, filter_src.as_deref(), &mut subs, index.is_some())?;
    subs.check_unused()?;
    let start_after = resume_after(body, &table.schema, index.as_mut(), &exprs)?;
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
    let page = api
        .router
        .read_range(
            &table,
            index.as_ref().map(|i| &i.read),
            (&lo, hi.as_deref()),
            &opts,
            consistent,
        )
        .await?;
    Ok(page_response(page, &exprs, &name, mode, consistent))
}
