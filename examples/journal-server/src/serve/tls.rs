//! TLS configuration: PEM files from the configuration, or a self-signed certificate for
//! `--dev`. One crypto provider for the whole build (`ring`), passed explicitly.
//!
//! A certificate from files can be replaced while the server runs ([`FileCertificate::reload`],
//! on `SIGHUP`): CA-issued certificates, which Microsoft 365's connectors require, expire
//! every few months, and a restart should not be what renews them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::error::TlsError;

/// `ring`, with the AES-128-GCM suites first (the server's choice, see [`finish`]): their
/// SHA-256 key schedule runs on the CPU's SHA extensions, where SHA-384's does not. Nothing
/// weaker is offered; a client that offers only AES-256 or ChaCha20 still gets it.
fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

/// The server picks the suite by its own order (measured 2026-12-02: a full STARTTLS
/// handshake per message, AES-256-GCM-SHA384 as a rustls client prefers it against
/// AES-128-GCM-SHA256, see the README).
fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.ignore_client_order = true;
    Arc::new(config)
}

fn builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth())
}

/// The certificate chain and private key of two PEM files, checked to belong together.
fn read_pair(
    certificate: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Pem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(pem(certificate))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: certificate.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Pair {
        certificate: certificate.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// A certificate and key read from files, served to every client until replaced.
#[derive(Debug)]
pub(crate) struct FileCertificate {
    certificate: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl FileCertificate {
    /// Reads the files again and serves what they hold to the next clients (sessions already
    /// in TLS keep theirs). On any error (a file half written, a key that does not match the
    /// certificate) the current certificate stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.certificate, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// The certificate file, for logs.
    pub(crate) fn path(&self) -> &Path {
        &self.certificate
    }
}

impl ResolvesServerCert for FileCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Loads a PEM certificate chain and private key; the returned handle reloads them.
pub(crate) fn load(
    certificate: &Path,
    key: &Path,
) -> Result<(Arc<ServerConfig>, Arc<FileCertificate>), TlsError> {
    let provider = provider();
    let pair = read_pair(certificate, key, &provider)?;
    let files = Arc::new(FileCertificate {
        certificate: certificate.to_path_buf(),
        key: key.to_path_buf(),
        provider: provider.clone(),
        current: RwLock::new(Arc::new(pair)),
    });
    let config = builder(provider)?.with_cert_resolver(files.clone());
    Ok((finish(config), files))
}

/// Generates a self-signed certificate for `hostname` and `localhost`, writes it to
/// `dir/dev-cert.pem` (so clients can trust it) and returns the configuration and that path.
pub(crate) fn self_signed(
    dir: &Path,
    hostname: &str,
) -> Result<(Arc<ServerConfig>, PathBuf), TlsError> {
    let names = vec![
        hostname.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let cert_pem = certified.cert.pem();
    let path = dir.join("dev-cert.pem");
    std::fs::write(&path, &cert_pem).map_err(|source| TlsError::Write {
        path: path.clone(),
        source,
    })?;
    let chain = vec![certified.cert.der().clone()];
    let key =
        PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(TlsError::Key)?;
    let config = builder(provider())?.with_single_cert(chain, key)?;
    Ok((finish(config), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn served(files: &FileCertificate) -> Vec<u8> {
        let current = files.current.read().unwrap().clone();
        current.end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn a_reload_serves_the_new_pair_and_a_bad_one_keeps_the_current() {
        let dir = std::env::temp_dir().join(format!("journal-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = write_pair(&dir, "one.example");
        let (_, files) = load(&cert, &key).unwrap();
        let first = served(&files);

        let (cert2, key2) = write_pair(&dir, "two.example");
        std::fs::copy(&cert2, &cert).unwrap();
        // The certificate renewed, its key not yet: refused, the old pair stays.
        let refused = files.reload().unwrap_err();
        assert!(matches!(refused, TlsError::Pair { .. }), "{refused}");
        assert!(refused.to_string().contains("key"), "{refused}");
        assert_eq!(served(&files), first);
        std::fs::copy(&key2, &key).unwrap();
        files.reload().unwrap();
        let second = served(&files);
        assert_ne!(second, first);

        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
        assert!(files.reload().is_err());
        assert_eq!(
            served(&files),
            second,
            "a half-written file changes nothing"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
