//! Asks one question and prints the answer.
//!
//! ```sh
//! MISTRAL_API_KEY=... cargo run -p mistral-blocking --example blocking_chat -- "Hello"
//! ```
//!
//! The model is `MISTRAL_MODEL`, or `mistral-small-latest`. On error the error's message
//! goes to stderr and the exit status is 1.

use mistral_blocking::{ChatRequest, Client, Error, Message};

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let prompt = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let prompt = if prompt.is_empty() {
        "Hello".to_owned()
    } else {
        prompt
    };
    let model = std::env::var("MISTRAL_MODEL").unwrap_or_else(|_| "mistral-small-latest".into());
    let client = Client::from_env()?;
    let reply = client.chat(ChatRequest::new(model, vec![Message::user(prompt)]))?;
    println!("{}", reply.text().unwrap_or_default());
    Ok(())
}
