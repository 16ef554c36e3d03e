//! Transactions inside one partition's state machine: intents, transaction
//! records, idempotency tokens and item stamps. The coordinator that drives
//! them across partitions lives in `dynaraft-cluster` (`txn`).
//!
//! ```text
//! [space] 0x08 [storage key]   intent: a prepared transaction's decided
//!                              write (or lock, for a ConditionCheck)
//! [group] 0x09 [txn id u128]   transaction record (on the anchor partition)
//! [group] 0x0A [token]         ClientRequestToken -> txn id (anchor)
//! [space] 0x0B [storage key]   stamp: write sequence of the item's last change
//! [group] 0x0C [ts][txn id]    records not yet finished, by creation time
//! [group] 0x0D [ts][txn id]    every record, by creation time (for expiry)
//! [group] 0x00 "wseq"          last write sequence assigned
//! [group] 0x00 "last_delete"   write sequence of the last delete
//! ```
//!
//! A transaction whose items all live in one partition is one command
//! ([`Prepare`] with `commit_now`): every condition is evaluated, and either
//! every write is staged in the same apply or none is. Across partitions,
//! each partition prepares its items: conditions are evaluated and the
//! resulting new images are stored as intents, which block other writes to
//! those items. The anchor partition (the first item's) also creates the
//! transaction record, `Pending`. The coordinator then decides on the
//! anchor ([`decide`], the commit point) and resolves every participant
//! ([`resolve`]), which applies or drops the intents. A decision is made
//! once: whoever decides first (the coordinator, or anyone recovering an
//! abandoned transaction) wins, and a record that does not exist yet is
//! created `Aborted`, so a late prepare of the anchor fails.
//!
//! Stamps let a reader check that an item did not change between two reads
//! (TransactGetItems validates its first read this way): a present item's
//! stamp is its own key; an absent item's is the group's `last_delete`.

use crate::StorageError;
use crate::command::{JsonDoc, WriteCommand, WriteKind};
use crate::kv::Store;
use crate::machine::{Outcome, Overlay, current_item, evaluate, meta_key, stage};
use crate::span::Span;
use dynaraft_model::Item;
use serde::{Deserialize, Serialize};

/// A transaction's id (random, chosen by its coordinator).
pub type TxnId = u128;

pub(crate) const INTENTS: u8 = 0x08;
const RECORDS: u8 = 0x09;
const TOKENS: u8 = 0x0A;
pub(crate) const STAMPS: u8 = 0x0B;
const OPEN: u8 = 0x0C;
const EXPIRY: u8 = 0x0D;

/// Where a transaction's record lives: the partition of `table` whose hash
/// range holds `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub table: String,
    pub hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Pending,
    Committed,
    Aborted,
}

/// One item of a transaction, sent to the partition holding it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnOp {
    /// Position in the request (for CancellationReasons).
    pub pos: u32,
    pub write: WriteCommand,
}

/// A partition taking part in a transaction, and its items' storage keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub table: String,
    pub hash: u64,
    pub keys: Vec<Vec<u8>>,
}

/// What the anchor records when it prepares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordInit {
    pub participants: Vec<Participant>,
    pub token: Option<String>,
    /// Digest of the request, to tell a retry from a different request
    /// reusing its token.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub state: TxnState,
    /// When it was created (the proposer's clock).
    pub ts_ms: u64,
    pub participants: Vec<Participant>,
    pub token: Option<String>,
    pub fingerprint: String,
    /// Every participant has been resolved.
    pub finished: bool,
    /// The anchor's hash (which partition keeps the record across a
    /// split); `None` in records written before it was kept.
    #[serde(default)]
    pub anchor_hash: Option<u64>,
}

/// A partition's share of a transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepare {
    pub txn: TxnId,
    pub anchor: Anchor,
    /// Set on the anchor's prepare only.
    pub record: Option<RecordInit>,
    /// Every item of the transaction is here: apply them now, no intents.
    pub commit_now: bool,
    pub ops: Vec<TxnOp>,
}

/// Why one item stops a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Failure {
    ConditionFailed {
        old: Option<Item>,
    },
    /// Another transaction holds the item (or this one was already aborted).
    Conflict,
    Invalid(String),
    CollectionTooLarge,
    /// The partition's global indexes lag too far behind.
    Throttled,
}

