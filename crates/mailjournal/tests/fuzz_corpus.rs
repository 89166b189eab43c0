//! Replays every checked-in `ingest` fuzz input through the fuzz target's own driver (the same
//! invariants), so `cargo test` alone guards the regressions the fuzzer found.

#[path = "../../../fuzz/drivers/ingest.rs"]
mod driver;
#[path = "../../../fuzz/drivers/replay.rs"]
mod replay;

#[test]
fn replay_ingest_corpus() {
    replay::corpus("ingest", driver::run);
}
