//! The fault-injecting TCP proxy every link of the cluster passes through.
//!
//! Each process reaches each storage node through its own listener here
//! (the processes' `--route ADDR=VIA` flags), so a connection's listener
//! says which zone it comes from and which it goes to. Faults are rules on
//! directed zone-to-zone links:
//!
//! - blocked: bytes in that direction stop moving (they are not read, so
//!   the sender's socket buffer fills, as when packets are dropped), and
//!   new connections are not forwarded until both directions are open
//!   again (a TCP handshake needs both). When the rule is lifted, held
//!   bytes move on, like TCP retransmission after a partition heals.
//! - delay and jitter: each chunk is held for `delay ± jitter`, never
//!   overtaking the chunk before it.
//!
//! Every queue is bounded: `CHUNK_BYTES` per read, `MAX_CHUNKS_IN_FLIGHT`
//! held per direction of a connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest chunk read from a socket at once, in bytes.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks held (delayed) per direction of one connection.
pub const MAX_CHUNKS_IN_FLIGHT: usize = 64;
/// How often a blocked direction looks at its rule again, in milliseconds.
pub const BLOCKED_POLL_MS: u64 = 20;

/// A zone: 0 is the edge (the router and the clients), 1.. are the
/// availability zones.
pub type Zone = usize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub blocked: bool,
    pub delay_ms: u64,
    pub jitter_ms: u64,
}

/// The rules of every directed link; absent means healthy.
#[derive(Clone, Default)]
pub struct Net {
    rules: Arc<RwLock<HashMap<(Zone, Zone), Rule>>>,
}

impl Net {
    pub fn rule(&self, from: Zone, to: Zone) -> Rule {
        self.rules
            .read()
            .map(|r| r.get(&(from, to)).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn set(&self, from: Zone, to: Zone, rule: Rule) {
        if let Ok(mut r) = self.rules.write() {
            r.insert((from, to), rule);
        }
    }

    /// Lifts every rule.
    pub fn heal(&self) {
        if let Ok(mut r) = self.rules.write() {
            r.clear();
        }
    }

    async fn wait_open(&self, from: Zone, to: Zone) {
        while self.rule(from, to).blocked {
            tokio::time::sleep(Duration::from_millis(BLOCKED_POLL_MS)).await;
        }
    }
}

/// Starts a listener that forwards connections from zone `from` to the node
/// at `target` in zone `to`; returns its address.
pub async fn listen(
    net: Net,
    from: Zone,
    to: Zone,
    target: SocketAddr,
    seed: u64,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut conn = 0u64;
        while let Ok((client, _)) = listener.accept().await {
            conn += 1;
            let net = net.clone();
            let seed = seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tokio::spawn(async move {
                net.wait_open(from, to).await;
                net.wait_open(to, from).await;
                let Ok(server) = TcpStream::connect(target).await else {
                    return; // the node is down: the client sees its connection close
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(net.clone(), from, to, cr, sw, seed));
                tokio::spawn(pump(net, to, from, sr, cw, seed.rotate_left(17)));
            });
        }
    });
    Ok(addr)
}

/// Moves bytes one way under the link's rule until either side closes.
async fn pump(
    net: Net,
    from: Zone,
    to: Zone,
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(MAX_CHUNKS_IN_FLIGHT);
    let net2 = net.clone();
    let sender = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            net2.wait_open(from, to).await;
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut last = Instant::now();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        net.wait_open(from, to).await;
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let rule = net.rule(from, to);
        let jitter = if rule.jitter_ms > 0 {
            rng.u64(0..=2 * rule.jitter_ms) as i64 - rule.jitter_ms as i64
        } else {
            0
        };
        let hold = (rule.delay_ms as i64 + jitter).max(0) as u64;
        let at = (Instant::now() + Duration::from_millis(hold)).max(last);
        last = at;
        let chunk = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
        if tx.send((at, chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = sender.await;
}
