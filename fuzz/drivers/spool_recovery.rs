//! Driver for `spool_recovery`. The input is the whole content of a spool's only log segment,
//! as a torn write, disk damage or anyone with access to the disk could leave it.
//!
//! Invariants: recovery never panics and fails only on IO, never on content; every record it
//! hands over reads back with exactly the SHA-256 the record states; a second recovery cuts
//! nothing more and hands over the same records.

#![allow(clippy::expect_used)]

use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn run(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("spool-recovery-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let segment = journal_server::fuzzing::first_segment(&dir);
    std::fs::create_dir_all(segment.parent().expect("segments have a directory"))
        .expect("scratch directory");
    std::fs::write(&segment, data).expect("scratch segment");

    let first = journal_server::fuzzing::recover(&dir).expect("recovery fails only on IO");
    for (id, sha256, bytes) in &first.messages {
        assert_eq!(
            &hex(&Sha256::digest(bytes)),
            sha256,
            "{id} reads back changed"
        );
    }
    let again = journal_server::fuzzing::recover(&dir).expect("recovery fails only on IO");
    assert_eq!(
        again.truncated_bytes, 0,
        "the first recovery left a torn tail"
    );
    let ids = |r: &journal_server::fuzzing::Recovered| {
        r.messages.iter().map(|m| m.0.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&first), "recovery is not stable");
    let _ = std::fs::remove_dir_all(&dir);
}
