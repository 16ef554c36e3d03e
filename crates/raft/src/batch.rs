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
use tokio::sync::{Semaphore, mpsc, oneshot};
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
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES));
    loop {
        // Take a permit before draining the queue, so that messages arriving
        // while every call is in flight gather into the next batch.
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(q) = next.take() {
            if !q.reply.is_closed() {
                bytes += q.msg.payload.len();
                batch.push(q);
            }
            if batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let client = client.clone();
        tokio::spawn(async move {
            send(client, batch).await;
            drop(permit);
        });
    }
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
