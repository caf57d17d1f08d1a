//! The shared budget of one model: the pure arithmetic every store runs.
//!
//! State is a flat record of integers (times in microseconds of the store's clock) so a
//! file or a Redis hash can hold it and a Lua script can mirror it. Two operations, each
//! one atomic read-modify-write in every store:
//!
//! - [`BudgetState::reserve`]: GCRA in reservation form. One cell for requests, one for
//!   tokens; a request reserves both and waits for the later (`TAT' = max(TAT, start) +
//!   cost·T`). A request larger than the bucket pushes the TAT further (debt): it waits
//!   for its turn, never hangs. When the server announced how many requests remain, that
//!   many go at once ([`BudgetState::credit`]: the burst the server itself offers), and
//!   pacing resumes one unit after; the tokens it says remain go at once the same way
//!   ([`BudgetState::tok_credit`]). A reservation that could not start within the
//!   caller's time ([`Reserve::within_us`]) books nothing and says when it could
//!   ([`Decision::Late`]). Every booking carries a [`Ticket`]; a booking made before a
//!   congestion event is void, and its caller, re-checking before it sends
//!   ([`Reserve::confirm`]), queues again behind the event. Bookings go in priority
//!   lanes ([`Reserve::lane`], see `lanes`): once callers queue, a higher lane's booking
//!   takes the first of the lower lanes' slots and moves them back; a lower lane kept
//!   waiting gets its reserved share ([`Reserve::reserve_ppm`]).
//! - [`BudgetState::report`] learns:
//!   - Limits come from the response headers (`window ÷ limit` per unit) unless
//!     configured; the token estimate is corrected with the real count
//!     (`TAT += (actual − estimate)·T`, commutative).
//!   - With no headers and no configuration the request rate is learned
//!     ([`Source::Learned`]): it starts at [`BudgetState::LEARN_START_MILLI`] and doubles
//!     every [`BudgetState::SLOW_START_STEP_MICROS`] while callers queue for it (TCP's
//!     slow start, tied to demand and to delivery: it grows only while callers queue for
//!     it and the server admits at least half of it); at a refusal it drops to the
//!     delivered rate (what the server admitted lately, less 5 %), kept between 70 %
//!     (CUBIC's β) and 90 % of the refused rate; then it climbs back towards the
//!     refused rate, closing half the gap per second, and probes beyond it from 2 % per
//!     second, the excess doubling every half second (CUBIC's convex part). When capacity takes longer than a second to come back after a refusal (a
//!     fixed window or a sliding log), the rate delivered over the whole cycle becomes
//!     the estimate.
//!   - Announced limits are paced at the announced rate; `remaining` is the truth (other
//!     programs spend the same budget): `remaining` 0 holds everyone one unit, a refusal
//!     the model did not expect lowers the share by 10 %, and the share creeps back by
//!     1 % per second. After a spent window refuses a probe one unit later (the window
//!     does not refill continuously: a fixed window or a sliding log), everyone waits
//!     for the window seen to start ([`BudgetState::anchor_us`]) to come round again.
//!   - A learned rate books at most [`BudgetState::LEARN_HORIZON_PERIODS`] ahead: the
//!     rate may change soon, and a caller asleep until a slot booked at a stale rate
//!     cannot be moved; the others re-ask when their slot comes within reach.
//!   - A refusal starts a congestion event, once: every caller pauses, earlier bookings
//!     are void, and one probe at a time goes until one succeeds (each refused probe
//!     doubles the pause, up to two seconds or one unit). Refusals of requests booked
//!     before the event belong to it and change nothing.
//!   - A zero allowance or a spent monthly quota closes the budget for every caller for
//!     [`BudgetState::BLOCK_MICROS`].
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
//!
//! # Where each part is
//!
//! This file holds the state, the reservation and the report's dispatch; `fields` the
//! state as integers (the Redis hash's and the script's order); `ops` the flattened
//! report; `lanes` the priority lanes; `learning` a learned rate; `congestion` what
//! `remaining` and refusals do (windows, congestion events, recovery, closing).

