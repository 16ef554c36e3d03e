//! Table lifecycle through the Rust SDK.
//! Checks: API Reference CreateTable, DescribeTable, ListTables,
//! UpdateTable, DeleteTable, TagResource/UntagResource/ListTagsOfResource,
//! DescribeLimits, DescribeEndpoints.

use aws_sdk_dynamodb::types::*;
use dynaraft_tests::av::s;
use dynaraft_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_list_delete() {
    let t = TestServer::start().await;
    let c = &t.client;
    for name in ["alpha", "beta", "gamma", "delta"] {
        create_table(c, name, Some(("sk", ScalarAttributeType::N))).await;
    }
    let d = c.describe_table().table_name("alpha").send().await.unwrap();
    let table = d.table().unwrap();
    assert_eq!(table.table_status(), Some(&TableStatus::Active));
    assert_eq!(table.key_schema().len(), 2);
    assert_eq!(
        table.table_arn(),
        Some("arn:aws:dynamodb:us-east-1:000000000000:table/alpha")
    );
    assert_eq!(
        table.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    // ListTables pages in name order.
    let p1 = c.list_tables().limit(3).send().await.unwrap();
    assert_eq!(p1.table_names(), ["alpha", "beta", "delta"]);
    assert_eq!(p1.last_evaluated_table_name(), Some("delta"));
    let p2 = c
        .list_tables()
        .limit(3)
        .exclusive_start_table_name("delta")
        .send()
        .await
        .unwrap();
    assert_eq!(p2.table_names(), ["gamma"]);
    assert_eq!(p2.last_evaluated_table_name(), None);

    // Creating it again is ResourceInUseException.
    let e = c
        .create_table()
        .table_name("alpha")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "ResourceInUseException".into(),
            "Table already exists: alpha".into()
        )
    );

    let del = c.delete_table().table_name("alpha").send().await.unwrap();
    assert_eq!(
        del.table_description().unwrap().table_status(),
        Some(&TableStatus::Deleting)
    );
    let e = c
        .describe_table()
        .table_name("alpha")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "ResourceNotFoundException".into(),
            "Requested resource not found: Table: alpha not found".into()
        )
    );
    let e = c
        .get_item()
        .table_name("alpha")
        .key("pk", av::s("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "ResourceNotFoundException".into(),
            "Requested resource not found".into()
        )
    );
    t.stop().await;
}

/// Status transitions: CREATING -> ACTIVE, DELETING -> gone, like DynamoDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_transitions_take_time() {
    let t = TestServer::start_with(None, 300).await;
    let c = &t.client;
    let r = c
        .create_table()
        .table_name("slow")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.table_description().unwrap().table_status(),
        Some(&TableStatus::Creating)
    );
    let e = c
        .put_item()
        .table_name("slow")
        .item("pk", av::s("a"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_of(&e).0, "ResourceNotFoundException");
    let mut active = false;
    for _ in 0..50 {
        let d = c.describe_table().table_name("slow").send().await.unwrap();
        if d.table().unwrap().table_status() == Some(&TableStatus::Active) {
            active = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(active, "table never became ACTIVE");
    c.put_item()
        .table_name("slow")
        .item("pk", av::s("a"))
        .send()
        .await
        .unwrap();
    c.delete_table().table_name("slow").send().await.unwrap();
    let d = c.describe_table().table_name("slow").send().await.unwrap();
    assert_eq!(
        d.table().unwrap().table_status(),
        Some(&TableStatus::Deleting)
    );
    let mut gone = false;
    for _ in 0..50 {
        if c.describe_table().table_name("slow").send().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "table never went away");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_validation_messages() {
    let t = TestServer::start().await;
    let c = &t.client;
    let ad = |n: &str, ty| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ty)
            .build()
            .unwrap()
    };
    let ks = |n: &str, ty| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(ty)
            .build()
            .unwrap()
    };

    let e = c
        .create_table()
        .table_name("ab")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(ad("pk", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "1 validation error detected: Value 'ab' at 'tableName' failed to satisfy constraint: Member must have length greater than or equal to 3"
    );

    let e = c
        .create_table()
        .table_name("t-1")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(ad("pk", ScalarAttributeType::S))
        .attribute_definitions(ad("extra", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions"
    );

    let e = c
        .create_table()
        .table_name("t-2")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(ad("id", ScalarAttributeType::S))
        .key_schema(ks("user", KeyType::Hash))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [user], AttributeDefinitions: [id]"
    );

    let e = c
        .create_table()
        .table_name("t-3")
        .attribute_definitions(ad("pk", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Hash))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED"
    );

    let e = c
        .create_table()
        .table_name("t-4")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(ad("pk", ScalarAttributeType::S))
        .key_schema(ks("pk", KeyType::Range))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e).1,
        "Invalid KeySchema: The first KeySchemaElement is not a HASH key type"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_table_tags_limits_endpoints() {
    let t = TestServer::start().await;
    let c = &t.client;
    c.create_table()
        .table_name("prov")
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .provisioned_throughput(
            ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let pt = |r, w| {
        ProvisionedThroughput::builder()
            .read_capacity_units(r)
            .write_capacity_units(w)
            .build()
            .unwrap()
    };
    let u = c
        .update_table()
        .table_name("prov")
        .provisioned_throughput(pt(10, 5))
        .send()
        .await
        .unwrap();
    let d = u
        .table_description()
        .unwrap()
        .provisioned_throughput()
        .unwrap();
    assert_eq!(
        (d.read_capacity_units(), d.write_capacity_units()),
        (Some(10), Some(5))
    );
    assert!(d.last_increase_date_time().is_some());
    let e = c
        .update_table()
        .table_name("prov")
        .provisioned_throughput(pt(10, 5))
        .send()
        .await
        .unwrap_err();
    assert!(
        err_of(&e)
            .1
            .starts_with("The provisioned throughput for the table will not change."),
        "{:?}",
        err_of(&e)
    );
    let u = c
        .update_table()
        .table_name("prov")
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    assert_eq!(
        u.table_description()
            .unwrap()
            .billing_mode_summary()
            .and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );

    let arn = "arn:aws:dynamodb:us-east-1:000000000000:table/prov";
    c.tag_resource()
        .resource_arn(arn)
        .tags(Tag::builder().key("env").value("test").build().unwrap())
        .tags(Tag::builder().key("team").value("db").build().unwrap())
        .send()
        .await
        .unwrap();
    c.untag_resource()
        .resource_arn(arn)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().len(), 1);
    assert_eq!(tags.tags()[0].key(), "env");

    let l = c.describe_limits().send().await.unwrap();
    assert_eq!(l.table_max_read_capacity_units(), Some(40000));
    let ep = c.describe_endpoints().send().await.unwrap();
    assert_eq!(ep.endpoints().len(), 1);
    t.stop().await;
}

