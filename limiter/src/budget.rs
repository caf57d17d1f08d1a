//! The shared budget of one model: its state, declared once, and the two operations
//! every store runs on it atomically.
//!
//! # Admission, not booking
//!
//! The budget keeps its level, not a schedule: one GCRA cell for requests and one for
//! tokens (`TAT' = max(TAT, t) + cost·T`, a cell holding up to its capacity at once), and
//! admits a caller only when the capacity it needs is there now, or within a short
//! horizon (about one store round trip). Nobody holds a slot far ahead, so whatever frees
//! capacity (an estimate corrected by `usage`, a raised limit, `remaining` above the
//! model, a window that opened, a lost caller) is the next caller's at once.
//!
//! - [`BudgetState::admit`] takes the first waiters of one process's line
//!   ([`AdmitOp`]): in their order (priority class, then arrival), it admits each that
//!   fits, stopping at the first that does not (which then waits for the capacity it
//!   needs). A lower class whose reserved share is due goes ahead of higher ones
//!   ([`AdmitOp::reserve_ppm`]), so it is never starved. Callers of a higher class
//!   waiting in other processes are seen in their processes' demand records
//!   ([`ProcRecord`]): a lower class leaves them the capacity they need.
//! - [`BudgetState::report`] learns from a response: the limits announced, the
//!   `remaining` the server reports (the truth about a budget other programs spend too),
//!   the tokens really used (the difference credited or charged at once), refusals
//!   (a congestion event that pauses everyone once), a closed budget.
//!
//! Where the limits come from ([`Source`]): configured by the user (paced, never burst),
//! announced by the server (the announced window's worth may go at once, as the server
//! itself allows; `remaining` sets the level), learned from 429s when nothing is
//! announced (a rate, paced), or not known yet (one probe at a time until the first
//! answer tells).
//!
//! # Where each part is
//!
//! This file: the state and admission. `announced`: limits and `remaining` from
//! headers, spent windows. `congestion`: refusals, recovery, closing. `learned`: a rate
//! learned from 429s. `window`: a window learned from 429s (its count goes in a lump).
//! `estimate`: token estimates learned from `usage`.
//!
//! # A limit nobody announces: what was taken from whom
//!
//! - **TCP BBR** (`tcp_bbr.c`): the rate to use against a policer is the delivery rate
//!   measured while over-driving it, so a refusal settles the learned rate just under
//!   what was delivered (97 %), and a cycle whose shut was the server's (a second, or a
//!   quarter of the cycle) sets the rate to what the whole cycle delivered, as BBR's
//!   policer detector (`lt_bw`) does. The start is clocked by answers, not timers (below
//!   16/s each success doubles the rate). Not taken: the pacing-gain cycle, whose 3/4
//!   phase is pure loss against a server with no queue; upward probes are rare instead.
//! - **AWS SDKs' adaptive retry** (CUBIC): no long warm-up before the first refusal
//!   (after a first answer a few go at once, then the rate doubles per answer), and a
//!   rate grows only while what is delivered keeps up with it (at least 80 %). Not
//!   taken: the cubic law, which needs about 6 s to follow a doubled limit and saws
//!   between 70 % and 100 % of a hard one; the bracket below replaces it.
//! - **Netflix concurrency-limits**: AIMD's rule that a limit nobody uses never grows (a
//!   rate grows only while callers queue for it), and a gate on calls in flight: a
//!   budget refused with more in flight than any success had keeps its attempts in
//!   flight at that count, climbs by one per round at the gate until a try is refused,
//!   then tries one more rarely (the `concurrency` module). Not taken: Vegas and
//!   Gradient2, which read queueing delay that a server answering 429 at once never
//!   shows.
//! - **Envoy's adaptive concurrency**: not taken, for the same reason as Gradient2.
//! - **Google SRE's client-side throttling**: refused attempts are bounded, not by a
//!   local reject probability but by the probe budget: a settled rate probes upwards
//!   after a hold of at least a second and 16 of its intervals (at most one refused probe
//!   in 16 calls), and waits twice as long each time a probe is refused where the last
//!   one was. That schedule is in the shared state: the fleet probes once, not once per
//!   process.
//!
//! Beyond the anchors: the bracket (a refusal goes back to the highest rate that held, a
//! hold tries the middle between it and the lowest refused), and a window told apart
//! from a rate by the timing of refusals (shut longer than any pace explains, then open
//! in a lump), after which its count goes at each open and its length times the probe.

mod announced;
mod concurrency;
mod congestion;
mod estimate;
mod learned;
mod window;

use mistral_core::limiter::{Block, Limits};
use mistral_core::{Sizing, Ticket};
use serde::{Deserialize, Serialize};

use concurrency::ConcRefusal;
use window::LumpAnswer;

use crate::op::{AdmitAnswer, AdmitOp, Binding, Candidate, Decision, ReportOp, Signal};
use crate::record::{Clocked, Join, Joinable};

pub(crate) const MICROS: u64 = 1_000_000;

/// How a learned budget's capacity comes back after it was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Refill {
    /// Not known yet.
    #[default]
    Unknown,
    /// In a lump when a window starts: a long shut, then a whole count admitted at once
    /// (a fixed window, a sliding log spent in a burst).
    Window,
    /// Little by little (a rate, a bucket, a concurrency limit): a lump after a shut
    /// was refused.
    Continuous,
}

