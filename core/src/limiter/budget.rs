//! The shared budget of one model: the pure arithmetic every store runs.
//!
//! State is a flat record of integers (times in microseconds of the store's clock) so a
//! file or a Redis hash can hold it and a Lua script can mirror it. Two operations, each
//! one atomic read-modify-write in every store:
//!
//! - [`BudgetState::reserve`]: GCRA in reservation form with no burst tolerance (pure
//!   pacing: a burst would let two windows' worth through under a sliding-window or
//!   fixed-window server). One cell for requests, one for tokens; a request reserves both
//!   and waits for the later. `TAT' = max(TAT, start) + cost·T`. A request larger than
//!   the bucket just pushes the TAT further (debt): it waits for its turn, never hangs.
//! - [`BudgetState::report`]: learning. Limits come from the response headers
//!   (`window ÷ limit` per unit) unless configured; the token estimate is corrected with
//!   the real count (`TAT += (actual − estimate)·T`, commutative); a 429 pauses every
//!   caller for the wait the refused call computed and lowers the shared rate by 10 %
//!   once per congestion event (not once per caller); the rate creeps back by 1 % of the
//!   limit per second without refusals. With no headers and no configuration the rate
//!   is learned from 429s: the success rate measured when the first 429 arrives, less
//!   5 %, then the same increase/decrease. A zero allowance or a spent monthly quota
//!   closes the budget for every caller for [`BudgetState::BLOCK_MICROS`].
//!
//! Until the first response of a budget tells whether limits are announced, one probe
//! goes and the others re-ask shortly ([`Decision::Recheck`]), so 64 threads starting at
//! once do not all hit an unknown limit.

use serde::{Deserialize, Serialize};

use crate::action::{Report, Signal};
use crate::ratelimits::RateLimits;

const MICROS: u64 = 1_000_000;
const FULL_SHARE: u64 = 1_000_000;

/// Where a budget's limits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[repr(u8)]
pub enum Source {
    /// Nothing known yet: the first response will tell.
    #[default]
    Unknown = 0,
    /// Set by the user.
    Configured = 1,
    /// Announced by the server's headers.
    Headers = 2,
    /// The server announces nothing: learned from 429s.
    Learned = 3,
}

/// Why a budget is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[repr(u8)]
pub enum Block {
    /// Open.
    #[default]
    None = 0,
    /// A limit of 0 for this model.
    NoAllowance = 1,
    /// The monthly quota is spent.
    MonthlyQuota = 2,
}

/// The state of one model's budget. All times are microseconds of the store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BudgetState {
    /// The latest `now` seen (to detect a clock stepped backwards).
    pub seen_us: u64,
    /// Theoretical arrival time of the request cell.
    pub req_tat_us: u64,
    /// Theoretical arrival time of the token cell.
    pub tok_tat_us: u64,
    /// Theoretical arrival time of the retry cell.
    pub retry_tat_us: u64,
    /// Nanoseconds per request at the full limit (0: no request limit known).
    pub req_base_ns: u64,
    /// Nanoseconds per token at the full limit (0: no token limit known).
    pub tok_base_ns: u64,
    /// Where the limits came from.
    pub source: Source,
    /// Share of the limit this fleet takes, in millionths (lowered on 429s).
    pub share_ppm: u64,
    /// No reservation starts before this (a 429 pauses everyone).
    pub pause_until_us: u64,
    /// Why the budget is closed, if it is.
    pub block: Block,
    /// Until when it is closed.
    pub block_until_us: u64,
    /// A 429 before this belongs to the congestion event already counted.
    pub calm_after_us: u64,
    /// When the share last grew.
    pub grown_us: u64,
    /// A probe is out until this time (while the source is unknown).
    pub probe_until_us: u64,
    /// Start of the success meter's current interval.
    pub meter_start_us: u64,
    /// Successes in the meter's current interval.
    pub meter_count: u64,
    /// Successes per second in the last full interval, in thousandths.
    pub meter_rate_milli: u64,
}

/// What a reservation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The slot starts this many microseconds from now (0: go now).
    Go(u64),
    /// Nothing is reserved: ask again after this many microseconds.
    Recheck(u64),
    /// The budget is closed.
    Closed(Block),
}

/// Limits set by the user for a budget (`None`: learn it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Requests per window.
    pub requests: Option<(u64, std::time::Duration)>,
    /// Tokens per window.
    pub tokens: Option<(u64, std::time::Duration)>,
}

impl Limits {
    /// `limit` requests per `window`.
    pub fn requests(limit: u64, window: std::time::Duration) -> Self {
        Self {
            requests: Some((limit, window)),
            tokens: None,
        }
    }

