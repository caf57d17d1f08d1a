//! The end-to-end demo behind `cargo xtask demo` (`mistral-demo`): a burst of concurrent
//! chat requests through the blocking and the async client at once, both paced by one
//! shared limiter, with live progress and a closing table.
//!
//! - With neither `MISTRAL_API_KEY` nor `MISTRAL_BASE_URL` set, it starts the emulator
//!   in-process with a tight limit (5 requests per 1 s window, burst 5, and 150 tokens
//!   per second, announced in late-2025 headers) and sends 20 + 20 requests from both clients
//!   at once (all callers start together); the table compares the time with the
//!   emulator's own best (its burst of 5 counted).
//! - With either set, it talks to that server (`MISTRAL_BASE_URL`, default the real
//!   API) with `MISTRAL_API_KEY` (or, with only a base URL, the emulator's default key,
//!   for a `cargo xtask emulate` started by hand), model `MISTRAL_MODEL` or
//!   `mistral-small-latest`, and a small burst (5 + 5, `max_tokens` 8).
//!
//! ```no_run
//! use mistral_demo::{Settings, run};
//!
//! let outcome = run(&Settings::from_env(None, None)).expect("the demo could not start");
//! println!("{}", outcome.table());
//! ```

#![warn(missing_docs)]

pub mod progress;
pub mod summary;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Error, Stats};
use mistral_limiter::LocalLimiter;

use mistral_emulator::{Config, DEFAULT_KEY, Emulator, Era, Limits, Semantics};
use progress::{Live, Progress};
use summary::{ClientSummary, RequestLimit};

/// The model used when `MISTRAL_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "mistral-small-latest";

/// Where the demo sends its requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Server {
    /// An emulator started in-process with `requests` per second (burst the same) and
    /// `tokens` per second.
    Emulated {
        /// Requests per 1 s window.
        requests: u64,
        /// Tokens per 1 s window.
        tokens: u64,
    },
    /// A real server (or an emulator started elsewhere).
    Remote {
        /// Base URL.
        base_url: String,
        /// API key.
        key: String,
        /// `true` when no key was given and the emulator's default key is used.
        default_key: bool,
    },
}

/// What the demo does.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The server.
    pub server: Server,
    /// The model named by every request.
    pub model: String,
    /// Requests of the blocking client (one thread each).
    pub blocking: usize,
    /// Requests of the async client (one task each).
    pub tasks: usize,
    /// `max_tokens` of every request.
    pub max_tokens: u32,
}

impl Settings {
    /// Settings from the environment (see the module docs); `blocking` and `tasks`
    /// override the burst sizes (20 + 20 emulated, 5 + 5 against a server).
    pub fn from_env(blocking: Option<usize>, tasks: Option<usize>) -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let key = var("MISTRAL_API_KEY");
        let base_url = var("MISTRAL_BASE_URL");
        let model = var("MISTRAL_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        if key.is_none() && base_url.is_none() {
            return Settings {
                server: Server::Emulated {
                    requests: 5,
                    tokens: 150,
                },
                model,
                blocking: blocking.unwrap_or(20),
                tasks: tasks.unwrap_or(20),
                max_tokens: 16,
            };
        }
        Settings {
            server: Server::Remote {
                base_url: base_url
                    .unwrap_or_else(|| mistral_core::request::DEFAULT_BASE_URL.into()),
                default_key: key.is_none(),
                key: key.unwrap_or_else(|| DEFAULT_KEY.to_owned()),
            },
            model,
            blocking: blocking.unwrap_or(5),
            tasks: tasks.unwrap_or(5),
            max_tokens: 8,
        }
    }
}

/// What the demo found.
#[derive(Debug)]
pub struct Outcome {
    /// One line on the server.
    pub server: String,
    /// Blocking, async and total.
    pub rows: Vec<ClientSummary>,
    /// The request limit (configured for the emulator, else announced), if known.
    pub limit: Option<RequestLimit>,
    /// The server's own best for the whole burst, in seconds (its burst counted).
    pub ideal: Option<f64>,
    /// For the emulator: 429s it sent, and whether any window went over its limit.
    pub emulator_check: Option<(usize, bool)>,
}

