//! IAM policy documents and their evaluation, as IAM evaluates identity
//! policies: every statement whose Action, Resource and Condition match the
//! request counts; an explicit Deny wins, else an Allow allows, else the
//! request is denied by default.
//!
//! A document is `{"Version", "Id"?, "Statement": statement | [statement]}`;
//! a statement has `Sid`?, `Effect` (`Allow` | `Deny`), `Action` or
//! `NotAction`, `Resource` or `NotResource`, and `Condition`?
//! (`{operator: {key: value | [values]}}`). Actions match without regard
//! to case (`dynamodb:Get*`), resources with it (`arn:...:table/Orders*`);
//! both take the `*` and `?` wildcards. Policy variables (`${aws:username}`)
//! are replaced in resources and condition values from the request's
//! context, as IAM does for version `2012-10-17`.
//!
//! Condition operators: `String{Equals,NotEquals,EqualsIgnoreCase,
//! NotEqualsIgnoreCase,Like,NotLike}`, `Arn{Equals,NotEquals,Like,NotLike}`,
//! `Bool`, `IpAddress`, `NotIpAddress` and `Null`; each may carry the
//! `ForAllValues:` or `ForAnyValue:` set qualifier and the `IfExists`
//! suffix. Within an operator every key must hold; within a key any value
//! may match (a negated operator: none may). A key the request lacks fails
//! a positive operator and passes a negated one, unless `IfExists` (passes)
//! or `Null` asks about presence. `ForAllValues` holds for an absent or
//! empty key (as in IAM: pair it with a check that the key exists).
//!
//! Caveats: numeric and date operators are refused when a policy is loaded
//! (no DynamoDB condition key needs them); a document is parsed with
//! serde, so a refusal names the line and column at fault.

use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// A parsed policy document.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct Policy {
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// A list of patterns, or every name but those (`NotAction`,
/// `NotResource`).
#[derive(Debug, Clone)]
pub struct Patterns {
    pub patterns: Vec<String>,
    pub negated: bool,
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    /// Lower-case.
    pub actions: Patterns,
    pub resources: Patterns,
    pub conditions: Vec<Condition>,
    /// Resource-based policies name who they apply to; identity policies
    /// must not.
    pub principal: Option<Principals>,
}

/// Who a statement of a resource-based policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principals {
    /// `"*"`, or `"*"` among the `AWS` principals.
    Anyone,
    /// IAM principals as ARNs (an account id is its `root` ARN); other
    /// kinds (`Service`, `Federated`) are kept as written and match no
    /// caller of this API.
    Named(Vec<String>),
}

/// Who makes a request, as a resource-based policy's Principal names it.
pub struct Caller<'a> {
    pub account: &'a str,
    /// `arn:aws:iam::ACCOUNT:user/NAME`.
    pub arn: &'a str,
}

/// DynamoDB's refusal of a principal it does not know the form of.
pub const INVALID_PRINCIPAL: &str = "Invalid principal in policy document.";

impl Principals {
    fn matches(&self, c: &Caller) -> bool {
        match self {
            Principals::Anyone => true,
            Principals::Named(names) => names.iter().any(|n| {
                *n == c.arn
                    || n.strip_suffix(":root") == Some(&format!("arn:aws:iam::{}", c.account))
            }),
        }
    }

