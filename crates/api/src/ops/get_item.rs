//! GetItem.
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_expr::Path;
use dynaraft_expr::projection::project;
use dynaraft_model::Item;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::{Dict, Flag, List, Str, WireItem};
use serde::Deserialize;
use serde_json::{Value, json};

/// GetItem's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub table_name: Option<Str>,
    pub key: Option<WireItem>,
    pub consistent_read: Option<Flag>,
    pub projection_expression: Option<Str>,
    pub attributes_to_get: Option<List<Str>>,
    pub expression_attribute_names: Option<Dict<Str>>,
    pub return_consumed_capacity: Option<Str>,
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let mut v = Violations::default();
    let mode = capacity_member(&mut v, input.return_consumed_capacity.as_ref());
    if input
        .attributes_to_get
        .as_ref()
        .is_some_and(|a| a.0.is_empty())
    {
        v.add(
            Some("[]"),
            "attributesToGet",
            "Member must have length greater than or equal to 1",
        );
    }
    v.required(input.key.as_ref(), "key");
    v.check()?;
    let consistent = input.consistent_read.is_some_and(|f| f.0);
    let exprs = ExprInput::from_parts(
        &[(
            "ProjectionExpression",
            input.projection_expression.is_some(),
        )],
        &[("AttributesToGet", input.attributes_to_get.is_some())],
        input.expression_attribute_names,
        None,
    )?;
    let key = wire_item(input.key)?;
    let mut subs = exprs.subs();
    let projection = super::read::projection_of(
        input.projection_expression.as_deref(),
        input.attributes_to_get.as_ref().map(|l| l.0.as_slice()),
        &mut subs,
    )?;
    subs.check_unused()?;
    let table = active_table(api, &name)?;
    fetch(
        api,
        &table,
        &name,
        &key,
        projection.as_deref(),
        consistent,
        mode,
    )
    .await
}

/// GetItem's execution on a checked request: reads `key` of `table` (named
/// `name` in ConsumedCapacity), projected to `projection`. Shared with
/// PartiQL's SELECT by full key.
pub async fn fetch(
    api: &Api,
    table: &Table,
    name: &str,
    key: &Item,
    projection: Option<&[Path]>,
    consistent: bool,
    mode: CapacityMode,
) -> Result<Value, ApiError> {
    table.schema.validate_key(key)?;
    api.authorize(|| {
        super::read::read_access("GetItem", name, None, &table.schema, [key], projection)
    })?;
    super::read::check_key_paths(table, projection.into_iter().flatten())?;
    let sk = table.schema.storage_key(key).ok_or_else(|| {
        ApiError::validation("The provided key element does not match the schema")
    })?;
    let hash = dynaraft_storage::catalog::key_hash(&sk);
    let item = super::read::charged(
        api,
        table,
        None,
        Some(hash),
        Some((&table.schema.hash, key)),
        consistent,
        api.router.get_item(table, &sk, consistent),
        |i| i.as_ref().map_or(0, item_size_bytes),
    )
    .await?;
    let size = item.as_ref().map_or(0, item_size_bytes);
    let mut out = json!({});
    let item = match (projection, item) {
        (Some(p), Some(i)) => Some(project(&i, p)),
        (None, i) => i,
        (_, None) => None,
    };
    insert_opt(&mut out, "Item", item.as_ref().map(item_to_json));
    insert_opt(
        &mut out,
        "ConsumedCapacity",
        consumed(mode, name, read_units(size, consistent), false),
    );
    Ok(out)
}
