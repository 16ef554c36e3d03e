//! Splitting a group in place (issue 21), as TiKV splits a region: the
//! split is a command in the parent's log, so every replica applies it at
//! the same index and reaches the same state. The parent keeps
//! `[lo, at)`, the child gets `[at, hi)` of the same key space, and no item,
//! index entry, intent or stamp moves: only spans (see `span`) and the
//! child's share of the group-keyed state change.
//!
//! What the child receives, so that everything keyed by group keeps its
//! meaning across the split:
//!
//! - **Counters**: item (or, in an index partition, entry) count and bytes,
//!   and each local index's entry count and bytes, counted over the
//!   child's range and taken off the parent's.
//! - **Write sequence** (`wseq`, `last_delete`), so item stamps never go
//!   back.
//! - **Change log numbering**: the child's log starts empty after the
//!   parent's last sequence, so a global index, which keeps per base item
//!   the sequence it reflects, never takes a child's newer record for an
//!   older one. That sequence is the split's answer (`Outcome::Sequence`,
//!   the same when the split is applied again): the parent's stream shard
//!   closes there, and its next shard and the child's first continue it.
//! - **Backfills**: a finished one is finished for the child too; a running
//!   one that had passed `at` is finished for the parent and resumes where
//!   it was in the child; otherwise the child starts its own from scratch.
//!   `feeding` is copied.
//! - **Index partitions**: the per-source marks, and the versions of base
//!   items whose entry the child now holds (a tombstone, which has no
//!   entry, goes to both).
//! - **Transaction records** (with their tokens and time indexes) whose
//!   anchor hash the child now owns move to it; records written before
//!   records knew their anchor are copied to both.
//!
//! The child's Raft group starts with an empty log on the parent's
//! replicas: its state is already here.

use crate::StorageError;
use crate::catalog::key_hash;
use crate::global::{self, GLOBAL_ENTRY_ID};
use crate::index::{INDEX_ENTRY_OVERHEAD_BYTES, LOCAL_INDEX};
use crate::machine::{ITEMS, Outcome, Overlay, meta_key};
use crate::span::{Span, successor};
use crate::txn;
use dynaraft_model::codec::decode_item;
use dynaraft_model::value::item_size_bytes;
use std::collections::BTreeMap;

/// Group-metadata names copied to the child as they are.
const COPIED_META: [&str; 4] = ["wseq", "last_delete", "feeding", "pins"];
/// Group-metadata name prefixes copied to the child (an index partition's
/// per-source marks, a base partition's finished backfills).
const COPIED_META_PREFIXES: [&str; 3] = ["src:", "closed:", "bfdone:"];

/// Child-group metadata: the parent's last change-log sequence before the
/// split, which a split applied again answers (the stream shard's end).
const SPLIT_SEQ: &str = "split_seq";

/// Group-metadata: the Raft log index of the last split this group applied
/// as the parent. The state machine writes it (it knows the entry's index);
/// a snapshot carries it.
pub const SPLIT_INDEX_META: &str = "split_index";

/// The lowest log index a snapshot of `group` must be taken at before a
/// replica may join it from nothing: `None` when the group's log from its
/// first entry is right on any node (it never split and is not a split
/// child). A split child's log starts on state its first replicas
/// inherited (`Some(0)`: any snapshot). A parent's entries from before its
/// last split wrote to a range its children now own, on the same nodes, so
/// a replica replaying them would write into a child's items; a snapshot
/// taken after the split carries only the parent's own range.
pub fn snapshot_floor(tree: &crate::kv::Store, group: u64) -> Result<Option<u64>, StorageError> {
    let key = meta_key(group, SPLIT_INDEX_META);
    let split = match tree.get(&key)? {
        Some(b) => Some(crate::machine::u64_of(&key, Some(&b))?),
        None => None,
    };
    let child = Span::stored(tree, group)?.is_some_and(|s| s.space != group);
    Ok(split.or(child.then_some(0)))
}

/// Entries and bytes counted over a range.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    bytes: u64,
}

/// Group metadata: the split point being prepared and its generation
/// (8 + 8 bytes, big-endian; see [`prepare`]). It stays after the split,
/// when nothing the parent owns is at or past it.
const SPLIT_PREP: &str = "split_prep";
/// Group-metadata name prefix of the prepared split's accumulators: for
/// each counter (`count`, `bytes`, `lsi{id}:count`, ...), how much it
/// changed in the range from the prepared point since the prepare (an
/// i64, big-endian: a delete of an older item makes it negative).
const SPLIT_ACC: &str = "split_acc:";

/// A split child's counters as tallied outside the apply: for each
/// counter, what the range held on a snapshot minus what the accumulator
/// held there. The apply adds its accumulator's value then, so the sum is
/// what the range holds at the split (see [`prepare`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitTally {
    /// The prepare's generation the snapshot saw.
    pub generation: u64,
    /// Counter name -> tally minus accumulator, on one snapshot.
    pub base: BTreeMap<String, i64>,
}

