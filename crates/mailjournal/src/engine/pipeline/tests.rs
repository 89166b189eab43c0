//! The pipeline on real spool files and a real embedded archive, driven step by step with
//! the time each step is given.

use super::*;
use mailjournal_archive::embedded::{self, Reader, request_retry};
use mailjournal_definition::{Config, JournalType, provision};
use mailjournal_queue::ContentHash;
use mailjournal_spool::{Envelope, SystemClock};

const JOURNAL: &str = "journaling@journal.contoso.com";

fn wall_clock() -> Timestamp {
    SystemClock.now()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mailjournal-pipeline-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spool/data")).unwrap();
    dir
}

fn state(data_dir: &std::path::Path, id: ItemId) -> StateName {
    Reader::open(data_dir)
        .unwrap()
        .item(id)
        .unwrap()
        .unwrap()
        .state
}

/// A record of the spool for item `id`, accepted for `journal`.
fn record_for(id: u64, received_at: u64, journal: &str) -> Record {
    Record {
        id: ItemId(id),
        envelope: Envelope::new(journal, Timestamp(received_at)),
        size: 0,
        sha256: ContentHash([0; 32]),
        inline_data: false,
        location: Location::default(),
    }
}

fn record(id: u64, received_at: u64) -> Record {
    record_for(id, received_at, JOURNAL)
}

/// A pipeline over an existing data directory with this configuration.
fn pipeline_with(dir: &std::path::Path, config: &Config) -> Pipeline {
    let (policy, _) = Policy::from_config(config).unwrap();
    let (index, content) = embedded::open(dir).unwrap();
    Pipeline::new(
        Arc::new(policy),
        Box::new(index),
        Box::new(content),
        SpoolReader::new(&dir.join("spool")),
        Arc::new(SystemClock),
        Duration::seconds(1),
    )
}

/// A pipeline over a fresh data directory with the starter definition taking EML items.
fn eml_pipeline(name: &str) -> (std::path::PathBuf, Pipeline) {
    let dir = temp_dir(name);
    let pipeline = eml_pipeline_over(&dir);
    (dir, pipeline)
}

/// A pipeline over an existing data directory, as a new process would open it.
fn eml_pipeline_over(dir: &std::path::Path) -> Pipeline {
    let mut config = provision::starter_config("contoso.com").unwrap();
    config.journal[0].journal_type = JournalType::Eml;
    pipeline_with(dir, &config)
}

#[test]
fn an_archived_form_borrowed_from_the_item_is_a_span_of_it_not_a_copy() {
    use std::borrow::Cow;
    let bytes = b"Received: x\r\n\r\noriginal message".to_vec();
    assert!(matches!(
        span_in(&bytes, Cow::Borrowed(&bytes[15..])),
        Span::Part(range) if range == (15..bytes.len())
    ));
    assert!(matches!(
        span_in(&bytes, Cow::Borrowed(&bytes[..])),
        Span::Part(range) if range == (0..bytes.len())
    ));
    let elsewhere = b"original message".to_vec();
    assert!(matches!(
        span_in(&bytes, Cow::Borrowed(&elsewhere)),
        Span::Own(own) if own == elsewhere
    ));
    assert!(matches!(
        span_in(&bytes, Cow::Owned(b"decoded".to_vec())),
        Span::Own(own) if own == b"decoded"
    ));
}

/// The hash of an item's archived form, as the index recorded it.
fn content_hash(data_dir: &std::path::Path, id: ItemId) -> ContentHash {
    Reader::open(data_dir)
        .unwrap()
        .item(id)
        .unwrap()
        .unwrap()
        .content
        .unwrap()
}

#[test]
fn archived_content_lost_in_a_crash_is_archived_again_from_the_spool() {
    let (dir, mut pipeline) = eml_pipeline("lost-content");
    let now = wall_clock();
    let id = now.0 << 20;
    spool_message(&dir, id, "lost@contoso.com");
    let record = record(id, now.0);
    pipeline.accept(&record, true);
    for s in 0..4 {
        pipeline.step(now + Duration::seconds(s));
    }
    let name = ItemId(id);
    assert_eq!(state(&dir, name), StateName::Archived);
    drop(pipeline);
    // A power loss before the content was made durable: none of what the packs got since
    // came back.
    let hash = content_hash(&dir, name);
    assert_eq!(
        Reader::open(&dir).unwrap().content_durable(&hash).unwrap(),
        Some(false)
    );
    for pack in std::fs::read_dir(dir.join("archive/packs")).unwrap() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(pack.unwrap().path());
        file.unwrap().set_len(0).unwrap();
    }

    let mut pipeline = eml_pipeline_over(&dir);
    let reader = Reader::open(&dir).unwrap();
    assert!(reader.content(&hash).is_err(), "checked at open");
    pipeline.recover(|on_record| on_record(record.clone()));
    let restored = reader.content(&hash).unwrap();
    assert_eq!(hash_of(&restored), hash);
    assert_eq!(
        state(&dir, name),
        StateName::Archived,
        "settled, not archived twice"
    );
}

