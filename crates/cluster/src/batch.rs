//! Batching a router's data requests per storage node.
//!
//! Every read and proposal a router sends to a node would otherwise be its
//! own gRPC call: one HTTP/2 stream, request and response headers, a
//! tonic service dispatch and a wake-up on each side. Instead, requests to
//! a node go into that node's [`DataBatcher`] queue; one task per node takes
//! everything queued (up to [`MAX_DATA_BATCH_REQUESTS`] and
//! [`MAX_DATA_BATCH_BYTES`]) and sends it as one `CallMany`, with at most
//! [`MAX_DATA_BATCHES_SENDING`] calls being sent at a time. A call counts as
//! sent once the node has answered its headers, so under light load a batch
//! holds one request and leaves at once; under load, requests that arrive
//! while calls are being sent coalesce into the next one.
//!
//! The node streams each reply back as soon as its request is done (tagged
//! with its position), so a proposal waiting for a quorum holds up no read
//! that shares its batch. Each caller waits for its own reply with its own
//! deadline; a caller that gave up is left out of the next batch.
//!
//! A node that stops answering (paused, or its machine gone without a
//! reset) holds both sending slots until the connection's keepalive gives up
//! (about 2 s), and requests queue behind them meanwhile. Those were never
//! sent, so when a batch fails, every request queued before the failure is
//! answered [`Lost::NeverSent`] at once, and the router tries them on
//! another replica, instead of sending them down a fresh connection to the
//! same silent node to wait out the keepalive a second time (measured in
//! the chaos harness: a paused leader cost 4.0 s of writes with the second
//! wait, docs/reliability.md).

use crate::service::MAX_DATA_BATCH_REQUESTS;
use crate::service::pb::data_service_client::DataServiceClient;
use crate::service::pb::{DataBatch, DataReply, DataRequest};
use dynaraft_raft::batch::{BatchCounters, Gather, Limits};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Most payload bytes in one batch (a batch may exceed it by one request).
pub const MAX_DATA_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most batches being sent to one node at a time (from the call until the
/// node's response headers).
pub const MAX_DATA_BATCHES_SENDING: usize = 2;
/// Most requests waiting for a batch, per node; callers wait beyond it.
pub const MAX_QUEUED_DATA_REQUESTS: usize = 4096;

/// Why a batched request has no reply.
#[derive(Debug, Clone)]
pub enum Lost {
    /// The node was never reached: trying another replica is safe.
    NeverSent(String),
    /// The request may or may not have been executed.
    Unknown(String),
}

/// The reply to one request, or why there is none.
pub type BatchResult = Result<DataReply, Lost>;

struct Queued {
    req: DataRequest,
    reply: oneshot::Sender<BatchResult>,
    /// When the request joined the queue.
    at: Instant,
}

/// When a batch to the node last failed (a reply missing), if one has.
type LastFailure = Arc<std::sync::Mutex<Option<Instant>>>;

/// The queue of data requests to one node.
#[derive(Clone)]
pub struct DataBatcher {
    tx: mpsc::Sender<Queued>,
    counters: Arc<BatchCounters>,
}

impl DataBatcher {
    /// Starts the node's sending task; it ends when every clone is dropped.
    /// `timeout` bounds each batch call from start to last reply.
    pub fn start(client: DataServiceClient<Channel>, timeout: Duration) -> DataBatcher {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_DATA_REQUESTS);
        let counters = Arc::new(BatchCounters::default());
        tokio::spawn(run(client, rx, counters.clone(), timeout));
        DataBatcher { tx, counters }
    }

    /// (batches, requests) sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.counters.batches.load(Ordering::Relaxed),
            self.counters.messages.load(Ordering::Relaxed),
        )
    }

    /// Sends `req` in the next batch and waits for its reply (the caller
    /// bounds the wait).
    pub async fn call(&self, req: DataRequest) -> BatchResult {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Queued {
                req,
                reply,
                at: Instant::now(),
            })
            .await
            .map_err(|_| Lost::NeverSent("node sender stopped".to_string()))?;
        rx.await
            .map_err(|_| Lost::Unknown("batch dropped without a reply".to_string()))?
    }
}

