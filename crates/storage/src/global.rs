//! Global secondary indexes: the base partition's change log, backfill
//! state, and the index partitions' apply.
//!
//! A GSI is partitioned like a table, by the hash of its own partition key;
//! each of its partitions is a Raft group of its own. Base partitions feed
//! them asynchronously (the feeder lives in `dynaraft-cluster`):
//!
//! ```text
//! base group:
//! [group] 0x07 [seq u64 BE]       change record: storage key, old and new image
//! [group] 0x00 "cl_seq"           last sequence number assigned
//! [group] 0x00 "cl_trim"          every record up to here was delivered and removed
//! [group] 0x00 "feeding"          set once a backfill began: log every write
//! [group] 0x00 "bf:{id}"          backfill of index `id` running: resume key
//! [group] 0x00 "bfdone:{id}"      backfill of index `id` finished here
//! index group:
//! [space] 0x04 0x00 [entry key]   an entry (as for local indexes, id 0)
//! [group] 0x06 [base storage key] version: seq u64 BE, then the entry key
//!                                 (none: a tombstone)
//! [group] 0x00 "src:{group}"      highest change sequence applied from a source
//! [group] 0x00 "closed:{group}"   that source's backfill finished
//! ```
//!
//! A write is logged when its command says the table has global indexes
//! (`WriteCommand::global`) or when the group is `feeding`. The log is
//! bounded: a write finding [`MAX_INDEX_LAG_RECORDS`] undelivered records is
//! refused ([`crate::Outcome::IndexLagging`]) and retried by the router, so
//! index lag is bounded by back-pressure on the base table.
//!
//! Idempotence and order: each index group keeps, per source, the highest
//! change sequence it applied (records arrive in order per source, and a
//! resend after a feeder restart is skipped), and per base item the
//! sequence its state reflects. A backfill message carries the source's
//! sequence read *before* its items were read, so it never claims to be
//! newer than it is: a change it may have missed has a larger sequence and
//! is still applied after it; a change it already reflects is skipped.
//! Deletes leave a tombstone while backfill messages may still arrive, so
//! a late backfill of a deleted item is skipped too.

use crate::StorageError;
use crate::index::{INDEX_ENTRY_OVERHEAD_BYTES, entry_key};
use crate::kv::Store;
use crate::machine::{Outcome, Overlay, meta_key};
use crate::replica::Version;
use dynaraft_model::codec::{decode_item, encode_item};
use dynaraft_model::value::item_size_bytes;
use dynaraft_model::{Item, KeySchema};
use serde::{Deserialize, Serialize};

const VERSIONS: u8 = 0x06;
const CHANGE_LOG: u8 = 0x07;
/// The entry id global index entries use in their group (one index per group).
pub const GLOBAL_ENTRY_ID: u8 = 0;
/// Most undelivered change records a base partition holds before it refuses
/// writes (the back-pressure bound on index lag), in records.
pub const MAX_INDEX_LAG_RECORDS: u64 = 10_000;

/// A global index's name and key, as a write command carries them to check
/// the types of index key attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalKeySpec {
    pub name: String,
    pub schema: KeySchema,
}

/// DynamoDB's message for the first global index key of `item` with the
/// wrong type, an empty value or too many bytes.
pub fn invalid_global_key(global: &[GlobalKeySpec], item: &Item) -> Option<String> {
    global.iter().find_map(|g| {
        g.schema
            .key_attrs()
            .find_map(|ka| crate::index::invalid_key_value(&g.name, ka, item))
            .or_else(|| crate::index::oversized_index_key(&g.schema, item))
    })
}

/// Who made a logged change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A client's write (an item operation or a transaction).
    #[default]
    Client,
    /// Time to Live deleting an expired item.
    Ttl,
    /// A write replicated from another region (a global table): shipped
    /// to no region again.
    Replica,
    /// A local write of a global table's partition that changed nothing
    /// here (a delete of an absent item, whose record holds the key as its
    /// old image; a put of the image the item has): logged only so that it
    /// is versioned and shipped, and an older write from another region
    /// loses to it. Streams, exports, index feeds and backups leave it out.
    Unchanged,
}

impl Origin {
    fn byte(self) -> u8 {
        match self {
            Origin::Client => 0,
            Origin::Ttl => 1,
            Origin::Replica => 2,
            Origin::Unchanged => 3,
        }
    }

