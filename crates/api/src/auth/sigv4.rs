//! AWS Signature Version 4, verified. A client signs a *canonical request*
//! (method, path, query, the headers it names, the SHA-256 of the body)
//! with a key derived from its secret, the date, the region and the
//! service; the server rebuilds the same canonical request from what
//! arrived, derives the same key from the secret it holds, and compares
//! the two signatures in constant time. The arithmetic is well-kept
//! crates': the key derivation is `aws-sigv4`'s (the crate every Rust SDK
//! signs with), the signature's HMAC-SHA256 `hmac`'s and `sha2`'s (the
//! crates `aws-sigv4` computes it with); this module only reads requests
//! and builds the canonical request and the string to sign.
//!
//! Both forms are read: the `Authorization` header
//! (`AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request,
//! SignedHeaders=a;b, Signature=HEX`, parts separated by commas, spaces or
//! both) and the presigned query string (`X-Amz-Algorithm`,
//! `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-SignedHeaders`,
//! `X-Amz-Signature`, optional `X-Amz-Expires`).
//!
//! Checks run in DynamoDB's order, so each failure gets its error: the
//! shape of the signature (IncompleteSignatureException, naming every
//! missing part), the clock ([`SKEW_S`] either way: "Signature expired" or
//! "Signature not yet current"), then the credential (unknown key:
//! UnrecognizedClientException; other region, service or date:
//! InvalidSignatureException), then the signature itself.
//!
//! Caveats: the path is encoded as sent, without removing `.` or `..`
//! segments (every SDK sends `/` to DynamoDB); a presigned request may
//! leave its body unsigned (`UNSIGNED-PAYLOAD`), as AWS allows for query
//! signing; `X-Amz-Security-Token` (temporary credentials) is signed like
//! any header but not checked against anything, since there is no STS.

use crate::error::ApiError;
use hmac::{Hmac, KeyInit, Mac};
use hyper::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// The one signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's date may be from the server's clock, in seconds
/// (AWS: 15 minutes).
pub const SKEW_S: u64 = 15 * 60;
/// Longest validity a presigned request may ask for, in seconds (AWS: 7
/// days).
pub const MAX_PRESIGNED_EXPIRES_S: u64 = 7 * 24 * 3600;
/// The service a credential must be scoped to.
pub const SERVICE: &str = "dynamodb";
/// Length of a SigV4 signature in hex (a SHA-256 HMAC), in characters.
pub const SIGNATURE_HEX_CHARS: usize = 64;
/// The payload hash a presigned request may use instead of the body's.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Characters SigV4 leaves unencoded: `A-Z a-z 0-9 - _ . ~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, keeping `/` in paths.
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Which form carried the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Header,
    /// Presigned, valid for this many seconds from its date.
    Query {
        expires_s: u64,
    },
}

/// A request's signature, parsed but not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key_id: String,
    /// The credential scope's parts: `YYYYMMDD`, region, service.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, `;`-separated, as the client listed them.
    pub signed_headers: String,
    /// Hex, as sent.
    pub signature: String,
    /// The request time (`YYYYMMDDTHHMMSSZ`) and the instant it names.
    pub amz_date: String,
    pub at: SystemTime,
    pub form: Form,
}

/// What a request presents: a signature, or nothing at all
/// (MissingAuthenticationTokenException).
pub fn parse(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Signature>, ApiError> {
    let auth = headers.get(hyper::header::AUTHORIZATION).map(text);
    let presigned = query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("X-Amz-Algorithm"))
    });
    match (auth, presigned) {
        (Some(_), true) => Err(ApiError::InvalidSignature(
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
                .into(),
        )),
        (Some(a), false) if a.starts_with("AWS4-") => from_header(&a, headers).map(Some),
        (_, true) => from_query(&query.map(query_pairs).unwrap_or_default()).map(Some),
        _ => Ok(None),
    }
}

