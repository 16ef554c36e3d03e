//! The request shapes CreateTable and UpdateTable share (attribute
//! definitions, key schema elements, provisioned throughput, index
//! definitions) and the checks DynamoDB makes on them, with its wording.

use crate::enums::{BillingMode, ScalarAttributeType, StreamViewType, WireEnum};
use crate::error::ApiError;
use crate::params::{Violations, check_key_attribute_name};
use dynaraft_model::wire::{Flag, Int, List, Obj, Str};
use serde::Deserialize;

/// An attribute name with its type descriptor (`S`, `N` or `B`).
pub type KeyPair = (String, String);

/// One AttributeDefinitions member.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinitionIn {
    pub attribute_name: Option<Str>,
    pub attribute_type: Option<Str>,
}

/// One KeySchema member.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct KeyElementIn {
    pub attribute_name: Option<Str>,
    pub key_type: Option<Str>,
}

/// ProvisionedThroughput.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ThroughputIn {
    pub read_capacity_units: Option<Int>,
    pub write_capacity_units: Option<Int>,
}

/// OnDemandThroughput.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct OnDemandIn {
    pub max_read_request_units: Option<Int>,
    pub max_write_request_units: Option<Int>,
}

/// OnDemandThroughput's two members checked, read then write: each
/// `None` absent, `Some(None)` -1 (no maximum; `clear` allows it, as
/// UpdateTable does and CreateTable does not), `Some(Some(n))` a maximum.
type OnDemandMembers = (Option<Option<u64>>, Option<Option<u64>>);

fn on_demand_members(o: &OnDemandIn, clear: bool) -> Result<OnDemandMembers, ApiError> {
    let member = |value: Option<&Int>, name: &str| match value.map(|i| i.0) {
        None => Ok(None),
        Some(-1) if clear => Ok(Some(None)),
        Some(n) if n >= 1 => Ok(Some(Some(n.unsigned_abs()))),
        Some(_) => Err(ApiError::validation(format!(
            "One or more parameter values were invalid: Requested {name} for OnDemandThroughput for table is outside of valid range"
        ))),
    };
    Ok((
        member(o.max_read_request_units.as_ref(), "MaxReadRequestUnits")?,
        member(o.max_write_request_units.as_ref(), "MaxWriteRequestUnits")?,
    ))
}

/// OnDemandThroughput of a new table (`pay_per_request` or not): its
/// maximums, each at least 1.
pub fn on_demand_created(
    input: Option<&OnDemandIn>,
    pay_per_request: bool,
) -> Result<dynaraft_storage::catalog::OnDemandMax, ApiError> {
    let Some(o) = input else {
        return Ok(Default::default());
    };
    let (read, write) = on_demand_members(o, false)?;
    if !pay_per_request {
        let member = match (read, write) {
            (Some(_), _) => "MaxReadRequestUnits",
            (None, Some(_)) => "MaxWriteRequestUnits",
            (None, None) => return Ok(Default::default()),
        };
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: {member} for OnDemandThroughput cannot be specified when the table BillingMode is PROVISIONED"
        )));
    }
    Ok(dynaraft_storage::catalog::OnDemandMax {
        read: read.flatten(),
        write: write.flatten(),
    })
}

/// `current` with UpdateTable's OnDemandThroughput merged in: each member
/// sent replaces its maximum, -1 removes it.
pub fn on_demand_updated(
    current: dynaraft_storage::catalog::OnDemandMax,
    input: &OnDemandIn,
) -> Result<dynaraft_storage::catalog::OnDemandMax, ApiError> {
    let (read, write) = on_demand_members(input, true)?;
    Ok(dynaraft_storage::catalog::OnDemandMax {
        read: read.unwrap_or(current.read),
        write: write.unwrap_or(current.write),
    })
}

/// WarmThroughput.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct WarmIn {
    pub read_units_per_second: Option<Int>,
    pub write_units_per_second: Option<Int>,
}

