//! The cluster layer: storage nodes hosting many Raft groups ([`host`]),
//! the catalog they and the routers read ([`catalog`]), the reconciler that
//! starts and removes a node's replicas as the catalog changes
//! ([`reconcile`]), the router that sends each request to the right group
//! and replica ([`router`]), liveness and re-replication of the replicas of
//! down nodes ([`repair`]), the TTL sweeper ([`ttl`]), the global index
//! feeder ([`feed`]), the transaction coordinator, recovery and sweeper
//! ([`txn`]), partition splits ([`split`]), and the one-node
//! case of all of it ([`embedded`]); [`node`] starts a storage node of a
//! multi-node cluster, [`service`] and [`remote`] are the two ends of the
//! data RPCs whose payloads [`wire`] defines.
//!
//! The control plane is Raft group 0: its state machine is the storage
//! catalog (tables with their partition maps, the node registry), applied
//! by `dynaraft_storage::machine` like any other group.
//!
//! Depends on storage and raft; must never depend on the API layer or know
//! about HTTP. Errors say what the caller does: retry elsewhere, retry
//! later, or report.

pub mod admin;
pub mod backup;
pub mod batch;
pub mod catalog;
pub mod embedded;
pub mod feed;
pub mod heat;
pub mod host;
pub mod ion;
pub mod jobs;
pub mod leaders;
pub mod node;
pub mod objects;
pub mod peer;
pub mod reconcile;
pub mod remote;
pub mod repair;
pub mod replicate;
pub mod router;
pub mod service;
pub mod split;
pub mod survey;
pub mod ttl;
pub mod txn;
pub mod wire;

pub use catalog::{Catalog, CatalogWatch, Table};
pub use embedded::Embedded;
pub use host::{Host, HostConfig};
pub use router::{Router, WeakRouter};

use dynaraft_raft::NodeId;
use dynaraft_storage::StorageError;

/// Why a data or catalog request did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This replica is not the leader; `leader` is who is, when known.
    #[error("not the leader of group {group}; leader is {leader:?}")]
    NotLeader { group: u64, leader: Option<NodeId> },
    /// The node does not host the group (the caller's map is stale).
    #[error("group {0} is not hosted here")]
    NoGroup(u64),
    /// The caller routed with an older epoch of the partition than the
    /// node's catalog (version `version`) has: refresh the map, re-resolve
    /// the key, retry.
    #[error("stale partition map for group {group}; catalog version {version} is newer")]
    StaleEpoch { group: u64, version: u64 },
    /// The request never reached the node (it could not be connected to):
    /// trying another replica is safe.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No quorum or no reachable replica in time; the client may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The table is no longer in the catalog (deleted while the request
    /// was on its way): the client is told the table does not exist.
    #[error("table {0} is not in the catalog")]
    NoTable(String),
    /// Storage failed or data is corrupt.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<dynaraft_raft::ProposeError> for ClusterError {
    fn from(e: dynaraft_raft::ProposeError) -> Self {
        match e {
            dynaraft_raft::ProposeError::NotLeader { leader } => {
                ClusterError::NotLeader { group: 0, leader }
            }
            dynaraft_raft::ProposeError::Unavailable(m) => ClusterError::Unavailable(m),
        }
    }
}
