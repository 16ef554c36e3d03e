//! Liveness and re-replication, run by the control plane's leader.
//!
//! Every control member runs [`run`]; only the one whose control-group
//! replica leads does anything. It probes every registered node each
//! [`LIVENESS_PROBE_MS`] (a `Ping` on the data RPC) and keeps, in memory,
//! when each last answered. A node silent for longer than the configured
//! `replace_after` is down: [`plan`] moves each of its replicas to the
//! least-loaded live node of the same availability zone that holds no
//! replica of that partition, when one exists, and the leader proposes the
//! moves as `ReplaceReplica` catalog commands (which bump the partition's
//! epoch). The groups' leaders then change their Raft voters to match
//! (`reconcile`), and the returning node, no longer assigned, drops its copy.
//!
//! Liveness is not replicated: a new leader knows nothing and gives every
//! node the full `replace_after` from its own start, so a failover never
//! triggers moves on stale information.
//!
//! Caveats: the control group's own replicas are fixed (the control members
//! given on the command line) and are never moved; a zone with no spare node
//! keeps its replica on the down node until it returns.

use crate::catalog::Catalog;
use crate::host::Host;
use crate::router::Router;
use dynaraft_storage::Command;
use dynaraft_storage::machine::CATALOG_GROUP;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Pause between liveness probes of every node, in milliseconds.
pub const LIVENESS_PROBE_MS: u64 = 1_000;
/// Longest a probe waits for its answer, in milliseconds.
pub const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Default time a node may stay silent before its replicas are re-created
/// elsewhere in its zone, in milliseconds.
pub const DEFAULT_REPLACE_AFTER_MS: u64 = 300_000;

/// Probes and repairs while this node leads the control plane, until the
/// node shuts down.
pub async fn run(
    host: Host,
    router: Router,
    replace_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: HashMap<u64, Instant> = HashMap::new();
    let mut leading_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(LIVENESS_PROBE_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut stop) => return,
        }
        if !host.group(CATALOG_GROUP).is_some_and(|g| g.is_leader()) {
            leading_since = None;
            seen.clear();
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let catalog = router.catalog().get();
        let now = Instant::now();
        let probes = catalog.nodes.keys().map(|id| {
            let router = router.clone();
            async move {
                let limit = Duration::from_millis(PROBE_TIMEOUT_MS);
                let ok = tokio::time::timeout(limit, router.ping(*id)).await;
                (*id, matches!(ok, Ok(Ok(()))))
            }
        });
        let mut up = BTreeSet::new();
        for (id, ok) in futures_util::future::join_all(probes).await {
            if ok {
                seen.insert(id, now);
                up.insert(id);
            }
        }
        let down: BTreeSet<u64> = catalog
            .nodes
            .keys()
            .filter(|id| {
                now.duration_since(seen.get(*id).copied().unwrap_or(since)) >= replace_after
            })
            .copied()
            .collect();
        for cmd in plan(&catalog, &down, &up) {
            tracing::info!(command = ?cmd, "re-replicating a replica of a down node");
            if let Err(e) = router.change_catalog(cmd).await {
                tracing::warn!(error = %e, "re-replication not recorded; will retry");
                break;
            }
        }
    }
}

/// The replica moves that take every replica off the `down` nodes onto
/// `up` nodes of the same zone: for each, the candidate holding the fewest
/// replicas (ties to the lowest id) that holds none of that partition.
pub fn plan(catalog: &Catalog, down: &BTreeSet<u64>, up: &BTreeSet<u64>) -> Vec<Command> {
    let mut load: BTreeMap<u64, usize> = catalog.nodes.keys().map(|id| (*id, 0)).collect();
    for (_, p) in catalog.partitions.values() {
        for r in &p.replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    let mut moves = Vec::new();
    for (group, (table, p)) in &catalog.partitions {
        for old in p.replicas.iter().filter(|r| down.contains(r)) {
            let Some(zone) = catalog.nodes.get(old).map(|n| &n.az) else {
                continue;
            };
            let best = catalog
                .nodes
                .values()
                .filter(|n| &n.az == zone && up.contains(&n.id) && !p.replicas.contains(&n.id))
                .min_by_key(|n| (load.get(&n.id).copied().unwrap_or(0), n.id));
            if let Some(new) = best {
                *load.entry(new.id).or_default() += 1;
                moves.push(Command::ReplaceReplica {
                    table: table.clone(),
                    group: *group,
                    old: *old,
                    new: new.id,
                });
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CatalogDoc;
    use dynaraft_storage::{NodeRecord, PartitionMeta, TableMeta};

    fn catalog(nodes: &[(u64, &str)], partitions: &[(u64, &[u64])]) -> Catalog {
        let partitions = partitions
            .iter()
            .map(|(group, replicas)| PartitionMeta {
                group: *group,
                hash_lo: *group,
                replicas: replicas.to_vec(),
                epoch: 1,
                ..PartitionMeta::default()
            })
            .collect();
        let table = TableMeta {
            name: "t".into(),
            partitions,
            hash_key: ("p".into(), "S".into()),
            ..TableMeta::default()
        };
        let nodes = nodes
            .iter()
            .map(|(id, az)| NodeRecord {
                id: *id,
                addr: format!("n{id}"),
                az: az.to_string(),
            })
            .collect();
        Catalog::from_doc(CatalogDoc {
            version: 1,
            tables: vec![table],
            nodes,
        })
        .unwrap()
    }

    fn moves(cmds: Vec<Command>) -> Vec<(u64, u64, u64)> {
        cmds.into_iter()
            .map(|c| match c {
                Command::ReplaceReplica {
                    group, old, new, ..
                } => (group, old, new),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    /// Node 1 (az-a) is down: its replicas go to az-a nodes that are up,
    /// least loaded first (node 4 holds none and node 5 one, so node 4 gets
    /// the first; then they tie and the lower id wins). Node 6 is down too,
    /// and nodes of other zones are never chosen.
    #[test]
    fn a_down_nodes_replicas_move_to_the_least_loaded_live_node_of_its_zone() {
        let c = catalog(
            &[(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "a"), (6, "a")],
            &[(10, &[1, 2, 3]), (11, &[1, 2, 3]), (12, &[5, 2, 3])],
        );
        let up = [2, 3, 4, 5].into();
        let got = moves(plan(&c, &[1].into(), &up));
        assert_eq!(got, vec![(10, 1, 4), (11, 1, 4)]);
        let up = [2, 3, 5].into();
        assert_eq!(
            moves(plan(&c, &[1].into(), &up)),
            vec![(10, 1, 5), (11, 1, 5)]
        );
    }

    #[test]
    fn a_zone_without_a_spare_live_node_keeps_its_replica() {
        let c = catalog(
            &[(1, "a"), (2, "b"), (3, "c"), (4, "b")],
            &[(10, &[1, 2, 3])],
        );
        assert!(plan(&c, &[1].into(), &[2, 3, 4].into()).is_empty());
    }
}
