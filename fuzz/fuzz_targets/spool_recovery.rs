//! Fuzz target: see `drivers/spool_recovery.rs` for the input format and the invariants.
#![no_main]

#[path = "../drivers/spool_recovery.rs"]
mod driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| driver::run(data));
