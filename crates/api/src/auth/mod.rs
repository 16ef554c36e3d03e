//! Who may do what: SigV4 authentication ([`sigv4`]) of every request
//! against the users of an auth file, and IAM-style authorization
//! ([`policy`]) of what each request asks for ([`Access`]).
//!
//! The life of an authenticated GetItem:
//! 1. `http::process` reads the body and calls [`Auth::authenticate`]:
//!    [`sigv4::parse`] reads the signature, [`sigv4::check_time`] the clock,
//!    the access key id finds its [`User`] (else
//!    UnrecognizedClientException), [`sigv4::check_scope`] the region,
//!    service and date, and [`sigv4::verify`] the signature, with the
//!    signing key [`Auth::signing_key`] derived once per key, day and region.
//! 2. The request is served as that [`Principal`]: its tables are its
//!    account's ([`crate::scope::Scope::of_account`]).
//! 3. The operation parses and validates its input, then calls
//!    [`crate::Api::authorize`] with the [`Access`] it needs (action,
//!    table or index, the partition-key values and attribute names it
//!    touches, Select, ReturnValues) before it reads or writes anything;
//!    [`policy::evaluate`] decides over the user's policies, and a denial
//!    is AccessDeniedException with IAM's message.
//!
//! Without an auth file ([`crate::ApiConfig::auth`] is `None`) requests
//! must carry a signature but it is not checked, like DynamoDB Local.
//!
//! The table's (or stream's) resource-based policy, when it has one
//! (PutResourcePolicy), is evaluated beside the user's policies: a
//! statement of it applies to the callers its Principal names.
//!
//! Caveats: checks run after a request's own validation, so a principal
//! denied everything still sees ValidationException for malformed input;
//! there are no groups, roles or temporary credentials (STS); a request
//! acts in one account (its own tables, or another account's named by
//! ARN, [`foreign`]), never both.

pub mod policy;
pub mod sigv4;

use crate::error::ApiError;
use arc_swap::ArcSwap;
use dynaraft_model::{AttributeValue, Item, KeySchema};
use dynaraft_storage::UserRecord;
use policy::{Decision, Policy};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Signing keys kept per user: one per day, and requests signed just
/// before midnight still arrive after it.
pub const SIGNING_KEYS_PER_USER: usize = 2;
/// What every DynamoDB action is named with in policies.
pub const ACTION_PREFIX: &str = "dynamodb:";
/// Longest access key id accepted, in characters (IAM's limit).
pub const MAX_ACCESS_KEY_ID_CHARS: usize = 128;

/// One user of the auth file.
pub struct User {
    pub access_key_id: String,
    secret: String,
    pub account_id: String,
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    pub arn: String,
    pub name: String,
    pub policies: Vec<Policy>,
    /// Signing keys derived so far, by day (`YYYYMMDD`), newest last.
    signing_keys: Mutex<Vec<(String, [u8; 32])>>,
    /// The tables this user's requests see, made on first use.
    pub scope: std::sync::OnceLock<crate::scope::Scope>,
}

/// The users requests may authenticate as, and the signing keys derived
/// for them so far.
pub struct Auth {
    /// The auth file's users, as last loaded.
    users: ArcSwap<HashMap<String, Arc<User>>>,
    /// The auth file and the modification time it was last read at, so a
    /// changed file is loaded again ([`Auth::watch`]).
    file: Option<(std::path::PathBuf, crate::reload::Watched)>,
    /// Every request is authenticated, even before the control plane keeps
    /// any user (an auth file was given, or a router's default).
    always: bool,
    /// Region every credential must be scoped to.
    region: Arc<str>,
    /// The control plane's users (`dynaraft admin put-user`), as last built
    /// from the catalog.
    kept: ArcSwap<KeptUsers>,
}

/// Users kept by the control plane, built from the catalog's records.
#[derive(Default)]
struct KeptUsers {
    source: Arc<BTreeMap<String, UserRecord>>,
    users: HashMap<String, Arc<User>>,
}

/// The control plane's users as the catalog carries them.
pub type UserRecords = Arc<BTreeMap<String, UserRecord>>;

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never the secrets.
        write!(
            f,
            "Auth {{ users: {}, region: {} }}",
            self.users.load().len(),
            self.region
        )
    }
}

