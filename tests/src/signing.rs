//! SigV4-signed raw requests, signed by `aws-sigv4` as the SDKs sign
//! them, for tests that tamper with what was signed.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::net::SocketAddr;
use std::time::SystemTime;

/// Who signs, and how.
#[derive(Clone)]
pub struct Signer {
    pub key: String,
    pub secret: String,
    pub region: String,
    pub at: SystemTime,
    /// Sign in the query string (a presigned request) instead of the
    /// Authorization header.
    pub presigned: bool,
}

impl Signer {
    pub fn new(key: &str, secret: &str) -> Signer {
        Signer {
            key: key.into(),
            secret: secret.into(),
            region: "us-east-1".into(),
            at: SystemTime::now(),
            presigned: false,
        }
    }
}

/// A signed DynamoDB request as sent: the path (with the query string of a
/// presigned request) and every header but `Host` (which the raw sender
/// writes as `addr`).
pub struct Signed {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Signed {
    /// Sends it as it is now (after any tampering): (status, body).
    pub fn send(&self, addr: SocketAddr) -> (u16, String) {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, _, body) = crate::raw_request_to(addr, &self.path, None, &headers, &self.body);
        (status, body)
    }

    /// Replaces the value of header `name` (case-insensitive).
    pub fn set_header(&mut self, name: &str, value: &str) {
        for (k, v) in &mut self.headers {
            if k.eq_ignore_ascii_case(name) {
                *v = value.to_string();
            }
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `body` for `DynamoDB_20120810.{op}` (or a full target containing a
/// `.`), signed by `s` for `addr`.
pub fn signed(addr: SocketAddr, s: &Signer, op: &str, body: &str) -> Signed {
    let target = if op.contains('.') {
        op.to_string()
    } else {
        format!("DynamoDB_20120810.{op}")
    };
    let host = addr.to_string();
    let base = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.0"),
        ("x-amz-target", target.as_str()),
    ];
    let identity: Identity = Credentials::new(&s.key, &s.secret, None, None, "test").into();
    let mut settings = SigningSettings::default();
    if s.presigned {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(std::time::Duration::from_secs(300));
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&s.region)
        .name("dynamodb")
        .time(s.at)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let url = format!("http://{host}/");
    let signable = SignableRequest::new(
        "POST",
        &url,
        base.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut headers: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| *k != "host")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    let query: Vec<String> = instructions
        .params()
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let path = if query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", query.join("&"))
    };
    Signed {
        path,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// Percent-encodes a query value as SigV4 does (unreserved characters
/// only).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
