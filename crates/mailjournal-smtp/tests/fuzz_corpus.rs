//! Replays every checked-in `smtp_session` fuzz input through the fuzz target's own driver (the
//! same invariants), so `cargo test` alone guards the regressions the fuzzer found.

#[path = "../../../fuzz/drivers/smtp_session.rs"]
mod driver;
#[path = "../../../fuzz/drivers/replay.rs"]
mod replay;

#[test]
fn replay_smtp_session_corpus() {
    replay::corpus("smtp_session", driver::run);
}
