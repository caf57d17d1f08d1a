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
//!
//! # Exact in a Lua double
//!
//! The Redis store runs this arithmetic in a Lua script ([`super::lua`]), where every
//! number is an IEEE double. So every input is clamped to [`MAX_EXACT`] (2⁵³ − 1), every
//! field and every intermediate stays at or below it, and only five operations are used,
//! each exact in a double as in a `u64`: a sum and a product that saturate at
//! [`MAX_EXACT`] (a double rounds an exact result above it to at least 2⁵³, so the
//! saturation agrees), a subtraction floored at 0, a comparison, and a floor division
//! (`(a − fmod(a, b)) / b` in Lua, exact). Where the arithmetic once went through `u128`
//! (the period stretched by the share), it is split into steps that stay below 2⁵³.
//! A report is flattened into integers first ([`ReportOp`]), the same ones the script
//! receives.

use serde::{Deserialize, Serialize};

use crate::action::{Report, Signal};

const MICROS: u64 = 1_000_000;
const FULL_SHARE: u64 = 1_000_000;

/// The largest value of any field, input or intermediate of the arithmetic: 2⁵³ − 1, the
/// largest integer below which a Lua double (the Redis store's script) holds every
/// integer exactly. Larger inputs are clamped to it; sums and products saturate at it.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// `a + b`, saturating at [`MAX_EXACT`].
fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_EXACT)
}

/// `a × b`, saturating at [`MAX_EXACT`].
fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b).min(MAX_EXACT)
}

/// `a − b`, floored at 0.
fn sub(a: u64, b: u64) -> u64 {
    a.saturating_sub(b)
}

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

impl Source {
    /// The source with this code (`self as u8`), if any.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Source::Unknown,
            1 => Source::Configured,
            2 => Source::Headers,
            3 => Source::Learned,
            _ => return None,
        })
    }
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

impl Block {
    /// The block with this code (`self as u8`), if any.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Block::None,
            1 => Block::NoAllowance,
            2 => Block::MonthlyQuota,
            _ => return None,
        })
    }
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

/// What a new budget starts from, flattened to integers (the user's [`Limits`], if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seed {
    /// `true` when the user configured limits (even empty ones): they are never
    /// replaced by what the server announces.
    pub configured: bool,
    /// Nanoseconds per request (0: none).
    pub req_base_ns: u64,
    /// Nanoseconds per token (0: none).
    pub tok_base_ns: u64,
}

impl From<Option<Limits>> for Seed {
    fn from(limits: Option<Limits>) -> Self {
        let Some(limits) = limits else {
            return Seed::default();
        };
        let base = |l: Option<(u64, std::time::Duration)>| {
            l.map_or(0, |(limit, window)| per_unit_ns(limit, window))
        };
        Seed {
            configured: true,
            req_base_ns: base(limits.requests),
            tok_base_ns: base(limits.tokens),
        }
    }
}

/// What a response signalled, flattened to integers ([`ReportOp::signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignalOp {
    /// Nothing the budget acts on (server errors, transport failures, usage only...).
    #[default]
    Other,
    /// Served.
    Success,
    /// Refused by a spent window.
    WindowSpent {
        /// How long the refused call waits, µs.
        wait_us: u64,
        /// The spent window's length, µs (0 for a month).
        window_us: u64,
    },
    /// A 429 that did not say which limit.
    RateLimited {
        /// How long the refused call waits, µs.
        wait_us: u64,
    },
    /// No allowance for the model.
    NoAllowance,
    /// The monthly quota is spent.
    MonthlyQuota,
}

impl SignalOp {
    /// The signal's code in the Lua script's arguments.
    pub fn code(self) -> u64 {
        match self {
            SignalOp::Other => 0,
            SignalOp::Success => 1,
            SignalOp::WindowSpent { .. } => 2,
            SignalOp::RateLimited { .. } => 3,
            SignalOp::NoAllowance => 4,
            SignalOp::MonthlyQuota => 5,
        }
    }
}

