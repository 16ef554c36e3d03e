//! Storage: the node's write-ahead log with group commit ([`wal`]), the
//! deterministic state machine over sled ([`machine`], with the control
//! plane's catalog commands in [`control`], local indexes in [`index`] and
//! global indexes' change log and apply in [`global`], transactions'
//! intents, records and stamps in [`txn`]), the commands it
//! applies ([`command`]) and the catalog they describe ([`catalog`]), reads
//! for GetItem/Query/Scan ([`read`]), the key-value engine under them
//! all ([`kv`], the only module that names it), and whose data directory
//! it is ([`identity`]). Replication and the
//! lifecycle of groups live above, in `dynaraft-raft` and
//! `dynaraft-cluster`.
//!
//! Depends on `dynaraft-model` and `dynaraft-expr`. Must never depend on
//! the API layer or know about HTTP: errors here say what the caller should
//! do (retry, report corruption), not which DynamoDB exception to send.

pub mod backup;
pub mod catalog;
pub mod cipher;
pub mod command;
pub mod committer;
pub mod control;
pub mod global;
pub mod identity;
pub mod index;
pub mod jobs;
pub mod kv;
pub mod machine;
pub mod quarantine;
pub mod read;
pub mod replica;
pub mod span;
pub mod split;
pub mod txn;
pub mod wal;

pub use catalog::{
    GlobalIndexMeta, IndexMeta, IndexStatus, InsightsMeta, NodeRecord, PartitionMeta, Projection,
    ReplicaMeta, ReplicaSettings, Replication, ResourcePolicyMeta, StreamMeta, TableMeta,
    TableStatus, UserRecord,
};
pub use command::{Command, JsonDoc, WriteCommand, WriteKind};
pub use machine::Outcome;
pub use span::Span;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StorageError {
    /// Disk or sled failure: the node cannot continue safely.
    #[error("storage failure: {0}")]
    Fatal(String),
    /// Bytes on disk failed a checksum or could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The group cannot take the request now; the client may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The group no longer owns the key or range asked for (it split after
    /// the caller mapped it): refresh the partition map and retry.
    #[error("wrong range: {0}")]
    WrongRange(String),
}

/// The first fatal error a background writer (the WAL's, the committer's)
/// met, shared with its handles so the node can report it. Cloning shares it.
#[derive(Clone, Default)]
pub struct FirstFailure(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl FirstFailure {
    /// Keeps `why` unless an earlier failure is already kept.
    pub fn record(&self, why: impl FnOnce() -> String) {
        if let Ok(mut f) = self.0.lock() {
            f.get_or_insert_with(why);
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|f| f.clone())
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        match e {
            // A page or segment failed sled's checksum: the bytes on disk
            // are damaged, which a retry or a restart cannot mend.
            sled::Error::Corruption { .. } => StorageError::Corrupt(format!("sled: {e}")),
            e => StorageError::Fatal(e.to_string()),
        }
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Fatal(e.to_string())
    }
}

/// Blocks for the next request on `rx`, then takes whatever else is already
/// queued, up to `max` in all; `None` once the channel is closed. The
/// group-commit loop of the WAL's and the committer's threads.
pub(crate) fn next_blocking_batch<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    max: usize,
) -> Option<Vec<T>> {
    let mut batch = vec![rx.blocking_recv()?];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Resolves once a stop flag is set (or its sender is gone). Holds no guard
/// across the await, so it can sit in `select!` in spawned tasks.
pub async fn stop_requested(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Milliseconds since the Unix epoch (what a leader stamps into entries).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
