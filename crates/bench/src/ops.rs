//! Each operation as requests on the wire, and the check of its answer.
//!
//! An operation succeeds only if the answer is right: a 200 with the item
//! that was asked for, whose payload matches its version, or a Query range
//! with exactly the records that must be there, in order. Anything else is
//! a failure with a class (for the error table) and is never counted as
//! throughput. A conditional write that loses a race in workload F is a
//! conflict: a correct answer, reported apart, not counted as throughput.

use crate::client::{ClientError, Conn, Response};
use crate::keys::{self, GROUP_ITEMS};
use crate::workload::Layout;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the endpoint speaks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The DynamoDB JSON 1.0 API (dynaraft, dynalite, DynamoDB Local).
    Dynamodb,
    /// etcd's v3 JSON gateway (`/v3/kv/put`, `/v3/kv/range`), for the
    /// replicated-write comparison. GetItem and PutItem only.
    Etcd,
    /// The DynamoDB API with items read and written by PartiQL
    /// (ExecuteStatement): `SELECT` by full key for GetItem, `INSERT` for a
    /// new record, `UPDATE` for a new version, with `?` parameters.
    Partiql,
}

/// How an operation ended.
#[derive(Debug)]
pub enum Outcome {
    Ok,
    /// A conditional write lost a race (workload F).
    Conflict,
    Failed(Failure),
}

/// A failed operation: `class` groups failures in the report, `detail` is
/// one example.
#[derive(Debug)]
pub struct Failure {
    pub class: String,
    pub detail: String,
}

impl Failure {
    pub fn new(class: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            detail: detail.into(),
        }
    }

    fn wrong(detail: impl Into<String>) -> Self {
        Self::new("wrong answer", detail)
    }
}

/// Records inserted during a run (workloads D and E): which new records
/// are acknowledged, so reads only pick records that must exist.
pub struct Inserts {
    next: AtomicU64,
    /// Every record below this is loaded or acknowledged (or failed).
    watermark: AtomicU64,
    any_failed: AtomicBool,
    state: Mutex<InsertState>,
}

#[derive(Default)]
struct InsertState {
    /// Finished records above the watermark.
    done_above: BTreeSet<u64>,
    /// Inserts that failed: they may or may not exist.
    failed: BTreeSet<u64>,
}

impl Inserts {
    /// `loaded` records exist before the run.
    pub fn new(loaded: u64) -> Self {
        Self {
            next: AtomicU64::new(loaded),
            watermark: AtomicU64::new(loaded),
            any_failed: AtomicBool::new(false),
            state: Mutex::new(InsertState::default()),
        }
    }

    /// The next new record.
    pub fn begin(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn finish(&self, record: u64, ok: bool) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if !ok {
            st.failed.insert(record);
            self.any_failed.store(true, Ordering::Relaxed);
        }
        let mut mark = self.watermark.load(Ordering::Relaxed);
        if record != mark {
            st.done_above.insert(record);
            return;
        }
        mark += 1;
        while st.done_above.remove(&mark) {
            mark += 1;
        }
        self.watermark.store(mark, Ordering::Release);
    }

    /// Records `0..readable()` may be read.
    pub fn readable(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// Whether a read of `record` has a known answer.
    pub fn certain(&self, record: u64) -> bool {
        if !self.any_failed.load(Ordering::Relaxed) {
            return true;
        }
        self.state
            .lock()
            .map(|st| !st.failed.contains(&record))
            .unwrap_or(false)
    }
}

/// What every operation of a run shares.
pub struct Ctx {
    pub protocol: Protocol,
    pub table: String,
    pub layout: Layout,
    pub payload_len: usize,
    pub consistent_reads: bool,
    /// The table is created with a stream of this view type.
    pub stream_view_type: Option<String>,
    /// The PartiQL statements of this table, written once.
    pub statements: Statements,
}

/// The PartiQL statements a run sends, with `?` for every value.
pub struct Statements {
    select: String,
    insert: String,
    update: String,
}

impl Statements {
    pub fn new(table: &str, layout: Layout) -> Statements {
        let (where_key, sk) = match layout {
            Layout::Hash => ("pk = ?", ""),
            Layout::Range => ("pk = ? AND sk = ?", ", 'sk': ?"),
        };
        Statements {
            select: format!("SELECT * FROM \"{table}\" WHERE {where_key}"),
            insert: format!("INSERT INTO \"{table}\" VALUE {{'pk': ?{sk}, 'ver': ?, 'v': ?}}"),
            update: format!("UPDATE \"{table}\" SET ver = ? SET v = ? WHERE {where_key}"),
        }
    }
}

impl Ctx {
    fn key(&self, record: u64) -> Value {
        match self.layout {
            Layout::Hash => json!({"pk": {"S": keys::hash_key(record)}}),
            Layout::Range => {
                let (pk, sk) = keys::range_key(record);
                json!({"pk": {"S": pk}, "sk": {"N": sk.to_string()}})
            }
        }
    }