/// Developer Guide "Time to Live (TTL)": items whose TTL attribute (epoch
/// seconds, a Number) is in the past are deleted; other types, future times
/// and times more than five years past are left alone. Terraform reads
/// DescribeTimeToLive and DescribeContinuousBackups on every refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_and_continuous_backups() {
    let t = TestServer::start().await;
    let c = &t.client;
    create_table(c, "ttl-table", None).await;
    let d = c
        .describe_time_to_live()
        .table_name("ttl-table")
        .send()
        .await
        .unwrap();
    assert_eq!(
        d.time_to_live_description().unwrap().time_to_live_status(),
        Some(&TimeToLiveStatus::Disabled)
    );
    let spec = |on: bool| {
        TimeToLiveSpecification::builder()
            .enabled(on)
            .attribute_name("expires")
            .build()
            .unwrap()
    };
    let u = c
        .update_time_to_live()
        .table_name("ttl-table")
        .time_to_live_specification(spec(true))
        .send()
        .await
        .unwrap();
    assert_eq!(
        u.time_to_live_specification().unwrap().attribute_name(),
        "expires"
    );
    let e = c
        .update_time_to_live()
        .table_name("ttl-table")
        .time_to_live_specification(spec(true))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "ValidationException".into(),
            "TimeToLive is already enabled".into()
        )
    );
    let d = c
        .describe_time_to_live()
        .table_name("ttl-table")
        .send()
        .await
        .unwrap();
    let desc = d.time_to_live_description().unwrap();
    assert_eq!(
        (desc.time_to_live_status(), desc.attribute_name()),
        (Some(&TimeToLiveStatus::Enabled), Some("expires"))
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (pk, v) in [
        ("expired", Some(av::n(&(now - 60).to_string()))),
        ("future", Some(av::n(&(now + 3600).to_string()))),
        (
            "ancient",
            Some(av::n(&(now - 6 * 365 * 24 * 3600).to_string())),
        ),
        ("string-ttl", Some(av::s(&(now - 60).to_string()))),
        ("no-ttl", None),
    ] {
        let mut req = c.put_item().table_name("ttl-table").item("pk", av::s(pk));
        if let Some(v) = v {
            req = req.item("expires", v);
        }
        req.send().await.unwrap();
    }
    let mut gone = false;
    for _ in 0..60 {
        let g = c
            .get_item()
            .table_name("ttl-table")
            .key("pk", av::s("expired"))
            .send()
            .await
            .unwrap();
        if g.item().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "expired item was not deleted by the sweeper");
    let left = c.scan().table_name("ttl-table").send().await.unwrap();
    assert_eq!(left.count(), 4, "only the expired item goes");

    c.update_time_to_live()
        .table_name("ttl-table")
        .time_to_live_specification(spec(false))
        .send()
        .await
        .unwrap();
    let d = c
        .describe_continuous_backups()
        .table_name("ttl-table")
        .send()
        .await
        .unwrap();
    let cb = d.continuous_backups_description().unwrap();
    assert_eq!(
        cb.point_in_time_recovery_description()
            .and_then(|p| p.point_in_time_recovery_status()),
        Some(&PointInTimeRecoveryStatus::Disabled)
    );
    let e = c
        .describe_continuous_backups()
        .table_name("nope-table")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_of(&e),
        (
            "TableNotFoundException".into(),
            "Table not found: nope-table".into()
        )
    );
    t.stop().await;
}

