//! The deterministic state machine: `apply(entry) -> outcome`.
//!
//! All state lives in one tree of the node's store, shared by its groups
//! (never a tree per group). Keys that follow an item (items, index
//! entries, intents, stamps) start with the group's key space and the
//! item's hash, so that a split changes which group owns a hash range and
//! moves no bytes; the rest start with the group (see `span`):
//!
//! ```text
//! [group u64 BE] 0x00 [name]        group metadata: applied index, item count, bytes, span
//! [space u64 BE] 0x01 [storage key] items (binary item codec)
//! [0]            0x02 [table name]  catalog: TableMeta as JSON
//! [0]            0x03 [node id BE]  catalog: NodeRecord as JSON
//! [space u64 BE] 0x04, 0x05         local secondary index entries, item collections (see `index`)
//! [group u64 BE] 0x06, 0x07         global index versions, change log (see `global`)
//! [space u64 BE] 0x08, 0x0B         transaction intents, item stamps (see `txn`)
//! [group u64 BE] 0x09, 0x0A, 0x0C, 0x0D  transaction records, tokens, time indexes (see `txn`)
//! ```
//!
//! A batch of entries is applied through an [`Overlay`] (so later entries
//! see earlier ones) and committed as one sled batch that also records the
//! applied index. Apply never reads a clock or a random source: time comes
//! from the entry. Validation failures and failed conditions are outcomes;
//! only sled I/O errors are errors, and they are fatal.

use crate::StorageError;
use crate::catalog::TableMeta;
use crate::command::{Command, Entry, JsonDoc, WriteCommand, WriteKind};
use crate::global::{self, Change};
use crate::index;
use crate::kv::Store;
use crate::span::{self, Span};
use crate::txn;
use dynaraft_expr::{ExprKind, Substitutions, UpdateError, parse_condition, parse_update};
use dynaraft_model::codec::{decode_item, encode_item};
use dynaraft_model::value::item_size_bytes;
use dynaraft_model::{Item, MAX_ITEM_BYTES};
use std::collections::BTreeMap;

pub const CATALOG_GROUP: u64 = 0;
const META: u8 = 0x00;
pub(crate) const ITEMS: u8 = 0x01;
const TABLES: u8 = 0x02;
const NODES: u8 = 0x03;
/// The control plane's users (`catalog::UserRecord`), by access key id.
const USERS: u8 = 0x0E;
/// Exports and imports (`jobs::Job`), by ARN.
const JOBS: u8 = 0x10;

pub fn meta_key(group: u64, name: &str) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(META);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `[space][0x01][storage key]`: where an item of key space `space` lives.
pub fn item_key(space: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + storage_key.len());
    k.extend_from_slice(&space.to_be_bytes());
    k.push(ITEMS);
    k.extend_from_slice(storage_key);
    k
}

pub fn items_prefix(space: u64) -> Vec<u8> {
    item_key(space, &[])
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

pub fn user_key(access_key_id: &str) -> Vec<u8> {
    let mut k = users_prefix();
    k.extend_from_slice(access_key_id.as_bytes());
    k
}

pub fn users_prefix() -> Vec<u8> {
    let mut k = CATALOG_GROUP.to_be_bytes().to_vec();
    k.push(USERS);
    k
}

pub fn job_key(arn: &str) -> Vec<u8> {
    let mut k = jobs_prefix();
    k.extend_from_slice(arn.as_bytes());
    k
}

pub fn jobs_prefix() -> Vec<u8> {
    let mut k = CATALOG_GROUP.to_be_bytes().to_vec();
    k.push(JOBS);
    k
}

pub fn nodes_prefix() -> Vec<u8> {
    let mut k = CATALOG_GROUP.to_be_bytes().to_vec();
    k.push(NODES);
    k
}

/// A stored u64 counter: 0 when it was never written; anything but eight
/// bytes is corruption, not zero.
pub(crate) fn u64_of(key: &[u8], v: Option<&[u8]>) -> Result<u64, StorageError> {
    match v {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b).map(u64::from_be_bytes).map_err(|_| {
            StorageError::Corrupt(format!("counter {key:?} holds {} bytes, not 8", b.len()))
        }),
    }
}

