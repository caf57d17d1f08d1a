//! `cargo fuzz run call` (from `core/`): see `../bodies.rs`.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::call_machine(data));
