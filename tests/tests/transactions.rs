//! Transactions through the Rust SDK. Checks the Developer Guide's
//! "Amazon DynamoDB Transactions: How it works" (transaction-apis.html):
//! TransactWriteItems with Put, Update, Delete and ConditionCheck across
//! tables, all or nothing; CancellationReasons in request order with
//! ReturnValuesOnConditionCheckFailure; ClientRequestToken idempotency with
//! IdempotentParameterMismatchException; TransactionConflict between a
//! transaction and other writes; TransactGetItems; the same item twice
//! rejected. And the commit protocol's failure cases: a coordinator that
//! stops after preparing (recovered by abort) or after deciding (recovered
//! by commit; readers see the commit at once).
//!
//! Tables use three partitions, so most transactions span partitions.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::*;
use dynaraft_api::ApiConfig;
use dynaraft_cluster::txn::{Failpoint, TXN_RECOVERY_AFTER_MS, TXN_SWEEP_MS};
use dynaraft_tests::av::*;
use dynaraft_tests::{TestServer, create_table, err_of};
use std::collections::HashMap;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

async fn server() -> TestServer {
    let cfg = ApiConfig {
        partitions_per_table: 3,
        ..TestServer::config()
    };
    let srv = TestServer::start_config(None, cfg).await;
    create_table(&srv.client, "accounts", None).await;
    create_table(&srv.client, "ledger", Some(("sk", ScalarAttributeType::N))).await;
    srv
}

fn put(table: &str, item: &[(&str, AttributeValue)]) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table);
    for (k, v) in item {
        p = p.item(*k, v.clone());
    }
    TransactWriteItem::builder()
        .put(p.build().expect("put"))
        .build()
}

/// `balance += delta` on account `pk`, if the balance stays >= 0.
fn add(pk: &str, delta: i64) -> TransactWriteItem {
    let u = Update::builder()
        .table_name("accounts")
        .key("pk", s(pk))
        .update_expression("SET balance = balance + :d")
        .condition_expression("balance >= :neg")
        .expression_attribute_values(":d", n(&delta.to_string()))
        .expression_attribute_values(":neg", n(&(-delta).max(0).to_string()))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .expect("update");
    TransactWriteItem::builder().update(u).build()
}

fn check(table: &str, pk: &str, condition: &str) -> TransactWriteItem {
    let c = ConditionCheck::builder()
        .table_name(table)
        .key("pk", s(pk))
        .condition_expression(condition)
        .build()
        .expect("check");
    TransactWriteItem::builder().condition_check(c).build()
}

fn delete(table: &str, pk: &str) -> TransactWriteItem {
    let d = Delete::builder()
        .table_name(table)
        .key("pk", s(pk))
        .build()
        .expect("delete");
    TransactWriteItem::builder().delete(d).build()
}

fn get(table: &str, pk: &str) -> TransactGetItem {
    let g = Get::builder()
        .table_name(table)
        .key("pk", s(pk))
        .build()
        .expect("get");
    TransactGetItem::builder().get(g).build()
}

async fn open_accounts(c: &Client, accounts: &[&str], balance: i64) {
    for a in accounts {
        c.put_item()
            .table_name("accounts")
            .item("pk", s(a))
            .item("balance", n(&balance.to_string()))
            .send()
            .await
            .expect("open account");
    }
}

async fn balance(c: &Client, pk: &str) -> Option<i64> {
    let r = c
        .get_item()
        .table_name("accounts")
        .key("pk", s(pk))
        .send()
        .await
        .expect("get");
    match r.item().and_then(|i| i.get("balance")) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// The cancellation reasons' codes of a canceled TransactWriteItems.
fn reasons_of(e: &SdkError<TransactWriteItemsError>) -> Vec<CancellationReason> {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(t)) => {
            t.cancellation_reasons().to_vec()
        }
        other => panic!("expected TransactionCanceledException, got {other:?}"),
    }
}

fn codes(reasons: &[CancellationReason]) -> Vec<&str> {
    reasons.iter().map(|r| r.code().unwrap_or("")).collect()
}

