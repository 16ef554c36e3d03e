//! The web console: a page at `/console` (on the API's port, embedded and
//! router alike; off with `--no-console`) showing tables with their keys,
//! indexes, item counts and sizes; an item browser (scan and query, page by
//! page); forms to create and delete tables and add global indexes; and
//! the cluster: zones, nodes, partitions with their hash ranges, leaders,
//! replica and index lag, replication to other regions, and request rates
//! and latencies from `/metrics`.
//!
//! The page is a client of the API like any SDK: its script signs every
//! request with SigV4 (WebCrypto) for the credentials its user gives, so
//! authentication and authorization are the API's own, and the server
//! keeps no session. The one thing the DynamoDB API does not say, the
//! cluster's layout, is [`CONSOLE_TARGET_PREFIX`]`DescribeCluster`:
//! authenticated like every request, allowed to whoever may `ListTables`,
//! showing only the tables the caller may `DescribeTable`, and refused to
//! cross-site browser requests. Everything the script renders from data
//! goes in as text, never markup, and the pages' Content-Security-Policy
//! allows only the console's own script.

use crate::auth::{Access, Resource};
use crate::error::ApiError;
use crate::{Api, ApiConfig};
use hyper::header::HeaderMap;
use serde_json::{Value, json};

/// The `X-Amz-Target` prefix of the console's own operations.
pub const CONSOLE_TARGET_PREFIX: &str = "DynaraftConsole_20261204.";
/// The console's own operations.
pub const CONSOLE_OPERATIONS: &[&str] = &["DescribeCluster"];

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Headers of every console page and asset: only the console's own
/// script, style and API calls, never framed, no referrer.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// The console's page or asset at `path` (content type and body), or
/// `None` for a path that is not the console's; `authenticating` says
/// whether requests must carry real credentials (asked for config.json
/// only).
pub fn asset(
    path: &str,
    cfg: &ApiConfig,
    authenticating: impl FnOnce() -> bool,
) -> Option<(&'static str, Vec<u8>)> {
    Some(match path {
        "/console" | "/console/" => ("text/html; charset=utf-8", INDEX_HTML.as_bytes().to_vec()),
        "/console/app.js" => ("text/javascript; charset=utf-8", APP_JS.as_bytes().to_vec()),
        "/console/app.css" => ("text/css; charset=utf-8", APP_CSS.as_bytes().to_vec()),
        // What the sign-in form needs to know: the region requests are
        // signed for, and whether credentials must be real ones.
        "/console/config.json" => {
            let body = json!({
                "region": cfg.region,
                "authenticated": authenticating(),
                "sharedDb": cfg.shared_db,
            });
            ("application/json", body.to_string().into_bytes())
        }
        _ => return None,
    })
}

/// Whether a request to a console operation may come from where it
/// says: a browser's cross-site request (`Sec-Fetch-Site`, or an `Origin`
/// naming another host than `Host`) is refused; clients that are no
/// browser send neither header.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match text("origin") {
        None => true,
        Some(origin) => {
            let authority = origin
                .split_once("://")
                .map_or(origin, |(_, rest)| rest)
                .trim_end_matches('/');
            text("host").is_some_and(|host| host.eq_ignore_ascii_case(authority))
        }
    }
}

/// Runs console operation `op`.
pub async fn dispatch(api: &Api, op: &str, _body: &[u8]) -> Result<Value, ApiError> {
    match op {
        "DescribeCluster" => describe_cluster(api).await,
        other => Err(crate::ops::unknown_operation(other)),
    }
}

/// Zones, nodes, the partitions of the tables the caller may describe (with
/// ranges, replicas, leaders, lag, sizes and load) and their replication to
/// other regions: `dynaraft admin`'s view, through the API.
async fn describe_cluster(api: &Api) -> Result<Value, ApiError> {
    api.authorize(|| Access::new("ListTables", Resource::Any))?;
    let survey = api.router.survey(true).await;
    // Catalog name -> the name the caller knows the table by.
    let visible: std::collections::BTreeMap<String, String> = survey
        .tables
        .iter()
        .filter(|t| api.scope.owns(&t.name))
        .map(|t| {
            let name = t.name.rsplit('/').next().unwrap_or(&t.name).to_string();
            (t.name.clone(), name)
        })
        .filter(|(_, name)| api.allows(Access::table("DescribeTable", name)))
        .collect();
    // Rows of visible tables only, under the names the caller knows.
    let shown = |table: &mut String| match visible.get(table.as_str()) {
        Some(name) => {
            table.clone_from(name);
            true
        }
        None => false,
    };
    let mut partitions = survey.partition_rows();
    partitions.retain_mut(|p| shown(&mut p.table));
    let mut replication = survey.replication_rows();
    replication.retain_mut(|r| shown(&mut r.table));
    Ok(json!({
        "catalog_version": survey.version,
        "region": api.cfg.region,
        "nodes": survey.node_rows(),
        "partitions": partitions,
        "replication": replication,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, hyper::header::HeaderValue::from_static(v));
        }
        h
    }

    /// Cross-site browser requests are refused; same-origin ones and
    /// clients that are no browser are served.
    #[test]
    fn only_same_origin_requests_reach_console_operations() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8000")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://evil.example"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("sec-fetch-site", "same-site"),
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:8000"
        )])));
    }

    /// Every asset the page names is served, and nothing else.
    #[test]
    fn the_page_names_only_assets_that_are_served() {
        let cfg = ApiConfig::default();
        for path in [
            "/console",
            "/console/app.js",
            "/console/app.css",
            "/console/config.json",
        ] {
            assert!(asset(path, &cfg, || false).is_some(), "{path}");
        }
        assert!(asset("/console/../metrics", &cfg, || false).is_none());
        for src in ["/console/app.js", "/console/app.css"] {
            assert!(INDEX_HTML.contains(src), "index.html does not load {src}");
        }
    }
}
