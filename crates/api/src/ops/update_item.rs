//! UpdateItem: every ReturnValues option; UPDATED_OLD/UPDATED_NEW return
//! exactly the paths the update expression touched.
use super::write::{
    OptionMembers, OptionOrder, WriteOptions, WriteRequest, condition_source, write,
};
use crate::Api;
use crate::enums::{ConditionalOperator, ReturnValues, WireEnum};
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_expr::projection::project;
use dynaraft_expr::{ExprKind, Path, parse_condition, parse_update};
use dynaraft_model::wire::{Dict, Obj, Str, WireItem};
use dynaraft_storage::WriteKind;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// UpdateItem's request, and the Update of a TransactWriteItems member.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Input {
    pub table_name: Option<Str>,
    pub key: Option<WireItem>,
    pub update_expression: Option<Str>,
    pub attribute_updates: Option<Obj<Map<String, Value>>>,
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
    let opts = WriteOptions::check(&mut v, members, OptionOrder::MetricsFirst);
    v.check()?;
    let rv = input.return_values.as_ref().map(|r| r.0.clone());
    let (table, request, targets) = plan(api, &name, input, opts.old_on_failure)?;
    super::write::authorize(api, &name, &table, &request, rv.as_deref())?;
    let w = write(api, &table, request).await?;
    let attrs = match opts.return_values {
        ReturnValues::AllOld => w.old.clone(),
        ReturnValues::AllNew => w.new.clone(),
        ReturnValues::UpdatedOld => w.old.as_ref().map(|o| project(o, &targets)),
        ReturnValues::UpdatedNew => w.new.as_ref().map(|n| project(n, &targets)),
        ReturnValues::None => None,
    };
    Ok(opts.response(&name, attrs, &w))
}

/// Checks an update (UpdateItem, or a transaction's Update) and finds its
/// table; returns the paths its update expression sets or removes.
pub fn plan(
    api: &Api,
    name: &str,
    input: Input,
    old_on_failure: bool,
) -> Result<(Arc<Table>, WriteRequest, Vec<Path>), ApiError> {
    let mut v = Violations::default();
    v.required(input.key.as_ref(), "key");
    let operator = ConditionalOperator::member(
        &mut v,
        input.conditional_operator.as_ref(),
        "conditionalOperator",
    );
    v.check()?;
    let mut exprs = ExprInput::from_parts(
        &[
            ("UpdateExpression", input.update_expression.is_some()),
            ("ConditionExpression", input.condition_expression.is_some()),
        ],
        &[
            ("AttributeUpdates", input.attribute_updates.is_some()),
            ("Expected", input.expected.is_some()),
            ("ConditionalOperator", input.conditional_operator.is_some()),
        ],
        input.expression_attribute_names,
        input.expression_attribute_values,
    )?;
    let key = wire_item(input.key)?;
    let condition = condition_source(
        &mut exprs,
        input.condition_expression,
        input.expected.as_ref().map(|e| &e.0),
        operator,
    )?;
    let update = match (input.update_expression, input.attribute_updates) {
        (Some(u), _) => Some(u.0),
        (None, Some(updates)) => {
            if let Some(p) = updates.0.keys().find_map(|k| attribute_name_problem(k)) {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: {p}"
                )));
            }
            let mut l = exprs.legacy();
            let u = l.attribute_updates(&updates.0)?;
            exprs.absorb(l, u.as_ref());
            u
        }
        (None, None) => None,
    };
    let mut subs = exprs.subs();
    let mut targets: Vec<Path> = Vec::new();
    if let Some(u) = &update {
        targets.extend(parse_update(u, &mut subs)?.targets().cloned());
    }
    if let Some(c) = &condition {
        parse_condition(c, ExprKind::Condition, &mut subs)?;
    }
    subs.check_unused()?;
    let table = active_table(api, name)?;
    key_verdict(&table.schema, &key, table.schema.validate_key(&key))?;
    if let Some(p) = targets.iter().find(|p| table.schema.is_key_attr(p.root())) {
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: Cannot update attribute {}. This attribute is part of the key",
            p.root()
        )));
    }
    super::read::check_key_paths(&table, &targets)?;
    let legacy_update = update
        .as_ref()
        .is_some_and(|u| exprs.translations.contains(u));
    let request = WriteRequest {
        kind: WriteKind::Update,
        key,
        item: None,
        condition,
        update,
        names: exprs.names.clone(),
        values: exprs.values_json(),
        old_on_failure,
        legacy_update,
    };
    Ok((table, request, targets))
}
