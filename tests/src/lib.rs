//! Test harness: boots an embedded dynaraft server in-process on port 0 and
//! hands out a real `aws-sdk-dynamodb` client pointed at it, plus a raw
//! HTTP helper for protocol-level tests the SDK cannot express.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use dynaraft_api::{Api, ApiConfig, Server};
use dynaraft_cluster::embedded::{Embedded, EmbeddedConfig};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub mod cluster;
pub mod numbered;
pub mod signing;
pub mod transcript;

/// TTL sweeps in tests run often so expiry is observable quickly.
pub const TEST_TTL_SWEEP_MS: u64 = 100;

/// How often test servers snapshot tables with point-in-time recovery, in
/// milliseconds: often, so restores to a time are tested redoing the log
/// from a snapshot as well as undoing it from the live table.
pub const TEST_PITR_SNAPSHOT_MS: u64 = 400;
/// The same for the in-process three-zone cluster, where each snapshot is
/// a new table of three-replica groups on a debug build's two cores: one or
/// two per test. Every 400 ms, or every 2 s beside another cluster test,
/// the control group lost its leader under the load and a restore's
/// CreateTable failed with 503 (and, retried, with TableAlreadyExists).
pub const TEST_CLUSTER_PITR_SNAPSHOT_MS: u64 = 5_000;

/// Header timeout of test servers, short so the stalled-client test is quick.
pub const TEST_HEADER_TIMEOUT_MS: u64 = 500;

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    server: Option<Server>,
    node: Option<Embedded>,
}

impl TestServer {
    /// The embedded node behind the server (to look at its storage).
    pub fn node(&self) -> Option<&Embedded> {
        self.node.as_ref()
    }

    /// In-memory server with instant table transitions.
    pub async fn start() -> TestServer {
        Self::start_with(None, 0).await
    }

    pub async fn start_with(data_dir: Option<PathBuf>, transition_delay_ms: u64) -> TestServer {
        let cfg = ApiConfig {
            transition_delay_ms,
            ..Self::config()
        };
        Self::start_config(data_dir, cfg).await
    }

    /// The API settings of test servers: instant transitions, short header
    /// timeout.
    pub fn config() -> ApiConfig {
        ApiConfig {
            transition_delay_ms: 0,
            header_read_timeout_ms: TEST_HEADER_TIMEOUT_MS,
            ..ApiConfig::default()
        }
    }

    pub async fn start_config(data_dir: Option<PathBuf>, cfg: ApiConfig) -> TestServer {
        Self::start_node(Self::node_config(data_dir), cfg).await
    }

    /// The embedded node settings of test servers: a fast TTL sweep.
    pub fn node_config(data_dir: Option<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            ttl_sweep_interval_ms: TEST_TTL_SWEEP_MS,
            pitr_snapshot_interval_ms: TEST_PITR_SNAPSHOT_MS,
            ..EmbeddedConfig::new(data_dir)
        }
    }

    pub async fn start_node(node_cfg: EmbeddedConfig, cfg: ApiConfig) -> TestServer {
        Self::start_node_at(node_cfg, cfg, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// [`TestServer::start_node`] serving on `addr` (two regions must know
    /// each other's address before either starts).
    pub async fn start_node_at(
        node_cfg: EmbeddedConfig,
        cfg: ApiConfig,
        addr: SocketAddr,
    ) -> TestServer {
        let node = Embedded::start(node_cfg)
            .await
            .expect("start embedded node");
        let api = Api::new(node.router.clone(), Arc::new(cfg));
        let server = Server::start(api, addr).await.expect("start server");
        let addr = server.addr;
        TestServer {
            addr,
            client: client_for(addr),
            server: Some(server),
            node: Some(node),
        }
    }

    /// The embedded node's router (for fault injection).
    pub fn router(&self) -> Option<&dynaraft_cluster::Router> {
        self.node.as_ref().map(|n| &n.router)
    }

    /// Stops the server and the node (needed before reopening a data dir).
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }

    /// Sends one raw request; returns (status, headers, body).
    /// A plain `GET path`: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    pub fn raw(
        &self,
        target: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        raw_request(self.addr, target, headers, body)
    }
}

