//! The index in PostgreSQL: the embedded index's statements, with race-free
//! de-duplication across nodes, each node's own spool marks, and a connection that comes
//! back after the database did.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use mailjournal_queue::{ContentHash, ItemId, StateName, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::schema::{SCHEMA, SCHEMA_LOCK};
use super::{Runtime, backend, redact_url};
use crate::settled_sql;
use crate::{
    Archival, ArchiveError, ArchiveIndex, ArchiveResult, ConnectorConfig, Expiry, Holds, NewItem,
    Progress,
};

type Param<'a> = &'a (dyn ToSql + Sync);

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// None open: each write commits by itself.
    Closed,
    /// `BEGIN` sent; every write goes into it.
    Open,
    /// A write of the open batch failed (or its connection was lost): PostgreSQL has
    /// thrown the transaction away, so `end_batch` must fail rather than "commit" it.
    Broken,
}

/// The connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// The index of the shared backend, for one node.
pub struct PgIndex {
    runtime: Runtime,
    url: String,
    node: String,
    number: u8,
    connection: RefCell<Option<Connection>>,
    batch: Cell<Batch>,
}

impl std::fmt::Debug for PgIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIndex")
            .field("url", &redact_url(&self.url))
            .field("node", &self.node)
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

pub(super) fn parse<T: std::str::FromStr>(what: &'static str, text: String) -> ArchiveResult<T> {
    text.parse()
        .map_err(|_| ArchiveError::Invalid { what, value: text })
}

pub(super) fn item_id(text: String) -> ArchiveResult<ItemId> {
    parse("queue id", text)
}

pub(super) fn content(text: Option<String>) -> ArchiveResult<Option<ContentHash>> {
    text.filter(|t| !t.is_empty())
        .map(|t| parse("content hash", t))
        .transpose()
}

fn ms(t: Timestamp) -> i64 {
    t.0 as i64
}

fn hash_text(archival: &Archival) -> Option<String> {
    archival.content.map(|h| h.to_string())
}

impl PgIndex {
    /// Connects as node `node`, creating the schema when it is missing and registering the
    /// node (its number is [`node_number`](Self::node_number)).
    pub(crate) fn connect(runtime: Runtime, url: &str, node: &str) -> ArchiveResult<PgIndex> {
        let mut index = PgIndex {
            runtime,
            url: url.to_owned(),
            node: node.to_owned(),
            number: 0,
            connection: RefCell::new(None),
            batch: Cell::new(Batch::Closed),
        };
        index.number = index.register()?;
        Ok(index)
    }

    /// A connection for reading only: no schema made, no node registered.
    pub(super) fn connect_reader(runtime: Runtime, url: &str) -> ArchiveResult<PgIndex> {
        let index = PgIndex {
            runtime,
            url: url.to_owned(),
            node: String::new(),
            number: 0,
            connection: RefCell::new(None),
            batch: Cell::new(Batch::Closed),
        };
        *index.connection.borrow_mut() = Some(index.open_connection()?);
        Ok(index)
    }