/// Where a budget's limits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Source {
    /// Nothing known yet: the first response will tell.
    #[default]
    Unknown,
    /// Set by the user.
    Configured,
    /// Announced by the server's headers.
    Headers,
    /// The server announces nothing: learned from 429s.
    Learned,
}

impl Joinable for Source {
    fn join(_rule: Join, mine: &Self, theirs: &Self, mine_newer: bool) -> Self {
        if mine_newer { *mine } else { *theirs }
    }
}

impl Joinable for Refill {
    fn join(_rule: Join, mine: &Self, theirs: &Self, mine_newer: bool) -> Self {
        if mine_newer { *mine } else { *theirs }
    }
}

impl Joinable for Block {
    fn join(_rule: Join, mine: &Self, theirs: &Self, mine_newer: bool) -> Self {
        if mine_newer { *mine } else { *theirs }
    }
}

/// One process's demand on a budget: how many of its callers wait in each lane, until
/// when the record holds (a process that stops asking is forgotten when it lapses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcRecord {
    /// The process's (limiter instance's) id.
    pub id: u64,
    /// The record holds until then, µs on the store's clock.
    pub until_us: u64,
    /// Callers waiting, per lane.
    pub waiting: [u64; 3],
}

impl Joinable for Vec<ProcRecord> {
    fn join(_rule: Join, mine: &Self, theirs: &Self, _mine_newer: bool) -> Self {
        let mut out = mine.clone();
        for t in theirs {
            match out.iter_mut().find(|m| m.id == t.id) {
                Some(m) if m.until_us < t.until_us => *m = *t,
                Some(_) => {}
                None => out.push(*t),
            }
        }
        out
    }
}

impl Clocked for Vec<ProcRecord> {
    fn shifted(&self, shift: u64, forward: bool) -> Self {
        self.iter()
            .map(|p| ProcRecord {
                until_us: p.until_us.shifted(shift, forward),
                ..*p
            })
            .collect()
    }
}