use serde::{Deserialize, Serialize};

use crate::action::{Report, Ticket};

mod congestion;
mod fields;
mod lanes;
mod learning;
mod ops;

pub use ops::{ReportOp, SignalOp};

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

/// `a ÷ b` rounded down; 0 when `b` is 0.
fn div(a: u64, b: u64) -> u64 {
    a.checked_div(b).unwrap_or(0)
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
    /// Share of an announced or configured limit this fleet takes, in millionths
    /// (lowered on refusals the model did not expect).
    pub share_ppm: u64,
    /// No reservation starts before this (a refusal pauses everyone).
    pub pause_until_us: u64,
    /// Why the budget is closed, if it is.
    pub block: Block,
    /// Until when it is closed.
    pub block_until_us: u64,
    /// When the last congestion event started (0: none yet).
    pub event_us: u64,
    /// When the rate or the share last grew.
    pub grown_us: u64,
    /// A probe is out until this time (while the source is unknown, or while
    /// recovering from a congestion event).
    pub probe_until_us: u64,
    /// Start of the success meter's current interval.
    pub meter_start_us: u64,
    /// Successes in the meter's current interval.
    pub meter_count: u64,
    /// Successes per second in the last full interval, in thousandths.
    pub meter_rate_milli: u64,
    /// Congestion events so far: a booking of an earlier epoch is void.
    pub epoch: u64,
    /// Reservations booked so far (the last booking's [`Ticket::seq`]).
    pub seq: u64,
    /// Requests that may start at once: the `remaining` the server announced, less the
    /// reservations booked after the request that showed it.
    pub credit: u64,
    /// The booking whose response set [`BudgetState::credit`] (older ones do not).
    pub credit_seq: u64,
    /// 1 while recovering from a congestion event: one probe at a time.
    pub recovering: u64,
    /// Probes refused in a row during this recovery.
    pub streak: u64,
    /// Learned request rate, in thousandths of a request per second (0: none).
    pub rate_milli: u64,
    /// Learned: the rate the last congestion event refused.
    pub max_milli: u64,
    /// Learned: 1 until the first congestion event (the rate doubles).
    pub slow_start: u64,
    /// 1 when a caller queued for the request cell since the rate last grew (the rate is
    /// what limits the callers, so raising it is worth a try).
    pub binding: u64,
    /// Announced: when a window was last seen to start: a fresh one (`remaining` ≥
    /// limit − 1), or room again after a spent one.
    pub anchor_us: u64,
    /// Announced: when a response first showed `remaining` 0 since the last that
    /// did not (0: not spent).
    pub spent_us: u64,
    /// Learned: start of the current delivery cycle (since the last recovery).
    pub cycle_start_us: u64,
    /// Learned: successes in the current delivery cycle.
    pub cycle_count: u64,
    /// Announced: 1 once a spent window refused a probe one unit later (it does not
    /// refill continuously: a fixed window or a sliding log), so the next spent window
    /// is waited out at once; back to 0 when one refills early.
    pub windowed: u64,
    /// Bookings not answered yet (a report, or a confirmation that found them void,
    /// settles one); forgotten after a minute without any operation.
    pub pending: u64,
    /// Announced: when a response last showed a fresh window (`remaining` ≥ limit − 1);
    /// [`BudgetState::anchor_us`] also moves when room comes back after a spent window.
    pub fresh_us: u64,
    /// Priorities: the end of lane 0's request schedule (what the first class has
    /// booked; the lower lanes' bookings come after it). At most
    /// [`BudgetState::lane1_req_us`].
    pub lane0_req_us: u64,
    /// Priorities: the end of lanes 0 and 1's request schedule. At most
    /// [`BudgetState::req_tat_us`], the end of every lane's.
    pub lane1_req_us: u64,
    /// Priorities: the end of lane 0's token schedule (at most
    /// [`BudgetState::lane1_tok_us`]).
    pub lane0_tok_us: u64,
    /// Priorities: the end of lanes 0 and 1's token schedule (at most
    /// [`BudgetState::tok_tat_us`]).
    pub lane1_tok_us: u64,
    /// Priorities: how far lane 1's bookings have been moved back by higher lanes'
    /// bookings placed ahead of them, µs in all (a booking's ticket holds the value it
    /// saw; the difference is what it waits more).
    pub shift1_us: u64,
    /// Priorities: the same for lane 2.
    pub shift2_us: u64,
    /// Priorities: lane 1's reserved share, a cell at that share of the rate: while it
    /// is not later than now, a lane-1 booking kept waiting by higher lanes is placed
    /// in lane 0 instead.
    pub reserve1_us: u64,
    /// Priorities: the same for lane 2.
    pub reserve2_us: u64,
    /// Priorities: where the latest higher-lane booking placed ahead of lane 1 went; a
    /// lane-1 booking due before it (its caller late to confirm) was not moved by it.
    pub ins1_at_us: u64,
    /// Priorities: how far that booking moved lane 1 back.
    pub ins1_len_us: u64,
    /// Priorities: the same as [`BudgetState::ins1_at_us`] for lane 2.
    pub ins2_at_us: u64,
    /// Priorities: the same as [`BudgetState::ins1_len_us`] for lane 2.
    pub ins2_len_us: u64,
    /// Tokens that may start at once (announced limits only): the tokens `remaining`
    /// the server announced, less an estimate for every reservation still out or booked
    /// after the request that showed it, less one request's worth left to pacing.
    #[serde(default)]
    pub tok_credit: u64,
}