fn from_header(auth: &str, headers: &HeaderMap) -> Result<Signature, ApiError> {
    let (algorithm, rest) = auth.split_once([' ', ',']).unwrap_or((auth, ""));
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    // Split at commas and spaces (ASCII, so every piece is a `str`).
    let pieces = rest
        .as_bytes()
        .split(|b| *b == b',' || *b == b' ')
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter(|p| !p.is_empty());
    for part in pieces {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let date = header(headers, "x-amz-date")
        .map(|d| (d, true))
        .or_else(|| header(headers, "date").map(|d| (d, false)));
    let mut missing = String::new();
    for (part, present) in [
        ("Credential", credential.is_some()),
        ("Signature", signature.is_some()),
        ("SignedHeaders", signed_headers.is_some()),
    ] {
        if !present {
            missing += &format!("Authorization header requires '{part}' parameter. ");
        }
    }
    if date.is_none() {
        missing +=
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ";
    }
    if !missing.is_empty() {
        return Err(ApiError::IncompleteSignature(format!(
            "{missing}Authorization={auth}"
        )));
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some((date, amz))) =
        (credential, signed_headers, signature, date)
    else {
        return Err(ApiError::IncompleteSignature(format!(
            "Authorization={auth}"
        )));
    };
    let (amz_date, at) = if amz {
        parse_amz_date(&date)?
    } else {
        let at = httpdate::parse_http_date(&date).map_err(|_| bad_date(&date))?;
        (format_amz_date(at), at)
    };
    signature_of(
        algorithm,
        credential,
        signed_headers,
        signature,
        amz_date,
        at,
        Form::Header,
    )
}

fn from_query(params: &[(String, String)]) -> Result<Signature, ApiError> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let required = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Date",
    ];
    let missing: String = required
        .iter()
        .filter(|k| get(k).is_none_or(str::is_empty))
        .map(|k| format!("AWS query-string parameters must include '{k}'. "))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::IncompleteSignature(format!(
            "{missing}Re-examine the query-string parameters."
        )));
    }
    let field = |k: &str| get(k).unwrap_or_default();
    let expires_s = match get("X-Amz-Expires") {
        None => MAX_PRESIGNED_EXPIRES_S,
        Some(e) => e
            .parse::<u64>()
            .ok()
            .filter(|e| *e <= MAX_PRESIGNED_EXPIRES_S)
            .ok_or_else(|| {
                ApiError::IncompleteSignature(format!(
                    "X-Amz-Expires must be a number of seconds up to {MAX_PRESIGNED_EXPIRES_S}, got '{e}'."
                ))
            })?,
    };
    let (amz_date, at) = parse_amz_date(field("X-Amz-Date"))?;
    signature_of(
        field("X-Amz-Algorithm"),
        field("X-Amz-Credential"),
        field("X-Amz-SignedHeaders"),
        field("X-Amz-Signature"),
        amz_date,
        at,
        Form::Query { expires_s },
    )
}

fn signature_of(
    algorithm: &str,
    credential: &str,
    signed_headers: &str,
    signature: &str,
    amz_date: String,
    at: SystemTime,
    form: Form,
) -> Result<Signature, ApiError> {
    if algorithm != ALGORITHM {
        return Err(mismatch());
    }
    let mut parts = credential.split('/');
    let (Some(key_id), Some(scope_date), Some(region), Some(service), Some(_terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ApiError::IncompleteSignature(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    };
    Ok(Signature {
        key_id: key_id.to_string(),
        scope_date: scope_date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed_headers.to_ascii_lowercase(),
        signature: signature.to_string(),
        amz_date,
        at,
        form,
    })
}

/// The request's time against the server's clock `now`: within
/// [`SKEW_S`] either way, and for a presigned request not past its expiry.
pub fn check_time(sig: &Signature, now: SystemTime) -> Result<(), ApiError> {
    let skew = Duration::from_secs(SKEW_S);
    // Formatted only for a refusal: most requests are on time.
    let now_text = || format_amz_date(now);
    if sig.at + skew < now {
        let limit = format_amz_date(now - skew);
        return Err(ApiError::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {limit} ({} - 15 min.)",
            sig.amz_date,
            now_text()
        )));
    }
    if sig.at > now + skew {
        let limit = format_amz_date(now + skew);
        return Err(ApiError::InvalidSignature(format!(
            "Signature not yet current: {} is still later than {limit} ({} + 15 min.)",
            sig.amz_date,
            now_text()
        )));
    }
    if let Form::Query { expires_s } = sig.form
        && sig.at + Duration::from_secs(expires_s) < now
    {
        return Err(ApiError::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {} ({} - {expires_s} sec.)",
            sig.amz_date,
            format_amz_date(now - Duration::from_secs(expires_s)),
            now_text()
        )));
    }
    Ok(())
}

