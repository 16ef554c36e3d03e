//! Coalescing a group's concurrent proposals into batches.
//!
//! openraft handles each client write as its own message: its own log
//! append, its own flush notification, its own commit advance and its own
//! state-machine apply, and every apply is one atomic sled batch, which sled
//! 0.34 makes stable on disk before it returns. Under concurrent writes that
//! per-entry cost, not the disk, bounds a group's throughput.
//!
//! So each group has one [`Proposer`] task. Callers queue their entries;
//! the task hands everything queued (up to [`MAX_PROPOSAL_BATCH`]) to
//! openraft as one `client_write_many`, which appends the entries together
//! and applies them together, with at most [`MAX_INFLIGHT_PROPOSAL_BATCHES`]
//! batches in flight. Under light load a batch holds one entry and goes out
//! at once (no added delay); under load, entries that arrive while batches
//! are in flight coalesce into the next one. Each entry stays its own log
//! entry with its own outcome and index.

use crate::group::{ProposeError, write_error};
use crate::types::Raft;
use dynaraft_storage::Outcome;
use dynaraft_storage::command::Entry;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

/// Most entries handed to openraft in one batch.
pub const MAX_PROPOSAL_BATCH: usize = 256;
/// Most batches of one group appended but not yet applied.
pub const MAX_INFLIGHT_PROPOSAL_BATCHES: usize = 2;
/// Most proposals waiting for a batch, per group; callers wait beyond it.
pub const MAX_QUEUED_PROPOSALS: usize = 4096;

type Reply = oneshot::Sender<Result<(Outcome, u64), ProposeError>>;

struct Proposal {
    entry: Entry,
    reply: Reply,
}

/// The queue in front of one group's Raft.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
    /// Proposals not yet answered, and whether new ones are refused.
    state: Arc<watch::Sender<Pending>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    proposals: usize,
    closed: bool,
}

/// Counts one proposal as pending until dropped (answered or abandoned).
struct Counted<'a>(&'a watch::Sender<Pending>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0
            .send_modify(|p| p.proposals = p.proposals.saturating_sub(1));
    }
}

impl Proposer {
    /// Starts the group's batching task; it ends when every `Proposer`
    /// clone is dropped.
    pub fn start(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_PROPOSALS);
        tokio::spawn(run(raft, rx));
        let (state, _) = watch::channel(Pending::default());
        Proposer {
            tx,
            state: Arc::new(state),
        }
    }

    /// Refuses proposals from now on (as `NotLeader`: nothing of them was
    /// appended, so the caller may send them elsewhere), and waits at most
    /// `limit` for those already taken to be answered. Whether they all
    /// were. A replica leaving its group calls this before stopping Raft,
    /// so a write it led is answered with its outcome (committed through
    /// the new leader and applied here) rather than with "raft stopped",
    /// whose outcome the caller cannot know.
    pub async fn close_and_drain(&self, limit: std::time::Duration) -> bool {
        self.state.send_modify(|p| p.closed = true);
        let mut rx = self.state.subscribe();
        let drained = rx.wait_for(|p| p.proposals == 0);
        matches!(tokio::time::timeout(limit, drained).await, Ok(Ok(_)))
    }

    /// The entry's outcome and log index once it is committed and applied.
    pub async fn propose(&self, entry: Entry) -> Result<(Outcome, u64), ProposeError> {
        let taken = self.state.send_if_modified(|p| {
            if p.closed {
                return false;
            }
            p.proposals += 1;
            true
        });
        if !taken {
            return Err(ProposeError::NotLeader { leader: None });
        }
        let _counted = Counted(&self.state);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { entry, reply })
            .await
            .map_err(|_| ProposeError::Unavailable("the group is shutting down".into()))?;
        rx.await.map_err(|_| {
            ProposeError::Unavailable("the group stopped before the write finished".into())
        })?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_PROPOSAL_BATCHES));
    while let Some(first) = rx.recv().await {
        // Wait for a slot before taking more: what queues meanwhile joins
        // this batch.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_PROPOSAL_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<Entry>, Vec<Reply>) =
            batch.into_iter().map(|p| (p.entry, p.reply)).unzip();
        let results = match raft.client_write_many(entries).await {
            Ok(stream) => stream,
            Err(fatal) => {
                for r in replies {
                    let _ = r.send(Err(ProposeError::Unavailable(fatal.to_string())));
                }
                continue;
            }
        };
        tokio::spawn(async move {
            let _permit = permit;
            // Fused: once the stream ends (the group stopped), every later
            // reply is told so instead of polling a finished stream.
            let mut results = results.fuse();
            for reply in replies {
                let result = match results.next().await {
                    Some(Ok(Ok(w))) => Ok((w.response, w.log_id.index)),
                    Some(Ok(Err(e))) => Err(write_error(e)),
                    Some(Err(fatal)) => Err(ProposeError::Unavailable(fatal.to_string())),
                    None => Err(ProposeError::Unavailable(
                        "the write's result never came".into(),
                    )),
                };
                let _ = reply.send(result);
            }
        });
    }
}
