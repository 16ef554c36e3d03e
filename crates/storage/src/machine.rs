//! The deterministic state machine: `apply(entry) -> outcome`.
//!
//! All state lives in one sled tree, keyed by group so that many groups
//! share it (never a tree per group):
//!
//! ```text
//! [group u64 BE] 0x00 [name]        group metadata: applied index, item count, bytes
//! [group u64 BE] 0x01 [storage key] items (binary item codec)
//! [0]            0x02 [table name]  catalog: TableMeta as JSON
//! [0]            0x03 [node id BE]  catalog: NodeRecord as JSON
//! [group u64 BE] 0x04, 0x05         local secondary indexes (see `index`)
//! [group u64 BE] 0x06, 0x07         global index versions, change log (see `global`)
//! ```
//!
//! A batch of entries is applied through an [`Overlay`] (so later entries
//! see earlier ones) and committed as one sled batch that also records the
//! applied index. Apply never reads a clock or a random source: time comes
//! from the entry. Validation failures and failed conditions are outcomes;
//! only sled I/O errors are errors, and they are fatal.

use crate::StorageError;
use crate::catalog::{IndexStatus, PartitionMeta};
use crate::catalog::{NodeRecord, TableMeta, TableStatus};
use crate::command::{Command, Entry, WriteCommand, WriteKind};
use crate::global::{self, ChangeRecord};
use crate::index;
use dynaraft_expr::{ExprKind, Substitutions, parse_condition, parse_update};
use dynaraft_model::codec::{decode_item, encode_item};
use dynaraft_model::value::{item_from_json, item_size_bytes};
use dynaraft_model::{Item, MAX_ITEM_BYTES};
use std::collections::BTreeMap;

pub const CATALOG_GROUP: u64 = 0;
const META: u8 = 0x00;
const ITEMS: u8 = 0x01;
const TABLES: u8 = 0x02;
const NODES: u8 = 0x03;

pub fn meta_key(group: u64, name: &str) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(META);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn item_key(group: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + storage_key.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.push(ITEMS);
    k.extend_from_slice(storage_key);
    k
}

pub fn items_prefix(group: u64) -> Vec<u8> {
    item_key(group, &[])
}

