//! The gRPC transport between storage nodes (`proto/raft.proto`).
//!
//! Server: [`serve`] exposes every group a node hosts (a [`Registry`]) on one
//! listener. Client: [`GrpcNetwork`] keeps one tonic channel per peer
//! address, shared by every group, so all Raft traffic between two nodes
//! travels on one HTTP/2 connection; snapshots use their own RPC. Payloads
//! are openraft messages as JSON; snapshot data travels raw behind a JSON
//! header. Batching several groups' messages into one RPC is a later step.

use crate::types::{NodeId, NodeInfo, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

#[allow(clippy::all)]
mod pb {
    tonic::include_proto!("dynaraft.raft.v1");
}

use pb::group_reply::Result as ReplyResult;
use pb::raft_transport_client::RaftTransportClient;
use pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use pb::{GroupMessage, GroupReply};

/// Largest message the transport accepts, in bytes (snapshots included).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Time allowed to connect to a peer, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1000;

/// The groups this node hosts, by group id.
#[derive(Clone, Default)]
pub struct Registry {
    rafts: Arc<RwLock<HashMap<u64, Raft>>>,
}

impl Registry {
    pub fn register(&self, group: u64, raft: Raft) {
        if let Ok(mut r) = self.rafts.write() {
            r.insert(group, raft);
        }
    }

    pub fn unregister(&self, group: u64) {
        if let Ok(mut r) = self.rafts.write() {
            r.remove(&group);
        }
    }

    fn get(&self, group: u64) -> Result<Raft, String> {
        let r = self
            .rafts
            .read()
            .map_err(|_| "registry lock poisoned".to_string())?;
        r.get(&group)
            .cloned()
            .ok_or_else(|| format!("group {group} is not hosted here"))
    }
}

fn reply(r: Result<Vec<u8>, String>) -> Result<Response<GroupReply>, Status> {
    let result = match r {
        Ok(b) => ReplyResult::Ok(b),
        Err(e) => ReplyResult::Error(e),
    };
    Ok(Response::new(GroupReply {
        result: Some(result),
    }))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("bad message: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

/// A snapshot on the wire: `[header len u32 LE][JSON (vote, meta)][data]`.
fn encode_snapshot(vote: &Vote, snapshot: &Snapshot) -> Result<Vec<u8>, String> {
    let header = encode(&(vote, &snapshot.meta))?;
    let mut out = Vec::with_capacity(4 + header.len() + snapshot.snapshot.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&snapshot.snapshot);
    Ok(out)
}

fn decode_snapshot(b: &[u8]) -> Result<(Vote, Snapshot), String> {
    let (header, data) = crate::split_len_prefixed(b).ok_or("truncated snapshot header")?;
    let (vote, meta): (Vote, SnapshotMeta) = decode(header)?;
    Ok((
        vote,
        Snapshot {
            meta,
            snapshot: data.to_vec(),
        },
    ))
}

struct Service {
    registry: Registry,
}

#[tonic::async_trait]
impl RaftTransport for Service {
    async fn append_entries(
        &self,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupReply>, Status> {
        let m = req.into_inner();
        let result = async {
            let raft = self.registry.get(m.group)?;
            let rpc: AppendEntriesRequest<TypeConfig> = decode(&m.payload)?;
            let resp = raft.append_entries(rpc).await.map_err(|e| e.to_string())?;
            encode(&resp)
        };
        reply(result.await)
    }

    async fn vote(&self, req: Request<GroupMessage>) -> Result<Response<GroupReply>, Status> {
        let m = req.into_inner();
        let result = async {
            let raft = self.registry.get(m.group)?;
            let rpc: VoteRequest<TypeConfig> = decode(&m.payload)?;
            let resp = raft.vote(rpc).await.map_err(|e| e.to_string())?;
            encode(&resp)
        };
        reply(result.await)
    }

    async fn install_snapshot(
        &self,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupReply>, Status> {
        let m = req.into_inner();
        let result = async {
            let raft = self.registry.get(m.group)?;
            let (vote, snapshot) = decode_snapshot(&m.payload)?;
            let resp = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string())?;
            encode(&resp)
        };
        reply(result.await)
    }
}

/// The Raft transport as a tonic service, for a server that also serves
/// other services on the same listener.
pub fn transport_service(registry: Registry) -> RaftTransportServer<impl RaftTransport> {
    RaftTransportServer::new(Service { registry })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Serves the node's groups on `listener` until `shutdown` resolves.
pub async fn serve(
    registry: Registry,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(transport_service(registry))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

/// One channel per peer address, shared by all groups of the node.
#[derive(Clone, Default)]
pub struct Channels {
    peers: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// The one channel (HTTP/2 connection) to `addr`, shared by every
    /// group's Raft traffic and every data request to that node.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| "channel lock poisoned".to_string())?;
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(std::time::Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect_lazy();
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, Unreachable<TypeConfig>> {
        let channel = self.channel(addr).map_err(Unreachable::from_string)?;
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The network factory of one group on this node.
    pub fn factory(&self, group: u64) -> GrpcNetwork {
        GrpcNetwork {
            channels: self.clone(),
            group,
        }
    }
}

pub struct GrpcNetwork {
    channels: Channels,
    group: u64,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GrpcConnection {
        GrpcConnection {
            channels: self.channels.clone(),
            addr: node.addr.clone(),
            group: self.group,
            target,
        }
    }
}

pub struct GrpcConnection {
    channels: Channels,
    addr: String,
    group: u64,
    target: NodeId,
}

enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl GrpcConnection {
    /// A request encoded as JSON, its reply decoded from JSON.
    async fn json_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Unreachable<TypeConfig>> {
        let payload = encode(req).map_err(unreachable)?;
        let b = self.call(rpc, payload, option.hard_ttl()).await?;
        decode(&b).map_err(unreachable)
    }

    /// Sends one message and returns the reply payload; every failure is
    /// "unreachable" to openraft, which then backs off and retries.
    async fn call(
        &self,
        rpc: Rpc,
        payload: Vec<u8>,
        ttl: std::time::Duration,
    ) -> Result<Vec<u8>, Unreachable<TypeConfig>> {
        let mut client = self.channels.client(&self.addr)?;
        let msg = GroupMessage {
            group: self.group,
            payload,
        };
        let sent = async {
            match rpc {
                Rpc::Append => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::Snapshot => client.install_snapshot(msg).await,
            }
        };
        let resp = tokio::time::timeout(ttl, sent)
            .await
            .map_err(|_| {
                Unreachable::from_string(format!("node {} timed out after {ttl:?}", self.target))
            })?
            .map_err(|s| Unreachable::from_string(format!("node {}: {s}", self.target)))?;
        match resp.into_inner().result {
            Some(ReplyResult::Ok(b)) => Ok(b),
            Some(ReplyResult::Error(e)) => Err(Unreachable::from_string(format!(
                "node {}: {e}",
                self.target
            ))),
            None => Err(Unreachable::from_string("empty reply")),
        }
    }
}

fn unreachable(e: String) -> Unreachable<TypeConfig> {
    Unreachable::from_string(e)
}

impl RaftNetworkV2<TypeConfig> for GrpcConnection {
    type SnapshotData = crate::types::SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.json_call(Rpc::Append, &rpc, &option).await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.json_call(Rpc::Vote, &rpc, &option).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let payload = encode_snapshot(&vote, &snapshot).map_err(unreachable)?;
        let b = self.call(Rpc::Snapshot, payload, option.hard_ttl()).await?;
        Ok(decode(&b).map_err(unreachable)?)
    }
}
