//! The server's client connections: a bounded set in which a new client
//! never waits behind idle ones.
//!
//! At most `ApiConfig::max_connections` connections are served at once
//! (each holds a permit of the server's semaphore). Before, a client
//! arriving at the cap waited in `accept` until some connection ended.
//! Idle keep-alive connections end only when their header timeout fires,
//! so 4,200 idle connections kept a new client waiting 23.8 s. Now the
//! accept loop takes the new connection and, at the cap, asks the oldest
//! idle connection (no request in progress) to close. hyper's graceful
//! shutdown closes an idle HTTP/1 connection at once and lets a request in
//! progress finish. Only when every connection is busy does the new one
//! wait for a permit: that is real load, and waiting is the back-pressure.
//!
//! A client whose idle connection was closed reconnects, as after any
//! keep-alive close: the AWS SDKs retry a request that found its pooled
//! connection closed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The live connections, oldest first.
#[derive(Default)]
pub struct Connections {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    live: BTreeMap<u64, Arc<Shared>>,
}

/// What a connection task and the registry share.
#[derive(Default)]
struct Shared {
    /// Requests of the connection in progress.
    busy: AtomicUsize,
    /// Asked to close: the task shuts the connection down gracefully.
    close: Notify,
}

/// A connection's entry; dropping it (when the task ends) removes it.
pub struct Registered {
    id: u64,
    shared: Arc<Shared>,
    registry: Arc<Connections>,
}

/// Marks a request in progress on its connection until dropped.
pub struct Busy(Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain maps: still valid after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a new connection (the youngest).
    pub fn register(self: &Arc<Self>) -> Registered {
        let shared = Arc::new(Shared::default());
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(id, shared.clone());
        Registered {
            id,
            shared,
            registry: self.clone(),
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the oldest idle connection to close; whether there was one.
    pub fn close_oldest_idle(&self) -> bool {
        let mut inner = self.lock();
        let idle = inner
            .live
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| inner.live.remove(&id)) {
            Some(conn) => {
                // `notify_one` keeps the permit if the task is not waiting
                // yet, so the request is never lost.
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Registered {
    /// Resolves when the registry asks this connection to close.
    pub async fn close_requested(&self) {
        self.shared.close.notified().await
    }

    /// A handle for the request path to mark requests busy.
    pub fn marker(&self) -> Marker {
        Marker(self.shared.clone())
    }
}

/// Marks requests of one connection busy (cloned into its service).
#[derive(Clone)]
pub struct Marker(Arc<Shared>);

impl Marker {
    pub fn busy(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.0.clone())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_is_asked_to_close() {
        let reg = Arc::new(Connections::default());
        let (a, b, c) = (reg.register(), reg.register(), reg.register());
        let busy = a.marker().busy();
        assert_eq!(reg.len(), 3);
        assert!(reg.close_oldest_idle());
        // `a` is busy, so `b` (the oldest idle one) goes.
        tokio::time::timeout(std::time::Duration::from_secs(1), b.close_requested())
            .await
            .expect("b asked to close");
        assert_eq!(reg.len(), 2);
        drop(busy);
        assert!(reg.close_oldest_idle());
        tokio::time::timeout(std::time::Duration::from_secs(1), a.close_requested())
            .await
            .expect("a asked to close once idle");
        let _busy = c.marker().busy();
        assert!(!reg.close_oldest_idle(), "every connection left is busy");
        drop((a, b));
        assert_eq!(reg.len(), 1);
    }
}
