//! Global tables between two regions: two embedded servers, each the
//! other's peer region, driven by the AWS SDK for Rust. A replica added
//! with UpdateTable `ReplicaUpdates` gets the items written before and
//! every write after, both ways; conflicting writes converge on the later
//! one; deletes stay deleted; bad replica updates are refused.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateReplicationGroupMemberAction,
    DeleteReplicationGroupMemberAction, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, ProvisionedThroughput, ProvisionedThroughputOverride, Replica,
    ReplicaDescription, ReplicaGlobalSecondaryIndex, ReplicaUpdate, ReplicationGroupUpdate,
    ScalarAttributeType, TableClass, TableDescription, UpdateReplicationGroupMemberAction,
};
use dynaraft_api::ApiConfig;
use dynaraft_api::auth::Auth;
use dynaraft_chaos::global::Link;
use dynaraft_cluster::peer::{PeerCredentials, PeerRegions};
use dynaraft_tests::{TestServer, client_signed_as, create_table, err_of, scan_all};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

/// A free local address (the port is free when this returns).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// How a test region differs from the plain one.
#[derive(Default)]
struct Setup {
    /// What it signs its calls to the peer with.
    credentials: Option<PeerCredentials>,
    /// Users every request must be signed by.
    auth_file: Option<&'static str>,
    /// Size at which its partitions split, in bytes.
    split_bytes: Option<u64>,
    /// Serves HTTPS with this certificate.
    tls: Option<Arc<dynaraft_api::tls::Tls>>,
    /// Reaches its peer over HTTPS (as `localhost`).
    peer_https: bool,
    /// A PEM certificate it trusts beside the system's roots.
    peer_ca: Option<String>,
}

/// Region `region` at `addr`, with `peer` at `peer_addr` as its peer.
async fn region(region: &str, addr: SocketAddr, peer: &str, peer_addr: SocketAddr) -> TestServer {
    start_region(region, addr, (peer, peer_addr), Setup::default()).await
}

/// [`region`] as `setup` says.
async fn start_region(
    region: &str,
    addr: SocketAddr,
    (peer, peer_addr): (&str, SocketAddr),
    setup: Setup,
) -> TestServer {
    let spec = if setup.peer_https {
        format!("{peer}=https://localhost:{}", peer_addr.port())
    } else {
        format!("{peer}=http://{peer_addr}")
    };
    let ca = setup.peer_ca.as_deref().map(str::as_bytes);
    let peers = Arc::new(
        PeerRegions::parse_trusting(region, &[spec], setup.credentials, ca).expect("peers"),
    );
    let plain = TestServer::node_config(None);
    let node_cfg = dynaraft_cluster::embedded::EmbeddedConfig {
        peer_regions: Some(peers.clone()),
        split: dynaraft_cluster::split::SplitPolicy {
            size_bytes: setup.split_bytes.unwrap_or(plain.split.size_bytes),
            ..plain.split
        },
        ..plain
    };
    let auth = setup
        .auth_file
        .map(|f| Arc::new(Auth::parse(f, region).expect("auth file")));
    let cfg = ApiConfig {
        region: region.to_string(),
        peer_regions: Some(peers),
        auth,
        tls: setup.tls,
        ..TestServer::config()
    };
    TestServer::start_node_at(node_cfg, cfg, addr).await
}

/// Two regions, each the other's peer, and a client of each signing for
/// its region.
async fn two_regions() -> (TestServer, Client, TestServer, Client) {
    let (a, b) = (free_addr(), free_addr());
    let east = region(EAST, a, WEST, b).await;
    let west = region(WEST, b, EAST, a).await;
    let (ce, cw) = (
        client_signed_as(a, "AKID", EAST),
        client_signed_as(b, "AKID", WEST),
    );
    (east, ce, west, cw)
}

/// The fault harness's cuttable forwarder to `target`: the link between
/// two regions.
async fn link(target: SocketAddr) -> Link {
    Link::to(target).await.expect("link")
}

/// Two regions whose calls to each other go through links that can be cut.
async fn linked_regions() -> (TestServer, Client, TestServer, Client, Link, Link) {
    let (a, b) = (free_addr(), free_addr());
    let (to_west, to_east) = (link(b).await, link(a).await);
    let east = region(EAST, a, WEST, to_west.addr).await;
    let west = region(WEST, b, EAST, to_east.addr).await;
    let (ce, cw) = (
        client_signed_as(a, "AKID", EAST),
        client_signed_as(b, "AKID", WEST),
    );
    (east, ce, west, cw, to_west, to_east)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

async fn put(c: &Client, table: &str, pk: &str, v: &str) {
    c.put_item()
        .table_name(table)
        .item("pk", s(pk))
        .item("v", s(v))
        .send()
        .await
        .expect("put");
}

async fn delete(c: &Client, table: &str, pk: &str) {
    c.delete_item()
        .table_name(table)
        .key("pk", s(pk))
        .send()
        .await
        .expect("delete");
}

/// The table's items as pk -> v.
async fn contents(c: &Client, table: &str) -> BTreeMap<String, String> {
    scan_all(c, table, None)
        .await
        .into_iter()
        .map(|i: HashMap<String, AttributeValue>| {
            let text = |k: &str| match i.get(k) {
                Some(AttributeValue::S(v)) => v.clone(),
                other => format!("{other:?}"),
            };
            (text("pk"), text("v"))
        })
        .collect()
}

/// Waits up to `secs` for `check`, polling; panics with `what` if it never holds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn add_replica(c: &Client, table: &str, region: &str) -> Result<(), (String, String)> {
    let create = CreateReplicationGroupMemberAction::builder()
        .region_name(region)
        .build()
        .expect("action");
    c.update_table()
        .table_name(table)
        .replica_updates(ReplicationGroupUpdate::builder().create(create).build())
        .send()
        .await
        .map(drop)
        .map_err(|e| err_of(&e))
}

