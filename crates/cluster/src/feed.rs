//! The global index feeder: carries each base partition's change log to
//! the partitions of the table's global indexes, and backfills an index
//! created on a table that already holds items.
//!
//! It runs on every storage node and works on the base partitions whose
//! replica leads its group. One pass over such a partition:
//!
//! 1. Reads up to [`FEED_BATCH_RECORDS`] (or [`FEED_BATCH_BYTES`]) change
//!    records after the partition's trim point (`global::read_changes`).
//! 2. For every global index, turns each record into index operations (the
//!    entry of the new image, and a removal in the partition that held the
//!    old image's entry when that is another one), grouped by index
//!    partition, and proposes each group as one `IndexApply` to that
//!    partition's leader, waiting for all of them.
//! 3. Proposes `TrimChangeLog` to the base group, which deletes the
//!    delivered records (or, for a table with a readable stream, keeps
//!    them for its retention) and frees room (writes are refused while
//!    `global::MAX_INDEX_LAG_RECORDS` records wait). A table without
//!    indexes has nothing to deliver: its cursor jumps to the last record.
//! 4. For an index being created: `StartBackfill` (from then on every write
//!    is logged), then chunks of [`BACKFILL_CHUNK_ITEMS`] items, each sent
//!    with the change sequence read before the chunk, then `close` to every
//!    index partition, `BackfillProgress { next: None }`, and finally
//!    `IndexBackfilled` to the control plane.
//!
//! A feeder that stops anywhere (crash, lost leadership) leaves the trim
//! point and the backfill position where they were; the next leader's
//! feeder resends from there, and the index partitions skip what they
//! already applied (see `dynaraft_storage::global`).
//!
//! Caveats: partitions are fed one after another by one task per node, so
//! a stalled index partition delays the others led by the same node. The
//! feeder wakes when a proposal commits on its node, and polls every
//! [`FEED_POLL_MS`] besides.

