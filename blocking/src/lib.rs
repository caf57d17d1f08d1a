//! Blocking Mistral API client on [ureq] 3: every caller of a rate-limit budget paced by
//! one shared limiter, so no request is lost to HTTP 429 and none wastes the limit.
//!
//! # A first call
//!
//! ```no_run
//! use mistral_blocking::{ChatRequest, Client, Message};
//!
//! fn main() -> Result<(), mistral_blocking::Error> {
//!     // MISTRAL_API_KEY; MISTRAL_BASE_URL, MISTRAL_LIMITER, MISTRAL_LIMITS when set.
//!     let client = Client::from_env()?;
//!     let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hello")]);
//!     let reply = client.chat(&request)?;
//!     println!("{}", reply.text().unwrap_or_default());
//!     // What it took, and the limits the server announced.
//!     println!("{} attempt(s); {:?}", reply.trail.attempts, reply.limits.requests());
//!
//!     for chunk in client.chat_stream(request)? {
//!         print!("{}", chunk?.text().unwrap_or_default());
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A [`Client`] is cheap to clone and shared by threads (`Send + Sync`). Every endpoint
//! takes its request by value (`&request` clones it): [`Client::chat`],
//! [`Client::chat_stream`], [`Client::fim`], [`Client::embeddings`],
//! [`Client::moderations`], [`Client::list_models`]; [`Client::ocr`] (a budget of pages),
//! [`Client::classifications`] and [`Client::chat_classifications`],
//! [`Client::agent_completion`], [`Client::start_conversation`] and
//! [`Client::append_conversation`], [`Client::transcription`] (a multipart upload); the
//! Batch API's [`Client::upload_file`], [`Client::create_batch_job`],
//! [`Client::batch_job`], [`Client::cancel_batch_job`] and [`Client::file_content`]; and
//! [`Client::send`] for any path.
//!
//! # One budget, shared by every caller
//!
//! Mistral's limits belong to the organisation and the model: every thread, process and
//! key spends the same budget. Every client of a process for the same base URL and key
//! shares one in-process limiter by default: a call waits its turn in the limiter's line
//! and goes when the budget can take it, learning the real limits from every answer's
//! headers. Processes and hosts share one through a store, with no code change:
//!
//! | `MISTRAL_LIMITER` | shared by | the store |
//! |---|---|---|
//! | unset or `local` | the threads of this process | in-process (the default) |
//! | `file` or `file:/dir/` | the processes of one host | a locked state file ([`stores::FileLimiter`]) |
//! | `redis://host:6379/` | hosts | Redis (feature `redis`; `rediss://` for TLS) |
//!
//! Keys of one organisation spend one budget: name it with a budget id, in the
//! environment (`MISTRAL_LIMITER=redis://cache:6379/?budget=acme`, `file?budget=acme`)
//! or in code, and every client that names it shares it, whatever its key:
//!
//! ```no_run
//! use mistral_blocking::Client;
//!
//! # fn main() -> Result<(), mistral_blocking::Error> {
//! let key = std::env::var("MISTRAL_API_KEY").unwrap_or_default();
//! let client = Client::builder()
//!     .api_key(key)
//!     .file_limiter("/run/mistral/") // every process of this host, one state file
//!     .budget_id("acme") // one budget for every key that names it
//!     .build()?;
//! println!("{:?}", client.stats().limiter); // admitted at once, queued, time in line
//! # Ok(())
//! # }
//! ```
//!
//! [`Client::builder`] reads no environment variable; [`ClientBuilder::limiter_from_env`]
//! reads `MISTRAL_LIMITER`, [`ClientBuilder::shared_limiter`] names a store in code, and
//! [`ClientBuilder::limits`] (or `MISTRAL_LIMITS`) sets limits the server does not
//! announce. A store that fails never fails open: calls are admitted in-process at a
//! quarter of the last known rate until it answers again. [`stores`] has the details.
//!
//! # Priorities and deadlines
//!
//! Once callers queue, the line serves [`Priority::Interactive`] before
//! [`Priority::Default`] before [`Priority::Batch`], across processes too, and a lower
//! class still gets a reserved share ([`LimiterConfig::reserved`]). A call's deadline is
//! also how long it may wait in line: a call the budget cannot start in time leaves at
//! once with [`Error::RateLimited`] (`shared: true`, nothing sent), saying when it could
//! have gone.
//!
//! ```no_run
//! use std::time::Duration;
//! use mistral_blocking::{CallOptions, ChatRequest, Client, Error, Message, Priority};
//!
//! # fn main() -> Result<(), mistral_blocking::Error> {
//! // The nightly job's client: its calls yield to everyone else's.
//! let batch = Client::builder()
//!     .api_key(std::env::var("MISTRAL_API_KEY").unwrap_or_default())
//!     .priority(Priority::Batch)
//!     .build()?;
//! // One call a person waits on: first in line, and given up if not started within 5 s.
//! let now = CallOptions::new()
//!     .priority(Priority::Interactive)
//!     .deadline(Duration::from_secs(5));
//! let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
//! match batch.with_options(now).chat(request) {
//!     Ok(reply) => println!("{}", reply.text().unwrap_or_default()),
//!     Err(Error::RateLimited { shared: true, retry_after, .. }) => {
//!         eprintln!("not now: the budget could start it in {retry_after:?}")
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`CallOptions`] set per call what the client's [`RetryPolicy`] sets for all: the
//! deadline (300 s), the attempts (10), one attempt's timeout, the priority, whether a
//! request that may have run is sent again.
//!
//! # What the client does for you
//!
//! - A 429 from a spent window waits as long as that window needs, then retries; a 429
//!   that no wait fixes (no allowance for the model, a spent monthly quota) fails at once
//!   with an [`Error`] that says which.
//! - 5xx, capacity refusals, resets and timeouts are retried with jittered backoff, under
//!   the [`RetryPolicy`]'s attempt count and overall deadline.
//! - A stream is retried only before its first event; afterwards a stall ends it with
//!   [`StreamFailure::Idle`] and a cut with [`StreamFailure::Cut`].
//! - A request that may have reached the server and got no answer is not sent again
//!   (it may have been served, and billed): [`Error::OutcomeUnknown`]; a server that
//!   cannot be reached is reported after a few quick attempts.
//! - The key never goes over plain HTTP to a non-loopback host (unless allowed), never
//!   follows a redirect and never appears in `Debug` output or in an error.
//! - Every error is one [`Error`] (shared with `mistral-async`) that says what a person
//!   needs: which limit, how long to wait, the correlation id.
//!
//! [ureq]: https://docs.rs/ureq/3
//!
//! # Logging
//!
//! Events go to `tracing` under the target `mistral_blocking`
//! (`RUST_LOG=mistral_blocking=debug`), inside an INFO span `mistral_call` per call
//! with `method`, `path`, `model`, and at its end `attempts` and `correlation_id`: 429s
//! and calls waiting past [`mistral_core::LONG_CALL`] at WARN, retries, waits and
//! failures at DEBUG. The shared limiter explains its waits under `mistral_limiter`: a
//! budget whose callers keep queueing is summed up at INFO (what binds, the pace, when
//! the next goes), time really waited in line at WARN, each admission at DEBUG; the
//! stores log outages under `mistral_limiter::store` and `mistral_blocking::stores`.
//! The key is in none of them.
//!
//! **ureq-proto's wire dump.** Under this client, ureq-proto hex-dumps every byte it
//! sends with `log::trace!` under [`WIRE_DUMP_TARGET`] (`ureq_proto::util`): the request
//! head, **the `Authorization` header with the API key included**, and the body. ureq 3
//! has no setting to turn it off, so a program whose `log` logger records TRACE for that
//! target (e.g. `tracing-subscriber` at TRACE, which forwards `log` records, or
//! `RUST_LOG=trace` with `env_logger`) writes the key to its logs. The client warns once
//! (WARN, target `mistral_blocking`) when that is so. Filter the target out
//! (`RUST_LOG=trace,ureq_proto=off`), or turn on the opt-in feature `no-wire-trace`,
//! which compiles every `log` TRACE record of the whole program out (the application's
//! own too; `tracing`'s own events are not affected).

