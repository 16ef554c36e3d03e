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
    let mut moving: Option<(u64, u64, Instant)> = None;
    let mut leaders = crate::leaders::Balancer::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(LIVENESS_PROBE_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut stop) => return,
        }
        if !host.group(CATALOG_GROUP).is_some_and(|g| g.is_leader()) {
            leading_since = None;
            seen.clear();
            leaders.reset();
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
        let repairs = plan(&catalog, &down, &up);
        let repairing = !repairs.is_empty();
        for cmd in repairs {
            tracing::info!(command = ?cmd, "re-replicating a replica of a down node");
            if let Err(e) = router.change_catalog(cmd).await {
                tracing::warn!(error = %e, "re-replication not recorded; will retry");
                break;
            }
        }
        // Balancing waits for repairs, and moves one replica at a time: the
        // next only once the last one's new replica has caught up.
        if repairing || !moved_in(&router, &mut moving).await {
            continue;
        }
        // Leaders are spread once every replica is where it belongs.
        let Some(cmd) = plan_balance(&catalog, &up) else {
            leaders.step(&router, &catalog, &up).await;
            continue;
        };
        tracing::info!(command = ?cmd, "moving a replica to balance a zone");
        match router.change_catalog(cmd.clone()).await {
            Ok(_) => {
                if let Command::ReplaceReplica { group, new, .. } = cmd {
                    moving = Some((group, new, Instant::now()));
                }
                metrics::counter!("dynaraft_replica_moves_total").increment(1);
            }
            Err(e) => tracing::warn!(error = %e, "balancing move not recorded; will retry"),
        }
    }
}

/// Longest the balancer waits for a moved replica to catch up before it
/// moves the next one anyway, in milliseconds.
pub const MOVE_CATCH_UP_TIMEOUT_MS: u64 = 60_000;
/// A moved replica has caught up when its applied index is within this
/// many entries of its leader's log.
pub const MOVE_CAUGHT_UP_ENTRIES: u64 = 100;

/// Whether the last balancing move (group, new node, when) is done: the
/// new node hosts the group and has applied close to the leader's log (or
/// the move is older than [`MOVE_CATCH_UP_TIMEOUT_MS`]). Clears it when so.
async fn moved_in(router: &Router, moving: &mut Option<(u64, u64, Instant)>) -> bool {
    let Some((group, node, since)) = *moving else {
        return true;
    };
    if since.elapsed() >= Duration::from_millis(MOVE_CATCH_UP_TIMEOUT_MS) {
        *moving = None;
        return true;
    }
    let Ok(groups) = router.node_status(node).await else {
        return false;
    };
    let caught_up = groups.iter().any(|g| {
        g.group == group
            && g.leader.is_some()
            && g.last_log_index.saturating_sub(g.applied_index) <= MOVE_CAUGHT_UP_ENTRIES
            && g.applied_index > 0
    });
    if caught_up {
        *moving = None;
    }
    caught_up
}

