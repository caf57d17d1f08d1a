//! What responses say about the window and refusals: `remaining` read as credit and as
//! a spent or fresh window, congestion events (pause, void, probe), their recovery, the
//! hold after a spent window, and closing the budget.

use super::{Block, BudgetState, FULL_SHARE, MICROS, ReportOp, Source, add, mul, sub};

impl BudgetState {
    /// What a success's `remaining` says (announced limits only): how many may go at
    /// once, whether the window is spent, whether it looks fresh.
    pub(super) fn read_remaining(&mut self, now: u64, op: &ReportOp) {
        let Some(remaining) = op.req_remaining else {
            return;
        };
        // Answers come back out of order: only the latest booking's is the server's
        // latest word (a report without a ticket counts as the latest).
        let seq = op.ticket.map_or(self.seq, |t| t.seq);
        if seq < self.credit_seq {
            // An earlier booking's answer, except when it says nothing is left and
            // nothing is left of the latest word's credit either: the server counted
            // that request after the latest one (within a window `remaining` only
            // falls), so the window is spent now.
            if remaining > 0 || self.credit > 1 {
                return;
            }
        } else {
            self.credit_seq = seq;
        }
        let window_us = mul(op.req_window_secs, MICROS);
        if self.spent_us > 0 && remaining > 0 && now < add(self.anchor_us, window_us) {
            // Room again before the window came round: it refills continuously.
            self.windowed = 0;
        }
        if op.req_limit > 0 && add(remaining, 1) >= op.req_limit {
            // A fresh window starts here.
            self.anchor_us = now;
            self.fresh_us = now;
        } else if self.spent_us > 0 && remaining > 0 {
            // Room again after a spent window: what comes back now, a sliding log gives
            // back one window later.
            self.anchor_us = now;
        }
        // Everything booked after this request spends the same `remaining`; of a burst,
        // the last unit is left to pacing (requests booked in one order may reach the
        // server in another).
        // Everything booked after it, and everything still out from before it (it may
        // reach the server later), spends the same `remaining`.
        let credit = sub(remaining, sub(self.seq, seq).max(self.pending));
        self.credit = if credit >= 2 { credit - 1 } else { credit };
        if remaining == 0 {
            if self.spent_us == 0 {
                self.spent_us = now;
            }
            self.credit = 0;
            // Only a booking made after this answer can show room again: an earlier
            // one's answer with room left was counted before this one.
            self.credit_seq = self.credit_seq.max(self.seq);
            self.hold_one_unit(now);
            if self.windowed == 1
                && self.fresh_us > 0
                && window_us > 0
                && now < add(self.fresh_us, window_us)
            {
                // A fresh window spent, in a window that does not refill: nobody goes
                // before it comes round (with the margin for the clocks), and slots
                // booked before now are void. (Capacity that comes back a little at a
                // time, as a sliding log's does, is paced one unit at a time instead.)
                let margin = mul(window_us, Self::MARGIN_PPM) / FULL_SHARE;
                let round = sub(add(add(self.fresh_us, window_us), margin), now).min(window_us);
                if add(now, round) > self.pause_until_us {
                    self.pause_until_us = add(now, round);
                    self.epoch = add(self.epoch, 1);
                }
                self.req_tat_us = self.req_tat_us.max(self.pause_until_us);
                // Then one probe: its answer tells how much the new window offers, and
                // the callers, not asleep in paced slots, take it at once.
                self.recovering = 1;
                self.streak = 0;
                self.probe_until_us = 0;
            }
        } else {
            self.spent_us = 0;
        }
    }

    /// What a success's token `remaining` says (announced limits only): how many tokens
    /// may go at once. Read before [`BudgetState::read_remaining`], which moves
    /// `credit_seq`.
    pub(super) fn read_token_remaining(&mut self, op: &ReportOp) {
        let Some(remaining) = op.tok_remaining else {
            return;
        };
        if self.tok_base_ns == 0 {
            return;
        }
        let seq = op.ticket.map_or(self.seq, |t| t.seq);
        if seq < self.credit_seq {
            // An earlier booking's answer: only "nothing left" is news.
            if remaining == 0 {
                self.tok_credit = 0;
            }
            return;
        }
        if op.req_remaining.is_none() {
            self.credit_seq = seq;
        }
        // Everything booked after this request and everything still out spends the same
        // `remaining`, each about as much as this request; one request's worth is left
        // to pacing.
        let out = add(sub(self.seq, seq).max(self.pending), 1);
        self.tok_credit = sub(remaining, mul(out, op.estimated_tokens.max(1)));
    }