/// An intent as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    pub txn: TxnId,
    pub anchor: Anchor,
    pub ts_ms: u64,
    /// The write, without its expressions (kind, key, index specs).
    pub write: WriteCommand,
    /// The item once the transaction commits.
    pub new: Option<Item>,
}

/// An intent as a reader or a blocked writer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentView {
    pub txn: TxnId,
    pub anchor: Anchor,
    pub ts_ms: u64,
    /// The item once the transaction commits (`None`: deleted).
    pub new: Option<Item>,
    /// The intent only locks the item (a ConditionCheck).
    pub check_only: bool,
}

impl Intent {
    pub fn view(&self) -> IntentView {
        IntentView {
            txn: self.txn,
            anchor: self.anchor.clone(),
            ts_ms: self.ts_ms,
            new: self.new.clone(),
            check_only: self.write.kind == WriteKind::Check,
        }
    }
}

/// One item read for TransactGetItems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub item: Option<Item>,
    /// Changes whenever the item may have changed.
    pub stamp: u64,
    pub intent: Option<IntentView>,
}

fn key_in(group: u64, space: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.push(space);
    k.extend_from_slice(rest);
    k
}

fn record_key(group: u64, txn: TxnId) -> Vec<u8> {
    key_in(group, RECORDS, &txn.to_be_bytes())
}

fn corrupt(what: &str, e: serde_json::Error) -> StorageError {
    StorageError::Corrupt(format!("{what}: {e}"))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The intent on `storage_key`, if a transaction holds it.
pub fn intent(ov: &Overlay, sp: Span, storage_key: &[u8]) -> Result<Option<Intent>, StorageError> {
    match ov.get(&key_in(sp.space, INTENTS, storage_key))? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(|e| corrupt("intent", e))?,
        )),
        None => Ok(None),
    }
}

pub fn record(ov: &Overlay, group: u64, txn: TxnId) -> Result<Option<TxnRecord>, StorageError> {
    match ov.get(&record_key(group, txn))? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).map_err(|e| corrupt("txn record", e))?,
        )),
        None => Ok(None),
    }
}

fn by_time(group: u64, space: u8, ts_ms: u64, txn: TxnId) -> Vec<u8> {
    let mut rest = ts_ms.to_be_bytes().to_vec();
    rest.extend_from_slice(&txn.to_be_bytes());
    key_in(group, space, &rest)
}

/// Stores a record, keeping the time indexes in step with it.
fn put_record(ov: &mut Overlay, group: u64, txn: TxnId, r: &TxnRecord) {
    ov.put(record_key(group, txn), to_json(r));
    ov.put(by_time(group, EXPIRY, r.ts_ms, txn), Vec::new());
    let open = by_time(group, OPEN, r.ts_ms, txn);
    if r.finished {
        ov.del(open);
    } else {
        ov.put(open, Vec::new());
    }
}

fn token_txn(ov: &Overlay, group: u64, token: &str) -> Result<Option<TxnId>, StorageError> {
    let b = ov.get(&key_in(group, TOKENS, token.as_bytes()))?;
    Ok(b.and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(u128::from_be_bytes))
}

/// Records that the item at `storage_key` changed (`present`: it exists
/// after the change).
pub(crate) fn stamp(
    ov: &mut Overlay,
    sp: Span,
    storage_key: &[u8],
    present: bool,
) -> Result<(), StorageError> {
    let group = sp.group;
    let seq = ov.get_u64(&meta_key(group, "wseq"))? + 1;
    ov.put(meta_key(group, "wseq"), seq.to_be_bytes().to_vec());
    let k = key_in(sp.space, STAMPS, storage_key);
    if present {
        ov.put(k, seq.to_be_bytes().to_vec());
    } else {
        ov.del(k);
        ov.put(meta_key(group, "last_delete"), seq.to_be_bytes().to_vec());
    }
    Ok(())
}

