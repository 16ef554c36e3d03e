//! Storage: the node's write-ahead log with group commit ([`wal`]), the
//! deterministic state machine over sled ([`machine`]), the owning task of
//! each group ([`partition`]), reads for GetItem/Query/Scan ([`read`]) and
//! the [`node::Node`] that opens, replays and checkpoints all of it.
//!
//! Depends on `dynaraft-model` and `dynaraft-expr`. Must never depend on
//! the API layer or know about HTTP: errors here say what the caller should
//! do (retry, report corruption), not which DynamoDB exception to send.

pub mod catalog;
pub mod command;
pub mod machine;
pub mod node;
pub mod partition;
pub mod read;
pub mod ttl;
pub mod wal;

pub use catalog::{TableMeta, TableStatus};
pub use command::{Command, WriteCommand, WriteKind};
pub use machine::Outcome;
pub use node::{Node, NodeConfig, Table};
/// The embedded state-machine store, re-exported so layers above use the same version.
pub use sled;

#[derive(Debug, thiserror::Error)]
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
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Fatal(e.to_string())
    }
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Fatal(e.to_string())
    }
}
