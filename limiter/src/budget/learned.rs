//! A rate learned from 429s when nothing is announced or configured: a slow start
//! clocked by the answers, then a bracket between the highest rate that held and the
//! lowest refused (a refusal goes back to the one that held, a hold tries their middle),
//! and once the two meet, rare upward probes whose step doubles while nothing refuses.

use super::{BudgetState, MICROS, Source};

impl BudgetState {
    /// The learned rate a budget starts from, per second.
    pub const LEARN_START: f64 = 2.0;
    /// The lowest learned rate, per second.
    pub const LEARN_MIN: f64 = 0.01;
    /// The highest learned rate, per second.
    pub const LEARN_MAX: f64 = 100_000.0;
    /// Up to this rate, per second, a slow start doubles at each success (clocked by the
    /// answers); above it, at most every [`Self::SLOW_START_STEP_US`] and only while what
    /// is delivered keeps up.
    pub const QUICK_START: f64 = 16.0;
    /// How long a learned rate holds, after it settled or grew, before it probes higher:
    /// at least this long…
    pub const HOLD_US: u64 = MICROS;
    /// …and at least this many of its intervals (a refused probe costs one attempt in
    /// this many, whatever the rate).
    pub const HOLD_UNITS: f64 = 16.0;
    /// At most this many holds between probes refused at the same rate.
    pub const HOLD_X_MAX: f64 = 8.0;
    /// A rate within this part of the refused one has found the limit: from there it
    /// probes by small steps, not by halving the gap.
    pub const BRACKET: f64 = 0.05;
    /// While slow-starting, the learned rate doubles at most this often.
    pub const SLOW_START_STEP_US: u64 = 100_000;

    /// After a first answer that succeeded without limits, this many more may go at
    /// once (with the probe, a few in flight), then the pace starts.
    pub const LEARN_BURST: f64 = 3.0;

    /// The first answer showed no limits: pace at the starting rate and slow-start. A
    /// success lets [`Self::LEARN_BURST`] go at once first; a refusal does not.
    pub(super) fn become_learned(&mut self, now: u64, refused: bool) {
        self.source = Source::Learned;
        self.share = 1.0;
        self.slow_start = 1;
        self.max_rate = 0.0;
        self.grown_us = now;
        self.cycle_start_us = now;
        self.cycle_count = 0;
        self.meter_start_us = now;
        self.meter_count = 0;
        self.set_rate(Self::LEARN_START);
        if refused {
            // The probe was refused: the next request is paced after it.
            let next = now.saturating_add(self.req_period_us() as u64);
            self.req_tat_us = self.req_tat_us.max(next);
        } else {
            self.req_cap = Self::LEARN_BURST;
            self.req_tat_us = now;
            self.burst_seq = self.seq.saturating_add(Self::LEARN_BURST as u64);
        }
    }

    /// Whether `ticket` was one of the few let go at once after the first answer.
    pub(super) fn start_burst(&self, ticket: Option<mistral_core::Ticket>) -> bool {
        self.slow_start == 1 && ticket.is_some_and(|t| t.seq <= self.burst_seq)
    }

    pub(super) fn set_rate(&mut self, rate: f64) {
        let rate = rate.clamp(Self::LEARN_MIN, Self::LEARN_MAX);
        self.rate = rate;
        self.req_us = MICROS as f64 / rate;
        self.req_cap = 1.0;
    }

    /// A higher rate from `now` on: the next admission comes as much sooner as the
    /// pace is faster (the wait already paced at the old rate shrinks with it).
    fn raise_rate(&mut self, now: u64, rate: f64) {
        let old = self.req_period_us();
        let next = self.req_tat_us as f64 + (1.0 - self.req_cap) * old;
        self.set_rate(rate);
        let new = self.req_period_us();
        let now = now as f64;
        let next = if next > now && old > 0.0 {
            now + (next - now) * new / old
        } else {
            next
        };
        self.req_tat_us = (next + (self.req_cap - 1.0) * new).max(0.0) as u64;
    }

    pub(super) fn meter(&mut self, now: u64) {
        self.meter_count += 1;
        let span = now.saturating_sub(self.meter_start_us);
        if span >= MICROS {
            self.meter_rate = self.meter_count as f64 * MICROS as f64 / span as f64;
            self.meter_start_us = now;
            self.meter_count = 0;
        }
    }

    /// Successes per second lately: the best of the meter's current interval (once it
    /// spans a quarter of a second), its last full one, and the current delivery cycle
    /// (once it spans a second).
    fn delivered(&self, now: u64) -> f64 {
        let per_sec = |count: u64, span: u64| count as f64 * MICROS as f64 / span as f64;
        let span = now.saturating_sub(self.meter_start_us);
        let current = if span >= MICROS / 4 {
            per_sec(self.meter_count, span)
        } else {
            0.0
        };
        let cycle_span = now.saturating_sub(self.cycle_start_us);
        let cycle = if cycle_span >= MICROS {
            per_sec(self.cycle_count, cycle_span)
        } else {
            0.0
        };
        current.max(self.meter_rate).max(cycle)
    }

