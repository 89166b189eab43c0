//! The spool's own tests: each works in a directory of its own, with the spool in `spool/`
//! below it (as a server's data directory holds it).

use super::*;
use frame::FRAME_HEAD;
use std::fs::OpenOptions;
use std::io::Write;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mailjournal-spool-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn envelope() -> Envelope {
    Envelope::new("journaling@journal.contoso.com", SystemClock.now())
}

/// Options under which every batch after the first starts a new segment.
fn one_batch_per_segment() -> SpoolOptions {
    SpoolOptions {
        segment_bytes: 1,
        ..SpoolOptions::default()
    }
}

/// Opens the spool, collecting the records recovery hands over.
fn open(dir: &Path) -> (Spool, Recovery, Vec<Record>) {
    open_with(dir, SpoolOptions::default())
}

fn open_with(dir: &Path, options: SpoolOptions) -> (Spool, Recovery, Vec<Record>) {
    let mut records = Vec::new();
    let (spool, recovery) = Spool::open(
        &dir.join("spool"),
        options,
        &mut |r| records.push(r),
        Box::new(|_, _| {}),
    )
    .unwrap();
    (spool, recovery, records)
}

/// A message's bytes as received, as `get --as-received` reads them.
fn read_data(dir: &Path, id: ItemId, log_offset: Option<u64>) -> io::Result<Vec<u8>> {
    read_as_received(&dir.join("spool"), id, log_offset)
}

fn usage(dir: &Path) -> io::Result<Usage> {
    read::usage(&dir.join("spool"))
}

/// The first log segment, where a fresh spool appends.
fn first_segment(dir: &Path) -> PathBuf {
    dir.join("spool/log/00000000000000000000.log")
}

async fn commit_bytes(spool: &Spool, body: &[u8]) -> Committed {
    let mut w = spool.begin();
    w.write(body).unwrap();
    spool.commit(w, envelope()).await.unwrap()
}

