//! `dynaraft`: one binary, roles chosen by subcommand: `embedded` (every
//! role in one process, like DynamoDB Local), `node` (a storage node of a
//! cluster, control-plane member when listed in `--control`), `router` (the
//! DynamoDB API of a cluster), `admin` (the cluster as a table), `bench`
//! (a load generator for any DynamoDB endpoint) and `streams tail` (a
//! table's stream as JSON lines).

mod jobs_cli;
mod supervise;
mod tail;

use clap::{Parser, Subcommand};
use dynaraft_api::{Api, ApiConfig, Server};
use dynaraft_cluster::admin;
use dynaraft_cluster::embedded::{Embedded, EmbeddedConfig};
use dynaraft_cluster::host::HostConfig;
use dynaraft_cluster::node::{ClusterNode, ControlMember, NodeConfig, RouterNode};
use dynaraft_storage::StorageError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// jemalloc instead of glibc's malloc: after a few hundred MB of writes
/// glibc's free lists fragment and every small allocation pays for a long
/// bin walk (`_int_malloc` went from 6% to 26% of the server's CPU on
/// Query after a PutItem run). decisions.md has the measurements.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "dynaraft",
    version,
    about = "A self-hosted database that speaks the Amazon DynamoDB API"
)]
struct Cli {
    /// How log lines are written to standard error: `human` (coloured on a
    /// terminal), `json` (one object per line, for collectors), or `auto`
    /// (human on a terminal, JSON otherwise). RUST_LOG selects what is
    /// logged (default: info, openraft's internals at warn).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// A storage node's answer to damaged data found at start-up.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CorruptData {
    Rebuild,
    Refuse,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Human,
    Json,
}

/// What is logged when RUST_LOG is not set: info, except openraft's
/// internals (state dumps of every election and membership change), which
/// log at warn.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

/// Sets up the log on standard error in `format`.
fn init_log(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Auto if !terminal => builder.json().init(),
        LogFormat::Human | LogFormat::Auto => builder.with_ansi(terminal).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process (the local-development default).
    Embedded(EmbeddedArgs),
    /// Run a storage node of a cluster (with --api-listen, also serving
    /// the DynamoDB API as a router does).
    Node(Box<NodeArgs>),
    /// Run a router: the DynamoDB API in front of a cluster's storage nodes.
    Router(RouterArgs),
    /// Inspect the cluster (nodes, zones, partitions, leaders, lag) and
    /// split partitions.
    Admin(AdminArgs),
    /// Load-test any DynamoDB endpoint (ours or another) with a YCSB
    /// workload and print throughput and latency percentiles.
    Bench(BenchCmd),
    /// DynamoDB Streams tools.
    #[command(subcommand)]
    Streams(StreamsCmd),
    /// Back a table up (CreateBackup) and wait until the backup is
    /// AVAILABLE, showing progress; prints the backup's details.
    Backup(jobs_cli::BackupArgs),
    /// Restore a backup, or a table to a point in time, into a new table
    /// and wait until it is ACTIVE, with a progress bar.
    Restore(jobs_cli::RestoreArgs),
    /// Export a table to the server's object store
    /// (ExportTableToPointInTime) and wait until it is done, with a
    /// progress bar.
    Export(jobs_cli::ExportArgs),
    /// Import the objects under a prefix of the server's object store into
    /// a new table (ImportTable) and wait until it is done, with progress.
    Import(jobs_cli::ImportArgs),
}

#[derive(clap::Subcommand)]
enum StreamsCmd {
    /// Follow every shard of a table's latest stream and print each record
    /// as a JSON line.
    Tail(tail::TailArgs),
}

