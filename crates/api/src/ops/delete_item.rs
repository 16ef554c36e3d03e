//! DeleteItem.
use super::write::{WriteRequest, condition_source, write};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_expr::{ExprKind, parse_condition};
use dynaraft_model::value::item_to_json;
use dynaraft_storage::WriteKind;
use serde_json::{Value, json};

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let key = required_item(body, "Key", "key")?;
    let rv = enum_value(
        body,
        "ReturnValues",
        "returnValues",
        &["ALL_NEW", "UPDATED_OLD", "ALL_OLD", "NONE", "UPDATED_NEW"],
    )?;
    if rv.is_some_and(|r| r != "NONE" && r != "ALL_OLD") {
        return Err(ApiError::validation(
            "ReturnValues can only be ALL_OLD or NONE",
        ));
    }
    let on_fail = enum_value(
        body,
        "ReturnValuesOnConditionCheckFailure",
        "returnValuesOnConditionCheckFailure",
        &["ALL_OLD", "NONE"],
    )?;
    let mode = capacity_mode(body)?;
    let mut input = ExprInput::from_body(
        body,
        &["ConditionExpression"],
        &["Expected", "ConditionalOperator"],
    )?;
    let table = active_table(api, &name)?;
    table.schema.validate_key(&key)?;
    let condition = condition_source(body, &mut input)?;
    let mut subs = input.subs();
    if let Some(c) = &condition {
        parse_condition(c, ExprKind::Condition, &mut subs)?;
    }
    subs.check_unused()?;
    let (names, values) = (input.names.clone(), input.values_json());
    let w = write(
        &table,
        WriteRequest {
            kind: WriteKind::Delete,
            key,
            item: None,
            condition,
            update: None,
            names,
            values,
            old_on_failure: on_fail == Some("ALL_OLD"),
        },
    )
    .await?;
    let mut out = json!({});
    if rv == Some("ALL_OLD") {
        insert_opt(&mut out, "Attributes", w.old.as_ref().map(item_to_json));
    }
    insert_opt(
        &mut out,
        "ConsumedCapacity",
        consumed(mode, &name, write_units(w.size()), true),
    );
    Ok(out)
}
