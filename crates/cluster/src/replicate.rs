//! The replicator of global tables: carries each partition's writes to
//! the table's replicas in other regions (other deployments), in order,
//! asynchronously.
//!
//! It runs on every storage node and works on the partitions of global
//! tables whose replica leads its group. For each partition and each
//! replica region (`TableMeta::replication`):
//!
//! 1. **Start.** If the partition does not replicate to the region yet, it
//!    proposes `StartReplication`: from that log index on every write of
//!    the partition is versioned and logged, and the region's cursor is the
//!    last change sequence before it (`replica::start`).
//! 2. **Copy.** Until the partition's `copied` mark is set, it reads the
//!    partition's items [`COPY_CHUNK_ITEMS`] at a time and sends those
//!    written here (version of this region, or none: written before the
//!    table was global) to the region's `ApplyWrites`, with their versions.
//!    A write made during the copy is in the log after the cursor and is
//!    shipped after it; the region keeps whichever version is later, so
//!    nothing is lost at the switch-over and nothing is applied twice in
//!    effect. Then `ReplicationShipped { copied: true }`, and the control
//!    plane hears `ReplicaCopied`; when every partition has copied, the
//!    replica is ACTIVE.
//! 3. **Follow.** It reads up to [`REPLICATION_BATCH_RECORDS`] change
//!    records after the cursor, sends those made here (not those that
//!    came from another region: origin `Replica`) and moves the cursor with
//!    `ReplicationShipped` once the region acknowledged them. The change log
//!    keeps every record a region has not acknowledged.
//!
//! A replicator that stops anywhere (crash, lost leadership, a region
//! that does not answer) leaves the cursor where it was; the next leader's
//! replicator sends again from there (and copies again from the start if
//! the copy was not finished), and the region skips what it already has
//! (same version). A region that does not answer is retried every
//! [`REPLICATION_RETRY_MS`].

use crate::ClusterError;
use crate::catalog::{Catalog, CatalogWatch, Table};
use crate::host::Host;
use crate::peer::{PeerError, PeerRegions};
use crate::router::Router;
use dynaraft_model::Item;
use dynaraft_model::value::item_to_json;
use dynaraft_storage::global::{self, Origin};
use dynaraft_storage::read::{MAX_PAGE_BYTES, ReadOptions};
use dynaraft_storage::replica::{self, Version};
use dynaraft_storage::{Command, Outcome, Span, TableStatus};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Pause between passes that found nothing to send, in milliseconds.
pub const REPLICATION_POLL_MS: u64 = 20;
/// Most change records sent per call, per partition and region.
pub const REPLICATION_BATCH_RECORDS: usize = 256;
/// Most change-record bytes read per call.
pub const REPLICATION_BATCH_BYTES: usize = 1024 * 1024;
/// Most items one copy step reads and sends.
pub const COPY_CHUNK_ITEMS: usize = 256;
/// Pause before calling a region that failed again, in milliseconds.
pub const REPLICATION_RETRY_MS: u64 = 500;

/// A write as it travels between regions (`ApplyWrites`).
pub fn wire_write(key: &Item, item: Option<&Item>, version: &Version) -> Value {
    let mut w = json!({
        "Key": item_to_json(key),
        "Version": {"TimestampMs": version.ts_ms, "Region": version.region},
    });
    if let Some(item) = item {
        w["Item"] = item_to_json(item);
    }
    w
}

/// What the replicator remembers between passes.
#[derive(Default)]
struct State {
    /// (group, region) -> storage key the copy resumes after.
    copies: HashMap<(u64, String), Vec<u8>>,
    /// region -> when it may be called again after a failure.
    retry_after: HashMap<String, Instant>,
}

