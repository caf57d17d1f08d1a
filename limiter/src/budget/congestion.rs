//! Refusals: congestion events (pause everyone once, lower the rate or the share, one
//! probe at a time until one succeeds), their recovery, and closing the budget.

use mistral_core::limiter::Block;

use super::{BudgetState, MICROS, Refill, Source};

impl BudgetState {
    /// The longest pause between two refused probes (unless one unit is longer).
    pub const PROBE_PAUSE_CAP_US: u64 = MICROS / 2;
    /// A learned rate refused at most this part above the rate that held before it
    /// pauses one interval of that rate, not a probe's pause.
    pub const SMALL_STEP: f64 = 0.25;

    /// A refusal: the first of a congestion event pauses everyone, lowers the rate or
    /// the share and starts a recovery (one probe at a time); a refused probe doubles
    /// the pause (a learned rate refused a small step above one that held pauses one
    /// interval of that one); a refusal of an attempt admitted before the event changes nothing
    /// (`spared`: it says nothing of the rate, being one of a learned window's lump or
    /// of the few let go at once at the start).
    pub(super) fn refusal(
        &mut self,
        now: u64,
        wait_us: u64,
        window_us: u64,
        tokens: bool,
        current: bool,
        spared: bool,
    ) {
        if !current {
            return;
        }
        // A learned rate refused a small step above a rate that held: going back to that
        // one, the next may go one interval of it later (the refusal was the step's, not
        // a shut).
        let step = self.source == Source::Learned
            && self.refill != Refill::Window
            && self.recovering == 0
            && self.held_rate > 0.0
            && self.rate > self.held_rate
            && self.rate <= self.held_rate * (1.0 + Self::SMALL_STEP);
        if self.recovering == 1 {
            self.streak += 1;
            self.probe_until_us = now;
            // The probe out was refused: capacity was not back when it was admitted.
            self.probe_no_us = self.probe_at_us;
        } else {
            self.epoch += 1;
            self.recovering = 1;
            self.streak = 0;
            self.probe_until_us = now;
            self.event_us = now;
            self.decrease(now, spared);
        }
        if self.source == Source::Headers
            && self.spent_us > 0
            && window_us > 0
            && now >= self.spent_us.saturating_add(self.req_period_us() as u64)
        {
            // One unit after the window was spent it still refuses.
            self.windowed = 1;
        }
        let pause = if spared && self.lump_cap == 0 && self.slow_start == 1 {
            // The start's few at once refused: the server has no burst; the next goes
            // after a short pause, not a whole interval of the starting rate.
            (MICROS / 10).max(wait_us)
        } else if step {
            (self.req_period_us() as u64).max(wait_us)
        } else {
            self.recovery_pause(now, wait_us, window_us)
        };
        self.pause_until_us = self.pause_until_us.max(now.saturating_add(pause));
        // The refused cell is empty: after the pause, one unit comes back at a time
        // (the probe's answer tells the real level).
        let rp = self.req_period_us();
        if rp > 0.0 && !tokens {
            let empty = self.pause_until_us as f64 + (self.req_cap_eff() - 1.0) * rp;
            self.req_tat_us = self.req_tat_us.max(empty as u64);
        }
        let tp = self.tok_period_us();
        if tp > 0.0 && tokens {
            let empty = now as f64 + self.tok_cap_eff() * tp;
            self.tok_tat_us = self.tok_tat_us.max(empty as u64);
        }
    }

    /// How long everyone waits before the next probe.
    fn recovery_pause(&self, now: u64, wait_us: u64, window_us: u64) -> u64 {
        let period = self.req_period_us() as u64;
        let base = period.max(MICROS / 10);
        let cap = period.max(Self::PROBE_PAUSE_CAP_US);
        let mut pause = base;
        for _ in 0..self.streak.min(32) {
            pause = pause.saturating_mul(2).min(cap);
        }
        let mut pause = pause.max(wait_us);
        if self.streak == 0 {
            // A learned window spent: nobody probes before it comes round.
            pause = pause.max(self.until_window_opens(now));
        }
        if self.source == Source::Headers
            && self.anchor_us > 0
            && window_us > 0
            && (self.windowed == 1
                || (self.spent_us > 0 && now >= self.spent_us.saturating_add(period)))
        {
            // One unit after the window was spent it still refuses: it does not refill
            // continuously. Wait for the window seen to start to come round.
            let round = self
                .anchor_us
                .saturating_add(window_us)
                .saturating_sub(now)
                .min(window_us);
            pause = pause.max(round);
        }
        pause.min(Self::BLOCK_US)
    }