#[derive(clap::Args)]
struct BenchCmd {
    #[command(flatten)]
    bench: dynaraft_bench::BenchArgs,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// For an https:// endpoint: the certificate (PEM) it is trusted by,
    /// its CA's or its own.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

#[derive(clap::Args)]
struct NodeArgs {
    /// This node's id (unique in the cluster, > 0).
    #[arg(long)]
    id: u64,
    /// Availability zone label, e.g. az-a.
    #[arg(long)]
    az: String,
    /// Address the internal gRPC endpoint binds to.
    #[arg(long)]
    listen: String,
    /// Serve `GET /metrics` (Prometheus text: Raft, splits, replication,
    /// storage) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Address peers and routers reach this node at (default: --listen),
    /// e.g. a pod's stable DNS name when listening on 0.0.0.0.
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for the write-ahead log, votes and state machines.
    #[arg(long)]
    data_dir: PathBuf,
    /// What the node does when it finds damaged data at start-up: `rebuild`
    /// moves the directory's contents aside (into `corrupt-<ms>` inside it)
    /// and starts empty, its replicas rebuilt from the other zones; `refuse`
    /// stops with the file at fault.
    #[arg(long, value_enum, default_value = "rebuild")]
    corrupt_data: CorruptData,
    /// Control-plane members, as id=host:port@az (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', required = true)]
    control: Vec<String>,
    /// This deployment's region: what a global table's writes made here
    /// are stamped with (the routers' --region).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[command(flatten)]
    global: GlobalArgs,
    /// Raft heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = dynaraft_cluster::host::Timing::default().heartbeat_interval_ms)]
    heartbeat_ms: u64,
    /// Raft election timeout (randomised between it and twice it), in milliseconds.
    #[arg(long, default_value_t = dynaraft_cluster::host::Timing::default().election_timeout_min_ms)]
    election_timeout_ms: u64,
    /// How long a node may stay unreachable before the control plane
    /// re-creates its replicas on another node of its zone, in milliseconds.
    #[arg(long, default_value_t = dynaraft_cluster::repair::DEFAULT_REPLACE_AFTER_MS)]
    replace_after_ms: u64,
    /// Log entries between a group's snapshots (each lets the log be purged).
    #[arg(long, default_value_t = dynaraft_cluster::host::Timing::default().snapshot_after_entries)]
    snapshot_after_entries: u64,
    /// Size at which a write-ahead log segment is closed, in bytes.
    #[arg(long, default_value_t = dynaraft_cluster::host::WAL_SEGMENT_BYTES)]
    wal_segment_bytes: u64,
    /// Interval between checkpoints (sled flush, purge of old WAL segments), in milliseconds.
    #[arg(long, default_value_t = dynaraft_cluster::host::CHECKPOINT_INTERVAL_MS)]
    checkpoint_interval_ms: u64,
    /// How long the node goes without a write before it compacts (journal
    /// and memtable flushed, logs purged, WAL segment closed, overwritten
    /// versions dropped), in milliseconds; 0: never.
    #[arg(long, default_value_t = dynaraft_cluster::host::IDLE_COMPACTION_AFTER_MS)]
    idle_compaction_after_ms: u64,
    /// The state machine's storage engine for a new data directory (an
    /// existing one keeps the engine it was created with).
    #[arg(long, default_value = DEFAULT_ENGINE, value_parser = ["sled", "fjall"])]
    engine: String,
    /// The node's memory budget, in MiB: shares of it size the store's
    /// cache and memtables and bound the Raft log tails held in memory
    /// (docs/reliability.md measures what it bounds and what it does not).
    #[arg(long, default_value_t = DEFAULT_MEMORY_LIMIT_MB)]
    memory_limit_mb: u64,
    /// Size at which a partition splits in two, in bytes (DynamoDB splits
    /// at about 10 GB; small values let tests watch tables split).
    #[arg(long, default_value_t = dynaraft_cluster::split::DEFAULT_SPLIT_SIZE_BYTES,
          value_parser = clap::value_parser!(u64).range(dynaraft_cluster::split::MIN_SPLIT_SIZE_BYTES..))]
    split_size_bytes: u64,
    /// Requests per second a partition must serve for 15 seconds to split
    /// in two where its sampled load halves (0: never split for load). A
    /// partition whose load is mostly one partition key's is not split but
    /// reported, since a split cannot cool one key.
    #[arg(long, default_value_t = dynaraft_cluster::heat::DEFAULT_SPLIT_LOAD_OPS_PER_S)]
    split_load_ops_per_s: u64,
    /// How often point-in-time recovery snapshots a table, in seconds
    /// (0: never). A restore to a time redoes the log from the latest
    /// snapshot before it when that is nearer than now.
    #[arg(long, default_value_t = dynaraft_cluster::backup::DEFAULT_PITR_SNAPSHOT_INTERVAL_MS / 1000)]
    pitr_snapshot_interval_s: u64,
    /// Where exports write and imports read: an S3-compatible endpoint, or
    /// `file:///a/dir` (each bucket a subdirectory, made by you). The
    /// embedded server on disk defaults to the `objects` directory of its
    /// data directory.
    #[arg(long)]
    object_store: Option<String>,
    /// Encrypt the data directory at rest with the keys in this file (one
    /// 64-hex-digit AES-256 key per line, the first active; see
    /// docs/security.md). Chosen when the directory is created.
    #[arg(long)]
    encryption_key_file: Option<PathBuf>,
    #[command(flatten)]
    routes: RouteArgs,
    #[command(flatten)]
    peer_tls: PeerTlsArgs,
    /// Also serve the DynamoDB API on this address (host:port), as a router
    /// does: requests this node can answer itself (an eventually consistent
    /// read of a partition it holds a replica of, a write to a partition it
    /// leads) skip the hop to another process. The flags below configure
    /// it as they do `dynaraft router`.
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<SocketAddr>,
    #[command(flatten)]
    api: ClusterApiArgs,
}

/// Mutual TLS on the cluster's gRPC port (docs/security.md).
#[derive(clap::Args)]
struct PeerTlsArgs {
    /// The CA certificate (PEM) that signs every member's certificate;
    /// with --peer-tls-cert and --peer-tls-key, every gRPC connection to
    /// and from this process is mutual TLS, and peers without a certificate
    /// it signed are refused.
    #[arg(long, requires_all = ["peer_tls_cert", "peer_tls_key"])]
    peer_tls_ca: Option<PathBuf>,
    /// This member's certificate chain (PEM); it must name
    /// --peer-tls-server-name.
    #[arg(long, requires = "peer_tls_ca")]
    peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert (PEM).
    #[arg(long, requires = "peer_tls_ca")]
    peer_tls_key: Option<PathBuf>,
    /// The DNS name every member's certificate carries, checked on the
    /// server's certificate by each client.
    #[arg(long, default_value = dynaraft_raft::tls::DEFAULT_PEER_SERVER_NAME)]
    peer_tls_server_name: String,
}

impl PeerTlsArgs {
    fn load(&self) -> anyhow::Result<Option<Arc<dynaraft_raft::tls::PeerTls>>> {
        let (Some(ca), Some(cert), Some(key)) =
            (&self.peer_tls_ca, &self.peer_tls_cert, &self.peer_tls_key)
        else {
            return Ok(None);
        };
        let tls = dynaraft_raft::tls::PeerTls::load(ca, cert, key, &self.peer_tls_server_name)
            .map_err(anyhow::Error::msg)?;
        Ok(Some(Arc::new(tls)))
    }
}