/// A [`Report`] flattened to the integers the budget uses: what every store (the Lua
/// script included) gets. Every value is clamped to [`MAX_EXACT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportOp {
    /// The announced request limit of the shortest pacing window (0: none announced).
    pub req_limit: u64,
    /// That window's length in seconds.
    pub req_window_secs: u64,
    /// The announced token limit of the shortest pacing window (0: none announced).
    pub tok_limit: u64,
    /// That window's length in seconds.
    pub tok_window_secs: u64,
    /// Tokens reserved for the attempt.
    pub estimated_tokens: u64,
    /// Tokens the server charged, when known.
    pub used_tokens: Option<u64>,
    /// What happened.
    pub signal: SignalOp,
    /// The response's request quota had nothing left (`remaining` 0): the window is
    /// spent, by us or by another program of the organisation.
    pub req_spent: bool,
}

impl ReportOp {
    /// Every value clamped to [`MAX_EXACT`] (as the script's arguments are).
    pub fn clamped(&self) -> ReportOp {
        let c = |v: u64| v.min(MAX_EXACT);
        ReportOp {
            req_limit: c(self.req_limit),
            req_window_secs: c(self.req_window_secs),
            tok_limit: c(self.tok_limit),
            tok_window_secs: c(self.tok_window_secs),
            estimated_tokens: c(self.estimated_tokens),
            used_tokens: self.used_tokens.map(c),
            signal: match self.signal {
                SignalOp::WindowSpent { wait_us, window_us } => SignalOp::WindowSpent {
                    wait_us: c(wait_us),
                    window_us: c(window_us),
                },
                SignalOp::RateLimited { wait_us } => SignalOp::RateLimited {
                    wait_us: c(wait_us),
                },
                other => other,
            },
            req_spent: self.req_spent,
        }
    }
}

