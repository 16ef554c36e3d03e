//! Local secondary indexes: entries kept inside the base partition's group
//! and changed in the same apply as the base item, so an LSI is always
//! exactly as current as its table (strongly consistent reads work).
//!
//! ```text
//! [space] 0x04 [index id u8] [entry key]    an index entry: the projected item
//! [space] 0x05 [partition-key prefix]       item collection size, bytes (u64 BE)
//! ```
//!
//! An entry key is the index's storage key (hash of the partition key, the
//! partition key, the index sort key) followed by the table's sort key, so
//! entries of items sharing an index sort value stay distinct and in table
//! order. An item without the index's sort attribute has no entry (a sparse
//! index). Each entry counts its projected attributes plus
//! [`INDEX_ENTRY_OVERHEAD_BYTES`], as DynamoDB does; an item collection (all
//! items of one partition key value, with their entries) may not grow past
//! the command's limit (10 GB in DynamoDB).
//!
//! The index definitions travel in the write command ([`LocalIndexes`]),
//! so apply needs no catalog lookup and every replica does the same.

use crate::StorageError;
use crate::catalog::Projection;
use crate::kv::Store;
use crate::machine::Overlay;
use dynaraft_model::codec::encode_item;
use dynaraft_model::key::encode_scalar;
use dynaraft_model::value::item_size_bytes;
use dynaraft_model::{AttributeValue, Item, KeyAttr, KeySchema};
use serde::{Deserialize, Serialize};

pub(crate) const LOCAL_INDEX: u8 = 0x04;
pub(crate) const COLLECTION: u8 = 0x05;
/// Bytes DynamoDB adds to each index entry's size.
pub const INDEX_ENTRY_OVERHEAD_BYTES: usize = 100;
/// DynamoDB's limit on an item collection of a table with LSIs (10 GB).
pub const DEFAULT_ITEM_COLLECTION_LIMIT_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// A table's local indexes, as a write command carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalIndexes {
    pub table: KeySchema,
    /// In id order (the id is the position).
    pub indexes: Vec<LocalIndexSpec>,
    pub collection_limit_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalIndexSpec {
    pub name: String,
    pub sort: KeyAttr,
    pub projection: Projection,
}

impl LocalIndexSpec {
    /// The index's key schema: the table's partition key and its own sort key.
    pub fn schema(&self, table: &KeySchema) -> KeySchema {
        KeySchema {
            hash: table.hash.clone(),
            range: vec![self.sort.clone()],
        }
    }
}

/// `[space][0x04][id][key]`.
pub fn entry_key(space: u64, id: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + key.len());
    k.extend_from_slice(&space.to_be_bytes());
    k.push(LOCAL_INDEX);
    k.push(id);
    k.extend_from_slice(key);
    k
}

fn collection_key(space: u64, partition_prefix: &[u8]) -> Vec<u8> {
    let mut k = space.to_be_bytes().to_vec();
    k.push(COLLECTION);
    k.extend_from_slice(partition_prefix);
    k
}

/// The storage-key prefix of `item`'s partition-key value under `schema`;
/// `None` when the item lacks a partition-key attribute.
fn partition_prefix_of(schema: &KeySchema, item: &Item) -> Option<Vec<u8>> {
    let values = schema
        .hash
        .iter()
        .map(|ka| item.get(&ka.name))
        .collect::<Option<Vec<_>>>()?;
    schema.partition_prefix(&values)
}

/// The entry key of `item` in an index with key `index` on a table with key
/// `table`: the index storage key, then the table's sort key. `None` when
/// the item lacks an index key attribute.
pub fn entry_storage_key(index: &KeySchema, table: &KeySchema, item: &Item) -> Option<Vec<u8>> {
    let mut k = index.storage_key(item)?;
    for ka in table.key_attrs().filter(|ka| !index.is_key_attr(&ka.name)) {
        encode_scalar(item.get(&ka.name)?, &mut k)?;
    }
    Some(k)
}

/// Whether an entry of an index (key `index`, projection `p`) on a table
/// with key `table` holds attribute `name`: key attributes always, others
/// as the projection says.
pub fn holds(p: &Projection, table: &KeySchema, index: &KeySchema, name: &str) -> bool {
    match p {
        Projection::All => true,
        Projection::KeysOnly => table.is_key_attr(name) || index.is_key_attr(name),
        Projection::Include(a) => {
            table.is_key_attr(name) || index.is_key_attr(name) || a.iter().any(|x| x == name)
        }
    }
}

