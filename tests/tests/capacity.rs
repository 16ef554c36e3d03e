//! Provisioned capacity enforced (issue 25): a provisioned table spends
//! its burst, is throttled with DynamoDB's error, and then sustains about
//! its capacity; an on-demand table under the same load is not throttled;
//! a throttled write has no effect; consumption and throttles show in
//! `/metrics`. Clients here have the SDK's retries off, so every refusal
//! is seen.

use aws_sdk_dynamodb::types::{
    BillingMode, KeyType, ProvisionedThroughput, PutRequest, ScalarAttributeType, WriteRequest,
};
use dynaraft_tests::av::*;
use dynaraft_tests::*;
use std::time::{Duration, Instant};

/// A CreateTable of `name` keyed by a string `pk`, to finish and send.
fn keyed(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder {
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(schema::attr("pk", ScalarAttributeType::S))
        .key_schema(schema::key("pk", KeyType::Hash))
}

fn throughput(rcu: i64, wcu: i64) -> ProvisionedThroughput {
    ProvisionedThroughput::builder()
        .read_capacity_units(rcu)
        .write_capacity_units(wcu)
        .build()
        .expect("throughput")
}

async fn create_provisioned(client: &aws_sdk_dynamodb::Client, name: &str, rcu: i64, wcu: i64) {
    keyed(client, name)
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(throughput(rcu, wcu))
        .send()
        .await
        .expect("create table");
}

/// The value of the series `prefix` (name and labels) in a /metrics page.
fn series(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_table_is_throttled_after_its_burst_and_sustains_its_capacity() {
    let t = TestServer::start().await;
    let client = client_with_secret(t.addr, "AKID", "SECRET", "us-east-1");
    create_provisioned(&client, "slow", 1, 1).await;
    let put = |i: usize| {
        client
            .put_item()
            .table_name("slow")
            .item("pk", s(&format!("k{i}")))
    };

    // One write capacity unit keeps 300 seconds of burst: about 300 small
    // writes go through at once, then the table is throttled.
    let started = Instant::now();
    let mut written = 0;
    let refused = loop {
        match put(written).send().await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written <= 400, "no throttling after {written} writes");
    };
    let refill = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        (300..=300 + refill + 1).contains(&written),
        "{written} writes before the first refusal ({refill} s)"
    );
    let (code, message) = err_of(&refused);
    assert_eq!(code, "ProvisionedThroughputExceededException");
    assert_eq!(
        message,
        "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."
    );
    let service = refused.into_service_error();
    let aws_sdk_dynamodb::operation::put_item::PutItemError::ProvisionedThroughputExceededException(
        e,
    ) = service
    else {
        panic!("not the modelled exception: {service:?}");
    };
    let reasons = e.throttling_reasons();
    assert_eq!(reasons.len(), 1);
    assert_eq!(
        reasons[0].reason(),
        Some("TableWriteProvisionedThroughputExceeded")
    );
    assert_eq!(
        reasons[0].resource(),
        Some("arn:aws:dynamodb:us-east-1:000000000000:table/slow")
    );
    // The refused write had no effect.
    let got = client
        .get_item()
        .table_name("slow")
        .key("pk", s(&format!("k{written}")))
        .send()
        .await
        .expect("get");
    assert!(got.item().is_none(), "a throttled write was applied");

    // Afterwards it sustains about its capacity: one write a second.
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let (mut ok, mut throttled) = (0, 0);
    while started.elapsed() < window {
        match put(10_000 + ok + throttled).send().await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(err_of(&e).0, "ProvisionedThroughputExceededException");
                throttled += 1;
            }
        }
    }
    assert!((1..=5).contains(&ok), "{ok} writes in {window:?} at 1 WCU");
    assert!(throttled > 10, "only {throttled} refusals in {window:?}");

    // A batch whose every item is refused is refused as a whole.
    let batch = client
        .batch_write_item()
        .request_items(
            "slow",
            (0..5)
                .map(|i| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .item("pk", s(&format!("b{i}")))
                                .build()
                                .unwrap(),
                        )
                        .build()
                })
                .collect(),
        )
        .send()
        .await;
    let e = batch.expect_err("a throttled table's batch");
    assert_eq!(err_of(&e).0, "ProvisionedThroughputExceededException");

    // The same load on an on-demand table is never throttled.
    create_table(&client, "fast", None).await;
    for i in 0..1_000 {
        client
            .put_item()
            .table_name("fast")
            .item("pk", s(&format!("k{i}")))
            .send()
            .await
            .expect("on-demand write");
    }

    // /metrics: consumption and throttles by table, and the capacity.
    let (_, page) = t.get("/metrics");
    for head in [
        "# TYPE dynaraft_consumed_write_capacity_units_total counter",
        "# TYPE dynaraft_write_throttle_events_total counter",
        "# TYPE dynaraft_provisioned_write_capacity_units gauge",
        "# HELP dynaraft_throttled_requests_total ",
    ] {
        assert!(page.contains(head), "{head} missing:\n{page}");
    }
    let consumed = series(
        &page,
        r#"dynaraft_consumed_write_capacity_units_total{table="slow"}"#,
    );
    assert_eq!(consumed, Some((written + ok) as f64));
    let events = series(
        &page,
        r#"dynaraft_write_throttle_events_total{table="slow"}"#,
    );
    // The batch's five refused items are one throttled request each.
    assert_eq!(events, Some((1 + throttled + 5) as f64));
    assert_eq!(
        series(
            &page,
            r#"dynaraft_consumed_write_capacity_units_total{table="fast"}"#
        ),
        Some(1_000.0)
    );
    assert_eq!(
        series(
            &page,
            r#"dynaraft_write_throttle_events_total{table="fast"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        series(
            &page,
            r#"dynaraft_provisioned_write_capacity_units{table="slow"}"#
        ),
        Some(1.0)
    );

    // A dropped table's series disappear.
    client
        .delete_table()
        .table_name("slow")
        .send()
        .await
        .expect("delete");
    let (_, page) = t.get("/metrics");
    assert!(!page.contains(r#"table="slow""#), "{page}");
    t.stop().await;
}

/// A read consumes what it read: a large item spends a small table's
/// read burst in a few strongly consistent reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_spend_read_capacity() {
    let t = TestServer::start().await;
    let client = client_with_secret(t.addr, "AKID", "SECRET", "us-east-1");
    create_provisioned(&client, "reads", 1, 1).await;
    // 350 KB: 88 read units a strongly consistent read (the write takes
    // the write bucket into debt, which the reads do not touch).
    let big = "x".repeat(350 * 1024);
    client
        .put_item()
        .table_name("reads")
        .item("pk", s("big"))
        .item("v", s(&big))
        .send()
        .await
        .expect("put");
    let mut reads = 0;
    let refused = loop {
        let r = client
            .get_item()
            .table_name("reads")
            .key("pk", s("big"))
            .consistent_read(true)
            .send()
            .await;
        match r {
            Ok(out) => {
                assert!(out.item().is_some());
                reads += 1;
            }
            Err(e) => break e,
        }
        assert!(reads <= 10, "no throttling after {reads} reads");
    };
    // 300 units of burst: the fourth read takes the bucket into debt.
    assert_eq!(reads, 4);
    let service = refused.into_service_error();
    let aws_sdk_dynamodb::operation::get_item::GetItemError::ProvisionedThroughputExceededException(
        e,
    ) = service
    else {
        panic!("not the modelled exception: {service:?}");
    };
    assert_eq!(
        e.throttling_reasons()[0].reason(),
        Some("TableReadProvisionedThroughputExceeded")
    );
    t.stop().await;
}

