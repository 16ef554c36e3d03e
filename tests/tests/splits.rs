//! Online partition splits (issue 21): a table under a continuous mixed
//! workload grows from one partition to many without a client error, and
//! afterwards holds exactly what was written.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ScalarAttributeType;
use dynaraft_api::ApiConfig;
use dynaraft_cluster::Router;
use dynaraft_cluster::embedded::EmbeddedConfig;
use dynaraft_cluster::split::SplitPolicy;
use dynaraft_storage::{PartitionMeta, TableMeta};
use dynaraft_tests::av::{n, s};
use dynaraft_tests::cluster::{
    DEFAULT_SPLIT_SIZE_BYTES as SPLIT_DEFAULT, TEST_REPLACE_AFTER_MS, TestCluster,
};
use dynaraft_tests::{TestServer, create_table, err_of, scan_all};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Split size of the test, in bytes: small, so a few hundred items make a
/// table split many times.
const SPLIT_BYTES: u64 = 8 * 1024;
/// Items of one partition-key value (an item collection, which a split
/// never cuts).
const PER_KEY: usize = 3;
/// Partitions the table must reach.
const WANT_PARTITIONS: usize = 16;

/// Puts the collection of key `k{i}` (sort keys 0..PER_KEY, each with a
/// 100-byte payload); the number of failed puts.
async fn put_collection(c: &Client, i: usize) -> usize {
    let mut failed = 0;
    for sk in 0..PER_KEY {
        let r = c
            .put_item()
            .table_name("grow")
            .item("pk", s(&format!("k{i}")))
            .item("sk", n(&sk.to_string()))
            .item("pad", s(&"x".repeat(100)))
            .send()
            .await;
        if let Err(e) = r {
            eprintln!("put k{i}/{sk}: {:?}", err_of(&e));
            failed += 1;
        }
    }
    failed
}

/// `c` without the SDK's retries: a refusal the router did not absorb
/// shows as an error instead of being retried by the client.
fn without_retries(c: &Client) -> Client {
    let conf = c.config().to_builder();
    let retry = aws_sdk_dynamodb::config::retry::RetryConfig::disabled();
    Client::from_conf(conf.retry_config(retry).build())
}

/// The API settings of these tests: instant transitions and the default
/// idle-connection timeout. The clients do not retry, so the test servers'
/// short header timeout would let an idle keep-alive connection close under
/// a request on a busy machine (which an SDK retries, as it would here).
fn api_config() -> ApiConfig {
    ApiConfig {
        transition_delay_ms: 0,
        ..ApiConfig::default()
    }
}

/// An embedded server whose partitions split at [`SPLIT_BYTES`].
async fn splitting_server() -> TestServer {
    let node_cfg = EmbeddedConfig {
        split: SplitPolicy {
            size_bytes: SPLIT_BYTES,
            ..SplitPolicy::default()
        },
        ..TestServer::node_config(None)
    };
    TestServer::start_node(node_cfg, api_config()).await
}

/// Table `grow` as the router's catalog has it.
fn grow(router: &Router) -> TableMeta {
    let catalog = router.catalog().get();
    catalog.tables.get("grow").expect("table").meta.clone()
}

fn partitions(router: &Router) -> Vec<PartitionMeta> {
    grow(router).partitions
}

/// DescribeTable of table `grow`.
async fn describe_grow(c: &Client) -> aws_sdk_dynamodb::types::TableDescription {
    let d = c
        .describe_table()
        .table_name("grow")
        .send()
        .await
        .expect("describe");
    d.table().expect("table").clone()
}

