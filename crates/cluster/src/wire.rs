//! What travels in `proto/data.proto`'s payloads: requests to a storage
//! node, its replies and its errors, as JSON. The same [`Request`] is
//! executed in-process by the embedded router ([`execute`]), so both paths
//! run the same code on the node side.

use crate::ClusterError;
use crate::catalog::{Catalog, CatalogWatch};
use crate::host::Host;
use dynaraft_model::{Item, KeySchema};
use dynaraft_storage::command::Command;
use dynaraft_storage::read::{Page, ReadOptions};
use dynaraft_storage::{NodeRecord, Outcome, StorageError, TableMeta};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest a proposal waits for its commit before failing as unavailable.
pub const PROPOSE_TIMEOUT_MS: u64 = 5_000;
/// Longest a catalog long poll waits for a newer version.
pub const CATALOG_POLL_MS: u64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Propose(Command),
    Get {
        key: Vec<u8>,
        consistent: bool,
    },
    Range {
        schema: KeySchema,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
        opts: ReadOptions,
        consistent: bool,
    },
    Stats,
    /// Whether the node is up (the control plane's liveness probe).
    Ping,
    /// The Raft state of every group the node hosts (for `dynaraft admin`).
    Status,
    /// The catalog once its version exceeds `since`, or after
    /// [`CATALOG_POLL_MS`] whatever it is.
    Catalog {
        since: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Proposed(Outcome, u64),
    Item(Option<Item>),
    Page(Page),
    Stats(u64, u64),
    Pong,
    Status(Vec<GroupStatus>),
    Catalog(CatalogDoc),
}

/// One hosted replica's Raft state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
}

/// The catalog as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub struct CatalogDoc {
    pub version: u64,
    pub tables: Vec<TableMeta>,
    pub nodes: Vec<NodeRecord>,
}

impl From<&Catalog> for CatalogDoc {
    fn from(c: &Catalog) -> Self {
        CatalogDoc {
            version: c.version,
            tables: c.tables.values().map(|t| t.meta.clone()).collect(),
            nodes: c.nodes.values().cloned().collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum WireError {
    NotLeader { group: u64, leader: Option<u64> },
    NoGroup(u64),
    Unavailable(String),
    Storage(String),
}

impl From<ClusterError> for WireError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::NotLeader { group, leader } => WireError::NotLeader { group, leader },
            ClusterError::NoGroup(g) => WireError::NoGroup(g),
            ClusterError::Unreachable(m) | ClusterError::Unavailable(m) => {
                WireError::Unavailable(m)
            }
            ClusterError::Storage(s) => WireError::Storage(s.to_string()),
        }
    }
}

impl From<WireError> for ClusterError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotLeader { group, leader } => ClusterError::NotLeader { group, leader },
            WireError::NoGroup(g) => ClusterError::NoGroup(g),
            WireError::Unavailable(m) => ClusterError::Unavailable(m),
            WireError::Storage(m) => ClusterError::Storage(StorageError::Fatal(m)),
        }
    }
}

/// Serves one request on `host` (and, for the catalog, from `catalog`).
pub async fn execute(
    host: &Host,
    catalog: &CatalogWatch,
    group: u64,
    req: Request,
) -> Result<Reply, ClusterError> {
    Ok(match req {
        Request::Propose(cmd) => {
            let fut = host.propose(group, cmd);
            let (o, i) = tokio::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS), fut)
                .await
                .map_err(|_| {
                    ClusterError::Unavailable(format!("group {group} did not commit in time"))
                })??;
            Reply::Proposed(o, i)
        }
        Request::Get { key, consistent } => {
            Reply::Item(host.read_item(group, &key, consistent).await?)
        }
        Request::Range {
            schema,
            lo,
            hi,
            opts,
            consistent,
        } => Reply::Page(
            host.read_range(group, &schema, &lo, hi.as_deref(), &opts, consistent)
                .await?,
        ),
        Request::Stats => {
            let (c, b) = host.stats(group)?;
            Reply::Stats(c, b)
        }
        Request::Ping => Reply::Pong,
        Request::Status => Reply::Status(
            host.hosted()
                .into_iter()
                .filter_map(|g| host.group(g))
                .map(|g| {
                    let (last_log_index, applied_index) = g.progress();
                    GroupStatus {
                        group: g.group,
                        leader: g.leader(),
                        last_log_index,
                        applied_index,
                    }
                })
                .collect(),
        ),
        Request::Catalog { since } => {
            let newer = catalog.wait_for(since + 1);
            let _ = tokio::time::timeout(Duration::from_millis(CATALOG_POLL_MS), newer).await;
            Reply::Catalog(CatalogDoc::from(catalog.get().as_ref()))
        }
    })
}