/// The u64 counter stored at `key` (0 when absent).
pub(crate) fn read_u64(tree: &Store, key: &[u8]) -> Result<u64, StorageError> {
    u64_of(key, tree.get(key)?.as_deref())
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
    /// A single-item write met a transaction's intent on its item; nothing
    /// was written (TransactionConflictException, unless the transaction
    /// is recovered).
    TxnConflict(Box<txn::IntentView>),
    /// A partition's share of a transaction: the items that stop it, in
    /// request order (none: prepared, or committed for `commit_now`).
    TxnPrepared(Vec<(u32, txn::Failure)>),
    /// The request's ClientRequestToken belongs to an earlier, identical
    /// transaction in this state (committed or still running).
    TxnDuplicate(txn::TxnState),
    /// The request's ClientRequestToken belongs to a different request.
    TxnMismatch,
    /// A transaction's decision.
    TxnState(txn::TxnState),
    /// The command names a key the group no longer owns (it split after
    /// the command was routed); nothing was written: refresh the map and
    /// retry.
    WrongRange(String),
    /// The table has deletion protection: it is neither deleted nor set
    /// DELETING, whoever asks.
    DeletionProtected,
    /// A replicated write older than the item's version (last writer
    /// wins): nothing was written.
    Superseded,
    /// A change-log sequence number (`StartReplication`: the peer's cursor).
    Sequence(u64),
    /// How many writes of a `WriteBatch`, from its first, were written;
    /// the one after them was refused, and the rest were not tried.
    Batched {
        written: usize,
    },
}

