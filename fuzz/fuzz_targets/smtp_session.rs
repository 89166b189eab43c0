//! Fuzz target: see `drivers/smtp_session.rs` for the input format and the invariants.
#![no_main]

#[path = "../drivers/smtp_session.rs"]
mod driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| driver::run(data));