/// Prepares a split of the group `sp` describes at hash `at`: from this
/// entry on, every change to a counter of the group in `[at, hi)` is also
/// added to an accumulator. A tally of the range made on any snapshot
/// after this entry ([`prepared_tally`]), minus the accumulators on the
/// same snapshot, plus the accumulators when the split applies, is then
/// the range's counters at the split, without scanning it in the apply,
/// where every write of the partition would wait behind the scan. Applied
/// again at the same point it changes nothing (a tally in flight stays
/// good); at another point it starts over under a new generation.
pub fn prepare(ov: &mut Overlay, sp: Span, at: u64) -> Result<Outcome, StorageError> {
    if let Some(why) = outside(sp, at) {
        return Ok(Outcome::Invalid(why));
    }
    let current = prepared(ov, sp.group)?;
    if current.is_some_and(|(point, _)| point == at) {
        return Ok(Outcome::Done);
    }
    let generation = current.map_or(1, |(_, g)| g.saturating_add(1));
    let mut v = at.to_be_bytes().to_vec();
    v.extend_from_slice(&generation.to_be_bytes());
    ov.put(meta_key(sp.group, SPLIT_PREP), v);
    clear_accumulators(ov, sp.group)?;
    Ok(Outcome::Done)
}

/// Why `at` cannot split the group `sp` describes, if it cannot.
fn outside(sp: Span, at: u64) -> Option<String> {
    (at <= sp.lo || sp.hi.is_some_and(|hi| at >= hi)).then(|| {
        format!(
            "hash {at:#x} does not split group {}'s range {:#x}..{:?}",
            sp.group, sp.lo, sp.hi
        )
    })
}

/// The prepared split point and its generation, if a split was prepared.
fn prepared(ov: &Overlay, group: u64) -> Result<Option<(u64, u64)>, StorageError> {
    let Some(v) = ov.get_setting(&meta_key(group, SPLIT_PREP))? else {
        return Ok(None);
    };
    let (at, generation) = v
        .split_first_chunk::<8>()
        .and_then(|(at, rest)| Some((at, <[u8; 8]>::try_from(rest).ok()?)))
        .ok_or_else(|| StorageError::Corrupt(format!("{SPLIT_PREP} of {} bytes", v.len())))?;
    Ok(Some((
        u64::from_be_bytes(*at),
        u64::from_be_bytes(generation),
    )))
}

/// Adds `(count, bytes)` deltas to the group's counters named `names`, for
/// an item (or entry) whose key hashes to `hash`; and to their
/// accumulators when a prepared split point is at or below `hash`. Every
/// write that changes a group's counters goes through here.
pub(crate) fn count(
    ov: &mut Overlay,
    group: u64,
    hash: u64,
    names: (&str, &str),
    deltas: (i64, i64),
) -> Result<(), StorageError> {
    let tracked = prepared(ov, group)?.is_some_and(|(at, _)| hash >= at);
    for (name, delta) in [(names.0, deltas.0), (names.1, deltas.1)] {
        ov.add_i64(meta_key(group, name), delta)?;
        if tracked && delta != 0 {
            let k = meta_key(group, &format!("{SPLIT_ACC}{name}"));
            let sum = signed_of(&k, ov.get(&k)?.as_deref())?
                .checked_add(delta)
                .ok_or_else(|| StorageError::Corrupt(format!("{name} accumulator overflows")))?;
            ov.put(k, sum.to_be_bytes().to_vec());
        }
    }
    Ok(())
}

fn signed_of(key: &[u8], v: Option<&[u8]>) -> Result<i64, StorageError> {
    match v {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b).map(i64::from_be_bytes).map_err(|_| {
            StorageError::Corrupt(format!("accumulator {key:?} of {} bytes", b.len()))
        }),
    }
}

/// Counter name -> accumulator of the group's prepared split.
fn accumulators(ov: &Overlay, group: u64) -> Result<BTreeMap<String, i64>, StorageError> {
    let head = meta_key(group, SPLIT_ACC);
    let mut out = BTreeMap::new();
    ov.for_each_in(&head, successor(head.clone()).as_deref(), |k, v| {
        let name = String::from_utf8_lossy(k.get(head.len()..).unwrap_or_default()).into_owned();
        out.insert(name, signed_of(k, Some(v))?);
        Ok(true)
    })?;
    Ok(out)
}

fn clear_accumulators(ov: &mut Overlay, group: u64) -> Result<(), StorageError> {
    for name in accumulators(ov, group)?.into_keys() {
        ov.del(meta_key(group, &format!("{SPLIT_ACC}{name}")));
    }
    Ok(())
}

