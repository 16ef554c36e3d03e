//! Peer regions (global tables): the other deployments a global table
//! replicates to, reached at their DynamoDB endpoints over HTTP/1.1 (or
//! HTTPS, trusting the system's roots and `--peer-region-ca`) with
//! SigV4-signed requests, as any client would reach them.
//!
//! Replication calls use their own target prefix
//! ([`REPLICATION_TARGET_PREFIX`]), which the API serves beside DynamoDB's
//! and authorizes like any other request: a peer that requires signed
//! requests needs `--peer-credentials` of one of its users.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The `X-Amz-Target` prefix of replication calls between regions.
pub const REPLICATION_TARGET_PREFIX: &str = "DynaraftReplication_20261203.";
/// How long one call to a peer region may take, in milliseconds.
pub const PEER_CALL_TIMEOUT_MS: u64 = 10_000;
/// Largest answer read from a peer region, in bytes.
pub const MAX_PEER_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Longest region name accepted, in bytes (AWS's are under 20).
pub const MAX_REGION_NAME_BYTES: usize = dynaraft_storage::replica::MAX_REGION_BYTES;
/// The access key peers sign with when none is configured (a peer that
/// does not authenticate accepts any signature, as DynamoDB Local does).
const ANONYMOUS_KEY: &str = "dynaraft-replication";

/// Why a call to a peer region failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("region {0} is not a known peer region (see --peer-region)")]
    Unknown(String),
    /// Not answered (connection refused, timed out, broken answer): the
    /// call may be retried.
    #[error("region {region} did not answer: {why}")]
    Unreachable { region: String, why: String },
    /// Answered with an error.
    #[error("region {region} refused: {type_name}: {message}")]
    Refused {
        region: String,
        status: u16,
        type_name: String,
        message: String,
    },
}

/// Credentials this deployment signs its calls to peers with.
#[derive(Clone)]
pub struct PeerCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for PeerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "PeerCredentials({})", self.access_key_id)
    }
}

/// This deployment's region and how to reach the others.
#[derive(Clone)]
pub struct PeerRegions {
    local: String,
    /// Region name -> its DynamoDB endpoint.
    endpoints: BTreeMap<String, Endpoint>,
    credentials: Option<PeerCredentials>,
    /// What https endpoints are reached with (present when one is https).
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for PeerRegions {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("PeerRegions")
            .field("local", &self.local)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// A peer region's DynamoDB endpoint.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port`.
    authority: String,
    https: bool,
}

/// Whether `name` can be a region name: 1 to [`MAX_REGION_NAME_BYTES`]
/// of lowercase letters, digits and dashes.
pub fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REGION_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl PeerRegions {
    /// `local`, and peers given as `NAME=http://host:port` or
    /// `NAME=https://host:port` (the `--peer-region` flags). HTTPS peers'
    /// certificates must chain to the system's roots or to a certificate
    /// of `ca_pem` (`--peer-region-ca`, PEM).
    pub fn parse(
        local: &str,
        specs: &[String],
        credentials: Option<PeerCredentials>,
    ) -> Result<PeerRegions, String> {
        PeerRegions::parse_trusting(local, specs, credentials, None)
    }

    /// [`PeerRegions::parse`], HTTPS peers' certificates also trusted when
    /// they chain to a certificate of `ca_pem`.
    pub fn parse_trusting(
        local: &str,
        specs: &[String],
        credentials: Option<PeerCredentials>,
        ca_pem: Option<&[u8]>,
    ) -> Result<PeerRegions, String> {
        if !valid_region_name(local) {
            return Err(format!("{local:?} is not a region name"));
        }
        let mut endpoints = BTreeMap::new();
        for spec in specs {
            let (name, url) = spec
                .split_once('=')
                .ok_or_else(|| format!("--peer-region {spec:?}: expected NAME=http://HOST:PORT"))?;
            if !valid_region_name(name) {
                return Err(format!(
                    "--peer-region {spec:?}: {name:?} is not a region name"
                ));
            }
            if name == local {
                return Err(format!(
                    "--peer-region {spec:?}: that is this deployment's region"
                ));
            }
            let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
                (Some(rest), _) => (false, rest),
                (None, Some(rest)) => (true, rest),
                (None, None) => (false, ""),
            };
            let authority = Some(rest.trim_end_matches('/'))
                .filter(|a| !a.is_empty() && !a.contains('/'))
                .ok_or_else(|| {
                    format!(
                        "--peer-region {spec:?}: the endpoint must be http://HOST:PORT or https://HOST:PORT"
                    )
                })?;
            let endpoint = Endpoint {
                authority: authority.to_string(),
                https,
            };
            if endpoints.insert(name.to_string(), endpoint).is_some() {
                return Err(format!("--peer-region {name} is given twice"));
            }
        }
        let tls = if endpoints.values().any(|e| e.https) || ca_pem.is_some() {
            Some(client_tls(ca_pem)?)
        } else {
            None
        };
        Ok(PeerRegions {
            local: local.to_string(),
            endpoints,
            credentials,
            tls,
        })
    }

    /// This deployment's region.
    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn knows(&self, region: &str) -> bool {
        self.endpoints.contains_key(region)
    }

