//! Async Mistral API client (reqwest + tokio): every caller of a rate-limit budget paced
//! by one shared limiter, so no request is lost to HTTP 429 and none wastes the limit.
//!
//! # A first call
//!
//! ```no_run
//! use mistral_async::{ChatRequest, Client, Message};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mistral_async::Error> {
//!     // MISTRAL_API_KEY; MISTRAL_BASE_URL, MISTRAL_LIMITER, MISTRAL_LIMITS when set.
//!     let client = Client::from_env()?;
//!     let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hello")]);
//!     let reply = client.chat(&request).await?;
//!     println!("{}", reply.text().unwrap_or_default());
//!     // What it took, and the limits the server announced.
//!     println!("{} attempt(s); {:?}", reply.trail.attempts, reply.limits.requests());
//!
//!     let mut stream = client.chat_stream(request).await?;
//!     while let Some(chunk) = stream.next_chunk().await {
//!         print!("{}", chunk?.text().unwrap_or_default());
//!     }
//!     Ok(())
//! }
//! ```
//!
//! A [`Client`] is cheap to clone; clones share connections, statistics
//! ([`Client::stats`]) and the limiter. Every future is `Send` (calls run inside
//! `tokio::spawn`), and every endpoint takes its request by value, so many calls at once
//! are a `buffer_unordered` away: [`Client::chat`], [`Client::chat_stream`],
//! [`Client::fim`], [`Client::embeddings`], [`Client::moderations`],
//! [`Client::list_models`]; [`Client::ocr`] (a budget of pages),
//! [`Client::classifications`] and [`Client::chat_classifications`],
//! [`Client::agent_completion`], [`Client::start_conversation`] and
//! [`Client::append_conversation`], [`Client::transcription`] (a multipart upload); the
//! Batch API's [`Client::upload_file`], [`Client::create_batch_job`],
//! [`Client::batch_job`], [`Client::cancel_batch_job`] and [`Client::file_content`]; and
//! [`Client::send`] for any path.
//!
//! # One budget, shared by every caller
//!
//! Mistral's limits belong to the organisation and the model: every task, process and
//! key spends the same budget. Every client of a process for the same base URL and key
//! shares one in-process limiter by default: a call waits its turn in the limiter's line
//! (a parked task, no worker held) and goes when the budget can take it, learning the
//! real limits from every answer's headers. Processes and hosts share one through a
//! store, with no code change:
//!
//! | `MISTRAL_LIMITER` | shared by | the store |
//! |---|---|---|
//! | unset or `local` | the tasks and threads of this process | in-process (the default) |
//! | `file` or `file:/dir/` | the processes of one host | a locked state file ([`stores::FileLimiter`]), on blocking threads |
//! | `redis://host:6379/` | hosts | Redis (feature `redis`; `rediss://` for TLS), one multiplexed connection |
//!
//! The blocking client (`mistral-blocking`) shares the same budgets through the same file
//! or Redis. Keys of one organisation spend one budget: name it with a budget id, in the
//! environment (`MISTRAL_LIMITER=redis://cache:6379/?budget=acme`, `file?budget=acme`)
//! or in code, and every client that names it shares it, whatever its key:
//!
//! ```no_run
//! use mistral_async::Client;
//!
//! # fn main() -> Result<(), mistral_async::Error> {
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
//! use mistral_async::{CallOptions, ChatRequest, Client, Error, Message, Priority};
//!
//! # async fn demo() -> Result<(), mistral_async::Error> {
//! // A service's client: the requests a person waits on.
//! let client = Client::from_env()?;
//! // The nightly job's calls, on the same budget, yield to them.
//! let batch = client.with_options(CallOptions::new().priority(Priority::Batch));
//! // One call a person waits on: first in line, and given up if not started within 5 s.
//! let now = CallOptions::new()
//!     .priority(Priority::Interactive)
//!     .deadline(Duration::from_secs(5));
//! let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
//! match client.with_options(now).chat(request).await {
//!     Ok(reply) => println!("{}", reply.text().unwrap_or_default()),
//!     Err(Error::RateLimited { shared: true, retry_after, .. }) => {
//!         eprintln!("not now: the budget could start it in {retry_after:?}")
//!     }
//!     Err(e) => return Err(e),
//! }
//! # drop(batch);
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
//!   the [`RetryPolicy`]'s attempt count and overall deadline. A [`ChatStream`] is
//!   retried only before its first event; after that a stalled stream ends with
//!   [`StreamFailure::Idle`] and a cut one with [`StreamFailure::Cut`].
//! - A request that may have reached the server and got no answer is not sent again
//!   (it may have been served, and billed): [`Error::OutcomeUnknown`]; a server that
//!   cannot be reached is reported after a few quick attempts.
//! - The key never goes over plain HTTP to a non-loopback host (unless allowed), never
//!   follows a redirect and never appears in `Debug` output or in an error.
//! - Time is tokio's: under a paused clock (`#[tokio::test(start_paused = true)]`) waits
//!   run in virtual time.
//! - There is one error type, [`Error`], shared with the blocking client.
//!
//! This crate only drives the sans-IO [`mistral_core`], which decides everything (what a
//! response means, whether and when to retry, how long to wait): it performs one HTTP
//! exchange at a time with reqwest, sleeps with tokio when told, and maps reqwest's
//! errors to [`TransportKind`]s.
//!
//! # Logging
//!
//! Events go to `tracing` under the target `mistral_async`
//! (`RUST_LOG=mistral_async=debug`), inside an INFO span `mistral_call` per call
//! with `method`, `path`, `model`, and at its end `attempts` and `correlation_id`: 429s
//! and calls waiting past [`mistral_core::LONG_CALL`] at WARN, retries, waits and
//! failures at DEBUG. The shared limiter explains its waits under `mistral_limiter`: a
//! budget whose callers keep queueing is summed up at INFO (what binds, the pace, when
//! the next goes), time really waited in line at WARN, each admission at DEBUG; the
//! stores log outages under `mistral_limiter::store` and `mistral_async::stores`. The
//! key is in none of them.

#![deny(missing_docs)]

mod client;
mod clock;
mod endpoints;
mod forecast;
pub mod stores;
mod streaming;
mod tls;
mod transport;

pub use client::{Client, ClientBuilder};
pub use mistral_core::request::{DEFAULT_CONNECT_TIMEOUT, MAX_RESPONSE_BYTES};
pub use streaming::ChatStream;
pub use tls::{http_client_builder, http_client_builder_with_roots};

/// The sans-IO core this client drives, for what the re-exports above leave out.
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
