//! The concurrent client workload, through the router with the Rust SDK:
//! each client is a sequential process issuing seeded random operations
//! over a small key set so that they contend, and recording each one's
//! invocation and completion. Clients never retry (the SDK's retries are
//! off): a retried ADD could apply twice and the history could not say.
//!
//! Keys: registers `r0..` (read, put, compare-and-set on `ver`, ADD,
//! delete), counters `c0..` (ADD and read only), accounts `a0..` (transfers
//! by TransactWriteItems, snapshots by TransactGetItems), and probe
//! registers `rp0..`, each put by its own client every `PROBE_INTERVAL_MS`
//! to time write unavailability.

use crate::history::{Call, Item, Op, Status};
use crate::model::CONDITION_FAILED;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Get, TransactGetItem, TransactWriteItem, Update};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const TABLE: &str = "chaos";
pub const REGISTERS: usize = 6;
pub const COUNTERS: usize = 2;
pub const ACCOUNTS: usize = 4;
pub const PROBES: usize = 12;
/// Each account's opening balance.
pub const OPENING_BALANCE: i64 = 100;
/// Pause between a probe client's puts, in milliseconds.
pub const PROBE_INTERVAL_MS: u64 = 200;
/// How long a client waits for an answer before recording the operation as
/// unknown, in milliseconds.
pub const OP_TIMEOUT_MS: u64 = 5_000;
/// Connection timeout of the clients, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Completed operations queued for the recorder.
pub const MAX_QUEUED_OPS: usize = 4_096;

/// Error codes that prove an operation had no effect.
const DEFINITE_FAILURES: [&str; 4] = [
    CONDITION_FAILED,
    "TransactionCanceledException",
    "TransactionConflictException",
    "ValidationException",
];

pub fn client(addr: SocketAddr) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("chaos", "chaos", None, None, "chaos"))
        .endpoint_url(format!("http://{addr}"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_millis(OP_TIMEOUT_MS))
                .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

/// Shared by every client of a run: the clock, operation ids, the recorder.
#[derive(Clone)]
pub struct Recorder {
    pub start: Instant,
    ids: Arc<AtomicU64>,
    tx: mpsc::Sender<Op>,
}

impl Recorder {
    pub fn new(start: Instant) -> (Recorder, mpsc::Receiver<Op>) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_OPS);
        let ids = Arc::new(AtomicU64::new(1));
        (Recorder { start, ids, tx }, rx)
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `call` through `client` and records it.
    pub async fn run(&self, client: &Client, who: u32, call: Call) -> Op {
        let id = self.next_id();
        let call_us = self.now_us();
        let (status, read, error) = execute(client, &call).await;
        let op = Op {
            id,
            client: who,
            call,
            status,
            read,
            error,
            call_us,
            ret_us: self.now_us(),
        };
        let _ = self.tx.send(op.clone()).await;
        op
    }

    /// A fresh value id, unique in the run.
    pub fn unique(&self) -> u64 {
        self.next_id()
    }
}

fn key(k: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("k".to_string(), AttributeValue::S(k.to_string()))])
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn item_of(attrs: Option<&HashMap<String, AttributeValue>>) -> Result<Option<Item>, String> {
    let Some(a) = attrs else { return Ok(None) };
    let num = |name: &str| -> Result<String, String> {
        match a.get(name) {
            Some(AttributeValue::N(s)) => Ok(s.clone()),
            other => Err(format!("attribute {name} is {other:?}")),
        }
    };
    let parse_u = |s: String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    Ok(Some(Item {
        val: parse_u(num("val")?)?,
        ver: parse_u(num("ver")?)?,
        cnt: num("cnt")?.parse::<i64>().map_err(|e| e.to_string())?,
    }))
}

fn classify<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> (Status, String) {
    match e.as_service_error() {
        Some(se) => {
            let code = se.code().unwrap_or("<no code>").to_string();
            let status = if DEFINITE_FAILURES.contains(&code.as_str()) {
                Status::Fail
            } else {
                Status::Unknown
            };
            (status, code)
        }
        None => (Status::Unknown, short_error(e)),
    }
}

