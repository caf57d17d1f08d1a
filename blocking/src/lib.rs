//! Blocking Mistral API client on [ureq] 3 that never loses a request to HTTP 429.
//!
//! Every decision (what a response means, whether and when to retry, how long to wait,
//! what a stream's end means) is taken by the sans-IO core, [`mistral_core`]. This crate
//! only drives it: it converts types, performs one HTTP exchange at a time, sleeps when
//! the core says so and maps ureq's errors to [`TransportKind`]s.
//!
//! ```no_run
//! use mistral_blocking::{ChatRequest, Client, Message};
//!
//! # fn main() -> Result<(), mistral_blocking::Error> {
//! let client = Client::from_env()?; // MISTRAL_API_KEY, and MISTRAL_BASE_URL when set
//! let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hello")]);
//!
//! let reply = client.chat(&request)?;
//! println!("{}", reply.text().unwrap_or_default());
//! println!("after {} attempt(s); limits: {:?}", reply.trail.attempts, reply.limits.requests());
//!
//! for chunk in client.chat_stream(&request)? {
//!     print!("{}", chunk?.text().unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```
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
//! - The key never goes over plain HTTP to a non-loopback host (unless allowed), never
//!   follows a redirect and never appears in `Debug` output or in an error.
//!
//! [ureq]: https://docs.rs/ureq/3
//!
//! # Logging
//!
//! Events go to `tracing` under the target `mistral_blocking`
//! (`RUST_LOG=mistral_blocking=debug`), inside an INFO span `mistral_call` per call
//! with `method`, `path`, `model`, and at its end `attempts` and `correlation_id`: 429s
//! and calls waiting past [`mistral_core::LONG_CALL`] at WARN, retries, waits and
//! failures at DEBUG. The key is in none of them.
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
mod exchange;

pub use chat_stream::ChatStream;
pub use client::{Client, ClientBuilder, WIRE_DUMP_TARGET};
pub use mistral_core::request::{DEFAULT_CONNECT_TIMEOUT, MAX_RESPONSE_BYTES};
pub mod stores;

/// The sans-IO core this client drives, for what the re-exports below leave out.
pub use mistral_core;
pub use mistral_core::models::*;
pub use mistral_core::request::DEFAULT_BASE_URL;
pub use mistral_core::{
    Admit, ApiKey, ApiRequest, Ask, Bucket, CallOptions, Error, Grant, KeyError, Limiter,
    LimiterConfig, Limits, NoLimiter, Place, Priority, Quota, RateLimitedCounts, RateLimits, Reply,
    Report, ReservedShares, ResponseInfo, Retry, RetryPolicy, Stats, StreamFailure, Trail,
    TransportKind, Verdict, WaitReason, Window,
};
/// The shared limiter: its arithmetic, its line of waiting callers, its stores'
/// decisions.
pub use mistral_limiter;
pub use mistral_limiter::LocalLimiter;
