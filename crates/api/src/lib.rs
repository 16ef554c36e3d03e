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

pub mod audit;
pub mod auth;
pub mod capacity;
pub mod conns;
pub mod console;
pub mod encoding;
pub mod enums;
pub mod error;
pub mod http;
pub mod insights;
pub mod metrics;
pub mod ops;
pub mod params;
pub mod reload;
pub mod scope;
pub mod tag_rules;
pub mod tls;

use arc_swap::ArcSwap;
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
/// Most connections one client address holds unless configured otherwise:
/// a quarter of [`MAX_CONNECTIONS`], so one client cannot take them all.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = MAX_CONNECTIONS / 4;
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
    /// Most connections one client (peer IP address) holds at once.
    pub max_connections_per_client: usize,
    /// How long a stream enabled through this router keeps its records, in
    /// milliseconds (stored with the stream, so every node purges alike).
    pub stream_retention_ms: u64,
    /// Log one line per API request (operation, status, error type,
    /// milliseconds, request id) at info, target `dynaraft::request`.
    pub request_log: bool,
    /// The users requests must authenticate as (SigV4) and their policies;
    /// `None` accepts any signature, like DynamoDB Local.
    pub auth: Option<Arc<auth::Auth>>,
    /// Where one JSON line per request goes, if anywhere.
    pub audit: Option<Arc<audit::AuditLog>>,
    /// Serve HTTPS with this certificate (reloaded when its files change).
    pub tls: Option<Arc<tls::Tls>>,
    /// `/metrics` is served on its own address ([`serve_metrics`]), not on
    /// the API's port.
    pub metrics_elsewhere: bool,
    /// The web console is served at `/console` ([`console`]).
    pub console: bool,
    /// This deployment's region and its peers, for global tables (`None`:
    /// replicas are refused).
    pub peer_regions: Option<Arc<dynaraft_cluster::peer::PeerRegions>>,
    /// Provisioned capacity's buckets and each table's consumption (see
    /// [`capacity`]); built with enforcement off, nothing is refused.
    pub capacity: Arc<capacity::Capacity>,
    /// Resource-based policies, parsed once per document.
    pub policies: Arc<auth::PolicyCache>,
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
            max_connections_per_client: MAX_CONNECTIONS_PER_CLIENT,
            stream_retention_ms: DEFAULT_STREAM_RETENTION_MS,
            request_log: false,
            auth: None,
            audit: None,
            tls: None,
            metrics_elsewhere: false,
            console: true,
            peer_regions: None,
            capacity: Arc::new(capacity::Capacity::default()),
            policies: Arc::default(),
        }
    }
}

#[derive(Clone)]
pub struct Api {
    pub router: dynaraft_cluster::Router,
    pub cfg: Arc<ApiConfig>,
    /// Whose tables the request being served sees.
    pub scope: scope::Scope,
    /// Who the request is served for, when requests are authenticated.
    pub principal: Option<Arc<auth::Principal>>,
    /// Serving a PartiQL statement: the item operations it runs as are
    /// authorized as PartiQL's actions ([`auth::partiql_action`]).
    pub partiql: bool,
    /// The transaction operation the item actions being authorized belong
    /// to (`dynamodb:EnclosingOperation`).
    pub enclosing: Option<&'static str>,
    /// The ARNs this request was authorized for, kept when requests are
    /// audited.
    pub resources: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

impl Api {
    pub fn new(router: dynaraft_cluster::Router, cfg: Arc<ApiConfig>) -> Api {
        Api {
            router,
            cfg,
            scope: scope::Scope::default(),
            principal: None,
            partiql: false,
            enclosing: None,
            resources: None,
        }
    }

