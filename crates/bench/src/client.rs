//! One HTTP/1.1 keep-alive connection to an endpoint, as a load-generator
//! worker holds it: requests go one at a time, each DynamoDB request is
//! signed with SigV4 (as every SDK signs it), and any transport error or
//! timeout drops the connection so the next request dials afresh.
//!
//! The client is deliberately thin (hyper's connection API, no pool, no
//! retries): the load generator shares the machine's cores with the server
//! under test, and every microsecond it spends is one the server loses.
//! `https://` endpoints are dialled over TLS (rustls), trusting the
//! certificates given once per process to [`trust_ca`] (`--tls-ca`).
//! The benchmark's empty-HTTP floor measures exactly this client against a
//! server that does nothing.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpStream;

/// The access key id the load generator signs with (a server started with
/// an auth file needs a user of that key and [`BENCH_SECRET`]).
pub const BENCH_ACCESS_KEY: &str = "bench";
pub const BENCH_SECRET: &str = "bench-secret";

/// Why a request got no HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(String),
    #[error("tls: {0}")]
    Tls(String),
}

/// What `https://` endpoints are checked against, set once per process.
static TLS_CLIENT: std::sync::OnceLock<Arc<tokio_rustls::rustls::ClientConfig>> =
    std::sync::OnceLock::new();

/// Trusts the certificates in `pem` (a CA, or a server's self-signed
/// certificate) for every `https://` endpoint of this process.
pub fn trust_ca(pem: &[u8]) -> Result<(), ClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    TLS_CLIENT
        .set(Arc::new(config))
        .map_err(|_| ClientError::Tls("trusted certificates are set once".into()))
}

/// An HTTP response, read whole.
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// Where requests go and how they are signed.
pub struct Endpoint {
    /// host:port to dial.
    addr: String,
    /// Over TLS (`https://`), checking the server's certificate names this
    /// host.
    tls_host: Option<String>,
    /// The URL as signed, e.g. `http://127.0.0.1:8000/`.
    url: String,
    region: String,
    identity: Identity,
}

impl Endpoint {
    /// An endpoint from a URL such as `http://127.0.0.1:8000` (or
    /// `https://`, see [`trust_ca`]).
    pub fn parse(url: &str, region: &str) -> Result<Self, ClientError> {
        Self::signed_as(url, region, BENCH_ACCESS_KEY, BENCH_SECRET)
    }

    /// [`Endpoint::parse`], signing with access key id `key` and `secret`
    /// (a server without a shared database keeps each key's tables apart;
    /// one with an auth file checks the signature).
    pub fn signed_as(
        url: &str,
        region: &str,
        key: &str,
        secret: &str,
    ) -> Result<Self, ClientError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            ClientError::Request(format!(
                "endpoint {url:?} must start with http:// or https://"
            ))
        })?;
        let addr = rest.trim_end_matches('/');
        if !matches!(scheme, "http" | "https") || addr.is_empty() || addr.contains('/') {
            return Err(ClientError::Request(format!(
                "endpoint {url:?} must be http://host:port or https://host:port"
            )));
        }
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let tls_host = (scheme == "https").then(|| host.trim_matches(['[', ']']).to_string());
        let identity = Credentials::new(key, secret, None, None, "dynaraft-bench");
        Ok(Self {
            addr: addr.to_string(),
            tls_host,
            url: format!("{scheme}://{addr}/"),
            region: region.to_string(),
            identity: identity.into(),
        })
    }

    /// The host:port requests are sent to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn signed(&self, target: &str, body: Bytes) -> Result<http::Request<Full<Bytes>>, ClientError> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", &self.addr)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", target)
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("dynamodb")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ClientError::Request(e.to_string()))?
            .into();
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new("POST", &self.url, headers, SignableBody::Bytes(&body))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ClientError::Request(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut req);
        Ok(req)
    }
}

/// One worker's connection.
pub struct Conn {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            sender: None,
        }
    }

    /// Forget the connection (after a timeout its state is unknown).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// A signed DynamoDB JSON 1.0 call: `op` is e.g. `GetItem`.
    pub async fn dynamodb(&mut self, op: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        let target = format!("DynamoDB_20120810.{op}");
        let req = self.endpoint.signed(&target, Bytes::from(body))?;
        self.send(req).await
    }

    /// A signed DynamoDB Streams call: `op` is e.g. `GetRecords`.
    pub async fn streams(&mut self, op: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        let target = format!("DynamoDBStreams_20120810.{op}");
        let req = self.endpoint.signed(&target, Bytes::from(body))?;
        self.send(req).await
    }

    /// A plain GET of `path` (a server's `/metrics`).
    pub async fn get(&mut self, path: &str) -> Result<Response, ClientError> {
        let req = self.unsigned("GET", path).body(Full::new(Bytes::new()));
        self.send(req.map_err(|e| ClientError::Request(e.to_string()))?)
            .await
    }

    /// A plain JSON POST to `path` (etcd's gateway, the empty-HTTP floor).
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        let req = self
            .unsigned("POST", path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)));
        self.send(req.map_err(|e| ClientError::Request(e.to_string()))?)
            .await
    }

    /// An unsigned request's head: `method` on `path` of this endpoint.
    fn unsigned(&self, method: &str, path: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.endpoint.addr())
    }

    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let result = self.try_send(req).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(&mut self, req: http::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let sender = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(dial(&self.endpoint).await?),
        };
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response { status, body })
    }
}

async fn dial(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = TcpStream::connect(endpoint.addr())
        .await
        .map_err(ClientError::Connect)?;
    stream.set_nodelay(true).map_err(ClientError::Connect)?;
    let Some(host) = &endpoint.tls_host else {
        return handshake(stream, true).await;
    };
    let config = TLS_CLIENT
        .get()
        .cloned()
        .ok_or_else(|| ClientError::Tls("an https endpoint needs --tls-ca".into()))?;
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    // One buffer per request: a TLS stream seals each slice of a vectored
    // write as a record of its own.
    handshake(tls, false).await
}

/// HTTP/1.1 over `stream`; the connection task ends when the sender is
/// dropped or the peer closes (the error, if any, reaches the worker
/// through its next request).
async fn handshake<S>(stream: S, vectored: bool) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(vectored)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
