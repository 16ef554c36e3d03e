//! The control plane's state machine: catalog commands applied by group 0
//! (tables with their partition maps and global indexes, the node
//! registry), including replica placement. Like every apply, a pure
//! function of the catalog state and the command.

use crate::StorageError;
use crate::catalog::{IndexStatus, NodeRecord, PartitionMeta, TableMeta, TableStatus};
use crate::command::Command;
use crate::machine::{
    CATALOG_GROUP, Outcome, Overlay, meta_key, node_key, nodes_prefix, table_key, tables_prefix,
};
use std::collections::BTreeMap;

/// Applies catalog command `cmd`, stamped `ts_ms` by its proposer.
pub(crate) fn apply(ov: &mut Overlay, cmd: &Command, ts_ms: u64) -> Result<Outcome, StorageError> {
    match cmd {
        Command::AddGlobalIndex {
            table,
            index,
            attributes,
        } => add_global_index(ov, table, index, attributes),
        Command::SetIndexThroughput {
            table,
            index,
            read,
            write,
        } => change_table(ov, table, |meta| {
            for g in meta
                .global_indexes
                .iter_mut()
                .filter(|g| g.index.name == *index)
            {
                (g.read_capacity, g.write_capacity) = (*read, *write);
            }
        }),
        Command::DropGlobalIndex { table, index } => change_table(ov, table, |meta| {
            meta.global_indexes.retain(|g| g.index.name != *index);
            if meta.status == TableStatus::Updating && !creating_index(meta) {
                meta.status = TableStatus::Active;
            }
        }),
        Command::IndexBackfilled {
            table,
            index,
            group,
        } => change_table(ov, table, |meta| {
            let bases: Vec<u64> = meta.partitions.iter().map(|p| p.group).collect();
            if let Some(g) = meta.global_indexes.iter_mut().find(|g| g.id == *index) {
                if !g.backfilled.contains(group) {
                    g.backfilled.push(*group);
                }
                if bases.iter().all(|b| g.backfilled.contains(b)) {
                    g.status = IndexStatus::Active;
                }
            }
            if meta.status == TableStatus::Updating && !creating_index(meta) {
                meta.status = TableStatus::Active;
            }
        }),
        Command::CreateTable(meta) => {
            let key = table_key(&meta.name);
            if ov.get(&key)?.is_some() {
                return Ok(Outcome::TableExists);
            }
            let mut meta = meta.clone();
            place(ov, meta.all_partitions_mut().collect())?;
            meta.created_ms = ts_ms;
            put_table(ov, &meta);
            Ok(Outcome::Table(Box::new(meta)))
        }
        Command::BeginSplit {
            table,
            index,
            group,
            at,
        } => begin_split(ov, table, *index, *group, *at),
        Command::FinishSplit {
            table,
            index,
            group,
            first,
            closed_at,
        } => finish_split(ov, (table, *index, *group), *first, *closed_at),
        Command::RegisterNode(node) => {
            // A node registering again (a restart) stays draining.
            let draining = get_node(ov, node.id)?.is_some_and(|n| n.draining);
            let node = NodeRecord {
                draining,
                ..node.clone()
            };
            ov.put(
                node_key(node.id),
                serde_json::to_vec(&node).unwrap_or_default(),
            );
            Ok(Outcome::Done)
        }
        Command::PutUser(user) => {
            ov.put(
                crate::machine::user_key(&user.access_key_id),
                serde_json::to_vec(user).unwrap_or_default(),
            );
            Ok(Outcome::Done)
        }
        Command::DeleteUser { access_key_id } => {
            let key = crate::machine::user_key(access_key_id);
            if ov.get(&key)?.is_none() {
                return Ok(Outcome::Invalid(format!(
                    "no user has access key {access_key_id}"
                )));
            }
            ov.del(key);
            Ok(Outcome::Done)
        }
        Command::SetDraining { node, draining } => match get_node(ov, *node)? {
            Some(n) => {
                let n = NodeRecord {
                    draining: *draining,
                    ..n
                };
                ov.put(node_key(n.id), serde_json::to_vec(&n).unwrap_or_default());
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::Invalid(format!("no node {node} is registered"))),
        },
        Command::ReplaceReplica {
            table,
            group,
            old,
            new,
        } => {
            let Some(mut meta) = get_table(ov, table)? else {
                return Ok(Outcome::TableMissing);
            };
            let Some(p) = meta.all_partitions_mut().find(|p| p.group == *group) else {
                return Ok(Outcome::Done);
            };
            if let Some(slot) = p.replicas.iter().position(|r| r == old)
                && !p.replicas.contains(new)
            {
                p.replicas[slot] = *new;
                p.epoch += 1;
                put_table(ov, &meta);
            }
            Ok(Outcome::Table(Box::new(meta)))
        }
        Command::SetTableStatus {
            name,
            status: TableStatus::Deleting,
        } if get_table(ov, name)?.is_some_and(|m| m.deletion_protection) => {
            Ok(Outcome::DeletionProtected)
        }
        Command::SetTableStatus { name, status } => {
            change_table(ov, name, |meta| meta.status = *status)
        }
        Command::ReplaceTableMeta(new) => match get_table(ov, &new.name)? {
            Some(old) => {
                // What only the control plane changes is kept: among them
                // each replica's copy progress (`ReplicaCopied`), which a
                // description read before it would turn back.
                let mut replication = new.replication.clone();
                if let (Some(new_rep), Some(old_rep)) = (replication.as_mut(), &old.replication) {
                    for r in &mut new_rep.replicas {
                        if let Some(o) = old_rep.replicas.iter().find(|o| o.region == r.region) {
                            r.status.clone_from(&o.status);
                            r.copied.clone_from(&o.copied);
                        }
                    }
                }
                let meta = TableMeta {
                    partitions: old.partitions,
                    created_ms: old.created_ms,
                    local_indexes: old.local_indexes,
                    global_indexes: old.global_indexes,
                    next_index_id: old.next_index_id,
                    replication,
                    // Copy progress is the control plane's (PartitionCopied).
                    backup: old.backup,
                    restore: old.restore,
                    importing: old.importing,
                    ..new.clone()
                };
                put_table(ov, &meta);
                Ok(Outcome::Table(Box::new(meta)))
            }
            None => Ok(Outcome::TableMissing),
        },
        Command::PartitionCopied {
            table,
            group,
            items,
            bytes,
        } => change_table(ov, table, |meta| {
            partition_copied(meta, *group, *items, *bytes)
        }),
        Command::PutJob(job) => {
            let key = crate::machine::job_key(&job.arn);
            if let Some(old) = ov.get(&key)? {
                let old: crate::jobs::Job = serde_json::from_slice(&old)
                    .map_err(|e| StorageError::Corrupt(format!("job {}: {e}", job.arn)))?;
                if old.finished() {
                    return Ok(Outcome::Invalid(format!("job {} is finished", job.arn)));
                }
            }
            ov.put(key, serde_json::to_vec(job).unwrap_or_default());
            Ok(Outcome::Done)
        }
        Command::ReplicaCopied {
            table,
            region,
            group,
        } => change_table(ov, table, |meta| {
            let groups: Vec<u64> = meta.partitions.iter().map(|p| p.group).collect();
            let Some(r) = meta
                .replication
                .as_mut()
                .and_then(|rep| rep.replicas.iter_mut().find(|r| r.region == *region))
            else {
                return;
            };
            if r.status != crate::catalog::REPLICA_CREATING {
                return;
            }
            if !r.copied.contains(group) {
                r.copied.push(*group);
            }
            if groups.iter().all(|g| r.copied.contains(g)) {
                r.status = crate::catalog::REPLICA_ACTIVE.to_string();
                r.copied.clear();
            }
        }),
        Command::DropTable { name } => match get_table(ov, name)? {
            // Deletion protection holds on every path, not only at the API;
            // a table already DELETING was unprotected when that began.
            Some(meta) if meta.deletion_protection && meta.status != TableStatus::Deleting => {
                Ok(Outcome::DeletionProtected)
            }
            Some(meta) => {
                // The data groups are removed by the nodes hosting them
                // once they see the table gone from the catalog.
                ov.del(table_key(name));
                Ok(Outcome::Table(Box::new(TableMeta {
                    status: TableStatus::Deleting,
                    ..meta
                })))
            }
            None => Ok(Outcome::TableMissing),
        },
        // Data commands never reach the control group's apply.
        Command::Write(_)
        | Command::WriteBatch(_)
        | Command::StartBackfill { .. }
        | Command::BackfillProgress { .. }
        | Command::TrimChangeLog { .. }
        | Command::PurgeChangeLog { .. }
        | Command::IndexApply(_)
        | Command::TxnPrepare(_)
        | Command::TxnDecide { .. }
        | Command::TxnResolve { .. }
        | Command::TxnFinish { .. }
        | Command::TxnForget { .. }
        | Command::StartReplication { .. }
        | Command::ReplicationShipped { .. }
        | Command::StopReplication { .. }
        | Command::PinChangeLog { .. }
        | Command::UnpinChangeLog { .. }
        | Command::AdvancePin { .. }
        | Command::Split { .. }
        | Command::PrepareSplit { .. } => Ok(Outcome::Invalid("not a catalog command".into())),
    }
}

