//! Group commit: one committer thread appends every waiting record in one write and syncs the
//! log once for all of them (and the data directory once, when the batch holds large
//! messages, whose own files the sync thread synced before). Concurrent sessions therefore
//! share one `fdatasync` instead of paying one each; while other messages are still being
//! received, a batch may wait about one sync time for them (see [`linger`](crate::linger)).

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};

use crate::completion::Completer;
use crate::frame::{self, FRAME_HEAD};
use crate::linger::{self, InFlight, Linger, Receiving};
use crate::segments::{Active, Segments};
use crate::{Alarm, CommitError, Committed, Consumer, Location, Record, remove_quietly, sync_dir};

/// A framed record on its way to the committer: the session serialised and checksummed it, so
/// the committer only appends and syncs.
pub(crate) struct CommitRequest {
    pub(crate) head: [u8; FRAME_HEAD],
    pub(crate) json: Vec<u8>,
    pub(crate) record: Record,
    /// The message bytes, when they travel inside the record; handed on once committed.
    pub(crate) inline: Option<Vec<u8>>,
    /// The message's data file, removed if the commit fails.
    pub(crate) data_file: Option<PathBuf>,
    pub(crate) done: Completer,
}

impl CommitRequest {
    fn fail(self, error: CommitError) {
        if let Some(path) = &self.data_file {
            remove_quietly(path);
        }
        self.done.complete(Err(error));
    }
}

/// A large message's data file to sync before its record goes to the committer.
pub(crate) struct DataFileSync {
    pub(crate) file: BufWriter<File>,
    pub(crate) request: CommitRequest,
    pub(crate) receiving: Option<Receiving>,
}

/// The sync thread: syncs each large message's data file, then hands its record to the
/// committer. A data file can be 150 MB: its sync must not hold up the committer's batches.
pub(crate) fn sync_data_files(
    files: mpsc::Receiver<DataFileSync>,
    committer: mpsc::Sender<CommitRequest>,
) {
    for DataFileSync {
        file,
        request,
        receiving,
    } in files
    {
        let synced = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_data());
        match synced {
            Ok(()) => {
                let _ = committer.send(request);
            }
            Err(e) => request.fail(e.into()),
        }
        drop(receiving);
    }
}

/// The committer thread's state: the segment it appends to.
pub(crate) struct Committer {
    pub(crate) active: Active,
    pub(crate) segments: Arc<Segments>,
    pub(crate) segment_bytes: u64,
    pub(crate) data_dir: PathBuf,
    /// Messages being received, which a batch may wait for.
    pub(crate) receiving: Arc<InFlight>,
    pub(crate) linger: Linger,
    /// Raised when this committer starts refusing every commit.
    pub(crate) unusable: Alarm,
    pub(crate) consumer: Box<dyn Consumer>,
}

