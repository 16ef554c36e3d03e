//! The HTTP edge: DynamoDB's JSON 1.0 protocol on hyper. Reads the target
//! and body (gzip and deflate request bodies accepted), rejects
//! unauthenticated requests as DynamoDB does, dispatches, and writes
//! responses with `x-amz-crc32`, `x-amzn-RequestId` and `Server`,
//! compressed when the client's Accept-Encoding asks and the body is large
//! ([`crate::encoding`]). Browser clients get CORS headers when they send
//! an `Origin`. Bounded: body size, decompressed size, concurrent
//! connections.

use crate::encoding::{self, Coding};
use crate::error::ApiError;
use crate::{Api, Serving, ops};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response};
use serde_json::Value;
use std::sync::Arc;

/// Largest request body accepted, in bytes (DynamoDB's limit is 16 MB).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
pub const TARGET_PREFIX: &str = "DynamoDB_20120810.";
/// The `X-Amz-Target` prefix of DynamoDB Streams operations.
pub const STREAMS_TARGET_PREFIX: &str = "DynamoDBStreams_20120810.";
/// Time a client has to send a whole request body, in milliseconds.
pub const BODY_READ_TIMEOUT_MS: u64 = 60_000;
/// Most bytes of a request's headers (names and values) DynamoDB reads,
/// and of its request target (the URL path and query).
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// How long a browser may cache a CORS preflight answer, in seconds.
pub const CORS_MAX_AGE_S: u32 = 172_800;
/// Response headers a browser script may read (CORS).
const CORS_EXPOSE_HEADERS: &str =
    "x-amzn-RequestId,x-amzn-ErrorType,x-amzn-ErrorMessage,x-amz-crc32,Date";

/// Where a request came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// The client's address (`aws:SourceIp`).
    pub ip: Option<std::net::IpAddr>,
    /// Whether it came over TLS (`aws:SecureTransport`).
    pub tls: bool,
}

