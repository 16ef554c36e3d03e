//! Secondary index definitions in CreateTable: shape (names, key schemas,
//! projections) and the rules DynamoDB enforces between an index and its
//! table, with DynamoDB's ValidationException wording.
//!
//! Global indexes are defined here for CreateTable and for UpdateTable's
//! `Create` action alike.

use super::table_defs::{IndexIn, KeyPair, texts, throughput};
use crate::enums::{KeyType, ProjectionType, WireEnum};
use crate::error::ApiError;
use crate::params::{Violations, check_table_name};
use dynaraft_model::key::MAX_KEY_ATTRIBUTES_PER_ROLE;
use dynaraft_model::wire::{List, Obj};
use dynaraft_model::{KeyAttr, KeySchema};
use dynaraft_storage::catalog::key_attr;
use dynaraft_storage::{IndexMeta, Projection};
use std::collections::BTreeSet;

/// Most local secondary indexes per table.
pub const MAX_LOCAL_INDEXES: usize = 5;
/// Most global secondary indexes per table.
pub const MAX_GLOBAL_INDEXES: usize = 20;
/// Most KeySchema elements of a local secondary index.
const MAX_LOCAL_INDEX_KEYS: usize = 2;
/// Longest name in NonKeyAttributes, in characters.
const MAX_NON_KEY_ATTRIBUTE_CHARS: usize = 255;
/// Most NonKeyAttributes over all of a table's indexes.
pub const MAX_PROJECTED_ATTRIBUTES: usize = 100;

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("One or more parameter values were invalid: {msg}"))
}

/// One index as sent, after the shape checks.
struct Raw {
    name: String,
    keys: Vec<(String, String)>,
    projection_type: Option<ProjectionType>,
    non_key: Option<Vec<String>>,
}

/// Checks the shape of index definitions; `member(i)` names the `i`th
/// (from 0) in messages, e.g. `localSecondaryIndexes.1.member`.
/// `max_keys` bounds a KeySchema's length (`None`: a global index, whose
/// key is checked element by element instead).
fn parse_shape<'a>(
    list: impl Iterator<Item = &'a IndexIn>,
    member: impl Fn(usize) -> String,
    max_keys: Option<usize>,
) -> Result<Vec<Raw>, ApiError> {
    let mut v = Violations::default();
    let mut out = Vec::new();
    for (i, ix) in list.enumerate() {
        let at = |f: &str| format!("{}.{f}", member(i));
        let name = ix.index_name.as_deref();
        // Index names follow the table-name rules.
        check_table_name(&mut v, name, &at("indexName"));
        let keys = ix.key_schema.as_ref().map(|k| k.0.as_slice());
        match keys {
            None => v.null(&at("keySchema")),
            Some([]) => v.add(
                Some("[]"),
                &at("keySchema"),
                "Member must have length greater than or equal to 1",
            ),
            Some(k) if let Some(m) = max_keys.filter(|m| k.len() > *m) => v.add(
                Some("[...]"),
                &at("keySchema"),
                &format!("Member must have length less than or equal to {m}"),
            ),
            Some(_) => {}
        }
        let mut pairs = Vec::new();
        for (j, k) in keys.into_iter().flatten().enumerate() {
            let kat = |f: &str| format!("{}.{}.member.{f}", at("keySchema"), j + 1);
            match k.attribute_name.as_deref() {
                None => v.null(&kat("attributeName")),
                Some(n) => {
                    crate::params::check_key_attribute_name(&mut v, n, &kat("attributeName"))
                }
            }
            if k.key_type.is_none() {
                v.null(&kat("keyType"));
            }
            let role = KeyType::member(&mut v, k.key_type.as_ref(), &kat("keyType"));
            if let (Some(n), Some(role)) = (&k.attribute_name, role) {
                pairs.push((n.0.clone(), role.as_str().to_string()));
            }
        }
        let projection = ix.projection.as_deref();
        if projection.is_none() {
            v.null(&at("projection"));
        }
        let projection_path = |f: &str| format!("{}.{f}", at("projection"));
        let projection_type = projection.and_then(|p| {
            ProjectionType::member(
                &mut v,
                p.projection_type.as_ref(),
                &projection_path("projectionType"),
            )
        });
        let non_key = projection.and_then(|p| texts(p.non_key_attributes.as_ref()));
        match non_key.as_deref() {
            Some([]) => v.add(
                Some("[]"),
                &projection_path("nonKeyAttributes"),
                "Member must have length greater than or equal to 1",
            ),
            Some(names)
                if names
                    .iter()
                    .any(|n| n.is_empty() || n.chars().count() > MAX_NON_KEY_ATTRIBUTE_CHARS) =>
            {
                v.add(
                    Some(&format!("[{}]", names.join(", "))),
                    &projection_path("nonKeyAttributes"),
                    &format!(
                        "Member must satisfy constraint: [Member must have length less than or equal to {MAX_NON_KEY_ATTRIBUTE_CHARS}, Member must have length greater than or equal to 1]"
                    ),
                )
            }
            _ => {}
        }
        out.push(Raw {
            name: name.unwrap_or_default().to_string(),
            keys: pairs,
            projection_type,
            non_key,
        });
    }
    v.check()?;
    Ok(out)
}