    /// Adds `limit` tokens per `window`.
    pub fn with_tokens(mut self, limit: u64, window: std::time::Duration) -> Self {
        self.tokens = Some((limit, window));
        self
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn per_unit_ns(limit: u64, window: std::time::Duration) -> u64 {
    if limit == 0 {
        return 0;
    }
    u64::try_from(window.as_nanos() / u128::from(limit)).unwrap_or(u64::MAX)
}

impl BudgetState {
    /// How long a closed budget stays closed before one call may probe it again.
    pub const BLOCK_MICROS: u64 = 600 * MICROS;
    /// How long the others wait for the probe's answer before re-asking.
    pub const PROBE_RECHECK_MICROS: u64 = 20_000;
    /// How long a probe may stay unanswered before another goes.
    pub const PROBE_TIMEOUT_MICROS: u64 = 2 * MICROS;
    /// Safety margin under the limit, in millionths (network jitter between us and the
    /// server's clock).
    pub const MARGIN_PPM: u64 = 15_000;

    /// A new budget at `now`, with the user's limits if any.
    pub fn new(now_us: u64, limits: Option<Limits>) -> Self {
        let mut s = Self {
            seen_us: now_us,
            share_ppm: FULL_SHARE,
            grown_us: now_us,
            meter_start_us: now_us,
            ..Self::default()
        };
        if let Some(limits) = limits {
            s.source = Source::Configured;
            if let Some((l, w)) = limits.requests {
                s.req_base_ns = per_unit_ns(l, w);
            }
            if let Some((l, w)) = limits.tokens {
                s.tok_base_ns = per_unit_ns(l, w);
            }
        }
        s
    }

    /// A clock stepped backwards shifts every stored time by the step, so waits keep
    /// their length (no stall); a clock stepped forwards finds the cells idle, and with
    /// no burst tolerance idle cells admit one request at a time (no flood).
    fn advance(&mut self, now: u64) {
        if now < self.seen_us {
            let back = self.seen_us - now;
            for t in [
                &mut self.req_tat_us,
                &mut self.tok_tat_us,
                &mut self.retry_tat_us,
                &mut self.pause_until_us,
                &mut self.block_until_us,
                &mut self.calm_after_us,
                &mut self.grown_us,
                &mut self.probe_until_us,
                &mut self.meter_start_us,
            ] {
                *t = t.saturating_sub(back);
            }
        }
        self.seen_us = now;
    }

    /// Effective nanoseconds per unit: the base period stretched by the share and the
    /// margin.
    fn period_ns(&self, base_ns: u64) -> u64 {
        if base_ns == 0 {
            return 0;
        }
        let denom = u128::from(self.share_ppm.max(1)) * u128::from(FULL_SHARE - Self::MARGIN_PPM);
        let scaled = u128::from(base_ns) * u128::from(FULL_SHARE) * u128::from(FULL_SHARE) / denom;
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }

    /// Reserves one request of `tokens` tokens at `now`. `retry` marks a call's second
    /// or later attempt, which also spends from the retry budget (at most one retry per
    /// ten requests' time, at least 20 per second, burst 10).
    pub fn reserve(&mut self, now: u64, tokens: u64, retry: bool) -> Decision {
        self.advance(now);
        if self.block != Block::None {
            if now < self.block_until_us {
                return Decision::Closed(self.block);
            }
            // Let one call probe whether the block has lifted.
            self.block_until_us = now + Self::BLOCK_MICROS;
        }
        if self.source == Source::Unknown {
            if now < self.probe_until_us {
                return Decision::Recheck(Self::PROBE_RECHECK_MICROS);
            }
            self.probe_until_us = now + Self::PROBE_TIMEOUT_MICROS;
        }
        let req_ns = self.period_ns(self.req_base_ns);
        let tok_ns = self.period_ns(self.tok_base_ns);
        let mut start = now.max(self.pause_until_us);
        if req_ns > 0 {
            start = start.max(self.req_tat_us);
        }
        if tok_ns > 0 {
            start = start.max(self.tok_tat_us);
        }
        let retry_period_us = if req_ns == 0 {
            50_000
        } else {
            req_ns.saturating_mul(10) / 1000
        };
        if retry {
            start = start.max(self.retry_tat_us.saturating_sub(10 * retry_period_us));
            self.retry_tat_us = self.retry_tat_us.max(start) + retry_period_us;
        }
        if req_ns > 0 {
            self.req_tat_us = start + req_ns / 1000;
        }
        if tok_ns > 0 {
            let cost = tokens.max(1).saturating_mul(tok_ns) / 1000;
            self.tok_tat_us = self.tok_tat_us.max(start).saturating_add(cost);
        }
        Decision::Go(start - now)
    }

    /// Learns from one response report at `now`.
    pub fn report(&mut self, now: u64, report: &Report) {
        self.advance(now);
        self.learn_limits(&report.limits);
        if let Some(used) = report.used_tokens {
            self.correct_tokens(report.estimated_tokens, used);
        }
        match report.signal {
            Signal::Success => {
                if self.source == Source::Unknown {
                    // The first answer carried no limits: nothing to pace until a 429.
                    self.source = Source::Learned;
                }
                if self.block != Block::None {
                    self.block = Block::None;
                }
                self.meter(now);
                self.grow(now);
            }
            Signal::WindowSpent { wait, quota } => {
                let window = quota.window.duration().unwrap_or_default();
                self.congestion(now, micros(wait), micros(window));
            }
            Signal::RateLimited { wait } => {
                if self.source == Source::Unknown {
                    self.source = Source::Learned;
                }
                self.congestion(now, micros(wait), 0);
            }
            Signal::NoAllowance => self.close(now, Block::NoAllowance),
            Signal::MonthlyQuota => self.close(now, Block::MonthlyQuota),
            _ => {}
        }
    }

    fn learn_limits(&mut self, limits: &RateLimits) {
        if self.source == Source::Configured {
            return;
        }
        let mut learned = false;
        if let Some(q) = limits.requests()
            && let (Some(limit), Some(window)) = (q.limit, q.window.duration())
            && limit > 0
        {
            self.req_base_ns = per_unit_ns(limit, window);
            learned = true;
        }
        if let Some(q) = limits.tokens()
            && let (Some(limit), Some(window)) = (q.limit, q.window.duration())
            && limit > 0
        {
            self.tok_base_ns = per_unit_ns(limit, window);
            learned = true;
        }
        if learned && self.source != Source::Headers {
            self.source = Source::Headers;
            self.share_ppm = FULL_SHARE;
        }
    }

    fn correct_tokens(&mut self, estimated: u64, used: u64) {
        let tok_ns = self.period_ns(self.tok_base_ns);
        if tok_ns == 0 {
            return;
        }
        if used >= estimated {
            let extra = (used - estimated).saturating_mul(tok_ns) / 1000;
            self.tok_tat_us = self.tok_tat_us.saturating_add(extra);
        } else {
            let refund = (estimated - used).saturating_mul(tok_ns) / 1000;
            self.tok_tat_us = self.tok_tat_us.saturating_sub(refund);
        }
    }

    fn meter(&mut self, now: u64) {
        self.meter_count += 1;
        let span = now.saturating_sub(self.meter_start_us);
        if span >= MICROS {
            self.meter_rate_milli = self.meter_count * 1000 * MICROS / span;
            self.meter_start_us = now;
            self.meter_count = 0;
        }
    }

    /// Additive increase: 1 % of the limit per second without a 429, up to the full
    /// limit (or 150 % of a learned estimate, to keep probing).
    fn grow(&mut self, now: u64) {
        let cap = if self.source == Source::Learned {
            FULL_SHARE * 3 / 2
        } else {
            FULL_SHARE
        };
        let elapsed = now.saturating_sub(self.grown_us.max(self.calm_after_us));
        if elapsed >= MICROS / 10 && self.share_ppm < cap {
            self.share_ppm = (self.share_ppm + elapsed / 100).min(cap);
            self.grown_us = now;
        }
    }

    /// A 429: pause every caller for the refused call's wait; lower the share once per
    /// congestion event.
    ///
    /// Refusals within `max(1 s, the refused window, twice the wait)` of the decrease,
    /// or of requests reserved before it, belong to the same event: a window that is
    /// spent refuses everything until it turns.
    fn congestion(&mut self, now: u64, wait_us: u64, window_us: u64) {
        self.pause_until_us = self.pause_until_us.max(now.saturating_add(wait_us));
        if now < self.calm_after_us {
            return;
        }
        if self.source == Source::Learned && self.req_base_ns == 0 {
            // First 429 with nothing announced: the rate that was getting through,
            // less 5 %, is the first estimate.
            let rate_milli = self.meter_rate_milli.max(self.meter_count * 1000).max(1);
            self.req_base_ns = 1_000_000_000_000 * 100 / (rate_milli * 95);
            self.share_ppm = FULL_SHARE;
        } else {
            self.share_ppm = (self.share_ppm * 9 / 10).max(FULL_SHARE / 20);
        }
        // Everything reserved so far was paced at the old rate: refusals of those
        // requests belong to this event.
        let horizon = self
            .req_tat_us
            .max(self.tok_tat_us)
            .max(self.pause_until_us);
        let calm = MICROS.max(window_us).max(wait_us.saturating_mul(2));
        self.calm_after_us = horizon.max(now.saturating_add(calm));
        self.req_tat_us = self.req_tat_us.max(self.pause_until_us);
    }

    fn close(&mut self, now: u64, block: Block) {
        self.block = block;
        self.block_until_us = now + Self::BLOCK_MICROS;
    }
}
