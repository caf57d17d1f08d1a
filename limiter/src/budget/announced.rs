//! Limits announced in the headers, and what `remaining` says: the level of the cells
//! (the server's word beats the model: other programs spend the same budget), a window
//! spent, a fresh one.

use super::{BudgetState, MICROS, Source};
use crate::op::ReportOp;

impl BudgetState {
    /// Limits announced in `op`'s headers replace what the budget knew (unless the user
    /// configured them): a request or token limit per window gives the pace
    /// (`window ÷ limit` per unit) and the capacity (a window's worth may go at once, as
    /// the server itself allows).
    pub(super) fn learn_limits(&mut self, now: u64, op: &ReportOp) {
        if self.source == Source::Configured {
            return;
        }
        let mut announced = false;
        if op.req_limit > 0 && op.req_window_secs > 0 {
            self.req_us = (op.req_window_secs * MICROS) as f64 / op.req_limit as f64;
            self.req_cap = op.req_limit as f64;
            announced = true;
        }
        if op.tok_limit > 0 && op.tok_window_secs > 0 {
            self.tok_us = (op.tok_window_secs * MICROS) as f64 / op.tok_limit as f64;
            self.tok_cap = op.tok_limit as f64;
            announced = true;
        }
        if announced && self.source != Source::Headers {
            if self.source == Source::Learned && op.req_limit == 0 {
                // Only tokens announced: the learned request rate no longer applies.
                self.req_us = 0.0;
                self.req_cap = 1.0;
            }
            if self.source == Source::Unknown {
                // The first answer: the level is what its `remaining` says (below); until
                // then, the cells start full.
                self.req_tat_us = self.req_tat_us.min(now);
                self.tok_tat_us = self.tok_tat_us.min(now);
            }
            self.source = Source::Headers;
            self.share = 1.0;
            self.grown_us = now;
        }
    }

    /// What the cells hold now by `op`'s `remaining`: the server counted the attempt
    /// and, at most, what was admitted before it; everything admitted after it, and
    /// everything still out, may not be counted yet, so it is taken off what remains.
    /// What remains is the whole budget's: while the cells are at the fleet's share (a
    /// store's stand-in, or a budget rejoined while others may still admit on theirs),
    /// an answer lowers the level to the fleet's share of that room, and raises it only
    /// as far as the room past the other processes' cells, which may be in flight: a
    /// stand-in that took a quarter of what each answer shows would, answer after
    /// answer, take it all (15 sent in 10 ms by one stand-in after a stall, 2 refused);
    /// one that never took more than its quarter of the pace would leave what the
    /// others do not use unused.
    ///
    /// The answer of the latest admission answered so far sets the level either way (the
    /// budget may have more room than the model thought: an estimate too high, a window
    /// that opened); an earlier one's only lowers it. Admissions made close before it and
    /// still out then may reach the server after it ([`mistral_core::Ticket::lead`]:
    /// callers let go together, woken late and out of turn on a loaded machine): those
    /// answered before it may have been counted after it, and its `remaining` would not
    /// count them (nor, answered, are they out). Its answer then moves the level only as
    /// far as that doubt leaves certain: down to what it says, up to what it says less
    /// those.
    ///
    /// The level is read as of the latest time the answer can have come
    /// ([`ReportOp::ahead_us`] after `now`): read earlier, the capacity that came back in
    /// between would be counted twice.
    pub(super) fn read_levels(&mut self, now: u64, op: &ReportOp) {
        let now = now.saturating_add(op.ahead_us);
        let seq = op.ticket.map_or(self.seq, |t| t.seq);
        // An answer of the current run that quotes less than any other of it so far was
        // counted after them (or before capacity came back: it says less than there is):
        // its word is the latest whatever its number, and only those still out are in
        // doubt.
        let in_run = op.ticket.is_some() && seq >= self.run_seq;
        let last_counted = in_run && op.req_remaining.is_some_and(|r| r <= self.run_rem);
        if let (true, Some(r)) = (in_run, op.req_remaining) {
            self.run_rem = self.run_rem.min(r);
        }
        let latest = seq >= self.obs_seq || last_counted;
        // Admissions out when it was made and answered before it (as many as may be: up
        // to the latest answered), which its `remaining` may not count.
        let doubt = match op.ticket {
            Some(t) if seq > self.obs_seq && !last_counted => {
                let first = t.seq.saturating_sub(t.lead);
                (self.obs_seq + 1).saturating_sub(first).min(t.lead)
            }
            _ => 0,
        } as f64;
        // The new time of a cell at `tat`: `level` when it says no more than the model
        // (or the latest answer's says more), else no further than `doubtful`.
        let moved = |tat: u64, level: u64, doubtful: u64| {
            if latest {
                level.max(tat.min(doubtful))
            } else {
                tat.max(level)
            }
        };
        let share = self.cell_share();
        let rp = self.req_period_us();
        if let (Some(remaining), true) = (op.req_remaining, rp > 0.0) {
            let after = match last_counted {
                true => self.out,
                false => self.seq.saturating_sub(seq).max(self.out),
            } as f64;
            let used = (self.req_cap_eff() - remaining as f64 * share + after).max(0.0);
            let level = (now as f64 + used * rp) as u64;
            // Cells at a share: the other processes' cells may be in flight, only the
            // room past them is certain.
            let certain = (self.req_cap - remaining as f64 + after).max(used);
            let doubtful = (now as f64 + (certain + doubt) * rp) as u64;
            self.req_tat_us = moved(self.req_tat_us, level, doubtful);
        }
        let tp = self.tok_period_us();
        if let (Some(remaining), true) = (op.tok_remaining, tp > 0.0) {
            let mark = op.ticket.map_or(self.tok_mark, |t| t.tok_mark);
            let after = self.tok_mark.saturating_sub(mark) as f64;
            // Still out from before it, and its operation's doubt: about this attempt's
            // tokens each.
            let tokens = op.ticket.map_or(op.estimated_tokens, |t| t.tokens) as f64;
            let before_out = self.out.saturating_sub(self.seq.saturating_sub(seq)) as f64 * tokens;
            let used =
                (self.tok_cap_eff() - remaining as f64 * share + after + before_out).max(0.0);
            let level = (now as f64 + used * tp) as u64;
            let certain = (self.tok_cap - remaining as f64 + after + before_out).max(used);
            let doubtful = (now as f64 + (certain + doubt * tokens) * tp) as u64;
            self.tok_tat_us = moved(self.tok_tat_us, level, doubtful);
        }
        if latest {
            self.obs_seq = self.obs_seq.max(seq);
        }
    }