fn short_error<E, R>(e: &SdkError<E, R>) -> String {
    match e {
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "dispatch failure".into(),
        SdkError::ResponseError(_) => "bad response".into(),
        SdkError::ConstructionFailure(_) => "construction failure".into(),
        _ => "error".into(),
    }
}

type Outcome = (Status, Vec<Option<Item>>, Option<String>);

fn done<E: ProvideErrorMetadata, R>(r: Result<(), SdkError<E, R>>) -> Outcome {
    match r {
        Ok(()) => (Status::Ok, Vec::new(), None),
        Err(e) => {
            let (s, code) = classify(&e);
            (s, Vec::new(), Some(code))
        }
    }
}

/// A read that failed changed nothing, so it is left out of the check
/// whatever its error: recorded as unknown, with its code.
fn read_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Outcome {
    (Status::Unknown, Vec::new(), Some(classify(e).1))
}

fn read_back(items: Result<Vec<Option<Item>>, String>) -> Outcome {
    match items {
        Ok(items) => (Status::Ok, items, None),
        // A well-formed answer we cannot parse is recorded as unknown and
        // named, so the report shows it.
        Err(e) => (
            Status::Unknown,
            Vec::new(),
            Some(format!("unreadable item: {e}")),
        ),
    }
}

async fn execute(c: &Client, call: &Call) -> Outcome {
    let t = TABLE;
    match call {
        Call::Read { key: k } => {
            let r = c
                .get_item()
                .table_name(t)
                .set_key(Some(key(k)))
                .consistent_read(true)
                .send()
                .await;
            match r {
                Ok(out) => read_back(item_of(out.item()).map(|i| vec![i])),
                Err(e) => read_failed(&e),
            }
        }
        Call::Put { key: k, val, cnt } => {
            let mut item = key(k);
            item.insert("val".into(), n(val));
            item.insert("ver".into(), n(0));
            item.insert("cnt".into(), n(cnt));
            done(
                c.put_item()
                    .table_name(t)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map(|_| ()),
            )
        }
        Call::Cas {
            key: k,
            expect,
            val,
        } => done(
            c.update_item()
                .table_name(t)
                .set_key(Some(key(k)))
                .update_expression("SET val = :val, ver = :next")
                .condition_expression("ver = :expect")
                .expression_attribute_values(":val", n(val))
                .expression_attribute_values(":next", n(expect + 1))
                .expression_attribute_values(":expect", n(expect))
                .send()
                .await
                .map(|_| ()),
        ),
        Call::Add { key: k, delta } => done(
            c.update_item()
                .table_name(t)
                .set_key(Some(key(k)))
                .update_expression(ADD_EXPRESSION)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":d", n(delta))
                .send()
                .await
                .map(|_| ()),
        ),
        Call::Delete { key: k } => done(
            c.delete_item()
                .table_name(t)
                .set_key(Some(key(k)))
                .send()
                .await
                .map(|_| ()),
        ),
        Call::Transfer { from, to, amount } => {
            let update = |k: &str, d: i64, cond: bool| {
                let mut u = Update::builder()
                    .table_name(t)
                    .set_key(Some(key(k)))
                    .update_expression(ADD_EXPRESSION)
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":d", n(d));
                if cond {
                    u = u
                        .condition_expression("cnt >= :amount")
                        .expression_attribute_values(":amount", n(-d));
                }
                u.build()
                    .map(|u| TransactWriteItem::builder().update(u).build())
            };
            let (Ok(out), Ok(into)) = (update(from, -amount, true), update(to, *amount, false))
            else {
                return (Status::Fail, Vec::new(), Some("request not built".into()));
            };
            done(
                c.transact_write_items()
                    .transact_items(out)
                    .transact_items(into)
                    .send()
                    .await
                    .map(|_| ()),
            )
        }
        Call::Snapshot { keys } => {
            let mut req = c.transact_get_items();
            for k in keys {
                match Get::builder().table_name(t).set_key(Some(key(k))).build() {
                    Ok(g) => req = req.transact_items(TransactGetItem::builder().get(g).build()),
                    Err(_) => return (Status::Fail, Vec::new(), Some("request not built".into())),
                }
            }
            match req.send().await {
                Ok(out) => read_back(out.responses().iter().map(|r| item_of(r.item())).collect()),
                Err(e) => read_failed(&e),
            }
        }
    }
}