/// Reads `storage_key` with its stamp and intent, for TransactGetItems.
/// The reads are not atomic against applies, so their order matters: the
/// intent and both stamps are read before the item, so a change landing
/// in between leaves an old stamp beside the new item, and the caller's
/// second read of the stamp sees the difference.
pub fn read_slot(tree: &Store, sp: Span, storage_key: &[u8]) -> Result<Slot, StorageError> {
    let ov = Overlay::new(tree);
    let intent = intent(&ov, sp, storage_key)?.map(|i| i.view());
    let own = ov.get_u64(&key_in(sp.space, STAMPS, storage_key))?;
    let last_delete = ov.get_u64(&meta_key(sp.group, "last_delete"))?;
    let item = current_item(&ov, sp, storage_key)?;
    let stamp = if item.is_some() { own } else { last_delete };
    Ok(Slot {
        item,
        stamp,
        intent,
    })
}

/// The intent on `storage_key` as a reader sees it.
pub fn read_intent(
    tree: &Store,
    sp: Span,
    storage_key: &[u8],
) -> Result<Option<IntentView>, StorageError> {
    Ok(intent(&Overlay::new(tree), sp, storage_key)?.map(|i| i.view()))
}

/// Ids in time index `space` of `group` created before `before_ms`.
fn older(tree: &Store, group: u64, space: u8, before_ms: u64) -> Result<Vec<TxnId>, StorageError> {
    let lo = key_in(group, space, &[]);
    let hi = key_in(group, space, &before_ms.to_be_bytes());
    let mut out = Vec::new();
    for kv in tree.range(lo..hi) {
        let (k, _) = kv?;
        let id = k
            .get(17..)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(u128::from_be_bytes)
            .ok_or_else(|| StorageError::Corrupt("txn time index key".into()))?;
        out.push(id);
    }
    Ok(out)
}

/// A sweeper's work: unfinished records, and ids of expired records.
pub type Due = (Vec<(TxnId, TxnRecord)>, Vec<TxnId>);

/// Work for `group`'s sweeper: unfinished records created before
/// `stuck_before_ms`, and ids of records created before `expired_before_ms`.
pub fn due(
    tree: &Store,
    group: u64,
    stuck_before_ms: u64,
    expired_before_ms: u64,
) -> Result<Due, StorageError> {
    let ov = Overlay::new(tree);
    let mut stuck = Vec::new();
    for id in older(tree, group, OPEN, stuck_before_ms)? {
        if let Some(r) = record(&ov, group, id)? {
            stuck.push((id, r));
        }
    }
    Ok((stuck, older(tree, group, EXPIRY, expired_before_ms)?))
}

/// Every intent in `sp`'s hash range, with its item's storage key (for its
/// sweeper).
pub fn intents(tree: &Store, sp: Span) -> Result<Vec<(Vec<u8>, IntentView)>, StorageError> {
    let mut out = Vec::new();
    for kv in tree.scan_prefix(key_in(sp.space, INTENTS, &[])) {
        let (k, v) = kv?;
        let key = k.get(9..).unwrap_or_default().to_vec();
        if !sp.owns(&key) {
            continue;
        }
        let i: Intent = serde_json::from_slice(&v).map_err(|e| corrupt("intent", e))?;
        out.push((key, i.view()));
    }
    Ok(out)
}

fn failure_of(o: Outcome) -> Failure {
    match o {
        Outcome::ConditionFailed { old } => Failure::ConditionFailed { old },
        Outcome::CollectionTooLarge => Failure::CollectionTooLarge,
        Outcome::IndexLagging => Failure::Throttled,
        Outcome::TxnConflict(_) => Failure::Conflict,
        Outcome::Invalid(m) => Failure::Invalid(m),
        other => Failure::Invalid(format!("unexpected outcome {other:?}")),
    }
}

/// What a token's earlier transaction means for a new prepare: `None` to
/// go ahead.
fn replayed(ov: &Overlay, group: u64, p: &Prepare) -> Result<Option<Outcome>, StorageError> {
    let Some(init) = &p.record else {
        return Ok(None);
    };
    if let Some(token) = &init.token
        && let Some(prior) = token_txn(ov, group, token)?
        && prior != p.txn
        && let Some(rec) = record(ov, group, prior)?
    {
        if rec.fingerprint != init.fingerprint {
            return Ok(Some(Outcome::TxnMismatch));
        }
        if rec.state != TxnState::Aborted {
            return Ok(Some(Outcome::TxnDuplicate(rec.state)));
        }
    }
    Ok(None)
}

