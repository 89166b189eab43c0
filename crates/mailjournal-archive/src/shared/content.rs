//! Content in an S3 bucket, one object per hash (`content/ab/abcd...`): a put is durable
//! when the store answers it, so [`make_durable`](crate::ContentStore::make_durable) has
//! nothing left to do.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::{Runtime, SharedOptions, backend};
use crate::{ArchiveResult, ContentHash, ContentStore};

/// The content store of the shared backend.
pub struct S3Content {
    store: AmazonS3,
    runtime: Runtime,
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
        Ok(S3Content { store, runtime })
    }

    /// The size of the stored content with this hash.
    pub fn content_len(&self, hash: &ContentHash) -> ArchiveResult<u64> {
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
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.store.put(&Self::path(hash), payload))
            .map_err(backend)?;
        Ok(())
    }

    fn contains(&self, hash: &ContentHash) -> ArchiveResult<bool> {
        match self.runtime.block_on(self.store.head(&Self::path(hash))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    fn read(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        let bytes = self
            .runtime
            .block_on(async { self.store.get(&Self::path(hash)).await?.bytes().await });
        Ok(bytes.map_err(backend)?.to_vec())
    }

    fn make_durable(&self) -> ArchiveResult<()> {
        Ok(())
    }

    fn remove(&self, hash: &ContentHash) -> ArchiveResult<()> {
        match self.runtime.block_on(self.store.delete(&Self::path(hash))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}
