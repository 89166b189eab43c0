//! Replays every checked-in `envelope_parse` fuzz input through the fuzz target's own driver (the
//! same invariants), so `cargo test` alone guards the regressions the fuzzer found.

#[path = "../../../fuzz/drivers/envelope_parse.rs"]
mod driver;
#[path = "../../../fuzz/drivers/replay.rs"]
mod replay;

#[test]
fn replay_envelope_parse_corpus() {
    replay::corpus("envelope_parse", driver::run);
}
