//! The archive store of a journaling service, as two traits and an embedded default.
//!
//! What differs between backends is split in two:
//! * [`ContentStore`]: message content stored once, named by its [`ContentHash`], made
//!   durable in batches ([`ContentStore::make_durable`]) rather than one sync per message;
//! * [`ArchiveIndex`]: what the archive knows of every journal item (its state, attempts and
//!   reason), of every archived message (every delivery record with its recipients, the
//!   de-duplication key, the reports merged into it), the connectors' last message times and
//!   the spool segments retired.
//!
//! The engine (`mailjournal::engine`) drives both; a backend implements them without
//! touching it. The embedded default ([`embedded`], cargo feature `embedded`, on by default)
//! keeps the index in SQLite and the content in files under the data directory.
//!
//! ```
//! # #[cfg(feature = "embedded")] {
//! use mailjournal_archive::{ArchiveIndex, ContentStore, NewItem, embedded};
//! use mailjournal_queue::{ItemId, StateName, Timestamp};
//!
//! let dir = std::env::temp_dir().join(format!("archive-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let (index, content) = embedded::open(&dir)?;
//! let id = ItemId(0x0001_0000_0000_0001);
//! index.add_item(&NewItem {
//!     id,
//!     definition: "Microsoft 365",
//!     sender: "<>",
//!     recipient: "journaling@journal.example.com",
//!     received_at: Timestamp(1_000),
//!     size: 5,
//!     log_offset: None,
//! })?;
//! assert_eq!(index.progress(id)?.unwrap().state, StateName::Waiting);
//!
//! let hash = mailjournal_archive::hash_of(b"hello");
//! content.put(&hash, b"hello")?;
//! content.make_durable()?;
//! assert_eq!(content.read(&hash)?, b"hello");
//! # let _ = std::fs::remove_dir_all(&dir);
//! # }
//! # Ok::<(), mailjournal_archive::ArchiveError>(())
//! ```

#[cfg(feature = "embedded")]
pub mod embedded;
pub mod export;
#[cfg(feature = "shared")]
pub mod shared;

use std::io;

pub use mailjournal_queue::ContentHash;
use mailjournal_queue::{ItemId, StateName, Timestamp};

/// The settled states as an SQL list (`'archived', 'merged', ...`), from the one vocabulary:
/// each backend's pending index and the queries that use it must name the same states.
#[cfg(any(feature = "embedded", feature = "shared"))]
pub(crate) fn settled_sql() -> String {
    StateName::SETTLED
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hash that names `bytes` as content: their SHA-256.
pub fn hash_of(bytes: &[u8]) -> ContentHash {
    use sha2::Digest;
    ContentHash(sha2::Sha256::digest(bytes).into())
}

/// An archive-store failure, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The embedded index (SQLite) failed.
    #[cfg(feature = "embedded")]
    #[error("archive index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Reading or writing content (or the index's files) failed.
    #[error("archive storage: {0}")]
    Io(#[from] io::Error),
    /// A value read back is not what the store writes (a damaged or foreign database).
    #[error("archive holds an invalid {what}: {value:?}")]
    Invalid {
        /// What was expected.
        what: &'static str,
        /// What was found.
        value: String,
    },
    /// A write in the batch failed part way (that write reported its own error): the whole
    /// batch was rolled back rather than committed half done, and its items start over.
    #[error("archive batch rolled back: one of its writes failed part way")]
    BatchRolledBack,
    /// Another backend's failure.
    #[error("archive backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ArchiveError {
    /// True when the failure is a full file system or an exhausted quota.
    pub fn is_storage_full(&self) -> bool {
        let full = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        };
        match self {
            ArchiveError::Io(e) => full(e),
            #[cfg(feature = "embedded")]
            ArchiveError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            _ => false,
        }
    }
}

/// Result of an archive-store call.
pub type ArchiveResult<T> = Result<T, ArchiveError>;

/// An accepted item as the index first records it.
#[derive(Debug, Clone, Copy)]
pub struct NewItem<'a> {
    /// The queue id.
    pub id: ItemId,
    /// Its journal definition's description.
    pub definition: &'a str,
    /// The SMTP sender (`<>` for none).
    pub sender: &'a str,
    /// The journal address it arrived for.
    pub recipient: &'a str,
    /// When it was accepted.
    pub received_at: Timestamp,
    /// Its size in bytes.
    pub size: u64,
    /// Where its bytes are in the spool's commit log, when inline.
    pub log_offset: Option<u64>,
}

/// How far an item got, as the index recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Its state.
    pub state: StateName,
    /// Match attempts made.
    pub attempts: u32,
    /// Why it was dropped, failed or held.
    pub reason: Option<String>,
    /// The hash of its archived form, once archived or merged.
    pub content: Option<ContentHash>,
}