async fn run(
    client: DataServiceClient<Channel>,
    mut rx: mpsc::Receiver<Queued>,
    counters: Arc<BatchCounters>,
    timeout: Duration,
) {
    let gather = Gather {
        slots: Arc::new(Semaphore::new(MAX_DATA_BATCHES_SENDING)),
        limits: Limits {
            items: MAX_DATA_BATCH_REQUESTS,
            bytes: MAX_DATA_BATCH_BYTES,
        },
        counters,
    };
    let size = |q: &Queued| (!q.reply.is_closed()).then_some(q.req.payload.len());
    let last_failure = LastFailure::default();
    while let Some((batch, permit)) = gather.next(&mut rx, size).await {
        let failed_at = *last_failure.lock().unwrap_or_else(|p| p.into_inner());
        let (stale, batch): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|q| failed_at.is_some_and(|f| q.at <= f));
        for q in stale {
            let why = "queued for a node whose connection failed meanwhile; not sent";
            let _ = q.reply.send(Err(Lost::NeverSent(why.to_string())));
        }
        if batch.is_empty() {
            continue;
        }
        metrics::counter!("dynaraft_data_batches_total").increment(1);
        metrics::counter!("dynaraft_data_batched_requests_total").increment(batch.len() as u64);
        tokio::spawn(send(
            client.clone(),
            batch,
            permit,
            timeout,
            last_failure.clone(),
        ));
    }
}

