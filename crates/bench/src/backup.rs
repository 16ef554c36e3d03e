//! Backups and restores, timed from outside while the workload runs.
//!
//! With `--backup`, a backup of the table is requested when the measured
//! window opens and timed until AVAILABLE; the workload's latencies in the
//! same window are those of a table being backed up (compare a run
//! without). After the window, the table is restored from the backup and
//! timed until ACTIVE; then, if point-in-time recovery was turned on
//! (`--pitr`, before the window), restored to the moment the window opened
//! (every write of the window undone) and timed the same way; with an
//! export bucket, the table is exported as of the same moment
//! (ExportTableToPointInTime, timed until COMPLETED) and the export's data
//! files imported into a new table (ImportTable, timed until COMPLETED).
//! The restored and imported tables and the backup are deleted afterwards.

use crate::client::{Conn, Endpoint};
use crate::ops;
use crate::runner::BenchError;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest a backup or a restore may take, in milliseconds.
pub const BACKUP_WAIT_MS: u64 = 3_600_000;
/// Pause between two looks at a backup's or a table's status, in
/// milliseconds.
const STATUS_POLL_MS: u64 = 100;

/// What the backups and restores took.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BackupSummary {
    /// CreateBackup to AVAILABLE, in seconds.
    pub backup_s: f64,
    /// The backup's ItemCount and BackupSizeBytes.
    pub items: u64,
    pub bytes: u64,
    /// RestoreTableFromBackup to ACTIVE, in seconds.
    pub restore_s: f64,
    /// RestoreTableToPointInTime (to the window's start) to ACTIVE, in
    /// seconds, when point-in-time recovery was on.
    pub pitr_restore_s: Option<f64>,
    /// ExportTableToPointInTime (as of the window's start) to COMPLETED,
    /// its ItemCount and BilledSizeBytes, and ImportTable of its data files
    /// to COMPLETED, in seconds, when an export bucket was given.
    #[serde(default)]
    pub export_s: Option<f64>,
    #[serde(default)]
    pub export_items: u64,
    #[serde(default)]
    pub export_bytes: u64,
    #[serde(default)]
    pub import_s: Option<f64>,
    /// Status polls answered with a 5xx or not at all (retried, as a
    /// client would), and the first such answer.
    #[serde(default)]
    pub refused_polls: u64,
    #[serde(default)]
    pub first_refusal: Option<String>,
}

fn setup(what: &str, f: ops::Failure) -> BenchError {
    BenchError::Setup(format!("{what}: {} {}", f.class, f.detail))
}

/// Turns point-in-time recovery on for `table`.
pub async fn enable_pitr(endpoint: &Arc<Endpoint>, table: &str) -> Result<(), BenchError> {
    let mut conn = Conn::new(endpoint.clone());
    let body = json!({
        "TableName": table,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": true},
    });
    ops::call(&mut conn, "UpdateContinuousBackups", &body)
        .await
        .map_err(|f| setup("UpdateContinuousBackups", f))?;
    Ok(())
}

/// Polls `op` with `body` until `done` says so; the time it took. A poll
/// refused with a 5xx, or not answered, is retried (and counted in
/// `summary`), as a client's SDK retries it.
async fn wait(
    conn: &mut Conn,
    op: &str,
    body: &Value,
    summary: &mut BackupSummary,
    done: impl Fn(&Value) -> bool,
) -> Result<(Duration, Value), BenchError> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(BACKUP_WAIT_MS) {
        match ops::call(conn, op, body).await {
            Ok(v) if done(&v) => return Ok((started.elapsed(), v)),
            Ok(_) => {}
            Err(f) if f.class.starts_with("HTTP 5") || f.class == ops::TRANSPORT_ERROR => {
                summary.refused_polls += 1;
                summary
                    .first_refusal
                    .get_or_insert_with(|| format!("{op}: {} {}", f.class, f.detail));
            }
            Err(f) => return Err(setup(op, f)),
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_MS)).await;
    }
    Err(BenchError::Setup(format!(
        "{op}: not done in {BACKUP_WAIT_MS} ms"
    )))
}

