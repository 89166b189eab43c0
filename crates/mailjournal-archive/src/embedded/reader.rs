//! The read side of the embedded archive, for other processes (`status`, `get`, `retry`)
//! while the engine writes: SQLite read snapshots, and content files that are written once,
//! then renamed.

use std::path::{Path, PathBuf};

use mailjournal_queue::{ContentHash, ItemId, StateName, Timestamp};
use rusqlite::{Connection, OptionalExtension};

use super::content;
use super::index::{
    item_content, item_id, keeps_item_counts, pending_sql, settled_sql, state_name,
};
use crate::{
    ArchiveError, ArchiveReader, ArchiveResult, ArchivedMessage, ArchivedRecipient, ConnectorRow,
    ItemRow, MessageRecipient, Query, Report, RetentionCounts,
};

const ITEM_COLUMNS: &str = "id, state, definition, sender, recipient, received_at, attempts, reason, content_sha256, log_offset";

type RawItem = (
    String,
    String,
    String,
    String,
    String,
    i64,
    u32,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn raw_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawItem> {
    r.try_into()
}

fn item_row(raw: RawItem) -> ArchiveResult<ItemRow> {
    let (id, state, definition, sender, recipient, received, attempts, reason, content, offset) =
        raw;
    Ok(ItemRow {
        id: item_id(id)?,
        state: state_name(state)?,
        definition,
        sender,
        recipient,
        received_at: Timestamp(received as u64),
        attempts,
        reason,
        content: item_content(content)?,
        log_offset: offset.and_then(|o| u64::try_from(o).ok()),
        node: None,
    })
}

/// A read-only view of a data directory's embedded archive.
#[derive(Debug)]
pub struct Reader {
    db: Connection,
    content_dir: PathBuf,
}

impl Reader {
    /// Opens the archive of `data_dir` read-only (failing when it was never created).
    pub fn open(data_dir: &Path) -> ArchiveResult<Reader> {
        let db = Connection::open_with_flags(
            data_dir.join("archive.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Reader {
            db,
            content_dir: data_dir.join("archive"),
        })
    }

    /// The connectors in configuration order.
    pub fn connectors(&self) -> ArchiveResult<Vec<ConnectorRow>> {
        let mut stmt = self.db.prepare("SELECT description, service_email_address, disabled, period_minutes, last_message_at FROM connectors ORDER BY position")?;
        let rows = stmt.query_map([], |r| {
            Ok(ConnectorRow {
                description: r.get(0)?,
                service_email_address: r.get(1)?,
                disabled: r.get(2)?,
                period_minutes: r.get(3)?,
                last_message_at: r.get::<_, Option<i64>>(4)?.map(|t| Timestamp(t as u64)),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Items per state (states without items left out), in state-name order.
    pub fn counts(&self) -> ArchiveResult<Vec<(StateName, u64)>> {
        // A database the server has not opened since counts were kept is counted the long way.
        let sql = if keeps_item_counts(&self.db)? {
            "SELECT state, n FROM item_counts WHERE n > 0 ORDER BY state"
        } else {
            "SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state"
        };
        let mut stmt = self.db.prepare(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|row| {
            let (state, n) = row?;
            Ok((state_name(state)?, n as u64))
        })
        .collect()
    }

    /// When the oldest item that is not settled arrived.
    pub fn oldest_pending(&self) -> ArchiveResult<Option<Timestamp>> {
        let sql = format!("SELECT MIN(received_at) FROM items WHERE {}", pending_sql());
        let oldest: Option<i64> = self.db.query_row(&sql, [], |r| r.get(0))?;
        Ok(oldest.map(|t| Timestamp(t as u64)))
    }

    /// The newest items first, at most `limit` of them (`None`: every one).
    pub fn items(&self, limit: Option<usize>) -> ArchiveResult<Vec<ItemRow>> {
        let sql =
            format!("SELECT {ITEM_COLUMNS} FROM items ORDER BY received_at DESC, id DESC LIMIT ?1");
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut stmt = self.db.prepare(&sql)?;
        let rows = stmt.query_map([limit], raw_item)?;
        rows.map(|raw| item_row(raw?)).collect()
    }

    /// One item, if the index knows it.
    pub fn item(&self, id: ItemId) -> ArchiveResult<Option<ItemRow>> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = ?1");
        self.db
            .query_row(&sql, [id.to_string()], raw_item)
            .optional()?
            .map(item_row)
            .transpose()
    }

    /// The archived message that item `id` is part of: its own if it was archived as new, the
    /// one it was merged into if it was merged; `None` when the item is not (yet) archived.
    pub fn message(&self, id: ItemId) -> ArchiveResult<Option<ArchivedMessage>> {
        let target: Option<Option<String>> = self
            .db
            .query_row(
                "SELECT CASE WHEN state = 'merged' THEN merged_into ELSE id END FROM items WHERE id = ?1 AND state IN ('archived', 'merged')",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(Some(target)) = target else {
            return Ok(None);
        };
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            String,
            i64,
            i64,
        );
        let row: Option<Row> = self
            .db
            .query_row(
                "SELECT a.sender, a.on_behalf_of, a.subject, a.message_id, a.sent_date, a.format, a.content_sha256, a.archived_at, COALESCE(i.received_at, a.archived_at)
                 FROM archived a LEFT JOIN items i ON i.id = a.id WHERE a.id = ?1",
                [&target],
                |r| r.try_into(),
            )
            .optional()?;
        let Some((
            sender,
            on_behalf_of,
            subject,
            message_id,
            sent_date,
            format,
            hash,
            archived,
            received,
        )) = row
        else {
            return Ok(None);
        };
        let content = item_content(Some(hash))?.ok_or_else(|| ArchiveError::Invalid {
            what: "content hash",
            value: String::new(),
        })?;
        let mut stmt = self.db.prepare_cached(
            "SELECT address, field, expanded, forwarded, source_item FROM archived_recipients WHERE archived_id = ?1 ORDER BY rowid",
        )?;
        let recipients = stmt
            .query_map([&target], |r| {
                Ok((
                    ArchivedRecipient {
                        address: r.get(0)?,
                        field: r.get(1)?,
                        expanded: r.get(2)?,
                        forwarded: r.get(3)?,
                    },
                    r.get::<_, String>(4)?,
                ))
            })?
            .map(|row| {
                let (recipient, report) = row?;
                Ok(MessageRecipient {
                    recipient,
                    report: item_id(report)?,
                })
            })
            .collect::<ArchiveResult<Vec<_>>>()?;
        let mut stmt = self.db.prepare_cached(
            "SELECT mailbox FROM mailboxes WHERE archived_id = ?1 ORDER BY mailbox",
        )?;
        let mailboxes = stmt
            .query_map([&target], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        let mut stmt = self.db.prepare_cached(
            "SELECT id, state, definition, received_at FROM items WHERE id = ?1 OR merged_into = ?1 ORDER BY id = ?1 DESC, received_at, id",
        )?;
        let reports = stmt
            .query_map([&target], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .map(|row| {
                let (id, state, definition, received) = row?;
                Ok(Report {
                    id: item_id(id)?,
                    state: state_name(state)?,
                    definition,
                    received_at: Timestamp(received as u64),
                })
            })
            .collect::<ArchiveResult<Vec<_>>>()?;
        Ok(Some(ArchivedMessage {
            id: item_id(target)?,
            sender,
            on_behalf_of,
            subject,
            message_id,
            sent_date,
            format,
            content,
            received_at: Timestamp(received as u64),
            archived_at: Timestamp(archived as u64),
            recipients,
            mailboxes,
            reports,
        }))
    }

    /// The archived messages that meet every criterion of `query`, newest first, answered
    /// from the index (each criterion has one).
    pub fn find(&self, query: &Query) -> ArchiveResult<Vec<ItemId>> {
        let (sql, values) = find_sql(query);
        let mut stmt = self.db.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|id| item_id(id?)).collect()
    }

    /// The size of the stored content with this hash.
    pub fn content_len(&self, hash: &ContentHash) -> ArchiveResult<u64> {
        content::len_of(&self.content_dir, hash)
    }

    /// What retention has done.
    pub fn retention(&self) -> ArchiveResult<crate::RetentionCounts> {
        let value = |key: &str| -> ArchiveResult<Option<i64>> {
            // A database from before retention has no such table: nothing was deleted.
            match self
                .db
                .query_row("SELECT value FROM retention WHERE key = ?1", [key], |r| {
                    r.get::<_, i64>(0)
                }) {
                Ok(v) => Ok(Some(v)),
                Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
                Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
                    Ok(None)
                }
                Err(e) => Err(e.into()),
            }
        };
        Ok(crate::RetentionCounts {
            deleted_messages: value("deleted_messages")?.unwrap_or(0) as u64,
            deleted_segments: value("deleted_segments")?.unwrap_or(0) as u64,
            last_deletion_at: value("last_deletion_at")?.map(|t| Timestamp(t as u64)),
        })
    }

    /// Whether the stored content with this hash would survive a power loss now (the engine
    /// makes content durable in batches, before it retires the spool segments holding the
    /// messages); `None` when it is not stored.
    pub fn content_durable(&self, hash: &ContentHash) -> ArchiveResult<Option<bool>> {
        content::durable_from(&self.content_dir, hash)
    }

    /// The stored content with this hash (durable or not yet).
    pub fn content(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        content::read_from(&self.content_dir, hash)
    }
}

impl ArchiveReader for Reader {
    fn connectors(&self) -> ArchiveResult<Vec<ConnectorRow>> {
        Reader::connectors(self)
    }
    fn counts(&self) -> ArchiveResult<Vec<(StateName, u64)>> {
        Reader::counts(self)
    }
    fn oldest_pending(&self) -> ArchiveResult<Option<Timestamp>> {
        Reader::oldest_pending(self)
    }
    fn items(&self, limit: Option<usize>) -> ArchiveResult<Vec<ItemRow>> {
        Reader::items(self, limit)
    }
    fn item(&self, id: ItemId) -> ArchiveResult<Option<ItemRow>> {
        Reader::item(self, id)
    }
    fn message(&self, id: ItemId) -> ArchiveResult<Option<ArchivedMessage>> {
        Reader::message(self, id)
    }
    fn find(&self, query: &Query) -> ArchiveResult<Vec<ItemId>> {
        Reader::find(self, query)
    }
    fn content(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        Reader::content(self, hash)
    }
    fn content_len(&self, hash: &ContentHash) -> ArchiveResult<u64> {
        Reader::content_len(self, hash)
    }
    fn retention(&self) -> ArchiveResult<RetentionCounts> {
        Reader::retention(self)
    }
}

/// The statement of [`Reader::find`] for `query`, and its parameters: only the criteria given,
/// so that each is answered from its index.
pub(super) fn find_sql(query: &Query) -> (String, Vec<rusqlite::types::Value>) {
    let mut conditions = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut bind = |value: rusqlite::types::Value| {
        values.push(value);
        format!("?{}", values.len())
    };
    if let Some(address) = &query.recipient {
        let p = bind(address.clone().into());
        conditions.push(format!(
            "a.id IN (SELECT archived_id FROM archived_recipients WHERE address = {p} COLLATE NOCASE \
             UNION SELECT archived_id FROM archived_recipients WHERE expanded = {p} COLLATE NOCASE \
             UNION SELECT archived_id FROM mailboxes WHERE mailbox = {p} COLLATE NOCASE)"
        ));
    }
    if let Some(sender) = &query.sender {
        let p = bind(sender.clone().into());
        conditions.push(format!("a.sender = {p} COLLATE NOCASE"));
    }
    if let Some(message_id) = &query.message_id {
        let p = bind(message_id.clone().into());
        conditions.push(format!("a.message_id = {p}"));
    }
    if let Some(since) = query.since {
        let p = bind((since.0 as i64).into());
        conditions.push(format!("i.received_at >= {p}"));
    }
    if let Some(until) = query.until {
        let p = bind((until.0 as i64).into());
        conditions.push(format!("i.received_at < {p}"));
    }
    let limit = bind(
        query
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
            .into(),
    );
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT a.id FROM archived a JOIN items i ON i.id = a.id {filter} ORDER BY i.received_at DESC, a.id DESC LIMIT {limit}"
    );
    (sql, values)
}

/// Marks an item of `data_dir`'s archive for retry: any item that is not settled (failed,
/// or waiting for an archive store that failed, say), except one held for a journal
/// definition that is not configured. The running engine (or the next start) picks it up
/// and starts it over. Returns false when the item is unknown, settled or held.
pub fn request_retry(data_dir: &Path, id: ItemId) -> ArchiveResult<bool> {
    let db = Connection::open(data_dir.join("archive.sqlite3"))?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    let changed = db.execute(
        &format!(
            "UPDATE items SET state = 'retry' WHERE id = ?1 AND state NOT IN ({}, 'retry', 'held')",
            settled_sql()
        ),
        [id.to_string()],
    )?;
    Ok(changed == 1)
}
