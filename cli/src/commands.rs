//! The small companions: `mistral chat` and `mistral limits`.

use std::io::Write;

use mistral_async::{ChatRequest, Message};

use crate::budget::{self, describe_limits, store_of};
use crate::input::Endpoint;
use crate::{Connection, EXIT_INCOMPLETE, EXIT_INVALID, EXIT_OK};

/// `mistral chat`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// What to say.
    pub prompt: String,
    /// The model.
    #[arg(long, default_value = "mistral-small-latest")]
    pub model: String,
    /// A system message before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
}

/// One chat completion, streamed to stdout; usage and limits on stderr.
pub async fn chat(conn: &Connection, args: ChatArgs) -> u8 {
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(args.prompt));
    let mut request = ChatRequest::new(args.model, messages);
    if let Some(n) = args.max_tokens {
        request = request.max_tokens(n);
    }
    if let Some(t) = args.temperature {
        request = request.temperature(t);
    }
    let mut stream = match conn.client.chat_stream(&request).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mistral: {e}");
            return if e.is_permanent() {
                EXIT_INVALID
            } else {
                EXIT_INCOMPLETE
            };
        }
    };
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next_chunk().await {
        match chunk {
            Ok(chunk) => {
                if let Some(text) = chunk.text() {
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
            }
            Err(e) => {
                println!();
                eprintln!("mistral: {e}");
                return EXIT_INCOMPLETE;
            }
        }
    }
    println!();
    if let Some(tokens) = stream.used_tokens() {
        eprintln!("({tokens} tokens)");
    }
    EXIT_OK
}

/// `mistral limits`' arguments.
#[derive(Debug, clap::Args)]
pub struct LimitsArgs {
    /// Models to ask about (repeatable).
    #[arg(long = "model", default_values_t = vec!["mistral-small-latest".to_string()])]
    pub models: Vec<String>,
    /// The endpoint of the probe (chat, fim, embeddings); default from the model's name.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only what the configured store has learned; no probe request.
    #[arg(long)]
    pub no_probe: bool,
}

/// What the server announces for each model (one tiny probe request each) and, with a
/// file store (`MISTRAL_LIMITER=file…`), what the fleet's shared budget holds.
pub async fn limits(conn: &Connection, args: LimitsArgs) -> u8 {
    let mut code = EXIT_OK;
    let store = store_of(conn);
    for model in &args.models {
        let endpoint = match args.endpoint.as_deref() {
            Some(e) => match Endpoint::parse(e) {
                Some(e) => e,
                None => {
                    eprintln!("mistral: unknown --endpoint {e:?}");
                    return EXIT_INVALID;
                }
            },
            None if model.contains("embed") => Endpoint::Embeddings,
            None => Endpoint::Chat,
        };
        println!("{model}:");
        if !args.no_probe {
            let result = budget::probe(conn, endpoint, model).await;
            match result {
                Ok(reply) => println!("  announced: {}", describe_limits(&reply.limits)),
                Err(e) => {
                    println!("  probe failed: {e}");
                    if let Some(r) = e.response()
                        && !r.limits.quotas.is_empty()
                    {
                        println!("  announced: {}", describe_limits(&r.limits));
                    }
                    code = EXIT_INCOMPLETE;
                }
            }
        }
        match &store {
            Some(Ok(store)) => match store.budget(model) {
                Ok(Some(state)) => {
                    let per_sec = |us: f64| {
                        if us > 0.0 {
                            format!("{:.2}/s", 1e6 / us)
                        } else {
                            "unknown".into()
                        }
                    };
                    println!(
                        "  shared budget ({}): requests {}, tokens {}, this fleet's share {:.0}% of the limit",
                        store.name(),
                        per_sec(state.req_us),
                        per_sec(state.tok_us),
                        state.share * 100.0
                    );
                }
                Ok(None) => println!("  shared budget ({}): nothing learned yet", store.name()),
                Err(e) => println!("  shared budget ({}): cannot read it: {e}", store.name()),
            },
            Some(Err(e)) => println!("  shared budget: {e}"),
            None => {}
        }
    }
    if store.is_none() {
        println!(
            "(the limiter store is in-process or Redis: what this process learned is above; MISTRAL_LIMITER=file shows a host's shared budget)"
        );
    }
    code
}