/// Applies a partition's share of a transaction (see the module doc).
pub(crate) fn prepare(
    ov: &mut Overlay,
    sp: Span,
    p: &Prepare,
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    let group = sp.group;
    if let Some(o) = replayed(ov, group, p)? {
        return Ok(o);
    }
    let mut failures = Vec::new();
    // Decided already (a recoverer gave up on it): it can only abort.
    let recorded = p.record.is_some() && record(ov, group, p.txn)?.is_some();
    if recorded {
        failures.extend(p.ops.first().map(|op| (op.pos, Failure::Conflict)));
    }
    let mut decided = Vec::new();
    for op in &p.ops {
        if let Some(i) = intent(ov, sp, &op.write.storage_key)? {
            if i.txn != p.txn {
                failures.push((op.pos, Failure::Conflict));
            }
            continue;
        }
        match evaluate(ov, sp, &op.write)? {
            Ok((old, new)) => decided.push((op, old, new)),
            Err(o) => failures.push((op.pos, failure_of(o))),
        }
    }
    // Stage every write: it applies them (commit now) or, as a trial,
    // finds the limits they would break (staged writes are then undone).
    let saved = ov.save();
    if failures.is_empty() {
        for (op, old, new) in &decided {
            let o = stage(ov, sp, &op.write, (old.clone(), new.clone()), false, ts_ms)?;
            if !matches!(o, Outcome::Written { .. }) {
                failures.push((op.pos, failure_of(o)));
                break;
            }
        }
    }
    if !failures.is_empty() || !p.commit_now {
        ov.restore(saved);
    }
    let state = match (failures.is_empty(), p.commit_now) {
        (false, _) => TxnState::Aborted,
        (true, true) => TxnState::Committed,
        (true, false) => TxnState::Pending,
    };
    if failures.is_empty() && !p.commit_now {
        for (op, _, new) in decided {
            let intent = Intent {
                txn: p.txn,
                anchor: p.anchor.clone(),
                ts_ms,
                write: bare(&op.write),
                new,
            };
            ov.put(
                key_in(sp.space, INTENTS, &op.write.storage_key),
                to_json(&intent),
            );
        }
    }
    if let Some(init) = &p.record
        && !recorded
    {
        let rec = TxnRecord {
            state,
            ts_ms,
            participants: init.participants.clone(),
            token: init.token.clone(),
            fingerprint: init.fingerprint.clone(),
            finished: p.commit_now,
            anchor_hash: Some(p.anchor.hash),
        };
        put_record(ov, group, p.txn, &rec);
        if let Some(token) = &init.token {
            ov.put(
                key_in(group, TOKENS, token.as_bytes()),
                p.txn.to_be_bytes().to_vec(),
            );
        }
    }
    failures.sort_by_key(|(pos, _)| *pos);
    Ok(Outcome::TxnPrepared(failures))
}

/// The parts of a write an intent keeps: what commit needs to stage it.
fn bare(w: &WriteCommand) -> WriteCommand {
    WriteCommand {
        kind: w.kind,
        storage_key: w.storage_key.clone(),
        key: JsonDoc::null(),
        item: None,
        condition: None,
        update: None,
        names: Default::default(),
        values: JsonDoc::null(),
        local: w.local.clone(),
        global: w.global.clone(),
        legacy_update: false,
        stream: w.stream,
        origin: w.origin,
        // A transaction's writes are local: the region, never a version.
        replicated: crate::replica::GlobalWrite::local(w.region().map(str::to_string)),
    }
}

/// Decides a transaction on its anchor: a pending record becomes
/// committed or aborted; a decided one stays as it is; a missing one is
/// created aborted (its anchor never prepared). The anchor's own intents
/// (`keys`) are resolved in the same apply. The outcome is the decision.
pub(crate) fn decide(
    ov: &mut Overlay,
    sp: Span,
    txn: TxnId,
    commit: bool,
    keys: &[Vec<u8>],
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    let group = sp.group;
    let state = match record(ov, group, txn)? {
        Some(mut r) if r.state == TxnState::Pending => {
            r.state = if commit {
                TxnState::Committed
            } else {
                TxnState::Aborted
            };
            put_record(ov, group, txn, &r);
            r.state
        }
        Some(r) => r.state,
        None => {
            let tombstone = TxnRecord {
                state: TxnState::Aborted,
                ts_ms,
                participants: Vec::new(),
                token: None,
                fingerprint: String::new(),
                finished: true,
                anchor_hash: None,
            };
            put_record(ov, group, txn, &tombstone);
            TxnState::Aborted
        }
    };
    resolve(ov, sp, txn, state == TxnState::Committed, keys, ts_ms)?;
    Ok(Outcome::TxnState(state))
}