/// A minimal EML message with this Message-ID.
fn eml(message_id: &str) -> Vec<u8> {
    format!(
        "From: alice@contoso.com\r\nTo: bob@contoso.com\r\nMessage-ID: <{message_id}>\r\n\r\nhi\r\n"
    )
    .into_bytes()
}

/// Puts an EML message in the spool as item `id`'s own data file.
fn spool_message(dir: &std::path::Path, id: u64, message_id: &str) {
    std::fs::write(
        dir.join("spool/data").join(ItemId(id).to_string()),
        eml(message_id),
    )
    .unwrap();
}

#[test]
fn sessions_are_told_to_pause_while_due_items_wait_and_not_once_they_are_done() {
    let (dir, mut pipeline) = eml_pipeline("in-flow");
    let in_flow = pipeline.in_flow();
    let now = wall_clock();
    // Received a minute ago (a backlog, or a restart after an outage): due for a minute.
    let id = now.0 << 20;
    spool_message(&dir, id, "late@contoso.com");
    pipeline.accept(&record(id, now.0 - 60_000), true);
    pipeline.publish_lag();
    assert_eq!(in_flow.delay(), Some(super::super::in_flow::IN_FLOW_DELAY));
    // Its first attempt done, the next is a second away: nothing is late.
    pipeline.step(now);
    pipeline.publish_lag();
    assert_eq!(in_flow.delay(), None);
    // Fresh items due now are not a backlog.
    let fresh = id + 1;
    spool_message(&dir, fresh, "fresh@contoso.com");
    pipeline.accept(&record(fresh, wall_clock().0), true);
    pipeline.publish_lag();
    assert_eq!(in_flow.delay(), None);
}

#[test]
fn settled_items_leave_memory_and_failed_ones_stay() {
    let (dir, mut pipeline) = eml_pipeline("prune");
    let now = wall_clock();
    let (kept, lost) = (now.0 << 20, (now.0 << 20) + 1);
    spool_message(&dir, kept, "p@contoso.com");
    // `lost` has no data file: it fails.
    pipeline.accept(&record(kept, now.0), true);
    pipeline.accept(&record(lost, now.0), true);
    for s in 0..3 {
        pipeline.step(now + Duration::seconds(s));
    }
    assert_eq!(state(&dir, ItemId(kept)), StateName::Archived);
    assert_eq!(state(&dir, ItemId(lost)), StateName::Failed);
    assert_eq!(pipeline.queue.len(), 2, "nothing pruned within a minute");

    pipeline.step(now + Duration::minutes(2));
    assert_eq!(pipeline.queue.len(), 1);
    assert!(pipeline.queue.item(ItemId(lost)).is_some());
    assert_eq!(
        pipeline.journals.keys().collect::<Vec<_>>(),
        [&ItemId(lost)]
    );
}

#[test]
fn handed_bytes_are_parsed_without_reading_the_spool_and_then_released() {
    let (dir, mut pipeline) = eml_pipeline("handed");
    let handoff = pipeline.handoff();
    let now = wall_clock();
    let id = now.0 << 20;
    let bytes = eml("h@contoso.com");
    let data = handoff.offer(Some(bytes.clone()));
    assert_eq!(data.as_deref(), Some(&bytes[..]));
    // Nothing is on disk: only the handed bytes can make the first attempt succeed.
    pipeline.take(&record(id, now.0), data);
    pipeline.step(now);
    assert_eq!(state(&dir, ItemId(id)), StateName::Waiting);
    pipeline.release_handed();
    assert_eq!(handoff.in_flight.load(Ordering::Acquire), 0);
    // A later match attempt needs only the key kept from the first parse ...
    pipeline.step(now + Duration::minutes(2));
    assert_eq!(state(&dir, ItemId(id)), StateName::Waiting);
    assert_eq!(
        Reader::open(&dir)
            .unwrap()
            .item(ItemId(id))
            .unwrap()
            .unwrap()
            .attempts,
        2
    );
    // ... archiving (after the third) reads from the spool, which has nothing: it fails.
    pipeline.step(now + Duration::minutes(4));
    assert_eq!(state(&dir, ItemId(id)), StateName::Failed);
}

