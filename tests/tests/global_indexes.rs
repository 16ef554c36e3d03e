//! Global secondary indexes through the Rust SDK. Checks the Developer
//! Guide's "Using Global Secondary Indexes in DynamoDB" (GSI.html): any
//! attributes as the index key, projections, sparse indexes, eventually
//! consistent reads only, Query and Scan with pagination, key types checked
//! on writes; and "Managing Global Secondary Indexes"
//! (GSI.OnlineOps.html): UpdateTable Create with IndexStatus CREATING and
//! Backfilling while writes continue, then ACTIVE, and Delete.
//!
//! Tables use three partitions and indexes three of their own, so entries
//! move between index partitions when their key changes.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::*;
use dynaraft_api::ApiConfig;
use dynaraft_tests::av::*;
use dynaraft_tests::{TestServer, err_of, scan_all};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// How long an eventually consistent index may take to show a write.
const CONVERGE_TIMEOUT_MS: u64 = 20_000;

async fn server() -> TestServer {
    let cfg = ApiConfig {
        partitions_per_table: 3,
        ..TestServer::config()
    };
    TestServer::start_config(None, cfg).await
}

fn attr(name: &str, ty: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ty)
        .build()
        .expect("attribute")
}

fn key(name: &str, ty: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(ty)
        .build()
        .expect("key")
}

fn projection(ty: ProjectionType, non_key: &[&str]) -> Projection {
    let mut p = Projection::builder().projection_type(ty);
    for a in non_key {
        p = p.non_key_attributes(*a);
    }
    p.build()
}

fn gsi(name: &str, hash: &str, range: Option<&str>, p: Projection) -> GlobalSecondaryIndex {
    let mut b = GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .projection(p);
    if let Some(r) = range {
        b = b.key_schema(key(r, KeyType::Range));
    }
    b.build().expect("gsi")
}

/// `orders`: key `id`; `by_status` (status, total; INCLUDE customer) and
/// `by_customer` (customer; KEYS_ONLY).
async fn create_orders(c: &Client) {
    use ScalarAttributeType::{N, S};
    c.create_table()
        .table_name("orders")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("id", S))
        .attribute_definitions(attr("status", S))
        .attribute_definitions(attr("total", N))
        .attribute_definitions(attr("customer", S))
        .key_schema(key("id", KeyType::Hash))
        .global_secondary_indexes(gsi(
            "by_status",
            "status",
            Some("total"),
            projection(ProjectionType::Include, &["customer"]),
        ))
        .global_secondary_indexes(gsi(
            "by_customer",
            "customer",
            None,
            projection(ProjectionType::KeysOnly, &[]),
        ))
        .send()
        .await
        .expect("create orders");
}

async fn put(c: &Client, table: &str, item: Item) {
    c.put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put");
}

fn order(id: usize, status: Option<&str>, total: usize, customer: &str) -> Item {
    let mut i = HashMap::from([
        ("id".to_string(), s(&format!("o{id:03}"))),
        ("total".to_string(), n(&total.to_string())),
        ("customer".to_string(), s(customer)),
        ("note".to_string(), s("not projected")),
    ]);
    if let Some(st) = status {
        i.insert("status".into(), s(st));
    }
    i
}

/// Every item of a Query on index `index` with `status = :s`, page by
/// page (Limit `page`), in order.
async fn query_status(c: &Client, index: &str, status: &str, page: i32) -> Vec<Item> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let r = c
            .query()
            .table_name("orders")
            .index_name(index)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(status))
            .limit(page)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query");
        out.extend(r.items().iter().cloned());
        match r.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => return out,
        }
    }
}

fn ids(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i.get("id") {
            Some(AttributeValue::S(v)) => v.clone(),
            other => panic!("no id in {other:?}"),
        })
        .collect()
}

