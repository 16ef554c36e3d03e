//! HTTPS on the API through the Rust SDK: a client trusting the server's
//! certificate is served, over TLS (`aws:SecureTransport`); plain HTTP to
//! the TLS port is not; a renewed certificate is picked up without a
//! restart, and a broken one is refused while the old one keeps serving.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use dynaraft_api::ApiConfig;
use dynaraft_api::tls::Tls;
use dynaraft_tests::{TestServer, err_of};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM, key
/// PEM).
fn certificate(name: &str) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).expect("cert");
    std::fs::write(&k, key).expect("key");
    (c, k)
}

/// An SDK client for `https://localhost:port` trusting only `cert_pem`.
fn client(port: u16, cert_pem: &str, key: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(TrustStore::empty().with_pem_certificate(cert_pem.as_bytes()))
                .build()
                .expect("tls context"),
        )
        .build_https();
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, "s", None, None, "test"))
        .http_client(http)
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .endpoint_url(format!("https://localhost:{port}"))
        .build();
    Client::from_conf(conf)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dynaraft-tls-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_and_reloads_a_renewed_certificate() {
    let dir = temp_dir();
    let first = certificate("first");
    let (cert, key) = write(&dir, &first);
    let tls = Arc::new(Tls::load(&cert, &key).expect("load"));
    // Only requests that came over TLS are allowed.
    let auth = r#"{"users": [{"access_key_id": "K", "secret_access_key": "s", "account_id": "000000000000",
        "policies": [{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "dynamodb:*",
          "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}}}]}]}"#;
    let cfg = ApiConfig {
        tls: Some(tls.clone()),
        auth: Some(Arc::new(
            dynaraft_api::auth::Auth::parse(auth, "us-east-1").expect("auth"),
        )),
        ..TestServer::config()
    };
    let ts = TestServer::start_config(None, cfg).await;
    let port = ts.addr.port();
    let trusting_first = client(port, &first.0, "K");
    trusting_first
        .list_tables()
        .send()
        .await
        .expect("served over TLS, allowed by aws:SecureTransport");
    dynaraft_tests::create_table(&trusting_first, "tls", None).await;

    // Plain HTTP to the TLS port gets no HTTP answer.
    let (status, _, _) = ts.raw(Some("ListTables"), &[dynaraft_tests::AUTH], b"{}");
    assert_eq!(status, 0, "plain HTTP must not be served on the TLS port");

    // A broken renewal is refused and the first certificate keeps serving.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    assert!(tls.reload_if_changed().is_err());
    trusting_first
        .list_tables()
        .send()
        .await
        .expect("old certificate still served");

    // A renewed certificate is served to new connections.
    let second = certificate("second");
    write(&dir, &second);
    assert_eq!(tls.reload_if_changed(), Ok(true));
    let trusting_second = client(port, &second.0, "K");
    let tables = trusting_second
        .list_tables()
        .send()
        .await
        .expect("new certificate");
    assert_eq!(tables.table_names(), ["tls"]);
    let fresh_first = client(port, &first.0, "K");
    let e = fresh_first
        .list_tables()
        .send()
        .await
        .expect_err("old certificate gone");
    assert_eq!(err_of(&e).0, "<not a service error>", "{e:?}");
    ts.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_transport_is_false_over_plain_http() {
    let auth = r#"{"users": [{"access_key_id": "AKID", "secret_access_key": "SECRET", "account_id": "000000000000",
        "policies": [{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "dynamodb:*",
          "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}}}]}]}"#;
    let cfg = ApiConfig {
        auth: Some(Arc::new(
            dynaraft_api::auth::Auth::parse(auth, "us-east-1").expect("auth"),
        )),
        ..TestServer::config()
    };
    let ts = TestServer::start_config(None, cfg).await;
    let e = ts
        .client
        .list_tables()
        .send()
        .await
        .expect_err("plain HTTP");
    assert_eq!(err_of(&e).0, "AccessDeniedException");
    ts.stop().await;
}
