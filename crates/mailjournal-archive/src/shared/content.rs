//! Content in an S3 bucket, one object per hash (`content/ab/abcd...`).
//!
//! A put is durable when the store answers it, but waiting for each answer in turn made the
//! pipeline wait on one HTTP round trip (and the store's own sync) per message: 175
//! messages/s against Garage on loopback, where the embedded store did 950. So puts go out
//! concurrently ([`IN_FLIGHT`] at most, [`IN_FLIGHT_BYTES`] of content) and
//! [`flush`](crate::ContentStore::flush), which the engine calls before it commits the index
//! batch that records their items archived, waits for every answer. A put that failed is
//! sent again from the bytes kept until its answer; while it still fails, `flush` fails, the
//! batch is rolled back and its items start over.

use std::cell::RefCell;
use std::collections::VecDeque;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

use super::{Runtime, SharedOptions, backend};
use crate::{ArchiveError, ArchiveResult, ContentHash, ContentStore};

/// Puts sent and not yet answered, at most.
pub const IN_FLIGHT: usize = 32;
/// Bytes of content sent and not yet answered, at most (one larger message goes alone).
pub const IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;

/// A put on its way, with its bytes for sending again.
struct InFlight {
    hash: ContentHash,
    bytes: bytes::Bytes,
    answer: Option<JoinHandle<object_store::Result<object_store::PutResult>>>,
}

/// The content store of the shared backend.
pub struct S3Content {
    store: AmazonS3,
    runtime: Runtime,
    in_flight: RefCell<VecDeque<InFlight>>,
}

impl std::fmt::Debug for S3Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Content").finish_non_exhaustive()
    }
}

impl S3Content {
    pub(crate) fn open(runtime: Runtime, options: &SharedOptions) -> ArchiveResult<S3Content> {
        let mut builder = AmazonS3Builder::new()
            .with_region(&options.s3_region)
            .with_bucket_name(&options.s3_bucket)
            .with_access_key_id(&options.s3_access_key_id)
            .with_secret_access_key(&options.s3_secret_access_key);
        if let Some(endpoint) = &options.s3_endpoint {
            // A private endpoint (Garage on loopback, say): path-style requests, and
            // clear text when the URL says so.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(backend)?;
        Ok(S3Content {
            store,
            runtime,
            in_flight: RefCell::new(VecDeque::new()),
        })
    }

    fn send(&self, hash: &ContentHash, bytes: bytes::Bytes) -> InFlight {
        let (store, path) = (self.store.clone(), Self::path(hash));
        let payload = PutPayload::from(bytes.clone());
        let answer = self
            .runtime
            .spawn(async move { store.put(&path, payload).await });
        InFlight {
            hash: *hash,
            bytes,
            answer: Some(answer),
        }
    }

    /// Waits for `put`'s answer; a failure is sent once more, and waited for.
    fn settle(&self, put: &mut InFlight) -> ArchiveResult<()> {
        let answered = match put.answer.take() {
            Some(answer) => self.runtime.block_on(answer).map_err(backend)?,
            None => Err(object_store::Error::Generic {
                store: "S3",
                source: "not sent".into(),
            }),
        };
        if let Err(e) = answered {
            tracing::warn!(hash = %put.hash, error = %e, "content put failed: sending it again");
            self.runtime
                .block_on(
                    self.store
                        .put(&Self::path(&put.hash), PutPayload::from(put.bytes.clone())),
                )
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Settles the oldest puts until the window has room for `incoming` more bytes.
    fn make_room(&self, incoming: usize) -> ArchiveResult<()> {
        loop {
            let mut in_flight = self.in_flight.borrow_mut();
            let bytes: usize = in_flight.iter().map(|p| p.bytes.len()).sum();
            let full = in_flight.len() >= IN_FLIGHT
                || (!in_flight.is_empty() && bytes + incoming > IN_FLIGHT_BYTES);
            if !full {
                return Ok(());
            }
            let Some(mut oldest) = in_flight.pop_front() else {
                return Ok(());
            };
            drop(in_flight);
            if let Err(e) = self.settle(&mut oldest) {
                // Kept, unanswered: make_durable tries it again and fails until it is stored.
                self.in_flight.borrow_mut().push_front(oldest);
                return Err(e);
            }
        }
    }

    fn pending(&self, hash: &ContentHash) -> Option<bytes::Bytes> {
        self.in_flight
            .borrow()
            .iter()
            .find(|p| p.hash == *hash)
            .map(|p| p.bytes.clone())
    }

    /// The size of the stored content with this hash.
    pub fn content_len(&self, hash: &ContentHash) -> ArchiveResult<u64> {
        if let Some(bytes) = self.pending(hash) {
            return Ok(bytes.len() as u64);
        }
        let meta = self
            .runtime
            .block_on(self.store.head(&Self::path(hash)))
            .map_err(backend)?;
        Ok(meta.size)
    }

    fn path(hash: &ContentHash) -> Path {
        let hex = hash.to_string();
        Path::from(format!("content/{}/{hex}", &hex[..2]))
    }
}

impl ContentStore for S3Content {
    fn put(&self, hash: &ContentHash, bytes: &[u8]) -> ArchiveResult<()> {
        // The same name is always the same bytes: a second put rewrites them unchanged.
        if self.pending(hash).is_some() {
            return Ok(());
        }
        self.make_room(bytes.len())?;
        let put = self.send(hash, bytes::Bytes::copy_from_slice(bytes));
        self.in_flight.borrow_mut().push_back(put);
        Ok(())
    }

    fn contains(&self, hash: &ContentHash) -> ArchiveResult<bool> {
        if self.pending(hash).is_some() {
            return Ok(true);
        }
        match self.runtime.block_on(self.store.head(&Self::path(hash))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    fn read(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        if let Some(bytes) = self.pending(hash) {
            return Ok(bytes.to_vec());
        }
        let bytes = self
            .runtime
            .block_on(async { self.store.get(&Self::path(hash)).await?.bytes().await });
        Ok(bytes.map_err(backend)?.to_vec())
    }

    fn make_durable(&self) -> ArchiveResult<()> {
        // Stored is durable here: the store answers a put once it has it.
        self.flush()
    }

    fn flush(&self) -> ArchiveResult<()> {
        let mut failed: Option<ArchiveError> = None;
        let mut kept = VecDeque::new();
        let all = std::mem::take(&mut *self.in_flight.borrow_mut());
        for mut put in all {
            if let Err(e) = self.settle(&mut put) {
                failed.get_or_insert(e);
                kept.push_back(put);
            }
        }
        let mut in_flight = self.in_flight.borrow_mut();
        kept.append(&mut in_flight);
        *in_flight = kept;
        failed.map_or(Ok(()), Err)
    }

    fn remove(&self, hash: &ContentHash) -> ArchiveResult<()> {
        // Settled first: a put still on its way must not land after the delete.
        if self.pending(hash).is_some() {
            self.make_durable()?;
        }
        match self.runtime.block_on(self.store.delete(&Self::path(hash))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}