/// Polls `f` until it returns `Some`, failing after [`CONVERGE_TIMEOUT_MS`].
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CONVERGE_TIMEOUT_MS);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_defined_at_creation_follow_writes() {
    let t = server().await;
    let c = &t.client;
    create_orders(c).await;
    // Seven open orders with distinct totals, five closed, three without a
    // status (absent from by_status: a sparse index).
    for i in 0..15 {
        let status = match i {
            0..7 => Some("open"),
            7..12 => Some("closed"),
            _ => None,
        };
        put(
            c,
            "orders",
            order(i, status, 100 - i, &format!("c{}", i % 2)),
        )
        .await;
    }
    let open = eventually("seven open orders", async || {
        let got = query_status(c, "by_status", "open", 2).await;
        (got.len() == 7).then_some(got)
    })
    .await;
    // Sorted by total ascending: o006 (94) first, o000 (100) last.
    assert_eq!(
        ids(&open),
        ["o006", "o005", "o004", "o003", "o002", "o001", "o000"]
    );
    // INCLUDE customer: keys of table and index plus customer, not note.
    let mut names: Vec<&str> = open[0].keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["customer", "id", "status", "total"]);

    // A status change moves the entry; a delete removes it; removing the
    // attribute takes the item out of the index.
    c.update_item()
        .table_name("orders")
        .key("id", s("o000"))
        .update_expression("SET #s = :c")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":c", s("closed"))
        .send()
        .await
        .expect("update");
    c.delete_item()
        .table_name("orders")
        .key("id", s("o001"))
        .send()
        .await
        .expect("delete");
    c.update_item()
        .table_name("orders")
        .key("id", s("o002"))
        .update_expression("REMOVE #s")
        .expression_attribute_names("#s", "status")
        .send()
        .await
        .expect("remove");
    eventually("the changes in by_status", async || {
        let open = ids(&query_status(c, "by_status", "open", 100).await);
        let closed = ids(&query_status(c, "by_status", "closed", 100).await);
        let want_open = ["o006", "o005", "o004", "o003"];
        let want_closed = ["o011", "o010", "o009", "o008", "o007", "o000"];
        (open == want_open && closed == want_closed).then_some(())
    })
    .await;

    // KEYS_ONLY index by customer, and a Scan of it across partitions.
    let scanned = eventually("by_customer scan", async || {
        let r = c
            .scan()
            .table_name("orders")
            .index_name("by_customer")
            .send()
            .await
            .expect("scan");
        (r.count() == 14).then_some(r)
    })
    .await;
    for i in scanned.items() {
        let mut names: Vec<&str> = i.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["customer", "id"]);
    }

    // DescribeTable: both indexes ACTIVE, with their counts.
    let d = c
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("describe");
    let table = d.table().expect("table");
    let by_name: BTreeMap<&str, &GlobalSecondaryIndexDescription> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| (g.index_name().unwrap_or(""), g))
        .collect();
    assert_eq!(by_name.len(), 2);
    let status = by_name["by_status"];
    assert_eq!(status.index_status(), Some(&IndexStatus::Active));
    assert_eq!(status.item_count(), Some(10));
    assert_eq!(by_name["by_customer"].item_count(), Some(14));
    assert!(
        status
            .index_arn()
            .is_some_and(|a| a.ends_with("table/orders/index/by_status"))
    );

    // The index lag metric: one gauge per base partition, back to zero
    // once everything is delivered; the delivered counter saw every write.
    eventually("index lag of zero", async || {
        let (code, text) = t.get("/metrics");
        assert_eq!(code, 200);
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("dynaraft_index_lag_records{") && l.contains("table=\"orders\"")
            })
            .collect();
        (lags.len() == 3 && lags.iter().all(|l| l.ends_with(" 0"))).then_some(())
    })
    .await;
    let (_, text) = t.get("/metrics");
    let delivered: f64 = text
        .lines()
        .filter(|l| l.starts_with("dynaraft_index_records_delivered_total{table=\"orders\"}"))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<f64>().ok())
        .sum();
    assert!(
        delivered >= 18.0,
        "delivered {delivered} records for 18 writes"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_index_reads_and_writes_are_validated() {
    let t = server().await;
    let c = &t.client;
    create_orders(c).await;
    // Index key of the wrong type: refused, nothing written.
    let mut bad = order(1, Some("open"), 5, "c1");
    bad.insert("total".into(), s("five"));
    let e = c
        .put_item()
        .table_name("orders")
        .set_item(Some(bad))
        .send()
        .await
        .expect_err("wrong index key type");
    assert_eq!(
        err_of(&e),
        (
            "ValidationException".into(),
            "One or more parameter values were invalid: Type mismatch for Index Key total Expected: N Actual: S IndexName: by_status".into()
        )
    );
    let got = c
        .get_item()
        .table_name("orders")
        .key("id", s("o001"))
        .send()
        .await
        .expect("get");
    assert!(got.item().is_none());
    // An update producing a wrong-typed index key is refused too.
    put(c, "orders", order(2, Some("open"), 5, "c1")).await;
    let e = c
        .update_item()
        .table_name("orders")
        .key("id", s("o002"))
        .update_expression("SET customer = :n")
        .expression_attribute_values(":n", n("7"))
        .send()
        .await
        .expect_err("wrong type by update");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Type mismatch for Index Key customer Expected: S Actual: N IndexName: by_customer"
    );
    // Strongly consistent reads of a global index are not supported.
    let e = c
        .query()
        .table_name("orders")
        .index_name("by_status")
        .key_condition_expression("#s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", s("open"))
        .consistent_read(true)
        .send()
        .await
        .expect_err("consistent read");
    assert_eq!(
        err_of(&e).1,
        "Consistent reads are not supported on global secondary indexes"
    );
    // ALL_ATTRIBUTES from an index that does not project everything.
    let e = c
        .scan()
        .table_name("orders")
        .index_name("by_customer")
        .select(Select::AllAttributes)
        .send()
        .await
        .expect_err("all attributes");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported for global secondary index by_customer because its projection type is not ALL"
    );
    t.stop().await;
}

