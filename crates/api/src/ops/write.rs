//! The write path shared by PutItem, UpdateItem, DeleteItem and
//! BatchWriteItem: build a self-contained command, propose it to the item's
//! partition, and turn the outcome into a response or DynamoDB error.

use crate::Api;
use crate::auth::Access;
use crate::enums::{ConditionalOperator, ReturnMetrics, ReturnOnFailure, ReturnValues, WireEnum};
use crate::error::ApiError;
use crate::params::Violations;
use dynaraft_cluster::Table;
use dynaraft_model::Item;
use dynaraft_model::value::{item_size_bytes, item_to_json};
use dynaraft_model::wire::Str;
use dynaraft_storage::{JsonDoc, Outcome, WriteCommand, WriteKind};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// ConditionExpression, or `Expected` + `ConditionalOperator` translated
/// (whose names and values join `input`'s).
pub fn condition_source(
    input: &mut crate::params::ExprInput,
    condition: Option<Str>,
    expected: Option<&Map<String, Value>>,
    operator: Option<ConditionalOperator>,
) -> Result<Option<String>, ApiError> {
    if let Some(c) = condition {
        return Ok(Some(c.0));
    }
    if operator.is_some() && expected.is_none_or(|e| e.is_empty()) {
        return Err(ApiError::validation(
            "ConditionalOperator can only be used when Expected holds at least one condition",
        ));
    }
    match expected {
        Some(expected) => {
            let mut l = input.legacy();
            let c = l.expected(expected, operator.map(WireEnum::as_str))?;
            input.absorb(l, c.as_ref());
            Ok(c)
        }
        None => Ok(None),
    }
}

/// ReturnValues, ReturnValuesOnConditionCheckFailure and
/// ReturnConsumedCapacity of a single-item write.
pub struct WriteOptions {
    pub return_values: ReturnValues,
    pub old_on_failure: bool,
    pub capacity: crate::params::CapacityMode,
    /// ReturnItemCollectionMetrics=SIZE.
    pub collection_metrics: bool,
}

/// The option members of a single-item write, as sent.
pub struct OptionMembers<'a> {
    pub return_values: Option<&'a Str>,
    pub capacity: Option<&'a Str>,
    pub metrics: Option<&'a Str>,
    pub on_failure: Option<&'a Str>,
}

/// Which of a write's option members DynamoDB checks first.
#[derive(Clone, Copy)]
pub enum OptionOrder {
    /// PutItem and DeleteItem: ReturnValues before ReturnItemCollectionMetrics.
    ValuesFirst,
    /// UpdateItem: ReturnItemCollectionMetrics before ReturnValues.
    MetricsFirst,
}

impl WriteOptions {
    /// Checks the option members' constraints into `v`, in DynamoDB's
    /// order (ReturnConsumedCapacity first), and reads them.
    pub fn check(v: &mut Violations, m: OptionMembers, order: OptionOrder) -> WriteOptions {
        let capacity = crate::params::capacity_member(v, m.capacity);
        let (rv, metrics) = match order {
            OptionOrder::ValuesFirst => {
                let rv = ReturnValues::member(v, m.return_values, "returnValues");
                (
                    rv,
                    ReturnMetrics::member(v, m.metrics, "returnItemCollectionMetrics"),
                )
            }
            OptionOrder::MetricsFirst => {
                let metrics = ReturnMetrics::member(v, m.metrics, "returnItemCollectionMetrics");
                (
                    ReturnValues::member(v, m.return_values, "returnValues"),
                    metrics,
                )
            }
        };
        let on_fail =
            ReturnOnFailure::member(v, m.on_failure, "returnValuesOnConditionCheckFailure");
        WriteOptions {
            return_values: rv.unwrap_or(ReturnValues::None),
            old_on_failure: on_fail == Some(ReturnOnFailure::AllOld),
            capacity,
            collection_metrics: metrics == Some(ReturnMetrics::Size),
        }
    }

    /// PutItem and DeleteItem return only the old item.
    pub fn only_old(&self) -> Result<(), ApiError> {
        match self.return_values {
            ReturnValues::None | ReturnValues::AllOld => Ok(()),
            _ => Err(ApiError::validation(
                "ReturnValues can only be ALL_OLD or NONE",
            )),
        }
    }

    /// The response: `Attributes` (when non-empty) and `ConsumedCapacity`.
    pub fn response(&self, table: &str, attributes: Option<Item>, written: &Written) -> Value {
        use crate::params::insert_opt;
        let mut out = serde_json::json!({});
        insert_opt(
            &mut out,
            "Attributes",
            attributes
                .filter(|a| !a.is_empty())
                .as_ref()
                .map(item_to_json),
        );
        insert_opt(
            &mut out,
            "ConsumedCapacity",
            crate::params::consumed_with_indexes(
                self.capacity,
                table,
                Some(written.units()),
                &written.index_units,
                true,
            ),
        );
        if self.collection_metrics {
            insert_opt(
                &mut out,
                "ItemCollectionMetrics",
                written.collection_metrics(),
            );
        }
        out
    }
}

