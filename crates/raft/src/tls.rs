//! Mutual TLS between nodes and routers (`--peer-tls-ca`,
//! `--peer-tls-cert`, `--peer-tls-key`): every gRPC connection of the
//! cluster (Raft traffic, data calls, catalog reads, admin commands) is TLS
//! with both sides presenting a certificate signed by the cluster's CA. A
//! node serving with it refuses any client without such a certificate, so
//! only cluster members reach its groups, its items and its control plane;
//! a client checks that the server's certificate, signed by the same CA,
//! names [`PeerTls::server_name`] (one DNS name every member's certificate
//! carries, `dynaraft-peer` unless configured, so that members can be
//! dialled by IP address or by any host name).
//!
//! Caveats: membership is the CA's signature (a certificate the CA signed
//! for something else gets in too: give the cluster its own CA); there is
//! no revocation list; the files are read at start-up (a renewal needs a
//! restart of each member, one at a time).

use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name every member's certificate carries unless configured
/// otherwise.
pub const DEFAULT_PEER_SERVER_NAME: &str = "dynaraft-peer";

/// A member's certificate and key, and the CA that signs every member's.
#[derive(Clone)]
pub struct PeerTls {
    ca: Certificate,
    identity: Identity,
    /// The name a server's certificate must carry.
    pub server_name: String,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never the key.
        write!(f, "PeerTls {{ server_name: {} }}", self.server_name)
    }
}

impl PeerTls {
    /// Reads the CA certificate, this member's certificate chain and its
    /// private key (PEM files).
    pub fn load(ca: &Path, cert: &Path, key: &Path, server_name: &str) -> Result<PeerTls, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("peer TLS {what} {}: {e}", p.display()))
        };
        let (ca_pem, cert_pem, key_pem) = (
            read("CA", ca)?,
            read("certificate", cert)?,
            read("key", key)?,
        );
        let tls = PeerTls::from_pem(&ca_pem, &cert_pem, &key_pem, server_name);
        // Both configurations are checked now, so a bad file stops start-up
        // rather than every connection.
        tonic::transport::Server::builder()
            .tls_config(tls.server())
            .map_err(|e| format!("peer TLS (server side): {e}"))?;
        tonic::transport::Endpoint::from_static("https://peer.invalid")
            .tls_config(tls.client())
            .map_err(|e| format!("peer TLS (client side): {e}"))?;
        Ok(tls)
    }

    /// From PEM text.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8], server_name: &str) -> PeerTls {
        PeerTls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
            server_name: server_name.to_string(),
        }
    }

    /// A server that requires a client certificate signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// A client that presents this member's certificate and accepts only
    /// servers whose certificate the CA signed for [`Self::server_name`].
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(self.server_name.clone())
    }
}
