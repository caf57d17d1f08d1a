//! What a [`crate::Call`] asks its driver to do, and what the driver hands back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use crate::error::{Error, TransportError};
use crate::ratelimits::{Bucket, RateLimits, Window};
use crate::reply::Reply;
use crate::verdict::Verdict;

/// The next thing the driver must do for a call.
///
/// Exhaustive on purpose: a driver matches every variant, and a new one is a compile
/// error in each driver, not a guess at run time.
#[derive(Debug)]
#[must_use = "an action is the call's next step: carry it out, then poll again"]
pub enum Action {
    /// Ask the shared limiter to admit the attempt (the driver waits in the limiter's
    /// queue until it answers: see [`crate::limiter::Limiter`]), then pass its answer to
    /// [`crate::Call::handle_grant`].
    Reserve(Ask),
    /// Perform this HTTP exchange until [`Attempt::ends_at`], then pass what came of it
    /// to [`crate::Call::handle`] with [`Attempt::id`].
    Send(Attempt),
    /// Sleep until `until` (waking early is harmless), then poll again.
    Wait {
        /// When to poll again.
        until: Instant,
        /// Why the call waits (for logs and metrics).
        why: WaitReason,
    },
    /// Tell the shared limiter what a response showed, then poll again.
    Report(Report),
    /// The call is over.
    Done(Result<Reply, Error>),
}

/// Why a call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// The shared limiter admitted this call for a moment just ahead (its short
    /// horizon): the capacity it took is there then.
    Pacing,
    /// Backoff after a failure that said nothing about when to come back.
    Backoff,
    /// The server said when to come back (`Retry-After` and friends).
    ServerHint,
    /// A rate-limit window is spent; waiting for it to admit again.
    WindowSpent {
        /// The refusing bucket.
        bucket: Bucket,
        /// Its window.
        window: Window,
    },
    /// An attempt is in flight; this is its timeout.
    InFlight,
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitReason::Pacing => f.write_str("pacing"),
            WaitReason::Backoff => f.write_str("backoff"),
            WaitReason::ServerHint => f.write_str("server hint"),
            WaitReason::WindowSpent { bucket, window } => {
                write!(f, "{bucket} per {window} window spent")
            }
            WaitReason::InFlight => f.write_str("in flight"),
        }
    }
}

/// A request for admission to the shared budget: what the call would spend and how long
/// it can wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The budget: the model (`None` for calls outside any, such as `/v1/models`).
    pub model: Option<String>,
    /// Tokens the request is expected to use by the fixed rule of
    /// [`crate::estimate_tokens`]; a limiter that learns estimates starts from
    /// [`Ask::size`] instead.
    pub tokens: u64,
    /// The request's size, for a limiter that learns its own token estimates.
    pub size: Sizing,
    /// Which attempt of its call this is for (1 for the first; later ones are retries).
    pub attempt: u32,
    /// The longest the call can wait to be admitted (its deadline, less the time an
    /// attempt needs); `None`: no limit. A limiter that cannot admit the call within it
    /// answers [`Grant::Late`], at once when it foresees it.
    pub within: Option<Duration>,
    /// The call's priority class: a saturated budget serves higher classes first.
    pub priority: crate::Priority,
}

/// What a request is made of, as far as its token cost goes: the characters of its
/// prompt and the completion it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizing {
    /// Characters of text input (every message, tool descriptions, a FIM prompt and
    /// suffix, embedding inputs).
    pub prompt_chars: u64,
    /// The request's `max_tokens`; `Some(0)` for endpoints that generate nothing
    /// (embeddings, moderations); `None` when a generating request leaves it unset.
    pub max_tokens: Option<u64>,
}

/// An admission to a shared budget: what the attempt's report quotes so the budget can
/// tell which of its words came after which, and what the attempt was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ticket {
    /// The budget's congestion epoch at admission: a refusal of an attempt admitted
    /// before a congestion event belongs to that event.
    pub epoch: u64,
    /// The admission's number in its budget (counts every admission).
    pub seq: u64,
    /// Tokens the budget charged for the attempt (its estimate, corrected by the
    /// answer's `usage`).
    pub tokens: u64,
    /// Tokens the budget had charged in all, this admission's included: what was
    /// admitted after it is the difference.
    pub tok_mark: u64,
    /// The lane (priority class) it was admitted in (0 is served first).
    pub lane: u64,
    /// Admissions made just before this one (each close to the one before: callers let
    /// go together, those of the same operation included) and still out when it was
    /// made: such callers reach the server in any order (a loaded machine wakes them late
    /// and out of turn), so the `remaining` its answer quotes may not count them yet,
    /// even those answered before it.
    pub lead: u64,
    /// Admitted attempts of the budget not answered yet when this one was admitted, this
    /// one included: a server that admits at most K in flight refuses it when this is
    /// more than K, at any spacing.
    pub in_flight: u64,
}