/// `--no-capacity-limits`: nothing is refused, consumption still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_limits_can_be_turned_off() {
    let cfg = dynaraft_api::ApiConfig {
        capacity: std::sync::Arc::new(dynaraft_api::capacity::Capacity::new(false)),
        ..TestServer::config()
    };
    let t = TestServer::start_config(None, cfg).await;
    let client = client_with_secret(t.addr, "AKID", "SECRET", "us-east-1");
    create_provisioned(&client, "unlimited", 1, 1).await;
    for i in 0..400 {
        client
            .put_item()
            .table_name("unlimited")
            .item("pk", s(&format!("k{i}")))
            .send()
            .await
            .expect("no limits");
    }
    let scanned = client
        .scan()
        .table_name("unlimited")
        .send()
        .await
        .expect("scan");
    assert_eq!(scanned.count(), 400);
    let (_, page) = t.get("/metrics");
    assert_eq!(
        series(
            &page,
            r#"dynaraft_consumed_write_capacity_units_total{table="unlimited"}"#
        ),
        Some(400.0)
    );
    // CloudWatch's ReturnedItemCount.
    assert_eq!(
        series(&page, r#"dynaraft_returned_items_total{table="unlimited"}"#),
        Some(400.0)
    );
    t.stop().await;
}

/// OnDemandThroughput: an on-demand table's maximums, as CreateTable,
/// UpdateTable and DescribeTable take and show them, and enforced with
/// DynamoDB's ThrottlingException.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_maximums_are_kept_shown_and_enforced() {
    use aws_sdk_dynamodb::types::OnDemandThroughput;
    let t = TestServer::start().await;
    let client = client_with_secret(t.addr, "AKID", "SECRET", "us-east-1");
    let describe = || async {
        client
            .describe_table()
            .table_name("capped")
            .send()
            .await
            .expect("describe")
    };
    let create = |name: &str, max: OnDemandThroughput| {
        keyed(&client, name)
            .billing_mode(BillingMode::PayPerRequest)
            .on_demand_throughput(max)
    };
    // -1 means "no maximum" only to UpdateTable; 0 is never valid.
    for bad in [0, -1] {
        let e = create(
            "capped",
            OnDemandThroughput::builder()
                .max_write_request_units(bad)
                .build(),
        )
        .send()
        .await
        .expect_err("out of range");
        assert_eq!(
            err_of(&e).1,
            "One or more parameter values were invalid: Requested MaxWriteRequestUnits for OnDemandThroughput for table is outside of valid range"
        );
    }
    create(
        "capped",
        OnDemandThroughput::builder()
            .max_write_request_units(5)
            .build(),
    )
    .send()
    .await
    .expect("create");
    let described = describe().await;
    let table = described.table().expect("table");
    let max = table.on_demand_throughput().expect("OnDemandThroughput");
    assert_eq!(
        (max.max_read_request_units(), max.max_write_request_units()),
        (None, Some(5))
    );
    let warm = table.warm_throughput().expect("WarmThroughput");
    assert_eq!(
        (warm.read_units_per_second(), warm.write_units_per_second()),
        (Some(12_000), Some(4_000))
    );

    // Five writes a second, and a second of them at once.
    let put = |i: usize| {
        client
            .put_item()
            .table_name("capped")
            .item("pk", s(&format!("k{i}")))
    };
    let mut written = 0;
    let refused = loop {
        match put(written).send().await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written <= 20, "no maximum after {written} writes");
    };
    assert!(
        (5..=7).contains(&written),
        "{written} writes before the first refusal"
    );
    let (code, message) = err_of(&refused);
    assert_eq!(code, "ThrottlingException");
    assert_eq!(
        message,
        "Throughput exceeds the maximum OnDemandThroughput configured on table or index"
    );
    let service = refused.into_service_error();
    let aws_sdk_dynamodb::operation::put_item::PutItemError::ThrottlingException(e) = service
    else {
        panic!("not the modelled exception: {service:?}");
    };
    assert_eq!(
        e.throttling_reasons()[0].reason(),
        Some("TableWriteMaxOnDemandThroughputExceeded")
    );

    // UpdateTable: -1 removes the maximum, and nothing is refused after.
    client
        .update_table()
        .table_name("capped")
        .on_demand_throughput(
            OnDemandThroughput::builder()
                .max_write_request_units(-1)
                .build(),
        )
        .send()
        .await
        .expect("update");
    let described = describe().await;
    assert!(described.table().unwrap().on_demand_throughput().is_none());
    for i in 0..200 {
        put(1_000 + i).send().await.expect("no maximum");
    }
    // WarmThroughput: at least the on-demand initial throughput, never
    // lowered, shown as set.
    use aws_sdk_dynamodb::types::WarmThroughput;
    let e = client
        .update_table()
        .table_name("capped")
        .warm_throughput(WarmThroughput::builder().read_units_per_second(1).build())
        .send()
        .await
        .expect_err("below the initial throughput");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Requested ReadUnitsPerSecond for WarmThroughput for table is lower than initial throughput for OnDemand. See: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode.html#on-demand-capacity-mode-initial"
    );
    client
        .update_table()
        .table_name("capped")
        .warm_throughput(
            WarmThroughput::builder()
                .read_units_per_second(13_000)
                .build(),
        )
        .send()
        .await
        .expect("warm up");
    let e = client
        .update_table()
        .table_name("capped")
        .warm_throughput(
            WarmThroughput::builder()
                .read_units_per_second(12_500)
                .build(),
        )
        .send()
        .await
        .expect_err("lowered");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: Requested ReadUnitsPerSecond for WarmThroughput for table is lower than current WarmThroughput, decreasing WarmThroughput is not supported"
    );
    let described = describe().await;
    let warm = described.table().unwrap().warm_throughput().expect("warm");
    assert_eq!(
        (warm.read_units_per_second(), warm.write_units_per_second()),
        (Some(13_000), Some(4_000))
    );
    // A provisioned table has no on-demand maximum to set.
    let e = keyed(&client, "both")
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(throughput(1, 1))
        .on_demand_throughput(
            OnDemandThroughput::builder()
                .max_read_request_units(10)
                .build(),
        )
        .send()
        .await
        .expect_err("a provisioned table's maximum");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: MaxReadRequestUnits for OnDemandThroughput cannot be specified when the table BillingMode is PROVISIONED"
    );
    t.stop().await;
}