/// Items by id: an index's entries, or (`expected`) the base items having
/// both of the index's key attributes `grp` and `rank`.
fn by_id(items: Vec<Item>, expected: bool) -> BTreeMap<String, Item> {
    items
        .into_iter()
        .filter(|i| !expected || (i.contains_key("grp") && i.contains_key("rank")))
        .map(|i| (ids(std::slice::from_ref(&i)).remove(0), i))
        .collect()
}

/// One step of the background writer: put, move (change grp), drop the
/// index key, or delete, chosen by `step`.
async fn churn(c: &Client, step: usize) {
    let id = format!("o{:03}", (step * 7) % 400);
    let r = match step % 4 {
        0 | 1 => c
            .put_item()
            .table_name("items")
            .item("id", s(&id))
            .item("grp", s(&format!("g{}", step % 5)))
            .item("rank", n(&step.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        2 => c
            .update_item()
            .table_name("items")
            .key("id", s(&id))
            .update_expression("REMOVE grp")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        _ => c
            .delete_item()
            .table_name("items")
            .key("id", s(&id))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
    };
    r.expect("churn write");
}

/// Managing Global Secondary Indexes: an index created with UpdateTable on
/// a table that holds items and keeps being written to is CREATING (with
/// Backfilling) and then ACTIVE, and ends equal to a full scan of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_added_online_backfills_while_writes_continue() {
    use ScalarAttributeType::{N, S};
    let t = server().await;
    let c = &t.client;
    c.create_table()
        .table_name("items")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("id", S))
        .key_schema(key("id", KeyType::Hash))
        .send()
        .await
        .expect("create items");
    for i in 0..300 {
        let mut item = HashMap::from([
            ("id".to_string(), s(&format!("o{i:03}"))),
            ("rank".to_string(), n(&i.to_string())),
        ]);
        if i % 3 != 0 {
            item.insert("grp".into(), s(&format!("g{}", i % 5)));
        }
        put(c, "items", item).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut step = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                churn(&c, step).await;
                step += 1;
            }
            step
        })
    };
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name("by_grp")
        .key_schema(key("grp", KeyType::Hash))
        .key_schema(key("rank", KeyType::Range))
        .projection(projection(ProjectionType::All, &[]))
        .build()
        .expect("create action");
    let r = c
        .update_table()
        .table_name("items")
        .attribute_definitions(attr("grp", S))
        .attribute_definitions(attr("rank", N))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder().create(create).build(),
        )
        .send()
        .await
        .expect("update table");
    let d = r.table_description().expect("description");
    assert_eq!(d.table_status(), Some(&TableStatus::Updating));
    let g = &d.global_secondary_indexes()[0];
    assert_eq!(g.index_status(), Some(&IndexStatus::Creating));
    assert_eq!(g.backfilling(), Some(true));
    let attrs: Vec<&str> = d
        .attribute_definitions()
        .iter()
        .map(|a| a.attribute_name())
        .collect();
    assert_eq!(attrs, ["id", "grp", "rank"]);
    eventually("the index to become ACTIVE", async || {
        let d = c
            .describe_table()
            .table_name("items")
            .send()
            .await
            .expect("describe");
        let t = d.table()?;
        let active =
            t.global_secondary_indexes().first()?.index_status() == Some(&IndexStatus::Active);
        (active && t.table_status() == Some(&TableStatus::Active)).then_some(())
    })
    .await;
    // Writes continue past the backfill, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let steps = writer.await.expect("writer");
    assert!(steps > 0, "the writer made no writes");
    let want = by_id(scan_all(c, "items", None).await, true);
    assert!(want.len() > 100, "only {} items indexed", want.len());
    eventually("the index to equal the table", async || {
        (by_id(scan_all(c, "items", Some("by_grp")).await, false) == want).then_some(())
    })
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_table_index_actions_follow_dynamodb_rules() {
    let t = server().await;
    let c = &t.client;
    create_orders(c).await;
    let delete = |name: &str| {
        GlobalSecondaryIndexUpdate::builder()
            .delete(
                DeleteGlobalSecondaryIndexAction::builder()
                    .index_name(name)
                    .build()
                    .expect("delete"),
            )
            .build()
    };
    let e = c
        .update_table()
        .table_name("orders")
        .global_secondary_index_updates(delete("by_status"))
        .global_secondary_index_updates(delete("by_customer"))
        .send()
        .await
        .expect_err("two deletes");
    assert_eq!(
        err_of(&e),
        (
            "LimitExceededException".into(),
            "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table".into()
        )
    );
    let e = c
        .update_table()
        .table_name("orders")
        .global_secondary_index_updates(delete("by_status"))
        .global_secondary_index_updates(delete("by_status"))
        .send()
        .await
        .expect_err("same index twice");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Only one global secondary index update per index is allowed simultaneously. Index: by_status"
    );
    let e = c
        .update_table()
        .table_name("orders")
        .global_secondary_index_updates(delete("nope"))
        .send()
        .await
        .expect_err("unknown index");
    assert_eq!(err_of(&e).0, "ResourceNotFoundException");
    let r = c
        .update_table()
        .table_name("orders")
        .global_secondary_index_updates(delete("by_status"))
        .send()
        .await
        .expect("delete index");
    let names: Vec<&str> = r
        .table_description()
        .expect("description")
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    assert_eq!(names, ["by_customer"]);
    let e = c
        .query()
        .table_name("orders")
        .index_name("by_status")
        .key_condition_expression("#s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", s("open"))
        .send()
        .await
        .expect_err("deleted index");
    assert_eq!(
        err_of(&e).1,
        "The table does not have the specified index: by_status"
    );
    // The remaining index still follows writes.
    put(c, "orders", order(1, Some("open"), 5, "c9")).await;
    eventually("by_customer to show the write", async || {
        let r = c
            .query()
            .table_name("orders")
            .index_name("by_customer")
            .key_condition_expression("customer = :c")
            .expression_attribute_values(":c", s("c9"))
            .send()
            .await
            .expect("query");
        (r.count() == 1).then_some(())
    })
    .await;
    t.stop().await;
}

