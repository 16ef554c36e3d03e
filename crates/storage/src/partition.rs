//! The owning task of one group: it sequences proposals, appends them to
//! the WAL as one batch (group commit), applies them in order and replies.
//! This is the seam where Raft replaces the local log: "append durably,
//! then apply" stays the same, only the log changes.

use crate::StorageError;
use crate::command::{Command, Entry};
use crate::machine::{self, Outcome, Overlay};
use crate::wal::{Wal, WalRecord};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Proposals a group queues before proposers wait (back-pressure).
pub const PARTITION_QUEUE_CAPACITY: usize = 1024;
/// Most proposals folded into one log append and one sled batch.
pub const PARTITION_MAX_BATCH: usize = 256;

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Outcome, StorageError>>,
}

/// Handle used to propose commands to a group.
#[derive(Clone)]
pub struct PartitionHandle {
    pub group: u64,
    tx: mpsc::Sender<Proposal>,
}

impl PartitionHandle {
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, StorageError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| StorageError::Unavailable("partition is not running".into()))?;
        wait.await
            .map_err(|_| StorageError::Unavailable("partition stopped".into()))?
    }
}

pub type AfterApply = Arc<dyn Fn(&[Outcome]) + Send + Sync>;

/// What a group task needs from its node.
#[derive(Clone)]
pub struct TaskEnv {
    pub tree: sled::Tree,
    pub wal: Wal,
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Flips to true when the node shuts down.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Held while the task runs, so shutdown can wait for every task.
    pub alive: mpsc::Sender<()>,
}

pub fn spawn(
    group: u64,
    env: TaskEnv,
    after_apply: Option<AfterApply>,
) -> Result<PartitionHandle, StorageError> {
    let (tx, rx) = mpsc::channel(PARTITION_QUEUE_CAPACITY);
    let applied = machine::applied_index(&env.tree, group)?;
    let task = Task {
        group,
        tree: env.tree,
        wal: env.wal,
        clock: env.clock,
        next_index: applied + 1,
        after_apply,
        shutdown: env.shutdown,
        _alive: env.alive,
    };
    tokio::spawn(task.run(rx));
    Ok(PartitionHandle { group, tx })
}

struct Task {
    group: u64,
    tree: sled::Tree,
    wal: Wal,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    next_index: u64,
    after_apply: Option<AfterApply>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Proposal>) {
        let mut batch = Vec::with_capacity(PARTITION_MAX_BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, PARTITION_MAX_BATCH) => n,
                _ = crate::node::stop_requested(&mut self.shutdown) => 0,
            };
            if n == 0 {
                break;
            }
            let proposals = std::mem::take(&mut batch);
            if let Err(e) = self.process(proposals).await {
                tracing::error!(group = self.group, error = %e, "partition stopped on a fatal storage error");
                return;
            }
        }
    }

    async fn process(&mut self, proposals: Vec<Proposal>) -> Result<(), StorageError> {
        let ts_ms = (self.clock)();
        let first = self.next_index;
        let entries: Vec<Entry> = proposals
            .iter()
            .map(|p| Entry {
                ts_ms,
                cmd: p.cmd.clone(),
            })
            .collect();
        let records = entries
            .iter()
            .enumerate()
            .map(|(i, e)| WalRecord {
                group: self.group,
                index: first + i as u64,
                payload: e.encode(),
            })
            .collect();
        if let Err(e) = self.wal.append(records).await {
            for p in proposals {
                let _ = p.reply.send(Err(StorageError::Unavailable(e.to_string())));
            }
            return Err(e);
        }
        self.next_index += entries.len() as u64;
        let mut ov = Overlay::new(&self.tree);
        let mut outcomes = Vec::with_capacity(entries.len());
        for e in &entries {
            outcomes.push(machine::apply(&mut ov, self.group, e)?);
        }
        ov.commit(self.group, self.next_index - 1)?;
        if let Some(f) = &self.after_apply {
            f(&outcomes);
        }
        for (p, o) in proposals.into_iter().zip(outcomes) {
            let _ = p.reply.send(Ok(o));
        }
        Ok(())
    }
}
