//! TLS configuration: PEM files from the configuration, or a self-signed certificate for
//! `--dev`. One crypto provider for the whole build (`ring`), passed explicitly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// Loads a PEM certificate chain and private key.
pub(crate) fn load(certificate: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    config(chain, key)
}

/// Generates a self-signed certificate for `hostname` and `localhost`, writes it to
/// `dir/dev-cert.pem` (so clients can trust it) and returns the configuration and that path.
pub(crate) fn self_signed(
    dir: &Path,
    hostname: &str,
) -> Result<(Arc<ServerConfig>, PathBuf), String> {
    let names = vec![
        hostname.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    let cert_pem = certified.cert.pem();
    let path = dir.join("dev-cert.pem");
    std::fs::write(&path, &cert_pem).map_err(|e| format!("{}: {e}", path.display()))?;
    let chain = vec![certified.cert.der().clone()];
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| format!("key: {e}"))?;
    Ok((config(chain, key)?, path))
}
