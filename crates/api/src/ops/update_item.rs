//! UpdateItem: every ReturnValues option; UPDATED_OLD/UPDATED_NEW return
//! exactly the paths the update expression touched.
use super::write::{WriteOptions, WriteRequest, condition_source, write};
use crate::Api;
use crate::error::ApiError;
use crate::params::*;
use dynaraft_cluster::Table;
use dynaraft_expr::projection::project;
use dynaraft_expr::{ExprKind, Path, parse_condition, parse_update};
use dynaraft_storage::WriteKind;
use serde_json::Value;
use std::sync::Arc;

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    let opts = WriteOptions::from_body(body, false)?;
    let (table, request, targets) = plan(api, body, opts.old_on_failure)?;
    let w = write(api, &table, request).await?;
    let attrs = match opts.return_values.as_str() {
        "ALL_OLD" => w.old.clone(),
        "ALL_NEW" => w.new.clone(),
        "UPDATED_OLD" => w.old.as_ref().map(|o| project(o, &targets)),
        "UPDATED_NEW" => w.new.as_ref().map(|n| project(n, &targets)),
        _ => None,
    };
    Ok(opts.response(&name, attrs, &w))
}

/// Parses and validates an update (UpdateItem, or a transaction's Update),
/// with the paths its update expression sets or removes.
pub fn plan(
    api: &Api,
    body: &Value,
    old_on_failure: bool,
) -> Result<(Arc<Table>, WriteRequest, Vec<Path>), ApiError> {
    let name = table_name(body)?;
    let key = required_item(body, "Key", "key")?;
    let mut input = ExprInput::from_body(
        body,
        &["UpdateExpression", "ConditionExpression"],
        &["AttributeUpdates", "Expected", "ConditionalOperator"],
    )?;
    let table = active_table(api, &name)?;
    table.schema.validate_key(&key)?;
    let condition = condition_source(body, &mut input)?;
    let update = match (
        opt_str(body, "UpdateExpression")?,
        opt_object(body, "AttributeUpdates")?,
    ) {
        (Some(u), _) => Some(u.to_string()),
        (None, Some(updates)) => {
            let mut l = input.legacy();
            let u = l.attribute_updates(updates)?;
            input.absorb(l);
            u
        }
        (None, None) => None,
    };
    let mut subs = input.subs();
    let mut targets: Vec<Path> = Vec::new();
    if let Some(u) = &update {
        let parsed = parse_update(u, &mut subs)?;
        for p in parsed.targets() {
            if table.schema.is_key_attr(p.root()) {
                return Err(ApiError::validation(format!(
                    "One or more parameter values were invalid: Cannot update attribute {}. This attribute is part of the key",
                    p.root()
                )));
            }
            targets.push(p.clone());
        }
    }
    if let Some(c) = &condition {
        parse_condition(c, ExprKind::Condition, &mut subs)?;
    }
    subs.check_unused()?;
    let request = WriteRequest {
        kind: WriteKind::Update,
        key,
        item: None,
        condition,
        update,
        names: input.names.clone(),
        values: input.values_json(),
        old_on_failure,
    };
    Ok((table, request, targets))
}