/// Answers one request from `peer`.
pub async fn handle(
    serving: Arc<Serving>,
    req: Request<Incoming>,
    peer: Peer,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let request_id = request_id();
    let cors = Cors::of(req.method(), req.headers());
    let accept = encoding::accepted(req.headers());
    // Whether the request's body may be left unread: then the connection
    // cannot carry another request, and the answer says so.
    let mut unread = false;
    let mut response = match (&*serving, req.method()) {
        _ if head_too_large(&req) => {
            unread = true;
            text_response(400, "Bad Request\n", &request_id)
        }
        (serving, &Method::GET) => get(serving, &req, &request_id),
        (_, &Method::OPTIONS) if cors.is_some() => text_response(200, "", &request_id),
        (Serving::Down(why), _) => {
            unread = !hyper::body::Body::is_end_stream(req.body());
            let (status, body) = ApiError::ServiceUnavailable(why.clone()).to_response();
            json_response(status, &body, accept, &request_id)
        }
        (Serving::Up(api), _) => {
            let request_log = api.cfg.request_log;
            let started = std::time::Instant::now();
            let operation = ops::served_name(
                req.headers()
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            );
            let mut api = api.clone();
            if api.cfg.audit.is_some() {
                api.resources = Some(Default::default());
            }
            let key_id = api
                .cfg
                .audit
                .as_ref()
                .and_then(|_| crate::scope::access_key_id(req.headers(), req.uri().query()));
            let source_ip = peer.ip;
            let (status, body) = match process(&mut api, req, peer, &mut unread).await {
                Ok(v) => (200, v),
                Err(e) => e.to_response(),
            };
            let error = body
                .get("__type")
                .and_then(Value::as_str)
                .map(|t| t.rsplit('#').next().unwrap_or(t));
            if status != 200 && ops::replication::REPLICATION_OPERATIONS.contains(&operation) {
                // A peer region's call refused: malformed, unauthenticated
                // or not allowed. The peer retries; this says why it fails.
                let why = body
                    .get("message")
                    .or(body.get("Message"))
                    .and_then(|m| m.as_str())
                    .unwrap_or_default();
                tracing::warn!(operation, status, error, source = ?source_ip, why,
                    "a replication call from a peer region was refused");
            }
            crate::metrics::request(operation, status, error, started.elapsed());
            if request_log {
                log_request(operation, status, error, started, &request_id);
            }
            if let Some(log) = &api.cfg.audit {
                let resources = api
                    .resources
                    .as_ref()
                    .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|p| p.into_inner())));
                let principal = api.principal.as_deref();
                let record = crate::audit::Record {
                    event_time: crate::audit::now_rfc3339(),
                    request_id: request_id.clone(),
                    principal_arn: principal.map(|p| p.user.arn.clone()),
                    account_id: principal.map(|p| p.user.account_id.clone()),
                    access_key_id: key_id,
                    source_ip_address: peer.ip,
                    event_name: operation,
                    resources: resources.unwrap_or_default(),
                    status,
                    error_code: error.map(str::to_string),
                };
                log.record(&record);
            }
            json_response(status, &body, accept, &request_id)
        }
    };
    if let Some(c) = cors {
        c.apply(response.headers_mut());
    }
    if unread {
        // hyper closes a connection whose request body was not read to its
        // end; without this header a client reusing it would fail.
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// One line of the request log (`ApiConfig::request_log`).
fn log_request(op: &str, status: u16, error: Option<&str>, started: std::time::Instant, id: &str) {
    let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
    tracing::info!(target: "dynaraft::request", op, status, error, ms, request_id = id, "request");
}

/// Whether the request's target or its headers are over
/// [`MAX_REQUEST_HEAD_BYTES`]; such a request is refused before it is read.
fn head_too_large(req: &Request<Incoming>) -> bool {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    target > MAX_REQUEST_HEAD_BYTES || headers > MAX_REQUEST_HEAD_BYTES
}

/// `GET /`: DynamoDB's health line naming the host the client addressed
/// (liveness: it stays up while storage recovers); `/metrics`: Prometheus
/// text; `/ready`: readiness (the API is up, the router has a catalog to
/// route with, and the storage node in this process, if any, can still
/// write); `/console...`: the web console's page and assets
/// ([`crate::console`]) unless it is off. Other paths are not found.
fn get(serving: &Serving, req: &Request<Incoming>, request_id: &str) -> Response<Full<Bytes>> {
    match (req.uri().path(), serving) {
        ("/", _) => {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("dynaraft");
            text_response(200, &format!("healthy: {host}"), request_id)
        }
        ("/metrics", Serving::Up(api)) if api.cfg.metrics_elsewhere => {
            text_response(404, "Page Not Found\n", request_id)
        }
        ("/metrics", _) => match crate::metrics::render() {
            Some(text) => text_response(200, &text, request_id),
            None => text_response(404, "metrics are not enabled\n", request_id),
        },
        ("/ready", Serving::Down(why)) => {
            text_response(503, &format!("not ready: {why}\n"), request_id)
        }
        ("/ready", Serving::Up(api)) if api.router.catalog().get().version == 0 => {
            text_response(503, "not ready: no catalog yet\n", request_id)
        }
        ("/ready", Serving::Up(api)) => match api.router.storage_failure() {
            Some(why) => text_response(503, &format!("not ready: {why}\n"), request_id),
            None => text_response(200, "ready\n", request_id),
        },
        (path, Serving::Up(api)) if api.cfg.console && path.starts_with("/console") => {
            let authenticating = || {
                let users = api.router.catalog().get().users.clone();
                api.cfg.auth.as_ref().is_some_and(|a| a.enabled(&users))
            };
            match crate::console::asset(path, &api.cfg, authenticating) {
                Some((content_type, body)) => {
                    let mut r = respond(200, content_type, body, request_id);
                    for (name, value) in crate::console::SECURITY_HEADERS {
                        r.headers_mut()
                            .insert(*name, hyper::header::HeaderValue::from_static(value));
                    }
                    r
                }
                None => text_response(404, "Page Not Found\n", request_id),
            }
        }
        _ => text_response(404, "Page Not Found\n", request_id),
    }
}

/// Reads, authenticates, parses and runs one API request; sets `unread`
/// when its body was not read to the end (too large, or too slow).
async fn process(
    api: &mut Api,
    req: Request<Incoming>,
    peer: Peer,
    unread: &mut bool,
) -> Result<Value, ApiError> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        *unread = !hyper::body::Body::is_end_stream(&body);
        return Err(ops::unknown_operation(""));
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let read = Limited::new(body, MAX_REQUEST_BYTES).collect();
    let timeout = std::time::Duration::from_millis(BODY_READ_TIMEOUT_MS);
    let collected = tokio::time::timeout(timeout, read).await.map_err(|_| {
        *unread = true;
        ApiError::Serialization(None)
    })?;
    let bytes = match collected {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            *unread = true;
            return Err(ApiError::RequestTooLarge);
        }
        Err(_) => return Err(ApiError::Serialization(None)),
    };
    // DynamoDB Streams shares the endpoint under its own target prefix,
    // and so do the calls between regions of global tables.
    let stream_op = target
        .strip_prefix(STREAMS_TARGET_PREFIX)
        .filter(|op| ops::STREAM_OPERATIONS.contains(op));
    let replication_op = target
        .strip_prefix(dynaraft_cluster::peer::REPLICATION_TARGET_PREFIX)
        .filter(|op| ops::replication::REPLICATION_OPERATIONS.contains(op));
    let console_op = target
        .strip_prefix(crate::console::CONSOLE_TARGET_PREFIX)
        .filter(|op| api.cfg.console && crate::console::CONSOLE_OPERATIONS.contains(op));
    let op = stream_op
        .or(replication_op)
        .or(console_op)
        .unwrap_or_else(|| target.strip_prefix(TARGET_PREFIX).unwrap_or_default());
    if stream_op.is_none() && replication_op.is_none() && console_op.is_none() && !ops::is_known(op)
    {
        return Err(ops::unknown_operation(op));
    }
    if console_op.is_some() && !crate::console::same_origin(&parts.headers) {
        return Err(ApiError::AccessDenied(
            "cross-site requests to the console's operations are refused".into(),
        ));
    }
    // The catalog's users are read only where there is an Auth to ask.
    let authenticating = api
        .cfg
        .auth
        .clone()
        .map(|auth| (auth, api.router.catalog().get().users.clone()))
        .filter(|(auth, kept)| auth.enabled(kept));
    match authenticating {
        Some((auth, kept)) => {
            let signed = crate::auth::sigv4::Signed {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                body: &bytes,
            };
            let principal = auth
                .authenticate(&signed, peer, std::time::SystemTime::now(), &kept)
                .inspect_err(|e| crate::metrics::authentication_failed(e.type_name()))?;
            api.scope = principal
                .user
                .scope
                .get_or_init(|| {
                    crate::scope::Scope::of_account(
                        &principal.user.account_id,
                        &api.cfg.region,
                        &api.cfg.account_id,
                    )
                })
                .clone();
            api.principal = Some(Arc::new(principal));
        }
        None => {
            if !parts.headers.contains_key("authorization") && !has_query_auth(parts.uri.query()) {
                return Err(ApiError::MissingAuthenticationToken);
            }
            api.scope =
                crate::scope::Scope::of(api.cfg.shared_db, &parts.headers, parts.uri.query());
        }
    }
    let bytes = encoding::decode_request(parts.headers.get("content-encoding"), bytes)?;
    // A signed request without a body is a SerializationException without
    // a message, as DynamoDB answers it (SDKs send `{}` for an empty input).
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Serialization(None));
    }
    // Another account's table by ARN: served in that account, where its
    // resource-based policy grants it. The resource-policy calls say in
    // their own words that they take the caller's own ARNs only.
    let foreign = api
        .principal
        .as_deref()
        .filter(|_| replication_op.is_none() && !op.ends_with("ResourcePolicy"))
        .and_then(|p| crate::auth::foreign(&bytes, &p.user.account_id));
    if let Some(foreign) = foreign
        && let Some(p) = api.principal.clone()
    {
        let action = stream_op.unwrap_or(op);
        let refuse = |arn: &str| {
            crate::metrics::access_denied(operation_label(action));
            ApiError::AccessDenied(format!(
                "User: {} is not authorized to perform: dynamodb:{action} on resource: {arn} because no resource-based policy allows the dynamodb:{action} action",
                p.user.arn
            ))
        };
        match foreign {
            crate::auth::Foreign::Only {
                account,
                region,
                arns,
            } if region == api.cfg.region => {
                api.scope =
                    crate::scope::Scope::of_account(&account, &api.cfg.region, &api.cfg.account_id);
                let acting = p.acting_in(&account);
                // Nothing about a resource (that it exists, its key schema)
                // before its policy grants this caller something.
                for arn in &arns {
                    let resource = crate::auth::Resource::Arn(arn.clone());
                    if !api
                        .resource_policy(&resource)?
                        .is_some_and(|rp| acting.may_be_granted(&rp))
                    {
                        return Err(refuse(arn));
                    }
                }
                api.principal = Some(Arc::new(acting));
            }
            // Another region's table: no table of this server.
            crate::auth::Foreign::Only { arns, .. } => {
                return Err(refuse(arns.first().map_or("", String::as_str)));
            }
            crate::auth::Foreign::Mixed { arn } => {
                return Err(ApiError::validation(format!(
                    "A request that names another account's resource ({arn}) must name all its tables by ARNs of that account: dynaraft serves one account per request"
                )));
            }
        }
    }
    match (stream_op, replication_op, console_op) {
        (Some(op), _, _) => ops::dispatch_streams(api, op, &bytes).await,
        (_, Some(op), _) => ops::replication::dispatch(api, op, &bytes).await,
        // Boxed: the survey's future is large, and every request's
        // future would otherwise carry its size on the worker's stack.
        (_, _, Some(op)) => Box::pin(crate::console::dispatch(api, op, &bytes)).await,
        _ => ops::dispatch(api, op, &bytes).await,
    }
}

