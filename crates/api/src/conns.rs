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
//!
//! One client (one peer IP address) holds at most
//! `ApiConfig::max_connections_per_client` of them, so a single client
//! opening connections without end cannot take every slot from the others:
//! past its share, its own oldest idle connection is closed for the new
//! one, and if all of its connections are busy the new one is refused
//! (closed at once).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
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
    /// Live connections per client address.
    per_client: HashMap<IpAddr, usize>,
}

impl Inner {
    /// Takes connection `id` out of the registry, if it is still in it.
    fn remove(&mut self, id: u64) -> Option<Arc<Shared>> {
        let conn = self.live.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&conn.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&conn.client);
            }
        }
        Some(conn)
    }

    /// Asks the oldest idle connection accepted by `pick` to close.
    fn close_oldest_idle(&mut self, pick: impl Fn(&Shared) -> bool) -> bool {
        let idle = self
            .live
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0 && pick(c))
            .map(|(id, _)| *id);
        match idle.and_then(|id| self.remove(id)) {
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

/// What a connection task and the registry share.
struct Shared {
    /// The peer's address.
    client: IpAddr,
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

    /// Adds a new connection (the youngest) from `client`.
    pub fn register(self: &Arc<Self>, client: IpAddr) -> Registered {
        let shared = Arc::new(Shared {
            client,
            busy: AtomicUsize::new(0),
            close: Notify::new(),
        });
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(id, shared.clone());
        *inner.per_client.entry(client).or_insert(0) += 1;
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

    /// Connections open now from `client`.
    pub fn of_client(&self, client: IpAddr) -> usize {
        self.lock().per_client.get(&client).copied().unwrap_or(0)
    }

    /// Asks the oldest idle connection to close; whether there was one.
    pub fn close_oldest_idle(&self) -> bool {
        self.lock().close_oldest_idle(|_| true)
    }

    /// Asks `client`'s oldest idle connection to close; whether it had one.
    pub fn close_oldest_idle_of(&self, client: IpAddr) -> bool {
        self.lock().close_oldest_idle(|c| c.client == client)
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
        self.registry.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_is_asked_to_close() {
        let reg = Arc::new(Connections::default());
        let ip = IpAddr::from([127, 0, 0, 1]);
        let (a, b, c) = (reg.register(ip), reg.register(ip), reg.register(ip));
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

    #[tokio::test]
    async fn a_client_over_its_share_loses_its_own_idle_connection_not_others() {
        let reg = Arc::new(Connections::default());
        let (one, two) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let other = reg.register(two);
        let (a, b) = (reg.register(one), reg.register(one));
        assert_eq!((reg.of_client(one), reg.of_client(two)), (2, 1));
        let _busy = a.marker().busy();
        assert!(reg.close_oldest_idle_of(one));
        tokio::time::timeout(std::time::Duration::from_secs(1), b.close_requested())
            .await
            .expect("b, the client's oldest idle connection, asked to close");
        assert_eq!((reg.of_client(one), reg.of_client(two)), (1, 1));
        assert!(
            !reg.close_oldest_idle_of(one),
            "its only connection left is busy"
        );
        drop((b, other));
        assert_eq!((reg.of_client(one), reg.of_client(two)), (1, 0));
    }
}
