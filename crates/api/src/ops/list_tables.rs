//! ListTables, paginated by table name.
use crate::Api;
use crate::error::ApiError;
use crate::params::{Violations, bounded_limit, check_table_name};
use crate::scope::display_name;
use dynaraft_model::wire::{Int, Str};
use serde::Deserialize;
use serde_json::{Value, json};

/// ListTables' request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub exclusive_start_table_name: Option<Str>,
    pub limit: Option<Int>,
}

pub const MAX_LIST_TABLES_LIMIT: i64 = 100;

pub fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let start = input.exclusive_start_table_name.as_deref();
    let limit = input.limit.as_ref();
    let mut v = Violations::default();
    if let Some(s) = start {
        check_table_name(&mut v, Some(s), "exclusiveStartTableName");
    }
    let limit = bounded_limit(&mut v, limit, MAX_LIST_TABLES_LIMIT, "limit");
    v.check()?;
    api.authorize(|| crate::auth::Access::new("ListTables", crate::auth::Resource::Any))?;
    let names: Vec<String> = api
        .tables()
        .into_iter()
        .map(|t| display_name(&t.meta.name).to_string())
        .filter(|n| start.is_none_or(|s| n.as_str() > s))
        .collect();
    let page: Vec<&String> = names.iter().take(limit).collect();
    let mut out = json!({ "TableNames": page });
    if names.len() > limit
        && let Some(last) = page.last()
    {
        out["LastEvaluatedTableName"] = json!(last);
    }
    Ok(out)
}
