//! Exports and imports through the AWS SDK for Rust, on the embedded
//! server with a directory as its object store.
//!
//! A table with every attribute type is written, a moment T noted in a
//! quiet gap, and the table changed after it (puts, overwrites, deletes).
//! An export at T must hold exactly the table at T, in DynamoDB's layout
//! (manifests whose counts and checksums match the data files), and an
//! import of its data files must reproduce that table item for item, its
//! global index included. Then the errors: DynamoDB's exception types for
//! bad requests, and FAILED jobs (an import's table deleted) for a bucket
//! that does not exist or a data file that is not in its format.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::{Blob, DateTime};
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, CsvOptions, ExportStatus, GlobalSecondaryIndex, ImportStatus,
    InputCompressionType, InputFormat, InputFormatOptions, KeyType,
    PointInTimeRecoverySpecification, S3BucketSource, ScalarAttributeType, TableCreationParameters,
    TableStatus,
};
use dynaraft_cluster::objects::{ObjectStore, base64_md5};
use dynaraft_tests::schema::{all, attr, key};
use dynaraft_tests::{TestServer, err_of, scan_all};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Items written before the noted moment, and changed after it.
const ITEMS: usize = 120;
const CHANGED_AFTER: usize = 30;
/// The quiet gap on each side of the noted moment.
const GAP: Duration = Duration::from_millis(50);
/// Longest wait for a job to finish.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
const BUCKET: &str = "exports-bucket";

type Row = HashMap<String, AttributeValue>;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A server whose object store is a new directory with one bucket.
async fn start() -> (TestServer, PathBuf) {
    let root = std::env::temp_dir().join(format!("dynaraft-exports-{:016x}", rand_u64()));
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
    let store = ObjectStore::parse(&format!("file://{}", root.display())).expect("store");
    let node = dynaraft_cluster::embedded::EmbeddedConfig {
        object_store: Some(Arc::new(store)),
        ..TestServer::node_config(None)
    };
    (
        TestServer::start_node(node, TestServer::config()).await,
        root,
    )
}

fn rand_u64() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// Item `i`, version `v`: every attribute type.
fn item(i: usize, v: usize) -> Row {
    let mut m = HashMap::new();
    m.insert("pk".to_string(), s(&format!("item-{i:04}")));
    m.insert("sk".to_string(), n(&i.to_string()));
    m.insert("g".to_string(), s(&format!("group-{}", i % 3)));
    m.insert("v".to_string(), n(&format!("{v}.25")));
    m.insert(
        "b".to_string(),
        AttributeValue::B(Blob::new(vec![0, 1, i as u8, 255])),
    );
    m.insert(
        "flag".to_string(),
        AttributeValue::Bool(i.is_multiple_of(2)),
    );
    m.insert("nothing".to_string(), AttributeValue::Null(true));
    m.insert(
        "tags".to_string(),
        AttributeValue::Ss(vec!["a".into(), format!("t{}", i % 5)]),
    );
    m.insert(
        "nums".to_string(),
        AttributeValue::Ns(vec!["1".into(), format!("-{i}e3")]),
    );
    m.insert(
        "bins".to_string(),
        AttributeValue::Bs(vec![Blob::new(vec![1]), Blob::new(vec![2, i as u8])]),
    );
    let nested = HashMap::from([
        (
            "list".to_string(),
            AttributeValue::L(vec![s("x"), n("2"), AttributeValue::Null(true)]),
        ),
        ("text".to_string(), s("ünïcødé \"quoted\"\nline")),
    ]);
    m.insert("doc".to_string(), AttributeValue::M(nested));
    m
}

async fn create_source(c: &Client, table: &str) {
    c.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .expect("create table");
}

async fn enable_pitr(c: &Client, table: &str) {
    let on = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .expect("spec");
    c.update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(on)
        .send()
        .await
        .expect("enable pitr");
}

async fn put(c: &Client, table: &str, row: Row) {
    c.put_item()
        .table_name(table)
        .set_item(Some(row))
        .send()
        .await
        .expect("put");
}

