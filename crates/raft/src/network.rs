//! An in-process network for tests and simulation: every node's Raft
//! handles are registered in a [`Router`], and a message to a node that is
//! down or cut off fails as `Unreachable`. The gRPC transport (one stream per
//! node pair, batched across groups) implements the same factory next.

use crate::types::{NodeId, NodeInfo, Raft, Snapshot, TypeConfig, Vote};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct RouterInner {
    /// (node, group) -> that group's Raft on that node.
    rafts: HashMap<(NodeId, u64), Raft>,
    /// Nodes that neither send nor receive.
    isolated: BTreeSet<NodeId>,
}

/// Shared registry of every node's Raft handles.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<RouterInner>>,
}

impl Router {
    pub fn register(&self, node: NodeId, group: u64, raft: Raft) {
        if let Ok(mut i) = self.inner.lock() {
            i.rafts.insert((node, group), raft);
        }
    }

    pub fn unregister(&self, node: NodeId, group: u64) {
        if let Ok(mut i) = self.inner.lock() {
            i.rafts.remove(&(node, group));
        }
    }

    /// Cuts a node off (or heals it): messages to and from it fail.
    pub fn set_isolated(&self, node: NodeId, isolated: bool) {
        if let Ok(mut i) = self.inner.lock() {
            if isolated {
                i.isolated.insert(node);
            } else {
                i.isolated.remove(&node);
            }
        }
    }

    fn target(
        &self,
        from: NodeId,
        to: NodeId,
        group: u64,
    ) -> Result<Raft, Unreachable<TypeConfig>> {
        let i = self
            .inner
            .lock()
            .map_err(|_| Unreachable::from_string("router lock poisoned"))?;
        if i.isolated.contains(&from) || i.isolated.contains(&to) {
            return Err(Unreachable::from_string(format!(
                "{from} -> {to} is cut off"
            )));
        }
        i.rafts
            .get(&(to, group))
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {to} group {group} is down")))
    }

    /// The network factory one group on one node uses.
    pub fn factory(&self, from: NodeId, group: u64) -> NetworkFactory {
        NetworkFactory {
            router: self.clone(),
            from,
            group,
        }
    }
}

pub struct NetworkFactory {
    router: Router,
    from: NodeId,
    group: u64,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> Connection {
        Connection {
            router: self.router.clone(),
            from: self.from,
            to: target,
            group: self.group,
        }
    }
}

pub struct Connection {
    router: Router,
    from: NodeId,
    to: NodeId,
    group: u64,
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = crate::types::SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.from, self.to, self.group)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.from, self.to, self.group)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.from, self.to, self.group)?;
        raft.pre_vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.target(self.from, self.to, self.group)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e)))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.from, self.to, self.group)?;
        raft.handle_transfer_leader(req)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }
}
