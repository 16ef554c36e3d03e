//! TagResource, UntagResource, ListTagsOfResource.
use crate::Api;
use crate::error::ApiError;
use crate::params::{Violations, opt_array, opt_str};
use dynaraft_cluster::Table;
use dynaraft_storage::Command;
use serde_json::{Value, json};
use std::sync::Arc;

fn resource(api: &Api, body: &Value) -> Result<Arc<Table>, ApiError> {
    let arn = opt_str(body, "ResourceArn")?;
    let Some(arn) = arn else {
        let mut v = Violations::default();
        v.add(None, "resourceArn", "Member must not be null");
        v.check()?;
        return Err(ApiError::validation("Invalid TableArn"));
    };
    if !arn.starts_with("arn:") {
        return Err(ApiError::validation(format!(
            "Invalid TableArn: ARNs must start with 'arn:': {arn}"
        )));
    }
    let prefix = format!(
        "arn:aws:dynamodb:{}:{}:table/",
        api.cfg.region, api.cfg.account_id
    );
    // Only tables carry tags: an index's ARN (`table/T/index/I`) is refused.
    let name = arn
        .strip_prefix(&prefix)
        .filter(|n| !n.contains('/'))
        .ok_or_else(|| {
            ApiError::validation(format!(
                "Invalid TableArn: Invalid ResourceArn provided as input {arn}"
            ))
        })?;
    api.router.table(name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: ResourcArn: {arn} not found"
        ))
    })
}

pub async fn tag(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let t = resource(api, body)?;
    let tags = crate::tag_rules::parse_tags(body)?;
    if tags.is_empty() {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null",
        ));
    }
    let mut meta = t.meta.clone();
    meta.tags.extend(tags);
    crate::tag_rules::check_total(&meta.tags)?;
    super::change_table(api, Command::ReplaceTableMeta(meta), &t.meta.name).await?;
    // TagResource and UntagResource answer with an empty body.
    Ok(Value::Null)
}

pub async fn untag(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let t = resource(api, body)?;
    let keys = opt_array(body, "TagKeys")?.ok_or_else(|| {
        ApiError::validation("1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null")
    })?;
    let mut meta = t.meta.clone();
    for k in keys.iter().filter_map(|k| k.as_str()) {
        meta.tags.remove(k);
    }
    super::change_table(api, Command::ReplaceTableMeta(meta), &t.meta.name).await?;
    // TagResource and UntagResource answer with an empty body.
    Ok(Value::Null)
}

pub fn list(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let t = resource(api, body)?;
    let tags: Vec<Value> = t
        .meta
        .tags
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    Ok(json!({ "Tags": tags }))
}
