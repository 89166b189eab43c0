//! The embedded index and its read side, on real SQLite files.

use std::fs;
use std::path::PathBuf;

use mailjournal_queue::{ItemId, StateName, Timestamp};
use rusqlite::Connection;

use super::{Reader, SqliteIndex, request_retry};
use crate::{ArchiveIndex, NewItem};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mailjournal-index-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn index(dir: &std::path::Path) -> SqliteIndex {
    SqliteIndex::open(&dir.join("archive.sqlite3")).unwrap()
}

fn item(id: u64, log_offset: Option<u64>) -> NewItem<'static> {
    NewItem {
        id: ItemId(id),
        definition: "bench",
        sender: "<>",
        recipient: "journaling@journal.example.com",
        received_at: Timestamp(1),
        size: 10,
        log_offset,
    }
}

fn log_offset(reader: &Reader, id: u64) -> Option<u64> {
    reader.item(ItemId(id)).unwrap().and_then(|i| i.log_offset)
}

#[test]
fn the_spool_location_is_kept_and_filled_in_but_never_changes_a_known_item() {
    let dir = temp_dir("offset");
    let store = index(&dir);
    store.add_item(&item(0xA, Some(4096))).unwrap();
    store.add_item(&item(0xB, None)).unwrap();
    store
        .set_state(
            ItemId(0xA),
            StateName::Archived,
            1,
            None,
            None,
            Timestamp(2),
        )
        .unwrap();
    // Recovery adds both again, now knowing B's place.
    store.add_item(&item(0xA, None)).unwrap();
    store.add_item(&item(0xB, Some(8192))).unwrap();
    let reader = Reader::open(&dir).unwrap();
    assert_eq!(log_offset(&reader, 0xA), Some(4096));
    assert_eq!(log_offset(&reader, 0xB), Some(8192));
    assert_eq!(log_offset(&reader, 0xC), None);
    assert_eq!(
        store.progress(ItemId(0xA)).unwrap().unwrap().state,
        StateName::Archived
    );
    assert_eq!(store.newest_item_id().unwrap(), Some(ItemId(0xB)));
}

