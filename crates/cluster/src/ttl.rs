//! Time to Live: a background sweeper that deletes expired items.
//!
//! For each table with TTL enabled, every pass reads up to
//! [`TTL_SWEEP_MAX_ITEMS_PER_PASS`] items from a per-table cursor (wrapping
//! at the end) and, for each item whose TTL attribute is a number of epoch
//! seconds in the past (and not more than five years in the past, as
//! DynamoDB documents), proposes a delete through the normal log. Each
//! storage node sweeps the partitions whose replica it leads. The
//! delete carries the condition `ttl < :now` with `:now` fixed by the
//! sweeper, so the decision is deterministic on every replica and an item
//! whose TTL was extended in the meantime is left alone.

use crate::catalog::CatalogWatch;
use crate::host::Host;
use dynaraft_model::{AttributeValue, Item, Number};
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions};
use dynaraft_storage::{Command, JsonDoc, WriteCommand, WriteKind, wall_clock_ms};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Most items one pass examines per table.
pub const TTL_SWEEP_MAX_ITEMS_PER_PASS: usize = 1000;
/// Expiry times further in the past than this are ignored, as in DynamoDB.
pub const TTL_MAX_AGE_SECS: i64 = 5 * 365 * 24 * 3600;

/// How often the TTL sweeper looks for expired items, by default.
pub const TTL_SWEEP_INTERVAL_MS: u64 = 1000;

/// Runs passes every `interval` until the node shuts down.
pub async fn run(
    host: Host,
    catalog: Arc<CatalogWatch>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut cursors: HashMap<u64, Vec<u8>> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
        if let Err(e) = sweep_once(&host, &catalog, &mut cursors).await {
            tracing::warn!(error = %e, "TTL sweep failed");
        }
    }
}

/// One pass over the led partitions of every TTL-enabled table; returns
/// how many items it deleted.
pub async fn sweep_once(
    host: &Host,
    catalog: &CatalogWatch,
    cursors: &mut HashMap<u64, Vec<u8>>,
) -> Result<usize, crate::ClusterError> {
    let now_secs = (wall_clock_ms() / 1000) as i64;
    let mut deleted = 0;
    let catalog = catalog.get();
    for table in catalog.tables.values() {
        let Some(attr) = table.meta.ttl_attribute.clone() else {
            continue;
        };
        if table.meta.status != dynaraft_storage::TableStatus::Active {
            continue;
        }
        for p in &table.meta.partitions {
            let led = host
                .group(p.group)
                .is_some_and(|g| g.leader() == Some(host.id()));
            if led {
                let n = sweep_partition(host, table, p.group, &attr, now_secs, cursors).await?;
                if n > 0 {
                    // CloudWatch's TimeToLiveDeletedItemCount.
                    metrics::counter!(
                        "dynaraft_time_to_live_deleted_items_total",
                        "table" => table.meta.name.clone()
                    )
                    .increment(n as u64);
                }
                deleted += n;
            }
        }
    }
    Ok(deleted)
}

async fn sweep_partition(
    host: &Host,
    table: &crate::Table,
    group: u64,
    attr: &str,
    now_secs: i64,
    cursors: &mut HashMap<u64, Vec<u8>>,
) -> Result<usize, crate::ClusterError> {
    let mut deleted = 0;
    let opts = ReadOptions {
        forward: true,
        start_after: cursors.remove(&group),
        limit: Some(TTL_SWEEP_MAX_ITEMS_PER_PASS),
        max_bytes: MAX_PAGE_BYTES,
    };
    let page = host
        .read_range(group, &table.schema, None, (&[], None), &opts, false)
        .await?;
    if let Some(k) = page
        .last_key
        .as_ref()
        .and_then(|last| table.schema.storage_key(last))
    {
        cursors.insert(group, k);
    }
    for item in page.items {
        if !expired(&item, attr, now_secs) {
            continue;
        }
        let key = table.schema.key_of(&item);
        let Some(storage_key) = table.schema.storage_key(&key) else {
            continue;
        };
        let mut values = Item::new();
        values.insert(":now".into(), AttributeValue::N(Number::from_i64(now_secs)));
        let cmd = WriteCommand {
            kind: WriteKind::Delete,
            storage_key,
            key: JsonDoc::from_item(&key),
            item: None,
            condition: Some("#ttl < :now".into()),
            update: None,
            names: BTreeMap::from([("#ttl".to_string(), attr.to_string())]),
            values: JsonDoc::from_item(&values),
            local: table.meta.local_index_specs(
                &table.schema,
                dynaraft_storage::index::DEFAULT_ITEM_COLLECTION_LIMIT_BYTES,
            ),
            global: table.meta.global_key_specs(),
            legacy_update: false,
            stream: table.meta.enabled_stream().is_some(),
            origin: dynaraft_storage::global::Origin::Ttl,
            replicated: dynaraft_storage::replica::GlobalWrite::local(
                table.meta.replication_region(),
            ),
        };
        if let (dynaraft_storage::Outcome::Written { .. }, _) =
            host.propose(group, Command::Write(cmd)).await?
        {
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn expired(item: &Item, attr: &str, now_secs: i64) -> bool {
    let Some(AttributeValue::N(n)) = item.get(attr) else {
        return false;
    };
    let now = Number::from_i64(now_secs);
    let oldest = Number::from_i64(now_secs - TTL_MAX_AGE_SECS);
    *n < now && *n >= oldest
}
