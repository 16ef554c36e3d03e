//! Exports and imports, run by the node leading the control-plane group
//! (whichever that is: a job's progress is in its catalog record, so a new
//! leader carries on where the last one recorded).
//!
//! **An export** (ExportTableToPointInTime) is a snapshot, then files:
//! `dynaraft-api` creates a hidden table ([`EXPORT_TABLE_PREFIX`] and the
//! export's id) restored to the export time from the source table's
//! retained change log, exactly as RestoreTableToPointInTime restores one
//! (`crate::backup` copies it), and the job. Once the snapshot is ACTIVE,
//! [`run`] scans it in key order into gzipped data files of at most
//! [`EXPORT_FILE_MAX_BYTES`] of DynamoDB JSON or Ion (`crate::ion`), one
//! line per item, recording
//! each file in the job as it is stored; after the last it writes the
//! manifests DynamoDB writes (`manifest-files.json`,
//! `manifest-summary.json` and their `.md5`), marks the job COMPLETED and
//! drops the snapshot. The layout is DynamoDB's:
//! `<S3Prefix>/AWSDynamoDB/<id>/{_started, data/*.json.gz, manifest-*}`.
//!
//! **An import** (ImportTable) reads every object under its key prefix, in
//! key order, decompresses and parses it line by line (DynamoDB JSON or
//! CSV) and writes each item into the new table through the ordinary write
//! path, so its global indexes fill as they would for any write (DynamoDB
//! JSON, Ion or CSV). A line
//! that is not an item of the table counts in ErrorCount and is skipped, as
//! DynamoDB skips it. The job records each object once read to its end (a
//! new leader reads the object it was in again from its start: puts of the
//! same items change nothing). When every object is read the table turns
//! ACTIVE. An import that cannot go on (no such bucket, an object that is
//! not in its compression format or not text) fails, and its table is
//! deleted, so a failed import leaves nothing behind.

use crate::ClusterError;
use crate::backup::plain_write;
use crate::catalog::{Catalog, CatalogWatch, Table};
use crate::host::Host;
use crate::objects::{ObjectError, ObjectStore, base64_md5};
use crate::router::Router;
use dynaraft_model::Item;
use dynaraft_model::value::{item_from_json, item_size_bytes, item_to_json};
use dynaraft_storage::jobs::{
    DataFile, ExportJob, ImportJob, JOB_COMPLETED, JOB_FAILED, Job, JobKind,
};
use dynaraft_storage::machine::CATALOG_GROUP;
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions};
use dynaraft_storage::{Command, Outcome, TableStatus};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The catalog names of exports' snapshot tables start with this.
pub const EXPORT_TABLE_PREFIX: &str = "~exports/";
/// Pause between passes over the jobs, in milliseconds.
pub const JOBS_POLL_MS: u64 = 200;
/// Most bytes of DynamoDB JSON in one export data file, before gzip.
pub const EXPORT_FILE_MAX_BYTES: usize = 32 << 20;
/// Most bytes of change records an incremental export holds in memory
/// (its window's changes, aggregated by key before they are written).
pub const INCREMENTAL_MAX_BYTES: usize = 256 << 20;
/// Most items one snapshot read returns.
pub const EXPORT_PAGE_ITEMS: usize = 1000;
/// Most import writes in flight at once.
pub const IMPORT_WRITE_CONCURRENCY: usize = 32;
/// Longest line of an imported object, in bytes: an item is at most
/// 400 KB, and its JSON some more.
pub const MAX_IMPORT_LINE_BYTES: usize = 4 << 20;
/// The version DynamoDB writes into manifest-summary.json.
pub const MANIFEST_VERSION: &str = "2020-06-30";

/// The catalog name of export `id`'s snapshot table.
pub fn export_table_name(id: &str) -> String {
    format!("{EXPORT_TABLE_PREFIX}{id}")
}

/// The id an export or import ARN ends with.
pub fn job_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Where export `id` writes, below its S3Prefix:
/// `<prefix>/AWSDynamoDB/<id>/`.
pub fn export_folder(prefix: Option<&str>, id: &str) -> String {
    match prefix
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{p}/AWSDynamoDB/{id}/"),
        None => format!("AWSDynamoDB/{id}/"),
    }
}

