//! Async Mistral API client (reqwest + tokio) that paces itself and never loses a
//! request to HTTP 429.
//!
//! This crate is a thin driver of the sans-IO [`mistral_core`]: the core builds every
//! request, reads every response, decides whether and when to retry and how long to
//! wait; this crate performs one HTTP exchange at a time with reqwest, sleeps with tokio
//! when told, and maps reqwest's errors to [`TransportKind`]s. It has the same surface
//! and behaviour as the blocking client, `mistral-blocking`.
//!
//! ```no_run
//! use mistral_async::{ChatRequest, Client, Message};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mistral_async::Error> {
//!     let client = Client::from_env()?; // MISTRAL_API_KEY, and MISTRAL_BASE_URL if set
//!     let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hello")]);
//!     let reply = client.chat(&request).await?;
//!     println!("{}", reply.text().unwrap_or_default());
//!     println!("{} attempt(s), limits: {:?}", reply.trail.attempts, reply.limits.requests());
//!     Ok(())
//! }
//! ```
//!
//! - A [`Client`] is cheap to clone; clones share connections, statistics
//!   ([`Client::stats`]) and the limiter, an [`AsyncLimiter`](stores::AsyncLimiter)
//!   awaited before every attempt: in-process ([`LocalLimiter`], any [`Limiter`]), or
//!   one of [`stores`] (a state file, Redis) that never blocks the runtime.
//! - Every future is `Send`: calls run fine inside `tokio::spawn`.
//! - Time is tokio's: under a paused clock (`#[tokio::test(start_paused = true)]`) waits
//!   run in virtual time.
//! - There is one error type, [`Error`], shared with the blocking client. A
//!   [`ChatStream`] is retried only before its first event; after that a stalled stream
//!   ends with [`StreamFailure::Idle`] and a cut one with [`StreamFailure::Cut`].
//!
//! # Logging
//!
//! Events go to `tracing` under the target `mistral_async`
//! (`RUST_LOG=mistral_async=debug`), inside an INFO span `mistral_call` per call
//! with `method`, `path`, `model`, and at its end `attempts` and `correlation_id`: 429s
//! and calls waiting past [`mistral_core::LONG_CALL`] at WARN, retries, waits and
//! failures at DEBUG. The key is in none of them.

#![deny(missing_docs)]

mod client;
mod clock;
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