#[tokio::test]
async fn a_commit_waits_for_a_message_still_being_received() {
    let dir = temp_dir("linger");
    let limits = SpoolOptions {
        max_commit_linger: linger::LINGER_CEILING,
        ..SpoolOptions::default()
    };
    let (spool, _, _) = open_with(&dir, limits);
    let spool = Arc::new(spool);
    let mut second = spool.begin();
    second.write(b"Subject: second\r\n\r\n").unwrap();
    let first = tokio::spawn({
        let spool = spool.clone();
        async move { commit_bytes(&spool, b"Subject: first\r\n\r\n").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !first.is_finished(),
        "committed without waiting for the message being received"
    );
    let second = spool.commit(second, envelope()).await.unwrap();
    let first = first.await.unwrap();
    assert!(second.location.log_offset > first.location.log_offset);
}

#[test]
fn ids_go_on_after_the_newest_the_archive_holds_whatever_the_clock_says() {
    let dir = temp_dir("ids-after");
    let (spool, _, _) = open(&dir);
    // As if the clock had gone back an hour since the archive's newest item.
    let newest = (SystemClock.now().0 + 3_600_000) << 20;
    spool.ids_after(ItemId(newest));
    assert_eq!(spool.begin().id(), ItemId(newest + 1));
    assert_eq!(spool.begin().id(), ItemId(newest + 2));
    spool.ids_after(ItemId(1));
    assert_eq!(spool.begin().id(), ItemId(newest + 3), "never back");
}

#[tokio::test]
async fn commit_then_recover_then_torn_tail_and_orphans() {
    let dir = temp_dir("recover");
    let committed_id;
    {
        let (spool, recovery, records) = open(&dir);
        assert!(records.is_empty());
        assert_eq!(recovery.committed, 0);
        let mut w = spool.begin();
        committed_id = w.id();
        w.write(b"Subject: a\r\n\r\nbody\r\n").unwrap();
        let r = spool.commit(w, envelope()).await.unwrap();
        assert_eq!(r.size, 20);
        // An unacknowledged large message: its data file written, never committed.
        let mut orphan = spool.begin();
        orphan.write(&vec![b'x'; INLINE_LIMIT + 1]).unwrap();
        // Its data file stays behind, as after a crash (a writer dropped removes it).
        let finished = orphan.finish();
        finished.file.unwrap().flush().unwrap();
    }
    // A torn record at the end of the log.
    let log = first_segment(&dir);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);
    let (_spool, recovery, records) = open(&dir);
    assert_eq!((recovery.committed, records.len()), (1, 1));
    assert_eq!(records[0].id, committed_id);
    assert_eq!(recovery.truncated_bytes, 7);
    assert_eq!(recovery.discarded.len(), 1);
    let id = committed_id;
    assert_eq!(
        read_data(&dir, id, None).unwrap(),
        b"Subject: a\r\n\r\nbody\r\n"
    );
    let offset = records[0].location.log_offset;
    assert!(offset.is_some(), "a small message is inline in its record");
    assert_eq!(
        read_data(&dir, id, offset).unwrap(),
        b"Subject: a\r\n\r\nbody\r\n"
    );
}

#[tokio::test]
async fn a_damaged_frame_mid_log_is_set_aside_not_truncated() {
    let dir = temp_dir("midlog");
    let mut ids = Vec::new();
    {
        let (spool, _, _) = open(&dir);
        for body in [&b"first message"[..], b"second message"] {
            let mut w = spool.begin();
            w.write(body).unwrap();
            ids.push(spool.commit(w, envelope()).await.unwrap().id);
        }
    }
    let log = first_segment(&dir);
    let mut bytes = fs::read(&log).unwrap();
    let first_len = 12 + frame::u32_at(&bytes, 0) as usize + frame::u32_at(&bytes, 4) as usize;
    bytes[first_len - 1] ^= 0xff; // flip the last data byte of the first frame
    fs::write(&log, &bytes).unwrap();
    let (_spool, recovery, records) = open(&dir);
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, ids[1]);
    assert_eq!(
        recovery.quarantined,
        ["log-00000000000000000000-frame-at-0"]
    );
    let set_aside = dir.join("spool/quarantine/log-00000000000000000000-frame-at-0");
    assert_eq!(fs::read(set_aside).unwrap(), bytes[..first_len]);
}

#[tokio::test]
async fn a_damaged_tail_of_a_sealed_segment_is_set_aside_then_cut() {
    let dir = temp_dir("sealed-tail");
    let first = {
        let (spool, _, _) = open_with(&dir, one_batch_per_segment());
        let first = commit_bytes(&spool, b"Subject: first\r\n\r\n").await;
        commit_bytes(&spool, b"Subject: second\r\n\r\n").await;
        first
    };
    let sealed = first_segment(&dir);
    let intact = fs::metadata(&sealed).unwrap().len();
    let junk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    OpenOptions::new()
        .append(true)
        .open(&sealed)
        .unwrap()
        .write_all(&junk)
        .unwrap();
    let (_spool, recovery, records) = open(&dir);
    assert_eq!(records.len(), 2, "both acknowledged records are recovered");
    assert_eq!(records[0].id, first.id);
    assert_eq!(
        recovery.truncated_bytes, 0,
        "not the torn tail of an append"
    );
    let name = format!("log-00000000000000000000-tail-at-{intact}");
    assert_eq!(recovery.quarantined, std::slice::from_ref(&name));
    assert_eq!(
        fs::read(dir.join("spool/quarantine").join(name)).unwrap(),
        junk
    );
    assert_eq!(fs::metadata(&sealed).unwrap().len(), intact);
}

