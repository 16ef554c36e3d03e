//! Calling storage nodes over gRPC: one channel per node address (shared
//! with Raft traffic when the caller is itself a node), and the catalog
//! feed of routers and nodes that hold no control-plane replica, which
//! long-polls the control plane's nodes in turn.

use crate::ClusterError;
use crate::batch::{DataBatcher, Lost};
use crate::catalog::{Catalog, CatalogWatch};
use crate::service::MAX_DATA_MESSAGE_BYTES;
use crate::service::pb::data_reply::Result as ReplyResult;
use crate::service::pb::data_service_client::DataServiceClient;
use crate::service::pb::{DataReply, DataRequest};
use crate::wire::{PROPOSE_TIMEOUT_MS, Reply, Request, WireError};
use arc_swap::ArcSwap;
use dynaraft_raft::grpc::Channels;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Longest a call to a node may take before it is abandoned: a proposal's
/// commit timeout plus a margin for the round trip.
pub const REMOTE_CALL_TIMEOUT_MS: u64 = PROPOSE_TIMEOUT_MS + 1_000;
/// Longest a call that scans a partition (where to split it, the tally of
/// the half a split hands over) may take: counting the half of a 10 GiB
/// partition took 12 s when a split still did it in its apply (2026-12-06),
/// twice a proposal's call timeout, so such a call gets far more.
pub const SCAN_CALL_TIMEOUT_MS: u64 = 300_000;
/// Pause before polling the next control node after a failure.
pub const CATALOG_RETRY_MS: u64 = 200;

#[derive(Clone, Default)]
pub struct Remote {
    channels: Channels,
    /// Node address -> the batcher of its reads and proposals (read without
    /// a lock on every call; replaced whole when a node is first called).
    batchers: Arc<ArcSwap<HashMap<String, DataBatcher>>>,
}

impl Remote {
    pub fn new(channels: Channels) -> Remote {
        Remote {
            channels,
            batchers: Arc::default(),
        }
    }

    /// Sends `req` for `group` (at partition `epoch`, 0 when not routed by
    /// the map) to the node at `addr`. Reads and proposals travel in the
    /// node's batches; the rest (catalog long-polls, status, stats, pings)
    /// as calls of their own.
    pub async fn call(
        &self,
        addr: &str,
        group: u64,
        epoch: u64,
        req: &Request,
    ) -> Result<Reply, ClusterError> {
        let payload = serde_json::to_vec(req)
            .map_err(|e| ClusterError::Unavailable(format!("encode: {e}")))?;
        let request = DataRequest {
            group,
            payload,
            epoch,
        };
        let timeout = Duration::from_millis(match req {
            Request::SplitPoint { .. } | Request::SplitTally { .. } => SCAN_CALL_TIMEOUT_MS,
            _ => REMOTE_CALL_TIMEOUT_MS,
        });
        let batched = matches!(
            req,
            Request::Propose(_)
                | Request::Get { .. }
                | Request::Range { .. }
                | Request::TxnRead { .. }
                | Request::TxnRecord { .. }
        );
        let sent = async {
            if batched {
                self.batcher(addr)?
                    .call(request)
                    .await
                    .map_err(|l| lost_error(addr, l))
            } else {
                self.client(addr)?
                    .call(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| lost_error(addr, crate::batch::lost(status)))
            }
        };
        let resp = tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| ClusterError::Unavailable(format!("{addr} timed out")))??;
        decode_reply(addr, resp)
    }

    fn client(&self, addr: &str) -> Result<DataServiceClient<Channel>, ClusterError> {
        let channel = self
            .channels
            .channel(addr)
            .map_err(ClusterError::Unreachable)?;
        Ok(DataServiceClient::new(channel)
            .max_decoding_message_size(MAX_DATA_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_DATA_MESSAGE_BYTES))
    }

    /// The batcher of `addr`, started on first use.
    fn batcher(&self, addr: &str) -> Result<DataBatcher, ClusterError> {
        if let Some(b) = self.batchers.load().get(addr) {
            return Ok(b.clone());
        }
        let client = self.client(addr)?;
        let timeout = Duration::from_millis(REMOTE_CALL_TIMEOUT_MS);
        // Two callers may race to start one; the first stored wins and the
        // other's (unused) task ends when its last handle drops.
        let fresh = DataBatcher::start(client, timeout);
        self.batchers.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(addr.to_string()).or_insert_with(|| fresh.clone());
            m
        });
        self.batchers
            .load()
            .get(addr)
            .cloned()
            .ok_or_else(|| ClusterError::Unreachable(format!("no batcher for {addr}")))
    }
}

fn decode_reply(addr: &str, resp: DataReply) -> Result<Reply, ClusterError> {
    match resp.result {
        Some(ReplyResult::Ok(b)) => serde_json::from_slice(&b)
            .map_err(|e| ClusterError::Unavailable(format!("bad reply from {addr}: {e}"))),
        Some(ReplyResult::Error(b)) => {
            let e: WireError = serde_json::from_slice(&b)
                .map_err(|e| ClusterError::Unavailable(format!("bad error from {addr}: {e}")))?;
            Err(e.into())
        }
        None => Err(ClusterError::Unavailable(format!(
            "empty reply from {addr}"
        ))),
    }
}

/// A request that never reached the node may be tried elsewhere; any other
/// transport failure leaves its fate unknown.
fn lost_error(addr: &str, lost: Lost) -> ClusterError {
    match lost {
        Lost::NeverSent(m) => ClusterError::Unreachable(format!("{addr}: {m}")),
        Lost::Unknown(m) => ClusterError::Unavailable(format!("{addr}: {m}")),
    }
}

/// Keeps `catalog` current by long-polling the control nodes at `addrs`,
/// moving to the next one whenever a poll fails, until `shutdown`.
pub async fn feed_catalog(
    remote: Remote,
    addrs: Vec<String>,
    catalog: Arc<CatalogWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    if addrs.is_empty() {
        tracing::error!("no control-plane addresses to read the catalog from");
        return;
    }
    let mut next = 0usize;
    loop {
        let addr = &addrs[next % addrs.len()];
        let since = catalog.get().version;
        let req = Request::Catalog { since };
        let poll = remote.call(addr, 0, 0, &req);
        let result = tokio::select! {
            r = poll => r,
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        };
        let doc = match result {
            Ok(Reply::Catalog(doc)) => Catalog::from_doc(doc).map_err(|e| e.to_string()),
            Ok(_) => Err("not a catalog in the answer".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match doc {
            Ok(doc) => catalog.publish(doc),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "catalog poll failed");
                next += 1;
                tokio::time::sleep(Duration::from_millis(CATALOG_RETRY_MS)).await;
            }
        }
    }
}