/// The auth file: `{"users": [{"access_key_id", "secret_access_key",
/// "account_id", "name"?, "policies": [<IAM policy documents>]}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawUser")]
struct UserEntry(User);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    access_key_id: String,
    secret_access_key: String,
    account_id: String,
    name: Option<String>,
    #[serde(default)]
    policies: Vec<Policy>,
}

impl TryFrom<RawUser> for UserEntry {
    type Error = String;

    fn try_from(raw: RawUser) -> Result<UserEntry, String> {
        let id = &raw.access_key_id;
        if id.is_empty()
            || id.len() > MAX_ACCESS_KEY_ID_CHARS
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "access_key_id '{id}' must be 1 to {MAX_ACCESS_KEY_ID_CHARS} letters, digits or _"
            ));
        }
        if raw.secret_access_key.is_empty() {
            return Err(format!("secret_access_key of {id} is empty"));
        }
        let account = &raw.account_id;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("account_id '{account}' must be 12 digits"));
        }
        if raw
            .policies
            .iter()
            .flat_map(|p| &p.statements)
            .any(|s| s.principal.is_some())
        {
            return Err(format!(
                "a policy of {id}: Policy document should not specify a principal."
            ));
        }
        let name = raw.name.unwrap_or_else(|| id.clone());
        Ok(UserEntry(User {
            arn: format!("arn:aws:iam::{account}:user/{name}"),
            name,
            access_key_id: raw.access_key_id,
            secret: raw.secret_access_key,
            account_id: raw.account_id,
            policies: raw.policies,
            signing_keys: Mutex::new(Vec::new()),
            scope: std::sync::OnceLock::new(),
        }))
    }
}

/// How often an auth file is checked for changes, in milliseconds.
pub const AUTH_RELOAD_CHECK_MS: u64 = 2_000;

fn read_file(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("auth file {}: {e}", path.display()))
}

/// An auth file's users by access key id.
fn parse_users(text: &str) -> Result<HashMap<String, Arc<User>>, String> {
    let file: AuthFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut users = HashMap::new();
    for UserEntry(u) in file.users {
        let id = u.access_key_id.clone();
        if users.insert(id.clone(), Arc::new(u)).is_some() {
            return Err(format!("access_key_id {id} is given twice"));
        }
    }
    Ok(users)
}

impl Auth {
    /// Reads the auth file at `path`; credentials must be scoped to
    /// `region`. A malformed file is refused with the line at fault.
    pub fn load(path: &std::path::Path, region: &str) -> Result<Auth, String> {
        let watched = crate::reload::Watched::new(&[path]);
        let mut auth = Auth::parse(&read_file(path)?, region)
            .map_err(|e| format!("auth file {}: {e}", path.display()))?;
        auth.file = Some((path.to_path_buf(), watched));
        Ok(auth)
    }