/// What a reservation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a decision books a slot (or says when to ask again): act on it"]
pub enum Decision {
    /// A slot is booked: it starts `wait_us` microseconds from now (0: go now).
    Go {
        /// Microseconds until the slot.
        wait_us: u64,
        /// The booking, to confirm before sending after a wait and to quote in the
        /// report.
        ticket: Ticket,
    },
    /// Nothing is reserved: ask again after this many microseconds.
    Recheck(u64),
    /// Nothing is reserved: the budget could not start the request before the caller's
    /// limit; it could in this many microseconds.
    Late(u64),
    /// The budget is closed.
    Closed(Block),
}

/// One reservation, flattened to integers (what every store, the Lua script included,
/// gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserve {
    /// Tokens the request is expected to use.
    pub tokens: u64,
    /// A second or later attempt of its call.
    pub retry: bool,
    /// The longest the caller can wait for its slot, µs ([`MAX_EXACT`]: no limit).
    pub within_us: u64,
    /// The booking being confirmed: the caller waited for its slot and asks whether it
    /// still holds (no congestion event since, not moved back by higher lanes).
    pub confirm: Option<Ticket>,
    /// The caller's lane ([`crate::Priority::lane`]): lower lanes are booked after
    /// higher ones once callers queue. Lanes past the last count as the last.
    pub lane: u64,
    /// The lane's reserved share in millionths of the rate
    /// ([`crate::ReservedShares`]): what it still gets while higher lanes keep it
    /// waiting.
    pub reserve_ppm: u64,
}

impl Reserve {
    /// A first attempt of `tokens` tokens with no time limit.
    pub fn new(tokens: u64) -> Self {
        Self {
            tokens,
            retry: false,
            within_us: MAX_EXACT,
            confirm: None,
            lane: 1,
            reserve_ppm: 0,
        }
    }
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
    /// How long a closed budget stays closed before one call may probe again.
    pub const BLOCK_MICROS: u64 = 600 * MICROS;
    /// How long the others wait for a probe's answer before re-asking.
    pub const PROBE_RECHECK_MICROS: u64 = 20_000;
    /// How long a probe may stay unanswered before another goes.
    pub const PROBE_TIMEOUT_MICROS: u64 = 2 * MICROS;
    /// Safety margin under the limit, in millionths (network jitter between us and the
    /// server's clock).
    pub const MARGIN_PPM: u64 = 15_000;
    /// The learned rate a budget starts from: 2 requests per second, in thousandths.
    pub const LEARN_START_MILLI: u64 = 2_000;
    /// The lowest learned rate: one request per 100 s, in thousandths per second.
    pub const LEARN_MIN_MILLI: u64 = 10;
    /// The highest learned rate: 100,000 requests per second, in thousandths.
    pub const LEARN_MAX_MILLI: u64 = 100_000_000;
    /// While slow-starting, the learned rate doubles this often (while callers queue).
    pub const SLOW_START_STEP_MICROS: u64 = 100_000;
    /// A learned rate books at most this many periods ahead (at least a quarter of a
    /// second, at most a second or one period); callers further back ask again.
    pub const LEARN_HORIZON_PERIODS: u64 = 4;
    /// The longest pause between two refused probes of a learned rate (unless one
    /// request's period is longer).
    pub const PROBE_PAUSE_CAP_MICROS: u64 = 2 * MICROS;
    /// A `now` at least this far behind the latest one seen is the clock stepped back;
    /// less is a caller that read the clock before another one took its turn, and it
    /// counts as the latest.
    pub const CLOCK_STEP_MICROS: u64 = MICROS;

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