/// Items per state, counted the long way.
fn counted(db: &Connection) -> Vec<(StateName, u64)> {
    db.prepare("SELECT state, COUNT(*) FROM items GROUP BY state ORDER BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(|row| {
            let (state, n) = row.unwrap();
            (state.parse().unwrap(), n as u64)
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Whatever the engine and an operator do to items, in whatever order, the kept counts
    /// are what counting every item says.
    #[test]
    fn kept_counts_always_match_the_items(
        ops in proptest::collection::vec((0u8..3, 0u64..4, 0usize..6), 0..40),
    ) {
        const STATES: [StateName; 6] = [StateName::Waiting, StateName::Archiving, StateName::Archived, StateName::Failed, StateName::Merged, StateName::NotArchived];
        let dir = temp_dir("counts");
        let store = index(&dir);
        for (op, id, state) in ops {
            match op {
                0 => store.add_item(&item(id, None)).unwrap(),
                1 => store.set_state(ItemId(id), STATES[state], 1, None, None, Timestamp(2)).unwrap(),
                _ => {
                    request_retry(&dir, ItemId(id)).unwrap();
                }
            }
            let reader = Reader::open(&dir).unwrap();
            let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
            proptest::prop_assert_eq!(reader.counts().unwrap(), counted(&db));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_database_from_before_the_log_offset_column_is_migrated() {
    let dir = temp_dir("migrate");
    {
        let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE TABLE items (id TEXT PRIMARY KEY, definition TEXT NOT NULL, sender TEXT NOT NULL,
             recipient TEXT NOT NULL, received_at INTEGER NOT NULL, size INTEGER NOT NULL,
             state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, reason TEXT,
             merged_into TEXT, content_sha256 TEXT, updated_at INTEGER NOT NULL);
             INSERT INTO items (id, definition, sender, recipient, received_at, size, state, updated_at)
             VALUES ('00000000000000AA', 'bench', '<>', 'j@x', 1, 10, 'waiting', 1);
             CREATE TABLE archived (id TEXT PRIMARY KEY, message_id TEXT, sent_date TEXT,
             subject TEXT, sender TEXT, format TEXT NOT NULL, content_sha256 TEXT NOT NULL,
             archived_at INTEGER NOT NULL);",
        )
        .unwrap();
    }
    let store = index(&dir);
    store.add_item(&item(0xAA, Some(12))).unwrap();
    let reader = Reader::open(&dir).unwrap();
    assert_eq!(log_offset(&reader, 0xAA), Some(12));
    // Counts kept from then on start from what was there.
    assert_eq!(reader.counts().unwrap(), [(StateName::Waiting, 1)]);
    // Archived messages gained their on-behalf-of column.
    let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
    db.prepare("SELECT on_behalf_of FROM archived").unwrap();
    // Opening again does not try to add the column (or the counts) twice.
    drop(store);
    let store = index(&dir);
    store.add_item(&item(0xBB, None)).unwrap();
    assert_eq!(reader.counts().unwrap(), [(StateName::Waiting, 2)]);
}

#[test]
fn retry_takes_any_item_that_is_not_settled_or_held() {
    let dir = temp_dir("retry");
    let store = index(&dir);
    for (id, state) in [
        (1, StateName::Failed),
        (2, StateName::Waiting),
        (3, StateName::Archived),
        (4, StateName::Held),
        (5, StateName::Merged),
    ] {
        store.add_item(&item(id, None)).unwrap();
        store
            .set_state(ItemId(id), state, 1, Some("x"), None, Timestamp(2))
            .unwrap();
    }
    assert!(request_retry(&dir, ItemId(1)).unwrap(), "failed");
    assert!(request_retry(&dir, ItemId(2)).unwrap(), "waiting");
    assert!(!request_retry(&dir, ItemId(2)).unwrap(), "asked already");
    assert!(!request_retry(&dir, ItemId(3)).unwrap(), "archived");
    assert!(!request_retry(&dir, ItemId(4)).unwrap(), "held");
    assert!(!request_retry(&dir, ItemId(5)).unwrap(), "merged");
    assert!(!request_retry(&dir, ItemId(9)).unwrap(), "unknown");
    assert_eq!(store.retry_requests().unwrap(), [ItemId(1), ItemId(2)]);
}

/// The steps of the plan SQLite makes for `sql` with `values`.
fn query_plan(
    db: &Connection,
    sql: &str,
    values: impl IntoIterator<Item = rusqlite::types::Value>,
) -> Vec<String> {
    let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    stmt.query_map(rusqlite::params_from_iter(values), |r| {
        r.get::<_, String>(3)
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The plan SQLite makes for `find`'s statement.
fn plan(dir: &std::path::Path, query: &crate::Query) -> Vec<String> {
    let (sql, values) = super::reader::find_sql(query);
    let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
    query_plan(&db, &sql, values)
}

#[test]
fn find_is_answered_from_indexes_never_a_scan_of_the_archive() {
    let dir = temp_dir("find-plan");
    drop(index(&dir));
    let by = |f: fn(&mut crate::Query)| {
        let mut q = crate::Query {
            limit: Some(100),
            ..Default::default()
        };
        f(&mut q);
        q
    };
    for query in [
        by(|q| q.recipient = Some("legal@contoso.com".into())),
        by(|q| q.sender = Some("alice@contoso.com".into())),
        by(|q| q.message_id = Some("1@contoso.com".into())),
        by(|q| {
            q.recipient = Some("legal@contoso.com".into());
            q.since = Some(Timestamp(1));
        }),
    ] {
        let plan = plan(&dir, &query);
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{query:?}: {plan:#?}"
        );
        assert!(plan.iter().any(|step| step.contains("USING")), "{plan:#?}");
    }
}

/// Archives message `id` (for definition `definition`, received at `at` seconds) with these
/// recipients and sender.
fn archive_one(
    store: &mut SqliteIndex,
    id: u64,
    definition: &str,
    at: u64,
    sender: &str,
    recipients: &[&str],
    content: u8,
) {
    store
        .add_item(&NewItem {
            id: ItemId(id),
            definition,
            sender: "<>",
            recipient: "journaling@journal.example.com",
            received_at: Timestamp(at * 1000),
            size: 10,
            log_offset: None,
        })
        .unwrap();
    let archival = crate::Archival {
        sender: Some(sender.into()),
        content: Some(mailjournal_queue::ContentHash([content; 32])),
        ..archival(&format!("{id}@x"), recipients)
    };
    store
        .archive(ItemId(id), &archival, 1, Timestamp(at * 1000))
        .unwrap();
}

#[test]
fn retention_deletes_what_expired_keeps_what_is_held_and_leaves_shared_content() {
    use crate::{Expiry, Holds};
    let dir = temp_dir("retention");
    let mut store = index(&dir);
    archive_one(&mut store, 1, "short", 10, "a@x", &["legal@x"], 1);
    archive_one(&mut store, 2, "short", 20, "b@x", &["bob@x"], 2);
    archive_one(&mut store, 3, "short", 30, "c@x", &["carol@x"], 3);
    archive_one(&mut store, 4, "short", 40, "d@x", &["dave@x"], 9);
    archive_one(&mut store, 5, "long", 10, "e@x", &["erin@x"], 9); // shares 4's content
    archive_one(&mut store, 6, "short", 99, "f@x", &["frank@x"], 6); // not expired yet
    let expiries = [Expiry {
        definition: "short".into(),
        received_before: Timestamp(50_000),
    }];
    let holds = Holds {
        addresses: vec!["LEGAL@x".into()],
        items: vec![ItemId(3)],
    };
    assert!(
        store.any_held(&[ItemId(1)], &holds).unwrap(),
        "by address, any case"
    );
    assert!(
        store.any_held(&[ItemId(2), ItemId(3)], &holds).unwrap(),
        "by item"
    );
    assert!(!store.any_held(&[ItemId(2), ItemId(4)], &holds).unwrap());
    let deleted = store
        .delete_expired(&expiries, &holds, 1, Timestamp(60_000))
        .unwrap();
    assert_eq!(
        deleted,
        [ItemId(2)],
        "at most one a round, oldest first, held skipped"
    );
    let deleted = store
        .delete_expired(&expiries, &holds, 100, Timestamp(60_000))
        .unwrap();
    assert_eq!(deleted, [ItemId(4)]);
    assert!(
        store
            .delete_expired(&expiries, &holds, 100, Timestamp(60_000))
            .unwrap()
            .is_empty()
    );
    let reader = Reader::open(&dir).unwrap();
    for (id, kept) in [
        (1, true),
        (2, false),
        (3, true),
        (4, false),
        (5, true),
        (6, true),
    ] {
        assert_eq!(reader.item(ItemId(id)).unwrap().is_some(), kept, "{id}");
        assert_eq!(reader.message(ItemId(id)).unwrap().is_some(), kept, "{id}");
    }
    assert!(
        reader
            .find(&crate::Query {
                recipient: Some("bob@x".into()),
                ..Default::default()
            })
            .unwrap()
            .is_empty()
    );
    // 2's content is garbage; 4's is still 5's. It survives a restart until removed.
    drop(store);
    let store = index(&dir);
    let garbage = store.content_garbage().unwrap();
    assert_eq!(garbage, [mailjournal_queue::ContentHash([2; 32])]);
    store.content_removed(&garbage[0]).unwrap();
    assert!(store.content_garbage().unwrap().is_empty());
    let counts = reader.retention().unwrap();
    assert_eq!(counts.deleted_messages, 2);
    assert_eq!(counts.last_deletion_at, Some(Timestamp(60_000)));
    // Ids go on after the newest, deleted or not.
    assert_eq!(store.newest_item_id().unwrap(), Some(ItemId(6)));
}

#[test]
fn content_is_alive_while_any_item_refers_to_it_also_in_a_database_that_had_archived_content() {
    use crate::{Expiry, Holds};
    use mailjournal_queue::ContentHash;
    let dir = temp_dir("archived-content");
    let mut store = index(&dir);
    archive_one(&mut store, 1, "short", 10, "a@x", &["legal@x"], 7);
    archive_one(&mut store, 2, "short", 20, "b@x", &["bob@x"], 7);
    drop(store);
    // As an earlier version left it: the second index on archived messages' content, and
    // (written by none, but not assumed) an archived message whose item lacks the hash.
    {
        let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE INDEX archived_content ON archived(content_sha256);
             UPDATE items SET content_sha256 = NULL WHERE id = '0000000000000002';",
        )
        .unwrap();
    }
    let mut store = index(&dir);
    let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
    let exists = |sql: &str| db.prepare(sql).unwrap().exists([]).unwrap();
    assert!(!exists(
        "SELECT 1 FROM sqlite_master WHERE name = 'archived_content'"
    ));
    assert!(exists(
        "SELECT 1 FROM items WHERE id = '0000000000000002' AND content_sha256 IS NOT NULL"
    ));
    // The reference check is one index lookup, never a scan of the items.
    let plan = query_plan(
        &db,
        "SELECT 1 FROM items WHERE content_sha256 = ?1",
        ["x".to_owned().into()],
    );
    assert!(
        plan.iter()
            .all(|step| step.contains("USING") && step.contains("items_content")),
        "{plan:#?}"
    );
    let expire_before = |store: &mut SqliteIndex, seconds: u64| {
        let expiries = [Expiry {
            definition: "short".into(),
            received_before: Timestamp(seconds * 1000),
        }];
        store
            .delete_expired(&expiries, &Holds::default(), 10, Timestamp(99_000))
            .unwrap()
    };
    // 1 goes; its content is still 2's.
    assert_eq!(expire_before(&mut store, 15), [ItemId(1)]);
    assert!(store.content_garbage().unwrap().is_empty());
    // 2 goes too: now nothing refers to it.
    assert_eq!(expire_before(&mut store, 25), [ItemId(2)]);
    assert_eq!(store.content_garbage().unwrap(), [ContentHash([7; 32])]);
}

#[test]
fn writing_an_item_builds_no_temporary_table_and_the_oldest_pending_look_uses_its_index() {
    let dir = temp_dir("pending-index");
    drop(index(&dir));
    // As earlier versions made it.
    {
        let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
        db.execute_batch(&format!(
            "DROP INDEX items_pending; \
             CREATE INDEX items_pending ON items(received_at) WHERE state NOT IN ({});",
            super::index::settled_sql()
        ))
        .unwrap();
    }
    let store = index(&dir);
    store.add_item(&item(7, None)).unwrap();
    let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
    let opcodes = |sql: &str| -> Vec<String> {
        db.prepare(&format!("EXPLAIN {sql}"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for sql in [
        "INSERT INTO items (id, definition, sender, recipient, received_at, size, state, updated_at) \
         VALUES ('0000000000000008', 'd', '<>', 'j@x', 1, 1, 'waiting', 1)",
        "UPDATE items SET state = 'archived' WHERE id = '0000000000000007'",
    ] {
        let ops = opcodes(sql);
        assert!(
            !ops.iter().any(|op| op == "OpenEphemeral"),
            "{sql}: {ops:?}"
        );
    }
    let plan = query_plan(
        &db,
        &format!(
            "SELECT MIN(received_at) FROM items WHERE {}",
            super::index::pending_sql()
        ),
        [],
    );
    assert!(
        plan.iter().any(|step| step.contains("items_pending")),
        "{plan:#?}"
    );
    let reader = Reader::open(&dir).unwrap();
    assert_eq!(reader.oldest_pending().unwrap(), Some(Timestamp(1)));
}

/// An archived form with one Bcc recipient per address.
fn archival(message_id: &str, recipients: &[&str]) -> crate::Archival {
    crate::Archival {
        message_id: Some(message_id.into()),
        sent_date: None,
        subject: None,
        sender: Some("sender@example.com".into()),
        on_behalf_of: None,
        format: "eml".into(),
        content: Some(mailjournal_queue::ContentHash([7; 32])),
        recipients: recipients
            .iter()
            .map(|a| crate::ArchivedRecipient {
                address: (*a).into(),
                field: "bcc".into(),
                expanded: None,
                forwarded: None,
            })
            .collect(),
        mailboxes: Vec::new(),
    }
}

#[test]
fn an_item_whose_writes_fail_part_way_leaves_nothing_half_done_in_a_batch_or_alone() {
    let dir = temp_dir("atomic");
    let mut store = index(&dir);
    for id in [0xA, 0xB, 0xC] {
        store.add_item(&item(id, None)).unwrap();
    }
    // A real failure after the item's first write (its archived row): SQLite refuses this
    // recipient.
    let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse AFTER INSERT ON archived_recipients \
         WHEN NEW.address = 'refused@example.com' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
    )
    .unwrap();
    let archived = |store: &SqliteIndex, id: &str| store.find_archived(id, None).unwrap();

    // In a batch: the item that failed poisons it, and nothing of the batch stays, not even
    // the item archived before it.
    store.begin_batch().unwrap();
    store
        .archive(
            ItemId(0xA),
            &archival("a@x", &["bob@example.com"]),
            1,
            Timestamp(5),
        )
        .unwrap();
    let failed = store.archive(
        ItemId(0xB),
        &archival("b@x", &["bob@example.com", "refused@example.com"]),
        1,
        Timestamp(5),
    );
    assert!(failed.is_err());
    assert!(matches!(
        store.end_batch(),
        Err(crate::ArchiveError::BatchRolledBack)
    ));
    for (id, mid) in [(0xA, "a@x"), (0xB, "b@x")] {
        assert_eq!(archived(&store, mid), None);
        let progress = store.progress(ItemId(id)).unwrap().unwrap();
        assert_eq!(progress.state, StateName::Waiting);
        assert_eq!(progress.content, None);
    }
    // The next batch is a fresh one and commits.
    store.begin_batch().unwrap();
    store
        .archive(
            ItemId(0xA),
            &archival("a@x", &["bob@example.com"]),
            1,
            Timestamp(6),
        )
        .unwrap();
    store.end_batch().unwrap();
    assert_eq!(archived(&store, "a@x"), Some(ItemId(0xA)));

    // Alone (no batch): the item's own transaction is rolled back.
    assert!(
        store
            .archive(
                ItemId(0xC),
                &archival("c@x", &["refused@example.com"]),
                1,
                Timestamp(7),
            )
            .is_err()
    );
    assert_eq!(archived(&store, "c@x"), None);
    assert_eq!(
        store.progress(ItemId(0xC)).unwrap().unwrap().state,
        StateName::Waiting
    );
    db.execute_batch("DROP TRIGGER refuse").unwrap();
    store
        .archive(
            ItemId(0xC),
            &archival("c@x", &["bob@example.com"]),
            1,
            Timestamp(8),
        )
        .unwrap();
    assert_eq!(archived(&store, "c@x"), Some(ItemId(0xC)));
    assert_eq!(
        counted(&db),
        vec![(StateName::Archived, 2), (StateName::Waiting, 1)]
    );
}

#[test]
fn a_match_attempt_is_recorded_on_a_waiting_item_and_brings_any_other_back_to_waiting() {
    let dir = temp_dir("attempt");
    let store = index(&dir);
    store.add_item(&item(0xA, None)).unwrap();
    store.add_item(&item(0xB, None)).unwrap();
    store
        .set_state(
            ItemId(0xA),
            StateName::Waiting,
            1,
            Some("archive storage: disk full (tried again automatically)"),
            None,
            Timestamp(2),
        )
        .unwrap();
    store
        .set_state(
            ItemId(0xB),
            StateName::Held,
            0,
            Some("held"),
            None,
            Timestamp(2),
        )
        .unwrap();
    store
        .record_attempt(
            ItemId(0xA),
            2,
            Some("Alice <alice@contoso.com>"),
            Timestamp(3),
        )
        .unwrap();
    store
        .record_attempt(ItemId(0xB), 1, None, Timestamp(3))
        .unwrap();
    for (id, attempts) in [(0xA, 2), (0xB, 1)] {
        let progress = store.progress(ItemId(id)).unwrap().unwrap();
        assert_eq!(progress.state, StateName::Waiting);
        assert_eq!(progress.attempts, attempts);
        assert_eq!(progress.reason, None, "the earlier reason is gone");
    }
    let reader = Reader::open(&dir).unwrap();
    assert_eq!(
        reader.item(ItemId(0xA)).unwrap().unwrap().sender,
        "Alice <alice@contoso.com>"
    );
    let db = Connection::open(dir.join("archive.sqlite3")).unwrap();
    let kept: Vec<(String, i64)> = db
        .prepare("SELECT state, n FROM item_counts WHERE n > 0 ORDER BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kept,
        [("waiting".to_owned(), 2)],
        "counts follow both paths"
    );
}