/// The WarmThroughput a table shows: the larger of what it keeps (`warm`)
/// and its base, an on-demand table's initial throughput or a provisioned
/// one's capacity.
pub fn warm_shown(meta: &dynaraft_storage::TableMeta) -> (u64, u64) {
    let base = if meta.pay_per_request() {
        (
            super::ON_DEMAND_WARM_READ_UNITS_PER_S,
            super::ON_DEMAND_WARM_WRITE_UNITS_PER_S,
        )
    } else {
        (meta.read_capacity, meta.write_capacity)
    };
    let (r, w) = meta.warm.unwrap_or((0, 0));
    (r.max(base.0), w.max(base.1))
}

/// `meta.warm` with WarmThroughput `input` applied (after the table's
/// billing and capacity are set): each member sent must be at least the
/// on-demand initial throughput (on-demand tables) and, unless `creating`,
/// never below what the table shows now (DynamoDB cannot lower it).
pub fn warm_requested(
    meta: &dynaraft_storage::TableMeta,
    input: &WarmIn,
    creating: bool,
) -> Result<(u64, u64), ApiError> {
    let on_demand = meta.pay_per_request();
    let mut out = warm_shown(meta);
    for (value, member, initial, slot) in [
        (
            &input.read_units_per_second,
            "ReadUnitsPerSecond",
            super::ON_DEMAND_WARM_READ_UNITS_PER_S,
            &mut out.0,
        ),
        (
            &input.write_units_per_second,
            "WriteUnitsPerSecond",
            super::ON_DEMAND_WARM_WRITE_UNITS_PER_S,
            &mut out.1,
        ),
    ] {
        let Some(v) = value.as_ref().map(|i| i.0) else {
            continue;
        };
        let v = u64::try_from(v).unwrap_or(0);
        if on_demand && v < initial {
            return Err(ApiError::validation(format!(
                "One or more parameter values were invalid: Requested {member} for WarmThroughput for table is lower than initial throughput for OnDemand. See: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode.html#on-demand-capacity-mode-initial"
            )));
        }
        if v < 1 || (!creating && v < *slot) {
            return Err(ApiError::validation(format!(
                "One or more parameter values were invalid: Requested {member} for WarmThroughput for table is lower than current WarmThroughput, decreasing WarmThroughput is not supported"
            )));
        }
        *slot = v;
    }
    Ok(out)
}

/// An index's Projection.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionIn {
    pub projection_type: Option<Str>,
    pub non_key_attributes: Option<List<Str>>,
}

/// A secondary index definition (CreateTable's LocalSecondaryIndexes and
/// GlobalSecondaryIndexes members, UpdateTable's `Create` action).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IndexIn {
    pub index_name: Option<Str>,
    pub key_schema: Option<List<Obj<KeyElementIn>>>,
    pub projection: Option<Obj<ProjectionIn>>,
    pub provisioned_throughput: Option<Obj<ThroughputIn>>,
}

/// The members' text of a list of optional strings, in order.
pub fn texts(list: Option<&List<Str>>) -> Option<Vec<String>> {
    list.map(|l| l.0.iter().map(|s| s.0.clone()).collect())
}

