//! The one error type both clients return.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;
use std::time::Duration;

use crate::key::KeyError;
use crate::models::FieldError;
use crate::origin::Origin;
use crate::ratelimits::{Bucket, RateLimits, Window};
use crate::redact::Redactor;

/// Largest response body read in full (a larger one is
/// [`TransportError::body_too_large`], not memory exhaustion). Also
/// `mistral_core::request::MAX_RESPONSE_BYTES`.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// What a failed call had done before it gave up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trail {
    /// HTTP attempts made.
    pub attempts: u32,
    /// Time spent waiting (backoff, pacing, server hints, spent windows).
    pub waited: Duration,
    /// Time from the start of the call to the end.
    pub elapsed: Duration,
}

impl fmt::Display for Trail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "{} attempt{s}, {:.1} s waited",
            self.attempts,
            self.waited.as_secs_f64()
        )
    }
}

/// What the server said, kept with every error that came from a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    /// HTTP status of the response (`None`: no response came — the shared limiter
    /// ended the call before it was sent).
    pub status: Option<StatusCode>,
    /// The `mistral-correlation-id` header (what Mistral support asks for).
    pub correlation_id: Option<String>,
    /// The body's `code` field, when it had one.
    pub code: Option<String>,
    /// The body's message (an object message is flattened to text).
    pub message: Option<String>,
    /// The start of the body, at most [`ResponseInfo::EXCERPT_LIMIT`] bytes, as text.
    pub excerpt: String,
    /// Rate-limit headers of the response (and a wait its body named, as
    /// [`RateLimits::retry_after`]).
    pub limits: RateLimits,
    /// Who refused: the Mistral API, a gateway in between, this client's shared budget,
    /// or unknown ([`crate::origin`]).
    pub origin: Origin,
}

impl ResponseInfo {
    /// Largest body excerpt kept, in bytes.
    pub const EXCERPT_LIMIT: usize = 512;

    /// The status as a number (`None` without a response), for code written against
    /// the `u16` status of earlier versions.
    pub fn status_u16(&self) -> Option<u16> {
        self.status.map(|s| s.as_u16())
    }

    /// The status for messages: its number, or `no response`.
    fn status_text(&self) -> String {
        self.status_u16()
            .map_or_else(|| "no response".to_owned(), |s| s.to_string())
    }

    /// `; refused by <origin>` when the origin is known, then [`ResponseInfo::suffix`].
    fn refusal_suffix(&self) -> String {
        match self.origin {
            Origin::Unknown => self.suffix(),
            origin => format!("; refused by {origin}{}", self.suffix()),
        }
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(message) = &self.message {
            s.push_str(&format!(": {message}"));
        } else if !self.excerpt.is_empty() {
            s.push_str(&format!(": {}", self.excerpt));
        }
        if let Some(code) = &self.code {
            s.push_str(&format!(" (code {code})"));
        }
        if let Some(id) = &self.correlation_id {
            s.push_str(&format!(" [correlation id {id}]"));
        }
        s
    }
}

/// What went wrong on the way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// The connection could not be made (refused, unreachable, DNS).
    Connect,
    /// The connection was closed or reset before the response was complete.
    Reset,
    /// The attempt took longer than its timeout.
    Timeout,
    /// TLS failed (certificate, handshake).
    Tls,
    /// The peer did not speak valid HTTP.
    Protocol,
    /// Anything else the HTTP library reported.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "could not connect",
            TransportKind::Reset => "connection closed early",
            TransportKind::Timeout => "timed out",
            TransportKind::Tls => "TLS failed",
            TransportKind::Protocol => "invalid HTTP",
            TransportKind::Other => "transport error",
        })
    }
}

/// The HTTP library's own error under an [`Error::Transport`] (its
/// [`std::error::Error::source`]): `reqwest::Error`, `ureq::Error` or an `io::Error`,
/// for [`Cause::get_ref`] and `downcast_ref`. Its `Display` and `Debug` show the
/// error's text with the key removed; its `source()` is the library error's own.
///
/// Two causes always compare equal (an error's equality is what the core decided).
#[derive(Clone)]
pub struct Cause {
    error: Arc<dyn std::error::Error + Send + Sync + 'static>,
    redactor: Redactor,
}