/// A table's rows by (pk, sk).
fn by_key(rows: Vec<Row>) -> BTreeMap<(String, String), Row> {
    rows.into_iter()
        .map(|r| {
            let k = |a: &str| match r.get(a) {
                Some(AttributeValue::S(v) | AttributeValue::N(v)) => v.clone(),
                _ => String::new(),
            };
            ((k("pk"), k("sk")), r)
        })
        .collect()
}

fn table_arn(table: &str) -> String {
    format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}")
}

/// Looks with `look` until it gives a description (`None`: still in
/// progress), at most [`SETTLE_WITHIN`].
async fn settled<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    look: impl Fn() -> F,
) -> T {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        if let Some(done) = look().await {
            return done;
        }
        assert!(Instant::now() < deadline, "{what} still IN_PROGRESS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for export `arn` to finish; its description.
async fn finished_export(c: &Client, arn: &str) -> aws_sdk_dynamodb::types::ExportDescription {
    settled(arn, || async {
        let d = c.describe_export().export_arn(arn).send().await;
        let e = d.expect("describe export").export_description().cloned();
        e.filter(|e| e.export_status() != Some(&ExportStatus::InProgress))
    })
    .await
}

/// Waits for the export `made` started to finish; its description, which
/// must say COMPLETED.
async fn completed_export(
    c: &Client,
    made: &aws_sdk_dynamodb::operation::export_table_to_point_in_time::ExportTableToPointInTimeOutput,
) -> aws_sdk_dynamodb::types::ExportDescription {
    let arn = made
        .export_description()
        .and_then(|d| d.export_arn())
        .expect("arn");
    let done = finished_export(c, arn).await;
    assert_eq!(
        done.export_status(),
        Some(&ExportStatus::Completed),
        "{done:?}"
    );
    done
}

/// Waits for import `arn` to finish; its description.
async fn finished_import(c: &Client, arn: &str) -> aws_sdk_dynamodb::types::ImportTableDescription {
    settled(arn, || async {
        let d = c.describe_import().import_arn(arn).send().await;
        let i = d
            .expect("describe import")
            .import_table_description()
            .cloned();
        i.filter(|i| i.import_status() != Some(&ImportStatus::InProgress))
    })
    .await
}

/// TableCreationParameters of a (pk S, sk N) table named `name`, with a
/// global index on g when `indexed`.
fn creation(name: &str, indexed: bool) -> TableCreationParameters {
    let mut p = TableCreationParameters::builder()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range));
    if indexed {
        let gsi = GlobalSecondaryIndex::builder()
            .index_name("by_g")
            .key_schema(key("g", KeyType::Hash))
            .key_schema(key("pk", KeyType::Range))
            .projection(all())
            .build()
            .expect("gsi");
        p = p
            .attribute_definitions(attr("g", ScalarAttributeType::S))
            .global_secondary_indexes(gsi);
    }
    p.build().expect("creation parameters")
}

async fn import(
    c: &Client,
    prefix: &str,
    format: InputFormat,
    compression: InputCompressionType,
    params: TableCreationParameters,
) -> aws_sdk_dynamodb::types::ImportTableDescription {
    let source = S3BucketSource::builder()
        .s3_bucket(BUCKET)
        .s3_key_prefix(prefix)
        .build()
        .expect("source");
    let made = c
        .import_table()
        .s3_bucket_source(source)
        .input_format(format)
        .input_compression_type(compression)
        .table_creation_parameters(params)
        .send()
        .await
        .expect("import table");
    let d = made.import_table_description().expect("description");
    assert_eq!(d.import_status(), Some(&ImportStatus::InProgress));
    finished_import(c, d.import_arn().expect("arn")).await
}

/// Creates `table` with point-in-time recovery and [`ITEMS`] items; a
/// moment in a quiet gap after them, and the table then.
async fn filled(c: &Client, table: &str) -> (u64, BTreeMap<(String, String), Row>) {
    create_source(c, table).await;
    enable_pitr(c, table).await;
    for i in 0..ITEMS {
        put(c, table, item(i, 1)).await;
    }
    tokio::time::sleep(GAP).await;
    let moment = now_ms();
    let rows = by_key(scan_all(c, table, None).await);
    tokio::time::sleep(GAP).await;
    (moment, rows)
}

