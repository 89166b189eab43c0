//! The durable spool of a mail receiver: every accepted message is on disk before its `250`.
//!
//! A message is written as it arrives ([`Spool::begin`], [`SpoolWriter::write`]: memory stays
//! bounded whatever its size) and committed with [`Spool::commit`], whose [`Commit`] completes
//! only once the message and its [`Record`] are synced. Commits are grouped: one committer
//! thread appends every waiting record in one write and syncs the log once for all of them.
//! Each committed record then reaches the spool's [`Consumer`] straight from the committer,
//! with the message bytes when they travelled inside the record, so that whoever processes
//! messages (the archiving engine) need not read back what was just written.
//!
//! Opening a spool ([`Spool::open`]) runs recovery first and hands every intact committed
//! record of the live segments back; what recovery cut, removed or set aside is in the
//! [`Recovery`] it returns. Sealed segments whose records are all settled elsewhere are
//! retired through [`Segments::retire`]: recovery no longer reads them, [`read_as_received`]
//! still does.
//!
//! The spool is not tied to an async runtime: [`Commit`] is a future any executor can poll,
//! and [`Commit::wait`] blocks a thread instead. Time comes from a [`Clock`], so that what
//! depends on it (queue ids) is testable without sleeping.
//!
//! ```
//! use mailjournal_spool::{Clock, Envelope, Spool, SpoolOptions, SystemClock};
//!
//! let dir = std::env::temp_dir().join(format!("spool-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let (committed_tx, committed_rx) = std::sync::mpsc::channel();
//! let consumer = move |record: mailjournal_spool::Record, _bytes: Option<Vec<u8>>| {
//!     let _ = committed_tx.send(record.id);
//! };
//! let (spool, recovery) =
//!     Spool::open(&dir, SpoolOptions::default(), &mut |_| {}, Box::new(consumer))?;
//! assert_eq!(recovery.committed, 0, "a new spool");
//!
//! let mut message = spool.begin();
//! message.write(b"Subject: hello\r\n\r\nbody\r\n")?;
//! let committed = spool
//!     .commit(message, Envelope::new("journaling@journal.example.com", SystemClock.now()))
//!     .wait()?; // or `.await` on any executor
//! assert_eq!(committed.size, 24);
//! assert_eq!(committed_rx.recv().unwrap(), committed.id);
//! drop(spool);
//!
//! // Reopening recovers the record: it is durable.
//! let mut recovered = Vec::new();
//! let (_spool, _) =
//!     Spool::open(&dir, SpoolOptions::default(), &mut |r| recovered.push(r.id), Box::new(|_, _| {}))?;
//! assert_eq!(recovered, [committed.id]);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layout under the spool's directory:
//! * `log/<BASE>.log`: the commit log, in segments (see [`Segments`]): one CRC-framed record
//!   per committed message: its metadata (JSON) and, for a message up to [`INLINE_LIMIT`],
//!   its bytes. The record is the commit point.
//! * `data/<ID>`: the bytes of a larger message, streamed to disk while the client sends them;
//! * `kept/`: retired segments and their data files, read only by [`read_as_received`];
//! * `quarantine/`: data files whose record does not match them (size or SHA-256), and
//!   damaged stretches of the log.

mod alarm;
mod clock;
mod committer;
mod completion;
mod frame;
mod linger;
mod read;
mod recovery;
mod segments;
mod writer;