#[test]
fn after_a_restart_items_resume_where_they_were() {
    let (dir, mut pipeline) = eml_pipeline("resume");
    let now = wall_clock();
    let (waiting, failed) = (now.0 << 20, (now.0 << 20) + 1);
    spool_message(&dir, waiting, "w@contoso.com");
    let records = [record(waiting, now.0), record(failed, now.0)];
    for record in &records {
        pipeline.accept(record, true);
    }
    pipeline.step(now);
    assert_eq!(state(&dir, ItemId(waiting)), StateName::Waiting);
    assert_eq!(state(&dir, ItemId(failed)), StateName::Failed);
    drop(pipeline);

    // A new process over the same data directory.
    let mut pipeline = eml_pipeline_over(&dir);
    pipeline.recover(|on_record| records.iter().cloned().for_each(on_record));
    let item = pipeline.queue.item(ItemId(waiting)).unwrap();
    assert_eq!(
        item.attempts, 1,
        "the attempt made before the restart counts"
    );
    assert!(matches!(
        pipeline.queue.item(ItemId(failed)).unwrap().state,
        mailjournal_queue::ItemState::Failed { .. }
    ));
    for s in 0..3 {
        pipeline.step(now + Duration::seconds(s));
    }
    // Two attempts left (one a second apart here), then archived; the failed one waits.
    assert_eq!(state(&dir, ItemId(waiting)), StateName::Archived);
    assert_eq!(state(&dir, ItemId(failed)), StateName::Failed);
}

#[test]
fn a_stopping_pipeline_leaves_due_items_for_the_next_start() {
    let (dir, mut pipeline) = eml_pipeline("stopping");
    let now = wall_clock();
    let ids: Vec<u64> = (0..(ROUND as u64 + 5)).map(|n| (now.0 << 20) + n).collect();
    for &id in &ids {
        pipeline.accept(&record(id, now.0), true);
    }
    let stop = pipeline.stop_flag();
    stop.store(true, Ordering::Release);
    pipeline.step(now);
    // No round runs once the flag is set: every item is still waiting, unattempted.
    for &id in &ids {
        let item = pipeline.queue.item(ItemId(id)).unwrap();
        assert_eq!(item.attempts, 0);
    }
    assert_eq!(state(&dir, ItemId(ids[0])), StateName::Waiting);
    stop.store(false, Ordering::Release);
    pipeline.step(now);
    // Otherwise every round runs, more than one here (the data files are missing: all
    // fail at their first attempt).
    for &id in &ids {
        assert_eq!(state(&dir, ItemId(id)), StateName::Failed);
    }
}

/// Commits an EML message through the spool, as a session would; the record as the spool's
/// consumer receives it.
fn commit_eml(
    spool: &mailjournal_spool::Spool,
    committed: &std::sync::mpsc::Receiver<Record>,
    message_id: &str,
    now: Timestamp,
) -> Record {
    let mut writer = spool.begin();
    writer.write(&eml(message_id)).unwrap();
    let done = spool
        .commit(writer, Envelope::new(JOURNAL, now))
        .wait()
        .unwrap();
    let record = committed.recv().unwrap();
    assert_eq!(record.id, done.id);
    record
}