impl Progress {
    /// True once the item will not be processed again.
    pub fn is_settled(&self) -> bool {
        self.state.is_settled()
    }
}

/// One recipient line of an archived message (the keys of the `inspect` contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRecipient {
    /// The recipient's address.
    pub address: String,
    /// `to`, `cc`, `bcc` or `recipient`.
    pub field: String,
    /// The group it was expanded from, if any.
    pub expanded: Option<String>,
    /// The address it was forwarded from, if any.
    pub forwarded: Option<String>,
}

/// What is archived for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archival {
    /// The original's Message-ID (without angle brackets).
    pub message_id: Option<String>,
    /// The original's sent date: with the Message-ID, the de-duplication key.
    pub sent_date: Option<String>,
    /// The original's subject.
    pub subject: Option<String>,
    /// The original's sender.
    pub sender: Option<String>,
    /// Whom the sender sent for (the envelope's `On-Behalf-Of:`), if anyone.
    pub on_behalf_of: Option<String>,
    /// `envelope` or `eml`.
    pub format: String,
    /// The hash of the archived form (`None` while only matching, before the content is read).
    pub content: Option<ContentHash>,
    /// Every recipient of this report.
    pub recipients: Vec<ArchivedRecipient>,
    /// The internal mailboxes it is archived for.
    pub mailboxes: Vec<String>,
}

/// One recipient line of an archived message, with the report it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecipient {
    /// The line itself.
    pub recipient: ArchivedRecipient,
    /// The queue id of the report that named it.
    pub report: ItemId,
}

/// One report (journal item) merged into an archived message, the first included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its queue id.
    pub id: ItemId,
    /// Its state (`archived` for the first, `merged` for the others).
    pub state: StateName,
    /// Its journal definition's description.
    pub definition: String,
    /// When it was accepted.
    pub received_at: Timestamp,
}

/// An archived message as the archive knows it: who sent it, who received it (every
/// envelope recipient of every report merged into it, Bcc and expanded-group members
/// included), and where its archived form is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// Its id: the queue id of the first report archived for it.
    pub id: ItemId,
    /// The original's sender.
    pub sender: Option<String>,
    /// Whom the sender sent for, if anyone.
    pub on_behalf_of: Option<String>,
    /// The original's subject.
    pub subject: Option<String>,
    /// The original's Message-ID.
    pub message_id: Option<String>,
    /// The original's sent date.
    pub sent_date: Option<String>,
    /// `envelope` or `eml`.
    pub format: String,
    /// The hash of its archived form.
    pub content: ContentHash,
    /// When its first report was accepted.
    pub received_at: Timestamp,
    /// When it was archived.
    pub archived_at: Timestamp,
    /// Every recipient line, in the order they were archived.
    pub recipients: Vec<MessageRecipient>,
    /// The internal mailboxes it is archived for.
    pub mailboxes: Vec<String>,
    /// The reports merged into it, the first one first.
    pub reports: Vec<Report>,
}

/// What [`find`](embedded::Reader::find) looks for: every criterion given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// A recipient: an envelope recipient of any report (Bcc included), an expanded group, or
    /// an internal mailbox the message is archived for. Compared without regard to case.
    pub recipient: Option<String>,
    /// The original's sender (without regard to case).
    pub sender: Option<String>,
    /// The original's Message-ID (without angle brackets).
    pub message_id: Option<String>,
    /// Accepted at or after this.
    pub since: Option<Timestamp>,
    /// Accepted before this.
    pub until: Option<Timestamp>,
    /// At most this many, newest first (`None`: every one).
    pub limit: Option<usize>,
}

/// What retention must not delete while they stand: legal holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    /// Addresses: every message they sent or received (any recipient line, an expanded
    /// group, a mailbox) is held. Compared without regard to case.
    pub addresses: Vec<String>,
    /// Items: the archived message each is part of is held, and its as-received copy.
    pub items: Vec<ItemId>,
}

/// The archived messages of one journal definition that retention deletes: those whose first
/// report was accepted before `received_before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The definition's description (what items record).
    pub definition: String,
    /// The cut-off.
    pub received_before: Timestamp,
}

/// What retention has done, as the index counts it (for `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionCounts {
    /// Archived messages deleted, ever.
    pub deleted_messages: u64,
    /// As-received spool segments deleted, ever.
    pub deleted_segments: u64,
    /// When retention last deleted something.
    pub last_deletion_at: Option<Timestamp>,
}

/// One configured journal definition, as the index keeps it for the service status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// The definition's description.
    pub description: String,
    /// Its service email address.
    pub service_email_address: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// The period of inactivity allowed, in minutes.
    pub period_minutes: u32,
}