    /// A statement's `Principal` element.
    fn parse(v: &Value) -> Result<Principals, String> {
        let map = match v {
            Value::String(s) if s == "*" => return Ok(Principals::Anyone),
            Value::Object(m) if !m.is_empty() => m,
            _ => return Err(INVALID_PRINCIPAL.into()),
        };
        let mut names = Vec::new();
        for (kind, value) in map {
            let list: Vec<&str> = match value {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().ok_or_else(|| INVALID_PRINCIPAL.to_string()))
                    .collect::<Result<_, _>>()?,
                _ => return Err(INVALID_PRINCIPAL.into()),
            };
            if list.is_empty() {
                return Err(INVALID_PRINCIPAL.into());
            }
            for name in list {
                if kind != "AWS" {
                    names.push(format!("{kind}:{name}"));
                } else if name == "*" {
                    return Ok(Principals::Anyone);
                } else if is_account(name) {
                    names.push(format!("arn:aws:iam::{name}:root"));
                } else if iam_arn(name) {
                    names.push(name.to_string());
                } else {
                    return Err(INVALID_PRINCIPAL.into());
                }
            }
        }
        names.dedup();
        Ok(Principals::Named(names))
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:aws:iam::ACCOUNT:root`, `...:user/NAME` or `...:role/NAME`.
fn iam_arn(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("arn:aws:iam::") else {
        return false;
    };
    let Some((account, what)) = rest.split_once(':') else {
        return false;
    };
    is_account(account)
        && (what == "root"
            || what
                .split_once('/')
                .is_some_and(|(kind, name)| matches!(kind, "user" | "role") && !name.is_empty()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Bool,
    IpAddress,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Single,
    ForAllValues,
    ForAnyValue,
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub operator: Operator,
    /// `StringNotEquals`, `NotIpAddress`, ...: none of the values may match.
    pub negated: bool,
    pub qualifier: Qualifier,
    pub if_exists: bool,
    /// Lower-case (condition keys are case-insensitive).
    pub key: String,
    pub values: Vec<String>,
}

/// The outcome of evaluating policies for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows.
    ImplicitDeny,
    ExplicitDeny,
}

/// What a request asks for, as policies see it.
pub struct Request<'a> {
    /// `dynamodb:GetItem`.
    pub action: &'a str,
    /// An ARN, or `*` for actions on no resource.
    pub resource: &'a str,
    pub context: &'a dyn Context,
    /// Who asks, for statements that name principals (resource-based
    /// policies): a statement naming principals applies to no request
    /// without one.
    pub caller: Option<&'a Caller<'a>>,
}

/// The request's condition keys.
pub trait Context {
    /// The values of condition key `key` (lower-case), `None` if the
    /// request has no such key.
    fn values(&self, key: &str) -> Option<Vec<String>>;
}

impl Policy {
    /// Every statement that applies to `req`, by effect.
    pub fn evaluate(&self, req: &Request) -> Decision {
        evaluate(std::iter::once(self), req)
    }

    /// Whether an Allow statement of this (resource-based) policy applies
    /// to `caller`, whatever its actions, resources and conditions.
    pub fn names_allowed(&self, caller: &Caller) -> bool {
        self.statements.iter().any(|st| {
            st.effect == Effect::Allow && st.principal.as_ref().is_some_and(|p| p.matches(caller))
        })
    }
}

/// The decision of a set of policies for `req`.
pub fn evaluate<'p>(policies: impl IntoIterator<Item = &'p Policy>, req: &Request) -> Decision {
    let mut allowed = false;
    let action = if req.action.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(req.action.to_ascii_lowercase())
    } else {
        Cow::Borrowed(req.action)
    };
    for st in policies.into_iter().flat_map(|p| &p.statements) {
        if !st.applies(&action, req) {
            continue;
        }
        match st.effect {
            Effect::Deny => return Decision::ExplicitDeny,
            Effect::Allow => allowed = true,
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

impl Statement {
    /// Whether the statement applies to `req`, whose action is `action`
    /// in lower case.
    fn applies(&self, action: &str, req: &Request) -> bool {
        if let Some(p) = &self.principal
            && !req.caller.is_some_and(|c| p.matches(c))
        {
            return false;
        }
        self.actions.matches(|p| glob(p, action))
            && self
                .resources
                .matches(|p| glob(&substitute(p, req.context), req.resource))
            && self.conditions.iter().all(|c| c.holds(req.context))
    }
}

impl Patterns {
    fn matches(&self, f: impl Fn(&str) -> bool) -> bool {
        self.patterns.iter().any(|p| f(p)) != self.negated
    }
}

impl Condition {
    fn holds(&self, ctx: &dyn Context) -> bool {
        let present = ctx.values(&self.key).filter(|v| !v.is_empty());
        if self.operator == Operator::Null {
            // `"true"`: the key must be absent; `"false"`: present.
            let want_absent = self.values.iter().any(|v| v.eq_ignore_ascii_case("true"));
            return want_absent == present.is_none();
        }
        let values: Vec<Cow<str>> = self.values.iter().map(|v| substitute(v, ctx)).collect();
        let Some(actual) = present else {
            return match self.qualifier {
                Qualifier::ForAllValues => true,
                Qualifier::ForAnyValue => false,
                Qualifier::Single => self.if_exists || self.negated,
            };
        };
        // One request value against the policy's: any match, or for a
        // negated operator none.
        let one = |a: &String| values.iter().any(|v| self.compare(a, v)) != self.negated;
        match self.qualifier {
            Qualifier::ForAllValues => actual.iter().all(one),
            Qualifier::ForAnyValue => actual.iter().any(one),
            Qualifier::Single if self.negated => actual.iter().all(one),
            Qualifier::Single => actual.iter().any(one),
        }
    }

    /// Whether request value `actual` matches policy value `wanted`.
    fn compare(&self, actual: &str, wanted: &str) -> bool {
        match self.operator {
            Operator::StringEquals => actual == wanted,
            Operator::StringEqualsIgnoreCase | Operator::Bool => {
                actual.eq_ignore_ascii_case(wanted)
            }
            Operator::StringLike => glob(wanted, actual),
            Operator::IpAddress => in_network(actual, wanted),
            Operator::Null => false,
        }
    }
}

/// Whether address `ip` is in `cidr` (`10.0.0.0/8`, or one address).
fn in_network(ip: &str, cidr: &str) -> bool {
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    match cidr.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => cidr.parse::<std::net::IpAddr>().is_ok_and(|a| a == ip),
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters
/// and `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return glob_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob_units(&p, &t, '*', '?')
}

