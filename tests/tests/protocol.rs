//! The wire protocol and durability, below what an SDK lets you send.
//! Checks: DynamoDB low-level API ("Error handling": __type values and
//! status codes; x-amz-crc32 and x-amzn-RequestId headers), and that
//! acknowledged writes survive a restart.

use dynaraft_tests::av::*;
use dynaraft_tests::*;
use std::io::Write;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors() {
    let t = TestServer::start().await;
    let ct = ("Content-Type", "application/x-amz-json-1.0");
    let (st, head, body) = t.raw(Some("ListTables"), &[ct, AUTH], b"{}");
    assert_eq!(st, 200);
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("x-amzn-requestid:") && lower.contains("x-amz-crc32:"),
        "{head}"
    );
    let crc: u32 = lower
        .lines()
        .find_map(|l| l.strip_prefix("x-amz-crc32: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(crc, crc32(body.as_bytes()));

    let (st, _, body) = t.raw(Some("ListTables"), &[ct], b"{}");
    assert_eq!(
        (st, body.as_str()),
        (
            400,
            r#"{"__type":"com.amazon.coral.service#MissingAuthenticationTokenException","message":"Request is missing Authentication Token"}"#
        )
    );
    let (st, _, body) = t.raw(Some("NoSuchOp"), &[ct, AUTH], b"{}");
    assert_eq!(
        (st, body.as_str()),
        (
            400,
            r#"{"__type":"com.amazon.coral.service#UnknownOperationException","message":"Unknown operation exception"}"#
        )
    );
    let (st, _, body) = t.raw(None, &[ct, AUTH], b"{}");
    assert_eq!(
        (st, body.as_str()),
        (
            400,
            r#"{"__type":"com.amazon.coral.service#UnknownOperationException","message":"Unknown operation exception"}"#
        )
    );
    let (st, _, body) = t.raw(Some("ListTables"), &[ct, AUTH], b"{not json");
    assert_eq!(
        (st, body.as_str()),
        (
            400,
            r#"{"__type":"com.amazon.coral.service#SerializationException"}"#
        )
    );
    let (st, _, body) = t.raw(
        Some("PutItem"),
        &[ct, AUTH],
        br#"{"TableName":"nope","Item":{"pk":{"S":"a"}}}"#,
    );
    assert_eq!(st, 400);
    assert!(body.contains("ResourceNotFoundException"), "{body}");
    let (st, _, body) = t.raw(
        Some("PutItem"),
        &[ct, AUTH],
        br#"{"TableName":"nope","Item":{"pk":{}}}"#,
    );
    assert_eq!(st, 400);
    assert!(body.contains("Supplied AttributeValue is empty"), "{body}");

    // gzip-encoded request bodies are accepted.
    let mut gz = flate2_encode(br#"{"Limit": 5}"#);
    let (st, _, body) = t.raw(
        Some("ListTables"),
        &[ct, AUTH, ("Content-Encoding", "gzip")],
        &gz,
    );
    assert_eq!((st, body.as_str()), (200, r#"{"TableNames":[]}"#));
    // A body that does not decode is answered with HTTP 500, as DynamoDB
    // answers it (ScyllaDB's Alternator suite, run against DynamoDB,
    // checks this), and nothing is executed.
    gz.truncate(gz.len() / 2);
    let (st, _, body) = t.raw(
        Some("ListTables"),
        &[ct, AUTH, ("Content-Encoding", "gzip")],
        &gz,
    );
    assert_eq!(st, 500, "{body}");
    assert!(body.contains("InternalServerError"), "{body}");

    // Oversized bodies get 413, not a hang.
    let big = vec![b' '; 17 * 1024 * 1024];
    let (st, _, _) = t.raw(Some("ListTables"), &[ct, AUTH], &big);
    assert_eq!(st, 413);
    t.stop().await;
}

/// A client that never finishes its request headers is disconnected, not
/// left holding a connection slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_disconnected() {
    use std::io::Read;
    let t = TestServer::start().await;
    let addr = t.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        // The server answers 408 or just closes; either way the read ends.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed < std::time::Duration::from_secs(5),
        "connection held for {closed:?}"
    );
    t.stop().await;
}

/// Reads one response head (through its blank line) from `s`: (status,
/// lower-cased head), or `None` if the connection ended or timed out first.
fn read_head(s: &mut std::net::TcpStream) -> Option<(u16, String)> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head))
}