    fn of(b: u8) -> Option<Origin> {
        match b {
            0 => Some(Origin::Client),
            1 => Some(Origin::Ttl),
            2 => Some(Origin::Replica),
            3 => Some(Origin::Unchanged),
            _ => None,
        }
    }
}

/// One logged write of a base partition.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub storage_key: Vec<u8>,
    pub old: Option<Item>,
    pub new: Option<Item>,
    /// When the change was applied, in Unix milliseconds: the proposing
    /// leader's clock, never below an earlier record's of the partition
    /// (0 for records logged before timestamps were kept).
    pub ts_ms: u64,
    pub origin: Origin,
    /// The write's version, in a replicating partition (global tables).
    pub version: Option<Version>,
}

/// The version byte of the trailer that follows a record's images.
const RECORD_TRAILER_V1: u8 = 1;
/// The trailer with the write's version after the V1 fields.
const RECORD_TRAILER_V2: u8 = 2;

impl ChangeRecord {
    pub fn encode(&self) -> Vec<u8> {
        let old = self.old.as_ref().map(encode_item);
        let new = self.new.as_ref().map(encode_item);
        Change {
            storage_key: &self.storage_key,
            old: old.as_deref(),
            new: new.as_deref(),
            ts_ms: self.ts_ms,
            origin: self.origin,
            version: self.version.as_ref(),
        }
        .encode()
    }

    pub fn decode(b: &[u8]) -> Result<ChangeRecord, StorageError> {
        let f = RecordFrame::split(b)?;
        let image = |bytes: Option<&[u8]>| {
            bytes
                .map(|i| decode_item(i).map_err(|_| corrupt_record()))
                .transpose()
        };
        Ok(ChangeRecord {
            storage_key: f.storage_key.to_vec(),
            old: image(f.old)?,
            new: image(f.new)?,
            ts_ms: f.ts_ms,
            origin: f.origin,
            version: f.version,
        })
    }

    /// The timestamp of an encoded record, its images left undecoded.
    pub fn timestamp(b: &[u8]) -> Result<u64, StorageError> {
        Ok(RecordFrame::split(b)?.ts_ms)
    }
}

/// A change about to be logged, its images already encoded (the write
/// stores the new one too, so it is encoded once for both).
pub(crate) struct Change<'a> {
    pub storage_key: &'a [u8],
    pub old: Option<&'a [u8]>,
    pub new: Option<&'a [u8]>,
    pub ts_ms: u64,
    pub origin: Origin,
    pub version: Option<&'a Version>,
}

impl Change<'_> {
    fn encode(&self) -> Vec<u8> {
        // Key and images with their lengths and flags, then the trailer.
        let images = self.old.map_or(0, <[u8]>::len) + self.new.map_or(0, <[u8]>::len);
        let mut out = Vec::with_capacity(self.storage_key.len() + images + 24);
        put_bytes(&mut out, self.storage_key);
        for image in [self.old, self.new] {
            match image {
                Some(bytes) => {
                    out.push(1);
                    put_bytes(&mut out, bytes);
                }
                None => out.push(0),
            }
        }
        out.push(match self.version {
            Some(_) => RECORD_TRAILER_V2,
            None => RECORD_TRAILER_V1,
        });
        out.extend_from_slice(&self.ts_ms.to_be_bytes());
        out.push(self.origin.byte());
        if let Some(v) = self.version {
            out.extend_from_slice(&v.ts_ms.to_be_bytes());
            put_bytes(&mut out, v.region.as_bytes());
        }
        out
    }
}

fn corrupt_record() -> StorageError {
    StorageError::Corrupt("change record".into())
}

/// An encoded record cut into its parts, images still encoded.
struct RecordFrame<'a> {
    storage_key: &'a [u8],
    old: Option<&'a [u8]>,
    new: Option<&'a [u8]>,
    ts_ms: u64,
    origin: Origin,
    version: Option<Version>,
}

