//! The small companions: `mistral chat` and `mistral limits`.

use std::io::Write;

use mistral_async::mistral_limiter::BudgetState;
use mistral_async::mistral_limiter::store::codec;
use mistral_async::mistral_limiter::store::{redis_key, state_file_path};
use mistral_async::stores::LimiterSpec;
use mistral_async::{ApiKey, ApiRequest, ChatRequest, Message};

use crate::batch::describe_limits;
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
            let body = match endpoint {
                Endpoint::Chat => {
                    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1})
                }
                Endpoint::Fim => {
                    serde_json::json!({"model": model, "prompt": "a", "max_tokens": 1})
                }
                Endpoint::Embeddings => serde_json::json!({"model": model, "input": "ping"}),
            };
            let request = ApiRequest::post_json(endpoint.path(), &body)
                .map(|r| r.for_model(model.clone(), 8));
            let result = match request {
                Ok(r) => conn.client.send(r).await,
                Err(e) => Err(e),
            };
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

/// The shared store `MISTRAL_LIMITER` names, to read what the fleet has learned.
pub(crate) enum Store {
    /// The state file, read without its lock (nothing is written).
    File(std::path::PathBuf),
    Redis {
        client: Box<redis::Client>,
        /// The store id its keys are named after.
        id: String,
        url: String,
    },
}

impl Store {
    pub(crate) fn name(&self) -> String {
        match self {
            Store::File(path) => path.display().to_string(),
            Store::Redis { url, .. } => url.clone(),
        }
    }

    /// Requests and tokens per second `model`'s budget has learned (at the full limit).
    pub(crate) fn rates(&self, model: &str) -> Option<(Option<f64>, Option<f64>)> {
        let state = self.budget(model).ok()??;
        let per_sec = |us: f64| (us > 0.0).then(|| 1e6 / us);
        let rates = (per_sec(state.req_us), per_sec(state.tok_us));
        (rates != (None, None)).then_some(rates)
    }

    /// `model`'s budget as the store holds it (read only, nothing reserved).
    fn budget(&self, model: &str) -> Result<Option<BudgetState>, String> {
        match self {
            Store::File(path) => {
                // Read without the lock: a write in progress may show a torn file, so a
                // file that does not decode is read again a few times.
                let mut last = String::new();
                for _ in 0..5 {
                    let bytes = match std::fs::read(path) {
                        Ok(bytes) => bytes,
                        // No file yet: no process has spent this budget.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(format!("{}: {e}", path.display())),
                    };
                    match codec::decode(&bytes) {
                        Ok(mut states) => return Ok(states.remove(model)),
                        Err(e) => last = e.to_string(),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(format!("the state file does not decode: {last}"))
            }
            Store::Redis { client, id, .. } => {
                let mut conn = client
                    .get_connection_with_timeout(std::time::Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                let value: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(redis_key(id, model))
                    .query(&mut conn)
                    .map_err(|e| e.to_string())?;
                match value {
                    None => Ok(None),
                    Some(bytes) => codec::decode_value(&bytes, model)
                        .map(Some)
                        .map_err(|e| format!("the budget does not decode: {e}")),
                }
            }
        }
    }
}

pub(crate) fn store_of(conn: &Connection) -> Option<Result<Store, String>> {
    let value = std::env::var("MISTRAL_LIMITER").ok()?;
    let (spec, budget) = LimiterSpec::parse_with_budget(&value).ok()?;
    let key = match ApiKey::new(conn.key.as_str()) {
        Ok(k) => k,
        Err(e) => return Some(Err(e.to_string())),
    };
    // The budget the clients spend: the budget id's when named, else the key's own.
    let id = mistral_async::stores::scope_store_id(&conn.base_url, &key, budget.as_ref());
    let path = match spec {
        LimiterSpec::File(path) => path,
        LimiterSpec::Redis(url) => {
            // The same key names as the Redis store (its budgets' prefix), and the URL
            // without a password for display.
            let shown = match url.split_once('@') {
                Some((scheme_and_auth, host)) => {
                    let scheme = scheme_and_auth.split("://").next().unwrap_or("redis");
                    format!("{scheme}://…@{host}")
                }
                None => url.clone(),
            };
            let options = match mistral_async::stores::RedisOptions::parse(&url) {
                Ok(options) => options,
                Err(e) => return Some(Err(e.to_string())),
            };
            mistral_async::stores::install_tls_provider();
            let client = match &options.ca_file {
                None => redis::Client::open(options.url.as_str()),
                Some(ca) => match std::fs::read(ca) {
                    Ok(root_cert) => redis::Client::build_with_tls(
                        options.url.as_str(),
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(root_cert),
                        },
                    ),
                    Err(e) => return Some(Err(format!("cannot read {}: {e}", ca.display()))),
                },
            };
            return Some(
                client
                    .map(|client| Store::Redis {
                        client: Box::new(client),
                        id: id.clone(),
                        url: shown,
                    })
                    .map_err(|e| format!("bad Redis URL: {e}")),
            );
        }
        _ => return None,
    };
    Some(Ok(Store::File(state_file_path(
        path.as_deref(),
        &id,
        |p| p.is_dir(),
    ))))
}
