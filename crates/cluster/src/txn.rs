//! Transactions across partitions: the coordinator of TransactWriteItems
//! and TransactGetItems (any router), the recovery of transactions whose
//! coordinator vanished, and the sweeper that finds them.
//!
//! The commit protocol of TransactWriteItems (`Router::transact_write`):
//!
//! 1. The items are grouped by the partition holding them. The partition of
//!    the first item is the *anchor*: it will hold the transaction record.
//! 2. One partition only: one `TxnPrepare { commit_now }` evaluates every
//!    condition and applies every write in one apply, or none. Done.
//! 3. Otherwise every partition is sent its `TxnPrepare` at once. Each
//!    evaluates its items' conditions against the current items and stores
//!    the decided new images as intents, which hold the items (other
//!    writes get TransactionConflict). The anchor's prepare also creates
//!    the record, `Pending`, with the list of participants.
//! 4. If every partition prepared, `TxnDecide { commit }` on the anchor is
//!    the commit point; otherwise `TxnDecide { abort }`. The decision also
//!    resolves the anchor's own intents.
//! 5. `TxnResolve` to the other participants applies (or drops) their
//!    intents; then `TxnFinish` marks the record finished.
//!
//! Failure cases. A coordinator that dies before step 4 leaves intents and
//! a `Pending` record (or none, if the anchor never prepared); one that dies
//! after it leaves a decided record and unresolved intents. Whoever meets an
//! intent (a reader, a blocked writer, the sweeper of its partition) asks
//! the anchor: a decided transaction is resolved at once; an undecided one
//! older than [`TXN_RECOVERY_AFTER_MS`] is aborted through the same
//! `TxnDecide` (creating an aborted record if none exists, so a late
//! anchor prepare fails), since the first decision wins. The anchor's
//! sweeper also finishes records left unfinished and forgets records after
//! the idempotency window ([`TXN_IDEMPOTENCY_WINDOW_MS`]).
//!
//! Reads. GetItem on an item holding an intent returns the intent's image
//! if the record says committed (the transaction is decided but not yet
//! applied there), so reads never see half a committed transaction.
//! TransactGetItems reads every item with its stamp at the leaders, then
//! reads the stamps again: if nothing changed and no intent was seen, all
//! values held at once between the two rounds. Caveat: Query and Scan see
//! applied writes only (read-committed per item, as DynamoDB documents).

use crate::ClusterError;
use crate::catalog::{CatalogWatch, Table};
use crate::host::Host;
use crate::router::{Router, Target, until_mapped};
use crate::wire::{Reply, Request};
use dynaraft_model::Item;
use dynaraft_storage::catalog::{key_hash, partition_index};
use dynaraft_storage::txn::{
    self, Anchor, Failure, IntentView, Participant, Prepare, RecordInit, Slot, TxnId, TxnOp,
    TxnState,
};
use dynaraft_storage::{Command, Outcome, PartitionMeta, WriteCommand};
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Age after which an undecided transaction may be aborted by whoever
/// finds it (its coordinator is presumed gone), in milliseconds.
pub const TXN_RECOVERY_AFTER_MS: u64 = 3_000;
/// How long transaction records and their ClientRequestTokens are kept:
/// DynamoDB's idempotency window, 10 minutes.
pub const TXN_IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Pause between sweeps of a node's led partitions, in milliseconds.
pub const TXN_SWEEP_MS: u64 = 500;
/// Times TransactGetItems reads again when its validation finds a change.
pub const TXN_READ_ATTEMPTS: usize = 3;
/// Times a single-item write is retried after settling a transaction that
/// held its item.
pub const TXN_WRITE_SETTLE_ATTEMPTS: usize = 2;

/// One write of a TransactWriteItems, in request order.
pub struct TxnWrite {
    pub table: Arc<Table>,
    pub write: WriteCommand,
}

#[derive(Debug, PartialEq)]
pub enum TxnResult {
    Committed,
    /// The items that stopped it, by request position.
    Canceled(Vec<(u32, Failure)>),
    /// The token's transaction is still running.
    InProgress,
    /// The token belongs to a different request.
    Mismatch,
}

/// Where a test stops a coordinator, as if it died there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    None,
    AfterPrepare,
    AfterDecide,
}

