//! Whose tables a request sees. DynamoDB Local keeps a separate database
//! per access key id and region unless started with `-sharedDb`; dynaraft
//! does the same when [`ApiConfig::shared_db`](crate::ApiConfig) is off:
//! a table is kept in the catalog under `ACCESS_KEY/REGION/NAME` and the
//! request sees it as `NAME`. Table names cannot hold `/`, so the catalog
//! name of a scoped table never meets a shared one, and the name a client
//! sees is always the catalog name's last segment.

use hyper::HeaderMap;
use std::sync::Arc;

/// The access key id and region a request is signed for, when its tables
/// are kept apart from other keys' and regions'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `ACCESS_KEY/REGION/`, prefixed to table names; `None` when data is
    /// shared.
    prefix: Option<Arc<str>>,
    /// The credential scope's region (what table ARNs carry when scoped).
    region: Option<Arc<str>>,
    /// The authenticated principal's account, when requests are
    /// authenticated (what table ARNs carry).
    account: Option<Arc<str>>,
}

impl Scope {
    /// The scope of a request with these headers and query string; `shared`
    /// gives every request the one shared scope.
    pub fn of(shared: bool, headers: &HeaderMap, query: Option<&str>) -> Scope {
        if shared {
            return Scope::default();
        }
        let Some((key, region)) = credential(headers, query) else {
            return Scope::default();
        };
        Scope {
            prefix: Some(format!("{key}/{region}/").into()),
            region: Some(region.into()),
            account: None,
        }
    }

    /// The scope of an authenticated principal of `account`: the tables of
    /// the server's own account `home` are the unscoped ones (so a server
    /// that starts authenticating keeps its tables), every other account's
    /// are kept under `ACCOUNT/REGION/`.
    pub fn of_account(account: &str, region: &str, home: &str) -> Scope {
        let prefix = (account != home).then(|| format!("{account}/{region}/").into());
        Scope {
            prefix,
            region: Some(region.into()),
            account: Some(account.into()),
        }
    }

    /// The catalog name of the table a request calls `name` (borrowed
    /// when data is shared: every item operation looks its table up).
    pub fn table_key<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.prefix {
            Some(p) => format!("{p}{name}").into(),
            None => name.into(),
        }
    }

    /// Whether this scope sees the one shared set of tables (not a
    /// per-key database, nor another account's).
    pub fn is_shared(&self) -> bool {
        self.prefix.is_none()
    }

    /// Whether the catalog name `key` belongs to this scope.
    pub fn owns(&self, key: &str) -> bool {
        match &self.prefix {
            Some(p) => key.starts_with(&**p),
            None => !key.contains('/'),
        }
    }

    /// The region table ARNs name: the request's when scoped.
    pub fn region<'a>(&'a self, configured: &'a str) -> &'a str {
        self.region.as_deref().unwrap_or(configured)
    }

    /// The account table ARNs name: the principal's when authenticated.
    pub fn account<'a>(&'a self, configured: &'a str) -> &'a str {
        self.account.as_deref().unwrap_or(configured)
    }
}

/// The name a client sees for the catalog name `key`.
pub fn display_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The access key id a request names in its signature (not verified).
pub fn access_key_id(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    credential(headers, query).map(|(key, _)| key)
}

/// (access key id, region) of the SigV4 credential in the Authorization
/// header (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`) or in a
/// presigned query string (`X-Amz-Credential=KEY%2FDATE%2FREGION...`).
fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<(String, String)> {
    let from_header = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split("Credential=").nth(1))
        .map(|c| c.split([',', ' ']).next().unwrap_or(c).to_string());
    let from_query = || {
        query?
            .split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
            .map(|c| c.replace("%2F", "/").replace("%2f", "/"))
    };
    let cred = from_header.or_else(from_query)?;
    let mut parts = cred.split('/');
    let key = parts.next().filter(|k| !k.is_empty())?;
    let region = parts.nth(1).filter(|r| !r.is_empty())?;
    Some((key.to_string(), region.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(hyper::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn tables_are_kept_per_access_key_and_region_unless_shared() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20261202/eu-west-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0";
        let s = Scope::of(false, &headers(auth), None);
        assert_eq!(s.table_key("t"), "AKID/eu-west-1/t");
        assert!(s.owns("AKID/eu-west-1/t"));
        assert!(!s.owns("OTHER/eu-west-1/t") && !s.owns("t"));
        assert_eq!(s.region("us-east-1"), "eu-west-1");
        assert_eq!(display_name("AKID/eu-west-1/t"), "t");
        let shared = Scope::of(true, &headers(auth), None);
        assert_eq!(shared.table_key("t"), "t");
        assert!(shared.owns("t") && !shared.owns("AKID/eu-west-1/t"));
        let presigned = Scope::of(
            false,
            &HeaderMap::new(),
            Some(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F20261202%2Fap-south-1%2Fdynamodb%2Faws4_request",
            ),
        );
        assert_eq!(presigned.table_key("t"), "K/ap-south-1/t");
        let home = Scope::of_account("000000000000", "us-east-1", "000000000000");
        assert_eq!(home.table_key("t"), "t");
        assert_eq!(home.account("x"), "000000000000");
        let other = Scope::of_account("111122223333", "us-east-1", "000000000000");
        assert_eq!(other.table_key("t"), "111122223333/us-east-1/t");
        assert!(other.owns("111122223333/us-east-1/t") && !other.owns("t"));
    }
}