/// Records that partition `group` copied `items` items of `bytes` bytes
/// into the backup or restored table `meta`; once every partition copied,
/// the backup is AVAILABLE, or the restored table ACTIVE. A partition
/// reported twice counts once.
fn partition_copied(meta: &mut TableMeta, group: u64, items: u64, bytes: u64) {
    if let Some(b) = meta.backup.as_mut() {
        if b.status != crate::catalog::BACKUP_CREATING || b.copied.contains(&group) {
            return;
        }
        b.copied.push(group);
        b.items += items;
        b.bytes += bytes;
        if b.source
            .partitions
            .iter()
            .all(|p| b.copied.contains(&p.group))
        {
            b.status = crate::catalog::BACKUP_AVAILABLE.to_string();
        }
    } else if let Some(r) = meta.restore.as_mut() {
        if !r.in_progress || r.copied.contains(&group) {
            return;
        }
        r.copied.push(group);
        if r.sources.iter().all(|g| r.copied.contains(g)) {
            r.in_progress = false;
            meta.status = TableStatus::Active;
        }
    }
}

/// Applies `f` to table `name` and stores the result (`TableMissing` if
/// there is no such table).
fn change_table(
    ov: &mut Overlay,
    name: &str,
    f: impl FnOnce(&mut TableMeta),
) -> Result<Outcome, StorageError> {
    let Some(mut meta) = get_table(ov, name)? else {
        return Ok(Outcome::TableMissing);
    };
    f(&mut meta);
    put_table(ov, &meta);
    Ok(Outcome::Table(Box::new(meta)))
}

