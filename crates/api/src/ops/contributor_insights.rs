//! UpdateContributorInsights, DescribeContributorInsights and
//! ListContributorInsights: Contributor Insights of a table or of one of
//! its global indexes, kept in the catalog (`TableMeta::insights`); the
//! keys it finds are counted by `crate::insights` and shown in `/metrics`.
//!
//! A change is ENABLING (or DISABLING) for the configured transition delay
//! after it is made, then ENABLED (DISABLED), as DynamoDB shows it for a
//! second or two.

use crate::Api;
use crate::enums::{InsightsAction as Action, InsightsMode as Mode, WireEnum};
use crate::error::ApiError;
use crate::params::{Violations, resource_name};
use crate::scope::display_name;
use dynaraft_cluster::Table;
use dynaraft_model::wire::{Int, Str};
use dynaraft_storage::{Command, IndexStatus, InsightsMeta, TableStatus};
use serde::Deserialize;
use serde_json::{Value, json};

/// Most summaries ListContributorInsights returns per page (DynamoDB's
/// MaxResults ceiling).
pub const MAX_LIST_RESULTS: i64 = 100;

/// UpdateContributorInsights' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateInput {
    pub table_name: Option<Str>,
    pub index_name: Option<Str>,
    pub contributor_insights_action: Option<Str>,
    pub contributor_insights_mode: Option<Str>,
}

/// DescribeContributorInsights' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInput {
    pub table_name: Option<Str>,
    pub index_name: Option<Str>,
}

/// ListContributorInsights' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListInput {
    pub table_name: Option<Str>,
    pub max_results: Option<Int>,
    pub next_token: Option<Str>,
}

const ACCESSED_AND_THROTTLED: &str = "ACCESSED_AND_THROTTLED_KEYS";
const THROTTLED: &str = "THROTTLED_KEYS";

fn mode_name(i: &InsightsMeta) -> &'static str {
    if i.throttled_only {
        THROTTLED
    } else {
        ACCESSED_AND_THROTTLED
    }
}

/// Checks that `index`, if named, is a global index of `t` (a local one is
/// not found, as in DynamoDB), and returns it with its status.
fn global_index<'a>(
    t: &'a Table,
    name: &str,
    index: Option<&str>,
) -> Result<Option<&'a dynaraft_storage::GlobalIndexMeta>, ApiError> {
    let Some(ix) = index else {
        return Ok(None);
    };
    match t.meta.global_index(ix) {
        Some(g) => Ok(Some(g)),
        None => Err(ApiError::ResourceNotFound(format!(
            "Requested resource not found: Index: {ix} not found for table: {name}"
        ))),
    }
}

/// Whether a change made at `updated_ms` is still settling.
fn settling(api: &Api, updated_ms: u64) -> bool {
    dynaraft_storage::wall_clock_ms() < updated_ms.saturating_add(api.cfg.transition_delay_ms)
}

fn status(api: &Api, i: &InsightsMeta) -> &'static str {
    match (i.enabled, settling(api, i.updated_ms)) {
        (true, true) => "ENABLING",
        (true, false) => "ENABLED",
        (false, true) => "DISABLING",
        (false, false) => "DISABLED",
    }
}

/// The CloudWatch rule names DynamoDB makes for Contributor Insights:
/// most accessed (C) and most throttled (T) partition keys, and the same
/// for partition and sort keys when the table or index has a sort key;
/// THROTTLED_KEYS mode has only the throttled ones.
fn rule_names(t: &Table, index: Option<&str>, i: &InsightsMeta) -> Vec<String> {
    let resource = match index {
        Some(ix) => format!("{}-{ix}", display_name(&t.meta.name)),
        None => display_name(&t.meta.name).to_string(),
    };
    let sorted = match index.and_then(|ix| t.meta.global_index(ix)) {
        Some(g) => !g.index.key.range.is_empty(),
        None => !t.schema.range.is_empty(),
    };
    let mut kinds = vec!["PK"];
    if sorted {
        kinds.push("SK");
    }
    let mut names = Vec::new();
    for kind in kinds {
        for what in ["C", "T"] {
            if what == "C" && i.throttled_only {
                continue;
            }
            names.push(format!(
                "DynamoDBContributorInsights-{kind}{what}-{resource}-{}",
                i.rules_ms
            ));
        }
    }
    names
}