#[derive(clap::Args)]
struct RouterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Control-plane members, as id=host:port@az (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', required = true)]
    control: Vec<String>,
    /// Region used in ARNs.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Serve /metrics on this address (host:port) instead of the API's
    /// port, e.g. one only the monitoring network reaches.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    api: ClusterApiArgs,
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    routes: RouteArgs,
    #[command(flatten)]
    peer_tls: PeerTlsArgs,
    /// DELIBERATELY UNSAFE, for testing the fault harness only: answer
    /// single-item writes before they are committed (loses writes). Only
    /// in builds with the `failpoints` feature.
    #[cfg(feature = "failpoints")]
    #[arg(long, hide = true)]
    unsafe_ack_before_commit: bool,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// Control-plane members, as id=host:port@az (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', required = true)]
    control: Vec<String>,
    #[command(flatten)]
    peer_tls: PeerTlsArgs,
    /// Without a subcommand: nodes, zones, partitions, leaders and lag.
    #[command(subcommand)]
    what: Option<AdminCmd>,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Every partition of every table and index: hash range, items, bytes,
    /// replicas, leader, parent and any split in progress.
    Partitions {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Global tables: each partition's replication to each peer region
    /// (records acknowledged, backlog, age of the oldest unsent record,
    /// copy done), from the partitions' leaders.
    Replication {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move every replica off a node (to other nodes of its zone) before
    /// it is removed; nothing new is placed on it.
    Drain {
        /// The node's id.
        #[arg(long)]
        node: u64,
        /// Stop draining it.
        #[arg(long)]
        undo: bool,
    },
    /// Split one partition in two (the control plane finishes the split).
    Split {
        /// The table.
        #[arg(long)]
        table: String,
        /// A global index of the table, to split one of its partitions.
        #[arg(long)]
        index: Option<String>,
        /// The partition's group (see `admin partitions`); optional when
        /// there is only one.
        #[arg(long)]
        group: Option<u64>,
        /// The hash to split at, in hex (default: where its bytes halve).
        #[arg(long, value_parser = parse_hex_u64)]
        at: Option<u64>,
    },
    /// The users the control plane keeps (never their secrets).
    Users,
    /// Add a user, or replace the one with its access key id: a JSON file
    /// holding one user as in an auth file (access_key_id,
    /// secret_access_key, account_id, name, policies). Routers without an
    /// auth file authenticate every request once a user exists.
    PutUser {
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove a user.
    DeleteUser {
        #[arg(long)]
        access_key_id: String,
    },
    /// The control plane's own Raft group: without a subcommand, each
    /// member's view (voters, leader, log, lag); `remove` and `add` change
    /// its voters (replacing a lost member: deploy/README.md).
    Control {
        #[command(subcommand)]
        change: Option<ControlCmd>,
    },
}

#[derive(Subcommand)]
enum ControlCmd {
    /// Remove a voter (a member lost for good, or one whose data is gone
    /// and must rejoin empty). The others must still form a quorum.
    Remove {
        #[arg(long)]
        node: u64,
    },
    /// Add a voter, as id=host:port@az: it joins as a learner and becomes
    /// a voter once it has caught up. Start it (with itself in --control)
    /// first.
    Add {
        #[arg(long, value_parser = ControlMember::parse)]
        member: ControlMember,
    },
}

fn parse_hex_u64(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(clap::Args)]
struct RouteArgs {
    /// Reach the peer at ADDR through VIA instead, as ADDR=VIA (repeat or
    /// comma-separate): a proxy or NAT in front of a node. The fault
    /// harness `dynaraft-chaos` routes every link through its proxy.
    #[arg(long = "route", value_delimiter = ',')]
    routes: Vec<String>,
}

impl RouteArgs {
    /// The `--route ADDR=VIA` flags as a map.
    fn parse(&self) -> anyhow::Result<HashMap<String, String>> {
        self.routes
            .iter()
            .map(|s| match s.split_once('=') {
                Some((addr, via)) if !addr.is_empty() && !via.is_empty() => {
                    Ok((addr.to_string(), via.to_string()))
                }
                _ => anyhow::bail!("--route wants ADDR=VIA, got {s:?}"),
            })
            .collect()
    }
}

fn control_members(specs: &[String]) -> anyhow::Result<Vec<ControlMember>> {
    specs
        .iter()
        .map(|s| ControlMember::parse(s).map_err(anyhow::Error::msg))
        .collect()
}

#[derive(clap::Args)]
struct EmbeddedArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Directory for the write-ahead log and the state machine.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Keep everything in memory; nothing survives a restart.
    #[arg(long)]
    in_memory: bool,
    /// Milliseconds a table spends in CREATING, UPDATING or DELETING.
    #[arg(long, default_value_t = 500)]
    transition_delay_ms: u64,
    /// Make table status transitions instant (same as --transition-delay-ms 0).
    #[arg(long)]
    instant_transitions: bool,
    /// Partitions (Raft groups) each new table is split into.
    #[arg(long, default_value_t = 1)]
    partitions_per_table: usize,
    /// Region used in ARNs (with --shared-db; otherwise the region a
    /// request is signed for).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// One set of tables for every access key and region (DynamoDB Local's
    /// -sharedDb). Without it, as in DynamoDB Local, each access key id and
    /// region sees only its own tables.
    #[arg(long)]
    shared_db: bool,
    /// The state machine's storage engine for a new data directory (an
    /// existing one keeps the engine it was created with).
    #[arg(long, default_value = DEFAULT_ENGINE, value_parser = ["sled", "fjall"])]
    engine: String,
    /// The node's memory budget, in MiB: shares of it size the store's
    /// cache and memtables and bound the Raft log tails held in memory
    /// (docs/reliability.md measures what it bounds and what it does not).
    #[arg(long, default_value_t = DEFAULT_MEMORY_LIMIT_MB)]
    memory_limit_mb: u64,
    /// How long the server goes without a write before it compacts (journal
    /// and memtable flushed, log purged, WAL segment closed, overwritten
    /// versions dropped), in milliseconds; 0: never.
    #[arg(long, default_value_t = dynaraft_cluster::host::IDLE_COMPACTION_AFTER_MS)]
    idle_compaction_after_ms: u64,
    /// Size at which a partition splits in two, in bytes (DynamoDB splits
    /// at about 10 GB; small values let tests watch tables split).
    #[arg(long, default_value_t = dynaraft_cluster::split::DEFAULT_SPLIT_SIZE_BYTES,
          value_parser = clap::value_parser!(u64).range(dynaraft_cluster::split::MIN_SPLIT_SIZE_BYTES..))]
    split_size_bytes: u64,
    /// Requests per second a partition must serve for 15 seconds to split
    /// in two where its sampled load halves; 0 (the default here): never.
    /// One process gains nothing from more partitions (make bench measured
    /// 25% fewer PutItems a second with splits by load on), so the
    /// embedded server splits for load only when asked to.
    #[arg(long, default_value_t = dynaraft_cluster::heat::DEFAULT_EMBEDDED_SPLIT_LOAD_OPS_PER_S)]
    split_load_ops_per_s: u64,
    /// How often point-in-time recovery snapshots a table, in seconds
    /// (0: never). A restore to a time redoes the log from the latest
    /// snapshot before it when that is nearer than now.
    #[arg(long, default_value_t = dynaraft_cluster::backup::DEFAULT_PITR_SNAPSHOT_INTERVAL_MS / 1000)]
    pitr_snapshot_interval_s: u64,
    /// Where exports write and imports read: an S3-compatible endpoint, or
    /// `file:///a/dir` (each bucket a subdirectory, made by you). The
    /// embedded server on disk defaults to the `objects` directory of its
    /// data directory.
    #[arg(long)]
    object_store: Option<String>,
    /// Encrypt the data directory at rest with the keys in this file (one
    /// 64-hex-digit AES-256 key per line, the first active; see
    /// docs/security.md). Chosen when the directory is created.
    #[arg(long, conflicts_with = "in_memory")]
    encryption_key_file: Option<PathBuf>,
    /// How long a stream enabled through this server keeps its change
    /// records, in seconds (DynamoDB: 24 hours).
    #[arg(long, default_value_t = DEFAULT_STREAM_RETENTION_S)]
    stream_retention_s: u64,
    /// Log one line per API request (operation, status, error type,
    /// milliseconds, request id) at info, target `dynaraft::request`.
    #[arg(long)]
    request_log: bool,
    /// Serve /metrics on this address (host:port) instead of the API's
    /// port, e.g. one only the monitoring network reaches.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    edge: EdgeArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

/// How a cluster's DynamoDB API is served: by a router, or by a storage
/// node given --api-listen.
#[derive(clap::Args)]
struct ClusterApiArgs {
    /// Partitions (Raft groups) each new table is split into.
    #[arg(long, default_value_t = 1)]
    partitions_per_table: usize,
    /// Milliseconds a table spends in CREATING, UPDATING or DELETING.
    #[arg(long, default_value_t = 500)]
    transition_delay_ms: u64,
    /// How long a stream enabled through this server keeps its change
    /// records, in seconds (DynamoDB: 24 hours).
    #[arg(long, default_value_t = DEFAULT_STREAM_RETENTION_S)]
    stream_retention_s: u64,
    /// Log one line per API request (operation, status, error type,
    /// milliseconds, request id) at info, target `dynaraft::request`.
    #[arg(long)]
    request_log: bool,
    /// Without --auth-file, accept any signature until the control plane
    /// keeps a user (a local or test cluster). By default a cluster serves
    /// only requests signed by a user of --auth-file or of `admin
    /// put-user`.
    #[arg(long, conflicts_with = "auth_file")]
    allow_unauthenticated: bool,
    #[command(flatten)]
    edge: EdgeArgs,
}

impl ClusterApiArgs {
    /// Serves the DynamoDB API through `router` on `addr`.
    async fn serve(
        &self,
        router: dynaraft_cluster::router::Router,
        addr: SocketAddr,
        region: &str,
        peer_regions: Option<Arc<dynaraft_cluster::peer::PeerRegions>>,
        metrics_elsewhere: bool,
    ) -> anyhow::Result<Server> {
        // Without an auth file, only the control plane's users (`admin
        // put-user`) are let in; none until the first exists, unless
        // --allow-unauthenticated.
        let open = self.allow_unauthenticated;
        if self.edge.auth_file.is_none() && !open {
            tracing::warn!(
                "no --auth-file: only users added with `dynaraft admin put-user` are served \
                 (start with --allow-unauthenticated to accept any signature until then)"
            );
        }
        let cfg = ApiConfig {
            transition_delay_ms: self.transition_delay_ms,
            region: region.to_string(),
            endpoint_address: addr.to_string(),
            partitions_per_table: self.partitions_per_table,
            stream_retention_ms: self.stream_retention_s.saturating_mul(1000),
            request_log: self.request_log,
            peer_regions,
            ..ApiConfig::default()
        };
        let mut cfg = self.edge.apply(cfg, metrics_elsewhere)?;
        if cfg.auth.is_none() {
            let only_kept = dynaraft_api::auth::Auth::without_file(&cfg.region, open);
            cfg.auth = Some(Arc::new(only_kept));
        }
        Ok(Server::start(Api::new(router, Arc::new(cfg)), addr).await?)
    }
}

/// The API's edge (docs/security.md): who may call it, what is recorded,
/// and how it is reached.
#[derive(clap::Args)]
struct EdgeArgs {
    /// Users, their secrets, accounts and IAM policies (JSON): every
    /// request must be signed by one of them and is authorized by their
    /// policies. Without it the embedded server accepts any signature, as
    /// DynamoDB Local does.
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Append one JSON line per API request (time, principal, account,
    /// source address, operation, resources, status, error type) to this
    /// file.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); reloaded
    /// when the file changes.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve provisioned tables past their read and write capacity, as
    /// DynamoDB Local does (consumption is still counted in /metrics).
    /// Without it, requests beyond a table's capacity and burst are
    /// throttled as in DynamoDB.
    #[arg(long)]
    no_capacity_limits: bool,
    /// Do not serve the web console (/console).
    #[arg(long)]
    no_console: bool,
}

impl EdgeArgs {
    /// `cfg` with this edge: the auth file's users, the audit log and the
    /// certificate; `metrics_elsewhere` says /metrics is served on an
    /// address of its own, not the API's port.
    fn apply(&self, cfg: ApiConfig, metrics_elsewhere: bool) -> anyhow::Result<ApiConfig> {
        Ok(ApiConfig {
            auth: load_auth(self.auth_file.as_deref(), &cfg.region)?,
            audit: open_audit(self.audit_log.as_deref())?,
            tls: load_tls(self.tls_cert.as_deref(), self.tls_key.as_deref())?,
            metrics_elsewhere,
            capacity: Arc::new(dynaraft_api::capacity::Capacity::new(
                !self.no_capacity_limits,
            )),
            console: !self.no_console,
            ..cfg
        })
    }
}

/// Global tables: the other deployments (regions) this one replicates to.
#[derive(clap::Args)]
struct GlobalArgs {
    /// A peer region of global tables, as NAME=http://HOST:PORT or
    /// NAME=https://HOST:PORT (its DynamoDB endpoint: the router of a
    /// cluster, or an embedded server). Repeat for each peer.
    #[arg(long = "peer-region", value_name = "NAME=URL")]
    peer_regions: Vec<String>,
    /// PEM certificates (a CA's, or a peer's own) trusted for https://
    /// peer regions, beside the system's roots.
    #[arg(long, value_name = "FILE")]
    peer_region_ca: Option<PathBuf>,
    /// The access key peers' endpoints know this deployment by, as JSON
    /// {"access_key_id": ..., "secret_access_key": ...}; needed when they
    /// authenticate requests.
    #[arg(long)]
    peer_credentials_file: Option<PathBuf>,
}

impl GlobalArgs {
    /// This deployment's region `region` and its peers; `None` without
    /// peers (no global tables).
    fn peers(
        &self,
        region: &str,
    ) -> anyhow::Result<Option<Arc<dynaraft_cluster::peer::PeerRegions>>> {
        if self.peer_regions.is_empty() {
            return Ok(None);
        }
        let credentials = match &self.peer_credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let field = |name: &str| {
                    json[name]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow::anyhow!("{}: no string {name:?}", path.display()))
                };
                Some(dynaraft_cluster::peer::PeerCredentials {
                    access_key_id: field("access_key_id")?,
                    secret_access_key: field("secret_access_key")?,
                })
            }
            None => None,
        };
        let ca = match &self.peer_region_ca {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        let peers = dynaraft_cluster::peer::PeerRegions::parse_trusting(
            region,
            &self.peer_regions,
            credentials,
            ca.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Some(Arc::new(peers)))
    }
}

