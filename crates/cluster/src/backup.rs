//! On-demand backups and restores: the copier that fills a backup with a
//! table's items as of one moment, and a restored table with a backup's.
//!
//! A backup's items live in a hidden table of their own
//! ([`BACKUP_TABLE_PREFIX`] and the backup's id; no DynamoDB table name
//! holds `~` or `/`, so no client can name it, list it or meet it), with
//! the source's key schema and one partition per source partition, over the
//! same hash range. Being a table, it is replicated like one: a backup
//! survives the loss of any zone. Its `TableMeta::backup` says what it is
//! of and how far the copy is.
//!
//! CreateBackup (in `dynaraft-api`) pins every source partition's change
//! log (`Command::PinChangeLog`: from then on every write is logged and
//! kept), only then picks the backup's moment T, and creates the hidden
//! table. Then, on each storage node, for each source partition whose replica
//! leads its group, [`run`]:
//!
//! 1. **Copies** the partition's items into the hidden table,
//!    [`BACKUP_CHUNK_ITEMS`] at a time, while the table takes writes: the
//!    copy is of no single moment, but every item is read after T.
//! 2. **Undoes** every change logged after T, newest first, down to the
//!    first record at or before T (timestamps never decrease along a
//!    partition's log): each record's old image is written back (or the
//!    item deleted if it had none). A key changed after T ends with the
//!    old image of its first change after T, which is its value at T; a key
//!    not changed after T was copied with its value at T. So the hidden
//!    table holds the partition exactly at T.
//! 3. Reports the partition copied (`Command::PartitionCopied`, with the
//!    hidden partition's item count and bytes); when every partition has,
//!    the backup is AVAILABLE. The pin is then released.
//!
//! A copier that stops anywhere (crash, lost leadership) loses only its
//! place: the next leader copies the partition again from the start, and
//! the undo makes the result the same. A pin no longer needed (its backup
//! finished or is gone) is released, once older than [`PIN_GRACE_MS`]: a
//! CreateBackup still in flight pins before its backup is in the catalog.
//!
//! A restore (RestoreTableFromBackup) creates the target table CREATING
//! with `TableMeta::restore`; the copier writes each hidden partition's
//! items into it through the ordinary write path (so its indexes fill as
//! they would for any write), reports each partition, and the control
//! plane makes the table ACTIVE after the last.