crate::shared_record! {
    /// The state of one model's budget, shared by every caller of every process that
    /// spends it. Times are µs on the store's clock (0: never); periods are µs per unit.
    #[derive(Debug, Clone, PartialEq)]
    pub struct BudgetState {
        /// The latest `now` seen (a clock that steps back is noticed against it).
        seen_us: u64 => Max, time;
        /// Where the limits came from.
        source: Source => Newer;
        /// µs per request at the full limit (0: no request limit known).
        req_us: f64 => Newer;
        /// Requests that may go at once (the cell's capacity, at least 1).
        req_cap: f64 => Newer;
        /// µs per token at the full limit (0: no token limit known).
        tok_us: f64 => Newer;
        /// Tokens that may go at once (the cell's capacity).
        tok_cap: f64 => Newer;
        /// The share of the limits this fleet takes (lowered by refusals the model did not
        /// expect: another program spends the same budget), at most 1.
        share: f64 => Min;
        /// How fast the share grows back, per second (a hundredth, or faster after a store
        /// that lost the budget was given it back at a cautious share).
        share_rate: f64 => Max;
        /// Theoretical arrival time of the request cell.
        req_tat_us: u64 => Max, time;
        /// Theoretical arrival time of the token cell.
        tok_tat_us: u64 => Max, time;
        /// Nobody is admitted before then (a refusal, a spent window).
        pause_until_us: u64 => Max, time;
        /// While probing (limits unknown, recovering, a closed budget lapsing): the probe
        /// out is given up on then.
        probe_until_us: u64 => Max, time;
        /// 1 while recovering from a congestion event: one probe at a time.
        recovering: u64 => Max;
        /// Probes refused in a row during this recovery.
        streak: u64 => Max;
        /// When the last congestion event started.
        event_us: u64 => Max, time;
        /// Congestion events so far: a refusal of an attempt admitted in an earlier epoch
        /// belongs to an event already counted.
        epoch: u64 => Max;
        /// Admissions so far (the last one's [`Ticket::seq`]).
        seq: u64 => Max;
        /// Tokens charged by every admission so far (the last one's [`Ticket::tok_mark`]).
        tok_mark: u64 => Max;
        /// The admission whose answer's `remaining` set the level last.
        obs_seq: u64 => Max;
        /// Admitted attempts not answered yet (forgotten after a minute without any
        /// operation).
        out: u64 => Max;
        /// Why the budget is closed, if it is.
        block: Block => Newer;
        /// Until when it is closed.
        block_until_us: u64 => Max, time;
        /// Per lane: the reserved share's cell (a lower lane that went ahead of waiting
        /// higher ones is charged `cost ÷ share` here; its share is due when this is past).
        lane_share_us: [u64; 3] => Max, time;
        /// The processes that have callers waiting.
        procs: Vec<ProcRecord> => Union, time;
        /// Completion samples seen (`usage.completion_tokens`).
        comp_n: u64 => Max;
        /// Completion tokens, moving average.
        comp_mean: f64 => Newer;
        /// Completion tokens, moving mean absolute deviation.
        comp_dev: f64 => Newer;
        /// Prompt samples seen (characters against `usage.prompt_tokens`).
        cpt_n: u64 => Max;
        /// Prompt characters per token, moving average.
        cpt: f64 => Newer;
        /// Learned: the request rate, per second (0: none).
        rate: f64 => Newer;
        /// Learned: the rate the last congestion event refused.
        max_rate: f64 => Newer;
        /// Learned: the last upward probe's step, in parts of the rate (0: holding).
        probe_step: f64 => Newer;
        /// Learned: the highest rate that held (callers queued, nothing refused) since
        /// the last refusal at or under it (0: none).
        held_rate: f64 => Newer;
        /// Learned: how many holds a settled rate waits before it probes (doubles when a
        /// probe is refused just where the last one was).
        hold_x: f64 => Newer;
        /// Learned: the last sequence number of the few let go at once after the first
        /// answer (their refusals say nothing of the rate).
        burst_seq: u64 => Newer;
        /// Learned: 1 until the first congestion event (the rate doubles).
        slow_start: u64 => Newer;
        /// Learned: 1 when a caller had to wait since the rate last grew.
        binding: u64 => Max;
        /// When the rate or the share last grew.
        grown_us: u64 => Newer, time;
        /// Learned: start of the success meter's interval.
        meter_start_us: u64 => Newer, time;
        /// Learned: successes in the meter's interval.
        meter_count: u64 => Newer;
        /// Learned: successes per second in the last full interval.
        meter_rate: f64 => Newer;
        /// Learned: start of the current delivery cycle (since the last recovery).
        cycle_start_us: u64 => Newer, time;
        /// Learned: successes in the current delivery cycle.
        cycle_count: u64 => Newer;
        /// Learned: how capacity comes back after a long shut.
        refill: Refill => Newer;
        /// Learned: a window's count (when `refill` is a window).
        win_count: u64 => Newer;
        /// Learned: a count a window held before a lump's refusals cut `win_count` (0:
        /// none); lumps try halfway back to it until one is refused there.
        win_top: u64 => Newer;
        /// Learned: how many times a learned window was seen to open.
        win_opens: u64 => Newer;
        /// Learned: a window's length, µs (0: not known).
        win_len_us: u64 => Newer;
        /// Learned: how many intervals between opens agreed with `win_len_us` (less the
        /// outliers since); below 2 nobody waits for the next open on its word.
        win_len_n: u64 => Newer;
        /// Learned: when the last window seen to open opened (its first probe's
        /// admission; 0: none).
        win_open_us: u64 => Newer, time;
        /// When the last probe was admitted.
        probe_at_us: u64 => Newer, time;
        /// The last probe's admission ([`Ticket::seq`]).
        probe_seq: u64 => Newer;
        /// When the last refused probe was admitted.
        probe_no_us: u64 => Newer, time;
        /// Learned: the count the current lump may reach (0: no lump under way).
        lump_cap: u64 => Newer;
        /// Learned: the current lump's calls admitted so far (its probe included).
        lump_sent: u64 => Newer;
        /// Learned: the current lump's successes so far (its probe included).
        lump_ok: u64 => Newer;
        /// Learned: how many more of the lump may go at once, beside the pace.
        lump_left: u64 => Newer;
        /// Learned: the current lump's refusals so far.
        lump_no: u64 => Newer;
        /// Learned: the current lump's answers that were neither (a 5xx, a reset).
        lump_lost: u64 => Newer;
        /// Learned: the epoch the current lump's calls were admitted in.
        lump_epoch: u64 => Newer;
        /// Learned: when the current lump is judged on what was answered.
        lump_until_us: u64 => Newer, time;
        /// Learned: successes at the pace since a window's lump, until it is spent.
        lump_extra: u64 => Newer;
        /// Announced: 1 once a spent window refused a probe one unit later (it does not
        /// refill continuously: a fixed window or a sliding log).
        windowed: u64 => Newer;
        /// Announced: when a window was last seen to start.
        anchor_us: u64 => Newer, time;
        /// Announced: when a response first showed `remaining` 0 since the last that did
        /// not (0: not spent).
        spent_us: u64 => Newer, time;
        /// Announced: the last admission made when the window was seen spent (only an
        /// answer of a later one was counted after that).
        spent_seq: u64 => Newer;
        /// Announced: when a response last showed a fresh window.
        fresh_us: u64 => Newer, time;
        /// Announced: the admission whose answer last showed a fresh window.
        fresh_seq: u64 => Newer;
        /// Announced: what that answer said remains.
        fresh_left: u64 => Newer;
        /// 1 while the cells hold only the fleet's share of their capacity, and the room
        /// the server says remains only ever lowers their level: a store's stand-in, or a
        /// budget rejoined while other processes may still admit on stand-ins of their
        /// own (until the share is whole again).
        cells_at_share: u64 => Max;
        /// When the last admission was made.
        run_at_us: u64 => Max, time;
        /// Admissions in the current run (each within [`Self::RUN_GAP_US`] of the one
        /// before).
        run_n: u64 => Newer;
        /// Learned: how many attempts may be in flight at once (0: no concurrency limit
        /// learned; see the `concurrency` module).
        conc_limit: u64 => Newer;
        /// Learned: the most attempts in flight a success was admitted with (since the
        /// last refusal that said there is no concurrency limit).
        conc_ok: u64 => Newer;
        /// Learned: 1 while more in flight than held is tried.
        conc_probe: u64 => Newer;
        /// Learned: how many more in flight the current or next try lets go.
        conc_step: u64 => Newer;
        /// Learned: successes at the gate since it was set or moved.
        conc_holds: u64 => Newer;
        /// Learned: how many times [`Self::CONC_HOLDS`] the next try of one more in
        /// flight waits (doubles when a try is refused, at most 8).
        conc_x: u64 => Newer;
        /// Learned: when the gate was set or moved.
        conc_at_us: u64 => Newer, time;
        /// When the last answer of an admitted attempt was reported.
        report_us: u64 => Max, time;
        /// The first admission of the current run.
        run_seq: u64 => Newer;
        /// The lowest `remaining` (requests) an answer of the current run quoted so far
        /// (`u64::MAX`: none): the answer that quotes it was counted after the others.
        run_rem: u64 => Newer;
    }
}