#[tokio::test]
async fn a_header_claiming_gigabytes_is_a_torn_tail_not_an_allocation() {
    let dir = temp_dir("huge-header");
    let id = {
        let (spool, _, _) = open(&dir);
        let mut w = spool.begin();
        w.write(b"kept").unwrap();
        spool.commit(w, envelope()).await.unwrap().id
    };
    let log = first_segment(&dir);
    let kept = fs::metadata(&log).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    // json and data lengths of 4 GiB - 1 each, then a few bytes.
    f.write_all(&[0xff; 8]).unwrap();
    f.write_all(&[0; 20]).unwrap();
    drop(f);
    let (_spool, recovery, records) = open(&dir);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, id);
    assert_eq!(recovery.truncated_bytes, 28);
    assert_eq!(fs::metadata(&log).unwrap().len(), kept);
}

#[tokio::test]
async fn corrupt_data_is_quarantined() {
    let dir = temp_dir("corrupt");
    let id;
    {
        let (spool, _, _) = open(&dir);
        let mut w = spool.begin();
        id = w.id();
        w.write(&vec![b'h'; INLINE_LIMIT + 10]).unwrap();
        spool.commit(w, envelope()).await.unwrap();
    }
    fs::write(dir.join("spool/data").join(id.to_string()), b"HELLO").unwrap();
    let (_spool, recovery, records) = open(&dir);
    assert!(records.is_empty());
    assert_eq!(recovery.quarantined, [id.to_string()]);
    assert!(dir.join("spool/quarantine").join(id.to_string()).exists());
}

/// A commit log and the bytes of each message it commits, by id.
type Template = (Vec<u8>, std::collections::HashMap<ItemId, Vec<u8>>);

/// A commit log holding a few committed messages, built once.
fn template_log() -> &'static Template {
    static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = temp_dir("template");
        let mut messages = std::collections::HashMap::new();
        {
            let (spool, _, _) = open(&dir);
            for n in 0..6usize {
                let body: Vec<u8> = (0..n * 97).map(|i| (i * 31 + n) as u8).collect();
                let mut w = spool.begin();
                w.write(&body).unwrap();
                let committed = spool.commit(w, envelope()).wait().unwrap();
                messages.insert(committed.id, body);
            }
        }
        let log = fs::read(first_segment(&dir)).unwrap();
        let _ = fs::remove_dir_all(&dir);
        (log, messages)
    })
}

/// Each frame of a log, in order: the id of its record and where the frame ends.
fn frame_ends(log: &[u8]) -> Vec<(ItemId, usize)> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos + FRAME_HEAD <= log.len() {
        let json = frame::u32_at(log, pos) as usize;
        let data = frame::u32_at(log, pos + 4) as usize;
        let record: Record =
            serde_json::from_slice(&log[pos + FRAME_HEAD..pos + FRAME_HEAD + json]).unwrap();
        pos += FRAME_HEAD + json + data;
        frames.push((record.id, pos));
    }
    frames
}