use crate::ClusterError;
use crate::catalog::{Catalog, CatalogWatch, Table};
use crate::host::Host;
use crate::router::Router;
use dynaraft_model::Item;
use dynaraft_storage::catalog::{BACKUP_CREATING, BackupMeta, DAY_MS, PITR_HOLDER, RestoreMeta};
use dynaraft_storage::global;
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions};
use dynaraft_storage::{Command, JsonDoc, Outcome, TableMeta, WriteCommand, WriteKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The catalog names of backups' hidden tables start with this.
pub const BACKUP_TABLE_PREFIX: &str = "~backups/";
/// Pause between passes that found nothing to copy, in milliseconds.
pub const BACKUP_POLL_MS: u64 = 50;
/// Longest wait, before a partition's copy starts, for the local control
/// replica's linearizable barrier (`still_to_copy`), in milliseconds; past
/// it the pass fails and is retried.
pub const CATALOG_CURRENT_WAIT_MS: u64 = 2_000;
/// Most items one copy step reads and writes (at most `MAX_PAGE_BYTES`,
/// so about 1 MiB: several `WriteBatch`es of [`COPY_BATCH_BYTES`],
/// [`COPY_BATCHES_IN_FLIGHT`] at a time).
pub const BACKUP_CHUNK_ITEMS: usize = 1024;
/// Most change records one undo step reads, and their most bytes.
pub const UNDO_BATCH_RECORDS: usize = 256;
pub const UNDO_BATCH_BYTES: usize = 1024 * 1024;
/// Most bytes (keys and items, as logged) of one `WriteBatch` a copy
/// proposes. Each batch is one Raft entry whose apply the table's own
/// writes wait behind: make bench's backups row measured PutItem p99 during
/// a backup at 14x of without with 256 KiB batches, 3.0x with 32 KiB and
/// 1.56x with 8 KiB, the backup of 1 GiB taking 45.7, 62.8 and 120.6 s
/// (analysis.md).
pub const COPY_BATCH_BYTES: usize = 8 * 1024;
/// Most `WriteBatch`es of one copy step in flight at once (more queue
/// more of the copy ahead of the table's writes).
pub const COPY_BATCHES_IN_FLIGHT: usize = 1;
/// Most single writes of one step in flight at once (what a batch left).
pub const COPY_WRITE_CONCURRENCY: usize = 32;
/// How old a pin must be before it may be released, in milliseconds:
/// CreateBackup and UpdateContinuousBackups pin before the catalog shows
/// what for.
pub const PIN_GRACE_MS: u64 = 60_000;

/// The catalog name of the hidden table of backup `id`.
pub fn backup_table_name(id: &str) -> String {
    format!("{BACKUP_TABLE_PREFIX}{id}")
}

/// The BackupName of point-in-time recovery's snapshots.
pub const PITR_SNAPSHOT_NAME: &str = "pitr-snapshot";
/// How often point-in-time recovery snapshots a table, in milliseconds,
/// unless configured (`--pitr-snapshot-interval-s`).
pub const DEFAULT_PITR_SNAPSHOT_INTERVAL_MS: u64 = DAY_MS;
/// Most point-in-time snapshots kept of one table (the newest): a daily
/// snapshot over the longest recovery period.
pub const MAX_PITR_SNAPSHOTS: usize = 35;

/// Where one partition's copy stands, in this node's memory.
#[derive(Default, Clone)]
struct Progress {
    /// Storage key the scan resumes after (`None`: from the start).
    next: Option<Vec<u8>>,
    /// Once the scan is done: undo records before this sequence.
    undo_before: Option<u64>,
    /// A redo: records up to this sequence are redone.
    redo_after: u64,
}

/// Copies until the node shuts down.
pub async fn run(
    host: Host,
    router: Router,
    catalog: Arc<CatalogWatch>,
    snapshot_every_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state: HashMap<(String, u64), Progress> = HashMap::new();
    loop {
        let c = catalog.get();
        if let Err(e) = snapshots(&host, &router, &c, snapshot_every_ms).await {
            tracing::warn!(error = %e, "point-in-time snapshot step failed; will retry");
        }
        let busy = match once(&host, &router, &c, &mut state).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "backup copy step failed; will retry");
                false
            }
        };
        let pause = Duration::from_millis(if busy { 0 } else { BACKUP_POLL_MS });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}

fn leads(host: &Host, group: u64) -> bool {
    host.group(group).is_some_and(|g| g.is_leader())
}