/// Makes `table` through `c` and asks for its replica in eu-west-1 (whose
/// client is `west`): refused with a ValidationException saying `why`,
/// and nothing made there.
async fn refused_replica(c: &Client, table: &str, west: &Client, why: &str) {
    create_table(c, table, None).await;
    let (code, msg) = add_replica(c, table, WEST).await.expect_err("refused");
    assert_eq!(code, "ValidationException");
    assert!(msg.contains(why), "{msg}");
    assert!(
        west.describe_table()
            .table_name(table)
            .send()
            .await
            .is_err()
    );
}

/// (region, status) of each replica DescribeTable lists.
async fn replicas(c: &Client, table: &str) -> Vec<(String, String)> {
    let d = c
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe");
    let t = d.table().expect("table");
    t.replicas()
        .iter()
        .map(|r| {
            let status = r.replica_status().map(|s| s.as_str().to_string());
            (
                r.region_name().unwrap_or_default().to_string(),
                status.unwrap_or_default(),
            )
        })
        .collect()
}

/// One DynamoDB Streams call to `addr`; its JSON answer.
fn streams_call(addr: SocketAddr, op: &str, body: serde_json::Value) -> serde_json::Value {
    let target = format!("DynamoDBStreams_20120810.{op}");
    let headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        dynaraft_tests::AUTH,
        ("X-Amz-Target", target.as_str()),
    ];
    let (status, _, text) =
        dynaraft_tests::raw_request(addr, None, &headers, body.to_string().as_bytes());
    assert_eq!(status, 200, "{op}: {text}");
    serde_json::from_str(&text).expect("json")
}

/// The partition keys of every record in `table`'s latest stream at
/// `addr`, from the trim horizon.
async fn stream_keys(c: &Client, addr: SocketAddr, table: &str) -> Vec<String> {
    let d = c
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe");
    let arn = d
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("a stream")
        .to_string();
    tokio::task::spawn_blocking(move || {
        let desc = streams_call(addr, "DescribeStream", serde_json::json!({"StreamArn": arn}));
        let shards = desc["StreamDescription"]["Shards"].as_array().cloned().unwrap_or_default();
        let mut keys = Vec::new();
        for shard in shards {
            let it = streams_call(addr, "GetShardIterator", serde_json::json!({
                "StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON",
            }));
            let mut iterator = it["ShardIterator"].clone();
            loop {
                let page = streams_call(addr, "GetRecords", serde_json::json!({"ShardIterator": iterator}));
                let records = page["Records"].as_array().cloned().unwrap_or_default();
                if records.is_empty() {
                    break;
                }
                keys.extend(records.iter().filter_map(|r| {
                    r["dynamodb"]["Keys"]["pk"]["S"].as_str().map(str::to_string)
                }));
                iterator = page["NextShardIterator"].clone();
            }
        }
        keys
    })
    .await
    .expect("stream reader")
}