/// One move: a replica off a draining node (`dynaraft admin drain`) to
/// the least-loaded live node of its zone; otherwise one that evens out a
/// zone, from the zone's live node holding the most replicas to its live
/// node holding the fewest, of a partition with no replica on the latter,
/// when they differ by two or more (a node added to a zone fills up this
/// way, one move at a time). Leaders are not
/// chosen here: a moved leader hands its group to the catalog's replicas
/// before it leaves (`reconcile`).
pub fn plan_balance(catalog: &Catalog, up: &BTreeSet<u64>) -> Option<Command> {
    let draining = |id: &u64| catalog.nodes.get(id).is_some_and(|n| n.draining);
    let mut load: BTreeMap<u64, usize> = up
        .iter()
        .filter(|id| !draining(id))
        .map(|id| (*id, 0))
        .collect();
    for (_, p) in catalog.partitions.values() {
        for r in &p.replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    // A draining node's replicas go first, each to the least-loaded live
    // node of its zone that holds none of that partition.
    for (group, (table, p)) in &catalog.partitions {
        let Some(old) = p.replicas.iter().copied().find(|r| draining(r)) else {
            continue;
        };
        let Some(zone) = catalog.nodes.get(&old).map(|n| &n.az) else {
            continue;
        };
        let new = load
            .iter()
            .filter(|(id, _)| {
                catalog.nodes.get(id).is_some_and(|n| &n.az == zone) && !p.replicas.contains(id)
            })
            .min_by_key(|(id, n)| (**n, **id));
        if let Some((&new, _)) = new {
            return Some(Command::ReplaceReplica {
                table: table.clone(),
                group: *group,
                old,
                new,
            });
        }
    }
    let zones: BTreeSet<&str> = catalog.nodes.values().map(|n| n.az.as_str()).collect();
    for zone in zones {
        let in_zone = |id: &u64| catalog.nodes.get(id).is_some_and(|n| n.az == zone);
        let (Some((&most, &high)), Some((&least, &low))) = (
            load.iter()
                .filter(|(id, _)| in_zone(id))
                .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))),
            load.iter()
                .filter(|(id, _)| in_zone(id))
                .min_by_key(|(id, n)| (**n, **id)),
        ) else {
            continue;
        };
        if high < low + 2 {
            continue;
        }
        let candidate = catalog.partitions.iter().find(|(_, (_, p))| {
            p.replicas.contains(&most) && !p.replicas.contains(&least) && p.splitting.is_none()
        });
        if let Some((group, (table, _))) = candidate {
            return Some(Command::ReplaceReplica {
                table: table.clone(),
                group: *group,
                old: most,
                new: least,
            });
        }
    }
    None
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
pub(crate) mod tests {
    use super::*;
    use crate::wire::CatalogDoc;
    use dynaraft_storage::{NodeRecord, PartitionMeta, TableMeta};

    /// A catalog of `nodes` (id, zone) and one table of `partitions`
    /// (group, replicas).
    pub(crate) fn catalog(nodes: &[(u64, &str)], partitions: &[(u64, &[u64])]) -> Catalog {
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
                ..NodeRecord::default()
            })
            .collect();
        Catalog::from_doc(CatalogDoc {
            version: 1,
            tables: vec![table],
            nodes,
            users: Vec::new(),
            jobs: Vec::new(),
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

    /// Balancing moves one replica from a zone's fullest live node to its
    /// emptiest while they differ by two or more; a draining node's
    /// replicas move first, never onto a draining node.
    #[test]
    fn balancing_fills_an_added_node_and_empties_a_draining_one() {
        let parts: &[(u64, &[u64])] = &[(10, &[1, 2, 3]), (11, &[1, 2, 3]), (12, &[1, 2, 3])];
        let c = catalog(&[(1, "a"), (2, "b"), (3, "c"), (4, "a")], parts);
        let all = [1, 2, 3, 4].into();
        assert_eq!(
            moves(plan_balance(&c, &all).into_iter().collect()),
            vec![(10, 1, 4)]
        );
        // Node 4 down: nowhere to go.
        assert!(plan_balance(&c, &[1, 2, 3].into()).is_none());
        // Balanced within one: nothing to do.
        let even = catalog(
            &[(1, "a"), (2, "b"), (3, "c"), (4, "a")],
            &[(10, &[1, 2, 3]), (11, &[4, 2, 3]), (12, &[1, 2, 3])],
        );
        assert!(plan_balance(&even, &all).is_none());
        // Node 1 draining: its replicas go to node 4 even when balanced.
        let mut doc = CatalogDoc::from(&even);
        for n in doc.nodes.iter_mut().filter(|n| n.id == 1) {
            n.draining = true;
        }
        let drained = Catalog::from_doc(doc).unwrap();
        assert_eq!(
            moves(plan_balance(&drained, &all).into_iter().collect()),
            vec![(10, 1, 4)]
        );
    }
}
