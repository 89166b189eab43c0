//! The spool: every accepted message is on disk before its `250`.
//!
//! Layout under `DATA_DIR/spool/`:
//! * the commit log, in segments (see [`segments`]): one CRC-framed record per committed
//!   message (see [`frame`]): its metadata (JSON) and, for a message up to [`INLINE_LIMIT`],
//!   its bytes. The record is the commit point: a message is accepted once its record (and,
//!   for a large message, its data file) is synced.
//! * `data/<ID>`: the bytes of a larger message, streamed to disk while the client sends them,
//!   so memory per connection stays bounded whatever the size;
//! * `kept/`: retired segments and their data files, for `get --as-received` only;
//! * `quarantine/`: data files whose record does not match them (size or SHA-256), and
//!   damaged stretches of the log.
//!
//! Group commit: one committer thread appends every waiting record in one write and syncs the
//! log once for all of them (and the data directory once, when the batch holds large
//! messages, whose own files their sessions synced concurrently before). Concurrent sessions
//! therefore share one `fdatasync` instead of paying one each; while other messages are still
//! being received, a batch may wait about one sync time for them (see [`linger`]).
//!
//! Start-up recovery (see [`recovery`]) reads the live segments only: those that may hold a
//! record not yet settled in the archive store.

mod frame;
mod linger;
mod recovery;
mod segments;

pub(crate) use recovery::Recovery;
pub(crate) use segments::{Segments, Usage};

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::alarm::DeathAlarm;
use frame::{FRAME_HEAD, MAX_RECORD_JSON};
use linger::{InFlight, Linger, Receiving};
use segments::Active;

/// Messages up to this size travel inside their commit record (one shared sync); larger ones
/// are streamed to a file of their own.
pub(crate) const INLINE_LIMIT: usize = 1024 * 1024;

/// How large the spool lets things grow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpoolLimits {
    /// Bytes that must stay free; below that, messages get `452 4.3.1`.
    pub(crate) reserve_bytes: u64,
    /// Past this size the committer starts a new log segment. Smaller segments retire sooner
    /// (start-up reads less); larger ones mean fewer files.
    pub(crate) segment_bytes: u64,
    /// The longest the committer holds a batch for messages still being received (see
    /// [`linger`]: it holds about one recent sync time at most, and only while some are).
    /// Zero: never.
    pub(crate) max_commit_linger: std::time::Duration,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            reserve_bytes: 256 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            max_commit_linger: std::time::Duration::from_millis(2),
        }
    }
}

/// A queue id: milliseconds since the epoch in the high bits, a counter in the low 20 bits;
/// printed as 16 upper-case hex digits. Unique and ordered by arrival within one spool.
pub(crate) fn format_id(id: u64) -> String {
    format!("{id:016X}")
}

/// Parses a printed queue id.
pub(crate) fn parse_id(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// What is stored with each message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) received_at: u64,
    pub(crate) peer: String,
    pub(crate) helo: String,
    pub(crate) tls_version: Option<String>,
    pub(crate) tls_cipher: Option<String>,
    pub(crate) authenticated: Option<String>,
    pub(crate) mail_from: Option<String>,
    pub(crate) recipients: Vec<String>,
    /// The journal definition (index in the configuration) of each recipient.
    pub(crate) journals: Vec<usize>,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    /// True when the bytes are inside the commit record rather than in a data file.
    #[serde(default)]
    pub(crate) inline_data: bool,
    /// Where the record starts in the commit log when the bytes are inline in it.
    #[serde(skip)]
    pub(crate) log_offset: Option<u64>,
    /// The log segment holding the record (its base).
    #[serde(skip)]
    pub(crate) segment: u64,
}

/// Why a commit failed: the client gets a temporary error and retries.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Not enough space.
    StorageFull,
    /// Any other IO failure.
    Io(io::Error),
}

impl From<io::Error> for CommitError {
    fn from(e: io::Error) -> Self {
        if is_storage_full(&e) {
            CommitError::StorageFull
        } else {
            CommitError::Io(e)
        }
    }
}

/// True for a full file system or an exhausted quota: the client should hear "insufficient
/// storage" and try later, not a generic local error.
pub(crate) fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Where a message's bytes go while it is received.
enum Sink {
    /// Small so far: kept in memory, to travel inside the commit record.
    Memory(Vec<u8>),
    /// Over [`INLINE_LIMIT`]: streamed to its own data file.
    File(BufWriter<File>),
}

/// A message being received.
pub(crate) struct SpoolWriter {
    id: u64,
    path: PathBuf,
    sink: Sink,
    hasher: Sha256,
    size: u64,
    /// Counts this message among those the committer may wait for.
    receiving: Receiving,
}