/// Whether a global index of `meta` is still being created.
fn creating_index(meta: &TableMeta) -> bool {
    meta.global_indexes
        .iter()
        .any(|g| g.status == IndexStatus::Creating)
}

/// Adds a global index to a table: assigns its id, places its partitions,
/// and marks it (and the table) as being created.
fn add_global_index(
    ov: &mut Overlay,
    table: &str,
    index: &crate::catalog::GlobalIndexMeta,
    attributes: &[(String, String)],
) -> Result<Outcome, StorageError> {
    let Some(mut meta) = get_table(ov, table)? else {
        return Ok(Outcome::TableMissing);
    };
    let taken = meta.global_indexes.iter().map(|g| &g.index.name);
    let lsi = meta.local_indexes.iter().map(|i| &i.name);
    if taken.chain(lsi).any(|n| *n == index.index.name) {
        return Ok(Outcome::Invalid(format!(
            "One or more parameter values were invalid: Index already exists: {}",
            index.index.name
        )));
    }
    if creating_index(&meta) || meta.status != TableStatus::Active {
        return Ok(Outcome::Invalid(format!(
            "Attempt to change a resource which is still in use: Table is being updated: {table}"
        )));
    }
    let mut g = index.clone();
    g.id = meta.next_index_id;
    g.status = IndexStatus::Creating;
    g.backfill = true;
    g.backfilled.clear();
    place(ov, g.partitions.iter_mut().collect())?;
    meta.next_index_id += 1;
    meta.status = TableStatus::Updating;
    for a in attributes {
        if !meta.attributes.iter().any(|(n, _)| *n == a.0) {
            meta.attributes.push(a.clone());
        }
    }
    meta.global_indexes.push(g);
    put_table(ov, &meta);
    Ok(Outcome::Table(Box::new(meta)))
}

