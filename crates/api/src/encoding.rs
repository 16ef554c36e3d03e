//! Compressed bodies, both ways, as DynamoDB handles them.
//!
//! Requests: `Content-Encoding: gzip` (one member or several concatenated)
//! and `deflate` (zlib) bodies are decompressed up to
//! [`MAX_DECOMPRESSED_BYTES`]; `identity` is plain. Anything else, or a
//! body that does not decode, is answered with HTTP 500, which is what
//! DynamoDB answers (ScyllaDB's Alternator suite checks this against it).
//!
//! Responses: compressed with gzip or deflate when the first
//! `Accept-Encoding` header asks for one and the body is at least
//! [`RESPONSE_COMPRESSION_THRESHOLD_BYTES`]. The negotiation follows
//! DynamoDB's reading of the header, quirks included: codings match
//! case-insensitively and only as whole tokens; an entry's quality is the
//! first `q=` in its parameters (clamped to 0..1, unparsable meaning 1); `*`
//! stands for the codings not named; `identity` is ignored; of equal
//! qualities a named coding beats `*`, the first named wins, and gzip wins
//! under `*`.

use crate::error::ApiError;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use std::io::{Read, Write};

/// Largest request body after decompression, in bytes.
pub const MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;
/// Smallest response body compressed when the client accepts it, in bytes.
pub const RESPONSE_COMPRESSION_THRESHOLD_BYTES: usize = 4096;

/// A content coding this server reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

fn undecodable(what: &str) -> ApiError {
    ApiError::InternalServerError(format!("Unable to decode the request body ({what})"))
}

/// The request body as sent, decoded per its `Content-Encoding`.
pub fn decode_request(encoding: Option<&HeaderValue>, body: Bytes) -> Result<Bytes, ApiError> {
    let Some(enc) = encoding else {
        return Ok(body);
    };
    let name = enc.to_str().unwrap_or("").trim().to_ascii_lowercase();
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    let mut out = Vec::new();
    let read = match name.as_str() {
        "" | "identity" => return Ok(body),
        "gzip" if !body.is_empty() => flate2::read::MultiGzDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut out),
        "deflate" if !body.is_empty() => flate2::read::ZlibDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut out),
        "gzip" | "deflate" => return Err(undecodable("empty")),
        other => {
            return Err(undecodable(&format!(
                "unsupported Content-Encoding {other}"
            )));
        }
    };
    read.map_err(|_| undecodable(&name))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(ApiError::RequestTooLarge);
    }
    Ok(Bytes::from(out))
}

/// The coding the client's (first) Accept-Encoding header asks for, if any.
pub fn accepted(headers: &HeaderMap) -> Option<Coding> {
    let header = headers.get(hyper::header::ACCEPT_ENCODING)?.to_str().ok()?;
    negotiate(header)
}

/// One coding's standing in an Accept-Encoding header: its quality and
/// the position of the entry that named it (`None`: only through `*`).
#[derive(Clone, Copy)]
struct Standing {
    quality: f64,
    named_at: Option<usize>,
}

/// DynamoDB's choice of response coding for an Accept-Encoding value.
pub fn negotiate(header: &str) -> Option<Coding> {
    let mut gzip: Option<Standing> = None;
    let mut deflate: Option<Standing> = None;
    let mut star: Option<f64> = None;
    for (pos, entry) in header.split(',').enumerate() {
        let (coding, params) = match entry.split_once(';') {
            Some((c, p)) => (c.trim(), Some(p)),
            None => (entry.trim(), None),
        };
        let quality = params.map_or(1.0, quality_of);
        let slot = match coding.to_ascii_lowercase().as_str() {
            "gzip" => &mut gzip,
            "deflate" => &mut deflate,
            "*" => {
                star = Some(star.map_or(quality, |q: f64| q.max(quality)));
                continue;
            }
            _ => continue,
        };
        let s = slot.get_or_insert(Standing {
            quality,
            named_at: Some(pos),
        });
        s.quality = s.quality.max(quality);
    }
    let through_star = |s: Option<Standing>| {
        s.or(star.map(|quality| Standing {
            quality,
            named_at: None,
        }))
    };
    // Of two equal standings `max_by` keeps the later: gzip goes last so
    // that it wins when both come only through `*`.
    let candidates = [
        (Coding::Deflate, through_star(deflate)),
        (Coding::Gzip, through_star(gzip)),
    ];
    candidates
        .into_iter()
        .filter_map(|(c, s)| s.filter(|s| s.quality > 0.0).map(|s| (c, s)))
        .max_by(|(_, a), (_, b)| {
            a.quality
                .total_cmp(&b.quality)
                // Named beats `*`; the earlier named entry wins.
                .then_with(|| match (a.named_at, b.named_at) {
                    (Some(x), Some(y)) => y.cmp(&x),
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (None, None) => std::cmp::Ordering::Equal,
                })
        })
        .map(|(c, _)| c)
}