impl Cause {
    /// The library's error, to downcast:
    /// `cause.get_ref().downcast_ref::<std::io::Error>()`.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }

    fn text(&self) -> String {
        self.redactor.redact(&self.error.to_string())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cause").field(&self.text()).finish()
    }
}

impl PartialEq for Cause {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cause {}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Whether the server may hold a request whose attempt failed: what decides if sending
/// it again could run it twice ([`TransportError::delivery`]).
///
/// A driver says [`Delivery::NotSent`] only when its HTTP library shows that no byte of
/// the request reached the connection: the name did not resolve, the connection or its
/// TLS handshake failed, the library gave the request back unsent (a pooled connection
/// found closed), or the request could not be written in full. Anything else — the
/// request written and the connection closed, reset or silent before a response — is
/// [`Delivery::MaybeDelivered`]: the server may have read it, run it and billed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// The request did not reach the server whole: sending it again cannot run it twice.
    NotSent,
    /// The request was written (or may have been) and no answer came: its outcome is
    /// unknown.
    MaybeDelivered,
}

/// A failure an HTTP library reported, as the driver maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// Which kind of failure.
    pub kind: TransportKind,
    /// The library's own words (never contains the key: drivers pass only the error text).
    pub message: String,
    /// The library's error itself, when the driver kept it
    /// ([`TransportError::with_source`]).
    pub source: Option<Cause>,
    /// Whether the server may have the request ([`TransportError::new`] derives it from
    /// the kind; a driver that knows better says so with
    /// [`TransportError::with_delivery`]).
    pub delivery: Delivery,
}

impl TransportError {
    /// A transport error of `kind`. Its [`Delivery`] follows from the kind:
    /// [`TransportKind::Connect`] and [`TransportKind::Tls`] fail before the request is
    /// written ([`Delivery::NotSent`]); every other kind may come after it was
    /// ([`Delivery::MaybeDelivered`], the safe assumption).
    pub fn new(kind: TransportKind, message: impl Into<String>) -> Self {
        let delivery = match kind {
            TransportKind::Connect | TransportKind::Tls => Delivery::NotSent,
            _ => Delivery::MaybeDelivered,
        };
        Self {
            kind,
            message: message.into(),
            source: None,
            delivery,
        }
    }

    /// The same error with `delivery` (what the driver knows of how far the request got).
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// The same error with the library's own error kept as its source.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Cause {
            error: Arc::new(source),
            redactor: Redactor::generic(),
        });
        self
    }

    /// The source as an [`Error::Transport`] carries it, `redactor` removing the key
    /// from its text.
    pub fn cause(&self, redactor: &Redactor) -> Option<Cause> {
        self.source.as_ref().map(|cause| Cause {
            error: Arc::clone(&cause.error),
            redactor: redactor.clone(),
        })
    }

    /// A response body larger than the client reads ([`MAX_RESPONSE_BYTES`]): the same kind and words from both
    /// clients ([`TransportKind::Protocol`]: not retried — the same request would get the
    /// same body).
    pub fn body_too_large() -> Self {
        Self::new(
            TransportKind::Protocol,
            format!(
                "the response body is larger than the client's limit of {} MiB",
                MAX_RESPONSE_BYTES >> 20
            ),
        )
    }

    /// Whether this is [`TransportError::body_too_large`] (whichever driver made it).
    pub fn is_body_too_large(&self) -> bool {
        let too_large = Self::body_too_large();
        self.kind == too_large.kind && self.message == too_large.message
    }

    /// A host name that did not resolve, in the same kind and words from both clients
    /// ([`TransportKind::Connect`]: retried like any connection failure, since resolvers
    /// fail transiently; a misspelt host still ends at the attempts or the deadline).
    pub fn dns(detail: impl fmt::Display) -> Self {
        Self::new(
            TransportKind::Connect,
            format!("could not resolve the host name: {detail}"),
        )
    }
}