impl Default for BudgetState {
    fn default() -> Self {
        BudgetState {
            seen_us: 0,
            source: Source::Unknown,
            req_us: 0.0,
            req_cap: 1.0,
            tok_us: 0.0,
            tok_cap: 1.0,
            share: 1.0,
            share_rate: Self::SHARE_RATE,
            req_tat_us: 0,
            tok_tat_us: 0,
            pause_until_us: 0,
            probe_until_us: 0,
            recovering: 0,
            streak: 0,
            event_us: 0,
            epoch: 0,
            seq: 0,
            tok_mark: 0,
            obs_seq: 0,
            out: 0,
            block: Block::None,
            block_until_us: 0,
            lane_share_us: [0; 3],
            procs: Vec::new(),
            comp_n: 0,
            comp_mean: 0.0,
            comp_dev: 0.0,
            cpt_n: 0,
            cpt: 0.0,
            rate: 0.0,
            max_rate: 0.0,
            probe_step: 0.0,
            held_rate: 0.0,
            burst_seq: 0,
            hold_x: 1.0,
            slow_start: 0,
            binding: 0,
            grown_us: 0,
            meter_start_us: 0,
            meter_count: 0,
            meter_rate: 0.0,
            cycle_start_us: 0,
            cycle_count: 0,
            refill: Refill::Unknown,
            win_count: 0,
            win_top: 0,
            win_opens: 0,
            win_len_us: 0,
            win_len_n: 0,
            win_open_us: 0,
            probe_at_us: 0,
            probe_no_us: 0,
            lump_cap: 0,
            lump_sent: 0,
            lump_ok: 0,
            lump_left: 0,
            lump_no: 0,
            lump_lost: 0,
            lump_epoch: 0,
            lump_until_us: 0,
            lump_extra: 0,
            windowed: 0,
            anchor_us: 0,
            spent_us: 0,
            fresh_us: 0,
            fresh_seq: 0,
            fresh_left: 0,
            cells_at_share: 0,
            spent_seq: 0,
            probe_seq: 0,
            run_at_us: 0,
            run_n: 0,
            run_seq: 0,
            run_rem: u64::MAX,
            conc_limit: 0,
            conc_ok: 0,
            conc_probe: 0,
            conc_step: 1,
            conc_holds: 0,
            conc_x: 1,
            conc_at_us: 0,
            report_us: 0,
        }
    }
}

/// The most processes a budget keeps demand records for (the ones that lapse first go).
pub const MAX_PROCS: usize = 64;

impl BudgetState {
    /// How long a closed budget stays closed before one call may probe again.
    pub const BLOCK_US: u64 = 600 * MICROS;
    /// How long a probe may stay unanswered before another goes.
    pub const PROBE_TIMEOUT_US: u64 = 2 * MICROS;
    /// Margin under an announced or configured rate, in parts of one (requests paced at
    /// the rate reach the server a little closer together than they left).
    pub const MARGIN: f64 = 0.015;
    /// A `now` at least this far behind the latest one seen is the clock stepped back;
    /// less is a caller that read the clock before another one took its turn, and it
    /// counts as the latest.
    pub const CLOCK_STEP_US: u64 = MICROS;
    /// How fast a lowered share grows back, per second.
    pub const SHARE_RATE: f64 = 0.01;
    /// How fast the share grows back after a store that lost the budget was given it
    /// back at a cautious share: in about three seconds (the other processes' stand-ins
    /// reach the store again within that).
    pub const REJOIN_SHARE_RATE: f64 = 0.25;
    /// How soon callers held by a full concurrency gate ask again (an answer in this
    /// process wakes them at once).
    pub const CONC_RECHECK_US: u64 = 100_000;
    /// How long a demand record outlives its process's next planned ask.
    pub const DEMAND_GRACE_US: u64 = 250_000;
    /// Admissions each at most this long after the one before form a run: callers let
    /// go together, which may reach the server in any order (a loaded machine wakes
    /// them late and out of turn); paced ones further apart keep their order.
    pub const RUN_GAP_US: u64 = 20_000;

    /// A new budget at `now`, with the user's limits if any.
    pub fn new(now_us: u64, limits: Option<Limits>) -> Self {
        let mut s = BudgetState {
            seen_us: now_us,
            grown_us: now_us,
            meter_start_us: now_us,
            ..BudgetState::default()
        };
        if let Some(limits) = limits {
            s.source = Source::Configured;
            if let Some((limit, window)) = limits.requests.filter(|(l, _)| *l > 0) {
                s.req_us = window.as_micros() as f64 / limit as f64;
            }
            if let Some((limit, window)) = limits.tokens.filter(|(l, _)| *l > 0) {
                s.tok_us = window.as_micros() as f64 / limit as f64;
            }
        }
        s
    }