/// The limiter's answer to an [`Ask`]: it must reach [`crate::Call::handle_grant`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use = "a grant must be handed to the call (Call::handle_grant)"]
pub enum Grant {
    /// Go now (a limiter that keeps no budget).
    Now,
    /// Admitted: go after `after` (at most the limiter's short horizon: a few
    /// milliseconds, or through a shared store far away about the round trips its answer
    /// takes, as no caller could go sooner: capacity is never held further ahead). Quote
    /// the ticket in the attempt's report.
    Go {
        /// How long until the capacity taken is there.
        after: Duration,
        /// The admission.
        ticket: Ticket,
    },
    /// Not admitted: the budget cannot start this call within [`Ask::within`]; it
    /// could after about this long.
    Late {
        /// When the budget could admit the call.
        after: Duration,
    },
    /// The budget cannot serve this call (no allowance, monthly quota): end it.
    Refused(Error),
}

/// Identifies one attempt of a call, so that a late answer to an abandoned one is
/// recognised and ignored. It is the attempt's number (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub(crate) u32);

impl AttemptId {
    /// The attempt's number in its call: 1 for the first, 2 for the first retry…
    pub fn number(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attempt {}", self.0)
    }
}

/// One HTTP exchange to perform.
///
/// The attempt ends at one instant, [`Attempt::ends_at`], whatever phase it is in: a
/// driver gives each phase (connect, send, response head, body) at most what is left
/// of it ([`Attempt::phase_limit`]), so the phases together never outlast it.
#[derive(Debug)]
pub struct Attempt {
    /// Pass it back with the result (its [`AttemptId::number`] is the attempt's number).
    pub id: AttemptId,
    /// The request (its `Authorization` header is marked sensitive).
    pub request: http::Request<Bytes>,
    /// The instant the exchange must be over by (the end of the body, or of the
    /// response head of a stream): the attempt timeout from the send, or the call's
    /// deadline if earlier. `None`: the attempt has no end of its own.
    pub ends_at: Option<Instant>,
    /// Give up when no connection is made within this long (see [`Attempt::phase_limit`]).
    pub connect_timeout: Option<Duration>,
    /// Give up when the response head has not arrived this long after the request was
    /// sent (see [`Attempt::phase_limit`]).
    pub head_timeout: Option<Duration>,
    /// Give up when a non-streamed body has not arrived whole this long after its head
    /// (`None` for a stream, whose reader has its own idle timeout).
    pub body_timeout: Option<Duration>,
    /// `true` when the request asked for a stream.
    pub stream: bool,
    /// A stream's idle timeout (`None` for a non-streamed attempt): its reader fails
    /// when no byte comes for this long.
    pub stream_idle: Option<Duration>,
}

impl Attempt {
    /// Whether a response with `status` carries an event stream the driver should hand
    /// to the caller ([`Outcome::StreamHead`]), rather than a body to read in full
    /// ([`Outcome::Response`]).
    #[must_use]
    pub fn reads_stream(&self, status: StatusCode) -> bool {
        reads_stream(self.stream, status)
    }

    /// What is left of the attempt at `now` (zero once it is over); `None` when it has
    /// no end of its own.
    #[must_use]
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.ends_at.map(|end| end.saturating_duration_since(now))
    }

    /// The limit of a phase that starts at `now` and has its own `bound` (one of the
    /// attempt's `*_timeout` fields): the shorter of the bound and what is left of the
    /// attempt, and never more than a century (an HTTP library adds it to an instant:
    /// [`Duration::MAX`] would overflow). `None`: no limit at all.
    #[must_use]
    pub fn phase_limit(&self, now: Instant, bound: Option<Duration>) -> Option<Duration> {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
        let limit = match (bound, self.left(now)) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        };
        limit.map(|l| l.min(CENTURY))
    }

    /// The bound on one read of a stream's body that starts at `now`: what is left of
    /// the attempt plus the stream's idle timeout (the reader's own timer fires first;
    /// this one ends a read left behind by a reader that was dropped), at most a
    /// century. `None` for an attempt that is not a stream.
    #[must_use]
    pub fn stream_read_limit(&self, now: Instant) -> Option<Duration> {
        let idle = self.stream_idle?;
        let left = self.left(now).unwrap_or_default();
        self.phase_limit(now, Some(left.saturating_add(idle)))
    }
}

