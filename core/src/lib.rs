//! Sans-IO core of the Mistral API client.
//!
//! This crate decides everything about a Mistral API call and does none of the I/O: no
//! sockets, files, clocks, sleeps or threads. The blocking (`mistral-blocking`) and async
//! (`mistral-async`) clients drive it; each converts types, performs one HTTP exchange at
//! a time, sleeps when told, and maps its library's errors to [`TransportKind`]s.
//!
//! What lives here:
//!
//! - [`models`]: typed requests and responses (serde), lenient when decoding;
//! - [`ApiKey`], [`ApiRequest`], [`Target`]: request building;
//! - [`classify`], [`Verdict`] and [`RateLimits`]: what a response means, 429s told
//!   apart (a spent window, no allowance, a monthly quota, Mistral's capacity, a
//!   spending cap): the one word the call acts on, its [`Report`] hands to the limiter
//!   and its [`Error`] is made from; [`Origin`]: who refused (the Mistral API, a gateway
//!   in between, this client's shared budget);
//! - [`RetryPolicy`] and [`Call`]: the retry/backoff state machine, and [`Reply`], the
//!   answer it ends with;
//! - [`Priority`]: which calls a saturated shared budget serves first;
//! - [`sse`] and [`StreamReader`]: event streams (idle timeout, cut detection, usage);
//! - [`limiter`]: the shared limiter's protocol ([`Limiter`]: a call waits in the
//!   limiter's line until it may go, polled with a waker) and its configuration
//!   ([`LimiterConfig`], `MISTRAL_LIMITER`, `MISTRAL_LIMITS`); the limiter itself (the
//!   budget's arithmetic, the line, what its stores decide) is the `mistral-limiter`
//!   crate;
//! - [`Telemetry`]: statistics and `tracing` events, the same for both clients;
//! - [`forecast`]: the quota forecast (what remains of each limit, when it resets, the
//!   rate it is spent at, when it runs out);
//! - [`Settings`]: what both clients' builders collect and check;
//! - [`Error`]: the one error type of both clients;
//! - [`redact`]: the one redaction every string from the network or the configuration
//!   goes through before it reaches an error, a log or a `Display`.
//!
//! # Driving a call
//!
//! A [`Call`] is polled for an [`Action`], told the limiter's answer with
//! [`Call::handle_grant`] and what came of an attempt with [`Call::handle`]. `now` is always an argument; the call owns every timer (backoff, attempt
//! timeout, deadline) and returns instants to sleep until.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use mistral_core::{Action, ApiKey, ApiRequest, Call, Grant, Outcome, RetryPolicy, Target};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let target = Target::new("https://api.mistral.ai", ApiKey::new("my-key")?, false)?;
//! let body = serde_json::json!({"model": "mistral-small-latest", "messages": []});
//! let request = ApiRequest::post_json("/v1/chat/completions", &body)?
//!     .for_model("mistral-small-latest", 100);
//!
//! // A scripted server: a spent minute window (60 per minute), then a success.
//! let mut script = vec![
//!     http::Response::builder()
//!         .status(429)
//!         .header("x-ratelimit-limit-req-minute", "60")
//!         .header("x-ratelimit-remaining-req-minute", "0")
//!         .body(Bytes::from_static(br#"{"message":"Requests rate limit exceeded"}"#))?,
//!     http::Response::builder()
//!         .status(200)
//!         .body(Bytes::from_static(br#"{"choices":[],"usage":{"total_tokens":12}}"#))?,
//! ]
//! .into_iter();
//!
//! let start = Instant::now();
//! let mut now = start; // a virtual clock: it jumps to each wait
//! let mut call = Call::new(&target, &request, &RetryPolicy::default(), now, 42)?;
//! let result = loop {
//!     match call.poll(now) {
//!         // Ask the shared limiter to admit it (here: none, so go at once; a driver
//!         // waits in the limiter's line: `Limiter::poll_admit`).
//!         Action::Reserve(_ask) => call.handle_grant(now, Grant::Now),
//!         // Perform one HTTP exchange and hand back what came of it.
//!         Action::Send(attempt) => {
//!             let response = script.next().expect("the call sent too many attempts");
//!             call.handle(now, attempt.id, Outcome::Response(response));
//!         }
//!         // Sleep (a real driver sleeps until `until`; waking early is harmless).
//!         Action::Wait { until, why: _ } => now = until,
//!         // Feed the shared limiter what the response showed.
//!         Action::Report(_report) => {}
//!         Action::Done(result) => break result,
//!     }
//! };
//! let success = result?;
//! assert_eq!(success.trail.attempts, 2);
//! // One request per minute-window unit comes back every second: the call waited
//! // at least that long, not a blind 1–2 s backoff times n.
//! assert!(success.trail.waited >= Duration::from_secs(1));
//! assert!(now - start < Duration::from_secs(2));
//! # Ok(())
//! # }
//! ```
//!
//! # The contract
//!
//! What a driver MUST and SHOULD do, and what the call guarantees in turn, is stated
//! on [`Call`]. In short: poll until [`Action::Done`]; answer each `Reserve` with
//! [`Call::handle_grant`] and each `Send` with [`Call::handle`] and the attempt's id;
//! end every attempt by its [`Attempt::ends_at`]; sleep when told. The core never
//! panics on input (bodies, headers, absurd durations, a `now` that goes backwards);
//! misuse of the protocol panics with a message.

pub mod action;
pub mod call;
pub mod error;
pub mod forecast;
pub mod key;
pub mod limiter;
pub mod models;
pub mod multipart;
pub mod options;
pub mod origin;
pub mod policy;
pub mod priority;
pub mod ratelimits;
pub mod reader;
pub mod redact;
pub mod reply;
pub mod request;
pub mod settings;
pub mod sse;
pub mod telemetry;
pub mod verdict;

pub use action::{
    Action, Ask, Attempt, AttemptId, Grant, Outcome, Report, Retry, Sizing, Ticket, TokenUsage,
    WaitReason, steady_timeout,
};
pub use call::{Call, LONG_CALL, LongCall};
pub use error::{
    Cause, Delivery, Error, ResponseInfo, StreamFailure, Trail, TransportError, TransportKind,
};
pub use key::{ApiKey, KeyError};
pub use limiter::{Admit, Limiter, LimiterConfig, Limits, NoLimiter, Place};
pub use options::CallOptions;
pub use origin::{Gateway, Origin};
pub use policy::{Backoff, RetryPolicy};
pub use priority::{Priority, ReservedShares};
pub use ratelimits::{Bucket, Quota, RateLimits, Window};
pub use reader::{StreamItem, StreamReader};
pub use redact::Redactor;
pub use reply::Reply;
pub use request::{ApiRequest, CostUnit, ReplyBody, Target, estimate_tokens};
pub use settings::{Resolved, Settings};
pub use telemetry::{LimiterCounts, LogTarget, RateLimitedCounts, Stats, Telemetry, TierCounts};
pub use verdict::{Classification, LimiterSignal, Verdict, classify, classify_event};
