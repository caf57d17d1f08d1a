//! Statistics and log events of a client, the same for both drivers.
//!
//! A driver hands every [`Action`] its calls produce to [`Telemetry::observe_call`].
//! That counts it and emits a `tracing` event under the client's own target
//! ([`LogTarget`]: `mistral_blocking` or `mistral_async`, so
//! `RUST_LOG=mistral_blocking=debug` shows one client): every 429 at WARN (who refused,
//! bucket, limit, remaining, wait, attempt, correlation id), a spending cap at WARN, a
//! call past [`crate::LONG_CALL`] at WARN once, every retry and every wait with its reason at DEBUG, a failed call at
//! DEBUG, except a call that could not reach the server at all (refused, name not
//! resolved): that is a WARN naming the server and the cause, once until a call gets
//! through again. Nothing logged ever contains the API key or a request header.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::action::{Action, Ask, Grant, Report};
use crate::call::Call;
use crate::error::{Error, TransportKind};
use crate::forecast::{Forecast, MonthAlarm, Tracker, human};
use crate::ratelimits::RateLimits;
use crate::verdict::Verdict;

/// The `tracing` target a client's events go under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogTarget {
    /// `mistral_core::telemetry` (a driver that names none).
    #[default]
    Core,
    /// `mistral_blocking`.
    Blocking,
    /// `mistral_async`.
    Async,
}

impl LogTarget {
    /// The target's name, as `RUST_LOG` directives write it.
    pub fn name(self) -> &'static str {
        match self {
            LogTarget::Core => "mistral_core::telemetry",
            LogTarget::Blocking => "mistral_blocking",
            LogTarget::Async => "mistral_async",
        }
    }
}

/// A `tracing` event at `$level` under the [`LogTarget`] `$target` (tracing needs the
/// target as a literal: one arm per target).
macro_rules! emit {
    ($target:expr, $level:ident, $($rest:tt)*) => {
        match $target {
            LogTarget::Blocking => tracing::$level!(target: "mistral_blocking", $($rest)*),
            LogTarget::Async => tracing::$level!(target: "mistral_async", $($rest)*),
            LogTarget::Core => tracing::$level!(target: "mistral_core::telemetry", $($rest)*),
        }
    };
}

/// Shared counters of one client and its clones: atomics, and one `Mutex` for the
/// last rate limits seen (held only to copy them).
#[derive(Debug, Default)]
pub struct Telemetry {
    target: LogTarget,
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    window_429: AtomicU64,
    ambiguous_429: AtomicU64,
    no_allowance_429: AtomicU64,
    monthly_quota_429: AtomicU64,
    capacity_429: AtomicU64,
    spending_cap: AtomicU64,
    gateway_429: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    outcome_unknown: AtomicU64,
    unknown_outcome_resent: AtomicU64,
    /// The last call could not reach the server, and a WARN said so.
    unreachable_warned: AtomicBool,
    waited_micros: AtomicU64,
    limiter: LimiterCounters,
    /// The same per priority class, by lane.
    by_priority: [LimiterCounters; 3],
    last_limits: Mutex<Option<RateLimits>>,
    /// Calls served per capacity pool (`usage.service_tier`).
    tiers: Mutex<BTreeMap<String, TierCounts>>,
    /// What each budget's answers said of its limits, and this client's spend: the
    /// quota forecast.
    forecasts: Mutex<Tracker>,
    /// When the last long-call WARN was said, and how many long calls were not said since.
    long_calls: Mutex<(Option<std::time::Instant>, u64)>,
}

/// At most one "a call has been waiting long" WARN per client this often; the calls
/// found long meanwhile are counted in the next one (and each said at DEBUG).
pub const LONG_CALL_WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct LimiterCounters {
    admitted_at_once: AtomicU64,
    queued: AtomicU64,
    refused_deadline: AtomicU64,
    refused_closed: AtomicU64,
    queued_micros: AtomicU64,
}

