//! HTTPS on the API: `--tls-cert` and `--tls-key` (PEM files: the
//! certificate chain, leaf first, and its private key) make every
//! connection a TLS one (TLS 1.2 or 1.3, rustls with the aws-lc-rs
//! provider, HTTP/1.1 by ALPN). The files are checked every
//! [`TLS_RELOAD_CHECK_MS`] and reloaded when either changes (a renewed
//! certificate needs no restart): new connections get the new certificate,
//! open ones keep theirs. A reload that fails (a half-written file, a key
//! that does not match) keeps the previous certificate and is logged and
//! counted; the next change is tried again.

use crate::reload::Watched;
use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;

/// How often the certificate and key files are checked for a change, in
/// milliseconds.
pub const TLS_RELOAD_CHECK_MS: u64 = 5_000;

/// The API's certificate, reloaded when its files change.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: ArcSwap<rustls::ServerConfig>,
    /// The files' modification times when last loaded.
    loaded: Watched,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "Tls {{ cert: {}, key: {} }}",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl Tls {
    /// Loads the certificate chain at `cert` and the private key at `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let loaded = Watched::new(&[cert, key]);
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: ArcSwap::from_pointee(config),
            loaded,
        })
    }

    /// What new connections are accepted with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Reloads the files if either changed since they were last loaded:
    /// `Ok(true)` if it did, `Err` (keeping the old certificate) if the new
    /// files do not load.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        if !self.loaded.changed() {
            return Ok(false);
        }
        let config = server_config(&self.cert, &self.key)?;
        self.config.store(Arc::new(config));
        Ok(true)
    }

    /// Checks the files every [`TLS_RELOAD_CHECK_MS`] until `stopped`.
    pub async fn watch(self: Arc<Tls>, stopped: tokio::sync::watch::Receiver<bool>) {
        let every = std::time::Duration::from_millis(TLS_RELOAD_CHECK_MS);
        let reload = || self.reload_if_changed();
        let failed = crate::metrics::tls_reload_failed;
        crate::reload::watch(every, stopped, "TLS certificate", reload, failed).await;
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in it",
            cert.display()
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "TLS certificate {} and key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
