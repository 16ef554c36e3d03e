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
    let rn = dynaraft_cluster::node::RouterNode::start(&[unreachable], Default::default());
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