fn get_table(ov: &Overlay, name: &str) -> Result<Option<TableMeta>, StorageError> {
    match ov.get(&table_key(name))? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// The partitions of `index` (or the table's), mutably.
fn partitions_mut(meta: &mut TableMeta, index: Option<u32>) -> Option<&mut Vec<PartitionMeta>> {
    match index {
        None => Some(&mut meta.partitions),
        Some(id) => meta
            .global_indexes
            .iter_mut()
            .find(|g| g.id == id)
            .map(|g| &mut g.partitions),
    }
}

/// Applies `change` to partition `group` of `table` (or of its global
/// index `index`), given the partitions and its position among them, and
/// stores the table if `change` says it changed anything. A missing table
/// is `TableMissing`, a missing index or partition `Invalid`; the outcome
/// is otherwise the table, or `change`'s refusal.
fn change_partition(
    ov: &mut Overlay,
    (table, index, group): (&str, Option<u32>, u64),
    change: impl FnOnce(
        &mut Overlay,
        &mut Vec<PartitionMeta>,
        usize,
    ) -> Result<Result<bool, Outcome>, StorageError>,
) -> Result<Outcome, StorageError> {
    let Some(mut meta) = get_table(ov, table)? else {
        return Ok(Outcome::TableMissing);
    };
    let Some(parts) = partitions_mut(&mut meta, index) else {
        return Ok(Outcome::Invalid(format!(
            "table {table} has no index {index:?}"
        )));
    };
    let Some(i) = parts.iter().position(|p| p.group == group) else {
        return Ok(Outcome::Invalid(format!(
            "table {table} has no partition {group}"
        )));
    };
    match change(ov, parts, i)? {
        Err(refused) => return Ok(refused),
        Ok(true) => put_table(ov, &meta),
        Ok(false) => {}
    }
    Ok(Outcome::Table(Box::new(meta)))
}

fn begin_split(
    ov: &mut Overlay,
    table: &str,
    index: Option<u32>,
    group: u64,
    at: u64,
) -> Result<Outcome, StorageError> {
    change_partition(ov, (table, index, group), |ov, parts, i| {
        let hi = parts.get(i + 1).map(|n| n.hash_lo);
        let Some(p) = parts.get_mut(i) else {
            return Ok(Ok(false));
        };
        if p.splitting.is_some() {
            return Ok(Ok(false));
        }
        if at <= p.hash_lo || hi.is_some_and(|hi| at >= hi) {
            return Ok(Err(Outcome::Invalid(format!(
                "hash {at:#x} is not inside partition {group}'s range"
            ))));
        }
        let next_key = meta_key(CATALOG_GROUP, "next_group");
        let child = ov.get_u64(&next_key)?.max(1);
        ov.put(next_key, (child + 1).to_be_bytes().to_vec());
        p.splitting = Some(crate::catalog::PendingSplit { at, child });
        Ok(Ok(true))
    })
}

fn finish_split(
    ov: &mut Overlay,
    (table, index, group): (&str, Option<u32>, u64),
    first: Option<u64>,
    closed_at: Option<u64>,
) -> Result<Outcome, StorageError> {
    change_partition(ov, (table, index, group), |_, parts, i| {
        let Some(p) = parts.get_mut(i) else {
            return Ok(Ok(false));
        };
        let Some(s) = p.splitting.take() else {
            return Ok(Ok(false));
        };
        p.epoch += 1;
        // The child's first replica initialises its group and so leads it
        // at first: the parent's leader, which applied the split first, so
        // the child serves at once; without one, rotating by the child's
        // id spreads the children's first leaders over the zones.
        let mut replicas = p.replicas.clone();
        let by = match first.and_then(|f| replicas.iter().position(|r| *r == f)) {
            Some(at) => at,
            None => (s.child % replicas.len().max(1) as u64) as usize,
        };
        if by < replicas.len() {
            replicas.rotate_left(by);
        }
        // The parent's shard closes where the split was applied in its
        // log; the child's first shard and the parent's next continue it.
        let parent_shard = match closed_at {
            Some(seq) => {
                p.shard_ends.push(seq);
                u32::try_from(p.shard_ends.len() - 1).ok()
            }
            None => None,
        };
        let child = PartitionMeta {
            group: s.child,
            hash_lo: s.at,
            replicas,
            epoch: 1,
            parent: Some(group),
            splitting: None,
            shard_ends: Vec::new(),
            parent_shard,
        };
        parts.insert(i + 1, child);
        Ok(Ok(true))
    })
}

fn get_node(ov: &Overlay, id: u64) -> Result<Option<NodeRecord>, StorageError> {
    match ov.get(&node_key(id))? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

fn put_table(ov: &mut Overlay, meta: &TableMeta) {
    ov.put(
        table_key(&meta.name),
        serde_json::to_vec(meta).unwrap_or_default(),
    );
}

/// Assigns group ids to new partitions (a table's or an index's) and places
/// one replica of each in every availability zone, on the node of that zone
/// holding the fewest replicas (ties to the lowest id). Deterministic: it
/// reads only the catalog, so every control-plane replica places identically.
fn place(ov: &mut Overlay, partitions: Vec<&mut PartitionMeta>) -> Result<(), StorageError> {
    let next_key = meta_key(CATALOG_GROUP, "next_group");
    let mut next = ov.get_u64(&next_key)?.max(1);
    let mut nodes: Vec<NodeRecord> = Vec::new();
    for v in ov.scan_prefix(&nodes_prefix())?.values() {
        nodes.push(serde_json::from_slice(v).map_err(|e| StorageError::Corrupt(e.to_string()))?);
    }
    // Nothing new goes to a draining node.
    nodes.retain(|n: &NodeRecord| !n.draining);
    let mut load: BTreeMap<u64, usize> = nodes.iter().map(|n| (n.id, 0)).collect();
    for v in ov.scan_prefix(&tables_prefix())?.values() {
        let t: TableMeta =
            serde_json::from_slice(v).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        for r in t.all_partitions().flat_map(|p| &p.replicas) {
            *load.entry(*r).or_default() += 1;
        }
    }
    let zones: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.az.as_str()).collect();
    for p in partitions {
        p.group = next;
        next += 1;
        p.replicas.clear();
        for az in &zones {
            let best = nodes
                .iter()
                .filter(|n| n.az == *az)
                .min_by_key(|n| (load.get(&n.id).copied().unwrap_or(0), n.id));
            if let Some(n) = best {
                p.replicas.push(n.id);
                *load.entry(n.id).or_default() += 1;
            }
        }
    }
    ov.put(next_key, next.to_be_bytes().to_vec());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{PartitionMeta, TableStatus};
    use crate::command::Entry;
    use crate::kv::Store;
    use crate::machine::apply;

    fn run(tree: &Store, index: u64, cmd: Command) -> Outcome {
        let mut ov = Overlay::new(tree);
        let outcome = apply(
            &mut ov,
            crate::Span::whole(CATALOG_GROUP),
            &Entry { ts_ms: 1, cmd },
        )
        .unwrap();
        ov.commit(CATALOG_GROUP, index).unwrap();
        outcome
    }

    fn table(name: &str, partitions: usize) -> TableMeta {
        TableMeta {
            name: name.into(),
            partitions: PartitionMeta::even_split(partitions),
            status: TableStatus::Active,
            ..TableMeta::default()
        }
    }

    fn node(id: u64, az: &str) -> Command {
        Command::RegisterNode(NodeRecord {
            id,
            addr: format!("n{id}"),
            az: az.into(),
            ..NodeRecord::default()
        })
    }

    /// Placement puts one replica per zone on the least-loaded node; a
    /// replacement keeps the replica's position, bumps the epoch once, and
    /// is a no-op when repeated or when `old` holds no replica.
    #[test]
    fn replace_replica_moves_one_replica_and_bumps_the_epoch_once() {
        let tree = crate::kv::Store::temporary().expect("store");
        for (i, (id, az)) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")].iter().enumerate() {
            run(&tree, i as u64 + 1, node(*id, az));
        }
        let Outcome::Table(t) = run(&tree, 5, Command::CreateTable(table("t", 2))) else {
            panic!("create failed");
        };
        let placed: Vec<_> = t.partitions.iter().map(|p| p.replicas.clone()).collect();
        assert_eq!(placed, vec![vec![1, 2, 3], vec![4, 2, 3]]);
        let group = t.partitions[0].group;
        let replace = |old, new| Command::ReplaceReplica {
            table: "t".into(),
            group,
            old,
            new,
        };
        for (index, (old, new)) in [(6, (1, 4)), (7, (1, 4)), (8, (9, 4))] {
            let Outcome::Table(t) = run(&tree, index, replace(old, new)) else {
                panic!("replace failed");
            };
            assert_eq!(t.partitions[0].replicas, vec![4, 2, 3]);
            assert_eq!(t.partitions[0].epoch, 2);
            assert_eq!(t.partitions[1].epoch, 1);
        }
    }

    /// A replica is ACTIVE once every partition reported its copy, and a
    /// description read before that (a later UpdateTable's) does not turn
    /// it back to CREATING.
    #[test]
    fn a_replica_is_active_once_every_partition_copied_and_stays_so() {
        let tree = crate::kv::Store::temporary().expect("store");
        for (i, (id, az)) in [(1, "a"), (2, "b"), (3, "c")].iter().enumerate() {
            run(&tree, i as u64 + 1, node(*id, az));
        }
        let Outcome::Table(t) = run(&tree, 4, Command::CreateTable(table("t", 2))) else {
            panic!("create failed");
        };
        let stale = TableMeta {
            replication: Some(Box::new(crate::catalog::Replication {
                region: "us-east-1".into(),
                replicas: vec![crate::catalog::ReplicaMeta {
                    region: "eu-west-1".into(),
                    status: crate::catalog::REPLICA_CREATING.into(),
                    copied: Vec::new(),
                    settings: Default::default(),
                }],
            })),
            ..(*t).clone()
        };
        run(&tree, 5, Command::ReplaceTableMeta(stale.clone()));
        let status = |o: Outcome| match o {
            Outcome::Table(t) => t.replication.expect("global").replicas[0].status.clone(),
            other => panic!("{other:?}"),
        };
        let copied = |group| Command::ReplicaCopied {
            table: "t".into(),
            region: "eu-west-1".into(),
            group,
        };
        let (g1, g2) = (t.partitions[0].group, t.partitions[1].group);
        assert_eq!(status(run(&tree, 6, copied(g1))), "CREATING");
        assert_eq!(
            status(run(&tree, 7, copied(g1))),
            "CREATING",
            "twice is once"
        );
        assert_eq!(status(run(&tree, 8, copied(g2))), "ACTIVE");
        assert_eq!(
            status(run(&tree, 9, Command::ReplaceTableMeta(stale))),
            "ACTIVE"
        );
    }

    /// Deletion protection holds in the state machine itself: neither a
    /// DropTable nor a move to DELETING gets through while it is on,
    /// whatever path proposed them; once it is off, both do.
    #[test]
    fn a_protected_table_is_neither_dropped_nor_set_deleting() {
        let tree = crate::kv::Store::temporary().expect("store");
        for (i, (id, az)) in [(1, "a"), (2, "b"), (3, "c")].iter().enumerate() {
            run(&tree, i as u64 + 1, node(*id, az));
        }
        let protected = TableMeta {
            deletion_protection: true,
            ..table("t", 1)
        };
        assert!(matches!(
            run(&tree, 4, Command::CreateTable(protected.clone())),
            Outcome::Table(_)
        ));
        let drop = || Command::DropTable { name: "t".into() };
        let deleting = || Command::SetTableStatus {
            name: "t".into(),
            status: TableStatus::Deleting,
        };
        assert!(matches!(run(&tree, 5, drop()), Outcome::DeletionProtected));
        assert!(matches!(
            run(&tree, 6, deleting()),
            Outcome::DeletionProtected
        ));
        let Outcome::Table(t) = run(
            &tree,
            7,
            Command::SetTableStatus {
                name: "t".into(),
                status: TableStatus::Updating,
            },
        ) else {
            panic!("other transitions still apply");
        };
        assert_eq!(t.status, TableStatus::Updating);
        let unprotected = TableMeta {
            deletion_protection: false,
            ..protected
        };
        run(&tree, 8, Command::ReplaceTableMeta(unprotected));
        assert!(matches!(run(&tree, 9, deleting()), Outcome::Table(_)));
        assert!(matches!(run(&tree, 10, drop()), Outcome::Table(_)));
        assert!(matches!(run(&tree, 11, drop()), Outcome::TableMissing));
    }

    /// A split allocates its child's id when it begins (once: a second
    /// begin changes nothing), is refused outside the partition's range,
    /// and when finished inserts the child after its parent with the
    /// parent's replicas (rotated, to spread leaders) and bumps the parent's
    /// epoch, once.
    #[test]
    fn a_split_begins_once_and_finishes_into_two_partitions() {
        let tree = crate::kv::Store::temporary().expect("store");
        for (i, (id, az)) in [(1, "a"), (2, "b"), (3, "c")].iter().enumerate() {
            run(&tree, i as u64 + 1, node(*id, az));
        }
        let Outcome::Table(t) = run(&tree, 4, Command::CreateTable(table("t", 2))) else {
            panic!("create failed");
        };
        let (first, second) = (t.partitions[0].clone(), t.partitions[1].clone());
        let begin = |at| Command::BeginSplit {
            table: "t".into(),
            index: None,
            group: first.group,
            at,
        };
        let outside = run(&tree, 5, begin(second.hash_lo));
        assert!(matches!(outside, Outcome::Invalid(_)), "{outside:?}");
        let at = second.hash_lo / 2;
        let mut child = None;
        for (index, at) in [(6, at), (7, at + 1)] {
            let Outcome::Table(t) = run(&tree, index, begin(at)) else {
                panic!("begin failed");
            };
            let pending = t.partitions[0].splitting.expect("pending");
            assert_eq!(pending.at, at - (index - 6));
            assert!(pending.child > second.group);
            assert_eq!(*child.get_or_insert(pending.child), pending.child);
        }
        let finish = Command::FinishSplit {
            table: "t".into(),
            index: None,
            group: first.group,
            first: None,
            closed_at: Some(42),
        };
        for index in [8, 9] {
            let Outcome::Table(t) = run(&tree, index, finish.clone()) else {
                panic!("finish failed");
            };
            let got: Vec<_> = t
                .partitions
                .iter()
                .map(|p| (p.group, p.hash_lo, p.epoch, p.parent))
                .collect();
            assert_eq!(
                got,
                vec![
                    (first.group, 0, 2, None),
                    (child.unwrap(), at, 1, Some(first.group)),
                    (second.group, second.hash_lo, 1, None),
                ]
            );
            // The parent's replicas, rotated by the child's id.
            let mut rotated = first.replicas.clone();
            rotated.rotate_left((child.unwrap() % 3) as usize);
            assert_eq!(t.partitions[1].replicas, rotated);
            assert!(t.partitions.iter().all(|p| p.splitting.is_none()));
            // The parent's first shard closed at the split's sequence (once,
            // though the finish came twice); the child's continues it.
            assert_eq!(t.partitions[0].shard_ends, vec![42]);
            assert_eq!(t.partitions[1].parent_shard, Some(0));
        }
        let missing = Command::BeginSplit {
            table: "nope".into(),
            index: None,
            group: 1,
            at: 5,
        };
        assert!(matches!(run(&tree, 10, missing), Outcome::TableMissing));
    }
}
