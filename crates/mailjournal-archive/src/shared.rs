//! The shared backend, for several receivers on one archive: the index in PostgreSQL, the
//! content in S3-compatible object storage (Garage, MinIO, Ceph, AWS S3; through
//! `object_store`, whose other stores, GCS and Azure, the same code could serve).
//!
//! Each receiver keeps its own spool, the durability point of its `250`; archiving into the
//! shared backend is idempotent (content by hash, items by queue id, archived messages by
//! id and by de-duplication key), so a node that crashes midway archives again after
//! recovery without a duplicate. De-duplication is race-free across nodes: the key is a
//! unique index, and the second of two reports of one message archived at the same moment
//! by two nodes waits for the first's transaction, finds its message and merges into it.
//! Spool retirement marks are kept per node (each spool is its own).
//!
//! Why tokio-postgres: the engine calls the archive from its pipeline thread, synchronously;
//! object_store is async, so the backend owns a small tokio runtime (one worker) that drives
//! both the PostgreSQL connection and the S3 requests. tokio-postgres is the asynchronous
//! core that the synchronous `postgres` crate wraps (with a runtime of its own: two runtimes
//! for one backend), it has no default TLS or pool to turn off, and prepared statements
//! are cached by the client. sqlx would bring a macro layer and its own pool for the same
//! queries; diesel is synchronous but needs libpq.

mod content;
mod index;
mod reader;
mod schema;

pub use content::{IN_FLIGHT, IN_FLIGHT_BYTES, S3Content};
pub use index::PgIndex;
pub use reader::{PgReader, open_reader};

use std::sync::Arc;

use crate::{ArchiveError, ArchiveResult};

/// Where the shared backend is (the `[archive]` table of the server's configuration).
#[derive(Clone, PartialEq, Eq)]
pub struct SharedOptions {
    /// This receiver's name: unique per receiver, shown in status and logs.
    pub node_name: String,
    /// `postgres://user[:password]@host:port/database` (a password may also come from
    /// `PGPASSWORD`).
    pub postgres_url: String,
    /// The S3 endpoint, e.g. `http://127.0.0.1:3900` (`None`: AWS).
    pub s3_endpoint: Option<String>,
    /// The S3 region (Garage: its `s3_region`, `garage` by default).
    pub s3_region: String,
    /// The bucket.
    pub s3_bucket: String,
    /// The access key id.
    pub s3_access_key_id: String,
    /// The secret access key.
    pub s3_secret_access_key: String,
}

impl std::fmt::Debug for SharedOptions {
    // Credentials are never printed, in logs or panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedOptions")
            .field("node_name", &self.node_name)
            .field("postgres_url", &redact_url(&self.postgres_url))
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_bucket", &self.s3_bucket)
            .finish_non_exhaustive()
    }
}

/// `url` with a password replaced by `***`.
///
/// ```
/// use mailjournal_archive::shared::redact_url;
/// assert_eq!(redact_url("postgres://j:s3cret@db:5432/journal"), "postgres://j:***@db:5432/journal");
/// assert_eq!(redact_url("postgres://j@db/journal"), "postgres://j@db/journal");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The runtime that drives the backend's IO; the pipeline thread blocks on it.
pub(crate) type Runtime = Arc<tokio::runtime::Runtime>;

pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> ArchiveError {
    ArchiveError::Backend(Box::new(e))
}

/// The backend's runtime: one worker drives the PostgreSQL connection and the S3 requests.
fn runtime() -> ArchiveResult<Runtime> {
    // reqwest's rustls takes the process's provider: the ring one the rest of the project
    // uses (already installed is fine).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("archive-io")
            .enable_all()
            .build()
            .map_err(ArchiveError::Io)?,
    ))
}

/// Opens the shared backend for node `options.node_name`: connects to PostgreSQL (creating
/// the schema when it is missing) and to the bucket.
pub fn open(options: &SharedOptions) -> ArchiveResult<(PgIndex, S3Content)> {
    let runtime = runtime()?;
    let index = PgIndex::connect(runtime.clone(), &options.postgres_url, &options.node_name)?;
    let content = S3Content::open(runtime, options)?;
    Ok((index, content))
}

#[cfg(test)]
mod tests;