/// Replicates until the node shuts down.
pub async fn run(
    host: Host,
    router: Router,
    catalog: Arc<CatalogWatch>,
    peers: Arc<PeerRegions>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = State::default();
    loop {
        let busy = replicate_once(&host, &router, &catalog.get(), &peers, &mut state).await;
        let pause = Duration::from_millis(if busy { 0 } else { REPLICATION_POLL_MS });
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}

/// One pass over the led partitions of every global table; whether any
/// had work.
async fn replicate_once(
    host: &Host,
    router: &Router,
    catalog: &Catalog,
    peers: &PeerRegions,
    state: &mut State,
) -> bool {
    let mut busy = false;
    for table in catalog.tables.values() {
        let Some(rep) = &table.meta.replication else {
            continue;
        };
        if table.meta.status == TableStatus::Deleting {
            continue;
        }
        for p in &table.meta.partitions {
            if !host.group(p.group).is_some_and(|g| g.is_leader()) {
                continue;
            }
            if let Err(e) = stop_removed(host, table, p.group).await {
                tracing::debug!(group = p.group, error = %e, "could not stop replication; will retry");
            }
            for r in &rep.replicas {
                if state
                    .retry_after
                    .get(&r.region)
                    .is_some_and(|t| Instant::now() < *t)
                {
                    continue;
                }
                let step = Step {
                    host,
                    router,
                    peers,
                    table,
                    group: p.group,
                    region: &r.region,
                };
                match step.run(state).await {
                    Ok(worked) => busy |= worked,
                    Err(e) => {
                        tracing::warn!(table = %table.meta.name, group = p.group,
                            region = %r.region, error = %e, "replication failed; will retry");
                        let again = Instant::now() + Duration::from_millis(REPLICATION_RETRY_MS);
                        state.retry_after.insert(r.region.clone(), again);
                    }
                }
            }
        }
    }
    busy
}

/// Why one partition's replication step failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Storage(#[from] dynaraft_storage::StorageError),
}

/// Stops replicating `group` to regions no longer among the table's
/// replicas.
async fn stop_removed(host: &Host, table: &Table, group: u64) -> Result<(), ClusterError> {
    let wanted = |region: &str| {
        table
            .meta
            .replication
            .as_ref()
            .is_some_and(|rep| rep.replicas.iter().any(|r| r.region == region))
    };
    for region in replica::peers(host.tree(), group)?.into_keys() {
        if !wanted(&region) {
            host.propose(group, Command::StopReplication { peer: region })
                .await?;
        }
    }
    Ok(())
}

/// One pass's work on one partition's replication to one region.
struct Step<'a> {
    host: &'a Host,
    router: &'a Router,
    peers: &'a PeerRegions,
    table: &'a Table,
    group: u64,
    region: &'a str,
}

