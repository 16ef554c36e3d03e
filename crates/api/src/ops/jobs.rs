//! Exports and imports: ExportTableToPointInTime, DescribeExport,
//! ListExports, ImportTable, DescribeImport and ListImports. Each request
//! records a job in the catalog (an export also a snapshot of its table at
//! the export time); `dynaraft_cluster::jobs` runs it, and these answer
//! from its record.
use super::create_table::{CreateTableInput, table_meta};
use super::{change_table, table_arn};
use crate::Api;
use crate::error::ApiError;
use crate::params::{Violations, bounded_limit};
use dynaraft_cluster::backup::snapshot_table;
use dynaraft_cluster::jobs::{export_folder, export_table_name};
use dynaraft_model::wire::{Int, List, Obj, Str};
use dynaraft_storage::catalog::RestoreMeta;
use dynaraft_storage::jobs::{ExportJob, ImportJob, JOB_COMPLETED, JOB_IN_PROGRESS, Job, JobKind};
use dynaraft_storage::{Command, Outcome, TableStatus};
use serde::Deserialize;
use serde_json::{Value, json};

/// Most summaries one ListExports page holds (MaxResults), and one
/// ListImports page (PageSize).
pub const MAX_LIST_EXPORTS_RESULTS: i64 = 25;
pub const MAX_LIST_IMPORTS_PAGE_SIZE: i64 = 25;
/// Shortest and longest ExportArn / ImportArn, in characters.
const MIN_JOB_ARN_CHARS: usize = 37;
const MAX_JOB_ARN_CHARS: usize = 1024;
/// Longest S3Bucket name, in characters.
const MAX_BUCKET_CHARS: usize = 255;
/// Longest S3Prefix / S3KeyPrefix, in characters.
const MAX_PREFIX_CHARS: usize = 1024;
/// How long a ClientToken names one job, in milliseconds (8 hours).
const CLIENT_TOKEN_MS: u64 = 8 * 3_600_000;