/// Runs jobs until the node shuts down.
pub async fn run(
    host: Host,
    router: Router,
    catalog: Arc<CatalogWatch>,
    objects: Option<Arc<ObjectStore>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let busy = if host.group(CATALOG_GROUP).is_some_and(|g| g.is_leader()) {
            match once(&router, &catalog.get(), objects.as_deref()).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "export or import step failed; will retry");
                    false
                }
            }
        } else {
            false
        };
        let pause = Duration::from_millis(if busy { 0 } else { JOBS_POLL_MS });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}

/// A step of every unfinished job; whether any did work.
async fn once(
    router: &Router,
    catalog: &Catalog,
    objects: Option<&ObjectStore>,
) -> Result<bool, ClusterError> {
    let mut busy = false;
    for job in catalog.jobs.values().filter(|j| !j.finished()) {
        let Some(objects) = objects else {
            let why = "This server has no object store (start it with --object-store)";
            fail(router, catalog, job, "UNKNOWN", why).await?;
            continue;
        };
        let step = match &job.kind {
            JobKind::Export(e) => export_step(router, catalog, objects, job, e).await,
            JobKind::Import(i) => import_step(router, catalog, objects, job, i).await,
        };
        match step {
            Ok(worked) => busy |= worked,
            Err(Failure::Object(e)) => fail(router, catalog, job, e.code(), &e.to_string()).await?,
            Err(Failure::Input(m)) => fail(router, catalog, job, "InvalidInput", &m).await?,
            Err(Failure::Cluster(e)) => return Err(e),
        }
    }
    drop_orphans(router, catalog).await?;
    Ok(busy)
}

/// Why a job's step stopped.
enum Failure {
    /// The object store refused (the job fails with its code).
    Object(ObjectError),
    /// The import's data cannot be read as its format says (the job fails).
    Input(String),
    /// The cluster could not serve the step (it is tried again).
    Cluster(ClusterError),
}

impl From<ObjectError> for Failure {
    fn from(e: ObjectError) -> Self {
        Failure::Object(e)
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        Failure::Cluster(e)
    }
}

/// Records `job`'s progress (or end).
async fn put_job(router: &Router, job: Job) -> Result<(), ClusterError> {
    match router
        .change_catalog(Command::PutJob(Box::new(job)))
        .await?
    {
        Outcome::Done => Ok(()),
        other => Err(ClusterError::Unavailable(format!(
            "the control plane kept no job progress: {other:?}"
        ))),
    }
}

/// Ends `job` FAILED with `code` and `message`, and drops what it made:
/// an export's snapshot, an import's table.
async fn fail(
    router: &Router,
    catalog: &Catalog,
    job: &Job,
    code: &str,
    message: &str,
) -> Result<(), ClusterError> {
    tracing::warn!(job = %job.arn, code, message, "export or import failed");
    // An export's snapshot, or the table this import created (and no
    // table of the same name made since).
    let doomed = match &job.kind {
        JobKind::Export(_) => Some(export_table_name(job_id(&job.arn))),
        JobKind::Import(_) => catalog
            .tables
            .get(&job.table)
            .filter(|t| t.meta.importing.as_deref() == Some(job.arn.as_str()))
            .map(|t| t.meta.name.clone()),
    };
    if let Some(doomed) = doomed.filter(|d| catalog.tables.contains_key(d)) {
        router
            .change_catalog(Command::DropTable { name: doomed })
            .await?;
    }
    let mut job = job.clone();
    job.status = JOB_FAILED.to_string();
    job.end_ms = Some(dynaraft_storage::wall_clock_ms());
    job.failure = Some((code.to_string(), message.to_string()));
    put_job(router, job).await
}

/// Drops snapshot tables whose export is finished or unknown (an export
/// whose job was never recorded, or ended by a leader that stopped before
/// dropping it).
async fn drop_orphans(router: &Router, catalog: &Catalog) -> Result<(), ClusterError> {
    let now = dynaraft_storage::wall_clock_ms();
    for name in catalog.tables.keys() {
        let Some(id) = name.strip_prefix(EXPORT_TABLE_PREFIX) else {
            continue;
        };
        let live = catalog
            .jobs
            .values()
            .any(|j| !j.finished() && job_id(&j.arn) == id);
        let young = catalog
            .tables
            .get(name)
            .is_some_and(|t| now < t.meta.created_ms + crate::backup::PIN_GRACE_MS);
        if !live && !young {
            router
                .change_catalog(Command::DropTable { name: name.clone() })
                .await?;
        }
    }
    Ok(())
}

