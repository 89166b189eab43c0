//! The status of a receiver's data directory, read while its server runs: each journal
//! definition's service status, the queue details, the spool, the archive store's health and
//! what retention deleted. One typed [`StatusReport`] serves every view of it (the `status`
//! command's JSON, the admin page, the metrics, the connector alerts), so that they cannot
//! disagree.
//!
//! ```
//! use mailjournal::status::StatusReport;
//! use mailjournal::queue::Timestamp;
//! let dir = std::env::temp_dir().join(format!("mj-status-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! // A directory no server has used yet has an empty archive.
//! mailjournal::archive::embedded::open(&dir).unwrap();
//! let report = StatusReport::read(&dir, 20, Timestamp(1_700_000_000_000)).unwrap();
//! assert!(report.connectors.is_empty() && report.items.is_empty());
//! assert_eq!(report.to_json()["queue"]["counts"], serde_json::json!({}));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use mailjournal_archive::embedded::Reader;
use mailjournal_archive::{ArchiveReader, ArchiveResult, ItemRow, RetentionCounts};
use mailjournal_queue::{Connector, ConnectorStatus, Duration, ItemId, StateName, Timestamp};
use mailjournal_spool::Usage;
use serde_json::{Value, json};

use crate::engine::{StoreHealth, health_path, read_health};

/// The reason shown for a spooled message the archive has not recorded.
pub const UNRECORDED: &str =
    "accepted and spooled; the failing archive store has not recorded it yet (see the log)";

/// One journal definition's service status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorReport {
    /// The definition's description.
    pub description: String,
    /// Its service email address.
    pub service_email_address: String,
    /// Its status now.
    pub status: ConnectorStatus,
    /// The period of inactivity allowed.
    pub period_minutes: u32,
}

impl ConnectorReport {
    /// When its last message arrived, if ever.
    pub fn last_message_at(&self) -> Option<Timestamp> {
        self.status.last_message_at()
    }
}

/// One item of the queue details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemReport {
    /// The queue id.
    pub id: ItemId,
    /// Its state.
    pub state: StateName,
    /// Its journal definition (its description; the service address for an item the index
    /// has not recorded).
    pub definition: Option<String>,
    /// The sender shown in queue details.
    pub sender: String,
    /// The recipient shown in queue details (the journal address for a report).
    pub recipient: String,
    /// When it was accepted.
    pub received_at: Timestamp,
    /// Match attempts made.
    pub attempts: u32,
    /// Why it waits, was dropped, failed or is held.
    pub reason: Option<String>,
    /// The receiver that accepted it (shared archive only).
    pub node: Option<String>,
}

impl ItemReport {
    fn from_row(row: ItemRow) -> ItemReport {
        ItemReport {
            id: row.id,
            state: row.state,
            definition: Some(row.definition),
            sender: row.sender,
            recipient: row.recipient,
            received_at: row.received_at,
            attempts: row.attempts,
            reason: row.reason,
            node: row.node,
        }
    }
}

/// Everything `status` shows, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// When it was read.
    pub at: Timestamp,
    /// Every configured definition the archive knows, in its order.
    pub connectors: Vec<ConnectorReport>,
    /// Items per state (states with none are absent).
    pub counts: BTreeMap<StateName, u64>,
    /// Age of the oldest item that is not settled.
    pub oldest_pending_age: Option<Duration>,
    /// The newest items (spooled ones the index lacks first, while the store fails).
    pub items: Vec<ItemReport>,
    /// The spool's files.
    pub spool: Usage,
    /// The archive store's health as the engine last wrote it (absent: never opened).
    pub archive_store: Option<StoreHealth>,
    /// What retention deleted.
    pub retention: RetentionCounts,
}

impl StatusReport {
    /// Reads the status of `data_dir` (the embedded archive) at `now`, with at most `limit`
    /// items (0: all).
    pub fn read(data_dir: &Path, limit: usize, now: Timestamp) -> ArchiveResult<StatusReport> {
        StatusReport::read_from(&Reader::open(data_dir)?, data_dir, limit, now)
    }

