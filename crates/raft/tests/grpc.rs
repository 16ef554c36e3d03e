//! Three nodes talking real gRPC on 127.0.0.1 (port 0), one Raft group:
//! writes replicate to every node; stopping the leader's node (server and
//! Raft) leads to a new leader that keeps accepting writes.

use dynaraft_raft::grpc::{self, Channels, Registry};
use dynaraft_raft::{NodeInfo, ProposeError, RaftGroup};
use dynaraft_storage::machine;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod common;
use common::*;

struct GrpcNode {
    id: u64,
    db: dynaraft_storage::kv::Store,
    group: RaftGroup,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: u64, dir: PathBuf, listener: tokio::net::TcpListener) -> GrpcNode {
    let channels = Channels::default();
    let (db, group) = open_group(id, &dir, channels.factory(GROUP)).await;
    let registry = Registry::default();
    registry.register(GROUP, group.raft.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = grpc::serve(registry, listener, async {
            let _ = stopped.await;
        })
        .await;
    });
    GrpcNode {
        id,
        db,
        group,
        stop: Some(stop),
        server,
    }
}

fn count(n: &GrpcNode) -> u64 {
    machine::group_stats(&n.db, GROUP).unwrap().0
}

async fn propose(nodes: &[&GrpcNode], i: usize) {
    for _ in 0..200 {
        for n in nodes {
            match n.group.propose(i as u64, put(i)).await {
                Ok(_) => return,
                Err(ProposeError::NotLeader { .. }) => continue,
                Err(e) => panic!("proposal failed: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node accepted write {i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_over_grpc() {
    let base = tmp("grpc");
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(
            id,
            NodeInfo {
                addr: l.local_addr().unwrap().to_string(),
                az: format!("az-{id}"),
            },
        );
        listeners.push(l);
    }
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        nodes.push(start(id, base.join(format!("n{id}")), l).await);
    }
    nodes[0].group.raft.initialize(members).await.unwrap();
    let all: Vec<&GrpcNode> = nodes.iter().collect();
    for i in 0..40 {
        propose(&all, i).await;
    }
    wait_until("every node to apply 40 writes over gRPC", async || {
        nodes.iter().all(|n| count(n) == 40)
    })
    .await;

    // Stop the leader's node entirely: the others elect a leader and go on.
    let mut leader = None;
    wait_until("a leader", async || {
        leader = nodes[0].group.raft.current_leader().await;
        leader.is_some()
    })
    .await;
    let leader = leader.unwrap();
    let pos = nodes.iter().position(|n| n.id == leader).unwrap();
    let mut old = nodes.remove(pos);
    old.group.raft.shutdown().await.unwrap();
    if let Some(stop) = old.stop.take() {
        let _ = stop.send(());
    }
    let _ = (&mut old.server).await;
    let rest: Vec<&GrpcNode> = nodes.iter().collect();
    for i in 40..60 {
        propose(&rest, i).await;
    }
    wait_until("the two survivors to apply 60 writes", async || {
        nodes.iter().all(|n| count(n) == 60)
    })
    .await;
    for n in &mut nodes {
        n.group.raft.shutdown().await.unwrap();
        if let Some(stop) = n.stop.take() {
            let _ = stop.send(());
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
