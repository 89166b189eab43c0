//! The read side of the shared backend: what `status`, `get`, `show`, `find`, `export` and
//! the admin page read, from any node or an admin host.

use mailjournal_queue::{ContentHash, ItemId, StateName, Timestamp};
use tokio_postgres::Row;

use super::index::{PgIndex, content, item_id, parse};
use super::{S3Content, SharedOptions};
use crate::{
    ArchiveError, ArchiveReader, ArchiveResult, ArchivedMessage, ArchivedRecipient, ConnectorRow,
    ContentStore, ItemRow, MessageRecipient, Query, Report, RetentionCounts,
};

/// A reader of the shared archive.
#[derive(Debug)]
pub struct PgReader {
    index: PgIndex,
    content: S3Content,
}

/// Opens a reader of the shared archive (no node is registered).
pub fn open_reader(options: &SharedOptions) -> ArchiveResult<PgReader> {
    let runtime = super::runtime()?;
    Ok(PgReader {
        index: PgIndex::connect_reader(runtime.clone(), &options.postgres_url)?,
        content: S3Content::open(runtime, options)?,
    })
}

/// A row of `SELECT id, state, definition, sender, recipient, received_at, attempts, reason,
/// content_sha256, log_offset, node FROM items`.
fn item_row(row: &Row) -> ArchiveResult<ItemRow> {
    Ok(ItemRow {
        id: item_id(row.get(0))?,
        state: parse("item state", row.get(1))?,
        definition: row.get(2),
        sender: row.get(3),
        recipient: row.get(4),
        received_at: Timestamp(row.get::<_, i64>(5) as u64),
        attempts: u32::try_from(row.get::<_, i32>(6)).unwrap_or(0),
        reason: row.get(7),
        content: content(row.get(8))?,
        log_offset: row
            .get::<_, Option<i64>>(9)
            .and_then(|o| u64::try_from(o).ok()),
        node: Some(row.get(10)),
    })
}

impl PgReader {
    /// Marks an item for retry, as [`embedded::request_retry`](crate::embedded::request_retry)
    /// does: any item not settled, except a held one. The node that accepted it (its bytes
    /// are in that node's spool) picks it up. False when unknown, settled or held.
    pub fn request_retry(&self, id: ItemId) -> ArchiveResult<bool> {
        let mut untouchable: Vec<&str> = StateName::SETTLED.iter().map(|s| s.as_str()).collect();
        untouchable.extend([StateName::Retry.as_str(), StateName::Held.as_str()]);
        let changed = self.index.rows(
            "UPDATE items SET state = 'retry' WHERE id = $1 AND state <> ALL($2) RETURNING id",
            &[&id.to_string(), &untouchable],
        )?;
        Ok(!changed.is_empty())
    }
}

