//! `cargo fuzz run state_codec` (from `core/`): see `../bodies.rs`.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::state_codec(data));