/// Item writes racing a DeleteTable of their table get
/// ResourceNotFoundException (or succeed, if they won the race), never a
/// 503: the table was there when the request was checked and gone when it
/// was routed. DynamoDB reports such a write as a missing table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_delete_table_see_resource_not_found() {
    let t = TestServer::start().await;
    let c = t.client.clone();
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..RACE_ROUNDS {
        create_table(&c, "race", None).await;
        let puts: Vec<_> = (0..RACE_WRITERS)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.put_item()
                        .table_name("race")
                        .item("pk", s(&format!("r{round}-{i}")))
                        .send()
                        .await
                })
            })
            .collect();
        c.delete_table().table_name("race").send().await.unwrap();
        for p in puts {
            let code = match p.await.unwrap() {
                Ok(_) => "ok".to_string(),
                Err(e) => err_of(&e).0,
            };
            *outcomes.entry(code).or_default() += 1;
        }
    }
    let unexpected: Vec<_> = outcomes
        .keys()
        .filter(|k| *k != "ok" && *k != "ResourceNotFoundException")
        .collect();
    eprintln!("racing writes: {outcomes:?}");
    assert!(unexpected.is_empty(), "outcomes: {outcomes:?}");
    t.stop().await;
}

/// Rounds of create, concurrent writes and delete in the race test.
const RACE_ROUNDS: usize = 20;
/// Writers racing each DeleteTable.
const RACE_WRITERS: usize = 20;

/// Polls DescribeTable until `name` is ACTIVE (`Some`) or gone (`None`).
async fn wait_status(c: &aws_sdk_dynamodb::Client, name: &str, want: Option<TableStatus>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = match c.describe_table().table_name(name).send().await {
            Ok(d) => d.table().and_then(|t| t.table_status()).cloned(),
            Err(_) => None,
        };
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Without a shared database (DynamoDB Local without -sharedDb), each
/// access key id and region has its own tables: the same name can be
/// created by each, ListTables shows only the caller's, items do not leak,
/// and ARNs carry the region the request is signed for. Tags by ARN reach
/// only the caller's table. Status transitions (delayed here) reach the
/// caller's table too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_kept_apart_per_access_key_and_region_unless_shared() {
    let cfg = dynaraft_api::ApiConfig {
        shared_db: false,
        transition_delay_ms: 50,
        ..TestServer::config()
    };
    let t = TestServer::start_config(None, cfg).await;
    let alice = client_signed_as(t.addr, "ALICE", "us-east-1");
    let bob = client_signed_as(t.addr, "BOB", "us-east-1");
    let alice_eu = client_signed_as(t.addr, "ALICE", "eu-west-1");
    for (c, who) in [(&alice, "alice"), (&bob, "bob"), (&alice_eu, "alice-eu")] {
        create_table(c, "shared_name", None).await;
        wait_status(c, "shared_name", Some(TableStatus::Active)).await;
        c.put_item()
            .table_name("shared_name")
            .item("pk", s("k"))
            .item("owner", s(who))
            .send()
            .await
            .expect("put");
    }
    create_table(&alice, "only_alice", None).await;
    let names = |c: &aws_sdk_dynamodb::Client| {
        let c = c.clone();
        async move {
            c.list_tables()
                .send()
                .await
                .expect("list")
                .table_names()
                .to_vec()
        }
    };
    assert_eq!(names(&alice).await, ["only_alice", "shared_name"]);
    assert_eq!(names(&bob).await, ["shared_name"]);
    assert_eq!(names(&alice_eu).await, ["shared_name"]);
    for (c, who) in [(&alice, "alice"), (&bob, "bob"), (&alice_eu, "alice-eu")] {
        let got = c
            .get_item()
            .table_name("shared_name")
            .key("pk", s("k"))
            .send()
            .await
            .expect("get");
        assert_eq!(got.item().and_then(|i| i.get("owner")), Some(&s(who)));
    }
    let e = bob
        .describe_table()
        .table_name("only_alice")
        .send()
        .await
        .expect_err("not bob's");
    assert_eq!(err_of(&e).0, "ResourceNotFoundException");
    let d = alice_eu
        .describe_table()
        .table_name("shared_name")
        .send()
        .await
        .expect("describe");
    let table = d.table().expect("table");
    assert_eq!(table.table_name(), Some("shared_name"));
    let arn = table.table_arn().expect("arn");
    assert_eq!(
        arn,
        "arn:aws:dynamodb:eu-west-1:000000000000:table/shared_name"
    );
    alice_eu
        .tag_resource()
        .resource_arn(arn)
        .tags(Tag::builder().key("k").value("v").build().expect("tag"))
        .send()
        .await
        .expect("tag");
    let alice_arn = "arn:aws:dynamodb:us-east-1:000000000000:table/shared_name";
    let tags = alice
        .list_tags_of_resource()
        .resource_arn(alice_arn)
        .send()
        .await
        .expect("list tags");
    assert!(
        tags.tags().is_empty(),
        "the eu-west-1 table's tag stays there"
    );
    bob.delete_table()
        .table_name("shared_name")
        .send()
        .await
        .expect("delete");
    wait_status(&bob, "shared_name", None).await;
    assert_eq!(names(&alice).await, ["only_alice", "shared_name"]);
    t.stop().await;
}

