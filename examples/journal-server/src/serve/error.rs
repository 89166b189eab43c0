//! Why `serve` could not start or had to stop: exit 1 with the message.

use std::io;
use std::path::PathBuf;

use mailjournal::engine::{EngineError, EngineFailure};

/// Why the server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// A file or directory of its own could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another server holds the data directory.
    #[error("{}: the data directory is in use by another journal-server (pid {owner})", dir.display())]
    InUse { dir: PathBuf, owner: String },
    /// The TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The engine (spool recovery, archive store) did not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A listen address could not be bound.
    #[error("listen {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    /// The shared archive's settings or credentials cannot be used.
    #[error("[archive]: {0}")]
    Archive(String),
    /// The shared archive could not be opened.
    #[error("shared archive: {0}")]
    SharedArchive(#[source] mailjournal::archive::ArchiveError),
    /// The admin token file cannot be used.
    #[error("admin token {}: {reason}", path.display())]
    AdminToken { path: PathBuf, reason: String },
    /// The alert outbox could not be opened.
    #[error(transparent)]
    Alerts(#[from] mailjournal_admin::AlertError),
    /// The engine could no longer work: the server stopped so that a restart recovers.
    #[error(transparent)]
    Failed(#[from] EngineFailure),
}

/// Why a TLS certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// The key is not the certificate's, or not usable.
    #[error("TLS certificate {} with key {}: {source}", certificate.display(), key.display())]
    Pair {
        certificate: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The self-signed certificate could not be written for clients to trust.
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The generated key could not be read back.
    #[error("generated key: {0}")]
    Key(&'static str),
}
