//! `cargo fuzz run sse` (from `core/`): see `../bodies.rs`.
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::sse_decoder(data));
