//! DescribeContinuousBackups: backups and point-in-time recovery are not
//! implemented, and this says so truthfully (PITR DISABLED), which is what
//! Terraform and other clients read on every refresh.
use crate::Api;
use crate::error::ApiError;
use crate::params::table_name;
use serde_json::{Value, json};

pub fn describe(api: &Api, body: &Value) -> Result<Value, ApiError> {
    let name = table_name(body)?;
    if api.router.table(&name).is_none() {
        return Err(ApiError::TableNotFound(format!("Table not found: {name}")));
    }
    Ok(json!({"ContinuousBackupsDescription": {
        "ContinuousBackupsStatus": "DISABLED",
        "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "DISABLED"}
    }}))
}
