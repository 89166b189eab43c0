//! Against a real PostgreSQL and a real S3 store (Garage), started by
//! `.ci/shared-backend.sh`; without `MAILJOURNAL_TEST_POSTGRES_URL` the tests say they
//! skipped, unless `MAILJOURNAL_REQUIRE_SHARED` is set (as `.ci/run` sets it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use mailjournal_queue::{ItemId, StateName, Timestamp};

use super::{PgIndex, S3Content, SharedOptions, open};
use crate::{Archival, ArchiveIndex, ArchivedRecipient, ContentStore, NewItem, hash_of};

fn options(node: &str) -> Option<SharedOptions> {
    let Ok(url) = std::env::var("MAILJOURNAL_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("MAILJOURNAL_REQUIRE_SHARED").is_none(),
            "MAILJOURNAL_REQUIRE_SHARED is set but MAILJOURNAL_TEST_POSTGRES_URL is not"
        );
        eprintln!("shared backend not started: skipped (bash .ci/shared-backend.sh start)");
        return None;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    Some(SharedOptions {
        node_name: node.to_owned(),
        postgres_url: url,
        s3_endpoint: Some(var("MAILJOURNAL_TEST_S3_ENDPOINT")),
        s3_region: var("MAILJOURNAL_TEST_S3_REGION"),
        s3_bucket: var("MAILJOURNAL_TEST_S3_BUCKET"),
        s3_access_key_id: var("AWS_ACCESS_KEY_ID"),
        s3_secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
    })
}

/// Names unique to this run, so that runs and tests share one database without meeting.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

fn item(id: ItemId) -> NewItem<'static> {
    NewItem {
        id,
        definition: "Microsoft 365",
        sender: "<>",
        recipient: "journaling@journal.contoso.com",
        received_at: Timestamp(1_000),
        size: 100,
        log_offset: None,
    }
}

fn archival(message_id: &str, recipients: &[&str]) -> Archival {
    Archival {
        message_id: Some(message_id.to_owned()),
        sent_date: Some("Mon, 1 Dec 2026 10:00:00 +0000".to_owned()),
        subject: Some("Q3".to_owned()),
        sender: Some("alice@contoso.com".to_owned()),
        on_behalf_of: None,
        format: "envelope".to_owned(),
        content: Some(hash_of(message_id.as_bytes())),
        recipients: recipients
            .iter()
            .map(|a| ArchivedRecipient {
                address: (*a).to_owned(),
                field: "bcc".to_owned(),
                expanded: None,
                forwarded: None,
            })
            .collect(),
        mailboxes: Vec::new(),
    }
}