/// `action` as the metrics label names it: one of the operations, else
/// `unknown` (a label never takes a client's text).
fn operation_label(action: &str) -> &'static str {
    ops::OPERATIONS
        .iter()
        .chain(ops::STREAM_OPERATIONS)
        .find(|o| **o == action)
        .copied()
        .unwrap_or("unknown")
}

fn has_query_auth(q: Option<&str>) -> bool {
    q.is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("X-Amz-Credential="))
}

/// Length of a request id, in characters (DynamoDB's ids are 52).
pub const REQUEST_ID_CHARS: usize = 52;

fn request_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..REQUEST_ID_CHARS)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

fn json_response(
    status: u16,
    body: &Value,
    accept: Option<Coding>,
    request_id: &str,
) -> Response<Full<Bytes>> {
    // `null` is an operation's way of answering with no body at all.
    let bytes = match body {
        Value::Null => Vec::new(),
        b => serde_json::to_vec(b).unwrap_or_default(),
    };
    let (bytes, coding) = encoding::encode_response(bytes, accept);
    let mut r = respond(status, "application/x-amz-json-1.0", bytes, request_id);
    if let Some(c) = coding
        && let Ok(v) = hyper::header::HeaderValue::from_str(c.name())
    {
        r.headers_mut().insert(hyper::header::CONTENT_ENCODING, v);
    }
    r
}