/// AttributeDefinitions (empty when absent), checked: each member's
/// constraints together, then no name twice.
pub fn attribute_definitions(
    list: Option<&List<Obj<AttributeDefinitionIn>>>,
) -> Result<Vec<KeyPair>, ApiError> {
    let mut v = Violations::default();
    let mut out = Vec::new();
    for (i, a) in list.into_iter().flat_map(|l| l.0.iter()).enumerate() {
        let path = |f: &str| format!("attributeDefinitions.{}.member.{f}", i + 1);
        match a.attribute_name.as_deref() {
            None => v.null(&path("attributeName")),
            Some(n) => check_key_attribute_name(&mut v, n, &path("attributeName")),
        }
        if a.attribute_type.is_none() {
            v.null(&path("attributeType"));
        }
        let ty =
            ScalarAttributeType::member(&mut v, a.attribute_type.as_ref(), &path("attributeType"));
        if let (Some(n), Some(t)) = (&a.attribute_name, ty) {
            out.push((n.0.clone(), t.as_str().to_string()));
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

/// Read and write capacity units of a ProvisionedThroughput, each present
/// and at least 1.
pub fn throughput(pt: &ThroughputIn) -> Result<(u64, u64), ApiError> {
    let mut v = Violations::default();
    let mut units = [0u64; 2];
    for (slot, (val, path)) in units.iter_mut().zip([
        (
            &pt.read_capacity_units,
            "provisionedThroughput.readCapacityUnits",
        ),
        (
            &pt.write_capacity_units,
            "provisionedThroughput.writeCapacityUnits",
        ),
    ]) {
        match val.as_ref().map(|i| i.0) {
            None => v.null(path),
            Some(x) if x < 1 => v.add(
                Some(&x.to_string()),
                path,
                "Member must have value greater than or equal to 1",
            ),
            Some(x) => *slot = x.unsigned_abs(),
        }
    }
    v.check()?;
    let [r, w] = units;
    Ok((r, w))
}

/// BillingMode and ProvisionedThroughput of a new table: (mode, read
/// units, write units); PROVISIONED unless said otherwise.
pub fn billing(
    mode: Option<&Str>,
    pt: Option<&ThroughputIn>,
) -> Result<(BillingMode, u64, u64), ApiError> {
    let mut v = Violations::default();
    let mode = BillingMode::member(&mut v, mode, "billingMode");
    v.check()?;
    let mode = mode.unwrap_or(BillingMode::Provisioned);
    match (mode, pt) {
        (BillingMode::PayPerRequest, Some(_)) => Err(ApiError::validation(
            "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
        )),
        (BillingMode::PayPerRequest, None) => Ok((mode, 0, 0)),
        (BillingMode::Provisioned, None) => Err(ApiError::validation(
            "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
        )),
        (BillingMode::Provisioned, Some(pt)) => {
            let (r, w) = throughput(pt)?;
            Ok((mode, r, w))
        }
    }
}

/// A StreamSpecification.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSpecificationIn {
    pub stream_enabled: Option<Flag>,
    pub stream_view_type: Option<Str>,
}

/// What a StreamSpecification asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChange {
    Enable(StreamViewType),
    Disable,
}

/// A StreamSpecification checked: its constraints, then that enabling
/// names a view type and disabling does not (DynamoDB's wording).
pub fn stream_change(spec: &StreamSpecificationIn) -> Result<StreamChange, ApiError> {
    let mut v = Violations::default();
    if spec.stream_enabled.is_none() {
        v.null("streamSpecification.streamEnabled");
    }
    let view = StreamViewType::member(
        &mut v,
        spec.stream_view_type.as_ref(),
        "streamSpecification.streamViewType",
    );
    v.check()?;
    match (spec.stream_enabled.is_some_and(|f| f.0), view) {
        (true, Some(view)) => Ok(StreamChange::Enable(view)),
        (true, None) => Err(ApiError::validation(
            "One or more parameter values were invalid: If stream is being enabled then UpdateViewType is required",
        )),
        (false, None) => Ok(StreamChange::Disable),
        (false, Some(_)) => Err(ApiError::validation(
            "One or more parameter values were invalid: If stream is being disabled, then UpdateViewType must not be specified",
        )),
    }
}

/// A stream's label: its creation time, UTC, to the millisecond
/// (`2026-10-08T23:07:31.275`), as DynamoDB writes it.
pub fn stream_label(created_ms: u64) -> String {
    let nanos = i128::from(created_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => created_ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_labels_are_utc_to_the_millisecond() {
        assert_eq!(stream_label(1_759_964_851_275), "2025-10-08T23:07:31.275");
        assert_eq!(stream_label(0), "1970-01-01T00:00:00.000");
    }
}
