//! Keeps a storage node's replicas equal to what the catalog assigns it:
//! starts the replicas of new partitions (the first replica named by the
//! placement initialises the group's membership) and removes those of
//! dropped tables. Also feeds the catalog from a local control-plane
//! replica: every applied batch of group 0 republishes the snapshot.

use crate::catalog::{Catalog, CatalogWatch};
use crate::host::Host;
use dynaraft_raft::NodeInfo;
use dynaraft_storage::StorageError;
use dynaraft_storage::machine::CATALOG_GROUP;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Pause before retrying a reconciliation that failed, in milliseconds.
pub const RECONCILE_RETRY_MS: u64 = 500;

/// Reconciles on every catalog change until the node shuts down.
pub async fn run(host: Host, catalog: Arc<CatalogWatch>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = catalog.subscribe();
    loop {
        let pause = match reconcile_once(&host, &catalog.get()).await {
            Ok(()) => Duration::MAX,
            Err(e) => {
                tracing::warn!(node = host.id(), error = %e, "reconcile failed; will retry");
                Duration::from_millis(RECONCILE_RETRY_MS)
            }
        };
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(pause) => {}
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}

/// Starts missing replicas and removes unassigned ones, once.
pub async fn reconcile_once(host: &Host, catalog: &Catalog) -> Result<(), StorageError> {
    if catalog.version == 0 {
        // Nothing known yet: never remove replicas on an empty catalog.
        return Ok(());
    }
    let want = catalog.groups_of(host.id());
    for (group, replicas) in &want {
        if host.group(*group).is_some() {
            continue;
        }
        let init = (replicas.first() == Some(&host.id()))
            .then(|| members(catalog, replicas))
            .flatten();
        host.start_group(*group, init).await?;
    }
    for g in host.hosted() {
        if g != CATALOG_GROUP && !want.contains_key(&g) {
            host.remove_group(g).await?;
        }
    }
    Ok(())
}

/// The replicas' addresses and zones; `None` while one is not registered.
fn members(catalog: &Catalog, replicas: &[u64]) -> Option<BTreeMap<u64, NodeInfo>> {
    replicas
        .iter()
        .map(|id| {
            catalog.nodes.get(id).map(|n| {
                (
                    *id,
                    NodeInfo {
                        addr: n.addr.clone(),
                        az: n.az.clone(),
                    },
                )
            })
        })
        .collect()
}

/// Republishes the catalog from the local control-group replica after
/// every batch it applies, until the node shuts down.
pub async fn feed_from_local(
    host: Host,
    catalog: Arc<CatalogWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(group) = host.group(CATALOG_GROUP) else {
        tracing::error!("no local control-plane replica to feed the catalog from");
        return;
    };
    let mut applied = group.applied.clone();
    drop(group);
    loop {
        match Catalog::load(host.tree()) {
            Ok(c) => catalog.publish(c),
            Err(e) => tracing::error!(error = %e, "catalog load failed"),
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = dynaraft_storage::stop_requested(&mut shutdown) => return,
        }
    }
}