/// [`Attempt::reads_stream`] of an attempt that asked for a stream (`stream`), for a
/// driver that no longer holds the attempt (a thread of its own awaits the head).
pub fn reads_stream(stream: bool, status: StatusCode) -> bool {
    stream && status.is_success()
}

/// What came of an [`Attempt`], as the driver hands it to [`crate::Call::handle`].
#[derive(Debug)]
pub enum Outcome {
    /// A response read whole: status, headers and the body.
    Response(http::Response<Bytes>),
    /// The head of a response whose body is an event stream the driver reads itself
    /// (when [`Attempt::reads_stream`] says so).
    StreamHead(http::response::Parts),
    /// The head came, then the body failed part way (a reset, a `Content-Length`
    /// longer than what came, the body timeout): the head, the bytes that arrived and
    /// the failure. The core decides what they were worth ([`crate::Call::handle`]).
    Cut {
        /// The response head.
        head: http::response::Parts,
        /// The bytes of the body that arrived.
        partial: Bytes,
        /// Why the rest did not.
        error: TransportError,
    },
    /// No response: the HTTP library's failure, mapped to a [`crate::TransportKind`].
    Failed(TransportError),
}

/// What an attempt came to, for the shared limiter and the statistics: the same
/// [`Verdict`] the call acted on, and what it planned to do next.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The budget.
    pub model: Option<String>,
    /// Rate-limit headers of the response (empty for a transport failure).
    pub limits: RateLimits,
    /// What the attempt came to: the response's classification, a transport failure, or
    /// ([`Verdict::Usage`]) the real token count of an earlier success.
    pub verdict: Verdict,
    /// The retry the call planned after it (`None`: it ends, or it succeeded). The call
    /// may still end first (its attempts spent, its deadline near). A wait the server
    /// named has [`WaitReason::ServerHint`].
    pub retry: Option<Retry>,
    /// Tokens reserved for the attempt.
    pub estimated_tokens: u64,
    /// Tokens the server charged, when known (0 for a refusal).
    pub used_tokens: Option<u64>,
    /// Which attempt of its call this was (1 for the first).
    pub attempt: u32,
    /// The response's `mistral-correlation-id`.
    pub correlation_id: Option<String>,
    /// The admission the attempt went on, when the limiter gave one.
    pub ticket: Option<Ticket>,
    /// What the server said the request used (`usage`), when it said.
    pub usage: Option<TokenUsage>,
    /// The request's size (what its token estimate was made from).
    pub size: Sizing,
    /// Who refused, for a refusal ([`crate::Origin::Unknown`] otherwise): a gateway's
    /// 429 is told to the budget as any 429, and counted apart in the statistics.
    pub origin: crate::origin::Origin,
    /// The capacity pool that served it (`usage.service_tier` of the answer, as the
    /// server named it), when the answer said: counted per tier in the statistics.
    /// The budget itself is the model's whatever the tier (no header announces limits
    /// per tier).
    pub service_tier: Option<String>,
}

/// The `usage` a response reported: tokens of the prompt and of the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: u64,
    /// `usage.completion_tokens`.
    pub completion_tokens: u64,
    /// `usage.total_tokens`.
    pub total_tokens: u64,
}

impl Report {
    /// The wait the server named for the retry (`Retry-After` and friends), if it named
    /// one: what the shared budget pauses everyone for. A call's own backoff is its own.
    #[must_use]
    pub fn server_wait(&self) -> Option<Duration> {
        self.retry
            .filter(|r| r.why == WaitReason::ServerHint)
            .map(|r| r.wait)
    }
}

/// A retry a call planned: how long it waits, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long the call waits before its next attempt.
    pub wait: Duration,
    /// Why (a spent window, the server's word, a backoff).
    pub why: WaitReason,
}

/// `left`, as a socket's timeout: rounded down to a step of 1/16 s when it is a second or
/// more, so that it is the same from one exchange to the next (a driver whose HTTP
/// library sets the socket's timeout anew whenever it changes then makes that system
/// call once, not on every exchange), never later than `left` and early by less than a
/// step; under a second, `left` itself.
#[must_use]
pub fn steady_timeout(left: Duration) -> Duration {
    const STEP_NANOS: u128 = 1_000_000_000 / 16;
    if left < Duration::from_secs(1) {
        return left;
    }
    let nanos = left.as_nanos();
    let steady = nanos - nanos % STEP_NANOS;
    // At most `left`, which a `Duration` holds.
    Duration::new(
        (steady / 1_000_000_000) as u64,
        (steady % 1_000_000_000) as u32,
    )
}