/// A stream's retention unless `--stream-retention-s` says otherwise, in seconds.
const DEFAULT_STREAM_RETENTION_S: u64 = dynaraft_api::DEFAULT_STREAM_RETENTION_MS / 1000;

/// `--memory-limit-mb` unless given.
const DEFAULT_MEMORY_LIMIT_MB: u64 = dynaraft_cluster::host::DEFAULT_MEMORY_LIMIT_BYTES >> 20;

/// `--engine` unless given: the storage crate's default.
const DEFAULT_ENGINE: &str = dynaraft_cluster::host::DEFAULT_ENGINE.dir_name();

/// Stack of each runtime worker thread, in bytes: four times tokio's
/// default, so the deepest expression the parser admits
/// (`dynaraft_expr::MAX_NESTING_DEPTH`) leaves a wide margin even in a debug
/// build (the expression crate's robustness test parses it on 2 MiB).
const WORKER_STACK_BYTES: usize = 8 * 1024 * 1024;

/// Longest the process waits, once `run` has returned, for blocking tasks
/// still running, in milliseconds. Dropping a runtime waits for them for
/// good, and one may never end: a sled flush after ENOSPC blocks forever
/// (docs/reliability.md). Nothing such a task holds is needed: every
/// acknowledged write is in the WAL.
const BLOCKING_TASKS_WAIT_MS: u64 = 1_000;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()?;
    let result = runtime.block_on(run());
    runtime.shutdown_timeout(std::time::Duration::from_millis(BLOCKING_TASKS_WAIT_MS));
    result
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse_from(dynamodb_local_args(std::env::args().collect()));
    init_log(cli.log_format);
    match cli.command {
        Command::Embedded(args) => embedded(args).await,
        Command::Node(args) => node(*args).await,
        Command::Router(args) => router(args).await,
        Command::Admin(args) => {
            let control = control_members(&args.control)?;
            let channels = dynaraft_raft::grpc::Channels::default().with_tls(args.peer_tls.load()?);
            let remote = &dynaraft_cluster::remote::Remote::new(channels);
            match args.what {
                None => print!("{}", admin::report(remote, &control).await?),
                Some(AdminCmd::Partitions { json }) => {
                    let rows = admin::partitions(remote, &control).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        print!("{}", admin::render_partitions(&rows));
                    }
                }
                Some(AdminCmd::Replication { json }) => {
                    let rows = admin::replication(remote, &control).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        print!("{}", admin::render_replication(&rows));
                    }
                }
                Some(AdminCmd::Drain { node, undo }) => {
                    print!("{}", admin::drain(remote, &control, node, undo).await?)
                }
                Some(AdminCmd::Split {
                    table,
                    index,
                    group,
                    at,
                }) => print!(
                    "{}",
                    admin::split(remote, &control, &table, index.as_deref(), group, at).await?
                ),
                Some(AdminCmd::Users) => print!("{}", admin::users(remote, &control).await?),
                Some(AdminCmd::PutUser { file }) => {
                    let user = read_user(&file)?;
                    print!("{}", admin::put_user(remote, &control, user).await?)
                }
                Some(AdminCmd::DeleteUser { access_key_id }) => {
                    print!(
                        "{}",
                        admin::delete_user(remote, &control, &access_key_id).await?
                    )
                }
                Some(AdminCmd::Control { change: None }) => {
                    print!("{}", admin::control_report(remote, &control).await?)
                }
                Some(AdminCmd::Control {
                    change: Some(ControlCmd::Remove { node }),
                }) => print!(
                    "{}",
                    admin::change_control(remote, &control, Some(node), None).await?
                ),
                Some(AdminCmd::Control {
                    change: Some(ControlCmd::Add { member }),
                }) => print!(
                    "{}",
                    admin::change_control(remote, &control, None, Some(member)).await?
                ),
            }
            Ok(())
        }
        Command::Bench(args) => bench(args).await,
        Command::Backup(args) => jobs_cli::backup(args).await,
        Command::Restore(args) => jobs_cli::restore(args).await,
        Command::Export(args) => jobs_cli::export(args).await,
        Command::Import(args) => jobs_cli::import(args).await,
        Command::Streams(StreamsCmd::Tail(args)) => tail::run(args).await,
    }
}

