//! A concurrency limit learned from 429s (nothing announced): a server that admits at
//! most K requests in flight refuses when the K+1st arrives, at any spacing. A rate
//! learned in its place (K ÷ latency) saws and follows every change of latency; a gate
//! on the attempts in flight does not.
//!
//! Told apart by the count in flight each attempt was admitted with
//! ([`mistral_core::Ticket::in_flight`]): refused with more in flight than any success
//! ever had, the server may admit at most that many; the gate then holds the attempts in
//! flight at it, beside the learned rate (which keeps pacing, and keeps learning). A
//! refusal with fewer in flight than the gate says it was no concurrency limit (or it
//! came down): the gate goes, and the refusal is a rate's like any other. One at the
//! gate lowers it by one and is a rate's too, so a misread rate limit never costs more
//! than the rate would have. Now and then (after [`BudgetState::CONC_HOLDS`] successes
//! at the gate, and at least a second) one more is let in flight: refused, the gate goes
//! back, with no pause and no lower rate, and the next try waits twice as long (up to 8
//! times: a steady limit costs one refused attempt in 16, then down to one in 128);
//! admitted, it stays. Until a first try is refused, tries go after each round at the
//! gate, each twice as large as the last (a climb: the count a refusal first showed may
//! be far short of the limit); a refused one sets the gate back to what held, and tries
//! of one more follow until one of them is refused.

use mistral_core::Ticket;

use super::{BudgetState, MICROS, Refill, Source};

/// What a refusal said of a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConcRefusal {
    /// Nothing: handled as a rate's refusal.
    Rate,
    /// The gate's own probe of one more in flight: no pause, no lower rate.
    Spared,
}

impl BudgetState {
    /// Successes at the gate (with as many in flight as it allows) before one more may
    /// go in flight, at least.
    pub const CONC_HOLDS: u64 = 16;
    /// The largest try of more in flight while climbing.
    pub const CONC_STEP_MAX: u64 = 64;
    /// A gate full this long without any answer forgets one attempt out (a caller that
    /// gave up without a word: a dropped future).
    pub const CONC_LEAK_US: u64 = 30 * MICROS;

    /// Whether the gate keeps a caller at `now` from going: as many in flight as the
    /// learned concurrency allows.
    pub(super) fn conc_full(&mut self, now: u64) -> bool {
        if self.conc_limit == 0 || self.source != Source::Learned || self.refill == Refill::Window {
            return false;
        }
        if self.out >= self.conc_limit && now >= self.report_us.saturating_add(Self::CONC_LEAK_US) {
            self.out = self.conc_limit - 1;
            self.report_us = now;
        }
        self.out >= self.conc_limit
    }

    /// A success of `ticket`: the most in flight a success had, and the gate's holds
    /// (one more in flight after enough of them).
    pub(super) fn conc_success(&mut self, now: u64, ticket: Option<Ticket>) {
        let Some(t) = ticket else {
            return;
        };
        self.conc_ok = self.conc_ok.max(t.in_flight);
        if self.conc_limit == 0 || self.source != Source::Learned {
            return;
        }
        if self.conc_probe == 1 && t.in_flight >= self.conc_limit {
            // The try was admitted: it stays (climbing, the next try is twice as large;
            // past the climb, it waits the least again).
            self.conc_probe = 0;
            self.conc_x = self.conc_x.min(1);
            self.conc_step = match self.conc_x {
                0 => (self.conc_step * 2).min(Self::CONC_STEP_MAX),
                _ => 1,
            };
            self.conc_holds = 0;
            self.conc_at_us = now;
            return;
        }
        if t.in_flight >= self.conc_limit {
            self.conc_holds += 1;
        }
        // Climbing (no try refused since the gate was set): one more after a round at
        // the gate; then after many, and at least a second.
        let (holds, least) = match self.conc_x {
            0 => (self.conc_limit, 0),
            x => (Self::CONC_HOLDS.max(4 * self.conc_limit) * x, MICROS),
        };
        if self.conc_probe == 0
            && self.conc_holds >= holds
            && now >= self.conc_at_us.saturating_add(least)
        {
            self.conc_limit += self.conc_step.max(1);
            self.conc_probe = 1;
            self.conc_holds = 0;
            self.conc_at_us = now;
        }
    }

    /// A refusal of `ticket` (a learned budget): what it says of a concurrency limit.
    pub(super) fn conc_refusal(&mut self, now: u64, ticket: Option<Ticket>) -> ConcRefusal {
        let Some(t) = ticket else {
            return ConcRefusal::Rate;
        };
        if self.source != Source::Learned {
            return ConcRefusal::Rate;
        }
        let n = t.in_flight;
        if self.conc_limit > 0 {
            let held = self.conc_limit.saturating_sub(self.conc_step.max(1)).max(1);
            if self.conc_probe == 1 && n > held {
                // More in flight than held: refused, back to what held. A climb's try of
                // several is followed by one of one more, at once; a try of one ends the
                // climb, and the next waits twice as long (at most 8 times).
                self.conc_limit = held;
                self.conc_x = match (self.conc_x, self.conc_step) {
                    (0, step) if step > 1 => 0,
                    (x, _) => (x * 2).clamp(1, 8),
                };
                self.conc_step = 1;
                self.conc_probe = 0;
                self.conc_holds = 0;
                self.conc_at_us = now;
                return ConcRefusal::Spared;
            }
            if n > self.conc_limit {
                // Let go before the gate was set (or a slot forgotten): the gate's.
                return ConcRefusal::Spared;
            }
            if n == self.conc_limit {
                // Refused at the gate: one fewer, and a rate's refusal too.
                self.conc_limit -= 1;
                self.conc_holds = 0;
                self.conc_at_us = now;
                return ConcRefusal::Rate;
            }
            // Refused with fewer in flight than the gate: no concurrency limit.
            self.conc_limit = 0;
            self.conc_probe = 0;
            self.conc_ok = 0;
            return ConcRefusal::Rate;
        }
        if self.conc_ok >= 1 && n > self.conc_ok {
            // Refused with more in flight than any success had: maybe at most that many
            // (climbing from there until a try of one more is refused).
            self.conc_limit = self.conc_ok;
            self.conc_probe = 0;
            self.conc_x = 0;
            self.conc_step = 1;
            self.conc_holds = 0;
            self.conc_at_us = now;
        }
        ConcRefusal::Rate
    }
}
