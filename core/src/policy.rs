//! The retry policy: how many attempts, how long to wait, what is worth retrying.
//!
//! Waits, by what the last attempt got:
//!
//! - **a spent window** (429 with `remaining` 0 for a minute or N-second window):
//!   at least the time one unit of the refused bucket takes to come back
//!   (`window ÷ limit`, times the request's token estimate for a token bucket), doubling
//!   with each refusal in a row up to the whole window, plus up to 25 % jitter. A minute
//!   window is never hammered every 1–2 s.
//! - **anything else retryable** (ambiguous 429, capacity, 5xx, transport): full-jitter
//!   exponential backoff, `U(0, min(cap, base·2ⁿ))`.
//! - a server hint (`Retry-After`, `retry-after-ms`, `ratelimitbysize-reset`) is a floor
//!   under either.
//!
//! Never retried: no allowance, monthly quota, 401, 403, other 4xx, redirects, a 2xx that
//! is not the expected answer. Not retried unless allowed
//! ([`RetryPolicy::retry_unknown_outcome`]): a request that is not idempotent (every
//! `POST`) whose attempt may have reached the server and got no answer — its outcome is
//! unknown ([`crate::Error::OutcomeUnknown`]). A connection that cannot be made is
//! retried at most [`RetryPolicy::max_unreachable`] times in a row.
//!
//! # Time bounds
//!
//! Every phase a silent peer can stretch has its own bound, so a server that accepts the
//! connection and then says nothing costs seconds to a minute, not the whole deadline:
//!
//! | phase | field | default | why this default |
//! |---|---|---|---|
//! | connect (DNS, TCP, TLS) | [`RetryPolicy::connect_timeout`] | 10 s | a healthy API connects in well under a second from anywhere |
//! | a server that cannot be reached | [`RetryPolicy::max_unreachable`] attempts in a row | 3 | a refused connection or a failed look-up fails in milliseconds: three of them, a short backoff apart, tell a blip from a dead server or a wrong URL in about a second, not the whole retry budget |
//! | the response head | [`RetryPolicy::head_timeout`] + [`RetryPolicy::head_time_per_token`] × the token estimate (non-streamed calls) | 60 s + 25 ms per token | a non-streamed completion sends its head only once the whole answer is generated: 60 s of queueing and prompt processing, plus 25 ms per expected token (40 tokens/s, slower than Mistral's models generate), so 1,000 tokens may take 85 s and `max_tokens` 8,000 up to 260 s; a stream's head comes before generation, so it gets 60 s flat |
//! | a non-streamed body, from its head to its last byte | [`RetryPolicy::body_timeout`] | 60 s | a non-streamed body is generated before its head is sent, so it comes at network speed: Mistral's answers are kilobytes to a few megabytes. A bound on the whole body, not between reads, also ends a body trickled one byte a second (an idle bound never would) |
//! | a stream, between two reads | [`RetryPolicy::stream_idle_timeout`] | 60 s | tokens arrive every few tens of milliseconds; Mistral sends nothing else between them |
//! | the whole attempt | [`RetryPolicy::attempt_timeout`] | 300 s | the longest non-streamed generation worth waiting for |
//! | the whole call | [`RetryPolicy::deadline`] | 300 s | waits and retries included: what a script's user waits for one answer before wanting an error (a call past [`crate::LONG_CALL`], 30 s, says so at WARN once); per call, [`crate::CallOptions`] |
//!
//! Each bound is cut to what is left of the deadline, and no retry starts with less
//! than [`RetryPolicy::min_attempt_time`] (1 s, or a tenth of the deadline if less) left:
//! it could not finish, and would only spend a slot of the budget.

use std::time::Duration;

use crate::error::TransportKind;
use crate::ratelimits::{Bucket, Quota};

/// The shape of the backoff between attempts that said nothing about when to come back.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// `U(0, min(cap, base·2^(n−1)))` for the n-th failure: full jitter (the default).
    FullJitter,
    /// `min(cap, base·factor^(n−1)) + U(0, jitter)`: the shapes other clients use (the
    /// seed fix: base 1 s, factor 2, no jitter; the official SDKs: base 0.5 s, factor
    /// 1.5, jitter 1 s). For comparisons; full jitter spreads callers better.
    Exponential {
        /// Growth per failure.
        factor: f64,
        /// Uniform jitter added to each wait.
        jitter: Duration,
    },
}