/// Delay of table transitions under DynamoDB Local's
/// `-delayTransientStatuses`, in milliseconds.
const DYNAMODB_LOCAL_TRANSIENT_DELAY_MS: u64 = 500;

/// DynamoDB Local's command line (`-inMemory -port 8000 -sharedDb ...`, no
/// subcommand) rewritten as `embedded` with the matching flags, so scripts
/// and compose files written for DynamoDB Local run unchanged. As in
/// DynamoDB Local, table transitions are then instant unless
/// `-delayTransientStatuses` is given. Any other command line is returned
/// as it is.
fn dynamodb_local_args(argv: Vec<String>) -> Vec<String> {
    const LOCAL_FLAGS: &[&str] = &[
        "-inMemory",
        "-port",
        "-dbPath",
        "-sharedDb",
        "-delayTransientStatuses",
        "-cors",
        "-optimizeDbBeforeStartup",
        "-disableTelemetry",
    ];
    let Some(first) = argv.get(1) else {
        return argv;
    };
    if !LOCAL_FLAGS.contains(&first.as_str()) {
        return argv;
    }
    let mut out = vec![argv[0].clone(), "embedded".to_string()];
    let mut delay = false;
    let mut rest = argv.into_iter().skip(1);
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "-inMemory" => out.push("--in-memory".into()),
            "-port" => out.extend(["--port".to_string()].into_iter().chain(rest.next())),
            "-dbPath" => out.extend(["--data-dir".to_string()].into_iter().chain(rest.next())),
            "-sharedDb" => out.push("--shared-db".into()),
            "-delayTransientStatuses" => delay = true,
            // Every origin is allowed already; the list is not needed.
            "-cors" => {
                rest.next();
            }
            "-optimizeDbBeforeStartup" | "-disableTelemetry" => {}
            other => out.push(other.to_string()),
        }
    }
    out.extend(if delay {
        vec![
            "--transition-delay-ms".to_string(),
            DYNAMODB_LOCAL_TRANSIENT_DELAY_MS.to_string(),
        ]
    } else {
        vec!["--instant-transitions".to_string()]
    });
    out
}