#[test]
fn an_undamaged_log_is_handed_over_whole() {
    let (log, messages) = template_log();
    let dir = temp_dir("undamaged");
    fs::create_dir_all(dir.join("spool/log")).unwrap();
    fs::write(first_segment(&dir), log).unwrap();
    let (_spool, recovery, records) = open(&dir);
    let frames = frame_ends(log);
    assert_eq!(frames.len(), messages.len());
    assert_eq!(
        records.iter().map(|r| r.id).collect::<Vec<_>>(),
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    assert_eq!(recovery.committed, messages.len() as u64);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Whatever happened to the log (bytes changed, a tail cut, garbage appended),
    /// recovery does not panic, hands over every record that ends before the first damaged
    /// byte (in commit order), nothing but records that were committed, each with exactly its
    /// bytes, and leaves a log that recovers the same way again with nothing more to cut.
    #[test]
    fn recovery_hands_over_every_intact_record_and_only_those(
        changes in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..6),
        keep in proptest::prelude::any::<proptest::sample::Index>(),
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
    ) {
        let (log, messages) = template_log();
        let mut damaged = log.clone();
        for (at, byte) in changes {
            let at = at.index(damaged.len());
            damaged[at] = byte;
        }
        damaged.truncate(keep.index(damaged.len() + 1));
        // The first byte that is not what was committed: every frame before it is intact.
        let first_damage = log
            .iter()
            .zip(&damaged)
            .position(|(a, b)| a != b)
            .unwrap_or(damaged.len());
        damaged.extend_from_slice(&garbage);
        let undamaged: Vec<ItemId> = frame_ends(log)
            .into_iter()
            .filter(|&(_, end)| end <= first_damage)
            .map(|(id, _)| id)
            .collect();
        let dir = temp_dir("damaged");
        fs::create_dir_all(dir.join("spool/data")).unwrap();
        // Written where logs were before segments: opening moves it to segment 0.
        fs::write(dir.join("spool/commit.log"), &damaged).unwrap();
        let first = {
            let (_spool, _, records) = open(&dir);
            records
        };
        for record in &first {
            let expected = messages.get(&record.id);
            proptest::prop_assert!(expected.is_some(), "{} was never committed", record.id);
            let bytes = read_data(&dir, record.id, record.location.log_offset).unwrap();
            proptest::prop_assert_eq!(Some(&bytes), expected);
        }
        let ids = |rs: &[Record]| rs.iter().map(|r| r.id).collect::<Vec<_>>();
        let handed = ids(&first);
        proptest::prop_assert_eq!(
            &handed[..undamaged.len().min(handed.len())],
            &undamaged[..],
            "an intact record before the damage was not handed over"
        );
        let (_spool, again, records) = open(&dir);
        proptest::prop_assert_eq!(again.truncated_bytes, 0);
        proptest::prop_assert_eq!(ids(&records), ids(&first));
        let _ = fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn full_segments_seal_and_retired_ones_are_kept_but_not_recovered() {
    let dir = temp_dir("segments");
    let tiny = one_batch_per_segment();
    let large = vec![b'L'; INLINE_LIMIT + 5];
    let (first, second, third) = {
        let (spool, _, _) = open_with(&dir, tiny.clone());
        let first = commit_bytes(&spool, b"first").await;
        let second = commit_bytes(&spool, &large).await;
        let third = commit_bytes(&spool, b"third").await;
        let segments = spool.segments();
        assert_eq!(
            segments.sealed(),
            [(first.location.segment, 1), (second.location.segment, 1)],
            "the active segment is never offered for retirement"
        );
        assert!(
            first.location.segment < second.location.segment
                && second.location.segment < third.location.segment
        );
        segments.retire(first.location.segment).unwrap();
        segments.retire(second.location.segment).unwrap();
        assert!(segments.retire(third.location.segment).is_err(), "active");
        assert!(segments.sealed().is_empty());
        (first, second, third)
    };
    assert!(
        dir.join("spool/kept/data")
            .join(second.id.to_string())
            .exists()
    );
    assert!(!dir.join("spool/data").join(second.id.to_string()).exists());
    // Start-up reads only the live segment; kept messages are still readable as received.
    let (spool, recovery, records) = open_with(&dir, tiny.clone());
    assert_eq!(
        records.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&third.id]
    );
    assert!(recovery.discarded.is_empty() && recovery.quarantined.is_empty());
    assert_eq!(
        read_data(&dir, first.id, first.location.log_offset).unwrap(),
        b"first"
    );
    assert_eq!(read_data(&dir, first.id, None).unwrap(), b"first");
    assert_eq!(read_data(&dir, second.id, None).unwrap(), large);
    assert_eq!(
        read_data(&dir, third.id, third.location.log_offset).unwrap(),
        b"third"
    );
    let usage = usage(&dir).unwrap();
    assert_eq!((usage.live_segments, usage.kept_segments), (1, 2));
    let size = |path: PathBuf| fs::metadata(path).unwrap().len();
    assert_eq!(
        usage.kept_bytes,
        size(segments::path(
            &dir.join("spool"),
            segments::Place::Kept,
            first.location.segment
        )) + size(segments::path(
            &dir.join("spool"),
            segments::Place::Kept,
            second.location.segment
        )) + large.len() as u64
    );
    // New records never reuse the offsets of kept ones.
    let fourth = commit_bytes(&spool, b"fourth").await;
    assert!(fourth.location.log_offset > third.location.log_offset);
    assert_eq!(
        read_data(&dir, fourth.id, fourth.location.log_offset).unwrap(),
        b"fourth"
    );
}

#[tokio::test]
async fn a_retirement_cut_short_by_a_crash_loses_nothing() {
    let dir = temp_dir("retire-crash");
    let tiny = one_batch_per_segment();
    let large = vec![b'q'; INLINE_LIMIT + 1];
    let committed = {
        let (spool, _, _) = open_with(&dir, tiny.clone());
        let committed = commit_bytes(&spool, &large).await;
        commit_bytes(&spool, b"next").await;
        committed
    };
    // The crash came after the data file moved and before the segment did.
    fs::rename(
        dir.join("spool/data").join(committed.id.to_string()),
        dir.join("spool/kept/data").join(committed.id.to_string()),
    )
    .unwrap();
    let (spool, recovery, records) = open_with(&dir, tiny.clone());
    assert_eq!(records.len(), 2);
    assert!(recovery.discarded.is_empty() && recovery.quarantined.is_empty());
    assert_eq!(read_data(&dir, committed.id, None).unwrap(), large);
    // And the retirement completes when it is tried again.
    spool.segments().retire(committed.location.segment).unwrap();
    assert_eq!(read_data(&dir, committed.id, None).unwrap(), large);
}

/// A file-size limit makes an append fail part-way, as a full disk would; the limit holds
/// for the whole process, so the test runs itself again in a child process.
#[test]
fn a_failed_append_is_cut_off_and_the_spool_goes_on() {
    const NAME: &str = "tests::a_failed_append_is_cut_off_and_the_spool_goes_on";
    const CHILD: &str = "JOURNAL_SPOOL_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A write past the limit raises SIGXFSZ (25 on Linux), whose default action ends
        // the process: take it instead.
        let _xfsz =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25)).unwrap();
        let dir = temp_dir("append-fails");
        let (spool, _, _) = open(&dir);
        let before = commit_bytes(&spool, b"before").await;
        let committed = fs::metadata(first_segment(&dir)).unwrap().len();

        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let unlimited = getrlimit(Resource::Fsize);
        let tight = Rlimit {
            current: Some(committed + 64),
            maximum: unlimited.maximum,
        };
        setrlimit(Resource::Fsize, tight).unwrap();
        let mut w = spool.begin();
        w.write(&[b'x'; 4096]).unwrap();
        assert!(spool.commit(w, envelope()).await.is_err(), "past the limit");
        assert_eq!(
            fs::metadata(first_segment(&dir)).unwrap().len(),
            committed,
            "the part of the batch that was written is cut off"
        );
        setrlimit(Resource::Fsize, unlimited).unwrap();

        let after = commit_bytes(&spool, b"after").await;
        drop(spool);
        let (_spool, recovery, records) = open(&dir);
        assert_eq!(recovery.truncated_bytes, 0);
        let ids: Vec<_> = records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [before.id, after.id]);
    });
}