#[test]
fn a_sealed_segment_retires_once_every_item_in_it_is_settled() {
    let (dir, mut pipeline) = eml_pipeline("retire");
    // A new segment for every commit after the first.
    let limits = mailjournal_spool::SpoolOptions {
        segment_bytes: 1,
        ..Default::default()
    };
    let (tx, committed) = std::sync::mpsc::channel();
    let (spool, _) = mailjournal_spool::Spool::open(
        &dir.join("spool"),
        limits.clone(),
        &mut |_| {},
        Box::new(move |record, _| {
            let _ = tx.send(record);
        }),
    )
    .unwrap();
    pipeline.retire_from(spool.segments());
    let now = wall_clock();
    let early = commit_eml(&spool, &committed, "early@contoso.com", now);
    let late = commit_eml(&spool, &committed, "late@contoso.com", now);
    let active = commit_eml(&spool, &committed, "active@contoso.com", now);
    let live = |segment: u64| dir.join(format!("spool/log/{segment:020}.log")).exists();

    pipeline.take(&early, None);
    for s in 0..4 {
        pipeline.step(now + Duration::seconds(s));
    }
    assert_eq!(state(&dir, early.id), StateName::Archived);
    // Read from the log (CRC-checked), archived as received: under the spool's own hash.
    assert_eq!(content_hash(&dir, early.id), early.sha256);
    assert_eq!(early.sha256, hash_of(&eml("early@contoso.com")));
    let durable = || {
        Reader::open(&dir)
            .unwrap()
            .content_durable(&early.sha256)
            .unwrap()
    };
    assert_eq!(durable(), Some(false), "not durable before retirement");
    // `late` arrives only now: at the next prune it has had one attempt of three.
    pipeline.take(&late, None);
    pipeline.take(&active, None);
    let prune = now + Duration::minutes(2);
    assert!(pipeline.step(prune));
    pipeline.retire_settled_segments(prune);
    assert_eq!(state(&dir, late.id), StateName::Waiting);
    assert!(!live(early.location.segment), "every item settled: retired");
    assert_eq!(durable(), Some(true), "durable once retired");
    assert!(live(late.location.segment), "an item still waits");
    assert!(
        live(active.location.segment),
        "the committer still appends to it"
    );

    for s in 1..4 {
        pipeline.step(prune + Duration::seconds(s));
    }
    let next = prune + Duration::minutes(2);
    assert!(pipeline.step(next));
    pipeline.retire_settled_segments(next);
    assert_eq!(state(&dir, late.id), StateName::Archived);
    assert!(!live(late.location.segment) && live(active.location.segment));
    drop(spool);

    // The next start reads only the live segment; retired items stay readable.
    let mut recovered = Vec::new();
    let (_spool, _) = mailjournal_spool::Spool::open(
        &dir.join("spool"),
        limits,
        &mut |r| recovered.push(r.id),
        Box::new(|_, _| {}),
    )
    .unwrap();
    assert_eq!(recovered, [active.id]);
    assert_eq!(
        mailjournal_spool::read_as_received(
            &dir.join("spool"),
            early.id,
            early.location.log_offset
        )
        .unwrap(),
        eml("early@contoso.com")
    );
}

#[test]
fn the_handoff_stops_at_its_limit() {
    let handoff = Handoff::default();
    let big = vec![0u8; Handoff::LIMIT / 2 + 1];
    assert!(handoff.offer(Some(big.clone())).is_some());
    assert!(handoff.offer(Some(big.clone())).is_none(), "over the limit");
    handoff.release(big.len());
    assert!(handoff.offer(Some(big)).is_some());
}

#[test]
fn a_failed_item_stays_failed_until_an_operator_retries_it() {
    let (dir, mut pipeline) = eml_pipeline("retry");

    let now = wall_clock();
    let id = ItemId(now.0 << 20);
    let record = record(now.0 << 20, now.0);
    // The data file is missing: the first attempt fails and the item stays failed.
    pipeline.accept(&record, true);
    pipeline.step(now);
    assert_eq!(state(&dir, id), StateName::Failed);
    pipeline.step(now + Duration::minutes(10));
    assert_eq!(state(&dir, id), StateName::Failed, "no automatic retry");

    spool_message(&dir, now.0 << 20, "r@contoso.com");
    assert!(request_retry(&dir, id).unwrap());
    assert!(
        !request_retry(&dir, id).unwrap(),
        "only a failed item can be retried"
    );
    let later = now + Duration::minutes(11);
    pipeline.take_retries(later);
    for s in 0..3 {
        pipeline.step(later + Duration::seconds(s));
    }
    assert_eq!(state(&dir, id), StateName::Archived);
}

/// Configurations for the identity tests: definitions named by their service address, in
/// the order given (`a` is the starter definition, every one takes EML items).
fn config_of(definitions: &[&str]) -> Config {
    let mut config = provision::starter_config("contoso.com").unwrap();
    let mut template = config.journal[0].clone();
    template.journal_type = JournalType::Eml;
    config.journal = definitions
        .iter()
        .map(|name| {
            let mut d = template.clone();
            d.description = format!("definition {name}");
            d.service_email_address = format!("journal-{name}@journal.contoso.com");
            d
        })
        .collect();
    config
}

fn definition_of(dir: &std::path::Path, id: ItemId) -> (StateName, String, Option<String>) {
    let item = Reader::open(dir).unwrap().item(id).unwrap().unwrap();
    (item.state, item.definition, item.reason)
}

/// Accepts item `id` for definition `b` under `before`, stops before it is archived, then
/// recovers and works it under `after`.
fn received_for_b_then_restarted_with(
    name: &str,
    before: &[&str],
    after: &[&str],
) -> (std::path::PathBuf, ItemId, Pipeline) {
    let dir = temp_dir(name);
    let t = wall_clock();
    let id = t.0 << 20;
    spool_message(&dir, id, &format!("{name}@contoso.com"));
    let record = record_for(id, t.0, "journal-b@journal.contoso.com");
    let mut pipeline = pipeline_with(&dir, &config_of(before));
    pipeline.accept(&record, true);
    drop(pipeline);
    let mut pipeline = pipeline_with(&dir, &config_of(after));
    pipeline.recover(|on_record| on_record(record.clone()));
    for s in 0..4 {
        pipeline.step(t + Duration::seconds(s));
    }
    (dir, ItemId(id), pipeline)
}

