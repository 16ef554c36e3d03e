//! The HTTP edge: DynamoDB's JSON 1.0 protocol on hyper. Parses the
//! target and body (gzip accepted), rejects unauthenticated requests as
//! DynamoDB does, dispatches, and writes responses with `x-amz-crc32` and
//! `x-amzn-RequestId`. Bounded: body size, concurrent connections.

use crate::error::ApiError;
use crate::{Api, ops};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::Value;
use std::io::Read;

/// Largest request body accepted, in bytes (DynamoDB's limit is 16 MB).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Largest body after gzip decompression, in bytes.
pub const MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;
pub const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// Time a client has to send a whole request body, in milliseconds.
pub const BODY_READ_TIMEOUT_MS: u64 = 60_000;

pub async fn handle(
    api: Api,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let request_id = request_id();
    if req.method() == Method::GET {
        // `/metrics`: Prometheus text format.
        // `/ready` (readiness): the router has the catalog and can route.
        // Any other GET (liveness, and DynamoDB Local's health check).
        if req.uri().path() == "/metrics" {
            return Ok(match crate::metrics::render() {
                Some(text) => text_response(200, &text, &request_id),
                None => text_response(404, "metrics are not enabled\n", &request_id),
            });
        }
        if req.uri().path() == "/ready" && api.router.catalog().get().version == 0 {
            return Ok(text_response(
                503,
                "not ready: no catalog yet\n",
                &request_id,
            ));
        }
        return Ok(text_response(200, "healthy: dynaraft\n", &request_id));
    }
    let result = process(&api, req).await;
    let (status, body) = match result {
        Ok(v) => (200, v),
        Err(e) => e.to_response(),
    };
    Ok(json_response(status, &body, &request_id))
}

async fn process(api: &Api, req: Request<Incoming>) -> Result<Value, ApiError> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        return Err(ops::unknown_operation(""));
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let gzip = parts
        .headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let read = Limited::new(body, MAX_REQUEST_BYTES).collect();
    let timeout = std::time::Duration::from_millis(BODY_READ_TIMEOUT_MS);
    let collected = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::Serialization(None))?;
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ApiError::RequestTooLarge);
        }
        Err(_) => return Err(ApiError::Serialization(None)),
    };
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or_default();
    if !ops::is_known(op) {
        return Err(ops::unknown_operation(op));
    }
    if !parts.headers.contains_key("authorization") && !has_query_auth(parts.uri.query()) {
        return Err(ApiError::MissingAuthenticationToken);
    }
    let bytes = if gzip {
        gunzip(&bytes)?
    } else {
        bytes.to_vec()
    };
    ops::dispatch(api, op, &bytes).await
}

fn has_query_auth(q: Option<&str>) -> bool {
    q.is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("X-Amz-Credential="))
}

fn gunzip(b: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::Serialization(None))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(ApiError::RequestTooLarge);
    }
    Ok(out)
}

/// Length of a request id, in characters (DynamoDB's ids are 52).
pub const REQUEST_ID_CHARS: usize = 52;

fn request_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..REQUEST_ID_CHARS)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    respond(status, "application/x-amz-json-1.0", bytes, request_id)
}

fn text_response(status: u16, text: &str, request_id: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", text.as_bytes().to_vec(), request_id)
}

/// Every response carries DynamoDB's `x-amzn-RequestId` and `x-amz-crc32`.
fn respond(
    status: u16,
    content_type: &str,
    bytes: Vec<u8>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let crc = crc32fast::hash(&bytes);
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", request_id)
        .header("x-amz-crc32", crc.to_string())
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