/// One data file (or the manifests) of export `job`; whether it did work.
async fn export_step(
    router: &Router,
    catalog: &Catalog,
    objects: &ObjectStore,
    job: &Job,
    e: &ExportJob,
) -> Result<bool, Failure> {
    let id = job_id(&job.arn);
    let folder = export_folder(job.prefix.as_deref(), id);
    if let Some(window) = &e.incremental {
        return incremental_step(router, catalog, objects, job, window).await;
    }
    let Some(snapshot) = catalog.tables.get(&export_table_name(id)) else {
        return Err(Failure::Input(
            "The export's snapshot of the table is gone".into(),
        ));
    };
    if snapshot.meta.status != TableStatus::Active {
        return Ok(false);
    }
    if e.files.is_empty() && e.next.is_none() && !e.scanned {
        objects
            .put(&job.bucket, &format!("{folder}_started"), Vec::new())
            .await?;
    }
    let mut e = e.clone();
    let mut job = job.clone();
    if !e.scanned {
        let ion = job.format == "ION";
        let (body, items, bytes, next) = read_file(router, snapshot, e.next.clone(), ion).await?;
        if items > 0 {
            store_file(objects, &job.bucket, &folder, &mut e, &body, items, ion).await?;
        }
        job.items += items;
        job.bytes += bytes;
        e.scanned = next.is_none();
        e.next = next;
        job.kind = JobKind::Export(e);
        put_job(router, job).await?;
        return Ok(true);
    }
    finish_export(objects, &mut job, &e, &folder).await?;
    put_job(router, job).await?;
    router
        .change_catalog(Command::DropTable {
            name: snapshot.meta.name.clone(),
        })
        .await?;
    Ok(true)
}

/// Writes export `job`'s manifests (its files are `e.files`) and marks it
/// COMPLETED (the caller records it).
async fn finish_export(
    objects: &ObjectStore,
    job: &mut Job,
    e: &ExportJob,
    folder: &str,
) -> Result<(), Failure> {
    let end_ms = dynaraft_storage::wall_clock_ms();
    job.end_ms = Some(end_ms);
    let files: String = e
        .files
        .iter()
        .map(|f| {
            let line = serde_json::json!({
                "itemCount": f.items,
                "md5Checksum": f.md5,
                "etag": f.etag,
                "dataFileS3Key": f.key,
            });
            format!("{line}\n")
        })
        .collect();
    let files_key = format!("{folder}manifest-files.json");
    let mut summary = serde_json::json!({
        "version": MANIFEST_VERSION,
        "exportArn": job.arn,
        "startTime": iso8601(job.start_ms),
        "endTime": iso8601(end_ms),
        "tableArn": job.table_arn,
        "tableId": job.table_id,
        "exportTime": iso8601(e.export_ms),
        "s3Bucket": job.bucket,
        "s3Prefix": job.prefix,
        "s3SseAlgorithm": e.sse_algorithm.as_deref().unwrap_or("AES256"),
        "s3SseKmsKeyId": e.sse_kms_key_id,
        "manifestFilesS3Key": files_key,
        "billedSizeBytes": job.bytes,
        "itemCount": job.items,
        "outputFormat": job.format,
        "exportType": "FULL_EXPORT",
    });
    if let Some(w) = &e.incremental {
        summary["exportType"] = "INCREMENTAL_EXPORT".into();
        summary["exportFromTime"] = iso8601(w.from_ms).into();
        summary["exportToTime"] = iso8601(w.to_ms).into();
        summary["outputView"] = w.view.clone().into();
        if let Some(s) = summary.as_object_mut() {
            s.remove("exportTime");
        }
    }
    let summary = summary.to_string();
    for (name, body) in [("manifest-files", files), ("manifest-summary", summary)] {
        let md5 = base64_md5(body.as_bytes());
        objects
            .put(
                &job.bucket,
                &format!("{folder}{name}.json"),
                body.into_bytes(),
            )
            .await?;
        objects
            .put(
                &job.bucket,
                &format!("{folder}{name}.md5"),
                md5.into_bytes(),
            )
            .await?;
    }
    job.status = JOB_COMPLETED.to_string();
    Ok(())
}