/// Pending writes of a batch over the tree.
pub struct Overlay<'a> {
    tree: &'a Store,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What the store held at the keys read with [`Overlay::get_setting`]:
    /// a group's settings, which every write of a batch looks up.
    settings: std::cell::RefCell<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a Store) -> Overlay<'a> {
        Overlay {
            tree,
            pending: BTreeMap::new(),
            settings: Default::default(),
        }
    }

    pub(crate) fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.pending.get(k) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(k)?.map(|v| v.to_vec()))
    }

    /// [`Overlay::get`] for a key of this group's metadata that every write
    /// reads (whether a global index feeds from it, its region, its backup
    /// pins): the store is read once per batch. A group's settings change
    /// in the store only when a batch that staged them is committed: the
    /// group's own (this overlay's, after the batch) or, for a split
    /// child's, its parent's split, committed before the child's group
    /// exists (`split::apply` refuses a child that holds anything). A
    /// write staged in this batch is still seen first.
    pub(crate) fn get_setting(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.pending.get(k) {
            return Ok(v.clone());
        }
        if let Some(v) = self.settings.borrow().get(k) {
            return Ok(v.clone());
        }
        let v = self.tree.get(k)?.map(|v| v.to_vec());
        self.settings.borrow_mut().insert(k.to_vec(), v.clone());
        Ok(v)
    }

    pub(crate) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.pending.insert(k, Some(v));
    }

    pub(crate) fn del(&mut self, k: Vec<u8>) {
        self.pending.insert(k, None);
    }

    pub(crate) fn get_u64(&self, k: &[u8]) -> Result<u64, StorageError> {
        u64_of(k, self.get(k)?.as_deref())
    }

    /// Adds `delta` to the counter at `k`. A counter that would go below
    /// zero (or past u64) means the counts and the data disagree: that is
    /// corruption, reported, never clamped.
    pub(crate) fn add_i64(&mut self, k: Vec<u8>, delta: i64) -> Result<(), StorageError> {
        let old = self.get_u64(&k)?;
        let v = old.checked_add_signed(delta).ok_or_else(|| {
            StorageError::Corrupt(format!("counter {k:?} at {old} cannot change by {delta}"))
        })?;
        self.put(k, v.to_be_bytes().to_vec());
        Ok(())
    }

    /// The writes staged so far, to [`Overlay::restore`] if what follows
    /// must be undone (a transaction that fails part-way).
    pub(crate) fn save(&self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.pending.clone()
    }

    pub(crate) fn restore(&mut self, saved: BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        self.pending = saved;
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
    pub(crate) fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StorageError> {
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

    /// The store under the staged writes.
    pub(crate) fn tree(&self) -> &'a Store {
        self.tree
    }

    /// Calls `f` on every key in `[lo, hi)` (`hi` `None`: unbounded) with
    /// its value, in key order, staged writes included, until `f` returns
    /// `false`. Streams the store: nothing is collected.
    pub(crate) fn for_each_in(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        use std::ops::Bound;
        let bounds = (
            Bound::Included(lo.to_vec()),
            hi.map_or(Bound::Unbounded, |h| Bound::Excluded(h.to_vec())),
        );
        let mut staged = self.pending.range::<Vec<u8>, _>(bounds.clone()).peekable();
        for kv in self.tree.range::<Vec<u8>, _>(bounds) {
            let (k, v) = kv?;
            while let Some((sk, sv)) = staged.next_if(|(sk, _)| sk.as_slice() < &k[..]) {
                if let Some(sv) = sv
                    && !f(sk, sv)?
                {
                    return Ok(());
                }
            }
            let go_on = match staged.next_if(|(sk, _)| sk.as_slice() == &k[..]) {
                Some((_, Some(sv))) => f(&k, sv)?,
                Some((_, None)) => true,
                None => f(&k, &v)?,
            };
            if !go_on {
                return Ok(());
            }
        }
        for (sk, sv) in staged {
            if let Some(sv) = sv
                && !f(sk, sv)?
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes everything plus the group's applied index, atomically.
    pub fn commit(self, group: u64, applied: u64) -> Result<(), StorageError> {
        let tree = self.tree;
        let mut batch = crate::kv::Batch::default();
        crate::committer::add_writes(&mut batch, self.into_writes(group, applied));
        tree.apply(batch)?;
        Ok(())
    }

    /// Everything pending plus the group's applied index, for a
    /// [`Committer`](crate::committer::Committer) to write atomically.
    pub fn into_writes(self, group: u64, applied: u64) -> crate::committer::Writes {
        let mut writes = self.pending;
        writes.insert(
            meta_key(group, "applied"),
            Some(applied.to_be_bytes().to_vec()),
        );
        writes
    }
}

/// Most keys one [`drop_group_step`] removes: a large partition is
/// deleted in many small batches, so the node's other writes go on between
/// them (one batch of a 1 GiB partition held the store for seconds).
pub const DROP_BATCH_KEYS: usize = 4096;

/// Deletes every key `group` owns (a replica leaving this node).
pub fn drop_group(tree: &Store, group: u64) -> Result<(), StorageError> {
    let mut after = None;
    while let Some(last) = drop_group_step(tree, group, after.as_deref())? {
        after = Some(last);
    }
    Ok(())
}

/// Deletes up to [`DROP_BATCH_KEYS`] keys `group` owns, those after
/// `after` (the key the previous step returned; `None` to start), its
/// metadata (its span, applied index, pins) in the last batch, so a node
/// stopped midway still knows the group's keys and deletes the rest when
/// it removes the group again. Returns the last key it removed while keys
/// may remain, `None` once the group is gone.
///
/// Each step starts after the previous one's last key rather than at the
/// group's first: on an LSM engine (fjall) a removed key stays as a
/// tombstone until a compaction, so starting over walked every earlier
/// step's tombstones again, quadratic in the group's size.
pub fn drop_group_step(
    tree: &Store,
    group: u64,
    after: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, StorageError> {
    let meta = meta_key(group, "");
    // In key order, so that the next step can resume after this one's
    // last key.
    let ranges = span::ranges_after(span::held_ranges(tree, group)?, after);
    let mut batch = crate::kv::Batch::default();
    let mut removed = 0;
    for kv in span::scan_ranges(tree, ranges) {
        let (k, _) = kv?;
        if k.starts_with(&meta) {
            continue;
        }
        batch.remove(k.to_vec());
        removed += 1;
        if removed == DROP_BATCH_KEYS {
            let last = k.to_vec();
            tree.apply(batch)?;
            return Ok(Some(last));
        }
    }
    // The metadata last, wherever the steps before stopped.
    for kv in tree.scan_prefix(&meta) {
        batch.remove(kv?.0.to_vec());
    }
    tree.apply(batch)?;
    Ok(None)
}

pub fn applied_index(tree: &Store, group: u64) -> Result<u64, StorageError> {
    read_u64(tree, &meta_key(group, "applied"))
}

pub fn group_stats(tree: &Store, group: u64) -> Result<(u64, u64), StorageError> {
    Ok((
        read_u64(tree, &meta_key(group, "count"))?,
        read_u64(tree, &meta_key(group, "bytes"))?,
    ))
}

/// The item at `storage_key` in `sp`'s space (the caller checked that
/// `sp` owns it).
pub fn read_item(tree: &Store, sp: Span, storage_key: &[u8]) -> Result<Option<Item>, StorageError> {
    current_item(&Overlay::new(tree), sp, storage_key)
}

/// Applies one entry of the group `sp` describes.
pub fn apply(ov: &mut Overlay, sp: Span, entry: &Entry) -> Result<Outcome, StorageError> {
    let group = sp.group;
    if let Some(why) = foreign(sp, &entry.cmd) {
        return Ok(Outcome::WrongRange(why));
    }
    match &entry.cmd {
        Command::Write(w) => apply_write(ov, sp, w, entry.ts_ms),
        Command::WriteBatch(ws) => apply_batch(ov, sp, ws, entry.ts_ms),
        Command::Split {
            at,
            child,
            index_partition,
            tally,
        } => crate::split::apply(ov, sp, *at, *child, *index_partition, tally.as_ref()),
        Command::PrepareSplit { at } => crate::split::prepare(ov, sp, *at),
        Command::StartBackfill { index } => {
            global::start_backfill(ov, group, *index)?;
            Ok(Outcome::Done)
        }
        Command::BackfillProgress { index, next } => {
            global::backfill_progress(ov, group, *index, next.as_deref())?;
            Ok(Outcome::Done)
        }
        Command::TrimChangeLog { upto, retain } => {
            global::trim(ov, group, *upto, *retain)?;
            Ok(Outcome::Done)
        }
        Command::PurgeChangeLog { before_ms, max } => {
            global::purge(ov, group, *before_ms, *max)?;
            Ok(Outcome::Done)
        }
        Command::IndexApply(batch) => global::apply_batch(ov, sp, batch),
        Command::TxnPrepare(p) => txn::prepare(ov, sp, p, entry.ts_ms),
        Command::TxnDecide {
            txn, commit, keys, ..
        } => txn::decide(ov, sp, *txn, *commit, keys, entry.ts_ms),
        Command::TxnResolve { txn, commit, keys } => {
            txn::resolve(ov, sp, *txn, *commit, keys, entry.ts_ms)
        }
        Command::TxnFinish { txn } => txn::finish(ov, group, *txn),
        Command::TxnForget { txns } => txn::forget(ov, group, txns),
        Command::StartReplication { region, peer } => Ok(Outcome::Sequence(crate::replica::start(
            ov, group, region, peer,
        )?)),
        Command::ReplicationShipped { peer, upto, copied } => {
            crate::replica::shipped(ov, group, peer, *upto, *copied)?;
            Ok(Outcome::Done)
        }
        Command::StopReplication { peer } => {
            crate::replica::stop(ov, group, peer)?;
            Ok(Outcome::Done)
        }
        Command::PinChangeLog { holder } => crate::backup::pin(ov, group, holder, entry.ts_ms),
        Command::UnpinChangeLog { holder } => crate::backup::unpin(ov, group, holder),
        Command::AdvancePin { holder, upto } => crate::backup::advance(ov, group, holder, *upto),
        other => crate::control::apply(ov, other, entry.ts_ms),
    }
}

/// Why `cmd` names a key or hash the group does not own (it split after
/// the command was routed); `None` when it owns all of them. Refused
/// commands change nothing, and the router retries them on the new map.
fn foreign(sp: Span, cmd: &Command) -> Option<String> {
    let key = |k: &[u8]| (!sp.owns(k)).then_some(crate::catalog::key_hash(k));
    let hash = match cmd {
        Command::Write(w) => key(&w.storage_key),
        Command::WriteBatch(ws) => ws.iter().find_map(|w| key(&w.storage_key)),
        Command::TxnPrepare(p) => p
            .ops
            .iter()
            .find_map(|op| key(&op.write.storage_key))
            .or_else(|| {
                p.record
                    .as_ref()
                    .and_then(|_| (!sp.owns_hash(p.anchor.hash)).then_some(p.anchor.hash))
            }),
        Command::TxnDecide {
            keys, anchor_hash, ..
        } => keys
            .iter()
            .find_map(|k| key(k))
            .or_else(|| anchor_hash.filter(|h| !sp.owns_hash(*h))),
        Command::TxnResolve { keys, .. } => keys.iter().find_map(|k| key(k)),
        Command::IndexApply(b) => b
            .ops
            .iter()
            .find_map(|op| op.put.as_ref().and_then(|(k, _)| key(k))),
        _ => None,
    }?;
    Some(format!(
        "group {} owns hashes {:#x}..{:?}, not {hash:#x}",
        sp.group, sp.lo, sp.hi
    ))
}

fn apply_write(
    ov: &mut Overlay,
    sp: Span,
    w: &WriteCommand,
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    if let Some(intent) = txn::intent(ov, sp, &w.storage_key)? {
        return Ok(Outcome::TxnConflict(Box::new(intent.view())));
    }
    // Last writer wins: a replicated write no later than the item's
    // version (or its tombstone's) changes nothing.
    if let Some(v) = w.version()
        && crate::replica::superseded(ov, sp.space, &w.storage_key, v)?
    {
        return Ok(Outcome::Superseded);
    }
    match evaluate(ov, sp, w)? {
        Ok((old, new)) => stage(ov, sp, w, (old, new), false, ts_ms),
        Err(refused) => Ok(refused),
    }
}

/// Applies `ws` in order until one is not written (it changed nothing);
/// how many were.
fn apply_batch(
    ov: &mut Overlay,
    sp: Span,
    ws: &[WriteCommand],
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    let mut written = 0;
    for w in ws {
        if !matches!(apply_write(ov, sp, w, ts_ms)?, Outcome::Written { .. }) {
            break;
        }
        written += 1;
    }
    Ok(Outcome::Batched { written })
}

/// The item stored at `storage_key`, seeing staged writes.
pub(crate) fn current_item(
    ov: &Overlay,
    sp: Span,
    storage_key: &[u8],
) -> Result<Option<Item>, StorageError> {
    match ov.get(&item_key(sp.space, storage_key))? {
        Some(b) => Ok(Some(
            decode_item(&b).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// The item before and after a write, or why the write is refused.
pub(crate) type Evaluated = Result<(Option<Item>, Option<Item>), Outcome>;

/// Decides what `w` would do to the item now stored, staging nothing: its
/// condition, the new image (a `Check` leaves the item as it is), and every
/// check that needs no index state (sizes, index key types).
pub(crate) fn evaluate(
    ov: &Overlay,
    sp: Span,
    w: &WriteCommand,
) -> Result<Evaluated, StorageError> {
    let old = current_item(ov, sp, &w.storage_key)?;
    let values = match w.values.item() {
        Ok(v) => v,
        Err(e) => return Ok(Err(Outcome::Invalid(e.to_string()))),
    };
    // The router checked the expressions' limits before logging the write.
    let mut subs = Substitutions::new(w.names.clone(), values).unlimited();
    if let Some(src) = &w.condition {
        match parse_condition(src, ExprKind::Condition, &mut subs) {
            Ok(c) if !c.eval(old.as_ref()) => return Ok(Err(Outcome::ConditionFailed { old })),
            Ok(_) => {}
            Err(e) => return Ok(Err(Outcome::Invalid(e.to_string()))),
        }
    }
    let new = match w.kind {
        WriteKind::Delete => None,
        WriteKind::Check => old.clone(),
        WriteKind::Put => match w.item.as_ref().map(JsonDoc::item) {
            Some(Ok(item)) => Some(item),
            Some(Err(e)) => return Ok(Err(Outcome::Invalid(e.to_string()))),
            None => return Ok(Err(Outcome::Invalid("missing item".into()))),
        },
        WriteKind::Update => {
            let mut item = match &old {
                Some(o) => o.clone(),
                None => match w.key.item() {
                    Ok(k) => k,
                    Err(e) => return Ok(Err(Outcome::Invalid(e.to_string()))),
                },
            };
            // An update that only removes (REMOVE, DELETE) does not create
            // a missing item, as in DynamoDB; any other update does.
            let mut only_removes = false;
            if let Some(src) = &w.update {
                let applied = parse_update(src, &mut subs)
                    .map_err(|e| e.to_string())
                    .and_then(|u| {
                        only_removes = u.set.is_empty() && u.add.is_empty();
                        u.apply_to(&mut item, old.is_some()).map_err(|e| match e {
                            UpdateError::IncorrectType if w.legacy_update => {
                                "Type mismatch for attribute to update".to_string()
                            }
                            e => e.to_string(),
                        })
                    });
                if let Err(e) = applied {
                    return Ok(Err(Outcome::Invalid(e)));
                }
            }
            if item_size_bytes(&item) > MAX_ITEM_BYTES {
                return Ok(Err(Outcome::Invalid(
                    "Item size to update has exceeded the maximum allowed size".into(),
                )));
            }
            (old.is_some() || !only_removes).then_some(item)
        }
    };
    let invalid = new.as_ref().and_then(|n| {
        global::invalid_global_key(&w.global, n).or_else(|| {
            w.local
                .as_ref()
                .and_then(|l| index::invalid_index_key(l, n))
        })
    });
    if let Some(msg) = invalid {
        return Ok(Err(Outcome::Invalid(msg)));
    }
    Ok(Ok((old, new)))
}

/// Stages a decided write of `w`'s item from `old` to `new`: local index
/// entries, the change record (for global indexes and the stream), the
/// item, the group's counters and the item's stamp. `forced` (a
/// transaction's commit, whose limits were checked when it prepared) skips
/// index back-pressure and the item collection limit, because a decided
/// commit may not be refused. `ts_ms` is the proposing leader's clock.
pub(crate) fn stage(
    ov: &mut Overlay,
    sp: Span,
    w: &WriteCommand,
    (old, new): (Option<Item>, Option<Item>),
    forced: bool,
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    let group = sp.group;
    let old_size = old.as_ref().map_or(0, item_size_bytes) as i64;
    let new_size = new.as_ref().map_or(0, item_size_bytes) as i64;
    // Checked before anything is staged: a refused write writes nothing.
    // Indexes need the record, and hold writes back when they lag; a
    // stream needs it too, but its retention never holds a write back.
    let changed = old != new;
    let indexed = changed && (!w.global.is_empty() || global::feeding(ov, group)?);
    // A global table's partition versions and logs every write.
    let region = match w.region() {
        Some(r) => Some(r.to_string()),
        None => crate::replica::local_region(ov, group)?,
    };
    // A local write of a global table's partition that changes nothing
    // here still happened later than what is here: it is versioned and
    // shipped (`Origin::Unchanged`), so that an older write on its way from
    // another region loses to it.
    let unchanged_global =
        !changed && region.is_some() && w.version().is_none() && w.kind != WriteKind::Check;
    // A backup copying the partition needs every change after its pin.
    let logged = unchanged_global
        || changed
            && (indexed || w.stream || region.is_some() || crate::backup::pinned(ov, group)?);
    if logged && indexed && !forced && global::lagging(ov, group)? {
        return Ok(Outcome::IndexLagging);
    }
    let mut collection_bytes = None;
    if let Some(local) = &w.local {
        let old_side = (old.as_ref(), old_size as usize);
        let new_side = (new.as_ref(), new_size as usize);
        let unlimited;
        let local = if forced {
            unlimited = index::LocalIndexes {
                collection_limit_bytes: u64::MAX,
                ..local.clone()
            };
            &unlimited
        } else {
            local
        };
        match index::maintain(ov, sp, local, old_side, new_side)? {
            index::Maintained::TooLarge => return Ok(Outcome::CollectionTooLarge),
            index::Maintained::Collection(bytes) => collection_bytes = Some(bytes),
        }
    }
    let new_bytes = new.as_ref().map(encode_item);
    // Every write of a replicating partition records its version.
    let version = match &region {
        Some(r) if changed || w.version().is_some() || unchanged_global => {
            Some(crate::replica::stamp(
                ov,
                sp.space,
                &w.storage_key,
                w.version(),
                r,
                ts_ms,
                new.is_none(),
            )?)
        }
        _ => None,
    };
    if logged {
        // An unchanged delete has no image: its record holds the key.
        let old_bytes = match (&old, unchanged_global) {
            (None, true) => match w.key.item() {
                Ok(k) => Some(encode_item(&k)),
                Err(e) => return Ok(Outcome::Invalid(e.to_string())),
            },
            _ => old.as_ref().map(encode_item),
        };
        let change = Change {
            storage_key: &w.storage_key,
            old: old_bytes.as_deref(),
            new: new_bytes.as_deref(),
            ts_ms,
            origin: if unchanged_global {
                global::Origin::Unchanged
            } else {
                w.origin
            },
            version: version.as_ref(),
        };
        global::log_change(ov, group, change)?;
    }
    if old != new {
        txn::stamp(ov, sp, &w.storage_key, new.is_some())?;
    }
    let key = item_key(sp.space, &w.storage_key);
    match new_bytes {
        Some(bytes) => ov.put(key, bytes),
        None => ov.del(key),
    }
    let count_delta = new.is_some() as i64 - old.is_some() as i64;
    crate::split::count(
        ov,
        group,
        crate::catalog::key_hash(&w.storage_key),
        ("count", "bytes"),
        (count_delta, new_size - old_size),
    )?;
    Ok(Outcome::Written {
        old,
        new,
        collection_bytes,
    })
}
