//! Local secondary indexes through the Rust SDK. Checks the Developer Guide's
//! "Local secondary indexes" (LSI.html): same partition key as the table,
//! one sort key; projections KEYS_ONLY / INCLUDE / ALL; sparse indexes;
//! strongly consistent index reads; attributes outside the projection
//! fetched from the table; the item collection size limit
//! (ItemCollectionSizeLimitExceededException). CreateTable's index rules
//! are checked against the API Reference's ValidationException wording.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::*;
use dynaraft_api::ApiConfig;
use dynaraft_tests::av::*;
use dynaraft_tests::{TestServer, err_of};
use std::collections::HashMap;

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

fn lsi(name: &str, hash: &str, sort: &str, projection: Projection) -> LocalSecondaryIndex {
    LocalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .key_schema(key(sort, KeyType::Range))
        .projection(projection)
        .build()
        .expect("lsi")
}

fn projection(ty: ProjectionType, non_key: &[&str]) -> Projection {
    let mut p = Projection::builder().projection_type(ty);
    for a in non_key {
        p = p.non_key_attributes(*a);
    }
    p.build()
}

/// `threads`: pk, sk; indexes by_date (ALL), by_votes (KEYS_ONLY, N) and
/// by_tag (INCLUDE title).
async fn create_threads(c: &Client) {
    use ScalarAttributeType::{N, S};
    c.create_table()
        .table_name("threads")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", S))
        .attribute_definitions(attr("sk", S))
        .attribute_definitions(attr("date", S))
        .attribute_definitions(attr("votes", N))
        .attribute_definitions(attr("tag", S))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .local_secondary_indexes(lsi(
            "by_date",
            "pk",
            "date",
            projection(ProjectionType::All, &[]),
        ))
        .local_secondary_indexes(lsi(
            "by_votes",
            "pk",
            "votes",
            projection(ProjectionType::KeysOnly, &[]),
        ))
        .local_secondary_indexes(lsi(
            "by_tag",
            "pk",
            "tag",
            projection(ProjectionType::Include, &["title"]),
        ))
        .send()
        .await
        .expect("create threads");
}

async fn put(c: &Client, sk: &str, attrs: &[(&str, AttributeValue)]) {
    let mut req = c
        .put_item()
        .table_name("threads")
        .item("pk", s("forum"))
        .item("sk", s(sk));
    for (k, v) in attrs {
        req = req.item(*k, v.clone());
    }
    req.send().await.expect("put");
}

fn sks(items: &[HashMap<String, AttributeValue>]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i.get("sk") {
            Some(AttributeValue::S(v)) => v.clone(),
            other => panic!("no sk in {other:?}"),
        })
        .collect()
}