impl SpoolWriter {
    /// The queue id this message will have.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Appends content, moving to a file once the message outgrows [`INLINE_LIMIT`].
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        match &mut self.sink {
            Sink::Memory(buffer) if buffer.len() + bytes.len() <= INLINE_LIMIT => {
                buffer.extend_from_slice(bytes);
                Ok(())
            }
            Sink::Memory(buffer) => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&self.path)?;
                let mut file = BufWriter::with_capacity(64 * 1024, file);
                file.write_all(buffer)?;
                file.write_all(bytes)?;
                self.sink = Sink::File(file);
                Ok(())
            }
            Sink::File(file) => file.write_all(bytes),
        }
    }

    /// Drops a message that will not be committed.
    pub(crate) fn discard(self) {
        if let Sink::File(file) = self.sink {
            drop(file);
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A framed record on its way to the committer: the session serialises and checksums it, so
/// the committer only appends and syncs.
struct CommitRequest {
    head: [u8; FRAME_HEAD],
    json: Vec<u8>,
    /// The message bytes, when they travel inside the record; handed back once committed.
    inline: Option<Vec<u8>>,
    done: oneshot::Sender<CommitOutcome>,
}

/// Where the committer put a record, with the inline bytes handed back.
struct Placed {
    segment: u64,
    offset: u64,
    inline: Option<Vec<u8>>,
}

/// The committer's answer: where the record is, or why the log could not take it.
type CommitOutcome = Result<Placed, Failed>;

/// Why the committer could not take a batch.
#[derive(Debug, Clone)]
struct Failed {
    /// The file system is full (the client hears `452 4.3.1` and tries later).
    storage_full: bool,
    message: String,
}

impl From<&io::Error> for Failed {
    fn from(e: &io::Error) -> Self {
        Failed {
            storage_full: is_storage_full(e),
            message: e.to_string(),
        }
    }
}

/// The spool of one data directory.
pub(crate) struct Spool {
    data_dir: PathBuf,
    next_id: AtomicU64,
    committer: mpsc::Sender<CommitRequest>,
    /// Messages being received, which the committer may wait for (see [`Receiving`]).
    receiving: Arc<InFlight>,
    /// The committer thread, joined when the spool goes.
    committer_thread: Option<std::thread::JoinHandle<()>>,
    segments: Arc<Segments>,
    /// Bytes that must stay free; below that, messages get `452 4.3.1`.
    reserve_bytes: u64,
    /// The last free-space check, refreshed at most once a second.
    space: std::sync::Mutex<(Option<std::time::Instant>, bool)>,
    /// Raised once the committer can no longer make anything durable (see [`Spool::unusable`]).
    unusable: Arc<tokio::sync::Notify>,
}

impl Spool {
    /// Opens (creating) the spool under `dir`, recovers its live segments, handing every
    /// intact committed record to `on_record` in commit order, and starts the committer.
    pub(crate) fn open(
        dir: &Path,
        limits: SpoolLimits,
        on_record: &mut dyn FnMut(Record),
    ) -> io::Result<(Spool, Recovery)> {
        let root = dir.join("spool");
        segments::prepare(&root)?;
        let mut last = 0;
        let recovery = recovery::recover(&root, &mut |record: Record| {
            last = last.max(parse_id(&record.id).unwrap_or(0));
            on_record(record);
        })?;
        let (segments, active) = Segments::open(&root, &recovery.segments)?;
        let segments = Arc::new(segments);
        let (tx, rx) = mpsc::channel::<CommitRequest>();
        let data_dir = segments::Place::Live.data_dir(&root);
        let receiving = Arc::new(InFlight::default());
        let unusable = Arc::new(tokio::sync::Notify::new());
        let committer_state = Committer {
            active,
            segments: segments.clone(),
            segment_bytes: limits.segment_bytes,
            data_dir: data_dir.clone(),
            receiving: receiving.clone(),
            linger: Linger::new(limits.max_commit_linger),
            unusable: unusable.clone(),
        };
        let alarm = DeathAlarm::armed(unusable.clone());
        let committer_thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || {
                committer_state.run(rx);
                alarm.disarm();
            })?;
        Ok((
            Spool {
                data_dir,
                next_id: AtomicU64::new(last + 1),
                committer: tx,
                receiving,
                committer_thread: Some(committer_thread),
                segments,
                reserve_bytes: limits.reserve_bytes,
                space: std::sync::Mutex::new((None, false)),
                unusable,
            },
            recovery,
        ))
    }

    /// Completes once the spool can no longer make messages durable: a sync failed (after
    /// which nothing in the log can be trusted until a restart recovers it) or the committer
    /// thread ended unexpectedly. Every commit is refused from then on; the server should stop.
    pub(crate) fn unusable(&self) -> tokio::sync::futures::Notified<'_> {
        self.unusable.notified()
    }

    /// The live segments' bookkeeping, for whoever retires them.
    pub(crate) fn segments(&self) -> Arc<Segments> {
        self.segments.clone()
    }

    /// Hands out only ids after `id` from now on. Ids are time-based and recovery sees only
    /// the live segments: after a restart with every segment retired and a clock set back
    /// (a restored VM, an NTP step), new ids could repeat ones the archive store already
    /// holds, so the server passes the newest of those here before it accepts anything.
    pub(crate) fn ids_after(&self, id: u64) {
        self.next_id
            .fetch_max(id.saturating_add(1), Ordering::Relaxed);
    }

    fn new_id(&self) -> u64 {
        let now = crate::clock::now().0 << 20;
        let mut current = self.next_id.load(Ordering::Relaxed);
        loop {
            let id = current.max(now);
            match self.next_id.compare_exchange_weak(
                current,
                id + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return id,
                Err(seen) => current = seen,
            }
        }
    }

    /// True when the spool's file system has less free space than the reserve (checked at
    /// most once a second: sessions ask before every command batch).
    pub(crate) fn low_on_space(&self) -> bool {
        let Ok(mut space) = self.space.lock() else {
            return false;
        };
        if space
            .0
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1))
        {
            let low = rustix::fs::statvfs(&self.data_dir)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize) < self.reserve_bytes)
                .unwrap_or(false);
            *space = (Some(std::time::Instant::now()), low);
        }
        space.1
    }

    /// Starts a message.
    pub(crate) fn begin(&self) -> io::Result<SpoolWriter> {
        let id = self.new_id();
        let path = self.data_dir.join(format_id(id));
        Ok(SpoolWriter {
            id,
            path,
            sink: Sink::Memory(Vec::new()),
            hasher: Sha256::new(),
            size: 0,
            receiving: Receiving::start(&self.receiving),
        })
    }

    /// Makes a message durable. Returns only once its data and record are synced, with the
    /// record and, for a message that travelled inside it, its bytes (so that the caller can
    /// hand them on instead of anyone reading them back).
    pub(crate) async fn commit(
        &self,
        writer: SpoolWriter,
        mut record: Record,
    ) -> Result<(Record, Option<Vec<u8>>), CommitError> {
        let SpoolWriter {
            path,
            sink,
            hasher,
            size,
            receiving,
            ..
        } = writer;
        record.size = size;
        record.sha256 = hex(&hasher.finalize());
        let inline = match sink {
            Sink::Memory(buffer) => Some(buffer),
            Sink::File(file) => {
                let synced = tokio::task::spawn_blocking(move || -> io::Result<()> {
                    let file = file.into_inner().map_err(|e| e.into_error())?;
                    file.sync_data()
                })
                .await
                .map_err(|e| CommitError::Io(io::Error::other(e)))?;
                if let Err(e) = synced {
                    let _ = fs::remove_file(&path);
                    return Err(e.into());
                }
                None
            }
        };
        record.inline_data = inline.is_some();
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        if json.len() > MAX_RECORD_JSON {
            // Recovery would take a longer record for damage: never write one.
            let _ = fs::remove_file(&path);
            return Err(CommitError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "commit record metadata too large",
            )));
        }
        let head = frame::frame_head(&json, inline.as_deref().unwrap_or_default());
        let (done, wait) = oneshot::channel();
        let sent = self.committer.send(CommitRequest {
            head,
            json,
            inline,
            done,
        });
        // After the send: a committer this wakes finds the request.
        drop(receiving);
        sent.map_err(|_| CommitError::Io(io::Error::other("committer stopped")))?;
        match wait.await {
            Ok(Ok(placed)) => {
                record.segment = placed.segment;
                record.log_offset = record.inline_data.then_some(placed.offset);
                Ok((record, placed.inline))
            }
            Ok(Err(failed)) => {
                let _ = fs::remove_file(&path);
                Err(if failed.storage_full {
                    CommitError::StorageFull
                } else {
                    CommitError::Io(io::Error::other(failed.message))
                })
            }
            Err(_) => Err(CommitError::Io(io::Error::other("committer stopped"))),
        }
    }
}