/// The credential's scope against this server's `region`: the service must
/// be DynamoDB's and the date the request's own.
pub fn check_scope(sig: &Signature, region: &str) -> Result<(), ApiError> {
    if sig.region != region {
        return Err(ApiError::InvalidSignature(
            "Credential should be scoped to a valid region. ".into(),
        ));
    }
    if sig.service != SERVICE {
        return Err(ApiError::InvalidSignature(format!(
            "Credential should be scoped to correct service: '{SERVICE}'. "
        )));
    }
    let day = sig.amz_date.get(..8).unwrap_or_default();
    if sig.scope_date != day {
        return Err(ApiError::InvalidSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}', from '{}'.",
            sig.scope_date, sig.amz_date
        )));
    }
    Ok(())
}

/// The parts of the request the signature covers.
#[derive(Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The body as sent (before any content decoding).
    pub body: &'a [u8],
}

/// Whether `sig` is the signature of `req` under `signing_key` (derived
/// from the secret for the signature's date, region and service).
///
/// The canonical request and the string to sign are built as bytes in one
/// buffer each and hashed at once, and the signature sent is decoded to
/// bytes and compared with [`Mac::verify_slice`] (constant time).
pub fn verify(sig: &Signature, req: &Signed, signing_key: &[u8]) -> bool {
    let Some(given) = decode_hex_32(&sig.signature) else {
        return false;
    };
    let body_hash = hex_32(&Sha256::digest(req.body).into());
    if matches(sig, req, signing_key, &body_hash, &given) {
        return true;
    }
    matches!(sig.form, Form::Query { .. })
        && matches(sig, req, signing_key, UNSIGNED_PAYLOAD.as_bytes(), &given)
}

fn matches(
    sig: &Signature,
    req: &Signed,
    signing_key: &[u8],
    payload_hash: &[u8],
    given: &[u8; 32],
) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_key) else {
        return false;
    };
    mac.update(&string_to_sign(sig, req, payload_hash));
    mac.verify_slice(given).is_ok()
}

/// Bytes reserved for a canonical request or a string to sign: an SDK's
/// request fits, so neither grows.
const SIGNING_BUFFER_BYTES: usize = 1024;

/// SigV4's string to sign: algorithm, request time, credential scope and
/// the hash of the canonical request.
pub fn string_to_sign(sig: &Signature, req: &Signed, payload_hash: &[u8]) -> Vec<u8> {
    let canonical = hex_32(&Sha256::digest(canonical_request(sig, req, payload_hash)).into());
    let mut out = Vec::with_capacity(SIGNING_BUFFER_BYTES);
    for part in [
        ALGORITHM.as_bytes(),
        b"\n",
        sig.amz_date.as_bytes(),
        b"\n",
        sig.scope_date.as_bytes(),
        b"/",
        sig.region.as_bytes(),
        b"/",
        sig.service.as_bytes(),
        b"/aws4_request\n",
        &canonical,
    ] {
        out.extend_from_slice(part);
    }
    out
}