pub async fn update(api: &Api, input: UpdateInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let mut v = Violations::default();
    v.required(
        input.contributor_insights_action.as_ref(),
        "contributorInsightsAction",
    );
    let action = Action::member(
        &mut v,
        input.contributor_insights_action.as_ref(),
        "contributorInsightsAction",
    );
    let mode = Mode::member(
        &mut v,
        input.contributor_insights_mode.as_ref(),
        "contributorInsightsMode",
    );
    v.check()?;
    let index = input.index_name.as_deref();
    api.authorize(|| crate::auth::Access::table("UpdateContributorInsights", &name))?;
    let t = super::named_table(api, &name)?;
    let g = global_index(&t, &name, index)?;
    let enable = action == Some(Action::Enable);
    if enable && t.meta.status != TableStatus::Active {
        return Err(ApiError::validation(
            "Table or Index is not in a valid state to update Key Access Insights: TableStatus must be ACTIVE to enable ContributorInsights.",
        ));
    }
    if enable && g.is_some_and(|g| g.status != IndexStatus::Active) {
        return Err(ApiError::validation(
            "Table or Index is not in a valid state to update Key Access Insights: IndexStatus must be ACTIVE to enable ContributorInsights.",
        ));
    }
    let now = dynaraft_storage::wall_clock_ms();
    let mut meta = t.meta.clone();
    let current = meta.insights_of(index).cloned();
    let throttled_only = mode == Some(Mode::ThrottledKeys);
    let next = match (&current, enable) {
        // Disabling what was never enabled: nothing to do.
        (None, false) => None,
        // The same mode again: nothing changes.
        (Some(c), true) if c.enabled && c.throttled_only == throttled_only => None,
        (Some(c), false) if !c.enabled => None,
        // DISABLE keeps the mode it had (the one sent is not used).
        (Some(c), false) => Some(InsightsMeta {
            enabled: false,
            updated_ms: now,
            ..c.clone()
        }),
        (c, true) => Some(InsightsMeta {
            index: index.map(str::to_string),
            enabled: true,
            throttled_only,
            updated_ms: now,
            rules_ms: c.as_ref().filter(|c| c.enabled).map_or(now, |c| c.rules_ms),
        }),
    };
    // A change answers ENABLING or DISABLING, as DynamoDB's does however
    // fast it settles; no change answers the status as it is.
    let (shown, state) = match next {
        Some(n) => {
            meta.insights.retain(|i| i.index.as_deref() != index);
            meta.insights.push(n.clone());
            super::change_table(api, Command::ReplaceTableMeta(meta), &t.meta.name).await?;
            let state = if n.enabled { "ENABLING" } else { "DISABLING" };
            (Some(n), state)
        }
        None => {
            let state = current.as_ref().map_or("DISABLED", |c| status(api, c));
            (current, state)
        }
    };
    let mut out = json!({
        "TableName": display_name(&t.meta.name),
        "ContributorInsightsStatus": state,
    });
    if let Some(ix) = index {
        out["IndexName"] = json!(ix);
    }
    if let Some(i) = &shown {
        out["ContributorInsightsMode"] = json!(mode_name(i));
    }
    Ok(out)
}

pub fn describe(api: &Api, input: DescribeInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let index = input.index_name.as_deref();
    api.authorize(|| crate::auth::Access::table("DescribeContributorInsights", &name))?;
    let t = super::named_table(api, &name)?;
    global_index(&t, &name, index)?;
    let mut out = json!({ "TableName": display_name(&t.meta.name) });
    if let Some(ix) = index {
        out["IndexName"] = json!(ix);
    }
    match t.meta.insights_of(index) {
        None => out["ContributorInsightsStatus"] = json!("DISABLED"),
        Some(i) => {
            let status = status(api, i);
            out["ContributorInsightsStatus"] = json!(status);
            out["ContributorInsightsMode"] = json!(mode_name(i));
            out["LastUpdateDateTime"] = json!(i.updated_ms as f64 / 1000.0);
            if i.enabled {
                out["ContributorInsightsRuleList"] = json!(rule_names(&t, index, i));
            }
        }
    }
    Ok(out)
}

pub fn list(api: &Api, input: ListInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let limit = match input.max_results.as_ref().map(|i| i.0) {
        None => MAX_LIST_RESULTS,
        Some(n) if n > MAX_LIST_RESULTS => {
            v.add(
                Some(&n.to_string()),
                "maxResults",
                &format!("Member must have value less than or equal to {MAX_LIST_RESULTS}"),
            );
            MAX_LIST_RESULTS
        }
        Some(n) => n.max(0),
    };
    v.check()?;
    let only = match input.table_name.as_ref() {
        Some(_) => Some(resource_name(input.table_name.as_ref())?),
        None => None,
    };
    api.authorize(|| match &only {
        Some(n) => crate::auth::Access::table("ListContributorInsights", n),
        None => crate::auth::Access::new("ListContributorInsights", crate::auth::Resource::Any),
    })?;
    let tables = match &only {
        Some(n) => vec![super::named_table(api, n)?],
        None => api.tables(),
    };
    // Every entry not DISABLED, a table's own before its indexes', in
    // name order; a token is the position after the last one returned.
    let mut entries = Vec::new();
    for t in &tables {
        let mut own: Vec<&InsightsMeta> = t
            .meta
            .insights
            .iter()
            .filter(|i| {
                i.index
                    .as_deref()
                    .is_none_or(|ix| t.meta.global_index(ix).is_some())
            })
            .filter(|i| status(api, i) != "DISABLED")
            .collect();
        own.sort_by(|a, b| a.index.cmp(&b.index));
        for i in own {
            let mut e = json!({
                "TableName": display_name(&t.meta.name),
                "ContributorInsightsStatus": status(api, i),
                "ContributorInsightsMode": mode_name(i),
            });
            if let Some(ix) = &i.index {
                e["IndexName"] = json!(ix);
            }
            let token = format!(
                "{}/{}",
                display_name(&t.meta.name),
                i.index.as_deref().unwrap_or("")
            );
            entries.push((token, e));
        }
    }
    let start = match input.next_token.as_deref() {
        None => 0,
        Some(tok) => match entries.iter().position(|(t, _)| t.as_str() == tok) {
            Some(p) => p + 1,
            None => {
                return Err(ApiError::validation("Invalid NextToken"));
            }
        },
    };
    let page: Vec<&(String, Value)> = entries
        .iter()
        .skip(start)
        .take(limit.unsigned_abs() as usize)
        .collect();
    let mut out = json!({
        "ContributorInsightsSummaries": page.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
    });
    if start + page.len() < entries.len()
        && let Some((token, _)) = page.last()
    {
        out["NextToken"] = json!(token);
    }
    Ok(out)
}