/// Writes collections and queries earlier ones (no client retries) until
/// table `grow` has [`WANT_PARTITIONS`] partitions, then checks that it
/// holds exactly what was written; fails on any client error.
async fn grow_under_load(client: &Client, router: &Router) {
    create_table(client, "grow", Some(("sk", ScalarAttributeType::N))).await;
    assert_eq!(partitions(router).len(), 1);
    let client = without_retries(client);
    for a in 0..ACCOUNTS {
        client
            .put_item()
            .table_name("grow")
            .item("pk", s(&format!("acct{a}")))
            .item("sk", n("0"))
            .item("bal", n(&OPENING_BALANCE.to_string()))
            .send()
            .await
            .expect("open account");
    }
    let load = Load {
        c: client.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        written: Arc::new(AtomicUsize::new(0)),
        errors: Arc::new(AtomicUsize::new(0)),
    };
    let writer = {
        let l = load.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while l.running() {
                let failed = put_collection(&l.c, i).await;
                l.errors.fetch_add(failed, Ordering::Relaxed);
                i += 1;
                l.written.store(i, Ordering::Relaxed);
            }
        })
    };
    let reader = {
        let l = load.clone();
        tokio::spawn(async move {
            let mut reads = 0usize;
            while l.running() {
                let upto = l.written.load(Ordering::Relaxed);
                if upto == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let i = reads * 7919 % upto;
                reads += 1;
                match query_collection(&l.c, i).await {
                    Ok(n) if n == PER_KEY => {}
                    Ok(n) => l.error(format!("query k{i}: {n} items")),
                    Err(e) => l.error(format!("query k{i}: {e}")),
                }
            }
            reads
        })
    };
    let transfers = {
        let l = load.clone();
        tokio::spawn(async move {
            let mut done = 0usize;
            while l.running() {
                let (from, to) = (done % ACCOUNTS, (done * 7 + 3) % ACCOUNTS);
                if from == to {
                    done += 1;
                    continue;
                }
                match transfer(&l.c, from, to).await {
                    Ok(()) => done += 1,
                    Err(e) => l.error(format!("transfer {from} -> {to}: {e}")),
                }
            }
            done
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while partitions(router).len() < WANT_PARTITIONS {
        assert!(
            Instant::now() < deadline,
            "only {} partitions after {} collections",
            partitions(router).len(),
            load.written.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let reads = reader.await.expect("reader");
    let moved = transfers.await.expect("transfers");
    let total = load.written.load(Ordering::Relaxed);
    eprintln!(
        "{total} collections written, {reads} queries, {moved} transfers, {} partitions",
        partitions(router).len()
    );
    assert_eq!(balances(&client).await, ACCOUNTS as i64 * OPENING_BALANCE);
    assert_eq!(
        load.errors.load(Ordering::Relaxed),
        0,
        "client errors during splits"
    );
    assert!(reads > 0);

    // The map: contiguous ranges in hash order, every child naming its
    // parent, nothing left pending (a split begun just before the load
    // stopped is finished by the control plane within a few checks).
    let mut parts = partitions(router);
    for _ in 0..100 {
        if parts.iter().all(|p| p.splitting.is_none()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        parts = partitions(router);
    }
    assert_eq!(parts[0].hash_lo, 0);
    assert!(parts.windows(2).all(|w| w[0].hash_lo < w[1].hash_lo));
    assert!(parts.iter().all(|p| p.splitting.is_none()));
    assert_eq!(parts.iter().filter(|p| p.parent.is_none()).count(), 1);

    // Exactly what was written: a Scan across every partition, and
    // collections by GetItem.
    let items = scan_all(&client, "grow", None).await;
    assert_eq!(items.len(), total * PER_KEY + ACCOUNTS);
    let mut keys: Vec<String> = items
        .iter()
        .filter_map(|it| it.get("pk")?.as_s().ok().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), total + ACCOUNTS);
    for i in (0..total).step_by(total.div_ceil(50)) {
        let r = client
            .get_item()
            .table_name("grow")
            .key("pk", s(&format!("k{i}")))
            .key("sk", n("1"))
            .consistent_read(true)
            .send()
            .await
            .expect("get");
        assert!(r.item().is_some(), "k{i} lost");
    }
    // The table's size is the sum of its partitions'.
    assert_eq!(
        describe_grow(&client).await.item_count(),
        Some((total * PER_KEY + ACCOUNTS) as i64)
    );
}

/// Accounts moving money by transactions while the table splits.
const ACCOUNTS: usize = 10;
const OPENING_BALANCE: i64 = 100;

/// Moves 1 from account `from` to `to` in one TransactWriteItems.
async fn transfer(c: &Client, from: usize, to: usize) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
    let update = |a: usize, expr: &str| {
        let u = Update::builder()
            .table_name("grow")
            .key("pk", s(&format!("acct{a}")))
            .key("sk", n("0"))
            .update_expression(expr)
            .expression_attribute_values(":one", n("1"))
            .build()
            .expect("update");
        TransactWriteItem::builder().update(u).build()
    };
    c.transact_write_items()
        .transact_items(update(from, "SET bal = bal - :one"))
        .transact_items(update(to, "SET bal = bal + :one"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", err_of(&e)))
}

/// The accounts' total, read in one TransactGetItems.
async fn balances(c: &Client) -> i64 {
    use aws_sdk_dynamodb::types::{Get, TransactGetItem};
    let mut req = c.transact_get_items();
    for a in 0..ACCOUNTS {
        let g = Get::builder()
            .table_name("grow")
            .key("pk", s(&format!("acct{a}")))
            .key("sk", n("0"))
            .build()
            .expect("get");
        req = req.transact_items(TransactGetItem::builder().get(g).build());
    }
    let r = req.send().await.expect("transact get");
    r.responses()
        .iter()
        .filter_map(|r| r.item()?.get("bal")?.as_n().ok()?.parse::<i64>().ok())
        .sum()
}

/// What the workload's tasks share: the client, the stop flag, how many
/// collections were written, and the client errors seen.
#[derive(Clone)]
struct Load {
    c: Client,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
}

impl Load {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, what: String) {
        eprintln!("{what}");
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Items of collection `k{i}`, by a consistent Query.
async fn query_collection(c: &Client, i: usize) -> Result<usize, String> {
    c.query()
        .table_name("grow")
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s(&format!("k{i}")))
        .consistent_read(true)
        .send()
        .await
        .map(|r| r.count() as usize)
        .map_err(|e| format!("{:?}", err_of(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_table_splits_under_writes_and_keeps_every_item() {
    let srv = splitting_server().await;
    grow_under_load(&srv.client, srv.router().expect("router")).await;
    srv.stop().await;
}

/// The same on three zones: each child's replicas start on the parent's
/// three nodes once each applied the split, each first led by its parent's
/// leader; the control plane then spreads the leaders over the zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_zone_table_splits_under_writes_and_keeps_every_item() {
    let zones: Vec<String> = ["az-a", "az-b", "az-c"].map(String::from).to_vec();
    let c = TestCluster::start_in("splits", &zones, 1, TEST_REPLACE_AFTER_MS, SPLIT_BYTES).await;
    grow_under_load(&c.client, c.router()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let led = leaders_per_node(c.router(), &partitions(c.router())).await;
        let (most, least) = (led.iter().max(), led.iter().min());
        eprintln!("partitions led per node: {led:?}");
        if most.zip(least).is_some_and(|(m, l)| m - l <= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaders stayed gathered: {led:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.stop().await;
}

/// How many of `parts` each of nodes 1-3 says it leads.
async fn leaders_per_node(router: &Router, parts: &[PartitionMeta]) -> Vec<usize> {
    let mut led = Vec::new();
    for id in 1..=3 {
        let groups = router.node_status(id).await.unwrap_or_default();
        let mine = groups
            .iter()
            .filter(|g| g.leader == Some(id) && parts.iter().any(|p| p.group == g.group));
        led.push(mine.count());
    }
    led
}

/// Between a split's apply in the partition's log and its record in the
/// catalog, the parent refuses keys of the child's range: writes, reads and
/// scans routed on the old map wait that window out (the router retries
/// on the newer map) and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_out_the_window_between_a_split_and_its_record() {
    use dynaraft_storage::{Command, Outcome};
    let srv = TestServer::start_node(TestServer::node_config(None), api_config()).await;
    create_table(&srv.client, "grow", Some(("sk", ScalarAttributeType::N))).await;
    for i in 0..40 {
        assert_eq!(put_collection(&srv.client, i).await, 0);
    }
    let router = srv.router().expect("embedded router").clone();
    let parent = partitions(srv.router().expect("router"))[0].clone();
    let at = 1u64 << 63;
    let begin = Command::BeginSplit {
        table: "grow".into(),
        index: None,
        group: parent.group,
        at,
    };
    let Outcome::Table(meta) = router.change_catalog(begin).await.expect("begin") else {
        panic!("begin refused");
    };
    let child = meta.partitions[0].splitting.expect("pending").child;
    let split = Command::Split {
        at,
        child,
        index_partition: false,
        tally: None,
    };
    let applied = router
        .propose_at("grow", None, 0, split)
        .await
        .expect("split");
    let Outcome::Sequence(closed_at) = applied else {
        panic!("split refused: {applied:?}");
    };
    // The window is open: the map still has one partition.
    assert_eq!(partitions(srv.router().expect("router")).len(), 1);
    let finisher = {
        let router = router.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let done = Command::FinishSplit {
                table: "grow".into(),
                index: None,
                group: parent.group,
                first: None,
                closed_at: Some(closed_at),
            };
            router.change_catalog(done).await.expect("finish")
        })
    };
    let once = without_retries(&srv.client);
    let (c1, c2) = (once.clone(), once.clone());
    let writes = tokio::spawn(async move {
        let mut failed = 0;
        for i in 40..60 {
            failed += put_collection(&c1, i).await;
        }
        failed
    });
    let scan = tokio::spawn(async move { scan_all(&c2, "grow", None).await.len() });
    let mut found = 0;
    for i in 0..40 {
        found += query_collection(&once, i)
            .await
            .expect("query in the window");
    }
    assert_eq!(found, 40 * PER_KEY);
    assert_eq!(writes.await.expect("writes"), 0);
    assert!(scan.await.expect("scan") >= 40 * PER_KEY);
    finisher.await.expect("finisher");
    let parts = partitions(srv.router().expect("router"));
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[1].group, parts[1].hash_lo), (child, at));
    assert_eq!(
        scan_all(&srv.client, "grow", None).await.len(),
        60 * PER_KEY
    );
    srv.stop().await;
}

/// `dynaraft admin split` refuses what cannot be split, with the reason;
/// a split it begins is finished by the control plane's leader, and
/// `dynaraft admin partitions` shows both halves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_splits_refuse_clearly_and_finish_through_the_control_plane() {
    use dynaraft_cluster::admin::{self, SplitError};
    let c = TestCluster::start("admin-split", 3, 1).await;
    create_table(&c.client, "grow", Some(("sk", ScalarAttributeType::N))).await;
    let refused = |r: Result<String, SplitError>| match r {
        Err(SplitError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let why =
        refused(admin::split(&Default::default(), &c.members, "nope", None, None, None).await);
    assert!(why.contains("does not exist"), "{why}");
    let why =
        refused(admin::split(&Default::default(), &c.members, "grow", None, None, None).await);
    assert!(why.contains("fewer than two partition-key values"), "{why}");
    assert_eq!(put_collection(&c.client, 0).await, 0);
    let why =
        refused(admin::split(&Default::default(), &c.members, "grow", None, None, None).await);
    assert!(why.contains("fewer than two partition-key values"), "{why}");
    let why = refused(
        admin::split(
            &Default::default(),
            &c.members,
            "grow",
            Some("byx"),
            None,
            None,
        )
        .await,
    );
    assert!(why.contains("no global index"), "{why}");
    for i in 1..20 {
        assert_eq!(put_collection(&c.client, i).await, 0);
    }
    let why = refused(
        admin::split(
            &Default::default(),
            &c.members,
            "grow",
            None,
            Some(999),
            None,
        )
        .await,
    );
    assert!(why.contains("no partition 999"), "{why}");
    let said = admin::split(&Default::default(), &c.members, "grow", None, None, None)
        .await
        .expect("split begins");
    assert!(said.contains("begun"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while partitions(c.router()).len() < 2 {
        assert!(Instant::now() < deadline, "the split was never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = admin::partitions(&Default::default(), &c.members)
        .await
        .expect("partitions");
    let grow: Vec<_> = rows.iter().filter(|r| r.table == "grow").collect();
    assert_eq!(grow.len(), 2);
    assert_eq!(grow[1].parent, Some(grow[0].group));
    assert_eq!(grow[0].hash_to.as_ref(), Some(&grow[1].hash_from));
    let items: u64 = grow.iter().map(|r| r.items.expect("stats")).sum();
    assert_eq!(items, 20 * PER_KEY as u64);
    assert!(admin::render_partitions(&rows).contains(&grow[1].hash_from));
    assert_eq!(scan_all(&c.client, "grow", None).await.len(), 20 * PER_KEY);
    c.stop().await;
}

/// Indexes across splits: a table with a local and a global index splits
/// (and so do the global index's partitions) under writes; the local index
/// answers every collection, and the global index converges to exactly
/// the table's items, fed by parents and children alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_global_indexes_follow_splits() {
    use aws_sdk_dynamodb::types::*;
    let srv = splitting_server().await;
    let client = without_retries(&srv.client);
    use dynaraft_tests::schema::{all, attr, key};
    let all = all();
    client
        .create_table()
        .table_name("grow")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::N))
        .attribute_definitions(attr("n", ScalarAttributeType::N))
        .attribute_definitions(attr("bucket", ScalarAttributeType::S))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("by_n")
                .key_schema(key("pk", KeyType::Hash))
                .key_schema(key("n", KeyType::Range))
                .projection(all.clone())
                .build()
                .expect("lsi"),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_bucket")
                .key_schema(key("bucket", KeyType::Hash))
                .key_schema(key("n", KeyType::Range))
                .projection(all)
                .build()
                .expect("gsi"),
        )
        .send()
        .await
        .expect("create table");
    const KEYS: usize = 300;
    for i in 0..KEYS {
        for sk in 0..PER_KEY {
            client
                .put_item()
                .table_name("grow")
                .item("pk", s(&format!("k{i}")))
                .item("sk", n(&sk.to_string()))
                .item("n", n(&(i * PER_KEY + sk).to_string()))
                .item("bucket", s(&format!("b{}", i % 40)))
                .item("pad", s(&"x".repeat(100)))
                .send()
                .await
                .unwrap_or_else(|e| panic!("put k{i}/{sk}: {:?}", err_of(&e)));
        }
    }
    let router = srv.router().expect("router");
    let index_parts = || grow(router).global_indexes[0].partitions.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while partitions(router).len() < 8 || index_parts() < 4 {
        assert!(
            Instant::now() < deadline,
            "{} table and {} index partitions",
            partitions(router).len(),
            index_parts()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    eprintln!(
        "{} table partitions, {} index partitions",
        partitions(router).len(),
        index_parts()
    );
    for i in (0..KEYS).step_by(7) {
        let r = client
            .query()
            .table_name("grow")
            .index_name("by_n")
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(&format!("k{i}")))
            .send()
            .await
            .expect("lsi query");
        assert_eq!(r.count() as usize, PER_KEY, "k{i} by_n");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = scan_all(&client, "grow", Some("by_bucket")).await.len();
        if entries == KEYS * PER_KEY {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "by_bucket has {entries} of {} entries",
            KEYS * PER_KEY
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("index converged {:?} after the splits", started.elapsed());
    let r = client
        .query()
        .table_name("grow")
        .index_name("by_bucket")
        .key_condition_expression("#b = :b")
        .expression_attribute_names("#b", "bucket")
        .expression_attribute_values(":b", s("b7"))
        .send()
        .await
        .expect("gsi query");
    let b7 = (0..KEYS).filter(|i| i % 40 == 7).count();
    assert_eq!(r.count() as usize, b7 * PER_KEY);
    // Every split handed its counters over (most from a tally made on a
    // snapshot outside the apply): the table's, its local index's and its
    // global index's ItemCount are what was written, once the splits still
    // in flight are recorded, and each table partition counts exactly the
    // items whose key hashes into its range.
    let want = Some((KEYS * PER_KEY) as i64);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = describe_grow(&client).await;
        let counts = (
            t.item_count(),
            t.local_secondary_indexes()[0].item_count(),
            t.global_secondary_indexes()[0].item_count(),
        );
        if counts == (want, want, want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ItemCount of the table, by_n, by_bucket: {counts:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let schema = grow(router).key_schema().expect("key schema");
    let hashes: Vec<u64> = (0..KEYS)
        .map(|i| {
            let pk = dynaraft_model::AttributeValue::S(format!("k{i}"));
            let prefix = schema.partition_prefix(&[&pk]).expect("prefix");
            dynaraft_storage::catalog::key_hash(&prefix)
        })
        .collect();
    let parts = partitions(router);
    for (j, p) in parts.iter().enumerate() {
        let hi = parts.get(j + 1).map(|next| next.hash_lo);
        let owned = hashes
            .iter()
            .filter(|h| **h >= p.hash_lo && hi.is_none_or(|hi| **h < hi))
            .count();
        let stats = router
            .partition_stats("grow", None, p)
            .await
            .expect("stats");
        assert_eq!(
            stats.count as usize,
            owned * PER_KEY,
            "partition {} ({:#x}..{hi:?})",
            p.group,
            p.hash_lo
        );
    }
    srv.stop().await;
}

/// Split load of [`a_hot_table_splits_and_a_hot_key_is_reported`], in
/// requests per second: low, so a debug build's few readers exceed it.
const LOAD_OPS_PER_S: u64 = 30;
/// Keys the spread-out readers read.
const SPREAD_KEYS: usize = 64;

/// Reads `keys(i)` of `table` in a loop until `stop`; the errors.
fn reader(
    c: &Client,
    table: &'static str,
    keys: fn(usize) -> String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let c = c.clone();
    tokio::spawn(async move {
        let (mut i, mut errors) = (0usize, 0);
        while !stop.load(Ordering::Relaxed) {
            let r = c
                .get_item()
                .table_name(table)
                .key("pk", s(&keys(i)))
                .send()
                .await;
            if let Err(e) = r {
                eprintln!("get {table}: {:?}", err_of(&e));
                errors += 1;
            }
            i = i.wrapping_mul(31).wrapping_add(7) % 1_000_003;
        }
        errors
    })
}

/// The hot table's key of read `i`: one in ten reads goes to one of a few
/// other keys, the rest to one key.
fn hot_key(i: usize) -> String {
    match i % 10 {
        0 => format!("fan{}", i % 7),
        _ => "celebrity".to_string(),
    }
}

/// Splits by heat: a table whose reads spread over many keys splits where
/// its sampled load halves once the load lasted; a table whose reads go
/// mostly to one key does not split (a split cannot cool one key), and its
/// leader's load report names that key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_table_splits_and_a_hot_key_is_reported() {
    let node_cfg = EmbeddedConfig {
        split: SplitPolicy {
            load_ops_per_s: LOAD_OPS_PER_S,
            ..SplitPolicy::default()
        },
        ..TestServer::node_config(None)
    };
    let srv = TestServer::start_node(node_cfg, api_config()).await;
    let client = without_retries(&srv.client);
    let router = srv.router().expect("router");
    for table in ["spread", "hot"] {
        create_table(&client, table, None).await;
    }
    for i in 0..SPREAD_KEYS {
        let put = client
            .put_item()
            .table_name("spread")
            .item("pk", s(&format!("k{i}")));
        put.send().await.expect("put");
    }
    client
        .put_item()
        .table_name("hot")
        .item("pk", s("celebrity"))
        .send()
        .await
        .expect("put");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .flat_map(|_| {
            [
                reader(
                    &client,
                    "spread",
                    |i| format!("k{}", i % SPREAD_KEYS),
                    stop.clone(),
                ),
                reader(&client, "hot", hot_key, stop.clone()),
            ]
        })
        .collect();
    let parts = |t: &str| {
        router
            .catalog()
            .get()
            .tables
            .get(t)
            .expect("table")
            .meta
            .partitions
            .clone()
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    while parts("spread").len() < 2 {
        assert!(Instant::now() < deadline, "spread never split for load");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("spread split for load after {:?}", started.elapsed());
    // The hot table's load lasted as long as the split one's, and then two
    // more split checks: it is over the split load, yet not split.
    let hot = parts("hot")[0].clone();
    let load = loop {
        let load = router
            .partition_stats("hot", None, &hot)
            .await
            .expect("stats")
            .load;
        if load.sustained_ops_per_s >= LOAD_OPS_PER_S {
            break load;
        }
        assert!(Instant::now() < deadline, "hot load stayed at {load:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("hot load {load:?}");
    tokio::time::sleep(Duration::from_millis(
        3 * dynaraft_cluster::split::SPLIT_CHECK_MS,
    ))
    .await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert_eq!(r.await.expect("reader"), 0, "client errors");
    }
    assert_eq!(
        parts("hot").len(),
        1,
        "a hot key's partition split: {load:?}"
    );
    let schema = dynaraft_model::KeySchema::simple(
        dynaraft_model::KeyAttr {
            name: "pk".into(),
            ty: dynaraft_model::ScalarType::S,
        },
        None,
    );
    let item: dynaraft_model::Item = [(
        "pk".to_string(),
        dynaraft_model::AttributeValue::S("celebrity".into()),
    )]
    .into();
    let key = schema.storage_key(&item).expect("storage key");
    assert_eq!(
        load.hot_key,
        Some(dynaraft_storage::catalog::key_hash(&key))
    );
    // The split cut no key: each half holds whole keys, and all of them.
    let halves = parts("spread");
    let mut total = 0;
    for p in &halves {
        let stats = router
            .partition_stats("spread", None, p)
            .await
            .expect("stats");
        assert!(stats.count > 0, "an empty half: {halves:?}");
        total += stats.count;
    }
    assert_eq!(total as usize, SPREAD_KEYS);
    assert_eq!(scan_all(&client, "spread", None).await.len(), SPREAD_KEYS);
    srv.stop().await;
}

/// Sets `v` of every item of collections `0..keys` to `v`.
async fn set_all(c: &Client, keys: usize, v: u64) {
    for i in 0..keys {
        for sk in 0..PER_KEY {
            c.update_item()
                .table_name("grow")
                .key("pk", s(&format!("k{i}")))
                .key("sk", n(&sk.to_string()))
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", n(&v.to_string()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("update k{i}/{sk}: {:?}", err_of(&e)));
        }
    }
}

/// Splits `group` of "grow" through the control plane and waits until the
/// map shows the child; the child's group.
async fn split_and_wait(c: &TestCluster, group: u64) -> u64 {
    use dynaraft_cluster::admin;
    let before = partitions(c.router()).len();
    let opts = Default::default();
    admin::split(&opts, &c.members, "grow", None, Some(group), None)
        .await
        .unwrap_or_else(|e| panic!("split of {group}: {e:?}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let parts = partitions(c.router());
        if parts.len() > before {
            return parts
                .iter()
                .find(|p| p.parent == Some(group))
                .map(|p| p.group)
                .expect("the child names its parent");
        }
        assert!(
            Instant::now() < deadline,
            "the split of {group} never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether node `id` holds a voting replica of every one of `groups`,
/// applied as far as the group's leader.
async fn caught_up(c: &TestCluster, id: u64, groups: &[u64]) -> bool {
    let Ok(mine) = c.router().node_status(id).await else {
        return false;
    };
    for &g in groups {
        let Some(here) = mine.iter().find(|s| s.group == g) else {
            return false;
        };
        let Some(leader) = here.leader else {
            return false;
        };
        let Ok(theirs) = c.router().node_status(leader).await else {
            return false;
        };
        let Some(led) = theirs.iter().find(|s| s.group == g) else {
            return false;
        };
        if !led.voters.contains(&id) || here.applied_index < led.applied_index {
            return false;
        }
    }
    true
}

/// Snapshots `group`'s replica on node index `i` and waits until its log's
/// start is purged: a replica joining later is sent a snapshot.
async fn purge_log_start(c: &TestCluster, i: usize, group: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let g = loop {
        // A replica of a table just made starts with the node's next
        // reconciliation.
        if let Some(g) = c.node(i).and_then(|n| n.host.group(group)) {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "node {} holds no replica of {group}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.log_progress().1.is_none() {
        assert!(Instant::now() < deadline, "no purge on node {}", i + 1);
        g.compact().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes node `id` the leader of each of `groups`, asking the current
/// leader to hand over.
async fn lead_from(c: &TestCluster, id: u64, groups: &[u64]) {
    for &g in groups {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = c.router().node_status(id).await.unwrap_or_default();
            let leader = status.iter().find(|s| s.group == g).and_then(|s| s.leader);
            match leader {
                Some(l) if l == id => break,
                Some(l) => {
                    let _ = c.router().transfer_leader(l, g, id).await;
                }
                None => {}
            }
            assert!(
                Instant::now() < deadline,
                "node {id} never took the lead of {g}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The items of collections `0..keys`, read consistently, that do not
/// hold `v` and their 100-byte `pad`.
async fn wrong_items(c: &Client, keys: usize, v: u64) -> Vec<String> {
    let want = v.to_string();
    let mut wrong = Vec::new();
    for i in 0..keys {
        for sk in 0..PER_KEY {
            let got = c
                .get_item()
                .table_name("grow")
                .key("pk", s(&format!("k{i}")))
                .key("sk", n(&sk.to_string()))
                .consistent_read(true)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get k{i}/{sk}: {:?}", err_of(&e)));
            let item = got.item();
            let got_v = item.and_then(|it| it.get("v")).and_then(|v| v.as_n().ok());
            let pad = item
                .and_then(|it| it.get("pad"))
                .and_then(|p| p.as_s().ok());
            if got_v != Some(&want) || pad.map(String::len) != Some(100) {
                wrong.push(format!(
                    "k{i}/{sk}: v {got_v:?}, pad {:?}",
                    pad.map(String::len)
                ));
            }
        }
    }
    wrong
}

/// A node cut off while its partition split twice in a chain (the child
/// split again) comes back with every item as it was last written: its
/// replica of a child must not start on the node's stale copy of the range
/// while an ancestor's replica there still applies older writes to it (the
/// chaos harness saw a transfer half applied and an account item reborn
/// empty this way), nor on a range a snapshot of the parent (which carries
/// only the parent's narrowed range) left empty. Writes land in each
/// generation's log: before the splits, between them, and after; then node
/// 3 leads every partition and every item is read from it.
async fn cut_off_through_chained_splits(name: &str, compact_parent: bool) {
    const KEYS: usize = 30;
    let mut c = TestCluster::start(name, 3, 1).await;
    create_table(&c.client, "grow", Some(("sk", ScalarAttributeType::N))).await;
    for i in 0..KEYS {
        assert_eq!(put_collection(&c.client, i).await, 0);
    }
    set_all(&c.client, KEYS, 0).await;
    c.kill(2).await;
    set_all(&c.client, KEYS, 1).await;
    let first = partitions(c.router())[0].group;
    let child = split_and_wait(&c, first).await;
    set_all(&c.client, KEYS, 2).await;
    let grandchild = split_and_wait(&c, child).await;
    set_all(&c.client, KEYS, 3).await;
    if compact_parent {
        // Node 3's replica of the first partition will be sent a snapshot
        // taken after the split, not the entries it missed.
        for i in 0..2 {
            purge_log_start(&c, i, first).await;
        }
    }
    c.restart(2).await;
    let groups = [first, child, grandchild];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !caught_up(&c, 3, &groups).await {
        assert!(
            Instant::now() < deadline,
            "node 3 never caught up on {groups:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lead_from(&c, 3, &groups).await;
    let wrong = wrong_items(&c.client, KEYS, 3).await;
    assert!(wrong.is_empty(), "read from node 3: {wrong:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_through_chained_splits_comes_back_with_every_write() {
    cut_off_through_chained_splits("split-chain", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sent_a_snapshot_past_the_splits_comes_back_with_every_write() {
    cut_off_through_chained_splits("split-chain-snap", true).await;
}

/// A split child's replica moved to another node (a node added to a zone
/// takes its share, and a node that goes down has its replicas moved to
/// another of its zone), after the parent's log was compacted so that the
/// parent's replica there is sent a snapshot, which carries only its own
/// narrowed range: it joins from a snapshot of the child with every item.
/// The child's log starts after the split, so a replica fed that log from
/// its start would hold only what was written since. The new node then
/// leads every partition with another zone down, and every item is read
/// from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_childs_replica_moved_to_a_new_node_holds_every_item() {
    const KEYS: usize = 30;
    let zones: Vec<String> = ["az-a", "az-b", "az-c"].map(String::from).into();
    let mut c = TestCluster::start_in("split-move", &zones, 1, 2_000, SPLIT_DEFAULT).await;
    create_table(&c.client, "grow", Some(("sk", ScalarAttributeType::N))).await;
    for i in 0..KEYS {
        assert_eq!(put_collection(&c.client, i).await, 0);
    }
    let first = partitions(c.router())[0].group;
    let child = split_and_wait(&c, first).await;
    set_all(&c.client, KEYS, 1).await;
    for i in 0..3 {
        purge_log_start(&c, i, first).await;
    }
    let added = c.add_node("az-a").await as u64 + 1;
    // Node 1's replicas that the new node did not take move to it once
    // node 1 has been down for the replace-after time.
    c.kill(0).await;
    let groups = [first, child];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !caught_up(&c, added, &groups).await {
        assert!(
            Instant::now() < deadline,
            "node {added} never took node 1's replicas"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With another zone down, the new replicas lead and answer with one
    // other.
    c.kill(1).await;
    lead_from(&c, added, &groups).await;
    let wrong = wrong_items(&c.client, KEYS, 1).await;
    assert!(wrong.is_empty(), "read from node {added}: {wrong:?}");
    c.stop().await;
}
