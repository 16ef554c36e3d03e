//! The replicated cluster through the Rust SDK: three storage nodes in three
//! zones, each a control-plane member, and a router. Every acknowledged
//! write must stay readable with a strongly consistent read after losing
//! any one node (a whole zone here, one node per zone), and writes resume
//! once a new leader is elected.

use aws_sdk_dynamodb::Client;
use dynaraft_tests::cluster::TestCluster;
use dynaraft_tests::create_table;
use dynaraft_tests::numbered::{assert_readable, put};
use std::time::{Duration, Instant};

/// Writes keys `range`; returns the acknowledged ones and the longest gap
/// between two acknowledgements.
async fn write_loop(c: &Client, range: std::ops::Range<usize>) -> (Vec<usize>, Duration) {
    let mut acked = Vec::new();
    let mut last = Instant::now();
    let mut gap = Duration::ZERO;
    for i in range {
        if put(c, i).await {
            acked.push(i);
            gap = gap.max(last.elapsed());
            last = Instant::now();
        }
    }
    (acked, gap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_losing_any_zone() {
    let mut c = TestCluster::start("zones", 3, 2).await;
    create_table(&c.client, "orders", None).await;
    let (mut acked, _) = write_loop(&c.client, 0..50).await;
    assert_eq!(acked.len(), 50, "healthy cluster rejected writes");
    for victim in 0..3 {
        c.kill(victim).await;
        let base = 100 * (victim + 1);
        let (more, gap) = write_loop(&c.client, base..base + 50).await;
        assert!(
            more.len() >= 45,
            "writes did not resume after losing {}: {} of 50 acknowledged",
            c.members[victim].az,
            more.len()
        );
        eprintln!(
            "lost {}: {} of 50 writes acknowledged, longest gap {gap:?}",
            c.members[victim].az,
            more.len()
        );
        assert!(gap < Duration::from_secs(8), "writes stalled for {gap:?}");
        acked.extend(more);
        assert_readable(&c.client, &acked).await;
        c.restart(victim).await;
    }
    // The scan sees exactly the acknowledged keys (both partitions).
    let mut seen = 0;
    let mut start = None;
    loop {
        let r = c
            .client
            .scan()
            .table_name("orders")
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .limit(40)
            .send()
            .await
            .expect("scan");
        seen += r.count() as usize;
        start = r.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert_eq!(seen, acked.len());
    c.stop().await;
}

/// Polls `f` every 100 ms until it holds or `secs` pass.
async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Re-replication: node 1 (az-a) stays down past the replace-after time,
/// so its replica moves to node 4, the other az-a node; the group's voters
/// follow. Losing az-b afterwards leaves the partition writable only if node
/// 4 really holds a caught-up replica. Node 1, back, drops its old copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_down_node_move_to_another_node_of_its_zone() {
    let zones: Vec<String> = ["az-a", "az-b", "az-c", "az-a"].map(String::from).into();
    let mut c = TestCluster::start_in("repair", &zones, 2, 2_000).await;
    create_table(&c.client, "orders", None).await;
    let (mut acked, _) = write_loop(&c.client, 0..20).await;
    assert_eq!(acked.len(), 20);
    let table = c
        .node(2)
        .expect("node 3")
        .router
        .table("orders")
        .expect("table");
    let moved = table
        .meta
        .partitions
        .iter()
        .find(|p| p.replicas.contains(&1))
        .expect("a partition on node 1")
        .group;
    c.kill(0).await;
    let observer = c.node(2).expect("node 3").clone();
    eventually(30, "the catalog to move node 1's replica to node 4", || {
        let t = observer.router.table("orders").expect("table");
        let p = t.meta.partitions.iter().find(|p| p.group == moved);
        p.is_some_and(|p| p.replicas == [4, 2, 3] && p.epoch == 2)
    })
    .await;
    eventually(30, "the group's voters to become nodes 2, 3 and 4", || {
        let g = observer.host.group(moved).expect("group on node 3");
        g.voters() == [2, 3, 4].into()
    })
    .await;
    c.kill(1).await;
    let (more, _) = write_loop(&c.client, 100..120).await;
    assert_eq!(
        more.len(),
        20,
        "writes failed with az-b down after the move"
    );
    acked.extend(more);
    assert_readable(&c.client, &acked).await;
    c.restart(1).await;
    c.restart(0).await;
    let returned = c.node(0).expect("node 1").clone();
    eventually(30, "node 1 to drop its moved replica", || {
        !returned.host.hosted().contains(&moved)
    })
    .await;
    c.stop().await;
}