/// The expression members of a put, delete or condition check, as sent.
pub struct ConditionMembers {
    pub condition_expression: Option<Str>,
    pub expected: Option<Map<String, Value>>,
    pub conditional_operator: Option<Str>,
    pub names: Option<dynaraft_model::wire::Dict<Str>>,
    pub values: Option<dynaraft_model::wire::WireItem>,
}

impl ConditionMembers {
    /// Checks ConditionalOperator's constraint, then the mixing rules of
    /// expression and legacy parameters (after `extra`, the operation's
    /// own constraints, which go into the same report).
    pub fn inputs(
        self,
        extra: impl FnOnce(&mut Violations),
    ) -> Result<(crate::params::ExprInput, ConditionParts), ApiError> {
        let mut v = Violations::default();
        extra(&mut v);
        let operator = ConditionalOperator::member(
            &mut v,
            self.conditional_operator.as_ref(),
            "conditionalOperator",
        );
        v.check()?;
        let exprs = crate::params::ExprInput::from_parts(
            &[("ConditionExpression", self.condition_expression.is_some())],
            &[
                ("Expected", self.expected.is_some()),
                ("ConditionalOperator", self.conditional_operator.is_some()),
            ],
            self.names,
            self.values,
        )?;
        let parts = ConditionParts {
            condition_expression: self.condition_expression,
            expected: self.expected,
            operator,
        };
        Ok((exprs, parts))
    }
}

/// The condition's sources once their constraints passed.
pub struct ConditionParts {
    pub condition_expression: Option<Str>,
    pub expected: Option<Map<String, Value>>,
    pub operator: Option<ConditionalOperator>,
}

impl ConditionParts {
    /// The condition, parsed once to validate it (see [`checked_condition`]).
    pub fn checked(self, exprs: &mut crate::params::ExprInput) -> Result<Option<String>, ApiError> {
        checked_condition(
            exprs,
            self.condition_expression,
            self.expected,
            self.operator,
        )
    }
}

/// The condition of a put, delete or condition check (ConditionExpression,
/// or the legacy Expected), parsed once to validate it; its names and
/// values are logged with the command.
pub fn checked_condition(
    input: &mut crate::params::ExprInput,
    condition: Option<Str>,
    expected: Option<Map<String, Value>>,
    operator: Option<ConditionalOperator>,
) -> Result<Option<String>, ApiError> {
    let condition = condition_source(input, condition, expected.as_ref(), operator)?;
    let mut subs = input.subs();
    if let Some(c) = &condition {
        dynaraft_expr::parse_condition(c, dynaraft_expr::ExprKind::Condition, &mut subs)?;
    }
    subs.check_unused()?;
    Ok(condition)
}

pub struct WriteRequest {
    pub kind: WriteKind,
    pub key: Item,
    pub item: Option<Item>,
    pub condition: Option<String>,
    pub update: Option<String>,
    pub names: BTreeMap<String, String>,
    pub values: Value,
    /// ReturnValuesOnConditionCheckFailure = ALL_OLD.
    pub old_on_failure: bool,
    /// `update` translates AttributeUpdates.
    pub legacy_update: bool,
}

impl WriteRequest {
    /// A Put or Delete guarded by an optional condition.
    pub fn conditional(
        kind: WriteKind,
        key: Item,
        item: Option<Item>,
        condition: Option<String>,
        input: &crate::params::ExprInput,
        old_on_failure: bool,
    ) -> WriteRequest {
        WriteRequest {
            kind,
            key,
            item,
            condition,
            update: None,
            names: input.names.clone(),
            values: input.values_json(),
            old_on_failure,
            legacy_update: false,
        }
    }
}

impl WriteRequest {
    /// What this write needs allowed on table `name`: its action, its
    /// partition-key value, and every top-level attribute it names (key,
    /// item, condition and update targets), for `dynamodb:Attributes`.
    pub fn access(
        &self,
        name: &str,
        schema: &dynaraft_model::KeySchema,
    ) -> Result<Access, ApiError> {
        let action = match self.kind {
            WriteKind::Put => "PutItem",
            WriteKind::Update => "UpdateItem",
            WriteKind::Delete => "DeleteItem",
            WriteKind::Check => "ConditionCheckItem",
        };
        let mut names: Vec<String> = self.key.keys().cloned().collect();
        names.extend(self.item.iter().flat_map(|i| i.keys().cloned()));
        let values = dynaraft_model::value::item_from_json(&self.values)?;
        let mut subs = dynaraft_expr::Substitutions::new(self.names.clone(), values).unlimited();
        if let Some(c) = &self.condition {
            let c =
                dynaraft_expr::parse_condition(c, dynaraft_expr::ExprKind::Condition, &mut subs)?;
            let mut paths = Vec::new();
            super::read::condition_paths(&c, &mut paths);
            names.extend(paths.iter().map(|p| p.root().to_string()));
        }
        if let Some(u) = &self.update {
            let u = dynaraft_expr::parse_update(u, &mut subs)?;
            names.extend(u.targets().map(|p| p.root().to_string()));
        }
        Ok(Access::table(action, name)
            .keys(schema, [&self.key])
            .attributes(names))
    }
}