pub use alarm::{Alarm, AlarmGuard, Raised};
pub use clock::{Clock, SystemClock};
pub use completion::Commit;
pub use read::{SpoolReader, read_as_received, usage};
pub use recovery::Recovery;
pub use segments::{Segments, Usage, delete_kept, kept_items, live_records};
pub use writer::SpoolWriter;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use mailjournal_queue::{ContentHash, ItemId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use committer::{CommitRequest, Committer, DataFileSync};
use frame::MAX_RECORD_JSON;
use linger::{InFlight, Linger};

/// Messages up to this size travel inside their commit record (one shared sync); larger ones
/// are streamed to a file of their own.
pub const INLINE_LIMIT: usize = 1024 * 1024;

/// How the spool behaves: how large it lets things grow, how long it groups commits, and
/// where its time comes from.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Bytes that must stay free on the spool's file system; below that,
    /// [`Spool::low_on_space`] says so (a receiver answers `452 4.3.1`). The check lets
    /// through at most about one message below it (see [`Spool::low_on_space`]).
    pub reserve_bytes: u64,
    /// Past this size the committer starts a new log segment. Smaller segments retire sooner
    /// (start-up reads less); larger ones mean fewer files.
    pub segment_bytes: u64,
    /// The longest the committer holds a batch for messages still being received (about one
    /// recent sync time at most, and only while some are; at most a second). Zero: never.
    pub max_commit_linger: std::time::Duration,
    /// Where queue ids take their time from.
    pub clock: Arc<dyn Clock>,
    /// This receiver's number among those sharing one archive (0 alone): it is part of
    /// every queue id, so that two receivers accepting in the same millisecond hand out
    /// different ids.
    pub node: u8,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            reserve_bytes: 256 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            max_commit_linger: std::time::Duration::from_millis(2),
            clock: Arc::new(SystemClock),
            node: 0,
        }
    }
}

/// Queue ids: the millisecond of arrival in the high 44 bits, the node in the next 8, a
/// counter in the low 12 (4 096 ids a millisecond; more borrow the next millisecond). They
/// sort by arrival and stay 16 hex digits. The spool counts in a *sequence* (the
/// millisecond and the counter, without the node) and places the node when it hands an id
/// out.
const NODE_SHIFT: u32 = 12;
const MS_SHIFT: u32 = 20;
const COUNTER_MASK: u64 = (1 << NODE_SHIFT) - 1;

fn id_from(sequence: u64, node: u8) -> ItemId {
    ItemId(
        ((sequence >> NODE_SHIFT) << MS_SHIFT)
            | (u64::from(node) << NODE_SHIFT)
            | (sequence & COUNTER_MASK),
    )
}

/// The first sequence whose ids come after `id`, for node `node`. Another node's id (or one
/// written before ids carried a node, with a counter past 4 095) moves on to the next
/// millisecond: every id of `node` from there is greater.
fn sequence_after(id: ItemId, node: u8) -> u64 {
    let ms = id.0 >> MS_SHIFT;
    if (id.0 >> NODE_SHIFT) & 0xff == u64::from(node) {
        ((ms << NODE_SHIFT) | (id.0 & COUNTER_MASK)).saturating_add(1)
    } else {
        ms.saturating_add(1) << NODE_SHIFT
    }
}

/// What the receiver knows of a message when it commits it: the SMTP envelope and the
/// session's facts. The spool adds the rest of the [`Record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// When it was accepted.
    pub received_at: Timestamp,
    /// The client's address.
    pub peer: String,
    /// The client's HELO/EHLO name.
    pub helo: String,
    /// The TLS version, when the session was secure.
    pub tls_version: Option<String>,
    /// The TLS cipher suite, when the session was secure.
    pub tls_cipher: Option<String>,
    /// The authenticated identity, if any.
    pub authenticated: Option<String>,
    /// The reverse-path; `None` for `<>`.
    pub mail_from: Option<String>,
    /// The recipients as the client wrote them.
    pub recipients: Vec<String>,
    /// The journal definition the message was accepted for, by its service email address
    /// (its identity: never a position in a configuration that may change meanwhile).
    /// `None` only in records written before it was kept.
    #[serde(default)]
    pub journal: Option<String>,
}

impl Envelope {
    /// An envelope for a message accepted at `received_at` for `journal` (a service email
    /// address), with the journal address as its one recipient and nothing else known: what
    /// tests and receivers that are not SMTP servers start from.
    pub fn new(journal: &str, received_at: Timestamp) -> Envelope {
        Envelope {
            received_at,
            peer: String::new(),
            helo: String::new(),
            tls_version: None,
            tls_cipher: None,
            authenticated: None,
            mail_from: None,
            recipients: vec![journal.to_owned()],
            journal: Some(journal.to_owned()),
        }
    }
}

