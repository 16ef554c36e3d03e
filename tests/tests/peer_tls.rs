//! Mutual TLS between the nodes and the router of a three-zone cluster:
//! the cluster serves the DynamoDB API as usual while every internal
//! connection is TLS with a certificate of the cluster's CA; a client of
//! the internal port without a certificate, or with one from another CA,
//! gets nothing from it (docs/security.md, "Internal surface").

use aws_sdk_dynamodb::types::AttributeValue;
use dynaraft_cluster::admin;
use dynaraft_cluster::remote::Remote;
use dynaraft_raft::grpc::Channels;
use dynaraft_raft::tls::{DEFAULT_PEER_SERVER_NAME, PeerTls};
use dynaraft_tests::cluster::TestCluster;
use std::sync::Arc;

/// A CA, and a member certificate it signs for `name`: (CA PEM, cert PEM,
/// key PEM).
fn pki(ca_name: &str, name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("signed");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn member(ca: &str, cert: &str, key: &str) -> Arc<PeerTls> {
    Arc::new(PeerTls::from_pem(
        ca.as_bytes(),
        cert.as_bytes(),
        key.as_bytes(),
        DEFAULT_PEER_SERVER_NAME,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_members_with_the_clusters_certificates_reach_the_internal_port() {
    let (ca, cert, key) = pki("cluster CA", DEFAULT_PEER_SERVER_NAME);
    let tls = member(&ca, &cert, &key);
    let c = TestCluster::start_with_peer_tls("peer-tls", tls.clone()).await;
    dynaraft_tests::create_table(&c.client, "over_tls", None).await;
    c.client
        .put_item()
        .table_name("over_tls")
        .item("pk", AttributeValue::S("k".into()))
        .send()
        .await
        .expect("a write replicated over TLS");
    let got = c
        .client
        .get_item()
        .table_name("over_tls")
        .key("pk", AttributeValue::S("k".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("read");
    assert!(got.item().is_some());

    // A member's certificate reads the catalog.
    let as_member = Remote::new(Channels::default().with_tls(Some(tls)));
    let rows = admin::partitions(&as_member, &c.members)
        .await
        .expect("member");
    assert!(rows.iter().any(|r| r.table == "over_tls"), "{rows:?}");
    // Plaintext, or a certificate of another CA, gets nothing.
    let plaintext = Remote::default();
    assert!(admin::partitions(&plaintext, &c.members).await.is_err());
    let (other_ca, other_cert, other_key) = pki("someone else's CA", DEFAULT_PEER_SERVER_NAME);
    let stranger =
        Remote::new(Channels::default().with_tls(Some(member(&other_ca, &other_cert, &other_key))));
    assert!(admin::partitions(&stranger, &c.members).await.is_err());
    // A client trusting the cluster's CA but holding a stranger's
    // certificate is refused by the server.
    let impostor =
        Remote::new(Channels::default().with_tls(Some(member(&ca, &other_cert, &other_key))));
    assert!(admin::partitions(&impostor, &c.members).await.is_err());
    c.stop().await;
}

/// Users kept by the control plane (`dynaraft admin put-user`): a router
/// with no auth file accepts any signature until the first user exists,
/// then authenticates and authorizes every request with the kept users,
/// and a deleted user is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_kept_by_the_control_plane_authenticate_every_router() {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let c = TestCluster::start("kept-users", 3, 1).await;
    let remote = Remote::default();
    c.client
        .list_tables()
        .send()
        .await
        .expect("no users yet: open");
    let client = |key: &str, secret: &str| {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(key, secret, None, None, "test"))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .endpoint_url(format!("http://{}", c.api_addr))
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    };
    let reader: dynaraft_storage::UserRecord = serde_json::from_value(serde_json::json!({
        "access_key_id": "KEPT", "secret_access_key": "kept-secret", "account_id": "000000000000",
        "policies": [{"Version": "2012-10-17",
                      "Statement": {"Effect": "Allow", "Action": "dynamodb:ListTables", "Resource": "*"}}]
    }))
    .expect("record");
    dynaraft_api::auth::user_of(&reader).expect("a valid user");
    admin::put_user(&remote, &c.members, reader)
        .await
        .expect("put");
    let listing = admin::users(&remote, &c.members).await.expect("users");
    assert!(
        listing.contains("KEPT") && !listing.contains("kept-secret"),
        "{listing}"
    );
    let kept = client("KEPT", "kept-secret");
    // The router learns the user with the catalog.
    let mut served = false;
    for _ in 0..100 {
        if kept.list_tables().send().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "the kept user was never authenticated");
    let e = client("KEPT", "wrong")
        .list_tables()
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(dynaraft_tests::err_of(&e).0, "InvalidSignatureException");
    let e = c
        .client
        .list_tables()
        .send()
        .await
        .expect_err("no longer open");
    assert_eq!(dynaraft_tests::err_of(&e).0, "UnrecognizedClientException");
    let e = kept
        .create_table()
        .table_name("nope")
        .send()
        .await
        .expect_err("only ListTables is allowed");
    assert_eq!(dynaraft_tests::err_of(&e).0, "AccessDeniedException");
    admin::delete_user(&remote, &c.members, "KEPT")
        .await
        .expect("delete");
    let refused = admin::delete_user(&remote, &c.members, "KEPT").await;
    assert!(refused.is_err(), "deleting a missing user is refused");
    // With no user left, the router is open again.
    let mut open = false;
    for _ in 0..100 {
        if c.client.list_tables().send().await.is_ok() {
            open = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(open, "the router never saw the user deleted");
    c.stop().await;
}