impl Drop for Spool {
    /// Waits for the committer to finish the requests it was given: it stops once the spool's
    /// sender, the last one, is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.committer, closed));
        if let Some(thread) = self.committer_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The message bytes of a committed item, as received: from its record in the commit log
/// (at `log_offset` when known, else found by a scan of every segment) or from its data file.
pub(crate) fn read_data(data_dir: &Path, id: &str, log_offset: Option<u64>) -> io::Result<Vec<u8>> {
    let root = data_dir.join("spool");
    if let Some(offset) = log_offset {
        let segment = segments::containing(&root, offset)?;
        return read_inline(&open_segment(data_dir, segment)?, id, segment, offset);
    }
    match read_data_file(data_dir, id) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            for place in [segments::Place::Live, segments::Place::Kept] {
                for base in segments::list(&root, place)? {
                    let log = segments::open(&root, base)?;
                    if let Some(pos) = frame::find_inline(&log, id)? {
                        return frame::read_inline(&log, id, pos);
                    }
                }
            }
            Err(e)
        }
        other => other,
    }
}

/// The bytes of large message `id` from its own data file (live or kept), for a caller that
/// knows the record is not inline and so needs no scan of the log.
pub(crate) fn read_data_file(data_dir: &Path, id: &str) -> io::Result<Vec<u8>> {
    fs::read(segments::data_file(&data_dir.join("spool"), id))
}