    fn decrease(&mut self, now: u64, spared: bool) {
        self.share_rate = Self::SHARE_RATE;
        match self.source {
            Source::Learned => {
                // A window's lump refused or a window spent says how much it holds, not
                // how fast capacity comes back; the start's few at once, that there is
                // no burst.
                if spared {
                    // No burst: one at a time from when the next was due.
                    let rp = self.req_period_us();
                    let next = self.req_tat_us as f64 - (self.req_cap - 1.0) * rp;
                    self.req_tat_us = next.max(0.0) as u64;
                    self.req_cap = 1.0;
                } else if !self.window_spent() {
                    self.learned_decrease(now);
                }
            }
            _ => {
                self.share = if self.spent_us == 0 {
                    // A refusal the model did not expect: someone else spends the budget.
                    (self.share * 0.9).max(0.05)
                } else {
                    // Refused one unit after the window was spent: paced requests reach the
                    // server closer together than they left, or the window does not
                    // refill. A little more room, won back at 1 % per second.
                    (self.share * 0.97).max(0.7)
                };
            }
        }
    }

    /// A success while recovering: the event is over. When capacity took more than a
    /// second, or a quarter of the cycle, to come back (a window or a log, not a rate),
    /// what the cycle delivered becomes the learned rate and a lump may go. Only an attempt admitted since the event (`current`: a probe) closes
    /// the cycle; an earlier one answered late ends the pause but says nothing of when
    /// capacity came back.
    pub(super) fn end_recovery(&mut self, now: u64, current: bool) {
        self.recovering = 0;
        self.streak = 0;
        self.probe_until_us = 0;
        if self.source != Source::Learned || !current {
            return;
        }
        let span = now.saturating_sub(self.cycle_start_us);
        let shut = now.saturating_sub(self.event_us);
        let long = if self.refill == Refill::Window {
            // A learned window: a shut of a quarter of it is its own.
            let quarter = if self.win_len_us > 0 {
                self.win_len_us / 4
            } else {
                MICROS
            };
            shut >= MICROS.min(quarter)
        } else {
            shut as f64 >= (MICROS as f64).max(Self::LONG_SHUT_UNITS * self.req_period_us())
                || self.shut_is_servers(shut, span)
        };
        if long {
            // Shut longer than any pace explains: maybe a window; its lump may go.
            self.window_opened(now);
        }
        // A shut of a second, or of a quarter of the cycle or more, is the server's, not
        // the pause's: what the cycle delivered is the rate it admits (a sliding log paced
        // above its rate holds until its log is full, then shuts). A learned window's
        // count and length pace it, not a rate; a cycle of a few successes measures
        // nothing.
        if self.refill != Refill::Window
            && (shut >= MICROS || self.shut_is_servers(shut, span))
            && span >= MICROS
            && self.cycle_count >= Self::LUMP_MIN
        {
            let cycle = self.cycle_count as f64 * MICROS as f64 / span as f64;
            if cycle < self.rate {
                self.set_rate(cycle);
                self.max_rate = self.max_rate.min(self.rate / 0.9);
            }
        }
        self.cycle_start_us = now;
        self.cycle_count = 0;
    }

    /// Whether a shut of `shut` µs in a cycle of `span` is the server's, not the pause's:
    /// a quarter of the cycle or more, and longer than 4 intervals.
    fn shut_is_servers(&self, shut: u64, span: u64) -> bool {
        shut.saturating_mul(4) >= span
            && shut as f64 >= Self::LONG_SHUT_UNITS * self.req_period_us()
    }

    /// A zero allowance or a spent monthly quota: closed for everyone for a while.
    pub(super) fn close(&mut self, now: u64, block: Block) {
        self.block = block;
        self.block_until_us = now.saturating_add(Self::BLOCK_US);
    }
}
