//! Fuzz target: see `drivers/ingest.rs` for the invariants.
#![no_main]

#[path = "../drivers/ingest.rs"]
mod driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| driver::run(data));
