//! Fuzz target: see `drivers/definition_toml.rs` for the invariants.
#![no_main]

#[path = "../drivers/definition_toml.rs"]
mod driver;

libfuzzer_sys::fuzz_target!(|data: &[u8]| driver::run(data));
