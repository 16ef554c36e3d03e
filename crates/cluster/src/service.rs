//! A storage node's gRPC endpoint: the Raft transport of every hosted group
//! and the data service (`proto/data.proto`) on one listener.

use crate::catalog::CatalogWatch;
use crate::host::Host;
use crate::wire::{self, Request, WireError};
use std::sync::Arc;
use tonic::{Response, Status};

#[allow(clippy::all)]
pub(crate) mod pb {
    tonic::include_proto!("dynaraft.data.v1");
}

use pb::data_reply::Result as ReplyResult;
use pb::data_service_server::{DataService, DataServiceServer};
use pb::{DataReply, DataRequest};

/// Largest data request or reply, in bytes (a 1 MB page plus encoding).
pub const MAX_DATA_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

struct Service {
    host: Host,
    catalog: Arc<CatalogWatch>,
}

#[tonic::async_trait]
impl DataService for Service {
    async fn call(&self, req: tonic::Request<DataRequest>) -> Result<Response<DataReply>, Status> {
        let m = req.into_inner();
        let result = match serde_json::from_slice::<Request>(&m.payload) {
            Ok(r) => wire::execute(&self.host, &self.catalog, m.group, m.epoch, r)
                .await
                .map_err(WireError::from),
            Err(e) => Err(WireError::Unavailable(format!("bad request: {e}"))),
        };
        let result = match result {
            Ok(reply) => ReplyResult::Ok(encode(&reply)?),
            Err(e) => ReplyResult::Error(encode(&e)?),
        };
        Ok(Response::new(DataReply {
            result: Some(result),
        }))
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
    drop(host);
    tonic::transport::Server::builder()
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
