//! CreateTable: validates the schema, billing mode and throughput as
//! DynamoDB does, then proposes the table to the catalog.

use super::index_defs;
use crate::Api;
use crate::error::ApiError;
use crate::params::{Violations, enum_value, opt_array, opt_bool, table_name};
use dynaraft_storage::{
    Command, GlobalIndexMeta, IndexStatus, PartitionMeta, TableMeta, TableStatus,
};
use serde_json::{Value, json};

pub async fn execute(api: &Api, body: &Value) -> Result<Value, ApiError> {
    if crate::params::opt_str(body, "TableName")?.is_none() {
        return Err(ApiError::validation(
            "The parameter 'TableName' is required but was not present in the request",
        ));
    }
    let name = table_name(body)?;
    let attrs = opt_array(body, "AttributeDefinitions")?;
    let keys = opt_array(body, "KeySchema")?;
    let mut v = Violations::default();
    if attrs.is_none() {
        v.add(None, "attributeDefinitions", "Member must not be null");
    }
    if keys.is_none() {
        v.add(None, "keySchema", "Member must not be null");
    }
    v.check()?;
    let attrs = parse_attribute_definitions(attrs.unwrap_or(&vec![]))?;
    let (hash, range) = parse_key_schema(keys.unwrap_or(&vec![]), &attrs)?;
    let (billing_mode, rcu, wcu) = billing(body)?;
    let local_indexes = index_defs::local_indexes(body, &attrs, &hash, range.as_ref())?;
    let pay_per_request = billing_mode == "PAY_PER_REQUEST";
    let global = index_defs::global_indexes(body, &attrs, pay_per_request, &local_indexes)?;
    let table_keys: Vec<&str> = std::iter::once(hash.0.as_str())
        .chain(range.as_ref().map(|r| r.0.as_str()))
        .collect();
    let all_indexes: Vec<_> = local_indexes
        .iter()
        .chain(global.iter().map(|(g, _)| g))
        .collect();
    index_defs::check_projected(&all_indexes)?;
    index_defs::check_definitions_used(&attrs, &table_keys, &all_indexes)?;
    let partitions = api.cfg.partitions_per_table;
    let global_indexes: Vec<GlobalIndexMeta> = global
        .into_iter()
        .enumerate()
        .map(|(id, (index, (r, w)))| GlobalIndexMeta {
            id: id as u32,
            index,
            // Nothing to backfill: the table is new, and every write carries
            // its global indexes from the start.
            status: IndexStatus::Active,
            backfill: false,
            backfilled: Vec::new(),
            partitions: PartitionMeta::even_split(partitions),
            read_capacity: r,
            write_capacity: w,
        })
        .collect();
    let tag_list = crate::params::member(body, "Tags")?;
    let tags = crate::tag_rules::parse_tags(tag_list.as_ref())?;
    let instant = api.cfg.transition_delay_ms == 0;
    let meta = TableMeta {
        name: name.clone(),
        partitions: PartitionMeta::even_split(partitions),
        status: if instant {
            TableStatus::Active
        } else {
            TableStatus::Creating
        },
        created_ms: 0,
        hash_key: hash,
        range_key: range,
        attributes: attrs,
        billing_mode,
        read_capacity: rcu,
        write_capacity: wcu,
        tags,
        deletion_protection: opt_bool(body, "DeletionProtectionEnabled")?.unwrap_or(false),
        last_increase_ms: 0,
        last_decrease_ms: 0,
        decreases_today: 0,
        ttl_attribute: None,
        local_indexes,
        next_index_id: global_indexes.len() as u32,
        global_indexes,
    };
    let meta = super::change_table(api, Command::CreateTable(meta), &name).await?;
    if !instant {
        super::schedule_transition(api, name, Some(TableStatus::Active));
    }
    Ok(json!({ "TableDescription": super::describe_created(api, &meta).await? }))
}

/// AttributeDefinitions of a request (empty when absent), checked.
pub fn attribute_definitions(body: &Value) -> Result<Vec<(String, String)>, ApiError> {
    parse_attribute_definitions(opt_array(body, "AttributeDefinitions")?.unwrap_or(&vec![]))
}

fn parse_attribute_definitions(list: &[Value]) -> Result<Vec<(String, String)>, ApiError> {
    let mut v = Violations::default();
    let mut out = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let n = a.get("AttributeName").and_then(|x| x.as_str());
        let t = a.get("AttributeType").and_then(|x| x.as_str());
        let path = format!("attributeDefinitions.{}.member.attributeName", i + 1);
        match n {
            None => v.add(None, &path, "Member must not be null"),
            Some(n) => crate::params::check_key_attribute_name(&mut v, n, &path),
        }
        match t {
            None => v.add(
                None,
                &format!("attributeDefinitions.{}.member.attributeType", i + 1),
                "Member must not be null",
            ),
            Some(t) if !["S", "N", "B"].contains(&t) => v.add(
                Some(t),
                &format!("attributeDefinitions.{}.member.attributeType", i + 1),
                "Member must satisfy enum value set: [B, N, S]",
            ),
            _ => {}
        }
        if let (Some(n), Some(t)) = (n, t) {
            out.push((n.to_string(), t.to_string()));
        }
    }
    v.check()?;
    let mut names: Vec<&String> = out.iter().map(|(n, _)| n).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: Duplicate AttributeName in AttributeDefinitions: {}",
            w[0]
        )));
    }
    Ok(out)
}

