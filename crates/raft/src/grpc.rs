//! The gRPC transport between storage nodes (`proto/raft.proto`).
//!
//! Server: [`serve`] exposes every group a node hosts (a [`Registry`]) on one
//! listener. Client: [`GrpcNetwork`] keeps one tonic channel per peer
//! address, shared by every group, so all Raft traffic between two nodes
//! travels on one HTTP/2 connection, and appends and votes of all groups to
//! a peer go out together in `Batch` calls ([`crate::batch`]); snapshots use
//! their own streaming RPC, in chunks of [`SNAPSHOT_CHUNK_BYTES`], so no
//! message limit caps a group's size. Payloads are openraft messages as
//! JSON; snapshot data travels raw behind a JSON header.

use crate::types::{NodeId, NodeInfo, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

#[allow(clippy::all)]
pub(crate) mod pb {
    tonic::include_proto!("dynaraft.raft.v1");
}

use crate::batch::Batcher;
use pb::group_reply::Result as ReplyResult;
use pb::raft_transport_client::RaftTransportClient;
use pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use pb::{BatchReply, BatchRequest, GroupMessage, GroupReply, MessageKind, SnapshotChunk};
use std::time::{Duration, Instant};

/// Largest message the transport accepts, in bytes (a snapshot sent whole
/// by a peer of an earlier release included).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Bytes of snapshot per chunk of `InstallSnapshotChunks`.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Largest snapshot a node accepts, in bytes: a snapshot is assembled in
/// memory before it is installed, as the sender holds it in memory too.
pub const MAX_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// Time allowed to connect to a peer, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 1000;
/// Interval between HTTP/2 pings on every peer connection, in milliseconds.
pub const KEEPALIVE_INTERVAL_MS: u64 = 1000;
/// How long a ping may go unanswered before the connection is dropped, in
/// milliseconds.
pub const KEEPALIVE_TIMEOUT_MS: u64 = 1000;

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
    Ok(Response::new(to_reply(r)))
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

/// Rejects a snapshot whose data fails its checksum before it reaches Raft:
/// the sender sees an error and retries; nothing is applied.
fn decode_snapshot(b: &[u8]) -> Result<(Vote, Snapshot), String> {
    let (header, data) = crate::split_len_prefixed(b).ok_or("truncated snapshot header")?;
    crate::state_machine::verify_snapshot(data)?;
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

impl Service {
    /// Handles one append or vote of a batch.
    async fn handle(&self, m: GroupMessage) -> Result<Vec<u8>, String> {
        let raft = self.registry.get(m.group)?;
        match MessageKind::try_from(m.kind) {
            Ok(MessageKind::AppendEntries) => {
                let rpc: AppendEntriesRequest<TypeConfig> = decode(&m.payload)?;
                encode(&raft.append_entries(rpc).await.map_err(|e| e.to_string())?)
            }
            Ok(MessageKind::Vote) => {
                let rpc: VoteRequest<TypeConfig> = decode(&m.payload)?;
                encode(&raft.vote(rpc).await.map_err(|e| e.to_string())?)
            }
            Ok(MessageKind::PreVote) => {
                let rpc: VoteRequest<TypeConfig> = decode(&m.payload)?;
                encode(&raft.pre_vote(rpc).await.map_err(|e| e.to_string())?)
            }
            Ok(MessageKind::TransferLeader) => {
                let rpc: TransferLeaderRequest<TypeConfig> = decode(&m.payload)?;
                let r = raft.handle_transfer_leader(rpc).await;
                encode(&r.map_err(|e| e.to_string())?)
            }
            _ => Err(format!("unknown message kind {}", m.kind)),
        }
    }
}

fn to_reply(r: Result<Vec<u8>, String>) -> GroupReply {
    let result = match r {
        Ok(b) => ReplyResult::Ok(b),
        Err(e) => ReplyResult::Error(e),
    };
    GroupReply {
        result: Some(result),
    }
}

#[tonic::async_trait]
impl RaftTransport for Service {
    /// Every message of the batch is handled concurrently (they belong to
    /// different groups, or are independent requests of one group).
    async fn batch(&self, req: Request<BatchRequest>) -> Result<Response<BatchReply>, Status> {
        let messages = req.into_inner().messages;
        let handled = messages.into_iter().map(|m| self.handle(m));
        let replies = futures_util::future::join_all(handled)
            .await
            .into_iter()
            .map(to_reply)
            .collect();
        Ok(Response::new(BatchReply { replies }))
    }

    async fn install_snapshot(
        &self,
        req: Request<GroupMessage>,
    ) -> Result<Response<GroupReply>, Status> {
        let m = req.into_inner();
        reply(self.install(m.group, &m.payload).await)
    }

    async fn install_snapshot_chunks(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<GroupReply>, Status> {
        let mut chunks = req.into_inner();
        let mut group = None;
        let mut data: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            group.get_or_insert(chunk.group);
            let total = (data.len() + chunk.data.len()) as u64;
            if total > MAX_SNAPSHOT_BYTES {
                return reply(Err(format!(
                    "snapshot over {MAX_SNAPSHOT_BYTES} bytes refused"
                )));
            }
            if data.is_empty() {
                data = chunk.data;
            } else {
                data.extend_from_slice(&chunk.data);
            }
        }
        let Some(group) = group else {
            return reply(Err("empty snapshot stream".into()));
        };
        reply(self.install(group, &data).await)
    }
}

impl Service {
    /// Installs an encoded snapshot into `group`; the reply payload.
    async fn install(&self, group: u64, encoded: &[u8]) -> Result<Vec<u8>, String> {
        let raft = self.registry.get(group)?;
        let (vote, snapshot) = decode_snapshot(encoded)?;
        let resp = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| e.to_string())?;
        encode(&resp)
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
            // Accepted sockets default to Nagle's algorithm, which holds a
            // small reply behind an unacknowledged one until the peer's
            // delayed ACK (~40 ms): replies must go out at once.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// One connection to a peer: its channel and the batcher of its Raft
/// messages (started on first use).
struct Peer {
    channel: Channel,
    batcher: Option<Batcher>,
}

/// One channel per peer address, shared by all groups of the node.
#[derive(Clone, Default)]
pub struct Channels {
    peers: Arc<Mutex<HashMap<String, Peer>>>,
    /// Peer address -> the address actually dialled for it (a proxy or a
    /// NAT in front of the peer). The peer keeps its own address as its
    /// identity; only the TCP connection goes elsewhere.
    routes: Arc<HashMap<String, String>>,
    /// Mutual TLS to every peer, when the cluster uses it.
    tls: Option<Arc<crate::tls::PeerTls>>,
}

fn transport_client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Channels {
    /// Channels that reach the peers named in `routes` through the address
    /// each maps to (used by the fault-injecting proxy of `dynaraft-chaos`).
    pub fn with_routes(routes: HashMap<String, String>) -> Channels {
        Channels {
            peers: Arc::default(),
            routes: Arc::new(routes),
            tls: None,
        }
    }

    /// These channels, each over mutual TLS with `tls` (when given).
    pub fn with_tls(self, tls: Option<Arc<crate::tls::PeerTls>>) -> Channels {
        Channels { tls, ..self }
    }

    /// The mutual TLS the channels use, if any (a node serves with it too).
    pub fn tls(&self) -> Option<&Arc<crate::tls::PeerTls>> {
        self.tls.as_ref()
    }

    fn with_peer<T>(&self, addr: &str, f: impl FnOnce(&mut Peer) -> T) -> Result<T, String> {
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| "channel lock poisoned".to_string())?;
        if let Some(p) = peers.get_mut(addr) {
            return Ok(f(p));
        }
        let dial = self.routes.get(addr).map_or(addr, String::as_str);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{dial}")).map_err(|e| e.to_string())?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client())
                .map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            // A peer that stops answering (paused, or cut off without a
            // reset) is noticed by its missed pings, and the calls waiting
            // on the connection fail instead of waiting out their timeouts.
            .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
            .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let peer = peers.entry(addr.to_string()).or_insert(Peer {
            channel,
            batcher: None,
        });
        Ok(f(peer))
    }

    /// The one channel (HTTP/2 connection) to `addr`, shared by every
    /// group's Raft traffic and every data request to that node.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        self.with_peer(addr, |p| p.channel.clone())
    }

    /// The batcher of Raft messages to `addr`; must be called on a tokio
    /// runtime (it may start the peer's sending task).
    fn batcher(&self, addr: &str) -> Result<Batcher, String> {
        self.with_peer(addr, |p| {
            p.batcher
                .get_or_insert_with(|| Batcher::start(transport_client(p.channel.clone())))
                .clone()
        })
    }

    /// (batches, messages) of Raft traffic sent to all peers so far.
    pub fn batch_stats(&self) -> (u64, u64) {
        let Ok(peers) = self.peers.lock() else {
            return (0, 0);
        };
        peers
            .values()
            .filter_map(|p| p.batcher.as_ref())
            .map(Batcher::sent)
            .fold((0, 0), |(b, m), (b2, m2)| (b + b2, m + m2))
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

impl GrpcConnection {
    fn unreachable(&self, e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!("node {}: {e}", self.target))
    }

    /// Sends an append or a vote in the peer's next batch; its reply decoded
    /// from JSON. Every failure is "unreachable" to openraft, which then
    /// backs off and retries.
    async fn batched<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: MessageKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Unreachable<TypeConfig>> {
        let msg = GroupMessage {
            group: self.group,
            payload: encode(req).map_err(unreachable)?,
            kind: kind.into(),
        };
        let batcher = self.channels.batcher(&self.addr).map_err(unreachable)?;
        let deadline = Instant::now() + option.hard_ttl();
        let b = batcher
            .call(msg, deadline)
            .await
            .map_err(|e| self.unreachable(e))?;
        decode(&b).map_err(unreachable)
    }

    /// Sends an encoded snapshot on its own RPC, in chunks of
    /// [`SNAPSHOT_CHUNK_BYTES`], and returns the reply payload.
    async fn snapshot(
        &self,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, Unreachable<TypeConfig>> {
        let channel = self.channels.channel(&self.addr).map_err(unreachable)?;
        let group = self.group;
        // Chunks are cut as the stream is polled: one chunk's copy at a time.
        let chunks = futures_util::stream::unfold(0usize, move |at| {
            let piece = payload.get(at..).filter(|rest| !rest.is_empty() || at == 0);
            let chunk = piece.map(|rest| {
                let n = rest.len().min(SNAPSHOT_CHUNK_BYTES);
                let data = rest.get(..n).unwrap_or_default().to_vec();
                (SnapshotChunk { group, data }, at + n.max(1))
            });
            std::future::ready(chunk)
        });
        let mut client = transport_client(channel);
        let sent = client.install_snapshot_chunks(chunks);
        let resp = tokio::time::timeout(ttl, sent)
            .await
            .map_err(|_| self.unreachable(format!("timed out after {ttl:?}")))?
            .map_err(|s| self.unreachable(s))?;
        match resp.into_inner().result {
            Some(ReplyResult::Ok(b)) => Ok(b),
            Some(ReplyResult::Error(e)) => Err(self.unreachable(e)),
            None => Err(self.unreachable("empty reply")),
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
        Ok(self
            .batched(MessageKind::AppendEntries, &rpc, &option)
            .await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.batched(MessageKind::Vote, &rpc, &option).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.batched(MessageKind::PreVote, &rpc, &option).await?)
    }

    /// Tells a replica that the leader hands it the group: it campaigns as
    /// soon as it holds the leader's log (and the others stop honouring the
    /// old leader's lease), instead of waiting out an election timeout.
    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self
            .batched(MessageKind::TransferLeader, &rpc, &option)
            .await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let payload = encode_snapshot(&vote, &snapshot).map_err(unreachable)?;
        let b = self.snapshot(payload, option.hard_ttl()).await?;
        Ok(decode(&b).map_err(unreachable)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of several groups queued together go out as one batch, and
    /// each sender gets the reply to its own message (here: the receiving
    /// node hosts none of the groups, and says which one it lacks).
    #[tokio::test(flavor = "current_thread")]
    async fn messages_to_one_peer_share_a_batch_and_get_their_own_replies() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(Registry::default(), listener, std::future::pending()));
        let channels = Channels::default();
        let batcher = channels.batcher(&addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let calls = (1..=10u64).map(|group| {
            let msg = GroupMessage {
                group,
                payload: Vec::new(),
                kind: MessageKind::Vote.into(),
            };
            batcher.call(msg, deadline)
        });
        let replies = futures_util::future::join_all(calls).await;
        for (group, r) in (1..=10u64).zip(replies) {
            assert_eq!(r, Err(format!("group {group} is not hosted here")));
        }
        assert_eq!(channels.batch_stats(), (1, 10));
    }
}
