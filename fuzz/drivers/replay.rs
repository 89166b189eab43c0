//! Replays a target's checked-in corpus through its driver: the workspace's tests include this
//! file so that `cargo test` alone guards the regressions the fuzzer found.

#![allow(clippy::expect_used)]

/// Runs `run` on every file of `fuzz/corpus/<target>/`; fails when there is none.
pub(crate) fn corpus(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed corpus is checked in") {
        let path = entry.expect("directory entry").path();
        run(&std::fs::read(&path).expect("corpus file"));
        replayed += 1;
    }
    assert!(replayed > 0, "no corpus files in {}", dir.display());
}