/// Streams, the table side (issue 20's first part): StreamSpecification on
/// CreateTable and UpdateTable, LatestStreamArn and LatestStreamLabel, and
/// the change log each partition keeps for the stream: one record per
/// write that changes something, stamped in order, kept after the feeder
/// has been through it (a stream's retention, not delivery, removes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_table_logs_and_keeps_every_change() {
    use dynaraft_storage::global::{Origin, change_log_state, read_changes};
    let t = TestServer::start().await;
    let c = &t.client;
    c.create_table()
        .table_name("streamed")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let d = c
        .describe_table()
        .table_name("streamed")
        .send()
        .await
        .unwrap();
    let table = d.table().unwrap();
    let label = table.latest_stream_label().unwrap().to_string();
    assert_eq!(label.len(), "2026-10-08T23:07:31.275".len(), "{label}");
    assert_eq!(
        table.latest_stream_arn(),
        Some(format!("{}/stream/{label}", table.table_arn().unwrap()).as_str())
    );
    put(c, "streamed", "k", "v1").await;
    put(c, "streamed", "k", "v2").await;
    put(c, "streamed", "k", "v2").await; // changes nothing: no record
    c.delete_item()
        .table_name("streamed")
        .key("pk", s("k"))
        .send()
        .await
        .unwrap();
    let node = t.node().expect("embedded");
    let meta = node.router.table("streamed").expect("table");
    let group = meta.meta.partitions[0].group;
    let tree = node.host.tree();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while change_log_state(tree, group).unwrap() != (3, 3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feeder never went through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = read_changes(tree, group, 0, (10, usize::MAX)).unwrap();
    let shape: Vec<(u64, bool, bool, Origin)> = records
        .iter()
        .map(|(seq, r)| (*seq, r.old.is_some(), r.new.is_some(), r.origin))
        .collect();
    assert_eq!(
        shape,
        [
            (1, false, true, Origin::Client),
            (2, true, true, Origin::Client),
            (3, true, false, Origin::Client)
        ]
    );
    assert!(records.windows(2).all(|w| w[0].1.ts_ms <= w[1].1.ts_ms));
    assert!(records.iter().all(|(_, r)| r.ts_ms > 0));
    // Disabled, the stream stays named; enabled again, it is a new one.
    for enabled in [false, true] {
        let mut spec = StreamSpecification::builder().stream_enabled(enabled);
        if enabled {
            spec = spec.stream_view_type(StreamViewType::KeysOnly);
        }
        c.update_table()
            .table_name("streamed")
            .stream_specification(spec.build().unwrap())
            .send()
            .await
            .unwrap();
    }
    let d = c
        .describe_table()
        .table_name("streamed")
        .send()
        .await
        .unwrap();
    let table = d.table().unwrap();
    assert_eq!(
        table
            .stream_specification()
            .and_then(|s| s.stream_view_type()),
        Some(&StreamViewType::KeysOnly)
    );
    assert!(table.latest_stream_label().unwrap() > label.as_str());
    t.stop().await;
}

async fn put(c: &aws_sdk_dynamodb::Client, table: &str, k: &str, v: &str) {
    c.put_item()
        .table_name(table)
        .item("pk", s(k))
        .item("v", s(v))
        .send()
        .await
        .unwrap();
}