/// Applies (`commit`) or drops the intents of `txn` on `keys`; keys
/// without one of its intents are left alone, so resolving twice is safe.
pub(crate) fn resolve(
    ov: &mut Overlay,
    sp: Span,
    txn: TxnId,
    commit: bool,
    keys: &[Vec<u8>],
    ts_ms: u64,
) -> Result<Outcome, StorageError> {
    for key in keys {
        let Some(i) = intent(ov, sp, key)?.filter(|i| i.txn == txn) else {
            continue;
        };
        ov.del(key_in(sp.space, INTENTS, key));
        if commit && i.write.kind != WriteKind::Check {
            let old = current_item(ov, sp, key)?;
            stage(ov, sp, &i.write, (old, i.new), true, ts_ms)?;
        }
    }
    Ok(Outcome::Done)
}

/// Marks a record finished (every participant resolved).
pub(crate) fn finish(ov: &mut Overlay, group: u64, txn: TxnId) -> Result<Outcome, StorageError> {
    if let Some(mut r) = record(ov, group, txn)? {
        r.finished = true;
        put_record(ov, group, txn, &r);
    }
    Ok(Outcome::Done)
}

/// Removes records (and their tokens) past the idempotency window.
pub(crate) fn forget(
    ov: &mut Overlay,
    group: u64,
    txns: &[TxnId],
) -> Result<Outcome, StorageError> {
    for txn in txns {
        if let Some(r) = record(ov, group, *txn)? {
            if let Some(t) = &r.token
                && token_txn(ov, group, t)? == Some(*txn)
            {
                ov.del(key_in(group, TOKENS, t.as_bytes()));
            }
            ov.del(record_key(group, *txn));
            ov.del(by_time(group, OPEN, r.ts_ms, *txn));
            ov.del(by_time(group, EXPIRY, r.ts_ms, *txn));
        }
    }
    Ok(Outcome::Done)
}