impl<'a> RecordFrame<'a> {
    fn split(mut b: &'a [u8]) -> Result<RecordFrame<'a>, StorageError> {
        let storage_key = take_bytes(&mut b).ok_or_else(corrupt_record)?;
        let image = |b: &mut &'a [u8]| -> Result<Option<&'a [u8]>, StorageError> {
            let (flag, rest) = b.split_first().ok_or_else(corrupt_record)?;
            *b = rest;
            if *flag == 0 {
                return Ok(None);
            }
            take_bytes(b).map(Some).ok_or_else(corrupt_record)
        };
        let old = image(&mut b)?;
        let new = image(&mut b)?;
        // Records logged before the trailer existed end with the images.
        let (ts_ms, origin, version) = match b {
            [] => (0, Origin::Client, None),
            [trailer @ (RECORD_TRAILER_V1 | RECORD_TRAILER_V2), rest @ ..] => {
                let (ts, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt_record)?;
                let (o, rest) = rest.split_first().ok_or_else(corrupt_record)?;
                let origin = Origin::of(*o).ok_or_else(corrupt_record)?;
                let version = match (*trailer, rest) {
                    (RECORD_TRAILER_V1, []) => None,
                    (RECORD_TRAILER_V2, rest) => Some(decode_version(rest)?),
                    _ => return Err(corrupt_record()),
                };
                (u64::from_be_bytes(*ts), origin, version)
            }
            _ => return Err(corrupt_record()),
        };
        Ok(RecordFrame {
            storage_key,
            old,
            new,
            ts_ms,
            origin,
            version,
        })
    }
}

/// A V2 trailer's version: ts u64 BE, then the region as `put_bytes`
/// writes it, and nothing after.
fn decode_version(b: &[u8]) -> Result<Version, StorageError> {
    let (ts, mut rest) = b.split_first_chunk::<8>().ok_or_else(corrupt_record)?;
    let region = take_bytes(&mut rest).ok_or_else(corrupt_record)?;
    if !rest.is_empty() {
        return Err(corrupt_record());
    }
    let region = std::str::from_utf8(region).map_err(|_| corrupt_record())?;
    Ok(Version {
        ts_ms: u64::from_be_bytes(*ts),
        region: region.to_string(),
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn take_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = b.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let (bytes, rest) = (rest.get(..len)?, rest.get(len..)?);
    *b = rest;
    Some(bytes)
}

fn change_key(group: u64, seq: u64) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(CHANGE_LOG);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The store keys of `group`'s versions of base items.
pub(crate) fn versions_range(group: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut lo = group.to_be_bytes().to_vec();
    lo.push(VERSIONS);
    let mut hi = group.to_be_bytes().to_vec();
    hi.push(VERSIONS + 1);
    (lo, Some(hi))
}

pub(crate) fn version_key(group: u64, base_key: &[u8]) -> Vec<u8> {
    let mut k = group.to_be_bytes().to_vec();
    k.push(VERSIONS);
    k.extend_from_slice(base_key);
    k
}

/// Whether writes of `group` are logged whatever their command says.
pub(crate) fn feeding(ov: &Overlay, group: u64) -> Result<bool, StorageError> {
    Ok(ov.get_setting(&meta_key(group, "feeding"))?.is_some())
}

/// Whether `group`'s change log is full (a write must wait).
pub(crate) fn lagging(ov: &Overlay, group: u64) -> Result<bool, StorageError> {
    let seq = ov.get_u64(&meta_key(group, "cl_seq"))?;
    let trim = ov.get_u64(&meta_key(group, "cl_trim"))?;
    Ok(seq.saturating_sub(trim) >= MAX_INDEX_LAG_RECORDS)
}

/// Appends a change record to `group`'s log, its timestamp raised to the
/// last record's if the proposing leader's clock is behind it.
pub(crate) fn log_change(ov: &mut Overlay, group: u64, change: Change) -> Result<(), StorageError> {
    let seq = ov.get_u64(&meta_key(group, "cl_seq"))? + 1;
    let last_ts = ov.get_u64(&meta_key(group, "cl_ts"))?;
    let change = Change {
        ts_ms: change.ts_ms.max(last_ts),
        ..change
    };
    ov.put(change_key(group, seq), change.encode());
    ov.put(meta_key(group, "cl_seq"), seq.to_be_bytes().to_vec());
    ov.put(
        meta_key(group, "cl_ts"),
        change.ts_ms.to_be_bytes().to_vec(),
    );
    Ok(())
}

/// (last sequence assigned, last sequence delivered) of `group`'s log.
pub fn change_log_state(tree: &Store, group: u64) -> Result<(u64, u64), StorageError> {
    let get = |name| crate::machine::read_u64(tree, &meta_key(group, name));
    Ok((get("cl_seq")?, get("cl_trim")?))
}

/// The timestamp of `group`'s oldest kept change record that the global
/// indexes already have (what a stream's retention purge would remove
/// first), if any.
pub fn oldest_delivered_change_ms(tree: &Store, group: u64) -> Result<Option<u64>, StorageError> {
    let (_, delivered) = change_log_state(tree, group)?;
    let (_, floor) = change_log_bounds(tree, group)?;
    if floor >= delivered {
        return Ok(None);
    }
    match tree.get(change_key(group, floor + 1))? {
        Some(bytes) => Ok(Some(ChangeRecord::timestamp(&bytes)?)),
        None => Ok(None),
    }
}

/// Change records of `group` after sequence `after`, in order: up to
/// `max` records, stopping after the one that brings their encoded size to
/// `max_bytes`.
pub fn read_changes(
    tree: &Store,
    group: u64,
    after: u64,
    limits: (usize, usize),
) -> Result<Vec<(u64, ChangeRecord)>, StorageError> {
    read_changes_raw(tree, group, after, limits)?
        .into_iter()
        .map(|(seq, bytes)| Ok((seq, ChangeRecord::decode(&bytes)?)))
        .collect()
}

/// [`read_changes`], the records left encoded.
pub fn read_changes_raw(
    tree: &Store,
    group: u64,
    after: u64,
    (max, max_bytes): (usize, usize),
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let lo = change_key(group, after.saturating_add(1));
    let hi = change_key(group, u64::MAX);
    bounded(tree.range(lo..=hi), (max, max_bytes))
}

/// Change records of `group` before sequence `before`, newest first: up
/// to `max` records, stopping after the one that brings their encoded size
/// to `max_bytes` (a backup undoing changes, `crate::backup`).
pub fn read_changes_before(
    tree: &Store,
    group: u64,
    before: u64,
    limits: (usize, usize),
) -> Result<Vec<(u64, ChangeRecord)>, StorageError> {
    if before == 0 {
        return Ok(Vec::new());
    }
    let (lo, hi) = (change_key(group, 0), change_key(group, before));
    bounded(tree.range(lo..hi).rev(), limits)?
        .into_iter()
        .map(|(seq, bytes)| Ok((seq, ChangeRecord::decode(&bytes)?)))
        .collect()
}

/// The change records `scan` yields, in its order, with their sequence
/// numbers: up to `max`, stopping after the one that brings their size to
/// `max_bytes`.
fn bounded(
    scan: impl Iterator<Item = crate::kv::Pair>,
    (max, max_bytes): (usize, usize),
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for kv in scan.take(max) {
        if bytes >= max_bytes {
            break;
        }
        let (k, v) = kv?;
        bytes += v.len();
        out.push((change_seq(&k)?, v.to_vec()));
    }
    Ok(out)
}

/// The sequence number in change-log key `k`.
fn change_seq(k: &[u8]) -> Result<u64, StorageError> {
    k.get(9..17)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt("change log key".into()))
}

/// (last sequence assigned, last sequence removed) of `group`'s log.
pub fn change_log_bounds(tree: &Store, group: u64) -> Result<(u64, u64), StorageError> {
    let read = |name| crate::machine::read_u64(tree, &meta_key(group, name));
    let floor = match tree.get(meta_key(group, "cl_floor"))? {
        Some(_) => read("cl_floor")?,
        None => read("cl_trim")?,
    };
    Ok((read("cl_seq")?, floor))
}

/// Marks records up to `upto` delivered to the global indexes and, unless
/// `retain` (the table has a stream, which keeps them for its retention),
/// removes them.
pub(crate) fn trim(
    ov: &mut Overlay,
    group: u64,
    upto: u64,
    retain: bool,
) -> Result<(), StorageError> {
    let seq = ov.get_u64(&meta_key(group, "cl_seq"))?;
    let delivered = ov.get_u64(&meta_key(group, "cl_trim"))?;
    let upto = upto.min(seq);
    // Pin the floor before the cursor moves: a log written before the
    // floor was kept reads its floor from the cursor.
    let removed = floor(ov, group)?;
    ov.put(meta_key(group, "cl_floor"), removed.to_be_bytes().to_vec());
    if upto > delivered {
        ov.put(meta_key(group, "cl_trim"), upto.to_be_bytes().to_vec());
    }
    if !retain {
        remove_through(ov, group, upto)?;
    }
    Ok(())
}

/// The last removed record of `group`'s log: `cl_floor`, or for a log
/// written before it was kept, the delivery cursor (delivery removed).
fn floor(ov: &Overlay, group: u64) -> Result<u64, StorageError> {
    match ov.get(&meta_key(group, "cl_floor"))? {
        Some(_) => ov.get_u64(&meta_key(group, "cl_floor")),
        None => ov.get_u64(&meta_key(group, "cl_trim")),
    }
}

/// Removes the records after the floor up to `upto`, but none a peer
/// region has not acknowledged (`replica::kept_after`) and none a backup
/// pinned (`backup::lowest`).
fn remove_through(ov: &mut Overlay, group: u64, upto: u64) -> Result<(), StorageError> {
    let upto = match crate::replica::kept_after(ov, group)? {
        Some(shipped) => upto.min(shipped),
        None => upto,
    };
    let upto = match crate::backup::lowest(ov, group)? {
        Some(pin) => upto.min(pin),
        None => upto,
    };
    let floor = floor(ov, group)?;
    for s in floor.saturating_add(1)..=upto {
        ov.del(change_key(group, s));
    }
    if upto > floor {
        ov.put(meta_key(group, "cl_floor"), upto.to_be_bytes().to_vec());
    }
    Ok(())
}

/// Removes records older than `before_ms` that the global indexes already
/// have (a stream's retention ending), oldest first, at most `max`.
pub(crate) fn purge(
    ov: &mut Overlay,
    group: u64,
    before_ms: u64,
    max: u64,
) -> Result<(), StorageError> {
    let delivered = ov.get_u64(&meta_key(group, "cl_trim"))?;
    let first = floor(ov, group)?;
    let last = delivered.min(first.saturating_add(max));
    let mut upto = first;
    while upto < last {
        let Some(bytes) = ov.get(&change_key(group, upto + 1))? else {
            break;
        };
        if ChangeRecord::timestamp(&bytes)? >= before_ms {
            break;
        }
        upto += 1;
    }
    remove_through(ov, group, upto)
}

/// Where a base partition's backfill of one index stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backfill {
    /// Not begun here.
    NotStarted,
    /// Running; resume after this storage key (`None`: from the start).
    Running(Option<Vec<u8>>),
    Done,
}

fn backfill_name(id: u32) -> String {
    format!("bf:{id}")
}

fn backfill_done_name(id: u32) -> String {
    format!("bfdone:{id}")
}

/// The backfill of index `id` in base group `group`.
pub fn backfill_state(tree: &Store, group: u64, id: u32) -> Result<Backfill, StorageError> {
    if tree
        .get(meta_key(group, &backfill_done_name(id)))?
        .is_some()
    {
        return Ok(Backfill::Done);
    }
    Ok(match tree.get(meta_key(group, &backfill_name(id)))? {
        Some(k) if k.is_empty() => Backfill::Running(None),
        Some(k) => Backfill::Running(Some(k.to_vec())),
        None => Backfill::NotStarted,
    })
}

/// Begins the backfill of index `id` (once): from now on every write of the
/// group is logged.
pub(crate) fn start_backfill(ov: &mut Overlay, group: u64, id: u32) -> Result<(), StorageError> {
    let running = ov.get(&meta_key(group, &backfill_name(id)))?.is_some();
    let done = ov.get(&meta_key(group, &backfill_done_name(id)))?.is_some();
    if !running && !done {
        ov.put(meta_key(group, &backfill_name(id)), Vec::new());
        ov.put(meta_key(group, "feeding"), vec![1]);
    }
    Ok(())
}

/// Records backfill progress: resume after `next`, or done (`None`).
pub(crate) fn backfill_progress(
    ov: &mut Overlay,
    group: u64,
    id: u32,
    next: Option<&[u8]>,
) -> Result<(), StorageError> {
    if ov.get(&meta_key(group, &backfill_name(id)))?.is_none() {
        return Ok(());
    }
    match next {
        Some(k) => ov.put(meta_key(group, &backfill_name(id)), k.to_vec()),
        None => {
            ov.del(meta_key(group, &backfill_name(id)));
            ov.put(meta_key(group, &backfill_done_name(id)), vec![1]);
        }
    }
    Ok(())
}

/// A batch of index changes from one source (base partition group).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexBatch {
    pub source: u64,
    /// Backfill puts (sequence: the source's, read before the items)
    /// rather than change records.
    pub backfill: bool,
    /// Keep tombstones for deletes (the index is being backfilled).
    pub keep_tombstones: bool,
    /// The source's backfill is over: later backfill messages are stale.
    pub close: bool,
    pub ops: Vec<IndexOp>,
}