fn text_response(status: u16, text: &str, request_id: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", text.as_bytes().to_vec(), request_id)
}

/// Every response carries DynamoDB's `x-amzn-RequestId`, `x-amz-crc32`
/// (of the bytes sent) and `Server` headers.
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
        .header("server", "Server")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The CORS answer for a request that carries an `Origin`: any origin is
/// allowed (the server holds no browser credentials); a preflight
/// (OPTIONS) also gets the method and headers it asked for and how long to
/// cache the answer.
struct Cors {
    preflight: Option<(Option<String>, Option<String>)>,
}

impl Cors {
    fn of(method: &Method, headers: &HeaderMap) -> Option<Cors> {
        headers.get(hyper::header::ORIGIN)?;
        let echo = |h: hyper::header::HeaderName| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let preflight = (*method == Method::OPTIONS).then(|| {
            (
                echo(hyper::header::ACCESS_CONTROL_REQUEST_METHOD),
                echo(hyper::header::ACCESS_CONTROL_REQUEST_HEADERS),
            )
        });
        Some(Cors { preflight })
    }

    fn apply(self, h: &mut HeaderMap) {
        use hyper::header::{self as hn, HeaderValue};
        let mut set = |name: hn::HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set(hn::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
        set(hn::ACCESS_CONTROL_EXPOSE_HEADERS, CORS_EXPOSE_HEADERS);
        if let Some((method, headers)) = self.preflight {
            set(hn::ACCESS_CONTROL_MAX_AGE, &CORS_MAX_AGE_S.to_string());
            set(
                hn::ACCESS_CONTROL_ALLOW_METHODS,
                method.as_deref().unwrap_or("POST, GET, OPTIONS"),
            );
            if let Some(hs) = headers {
                set(hn::ACCESS_CONTROL_ALLOW_HEADERS, &hs);
            }
        }
    }
}