/// A snapshot of a client's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls started (logical requests).
    pub calls: u64,
    /// HTTP attempts sent.
    pub attempts: u64,
    /// Attempts after the first of their call.
    pub retries: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that ended with an error.
    pub failures: u64,
    /// 429s received, by kind.
    pub rate_limited: RateLimitedCounts,
    /// 5xx responses received.
    pub server_errors: u64,
    /// Attempts that got no response.
    pub transport_errors: u64,
    /// Calls that ended with [`Error::OutcomeUnknown`] (also as a deadline's last
    /// error): their request was sent, no answer came, and it was not sent again since
    /// the server may have run it.
    pub outcome_unknown: u64,
    /// Attempts that sent again a request whose previous attempt's outcome was unknown,
    /// as [`crate::RetryPolicy::retry_unknown_outcome`] allowed: each may have run the
    /// request once more.
    pub unknown_outcome_resent: u64,
    /// Time calls spent waiting (backoff, pacing, spent windows), summed over calls.
    pub waited: Duration,
    /// The shared limiter's answers to this client's calls, all classes together.
    pub limiter: LimiterCounts,
    /// The same per priority class, indexed by [`crate::Priority::lane`]
    /// ([`Stats::limiter_of`]).
    pub limiter_by_priority: [LimiterCounts; 3],
    /// The last rate limits a response announced.
    pub last_limits: Option<RateLimits>,
    /// Calls served per capacity pool, keyed by the `usage.service_tier` the answers
    /// named (`"standard"`, `"priority"`… as the server spells them; at most
    /// [`MAX_TIERS`] names, the others counted under `"other"`). A call whose answer
    /// names no tier is not counted here.
    pub service_tiers: BTreeMap<String, TierCounts>,
}

/// The most tier names [`Stats::service_tiers`] keeps apart.
pub const MAX_TIERS: usize = 16;

/// What one capacity pool served ([`Stats::service_tiers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierCounts {
    /// Calls it served (a stream once, at its end).
    pub served: u64,
    /// Their tokens (`usage.total_tokens`).
    pub tokens: u64,
}

/// 429s received, by what they meant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitedCounts {
    /// A spent window (minute, N seconds).
    pub window: u64,
    /// No header said which limit.
    pub ambiguous: u64,
    /// A zero allowance.
    pub no_allowance: u64,
    /// The monthly quota.
    pub monthly_quota: u64,
    /// Mistral's capacity (`3505`).
    pub capacity: u64,
    /// A spending cap (a gateway's budget, `insufficient_quota`; a 429, 402, or a 400
    /// or 403 that names one): never retried.
    pub spending_cap: u64,
    /// Of all these, the refusals a gateway in between sent ([`crate::Origin::Gateway`]),
    /// not the Mistral API.
    pub from_gateway: u64,
}

/// What the shared limiter answered a client's attempts (one answer per attempt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterCounts {
    /// Attempts admitted at once (within the limiter's short horizon, without waiting
    /// in line).
    pub admitted_at_once: u64,
    /// Attempts admitted after waiting in the limiter's line (pacing).
    pub queued: u64,
    /// Calls ended because the budget could not admit them within their deadline
    /// (`Error::RateLimited { shared: true, .. }`, no request sent).
    pub refused_deadline: u64,
    /// Attempts refused because the budget is closed (no allowance, monthly quota).
    pub refused_closed: u64,
    /// The time queued attempts spent in line, summed.
    pub queued_wait: Duration,
}

impl LimiterCounters {
    fn snapshot(&self) -> LimiterCounts {
        LimiterCounts {
            admitted_at_once: self.admitted_at_once.load(Relaxed),
            queued: self.queued.load(Relaxed),
            refused_deadline: self.refused_deadline.load(Relaxed),
            refused_closed: self.refused_closed.load(Relaxed),
            queued_wait: Duration::from_micros(self.queued_micros.load(Relaxed)),
        }
    }
}

impl Stats {
    /// The shared limiter's answers to this client's calls of class `priority`.
    pub fn limiter_of(&self, priority: crate::Priority) -> LimiterCounts {
        self.limiter_by_priority[(priority.lane() as usize).min(2)]
    }
}

impl LimiterCounts {
    /// The average time in line of an attempt admitted after waiting (`None` before
    /// the first).
    pub fn average_wait(&self) -> Option<Duration> {
        let n = u32::try_from(self.queued).unwrap_or(u32::MAX);
        (n > 0).then(|| self.queued_wait / n)
    }
}

