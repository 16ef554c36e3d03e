//! DescribeEndpoints: this server is its own endpoint.
use crate::Api;
use crate::error::ApiError;
use serde_json::{Value, json};

/// How long clients may cache the endpoint, in minutes (DynamoDB's value).
pub const ENDPOINT_CACHE_MINUTES: u64 = 1440;

pub fn execute(api: &Api) -> Result<Value, ApiError> {
    api.authorize(|| crate::auth::Access::new("DescribeEndpoints", crate::auth::Resource::Any))?;
    Ok(
        json!({"Endpoints": [{"Address": api.cfg.endpoint_address, "CachePeriodInMinutes": ENDPOINT_CACHE_MINUTES}]}),
    )
}