/// Whether the request's principal may make write `req` on table `name`
/// (always, when requests are not authenticated); `return_values` is the
/// request's ReturnValues, if it names one.
pub fn authorize(
    api: &Api,
    name: &str,
    table: &Table,
    req: &WriteRequest,
    return_values: Option<&str>,
) -> Result<(), ApiError> {
    if api.principal.is_none() {
        return Ok(());
    }
    let access = req
        .access(name, &table.schema)?
        .return_values(return_values);
    api.authorize(|| access)
}

pub struct Written {
    pub old: Option<Item>,
    pub new: Option<Item>,
    /// For a table with local indexes: the item's partition key and its
    /// collection's size after the write, in bytes.
    pub collection: Option<(Item, u64)>,
    /// Write units each secondary index the write changed consumed.
    pub index_units: Vec<crate::params::IndexUnits>,
}

/// Bytes in one of SizeEstimateRangeGB's gigabytes.
const BYTES_PER_GB: f64 = (1u64 << 30) as f64;

impl Written {
    /// ItemCollectionMetrics: the collection's partition key and its size
    /// as DynamoDB estimates it, a one-gigabyte range holding the size.
    pub fn collection_metrics(&self) -> Option<Value> {
        let (key, bytes) = self.collection.as_ref()?;
        let low = (*bytes as f64 / BYTES_PER_GB).floor();
        Some(serde_json::json!({
            "ItemCollectionKey": item_to_json(key),
            "SizeEstimateRangeGB": [low, low + 1.0],
        }))
    }

    /// Write units the table consumed.
    pub fn units(&self) -> f64 {
        crate::params::write_units(self.size())
    }

    /// Write units the table and its secondary indexes consumed.
    pub fn total_units(&self) -> f64 {
        self.units() + self.index_units.iter().map(|i| i.units).sum::<f64>()
    }

    /// Size used for write capacity: the larger of the old and new item.
    pub fn size(&self) -> usize {
        self.old
            .as_ref()
            .map_or(0, item_size_bytes)
            .max(self.new.as_ref().map_or(0, item_size_bytes))
    }
}

/// The command that carries `req` to its partition.
pub fn command(api: &Api, table: &Table, req: &WriteRequest) -> Result<WriteCommand, ApiError> {
    let storage_key = table.schema.storage_key(&req.key).ok_or_else(|| {
        ApiError::validation("The provided key element does not match the schema")
    })?;
    Ok(WriteCommand {
        kind: req.kind,
        storage_key,
        key: JsonDoc::from_item(&req.key),
        item: req.item.as_ref().map(JsonDoc::from_item),
        condition: req.condition.clone(),
        update: req.update.clone(),
        names: req.names.clone(),
        values: JsonDoc::new(&req.values),
        local: table
            .meta
            .local_index_specs(&table.schema, api.cfg.item_collection_limit_bytes),
        global: table.meta.global_key_specs(),
        legacy_update: req.legacy_update,
        stream: table.meta.enabled_stream().is_some(),
        origin: Default::default(),
        replicated: dynaraft_storage::replica::GlobalWrite::local(table.meta.replication_region()),
    })
}

