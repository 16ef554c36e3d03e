//! DynamoDB Streams over the wire (`DynamoDBStreams_20120810`), against the
//! embedded server and an in-process three-zone cluster with two
//! partitions per table (two shards): ListStreams, DescribeStream,
//! GetShardIterator and GetRecords return every change once, in order per
//! item, with the images the view type asks for.

use dynaraft_tests::cluster::TestCluster;
use dynaraft_tests::{AUTH, TestServer, raw_request};
use serde_json::{Value, json};
use std::net::SocketAddr;

const CT: (&str, &str) = ("Content-Type", "application/x-amz-json-1.0");

/// One request to `addr`; (status, JSON body).
fn call(addr: SocketAddr, target: &str, body: Value) -> (u16, Value) {
    let headers = [CT, AUTH, ("X-Amz-Target", target)];
    let (status, _, text) = raw_request(addr, None, &headers, body.to_string().as_bytes());
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, v)
}

fn ddb(addr: SocketAddr, op: &str, body: Value) -> Value {
    let (status, v) = call(addr, &format!("DynamoDB_20120810.{op}"), body);
    assert_eq!(status, 200, "{op}: {v}");
    v
}

fn streams(addr: SocketAddr, op: &str, body: Value) -> Value {
    let (status, v) = call(addr, &format!("DynamoDBStreams_20120810.{op}"), body);
    assert_eq!(status, 200, "{op}: {v}");
    v
}

/// Every record of every shard of `arn`, from the trim horizon.
fn read_all(addr: SocketAddr, arn: &str) -> Vec<Value> {
    let desc = streams(addr, "DescribeStream", json!({ "StreamArn": arn }));
    let shards = desc["StreamDescription"]["Shards"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for shard in shards {
        let it = streams(
            addr,
            "GetShardIterator",
            json!({
                "StreamArn": arn,
                "ShardId": shard["ShardId"],
                "ShardIteratorType": "TRIM_HORIZON",
            }),
        );
        let mut iterator = it["ShardIterator"].clone();
        loop {
            let page = streams(
                addr,
                "GetRecords",
                json!({ "ShardIterator": iterator, "Limit": 2 }),
            );
            let records = page["Records"].as_array().cloned().unwrap_or_default();
            if records.is_empty() {
                break;
            }
            out.extend(records);
            iterator = page["NextShardIterator"].clone();
            assert!(iterator.is_string(), "an enabled stream's shard stays open");
        }
    }
    out
}

fn exercise(addr: SocketAddr) {
    ddb(
        addr,
        "CreateTable",
        json!({
            "TableName": "streamed",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }),
    );
    let item = |k: &str, v: &str| json!({"pk": {"S": k}, "v": {"S": v}});
    for k in ["a", "b", "c", "d"] {
        ddb(
            addr,
            "PutItem",
            json!({"TableName": "streamed", "Item": item(k, "1")}),
        );
    }
    ddb(
        addr,
        "PutItem",
        json!({"TableName": "streamed", "Item": item("a", "2")}),
    );
    ddb(
        addr,
        "PutItem",
        json!({"TableName": "streamed", "Item": item("a", "2")}),
    ); // no change
    ddb(
        addr,
        "DeleteItem",
        json!({"TableName": "streamed", "Key": {"pk": {"S": "b"}}}),
    );
    let listed = streams(addr, "ListStreams", json!({ "TableName": "streamed" }));
    let arn = listed["Streams"][0]["StreamArn"]
        .as_str()
        .expect("stream arn")
        .to_string();
    let described = ddb(addr, "DescribeTable", json!({"TableName": "streamed"}));
    assert_eq!(described["Table"]["LatestStreamArn"], json!(arn));
    let records = read_all(addr, &arn);
    let by_item = |k: &str| -> Vec<(String, Option<String>, Option<String>)> {
        records
            .iter()
            .filter(|r| r["dynamodb"]["Keys"]["pk"]["S"] == k)
            .map(|r| {
                let v = |img: &str| r["dynamodb"][img]["v"]["S"].as_str().map(str::to_string);
                (
                    r["eventName"].as_str().unwrap_or("").to_string(),
                    v("OldImage"),
                    v("NewImage"),
                )
            })
            .collect()
    };
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        by_item("a"),
        [
            ("INSERT".into(), None, s("1")),
            ("MODIFY".into(), s("1"), s("2"))
        ]
    );
    assert_eq!(
        by_item("b"),
        [
            ("INSERT".into(), None, s("1")),
            ("REMOVE".into(), s("1"), None)
        ]
    );
    assert_eq!(
        records.len(),
        6,
        "one record per change, none for the no-op"
    );
    for r in &records {
        assert_eq!(r["eventSource"], "aws:dynamodb");
        assert_eq!(r["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert!(
            r["dynamodb"]["SequenceNumber"]
                .as_str()
                .is_some_and(|n| n.len() >= 21)
        );
    }
    // Bad input gets DynamoDB's errors, not a 500.
    let (status, v) = call(
        addr,
        "DynamoDBStreams_20120810.GetRecords",
        json!({ "ShardIterator": "not an iterator" }),
    );
    assert_eq!(
        (
            status,
            v["__type"]
                .as_str()
                .unwrap_or("")
                .ends_with("ValidationException")
        ),
        (400, true),
        "{v}"
    );
    let (status, v) = call(
        addr,
        "DynamoDBStreams_20120810.DescribeStream",
        json!({ "StreamArn": format!("{arn}x") }),
    );
    assert_eq!(status, 400);
    assert!(
        v["__type"]
            .as_str()
            .unwrap_or("")
            .ends_with("ResourceNotFoundException"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_embedded_and_in_a_cluster() {
    let embedded = TestServer::start().await;
    let addr = embedded.addr;
    tokio::task::spawn_blocking(move || exercise(addr))
        .await
        .expect("embedded");
    let cluster = TestCluster::start("streams", 3, 2).await;
    let addr = cluster.api_addr;
    tokio::task::spawn_blocking(move || exercise(addr))
        .await
        .expect("cluster");
}