#[tokio::test]
async fn a_failed_sync_refuses_every_commit_until_a_restart_and_raises_the_alarm() {
    let dir = temp_dir("sync-fails");
    let (spool, _, _) = open(&dir);
    let before = commit_bytes(&spool, b"before").await;
    // A large message has a data file, whose directory is synced with its batch: with the
    // directory moved away, that sync fails for real.
    let mut w = spool.begin();
    w.write(&vec![b'x'; INLINE_LIMIT + 1]).unwrap();
    let data = segments::Place::Live.data_dir(&dir.join("spool"));
    let elsewhere = dir.join("elsewhere");
    fs::rename(&data, &elsewhere).unwrap();
    assert!(
        spool.commit(w, envelope()).await.is_err(),
        "acknowledged unsynced"
    );
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        spool.unusable().raised(),
    )
    .await
    .expect("the spool did not say it is unusable");
    fs::rename(&elsewhere, &data).unwrap();
    // Nothing more is taken, even with the directory back: after a failed sync the log
    // cannot be trusted until recovery has read it again.
    let mut w = spool.begin();
    w.write(b"refused").unwrap();
    assert!(
        spool.commit(w, envelope()).await.is_err(),
        "took a message after a failed sync"
    );
    drop(spool);

    let (spool, _, records) = open(&dir);
    assert_eq!(records.first().map(|r| r.id), Some(before.id));
    assert!(
        !records.iter().any(|r| r.size == 7),
        "a refused message was recovered"
    );
    let after = commit_bytes(&spool, b"after").await;
    assert_eq!(after.size, 5, "a restart makes the spool usable again");
}

