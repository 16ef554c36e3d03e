//! Query, Scan and batches through the Rust SDK.
//! Checks: API Reference Query, Scan (Segment/TotalSegments), BatchGetItem,
//! BatchWriteItem; Developer Guide "Paginating table query results" (1 MB
//! pages, LastEvaluatedKey), "Key condition expressions".

use aws_sdk_dynamodb::types::*;
use dynaraft_tests::av::*;
use dynaraft_tests::*;
use std::collections::{BTreeSet, HashMap};

async fn seed(c: &aws_sdk_dynamodb::Client, table: &str, pks: usize, sks: usize, pad: usize) {
    for p in 0..pks {
        for s in 0..sks {
            c.put_item()
                .table_name(table)
                .item("pk", A::S(format!("p{p}")))
                .item("sk", A::N(s.to_string()))
                .item("pad", A::S("x".repeat(pad)))
                .item("even", A::Bool(s % 2 == 0))
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_ranges_order_and_filters() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "qry", Some(("sk", ScalarAttributeType::N))).await;
    seed(c, "qry", 3, 20, 10).await;
    let q = |kce: &str| {
        c.query()
            .table_name("qry")
            .key_condition_expression(kce)
            .expression_attribute_values(":p", s("p1"))
    };
    let sks = |items: &[HashMap<String, A>]| -> Vec<i64> {
        items
            .iter()
            .map(|i| match i.get("sk") {
                Some(A::N(v)) => v.parse().unwrap(),
                _ => -1,
            })
            .collect()
    };
    let all = q("pk = :p").send().await.unwrap();
    assert_eq!(
        sks(all.items()),
        (0..20).collect::<Vec<_>>(),
        "numeric sort-key order"
    );
    let r = q("pk = :p AND sk BETWEEN :a AND :b")
        .expression_attribute_values(":a", n("5"))
        .expression_attribute_values(":b", n("7"))
        .send()
        .await
        .unwrap();
    assert_eq!(sks(r.items()), vec![5, 6, 7]);
    let r = q("pk = :p AND sk < :a")
        .expression_attribute_values(":a", n("3"))
        .scan_index_forward(false)
        .send()
        .await
        .unwrap();
    assert_eq!(sks(r.items()), vec![2, 1, 0]);
    let r = q("pk = :p AND sk >= :a")
        .expression_attribute_values(":a", n("18"))
        .send()
        .await
        .unwrap();
    assert_eq!(sks(r.items()), vec![18, 19]);
    let r = q("pk = :p")
        .filter_expression("even = :t")
        .expression_attribute_values(":t", A::Bool(true))
        .send()
        .await
        .unwrap();
    assert_eq!((r.count(), r.scanned_count()), (10, 20));
    let r = q("pk = :p").select(Select::Count).send().await.unwrap();
    assert_eq!(r.count(), 20);
    assert!(r.items().is_empty());
    // Pagination with Limit resumes exactly, in both directions.
    for forward in [true, false] {
        let mut seen = Vec::new();
        let mut start = None;
        loop {
            let r = q("pk = :p")
                .limit(6)
                .scan_index_forward(forward)
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .unwrap();
            seen.extend(sks(r.items()));
            start = r.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        let mut expect: Vec<i64> = (0..20).collect();
        if !forward {
            expect.reverse();
        }
        assert_eq!(seen, expect);
    }
    let e = q("pk = :p")
        .filter_expression("sk > :a")
        .expression_attribute_values(":a", n("1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk"
    );
    let e = c
        .query()
        .table_name("qry")
        .key_condition_expression("sk = :a")
        .expression_attribute_values(":a", n("1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Query condition missed key schema element: pk"
    );
    t.stop().await;
}

/// Pages stop at 1 MB of items read, with an exact LastEvaluatedKey. As in
/// DynamoDB, a page takes items until their sizes (names and values, before
/// any filter) reach 1 MB: the item that reaches it is the page's last. Each
/// item here is 102 400 bytes of padding plus a few dozen of names and key
/// values, so ten items stay under 1 048 576 bytes and the eleventh crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_megabyte_pages() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "big", Some(("sk", ScalarAttributeType::N))).await;
    seed(c, "big", 1, 30, 100 * 1024).await; // 30 items of ~100 KB = ~3 MB
    let mut sizes = Vec::new();
    let mut start = None;
    loop {
        let r = c
            .query()
            .table_name("big")
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s("p0"))
            .set_exclusive_start_key(start.clone())
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .unwrap();
        sizes.push(r.items().len());
        start = r.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert_eq!(sizes, [11, 11, 8], "items per page");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_scan_segments_cover_the_table_once() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "scn", Some(("sk", ScalarAttributeType::N))).await;
    seed(c, "scn", 40, 3, 0).await;
    let key = |i: &HashMap<String, A>| format!("{:?}/{:?}", i.get("pk"), i.get("sk"));
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for seg in 0..4 {
        let mut start = None;
        loop {
            let r = c
                .scan()
                .table_name("scn")
                .segment(seg)
                .total_segments(4)
                .limit(7)
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .unwrap();
            for i in r.items() {
                seen.insert(key(i));
                count += 1;
            }
            start = r.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
    }
    assert_eq!(count, 120, "every item exactly once");
    assert_eq!(seen.len(), 120);
    let e = c
        .scan()
        .table_name("scn")
        .segment(4)
        .total_segments(4)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: 4 is not less than TotalSegments: 4"
    );
    let r = c
        .scan()
        .table_name("scn")
        .filter_expression("sk = :z")
        .expression_attribute_values(":z", n("0"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.count(), r.scanned_count()), (40, 120));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_write_and_get() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "bwr", None).await;
    let put = |k: &str| {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .item("pk", s(k))
                    .item("v", n("1"))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let r = c
        .batch_write_item()
        .request_items("bwr", (0..25).map(|i| put(&format!("k{i}"))).collect())
        .send()
        .await
        .unwrap();
    assert!(r.unprocessed_items().is_none_or(|u| u.is_empty()));
    // Over 25 for one table breaks the map value's length constraint
    // (the message real DynamoDB sends, per the nubo-db conformance suite).
    let e = c
        .batch_write_item()
        .request_items("bwr", (0..26).map(|i| put(&format!("k{i}"))).collect())
        .send()
        .await
        .unwrap_err();
    let msg = err_of(&e).1;
    assert!(
        msg.starts_with("1 validation error detected: Value '{bwr=[WriteRequest(putRequest=")
            && msg.ends_with("at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 25, Member must have length greater than or equal to 1]"),
        "{msg}"
    );
    // Over 25 across tables, none over 25 alone: the batch-wide message.
    let e = c
        .batch_write_item()
        .request_items("bwr", (0..13).map(|i| put(&format!("k{i}"))).collect())
        .request_items("bwr2", (0..13).map(|i| put(&format!("k{i}"))).collect())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Too many items requested for the BatchWriteItem call"
    );
    let e = c
        .batch_write_item()
        .request_items("bwr", vec![put("dup"), put("dup")])
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Provided list of item keys contains duplicates"
    );
    assert!(
        c.get_item()
            .table_name("bwr")
            .key("pk", s("dup"))
            .send()
            .await
            .unwrap()
            .item()
            .is_none(),
        "no partial write"
    );
    let del = WriteRequest::builder()
        .delete_request(DeleteRequest::builder().key("pk", s("k0")).build().unwrap())
        .build();
    c.batch_write_item()
        .request_items("bwr", vec![del])
        .send()
        .await
        .unwrap();

    let keys = KeysAndAttributes::builder()
        .set_keys(Some(
            (0..5)
                .map(|i| [("pk".to_string(), A::S(format!("k{i}")))].into())
                .collect(),
        ))
        .projection_expression("pk")
        .build()
        .unwrap();
    let r = c
        .batch_get_item()
        .request_items("bwr", keys)
        .send()
        .await
        .unwrap();
    let got = r.responses().unwrap().get("bwr").unwrap();
    assert_eq!(got.len(), 4, "k0 was deleted");
    assert!(got.iter().all(|i| i.len() == 1));
    let dup = KeysAndAttributes::builder()
        .keys([("pk".to_string(), s("k1"))].into())
        .keys([("pk".to_string(), s("k1"))].into())
        .build()
        .unwrap();
    let e = c
        .batch_get_item()
        .request_items("bwr", dup)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Provided list of item keys contains duplicates"
    );
    t.stop().await;
}