    /// What a success's `remaining` says (announced limits only): the level, and
    /// whether the request window is spent or fresh.
    pub(super) fn read_remaining(&mut self, now: u64, op: &ReportOp) {
        self.read_levels(now, op);
        let Some(remaining) = op.req_remaining else {
            return;
        };
        let seq = op.ticket.map_or(self.seq, |t| t.seq);
        let window_us = op.req_window_secs.saturating_mul(MICROS);
        // Room again is news only from an attempt admitted after the window was seen
        // spent: one admitted before may have been counted before (its answer read
        // late, on a loaded machine or from a burst that came back out of order).
        let after_spent = self.spent_us > 0 && seq > self.spent_seq;
        if after_spent && remaining > 0 && now < self.anchor_us.saturating_add(window_us) {
            // Room again before the window came round: it refills continuously.
            self.windowed = 0;
        }
        if op.req_limit > 0 && remaining + 1 >= op.req_limit {
            // A fresh window starts here: no later than the probe that found it reached
            // the server, so no later than its admission plus the way there. Taken when
            // its answer is read, the start would drift later every window (by the
            // answer's way back and the margin); on the last start's round (within a
            // tenth of the window) it is that round.
            let start = match op.ticket {
                Some(t) if t.seq == self.probe_seq && self.probe_at_us > 0 => {
                    self.probe_at_us.min(now)
                }
                _ => now,
            };
            let round = match (self.anchor_us, window_us) {
                (a, w) if a > 0 && w > 0 && start > a => a + (start - a) / w * w,
                _ => 0,
            };
            let start = if round > 0 && start - round <= window_us / 10 {
                round
            } else {
                start
            };
            self.anchor_us = start;
            self.fresh_us = start;
            self.fresh_seq = seq;
            self.fresh_left = remaining;
        } else if after_spent && remaining > 0 && seq >= self.obs_seq {
            // Room again after a spent window: what comes back now, a sliding log gives
            // back one window later.
            self.anchor_us = now;
        }
        if remaining > 0 {
            if after_spent && seq >= self.obs_seq {
                self.spent_us = 0;
            }
            return;
        }
        if self.spent_us == 0 {
            self.spent_us = now;
            self.spent_seq = self.seq;
        }
        if self.windowed == 1
            && self.fresh_us > 0
            && window_us > 0
            && now < self.fresh_us.saturating_add(window_us)
        {
            // A fresh window spent, in a window that does not refill: nobody goes before
            // it comes round (with a margin for the clocks); then one probe tells what
            // the new window offers, and the cells start full.
            let margin = (window_us as f64 * Self::MARGIN) as u64;
            let round = (self.fresh_us + window_us + margin)
                .saturating_sub(now)
                .min(window_us);
            let until = now.saturating_add(round);
            if until > self.pause_until_us {
                self.pause_until_us = until;
                self.epoch += 1;
            }
            self.req_tat_us = self.req_tat_us.min(self.pause_until_us);
            self.recovering = 1;
            self.streak = 0;
            self.probe_until_us = 0;
        }
    }
}