/// [`glob`] over units (bytes of ASCII text, else characters).
fn glob_units<T: PartialEq>(p: &[T], t: &[T], any_run: T, any_one: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(c) if *c == any_run => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == any_one || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == any_run))
}

/// `s` with its policy variables (`${aws:username}`) replaced by the
/// request's values (`${*}`, `${?}` and `${$}` stand for those characters).
/// A variable the request lacks is left as written, so it matches nothing.
fn substitute<'s>(s: &'s str, ctx: &dyn Context) -> Cow<'s, str> {
    if !s.contains("${") {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out += &rest[..start];
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out += &rest[start..];
            return Cow::Owned(out);
        };
        let name = &after[..end];
        match name {
            "*" | "?" | "$" => out += name,
            _ => match ctx.values(&name.to_ascii_lowercase()).as_deref() {
                Some([one]) => out += one,
                _ => out += &rest[start..start + 2 + end + 1],
            },
        }
        rest = &after[end + 1..];
    }
    Cow::Owned(out + rest)
}

// ---- parsing ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "Version")]
    version: Option<String>,
    #[serde(rename = "Id")]
    _id: Option<String>,
    #[serde(rename = "Statement")]
    statement: OneOrMany<RawStatement>,
}

/// One value or a list of them (IAM accepts both wherever a list goes).
/// Not `#[serde(untagged)]`: that would hide the inner error and its line.
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer, value};
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visit<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("one value or a list of values")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(value::SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(value::MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(s.into_deserializer()).map(OneOrMany::One)
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "Sid")]
    sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: Effect,
    #[serde(rename = "Action")]
    action: Option<OneOrMany<String>>,
    #[serde(rename = "NotAction")]
    not_action: Option<OneOrMany<String>>,
    #[serde(rename = "Resource")]
    resource: Option<OneOrMany<String>>,
    #[serde(rename = "NotResource")]
    not_resource: Option<OneOrMany<String>>,
    #[serde(rename = "Condition")]
    condition: Option<serde_json::Map<String, Value>>,
    #[serde(rename = "Principal")]
    principal: Option<Value>,
    #[serde(rename = "NotPrincipal")]
    not_principal: Option<Value>,
}

/// The policy versions IAM accepts.
const VERSIONS: &[&str] = &["2012-10-17", "2008-10-17"];