    /// A refusal: the first of a congestion event pauses everyone, voids earlier
    /// bookings, lowers the rate or the share and starts a recovery (one probe at a
    /// time); a refused probe doubles the pause; a refusal of a booking made before the
    /// event changes nothing.
    pub(super) fn refusal(&mut self, now: u64, wait_us: u64, window_us: u64, current: bool) {
        self.credit = 0;
        self.tok_credit = 0;
        if !current {
            return;
        }
        if self.recovering == 1 {
            self.streak = add(self.streak, 1);
            self.probe_until_us = now;
        } else {
            self.epoch = add(self.epoch, 1);
            self.recovering = 1;
            self.streak = 0;
            self.probe_until_us = now;
            self.event_us = now;
            self.decrease(now);
        }
        if self.source == Source::Headers
            && self.spent_us > 0
            && window_us > 0
            && now >= add(self.spent_us, self.req_period_us())
        {
            // One unit after the window was spent it still refuses.
            self.windowed = 1;
        }
        let pause = self.recovery_pause(now, wait_us, window_us);
        self.pause_until_us = self.pause_until_us.max(add(now, pause));
        // A fresh schedule after the pause: the void bookings queue again.
        self.req_tat_us = self.pause_until_us;
    }

    /// How long everyone waits before the next probe.
    pub(super) fn recovery_pause(&self, now: u64, wait_us: u64, window_us: u64) -> u64 {
        let period = self.req_period_us();
        let base = period.max(MICROS / 10);
        let cap = period.max(Self::PROBE_PAUSE_CAP_MICROS);
        let mut pause = base;
        for _ in 0..self.streak.min(32) {
            pause = mul(pause, 2).min(cap);
        }
        let mut pause = pause.max(wait_us);
        if self.source == Source::Headers
            && self.anchor_us > 0
            && window_us > 0
            && (self.windowed == 1 || (self.spent_us > 0 && now >= add(self.spent_us, period)))
        {
            // One unit after the window was spent it still refuses: it does not refill
            // continuously. Wait for the window seen to start to come round.
            let round = sub(add(self.anchor_us, window_us), now).min(window_us);
            pause = pause.max(round);
        }
        pause.min(Self::BLOCK_MICROS)
    }

    pub(super) fn decrease(&mut self, now: u64) {
        match self.source {
            Source::Learned => {
                let rate = self.rate_milli;
                self.slow_start = 0;
                // The refused rate (growth follows delivery, so it is one that was sent).
                self.max_milli = rate;
                let delivered = mul(self.delivered_milli(now), 95) / 100;
                // What got through, less 5 %, between CUBIC's β and 90 % of the rate.
                let new = delivered.min(mul(rate, 9) / 10).max(mul(rate, 7) / 10);
                self.set_rate(new);
            }
            _ => {
                if self.spent_us == 0 {
                    // A refusal the model did not expect: someone else spends the budget.
                    self.share_ppm = (mul(self.share_ppm, 9) / 10).max(FULL_SHARE / 20);
                } else {
                    // Refused one unit after the window was spent: the requests paced at
                    // the announced rate reach the server closer together than they left
                    // (scheduling, the network), or the window does not refill. A little
                    // more room between them, won back at 1 % per second.
                    self.share_ppm = (mul(self.share_ppm, 97) / 100).max(FULL_SHARE * 7 / 10);
                }
            }
        }
    }

    /// A success while recovering: the event is over, pacing resumes. When capacity took
    /// more than a second to come back (a window, not a rate), what the cycle delivered
    /// becomes the learned rate.
    pub(super) fn end_recovery(&mut self, now: u64) {
        self.recovering = 0;
        self.streak = 0;
        self.probe_until_us = 0;
        self.req_tat_us = self.req_tat_us.max(now);
        if self.source != Source::Learned {
            return;
        }
        let span = sub(now, self.cycle_start_us);
        if sub(now, self.event_us) >= MICROS && span >= MICROS && self.cycle_count > 0 {
            let cycle = mul(self.cycle_count, 1000 * MICROS) / span;
            if cycle < self.rate_milli {
                self.set_rate(cycle);
                self.max_milli = self.max_milli.min(mul(self.rate_milli, 10) / 9);
            }
        }
        self.cycle_start_us = now;
        self.cycle_count = 0;
    }

    /// A success that left the request window empty: nobody starts before one request's
    /// worth of the window has come back, so the next caller is not refused. This is how
    /// other programs spending the same budget are noticed before they cause a 429.
    pub(super) fn hold_one_unit(&mut self, now: u64) {
        let period_us = self.req_period_us();
        if period_us > 0 {
            self.pause_until_us = self.pause_until_us.max(add(now, period_us));
            self.req_tat_us = self.req_tat_us.max(self.pause_until_us);
        }
    }

    pub(super) fn close(&mut self, now: u64, block: Block) {
        self.block = block;
        self.credit = 0;
        self.tok_credit = 0;
        self.block_until_us = add(now, Self::BLOCK_MICROS);
    }
}