/// One connector as the index last recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorRow {
    /// The definition's description.
    pub description: String,
    /// Its service email address.
    pub service_email_address: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// The period of inactivity allowed, in minutes.
    pub period_minutes: u32,
    /// When its last message arrived, if ever.
    pub last_message_at: Option<Timestamp>,
}

/// One item as the index knows it (the queue details of `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    /// The queue id.
    pub id: ItemId,
    /// Its state.
    pub state: StateName,
    /// Its journal definition's description.
    pub definition: String,
    /// The sender shown in queue details.
    pub sender: String,
    /// The journal address it arrived for.
    pub recipient: String,
    /// When it was accepted.
    pub received_at: Timestamp,
    /// Match attempts made.
    pub attempts: u32,
    /// Why it was dropped, failed or held.
    pub reason: Option<String>,
    /// The hash of its archived form, once archived or merged.
    pub content: Option<ContentHash>,
    /// Where its bytes are in the spool's commit log, when inline.
    pub log_offset: Option<u64>,
    /// The receiver that accepted it (the shared backend; `None` in the embedded one).
    pub node: Option<String>,
}

/// What the archive knows, for the views of other processes and hosts (`status`, `get`,
/// `show`, `find`, `export`, the admin page): every backend has one.
pub trait ArchiveReader {
    /// The connectors in configuration order.
    fn connectors(&self) -> ArchiveResult<Vec<ConnectorRow>>;
    /// Items per state (states without items left out).
    fn counts(&self) -> ArchiveResult<Vec<(StateName, u64)>>;
    /// When the oldest item that is not settled arrived.
    fn oldest_pending(&self) -> ArchiveResult<Option<Timestamp>>;
    /// The newest items first, at most `limit` of them (`None`: every one).
    fn items(&self, limit: Option<usize>) -> ArchiveResult<Vec<ItemRow>>;
    /// One item, if the index knows it.
    fn item(&self, id: ItemId) -> ArchiveResult<Option<ItemRow>>;
    /// The archived message that item `id` is part of (its own, or the one it was merged
    /// into); `None` when the item is not (yet) archived.
    fn message(&self, id: ItemId) -> ArchiveResult<Option<ArchivedMessage>>;
    /// The archived messages that meet every criterion of `query`, newest first.
    fn find(&self, query: &Query) -> ArchiveResult<Vec<ItemId>>;
    /// The stored content with this hash.
    fn content(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>>;
    /// The size of the stored content with this hash.
    fn content_len(&self, hash: &ContentHash) -> ArchiveResult<u64>;
    /// What retention has done.
    fn retention(&self) -> ArchiveResult<RetentionCounts>;
}

/// Content stored once by hash.
pub trait ContentStore: Send {
    /// Stores `bytes` under `hash` (nothing happens when it is stored already). Not durable
    /// before the next [`make_durable`](Self::make_durable), which a store may also make
    /// itself when much is waiting.
    fn put(&self, hash: &ContentHash, bytes: &[u8]) -> ArchiveResult<()>;

    /// Whether content with this hash is stored.
    fn contains(&self, hash: &ContentHash) -> ArchiveResult<bool>;

    /// The content with this hash.
    fn read(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>>;

    /// Makes all content stored so far durable. The engine calls it before it retires a
    /// spool segment: until then the segment holds the message.
    fn make_durable(&self) -> ArchiveResult<()>;

    /// Waits until everything put so far is stored, readable by any reader (durability is
    /// [`make_durable`](Self::make_durable)'s). The engine calls it before it commits the
    /// index's batch that records those items archived: a store that writes in the
    /// background fails here for what it could not write, and the batch is rolled back. A
    /// store whose `put` is visible at once (files) has nothing to do.
    fn flush(&self) -> ArchiveResult<()> {
        Ok(())
    }

    /// Removes the content with this hash (retention); nothing happens when it is not there.
    /// A store may only forget it at once and erase it at the next
    /// [`make_durable`](Self::make_durable), which the engine calls before it records the
    /// content as gone.
    fn remove(&self, hash: &ContentHash) -> ArchiveResult<()>;
}

/// The index: items, archived messages with their recipients, de-duplication, merges,
/// connector state and spool retirement marks. Its writes may be grouped in batches.
pub trait ArchiveIndex: Send {
    /// Starts a batch: the writes until [`end_batch`](Self::end_batch) commit together.
    fn begin_batch(&self) -> ArchiveResult<()>;

    /// Commits the batch.
    fn end_batch(&self) -> ArchiveResult<()>;

    /// Throws the batch away: nothing written since [`begin_batch`](Self::begin_batch)
    /// stays (the content it refers to could not be stored).
    fn rollback_batch(&self) -> ArchiveResult<()>;