/// Sends one batch, releases its sending slot once the node has answered
/// the headers, and hands each caller its reply as it streams in.
async fn send(
    mut client: DataServiceClient<Channel>,
    batch: Vec<Queued>,
    permit: tokio::sync::OwnedSemaphorePermit,
    timeout: Duration,
    last_failure: LastFailure,
) {
    let deadline = Instant::now() + timeout;
    let (requests, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.req, q.reply)).unzip();
    let mut waiters: Vec<Option<oneshot::Sender<BatchResult>>> =
        waiters.into_iter().map(Some).collect();
    let call = client.call_many(DataBatch { requests });
    let started = tokio::time::timeout_at(deadline, call).await;
    if !matches!(started, Ok(Ok(_))) {
        // Before the slot is free: what queued behind it is not sent.
        *last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
    drop(permit);
    let failure = match started {
        Err(_) => Lost::Unknown("timed out".to_string()),
        Ok(Err(status)) => lost(status),
        Ok(Ok(response)) => {
            let mut replies = response.into_inner();
            loop {
                match tokio::time::timeout_at(deadline, replies.message()).await {
                    Err(_) => break Lost::Unknown("timed out".to_string()),
                    Ok(Err(status)) => break lost(status),
                    // The stream is read to its end even after the last
                    // reply: dropping it early resets the HTTP/2 stream, and
                    // h2 closes a connection that piles up too many resets.
                    Ok(Ok(None)) => break Lost::Unknown("no reply in the batch".to_string()),
                    Ok(Ok(Some(item))) => {
                        let waiter = usize::try_from(item.index)
                            .ok()
                            .and_then(|i| waiters.get_mut(i))
                            .and_then(Option::take);
                        if let (Some(w), Some(reply)) = (waiter, item.reply) {
                            let _ = w.send(Ok(reply));
                        }
                    }
                }
            }
        }
    };
    let mut unanswered = waiters.into_iter().flatten().peekable();
    if unanswered.peek().is_some() {
        *last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
    for w in unanswered {
        let _ = w.send(Err(failure.clone()));
    }
}

/// A connection that could not be made means the batch was never sent; any
/// other transport failure leaves its fate unknown.
pub(crate) fn lost(status: tonic::Status) -> Lost {
    let never_sent = match status.code() {
        tonic::Code::Unknown => status.message().starts_with("Service was not ready"),
        tonic::Code::Unavailable => status.message().contains("connect error"),
        _ => false,
    };
    if never_sent {
        Lost::NeverSent(status.message().to_string())
    } else {
        Lost::Unknown(status.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogWatch;
    use crate::host::{Host, HostConfig};
    use crate::service::pb::data_reply::Result as ReplyResult;
    use crate::wire::{CATALOG_POLL_MS, Reply, Request};

    fn request(req: &Request) -> DataRequest {
        DataRequest {
            group: 0,
            payload: serde_json::to_vec(req).expect("encode"),
            epoch: 0,
        }
    }

    fn decode(reply: DataReply) -> Reply {
        match reply.result {
            Some(ReplyResult::Ok(b)) => serde_json::from_slice(&b).expect("reply"),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// An in-memory node serving the data service on 127.0.0.1, and a
    /// client of it.
    async fn node() -> (Host, DataServiceClient<Channel>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let host = Host::open(HostConfig::new(1, "az-a", &addr, None))
            .await
            .expect("open");
        let catalog = Arc::new(CatalogWatch::default());
        tokio::spawn(crate::service::serve(host.clone(), catalog, listener));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        (host, DataServiceClient::new(channel))
    }

    #[tokio::test]
    async fn a_batch_streams_each_reply_as_it_is_ready() {
        let (host, mut client) = node().await;
        // A catalog long-poll that waits for a newer version (CATALOG_POLL_MS),
        // then a ping: the ping's reply must not wait behind the poll.
        let started = Instant::now();
        let batch = DataBatch {
            requests: vec![
                request(&Request::Catalog { since: 0 }),
                request(&Request::Ping),
            ],
        };
        let mut replies = client.call_many(batch).await.expect("call").into_inner();
        let first = replies.message().await.expect("stream").expect("a reply");
        assert_eq!(first.index, 1);
        assert!(matches!(decode(first.reply.expect("reply")), Reply::Pong));
        assert!(started.elapsed() < Duration::from_millis(CATALOG_POLL_MS / 2));
        let second = replies.message().await.expect("stream").expect("a reply");
        assert_eq!(second.index, 0);
        assert!(matches!(
            decode(second.reply.expect("reply")),
            Reply::Catalog(_)
        ));
        assert!(replies.message().await.expect("stream").is_none());
        host.shutdown().await;
    }

    #[tokio::test]
    async fn requests_queued_behind_a_silent_node_fail_fast_as_never_sent() {
        // A node that accepts connections and never answers (a paused
        // process: the kernel still accepts).
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let timeout = Duration::from_millis(400);
        let batcher = DataBatcher::start(DataServiceClient::new(channel), timeout);
        let call = |b: DataBatcher| async move { b.call(request(&Request::Ping)).await };
        // Two batches take both sending slots; three more queue behind them.
        let mut sent = Vec::new();
        for _ in 0..MAX_DATA_BATCHES_SENDING {
            sent.push(tokio::spawn(call(batcher.clone())));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let started = Instant::now();
        let queued: Vec<_> = (0..3)
            .map(|_| tokio::spawn(call(batcher.clone())))
            .collect();
        for h in sent {
            let r = h.await.expect("task");
            assert!(matches!(r, Err(Lost::Unknown(_))), "{r:?}");
        }
        for h in queued {
            let r = h.await.expect("task");
            assert!(matches!(r, Err(Lost::NeverSent(_))), "{r:?}");
        }
        // Answered when the slots failed, not after waiting a second time.
        assert!(
            started.elapsed() < timeout + timeout / 2,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_gets_its_own_reply() {
        let (host, client) = node().await;
        let batcher = DataBatcher::start(client, Duration::from_secs(5));
        let calls = (0..100u64).map(|i| {
            let batcher = batcher.clone();
            async move {
                // Distinct requests, each checked against its own reply.
                let req = if i % 2 == 0 {
                    Request::Ping
                } else {
                    Request::Status
                };
                let reply = batcher.call(request(&req)).await.expect("reply");
                (i, decode(reply))
            }
        });
        for (i, reply) in futures_util::future::join_all(calls).await {
            match reply {
                Reply::Pong => assert_eq!(i % 2, 0),
                Reply::Status(_) => assert_eq!(i % 2, 1),
                other => panic!("request {i} got {other:?}"),
            }
        }
        let (batches, requests) = batcher.sent();
        assert_eq!(requests, 100);
        assert!((1..=100).contains(&batches));
        host.shutdown().await;
    }
}