/// Applies `req`, once `table` (and the partition holding its key) has
/// write capacity for it; what it consumed is charged after.
pub async fn write(api: &Api, table: &Table, req: WriteRequest) -> Result<Written, ApiError> {
    use crate::capacity::Dir;
    let cmd = command(api, table, &req)?;
    let hash = dynaraft_storage::catalog::key_hash(&cmd.storage_key);
    let capacity = &api.cfg.capacity;
    let reserved = capacity.write(table, hash);
    let rule = match reserved {
        Ok(_) => crate::insights::Rule::Accessed,
        Err(_) => crate::insights::Rule::Throttled,
    };
    let schema = &table.schema.hash;
    capacity
        .insights
        .record(table, None, rule, schema, &req.key);
    let ticket = reserved.map_err(|t| super::throttled(api, t))?;
    let outcome = api.router.write(table, cmd).await;
    let (units, index_units) = match &outcome {
        Ok(Outcome::Written { old, new, .. }) => {
            let size = old
                .as_ref()
                .map_or(0, item_size_bytes)
                .max(new.as_ref().map_or(0, item_size_bytes));
            (
                crate::params::write_units(size),
                index_write_units(table, old.as_ref(), new.as_ref()),
            )
        }
        // A failed condition consumes the item's write units.
        Ok(Outcome::ConditionFailed { old }) => (
            crate::params::write_units(old.as_ref().map_or(0, item_size_bytes)),
            Vec::new(),
        ),
        // Nothing was written: the reservation is given back.
        _ => (0.0, Vec::new()),
    };
    // A local index's writes draw on its table's capacity, a global
    // index's on its own.
    let local: f64 = index_units
        .iter()
        .filter(|i| !i.global)
        .map(|i| i.units)
        .sum();
    capacity.settle(table, Dir::Write, ticket, units + local, |ix| {
        index_units
            .iter()
            .find(|i| i.global && i.name == ix)
            .map_or(0.0, |i| i.units)
    });
    match outcome? {
        Outcome::Written {
            old,
            new,
            collection_bytes,
        } => {
            // The item collection is named by the partition key.
            let pk: Item = table
                .schema
                .hash
                .iter()
                .filter_map(|ka| req.key.get(&ka.name).map(|v| (ka.name.clone(), v.clone())))
                .collect();
            let pk = (!pk.is_empty()).then_some(pk);
            Ok(Written {
                old,
                new,
                collection: pk.zip(collection_bytes),
                index_units,
            })
        }
        Outcome::ConditionFailed { old } => Err(ApiError::ConditionalCheckFailed {
            item: if req.old_on_failure {
                old.as_ref().map(item_to_json)
            } else {
                None
            },
        }),
        Outcome::Invalid(m) => Err(ApiError::Validation(m)),
        Outcome::CollectionTooLarge => Err(ApiError::ItemCollectionSizeLimitExceeded),
        Outcome::TxnConflict(_) => Err(ApiError::TransactionConflict),
        Outcome::IndexLagging => Err(ApiError::IndexBackPressure {
            provisioned: !table.meta.pay_per_request(),
        }),
        other => {
            tracing::error!(?other, "unexpected outcome for a write");
            Err(ApiError::InternalServerError(
                "Internal server error".into(),
            ))
        }
    }
}

/// Write units each secondary index of `table` consumes for a write that
/// turned item `old` into `new` (DynamoDB's rules): an entry put or
/// deleted costs its projected size's units, one whose index key changed
/// costs both, and one whose projected attributes did not change costs
/// nothing. Indexes the item is in neither before nor after are left out.
pub fn index_write_units(
    table: &Table,
    old: Option<&Item>,
    new: Option<&Item>,
) -> Vec<crate::params::IndexUnits> {
    use crate::params::write_units;
    let globals = table.meta.global_indexes.iter().map(|g| (&g.index, true));
    let locals = table.meta.local_indexes.iter().map(|l| (l, false));
    let mut out = Vec::new();
    for (index, global) in globals.chain(locals) {
        let entry = |item: Option<&Item>| item.and_then(|i| index_entry(table, index, i));
        let units = match (entry(old), entry(new)) {
            (None, None) => continue,
            (Some(o), None) => write_units(item_size_bytes(&o)),
            (None, Some(n)) => write_units(item_size_bytes(&n)),
            (Some(o), Some(n)) if o == n => continue,
            (Some(o), Some(n)) => {
                let same_key = index
                    .key
                    .hash
                    .iter()
                    .chain(&index.key.range)
                    .all(|a| o.get(&a.name) == n.get(&a.name));
                if same_key {
                    write_units(item_size_bytes(&o).max(item_size_bytes(&n)))
                } else {
                    write_units(item_size_bytes(&o)) + write_units(item_size_bytes(&n))
                }
            }
        };
        out.push(crate::params::IndexUnits {
            name: index.name.clone(),
            global,
            units,
        });
    }
    out
}

/// The entry `item` has in `index` (its projected attributes), if it has
/// every attribute of the index's key.
fn index_entry(table: &Table, index: &dynaraft_storage::IndexMeta, item: &Item) -> Option<Item> {
    use dynaraft_storage::catalog::Projection;
    let key = &index.key;
    if !key
        .hash
        .iter()
        .chain(&key.range)
        .all(|a| item.contains_key(&a.name))
    {
        return None;
    }
    if index.projection == Projection::All {
        return Some(item.clone());
    }
    let schema = &table.schema;
    let keep = |name: &str| {
        schema
            .hash
            .iter()
            .chain(&schema.range)
            .chain(&key.hash)
            .chain(&key.range)
            .any(|a| a.name == name)
            || matches!(&index.projection, Projection::Include(names) if names.iter().any(|n| n == name))
    };
    Some(
        item.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}