type KeyPair = (String, String);

fn parse_key_schema(
    list: &[Value],
    attrs: &[(String, String)],
) -> Result<(KeyPair, Option<KeyPair>), ApiError> {
    let mut v = Violations::default();
    if list.is_empty() {
        v.add(
            Some("[]"),
            "keySchema",
            "Member must have length greater than or equal to 1",
        );
    }
    if list.len() > 2 {
        // DynamoDB shows the list as Java renders its elements.
        let shown: Vec<String> = list
            .iter()
            .map(|k| {
                let field = |f: &str| {
                    k.get(f)
                        .and_then(Value::as_str)
                        .unwrap_or("null")
                        .to_string()
                };
                format!(
                    "KeySchemaElement(attributeName={}, keyType={})",
                    field("AttributeName"),
                    field("KeyType")
                )
            })
            .collect();
        v.add(
            Some(&format!("[{}]", shown.join(", "))),
            "keySchema",
            "Member must have length less than or equal to 2",
        );
    }
    let mut elems = Vec::new();
    for (i, k) in list.iter().enumerate() {
        let n = k.get("AttributeName").and_then(|x| x.as_str());
        let t = k.get("KeyType").and_then(|x| x.as_str());
        let path = format!("keySchema.{}.member.attributeName", i + 1);
        match n {
            None => v.add(None, &path, "Member must not be null"),
            Some(n) => crate::params::check_key_attribute_name(&mut v, n, &path),
        }
        match t {
            None => v.add(
                None,
                &format!("keySchema.{}.member.keyType", i + 1),
                "Member must not be null",
            ),
            Some(t) if t != "HASH" && t != "RANGE" => v.add(
                Some(t),
                &format!("keySchema.{}.member.keyType", i + 1),
                "Member must satisfy enum value set: [HASH, RANGE]",
            ),
            _ => {}
        }
        if let (Some(n), Some(t)) = (n, t) {
            elems.push((n.to_string(), t.to_string()));
        }
    }
    v.check()?;
    if elems.first().map(|e| e.1.as_str()) != Some("HASH") {
        return Err(ApiError::validation(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        ));
    }
    if let Some(second) = elems.get(1) {
        if second.1 != "RANGE" {
            return Err(ApiError::validation(
                "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type",
            ));
        }
        // DynamoDB reports a key attribute used twice as a missing
        // definition (one definition cannot serve two key elements).
        if second.0 == elems[0].0 {
            return Err(ApiError::validation(
                "Invalid KeySchema: Some index key attribute have no definition",
            ));
        }
    }
    let defined: Vec<&str> = attrs.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = elems
        .iter()
        .map(|e| e.0.as_str())
        .filter(|n| !defined.contains(n))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{}], AttributeDefinitions: [{}]",
            missing.join(", "),
            defined.join(", ")
        )));
    }
    let typed = |name: &str| index_defs::typed(attrs, name);
    Ok((typed(&elems[0].0), elems.get(1).map(|e| typed(&e.0))))
}

/// BillingMode and ProvisionedThroughput: (mode, read units, write units).
pub fn billing(body: &Value) -> Result<(String, u64, u64), ApiError> {
    let mode = enum_value(
        body,
        "BillingMode",
        "billingMode",
        &["PROVISIONED", "PAY_PER_REQUEST"],
    )?
    .unwrap_or("PROVISIONED");
    let pt = body.get("ProvisionedThroughput").filter(|x| !x.is_null());
    if mode == "PAY_PER_REQUEST" {
        if pt.is_some() {
            return Err(ApiError::validation(
                "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
            ));
        }
        return Ok((mode.to_string(), 0, 0));
    }
    let Some(pt) = pt else {
        return Err(ApiError::validation(
            "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
        ));
    };
    let (r, w) = throughput(pt)?;
    Ok((mode.to_string(), r, w))
}

pub fn throughput(pt: &Value) -> Result<(u64, u64), ApiError> {
    let r = pt.get("ReadCapacityUnits").and_then(|x| x.as_i64());
    let w = pt.get("WriteCapacityUnits").and_then(|x| x.as_i64());
    let mut v = Violations::default();
    for (val, path) in [
        (r, "provisionedThroughput.readCapacityUnits"),
        (w, "provisionedThroughput.writeCapacityUnits"),
    ] {
        match val {
            None => v.add(None, path, "Member must not be null"),
            Some(x) if x < 1 => v.add(
                Some(&x.to_string()),
                path,
                "Member must have value greater than or equal to 1",
            ),
            _ => {}
        }
    }
    v.check()?;
    Ok((r.unwrap_or(1) as u64, w.unwrap_or(1) as u64))
}
