//! Replays every checked-in `spool_recovery` fuzz input through the fuzz target's own driver
//! (the same invariants), so `cargo test` alone guards the regressions the fuzzer found.

#[path = "../../../fuzz/drivers/spool_recovery.rs"]
mod driver;
#[path = "../../../fuzz/drivers/replay.rs"]
mod replay;

#[test]
fn replay_spool_recovery_corpus() {
    replay::corpus("spool_recovery", driver::run);
}