/// SigV4's canonical request.
fn canonical_request(sig: &Signature, req: &Signed, payload_hash: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_BUFFER_BYTES);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b'\n');
    let path = if req.path.is_empty() { "/" } else { req.path };
    for piece in utf8_percent_encode(path, PATH) {
        out.extend_from_slice(piece.as_bytes());
    }
    out.push(b'\n');
    if let Some(q) = req.query.filter(|q| !q.is_empty()) {
        let mut query: Vec<(String, String)> = query_pairs(q)
            .into_iter()
            .filter(|(k, _)| k != "X-Amz-Signature")
            .map(|(k, v)| (encode(&k), encode(&v)))
            .collect();
        query.sort();
        for (i, (k, v)) in query.iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
    out.push(b'\n');
    for name in sig.signed_headers.split(';') {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_collapsed(&mut out, v.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(sig.signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash);
    out
}

/// Appends a header value as SigV4 signs it: trimmed, each run of spaces
/// made one.
fn push_collapsed(out: &mut Vec<u8>, v: &[u8]) {
    let words = v.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The query string's pairs, percent-decoded (a pair without `=` has an
/// empty value).
fn query_pairs(q: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| text(v).trim().to_string())
}

/// A header's value as text: as sent when it is visible ASCII, as every
/// SDK sends these, else with invalid UTF-8 replaced.
fn text(v: &hyper::header::HeaderValue) -> std::borrow::Cow<'_, str> {
    match v.to_str() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

/// A SHA-256 digest in lower-case hex.
fn hex_32(digest: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(digest) {
        // Both indexes are below 16.
        pair.copy_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
    out
}

/// A signature as sent (64 hex digits, either case) as its 32 bytes; `None`
/// for anything else, which matches no signature.
fn decode_hex_32(hex: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = hex.as_bytes();
    if bytes.len() != SIGNATURE_HEX_CHARS {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *o = (digit(*hi)? << 4) | digit(*lo)?;
    }
    Some(out)
}

/// An ISO-8601 basic-format time (`20261203T010203Z`) and its instant.
fn parse_amz_date(s: &str) -> Result<(String, SystemTime), ApiError> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let parsed = (|| {
        if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
            return None;
        }
        let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
        let date = time::Date::from_calendar_date(
            i32::try_from(digits(0..4)?).ok()?,
            month,
            u8::try_from(digits(6..8)?).ok()?,
        )
        .ok()?;
        let hms = |r| digits(r).and_then(|n| u8::try_from(n).ok());
        let t = time::Time::from_hms(hms(9..11)?, hms(11..13)?, hms(13..15)?).ok()?;
        Some(SystemTime::from(
            time::PrimitiveDateTime::new(date, t).assume_utc(),
        ))
    })();
    parsed
        .map(|at| (s.to_string(), at))
        .ok_or_else(|| bad_date(s))
}

fn bad_date(s: &str) -> ApiError {
    ApiError::IncompleteSignature(format!(
        "Date must be in ISO-8601 'basic format'. Got '{s}'. See http://en.wikipedia.org/wiki/ISO_8601"
    ))
}

/// `at` as SigV4 writes times: `YYYYMMDDTHHMMSSZ`, UTC.
pub fn format_amz_date(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The signature mismatch error, AWS's words.
pub fn mismatch() -> ApiError {
    ApiError::InvalidSignature(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn header_parts_may_be_separated_by_commas_spaces_or_both() {
        let date = ("x-amz-date", "20261203T010203Z");
        for auth in [
            "AWS4-HMAC-SHA256 Credential=K/20261203/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=K/20261203/us-east-1/dynamodb/aws4_request,SignedHeaders=host;x-amz-date,Signature=ab",
            "AWS4-HMAC-SHA256 Credential=K/20261203/us-east-1/dynamodb/aws4_request SignedHeaders=host;x-amz-date Signature=ab",
        ] {
            let sig = parse(&headers(&[("authorization", auth), date]), None)
                .unwrap()
                .unwrap();
            assert_eq!(
                (
                    sig.key_id.as_str(),
                    sig.region.as_str(),
                    sig.signed_headers.as_str(),
                    sig.signature.as_str()
                ),
                ("K", "us-east-1", "host;x-amz-date", "ab")
            );
        }
    }

    #[test]
    fn missing_parts_are_named_as_dynamodb_names_them() {
        let e = parse(
            &headers(&[
                ("authorization", "AWS4- Signature=b, Credential=a"),
                ("date", "a"),
            ]),
            None,
        );
        assert_eq!(
            e.unwrap_err(),
            ApiError::IncompleteSignature(
                "Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4- Signature=b, Credential=a".into()
            )
        );
        assert_eq!(
            parse(&headers(&[("authorization", "AWS4")]), None).unwrap(),
            None
        );
        let both = parse(&headers(&[("authorization", "X")]), Some("X-Amz-Algorithm"));
        assert!(matches!(both, Err(ApiError::InvalidSignature(m)) if m.starts_with("Found both")));
        let q = parse(
            &HeaderMap::new(),
            Some("X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-Date=d"),
        );
        assert_eq!(
            q.unwrap_err(),
            ApiError::IncompleteSignature(
                "AWS query-string parameters must include 'X-Amz-SignedHeaders'. Re-examine the query-string parameters.".into()
            )
        );
        let bad_date = parse(
            &headers(&[
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=K/d/r/s/aws4_request, SignedHeaders=host, Signature=ab",
                ),
                ("x-amz-date", "2026-12-03"),
            ]),
            None,
        );
        assert!(
            matches!(bad_date, Err(ApiError::IncompleteSignature(m)) if m.contains("ISO-8601"))
        );
    }

    #[test]
    fn the_clock_window_is_fifteen_minutes_either_way() {
        let sig = |date: &str| {
            let auth = "AWS4-HMAC-SHA256 Credential=K/20261203/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=ab";
            parse(
                &headers(&[("authorization", auth), ("x-amz-date", date)]),
                None,
            )
            .unwrap()
            .unwrap()
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_259_723); // 20261203T010203Z
        assert_eq!(format_amz_date(now), "20261203T010203Z");
        assert!(check_time(&sig("20261203T004703Z"), now).is_ok());
        assert_eq!(
            check_time(&sig("20261203T004702Z"), now).unwrap_err(),
            ApiError::InvalidSignature(
                "Signature expired: 20261203T004702Z is now earlier than 20261203T004703Z (20261203T010203Z - 15 min.)".into()
            )
        );
        assert!(check_time(&sig("20261203T011703Z"), now).is_ok());
        assert_eq!(
            check_time(&sig("20261203T011704Z"), now).unwrap_err(),
            ApiError::InvalidSignature(
                "Signature not yet current: 20261203T011704Z is still later than 20261203T011703Z (20261203T010203Z + 15 min.)".into()
            )
        );
    }

    /// `pairs` and the headers aws-sigv4 (the Rust SDK's signer) adds to
    /// sign them, `uri` and `body` with `secret` at `at`.
    fn signed_by_sdk(
        uri: &str,
        pairs: &[(&str, &str)],
        body: &[u8],
        secret: &str,
        at: SystemTime,
    ) -> HeaderMap {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new("K", secret, None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(SERVICE)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            "POST",
            uri,
            pairs.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        all.extend(instructions.headers());
        headers(&all)
    }

    #[test]
    fn what_the_sdks_signer_signs_verifies_and_any_change_does_not() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_259_723);
        let pairs = [
            ("host", "127.0.0.1:8000"),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.GetItem"),
            // Trimmed and its runs of spaces made one by both sides.
            (
                "x-amz-user-agent",
                "  aws-sdk-rust/1.0   os/linux  lang/rust ",
            ),
        ];
        let body = br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#;
        let h = signed_by_sdk(
            "http://127.0.0.1:8000/?b=2&a=x%20y",
            &pairs,
            body,
            "s3cret",
            at,
        );
        let sig = parse(&h, Some("b=2&a=x%20y")).unwrap().unwrap();
        let key = aws_sigv4::sign::v4::generate_signing_key("s3cret", at, "us-east-1", SERVICE);
        let req = Signed {
            method: "POST",
            path: "/",
            query: Some("b=2&a=x%20y"),
            headers: &h,
            body,
        };
        assert!(verify(&sig, &req, key.as_ref()));
        let other_key =
            aws_sigv4::sign::v4::generate_signing_key("other", at, "us-east-1", SERVICE);
        assert!(!verify(&sig, &req, other_key.as_ref()));
        let changed_body = br#"{"TableName":"t","Key":{"pk":{"S":"b"}}}"#;
        assert!(!verify(
            &sig,
            &Signed {
                body: changed_body,
                ..req
            },
            key.as_ref()
        ));
        assert!(!verify(
            &sig,
            &Signed {
                method: "PUT",
                ..req
            },
            key.as_ref()
        ));
        assert!(!verify(&sig, &Signed { path: "/x", ..req }, key.as_ref()));
        assert!(!verify(
            &sig,
            &Signed {
                query: Some("b=2&a=x"),
                ..req
            },
            key.as_ref()
        ));
        let mut changed = h.clone();
        changed.insert("x-amz-target", "DynamoDB_20120810.PutItem".parse().unwrap());
        assert!(!verify(
            &sig,
            &Signed {
                headers: &changed,
                ..req
            },
            key.as_ref()
        ));
        // The same request, its signature's hex in upper case: still its own.
        let upper = Signature {
            signature: sig.signature.to_ascii_uppercase(),
            ..sig.clone()
        };
        assert!(verify(&upper, &req, key.as_ref()));
        for bad in [
            "",
            "ab",
            &sig.signature[1..],
            &format!("{}g", &sig.signature[1..]),
        ] {
            let wrong = Signature {
                signature: bad.to_string(),
                ..sig.clone()
            };
            assert!(!verify(&wrong, &req, key.as_ref()), "{bad:?}");
        }
    }
}