/// The new state of one base item in this index partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexOp {
    /// The base item's storage key.
    pub base_key: Vec<u8>,
    pub seq: u64,
    /// Its entry here (entry key, projected item); `None`: no entry here.
    pub put: Option<(Vec<u8>, Item)>,
}

fn source_name(source: u64) -> String {
    format!("src:{source}")
}

fn closed_name(source: u64) -> String {
    format!("closed:{source}")
}

/// Applies a batch to index group `group`.
pub(crate) fn apply_batch(
    ov: &mut Overlay,
    sp: crate::span::Span,
    b: &IndexBatch,
) -> Result<Outcome, StorageError> {
    let group = sp.group;
    let closed = ov.get(&meta_key(group, &closed_name(b.source)))?.is_some();
    if b.backfill && closed {
        return Ok(Outcome::Done);
    }
    let hwm_key = meta_key(group, &source_name(b.source));
    let mut hwm = ov.get_u64(&hwm_key)?;
    for op in &b.ops {
        if !b.backfill && op.seq <= hwm {
            continue;
        }
        if !b.backfill {
            hwm = op.seq;
        }
        let vk = version_key(group, &op.base_key);
        let (version, current) = match ov.get(&vk)? {
            Some(v) => {
                let (seq, key) = v
                    .split_first_chunk::<8>()
                    .ok_or_else(|| StorageError::Corrupt("index version".into()))?;
                (Some(u64::from_be_bytes(*seq)), key.to_vec())
            }
            None => (None, Vec::new()),
        };
        if version.is_some_and(|v| op.seq <= v) {
            continue;
        }
        if !current.is_empty() {
            remove_entry(ov, sp, &current)?;
        }
        match &op.put {
            Some((key, item)) => {
                let encoded = encode_item(item);
                let size = item_size_bytes(item) + INDEX_ENTRY_OVERHEAD_BYTES;
                ov.put(entry_key(sp.space, GLOBAL_ENTRY_ID, key), encoded);
                count_entry(ov, group, key, 1, size)?;
                let mut v = op.seq.to_be_bytes().to_vec();
                v.extend_from_slice(key);
                ov.put(vk, v);
            }
            None if b.keep_tombstones && !closed => {
                ov.put(vk, op.seq.to_be_bytes().to_vec());
            }
            None => ov.del(vk),
        }
    }
    if !b.backfill {
        ov.put(hwm_key, hwm.to_be_bytes().to_vec());
    }
    if b.close {
        ov.put(meta_key(group, &closed_name(b.source)), vec![1]);
    }
    Ok(Outcome::Done)
}

