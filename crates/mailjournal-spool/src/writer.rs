//! A message being received: its bytes in memory while it is small, streamed to a data file
//! of its own once it outgrows [`INLINE_LIMIT`], hashed as they come.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mailjournal_queue::{ContentHash, ItemId};
use sha2::{Digest, Sha256};

use crate::completion::{self, Commit};
use crate::linger::{InFlight, Receiving};
use crate::{CommitError, INLINE_LIMIT, remove_quietly};

/// Where a message's bytes go while it is received.
enum Sink {
    /// Small so far: kept in memory, to travel inside the commit record.
    Memory(Vec<u8>),
    /// Over [`INLINE_LIMIT`]: streamed to its own data file.
    File(BufWriter<File>),
}

/// A message being received (from [`Spool::begin`](crate::Spool::begin)); hand it to
/// [`Spool::commit`](crate::Spool::commit), or drop it to discard what was written.
pub struct SpoolWriter {
    id: ItemId,
    path: PathBuf,
    sink: Option<Sink>,
    hasher: Sha256,
    size: u64,
    /// Counts this message among those the committer may wait for.
    receiving: Option<Receiving>,
    /// The spool's count of bytes written (see `Spool::low_on_space`).
    written: Arc<AtomicU64>,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("id", &self.id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A writer's message, complete: what [`Spool::commit`](crate::Spool::commit) frames.
pub(crate) struct Finished {
    pub(crate) id: ItemId,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) sha256: ContentHash,
    /// The bytes, for a message that travels inside its record.
    pub(crate) inline: Option<Vec<u8>>,
    /// The data file, still to be synced, for a larger one.
    pub(crate) file: Option<BufWriter<File>>,
    /// Ends (waking a lingering committer) once the commit request is sent.
    pub(crate) receiving: Option<Receiving>,
}

impl Finished {
    /// A commit that failed before it reached the committer; the data file goes.
    pub(crate) fn fail(self, error: CommitError) -> Commit {
        if self.file.is_some() {
            drop(self.file);
            remove_quietly(&self.path);
        }
        completion::failed(error)
    }
}

impl SpoolWriter {
    pub(crate) fn new(
        id: ItemId,
        path: PathBuf,
        in_flight: &Arc<InFlight>,
        written: Arc<AtomicU64>,
    ) -> SpoolWriter {
        SpoolWriter {
            id,
            path,
            sink: Some(Sink::Memory(Vec::new())),
            hasher: Sha256::new(),
            size: 0,
            receiving: Some(Receiving::start(in_flight)),
            written,
        }
    }

    /// The queue id this message will have.
    pub fn id(&self) -> ItemId {
        self.id
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends content, moving to a data file once the message outgrows [`INLINE_LIMIT`].
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match &mut self.sink {
            Some(Sink::Memory(buffer)) if buffer.len() + bytes.len() <= INLINE_LIMIT => {
                buffer.extend_from_slice(bytes);
                Ok(())
            }
            Some(Sink::Memory(buffer)) => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&self.path)?;
                let mut file = BufWriter::with_capacity(64 * 1024, file);
                file.write_all(buffer)?;
                file.write_all(bytes)?;
                self.sink = Some(Sink::File(file));
                Ok(())
            }
            Some(Sink::File(file)) => file.write_all(bytes),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    pub(crate) fn finish(mut self) -> Finished {
        let (inline, file) = match self.sink.take() {
            Some(Sink::File(file)) => (None, Some(file)),
            Some(Sink::Memory(buffer)) => (Some(buffer), None),
            None => (Some(Vec::new()), None),
        };
        let hasher = std::mem::take(&mut self.hasher);
        Finished {
            id: self.id,
            path: std::mem::take(&mut self.path),
            size: self.size,
            sha256: ContentHash(hasher.finalize().into()),
            inline,
            file,
            receiving: self.receiving.take(),
        }
    }
}

impl Drop for SpoolWriter {
    /// A message that is not committed leaves nothing behind.
    fn drop(&mut self) {
        if let Some(Sink::File(file)) = self.sink.take() {
            drop(file);
            remove_quietly(&self.path);
        }
    }
}