    /// This node's number among the receivers sharing the archive (1 to 255, in the order
    /// they first joined): what makes its queue ids differ from every other node's.
    pub fn node_number(&self) -> u8 {
        self.number
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    fn open_connection(&self) -> ArchiveResult<Connection> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(backend)?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        config.application_name(format!("mailjournal {}", self.node));
        let (client, connection) = self
            .runtime
            .block_on(config.connect(NoTls))
            .map_err(backend)?;
        self.runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "archive index: PostgreSQL connection ended");
            }
        });
        Ok(Connection {
            client,
            statements: HashMap::new(),
        })
    }

    /// The schema (under an advisory lock: nodes may start together) and this node's row.
    fn register(&self) -> ArchiveResult<u8> {
        let connection = self.open_connection()?;
        let schema = SCHEMA.replace("{SETTLED}", &settled_sql());
        let number = self.runtime.block_on(async {
            let c = &connection.client;
            c.batch_execute("BEGIN").await?;
            c.query_one("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await?;
            c.batch_execute(&schema).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let row = c
                .query_one(
                    "INSERT INTO nodes (name, number, started_at) \
                     VALUES ($1, (SELECT COALESCE(MAX(number), 0) + 1 FROM nodes), $2) \
                     ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at \
                     RETURNING number",
                    &[&self.node, &now],
                )
                .await?;
            c.batch_execute("COMMIT").await?;
            Ok::<i32, tokio_postgres::Error>(row.get(0))
        });
        let number = number.map_err(backend)?;
        *self.connection.borrow_mut() = Some(connection);
        u8::try_from(number)
            .ok()
            .filter(|n| *n != 0)
            .ok_or(ArchiveError::Invalid {
                what: "node number (at most 255 receivers share an archive)",
                value: number.to_string(),
            })
    }

    /// Runs `sql` with `params`, prepared once per connection; reconnects when the
    /// connection was lost (a batch it broke fails at its end).
    pub(super) fn rows(&self, sql: &'static str, params: &[Param<'_>]) -> ArchiveResult<Vec<Row>> {
        if self.batch.get() == Batch::Broken {
            return Err(ArchiveError::Backend(
                "the batch's transaction was lost (see the first error)".into(),
            ));
        }
        let mut slot = self.connection.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            if self.batch.get() == Batch::Open {
                self.batch.set(Batch::Broken);
                return Err(ArchiveError::Backend(
                    "the connection to PostgreSQL was lost during a batch".into(),
                ));
            }
            *slot = Some(self.open_connection()?);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(ArchiveError::Backend("no connection".into()));
        };
        let result = self.runtime.block_on(async {
            let statement = match connection.statements.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = connection.client.prepare(sql).await?;
                    connection.statements.insert(sql, s.clone());
                    s
                }
            };
            connection.client.query(&statement, params).await
        });
        result.map_err(|e| {
            if self.batch.get() == Batch::Open {
                self.batch.set(Batch::Broken);
            }
            backend(e)
        })
    }

    pub(super) fn execute(&self, sql: &'static str, params: &[Param<'_>]) -> ArchiveResult<()> {
        self.rows(sql, params).map(drop)
    }

    /// A statement without parameters. `reconnect`: whether a lost connection may be
    /// replaced first (for `BEGIN`; never for `COMMIT`, which on a new connection would
    /// "succeed" with nothing to commit).
    fn simple(&self, sql: &'static str, reconnect: bool) -> ArchiveResult<()> {
        let mut slot = self.connection.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            if !reconnect {
                return Err(ArchiveError::Backend(
                    "the connection to PostgreSQL was lost before the batch was committed".into(),
                ));
            }
            *slot = Some(self.open_connection()?);
        }
        let Some(connection) = slot.as_ref() else {
            return Err(ArchiveError::Backend("no connection".into()));
        };
        self.runtime
            .block_on(connection.client.batch_execute(sql))
            .map_err(backend)
    }

    /// Runs `write` in one transaction: the open batch's, or one of its own.
    fn atomically<T>(&self, write: impl FnOnce() -> ArchiveResult<T>) -> ArchiveResult<T> {
        if self.batch.get() != Batch::Closed {
            return write();
        }
        self.begin_batch()?;
        match write() {
            Ok(value) => self.end_batch().map(|()| value),
            Err(e) => {
                let _ = self.end_batch();
                Err(e)
            }
        }
    }

    fn merge_into(&self, target: &str, item: &str, archival: &Archival) -> ArchiveResult<()> {
        for r in &archival.recipients {
            self.execute(
                "INSERT INTO archived_recipients (archived_id, address, field, expanded, forwarded, source_item) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&target, &r.address, &r.field, &r.expanded, &r.forwarded, &item],
            )?;
        }
        for m in &archival.mailboxes {
            self.execute(
                "INSERT INTO mailboxes (archived_id, mailbox) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&target, m],
            )?;
        }
        Ok(())
    }

    fn archived_with_key(
        &self,
        message_id: &str,
        sent_date: Option<&str>,
    ) -> ArchiveResult<Option<ItemId>> {
        self.rows(
            "SELECT id FROM archived WHERE message_id = $1 AND sent_date IS NOT DISTINCT FROM $2",
            &[&message_id, &sent_date],
        )?
        .first()
        .map(|r| item_id(r.get(0)))
        .transpose()
    }

    /// Adds `n` to retention's counter `key`, and notes when.
    fn count(&self, key: &str, n: i64, at: Timestamp) -> ArchiveResult<()> {
        if n == 0 {
            return Ok(());
        }
        self.execute(
            "INSERT INTO retention (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = retention.value + excluded.value",
            &[&key, &n],
        )?;
        self.execute(
            "INSERT INTO retention (key, value) VALUES ('last_deletion_at', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&ms(at)],
        )
    }

    /// Deletes archived message `id` with its recipients, mailboxes and the items of its
    /// reports, recording the content they leave unreferenced as garbage.
    fn delete_message(&self, id: &str) -> ArchiveResult<()> {
        let hashes: Vec<String> = self
            .rows(
                "SELECT content_sha256 FROM archived WHERE id = $1 UNION \
                 SELECT content_sha256 FROM items WHERE (id = $1 OR merged_into = $1) AND content_sha256 IS NOT NULL",
                &[&id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.execute(
            "DELETE FROM archived_recipients WHERE archived_id = $1",
            &[&id],
        )?;
        self.execute("DELETE FROM mailboxes WHERE archived_id = $1", &[&id])?;
        self.execute("DELETE FROM archived WHERE id = $1", &[&id])?;
        self.execute(
            "DELETE FROM items WHERE id = $1 OR merged_into = $1",
            &[&id],
        )?;
        for hash in hashes.iter().filter(|h| !h.is_empty()) {
            self.execute(
                "INSERT INTO content_garbage (hash) SELECT $1::text \
                 WHERE NOT EXISTS (SELECT 1 FROM archived WHERE content_sha256 = $1) \
                 AND NOT EXISTS (SELECT 1 FROM items WHERE content_sha256 = $1) \
                 ON CONFLICT DO NOTHING",
                &[hash],
            )?;
        }
        Ok(())
    }
}

/// The held addresses (lower case) and items of `holds`, as the two array parameters of
/// [`NOT_HELD`].
fn hold_params(holds: &Holds) -> (Vec<String>, Vec<String>) {
    (
        holds.addresses.iter().map(|a| a.to_lowercase()).collect(),
        holds.items.iter().map(ItemId::to_string).collect(),
    )
}

/// That archived message `a` is under no hold: addresses in `$4`, items in `$5` (empty
/// arrays hold nothing).
macro_rules! not_held {
    () => {
        "(a.sender IS NULL OR lower(a.sender) <> ALL($4)) \
         AND (a.on_behalf_of IS NULL OR lower(a.on_behalf_of) <> ALL($4)) \
         AND NOT EXISTS (SELECT 1 FROM archived_recipients r WHERE r.archived_id = a.id \
             AND (lower(r.address) = ANY($4) OR lower(r.expanded) = ANY($4))) \
         AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.archived_id = a.id \
             AND lower(m.mailbox) = ANY($4)) \
         AND a.id <> ALL($5) \
         AND NOT EXISTS (SELECT 1 FROM items j WHERE j.merged_into = a.id AND j.id = ANY($5))"
    };
}

impl ArchiveIndex for PgIndex {
    fn begin_batch(&self) -> ArchiveResult<()> {
        if self.batch.get() != Batch::Closed {
            return Err(ArchiveError::Backend("a batch is already open".into()));
        }
        self.simple("BEGIN", true)?;
        self.batch.set(Batch::Open);
        Ok(())
    }

    fn end_batch(&self) -> ArchiveResult<()> {
        match self.batch.replace(Batch::Closed) {
            Batch::Open => self.simple("COMMIT", false),
            Batch::Broken => {
                // COMMIT of an aborted transaction answers ROLLBACK without an error: the
                // failure must be told here, or its writes would count as made.
                let _ = self.simple("ROLLBACK", false);
                Err(ArchiveError::Backend(
                    "the batch's transaction failed and was rolled back".into(),
                ))
            }
            Batch::Closed => Ok(()),
        }
    }

    fn rollback_batch(&self) -> ArchiveResult<()> {
        if self.batch.replace(Batch::Closed) == Batch::Closed {
            return Ok(());
        }
        // A lost connection has rolled it back already.
        match self.simple("ROLLBACK", false) {
            Ok(()) => Ok(()),
            Err(_) if self.connection.borrow().is_none() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn set_connectors(&mut self, connectors: &[ConnectorConfig]) -> ArchiveResult<()> {
        self.atomically(|| {
            self.execute("UPDATE connectors SET position = -1", &[])?;
            for (position, c) in connectors.iter().enumerate() {
                let period = i32::try_from(c.period_minutes).unwrap_or(i32::MAX);
                self.execute(
                    "INSERT INTO connectors (position, description, service_email_address, disabled, period_minutes) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (description) DO UPDATE SET \
                     position = $1, service_email_address = $3, disabled = $4, period_minutes = $5",
                    &[&(position as i32), &c.description, &c.service_email_address, &c.disabled, &period],
                )?;
            }
            self.execute("DELETE FROM connectors WHERE position = -1", &[])
        })
    }

    fn connector_times(&self) -> ArchiveResult<Vec<(String, Option<Timestamp>)>> {
        Ok(self
            .rows(
                "SELECT description, last_message_at FROM connectors ORDER BY position",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, Option<i64>>(1).map(|t| Timestamp(t as u64)),
                )
            })
            .collect())
    }

    fn touch_connector(&self, description: &str, at: Timestamp) -> ArchiveResult<()> {
        // Cluster-wide: the newest message any node took.
        self.execute(
            "UPDATE connectors SET last_message_at = GREATEST(COALESCE(last_message_at, 0), $2) \
             WHERE description = $1",
            &[&description, &ms(at)],
        )
    }

    fn add_item(&self, item: &NewItem<'_>) -> ArchiveResult<()> {
        let offset = item.log_offset.map(|o| o as i64);
        self.execute(
            "INSERT INTO items (id, node, definition, sender, recipient, received_at, size, state, updated_at, log_offset) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'waiting', $6, $8) \
             ON CONFLICT (id) DO UPDATE SET log_offset = excluded.log_offset \
             WHERE items.log_offset IS NULL AND excluded.log_offset IS NOT NULL",
            &[
                &item.id.to_string(),
                &self.node,
                &item.definition,
                &item.sender,
                &item.recipient,
                &ms(item.received_at),
                &(item.size as i64),
                &offset,
            ],
        )
    }

    fn progress(&self, id: ItemId) -> ArchiveResult<Option<Progress>> {
        let rows = self.rows(
            "SELECT state, attempts, reason, content_sha256 FROM items WHERE id = $1",
            &[&id.to_string()],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(Progress {
            state: parse("item state", row.get(0))?,
            attempts: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            reason: row.get(2),
            content: content(row.get(3))?,
        }))
    }

    fn newest_item_id(&self) -> ArchiveResult<Option<ItemId>> {
        // This node's: its ids go on after its own (other nodes' differ in their node bits).
        let held = self.rows("SELECT MAX(id) FROM items WHERE node = $1", &[&self.node])?;
        let held = held
            .first()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .map(item_id)
            .transpose()?;
        let key = format!("newest_deleted_id:{}", self.node);
        let deleted = self
            .rows("SELECT value FROM retention WHERE key = $1", &[&key])?
            .first()
            .map(|r| ItemId(r.get::<_, i64>(0) as u64));
        Ok(held.max(deleted))
    }

    fn retry_requests(&self) -> ArchiveResult<Vec<ItemId>> {
        // This node's only: the item's bytes are in its spool.
        self.rows(
            "SELECT id FROM items WHERE state = 'retry' AND node = $1",
            &[&self.node],
        )?
        .iter()
        .map(|r| item_id(r.get(0)))
        .collect()
    }

    fn set_state(
        &self,
        id: ItemId,
        state: StateName,
        attempts: u32,
        reason: Option<&str>,
        sender: Option<&str>,
        at: Timestamp,
    ) -> ArchiveResult<()> {
        self.execute(
            "UPDATE items SET state = $2, attempts = $3, reason = $4, sender = COALESCE($5, sender), updated_at = $6 WHERE id = $1",
            &[
                &id.to_string(),
                &state.as_str(),
                &(attempts as i32),
                &reason,
                &sender,
                &ms(at),
            ],
        )
    }

    fn find_archived(
        &self,
        message_id: &str,
        sent_date: Option<&str>,
    ) -> ArchiveResult<Option<ItemId>> {
        self.archived_with_key(message_id, sent_date)
    }

    fn archive(
        &mut self,
        item: ItemId,
        archival: &Archival,
        attempts: u32,
        at: Timestamp,
    ) -> ArchiveResult<ItemId> {
        let id = item.to_string();
        self.atomically(|| {
            // Another node may be archiving the same message right now: the unique key makes
            // this insert wait for its transaction, then do nothing; the message it made is
            // then found and merged into.
            let inserted = self.rows(
                "INSERT INTO archived (id, message_id, sent_date, subject, sender, format, content_sha256, archived_at, on_behalf_of) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING id",
                &[
                    &id,
                    &archival.message_id,
                    &archival.sent_date,
                    &archival.subject,
                    &archival.sender,
                    &archival.format,
                    &hash_text(archival).unwrap_or_default(),
                    &ms(at),
                    &archival.on_behalf_of,
                ],
            )?;
            let target = if inserted.is_empty() {
                // Either the key is taken (another report of the message) or this item
                // was archived before (a crash before its state was recorded).
                let by_key = match &archival.message_id {
                    Some(mid) => self.archived_with_key(mid, archival.sent_date.as_deref())?,
                    None => None,
                };
                by_key.unwrap_or(item)
            } else {
                item
            };
            let state = if target == item {
                StateName::Archived
            } else {
                StateName::Merged
            };
            let target_text = target.to_string();
            self.merge_into(&target_text, &id, archival)?;
            let merged_into = (state == StateName::Merged).then_some(target_text.as_str());
            self.execute(
                "UPDATE items SET state = $2, attempts = $3, merged_into = $4, content_sha256 = $5, updated_at = $6, reason = NULL WHERE id = $1",
                &[&id, &state.as_str(), &(attempts as i32), &merged_into, &hash_text(archival), &ms(at)],
            )?;
            Ok(target)
        })
    }

    fn merge(
        &mut self,
        item: ItemId,
        target: ItemId,
        archival: &Archival,
        attempts: u32,
        at: Timestamp,
    ) -> ArchiveResult<()> {
        let (id, target) = (item.to_string(), target.to_string());
        self.atomically(|| {
            self.merge_into(&target, &id, archival)?;
            self.execute(
                "UPDATE items SET state = 'merged', attempts = $2, merged_into = $3, content_sha256 = $4, updated_at = $5, reason = NULL WHERE id = $1",
                &[&id, &(attempts as i32), &target, &hash_text(archival), &ms(at)],
            )
        })
    }

    fn record_retired(&self, segments: &[u64], at: Timestamp) -> ArchiveResult<()> {
        // PostgreSQL's commit is durable (synchronous_commit, its default) when it answers.
        self.atomically(|| {
            for &segment in segments {
                self.execute(
                    "INSERT INTO spool_retired (node, segment, retired_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (node, segment) DO UPDATE SET retired_at = excluded.retired_at",
                    &[&self.node, &(segment as i64), &ms(at)],
                )?;
            }
            Ok(())
        })
    }

    fn delete_expired(
        &mut self,
        expiries: &[Expiry],
        holds: &Holds,
        max: usize,
        at: Timestamp,
    ) -> ArchiveResult<Vec<ItemId>> {
        let (addresses, items) = hold_params(holds);
        self.atomically(|| {
            let mut deleted: Vec<String> = Vec::new();
            for expiry in expiries {
                let left = max.saturating_sub(deleted.len());
                if left == 0 {
                    break;
                }
                let ids: Vec<String> = self
                    .rows(
                        concat!(
                            "SELECT a.id FROM archived a JOIN items i ON i.id = a.id \
                             WHERE i.definition = $1 AND i.received_at < $2 AND ",
                            not_held!(),
                            " ORDER BY i.received_at LIMIT $3 FOR UPDATE OF a SKIP LOCKED"
                        ),
                        &[
                            &expiry.definition,
                            &ms(expiry.received_before),
                            &(left as i64),
                            &addresses,
                            &items,
                        ],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for id in ids {
                    self.delete_message(&id)?;
                    deleted.push(id);
                }
            }
            if let Some(newest) = deleted.iter().max() {
                let newest = newest.parse::<ItemId>().map_or(0, |i| i.0 as i64);
                let key = format!("newest_deleted_id:{}", self.node);
                self.execute(
                    "INSERT INTO retention (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = GREATEST(retention.value, excluded.value)",
                    &[&key, &newest],
                )?;
                self.count("deleted_messages", deleted.len() as i64, at)?;
            }
            deleted.into_iter().map(item_id).collect()
        })
    }

    fn content_garbage(&self) -> ArchiveResult<Vec<ContentHash>> {
        self.execute(
            "DELETE FROM content_garbage WHERE hash IN (SELECT content_sha256 FROM archived) \
             OR hash IN (SELECT content_sha256 FROM items WHERE content_sha256 IS NOT NULL)",
            &[],
        )?;
        let mut hashes = Vec::new();
        for row in self.rows("SELECT hash FROM content_garbage", &[])? {
            hashes.extend(content(Some(row.get(0)))?);
        }
        Ok(hashes)
    }

    fn content_removed(&self, hash: &ContentHash) -> ArchiveResult<()> {
        self.execute(
            "DELETE FROM content_garbage WHERE hash = $1",
            &[&hash.to_string()],
        )
    }

    fn retired_before(&self, before: Timestamp) -> ArchiveResult<Vec<u64>> {
        Ok(self
            .rows(
                "SELECT segment FROM spool_retired WHERE node = $1 AND retired_at < $2 ORDER BY segment",
                &[&self.node, &ms(before)],
            )?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect())
    }

    fn any_held(&self, items: &[ItemId], holds: &Holds) -> ArchiveResult<bool> {
        if items.iter().any(|i| holds.items.contains(i)) {
            return Ok(true);
        }
        if holds.addresses.is_empty() && holds.items.is_empty() {
            return Ok(false);
        }
        let (addresses, held_items) = hold_params(holds);
        let ids: Vec<String> = items.iter().map(ItemId::to_string).collect();
        // $2 and $3 are unused: the condition numbers its arrays $4 and $5.
        let rows = self.rows(
            concat!(
                "SELECT 1 FROM items i JOIN archived a \
                 ON a.id = CASE WHEN i.state = 'merged' THEN i.merged_into ELSE i.id END \
                 WHERE i.id = ANY($1) AND $2::bigint IS NULL AND $3::bigint IS NULL AND NOT (",
                not_held!(),
                ") LIMIT 1"
            ),
            &[&ids, &None::<i64>, &None::<i64>, &addresses, &held_items],
        )?;
        Ok(!rows.is_empty())
    }

    fn segment_deleted(&self, segment: u64, at: Timestamp) -> ArchiveResult<()> {
        self.atomically(|| {
            let removed = self.rows(
                "DELETE FROM spool_retired WHERE node = $1 AND segment = $2 RETURNING segment",
                &[&self.node, &(segment as i64)],
            )?;
            self.count("deleted_segments", removed.len() as i64, at)
        })
    }
}
