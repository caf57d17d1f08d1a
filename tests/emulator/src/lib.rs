//! `mistral-emulator`: the Mistral API emulator, and the server-side fixtures the suites
//! and the bench judge the clients with. No client crate in its dependencies: its rate
//! limiting is its own code, never `mistral-core`'s.
//!
//! - [`Emulator`]: a real HTTP/1.1 server on loopback that behaves like Mistral as
//!   captured in `mistral-api.md` (below); [`serve`] runs one on a runtime of yours, and
//!   the `mistral-emulator` binary ([`run_cli`], `cargo xtask emulate`) until killed.
//! - [`best`]: the server's own best, the earliest a server with these rules could have
//!   answered a workload (the yardstick of the bench and the demo).
//! - [`nginx`]: a real nginx `limit_req` in front of a loopback server (own prefix,
//!   generated config, free port, an access log to judge by), killed on drop.
//! - [`raw_http`]: a tiny blocking HTTP/1.1 client over `std::net::TcpStream`, for tests
//!   that must see the wire as it is (resets, cut streams, stalls).
//!
//! The emulator:
//!
//! - Endpoints: `POST /v1/chat/completions` (plain and SSE), `POST /v1/fim/completions`,
//!   `POST /v1/embeddings`, `POST /v1/moderations`, `POST /v1/chat/moderations`,
//!   `POST /v1/classifications`, `POST /v1/chat/classifications` (one target, `intent`,
//!   scored over `question`, `request`, `other`, and `language`),
//!   `POST /v1/agents/completions` (a chat, charged to [`Config::agent_model`]),
//!   `POST /v1/conversations` and `/v1/conversations/{id}` (not streamed; an append is
//!   charged the conversation's history too: rule in module `conversations`),
//!   `POST /v1/audio/transcriptions` (a multipart form; usage from the audio's length:
//!   rule in module `audio`),
//!   `POST /v1/ocr` (its model's second limit counts pages, [`Limits::pages`], announced
//!   as `x-ratelimit-*-ocr-pages-*`; pages rule in module `ocr`),
//!   `GET /v1/models` (no rate-limit headers there); the Batch API's `/v1/files` and
//!   `/v1/batch/jobs` (module `batch`, not rate limited). Any other path: 404 `no Route
//!   matched`. Bodies are deterministic. Usage rule: chat `prompt_tokens` = Σ over
//!   messages of ⌈chars/4⌉ of the text content (a non-text chunk counts 1), at least 1;
//!   FIM ⌈chars(prompt + suffix)/4⌉; embeddings and moderations Σ ⌈chars/4⌉ over the
//!   inputs, no completion tokens; `completion_tokens` = min(`max_tokens`,
//!   [`Config::completion_tokens`] (16)), `finish_reason` `length` when `max_tokens` cut
//!   it. The cost charged to the token limits is `total_tokens`, at admission.
//! - Order of checks on an inference request: scripted/queued/random *replacing* fault →
//!   path → key (401) → body validation (422/400/413) → strict model list (400) →
//!   capacity draw (429 3505) → limiter (429) → answer (200), possibly delayed, stalled or
//!   cut by a *modifying* fault. Only the limiter's admissions are charged.
//! - Limits per model ([`Config::models`], else [`Config::default_limits`]) with one of
//!   four [`Semantics`] (token bucket, fixed window, sliding log, nginx's leaky bucket
//!   without burst) and a concurrency limit ([`Limits::concurrency`], with a service
//!   time, [`Config::latency_ms`]); header names of the chosen [`Era`]; a background
//!   consumer ([`Config::background_share`]); limits that change during the run
//!   ([`Config::schedule`]).
//! - A [`Log`] of every request, with checks that no limit was exceeded; also served as
//!   JSON at `GET /_emulator/summary`, `/_emulator/log` and `/_emulator/timeline` (not
//!   numbered, not logged, no key) for runs of the binary.
//!
//! ```no_run
//! use mistral_emulator::{Config, Emulator, Limits};
//!
//! let config = Config {
//!     window_secs: 1.0,
//!     ..Config::default()
//! }
//! .model("mistral-small-latest", Limits::new(Some(5), Some(10_000)));
//! let emulator = Emulator::start(config);
//! println!("{} {}", emulator.url(), emulator.key());
//! // ... drive a client against it ...
//! assert!(!emulator.log().was_any_window_over_limit());
//! ```

