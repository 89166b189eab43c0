//! Fuzz target: see `drivers/envelope_parse.rs` for the invariants.
#![no_main]

#[path = "../drivers/envelope_parse.rs"]
mod driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| driver::run(data));
