//! CreateTable: validates the schema, billing mode and throughput as
//! DynamoDB does, then proposes the table to the catalog.

use super::index_defs;
use super::table_defs::{
    AttributeDefinitionIn, IndexIn, KeyElementIn, KeyPair, StreamChange, StreamSpecificationIn,
    ThroughputIn, attribute_definitions, billing, stream_change,
};
use crate::Api;
use crate::enums::{BillingMode, KeyType, WireEnum};
use crate::error::ApiError;
use crate::params::{Violations, check_table_name};
use crate::tag_rules::Tag;
use dynaraft_model::wire::{Flag, List, Obj, Str};
use dynaraft_storage::{
    Command, GlobalIndexMeta, IndexStatus, PartitionMeta, StreamMeta, TableMeta, TableStatus,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// CreateTable's request (SSESpecification and TableClass are accepted
/// and ignored; a ResourcePolicy needs `dynamodb:PutResourcePolicy` too).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTableInput {
    pub table_name: Option<Str>,
    pub attribute_definitions: Option<List<Obj<AttributeDefinitionIn>>>,
    pub key_schema: Option<List<Obj<KeyElementIn>>>,
    pub local_secondary_indexes: Option<List<Obj<IndexIn>>>,
    pub global_secondary_indexes: Option<List<Obj<IndexIn>>>,
    pub billing_mode: Option<Str>,
    pub provisioned_throughput: Option<Obj<ThroughputIn>>,
    pub tags: Option<List<Obj<Tag>>>,
    pub deletion_protection_enabled: Option<Flag>,
    pub stream_specification: Option<Obj<StreamSpecificationIn>>,
    /// A resource-based policy for the table (as PutResourcePolicy's).
    pub resource_policy: Option<Str>,
    pub on_demand_throughput: Option<Obj<super::table_defs::OnDemandIn>>,
    pub warm_throughput: Option<Obj<super::table_defs::WarmIn>>,
}

pub async fn execute(api: &Api, input: CreateTableInput) -> Result<Value, ApiError> {
    create(api, input, None).await
}

/// CreateTable, of a global table's replica when `replication` is given
/// (a peer region's `CreateReplica`).
pub async fn create(
    api: &Api,
    input: CreateTableInput,
    replication: Option<dynaraft_storage::Replication>,
) -> Result<Value, ApiError> {
    let name = input.table_name.as_deref().unwrap_or_default().to_string();
    let mut meta = table_meta(api, &input, "CreateTable")?;
    meta.replication = replication.map(Box::new);
    let instant = meta.status == TableStatus::Active;
    let meta = super::change_table(api, Command::CreateTable(meta), &name).await?;
    if !instant {
        super::schedule_transition(api, meta.name.clone(), Some(TableStatus::Active));
    }
    Ok(json!({ "TableDescription": super::describe_created(api, &meta).await? }))
}