impl TryFrom<RawPolicy> for Policy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Policy, String> {
        if let Some(v) = &raw.version
            && !VERSIONS.contains(&v.as_str())
        {
            return Err(format!(
                "The policy must contain a valid version string: '{v}' is not one of {VERSIONS:?}"
            ));
        }
        let statements = raw
            .statement
            .into_vec()
            .into_iter()
            .map(Statement::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if statements.is_empty() {
            return Err("Policy statement must contain at least one statement".into());
        }
        Ok(Policy { statements })
    }
}

impl TryFrom<RawStatement> for Statement {
    type Error = String;

    fn try_from(raw: RawStatement) -> Result<Statement, String> {
        if raw.not_principal.is_some() {
            return Err("NotPrincipal is not supported".into());
        }
        let actions = patterns("Action", raw.action, raw.not_action)?;
        for a in &actions.patterns {
            if a != "*"
                && !a
                    .split_once(':')
                    .is_some_and(|(s, n)| !s.is_empty() && !n.is_empty())
            {
                return Err(format!("Action '{a}' must be '*' or 'service:action'"));
            }
        }
        let actions = Patterns {
            patterns: actions
                .patterns
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            ..actions
        };
        let resources = patterns("Resource", raw.resource, raw.not_resource)?;
        for r in &resources.patterns {
            if r != "*" && !r.starts_with("arn:") {
                return Err(format!("Resource {r} must be in ARN format or \"*\"."));
            }
        }
        let conditions = match raw.condition {
            None => Vec::new(),
            Some(c) => conditions(c)?,
        };
        Ok(Statement {
            sid: raw.sid,
            effect: raw.effect,
            actions,
            resources,
            conditions,
            principal: raw.principal.as_ref().map(Principals::parse).transpose()?,
        })
    }
}

fn patterns(
    what: &str,
    plain: Option<OneOrMany<String>>,
    not: Option<OneOrMany<String>>,
) -> Result<Patterns, String> {
    let (list, negated) = match (plain, not) {
        (Some(_), Some(_)) => {
            return Err(format!("Statement must not have both {what} and Not{what}"));
        }
        (Some(l), None) => (l, false),
        (None, Some(l)) => (l, true),
        (None, None) => return Err(format!("Statement must contain {what} or Not{what}")),
    };
    let patterns = list.into_vec();
    if patterns.is_empty() {
        return Err(format!(
            "{what} must name at least one {}",
            what.to_lowercase()
        ));
    }
    Ok(Patterns { patterns, negated })
}

