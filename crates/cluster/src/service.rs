//! A storage node's gRPC endpoint: the Raft transport of every hosted group
//! and the data service (`proto/data.proto`) on one listener.

use crate::catalog::CatalogWatch;
use crate::host::Host;
use crate::wire::{self, Request, WireError};
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, FuturesUnordered};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Response, Status};

#[allow(clippy::all)]
pub(crate) mod pb {
    tonic::include_proto!("dynaraft.data.v1");
}

use pb::data_reply::Result as ReplyResult;
use pb::data_service_server::{DataService, DataServiceServer};
use pb::{DataBatch, DataBatchItem, DataReply, DataRequest};

/// Largest data request or reply, in bytes (a 1 MB page plus encoding).
pub const MAX_DATA_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most requests in one `CallMany` batch.
pub const MAX_DATA_BATCH_REQUESTS: usize = 256;

struct Service {
    host: Host,
    catalog: Arc<CatalogWatch>,
}

/// Decodes, executes and answers one request.
async fn handle(host: &Host, catalog: &CatalogWatch, m: DataRequest) -> Result<DataReply, Status> {
    let result = match serde_json::from_slice::<Request>(&m.payload) {
        Ok(r) => wire::execute(host, catalog, m.group, m.epoch, r)
            .await
            .map_err(WireError::from),
        Err(e) => Err(WireError::Unavailable(format!("bad request: {e}"))),
    };
    let result = match result {
        Ok(reply) => ReplyResult::Ok(encode(&reply)?),
        Err(e) => ReplyResult::Error(encode(&e)?),
    };
    Ok(DataReply {
        result: Some(result),
    })
}

#[tonic::async_trait]
impl DataService for Service {
    async fn call(&self, req: tonic::Request<DataRequest>) -> Result<Response<DataReply>, Status> {
        let reply = handle(&self.host, &self.catalog, req.into_inner()).await?;
        Ok(Response::new(reply))
    }

    type CallManyStream = BoxStream<'static, Result<DataBatchItem, Status>>;

    /// Runs a batch's requests concurrently on one task and streams each
    /// reply as it is ready. A caller that goes away stops the batch (its
    /// unfinished requests are dropped, as a dropped `Call` would be).
    async fn call_many(
        &self,
        req: tonic::Request<DataBatch>,
    ) -> Result<Response<Self::CallManyStream>, Status> {
        let requests = req.into_inner().requests;
        if requests.len() > MAX_DATA_BATCH_REQUESTS {
            return Err(Status::invalid_argument(format!(
                "{} requests in one batch; at most {MAX_DATA_BATCH_REQUESTS}",
                requests.len()
            )));
        }
        // Room for every reply: the task never waits on a slow reader.
        let (tx, mut rx) = mpsc::channel(requests.len().max(1));
        let host = self.host.clone();
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            let (host, catalog) = (&host, &catalog);
            let mut running: FuturesUnordered<_> = requests
                .into_iter()
                .enumerate()
                .map(|(i, m)| async move { (i, handle(host, catalog, m).await) })
                .collect();
            while let Some((i, reply)) = running.next().await {
                let item = reply.map(|reply| DataBatchItem {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    reply: Some(reply),
                });
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        let replies = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(replies.boxed()))
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

/// Serves the node on `listener` until the host shuts down.
pub async fn serve(
    host: Host,
    catalog: Arc<CatalogWatch>,
    listener: tokio::net::TcpListener,
) -> Result<(), tonic::transport::Error> {
    let mut stop = host.shutdown_signal();
    let raft = dynaraft_raft::grpc::transport_service(host.registry());
    let data = DataServiceServer::new(Service {
        host: host.clone(),
        catalog,
    })
    .max_decoding_message_size(MAX_DATA_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_DATA_MESSAGE_BYTES);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = host.channels().tls() {
        server = server.tls_config(tls.server())?;
    }
    drop(host);
    server
        .add_service(raft)
        .add_service(data)
        .serve_with_incoming_shutdown(
            // Accepted sockets default to Nagle's algorithm, which holds a
            // small reply behind an unacknowledged one until the peer's
            // delayed ACK (~40 ms): replies must go out at once.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move { dynaraft_storage::stop_requested(&mut stop).await },
        )
        .await
}