impl RateLimitedCounts {
    /// All of them (every kind once; [`RateLimitedCounts::from_gateway`] is a part).
    pub fn total(&self) -> u64 {
        self.window
            + self.ambiguous
            + self.no_allowance
            + self.monthly_quota
            + self.capacity
            + self.spending_cap
    }
}

impl Telemetry {
    /// New counters at zero, events under `mistral_core::telemetry`.
    pub fn new() -> Self {
        Self::default()
    }

    /// New counters at zero, events under `target`.
    pub fn for_target(target: LogTarget) -> Self {
        Self {
            target,
            ..Self::default()
        }
    }

    /// The target this client's events go under.
    pub fn target(&self) -> LogTarget {
        self.target
    }

    /// [`Telemetry::observe`], and what the call has to say beside its action (that it
    /// has been going for [`crate::LONG_CALL`]).
    pub fn observe_call(&self, call: &mut Call, action: &Action) {
        if let Some(long) = call.take_long_call() {
            let others = {
                let mut guard = self.long_calls.lock().unwrap_or_else(|e| e.into_inner());
                let (last, suppressed) = &mut *guard;
                let due = last
                    .is_none_or(|l| long.at.saturating_duration_since(l) >= LONG_CALL_WARN_EVERY);
                if due {
                    *last = Some(long.at);
                    Some(std::mem::take(suppressed))
                } else {
                    *suppressed += 1;
                    None
                }
            };
            match others {
                Some(others) => emit!(
                    self.target,
                    warn,
                    model = long.model.as_str(),
                    path = long.path.as_str(),
                    attempts = long.attempts,
                    waited_s = long.going.as_secs_f64(),
                    deadline_s = long.deadline.map(|d| d.as_secs_f64()),
                    reason = long.reason.as_str(),
                    others_since_last_warning = others,
                    "mistral: a call has been waiting long"
                ),
                None => emit!(
                    self.target,
                    debug,
                    model = long.model.as_str(),
                    waited_s = long.going.as_secs_f64(),
                    reason = long.reason.as_str(),
                    "mistral: a call has been waiting long"
                ),
            }
        }
        if let Action::Done(Err(Error::RateLimited { shared: true, .. })) = action {
            let lane = (call.priority().lane() as usize).min(2);
            self.by_priority[lane]
                .refused_deadline
                .fetch_add(1, Relaxed);
        }
        if call.take_unknown_resend() {
            self.unknown_outcome_resent.fetch_add(1, Relaxed);
        }
        if let Action::Done(result) = action {
            self.observe_reachability(call, result.as_ref().err());
        }
        if let Action::Report(report) = action {
            self.track(call.now(), report);
        }
        self.observe(action);
    }

    /// Feeds the forecast one report at `now`, and says at WARN, once per budget, that
    /// its monthly quota will run out within a day at the current rate.
    fn track(&self, now: std::time::Instant, report: &Report) {
        let alarm = match self.forecasts.lock() {
            Ok(mut tracker) => tracker.observe(now, report),
            Err(_) => None,
        };
        if let Some(MonthAlarm {
            model,
            quota,
            runs_out_in,
        }) = alarm
        {
            emit!(
                self.target,
                warn,
                model = model.as_str(),
                remaining = ?quota.remaining,
                limit = ?quota.limit,
                rate_per_s = quota.rate.unwrap_or(0.0),
                runs_out_s = runs_out_in.as_secs(),
                resets = %quota.resets,
                "mistral: the monthly quota of {} will run out in {} at the current rate",
                model,
                human(runs_out_in)
            );
        }
    }

    /// The quota forecast of `model`'s budget at `now`, from what this client's answers
    /// said and what it spent (`None`: no answer for it yet). See [`crate::forecast`].
    pub fn forecast(&self, model: &str, now: std::time::Instant) -> Option<Forecast> {
        self.forecasts.lock().ok()?.forecast(model, now)
    }

    /// The forecasts of every budget this client has had an answer for, in name order.
    pub fn forecasts(&self, now: std::time::Instant) -> Vec<Forecast> {
        let Ok(tracker) = self.forecasts.lock() else {
            return Vec::new();
        };
        tracker
            .models()
            .filter_map(|m| tracker.forecast(m, now))
            .collect()
    }