    /// A new budget at `now` that keeps what this one learned (limits, where they came
    /// from, the share, a learned rate, the estimates) and none of its level, pause or
    /// block: for a store's local stand-in, on its own clock.
    pub fn restarted(&self, now_us: u64) -> Self {
        BudgetState {
            seen_us: now_us,
            source: self.source,
            req_us: self.req_us,
            req_cap: self.req_cap,
            tok_us: self.tok_us,
            tok_cap: self.tok_cap,
            share: self.share,
            share_rate: self.share_rate,
            comp_n: self.comp_n,
            comp_mean: self.comp_mean,
            comp_dev: self.comp_dev,
            cpt_n: self.cpt_n,
            cpt: self.cpt,
            rate: self.rate,
            max_rate: self.max_rate,
            held_rate: self.held_rate,
            refill: self.refill,
            win_count: self.win_count,
            win_len_us: self.win_len_us,
            conc_limit: self.conc_limit,
            windowed: self.windowed,
            grown_us: now_us,
            meter_start_us: now_us,
            cycle_start_us: now_us,
            ..BudgetState::default()
        }
    }

    /// This budget as a store that lost it, or that comes back from an outage, restarts
    /// from: its level kept, its share at most `cap` (other processes may still admit
    /// on stand-ins of their own), of the pace, of the cells and of the room the server
    /// says remains ([`Self::with_cells_at_share`]), growing back at
    /// [`Self::REJOIN_SHARE_RATE`] from now (its latest time).
    pub fn rejoined(mut self, cap: f64) -> Self {
        if self.share > cap {
            self.share = cap;
            self.share_rate = Self::REJOIN_SHARE_RATE;
            self.grown_us = self.seen_us;
        }
        self.with_cells_at_share()
    }

    /// This budget with cells that hold only its share of their capacity, whose level
    /// the room the server says remains only ever lowers, until the share is whole
    /// again: at a quarter, a quarter of what is free and of what comes back, not the
    /// whole burst at a quarter of the pace (a share that changes then moves neither the
    /// level in time nor the room), nor room other processes see too.
    pub fn with_cells_at_share(mut self) -> Self {
        if self.share < 1.0 {
            self.cells_at_share = 1;
        }
        self
    }

    /// The same budget on another clock: every time moved so that `from_us` of this
    /// state's clock falls on `to_us`.
    pub fn rebased(&self, from_us: u64, to_us: u64) -> Self {
        let mut s = self.clone();
        if to_us >= from_us {
            s.shift_times(to_us - from_us, true);
        } else {
            s.shift_times(from_us - to_us, false);
        }
        s
    }

    /// Whether every value is one this arithmetic can have made (a state read from a
    /// store is checked before it is used).
    pub fn is_valid(&self) -> bool {
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        [
            self.req_us,
            self.req_cap,
            self.tok_us,
            self.tok_cap,
            self.share,
            self.share_rate,
            self.comp_mean,
            self.comp_dev,
            self.cpt,
            self.rate,
            self.max_rate,
            self.probe_step,
            self.held_rate,
            self.hold_x,
            self.meter_rate,
        ]
        .into_iter()
        .all(finite)
            && self.share <= 1.0
            && self.req_cap >= 1.0
            && self.tok_cap >= 1.0
            && self.procs.len() <= 4 * MAX_PROCS
    }

    /// The `now` an operation runs at. One a little behind the latest seen (callers
    /// racing for the budget) counts as the latest. A clock stepped backwards (by
    /// [`Self::CLOCK_STEP_US`] or more) shifts every stored time by the step, so waits
    /// keep their length; a clock stepped forwards finds the cells full, as after an
    /// idle time.
    fn advance(&mut self, now: u64) -> u64 {
        if now < self.seen_us {
            let back = self.seen_us - now;
            if back < Self::CLOCK_STEP_US {
                return self.seen_us;
            }
            self.shift_times(back, false);
        }
        if now >= self.seen_us.saturating_add(60 * MICROS) {
            // A minute without any operation: whatever was out is gone.
            self.out = 0;
        }
        self.seen_us = now;
        now
    }

    /// The effective share: the fleet's share less the margin (announced and configured
    /// limits only).
    fn eff(&self) -> f64 {
        match self.source {
            Source::Learned => 1.0,
            _ => (self.share * (1.0 - Self::MARGIN)).max(0.01),
        }
    }

    /// The share of the cells' capacity the fleet holds, and of the room the server says
    /// remains: its share of the limits while its cells are at its share
    /// ([`Self::with_cells_at_share`], announced and configured limits only), else all.
    fn cell_share(&self) -> f64 {
        if self.cells_at_share == 1 && self.source != Source::Learned {
            self.share.clamp(0.01, 1.0)
        } else {
            1.0
        }
    }

    /// Requests the request cell holds at the fleet's share (at least 1).
    pub(crate) fn req_cap_eff(&self) -> f64 {
        (self.req_cap * self.cell_share()).max(1.0)
    }