/// How a stream ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamFailure {
    /// No bytes arrived for longer than the idle timeout.
    Idle(Duration),
    /// The connection ended before `data: [DONE]`.
    Cut,
    /// One event was larger than the decoder's bound.
    EventTooLarge(usize),
    /// An event did not decode as a chunk.
    BadEvent,
    /// The server sent an error object as an event (its classification is the
    /// [`Error::Stream`]'s `event`).
    ServerError,
}

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamFailure::Idle(d) => write!(f, "no data for {:.1} s", d.as_secs_f64()),
            StreamFailure::Cut => f.write_str("the stream ended before [DONE]"),
            StreamFailure::EventTooLarge(n) => write!(f, "an event was larger than {n} bytes"),
            StreamFailure::BadEvent => f.write_str("an event did not decode as a chunk"),
            StreamFailure::ServerError => f.write_str("the server sent an error event"),
        }
    }
}

/// Every way a Mistral call can fail. Shared by the blocking and the async client.
///
/// Each variant carries what a person needs to act: which limit, how long to wait,
/// what the server said and the correlation id to quote. No variant ever contains the
/// API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rate limit refused the call and retrying did not get through in time.
    #[error(
        "rate limited{}{} after {trail}{}{}",
        describe_bucket(*bucket, *window, *limit, *remaining),
        if *shared { " (stopped by the shared limiter)" } else { "" },
        retry_after.map(|d| format!("; come back in {:.1} s", d.as_secs_f64())).unwrap_or_default(),
        response.refusal_suffix()
    )]
    RateLimited {
        /// Which bucket refused, when the response said.
        bucket: Option<Bucket>,
        /// Over which window.
        window: Option<Window>,
        /// The limit, when announced.
        limit: Option<u64>,
        /// What remained, when announced.
        remaining: Option<u64>,
        /// How long until the limit should admit again.
        retry_after: Option<Duration>,
        /// `true` when the shared limiter, not the server, ended the call
        /// ([`Error::origin`] is then [`Origin::SharedBudget`]; `response` is the last
        /// refusal a server sent, if any).
        shared: bool,
        /// Attempts and waiting.
        trail: Trail,
        /// The last refusal.
        response: Box<ResponseInfo>,
    },
    /// This model has no allowance at all on this plan (a limit of 0): retrying never helps.
    #[error(
        "no allowance for {}: its {} limit is 0 on this plan; retrying will not help{}",
        model.as_deref().unwrap_or("this model"),
        bucket.map(|b| b.to_string()).unwrap_or_else(|| "rate".into()),
        response.suffix()
    )]
    NoAllowance {
        /// The model refused.
        model: Option<String>,
        /// Which limit is 0.
        bucket: Option<Bucket>,
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// The monthly token quota is spent: nothing will pass until the month rolls over.
    #[error(
        "monthly quota spent{}; calls fail until it renews{}",
        limit.map(|l| format!(" ({l} tokens per month, {} left)", remaining.unwrap_or(0))).unwrap_or_default(),
        response.suffix()
    )]
    MonthlyQuota {
        /// The monthly limit, when announced.
        limit: Option<u64>,
        /// What remained, when announced.
        remaining: Option<u64>,
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// A spending cap is reached — a gateway's budget (LiteLLM's `budget_exceeded`), an
    /// `insufficient_quota`, a monthly spend limit, a 402 — and no wait within a call
    /// fixes it: never retried. [`ResponseInfo::origin`] says who set it.
    #[error(
        "spending cap reached{}: retrying will not help; raise the cap or wait for it to \
         renew{}",
        match response.origin {
            Origin::Unknown => String::new(),
            origin => format!(" at {origin}"),
        },
        response.suffix()
    )]
    SpendingCap {
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// Mistral was short of capacity for this model (`3505`), even after retries.
    #[error("Mistral is out of capacity for this model after {trail}{}", response.suffix())]
    Capacity {
        /// Attempts and waiting.
        trail: Trail,
        /// The last refusal.
        response: Box<ResponseInfo>,
    },
    /// The key was refused (401).
    #[error("the API key was refused (401): check MISTRAL_API_KEY{}", response.suffix())]
    Unauthorized {
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// The key may not use this model or endpoint (403).
    #[error("forbidden (403): this key may not use this model or endpoint{}", response.suffix())]
    Forbidden {
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// The request itself was refused (400, 422 and other 4xx but 404).
    #[error("bad request ({}){}{}", response.status_text(), response.suffix(), describe_details(details))]
    BadRequest {
        /// Field-level details of a validation error (422).
        details: Vec<FieldError>,
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// The server has nothing at the request's path (404): the base URL (or, for
    /// `send`, the path) is wrong — Mistral's gateway says `no Route matched`. The
    /// message shows the URL path asked for and what to check.
    #[error(
        "not found (404): the server has nothing at {path}; check the base URL \
         (MISTRAL_BASE_URL or the builder's): it is the API's root, such as \
         https://api.mistral.ai, under which requests go to /v1/…{}",
        response.suffix()
    )]
    NotFound {
        /// The URL path that was asked for (`/v1/chat/completions` under the base URL's
        /// own path, if it has one).
        path: String,
        /// The refusal.
        response: Box<ResponseInfo>,
    },
    /// The server failed (5xx), even after retries.
    #[error("server error ({}) after {trail}{}", response.status_text(), response.suffix())]
    Server {
        /// Attempts and waiting.
        trail: Trail,
        /// The last failure.
        response: Box<ResponseInfo>,
    },
    /// The request never got a response.
    #[error("{kind}: {message} (after {trail})")]
    Transport {
        /// What kind of failure.
        kind: TransportKind,
        /// The HTTP library's words.
        message: String,
        /// Attempts and waiting.
        trail: Trail,
        /// The HTTP library's error ([`std::error::Error::source`] of this one), when
        /// the driver had one.
        source: Option<Cause>,
    },
    /// The request was sent (or may have been) and no answer came — the connection was
    /// closed, reset or silent after the request was written, or a success's body was
    /// cut — so the server may have run it, and billed it. A request that is not
    /// idempotent (every `POST`: chat, FIM, embeddings) is not sent again by default
    /// (RFC 9110 §9.2.2), since each sending may run it once more: the call ends here.
    ///
    /// To send it again, call again (after `retry_after`, if you like) knowing it may
    /// run twice, or let the client do it: `RetryPolicy::retry_unknown_outcome` per
    /// client, `CallOptions::retry_unknown_outcome` per call. A request that never
    /// reached the server (the connection could not be made) is retried as before.
    /// [`Error::is_retryable`] is `false` for it, so that generic retry loops do not
    /// send it twice by accident.
    #[error(
        "outcome unknown: {kind} after the request was sent ({message}); the server may \
         have run it (and billed it), so it was not sent again{} (after {trail})",
        retry_after
            .map(|d| format!("; to send it anyway, try again in {}", seconds_or_ms(d)))
            .unwrap_or_default()
    )]
    OutcomeUnknown {
        /// What kind of failure.
        kind: TransportKind,
        /// The HTTP library's words.
        message: String,
        /// When the caller could send it again, should it choose to: the wait the retry
        /// policy would have used.
        retry_after: Option<Duration>,
        /// Attempts and waiting.
        trail: Trail,
        /// The HTTP library's error ([`std::error::Error::source`] of this one), when
        /// the driver had one.
        source: Option<Cause>,
    },
    /// The overall deadline passed before the call could succeed.
    #[error(
        "deadline of {:.1} s reached after {trail}{}",
        deadline.as_secs_f64(),
        last.as_ref().map(|e| format!("; last: {e}")).unwrap_or_default()
    )]
    Deadline {
        /// The configured deadline.
        deadline: Duration,
        /// Attempts and waiting.
        trail: Trail,
        /// What the last attempt got, if anything.
        last: Option<Box<Error>>,
    },
    /// The server answered with a redirect (3xx). Redirects are never followed: the
    /// `Authorization` header (the key) must not go where a response points. Point the
    /// base URL at the final address instead.
    #[error(
        "redirect refused ({}){}: the client does not follow redirects; set the base URL to \
         the server's real address{}",
        response.status_text(),
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default(),
        response.suffix()
    )]
    Redirect {
        /// Where the response pointed (redacted: no credentials, no query).
        location: Option<String>,
        /// The response.
        response: Box<ResponseInfo>,
    },
    /// A success response whose body is not what was asked for: not JSON, not the
    /// expected shape (a chat completion without `choices`), or holding the API key (a
    /// proxy echoing the request).
    #[error("could not decode the response: {message}{}", response.suffix())]
    Decode {
        /// What did not decode.
        message: String,
        /// The response.
        response: Box<ResponseInfo>,
    },
    /// A stream ended badly after it had started.
    #[error(
        "stream failed: {failure}{}",
        match (event, detail) {
            (Some(event), _) => format!(": {event}"),
            (None, Some(d)) => format!(": {d}"),
            (None, None) => String::new(),
        }
    )]
    Stream {
        /// How it ended.
        failure: StreamFailure,
        /// More words, when there are any (an error event's message).
        detail: Option<String>,
        /// An error event ([`StreamFailure::ServerError`]) classified as a response with
        /// its body would be ([`crate::verdict::classify_event`]): a rate limit (and who
        /// refused), Mistral's capacity, a spending cap, a server error. What
        /// [`Error::origin`], [`Error::is_retryable`] and [`Error::is_permanent`] answer
        /// through.
        event: Option<Box<Error>>,
    },
    /// The API key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The client is misconfigured (a bad base URL, the key over plain HTTP…).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Configured limits (`MISTRAL_LIMITS`) that do not parse.
    #[error(transparent)]
    Limits(Box<LimitsError>),
}

