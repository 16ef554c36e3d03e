//! Reads for Query and Scan. Query turns the key condition into one byte
//! range of storage keys (the encoding is order-preserving and prefix-free,
//! so the range is exact); Scan walks the group's keys in hash order,
//! optionally only one hash segment (parallel scan). Both stop at
//! [`MAX_PAGE_BYTES`] of items read or at the client's limit and report the
//! last evaluated key so the next page resumes exactly after it.

use crate::StorageError;
use crate::index::entry_key;
use crate::kv::Store;
use crate::machine::{item_key, read_item};
use crate::span::{Span, successor};
use dynaraft_expr::{KeyCondition, RangeCondition};
use dynaraft_model::codec::decode_item;
use dynaraft_model::key::encode_scalar;
use dynaraft_model::value::item_size_bytes;
use dynaraft_model::{AttributeValue, Item, KeySchema};
use std::ops::Bound;

/// Most item bytes one Query or Scan page reads (1 MB).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Page {
    /// Items read, in order (a FilterExpression is applied by the caller).
    pub items: Vec<Item>,
    /// Items read (ScannedCount).
    pub scanned: usize,
    /// Bytes of items read, for capacity accounting.
    pub read_bytes: usize,
    /// Key of the last item read when the page stopped early.
    pub last_key: Option<Item>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReadOptions {
    pub forward: bool,
    /// Storage key to resume strictly after (ExclusiveStartKey).
    pub start_after: Option<Vec<u8>>,
    /// Most items to read (the request's Limit, less what earlier
    /// partitions of the same page read).
    pub limit: Option<usize>,
    /// Most item bytes to read: [`MAX_PAGE_BYTES`] less earlier partitions'.
    pub max_bytes: usize,
}

fn with(base: &[u8], v: &AttributeValue) -> Vec<u8> {
    let mut k = base.to_vec();
    encode_scalar(v, &mut k);
    k
}

/// `[lo, hi)` storage-key bounds of a key condition: the partition-key
/// values and the sort-key values held equal make a prefix; the condition
/// on the next sort-key attribute, if any, bounds what follows it.
pub fn query_bounds(schema: &KeySchema, kc: &KeyCondition) -> Option<(Vec<u8>, Vec<u8>)> {
    let hash: Vec<&AttributeValue> = kc.hash.iter().collect();
    let mut base = schema.partition_prefix(&hash)?;
    for v in &kc.sort_eq {
        encode_scalar(v, &mut base)?;
    }
    let end = successor(base.clone())?;
    // Past every key whose next sort value is `v`, whatever follows it
    // (later sort-key attributes; an index entry key continues with the
    // table's key).
    let incl = |v: &AttributeValue| successor(with(&base, v)).unwrap_or_else(|| end.clone());
    Some(match &kc.range {
        None => (base.clone(), end),
        Some(RangeCondition::Eq(v)) => (with(&base, v), incl(v)),
        Some(RangeCondition::Lt(v)) => (base.clone(), with(&base, v)),
        Some(RangeCondition::Le(v)) => (base.clone(), incl(v)),
        Some(RangeCondition::Gt(v)) => (incl(v), end),
        Some(RangeCondition::Ge(v)) => (with(&base, v), end),
        Some(RangeCondition::Between(a, b)) => (with(&base, a), incl(b)),
        Some(RangeCondition::BeginsWith(v)) => {
            let mut p = with(&base, v);
            // Drop the two-byte terminator: what remains prefixes every
            // encoding of a value that begins with `v`.
            p.truncate(p.len().saturating_sub(2));
            let hi = successor(p.clone())?;
            (p, hi)
        }
    })
}

/// `[lo, hi)` storage-key bounds of one parallel-scan segment.
pub fn segment_bounds(segment: u32, total: u32) -> (Vec<u8>, Option<Vec<u8>>) {
    let width = (u64::MAX as u128 + 1) / total.max(1) as u128;
    let start = (segment as u128 * width) as u64;
    let end = (segment as u128 + 1) * width;
    let hi = if segment + 1 >= total || end > u64::MAX as u128 {
        None
    } else {
        Some((end as u64).to_be_bytes().to_vec())
    };
    (start.to_be_bytes().to_vec(), hi)
}