    /// Tokens the token cell holds at the fleet's share (at least 1).
    pub(crate) fn tok_cap_eff(&self) -> f64 {
        (self.tok_cap * self.cell_share()).max(1.0)
    }

    /// µs per request at the current pace (0: no request limit).
    pub fn req_period_us(&self) -> f64 {
        if self.req_us > 0.0 {
            self.req_us / self.eff()
        } else {
            0.0
        }
    }

    /// µs per token at the current pace (0: no token limit).
    pub fn tok_period_us(&self) -> f64 {
        if self.tok_us > 0.0 {
            self.tok_us / self.eff()
        } else {
            0.0
        }
    }

    /// Whether calls go one probe at a time: the limits are unknown, or the budget
    /// recovers from a congestion event.
    fn probing(&self) -> bool {
        self.source == Source::Unknown || self.recovering == 1
    }

    /// The earliest time a request of `tokens` fits, with `hold_req` requests and
    /// `hold_tok` tokens kept for others; and what binds it.
    fn fit_time(&self, now: u64, tokens: u64, hold_req: f64, hold_tok: f64) -> (u64, Binding) {
        let mut fit = now;
        let mut binding = Binding::None;
        let rp = self.req_period_us();
        if rp > 0.0 {
            let need = 1.0 + hold_req;
            let at = self.req_tat_us as f64 + (need - self.req_cap_eff()) * rp;
            let at = self.by_window_round(now, at.max(0.0) as u64);
            if at > fit {
                fit = at;
                binding = if hold_req > 0.0 {
                    Binding::Priority
                } else {
                    Binding::Requests
                };
            }
        }
        let tp = self.tok_period_us();
        if tp > 0.0 {
            let cost = tokens as f64;
            let cap = self.tok_cap_eff();
            let at = if cost > cap {
                // Larger than the cell: it goes when the cell is full, and leaves a debt.
                self.tok_tat_us as f64 + hold_tok * tp
            } else {
                self.tok_tat_us as f64 + (cost + hold_tok - cap) * tp
            };
            let at = at.max(0.0) as u64;
            if at > fit {
                fit = at;
                binding = if hold_tok > 0.0 && binding != Binding::Requests {
                    Binding::Priority
                } else {
                    Binding::Tokens
                };
            }
        }
        if self.pause_until_us > fit {
            fit = self.pause_until_us;
            binding = Binding::Pause;
        }
        (fit, binding)
    }

    /// When the request cell lets the next call go (`at`, by its model, which refills
    /// continuously), corrected by the round of the announced window last seen fresh,
    /// both ways:
    /// - sooner: a probe held past that round goes at it, as a cell announced per window
    ///   has come back whole one window after it was fresh (a fixed window has come
    ///   round, a bucket has refilled a window's worth). Taken from the last refusal,
    ///   each window's probe went later than the last, drifting through the server's
    ///   windows until one went unused;
    /// - later: in a window known not to refill (`windowed`), once as many went since the
    ///   answer that showed it fresh as that answer said remained, nobody goes before the
    ///   round, though the answer that says 0 is not back yet (the pace let one more go a
    ///   unit after the burst: one 429 a window).
    fn by_window_round(&self, now: u64, at: u64) -> u64 {
        if self.source != Source::Headers || self.fresh_us == 0 || self.req_us <= 0.0 {
            return at;
        }
        let window = (self.req_us * self.req_cap) as u64;
        let margin = (window as f64 * Self::MARGIN) as u64;
        let round = self.fresh_us.saturating_add(window).saturating_add(margin);
        if self.windowed == 1
            && self.fresh_seq > 0
            && now < round
            && self.seq.saturating_sub(self.fresh_seq) >= self.fresh_left
        {
            return at.max(round);
        }
        if self.recovering == 1 && now < self.fresh_us.saturating_add(2 * window) {
            at.min(round)
        } else {
            at
        }
    }

    /// Takes one request of `tokens` from the cells at `at` (its admission time).
    fn take(&mut self, at: u64, tokens: u64) {
        let rp = self.req_period_us();
        if rp > 0.0 {
            self.req_tat_us = (self.req_tat_us.max(at) as f64 + rp).ceil() as u64;
        }
        let tp = self.tok_period_us();
        if tp > 0.0 {
            self.tok_tat_us = (self.tok_tat_us.max(at) as f64 + tokens as f64 * tp).ceil() as u64;
        }
    }

    /// µs one request of `tokens` takes at the current pace: the longer of its request
    /// and its tokens (0: no limit known).
    fn unit_us(&self, tokens: u64) -> f64 {
        self.req_period_us()
            .max(tokens as f64 * self.tok_period_us())
    }