/// Where each partition of `table` in `server`'s region stands in its
/// replication (`dynaraft admin replication` shows the same).
fn replication_of(
    server: &TestServer,
    table: &str,
) -> Vec<dynaraft_cluster::wire::ReplicationStatus> {
    let node = server.node().expect("embedded node");
    let meta = node.router.table(table).expect("table").meta.clone();
    meta.partitions
        .iter()
        .flat_map(|p| dynaraft_cluster::replicate::status(node.host.tree(), p.group))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_gets_the_items_written_before_and_every_write_after_both_ways() {
    let (east, ce, west, cw) = two_regions().await;
    create_table(&ce, "glob", None).await;
    for i in 0..300 {
        put(&ce, "glob", &format!("old{i}"), "east").await;
    }
    // Writes keep coming while the replica is added: none may be lost.
    let writer = {
        let ce = ce.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                put(&ce, "glob", &format!("during{i}"), "east").await;
            }
        })
    };
    add_replica(&ce, "glob", WEST).await.expect("add replica");
    writer.await.expect("writer");
    eventually(30, "the replica to be ACTIVE in us-east-1", || async {
        replicas(&ce, "glob").await == [(WEST.to_string(), "ACTIVE".to_string())]
    })
    .await;
    let d = cw
        .describe_table()
        .table_name("glob")
        .send()
        .await
        .expect("west describe");
    let t = d.table().expect("table");
    assert_eq!(t.global_table_version(), Some("2019.11.21"));
    assert_eq!(
        t.stream_specification()
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str()),
        Some("NEW_AND_OLD_IMAGES")
    );
    assert_eq!(
        replicas(&cw, "glob").await,
        [(EAST.to_string(), "ACTIVE".to_string())]
    );
    eventually(30, "every item in eu-west-1", || async {
        contents(&cw, "glob").await == contents(&ce, "glob").await
    })
    .await;
    assert_eq!(contents(&cw, "glob").await.len(), 500);
    eventually(30, "nothing left to send", || async {
        let st = replication_of(&east, "glob");
        !st.is_empty()
            && st
                .iter()
                .all(|s| s.region == WEST && s.copied && s.backlog == 0 && s.lag_ms == 0)
    })
    .await;

    // Each way, puts, updates and deletes.
    put(&cw, "glob", "from-west", "w").await;
    put(&ce, "glob", "old1", "changed in east").await;
    delete(&cw, "glob", "old2").await;
    eventually(30, "both regions to agree", || async {
        let (e, w) = (contents(&ce, "glob").await, contents(&cw, "glob").await);
        e == w
            && e.get("from-west").is_some_and(|v| v == "w")
            && !e.contains_key("old2")
            && w.get("old1").is_some_and(|v| v == "changed in east")
    })
    .await;
    // Each region's stream shows every write, wherever it was made.
    let (east_stream, west_stream) = (
        stream_keys(&ce, east.addr, "glob").await,
        stream_keys(&cw, west.addr, "glob").await,
    );
    for key in ["from-west", "old1", "old2"] {
        assert!(
            east_stream.iter().any(|k| k == key),
            "{key} in us-east-1's stream"
        );
        assert!(
            west_stream.iter().any(|k| k == key),
            "{key} in eu-west-1's stream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_writes_in_both_regions_converge_and_deleted_items_stay_deleted() {
    let (_east, ce, _west, cw) = two_regions().await;
    create_table(&ce, "conflicts", None).await;
    add_replica(&ce, "conflicts", WEST)
        .await
        .expect("add replica");
    eventually(30, "the replica in eu-west-1", || async {
        cw.describe_table()
            .table_name("conflicts")
            .send()
            .await
            .is_ok()
    })
    .await;
    // Both regions write the same ten keys at once, and delete some.
    let storm = |c: Client, who: &'static str| {
        tokio::spawn(async move {
            for round in 0..40 {
                for k in 0..10 {
                    let pk = format!("k{k}");
                    if (round + k) % 7 == 0 {
                        let _ = c
                            .delete_item()
                            .table_name("conflicts")
                            .key("pk", s(&pk))
                            .send()
                            .await;
                    } else {
                        put(&c, "conflicts", &pk, &format!("{who}{round}")).await;
                    }
                }
            }
        })
    };
    let (e, w) = (storm(ce.clone(), "east"), storm(cw.clone(), "west"));
    e.await.expect("east storm");
    w.await.expect("west storm");
    // Last, a delete in one region: it must win everywhere (a few
    // milliseconds later than every write before it, so no clock tie).
    tokio::time::sleep(Duration::from_millis(20)).await;
    delete(&cw, "conflicts", "k3").await;
    eventually(30, "identical contents", || async {
        contents(&ce, "conflicts").await == contents(&cw, "conflicts").await
    })
    .await;
    let final_contents = contents(&ce, "conflicts").await;
    assert!(!final_contents.contains_key("k3"), "{final_contents:?}");
    // It stays so: nothing is still on its way to bring k3 back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        contents(&ce, "conflicts").await,
        contents(&cw, "conflicts").await
    );
    assert!(!contents(&cw, "conflicts").await.contains_key("k3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_replica_updates_are_refused_and_change_nothing() {
    let (_east, ce, _west, cw) = two_regions().await;
    create_table(&ce, "bad", None).await;
    let refused = |r: Result<(), (String, String)>| r.expect_err("refused");
    let (code, msg) = refused(add_replica(&ce, "bad", "ap-south-1").await);
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("not a peer region"), "{msg}");
    let (code, msg) = refused(add_replica(&ce, "bad", EAST).await);
    assert_eq!(code, "ValidationException", "{msg}");
    assert!(
        msg.starts_with("Cannot add, delete, or update the local region"),
        "{msg}"
    );
    assert!(replicas(&ce, "bad").await.is_empty());
    assert!(cw.describe_table().table_name("bad").send().await.is_err());

    // The table exists in the other region already: refused, nothing made.
    create_table(&cw, "taken", None).await;
    create_table(&ce, "taken", None).await;
    let (code, msg) = refused(add_replica(&ce, "taken", WEST).await);
    assert_eq!(code, "ValidationException");
    assert_eq!(
        msg,
        "Failed to create a the new replica of table with name: \u{2018}taken\u{2019} because one or more replicas already existed as tables."
    );
    assert!(replicas(&ce, "taken").await.is_empty());

    // A server without peer regions has no replicas to make.
    let lone = TestServer::start().await;
    create_table(&lone.client, "lone", Some(("sk", ScalarAttributeType::N))).await;
    let (code, msg) = refused(add_replica(&lone.client, "lone", WEST).await);
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("--peer-region"), "{msg}");

    // A global table is not deleted while it has replicas; removing the
    // replica deletes the other region's table.
    add_replica(&ce, "bad", WEST).await.expect("add");
    let e = ce
        .delete_table()
        .table_name("bad")
        .send()
        .await
        .expect_err("refused");
    assert_eq!(err_of(&e).0, "ValidationException");
    let delete = DeleteReplicationGroupMemberAction::builder()
        .region_name(WEST)
        .build()
        .expect("action");
    ce.update_table()
        .table_name("bad")
        .replica_updates(ReplicationGroupUpdate::builder().delete(delete).build())
        .send()
        .await
        .expect("remove replica");
    assert!(replicas(&ce, "bad").await.is_empty());
    eventually(30, "the replica gone from eu-west-1", || async {
        cw.describe_table().table_name("bad").send().await.is_err()
    })
    .await;
    ce.delete_table()
        .table_name("bad")
        .send()
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_replication_calls_are_refused() {
    let (east, _ce, _west, _cw) = two_regions().await;
    let target = "DynaraftReplication_20261203.ApplyWrites";
    let headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        dynaraft_tests::AUTH,
        ("X-Amz-Target", target),
    ];
    // From a region that is not a peer, to a table that is not global,
    // and malformed: each refused with a ValidationException.
    create_table(&east.client, "plain", None).await;
    for body in [
        r#"{"TableName":"plain","SourceRegion":"ap-south-1","Writes":[]}"#,
        r#"{"TableName":"plain","SourceRegion":"eu-west-1","Writes":[]}"#,
        r#"{"TableName":"plain","SourceRegion":"eu-west-1"}"#,
        r#"{"SourceRegion":"eu-west-1","Writes":[{"Key":7}]}"#,
    ] {
        let (status, _, text) = east.raw(None, &headers, body.as_bytes());
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("ValidationException"), "{body}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_link_cut_each_key_ends_with_its_later_write_in_both_regions() {
    let (_east, ce, _west, cw, to_west, to_east) = linked_regions().await;
    create_table(&ce, "split-brain", None).await;
    for k in ["k", "j", "x", "y", "s"] {
        put(&ce, "split-brain", k, "before").await;
    }
    add_replica(&ce, "split-brain", WEST)
        .await
        .expect("add replica");
    eventually(30, "the replica to be ACTIVE", || async {
        replicas(&ce, "split-brain").await == [(WEST.to_string(), "ACTIVE".to_string())]
    })
    .await;
    eventually(30, "the copy in eu-west-1", || async {
        contents(&cw, "split-brain").await.len() == 5
    })
    .await;
    to_west.set(false);
    to_east.set(false);
    // Each pair: the first write in one region, the later one in the
    // other (a few milliseconds apart, so the clocks order them).
    let gap = || tokio::time::sleep(Duration::from_millis(30));
    put(&ce, "split-brain", "k", "east, earlier").await;
    gap().await;
    put(&cw, "split-brain", "k", "west, later").await;
    put(&cw, "split-brain", "j", "west, earlier").await;
    gap().await;
    put(&ce, "split-brain", "j", "east, later").await;
    put(&cw, "split-brain", "x", "west, earlier").await;
    gap().await;
    delete(&ce, "split-brain", "x").await;
    delete(&cw, "split-brain", "y").await;
    gap().await;
    put(&ce, "split-brain", "y", "east, after the delete").await;
    // Later writes that change nothing where they are made still win: a
    // delete of an item the region does not have, a put of the image it
    // has.
    put(&cw, "split-brain", "z", "west, earlier").await;
    put(&cw, "split-brain", "s", "west, earlier").await;
    gap().await;
    delete(&ce, "split-brain", "z").await;
    put(&ce, "split-brain", "s", "before").await;
    // Cut, the regions disagree; healed, they converge on the later writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(
        contents(&ce, "split-brain").await,
        contents(&cw, "split-brain").await
    );
    to_west.set(true);
    to_east.set(true);
    let expected: BTreeMap<String, String> = [
        ("j", "east, later"),
        ("k", "west, later"),
        ("s", "before"),
        ("y", "east, after the delete"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    eventually(30, "both regions to hold the later writes", || async {
        contents(&ce, "split-brain").await == expected
            && contents(&cw, "split-brain").await == expected
    })
    .await;
}

/// eu-west-1 authenticates every request. Its user for us-east-1 may
/// create replicas of tables named `shared*` and replicate writes to them;
/// a client of eu-west-1 is another user.
const WEST_USERS: &str = r#"{"users": [
  {"access_key_id": "EASTPEER", "secret_access_key": "east-secret", "account_id": "000000000000",
   "policies": [{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
     "Action": ["dynamodb:CreateTable", "dynamodb:CreateTableReplica", "dynamodb:DescribeTable",
                "dynamodb:ReplicateWrites"],
     "Resource": "arn:aws:dynamodb:*:*:table/shared*"}]}]},
  {"access_key_id": "WESTAPP", "secret_access_key": "westappsecret", "account_id": "000000000000",
   "policies": [{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:*",
     "Resource": "*"}]}]}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_authenticates_takes_only_signed_and_allowed_replication() {
    let (a, b) = (free_addr(), free_addr());
    let good = PeerCredentials {
        access_key_id: "EASTPEER".into(),
        secret_access_key: "east-secret".into(),
    };
    let setup = |credentials, auth_file| Setup {
        credentials,
        auth_file,
        ..Setup::default()
    };
    let _east = start_region(EAST, a, (WEST, b), setup(Some(good), None)).await;
    let _west = start_region(WEST, b, (EAST, a), setup(None, Some(WEST_USERS))).await;
    let ce = client_signed_as(a, "AKID", EAST);
    let cw = dynaraft_tests::client_with_secret(b, "WESTAPP", "westappsecret", WEST);
    // Allowed: the replica is made and writes flow both ways.
    create_table(&ce, "shared-orders", None).await;
    put(&ce, "shared-orders", "o1", "east").await;
    add_replica(&ce, "shared-orders", WEST)
        .await
        .expect("add replica");
    eventually(30, "the copy in eu-west-1", || async {
        contents(&cw, "shared-orders").await.len() == 1
    })
    .await;
    put(&cw, "shared-orders", "o2", "west").await;
    eventually(30, "eu-west-1's write in us-east-1", || async {
        contents(&ce, "shared-orders").await.len() == 2
    })
    .await;
    // Not allowed by the peer user's policy: refused, nothing made there.
    create_table(&ce, "private-orders", None).await;
    let (code, msg) = add_replica(&ce, "private-orders", WEST)
        .await
        .expect_err("refused");
    assert_eq!(code, "ValidationException");
    assert!(msg.contains("AccessDenied"), "{msg}");
    assert!(replicas(&ce, "private-orders").await.is_empty());
    assert!(
        cw.describe_table()
            .table_name("private-orders")
            .send()
            .await
            .is_err()
    );

    // A region signing with a secret eu-west-1 does not know is refused.
    let c = free_addr();
    let forged = PeerCredentials {
        access_key_id: "EASTPEER".into(),
        secret_access_key: "guessed".into(),
    };
    let _impostor = start_region(EAST, c, (WEST, b), setup(Some(forged), None)).await;
    let ci = client_signed_as(c, "AKID", EAST);
    refused_replica(&ci, "shared-impostor", &cw, "InvalidSignature").await;
}

