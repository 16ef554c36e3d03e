//! TagResource, UntagResource, ListTagsOfResource.
use crate::Api;
use crate::auth::{Access, Resource};
use crate::error::ApiError;
use crate::params::Violations;
use crate::tag_rules::{Tag, check_total, parse_tags};
use dynaraft_cluster::Table;
use dynaraft_model::wire::{List, Obj, Str};
use dynaraft_storage::Command;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// TagResource's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct TagInput {
    pub resource_arn: Option<Str>,
    pub tags: Option<List<Obj<Tag>>>,
}

/// UntagResource's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct UntagInput {
    pub resource_arn: Option<Str>,
    pub tag_keys: Option<List<Str>>,
}

/// ListTagsOfResource's request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListInput {
    pub resource_arn: Option<Str>,
}

/// The table a ResourceArn names (only tables carry tags), once `action`
/// on it is allowed.
fn resource(api: &Api, arn: Option<&Str>, action: &'static str) -> Result<Arc<Table>, ApiError> {
    let Some(arn) = arn.map(|a| a.0.as_str()) else {
        let mut v = Violations::default();
        v.null("resourceArn");
        v.check()?;
        return Err(ApiError::validation("Invalid TableArn"));
    };
    let access = || Access::new(action, Resource::Arn(arn.to_string()));
    api.authorize(access)?;
    if !arn.starts_with("arn:") {
        return Err(ApiError::validation(format!(
            "Invalid TableArn: ARNs must start with 'arn:': {arn}"
        )));
    }
    let prefix = format!("arn:aws:dynamodb:{}:{}:table/", api.region(), api.account());
    // An index's ARN (`table/T/index/I`) is refused.
    let name = arn
        .strip_prefix(&prefix)
        .filter(|n| !n.contains('/'))
        .ok_or_else(|| {
            ApiError::validation(format!(
                "Invalid TableArn: Invalid ResourceArn provided as input {arn}"
            ))
        })?;
    api.table(name).ok_or_else(|| {
        ApiError::ResourceNotFound(format!(
            "Requested resource not found: ResourcArn: {arn} not found"
        ))
    })
}

pub async fn tag(api: &Api, input: TagInput) -> Result<Value, ApiError> {
    let t = resource(api, input.resource_arn.as_ref(), "TagResource")?;
    let tags = parse_tags(input.tags.as_ref())?;
    if tags.is_empty() {
        let mut v = Violations::default();
        match &input.tags {
            None => v.null("tags"),
            Some(_) => v.add(
                Some("[]"),
                "tags",
                "Member must have length greater than or equal to 1",
            ),
        }
        v.check()?;
    }
    let mut meta = t.meta.clone();
    meta.tags.extend(tags);
    check_total(&meta.tags)?;
    super::change_table(api, Command::ReplaceTableMeta(meta), &t.meta.name).await?;
    // TagResource and UntagResource answer with an empty body.
    Ok(Value::Null)
}

pub async fn untag(api: &Api, input: UntagInput) -> Result<Value, ApiError> {
    let t = resource(api, input.resource_arn.as_ref(), "UntagResource")?;
    let Some(keys) = input.tag_keys else {
        let mut v = Violations::default();
        v.null("tagKeys");
        v.check()?;
        return Ok(Value::Null);
    };
    let mut meta = t.meta.clone();
    for k in &keys.0 {
        meta.tags.remove(&k.0);
    }
    super::change_table(api, Command::ReplaceTableMeta(meta), &t.meta.name).await?;
    // TagResource and UntagResource answer with an empty body.
    Ok(Value::Null)
}

pub async fn list(api: &Api, input: ListInput) -> Result<Value, ApiError> {
    let t = resource(api, input.resource_arn.as_ref(), "ListTagsOfResource")?;
    let tags: Vec<Value> = t
        .meta
        .tags
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    Ok(json!({ "Tags": tags }))
}
