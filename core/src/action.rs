//! What a [`crate::Call`] asks its driver to do, and what the driver hands back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use crate::error::{Error, TransportKind};
use crate::ratelimits::{Bucket, Quota, RateLimits, Window};
use crate::success::Success;

/// The next thing the driver must do for a call.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Ask the shared limiter for a slot, then pass its answer to
    /// [`crate::Call::handle_grant`].
    Reserve(Ask),
    /// Perform this HTTP exchange, then pass the result to [`crate::Call::handle_response`]
    /// or [`crate::Call::handle_transport_error`].
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
    Done(Result<Success, Error>),
}

/// Why a call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// The shared limiter paces this call to keep the budget under its limit.
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

/// A request for a slot in the shared budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The budget: the model (`None` for calls outside any budget, such as `/v1/models`).
    pub model: Option<String>,
    /// Tokens the request is expected to use.
    pub tokens: u64,
    /// Which attempt of its call this is for (1 for the first; later ones are retries).
    pub attempt: u32,
    /// The longest the call can wait for its slot (its deadline, less the time an
    /// attempt needs); `None`: no limit. A limiter books nothing it cannot serve within
    /// it and answers [`Grant::Late`].
    pub within: Option<Duration>,
    /// The booking this call waited for, when it asks to confirm it before sending: the
    /// limiter answers "go" if it still holds, or books a new slot if a congestion event
    /// voided it.
    pub confirm: Option<Ticket>,
    /// The call's priority class: a saturated budget serves higher classes first.
    pub priority: crate::Priority,
}

/// A booking in a shared budget: which congestion epoch it was made in, and its number.
/// A booking of an earlier epoch than the budget's is void.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ticket {
    /// The budget's congestion epoch when the slot was booked.
    pub epoch: u64,
    /// The booking's number in its budget (counts every booking).
    pub seq: u64,
    /// The budget lane it was booked in (0 is served first; see [`crate::Priority`]).
    pub lane: u64,
    /// How far that lane's bookings had been moved back when it was booked (µs in all):
    /// when it is confirmed, the difference is what it waits more.
    pub shift: u64,
    /// When its slot is, µs on the budget's clock.
    pub slot: u64,
}

/// The limiter's answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Grant {
    /// Go now (a limiter that keeps no bookings).
    Now,
    /// The slot is reserved; go after this long (a limiter that keeps no bookings).
    After(Duration),
    /// A slot is booked: go after `after`. After a wait, confirm it first (the call asks
    /// again with [`Ask::confirm`]); quote the ticket in the attempt's report.
    Slot {
        /// How long until the slot.
        after: Duration,
        /// The booking.
        ticket: Ticket,
    },
    /// Nothing is booked: the budget cannot start this call within [`Ask::within`]; it
    /// could after this long.
    Late {
        /// When the budget could admit the call.
        after: Duration,
    },
    /// Nothing is reserved yet (the limiter waits for information): ask again after
    /// this long.
    Recheck(Duration),
    /// The budget cannot serve this call (no allowance, monthly quota): end it.
    Refused(Error),
}

/// Identifies one attempt, so a late answer to an abandoned one is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId(pub(crate) u64);

/// One HTTP exchange to perform.
#[derive(Debug)]
pub struct Attempt {
    /// Pass it back with the result.
    pub id: AttemptId,
    /// The request (its `Authorization` header is marked sensitive).
    pub request: http::Request<Bytes>,
    /// Give up on the exchange after this long (connect to the end of a body, or to the
    /// response head of a stream).
    pub timeout: Option<Duration>,
    /// Give up when no connection is made within this long (at most `timeout`).
    pub connect_timeout: Option<Duration>,
    /// Give up when the response head has not arrived this long after the request was
    /// sent (at most `timeout`).
    pub head_timeout: Option<Duration>,
    /// Give up when a non-streamed body has not arrived whole this long after its head
    /// (at most `timeout`; `None` for a stream, whose reader has its own idle timeout).
    pub body_timeout: Option<Duration>,
    /// `true` when the request asked for a stream.
    pub stream: bool,
    /// 1 for the first attempt of the call.
    pub number: u32,
}

impl Attempt {
    /// Whether a response with `status` carries an event stream the driver should hand
    /// to the caller (report the response head with an empty body), rather than a body
    /// to read in full and hand to [`crate::Call::handle_response`].
    pub fn reads_stream(&self, status: StatusCode) -> bool {
        self.stream && status.is_success()
    }
}

/// What a response showed, for the shared limiter.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The budget.
    pub model: Option<String>,
    /// Rate-limit headers of the response (empty for a transport failure).
    pub limits: RateLimits,
    /// What happened.
    pub signal: Signal,
    /// Tokens reserved for the attempt.
    pub estimated_tokens: u64,
    /// Tokens the server charged, when known (0 for a refusal).
    pub used_tokens: Option<u64>,
    /// Which attempt of its call this was (1 for the first).
    pub attempt: u32,
    /// The response's `mistral-correlation-id`.
    pub correlation_id: Option<String>,
    /// The booking the attempt went on, when the limiter gave one.
    pub ticket: Option<Ticket>,
}

/// What happened to an attempt, as the limiter needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// Served.
    Success,
    /// Refused by a spent window; the call itself waits `wait` before retrying.
    WindowSpent {
        /// The spent quota.
        quota: Quota,
        /// How long this call waits.
        wait: Duration,
        /// The server said how long (`Retry-After`, a reset header): the wait is its
        /// word, not this call's own estimate.
        hinted: bool,
    },
    /// A 429 that did not say which limit.
    RateLimited {
        /// How long this call waits (zero when it gives up).
        wait: Duration,
        /// The server said how long (`Retry-After` and friends): the wait is its word,
        /// not this call's own backoff.
        hinted: bool,
    },
    /// No allowance for the model.
    NoAllowance,
    /// Monthly quota spent.
    MonthlyQuota,
    /// Mistral was out of capacity (not our limit).
    Capacity,
    /// A 5xx.
    ServerError,
    /// Any other refusal (4xx) — the server may or may not have counted it.
    Rejected,
    /// No response at all.
    Transport(TransportKind),
    /// The real token count of an earlier success, known only later (at the end of a
    /// stream): correct the estimate with it.
    Usage,
}