    /// Reads the status from `archive`, with the spool and the store's health of `data_dir`
    /// (a receiver's own; an admin host has none, which then shows nothing there).
    pub fn read_from(
        archive: &dyn ArchiveReader,
        data_dir: &Path,
        limit: usize,
        now: Timestamp,
    ) -> ArchiveResult<StatusReport> {
        let connectors = archive
            .connectors()?
            .into_iter()
            .map(|c| {
                let period = Duration::minutes(u64::from(c.period_minutes));
                ConnectorReport {
                    status: Connector::restore(period, c.disabled, c.last_message_at, now)
                        .status_at(now),
                    description: c.description,
                    service_email_address: c.service_email_address,
                    period_minutes: c.period_minutes,
                }
            })
            .collect();
        let mut counts: BTreeMap<StateName, u64> = archive.counts()?.into_iter().collect();
        // When the archive store fails (a full disk, say) it cannot record why; the engine's
        // health file, overwritten in place, still says it.
        let health = read_health(&health_path(data_dir));
        let failing = matches!(health, Some(StoreHealth::Failing { .. }));
        // While it fails, the messages the spool holds that the index has not recorded (a
        // failed transaction lost them) are shown too, so that nothing accepted is out of
        // sight. Not otherwise: then a record the index lacks is one just committed, or one
        // retention deleted while its segment is still live.
        let live = if failing {
            mailjournal_spool::live_records(&data_dir.join("spool")).unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut items: Vec<ItemReport> = live
            .into_iter()
            .rev()
            .filter(|r| matches!(archive.item(r.id), Ok(None)))
            .map(|r| {
                let journal = r
                    .envelope
                    .journal
                    .clone()
                    .or(r.envelope.recipients.first().cloned());
                ItemReport {
                    id: r.id,
                    state: StateName::Waiting,
                    definition: journal.clone(),
                    sender: r.envelope.mail_from.unwrap_or_else(|| "<>".to_owned()),
                    recipient: journal.unwrap_or_default(),
                    received_at: r.envelope.received_at,
                    attempts: 0,
                    reason: Some(UNRECORDED.to_owned()),
                    node: None,
                }
            })
            .collect();
        if !items.is_empty() {
            *counts.entry(StateName::Waiting).or_default() += items.len() as u64;
        }
        // The unrecorded ones wait too, and are usually the oldest (a full disk lost them).
        let oldest_unrecorded = items.iter().map(|i| i.received_at).min();
        let oldest_pending_age = archive
            .oldest_pending()?
            .into_iter()
            .chain(oldest_unrecorded)
            .min()
            .map(|t| now.since(t));
        items.extend(
            archive
                .items((limit != 0).then_some(limit))?
                .into_iter()
                .map(ItemReport::from_row),
        );
        if limit != 0 {
            items.truncate(limit);
        }
        if let Some(StoreHealth::Failing { error, .. }) = &health {
            let reason =
                format!("the archive store is failing: {error} (tried again automatically)");
            for item in items.iter_mut().filter(|i| !i.state.is_settled()) {
                item.reason.get_or_insert_with(|| reason.clone());
            }
        }
        // A data directory without a spool yet (the server never ran) holds nothing there.
        let spool = mailjournal_spool::usage(&data_dir.join("spool")).unwrap_or_default();
        Ok(StatusReport {
            at: now,
            connectors,
            counts,
            oldest_pending_age,
            items,
            spool,
            archive_store: health,
            retention: archive.retention()?,
        })
    }

    /// Items not settled yet (waiting, matching, archiving, retry, held).
    pub fn pending(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(state, _)| !state.is_settled())
            .map(|(_, n)| n)
            .sum()
    }

