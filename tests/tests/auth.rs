//! Authentication (SigV4) and authorization (IAM policies) through real
//! clients: the Rust SDK, and raw requests signed by `aws-sigv4` and then
//! tampered with. Checks the DynamoDB Developer Guide's "Using IAM policy
//! conditions for fine-grained access control" and the IAM policy
//! evaluation logic (explicit deny, default deny).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};
use dynaraft_api::ApiConfig;
use dynaraft_api::auth::Auth;
use dynaraft_tests::schema::{attr, key};
use dynaraft_tests::signing::{Signer, signed};
use dynaraft_tests::{TestServer, client_with_secret, err_of};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/Orders";

/// One user per policy element under test (all in the server's own
/// account but `OTHER`).
fn auth_file() -> String {
    json!({"users": [
        {"access_key_id": "AKID", "secret_access_key": "SECRET", "account_id": "000000000000",
         "name": "admin",
         "policies": [{"Version": "2012-10-17",
                       "Statement": {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}}]},
        {"access_key_id": "READER", "secret_access_key": "s", "account_id": "000000000000",
         "policies": [{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Describe*"],
             "Resource": [TABLE_ARN, format!("{TABLE_ARN}/index/*")]},
            {"Effect": "Deny", "Action": "dynamodb:Query",
             "Resource": format!("{TABLE_ARN}/index/secret")}]}]},
        {"access_key_id": "TENANT", "secret_access_key": "s", "account_id": "000000000000",
         "name": "alice",
         "policies": [{"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query",
                                          "dynamodb:BatchWriteItem"],
            "Resource": TABLE_ARN,
            "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${aws:username}"]}}}}]},
        {"access_key_id": "ATTRS", "secret_access_key": "s", "account_id": "000000000000",
         "policies": [{"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Scan"],
            "Resource": TABLE_ARN,
            "Condition": {
                "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "nick"]},
                "StringEqualsIfExists": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES",
                                         "dynamodb:ReturnValues": ["NONE", "UPDATED_NEW"]}}}}]},
        {"access_key_id": "REMOTE", "secret_access_key": "s", "account_id": "000000000000",
         "policies": [{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*",
             "Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
            {"Effect": "Allow", "Action": "dynamodb:DescribeTable", "Resource": "*",
             "Condition": {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "127.0.0.1"]}}}]}]},
        {"access_key_id": "NODELETE", "secret_access_key": "s", "account_id": "000000000000",
         "policies": [{"Version": "2012-10-17", "Statement": {
            "Effect": "Allow", "NotAction": "dynamodb:Delete*", "NotResource": format!("{TABLE_ARN}2")}}]},
        {"access_key_id": "NOBODY", "secret_access_key": "s", "account_id": "000000000000"},
        {"access_key_id": "OTHER", "secret_access_key": "s", "account_id": "111122223333",
         "policies": [{"Version": "2012-10-17",
                       "Statement": {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}}]},
        {"access_key_id": "PARTNER", "secret_access_key": "s", "account_id": "222233334444",
         "policies": [{"Version": "2012-10-17",
                       "Statement": {"Effect": "Allow", "Action": "dynamodb:GetItem",
                                     "Resource": "arn:aws:dynamodb:*:000000000000:table/*"}}]}
    ]})
    .to_string()
}

async fn server() -> TestServer {
    let auth = Auth::parse(&auth_file(), "us-east-1").expect("auth file");
    let cfg = ApiConfig {
        auth: Some(Arc::new(auth)),
        ..TestServer::config()
    };
    let ts = TestServer::start_config(None, cfg).await;
    // The harness' client signs as AKID/SECRET: the admin.
    ts.client
        .create_table()
        .table_name("Orders")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::S))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            aws_sdk_dynamodb::types::GlobalSecondaryIndex::builder()
                .index_name("secret")
                .key_schema(key("pk", KeyType::Hash))
                .projection(dynaraft_tests::schema::all())
                .build()
                .expect("gsi"),
        )
        .stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewImage)
                .build()
                .expect("stream spec"),
        )
        .send()
        .await
        .expect("create Orders");
    ts
}

fn user(ts: &TestServer, key: &str) -> Client {
    client_with_secret(ts.addr, key, "s", "us-east-1")
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// Asserts that an SDK call was refused with AccessDeniedException.
fn denied<T: std::fmt::Debug, E, R>(
    r: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
    what: &str,
) where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let e = r.expect_err(what);
    assert_eq!(err_of(&e).0, "AccessDeniedException", "{what}");
}