impl From<&Report> for ReportOp {
    fn from(report: &Report) -> Self {
        let pace = |q: Option<&crate::ratelimits::Quota>| match q {
            Some(q) => match (q.limit, q.window.duration()) {
                (Some(limit), Some(window)) if limit > 0 => {
                    (limit.min(MAX_EXACT), window.as_secs().min(MAX_EXACT))
                }
                _ => (0, 0),
            },
            None => (0, 0),
        };
        let (req_limit, req_window_secs) = pace(report.limits.requests());
        let (tok_limit, tok_window_secs) = pace(report.limits.tokens());
        let signal = match report.signal {
            Signal::Success => SignalOp::Success,
            Signal::WindowSpent { wait, quota } => SignalOp::WindowSpent {
                wait_us: micros(wait),
                window_us: micros(quota.window.duration().unwrap_or_default()),
            },
            Signal::RateLimited { wait } => SignalOp::RateLimited {
                wait_us: micros(wait),
            },
            Signal::NoAllowance => SignalOp::NoAllowance,
            Signal::MonthlyQuota => SignalOp::MonthlyQuota,
            _ => SignalOp::Other,
        };
        ReportOp {
            req_limit,
            req_window_secs,
            tok_limit,
            tok_window_secs,
            estimated_tokens: report.estimated_tokens.min(MAX_EXACT),
            used_tokens: report.used_tokens.map(|u| u.min(MAX_EXACT)),
            signal,
            req_spent: report.limits.requests().is_some_and(|q| q.is_spent()),
        }
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(MAX_EXACT)
}

fn per_unit_ns(limit: u64, window: std::time::Duration) -> u64 {
    if limit == 0 {
        return 0;
    }
    u64::try_from(window.as_nanos() / u128::from(limit))
        .unwrap_or(u64::MAX)
        .min(MAX_EXACT)
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

    /// The field names, in the order of [`BudgetState::to_fields`] (the Redis hash's
    /// fields and the Lua script's order).
    pub const FIELDS: [&'static str; 17] = [
        "seen_us",
        "req_tat_us",
        "tok_tat_us",
        "retry_tat_us",
        "req_base_ns",
        "tok_base_ns",
        "source",
        "share_ppm",
        "pause_until_us",
        "block",
        "block_until_us",
        "calm_after_us",
        "grown_us",
        "probe_until_us",
        "meter_start_us",
        "meter_count",
        "meter_rate_milli",
    ];

    /// A new budget at `now`, with the user's limits if any.
    pub fn new(now_us: u64, limits: Option<Limits>) -> Self {
        Self::seeded(now_us, Seed::from(limits))
    }

    /// A new budget at `now` from a flattened seed.
    pub fn seeded(now_us: u64, seed: Seed) -> Self {
        let now_us = now_us.min(MAX_EXACT);
        let mut s = Self {
            seen_us: now_us,
            share_ppm: FULL_SHARE,
            grown_us: now_us,
            meter_start_us: now_us,
            ..Self::default()
        };
        if seed.configured {
            s.source = Source::Configured;
            s.req_base_ns = seed.req_base_ns.min(MAX_EXACT);
            s.tok_base_ns = seed.tok_base_ns.min(MAX_EXACT);
        }
        s
    }

    /// The fields as integers, in the order of [`BudgetState::FIELDS`].
    pub fn to_fields(&self) -> [u64; 17] {
        [
            self.seen_us,
            self.req_tat_us,
            self.tok_tat_us,
            self.retry_tat_us,
            self.req_base_ns,
            self.tok_base_ns,
            self.source as u64,
            self.share_ppm,
            self.pause_until_us,
            self.block as u64,
            self.block_until_us,
            self.calm_after_us,
            self.grown_us,
            self.probe_until_us,
            self.meter_start_us,
            self.meter_count,
            self.meter_rate_milli,
        ]
    }

    /// The state of [`BudgetState::to_fields`]' integers; `None` when one is out of
    /// range (an unknown source or block, a value above [`MAX_EXACT`]).
    pub fn from_fields(f: [u64; 17]) -> Option<Self> {
        if f.iter().any(|&v| v > MAX_EXACT) {
            return None;
        }
        Some(Self {
            seen_us: f[0],
            req_tat_us: f[1],
            tok_tat_us: f[2],
            retry_tat_us: f[3],
            req_base_ns: f[4],
            tok_base_ns: f[5],
            source: Source::from_code(f[6])?,
            share_ppm: f[7],
            pause_until_us: f[8],
            block: Block::from_code(f[9])?,
            block_until_us: f[10],
            calm_after_us: f[11],
            grown_us: f[12],
            probe_until_us: f[13],
            meter_start_us: f[14],
            meter_count: f[15],
            meter_rate_milli: f[16],
        })
    }

    /// `true` when every field is in range (see [`BudgetState::from_fields`]).
    pub fn is_valid(&self) -> bool {
        Self::from_fields(self.to_fields()).is_some()
    }

    /// A new budget at `now` that keeps what this one learned (its limits, where they
    /// came from, the share) and nothing else: no reservations, pause or block. For a
    /// store that restarts on another clock (a local fallback of a shared store).
    pub fn restarted(&self, now_us: u64) -> Self {
        let mut s = Self::seeded(now_us, Seed::default());
        s.req_base_ns = self.req_base_ns.min(MAX_EXACT);
        s.tok_base_ns = self.tok_base_ns.min(MAX_EXACT);
        s.source = self.source;
        s.share_ppm = self.share_ppm.min(MAX_EXACT);
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
                *t = sub(*t, back);
            }
        }
        self.seen_us = now;
    }

    /// Effective nanoseconds per unit: the base period stretched by the share and the
    /// margin, `base × 10⁶ / eff` with `eff = share × (1 − margin)` in millionths,
    /// computed as `⌊base / eff⌋ × 10⁶ + ⌊(base mod eff) × 10⁶ / eff⌋` so that no
    /// intermediate exceeds 2⁵³.
    fn period_ns(&self, base_ns: u64) -> u64 {
        if base_ns == 0 {
            return 0;
        }
        let eff = (mul(self.share_ppm, FULL_SHARE - Self::MARGIN_PPM) / FULL_SHARE).max(1);
        let whole = base_ns / eff;
        let rest = base_ns % eff;
        add(mul(whole, FULL_SHARE), mul(rest, FULL_SHARE) / eff)
    }

    /// Reserves one request of `tokens` tokens at `now`. `retry` marks a call's second
    /// or later attempt. Retries go through the same paced cells as first attempts, so
    /// with a known rate they cannot add load; while no rate is known they also spend a
    /// retry budget of 20 per second (burst 10), so a storm of failures cannot multiply
    /// the load.
    pub fn reserve(&mut self, now: u64, tokens: u64, retry: bool) -> Decision {
        let now = now.min(MAX_EXACT);
        let tokens = tokens.clamp(1, MAX_EXACT);
        self.advance(now);
        if self.block != Block::None {
            if now < self.block_until_us {
                return Decision::Closed(self.block);
            }
            // Let one call probe whether the block has lifted.
            self.block_until_us = add(now, Self::BLOCK_MICROS);
        }
        if self.source == Source::Unknown {
            if now < self.probe_until_us {
                return Decision::Recheck(Self::PROBE_RECHECK_MICROS);
            }
            self.probe_until_us = add(now, Self::PROBE_TIMEOUT_MICROS);
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
        // With a known rate, retries share the paced request cell and cannot add load;
        // with none, they are held to 20 per second (burst 10).
        let retry_period_us = 50_000;
        if retry && req_ns == 0 {
            start = start.max(sub(self.retry_tat_us, mul(10, retry_period_us)));
            self.retry_tat_us = add(self.retry_tat_us.max(start), retry_period_us);
        }
        if req_ns > 0 {
            self.req_tat_us = add(start, req_ns / 1000);
        }
        if tok_ns > 0 {
            let cost = mul(tokens, tok_ns) / 1000;
            self.tok_tat_us = add(self.tok_tat_us.max(start), cost);
        }
        Decision::Go(start - now)
    }

    /// Learns from one response report at `now`.
    pub fn report(&mut self, now: u64, report: &Report) {
        self.apply(now, &ReportOp::from(report));
    }

    /// Learns from one flattened report at `now` (what [`BudgetState::report`] does
    /// after flattening, and what the Lua script mirrors).
    pub fn apply(&mut self, now: u64, op: &ReportOp) {
        let now = now.min(MAX_EXACT);
        let op = &op.clamped();
        self.advance(now);
        self.learn_limits(op);
        if let Some(used) = op.used_tokens {
            self.correct_tokens(op.estimated_tokens, used);
        }
        // Any answer brings the probe back: while nothing is known yet, the next caller
        // (the failed call's own retry, say) may probe at once.
        if self.source == Source::Unknown {
            self.probe_until_us = now;
        }
        match op.signal {
            SignalOp::Success => {
                if self.source == Source::Unknown {
                    // The first answer carried no limits: nothing to pace until a 429.
                    self.source = Source::Learned;
                }
                if self.block != Block::None {
                    self.block = Block::None;
                }
                self.meter(now);
                self.raise_to_proven();
                self.grow(now);
                if op.req_spent {
                    self.hold_one_unit(now);
                }
            }
            SignalOp::WindowSpent { wait_us, window_us } => {
                self.congestion(now, wait_us, window_us);
            }
            SignalOp::RateLimited { wait_us } => {
                if self.source == Source::Unknown {
                    self.source = Source::Learned;
                }
                self.congestion(now, wait_us, 0);
            }
            SignalOp::NoAllowance => self.close(now, Block::NoAllowance),
            SignalOp::MonthlyQuota => self.close(now, Block::MonthlyQuota),
            SignalOp::Other => {}
        }
    }

    fn learn_limits(&mut self, op: &ReportOp) {
        if self.source == Source::Configured {
            return;
        }
        let mut learned = false;
        // A limit of 0 announces nothing (the script tests `limit > 0` the same way).
        if let Some(base) = mul(op.req_window_secs, 1_000_000_000).checked_div(op.req_limit) {
            self.req_base_ns = base;
            learned = true;
        }
        if let Some(base) = mul(op.tok_window_secs, 1_000_000_000).checked_div(op.tok_limit) {
            self.tok_base_ns = base;
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
            let extra = mul(used - estimated, tok_ns) / 1000;
            self.tok_tat_us = add(self.tok_tat_us, extra);
        } else {
            let refund = mul(estimated - used, tok_ns) / 1000;
            self.tok_tat_us = sub(self.tok_tat_us, refund);
        }
    }

    fn meter(&mut self, now: u64) {
        self.meter_count = add(self.meter_count, 1);
        let span = sub(now, self.meter_start_us);
        if span >= MICROS {
            self.meter_rate_milli = mul(self.meter_count, 1000 * MICROS) / span;
            self.meter_start_us = now;
            self.meter_count = 0;
        }
    }

    /// Learned from 429s: the successes of the meter's current (or last full) second are
    /// a rate the server has proven it admits. A first estimate below it — made from the
    /// few answers that were back when the first refusal arrived — is raised to it.
    fn raise_to_proven(&mut self) {
        if self.source != Source::Learned || self.req_base_ns == 0 {
            return;
        }
        let proven_milli = mul(self.meter_count, 1000)
            .max(self.meter_rate_milli)
            .max(1);
        let proven = 100_000_000_000_000 / mul(proven_milli, 95);
        if proven < self.req_base_ns {
            self.req_base_ns = proven;
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
        let elapsed = sub(now, self.grown_us.max(self.calm_after_us));
        if elapsed >= MICROS / 10 && self.share_ppm < cap {
            self.share_ppm = add(self.share_ppm, elapsed / 100).min(cap);
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
        if now < self.calm_after_us {
            // The same event: its pause and its decrease are done. (Each refused call
            // still waits its own backoff; the others must not wait the longest of them.)
            return;
        }
        self.pause_until_us = self.pause_until_us.max(add(now, wait_us));
        if self.source == Source::Learned && self.req_base_ns == 0 {
            // First 429 with nothing announced: the rate that was getting through,
            // less 5 %, is the first estimate.
            let rate_milli = self
                .meter_rate_milli
                .max(mul(self.meter_count, 1000))
                .max(1);
            self.req_base_ns = 100_000_000_000_000 / mul(rate_milli, 95);
            self.share_ppm = FULL_SHARE;
        } else {
            self.share_ppm = (mul(self.share_ppm, 9) / 10).max(FULL_SHARE / 20);
        }
        // Everything reserved so far was paced at the old rate: refusals of those
        // requests belong to this event.
        let horizon = self
            .req_tat_us
            .max(self.tok_tat_us)
            .max(self.pause_until_us);
        let calm = MICROS.max(window_us).max(mul(wait_us, 2));
        self.calm_after_us = horizon.max(add(now, calm));
        self.req_tat_us = self.req_tat_us.max(self.pause_until_us);
    }

    /// A success that left the request window empty: nobody starts before one request's
    /// worth of the window has come back, so the next caller is not refused. This is how
    /// other programs spending the same budget are noticed before they cause a 429.
    fn hold_one_unit(&mut self, now: u64) {
        let period_us = self.period_ns(self.req_base_ns) / 1000;
        if period_us > 0 {
            self.pause_until_us = self.pause_until_us.max(add(now, period_us));
            self.req_tat_us = self.req_tat_us.max(self.pause_until_us);
        }
    }

    fn close(&mut self, now: u64, block: Block) {
        self.block = block;
        self.block_until_us = add(now, Self::BLOCK_MICROS);
    }
}
