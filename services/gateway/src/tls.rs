//! Serving TLS with rustls (ring provider: no C toolchain beyond what `ring` needs).

use std::sync::Arc;

use infergate_config::{ConfigError, TlsSettings};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub fn server_config(t: &TlsSettings) -> Result<ServerConfig, ConfigError> {
    let cert_err = |detail: String| {
        ConfigError::invalid(
            "tls.cert (INFERGATE_TLS_CERT)",
            t.cert.display().to_string(),
            detail,
        )
    };
    let key_err = |detail: String| {
        ConfigError::invalid(
            "tls.key (INFERGATE_TLS_KEY)",
            t.key.display().to_string(),
            detail,
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| cert_err(format!("a readable PEM certificate chain ({e})")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("a readable PEM certificate chain ({e})")))?;
    if certs.is_empty() {
        return Err(cert_err(
            "a PEM file with at least one CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| {
        key_err(format!(
            "a readable PEM private key, PKCS#8, PKCS#1 or SEC1 ({e})"
        ))
    })?;
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| key_err(format!("a private key matching the certificate ({e})")))
}
