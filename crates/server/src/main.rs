//! `dynaraft`: one binary, roles chosen by subcommand. Today it has the
//! embedded mode: every role in one process, like DynamoDB Local.

use clap::{Parser, Subcommand};
use dynaraft_api::{Api, ApiConfig, Server};
use dynaraft_cluster::embedded::{Embedded, EmbeddedConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "dynaraft",
    version,
    about = "A self-hosted database that speaks the Amazon DynamoDB API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process (the local-development default).
    Embedded(EmbeddedArgs),
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
    /// Region used in ARNs.
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Embedded(args) => embedded(args).await,
    }
}

async fn embedded(args: EmbeddedArgs) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port).parse()?;
    let data_dir = (!args.in_memory).then(|| args.data_dir.clone());
    let node = Embedded::start(EmbeddedConfig::new(data_dir)).await?;
    let cfg = ApiConfig {
        transition_delay_ms: if args.instant_transitions {
            0
        } else {
            args.transition_delay_ms
        },
        region: args.region,
        endpoint_address: addr.to_string(),
        ..ApiConfig::default()
    };
    let server = Server::start(
        Api {
            router: node.router.clone(),
            cfg: Arc::new(cfg),
        },
        addr,
    )
    .await?;
    tracing::info!(addr = %server.addr, data = ?(!args.in_memory).then_some(&args.data_dir), "dynaraft embedded server listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await;
    node.shutdown().await;
    Ok(())
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