/// The tally a split of `group` at `at` can carry ([`SplitTally`]), made
/// on a snapshot of `tree` (the scan of the upper range runs outside any
/// apply, so writes go on meanwhile). `None` when the group has no
/// prepared split at `at` as of the snapshot, or the engine has no
/// snapshots: the split then counts in its apply.
pub fn prepared_tally(
    tree: &crate::kv::Store,
    group: u64,
    at: u64,
    index_partition: bool,
) -> Result<Option<SplitTally>, StorageError> {
    let Some(snap) = tree.snapshot() else {
        return Ok(None);
    };
    let ov = Overlay::new(&snap);
    let sp = Span::load(&snap, group)?;
    let generation = match prepared(&ov, group)? {
        Some((point, g)) if point == at && outside(sp, at).is_none() => g,
        _ => return Ok(None),
    };
    let right = Span { lo: at, ..sp };
    let acc = accumulators(&ov, group)?;
    let mut base = BTreeMap::new();
    for (name, n) in range_counters(&ov, right, index_partition)? {
        let n = i64::try_from(n)
            .map_err(|_| StorageError::Corrupt(format!("{name} of {n} in one split half")))?;
        base.insert(name, n);
    }
    for (name, a) in acc {
        let b = base.entry(name).or_insert(0);
        *b = b
            .checked_sub(a)
            .ok_or_else(|| StorageError::Corrupt("split tally overflows".into()))?;
    }
    Ok(Some(SplitTally { generation, base }))
}

/// Splits the group `sp` describes at hash `at`, handing `[at, hi)` to
/// group `child`. `index_partition`: the group is a global index's
/// partition, whose counters count entries rather than items. `tally`: the
/// child's counters as tallied after a [`prepare`] at `at`; without one
/// that matches, the range is counted here. Applying the same split again
/// changes nothing; a split point outside the range, or a child that
/// already owns something else, is refused with [`Outcome::Invalid`] and
/// changes nothing.
pub fn apply(
    ov: &mut Overlay,
    sp: Span,
    at: u64,
    child: u64,
    index_partition: bool,
    tally: Option<&SplitTally>,
) -> Result<Outcome, StorageError> {
    let existing = Span::load_staged(ov, child)?;
    if child != sp.group && existing.space == sp.space && existing.lo == at && sp.hi == Some(at) {
        return Ok(Outcome::Sequence(ov.get_u64(&meta_key(child, SPLIT_SEQ))?));
    }
    if child == sp.group || existing != Span::whole(child) || has_state(ov, child)? {
        return Ok(Outcome::Invalid(format!(
            "group {child} cannot become a child of group {}",
            sp.group
        )));
    }
    if let Some(why) = outside(sp, at) {
        return Ok(Outcome::Invalid(why));
    }
    let left = Span { hi: Some(at), ..sp };
    let right = Span {
        group: child,
        lo: at,
        ..sp
    };
    move_counters(ov, sp.group, right, index_partition, tally)?;
    copy_meta(ov, sp.group, child)?;
    let closed_at = start_change_log(ov, sp.group, child)?;
    crate::replica::split(ov, sp.group, child)?;
    split_backfills(ov, sp.group, child, at)?;
    if index_partition {
        split_versions(ov, sp.group, right)?;
    }
    txn::split_records(ov, sp.group, right)?;
    left.store(ov);
    right.store(ov);
    Ok(Outcome::Sequence(closed_at))
}

/// Whether any key of `group` exists (a group id never reused is empty).
fn has_state(ov: &Overlay, group: u64) -> Result<bool, StorageError> {
    let mut any = false;
    ov.for_each_in(&group.to_be_bytes(), next_id(group).as_deref(), |_, _| {
        any = true;
        Ok(false)
    })?;
    Ok(any)
}

fn next_id(id: u64) -> Option<Vec<u8>> {
    id.checked_add(1).map(|n| n.to_be_bytes().to_vec())
}

/// Count and bytes of the encoded items in `[lo, hi)`, each weighing its
/// size plus `overhead`.
fn tally(
    ov: &Overlay,
    (lo, hi): (Vec<u8>, Option<Vec<u8>>),
    overhead: u64,
) -> Result<Tally, StorageError> {
    let mut t = Tally::default();
    ov.for_each_in(&lo, hi.as_deref(), |_, v| {
        let item = decode_item(v).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        t.count += 1;
        t.bytes += item_size_bytes(&item) as u64 + overhead;
        Ok(true)
    })?;
    Ok(t)
}

/// The counters of `right`'s range, by name, counted over its items (or
/// entries): `count` and `bytes` always, each local index's only where it
/// holds something.
fn range_counters(
    ov: &Overlay,
    right: Span,
    index_partition: bool,
) -> Result<Vec<(String, u64)>, StorageError> {
    let overhead = INDEX_ENTRY_OVERHEAD_BYTES as u64;
    let main = if index_partition {
        tally(
            ov,
            right.hash_range(&[LOCAL_INDEX, GLOBAL_ENTRY_ID]),
            overhead,
        )?
    } else {
        tally(ov, right.hash_range(&[ITEMS]), 0)?
    };
    let mut out = vec![
        ("count".to_string(), main.count),
        ("bytes".into(), main.bytes),
    ];
    if index_partition {
        return Ok(out);
    }
    for id in 0..=u8::MAX {
        let t = tally(ov, right.hash_range(&[LOCAL_INDEX, id]), overhead)?;
        if t != Tally::default() {
            out.push((format!("lsi{id}:count"), t.count));
            out.push((format!("lsi{id}:bytes"), t.bytes));
        }
    }
    Ok(out)
}