const EXPORT_FORMATS: &[&str] = &["DYNAMODB_JSON", "ION"];
const EXPORT_TYPES: &[&str] = &["FULL_EXPORT", "INCREMENTAL_EXPORT"];
const SSE_ALGORITHMS: &[&str] = &["AES256", "KMS"];
const INPUT_FORMATS: &[&str] = &["DYNAMODB_JSON", "ION", "CSV"];
const COMPRESSIONS: &[&str] = &["GZIP", "ZSTD", "NONE"];
const VIEW_TYPES: &[&str] = &["NEW_IMAGE", "NEW_AND_OLD_IMAGES"];
/// Longest window of an incremental export, in milliseconds (24 hours).
const MAX_INCREMENTAL_WINDOW_MS: u64 = 24 * 3_600_000;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExportInput {
    pub table_arn: Option<Str>,
    pub export_time: Option<Value>,
    pub client_token: Option<Str>,
    pub s3_bucket: Option<Str>,
    pub s3_bucket_owner: Option<Str>,
    pub s3_prefix: Option<Str>,
    pub s3_sse_algorithm: Option<Str>,
    pub s3_sse_kms_key_id: Option<Str>,
    pub export_format: Option<Str>,
    pub export_type: Option<Str>,
    pub incremental_export_specification: Option<Obj<IncrementalInput>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct IncrementalInput {
    pub export_from_time: Option<Value>,
    pub export_to_time: Option<Value>,
    pub export_view_type: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeExportInput {
    pub export_arn: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListExportsInput {
    pub table_arn: Option<Str>,
    pub max_results: Option<Int>,
    pub next_token: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct BucketSource {
    pub s3_bucket: Option<Str>,
    pub s3_bucket_owner: Option<Str>,
    pub s3_key_prefix: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct CsvOptions {
    pub delimiter: Option<Str>,
    pub header_list: Option<List<Str>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct FormatOptions {
    pub csv: Option<Obj<CsvOptions>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ImportInput {
    pub client_token: Option<Str>,
    pub s3_bucket_source: Option<Obj<BucketSource>>,
    pub input_format: Option<Str>,
    pub input_format_options: Option<Obj<FormatOptions>>,
    pub input_compression_type: Option<Str>,
    pub table_creation_parameters: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeImportInput {
    pub import_arn: Option<Str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListImportsInput {
    pub table_arn: Option<Str>,
    pub page_size: Option<Int>,
    pub next_token: Option<Str>,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A new job's id: its start in milliseconds and 8 hex digits, as
/// DynamoDB's export ARNs end (`01695353076000-06e2188f`).
fn new_id(now_ms: u64) -> String {
    format!("{now_ms:014}-{:08x}", fastrand::u32(..))
}

/// Checks `value` (at `path`) is one of `allowed`.
fn check_enum(v: &mut Violations, value: Option<&str>, path: &str, allowed: &[&str]) {
    if let Some(x) = value
        && !allowed.contains(&x)
    {
        v.add(
            Some(x),
            path,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        );
    }
}

/// Checks an S3 bucket name: required, at most 255 characters, DynamoDB's
/// pattern.
fn check_bucket(v: &mut Violations, bucket: Option<&str>, path: &str) {
    let Some(b) = bucket else {
        v.null(path);
        return;
    };
    let edge = |c: char| c.is_ascii_alphanumeric();
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let chars: Vec<char> = b.chars().collect();
    if chars.len() > MAX_BUCKET_CHARS {
        v.add(
            Some(b),
            path,
            &format!("Member must have length less than or equal to {MAX_BUCKET_CHARS}"),
        );
    } else if chars.len() < 2
        || !chars.first().is_some_and(|c| edge(*c))
        || !chars.last().is_some_and(|c| edge(*c))
        || !chars.iter().all(|c| inner(*c))
    {
        v.add(
            Some(b),
            path,
            "Member must satisfy regular expression pattern: ^[a-z0-9A-Z]+[\\.\\-\\w]*[a-z0-9A-Z]+$",
        );
    }
}

fn check_prefix(v: &mut Violations, prefix: Option<&str>, path: &str) {
    if let Some(p) = prefix
        && p.chars().count() > MAX_PREFIX_CHARS
    {
        v.add(
            Some(p),
            path,
            &format!("Member must have length less than or equal to {MAX_PREFIX_CHARS}"),
        );
    }
}

fn check_arn(v: &mut Violations, arn: Option<&str>, path: &str) {
    match arn {
        None => v.null(path),
        Some(a) if a.chars().count() < MIN_JOB_ARN_CHARS => v.add(
            Some(a),
            path,
            &format!("Member must have length greater than or equal to {MIN_JOB_ARN_CHARS}"),
        ),
        Some(a) if a.chars().count() > MAX_JOB_ARN_CHARS => v.add(
            Some(a),
            path,
            &format!("Member must have length less than or equal to {MAX_JOB_ARN_CHARS}"),
        ),
        Some(_) => {}
    }
}

/// The jobs of the request's scope, of `kind` ("export" or "import"),
/// oldest first.
fn jobs_of(api: &Api, kind: &str) -> Vec<Job> {
    let catalog = api.router.catalog().get();
    let mut jobs: Vec<Job> = catalog
        .jobs
        .values()
        .filter(|j| api.scope.owns(&j.table))
        .filter(|j| {
            matches!(
                (&j.kind, kind),
                (JobKind::Export(_), "export") | (JobKind::Import(_), "import")
            )
        })
        .cloned()
        .collect();
    jobs.sort_by(|a, b| (a.start_ms, &a.arn).cmp(&(b.start_ms, &b.arn)));
    jobs
}

/// The job `arn` names, once the caller may do `action` to it.
fn find(api: &Api, arn: &str, kind: &str, action: &'static str) -> Result<Job, ApiError> {
    api.authorize(|| crate::auth::Access::new(action, crate::auth::Resource::Arn(arn.into())))?;
    jobs_of(api, kind)
        .into_iter()
        .find(|j| j.arn == arn)
        .ok_or_else(|| match kind {
            "export" => ApiError::ExportNotFound(format!("Export not found: {arn}")),
            _ => ApiError::ImportNotFound(format!("Import not found: {arn}")),
        })
}

/// The earlier job of the same ClientToken still naming one (8 hours).
fn same_token(api: &Api, kind: &str, token: &str, now_ms: u64) -> Option<Job> {
    jobs_of(api, kind)
        .into_iter()
        .find(|j| j.client_token == token && now_ms < j.start_ms.saturating_add(CLIENT_TOKEN_MS))
}

fn export_type(job: &Job) -> &'static str {
    match &job.kind {
        JobKind::Export(e) if e.incremental.is_some() => "INCREMENTAL_EXPORT",
        _ => "FULL_EXPORT",
    }
}

/// Epoch seconds (a JSON number) as milliseconds; `what` names the member
/// in the error of any other JSON.
fn time_ms(v: &Value, what: &str) -> Result<u64, ApiError> {
    match v {
        Value::Number(n) => Ok(n
            .as_f64()
            .map_or(0, |s| (s * 1000.0).round().max(0.0) as u64)),
        _ => Err(ApiError::Serialization(Some(format!(
            "class java.lang.String can not be converted to an Long for {what}"
        )))),
    }
}

/// ExportDescription of `job`.
fn export_description(job: &Job) -> Value {
    let mut d = json!({
        "ExportArn": job.arn,
        "ExportStatus": job.status,
        "StartTime": secs(job.start_ms),
        "TableArn": job.table_arn,
        "TableId": job.table_id,
        "ClientToken": job.client_token,
        "S3Bucket": job.bucket,
        "ExportFormat": job.format,
        "ExportType": export_type(job),
        "BilledSizeBytes": job.bytes,
        "ItemCount": job.items,
    });
    if let JobKind::Export(e) = &job.kind {
        match &e.incremental {
            Some(w) => {
                d["IncrementalExportSpecification"] = json!({
                    "ExportFromTime": secs(w.from_ms),
                    "ExportToTime": secs(w.to_ms),
                    "ExportViewType": w.view,
                });
            }
            None => d["ExportTime"] = json!(secs(e.export_ms)),
        }
        d["S3SseAlgorithm"] = json!(e.sse_algorithm.as_deref().unwrap_or("AES256"));
        if let Some(k) = &e.sse_kms_key_id {
            d["S3SseKmsKeyId"] = json!(k);
        }
    }
    if let Some(p) = &job.prefix {
        d["S3Prefix"] = json!(p);
    }
    if let Some(o) = &job.bucket_owner {
        d["S3BucketOwner"] = json!(o);
    }
    if let Some(end) = job.end_ms {
        d["EndTime"] = json!(secs(end));
    }
    if job.status == JOB_COMPLETED {
        let id = dynaraft_cluster::jobs::job_id(&job.arn);
        d["ExportManifest"] = json!(format!(
            "{}manifest-summary.json",
            export_folder(job.prefix.as_deref(), id)
        ));
    }
    if let Some((code, message)) = &job.failure {
        d["FailureCode"] = json!(code);
        d["FailureMessage"] = json!(message);
    }
    d
}

pub async fn export(api: &Api, input: ExportInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    match input.table_arn.as_deref() {
        None => v.null("tableArn"),
        Some(a) if a.is_empty() || a.chars().count() > MAX_JOB_ARN_CHARS => v.add(
            Some(a),
            "tableArn",
            &format!("Member must have length less than or equal to {MAX_JOB_ARN_CHARS}"),
        ),
        Some(_) => {}
    }
    check_bucket(&mut v, input.s3_bucket.as_deref(), "s3Bucket");
    check_prefix(&mut v, input.s3_prefix.as_deref(), "s3Prefix");
    check_enum(
        &mut v,
        input.export_format.as_deref(),
        "exportFormat",
        EXPORT_FORMATS,
    );
    check_enum(
        &mut v,
        input.export_type.as_deref(),
        "exportType",
        EXPORT_TYPES,
    );
    check_enum(
        &mut v,
        input.s3_sse_algorithm.as_deref(),
        "s3SseAlgorithm",
        SSE_ALGORITHMS,
    );
    v.check()?;
    let format = input.export_format.as_deref().unwrap_or("DYNAMODB_JSON");
    let incremental = input.export_type.as_deref() == Some("INCREMENTAL_EXPORT");
    let spec = input.incremental_export_specification.as_deref();
    if let Some(view) = spec.and_then(|s| s.export_view_type.as_deref()) {
        let mut v = Violations::default();
        check_enum(
            &mut v,
            Some(view),
            "incrementalExportSpecification.exportViewType",
            VIEW_TYPES,
        );
        v.check()?;
    }
    match (incremental, spec) {
        (true, None) => {
            return Err(ApiError::validation(
                "IncrementalExportSpecification must be specified for an INCREMENTAL_EXPORT",
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::validation(
                "IncrementalExportSpecification may only be specified for an INCREMENTAL_EXPORT",
            ));
        }
        (true, Some(_)) if input.export_time.is_some() => {
            return Err(ApiError::validation(
                "ExportTime may not be specified for an INCREMENTAL_EXPORT",
            ));
        }
        _ => {}
    }
    let arn = input.table_arn.as_deref().unwrap_or_default();
    let name = crate::params::table_of_arn(arn).to_string();
    api.authorize(|| crate::auth::Access::table("ExportTableToPointInTime", &name))?;
    let t = api
        .table(&name)
        .ok_or_else(|| ApiError::TableNotFound(format!("Table not found: {arn}")))?;
    let Some(pitr) = t.meta.pitr.as_deref() else {
        return Err(ApiError::PointInTimeRecoveryUnavailable(format!(
            "Point in time recovery is not enabled for table '{name}'"
        )));
    };
    let now = dynaraft_storage::wall_clock_ms();
    let export_ms = match input.export_time.as_ref() {
        None => now,
        Some(v) => time_ms(v, "ExportTime")?,
    };
    let outside = |ms: u64| ms < pitr.earliest_ms(now) || ms > now;
    if outside(export_ms) {
        return Err(ApiError::InvalidExportTime(
            "Export time must be within the point in time recovery window of the table".into(),
        ));
    }
    let window = match spec {
        Some(s) => {
            let Some(from) = s.export_from_time.as_ref() else {
                return Err(ApiError::validation(
                    "ExportFromTime must be specified for an INCREMENTAL_EXPORT",
                ));
            };
            let from_ms = time_ms(from, "ExportFromTime")?;
            let to_ms = match s.export_to_time.as_ref() {
                Some(v) => time_ms(v, "ExportToTime")?,
                None => now,
            };
            if from_ms >= to_ms {
                return Err(ApiError::validation(
                    "ExportFromTime must be before ExportToTime",
                ));
            }
            if to_ms - from_ms > MAX_INCREMENTAL_WINDOW_MS {
                return Err(ApiError::validation(
                    "The difference between ExportFromTime and ExportToTime must be at most 24 hours",
                ));
            }
            if outside(from_ms) || outside(to_ms) {
                return Err(ApiError::InvalidExportTime(
                    "ExportFromTime and ExportToTime must be within the point in time recovery window of the table".into(),
                ));
            }
            Some(dynaraft_storage::jobs::Incremental {
                from_ms,
                to_ms,
                view: s
                    .export_view_type
                    .as_deref()
                    .unwrap_or("NEW_AND_OLD_IMAGES")
                    .to_string(),
            })
        }
        None => None,
    };
    let token = input
        .client_token
        .as_deref()
        .map_or_else(|| format!("{:032x}", fastrand::u128(..)), str::to_string);
    let id = new_id(now);
    let job = Job {
        arn: format!("{}/export/{id}", table_arn(api, &t.meta.name)),
        client_token: token.clone(),
        table: t.meta.name.clone(),
        table_arn: table_arn(api, &t.meta.name),
        table_id: t.meta.table_id(),
        status: JOB_IN_PROGRESS.to_string(),
        start_ms: now,
        end_ms: None,
        bucket: input.s3_bucket.as_deref().unwrap_or_default().to_string(),
        bucket_owner: input.s3_bucket_owner.as_deref().map(str::to_string),
        prefix: input.s3_prefix.as_deref().map(str::to_string),
        format: format.to_string(),
        failure: None,
        items: 0,
        bytes: 0,
        kind: JobKind::Export(ExportJob {
            export_ms,
            sse_algorithm: input.s3_sse_algorithm.as_deref().map(str::to_string),
            sse_kms_key_id: input.s3_sse_kms_key_id.as_deref().map(str::to_string),
            files: Vec::new(),
            next: None,
            scanned: false,
            incremental: window.clone(),
        }),
    };
    if let Some(earlier) = same_token(api, "export", &token, now) {
        let same = earlier.table == job.table
            && earlier.bucket == job.bucket
            && earlier.prefix == job.prefix
            && earlier.format == job.format
            && matches!(&earlier.kind, JobKind::Export(e) if e.incremental == window
                && (input.export_time.is_none() || e.export_ms == export_ms));
        if !same {
            return Err(ApiError::ExportConflict(format!(
                "Export with client token {token} already exists with different parameters"
            )));
        }
        return Ok(json!({"ExportDescription": export_description(&earlier)}));
    }
    if window.is_some() {
        // Read from the change log; no snapshot.
        put_job(api, &job).await?;
        return Ok(json!({"ExportDescription": export_description(&job)}));
    }
    // The snapshot: the table restored to the export time, hidden.
    let mut snapshot = snapshot_table(export_table_name(&id), &t.meta);
    snapshot.status = TableStatus::Creating;
    snapshot.restore = Some(Box::new(RestoreMeta {
        backup_table: String::new(),
        source_table: Some(t.meta.name.clone()),
        source_backup_arn: None,
        source_table_arn: table_arn(api, &t.meta.name),
        restore_ms: export_ms,
        in_progress: true,
        sources: t.meta.partitions.iter().map(|p| p.group).collect(),
        copied: Vec::new(),
        redo_from_ms: None,
    }));
    change_table(api, Command::CreateTable(snapshot), &export_table_name(&id)).await?;
    put_job(api, &job).await?;
    Ok(json!({"ExportDescription": export_description(&job)}))
}

async fn put_job(api: &Api, job: &Job) -> Result<(), ApiError> {
    match api
        .router
        .change_catalog(Command::PutJob(Box::new(job.clone())))
        .await?
    {
        Outcome::Done => Ok(()),
        other => {
            tracing::error!(?other, "unexpected outcome of PutJob");
            Err(ApiError::InternalServerError(
                "Internal server error".into(),
            ))
        }
    }
}

pub fn describe_export(api: &Api, input: DescribeExportInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    check_arn(&mut v, input.export_arn.as_deref(), "exportArn");
    v.check()?;
    let arn = input.export_arn.as_deref().unwrap_or_default();
    let job = find(api, arn, "export", "DescribeExport")?;
    Ok(json!({"ExportDescription": export_description(&job)}))
}

/// A page of `jobs` after the NextToken (a job's ARN), and the token of
/// the next page.
fn page(jobs: Vec<Job>, next: Option<&str>, size: usize) -> (Vec<Job>, Option<String>) {
    let start = next
        .and_then(|n| jobs.iter().position(|j| j.arn == n))
        .map_or(0, |i| i + 1);
    let rest: Vec<Job> = jobs.into_iter().skip(start).collect();
    let token = (rest.len() > size)
        .then(|| rest.get(size.saturating_sub(1)).map(|j| j.arn.clone()))
        .flatten();
    (rest.into_iter().take(size).collect(), token)
}

/// One page of a ListExports or ListImports: the jobs of `kind`, of the
/// table TableArn names if given, after NextToken, at most `limit` (at
/// `path`, up to `max`) of them; and the next page's token.
fn listed(
    api: &Api,
    (kind, action): (&str, &'static str),
    table_arn: Option<&Str>,
    next_token: Option<&Str>,
    (limit, max, path): (Option<&Int>, i64, &str),
) -> Result<(Vec<Job>, Option<String>), ApiError> {
    let mut v = Violations::default();
    let size = bounded_limit(&mut v, limit, max, path);
    v.check()?;
    let table = table_arn.map(|a| crate::params::table_of_arn(a));
    let target = table.unwrap_or("*").to_string();
    api.authorize(|| crate::auth::Access::table(action, &target))?;
    let jobs: Vec<Job> = jobs_of(api, kind)
        .into_iter()
        .filter(|j| table.is_none_or(|t| api.scope.table_key(t) == j.table))
        .collect();
    Ok(page(jobs, next_token.map(|t| t.0.as_str()), size))
}

pub fn list_exports(api: &Api, input: ListExportsInput) -> Result<Value, ApiError> {
    let (jobs, next) = listed(
        api,
        ("export", "ListExports"),
        input.table_arn.as_ref(),
        input.next_token.as_ref(),
        (
            input.max_results.as_ref(),
            MAX_LIST_EXPORTS_RESULTS,
            "maxResults",
        ),
    )?;
    let summaries: Vec<Value> = jobs
        .iter()
        .map(
            |j| json!({"ExportArn": j.arn, "ExportStatus": j.status, "ExportType": export_type(j)}),
        )
        .collect();
    let mut out = json!({"ExportSummaries": summaries});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// ImportTableDescription of `job`.
fn import_description(job: &Job) -> Value {
    let mut source = json!({"S3Bucket": job.bucket});
    if let Some(p) = &job.prefix {
        source["S3KeyPrefix"] = json!(p);
    }
    if let Some(o) = &job.bucket_owner {
        source["S3BucketOwner"] = json!(o);
    }
    let mut d = json!({
        "ImportArn": job.arn,
        "ImportStatus": job.status,
        "TableArn": job.table_arn,
        "TableId": job.table_id,
        "ClientToken": job.client_token,
        "S3BucketSource": source,
        "InputFormat": job.format,
        "StartTime": secs(job.start_ms),
        "ProcessedSizeBytes": job.bytes,
        "ProcessedItemCount": job.items,
    });
    if let JobKind::Import(i) = &job.kind {
        d["ImportedItemCount"] = json!(i.imported);
        d["ErrorCount"] = json!(i.errors);
        d["InputCompressionType"] = json!(i.compression);
        if let Ok(params) = serde_json::from_str::<Value>(&i.creation) {
            d["TableCreationParameters"] = params;
        }
        if i.csv_delimiter.is_some() || i.csv_header.is_some() {
            let mut csv = json!({});
            if let Some(delim) = &i.csv_delimiter {
                csv["Delimiter"] = json!(delim);
            }
            if let Some(h) = &i.csv_header {
                csv["HeaderList"] = json!(h);
            }
            d["InputFormatOptions"] = json!({"Csv": csv});
        }
    }
    if let Some(end) = job.end_ms {
        d["EndTime"] = json!(secs(end));
    }
    if let Some((code, message)) = &job.failure {
        d["FailureCode"] = json!(code);
        d["FailureMessage"] = json!(message);
    }
    d
}

pub async fn import(api: &Api, input: ImportInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    let source = input.s3_bucket_source.as_deref();
    match source {
        None => v.null("s3BucketSource"),
        Some(s) => {
            check_bucket(&mut v, s.s3_bucket.as_deref(), "s3BucketSource.s3Bucket");
            check_prefix(
                &mut v,
                s.s3_key_prefix.as_deref(),
                "s3BucketSource.s3KeyPrefix",
            );
        }
    }
    match input.input_format.as_deref() {
        None => v.null("inputFormat"),
        f => check_enum(&mut v, f, "inputFormat", INPUT_FORMATS),
    }
    check_enum(
        &mut v,
        input.input_compression_type.as_deref(),
        "inputCompressionType",
        COMPRESSIONS,
    );
    if input.table_creation_parameters.is_none() {
        v.null("tableCreationParameters");
    }
    v.check()?;
    let format = input
        .input_format
        .as_deref()
        .unwrap_or_default()
        .to_string();
    let csv = input
        .input_format_options
        .as_deref()
        .and_then(|o| o.csv.as_deref());
    if let Some(c) = csv {
        if format != "CSV" {
            return Err(ApiError::validation(
                "InputFormatOptions may only be specified with InputFormat CSV",
            ));
        }
        if let Some(d) = c.delimiter.as_deref()
            && (d.chars().count() != 1 || !d.is_ascii())
        {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{d}' at 'inputFormatOptions.csv.delimiter' failed to satisfy constraint: Member must have length less than or equal to 1"
            )));
        }
    }
    let params_json = input.table_creation_parameters.clone().unwrap_or_default();
    let params: CreateTableInput = serde_json::from_value(params_json.clone())
        .map_err(|e| ApiError::Serialization(Some(e.to_string())))?;
    let mut meta = table_meta(api, &params, "ImportTable")?;
    let name = params.table_name.as_deref().unwrap_or_default().to_string();
    let now = dynaraft_storage::wall_clock_ms();
    let token = input
        .client_token
        .as_deref()
        .map_or_else(|| format!("{:032x}", fastrand::u128(..)), str::to_string);
    let source = source.map(|s| {
        (
            s.s3_bucket.as_deref().unwrap_or_default().to_string(),
            s.s3_bucket_owner.as_deref().map(str::to_string),
            s.s3_key_prefix.as_deref().map(str::to_string),
        )
    });
    let (bucket, owner, prefix) = source.unwrap_or_default();
    let kind = ImportJob {
        compression: input
            .input_compression_type
            .as_deref()
            .unwrap_or("NONE")
            .to_string(),
        csv_delimiter: csv.and_then(|c| c.delimiter.as_deref().map(str::to_string)),
        csv_header: csv.and_then(|c| {
            c.header_list
                .as_ref()
                .map(|h| h.0.iter().map(|s| s.0.clone()).collect())
        }),
        creation: params_json.to_string(),
        imported: 0,
        errors: 0,
        done_files: Vec::new(),
    };
    if let Some(earlier) = same_token(api, "import", &token, now) {
        let same = earlier.table == meta.name
            && earlier.bucket == bucket
            && earlier.prefix == prefix
            && earlier.format == format
            && matches!(&earlier.kind, JobKind::Import(i) if i.creation == kind.creation);
        if !same {
            return Err(ApiError::ImportConflict(format!(
                "Import with client token {token} already exists with different parameters"
            )));
        }
        return Ok(json!({"ImportTableDescription": import_description(&earlier)}));
    }
    let arn = format!("{}/import/{}", table_arn(api, &meta.name), new_id(now));
    meta.status = TableStatus::Creating;
    meta.importing = Some(arn.as_str().into());
    let created = change_table(api, Command::CreateTable(meta), &name).await?;
    let job = Job {
        arn,
        client_token: token,
        table: created.name.clone(),
        table_arn: table_arn(api, &created.name),
        table_id: created.table_id(),
        status: JOB_IN_PROGRESS.to_string(),
        start_ms: now,
        end_ms: None,
        bucket,
        bucket_owner: owner,
        prefix,
        format,
        failure: None,
        items: 0,
        bytes: 0,
        kind: JobKind::Import(kind),
    };
    put_job(api, &job).await?;
    Ok(json!({"ImportTableDescription": import_description(&job)}))
}

pub fn describe_import(api: &Api, input: DescribeImportInput) -> Result<Value, ApiError> {
    let mut v = Violations::default();
    check_arn(&mut v, input.import_arn.as_deref(), "importArn");
    v.check()?;
    let arn = input.import_arn.as_deref().unwrap_or_default();
    let job = find(api, arn, "import", "DescribeImport")?;
    Ok(json!({"ImportTableDescription": import_description(&job)}))
}

pub fn list_imports(api: &Api, input: ListImportsInput) -> Result<Value, ApiError> {
    let (jobs, next) = listed(
        api,
        ("import", "ListImports"),
        input.table_arn.as_ref(),
        input.next_token.as_ref(),
        (
            input.page_size.as_ref(),
            MAX_LIST_IMPORTS_PAGE_SIZE,
            "pageSize",
        ),
    )?;
    let summaries: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let d = import_description(j);
            let mut s = json!({
                "ImportArn": j.arn,
                "ImportStatus": j.status,
                "TableArn": j.table_arn,
                "S3BucketSource": d["S3BucketSource"],
                "InputFormat": j.format,
                "StartTime": secs(j.start_ms),
            });
            if let Some(end) = j.end_ms {
                s["EndTime"] = json!(secs(end));
            }
            s
        })
        .collect();
    let mut out = json!({"ImportSummaryList": summaries});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}
