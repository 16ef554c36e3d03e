//! The rules for resource tags, shared by CreateTable (`Tags`) and
//! TagResource: at most [`MAX_TAGS`] per resource, keys of 1 to
//! [`MAX_TAG_KEY_CHARS`] characters and values of up to
//! [`MAX_TAG_VALUE_CHARS`], both of letters, numbers, spaces and
//! `_ . : / = + - @` only (the API Reference's Tag pattern).

use crate::error::ApiError;
use crate::params::Violations;
use dynaraft_model::wire::{List, Obj, Str};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One tag as sent.
#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: Option<Str>,
    pub value: Option<Str>,
}

/// Most tags on one resource.
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY_CHARS: usize = 128;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// The pattern of keys and values, as DynamoDB quotes it.
const TAG_PATTERN: &str = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*";

fn allowed(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || c == ' '
        || c.is_whitespace() && !c.is_control()
        || "_.:/=+-@".contains(c)
}

/// A request's `Tags` list, checked: every violation reported together,
/// as DynamoDB reports them.
pub fn parse_tags(list: Option<&List<Obj<Tag>>>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut v = Violations::default();
    let mut out = BTreeMap::new();
    if let Some(list) = list
        && list.0.len() > MAX_TAGS
    {
        v.add(
            Some(&format!("[{} tags]", list.0.len())),
            "tags",
            &format!("Member must have length less than or equal to {MAX_TAGS}"),
        );
    }
    for (i, t) in list.into_iter().flat_map(|l| l.0.iter()).enumerate() {
        let at = |f: &str| format!("tags.{}.member.{f}", i + 1);
        let key = t.0.key.as_deref();
        let value = t.0.value.as_deref();
        match key {
            None => v.null(&at("key")),
            Some(k) => {
                let n = k.chars().count();
                if n < 1 {
                    v.add(
                        Some(k),
                        &at("key"),
                        "Member must have length greater than or equal to 1",
                    );
                }
                if n > MAX_TAG_KEY_CHARS {
                    v.add(
                        Some(k),
                        &at("key"),
                        &format!(
                            "Member must have length less than or equal to {MAX_TAG_KEY_CHARS}"
                        ),
                    );
                }
                if !k.chars().all(allowed) {
                    v.add(
                        Some(k),
                        &at("key"),
                        &format!("Member must satisfy regular expression pattern: {TAG_PATTERN}"),
                    );
                }
            }
        }
        match value {
            None => v.null(&at("value")),
            Some(val) => {
                if val.chars().count() > MAX_TAG_VALUE_CHARS {
                    v.add(
                        Some(val),
                        &at("value"),
                        &format!(
                            "Member must have length less than or equal to {MAX_TAG_VALUE_CHARS}"
                        ),
                    );
                }
                if !val.chars().all(allowed) {
                    v.add(
                        Some(val),
                        &at("value"),
                        &format!("Member must satisfy regular expression pattern: {TAG_PATTERN}"),
                    );
                }
            }
        }
        if let (Some(k), Some(val)) = (key, value) {
            out.insert(k.to_string(), val.to_string());
        }
    }
    v.check()?;
    Ok(out)
}

/// A resource's tags after adding some: at most [`MAX_TAGS`].
pub fn check_total(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: The number of tags exceeds the limit of {MAX_TAGS} tags per resource"
        )));
    }
    Ok(())
}