    /// The item for `record` at `ver`, as DynamoDB JSON.
    pub fn item(&self, record: u64, ver: u64) -> Value {
        let mut item = self.key(record);
        if let Some(map) = item.as_object_mut() {
            map.insert("ver".into(), json!({"N": ver.to_string()}));
            let v = keys::payload(record, ver, self.payload_len);
            map.insert("v".into(), json!({"S": v}));
        }
        item
    }

    /// GetItem of `record`; returns the version read.
    pub async fn read(
        &self,
        conn: &mut Conn,
        record: u64,
        consistent: bool,
    ) -> Result<u64, Failure> {
        if self.protocol == Protocol::Etcd {
            return self.etcd_read(conn, record).await;
        }
        if self.protocol == Protocol::Partiql {
            let body = json!({
                "Statement": self.statements.select,
                "Parameters": self.key_params(record),
                "ConsistentRead": consistent,
            });
            let v = call(conn, "ExecuteStatement", &body).await?;
            let item = v
                .get("Items")
                .and_then(|i| i.get(0))
                .ok_or_else(|| Failure::wrong(format!("SELECT of record {record}: no item")))?;
            return self.check_item(item, record);
        }
        let body =
            json!({"TableName": self.table, "Key": self.key(record), "ConsistentRead": consistent});
        let v = call(conn, "GetItem", &body).await?;
        let item = v
            .get("Item")
            .ok_or_else(|| Failure::wrong(format!("GetItem of record {record}: no item")))?;
        self.check_item(item, record)
    }

    /// PutItem of `record` at `ver`; with `expect`, only if its version is
    /// that (a conflict otherwise).
    pub async fn write(
        &self,
        conn: &mut Conn,
        record: u64,
        ver: u64,
        expect: Option<u64>,
    ) -> Outcome {
        if self.protocol == Protocol::Etcd {
            return match self.etcd_write(conn, record, ver).await {
                Ok(()) => Outcome::Ok,
                Err(f) => Outcome::Failed(f),
            };
        }
        if self.protocol == Protocol::Partiql {
            return self.statement_write(conn, record, ver, expect).await;
        }
        let mut body = json!({"TableName": self.table, "Item": self.item(record, ver)});
        if let (Some(old), Some(map)) = (expect, body.as_object_mut()) {
            map.insert("ConditionExpression".into(), json!("ver = :old"));
            map.insert(
                "ExpressionAttributeValues".into(),
                json!({":old": {"N": old.to_string()}}),
            );
        }
        write_outcome(
            "PutItem",
            call(conn, "PutItem", &body).await,
            expect.is_some(),
        )
    }

    /// The values of `record`'s key, in the statements' order.
    fn key_params(&self, record: u64) -> Vec<Value> {
        match self.layout {
            Layout::Hash => vec![json!({"S": keys::hash_key(record)})],
            Layout::Range => {
                let (pk, sk) = keys::range_key(record);
                vec![json!({"S": pk}), json!({"N": sk.to_string()})]
            }
        }
    }

    /// A write as a PartiQL statement: `INSERT` of version 0 (a new
    /// record), else `UPDATE` of the version and payload, with `expect` as
    /// a condition on the version read.
    async fn statement_write(
        &self,
        conn: &mut Conn,
        record: u64,
        ver: u64,
        expect: Option<u64>,
    ) -> Outcome {
        let key_params = self.key_params(record);
        let payload = json!({"S": keys::payload(record, ver, self.payload_len)});
        let ver_json = json!({"N": ver.to_string()});
        let (statement, mut params) = if ver == 0 && expect.is_none() {
            let mut params = key_params;
            params.extend([ver_json, payload]);
            (self.statements.insert.clone(), params)
        } else {
            let mut params = vec![ver_json, payload];
            params.extend(key_params);
            (self.statements.update.clone(), params)
        };
        let mut statement = statement;
        if let Some(old) = expect {
            statement.push_str(" AND ver = ?");
            params.push(json!({"N": old.to_string()}));
        }
        let body = json!({"Statement": statement, "Parameters": params});
        let answer = call(conn, "ExecuteStatement", &body).await;
        write_outcome("ExecuteStatement", answer, expect.is_some())
    }

    /// Query of `len` records from `start` (a record of a complete group).
    pub async fn scan(&self, conn: &mut Conn, start: u64, len: u64) -> Result<(), Failure> {
        let (pk, first) = keys::range_key(start);
        let want = len.min(GROUP_ITEMS - first);
        let body = json!({
            "TableName": self.table,
            "KeyConditionExpression": "pk = :p AND sk >= :s",
            "ExpressionAttributeValues": {":p": {"S": pk}, ":s": {"N": first.to_string()}},
            "Limit": len,
            "ConsistentRead": self.consistent_reads,
        });
        let v = call(conn, "Query", &body).await?;
        let items = v
            .get("Items")
            .and_then(Value::as_array)
            .ok_or_else(|| Failure::wrong("Query answer has no Items"))?;
        if items.len() as u64 != want {
            return Err(Failure::wrong(format!(
                "Query from record {start}: {} items, want {want}",
                items.len()
            )));
        }
        for (k, item) in items.iter().enumerate() {
            self.check_item(item, start + k as u64)?;
        }
        Ok(())
    }