/// A read of a secondary index instead of the table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IndexRead {
    /// The entries' id in their group: the local index's, or
    /// `global::GLOBAL_ENTRY_ID`.
    pub id: u8,
    /// The global index's id, whose partitions hold the entries (`None`: a
    /// local index, in the table's partitions).
    #[serde(default)]
    pub global: Option<u32>,
    /// The index's key schema.
    pub schema: KeySchema,
    /// Return each entry's whole base item (in the same partition) instead
    /// of the projected attributes.
    pub fetch_base: bool,
}

/// Reads items of the group `sp` describes (or entries of one of its local
/// indexes) whose storage keys lie in `[lo, hi)`; `schema` is the table's
/// key. `(&[], None)` asks for everything the group owns (its own sweeps:
/// backfill, TTL). Any other range reaching outside the group's hash range
/// is refused ([`StorageError::WrongRange`]): the group split since the
/// caller mapped it, and a page of only part of the range would look
/// complete.
pub fn read_range(
    tree: &Store,
    sp: Span,
    schema: &KeySchema,
    index: Option<&IndexRead>,
    (lo, hi): (&[u8], Option<&[u8]>),
    opts: &ReadOptions,
) -> Result<Page, StorageError> {
    let (own_lo, own_hi) = (sp.lo.to_be_bytes(), sp.hi.map(u64::to_be_bytes));
    let (lo, hi) = match (lo, hi) {
        ([], None) => (&own_lo[..], own_hi.as_ref().map(|h| &h[..])),
        asked => asked,
    };
    let above_lo = lo >= &sp.lo.to_be_bytes()[..];
    let below_hi = match (sp.hi, hi) {
        (None, _) => true,
        (Some(end), Some(h)) => h <= &end.to_be_bytes()[..],
        (Some(_), None) => false,
    };
    if !(above_lo && below_hi) {
        return Err(StorageError::WrongRange(format!(
            "group {} owns hashes {:#x}..{:?}, not the range asked for",
            sp.group, sp.lo, sp.hi
        )));
    }
    let full = |k: &[u8]| match index {
        Some(ix) => entry_key(sp.space, ix.id, k),
        None => item_key(sp.space, k),
    };
    let mut lo_b = Bound::Included(full(lo));
    let mut hi_b = match hi {
        Some(h) => Bound::Excluded(full(h)),
        None => successor(full(&[])).map_or(Bound::Unbounded, Bound::Excluded),
    };
    if let Some(after) = &opts.start_after {
        let k = full(after);
        if opts.forward {
            if k >= full(lo) {
                lo_b = Bound::Excluded(k);
            }
        } else if hi.is_none_or(|h| k < full(h)) {
            hi_b = Bound::Excluded(k);
        }
    }
    let iter = tree.range::<Vec<u8>, _>((lo_b, hi_b));
    let mut page = Page::default();
    let mut step = |kv: crate::kv::Pair| -> Result<bool, StorageError> {
        let (_, v) = kv?;
        let mut item = decode_item(&v).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let mut key = schema.key_of(&item);
        if let Some(ix) = index {
            key.extend(ix.schema.key_of(&item));
            if ix.fetch_base {
                let base = schema.storage_key(&item).map(|k| read_item(tree, sp, &k));
                if let Some(base) = base.transpose()?.flatten() {
                    item = base;
                }
            }
        }
        page.scanned += 1;
        page.read_bytes += item_size_bytes(&item);
        page.items.push(item);
        let full =
            page.read_bytes >= opts.max_bytes || opts.limit.is_some_and(|l| page.scanned >= l);
        if full {
            page.last_key = Some(key);
        }
        Ok(!full)
    };
    if opts.forward {
        for kv in iter {
            if !step(kv)? {
                break;
            }
        }
    } else {
        for kv in iter.rev() {
            if !step(kv)? {
                break;
            }
        }
    }
    Ok(page)
}
