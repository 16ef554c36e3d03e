//! The audit log: one JSON line per API request, like CloudTrail's data
//! events: when, request id, who (the principal's ARN and account, or the
//! unverified access key id when requests are not authenticated), from
//! where, which operation on which resources (the ARNs the request was
//! authorized for), and the outcome (HTTP status and error type).
//!
//! Requests hand their record to a writer thread over a bounded queue
//! ([`AUDIT_QUEUE_RECORDS`]); a full queue makes requests wait rather than
//! lose records. The writer appends and flushes after each batch it finds
//! queued; it does not fsync, so a machine crash can lose the last records
//! (an OS or process crash does not: the lines are in the page cache).
//! A failure to write is logged and counted, and the writer keeps trying.

use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use tokio::sync::mpsc;

/// Records waiting for the writer at most.
pub const AUDIT_QUEUE_RECORDS: usize = 8192;

/// One request, as the audit log records it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub event_time: String,
    pub request_id: String,
    /// The authenticated principal's ARN, absent when requests are not
    /// authenticated.
    pub principal_arn: Option<String>,
    pub account_id: Option<String>,
    /// The access key id the request was signed with (verified only when
    /// requests are authenticated).
    pub access_key_id: Option<String>,
    pub source_ip_address: Option<IpAddr>,
    /// The operation as served (`unknown` for a target that names none).
    pub event_name: &'static str,
    /// The ARNs the request was authorized for, in order (`*` for actions
    /// on no resource); empty if it was refused before any.
    pub resources: Vec<String>,
    pub status: u16,
    /// The DynamoDB error type, absent on success.
    pub error_code: Option<String>,
}

/// Where records go.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Record>,
}

impl AuditLog {
    /// Appends to the file at `path` (created if missing).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel(AUDIT_QUEUE_RECORDS);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_all(rx, file))?;
        Ok(AuditLog { tx })
    }

    /// Queues `record`, waiting while the queue is full.
    pub async fn record(&self, record: Record) {
        if self.tx.send(record).await.is_err() {
            crate::metrics::audit_write_failed();
        }
    }
}

/// The writer: appends each batch of queued records, then flushes.
fn write_all(mut rx: mpsc::Receiver<Record>, file: std::fs::File) {
    let mut out = std::io::BufWriter::new(file);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(r) = next {
            let line = serde_json::to_vec(&r).unwrap_or_default();
            if out
                .write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .is_err()
            {
                crate::metrics::audit_write_failed();
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            crate::metrics::audit_write_failed();
            tracing::error!(error = %e, "the audit log could not be written");
        }
    }
}

/// Now as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
