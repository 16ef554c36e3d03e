//! `dynaraft backup`, `restore`, `export` and `import`: the long
//! operations through the DynamoDB API of any endpoint, each followed to
//! its end with a progress bar on standard error (counts where the API
//! gives them: a restored table's items against the backup's, an export's
//! items against the table's, an import's items and bytes so far), and
//! the result as JSON on standard output.

use anyhow::{Context, bail};
use dynaraft_bench::client::{Conn, Endpoint};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Pause between two looks at an operation's state, in milliseconds.
const POLL_MS: u64 = 250;

/// Where and as whom to call.
#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// The endpoint (a dynaraft server or router, or any DynamoDB).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// Region to sign for (a server without --shared-db keeps each key's
    /// and region's tables apart).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Access key id to sign with.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "local")]
    pub access_key: String,
    /// Secret access key to sign with (checked by a server started with
    /// --auth-file).
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "local",
        hide_env_values = true
    )]
    pub secret_key: String,
}

impl ClientArgs {
    pub fn connect(&self) -> anyhow::Result<Conn> {
        let endpoint = Endpoint::signed_as(
            &self.endpoint,
            &self.region,
            &self.access_key,
            &self.secret_key,
        )
        .with_context(|| format!("endpoint {}", self.endpoint))?;
        Ok(Conn::new(Arc::new(endpoint)))
    }
}

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The table to back up.
    #[arg(long)]
    table: String,
    /// The backup's name (default: the table's and the time).
    #[arg(long)]
    name: Option<String>,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The table to create.
    #[arg(long)]
    target: String,
    /// Restore this backup...
    #[arg(long, conflicts_with_all = ["table", "at"])]
    backup_arn: Option<String>,
    /// ...or this table, as it was at --at (point-in-time recovery).
    #[arg(long, requires = "at")]
    table: Option<String>,
    /// The moment, in epoch seconds, or `latest`.
    #[arg(long)]
    at: Option<String>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The table to export (point-in-time recovery must be on).
    #[arg(long)]
    table: String,
    /// The bucket of the server's object store.
    #[arg(long)]
    bucket: String,
    /// Key prefix in the bucket.
    #[arg(long)]
    prefix: Option<String>,
    /// DYNAMODB_JSON or ION.
    #[arg(long, default_value = "DYNAMODB_JSON")]
    format: String,
    /// The moment exported, in epoch seconds (default: now).
    #[arg(long)]
    at: Option<f64>,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The table to create.
    #[arg(long)]
    table: String,
    /// Its partition key, as NAME:TYPE (S, N or B).
    #[arg(long)]
    hash_key: String,
    /// Its sort key, as NAME:TYPE.
    #[arg(long)]
    range_key: Option<String>,
    /// The bucket of the server's object store.
    #[arg(long)]
    bucket: String,
    /// Every object under this prefix is read.
    #[arg(long)]
    prefix: Option<String>,
    /// DYNAMODB_JSON, ION or CSV.
    #[arg(long, default_value = "DYNAMODB_JSON")]
    format: String,
    /// GZIP, ZSTD or NONE.
    #[arg(long, default_value = "GZIP")]
    compression: String,
}

/// One DynamoDB call; its answer, or the error DynamoDB sent.
async fn call(conn: &mut Conn, op: &str, body: &Value) -> anyhow::Result<Value> {
    dynaraft_bench::ops::call(conn, op, body)
        .await
        .map_err(|f| anyhow::anyhow!("{op}: {} {}", f.class, f.detail))
}

fn bar(total: Option<u64>, what: &str) -> ProgressBar {
    let b = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} items, {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg}, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    b.set_message(what.to_string());
    b.enable_steady_tick(Duration::from_millis(POLL_MS));
    b
}