/// Size at which the splitting regions' partitions split, in bytes.
const SPLIT_BYTES: u64 = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_goes_on_while_both_regions_split() {
    let (a, b) = (free_addr(), free_addr());
    let splitting = || Setup {
        split_bytes: Some(SPLIT_BYTES),
        ..Setup::default()
    };
    let east = start_region(EAST, a, (WEST, b), splitting()).await;
    let west = start_region(WEST, b, (EAST, a), splitting()).await;
    let (ce, cw) = (
        client_signed_as(a, "AKID", EAST),
        client_signed_as(b, "AKID", WEST),
    );
    create_table(&ce, "growing", None).await;
    for i in 0..100 {
        put(&ce, "growing", &format!("e{i:03}"), &"x".repeat(200)).await;
    }
    add_replica(&ce, "growing", WEST)
        .await
        .expect("add replica");
    // Both regions write while their partitions split under them.
    for i in 0..300 {
        put(
            &ce,
            "growing",
            &format!("e{:03}", 100 + i),
            &"x".repeat(200),
        )
        .await;
        put(&cw, "growing", &format!("w{i:03}"), &"y".repeat(200)).await;
    }
    let partitions = |s: &TestServer| {
        s.node()
            .and_then(|n| n.router.table("growing"))
            .map_or(0, |t| t.meta.partitions.len())
    };
    eventually(60, "both regions to split and agree", || async {
        let (e, w) = (
            contents(&ce, "growing").await,
            contents(&cw, "growing").await,
        );
        partitions(&east) > 1 && partitions(&west) > 1 && e.len() == 700 && e == w
    })
    .await;
    eventually(30, "the replica to be ACTIVE", || async {
        replicas(&ce, "growing").await == [(WEST.to_string(), "ACTIVE".to_string())]
    })
    .await;
    // Every partition, children included, replicates and has nothing left.
    eventually(30, "every partition caught up", || async {
        let st = replication_of(&east, "growing");
        st.len() == partitions(&east) && st.iter().all(|s| s.copied && s.backlog == 0)
    })
    .await;
}