#[tokio::test]
async fn another_process_can_list_the_live_records_without_recovering() {
    let dir = temp_dir("live-records");
    let (spool, _, _) = open_with(&dir, one_batch_per_segment());
    let first = commit_bytes(&spool, b"one").await;
    let second = commit_bytes(&spool, b"two").await;
    let listed = live_records(&dir.join("spool")).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|r| (r.id, r.location))
            .collect::<Vec<_>>(),
        [(first.id, first.location), (second.id, second.location)]
    );
    spool.segments().retire(first.location.segment).unwrap();
    let listed = live_records(&dir.join("spool")).unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [second.id]);
}

#[test]
fn every_committed_record_reaches_the_consumer_once_durable_with_inline_bytes_only() {
    let dir = temp_dir("consumer");
    let (tx, rx) = std::sync::mpsc::channel();
    let consumer = move |record: Record, inline: Option<Vec<u8>>| {
        let _ = tx.send((record, inline));
    };
    let (spool, _) = Spool::open(
        &dir.join("spool"),
        SpoolOptions::default(),
        &mut |_| {},
        Box::new(consumer),
    )
    .unwrap();
    let large = vec![b'L'; INLINE_LIMIT + 1];
    let mut committed = Vec::new();
    for body in [&b"small"[..], &large] {
        let mut w = spool.begin();
        w.write(body).unwrap();
        // Blocking, with no executor at all.
        committed.push(spool.commit(w, envelope()).wait().unwrap());
    }
    let (small, inline) = rx.recv().unwrap();
    assert_eq!(small.id, committed[0].id);
    assert_eq!(small.location, committed[0].location);
    assert_eq!(inline.as_deref(), Some(&b"small"[..]));
    assert_eq!(
        small.envelope.journal.as_deref(),
        Some("journaling@journal.contoso.com")
    );
    let (big, inline) = rx.recv().unwrap();
    assert_eq!((big.id, big.size), (committed[1].id, large.len() as u64));
    assert!(inline.is_none() && !big.inline_data);
    assert_eq!(big.location.log_offset, None);
    assert_eq!(
        SpoolReader::new(&dir.join("spool"))
            .read(big.id, big.location)
            .unwrap(),
        large
    );
    assert_eq!(sha256_of(&mut &large[..]).unwrap().1, big.sha256);
}

#[test]
fn a_writer_dropped_before_its_commit_leaves_no_data_file() {
    let dir = temp_dir("dropped");
    let (spool, _, _) = open(&dir);
    let mut w = spool.begin();
    w.write(&vec![b'x'; INLINE_LIMIT + 1]).unwrap();
    let file = dir.join("spool/data").join(w.id().to_string());
    assert!(file.exists(), "large: streamed to its own file");
    drop(w);
    assert!(!file.exists());
}

