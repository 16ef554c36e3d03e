//! Time to Live: a background sweeper that deletes expired items.
//!
//! For each table with TTL enabled, every pass reads up to
//! [`TTL_SWEEP_MAX_ITEMS_PER_PASS`] items from a per-table cursor (wrapping
//! at the end) and, for each item whose TTL attribute is a number of epoch
//! seconds in the past (and not more than five years in the past, as
//! DynamoDB documents), proposes a delete through the normal log. The
//! delete carries the condition `ttl < :now` with `:now` fixed by the
//! sweeper, so the decision is deterministic on every replica and an item
//! whose TTL was extended in the meantime is left alone.

use crate::command::{Command, WriteCommand, WriteKind};
use crate::node::{Node, wall_clock_ms};
use crate::read::{ReadOptions, read_range};
use dynaraft_model::value::item_to_json;
use dynaraft_model::{AttributeValue, Item, Number};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Most items one pass examines per table.
pub const TTL_SWEEP_MAX_ITEMS_PER_PASS: usize = 1000;
/// Expiry times further in the past than this are ignored, as in DynamoDB.
pub const TTL_MAX_AGE_SECS: i64 = 5 * 365 * 24 * 3600;

/// Runs passes every `interval` until the node shuts down.
pub async fn run(node: Node, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut cursors: HashMap<u64, Vec<u8>> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::node::stop_requested(&mut shutdown) => return,
        }
        if let Err(e) = sweep_once(&node, &mut cursors).await {
            tracing::warn!(error = %e, "TTL sweep failed");
        }
    }
}

/// One pass over every TTL-enabled table; returns how many items it deleted.
pub async fn sweep_once(
    node: &Node,
    cursors: &mut HashMap<u64, Vec<u8>>,
) -> Result<usize, crate::StorageError> {
    let now_secs = (wall_clock_ms() / 1000) as i64;
    let mut deleted = 0;
    for table in node.tables() {
        let Some(attr) = table.meta.ttl_attribute.clone() else {
            continue;
        };
        if table.meta.status != crate::TableStatus::Active {
            continue;
        }
        let group = table.meta.group;
        let opts = ReadOptions {
            forward: true,
            start_after: cursors.remove(&group),
            limit: Some(TTL_SWEEP_MAX_ITEMS_PER_PASS),
            filter: None,
        };
        let page = read_range(node.tree(), group, &table.schema, &[], None, &opts)?;
        if let Some(k) = page
            .last_key
            .as_ref()
            .and_then(|last| table.schema.storage_key(last))
        {
            cursors.insert(group, k);
        }
        for item in page.items {
            if !expired(&item, &attr, now_secs) {
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
                key: item_to_json(&key),
                item: None,
                condition: Some("#ttl < :now".into()),
                update: None,
                names: BTreeMap::from([("#ttl".to_string(), attr.clone())]),
                values: item_to_json(&values),
            };
            if let crate::Outcome::Written { .. } =
                table.partition.propose(Command::Write(cmd)).await?
            {
                deleted += 1;
            }
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
