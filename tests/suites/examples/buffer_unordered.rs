//! 100 chat calls, 32 at a time, with `buffer_unordered`, against an emulator started
//! in this process (or the server of `MISTRAL_BASE_URL` with `MISTRAL_API_KEY` when
//! `MISTRAL_BASE_URL` is set):
//! `cargo run -p mistral-suites --example buffer_unordered`.
//!
//! The requests are moved into the calls, so each future borrows only the client.

use futures_util::{StreamExt, stream};
use mistral_async::{ChatRequest, Client, Error, Message};

/// Sends `n` requests, 32 at a time; the texts of the replies, in completion order.
pub async fn run(client: &Client, n: usize) -> Result<Vec<String>, Error> {
    let requests = (0..n).map(|i| {
        ChatRequest::new(
            "mistral-small-latest",
            vec![Message::user(format!("Say {i}"))],
        )
    });
    let replies: Vec<_> = stream::iter(requests)
        .map(|req| client.chat(req))
        .buffer_unordered(32)
        .collect()
        .await;
    replies
        .into_iter()
        .map(|reply| reply.map(|r| r.text().unwrap_or_default().to_owned()))
        .collect()
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = std::env::var_os("MISTRAL_BASE_URL")
        .is_none()
        .then(|| mistral_emulator::Emulator::start(mistral_emulator::Config::default()));
    let client = match &emulator {
        Some(emu) => Client::builder()
            .api_key(emu.key())
            .base_url(emu.url())
            .build()?,
        None => Client::from_env()?,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let texts = runtime.block_on(run(&client, 100))?;
    println!("{} replies; {:?}", texts.len(), client.stats());
    Ok(())
}