/// Where a committed message's bytes are: inside its record in the commit log, or in a data
/// file of its own.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The log segment holding the record (its base: the segment's first byte in the log as a
    /// whole).
    pub segment: u64,
    /// Where the record starts in the log, when the bytes are inside it; `None` for a data
    /// file.
    pub log_offset: Option<u64>,
}

/// What the spool stores with each message: its commit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The queue id (16 hex digits in the log, like everywhere else).
    #[serde(with = "id_text")]
    pub id: ItemId,
    /// What the receiver knew of the message.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes.
    pub sha256: ContentHash,
    /// True when the bytes are inside the commit record rather than in a data file.
    #[serde(default)]
    pub inline_data: bool,
    /// Where it is (filled in when it is committed or recovered; not stored).
    #[serde(skip)]
    pub location: Location,
}

/// Queue ids as text in the log: the same 16 hex digits as in replies and `status`, and
/// anything else is damage, never a file name.
pub(crate) mod id_text {
    use mailjournal_queue::ItemId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &ItemId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ItemId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A committed message, as [`Commit`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Its queue id.
    pub id: ItemId,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is.
    pub location: Location,
}

/// Why a commit failed: a receiver answers with a temporary error and the client retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The file system is full or a quota is exhausted (`452 4.3.1`).
    #[error("no space left for the spool")]
    StorageFull,
    /// Writing or syncing failed.
    #[error("spool write failed")]
    Io(#[source] Arc<io::Error>),
    /// An earlier sync failed: nothing in the log can be trusted to be durable until a
    /// restart has recovered it, so every commit is refused (see [`Spool::unusable`]).
    #[error("the spool can no longer make messages durable")]
    Unusable(#[source] Arc<io::Error>),
    /// The record's metadata is larger than recovery would read back.
    #[error("commit record metadata too large ({0} bytes)")]
    RecordTooLarge(usize),
    /// The spool is shutting down.
    #[error("the spool is shut down")]
    Stopped,
}

impl From<io::Error> for CommitError {
    fn from(e: io::Error) -> Self {
        if is_storage_full(&e) {
            CommitError::StorageFull
        } else {
            CommitError::Io(Arc::new(e))
        }
    }
}

/// True for a full file system or an exhausted quota: the client should hear "insufficient
/// storage" and try later, not a generic local error.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Takes every committed record, in commit order, from the committer thread, once the record
/// is durable: with the message bytes when they travelled inside it (`None` for a large
/// message, whose bytes are in its data file). It must not block: it holds up every commit.
pub trait Consumer: Send + 'static {
    /// One record made durable.
    fn committed(&mut self, record: Record, inline: Option<Vec<u8>>);
}

impl<F: FnMut(Record, Option<Vec<u8>>) + Send + 'static> Consumer for F {
    fn committed(&mut self, record: Record, inline: Option<Vec<u8>>) {
        self(record, inline)
    }
}

/// The spool of one directory: the committer thread, the thread that syncs large messages'
/// data files, and the live segments' bookkeeping. Dropping it finishes the commits it was
/// given and joins both threads.
pub struct Spool {
    root: PathBuf,
    data_dir: PathBuf,
    /// The next id's sequence (see [`NODE_SHIFT`]).
    next_sequence: AtomicU64,
    node: u8,
    clock: Arc<dyn Clock>,
    committer: mpsc::Sender<CommitRequest>,
    data_files: mpsc::Sender<DataFileSync>,
    /// Messages being received, which the committer may wait for.
    receiving: Arc<InFlight>,
    threads: Vec<std::thread::JoinHandle<()>>,
    segments: Arc<Segments>,
    reserve_bytes: u64,
    /// Bytes written by this spool's writers, ever: what the last look at the file system
    /// has not seen yet is the difference.
    written: Arc<AtomicU64>,
    /// The last look at the file system.
    space: std::sync::Mutex<SpaceCheck>,
    unusable: Alarm,
}

