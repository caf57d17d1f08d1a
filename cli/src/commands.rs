//! The small companions: `mistral chat` and `mistral limits`.

use std::io::Write;
use std::time::{Duration, Instant};

use mistral_async::mistral_core::forecast::{Spent, Tracker};
use mistral_async::mistral_limiter::BudgetState;
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
    /// Look twice this many seconds apart (two probes each, and the shared store's
    /// counters twice), to measure the rate the budget is spent at; 0: once.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub sample: f64,
    /// Show the forecast again every this many seconds, until interrupted.
    #[arg(long, value_name = "SECS")]
    pub every: Option<f64>,
}

/// What the server announces for each model (one tiny probe request each, two with
/// `--sample`), what the fleet's shared budget holds (`MISTRAL_LIMITER=file…` or
/// `redis…`), and the forecast: a table of each limit's remaining, its reset, the rate
/// it is spent at and when it runs out at that rate.
pub async fn limits(conn: &Connection, args: LimitsArgs) -> u8 {
    let store = store_of(conn);
    let mut endpoints = Vec::new();
    for model in &args.models {
        endpoints.push(match args.endpoint.as_deref() {
            Some(e) => match Endpoint::parse(e) {
                Some(e) => e,
                None => {
                    eprintln!("mistral: unknown --endpoint {e:?}");
                    return EXIT_INVALID;
                }
            },
            None if model.contains("embed") => Endpoint::Embeddings,
            None => Endpoint::Chat,
        });
    }
    let Some(sample) = seconds(args.sample) else {
        eprintln!(
            "mistral: --sample takes a number of seconds, not {}",
            args.sample
        );
        return EXIT_INVALID;
    };
    let every = match args.every.map(seconds) {
        Some(None) => {
            eprintln!("mistral: --every takes a number of seconds");
            return EXIT_INVALID;
        }
        Some(Some(d)) => Some(d),
        None => None,
    };
    loop {
        let code = look(conn, &args, &endpoints, store.as_ref(), sample).await;
        match every {
            Some(pause) => {
                println!();
                tokio::time::sleep(pause).await;
            }
            None => return code,
        }
    }
}

/// A number of seconds as a duration (`None`: negative, not finite, over a day).
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=86_400.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// One look at every model: the probes (twice, `sample` apart), the store, the table.
async fn look(
    conn: &Connection,
    args: &LimitsArgs,
    endpoints: &[Endpoint],
    store: Option<&Result<budget::Store, String>>,
    sample: Duration,
) -> u8 {
    let mut code = EXIT_OK;
    let mut tracker = Tracker::new();
    let rounds = if sample.is_zero() { 1 } else { 2 };
    let mut last: Vec<Option<Result<String, String>>> = vec![None; args.models.len()];
    let mut shared: Vec<Option<BudgetState>> = vec![None; args.models.len()];
    for round in 0..rounds {
        if round > 0 {
            tokio::time::sleep(sample).await;
        }
        for (i, (model, endpoint)) in args.models.iter().zip(endpoints).enumerate() {
            if !args.no_probe {
                let result = budget::probe(conn, *endpoint, model).await;
                let limits = match &result {
                    Ok(reply) => Some(&reply.limits),
                    Err(e) => e.response().map(|r| &r.limits),
                };
                if let Some(limits) = limits {
                    tracker.observe_limits(Instant::now(), model, limits);
                }
                last[i] = Some(match result {
                    Ok(reply) => Ok(describe_limits(&reply.limits)),
                    Err(e) => Err(match e.response().filter(|r| !r.limits.quotas.is_empty()) {
                        Some(r) => format!("{e}\n  announced: {}", describe_limits(&r.limits)),
                        None => e.to_string(),
                    }),
                });
            }
            if let Some(Ok(store)) = store
                && let Ok(Some(state)) = store.budget(model)
            {
                // Every admission of every process of the fleet, counted by the store.
                let spent = Spent {
                    requests: state.seq,
                    tokens: state.tok_mark,
                };
                tracker.observe_fleet(Instant::now(), model, spent);
                shared[i] = Some(state);
            }
        }
    }
    let now = Instant::now();
    for (i, model) in args.models.iter().enumerate() {
        println!("{model}:");
        match &last[i] {
            Some(Ok(announced)) => println!("  announced: {announced}"),
            Some(Err(e)) => {
                println!("  probe failed: {e}");
                code = EXIT_INCOMPLETE;
            }
            None => {}
        }
        match store {
            Some(Ok(store)) => match shared[i]
                .take()
                .map_or_else(|| store.budget(model), |state| Ok(Some(state)))
            {
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
        if let Some(forecast) = tracker.forecast(model, now) {
            println!("  forecast:");
            for line in forecast.to_string().lines() {
                println!("    {line}");
            }
            if let Some((requests, tokens)) = forecast.fleet {
                println!(
                    "    this fleet spends {requests:.2} requests and {tokens:.0} tokens a second (the shared store's count)"
                );
            }
        }
    }
    if store.is_none() {
        println!(
            "(the limiter store is in-process: the rates above are the server's numbers; MISTRAL_LIMITER=file or redis adds the fleet's own)"
        );
    }
    code
}