/// `matches`: key `id`; `by_round` has a multi-attribute key (partition
/// key tournament and region, sort key round (N) and bracket).
async fn create_matches(c: &Client) {
    use ScalarAttributeType::{N, S};
    let by_round = GlobalSecondaryIndex::builder()
        .index_name("by_round")
        .key_schema(key("tournament", KeyType::Hash))
        .key_schema(key("region", KeyType::Hash))
        .key_schema(key("round", KeyType::Range))
        .key_schema(key("bracket", KeyType::Range))
        .projection(projection(ProjectionType::All, &[]))
        .build()
        .expect("gsi");
    c.create_table()
        .table_name("matches")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("id", S))
        .attribute_definitions(attr("tournament", S))
        .attribute_definitions(attr("region", S))
        .attribute_definitions(attr("round", N))
        .attribute_definitions(attr("bracket", S))
        .key_schema(key("id", KeyType::Hash))
        .global_secondary_indexes(by_round)
        .send()
        .await
        .expect("create matches");
}

fn game(t: &str, region: &str, round: u32, bracket: Option<&str>) -> Item {
    let mut i = HashMap::from([
        (
            "id".to_string(),
            s(&format!(
                "{t}-{region}-{round}-{}",
                bracket.unwrap_or("none")
            )),
        ),
        ("tournament".to_string(), s(t)),
        ("region".to_string(), s(region)),
        ("round".to_string(), n(&round.to_string())),
    ]);
    if let Some(b) = bracket {
        i.insert("bracket".into(), s(b));
    }
    i
}