    /// A new budget at `now` that keeps what this one learned (its limits, where they
    /// came from, the share, a learned rate) and nothing else: no reservations, pause,
    /// credit or block. For a store that restarts on another clock (a local fallback of
    /// a shared store).
    pub fn restarted(&self, now_us: u64) -> Self {
        let mut s = Self::seeded(now_us, Seed::default());
        s.req_base_ns = self.req_base_ns.min(MAX_EXACT);
        s.tok_base_ns = self.tok_base_ns.min(MAX_EXACT);
        s.source = self.source;
        s.share_ppm = self.share_ppm.min(MAX_EXACT);
        s.rate_milli = self.rate_milli.min(MAX_EXACT);
        s.max_milli = self.max_milli.min(MAX_EXACT);
        s.windowed = u64::from(self.windowed == 1);
        s.cycle_start_us = s.seen_us;
        s
    }

    /// The `now` the operation runs at. One a little behind the latest seen (callers
    /// racing for the budget) counts as the latest. A clock stepped backwards (by
    /// [`Self::CLOCK_STEP_MICROS`] or more) shifts every stored time by the step, so
    /// waits keep their length (no stall); a clock stepped forwards finds the cells
    /// idle, and idle cells admit one request at a time (no flood) unless the server
    /// announced more.
    fn advance(&mut self, now: u64) -> u64 {
        if now < self.seen_us && self.seen_us - now < Self::CLOCK_STEP_MICROS {
            return self.seen_us;
        }
        if now < self.seen_us {
            let back = self.seen_us - now;
            for t in [
                &mut self.req_tat_us,
                &mut self.tok_tat_us,
                &mut self.retry_tat_us,
                &mut self.pause_until_us,
                &mut self.block_until_us,
                &mut self.event_us,
                &mut self.grown_us,
                &mut self.probe_until_us,
                &mut self.meter_start_us,
                &mut self.anchor_us,
                &mut self.spent_us,
                &mut self.cycle_start_us,
                &mut self.fresh_us,
                &mut self.lane0_req_us,
                &mut self.lane1_req_us,
                &mut self.lane0_tok_us,
                &mut self.lane1_tok_us,
                &mut self.reserve1_us,
                &mut self.reserve2_us,
                &mut self.ins1_at_us,
                &mut self.ins2_at_us,
            ] {
                *t = sub(*t, back);
            }
        }
        if now >= add(self.seen_us, 60 * MICROS) {
            // A minute without any operation: whatever was pending is gone.
            self.pending = 0;
        }
        self.seen_us = now;
        now
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

    /// One request's period at the current rate, µs (0: no request limit known).
    fn req_period_us(&self) -> u64 {
        self.period_ns(self.req_base_ns) / 1000
    }

    /// Reserves one request at `now` (see [`Reserve`]). Retries go through the same
    /// paced cells as first attempts, so with a known rate they cannot add load; while
    /// no request rate is known they also spend a retry budget of 20 per second (burst
    /// 10), so a storm of failures cannot multiply the load.
    pub fn reserve(&mut self, now: u64, ask: &Reserve) -> Decision {
        let decision = self.reserve_inner(now, ask);
        self.order_lanes();
        decision
    }

    fn reserve_inner(&mut self, now: u64, ask: &Reserve) -> Decision {
        let now = now.min(MAX_EXACT);
        let tokens = ask.tokens.clamp(1, MAX_EXACT);
        let within = ask.within_us.min(MAX_EXACT);
        let mut lane = ask.lane.min(Self::LAST_LANE);
        let mut boost_confirmed = false;
        let now = self.advance(now);
        if self.block != Block::None {
            if now < self.block_until_us {
                return Decision::Closed(self.block);
            }
            // Let one call probe whether the block has lifted.
            self.block_until_us = add(now, Self::BLOCK_MICROS);
        }
        if ask.confirm.is_some_and(|t| t.epoch != self.epoch) {
            // The booking being confirmed was voided: it will never be answered.
            self.pending = sub(self.pending, 1);
        }
        if let Some(t) = ask.confirm
            && t.epoch == self.epoch
        {
            let booked = t.lane.min(Self::LAST_LANE);
            let shift = self.shift_of(booked);
            let mut extra = sub(shift, t.shift);
            let (ins_at, ins_len) = self.last_insert(booked);
            if ins_len > 0 && extra >= ins_len && add(t.slot, extra - ins_len) < ins_at {
                // Due before the latest booking placed ahead went (its caller is late to
                // confirm): that one went after it, not ahead.
                extra -= ins_len;
            }
            if extra == 0 {
                // The booking holds: no congestion event since it was made, and no
                // higher lane was placed ahead of it.
                return Decision::Go {
                    wait_us: 0,
                    ticket: Ticket {
                        epoch: self.epoch,
                        seq: self.seq,
                        lane: booked,
                        shift,
                        slot: now,
                    },
                };
            }
            // Higher lanes were placed ahead of it: its slot moved back by `extra`.
            let boost = booked > 0
                && self.starving(booked, now, tokens)
                && self.reserve_room(booked, now, ask.reserve_ppm);
            if !boost {
                if extra > within {
                    self.pending = sub(self.pending, 1);
                    return Decision::Late(extra);
                }
                return Decision::Go {
                    wait_us: extra,
                    ticket: Ticket {
                        epoch: self.epoch,
                        seq: self.seq,
                        lane: booked,
                        shift,
                        slot: add(now, extra),
                    },
                };
            }
            // Kept waiting while its lane's reserved share has room: the booking is given
            // up for one in the first lane (below).
            self.pending = sub(self.pending, 1);
            lane = booked;
            boost_confirmed = true;
        }
        let req_ns = self.period_ns(self.req_base_ns);
        let tok_ns = self.period_ns(self.tok_base_ns);
        if self.source == Source::Unknown || self.recovering == 1 {
            if now < self.pause_until_us {
                let wait = self.pause_until_us - now;
                return if wait > within {
                    Decision::Late(wait)
                } else {
                    Decision::Recheck(wait)
                };
            }
            if now < self.probe_until_us {
                return Decision::Recheck(Self::PROBE_RECHECK_MICROS);
            }
            // This caller is the probe: it goes now, the others wait for its answer.
            self.probe_until_us = add(now, Self::PROBE_TIMEOUT_MICROS);
            if req_ns > 0 {
                let end = add(self.req_tat_us.max(now), req_ns / 1000);
                self.req_tat_us = end;
                self.lane1_req_us = self.lane1_req_us.max(end);
                self.lane0_req_us = self.lane0_req_us.max(end);
            }
            if tok_ns > 0 {
                let cost = mul(tokens, tok_ns) / 1000;
                let end = add(self.tok_tat_us.max(now), cost);
                self.tok_tat_us = end;
                self.lane1_tok_us = self.lane1_tok_us.max(end);
                self.lane0_tok_us = self.lane0_tok_us.max(end);
            }
            return self.book(0, lane);
        }
        let use_credit = self.credit > 0 && req_ns > 0;
        // Tokens the server said it has room for go at once too.
        let use_tok_credit = tok_ns > 0 && self.tok_credit >= tokens;
        let period = req_ns / 1000;
        let cost = if tok_ns > 0 {
            mul(tokens, tok_ns) / 1000
        } else {
            0
        };
        let retry_period_us = 50_000;
        let retry_held = ask.retry && req_ns == 0;
        let start_in = |s: &Self, lane: u64| {
            let mut start = now;
            if req_ns > 0 && !use_credit {
                start = start.max(s.lane_req(lane));
            }
            if tok_ns > 0 && !use_tok_credit {
                start = start.max(s.lane_tok(lane));
            }
            if retry_held {
                start = start.max(sub(s.retry_tat_us, mul(10, retry_period_us)));
            }
            // A lower lane's slot due now may have gone already: only later ones move.
            let floor = start.max(add(now, 1));
            let queued = lane < Self::LAST_LANE && req_ns > 0 && !use_credit;
            if queued && s.req_tat_us > floor && s.req_tat_us > s.pause_until_us {
                // Lower lanes are booked up to `req_tat_us` (past any pause, which then
                // holds only new bookings), one period apart: take the first of their
                // slots from `floor` (it moves them back by one), never one between two
                // of theirs.
                let k = (s.req_tat_us - floor) / period.max(1);
                return sub(s.req_tat_us, mul(k, period));
            }
            start = start.max(s.pause_until_us);
            let floor = start.max(add(now, 1));
            if queued && s.req_tat_us > floor {
                let k = (s.req_tat_us - floor) / period.max(1);
                start = sub(s.req_tat_us, mul(k, period));
            }
            start
        };
        // A learned rate's period changes as it learns, so no slot can be placed
        // between two booked at another; its lanes differ by how far ahead they may
        // book instead (below).
        let asked_lane = lane;
        if self.source == Source::Learned {
            lane = Self::LAST_LANE;
        }
        let mut start = start_in(self, lane);
        let boost_new = lane > 0
            && lane == asked_lane
            && ask.confirm.is_none()
            && self.starving(lane, now, tokens)
            && self.reserve_room(lane, now, ask.reserve_ppm);
        if boost_confirmed || boost_new {
            // Moved back by higher lanes while its reserved share has room: this
            // booking goes in the first lane.
            self.take_reserve(lane, now, period.max(cost), ask.reserve_ppm);
            lane = 0;
            start = start_in(self, 0);
        }
        let wait = start - now;
        if wait > within {
            return Decision::Late(wait);
        }
        if self.source == Source::Learned && req_ns > 0 {
            // A learned rate may change soon: book at most a few periods ahead (a caller
            // asleep until a slot booked at a stale rate cannot be moved). The others
            // ask again when their slot comes within reach.
            // Higher lanes may book further ahead: a period more per lane (the
            // default lane as far as ever).
            let periods = sub(Self::LEARN_HORIZON_PERIODS + 1, asked_lane);
            let horizon = mul(period, periods).clamp(MICROS / 4, MICROS).max(period);
            if wait > horizon {
                return Decision::Recheck(wait - horizon);
            }
        }
        if retry_held {
            self.retry_tat_us = add(self.retry_tat_us.max(start), retry_period_us);
        }
        let mut moved = [0u64; 3];
        if req_ns > 0 {
            if self.req_tat_us > now {
                self.binding = 1;
            }
            if use_credit {
                // A request the server said it has room for: it goes at once, and the
                // first paced one after the burst (of any lane) one unit later.
                self.credit -= 1;
                let after = add(start, period);
                self.req_tat_us = self.req_tat_us.max(after);
                self.lane1_req_us = self.lane1_req_us.max(after);
                self.lane0_req_us = self.lane0_req_us.max(after);
            } else {
                moved = self
                    .place(lane, start, period, false)
                    .map(|m| if m { period } else { 0 });
            }
        }
        if use_tok_credit {
            // As with requests: the burst goes at once, and the first paced booking
            // after it starts one request's tokens later.
            self.tok_credit -= tokens;
            let after = add(start, cost);
            self.tok_tat_us = self.tok_tat_us.max(after);
            self.lane1_tok_us = self.lane1_tok_us.max(after);
            self.lane0_tok_us = self.lane0_tok_us.max(after);
        } else if tok_ns > 0 {
            let tok_start = self.lane_tok(lane).max(start);
            let by_tokens = self.place(lane, tok_start, cost, true);
            for (m, t) in moved.iter_mut().zip(by_tokens) {
                if t {
                    *m = (*m).max(cost);
                }
            }
        }
        // The lower lanes booked past this one wait as long as it takes in all.
        self.shift1_us = add(self.shift1_us, moved[1]);
        self.shift2_us = add(self.shift2_us, moved[2]);
        if moved[1] > 0 {
            self.ins1_at_us = start;
            self.ins1_len_us = moved[1];
        }
        if moved[2] > 0 {
            self.ins2_at_us = start;
            self.ins2_len_us = moved[2];
        }
        self.book(wait, lane)
    }

    fn book(&mut self, wait_us: u64, lane: u64) -> Decision {
        self.seq = add(self.seq, 1);
        self.pending = add(self.pending, 1);
        Decision::Go {
            wait_us,
            ticket: Ticket {
                epoch: self.epoch,
                seq: self.seq,
                lane,
                shift: self.shift_of(lane),
                slot: add(self.seen_us, wait_us),
            },
        }
    }

    /// Learns from one response report at `now`.
    pub fn report(&mut self, now: u64, report: &Report) {
        self.apply(now, &ReportOp::from(report));
    }

    /// Learns from one flattened report at `now` (what [`BudgetState::report`] does
    /// after flattening, and what the Lua script mirrors).
    pub fn apply(&mut self, now: u64, op: &ReportOp) {
        self.apply_inner(now, op);
        self.order_lanes();
    }

    fn apply_inner(&mut self, now: u64, op: &ReportOp) {
        let now = now.min(MAX_EXACT);
        let op = &op.clamped();
        let now = self.advance(now);
        self.learn_limits(now, op);
        if let Some(used) = op.used_tokens {
            self.correct_tokens(op.estimated_tokens, used);
        }
        if op.ticket.is_some() && op.signal != SignalOp::Usage {
            self.pending = sub(self.pending, 1);
        }
        // A report of a booking made before the last congestion event belongs to that
        // event (a report without a ticket counts as current).
        let current = op.ticket.is_none_or(|t| t.epoch >= self.epoch);
        match op.signal {
            SignalOp::Success => {
                if self.source == Source::Unknown {
                    // The first answer carried no limits: learn the rate.
                    self.become_learned(now);
                }
                if self.block != Block::None {
                    self.block = Block::None;
                }
                self.meter(now);
                if self.recovering == 1 {
                    self.end_recovery(now);
                }
                self.cycle_count = add(self.cycle_count, 1);
                self.grow(now);
                if self.source == Source::Headers {
                    self.read_token_remaining(op);
                    self.read_remaining(now, op);
                }
            }
            SignalOp::WindowSpent { wait_us, window_us } => {
                self.refusal(now, wait_us, window_us, current);
            }
            SignalOp::RateLimited { wait_us } => {
                if self.source == Source::Unknown {
                    self.become_learned(now);
                }
                self.refusal(now, wait_us, 0, current);
            }
            SignalOp::NoAllowance => self.close(now, Block::NoAllowance),
            SignalOp::MonthlyQuota => self.close(now, Block::MonthlyQuota),
            SignalOp::Usage => {}
            SignalOp::Other => {
                // A probe that failed for another reason (a 5xx, a reset) is back: the
                // next caller may probe at once.
                if self.source == Source::Unknown || self.recovering == 1 {
                    self.probe_until_us = now;
                }
            }
        }
    }

    fn learn_limits(&mut self, now: u64, op: &ReportOp) {
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
            if self.source == Source::Learned && op.req_limit == 0 {
                // Only tokens announced: the learned request rate no longer applies.
                self.req_base_ns = 0;
            }
            self.source = Source::Headers;
            self.share_ppm = FULL_SHARE;
            self.grown_us = now;
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
}
