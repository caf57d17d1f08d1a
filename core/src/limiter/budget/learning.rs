//! A learned rate (no limits announced or configured): slow start, the success meter,
//! and the growth towards and beyond the refused rate.

use super::{BudgetState, FULL_SHARE, MICROS, Source, add, div, mul, sub};

impl BudgetState {
    /// The first answer showed no limits: pace at the starting rate and slow-start.
    pub(super) fn become_learned(&mut self, now: u64) {
        self.source = Source::Learned;
        self.share_ppm = FULL_SHARE;
        self.slow_start = 1;
        self.max_milli = 0;
        self.grown_us = now;
        self.cycle_start_us = now;
        self.cycle_count = 0;
        self.set_rate(Self::LEARN_START_MILLI);
        // The probe just went: the next request (of any lane) is paced after it.
        let next = add(now, self.req_period_us());
        self.req_tat_us = self.req_tat_us.max(next);
        self.lane1_req_us = self.lane1_req_us.max(next);
        self.lane0_req_us = self.lane0_req_us.max(next);
    }

    pub(super) fn set_rate(&mut self, rate_milli: u64) {
        let rate = rate_milli.clamp(Self::LEARN_MIN_MILLI, Self::LEARN_MAX_MILLI);
        self.rate_milli = rate;
        self.req_base_ns = div(1_000_000_000_000, rate);
    }

    pub(super) fn meter(&mut self, now: u64) {
        self.meter_count = add(self.meter_count, 1);
        let span = sub(now, self.meter_start_us);
        if span >= MICROS {
            self.meter_rate_milli = mul(self.meter_count, 1000 * MICROS) / span;
            self.meter_start_us = now;
            self.meter_count = 0;
        }
    }

    /// Successes per second lately, in thousandths: the best of the meter's current
    /// interval (once it spans a quarter of a second), its last full one, and the
    /// current delivery cycle (once it spans a second).
    pub(super) fn delivered_milli(&self, now: u64) -> u64 {
        let span = sub(now, self.meter_start_us);
        let current = if span >= MICROS / 4 {
            mul(self.meter_count, 1000 * MICROS) / span
        } else {
            0
        };
        let cycle_span = sub(now, self.cycle_start_us);
        let cycle = if cycle_span >= MICROS {
            mul(self.cycle_count, 1000 * MICROS) / cycle_span
        } else {
            0
        };
        current.max(self.meter_rate_milli).max(cycle)
    }

    /// The rate or the share grows while nothing is refused.
    pub(super) fn grow(&mut self, now: u64) {
        let elapsed = sub(now, self.grown_us.max(self.event_us));
        if self.source == Source::Learned {
            // Grow only a rate that callers queue for and that is really delivered (half
            // of it while slow-starting, 80 % after): an estimate must not run ahead of
            // what the server has been shown to admit.
            let delivered = self.delivered_milli(now);
            let used = if self.slow_start == 1 {
                mul(delivered, 2) >= self.rate_milli
            } else {
                mul(delivered, 5) >= mul(self.rate_milli, 4)
            };
            if self.binding == 0 || !used {
                if elapsed >= MICROS {
                    self.grown_us = now;
                }
                return;
            }
            if self.slow_start == 1 {
                if elapsed >= Self::SLOW_START_STEP_MICROS {
                    self.set_rate(mul(self.rate_milli, 2));
                    self.grown_us = now;
                    self.binding = 0;
                    // The schedule booked at the old rate starts over at the new one (the
                    // few slots already booked still go at their times).
                    self.req_tat_us = self.req_tat_us.min(add(now, self.req_period_us()));
                }
                return;
            }
            if elapsed >= MICROS / 10 {
                let dt = elapsed.min(MICROS);
                let rate = self.rate_milli;
                // 2 % per second, at least 1 thousandth.
                let probe = (mul(rate, dt) / (50 * MICROS)).max(1);
                let inc = if rate < self.max_milli {
                    // Half the gap to the refused rate per second.
                    (mul(self.max_milli - rate, dt) / (2 * MICROS)).max(probe)
                } else {
                    // Past it with nothing refused: the excess doubles every half second.
                    (mul(rate - self.max_milli, dt) / (MICROS / 2)).max(probe)
                };
                self.set_rate(add(rate, inc));
                self.grown_us = now;
                self.binding = 0;
            }
            return;
        }
        if elapsed >= MICROS / 10 && self.share_ppm < FULL_SHARE {
            self.share_ppm = add(self.share_ppm, elapsed / 100).min(FULL_SHARE);
            self.grown_us = now;
        }
    }
}