/// What the file system said at the last look, and how much had been written by then.
#[derive(Debug, Default, Clone, Copy)]
struct SpaceCheck {
    at: Option<std::time::Instant>,
    free: u64,
    written: u64,
}

/// How long a look at the file system stands for other writers' files (the archive's, say),
/// which this spool does not count.
const SPACE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating) the spool in directory `root`: recovers its live segments, handing
    /// every intact committed record to `on_recovered` in commit order, then starts the
    /// committer, which hands every record committed from then on to `consumer`.
    pub fn open(
        root: &Path,
        options: SpoolOptions,
        on_recovered: &mut dyn FnMut(Record),
        consumer: Box<dyn Consumer>,
    ) -> io::Result<(Spool, Recovery)> {
        segments::prepare(root)?;
        let mut last = 0;
        let recovery = recovery::recover(root, &mut |record: Record| {
            last = last.max(record.id.0);
            on_recovered(record);
        })?;
        let (segments, active) = Segments::open(root, &recovery.segments)?;
        let segments = Arc::new(segments);
        let data_dir = segments::Place::Live.data_dir(root);
        let receiving = Arc::new(InFlight::default());
        let unusable = Alarm::default();
        let (tx, rx) = mpsc::channel::<CommitRequest>();
        let committer = Committer {
            active,
            segments: segments.clone(),
            segment_bytes: options.segment_bytes,
            data_dir: data_dir.clone(),
            receiving: receiving.clone(),
            linger: Linger::new(options.max_commit_linger),
            unusable: unusable.clone(),
            consumer,
        };
        let guard = unusable.guard();
        let committer_thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || {
                committer.run(rx);
                guard.disarm();
            })?;
        let (files_tx, files_rx) = mpsc::channel::<DataFileSync>();
        let forward = tx.clone();
        let sync_thread = std::thread::Builder::new()
            .name("spool-sync".into())
            .spawn(move || committer::sync_data_files(files_rx, forward))?;
        Ok((
            Spool {
                root: root.to_path_buf(),
                data_dir,
                // The log may hold ids another node's spool made (a data directory moved
                // between receivers): sequence_after moves past them too.
                next_sequence: AtomicU64::new(sequence_after(ItemId(last), options.node)),
                node: options.node,
                clock: options.clock,
                committer: tx,
                data_files: files_tx,
                receiving,
                threads: vec![sync_thread, committer_thread],
                segments,
                reserve_bytes: options.reserve_bytes,
                written: Arc::default(),
                space: std::sync::Mutex::new(SpaceCheck::default()),
                unusable,
            },
            recovery,
        ))
    }

    /// The spool's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Raised once the spool can no longer make messages durable: a sync failed (after which
    /// nothing in the log can be trusted until a restart recovers it) or the committer thread
    /// ended unexpectedly. Every commit is refused from then on; a server should stop.
    pub fn unusable(&self) -> &Alarm {
        &self.unusable
    }

    /// The live segments' bookkeeping, for whoever retires them.
    pub fn segments(&self) -> Arc<Segments> {
        self.segments.clone()
    }

    /// Hands out only ids after `id` from now on. Ids are time-based and recovery sees only
    /// the live segments: after a restart with every segment retired and a clock set back
    /// (a restored VM, an NTP step), new ids could repeat ones an archive already holds, so
    /// pass the newest of those here before accepting anything.
    pub fn ids_after(&self, id: ItemId) {
        self.next_sequence
            .fetch_max(sequence_after(id, self.node), Ordering::Relaxed);
    }

    /// A new queue id (see [`NODE_SHIFT`]): the clock's millisecond, this node, a counter;
    /// never one handed out before by this spool.
    fn new_id(&self) -> ItemId {
        let now = self.clock.now().0 << NODE_SHIFT;
        let mut current = self.next_sequence.load(Ordering::Relaxed);
        loop {
            let sequence = current.max(now);
            match self.next_sequence.compare_exchange_weak(
                current,
                sequence + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return id_from(sequence, self.node),
                Err(seen) => current = seen,
            }
        }
    }

    /// True when the spool's file system has less free space than the reserve. Sessions ask
    /// before every command batch, so the file system is looked at once per 100 ms at most;
    /// in between, what this spool's writers wrote since the last look counts against the
    /// free space it found, and an estimate under the reserve looks again at once. So no
    /// more than what is being received at that moment (about one message a session) gets
    /// below the reserve. Before, a one-second cache let some 30 MiB through.
    pub fn low_on_space(&self) -> bool {
        let Ok(mut space) = self.space.lock() else {
            return false;
        };
        let written = self.written.load(Ordering::Relaxed);
        let estimate = space
            .free
            .saturating_sub(written.saturating_sub(space.written));
        let stale = space.at.is_none_or(|at| at.elapsed() >= SPACE_CHECK_EVERY);
        if stale || estimate < self.reserve_bytes {
            let Ok(stat) = rustix::fs::statvfs(&self.data_dir) else {
                return false;
            };
            *space = SpaceCheck {
                at: Some(std::time::Instant::now()),
                free: stat.f_bavail.saturating_mul(stat.f_frsize),
                written,
            };
        }
        space.free < self.reserve_bytes
    }

    /// Starts a message, with the queue id it will have. It counts among the messages the
    /// committer may briefly wait for until it is committed or dropped.
    pub fn begin(&self) -> SpoolWriter {
        let id = self.new_id();
        SpoolWriter::new(
            id,
            self.data_dir.join(id.to_string()),
            &self.receiving,
            self.written.clone(),
        )
    }

    /// Makes a message durable: the returned [`Commit`] completes once its data and record
    /// are synced (a large message's data file by the spool's sync thread, concurrently with
    /// other commits; then its record in the next group commit).
    pub fn commit(&self, writer: SpoolWriter, envelope: Envelope) -> Commit {
        let finished = writer.finish();
        let record = Record {
            id: finished.id,
            envelope,
            size: finished.size,
            sha256: finished.sha256,
            inline_data: finished.inline.is_some(),
            location: Location::default(),
        };
        let json = match serde_json::to_vec(&record) {
            Ok(json) if json.len() <= MAX_RECORD_JSON => json,
            // Recovery would take a longer record for damage: never write one.
            Ok(json) => return finished.fail(CommitError::RecordTooLarge(json.len())),
            Err(e) => return finished.fail(io::Error::other(e).into()),
        };
        let head = frame::frame_head(&json, finished.inline.as_deref().unwrap_or_default());
        let (done, commit) = completion::pair();
        let request = CommitRequest {
            head,
            json,
            record,
            inline: finished.inline,
            data_file: finished.file.as_ref().map(|_| finished.path.clone()),
            done,
        };
        match finished.file {
            None => {
                // Sent before the ticket ends: a committer this wakes finds the request.
                let _ = self.committer.send(request);
                drop(finished.receiving);
            }
            Some(file) => {
                let _ = self.data_files.send(DataFileSync {
                    file,
                    request,
                    receiving: finished.receiving,
                });
            }
        }
        commit
    }
}

impl Drop for Spool {
    /// Finishes the commits it was given: the sync thread forwards what it holds, then the
    /// committer stops once the last sender is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.data_files, closed));
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.committer, closed));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Makes a directory's entries durable (new and removed files).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The length and SHA-256 of everything `bytes` yields, streamed: a large message is never
/// held in memory to be hashed.
pub fn sha256_of(bytes: &mut impl io::Read) -> io::Result<(u64, ContentHash)> {
    let mut hasher = Sha256::new();
    let size = io::copy(bytes, &mut hasher)?;
    Ok((size, ContentHash(hasher.finalize().into())))
}

/// Where the first live log segment of the spool in `root` is: where a fresh spool appends
/// (for tests and fuzzers that build a log by hand).
pub fn first_segment_path(root: &Path) -> PathBuf {
    segments::path(root, segments::Place::Live, 0)
}

/// Removes a file that will not be committed, ignoring a file already gone.
fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests;