impl Step<'_> {
    /// Starts, copies or follows, whichever is next; whether it did work.
    async fn run(&self, state: &mut State) -> Result<bool, StepError> {
        let (host, group) = (self.host, self.group);
        let Some(peer) = replica::peers(host.tree(), group)?.remove(self.region) else {
            let start = Command::StartReplication {
                region: self.peers.local().to_string(),
                peer: self.region.to_string(),
            };
            host.propose(group, start).await?;
            return Ok(true);
        };
        if !peer.copied {
            return self.copy(peer.shipped, state).await;
        }
        self.report_copied().await?;
        self.follow(peer.shipped).await
    }

    /// Sends the next chunk of the items written here before replication
    /// began; marks the copy done after the last.
    async fn copy(&self, shipped: u64, state: &mut State) -> Result<bool, StepError> {
        let (host, table, group) = (self.host, self.table, self.group);
        let local = self.peers.local();
        let slot = (group, self.region.to_string());
        let opts = ReadOptions {
            forward: true,
            start_after: state.copies.get(&slot).cloned(),
            limit: Some(COPY_CHUNK_ITEMS),
            max_bytes: MAX_PAGE_BYTES,
        };
        let page = host
            .read_range(group, &table.schema, None, (&[], None), &opts, false)
            .await?;
        let space = Span::load(host.tree(), group)?.space;
        let mut writes = Vec::new();
        for item in &page.items {
            let key = table.schema.key_of(item);
            let Some(storage_key) = table.schema.storage_key(&key) else {
                continue;
            };
            let version = match replica::read_version(host.tree(), space, &storage_key)? {
                // Written before the table was global: the oldest version.
                None => Version {
                    ts_ms: 0,
                    region: local.to_string(),
                },
                Some((v, false)) if v.region == local => v,
                // Another region's write, or a tombstone: not this
                // region's to send.
                Some(_) => continue,
            };
            writes.push(wire_write(&key, Some(item), &version));
        }
        if !writes.is_empty() {
            self.apply_writes(writes).await?;
        }
        let next = page
            .last_key
            .as_ref()
            .and_then(|k| table.schema.storage_key(k));
        match next {
            Some(k) => {
                state.copies.insert(slot, k);
            }
            None => {
                state.copies.remove(&slot);
                let done = Command::ReplicationShipped {
                    peer: self.region.to_string(),
                    upto: shipped,
                    copied: true,
                };
                host.propose(group, done).await?;
                self.report_copied().await?;
            }
        }
        Ok(true)
    }

    /// Tells the control plane that the partition copied its items to the
    /// region, if the replica is still CREATING and does not know it yet.
    async fn report_copied(&self) -> Result<(), ClusterError> {
        let pending = self.table.meta.replication.as_ref().is_some_and(|rep| {
            rep.replicas.iter().any(|r| {
                r.region == self.region
                    && r.status == dynaraft_storage::catalog::REPLICA_CREATING
                    && !r.copied.contains(&self.group)
            })
        });
        if pending {
            let cmd = Command::ReplicaCopied {
                table: self.table.meta.name.clone(),
                region: self.region.to_string(),
                group: self.group,
            };
            match self.router.change_catalog(cmd).await? {
                Outcome::Table(_) | Outcome::TableMissing => {}
                other => tracing::warn!(?other, "unexpected outcome of ReplicaCopied"),
            }
        }
        Ok(())
    }

    /// Sends the change records after `shipped` that were made here, then
    /// moves the cursor past them.
    async fn follow(&self, shipped: u64) -> Result<bool, StepError> {
        let (table, group) = (self.table, self.group);
        let limits = (REPLICATION_BATCH_RECORDS, REPLICATION_BATCH_BYTES);
        let records = global::read_changes(self.host.tree(), group, shipped, limits)?;
        let labels = [
            ("table", table.meta.name.clone()),
            ("region", self.region.to_string()),
            ("group", group.to_string()),
        ];
        let Some((last, _)) = records.last() else {
            metrics::gauge!("dynaraft_replication_lag_ms", &labels).set(0.0);
            return Ok(false);
        };
        let last = *last;
        if let Some((_, oldest)) = records.first() {
            let age = dynaraft_storage::wall_clock_ms().saturating_sub(oldest.ts_ms);
            metrics::gauge!("dynaraft_replication_lag_ms", &labels).set(age as f64);
        }
        let mut writes = Vec::new();
        for (seq, r) in &records {
            // What came from another region goes back to none (no
            // ping-pong).
            if r.origin == Origin::Replica {
                continue;
            }
            let Some(version) = &r.version else {
                // Logged before the partition replicated (its cursor
                // starts after such records); never expected here.
                tracing::warn!(
                    group,
                    seq,
                    "change record without a version; not replicated"
                );
                continue;
            };
            let Some(image) = r.new.as_ref().or(r.old.as_ref()) else {
                continue;
            };
            let key = table.schema.key_of(image);
            writes.push(wire_write(&key, r.new.as_ref(), version));
        }
        let sent = writes.len();
        if !writes.is_empty() {
            self.apply_writes(writes).await?;
        }
        let cmd = Command::ReplicationShipped {
            peer: self.region.to_string(),
            upto: last,
            copied: false,
        };
        self.host.propose(group, cmd).await?;
        metrics::counter!("dynaraft_replicated_writes_total", &labels[..2]).increment(sent as u64);
        Ok(true)
    }

    /// Calls the region's `ApplyWrites` for the table.
    async fn apply_writes(&self, writes: Vec<Value>) -> Result<(), PeerError> {
        let body = json!({
            "TableName": self.table.meta.name,
            "SourceRegion": self.peers.local(),
            "Writes": writes,
        });
        self.peers
            .call(self.region, "ApplyWrites", &body)
            .await
            .map(drop)
    }
}

/// Where `group`'s replication to each peer region stands on this
/// replica (`dynaraft admin replication`); empty when it does not
/// replicate or cannot be read.
pub fn status(
    tree: &dynaraft_storage::kv::Store,
    group: u64,
) -> Vec<crate::wire::ReplicationStatus> {
    let peers = match replica::peers(tree, group) {
        Ok(p) if !p.is_empty() => p,
        _ => return Vec::new(),
    };
    let last = global::change_log_state(tree, group).map_or(0, |(seq, _)| seq);
    let now = dynaraft_storage::wall_clock_ms();
    peers
        .into_iter()
        .map(|(region, p)| {
            let oldest = global::read_changes(tree, group, p.shipped, (1, usize::MAX))
                .ok()
                .and_then(|r| r.first().map(|(_, r)| r.ts_ms));
            crate::wire::ReplicationStatus {
                region,
                shipped: p.shipped,
                backlog: last.saturating_sub(p.shipped),
                lag_ms: oldest.map_or(0, |ts| now.saturating_sub(ts)),
                copied: p.copied,
            }
        })
        .collect()
}
