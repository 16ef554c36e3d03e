//! DeleteTable: DELETING, then gone after the transition delay.
use super::TableInput;
use crate::Api;
use crate::error::ApiError;
use crate::params::resource_name;
use dynaraft_storage::{Command, TableStatus};
use serde_json::{Value, json};

pub async fn execute(api: &Api, input: TableInput) -> Result<Value, ApiError> {
    let name = resource_name(input.table_name.as_ref())?;
    api.authorize(|| crate::auth::Access::table("DeleteTable", &name))?;
    let t = super::named_table(api, &name)?;
    match t.meta.status {
        TableStatus::Creating => {
            return Err(ApiError::ResourceInUse(format!(
                "Attempt to change a resource which is still in use: Table is being created: {name}"
            )));
        }
        TableStatus::Deleting => {
            return Err(ApiError::ResourceInUse(format!(
                "Attempt to change a resource which is still in use: Table is being deleted: {name}"
            )));
        }
        _ => {}
    }
    if t.meta.deletion_protection {
        return Err(super::deletion_protected(&name));
    }
    // A backup being copied, or a restore to a point in time, reads the
    // table's partitions until it is done.
    let copying = api.router.tables().iter().any(|o| {
        // Point-in-time snapshots are the server's: dropped with the table.
        o.meta.backup.as_ref().is_some_and(|b| {
            !b.system
                && b.source.name == t.meta.name
                && b.status == dynaraft_storage::catalog::BACKUP_CREATING
        }) || o
            .meta
            .restore
            .as_ref()
            .is_some_and(|r| r.in_progress && r.source_table.as_ref() == Some(&t.meta.name))
    });
    if copying {
        return Err(ApiError::ResourceInUse(format!(
            "Attempt to change a resource which is still in use: Table is being backed up or restored from: {name}"
        )));
    }
    if t.meta
        .replication
        .as_ref()
        .is_some_and(|r| !r.replicas.is_empty())
    {
        // Its peers would ship its writes to a table that is gone.
        return Err(ApiError::validation(format!(
            "One or more parameter values were invalid: table {name} has replicas in other regions; remove them first (UpdateTable ReplicaUpdates Delete)"
        )));
    }
    let mut desc = super::describe(api, &t.meta).await?;
    desc["TableStatus"] = json!("DELETING");
    // DeleteTable's description leaves out the table's schema and age.
    if let Some(d) = desc.as_object_mut() {
        for gone in [
            "CreationDateTime",
            "KeySchema",
            "AttributeDefinitions",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
        ] {
            d.remove(gone);
        }
    }
    if api.cfg.transition_delay_ms == 0 {
        let drop = Command::DropTable {
            name: t.meta.name.clone(),
        };
        super::change_table(api, drop, &name).await?;
    } else {
        let status = Command::SetTableStatus {
            name: t.meta.name.clone(),
            status: TableStatus::Deleting,
        };
        super::change_table(api, status, &name).await?;
        super::schedule_transition(api, t.meta.name.clone(), None);
    }
    Ok(json!({ "TableDescription": desc }))
}
