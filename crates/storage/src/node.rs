//! A storage node: opens sled and the WAL, replays the log past each
//! group's applied index, runs one task per group, publishes the catalog as
//! an immutable snapshot (readers never take a lock), and checkpoints:
//! flush sled, fsync its files, then delete WAL segments it covers.

use crate::StorageError;
use crate::catalog::TableMeta;
use crate::command::{Command, Entry};
use crate::machine::{self, CATALOG_GROUP, DROPPED, Outcome, Overlay};
use crate::partition::{self, PartitionHandle, TaskEnv};
use crate::wal::Wal;
use arc_swap::ArcSwap;
use dynaraft_model::KeySchema;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often sled is flushed and covered WAL segments are deleted.
pub const CHECKPOINT_INTERVAL_MS: u64 = 10_000;

/// How often the TTL sweeper looks for expired items, by default.
pub const TTL_SWEEP_INTERVAL_MS: u64 = 1000;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory; `None` keeps everything in memory (nothing durable).
    pub data_dir: Option<PathBuf>,
    /// Interval of the TTL sweeper, in milliseconds.
    pub ttl_sweep_interval_ms: u64,
}

impl NodeConfig {
    pub fn new(data_dir: Option<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir,
            ttl_sweep_interval_ms: TTL_SWEEP_INTERVAL_MS,
        }
    }
}

/// A table as the data path sees it: metadata, schema and its partition.
pub struct Table {
    pub meta: TableMeta,
    pub schema: KeySchema,
    pub partition: PartitionHandle,
}

#[derive(Default)]
struct Catalog {
    tables: BTreeMap<String, Arc<Table>>,
}

struct Shared {
    tree: sled::Tree,
    env: TaskEnv,
    view: ArcSwap<Catalog>,
    partitions: Mutex<HashMap<u64, PartitionHandle>>,
}

#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
    db: sled::Db,
    catalog: PartitionHandle,
    data_dir: Option<PathBuf>,
    stop: Arc<watch::Sender<bool>>,
    stopped: Arc<tokio::sync::Mutex<mpsc::Receiver<()>>>,
}

/// Resolves once the node's stop flag is set (or its sender is gone). Holds
/// no guard across the await, so it can sit in `select!` in spawned tasks.
pub async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Opens (or creates) a node and replays its log. Must run inside a
    /// tokio runtime.
    pub async fn open(cfg: NodeConfig) -> Result<Node, StorageError> {
        let (db, wal, records) = match &cfg.data_dir {
            Some(dir) => {
                let db = sled::Config::new().path(dir.join("sled")).open()?;
                let (wal, records) = Wal::open(&dir.join("wal"))?;
                (db, wal, records)
            }
            None => (
                sled::Config::new().temporary(true).open()?,
                Wal::disabled(),
                Vec::new(),
            ),
        };
        let tree = db.open_tree("state")?;
        replay(&tree, &records)?;
        let clock: Arc<dyn Fn() -> u64 + Send + Sync> = Arc::new(wall_clock_ms);
        let (stop, shutdown) = watch::channel(false);
        let (alive, stopped) = mpsc::channel(1);
        let env = TaskEnv {
            tree: tree.clone(),
            wal,
            clock,
            shutdown,
            alive,
        };
        let shared = Arc::new(Shared {
            tree: tree.clone(),
            env: env.clone(),
            view: ArcSwap::from_pointee(Catalog::default()),
            partitions: Mutex::new(HashMap::new()),
        });
        refresh(&shared)?;
        let hook_target = shared.clone();
        let hook: partition::AfterApply = Arc::new(move |_outcomes: &[Outcome]| {
            if let Err(e) = refresh(&hook_target) {
                tracing::error!(error = %e, "catalog refresh failed");
            }
        });
        let catalog = partition::spawn(CATALOG_GROUP, env.clone(), Some(hook))?;
        let node = Node {
            shared,
            db,
            catalog,
            data_dir: cfg.data_dir.clone(),
            stop: Arc::new(stop),
            stopped: Arc::new(tokio::sync::Mutex::new(stopped)),
        };
        {
            let n = node.clone();
            let shutdown = env.shutdown.clone();
            let interval = Duration::from_millis(cfg.ttl_sweep_interval_ms.max(1));
            let alive = env.alive.clone();
            tokio::spawn(async move {
                // Declared first, dropped last: everything holding sled goes
                // before shutdown is told this task is gone.
                let _alive = alive;
                let n = n;
                crate::ttl::run(n, interval, shutdown).await;
            });
        }
        if node.data_dir.is_some() {
            let weak = Arc::downgrade(&node.shared);
            let db = node.db.clone();
            let dir = node.data_dir.clone();
            let shutdown = env.shutdown.clone();
            let _alive = env.alive.clone();
            tokio::spawn(async move {
                // Captured values are dropped with the future, after the
                // block's locals; rebinding them after `_alive` makes them
                // drop first, so shutdown never returns while sled is held.
                let _alive = _alive;
                let (weak, db, dir) = (weak, db, dir);
                let mut shutdown = shutdown;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(CHECKPOINT_INTERVAL_MS)) => {}
                        _ = stop_requested(&mut shutdown) => break,
                    }
                    let Some(shared) = weak.upgrade() else { break };
                    if let Err(e) = checkpoint(shared, db.clone(), dir.clone()).await {
                        tracing::error!(error = %e, "checkpoint failed");
                    }
                }
            });
        }
        Ok(node)
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.shared.tree
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.shared.view.load().tables.get(name).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.shared.view.load().tables.values().cloned().collect()
    }

    /// Proposes a catalog command (CreateTable, status changes, ...).
    pub async fn catalog(&self, cmd: Command) -> Result<Outcome, StorageError> {
        self.catalog.propose(cmd).await
    }

    /// Item count and total item bytes of a group, as of the last apply.
    pub fn stats(&self, group: u64) -> (u64, u64) {
        machine::group_stats(&self.shared.tree, group).unwrap_or((0, 0))
    }

    /// Makes sled durable and deletes the WAL segments it now covers.
    pub async fn checkpoint(&self) -> Result<usize, StorageError> {
        checkpoint(self.shared.clone(), self.db.clone(), self.data_dir.clone()).await
    }

    /// Stops every task of the node and waits until they have exited, so
    /// the data directory can be reopened. Other clones become unusable.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let stopped = self.stopped.clone();
        let db = self.db.clone();
        drop(self);
        let _ = db.flush_async().await;
        drop(db);
        let mut rx = stopped.lock().await;
        while rx.recv().await.is_some() {}
    }
}