fn read(root: &Path, key: &str) -> Vec<u8> {
    std::fs::read(root.join(BUCKET).join(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_at_a_moment_imported_again_reproduces_the_table_then() {
    let (server, root) = start().await;
    let c = &server.client;
    let table = "catalog";
    let (t_ms, expected) = filled(c, table).await;
    assert_eq!(expected.len(), ITEMS);
    // After T: overwrites, deletes and new items, none of which may show.
    for i in 0..CHANGED_AFTER {
        put(c, table, item(i, 2)).await;
        c.delete_item()
            .table_name(table)
            .key("pk", s(&format!("item-{:04}", ITEMS - 1 - i)))
            .key("sk", n(&(ITEMS - 1 - i).to_string()))
            .send()
            .await
            .expect("delete");
        put(c, table, item(ITEMS + i, 1)).await;
    }

    let made = c
        .export_table_to_point_in_time()
        .table_arn(table_arn(table))
        .s3_bucket(BUCKET)
        .s3_prefix("nightly")
        .export_time(DateTime::from_millis(t_ms as i64))
        .send()
        .await
        .expect("export");
    let started = made.export_description().expect("description");
    assert_eq!(started.export_status(), Some(&ExportStatus::InProgress));
    let done = completed_export(c, &made).await;
    let arn = done.export_arn().expect("arn");
    assert_eq!(done.item_count(), Some(ITEMS as i64));
    // Seconds with a fraction on the wire: to the millisecond, give or
    // take the SDK's float rounding.
    let exported_ms = done.export_time().and_then(|t| t.to_millis().ok());
    assert!(
        exported_ms.is_some_and(|m| m.abs_diff(t_ms as i64) <= 1),
        "{exported_ms:?}"
    );

    // DynamoDB's layout: the manifests list every data file, with counts
    // and checksums that match.
    let id = arn.rsplit('/').next().expect("id");
    let folder = format!("nightly/AWSDynamoDB/{id}/");
    let summary_key = done.export_manifest().expect("manifest");
    assert_eq!(summary_key, format!("{folder}manifest-summary.json"));
    let summary: serde_json::Value =
        serde_json::from_slice(&read(&root, summary_key)).expect("summary json");
    assert_eq!(summary["exportArn"], arn);
    assert_eq!(summary["itemCount"], ITEMS as u64);
    assert_eq!(summary["outputFormat"], "DYNAMODB_JSON");
    assert_eq!(
        String::from_utf8(read(&root, &format!("{folder}manifest-summary.md5"))).expect("md5"),
        base64_md5(&read(&root, summary_key))
    );
    let files_key = summary["manifestFilesS3Key"].as_str().expect("files key");
    let files = String::from_utf8(read(&root, files_key)).expect("files manifest");
    let mut listed_items = 0;
    for line in files.lines() {
        let f: serde_json::Value = serde_json::from_str(line).expect("manifest line");
        let data = read(&root, f["dataFileS3Key"].as_str().expect("data key"));
        assert_eq!(f["md5Checksum"], base64_md5(&data).as_str());
        listed_items += f["itemCount"].as_u64().expect("count");
    }
    assert_eq!(listed_items, ITEMS as u64);
    assert!(root.join(BUCKET).join(format!("{folder}_started")).exists());

    // The data files, imported into a new table with a global index.
    let imported = import(
        c,
        &format!("{folder}data/"),
        InputFormat::DynamodbJson,
        InputCompressionType::Gzip,
        creation("catalog-copy", true),
    )
    .await;
    assert_eq!(
        imported.import_status(),
        Some(&ImportStatus::Completed),
        "{imported:?}"
    );
    assert_eq!(imported.imported_item_count(), ITEMS as i64);
    assert_eq!(imported.processed_item_count(), ITEMS as i64);
    assert_eq!(imported.error_count(), 0);
    let d = c
        .describe_table()
        .table_name("catalog-copy")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        d.table().and_then(|t| t.table_status()),
        Some(&TableStatus::Active)
    );
    let got = by_key(scan_all(c, "catalog-copy", None).await);
    assert_eq!(got.len(), expected.len());
    for (k, want) in &expected {
        assert_eq!(got.get(k), Some(want), "item {k:?} differs");
    }
    let indexed = scan_all(c, "catalog-copy", Some("by_g")).await;
    assert_eq!(indexed.len(), ITEMS, "the imported table's index");

    // The same in Amazon Ion.
    let made = c
        .export_table_to_point_in_time()
        .table_arn(table_arn(table))
        .s3_bucket(BUCKET)
        .export_format(aws_sdk_dynamodb::types::ExportFormat::Ion)
        .export_time(DateTime::from_millis(t_ms as i64))
        .send()
        .await
        .expect("ion export");
    let done = completed_export(c, &made).await;
    let arn = done.export_arn().expect("arn");
    let id = arn.rsplit('/').next().expect("id");
    let folder = format!("AWSDynamoDB/{id}/");
    let first = String::from_utf8(read(&root, &format!("{folder}manifest-files.json")))
        .expect("files manifest");
    let first: serde_json::Value =
        serde_json::from_str(first.lines().next().expect("a data file")).expect("line");
    assert!(
        first["dataFileS3Key"]
            .as_str()
            .is_some_and(|k| k.ends_with(".ion.gz")),
        "{first}"
    );
    let imported = import(
        c,
        &format!("{folder}data/"),
        InputFormat::Ion,
        InputCompressionType::Gzip,
        creation("catalog-ion", false),
    )
    .await;
    assert_eq!(
        imported.import_status(),
        Some(&ImportStatus::Completed),
        "{imported:?}"
    );
    assert_eq!(
        (imported.imported_item_count(), imported.error_count()),
        (ITEMS as i64, 0)
    );
    let got = by_key(scan_all(c, "catalog-ion", None).await);
    assert_eq!(got, expected, "the Ion round trip");

    // The snapshot tables are gone; listings show the jobs.
    let tables = c.list_tables().send().await.expect("list tables");
    assert_eq!(
        tables.table_names(),
        ["catalog", "catalog-copy", "catalog-ion"]
    );
    let exports = c
        .list_exports()
        .table_arn(table_arn(table))
        .send()
        .await
        .expect("list exports");
    assert_eq!(exports.export_summaries().len(), 2);
    let imports = c.list_imports().send().await.expect("list imports");
    assert_eq!(imports.import_summary_list().len(), 2);
    server.stop().await;
    let _ = std::fs::remove_dir_all(root);
}

fn write_object(root: &Path, key: &str, body: &[u8]) {
    let path = root.join(BUCKET).join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(path, body).expect("write object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_count_bad_lines_read_csv_and_fail_cleanly() {
    let (server, root) = start().await;
    let c = &server.client;

    // Lines that are not items of the table are counted, not imported.
    let good = r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"v":{"S":"x"}}}"#;
    let body = format!(
        "{good}\nnot json\n{{\"Item\":{{\"pk\":{{\"N\":\"5\"}},\"sk\":{{\"N\":\"1\"}}}}}}\n{{\"NoItem\":1}}\n\n{}\n",
        good.replace("\"a\"", "\"b\"")
    );
    write_object(&root, "mixed/part-1.json", body.as_bytes());
    let d = import(
        c,
        "mixed/",
        InputFormat::DynamodbJson,
        InputCompressionType::None,
        creation("mixed", false),
    )
    .await;
    assert_eq!(d.import_status(), Some(&ImportStatus::Completed), "{d:?}");
    assert_eq!((d.imported_item_count(), d.error_count()), (2, 3));
    assert_eq!(scan_all(c, "mixed", None).await.len(), 2);

    // CSV with a header line and another delimiter: keys typed as their
    // definitions say, every other value a string.
    write_object(
        &root,
        "csv/rows.csv",
        b"pk;sk;city\nx;10;Oslo\ny;20;\"Rio; RJ\"\n",
    );
    let source = S3BucketSource::builder()
        .s3_bucket(BUCKET)
        .s3_key_prefix("csv/")
        .build()
        .expect("source");
    let made = c
        .import_table()
        .s3_bucket_source(source)
        .input_format(InputFormat::Csv)
        .input_format_options(
            InputFormatOptions::builder()
                .csv(CsvOptions::builder().delimiter(";").build())
                .build(),
        )
        .table_creation_parameters(creation("from-csv", false))
        .send()
        .await
        .expect("csv import");
    let arn = made
        .import_table_description()
        .and_then(|d| d.import_arn())
        .expect("arn")
        .to_string();
    let d = finished_import(c, &arn).await;
    assert_eq!(d.import_status(), Some(&ImportStatus::Completed), "{d:?}");
    let rows = by_key(scan_all(c, "from-csv", None).await);
    let y = rows
        .get(&("y".to_string(), "20".to_string()))
        .expect("row y");
    assert_eq!(y.get("sk"), Some(&n("20")));
    assert_eq!(y.get("city"), Some(&s("Rio; RJ")));

    // A data file that is not gzip fails the import; its table is gone.
    write_object(&root, "broken/part.json.gz", b"this is not gzip");
    let d = import(
        c,
        "broken/",
        InputFormat::DynamodbJson,
        InputCompressionType::Gzip,
        creation("broken", false),
    )
    .await;
    assert_eq!(d.import_status(), Some(&ImportStatus::Failed), "{d:?}");
    assert!(
        d.failure_message().is_some_and(|m| m.contains("GZIP")),
        "{d:?}"
    );
    let e = c
        .describe_table()
        .table_name("broken")
        .send()
        .await
        .expect_err("a failed import leaves no table");
    assert_eq!(err_of(&e).0, "ResourceNotFoundException");

    // A bucket that does not exist.
    let source = S3BucketSource::builder()
        .s3_bucket("no-such-bucket")
        .build()
        .expect("source");
    let made = c
        .import_table()
        .s3_bucket_source(source)
        .input_format(InputFormat::DynamodbJson)
        .table_creation_parameters(creation("nowhere", false))
        .send()
        .await
        .expect("import is accepted");
    let arn = made
        .import_table_description()
        .and_then(|d| d.import_arn())
        .expect("arn")
        .to_string();
    let d = finished_import(c, &arn).await;
    assert_eq!(d.import_status(), Some(&ImportStatus::Failed));
    assert_eq!(d.failure_code(), Some("S3NoSuchBucket"));
    assert!(
        c.describe_table()
            .table_name("nowhere")
            .send()
            .await
            .is_err()
    );

    // A table that exists cannot be imported into.
    let source = S3BucketSource::builder()
        .s3_bucket(BUCKET)
        .s3_key_prefix("mixed/")
        .build()
        .expect("source");
    let e = c
        .import_table()
        .s3_bucket_source(source)
        .input_format(InputFormat::DynamodbJson)
        .table_creation_parameters(creation("mixed", false))
        .send()
        .await
        .expect_err("table exists");
    assert_eq!(err_of(&e).0, "ResourceInUseException");

    let unknown = format!("{}/import/01700000000000-00000000", table_arn("mixed"));
    let e = c
        .describe_import()
        .import_arn(&unknown)
        .send()
        .await
        .expect_err("unknown import");
    assert_eq!(
        err_of(&e),
        (
            "ImportNotFoundException".into(),
            format!("Import not found: {unknown}")
        )
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_get_dynamodbs_errors() {
    let (server, _root) = start().await;
    let c = &server.client;
    let table = "orders";
    create_source(c, table).await;
    let export = |bucket: &str| {
        c.export_table_to_point_in_time()
            .table_arn(table_arn(table))
            .s3_bucket(bucket)
    };
    let e = export(BUCKET).send().await.expect_err("pitr off");
    assert_eq!(
        err_of(&e),
        (
            "PointInTimeRecoveryUnavailableException".into(),
            format!("Point in time recovery is not enabled for table '{table}'")
        )
    );
    enable_pitr(c, table).await;
    let e = export(BUCKET)
        .export_time(DateTime::from_secs(1_000_000_000))
        .send()
        .await
        .expect_err("before the window");
    assert_eq!(err_of(&e).0, "InvalidExportTimeException");
    let e = c
        .export_table_to_point_in_time()
        .table_arn(table_arn("absent"))
        .s3_bucket(BUCKET)
        .send()
        .await
        .expect_err("no table");
    assert_eq!(err_of(&e).0, "TableNotFoundException");
    let e = export("bad bucket!").send().await.expect_err("bucket name");
    assert_eq!(err_of(&e).0, "ValidationException");

    // A bucket that does not exist fails the export.
    let made = export("no-such-bucket").send().await.expect("accepted");
    let arn = made
        .export_description()
        .and_then(|d| d.export_arn())
        .expect("arn")
        .to_string();
    let done = finished_export(c, &arn).await;
    assert_eq!(done.export_status(), Some(&ExportStatus::Failed));
    assert_eq!(done.failure_code(), Some("S3NoSuchBucket"));

    // A ClientToken names one export: the same request answers it again,
    // another is a conflict.
    let first = export(BUCKET)
        .client_token("token-1")
        .send()
        .await
        .expect("export");
    let again = export(BUCKET)
        .client_token("token-1")
        .send()
        .await
        .expect("same export");
    let arn_of = |d: &aws_sdk_dynamodb::operation::export_table_to_point_in_time::ExportTableToPointInTimeOutput| {
        d.export_description().and_then(|e| e.export_arn()).map(str::to_string)
    };
    assert_eq!(arn_of(&first), arn_of(&again));
    let e = export(BUCKET)
        .client_token("token-1")
        .s3_prefix("elsewhere")
        .send()
        .await
        .expect_err("conflict");
    assert_eq!(err_of(&e).0, "ExportConflictException");
    let unknown = format!("{}/export/01700000000000-00000000", table_arn(table));
    let e = c
        .describe_export()
        .export_arn(&unknown)
        .send()
        .await
        .expect_err("unknown export");
    assert_eq!(
        err_of(&e),
        (
            "ExportNotFoundException".into(),
            format!("Export not found: {unknown}")
        )
    );
    // Pages of one.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_exports()
            .max_results(1)
            .set_next_token(token)
            .send()
            .await
            .expect("list");
        seen.extend(
            page.export_summaries()
                .iter()
                .filter_map(|s| s.export_arn().map(str::to_string)),
        );
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1]);
    server.stop().await;
}

/// The lines of export `done`'s data files, as JSON.
fn export_lines(
    root: &Path,
    done: &aws_sdk_dynamodb::types::ExportDescription,
) -> Vec<serde_json::Value> {
    use std::io::Read;
    let summary: serde_json::Value =
        serde_json::from_slice(&read(root, done.export_manifest().expect("manifest")))
            .expect("summary");
    let files = String::from_utf8(read(
        root,
        summary["manifestFilesS3Key"].as_str().expect("key"),
    ))
    .expect("files");
    let mut out = Vec::new();
    for line in files.lines() {
        let f: serde_json::Value = serde_json::from_str(line).expect("file line");
        let gz = read(root, f["dataFileS3Key"].as_str().expect("data key"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str(l).expect("json line")),
        );
    }
    out
}

/// A row as DynamoDB JSON, as export files hold it.
fn row_json(r: &Row) -> serde_json::Value {
    use base64::Engine as _;
    fn one(v: &AttributeValue) -> serde_json::Value {
        let b64 = |b: &Blob| base64::engine::general_purpose::STANDARD.encode(b.as_ref());
        match v {
            AttributeValue::S(s) => serde_json::json!({"S": s}),
            AttributeValue::N(n) => serde_json::json!({"N": n}),
            AttributeValue::B(b) => serde_json::json!({"B": b64(b)}),
            AttributeValue::Bool(b) => serde_json::json!({"BOOL": b}),
            AttributeValue::Null(_) => serde_json::json!({"NULL": true}),
            AttributeValue::Ss(v) => serde_json::json!({"SS": v}),
            AttributeValue::Ns(v) => serde_json::json!({"NS": v}),
            AttributeValue::Bs(v) => {
                serde_json::json!({"BS": v.iter().map(b64).collect::<Vec<_>>()})
            }
            AttributeValue::L(l) => serde_json::json!({"L": l.iter().map(one).collect::<Vec<_>>()}),
            AttributeValue::M(m) => {
                serde_json::json!({"M": m.iter().map(|(k, v)| (k.clone(), one(v))).collect::<serde_json::Map<_, _>>()})
            }
            _ => serde_json::Value::Null,
        }
    }
    serde_json::Value::Object(r.iter().map(|(k, v)| (k.clone(), one(v))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_export_holds_each_item_changed_in_its_window_once() {
    let (server, root) = start().await;
    let c = &server.client;
    let table = "ledger";
    let (from_ms, before) = filled(c, table).await;
    // In the window: overwrites (some twice), deletes, new items, and an
    // item made and deleted again.
    for i in 0..CHANGED_AFTER {
        put(c, table, item(i, 2)).await;
        if i % 3 == 0 {
            put(c, table, item(i, 3)).await;
        }
        c.delete_item()
            .table_name(table)
            .key("pk", s(&format!("item-{:04}", ITEMS - 1 - i)))
            .key("sk", n(&(ITEMS - 1 - i).to_string()))
            .send()
            .await
            .expect("delete");
        put(c, table, item(ITEMS + i, 1)).await;
    }
    put(c, table, item(9_999, 1)).await;
    c.delete_item()
        .table_name(table)
        .key("pk", s("item-9999"))
        .key("sk", n("9999"))
        .send()
        .await
        .expect("delete");
    tokio::time::sleep(GAP).await;
    let to_ms = now_ms();
    let after = by_key(scan_all(c, table, None).await);
    tokio::time::sleep(GAP).await;
    // After the window: not exported.
    for i in CHANGED_AFTER..2 * CHANGED_AFTER {
        put(c, table, item(i, 4)).await;
    }

    for view in [
        aws_sdk_dynamodb::types::ExportViewType::NewAndOldImages,
        aws_sdk_dynamodb::types::ExportViewType::NewImage,
    ] {
        let spec = aws_sdk_dynamodb::types::IncrementalExportSpecification::builder()
            .export_from_time(DateTime::from_millis(from_ms as i64))
            .export_to_time(DateTime::from_millis(to_ms as i64))
            .export_view_type(view.clone())
            .build();
        let made = c
            .export_table_to_point_in_time()
            .table_arn(table_arn(table))
            .s3_bucket(BUCKET)
            .export_type(aws_sdk_dynamodb::types::ExportType::IncrementalExport)
            .incremental_export_specification(spec)
            .send()
            .await
            .expect("incremental export");
        let done = completed_export(c, &made).await;
        assert_eq!(
            done.export_type(),
            Some(&aws_sdk_dynamodb::types::ExportType::IncrementalExport)
        );
        let lines = export_lines(&root, &done);
        let with_old = view == aws_sdk_dynamodb::types::ExportViewType::NewAndOldImages;
        let mut seen = std::collections::BTreeSet::new();
        for l in &lines {
            let k = (
                l["Keys"]["pk"]["S"].as_str().expect("pk").to_string(),
                l["Keys"]["sk"]["N"].as_str().expect("sk").to_string(),
            );
            assert!(seen.insert(k.clone()), "{k:?} exported twice");
            let micros: u64 = l["Metadata"]["WriteTimestampMicros"]["N"]
                .as_str()
                .and_then(|m| m.parse().ok())
                .expect("timestamp");
            assert!((from_ms * 1000..to_ms * 1000).contains(&micros), "{l}");
            let new = after.get(&k).map(row_json);
            assert_eq!(l.get("NewImage").cloned(), new, "NewImage of {k:?}");
            let old = before.get(&k).map(row_json).filter(|_| with_old);
            assert_eq!(l.get("OldImage").cloned(), old, "OldImage of {k:?}");
        }
        // Every item changed in the window: the overwritten, the deleted
        // and the new; the one made and deleted again in it has no image
        // at either end and is left out.
        assert_eq!(seen.len(), 3 * CHANGED_AFTER, "{view:?}");
        assert_eq!(done.item_count(), Some(seen.len() as i64));
    }

    let e = c
        .export_table_to_point_in_time()
        .table_arn(table_arn(table))
        .s3_bucket(BUCKET)
        .export_type(aws_sdk_dynamodb::types::ExportType::IncrementalExport)
        .send()
        .await
        .expect_err("no window");
    assert_eq!(err_of(&e).0, "ValidationException");
    server.stop().await;
    let _ = std::fs::remove_dir_all(root);
}