impl Outcome {
    /// The closing table.
    pub fn table(&self) -> String {
        summary::table(&self.rows, self.limit, self.ideal)
    }

    /// Errors returned to callers, all clients together.
    pub fn errors(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.name != "total")
            .map(|r| r.errors.len())
            .sum()
    }
}

/// The request of the `i`-th call.
fn request(settings: &Settings, i: usize) -> ChatRequest {
    let text = match settings.server {
        Server::Emulated { .. } => prompt(i),
        Server::Remote { .. } => format!("Reply with one word: the number {i} in French."),
    };
    ChatRequest::new(settings.model.as_str(), vec![Message::user(text)])
        .max_tokens(settings.max_tokens)
}

/// A prompt of exactly 40 characters (10 prompt tokens by the emulator's usage rule)
/// that names call `i`, as the bench's workloads write them.
fn prompt(i: usize) -> String {
    let head = format!("Request {i}: summarise ");
    let filler = "the rate limits of a shared budget ";
    head.chars()
        .chain(filler.chars().cycle())
        .take(40)
        .collect()
}

/// The counters a bar shows.
fn live(stats: &Stats, errors: u64) -> Live {
    Live {
        rate_limited: stats.rate_limited.total(),
        retries: stats.retries,
        errors,
    }
}

/// A call's result, as the plain progress lines tell it.
fn describe(result: &Result<(u32, Duration), Error>, took: Duration) -> String {
    match result {
        Ok((1, _)) => format!("ok, 1 attempt, {:.1} s", took.as_secs_f64()),
        Ok((n, _)) => format!("ok, {n} attempts, {:.1} s", took.as_secs_f64()),
        Err(e) => format!("error: {e}"),
    }
}