/// What the spool of `data_dir` holds on disk.
pub(crate) fn usage(data_dir: &Path) -> io::Result<Usage> {
    segments::usage(&data_dir.join("spool"))
}

/// Opens log segment `segment` for reading, wherever it is now.
pub(crate) fn open_segment(data_dir: &Path, segment: u64) -> io::Result<File> {
    segments::open(&data_dir.join("spool"), segment)
}

/// The message bytes inside the commit record at log offset `offset`, in `log`, the open
/// segment `segment`; checked against the record's CRC and id.
pub(crate) fn read_inline(log: &File, id: &str, segment: u64, offset: u64) -> io::Result<Vec<u8>> {
    let pos = offset
        .checked_sub(segment)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset before its segment"))?;
    frame::read_inline(log, id, pos)
}

/// The committer thread's state: the segment it appends to.
struct Committer {
    active: Active,
    segments: Arc<Segments>,
    segment_bytes: u64,
    data_dir: PathBuf,
    /// Messages being received, which a batch may wait for.
    receiving: Arc<InFlight>,
    linger: Linger,
    /// Raised when this committer starts refusing every commit.
    unusable: Arc<tokio::sync::Notify>,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<CommitRequest>) {
        while let Ok(first) = rx.recv() {
            if self.active.len >= self.segment_bytes {
                match self.segments.start_after(&self.active) {
                    Ok(next) => self.active = next,
                    // The current segment takes more: it only retires later.
                    Err(e) => tracing::warn!(error = %e, "cannot start a new spool log segment"),
                }
            }
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
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
            let started = std::time::Instant::now();
            let written = frame::append_all(log, &mut slices);
            drop(slices);
            if let Err(e) = &written {
                // A write that failed (a full disk, a file-size limit) leaves part of the batch
                // past the committed end, never synced and never acknowledged: cut it off and
                // go on. Only if the cut itself is not durable is the log's state unknown.
                let failed = Failed::from(e);
                tracing::error!(error = %e, "spool log append failed; batch refused");
                let cut = log.set_len(self.active.len).and_then(|()| log.sync_data());
                for request in batch {
                    let _ = request.done.send(Err(failed.clone()));
                }
                match cut {
                    Ok(()) => continue,
                    Err(e) => return self.refuse_all(&rx, &e),
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
                let failed = Failed::from(&e);
                for request in batch {
                    let _ = request.done.send(Err(failed.clone()));
                }
                return self.refuse_all(&rx, &e);
            }
            self.linger.observe(started.elapsed());
            self.active.len = at;
            self.segments.committed(self.active.base, batch.len());
            for (request, offset) in batch.into_iter().zip(offsets) {
                let _ = request.done.send(Ok(Placed {
                    segment: self.active.base,
                    offset,
                    inline: request.inline,
                }));
            }
        }
    }

    /// Answers every further request with a failure, until the spool goes.
    fn refuse_all(&self, rx: &mpsc::Receiver<CommitRequest>, cause: &io::Error) {
        tracing::error!(error = %cause, "spool log unusable: refusing every commit until restart");
        self.unusable.notify_one();
        let failed = Failed {
            storage_full: false,
            message: format!("spool log failed earlier: {cause}"),
        };
        while let Ok(request) = rx.recv() {
            let _ = request.done.send(Err(failed.clone()));
        }
    }
}