    /// The `status --json` document (docs/CONTRACTS.md).
    pub fn to_json(&self) -> Value {
        let connectors: Vec<Value> = self
            .connectors
            .iter()
            .map(|c| {
                json!({
                    "description": c.description,
                    "service_email_address": c.service_email_address,
                    "status": c.status.name(),
                    "last_message_at": c.last_message_at().map(Timestamp::rfc3339),
                })
            })
            .collect();
        let counts: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(state, n)| (state.as_str().to_owned(), json!(n)))
            .collect();
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|item| {
                let mut value = json!({
                    "id": item.id.to_string(),
                    "state": item.state.as_str(),
                    "definition": item.definition,
                    "sender": item.sender,
                    "recipient": item.recipient,
                    "received_at": item.received_at.rfc3339(),
                    "attempts": item.attempts,
                });
                if let Some(reason) = &item.reason {
                    value["reason"] = json!(reason);
                }
                if let Some(node) = &item.node {
                    value["node"] = json!(node);
                }
                value
            })
            .collect();
        let archive_store = match &self.archive_store {
            Some(StoreHealth::Failing { since, error }) => {
                json!({"state": "failing", "since": *since.rfc3339(), "error": error})
            }
            Some(StoreHealth::Ok) => json!({"state": "ok"}),
            None => Value::Null,
        };
        json!({
            "connectors": connectors,
            "queue": {
                "counts": counts,
                "oldest_pending_age_seconds": self.oldest_pending_age.map(|d| d.as_millis() / 1000),
                "items": items,
            },
            "spool": {
                "live_segments": self.spool.live_segments,
                "live_bytes": self.spool.live_bytes,
                "kept_segments": self.spool.kept_segments,
                "kept_bytes": self.spool.kept_bytes,
            },
            "archive_store": archive_store,
            "retention": {
                "deleted_messages": self.retention.deleted_messages,
                "deleted_as_received_segments": self.retention.deleted_segments,
                "last_deletion_at": self.retention.last_deletion_at.map(Timestamp::rfc3339),
            },
        })
    }
}

/// Where a view reads the archive: a data directory's embedded archive, or the shared one
/// (with the local data directory for the spool and the store's health, when there is one).
/// A shared reader is connected once and kept.
pub struct ArchiveSource {
    data_dir: std::path::PathBuf,
    #[cfg(feature = "shared")]
    shared: Option<(
        mailjournal_archive::shared::SharedOptions,
        std::sync::Mutex<Option<mailjournal_archive::shared::PgReader>>,
    )>,
}

impl std::fmt::Debug for ArchiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSource")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl ArchiveSource {
    /// The embedded archive of `data_dir`.
    pub fn embedded(data_dir: &Path) -> ArchiveSource {
        ArchiveSource {
            data_dir: data_dir.to_owned(),
            #[cfg(feature = "shared")]
            shared: None,
        }
    }

    /// The shared archive of `options`; `data_dir` for the local spool and health file.
    #[cfg(feature = "shared")]
    pub fn shared(
        options: mailjournal_archive::shared::SharedOptions,
        data_dir: &Path,
    ) -> ArchiveSource {
        ArchiveSource {
            data_dir: data_dir.to_owned(),
            shared: Some((options, std::sync::Mutex::new(None))),
        }
    }

    /// The local data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `use_it` on the shared reader (connected at its first use), when the archive is
    /// the shared one.
    #[cfg(feature = "shared")]
    fn with_shared<T>(
        &self,
        use_it: impl FnOnce(&mailjournal_archive::shared::PgReader) -> ArchiveResult<T>,
    ) -> Option<ArchiveResult<T>> {
        let (options, reader) = self.shared.as_ref()?;
        let mut reader = reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reader.is_none() {
            match mailjournal_archive::shared::open_reader(options) {
                Ok(opened) => *reader = Some(opened),
                Err(e) => return Some(Err(e)),
            }
        }
        reader.as_ref().map(use_it)
    }

    /// Runs `read` on the archive. Blocking (SQLite, or the shared backend's own runtime):
    /// call it off an async runtime's threads.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&dyn ArchiveReader) -> ArchiveResult<T>,
    ) -> ArchiveResult<T> {
        #[cfg(feature = "shared")]
        if self.shared.is_some() {
            return self.with_shared(|reader| read(reader)).unwrap_or_else(|| {
                Err(mailjournal_archive::ArchiveError::Backend(
                    "the shared archive has no reader".into(),
                ))
            });
        }
        read(&Reader::open(&self.data_dir)?)
    }

    /// Marks item `id` for retry (see `mailjournal_archive::embedded::request_retry`); false
    /// when it is unknown, settled or held.
    pub fn request_retry(&self, id: mailjournal_queue::ItemId) -> ArchiveResult<bool> {
        #[cfg(feature = "shared")]
        if let Some(result) = self.with_shared(|reader| reader.request_retry(id)) {
            return result;
        }
        mailjournal_archive::embedded::request_retry(&self.data_dir, id)
    }

    /// The status at `now`, with at most `limit` items (0: all).
    pub fn status(&self, limit: usize, now: Timestamp) -> ArchiveResult<StatusReport> {
        self.read(|archive| StatusReport::read_from(archive, &self.data_dir, limit, now))
    }
}