/// The attributes of `item` an index entry holds.
pub fn project(item: &Item, table: &KeySchema, index: &KeySchema, p: &Projection) -> Item {
    match p {
        Projection::All => item.clone(),
        Projection::KeysOnly | Projection::Include(_) => item
            .iter()
            .filter(|(name, _)| holds(p, table, index, name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
    }
}

/// DynamoDB's ValidationException message for the first index key of
/// `item` with the wrong type, an empty value or too many bytes; `None`
/// when all are fine.
pub fn invalid_index_key(local: &LocalIndexes, item: &Item) -> Option<String> {
    local.indexes.iter().find_map(|spec| {
        invalid_key_value(&spec.name, &spec.sort, item)
            .or_else(|| oversized_index_key(&spec.schema(&local.table), item))
    })
}

/// DynamoDB's message when `item` has every key attribute of an index with
/// key `schema` (so it would be indexed) and their values are over the key
/// size limits; `None` otherwise.
pub fn oversized_index_key(schema: &KeySchema, item: &Item) -> Option<String> {
    if !schema.key_attrs().all(|ka| item.contains_key(&ka.name)) {
        return None;
    }
    schema.check_sizes(item).err().map(|e| e.to_string())
}

/// DynamoDB's message when `item`'s value of index key `ka` (of index
/// `index`) has the wrong type or is empty; `None` when it is absent or fine.
pub fn invalid_key_value(index: &str, ka: &KeyAttr, item: &Item) -> Option<String> {
    let v = item.get(&ka.name)?;
    if v.attr_type() != ka.ty.attr_type() {
        return Some(format!(
            "One or more parameter values were invalid: Type mismatch for Index Key {} Expected: {} Actual: {} IndexName: {}",
            ka.name,
            ka.ty.descriptor(),
            v.attr_type().descriptor(),
            index
        ));
    }
    let empty = matches!(v, AttributeValue::S(s) if s.is_empty())
        || matches!(v, AttributeValue::B(b) if b.is_empty());
    empty.then(|| format!(
        "One or more parameter values are not valid. A value specified for a secondary index key is not supported. The AttributeValue for a key attribute cannot contain an empty string value. IndexName: {}, IndexKey: {}",
        index, ka.name
    ))
}

/// One entry of an item: index id, entry key, projected item and its size.
struct Entry {
    id: u8,
    key: Vec<u8>,
    item: Item,
    size: usize,
}

fn entries(local: &LocalIndexes, item: Option<&Item>) -> Vec<Entry> {
    let Some(item) = item else {
        return Vec::new();
    };
    local
        .indexes
        .iter()
        .enumerate()
        .filter_map(|(id, spec)| {
            let schema = spec.schema(&local.table);
            let key = entry_storage_key(&schema, &local.table, item)?;
            let item = project(item, &local.table, &schema, &spec.projection);
            let size = item_size_bytes(&item) + INDEX_ENTRY_OVERHEAD_BYTES;
            Some(Entry {
                id: id as u8,
                key,
                item,
                size,
            })
        })
        .collect()
}

/// What [`maintain`] did.
pub enum Maintained {
    /// The collection would exceed its limit; nothing was written.
    TooLarge,
    /// Entries replaced; the collection's size after the write, in bytes.
    Collection(u64),
}

/// Replaces `old`'s index entries by `new`'s and updates the item
/// collection's size (base item sizes `old_size`, `new_size`).
pub fn maintain(
    ov: &mut Overlay,
    sp: crate::span::Span,
    local: &LocalIndexes,
    (old, old_size): (Option<&Item>, usize),
    (new, new_size): (Option<&Item>, usize),
) -> Result<Maintained, StorageError> {
    let before = entries(local, old);
    let after = entries(local, new);
    let total = |base: usize, e: &[Entry]| (base + e.iter().map(|e| e.size).sum::<usize>()) as i64;
    let delta = total(new_size, &after) - total(old_size, &before);
    let Some(item) = new.or(old) else {
        return Ok(Maintained::Collection(0));
    };
    let Some(prefix) = partition_prefix_of(&local.table, item) else {
        return Ok(Maintained::Collection(0));
    };
    let group = sp.group;
    let ck = collection_key(sp.space, &prefix);
    let size = ov.get_u64(&ck)?;
    let grown = size.checked_add_signed(delta).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "item collection size {size} cannot change by {delta}"
        ))
    })?;
    if delta > 0 && grown > local.collection_limit_bytes {
        return Ok(Maintained::TooLarge);
    }
    for e in &before {
        ov.del(entry_key(sp.space, e.id, &e.key));
        count_entry(ov, group, e, -1)?;
    }
    for e in &after {
        ov.put(entry_key(sp.space, e.id, &e.key), encode_item(&e.item));
        count_entry(ov, group, e, 1)?;
    }
    ov.add_i64(ck, delta)?;
    Ok(Maintained::Collection(grown))
}

fn stat_key(group: u64, id: u8, what: &str) -> Vec<u8> {
    crate::machine::meta_key(group, &stat_name(id, what))
}

fn stat_name(id: u8, what: &str) -> String {
    format!("lsi{id}:{what}")
}

/// Counts entry `e` in (`sign` 1) or out of (-1) its index's counters.
fn count_entry(ov: &mut Overlay, group: u64, e: &Entry, sign: i64) -> Result<(), StorageError> {
    let names = (stat_name(e.id, "count"), stat_name(e.id, "bytes"));
    crate::split::count(
        ov,
        group,
        crate::catalog::key_hash(&e.key),
        (&names.0, &names.1),
        (sign, sign * e.size as i64),
    )
}

/// (entries, bytes) of local index `id` in `group`.
pub fn index_stats(tree: &Store, group: u64, id: u8) -> Result<(u64, u64), StorageError> {
    let get = |what| crate::machine::read_u64(tree, &stat_key(group, id, what));
    Ok((get("count")?, get("bytes")?))
}