fn remove_entry(ov: &mut Overlay, sp: crate::span::Span, key: &[u8]) -> Result<(), StorageError> {
    let group = sp.group;
    let ek = entry_key(sp.space, GLOBAL_ENTRY_ID, key);
    if let Some(old) = ov.get(&ek)? {
        let item = decode_item(&old).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let size = item_size_bytes(&item) + INDEX_ENTRY_OVERHEAD_BYTES;
        ov.del(ek);
        count_entry(ov, group, key, -1, size)?;
    }
    Ok(())
}

/// Counts the entry at `key` of `size` bytes in (`sign` 1) or out of (-1)
/// the index partition's counters.
fn count_entry(
    ov: &mut Overlay,
    group: u64,
    key: &[u8],
    sign: i64,
    size: usize,
) -> Result<(), StorageError> {
    crate::split::count(
        ov,
        group,
        crate::catalog::key_hash(key),
        ("count", "bytes"),
        (sign, sign * size as i64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynaraft_model::AttributeValue;

    const SRC: u64 = 9;
    const GROUP: u64 = 20;

    fn tree() -> Store {
        crate::kv::Store::temporary().expect("store")
    }

    fn item(v: &str) -> Item {
        Item::from([("g".to_string(), AttributeValue::S(v.into()))])
    }

    /// An op for base item `x`: its entry becomes key `to` (or none).
    fn op(seq: u64, to: Option<&str>) -> IndexOp {
        IndexOp {
            base_key: b"x".to_vec(),
            seq,
            put: to.map(|k| (k.as_bytes().to_vec(), item(k))),
        }
    }

    fn batch(backfill: bool, ops: Vec<IndexOp>) -> IndexBatch {
        IndexBatch {
            source: SRC,
            backfill,
            keep_tombstones: true,
            close: false,
            ops,
        }
    }

    fn apply(tree: &Store, b: IndexBatch) {
        let mut ov = Overlay::new(tree);
        apply_batch(&mut ov, crate::Span::whole(GROUP), &b).unwrap();
        ov.commit(GROUP, 1).unwrap();
    }

    /// Entry keys present, and the group's entry count.
    fn entries(tree: &Store) -> (Vec<String>, u64) {
        let prefix = entry_key(GROUP, GLOBAL_ENTRY_ID, &[]);
        let keys = tree
            .scan_prefix(&prefix)
            .map(|kv| String::from_utf8(kv.unwrap().0[prefix.len()..].to_vec()).unwrap())
            .collect();
        let count = crate::machine::group_stats(tree, GROUP).unwrap().0;
        (keys, count)
    }

    /// Logs `r` as a write would.
    fn log_record(ov: &mut Overlay, r: &ChangeRecord) {
        let old = r.old.as_ref().map(encode_item);
        let new = r.new.as_ref().map(encode_item);
        let change = Change {
            storage_key: &r.storage_key,
            old: old.as_deref(),
            new: new.as_deref(),
            ts_ms: r.ts_ms,
            origin: r.origin,
            version: r.version.as_ref(),
        };
        log_change(ov, GROUP, change).unwrap();
    }

    fn record(key: &str, ts_ms: u64) -> ChangeRecord {
        ChangeRecord {
            storage_key: key.as_bytes().to_vec(),
            old: None,
            new: Some(item("a")),
            ts_ms,
            origin: Origin::Client,
            version: None,
        }
    }

    #[test]
    fn change_records_round_trip_and_reject_truncation() {
        let r = ChangeRecord {
            storage_key: b"key".to_vec(),
            old: Some(item("a")),
            new: None,
            ts_ms: 1_764_000_000_123,
            origin: Origin::Ttl,
            version: None,
        };
        let bytes = r.encode();
        assert_eq!(ChangeRecord::decode(&bytes).unwrap(), r);
        // A replicating partition's record carries its version; cut
        // anywhere in the trailer it is refused.
        let versioned = ChangeRecord {
            version: Some(Version {
                ts_ms: 7,
                region: "eu-west-1".into(),
            }),
            origin: Origin::Replica,
            ..r.clone()
        };
        let vbytes = versioned.encode();
        assert_eq!(ChangeRecord::decode(&vbytes).unwrap(), versioned);
        for cut in bytes.len() - 9..vbytes.len() {
            assert!(
                ChangeRecord::decode(&vbytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // The trailer either whole or absent (a record from before it).
        let images_end = bytes.len() - 10;
        for cut in (0..bytes.len()).filter(|c| *c != images_end) {
            assert!(ChangeRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let old_format = ChangeRecord::decode(&bytes[..images_end]).unwrap();
        assert_eq!((old_format.ts_ms, old_format.origin), (0, Origin::Client));
    }

    #[test]
    fn a_stream_keeps_delivered_records_until_its_retention_ends() {
        let t = tree();
        let mut ov = Overlay::new(&t);
        for (i, ts) in [100, 90, 300, 400].into_iter().enumerate() {
            log_record(&mut ov, &record(&format!("k{i}"), ts));
        }
        // Delivered to the indexes, kept for the stream.
        trim(&mut ov, GROUP, 3, true).unwrap();
        ov.commit(GROUP, 1).unwrap();
        let stamps: Vec<u64> = read_changes(&t, GROUP, 0, (10, usize::MAX))
            .unwrap()
            .iter()
            .map(|(_, r)| r.ts_ms)
            .collect();
        assert_eq!(stamps, [100, 100, 300, 400], "a clock behind is raised");
        // Retention: only delivered records older than the bound go.
        let mut ov = Overlay::new(&t);
        purge(&mut ov, GROUP, 1_000, 1_000).unwrap();
        ov.commit(GROUP, 2).unwrap();
        let left: Vec<u64> = read_changes(&t, GROUP, 0, (10, usize::MAX))
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(left, [4], "record 4 is not delivered yet");
        // A bounded purge removes at most `max`.
        let mut ov = Overlay::new(&t);
        log_record(&mut ov, &record("k5", 500));
        trim(&mut ov, GROUP, 5, true).unwrap();
        purge(&mut ov, GROUP, 1_000, 1).unwrap();
        ov.commit(GROUP, 3).unwrap();
        let left = read_changes(&t, GROUP, 0, (10, usize::MAX)).unwrap();
        assert_eq!(left.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [5]);
    }

    /// A backfill read at sequence 5 (item at K1) and the change at 7 that
    /// moved it to K2 end in the same state whichever arrives first.
    #[test]
    fn backfill_and_a_later_change_commute() {
        for backfill_first in [true, false] {
            let t = tree();
            let backfill = batch(true, vec![op(5, Some("K1"))]);
            let change = batch(false, vec![op(7, Some("K2"))]);
            if backfill_first {
                apply(&t, backfill);
                apply(&t, change);
            } else {
                apply(&t, change);
                apply(&t, backfill);
            }
            assert_eq!(entries(&t), (vec!["K2".to_string()], 1), "{backfill_first}");
        }
    }

    /// A delete leaves a tombstone while backfilling, so a late backfill of
    /// the older state is skipped; after the source closes, backfill
    /// messages are ignored altogether.
    #[test]
    fn tombstones_and_closing_stop_stale_backfills() {
        let t = tree();
        apply(&t, batch(false, vec![op(7, None)]));
        apply(&t, batch(true, vec![op(5, Some("K1"))]));
        assert_eq!(entries(&t), (vec![], 0));
        let mut close = batch(false, vec![]);
        close.close = true;
        apply(&t, close);
        apply(&t, batch(true, vec![op(9, Some("K3"))]));
        assert_eq!(entries(&t), (vec![], 0));
    }

    /// A resent change record (a feeder restarted before trimming) is
    /// skipped: the put is not applied a second time after its delete.
    #[test]
    fn resent_changes_are_applied_once() {
        let t = tree();
        let mut no_tombstones = batch(false, vec![op(3, Some("K1")), op(4, None)]);
        no_tombstones.keep_tombstones = false;
        apply(&t, no_tombstones.clone());
        apply(&t, no_tombstones);
        assert_eq!(entries(&t), (vec![], 0));
        apply(&t, batch(false, vec![op(3, Some("K1")), op(5, Some("K2"))]));
        assert_eq!(entries(&t), (vec!["K2".to_string()], 1));
    }

    #[test]
    fn a_full_change_log_refuses_and_trimming_frees_it() {
        let t = tree();
        let record = record("k", 1);
        let mut ov = Overlay::new(&t);
        for _ in 0..MAX_INDEX_LAG_RECORDS {
            assert!(!lagging(&ov, GROUP).unwrap());
            log_record(&mut ov, &record);
        }
        assert!(lagging(&ov, GROUP).unwrap());
        ov.commit(GROUP, 1).unwrap();
        assert_eq!(
            read_changes(&t, GROUP, 0, (3, usize::MAX)).unwrap().len(),
            3
        );
        let mut ov = Overlay::new(&t);
        trim(&mut ov, GROUP, 10, false).unwrap();
        assert!(!lagging(&ov, GROUP).unwrap());
        ov.commit(GROUP, 2).unwrap();
        assert_eq!(
            change_log_state(&t, GROUP).unwrap(),
            (MAX_INDEX_LAG_RECORDS, 10)
        );
        let next = read_changes(&t, GROUP, 10, (1, 1)).unwrap();
        assert_eq!(next.first().map(|(s, _)| *s), Some(11));
    }
}