    /// Admits what it can of `op`'s candidates at `now` (see the module docs).
    pub fn admit(&mut self, now: u64, op: &AdmitOp) -> AdmitAnswer {
        let now = self.advance(now);
        let n = op.candidates.len();
        self.procs.retain(|p| p.until_us > now);
        if self.block != Block::None {
            if now < self.block_until_us {
                let mut answer = AdmitAnswer::waiting(n, self.block_until_us - now);
                answer.decisions = vec![Decision::Closed(self.block); n];
                return answer;
            }
            // Let one call probe whether the block has lifted.
            self.block_until_us = now.saturating_add(Self::BLOCK_US);
            self.probe_until_us = 0;
            self.recovering = 1;
        }
        let tokens: Vec<u64> = op.candidates.iter().map(|c| self.estimate(c)).collect();
        let mut others = [0u64; 3];
        for p in self.procs.iter().filter(|p| p.id != op.proc_id) {
            for (o, w) in others.iter_mut().zip(p.waiting) {
                *o = o.saturating_add(w);
            }
        }
        // What another caller is assumed to need: the budget's learned mean, or, when
        // every request in hand says nothing of its size (raw sends, an OCR model's
        // pages), the mean of their own estimates: a budget that counts pages must not
        // assume a chat completion's tokens per caller.
        let sizeless = n > 0 && op.candidates.iter().all(|c| c.size == Sizing::default());
        let mean_tokens = match sizeless {
            true => tokens.iter().sum::<u64>() as f64 / n as f64,
            false => self.mean_tokens(),
        };
        let mut decisions = vec![Decision::Wait; n];
        let mut admitted = [0u64; 3];
        let mut next_in_us = 0;
        let mut binding = Binding::None;
        loop {
            let waiting = |d: &[Decision], i: usize| d[i] == Decision::Wait;
            let Some(first) = (0..n).find(|i| waiting(&decisions, *i)) else {
                break;
            };
            let first_lane = op.candidates[first].lane.min(2);
            // A lower lane whose reserved share is due goes ahead of higher ones.
            let share_pick = (first_lane + 1..3).find_map(|lane| {
                let due =
                    op.reserve_ppm[lane as usize] > 0 && self.lane_share_us[lane as usize] <= now;
                let i = (0..n)
                    .find(|i| waiting(&decisions, *i) && op.candidates[*i].lane.min(2) == lane);
                i.filter(|_| due)
            });
            let pick = share_pick.unwrap_or(first);
            if self.conc_full(now) {
                // As many in flight as the server admits: the next answer (which wakes
                // the line) makes room.
                next_in_us = Self::CONC_RECHECK_US;
                binding = Binding::Concurrency;
                break;
            }
            let c: &Candidate = &op.candidates[pick];
            let lane = c.lane.min(2) as usize;
            let others_higher: u64 = others[..lane].iter().sum();
            let share_due = op.reserve_ppm[lane] > 0 && self.lane_share_us[lane] <= now;
            let hold_req = if share_due { 0 } else { others_higher };
            let (mut fit, mut bind) = self.fit_time(
                now,
                tokens[pick],
                hold_req as f64,
                hold_req as f64 * mean_tokens,
            );
            if self.probing() && self.probe_until_us > now {
                // A probe is out: wait for its answer (or its timeout).
                fit = fit.max(self.probe_until_us);
                bind = Binding::Probe;
            }
            // A window that opened: its lump goes at once; the pace holds meanwhile.
            let lumped = self.lump_goes(now);
            if lumped {
                fit = now;
            } else {
                let until = self.lump_holds(now);
                if until > fit {
                    fit = until;
                    bind = Binding::Probe;
                }
            }
            if fit > now {
                self.binding = 1;
            }
            let wait = fit - now;
            if wait > c.within_us {
                decisions[pick] = Decision::Late { after_us: wait };
                continue;
            }
            if wait > op.horizon_us {
                next_in_us = wait;
                binding = bind;
                break;
            }
            if lumped {
                self.lump_left -= 1;
                self.lump_sent += 1;
            } else {
                // Charged as of when it may go at the latest (a budget left full until
                // then fills no further).
                self.take(fit.max(now.saturating_add(op.late_us)), tokens[pick]);
            }
            self.seq += 1;
            self.tok_mark = self.tok_mark.saturating_add(tokens[pick]);
            self.out += 1;
            if self.run_n > 0 && now <= self.run_at_us.saturating_add(Self::RUN_GAP_US) {
                self.run_n += 1;
            } else {
                self.run_n = 1;
                self.run_seq = self.seq;
                self.run_rem = u64::MAX;
            }
            self.run_at_us = self.run_at_us.max(now);
            decisions[pick] = Decision::Go {
                wait_us: wait,
                ticket: Ticket {
                    epoch: self.epoch,
                    seq: self.seq,
                    tokens: tokens[pick],
                    tok_mark: self.tok_mark,
                    lane: lane as u64,
                    // The admissions of its run still out (this operation's before
                    // it included) may reach the server after it.
                    lead: (self.out - 1).min(self.run_n - 1),
                    in_flight: self.out,
                },
            };
            admitted[lane] += 1;
            let contention = others_higher > 0
                || (0..n)
                    .any(|i| waiting(&decisions, i) && op.candidates[i].lane.min(2) < lane as u64);
            if contention && lane > 0 && op.reserve_ppm[lane] > 0 {
                let cost = self.unit_us(tokens[pick]) * 1e6 / op.reserve_ppm[lane] as f64;
                let from = self.lane_share_us[lane].max(now);
                self.lane_share_us[lane] = from.saturating_add(cost as u64);
            }
            if self.probing() {
                // This one is the probe: the others wait for its answer.
                self.probe_until_us = now.saturating_add(Self::PROBE_TIMEOUT_US);
                self.probe_at_us = now;
                self.probe_seq = self.seq;
                if (0..n).any(|i| decisions[i] == Decision::Wait) {
                    next_in_us = Self::PROBE_TIMEOUT_US;
                    binding = Binding::Probe;
                }
                break;
            }
        }
        self.record_demand(now, op, admitted, next_in_us);
        AdmitAnswer {
            decisions,
            next_in_us,
            unit_us: self.unit_us(mean_tokens as u64).ceil() as u64,
            binding,
        }
    }