    /// A refusal of a learned rate. Refused above a rate that held, it goes back to that
    /// one (at least half the refused rate); refused where it held (the limit came
    /// down), it settles just under what the server really admitted (the successes per
    /// second lately, less 3 %), at most 93 % of the refused rate and at least half of
    /// it. Then it holds (see [`Self::HOLD_US`], [`Self::HOLD_UNITS`]) before it tries
    /// higher.
    pub(super) fn learned_decrease(&mut self, now: u64) {
        let rate = self.rate;
        self.slow_start = 0;
        // A probe refused just where the last one was: wait longer before the next.
        self.hold_x = if self.max_rate > 0.0 && (rate / self.max_rate - 1.0).abs() <= 0.05 {
            (self.hold_x.max(1.0) * 2.0).min(Self::HOLD_X_MAX)
        } else {
            1.0
        };
        self.max_rate = rate;
        if self.held_rate > 0.0 && self.held_rate < rate {
            // Refused above a rate that held: the limit lies between the two; back to
            // the one that held (grow then tries their middle).
            self.set_rate(self.held_rate.max(rate * 0.5));
        } else {
            // Refused at a rate that held: the limit came down.
            let delivered = self.delivered(now) * 0.97;
            self.set_rate(delivered.min(rate * 0.93).max(rate * 0.5));
            self.held_rate = 0.0;
        }
        self.probe_step = 0.0;
        self.grown_us = now;
    }

    /// The rate or the share grows while nothing is refused.
    pub(super) fn grow(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.grown_us.max(self.event_us));
        if self.source == Source::Learned
            && self.slow_start == 1
            && self.binding == 1
            && self.rate < Self::QUICK_START
        {
            // The first doublings are clocked by the answers (a few calls need no long
            // warm-up): each success while callers queue doubles a rate this low.
            self.held_rate = self.rate;
            self.raise_rate(now, (self.rate * 2.0).min(Self::QUICK_START));
            self.grown_us = now;
            self.binding = 0;
            return;
        }
        if self.source == Source::Learned {
            // Grow only a rate that callers queue for and that is really delivered (half
            // of it while slow-starting, 80 % after).
            let delivered = self.delivered(now);
            let used = if self.slow_start == 1 {
                delivered * 2.0 >= self.rate
            } else {
                delivered * 5.0 >= self.rate * 4.0
            };
            if self.binding == 0 || !used {
                if elapsed >= MICROS {
                    self.grown_us = now;
                }
                return;
            }
            if self.slow_start == 1 {
                if elapsed >= Self::SLOW_START_STEP_US {
                    self.held_rate = self.rate;
                    self.raise_rate(now, self.rate * 2.0);
                    self.grown_us = now;
                    self.binding = 0;
                }
                return;
            }
            // Settled under the refused rate: hold, then probe upwards by a step that
            // doubles at each hold without a refusal (3 %, 6 %, 12 %… at most half), so a
            // raised limit is found within seconds and a steady one costs a refused probe
            // now and then, not a sawtooth.
            let bracketed = self.max_rate > self.rate * (1.0 + Self::BRACKET);
            let (least, units) = if bracketed && self.max_rate > self.rate * 1.25 {
                // Far under the refused rate: bisect quickly.
                (Self::HOLD_US as f64 / 2.0, Self::HOLD_UNITS / 4.0)
            } else {
                (Self::HOLD_US as f64, Self::HOLD_UNITS)
            };
            let mut hold = least.max(units * MICROS as f64 / self.rate);
            if !bracketed && self.probe_step == 0.0 {
                hold *= self.hold_x.max(1.0);
            } else if self.probe_step > 0.0 {
                // The last step up held: the limit is higher than thought; step again
                // twice as soon (a raised limit is found within seconds).
                hold /= 2.0;
            }
            if elapsed as f64 >= hold {
                // It held.
                self.held_rate = self.held_rate.max(self.rate);
                if bracketed {
                    // Below a refused rate by more than the bracket: try the middle.
                    self.raise_rate(now, (self.rate + self.max_rate) / 2.0);
                    self.probe_step = 0.0;
                } else {
                    let step = if self.probe_step > 0.0 {
                        (self.probe_step * 2.0).min(0.5)
                    } else {
                        0.03
                    };
                    self.raise_rate(now, self.rate * (1.0 + step));
                    self.probe_step = step;
                }
                self.grown_us = now;
                self.binding = 0;
            }
            return;
        }
        if elapsed >= MICROS / 10 && self.share < 1.0 {
            let rate = self.share_rate.max(Self::SHARE_RATE);
            self.share = (self.share + rate * elapsed as f64 / MICROS as f64).min(1.0);
            self.grown_us = now;
        }
        if self.share >= 1.0 {
            self.share_rate = Self::SHARE_RATE;
            self.cells_at_share = 0;
        }
    }
}