#[tokio::test]
async fn writes_of_every_kind_commit_together_across_tables_and_partitions() {
    let srv = server().await;
    let c = &srv.client;
    open_accounts(c, &["alice", "bob", "carol"], 100).await;
    let out = c
        .transact_write_items()
        .transact_items(add("alice", -30))
        .transact_items(add("bob", 30))
        .transact_items(put(
            "ledger",
            &[("pk", s("alice")), ("sk", n("1")), ("amount", n("30"))],
        ))
        .transact_items(delete("accounts", "carol"))
        .transact_items(check("accounts", "bob", "attribute_exists(pk)"))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await;
    // bob appears twice (update and check): the same item twice is refused.
    let e = out.expect_err("the same item twice");
    assert_eq!(
        err_of(&e),
        (
            "ValidationException".into(),
            "Transaction request cannot include multiple operations on one item".into()
        )
    );
    let out = c
        .transact_write_items()
        .transact_items(add("alice", -30))
        .transact_items(add("bob", 30))
        .transact_items(put(
            "ledger",
            &[("pk", s("alice")), ("sk", n("1")), ("amount", n("30"))],
        ))
        .transact_items(delete("accounts", "carol"))
        .transact_items(check("accounts", "nobody", "attribute_not_exists(pk)"))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .expect("transaction commits");
    let tables: Vec<&str> = out
        .consumed_capacity()
        .iter()
        .filter_map(|c| c.table_name())
        .collect();
    assert!(
        tables.contains(&"accounts") && tables.contains(&"ledger"),
        "{tables:?}"
    );
    assert_eq!(balance(c, "alice").await, Some(70));
    assert_eq!(balance(c, "bob").await, Some(130));
    assert_eq!(balance(c, "carol").await, None);
    let ledger = c
        .get_item()
        .table_name("ledger")
        .key("pk", s("alice"))
        .key("sk", n("1"))
        .send()
        .await
        .expect("get ledger");
    assert_eq!(ledger.item().and_then(|i| i.get("amount")), Some(&n("30")));
    srv.stop().await;
}

#[tokio::test]
async fn a_failed_condition_cancels_everything_with_reasons_in_request_order() {
    let srv = server().await;
    let c = &srv.client;
    open_accounts(c, &["alice", "bob", "carol"], 10).await;
    // alice cannot pay 50: nothing is written, bob and carol included.
    let e = c
        .transact_write_items()
        .transact_items(add("bob", 50))
        .transact_items(add("alice", -50))
        .transact_items(put("accounts", &[("pk", s("dave")), ("balance", n("1"))]))
        .transact_items(check("accounts", "carol", "balance > :z").clone())
        .send()
        .await;
    // The check's :z is undefined: a validation error before anything runs.
    let (code, _) = err_of(&e.expect_err("undefined value"));
    assert_eq!(code, "ValidationException");
    let e = c
        .transact_write_items()
        .transact_items(add("bob", 50))
        .transact_items(add("alice", -50))
        .transact_items(put("accounts", &[("pk", s("dave")), ("balance", n("1"))]))
        .send()
        .await
        .expect_err("alice's condition fails");
    let reasons = reasons_of(&e);
    assert_eq!(codes(&reasons), ["None", "ConditionalCheckFailed", "None"]);
    assert_eq!(reasons[1].message(), Some("The conditional request failed"));
    // ReturnValuesOnConditionCheckFailure=ALL_OLD: the item as it was.
    let old = reasons[1].item().expect("old item");
    assert_eq!(old.get("balance"), Some(&n("10")));
    let (code, message) = err_of(&e);
    assert_eq!(code, "TransactionCanceledException");
    assert_eq!(
        message,
        "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed, None]"
    );
    assert_eq!(balance(c, "bob").await, Some(10));
    assert_eq!(balance(c, "alice").await, Some(10));
    assert_eq!(balance(c, "dave").await, None);
    // Items of one partition (one partition key) commit as one command,
    // with the same all-or-nothing rule.
    let row = |sk: &str| put("ledger", &[("pk", s("p")), ("sk", n(sk))]);
    let guarded = Put::builder()
        .table_name("ledger")
        .item("pk", s("p"))
        .item("sk", n("1"))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("put");
    c.transact_write_items()
        .transact_items(row("1"))
        .transact_items(row("2"))
        .send()
        .await
        .expect("one partition");
    let e = c
        .transact_write_items()
        .transact_items(row("3"))
        .transact_items(TransactWriteItem::builder().put(guarded).build())
        .send()
        .await
        .expect_err("row 1 exists");
    assert_eq!(codes(&reasons_of(&e)), ["None", "ConditionalCheckFailed"]);
    let rows = c
        .query()
        .table_name("ledger")
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("p"))
        .send()
        .await
        .expect("query");
    assert_eq!(rows.count(), 2, "row 3 was not written");
    srv.stop().await;
}