    /// The peer regions' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }

    /// Calls replication operation `op` of `region` with `body`; its JSON
    /// answer.
    pub async fn call(&self, region: &str, op: &str, body: &Value) -> Result<Value, PeerError> {
        let endpoint = self
            .endpoints
            .get(region)
            .ok_or_else(|| PeerError::Unknown(region.to_string()))?;
        let authority = endpoint.authority.as_str();
        let unreachable = |why: String| PeerError::Unreachable {
            region: region.to_string(),
            why,
        };
        let bytes = serde_json::to_vec(body).map_err(|e| unreachable(e.to_string()))?;
        let target = format!("{REPLICATION_TARGET_PREFIX}{op}");
        let request = self
            .signed(region, endpoint, &target, bytes)
            .map_err(unreachable)?;
        let limit = Duration::from_millis(PEER_CALL_TIMEOUT_MS);
        let tls = self.tls.as_ref().filter(|_| endpoint.https);
        let (status, answer) = tokio::time::timeout(limit, send(authority, tls, request))
            .await
            .map_err(|_| unreachable(format!("no answer in {PEER_CALL_TIMEOUT_MS} ms")))?
            .map_err(unreachable)?;
        let json: Value = if answer.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer).map_err(|e| unreachable(e.to_string()))?
        };
        if status == 200 {
            return Ok(json);
        }
        let type_name = json["__type"]
            .as_str()
            .unwrap_or_default()
            .rsplit('#')
            .next()
            .unwrap_or_default()
            .to_string();
        let message = json["message"]
            .as_str()
            .or(json["Message"].as_str())
            .unwrap_or_default()
            .to_string();
        if status >= 500 {
            return Err(unreachable(format!("{status} {type_name}: {message}")));
        }
        Err(PeerError::Refused {
            region: region.to_string(),
            status,
            type_name,
            message,
        })
    }

    /// The request, signed for `region` (the peer checks the scope's region
    /// against its own).
    fn signed(
        &self,
        region: &str,
        endpoint: &Endpoint,
        target: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, String> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let (key, secret) = match &self.credentials {
            Some(c) => (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            None => (ANONYMOUS_KEY, ANONYMOUS_KEY),
        };
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(key, secret, None, None, "dynaraft-peer").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("dynamodb")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let authority = endpoint.authority.as_str();
        let headers = [
            ("host", authority),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target),
        ];
        let scheme = if endpoint.https { "https" } else { "http" };
        let url = format!("{scheme}://{authority}/");
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let mut builder = hyper::Request::post("/");
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        for (k, v) in instructions.headers() {
            builder = builder.header(k, v);
        }
        builder
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())
    }
}

/// The TLS client of HTTPS peers: the system's roots and the certificates
/// of `ca_pem`, TLS 1.2 or 1.3 (rustls with the aws-lc-rs provider).
fn client_tls(ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped, as every rustls client
    // does: a peer whose chain needs one fails its handshake, with why.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--peer-region-ca: {e}"))?;
        if certs.is_empty() {
            return Err("--peer-region-ca: no certificate in it".into());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--peer-region-ca: {e}"))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Sends `request` on a new connection to `authority` (over TLS with
/// `tls`): (status, body).
async fn send(
    authority: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, Vec<u8>), String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return exchange(stream, request).await;
    };
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: {e}"))?;
    let stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    exchange(stream, request).await
}

/// One HTTP/1.1 request and its answer on `stream`.
async fn exchange<S>(
    stream: S,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<(u16, Vec<u8>), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let limited = http_body_util::Limited::new(r.into_body(), MAX_PEER_RESPONSE_BYTES);
            match limited.collect().await {
                Ok(body) => Ok((status, body.to_bytes().to_vec())),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_regions_parse_or_say_what_is_wrong() {
        let p = PeerRegions::parse(
            "us-east-1",
            &["eu-west-1=http://127.0.0.1:8001/".into()],
            None,
        )
        .unwrap();
        assert!(p.knows("eu-west-1") && !p.knows("us-east-1"));
        assert_eq!(p.names().collect::<Vec<_>>(), ["eu-west-1"]);
        for bad in [
            "eu-west-1",
            "EU=http://a:1",
            "us-east-1=http://a:1",
            "eu-west-1=ftp://a:1",
            "eu-west-1=http://a:1/path",
        ] {
            assert!(
                PeerRegions::parse("us-east-1", &[bad.into()], None).is_err(),
                "{bad}"
            );
        }
        let twice = ["b=http://a:1".to_string(), "b=http://a:2".to_string()];
        assert!(PeerRegions::parse("us-east-1", &twice, None).is_err());
        assert!(PeerRegions::parse("", &[], None).is_err());
        let https = ["b=https://peer.example:443".to_string()];
        let p = PeerRegions::parse("us-east-1", &https, None).unwrap();
        assert!(p.tls.is_some() && p.endpoints["b"].https);
        let not_pem = PeerRegions::parse_trusting("us-east-1", &https, None, Some(b"nothing"));
        assert!(not_pem.unwrap_err().contains("--peer-region-ca"));
    }
}
