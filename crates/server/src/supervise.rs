//! Keeps the embedded server serving through storage failures.
//!
//! When the node's WAL or its state-machine store fails to write (a full
//! disk, an I/O error, a failed fsync), the node is not trusted to go on:
//! after a failed `fdatasync` nobody knows what reached the disk, and
//! retrying it as if the data were safe is the mistake PostgreSQL learned
//! from in 2018. So, as PostgreSQL does, the node crashes on purpose and
//! recovers from its log: the process re-executes itself (same PID, same
//! arguments), which is exactly a kill -9 and a restart, the path the crash
//! tests exercise. Recovery cuts a torn WAL tail, replays the log above the
//! store's applied index, and every acknowledged write (fsynced before it
//! was acknowledged) is there again.
//!
//! Why not reopen the storage inside the process: measured on a full
//! tmpfs, sled 0.34's I/O thread blocks for good in a flush after ENOSPC
//! and keeps the store's file lock, so the same process can never open the
//! directory again. A new process image drops every thread and descriptor.
//!
//! The re-executed process knows it is recovering (the environment variable
//! [`RECOVERING_ENV`] carries the reason): it serves HTTP at once, `/`
//! (liveness) up, `/ready` 503 with the reason and every API request a
//! retryable ServiceUnavailable, while it opens the node, again and again
//! with backoff while that fails (the disk may still be full; a failed
//! start changes nothing on disk), and serves normally once it opens. So
//! writes resume on their own once space returns. A first start, not a
//! recovery, still fails at once with the error, as an operator expects.
//!
//! An in-memory server is never re-executed: it would come back empty, a
//! silent reset no client should see. It stays not ready instead.

use dynaraft_api::{Api, ApiConfig, Server};
use dynaraft_cluster::embedded::{Embedded, EmbeddedConfig};
use std::sync::Arc;
use std::time::Duration;

/// Set in the environment of a process re-executed after a storage
/// failure, to the failure it recovers from.
pub const RECOVERING_ENV: &str = "DYNARAFT_RECOVERING_FROM";
/// How often the node's storage is checked for a failure, in milliseconds.
pub const STORAGE_CHECK_MS: u64 = 200;
/// Pause before the first attempt to open a recovering node, in
/// milliseconds; it doubles after each failed attempt.
pub const REOPEN_FIRST_PAUSE_MS: u64 = 100;
/// Longest pause between two attempts to open, in milliseconds.
pub const REOPEN_MAX_PAUSE_MS: u64 = 2_000;

/// The failure this process was re-executed to recover from, if it was.
pub fn recovering_from() -> Option<String> {
    std::env::var(RECOVERING_ENV).ok()
}

/// Runs until `stop` resolves; when the node's storage fails first, takes
/// the API down and re-executes the process (which does not return).
/// Returns the node for the caller to shut down.
pub async fn embedded(
    node: Embedded,
    in_memory: bool,
    server: &Server,
    stop: impl std::future::Future<Output = ()>,
) -> Embedded {
    let why = tokio::select! {
        why = failure(&node) => why,
        _ = stop => return node,
    };
    tracing::error!(error = %why, "storage failed; the node restarts and recovers from its log");
    server.take_down(format!("storage failed ({why}); recovering from the log"));
    if in_memory {
        tracing::error!("an in-memory server cannot recover its data; it stays not ready");
        std::future::pending::<()>().await;
    }
    let e = reexec(&why);
    tracing::error!(error = %e, "could not re-execute; the node stays not ready");
    std::future::pending().await
}

/// Opens the node of a recovering process, again and again until it opens
/// (then serves it) or `stop` resolves (`None`).
pub async fn reopen(
    cfg: &EmbeddedConfig,
    api_cfg: &Arc<ApiConfig>,
    server: &Server,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Option<Embedded> {
    let mut pause_ms = REOPEN_FIRST_PAUSE_MS;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            _ = stop.as_mut() => return None,
        }
        match Embedded::start(cfg.clone()).await {
            Ok(node) => {
                server.bring_up(Api::new(node.router.clone(), api_cfg.clone()));
                tracing::info!("storage recovered; serving again");
                return Some(node);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = pause_ms, "the node did not open yet");
                server.take_down(format!(
                    "recovering from a storage failure; not open yet: {e}"
                ));
                pause_ms = (pause_ms * 2).min(REOPEN_MAX_PAUSE_MS);
            }
        }
    }
}

/// Resolves with the reason once the node's storage has failed.
async fn failure(node: &Embedded) -> String {
    loop {
        if let Some(why) = node.host.storage_failure() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(STORAGE_CHECK_MS)).await;
    }
}

/// Replaces this process with a fresh run of its own binary and arguments,
/// marked as recovering from `why`. Returns only if that failed.
fn reexec(why: &str) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    // /proc/self/exe runs this very binary even if its file was replaced.
    std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .env(RECOVERING_ENV, why)
        .exec()
}