    /// Whether the request's principal may have `access` (always, when
    /// requests are not authenticated). Every operation calls this before
    /// it reads or writes.
    pub fn authorize(&self, access: impl FnOnce() -> auth::Access) -> Result<(), error::ApiError> {
        if self.principal.is_none() && self.resources.is_none() {
            return Ok(());
        }
        let mut access = access();
        if self.partiql {
            access.action = auth::partiql_action(access.action);
        }
        access.enclosing_operation = self.enclosing;
        if let Some(seen) = &self.resources {
            let arn = auth::arn(&access.resource, self.region(), self.account());
            // A poisoned lock guards only a list of names, still valid.
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(arn);
        }
        match &self.principal {
            Some(p) => p.authorize(&access, self.resource_policy(&access.resource)?.as_deref()),
            None => Ok(()),
        }
    }

    /// Whether the request's principal may have `access`, asked without
    /// refusing or counting a denial (the console lists only the tables its
    /// user may describe).
    pub fn allows(&self, access: auth::Access) -> bool {
        match &self.principal {
            None => true,
            Some(p) => self
                .resource_policy(&access.resource)
                .is_ok_and(|rp| p.decide(&access, rp.as_deref()).is_ok()),
        }
    }

    /// The resource-based policy of what `r` names: its table's, or its
    /// stream's (none for anything else, or a table of another account).
    pub fn resource_policy(
        &self,
        r: &auth::Resource,
    ) -> Result<Option<Arc<auth::policy::Policy>>, error::ApiError> {
        let (table, stream) = match r {
            auth::Resource::Table(t) | auth::Resource::Index(t, _) => (t.as_str(), None),
            auth::Resource::Arn(arn) => {
                let own = params::Arn::parse(arn).filter(|a| {
                    (a.partition, a.service) == ("aws", "dynamodb")
                        && (a.region, a.account) == (self.region(), self.account())
                });
                let Some(rest) = own
                    .and_then(|a| a.resource)
                    .and_then(|r| r.strip_prefix("table/"))
                else {
                    return Ok(None);
                };
                match rest.split_once("/stream/") {
                    Some((t, label)) => (t, Some(label)),
                    None if !rest.contains('/') => (rest, None),
                    None => return Ok(None),
                }
            }
            auth::Resource::Any => return Ok(None),
        };
        let Some(t) = self.table(table) else {
            return Ok(None);
        };
        let Some(p) = t.meta.resource_policy(stream) else {
            return Ok(None);
        };
        // Stored only after it parsed: one that no longer does is refused,
        // never ignored (it may hold a Deny).
        self.cfg
            .policies
            .parsed(&p.document)
            .map(Some)
            .map_err(|e| {
                error::ApiError::InternalServerError(format!(
                    "the resource-based policy of {table} does not parse: {e}"
                ))
            })
    }

    /// This API serving the items of transaction operation `op` (see
    /// [`Api::enclosing`]).
    pub fn within(&self, op: &'static str) -> Api {
        Api {
            enclosing: Some(op),
            ..self.clone()
        }
    }

    /// This API serving PartiQL statements (see [`Api::partiql`]).
    pub fn for_partiql(&self) -> Api {
        Api {
            partiql: true,
            ..self.clone()
        }
    }

