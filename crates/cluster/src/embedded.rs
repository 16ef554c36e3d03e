//! The embedded mode: every role in one process. One storage node (id
//! [`EMBEDDED_NODE_ID`], zone [`EMBEDDED_AZ`]) hosts the control-plane group
//! and every partition, each a one-member Raft group on the node's one WAL;
//! the router calls it in-process. It is the one-node case of the cluster:
//! the same commands, state machines, logs, placement and routing.

use crate::catalog::CatalogWatch;
use crate::host::{Host, HostConfig};
use crate::node::{ControlMember, register_once, spawn_replica_tasks};
use crate::remote::Remote;
use crate::router::Router;
use crate::{reconcile, ttl};
use dynaraft_storage::machine::CATALOG_GROUP;
use dynaraft_storage::{NodeRecord, StorageError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const EMBEDDED_NODE_ID: u64 = 1;
pub const EMBEDDED_AZ: &str = "local";
/// The embedded node has no internal endpoint; this names it in the catalog.
pub const EMBEDDED_ADDR: &str = "in-process";
/// Longest start-up waits for the catalog to reflect the control group's
/// state on disk, in milliseconds.
pub const CATALOG_LOAD_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Data directory; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Interval of the TTL sweeper, in milliseconds.
    pub ttl_sweep_interval_ms: u64,
    /// Size at which a WAL segment is closed, in bytes.
    pub wal_segment_bytes: u64,
    /// See `HostConfig::idle_compaction_after_ms`.
    pub idle_compaction_after_ms: u64,
    /// The state machine's engine for a new data directory.
    pub engine: crate::host::Engine,
    /// See `HostConfig::memory_limit_bytes`.
    pub memory_limit_bytes: u64,
    /// When partitions split (by size and by load, see `split`).
    pub split: crate::split::SplitPolicy,
    /// See `HostConfig::encryption`.
    pub encryption: Option<Arc<dynaraft_storage::cipher::KeyRing>>,
    /// This deployment's region and its peers, for global tables; `None`:
    /// no replicator runs.
    pub peer_regions: Option<Arc<crate::peer::PeerRegions>>,
    /// Where exports write and imports read (`--object-store`); `None`:
    /// exports and imports fail.
    pub object_store: Option<Arc<crate::objects::ObjectStore>>,
    /// How often point-in-time recovery snapshots a table, in
    /// milliseconds (0: never; restores then undo from the live table).
    pub pitr_snapshot_interval_ms: u64,
}

impl EmbeddedConfig {
    pub fn new(data_dir: Option<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            data_dir,
            ttl_sweep_interval_ms: ttl::TTL_SWEEP_INTERVAL_MS,
            wal_segment_bytes: crate::host::WAL_SEGMENT_BYTES,
            idle_compaction_after_ms: crate::host::IDLE_COMPACTION_AFTER_MS,
            engine: crate::host::DEFAULT_ENGINE,
            memory_limit_bytes: crate::host::DEFAULT_MEMORY_LIMIT_BYTES,
            split: crate::split::SplitPolicy {
                load_ops_per_s: crate::heat::DEFAULT_EMBEDDED_SPLIT_LOAD_OPS_PER_S,
                ..crate::split::SplitPolicy::default()
            },
            encryption: None,
            peer_regions: None,
            object_store: None,
            pitr_snapshot_interval_ms: crate::backup::DEFAULT_PITR_SNAPSHOT_INTERVAL_MS,
        }
    }
}

/// A running one-node system.
#[derive(Clone)]
pub struct Embedded {
    pub host: Host,
    pub router: Router,
}

impl Embedded {
    /// Opens the node, starts the control plane and every partition it
    /// holds, and returns once the catalog is readable.
    pub async fn start(cfg: EmbeddedConfig) -> Result<Embedded, StorageError> {
        let host_cfg = HostConfig {
            wal_segment_bytes: cfg.wal_segment_bytes,
            idle_compaction_after_ms: cfg.idle_compaction_after_ms,
            engine: cfg.engine,
            memory_limit_bytes: cfg.memory_limit_bytes,
            encryption: cfg.encryption.clone(),
            ..HostConfig::new(EMBEDDED_NODE_ID, EMBEDDED_AZ, EMBEDDED_ADDR, cfg.data_dir)
        };
        let host = Host::open(host_cfg.clone()).await?;
        let members = BTreeMap::from([(EMBEDDED_NODE_ID, host_cfg.info())]);
        host.start_group(CATALOG_GROUP, Some(members)).await?;
        let catalog = Arc::new(CatalogWatch::default());
        let control = vec![ControlMember {
            id: EMBEDDED_NODE_ID,
            addr: EMBEDDED_ADDR.into(),
            az: EMBEDDED_AZ.into(),
        }];
        let router = Router::new(
            catalog.clone(),
            Some(host.clone()),
            control,
            Remote::default(),
        );
        let c = catalog.clone();
        host.spawn(move |h, stop| reconcile::feed_from_local(h, c, stop));
        let applied = dynaraft_storage::machine::applied_index(host.tree(), CATALOG_GROUP)?;
        tokio::time::timeout(
            Duration::from_millis(CATALOG_LOAD_TIMEOUT_MS),
            catalog.wait_for(applied),
        )
        .await
        .map_err(|_| StorageError::Unavailable("catalog did not load".into()))?;
        let record = NodeRecord {
            id: EMBEDDED_NODE_ID,
            addr: EMBEDDED_ADDR.into(),
            az: EMBEDDED_AZ.into(),
            draining: false,
            encrypted: host_cfg.encryption.is_some() && host_cfg.data_dir.is_some(),
        };
        register_once(&router, &record)
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        spawn_replica_tasks(
            &host,
            &router,
            &catalog,
            cfg.ttl_sweep_interval_ms,
            cfg.peer_regions.clone(),
            cfg.object_store.clone(),
            cfg.pitr_snapshot_interval_ms,
        );
        let (r, policy) = (router.clone(), cfg.split);
        host.spawn(move |h, stop| crate::split::run(h, r, policy, stop));
        Ok(Embedded { host, router })
    }

    /// Stops every task and group; the data directory can then be reopened.
    pub async fn shutdown(self) {
        let Embedded { host, router } = self;
        drop(router);
        host.shutdown().await;
    }
}
