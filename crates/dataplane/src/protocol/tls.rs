//! TLS with rustls: the data port's listener (mTLS when a client CA is given) and the connections
//! to a pool's servers. Files are read once, at start; both sides speak HTTP/2 only (ALPN "h2").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// TLS on the data port; mTLS when `client_ca` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// TLS towards a pool's servers; a client certificate for mutual TLS.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>, // none: the system's roots
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>, // expected in the certificate when it differs from the host
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?
        .collect();
    let certificates = certificates.map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{key}: {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certificates)
}

fn private_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{key}: cannot read a private key from {}: {e}",
            path.display()
        )
    })
}

fn roots(path: &Path, key: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for certificate in certificates(path, key)? {
        store
            .add(certificate)
            .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    }
    Ok(store)
}

pub fn acceptor(tls: &ListenerTls) -> Result<TlsAcceptor, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "tls.client_ca")?),
                provider(),
            )
            .build()
            .map_err(|e| format!("tls.client_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            certificates(&tls.cert, "tls.cert")?,
            private_key(&tls.key, "tls.key")?,
        )
        .map_err(|e| format!("tls.key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connector for one pool, and the name to verify (the configured one, or the host's).
pub fn connector(tls: &UpstreamTls, pool: &str) -> Result<TlsConnector, String> {
    let prefix = format!("pools.{pool}.tls");
    let store = match &tls.ca {
        Some(ca) => roots(ca, &format!("{prefix}.ca"))?,
        None => {
            let mut store = RootCertStore::empty();
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(certificate);
            }
            store
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{prefix}: {e}"))?
        .with_root_certificates(store);
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certificates(cert, &format!("{prefix}.cert"))?,
                private_key(key, &format!("{prefix}.key"))?,
            )
            .map_err(|e| format!("{prefix}.key: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(format!(
                "{prefix}: give both cert and key for mutual TLS, or neither"
            ))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name a server's certificate must carry: the configured one, else the endpoint's host.
pub fn server_name(tls: &UpstreamTls, address: &str) -> Result<ServerName<'static>, String> {
    let host = match &tls.server_name {
        Some(name) => name.clone(),
        None => address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned(),
    };
    ServerName::try_from(host.clone())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))
}