/// The error type and message of a raw response body.
fn error_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let ty = v["__type"]
        .as_str()
        .unwrap_or("")
        .rsplit('#')
        .next()
        .unwrap_or("")
        .to_string();
    let msg = v["message"]
        .as_str()
        .or(v["Message"].as_str())
        .unwrap_or("")
        .to_string();
    (ty, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_and_each_failure_has_its_error() {
    let ts = server().await;
    let admin = &ts.client;
    admin.list_tables().send().await.expect("admin lists");
    let wrong_secret = client_with_secret(ts.addr, "AKID", "not-the-secret", "us-east-1");
    let e = wrong_secret
        .list_tables()
        .send()
        .await
        .expect_err("wrong secret");
    let (code, msg) = err_of(&e);
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        msg.starts_with("The request signature we calculated does not match"),
        "{msg}"
    );
    let unknown = client_with_secret(ts.addr, "NOSUCHKEY", "x", "us-east-1");
    let e = unknown.list_tables().send().await.expect_err("unknown key");
    assert_eq!(
        err_of(&e),
        (
            "UnrecognizedClientException".into(),
            "The security token included in the request is invalid.".into()
        )
    );
    let elsewhere = client_with_secret(ts.addr, "AKID", "SECRET", "eu-west-1");
    let e = elsewhere
        .list_tables()
        .send()
        .await
        .expect_err("other region");
    assert_eq!(
        err_of(&e),
        (
            "InvalidSignatureException".into(),
            "Credential should be scoped to a valid region. ".into()
        )
    );
    let (_, _, body) = ts.raw(Some("ListTables"), &[], b"{}");
    assert_eq!(error_of(&body).0, "MissingAuthenticationTokenException");
    let (_, _, body) = ts.raw(Some("ListTables"), &[("Authorization", "AWS4-")], b"{}");
    let (ty, msg) = error_of(&body);
    assert_eq!(ty, "IncompleteSignatureException");
    assert!(
        msg.contains("requires 'Credential' parameter") && msg.ends_with("Authorization=AWS4-"),
        "{msg}"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_any_signed_part_is_refused() {
    let ts = server().await;
    let signer = Signer::new("AKID", "SECRET");
    let body = r#"{"TableName":"Orders","Item":{"pk":{"S":"a"},"sk":{"S":"1"}}}"#;
    let ok = signed(ts.addr, &signer, "PutItem", body);
    assert_eq!(
        ok.send(ts.addr).0,
        200,
        "an untouched signed request is served"
    );
    let presigned = signed(
        ts.addr,
        &Signer {
            presigned: true,
            ..signer.clone()
        },
        "PutItem",
        body,
    );
    assert!(
        presigned.path.contains("X-Amz-Signature="),
        "{}",
        presigned.path
    );
    assert_eq!(
        presigned.send(ts.addr).0,
        200,
        "{:?}",
        presigned.send(ts.addr)
    );

    let mismatch = |r: &dynaraft_tests::signing::Signed, what: &str| {
        let (status, body) = r.send(ts.addr);
        let (ty, msg) = error_of(&body);
        assert_eq!(
            (status, ty.as_str()),
            (400, "InvalidSignatureException"),
            "{what}: {body}"
        );
        assert!(
            msg.starts_with("The request signature we calculated"),
            "{what}: {msg}"
        );
    };
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    r.body = body.replace("\"a\"", "\"b\"").into_bytes();
    mismatch(&r, "body");
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    r.set_header("x-amz-target", "DynamoDB_20120810.DeleteItem");
    r.body = br#"{"TableName":"Orders","Key":{"pk":{"S":"a"},"sk":{"S":"1"}}}"#.to_vec();
    mismatch(&r, "target and body");
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    r.set_header("content-type", "application/json");
    mismatch(&r, "a signed header");
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    let later = dynaraft_api::auth::sigv4::format_amz_date(signer.at + Duration::from_secs(1));
    r.set_header("x-amz-date", &later);
    mismatch(&r, "the date");
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    let auth = r.header("authorization").expect("auth").to_string();
    r.set_header("authorization", &auth.replace("content-type;", ""));
    mismatch(&r, "the signed header list");
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    let sig_at = auth.find("Signature=").expect("sig") + "Signature=".len();
    let mut flipped = auth.clone();
    let c = if &auth[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    flipped.replace_range(sig_at..sig_at + 1, c);
    r.set_header("authorization", &flipped);
    mismatch(&r, "the signature");
    let mut r = signed(
        ts.addr,
        &Signer {
            presigned: true,
            ..signer.clone()
        },
        "PutItem",
        body,
    );
    r.path = r.path.replace("X-Amz-Expires=300", "X-Amz-Expires=301");
    mismatch(&r, "a presigned query parameter");
    let mut r = signed(ts.addr, &signer, "PutItem", body);
    r.set_header(
        "authorization",
        &auth.replace("/us-east-1/dynamodb/", "/us-east-1/sts/"),
    );
    let (_, msg) = error_of(&r.send(ts.addr).1);
    assert_eq!(
        msg,
        "Credential should be scoped to correct service: 'dynamodb'. "
    );

    // Replayed after the 15-minute window, or dated ahead of it.
    let stale = Signer {
        at: SystemTime::now() - Duration::from_secs(16 * 60),
        ..signer.clone()
    };
    let (_, msg) = error_of(&signed(ts.addr, &stale, "PutItem", body).send(ts.addr).1);
    assert!(
        msg.starts_with("Signature expired: ") && msg.ends_with(" - 15 min.)"),
        "{msg}"
    );
    let ahead = Signer {
        at: SystemTime::now() + Duration::from_secs(16 * 60),
        ..signer.clone()
    };
    let (_, msg) = error_of(&signed(ts.addr, &ahead, "PutItem", body).send(ts.addr).1);
    assert!(msg.starts_with("Signature not yet current: "), "{msg}");
    // None of the refused writes reached storage: only "a" was written.
    let items = ts
        .client
        .scan()
        .table_name("Orders")
        .send()
        .await
        .expect("scan");
    assert_eq!(items.count(), 1);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_resources_decide_with_explicit_deny_winning() {
    let ts = server().await;
    let reader = user(&ts, "READER");
    reader
        .get_item()
        .table_name("Orders")
        .key("pk", s("a"))
        .key("sk", s("1"))
        .send()
        .await
        .expect("reader may get");
    let e = reader
        .put_item()
        .table_name("Orders")
        .item("pk", s("a"))
        .item("sk", s("1"))
        .send()
        .await
        .expect_err("reader may not put");
    assert_eq!(
        err_of(&e),
        (
            "AccessDeniedException".into(),
            format!(
                "User: arn:aws:iam::000000000000:user/READER is not authorized to perform: dynamodb:PutItem on resource: {TABLE_ARN} because no identity-based policy allows the dynamodb:PutItem action"
            )
        )
    );
    denied(
        reader.describe_table().table_name("Other").send().await,
        "other table",
    );
    // The index wildcard allows an index's Query, the Deny on one index wins.
    let query = |index: &str| {
        reader
            .query()
            .table_name("Orders")
            .index_name(index)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s("a"))
            .send()
    };
    let e = query("secret").await.expect_err("denied index");
    let (code, msg) = err_of(&e);
    assert_eq!(code, "AccessDeniedException");
    assert!(msg.ends_with(&format!("on resource: {TABLE_ARN}/index/secret with an explicit deny in an identity-based policy")), "{msg}");
    let e = query("open").await.expect_err("no such index");
    assert_eq!(
        err_of(&e).0,
        "ValidationException",
        "allowed, then refused for the index"
    );
    // NotAction / NotResource: everything but deletes, anywhere but Orders2.
    let nodelete = user(&ts, "NODELETE");
    nodelete.list_tables().send().await.expect("list");
    denied(
        nodelete
            .delete_item()
            .table_name("Orders")
            .key("pk", s("a"))
            .key("sk", s("1"))
            .send()
            .await,
        "no deletes",
    );
    denied(
        nodelete.describe_table().table_name("Orders2").send().await,
        "not Orders2",
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_keys_confine_a_user_to_their_items() {
    let ts = server().await;
    let alice = user(&ts, "TENANT");
    let put = |pk: &str| {
        alice
            .put_item()
            .table_name("Orders")
            .item("pk", s(pk))
            .item("sk", s("1"))
            .send()
    };
    put("alice").await.expect("her own partition");
    assert_eq!(
        err_of(&put("bob").await.expect_err("not bob's")).0,
        "AccessDeniedException"
    );
    let q = |pk: &str| {
        alice
            .query()
            .table_name("Orders")
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(pk))
            .send()
    };
    assert_eq!(q("alice").await.expect("query own").count(), 1);
    assert_eq!(
        err_of(&q("bob").await.expect_err("query bob")).0,
        "AccessDeniedException"
    );
    // A batch is allowed only if every key is hers.
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let w = |pk: &str| {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .item("pk", s(pk))
                    .item("sk", s("2"))
                    .build()
                    .expect("put"),
            )
            .build()
    };
    denied(
        alice
            .batch_write_item()
            .request_items("Orders", vec![w("alice"), w("bob")])
            .send()
            .await,
        "mixed batch",
    );
    alice
        .batch_write_item()
        .request_items("Orders", vec![w("alice")])
        .send()
        .await
        .expect("own batch");
    let all = ts
        .client
        .scan()
        .table_name("Orders")
        .send()
        .await
        .expect("scan");
    let pks: Vec<&str> = all
        .items()
        .iter()
        .filter_map(|i| i.get("pk")?.as_s().ok().map(|s| s.as_str()))
        .collect();
    assert!(
        pks.iter().all(|p| *p == "alice"),
        "nothing of bob's was written: {pks:?}"
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_select_and_return_values_are_condition_keys() {
    let ts = server().await;
    ts.client
        .put_item()
        .table_name("Orders")
        .item("pk", s("a"))
        .item("sk", s("1"))
        .item("nick", s("p"))
        .item("ssn", s("x"))
        .send()
        .await
        .expect("admin put");
    let u = user(&ts, "ATTRS");
    let get = |projection: Option<&str>| {
        let mut g = u
            .get_item()
            .table_name("Orders")
            .key("pk", s("a"))
            .key("sk", s("1"));
        if let Some(p) = projection {
            g = g.projection_expression(p);
        }
        g.send()
    };
    let item = get(Some("pk, nick")).await.expect("allowed attributes");
    assert_eq!(item.item().and_then(|i| i.get("nick")), Some(&s("p")));
    assert_eq!(
        err_of(&get(Some("ssn")).await.expect_err("ssn")).0,
        "AccessDeniedException"
    );
    assert_eq!(
        err_of(&get(None).await.expect_err("every attribute")).0,
        "AccessDeniedException",
        "a read without a projection reads every attribute (Select ALL_ATTRIBUTES)"
    );
    let scan = |select: aws_sdk_dynamodb::types::Select| {
        u.scan()
            .table_name("Orders")
            .select(select)
            .projection_expression("pk")
            .send()
    };
    use aws_sdk_dynamodb::types::Select;
    scan(Select::SpecificAttributes).await.expect("specific");
    // A filter names attributes too.
    denied(
        u.scan()
            .table_name("Orders")
            .projection_expression("pk")
            .filter_expression("ssn = :v")
            .expression_attribute_values(":v", s("x"))
            .send()
            .await,
        "filter on secret",
    );
    let update = |expr: &str, rv: aws_sdk_dynamodb::types::ReturnValue| {
        u.update_item()
            .table_name("Orders")
            .key("pk", s("a"))
            .key("sk", s("1"))
            .update_expression(expr)
            .expression_attribute_values(":v", s("q"))
            .return_values(rv)
            .send()
    };
    use aws_sdk_dynamodb::types::ReturnValue;
    update("SET nick = :v", ReturnValue::UpdatedNew)
        .await
        .expect("public, UPDATED_NEW");
    denied(
        update("SET nick = :v", ReturnValue::AllOld).await,
        "ALL_OLD",
    );
    denied(update("SET ssn = :v", ReturnValue::None).await, "ssn");
    // A condition naming a forbidden attribute is refused (it would let
    // the caller probe its value).
    denied(
        u.update_item()
            .table_name("Orders")
            .key("pk", s("a"))
            .key("sk", s("1"))
            .update_expression("SET nick = :v")
            .condition_expression("ssn = :v")
            .expression_attribute_values(":v", s("x"))
            .send()
            .await,
        "condition on secret",
    );
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_conditions_see_the_client_address() {
    let ts = server().await;
    let remote = user(&ts, "REMOTE");
    denied(remote.list_tables().send().await, "not from 127/8");
    remote
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("from 127.0.0.1");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_keep_their_tables_apart() {
    let ts = server().await;
    let other = user(&ts, "OTHER");
    let tables = other.list_tables().send().await.expect("list");
    assert!(
        tables.table_names().is_empty(),
        "Orders is the home account's"
    );
    dynaraft_tests::create_table(&other, "Orders", None).await;
    let d = other
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("describe");
    let arn = d
        .table()
        .and_then(|t| t.table_arn())
        .unwrap_or_default()
        .to_string();
    assert_eq!(arn, "arn:aws:dynamodb:us-east-1:111122223333:table/Orders");
    let home = ts
        .client
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("home");
    assert_eq!(home.table().and_then(|t| t.table_arn()), Some(TABLE_ARN));
    // Another account's table by its ARN is refused, never served from the
    // caller's own table of that name; an ARN held as data is just data.
    let e = other
        .get_item()
        .table_name(TABLE_ARN)
        .key("pk", s("a"))
        .send()
        .await
        .expect_err("another account's table");
    assert_eq!(
        err_of(&e),
        (
            "AccessDeniedException".to_string(),
            format!(
                "User: arn:aws:iam::111122223333:user/OTHER is not authorized to perform: dynamodb:GetItem on resource: {TABLE_ARN} because no resource-based policy allows the dynamodb:GetItem action"
            )
        )
    );
    let batch = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .keys(std::collections::HashMap::from([(
            "pk".to_string(),
            s("a"),
        )]))
        .build()
        .expect("keys");
    denied(
        other
            .batch_get_item()
            .request_items(TABLE_ARN, batch)
            .send()
            .await,
        "another account's table in RequestItems",
    );
    other
        .put_item()
        .table_name(&arn)
        .item("pk", s("ref"))
        .item("points_at", s(TABLE_ARN))
        .send()
        .await
        .expect("its own table by ARN, an ARN as a value");
    assert_eq!(
        home.table().map(|t| t.key_schema().len()),
        Some(2),
        "still the two-key table"
    );
    ts.stop().await;
}

/// Another account's table, named by ARN, is served where its
/// resource-based policy grants the caller and the caller's own policies
/// allow it too (IAM's cross-account rule: both must allow); a caller no
/// policy grants learns nothing of the table, not even that it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_based_policies_grant_other_accounts() {
    let ts = server().await;
    let admin = &ts.client;
    let other = user(&ts, "OTHER");
    let partner = user(&ts, "PARTNER");
    admin
        .put_item()
        .table_name("Orders")
        .item("pk", s("a"))
        .item("sk", s("1"))
        .item("v", s("home"))
        .send()
        .await
        .expect("put");
    let get = |c: &Client, table: &str| {
        c.get_item()
            .table_name(table)
            .key("pk", s("a"))
            .key("sk", s("1"))
            .send()
    };
    let refused = |e: &(String, String), who: &str, action: &str, arn: &str, why: &str| {
        assert_eq!(
            *e,
            (
                "AccessDeniedException".to_string(),
                format!(
                    "User: arn:aws:iam::{who} is not authorized to perform: dynamodb:{action} on resource: {arn} {why}"
                )
            )
        )
    };
    let by_other = |e: (String, String), action: &str, why: &str| {
        refused(&e, "111122223333:user/OTHER", action, TABLE_ARN, why)
    };
    // No grant yet: refused, and a table that does not exist is refused
    // the same way (no ResourceNotFoundException to probe with).
    let e = get(&other, TABLE_ARN).await.expect_err("no grant");
    let no_grant = "because no resource-based policy allows the dynamodb:GetItem action";
    by_other(err_of(&e), "GetItem", no_grant);
    let missing = "arn:aws:dynamodb:us-east-1:000000000000:table/Missing";
    let e = get(&other, missing).await.expect_err("missing table");
    refused(
        &err_of(&e),
        "111122223333:user/OTHER",
        "GetItem",
        missing,
        no_grant,
    );

    let grant = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "other", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::111122223333:user/OTHER"},
         "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:DescribeTable",
                    "dynamodb:BatchGetItem"],
         "Resource": TABLE_ARN},
        {"Sid": "partner", "Effect": "Allow", "Principal": {"AWS": "222233334444"},
         "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": TABLE_ARN},
        {"Sid": "nothome", "Effect": "Deny", "Principal": {"AWS": "111122223333"},
         "Action": "dynamodb:PutItem", "Resource": TABLE_ARN,
         "Condition": {"ForAnyValue:StringEquals": {"dynamodb:LeadingKeys": ["a"]}}}]})
    .to_string();
    admin
        .put_resource_policy()
        .resource_arn(TABLE_ARN)
        .policy(grant)
        .send()
        .await
        .expect("grant");

    // Granted: reads, writes, queries and describes the home table.
    let item = get(&other, TABLE_ARN).await.expect("granted read");
    assert_eq!(item.item().and_then(|i| i.get("v")), Some(&s("home")));
    other
        .put_item()
        .table_name(TABLE_ARN)
        .item("pk", s("b"))
        .item("sk", s("1"))
        .item("v", s("from other"))
        .send()
        .await
        .expect("granted write");
    let seen = get(admin, "Orders").await.expect("home read");
    assert_eq!(seen.item().and_then(|i| i.get("v")), Some(&s("home")));
    let written = admin
        .get_item()
        .table_name("Orders")
        .key("pk", s("b"))
        .key("sk", s("1"))
        .send()
        .await
        .expect("home read of the other account's write");
    assert_eq!(
        written.item().and_then(|i| i.get("v")),
        Some(&s("from other"))
    );
    let q = other
        .query()
        .table_name(TABLE_ARN)
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("b"))
        .send()
        .await
        .expect("granted query");
    assert_eq!(q.count(), 1);
    let d = other
        .describe_table()
        .table_name(TABLE_ARN)
        .send()
        .await
        .expect("granted describe");
    assert_eq!(d.table().and_then(|t| t.table_arn()), Some(TABLE_ARN));
    // Not granted: DeleteItem, though OTHER's own policy allows dynamodb:*.
    let e = other
        .delete_item()
        .table_name(TABLE_ARN)
        .key("pk", s("a"))
        .key("sk", s("1"))
        .send()
        .await
        .expect_err("no grant to delete");
    let why = "because no resource-based policy allows the dynamodb:DeleteItem action";
    by_other(err_of(&e), "DeleteItem", why);
    // The explicit Deny on partition key "a" wins over the grant.
    let e = other
        .put_item()
        .table_name(TABLE_ARN)
        .item("pk", s("a"))
        .item("sk", s("2"))
        .send()
        .await
        .expect_err("explicit deny");
    let why = "with an explicit deny in a resource-based policy";
    by_other(err_of(&e), "PutItem", why);

    // PARTNER's account is granted GetItem and PutItem; its own policy
    // allows GetItem only, so only GetItem is served.
    get(&partner, TABLE_ARN).await.expect("both allow");
    let e = partner
        .put_item()
        .table_name(TABLE_ARN)
        .item("pk", s("c"))
        .item("sk", s("1"))
        .send()
        .await
        .expect_err("its identity policy does not allow PutItem");
    let why = "because no identity-based policy allows the dynamodb:PutItem action";
    refused(
        &err_of(&e),
        "222233334444:user/PARTNER",
        "PutItem",
        TABLE_ARN,
        why,
    );

    // One account per request: OTHER's own table beside the home one's ARN.
    dynaraft_tests::create_table(&other, "Mine", None).await;
    let keys = |pk: &str, sk: Option<&str>| {
        let mut key = std::collections::HashMap::from([("pk".to_string(), s(pk))]);
        if let Some(sk) = sk {
            key.insert("sk".to_string(), s(sk));
        }
        aws_sdk_dynamodb::types::KeysAndAttributes::builder()
            .keys(key)
            .build()
            .expect("keys")
    };
    let e = other
        .batch_get_item()
        .request_items(TABLE_ARN, keys("a", Some("1")))
        .request_items("Mine", keys("a", None))
        .send()
        .await
        .expect_err("two accounts in one request");
    assert_eq!(err_of(&e).0, "ValidationException");
    // RequestItems name tables by ARN too, and answer under that ARN.
    let batch = other
        .batch_get_item()
        .request_items(TABLE_ARN, keys("a", Some("1")))
        .send()
        .await
        .expect("granted batch read");
    let got = batch.responses().and_then(|r| r.get(TABLE_ARN));
    assert_eq!(got.map(Vec::len), Some(1), "{batch:?}");

    // A stream's own policy grants reading it across accounts; the shard
    // iterator carries the stream's ARN to GetRecords.
    let stream_arn = admin
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("describe")
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("stream")
        .to_string();
    // The Streams API through raw signed requests (the Rust SDK keeps it
    // in another crate).
    let call = |key: &str, op: &str, body: String| -> (String, Value) {
        let signer = Signer::new(key, "s");
        let op = format!("DynamoDBStreams_20120810.{op}");
        let (_, body) = signed(ts.addr, &signer, &op, &body).send(ts.addr);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        (error_of(&body).0, v)
    };
    let describe = |key: &str| {
        call(
            key,
            "DescribeStream",
            json!({"StreamArn": stream_arn}).to_string(),
        )
    };
    assert_eq!(
        describe("OTHER").0,
        "AccessDeniedException",
        "no stream policy yet"
    );
    let stream_grant = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Principal": {"AWS": "111122223333"},
        "Action": ["dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"],
        "Resource": stream_arn}})
    .to_string();
    admin
        .put_resource_policy()
        .resource_arn(&stream_arn)
        .policy(stream_grant)
        .send()
        .await
        .expect("stream policy");
    let (error, shards) = describe("OTHER");
    assert_eq!(error, "", "granted describe stream: {shards}");
    let mut keys_seen = Vec::new();
    let empty = Vec::new();
    let shard_list = shards["StreamDescription"]["Shards"]
        .as_array()
        .unwrap_or(&empty);
    assert!(!shard_list.is_empty(), "{shards}");
    for shard in shard_list {
        let req = json!({"StreamArn": stream_arn, "ShardId": shard["ShardId"],
                         "ShardIteratorType": "TRIM_HORIZON"});
        let (error, it) = call("OTHER", "GetShardIterator", req.to_string());
        assert_eq!(error, "", "granted iterator: {it}");
        let req = json!({"ShardIterator": it["ShardIterator"]});
        let (error, records) = call("OTHER", "GetRecords", req.to_string());
        assert_eq!(error, "", "granted records: {records}");
        for r in records["Records"].as_array().unwrap_or(&empty) {
            if let Some(pk) = r["dynamodb"]["Keys"]["pk"]["S"].as_str() {
                keys_seen.push(pk.to_string());
            }
        }
    }
    keys_seen.sort();
    assert_eq!(
        keys_seen,
        ["a", "b"],
        "the home table's writes, by both accounts"
    );
    // PARTNER's account is not named by the stream's policy.
    assert_eq!(
        describe("PARTNER").0,
        "AccessDeniedException",
        "the stream grants OTHER's account only"
    );

    // The grant gone, so is the access.
    admin
        .delete_resource_policy()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect("delete policy");
    let e = get(&other, TABLE_ARN).await.expect_err("grant deleted");
    by_other(err_of(&e), "GetItem", no_grant);
    ts.stop().await;
}