    /// Loads the auth file again if it changed since it was last read:
    /// `Ok(true)` if it did, `Err` (keeping the users it had) if the new
    /// file does not parse. Nothing to do without a file.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let Some((path, loaded)) = &self.file else {
            return Ok(false);
        };
        if !loaded.changed() {
            return Ok(false);
        }
        let users = parse_users(&read_file(path)?)
            .map_err(|e| format!("auth file {}: {e}", path.display()))?;
        self.users.store(Arc::new(users));
        Ok(true)
    }

    /// Checks the auth file every [`AUTH_RELOAD_CHECK_MS`] until
    /// `stopped`: users added, removed or changed (secrets, accounts,
    /// policies) take effect without a restart; a file that does not parse
    /// is logged and counted, and the users loaded before stay.
    pub async fn watch(self: Arc<Auth>, stopped: tokio::sync::watch::Receiver<bool>) {
        if self.file.is_none() {
            return;
        }
        let every = std::time::Duration::from_millis(AUTH_RELOAD_CHECK_MS);
        let reload = || self.reload_if_changed();
        let failed = crate::metrics::auth_reload_failed;
        crate::reload::watch(every, stopped, "auth file", reload, failed).await;
    }

    /// Parses an auth file's text.
    pub fn parse(text: &str, region: &str) -> Result<Auth, String> {
        Ok(Auth {
            users: ArcSwap::from_pointee(parse_users(text)?),
            file: None,
            always: true,
            region: region.into(),
            kept: ArcSwap::default(),
        })
    }

    /// No auth file: only the control plane's users. `open_until_users`:
    /// any signature is accepted while it keeps none (a router's
    /// `--allow-unauthenticated`); otherwise every request must be signed by
    /// one of them, and none is served before the first exists.
    pub fn without_file(region: &str, open_until_users: bool) -> Auth {
        Auth {
            users: ArcSwap::default(),
            file: None,
            always: !open_until_users,
            region: region.into(),
            kept: ArcSwap::default(),
        }
    }

    /// Whether requests must be authenticated: always, unless open until
    /// the control plane keeps users and it keeps none.
    pub fn enabled(&self, kept: &UserRecords) -> bool {
        self.always || !kept.is_empty()
    }

    /// The user with access key `key`: the control plane's record of it if
    /// it has one, else the auth file's.
    fn user(&self, key: &str, kept: &UserRecords) -> Option<Arc<User>> {
        let mut current = self.kept.load_full();
        if !Arc::ptr_eq(&current.source, kept) {
            if *current.source != **kept {
                self.kept.store(Arc::new(build_kept(kept)));
            } else {
                // Same users in a newer catalog: remember its map, keep ours.
                self.kept.store(Arc::new(KeptUsers {
                    source: kept.clone(),
                    users: current.users.clone(),
                }));
            }
            current = self.kept.load_full();
        }
        current
            .users
            .get(key)
            .cloned()
            .or_else(|| self.users.load().get(key).cloned())
    }

    /// The principal that signed this request, or why it is refused.
    pub fn authenticate(
        &self,
        req: &sigv4::Signed,
        peer: crate::http::Peer,
        now: SystemTime,
        kept: &UserRecords,
    ) -> Result<Principal, ApiError> {
        let sig =
            sigv4::parse(req.headers, req.query)?.ok_or(ApiError::MissingAuthenticationToken)?;
        sigv4::check_time(&sig, now)?;
        let user = &self
            .user(&sig.key_id, kept)
            .ok_or(ApiError::UnrecognizedClient)?;
        sigv4::check_scope(&sig, &self.region)?;
        let key = self.signing_key(user, &sig.scope_date, sig.at)?;
        if !sigv4::verify(&sig, req, &key) {
            return Err(sigv4::mismatch());
        }
        Ok(Principal {
            user: user.clone(),
            source_ip: peer.ip,
            secure_transport: peer.tls,
            region: self.region.clone(),
            resource_account: None,
        })
    }

    /// `user`'s signing key for `day` (`YYYYMMDD`, the date of `at`),
    /// derived once and kept.
    fn signing_key(&self, user: &User, day: &str, at: SystemTime) -> Result<[u8; 32], ApiError> {
        // A poisoned lock guards only derived keys, still valid.
        let mut keys = user.signing_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, k)) = keys.iter().find(|(d, _)| d == day) {
            return Ok(*k);
        }
        let derived = aws_sigv4::sign::v4::generate_signing_key(
            &user.secret,
            at,
            &self.region,
            sigv4::SERVICE,
        );
        // An HMAC-SHA256 tag is 32 bytes; anything else is a bug in the
        // crate, and no request is verified against a made-up key.
        let key = <[u8; 32]>::try_from(derived.as_ref()).map_err(|_| {
            ApiError::InternalServerError("the SigV4 signing key is not 32 bytes".into())
        })?;
        if keys.len() >= SIGNING_KEYS_PER_USER {
            keys.remove(0);
        }
        keys.push((day.to_string(), key));
        Ok(key)
    }
}

/// The users of `records` that check out (a record whose policies do not
/// parse is left out and logged: `admin put-user` checks them first).
fn build_kept(records: &UserRecords) -> KeptUsers {
    let mut users = HashMap::new();
    for (id, r) in records.iter() {
        match user_of(r) {
            Ok(u) => {
                users.insert(id.clone(), Arc::new(u));
            }
            Err(e) => tracing::warn!(access_key_id = %id, error = %e, "a kept user is ignored"),
        }
    }
    KeptUsers {
        source: records.clone(),
        users,
    }
}