/// A request whose body the server stops reading (413) is answered with
/// `Connection: close`, so a client on a kept-alive connection knows not to
/// reuse it (hyper closes it either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_left_unread_is_answered_with_connection_close() {
    let t = TestServer::start().await;
    let addr = t.addr;
    let head = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let body = vec![b' '; 17 * 1024 * 1024];
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n\
             Content-Type: application/x-amz-json-1.0\r\n{}: {}\r\nContent-Length: {}\r\n\r\n",
            AUTH.0,
            AUTH.1,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut writer = s.try_clone().unwrap();
        // The server stops reading at its limit: the rest may fail to send.
        let sending = std::thread::spawn(move || {
            let _ = writer.write_all(&body);
        });
        let head = read_head(&mut s);
        drop(s);
        let _ = sending.join();
        head
    })
    .await
    .unwrap();
    let (status, head) = head.expect("an answer");
    assert_eq!(status, 413, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    t.stop().await;
}

/// Idle connections cannot starve a new client: at the connection cap the
/// oldest idle connection is closed to admit the new one (before, the new
/// client waited until some idle connection's header timeout fired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_cap_make_room_for_a_new_client() {
    const CAP: usize = 16;
    const IDLE: usize = 3 * CAP;
    let cfg = dynaraft_api::ApiConfig {
        max_connections: CAP,
        // Far longer than the test: only eviction can free a slot.
        header_read_timeout_ms: 120_000,
        ..TestServer::config()
    };
    let t = TestServer::start_config(None, cfg).await;
    let addr = t.addr;
    tokio::task::spawn_blocking(move || {
        let timeout = Some(std::time::Duration::from_secs(5));
        let idle: Vec<std::net::TcpStream> = (0..IDLE)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(timeout).unwrap();
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n\
             Content-Type: application/x-amz-json-1.0\r\n{}: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            AUTH.0, AUTH.1
        );
        s.write_all(req.as_bytes()).unwrap();
        let answer = read_head(&mut s);
        assert_eq!(
            answer.map(|(status, _)| status),
            Some(200),
            "the new client was not served while {IDLE} idle connections were open"
        );
        // The oldest idle connection was closed; the newest is still open.
        let mut oldest = idle[0].try_clone().unwrap();
        oldest.set_read_timeout(timeout).unwrap();
        assert!(read_head(&mut oldest).is_none());
        let mut newest = idle[IDLE - 1].try_clone().unwrap();
        newest
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 1];
        let still_open = matches!(
            std::io::Read::read(&mut newest, &mut buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut
        );
        assert!(still_open, "the newest idle connection should still be open");
    })
    .await
    .unwrap();
    t.stop().await;
}

/// One client cannot take every connection: past its share, with all of
/// its connections busy, its new connection is closed at once, while
/// another client (another address) is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_share_of_connections_is_refused_and_others_are_served() {
    const SHARE: usize = 2;
    let cfg = dynaraft_api::ApiConfig {
        max_connections_per_client: SHARE,
        ..TestServer::config()
    };
    let t = TestServer::start_config(None, cfg).await;
    let addr = t.addr;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let timeout = Some(std::time::Duration::from_secs(5));
        let list_tables = |content_length: usize| {
            format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\n\
                 Content-Type: application/x-amz-json-1.0\r\n{}: {}\r\nContent-Length: \
                 {content_length}\r\n\r\n{{",
                AUTH.0, AUTH.1
            )
        };
        // SHARE requests in progress (their bodies never finish).
        let busy: Vec<std::net::TcpStream> = (0..SHARE)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.write_all(list_tables(2).as_bytes()).unwrap();
                s
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut refused = std::net::TcpStream::connect(addr).unwrap();
        refused.set_read_timeout(timeout).unwrap();
        let _ = refused.write_all(list_tables(1).as_bytes());
        let mut buf = [0u8; 64];
        let read = std::io::Read::read(&mut refused, &mut buf);
        assert!(
            matches!(read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the connection past the client's share should be closed: {read:?}"
        );
        // Another address on the loopback network is another client.
        let other = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
        let connected = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(other).unwrap();
            socket.connect(addr).await.unwrap()
        });
        let mut s = connected.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(timeout).unwrap();
        s.write_all(list_tables(2).as_bytes()).unwrap();
        s.write_all(b"}").unwrap();
        assert_eq!(read_head(&mut s).map(|(status, _)| status), Some(200));
        drop(busy);
    })
    .await
    .unwrap();
    t.stop().await;
}