/// Sends one raw `POST /` to `addr` (a `DynamoDB_20120810.<target>` when
/// given); returns (status, head, body).
pub fn raw_request(
    addr: SocketAddr,
    target: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    raw_request_to(addr, "/", target, headers, body)
}

/// [`raw_request`] to `path` (which may carry a query string).
pub fn raw_request_to(
    addr: SocketAddr,
    path: &str,
    target: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr,
        body.len()
    );
    if let Some(t) = target {
        req.push_str(&format!("X-Amz-Target: DynamoDB_20120810.{t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    split_response(&out)
}

pub const AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=AKID/20261124/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00",
);

/// Sends `GET path` to `addr` and returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let (status, _, body) = split_response(&out);
    (status, body)
}

/// An HTTP/1.1 response as (status, head, body).
fn split_response(out: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub fn client_for(addr: SocketAddr) -> Client {
    client_signed_as(addr, "AKID", "us-east-1")
}

/// A client signing with access key id `key` for `region`.
pub fn client_signed_as(addr: SocketAddr, key: &str, region: &str) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(key, "SECRET", None, None, "test"))
        .endpoint_url(format!("http://{addr}"))
        .build();
    Client::from_conf(conf)
}

/// A client signing with access key id `key` and `secret` for `region`,
/// without retries (so each refusal is seen once).
pub fn client_with_secret(addr: SocketAddr, key: &str, secret: &str, region: &str) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .endpoint_url(format!("http://{addr}"))
        .build();
    Client::from_conf(conf)
}

/// The DynamoDB error code and message of an SDK error.
pub fn err_of<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> (String, String)
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(se) => (
            se.code().unwrap_or("").to_string(),
            se.message().unwrap_or("").to_string(),
        ),
        None => ("<not a service error>".into(), format!("{e:?}")),
    }
}

pub mod schema {
    //! Shorthand builders for key schemas and attribute definitions.
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, KeyType, Projection, ProjectionType,
        ScalarAttributeType,
    };

    pub fn key(name: &str, ty: KeyType) -> KeySchemaElement {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(ty)
            .build()
            .expect("key")
    }

    pub fn attr(name: &str, ty: ScalarAttributeType) -> AttributeDefinition {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ty)
            .build()
            .expect("attr")
    }

    /// A projection of every attribute.
    pub fn all() -> Projection {
        Projection::builder()
            .projection_type(ProjectionType::All)
            .build()
    }
}

pub mod av {
    //! Shorthand constructors for attribute values.
    pub use aws_sdk_dynamodb::types::AttributeValue as A;
    pub fn s(v: &str) -> A {
        A::S(v.to_string())
    }
    pub fn n(v: &str) -> A {
        A::N(v.to_string())
    }
}

/// Creates a table with a string hash key `pk` and, if given, a sort key.
pub async fn create_table(
    client: &Client,
    name: &str,
    sort: Option<(&str, aws_sdk_dynamodb::types::ScalarAttributeType)>,
) {
    use aws_sdk_dynamodb::types::*;
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("ad"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("ks"),
        );
    if let Some((sk, ty)) = sort {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(sk)
                    .attribute_type(ty)
                    .build()
                    .expect("ad"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(sk)
                    .key_type(KeyType::Range)
                    .build()
                    .expect("ks"),
            );
    }
    req.send().await.expect("create table");
}

/// Every item of a Scan of `table` (or of its index `index`), page by page.
pub async fn scan_all(
    c: &Client,
    table: &str,
    index: Option<&str>,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let r = c
            .scan()
            .table_name(table)
            .set_index_name(index.map(str::to_string))
            .set_exclusive_start_key(start)
            .limit(50)
            .send()
            .await
            .unwrap_or_else(|e| panic!("scan of {table}/{index:?}: {e:?}"));
        out.extend(r.items().iter().cloned());
        match r.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => return out,
        }
    }
}
