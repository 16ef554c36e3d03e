//! Calling storage nodes over gRPC: one channel per node address (shared
//! with Raft traffic when the caller is itself a node), and the catalog
//! feed of routers and nodes that hold no control-plane replica, which
//! long-polls the control plane's nodes in turn.

use crate::ClusterError;
use crate::catalog::{Catalog, CatalogWatch};
use crate::service::MAX_DATA_MESSAGE_BYTES;
use crate::service::pb::DataRequest;
use crate::service::pb::data_reply::Result as ReplyResult;
use crate::service::pb::data_service_client::DataServiceClient;
use crate::wire::{PROPOSE_TIMEOUT_MS, Reply, Request, WireError};
use dynaraft_raft::grpc::Channels;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest a call to a node may take before it is abandoned: a proposal's
/// commit timeout plus a margin for the round trip.
pub const REMOTE_CALL_TIMEOUT_MS: u64 = PROPOSE_TIMEOUT_MS + 1_000;
/// Pause before polling the next control node after a failure.
pub const CATALOG_RETRY_MS: u64 = 200;

#[derive(Clone, Default)]
pub struct Remote {
    channels: Channels,
}

impl Remote {
    pub fn new(channels: Channels) -> Remote {
        Remote { channels }
    }

    /// Sends `req` for `group` (at partition `epoch`, 0 when not routed by
    /// the map) to the node at `addr`.
    pub async fn call(
        &self,
        addr: &str,
        group: u64,
        epoch: u64,
        req: &Request,
    ) -> Result<Reply, ClusterError> {
        let channel = self
            .channels
            .channel(addr)
            .map_err(ClusterError::Unreachable)?;
        let mut client = DataServiceClient::new(channel)
            .max_decoding_message_size(MAX_DATA_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_DATA_MESSAGE_BYTES);
        let payload = serde_json::to_vec(req)
            .map_err(|e| ClusterError::Unavailable(format!("encode: {e}")))?;
        let sent = client.call(DataRequest {
            group,
            payload,
            epoch,
        });
        let timeout = Duration::from_millis(REMOTE_CALL_TIMEOUT_MS);
        let resp = match tokio::time::timeout(timeout, sent).await {
            Err(_) => {
                return Err(ClusterError::Unavailable(format!("{addr} timed out")));
            }
            Ok(Err(status)) => return Err(transport_error(addr, status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        match resp.result {
            Some(ReplyResult::Ok(b)) => serde_json::from_slice(&b)
                .map_err(|e| ClusterError::Unavailable(format!("bad reply from {addr}: {e}"))),
            Some(ReplyResult::Error(b)) => {
                let e: WireError = serde_json::from_slice(&b).map_err(|e| {
                    ClusterError::Unavailable(format!("bad error from {addr}: {e}"))
                })?;
                Err(e.into())
            }
            None => Err(ClusterError::Unavailable(format!(
                "empty reply from {addr}"
            ))),
        }
    }
}

/// A connection that could not be made means the request was never sent;
/// any other transport failure leaves its fate unknown.
fn transport_error(addr: &str, status: tonic::Status) -> ClusterError {
    let never_sent = match status.code() {
        tonic::Code::Unknown => status.message().starts_with("Service was not ready"),
        tonic::Code::Unavailable => status.message().contains("connect error"),
        _ => false,
    };
    let msg = format!("{addr}: {}", status.message());
    if never_sent {
        ClusterError::Unreachable(msg)
    } else {
        ClusterError::Unavailable(msg)
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
        match result {
            Ok(Reply::Catalog(doc)) => catalog.publish(Catalog::from_doc(doc)),
            other => {
                if let Err(e) = other {
                    tracing::debug!(%addr, error = %e, "catalog poll failed");
                }
                next += 1;
                tokio::time::sleep(Duration::from_millis(CATALOG_RETRY_MS)).await;
            }
        }
    }
}
