//! The cluster at a glance, as `dynaraft admin` prints it and the web
//! console shows it: the catalog (zones, nodes, tables, partitions) joined
//! with what every node says of its replicas (which one leads, how far each
//! trails the leader's log, how much each global index has yet to
//! receive) and, when asked, every partition's size and load.
//!
//! Gathering differs by caller (the admin command calls nodes over gRPC
//! with addresses from the catalog; a router asks through its own routes,
//! the node in its process included), so [`Survey::gather`] takes the two
//! questions as functions; the rows are built in one place.

use crate::wire::{GroupStats, GroupStatus, ReplicationStatus};
use dynaraft_storage::catalog::{NodeRecord, PartitionMeta, TableMeta};
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::future::Future;

/// The catalog and what the nodes answered.
pub struct Survey {
    /// The catalog version the survey is of.
    pub version: u64,
    pub tables: Vec<TableMeta>,
    pub nodes: Vec<NodeRecord>,
    /// Each node's replicas by group; `None` when the node did not answer.
    pub status: BTreeMap<u64, Option<BTreeMap<u64, GroupStatus>>>,
    /// Each partition's (table's or index's) stats by group, from its
    /// leader or else the first replica that answered (only when gathered
    /// with stats).
    pub stats: BTreeMap<u64, GroupStats>,
    /// The replica that answered each group's stats (a partition's load
    /// counts only when it is the leader's).
    answered: BTreeMap<u64, u64>,
}

/// One storage node.
#[derive(Debug, serde::Serialize)]
pub struct NodeRow {
    pub id: u64,
    pub az: String,
    pub addr: String,
    /// It answered the survey.
    pub up: bool,
    pub draining: bool,
    /// Replicas it hosts and how many of them lead (`None`: it did not
    /// answer).
    pub replicas: Option<usize>,
    pub leading: Option<usize>,
}

/// How far one replica's applied index trails its leader's log.
#[derive(Debug, serde::Serialize)]
pub struct ReplicaLag {
    pub node: u64,
    /// Entries behind (`None`: the replica or the leader did not answer).
    pub entries: Option<u64>,
}

/// One partition, of a table or of one of its global indexes.
#[derive(Debug, serde::Serialize)]
pub struct PartitionRow {
    pub table: String,
    /// The global index the partition belongs to (`None`: the table's).
    pub index: Option<String>,
    pub group: u64,
    /// First hash of the partition's range (inclusive).
    pub hash_from: String,
    /// End of the range (exclusive; `None`: to the end of the hash space).
    pub hash_to: Option<String>,
    /// Items (entries, for an index partition) and their bytes, from the
    /// leader or else the first replica that answered; `None` when none did
    /// (or the survey was gathered without stats).
    pub items: Option<u64>,
    pub bytes: Option<u64>,
    /// Requests per second the leader served over its last load window
    /// (`None`: the leader did not answer).
    pub load_per_s: Option<u64>,
    /// The hash of the partition key with most of the leader's sampled
    /// load, if one has (a hot key: a split would not cool it).
    pub hot_key: Option<String>,
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
    /// Each replica's lag behind the leader's log, in replica order.
    pub lag: Vec<ReplicaLag>,
    /// Change records of this base partition its global indexes have not
    /// received yet, as its leader counts them (`None` for an index
    /// partition, a table without global indexes, or no answer).
    pub index_backlog: Option<u64>,
    pub epoch: u64,
    /// The group it split from.
    pub parent: Option<u64>,
    /// A split in progress: (at hash, child group).
    pub splitting: Option<(String, u64)>,
}

/// One partition's replication to one region, as `dynaraft admin
/// replication` shows it (from the partition's leader).
#[derive(Debug, serde::Serialize)]
pub struct ReplicationRow {
    pub table: String,
    pub group: u64,
    pub leader: u64,
    #[serde(flatten)]
    pub status: ReplicationStatus,
}

pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}

impl Survey {
    /// Asks every node for its replicas' state (`status_of`, all nodes at
    /// once) and, with `with_stats`, every partition's leader (or else its
    /// other replicas in turn) for its stats (`stats_of(node, group)`).
    pub async fn gather<St, StF, Sz, SzF>(
        version: u64,
        tables: Vec<TableMeta>,
        nodes: Vec<NodeRecord>,
        status_of: St,
        stats_of: Sz,
        with_stats: bool,
    ) -> Survey
    where
        St: Fn(NodeRecord) -> StF,
        StF: Future<Output = Option<Vec<GroupStatus>>>,
        Sz: Fn(NodeRecord, u64) -> SzF,
        SzF: Future<Output = Option<GroupStats>>,
    {
        let answers = join_all(nodes.iter().cloned().map(&status_of)).await;
        let status = nodes
            .iter()
            .zip(answers)
            .map(|(n, s)| {
                (
                    n.id,
                    s.map(|gs| gs.into_iter().map(|g| (g.group, g)).collect()),
                )
            })
            .collect();
        let mut survey = Survey {
            version,
            tables,
            nodes,
            status,
            stats: BTreeMap::new(),
            answered: BTreeMap::new(),
        };
        if with_stats {
            let by_id: BTreeMap<u64, &NodeRecord> =
                survey.nodes.iter().map(|n| (n.id, n)).collect();
            let asks = survey
                .tables
                .iter()
                .flat_map(|t| t.all_partitions())
                .map(|p| {
                    let leader = survey.leader(p);
                    // The leader first: it served the writes, so it has the load.
                    let mut order: Vec<&NodeRecord> = leader
                        .and_then(|l| by_id.get(&l).copied())
                        .into_iter()
                        .collect();
                    order.extend(
                        p.replicas
                            .iter()
                            .filter(|r| Some(**r) != leader)
                            .filter_map(|r| by_id.get(r).copied()),
                    );
                    let group = p.group;
                    let stats_of = &stats_of;
                    async move {
                        for n in order {
                            if let Some(s) = stats_of(n.clone(), group).await {
                                return Some((group, n.id, s));
                            }
                        }
                        None
                    }
                });
            for (group, node, s) in join_all(asks).await.into_iter().flatten() {
                survey.stats.insert(group, s);
                survey.answered.insert(group, node);
            }
        }
        survey
    }

