//! Helpers of the suites that drive the clients through a one-per-minute budget
//! (`call_options.rs`, `long_call_warn.rs`).
#![allow(dead_code)]

use mistral_core::models::{ChatRequest, Message};
use mistral_emulator::{Config, Emulator, Limits};

pub const MODEL: &str = "mistral-small-latest";

pub fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")])
}

/// One request per minute for [`MODEL`]: after one call, the next waits a minute.
pub fn one_a_minute() -> Emulator {
    let emu = Emulator::start(Config::default());
    emu.set_limits(MODEL, Limits::new(Some(1), None));
    emu
}

pub fn blocking(emu: &Emulator) -> mistral_blocking::Client {
    mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap()
}

pub fn asynchronous(emu: &Emulator) -> mistral_async::Client {
    mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap()
}