/// A partition's items of one transaction.
struct Share<'a> {
    table: &'a str,
    hash: u64,
    group: u64,
    /// The items' positions in the request, in order.
    positions: Vec<usize>,
    keys: Vec<Vec<u8>>,
}

fn group_of(table: &Table, hash: u64) -> Result<u64, ClusterError> {
    let parts = table.meta.partitions_of(None).unwrap_or_default();
    partition_index(parts, hash)
        .and_then(|i| parts.get(i))
        .map(|p| p.group)
        .ok_or_else(|| {
            ClusterError::Unavailable(format!("table {} has no such partition", table.meta.name))
        })
}

/// Groups `(table, storage key)` pairs by partition, first appearance first.
fn shares<'a>(
    keys: impl Iterator<Item = (&'a Table, &'a [u8])>,
) -> Result<Vec<Share<'a>>, ClusterError> {
    let mut out: Vec<Share> = Vec::new();
    for (pos, (table, key)) in keys.enumerate() {
        let hash = key_hash(key);
        let group = group_of(table, hash)?;
        match out.iter_mut().find(|s| s.group == group) {
            Some(s) => {
                s.positions.push(pos);
                s.keys.push(key.to_vec());
            }
            None => out.push(Share {
                table: &table.meta.name,
                hash,
                group,
                positions: vec![pos],
                keys: vec![key.to_vec()],
            }),
        }
    }
    Ok(out)
}

fn unexpected(what: &str, o: &Outcome) -> ClusterError {
    ClusterError::Unavailable(format!("unexpected outcome for {what}: {o:?}"))
}

impl Router {
    /// Runs a TransactWriteItems (see the module doc). `fingerprint`
    /// identifies the request for its `token`.
    pub async fn transact_write(
        &self,
        txn: TxnId,
        items: &[TxnWrite],
        token: Option<String>,
        fingerprint: String,
    ) -> Result<TxnResult, ClusterError> {
        // A partition split after the request was mapped refused its share,
        // so the attempt was aborted (nothing of it applies): run it again
        // as a new transaction on the newer map. A token's aborted
        // transaction does not stand in the way of its retry.
        let (token, fingerprint) = (&token, &fingerprint);
        until_mapped(|refused| async move {
            if refused == 0 {
                return self
                    .transact_write_once(txn, items, token.clone(), fingerprint.clone())
                    .await;
            }
            let fresh = items
                .iter()
                .map(|i| {
                    Ok(TxnWrite {
                        table: self.fresh_table(&i.table.meta.name)?,
                        write: i.write.clone(),
                    })
                })
                .collect::<Result<Vec<_>, ClusterError>>()?;
            let txn = fastrand::u128(..);
            self.transact_write_once(txn, &fresh, token.clone(), fingerprint.clone())
                .await
        })
        .await
    }

