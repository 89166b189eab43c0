//! `find` on an archive of 1 000 000 archived messages: the messages one address received
//! (100 of them, some as Bcc), answered from the index. The archive is built once, through
//! the embedded index's own API, under `target/bench-archive-1m/` and reused by later runs
//! (delete it to rebuild; building takes about a minute).
//!
//! Each message has three recipients drawn from 50 000 addresses, one of them a Bcc; the
//! address `needle@contoso.com` is a recipient of exactly 100 messages spread over the whole
//! archive (a `to` line in half of them, a `bcc` line in the other half).

// A bench panics on a broken setup: that is its failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use mailjournal::archive::embedded::{Reader, SqliteIndex};
use mailjournal::archive::{Archival, ArchiveIndex, ArchivedRecipient, NewItem, Query};
use mailjournal::queue::{ContentHash, ItemId, Timestamp};
use std::hint::black_box;

const MESSAGES: u64 = 1_000_000;
const NEEDLE: &str = "needle@contoso.com";
const NEEDLE_EVERY: u64 = MESSAGES / 100;

fn build(dir: &Path) {
    let done = dir.join("complete");
    if done.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut index = SqliteIndex::open(&dir.join("archive.sqlite3")).unwrap();
    let address = |n: u64| format!("user{}@contoso.com", n % 50_000);
    for chunk in 0..MESSAGES / 10_000 {
        index.begin_batch().unwrap();
        for n in chunk * 10_000..(chunk + 1) * 10_000 {
            let id = ItemId((1_700_000_000_000 + n) << 20);
            let at = Timestamp(1_700_000_000_000 + n * 1000);
            index
                .add_item(&NewItem {
                    id,
                    definition: "bench",
                    sender: "<>",
                    recipient: "journaling@journal.contoso.com",
                    received_at: at,
                    size: 20_000,
                    log_offset: None,
                })
                .unwrap();
            let line = |address: String, field: &str| ArchivedRecipient {
                address,
                field: field.to_owned(),
                expanded: None,
                forwarded: None,
            };
            let mut recipients = vec![
                line(address(n * 7), "to"),
                line(address(n * 13 + 1), "cc"),
                line(address(n * 31 + 2), "bcc"),
            ];
            if n.is_multiple_of(NEEDLE_EVERY) {
                let field = if (n / NEEDLE_EVERY).is_multiple_of(2) {
                    "to"
                } else {
                    "bcc"
                };
                recipients[if field == "to" { 0 } else { 2 }] = line(NEEDLE.to_owned(), field);
            }
            let archival = Archival {
                message_id: Some(format!("{n}@contoso.com")),
                sent_date: Some(n.to_string()),
                subject: Some(format!("message {n}")),
                sender: Some(address(n * 3)),
                on_behalf_of: None,
                format: "eml".into(),
                content: Some(ContentHash([(n % 251) as u8; 32])),
                recipients,
                mailboxes: Vec::new(),
            };
            index.archive(id, &archival, 3, at).unwrap();
        }
        index.end_batch().unwrap();
    }
    std::fs::write(done, b"").unwrap();
}

fn find(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-archive-1m");
    build(&dir);
    let reader = Reader::open(&dir).unwrap();
    let query = Query {
        recipient: Some(NEEDLE.to_owned()),
        ..Query::default()
    };
    assert_eq!(reader.find(&query).unwrap().len(), 100);
    let mut group = c.benchmark_group("archive_find_1m");
    group.bench_function("find_recipient_100_of_1m", |b| {
        b.iter(|| black_box(reader.find(&query).unwrap()))
    });
    // What `find` prints: each message with its recipients and reports.
    group.bench_function("find_and_load_100_of_1m", |b| {
        b.iter(|| {
            let ids = reader.find(&query).unwrap();
            let messages: Vec<_> = ids
                .into_iter()
                .map(|id| reader.message(id).unwrap().unwrap())
                .collect();
            black_box(messages)
        })
    });
    let by_sender = Query {
        sender: Some("user3@contoso.com".to_owned()),
        limit: Some(100),
        ..Query::default()
    };
    group.bench_function("find_sender_limit_100_of_1m", |b| {
        b.iter(|| black_box(reader.find(&by_sender).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, find);
criterion_main!(benches);
