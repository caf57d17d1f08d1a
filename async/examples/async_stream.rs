//! A streamed chat completion, printed as it arrives:
//! `cargo run -p mistral-async --example async_stream -- "Tell me a story"`.
//!
//! Reads `MISTRAL_API_KEY` (and `MISTRAL_BASE_URL` when set); the model is
//! `MISTRAL_MODEL` or `mistral-small-latest`.

use std::io::Write;
use std::process::ExitCode;

use mistral_async::{ChatRequest, Client, Error, Message};

async fn run(prompt: String, model: String) -> Result<(), Error> {
    let client = Client::from_env()?;
    let request = ChatRequest::new(model, vec![Message::user(prompt)]);
    let mut stream = client.chat_stream(&request).await?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next_chunk().await {
        print!("{}", chunk?.text().unwrap_or_default());
        let _ = stdout.flush();
    }
    println!();
    if let Some(usage) = stream.usage() {
        println!(
            "[usage: {} prompt + {} completion = {} tokens]",
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let prompt = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let prompt = if prompt.is_empty() {
        "Hello".to_owned()
    } else {
        prompt
    };
    let model = std::env::var("MISTRAL_MODEL").unwrap_or_else(|_| "mistral-small-latest".into());
    match run(prompt, model).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            println!();
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
