//! On-demand backups and point-in-time recovery through the AWS SDK for
//! Rust, on the embedded server and an in-process three-zone cluster with
//! two partitions per table.
//!
//! A backup is taken while writers change the table; each writer owns its
//! keys and writes them one call at a time, noting when it called and when
//! it was answered. The restored table must hold, for every key, the last
//! write answered at or before the backup's moment T, or the one after it
//! if that one was called at or before T (in flight at T: either is right),
//! and nothing else. The table of the embedded run has no global index, so
//! its writes are logged only because the backup pinned its partitions;
//! the cluster run's has one, and the restored table's index follows its
//! items.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::DateTime;
use aws_sdk_dynamodb::types::{
    AttributeValue, BackupStatus, BillingMode, GlobalSecondaryIndex, KeyType,
    PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, ScalarAttributeType, TableStatus,
};
use dynaraft_tests::cluster::TestCluster;
use dynaraft_tests::schema::{all, attr, key};
use dynaraft_tests::{TestServer, err_of, scan_all};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 40;
/// How long writers run before and after the backup is requested.
const WRITE_AROUND_BACKUP: Duration = Duration::from_millis(1_500);
/// Point-in-time phases: writes per phase over how many keys, and the
/// quiet gap on each side of the moment noted after a phase.
const PITR_PHASES: usize = 5;
const PITR_WRITES_PER_PHASE: usize = 40;
const PITR_KEYS: u64 = 30;
const PITR_GAP: Duration = Duration::from_millis(30);
/// How long after the phases the restores are requested.
const PITR_SNAPSHOTS_SETTLE: Duration = Duration::from_millis(1_500);
/// Longest wait for a backup to become AVAILABLE or a restore ACTIVE.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One write of a key: its value (`None`: a delete), when it was called
/// and when it was answered, in Unix milliseconds.
#[derive(Clone, Debug)]
struct Write {
    value: Option<String>,
    called_ms: u64,
    answered_ms: u64,
}

/// Creates `table`, with the global index `by_group` if `indexed`. A table
/// with a global index logs every write for it; one without logs writes
/// only while a backup pins its partitions, which is what a backup needs.
async fn create(c: &Client, table: &str, indexed: bool) {
    let by_group = GlobalSecondaryIndex::builder()
        .index_name("by_group")
        .key_schema(key("g", KeyType::Hash))
        .key_schema(key("pk", KeyType::Range))
        .projection(all())
        .build()
        .expect("gsi");
    let mut req = c
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .key_schema(key("pk", KeyType::Hash));
    if indexed {
        req = req
            .attribute_definitions(attr("g", ScalarAttributeType::S))
            .global_secondary_indexes(by_group);
    }
    req.send().await.expect("create table");
}

/// Writes `keys` one call at a time, round after round, until `stop`:
/// puts, and every fifth write a delete. Returns each key's writes in
/// order.
async fn writer(
    c: Client,
    table: String,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
) -> BTreeMap<String, Vec<Write>> {
    let mut log: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for k in &keys {
            n += 1;
            let called_ms = now_ms();
            let value = (!n.is_multiple_of(5)).then(|| format!("v{n}"));
            let ok = match &value {
                Some(v) => c
                    .put_item()
                    .table_name(&table)
                    .item("pk", s(k))
                    .item("g", s("all"))
                    .item("v", s(v))
                    .send()
                    .await
                    .is_ok(),
                None => c
                    .delete_item()
                    .table_name(&table)
                    .key("pk", s(k))
                    .send()
                    .await
                    .is_ok(),
            };
            assert!(ok, "a write of {k} failed");
            let answered_ms = now_ms();
            log.entry(k.clone()).or_default().push(Write {
                value,
                called_ms,
                answered_ms,
            });
        }
    }
    log
}