/// An incremental export, whole: every change of the source table in the
/// window, read from its partitions' retained change logs (point-in-time
/// recovery keeps them), one line per item changed, with its image at the
/// window's end (NewImage, absent if deleted) and, for
/// NEW_AND_OLD_IMAGES, at its start (OldImage, absent if it did not
/// exist). Done in one step: a leader that stops midway leaves nothing
/// recorded, and the next writes the same files again.
async fn incremental_step(
    router: &Router,
    catalog: &Catalog,
    objects: &ObjectStore,
    job: &Job,
    window: &dynaraft_storage::jobs::Incremental,
) -> Result<bool, Failure> {
    let Some(table) = catalog.tables.get(&job.table) else {
        return Err(Failure::Input("The exported table is gone".into()));
    };
    let id = job_id(&job.arn);
    let folder = export_folder(job.prefix.as_deref(), id);
    objects
        .put(&job.bucket, &format!("{folder}_started"), Vec::new())
        .await?;
    // Split children after their parents: a key's records before a split
    // are in the parent's log.
    let mut parts: Vec<_> = table.meta.partitions.iter().collect();
    parts.sort_by_key(|p| p.parent.is_some());
    let mut changed: std::collections::BTreeMap<Vec<u8>, Changed> = Default::default();
    let mut held = 0usize;
    for p in parts {
        let mut after = 0;
        'log: loop {
            let page = router
                .read_changes(table, p.hash_lo, after, (EXPORT_PAGE_ITEMS, MAX_PAGE_BYTES))
                .await?;
            after = after.max(page.floor);
            if page.records.is_empty() {
                break;
            }
            for (seq, raw) in &page.records {
                after = *seq;
                let r = dynaraft_storage::global::ChangeRecord::decode(raw)
                    .map_err(ClusterError::from)?;
                if r.ts_ms >= window.to_ms {
                    break 'log;
                }
                // A global table's write that changed nothing is no change.
                if r.ts_ms < window.from_ms
                    || r.origin == dynaraft_storage::global::Origin::Unchanged
                {
                    continue;
                }
                held += raw.len();
                if held > INCREMENTAL_MAX_BYTES {
                    return Err(Failure::Input(format!(
                        "The export window holds more than {INCREMENTAL_MAX_BYTES} bytes of changes; export shorter windows"
                    )));
                }
                let entry = changed
                    .entry(r.storage_key.clone())
                    .or_insert_with(|| Changed {
                        old: r.old.clone(),
                        new: None,
                        ts_ms: 0,
                    });
                entry.new = r.new;
                entry.ts_ms = r.ts_ms;
            }
        }
    }
    let new_and_old = window.view == "NEW_AND_OLD_IMAGES";
    let ion = job.format == "ION";
    let mut e = match &job.kind {
        JobKind::Export(e) => e.clone(),
        JobKind::Import(_) => return Err(Failure::Input("not an export".into())),
    };
    e.files.clear();
    let mut job = job.clone();
    let (mut items, mut bytes) = (0u64, 0u64);
    let mut body = Vec::new();
    let mut lines = 0u64;
    for c in changed.into_values() {
        let Some(image) = c.new.as_ref().or(c.old.as_ref()) else {
            continue;
        };
        let keys = table.schema.key_of(image);
        let old = c.old.as_ref().filter(|_| new_and_old);
        let line = if ion {
            crate::ion::change_line(c.ts_ms, &keys, c.new.as_ref(), old)
        } else {
            let mut v = serde_json::json!({
                "Metadata": {"WriteTimestampMicros": {"N": (c.ts_ms * 1000).to_string()}},
                "Keys": item_to_json(&keys),
            });
            if let Some(n) = &c.new {
                v["NewImage"] = item_to_json(n);
            }
            if let Some(o) = old {
                v["OldImage"] = item_to_json(o);
            }
            v.to_string()
        };
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
        lines += 1;
        items += 1;
        bytes += c.new.as_ref().map_or(0, |n| item_size_bytes(n) as u64);
        if body.len() >= EXPORT_FILE_MAX_BYTES {
            store_file(objects, &job.bucket, &folder, &mut e, &body, lines, ion).await?;
            body.clear();
            lines = 0;
        }
    }
    if lines > 0 {
        store_file(objects, &job.bucket, &folder, &mut e, &body, lines, ion).await?;
    }
    job.items = items;
    job.bytes = bytes;
    e.scanned = true;
    finish_export(objects, &mut job, &e, &folder).await?;
    job.kind = JobKind::Export(e);
    put_job(router, job).await?;
    Ok(true)
}