impl From<LimitsError> for Error {
    fn from(error: LimitsError) -> Self {
        Error::Limits(Box::new(error))
    }
}

/// What is wrong with a limits text (`MISTRAL_LIMITS`, parsed by
/// [`crate::limiter::parse_limits`]). Each variant names the entry (counted from 1) and
/// quotes the piece that is wrong (limits hold no secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// An entry without `=`.
    #[error("MISTRAL_LIMITS entry {entry} (`{text}`) has no `=`: write `<model>=<count>/<window>`")]
    NoEquals {
        /// The entry.
        entry: usize,
        /// Its text.
        text: String,
    },
    /// An entry with nothing before `=`.
    #[error("MISTRAL_LIMITS entry {entry} names no model (use `*` for every model)")]
    NoModel {
        /// The entry.
        entry: usize,
    },
    /// An entry with nothing after `=`.
    #[error("MISTRAL_LIMITS entry {entry} (`{model}`) sets no limit")]
    NoLimit {
        /// The entry.
        entry: usize,
        /// Its model.
        model: String,
    },
    /// A model listed twice.
    #[error("MISTRAL_LIMITS lists `{model}` twice (entry {entry})")]
    Duplicate {
        /// The second entry.
        entry: usize,
        /// The model.
        model: String,
    },
    /// A limit that is not `<count>[t]/<window>`.
    #[error(
        "MISTRAL_LIMITS entry {entry}: `{text}` is not a limit: write `<count>/<window>` for \
         requests or `<count>t/<window>` for tokens, e.g. `300/60s`, `500000t/1m`"
    )]
    BadLimit {
        /// The entry.
        entry: usize,
        /// The limit's text.
        text: String,
    },
    /// A count that is not a whole number of at least 1.
    #[error("MISTRAL_LIMITS entry {entry}: `{text}` is not a count of at least 1")]
    BadCount {
        /// The entry.
        entry: usize,
        /// The count's text.
        text: String,
    },
    /// A window that is not `<number><unit>` of at least 1 ms.
    #[error(
        "MISTRAL_LIMITS entry {entry}: `{text}` is not a window: write a whole number and \
         `ms`, `s`, `m` or `h`, e.g. `60s`, `1m`"
    )]
    BadWindow {
        /// The entry.
        entry: usize,
        /// The window's text.
        text: String,
    },
    /// Two request limits (or two token limits) for one model.
    #[error("MISTRAL_LIMITS entry {entry} (`{model}`) sets its {what} limit twice")]
    Twice {
        /// The entry.
        entry: usize,
        /// Its model.
        model: String,
        /// `requests` or `tokens`.
        what: &'static str,
    },
}

