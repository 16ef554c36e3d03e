//! Replication lag of a global table, measured from outside: while the
//! workload runs against one region, a probe writes an item there every
//! [`LAG_PROBE_INTERVAL_MS`] and reads it in the other region every
//! [`LAG_POLL_MS`] until it is there. A probe's lag runs from the
//! acknowledgement of its write to the first read that finds it (so it
//! includes up to one poll interval of the reader's own).

use crate::client::{Conn, Endpoint};
use crate::ops;
use crate::runner::BenchError;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between two probes, in milliseconds.
pub const LAG_PROBE_INTERVAL_MS: u64 = 100;
/// Time between two reads of a probe in the other region, in milliseconds.
pub const LAG_POLL_MS: u64 = 2;
/// A probe not seen in the other region within this is counted missing,
/// in milliseconds.
pub const LAG_GIVE_UP_MS: u64 = 30_000;
/// How long the replica may take to become ACTIVE, in milliseconds.
const REPLICA_ACTIVE_WAIT_MS: u64 = 120_000;
/// Pause between two looks at the replica's status, in milliseconds.
const REPLICA_POLL_MS: u64 = 100;

/// Replication lag as the probes saw it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LagSummary {
    pub probes: u64,
    /// Probes never seen in the other region within [`LAG_GIVE_UP_MS`], or
    /// whose write failed.
    pub missing: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Makes `table` a global table with a replica in `region`, unless it has
/// one already, and waits until the replica is ACTIVE.
pub async fn ensure_replica(
    endpoint: &Arc<Endpoint>,
    table: &str,
    region: &str,
) -> Result<(), BenchError> {
    let mut conn = Conn::new(endpoint.clone());
    let setup = |what: &str, f: ops::Failure| {
        BenchError::Setup(format!("{what}: {} {}", f.class, f.detail))
    };
    let describe = json!({"TableName": table});
    let status = |v: &Value| {
        v.pointer("/Table/Replicas")
            .and_then(Value::as_array)
            .and_then(|rs| rs.iter().find(|r| r["RegionName"] == region))
            .and_then(|r| r["ReplicaStatus"].as_str().map(str::to_string))
    };
    let current = ops::call(&mut conn, "DescribeTable", &describe)
        .await
        .map_err(|f| setup("DescribeTable", f))?;
    if status(&current).is_none() {
        let body = json!({
            "TableName": table,
            "ReplicaUpdates": [{"Create": {"RegionName": region}}],
        });
        ops::call(&mut conn, "UpdateTable", &body)
            .await
            .map_err(|f| setup("UpdateTable (ReplicaUpdates)", f))?;
    }
    let deadline = Instant::now() + Duration::from_millis(REPLICA_ACTIVE_WAIT_MS);
    while Instant::now() < deadline {
        let v = ops::call(&mut conn, "DescribeTable", &describe)
            .await
            .map_err(|f| setup("DescribeTable", f))?;
        let table_active =
            v.pointer("/Table/TableStatus").and_then(Value::as_str) == Some("ACTIVE");
        if table_active && status(&v).as_deref() == Some("ACTIVE") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(REPLICA_POLL_MS)).await;
    }
    Err(BenchError::Setup(format!(
        "the replica of {table} in {region} did not become ACTIVE"
    )))
}

/// Probes for `window` after `warmup`: writes through `primary`, reads
/// through `replica`.
pub async fn probe(
    primary: Arc<Endpoint>,
    replica: Arc<Endpoint>,
    table: String,
    warmup: Duration,
    window: Duration,
) -> LagSummary {
    tokio::time::sleep(warmup).await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, LAG_GIVE_UP_MS * 1000, 3)
        .expect("constant histogram bounds are valid");
    let (mut writer, mut reader) = (Conn::new(primary), Conn::new(replica));
    let mut summary = LagSummary::default();
    let run = format!("{:x}", rand::random::<u64>());
    let end = Instant::now() + window;
    let mut n = 0u64;
    while Instant::now() < end {
        let next = Instant::now() + Duration::from_millis(LAG_PROBE_INTERVAL_MS);
        let key = format!("lag-probe-{run}-{n}");
        n += 1;
        summary.probes += 1;
        match lag_of(&mut writer, &mut reader, &table, &key).await {
            Some(lag) => {
                hist.saturating_record((lag.as_micros() as u64).max(1));
            }
            None => summary.missing += 1,
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    summary.p50_ms = ms(hist.value_at_quantile(0.50));
    summary.p99_ms = ms(hist.value_at_quantile(0.99));
    summary.max_ms = ms(hist.max());
    summary
}

/// Writes probe `key` and returns how long after its acknowledgement the
/// other region first showed it (`None`: the write failed or it never did).
async fn lag_of(writer: &mut Conn, reader: &mut Conn, table: &str, key: &str) -> Option<Duration> {
    let item = json!({"TableName": table, "Item": {"pk": {"S": key}, "probe": {"BOOL": true}}});
    ops::call(writer, "PutItem", &item).await.ok()?;
    let acked = Instant::now();
    let get = json!({"TableName": table, "Key": {"pk": {"S": key}}});
    while acked.elapsed() < Duration::from_millis(LAG_GIVE_UP_MS) {
        if let Ok(v) = ops::call(reader, "GetItem", &get).await
            && v.get("Item").is_some()
        {
            return Some(acked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(LAG_POLL_MS)).await;
    }
    None
}