    /// What node `node` says of `group`, if it answered and hosts it.
    fn of(&self, node: u64, group: u64) -> Option<&GroupStatus> {
        self.status.get(&node)?.as_ref()?.get(&group)
    }

    /// The leader `p`'s replicas report.
    pub fn leader(&self, p: &PartitionMeta) -> Option<u64> {
        p.replicas
            .iter()
            .find_map(|r| self.of(*r, p.group).and_then(|g| g.leader))
    }

    pub fn node_rows(&self) -> Vec<NodeRow> {
        self.nodes
            .iter()
            .map(|n| {
                let s = self.status.get(&n.id).and_then(|s| s.as_ref());
                NodeRow {
                    id: n.id,
                    az: n.az.clone(),
                    addr: n.addr.clone(),
                    up: s.is_some(),
                    draining: n.draining,
                    replicas: s.map(BTreeMap::len),
                    leading: s.map(|s| s.values().filter(|g| g.leader == Some(n.id)).count()),
                }
            })
            .collect()
    }

    /// Every partition of every table, each table's global indexes' after
    /// its own, in catalog order.
    pub fn partition_rows(&self) -> Vec<PartitionRow> {
        let mut rows = Vec::new();
        for t in &self.tables {
            let sets = std::iter::once((None, &t.partitions)).chain(
                t.global_indexes
                    .iter()
                    .map(|g| (Some(g.index.name.clone()), &g.partitions)),
            );
            for (index, parts) in sets {
                for (i, p) in parts.iter().enumerate() {
                    let leader = self.leader(p);
                    let head = leader
                        .and_then(|l| self.of(l, p.group))
                        .map(|g| g.last_log_index);
                    let lag = p
                        .replicas
                        .iter()
                        .map(|r| ReplicaLag {
                            node: *r,
                            entries: self
                                .of(*r, p.group)
                                .zip(head)
                                .map(|(g, h)| h.saturating_sub(g.applied_index)),
                        })
                        .collect();
                    let stats = self.stats.get(&p.group);
                    let from_leader =
                        leader.is_some() && self.answered.get(&p.group) == leader.as_ref();
                    let load = stats.filter(|_| from_leader).map(|s| &s.load);
                    let index_backlog = (index.is_none() && !t.global_indexes.is_empty())
                        .then(|| leader.and_then(|l| self.of(l, p.group)?.index_backlog))
                        .flatten();
                    rows.push(PartitionRow {
                        table: t.name.clone(),
                        index: index.clone(),
                        group: p.group,
                        hash_from: hex(p.hash_lo),
                        hash_to: parts.get(i + 1).map(|n| hex(n.hash_lo)),
                        items: stats.map(|s| s.count),
                        bytes: stats.map(|s| s.bytes),
                        load_per_s: load.map(|l| l.ops_per_s),
                        hot_key: load.and_then(|l| l.hot_key).map(hex),
                        replicas: p.replicas.clone(),
                        leader,
                        lag,
                        index_backlog,
                        epoch: p.epoch,
                        parent: p.parent,
                        splitting: p.splitting.map(|s| (hex(s.at), s.child)),
                    });
                }
            }
        }
        rows
    }

    /// Every partition of every global table and where its replication to
    /// each peer region stands, as each partition's leader reports it.
    pub fn replication_rows(&self) -> Vec<ReplicationRow> {
        let mut rows = Vec::new();
        for t in &self.tables {
            for p in &t.partitions {
                let Some(leader) = self.leader(p) else {
                    continue;
                };
                let Some(g) = self.of(leader, p.group) else {
                    continue;
                };
                rows.extend(g.replication.iter().map(|status| ReplicationRow {
                    table: t.name.clone(),
                    group: p.group,
                    leader,
                    status: status.clone(),
                }));
            }
        }
        rows.sort_by(|a, b| {
            (&a.table, a.group, &a.status.region).cmp(&(&b.table, b.group, &b.status.region))
        });
        rows
    }
}