#![deny(missing_docs)]

mod admission;
mod chat_stream;
mod client;
mod endpoints;
mod exchange;
mod forecast;

pub use chat_stream::ChatStream;
pub use client::{Client, ClientBuilder, WIRE_DUMP_TARGET};
pub use mistral_core::request::{DEFAULT_CONNECT_TIMEOUT, MAX_RESPONSE_BYTES};
pub mod stores;

/// The sans-IO core this client drives, for what the re-exports below leave out.
pub use mistral_core;
pub use mistral_core::models::*;
pub use mistral_core::request::DEFAULT_BASE_URL;
// What a user of the client names: requests and replies, options, errors, limits,
// statistics. The limiter's protocol (for a limiter of your own) is in `stores`.
/// The quota forecast ([`Client::forecast`]).
pub use mistral_core::forecast::{Forecast, QuotaForecast, Reset, RunsOut};
pub use mistral_core::{
    ApiKey, ApiRequest, Bucket, CallOptions, Error, Gateway, KeyError, LimiterConfig,
    LimiterCounts, Limits, Origin, Priority, Quota, RateLimitedCounts, RateLimits, Reply,
    ReservedShares, ResponseInfo, RetryPolicy, Stats, StreamFailure, TierCounts, Trail,
    TransportKind, Window,
};
/// The shared limiter: its arithmetic, its line of waiting callers, its stores'
/// decisions.
pub use mistral_limiter;
