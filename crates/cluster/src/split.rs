//! Partition splits by size and by heat, driven by the control plane's
//! leader (issue 21). Every control member runs [`run`]; only the one whose
//! control-group replica leads acts. Each [`SPLIT_CHECK_MS`] it asks every
//! partition's size and load from its leader, and splits a partition
//! holding at least the configured size (where its bytes halve), or
//! serving a sustained load of at least the configured rate (where its
//! sampled load halves, see `crate::heat`):
//!
//! 1. `BeginSplit` (catalog): allocates the child's group id and records
//!    the split as pending on the partition. Routing does not change.
//! 2. `PrepareSplit`, then `Split` (the partition's own log, see
//!    `dynaraft_storage::split`). From the prepare on, every replica keeps
//!    the changes to the counters of `[at, hi)` aside; the leader tallies
//!    that range on a snapshot, off the apply path (`Host::split_tally`),
//!    and the split carries the tally, so its apply only adds what changed
//!    since instead of reading half the partition while its writes wait.
//!    At the split every replica narrows the parent to `[lo, at)` and
//!    creates the child's state for `[at, hi)` at the same log index. From
//!    here the parent refuses keys of the child's range (`WrongRange`), and
//!    routers retry them.
//! 3. `FinishSplit` (catalog): the child partition appears in the map with
//!    the parent's replicas and the parent's epoch is bumped; routers learn
//!    it from the catalog, or from a stale-epoch rejection. Each node
//!    starts its child replica once its parent replica has applied the
//!    split (`reconcile::child_start`); the first replica initialises the
//!    child's membership, as for a new table.
//!
//! Each step is idempotent, and a pending split is driven to its end on
//! the next check, by this leader or the next one: a crash anywhere leaves
//! the old layout or the new one. A split point is always the hash of a
//! partition key, so no item collection is cut. A partition whose items
//! all share one hash, or whose load is mostly one key's, cannot be helped
//! by a split: it is logged once and counted
//! (`dynaraft_unsplittable_partitions_total`) instead, and `dynaraft admin
//! partitions` shows its hot key.

use crate::ClusterError;
use crate::host::Host;
use crate::router::Router;
use dynaraft_storage::catalog::PendingSplit;
use dynaraft_storage::machine::CATALOG_GROUP;
use dynaraft_storage::{Command, Outcome, PartitionMeta};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::watch;

/// Size at which a partition splits unless configured otherwise, in bytes
/// (DynamoDB splits at about 10 GB).
pub const DEFAULT_SPLIT_SIZE_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// Smallest split size a node accepts, in bytes.
pub const MIN_SPLIT_SIZE_BYTES: u64 = 1024;
/// Pause between checks of every partition's size, in milliseconds.
pub const SPLIT_CHECK_MS: u64 = 1_000;
/// Most partitions a table (or an index) may be split into.
pub const MAX_PARTITIONS_AFTER_SPLITS: usize = 4_096;

/// When partitions split.
#[derive(Debug, Clone, Copy)]
pub struct SplitPolicy {
    /// A partition of at least this many bytes splits.
    pub size_bytes: u64,
    /// A partition serving at least this many requests per second through
    /// `crate::heat::HEAT_SUSTAIN_WINDOWS` windows splits; 0: never for load.
    pub load_ops_per_s: u64,
}

impl Default for SplitPolicy {
    fn default() -> Self {
        SplitPolicy {
            size_bytes: DEFAULT_SPLIT_SIZE_BYTES,
            load_ops_per_s: crate::heat::DEFAULT_SPLIT_LOAD_OPS_PER_S,
        }
    }
}

/// Why a partition is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Reason {
    Size,
    Load,
}

/// Splits partitions by `policy` while this node leads the control plane,
/// until the node shuts down.
pub async fn run(host: Host, router: Router, policy: SplitPolicy, mut stop: watch::Receiver<bool>) {
    let mut unsplittable: HashSet<(u64, Reason)> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(SPLIT_CHECK_MS)) => {}
            _ = dynaraft_storage::stop_requested(&mut stop) => return,
        }
        if !host.group(CATALOG_GROUP).is_some_and(|g| g.is_leader()) {
            continue;
        }
        if let Err(e) = check_once(&router, policy, &mut unsplittable).await {
            tracing::warn!(error = %e, "split check failed; will retry");
        }
    }
}

