//! The DynamoDB API: the HTTP edge ([`http`]), one module per operation
//! ([`ops`]), each parsing and validating its request into typed values
//! before touching storage, and the single mapping from failures to
//! DynamoDB errors ([`error`]).
//!
//! Depends on model, expr, storage (commands and types) and cluster (the
//! router). It never reaches into a state machine: every write and read
//! goes through `dynaraft_cluster::Router`, in-process or across nodes.

// The HTTP handler's future nests every operation's; its layout needs more
// than the default query depth.
#![recursion_limit = "256"]

pub mod conns;
pub mod encoding;
pub mod enums;
pub mod error;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod params;
pub mod scope;
pub mod tag_rules;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Most client connections served at once unless configured otherwise (at
/// the cap, the oldest idle one is closed for a new one; see [`conns`]).
pub const MAX_CONNECTIONS: usize = 4096;
/// Time a client has to send a request's headers before the connection is
/// closed, so idle or stalled connections cannot hold a slot forever.
pub const HEADER_READ_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Delay of CREATING -> ACTIVE, UPDATING -> ACTIVE and DELETING -> gone,
    /// in milliseconds; 0 makes transitions instant.
    pub transition_delay_ms: u64,
    pub region: String,
    pub account_id: String,
    /// What DescribeEndpoints reports.
    pub endpoint_address: String,
    /// See [`HEADER_READ_TIMEOUT_MS`].
    pub header_read_timeout_ms: u64,
    /// Partitions (Raft groups) a new table is split into by key hash.
    pub partitions_per_table: usize,
    /// Largest item collection (a partition key value's items and their
    /// local index entries) of a table with local indexes, in bytes.
    pub item_collection_limit_bytes: u64,
    /// Every request sees the same tables; off, each access key id and
    /// region has its own (DynamoDB Local without `-sharedDb`; see
    /// [`scope`]).
    pub shared_db: bool,
    /// Most client connections served at once (see [`conns`]).
    pub max_connections: usize,
    /// How long a stream enabled through this router keeps its records, in
    /// milliseconds (stored with the stream, so every node purges alike).
    pub stream_retention_ms: u64,
}

/// How long a stream keeps its records unless configured otherwise, in
/// milliseconds (DynamoDB: 24 hours).
pub const DEFAULT_STREAM_RETENTION_MS: u64 = dynaraft_storage::catalog::STREAM_RETENTION_MS;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            transition_delay_ms: 0,
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            endpoint_address: "localhost:8000".into(),
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS,
            partitions_per_table: 1,
            item_collection_limit_bytes:
                dynaraft_storage::index::DEFAULT_ITEM_COLLECTION_LIMIT_BYTES,
            shared_db: true,
            max_connections: MAX_CONNECTIONS,
            stream_retention_ms: DEFAULT_STREAM_RETENTION_MS,
        }
    }
}

#[derive(Clone)]
pub struct Api {
    pub router: dynaraft_cluster::Router,
    pub cfg: Arc<ApiConfig>,
    /// Whose tables the request being served sees.
    pub scope: scope::Scope,
}

impl Api {
    pub fn new(router: dynaraft_cluster::Router, cfg: Arc<ApiConfig>) -> Api {
        Api {
            router,
            cfg,
            scope: scope::Scope::default(),
        }
    }

    /// The table the request calls `name`, if it exists in its scope.
    pub fn table(&self, name: &str) -> Option<Arc<dynaraft_cluster::Table>> {
        self.router.table(&self.scope.table_key(name))
    }

    /// Every table of the request's scope, by catalog name.
    pub fn tables(&self) -> Vec<Arc<dynaraft_cluster::Table>> {
        let mut t = self.router.tables();
        t.retain(|t| self.scope.owns(&t.meta.name));
        t
    }

    /// The region table ARNs carry.
    pub fn region(&self) -> &str {
        self.scope.region(&self.cfg.region)
    }
}

/// A running HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    /// One permit per possible connection; all of them free means every
    /// connection task has ended.
    limit: Arc<Semaphore>,
    max_connections: usize,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves until stopped.
    pub async fn start(api: Api, addr: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        metrics::install();
        ops::resume_transitions(&api);
        let (stop, stopped) = watch::channel(false);
        let max_connections = api.cfg.max_connections.max(1);
        let limit = Arc::new(Semaphore::new(max_connections));
        let done = tokio::spawn(accept_loop(api, listener, limit.clone(), stopped));
        Ok(Server {
            addr,
            stop,
            done,
            limit,
            max_connections,
        })
    }

    /// Stops accepting, lets open requests finish, and returns once every
    /// connection task has ended (so nothing holds the node any more).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
        let _ = self.limit.acquire_many(self.max_connections as u32).await;
    }
}

/// Accepts connections until stopped. At the cap, the oldest idle
/// connection is asked to close to make room (see [`conns`]).
async fn accept_loop(
    api: Api,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let registry = Arc::new(conns::Connections::default());
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            _ = dynaraft_storage::stop_requested(&mut stopped) => break,
        };
        if limit.available_permits() == 0 && registry.close_oldest_idle() {
            metrics::idle_connection_closed();
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = dynaraft_storage::stop_requested(&mut stopped) => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = registry.register();
        tokio::spawn(serve(api.clone(), stream, conn, permit, stopped.clone()));
    }
}

/// Serves one connection until it ends, the server stops or the registry
/// asks it to close.
async fn serve(
    api: Api,
    stream: tokio::net::TcpStream,
    registered: conns::Registered,
    _permit: tokio::sync::OwnedSemaphorePermit,
    mut stopped: watch::Receiver<bool>,
) {
    let header_timeout = std::time::Duration::from_millis(api.cfg.header_read_timeout_ms);
    let marker = registered.marker();
    let svc = service_fn(move |req| {
        let busy = marker.busy();
        let api = api.clone();
        async move {
            let response = http::handle(api, req).await;
            drop(busy);
            response
        }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r { tracing::debug!(error = %e, "connection ended"); }
            return;
        }
        _ = dynaraft_storage::stop_requested(&mut stopped) => {}
        _ = registered.close_requested() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
