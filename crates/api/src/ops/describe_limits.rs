//! DescribeLimits: the default account and table limits DynamoDB reports.
use crate::error::ApiError;
use serde_json::{Value, json};

pub const ACCOUNT_MAX_CAPACITY_UNITS: u64 = 80_000;
pub const TABLE_MAX_CAPACITY_UNITS: u64 = 40_000;

pub fn execute(api: &crate::Api) -> Result<Value, ApiError> {
    api.authorize(|| crate::auth::Access::new("DescribeLimits", crate::auth::Resource::Any))?;
    Ok(json!({
        "AccountMaxReadCapacityUnits": ACCOUNT_MAX_CAPACITY_UNITS,
        "AccountMaxWriteCapacityUnits": ACCOUNT_MAX_CAPACITY_UNITS,
        "TableMaxReadCapacityUnits": TABLE_MAX_CAPACITY_UNITS,
        "TableMaxWriteCapacityUnits": TABLE_MAX_CAPACITY_UNITS,
    }))
}
