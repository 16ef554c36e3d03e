//! DescribeContinuousBackups: backups and point-in-time recovery are not
//! implemented, and this says so truthfully (PITR DISABLED), which is what
//! Terraform and other clients read on every refresh.
use super::TableInput;
use crate::Api;
use crate::error::ApiError;
use crate::params::resource_name;
use serde_json::{Value, json};

pub fn describe(api: &Api, input: TableInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("DescribeContinuousBackups", &name))?;
    if api.table(&name).is_none() {
        return Err(ApiError::TableNotFound(format!("Table not found: {name}")));
    }
    Ok(json!({"ContinuousBackupsDescription": {
        "ContinuousBackupsStatus": "DISABLED",
        "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "DISABLED"}
    }}))
}