/// ProvisionedThroughput of `read` and `write` units.
fn units(read: i64, write: i64) -> ProvisionedThroughput {
    ProvisionedThroughput::builder()
        .read_capacity_units(read)
        .write_capacity_units(write)
        .build()
        .expect("throughput")
}

/// A read capacity override of `read` units.
fn read_override(read: i64) -> ProvisionedThroughputOverride {
    ProvisionedThroughputOverride::builder()
        .read_capacity_units(read)
        .build()
}

/// A provisioned table (5/5) with a global index `byv` (3/3).
async fn create_provisioned(c: &Client, table: &str) {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attr")
    };
    let hash = |n: &str| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(KeyType::Hash)
            .build()
            .expect("key")
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name("byv")
        .key_schema(hash("v"))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .provisioned_throughput(units(3, 3))
        .build()
        .expect("index");
    c.create_table()
        .table_name(table)
        .billing_mode(BillingMode::Provisioned)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("v"))
        .key_schema(hash("pk"))
        .provisioned_throughput(units(5, 5))
        .global_secondary_indexes(index)
        .send()
        .await
        .expect("create");
}

async fn table_of(c: &Client, table: &str) -> TableDescription {
    let d = c
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe");
    d.table().expect("table").clone()
}

/// The table's Replicas entry for `region`.
fn replica_in(t: &TableDescription, region: &str) -> ReplicaDescription {
    t.replicas()
        .iter()
        .find(|r| r.region_name() == Some(region))
        .unwrap_or_else(|| panic!("no replica in {region}: {:?}", t.replicas()))
        .clone()
}

/// The table's own read capacity and its index `byv`'s.
fn reads(t: &TableDescription) -> (Option<i64>, Option<i64>) {
    let table = t
        .provisioned_throughput()
        .and_then(|p| p.read_capacity_units());
    let index = t
        .global_secondary_indexes()
        .iter()
        .find(|g| g.index_name() == Some("byv"))
        .and_then(|g| g.provisioned_throughput())
        .and_then(|p| p.read_capacity_units());
    (table, index)
}

/// The read capacity overrides a Replicas entry shows: the table's and
/// index `byv`'s.
fn overrides(r: &ReplicaDescription) -> (Option<i64>, Option<i64>) {
    let table = r
        .provisioned_throughput_override()
        .and_then(|o| o.read_capacity_units());
    let index = r
        .global_secondary_indexes()
        .iter()
        .find(|g| g.index_name() == Some("byv"))
        .and_then(|g| g.provisioned_throughput_override())
        .and_then(|o| o.read_capacity_units());
    (table, index)
}

