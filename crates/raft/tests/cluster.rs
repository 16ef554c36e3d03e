//! Raft groups over the real storage state machine, on an in-process
//! network: a one-node group, and a three-node group that loses its leader,
//! elects another, heals, and restarts a follower from its own WAL, vote
//! file and sled directory. Every acknowledged write must be on every node.

use dynaraft_model::value::item_from_json;
use dynaraft_raft::network::Router;
use dynaraft_raft::{NodeInfo, RaftGroup, Timing};
use dynaraft_storage::Outcome;
use dynaraft_storage::command::Command;
use dynaraft_storage::machine;
use serde_json::json;

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

struct Node {
    id: u64,
    dir: PathBuf,
    db: dynaraft_storage::kv::Store,
    group: RaftGroup,
}

async fn start_node(id: u64, dir: PathBuf, router: &Router) -> Node {
    start_node_with(id, dir, router, &timing()).await
}

async fn start_node_with(id: u64, dir: PathBuf, router: &Router, timing: &Timing) -> Node {
    let (db, group) = open_group_with(id, &dir, router.factory(id, GROUP), timing).await;
    router.register(id, GROUP, group.raft.clone());
    Node { id, dir, db, group }
}

fn count(n: &Node) -> u64 {
    machine::group_stats(&n.db, GROUP).unwrap().0
}

async fn leader_among(nodes: &[&Node]) -> u64 {
    let mut found = 0;
    wait_until("a leader", async || {
        for n in nodes {
            if let Some(l) = n.group.raft.current_leader().await
                && nodes.iter().any(|m| m.id == l)
            {
                found = l;
                return true;
            }
        }
        false
    })
    .await;
    found
}

/// Proposes like a router: find the leader, retry elsewhere on NotLeader
/// (nothing was appended, so a retry cannot apply twice).
async fn propose(nodes: &[&Node], ts: u64, cmd: Command) -> Outcome {
    for _ in 0..100 {
        let leader = leader_among(nodes).await;
        let n = nodes.iter().find(|n| n.id == leader).unwrap();
        match n.group.propose(ts, cmd.clone()).await {
            Ok((o, _)) => return o,
            Err(dynaraft_raft::ProposeError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("proposal failed: {e}"),
        }
    }
    panic!("no leader accepted the proposal");
}

/// Makes node `n` its group's only voter and waits for it to lead.
async fn initialize_alone(n: &Node) {
    let members = BTreeMap::from([(
        n.id,
        NodeInfo {
            addr: format!("n{}", n.id),
            az: "az-a".into(),
        },
    )]);
    n.group.raft.initialize(members).await.unwrap();
    leader_among(&[n]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_group_applies_through_raft() {
    let router = Router::default();
    let base = tmp("single");
    let n = start_node(1, base.join("n1"), &router).await;
    initialize_alone(&n).await;
    for i in 0..20 {
        let (o, _) = n.group.propose(1_000 + i as u64, put(i)).await.unwrap();
        assert!(matches!(o, Outcome::Written { old: None, .. }), "{o:?}");
    }
    assert_eq!(count(&n), 20);
    n.group.raft.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

/// The only voter of a group, restarted with its whole log but a state
/// machine that applied only the log's first entries (as after kill -9:
/// the store holds what it made durable, the WAL the rest), answers a
/// linearizable read only once the acknowledged writes are applied again.
/// A consistent read right after the restart used to miss them
/// (tests/scripts/split_crash.py, 8 runs in 45 with three at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_voter_reads_only_after_replaying_its_log() {
    // Enough writes that their replay takes a while, and no snapshot: the
    // log keeps every write when the state machine goes back.
    const WRITES: usize = 2_000;
    let timing = Timing {
        snapshot_after_entries: 1_000_000,
        ..timing()
    };
    let router = Router::default();
    let base = tmp("sole-replay");
    let dir = base.join("n1");
    let n = start_node_with(1, dir.clone(), &router, &timing).await;
    initialize_alone(&n).await;
    // The membership is applied and durable; keep that state machine.
    n.group.linearize().await.unwrap();
    n.db.flush_durably().unwrap();
    let stores = store_dirs(&dir);
    let kept = base.join("kept");
    for d in &stores {
        copy_dir(d, &kept.join(d.file_name().unwrap()));
    }
    let writes = (0..WRITES).map(|i| n.group.propose(i as u64, put(i)));
    for w in futures_util::future::join_all(writes).await {
        w.unwrap();
    }
    assert_eq!(count(&n), WRITES as u64);
    n.group.raft.shutdown().await.unwrap();
    router.unregister(1, GROUP);
    abandon(n.db);
    drop(n.group);
    for d in &stores {
        std::fs::remove_dir_all(d).unwrap();
        copy_dir(&kept.join(d.file_name().unwrap()), d);
    }

    let n = start_node_with(1, dir, &router, &timing).await;
    // Read as soon as the group knows it is the only voter, as a router
    // may, not a poll period later.
    n.group
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.membership_config.membership().voter_ids().eq([1]),
            "the membership loaded",
        )
        .await
        .unwrap();
    assert!(
        n.group.sole_voter_catching_up(),
        "eventually consistent reads would not wait for the replay"
    );
    wait_until("a linearizable read", async || {
        n.group.linearize().await.is_ok()
    })
    .await;
    assert_eq!(
        count(&n),
        WRITES as u64,
        "a linearizable read before the log was applied again"
    );
    assert!(!n.group.sole_voter_catching_up());
    n.group.raft.shutdown().await.unwrap();
    abandon(n.db);
    let _ = std::fs::remove_dir_all(&base);
}

/// The state machine's directories under a node's `dir` (all but the WAL).
fn store_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "wal"))
        .collect()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Three nodes (one per AZ) under `base`, initialised as one group.