/// Creates `target` with `op` and `body` and waits until it is ACTIVE;
/// the time from the request, then deletes it.
async fn timed_restore(
    conn: &mut Conn,
    op: &str,
    body: Value,
    target: &str,
    summary: &mut BackupSummary,
) -> Result<f64, BenchError> {
    let started = Instant::now();
    ops::call(conn, op, &body).await.map_err(|f| setup(op, f))?;
    let describe = json!({"TableName": target});
    wait(conn, "DescribeTable", &describe, summary, |v| {
        v.pointer("/Table/TableStatus").and_then(Value::as_str) == Some("ACTIVE")
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    ops::call(conn, "DeleteTable", &describe)
        .await
        .map_err(|f| setup("DeleteTable", f))?;
    Ok(took)
}

/// Backs `table` up when the window opens (after `warmup`), restores it
/// after `window`, and to the window's start if `pitr`.
pub async fn run(
    endpoint: Arc<Endpoint>,
    table: String,
    warmup: Duration,
    window: Duration,
    pitr: bool,
    export_bucket: Option<String>,
) -> Result<BackupSummary, BenchError> {
    tokio::time::sleep(warmup).await;
    let opened = Instant::now();
    let opened_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut conn = Conn::new(endpoint);
    let started = Instant::now();
    let made = ops::call(
        &mut conn,
        "CreateBackup",
        &json!({"TableName": table, "BackupName": "bench"}),
    )
    .await
    .map_err(|f| setup("CreateBackup", f))?;
    let arn = made
        .pointer("/BackupDetails/BackupArn")
        .and_then(Value::as_str)
        .ok_or_else(|| BenchError::Setup("CreateBackup: no BackupArn".into()))?
        .to_string();
    let describe = json!({"BackupArn": arn});
    let mut summary = BackupSummary::default();
    let (_, desc) = wait(&mut conn, "DescribeBackup", &describe, &mut summary, |v| {
        v.pointer("/BackupDescription/BackupDetails/BackupStatus")
            .and_then(Value::as_str)
            == Some("AVAILABLE")
    })
    .await?;
    summary.backup_s = started.elapsed().as_secs_f64();
    summary.items = desc
        .pointer("/BackupDescription/SourceTableDetails/ItemCount")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    summary.bytes = desc
        .pointer("/BackupDescription/BackupDetails/BackupSizeBytes")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    tokio::time::sleep_until((opened + window).into()).await;
    let target = format!("{table}-restored");
    let body = json!({"TargetTableName": target, "BackupArn": arn});
    summary.restore_s = timed_restore(
        &mut conn,
        "RestoreTableFromBackup",
        body,
        &target,
        &mut summary,
    )
    .await?;
    if pitr {
        let target = format!("{table}-then");
        let body = json!({
            "SourceTableName": table,
            "TargetTableName": target,
            "RestoreDateTime": opened_ms as f64 / 1000.0,
        });
        summary.pitr_restore_s = Some(
            timed_restore(
                &mut conn,
                "RestoreTableToPointInTime",
                body,
                &target,
                &mut summary,
            )
            .await?,
        );
    }
    if let Some(bucket) = export_bucket.filter(|_| pitr) {
        export_and_import(&mut conn, &table, &bucket, opened_ms, &mut summary).await?;
    }
    ops::call(&mut conn, "DeleteBackup", &describe)
        .await
        .map_err(|f| setup("DeleteBackup", f))?;
    Ok(summary)
}

/// Exports `table` as of `at_ms` into `bucket` and imports the export
/// into a new table, timing each to COMPLETED; deletes the new table.
async fn export_and_import(
    conn: &mut Conn,
    table: &str,
    bucket: &str,
    at_ms: u64,
    summary: &mut BackupSummary,
) -> Result<(), BenchError> {
    let d = ops::call(conn, "DescribeTable", &json!({"TableName": table}))
        .await
        .map_err(|f| setup("DescribeTable", f))?;
    let field = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let arn = field(&d, "/Table/TableArn")
        .ok_or_else(|| BenchError::Setup("DescribeTable: no TableArn".into()))?;
    let schema = d.pointer("/Table/KeySchema").cloned().unwrap_or_default();
    let attributes = d
        .pointer("/Table/AttributeDefinitions")
        .cloned()
        .unwrap_or_default();
    let started = Instant::now();
    let body = json!({
        "TableArn": arn,
        "S3Bucket": bucket,
        "S3Prefix": "bench",
        "ExportTime": at_ms as f64 / 1000.0,
    });
    let made = ops::call(conn, "ExportTableToPointInTime", &body)
        .await
        .map_err(|f| setup("ExportTableToPointInTime", f))?;
    let export_arn = field(&made, "/ExportDescription/ExportArn")
        .ok_or_else(|| BenchError::Setup("ExportTableToPointInTime: no ExportArn".into()))?;
    let describe = json!({"ExportArn": export_arn});
    let (_, done) = wait(conn, "DescribeExport", &describe, summary, |v| {
        v.pointer("/ExportDescription/ExportStatus")
            .and_then(Value::as_str)
            != Some("IN_PROGRESS")
    })
    .await?;
    if field(&done, "/ExportDescription/ExportStatus").as_deref() != Some("COMPLETED") {
        return Err(BenchError::Setup(format!("the export failed: {done}")));
    }
    summary.export_s = Some(started.elapsed().as_secs_f64());
    let count = |p: &str| done.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    summary.export_items = count("/ExportDescription/ItemCount");
    summary.export_bytes = count("/ExportDescription/BilledSizeBytes");
    let manifest = field(&done, "/ExportDescription/ExportManifest").unwrap_or_default();
    let folder = manifest.rsplit_once('/').map_or("", |(f, _)| f);
    let target = format!("{table}-imported");
    let started = Instant::now();
    let body = json!({
        "S3BucketSource": {"S3Bucket": bucket, "S3KeyPrefix": format!("{folder}/data/")},
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "TableCreationParameters": {
            "TableName": target,
            "KeySchema": schema,
            "AttributeDefinitions": attributes,
            "BillingMode": "PAY_PER_REQUEST",
        },
    });
    let made = ops::call(conn, "ImportTable", &body)
        .await
        .map_err(|f| setup("ImportTable", f))?;
    let import_arn = field(&made, "/ImportTableDescription/ImportArn")
        .ok_or_else(|| BenchError::Setup("ImportTable: no ImportArn".into()))?;
    let describe = json!({"ImportArn": import_arn});
    let (_, done) = wait(conn, "DescribeImport", &describe, summary, |v| {
        v.pointer("/ImportTableDescription/ImportStatus")
            .and_then(Value::as_str)
            != Some("IN_PROGRESS")
    })
    .await?;
    let imported = done
        .pointer("/ImportTableDescription/ImportedItemCount")
        .and_then(Value::as_u64);
    if field(&done, "/ImportTableDescription/ImportStatus").as_deref() != Some("COMPLETED")
        || imported != Some(summary.export_items)
    {
        return Err(BenchError::Setup(format!(
            "the import did not bring back the {} items exported: {done}",
            summary.export_items
        )));
    }
    summary.import_s = Some(started.elapsed().as_secs_f64());
    ops::call(conn, "DeleteTable", &json!({"TableName": target}))
        .await
        .map_err(|f| setup("DeleteTable", f))?;
    Ok(())
}
