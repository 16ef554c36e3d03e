//! Batching Raft messages across groups, per destination node.
//!
//! A node hosts many groups, and each group's leader sends appends and
//! heartbeats to the same few peers. Sending each as its own RPC costs one
//! HTTP/2 stream, one set of headers and one wake-up per message. Instead,
//! every group's message to a peer goes into that peer's [`Batcher`] queue;
//! one task per peer takes everything queued (up to [`MAX_BATCH_MESSAGES`]
//! and [`MAX_BATCH_BYTES`]) and sends it as one `Batch` call, with at most
//! [`MAX_INFLIGHT_BATCHES`] calls in flight. Under light load a batch holds
//! one message and goes out at once (no added delay); under load, messages
//! that arrive while calls are in flight coalesce into the next one.
//!
//! Each sender waits for its own reply with its own deadline; a sender that
//! gave up is dropped from the next batch instead of being sent.

use crate::grpc::pb::group_reply::Result as ReplyResult;
use crate::grpc::pb::raft_transport_client::RaftTransportClient;
use crate::grpc::pb::{BatchRequest, GroupMessage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::transport::Channel;

/// Most messages in one batch.
pub const MAX_BATCH_MESSAGES: usize = 256;
/// Most payload bytes in one batch (a batch may exceed it by one message).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most batch calls in flight to one peer at a time.
pub const MAX_INFLIGHT_BATCHES: usize = 4;
/// Most messages waiting for a batch, per peer; senders wait beyond it.
pub const MAX_QUEUED_MESSAGES: usize = 4096;

/// The reply to one message: its payload, or why there is none.
pub type MessageResult = Result<Vec<u8>, String>;

struct Queued {
    msg: GroupMessage,
    deadline: Instant,
    reply: oneshot::Sender<MessageResult>,
}

/// What a batcher has sent so far.
#[derive(Debug, Default)]
pub struct BatchCounters {
    pub batches: AtomicU64,
    pub messages: AtomicU64,
}

/// The queue of messages to one peer.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Queued>,
    counters: Arc<BatchCounters>,
}

impl Batcher {
    /// Starts the peer's sending task; it ends when every `Batcher` clone
    /// is dropped.
    pub fn start(client: RaftTransportClient<Channel>) -> Batcher {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
        let counters = Arc::new(BatchCounters::default());
        tokio::spawn(run(client, rx, counters.clone()));
        Batcher { tx, counters }
    }

    /// (batches, messages) sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.counters.batches.load(Ordering::Relaxed),
            self.counters.messages.load(Ordering::Relaxed),
        )
    }

    /// Sends `msg` in the next batch and waits for its reply until `deadline`.
    pub async fn call(&self, msg: GroupMessage, deadline: Instant) -> MessageResult {
        let (reply, rx) = oneshot::channel();
        let queued = Queued {
            msg,
            deadline,
            reply,
        };
        let sent = async {
            self.tx
                .send(queued)
                .await
                .map_err(|_| "peer sender stopped".to_string())?;
            rx.await
                .map_err(|_| "batch dropped without a reply".to_string())?
        };
        tokio::time::timeout_at(deadline.into(), sent)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

async fn run(
    client: RaftTransportClient<Channel>,
    mut rx: mpsc::Receiver<Queued>,
    counters: Arc<BatchCounters>,
) {
    let gather = Gather {
        slots: Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES)),
        limits: Limits {
            items: MAX_BATCH_MESSAGES,
            bytes: MAX_BATCH_BYTES,
        },
        counters,
    };
    let size = |q: &Queued| (!q.reply.is_closed()).then_some(q.msg.payload.len());
    while let Some((batch, permit)) = gather.next(&mut rx, size).await {
        let client = client.clone();
        tokio::spawn(async move {
            send(client, batch).await;
            drop(permit);
        });
    }
}

/// How much one batch may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most items.
    pub items: usize,
    /// Most payload bytes (a batch may exceed it by one item).
    pub bytes: usize,
}

/// Gathers a queue's items into batches, with at most as many batches out
/// at a time as `slots` has permits.
pub struct Gather {
    pub slots: Arc<Semaphore>,
    pub limits: Limits,
    pub counters: Arc<BatchCounters>,
}

impl Gather {
    /// Waits for a free slot, then for the next non-empty batch; `None` once
    /// the channel is closed. The slot is taken before the queue is drained,
    /// so that items arriving while every slot is out gather into the next
    /// batch; the caller holds the permit while the batch is out. `size`
    /// gives an item's payload bytes, or `None` for an item whose sender has
    /// given up (left out).
    pub async fn next<T>(
        &self,
        rx: &mut mpsc::Receiver<T>,
        size: impl Fn(&T) -> Option<usize>,
    ) -> Option<(Vec<T>, OwnedSemaphorePermit)> {
        loop {
            let permit = self.slots.clone().acquire_owned().await.ok()?;
            let batch = next_batch(rx, self.limits, &size).await?;
            if batch.is_empty() {
                continue;
            }
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .messages
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            return Some((batch, permit));
        }
    }
}

/// Waits for the next item on `rx`, then takes whatever else is already
/// queued, within `limits`; `None` once the channel is closed, an empty
/// batch when every item taken was abandoned.
async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    limits: Limits,
    size: &impl Fn(&T) -> Option<usize>,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(item) = next.take() {
        if let Some(n) = size(&item) {
            bytes += n;
            batch.push(item);
        }
        if batch.len() < limits.items && bytes < limits.bytes {
            next = rx.try_recv().ok();
        }
    }
    Some(batch)
}

/// Sends one batch and hands each sender its reply. The call may last until
/// the latest of the senders' deadlines.
async fn send(mut client: RaftTransportClient<Channel>, batch: Vec<Queued>) {
    let deadline = batch
        .iter()
        .map(|q| q.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let (messages, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.msg, q.reply)).unzip();
    let count = messages.len();
    let call = client.batch(BatchRequest { messages });
    let replies = match tokio::time::timeout_at(deadline.into(), call).await {
        Err(_) => Err("timed out".to_string()),
        Ok(Err(status)) => Err(status.to_string()),
        Ok(Ok(r)) => {
            let replies = r.into_inner().replies;
            if replies.len() == count {
                Ok(replies)
            } else {
                Err(format!("{} replies to {count} messages", replies.len()))
            }
        }
    };
    match replies {
        Ok(replies) => {
            for (waiter, r) in waiters.into_iter().zip(replies) {
                let result = match r.result {
                    Some(ReplyResult::Ok(b)) => Ok(b),
                    Some(ReplyResult::Error(e)) => Err(e),
                    None => Err("empty reply".to_string()),
                };
                let _ = waiter.send(result);
            }
        }
        Err(e) => {
            for waiter in waiters {
                let _ = waiter.send(Err(e.clone()));
            }
        }
    }
}
