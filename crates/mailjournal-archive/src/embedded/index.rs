//! The index in SQLite: items, archived messages and their recipients, the de-duplication
//! key, connector state, spool retirement marks.

use std::path::Path;

use mailjournal_queue::{ContentHash, ItemId, StateName, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    Archival, ArchiveError, ArchiveIndex, ArchiveResult, ConnectorConfig, Expiry, Holds, NewItem,
    Progress,
};

/// The schema; every statement is idempotent. `{PENDING}` is [`pending_sql`].
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    merged_into TEXT,
    content_sha256 TEXT,
    updated_at INTEGER NOT NULL,
    log_offset INTEGER
);
CREATE INDEX IF NOT EXISTS items_received ON items(received_at);
-- The oldest pending item, for `status`: settled items (nearly all of them, in time) are not
-- in this index, so the look does not walk the archive's history.
CREATE INDEX IF NOT EXISTS items_pending ON items(received_at) WHERE {PENDING};
-- Operator retry requests are looked for every few seconds: without this (tiny, partial)
-- index that look would scan every item ever received.
CREATE INDEX IF NOT EXISTS items_retry ON items(id) WHERE state = 'retry';
CREATE TABLE IF NOT EXISTS archived (
    id TEXT PRIMARY KEY,
    message_id TEXT,
    sent_date TEXT,
    subject TEXT,
    sender TEXT,
    format TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    archived_at INTEGER NOT NULL,
    on_behalf_of TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS archived_dedup ON archived(message_id, sent_date) WHERE message_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS archived_recipients (
    archived_id TEXT NOT NULL,
    address TEXT NOT NULL,
    field TEXT NOT NULL,
    expanded TEXT,
    forwarded TEXT,
    source_item TEXT NOT NULL,
    PRIMARY KEY (archived_id, address, field)
);
CREATE TABLE IF NOT EXISTS mailboxes (
    archived_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    PRIMARY KEY (archived_id, mailbox)
);
-- `find`: who received what, answered from indexes (addresses without regard to case), never
-- by a scan of the archive.
CREATE INDEX IF NOT EXISTS archived_recipients_address
    ON archived_recipients(address COLLATE NOCASE, archived_id);
CREATE INDEX IF NOT EXISTS archived_recipients_expanded
    ON archived_recipients(expanded COLLATE NOCASE, archived_id) WHERE expanded IS NOT NULL;
CREATE INDEX IF NOT EXISTS mailboxes_mailbox ON mailboxes(mailbox COLLATE NOCASE, archived_id);
CREATE INDEX IF NOT EXISTS archived_sender ON archived(sender COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS items_merged_into ON items(merged_into) WHERE merged_into IS NOT NULL;
-- Retention: content that deleted messages left unreferenced, until the content store has
-- removed it; what retention has done (for status); and the lookups deletion needs.
CREATE TABLE IF NOT EXISTS content_garbage (hash TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retention (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- An archived message's content is also on the item it was archived from (same id, same
-- hash, written together), so this one index tells whether a content is still referenced.
CREATE INDEX IF NOT EXISTS items_content ON items(content_sha256) WHERE content_sha256 IS NOT NULL;
-- Spool log segments retired (start-up no longer reads them), and when.
CREATE TABLE IF NOT EXISTS spool_retired (
    segment INTEGER PRIMARY KEY,
    retired_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS connectors (
    position INTEGER NOT NULL,
    description TEXT PRIMARY KEY,
    service_email_address TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    period_minutes INTEGER NOT NULL,
    last_message_at INTEGER
);
CREATE INDEX IF NOT EXISTS spool_retired_at ON spool_retired(retired_at);
";

pub(crate) use crate::settled_sql;

/// That an item is not settled, as SQL: `state <> 'archived' AND ...`. Not `state NOT IN
/// (...)`: SQLite evaluates a list of more than two values through a temporary B-tree, which
/// every insert into and update of `items` built for the partial index (a page cache created
/// and torn down three times per statement, about 3 % of the pipeline's CPU). Queries meant
/// to use `items_pending` must say it the same way.
pub(crate) fn pending_sql() -> String {
    StateName::SETTLED
        .iter()
        .map(|s| format!("state <> '{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Items per state, kept by triggers on every insert, state change and delete (whichever
/// process makes it), so that `status` reads a handful of rows instead of counting every
/// item ever received. About 2 µs per state change.
const ITEM_COUNTS: &str = "
CREATE TABLE item_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER item_counts_insert AFTER INSERT ON items BEGIN
    INSERT INTO item_counts (state, n) VALUES (NEW.state, 1)
    ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER item_counts_update AFTER UPDATE OF state ON items
WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE item_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO item_counts (state, n) VALUES (NEW.state, 1)
    ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER item_counts_delete AFTER DELETE ON items BEGIN
    UPDATE item_counts SET n = n - 1 WHERE state = OLD.state;
END;
";

/// True when the database has the table or index (`kind`) called `name`.
fn has_schema_object(db: &Connection, kind: &str, name: &str) -> rusqlite::Result<bool> {
    db.prepare("SELECT 1 FROM sqlite_master WHERE type = ?1 AND name = ?2")?
        .exists([kind, name])
}

/// True when the database keeps [`ITEM_COUNTS`] (every database the server has opened since).
pub(crate) fn keeps_item_counts(db: &Connection) -> rusqlite::Result<bool> {
    has_schema_object(db, "table", "item_counts")
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: columns added since.
fn migrate(db: &Connection) -> rusqlite::Result<()> {
    let has_log_offset = db
        .prepare("SELECT 1 FROM pragma_table_info('items') WHERE name = 'log_offset'")?
        .exists([])?;
    if !has_log_offset {
        db.execute_batch("ALTER TABLE items ADD COLUMN log_offset INTEGER")?;
    }
    let has_on_behalf_of = db
        .prepare("SELECT 1 FROM pragma_table_info('archived') WHERE name = 'on_behalf_of'")?
        .exists([])?;
    if !has_on_behalf_of {
        db.execute_batch("ALTER TABLE archived ADD COLUMN on_behalf_of TEXT")?;
    }
    // Lookups by Message-ID use `archived_dedup` (its leading column; `message_id = ?` implies
    // the partial index's condition): a second index on the column cost every archived item
    // one more insert at a random place.
    db.execute_batch("DROP INDEX IF EXISTS archived_message_id")?;
    // Likewise `archived_content`: `items_content` answers for archived messages too once
    // every archived message's item carries its hash (filled in here for any that does not).
    if has_schema_object(db, "index", "archived_content")? {
        db.execute_batch(
            "BEGIN IMMEDIATE; \
             UPDATE items SET content_sha256 = \
                 (SELECT a.content_sha256 FROM archived a WHERE a.id = items.id) \
             WHERE content_sha256 IS NULL AND id IN (SELECT id FROM archived WHERE content_sha256 <> ''); \
             DROP INDEX archived_content; \
             COMMIT;",
        )?;
    }
    // `items_pending` as earlier versions made it (`state NOT IN (...)`): made again.
    let pending_index: Option<String> = db
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'items_pending'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if pending_index.is_some_and(|sql| sql.contains("NOT IN")) {
        db.execute_batch(&format!(
            "BEGIN IMMEDIATE; DROP INDEX items_pending; \
             CREATE INDEX items_pending ON items(received_at) WHERE {}; COMMIT;",
            pending_sql()
        ))?;
    }
    if !keeps_item_counts(db)? {
        // Counted once, here; the triggers keep the counts from then on.
        db.execute_batch(&format!(
            "BEGIN IMMEDIATE; {ITEM_COUNTS} \
             INSERT INTO item_counts (state, n) SELECT state, COUNT(*) FROM items GROUP BY state; \
             COMMIT;"
        ))?;
    }
    Ok(())
}

/// A queue id read back from the index.
pub(crate) fn item_id(text: String) -> ArchiveResult<ItemId> {
    text.parse().map_err(|_| ArchiveError::Invalid {
        what: "queue id",
        value: text,
    })
}

/// A state read back from the index.
pub(crate) fn state_name(text: String) -> ArchiveResult<StateName> {
    text.parse().map_err(|_| ArchiveError::Invalid {
        what: "item state",
        value: text,
    })
}

/// An item's content hash read back from the index: none yet, or empty (rows written for
/// items merged without their own content, before hashes were optional).
pub(crate) fn item_content(text: Option<String>) -> ArchiveResult<Option<ContentHash>> {
    text.filter(|t| !t.is_empty())
        .map(|text| {
            text.parse().map_err(|_| ArchiveError::Invalid {
                what: "content hash",
                value: text,
            })
        })
        .transpose()
}

/// The page cache of the engine's connection, in KiB. The indexes keyed by hash (content,
/// de-duplication) take their inserts at random places: with SQLite's default 2 MiB most of
/// those pages are read back from the OS for each item once the archive holds a few
/// hundred thousand messages.
pub(crate) const CACHE_KIB: i64 = 64 * 1024;

/// Pages the WAL holds before a commit copies them into the database (SQLite's default is
/// 1 000). Those indexes dirty a page at a random place for each item: with a longer WAL the
/// checkpoint writes such a page once for many items. At 16 384 pages (64 MiB, the file is
/// reused, not grown) the pipeline wrote 9 KiB less per archived item and spent 12 % less CPU
/// on it (200 000 messages of 20 KB from 20 sessions, 2026-12-02).
pub(crate) const WAL_CHECKPOINT_PAGES: i64 = 16_384;

/// The index of one data directory: the engine's only writer.
#[derive(Debug)]
pub struct SqliteIndex {
    db: Connection,
    /// Set when an item's writes failed part way inside a batch: the batch is then rolled
    /// back at its end rather than committed half done (see [`SqliteIndex::atomically`]).
    poisoned: std::cell::Cell<bool>,
}

impl SqliteIndex {
    /// Opens (creating, or bringing up to date) the index database at `path`.
    pub fn open(path: &Path) -> ArchiveResult<SqliteIndex> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(&SCHEMA.replace("{PENDING}", &pending_sql()))?;
        migrate(&db)?;
        // NORMAL in WAL mode: always consistent; after a power loss the newest transactions may
        // be missing. That is safe here because the spool's commit log, not this database, is
        // the record of what was accepted: recovery re-enqueues every spooled item that is not
        // final here, and archiving is idempotent (content by hash, records by key).
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Every statement the engine runs stays compiled (rusqlite keeps 16 by default):
        // preparing the Message-ID lookup anew for each item was 12 % of the pipeline's CPU.
        db.set_prepared_statement_cache_capacity(32);
        db.pragma_update(None, "cache_size", -CACHE_KIB)?;
        db.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        Ok(SqliteIndex {
            db,
            poisoned: std::cell::Cell::new(false),
        })
    }

    /// Runs one item's writes so that they land whole or not at all. Outside a batch they are
    /// a transaction of their own. Inside one they run in the batch itself and a failure
    /// poisons it: [`end_batch`](ArchiveIndex::end_batch) then rolls everything back (its
    /// items start over, as after a failed commit). Not a savepoint per item: a savepoint
    /// copies every page the item touches into the statement journal, which was 12 % of the
    /// pipeline's CPU (perf, 2026-12-02), for a failure that only a broken disk causes.
    fn atomically<T>(
        &self,
        write: impl FnOnce(&Connection) -> ArchiveResult<T>,
    ) -> ArchiveResult<T> {
        if self.db.is_autocommit() {
            let tx = self.db.unchecked_transaction()?;
            let written = write(&tx)?;
            tx.commit()?;
            return Ok(written);
        }
        write(&self.db).inspect_err(|_| self.poisoned.set(true))
    }

    fn merge_into(
        tx: &Connection,
        target: ItemId,
        item: ItemId,
        archival: &Archival,
    ) -> rusqlite::Result<()> {
        let (target, item) = (target.to_string(), item.to_string());
        for r in &archival.recipients {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO archived_recipients (archived_id, address, field, expanded, forwarded, source_item) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![target, r.address, r.field, r.expanded, r.forwarded, item])?;
        }
        for m in &archival.mailboxes {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO mailboxes (archived_id, mailbox) VALUES (?1, ?2)",
            )?
            .execute(params![target, m])?;
        }
        Ok(())
    }
}

impl SqliteIndex {
    /// Runs `write` in a transaction that is durable when this returns: elsewhere the index
    /// commits with `synchronous = NORMAL`, but what comes after these writes (a retired
    /// segment, removed content) must not be undone by a power loss.
    fn durably(
        &self,
        write: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> ArchiveResult<()> {
        // In WAL mode, a FULL commit syncs the WAL, and with it every transaction before it.
        self.db.pragma_update(None, "synchronous", "FULL")?;
        let written = (|| -> rusqlite::Result<()> {
            let tx = self.db.unchecked_transaction()?;
            write(&tx)?;
            tx.commit()
        })();
        self.db.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(written?)
    }
}

/// An SQL condition that archived message `alias` is under none of `holds`, and its
/// parameters, numbered from ?4 on (the callers bind three before them).
fn not_held(alias: &str, holds: &Holds) -> (String, Vec<rusqlite::types::Value>) {
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut list = |items: Vec<String>| {
        let marks: Vec<String> = items
            .into_iter()
            .map(|v| {
                values.push(v.into());
                format!("?{}", values.len() + 3)
            })
            .collect();
        marks.join(", ")
    };
    let mut conditions = vec!["1".to_owned()];
    if !holds.addresses.is_empty() {
        let held = list(holds.addresses.clone());
        conditions.push(format!(
            "({alias}.sender IS NULL OR {alias}.sender COLLATE NOCASE NOT IN ({held})) \
             AND ({alias}.on_behalf_of IS NULL OR {alias}.on_behalf_of COLLATE NOCASE NOT IN ({held})) \
             AND NOT EXISTS (SELECT 1 FROM archived_recipients r WHERE r.archived_id = {alias}.id \
                 AND (r.address COLLATE NOCASE IN ({held}) OR r.expanded COLLATE NOCASE IN ({held}))) \
             AND NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.archived_id = {alias}.id \
                 AND m.mailbox COLLATE NOCASE IN ({held}))"
        ));
    }
    if !holds.items.is_empty() {
        let held = list(holds.items.iter().map(ItemId::to_string).collect());
        conditions.push(format!(
            "{alias}.id NOT IN ({held}) AND NOT EXISTS (SELECT 1 FROM items j \
             WHERE j.merged_into = {alias}.id AND j.id IN ({held}))"
        ));
    }
    (conditions.join(" AND "), values)
}

/// Deletes archived message `id` with its recipients, mailboxes and the items of its
/// reports, recording the content they leave unreferenced as garbage.
fn delete_message(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    let hashes: Vec<String> = tx
        .prepare_cached(
            "SELECT content_sha256 FROM archived WHERE id = ?1 UNION \
             SELECT content_sha256 FROM items WHERE (id = ?1 OR merged_into = ?1) AND content_sha256 IS NOT NULL",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sql in [
        "DELETE FROM archived_recipients WHERE archived_id = ?1",
        "DELETE FROM mailboxes WHERE archived_id = ?1",
        "DELETE FROM archived WHERE id = ?1",
        "DELETE FROM items WHERE id = ?1 OR merged_into = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id])?;
    }
    for hash in hashes.into_iter().filter(|h| !h.is_empty()) {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO content_garbage (hash) SELECT ?1 \
             WHERE NOT EXISTS (SELECT 1 FROM items WHERE content_sha256 = ?1)",
        )?
        .execute([&hash])?;
    }
    Ok(())
}

/// Adds `n` to retention's counter `key`, and notes when.
fn count(tx: &Connection, key: &str, n: i64, at: Timestamp) -> rusqlite::Result<()> {
    if n == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO retention (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![key, n])?;
    tx.prepare_cached(
        "INSERT INTO retention (key, value) VALUES ('last_deletion_at', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([at.0 as i64])?;
    Ok(())
}

/// The archived message with this de-duplication key (the original's Message-ID and sent
/// date), on `db` or inside a transaction on it.
fn archived_with_key(
    db: &Connection,
    message_id: &str,
    sent_date: Option<&str>,
) -> ArchiveResult<Option<ItemId>> {
    db.prepare_cached("SELECT id FROM archived WHERE message_id = ?1 AND sent_date IS ?2")?
        .query_row(params![message_id, sent_date], |r| r.get::<_, String>(0))
        .optional()?
        .map(item_id)
        .transpose()
}

fn hash_text(archival: &Archival) -> Option<String> {
    archival.content.map(|h| h.to_string())
}

impl ArchiveIndex for SqliteIndex {
    fn begin_batch(&self) -> ArchiveResult<()> {
        Ok(self.db.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn end_batch(&self) -> ArchiveResult<()> {
        if self.poisoned.take() {
            // SQLite may have rolled back already (a full disk does): nothing is left then.
            if !self.db.is_autocommit() {
                self.db.execute_batch("ROLLBACK")?;
            }
            return Err(ArchiveError::BatchRolledBack);
        }
        Ok(self.db.execute_batch("COMMIT")?)
    }

    fn rollback_batch(&self) -> ArchiveResult<()> {
        self.poisoned.set(false);
        Ok(self.db.execute_batch("ROLLBACK")?)
    }

    fn set_connectors(&mut self, connectors: &[ConnectorConfig]) -> ArchiveResult<()> {
        let tx = self.db.savepoint()?;
        tx.execute("UPDATE connectors SET position = -1", [])?;
        for (position, c) in connectors.iter().enumerate() {
            tx.prepare_cached(
                "INSERT INTO connectors (position, description, service_email_address, disabled, period_minutes)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(description) DO UPDATE SET position = ?1, service_email_address = ?3, disabled = ?4, period_minutes = ?5",
            )?
            .execute(params![position as i64, c.description, c.service_email_address, c.disabled, c.period_minutes])?;
        }
        tx.execute("DELETE FROM connectors WHERE position = -1", [])?;
        Ok(tx.commit()?)
    }

    fn connector_times(&self) -> ArchiveResult<Vec<(String, Option<Timestamp>)>> {
        let mut stmt = self
            .db
            .prepare("SELECT description, last_message_at FROM connectors ORDER BY position")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.map(|t| Timestamp(t as u64)),
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn touch_connector(&self, description: &str, at: Timestamp) -> ArchiveResult<()> {
        self.db.prepare_cached(
            "UPDATE connectors SET last_message_at = MAX(COALESCE(last_message_at, 0), ?2) WHERE description = ?1",
        )?
        .execute(params![description, at.0 as i64])?;
        Ok(())
    }

    fn add_item(&self, item: &NewItem<'_>) -> ArchiveResult<()> {
        // An item already known keeps its state; only a missing spool location is filled in
        // (rows written before the column existed get it at the next recovery).
        self.db.prepare_cached(
            "INSERT INTO items (id, definition, sender, recipient, received_at, size, state, updated_at, log_offset)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?5, ?7)
             ON CONFLICT(id) DO UPDATE SET log_offset = excluded.log_offset
             WHERE items.log_offset IS NULL AND excluded.log_offset IS NOT NULL",
        )?
        .execute(params![
            item.id.to_string(),
            item.definition,
            item.sender,
            item.recipient,
            item.received_at.0 as i64,
            item.size as i64,
            item.log_offset.map(|o| o as i64)
        ])?;
        Ok(())
    }

    fn progress(&self, id: ItemId) -> ArchiveResult<Option<Progress>> {
        let row = self
            .db
            .prepare_cached(
                "SELECT state, attempts, reason, content_sha256 FROM items WHERE id = ?1",
            )?
            .query_row([id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        let Some((state, attempts, reason, content)) = row else {
            return Ok(None);
        };
        Ok(Some(Progress {
            state: state_name(state)?,
            attempts,
            reason,
            content: item_content(content)?,
        }))
    }

    fn newest_item_id(&self) -> ArchiveResult<Option<ItemId>> {
        // Queue ids are fixed-width upper-case hex: the greatest string is the greatest id.
        let held = self
            .db
            .query_row("SELECT MAX(id) FROM items", [], |r| {
                r.get::<_, Option<String>>(0)
            })?
            .map(item_id)
            .transpose()?;
        // Retention may have deleted the newest: ids must still go on after it.
        let deleted = self
            .db
            .query_row(
                "SELECT value FROM retention WHERE key = 'newest_deleted_id'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| ItemId(v as u64));
        Ok(held.max(deleted))
    }

    fn retry_requests(&self) -> ArchiveResult<Vec<ItemId>> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT id FROM items WHERE state = 'retry'")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|id| item_id(id?)).collect()
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
        self.db.prepare_cached(
            "UPDATE items SET state = ?2, attempts = ?3, reason = ?4, sender = COALESCE(?5, sender), updated_at = ?6 WHERE id = ?1",
        )?
        .execute(params![id.to_string(), state.as_str(), attempts, reason, sender, at.0 as i64])?;
        Ok(())
    }

    fn record_attempt(
        &self,
        id: ItemId,
        attempts: u32,
        sender: Option<&str>,
        at: Timestamp,
    ) -> ArchiveResult<()> {
        // Without `state` among the columns set, SQLite neither runs the count trigger nor
        // rewrites the partial indexes on state (`items_pending`, `items_retry`): a third of
        // the statement's cost.
        let changed = self
            .db
            .prepare_cached(
                "UPDATE items SET attempts = ?2, reason = NULL, sender = COALESCE(?3, sender), updated_at = ?4 WHERE id = ?1 AND state = 'waiting'",
            )?
            .execute(params![id.to_string(), attempts, sender, at.0 as i64])?;
        if changed == 0 {
            self.set_state(id, StateName::Waiting, attempts, None, sender, at)?;
        }
        Ok(())
    }

    fn find_archived(
        &self,
        message_id: &str,
        sent_date: Option<&str>,
    ) -> ArchiveResult<Option<ItemId>> {
        archived_with_key(&self.db, message_id, sent_date)
    }

    fn archive(
        &mut self,
        item: ItemId,
        archival: &Archival,
        attempts: u32,
        at: Timestamp,
    ) -> ArchiveResult<ItemId> {
        self.atomically(|tx| {
            let existing = match &archival.message_id {
                Some(mid) => archived_with_key(tx, mid, archival.sent_date.as_deref())?,
                None => None,
            };
            let (target, state) = match existing {
                Some(target) => (target, StateName::Merged),
                None => {
                    tx.prepare_cached(
                        "INSERT INTO archived (id, message_id, sent_date, subject, sender, format, content_sha256, archived_at, on_behalf_of) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![item.to_string(), archival.message_id, archival.sent_date, archival.subject, archival.sender, archival.format, hash_text(archival).unwrap_or_default(), at.0 as i64, archival.on_behalf_of])?;
                    (item, StateName::Archived)
                }
            };
            Self::merge_into(tx, target, item, archival)?;
            let merged_into = (state == StateName::Merged).then(|| target.to_string());
            tx.prepare_cached(
                "UPDATE items SET state = ?2, attempts = ?3, merged_into = ?4, content_sha256 = ?5, updated_at = ?6, reason = NULL WHERE id = ?1",
            )?
            .execute(params![item.to_string(), state.as_str(), attempts, merged_into, hash_text(archival), at.0 as i64])?;
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
        self.atomically(|tx| {
            Self::merge_into(tx, target, item, archival)?;
            tx.prepare_cached(
                "UPDATE items SET state = 'merged', attempts = ?2, merged_into = ?3, content_sha256 = ?4, updated_at = ?5, reason = NULL WHERE id = ?1",
            )?
            .execute(params![item.to_string(), attempts, target.to_string(), hash_text(archival), at.0 as i64])?;
            Ok(())
        })
    }

    fn record_retired(&self, segments: &[u64], at: Timestamp) -> ArchiveResult<()> {
        self.durably(|tx| {
            for &segment in segments {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO spool_retired (segment, retired_at) VALUES (?1, ?2)",
                )?
                .execute(params![segment as i64, at.0 as i64])?;
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
        let mut deleted: Vec<String> = Vec::new();
        self.durably(|tx| {
            for expiry in expiries {
                let left = max.saturating_sub(deleted.len());
                if left == 0 {
                    break;
                }
                let (held, mut values) = not_held("a", holds);
                values.splice(
                    0..0,
                    [
                        expiry.definition.clone().into(),
                        (expiry.received_before.0 as i64).into(),
                        (left as i64).into(),
                    ],
                );
                let sql = format!(
                    "SELECT a.id FROM archived a JOIN items i ON i.id = a.id \
                     WHERE i.definition = ?1 AND i.received_at < ?2 AND {held} \
                     ORDER BY i.received_at LIMIT ?3"
                );
                let ids: Vec<String> = tx
                    .prepare(&sql)?
                    .query_map(rusqlite::params_from_iter(values), |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for id in ids {
                    delete_message(tx, &id)?;
                    deleted.push(id);
                }
            }
            if let Some(newest) = deleted.iter().max() {
                let newest = newest.parse::<ItemId>().map_or(0, |i| i.0 as i64);
                tx.execute(
                    "INSERT INTO retention (key, value) VALUES ('newest_deleted_id', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                    [newest],
                )?;
                count(tx, "deleted_messages", deleted.len() as i64, at)?;
            }
            Ok(())
        })?;
        deleted.into_iter().map(item_id).collect()
    }

    fn content_garbage(&self) -> ArchiveResult<Vec<ContentHash>> {
        // Referenced again (the same content archived since): alive, not garbage. Looked up
        // per garbage hash in `items_content`: `hash IN (SELECT ...)` had SQLite copy
        // every archived message's hash into a temporary table at each retention run.
        self.db.execute(
            "DELETE FROM content_garbage \
             WHERE EXISTS (SELECT 1 FROM items i WHERE i.content_sha256 = content_garbage.hash)",
            [],
        )?;
        let mut stmt = self.db.prepare("SELECT hash FROM content_garbage")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut hashes = Vec::new();
        for hash in rows {
            hashes.extend(item_content(Some(hash?))?);
        }
        Ok(hashes)
    }

    fn content_removed(&self, hash: &ContentHash) -> ArchiveResult<()> {
        self.db.execute(
            "DELETE FROM content_garbage WHERE hash = ?1",
            [hash.to_string()],
        )?;
        Ok(())
    }

    fn retired_before(&self, before: Timestamp) -> ArchiveResult<Vec<u64>> {
        let mut stmt = self
            .db
            .prepare("SELECT segment FROM spool_retired WHERE retired_at < ?1 ORDER BY segment")?;
        let rows = stmt.query_map([before.0 as i64], |r| r.get::<_, i64>(0))?;
        Ok(rows
            .map(|r| r.map(|s| s as u64))
            .collect::<rusqlite::Result<_>>()?)
    }

    fn any_held(&self, items: &[ItemId], holds: &Holds) -> ArchiveResult<bool> {
        if items.iter().any(|i| holds.items.contains(i)) {
            return Ok(true);
        }
        if holds.addresses.is_empty() && holds.items.is_empty() {
            return Ok(false);
        }
        let (held, values) = not_held("a", holds);
        // not_held numbers its parameters from ?4: the item is ?1 here (?2, ?3 unused).
        let sql = format!(
            "SELECT 1 FROM items i JOIN archived a \
             ON a.id = CASE WHEN i.state = 'merged' THEN i.merged_into ELSE i.id END \
             WHERE i.id = ?1 AND ?2 IS ?3 AND NOT ({held})"
        );
        let mut stmt = self.db.prepare(&sql)?;
        for item in items {
            let mut params: Vec<rusqlite::types::Value> = vec![
                item.to_string().into(),
                rusqlite::types::Value::Null,
                rusqlite::types::Value::Null,
            ];
            params.extend(values.iter().cloned());
            if stmt.exists(rusqlite::params_from_iter(params))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn segment_deleted(&self, segment: u64, at: Timestamp) -> ArchiveResult<()> {
        self.durably(|tx| {
            let removed = tx.execute(
                "DELETE FROM spool_retired WHERE segment = ?1",
                [segment as i64],
            )?;
            count(tx, "deleted_segments", removed as i64, at)
        })
    }
}
