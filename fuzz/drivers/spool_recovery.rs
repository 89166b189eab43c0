//! Driver for `spool_recovery`. A log segment of a few committed records (written by the
//! spool itself, once) is cut at a point the input chooses and the rest of the input written
//! after it: a torn write, disk damage or anyone with access to the disk could leave that.
//! The input is `[at: u16 little-endian][bytes...]`; the log is the template's first `at`
//! bytes (all of it when `at` is past its end, or the input shorter than two bytes) followed
//! by `bytes`.
//!
//! Invariants, two-sided: recovery never panics and fails only on IO, never on content;
//! every record whose frame ends before the cut is handed over, in commit order (so a
//! recovery that hands over too little fails, not only one that hands over damage); every
//! record handed over reads back (as `get --as-received` reads it) with exactly the size and
//! SHA-256 it states; a second recovery cuts nothing more and hands over the same records.

#![allow(clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

use mailjournal_queue::{ItemId, Timestamp};
use mailjournal_spool::{Envelope, Record, Spool, SpoolOptions, read_as_received, sha256_of};

/// Opens (so recovers) the spool in `root`, returning the records it handed over and the
/// bytes it cut from a torn tail.
fn recover(root: &Path) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let (spool, recovery) = Spool::open(
        root,
        SpoolOptions::default(),
        &mut |r| records.push(r),
        Box::new(|_, _| {}),
    )
    .expect("recovery fails only on IO");
    drop(spool);
    (records, recovery.truncated_bytes)
}

/// The template: a log of committed records, and for each its id and where its frame ends.
struct Template {
    log: Vec<u8>,
    frames: Vec<(ItemId, usize)>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("spool-recovery-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (spool, _) = Spool::open(
            &root,
            SpoolOptions::default(),
            &mut |_| {},
            Box::new(|_, _| {}),
        )
        .expect("a fresh spool");
        let mut starts = Vec::new();
        for n in 0..4u8 {
            let mut message = spool.begin();
            let body: Vec<u8> = (0..u32::from(n) * 61 + 5).map(|i| (i as u8) ^ n).collect();
            message.write(&body).expect("in memory");
            let envelope = Envelope::new("journaling@journal.contoso.com", Timestamp(1));
            let committed = spool.commit(message, envelope).wait().expect("committed");
            let offset = committed.location.log_offset.expect("small: inline");
            starts.push((committed.id, offset as usize));
        }
        drop(spool);
        let log = std::fs::read(mailjournal_spool::first_segment_path(&root)).expect("the log");
        let _ = std::fs::remove_dir_all(&root);
        let ends = starts.iter().skip(1).map(|s| s.1).chain([log.len()]);
        let frames = starts.iter().map(|s| s.0).zip(ends).collect();
        Template { log, frames }
    })
}

pub(crate) fn run(data: &[u8]) {
    let template = template();
    let (at, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (usize::MAX, &[][..]),
    };
    let at = at.min(template.log.len());
    let mut log = template.log[..at].to_vec();
    log.extend_from_slice(rest);

    let root = std::env::temp_dir().join(format!("spool-recovery-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let segment = mailjournal_spool::first_segment_path(&root);
    std::fs::create_dir_all(segment.parent().expect("segments have a directory"))
        .expect("scratch directory");
    std::fs::write(&segment, &log).expect("scratch segment");

    let (first, _) = recover(&root);
    for record in &first {
        let bytes = read_as_received(&root, record.id, record.location.log_offset)
            .expect("a record handed over reads back");
        let (size, hash) = sha256_of(&mut bytes.as_slice()).expect("hashing a slice");
        assert_eq!(
            (size, hash),
            (record.size, record.sha256),
            "{} reads back changed",
            record.id
        );
    }
    let ids = |records: &[Record]| records.iter().map(|r| r.id).collect::<Vec<_>>();
    let handed = ids(&first);
    let intact: Vec<ItemId> = template
        .frames
        .iter()
        .filter(|&&(_, end)| end <= at)
        .map(|&(id, _)| id)
        .collect();
    assert!(
        handed.starts_with(&intact),
        "records before the cut not all handed over: {handed:?} against {intact:?}"
    );
    let (again, cut) = recover(&root);
    assert_eq!(cut, 0, "the first recovery left a torn tail");
    assert_eq!(ids(&again), handed, "recovery is not stable");
    let _ = std::fs::remove_dir_all(&root);
}