impl Committer {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<CommitRequest>) {
        while let Ok(first) = rx.recv() {
            if self.active.len >= self.segment_bytes {
                match self.segments.start_after(&self.active) {
                    Ok(next) => self.active = next,
                    // The current segment takes more: it only retires later.
                    Err(e) => tracing::warn!(error = %e, "cannot start a new spool log segment"),
                }
            }
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            linger::gather(&rx, &mut batch, &self.receiving, self.linger.bound());
            let mut offsets = Vec::with_capacity(batch.len());
            let mut slices = Vec::with_capacity(batch.len() * 3);
            let mut at = self.active.len;
            for request in &batch {
                offsets.push(self.active.base + at);
                let data = request.inline.as_deref().unwrap_or_default();
                at += (FRAME_HEAD + request.json.len() + data.len()) as u64;
                // Empty slices are left out: a write of nothing but empty slices would say 0.
                slices.extend(
                    [&request.head[..], &request.json, data]
                        .into_iter()
                        .filter(|part| !part.is_empty())
                        .map(io::IoSlice::new),
                );
            }
            // New data files are directory entries: their directory is synced with the log.
            let any_files = batch.iter().any(|r| r.inline.is_none());
            let log = &mut self.active.file;
            #[cfg(feature = "test-hooks")]
            test_hooks::maybe_tear(log, self.active.len, &batch[0]);
            let started = std::time::Instant::now();
            let written = frame::append_all(log, &mut slices);
            drop(slices);
            if let Err(e) = written {
                // A write that failed (a full disk, a file-size limit) leaves part of the batch
                // past the committed end, never synced and never acknowledged: cut it off and
                // go on. Only if the cut itself is not durable is the log's state unknown.
                tracing::error!(error = %e, "spool log append failed; batch refused");
                let cut = log.set_len(self.active.len).and_then(|()| log.sync_data());
                let error = CommitError::from(e);
                for request in batch {
                    request.fail(error.clone());
                }
                match cut {
                    Ok(()) => continue,
                    Err(e) => return self.refuse_all(&rx, e),
                }
            }
            let synced = log.sync_data().and_then(|()| {
                if any_files {
                    sync_dir(&self.data_dir)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = synced {
                // After a failed sync the kernel may have dropped the dirty pages it could not
                // write, and a later sync could succeed without them: nothing in this log can
                // be trusted to be durable from here on. Stop accepting (a restart recovers).
                let e = Arc::new(e);
                for request in batch {
                    request.fail(CommitError::Unusable(e.clone()));
                }
                return self.refuse_all(&rx, e);
            }
            self.linger.observe(started.elapsed());
            self.active.len = at;
            self.segments.committed(self.active.base, batch.len());
            // Every session of the batch is told first (its 250 is on the critical path), then
            // the consumer gets the records.
            let mut committed = Vec::with_capacity(batch.len());
            for (request, offset) in batch.into_iter().zip(offsets) {
                let CommitRequest {
                    mut record,
                    inline,
                    done,
                    ..
                } = request;
                record.location = Location {
                    segment: self.active.base,
                    log_offset: record.inline_data.then_some(offset),
                };
                done.complete(Ok(Committed {
                    id: record.id,
                    size: record.size,
                    location: record.location,
                }));
                committed.push((record, inline));
            }
            for (record, inline) in committed {
                self.consumer.committed(record, inline);
            }
        }
    }

    /// Answers every further request with a failure, until the spool goes.
    fn refuse_all(&self, rx: &mpsc::Receiver<CommitRequest>, cause: impl Into<Arc<io::Error>>) {
        let cause = cause.into();
        tracing::error!(error = %cause, "spool log unusable: refusing every commit until restart");
        self.unusable.raise();
        for request in rx {
            request.fail(CommitError::Unusable(cause.clone()));
        }
    }
}

/// A moment for a crash test to kill the process at: in the middle of a log append.
///
/// With `MAILJOURNAL_TEST_TEAR_BATCH=N` in the environment, the `N`th batch this process
/// commits is first written only in part (its first frame's header and half its metadata),
/// announced on standard error, and held there for a minute. A test kills the process (a
/// real `kill -9`) during that minute, which leaves a torn tail for recovery to cut; the hook
/// only chooses the moment. Not killed, the committer cuts the part off again and goes on as
/// if nothing happened. Compiled only with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use std::fs::File;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::CommitRequest;

    static BATCHES: AtomicU64 = AtomicU64::new(0);

    pub(super) fn maybe_tear(log: &mut File, committed_len: u64, first: &CommitRequest) {
        let Some(target) = std::env::var("MAILJOURNAL_TEST_TEAR_BATCH")
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return;
        };
        if BATCHES.fetch_add(1, Ordering::Relaxed) + 1 != target {
            return;
        }
        let mut part = first.head.to_vec();
        part.extend_from_slice(&first.json[..first.json.len() / 2]);
        if log.write_all(&part).is_err() {
            return;
        }
        eprintln!(
            "test hook: spool batch torn after {} bytes, waiting to be killed",
            part.len()
        );
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = log.set_len(committed_len);
    }
}
