//! Replays every checked-in `definition_toml` fuzz input through the fuzz target's own driver (the
//! same invariants), so `cargo test` alone guards the regressions the fuzzer found.

#[path = "../../../fuzz/drivers/definition_toml.rs"]
mod driver;
#[path = "../../../fuzz/drivers/replay.rs"]
mod replay;

#[test]
fn replay_definition_toml_corpus() {
    replay::corpus("definition_toml", driver::run);
}