async fn bench(args: BenchCmd) -> anyhow::Result<()> {
    if let Some(ca) = &args.tls_ca {
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
        dynaraft_bench::client::trust_ca(&pem)?;
    }
    let report = dynaraft_bench::run(&args.bench).await?;
    println!(
        "workload {} ({:?} keys), {} records of {} bytes, {} {}, against {}",
        report.workload.name(),
        report.distribution,
        report.records,
        report.item_bytes,
        report.concurrency,
        match report.rate {
            Some(r) => format!("connections at {r} requests/s"),
            None => "concurrent requests, closed loop".into(),
        },
        report.endpoint
    );
    print!("{}", report.summary);
    if let Some(lag) = &report.replication_lag {
        println!(
            "replication lag to {}: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} missing",
            args.bench.replica_region.as_deref().unwrap_or_default(),
            lag.probes,
            lag.p50_ms,
            lag.p99_ms,
            lag.max_ms,
            lag.missing
        );
    }
    if let Some(b) = &report.backup {
        println!(
            "backup of {} items ({} bytes) taken during the window: {:.1} s; restored in {:.1} s{}",
            b.items,
            b.bytes,
            b.backup_s,
            b.restore_s,
            match b.pitr_restore_s {
                Some(s) => format!("; restored to the window's start in {s:.1} s"),
                None => String::new(),
            }
        );
        if let (Some(e), Some(i)) = (b.export_s, b.import_s) {
            println!(
                "exported as of the window's start ({} items, {} bytes billed) in {e:.1} s; imported into a new table in {i:.1} s",
                b.export_items, b.export_bytes
            );
        }
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    if report.summary.errors > 0 {
        anyhow::bail!("{} operations failed", report.summary.errors);
    }
    Ok(())
}

async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    start_metrics(args.metrics_listen).await?;
    let advertise = args.advertise.as_deref().unwrap_or(&args.listen);
    let mut host = HostConfig::new(args.id, &args.az, advertise, Some(args.data_dir.clone()));
    host.timing.heartbeat_interval_ms = args.heartbeat_ms;
    host.timing.election_timeout_min_ms = args.election_timeout_ms;
    host.timing.election_timeout_max_ms = args.election_timeout_ms * 2;
    host.timing.snapshot_after_entries = args.snapshot_after_entries;
    host.wal_segment_bytes = args.wal_segment_bytes;
    host.checkpoint_interval_ms = args.checkpoint_interval_ms;
    host.idle_compaction_after_ms = args.idle_compaction_after_ms;
    host.routes = args.routes.parse()?;
    host.engine = args.engine.parse().map_err(anyhow::Error::msg)?;
    host.memory_limit_bytes = args.memory_limit_mb << 20;
    host.peer_tls = args.peer_tls.load()?;
    host.encryption = load_keys(args.encryption_key_file.as_deref())?;
    let cfg = NodeConfig {
        host,
        control: control_members(&args.control)?,
        ttl_sweep_interval_ms: dynaraft_cluster::ttl::TTL_SWEEP_INTERVAL_MS,
        replace_after_ms: args.replace_after_ms,
        split: dynaraft_cluster::split::SplitPolicy {
            size_bytes: args.split_size_bytes,
            load_ops_per_s: args.split_load_ops_per_s,
        },
        peer_regions: args.global.peers(&args.region)?,
        object_store: object_store(args.object_store.as_deref(), &args.region)?,
        pitr_snapshot_interval_ms: args.pitr_snapshot_interval_s.saturating_mul(1000),
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let rebuild = args.corrupt_data == CorruptData::Rebuild;
    let node = match supervise::recovering_from() {
        // Re-executed after a storage failure: open as soon as it opens.
        Some(why) => {
            tracing::warn!(failure = %why, "recovering from a storage failure");
            drop(listener);
            let start = || async {
                let listener = tokio::net::TcpListener::bind(&args.listen).await?;
                start_node(&cfg, &args.data_dir, rebuild, listener).await
            };
            match supervise::retry(start, |_| {}, &mut stop).await {
                Some(node) => node,
                None => return Ok(()),
            }
        }
        None => start_node(&cfg, &args.data_dir, rebuild, listener).await?,
    };
    tracing::info!(id = args.id, az = %args.az, listen = %args.listen, advertise, "dynaraft storage node running");
    let api = match args.api_listen {
        Some(addr) => {
            let server = args
                .api
                .serve(
                    node.router.clone(),
                    addr,
                    &args.region,
                    cfg.peer_regions.clone(),
                    args.metrics_listen.is_some(),
                )
                .await?;
            tracing::info!(addr = %server.addr, "dynaraft API listening on the storage node");
            Some(server)
        }
        None => None,
    };
    dynaraft_api::metrics::add_host(&node.host);
    supervise::watch(&node.host, true, None, |_| {}, stop).await;
    tracing::info!("shutting down");
    dynaraft_api::metrics::remove_host(node.host.id());
    bounded_shutdown(async move {
        if let Some(server) = api {
            server.stop().await;
        }
        node.drain_and_shutdown().await;
    })
    .await;
    Ok(())
}

/// Starts the storage node; when its data is damaged and `rebuild` is on,
/// sets the directory's contents aside (`quarantine`) and starts it empty
/// instead, so that its replicas are rebuilt from the other zones (the path
/// of a node whose disk was replaced: `node::rejoin_lost_replicas`).
async fn start_node(
    cfg: &NodeConfig,
    dir: &std::path::Path,
    rebuild: bool,
    listener: tokio::net::TcpListener,
) -> Result<ClusterNode, StorageError> {
    let addr = listener.local_addr()?;
    match ClusterNode::start(cfg.clone(), listener).await {
        Err(StorageError::Corrupt(why)) if rebuild => {
            let aside = dynaraft_storage::quarantine::quarantine(dir)?;
            tracing::error!(
                error = %why,
                moved_to = %aside.display(),
                "damaged data at start-up: the data directory's contents were set aside and the node starts \
                 empty; its replicas are rebuilt from the other zones (delete the copy once inspected)"
            );
            let listener = tokio::net::TcpListener::bind(addr).await?;
            ClusterNode::start(cfg.clone(), listener).await
        }
        started => started,
    }
}

async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port).parse()?;
    let rn = RouterNode::start(
        &control_members(&args.control)?,
        args.routes.parse()?,
        args.peer_tls.load()?,
    );
    #[cfg(feature = "failpoints")]
    if args.unsafe_ack_before_commit {
        tracing::warn!(
            "--unsafe-ack-before-commit: writes are acknowledged before they commit and WILL be lost"
        );
        rn.router.set_unsafe_ack_before_commit(true);
    }
    // Tables left in a transition by a previous router are resumed at
    // start-up, which needs the catalog.
    let wait =
        std::time::Duration::from_millis(dynaraft_cluster::embedded::CATALOG_LOAD_TIMEOUT_MS);
    if !rn.ready(wait).await {
        tracing::warn!("catalog not loaded yet; interrupted table transitions are not resumed");
    }
    let peers = args.global.peers(&args.region)?;
    let metrics_elsewhere = start_metrics(args.metrics_listen).await?;
    let server = args
        .api
        .serve(
            rn.router.clone(),
            addr,
            &args.region,
            peers,
            metrics_elsewhere,
        )
        .await?;
    tracing::info!(addr = %server.addr, "dynaraft router listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    bounded_shutdown(server.stop()).await;
    rn.stop();
    Ok(())
}

