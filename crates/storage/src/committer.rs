//! Group commit for the state machines of one node.
//!
//! Every group's apply ends with one atomic sled batch (its writes and its
//! applied index). sled 0.34's `apply_batch` seals two I/O buffers per call,
//! and each sealed buffer wakes all of sled's idle I/O threads, so on a node
//! with several groups the batches, not the bytes, set the cost. The node's
//! [`Committer`] runs on its own thread: it takes every commit queued (up to
//! [`MAX_COMMITS_PER_BATCH`]), applies them as one sled batch, and answers
//! each. A group's next apply waits for its previous commit, so an overlay
//! always reads its group's own writes; writes of different groups never
//! share a key (every key starts with its group).

use crate::FirstFailure;
use crate::StorageError;
use crate::kv::Store;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

/// Most commits waiting for the committer; appliers wait beyond it.
pub const MAX_QUEUED_COMMITS: usize = 1024;
/// Most commits merged into one sled batch.
pub const MAX_COMMITS_PER_BATCH: usize = 64;
/// The histogram of the time each merged batch takes to apply to the
/// store, in seconds.
pub const COMMIT_METRIC: &str = "dynaraft_state_commit_seconds";

/// A group's pending writes: key -> new value, or `None` to delete.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

struct Job {
    writes: Writes,
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// The node's state-machine committer. Cloning shares it; its thread ends
/// when every clone is dropped.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    /// The first failed write, once one has failed.
    failure: FirstFailure,
}

impl Committer {
    /// Starts the committer's thread over `tree`.
    pub fn start(tree: Store) -> Result<Committer, StorageError> {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_COMMITS);
        let failure = FirstFailure::default();
        let failed = failure.clone();
        std::thread::Builder::new()
            .name("dynaraft-apply".into())
            .spawn(move || run(tree, rx, failed))?;
        Ok(Committer { tx, failure })
    }

    /// The first error a write to the store met, if any: the groups whose
    /// apply failed have stopped, and a restart recovers them from the log.
    pub fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// Writes `writes` atomically (with whatever other groups' commits share
    /// the batch) and returns once sled has applied them.
    pub async fn commit(&self, writes: Writes) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job { writes, done })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StorageError {
    StorageError::Fatal("the state-machine committer stopped".into())
}

/// Adds `writes` to `batch` (later writes to a key replace earlier ones).
pub(crate) fn add_writes(batch: &mut crate::kv::Batch, writes: Writes) {
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
}

fn run(tree: Store, mut rx: mpsc::Receiver<Job>, failure: FirstFailure) {
    while let Some(jobs) = crate::next_blocking_batch(&mut rx, MAX_COMMITS_PER_BATCH) {
        let mut batch = crate::kv::Batch::default();
        let mut waiters = Vec::with_capacity(jobs.len());
        for job in jobs {
            add_writes(&mut batch, job.writes);
            waiters.push(job.done);
        }
        let started = std::time::Instant::now();
        let result = tree.apply(batch).map_err(|e| e.to_string());
        metrics::histogram!(COMMIT_METRIC).record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::error!(error = %e, "state-machine write failed");
            failure.record(|| format!("state-machine write failed: {e}"));
        }
        for w in waiters {
            let _ = w.send(result.clone().map_err(StorageError::Fatal));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_all_land() {
        let tree = crate::kv::Store::temporary().expect("store");
        let committer = Committer::start(tree.clone()).expect("start");
        let commits = (0..200u32).map(|i| {
            let c = committer.clone();
            async move {
                let mut w = Writes::new();
                w.insert(i.to_be_bytes().to_vec(), Some(vec![1]));
                w.insert(format!("gone-{i}").into_bytes(), None);
                c.commit(w).await
            }
        });
        let mut running = tokio::task::JoinSet::new();
        for c in commits {
            running.spawn(c);
        }
        while let Some(r) = running.join_next().await {
            r.expect("task").expect("commit");
        }
        for i in 0..200u32 {
            assert_eq!(
                tree.get(i.to_be_bytes()).expect("get").as_deref(),
                Some(&[1u8][..])
            );
        }
    }
}