    /// One attempt of [`Router::transact_write`] on the map of `items`'
    /// tables.
    async fn transact_write_once(
        &self,
        txn: TxnId,
        items: &[TxnWrite],
        token: Option<String>,
        fingerprint: String,
    ) -> Result<TxnResult, ClusterError> {
        let keys = items
            .iter()
            .map(|i| (i.table.as_ref(), i.write.storage_key.as_slice()));
        let shares = shares(keys)?;
        let Some(first) = shares.first() else {
            return Ok(TxnResult::Committed);
        };
        let anchor = Anchor {
            table: first.table.to_string(),
            hash: first.hash,
        };
        let participants: Vec<Participant> = shares
            .iter()
            .map(|s| Participant {
                table: s.table.to_string(),
                hash: s.hash,
                keys: s.keys.clone(),
            })
            .collect();
        let single = shares.len() == 1;
        let init = RecordInit {
            participants: participants.clone(),
            token,
            fingerprint,
        };
        let prepares = shares.iter().enumerate().map(|(i, s)| {
            let record = (i == 0 && (!single || init.token.is_some())).then(|| init.clone());
            let cmd = Command::TxnPrepare(Box::new(Prepare {
                txn,
                anchor: anchor.clone(),
                record,
                commit_now: single,
                ops: s
                    .positions
                    .iter()
                    .filter_map(|p| {
                        let write = items.get(*p)?.write.clone();
                        Some(TxnOp {
                            pos: *p as u32,
                            write,
                        })
                    })
                    .collect(),
            }));
            self.propose_at(s.table, None, s.hash, cmd)
        });
        let (mut failures, mut replay, mut error) = (Vec::new(), None, None);
        for r in join_all(prepares).await {
            match r {
                Ok(Outcome::TxnPrepared(f)) => failures.extend(f),
                Ok(Outcome::TxnDuplicate(TxnState::Committed)) => {
                    replay = Some(TxnResult::Committed)
                }
                Ok(Outcome::TxnDuplicate(_)) => replay = Some(TxnResult::InProgress),
                Ok(Outcome::TxnMismatch) => replay = Some(TxnResult::Mismatch),
                Ok(other) => error = Some(unexpected("a prepare", &other)),
                Err(e) => error = Some(e),
            }
        }
        failures.sort_by_key(|(pos, _)| *pos);
        if !single {
            if self.txn_failpoint() == Failpoint::AfterPrepare {
                return Err(ClusterError::Unavailable(
                    "failpoint: stopped after prepare".into(),
                ));
            }
            let all_ok = error.is_none() && replay.is_none() && failures.is_empty();
            let state = self
                .decide(txn, &anchor, all_ok, &participants[0].keys)
                .await?;
            if self.txn_failpoint() == Failpoint::AfterDecide {
                return Err(ClusterError::Unavailable(
                    "failpoint: stopped after decide".into(),
                ));
            }
            let committed = state == TxnState::Committed;
            if self.resolve_all(txn, committed, &participants[1..]).await {
                self.finish_later(txn, anchor);
            }
            if committed {
                return Ok(TxnResult::Committed);
            }
            if error.is_none() && replay.is_none() && failures.is_empty() {
                // Someone recovering it aborted it first.
                let all = (0..items.len() as u32).map(|p| (p, Failure::Conflict));
                return Ok(TxnResult::Canceled(all.collect()));
            }
        }
        match (error, replay) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => Ok(r),
            (None, None) if failures.is_empty() => Ok(TxnResult::Committed),
            (None, None) => Ok(TxnResult::Canceled(failures)),
        }
    }

    /// Decides `txn` on its anchor (first decision wins) and resolves the
    /// anchor's `keys`; returns the decision.
    pub(crate) async fn decide(
        &self,
        txn: TxnId,
        anchor: &Anchor,
        commit: bool,
        keys: &[Vec<u8>],
    ) -> Result<TxnState, ClusterError> {
        // After a refusal the anchor's partition has split since the
        // transaction was mapped: its record follows the anchor's hash, and
        // its keys may now be in two partitions. Decide alone on the newer
        // map (refused commands changed nothing), then resolve the keys
        // wherever they are.
        until_mapped(|refused| async move {
            let with_keys = refused == 0;
            let cmd = Command::TxnDecide {
                txn,
                commit,
                keys: if with_keys { keys.to_vec() } else { Vec::new() },
                anchor_hash: Some(anchor.hash),
            };
            let s = match self
                .propose_at(&anchor.table, None, anchor.hash, cmd)
                .await?
            {
                Outcome::TxnState(s) => s,
                other => return Err(unexpected("a decision", &other)),
            };
            if !with_keys && !keys.is_empty() {
                let committed = s == TxnState::Committed;
                if let Err(e) = self.resolve_keys(&anchor.table, keys, txn, committed).await {
                    // Decided all the same: readers and the sweeper
                    // resolve what is left.
                    tracing::debug!(error = %e, "anchor keys not resolved; the sweeper will");
                }
            }
            Ok(s)
        })
        .await
    }

    /// Applies or drops `txn`'s intents on `keys` of `table`, grouped by
    /// partition on the newest map, and grouped again if a partition split
    /// in between (resolving twice is harmless).
    async fn resolve_keys(
        &self,
        table: &str,
        keys: &[Vec<u8>],
        txn: TxnId,
        commit: bool,
    ) -> Result<(), ClusterError> {
        until_mapped(|_| async move {
            let t = self.fresh_table(table)?;
            let groups = shares(keys.iter().map(|k| (t.as_ref(), k.as_slice())))?;
            let calls = groups.iter().map(|g| {
                let cmd = Command::TxnResolve {
                    txn,
                    commit,
                    keys: g.keys.clone(),
                };
                self.propose_at(g.table, None, g.hash, cmd)
            });
            match join_all(calls).await.into_iter().find_map(Result::err) {
                None => Ok(()),
                Some(e) => Err(e),
            }
        })
        .await
    }

    /// Resolves `txn` on every participant; whether all of them answered.
    async fn resolve_all(&self, txn: TxnId, commit: bool, parts: &[Participant]) -> bool {
        let calls = parts
            .iter()
            .map(|p| self.resolve_keys(&p.table, &p.keys, txn, commit));
        join_all(calls).await.iter().all(|r| r.is_ok())
    }

    /// Marks the record finished, off the client's path.
    fn finish_later(&self, txn: TxnId, anchor: Anchor) {
        let router = self.clone();
        tokio::spawn(async move {
            let cmd = Command::TxnFinish { txn };
            if let Err(e) = router
                .propose_at(&anchor.table, None, anchor.hash, cmd)
                .await
            {
                tracing::debug!(error = %e, "txn finish failed; the sweeper will redo it");
            }
        });
    }

    /// The decision of the transaction holding `intent` (`Pending` while
    /// its record is undecided or not yet created).
    async fn txn_state(&self, intent: &IntentView) -> Result<TxnState, ClusterError> {
        let target = Target::Partition {
            table: &intent.anchor.table,
            index: None,
            hash: intent.anchor.hash,
        };
        let call = Request::TxnRecord { txn: intent.txn };
        match self.route(target, true, &call).await? {
            Reply::TxnRecord(r) => Ok(r.map_or(TxnState::Pending, |r| r.state)),
            _ => Err(ClusterError::Unavailable("unexpected reply".into())),
        }
    }

    /// Settles the transaction whose intent was found on `key` of `table`:
    /// a decided one is resolved there; an undecided one older than
    /// [`TXN_RECOVERY_AFTER_MS`] is aborted first. Returns the decision
    /// (`Pending`: it is young and was left alone).
    pub(crate) async fn settle(
        &self,
        table: &str,
        key: &[u8],
        intent: &IntentView,
    ) -> Result<TxnState, ClusterError> {
        let mut state = self.txn_state(intent).await?;
        if state == TxnState::Pending {
            let age = dynaraft_storage::wall_clock_ms().saturating_sub(intent.ts_ms);
            if age < TXN_RECOVERY_AFTER_MS {
                return Ok(state);
            }
            tracing::info!(txn = %format!("{:x}", intent.txn), "aborting an abandoned transaction");
            state = self.decide(intent.txn, &intent.anchor, false, &[]).await?;
        }
        let commit = state == TxnState::Committed;
        let cmd = Command::TxnResolve {
            txn: intent.txn,
            commit,
            keys: vec![key.to_vec()],
        };
        self.propose_at(table, None, key_hash(key), cmd).await?;
        Ok(state)
    }

    /// What a reader should see of an item that `intent` holds: the
    /// intent's image once its transaction committed, else the item.
    pub(crate) async fn committed_view(
        &self,
        item: Option<Item>,
        intent: &IntentView,
    ) -> Result<Option<Item>, ClusterError> {
        if intent.check_only || self.txn_state(intent).await? != TxnState::Committed {
            return Ok(item);
        }
        Ok(intent.new.clone())
    }

    /// Reads items with their stamps at their leaders, in `keys` order; a
    /// partition that split since the keys were mapped is read again on
    /// the newer map.
    async fn read_slots(&self, keys: &[(Arc<Table>, Vec<u8>)]) -> Result<Vec<Slot>, ClusterError> {
        until_mapped(|refused| async move {
            if refused == 0 {
                return self.read_slots_once(keys).await;
            }
            let fresh = keys
                .iter()
                .map(|(t, k)| Ok((self.fresh_table(&t.meta.name)?, k.clone())))
                .collect::<Result<Vec<_>, ClusterError>>()?;
            self.read_slots_once(&fresh).await
        })
        .await
    }

    async fn read_slots_once(
        &self,
        keys: &[(Arc<Table>, Vec<u8>)],
    ) -> Result<Vec<Slot>, ClusterError> {
        let shares = shares(keys.iter().map(|(t, k)| (t.as_ref(), k.as_slice())))?;
        let reads = shares.iter().map(|s| {
            let keys = s.keys.clone();
            let target = Target::Partition {
                table: s.table,
                index: None,
                hash: s.hash,
            };
            async move { self.route(target, true, &Request::TxnRead { keys }).await }
        });
        let mut out: Vec<Option<Slot>> = vec![None; keys.len()];
        for (share, reply) in shares.iter().zip(join_all(reads).await) {
            let Reply::Slots(slots) = reply? else {
                return Err(ClusterError::Unavailable("unexpected reply".into()));
            };
            for (pos, slot) in share.positions.iter().zip(slots) {
                if let Some(o) = out.get_mut(*pos) {
                    *o = Some(slot);
                }
            }
        }
        out.into_iter()
            .map(|s| s.ok_or_else(|| ClusterError::Unavailable("a read went missing".into())))
            .collect()
    }

    /// TransactGetItems: the items, all as of one moment, or the positions
    /// of the items a running transaction holds (or that kept changing).
    /// `keys` are the items' tables and storage keys.
    pub async fn transact_get(
        &self,
        keys: &[(Arc<Table>, Vec<u8>)],
    ) -> Result<Result<Vec<Option<Item>>, Vec<u32>>, ClusterError> {
        let mut changed = Vec::new();
        for _ in 0..TXN_READ_ATTEMPTS {
            let first = self.read_slots(keys).await?;
            let mut held = Vec::new();
            let mut settled = false;
            for (pos, slot) in first.iter().enumerate() {
                let (Some(intent), Some((table, key))) = (&slot.intent, keys.get(pos)) else {
                    continue;
                };
                match self.settle(&table.meta.name, key, intent).await? {
                    TxnState::Pending => held.push(pos as u32),
                    _ => settled = true,
                }
            }
            if !held.is_empty() {
                return Ok(Err(held));
            }
            if settled {
                continue;
            }
            let second = self.read_slots(keys).await?;
            changed = first
                .iter()
                .zip(&second)
                .enumerate()
                .filter(|(_, (a, b))| {
                    a.stamp != b.stamp || a.item.is_some() != b.item.is_some() || b.intent.is_some()
                })
                .map(|(pos, _)| pos as u32)
                .collect();
            if changed.is_empty() {
                return Ok(Ok(first.into_iter().map(|s| s.item).collect()));
            }
        }
        Ok(Err(changed))
    }
}