/// One user from a JSON file, checked as an auth file's user is (its
/// policies parsed) before it is proposed.
fn read_user(path: &std::path::Path) -> anyhow::Result<dynaraft_storage::UserRecord> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let user: dynaraft_storage::UserRecord =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    dynaraft_api::auth::user_of(&user).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(user)
}

/// The users of `--auth-file`, if given; a malformed file stops start-up
/// with the line at fault.
fn load_auth(
    path: Option<&std::path::Path>,
    region: &str,
) -> anyhow::Result<Option<Arc<dynaraft_api::auth::Auth>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let auth = dynaraft_api::auth::Auth::load(path, region).map_err(anyhow::Error::msg)?;
    tracing::info!(file = %path.display(), "requests are authenticated and authorized");
    Ok(Some(Arc::new(auth)))
}

/// Serves /metrics on `--metrics-listen`, if given; whether it did.
async fn start_metrics(addr: Option<SocketAddr>) -> anyhow::Result<bool> {
    let Some(addr) = addr else {
        return Ok(false);
    };
    let bound = dynaraft_api::serve_metrics(addr).await?;
    tracing::info!(addr = %bound, "metrics listening");
    Ok(true)
}

/// The keys of `--encryption-key-file`, if given.
fn load_keys(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<dynaraft_storage::cipher::KeyRing>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let ring = dynaraft_storage::cipher::KeyRing::load(path).map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(ring)))
}

/// The certificate of `--tls-cert` and `--tls-key`, if given.
fn load_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<dynaraft_api::tls::Tls>>> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let tls = dynaraft_api::tls::Tls::load(cert, key).map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(tls)))
}

/// The audit log of `--audit-log`, if given.
/// The object store `--object-store` names.
fn object_store(
    url: Option<&str>,
    region: &str,
) -> anyhow::Result<Option<Arc<dynaraft_cluster::objects::ObjectStore>>> {
    url.map(|u| dynaraft_cluster::objects::ObjectStore::parse_with_region(u, region).map(Arc::new))
        .transpose()
        .map_err(anyhow::Error::msg)
}