/// A user record of the control plane checked as an auth file's user is.
pub fn user_of(r: &UserRecord) -> Result<User, String> {
    let policies = r
        .policies
        .iter()
        .map(|p| serde_json::from_value::<Policy>(p.clone()).map_err(|e| format!("a policy: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let raw = RawUser {
        access_key_id: r.access_key_id.clone(),
        secret_access_key: r.secret_access_key.clone(),
        account_id: r.account_id.clone(),
        name: r.name.clone(),
        policies,
    };
    UserEntry::try_from(raw).map(|UserEntry(u)| u)
}

/// Who a request is served for.
#[derive(Clone)]
pub struct Principal {
    pub user: Arc<User>,
    pub source_ip: Option<IpAddr>,
    /// The request came over TLS.
    pub secure_transport: bool,
    region: Arc<str>,
    /// The account whose resources the request acts on, when it is not the
    /// user's own (a table of another account named by ARN).
    resource_account: Option<Arc<str>>,
}

/// What a request needs allowed: one action on one resource, with the
/// condition keys DynamoDB defines for it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The action without its `dynamodb:` prefix (`GetItem`).
    pub action: &'static str,
    pub resource: Resource,
    /// `dynamodb:LeadingKeys`: the partition-key values touched.
    pub leading_keys: Option<Vec<String>>,
    /// `dynamodb:Attributes`: the top-level attribute names touched.
    pub attributes: Option<Vec<String>>,
    /// `dynamodb:Select`.
    pub select: Option<String>,
    /// `dynamodb:ReturnValues`.
    pub return_values: Option<String>,
    /// `dynamodb:EnclosingOperation`: the transaction an item action is
    /// part of (`TransactWriteItems`, `TransactGetItems`).
    pub enclosing_operation: Option<&'static str>,
}

/// What an action is performed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resource {
    /// Actions on no particular resource (ListTables): `*`.
    #[default]
    Any,
    /// A table, by the name the client uses.
    Table(String),
    /// An index of a table: (table, index).
    Index(String, String),
    /// A full ARN (a stream's, or one a request names).
    Arn(String),
}

impl Access {
    pub fn new(action: &'static str, resource: Resource) -> Access {
        Access {
            action,
            resource,
            ..Access::default()
        }
    }

    pub fn table(action: &'static str, table: &str) -> Access {
        Access::new(action, Resource::Table(table.to_string()))
    }

    /// Adds the partition-key values of `items` (keys or whole items) under
    /// `schema` to `dynamodb:LeadingKeys`.
    pub fn keys<'a>(
        mut self,
        schema: &KeySchema,
        items: impl IntoIterator<Item = &'a Item>,
    ) -> Access {
        let keys = self.leading_keys.get_or_insert_with(Vec::new);
        keys.extend(items.into_iter().filter_map(|i| leading_key(schema, i)));
        keys.sort();
        keys.dedup();
        self
    }

    /// Adds top-level attribute names to `dynamodb:Attributes`.
    pub fn attributes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Access {
        let attrs = self.attributes.get_or_insert_with(Vec::new);
        attrs.extend(names.into_iter().map(Into::into));
        attrs.sort();
        attrs.dedup();
        self
    }

    /// Sets `dynamodb:Select` (when the request names one).
    pub fn select(mut self, select: Option<&str>) -> Access {
        self.select = select.map(str::to_string);
        self
    }

    /// Sets `dynamodb:ReturnValues` (when the request names one).
    pub fn return_values(mut self, rv: Option<&str>) -> Access {
        self.return_values = rv.map(str::to_string);
        self
    }
}

/// The ARN of resource `r` in `region` and `account`.
pub fn arn(r: &Resource, region: &str, account: &str) -> String {
    match r {
        Resource::Any => "*".into(),
        Resource::Table(t) => format!("arn:aws:dynamodb:{region}:{account}:table/{t}"),
        Resource::Index(t, i) => {
            format!("arn:aws:dynamodb:{region}:{account}:table/{t}/index/{i}")
        }
        Resource::Arn(a) => a.clone(),
    }
}