#[tokio::test]
async fn malformed_transactions_get_dynamodbs_validation_errors() {
    let srv = server().await;
    let c = &srv.client;
    let many: Vec<TransactWriteItem> = (0..101)
        .map(|i| put("accounts", &[("pk", s(&format!("a{i}")))]))
        .collect();
    let e = c
        .transact_write_items()
        .set_transact_items(Some(many))
        .send()
        .await
        .expect_err("101 items");
    let (code, message) = err_of(&e);
    assert_eq!(code, "ValidationException");
    assert!(
        message.contains("Member must have length less than or equal to 100"),
        "{message}"
    );
    let both = TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name("accounts")
                .item("pk", s("x"))
                .build()
                .expect("put"),
        )
        .delete(
            Delete::builder()
                .table_name("accounts")
                .key("pk", s("x"))
                .build()
                .expect("d"),
        )
        .build();
    let e = c
        .transact_write_items()
        .transact_items(both)
        .send()
        .await
        .expect_err("two ops");
    assert_eq!(
        err_of(&e).1,
        "TransactItems can only contain one of Check, Put, Update or Delete"
    );
    let e = c
        .transact_write_items()
        .transact_items(put("missing", &[("pk", s("x"))]))
        .send()
        .await
        .expect_err("no such table");
    assert_eq!(err_of(&e).0, "ResourceNotFoundException");
    let e = c
        .transact_write_items()
        .transact_items(put("accounts", &[("nokey", s("x"))]))
        .send()
        .await
        .expect_err("no key");
    assert_eq!(err_of(&e).0, "ValidationException");
    let e = c
        .transact_get_items()
        .transact_items(get("accounts", "a"))
        .transact_items(get("accounts", "a"))
        .send()
        .await
        .expect_err("same item twice");
    assert_eq!(
        err_of(&e).1,
        "Transaction request cannot include multiple operations on one item"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_client_request_token_applies_a_transaction_once() {
    let srv = server().await;
    let c = &srv.client;
    open_accounts(c, &["alice", "bob"], 100).await;
    let transfer = |token: &str, amount: i64| {
        c.transact_write_items()
            .transact_items(add("alice", -amount))
            .transact_items(add("bob", amount))
            .client_request_token(token)
            .send()
    };
    transfer("token-1", 10).await.expect("first");
    transfer("token-1", 10).await.expect("a retry succeeds");
    assert_eq!(balance(c, "alice").await, Some(90), "applied once");
    assert_eq!(balance(c, "bob").await, Some(110));
    let e = transfer("token-1", 20).await.expect_err("other parameters");
    assert_eq!(err_of(&e).0, "IdempotentParameterMismatchException");
    transfer("token-2", 20).await.expect("a new token");
    assert_eq!(balance(c, "alice").await, Some(70));
    srv.stop().await;
}

#[tokio::test]
async fn transact_get_items_reads_items_in_request_order() {
    let srv = server().await;
    let c = &srv.client;
    open_accounts(c, &["alice", "bob"], 5).await;
    let projected = Get::builder()
        .table_name("accounts")
        .key("pk", s("bob"))
        .projection_expression("pk")
        .build()
        .expect("get");
    let out = c
        .transact_get_items()
        .transact_items(get("accounts", "alice"))
        .transact_items(get("accounts", "nobody"))
        .transact_items(TransactGetItem::builder().get(projected).build())
        .send()
        .await
        .expect("read");
    let r = out.responses();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].item().and_then(|i| i.get("balance")), Some(&n("5")));
    assert!(r[1].item().is_none());
    let bob: &Item = r[2].item().expect("bob");
    assert_eq!(bob.len(), 1, "projected to pk: {bob:?}");
    srv.stop().await;
}