async fn query_index(
    c: &Client,
    index: &str,
    kce: &str,
    values: &[(&str, AttributeValue)],
) -> Vec<HashMap<String, AttributeValue>> {
    let mut req = c
        .query()
        .table_name("threads")
        .index_name(index)
        .key_condition_expression(kce)
        .expression_attribute_values(":pk", s("forum"));
    for (k, v) in values {
        req = req.expression_attribute_values(*k, v.clone());
    }
    req.send().await.expect("query").items().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_indexes_follow_every_write_in_index_order() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_threads(c).await;
    put(
        c,
        "t1",
        &[
            ("date", s("2026-03")),
            ("votes", n("5")),
            ("tag", s("rust")),
            ("title", s("one")),
            ("body", s("b1")),
        ],
    )
    .await;
    put(
        c,
        "t2",
        &[
            ("date", s("2026-01")),
            ("votes", n("50")),
            ("tag", s("go")),
            ("title", s("two")),
            ("body", s("b2")),
        ],
    )
    .await;
    put(
        c,
        "t3",
        &[
            ("date", s("2026-02")),
            ("title", s("three")),
            ("body", s("b3")),
        ],
    )
    .await;

    // ALL projection, index order, a sort-key condition, both directions.
    let all = query_index(c, "by_date", "pk = :pk", &[]).await;
    assert_eq!(sks(&all), ["t2", "t3", "t1"]);
    assert_eq!(all[0].get("body"), Some(&s("b2")));
    let later = c
        .query()
        .table_name("threads")
        .index_name("by_date")
        .key_condition_expression("pk = :pk AND #d >= :d")
        .expression_attribute_names("#d", "date")
        .expression_attribute_values(":pk", s("forum"))
        .expression_attribute_values(":d", s("2026-02"))
        .scan_index_forward(false)
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    assert_eq!(sks(later.items()), ["t1", "t3"]);

    // KEYS_ONLY and sparse: t3 has no votes; entries hold only keys unless
    // ALL_ATTRIBUTES asks for the rest (fetched from the table).
    let by_votes = query_index(c, "by_votes", "pk = :pk AND votes > :v", &[(":v", n("1"))]).await;
    assert_eq!(sks(&by_votes), ["t1", "t2"]);
    assert_eq!(by_votes[0].len(), 3, "{:?}", by_votes[0]);
    let full = c
        .query()
        .table_name("threads")
        .index_name("by_votes")
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s("forum"))
        .select(Select::AllAttributes)
        .send()
        .await
        .expect("query all attributes");
    assert_eq!(full.items()[1].get("body"), Some(&s("b2")));

    // INCLUDE: keys plus title.
    let by_tag = query_index(c, "by_tag", "pk = :pk", &[]).await;
    assert_eq!(sks(&by_tag), ["t2", "t1"]);
    let names: std::collections::BTreeSet<&str> = by_tag[0].keys().map(String::as_str).collect();
    assert_eq!(names, ["pk", "sk", "tag", "title"].into());

    // An update moves the entry; a delete removes it.
    c.update_item()
        .table_name("threads")
        .key("pk", s("forum"))
        .key("sk", s("t2"))
        .update_expression("SET #d = :d REMOVE votes")
        .expression_attribute_names("#d", "date")
        .expression_attribute_values(":d", s("2026-04"))
        .send()
        .await
        .expect("update");
    c.delete_item()
        .table_name("threads")
        .key("pk", s("forum"))
        .key("sk", s("t3"))
        .send()
        .await
        .expect("delete");
    assert_eq!(
        sks(&query_index(c, "by_date", "pk = :pk", &[]).await),
        ["t1", "t2"]
    );
    assert_eq!(
        sks(&query_index(c, "by_votes", "pk = :pk", &[]).await),
        ["t1"]
    );

    // Pagination through an index: LastEvaluatedKey has the table's and
    // the index's keys, and resumes exactly.
    for i in 0..5 {
        put(c, &format!("p{i}"), &[("date", s("2026-05"))]).await;
    }
    let mut seen = Vec::new();
    let mut start = None;
    loop {
        let r = c
            .query()
            .table_name("threads")
            .index_name("by_date")
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s("forum"))
            .limit(2)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("page");
        seen.extend(sks(r.items()));
        start = r.last_evaluated_key().cloned();
        if let Some(k) = &start {
            let names: std::collections::BTreeSet<&str> = k.keys().map(String::as_str).collect();
            assert_eq!(names, ["date", "pk", "sk"].into());
        } else {
            break;
        }
    }
    assert_eq!(seen, ["t1", "t2", "p0", "p1", "p2", "p3", "p4"]);

    // ReturnItemCollectionMetrics: the partition key and a size range.
    let r = c
        .put_item()
        .table_name("threads")
        .item("pk", s("forum"))
        .item("sk", s("m1"))
        .return_item_collection_metrics(ReturnItemCollectionMetrics::Size)
        .send()
        .await
        .expect("put with metrics");
    let m = r
        .item_collection_metrics()
        .expect("metrics for a table with LSIs");
    assert_eq!(
        m.item_collection_key().and_then(|k| k.get("pk")),
        Some(&s("forum"))
    );
    assert_eq!(m.size_estimate_range_gb(), [0.0, 1.0]);
    c.delete_item()
        .table_name("threads")
        .key("pk", s("forum"))
        .key("sk", s("m1"))
        .send()
        .await
        .expect("delete m1");

    // Scan of a sparse index sees only the items that have its sort key.
    let scanned = c
        .scan()
        .table_name("threads")
        .index_name("by_votes")
        .consistent_read(true)
        .send()
        .await
        .expect("scan index");
    assert_eq!(sks(scanned.items()), ["t1"]);

    // DescribeTable reports each index with its entries.
    let d = c
        .describe_table()
        .table_name("threads")
        .send()
        .await
        .expect("describe");
    let indexes = d.table().expect("table").local_secondary_indexes();
    let counts: Vec<(&str, i64)> = indexes
        .iter()
        .map(|i| (i.index_name().unwrap_or(""), i.item_count().unwrap_or(-1)))
        .collect();
    assert_eq!(counts, [("by_date", 7), ("by_votes", 1), ("by_tag", 2)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_key_types_and_unknown_indexes_are_rejected() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_threads(c).await;
    let e = c
        .put_item()
        .table_name("threads")
        .item("pk", s("forum"))
        .item("sk", s("x"))
        .item("votes", s("many"))
        .send()
        .await
        .expect_err("wrong index key type");
    assert_eq!(
        err_of(&e),
        (
            "ValidationException".into(),
            "One or more parameter values were invalid: Type mismatch for Index Key votes Expected: N Actual: S IndexName: by_votes".into()
        )
    );
    // BatchWriteItem checks every item's index keys before writing any.
    let good = WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("pk", s("forum"))
                .item("sk", s("good"))
                .build()
                .expect("put"),
        )
        .build();
    let bad = WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("pk", s("forum"))
                .item("sk", s("bad"))
                .item("date", n("1"))
                .build()
                .expect("put"),
        )
        .build();
    let e = c
        .batch_write_item()
        .request_items("threads", vec![good.clone(), bad])
        .send()
        .await
        .expect_err("batch with a bad index key");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Type mismatch for Index Key date Expected: S Actual: N IndexName: by_date"
    );
    let scanned = c.scan().table_name("threads").send().await.expect("scan");
    assert!(
        scanned.items().is_empty(),
        "the refused batch wrote something"
    );
    let r = c
        .batch_write_item()
        .request_items("threads", vec![good])
        .return_item_collection_metrics(ReturnItemCollectionMetrics::Size)
        .send()
        .await
        .expect("batch");
    let metrics = r.item_collection_metrics().and_then(|m| m.get("threads"));
    assert_eq!(metrics.map(Vec::len), Some(1), "{r:?}");
    let e = c
        .query()
        .table_name("threads")
        .index_name("nope")
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s("forum"))
        .send()
        .await
        .expect_err("unknown index");
    assert_eq!(
        err_of(&e).1,
        "The table does not have the specified index: nope"
    );
    let got = c
        .get_item()
        .table_name("threads")
        .key("pk", s("forum"))
        .key("sk", s("x"))
        .send()
        .await
        .expect("get");
    assert!(got.item().is_none(), "a rejected write left an item");
    let scanned = c.scan().table_name("threads").send().await.expect("scan");
    assert_eq!(sks(scanned.items()), ["good"]);
    t.stop().await;
}