/// An entry's quality: the value of the first `q=` in its parameters.
fn quality_of(params: &str) -> f64 {
    let Some(at) = params.find("q=") else {
        return 1.0;
    };
    let value = params[at + 2..].split(';').next().unwrap_or("").trim();
    match value.parse::<f64>() {
        Ok(q) if q.is_finite() => q.clamp(0.0, 1.0),
        _ => 1.0,
    }
}

/// The response body, compressed with `coding` when it is large enough.
pub fn encode_response(body: Vec<u8>, coding: Option<Coding>) -> (Vec<u8>, Option<Coding>) {
    let Some(c) = coding.filter(|_| body.len() >= RESPONSE_COMPRESSION_THRESHOLD_BYTES) else {
        return (body, None);
    };
    let level = flate2::Compression::default();
    let compressed = match c {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
            e.write_all(&body).and_then(|()| e.finish())
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::with_capacity(body.len() / 4), level);
            e.write_all(&body).and_then(|()| e.finish())
        }
    };
    match compressed {
        Ok(bytes) => (bytes, Some(c)),
        // Writing into memory does not fail; if it did, send it plain.
        Err(_) => (body, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_dynamodb() {
        let cases: &[(&str, Option<Coding>)] = &[
            ("identity", None),
            ("", None),
            ("br", None),
            ("x-gzip", None),
            ("gzip, deflate", Some(Coding::Gzip)),
            ("br, identity, deflate, gzip", Some(Coding::Deflate)),
            ("GZIP, identity", Some(Coding::Gzip)),
            ("dog, gzip ,, cat", Some(Coding::Gzip)),
            ("gzip;q=0.8, deflate;q=0.5", Some(Coding::Gzip)),
            (
                "br, gzip;q=0, deflate; q = 0.5 , identity;q=0",
                Some(Coding::Deflate),
            ),
            ("*", Some(Coding::Gzip)),
            ("*, deflate;q=0.5", Some(Coding::Gzip)),
            ("*, deflate", Some(Coding::Deflate)),
            ("*, gzip;q=0.5", Some(Coding::Deflate)),
            ("gzip ;q=0", None),
            ("*;q=0", None),
            ("*;q=0.5,identity", Some(Coding::Gzip)),
            ("br;q=0.8,identity;q=0.5,*;q=0", None),
            ("\"gzip\"", None),
            ("gzip br", None),
            ("gzip:q=1", None),
            ("deflate;q=0.5, gzip;q=31", Some(Coding::Gzip)),
            ("gzip;q=31,deflate;q=51", Some(Coding::Gzip)),
            ("deflate;q=0.5, gzip;q=1;q=0.2", Some(Coding::Gzip)),
            ("deflate;q=0.5,gzip;q=0.", Some(Coding::Deflate)),
            ("deflate;q=0.5,gzip;q=0.x", Some(Coding::Gzip)),
            ("deflate;q=-0.5,gzip;q=0.2", Some(Coding::Gzip)),
            ("gzip;q= 0;q=1", None),
            ("gzip;q =0;q=1", Some(Coding::Gzip)),
            ("gzip;nq=0;q=1", None),
            ("gzip;q=0, gzip;q=1, gzip;q=0", Some(Coding::Gzip)),
            ("br,identity;q=0.5,gzip;q=0.0001", Some(Coding::Gzip)),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate(header), *want, "{header}");
        }
    }

    #[test]
    fn request_bodies_decode_or_fail_as_dynamodb() {
        let text = br#"{"TableName": "t"}"#;
        let mut gz = Vec::new();
        for part in [&text[..5], &text[5..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let gzip = HeaderValue::from_static("gzip");
        let got = decode_request(Some(&gzip), Bytes::from(gz)).unwrap();
        assert_eq!(&got[..], &text[..]);
        let bad = decode_request(Some(&gzip), Bytes::from_static(text)).unwrap_err();
        assert!(matches!(bad, ApiError::InternalServerError(_)));
        let garbage = HeaderValue::from_static("garbage");
        assert!(decode_request(Some(&garbage), Bytes::from_static(text)).is_err());
        let deflate = HeaderValue::from_static("deflate");
        assert!(decode_request(Some(&deflate), Bytes::new()).is_err());
    }
}