/// A clock a test sets.
#[derive(Debug)]
struct FixedClock(std::sync::atomic::AtomicU64);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

#[test]
fn queue_ids_take_their_time_from_the_clock_given_and_never_go_back() {
    let dir = temp_dir("clock");
    let clock = Arc::new(FixedClock(std::sync::atomic::AtomicU64::new(1_000)));
    let options = SpoolOptions {
        clock: clock.clone(),
        ..SpoolOptions::default()
    };
    let (spool, _, _) = open_with(&dir, options);
    assert_eq!(spool.begin().id(), ItemId(1_000 << 20));
    assert_eq!(
        spool.begin().id(),
        ItemId((1_000 << 20) + 1),
        "same millisecond"
    );
    clock.0.store(5_000, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(spool.begin().id(), ItemId(5_000 << 20));
    // Set back: ids go on from the last one handed out.
    clock.0.store(10, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(spool.begin().id(), ItemId((5_000 << 20) + 1));
}

#[test]
fn two_nodes_in_the_same_millisecond_hand_out_different_ids_in_arrival_order() {
    let clock = Arc::new(FixedClock(std::sync::atomic::AtomicU64::new(1_000)));
    let spool_of = |name: &str, node: u8| {
        let options = SpoolOptions {
            clock: clock.clone(),
            node,
            ..SpoolOptions::default()
        };
        open_with(&temp_dir(name), options).0
    };
    let (one, two) = (spool_of("node-1", 1), spool_of("node-2", 2));
    let a: Vec<ItemId> = (0..3).map(|_| one.begin().id()).collect();
    let b: Vec<ItemId> = (0..3).map(|_| two.begin().id()).collect();
    assert_eq!(a[0], ItemId(1_000 << 20 | 1 << 12));
    assert_eq!(b[2], ItemId(1_000 << 20 | 2 << 12 | 2));
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} {b:?}");
    assert!(a.iter().chain(&b).all(|id| id.to_string().len() == 16));
    // A later millisecond sorts after every id of an earlier one, whichever node.
    clock.0.store(1_001, std::sync::atomic::Ordering::Relaxed);
    assert!(one.begin().id() > b[2]);
    // Going on after another node's newest id: from the next millisecond.
    two.ids_after(ItemId(5_000 << 20 | 1 << 12 | 7));
    assert_eq!(two.begin().id(), ItemId(5_001 << 20 | 2 << 12));
    // After its own: the next counter.
    one.ids_after(ItemId(6_000 << 20 | 1 << 12 | 7));
    assert_eq!(one.begin().id(), ItemId(6_000 << 20 | 1 << 12 | 8));
    // 4 096 in one millisecond: the next borrows the next millisecond, never another
    // node's bits.
    let many: Vec<ItemId> = (0..5_000).map(|_| one.begin().id()).collect();
    assert!(many.iter().all(|id| (id.0 >> 12) & 0xff == 1));
    assert!(many.windows(2).all(|w| w[0] < w[1]));
}

/// A small tmpfs mounted for one test, unmounted when dropped; `None` where this process may
/// not mount (not root), which the test then says.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(name: &str, megabytes: u64) -> Option<SmallFs> {
        let dir = temp_dir(name);
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let stat = rustix::fs::statvfs(dir).unwrap();
    stat.f_bavail * stat.f_frsize
}

