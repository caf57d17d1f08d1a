//! The call state machine: one logical API call, through as many HTTP attempts as it
//! takes. See the crate docs for the driving loop and its invariants.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::action::{
    Action, Ask, Attempt, AttemptId, Grant, Outcome, Report, Retry, Ticket, TokenUsage, WaitReason,
};
use crate::error::{Delivery, Error, ResponseInfo, Trail, TransportError};
use crate::models::ocr::pages_processed_of;
use crate::origin::Origin;
use crate::policy::RetryPolicy;
use crate::redact::Redactor;
use crate::reply::{Reply, inspect_success};
use crate::request::{ApiRequest, CostUnit, ReplyBody, Target};
use crate::verdict::{Classification, Verdict, classify};

/// A call whose 2xx answers are cut this many times ends with the last error instead of
/// sending the request again (each answer may have been billed); 3 lets a transient cut
/// be retried twice while a server that always cuts is asked three times, not ten.
pub const MAX_CUT_SUCCESSES: u32 = 3;

/// The response-head time an OCR page is allowed, in tokens of
/// [`RetryPolicy::head_time_per_token`] (40: a second a page at the default 25 ms).
pub const TOKENS_PER_PAGE: u64 = 40;

/// One logical API call, through as many HTTP attempts as it takes: a state machine
/// that decides, and a driver that does the I/O.
///
/// # The contract
///
/// The driver calls three methods and nothing else changes the call: [`Call::poll`]
/// says what to do next, [`Call::handle_grant`] hands in the limiter's answer to an
/// [`Action::Reserve`], and [`Call::handle`] hands in what came of an
/// [`Action::Send`]. `now` is an argument of all three; the call owns every timer.
///
/// A driver:
///
/// - MUST poll until [`Action::Done`], and carry out each action before it polls again:
///   - `Reserve(ask)`: MUST ask the limiter the call shares and hand its answer to
///     [`Call::handle_grant`] before the next poll (polling with a reservation
///     outstanding panics);
///   - `Send(attempt)`: MUST perform the exchange, ending it by
///     [`Attempt::ends_at`] in every phase ([`Attempt::phase_limit`]), and SHOULD hand
///     what came of it to [`Call::handle`] with `attempt.id`. A driver that cannot
///     answer (the exchange is still out) MAY poll instead: the call then waits for its
///     own attempt timeout and treats the attempt as timed out;
///   - `Wait { until, .. }`: SHOULD sleep until `until` and poll again. Waking early is
///     harmless (the call answers with the same wait);
///   - `Report(report)`: SHOULD hand it to the shared limiter (a driver without one MAY
///     drop it);
/// - MUST NOT poll after `Done` (it panics);
/// - SHOULD pass a `now` from a monotonic clock. A `now` earlier than one the call has
///   seen is taken as the latest seen: time never goes backwards inside a call, and no
///   wait is shortened or lengthened by it.
///
/// The call, in turn:
///
/// - never panics on input: bodies, headers, absurd durations (a `Retry-After` of a
///   billion seconds, a timeout of [`Duration::MAX`]) or a `now` going backwards; an
///   instant it cannot represent is taken as far in the future;
/// - ignores an outcome for any attempt but the one in flight (an attempt it already
///   timed out, an id from before): a late answer never passes as the current one;
/// - sends no attempt after its deadline, none before its wait ends, at most
///   [`RetryPolicy::max_attempts`] in all.
///
/// Misuse of the protocol (polling with a reservation outstanding, a grant without a
/// reservation, polling after `Done`) panics with a message; everything else is an
/// [`Error`] in `Done`.
#[derive(Debug)]
pub struct Call {
    /// What the call is for (its model, stream flag and token estimate; the body is
    /// in `request`).
    api: ApiRequest,
    /// The HTTP request every attempt sends.
    request: http::Request<Bytes>,
    policy: RetryPolicy,
    rng: fastrand::Rng,
    started: Instant,
    deadline: Option<Instant>,
    state: State,
    attempts: u32,
    failures: u32,
    window_streak: u32,
    waited: Duration,
    reports: VecDeque<Report>,
    last_error: Option<Error>,
    /// The admission the attempt in flight (or about to go) went on.
    ticket: Option<Ticket>,
    /// The call has said that it has been waiting long ([`LONG_CALL`]).
    warned: bool,
    /// What it has to say about it, until [`Call::take_long_call`].
    long_call: Option<LongCall>,
    /// Removes the key from everything the network sends back (see [`crate::redact`]).
    redactor: Redactor,
    /// 2xx responses whose body was cut: the [`MAX_CUT_SUCCESSES`]-th ends the call
    /// (each may have been billed).
    cut_successes: u32,
    /// The latest `now` the call was given: an earlier one is taken as this.
    latest: Instant,
    /// Attempts in a row that failed before their request reached the server
    /// ([`RetryPolicy::max_unreachable`]).
    unreachable: u32,
    /// The next attempt sends again a request whose outcome was unknown (allowed by
    /// [`RetryPolicy::retry_unknown_outcome`]).
    resending_unknown: bool,
    /// An attempt just started sends again a request whose outcome was unknown, until
    /// [`Call::take_unknown_resend`].
    unknown_resend: bool,
}