/// The PartiQL action a statement needs for the item operation it runs as:
/// reads (and a transaction's EXISTS) are `PartiQLSelect`, puts
/// `PartiQLInsert`, updates `PartiQLUpdate`, deletes `PartiQLDelete`.
pub fn partiql_action(action: &'static str) -> &'static str {
    match action {
        "GetItem" | "BatchGetItem" | "Query" | "Scan" | "ConditionCheckItem" => "PartiQLSelect",
        "PutItem" => "PartiQLInsert",
        "UpdateItem" => "PartiQLUpdate",
        "DeleteItem" => "PartiQLDelete",
        other => other,
    }
}

/// The value of `item`'s partition key as policies compare it: a string's
/// text, a number's digits, a binary's base64.
pub fn leading_key(schema: &KeySchema, item: &Item) -> Option<String> {
    let attr = schema.hash.first()?;
    match item.get(&attr.name)? {
        AttributeValue::S(s) => Some(s.clone()),
        AttributeValue::N(n) => Some(n.to_string()),
        AttributeValue::B(b) => {
            use base64::Engine;
            Some(base64::engine::general_purpose::STANDARD.encode(b))
        }
        _ => None,
    }
}

impl Principal {
    /// This principal acting on the resources of `account` (another
    /// account's table named by ARN): resources are that account's, and
    /// both its resource-based policy and the user's policies must allow.
    pub fn acting_in(&self, account: &str) -> Principal {
        Principal {
            resource_account: Some(account.into()),
            ..self.clone()
        }
    }

    /// The account of the resources this principal acts on.
    fn resource_account(&self) -> &str {
        self.resource_account
            .as_deref()
            .unwrap_or(&self.user.account_id)
    }

    /// The resource's ARN in the account the principal acts on.
    pub fn arn(&self, r: &Resource) -> String {
        arn(r, &self.region, self.resource_account())
    }

    /// Whether the principal's policies, and the resource-based policy of
    /// what it acts on, allow `access`, as IAM decides: an explicit Deny in
    /// either refuses; else, within one account, an Allow in either
    /// allows, and across accounts both must allow. AccessDenied with
    /// IAM's message if not.
    pub fn authorize(
        &self,
        access: &Access,
        resource_policy: Option<&Policy>,
    ) -> Result<(), ApiError> {
        self.decide(access, resource_policy).map_err(|why| {
            crate::metrics::access_denied(access.action);
            ApiError::AccessDenied(format!(
                "User: {} is not authorized to perform: dynamodb:{} on resource: {} {why}",
                self.user.arn,
                access.action,
                self.arn(&access.resource)
            ))
        })
    }

    /// [`Principal::authorize`]'s decision, with IAM's reason when it
    /// refuses (nothing counted: a check, not a refused request).
    pub fn decide(&self, access: &Access, resource_policy: Option<&Policy>) -> Result<(), String> {
        let resource = self.arn(&access.resource);
        // Lower case, as policies compare actions.
        let mut action = String::with_capacity(ACTION_PREFIX.len() + access.action.len());
        action.push_str(ACTION_PREFIX);
        action.extend(access.action.chars().map(|c| c.to_ascii_lowercase()));
        let ctx = RequestContext {
            principal: self,
            access,
        };
        let caller = self.caller();
        let req = policy::Request {
            action: &action,
            resource: &resource,
            context: &ctx,
            caller: None,
        };
        let identity = policy::evaluate(&self.user.policies, &req);
        let on_resource = resource_policy.map_or(Decision::ImplicitDeny, |p| {
            p.evaluate(&policy::Request {
                caller: Some(&caller),
                ..req
            })
        });
        let across_accounts = self.resource_account() != self.user.account_id;
        let no = |kind: &str| {
            format!(
                "because no {kind}-based policy allows the {ACTION_PREFIX}{} action",
                access.action
            )
        };
        Err(match (identity, on_resource) {
            (Decision::ExplicitDeny, _) => {
                "with an explicit deny in an identity-based policy".to_string()
            }
            (_, Decision::ExplicitDeny) => {
                "with an explicit deny in a resource-based policy".to_string()
            }
            (Decision::Allow, Decision::Allow) => return Ok(()),
            (Decision::Allow, _) | (_, Decision::Allow) if !across_accounts => return Ok(()),
            (Decision::Allow, _) => no("resource"),
            _ => no("identity"),
        })
    }

    /// Whether `policy` (a resource's) allows this principal anything at
    /// all: a request across accounts learns nothing of a resource, not
    /// even whether it exists, before this holds.
    pub fn may_be_granted(&self, policy: &Policy) -> bool {
        policy.names_allowed(&self.caller())
    }

    /// This principal as resource-based policies name callers.
    fn caller(&self) -> policy::Caller<'_> {
        policy::Caller {
            account: &self.user.account_id,
            arn: &self.user.arn,
        }
    }

    /// Whether `policy`, about to become a resource's policy, denies this
    /// principal `action` on `resource` (DynamoDB's self-lockout check).
    pub fn denied_by(&self, policy: &Policy, action: &str, resource: &Resource) -> bool {
        let access = Access::new("", resource.clone());
        let ctx = RequestContext {
            principal: self,
            access: &access,
        };
        let caller = self.caller();
        let resource = self.arn(resource);
        let req = policy::Request {
            action,
            resource: &resource,
            context: &ctx,
            caller: Some(&caller),
        };
        policy.evaluate(&req) == Decision::ExplicitDeny
    }
}