/// Stores `body` (`items` lines) gzipped as export `e`'s next data file.
async fn store_file(
    objects: &ObjectStore,
    bucket: &str,
    folder: &str,
    e: &mut ExportJob,
    body: &[u8],
    items: u64,
    ion: bool,
) -> Result<(), Failure> {
    let gz = gzip(body).map_err(|m| Failure::Input(format!("gzip: {m}")))?;
    let ext = if ion { "ion" } else { "json" };
    let key = format!("{folder}data/{:05}.{ext}.gz", e.files.len());
    let md5 = base64_md5(&gz);
    let etag = objects.put(bucket, &key, gz).await?;
    e.files.push(DataFile {
        key,
        items,
        md5,
        etag,
    });
    Ok(())
}

/// A key's changes in an incremental export's window: its image before
/// the first, after the last, and the last's time.
struct Changed {
    old: Option<Item>,
    new: Option<Item>,
    ts_ms: u64,
}

/// The next data file of `snapshot` after storage key `next` (DynamoDB
/// JSON, or Ion text if `ion`): its lines, items, item bytes, and where
/// the following file starts (`None`: the scan is done).
async fn read_file(
    router: &Router,
    snapshot: &Table,
    mut next: Option<Vec<u8>>,
    ion: bool,
) -> Result<(Vec<u8>, u64, u64, Option<Vec<u8>>), ClusterError> {
    let (mut body, mut items, mut bytes) = (Vec::new(), 0u64, 0u64);
    loop {
        let opts = ReadOptions {
            forward: true,
            start_after: next.clone(),
            limit: Some(EXPORT_PAGE_ITEMS),
            max_bytes: MAX_PAGE_BYTES,
        };
        let page = router
            .read_range(snapshot, None, (&[], None), &opts, true)
            .await?;
        for item in &page.items {
            let line = if ion {
                crate::ion::item_line(item)
            } else {
                serde_json::json!({ "Item": item_to_json(item) }).to_string()
            };
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
            items += 1;
            bytes += item_size_bytes(item) as u64;
        }
        next = page
            .last_key
            .as_ref()
            .and_then(|k| snapshot.schema.storage_key(k));
        if next.is_none() || body.len() >= EXPORT_FILE_MAX_BYTES {
            return Ok((body, items, bytes, next));
        }
    }
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body)?;
    enc.finish()
}

/// `ms` as the manifests write times: `2020-11-04T07:28:34.028Z`.
fn iso8601(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// One object of import `job`; whether it did work.
async fn import_step(
    router: &Router,
    catalog: &Catalog,
    objects: &ObjectStore,
    job: &Job,
    i: &ImportJob,
) -> Result<bool, Failure> {
    let Some(table) = catalog.tables.get(&job.table) else {
        return Err(Failure::Input(
            "The table being imported into is gone".into(),
        ));
    };
    if table.meta.importing.as_deref() != Some(job.arn.as_str()) {
        return Err(Failure::Input(
            "The table being imported into is gone".into(),
        ));
    }
    let prefix = job.prefix.as_deref().unwrap_or_default();
    let listed = objects.list(&job.bucket, prefix).await?;
    let pending = listed.iter().find(|(k, _)| !i.done_files.contains(k));
    let mut job = job.clone();
    let mut i = i.clone();
    let Some((key, size)) = pending else {
        if listed.is_empty() {
            return Err(Failure::Input(format!(
                "No objects were found in bucket {} under prefix {prefix:?}",
                job.bucket
            )));
        }
        router
            .change_catalog(Command::SetTableStatus {
                name: job.table.clone(),
                status: TableStatus::Active,
            })
            .await?;
        job.status = JOB_COMPLETED.to_string();
        job.end_ms = Some(dynaraft_storage::wall_clock_ms());
        put_job(router, job).await?;
        return Ok(true);
    };
    let raw = objects.get(&job.bucket, key).await?;
    let lines = decode_lines(&raw, &i.compression, key)?;
    let parsed = parse(&lines, &job.format, &i, table, key)?;
    let (mut items, mut errors) = (Vec::new(), 0u64);
    for p in parsed {
        match p {
            Some(item) => items.push(item),
            None => errors += 1,
        }
    }
    let processed = items.len() as u64 + errors;
    let (imported, refused) = write_items(router, table, items).await?;
    i.imported += imported;
    i.errors += errors + refused;
    i.done_files.push(key.clone());
    job.items += processed;
    job.bytes += size;
    job.kind = JobKind::Import(i);
    put_job(router, job).await?;
    Ok(true)
}

/// `raw` decompressed as `compression` says, split into lines.
fn decode_lines(raw: &[u8], compression: &str, key: &str) -> Result<Vec<String>, Failure> {
    let reader: Box<dyn std::io::Read + '_> = match compression {
        "GZIP" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        "ZSTD" => Box::new(
            ruzstd::decoding::StreamingDecoder::new(raw)
                .map_err(|e| Failure::Input(format!("{key} is not ZSTD: {e}")))?,
        ),
        _ => Box::new(raw),
    };
    let mut out = Vec::new();
    let mut reader = std::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut reader, MAX_IMPORT_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Input(format!("{key} cannot be read as {compression}: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if line.len() > MAX_IMPORT_LINE_BYTES {
            return Err(Failure::Input(format!(
                "{key} has a line longer than {MAX_IMPORT_LINE_BYTES} bytes"
            )));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| Failure::Input(format!("{key} is not UTF-8 text")))?;
        out.push(text.trim_end_matches(['\n', '\r']).to_string());
    }
}

