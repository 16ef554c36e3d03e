//! Spreading partition leaders over the nodes, run by the control plane's
//! leader (issue 21).
//!
//! A partition's leader serves its writes and strongly consistent reads,
//! so a node leading most partitions does most of the work while its
//! peers idle. Leaders gather: a split child is first led by its parent's
//! leader, and a restarted node leads nothing until elections happen to
//! pick it. Each round of the repair loop (`crate::repair::run`), once no
//! replica is moving, [`Balancer::step`] asks every live node which groups
//! it leads and, when one node leads at least [`LEADER_IMBALANCE`] more
//! than another node holding a replica of one of its groups, hands that
//! group to it ([`plan`], then `Router::transfer_leader` ->
//! `RaftGroup::transfer_leader`, openraft's leader transfer: the new
//! leader campaigns as soon as it holds the old one's log, so writes pause
//! for about one round trip, and requests in flight are retried by the
//! router). A draining node hands away every group it leads. One transfer
//! at a time: the next waits until the last one's new leader reports
//! itself, or [`LEADER_TRANSFER_TIMEOUT_MS`]. Every transfer lowers the sum
//! of the squares of the nodes' leader counts, so the spreading ends.

use crate::catalog::Catalog;
use crate::router::Router;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A node leading this many more groups than another replica of one of
/// them hands one over.
pub const LEADER_IMBALANCE: usize = 2;
/// Longest the balancer waits for a transfer's new leader to report
/// itself before it plans the next one, in milliseconds.
pub const LEADER_TRANSFER_TIMEOUT_MS: u64 = 10_000;

/// One leader transfer: `group` from node `from` (its leader) to node `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub group: u64,
    pub from: u64,
    pub to: u64,
}

/// The transfer that best evens out leadership, if one is worth making:
/// `led` maps each live node to the data groups it says it leads, `up`
/// are the live nodes. A group leaves a draining node for any other live
/// replica; otherwise it moves from a node leading the most to a replica
/// leading at least [`LEADER_IMBALANCE`] fewer. Groups being split are
/// left alone.
pub fn plan(
    catalog: &Catalog,
    led: &BTreeMap<u64, BTreeSet<u64>>,
    up: &BTreeSet<u64>,
) -> Option<Transfer> {
    let draining = |id: &u64| catalog.nodes.get(id).is_none_or(|n| n.draining);
    let mut count: BTreeMap<u64, usize> = up
        .iter()
        .filter(|id| !draining(id))
        .map(|id| (*id, 0))
        .collect();
    for (node, groups) in led {
        let n = groups
            .iter()
            .filter(|g| catalog.partitions.contains_key(g))
            .count();
        *count.entry(*node).or_default() = n;
    }
    let mut best: Option<(bool, usize, Transfer)> = None;
    for (from, groups) in led {
        let from_draining = draining(from);
        let Some(&high) = count.get(from) else {
            continue;
        };
        for group in groups {
            let Some((_, p)) = catalog.partitions.get(group) else {
                continue;
            };
            if p.splitting.is_some() {
                continue;
            }
            for to in p.replicas.iter().filter(|r| *r != from) {
                if draining(to) || !up.contains(to) {
                    continue;
                }
                let Some(&low) = count.get(to) else { continue };
                let gain = high.saturating_sub(low);
                if !from_draining && gain < LEADER_IMBALANCE {
                    continue;
                }
                let key = (from_draining, gain);
                if best.is_none_or(|(d, g, _)| key > (d, g)) {
                    let t = Transfer {
                        group: *group,
                        from: *from,
                        to: *to,
                    };
                    best = Some((from_draining, gain, t));
                }
            }
        }
    }
    best.map(|(_, _, t)| t)
}

/// The balancer's memory between rounds: the transfer in flight.
#[derive(Debug, Default)]
pub struct Balancer {
    pending: Option<(Transfer, Instant)>,
}

impl Balancer {
    /// Forgets the transfer in flight (this node stopped leading the
    /// control plane).
    pub fn reset(&mut self) {
        self.pending = None;
    }