/// Sweeps until the node shuts down.
pub async fn run(
    host: Host,
    router: Router,
    catalog: Arc<CatalogWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(TXN_SWEEP_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
        let catalog = catalog.get();
        for table in catalog.tables.values() {
            for p in &table.meta.partitions {
                if !host.group(p.group).is_some_and(|g| g.is_leader()) {
                    continue;
                }
                if let Err(e) = sweep_partition(&host, &router, &table.meta.name, p).await {
                    tracing::debug!(table = %table.meta.name, group = p.group, error = %e,
                        "transaction sweep failed; will retry");
                }
            }
        }
    }
}

/// One sweep of a led partition: abandoned records are decided (abort)
/// and resolved everywhere, old records forgotten, old intents settled.
async fn sweep_partition(
    host: &Host,
    router: &Router,
    table: &str,
    p: &PartitionMeta,
) -> Result<(), ClusterError> {
    let now = dynaraft_storage::wall_clock_ms();
    let stuck_before = now.saturating_sub(TXN_RECOVERY_AFTER_MS);
    let expired_before = now.saturating_sub(TXN_IDEMPOTENCY_WINDOW_MS);
    let (stuck, expired) = txn::due(host.tree(), p.group, stuck_before, expired_before)?;
    let here = Anchor {
        table: table.to_string(),
        hash: p.hash_lo,
    };
    for (id, record) in stuck {
        let mut state = record.state;
        if state == TxnState::Pending {
            let keys: Vec<Vec<u8>> = record
                .participants
                .iter()
                .flat_map(|p| p.keys.clone())
                .collect();
            state = router.decide(id, &here, false, &keys).await?;
        }
        if router
            .resolve_all(id, state == TxnState::Committed, &record.participants)
            .await
        {
            router
                .propose_at(table, None, p.hash_lo, Command::TxnFinish { txn: id })
                .await?;
        }
    }
    if !expired.is_empty() {
        router
            .propose_at(table, None, p.hash_lo, Command::TxnForget { txns: expired })
            .await?;
    }
    let span = dynaraft_storage::Span::load(host.tree(), p.group)?;
    for (key, intent) in txn::intents(host.tree(), span)? {
        if intent.ts_ms < stuck_before {
            router.settle(table, &key, &intent).await?;
        }
    }
    Ok(())
}