fn conditions(block: serde_json::Map<String, Value>) -> Result<Vec<Condition>, String> {
    let mut out = Vec::new();
    for (op_name, keys) in block {
        let (qualifier, rest) = if let Some(r) = op_name.strip_prefix("ForAllValues:") {
            (Qualifier::ForAllValues, r)
        } else if let Some(r) = op_name.strip_prefix("ForAnyValue:") {
            (Qualifier::ForAnyValue, r)
        } else {
            (Qualifier::Single, op_name.as_str())
        };
        let (rest, if_exists) = match rest.strip_suffix("IfExists") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let (operator, negated) = operator(rest)
            .ok_or_else(|| format!("Condition operator '{op_name}' is not supported"))?;
        let Value::Object(keys) = keys else {
            return Err(format!(
                "Condition operator '{op_name}' must map keys to values"
            ));
        };
        for (key, values) in keys {
            let values = match values {
                Value::Array(a) => a.iter().map(scalar).collect::<Option<Vec<_>>>(),
                v => scalar(&v).map(|s| vec![s]),
            }
            .ok_or_else(|| {
                format!("Condition key '{key}' must have string, number or boolean values")
            })?;
            out.push(Condition {
                operator,
                negated,
                qualifier,
                if_exists,
                key: key.to_ascii_lowercase(),
                values,
            });
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An operator's name (without qualifier or `IfExists`) as (operator,
/// negated).
fn operator(name: &str) -> Option<(Operator, bool)> {
    use Operator::*;
    Some(match name {
        "StringEquals" | "ArnEquals" => (StringEquals, false),
        "StringNotEquals" | "ArnNotEquals" => (StringEquals, true),
        "StringEqualsIgnoreCase" => (StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (StringEqualsIgnoreCase, true),
        "StringLike" | "ArnLike" => (StringLike, false),
        "StringNotLike" | "ArnNotLike" => (StringLike, true),
        "Bool" => (Bool, false),
        "IpAddress" => (IpAddress, false),
        "NotIpAddress" => (IpAddress, true),
        "Null" => (Null, false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Ctx(HashMap<&'static str, Vec<&'static str>>);

    impl Context for Ctx {
        fn values(&self, key: &str) -> Option<Vec<String>> {
            self.0
                .get(key)
                .map(|v| v.iter().map(|s| s.to_string()).collect())
        }
    }

    fn policy(json: &str) -> Policy {
        serde_json::from_str(json).unwrap()
    }

    fn decide(
        p: &Policy,
        action: &str,
        resource: &str,
        ctx: &[(&'static str, Vec<&'static str>)],
    ) -> Decision {
        let ctx = Ctx(ctx.iter().cloned().collect());
        p.evaluate(&Request {
            action,
            resource,
            context: &ctx,
            caller: None,
        })
    }

    const T: &str = "arn:aws:dynamodb:us-east-1:111122223333:table/Orders";

    #[test]
    fn wildcards_match_any_run_or_one_character() {
        assert!(glob("dynamodb:get*", "dynamodb:getitem"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("arn:*:table/Or*s", T) && !glob("arn:*:table/Or*x", T));
        assert!(!glob("abc", "abcd") && glob("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn explicit_deny_wins_and_nothing_allowed_is_denied() {
        let p = policy(&format!(
            r#"{{"Version":"2012-10-17","Statement":[
                {{"Effect":"Allow","Action":"dynamodb:*","Resource":"*"}},
                {{"Effect":"Deny","Action":["dynamodb:DeleteItem"],"Resource":"{T}"}}]}}"#
        ));
        assert_eq!(decide(&p, "dynamodb:GetItem", T, &[]), Decision::Allow);
        assert_eq!(
            decide(&p, "dynamodb:DeleteItem", T, &[]),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(&p, "dynamodb:DeleteItem", &format!("{T}2"), &[]),
            Decision::Allow
        );
        let none = policy(
            r#"{"Statement":{"Effect":"Allow","Action":"dynamodb:GetItem","Resource":"arn:aws:dynamodb:*:*:table/Other"}}"#,
        );
        assert_eq!(
            decide(&none, "dynamodb:GetItem", T, &[]),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &none,
                "dynamodb:PutItem",
                "arn:aws:dynamodb:x:1:table/Other",
                &[]
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource_invert_the_match() {
        let p = policy(
            r#"{"Statement":[{"Effect":"Allow","NotAction":"dynamodb:Delete*","NotResource":"arn:aws:dynamodb:*:*:table/Secret"}]}"#,
        );
        assert_eq!(decide(&p, "dynamodb:GetItem", T, &[]), Decision::Allow);
        assert_eq!(
            decide(&p, "dynamodb:DeleteTable", T, &[]),
            Decision::ImplicitDeny
        );
        let secret = "arn:aws:dynamodb:us-east-1:1:table/Secret";
        assert_eq!(
            decide(&p, "dynamodb:GetItem", secret, &[]),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn set_qualifiers_and_missing_keys_follow_iam() {
        let p = policy(&format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"dynamodb:*","Resource":"{T}",
               "Condition":{{"ForAllValues:StringEquals":{{"dynamodb:LeadingKeys":["${{aws:username}}"]}}}}}}}}"#
        ));
        let user = ("aws:username", vec!["alice"]);
        let keys = |k: Vec<&'static str>| ("dynamodb:leadingkeys", k);
        let act = "dynamodb:GetItem";
        assert_eq!(
            decide(&p, act, T, &[user.clone(), keys(vec!["alice"])]),
            Decision::Allow
        );
        assert_eq!(
            decide(&p, act, T, &[user.clone(), keys(vec!["alice", "bob"])]),
            Decision::ImplicitDeny
        );
        // ForAllValues over no values holds (IAM's rule).
        assert_eq!(
            decide(&p, act, T, std::slice::from_ref(&user)),
            Decision::Allow
        );
        let any = policy(&format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"dynamodb:*","Resource":"{T}",
               "Condition":{{"ForAnyValue:StringLike":{{"dynamodb:Attributes":["pub*"]}},
                             "StringEqualsIfExists":{{"dynamodb:Select":"SPECIFIC_ATTRIBUTES"}}}}}}}}"#
        ));
        let attrs = |a: Vec<&'static str>| ("dynamodb:attributes", a);
        assert_eq!(
            decide(&any, act, T, &[attrs(vec!["x", "public"])]),
            Decision::Allow
        );
        assert_eq!(
            decide(&any, act, T, &[attrs(vec!["x"])]),
            Decision::ImplicitDeny
        );
        assert_eq!(decide(&any, act, T, &[]), Decision::ImplicitDeny);
        let sel = |s: &'static str| ("dynamodb:select", vec![s]);
        assert_eq!(
            decide(&any, act, T, &[attrs(vec!["pub"]), sel("ALL_ATTRIBUTES")]),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &any,
                act,
                T,
                &[attrs(vec!["pub"]), sel("SPECIFIC_ATTRIBUTES")]
            ),
            Decision::Allow
        );
    }

    #[test]
    fn negated_null_bool_and_ip_conditions() {
        let p = policy(&format!(
            r#"{{"Statement":{{"Effect":"Allow","Action":"dynamodb:*","Resource":"{T}",
               "Condition":{{"StringNotEquals":{{"dynamodb:ReturnValues":["ALL_OLD","ALL_NEW"]}},
                             "IpAddress":{{"aws:SourceIp":["10.0.0.0/8","192.168.1.7"]}},
                             "Null":{{"aws:username":"false"}},
                             "Bool":{{"aws:SecureTransport":false}}}}}}}}"#
        ));
        let base = vec![
            ("aws:sourceip", vec!["10.1.2.3"]),
            ("aws:username", vec!["u"]),
            ("aws:securetransport", vec!["false"]),
        ];
        let act = "dynamodb:PutItem";
        assert_eq!(decide(&p, act, T, &base), Decision::Allow);
        let mut rv = base.clone();
        rv.push(("dynamodb:returnvalues", vec!["ALL_OLD"]));
        assert_eq!(decide(&p, act, T, &rv), Decision::ImplicitDeny);
        let mut other_ip = base.clone();
        other_ip[0] = ("aws:sourceip", vec!["192.168.1.8"]);
        assert_eq!(decide(&p, act, T, &other_ip), Decision::ImplicitDeny);
        other_ip[0] = ("aws:sourceip", vec!["192.168.1.7"]);
        assert_eq!(decide(&p, act, T, &other_ip), Decision::Allow);
        assert_eq!(decide(&p, act, T, &base[..1]), Decision::ImplicitDeny);
        let mut tls = base.clone();
        tls[2] = ("aws:securetransport", vec!["true"]);
        assert_eq!(decide(&p, act, T, &tls), Decision::ImplicitDeny);
    }

    #[test]
    fn malformed_documents_are_refused_with_the_line() {
        let bad = |json: &str| {
            serde_json::from_str::<Policy>(json)
                .unwrap_err()
                .to_string()
        };
        let e = bad("{\"Statement\":\n{\"Effect\":\"Alow\",\"Action\":\"*\",\"Resource\":\"*\"}}");
        assert!(e.contains("Alow") && e.contains("line 2"), "{e}");
        assert!(
            bad(r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#)
                .contains("Action or NotAction")
        );
        assert!(
            bad(r#"{"Statement":{"Effect":"Allow","Action":"GetItem","Resource":"*"}}"#)
                .contains("service:action")
        );
        assert!(
            bad(r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"table/x"}}"#)
                .contains("ARN format")
        );
        assert!(bad(r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"NumericLessThan":{"a":1}}}}"#).contains("not supported"));
        assert!(bad(r#"{"Version":"2020-01-01","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#).contains("version"));
        assert!(bad(r#"{"Statement":[],"Extra":1}"#).contains("Extra"));
    }
}
