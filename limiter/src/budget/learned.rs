//! A rate learned from 429s when nothing is announced or configured: slow start tied
//! to delivery, a cautious cut at a refusal, then growth back towards and beyond the
//! refused rate.

use super::{BudgetState, MICROS, Source};

impl BudgetState {
    /// The learned rate a budget starts from, per second.
    pub const LEARN_START: f64 = 2.0;
    /// The lowest learned rate, per second.
    pub const LEARN_MIN: f64 = 0.01;
    /// The highest learned rate, per second.
    pub const LEARN_MAX: f64 = 100_000.0;
    /// While slow-starting, the learned rate doubles at most this often.
    pub const SLOW_START_STEP_US: u64 = 100_000;

    /// The first answer showed no limits: pace at the starting rate and slow-start.
    pub(super) fn become_learned(&mut self, now: u64) {
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
        // The probe just went: the next request is paced after it.
        let next = now.saturating_add(self.req_period_us() as u64);
        self.req_tat_us = self.req_tat_us.max(next);
    }

    pub(super) fn set_rate(&mut self, rate: f64) {
        let rate = rate.clamp(Self::LEARN_MIN, Self::LEARN_MAX);
        self.rate = rate;
        self.req_us = MICROS as f64 / rate;
        self.req_cap = 1.0;
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

    /// A refusal of a learned rate: it drops to what was delivered lately less 5 %,
    /// between CUBIC's β (70 %) and 90 % of the refused rate.
    pub(super) fn learned_decrease(&mut self, now: u64) {
        let rate = self.rate;
        self.slow_start = 0;
        self.max_rate = rate;
        let delivered = self.delivered(now) * 0.95;
        self.set_rate(delivered.min(rate * 0.9).max(rate * 0.7));
    }

    /// The rate or the share grows while nothing is refused.
    pub(super) fn grow(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.grown_us.max(self.event_us));
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
                    self.set_rate(self.rate * 2.0);
                    self.grown_us = now;
                    self.binding = 0;
                }
                return;
            }
            if elapsed >= MICROS / 10 {
                let dt = elapsed.min(MICROS) as f64 / MICROS as f64;
                let rate = self.rate;
                // 2 % per second at least.
                let probe = rate * 0.02 * dt;
                let inc = if rate < self.max_rate {
                    // Half the gap to the refused rate per second.
                    ((self.max_rate - rate) * dt / 2.0).max(probe)
                } else {
                    // Past it with nothing refused: the excess doubles every half second.
                    ((rate - self.max_rate) * dt * 2.0).max(probe)
                };
                self.set_rate(rate + inc);
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
        }
    }
}
