//! Driver for `spool_recovery`. The input is the whole content of a spool's only log segment,
//! as a torn write, disk damage or anyone with access to the disk could leave it.
//!
//! Invariants: recovery never panics and fails only on IO, never on content; every record it
//! hands over reads back (as `get --as-received` reads it) with exactly the size and SHA-256
//! the record states; a second recovery cuts nothing more and hands over the same records.

#![allow(clippy::expect_used)]

use mailjournal_spool::{Record, Spool, SpoolOptions, read_as_received, sha256_of};

/// Opens (so recovers) the spool in `root`, returning the records it handed over and the
/// bytes it cut from a torn tail.
fn recover(root: &std::path::Path) -> (Vec<Record>, u64) {
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

pub(crate) fn run(data: &[u8]) {
    let root = std::env::temp_dir().join(format!("spool-recovery-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let segment = mailjournal_spool::first_segment_path(&root);
    std::fs::create_dir_all(segment.parent().expect("segments have a directory"))
        .expect("scratch directory");
    std::fs::write(&segment, data).expect("scratch segment");

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
    let (again, cut) = recover(&root);
    assert_eq!(cut, 0, "the first recovery left a torn tail");
    let ids = |records: &[Record]| records.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first), "recovery is not stable");
    let _ = std::fs::remove_dir_all(&root);
}