/// The table `input` defines, validated as DynamoDB validates CreateTable
/// (and ImportTable's TableCreationParameters), once the caller may do
/// `action` to it.
pub fn table_meta(
    api: &Api,
    input: &CreateTableInput,
    action: &'static str,
) -> Result<TableMeta, ApiError> {
    let Some(name) = input.table_name.as_ref().map(|n| n.0.clone()) else {
        return Err(ApiError::validation(
            "The parameter 'TableName' is required but was not present in the request",
        ));
    };
    let mut v = Violations::default();
    check_table_name(&mut v, Some(&name), "tableName");
    v.check()?;
    api.authorize(|| crate::auth::Access::table(action, &name))?;
    let resource_policies = match input.resource_policy.as_deref() {
        Some(text) => {
            api.authorize(|| crate::auth::Access::table("PutResourcePolicy", &name))?;
            vec![super::resource_policy::created(text)?]
        }
        None => Vec::new(),
    };
    let mut v = Violations::default();
    if input.attribute_definitions.is_none() {
        v.null("attributeDefinitions");
    }
    if input.key_schema.is_none() {
        v.null("keySchema");
    }
    v.check()?;
    let attrs = attribute_definitions(input.attribute_definitions.as_ref())?;
    let keys = input
        .key_schema
        .as_ref()
        .map_or(&[][..], |k| k.0.as_slice());
    let (hash, range) = key_schema(keys, &attrs)?;
    let (billing_mode, rcu, wcu) = billing(
        input.billing_mode.as_ref(),
        input.provisioned_throughput.as_deref(),
    )?;
    let local_indexes = index_defs::local_indexes(
        input.local_secondary_indexes.as_ref(),
        &attrs,
        &hash,
        range.as_ref(),
    )?;
    let pay_per_request = billing_mode == BillingMode::PayPerRequest;
    let on_demand_max = super::table_defs::on_demand_created(
        input.on_demand_throughput.as_deref(),
        pay_per_request,
    )?;
    let warm = match input.warm_throughput.as_deref() {
        None => None,
        Some(w) => {
            let base = TableMeta {
                billing_mode: billing_mode.as_str().to_string(),
                read_capacity: rcu,
                write_capacity: wcu,
                ..Default::default()
            };
            Some(super::table_defs::warm_requested(&base, w, true)?)
        }
    };
    let global = index_defs::global_indexes(
        input.global_secondary_indexes.as_ref(),
        &attrs,
        pay_per_request,
        &local_indexes,
    )?;
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
    let streams = match input.stream_specification.as_deref().map(stream_change) {
        Some(Err(e)) => return Err(e),
        Some(Ok(StreamChange::Enable(view))) => vec![StreamMeta {
            view_type: view.as_str().to_string(),
            created_ms: dynaraft_storage::wall_clock_ms(),
            disabled_ms: None,
            retention_ms: api.cfg.stream_retention_ms,
        }],
        Some(Ok(StreamChange::Disable)) | None => Vec::new(),
    };
    let tags = crate::tag_rules::parse_tags(input.tags.as_ref())?;
    let instant = api.cfg.transition_delay_ms == 0;
    Ok(TableMeta {
        name: api.scope.table_key(&name).into_owned(),
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
        billing_mode: billing_mode.as_str().to_string(),
        read_capacity: rcu,
        write_capacity: wcu,
        tags,
        deletion_protection: input.deletion_protection_enabled.is_some_and(|f| f.0),
        last_increase_ms: 0,
        last_decrease_ms: 0,
        decreases_today: 0,
        ttl_attribute: None,
        local_indexes,
        next_index_id: global_indexes.len() as u32,
        global_indexes,
        streams,
        replication: None,
        backup: None,
        restore: None,
        pitr: None,
        importing: None,
        resource_policies,
        on_demand_max,
        insights: Vec::new(),
        warm,
    })
}

/// The table's KeySchema: one HASH element, then at most one RANGE
/// element, each defined in AttributeDefinitions (`attrs`).
fn key_schema(
    list: &[Obj<KeyElementIn>],
    attrs: &[KeyPair],
) -> Result<(KeyPair, Option<KeyPair>), ApiError> {
    let mut v = Violations::default();
    if list.is_empty() {
        v.add(
            Some("[]"),
            "keySchema",
            "Member must have length greater than or equal to 1",
        );
    }
    if list.len() > MAX_TABLE_KEY_ELEMENTS {
        // DynamoDB shows the list as Java renders its elements.
        let shown: Vec<String> = list
            .iter()
            .map(|k| {
                format!(
                    "KeySchemaElement(attributeName={}, keyType={})",
                    k.attribute_name.as_deref().unwrap_or("null"),
                    k.key_type.as_deref().unwrap_or("null")
                )
            })
            .collect();
        v.add(
            Some(&format!("[{}]", shown.join(", "))),
            "keySchema",
            &format!("Member must have length less than or equal to {MAX_TABLE_KEY_ELEMENTS}"),
        );
    }
    let mut elems: Vec<(&str, KeyType)> = Vec::new();
    for (i, k) in list.iter().enumerate() {
        let path = |f: &str| format!("keySchema.{}.member.{f}", i + 1);
        match k.attribute_name.as_deref() {
            None => v.null(&path("attributeName")),
            Some(n) => crate::params::check_key_attribute_name(&mut v, n, &path("attributeName")),
        }
        if k.key_type.is_none() {
            v.null(&path("keyType"));
        }
        let role = KeyType::member(&mut v, k.key_type.as_ref(), &path("keyType"));
        if let (Some(n), Some(role)) = (k.attribute_name.as_deref(), role) {
            elems.push((n, role));
        }
    }
    v.check()?;
    let Some(&(first, KeyType::Hash)) = elems.first() else {
        return Err(ApiError::validation(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        ));
    };
    if let Some(&(second, role)) = elems.get(1) {
        if role != KeyType::Range {
            return Err(ApiError::validation(
                "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type",
            ));
        }
        // DynamoDB reports a key attribute used twice as a missing
        // definition (one definition cannot serve two key elements).
        if second == first {
            return Err(ApiError::validation(
                "Invalid KeySchema: Some index key attribute have no definition",
            ));
        }
    }
    let defined: Vec<&str> = attrs.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = elems
        .iter()
        .map(|e| e.0)
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
    Ok((typed(first), elems.get(1).map(|e| typed(e.0))))
}

/// Most elements of a table's KeySchema.
const MAX_TABLE_KEY_ELEMENTS: usize = 2;