async fn checkpoint(
    shared: Arc<Shared>,
    db: sled::Db,
    dir: Option<PathBuf>,
) -> Result<usize, StorageError> {
    let Some(dir) = dir else { return Ok(0) };
    tokio::task::spawn_blocking(move || {
        let mut snapshot = BTreeMap::new();
        for g in shared.env.wal.closed_groups() {
            snapshot.insert(g, machine::applied_index(&shared.tree, g)?);
        }
        db.flush()?;
        fsync_tree(&dir.join("sled"))?;
        shared.env.wal.checkpoint(&snapshot)
    })
    .await
    .map_err(|e| StorageError::Fatal(e.to_string()))?
}

/// Makes everything sled has applied durable: sled's flush, then an fsync
/// of every file under `dir` (sled's flush is not an fsync on Linux).
pub fn flush_durably(db: &sled::Db, dir: &Path) -> Result<(), StorageError> {
    db.flush()?;
    fsync_tree(dir)
}

/// sled's flush is not an fsync on Linux; fsync every file it owns.
fn fsync_tree(dir: &Path) -> Result<(), StorageError> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            fsync_tree(&p)?;
        } else {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Applies every logged entry past its group's applied index, in log order.
fn replay(tree: &sled::Tree, records: &[crate::wal::WalRecord]) -> Result<(), StorageError> {
    let mut applied: HashMap<u64, u64> = HashMap::new();
    let mut count = 0usize;
    for r in records {
        let a = match applied.get(&r.group) {
            Some(a) => *a,
            None => machine::applied_index(tree, r.group)?,
        };
        if a == DROPPED || r.index <= a {
            applied.insert(r.group, a);
            continue;
        }
        let entry = Entry::decode(&r.payload)?;
        let mut ov = Overlay::new(tree);
        machine::apply(&mut ov, r.group, &entry)?;
        ov.commit(r.group, r.index)?;
        // A DropTable may have marked some group as dropped.
        applied.clear();
        applied.insert(r.group, r.index);
        count += 1;
    }
    if count > 0 {
        tracing::info!(entries = count, "replayed write-ahead log");
    }
    Ok(())
}

/// Rebuilds the catalog snapshot from sled, starting tasks for new groups.
fn refresh(shared: &Shared) -> Result<(), StorageError> {
    let mut parts = shared
        .partitions
        .lock()
        .map_err(|_| StorageError::Fatal("partition map lock poisoned".into()))?;
    let mut tables = BTreeMap::new();
    for kv in shared.tree.scan_prefix(machine::tables_prefix()) {
        let (_, v) = kv?;
        let meta: TableMeta =
            serde_json::from_slice(&v).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let partition = match parts.get(&meta.group) {
            Some(p) => p.clone(),
            None => {
                let p = partition::spawn(meta.group, shared.env.clone(), None)?;
                parts.insert(meta.group, p.clone());
                p
            }
        };
        let schema = meta.key_schema();
        tables.insert(
            meta.name.clone(),
            Arc::new(Table {
                meta,
                schema,
                partition,
            }),
        );
    }
    let live: std::collections::HashSet<u64> =
        tables.values().map(|t: &Arc<Table>| t.meta.group).collect();
    parts.retain(|g, _| live.contains(g));
    shared.view.store(Arc::new(Catalog { tables }));
    Ok(())
}