/// CreateTable's rules for local and global indexes, with DynamoDB's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_index_definitions_get_dynamodb_messages() {
    use ScalarAttributeType::S;
    let t = TestServer::start().await;
    let c = &t.client;
    let all = || projection(ProjectionType::All, &[]);
    let base = |c: &Client| {
        c.create_table()
            .table_name("bad")
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", S))
            .attribute_definitions(attr("x", S))
            .key_schema(key("pk", KeyType::Hash))
    };
    let cases = vec![
        (
            base(c).local_secondary_indexes(lsi("ix1", "pk", "x", all())),
            "One or more parameter values were invalid: Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex",
        ),
        (
            base(c)
                .attribute_definitions(attr("sk", S))
                .key_schema(key("sk", KeyType::Range))
                .local_secondary_indexes(lsi("ix1", "x", "sk", all())),
            "One or more parameter values were invalid: Index KeySchema does not have the same leading hash key as table KeySchema for index: ix1. index hash key: x, table hash key: pk",
        ),
        (
            base(c)
                .attribute_definitions(attr("sk", S))
                .key_schema(key("sk", KeyType::Range))
                .local_secondary_indexes(lsi("ix1", "pk", "x", all()))
                .local_secondary_indexes(lsi("ix1", "pk", "x", all())),
            "One or more parameter values were invalid: Duplicate index name: ix1",
        ),
        (
            base(c)
                .attribute_definitions(attr("sk", S))
                .key_schema(key("sk", KeyType::Range))
                .local_secondary_indexes(lsi(
                    "ix1",
                    "pk",
                    "x",
                    projection(ProjectionType::All, &["y"]),
                )),
            "One or more parameter values were invalid: ProjectionType is ALL, but NonKeyAttributes is specified",
        ),
        (
            base(c)
                .attribute_definitions(attr("sk", S))
                .attribute_definitions(attr("unused", S))
                .key_schema(key("sk", KeyType::Range))
                .local_secondary_indexes(lsi("ix1", "pk", "x", all())),
            "One or more parameter values were invalid: Some AttributeDefinitions are not used. AttributeDefinitions: [pk, sk, unused, x], keys used: [pk, sk, x]",
        ),
    ];
    for (req, want) in cases {
        let e = req.send().await.expect_err(want);
        assert_eq!(err_of(&e), ("ValidationException".into(), want.into()));
    }
    let mut six = base(c)
        .attribute_definitions(attr("sk", S))
        .key_schema(key("sk", KeyType::Range));
    for i in 0..6 {
        six = six.local_secondary_indexes(lsi(&format!("ix{i}"), "pk", "x", all()));
    }
    let e = six.send().await.expect_err("six indexes");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Number of LocalSecondaryIndexes exceeds per-table limit of 5"
    );

    // Global index definitions are validated as DynamoDB does.
    let gsi = |name: &str, hash: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(hash, KeyType::Hash))
            .projection(all())
            .build()
            .expect("gsi")
    };
    let throughput = ProvisionedThroughput::builder()
        .read_capacity_units(1)
        .write_capacity_units(1)
        .build()
        .expect("throughput");
    let provisioned = GlobalSecondaryIndex::builder()
        .index_name("gsi1")
        .key_schema(key("x", KeyType::Hash))
        .projection(all())
        .provisioned_throughput(throughput)
        .build()
        .expect("gsi");
    let cases = vec![
        (
            base(c).global_secondary_indexes(provisioned),
            "One or more parameter values were invalid: ProvisionedThroughput should not be specified for index: gsi1 when BillingMode is PAY_PER_REQUEST",
        ),
        (
            base(c)
                .attribute_definitions(attr("sk", S))
                .key_schema(key("sk", KeyType::Range))
                .local_secondary_indexes(lsi("ix1", "pk", "x", all()))
                .global_secondary_indexes(gsi("ix1", "x")),
            "One or more parameter values were invalid: Duplicate index name: ix1",
        ),
        (
            base(c).global_secondary_indexes(gsi("gsi1", "nope")),
            "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [nope], AttributeDefinitions: [pk, x]",
        ),
    ];
    for (req, want) in cases {
        let e = req.send().await.expect_err(want);
        assert_eq!(err_of(&e), ("ValidationException".into(), want.into()));
    }
    assert!(
        c.list_tables()
            .send()
            .await
            .expect("list")
            .table_names()
            .is_empty()
    );
    t.stop().await;
}

