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

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY: &str = "dynaraft_successful_request_latency_seconds";
/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Installs the Prometheus recorder once per process (later calls do
/// nothing). `None` if another recorder was installed first.
pub fn install() {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), LATENCY_BUCKETS_S)
            .and_then(|b| b.install_recorder());
        match built {
            Ok(h) => {
                describe();
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
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
        "dynaraft_audit_write_failures_total",
        "Audit records (or flushes of them) that could not be written."
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

/// The current metrics in Prometheus' text format, if installed.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(|h| h.as_ref()).map(|h| h.render())
}
