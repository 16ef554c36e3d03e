//! A snapshot larger than one chunk crosses the real gRPC transport: a
//! third replica that was never started joins a group whose leader has
//! purged its log, and catches up from a snapshot streamed to it in chunks
//! of `SNAPSHOT_CHUNK_BYTES` (before chunking, a snapshot was one message,
//! and a group over `MAX_MESSAGE_BYTES` could never reach a new follower).

use dynaraft_raft::grpc::{Channels, Registry, SNAPSHOT_CHUNK_BYTES, serve};
use dynaraft_raft::{NodeInfo, RaftGroup};
use dynaraft_storage::command::Command;
use dynaraft_storage::machine;
use serde_json::json;

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// Items written, and the bytes of each one's payload: together several
/// chunks' worth.
const ITEMS: usize = 250;
const PAYLOAD_BYTES: usize = 40_000;

/// A put of key `k{i}` carrying `PAYLOAD_BYTES` of text.
fn big_put(i: usize) -> Command {
    let v = format!("{i:08}").repeat(PAYLOAD_BYTES / 8);
    put_attr(i, "v", json!({"S": v}))
}

struct Node {
    db: dynaraft_storage::kv::Store,
    group: RaftGroup,
}

/// Serves a node's group on `listener` over gRPC.
async fn start(id: u64, listener: tokio::net::TcpListener, base: &std::path::Path) -> Node {
    let channels = Channels::default();
    let registry = Registry::default();
    let (db, group) = open_group(id, &base.join(format!("n{id}")), channels.factory(GROUP)).await;
    registry.register(GROUP, group.raft.clone());
    tokio::spawn(serve(registry, listener, std::future::pending()));
    Node { db, group }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_catches_up_from_a_chunked_snapshot_over_grpc() {
    let base = tmp("grpc-snapshot");
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    // The third replica's port, free again until it starts: meanwhile its
    // peers are refused and go on as a majority of two.
    let (l3, a3) = listener().await;
    drop(l3);
    let n1 = start(1, l1, &base).await;
    let n2 = start(2, l2, &base).await;
    let members: BTreeMap<u64, NodeInfo> = [(1, &a1), (2, &a2), (3, &a3)]
        .into_iter()
        .map(|(id, addr)| {
            let az = format!("az-{id}");
            let info = NodeInfo {
                addr: addr.clone(),
                az,
            };
            (id, info)
        })
        .collect();
    n1.group.raft.initialize(members).await.unwrap();
    let two = [&n1, &n2];
    for i in 0..ITEMS {
        let mut done = false;
        for _ in 0..100 {
            let Some(leader) = n1.group.raft.current_leader().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Some(n) = two.get(leader as usize - 1) else {
                panic!("leader {leader} is not a started node");
            };
            if n.group.propose(i as u64, big_put(i)).await.is_ok() {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done, "write {i} was not accepted");
    }
    wait_until("the leader to purge its log", async || {
        two.iter()
            .any(|n| n.group.log_progress().1.is_some_and(|p| p > 50))
    })
    .await;
    let (_, bytes) = machine::group_stats(&n1.db, GROUP).unwrap();
    assert!(
        bytes > 2 * SNAPSHOT_CHUNK_BYTES as u64,
        "{bytes} bytes of items: the snapshot must take several chunks"
    );

    let l3 = tokio::net::TcpListener::bind(&a3).await.unwrap();
    let n3 = start(3, l3, &base).await;
    wait_until("the new replica to install a snapshot", async || {
        n3.group.log_progress().0.is_some()
            && machine::group_stats(&n3.db, GROUP).unwrap().0 >= ITEMS as u64
    })
    .await;
    let (count, copied) = machine::group_stats(&n3.db, GROUP).unwrap();
    assert_eq!((count, copied), (ITEMS as u64, bytes));
    for n in [n1, n2, n3] {
        n.group.raft.shutdown().await.unwrap();
        abandon(n.db);
    }
    let _ = std::fs::remove_dir_all(&base);
}