/// One pass: a step of every copy this node leads, the recovery windows
/// moved on, and pins released.
async fn once(
    host: &Host,
    router: &Router,
    catalog: &Catalog,
    state: &mut HashMap<(String, u64), Progress>,
) -> Result<bool, ClusterError> {
    let mut busy = false;
    state.retain(|(table, _), _| catalog.tables.contains_key(table));
    for t in catalog.tables.values() {
        let mut steps = Vec::new();
        if let Some(b) = &t.meta.backup
            && b.status == BACKUP_CREATING
        {
            for (i, p) in b.source.partitions.iter().enumerate() {
                if !b.copied.contains(&p.group) {
                    let step = Copy::AsOf {
                        at_ms: b.at_ms,
                        holder: t.meta.name.clone(),
                        stats_of: t.meta.partitions.get(i).cloned(),
                        may_undo: true,
                    };
                    steps.push((p.group, step));
                }
            }
        }
        if let Some(r) = &t.meta.restore
            && r.in_progress
        {
            let pending = |g: &u64| !r.copied.contains(g) && r.sources.contains(g);
            match (&r.source_table, r.redo_from_ms) {
                // To a point in time from a snapshot: its items as they
                // are, then, once all are in, the source's changes after
                // it redone, a split child's after its parent's (its
                // records are the newer ones for the keys it took over).
                (Some(source), Some(from_ms)) => {
                    let (Some(snap), Some(s)) = (
                        catalog.tables.get(&r.backup_table),
                        catalog.tables.get(source),
                    ) else {
                        continue;
                    };
                    let snap_groups: Vec<u64> =
                        snap.meta.partitions.iter().map(|p| p.group).collect();
                    for g in snap_groups.iter().filter(|g| pending(g)) {
                        steps.push((
                            *g,
                            Copy::Plain {
                                from: r.backup_table.clone(),
                            },
                        ));
                    }
                    if snap_groups.iter().all(|g| r.copied.contains(g)) {
                        for p in s.meta.partitions.iter().filter(|p| pending(&p.group)) {
                            let parent_done = p.parent.is_none_or(|parent| {
                                !r.sources.contains(&parent) || r.copied.contains(&parent)
                            });
                            if parent_done {
                                let to_ms = r.restore_ms;
                                steps.push((p.group, Copy::Redo { from_ms, to_ms }));
                            }
                        }
                    }
                }
                // From a backup: its items, as they are.
                (None, _) => {
                    for g in r.sources.iter().filter(|g| pending(g)) {
                        steps.push((
                            *g,
                            Copy::Plain {
                                from: r.backup_table.clone(),
                            },
                        ));
                    }
                }
                // To a point in time: the live table, its changes since
                // undone; a partition's own undo waits for its split
                // children's (their records are the newer ones).
                (Some(source), None) => {
                    let Some(s) = catalog.tables.get(source) else {
                        continue;
                    };
                    for p in s.meta.partitions.iter().filter(|p| pending(&p.group)) {
                        let children_done = s
                            .meta
                            .partitions
                            .iter()
                            .filter(|c| c.parent == Some(p.group))
                            .all(|c| r.copied.contains(&c.group));
                        let step = Copy::AsOf {
                            at_ms: r.restore_ms,
                            holder: PITR_HOLDER.to_string(),
                            stats_of: None,
                            may_undo: children_done,
                        };
                        steps.push((p.group, step));
                    }
                }
            }
        }
        for (group, step) in steps {
            if !leads(host, group) {
                continue;
            }
            let slot = (t.meta.name.clone(), group);
            let fresh = !state.contains_key(&slot);
            if fresh && !still_to_copy(host, &t.meta.name, group).await? {
                continue;
            }
            let mut progress = state.get(&slot).cloned().unwrap_or_default();
            busy = true;
            if copy_step(host, router, catalog, t, group, &step, &mut progress).await? {
                state.remove(&slot);
            } else {
                state.insert(slot, progress);
            }
        }
        if let Some(pitr) = &t.meta.pitr {
            busy |= keep_window(host, catalog, t, pitr).await?;
        }
    }
    release_pins(host, catalog).await?;
    Ok(busy)
}

/// Whether partition `group` of `table` is still to be copied, by a
/// catalog that holds every committed change, before a copy of it starts.
/// A node that restarts reads its control replica's catalog as the replica
/// replays its log, so for a moment a partition copied and reported before
/// the restart shows as still to copy; copying it again wrote the live
/// items over its finished undo, and the copy stopped as soon as the newer
/// catalog arrived, with no undo after it (export_crash.py: an export at T
/// held 114 items, one partition's first chunk, as they were after T). So
/// a node holding a control replica makes it current (a linearizable
/// barrier) and reads the catalog from it; one without relies on the
/// catalog its feed brought (from the control group's leader).
async fn still_to_copy(host: &Host, table: &str, group: u64) -> Result<bool, ClusterError> {
    let Some(control) = host.group(dynaraft_storage::machine::CATALOG_GROUP) else {
        return Ok(true);
    };
    let behind = |why: &str| ClusterError::Unavailable(format!("control replica {why}"));
    if control.is_leader() {
        // The barrier also waits for what a restart left unapplied.
        let limit = Duration::from_millis(CATALOG_CURRENT_WAIT_MS);
        match tokio::time::timeout(limit, control.linearize()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(behind(&e.to_string())),
            Err(_) => return Err(behind("has not applied its log yet")),
        }
    } else if control.catch_up_lag() != Some(0) {
        return Err(behind("is behind its leader"));
    }
    let current = Catalog::load(host.tree())?;
    let Some(t) = current.tables.get(table) else {
        return Ok(false);
    };
    let backup = t
        .meta
        .backup
        .as_ref()
        .is_some_and(|b| b.status == BACKUP_CREATING && !b.copied.contains(&group));
    let restore = t
        .meta
        .restore
        .as_ref()
        .is_some_and(|r| r.in_progress && !r.copied.contains(&group));
    Ok(backup || restore)
}