/// Most resource-based policy documents kept parsed; past it the cache
/// starts again empty (a table and each of its streams has one).
pub const MAX_CACHED_POLICIES: usize = 4096;

/// Resource-based policies as parsed, by document text: a table's policy
/// is kept in its metadata as the text it was put with, and every request
/// on the table is authorized against it, so it is parsed once rather than
/// per request. A changed policy is another text, parsed when first seen.
#[derive(Debug, Default)]
pub struct PolicyCache {
    parsed: Mutex<HashMap<String, Arc<Policy>>>,
}

impl PolicyCache {
    /// `document` parsed, from the cache when it was parsed before.
    pub fn parsed(&self, document: &str) -> Result<Arc<Policy>, serde_json::Error> {
        // A poisoned lock guards only parsed copies of stored text.
        let lock = || self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = lock().get(document) {
            return Ok(p.clone());
        }
        let policy = Arc::new(serde_json::from_str::<Policy>(document)?);
        let mut parsed = lock();
        if parsed.len() >= MAX_CACHED_POLICIES {
            parsed.clear();
        }
        parsed.insert(document.to_string(), policy.clone());
        Ok(policy)
    }
}

/// Request members that name tables (or their streams and backups) by
/// ARN, and RequestItems, whose keys do.
const ARN_MEMBERS: &[&str] = &[
    "TableName",
    "TableArn",
    "ResourceArn",
    "SourceTableArn",
    "StreamArn",
    "BackupArn",
];
/// Request members holding items and attribute values, which may hold
/// ARNs as data.
const VALUE_MEMBERS: &[&str] = &[
    "Item",
    "Key",
    "Keys",
    "ExpressionAttributeValues",
    "ExclusiveStartKey",
    "Expected",
    "AttributeUpdates",
    "Parameters",
    "ScanFilter",
    "QueryFilter",
    "KeyConditions",
];

/// Request members holding PartiQL statements, which name tables of the
/// caller's own account in their text.
const STATEMENT_MEMBERS: &[&str] = &["Statement", "Statements", "TransactStatements"];

/// Another account's resources a request names by ARN.
#[derive(Debug, PartialEq, Eq)]
pub enum Foreign {
    /// Every table, stream or backup the request names is an ARN of
    /// `account` in `region` (`arns`, in the request's order). Served in
    /// that account where its resource-based policies (and the caller's
    /// own policies) allow it.
    Only {
        account: String,
        region: String,
        arns: Vec<String>,
    },
    /// The request names `arn`, of another account, beside a resource of
    /// the caller's own account (or of a third one).
    Mixed { arn: String },
}