/// A client that does not retry (a failed coordinator's error is final).
fn no_retry(c: &Client) -> Client {
    let conf = c
        .config()
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// Waits until `f` is true, for up to `ms` milliseconds.
async fn wait_until<F: AsyncFnMut() -> bool>(ms: u64, mut f: F) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_coordinator_that_stops_after_preparing_is_recovered_by_abort() {
    let srv = server().await;
    let c = &srv.client;
    let accounts = ["a0", "a1", "a2", "a3", "a4", "a5"];
    open_accounts(c, &accounts, 100).await;
    let router = srv.router().expect("router");
    router.set_txn_failpoint(Failpoint::AfterPrepare);
    let mut t = no_retry(c).transact_write_items();
    for (i, a) in accounts.iter().enumerate() {
        t = t.transact_items(add(a, if i % 2 == 0 { -10 } else { 10 }));
    }
    t.send().await.expect_err("the coordinator stopped");
    router.set_txn_failpoint(Failpoint::None);
    // Prepared, undecided: reads see the old balances; other writes and
    // transactions on the items conflict while the transaction is young.
    for a in accounts {
        assert_eq!(balance(c, a).await, Some(100), "{a}");
    }
    let e = no_retry(c)
        .put_item()
        .table_name("accounts")
        .item("pk", s("a0"))
        .send()
        .await
        .expect_err("held");
    assert_eq!(
        err_of(&e),
        (
            "TransactionConflictException".into(),
            "Transaction is ongoing for the item".into()
        )
    );
    let e = no_retry(c)
        .transact_write_items()
        .transact_items(add("a1", 1))
        .transact_items(add("zz", 0))
        .send()
        .await
        .expect_err("held");
    assert_eq!(codes(&reasons_of(&e))[0], "TransactionConflict");
    let e = no_retry(c)
        .transact_get_items()
        .transact_items(get("accounts", "a2"))
        .send()
        .await
        .expect_err("held");
    match e.as_service_error() {
        Some(TransactGetItemsError::TransactionCanceledException(t)) => {
            assert_eq!(codes(t.cancellation_reasons()), ["TransactionConflict"]);
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    // The sweeper aborts it once it is older than the recovery age.
    let limit = TXN_RECOVERY_AFTER_MS + 20 * TXN_SWEEP_MS;
    let free = wait_until(limit, async || {
        c.put_item()
            .table_name("accounts")
            .item("pk", s("zz"))
            .send()
            .await
            .is_ok()
            && no_retry(c)
                .transact_get_items()
                .transact_items(get("accounts", "a5"))
                .send()
                .await
                .is_ok()
    })
    .await;
    assert!(free, "the abandoned transaction was not recovered");
    for a in accounts {
        assert_eq!(balance(c, a).await, Some(100), "{a} untouched");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_coordinator_that_stops_after_deciding_is_recovered_by_commit() {
    let srv = server().await;
    let c = &srv.client;
    let accounts = ["b0", "b1", "b2", "b3", "b4", "b5"];
    open_accounts(c, &accounts, 100).await;
    let router = srv.router().expect("router");
    router.set_txn_failpoint(Failpoint::AfterDecide);
    let mut t = no_retry(c).transact_write_items();
    for a in accounts {
        t = t.transact_items(add(a, 5));
    }
    t.send().await.expect_err("the coordinator stopped");
    router.set_txn_failpoint(Failpoint::None);
    // Decided: every read sees the commit, applied or not.
    for a in accounts {
        assert_eq!(balance(c, a).await, Some(105), "{a}");
    }
    let read = c
        .transact_get_items()
        .set_transact_items(Some(accounts.iter().map(|a| get("accounts", a)).collect()))
        .send()
        .await
        .expect("a decided transaction is settled by the reader");
    assert_eq!(read.responses().len(), accounts.len());
    // A write to a held item settles the decided transaction and goes on.
    c.update_item()
        .table_name("accounts")
        .key("pk", s("b5"))
        .update_expression("SET balance = balance + :one")
        .expression_attribute_values(":one", n("1"))
        .send()
        .await
        .expect("write after settling");
    // The sweeper finishes the rest; a Scan (applied writes only) agrees.
    let done = wait_until(TXN_RECOVERY_AFTER_MS + 20 * TXN_SWEEP_MS, async || {
        let items = dynaraft_tests::scan_all(c, "accounts", None).await;
        let total: i64 = items
            .iter()
            .filter_map(|i| match i.get("balance") {
                Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
                _ => None,
            })
            .sum();
        total == 6 * 105 + 1
    })
    .await;
    assert!(done, "the decided transaction was not applied everywhere");
    srv.stop().await;
}

/// Many clients move money between accounts while others read every
/// account with TransactGetItems: every successful read sees the same
/// total, and so does the end. Runs on several threads, so requests truly
/// overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_keep_the_total_at_every_transactional_read() {
    const ACCOUNTS: usize = 8;
    const START: i64 = 100;
    const WRITERS: usize = 4;
    const TRANSFERS_EACH: usize = 60;
    const READERS: usize = 3;
    let srv = server().await;
    let c = srv.client.clone();
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    open_accounts(&c, &refs, START).await;
    let total = ACCOUNTS as i64 * START;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (c, names) = (c.clone(), names.clone());
        writers.push(tokio::spawn(async move {
            let (mut committed, mut canceled) = (0usize, 0usize);
            let mut rng = fastrand::Rng::with_seed(w as u64 + 1);
            for _ in 0..TRANSFERS_EACH {
                let from = rng.usize(..ACCOUNTS);
                let to = (from + 1 + rng.usize(..ACCOUNTS - 1)) % ACCOUNTS;
                let amount = rng.i64(1..=30);
                let r = c
                    .transact_write_items()
                    .transact_items(add(&names[from], -amount))
                    .transact_items(add(&names[to], amount))
                    .send()
                    .await;
                match r {
                    Ok(_) => committed += 1,
                    Err(e) => {
                        let code = err_of(&e).0;
                        assert_eq!(code, "TransactionCanceledException", "{e:?}");
                        canceled += 1;
                    }
                }
            }
            (committed, canceled)
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (c, names, stop) = (c.clone(), names.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let (mut reads, mut canceled) = (0usize, 0usize);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let items = names.iter().map(|a| get("accounts", a)).collect();
                match c
                    .transact_get_items()
                    .set_transact_items(Some(items))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let sum: i64 = out
                            .responses()
                            .iter()
                            .filter_map(|r| match r.item().and_then(|i| i.get("balance")) {
                                Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
                                _ => None,
                            })
                            .sum();
                        assert_eq!(sum, total, "a read saw half a transfer");
                        reads += 1;
                    }
                    Err(e) => {
                        assert_eq!(err_of(&e).0, "TransactionCanceledException", "{e:?}");
                        canceled += 1;
                    }
                }
            }
            (reads, canceled)
        }));
    }
    let (mut committed, mut canceled) = (0, 0);
    for w in writers {
        let (a, b) = w.await.expect("writer");
        committed += a;
        canceled += b;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut reads, mut read_cancels) = (0, 0);
    for r in readers {
        let (a, b) = r.await.expect("reader");
        reads += a;
        read_cancels += b;
    }
    println!(
        "transfers: {committed} committed, {canceled} canceled; reads: {reads} consistent, {read_cancels} canceled"
    );
    assert!(committed > 0 && reads > 0, "both sides made progress");
    let mut end = 0;
    for a in &names {
        end += balance(&c, a).await.expect("account");
    }
    assert_eq!(end, total);
    srv.stop().await;
}