/// An item collection (one partition key value with its index entries) of
/// a table with local indexes may not outgrow the limit (10 GB in DynamoDB;
/// 4 KB here); other partition keys are unaffected, and shrinking is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_collections_stop_at_the_size_limit() {
    let cfg = ApiConfig {
        item_collection_limit_bytes: 4096,
        ..TestServer::config()
    };
    let t = TestServer::start_config(None, cfg).await;
    let c = &t.client;
    create_threads(c).await;
    let body = "x".repeat(500);
    let mut stored = 0;
    let mut refused = None;
    for i in 0..20 {
        let r = c
            .put_item()
            .table_name("threads")
            .item("pk", s("forum"))
            .item("sk", s(&format!("s{i:02}")))
            .item("date", s("2026"))
            .item("body", s(&body))
            .send()
            .await;
        match r {
            Ok(_) => stored += 1,
            Err(e) => {
                refused = Some(err_of(&e));
                break;
            }
        }
    }
    assert_eq!(
        refused,
        Some((
            "ItemCollectionSizeLimitExceededException".into(),
            "Item collection size limit exceeded.".into()
        ))
    );
    assert!((2..10).contains(&stored), "{stored} items fit in 4 KB");
    c.put_item()
        .table_name("threads")
        .item("pk", s("other"))
        .item("sk", s("a"))
        .item("body", s(&body))
        .send()
        .await
        .expect("another collection");
    c.delete_item()
        .table_name("threads")
        .key("pk", s("forum"))
        .key("sk", s("s00"))
        .send()
        .await
        .expect("shrinking is allowed");
    t.stop().await;
}