#[test]
fn a_spooled_item_keeps_its_definition_when_definitions_are_reordered_or_inserted() {
    for (name, after) in [
        ("reordered", &["b", "a"][..]),
        ("inserted", &["a", "c", "b"][..]),
    ] {
        let (dir, id, _) = received_for_b_then_restarted_with(name, &["a", "b"], after);
        assert_eq!(
            definition_of(&dir, id),
            (StateName::Archived, "definition b".to_owned(), None),
            "{name}"
        );
    }
}

#[test]
fn a_spooled_item_of_a_removed_definition_is_held_visibly_then_archived_once_it_is_back() {
    let (dir, id, mut pipeline) =
        received_for_b_then_restarted_with("removed", &["a", "b"], &["a"]);
    let (state, definition, reason) = definition_of(&dir, id);
    assert_eq!(state, StateName::Held);
    assert_eq!(
        definition, "definition b",
        "named as received, not as the other definition"
    );
    assert!(
        reason.is_some_and(|r| r.contains("journal-b@journal.contoso.com")),
        "the reason names the address"
    );
    assert!(
        pipeline.queue.item(id).is_none(),
        "never worked under another definition"
    );
    assert!(pipeline.pinned.contains(&0), "its segment is never retired");
    pipeline.step(wall_clock() + Duration::minutes(5));
    assert_eq!(definition_of(&dir, id).0, StateName::Held);
    drop(pipeline);

    // The definition configured again (in another position): archived under it.
    let mut pipeline = pipeline_with(&dir, &config_of(&["c", "b"]));
    let record = record_for(id.0, wall_clock().0, "journal-b@journal.contoso.com");
    pipeline.recover(|on_record| on_record(record.clone()));
    let t = wall_clock();
    for s in 0..4 {
        pipeline.step(t + Duration::seconds(s));
    }
    assert_eq!(
        definition_of(&dir, id),
        (StateName::Archived, "definition b".to_owned(), None)
    );
}

#[test]
fn a_record_from_before_definitions_were_kept_by_address_is_placed_by_its_recipient() {
    let dir = temp_dir("legacy-record");
    let t = wall_clock();
    let id = t.0 << 20;
    spool_message(&dir, id, "legacy@contoso.com");
    let mut record = record_for(id, t.0, "journal-b@journal.contoso.com");
    record.envelope.journal = None;
    let mut pipeline = pipeline_with(&dir, &config_of(&["b", "a"]));
    pipeline.accept(&record, true);
    for s in 0..4 {
        pipeline.step(t + Duration::seconds(s));
    }
    assert_eq!(definition_of(&dir, ItemId(id)).1, "definition b");
}

#[test]
fn while_the_store_fails_status_shows_and_ages_what_the_index_never_recorded() {
    let dir = temp_dir("unrecorded");
    // An empty index, as after the transaction that would have recorded the items failed.
    drop(embedded::open(&dir).unwrap());
    let (tx, committed) = std::sync::mpsc::channel();
    let (spool, _) = mailjournal_spool::Spool::open(
        &dir.join("spool"),
        mailjournal_spool::SpoolOptions::default(),
        &mut |_| {},
        Box::new(move |record, _| {
            let _ = tx.send(record);
        }),
    )
    .unwrap();
    let now = wall_clock();
    let oldest = commit_eml(
        &spool,
        &committed,
        "a@contoso.com",
        Timestamp(now.0 - 30_000),
    );
    commit_eml(
        &spool,
        &committed,
        "b@contoso.com",
        Timestamp(now.0 - 5_000),
    );
    let status = || crate::status::StatusReport::read(&dir, 0, now).unwrap();

    // The store works: a record the index lacks is one on its way, not shown.
    let mut health =
        super::super::health::HealthFile::open(&super::super::health_path(&dir)).unwrap();
    assert_eq!(status().counts.get(&StateName::Waiting), None);
    assert_eq!(status().oldest_pending_age, None);

    health.failing("No space left on device", now);
    let failing = status();
    assert_eq!(failing.counts.get(&StateName::Waiting), Some(&2));
    assert_eq!(failing.items.len(), 2);
    assert!(failing.items.iter().any(|i| i.id == oldest.id));
    // The archive lag a monitoring system sees counts them too.
    assert_eq!(failing.oldest_pending_age, Some(Duration::seconds(30)));
}