/// What a request names of accounts other than `account`: `None` when it
/// names only its own account's resources (by name or by ARN). DynamoDB
/// serves another account's table, named by ARN, where that table's
/// resource-based policy and the caller's identity policies both allow
/// it; the table names a request gives are looked up in one account, so
/// a request naming its own tables beside another account's is
/// [`Foreign::Mixed`]. ARNs inside item values are data and are not
/// looked at.
pub fn foreign(body: &[u8], account: &str) -> Option<Foreign> {
    if !body.windows(4).any(|w| w == b"arn:") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    fn collect(v: &serde_json::Value, names: &mut Vec<String>, own: &mut bool) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let k = k.as_str();
                    if VALUE_MEMBERS.contains(&k) {
                        continue;
                    }
                    if STATEMENT_MEMBERS.contains(&k) && v.is_string() {
                        *own = true;
                    } else if k == "RequestItems" {
                        names.extend(v.as_object().into_iter().flat_map(|m| m.keys().cloned()));
                    } else if let Some(it) = v.as_str().filter(|_| k == "ShardIterator") {
                        // An iterator begins with its stream's ARN.
                        names.push(it.split('|').next().unwrap_or(it).to_string());
                    } else if let Some(s) = v.as_str().filter(|_| ARN_MEMBERS.contains(&k)) {
                        names.push(s.to_string());
                    } else {
                        collect(v, names, own);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, names, own)),
            _ => {}
        }
    }
    let (mut names, mut own) = (Vec::new(), false);
    collect(&v, &mut names, &mut own);
    let place = |n: &str| {
        crate::params::Arn::parse(n)
            .filter(|a| a.service == "dynamodb")
            .map(|a| (a.account.to_string(), a.region.to_string()))
    };
    let (arn, (other, region)) = names
        .iter()
        .find_map(|n| place(n).filter(|(a, _)| a != account).map(|p| (n, p)))?;
    let same = |n: &String| place(n).is_some_and(|(a, r)| a == other && r == region);
    if own || !names.iter().all(same) {
        return Some(Foreign::Mixed { arn: arn.clone() });
    }
    Some(Foreign::Only {
        account: other,
        region,
        arns: names,
    })
}

/// The condition keys of one request.
struct RequestContext<'a> {
    principal: &'a Principal,
    access: &'a Access,
}