/// `1.5 s`, or `20 ms` under a second.
fn seconds_or_ms(d: Duration) -> String {
    match d < Duration::from_secs(1) {
        true => format!("{} ms", d.as_millis()),
        false => format!("{:.1} s", d.as_secs_f64()),
    }
}

fn describe_bucket(
    bucket: Option<Bucket>,
    window: Option<Window>,
    limit: Option<u64>,
    remaining: Option<u64>,
) -> String {
    let Some(bucket) = bucket else {
        return String::new();
    };
    let mut s = format!(" by the {bucket}");
    if let Some(window) = window {
        s.push_str(&format!(" per {window}"));
    }
    s.push_str(" limit");
    match (limit, remaining) {
        (Some(l), Some(r)) => s.push_str(&format!(" ({l}, {r} left)")),
        (Some(l), None) => s.push_str(&format!(" ({l})")),
        _ => {}
    }
    s
}

fn describe_details(details: &[FieldError]) -> String {
    details
        .iter()
        .take(5)
        .map(|d| format!("; {d}"))
        .collect::<String>()
}

impl Error {
    /// The response the error came from, when it came from one.
    pub fn response(&self) -> Option<&ResponseInfo> {
        match self {
            Error::RateLimited { response, .. }
            | Error::NoAllowance { response, .. }
            | Error::MonthlyQuota { response, .. }
            | Error::SpendingCap { response }
            | Error::Capacity { response, .. }
            | Error::Unauthorized { response }
            | Error::Forbidden { response }
            | Error::BadRequest { response, .. }
            | Error::NotFound { response, .. }
            | Error::Server { response, .. }
            | Error::Redirect { response, .. }
            | Error::Decode { response, .. } => Some(response),
            Error::Deadline { last, .. } => last.as_ref().and_then(|e| e.response()),
            Error::Stream {
                event: Some(event), ..
            } => event.response(),
            _ => None,
        }
    }

