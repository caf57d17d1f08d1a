//! A program that uses mistral-async and also its own `reqwest` for everything else,
//! as a user writes it: `reqwest = { version = "0.13", default-features = false }` in
//! its `Cargo.toml` (this package's own reqwest dependency is declared so), built with
//! `reqwest::Client::new()` and with rustls explicitly, beside a Mistral client, with no
//! crypto provider installed by anyone: `cargo run -p mistral-suites --example
//! own_reqwest` (against an emulator started in this process).
//!
//! mistral-async once turned on reqwest's `rustls-no-provider`, which cargo's feature
//! unification applied to this program's reqwest too: its `Client::new()` panicked
//! with "No rustls crypto provider is configured".

use mistral_async::{ChatRequest, Client, Message};

/// What the program's own clients did.
#[derive(Debug)]
pub struct Own {
    /// The status of `GET {base}/v1/models` through `reqwest::Client::new()`.
    pub plain_status: u16,
    /// The status of the same through a client built with rustls explicitly.
    pub rustls_status: u16,
    /// The Mistral client's answer.
    pub mistral_text: String,
}

/// Builds the program's own reqwest clients and a Mistral client for `base_url`/`key`,
/// and makes one call with each.
pub async fn run(base_url: &str, key: &str) -> Result<Own, Box<dyn std::error::Error>> {
    // Built before any Mistral client exists, and after: neither may panic.
    let plain = reqwest::Client::new();
    let with_rustls = reqwest::Client::builder().tls_backend_rustls().build()?;
    let mistral = Client::builder().api_key(key).base_url(base_url).build()?;
    let reply = mistral
        .chat(ChatRequest::new(
            "mistral-small-latest",
            vec![Message::user("hello")],
        ))
        .await?;
    let again = reqwest::Client::new();
    let get = |client: &reqwest::Client| {
        client
            .get(format!("{base_url}/v1/models"))
            .bearer_auth(key)
            .send()
    };
    let plain_status = get(&plain).await?.status().as_u16();
    let rustls_status = get(&with_rustls).await?.status().as_u16();
    assert_eq!(get(&again).await?.status().as_u16(), plain_status);
    Ok(Own {
        plain_status,
        rustls_status,
        mistral_text: reply.text().unwrap_or_default().to_owned(),
    })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emu = mistral_emulator::Emulator::start(mistral_emulator::Config::default());
    let runtime = tokio::runtime::Runtime::new()?;
    let own = runtime.block_on(run(&emu.url(), emu.key()))?;
    println!("{own:?}");
    Ok(())
}