async fn start_three(router: &Router, base: &std::path::Path) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        nodes.push(start_node(id, base.join(format!("n{id}")), router).await);
    }
    let members: BTreeMap<u64, NodeInfo> = (1..=3u64)
        .map(|id| {
            let az = format!("az-{}", (b'a' + id as u8 - 1) as char);
            (
                id,
                NodeInfo {
                    addr: format!("n{id}"),
                    az,
                },
            )
        })
        .collect();
    nodes[0].group.raft.initialize(members).await.unwrap();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_leader_loss_and_restart() {
    let router = Router::default();
    let base = tmp("three");
    let mut nodes = start_three(&router, &base).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all).await;
    let at = |id: u64| nodes.iter().find(|n| n.id == id).unwrap();
    for i in 0..30 {
        propose(&all, i as u64, put(i)).await;
    }
    wait_until("all nodes to apply 30 writes", async || {
        nodes.iter().all(|n| count(n) == 30)
    })
    .await;

    // Cut the leader off: the other two elect a new one and keep accepting.
    router.set_isolated(leader, true);
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != leader).collect();
    let mut new_leader = leader;
    wait_until("a new leader", async || {
        new_leader = leader_among(&rest).await;
        new_leader != leader
    })
    .await;
    assert_ne!(new_leader, leader);
    for i in 30..60 {
        propose(&rest, i as u64, put(i)).await;
    }
    // The isolated old leader cannot commit anything on its own.
    let stale = tokio::time::timeout(
        Duration::from_millis(800),
        at(leader).group.propose(99, put(999)),
    )
    .await;
    assert!(
        !matches!(stale, Ok(Ok(_))),
        "an isolated leader acknowledged a write: {stale:?}"
    );
    router.set_isolated(leader, false);
    wait_until("all nodes to apply 60 writes", async || {
        nodes.iter().all(|n| count(n) >= 60)
    })
    .await;

    // Restart a follower from disk while writes continue.
    let follower = nodes.iter().position(|n| n.id != new_leader).unwrap();
    let victim = nodes.remove(follower);
    let (vid, vdir) = (victim.id, victim.dir.clone());
    victim.group.raft.shutdown().await.unwrap();
    router.unregister(vid, GROUP);
    drop(victim);
    let live: Vec<&Node> = nodes.iter().collect();
    for i in 60..80 {
        propose(&live, i as u64, put(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    nodes.push(start_node(vid, vdir, &router).await);
    wait_until("the restarted follower to catch up", async || {
        nodes.iter().all(|n| count(n) >= 80)
    })
    .await;

    // Every node holds exactly the acknowledged keys (the isolated leader's
    // unacknowledged k999 may or may not have been committed later).
    for n in &nodes {
        let tree = n.db.clone();
        let keys: BTreeSet<usize> = (0..80)
            .filter(|i| {
                let k = item_from_json(&json!({"pk": {"S": format!("k{i}")}})).unwrap();
                machine::read_item(
                    &tree,
                    dynaraft_storage::Span::whole(GROUP),
                    &schema().storage_key(&k).unwrap(),
                )
                .unwrap()
                .is_some()
            })
            .collect();
        assert_eq!(
            keys.len(),
            80,
            "node {} is missing acknowledged writes",
            n.id
        );
    }
    for n in &nodes {
        n.group.raft.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// A follower cut off while the leader purges its log catches up by
/// installing a snapshot (the data materialised from sled at send time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_snapshot() {
    let router = Router::default();
    let base = tmp("snapshot");
    let nodes = start_three(&router, &base).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all).await;
    let lagger = nodes.iter().find(|n| n.id != leader).unwrap().id;
    router.set_isolated(lagger, true);
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != lagger).collect();
    for i in 0..120 {
        propose(&rest, i as u64, put(i)).await;
    }
    wait_until("the leader to purge its log", async || {
        rest.iter()
            .any(|n| n.group.log_progress().1.is_some_and(|p| p > 50))
    })
    .await;
    router.set_isolated(lagger, false);
    let lag = nodes.iter().find(|n| n.id == lagger).unwrap();
    wait_until("the lagging follower to install a snapshot", async || {
        lag.group.log_progress().0.is_some() && count(lag) >= 120
    })
    .await;
    for n in &nodes {
        n.group.raft.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&base);
}