/// Ids of every item of a Query on `by_round` for tournament T1 in NA with
/// `extra` conditions on the sort key (values `:a`, `:b`), page by page.
async fn query_rounds(
    c: &Client,
    extra: &str,
    values: &[(&str, AttributeValue)],
    forward: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let mut q = c
            .query()
            .table_name("matches")
            .index_name("by_round")
            .key_condition_expression(format!("tournament = :t AND #r = :r{extra}"))
            .expression_attribute_names("#r", "region")
            .expression_attribute_values(":t", s("T1"))
            .expression_attribute_values(":r", s("NA"))
            .scan_index_forward(forward)
            .limit(4)
            .set_exclusive_start_key(start);
        for (k, v) in values {
            q = q.expression_attribute_values(*k, v.clone());
        }
        let r = q.send().await.expect("query by_round");
        out.extend(ids(r.items()));
        match r.last_evaluated_key() {
            Some(k) => {
                let mut names: Vec<&str> = k.keys().map(String::as_str).collect();
                names.sort();
                assert_eq!(names, ["bracket", "id", "region", "round", "tournament"]);
                start = Some(k.clone());
            }
            None => return out,
        }
    }
}

/// Multi-attribute keys (DynamoDB, November 2025): the partition key is the
/// tuple of its attributes, items sort by the sort-key attributes left to
/// right (each in its own type's order), a Query conditions the sort-key
/// attributes left to right, and an item missing any key attribute is not
/// in the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_attribute_keys_order_and_bound_queries_like_tuples() {
    let srv = server().await;
    let c = srv.client.clone();
    create_matches(&c).await;
    let d = c
        .describe_table()
        .table_name("matches")
        .send()
        .await
        .expect("describe");
    let gsi = &d.table().expect("table").global_secondary_indexes()[0];
    let schema: Vec<(String, String)> = gsi
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(
        schema,
        [
            ("tournament", "HASH"),
            ("region", "HASH"),
            ("round", "RANGE"),
            ("bracket", "RANGE")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for t in ["T1", "T2"] {
        for region in ["NA", "EU"] {
            for round in [10, 2, 1] {
                for bracket in ["UPPER", "LOWER"] {
                    put(&c, "matches", game(t, region, round, Some(bracket))).await;
                }
            }
        }
    }
    // Sparse: missing one sort-key attribute keeps the item out of the index.
    put(&c, "matches", game("T1", "NA", 2, None)).await;
    let all = [
        "T1-NA-1-LOWER",
        "T1-NA-1-UPPER",
        "T1-NA-2-LOWER",
        "T1-NA-2-UPPER",
        "T1-NA-10-LOWER",
        "T1-NA-10-UPPER",
    ];
    let got = eventually("the index to hold every game", async || {
        let got = query_rounds(&c, "", &[], true).await;
        (got.len() == all.len()).then_some(got)
    })
    .await;
    assert_eq!(
        got, all,
        "numeric rounds, then brackets, within the partition"
    );
    let mut reversed = all.to_vec();
    reversed.reverse();
    assert_eq!(query_rounds(&c, "", &[], false).await, reversed);
    let two = [(":a", n("2"))];
    assert_eq!(
        query_rounds(&c, " AND round = :a", &two, true).await,
        ["T1-NA-2-LOWER", "T1-NA-2-UPPER"]
    );
    assert_eq!(
        query_rounds(
            &c,
            " AND round = :a AND begins_with(bracket, :b)",
            &[two[0].clone(), (":b", s("UP"))],
            true
        )
        .await,
        ["T1-NA-2-UPPER"]
    );
    assert_eq!(
        query_rounds(
            &c,
            " AND round BETWEEN :a AND :b",
            &[two[0].clone(), (":b", n("10"))],
            true
        )
        .await,
        all[2..]
    );
    assert_eq!(
        query_rounds(&c, " AND round < :a", &two, true).await,
        all[..2]
    );
    assert_eq!(
        query_rounds(
            &c,
            " AND round = :a AND bracket > :b",
            &[two[0].clone(), (":b", s("LOWER"))],
            true
        )
        .await,
        ["T1-NA-2-UPPER"]
    );
    // The partition key is the whole tuple; the sort key goes left to right.
    let e = c
        .query()
        .table_name("matches")
        .index_name("by_round")
        .key_condition_expression("tournament = :t AND bracket = :b")
        .expression_attribute_values(":t", s("T1"))
        .expression_attribute_values(":b", s("UPPER"))
        .send()
        .await
        .expect_err("region missing");
    assert_eq!(err_of(&e).0, "ValidationException");
    let e = c
        .query()
        .table_name("matches")
        .index_name("by_round")
        .key_condition_expression("tournament = :t AND #r = :r AND bracket = :b")
        .expression_attribute_names("#r", "region")
        .expression_attribute_values(":t", s("T1"))
        .expression_attribute_values(":r", s("NA"))
        .expression_attribute_values(":b", s("UPPER"))
        .send()
        .await
        .expect_err("round skipped");
    assert_eq!(err_of(&e).0, "ValidationException");
    // Removing a key attribute takes the item out; restoring it brings it back.
    c.update_item()
        .table_name("matches")
        .key("id", s("T1-NA-1-LOWER"))
        .update_expression("REMOVE #r")
        .expression_attribute_names("#r", "region")
        .send()
        .await
        .expect("remove region");
    eventually("the entry to leave the index", async || {
        (query_rounds(&c, "", &[], true).await == all[1..]).then_some(())
    })
    .await;
}

/// In one process (the embedded mode, like DynamoDB Local) a global-index
/// read waits for the changes logged before it to be delivered, so a write
/// followed by an index read sees the write: moving an item between index
/// keys and reading both keys at once never shows it stale, thirty times
/// over (without the wait, the very first read missed the write in each of
/// three runs on this machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_read_after_a_write_in_one_process_sees_it() {
    let srv = server().await;
    let c = srv.client.clone();
    create_orders(&c).await;
    let status_ids = async |st: &str| ids(&query_status(&c, "by_status", st, 100).await);
    for round in 0..30 {
        let (from, to) = if round % 2 == 0 {
            ("open", "shipped")
        } else {
            ("shipped", "open")
        };
        put(&c, "orders", order(1, Some(to), round, "c1")).await;
        assert_eq!(status_ids(to).await, ["o001"], "round {round}: {to}");
        assert!(status_ids(from).await.is_empty(), "round {round}: {from}");
    }
}