use crate::ClusterError;
use crate::catalog::{Catalog, CatalogWatch, Table};
use crate::host::Host;
use crate::router::Router;
use dynaraft_model::{Item, KeySchema};
use dynaraft_storage::catalog::{key_hash, partition_index};
use dynaraft_storage::global::{self, Backfill, ChangeRecord, IndexBatch, IndexOp};
use dynaraft_storage::index::{entry_storage_key, invalid_key_value, oversized_index_key, project};
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions};
use dynaraft_storage::{Command, GlobalIndexMeta, IndexStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Pause between passes that found nothing to do, in milliseconds.
pub const FEED_POLL_MS: u64 = 10;
/// Most change records delivered per pass and partition.
pub const FEED_BATCH_RECORDS: usize = 512;
/// Most change-record bytes delivered per pass and partition.
pub const FEED_BATCH_BYTES: usize = 1024 * 1024;
/// Most change records one retention purge removes.
pub const PURGE_BATCH_RECORDS: u64 = 1_000;
/// Most base items one backfill step reads.
pub const BACKFILL_CHUNK_ITEMS: usize = 256;
/// How often partitions of tables without global indexes are checked for
/// change records (logged by a router that had not yet seen an index
/// deleted, or by a partition that once backfilled), in milliseconds.
pub const FEED_IDLE_CHECK_MS: u64 = 1_000;

/// Feeds until the node shuts down.
pub async fn run(
    host: Host,
    router: Router,
    catalog: Arc<CatalogWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_full = tokio::time::Instant::now();
    let mut full_busy = false;
    loop {
        // A full pass that found work is repeated until it finds none.
        let full = full_busy || last_full.elapsed() >= Duration::from_millis(FEED_IDLE_CHECK_MS);
        if full {
            last_full = tokio::time::Instant::now();
        }
        let busy = feed_once(&host, &router, &catalog.get(), full).await;
        full_busy = full && busy;
        let pause = Duration::from_millis(if busy { 0 } else { FEED_POLL_MS });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            // A write just committed here: its change record is waiting.
            _ = host.proposal_committed() => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}

/// One pass over the led base partitions of every table with global
/// indexes (of every table when `all`); whether any had work.
pub async fn feed_once(host: &Host, router: &Router, catalog: &Catalog, all: bool) -> bool {
    let mut busy = false;
    let tables = catalog.tables.values();
    for table in tables.filter(|t| all || !t.meta.global_indexes.is_empty()) {
        for p in &table.meta.partitions {
            if !host.group(p.group).is_some_and(|g| g.is_leader()) {
                continue;
            }
            match feed_partition(host, router, table, p.group).await {
                Ok(worked) => busy |= worked,
                Err(e) => {
                    tracing::debug!(table = %table.meta.name, group = p.group, error = %e,
                        "index feed failed; will retry");
                }
            }
        }
    }
    busy
}

async fn feed_partition(
    host: &Host,
    router: &Router,
    table: &Table,
    group: u64,
) -> Result<bool, ClusterError> {
    let tree = host.tree();
    let (seq, trimmed) = global::change_log_state(tree, group)?;
    if !table.meta.global_indexes.is_empty() || seq > trimmed {
        let labels = [
            ("table", table.meta.name.clone()),
            ("group", group.to_string()),
        ];
        metrics::gauge!("dynaraft_index_lag_records", &labels).set((seq - trimmed) as f64);
    }
    let mut busy = false;
    let retain = table
        .meta
        .stream_readable(dynaraft_storage::wall_clock_ms());
    if seq > trimmed && table.meta.global_indexes.is_empty() {
        // No index to deliver to (a stream-only table, or an index deleted
        // since): the cursor jumps without reading a record, at the idle
        // pace.
        let trim = Command::TrimChangeLog { upto: seq, retain };
        host.propose(group, trim).await?;
    } else if seq > trimmed {
        let limits = (FEED_BATCH_RECORDS, FEED_BATCH_BYTES);
        let records = global::read_changes(tree, group, trimmed, limits)?;
        if let Some((upto, _)) = records.last() {
            let upto = *upto;
            deliver(router, table, group, &records).await?;
            let trim = Command::TrimChangeLog { upto, retain };
            host.propose(group, trim).await?;
            let table = table.meta.name.clone();
            metrics::counter!("dynaraft_index_records_delivered_total", "table" => table)
                .increment(records.len() as u64);
            busy = true;
        }
    }
    // A stream's records go once its retention has passed.
    let horizon =
        dynaraft_storage::wall_clock_ms().saturating_sub(table.meta.stream_retention_ms());
    if global::oldest_delivered_change_ms(tree, group)?.is_some_and(|ts| ts < horizon) {
        let purge = Command::PurgeChangeLog {
            before_ms: horizon,
            max: PURGE_BATCH_RECORDS,
        };
        host.propose(group, purge).await?;
        busy = true;
    }
    let creating = table.meta.global_indexes.iter().filter(|g| {
        g.backfill && g.status == IndexStatus::Creating && !g.backfilled.contains(&group)
    });
    for g in creating {
        match global::backfill_state(tree, group, g.id)? {
            Backfill::NotStarted => {
                host.propose(group, Command::StartBackfill { index: g.id })
                    .await?;
            }
            Backfill::Running(next) => backfill_step(host, router, table, group, g, next).await?,
            Backfill::Done => {
                let cmd = Command::IndexBackfilled {
                    table: table.meta.name.clone(),
                    index: g.id,
                    group,
                };
                router.change_catalog(cmd).await?;
            }
        }
        busy = true;
    }
    Ok(busy)
}

/// The entry `item` has in index `g` (its entry key and projected
/// attributes), or `None` when it lacks an index key attribute or holds one
/// of the wrong type, empty or too large (such items are not indexed; only
/// a backfill meets them, writes refuse them).
pub fn index_entry(g: &GlobalIndexMeta, table: &KeySchema, item: &Item) -> Option<(Vec<u8>, Item)> {
    let schema = g.index.key_schema();
    let name = &g.index.name;
    if schema
        .key_attrs()
        .any(|ka| invalid_key_value(name, ka, item).is_some())
        || oversized_index_key(&schema, item).is_some()
    {
        return None;
    }
    let key = entry_storage_key(&schema, table, item)?;
    Some((key, project(item, table, &schema, &g.index.projection)))
}

/// Index operations per index partition (by position).
type Ops = BTreeMap<usize, Vec<IndexOp>>;

fn partition_of(g: &GlobalIndexMeta, entry_key: &[u8]) -> usize {
    partition_index(&g.partitions, key_hash(entry_key)).unwrap_or(0)
}

/// The operations change record `r` (sequence `seq`) makes in index `g`.
fn record_ops(g: &GlobalIndexMeta, table: &KeySchema, seq: u64, r: &ChangeRecord, ops: &mut Ops) {
    let old = r.old.as_ref().and_then(|i| index_entry(g, table, i));
    let new = r.new.as_ref().and_then(|i| index_entry(g, table, i));
    if old == new {
        return;
    }
    let op = |put| IndexOp {
        base_key: r.storage_key.clone(),
        seq,
        put,
    };
    let new_at = new.as_ref().map(|(k, _)| partition_of(g, k));
    if let Some((k, _)) = &old {
        let old_at = partition_of(g, k);
        if new_at != Some(old_at) {
            ops.entry(old_at).or_default().push(op(None));
        }
    }
    if let (Some(at), Some(entry)) = (new_at, new) {
        ops.entry(at).or_default().push(op(Some(entry)));
    }
}

/// Sends change records of base partition `group` to every global index.
async fn deliver(
    router: &Router,
    table: &Table,
    group: u64,
    records: &[(u64, ChangeRecord)],
) -> Result<(), ClusterError> {
    for g in &table.meta.global_indexes {
        let mut ops = Ops::new();
        // A global table's write that changed nothing changes no index.
        for (seq, r) in records
            .iter()
            .filter(|(_, r)| r.origin != global::Origin::Unchanged)
        {
            record_ops(g, &table.schema, *seq, r, &mut ops);
        }
        let batch = |ops| IndexBatch {
            source: group,
            backfill: false,
            keep_tombstones: g.backfill,
            close: false,
            ops,
        };
        send(
            router,
            table,
            g,
            ops.into_iter().map(|(at, o)| (at, batch(o))),
        )
        .await?;
    }
    Ok(())
}

/// Proposes each batch to its index partition, one after another.
async fn send(
    router: &Router,
    table: &Table,
    g: &GlobalIndexMeta,
    batches: impl IntoIterator<Item = (usize, IndexBatch)>,
) -> Result<(), ClusterError> {
    for (at, batch) in batches {
        let Some(p) = g.partitions.get(at) else {
            continue;
        };
        let cmd = Command::IndexApply(batch);
        router
            .propose_at(&table.meta.name, Some(g.id), p.hash_lo, cmd)
            .await?;
    }
    Ok(())
}

/// One chunk of the backfill of `g` from base partition `group`, resuming
/// after `next`; the last one closes the backfill.
async fn backfill_step(
    host: &Host,
    router: &Router,
    table: &Table,
    group: u64,
    g: &GlobalIndexMeta,
    next: Option<Vec<u8>>,
) -> Result<(), ClusterError> {
    // Read before the items: the chunk reflects at least this sequence.
    let (seq, _) = global::change_log_state(host.tree(), group)?;
    let opts = ReadOptions {
        forward: true,
        start_after: next,
        limit: Some(BACKFILL_CHUNK_ITEMS),
        max_bytes: MAX_PAGE_BYTES,
    };
    let page = host
        .read_range(group, &table.schema, None, (&[], None), &opts, false)
        .await?;
    let mut ops = Ops::new();
    for item in &page.items {
        let (Some(base_key), Some(entry)) = (
            table.schema.storage_key(item),
            index_entry(g, &table.schema, item),
        ) else {
            continue;
        };
        let at = partition_of(g, &entry.0);
        ops.entry(at).or_default().push(IndexOp {
            base_key,
            seq,
            put: Some(entry),
        });
    }
    let batch = |ops, close: bool| IndexBatch {
        source: group,
        backfill: !close,
        keep_tombstones: true,
        close,
        ops,
    };
    send(
        router,
        table,
        g,
        ops.into_iter().map(|(at, o)| (at, batch(o, false))),
    )
    .await?;
    let next = page
        .last_key
        .as_ref()
        .and_then(|k| table.schema.storage_key(k));
    if next.is_none() {
        let closes = (0..g.partitions.len()).map(|at| (at, batch(Vec::new(), true)));
        send(router, table, g, closes).await?;
    }
    let cmd = Command::BackfillProgress { index: g.id, next };
    host.propose(group, cmd).await?;
    Ok(())
}