    /// Who refused the call: the Mistral API (which limit: [`Error::RateLimited`]'s
    /// `bucket` and `window`), a gateway in between, this client's shared budget (no
    /// request sent), or [`Origin::Unknown`]. Answers through a [`Error::Deadline`]'s
    /// last error and a stream's error event.
    ///
    /// ```
    /// use mistral_core::{Error, origin::Origin};
    ///
    /// fn advice(error: &Error) -> String {
    ///     match error.origin() {
    ///         Origin::SharedBudget => "this fleet's own budget: try later".into(),
    ///         Origin::Gateway(g) => format!("the gateway ({g}) refused, not Mistral"),
    ///         Origin::Mistral => "Mistral refused".into(),
    ///         _ => "see the message".into(),
    ///     }
    /// }
    /// assert_eq!(advice(&Error::Config("x".into())), "see the message");
    /// ```
    pub fn origin(&self) -> Origin {
        match self {
            Error::RateLimited { shared: true, .. } => Origin::SharedBudget,
            Error::NoAllowance { response, .. } | Error::MonthlyQuota { response, .. }
                if response.status.is_none() =>
            {
                Origin::SharedBudget
            }
            Error::Deadline { last, .. } => last.as_ref().map_or(Origin::Unknown, |e| e.origin()),
            Error::Stream {
                event: Some(event), ..
            } => event.origin(),
            other => other.response().map_or(Origin::Unknown, |r| r.origin),
        }
    }