/// Contributor Insights: UpdateContributorInsights, Describe and List as
/// DynamoDB answers them, and the most accessed and most throttled keys
/// of the last window in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contributor_insights_find_the_hot_keys() {
    use aws_sdk_dynamodb::types::{
        ContributorInsightsAction, ContributorInsightsMode, ContributorInsightsStatus,
        OnDemandThroughput,
    };
    let window_ms = 1_000;
    let cfg = dynaraft_api::ApiConfig {
        capacity: std::sync::Arc::new(
            dynaraft_api::capacity::Capacity::new(true).with_insights_window_ms(window_ms),
        ),
        ..TestServer::config()
    };
    let t = TestServer::start_config(None, cfg).await;
    let client = client_with_secret(t.addr, "AKID", "SECRET", "us-east-1");
    let describe = || async {
        client
            .describe_contributor_insights()
            .table_name("hotkeys")
            .send()
            .await
            .expect("describe")
    };
    let change = |action: ContributorInsightsAction| async {
        client
            .update_contributor_insights()
            .table_name("hotkeys")
            .contributor_insights_action(action)
            .send()
            .await
            .expect("update")
    };
    keyed(&client, "hotkeys")
        .attribute_definitions(schema::attr("sk", ScalarAttributeType::N))
        .key_schema(schema::key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .on_demand_throughput(
            OnDemandThroughput::builder()
                .max_write_request_units(3)
                .build(),
        )
        .send()
        .await
        .expect("create");

    // Never enabled: DISABLED, and not listed.
    let d = describe().await;
    assert_eq!(
        d.contributor_insights_status(),
        Some(&ContributorInsightsStatus::Disabled)
    );
    assert!(d.contributor_insights_mode().is_none() && d.last_update_date_time().is_none());
    let l = client
        .list_contributor_insights()
        .table_name("hotkeys")
        .send()
        .await
        .expect("list");
    assert!(l.contributor_insights_summaries().is_empty());

    // Errors: no action, an index the table does not have.
    let e = client
        .update_contributor_insights()
        .table_name("hotkeys")
        .send()
        .await
        .expect_err("no action");
    assert_eq!(
        err_of(&e).1,
        "1 validation error detected: Value null at 'contributorInsightsAction' failed to satisfy constraint: Member must not be null"
    );
    let e = client
        .update_contributor_insights()
        .table_name("hotkeys")
        .index_name("nope")
        .contributor_insights_action(ContributorInsightsAction::Enable)
        .send()
        .await
        .expect_err("no such index");
    assert_eq!(
        err_of(&e),
        (
            "ResourceNotFoundException".to_string(),
            "Requested resource not found: Index: nope not found for table: hotkeys".to_string()
        )
    );

    let u = change(ContributorInsightsAction::Enable).await;
    assert_eq!(
        u.contributor_insights_status(),
        Some(&ContributorInsightsStatus::Enabling)
    );
    assert_eq!(
        u.contributor_insights_mode(),
        Some(&ContributorInsightsMode::AccessedAndThrottledKeys)
    );
    let d = describe().await;
    assert_eq!(
        d.contributor_insights_status(),
        Some(&ContributorInsightsStatus::Enabled)
    );
    let rules = d.contributor_insights_rule_list();
    assert_eq!(rules.len(), 4, "{rules:?}");
    for (rule, kind) in rules.iter().zip(["PKC", "PKT", "SKC", "SKT"]) {
        assert!(
            rule.starts_with(&format!("DynamoDBContributorInsights-{kind}-hotkeys-")),
            "{rule}"
        );
    }
    let l = client
        .list_contributor_insights()
        .send()
        .await
        .expect("list");
    assert_eq!(l.contributor_insights_summaries().len(), 1);

    // Ten writes of one key at three a second: three go through, the rest
    // are throttled; one other key is read once.
    for i in 0..10 {
        let _ = client
            .put_item()
            .table_name("hotkeys")
            .item("pk", s("hot"))
            .item("sk", n(&i.to_string()))
            .send()
            .await;
    }
    client
        .get_item()
        .table_name("hotkeys")
        .key("pk", s("cold"))
        .key("sk", n("1"))
        .send()
        .await
        .expect("get");
    // /metrics shows the last completed window.
    tokio::time::sleep(Duration::from_millis(window_ms + 300)).await;
    let (_, page) = t.get("/metrics");
    let accessed = |key: &str| {
        series(
            &page,
            &format!(
                r#"dynaraft_contributor_insights_key_requests{{table="hotkeys",rule="PKC",key="{key}"}}"#
            ),
        )
    };
    let throttled = series(
        &page,
        r#"dynaraft_contributor_insights_key_requests{table="hotkeys",rule="PKT",key="hot"}"#,
    );
    let hot = accessed("hot").expect("hot accessed");
    assert!((3.0..=4.0).contains(&hot), "{hot}:\n{page}");
    assert_eq!(throttled, Some(10.0 - hot), "{page}");
    assert_eq!(accessed("cold"), Some(1.0));

    // DISABLE keeps the mode and the time, drops the rules, unlists it and
    // its series.
    let u = change(ContributorInsightsAction::Disable).await;
    assert_eq!(
        u.contributor_insights_status(),
        Some(&ContributorInsightsStatus::Disabling)
    );
    let d = describe().await;
    assert_eq!(
        d.contributor_insights_status(),
        Some(&ContributorInsightsStatus::Disabled)
    );
    assert!(d.contributor_insights_rule_list().is_empty());
    assert!(d.last_update_date_time().is_some() && d.contributor_insights_mode().is_some());
    let l = client
        .list_contributor_insights()
        .send()
        .await
        .expect("list");
    assert!(l.contributor_insights_summaries().is_empty());
    let (_, page) = t.get("/metrics");
    assert!(
        !page.contains("dynaraft_contributor_insights_key_requests{"),
        "{page}"
    );
    t.stop().await;
}