/// How one partition is copied into a table.
enum Copy {
    /// A backup's hidden partition into a restored table, as it is.
    Plain { from: String },
    /// A live partition as of `at_ms`: copied, then its changes after
    /// `at_ms` undone from the log `holder` pinned (once `may_undo`). The
    /// hidden partition `stats_of` (a backup's) is measured when done.
    AsOf {
        at_ms: u64,
        holder: String,
        stats_of: Option<dynaraft_storage::PartitionMeta>,
        may_undo: bool,
    },
    /// A live partition's changes after `from_ms` up to `to_ms` redone
    /// (their new images written) onto a snapshot taken at `from_ms`.
    Redo { from_ms: u64, to_ms: u64 },
}

/// Moves the recovery window of `t` on in its led partitions: each pin
/// goes past the changes older than the period (but none a restore in
/// progress still needs); whether it moved any.
async fn keep_window(
    host: &Host,
    catalog: &Catalog,
    t: &Table,
    pitr: &dynaraft_storage::catalog::PitrMeta,
) -> Result<bool, ClusterError> {
    let now = dynaraft_storage::wall_clock_ms();
    let mut horizon = now.saturating_sub(pitr.period_days.saturating_mul(DAY_MS));
    for r in restores_from(catalog, &t.meta.name) {
        horizon = horizon.min(r.redo_from_ms.unwrap_or(r.restore_ms));
    }
    let mut moved = false;
    for p in &t.meta.partitions {
        if !leads(host, p.group) {
            continue;
        }
        let pins = dynaraft_storage::backup::pins(host.tree(), p.group)?;
        let Some(&(after, _)) = pins.get(PITR_HOLDER) else {
            continue;
        };
        // Most passes find the oldest kept change inside the window.
        let first = global::read_changes(host.tree(), p.group, after, (1, UNDO_BATCH_BYTES))?;
        if first.first().is_none_or(|(_, r)| r.ts_ms >= horizon) {
            continue;
        }
        let limits = (UNDO_BATCH_RECORDS, UNDO_BATCH_BYTES);
        let old = global::read_changes(host.tree(), p.group, after, limits)?;
        let Some(upto) = old
            .iter()
            .take_while(|(_, r)| r.ts_ms < horizon)
            .map(|(seq, _)| *seq)
            .last()
        else {
            continue;
        };
        let advance = Command::AdvancePin {
            holder: PITR_HOLDER.to_string(),
            upto,
        };
        host.propose(p.group, advance).await?;
        moved = true;
    }
    Ok(moved)
}

/// The restores to a point in time in progress from table `name`.
fn restores_from<'a>(
    catalog: &'a Catalog,
    name: &'a str,
) -> impl Iterator<Item = &'a RestoreMeta> + 'a {
    catalog
        .tables
        .values()
        .filter_map(|t| t.meta.restore.as_deref())
        .filter(move |r| r.in_progress && r.source_table.as_deref() == Some(name))
}

/// Releases the pins of led partitions no longer needed: a backup's once
/// it finished copying them (or is gone, or was never created), point-in-
/// time recovery's once it is off and no restore to a time needs them.
async fn release_pins(host: &Host, catalog: &Catalog) -> Result<(), ClusterError> {
    let now = dynaraft_storage::wall_clock_ms();
    for (group, (table, _)) in &catalog.partitions {
        if table.starts_with(BACKUP_TABLE_PREFIX) || !leads(host, *group) {
            continue;
        }
        for (holder, (_, pinned_ms)) in dynaraft_storage::backup::pins(host.tree(), *group)? {
            // A pin is taken before the catalog says what it is for.
            if now < pinned_ms.saturating_add(PIN_GRACE_MS) {
                continue;
            }
            let needed = if holder == PITR_HOLDER {
                catalog
                    .tables
                    .get(table)
                    .is_some_and(|t| t.meta.pitr.is_some())
                    || restores_from(catalog, table).next().is_some()
            } else {
                // A backup still copying this partition.
                catalog
                    .tables
                    .get(&holder)
                    .and_then(|t| t.meta.backup.as_ref())
                    .is_some_and(|b| b.status == BACKUP_CREATING && !b.copied.contains(group))
            };
            if !needed {
                host.propose(*group, Command::UnpinChangeLog { holder })
                    .await?;
            }
        }
    }
    Ok(())
}