async fn replica_update(
    c: &Client,
    table: &str,
    updates: Vec<ReplicationGroupUpdate>,
) -> Result<(), (String, String)> {
    c.update_table()
        .table_name(table)
        .set_replica_updates(Some(updates))
        .send()
        .await
        .map(drop)
        .map_err(|e| err_of(&e))
}

fn update_of(action: UpdateReplicationGroupMemberAction) -> ReplicationGroupUpdate {
    ReplicationGroupUpdate::builder().update(action).build()
}

fn update_action(
    region: &str,
) -> aws_sdk_dynamodb::types::builders::UpdateReplicationGroupMemberActionBuilder {
    UpdateReplicationGroupMemberAction::builder().region_name(region)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_overrides_set_each_regions_read_capacity_and_show_where_they_differ() {
    let (_east, ce, _west, cw) = two_regions().await;
    create_provisioned(&ce, "over").await;
    // Created with a read override: the new region's table reads at it.
    let create = CreateReplicationGroupMemberAction::builder()
        .region_name(WEST)
        .provisioned_throughput_override(read_override(7))
        .build()
        .expect("action");
    replica_update(
        &ce,
        "over",
        vec![ReplicationGroupUpdate::builder().create(create).build()],
    )
    .await
    .expect("add replica");
    let (e, w) = (table_of(&ce, "over").await, table_of(&cw, "over").await);
    assert_eq!(reads(&w), (Some(7), Some(3)));
    assert_eq!(reads(&e), (Some(5), Some(3)));
    assert_eq!(
        e.global_table_settings_replication_mode()
            .map(|m| m.as_str()),
        Some("ENABLED_WITH_OVERRIDES")
    );
    // Each region shows the other's read capacity where it differs from
    // its own.
    assert_eq!(overrides(&replica_in(&e, WEST)), (Some(7), None));
    assert_eq!(overrides(&replica_in(&w, EAST)), (Some(5), None));

    // Update: the table's and the index's reads, and the table class.
    let index = ReplicaGlobalSecondaryIndex::builder()
        .index_name("byv")
        .provisioned_throughput_override(read_override(4))
        .build()
        .expect("index override");
    let action = update_action(WEST)
        .provisioned_throughput_override(read_override(9))
        .global_secondary_indexes(index)
        .table_class_override(TableClass::StandardInfrequentAccess)
        .build()
        .expect("action");
    replica_update(&ce, "over", vec![update_of(action)])
        .await
        .expect("update replica");
    let (e, w) = (table_of(&ce, "over").await, table_of(&cw, "over").await);
    assert_eq!(reads(&w), (Some(9), Some(4)));
    assert_eq!(
        reads(&e),
        (Some(5), Some(3)),
        "this region's own table is unchanged"
    );
    let west = replica_in(&e, WEST);
    assert_eq!(overrides(&west), (Some(9), Some(4)));
    assert_eq!(
        west.replica_table_class_summary()
            .and_then(|c| c.table_class()),
        Some(&TableClass::StandardInfrequentAccess)
    );
    assert_eq!(overrides(&replica_in(&w, EAST)), (Some(5), Some(3)));

    // Sending the base value clears an override, from either region.
    let action = update_action(EAST)
        .provisioned_throughput_override(read_override(9))
        .build()
        .expect("action");
    replica_update(&cw, "over", vec![update_of(action)])
        .await
        .expect("update from west");
    let (e, w) = (table_of(&ce, "over").await, table_of(&cw, "over").await);
    assert_eq!(reads(&e), (Some(9), Some(3)));
    assert_eq!(overrides(&replica_in(&w, EAST)), (None, Some(3)));
    assert_eq!(overrides(&replica_in(&e, WEST)), (None, Some(4)));

    // Refused, as DynamoDB refuses them, changing nothing.
    let refused = |r: Result<(), (String, String)>| {
        let (code, msg) = r.expect_err("refused");
        assert_eq!(code, "ValidationException", "{msg}");
        msg
    };
    let msg = refused(
        replica_update(
            &ce,
            "over",
            vec![update_of(update_action(WEST).build().expect("a"))],
        )
        .await,
    );
    assert_eq!(
        msg,
        "There are no actions specified in the Replica Update Action of the request."
    );
    let local = update_action(EAST).provisioned_throughput_override(read_override(2));
    let msg =
        refused(replica_update(&ce, "over", vec![update_of(local.build().expect("a"))]).await);
    assert!(
        msg.starts_with("Cannot add, delete, or update the local region"),
        "{msg}"
    );
    let stranger = update_action("ap-south-1").provisioned_throughput_override(read_override(2));
    let msg =
        refused(replica_update(&ce, "over", vec![update_of(stranger.build().expect("a"))]).await);
    assert_eq!(
        msg,
        "Update global table operation failed because one or more replicas were not part of the global table. Please retry the request without these replicas: [ap-south-1]."
    );
    let create = |r: &str| {
        let a = CreateReplicationGroupMemberAction::builder()
            .region_name(r)
            .build();
        ReplicationGroupUpdate::builder()
            .create(a.expect("a"))
            .build()
    };
    let delete = DeleteReplicationGroupMemberAction::builder()
        .region_name(WEST)
        .build();
    let both = ReplicationGroupUpdate::builder()
        .create(
            CreateReplicationGroupMemberAction::builder()
                .region_name(WEST)
                .build()
                .expect("a"),
        )
        .delete(delete.expect("a"))
        .build();
    let msg = refused(replica_update(&ce, "over", vec![both]).await);
    assert_eq!(
        msg,
        "Update table operation with more than one type of replica actions not allowed."
    );
    let msg = refused(replica_update(&ce, "over", vec![create("ap-south-1"), create(WEST)]).await);
    assert_eq!(
        msg,
        "Update table operation with more than one create or delete replica actions not allowed."
    );
    let mixed = ce
        .update_table()
        .table_name("over")
        .replica_updates(create("ap-south-1"))
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect_err("refused");
    assert_eq!(
        err_of(&mixed).1,
        "Requests that modify replicas or witnesses must not also modify other fields"
    );
    let unknown_index = ReplicaGlobalSecondaryIndex::builder()
        .index_name("nope")
        .provisioned_throughput_override(read_override(2))
        .build()
        .expect("index");
    let action = update_action(WEST).global_secondary_indexes(unknown_index);
    refused(replica_update(&ce, "over", vec![update_of(action.build().expect("a"))]).await);
    let (e, w) = (table_of(&ce, "over").await, table_of(&cw, "over").await);
    assert_eq!(
        (reads(&e), reads(&w)),
        ((Some(9), Some(3)), (Some(9), Some(4)))
    );
    assert!(!w.deletion_protection_enabled().unwrap_or(false));

    // A throughput change in any region is the group's: every replica
    // takes it and no override is left.
    ce.update_table()
        .table_name("over")
        .provisioned_throughput(units(6, 6))
        .send()
        .await
        .expect("throughput");
    let (e, w) = (table_of(&ce, "over").await, table_of(&cw, "over").await);
    assert_eq!(
        (reads(&e), reads(&w)),
        ((Some(6), Some(3)), (Some(6), Some(4)))
    );
    let writes = |t: &TableDescription| {
        t.provisioned_throughput()
            .and_then(|p| p.write_capacity_units())
    };
    assert_eq!((writes(&e), writes(&w)), (Some(6), Some(6)));
    assert_eq!(overrides(&replica_in(&e, WEST)), (None, Some(4)));
    assert_eq!(overrides(&replica_in(&w, EAST)), (None, Some(3)));

    // An on-demand table takes no read override in an Update.
    create_table(&ce, "ondemand", None).await;
    add_replica(&ce, "ondemand", WEST).await.expect("add");
    let action = update_action(WEST).provisioned_throughput_override(read_override(2));
    let msg =
        refused(replica_update(&ce, "ondemand", vec![update_of(action.build().expect("a"))]).await);
    assert!(
        msg.contains("Neither ReadCapacityUnits nor WriteCapacityUnits"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_global_table_calls_answer_as_dynamodb_does_today() {
    let (_east, ce, _west, _cw) = two_regions().await;
    create_table(&ce, "legacy", None).await;
    let group = Replica::builder().region_name(EAST).build();
    let e = ce
        .create_global_table()
        .global_table_name("legacy")
        .replication_group(group)
        .send()
        .await
        .expect_err("refused");
    assert_eq!(
        err_of(&e),
        (
            "ValidationException".to_string(),
            "One or more parameter values were invalid: DynamoDB global tables version 2017.11.29 is not supported. We recommend using DynamoDB global tables version 2019.11.21, instead of version 2017.11.29 (Legacy).".to_string()
        )
    );
    // A version 2019.11.21 global table is no legacy global table either.
    add_replica(&ce, "legacy", WEST).await.expect("add");
    let e = ce
        .describe_global_table()
        .global_table_name("legacy")
        .send()
        .await
        .expect_err("not found");
    assert_eq!(
        err_of(&e),
        (
            "GlobalTableNotFoundException".to_string(),
            "Global table not found: Global table with name: 'legacy' does not exist.".to_string()
        )
    );
    let listed = ce.list_global_tables().send().await.expect("list");
    assert!(listed.global_tables().is_empty());
    assert!(listed.last_evaluated_global_table_name().is_none());
    let delete = ReplicaUpdate::builder()
        .delete(
            aws_sdk_dynamodb::types::DeleteReplicaAction::builder()
                .region_name(WEST)
                .build()
                .expect("a"),
        )
        .build();
    let e = ce
        .update_global_table()
        .global_table_name("legacy")
        .replica_updates(delete)
        .send()
        .await
        .expect_err("not found");
    assert_eq!(err_of(&e).0, "GlobalTableNotFoundException");
    let e = ce
        .describe_global_table_settings()
        .global_table_name("legacy")
        .send()
        .await
        .expect_err("not found");
    assert_eq!(
        err_of(&e).1,
        "Global table with name: 'legacy' does not exist."
    );

    // DescribeTableReplicaAutoScaling: every replica, no auto scaling.
    let d = ce
        .describe_table_replica_auto_scaling()
        .table_name("legacy")
        .send()
        .await
        .expect("describe");
    let d = d.table_auto_scaling_description().expect("description");
    let regions: Vec<_> = d
        .replicas()
        .iter()
        .filter_map(|r| r.region_name())
        .collect();
    assert_eq!(regions, vec![EAST, WEST]);
    assert!(d.replicas().iter().all(|r| {
        r.replica_provisioned_read_capacity_auto_scaling_settings()
            .is_none()
    }));
    create_table(&ce, "regional", None).await;
    let e = ce
        .describe_table_replica_auto_scaling()
        .table_name("regional")
        .send()
        .await
        .expect_err("not global");
    assert_eq!(
        err_of(&e),
        (
            "ResourceNotFoundException".to_string(),
            "Global table with name: regional does not exist.".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexes_and_time_to_live_change_in_every_region_and_protection_stays_regional() {
    let (_east, ce, _west, cw) = two_regions().await;
    create_table(&ce, "shared", None).await;
    add_replica(&ce, "shared", WEST).await.expect("add");
    // A global index added in one region is added in the other, which
    // indexes its own copy of every item.
    let index = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
        .index_name("byv")
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("v")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .expect("index");
    ce.update_table()
        .table_name("shared")
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("v")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .global_secondary_index_updates(
            aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                .create(index)
                .build(),
        )
        .send()
        .await
        .expect("add index");
    let w = table_of(&cw, "shared").await;
    let names: Vec<_> = w
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    assert_eq!(names, vec!["byv"]);
    put(&ce, "shared", "k1", "blue").await;
    eventually(30, "the write indexed in eu-west-1", || async {
        let q = cw
            .query()
            .table_name("shared")
            .index_name("byv")
            .key_condition_expression("v = :v")
            .expression_attribute_values(":v", s("blue"))
            .send()
            .await;
        q.map(|q| q.count() == 1).unwrap_or(false)
    })
    .await;

    // Time to live set in the other region holds in this one.
    let ttl = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name("expires")
        .build()
        .expect("ttl");
    cw.update_time_to_live()
        .table_name("shared")
        .time_to_live_specification(ttl)
        .send()
        .await
        .expect("ttl");
    let d = ce
        .describe_time_to_live()
        .table_name("shared")
        .send()
        .await
        .expect("ttl");
    let d = d.time_to_live_description().expect("description");
    assert_eq!(d.attribute_name(), Some("expires"));

    // Deletion protection is each region's own; the stream is the group's.
    ce.update_table()
        .table_name("shared")
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("protect");
    assert_eq!(
        table_of(&ce, "shared").await.deletion_protection_enabled(),
        Some(true)
    );
    assert_eq!(
        table_of(&cw, "shared").await.deletion_protection_enabled(),
        Some(false)
    );
    let e = cw
        .update_table()
        .table_name("shared")
        .stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(false)
                .build()
                .expect("spec"),
        )
        .send()
        .await
        .expect_err("refused");
    assert_eq!(
        err_of(&e).1,
        "Disabling Stream is not allowed for a Global Table replica."
    );

    // Deleting the index in one region deletes it in both.
    ce.update_table()
        .table_name("shared")
        .global_secondary_index_updates(
            aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                .delete(
                    aws_sdk_dynamodb::types::DeleteGlobalSecondaryIndexAction::builder()
                        .index_name("byv")
                        .build()
                        .expect("delete"),
                )
                .build(),
        )
        .send()
        .await
        .expect("delete index");
    eventually(30, "the index gone from eu-west-1", || async {
        table_of(&cw, "shared")
            .await
            .global_secondary_indexes()
            .is_empty()
    })
    .await;
}

/// A self-signed certificate for `localhost`: (cert PEM, key PEM).
fn localhost_certificate() -> (String, String) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_replicate_over_https_and_refuse_a_certificate_they_do_not_trust() {
    let (cert, key) = localhost_certificate();
    let dir = std::env::temp_dir().join(format!("dynaraft-peer-tls-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, &cert).expect("cert");
    std::fs::write(&key_file, &key).expect("key");
    let tls = || {
        Some(Arc::new(
            dynaraft_api::tls::Tls::load(&cert_file, &key_file).expect("tls"),
        ))
    };
    // eu-west-1 serves HTTPS only; us-east-1 reaches it trusting its
    // certificate, and eu-west-1 reaches us-east-1 over plain HTTP.
    let (a, b) = (free_addr(), free_addr());
    let https_peer = Setup {
        peer_https: true,
        peer_ca: Some(cert.clone()),
        ..Setup::default()
    };
    let _east = start_region(EAST, a, (WEST, b), https_peer).await;
    let secure = Setup {
        tls: tls(),
        ..Setup::default()
    };
    let _west = start_region(WEST, b, (EAST, a), secure).await;
    let ce = client_signed_as(a, "AKID", EAST);
    create_table(&ce, "secure", None).await;
    put(&ce, "secure", "before", "1").await;
    add_replica(&ce, "secure", WEST)
        .await
        .expect("add replica over https");
    put(&ce, "secure", "after", "2").await;
    // Read in eu-west-1 over HTTPS, as its clients do.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            aws_smithy_http_client::tls::TlsContext::builder()
                .with_trust_store(
                    aws_smithy_http_client::tls::TrustStore::empty()
                        .with_pem_certificate(cert.as_bytes()),
                )
                .build()
                .expect("tls context"),
        )
        .build_https();
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(WEST))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "AKID", "s", None, None, "test",
        ))
        .http_client(http)
        .endpoint_url(format!("https://localhost:{}", b.port()))
        .build();
    let cw = Client::from_conf(conf);
    let want = BTreeMap::from([
        ("after".to_string(), "2".to_string()),
        ("before".to_string(), "1".to_string()),
    ]);
    eventually(30, "both writes in eu-west-1", || async {
        contents(&cw, "secure").await == want
    })
    .await;

    // A region that trusts only the system's roots refuses the
    // self-signed certificate: nothing is made.
    let c = free_addr();
    let untrusting = Setup {
        peer_https: true,
        ..Setup::default()
    };
    let _other = start_region(EAST, c, (WEST, b), untrusting).await;
    let co = client_signed_as(c, "AKID", EAST);
    refused_replica(&co, "untrusted", &cw, "TLS").await;
}