/// A call that has been going for [`LONG_CALL`] (see [`Call::take_long_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongCall {
    /// Its model (empty for calls outside any budget).
    pub model: String,
    /// Its path.
    pub path: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// How long it has been going.
    pub going: Duration,
    /// When it found so (the call's clock).
    pub at: Instant,
    /// Its deadline.
    pub deadline: Option<Duration>,
    /// Why it waits, and what the last attempt got when one failed.
    pub reason: String,
}

/// How long a call may go (waits, attempts) before it says so at WARN, once: it is
/// still within its deadline, but a user who sees nothing for this long wonders why.
pub const LONG_CALL: Duration = Duration::from_secs(30);

/// `now + d`; when an `Instant` cannot hold that, the farthest of `now` plus a century,
/// a year, a day or an hour that it can (an absurd wait stays long, never becomes none).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    const HOUR: u64 = 3_600;
    now.checked_add(d)
        .or_else(|| {
            [100 * 365 * 24 * HOUR, 365 * 24 * HOUR, 24 * HOUR, HOUR]
                .into_iter()
                .find_map(|secs| now.checked_add(Duration::from_secs(secs)))
        })
        .unwrap_or(now)
}

#[derive(Debug)]
enum State {
    /// Must ask the limiter before the next attempt.
    Reserve,
    /// Waiting for [`Call::handle_grant`] since then (the time in the limiter's line
    /// counts as waited).
    Reserving { since: Instant },
    /// Sleeping until `until`, then `next`.
    Waiting {
        since: Instant,
        until: Instant,
        why: WaitReason,
        next: Next,
    },
    /// Send the next attempt now.
    Ready,
    /// An attempt is out.
    InFlight {
        id: AttemptId,
        ends_at: Option<Instant>,
    },
    /// The result is ready to hand out.
    Finished(Box<Result<Reply, Error>>),
    /// The result was handed out.
    Over,
}

#[derive(Debug, Clone, Copy)]
enum Next {
    Reserve,
    Send,
}

impl Call {
    /// The call's priority class in the shared budget.
    pub fn priority(&self) -> crate::Priority {
        self.policy.priority
    }