/// When the node can no longer write (here its WAL directory vanished, so
/// the next segment cannot be created), writes fail with an error instead
/// of hanging and `/ready` says why (liveness, `GET /`, stays up); nothing
/// is retried as if it were safe. A restart recovers from what is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_write_is_not_ready_and_says_why() {
    let dir = std::env::temp_dir().join(format!("dynaraft-walfail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let node_cfg = dynaraft_cluster::embedded::EmbeddedConfig {
        wal_segment_bytes: 4096,
        ..TestServer::node_config(Some(dir.clone()))
    };
    let t = TestServer::start_node(node_cfg, TestServer::config()).await;
    create_table(&t.client, "walfail", None).await;
    assert_eq!(t.get("/ready").0, 200);
    std::fs::remove_dir_all(dir.join("wal")).expect("remove the WAL directory");
    let mut failed = 0;
    for i in 0..50 {
        let put = t
            .client
            .put_item()
            .table_name("walfail")
            .item("pk", s(&format!("k{i}")))
            .item("pad", s(&"x".repeat(1000)))
            .send();
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), put).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let (code, _) = dynaraft_tests::err_of(&e);
                assert_eq!(code, "ServiceUnavailableException", "a retryable error");
                failed += 1;
                break;
            }
            Err(_) => panic!("a write hung after the WAL failed"),
        }
    }
    assert!(failed > 0, "writes went on without a WAL");
    let (status, body) = t.get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("WAL rotation failed"), "{body}");
    assert_eq!(t.get("/").0, 200, "liveness stays up");
    let _ = std::fs::remove_dir_all(&dir);
}

