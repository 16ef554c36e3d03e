//! The machine's own floors, measured in the same run as the databases:
//! how long a 4 KiB append plus fdatasync takes on the disk under test
//! (what every durable write waits for at least once), and what the load
//! generator's client achieves against an HTTP server that does nothing
//! (the most any server could show on this machine with this client).

use crate::client::{Conn, Endpoint};
use crate::stats::{Stats, Summary};
use crate::workload::OpKind;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Bytes appended before each fdatasync (a typical group-commit batch).
pub const FSYNC_BLOCK_BYTES: usize = 4096;

/// Append-and-fdatasync latencies in a scratch file under `dir` for
/// `duration` (the file is removed afterwards).
pub fn fsync_latency(dir: &Path, duration: Duration) -> std::io::Result<Summary> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = vec![0x5au8; FSYNC_BLOCK_BYTES];
    let mut stats = Stats::default();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        stats.ok(OpKind::Update, t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(stats.summarize(started.elapsed().as_secs_f64()))
}

/// An HTTP/1.1 server that answers every request with 200 and `{}`.
pub async fn serve_empty(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(b"{}"),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Signed GetItem-shaped requests against `endpoint` from `concurrency`
/// workers for `duration`; only 200s count.
pub async fn http_round_trips(endpoint: &str, concurrency: usize, duration: Duration) -> Summary {
    let endpoint = match Endpoint::parse(endpoint, "us-east-1") {
        Ok(e) => Arc::new(e),
        Err(_) => return Stats::default().summarize(0.0),
    };
    let body = br#"{"TableName":"floor","Key":{"pk":{"S":"user1"}}}"#;
    let end = Instant::now() + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut conn = Conn::new(endpoint);
                let mut stats = Stats::default();
                while Instant::now() < end {
                    let t = Instant::now();
                    match conn.dynamodb("GetItem", body.to_vec()).await {
                        Ok(r) if r.status == 200 => stats.ok(OpKind::Read, t.elapsed()),
                        Ok(r) => stats.failed(
                            crate::ops::Failure::new(format!("HTTP {}", r.status), ""),
                            t.elapsed(),
                        ),
                        Err(e) => stats.failed(
                            crate::ops::Failure::new(crate::ops::TRANSPORT_ERROR, e.to_string()),
                            t.elapsed(),
                        ),
                    }
                }
                stats
            })
        })
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        if let Ok(s) = w.await {
            stats.merge(&s);
        }
    }
    stats.summarize(duration.as_secs_f64())
}
