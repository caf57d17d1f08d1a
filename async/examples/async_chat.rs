//! One chat completion: `cargo run -p mistral-async --example async_chat -- "Hello"`.
//!
//! Reads `MISTRAL_API_KEY` (and `MISTRAL_BASE_URL` when set); the model is
//! `MISTRAL_MODEL` or `mistral-small-latest`.

use std::process::ExitCode;

use mistral_async::{ChatRequest, Client, Message};

#[tokio::main]
async fn main() -> ExitCode {
    let prompt = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let prompt = if prompt.is_empty() {
        "Hello".to_owned()
    } else {
        prompt
    };
    let model = std::env::var("MISTRAL_MODEL").unwrap_or_else(|_| "mistral-small-latest".into());
    let result = async {
        let client = Client::from_env()?;
        client
            .chat(&ChatRequest::new(model, vec![Message::user(prompt)]))
            .await
    };
    match result.await {
        Ok(reply) => {
            println!("{}", reply.text().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
