//! Replication: the project's facade over openraft, pinned to one exact
//! pre-release version (`=0.10.0-alpha.37`) so an upgrade is a deliberate,
//! tested change. Nothing outside this crate names openraft types.
//!
//! - [`log_store`]: each group's Raft log on the node's shared write-ahead
//!   log (group commit, fdatasync), votes in a small fsynced file.
//! - [`state_machine`]: the deterministic storage state machine, with the
//!   Raft applied log id and membership in the same sled batch as the data.
//! - [`network`]: an in-process network for tests and simulation.
//! - [`grpc`]: the gRPC transport between nodes (`proto/raft.proto`).
//! - [`group`]: one group on one node, and `propose`.
//!
//! Depends on storage and model; must never depend on the API layer.

pub mod group;
pub mod grpc;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

pub use group::{ProposeError, RaftGroup, Timing};
pub use types::{NodeId, NodeInfo};
