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

/// Creates table `name` (string hash key `pk`) with a stream of `view`.
fn create_streamed(addr: SocketAddr, name: &str, view: &str) -> Value {
    ddb(
        addr,
        "CreateTable",
        json!({
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": true, "StreamViewType": view},
        }),
    )
}

fn exercise(addr: SocketAddr) {
    create_streamed(addr, "streamed", "NEW_AND_OLD_IMAGES");
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

/// What a shard follower saw: (shard, sequence number, key, value) of
/// every record, in the order read.
type Seen = Vec<(String, String, String, u64)>;

/// One Streams call that may fail while the cluster fails over: the body on
/// success, `None` on any error (the caller retries with the same input).
fn try_streams(addr: SocketAddr, op: &str, body: &Value) -> Option<Value> {
    let (status, v) = call(
        addr,
        &format!("DynamoDBStreams_20120810.{op}"),
        body.clone(),
    );
    (status == 200).then_some(v)
}

/// Follows every shard of `arn` from its trim horizon until `stop` is set
/// and one more round over the shards returns nothing and fails nowhere.
/// Errors (a leader change, a lost zone) are retried with the same
/// iterator, as a consumer does.
fn follow(addr: SocketAddr, arn: &str, stop: &std::sync::atomic::AtomicBool) -> Seen {
    use std::sync::atomic::Ordering;
    let by_arn = json!({ "StreamArn": arn });
    let desc = loop {
        if let Some(d) = try_streams(addr, "DescribeStream", &by_arn) {
            break d;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut iterators: Vec<(String, Value)> = Vec::new();
    for shard in desc["StreamDescription"]["Shards"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let id = shard["ShardId"].as_str().unwrap_or_default().to_string();
        let req = json!({ "StreamArn": arn, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON" });
        let it = loop {
            if let Some(v) = try_streams(addr, "GetShardIterator", &req) {
                break v["ShardIterator"].clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        iterators.push((id, it));
    }
    assert_eq!(iterators.len(), 2, "one shard per partition");
    let mut seen = Seen::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let (mut read, mut failed) = (0, false);
        for (shard, iterator) in iterators.iter_mut() {
            let Some(page) = try_streams(addr, "GetRecords", &json!({ "ShardIterator": iterator }))
            else {
                failed = true;
                continue;
            };
            for r in page["Records"].as_array().into_iter().flatten() {
                let d = &r["dynamodb"];
                let value = d["NewImage"]["n"]["N"]
                    .as_str()
                    .and_then(|n| n.parse().ok());
                seen.push((
                    shard.clone(),
                    d["SequenceNumber"].as_str().unwrap_or_default().to_string(),
                    d["Keys"]["pk"]["S"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    value.expect("every record of this test is a put with a number"),
                ));
                read += 1;
            }
            *iterator = page["NextShardIterator"].clone();
            assert!(iterator.is_string(), "an enabled stream's shard stays open");
        }
        if stopping && read == 0 && !failed {
            return seen;
        }
        if read == 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Keys the failover test writes in turn.
const FAILOVER_KEYS: u64 = 8;
/// Writes between two faults of the failover test.
const FAILOVER_WRITES_PER_PHASE: u64 = 40;

/// Issue 20's cluster test: a reader follows both shards while writes go
/// on through the loss of each zone in turn (so every partition's leader
/// changes at least once). Every acknowledged write appears exactly once,
/// each key's records in the order written, each shard's sequence numbers
/// strictly increasing; a write whose outcome the client never learned
/// appears at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_following_every_shard_sees_each_acknowledged_write_once_through_zone_losses() {
    use dynaraft_tests::av::{n, s};
    let mut c = TestCluster::start("stream-failover", 3, 2).await;
    let addr = c.api_addr;
    tokio::task::spawn_blocking(move || create_streamed(addr, "orders", "NEW_IMAGE"))
        .await
        .expect("create table");
    let arn = c
        .client
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("describe table")
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("stream arn")
        .to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || follow(addr, &arn, &stop))
    };
    let mut acked = Vec::new();
    let mut write = 0u64;
    // The groups whose leader was on a node when it was killed.
    let mut lost_leader = std::collections::BTreeSet::new();
    for phase in 0..4 {
        if let Some(victim) = (1..4).contains(&phase).then(|| phase - 1) {
            let node = c.node(victim).expect("victim runs");
            let led = node
                .host
                .hosted()
                .into_iter()
                .filter(|g| node.host.group(*g).is_some_and(|r| r.is_leader()));
            lost_leader.extend(led);
            c.kill(victim).await;
        }
        for _ in 0..FAILOVER_WRITES_PER_PHASE {
            let key = format!("k{}", write % FAILOVER_KEYS);
            let put = c
                .client
                .put_item()
                .table_name("orders")
                .item("pk", s(&key))
                .item("n", n(&write.to_string()))
                .send()
                .await;
            if put.is_ok() {
                acked.push((key, write));
            }
            write += 1;
        }
        if (1..4).contains(&phase) {
            c.restart(phase - 1).await;
        }
    }
    // Killing each node in turn removes every group's leader at least once
    // (the control plane's and both partitions').
    let hosted = c.node(0).expect("node 1 runs").host.hosted();
    assert!(
        hosted.len() >= 3 && hosted.iter().all(|g| lost_leader.contains(g)),
        "groups {hosted:?}, leader killed in {lost_leader:?}"
    );
    assert!(
        acked.len() as u64 >= write * 9 / 10,
        "too few writes acknowledged: {} of {write}",
        acked.len()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    let mut counts = std::collections::HashMap::new();
    for (_, _, key, value) in &seen {
        *counts.entry((key.clone(), *value)).or_insert(0) += 1;
    }
    for (pair, count) in &counts {
        assert_eq!(*count, 1, "{pair:?} appeared {count} times");
    }
    for pair in &acked {
        assert!(
            counts.contains_key(pair),
            "acknowledged write {pair:?} missing"
        );
    }
    for k in 0..FAILOVER_KEYS {
        let key = format!("k{k}");
        let values: Vec<u64> = seen.iter().filter(|r| r.2 == key).map(|r| r.3).collect();
        assert!(
            values.is_sorted(),
            "{key}: records out of order: {values:?}"
        );
    }
    for shard in seen
        .iter()
        .map(|r| &r.0)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let seqs: Vec<u128> = seen
            .iter()
            .filter(|r| &r.0 == shard)
            .map(|r| r.1.parse().expect("numeric sequence number"))
            .collect();
        assert!(
            seqs.is_sorted_by(|a, b| a < b),
            "{shard}: sequence numbers repeat or fall"
        );
    }
    eprintln!(
        "{} writes, {} acknowledged, {} records read",
        write,
        acked.len(),
        seen.len()
    );
    c.stop().await;
}

/// The shard iterator of `shard` of `arn` of type `kind` (at `seq` for the
/// AT/AFTER_SEQUENCE_NUMBER types): (status, body).
fn iterator(
    addr: SocketAddr,
    arn: &str,
    shard: &Value,
    kind: &str,
    seq: Option<&Value>,
) -> (u16, Value) {
    let mut req = json!({ "StreamArn": arn, "ShardId": shard, "ShardIteratorType": kind });
    if let Some(seq) = seq {
        req["SequenceNumber"] = seq.clone();
    }
    call(addr, "DynamoDBStreams_20120810.GetShardIterator", req)
}

/// Retention is the router's `stream_retention_ms` (`--stream-retention-s`),
/// stored with the stream: once records are older, the feeder purges them,
/// TRIM_HORIZON starts after them, and asking for one by sequence number
/// is TrimmedDataAccessException. Later records are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_the_retention_are_purged() {
    const RETENTION_MS: u64 = 1_500;
    let cfg = dynaraft_api::ApiConfig {
        stream_retention_ms: RETENTION_MS,
        ..TestServer::config()
    };
    let server = TestServer::start_config(None, cfg).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        create_streamed(addr, "short", "KEYS_ONLY");
        let put = |k: &str| {
            ddb(
                addr,
                "PutItem",
                json!({"TableName": "short", "Item": {"pk": {"S": k}}}),
            );
        };
        for k in ["a", "b", "c"] {
            put(k);
        }
        let arn =
            ddb(addr, "DescribeTable", json!({"TableName": "short"}))["Table"]["LatestStreamArn"]
                .clone();
        let arn = arn.as_str().expect("stream arn").to_string();
        let early = read_all(addr, &arn);
        assert_eq!(early.len(), 3);
        let first_seq = early[0]["dynamodb"]["SequenceNumber"].clone();
        let desc = streams(addr, "DescribeStream", json!({ "StreamArn": arn }));
        let shard = desc["StreamDescription"]["Shards"][0]["ShardId"].clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, v) = iterator(addr, &arn, &shard, "AT_SEQUENCE_NUMBER", Some(&first_seq));
            if status == 400 {
                assert!(
                    v["__type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("TrimmedDataAccessException")),
                    "{v}"
                );
                break;
            }
            assert_eq!(status, 200, "{v}");
            assert!(
                std::time::Instant::now() < deadline,
                "records older than {RETENTION_MS} ms were never purged"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(
            read_all(addr, &arn).len(),
            0,
            "TRIM_HORIZON starts after the purge"
        );
        put("d");
        let late = read_all(addr, &arn);
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0]["dynamodb"]["Keys"]["pk"]["S"], "d");
    })
    .await
    .expect("retention");
    server.stop().await;
}

/// Split size of the lineage test, in bytes: a few dozen items split it.
const LINEAGE_SPLIT_BYTES: u64 = 8 * 1024;
/// Keys of the lineage test, and how often each is written.
const LINEAGE_KEYS: usize = 120;
const LINEAGE_ROUNDS: u64 = 3;
/// Closed shards (splits) the lineage test waits for after its first round.
const LINEAGE_MIN_CLOSED: usize = 2;

/// Every shard DescribeStream lists for `arn` (all pages), in its order.
fn all_shards(addr: SocketAddr, arn: &str, filter: Option<&str>) -> Vec<Value> {
    let mut shards = Vec::new();
    let mut start: Option<Value> = None;
    loop {
        let mut req = json!({ "StreamArn": arn, "Limit": 3 });
        if let Some(id) = &start {
            req["ExclusiveStartShardId"] = id.clone();
        }
        if let Some(parent) = filter {
            req["ShardFilter"] = json!({ "Type": "CHILD_SHARDS", "ShardId": parent });
        }
        let d = streams(addr, "DescribeStream", req);
        let page = d["StreamDescription"]["Shards"].as_array().cloned();
        shards.extend(page.unwrap_or_default());
        match d["StreamDescription"].get("LastEvaluatedShardId") {
            Some(id) => start = Some(id.clone()),
            None => return shards,
        }
    }
}

/// Puts key `k{k}` with value `v` and a 200-byte payload.
fn put_versioned(addr: SocketAddr, k: usize, v: u64) {
    let item = json!({
        "pk": {"S": format!("k{k}")},
        "v": {"N": v.to_string()},
        "pad": {"S": "x".repeat(200)},
    });
    ddb(
        addr,
        "PutItem",
        json!({ "TableName": "lineage", "Item": item }),
    );
}

fn is_closed(shard: &Value) -> bool {
    shard["SequenceNumberRange"]
        .get("EndingSequenceNumber")
        .is_some()
}

fn lineage(addr: SocketAddr) {
    let d = create_streamed(addr, "lineage", "NEW_IMAGE");
    let arn = d["TableDescription"]["LatestStreamArn"]
        .as_str()
        .expect("stream arn")
        .to_string();
    for k in 0..LINEAGE_KEYS {
        put_versioned(addr, k, 0);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while all_shards(addr, &arn, None)
        .iter()
        .filter(|s| is_closed(s))
        .count()
        < LINEAGE_MIN_CLOSED
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the table did not split {LINEAGE_MIN_CLOSED} times"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Later rounds write keys that now live in split children.
    for v in 1..LINEAGE_ROUNDS {
        for k in 0..LINEAGE_KEYS {
            put_versioned(addr, k, v);
        }
    }

    let shards = all_shards(addr, &arn, None);
    let ids: Vec<&str> = shards
        .iter()
        .filter_map(|s| s["ShardId"].as_str())
        .collect();
    let closed: Vec<&Value> = shards.iter().filter(|s| is_closed(s)).collect();
    assert!(closed.len() >= LINEAGE_MIN_CLOSED, "{shards:#?}");
    for (i, shard) in shards.iter().enumerate() {
        if let Some(parent) = shard["ParentShardId"].as_str() {
            let at = ids.iter().position(|id| *id == parent);
            assert!(
                at.is_some_and(|at| at < i),
                "shard {} is listed before its parent {parent}: {shards:#?}",
                shard["ShardId"]
            );
        }
    }
    // Each closed shard has two children (the partition's next shard and
    // the split child's first), and CHILD_SHARDS names exactly them.
    for parent in &closed {
        let id = parent["ShardId"].as_str().expect("id");
        let children = all_shards(addr, &arn, Some(id));
        let named: Vec<&Value> = shards
            .iter()
            .filter(|s| s["ParentShardId"].as_str() == Some(id))
            .collect();
        assert_eq!(children.len(), 2, "children of {id}: {children:#?}");
        assert_eq!(children.iter().collect::<Vec<_>>(), named);
        let end: u128 = parent["SequenceNumberRange"]["EndingSequenceNumber"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("end");
        for child in children {
            let start: u128 = child["SequenceNumberRange"]["StartingSequenceNumber"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("start");
            assert!(start > end, "a child starts after its parent ends");
        }
    }

    // Read every shard in the listed order, each to its end (a closed
    // shard's last page has no NextShardIterator): every write once, and
    // each key's versions in the order they were written.
    let mut last: std::collections::BTreeMap<String, u64> = Default::default();
    let mut records = 0;
    for shard in &shards {
        let it = streams(
            addr,
            "GetShardIterator",
            json!({ "StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON" }),
        );
        let mut iterator = it["ShardIterator"].clone();
        while iterator.is_string() {
            let page = streams(
                addr,
                "GetRecords",
                json!({ "ShardIterator": iterator, "Limit": 50 }),
            );
            let got = page["Records"].as_array().cloned().unwrap_or_default();
            for r in &got {
                let image = &r["dynamodb"]["NewImage"];
                let k = image["pk"]["S"].as_str().expect("key").to_string();
                let v: u64 = image["v"]["N"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("v");
                let want = last.get(&k).map_or(0, |l| l + 1);
                assert_eq!(
                    v,
                    want,
                    "{k}: version {v} after {:?} (shard {})",
                    last.get(&k),
                    shard["ShardId"]
                );
                last.insert(k, v);
                records += 1;
            }
            if got.is_empty() && !is_closed(shard) {
                break;
            }
            iterator = page["NextShardIterator"].clone();
        }
    }
    assert_eq!(records, LINEAGE_KEYS * LINEAGE_ROUNDS as usize);
    assert_eq!(last.len(), LINEAGE_KEYS);
    eprintln!(
        "lineage: {} shards ({} closed), {records} records",
        shards.len(),
        closed.len()
    );
}

/// Shard lineage across splits (issue 21): a split closes the partition's
/// shard where it was applied, and the partition's next shard and the
/// split child's first name it as their parent. Read parents first, as
/// DescribeStream lists them, every write appears once and each key's
/// changes in order, though a key moved to a child partition midway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_shards_close_and_their_children_name_them() {
    let node_cfg = dynaraft_cluster::embedded::EmbeddedConfig {
        split: dynaraft_cluster::split::SplitPolicy {
            size_bytes: LINEAGE_SPLIT_BYTES,
            ..Default::default()
        },
        ..TestServer::node_config(None)
    };
    let cfg = dynaraft_api::ApiConfig {
        transition_delay_ms: 0,
        ..dynaraft_api::ApiConfig::default()
    };
    let server = TestServer::start_node(node_cfg, cfg).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || lineage(addr))
        .await
        .expect("lineage");
    server.stop().await;
}