/// What to look at until an operation ends, and how to show it.
struct Watch<'a> {
    /// The Describe call and its request.
    op: &'a str,
    body: Value,
    /// The bar's label, and its total (`None`: a spinner).
    what: String,
    total: Option<u64>,
    /// Where the answer holds the status, the status while running, and
    /// the count of items so far.
    status: &'a str,
    running: &'a str,
    count: Option<&'a str>,
    /// The bar's label from each answer, when it says more than `what`.
    label: Option<&'a dyn Fn(&Value) -> String>,
    /// The part of the last answer printed.
    result: &'a str,
}

/// Looks at `w.op` until its status is no longer `w.running`, with a
/// progress bar; prints the result as JSON and returns the last answer.
async fn follow(conn: &mut Conn, w: Watch<'_>) -> anyhow::Result<Value> {
    let b = bar(w.total, &w.what);
    loop {
        let v = call(conn, w.op, &w.body).await?;
        if let Some(n) = w.count.and_then(|p| u64_at(&v, p)) {
            b.set_position(n);
        }
        if let Some(label) = w.label {
            b.set_message(label(&v));
        }
        if str_at(&v, w.status).is_some_and(|s| s != w.running) {
            b.finish_and_clear();
            let shown = v.pointer(w.result).unwrap_or(&Value::Null);
            println!("{}", serde_json::to_string_pretty(shown)?);
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

fn str_at(v: &Value, p: &str) -> Option<String> {
    v.pointer(p).and_then(Value::as_str).map(str::to_string)
}

fn u64_at(v: &Value, p: &str) -> Option<u64> {
    v.pointer(p).and_then(Value::as_u64)
}

/// The table's ItemCount and ARN.
async fn table_facts(conn: &mut Conn, table: &str) -> anyhow::Result<(u64, String)> {
    let d = call(conn, "DescribeTable", &json!({"TableName": table})).await?;
    let arn = str_at(&d, "/Table/TableArn").context("DescribeTable: no TableArn")?;
    Ok((u64_at(&d, "/Table/ItemCount").unwrap_or(0), arn))
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let mut conn = args.client.connect()?;
    let name = args.name.unwrap_or_else(|| {
        let secs = dynaraft_storage::wall_clock_ms() / 1000;
        format!("{}-{secs}", args.table)
    });
    let made = call(
        &mut conn,
        "CreateBackup",
        &json!({"TableName": args.table, "BackupName": name}),
    )
    .await?;
    let arn = str_at(&made, "/BackupDetails/BackupArn").context("no BackupArn")?;
    let w = Watch {
        op: "DescribeBackup",
        body: json!({"BackupArn": arn}),
        what: format!("backing up {}", args.table),
        total: None,
        status: "/BackupDescription/BackupDetails/BackupStatus",
        running: "CREATING",
        count: None,
        label: None,
        result: "/BackupDescription/BackupDetails",
    };
    follow(&mut conn, w).await?;
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let mut conn = args.client.connect()?;
    let (op, body, expected) = match (&args.backup_arn, &args.table, args.at.as_deref()) {
        (Some(arn), _, _) => {
            let d = call(&mut conn, "DescribeBackup", &json!({"BackupArn": arn})).await?;
            let items = u64_at(&d, "/BackupDescription/SourceTableDetails/ItemCount");
            let body = json!({"TargetTableName": args.target, "BackupArn": arn});
            ("RestoreTableFromBackup", body, items)
        }
        (None, Some(table), Some(at)) => {
            let mut body = json!({"SourceTableName": table, "TargetTableName": args.target});
            if at == "latest" {
                body["UseLatestRestorableTime"] = json!(true);
            } else {
                let secs: f64 = at.parse().context("--at: epoch seconds or `latest`")?;
                body["RestoreDateTime"] = json!(secs);
            }
            let (items, _) = table_facts(&mut conn, table).await?;
            ("RestoreTableToPointInTime", body, Some(items))
        }
        _ => bail!("give --backup-arn, or --table and --at"),
    };
    call(&mut conn, op, &body).await?;
    let w = Watch {
        op: "DescribeTable",
        body: json!({"TableName": args.target}),
        what: format!("restoring {}", args.target),
        total: expected,
        status: "/Table/TableStatus",
        running: "CREATING",
        count: Some("/Table/ItemCount"),
        label: None,
        result: "/Table/RestoreSummary",
    };
    follow(&mut conn, w).await?;
    Ok(())
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut conn = args.client.connect()?;
    let (items, arn) = table_facts(&mut conn, &args.table).await?;
    let mut body = json!({"TableArn": arn, "S3Bucket": args.bucket, "ExportFormat": args.format});
    if let Some(p) = &args.prefix {
        body["S3Prefix"] = json!(p);
    }
    if let Some(at) = args.at {
        body["ExportTime"] = json!(at);
    }
    let made = call(&mut conn, "ExportTableToPointInTime", &body).await?;
    let export_arn = str_at(&made, "/ExportDescription/ExportArn").context("no ExportArn")?;
    let w = Watch {
        op: "DescribeExport",
        body: json!({"ExportArn": export_arn}),
        what: format!("exporting {}", args.table),
        total: Some(items),
        status: "/ExportDescription/ExportStatus",
        running: "IN_PROGRESS",
        count: Some("/ExportDescription/ItemCount"),
        label: None,
        result: "/ExportDescription",
    };
    let v = follow(&mut conn, w).await?;
    if str_at(&v, "/ExportDescription/ExportStatus").as_deref() != Some("COMPLETED") {
        bail!("the export failed");
    }
    Ok(())
}

/// `NAME:TYPE` as (name, type).
fn key_arg(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once(':') {
        Some((n, t)) if !n.is_empty() && ["S", "N", "B"].contains(&t) => {
            Ok((n.to_string(), t.to_string()))
        }
        _ => bail!("{s}: a key is NAME:TYPE with TYPE S, N or B"),
    }
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let mut conn = args.client.connect()?;
    let mut defs = Vec::new();
    let mut schema = Vec::new();
    for (arg, kind) in [
        (Some(&args.hash_key), "HASH"),
        (args.range_key.as_ref(), "RANGE"),
    ] {
        if let Some(a) = arg {
            let (name, ty) = key_arg(a)?;
            defs.push(json!({"AttributeName": name, "AttributeType": ty}));
            schema.push(json!({"AttributeName": name, "KeyType": kind}));
        }
    }
    let mut source = json!({"S3Bucket": args.bucket});
    if let Some(p) = &args.prefix {
        source["S3KeyPrefix"] = json!(p);
    }
    let body = json!({
        "S3BucketSource": source,
        "InputFormat": args.format,
        "InputCompressionType": args.compression,
        "TableCreationParameters": {
            "TableName": args.table,
            "AttributeDefinitions": defs,
            "KeySchema": schema,
            "BillingMode": "PAY_PER_REQUEST",
        },
    });
    let made = call(&mut conn, "ImportTable", &body).await?;
    let arn = str_at(&made, "/ImportTableDescription/ImportArn").context("no ImportArn")?;
    let label = |v: &Value| {
        let d = &v["ImportTableDescription"];
        format!(
            "importing into {}: {} items, {} bytes read, {} errors",
            args.table, d["ProcessedItemCount"], d["ProcessedSizeBytes"], d["ErrorCount"]
        )
    };
    let w = Watch {
        op: "DescribeImport",
        body: json!({"ImportArn": arn}),
        what: format!("importing into {}", args.table),
        total: None,
        status: "/ImportTableDescription/ImportStatus",
        running: "IN_PROGRESS",
        count: None,
        label: Some(&label),
        result: "/ImportTableDescription",
    };
    let v = follow(&mut conn, w).await?;
    if str_at(&v, "/ImportTableDescription/ImportStatus").as_deref() != Some("COMPLETED") {
        bail!("the import failed");
    }
    Ok(())
}