/// A second connection, for looking at what the index wrote.
fn psql(query: &str) -> String {
    let url = std::env::var("MAILJOURNAL_TEST_POSTGRES_URL").unwrap();
    let bin = std::env::var("MAILJOURNAL_SHARED_PG_BIN").unwrap_or_else(|_| "/usr/bin".into());
    let out = std::process::Command::new(format!("{bin}/psql"))
        .args([url.as_str(), "-At", "-c", query])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn id_of(node: u8, n: u64) -> ItemId {
    ItemId(((0x01A2_3000_0000_u64 + n) << 20) | (u64::from(node) << 12))
}

#[test]
fn archiving_is_idempotent_and_a_second_report_merges() {
    let Some(options) = options(&unique("node")) else {
        return;
    };
    let (mut index, _content) = open(&options).unwrap();
    assert!(index.node_number() >= 1);
    let n = index.node_number();
    let (a, b) = (id_of(n, 1), id_of(n, 2));
    let key = unique("mid");
    index.add_item(&item(a)).unwrap();
    index.add_item(&item(a)).unwrap();
    assert_eq!(
        index.progress(a).unwrap().unwrap().state,
        StateName::Waiting
    );
    let first = archival(&key, &["legal@contoso.com"]);
    assert_eq!(index.archive(a, &first, 1, Timestamp(2_000)).unwrap(), a);
    // Again after a crash before the engine recorded it: the same message, not a second.
    assert_eq!(index.archive(a, &first, 1, Timestamp(2_001)).unwrap(), a);
    index.add_item(&item(b)).unwrap();
    let second = archival(&key, &["ext-auditor@fabrikam.com"]);
    assert_eq!(index.archive(b, &second, 1, Timestamp(3_000)).unwrap(), a);
    let progress = index.progress(b).unwrap().unwrap();
    assert_eq!(progress.state, StateName::Merged);
    assert_eq!(
        index
            .find_archived(&key, first.sent_date.as_deref())
            .unwrap(),
        Some(a)
    );
    let recipients = psql(&format!(
        "SELECT string_agg(address, ',' ORDER BY address) FROM archived_recipients WHERE archived_id = '{a}'"
    ));
    assert_eq!(recipients, "ext-auditor@fabrikam.com,legal@contoso.com");
    assert_eq!(index.newest_item_id().unwrap(), Some(b));
    // A batch commits together; one that failed does not count as made.
    index.begin_batch().unwrap();
    index.add_item(&item(id_of(n, 3))).unwrap();
    index.end_batch().unwrap();
    assert!(index.progress(id_of(n, 3)).unwrap().is_some());
    index.begin_batch().unwrap();
    index.add_item(&item(id_of(n, 4))).unwrap();
    assert!(
        index
            .execute("SELECT no_such_column FROM items", &[])
            .is_err()
    );
    assert!(
        index.end_batch().is_err(),
        "a broken batch must not look committed"
    );
    assert!(index.progress(id_of(n, 4)).unwrap().is_none());
}

#[test]
fn two_nodes_archiving_one_message_at_once_end_as_one_item_with_every_recipient() {
    let Some(a_options) = options(&unique("mx1")) else {
        return;
    };
    let b_options = SharedOptions {
        node_name: unique("mx2"),
        ..a_options.clone()
    };
    let (a_index, _) = open(&a_options).unwrap();
    let (b_index, _) = open(&b_options).unwrap();
    assert_ne!(a_index.node_number(), b_index.node_number());
    let rounds = 100;
    let keys: Vec<String> = (0..rounds).map(|_| unique("race")).collect();
    let barrier = Arc::new(Barrier::new(2));
    let run = |mut index: PgIndex, who: &'static str, keys: Vec<String>, barrier: Arc<Barrier>| {
        std::thread::spawn(move || {
            let node = index.node_number();
            let mut targets = Vec::new();
            for (round, key) in keys.iter().enumerate() {
                let id = id_of(node, round as u64);
                let recipient = format!("{who}@contoso.com");
                barrier.wait();
                // As the pipeline does: in a batch, the key looked up first, then archived.
                index.begin_batch().unwrap();
                index.add_item(&item(id)).unwrap();
                let found = index.find_archived(key, archival(key, &[]).sent_date.as_deref());
                let target = match found.unwrap() {
                    Some(target) => {
                        index
                            .merge(id, target, &archival(key, &[&recipient]), 1, Timestamp(5))
                            .unwrap();
                        target
                    }
                    None => index
                        .archive(id, &archival(key, &[&recipient]), 1, Timestamp(5))
                        .unwrap(),
                };
                index.end_batch().unwrap();
                targets.push(target);
            }
            targets
        })
    };
    let a = run(a_index, "a", keys.clone(), barrier.clone());
    let b = run(b_index, "b", keys.clone(), barrier);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(
        a, b,
        "both nodes name the same archived message every round"
    );
    for (key, target) in keys.iter().zip(&a) {
        let rows = psql(&format!(
            "SELECT count(*) FROM archived WHERE message_id = '{key}'"
        ));
        assert_eq!(rows, "1", "{key}");
        let recipients = psql(&format!(
            "SELECT string_agg(address, ',' ORDER BY address) FROM archived_recipients WHERE archived_id = '{target}'"
        ));
        assert_eq!(recipients, "a@contoso.com,b@contoso.com", "{key}");
        let states = psql(&format!(
            "SELECT string_agg(state, ',' ORDER BY state) FROM items WHERE id = '{target}' OR merged_into = '{target}'"
        ));
        assert_eq!(states, "archived,merged", "{key}");
    }
}

#[test]
fn a_connection_lost_mid_batch_fails_the_batch_and_the_next_one_reconnects() {
    let Some(options) = options(&unique("node")) else {
        return;
    };
    let (index, _) = open(&options).unwrap();
    let n = index.node_number();
    index.begin_batch().unwrap();
    index.add_item(&item(id_of(n, 1))).unwrap();
    // What a database restart does to the session.
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mailjournal {}'",
        index.node_name()
    ));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let lost = index.add_item(&item(id_of(n, 2)));
    assert!(lost.is_err() || index.end_batch().is_err());
    let _ = index.end_batch();
    assert!(
        index.progress(id_of(n, 1)).unwrap().is_none(),
        "half a batch was kept"
    );
    // The next write reconnects.
    index.add_item(&item(id_of(n, 3))).unwrap();
    assert!(index.progress(id_of(n, 3)).unwrap().is_some());
}

#[test]
fn content_goes_to_the_bucket_and_back() {
    let Some(options) = options(&unique("node")) else {
        return;
    };
    let (_, content): (PgIndex, S3Content) = open(&options).unwrap();
    let (_, elsewhere): (PgIndex, S3Content) = open(&options).unwrap();
    let bytes = unique("content").into_bytes();
    let hash = hash_of(&bytes);
    assert!(!content.contains(&hash).unwrap());
    content.put(&hash, &bytes).unwrap();
    content.put(&hash, &bytes).unwrap();
    // Sent, perhaps not answered yet: this store already knows it.
    assert!(content.contains(&hash).unwrap());
    content.make_durable().unwrap();
    // Answered: in the bucket, for every node.
    assert!(elsewhere.contains(&hash).unwrap());
    assert_eq!(elsewhere.read(&hash).unwrap(), bytes);
    // More than the window: the oldest are settled to make room, nothing is lost.
    let many: Vec<Vec<u8>> = (0..super::IN_FLIGHT * 2 + 3)
        .map(|n| format!("{}-{n}", unique("window")).into_bytes())
        .collect();
    for bytes in &many {
        content.put(&hash_of(bytes), bytes).unwrap();
    }
    content.make_durable().unwrap();
    for bytes in &many {
        assert_eq!(elsewhere.read(&hash_of(bytes)).unwrap(), *bytes);
    }
    assert!(content.contains(&hash).unwrap());
    assert_eq!(content.read(&hash).unwrap(), bytes);
    content.remove(&hash).unwrap();
    content.remove(&hash).unwrap();
    assert!(!content.contains(&hash).unwrap());
    assert!(content.read(&hash).is_err());
}