/// A valid request body per operation against `Orders`, so that a missing
/// authorization check shows as a served request.
fn bodies(stream_arn: &str, shard: &str, iterator: &str) -> Vec<(&'static str, String)> {
    let key = r#"{"pk":{"S":"a"},"sk":{"S":"1"}}"#;
    let item = key;
    vec![
        ("BatchExecuteStatement", r#"{"Statements":[{"Statement":"SELECT * FROM \"Orders\" WHERE pk='a' AND sk='1'"}]}"#.into()),
        ("BatchGetItem", format!(r#"{{"RequestItems":{{"Orders":{{"Keys":[{key}]}}}}}}"#)),
        ("BatchWriteItem", format!(r#"{{"RequestItems":{{"Orders":[{{"PutRequest":{{"Item":{item}}}}}]}}}}"#)),
        ("CreateTable", r#"{"TableName":"New","AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"}],"KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"BillingMode":"PAY_PER_REQUEST"}"#.into()),
        ("DeleteItem", format!(r#"{{"TableName":"Orders","Key":{key}}}"#)),
        ("DeleteTable", r#"{"TableName":"Orders"}"#.into()),
        ("DescribeContinuousBackups", r#"{"TableName":"Orders"}"#.into()),
        ("UpdateContinuousBackups", r#"{"TableName":"Orders","PointInTimeRecoverySpecification":{"PointInTimeRecoveryEnabled":true}}"#.into()),
        ("CreateBackup", r#"{"TableName":"Orders","BackupName":"nightly"}"#.into()),
        ("DescribeBackup", format!(r#"{{"BackupArn":"{TABLE_ARN}/backup/01796286724569-5be42995"}}"#)),
        ("DeleteBackup", format!(r#"{{"BackupArn":"{TABLE_ARN}/backup/01796286724569-5be42995"}}"#)),
        ("ListBackups", "{}".into()),
        ("RestoreTableFromBackup", format!(r#"{{"TargetTableName":"Copy","BackupArn":"{TABLE_ARN}/backup/01796286724569-5be42995"}}"#)),
        ("RestoreTableToPointInTime", r#"{"SourceTableName":"Orders","TargetTableName":"Then","UseLatestRestorableTime":true}"#.into()),
        ("ExportTableToPointInTime", format!(r#"{{"TableArn":"{TABLE_ARN}","S3Bucket":"bkt"}}"#)),
        ("DescribeExport", format!(r#"{{"ExportArn":"{TABLE_ARN}/export/01796286724569-5be42995"}}"#)),
        ("ListExports", "{}".into()),
        ("ImportTable", r#"{"S3BucketSource":{"S3Bucket":"bkt"},"InputFormat":"CSV","TableCreationParameters":{"TableName":"Imported","AttributeDefinitions":[{"AttributeName":"pk","AttributeType":"S"}],"KeySchema":[{"AttributeName":"pk","KeyType":"HASH"}],"BillingMode":"PAY_PER_REQUEST"}}"#.into()),
        ("DescribeImport", format!(r#"{{"ImportArn":"{TABLE_ARN}/import/01796286724569-5be42995"}}"#)),
        ("ListImports", "{}".into()),
        ("DescribeEndpoints", "{}".into()),
        ("CreateGlobalTable", r#"{"GlobalTableName":"Orders","ReplicationGroup":[{"RegionName":"us-east-1"}]}"#.into()),
        ("DescribeGlobalTable", r#"{"GlobalTableName":"Orders"}"#.into()),
        ("DescribeGlobalTableSettings", r#"{"GlobalTableName":"Orders"}"#.into()),
        ("ListGlobalTables", "{}".into()),
        ("UpdateGlobalTable", r#"{"GlobalTableName":"Orders","ReplicaUpdates":[{"Delete":{"RegionName":"eu-west-1"}}]}"#.into()),
        ("UpdateGlobalTableSettings", r#"{"GlobalTableName":"Orders"}"#.into()),
        ("DescribeTableReplicaAutoScaling", r#"{"TableName":"Orders"}"#.into()),
        ("PutResourcePolicy", json!({"ResourceArn": TABLE_ARN, "Policy": json!({"Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Principal": "*", "Action": "dynamodb:GetItem", "Resource": TABLE_ARN}}).to_string()}).to_string()),
        ("GetResourcePolicy", json!({"ResourceArn": TABLE_ARN}).to_string()),
        ("DeleteResourcePolicy", json!({"ResourceArn": TABLE_ARN}).to_string()),
        ("DescribeContributorInsights", r#"{"TableName":"Orders"}"#.into()),
        ("ListContributorInsights", r#"{"TableName":"Orders"}"#.into()),
        ("UpdateContributorInsights", r#"{"TableName":"Orders","ContributorInsightsAction":"ENABLE"}"#.into()),
        ("DescribeLimits", "{}".into()),
        ("DescribeTable", r#"{"TableName":"Orders"}"#.into()),
        ("DescribeTimeToLive", r#"{"TableName":"Orders"}"#.into()),
        ("ExecuteStatement", r#"{"Statement":"SELECT * FROM \"Orders\" WHERE pk='a'"}"#.into()),
        ("ExecuteTransaction", r#"{"TransactStatements":[{"Statement":"UPDATE \"Orders\" SET x=1 WHERE pk='a' AND sk='1'"}]}"#.into()),
        ("GetItem", format!(r#"{{"TableName":"Orders","Key":{key}}}"#)),
        ("ListTables", "{}".into()),
        ("ListTagsOfResource", format!(r#"{{"ResourceArn":"{TABLE_ARN}"}}"#)),
        ("PutItem", format!(r#"{{"TableName":"Orders","Item":{item}}}"#)),
        ("Query", r#"{"TableName":"Orders","KeyConditionExpression":"pk = :p","ExpressionAttributeValues":{":p":{"S":"a"}}}"#.into()),
        ("Scan", r#"{"TableName":"Orders"}"#.into()),
        ("TagResource", format!(r#"{{"ResourceArn":"{TABLE_ARN}","Tags":[{{"Key":"k","Value":"v"}}]}}"#)),
        ("TransactGetItems", format!(r#"{{"TransactItems":[{{"Get":{{"TableName":"Orders","Key":{key}}}}}]}}"#)),
        ("TransactWriteItems", format!(r#"{{"TransactItems":[{{"Put":{{"TableName":"Orders","Item":{item}}}}}]}}"#)),
        ("UntagResource", format!(r#"{{"ResourceArn":"{TABLE_ARN}","TagKeys":["k"]}}"#)),
        ("UpdateItem", format!(r#"{{"TableName":"Orders","Key":{key},"UpdateExpression":"SET x = :v","ExpressionAttributeValues":{{":v":{{"N":"1"}}}}}}"#)),
        ("UpdateTable", r#"{"TableName":"Orders","DeletionProtectionEnabled":true}"#.into()),
        ("UpdateTimeToLive", r#"{"TableName":"Orders","TimeToLiveSpecification":{"Enabled":true,"AttributeName":"ttl"}}"#.into()),
        ("DynamoDBStreams_20120810.DescribeStream", format!(r#"{{"StreamArn":"{stream_arn}"}}"#)),
        ("DynamoDBStreams_20120810.GetRecords", format!(r#"{{"ShardIterator":"{iterator}"}}"#)),
        ("DynamoDBStreams_20120810.GetShardIterator", format!(r#"{{"StreamArn":"{stream_arn}","ShardId":"{shard}","ShardIteratorType":"TRIM_HORIZON"}}"#)),
        ("DynamoDBStreams_20120810.ListStreams", "{}".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_authorized_before_it_touches_storage() {
    let ts = server().await;
    let d = ts
        .client
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("describe");
    let stream_arn = d
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("stream")
        .to_string();
    let admin = Signer::new("AKID", "SECRET");
    let call = |s: &Signer, op: &str, body: &str| -> (u16, Value) {
        let (status, body) = signed(ts.addr, s, op, body).send(ts.addr);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    };
    let streams = "DynamoDBStreams_20120810";
    let (_, desc) = call(
        &admin,
        &format!("{streams}.DescribeStream"),
        &format!(r#"{{"StreamArn":"{stream_arn}"}}"#),
    );
    let shard = desc["StreamDescription"]["Shards"][0]["ShardId"]
        .as_str()
        .expect("shard")
        .to_string();
    let (_, it) = call(
        &admin,
        &format!("{streams}.GetShardIterator"),
        &format!(
            r#"{{"StreamArn":"{stream_arn}","ShardId":"{shard}","ShardIteratorType":"TRIM_HORIZON"}}"#
        ),
    );
    let iterator = it["ShardIterator"].as_str().expect("iterator").to_string();
    let bodies = bodies(&stream_arn, &shard, &iterator);
    let covered: Vec<&str> = bodies
        .iter()
        .map(|(op, _)| op.rsplit('.').next().unwrap_or(op))
        .collect();
    for op in dynaraft_api::ops::OPERATIONS
        .iter()
        .chain(dynaraft_api::ops::STREAM_OPERATIONS)
    {
        assert!(
            covered.contains(op),
            "{op} has no body here: add one so its authorization is tested"
        );
    }
    let nobody = Signer::new("NOBODY", "s");
    for (op, body) in &bodies {
        let (status, out) = call(&nobody, op, body);
        if *op == "BatchExecuteStatement" {
            // Refused statement by statement, as DynamoDB reports them.
            assert_eq!(
                out["Responses"][0]["Error"]["Code"], "AccessDenied",
                "{op}: {out}"
            );
            continue;
        }
        let ty = out["__type"].as_str().unwrap_or("");
        assert_eq!(
            (status, ty),
            (400, "com.amazon.coral.service#AccessDeniedException"),
            "{op}: {out}"
        );
        let action = op.rsplit('.').next().unwrap_or(op);
        let msg = out["Message"].as_str().unwrap_or("");
        let expected_action = match action {
            "ExecuteStatement" => "PartiQLSelect",
            "ExecuteTransaction" => "PartiQLUpdate",
            // Transactions need their items' actions.
            "TransactGetItems" => "GetItem",
            "TransactWriteItems" => "PutItem",
            a => a,
        };
        assert!(
            msg.contains(&format!(
                "perform: dynamodb:{expected_action} on resource: "
            )),
            "{op}: {msg}"
        );
    }
    // Nothing was written, dropped, tagged or changed.
    let d = ts
        .client
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("still there");
    assert_eq!(
        d.table().and_then(|t| t.deletion_protection_enabled()),
        Some(false)
    );
    let items = ts
        .client
        .scan()
        .table_name("Orders")
        .send()
        .await
        .expect("scan");
    assert_eq!(items.count(), 0);
    let tags = ts
        .client
        .list_tags_of_resource()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect("tags");
    assert!(tags.tags().is_empty());
    let ttl = ts
        .client
        .describe_time_to_live()
        .table_name("Orders")
        .send()
        .await
        .expect("ttl");
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|t| t.time_to_live_status())
            .map(|s| s.as_str()),
        Some("DISABLED")
    );
    let names = ts.client.list_tables().send().await.expect("list");
    assert_eq!(names.table_names(), ["Orders"]);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_did_what_to_which_resource() {
    let dir = std::env::temp_dir().join(format!("dynaraft-audit-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("audit.jsonl");
    let cfg = ApiConfig {
        auth: Some(Arc::new(
            Auth::parse(&auth_file(), "us-east-1").expect("auth"),
        )),
        audit: Some(Arc::new(
            dynaraft_api::audit::AuditLog::open(&path).expect("audit"),
        )),
        ..TestServer::config()
    };
    let ts = TestServer::start_config(None, cfg).await;
    dynaraft_tests::create_table(&ts.client, "Orders", None).await;
    let reader = user(&ts, "READER");
    reader
        .put_item()
        .table_name("Orders")
        .item("pk", s("a"))
        .send()
        .await
        .expect_err("denied");
    client_with_secret(ts.addr, "READER", "wrong", "us-east-1")
        .list_tables()
        .send()
        .await
        .expect_err("bad signature");
    // The writer flushes each batch; wait for the lines (CreateTable, then
    // whatever the helper polls, the refused put and the refused list).
    let mut lines = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
            .collect();
        if lines.iter().any(|l| l["eventName"] == "ListTables") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lines.len() >= 3, "{lines:?}");
    let create = &lines[0];
    assert_eq!(create["eventName"], "CreateTable");
    assert_eq!(
        create["principalArn"],
        "arn:aws:iam::000000000000:user/admin"
    );
    assert_eq!(create["accountId"], "000000000000");
    assert_eq!(create["sourceIpAddress"], "127.0.0.1");
    assert_eq!(create["resources"], json!([TABLE_ARN]));
    assert_eq!(create["status"], 200);
    assert!(create["errorCode"].is_null());
    let denied = lines
        .iter()
        .find(|l| l["eventName"] == "PutItem")
        .expect("put line");
    assert_eq!(
        denied["principalArn"],
        "arn:aws:iam::000000000000:user/READER"
    );
    assert_eq!(denied["errorCode"], "AccessDeniedException");
    assert_eq!(denied["resources"], json!([TABLE_ARN]));
    let unsigned = lines
        .iter()
        .find(|l| l["eventName"] == "ListTables")
        .expect("list line");
    assert!(
        unsigned["principalArn"].is_null(),
        "not authenticated: {unsigned}"
    );
    assert_eq!(unsigned["accessKeyId"], "READER");
    assert_eq!(unsigned["errorCode"], "InvalidSignatureException");
    ts.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_based_policies_grant_and_deny_beside_identity_policies() {
    let ts = server().await;
    let admin = &ts.client;
    let nobody = user(&ts, "NOBODY");
    let get = |c: &Client| {
        c.get_item()
            .table_name("Orders")
            .key("pk", s("a"))
            .key("sk", s("1"))
            .send()
    };
    admin
        .put_item()
        .table_name("Orders")
        .item("pk", s("a"))
        .item("sk", s("1"))
        .send()
        .await
        .expect("put");
    denied(get(&nobody).await, "no policy of any kind allows NOBODY");

    // A resource-based policy lets a principal it names read.
    let grant = json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "read", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:user/NOBODY"},
        "Action": ["dynamodb:GetItem"], "Resource": TABLE_ARN}]})
    .to_string();
    let put = |doc: String| {
        admin
            .put_resource_policy()
            .resource_arn(TABLE_ARN)
            .policy(doc)
    };
    let first = put(grant.clone()).send().await.expect("put policy");
    let r1 = first.revision_id().expect("revision").to_string();
    get(&nobody)
        .await
        .expect("the table's policy allows NOBODY to read");
    denied(
        nobody
            .put_item()
            .table_name("Orders")
            .item("pk", s("b"))
            .item("sk", s("1"))
            .send()
            .await,
        "the policy allows reads only",
    );
    let read = admin
        .get_resource_policy()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect("get policy");
    assert_eq!(read.revision_id(), Some(r1.as_str()));
    assert_eq!(
        read.policy(),
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"read","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/NOBODY"},"Action":"dynamodb:GetItem","Resource":"arn:aws:dynamodb:us-east-1:000000000000:table/Orders"}]}"#
        )
    );
    // The same policy again is no change.
    let again = put(grant.clone()).send().await.expect("same policy");
    assert_eq!(again.revision_id(), Some(r1.as_str()));

    // An explicit Deny in it wins over the admin's identity policy.
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "read", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:user/NOBODY"},
         "Action": "dynamodb:GetItem", "Resource": TABLE_ARN},
        {"Sid": "nowrites", "Effect": "Deny", "Principal": "*", "Action": "dynamodb:PutItem",
         "Resource": TABLE_ARN}]})
    .to_string();
    let second = put(deny.clone())
        .expected_revision_id(&r1)
        .send()
        .await
        .expect("replace at r1");
    let r2 = second.revision_id().expect("revision").to_string();
    assert!(r2 > r1, "{r2} after {r1}");
    let e = admin
        .put_item()
        .table_name("Orders")
        .item("pk", s("c"))
        .item("sk", s("1"))
        .send()
        .await
        .expect_err("denied by the resource policy");
    let (code, msg) = err_of(&e);
    assert_eq!(code, "AccessDeniedException");
    assert!(
        msg.ends_with("with an explicit deny in a resource-based policy"),
        "{msg}"
    );
    let stale = put(grant.clone())
        .expected_revision_id(&r1)
        .send()
        .await
        .expect_err("stale");
    assert_eq!(
        err_of(&stale),
        (
            "PolicyNotFoundException".to_string(),
            format!(
                "Resource-based policy not found for the provided ResourceArn: Requested update for policy with revision id {r1}, but the policy associated to target table Orders has revision id {r2}."
            )
        )
    );
    let none_expected = put(grant.clone())
        .expected_revision_id("NO_POLICY")
        .send()
        .await
        .expect_err("exists");
    assert_eq!(err_of(&none_expected).0, "PolicyNotFoundException");

    // A policy that would lock the caller out needs its confirmation.
    let lockout = json!({"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Principal": "*",
        "Action": "dynamodb:PutResourcePolicy", "Resource": TABLE_ARN}})
    .to_string();
    let e = put(lockout.clone()).send().await.expect_err("lockout");
    assert_eq!(
        err_of(&e),
        (
            "AccessDeniedException".to_string(),
            "The new resource policy will not allow you to update the resource policy in the future.".to_string()
        )
    );
    let still = admin
        .get_resource_policy()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect("get");
    assert_eq!(still.revision_id(), Some(r2.as_str()));

    // Bad ARNs and documents, as DynamoDB words them.
    let bad = |arn: &str, doc: &str| {
        admin
            .put_resource_policy()
            .resource_arn(arn)
            .policy(doc)
            .send()
    };
    let e = bad("Orders", &grant).await.expect_err("a name");
    assert_eq!(
        err_of(&e).1,
        "One or more parameter values were invalid: ARNs must start with 'arn:': Orders"
    );
    let e = bad(
        "arn:aws:dynamodb:us-east-1:111122223333:table/Orders",
        &grant,
    )
    .await
    .expect_err("other account");
    assert_eq!(
        err_of(&e).1,
        "This action is only supported by accounts that match the resource owner\u{2019}s account."
    );
    let e = bad(&format!("{TABLE_ARN}/index/byStatus"), &grant)
        .await
        .expect_err("index");
    assert!(
        err_of(&e).1.contains("only table or stream is accepted"),
        "{:?}",
        err_of(&e)
    );
    let e = bad(&format!("{TABLE_ARN}2"), &grant)
        .await
        .expect_err("missing");
    assert_eq!(
        err_of(&e),
        (
            "ResourceNotFoundException".to_string(),
            "Requested resource not found: Table: Orders2 not found".to_string()
        )
    );
    let no_principal = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}}"#;
    let e = bad(TABLE_ARN, no_principal)
        .await
        .expect_err("no principal");
    assert_eq!(err_of(&e).0, "ValidationException");
    let e = bad(TABLE_ARN, &"x".repeat(20 * 1024 + 1))
        .await
        .expect_err("too large");
    assert_eq!(err_of(&e).0, "ValidationException");

    // A stream's policy is its own.
    let d = admin
        .describe_table()
        .table_name("Orders")
        .send()
        .await
        .expect("describe");
    let stream_arn = d
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("stream")
        .to_string();
    let stream_grant = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Principal": {"AWS": "000000000000"}, "Action": "dynamodb:DescribeStream", "Resource": stream_arn}})
    .to_string();
    admin
        .put_resource_policy()
        .resource_arn(&stream_arn)
        .policy(stream_grant)
        .send()
        .await
        .expect("stream policy");
    let on_stream = admin
        .get_resource_policy()
        .resource_arn(&stream_arn)
        .send()
        .await
        .expect("get");
    assert!(
        on_stream
            .policy()
            .is_some_and(|p| p.contains("arn:aws:iam::000000000000:root"))
    );

    // Deleted: gone, and what it allowed and denied with it.
    let deleted = admin
        .delete_resource_policy()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect("delete");
    assert!(deleted.revision_id().is_some());
    let e = admin
        .get_resource_policy()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect_err("gone");
    assert_eq!(
        err_of(&e),
        (
            "PolicyNotFoundException".to_string(),
            format!("Resource-based policy not found for the provided ResourceArn: {TABLE_ARN}")
        )
    );
    denied(get(&nobody).await, "the grant went with the policy");
    admin
        .put_item()
        .table_name("Orders")
        .item("pk", s("c"))
        .item("sk", s("1"))
        .send()
        .await
        .expect("the deny went too");
    // Deleting no policy is done already.
    let again = admin
        .delete_resource_policy()
        .resource_arn(TABLE_ARN)
        .send()
        .await
        .expect("idempotent");
    assert!(again.revision_id().is_none());
    assert!(
        admin
            .get_resource_policy()
            .resource_arn(&stream_arn)
            .send()
            .await
            .is_ok()
    );

    // CreateTable can give the new table its policy.
    let granted_arn = TABLE_ARN.replace("Orders", "Granted");
    let policy = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::000000000000:user/NOBODY"},
        "Action": "dynamodb:GetItem", "Resource": granted_arn}})
    .to_string();
    admin
        .create_table()
        .table_name("Granted")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .key_schema(key("pk", KeyType::Hash))
        .resource_policy(policy)
        .send()
        .await
        .expect("create with a policy");
    nobody
        .get_item()
        .table_name("Granted")
        .key("pk", s("a"))
        .send()
        .await
        .expect("the create-time policy allows NOBODY");
    let read = admin
        .get_resource_policy()
        .resource_arn(&granted_arn)
        .send()
        .await;
    assert!(read.is_ok_and(|r| r.revision_id().is_some()));
    ts.stop().await;
}

/// A changed auth file takes effect without a restart: a user added can
/// sign in, a user removed cannot, a changed policy applies; a file that
/// does not parse leaves the users loaded before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_auth_file_is_reloaded() {
    let dir = std::env::temp_dir().join(format!("dynaraft-auth-reload-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("users.json");
    let user = |key: &str, action: &str| {
        json!({"access_key_id": key, "secret_access_key": "s", "account_id": "000000000000",
               "policies": [{"Version": "2012-10-17",
                             "Statement": {"Effect": "Allow", "Action": action, "Resource": "*"}}]})
    };
    let write = |users: Vec<Value>| {
        std::fs::write(&path, json!({ "users": users }).to_string()).expect("write auth file");
    };
    write(vec![user("FIRST", "dynamodb:*")]);
    let auth = Auth::load(&path, "us-east-1").expect("auth file");
    let cfg = ApiConfig {
        auth: Some(Arc::new(auth)),
        ..TestServer::config()
    };
    let ts = TestServer::start_config(None, cfg).await;
    let list = |key: &str| {
        let c = client_with_secret(ts.addr, key, "s", "us-east-1");
        async move { c.list_tables().send().await.map_err(|e| err_of(&e).0) }
    };
    assert!(list("FIRST").await.is_ok());
    assert_eq!(
        list("SECOND").await.unwrap_err(),
        "UnrecognizedClientException"
    );
    // The file changes: FIRST may no longer list tables, SECOND arrives.
    // (A new modification time: some filesystems keep whole seconds.)
    std::thread::sleep(Duration::from_millis(1_100));
    write(vec![
        user("FIRST", "dynamodb:GetItem"),
        user("SECOND", "dynamodb:ListTables"),
    ]);
    let reload = Duration::from_millis(dynaraft_api::auth::AUTH_RELOAD_CHECK_MS * 3);
    let deadline = std::time::Instant::now() + reload;
    while list("SECOND").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the changed auth file was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list("FIRST").await.unwrap_err(), "AccessDeniedException");
    // A broken file is not loaded: SECOND keeps working.
    std::thread::sleep(Duration::from_millis(1_100));
    std::fs::write(&path, "{ not json").expect("write");
    tokio::time::sleep(reload).await;
    assert!(
        list("SECOND").await.is_ok(),
        "a broken file replaced the users"
    );
    ts.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