/// Runs the demo: the burst, with progress on stdout.
pub fn run(settings: &Settings) -> Result<Outcome, String> {
    let emulator = match &settings.server {
        Server::Emulated { requests, tokens } => {
            let config = Config {
                era: Era::Late2025,
                semantics: Semantics::Bucket,
                window_secs: 1.0,
                ..Config::default()
            }
            .model(
                &settings.model,
                Limits {
                    burst: Some(*requests),
                    ..Limits::new(Some(*requests), Some(*tokens))
                },
            );
            Some(Emulator::try_start(config).map_err(|e| format!("the emulator: {e}"))?)
        }
        Server::Remote { .. } => None,
    };
    let (base_url, key) = match (&settings.server, &emulator) {
        (_, Some(e)) => (e.url(), e.key().to_owned()),
        (Server::Remote { base_url, key, .. }, None) => (base_url.clone(), key.clone()),
        _ => return Err("no server".into()),
    };
    let server = match &settings.server {
        Server::Emulated { requests, tokens } => format!(
            "the emulator at {base_url} (started here): {requests} requests and {tokens} tokens \
             per 1 s window, announced in headers"
        ),
        Server::Remote { default_key, .. } => format!(
            "{base_url}{}",
            if *default_key {
                " (no MISTRAL_API_KEY: using the emulator's default key)"
            } else {
                ""
            }
        ),
    };
    println!("Mistral rate-limit demo");
    println!("  server: {server}");
    println!(
        "  model {}; {} blocking threads + {} async tasks at once, one shared limiter",
        settings.model, settings.blocking, settings.tasks
    );
    println!();

    // One limiter for both clients: they spend one budget, so they pace together.
    let limiter = Arc::new(LocalLimiter::new());
    let blocking = mistral_blocking::Client::builder()
        .base_url(base_url.as_str())
        .api_key(key.as_str())
        .limiter(limiter.clone())
        .build()
        .map_err(|e| format!("the blocking client: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))?;
    let asynch = mistral_async::Client::builder()
        .base_url(base_url.as_str())
        .api_key(key.as_str())
        .limiter(limiter)
        .build()
        .map_err(|e| format!("the async client: {e}"))?;

    let progress = Arc::new(Progress::new(&[
        ("blocking", settings.blocking as u64),
        ("async", settings.tasks as u64),
    ]));
    let records: [Arc<Mutex<Record>>; 2] = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    // Every caller waits here, then all start at once: the two clients' calls reach the
    // shared limiter interleaved, not one client's all before the other's.
    let gate = Arc::new(std::sync::Barrier::new(
        settings.blocking + settings.tasks + 1,
    ));
    let start = Arc::new(Mutex::new(Instant::now()));

    // Refresh the bars' counters while calls wait.
    let ticker = {
        let (progress, done, records) = (progress.clone(), done.clone(), records.clone());
        let (b, a) = (blocking.clone(), asynch.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let count = |i: usize| records[i].lock().map_or(0, |r| r.errors.len() as u64);
                progress.update(0, live(&b.stats(), count(0)));
                progress.update(1, live(&a.stats(), count(1)));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..settings.blocking.max(settings.tasks) {
        if i < settings.blocking {
            let client = blocking.clone();
            let request = request(settings, 2 * i);
            let (progress, records, gate, start) = (
                progress.clone(),
                records.clone(),
                gate.clone(),
                start.clone(),
            );
            threads.push(std::thread::spawn(move || {
                gate.wait();
                let t = Instant::now();
                let result = client
                    .chat(request)
                    .map(|r| (r.trail.attempts, r.trail.waited));
                let took = t.elapsed();
                let count = note(&records[0], &start, t, &result);
                progress.finished(0, &describe(&result, took), live(&client.stats(), count));
            }));
        }
        if i < settings.tasks {
            let client = asynch.clone();
            let request = request(settings, 2 * i + 1);
            let (progress, records, gate, start) = (
                progress.clone(),
                records.clone(),
                gate.clone(),
                start.clone(),
            );
            tasks.push(runtime.spawn(async move {
                // The barrier blocks: wait on it off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || gate.wait()).await;
                let t = Instant::now();
                let result = client
                    .chat(request)
                    .await
                    .map(|r| (r.trail.attempts, r.trail.waited));
                let took = t.elapsed();
                let count = note(&records[1], &start, t, &result);
                progress.finished(1, &describe(&result, took), live(&client.stats(), count));
            }));
        }
    }
    if let Ok(mut s) = start.lock() {
        *s = Instant::now();
    }
    gate.wait();
    for t in threads {
        let _ = t.join();
    }
    runtime.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    progress.finish();

    let take = |m: &Arc<Mutex<Record>>| m.lock().map(|r| r.clone()).unwrap_or_default();
    let (bs, as_) = (blocking.stats(), asynch.stats());
    let (rb, ra) = (take(&records[0]), take(&records[1]));
    let mut rows = vec![
        ClientSummary::from_stats("blocking", &bs, rb.span(), rb.waits, rb.errors),
        ClientSummary::from_stats("async", &as_, ra.span(), ra.waits, ra.errors),
    ];
    rows.push(ClientSummary::total(&rows));
    let announced = [bs.last_limits.as_ref(), as_.last_limits.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|l| l.requests().copied())
        .and_then(|q| {
            let limit = q.limit.filter(|&l| l > 0)?;
            Some(RequestLimit {
                limit,
                window: q.window.duration()?,
                burst: limit,
            })
        });
    let configured = match settings.server {
        Server::Emulated { requests, .. } => Some(RequestLimit {
            limit: requests,
            window: Duration::from_secs(1),
            burst: requests,
        }),
        Server::Remote { .. } => None,
    };
    let limit = configured.or(announced);
    let n = (settings.blocking + settings.tasks) as u64;
    // The emulator's own best (its bucket's burst, its token limit); for another
    // server, its request limit with a fresh window at once.
    let ideal = match &emulator {
        Some(e) => {
            let costs: Vec<u64> = (0..n as usize)
                .map(|i| {
                    let r = request(settings, i);
                    (r.prompt_chars() as u64).div_ceil(4).max(1)
                        + u64::from(settings.max_tokens.min(e.config().completion_tokens))
                })
                .collect();
            let server = mistral_emulator::best::Server::of_emulator(e.config(), &settings.model);
            Some(server.best(&costs, n as usize, 0.0).makespan_s())
        }
        None => limit.map(|l| l.ideal_secs(n)),
    };
    let emulator_check = emulator.as_ref().map(|e| {
        let log = e.log();
        (log.count_429(), log.was_any_window_over_limit())
    });
    runtime.shutdown_background();
    Ok(Outcome {
        server,
        rows,
        limit,
        ideal,
        emulator_check,
    })
}

/// What one client's calls did: when each started and ended, its wait, its error.
#[derive(Clone, Debug, Default)]
struct Record {
    first_start: Option<Duration>,
    last_end: Duration,
    waits: Vec<Duration>,
    errors: Vec<String>,
}

impl Record {
    fn span(&self) -> (Duration, Duration) {
        (self.first_start.unwrap_or_default(), self.last_end)
    }
}

/// Records a call (started at `began`): its span, its wait, its error; the client's
/// errors so far.
fn note(
    record: &Mutex<Record>,
    start: &Mutex<Instant>,
    began: Instant,
    result: &Result<(u32, Duration), Error>,
) -> u64 {
    let start = start.lock().map(|s| *s).unwrap_or(began);
    let Ok(mut r) = record.lock() else { return 0 };
    let from = began.saturating_duration_since(start);
    r.first_start = Some(r.first_start.map_or(from, |f| f.min(from)));
    r.last_end = r.last_end.max(start.elapsed());
    match result {
        Ok((_, waited)) => r.waits.push(*waited),
        Err(e) => {
            r.waits
                .push(e.trail().map(|t| t.waited).unwrap_or_default());
            r.errors.push(e.to_string());
        }
    }
    r.errors.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_40_characters_and_name_their_call() {
        for i in [0, 7, 12_345] {
            let text = prompt(i);
            assert_eq!(text.chars().count(), 40, "{text:?}");
            assert!(text.starts_with(&format!("Request {i}: ")), "{text:?}");
        }
    }

    #[test]
    fn both_clients_run_at_once_and_the_ideal_counts_the_burst() {
        let settings = Settings {
            server: Server::Emulated {
                requests: 5,
                tokens: 150,
            },
            model: DEFAULT_MODEL.into(),
            blocking: 6,
            tasks: 6,
            max_tokens: 16,
        };
        let outcome = run(&settings).unwrap();
        let (b, a) = (&outcome.rows[0], &outcome.rows[1]);
        assert_eq!((b.succeeded, a.succeeded), (6, 6), "{outcome:?}");
        // Both started with the burst and each was still running when the other began.
        assert!(b.first_start < Duration::from_millis(500), "{b:?}");
        assert!(a.first_start < Duration::from_millis(500), "{a:?}");
        assert!(a.first_start < b.elapsed && b.first_start < a.elapsed);
        // 12 requests, 5 at once, then 5 per second: 1.4 s at best (not 12 ÷ 5 = 2.4 s).
        let ideal = outcome.ideal.unwrap();
        assert!((1.3..1.5).contains(&ideal), "{ideal}");
        assert_eq!(b.waits.len() + a.waits.len(), 12);
        let table = outcome.table();
        assert!(table.contains("burst 5"), "{table}");
    }

    #[test]
    fn requests_fit_the_server() {
        let mut s = Settings {
            server: Server::Emulated {
                requests: 5,
                tokens: 150,
            },
            model: DEFAULT_MODEL.into(),
            blocking: 1,
            tasks: 1,
            max_tokens: 16,
        };
        assert_eq!(request(&s, 3).prompt_chars(), 40);
        s.server = Server::Remote {
            base_url: "https://api.mistral.ai".into(),
            key: "k".into(),
            default_key: false,
        };
        assert!(request(&s, 3).prompt_chars() < 60);
    }
}