/// Legacy KeyConditions, QueryFilter, ScanFilter and AttributesToGet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_query_and_scan_parameters() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "lgq", Some(("sk", ScalarAttributeType::N))).await;
    seed(c, "lgq", 2, 10, 0).await;
    let cond = |op: ComparisonOperator, v: Vec<A>| {
        Condition::builder()
            .comparison_operator(op)
            .set_attribute_value_list(Some(v))
            .build()
            .unwrap()
    };
    let r = c
        .query()
        .table_name("lgq")
        .key_conditions("pk", cond(ComparisonOperator::Eq, vec![s("p0")]))
        .key_conditions("sk", cond(ComparisonOperator::Ge, vec![n("4")]))
        .query_filter("even", cond(ComparisonOperator::Eq, vec![A::Bool(true)]))
        .attributes_to_get("sk")
        .send()
        .await
        .unwrap();
    assert_eq!((r.count(), r.scanned_count()), (3, 6));
    assert!(
        r.items()
            .iter()
            .all(|i| i.len() == 1 && i.contains_key("sk"))
    );
    // KeyConditions may be combined with a FilterExpression.
    let r = c
        .query()
        .table_name("lgq")
        .key_conditions("pk", cond(ComparisonOperator::Eq, vec![s("p1")]))
        .filter_expression("even = :f")
        .expression_attribute_values(":f", A::Bool(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.count(), 5);
    let e = c
        .query()
        .table_name("lgq")
        .key_conditions("pk", cond(ComparisonOperator::Ne, vec![s("p1")]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Attempted conditional constraint is not an indexable operation"
    );
    let r = c
        .scan()
        .table_name("lgq")
        .scan_filter("sk", cond(ComparisonOperator::In, vec![n("1"), n("2")]))
        .scan_filter("even", cond(ComparisonOperator::Eq, vec![A::Bool(true)]))
        .conditional_operator(ConditionalOperator::And)
        .send()
        .await
        .unwrap();
    assert_eq!(r.count(), 2);
    let e = c
        .scan()
        .table_name("lgq")
        .scan_filter("sk", cond(ComparisonOperator::NotNull, vec![]))
        .filter_expression("attribute_exists(sk)")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {ScanFilter} Expression parameters: {FilterExpression}"
    );
    t.stop().await;
}
