//! DeleteItem, and the keyed writes of a transaction that share its shape
//! (Delete, ConditionCheck).
use super::write::{
    ConditionMembers, OptionMembers, OptionOrder, WriteOptions, WriteRequest, write,
};
use crate::Api;
use crate::enums::ReturnValues;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_model::wire::{Dict, Obj, Str, WireItem};
use dynaraft_storage::WriteKind;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// DeleteItem's request, and the Delete or ConditionCheck of a
/// TransactWriteItems member.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub table_name: Option<Str>,
    pub key: Option<WireItem>,
    pub condition_expression: Option<Str>,
    pub expected: Option<Obj<Map<String, Value>>>,
    pub conditional_operator: Option<Str>,
    pub expression_attribute_names: Option<Dict<Str>>,
    pub expression_attribute_values: Option<WireItem>,
    pub return_values: Option<Str>,
    pub return_consumed_capacity: Option<Str>,
    pub return_item_collection_metrics: Option<Str>,
    pub return_values_on_condition_check_failure: Option<Str>,
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let mut v = Violations::default();
    let members = OptionMembers {
        return_values: input.return_values.as_ref(),
        capacity: input.return_consumed_capacity.as_ref(),
        metrics: input.return_item_collection_metrics.as_ref(),
        on_failure: input.return_values_on_condition_check_failure.as_ref(),
    };
    let opts = WriteOptions::check(&mut v, members, OptionOrder::ValuesFirst);
    v.check()?;
    opts.only_old()?;
    let rv = input.return_values.as_ref().map(|r| r.0.clone());
    let (table, request) = plan(api, &name, input, WriteKind::Delete, opts.old_on_failure)?;
    super::write::authorize(api, &name, &table, &request, rv.as_deref())?;
    let w = write(api, &table, request).await?;
    let attrs = (opts.return_values == ReturnValues::AllOld)
        .then(|| w.old.clone())
        .flatten();
    Ok(opts.response(&name, attrs, &w))
}

/// Checks a keyed write with an optional condition: a delete (DeleteItem,
/// or a transaction's Delete) or a transaction's ConditionCheck
/// (`WriteKind::Check`, whose condition is required); then finds its table.
pub fn plan(
    api: &Api,
    name: &str,
    input: Input,
    kind: WriteKind,
    old_on_failure: bool,
) -> Result<(Arc<Table>, WriteRequest), ApiError> {
    let key_member = input.key;
    let members = ConditionMembers {
        condition_expression: input.condition_expression,
        expected: input.expected.map(|e| e.0),
        conditional_operator: input.conditional_operator,
        names: input.expression_attribute_names,
        values: input.expression_attribute_values,
    };
    let check = kind == WriteKind::Check;
    let has_condition = members.condition_expression.is_some();
    let (mut exprs, parts) = members.inputs(|v| {
        v.required(key_member.as_ref(), "key");
        if check && !has_condition {
            v.null("conditionExpression");
        }
    })?;
    let key = wire_item(key_member)?;
    let condition = parts.checked(&mut exprs)?;
    let table = active_table(api, name)?;
    key_verdict(&table.schema, &key, table.schema.validate_key(&key))?;
    let request = WriteRequest::conditional(kind, key, None, condition, &exprs, old_on_failure);
    Ok((table, request))
}
