//! Streams an answer: prints each piece as it arrives, then a newline and the usage.
//!
//! ```sh
//! MISTRAL_API_KEY=... cargo run -p mistral-blocking --example blocking_stream -- "Tell me a story"
//! ```
//!
//! The model is `MISTRAL_MODEL`, or `mistral-small-latest`. On error the error's message
//! goes to stderr and the exit status is 1.

use std::io::Write;

use mistral_blocking::{ChatRequest, Client, Error, Message};

fn main() {
    if let Err(error) = run() {
        eprintln!("\nerror: {error}");
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
    let mut stream = client.chat_stream(ChatRequest::new(model, vec![Message::user(prompt)]))?;
    let mut stdout = std::io::stdout();
    for chunk in stream.by_ref() {
        print!("{}", chunk?.text().unwrap_or_default());
        let _ = stdout.flush();
    }
    println!();
    match stream.usage() {
        Some(usage) => println!(
            "usage: {} prompt + {} completion = {} tokens",
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total()
        ),
        None => println!("usage: not reported"),
    }
    Ok(())
}