    /// A call of `request` to `target`, started at `now`. `seed` seeds the jitter, so a
    /// fixed seed gives a reproducible schedule. A request that cannot be rendered as
    /// HTTP (a path that is not a URI) is [`Error::Config`].
    pub fn new(
        target: &Target,
        request: &ApiRequest,
        policy: &RetryPolicy,
        now: Instant,
        seed: u64,
    ) -> Result<Self, Error> {
        let http = target.http_request(request)?;
        let redactor = target.redactor().clone();
        let api = ApiRequest {
            body: None,
            ..request.clone()
        };
        Ok(Self {
            redactor,
            cut_successes: 0,
            latest: now,
            deadline: policy.deadline.map(|d| later(now, d)),
            api,
            request: http,
            policy: policy.clone(),
            rng: fastrand::Rng::with_seed(seed),
            started: now,
            state: State::Reserve,
            attempts: 0,
            failures: 0,
            window_streak: 0,
            waited: Duration::ZERO,
            reports: VecDeque::new(),
            last_error: None,
            ticket: None,
            warned: false,
            long_call: None,
            unreachable: 0,
            resending_unknown: false,
            unknown_resend: false,
        })
    }

    /// The time an attempt needs at least ([`RetryPolicy::min_attempt_time`], at most a
    /// tenth of the deadline): a slot later than `deadline − this` is of no use.
    fn min_attempt(&self) -> Duration {
        match self.policy.deadline {
            Some(deadline) => self.policy.min_attempt_time.min(deadline / 10),
            None => Duration::ZERO,
        }
    }

    /// Notes once that this call has been going for [`LONG_CALL`] by `now` (time really
    /// spent, not a wait it plans), and why it waits; the driver's telemetry says it at
    /// WARN ([`Call::take_long_call`]).
    fn warn_if_long(&mut self, now: Instant, why: &dyn std::fmt::Display) {
        let going = now.saturating_duration_since(self.started);
        if self.warned || going < LONG_CALL {
            return;
        }
        self.warned = true;
        self.long_call = Some(LongCall {
            model: self.api.model.clone().unwrap_or_default(),
            path: self.request.uri().path().to_owned(),
            attempts: self.attempts,
            going,
            at: now,
            deadline: self.policy.deadline,
            // Why it waits, and what the last attempt got (a backoff after what).
            reason: match &self.last_error {
                Some(last) => format!("{why}; last attempt: {last}"),
                None => why.to_string(),
            },
        });
    }

    /// That the call has been going for [`LONG_CALL`], once, when it just found so.
    #[must_use = "the long call is said once: log it (Telemetry::observe_call does)"]
    pub fn take_long_call(&mut self) -> Option<LongCall> {
        self.long_call.take()
    }

    /// Whether the attempt just handed out sends again a request whose outcome was
    /// unknown ([`RetryPolicy::retry_unknown_outcome`]), once: the driver's telemetry
    /// counts it ([`crate::Stats::unknown_outcome_resent`]).
    #[must_use = "the resend is said once: count it (Telemetry::observe_call does)"]
    pub fn take_unknown_resend(&mut self) -> bool {
        std::mem::take(&mut self.unknown_resend)
    }

    /// The server the call sends to, as `host[:port]` (the base URL's authority: never
    /// a credential, which a base URL may not hold).
    pub fn server(&self) -> &str {
        self.request.uri().authority().map_or("", |a| a.as_str())
    }

    /// The latest `now` the call was given (the instant of the action it last
    /// returned): what a driver's statistics date that action by.
    pub fn now(&self) -> Instant {
        self.latest
    }