/// The key checks every index shares with a table's own key schema.
fn check_keys(ix: &Raw, defined: &[KeyPair]) -> Result<(), ApiError> {
    let names: Vec<&str> = defined.iter().map(|(n, _)| n.as_str()).collect();
    let keys: Vec<&str> = ix.keys.iter().map(|(n, _)| n.as_str()).collect();
    if keys.iter().any(|k| !names.contains(k)) {
        return Err(invalid(format!(
            "Some index key attributes are not defined in AttributeDefinitions. Keys: [{}], AttributeDefinitions: [{}]",
            keys.join(", "),
            names.join(", ")
        )));
    }
    if let [a, b] = keys.as_slice()
        && a == b
    {
        return Err(ApiError::validation(
            "Both the Hash Key and the Range Key element in the KeySchema have the same name",
        ));
    }
    if ix.keys.first().map(|k| k.1.as_str()) != Some("HASH") {
        return Err(ApiError::validation(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        ));
    }
    Ok(())
}

/// A local index's key: its partition key, then one sort key.
fn check_local_keys(ix: &Raw, defined: &[KeyPair]) -> Result<(), ApiError> {
    check_keys(ix, defined)?;
    if ix.keys.get(1).is_some_and(|k| k.1 != "RANGE") {
        return Err(ApiError::validation(
            "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type",
        ));
    }
    Ok(())
}

/// A global index's key: up to [`MAX_KEY_ATTRIBUTES_PER_ROLE`] partition-key
/// (HASH) attributes, then up to as many sort-key (RANGE) attributes, no
/// attribute twice (a multi-attribute key).
fn check_global_keys(ix: &Raw, defined: &[KeyPair]) -> Result<(), ApiError> {
    check_keys(ix, defined)?;
    let mut seen = BTreeSet::new();
    if let Some((n, _)) = ix.keys.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(ApiError::validation(format!(
            "Invalid KeySchema: Two KeySchemaElements have the same name: {n}"
        )));
    }
    let ranges_from = ix
        .keys
        .iter()
        .position(|k| k.1 == "RANGE")
        .unwrap_or(ix.keys.len());
    if ix.keys.iter().skip(ranges_from).any(|k| k.1 == "HASH") {
        return Err(ApiError::validation(
            "Invalid KeySchema: Every HASH KeySchemaElement must precede the RANGE KeySchemaElements",
        ));
    }
    for (role, count) in [
        ("HASH", ranges_from),
        ("RANGE", ix.keys.len() - ranges_from),
    ] {
        if count > MAX_KEY_ATTRIBUTES_PER_ROLE {
            return Err(ApiError::validation(format!(
                "Invalid KeySchema: A global secondary index can have at most {MAX_KEY_ATTRIBUTES_PER_ROLE} {role} KeySchemaElements, {count} were given"
            )));
        }
    }
    Ok(())
}

