//! Files the server loads again when they change (the TLS certificate and
//! key, the auth file): their modification times, and the task that checks
//! them and reloads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Files and their modification times when last loaded.
#[derive(Debug)]
pub struct Watched {
    paths: Vec<PathBuf>,
    loaded: Mutex<Vec<Option<SystemTime>>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Watched {
    /// `paths` as they are now (call before reading them).
    pub fn new(paths: &[&Path]) -> Watched {
        Watched {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            loaded: Mutex::new(paths.iter().map(|p| modified(p)).collect()),
        }
    }

    /// Whether any file changed since it was last loaded; the change then
    /// counts as tried, whether or not the caller's load succeeds (a broken
    /// file is not read again until it changes again).
    pub fn changed(&self) -> bool {
        let now: Vec<Option<SystemTime>> = self.paths.iter().map(|p| modified(p)).collect();
        // A poisoned lock guards timestamps, still valid.
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == now {
            return false;
        }
        *loaded = now;
        true
    }
}

/// Calls `reload` every `every` until `stopped`: `Ok(true)` is logged as
/// `what` reloaded, `Err` logged and counted by `failed` (what was loaded
/// before is kept).
pub async fn watch(
    every: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    what: &str,
    reload: impl Fn() -> Result<bool, String>,
    failed: fn(),
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = dynaraft_storage::stop_requested(&mut stopped) => return,
        }
        match reload() {
            Ok(true) => tracing::info!("{what} reloaded"),
            Ok(false) => {}
            Err(e) => {
                failed();
                tracing::error!(error = %e, "{what} not reloaded; what was loaded before is kept");
            }
        }
    }
}