    /// Records the configured definitions (for the service status), keeping last-message
    /// times of those that stay.
    fn set_connectors(&mut self, connectors: &[ConnectorConfig]) -> ArchiveResult<()>;

    /// The last message time of each connector, by description.
    fn connector_times(&self) -> ArchiveResult<Vec<(String, Option<Timestamp>)>>;

    /// A message arrived for a connector.
    fn touch_connector(&self, description: &str, at: Timestamp) -> ArchiveResult<()>;

    /// Adds an accepted item as `waiting` (idempotent: recovery may add it again; a known
    /// item keeps its state).
    fn add_item(&self, item: &NewItem<'_>) -> ArchiveResult<()>;

    /// How far an item got (recovery resumes it from there), if the index knows it.
    fn progress(&self, id: ItemId) -> ArchiveResult<Option<Progress>>;

    /// The greatest item id the index holds.
    fn newest_item_id(&self) -> ArchiveResult<Option<ItemId>>;

    /// Items an operator asked to retry, marked [`StateName::Retry`].
    fn retry_requests(&self) -> ArchiveResult<Vec<ItemId>>;

    /// Updates an item's state (and the sender shown in queue details, when given).
    fn set_state(
        &self,
        id: ItemId,
        state: StateName,
        attempts: u32,
        reason: Option<&str>,
        sender: Option<&str>,
        at: Timestamp,
    ) -> ArchiveResult<()>;

    /// Records one more match attempt of an item that stays waiting (with the sender shown in
    /// queue details, when given), clearing any earlier reason. The same as
    /// [`set_state`](Self::set_state) with [`StateName::Waiting`]; a backend may do it
    /// cheaper when the item is waiting already, as it nearly always is.
    fn record_attempt(
        &self,
        id: ItemId,
        attempts: u32,
        sender: Option<&str>,
        at: Timestamp,
    ) -> ArchiveResult<()> {
        self.set_state(id, StateName::Waiting, attempts, None, sender, at)
    }

    /// The archived message with this de-duplication key (Message-ID and sent date).
    fn find_archived(
        &self,
        message_id: &str,
        sent_date: Option<&str>,
    ) -> ArchiveResult<Option<ItemId>>;

    /// Archives `item` as a new archived message, or merges it into the one with the same
    /// key if that appeared meanwhile. Returns the archived message's id.
    fn archive(
        &mut self,
        item: ItemId,
        archival: &Archival,
        attempts: u32,
        at: Timestamp,
    ) -> ArchiveResult<ItemId>;

    /// Merges `item`'s recipients into the archived message `target` (several reports of one
    /// message are normal) and records the item as merged.
    fn merge(
        &mut self,
        item: ItemId,
        target: ItemId,
        archival: &Archival,
        attempts: u32,
        at: Timestamp,
    ) -> ArchiveResult<()>;

    /// Records that spool segments are retired. Returns once this and everything written
    /// before it is durable: after retirement the spool no longer brings those items back.
    /// Outside a batch.
    fn record_retired(&self, segments: &[u64], at: Timestamp) -> ArchiveResult<()>;

    /// Deletes, in one transaction, up to `max` archived messages that `expiries` cover and
    /// `holds` do not: each with its recipients, mailboxes and the items of every report
    /// merged into it. The content they no longer share with anything is recorded as
    /// garbage in the same transaction (see [`content_garbage`](Self::content_garbage)), so
    /// that a crash at any point leaves no half-deleted message. Returns the ids deleted.
    /// Outside a batch.
    fn delete_expired(
        &mut self,
        expiries: &[Expiry],
        holds: &Holds,
        max: usize,
        at: Timestamp,
    ) -> ArchiveResult<Vec<ItemId>>;

    /// Content that deleted messages left unreferenced, still to be removed from the content
    /// store (and forgotten with [`content_removed`](Self::content_removed) once it is).
    /// Content referenced again meanwhile is dropped from the list, not returned.
    fn content_garbage(&self) -> ArchiveResult<Vec<ContentHash>>;

    /// The content store no longer holds `hash`.
    fn content_removed(&self, hash: &ContentHash) -> ArchiveResult<()>;

    /// Spool segments retired before `before`, oldest first.
    fn retired_before(&self, before: Timestamp) -> ArchiveResult<Vec<u64>>;

    /// Whether `holds` cover any of `items` (or the archived messages they are part of).
    fn any_held(&self, items: &[ItemId], holds: &Holds) -> ArchiveResult<bool>;

    /// The as-received copies of retired segment `segment` are deleted.
    fn segment_deleted(&self, segment: u64, at: Timestamp) -> ArchiveResult<()>;
}