fn open_audit(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<dynaraft_api::audit::AuditLog>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let log = dynaraft_api::audit::AuditLog::open(path)
        .map_err(|e| anyhow::anyhow!("audit log {}: {e}", path.display()))?;
    Ok(Some(Arc::new(log)))
}

async fn embedded(args: EmbeddedArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port).parse()?;
    let data_dir = (!args.in_memory).then(|| args.data_dir.clone());
    let peers = args.global.peers(&args.region)?;
    if peers.is_some() && !args.shared_db {
        // A global table is one table of the deployment, not one of a
        // client's own per-key databases.
        anyhow::bail!("--peer-region needs --shared-db");
    }
    let node_cfg = EmbeddedConfig {
        engine: args.engine.parse().map_err(anyhow::Error::msg)?,
        memory_limit_bytes: args.memory_limit_mb << 20,
        idle_compaction_after_ms: args.idle_compaction_after_ms,
        split: dynaraft_cluster::split::SplitPolicy {
            size_bytes: args.split_size_bytes,
            load_ops_per_s: args.split_load_ops_per_s,
        },
        encryption: load_keys(args.encryption_key_file.as_deref())?,
        peer_regions: peers.clone(),
        object_store: match (&args.object_store, &data_dir) {
            (None, Some(dir)) => {
                let dir = std::path::absolute(dir.join("objects"))?;
                std::fs::create_dir_all(&dir)?;
                object_store(Some(&format!("file://{}", dir.display())), &args.region)?
            }
            (url, _) => object_store(url.as_deref(), &args.region)?,
        },
        pitr_snapshot_interval_ms: args.pitr_snapshot_interval_s.saturating_mul(1000),
        ..EmbeddedConfig::new(data_dir)
    };
    let cfg = ApiConfig {
        transition_delay_ms: if args.instant_transitions {
            0
        } else {
            args.transition_delay_ms
        },
        region: args.region,
        endpoint_address: addr.to_string(),
        partitions_per_table: args.partitions_per_table.max(1),
        shared_db: args.shared_db,
        stream_retention_ms: args.stream_retention_s.saturating_mul(1000),
        request_log: args.request_log,
        peer_regions: peers,
        ..ApiConfig::default()
    };
    let metrics_elsewhere = start_metrics(args.metrics_listen).await?;
    let cfg = Arc::new(args.edge.apply(cfg, metrics_elsewhere)?);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let (node, server) = match supervise::recovering_from() {
        // Re-executed after a storage failure: serve (not ready) at once,
        // and open the node as soon as it opens.
        Some(why) => {
            tracing::warn!(failure = %why, "recovering from a storage failure");
            let listener = supervise::listener(addr).await?;
            let server = Server::start_down_on(cfg.clone(), listener, why).await?;
            let start = || Embedded::start(node_cfg.clone());
            let failed = |e: &StorageError| {
                server.take_down(format!(
                    "recovering from a storage failure; not open yet: {e}"
                ))
            };
            let Some(node) = supervise::retry(start, failed, &mut stop).await else {
                bounded_shutdown(server.stop()).await;
                return Ok(());
            };
            server.bring_up(Api::new(node.router.clone(), cfg.clone()));
            (node, server)
        }
        None => {
            let node = Embedded::start(node_cfg.clone()).await?;
            let server = Server::start(Api::new(node.router.clone(), cfg.clone()), addr).await?;
            (node, server)
        }
    };
    tracing::info!(addr = %server.addr, data = ?(!args.in_memory).then_some(&args.data_dir), "dynaraft embedded server listening");
    let down = |why| server.take_down(why);
    let socket = Some(server.listening_socket());
    dynaraft_api::metrics::add_host(&node.host);
    supervise::watch(&node.host, !args.in_memory, socket, down, stop).await;
    tracing::info!("shutting down");
    dynaraft_api::metrics::remove_host(node.host.id());
    bounded_shutdown(async move {
        server.stop().await;
        node.shutdown().await;
    })
    .await;
    Ok(())
}

/// Longest a shutdown waits for open requests and the node's tasks, in
/// milliseconds. Past it the process exits anyway: every acknowledged
/// write is already fsynced in the WAL.
const SHUTDOWN_WAIT_MS: u64 = 10_000;

async fn bounded_shutdown(shutdown: impl std::future::Future<Output = ()>) {
    let wait = std::time::Duration::from_millis(SHUTDOWN_WAIT_MS);
    if tokio::time::timeout(wait, shutdown).await.is_err() {
        tracing::warn!(
            wait_ms = SHUTDOWN_WAIT_MS,
            "shutdown did not finish in time; exiting (acknowledged writes are in the WAL)"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn dynamodb_local_command_lines_become_embedded() {
        assert_eq!(
            dynamodb_local_args(args("dynaraft -inMemory -port 9000 -sharedDb -cors *")),
            args("dynaraft embedded --in-memory --port 9000 --shared-db --instant-transitions")
        );
        assert_eq!(
            dynamodb_local_args(args("dynaraft -dbPath /data -delayTransientStatuses")),
            args("dynaraft embedded --data-dir /data --transition-delay-ms 500")
        );
        let ours = args("dynaraft embedded --port 1");
        assert_eq!(dynamodb_local_args(ours.clone()), ours);
        let cli = Cli::parse_from(dynamodb_local_args(args("dynaraft -inMemory -port 9000")));
        assert!(
            matches!(cli.command, Command::Embedded(a) if a.in_memory && a.port == 9000 && a.instant_transitions)
        );
    }

    /// clap's own consistency checks of every subcommand and flag (a
    /// mistake there panics at run time, not at build time).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::parse_from(args(
            "dynaraft admin --control 1=a:1@z split --table t --at 0x80",
        ));
        assert!(matches!(
            cli.command,
            Command::Admin(AdminArgs {
                what: Some(AdminCmd::Split { at: Some(0x80), .. }),
                ..
            })
        ));
    }
}