    /// One round: waits out the transfer in flight, or plans and starts
    /// the next one.
    pub async fn step(&mut self, router: &Router, catalog: &Catalog, up: &BTreeSet<u64>) {
        let statuses = futures_util::future::join_all(
            up.iter()
                .map(|id| async move { (*id, router.node_status(*id).await) }),
        )
        .await;
        let mut led: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (id, status) in statuses {
            // A node that did not answer leads nothing this round.
            let Ok(groups) = status else { continue };
            let mine = groups
                .into_iter()
                .filter(|g| g.leader == Some(id))
                .map(|g| g.group);
            led.insert(id, mine.collect());
        }
        if let Some((t, since)) = self.pending {
            let arrived = led.get(&t.to).is_some_and(|g| g.contains(&t.group));
            let timeout = Duration::from_millis(LEADER_TRANSFER_TIMEOUT_MS);
            if !arrived && since.elapsed() < timeout {
                return;
            }
            if !arrived {
                tracing::warn!(?t, "leader transfer did not complete in time");
            }
            self.pending = None;
        }
        let Some(t) = plan(catalog, &led, up) else {
            return;
        };
        match router.transfer_leader(t.from, t.group, t.to).await {
            Ok(()) => {
                tracing::info!(group = t.group, from = t.from, to = t.to, "moving a leader");
                metrics::counter!("dynaraft_leader_transfers_total").increment(1);
                self.pending = Some((t, Instant::now()));
            }
            Err(e) => tracing::debug!(?t, error = %e, "leader transfer not started"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::tests::catalog;

    fn led(pairs: &[(u64, &[u64])]) -> BTreeMap<u64, BTreeSet<u64>> {
        pairs
            .iter()
            .map(|(n, gs)| (*n, gs.iter().copied().collect()))
            .collect()
    }

    /// Applies transfers until none is planned; the leader counts then.
    fn settle(c: &Catalog, mut l: BTreeMap<u64, BTreeSet<u64>>, up: &BTreeSet<u64>) -> Vec<usize> {
        for _ in 0..100 {
            let Some(t) = plan(c, &l, up) else {
                return l.values().map(BTreeSet::len).collect();
            };
            assert!(l.get_mut(&t.from).expect("from").remove(&t.group));
            l.entry(t.to).or_default().insert(t.group);
        }
        panic!("leader spreading did not settle: {l:?}");
    }

    #[test]
    fn leaders_gathered_on_one_node_spread_evenly() {
        let nodes = [(1, "a"), (2, "b"), (3, "c")];
        let parts: Vec<(u64, &[u64])> = (10..22).map(|g| (g, &[1u64, 2, 3][..])).collect();
        let c = catalog(&nodes, &parts);
        let up: BTreeSet<u64> = [1, 2, 3].into();
        let all: Vec<u64> = (10..22).collect();
        assert_eq!(
            settle(&c, led(&[(1, &all), (2, &[]), (3, &[])]), &up),
            [4, 4, 4]
        );
        // One more than another is even enough.
        let l = led(&[
            (1, &[10, 11]),
            (2, &[12]),
            (3, &(13..22).collect::<Vec<_>>()),
        ]);
        assert_eq!(settle(&c, l, &up), [4, 4, 4]);
        let l = led(&[
            (1, &[10, 11, 12, 13, 14]),
            (2, &[15, 16, 17, 18]),
            (3, &[19, 20, 21]),
        ]);
        assert_eq!(
            plan(&c, &l, &up),
            Some(Transfer {
                group: 10,
                from: 1,
                to: 3
            })
        );
    }

    #[test]
    fn only_replicas_on_live_nodes_receive_and_a_draining_node_hands_everything() {
        let nodes = [(1, "a"), (2, "b"), (3, "c"), (4, "c")];
        let c = catalog(
            &nodes,
            &[(10, &[1, 2, 3]), (11, &[1, 2, 3]), (12, &[1, 2, 3])],
        );
        let up: BTreeSet<u64> = [1, 3, 4].into();
        // Node 2 is down and node 4 holds none of them: node 3 takes one.
        let t = plan(&c, &led(&[(1, &[10, 11, 12])]), &up).expect("a transfer");
        assert_eq!((t.from, t.to), (1, 3));
        let mut draining = catalog(
            &nodes,
            &[(10, &[1, 2, 3]), (11, &[1, 2, 3]), (12, &[1, 2, 3])],
        );
        if let Some(n) = draining.nodes.get_mut(&3) {
            n.draining = true;
        }
        let up: BTreeSet<u64> = [1, 2, 3].into();
        let t = plan(&draining, &led(&[(1, &[10]), (2, &[11]), (3, &[12])]), &up);
        assert_eq!(t.map(|t| (t.group, t.from)), Some((12, 3)));
        // Groups that are not partitions (the control group) are not moved.
        assert_eq!(plan(&c, &led(&[(1, &[0, 1, 2, 3])]), &up), None);
    }
}
