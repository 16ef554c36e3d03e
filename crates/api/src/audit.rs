//! The audit log: one JSON line per API request, like CloudTrail's data
//! events: when, request id, who (the principal's ARN and account, or the
//! unverified access key id when requests are not authenticated), from
//! where, which operation on which resources (the ARNs the request was
//! authorized for), and the outcome (HTTP status and error type).
//!
//! A request serializes its record and appends the line to a shared buffer;
//! a writer thread appends the buffer to the file and flushes it every
//! [`AUDIT_FLUSH_INTERVAL_MS`], so requests never wait for the disk, and
//! never wake a thread each. The buffer is bounded
//! ([`AUDIT_BUFFER_BYTES`]): a request that finds it full writes it out
//! itself, so the log waits rather than drops records. Lines are in request
//! completion order. The file is not fsynced: a machine crash can lose the
//! last records (a process crash loses at most the last interval's).
//! A failure to write is logged and counted, and later lines still go out.

use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// How often the writer appends what requests buffered, in milliseconds.
pub const AUDIT_FLUSH_INTERVAL_MS: u64 = 50;
/// Most bytes of records buffered before a request writes them itself.
pub const AUDIT_BUFFER_BYTES: usize = 4 << 20;

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
pub struct AuditLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

struct Shared {
    /// Lines not yet written.
    buf: Mutex<Vec<u8>>,
    /// Taken before `buf` by whoever writes, so lines keep their order.
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Appends to the file at `path` (created if missing).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let shared = Arc::new(Shared {
            buf: Mutex::new(Vec::new()),
            file: Mutex::new(file),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || flush_every_interval(weak))?;
        Ok(AuditLog { shared })
    }

    /// Buffers `record`'s line; writes the buffer out first if it is full.
    pub fn record(&self, record: &Record) {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        {
            let mut buf = lock(&self.shared.buf);
            if buf.len() + line.len() <= AUDIT_BUFFER_BYTES {
                buf.extend_from_slice(&line);
                return;
            }
        }
        // Full: write what is buffered, then this line, in order.
        let mut file = lock(&self.shared.file);
        let mut pending = std::mem::take(&mut *lock(&self.shared.buf));
        pending.extend_from_slice(&line);
        write_out(&mut file, &pending);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let pending = std::mem::take(&mut *lock(&self.buf));
        write_out(&mut lock(&self.file), &pending);
    }
}

/// A poisoned lock guards bytes or a file handle, both still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer: appends what was buffered every interval, until the log is
/// dropped.
fn flush_every_interval(shared: Weak<Shared>) {
    let interval = std::time::Duration::from_millis(AUDIT_FLUSH_INTERVAL_MS);
    loop {
        std::thread::sleep(interval);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut file = lock(&shared.file);
        let pending = std::mem::take(&mut *lock(&shared.buf));
        write_out(&mut file, &pending);
    }
}

fn write_out(file: &mut std::fs::File, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Err(e) = file.write_all(bytes).and_then(|()| file.flush()) {
        crate::metrics::audit_write_failed();
        tracing::error!(error = %e, "the audit log could not be written");
    }
}

/// Now as RFC 3339 with milliseconds, UTC (a stream label's format, with
/// its zone).
pub fn now_rfc3339() -> String {
    let now_ms = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or_default();
    format!("{}Z", crate::ops::stream_label(now_ms))
}