fn projection(ix: &Raw) -> Result<Projection, ApiError> {
    let Some(t) = ix.projection_type else {
        return Err(invalid("Unknown ProjectionType: null"));
    };
    match (t, &ix.non_key) {
        (ProjectionType::Include, Some(attrs)) => {
            let mut seen = BTreeSet::new();
            if let Some(a) = attrs.iter().find(|a| !seen.insert(a.as_str())) {
                return Err(invalid(format!(
                    "Duplicate attribute in NonKeyAttributes of index {}: {a}",
                    ix.name
                )));
            }
            Ok(Projection::Include(attrs.clone()))
        }
        (ProjectionType::Include, None) => Err(invalid(
            "ProjectionType is INCLUDE, but NonKeyAttributes is not specified",
        )),
        (t, Some(_)) => Err(invalid(format!(
            "ProjectionType is {}, but NonKeyAttributes is specified",
            t.as_str()
        ))),
        (ProjectionType::All, None) => Ok(Projection::All),
        (ProjectionType::KeysOnly, None) => Ok(Projection::KeysOnly),
    }
}

/// `name` with its type from AttributeDefinitions (`defined`).
pub fn typed(defined: &[KeyPair], name: &str) -> KeyPair {
    let t = defined
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    (name.to_string(), t)
}

/// The key attributes of `ix` in `role` (HASH or RANGE), typed from
/// AttributeDefinitions (`defined`).
fn role_attrs(ix: &Raw, defined: &[KeyPair], role: &str) -> Result<Vec<KeyAttr>, ApiError> {
    ix.keys
        .iter()
        .filter(|(_, r)| r == role)
        .map(|(n, _)| key_attr(&typed(defined, n)).map_err(invalid))
        .collect()
}

/// The index `ix` as the catalog keeps it, unless another index of the
/// table (in `names`) already has its name.
fn index_meta(
    ix: &Raw,
    defined: &[KeyPair],
    projection: Projection,
    names: &mut BTreeSet<String>,
) -> Result<IndexMeta, ApiError> {
    if !names.insert(ix.name.clone()) {
        return Err(invalid(format!("Duplicate index name: {}", ix.name)));
    }
    Ok(IndexMeta {
        name: ix.name.clone(),
        key: KeySchema {
            hash: role_attrs(ix, defined, "HASH")?,
            range: role_attrs(ix, defined, "RANGE")?,
        },
        projection,
    })
}

/// A global index as defined, with its provisioned (read, write) units
/// (zeros on an on-demand table).
pub type GlobalDef = (IndexMeta, (u64, u64));

/// `GlobalSecondaryIndexes` of a CreateTable request, checked against the
/// AttributeDefinitions (`defined`), the billing mode and the names the
/// local indexes already use.
pub fn global_indexes(
    list: Option<&List<Obj<IndexIn>>>,
    defined: &[KeyPair],
    pay_per_request: bool,
    local: &[IndexMeta],
) -> Result<Vec<GlobalDef>, ApiError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let raw = parse_shape(
        list.0.iter().map(|o| &o.0),
        |i| format!("globalSecondaryIndexes.{}.member", i + 1),
        None,
    )?;
    if raw.is_empty() {
        return Err(invalid("List of GlobalSecondaryIndexes is empty"));
    }
    let mut names: BTreeSet<String> = local.iter().map(|i| i.name.clone()).collect();
    let mut out = Vec::new();
    for (ix, input) in raw.iter().zip(&list.0) {
        out.push(global_def(ix, input, defined, pay_per_request, &mut names)?);
    }
    if out.len() > MAX_GLOBAL_INDEXES {
        return Err(invalid(format!(
            "GlobalSecondaryIndex count exceeds the per-table limit of {MAX_GLOBAL_INDEXES}"
        )));
    }
    Ok(out)
}

fn global_def(
    ix: &Raw,
    input: &IndexIn,
    defined: &[KeyPair],
    pay_per_request: bool,
    names: &mut BTreeSet<String>,
) -> Result<GlobalDef, ApiError> {
    check_global_keys(ix, defined)?;
    let projection = projection(ix)?;
    let units = match (pay_per_request, input.provisioned_throughput.as_deref()) {
        (true, Some(_)) => {
            return Err(invalid(format!(
                "ProvisionedThroughput should not be specified for index: {} when BillingMode is PAY_PER_REQUEST",
                ix.name
            )));
        }
        (false, None) => {
            return Err(invalid(format!(
                "ProvisionedThroughput must be specified for index: {}",
                ix.name
            )));
        }
        (false, Some(t)) => throughput(t)?,
        (true, None) => (0, 0),
    };
    Ok((index_meta(ix, defined, projection, names)?, units))
}

