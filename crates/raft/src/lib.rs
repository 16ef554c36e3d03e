//! Replication: the project's facade over openraft, pinned to one exact
//! pre-release version (`=0.10.0-alpha.37`) so an upgrade is a deliberate,
//! tested change. Nothing outside this crate names openraft types.
//!
//! - [`log_store`]: each group's Raft log on the node's shared write-ahead
//!   log (group commit, fdatasync), votes in a small fsynced file.
//! - [`state_machine`]: the deterministic storage state machine, with the
//!   Raft applied log id and membership in the same sled batch as the data.
//! - [`network`]: an in-process network for tests and simulation.
//! - [`grpc`]: the gRPC transport between nodes (`proto/raft.proto`), with
//!   [`batch`] coalescing all groups' messages to a peer into one call.
//! - [`group`]: one group on one node, and `propose`.
//!
//! Depends on storage and model; must never depend on the API layer.

pub mod batch;
pub mod group;
pub mod grpc;
pub mod log_store;
pub mod network;
pub mod propose;
pub mod purger;
pub mod state_machine;
pub mod tls;
pub mod types;

pub use group::{GroupNetwork, ProposeError, RaftGroup, Timing};
pub use types::{NodeId, NodeInfo};

/// An I/O error carrying `e`'s message (what openraft's storage traits return).
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Splits `[len u32 LE][len bytes][rest]` into the bytes and the rest;
/// `None` when the input is shorter than it says.
pub(crate) fn split_len_prefixed(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = b.split_at_checked(4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    rest.split_at_checked(len)
}