/// The counters of `right`'s range from a prepared tally: its base plus
/// the accumulators now. `None` (the apply then counts) when the tally is
/// not for the split prepared now, or does not add up to counters the
/// parent holds; the latter is logged, as counters and data disagree.
fn from_tally(
    ov: &Overlay,
    parent: u64,
    at: u64,
    t: &SplitTally,
) -> Result<Option<Vec<(String, u64)>>, StorageError> {
    if prepared(ov, parent)? != Some((at, t.generation)) {
        return Ok(None);
    }
    let mut sums = t.base.clone();
    for (name, a) in accumulators(ov, parent)? {
        let b = sums.entry(name).or_insert(0);
        *b = b.saturating_add(a);
    }
    let mut out = Vec::with_capacity(sums.len());
    for (name, n) in sums {
        let held = ov.get_u64(&meta_key(parent, &name))?;
        match u64::try_from(n) {
            Ok(n) if n <= held => out.push((name, n)),
            _ => {
                tracing::error!(
                    group = parent, counter = %name, tally = n, held,
                    "a prepared split tally does not match the group's counters; counting in the apply"
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(out))
}

/// Moves the counters of `right`'s range from `parent` to the child, as a
/// prepared tally says or else counted here, and ends the prepared
/// split's accumulators.
fn move_counters(
    ov: &mut Overlay,
    parent: u64,
    right: Span,
    index_partition: bool,
    prepared_tally: Option<&SplitTally>,
) -> Result<(), StorageError> {
    let counted = match prepared_tally {
        Some(t) => from_tally(ov, parent, right.lo, t)?,
        None => None,
    };
    let counters = match counted {
        Some(c) => c,
        None => range_counters(ov, right, index_partition)?,
    };
    for (name, n) in counters {
        // The child always holds `count` and `bytes`; a local index's only
        // where it holds something (its entries and bytes come in pairs).
        if n == 0 && name.starts_with("lsi") {
            continue;
        }
        move_counter(ov, parent, right.group, &name, n)?;
    }
    clear_accumulators(ov, parent)
}

fn move_counter(
    ov: &mut Overlay,
    parent: u64,
    child: u64,
    name: &str,
    n: u64,
) -> Result<(), StorageError> {
    let delta = i64::try_from(n)
        .map_err(|_| StorageError::Corrupt(format!("{name} of {n} in one split half")))?;
    ov.add_i64(meta_key(parent, name), -delta)?;
    ov.put(meta_key(child, name), n.to_be_bytes().to_vec());
    Ok(())
}

/// The parent's metadata values whose name is `name` or starts with one of
/// the copied prefixes.
fn copy_meta(ov: &mut Overlay, parent: u64, child: u64) -> Result<(), StorageError> {
    let head = meta_key(parent, "");
    let mut copies = Vec::new();
    ov.for_each_in(&head, successor(head.clone()).as_deref(), |k, v| {
        let name = k.get(head.len()..).unwrap_or_default();
        let name = String::from_utf8_lossy(name);
        if COPIED_META.contains(&name.as_ref())
            || COPIED_META_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            copies.push((name.into_owned(), v.to_vec()));
        }
        Ok(true)
    })?;
    for (name, v) in copies {
        ov.put(meta_key(child, &name), v);
    }
    Ok(())
}

/// The child's change log: empty, numbered after the parent's.
fn start_change_log(ov: &mut Overlay, parent: u64, child: u64) -> Result<u64, StorageError> {
    let seq = ov.get_u64(&meta_key(parent, "cl_seq"))?;
    let ts = ov.get_u64(&meta_key(parent, "cl_ts"))?;
    for (name, v) in [
        ("cl_seq", seq),
        ("cl_trim", seq),
        ("cl_floor", seq),
        ("cl_ts", ts),
        (SPLIT_SEQ, seq),
    ] {
        ov.put(meta_key(child, name), v.to_be_bytes().to_vec());
    }
    Ok(seq)
}

/// Running backfills: see the module docs.
fn split_backfills(ov: &mut Overlay, parent: u64, child: u64, at: u64) -> Result<(), StorageError> {
    let head = meta_key(parent, "bf:");
    let mut running = Vec::new();
    ov.for_each_in(&head, successor(head.clone()).as_deref(), |k, v| {
        let id = k.get(head.len()..).unwrap_or_default().to_vec();
        running.push((String::from_utf8_lossy(&id).into_owned(), v.to_vec()));
        Ok(true)
    })?;
    for (id, resume) in running {
        let passed = !resume.is_empty() && key_hash(&resume) >= at;
        if passed {
            ov.del(meta_key(parent, &format!("bf:{id}")));
            ov.put(meta_key(parent, &format!("bfdone:{id}")), vec![1]);
            ov.put(meta_key(child, &format!("bf:{id}")), resume);
        } else {
            ov.put(meta_key(child, &format!("bf:{id}")), Vec::new());
        }
    }
    Ok(())
}

/// An index partition's versions of base items whose entry `right` now
/// holds move to the child; tombstones are copied.
fn split_versions(ov: &mut Overlay, parent: u64, right: Span) -> Result<(), StorageError> {
    let mut moves = Vec::new();
    let (lo, hi) = global::versions_range(parent);
    ov.for_each_in(&lo, hi.as_deref(), |k, v| {
        let base = k.get(lo.len()..).unwrap_or_default().to_vec();
        let entry = v.get(8..).unwrap_or_default();
        let tombstone = entry.is_empty();
        if tombstone || right.owns(entry) {
            moves.push((base, v.to_vec(), tombstone));
        }
        Ok(true)
    })?;
    for (base, v, tombstone) in moves {
        if !tombstone {
            ov.del(global::version_key(parent, &base));
        }
        ov.put(global::version_key(right.group, &base), v);
    }
    Ok(())
}

/// Where to split the group `sp` describes so that each half holds about
/// half its stored bytes: the hash of the first item (an index
/// partition's: entry) past the middle. Items of one partition-key value
/// share their hash, so no item collection is ever cut. `None` when no
/// hash inside the range can split it (every item has the same hash: one
/// hot partition key, which a split cannot help).
pub fn split_point(
    tree: &crate::kv::Store,
    sp: Span,
    index_partition: bool,
) -> Result<Option<u64>, StorageError> {
    let head: &[u8] = if index_partition {
        &[LOCAL_INDEX, GLOBAL_ENTRY_ID]
    } else {
        &[ITEMS]
    };
    let (lo, hi) = sp.hash_range(head);
    let ov = Overlay::new(tree);
    let mut total = 0u64;
    ov.for_each_in(&lo, hi.as_deref(), |_, v| {
        total += v.len() as u64;
        Ok(true)
    })?;
    let (mut seen, mut first, mut point) = (0u64, None, None);
    ov.for_each_in(&lo, hi.as_deref(), |k, v| {
        let hash = key_hash(k.get(lo.len() - 8..).unwrap_or_default());
        let first = *first.get_or_insert(hash);
        seen += v.len() as u64;
        if hash > first && seen * 2 >= total {
            point = Some(hash);
            return Ok(false);
        }
        Ok(true)
    })?;
    // Any hash after the first is reached with at least half the bytes
    // seen, so `None` means one hash holds everything.
    Ok(point.filter(|p| sp.owns_hash(*p) && *p > sp.lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Projection;
    use crate::command::{Command, Entry, WriteCommand};
    use crate::index::{LocalIndexSpec, LocalIndexes, index_stats};
    use crate::kv::Store;
    use crate::machine::{self, group_stats};
    use crate::read::{ReadOptions, read_range};
    use crate::txn::tests::put;
    use dynaraft_model::{Item, KeyAttr, KeySchema, ScalarType};

    const PARENT: u64 = 5;
    const CHILD: u64 = 9;
    const AT: u64 = 1 << 63;

    fn schema() -> KeySchema {
        KeySchema::simple(
            KeyAttr {
                name: "k".into(),
                ty: ScalarType::S,
            },
            None,
        )
    }

    /// A logged put of item `k{i}` with a local index on `n`, keyed by its
    /// real storage key (hash first).
    fn write(i: u32) -> Command {
        write_n(i, i64::from(i))
    }

    /// [`write`] with `n` = `n` (a local index entry of another size).
    fn write_n(i: u32, n: i64) -> Command {
        let key = format!("k{i}");
        let mut w: WriteCommand = put(&key, n, None);
        let item = w.item.as_ref().unwrap().item().unwrap();
        w.storage_key = schema().storage_key(&item).unwrap();
        w.stream = true;
        w.local = Some(LocalIndexes {
            table: schema(),
            indexes: vec![LocalIndexSpec {
                name: "by_n".into(),
                sort: KeyAttr {
                    name: "n".into(),
                    ty: ScalarType::N,
                },
                projection: Projection::All,
            }],
            collection_limit_bytes: u64::MAX,
        });
        Command::Write(w)
    }

    /// A logged delete of item `k{i}`.
    fn delete(i: u32) -> Command {
        let Command::Write(mut w) = write(i) else {
            unreachable!()
        };
        w.kind = crate::command::WriteKind::Delete;
        w.item = None;
        Command::Write(w)
    }

    fn hash_of(cmd: &Command) -> u64 {
        match cmd {
            Command::Write(w) => key_hash(&w.storage_key),
            _ => unreachable!(),
        }
    }

    fn run(ov: &mut Overlay, sp: Span, cmd: Command) -> Outcome {
        machine::apply(ov, sp, &Entry { ts_ms: 1, cmd }).unwrap()
    }

    fn split(index_partition: bool) -> Command {
        Command::Split {
            at: AT,
            child: CHILD,
            index_partition,
            tally: None,
        }
    }

    fn everything(tree: &Store, sp: Span) -> Vec<Item> {
        let opts = ReadOptions {
            forward: true,
            start_after: None,
            limit: None,
            max_bytes: usize::MAX,
        };
        read_range(tree, sp, &schema(), None, (&[], None), &opts)
            .unwrap()
            .items
    }

    /// The parent keeps `[0, AT)`, the child gets `[AT, MAX]` of the same
    /// space: each reads exactly its items, the counters add up to the
    /// parent's before, writes staged in the same batch as the split are
    /// counted, and keys outside a group's range are refused.
    #[test]
    fn a_split_hands_the_upper_range_and_its_counters_to_the_child() {
        let tree = Store::temporary().unwrap();
        let whole = Span::whole(PARENT);
        let mut ov = Overlay::new(&tree);
        for i in 0..200 {
            assert!(matches!(
                run(&mut ov, whole, write(i)),
                Outcome::Written { .. }
            ));
        }
        ov.commit(PARENT, 200).unwrap();
        let before = group_stats(&tree, PARENT).unwrap();
        let lsi_before = index_stats(&tree, PARENT, 0).unwrap();
        let mut ov = Overlay::new(&tree);
        // Staged in the same batch, ahead of the split.
        run(&mut ov, whole, write(200));
        // The split answers the parent's last logged sequence: 201 writes.
        assert!(matches!(
            run(&mut ov, whole, split(false)),
            Outcome::Sequence(201)
        ));
        ov.commit(PARENT, 202).unwrap();

        let left = Span::load(&tree, PARENT).unwrap();
        let right = Span::load(&tree, CHILD).unwrap();
        assert_eq!(
            left,
            Span {
                hi: Some(AT),
                ..whole
            }
        );
        assert_eq!(
            right,
            Span {
                group: CHILD,
                space: PARENT,
                lo: AT,
                hi: None
            }
        );
        let (lows, highs): (Vec<u32>, Vec<u32>) = (0..=200).partition(|i| hash_of(&write(*i)) < AT);
        assert!(!lows.is_empty() && !highs.is_empty());
        let (l, r) = (everything(&tree, left), everything(&tree, right));
        assert_eq!((l.len(), r.len()), (lows.len(), highs.len()));
        let size = |items: &[Item]| items.iter().map(|i| item_size_bytes(i) as u64).sum::<u64>();
        assert_eq!(
            group_stats(&tree, PARENT).unwrap(),
            (l.len() as u64, size(&l))
        );
        assert_eq!(
            group_stats(&tree, CHILD).unwrap(),
            (r.len() as u64, size(&r))
        );
        assert_eq!(before.0 + 1, (l.len() + r.len()) as u64);
        let (lp, lc) = (
            index_stats(&tree, PARENT, 0).unwrap(),
            index_stats(&tree, CHILD, 0).unwrap(),
        );
        assert_eq!(lp.0 + lc.0, lsi_before.0 + 1);
        assert_eq!(lc.0, r.len() as u64);
        // The child's change log is numbered after the parent's.
        let (pseq, _) = global::change_log_state(&tree, PARENT).unwrap();
        assert_eq!(
            global::change_log_state(&tree, CHILD).unwrap(),
            (pseq, pseq)
        );
        // A range routed on the old map is refused, not half answered.
        let opts = ReadOptions {
            forward: true,
            start_after: None,
            limit: None,
            max_bytes: 1 << 20,
        };
        let old = (&0u64.to_be_bytes()[..], None);
        assert!(matches!(
            read_range(&tree, left, &schema(), None, old, &opts),
            Err(StorageError::WrongRange(_))
        ));
        // Writes go only to the owner; a refused one writes nothing.
        let high = write(highs[0]);
        let mut ov = Overlay::new(&tree);
        assert!(matches!(
            run(&mut ov, left, high.clone()),
            Outcome::WrongRange(_)
        ));
        assert!(matches!(run(&mut ov, right, high), Outcome::Written { .. }));
        // Applying the split again changes nothing and answers the same
        // sequence; a bad one is refused.
        assert!(matches!(
            run(&mut ov, left, split(false)),
            Outcome::Sequence(201)
        ));
        let outside = Command::Split {
            at: AT + 1,
            child: 11,
            index_partition: false,
            tally: None,
        };
        assert!(matches!(run(&mut ov, left, outside), Outcome::Invalid(_)));
        let taken = Command::Split {
            at: 1 << 62,
            child: CHILD,
            index_partition: false,
            tally: None,
        };
        assert!(matches!(run(&mut ov, left, taken), Outcome::Invalid(_)));
        ov.commit(PARENT, 205).unwrap();
        assert_eq!(Span::load(&tree, PARENT).unwrap(), left);
        // The two spans never share a key, and between them hold every
        // key either group had.
        let keys = |sp: Span| -> Vec<Vec<u8>> {
            crate::span::scan(&tree, &sp)
                .map(|kv| kv.unwrap().0.to_vec())
                .collect()
        };
        let (kl, kr) = (keys(left), keys(right));
        assert!(kl.iter().all(|k| !kr.contains(k)));
        let all = tree.range::<Vec<u8>, _>(..).count();
        assert_eq!(kl.len() + kr.len(), all);
    }

    /// A transaction record moves with its anchor's hash.
    /// Every counter of the group, by name (what `range_counters` names).
    fn counters(tree: &Store, group: u64) -> BTreeMap<String, u64> {
        let (count, bytes) = group_stats(tree, group).unwrap();
        let (lc, lb) = index_stats(tree, group, 0).unwrap();
        BTreeMap::from([
            ("count".to_string(), count),
            ("bytes".into(), bytes),
            ("lsi0:count".into(), lc),
            ("lsi0:bytes".into(), lb),
        ])
    }

    /// A split that carries a tally made on a snapshot after its prepare
    /// gives both halves the counters the in-apply count gives, although
    /// writes changed the upper range between the snapshot and the split
    /// (puts, updates to another size, deletes of items from before the
    /// prepare), and some landed in the prepare's own batch.
    #[test]
    fn a_prepared_tally_plus_the_writes_since_is_the_count_at_the_split() {
        let run_all = |tallied: bool| {
            let tree = Store::temporary().unwrap();
            let whole = Span::whole(PARENT);
            let mut ov = Overlay::new(&tree);
            for i in 0..200 {
                run(&mut ov, whole, write(i));
            }
            ov.commit(PARENT, 200).unwrap();
            let mut ov = Overlay::new(&tree);
            run(&mut ov, whole, write(0));
            let prepare = Command::PrepareSplit { at: AT };
            assert!(matches!(run(&mut ov, whole, prepare), Outcome::Done));
            run(&mut ov, whole, write(200));
            run(&mut ov, whole, delete(1));
            ov.commit(PARENT, 204).unwrap();
            let tally = prepared_tally(&tree, PARENT, AT, false).unwrap();
            assert!(tally.is_some(), "fjall has snapshots");
            let mut ov = Overlay::new(&tree);
            for i in 0..40 {
                run(&mut ov, whole, write_n(i, 1_000_000 + i64::from(i)));
            }
            for i in 40..70 {
                run(&mut ov, whole, delete(i));
            }
            for i in 201..230 {
                run(&mut ov, whole, write(i));
            }
            ov.commit(PARENT, 300).unwrap();
            let mut ov = Overlay::new(&tree);
            let t = tally.filter(|_| tallied);
            if let Some(t) = &t {
                // The tally and the accumulators give what a count gives.
                let right = Span { lo: AT, ..whole };
                let from = from_tally(&ov, PARENT, AT, t)
                    .unwrap()
                    .expect("tally matches");
                let counted = range_counters(&ov, right, false).unwrap();
                assert_eq!(
                    from.into_iter().collect::<BTreeMap<_, _>>(),
                    counted.into_iter().collect()
                );
            }
            let cmd = Command::Split {
                at: AT,
                child: CHILD,
                index_partition: false,
                tally: t,
            };
            assert!(matches!(run(&mut ov, whole, cmd), Outcome::Sequence(_)));
            // Nothing is accumulated after the split.
            assert!(accumulators(&ov, PARENT).unwrap().is_empty());
            ov.commit(PARENT, 301).unwrap();
            (counters(&tree, PARENT), counters(&tree, CHILD))
        };
        let counted = run_all(false);
        assert_eq!(run_all(true), counted);
        assert!(counted.1["count"] > 0 && counted.1["lsi0:bytes"] > 0);
    }

    /// A tally is used only for the split prepared now: a prepare at the
    /// same point again keeps it good, one at another point makes it stale
    /// (a new generation), and one that does not add up to the parent's
    /// counters is not used; the apply then counts, with the same result.
    #[test]
    fn a_stale_or_impossible_tally_is_not_used() {
        let tree = Store::temporary().unwrap();
        let whole = Span::whole(PARENT);
        let mut ov = Overlay::new(&tree);
        for i in 0..100 {
            run(&mut ov, whole, write(i));
        }
        run(&mut ov, whole, Command::PrepareSplit { at: AT });
        ov.commit(PARENT, 101).unwrap();
        let t = prepared_tally(&tree, PARENT, AT, false).unwrap().unwrap();
        assert_eq!(prepared_tally(&tree, PARENT, AT + 1, false).unwrap(), None);
        let mut ov = Overlay::new(&tree);
        run(&mut ov, whole, Command::PrepareSplit { at: AT });
        assert!(from_tally(&ov, PARENT, AT, &t).unwrap().is_some());
        let mut bogus = t.clone();
        *bogus.base.get_mut("count").unwrap() += 1_000;
        assert_eq!(from_tally(&ov, PARENT, AT, &bogus).unwrap(), None);
        run(&mut ov, whole, Command::PrepareSplit { at: AT + 1 });
        run(&mut ov, whole, Command::PrepareSplit { at: AT });
        assert_eq!(prepared(&ov, PARENT).unwrap(), Some((AT, t.generation + 2)));
        assert_eq!(from_tally(&ov, PARENT, AT, &t).unwrap(), None);
        let outside = Command::PrepareSplit { at: 0 };
        assert!(matches!(run(&mut ov, whole, outside), Outcome::Invalid(_)));
        let right = Span { lo: AT, ..whole };
        let expected: BTreeMap<_, _> = range_counters(&ov, right, false)
            .unwrap()
            .into_iter()
            .collect();
        let cmd = Command::Split {
            at: AT,
            child: CHILD,
            index_partition: false,
            tally: Some(bogus),
        };
        assert!(matches!(run(&mut ov, whole, cmd), Outcome::Sequence(_)));
        ov.commit(PARENT, 106).unwrap();
        assert_eq!(counters(&tree, CHILD), expected);
    }

    #[test]
    fn transaction_records_follow_their_anchor() {
        use crate::txn::{Anchor, Prepare, RecordInit, record};
        let tree = Store::temporary().unwrap();
        let whole = Span::whole(PARENT);
        let mut ov = Overlay::new(&tree);
        for (txn, hash) in [(1u128, 5u64), (2, AT + 5)] {
            let p = Prepare {
                txn,
                anchor: Anchor {
                    table: "t".into(),
                    hash,
                },
                record: Some(RecordInit {
                    participants: Vec::new(),
                    token: Some(format!("tok{txn}")),
                    fingerprint: "fp".into(),
                }),
                commit_now: true,
                ops: Vec::new(),
            };
            run(&mut ov, whole, Command::TxnPrepare(Box::new(p)));
        }
        run(&mut ov, whole, split(false));
        ov.commit(PARENT, 3).unwrap();
        let ov = Overlay::new(&tree);
        assert!(record(&ov, PARENT, 1).unwrap().is_some());
        assert!(record(&ov, CHILD, 1).unwrap().is_none());
        assert!(record(&ov, PARENT, 2).unwrap().is_none());
        assert!(record(&ov, CHILD, 2).unwrap().is_some());
    }

    /// The split point halves the bytes at an item boundary of distinct
    /// hashes; one partition key's items cannot be split.
    #[test]
    fn the_split_point_halves_the_bytes_and_never_cuts_one_key() {
        let tree = Store::temporary().unwrap();
        let whole = Span::whole(PARENT);
        let mut ov = Overlay::new(&tree);
        run(&mut ov, whole, write(0));
        ov.commit(PARENT, 1).unwrap();
        assert_eq!(split_point(&tree, whole, false).unwrap(), None);
        let mut ov = Overlay::new(&tree);
        for i in 1..100 {
            run(&mut ov, whole, write(i));
        }
        ov.commit(PARENT, 2).unwrap();
        let at = split_point(&tree, whole, false).unwrap().expect("a point");
        let below = (0..100).filter(|i| hash_of(&write(*i)) < at).count();
        assert!((40..=60).contains(&below), "{below} of 100 below the point");
    }

    /// A write batch applies its writes in order up to the first one
    /// refused (nothing after it), and a batch naming a key the group no
    /// longer owns is refused whole.
    #[test]
    fn a_write_batch_stops_at_its_first_refusal_and_respects_the_range() {
        let tree = Store::temporary().unwrap();
        let whole = Span::whole(PARENT);
        let w = |i| match write(i) {
            Command::Write(w) => w,
            _ => unreachable!(),
        };
        let mut ov = Overlay::new(&tree);
        let batch = Command::WriteBatch(vec![w(1), w(2)]);
        assert!(matches!(
            run(&mut ov, whole, batch),
            Outcome::Batched { written: 2 }
        ));
        let mut refused = w(2);
        refused.condition = Some("attribute_not_exists(k)".into());
        let batch = Command::WriteBatch(vec![w(3), refused, w(4)]);
        assert!(matches!(
            run(&mut ov, whole, batch),
            Outcome::Batched { written: 1 }
        ));
        ov.commit(PARENT, 2).unwrap();
        let mut ns: Vec<String> = everything(&tree, whole)
            .iter()
            .map(|i| format!("{:?}", i.get("n")))
            .collect();
        ns.sort();
        assert_eq!(ns.len(), 3, "items 1, 2 and 3, not 4: {ns:?}");
        assert_eq!(group_stats(&tree, PARENT).unwrap().0, 3);

        let mut ov = Overlay::new(&tree);
        assert!(matches!(
            run(&mut ov, whole, split(false)),
            Outcome::Sequence(_)
        ));
        ov.commit(PARENT, 3).unwrap();
        let left = Span::load(&tree, PARENT).unwrap();
        let (below, above): (Vec<u32>, Vec<u32>) = (10..40).partition(|i| hash_of(&write(*i)) < AT);
        let (Some(b), Some(a)) = (below.first(), above.first()) else {
            panic!("30 keys all on one side of the split");
        };
        let held = everything(&tree, left);
        let mut ov = Overlay::new(&tree);
        let batch = Command::WriteBatch(vec![w(*b), w(*a)]);
        assert!(matches!(run(&mut ov, left, batch), Outcome::WrongRange(_)));
        ov.commit(PARENT, 4).unwrap();
        assert_eq!(
            everything(&tree, left),
            held,
            "nothing of the refused batch"
        );
    }
}