    /// HTTP status of the response the error came from (`None` when no response came,
    /// as when the shared limiter ended the call before sending: a refusal by the shared
    /// budget is `Error::RateLimited { shared: true, .. }` with no status).
    ///
    /// ```
    /// use mistral_core::Error;
    /// use http::StatusCode;
    ///
    /// fn advice(error: &Error) -> &'static str {
    ///     match error {
    ///         Error::RateLimited { shared: true, .. } => "our own budget said no: try later",
    ///         Error::RateLimited { .. } => "the server refused: its window is spent",
    ///         Error::NoAllowance { .. } | Error::MonthlyQuota { .. } => "check the plan",
    ///         Error::Unauthorized { .. } => "check MISTRAL_API_KEY",
    ///         e if e.status() == Some(StatusCode::UNPROCESSABLE_ENTITY) => "fix the request",
    ///         Error::Transport { .. } => "the network failed",
    ///         _ => "see the message",
    ///     }
    /// }
    /// assert_eq!(advice(&Error::Config("x".into())), "see the message");
    /// ```
    pub fn status(&self) -> Option<StatusCode> {
        self.response().and_then(|r| r.status)
    }

    /// [`Error::status`] as a number, for code written against earlier versions.
    pub fn status_u16(&self) -> Option<u16> {
        self.status().map(|s| s.as_u16())
    }

    /// The `mistral-correlation-id` of the response the error came from.
    pub fn correlation_id(&self) -> Option<&str> {
        self.response()?.correlation_id.as_deref()
    }

    /// How long to wait before the same call could pass, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::OutcomeUnknown { retry_after, .. } => {
                *retry_after
            }
            Error::Deadline { last, .. } => last.as_ref().and_then(|e| e.retry_after()),
            Error::Stream {
                event: Some(event), ..
            } => event
                .retry_after()
                .or_else(|| event.response().and_then(|r| r.limits.retry_after)),
            _ => None,
        }
    }

    /// `true` when the same call may succeed later (after [`Error::retry_after`], when
    /// known): rate limits, capacity, server and transport failures, a deadline reached,
    /// a stream cut. Answers through a [`Error::Deadline`]'s last error.
    ///
    /// `false` for [`Error::OutcomeUnknown`]: the request may have run already, and
    /// sending it again may run it twice (see [`Error::is_outcome_unknown`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Capacity { .. }
            | Error::Server { .. }
            | Error::Transport { .. } => true,
            Error::Stream { event, .. } => event.as_ref().is_none_or(|e| e.is_retryable()),
            Error::Deadline { last, .. } => last.as_ref().is_none_or(|e| e.is_retryable()),
            _ => false,
        }
    }

    /// Attempts and waiting, for errors that went through retries.
    pub fn trail(&self) -> Option<Trail> {
        match self {
            Error::RateLimited { trail, .. }
            | Error::Capacity { trail, .. }
            | Error::Server { trail, .. }
            | Error::Transport { trail, .. }
            | Error::OutcomeUnknown { trail, .. }
            | Error::Deadline { trail, .. } => Some(*trail),
            _ => None,
        }
    }

    /// `true` when the call ended because the server may have run the request without
    /// its answer reaching the client ([`Error::OutcomeUnknown`], also as a
    /// [`Error::Deadline`]'s last error).
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Error::OutcomeUnknown { .. } => true,
            Error::Deadline { last, .. } => last.as_ref().is_some_and(|e| e.is_outcome_unknown()),
            _ => false,
        }
    }

    /// `true` for refusals that no amount of waiting within this call fixes: no
    /// allowance, monthly quota, a spending cap, a refused key, a refused request (also
    /// as a stream's error event).
    pub fn is_permanent(&self) -> bool {
        if let Error::Stream {
            event: Some(event), ..
        } = self
        {
            return event.is_permanent();
        }
        matches!(
            self,
            Error::NoAllowance { .. }
                | Error::MonthlyQuota { .. }
                | Error::SpendingCap { .. }
                | Error::Unauthorized { .. }
                | Error::Forbidden { .. }
                | Error::BadRequest { .. }
                | Error::NotFound { .. }
                | Error::Redirect { .. }
                | Error::Key(_)
                | Error::Config(_)
                | Error::Limits(_)
        )
    }
}
