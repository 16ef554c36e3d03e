//! PutItem: parse (the request's shape), check (its constraints, then its
//! semantics), then look the table up and write.
use super::write::{
    ConditionMembers, OptionMembers, OptionOrder, WriteOptions, WriteRequest, write,
};
use crate::Api;
use crate::enums::ReturnValues;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_model::MAX_ITEM_BYTES;
use dynaraft_model::value::item_size_bytes;
use dynaraft_model::wire::{Dict, Obj, Str, WireItem};
use dynaraft_storage::WriteKind;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// PutItem's request, and the Put of a TransactWriteItems member.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub table_name: Option<Str>,
    pub item: Option<WireItem>,
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

impl Input {
    fn options(&self) -> OptionMembers<'_> {
        OptionMembers {
            return_values: self.return_values.as_ref(),
            capacity: self.return_consumed_capacity.as_ref(),
            metrics: self.return_item_collection_metrics.as_ref(),
            on_failure: self.return_values_on_condition_check_failure.as_ref(),
        }
    }
}

pub async fn execute(api: &Api, input: Input) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    let mut v = Violations::default();
    let opts = WriteOptions::check(&mut v, input.options(), OptionOrder::ValuesFirst);
    v.check()?;
    opts.only_old()?;
    let rv = input.return_values.as_ref().map(|r| r.0.clone());
    let (table, request) = plan(api, &name, input, opts.old_on_failure)?;
    super::write::authorize(api, &name, &table, &request, rv.as_deref())?;
    let w = write(api, &table, request).await?;
    let attrs = (opts.return_values == ReturnValues::AllOld)
        .then(|| w.old.clone())
        .flatten();
    Ok(opts.response(&name, attrs, &w))
}

/// Checks a put's semantics (PutItem's, or a transaction's Put, whose
/// constraints the caller checked), then finds its table.
pub fn plan(
    api: &Api,
    name: &str,
    input: Input,
    old_on_failure: bool,
) -> Result<(Arc<Table>, WriteRequest), ApiError> {
    let item_member = input.item;
    let members = ConditionMembers {
        condition_expression: input.condition_expression,
        expected: input.expected.map(|e| e.0),
        conditional_operator: input.conditional_operator,
        names: input.expression_attribute_names,
        values: input.expression_attribute_values,
    };
    let (mut exprs, parts) = members.inputs(|v| v.required(item_member.as_ref(), "item"))?;
    let item = wire_item(item_member)?;
    if item_size_bytes(&item) > MAX_ITEM_BYTES {
        return Err(ApiError::validation(
            "Item size has exceeded the maximum allowed size",
        ));
    }
    let condition = parts.checked(&mut exprs)?;
    let table = active_table(api, name)?;
    key_verdict(&table.schema, &item, table.schema.validate_item_key(&item))?;
    let key = table.schema.key_of(&item);
    let request = WriteRequest::conditional(
        WriteKind::Put,
        key,
        Some(item),
        condition,
        &exprs,
        old_on_failure,
    );
    Ok((table, request))
}
