//! Prometheus metrics: the process-wide recorder the `metrics` macros
//! (used across the crates) report to, rendered at `GET /metrics`.
//!
//! Metrics recorded so far:
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

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (later calls do
/// nothing). `None` if another recorder was installed first.
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    });
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

/// The current metrics in Prometheus' text format, if installed.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(|h| h.as_ref()).map(|h| h.render())
}