impl policy::Context for RequestContext<'_> {
    fn values(&self, key: &str) -> Option<Vec<String>> {
        let one = |s: &str| Some(vec![s.to_string()]);
        let (p, a) = (self.principal, self.access);
        match key {
            "dynamodb:leadingkeys" => a.leading_keys.clone(),
            "dynamodb:attributes" => a.attributes.clone(),
            "dynamodb:select" => a.select.as_deref().and_then(one),
            "dynamodb:returnvalues" => a.return_values.as_deref().and_then(one),
            "dynamodb:enclosingoperation" => a.enclosing_operation.and_then(one),
            "aws:sourceip" => p.source_ip.map(|ip| vec![ip.to_string()]),
            "aws:username" => one(&p.user.name),
            "aws:userid" | "aws:principalaccesskey" => one(&p.user.access_key_id),
            "aws:principalarn" => one(&p.user.arn),
            "aws:principalaccount" => one(&p.user.account_id),
            "aws:principaltype" => one("User"),
            "aws:requestedregion" => one(&p.region),
            "aws:securetransport" => one(if p.secure_transport { "true" } else { "false" }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        match Auth::parse(text, "us-east-1") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn auth_file_errors_name_the_line_at_fault() {
        let e = refusal(
            "{\"users\": [\n {\"access_key_id\": \"K\", \"secret_access_key\": \"s\",\n  \"account_id\": \"12\"}]}",
        );
        assert!(e.contains("12 digits") && e.contains("line 3"), "{e}");
        let e = refusal(
            "{\"users\": [{\"access_key_id\": \"K\", \"secret_access_key\": \"s\", \"account_id\": \"123456789012\",\n \"policies\": [{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\"}}]}]}",
        );
        assert!(
            e.contains("Resource or NotResource") && e.contains("line 2"),
            "{e}"
        );
        let e = refusal(
            r#"{"users": [{"access_key_id": "K", "secret_access_key": "s", "account_id": "123456789012", "colour": 1}]}"#,
        );
        assert!(e.contains("colour"), "{e}");
        let one =
            r#"{"access_key_id": "K", "secret_access_key": "s", "account_id": "123456789012"}"#;
        let e = refusal(&format!(r#"{{"users": [{one}, {one}]}}"#));
        assert!(e.contains("given twice"), "{e}");
        let e = refusal(
            r#"{"users": [{"access_key_id": "K", "secret_access_key": "s", "account_id": "123456789012",
            "policies": [{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}}]}]}"#,
        );
        assert!(e.contains("should not specify a principal"), "{e}");
        assert!(refusal("{").contains("line 1"));
    }

    #[test]
    fn a_user_is_named_by_its_key_unless_given_a_name() {
        let auth = Auth::parse(
            r#"{"users": [{"access_key_id": "K1", "secret_access_key": "s", "account_id": "123456789012"},
                          {"access_key_id": "K2", "secret_access_key": "s", "account_id": "123456789012", "name": "bob"}]}"#,
            "us-east-1",
        )
        .expect("parses");
        assert_eq!(
            auth.users.load()["K1"].arn,
            "arn:aws:iam::123456789012:user/K1"
        );
        assert_eq!(
            auth.users.load()["K2"].arn,
            "arn:aws:iam::123456789012:user/bob"
        );
        // Debug output never shows a secret.
        assert!(!format!("{auth:?}").contains("\"s\""));
    }

    #[test]
    fn requests_naming_another_accounts_resources_are_told_apart() {
        let own = "111122223333";
        let t = "arn:aws:dynamodb:us-east-1:000000000000:table/T";
        let only = |arns: &[&str]| {
            Some(Foreign::Only {
                account: "000000000000".into(),
                region: "us-east-1".into(),
                arns: arns.iter().map(|a| a.to_string()).collect(),
            })
        };
        let body = |v: serde_json::Value| v.to_string().into_bytes();
        assert_eq!(
            foreign(&body(serde_json::json!({"TableName": "T"})), own),
            None
        );
        let mine = "arn:aws:dynamodb:us-east-1:111122223333:table/T";
        assert_eq!(
            foreign(&body(serde_json::json!({"TableName": mine})), own),
            None
        );
        assert_eq!(
            foreign(&body(serde_json::json!({"TableName": t})), own),
            only(&[t])
        );
        // An ARN held as an item's value is data.
        let item = serde_json::json!({"TableName": "T", "Item": {"a": {"S": t}}});
        assert_eq!(foreign(&body(item), own), None);
        let stream = format!("{t}/stream/2026-12-04T00:00:00.000");
        let it = serde_json::json!({"ShardIterator": format!("{stream}|shard-1|0|1")});
        assert_eq!(foreign(&body(it), own), only(&[&stream]));
        let mixed = Some(Foreign::Mixed { arn: t.to_string() });
        let batch = serde_json::json!({"RequestItems": {t: {}, "Mine": {}}});
        assert_eq!(foreign(&body(batch), own), mixed);
        let third = "arn:aws:dynamodb:us-east-1:444455556666:table/U";
        let txn = serde_json::json!({"TransactItems": [
            {"Put": {"TableName": t}}, {"Delete": {"TableName": third}}]});
        assert_eq!(foreign(&body(txn), own), mixed);
        let statement = serde_json::json!({"TableName": t, "Statement": "SELECT * FROM Mine"});
        assert_eq!(foreign(&body(statement), own), mixed);
    }

    #[test]
    fn a_resource_policy_is_parsed_once_per_document() {
        let cache = PolicyCache::default();
        let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"dynamodb:GetItem","Resource":"*"}}"#;
        let first = cache.parsed(doc).expect("parses");
        let again = cache.parsed(doc).expect("cached");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second read is the first parse"
        );
        let other = doc.replace("GetItem", "Query");
        let changed = cache.parsed(&other).expect("parses");
        assert!(
            !Arc::ptr_eq(&first, &changed),
            "another text is parsed anew"
        );
        assert!(
            cache.parsed("{not json").is_err(),
            "a bad document is an error"
        );
        assert_eq!(
            cache.parsed.lock().map(|p| p.len()).unwrap_or(0),
            2,
            "errors are not kept"
        );
    }
}