fn crc32(b: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn flate2_encode(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_restart() {
    let dir = std::env::temp_dir().join(format!("dynaraft-it-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let t = TestServer::start_with(Some(dir.clone()), 0).await;
    create_table(&t.client, "durable", None).await;
    for i in 0..50 {
        t.client
            .put_item()
            .table_name("durable")
            .item("pk", A::S(format!("k{i}")))
            .item("i", A::N(i.to_string()))
            .send()
            .await
            .unwrap();
    }
    t.client
        .delete_item()
        .table_name("durable")
        .key("pk", s("k7"))
        .send()
        .await
        .unwrap();
    t.stop().await;
    let t = TestServer::start_with(Some(dir.clone()), 0).await;
    let r = t.client.scan().table_name("durable").send().await.unwrap();
    assert_eq!(r.count(), 49);
    let g = t
        .client
        .get_item()
        .table_name("durable")
        .key("pk", s("k42"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(g.item().unwrap().get("i"), Some(&n("42")));
    t.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Liveness answers any GET (as DynamoDB Local does); readiness (`/ready`)
/// says whether the router has a catalog to route with: yes for the
/// embedded server, no for a router whose control plane cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_readiness() {
    let t = TestServer::start().await;
    assert_eq!(t.get("/").0, 200);
    assert_eq!(t.get("/ready").0, 200);

    let unreachable = dynaraft_cluster::node::ControlMember::parse("1=127.0.0.1:1@az-a").unwrap();
    let rn = dynaraft_cluster::node::RouterNode::start(&[unreachable], Default::default(), None);
    let api = dynaraft_api::Api::new(
        rn.router.clone(),
        std::sync::Arc::new(dynaraft_api::ApiConfig::default()),
    );
    let server = dynaraft_api::Server::start(api, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.addr;
    let (live, ready) =
        tokio::task::spawn_blocking(move || (http_get(addr, "/"), http_get(addr, "/ready")))
            .await
            .unwrap();
    assert_eq!(live.0, 200);
    assert_eq!(ready, (503, "not ready: no catalog yet\n".to_string()));
    server.stop().await;
    rn.stop();
}

/// Headers over 16 KB in all are refused with a plain 400 before the body
/// is read; the same request with short extra headers works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused() {
    let t = TestServer::start().await;
    let ct = ("Content-Type", "application/x-amz-json-1.0");
    let (st, _, _) = t.raw(Some("ListTables"), &[ct, AUTH, ("header1", "dog")], b"{}");
    assert_eq!(st, 200);
    let (x, y) = ("x".repeat(8192), "y".repeat(8192));
    let (st, _, body) = t.raw(
        Some("ListTables"),
        &[ct, AUTH, ("header1", &x), ("header2", &y)],
        b"{}",
    );
    assert_eq!(st, 400, "{body}");
    assert!(!body.contains("__type"), "{body}");
}

/// The value of the series `line_prefix` (labels included) in `text`, 0
/// if absent.
fn series(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` carries the request families named after CloudWatch's
/// DynamoDB metrics ("DynamoDB metrics and dimensions" in the Developer
/// Guide), with HELP and TYPE lines, and they move with the requests. The
/// recorder is per process (other tests of this binary add to it), so
/// counts are compared before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_follow_the_requests() {
    let t = TestServer::start().await;
    create_table(&t.client, "metered", None).await;
    let (_, before) = t.get("/metrics");
    let put = || t.client.put_item().table_name("metered").item("pk", s("a"));
    put().send().await.expect("put");
    let failed = put()
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    assert!(failed.is_err());
    let missing = t
        .client
        .get_item()
        .table_name("nope")
        .key("pk", s("a"))
        .send()
        .await;
    assert!(missing.is_err());
    let ct = ("Content-Type", "application/x-amz-json-1.0");
    let (st, _, _) = t.raw(Some("NoSuchOperation"), &[ct, AUTH], b"{}");
    assert_eq!(st, 400);
    let (code, after) = t.get("/metrics");
    assert_eq!(code, 200);
    for family in [
        "dynaraft_successful_request_latency_seconds histogram",
        "dynaraft_conditional_check_failed_requests_total counter",
        "dynaraft_user_errors_total counter",
    ] {
        let name = family.split(' ').next().unwrap_or_default();
        assert!(
            after.contains(&format!("# TYPE {family}")),
            "{family}:\n{after}"
        );
        assert!(
            after.contains(&format!("# HELP {name} ")),
            "{name}:\n{after}"
        );
    }
    let moved = |prefix: &str| series(&after, prefix) - series(&before, prefix);
    let ok = r#"dynaraft_successful_request_latency_seconds_count{operation="PutItem"}"#;
    assert!(moved(ok) >= 1.0, "{ok}");
    let ccf = r#"dynaraft_conditional_check_failed_requests_total{operation="PutItem"}"#;
    assert!(moved(ccf) >= 1.0, "{ccf}");
    let user = r#"dynaraft_user_errors_total{operation="GetItem"}"#;
    assert!(moved(user) >= 1.0, "{user}");
    // An unknown target is counted under one label value, not its own.
    assert!(!after.contains("NoSuchOperation"));
    assert!(moved(r#"dynaraft_user_errors_total{operation="unknown"}"#) >= 1.0);
    t.stop().await;
}

/// `--metrics-listen`: /metrics moves to its own address, and the API's
/// port no longer answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_on_their_own_address_only() {
    let metrics_addr = dynaraft_api::serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .expect("metrics listener");
    let cfg = dynaraft_api::ApiConfig {
        metrics_elsewhere: true,
        ..TestServer::config()
    };
    let ts = TestServer::start_config(None, cfg).await;
    ts.client.list_tables().send().await.expect("API works");
    let (status, body) = dynaraft_tests::http_get(metrics_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("dynaraft_requests") || body.contains("# TYPE"),
        "{body}"
    );
    assert_eq!(dynaraft_tests::http_get(metrics_addr, "/").0, 404);
    assert_eq!(ts.get("/metrics").0, 404, "not on the API's port");
    ts.stop().await;
}
