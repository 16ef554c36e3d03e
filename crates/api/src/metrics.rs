//! Prometheus metrics: the process-wide recorder the `metrics` macros
//! (used across the crates) report to, rendered at `GET /metrics`.
//!
//! Metrics recorded so far (each with a HELP line, [`describe`]):
//! - `dynaraft_successful_request_latency_seconds{operation}` (histogram):
//!   CloudWatch's SuccessfulRequestLatency, time to answer a 200.
//! - `dynaraft_user_errors_total{operation}` (counter): CloudWatch's
//!   UserErrors, requests answered with a 4xx (ConditionalCheckFailed and
//!   TransactionConflict counted apart, as CloudWatch does).
//! - `dynaraft_system_errors_total{operation}` (counter): SystemErrors, 5xx.
//! - `dynaraft_conditional_check_failed_requests_total{operation}` (counter):
//!   ConditionalCheckFailedRequests.
//! - `dynaraft_transaction_conflict_total{operation}` (counter):
//!   TransactionConflict (a single-item write met a transaction, or a
//!   transaction was cancelled).
//!
//! `operation` is the DynamoDB operation name, or `unknown` for a target
//! this server does not serve (so clients cannot grow the label set).
//! - `dynaraft_index_lag_records{table,group}` (gauge): change records of a
//!   base partition not yet delivered to its global indexes, as seen by
//!   the partition's leader.
//! - `dynaraft_index_records_delivered_total{table}` (counter).
//! - `dynaraft_index_backpressure_retries_total{table}` (counter): writes
//!   retried because a partition's change log was full.
//! - `dynaraft_idle_connections_closed_total` (counter): idle client
//!   connections closed to admit a new one at the connection cap.
//! - `dynaraft_connections_refused_total` (counter): connections closed at
//!   once because their client held its share, all busy.
//! - `dynaraft_requests_unavailable_total` (counter): requests answered
//!   ServiceUnavailable because the cluster could not serve them (their
//!   warnings are logged at most once a second, with the count skipped).

use crate::capacity::{Capacity, Counted};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY: &str = "dynaraft_successful_request_latency_seconds";
/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// How long a gauge recorded through the `metrics` crate stays on the page
/// without being set again, in seconds.
const STALE_GAUGE_S: u64 = 120;

/// Upper bounds of the WAL fsync histogram's buckets, in seconds.
const FSYNC_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// How often the recorder's upkeep runs, in milliseconds: it folds the
/// histogram samples recorded since into their buckets. Until then every
/// sample is held one by one (the exporter's queue of samples has no bound
/// of its own), and only a scrape of `/metrics` would drain it, so a node
/// nobody scrapes grew by every request it answered (about 17 bytes a
/// PutItem, 91 MiB over ten minutes of writes; docs/reliability.md).
pub const UPKEEP_INTERVAL_MS: u64 = 1_000;