/// ADD that also gives a new item its `val` and `ver`.
const ADD_EXPRESSION: &str =
    "SET val = if_not_exists(val, :zero), ver = if_not_exists(ver, :zero) ADD cnt :d";

pub fn register(i: usize) -> String {
    format!("r{i}")
}
pub fn counter(i: usize) -> String {
    format!("c{i}")
}
pub fn account(i: usize) -> String {
    format!("a{i}")
}
pub fn probe(i: usize) -> String {
    format!("rp{i}")
}

/// The keys every final read covers.
pub fn all_keys() -> Vec<String> {
    (0..REGISTERS)
        .map(register)
        .chain((0..COUNTERS).map(counter))
        .chain((0..ACCOUNTS).map(account))
        .chain((0..PROBES).map(probe))
        .collect()
}

/// One random operation for a workload client.
pub fn next_call(rng: &mut fastrand::Rng, rec: &Recorder, versions: &HashMap<String, u64>) -> Call {
    let roll = rng.u32(0..100);
    let reg = register(rng.usize(..REGISTERS));
    match roll {
        0..=24 => Call::Read { key: reg },
        25..=34 => Call::Put {
            key: reg,
            val: rec.unique(),
            cnt: 0,
        },
        35..=52 => {
            let expect = versions.get(&reg).copied().unwrap_or_else(|| rng.u64(0..3));
            Call::Cas {
                key: reg,
                expect,
                val: rec.unique(),
            }
        }
        53..=59 => Call::Add {
            key: reg,
            delta: rng.i64(1..=5),
        },
        60..=63 => Call::Delete { key: reg },
        64..=73 => Call::Add {
            key: counter(rng.usize(..COUNTERS)),
            delta: rng.i64(1..=5),
        },
        74..=78 => Call::Read {
            key: counter(rng.usize(..COUNTERS)),
        },
        79..=90 => {
            let from = rng.usize(..ACCOUNTS);
            let to = (from + rng.usize(1..ACCOUNTS)) % ACCOUNTS;
            Call::Transfer {
                from: account(from),
                to: account(to),
                amount: rng.i64(1..=30),
            }
        }
        91..=95 => Call::Snapshot {
            keys: (0..ACCOUNTS).map(account).collect(),
        },
        _ => Call::Read {
            key: account(rng.usize(..ACCOUNTS)),
        },
    }
}

/// A workload client: issues operations until `stop` flips.
pub async fn run_client(
    client: Client,
    rec: Recorder,
    who: u32,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut versions: HashMap<String, u64> = HashMap::new();
    while !*stop.borrow() {
        let call = next_call(&mut rng, &rec, &versions);
        let op = rec.run(&client, who, call).await;
        // Remember versions seen, so compare-and-sets often succeed.
        if let (Call::Read { key }, Status::Ok) = (&op.call, op.status) {
            match op.read.first().copied().flatten() {
                Some(it) => versions.insert(key.clone(), it.ver),
                None => versions.remove(key),
            };
        }
        if let (Call::Cas { key, expect, .. }, Status::Ok) = (&op.call, op.status) {
            versions.insert(key.clone(), expect + 1);
        }
    }
}

/// A probe client: puts its key every `PROBE_INTERVAL_MS` until `stop`.
pub async fn run_probe(
    client: Client,
    rec: Recorder,
    who: u32,
    key: String,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let call = Call::Put {
            key: key.clone(),
            val: rec.unique(),
            cnt: 0,
        };
        rec.run(&client, who, call).await;
        tokio::time::sleep(Duration::from_millis(PROBE_INTERVAL_MS)).await;
    }
}