/// At a split: records whose anchor hash `right` owns move to its group,
/// with their tokens and time indexes; records that do not know their
/// anchor are copied (see `split`).
pub(crate) fn split_records(
    ov: &mut Overlay,
    parent: u64,
    right: Span,
) -> Result<(), StorageError> {
    let lo = key_in(parent, RECORDS, &[]);
    let hi = key_in(parent, RECORDS + 1, &[]);
    let mut found = Vec::new();
    ov.for_each_in(&lo, Some(&hi), |k, v| {
        let id = k
            .get(lo.len()..)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(u128::from_be_bytes)
            .ok_or_else(|| StorageError::Corrupt("txn record key".into()))?;
        let r: TxnRecord = serde_json::from_slice(v).map_err(|e| corrupt("txn record", e))?;
        found.push((id, r));
        Ok(true)
    })?;
    for (id, r) in found {
        let moves = match r.anchor_hash {
            Some(h) if right.owns_hash(h) => true,
            Some(_) => continue,
            None => false,
        };
        put_record(ov, right.group, id, &r);
        if let Some(t) = &r.token
            && token_txn(ov, parent, t)? == Some(id)
        {
            ov.put(
                key_in(right.group, TOKENS, t.as_bytes()),
                id.to_be_bytes().to_vec(),
            );
        }
        if moves {
            forget(ov, parent, &[id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::command::{Command, Entry};
    use crate::machine::{apply, read_item};
    use dynaraft_model::AttributeValue;
    use serde_json::json;

    const GROUP: u64 = 30;

    fn tree() -> Store {
        crate::kv::Store::temporary().expect("store")
    }

    fn run(tree: &Store, cmd: Command) -> Outcome {
        let mut ov = Overlay::new(tree);
        let outcome = apply(&mut ov, Span::whole(GROUP), &Entry { ts_ms: 7, cmd }).unwrap();
        ov.commit(GROUP, 1).unwrap();
        outcome
    }

    /// A put of `{k: key, n: n}`, guarded by `condition`.
    pub(crate) fn put(key: &str, n: i64, condition: Option<&str>) -> WriteCommand {
        WriteCommand {
            kind: WriteKind::Put,
            storage_key: key.as_bytes().to_vec(),
            key: JsonDoc::new(&json!({"k": {"S": key}})),
            item: Some(JsonDoc::new(
                &json!({"k": {"S": key}, "n": {"N": n.to_string()}}),
            )),
            condition: condition.map(str::to_string),
            update: None,
            names: Default::default(),
            values: JsonDoc::new(&json!({})),
            local: None,
            global: Vec::new(),
            legacy_update: false,
            stream: false,
            origin: Default::default(),
            replicated: None,
        }
    }

    fn prepare(txn: TxnId, record: bool, commit_now: bool, writes: Vec<WriteCommand>) -> Command {
        let anchor = Anchor {
            table: "t".into(),
            hash: 0,
        };
        let record = record.then(|| RecordInit {
            participants: Vec::new(),
            token: Some("tok".into()),
            fingerprint: format!("fp{txn}"),
        });
        let ops = writes
            .into_iter()
            .enumerate()
            .map(|(pos, write)| TxnOp {
                pos: pos as u32,
                write,
            })
            .collect();
        Command::TxnPrepare(Box::new(Prepare {
            txn,
            anchor,
            record,
            commit_now,
            ops,
        }))
    }

    fn n_of(tree: &Store, key: &str) -> Option<AttributeValue> {
        read_item(tree, Span::whole(GROUP), key.as_bytes())
            .unwrap()
            .and_then(|i| i.get("n").cloned())
    }

    fn n(v: i64) -> Option<AttributeValue> {
        Some(AttributeValue::N(dynaraft_model::Number::from_i64(v)))
    }

    #[test]
    fn a_single_partition_transaction_applies_all_or_nothing() {
        let t = tree();
        let ok = run(
            &t,
            prepare(1, false, true, vec![put("a", 1, None), put("b", 1, None)]),
        );
        assert!(matches!(ok, Outcome::TxnPrepared(f) if f.is_empty()));
        assert_eq!((n_of(&t, "a"), n_of(&t, "b")), (n(1), n(1)));
        // The second item's condition fails: the first is not written either.
        let cond = Some("attribute_not_exists(k)");
        let failed = run(
            &t,
            prepare(2, false, true, vec![put("c", 2, None), put("a", 2, cond)]),
        );
        let Outcome::TxnPrepared(f) = failed else {
            panic!("{failed:?}")
        };
        assert!(matches!(
            f.as_slice(),
            [(1, Failure::ConditionFailed { old: Some(_) })]
        ));
        assert_eq!((n_of(&t, "a"), n_of(&t, "c")), (n(1), None));
    }

    #[test]
    fn intents_block_writes_until_resolved_and_commit_applies_them() {
        let t = tree();
        run(&t, Command::Write(put("a", 1, None)));
        let before = read_slot(&t, Span::whole(GROUP), b"a").unwrap();
        let o = run(&t, prepare(5, true, false, vec![put("a", 9, None)]));
        assert!(matches!(o, Outcome::TxnPrepared(f) if f.is_empty()));
        let stuck = due(&t, GROUP, 8, 0).unwrap().0;
        assert_eq!(
            stuck.first().map(|(id, r)| (*id, r.state)),
            Some((5, TxnState::Pending))
        );
        // Prepared, not applied: readers see the old item and the intent.
        let slot = read_slot(&t, Span::whole(GROUP), b"a").unwrap();
        assert_eq!((slot.item.clone(), slot.stamp), (before.item, before.stamp));
        assert_eq!(
            slot.intent.map(|i| i.new.and_then(|n| n.get("n").cloned())),
            Some(n(9))
        );
        assert!(matches!(
            run(&t, Command::Write(put("a", 2, None))),
            Outcome::TxnConflict(_)
        ));
        let other = run(&t, prepare(6, false, false, vec![put("a", 3, None)]));
        assert!(matches!(other, Outcome::TxnPrepared(f) if f == vec![(0, Failure::Conflict)]));
        // Commit on the anchor resolves its own keys.
        let keys = vec![b"a".to_vec()];
        let decided = run(
            &t,
            Command::TxnDecide {
                txn: 5,
                commit: true,
                keys: keys.clone(),
                anchor_hash: None,
            },
        );
        assert!(matches!(decided, Outcome::TxnState(TxnState::Committed)));
        assert_eq!(n_of(&t, "a"), n(9));
        assert_ne!(
            read_slot(&t, Span::whole(GROUP), b"a").unwrap().stamp,
            before.stamp
        );
        // A later abort cannot undo the decision; resolving again is a no-op.
        let again = run(
            &t,
            Command::TxnDecide {
                txn: 5,
                commit: false,
                keys: keys.clone(),
                anchor_hash: None,
            },
        );
        assert!(matches!(again, Outcome::TxnState(TxnState::Committed)));
        run(
            &t,
            Command::TxnResolve {
                txn: 5,
                commit: true,
                keys,
            },
        );
        assert_eq!(n_of(&t, "a"), n(9));
        assert!(matches!(
            run(&t, Command::Write(put("a", 2, None))),
            Outcome::Written { .. }
        ));
    }

    #[test]
    fn a_recoverer_aborting_first_makes_the_late_anchor_prepare_fail() {
        let t = tree();
        // A participant elsewhere was prepared; its finder gave up on the
        // transaction before the anchor's prepare arrived.
        let d = run(
            &t,
            Command::TxnDecide {
                txn: 8,
                commit: false,
                keys: Vec::new(),
                anchor_hash: None,
            },
        );
        assert!(matches!(d, Outcome::TxnState(TxnState::Aborted)));
        let late = run(&t, prepare(8, true, false, vec![put("a", 1, None)]));
        assert!(matches!(late, Outcome::TxnPrepared(f) if !f.is_empty()));
        assert!(
            read_slot(&t, Span::whole(GROUP), b"a")
                .unwrap()
                .intent
                .is_none()
        );
        let commit = run(
            &t,
            Command::TxnDecide {
                txn: 8,
                commit: true,
                keys: Vec::new(),
                anchor_hash: None,
            },
        );
        assert!(matches!(commit, Outcome::TxnState(TxnState::Aborted)));
    }

    #[test]
    fn a_token_replays_its_transaction_and_refuses_a_different_one() {
        let t = tree();
        let first = run(&t, prepare(1, true, true, vec![put("a", 1, None)]));
        assert!(matches!(first, Outcome::TxnPrepared(f) if f.is_empty()));
        // The same request (same fingerprint) under a new attempt id.
        let mut same = prepare(2, true, true, vec![put("a", 5, None)]);
        if let Command::TxnPrepare(p) = &mut same {
            p.record.as_mut().unwrap().fingerprint = "fp1".into();
        }
        assert!(matches!(
            run(&t, same),
            Outcome::TxnDuplicate(TxnState::Committed)
        ));
        assert_eq!(n_of(&t, "a"), n(1));
        let other = run(&t, prepare(3, true, true, vec![put("a", 5, None)]));
        assert!(matches!(other, Outcome::TxnMismatch));
        // Past the window the token is forgotten.
        let (stuck, expired) = due(&t, GROUP, 8, 8).unwrap();
        assert!(stuck.is_empty(), "committed in one command: finished");
        assert_eq!(expired, vec![1]);
        assert!(due(&t, GROUP, 7, 7).unwrap().1.is_empty(), "created at 7");
        run(&t, Command::TxnForget { txns: vec![1] });
        assert!(due(&t, GROUP, 8, 8).unwrap().1.is_empty());
        let later = run(&t, prepare(3, true, true, vec![put("a", 5, None)]));
        assert!(matches!(later, Outcome::TxnPrepared(f) if f.is_empty()));
    }

    #[test]
    fn stamps_change_on_every_change_and_deletes_move_the_absent_stamp() {
        let t = tree();
        let absent = read_slot(&t, Span::whole(GROUP), b"a").unwrap().stamp;
        run(&t, Command::Write(put("a", 1, None)));
        let s1 = read_slot(&t, Span::whole(GROUP), b"a").unwrap().stamp;
        run(&t, Command::Write(put("a", 2, None)));
        run(&t, Command::Write(put("a", 1, None)));
        let s2 = read_slot(&t, Span::whole(GROUP), b"a").unwrap().stamp;
        assert!(
            s1 != s2 && s1 != absent,
            "same value again is still a change"
        );
        let mut del = put("a", 0, None);
        del.kind = WriteKind::Delete;
        run(&t, Command::Write(del));
        let after = read_slot(&t, Span::whole(GROUP), b"a").unwrap();
        assert!(after.item.is_none() && after.stamp != absent);
    }
}