    /// HTTP attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// `now`, or the latest `now` seen if that is later (time never goes backwards
    /// inside a call).
    fn clock(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    /// The next thing to do. A `now` earlier than a previous one is treated as the
    /// latest seen (time never goes backwards inside a call).
    ///
    /// # Panics
    ///
    /// When called while a reservation is outstanding (call [`Call::handle_grant`]
    /// first) or after [`Action::Done`] was returned.
    pub fn poll(&mut self, now: Instant) -> Action {
        let now = self.clock(now);
        if let Some(report) = self.reports.pop_front() {
            return Action::Report(report);
        }
        loop {
            match std::mem::replace(&mut self.state, State::Over) {
                State::Reserve => {
                    if let Some(action) = self.check_deadline(now) {
                        return action;
                    }
                    self.state = State::Reserving { since: now };
                    let min_attempt = self.min_attempt();
                    let within = self
                        .deadline
                        .map(|d| d.saturating_duration_since(now).saturating_sub(min_attempt));
                    return Action::Reserve(Ask {
                        model: self.api.model.clone(),
                        tokens: self.api.token_estimate,
                        size: self.api.size,
                        attempt: self.attempts + 1,
                        within,
                        priority: self.policy.priority,
                    });
                }
                State::Reserving { .. } => {
                    panic!("Call::poll while a reservation is outstanding: call handle_grant first")
                }
                State::Waiting {
                    since,
                    until,
                    why,
                    next,
                } => {
                    if now < until {
                        self.warn_if_long(now, &why);
                        self.state = State::Waiting {
                            since,
                            until,
                            why,
                            next,
                        };
                        return Action::Wait { until, why };
                    }
                    self.waited += until.saturating_duration_since(since);
                    self.state = match next {
                        Next::Reserve => State::Reserve,
                        Next::Send => State::Ready,
                    };
                }
                State::Ready => {
                    if let Some(action) = self.check_deadline(now) {
                        return action;
                    }
                    return Action::Send(self.start_attempt(now));
                }
                State::InFlight { id, ends_at } => match ends_at {
                    Some(at) if now >= at => {
                        // The core's own timer fired: the attempt is abandoned and a
                        // late answer to it will be ignored.
                        self.state = State::InFlight { id, ends_at };
                        self.failed(
                            now,
                            TransportError::new(
                                crate::error::TransportKind::Timeout,
                                "no response within the attempt timeout",
                            ),
                        );
                        if let Some(report) = self.reports.pop_front() {
                            return Action::Report(report);
                        }
                    }
                    _ => {
                        self.warn_if_long(now, &"in flight");
                        let until = ends_at.unwrap_or(later(now, Duration::from_secs(86_400)));
                        self.state = State::InFlight { id, ends_at };
                        return Action::Wait {
                            until,
                            why: WaitReason::InFlight,
                        };
                    }
                },
                State::Finished(result) => return Action::Done(*result),
                State::Over => panic!("Call::poll after the call returned Action::Done"),
            }
        }
    }

    /// Hands in the limiter's answer to the last [`Action::Reserve`]. The time since the
    /// reservation was asked (the call waited in the limiter's line) counts as waited.
    ///
    /// # Panics
    ///
    /// When no reservation is outstanding.
    pub fn handle_grant(&mut self, now: Instant, grant: Grant) {
        let now = self.clock(now);
        let State::Reserving { since } = self.state else {
            panic!("Call::handle_grant without an outstanding Action::Reserve");
        };
        self.waited += now.saturating_duration_since(since);
        self.state = match grant {
            Grant::Now => {
                self.ticket = None;
                State::Ready
            }
            Grant::Go { after, ticket } => {
                self.ticket = Some(ticket);
                let until = later(now, after);
                if after.is_zero() {
                    State::Ready
                } else if self.deadline.is_some_and(|d| until >= d) {
                    // A limiter that admits for past the deadline: of no use.
                    self.ticket = None;
                    State::Finished(Box::new(Err(self.late_error(now, after))))
                } else {
                    State::Waiting {
                        since: now,
                        until,
                        why: WaitReason::Pacing,
                        next: Next::Send,
                    }
                }
            }
            Grant::Late { after } => {
                self.ticket = None;
                State::Finished(Box::new(Err(self.late_error(now, after))))
            }
            Grant::Refused(error) => State::Finished(Box::new(Err(error))),
        };
    }

    /// The call cannot start before its deadline: the shared budget would admit it only
    /// after `after`.
    fn late_error(&mut self, now: Instant, after: Duration) -> Error {
        let model = self.api.model.as_deref().unwrap_or("this model");
        let message = format!(
            "not sent: the shared budget of {model} would admit this call in {:.1} s, \
             past its deadline",
            after.as_secs_f64()
        );
        let last = self.last_error.take();
        let (bucket, window, limit, remaining, response) = match last {
            Some(Error::RateLimited {
                bucket,
                window,
                limit,
                remaining,
                mut response,
                ..
            }) => {
                response.message = Some(match response.message.take() {
                    Some(m) => format!("{message}; last refusal: {m}"),
                    None => message,
                });
                response.origin = Origin::SharedBudget;
                (bucket, window, limit, remaining, response)
            }
            _ => (
                None,
                None,
                None,
                None,
                Box::new(ResponseInfo {
                    message: Some(message),
                    origin: Origin::SharedBudget,
                    ..ResponseInfo::default()
                }),
            ),
        };
        Error::RateLimited {
            bucket,
            window,
            limit,
            remaining,
            retry_after: Some(after),
            shared: true,
            trail: self.trail(now),
            response,
        }
    }

    /// Hands in what came of attempt `id` ([`Attempt::id`]): a response read whole, the
    /// head of a stream, a body cut part way, or a transport failure. An outcome for any
    /// attempt but the one in flight (one the call already timed out, an id from an
    /// earlier attempt) is ignored.
    ///
    /// A cut body ([`Outcome::Cut`]) is judged by the core:
    ///
    /// - a body the driver stopped reading at [`crate::request::MAX_RESPONSE_BYTES`]
    ///   ([`TransportError::body_too_large`]) is that error, whatever its status and
    ///   bytes ([`crate::TransportKind::Protocol`] in both clients, not retried);
    /// - a 2xx whose bytes are a complete JSON document is the answer (a server that
    ///   announces a longer `Content-Length` than it sends, then closes, must not have
    ///   its POST sent again: each attempt may be billed);
    /// - any other status is judged by its head, as if the body were whole
    ///   (classification never depends on the body);
    /// - otherwise it is the transport error, retried as its kind is — but the
    ///   [`MAX_CUT_SUCCESSES`]-th cut 2xx ends the call (the server keeps answering and
    ///   the answers keep being lost: each may be billed).
    pub fn handle(&mut self, now: Instant, id: AttemptId, outcome: Outcome) {
        let now = self.clock(now);
        if !self.is_current(id) {
            return;
        }
        match outcome {
            Outcome::Response(response) => {
                let (head, body) = response.into_parts();
                self.answered(now, head.status, head.headers, body);
            }
            Outcome::StreamHead(head) => {
                self.answered(now, head.status, head.headers, Bytes::new())
            }
            Outcome::Cut {
                head,
                partial,
                error,
            } => {
                if error.is_body_too_large() {
                    // Not a cut: the client refuses to read more (not retried).
                    return self.failed(now, error);
                }
                let complete_json = !partial.is_empty()
                    && serde_json::from_slice::<serde::de::IgnoredAny>(&partial).is_ok();
                if !head.status.is_success() || (complete_json && !self.api.stream) {
                    return self.answered(now, head.status, head.headers, partial);
                }
                // The server answered, so it ran the request: what it answered is lost.
                self.cut_successes += 1;
                let message = format!(
                    "the {} response's body was cut after {} bytes: {}",
                    head.status,
                    partial.len(),
                    error.message
                );
                let error = TransportError {
                    message,
                    ..error.with_delivery(Delivery::MaybeDelivered)
                };
                self.failed(now, error);
            }
            Outcome::Failed(error) => self.failed(now, error),
        }
    }

    /// The attempt in flight got a response (for a stream: its head, with an empty body).
    fn answered(&mut self, now: Instant, status: StatusCode, headers: HeaderMap, body: Bytes) {
        self.unreachable = 0;
        let estimate = self.api.token_estimate;
        let mut classified = classify(status, &headers, &body, Some(estimate));
        self.redact_info(&mut classified.info);
        let mut headers = headers;
        self.hide_secret_headers(&mut headers);
        if classified.verdict == Verdict::Success {
            // A stream's body is read by the driver: only the key is looked for here.
            let path = match (self.api.stream, self.api.reply_body) {
                (false, ReplyBody::Json) => Some(self.request.uri().path()),
                _ => None,
            };
            let inspected = inspect_success(path, &body, &self.redactor);
            let usage = inspected.usage;
            if let Err(message) = inspected.check {
                // The server answered (and may have billed it), but not with what was
                // asked: a typed error, never an empty success; not retried.
                self.report(
                    &classified,
                    None,
                    usage.map(|u| u.total_tokens),
                    usage,
                    None,
                );
                let mut info = classified.info;
                info.excerpt = self.redactor.redact(&crate::verdict::excerpt(&body));
                self.state = State::Finished(Box::new(Err(Error::Decode {
                    message,
                    response: Box::new(info),
                })));
                return;
            }
            self.window_streak = 0;
            let tier = inspected.tier;
            let (used, usage) = match self.api.unit {
                CostUnit::Pages => {
                    let pages = classified
                        .info
                        .limits
                        .page_cost
                        .or_else(|| pages_processed_of(&body));
                    (pages, None)
                }
                unit => {
                    let tokens = classified.info.limits.query_cost;
                    let used = tokens.or(usage.map(|u| u.total_tokens));
                    // A transcript's usage corrects the charge, never the learned
                    // completion length.
                    (used, usage.filter(|_| unit != CostUnit::AudioTokens))
                }
            };
            self.report(&classified, None, used, usage, tier);
            let info = classified.info;
            self.state = State::Finished(Box::new(Ok(Reply {
                value: body,
                status,
                headers,
                limits: info.limits,
                correlation_id: info.correlation_id,
                trail: self.trail(now),
                redactor: self.redactor.clone(),
                admission: (self.ticket, self.api.size),
            })));
            return;
        }
        self.failures += 1;
        let retry = self.plan_after(&classified);
        let used = match classified.verdict {
            v if v.is_rate_limit() || v == Verdict::Capacity || v == Verdict::SpendingCap => {
                Some(0)
            }
            _ => None,
        };
        self.report(&classified, retry, used, None, None);
        // `classified.info` went through the redaction above.
        let location = classified.location.take().map(|l| self.redactor.redact(&l));
        classified.location = location;
        let mut error = classified.into_error(self.api.model.as_deref(), retry.map(|r| r.wait));
        if let Error::NotFound { path, .. } = &mut error {
            path.push_str(self.request.uri().path());
        }
        self.settle(now, error, retry);
    }

    /// The attempt in flight got no response (or its body was lost).
    ///
    /// What may be sent again depends on how far the request got
    /// ([`TransportError::delivery`]): one that never reached the server is retried (at
    /// most [`RetryPolicy::max_unreachable`] times in a row), one that may have reached
    /// it is retried only when it is idempotent or the policy allows it
    /// ([`RetryPolicy::retry_unknown_outcome`]); otherwise the call ends with
    /// [`Error::OutcomeUnknown`].
    fn failed(&mut self, now: Instant, error: TransportError) {
        self.failures += 1;
        let not_sent = error.delivery == Delivery::NotSent;
        self.unreachable = if not_sent { self.unreachable + 1 } else { 0 };
        // The server may have run it, and another sending may run it again. (A body
        // too large to read is an answer whose head came: that error, never retried.)
        let unknown =
            !not_sent && !self.request.method().is_idempotent() && !error.is_body_too_large();
        let retry = (self.policy.retries_transport(error.kind)
            && self.cut_successes < MAX_CUT_SUCCESSES
            && (!unknown || self.policy.retry_unknown_outcome)
            && (!not_sent || self.unreachable < self.policy.max_unreachable))
            .then(|| Retry {
                wait: self.policy.backoff_wait(self.failures, &mut self.rng),
                why: WaitReason::Backoff,
            });
        self.resending_unknown = unknown && retry.is_some();
        self.reports.push_back(Report {
            model: self.api.model.clone(),
            limits: Default::default(),
            verdict: Verdict::Transport(error.kind),
            retry,
            estimated_tokens: self.api.token_estimate,
            used_tokens: None,
            attempt: self.attempts,
            correlation_id: None,
            ticket: self.ticket,
            usage: None,
            size: self.api.size,
            origin: Origin::Unknown,
            service_tier: None,
        });
        let (kind, message) = (error.kind, self.redactor.redact(&error.message));
        let source = error.cause(&self.redactor);
        let error = match unknown {
            true => Error::OutcomeUnknown {
                kind,
                message,
                retry_after: Some(self.policy.backoff_ceiling(self.failures)),
                trail: Trail::default(),
                source,
            },
            false => Error::Transport {
                kind,
                message,
                trail: Trail::default(),
                source,
            },
        };
        self.settle(now, error, retry);
    }

    /// The key out of everything a response sent that an error, a log or a `Display`
    /// may show.
    fn redact_info(&self, info: &mut ResponseInfo) {
        let r = &self.redactor;
        info.excerpt = r.redact_owned(std::mem::take(&mut info.excerpt));
        info.message = r.redact_opt(info.message.take());
        info.code = r.redact_opt(info.code.take());
        info.correlation_id = r.redact_opt(info.correlation_id.take());
    }

    /// Marks header values that hold the key as sensitive (their `Debug` prints
    /// `Sensitive`).
    fn hide_secret_headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            if self.redactor.may_change(value.as_bytes()) {
                value.set_sensitive(true);
            }
        }
    }

    fn is_current(&self, id: AttemptId) -> bool {
        matches!(self.state, State::InFlight { id: current, .. } if current == id)
    }

    fn start_attempt(&mut self, now: Instant) -> Attempt {
        self.attempts += 1;
        self.unknown_resend = std::mem::take(&mut self.resending_unknown);
        let id = AttemptId(self.attempts);
        let ends_at = match (
            self.policy.attempt_timeout.map(|t| later(now, t)),
            self.deadline,
        ) {
            (Some(t), Some(d)) => Some(t.min(d)),
            (t, d) => t.or(d),
        };
        self.state = State::InFlight { id, ends_at };
        let stream = self.api.stream;
        // A non-streamed head comes once the work is done: an OCR page is given the
        // time of `TOKENS_PER_PAGE` tokens.
        let tokens = match self.api.unit {
            CostUnit::Pages => self.api.token_estimate.saturating_mul(TOKENS_PER_PAGE),
            _ => self.api.token_estimate,
        };
        Attempt {
            id,
            request: self.request.clone(),
            ends_at,
            connect_timeout: Some(self.policy.connect_timeout),
            head_timeout: self.policy.head_timeout_for(stream, tokens),
            body_timeout: if stream {
                None
            } else {
                self.policy.body_timeout
            },
            stream,
            stream_idle: stream.then_some(self.policy.stream_idle_timeout),
        }
    }

    fn check_deadline(&mut self, now: Instant) -> Option<Action> {
        // A retry with less than `min_attempt_time` (at most a tenth of the deadline)
        // left could not finish: the call ends now rather than spend a slot of the budget
        // on it (the first attempt always goes).
        let margin = if self.attempts == 0 {
            Duration::ZERO
        } else {
            self.min_attempt()
        };
        if self.deadline.is_some_and(|d| later(now, margin) >= d) {
            let last = self.last_error.take();
            return Some(Action::Done(Err(self.deadline_error(now, last))));
        }
        None
    }

    fn trail(&self, now: Instant) -> Trail {
        Trail {
            attempts: self.attempts,
            waited: self.waited,
            elapsed: now.saturating_duration_since(self.started),
        }
    }

    fn deadline_error(&self, now: Instant, last: Option<Error>) -> Error {
        Error::Deadline {
            deadline: self.policy.deadline.unwrap_or_default(),
            trail: self.trail(now),
            last: last.map(Box::new),
        }
    }

    fn report(
        &mut self,
        c: &Classification,
        retry: Option<Retry>,
        used: Option<u64>,
        usage: Option<TokenUsage>,
        service_tier: Option<String>,
    ) {
        let info = &c.info;
        self.reports.push_back(Report {
            model: self.api.model.clone(),
            limits: info.limits.clone(),
            verdict: c.verdict,
            retry,
            estimated_tokens: self.api.token_estimate,
            used_tokens: used,
            attempt: self.attempts,
            correlation_id: info.correlation_id.clone(),
            ticket: self.ticket,
            usage,
            size: self.api.size,
            origin: info.origin,
            service_tier,
        });
    }

    /// Decides whether and how long to wait after a refused attempt (`None`: the call
    /// ends with it).
    fn plan_after(&mut self, c: &Classification) -> Option<Retry> {
        let limits = &c.info.limits;
        let p = &self.policy;
        let hint = limits.retry_after.filter(|_| p.honor_retry_after);
        match c.verdict {
            Verdict::WindowSpent { .. } | Verdict::RateLimited => self.window_streak += 1,
            _ => {}
        }
        match c.verdict {
            Verdict::WindowSpent { .. } | Verdict::RateLimited if !p.retry_rate_limited => None,
            Verdict::WindowSpent { quota } if p.window_aware => {
                let floor = hint.max(limits.reset.filter(|_| p.honor_retry_after));
                let own = p.window_wait(
                    &quota,
                    self.api.token_estimate,
                    self.window_streak,
                    &mut self.rng,
                );
                Some(match floor {
                    Some(f) if f > own => Retry {
                        wait: f,
                        why: WaitReason::ServerHint,
                    },
                    _ => Retry {
                        wait: own,
                        why: WaitReason::WindowSpent {
                            bucket: quota.bucket,
                            window: quota.window,
                        },
                    },
                })
            }
            Verdict::WindowSpent { .. } | Verdict::RateLimited => Some(self.backoff_plan(hint)),
            Verdict::Capacity if self.policy.retry_capacity => Some(self.backoff_plan(hint)),
            Verdict::ServerError { transient: true } | Verdict::RequestTimeout
                if self.policy.retry_server_errors =>
            {
                Some(self.backoff_plan(hint))
            }
            _ => None,
        }
    }

    fn backoff_plan(&mut self, hint: Option<Duration>) -> Retry {
        let backoff = self.policy.backoff_wait(self.failures, &mut self.rng);
        match hint {
            Some(h) if h >= backoff => Retry {
                wait: h,
                why: WaitReason::ServerHint,
            },
            _ => Retry {
                wait: backoff,
                why: WaitReason::Backoff,
            },
        }
    }

    /// Ends the call with `error`, or schedules the next attempt.
    fn settle(&mut self, now: Instant, error: Error, retry: Option<Retry>) {
        match retry {
            Some(Retry { wait, why }) if self.attempts < self.policy.max_attempts => {
                let until = later(now, wait);
                if let Some(deadline) = self.deadline.filter(|d| until >= *d) {
                    let error = self.with_trail(error, now);
                    let result = if later(now, self.min_attempt()) >= deadline {
                        // No time is left for another attempt: the deadline is reached.
                        self.deadline_error(now, Some(error))
                    } else {
                        // Only the wait would end past it: the call ends now with what it
                        // got (which says when to come back), not "deadline reached".
                        error
                    };
                    self.state = State::Finished(Box::new(Err(result)));
                    return;
                }
                self.ticket = None;
                self.last_error = Some(error);
                self.state = State::Waiting {
                    since: now,
                    until,
                    why,
                    next: Next::Reserve,
                };
            }
            _ => {
                let error = self.with_trail(error, now);
                self.state = State::Finished(Box::new(Err(error)));
            }
        }
    }

    fn with_trail(&self, mut error: Error, now: Instant) -> Error {
        let new = self.trail(now);
        match &mut error {
            Error::RateLimited { trail, .. }
            | Error::Capacity { trail, .. }
            | Error::Server { trail, .. }
            | Error::Transport { trail, .. }
            | Error::OutcomeUnknown { trail, .. } => *trail = new,
            _ => {}
        }
        error
    }
}