    /// The item must be `record`'s, with the payload of its version.
    fn check_item(&self, item: &Value, record: u64) -> Result<u64, Failure> {
        let want_key = self.key(record);
        let key_ok = match self.layout {
            Layout::Hash => item.get("pk") == want_key.get("pk"),
            Layout::Range => {
                item.get("pk") == want_key.get("pk") && item.get("sk") == want_key.get("sk")
            }
        };
        if !key_ok {
            return Err(Failure::wrong(format!(
                "record {record}: item has another key"
            )));
        }
        let ver = item
            .pointer("/ver/N")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| Failure::wrong(format!("record {record}: no version")))?;
        let v = item.pointer("/v/S").and_then(Value::as_str);
        if v != Some(keys::payload(record, ver, self.payload_len).as_str()) {
            return Err(Failure::wrong(format!(
                "record {record}: payload does not match version {ver}"
            )));
        }
        Ok(ver)
    }

    fn etcd_value(&self, record: u64, ver: u64) -> String {
        format!("{ver}:{}", keys::payload(record, ver, self.payload_len))
    }

    async fn etcd_write(&self, conn: &mut Conn, record: u64, ver: u64) -> Result<(), Failure> {
        let key = BASE64.encode(keys::hash_key(record));
        let value = BASE64.encode(self.etcd_value(record, ver));
        let v = etcd_call(conn, "/v3/kv/put", &json!({"key": key, "value": value})).await?;
        if v.get("header").is_none() {
            return Err(Failure::wrong(format!("etcd put answered {v}")));
        }
        Ok(())
    }

    async fn etcd_read(&self, conn: &mut Conn, record: u64) -> Result<u64, Failure> {
        let key = BASE64.encode(keys::hash_key(record));
        let v = etcd_call(conn, "/v3/kv/range", &json!({"key": key})).await?;
        let value = v
            .pointer("/kvs/0/value")
            .and_then(Value::as_str)
            .and_then(|s| BASE64.decode(s).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Failure::wrong(format!("etcd range of record {record}: no value")))?;
        let ver = value
            .split_once(':')
            .and_then(|(ver, _)| ver.parse::<u64>().ok())
            .ok_or_else(|| Failure::wrong(format!("record {record}: no version")))?;
        if value != self.etcd_value(record, ver) {
            return Err(Failure::wrong(format!(
                "record {record}: payload does not match version {ver}"
            )));
        }
        Ok(ver)
    }
}

/// The failure class of a request that got no HTTP response.
pub const TRANSPORT_ERROR: &str = "transport error";

/// A DynamoDB call: the parsed JSON of a 200, or the failure.
/// A write's answer as an outcome: with a condition (`conditional`), a
/// failed condition is a lost race, not a failure.
fn write_outcome(op: &str, answer: Result<Value, Failure>, conditional: bool) -> Outcome {
    match answer {
        Ok(v) if v.is_object() => Outcome::Ok,
        Ok(v) => Outcome::Failed(Failure::wrong(format!("{op} answered {v}"))),
        Err(f) if conditional && f.class.ends_with("ConditionalCheckFailedException") => {
            Outcome::Conflict
        }
        Err(f) => Outcome::Failed(f),
    }
}

pub async fn call(conn: &mut Conn, op: &str, body: &Value) -> Result<Value, Failure> {
    answer(conn.dynamodb(op, body.to_string().into_bytes()).await)
}

async fn etcd_call(conn: &mut Conn, path: &str, body: &Value) -> Result<Value, Failure> {
    answer(conn.post(path, body.to_string().into_bytes()).await)
}

fn answer(resp: Result<Response, ClientError>) -> Result<Value, Failure> {
    let resp = resp.map_err(|e| Failure::new(TRANSPORT_ERROR, e.to_string()))?;
    let v: Option<Value> = serde_json::from_slice(&resp.body).ok();
    if resp.status != 200 {
        let kind = v
            .as_ref()
            .and_then(|v| v.get("__type").or_else(|| v.get("error")))
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_default();
        let detail = String::from_utf8_lossy(&resp.body)
            .chars()
            .take(300)
            .collect::<String>();
        return Err(Failure::new(format!("HTTP {} {kind}", resp.status), detail));
    }
    v.ok_or_else(|| Failure::wrong("200 with a body that is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_moves_only_over_finished_inserts() {
        let ins = Inserts::new(10);
        let (a, b, c) = (ins.begin(), ins.begin(), ins.begin());
        assert_eq!((a, b, c), (10, 11, 12));
        ins.finish(b, true);
        assert_eq!(ins.readable(), 10);
        ins.finish(a, true);
        assert_eq!(ins.readable(), 12);
        ins.finish(c, false);
        assert_eq!(ins.readable(), 13);
        assert!(ins.certain(11));
        assert!(!ins.certain(12));
    }
}