#[test]
fn the_free_space_check_stops_about_one_message_below_the_reserve_not_a_second_of_traffic() {
    let Some(fs) = SmallFs::mount("reserve", 48) else {
        assert!(
            std::env::var_os("MAILJOURNAL_REQUIRE_ROOT_TESTS").is_none(),
            "cannot mount a tmpfs, but the test is required"
        );
        println!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    const RESERVE: u64 = 24 * 1024 * 1024;
    const MESSAGE: usize = 512 * 1024;
    let options = SpoolOptions {
        reserve_bytes: RESERVE,
        ..SpoolOptions::default()
    };
    let (spool, _, _) = open_with(&fs.0, options);
    let body = vec![b'r'; MESSAGE];
    let mut accepted = 0;
    // As a session asks before MAIL: as fast as the file system takes it (well inside the
    // 100 ms between looks at it).
    while !spool.low_on_space() {
        let mut w = spool.begin();
        w.write(&body).unwrap();
        spool.commit(w, envelope()).wait().unwrap();
        accepted += 1;
        assert!(accepted < 100, "never low on space");
    }
    let free = free_bytes(&fs.0);
    assert!(
        free + MESSAGE as u64 + 64 * 1024 >= RESERVE,
        "{} KiB under the reserve after {accepted} messages",
        (RESERVE - free) / 1024
    );
    assert!(
        free < RESERVE + 2 * MESSAGE as u64,
        "refused long before the reserve"
    );
    assert!(accepted >= 40, "{accepted}");
}

#[tokio::test]
async fn a_kept_segment_is_deleted_with_its_data_files_and_a_second_delete_is_harmless() {
    let dir = temp_dir("delete-kept");
    let root = dir.join("spool");
    let large = vec![b'K'; INLINE_LIMIT + 3];
    let (spool, _, _) = open_with(&dir, one_batch_per_segment());
    let small = commit_bytes(&spool, b"small").await;
    let big = commit_bytes(&spool, &large).await;
    commit_bytes(&spool, b"active").await;
    let segments = spool.segments();
    segments.retire(small.location.segment).unwrap();
    segments.retire(big.location.segment).unwrap();
    assert_eq!(kept_items(&root, big.location.segment).unwrap(), [big.id]);
    assert!(root.join("kept/data").join(big.id.to_string()).exists());
    delete_kept(&root, big.location.segment).unwrap();
    assert!(!root.join("kept/data").join(big.id.to_string()).exists());
    assert!(kept_items(&root, big.location.segment).unwrap().is_empty());
    assert!(read_data(&dir, big.id, None).is_err(), "gone as received");
    delete_kept(&root, big.location.segment).unwrap();
    assert_eq!(
        read_data(&dir, small.id, small.location.log_offset).unwrap(),
        b"small"
    );
    assert_eq!(usage(&dir).unwrap().kept_segments, 1);
}

#[tokio::test]
async fn a_message_is_read_back_only_under_its_own_id_and_only_from_an_intact_frame() {
    let dir = temp_dir("read-back");
    let (spool, _, _) = open(&dir);
    let first = commit_bytes(&spool, b"Subject: first\r\n\r\none\r\n").await;
    let second = commit_bytes(&spool, b"Subject: second\r\n\r\ntwo\r\n").await;
    let mut reader = SpoolReader::new(&dir.join("spool"));
    assert_eq!(
        reader.read(second.id, second.location).unwrap(),
        b"Subject: second\r\n\r\ntwo\r\n"
    );
    // Another message's frame is not this one's bytes.
    let wrong = reader.read(first.id, second.location).unwrap_err();
    assert_eq!(wrong.kind(), io::ErrorKind::InvalidData);
    // A flipped byte in the stored message fails its frame's CRC.
    let offset = first.location.log_offset.unwrap() - first.location.segment;
    let log = first_segment(&dir);
    let mut bytes = fs::read(&log).unwrap();
    let at = bytes[offset as usize..]
        .windows(3)
        .position(|w| w == b"one")
        .unwrap();
    bytes[offset as usize + at] = b'0';
    fs::write(&log, bytes).unwrap();
    let mut reader = SpoolReader::new(&dir.join("spool"));
    let damaged = reader.read(first.id, first.location).unwrap_err();
    assert_eq!(damaged.kind(), io::ErrorKind::InvalidData);
}