/// Makes a directory's entries durable (new and removed files).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The length and SHA-256 (hex) of everything `bytes` yields, streamed: a large message is
/// never held in memory to be hashed.
pub(crate) fn sha256_of(bytes: &mut impl io::Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let size = io::copy(bytes, &mut hasher)?;
    Ok((size, hex(&hasher.finalize())))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Recovery as the fuzz targets drive it (`fuzz/drivers/spool_recovery.rs`).
pub(crate) mod fuzzing {
    use std::io;
    use std::path::{Path, PathBuf};

    use super::{Spool, SpoolLimits, read_data, segments};

    /// What one recovery of a data directory handed over.
    #[derive(Debug)]
    pub struct Recovered {
        /// Every intact record, in commit order: its id, the SHA-256 (hex) it records, and
        /// its message bytes read back as `get --as-received` reads them.
        pub messages: Vec<(String, String, Vec<u8>)>,
        /// Bytes cut from a torn tail.
        pub truncated_bytes: u64,
    }

    /// Opens (so recovers) the spool of `data_dir` and reads back every record it hands over.
    pub fn recover(data_dir: &Path) -> io::Result<Recovered> {
        let mut records = Vec::new();
        let (spool, recovery) =
            Spool::open(data_dir, SpoolLimits::default(), &mut |r| records.push(r))?;
        drop(spool);
        let messages = records
            .into_iter()
            .map(|r| {
                let bytes = read_data(data_dir, &r.id, r.log_offset)?;
                Ok((r.id, r.sha256, bytes))
            })
            .collect::<io::Result<_>>()?;
        Ok(Recovered {
            messages,
            truncated_bytes: recovery.truncated_bytes,
        })
    }

    /// Where the first log segment of `data_dir`'s spool is.
    pub fn first_segment(data_dir: &Path) -> PathBuf {
        segments::path(&data_dir.join("spool"), segments::Place::Live, 0)
    }
}

#[cfg(test)]
impl SpoolLimits {
    /// Limits under which every batch after the first starts a new segment (tests).
    pub(crate) fn one_batch_per_segment() -> SpoolLimits {
        SpoolLimits {
            segment_bytes: 1,
            ..SpoolLimits::default()
        }
    }
}

#[cfg(test)]
impl Record {
    /// A record for one journal address, as tests of the spool and the pipeline need it.
    pub(crate) fn for_test(id: u64, received_at: u64) -> Record {
        Record {
            id: format_id(id),
            received_at,
            peer: "127.0.0.1".into(),
            helo: "x".into(),
            tls_version: None,
            tls_cipher: None,
            authenticated: None,
            mail_from: None,
            recipients: vec!["journaling@journal.contoso.com".into()],
            journals: vec![0],
            size: 0,
            sha256: String::new(),
            inline_data: false,
            log_offset: None,
            segment: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        crate::testing::temp_dir(&format!("spool-{name}"))
    }

    fn record(id: u64) -> Record {
        Record::for_test(id, 0)
    }

    /// Opens the spool, collecting the records recovery hands over.
    fn open(dir: &Path) -> (Spool, Recovery, Vec<Record>) {
        open_with(dir, SpoolLimits::default())
    }

    fn open_with(dir: &Path, limits: SpoolLimits) -> (Spool, Recovery, Vec<Record>) {
        let mut records = Vec::new();
        let (spool, recovery) = Spool::open(dir, limits, &mut |r| records.push(r)).unwrap();
        (spool, recovery, records)
    }

    /// The first log segment, where a fresh spool appends.
    fn first_segment(dir: &Path) -> PathBuf {
        dir.join("spool/log/00000000000000000000.log")
    }

    async fn commit_bytes(spool: &Spool, body: &[u8]) -> Record {
        let mut w = spool.begin().unwrap();
        w.write(body).unwrap();
        let r = record(w.id());
        spool.commit(w, r).await.unwrap().0
    }

    #[tokio::test]
    async fn a_commit_waits_for_a_message_still_being_received() {
        let dir = temp_dir("linger");
        let limits = SpoolLimits {
            max_commit_linger: linger::LINGER_CEILING,
            ..SpoolLimits::default()
        };
        let (spool, _, _) = open_with(&dir, limits);
        let spool = Arc::new(spool);
        let mut second = spool.begin().unwrap();
        second.write(b"Subject: second\r\n\r\n").unwrap();
        let first = tokio::spawn({
            let spool = spool.clone();
            async move { commit_bytes(&spool, b"Subject: first\r\n\r\n").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !first.is_finished(),
            "committed without waiting for the message being received"
        );
        let record = record(second.id());
        let second = spool.commit(second, record).await.unwrap().0;
        let first = first.await.unwrap();
        assert!(second.log_offset > first.log_offset);
    }

    #[test]
    fn ids_go_on_after_the_newest_the_archive_holds_whatever_the_clock_says() {
        let dir = temp_dir("ids-after");
        let (spool, _, _) = open(&dir);
        // As if the clock had gone back an hour since the archive's newest item.
        let newest = (crate::clock::now().0 + 3_600_000) << 20;
        spool.ids_after(newest);
        assert_eq!(spool.begin().unwrap().id(), newest + 1);
        assert_eq!(spool.begin().unwrap().id(), newest + 2);
        spool.ids_after(1);
        assert_eq!(spool.begin().unwrap().id(), newest + 3, "never back");
    }

    #[tokio::test]
    async fn commit_then_recover_then_torn_tail_and_orphans() {
        let dir = temp_dir("recover");
        let committed_id;
        {
            let (spool, recovery, records) = open(&dir);
            assert!(records.is_empty());
            assert_eq!(recovery.committed, 0);
            let mut w = spool.begin().unwrap();
            committed_id = w.id();
            w.write(b"Subject: a\r\n\r\nbody\r\n").unwrap();
            let (r, _) = spool.commit(w, record(committed_id)).await.unwrap();
            assert_eq!(r.size, 20);
            // An unacknowledged large message: its data file written, never committed.
            let mut orphan = spool.begin().unwrap();
            orphan.write(&vec![b'x'; INLINE_LIMIT + 1]).unwrap();
            if let Sink::File(file) = &mut orphan.sink {
                file.flush().unwrap();
            }
            std::mem::forget(orphan);
        }
        // A torn record at the end of the log.
        let log = first_segment(&dir);
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (_spool, recovery, records) = open(&dir);
        assert_eq!((recovery.committed, records.len()), (1, 1));
        assert_eq!(records[0].id, format_id(committed_id));
        assert_eq!(recovery.truncated_bytes, 7);
        assert_eq!(recovery.discarded.len(), 1);
        let id = format_id(committed_id);
        assert_eq!(
            read_data(&dir, &id, None).unwrap(),
            b"Subject: a\r\n\r\nbody\r\n"
        );
        let offset = records[0].log_offset;
        assert!(offset.is_some(), "a small message is inline in its record");
        assert_eq!(
            read_data(&dir, &id, offset).unwrap(),
            b"Subject: a\r\n\r\nbody\r\n"
        );
    }

    #[tokio::test]
    async fn a_damaged_frame_mid_log_is_set_aside_not_truncated() {
        let dir = temp_dir("midlog");
        let mut ids = Vec::new();
        {
            let (spool, _, _) = open(&dir);
            for body in [&b"first message"[..], b"second message"] {
                let mut w = spool.begin().unwrap();
                w.write(body).unwrap();
                let r = record(w.id());
                ids.push(spool.commit(w, r).await.unwrap().0.id);
            }
        }
        let log = first_segment(&dir);
        let mut bytes = fs::read(&log).unwrap();
        let first_len = 12 + frame::u32_at(&bytes, 0) as usize + frame::u32_at(&bytes, 4) as usize;
        bytes[first_len - 1] ^= 0xff; // flip the last data byte of the first frame
        fs::write(&log, &bytes).unwrap();
        let (_spool, recovery, records) = open(&dir);
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, ids[1]);
        assert_eq!(
            recovery.quarantined,
            ["log-00000000000000000000-frame-at-0"]
        );
        let set_aside = dir.join("spool/quarantine/log-00000000000000000000-frame-at-0");
        assert_eq!(fs::read(set_aside).unwrap(), bytes[..first_len]);
    }

    #[tokio::test]
    async fn a_damaged_tail_of_a_sealed_segment_is_set_aside_then_cut() {
        let dir = temp_dir("sealed-tail");
        let first = {
            let (spool, _, _) = open_with(&dir, SpoolLimits::one_batch_per_segment());
            let first = commit_bytes(&spool, b"Subject: first\r\n\r\n").await;
            commit_bytes(&spool, b"Subject: second\r\n\r\n").await;
            first
        };
        let sealed = first_segment(&dir);
        let intact = fs::metadata(&sealed).unwrap().len();
        let junk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        OpenOptions::new()
            .append(true)
            .open(&sealed)
            .unwrap()
            .write_all(&junk)
            .unwrap();
        let (_spool, recovery, records) = open(&dir);
        assert_eq!(records.len(), 2, "both acknowledged records are recovered");
        assert_eq!(records[0].id, first.id);
        assert_eq!(
            recovery.truncated_bytes, 0,
            "not the torn tail of an append"
        );
        let name = format!("log-00000000000000000000-tail-at-{intact}");
        assert_eq!(recovery.quarantined, std::slice::from_ref(&name));
        assert_eq!(
            fs::read(dir.join("spool/quarantine").join(name)).unwrap(),
            junk
        );
        assert_eq!(fs::metadata(&sealed).unwrap().len(), intact);
    }

    #[tokio::test]
    async fn a_header_claiming_gigabytes_is_a_torn_tail_not_an_allocation() {
        let dir = temp_dir("huge-header");
        let id = {
            let (spool, _, _) = open(&dir);
            let mut w = spool.begin().unwrap();
            w.write(b"kept").unwrap();
            let r = record(w.id());
            spool.commit(w, r).await.unwrap().0.id
        };
        let log = first_segment(&dir);
        let kept = fs::metadata(&log).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        // json and data lengths of 4 GiB - 1 each, then a few bytes.
        f.write_all(&[0xff; 8]).unwrap();
        f.write_all(&[0; 20]).unwrap();
        drop(f);
        let (_spool, recovery, records) = open(&dir);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, id);
        assert_eq!(recovery.truncated_bytes, 28);
        assert_eq!(fs::metadata(&log).unwrap().len(), kept);
    }

    #[tokio::test]
    async fn corrupt_data_is_quarantined() {
        let dir = temp_dir("corrupt");
        let id;
        {
            let (spool, _, _) = open(&dir);
            let mut w = spool.begin().unwrap();
            id = format_id(w.id());
            w.write(&vec![b'h'; INLINE_LIMIT + 10]).unwrap();
            let r = record(w.id());
            spool.commit(w, r).await.unwrap();
        }
        fs::write(dir.join("spool/data").join(&id), b"HELLO").unwrap();
        let (_spool, recovery, records) = open(&dir);
        assert!(records.is_empty());
        assert_eq!(recovery.quarantined, std::slice::from_ref(&id));
        assert!(dir.join("spool/quarantine").join(&id).exists());
    }

    /// A commit log and the bytes of each message it commits, by id.
    type Template = (Vec<u8>, std::collections::HashMap<String, Vec<u8>>);

    /// A commit log holding a few committed messages, built once.
    fn template_log() -> &'static Template {
        static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
        TEMPLATE.get_or_init(|| {
            let dir = temp_dir("template");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut messages = std::collections::HashMap::new();
            {
                let (spool, _, _) = open(&dir);
                for n in 0..6usize {
                    let body: Vec<u8> = (0..n * 97).map(|i| (i * 31 + n) as u8).collect();
                    let mut w = spool.begin().unwrap();
                    w.write(&body).unwrap();
                    let r = record(w.id());
                    let (committed, _) = runtime.block_on(spool.commit(w, r)).unwrap();
                    messages.insert(committed.id, body);
                }
            }
            let log = fs::read(first_segment(&dir)).unwrap();
            let _ = fs::remove_dir_all(&dir);
            (log, messages)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever happened to the log (bytes changed, a tail cut, garbage appended),
        /// recovery does not panic, hands over only records that were committed, each with
        /// exactly its bytes, and leaves a log that recovers the same way again with nothing
        /// more to cut.
        #[test]
        fn recovery_hands_over_only_intact_committed_records(
            changes in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..6),
            keep in proptest::prelude::any::<proptest::sample::Index>(),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let (log, messages) = template_log();
            let mut damaged = log.clone();
            for (at, byte) in changes {
                let at = at.index(damaged.len());
                damaged[at] = byte;
            }
            damaged.truncate(keep.index(damaged.len() + 1));
            damaged.extend_from_slice(&garbage);
            let dir = temp_dir("damaged");
            fs::create_dir_all(dir.join("spool/data")).unwrap();
            // Written where logs were before segments: opening moves it to segment 0.
            fs::write(dir.join("spool/commit.log"), &damaged).unwrap();
            let first = {
                let (_spool, _, records) = open(&dir);
                records
            };
            for record in &first {
                let expected = messages.get(&record.id);
                proptest::prop_assert!(expected.is_some(), "{} was never committed", record.id);
                let bytes = read_data(&dir, &record.id, record.log_offset).unwrap();
                proptest::prop_assert_eq!(Some(&bytes), expected);
            }
            let (_spool, again, records) = open(&dir);
            proptest::prop_assert_eq!(again.truncated_bytes, 0);
            let ids = |rs: &[Record]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(ids(&records), ids(&first));
            let _ = fs::remove_dir_all(&dir);
        }
    }

    #[tokio::test]
    async fn full_segments_seal_and_retired_ones_are_kept_but_not_recovered() {
        let dir = temp_dir("segments");
        let tiny = SpoolLimits::one_batch_per_segment();
        let large = vec![b'L'; INLINE_LIMIT + 5];
        let (first, second, third) = {
            let (spool, _, _) = open_with(&dir, tiny);
            let first = commit_bytes(&spool, b"first").await;
            let second = commit_bytes(&spool, &large).await;
            let third = commit_bytes(&spool, b"third").await;
            let segments = spool.segments();
            assert_eq!(
                segments.sealed(),
                [(first.segment, 1), (second.segment, 1)],
                "the active segment is never offered for retirement"
            );
            assert!(first.segment < second.segment && second.segment < third.segment);
            segments.retire(first.segment).unwrap();
            segments.retire(second.segment).unwrap();
            assert!(segments.retire(third.segment).is_err(), "active");
            assert!(segments.sealed().is_empty());
            (first, second, third)
        };
        assert!(dir.join("spool/kept/data").join(&second.id).exists());
        assert!(!dir.join("spool/data").join(&second.id).exists());
        // Start-up reads only the live segment; kept messages are still readable as received.
        let (spool, recovery, records) = open_with(&dir, tiny);
        assert_eq!(
            records.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&third.id]
        );
        assert!(recovery.discarded.is_empty() && recovery.quarantined.is_empty());
        assert_eq!(
            read_data(&dir, &first.id, first.log_offset).unwrap(),
            b"first"
        );
        assert_eq!(read_data(&dir, &first.id, None).unwrap(), b"first");
        assert_eq!(read_data(&dir, &second.id, None).unwrap(), large);
        assert_eq!(
            read_data(&dir, &third.id, third.log_offset).unwrap(),
            b"third"
        );
        let usage = usage(&dir).unwrap();
        assert_eq!((usage.live_segments, usage.kept_segments), (1, 2));
        let size = |path: PathBuf| fs::metadata(path).unwrap().len();
        assert_eq!(
            usage.kept_bytes,
            size(segments::path(
                &dir.join("spool"),
                segments::Place::Kept,
                first.segment
            )) + size(segments::path(
                &dir.join("spool"),
                segments::Place::Kept,
                second.segment
            )) + large.len() as u64
        );
        // New records never reuse the offsets of kept ones.
        let fourth = commit_bytes(&spool, b"fourth").await;
        assert!(fourth.log_offset > third.log_offset);
        assert_eq!(
            read_data(&dir, &fourth.id, fourth.log_offset).unwrap(),
            b"fourth"
        );
    }

    #[tokio::test]
    async fn a_retirement_cut_short_by_a_crash_loses_nothing() {
        let dir = temp_dir("retire-crash");
        let tiny = SpoolLimits::one_batch_per_segment();
        let large = vec![b'q'; INLINE_LIMIT + 1];
        let committed = {
            let (spool, _, _) = open_with(&dir, tiny);
            let committed = commit_bytes(&spool, &large).await;
            commit_bytes(&spool, b"next").await;
            committed
        };
        // The crash came after the data file moved and before the segment did.
        fs::rename(
            dir.join("spool/data").join(&committed.id),
            dir.join("spool/kept/data").join(&committed.id),
        )
        .unwrap();
        let (spool, recovery, records) = open_with(&dir, tiny);
        assert_eq!(records.len(), 2);
        assert!(recovery.discarded.is_empty() && recovery.quarantined.is_empty());
        assert_eq!(read_data(&dir, &committed.id, None).unwrap(), large);
        // And the retirement completes when it is tried again.
        spool.segments().retire(committed.segment).unwrap();
        assert_eq!(read_data(&dir, &committed.id, None).unwrap(), large);
    }

    /// A file-size limit makes an append fail part-way, as a full disk would; the limit holds
    /// for the whole process, so the test runs itself again in a child process.
    #[test]
    fn a_failed_append_is_cut_off_and_the_spool_goes_on() {
        const NAME: &str = "serve::spool::tests::a_failed_append_is_cut_off_and_the_spool_goes_on";
        const CHILD: &str = "JOURNAL_SPOOL_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // A write past the limit raises SIGXFSZ (25 on Linux), whose default action ends
            // the process: take it instead.
            let _xfsz =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25)).unwrap();
            let dir = temp_dir("append-fails");
            let (spool, _, _) = open(&dir);
            let before = commit_bytes(&spool, b"before").await;
            let committed = fs::metadata(first_segment(&dir)).unwrap().len();

            use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
            let unlimited = getrlimit(Resource::Fsize);
            let tight = Rlimit {
                current: Some(committed + 64),
                maximum: unlimited.maximum,
            };
            setrlimit(Resource::Fsize, tight).unwrap();
            let mut w = spool.begin().unwrap();
            w.write(&[b'x'; 4096]).unwrap();
            let r = record(w.id());
            assert!(spool.commit(w, r).await.is_err(), "past the limit");
            assert_eq!(
                fs::metadata(first_segment(&dir)).unwrap().len(),
                committed,
                "the part of the batch that was written is cut off"
            );
            setrlimit(Resource::Fsize, unlimited).unwrap();

            let after = commit_bytes(&spool, b"after").await;
            drop(spool);
            let (_spool, recovery, records) = open(&dir);
            assert_eq!(recovery.truncated_bytes, 0);
            let ids: Vec<_> = records.iter().map(|r| r.id.clone()).collect();
            assert_eq!(ids, [before.id, after.id]);
        });
    }

    #[tokio::test]
    async fn a_failed_sync_refuses_every_commit_until_a_restart_and_raises_the_alarm() {
        let dir = temp_dir("sync-fails");
        let (spool, _, _) = open(&dir);
        let before = commit_bytes(&spool, b"before").await;
        // A large message has a data file, whose directory is synced with its batch: with the
        // directory moved away, that sync fails for real.
        let mut w = spool.begin().unwrap();
        w.write(&vec![b'x'; INLINE_LIMIT + 1]).unwrap();
        let data = segments::Place::Live.data_dir(&dir.join("spool"));
        let elsewhere = dir.join("elsewhere");
        fs::rename(&data, &elsewhere).unwrap();
        let r = record(w.id());
        assert!(spool.commit(w, r).await.is_err(), "acknowledged unsynced");
        tokio::time::timeout(std::time::Duration::from_secs(10), spool.unusable())
            .await
            .expect("the spool did not say it is unusable");
        fs::rename(&elsewhere, &data).unwrap();
        // Nothing more is taken, even with the directory back: after a failed sync the log
        // cannot be trusted until recovery has read it again.
        let mut w = spool.begin().unwrap();
        w.write(b"refused").unwrap();
        let r = record(w.id());
        assert!(
            spool.commit(w, r).await.is_err(),
            "took a message after a failed sync"
        );
        drop(spool);

        let (spool, _, records) = open(&dir);
        assert_eq!(records.first().map(|r| r.id.clone()), Some(before.id));
        assert!(
            !records.iter().any(|r| r.size == 7),
            "a refused message was recovered"
        );
        let after = commit_bytes(&spool, b"after").await;
        assert_eq!(after.size, 5, "a restart makes the spool usable again");
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(
            parse_id(&format_id(0x0123_4567_89AB_CDEF)),
            Some(0x0123_4567_89AB_CDEF)
        );
        assert_eq!(parse_id("xyz"), None);
    }
}