/// Installs the Prometheus recorder once per process (later calls do
/// nothing), with a thread running its upkeep every
/// [`UPKEEP_INTERVAL_MS`]. `None` if another recorder was installed first.
pub fn install() {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            // Gauges are set again on every pass of whatever measures them
            // (index feeds, replication, the node's Raft metrics): one not
            // set for a while belongs to something gone (a dropped table,
            // a group no longer led here) and leaves the page.
            .idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(Duration::from_secs(STALE_GAUGE_S)),
            )
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), LATENCY_BUCKETS_S)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(dynaraft_storage::wal::WAL_FSYNC_METRIC.into()),
                    FSYNC_BUCKETS_S,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(dynaraft_storage::committer::COMMIT_METRIC.into()),
                    FSYNC_BUCKETS_S,
                )
            })
            .and_then(|b| b.install_recorder());
        match built {
            Ok(h) => {
                describe();
                keep_up(h.clone());
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL_MS`] on a thread of
/// its own for the life of the process (`install_recorder`, unlike the
/// exporter's `install`, leaves that to its caller; the recorder is
/// process-wide, so the thread needs no stopping). A thread rather than a
/// task: the recorder outlives any one runtime (tests start and stop many).
fn keep_up(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("dynaraft-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(UPKEEP_INTERVAL_MS));
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Without it histogram samples pile up until a scrape: say so.
        tracing::error!(error = %e, "metrics upkeep thread not started");
    }
}

/// The HELP text of every family this crate and the others record.
fn describe() {
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "Time to answer a successful request, by operation (CloudWatch SuccessfulRequestLatency)."
    );
    describe_counter!(
        "dynaraft_user_errors_total",
        "Requests answered with a 4xx error other than a failed condition or a transaction conflict, by operation (CloudWatch UserErrors)."
    );
    describe_counter!(
        "dynaraft_system_errors_total",
        "Requests answered with a 5xx error, by operation (CloudWatch SystemErrors)."
    );
    describe_counter!(
        "dynaraft_conditional_check_failed_requests_total",
        "Writes whose condition failed, by operation (CloudWatch ConditionalCheckFailedRequests)."
    );
    describe_counter!(
        "dynaraft_transaction_conflict_total",
        "Requests refused by a transaction conflict or cancelled, by operation (CloudWatch TransactionConflict)."
    );
    describe_gauge!(
        "dynaraft_index_lag_records",
        "Change records of a base partition not yet delivered to its global indexes."
    );
    describe_counter!(
        "dynaraft_index_records_delivered_total",
        "Change records delivered to global indexes."
    );
    describe_counter!(
        "dynaraft_index_backpressure_retries_total",
        "Writes retried because a partition's change log was full."
    );
    describe_counter!(
        "dynaraft_idle_connections_closed_total",
        "Idle client connections closed to admit a new one at the connection cap."
    );
    describe_counter!(
        "dynaraft_connections_refused_total",
        "Connections closed at once because their client held its share, all busy."
    );
    describe_counter!(
        "dynaraft_requests_unavailable_total",
        "Requests answered ServiceUnavailable because the cluster could not serve them."
    );
    describe_counter!(
        "dynaraft_authentication_failures_total",
        "Requests refused because their signature was missing, malformed, stale or wrong, by error type."
    );
    describe_counter!(
        "dynaraft_access_denied_total",
        "Requests refused because the principal's policies do not allow the action, by action."
    );
    describe_counter!(
        "dynaraft_tls_reload_failures_total",
        "Changed TLS certificate or key files that could not be loaded (the previous certificate is kept)."
    );
    describe_counter!(
        "dynaraft_auth_reload_failures_total",
        "Changed auth files that could not be loaded (the users loaded before are kept)."
    );
    describe_counter!(
        "dynaraft_audit_write_failures_total",
        "Audit records (or flushes of them) that could not be written."
    );
    describe_histogram!(
        dynaraft_storage::wal::WAL_FSYNC_METRIC,
        Unit::Seconds,
        "Time of each fdatasync of the Raft write-ahead log (one per group-commit batch)."
    );
    describe_histogram!(
        dynaraft_storage::committer::COMMIT_METRIC,
        Unit::Seconds,
        "Time of each write of applied commands to the state-machine store (one per merged batch of groups' commits)."
    );
    describe_gauge!(
        "dynaraft_raft_groups",
        "Raft groups (partitions and the control plane) this node holds a replica of."
    );
    describe_gauge!("dynaraft_raft_groups_led", "Raft groups this node leads.");
    describe_counter!(
        "dynaraft_raft_leader_changes_total",
        "Leader changes seen in the groups this node holds, looked at once a second."
    );
    describe_gauge!(
        "dynaraft_raft_apply_lag_entries",
        "Largest number of log entries a group on this node has not applied yet."
    );
    describe_gauge!(
        "dynaraft_raft_log_tail_bytes",
        "Bytes of Raft log not yet purged, all groups on this node together."
    );
    describe_counter!(
        "dynaraft_time_to_live_deleted_items_total",
        "Items deleted because their time to live expired, by table, counted by the node that deleted them (CloudWatch TimeToLiveDeletedItemCount)."
    );
    describe_counter!(
        "dynaraft_data_batches_total",
        "Batches of data requests sent to storage nodes."
    );
    describe_counter!(
        "dynaraft_data_batched_requests_total",
        "Data requests sent to storage nodes in batches."
    );
}

/// One answered API request: `operation` as served (or `unknown`), its
/// HTTP status and error type, and how long it took.
pub fn request(operation: &'static str, status: u16, error: Option<&str>, took: Duration) {
    let name = match (status, error) {
        (200, _) => {
            metrics::histogram!(LATENCY, "operation" => operation).record(took.as_secs_f64());
            return;
        }
        (500.., _) => "dynaraft_system_errors_total",
        (_, Some("ConditionalCheckFailedException")) => {
            "dynaraft_conditional_check_failed_requests_total"
        }
        (_, Some("TransactionConflictException" | "TransactionCanceledException")) => {
            "dynaraft_transaction_conflict_total"
        }
        _ => "dynaraft_user_errors_total",
    };
    metrics::counter!(name, "operation" => operation).increment(1);
}

/// A request whose signature did not authenticate it, by error type.
pub fn authentication_failed(error: &'static str) {
    metrics::counter!("dynaraft_authentication_failures_total", "error" => error).increment(1);
}

/// An action the principal's policies do not allow.
pub fn access_denied(action: &'static str) {
    metrics::counter!("dynaraft_access_denied_total", "action" => action).increment(1);
}

/// A changed TLS certificate or key that could not be loaded.
pub fn tls_reload_failed() {
    metrics::counter!("dynaraft_tls_reload_failures_total").increment(1);
}

/// A changed auth file that could not be loaded.
pub fn auth_reload_failed() {
    metrics::counter!("dynaraft_auth_reload_failures_total").increment(1);
}

/// An audit record that could not be written.
pub fn audit_write_failed() {
    metrics::counter!("dynaraft_audit_write_failures_total").increment(1);
}

/// An idle connection was closed to make room for a new one.
pub fn idle_connection_closed() {
    metrics::counter!("dynaraft_idle_connections_closed_total").increment(1);
}

/// A connection refused because its client already held its share of
/// connections, all busy (see `conns`).
pub fn connection_refused() {
    metrics::counter!("dynaraft_connections_refused_total").increment(1);
}

/// A request answered ServiceUnavailable because the cluster could not
/// serve it (no leader, no quorum, a stale map after retries, a node down).
pub fn request_unavailable() {
    metrics::counter!("dynaraft_requests_unavailable_total").increment(1);
}

/// The current metrics in Prometheus' text format, if installed: the
/// recorder's families, then the per-table ones of every API server
/// running in this process ([`add_tables`]).
pub fn render() -> Option<String> {
    let mut text = HANDLE.get().and_then(|h| h.as_ref()).map(|h| h.render())?;
    render_tables(&mut text);
    render_groups(&mut text);
    Some(text)
}

/// Where one API server's per-table families come from: its capacity
/// counts and its catalog. Held weakly, so that a server stopped (and its
/// node shut down) is not kept alive by its metrics: a node reopening the
/// same data directory in this process needs its store let go.
struct TableSource {
    capacity: Weak<Capacity>,
    router: dynaraft_cluster::WeakRouter,
}

impl TableSource {
    fn live(&self) -> Option<(Arc<Capacity>, dynaraft_cluster::Router)> {
        Some((self.capacity.upgrade()?, self.router.upgrade()?))
    }
}

static TABLE_SOURCES: Mutex<Vec<TableSource>> = Mutex::new(Vec::new());

/// Renders `capacity`'s per-table counts, for the tables `router`'s
/// catalog holds, in `/metrics` while `capacity` lives.
pub fn add_tables(capacity: &Arc<Capacity>, router: &dynaraft_cluster::Router) {
    let mut sources = TABLE_SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    sources.retain(|s| s.live().is_some());
    if !sources
        .iter()
        .any(|s| std::ptr::eq(s.capacity.as_ptr(), Arc::as_ptr(capacity)))
    {
        sources.push(TableSource {
            capacity: Arc::downgrade(capacity),
            router: router.downgrade(),
        });
    }
}

/// A node's hosted groups, whose size and load `/metrics` shows
/// (`dynaraft_partition_*{group}`), read when the page is rendered so a
/// group gone (split, moved, dropped) has no series left behind.
static HOSTS: Mutex<Vec<dynaraft_cluster::Host>> = Mutex::new(Vec::new());

/// Shows `host`'s groups in `/metrics` until [`remove_host`] (one node
/// process registers its host once it runs).
pub fn add_host(host: &dynaraft_cluster::Host) {
    let mut hosts = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    hosts.retain(|h| h.id() != host.id());
    hosts.push(host.clone());
}

/// Stops showing node `id`'s groups (before its host shuts down, so no
/// clone of it is left here).
pub fn remove_host(id: u64) {
    let mut hosts = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    hosts.retain(|h| h.id() != id);
}

/// Whether the storage node in this process is caught up and serving
/// (every registered host's `Host::readiness`); not ready while none is
/// registered (the node is still starting).
pub fn node_readiness() -> Result<(), String> {
    let hosts = hosts();
    if hosts.is_empty() {
        return Err("no storage node running in this process yet".into());
    }
    hosts.iter().try_for_each(dynaraft_cluster::Host::readiness)
}

/// The hosts registered with [`add_host`], at this moment.
fn hosts() -> Vec<dynaraft_cluster::Host> {
    HOSTS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Appends every registered host's per-group families.
fn render_groups(out: &mut String) {
    let gauges: Vec<(String, dynaraft_cluster::host::GroupGauge)> = hosts()
        .iter()
        .flat_map(|h| {
            let node = h.id().to_string();
            h.group_gauges().into_iter().map(move |g| (node.clone(), g))
        })
        .collect();
    type GroupValue = fn(&dynaraft_cluster::host::GroupGauge) -> f64;
    let families: [(Family, GroupValue); 3] = [
        (
            Family::gauge(
                "dynaraft_partition_items",
                "Items a partition (data group) holds, as this node's replica has applied them.",
            ),
            |g| g.items as f64,
        ),
        (
            Family::gauge(
                "dynaraft_partition_bytes",
                "Item bytes a partition (data group) holds, as this node's replica has applied them.",
            ),
            |g| g.bytes as f64,
        ),
        (
            Family::gauge(
                "dynaraft_partition_requests_per_second",
                "Requests this node's replica of a partition served a second, over the last load window (the load splits by heat use).",
            ),
            |g| g.ops_per_s as f64,
        ),
    ];
    for (family, value) in &families {
        let series: Vec<Series> = gauges
            .iter()
            .map(|(node, g)| {
                let (group, leader) = (g.group.to_string(), g.leader.to_string());
                let l = labels(&[("node", node), ("group", &group), ("leader", &leader)]);
                (l, value(g))
            })
            .collect();
        write_family(out, family, &series);
    }
}

/// A family this module renders itself: name, type and HELP text.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

impl Family {
    const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: "counter",
            help,
        }
    }

    const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: "gauge",
            help,
        }
    }
}

/// A per-table family's value for one table's counts.
type CountedValue = fn(&Counted) -> f64;

const COUNTED: &[(Family, CountedValue)] = &[
    (
        Family::counter(
            "dynaraft_consumed_read_capacity_units_total",
            "Read capacity units consumed, by table (CloudWatch ConsumedReadCapacityUnits).",
        ),
        |c| c.consumed_read,
    ),
    (
        Family::counter(
            "dynaraft_consumed_write_capacity_units_total",
            "Write capacity units consumed by the table itself, by table (CloudWatch ConsumedWriteCapacityUnits).",
        ),
        |c| c.consumed_write,
    ),
    (
        Family::counter(
            "dynaraft_returned_items_total",
            "Items returned by Query and Scan pages, by table (CloudWatch ReturnedItemCount).",
        ),
        |c| c.returned_items as f64,
    ),
    (
        Family::counter(
            "dynaraft_read_throttle_events_total",
            "Reads refused because capacity was spent, by table (CloudWatch ReadThrottleEvents).",
        ),
        |c| c.read_throttle_events as f64,
    ),
    (
        Family::counter(
            "dynaraft_write_throttle_events_total",
            "Writes refused because capacity was spent, by table (CloudWatch WriteThrottleEvents).",
        ),
        |c| c.write_throttle_events as f64,
    ),
    (
        Family::counter(
            "dynaraft_throttled_requests_total",
            "Requests refused because capacity was spent, by table (CloudWatch ThrottledRequests).",
        ),
        |c| c.throttled_requests as f64,
    ),
];

const PROVISIONED_READ: Family = Family::gauge(
    "dynaraft_provisioned_read_capacity_units",
    "Provisioned read capacity units of a provisioned table or global index (CloudWatch ProvisionedReadCapacityUnits).",
);

const PROVISIONED_WRITE: Family = Family::gauge(
    "dynaraft_provisioned_write_capacity_units",
    "Provisioned write capacity units of a provisioned table or global index (CloudWatch ProvisionedWriteCapacityUnits).",
);

const INDEX_PROGRESS: Family = Family::gauge(
    "dynaraft_online_index_percentage_progress",
    "Share of a new global index's base partitions backfilled, in percent, while it is being created (CloudWatch OnlineIndexPercentageProgress).",
);

const CONTRIBUTORS: Family = Family::gauge(
    "dynaraft_contributor_insights_key_requests",
    "Requests of the most accessed (rule PKC) and most throttled (rule PKT) partition keys in the last completed minute, for tables and indexes with Contributor Insights enabled.",
);

/// Each global index of `meta` being backfilled, with the share of the
/// table's partitions that finished its backfill, in percent.
fn index_progress(meta: &dynaraft_storage::TableMeta) -> Vec<(&str, f64)> {
    let of = meta.partitions.len().max(1);
    meta.global_indexes
        .iter()
        .filter(|g| g.backfill && g.status == dynaraft_storage::IndexStatus::Creating)
        .map(|g| {
            let done = g.backfilled.len().min(of);
            (g.index.name.as_str(), 100.0 * done as f64 / of as f64)
        })
        .collect()
}

/// One series of a family: its labels, rendered, and its value.
type Series = (String, f64);

/// Labels in Prometheus' text format, values escaped: `k="v",...`.
fn labels(pairs: &[(&str, &str)]) -> String {
    let escaped: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    escaped.join(",")
}

/// Appends `family`'s HELP and TYPE lines and its series; nothing for a
/// family without any.
fn write_family(out: &mut String, family: &Family, series: &[Series]) {
    use std::fmt::Write;
    if series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
    for (labels, value) in series {
        let _ = writeln!(out, "{}{{{labels}}} {value}", family.name);
    }
}

/// Appends the per-table families of every live source.
fn render_tables(out: &mut String) {
    let sources: Vec<(Arc<Capacity>, dynaraft_cluster::Router)> = {
        let mut sources = TABLE_SOURCES.lock().unwrap_or_else(|p| p.into_inner());
        sources.retain(|s| s.live().is_some());
        sources.iter().filter_map(TableSource::live).collect()
    };
    let mut counted = Vec::new();
    let (mut contributors, mut backfills) = (Vec::new(), Vec::new());
    let (mut read, mut write) = (Vec::new(), Vec::new());
    for (capacity, router) in &sources {
        let tables = router.tables();
        counted.extend(capacity.counts(&tables));
        for r in capacity.insights.top_keys(&tables) {
            for (key, n) in &r.keys {
                let mut l = vec![("table", r.table.as_str())];
                l.extend(r.index.as_deref().map(|ix| ("index", ix)));
                l.extend([("rule", r.rule.code()), ("key", key.as_str())]);
                contributors.push((labels(&l), *n as f64));
            }
        }
        for t in &tables {
            let m = &t.meta;
            for (index, percent) in index_progress(m) {
                backfills.push((labels(&[("table", &m.name), ("index", index)]), percent));
            }
            if m.pay_per_request() {
                continue;
            }
            let table = labels(&[("table", &m.name)]);
            read.push((table.clone(), m.read_capacity as f64));
            write.push((table, m.write_capacity as f64));
            for g in &m.global_indexes {
                let index = labels(&[("table", &m.name), ("index", &g.index.name)]);
                read.push((index.clone(), g.read_capacity as f64));
                write.push((index, g.write_capacity as f64));
            }
        }
    }
    for (family, value) in COUNTED {
        let series: Vec<Series> = counted
            .iter()
            .map(|(table, c)| (labels(&[("table", table)]), value(c)))
            .collect();
        write_family(out, family, &series);
    }
    write_family(out, &CONTRIBUTORS, &contributors);
    write_family(out, &INDEX_PROGRESS, &backfills);
    write_family(out, &PROVISIONED_READ, &read);
    write_family(out, &PROVISIONED_WRITE, &write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynaraft_storage::{GlobalIndexMeta, IndexMeta, IndexStatus, PartitionMeta, TableMeta};

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("table", "a\"b\\c\nd"), ("index", "i")]),
            r#"table="a\"b\\c\nd",index="i""#
        );
    }

    #[test]
    fn a_backfilling_index_reports_its_share_of_partitions_done() {
        let index = |name: &str, status, backfilled: Vec<u64>| GlobalIndexMeta {
            id: 0,
            index: IndexMeta {
                name: name.into(),
                key: dynaraft_model::KeySchema {
                    hash: vec![dynaraft_model::KeyAttr {
                        name: "g".into(),
                        ty: dynaraft_model::ScalarType::S,
                    }],
                    range: vec![],
                },
                projection: dynaraft_storage::Projection::All,
            },
            status,
            backfill: true,
            backfilled,
            partitions: Vec::new(),
            read_capacity: 0,
            write_capacity: 0,
        };
        let meta = TableMeta {
            partitions: PartitionMeta::even_split(4),
            global_indexes: vec![
                index("filling", IndexStatus::Creating, vec![1, 2, 3]),
                index("done", IndexStatus::Active, vec![1, 2, 3, 4]),
            ],
            ..Default::default()
        };
        assert_eq!(index_progress(&meta), vec![("filling", 75.0)]);
    }
}