#![warn(missing_docs)]

mod api;
mod audio;
mod background;
mod batch;
pub mod best;
mod cli;
mod config;
mod conversations;
mod headers;
mod limits;
mod log;
pub mod nginx;
mod ocr;
pub mod raw_http;
pub mod redis_cluster;
pub mod redis_server;
mod rng;
mod server;
mod work;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use api::natural_completion;
pub use cli::{Cli, help, parse_args, run_cli};
pub use config::{
    Change, Config, DEFAULT_KEY, EffectiveLimits, Era, Fault, Limits, RateLimitBody, Semantics,
};
pub use limits::{InFlight, LimitsEpoch, Refusal};
pub use log::{Entry, Log, Outcome, Second, Source};

use server::Shared;

/// A running emulator on its own multi-thread tokio runtime (two worker threads).
///
/// Usable from plain tests and from inside a tokio runtime alike (it never blocks on a
/// runtime). Dropping the handle stops the server and closes every connection.
#[derive(Debug)]
pub struct Emulator {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Emulator {
    /// Starts an emulator on `127.0.0.1` and a free port.
    ///
    /// # Panics
    /// If no socket or runtime can be had (tests want to stop there).
    pub fn start(config: Config) -> Emulator {
        match Emulator::try_start(config) {
            Ok(e) => e,
            Err(e) => panic!("the emulator could not start: {e}"),
        }
    }

    /// Starts an emulator on `127.0.0.1` and a free port.
    pub fn try_start(config: Config) -> io::Result<Emulator> {
        Emulator::try_start_at(config, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts an emulator listening on `addr`.
    pub fn try_start_at(config: Config, addr: SocketAddr) -> io::Result<Emulator> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mistral-emulator")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(config));
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        runtime.spawn(server::accept_loop(shared.clone(), listener));
        runtime.spawn(background::run(shared.clone()));
        runtime.spawn(server::run_schedule(shared.clone()));
        Ok(Emulator {
            runtime: Some(runtime),
            shared,
            addr,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first accepted key ("" if the config has none).
    pub fn key(&self) -> &str {
        self.shared
            .config
            .keys
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The configuration it runs with (runtime knobs not included).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A snapshot of the request log.
    pub fn log(&self) -> Log {
        self.shared.snapshot()
    }

    /// HTTP requests received so far (the next request number).
    pub fn requests_received(&self) -> u64 {
        self.shared.requests_received()
    }

    /// Changes the background consumer's share of every budget (0..=1).
    pub fn set_background_share(&self, share: f64) {
        self.shared.set_background_share(share);
    }

    /// Changes the share of inference requests refused with a 3505 capacity 429.
    pub fn set_capacity_rate(&self, rate: f64) {
        self.shared.set_capacity_rate(rate);
    }

    /// Turns rate-limit headers on or off.
    pub fn set_headers(&self, on: bool) {
        self.shared.set_headers(on);
    }

    /// Queues a fault for the next request that has no scripted fault (FIFO).
    pub fn push_fault(&self, fault: Fault) {
        self.shared.push_fault(fault);
    }

    /// Replaces the limits of `model` now (a tier change): its meters start afresh, and
    /// the log checks later admissions against the new limits.
    pub fn set_limits(&self, model: &str, limits: Limits) {
        self.shared
            .models
            .set_limits(model, &limits, self.shared.now());
    }

    /// Forgets the monthly consumption of every model (the month rolled over).
    pub fn reset_month(&self) {
        self.shared.models.reset_month(self.shared.now());
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Serves `config` on `listener` on the current tokio runtime, until the future is
/// dropped (for a binary). The background consumer and the schedule of changes run as
/// tasks of the same runtime.
pub async fn serve(config: Config, listener: TcpListener) {
    let shared = Arc::new(Shared::new(config));
    let _background = AbortOnDrop(tokio::spawn(background::run(shared.clone())));
    let _schedule = AbortOnDrop(tokio::spawn(server::run_schedule(shared.clone())));
    server::accept_loop(shared, listener).await;
}

/// Stops a task when the future that spawned it is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