/// How a call retries. [`RetryPolicy::default`] serves a user who configured nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Most HTTP attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Base of the exponential backoff.
    pub base: Duration,
    /// Longest single backoff wait (not applied to spent windows, which wait as the
    /// window needs).
    pub cap: Duration,
    /// Overall deadline for a call, from its start, waits included. `None`: no deadline.
    pub deadline: Option<Duration>,
    /// Timeout of one HTTP attempt (connect to last byte of a non-streaming body, or to
    /// the response head of a stream). `None`: none.
    pub attempt_timeout: Option<Duration>,
    /// A stream that sends nothing for this long fails.
    pub stream_idle_timeout: Duration,
    /// Bound on making a connection (name resolution, TCP and TLS handshakes).
    pub connect_timeout: Duration,
    /// Bound on waiting for the response head, from the request sent (a stream's, or
    /// with [`RetryPolicy::head_time_per_token`] added per expected token, a
    /// non-streamed call's). `None`: only the attempt timeout.
    pub head_timeout: Option<Duration>,
    /// Generation time allowed per token of the request's estimate, added to
    /// [`RetryPolicy::head_timeout`] for a non-streamed call (whose head comes only once
    /// the answer is generated).
    pub head_time_per_token: Duration,
    /// Bound on reading a non-streamed body, from its head to its last byte (silent or
    /// trickling peers alike). `None`: only the attempt timeout.
    pub body_timeout: Option<Duration>,
    /// No retry starts with less than this (or a tenth of the deadline, if less) left
    /// before the deadline: it could not finish. The first attempt always starts.
    pub min_attempt_time: Duration,
    /// Retry when the connection could not be made.
    pub retry_connect: bool,
    /// Retry when the connection was closed or reset before the response.
    pub retry_reset: bool,
    /// Retry when an attempt timed out.
    pub retry_timeout: bool,
    /// Send a request that is not idempotent (every `POST`) again after an attempt whose
    /// outcome is unknown: the request was written and no answer came (the connection
    /// closed, reset or silent), or a success's body was cut. Off by default: the server
    /// may have run it, and each sending may run (and bill) it once more, so the call
    /// ends with [`crate::Error::OutcomeUnknown`] (RFC 9110 §9.2.2; the official SDKs
    /// send once by default too). On, such attempts are retried as their kind is
    /// ([`RetryPolicy::retry_reset`], [`RetryPolicy::retry_timeout`]). Idempotent
    /// requests (`GET /v1/models`) and requests that never reached the server are
    /// retried either way.
    pub retry_unknown_outcome: bool,
    /// Most attempts in a row that fail before their request reached the server (the
    /// connection refused, the name not resolved, the host unreachable, the connection
    /// or its TLS handshake timed out): a dead server or a wrong URL is reported after
    /// these, within a few seconds, not after the whole retry budget. 3 by default: a
    /// blip (a restart, a resolver hiccup) gets two quick retries of the backoff.
    pub max_unreachable: u32,
    /// Retry 500, 502, 503, 504 and 408.
    pub retry_server_errors: bool,
    /// Retry Mistral capacity refusals (`3505`).
    pub retry_capacity: bool,
    /// Retry 429s (spent windows and ambiguous ones).
    pub retry_rate_limited: bool,
    /// The backoff's shape.
    pub backoff: Backoff,
    /// Wait out a spent window as it needs (`window ÷ limit`, growing to the window).
    /// Off, a 429 with headers is backed off like one without (what clients that do
    /// not read the headers do).
    pub window_aware: bool,
    /// Take `Retry-After` (and friends) as a floor under every wait.
    pub honor_retry_after: bool,
    /// The calls' priority class in the shared budget ([`crate::Priority`]).
    pub priority: crate::Priority,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            deadline: Some(Duration::from_secs(300)),
            attempt_timeout: Some(Duration::from_secs(300)),
            stream_idle_timeout: Duration::from_secs(60),
            connect_timeout: crate::request::DEFAULT_CONNECT_TIMEOUT,
            head_timeout: Some(Duration::from_secs(60)),
            head_time_per_token: Duration::from_millis(25),
            body_timeout: Some(Duration::from_secs(60)),
            min_attempt_time: Duration::from_secs(1),
            retry_connect: true,
            retry_reset: true,
            retry_timeout: true,
            retry_unknown_outcome: false,
            max_unreachable: 3,
            retry_server_errors: true,
            retry_capacity: true,
            retry_rate_limited: true,
            backoff: Backoff::FullJitter,
            window_aware: true,
            honor_retry_after: true,
            priority: crate::Priority::Default,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets [`RetryPolicy::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff base and cap.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap.max(base);
        self
    }

    /// Sets [`RetryPolicy::deadline`].
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets [`RetryPolicy::attempt_timeout`].
    pub fn attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Sets [`RetryPolicy::stream_idle_timeout`].
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Sets [`RetryPolicy::head_timeout`] and [`RetryPolicy::body_timeout`].
    pub fn silence_timeouts(mut self, head: Option<Duration>, body: Option<Duration>) -> Self {
        self.head_timeout = head;
        self.body_timeout = body;
        self
    }

    /// The bound on the response head of a request expecting `tokens` tokens (see
    /// [`RetryPolicy::head_timeout`]).
    pub fn head_timeout_for(&self, stream: bool, tokens: u64) -> Option<Duration> {
        let base = self.head_timeout?;
        if stream {
            return Some(base);
        }
        let per_token = self
            .head_time_per_token
            .checked_mul(u32::try_from(tokens).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX);
        Some(base.saturating_add(per_token))
    }

    /// Switches retries of every transport error kind on or off.
    pub fn retry_transport(mut self, on: bool) -> Self {
        self.retry_connect = on;
        self.retry_reset = on;
        self.retry_timeout = on;
        self
    }

    /// Sets [`RetryPolicy::retry_unknown_outcome`].
    pub fn retry_unknown_outcome(mut self, on: bool) -> Self {
        self.retry_unknown_outcome = on;
        self
    }

    /// Sets [`RetryPolicy::max_unreachable`] (at least 1).
    pub fn max_unreachable(mut self, n: u32) -> Self {
        self.max_unreachable = n.max(1);
        self
    }

    /// The backoff's ceiling after `failures` failed attempts (1 for the first),
    /// `min(cap, base·2^(failures−1))` without jitter: when a call that stopped could
    /// sensibly be tried again.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        exponential(self.base, failures).min(self.cap)
    }

    /// Whether a transport failure of `kind` is retried.
    pub fn retries_transport(&self, kind: TransportKind) -> bool {
        match kind {
            TransportKind::Connect => self.retry_connect,
            TransportKind::Reset => self.retry_reset,
            TransportKind::Timeout => self.retry_timeout,
            _ => false,
        }
    }

    /// Full-jitter backoff after `failures` failed attempts (1 for the first):
    /// `U(0, min(cap, base·2^(failures−1)))`.
    pub fn backoff_wait(&self, failures: u32, rng: &mut fastrand::Rng) -> Duration {
        match self.backoff {
            Backoff::FullJitter => {
                let ceiling = exponential(self.base, failures).min(self.cap);
                scaled(ceiling, rng.f64())
            }
            Backoff::Exponential { factor, jitter } => {
                let n = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
                let grown = self.base.as_secs_f64() * factor.max(1.0).powi(n);
                let capped = grown.min(self.cap.as_secs_f64());
                let grown = Duration::try_from_secs_f64(capped).unwrap_or(self.cap);
                grown.saturating_add(scaled(jitter, rng.f64()))
            }
        }
    }

    /// The wait after a refusal by a spent window, the `streak`-th in a row (1 for the
    /// first): at least one unit's return time (`window ÷ limit × cost`), doubling per
    /// refusal up to the whole window, plus up to 25 % jitter (never past the window).
    /// `cost` is the request's estimate for a token (or OCR page) bucket, ignored for
    /// requests.
    pub fn window_wait(
        &self,
        quota: &Quota,
        cost: u64,
        streak: u32,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let window = quota.window.duration().unwrap_or(Duration::from_secs(60));
        let units = match quota.bucket {
            Bucket::Requests => 1,
            Bucket::Tokens | Bucket::Pages => cost.max(1),
        };
        let unit = match quota.limit {
            Some(limit) if limit > 0 => {
                let nanos = window.as_nanos() * u128::from(units) / u128::from(limit);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            _ => window,
        };
        let floor = exponential(unit, streak).min(window);
        let jitter = scaled(floor, 0.25 * rng.f64());
        floor.saturating_add(jitter).min(window.max(floor))
    }
}

/// `d × f` for `f` in `[0, 1]`, never panicking (a NaN or an overflow gives `d`).
fn scaled(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f)
        .unwrap_or(d)
        .min(d)
}

fn exponential(base: Duration, n: u32) -> Duration {
    let factor = 1u64
        .checked_shl(n.saturating_sub(1).min(62))
        .unwrap_or(u64::MAX);
    base.checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimits::Window;

    fn quota(bucket: Bucket, secs: u32, limit: u64) -> Quota {
        Quota {
            bucket,
            window: Window::Seconds(secs),
            limit: Some(limit),
            remaining: Some(0),
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_growing_ceiling() {
        let p = RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = fastrand::Rng::with_seed(7);
        for failures in 1..20 {
            let ceiling =
                exponential(Duration::from_millis(100), failures).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.backoff_wait(failures, &mut rng) <= ceiling);
            }
        }
        // Seeded: the same seed gives the same schedule.
        let a: Vec<_> = (1..6)
            .map(|n| p.backoff_wait(n, &mut fastrand::Rng::with_seed(1)))
            .collect();
        let b: Vec<_> = (1..6)
            .map(|n| p.backoff_wait(n, &mut fastrand::Rng::with_seed(1)))
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn a_minute_window_is_not_hammered() {
        // 4 requests per minute: one unit comes back every 15 s.
        let p = RetryPolicy::default();
        let q = quota(Bucket::Requests, 60, 4);
        let mut rng = fastrand::Rng::with_seed(3);
        let waits: Vec<_> = (1..=4).map(|n| p.window_wait(&q, 1, n, &mut rng)).collect();
        assert!(waits[0] >= Duration::from_secs(15) && waits[0] <= Duration::from_millis(18_750));
        assert!(waits[1] >= Duration::from_secs(30));
        assert!(waits[2] >= Duration::from_secs(60) && waits[2] <= Duration::from_secs(60));
        assert_eq!(
            waits[3],
            Duration::from_secs(60),
            "never more than the window"
        );
    }

    #[test]
    fn a_token_window_waits_for_the_requests_tokens() {
        // 50,000 tokens per minute, a request of 5,000 tokens: 6 s for its tokens.
        let p = RetryPolicy::default();
        let q = quota(Bucket::Tokens, 60, 50_000);
        let w = p.window_wait(&q, 5_000, 1, &mut fastrand::Rng::with_seed(1));
        assert!(
            w >= Duration::from_secs(6) && w <= Duration::from_millis(7_500),
            "{w:?}"
        );
        // A request larger than the bucket waits the whole window, not forever.
        let huge = p.window_wait(&q, 10_000_000, 1, &mut fastrand::Rng::with_seed(1));
        assert_eq!(huge, Duration::from_secs(60));
    }

    #[test]
    fn a_fast_window_waits_its_unit() {
        // 5 per second: 200 ms per unit.
        let p = RetryPolicy::default();
        let q = quota(Bucket::Requests, 1, 5);
        let w = p.window_wait(&q, 1, 1, &mut fastrand::Rng::with_seed(1));
        assert!(
            w >= Duration::from_millis(200) && w <= Duration::from_millis(250),
            "{w:?}"
        );
    }

    #[test]
    fn transport_kinds_can_be_switched_off() {
        let p = RetryPolicy::default();
        assert!(p.retries_transport(TransportKind::Connect));
        assert!(!p.retries_transport(TransportKind::Tls));
        let off = p.retry_transport(false);
        for kind in [
            TransportKind::Connect,
            TransportKind::Reset,
            TransportKind::Timeout,
        ] {
            assert!(!off.retries_transport(kind));
        }
    }

    #[test]
    fn other_clients_shapes() {
        let seed_fix = RetryPolicy {
            backoff: Backoff::Exponential {
                factor: 2.0,
                jitter: Duration::ZERO,
            },
            ..RetryPolicy::default().backoff(Duration::from_secs(1), Duration::from_secs(60))
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let waits: Vec<_> = (1..=3)
            .map(|n| seed_fix.backoff_wait(n, &mut rng))
            .collect();
        assert_eq!(waits, [1, 2, 4].map(Duration::from_secs));
        let sdk = RetryPolicy {
            backoff: Backoff::Exponential {
                factor: 1.5,
                jitter: Duration::from_secs(1),
            },
            ..RetryPolicy::default().backoff(Duration::from_millis(500), Duration::from_secs(60))
        };
        let w = sdk.backoff_wait(3, &mut rng);
        assert!(
            w >= Duration::from_millis(1125) && w <= Duration::from_millis(2125),
            "{w:?}"
        );
        assert!(sdk.backoff_wait(40, &mut rng) <= Duration::from_secs(61));
    }

    #[test]
    fn exponential_saturates() {
        assert_eq!(
            exponential(Duration::from_secs(1), 1),
            Duration::from_secs(1)
        );
        assert_eq!(
            exponential(Duration::from_secs(1), 4),
            Duration::from_secs(8)
        );
        assert_eq!(
            exponential(Duration::from_secs(1), 200),
            Duration::from_secs(u64::from(u32::MAX))
        );
    }
}