pub fn table_key(name: &str) -> Vec<u8> {
    let mut k = CATALOG_GROUP.to_be_bytes().to_vec();
    k.push(TABLES);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn tables_prefix() -> Vec<u8> {
    table_key("")
}

pub fn node_key(id: u64) -> Vec<u8> {
    let mut k = nodes_prefix();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn nodes_prefix() -> Vec<u8> {
    let mut k = CATALOG_GROUP.to_be_bytes().to_vec();
    k.push(NODES);
    k
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Result of applying one entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Written {
        old: Option<Item>,
        new: Option<Item>,
        /// Size after the write of the item's collection (its partition key
        /// value's items and local index entries), for tables with local
        /// indexes.
        #[serde(default)]
        collection_bytes: Option<u64>,
    },
    ConditionFailed {
        old: Option<Item>,
    },
    /// A ValidationException discovered while applying (e.g. an update that
    /// makes the item too large); nothing was written.
    Invalid(String),
    Table(Box<TableMeta>),
    TableMissing,
    TableExists,
    Done,
    /// The write would grow its item collection (one partition key value,
    /// with its local index entries) past the limit; nothing was written.
    CollectionTooLarge,
    /// The partition's change log is full (its global indexes lag by
    /// `global::MAX_INDEX_LAG_RECORDS`); nothing was written, retry later.
    IndexLagging,
}

/// Pending writes of a batch over the tree.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Overlay<'a> {
        Overlay {
            tree,
            pending: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.pending.get(k) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(k)?.map(|v| v.to_vec()))
    }

    pub(crate) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.pending.insert(k, Some(v));
    }

    pub(crate) fn del(&mut self, k: Vec<u8>) {
        self.pending.insert(k, None);
    }

    pub(crate) fn get_u64(&self, k: &[u8]) -> Result<u64, StorageError> {
        Ok(u64_of(self.get(k)?.map(sled::IVec::from)))
    }

    pub(crate) fn add_i64(&mut self, k: Vec<u8>, delta: i64) -> Result<(), StorageError> {
        let v = self.get_u64(&k)?.saturating_add_signed(delta);
        self.put(k, v.to_be_bytes().to_vec());
        Ok(())
    }

    /// Stages a group-metadata value (written with the next commit).
    pub fn put_meta(&mut self, group: u64, name: &str, value: Vec<u8>) {
        self.put(meta_key(group, name), value);
    }

    /// Reads a group-metadata value, seeing staged writes.
    pub fn get_meta(&self, group: u64, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(&meta_key(group, name))
    }

    /// Stages a raw key (snapshot installation).
    pub fn put_raw(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.put(k, v);
    }

    /// Every key under `prefix` with its value, pending writes included.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StorageError> {
        let mut out = BTreeMap::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self.pending.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// Stages the removal of every item and metadata key of `group`.
    pub fn clear_group(&mut self, group: u64) -> Result<(), StorageError> {
        for kv in self.tree.scan_prefix(group.to_be_bytes()) {
            let (k, _) = kv?;
            self.del(k.to_vec());
        }
        Ok(())
    }

    /// Writes everything plus the group's applied index, atomically.
    pub fn commit(self, group: u64, applied: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (k, v) in self.pending {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(meta_key(group, "applied"), applied.to_be_bytes().to_vec());
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Deletes every key of `group` (a replica leaving this node), in one batch.
pub fn drop_group(tree: &sled::Tree, group: u64) -> Result<(), StorageError> {
    let mut batch = sled::Batch::default();
    for kv in tree.scan_prefix(group.to_be_bytes()) {
        let (k, _) = kv?;
        batch.remove(k);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

pub fn applied_index(tree: &sled::Tree, group: u64) -> Result<u64, StorageError> {
    Ok(u64_of(tree.get(meta_key(group, "applied"))?))
}

pub fn group_stats(tree: &sled::Tree, group: u64) -> Result<(u64, u64), StorageError> {
    Ok((
        u64_of(tree.get(meta_key(group, "count"))?),
        u64_of(tree.get(meta_key(group, "bytes"))?),
    ))
}

pub fn read_item(
    tree: &sled::Tree,
    group: u64,
    storage_key: &[u8],
) -> Result<Option<Item>, StorageError> {
    match tree.get(item_key(group, storage_key))? {
        Some(b) => Ok(Some(
            decode_item(&b).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// Applies one entry of `group`.
pub fn apply(ov: &mut Overlay, group: u64, entry: &Entry) -> Result<Outcome, StorageError> {
    match &entry.cmd {
        Command::Write(w) => apply_write(ov, group, w),
        Command::StartBackfill { index } => {
            global::start_backfill(ov, group, *index)?;
            Ok(Outcome::Done)
        }
        Command::BackfillProgress { index, next } => {
            global::backfill_progress(ov, group, *index, next.as_deref())?;
            Ok(Outcome::Done)
        }
        Command::TrimChangeLog { upto } => {
            global::trim(ov, group, *upto)?;
            Ok(Outcome::Done)
        }
        Command::IndexApply(batch) => global::apply_batch(ov, group, batch),
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
        } => {
            let Some(mut meta) = get_table(ov, table)? else {
                return Ok(Outcome::TableMissing);
            };
            for g in meta
                .global_indexes
                .iter_mut()
                .filter(|g| g.index.name == *index)
            {
                (g.read_capacity, g.write_capacity) = (*read, *write);
            }
            put_table(ov, &meta);
            Ok(Outcome::Table(Box::new(meta)))
        }
        Command::DropGlobalIndex { table, index } => {
            let Some(mut meta) = get_table(ov, table)? else {
                return Ok(Outcome::TableMissing);
            };
            meta.global_indexes.retain(|g| g.index.name != *index);
            if meta.status == TableStatus::Updating && !creating_index(&meta) {
                meta.status = TableStatus::Active;
            }
            put_table(ov, &meta);
            Ok(Outcome::Table(Box::new(meta)))
        }
        Command::IndexBackfilled {
            table,
            index,
            group,
        } => {
            let Some(mut meta) = get_table(ov, table)? else {
                return Ok(Outcome::TableMissing);
            };
            let bases: Vec<u64> = meta.partitions.iter().map(|p| p.group).collect();
            if let Some(g) = meta.global_indexes.iter_mut().find(|g| g.id == *index) {
                if !g.backfilled.contains(group) {
                    g.backfilled.push(*group);
                }
                if bases.iter().all(|b| g.backfilled.contains(b)) {
                    g.status = IndexStatus::Active;
                }
            }
            if meta.status == TableStatus::Updating && !creating_index(&meta) {
                meta.status = TableStatus::Active;
            }
            put_table(ov, &meta);
            Ok(Outcome::Table(Box::new(meta)))
        }
        Command::CreateTable(meta) => {
            let key = table_key(&meta.name);
            if ov.get(&key)?.is_some() {
                return Ok(Outcome::TableExists);
            }
            let mut meta = meta.clone();
            place(ov, meta.all_partitions_mut().collect())?;
            meta.created_ms = entry.ts_ms;
            put_table(ov, &meta);
            Ok(Outcome::Table(Box::new(meta)))
        }
        Command::RegisterNode(node) => {
            ov.put(
                node_key(node.id),
                serde_json::to_vec(node).unwrap_or_default(),
            );
            Ok(Outcome::Done)
        }
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
        Command::SetTableStatus { name, status } => match get_table(ov, name)? {
            Some(mut meta) => {
                meta.status = *status;
                put_table(ov, &meta);
                Ok(Outcome::Table(Box::new(meta)))
            }
            None => Ok(Outcome::TableMissing),
        },
        Command::ReplaceTableMeta(new) => match get_table(ov, &new.name)? {
            Some(old) => {
                // What only the control plane changes is kept.
                let meta = TableMeta {
                    partitions: old.partitions,
                    created_ms: old.created_ms,
                    local_indexes: old.local_indexes,
                    global_indexes: old.global_indexes,
                    next_index_id: old.next_index_id,
                    ..new.clone()
                };
                put_table(ov, &meta);
                Ok(Outcome::Table(Box::new(meta)))
            }
            None => Ok(Outcome::TableMissing),
        },
        Command::DropTable { name } => match get_table(ov, name)? {
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
    }
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

fn apply_write(ov: &mut Overlay, group: u64, w: &WriteCommand) -> Result<Outcome, StorageError> {
    let key = item_key(group, &w.storage_key);
    let old = match ov.get(&key)? {
        Some(b) => Some(decode_item(&b).map_err(|e| StorageError::Corrupt(e.to_string()))?),
        None => None,
    };
    let values = match item_from_json(&w.values) {
        Ok(v) => v,
        Err(e) => return Ok(Outcome::Invalid(e.to_string())),
    };
    let mut subs = Substitutions::new(w.names.clone(), values);
    if let Some(src) = &w.condition {
        match parse_condition(src, ExprKind::Condition, &mut subs) {
            Ok(c) if !c.eval(old.as_ref()) => return Ok(Outcome::ConditionFailed { old }),
            Ok(_) => {}
            Err(e) => return Ok(Outcome::Invalid(e.to_string())),
        }
    }
    let new = match w.kind {
        WriteKind::Delete => None,
        WriteKind::Put => match w.item.as_ref().map(item_from_json) {
            Some(Ok(item)) => Some(item),
            Some(Err(e)) => return Ok(Outcome::Invalid(e.to_string())),
            None => return Ok(Outcome::Invalid("missing item".into())),
        },
        WriteKind::Update => {
            let mut item = match &old {
                Some(o) => o.clone(),
                None => match item_from_json(&w.key) {
                    Ok(k) => k,
                    Err(e) => return Ok(Outcome::Invalid(e.to_string())),
                },
            };
            if let Some(src) = &w.update {
                let applied = parse_update(src, &mut subs)
                    .map_err(|e| e.to_string())
                    .and_then(|u| u.apply(&mut item).map_err(|e| e.to_string()));
                if let Err(e) = applied {
                    return Ok(Outcome::Invalid(e));
                }
            }
            if item_size_bytes(&item) > MAX_ITEM_BYTES {
                return Ok(Outcome::Invalid(
                    "Item size to update has exceeded the maximum allowed size".into(),
                ));
            }
            Some(item)
        }
    };
    let old_size = old.as_ref().map_or(0, item_size_bytes) as i64;
    let new_size = new.as_ref().map_or(0, item_size_bytes) as i64;
    if let Some(msg) = new
        .as_ref()
        .and_then(|n| global::invalid_global_key(&w.global, n))
    {
        return Ok(Outcome::Invalid(msg));
    }
    // Checked before anything is staged: a refused write writes nothing.
    let logged = old != new && (!w.global.is_empty() || global::feeding(ov, group)?);
    if logged && global::lagging(ov, group)? {
        return Ok(Outcome::IndexLagging);
    }
    let mut collection_bytes = None;
    if let Some(local) = &w.local {
        if let Some(msg) = new
            .as_ref()
            .and_then(|n| index::invalid_index_key(local, n))
        {
            return Ok(Outcome::Invalid(msg));
        }
        let old_side = (old.as_ref(), old_size as usize);
        let new_side = (new.as_ref(), new_size as usize);
        match index::maintain(ov, group, local, old_side, new_side)? {
            index::Maintained::TooLarge => return Ok(Outcome::CollectionTooLarge),
            index::Maintained::Collection(bytes) => collection_bytes = Some(bytes),
        }
    }
    if logged {
        let record = ChangeRecord {
            storage_key: w.storage_key.clone(),
            old: old.clone(),
            new: new.clone(),
        };
        global::log_change(ov, group, &record)?;
    }
    match &new {
        Some(item) => ov.put(key, encode_item(item)),
        None => ov.del(key),
    }
    let count_delta = new.is_some() as i64 - old.is_some() as i64;
    ov.add_i64(meta_key(group, "count"), count_delta)?;
    ov.add_i64(meta_key(group, "bytes"), new_size - old_size)?;
    Ok(Outcome::Written {
        old,
        new,
        collection_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{PartitionMeta, TableStatus};

    fn run(tree: &sled::Tree, index: u64, cmd: Command) -> Outcome {
        let mut ov = Overlay::new(tree);
        let outcome = apply(&mut ov, CATALOG_GROUP, &Entry { ts_ms: 1, cmd }).unwrap();
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
        })
    }

    /// Placement puts one replica per zone on the least-loaded node; a
    /// replacement keeps the replica's position, bumps the epoch once, and
    /// is a no-op when repeated or when `old` holds no replica.
    #[test]
    fn replace_replica_moves_one_replica_and_bumps_the_epoch_once() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("state").unwrap();
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
}