/// A table's items as pk -> v.
async fn contents(c: &Client, table: &str) -> BTreeMap<String, String> {
    scan_all(c, table, None)
        .await
        .into_iter()
        .map(|i| {
            let v = |a: &str| {
                i.get(a)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            (v("pk"), v("v"))
        })
        .collect()
}

async fn wait_available(c: &Client, arn: &str) {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let d = c
            .describe_backup()
            .backup_arn(arn)
            .send()
            .await
            .expect("describe backup");
        let status = d
            .backup_description()
            .and_then(|b| b.backup_details())
            .map(|b| b.backup_status().clone());
        if status == Some(BackupStatus::Available) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backup not AVAILABLE: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_active(c: &Client, table: &str) {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let d = c
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe table");
        let t = d.table().expect("table");
        if t.table_status() == Some(&TableStatus::Active) {
            let r = t
                .restore_summary()
                .expect("a restored table has a RestoreSummary");
            assert!(!r.restore_in_progress());
            return;
        }
        assert!(Instant::now() < deadline, "restore not ACTIVE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The values key `k` may hold at `t_ms`, given its `writes` in order and
/// the value it had before them.
fn allowed_at(writes: &[Write], before: Option<&str>, t_ms: u64) -> Vec<Option<String>> {
    let last = writes.iter().rposition(|w| w.answered_ms <= t_ms);
    let mut ok = vec![match last {
        Some(i) => writes[i].value.clone(),
        None => before.map(str::to_string),
    }];
    let next = last.map_or(0, |i| i + 1);
    if let Some(w) = writes.get(next).filter(|w| w.called_ms <= t_ms) {
        ok.push(w.value.clone());
    }
    ok
}

async fn backup_under_writes(c: &Client, indexed: bool) {
    let table = "orders";
    create(c, table, indexed).await;
    let keys: Vec<Vec<String>> = (0..WRITERS)
        .map(|w| (0..KEYS_PER_WRITER).map(|i| format!("w{w}-k{i}")).collect())
        .collect();
    for k in keys.iter().flatten() {
        c.put_item()
            .table_name(table)
            .item("pk", s(k))
            .item("g", s("all"))
            .item("v", s("initial"))
            .send()
            .await
            .expect("preload");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = keys
        .iter()
        .map(|ks| {
            tokio::spawn(writer(
                c.clone(),
                table.to_string(),
                ks.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(WRITE_AROUND_BACKUP).await;
    let made = c
        .create_backup()
        .table_name(table)
        .backup_name("under-writes")
        .send()
        .await
        .expect("create backup");
    let details = made.backup_details().expect("details");
    assert_eq!(details.backup_status(), &BackupStatus::Creating);
    let arn = details.backup_arn().to_string();
    let t_ms = details.backup_creation_date_time().as_secs_f64() * 1000.0;
    let t_ms = t_ms.round() as u64;
    tokio::time::sleep(WRITE_AROUND_BACKUP).await;
    stop.store(true, Ordering::Relaxed);
    let mut history: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    for w in writers {
        history.extend(w.await.expect("writer"));
    }
    let changed_after = history
        .values()
        .flatten()
        .filter(|w| w.called_ms > t_ms)
        .count();
    assert!(changed_after > 0, "no write came after the backup's moment");

    wait_available(c, &arn).await;
    let restored = c
        .restore_table_from_backup()
        .target_table_name("restored")
        .backup_arn(&arn)
        .send()
        .await
        .expect("restore");
    let desc = restored.table_description().expect("description");
    assert_eq!(desc.table_status(), Some(&TableStatus::Creating));
    assert!(
        desc.restore_summary()
            .is_some_and(|r| r.source_backup_arn() == Some(&arn))
    );
    wait_active(c, "restored").await;

    let got: BTreeMap<String, String> = contents(c, "restored").await;
    let mut in_flight = 0;
    for k in keys.iter().flatten() {
        let writes = history.get(k).map_or(&[][..], Vec::as_slice);
        let allowed = allowed_at(writes, Some("initial"), t_ms);
        let value = got.get(k).cloned();
        assert!(
            allowed.contains(&value),
            "{k} restored as {value:?}; at the backup's moment it could be {allowed:?}"
        );
        in_flight += usize::from(allowed.len() > 1);
    }
    assert!(
        got.keys().all(|k| history.contains_key(k)),
        "a key nobody wrote"
    );
    eprintln!(
        "backup under writes: {} keys checked ({} restored), {changed_after} writes called after T, {in_flight} in flight at T",
        WRITERS * KEYS_PER_WRITER,
        got.len()
    );

    if !indexed {
        return;
    }
    // The restored table's global index follows its items.
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let indexed = scan_all(c, "restored", Some("by_group")).await.len();
        if indexed == got.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "index has {indexed} of {}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_the_table_at_its_moment_under_writes_embedded() {
    let server = TestServer::start().await;
    backup_under_writes(&server.client, false).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_the_table_at_its_moment_under_writes_in_a_cluster() {
    let c = TestCluster::start("backup", 3, 2).await;
    backup_under_writes(&c.client, true).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_requests_get_dynamodbs_errors_and_listing_pages() {
    let server = TestServer::start().await;
    let c = &server.client;
    let e = c
        .create_backup()
        .table_name("missing")
        .backup_name("bk1")
        .send()
        .await
        .expect_err("no table");
    assert_eq!(
        err_of(&e),
        (
            "TableNotFoundException".into(),
            "Table not found: missing".into()
        )
    );
    create(c, "books", false).await;
    let e = c
        .create_backup()
        .table_name("books")
        .backup_name("a b")
        .send()
        .await
        .expect_err("bad name");
    assert_eq!(err_of(&e).0, "ValidationException");
    let mut arns = Vec::new();
    for name in ["first", "second", "third"] {
        let made = c
            .create_backup()
            .table_name("books")
            .backup_name(name)
            .send()
            .await
            .expect("create backup");
        let arn = made
            .backup_details()
            .expect("details")
            .backup_arn()
            .to_string();
        wait_available(c, &arn).await;
        arns.push(arn);
    }
    // Pages of one, oldest first, until the last.
    let mut listed = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = c
            .list_backups()
            .table_name("books")
            .limit(1)
            .set_exclusive_start_backup_arn(start.clone())
            .send()
            .await
            .expect("list");
        listed.extend(
            page.backup_summaries()
                .iter()
                .filter_map(|b| b.backup_arn().map(str::to_string)),
        );
        match page.last_evaluated_backup_arn() {
            Some(a) => start = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(listed, arns);
    let other = c
        .list_backups()
        .table_name("orders")
        .send()
        .await
        .expect("list");
    assert!(other.backup_summaries().is_empty());

    let unknown = format!("{}0", arns[0]);
    let e = c
        .describe_backup()
        .backup_arn(&unknown)
        .send()
        .await
        .expect_err("unknown");
    assert_eq!(
        err_of(&e),
        (
            "BackupNotFoundException".into(),
            format!("Backup not found: {unknown}")
        )
    );
    let e = c
        .restore_table_from_backup()
        .target_table_name("books")
        .backup_arn(&arns[0])
        .send()
        .await
        .expect_err("target exists");
    assert_eq!(
        err_of(&e),
        (
            "TableAlreadyExistsException".into(),
            "Table already exists: books".into()
        )
    );
    let deleted = c
        .delete_backup()
        .backup_arn(&arns[1])
        .send()
        .await
        .expect("delete");
    let status = deleted
        .backup_description()
        .and_then(|d| d.backup_details())
        .map(|d| d.backup_status().clone());
    assert_eq!(status, Some(BackupStatus::Deleted));
    let e = c
        .delete_backup()
        .backup_arn(&arns[1])
        .send()
        .await
        .expect_err("gone");
    assert_eq!(err_of(&e).0, "BackupNotFoundException");
    // The table's own listing and its hidden backups: ListTables shows
    // only the table.
    let tables = c.list_tables().send().await.expect("list tables");
    assert_eq!(tables.table_names(), ["books"]);
    server.stop().await;
}

/// Point-in-time recovery: writes in phases with quiet gaps between them;
/// a moment in each gap is noted with the table's contents then. Restores
/// to several of those moments each hold exactly those contents.
/// Restores to points in time; with `router` (the embedded server's),
/// also checks that some were redone from a point-in-time snapshot and
/// some undone from the live table.
async fn restores_to_points_in_time(c: &Client, router: Option<&dynaraft_cluster::Router>) {
    let table = "ledger";
    create(c, table, false).await;
    let e = c
        .restore_table_to_point_in_time()
        .source_table_name(table)
        .target_table_name("too-soon")
        .use_latest_restorable_time(true)
        .send()
        .await
        .expect_err("not enabled");
    assert_eq!(
        err_of(&e),
        (
            "PointInTimeRecoveryUnavailableException".into(),
            format!("Point in time recovery is not enabled for table '{table}'")
        )
    );
    let on = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .recovery_period_in_days(7)
        .build()
        .expect("spec");
    let d = c
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(on)
        .send()
        .await
        .expect("enable");
    let pitr = d
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .expect("pitr");
    assert_eq!(
        pitr.point_in_time_recovery_status(),
        Some(&PointInTimeRecoveryStatus::Enabled)
    );
    assert_eq!(pitr.recovery_period_in_days(), Some(7));
    let earliest = pitr
        .earliest_restorable_date_time()
        .expect("earliest")
        .to_millis()
        .expect("ms");

    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut marks: Vec<(u64, BTreeMap<String, String>)> = Vec::new();
    let mut n = 0u64;
    for _phase in 0..PITR_PHASES {
        for _ in 0..PITR_WRITES_PER_PHASE {
            n += 1;
            let k = format!("k{}", (n * 7919) % PITR_KEYS);
            if n.is_multiple_of(4) {
                c.delete_item()
                    .table_name(table)
                    .key("pk", s(&k))
                    .send()
                    .await
                    .expect("delete");
                state.remove(&k);
            } else {
                let v = format!("v{n}");
                c.put_item()
                    .table_name(table)
                    .item("pk", s(&k))
                    .item("v", s(&v))
                    .send()
                    .await
                    .expect("put");
                state.insert(k, v);
            }
        }
        tokio::time::sleep(PITR_GAP).await;
        marks.push((now_ms(), state.clone()));
        tokio::time::sleep(PITR_GAP).await;
    }
    let e = c
        .restore_table_to_point_in_time()
        .source_table_name(table)
        .target_table_name("before-enabled")
        .restore_date_time(DateTime::from_millis(earliest as i64 - 1_000))
        .send()
        .await
        .expect_err("before the window");
    assert_eq!(err_of(&e).0, "InvalidRestoreTimeException");
    // Time for snapshots (every TEST_PITR_SNAPSHOT_MS) to be taken during
    // the phases and after, so later moments are nearer a snapshot than now.
    tokio::time::sleep(PITR_SNAPSHOTS_SETTLE).await;
    // The first, a middle and the last moment, and the latest restorable
    // time (the table as it is now).
    let picks = [0, PITR_PHASES / 2, PITR_PHASES - 1];
    let mut restores = Vec::new();
    for (i, &p) in picks.iter().enumerate() {
        let (t, _) = &marks[p];
        let target = format!("ledger-at-{i}");
        let r = c
            .restore_table_to_point_in_time()
            .source_table_name(table)
            .target_table_name(&target)
            .restore_date_time(DateTime::from_millis(*t as i64))
            .send()
            .await
            .expect("restore to a time");
        let summary = r
            .table_description()
            .and_then(|d| d.restore_summary())
            .expect("summary");
        assert!(summary.restore_in_progress() && summary.source_backup_arn().is_none());
        restores.push((target, marks[p].1.clone()));
    }
    c.restore_table_to_point_in_time()
        .source_table_name(table)
        .target_table_name("ledger-latest")
        .use_latest_restorable_time(true)
        .send()
        .await
        .expect("restore to the latest time");
    restores.push(("ledger-latest".to_string(), state.clone()));
    if let Some(router) = router {
        let redone = router
            .tables()
            .iter()
            .filter_map(|t| t.meta.restore.as_ref())
            .filter(|r| r.source_table.as_deref() == Some(table))
            .map(|r| r.redo_from_ms.is_some())
            .collect::<Vec<_>>();
        assert!(
            redone.contains(&true) && redone.contains(&false),
            "restores redone from a snapshot: {redone:?}"
        );
    }
    for (target, want) in &restores {
        wait_active(c, target).await;
        let got: BTreeMap<String, String> = contents(c, target).await;
        assert_eq!(&got, want, "{target} differs from the table at its moment");
    }
    let off = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(false)
        .build()
        .expect("spec");
    let d = c
        .update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(off)
        .send()
        .await
        .expect("disable");
    let status = d
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status().cloned());
    assert_eq!(status, Some(PointInTimeRecoveryStatus::Disabled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_to_points_in_time_hold_the_table_as_it_was_embedded() {
    let server = TestServer::start().await;
    restores_to_points_in_time(&server.client, server.router()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_to_points_in_time_hold_the_table_as_it_was_in_a_cluster() {
    let c = TestCluster::start("pitr", 3, 2).await;
    restores_to_points_in_time(&c.client, None).await;
    c.stop().await;
}
