//! The PostgreSQL schema: the embedded index's tables, with the node of each item and of
//! each retired segment. Every statement is idempotent; nodes starting together take an
//! advisory lock around it.

/// The advisory lock key around schema creation (any fixed number: "mailjnl" in ASCII).
pub(super) const SCHEMA_LOCK: i64 = 0x006d_6169_6c6a_6e6c;

/// `{SETTLED}` is the settled states' SQL list.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    definition TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    size BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    merged_into TEXT,
    content_sha256 TEXT,
    updated_at BIGINT NOT NULL,
    log_offset BIGINT
);
CREATE INDEX IF NOT EXISTS items_received ON items (received_at);
CREATE INDEX IF NOT EXISTS items_node ON items (node, id);
CREATE INDEX IF NOT EXISTS items_pending ON items (received_at) WHERE state NOT IN ({SETTLED});
CREATE INDEX IF NOT EXISTS items_retry ON items (id) WHERE state = 'retry';
CREATE INDEX IF NOT EXISTS items_merged_into ON items (merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_content ON items (content_sha256) WHERE content_sha256 IS NOT NULL;
CREATE TABLE IF NOT EXISTS archived (
    id TEXT PRIMARY KEY,
    message_id TEXT,
    sent_date TEXT,
    subject TEXT,
    sender TEXT,
    format TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    archived_at BIGINT NOT NULL,
    on_behalf_of TEXT
);
-- The de-duplication key. NULLS NOT DISTINCT: two reports without a sent date but with one
-- Message-ID are one message, as in the embedded index (SQLite's `IS`).
CREATE UNIQUE INDEX IF NOT EXISTS archived_dedup ON archived (message_id, sent_date)
    NULLS NOT DISTINCT WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS archived_sender ON archived (lower(sender));
CREATE INDEX IF NOT EXISTS archived_content ON archived (content_sha256);
CREATE TABLE IF NOT EXISTS archived_recipients (
    seq BIGSERIAL,
    archived_id TEXT NOT NULL,
    address TEXT NOT NULL,
    field TEXT NOT NULL,
    expanded TEXT,
    forwarded TEXT,
    source_item TEXT NOT NULL,
    PRIMARY KEY (archived_id, address, field)
);
CREATE INDEX IF NOT EXISTS archived_recipients_address ON archived_recipients (lower(address), archived_id);
CREATE INDEX IF NOT EXISTS archived_recipients_expanded ON archived_recipients (lower(expanded), archived_id)
    WHERE expanded IS NOT NULL;
CREATE TABLE IF NOT EXISTS mailboxes (
    archived_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    PRIMARY KEY (archived_id, mailbox)
);
CREATE INDEX IF NOT EXISTS mailboxes_mailbox ON mailboxes (lower(mailbox), archived_id);
CREATE TABLE IF NOT EXISTS content_garbage (hash TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS retention (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
-- Each node's spool segments retired, and when.
CREATE TABLE IF NOT EXISTS spool_retired (
    node TEXT NOT NULL,
    segment BIGINT NOT NULL,
    retired_at BIGINT NOT NULL,
    PRIMARY KEY (node, segment)
);
CREATE INDEX IF NOT EXISTS spool_retired_at ON spool_retired (node, retired_at);
-- The definitions, cluster-wide: a definition's last message is the newest any node took.
CREATE TABLE IF NOT EXISTS connectors (
    position INTEGER NOT NULL,
    description TEXT PRIMARY KEY,
    service_email_address TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    period_minutes INTEGER NOT NULL,
    last_message_at BIGINT
);
-- The receivers sharing the archive; `number` goes into their queue ids.
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE,
    started_at BIGINT NOT NULL
);
";