    /// The account table ARNs carry: the principal's when authenticated.
    pub fn account(&self) -> &str {
        self.scope.account(&self.cfg.account_id)
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

/// What the server answers with: the API, or, while the storage under it
/// is down (being reopened after a disk failure), why it cannot serve.
pub enum Serving {
    Up(Api),
    Down(String),
}

/// A running HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    serving: Arc<ArcSwap<Serving>>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    /// One permit per possible connection; all of them free means every
    /// connection task has ended.
    limit: Arc<Semaphore>,
    max_connections: usize,
    /// A second handle on the listening socket, for a process that replaces
    /// itself (`exec`) to hand it on (see [`Server::listening_socket`]).
    socket: std::net::TcpListener,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves `api` until
    /// stopped.
    pub async fn start(api: Api, addr: SocketAddr) -> std::io::Result<Server> {
        Server::start_on(api, TcpListener::bind(addr).await?.into_std()?).await
    }

    /// Serves `api` on a socket already listening.
    pub async fn start_on(api: Api, listener: std::net::TcpListener) -> std::io::Result<Server> {
        ops::resume_transitions(&api);
        metrics::add_tables(&api.cfg.capacity, &api.router);
        let cfg = api.cfg.clone();
        Server::serve(Serving::Up(api), cfg, listener).await
    }

    /// Serves without an API, down for `why`, on a socket already
    /// listening, until [`Server::bring_up`].
    pub async fn start_down_on(
        cfg: Arc<ApiConfig>,
        listener: std::net::TcpListener,
        why: String,
    ) -> std::io::Result<Server> {
        Server::serve(Serving::Down(why), cfg, listener).await
    }

    async fn serve(
        serving: Serving,
        cfg: Arc<ApiConfig>,
        listener: std::net::TcpListener,
    ) -> std::io::Result<Server> {
        let socket = listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        metrics::install();
        let (stop, stopped) = watch::channel(false);
        let max_connections = cfg.max_connections.max(1);
        let limit = Arc::new(Semaphore::new(max_connections));
        let serving = Arc::new(ArcSwap::from_pointee(serving));
        let accepting = Accepting {
            serving: serving.clone(),
            cfg,
            limit: limit.clone(),
        };
        if let Some(tls) = &accepting.cfg.tls {
            tokio::spawn(tls.clone().watch(stopped.clone()));
        }
        if let Some(auth) = &accepting.cfg.auth {
            tokio::spawn(auth.clone().watch(stopped.clone()));
        }
        let done = tokio::spawn(accept_loop(accepting, listener, stopped));
        Ok(Server {
            addr,
            serving,
            stop,
            done,
            limit,
            max_connections,
            socket,
        })
    }

    /// The listening socket (a second descriptor of it, close-on-exec like
    /// every other): a process about to re-execute itself clears that flag
    /// so that the new image keeps listening on the same socket, and
    /// clients arriving meanwhile wait in its backlog instead of being
    /// refused.
    pub fn listening_socket(&self) -> &std::net::TcpListener {
        &self.socket
    }

    /// Answers every API request with a retryable ServiceUnavailable (and
    /// `/ready` with 503) saying `why`, and lets go of the API served until
    /// now, so nothing new reaches the storage under it.
    pub fn take_down(&self, why: String) {
        self.serving.store(Arc::new(Serving::Down(why)));
    }

    /// Serves `api` (after [`Server::take_down`]), resuming the table
    /// transitions its catalog holds.
    pub fn bring_up(&self, api: Api) {
        ops::resume_transitions(&api);
        metrics::add_tables(&api.cfg.capacity, &api.router);
        self.serving.store(Arc::new(Serving::Up(api)));
    }

    /// Stops accepting, lets open requests finish, and returns once every
    /// connection task has ended (so nothing holds the node any more).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
        let _ = self.limit.acquire_many(self.max_connections as u32).await;
    }
}

/// Largest request head the metrics listener reads, in bytes (hyper's
/// least).
pub const METRICS_MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most connections the metrics listener serves at once (scrapers are
/// few; past it, new ones wait in the backlog).
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (Prometheus text) and `GET /ready` (the storage
/// node's readiness, `Host::readiness`: 503 with the reason until it is
/// caught up and serving) on `addr`, for deployments that keep metrics off
/// the API's port (`--metrics-listen`);
/// plain HTTP, at most [`METRICS_MAX_CONNECTIONS`] connections, each
/// bounded by the header timeout. Runs until the process ends.
pub async fn serve_metrics(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    metrics::install();
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let limit = Arc::new(Semaphore::new(METRICS_MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let (status, text) = match (req.method(), req.uri().path()) {
                    (&hyper::Method::GET, "/metrics") => match metrics::render() {
                        Some(t) => (200, t),
                        None => (404, "metrics are not enabled\n".to_string()),
                    },
                    // A storage node's readiness: caught up and serving.
                    (&hyper::Method::GET, "/ready") => match metrics::node_readiness() {
                        Ok(()) => (200, "ready\n".to_string()),
                        Err(why) => (503, format!("not ready: {why}\n")),
                    },
                    _ => (404, "Page Not Found\n".to_string()),
                };
                let body = http_body_util::Full::new(bytes::Bytes::from(text));
                let mut r = hyper::Response::new(body);
                *r.status_mut() =
                    hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::NOT_FOUND);
                Ok::<_, std::convert::Infallible>(r)
            });
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_millis(HEADER_READ_TIMEOUT_MS))
                    .max_buf_size(METRICS_MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = conn.await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// What the accept loop hands each connection.
struct Accepting {
    serving: Arc<ArcSwap<Serving>>,
    cfg: Arc<ApiConfig>,
    /// See [`Server::limit`].
    limit: Arc<Semaphore>,
}

/// Accepts connections until stopped. At the cap, the oldest idle
/// connection is asked to close to make room (see [`conns`]).
async fn accept_loop(
    accepting: Accepting,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    let registry = Arc::new(conns::Connections::default());
    let limit = &accepting.limit;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            _ = dynaraft_storage::stop_requested(&mut stopped) => break,
        };
        let client = peer.ip();
        if registry.of_client(client) >= accepting.cfg.max_connections_per_client.max(1)
            && !registry.close_oldest_idle_of(client)
        {
            // Every connection of this client is busy: it has its share.
            metrics::connection_refused();
            drop(stream);
            continue;
        }
        if limit.available_permits() == 0 && registry.close_oldest_idle() {
            metrics::idle_connection_closed();
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = dynaraft_storage::stop_requested(&mut stopped) => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = registry.register(client);
        let connection = Connection {
            peer: http::Peer {
                ip: Some(client),
                tls: accepting.cfg.tls.is_some(),
            },
            serving: accepting.serving.clone(),
            header_timeout_ms: accepting.cfg.header_read_timeout_ms,
            registered: conn,
            _permit: permit,
        };
        match accepting.cfg.tls.as_ref().map(|t| t.acceptor()) {
            None => {
                tokio::spawn(serve(connection, stream, stopped.clone(), true));
            }
            Some(acceptor) => {
                tokio::spawn(serve_tls(connection, acceptor, stream, stopped.clone()));
            }
        }
    }
}

/// One client connection's share of the server.
struct Connection {
    /// The client's address (`aws:SourceIp` in policies) and transport.
    peer: http::Peer,
    serving: Arc<ArcSwap<Serving>>,
    header_timeout_ms: u64,
    registered: conns::Registered,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Completes the TLS handshake (within the header timeout), then serves
/// the connection.
async fn serve_tls(
    connection: Connection,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    stopped: watch::Receiver<bool>,
) {
    let timeout = std::time::Duration::from_millis(connection.header_timeout_ms);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        // One buffer per response: a TLS stream would seal each slice of a
        // vectored write as a record of its own.
        Ok(Ok(tls)) => serve(connection, tls, stopped, false).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

/// Serves one connection until it ends, the server stops or the registry
/// asks it to close. Each request is served by what the server serves when
/// it arrives.
async fn serve<S>(
    connection: Connection,
    stream: S,
    mut stopped: watch::Receiver<bool>,
    vectored: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = std::time::Duration::from_millis(connection.header_timeout_ms);
    let registered = &connection.registered;
    let marker = registered.marker();
    let serving = connection.serving.clone();
    let peer = connection.peer;
    let svc = service_fn(move |req| {
        let busy = marker.busy();
        let serving = serving.load_full();
        async move {
            let response = http::handle(serving, req, peer).await;
            drop(busy);
            response
        }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .writev(vectored)
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