/// The `Create` action of UpdateTable's GlobalSecondaryIndexUpdates member
/// `n` (from 1), checked like a CreateTable index against `defined` and the
/// names of the table's indexes (`names`).
pub fn global_create(
    create: &IndexIn,
    n: usize,
    defined: &[KeyPair],
    pay_per_request: bool,
    names: &mut BTreeSet<String>,
) -> Result<GlobalDef, ApiError> {
    let raw = parse_shape(
        std::iter::once(create),
        |_| format!("globalSecondaryIndexUpdates.{n}.member.create"),
        None,
    )?;
    let ix = raw.first().ok_or_else(|| invalid("Create is empty"))?;
    global_def(ix, create, defined, pay_per_request, names)
}

/// `LocalSecondaryIndexes` of a CreateTable request, checked against the
/// table's key (`hash`, `range`) and AttributeDefinitions (`defined`).
pub fn local_indexes(
    list: Option<&List<Obj<IndexIn>>>,
    defined: &[KeyPair],
    hash: &KeyPair,
    range: Option<&KeyPair>,
) -> Result<Vec<IndexMeta>, ApiError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let raw = parse_shape(
        list.0.iter().map(|o| &o.0),
        |i| format!("localSecondaryIndexes.{}.member", i + 1),
        Some(MAX_LOCAL_INDEX_KEYS),
    )?;
    if raw.is_empty() {
        return Err(invalid("List of LocalSecondaryIndexes is empty"));
    }
    if range.is_none() {
        return Err(invalid(
            "Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex",
        ));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for ix in &raw {
        check_local_keys(ix, defined)?;
        if ix.keys.len() != 2 {
            return Err(invalid(format!(
                "Index KeySchema does not have a range key for index: {}",
                ix.name
            )));
        }
        let index_hash = ix.keys.first().map_or("", |k| k.0.as_str());
        if index_hash != hash.0 {
            return Err(invalid(format!(
                "Index KeySchema does not have the same leading hash key as table KeySchema for index: {}. index hash key: {}, table hash key: {}",
                ix.name, index_hash, hash.0
            )));
        }
        let projection = projection(ix)?;
        out.push(index_meta(ix, defined, projection, &mut names)?);
    }
    if out.len() > MAX_LOCAL_INDEXES {
        return Err(invalid(format!(
            "Number of LocalSecondaryIndexes exceeds per-table limit of {MAX_LOCAL_INDEXES}"
        )));
    }
    Ok(out)
}

/// NonKeyAttributes over all of a table's indexes stay within
/// [`MAX_PROJECTED_ATTRIBUTES`].
pub fn check_projected(indexes: &[&IndexMeta]) -> Result<(), ApiError> {
    let projected: usize = indexes
        .iter()
        .map(|i| match &i.projection {
            Projection::Include(a) => a.len(),
            _ => 0,
        })
        .sum();
    if projected > MAX_PROJECTED_ATTRIBUTES {
        return Err(invalid(format!(
            "The number of attributes in key schema and projection of all indexes exceeds the limit of {MAX_PROJECTED_ATTRIBUTES}"
        )));
    }
    Ok(())
}

/// AttributeDefinitions must name exactly the key attributes of the table
/// and its indexes.
pub fn check_definitions_used(
    defined: &[KeyPair],
    table_keys: &[&str],
    indexes: &[&IndexMeta],
) -> Result<(), ApiError> {
    let mut used: BTreeSet<&str> = table_keys.iter().copied().collect();
    for i in indexes {
        used.extend(i.key.key_attrs().map(|ka| ka.name.as_str()));
    }
    let names: BTreeSet<&str> = defined.iter().map(|(n, _)| n.as_str()).collect();
    if names == used {
        return Ok(());
    }
    if indexes.is_empty() {
        return Err(invalid(
            "Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    let list = |s: &BTreeSet<&str>| s.iter().copied().collect::<Vec<_>>().join(", ");
    Err(invalid(format!(
        "Some AttributeDefinitions are not used. AttributeDefinitions: [{}], keys used: [{}]",
        list(&names),
        list(&used)
    )))
}