/// Finishes pending splits and splits every partition `policy` says
/// should split, once. Partitions a split cannot help are reported once
/// per reason (in `unsplittable`).
async fn check_once(
    router: &Router,
    policy: SplitPolicy,
    unsplittable: &mut HashSet<(u64, Reason)>,
) -> Result<(), ClusterError> {
    let catalog = router.catalog().get();
    // A backup, or a restore to a point in time, copies its source
    // partition by partition: the source is not split until it is done; a
    // backup's own partitions never are.
    let backups = catalog
        .tables
        .values()
        .filter_map(|t| t.meta.backup.as_ref())
        .filter(|b| b.status == dynaraft_storage::catalog::BACKUP_CREATING)
        .map(|b| b.source.name.as_str());
    let restores = catalog
        .tables
        .values()
        .filter_map(|t| t.meta.restore.as_ref())
        .filter(|r| r.in_progress)
        .filter_map(|r| r.source_table.as_deref());
    let backing_up: HashSet<&str> = backups.chain(restores).collect();
    for t in catalog.tables.values() {
        let name = &t.meta.name;
        let snapshot = name.starts_with(crate::jobs::EXPORT_TABLE_PREFIX);
        if t.meta.backup.is_some() || snapshot || backing_up.contains(name.as_str()) {
            continue;
        }
        let indexes = std::iter::once((None, &t.meta.partitions)).chain(
            t.meta
                .global_indexes
                .iter()
                .map(|g| (Some(g.id), &g.partitions)),
        );
        for (index, parts) in indexes {
            for p in parts {
                if let Some(s) = p.splitting {
                    finish(router, name, index, p, s).await?;
                    continue;
                }
                if parts.len() >= MAX_PARTITIONS_AFTER_SPLITS {
                    continue;
                }
                let stats = router.partition_stats(name, index, p).await?;
                let load = &stats.load;
                let (reason, at) = if stats.bytes >= policy.size_bytes {
                    (Reason::Size, router.split_point(name, index, p).await?)
                } else if policy.load_ops_per_s > 0
                    && load.sustained_ops_per_s >= policy.load_ops_per_s
                {
                    // A hot key stays on one side of any split.
                    let at = load.split_at.filter(|_| load.hot_key.is_none());
                    (Reason::Load, at)
                } else {
                    continue;
                };
                match at {
                    Some(at) => {
                        tracing::info!(
                            table = %name, ?index, group = p.group, ?reason, bytes = stats.bytes,
                            ops_per_s = load.sustained_ops_per_s, "splitting a partition"
                        );
                        split(router, name, index, p.group, at).await?;
                    }
                    None if unsplittable.insert((p.group, reason)) => {
                        metrics::counter!("dynaraft_unsplittable_partitions_total").increment(1);
                        match reason {
                            Reason::Size => tracing::warn!(
                                table = %name, ?index, group = p.group, bytes = stats.bytes,
                                "partition is over the split size but all its items share one \
                                 partition key; a split cannot help, so it is not split"
                            ),
                            Reason::Load => tracing::warn!(
                                table = %name, ?index, group = p.group,
                                ops_per_s = load.sustained_ops_per_s,
                                hot_key_hash = ?load.hot_key.map(|h| format!("{h:016x}")),
                                "partition is over the split load but most of it goes to one \
                                 partition key (a hot key); a split cannot help, so it is not split"
                            ),
                        }
                    }
                    None => {}
                }
            }
        }
    }
    Ok(())
}

/// Splits partition `group` of `table` (or of its index) at `at`; a split
/// already pending for it is finished instead.
pub async fn split(
    router: &Router,
    table: &str,
    index: Option<u32>,
    group: u64,
    at: u64,
) -> Result<(), ClusterError> {
    let begin = Command::BeginSplit {
        table: table.to_string(),
        index,
        group,
        at,
    };
    let meta = match router.change_catalog(begin).await? {
        Outcome::Table(meta) => meta,
        Outcome::TableMissing => return Err(ClusterError::NoTable(table.to_string())),
        other => return Err(refused("BeginSplit", &other)),
    };
    let p = meta
        .partitions_of(index)
        .and_then(|ps| ps.iter().find(|p| p.group == group))
        .ok_or_else(|| ClusterError::Unavailable(format!("partition {group} is gone")))?;
    let s = p.splitting.ok_or_else(|| {
        ClusterError::Unavailable(format!("partition {group} has no split pending"))
    })?;
    finish(router, table, index, p, s).await
}

/// Steps 2 and 3 of a pending split (see the module docs).
async fn finish(
    router: &Router,
    table: &str,
    index: Option<u32>,
    parent: &PartitionMeta,
    s: PendingSplit,
) -> Result<(), ClusterError> {
    // The half handed over is tallied on a snapshot, outside the apply,
    // from the prepare on; the split then only adds what changed since.
    let prepare = Command::PrepareSplit { at: s.at };
    let prepared = router
        .propose_at(table, index, parent.hash_lo, prepare)
        .await?;
    let tally = match prepared {
        Outcome::Done => router.split_tally(table, index, parent, s.at).await?,
        // Already split (the prepare is refused once `at` is the parent's
        // end): the split below answers as it did.
        _ => None,
    };
    let tallied = tally.is_some();
    let cmd = Command::Split {
        at: s.at,
        child: s.child,
        index_partition: index.is_some(),
        tally,
    };
    let closed_at = match router.propose_at(table, index, parent.hash_lo, cmd).await? {
        Outcome::Sequence(seq) => seq,
        other => return Err(refused("Split", &other)),
    };
    let done = Command::FinishSplit {
        table: table.to_string(),
        index,
        group: parent.group,
        first: router.known_leader(parent.group),
        closed_at: Some(closed_at),
    };
    match router.change_catalog(done).await? {
        Outcome::Table(_) => {}
        Outcome::TableMissing => return Err(ClusterError::NoTable(table.to_string())),
        other => return Err(refused("FinishSplit", &other)),
    }
    metrics::counter!("dynaraft_partition_splits_total").increment(1);
    tracing::info!(
        table,
        ?index,
        parent = parent.group,
        child = s.child,
        at = format_args!("{:#018x}", s.at),
        tallied,
        "partition split"
    );
    Ok(())
}

fn refused(step: &str, outcome: &Outcome) -> ClusterError {
    ClusterError::Unavailable(format!("{step} refused: {outcome:?}"))
}