    /// Says at WARN, naming the server and the cause, that a call could not reach the
    /// server at all — once, until a call gets through again (a dead server or a wrong
    /// URL is one line, not one per call).
    fn observe_reachability(&self, call: &Call, error: Option<&Error>) {
        let last = match error {
            Some(Error::Deadline {
                last: Some(last), ..
            }) => Some(&**last),
            other => other,
        };
        let Some(error @ Error::Transport { kind, message, .. }) = last else {
            self.unreachable_warned.store(false, Relaxed);
            return;
        };
        if *kind != TransportKind::Connect {
            self.unreachable_warned.store(false, Relaxed);
            return;
        }
        if self.unreachable_warned.swap(true, Relaxed) {
            return;
        }
        emit!(
            self.target,
            warn,
            server = call.server(),
            cause = message.as_str(),
            attempts = error.trail().map_or(0, |t| t.attempts),
            "mistral: cannot reach the server ({}); check the base URL (MISTRAL_BASE_URL) \
             and the network",
            kind
        );
    }

    /// A call started.
    pub fn call_started(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    /// Counts the limiter's answer to `ask`, given `waited` after it was asked; `in_line`
    /// when the limiter did not answer at its first poll (a call answered at once counts
    /// as admitted at once, however long its thread or task took to be scheduled). The
    /// driver calls it between the limiter's answer and [`crate::Call::handle_grant`].
    pub fn observe_grant(&self, ask: &Ask, grant: &Grant, waited: Duration, in_line: bool) {
        let waited = if in_line { waited } else { Duration::ZERO };
        if let Grant::Go { after, .. } = grant
            && waited >= Duration::from_millis(1)
        {
            emit!(
                self.target,
                debug,
                model = ask.model.as_deref().unwrap_or(""),
                priority = ask.priority.name(),
                attempt = ask.attempt,
                waited_ms = waited.as_secs_f64() * 1e3,
                then_ms = after.as_secs_f64() * 1e3,
                "mistral: admitted by the shared limiter after waiting in line"
            );
        }
        Self::count_grant(&self.limiter, grant, waited);
        let lane = (ask.priority.lane() as usize).min(2);
        Self::count_grant(&self.by_priority[lane], grant, waited);
    }

    fn count_grant(c: &LimiterCounters, grant: &Grant, waited: Duration) {
        /// Less than this in line is "at once": the time one poll takes.
        const AT_ONCE: Duration = Duration::from_millis(1);
        match grant {
            Grant::Now => &c.admitted_at_once,
            Grant::Go { .. } if waited < AT_ONCE => &c.admitted_at_once,
            Grant::Go { .. } => {
                c.queued_micros.fetch_add(
                    u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
                    Relaxed,
                );
                &c.queued
            }
            // Counted when the call ends.
            Grant::Late { .. } => return,
            Grant::Refused(_) => &c.refused_closed,
            #[allow(unreachable_patterns)]
            _ => return,
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts and logs one action of a call, before the driver carries it out.
    pub fn observe(&self, action: &Action) {
        match action {
            Action::Send(attempt) => {
                self.attempts.fetch_add(1, Relaxed);
                if attempt.id.number() > 1 {
                    self.retries.fetch_add(1, Relaxed);
                    emit!(
                        self.target,
                        debug,
                        attempt = attempt.id.number(),
                        method = %attempt.request.method(),
                        path = attempt.request.uri().path(),
                        "mistral: retrying"
                    );
                }
            }
            Action::Wait { until: _, why } => {
                emit!(self.target, debug, reason = %why, "mistral: waiting");
            }
            Action::Report(report) => self.observe_report(report),
            Action::Done(result) => self.observe_done(result.as_ref().map(|s| s.trail.waited)),
            Action::Reserve(_) => {}
        }
    }

    /// Counts and logs the report of a stream's end ([`crate::StreamReader::take_report`])
    /// at `now`: the tier that served it, its tokens for the forecast, or the error event
    /// that ended it (a 429 inside a stream counts as a 429). The driver calls it as it
    /// hands the report to the limiter.
    pub fn observe_stream_end(&self, now: std::time::Instant, report: &Report) {
        self.track(now, report);
        self.observe_report(report);
    }

    fn count_tier(&self, report: &Report) {
        let Some(tier) = &report.service_tier else {
            return;
        };
        if !matches!(report.verdict, Verdict::Success | Verdict::Usage) {
            return;
        }
        let Ok(mut tiers) = self.tiers.lock() else {
            return;
        };
        // A tier seen before is counted without a copy of its name.
        let key = match tiers.contains_key(tier.as_str()) || tiers.len() < MAX_TIERS {
            true => tier.as_str(),
            false => "other",
        };
        if !tiers.contains_key(key) {
            tiers.insert(key.to_owned(), TierCounts::default());
        }
        let Some(counts) = tiers.get_mut(key) else {
            return;
        };
        counts.served += 1;
        counts.tokens = counts
            .tokens
            .saturating_add(report.used_tokens.unwrap_or(0));
    }

    fn observe_report(&self, report: &Report) {
        self.count_tier(report);
        if !report.limits.quotas.is_empty()
            && let Ok(mut last) = self.last_limits.lock()
        {
            *last = Some(report.limits.clone());
        }
        let counter = match report.verdict {
            Verdict::WindowSpent { .. } => &self.window_429,
            Verdict::RateLimited => &self.ambiguous_429,
            Verdict::NoAllowance { .. } => &self.no_allowance_429,
            Verdict::MonthlyQuota { .. } => &self.monthly_quota_429,
            Verdict::Capacity => &self.capacity_429,
            Verdict::SpendingCap => &self.spending_cap,
            Verdict::ServerError { .. } => {
                self.server_errors.fetch_add(1, Relaxed);
                return;
            }
            Verdict::Transport(kind) => {
                self.transport_errors.fetch_add(1, Relaxed);
                emit!(self.target, debug, %kind, attempt = report.attempt, "mistral: no response");
                return;
            }
            _ => return,
        };
        counter.fetch_add(1, Relaxed);
        if report.origin.is_gateway() {
            self.gateway_429.fetch_add(1, Relaxed);
        }
        let quota = report.verdict.quota();
        let wait = report.retry.map_or(Duration::ZERO, |r| r.wait);
        let (bucket, window) = match quota {
            Some(q) => (Some(q.bucket.to_string()), Some(q.window.to_string())),
            None => (None, None),
        };
        let (limit, remaining) = (quota.and_then(|q| q.limit), quota.and_then(|q| q.remaining));
        if report.verdict == Verdict::SpendingCap {
            emit!(
                self.target,
                warn,
                origin = report.origin.name(),
                model = report.model.as_deref().unwrap_or("-"),
                correlation_id = report.correlation_id.as_deref().unwrap_or("-"),
                "mistral: a spending cap refused the call; retrying will not help"
            );
            return;
        }
        emit!(
            self.target,
            warn,
            kind = report.verdict.name(),
            origin = report.origin.name(),
            model = report.model.as_deref().unwrap_or("-"),
            bucket = bucket.as_deref().unwrap_or("unknown"),
            window = window.as_deref().unwrap_or("unknown"),
            limit = ?limit,
            remaining = ?remaining,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            attempt = report.attempt,
            correlation_id = report.correlation_id.as_deref().unwrap_or("-"),
            "mistral: HTTP 429"
        );
    }

    fn observe_done(&self, result: Result<Duration, &Error>) {
        let waited = match result {
            Ok(waited) => {
                self.successes.fetch_add(1, Relaxed);
                waited
            }
            Err(error) => {
                self.failures.fetch_add(1, Relaxed);
                if error.is_outcome_unknown() {
                    self.outcome_unknown.fetch_add(1, Relaxed);
                }
                if matches!(error, Error::RateLimited { shared: true, .. }) {
                    self.limiter.refused_deadline.fetch_add(1, Relaxed);
                }
                emit!(self.target, debug, %error, "mistral: call failed");
                error.trail().map(|t| t.waited).unwrap_or_default()
            }
        };
        self.waited_micros.fetch_add(
            u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// A consistent-enough snapshot (each counter is read atomically).
    pub fn snapshot(&self) -> Stats {
        Stats {
            calls: self.calls.load(Relaxed),
            attempts: self.attempts.load(Relaxed),
            retries: self.retries.load(Relaxed),
            successes: self.successes.load(Relaxed),
            failures: self.failures.load(Relaxed),
            rate_limited: RateLimitedCounts {
                window: self.window_429.load(Relaxed),
                ambiguous: self.ambiguous_429.load(Relaxed),
                no_allowance: self.no_allowance_429.load(Relaxed),
                monthly_quota: self.monthly_quota_429.load(Relaxed),
                capacity: self.capacity_429.load(Relaxed),
                spending_cap: self.spending_cap.load(Relaxed),
                from_gateway: self.gateway_429.load(Relaxed),
            },
            server_errors: self.server_errors.load(Relaxed),
            transport_errors: self.transport_errors.load(Relaxed),
            outcome_unknown: self.outcome_unknown.load(Relaxed),
            unknown_outcome_resent: self.unknown_outcome_resent.load(Relaxed),
            waited: Duration::from_micros(self.waited_micros.load(Relaxed)),
            limiter: self.limiter.snapshot(),
            limiter_by_priority: [
                self.by_priority[0].snapshot(),
                self.by_priority[1].snapshot(),
                self.by_priority[2].snapshot(),
            ],
            last_limits: self.last_limits.lock().ok().and_then(|l| l.clone()),
            service_tiers: self.tiers.lock().map(|t| t.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::action::Sizing;
    use crate::origin::Origin;

    fn report(verdict: Verdict, tier: Option<&str>, tokens: u64) -> Report {
        Report {
            model: Some("m".into()),
            limits: RateLimits::default(),
            verdict,
            retry: None,
            estimated_tokens: 10,
            used_tokens: Some(tokens),
            attempt: 1,
            correlation_id: None,
            ticket: None,
            usage: None,
            size: Sizing::default(),
            origin: Origin::Unknown,
            service_tier: tier.map(str::to_owned),
        }
    }

    #[test]
    fn a_grant_answered_at_the_first_poll_is_admitted_at_once_however_late() {
        let t = Telemetry::new();
        let ask = Ask {
            model: Some("m".into()),
            tokens: 1,
            size: Sizing::default(),
            attempt: 1,
            within: None,
            priority: crate::Priority::Default,
        };
        let go = Grant::Go {
            after: Duration::ZERO,
            ticket: crate::Ticket::default(),
        };
        // Answered at the first poll, 5 ms after it was asked (a descheduled thread).
        t.observe_grant(&ask, &go, Duration::from_millis(5), false);
        // Told to wait, then admitted 5 ms later.
        t.observe_grant(&ask, &go, Duration::from_millis(5), true);
        let counts = t.snapshot().limiter;
        assert_eq!(
            (counts.admitted_at_once, counts.queued),
            (1, 1),
            "{counts:?}"
        );
        assert_eq!(counts.average_wait(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn calls_are_counted_per_tier_that_served_them() {
        let t = Telemetry::new();
        t.observe(&Action::Report(report(
            Verdict::Success,
            Some("priority"),
            12,
        )));
        t.observe(&Action::Report(report(
            Verdict::Success,
            Some("priority"),
            8,
        )));
        // A stream's end names its tier once.
        let now = std::time::Instant::now();
        t.observe_stream_end(now, &report(Verdict::Usage, Some("standard"), 5));
        // No tier named, or not served: not counted.
        t.observe(&Action::Report(report(Verdict::Success, None, 3)));
        t.observe(&Action::Report(report(
            Verdict::RateLimited,
            Some("priority"),
            0,
        )));
        let tiers = t.snapshot().service_tiers;
        assert_eq!(
            tiers.get("priority"),
            Some(&TierCounts {
                served: 2,
                tokens: 20
            })
        );
        assert_eq!(tiers.get("standard").map(|c| c.served), Some(1));
        assert_eq!(tiers.len(), 2);
        // Names are bounded in number.
        for i in 0..40 {
            t.observe(&Action::Report(report(
                Verdict::Success,
                Some(&format!("t{i}")),
                1,
            )));
        }
        let tiers = t.snapshot().service_tiers;
        assert_eq!(tiers.len(), MAX_TIERS + 1, "{tiers:?}");
        assert_eq!(tiers.get("other").map(|c| c.served), Some(26));
    }
}