    /// Keeps `op`'s process's demand record: its callers still waiting, per lane.
    fn record_demand(&mut self, now: u64, op: &AdmitOp, admitted: [u64; 3], next_in_us: u64) {
        let mut waiting = op.waiting;
        for (w, a) in waiting.iter_mut().zip(admitted) {
            *w = w.saturating_sub(a);
        }
        self.procs.retain(|p| p.id != op.proc_id);
        if waiting.iter().any(|w| *w > 0) {
            let next = next_in_us.min(op.ask_gap_us).max(1);
            self.procs.push(ProcRecord {
                id: op.proc_id,
                until_us: now
                    .saturating_add(next)
                    .saturating_add(Self::DEMAND_GRACE_US),
                waiting,
            });
            if self.procs.len() > MAX_PROCS {
                self.procs.sort_by_key(|p| std::cmp::Reverse(p.until_us));
                self.procs.truncate(MAX_PROCS);
            }
        }
    }

    /// Learns from one response report at `now` (see the module docs).
    pub fn report(&mut self, now: u64, op: &ReportOp) {
        let now = self.advance(now);
        self.learn_limits(now, op);
        self.learn_estimates(op);
        self.correct_tokens(op);
        if op.ticket.is_some() && op.signal != Signal::Usage {
            self.out = self.out.saturating_sub(1);
            self.report_us = self.report_us.max(now);
        }
        // A refusal of an attempt admitted before the last congestion event belongs to
        // that event (a report without a ticket counts as current).
        let current = op.ticket.is_none_or(|t| t.epoch >= self.epoch);
        match op.signal {
            Signal::Success => {
                if self.source == Source::Unknown {
                    // The first answer carried no limits: learn the rate.
                    self.become_learned(now, false);
                }
                self.block = Block::None;
                self.conc_success(now, op.ticket);
                self.meter(now);
                // A lump's answers do not end a pause (they are late, not probes).
                if !self.lump_answer(now, op.ticket, LumpAnswer::Success) {
                    // Under announced limits only a probe's success ends the recovery:
                    // an attempt admitted before the event may have been counted before
                    // the refusal (a window's last unit), and would let a crowd go.
                    let ends = current || self.source == Source::Learned;
                    if self.recovering == 1 && ends {
                        self.end_recovery(now, current);
                    } else if current {
                        self.window_success(now);
                    }
                }
                self.cycle_count += 1;
                self.grow(now);
                if self.source == Source::Headers {
                    self.read_remaining(now, op);
                }
            }
            Signal::WindowSpent {
                wait_us,
                window_us,
                tokens,
            } => {
                if self.source == Source::Headers {
                    self.read_levels(now, op);
                    if self.spent_us == 0 && !tokens {
                        // The window seen spent first by a refusal (the answer that said
                        // nothing was left not read yet): a probe refused one unit later
                        // says it does not refill continuously.
                        self.spent_us = now;
                        self.spent_seq = self.seq;
                    }
                }
                let spared = self.lump_answer(now, op.ticket, LumpAnswer::Refused)
                    || self.start_burst(op.ticket);
                self.refusal(now, wait_us, window_us, tokens, current, spared);
            }
            Signal::RateLimited { wait_us } => {
                if self.source == Source::Unknown {
                    self.become_learned(now, true);
                }
                let spared = self.lump_answer(now, op.ticket, LumpAnswer::Refused)
                    || self.start_burst(op.ticket);
                // A window's lump or the start's few at once say nothing of a
                // concurrency limit.
                let conc = match spared || self.refill == Refill::Window {
                    true => ConcRefusal::Rate,
                    false => self.conc_refusal(now, op.ticket),
                };
                if conc == ConcRefusal::Rate {
                    self.refusal(now, wait_us, 0, false, current, spared);
                }
            }
            Signal::NoAllowance => self.close(now, Block::NoAllowance),
            Signal::MonthlyQuota => self.close(now, Block::MonthlyQuota),
            Signal::Usage => {}
            Signal::Other => {
                self.lump_answer(now, op.ticket, LumpAnswer::Other);
                // A probe that failed for another reason (a 5xx, a reset) is back: the
                // next caller may probe at once.
                if self.probing() {
                    self.probe_until_us = now;
                }
            }
        }
    }

    /// The tokens `op`'s answer says the attempt used, against what it was charged: the
    /// difference is given back (or taken) at once.
    fn correct_tokens(&mut self, op: &ReportOp) {
        let Some(used) = op.used_tokens else {
            return;
        };
        let tp = self.tok_period_us();
        if tp <= 0.0 {
            return;
        }
        let charged = op.ticket.map_or(op.estimated_tokens, |t| t.tokens);
        let delta = (used as f64 - charged as f64) * tp;
        self.tok_tat_us = (self.tok_tat_us as f64 + delta).max(0.0) as u64;
    }
}