impl ArchiveReader for PgReader {
    fn connectors(&self) -> ArchiveResult<Vec<ConnectorRow>> {
        self.index
            .rows(
                "SELECT description, service_email_address, disabled, period_minutes, last_message_at \
                 FROM connectors ORDER BY position",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(ConnectorRow {
                    description: r.get(0),
                    service_email_address: r.get(1),
                    disabled: r.get(2),
                    period_minutes: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                    last_message_at: r.get::<_, Option<i64>>(4).map(|t| Timestamp(t as u64)),
                })
            })
            .collect()
    }

    fn counts(&self) -> ArchiveResult<Vec<(StateName, u64)>> {
        self.index
            .rows(
                "SELECT state, count(*) FROM items GROUP BY state ORDER BY state",
                &[],
            )?
            .iter()
            .map(|r| Ok((parse("item state", r.get(0))?, r.get::<_, i64>(1) as u64)))
            .collect()
    }

    fn oldest_pending(&self) -> ArchiveResult<Option<Timestamp>> {
        // The settled states, from the one vocabulary (the partial index uses the same).
        let settled: Vec<&str> = StateName::SETTLED.iter().map(|s| s.as_str()).collect();
        let rows = self.index.rows(
            "SELECT MIN(received_at) FROM items WHERE state <> ALL($1)",
            &[&settled],
        )?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(|t| Timestamp(t as u64)))
    }

    fn items(&self, limit: Option<usize>) -> ArchiveResult<Vec<ItemRow>> {
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.index
            .rows(
                "SELECT id, state, definition, sender, recipient, received_at, attempts, reason, content_sha256, log_offset, node \
                 FROM items ORDER BY received_at DESC, id DESC LIMIT $1",
                &[&limit],
            )?
            .iter()
            .map(item_row)
            .collect()
    }

    fn item(&self, id: ItemId) -> ArchiveResult<Option<ItemRow>> {
        self.index
            .rows(
                "SELECT id, state, definition, sender, recipient, received_at, attempts, reason, content_sha256, log_offset, node \
                 FROM items WHERE id = $1",
                &[&id.to_string()],
            )?
            .first()
            .map(item_row)
            .transpose()
    }

    fn message(&self, id: ItemId) -> ArchiveResult<Option<ArchivedMessage>> {
        let target = self.index.rows(
            "SELECT CASE WHEN state = 'merged' THEN merged_into ELSE id END FROM items \
             WHERE id = $1 AND state IN ('archived', 'merged')",
            &[&id.to_string()],
        )?;
        let Some(target) = target.first().and_then(|r| r.get::<_, Option<String>>(0)) else {
            return Ok(None);
        };
        let rows = self.index.rows(
            "SELECT a.sender, a.on_behalf_of, a.subject, a.message_id, a.sent_date, a.format, \
             a.content_sha256, a.archived_at, COALESCE(i.received_at, a.archived_at) \
             FROM archived a LEFT JOIN items i ON i.id = a.id WHERE a.id = $1",
            &[&target],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let hash = content(Some(row.get(6)))?.ok_or_else(|| ArchiveError::Invalid {
            what: "content hash",
            value: String::new(),
        })?;
        let recipients = self
            .index
            .rows(
                "SELECT address, field, expanded, forwarded, source_item FROM archived_recipients \
                 WHERE archived_id = $1 ORDER BY seq",
                &[&target],
            )?
            .iter()
            .map(|r| {
                Ok(MessageRecipient {
                    recipient: ArchivedRecipient {
                        address: r.get(0),
                        field: r.get(1),
                        expanded: r.get(2),
                        forwarded: r.get(3),
                    },
                    report: item_id(r.get(4))?,
                })
            })
            .collect::<ArchiveResult<Vec<_>>>()?;
        let mailboxes = self
            .index
            .rows(
                "SELECT mailbox FROM mailboxes WHERE archived_id = $1 ORDER BY mailbox",
                &[&target],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let reports = self
            .index
            .rows(
                "SELECT id, state, definition, received_at FROM items WHERE id = $1 OR merged_into = $1 \
                 ORDER BY id = $1 DESC, received_at, id",
                &[&target],
            )?
            .iter()
            .map(|r| {
                Ok(Report {
                    id: item_id(r.get(0))?,
                    state: parse("item state", r.get(1))?,
                    definition: r.get(2),
                    received_at: Timestamp(r.get::<_, i64>(3) as u64),
                })
            })
            .collect::<ArchiveResult<Vec<_>>>()?;
        Ok(Some(ArchivedMessage {
            id: item_id(target)?,
            sender: row.get(0),
            on_behalf_of: row.get(1),
            subject: row.get(2),
            message_id: row.get(3),
            sent_date: row.get(4),
            format: row.get(5),
            content: hash,
            received_at: Timestamp(row.get::<_, i64>(8) as u64),
            archived_at: Timestamp(row.get::<_, i64>(7) as u64),
            recipients,
            mailboxes,
            reports,
        }))
    }

    fn find(&self, query: &Query) -> ArchiveResult<Vec<ItemId>> {
        // One statement: a criterion not given is a NULL parameter, which the planner folds
        // away; each given one is answered from its index.
        let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.index
            .rows(
                "SELECT a.id FROM archived a JOIN items i ON i.id = a.id \
                 WHERE ($1::text IS NULL OR a.id IN ( \
                     SELECT archived_id FROM archived_recipients WHERE lower(address) = lower($1) \
                     UNION SELECT archived_id FROM archived_recipients WHERE lower(expanded) = lower($1) \
                     UNION SELECT archived_id FROM mailboxes WHERE lower(mailbox) = lower($1))) \
                 AND ($2::text IS NULL OR lower(a.sender) = lower($2)) \
                 AND ($3::text IS NULL OR a.message_id = $3) \
                 AND ($4::bigint IS NULL OR i.received_at >= $4) \
                 AND ($5::bigint IS NULL OR i.received_at < $5) \
                 ORDER BY i.received_at DESC, a.id DESC LIMIT $6",
                &[
                    &query.recipient,
                    &query.sender,
                    &query.message_id,
                    &query.since.map(|t| t.0 as i64),
                    &query.until.map(|t| t.0 as i64),
                    &limit,
                ],
            )?
            .iter()
            .map(|r| item_id(r.get(0)))
            .collect()
    }

    fn content(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        self.content.read(hash)
    }

    fn content_len(&self, hash: &ContentHash) -> ArchiveResult<u64> {
        self.content.content_len(hash)
    }

    fn retention(&self) -> ArchiveResult<RetentionCounts> {
        let value = |key: &str| -> ArchiveResult<Option<i64>> {
            Ok(self
                .index
                .rows("SELECT value FROM retention WHERE key = $1", &[&key])?
                .first()
                .map(|r| r.get(0)))
        };
        Ok(RetentionCounts {
            deleted_messages: value("deleted_messages")?.unwrap_or(0) as u64,
            deleted_segments: value("deleted_segments")?.unwrap_or(0) as u64,
            last_deletion_at: value("last_deletion_at")?.map(|t| Timestamp(t as u64)),
        })
    }
}
