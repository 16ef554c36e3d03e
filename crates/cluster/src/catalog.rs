//! The catalog as the data path reads it: an immutable snapshot of every
//! table (with its partition map) and every storage node, rebuilt from the
//! control-plane group's state and published through an [`ArcSwap`], so
//! readers never take a lock. Its version is the control group's applied
//! log index: a caller that changed the catalog at index `i` waits for
//! version `i` to read its own change.

use arc_swap::ArcSwap;
use dynaraft_model::KeySchema;
use dynaraft_storage::jobs::Job;
use dynaraft_storage::machine::{self, CATALOG_GROUP};
use dynaraft_storage::{NodeRecord, PartitionMeta, StorageError, TableMeta, UserRecord};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// A table as the data path sees it: metadata (with partitions) and schema.
#[derive(Debug)]
pub struct Table {
    pub meta: TableMeta,
    pub schema: KeySchema,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// The control group's applied index this snapshot reflects.
    pub version: u64,
    pub tables: BTreeMap<String, Arc<Table>>,
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// Every partition (of a table or of a global index) by group id, with
    /// its table's name.
    pub partitions: BTreeMap<u64, (String, PartitionMeta)>,
    /// The users the control plane keeps, by access key id.
    pub users: Arc<BTreeMap<String, UserRecord>>,
    /// Exports and imports, by ARN.
    pub jobs: Arc<BTreeMap<String, Job>>,
}

impl Catalog {
    fn new(
        version: u64,
        tables: BTreeMap<String, Arc<Table>>,
        nodes: BTreeMap<u64, NodeRecord>,
        users: BTreeMap<String, UserRecord>,
        jobs: BTreeMap<String, Job>,
    ) -> Catalog {
        let partitions = tables
            .values()
            .flat_map(|t| t.meta.all_partitions().map(|p| (t.meta.name.clone(), p)))
            .map(|(name, p)| (p.group, (name, p.clone())))
            .collect();
        Catalog {
            version,
            tables,
            nodes,
            partitions,
            users: Arc::new(users),
            jobs: Arc::new(jobs),
        }
    }

    /// Reads the catalog from a sled tree holding a control-group replica.
    pub fn load(tree: &dynaraft_storage::kv::Store) -> Result<Catalog, StorageError> {
        let version = machine::applied_index(tree, CATALOG_GROUP)?;
        let mut tables = BTreeMap::new();
        for kv in tree.scan_prefix(machine::tables_prefix()) {
            let (_, v) = kv?;
            let meta: TableMeta = decode(&v)?;
            let schema = meta.key_schema()?;
            tables.insert(meta.name.clone(), Arc::new(Table { meta, schema }));
        }
        let mut nodes = BTreeMap::new();
        for kv in tree.scan_prefix(machine::nodes_prefix()) {
            let (_, v) = kv?;
            let n: NodeRecord = decode(&v)?;
            nodes.insert(n.id, n);
        }
        let mut users = BTreeMap::new();
        for kv in tree.scan_prefix(machine::users_prefix()) {
            let (_, v) = kv?;
            let u: UserRecord = decode(&v)?;
            users.insert(u.access_key_id.clone(), u);
        }
        let mut jobs = BTreeMap::new();
        for kv in tree.scan_prefix(machine::jobs_prefix()) {
            let (_, v) = kv?;
            let j: Job = decode(&v)?;
            jobs.insert(j.arn.clone(), j);
        }
        Ok(Catalog::new(version, tables, nodes, users, jobs))
    }

    /// Rebuilds a catalog received from another node.
    pub fn from_doc(doc: crate::wire::CatalogDoc) -> Result<Catalog, StorageError> {
        let tables = doc
            .tables
            .into_iter()
            .map(|meta| {
                let schema = meta.key_schema()?;
                Ok((meta.name.clone(), Arc::new(Table { meta, schema })))
            })
            .collect::<Result<_, StorageError>>()?;
        let nodes = doc.nodes.into_iter().map(|n| (n.id, n)).collect();
        let users = doc
            .users
            .into_iter()
            .map(|u| (u.access_key_id.clone(), u))
            .collect();
        let jobs = doc.jobs.into_iter().map(|j| (j.arn.clone(), j)).collect();
        Ok(Catalog::new(doc.version, tables, nodes, users, jobs))
    }

    /// The partitions with a replica on `node`, by group.
    pub fn groups_of(&self, node: u64) -> BTreeMap<u64, &PartitionMeta> {
        self.partitions
            .iter()
            .filter(|(_, (_, p))| p.replicas.contains(&node))
            .map(|(g, (_, p))| (*g, p))
            .collect()
    }

    /// The partition replicated by `group`.
    pub fn partition(&self, group: u64) -> Option<&PartitionMeta> {
        self.partitions.get(&group).map(|(_, p)| p)
    }
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(b).map_err(|e| StorageError::Corrupt(format!("catalog: {e}")))
}

/// The latest catalog snapshot and a watch of its version.
pub struct CatalogWatch {
    current: ArcSwap<Catalog>,
    version: watch::Sender<u64>,
}

impl Default for CatalogWatch {
    fn default() -> Self {
        CatalogWatch {
            current: ArcSwap::from_pointee(Catalog::default()),
            version: watch::channel(0).0,
        }
    }
}

impl CatalogWatch {
    pub fn get(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.current.load().tables.get(name).cloned()
    }

    /// Publishes `c` unless a newer snapshot is already published.
    pub fn publish(&self, c: Catalog) {
        let v = c.version;
        if v < self.current.load().version {
            return;
        }
        self.current.store(Arc::new(c));
        self.version.send_if_modified(|cur| {
            let changed = *cur != v;
            *cur = v;
            changed
        });
    }

    /// Waits until the published version is at least `v`.
    pub async fn wait_for(&self, v: u64) {
        let mut rx = self.version.subscribe();
        let _ = rx.wait_for(|cur| *cur >= v).await;
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