/// The items of `lines` in `format` (`None` for a line that is not one).
fn parse(
    lines: &[String],
    format: &str,
    i: &ImportJob,
    table: &Table,
    key: &str,
) -> Result<Vec<Option<Item>>, Failure> {
    match format {
        "DYNAMODB_JSON" => Ok(lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                item_from_json(v.get("Item")?).ok()
            })
            .collect()),
        "ION" => Ok(lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| crate::ion::line_item(l))
            .collect()),
        "CSV" => csv_items(lines, i, table, key),
        other => Err(Failure::Input(format!(
            "Input format {other} is not supported by this server"
        ))),
    }
}

/// CSV rows as items: every value a string, except the table's key
/// attributes, typed as AttributeDefinitions say (DynamoDB's rule).
fn csv_items(
    lines: &[String],
    i: &ImportJob,
    table: &Table,
    key: &str,
) -> Result<Vec<Option<Item>>, Failure> {
    let delimiter = i
        .csv_delimiter
        .as_deref()
        .and_then(|d| d.bytes().next())
        .unwrap_or(b',');
    let text = lines.join("\n");
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = reader.records();
    let header: Vec<String> = match &i.csv_header {
        Some(h) => h.clone(),
        None => match rows.next() {
            Some(Ok(r)) => r.iter().map(str::to_string).collect(),
            Some(Err(e)) => return Err(Failure::Input(format!("{key}: {e}"))),
            None => return Ok(Vec::new()),
        },
    };
    let types: std::collections::HashMap<&str, &str> = table
        .meta
        .attributes
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    Ok(rows
        .map(|row| {
            let row = row.ok()?;
            if row.len() != header.len() {
                return None;
            }
            let mut item = serde_json::Map::new();
            for (name, value) in header.iter().zip(row.iter()) {
                let ty = if table.schema.is_key_attr(name) {
                    types.get(name.as_str()).copied().unwrap_or("S")
                } else {
                    "S"
                };
                item.insert(name.clone(), serde_json::json!({ ty: value }));
            }
            item_from_json(&serde_json::Value::Object(item)).ok()
        })
        .collect())
}

/// Writes `items` into `table`; (written, refused as not items of it).
async fn write_items(
    router: &Router,
    table: &Table,
    items: Vec<Item>,
) -> Result<(u64, u64), ClusterError> {
    let (mut written, mut refused) = (0u64, 0u64);
    let writes: Vec<_> = items
        .iter()
        .map(|item| {
            let valid = table.schema.validate_item_key(item).is_ok()
                && table.schema.check_sizes(item).is_ok()
                && item_size_bytes(item) <= dynaraft_model::MAX_ITEM_BYTES;
            plain_write(table, &table.schema.key_of(item), Some(item)).filter(|_| valid)
        })
        .collect();
    for chunk in writes.chunks(IMPORT_WRITE_CONCURRENCY) {
        let calls = chunk
            .iter()
            .flatten()
            .map(|w| router.write(table, w.clone()));
        refused += chunk.iter().filter(|w| w.is_none()).count() as u64;
        for outcome in futures_util::future::join_all(calls).await {
            match outcome? {
                Outcome::Written { .. } => written += 1,
                Outcome::Invalid(_) | Outcome::CollectionTooLarge => refused += 1,
                other => {
                    return Err(ClusterError::Unavailable(format!(
                        "an imported write to {} was refused: {other:?}",
                        table.meta.name
                    )));
                }
            }
        }
    }
    Ok((written, refused))
}
