//! The openraft type configuration. Nothing outside this crate names an
//! openraft type directly; they use the aliases re-exported here.

use dynaraft_storage::Outcome;
use dynaraft_storage::command::Entry as Command;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a node is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of the node's internal (gRPC) endpoint.
    pub addr: String,
    /// Availability zone label, e.g. `az-a`.
    pub az: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.az)
    }
}

openraft::declare_raft_types!(
    /// dynaraft's Raft types: log entries carry storage commands, applying
    /// one yields its outcome.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::GroupStateMachine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type LogEntry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotBytes>;

/// A snapshot's payload: every key of the group, length-prefixed.
pub type SnapshotBytes = Vec<u8>;