/// A put (or, without `item`, a delete) of `key` in `t`, through the
/// ordinary write path: `t`'s indexes and stream follow it. For writes
/// made once already and carried here (a backup's copy, a restore, a
/// write replicated from another region: `ops::replication`), so the item
/// collection's limit is not applied again. `None` when `key` is not a
/// key of `t`.
pub fn plain_write(t: &Table, key: &Item, item: Option<&Item>) -> Option<WriteCommand> {
    Some(WriteCommand {
        kind: if item.is_some() {
            WriteKind::Put
        } else {
            WriteKind::Delete
        },
        storage_key: t.schema.storage_key(key)?,
        key: JsonDoc::from_item(key),
        item: item.map(JsonDoc::from_item),
        condition: None,
        update: None,
        names: BTreeMap::new(),
        values: JsonDoc::from_item(&Item::new()),
        local: t.meta.local_index_specs(&t.schema, u64::MAX),
        global: t.meta.global_key_specs(),
        legacy_update: false,
        stream: t.meta.enabled_stream().is_some(),
        origin: dynaraft_storage::global::Origin::Client,
        replicated: dynaraft_storage::replica::GlobalWrite::local(t.meta.replication_region()),
    })
}

/// Applies `writes` (distinct keys) to `t`: one `WriteBatch` per
/// partition of the newest map and at most [`COPY_BATCH_BYTES`],
/// [`COPY_BATCHES_IN_FLIGHT`] at a time. One Raft entry per batch rather
/// than per item keeps a copy's share of the nodes' log, apply and fsync
/// work small beside the table's own writes. What a batch did not write (the partition split
/// under it, or a write was held back) is written key by key.
async fn write_all(
    router: &Router,
    t: &Table,
    writes: Vec<WriteCommand>,
) -> Result<(), ClusterError> {
    let newest = router.fresh_table(&t.meta.name)?;
    let mut batches: BTreeMap<u64, Vec<(usize, Vec<WriteCommand>)>> = BTreeMap::new();
    for w in writes {
        let size = w.storage_key.len()
            + w.key.as_str().len()
            + w.item.as_ref().map_or(0, |i| i.as_str().len());
        let hash = newest
            .meta
            .partition_for_key(&w.storage_key)
            .map_or(0, |p| p.hash_lo);
        let open = batches.entry(hash).or_default();
        match open.last_mut() {
            Some((bytes, batch)) if *bytes + size <= COPY_BATCH_BYTES => {
                *bytes += size;
                batch.push(w);
            }
            _ => open.push((size, vec![w])),
        }
    }
    let mut all: Vec<(u64, Vec<WriteCommand>)> = batches
        .into_iter()
        .flat_map(|(hash, open)| open.into_iter().map(move |(_, batch)| (hash, batch)))
        .collect();
    while !all.is_empty() {
        let now: Vec<_> = all.drain(..COPY_BATCHES_IN_FLIGHT.min(all.len())).collect();
        let calls = now
            .into_iter()
            .map(|(hash, batch)| write_batch(router, t, hash, batch));
        for outcome in futures_util::future::join_all(calls).await {
            outcome?;
        }
    }
    Ok(())
}

