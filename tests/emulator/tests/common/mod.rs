//! Helpers shared by the emulator's integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mistral_emulator::raw_http::{Connection, Response};
use serde_json::{Value, json};

pub const CHAT: &str = "/v1/chat/completions";

/// A chat body: one user message. "hello" costs 2 prompt tokens + 16 completion.
pub fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// POSTs a chat request on a fresh connection.
pub fn post_chat(url: &str, key: &str, model: &str) -> Response {
    mistral_emulator::raw_http::post(url, Some(key), CHAT, &chat(model, "hello")).expect("request")
}

/// Fires chat requests for `model` from `threads` keep-alive connections for `how_long`;
/// returns how many responses came back.
pub fn hammer(url: &str, key: &str, model: &str, threads: usize, how_long: Duration) -> usize {
    let deadline = Instant::now() + how_long;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let body = chat(model, "hello");
                    let mut conn = Connection::open(url).expect("connect");
                    let mut n = 0;
                    while Instant::now() < deadline {
                        match conn.post(Some(key), CHAT, &body) {
                            Ok(r) => {
                                assert!(r.status == 200 || r.status == 429, "status {}", r.status);
                                n += 1;
                            }
                            Err(_) => conn = Connection::open(url).expect("reconnect"),
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    })
}