/// Proposes `batch` to the partition of `t` holding `hash`, then writes
/// what it did not write one by one.
async fn write_batch(
    router: &Router,
    t: &Table,
    hash: u64,
    batch: Vec<WriteCommand>,
) -> Result<(), ClusterError> {
    let cmd = Command::WriteBatch(batch.clone());
    let written = match router.propose_at(&t.meta.name, None, hash, cmd).await {
        Ok(Outcome::Batched { written }) => written,
        // The group split after the map was read; it wrote nothing.
        Err(ClusterError::Storage(dynaraft_storage::StorageError::WrongRange(_))) => 0,
        Ok(other) => {
            return Err(ClusterError::Unavailable(format!(
                "a copied batch to {} was refused: {other:?}",
                t.meta.name
            )));
        }
        Err(e) => return Err(e),
    };
    let rest: Vec<WriteCommand> = batch.into_iter().skip(written).collect();
    for chunk in rest.chunks(COPY_WRITE_CONCURRENCY) {
        let calls = chunk.iter().map(|w| router.write(t, w.clone()));
        for outcome in futures_util::future::join_all(calls).await {
            match outcome? {
                Outcome::Written { .. } => {}
                other => {
                    return Err(ClusterError::Unavailable(format!(
                        "a copied write to {} was refused: {other:?}",
                        t.meta.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Reads the next chunk of `group`'s items after `progress.next`, and
/// moves it on (`None` once the scan is done).
async fn read_chunk(
    host: &Host,
    schema: &dynaraft_model::KeySchema,
    group: u64,
    progress: &mut Progress,
) -> Result<Vec<Item>, ClusterError> {
    let opts = ReadOptions {
        forward: true,
        start_after: progress.next.clone(),
        limit: Some(BACKUP_CHUNK_ITEMS),
        max_bytes: MAX_PAGE_BYTES,
    };
    let page = host
        .read_range(group, schema, None, (&[], None), &opts, true)
        .await?;
    progress.next = page.last_key.as_ref().and_then(|k| schema.storage_key(k));
    Ok(page.items)
}

/// One step of copying partition `group` into `target` as `step` says;
/// whether the partition is done (and reported to the control plane).
async fn copy_step(
    host: &Host,
    router: &Router,
    catalog: &Catalog,
    target: &Table,
    group: u64,
    step: &Copy,
    progress: &mut Progress,
) -> Result<bool, ClusterError> {
    let (at_ms, holder, stats_of, may_undo) = match step {
        Copy::Plain { from } => {
            let source = catalog
                .tables
                .get(from)
                .ok_or_else(|| ClusterError::Unavailable(format!("backup table {from} is gone")))?;
            copy_chunk(host, router, &source.schema, target, group, progress).await?;
            if progress.next.is_some() {
                return Ok(false);
            }
            report(router, target, group, (0, 0)).await?;
            return Ok(true);
        }
        Copy::Redo { from_ms, to_ms } => {
            return redo_step(host, router, target, group, (*from_ms, *to_ms), progress).await;
        }
        Copy::AsOf {
            at_ms,
            holder,
            stats_of,
            may_undo,
        } => (*at_ms, holder, stats_of, *may_undo),
    };
    let Some(before) = progress.undo_before else {
        copy_chunk(host, router, &target.schema, target, group, progress).await?;
        if progress.next.is_none() {
            // Every change the scan may have seen is at or before here.
            let (last, _) = global::change_log_state(host.tree(), group)?;
            progress.undo_before = Some(last.saturating_add(1));
        }
        return Ok(false);
    };
    if !may_undo {
        return Ok(false);
    }
    let pins = dynaraft_storage::backup::pins(host.tree(), group)?;
    let Some(&(pinned_after, pinned_ms)) = pins.get(holder) else {
        return Err(ClusterError::Unavailable(format!(
            "partition {group} holds no pin {holder}; its changes cannot be undone"
        )));
    };
    if pinned_ms > at_ms {
        return Err(ClusterError::Unavailable(format!(
            "partition {group} kept its changes only from {pinned_ms} ms, after {at_ms} ms"
        )));
    }
    let limits = (UNDO_BATCH_RECORDS, UNDO_BATCH_BYTES);
    let records = global::read_changes_before(host.tree(), group, before, limits)?;
    // Newest first: the last image seen for a key is its oldest change's.
    let mut undo: BTreeMap<Vec<u8>, (Item, Option<Item>)> = BTreeMap::new();
    let mut finished = records.is_empty();
    for (seq, r) in &records {
        if *seq <= pinned_after || r.ts_ms <= at_ms {
            finished = true;
            break;
        }
        progress.undo_before = Some(*seq);
        // A global table's write that changed nothing has nothing to undo.
        if r.origin == global::Origin::Unchanged {
            continue;
        }
        let Some(image) = r.old.as_ref().or(r.new.as_ref()) else {
            continue;
        };
        let key = target.schema.key_of(image);
        undo.insert(r.storage_key.clone(), (key, r.old.clone()));
    }
    let writes = undo
        .values()
        .filter_map(|(key, old)| plain_write(target, key, old.as_ref()))
        .collect();
    write_all(router, target, writes).await?;
    if !finished {
        return Ok(false);
    }
    let stats = match stats_of {
        Some(p) => {
            let s = router.partition_stats(&target.meta.name, None, p).await?;
            (s.count, s.bytes)
        }
        None => (0, 0),
    };
    report(router, target, group, stats).await?;
    if target.meta.backup.is_some() {
        let release = Command::UnpinChangeLog {
            holder: holder.clone(),
        };
        host.propose(group, release).await?;
    }
    Ok(true)
}

/// One step of redoing partition `group`'s changes in `(from_ms, to_ms]`
/// onto `target` (which holds the snapshot of `from_ms`), oldest first:
/// each key ends with the new image of its last change up to `to_ms`.
/// Whether the partition is done (and reported).
async fn redo_step(
    host: &Host,
    router: &Router,
    target: &Table,
    group: u64,
    (from_ms, to_ms): (u64, u64),
    progress: &mut Progress,
) -> Result<bool, ClusterError> {
    let pins = dynaraft_storage::backup::pins(host.tree(), group)?;
    let Some(&(pinned_after, _)) = pins.get(PITR_HOLDER) else {
        return Err(ClusterError::Unavailable(format!(
            "partition {group} holds no point-in-time pin; its changes cannot be redone"
        )));
    };
    let after = progress.redo_after.max(pinned_after);
    let limits = (UNDO_BATCH_RECORDS, UNDO_BATCH_BYTES);
    let records = global::read_changes(host.tree(), group, after, limits)?;
    // Oldest first: the last image seen for a key is its newest change's.
    let mut redo: BTreeMap<Vec<u8>, (Item, Option<Item>)> = BTreeMap::new();
    let mut finished = records.is_empty();
    for (seq, r) in &records {
        if r.ts_ms > to_ms {
            finished = true;
            break;
        }
        progress.redo_after = *seq;
        if r.ts_ms <= from_ms || r.origin == global::Origin::Unchanged {
            continue;
        }
        let Some(image) = r.new.as_ref().or(r.old.as_ref()) else {
            continue;
        };
        let key = target.schema.key_of(image);
        redo.insert(r.storage_key.clone(), (key, r.new.clone()));
    }
    let writes = redo
        .values()
        .filter_map(|(key, new)| plain_write(target, key, new.as_ref()))
        .collect();
    write_all(router, target, writes).await?;
    if !finished {
        return Ok(false);
    }
    report(router, target, group, (0, 0)).await?;
    Ok(true)
}

/// The point-in-time snapshots of table `name`, by their hidden tables.
pub fn snapshots_of<'a>(
    catalog: &'a Catalog,
    name: &'a str,
) -> impl Iterator<Item = (&'a Table, &'a BackupMeta)> + 'a {
    catalog.tables.values().filter_map(move |t| {
        let b = t.meta.backup.as_deref()?;
        (b.system && b.source.name == name).then_some((t.as_ref(), b))
    })
}

/// On the control-plane leader: snapshots every table with point-in-time
/// recovery once `every_ms` has passed since its last snapshot (or since
/// recovery was enabled), the way CreateBackup backs a table up; and drops
/// the snapshots no restore can start from any more (older than the
/// recovery window, of a table gone or without recovery), unless a restore
/// in progress reads them.
async fn snapshots(
    host: &Host,
    router: &Router,
    catalog: &Catalog,
    every_ms: u64,
) -> Result<(), ClusterError> {
    if every_ms == 0 || !leads(host, dynaraft_storage::machine::CATALOG_GROUP) {
        return Ok(());
    }
    let now = dynaraft_storage::wall_clock_ms();
    for t in catalog.tables.values() {
        let Some(pitr) = t.meta.pitr.as_deref() else {
            continue;
        };
        if t.meta.status != dynaraft_storage::TableStatus::Active {
            continue;
        }
        let last = snapshots_of(catalog, &t.meta.name)
            .map(|(_, b)| b.at_ms)
            .max();
        if now < last.unwrap_or(pitr.since_ms).saturating_add(every_ms) {
            continue;
        }
        let id = format!("{now:014}-{:08x}", fastrand::u32(..));
        let holder = backup_table_name(&id);
        for p in &t.meta.partitions {
            let pin = Command::PinChangeLog {
                holder: holder.clone(),
            };
            router
                .propose_at(&t.meta.name, None, p.hash_lo, pin)
                .await?;
        }
        let at_ms = dynaraft_storage::wall_clock_ms();
        let mut meta = hidden_table(&id, PITR_SNAPSHOT_NAME, &t.meta, at_ms);
        if let Some(b) = meta.backup.as_mut() {
            b.system = true;
        }
        router.change_catalog(Command::CreateTable(meta)).await?;
        tracing::debug!(table = %t.meta.name, at_ms, "point-in-time snapshot started");
    }
    let in_use = |name: &str| {
        catalog
            .tables
            .values()
            .filter_map(|t| t.meta.restore.as_deref())
            .any(|r| r.in_progress && r.backup_table == name)
    };
    for t in catalog.tables.values() {
        let Some(b) = t.meta.backup.as_deref().filter(|b| b.system) else {
            continue;
        };
        let window_start = catalog
            .tables
            .get(&b.source.name)
            .and_then(|s| s.meta.pitr.as_deref())
            .map(|p| p.earliest_ms(now));
        let newer = snapshots_of(catalog, &b.source.name)
            .filter(|(_, o)| o.at_ms > b.at_ms)
            .count();
        let useless =
            window_start.is_none_or(|start| b.at_ms < start) || newer >= MAX_PITR_SNAPSHOTS;
        if useless && !in_use(&t.meta.name) {
            router
                .change_catalog(Command::DropTable {
                    name: t.meta.name.clone(),
                })
                .await?;
        }
    }
    Ok(())
}

/// Copies the next chunk of partition `group` (of a table with `schema`)
/// into `target`.
async fn copy_chunk(
    host: &Host,
    router: &Router,
    schema: &dynaraft_model::KeySchema,
    target: &Table,
    group: u64,
    progress: &mut Progress,
) -> Result<(), ClusterError> {
    let items = read_chunk(host, schema, group, progress).await?;
    let writes = items
        .iter()
        .filter_map(|i| plain_write(target, &target.schema.key_of(i), Some(i)))
        .collect();
    write_all(router, target, writes).await
}

/// Tells the control plane partition `group` is copied into `target`,
/// with (items, bytes) of a backup's hidden partition.
async fn report(
    router: &Router,
    target: &Table,
    group: u64,
    (items, bytes): (u64, u64),
) -> Result<(), ClusterError> {
    let done = Command::PartitionCopied {
        table: target.meta.name.clone(),
        group,
        items,
        bytes,
    };
    router.change_catalog(done).await?;
    Ok(())
}

/// The hidden table that will hold backup `id` of `source`, named `name`,
/// at `at_ms`: `source`'s key schema, one partition per source partition
/// over the same hash range, CREATING until every partition is copied.
pub fn hidden_table(id: &str, name: &str, source: &TableMeta, at_ms: u64) -> TableMeta {
    TableMeta {
        backup: Some(Box::new(BackupMeta {
            name: name.to_string(),
            source: Box::new(source.clone()),
            at_ms,
            status: BACKUP_CREATING.to_string(),
            copied: Vec::new(),
            items: 0,
            bytes: 0,
            system: false,
        })),
        ..snapshot_table(backup_table_name(id), source)
    }
}

/// A hidden table `name` for a copy of `source`'s items: its key schema
/// only (no index, stream or TTL), one partition per source partition over
/// the same hash range.
pub fn snapshot_table(name: String, source: &TableMeta) -> TableMeta {
    let keys: Vec<&str> = std::iter::once(source.hash_key.0.as_str())
        .chain(source.range_key.as_ref().map(|r| r.0.as_str()))
        .collect();
    TableMeta {
        name,
        partitions: source
            .partitions
            .iter()
            .map(|p| dynaraft_storage::PartitionMeta {
                group: 0,
                hash_lo: p.hash_lo,
                replicas: Vec::new(),
                epoch: 1,
                parent: None,
                splitting: None,
                shard_ends: Vec::new(),
                parent_shard: None,
            })
            .collect(),
        status: dynaraft_storage::TableStatus::Active,
        created_ms: 0,
        hash_key: source.hash_key.clone(),
        range_key: source.range_key.clone(),
        attributes: source
            .attributes
            .iter()
            .filter(|(n, _)| keys.contains(&n.as_str()))
            .cloned()
            .collect(),
        billing_mode: "PAY_PER_REQUEST".into(),
        read_capacity: 0,
        write_capacity: 0,
        tags: BTreeMap::new(),
        deletion_protection: false,
        last_increase_ms: 0,
        last_decrease_ms: 0,
        decreases_today: 0,
        ttl_attribute: None,
        local_indexes: Vec::new(),
        global_indexes: Vec::new(),
        next_index_id: 0,
        streams: Vec::new(),
        replication: None,
        backup: None,
        restore: None,
        pitr: None,
        importing: None,
        resource_policies: Vec::new(),
        on_demand_max: Default::default(),
        insights: Vec::new(),
        warm: None,
    }
}
