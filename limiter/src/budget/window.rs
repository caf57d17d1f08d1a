//! A window learned from 429s. When a budget that announces nothing stays shut longer
//! than any pace explains and then admits a probe, its capacity may have come back in a
//! lump (a fixed window, or a sliding log spent in a burst). The open is tried as one:
//! the pace holds, and each success of the lump lets two more go at once, up to what the
//! last cycle delivered. Once every call of the lump is answered it is judged: a lump
//! refused after fewer than [`BudgetState::LUMP_MIN`] successes makes the budget
//! continuous (a rate, a bucket, a concurrency limit: it never lumps again); otherwise
//! the budget is a window of what went through, whose whole count goes at once at each
//! open, and whose length (from one open to the next) schedules the first probe of the
//! next; after a lump answered whole everyone waits for that open (the pace does not
//! go on into a spent window). One lump in [`BudgetState::WINDOW_GROW_EVERY`] tries a
//! sixteenth more, so a raised count is found; a count too high is cut to what its lump
//! let through. A refusal of a
//! lump, or of a window spent, never lowers the learned rate.

use mistral_core::Ticket;

use super::{BudgetState, MICROS, Refill, Source};

/// What one answer of a lump said.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LumpAnswer {
    Success,
    Refused,
    /// Neither (a 5xx, a reset): it says nothing of the window.
    Other,
}

impl BudgetState {
    /// A shut counts as long (a window's, not a pace's) from this many intervals of the
    /// learned rate (and a second).
    pub const LONG_SHUT_UNITS: f64 = 4.0;
    /// The fewest successes of a lump that make a window.
    pub const LUMP_MIN: u64 = 4;
    /// One lump of a learned window in this many tries a sixteenth more than its count
    /// (at least one), to find a raised count.
    pub const WINDOW_GROW_EVERY: u64 = 4;
    /// A lump not answered whole within this long is judged on what was answered.
    pub const LUMP_TIMEOUT_US: u64 = 2 * MICROS;

    /// A probe succeeded after a long shut at `now`: learn the window's length from the
    /// time since the last open (each open placed between the last refused probe and
    /// the one that succeeded; an interval that is no multiple of the length known is an
    /// outlier), and start this open's lump.
    pub(super) fn window_opened(&mut self, now: u64) {
        self.fold_extra();
        let at = if self.probe_at_us > 0 {
            self.probe_at_us
        } else {
            now
        };
        // The window opened after the last refused probe of this shut and by this one:
        // between the two when both are known, else by this one.
        let open = if self.probe_no_us >= self.event_us && self.probe_no_us < at {
            self.probe_no_us + (at - self.probe_no_us) / 2
        } else {
            at
        };
        self.probe_no_us = 0;
        if self.win_open_us > 0 && open > self.win_open_us {
            let interval = (open - self.win_open_us) as f64;
            if self.win_len_us == 0 {
                self.win_len_us = interval as u64;
                self.win_len_n = 1;
            } else {
                let len = self.win_len_us as f64;
                let k = (interval / len).round().max(1.0);
                let per = interval / k;
                if (per / len - 1.0).abs() <= 0.25 {
                    self.win_len_us = ((3.0 * len + per) / 4.0) as u64;
                    self.win_len_n += 1;
                } else {
                    // An outlier: one agreement less; none left, this one is the length.
                    self.win_len_n = self.win_len_n.saturating_sub(1);
                    if self.win_len_n == 0 {
                        self.win_len_us = interval as u64;
                        self.win_len_n = 1;
                    }
                }
            }
        }
        self.win_open_us = open;
        self.win_opens += 1;
        let cap = match self.refill {
            Refill::Continuous => 0,
            // Cut below a count it held: every other lump tries halfway back.
            Refill::Window
                if self.win_top > self.win_count + 1 && self.win_opens.is_multiple_of(2) =>
            {
                self.win_count + (self.win_top - self.win_count) / 2
            }
            // One lump in WINDOW_GROW_EVERY tries a sixteenth more (a raised count).
            Refill::Window if self.win_opens.is_multiple_of(Self::WINDOW_GROW_EVERY) => {
                self.win_count + (self.win_count / 16).max(1)
            }
            Refill::Window => self.win_count,
            Refill::Unknown => self.cycle_window_count(now),
        };
        if cap < Self::LUMP_MIN {
            self.lump_cap = 0;
            self.lump_left = 0;
            return;
        }
        // The probe was the lump's first.
        self.lump_cap = cap;
        self.lump_epoch = self.epoch;
        self.lump_until_us = now.saturating_add(Self::LUMP_TIMEOUT_US);
        self.lump_sent = 1;
        self.lump_ok = 1;
        self.lump_no = 0;
        self.lump_lost = 0;
        // A known window's first half goes at once, the rest at its first success (a
        // sliding log that freed less refuses half, not all).
        self.lump_left = match self.refill {
            Refill::Window => ((cap - 1) / 2).max(1),
            _ => 2.min(cap - 1),
        };
    }

    /// What the cycle delivered (since the last recovery, until `now`), as one window's
    /// count: all of it, unless a window's length was seen and the cycle lasted longer
    /// (paced under a window's count, it never shut), then its share of one window.
    fn cycle_window_count(&self, now: u64) -> u64 {
        let span = now.saturating_sub(self.cycle_start_us);
        if self.win_len_us == 0 || span <= self.win_len_us {
            return self.cycle_count;
        }
        let share = self.cycle_count as u128 * self.win_len_us as u128;
        u64::try_from(share.div_ceil(span as u128)).unwrap_or(u64::MAX)
    }

    /// How long from `now` until a little before a learned window next opens (0: no
    /// window learned, its length not yet seen twice, or it opens within that little).
    pub(super) fn until_window_opens(&self, now: u64) -> u64 {
        if self.source != Source::Learned
            || self.refill != Refill::Window
            || self.win_len_us == 0
            || self.win_len_n < 2
            || self.win_open_us == 0
            || now < self.win_open_us
        {
            return 0;
        }
        let len = self.win_len_us;
        let next = self.win_open_us + ((now - self.win_open_us) / len + 1) * len;
        let guard = (len / 10).min(MICROS / 10);
        next.saturating_sub(guard).saturating_sub(now)
    }

    /// Whether a caller may go now as part of a lump.
    pub(super) fn lump_goes(&self, now: u64) -> bool {
        self.lump_cap > 0
            && self.lump_left > 0
            && self.pause_until_us <= now
            && !(self.probing() && self.probe_until_us > now)
    }

    /// Until when the pace holds for a lump under way (0: it does not); a lump past its
    /// timeout is judged first.
    pub(super) fn lump_holds(&mut self, now: u64) -> u64 {
        if self.lump_cap == 0 {
            return 0;
        }
        if now >= self.lump_until_us {
            self.judge_lump(now);
            return 0;
        }
        self.lump_until_us
    }

    /// Counts an answer of the lump under way; whether it was one.
    pub(super) fn lump_answer(
        &mut self,
        now: u64,
        ticket: Option<Ticket>,
        answer: LumpAnswer,
    ) -> bool {
        let Some(ticket) = ticket else {
            return false;
        };
        if self.lump_cap == 0 || ticket.epoch != self.lump_epoch {
            return false;
        }
        match answer {
            LumpAnswer::Success => {
                self.lump_ok += 1;
                if self.lump_no == 0 {
                    let room = self.lump_cap.saturating_sub(self.lump_sent);
                    self.lump_left = if self.refill == Refill::Window {
                        room
                    } else {
                        (self.lump_left + 2).min(room)
                    };
                }
            }
            LumpAnswer::Refused => {
                self.lump_no += 1;
                self.lump_left = 0;
            }
            LumpAnswer::Other => self.lump_lost += 1,
        }
        let answered = self.lump_ok + self.lump_no + self.lump_lost;
        if answered >= self.lump_sent && (self.lump_left == 0 || self.lump_ok >= self.lump_cap) {
            self.judge_lump(now);
        }
        true
    }

    /// The lump is over at `now`: what it says of the budget.
    fn judge_lump(&mut self, now: u64) {
        if self.lump_no == 0 && self.lump_ok >= self.lump_cap {
            // All of it went through: a window, of at least that count.
            let known = self.refill == Refill::Window;
            self.refill = Refill::Window;
            self.win_count = self.lump_ok;
            if self.win_top <= self.win_count + 1 {
                self.win_top = 0;
            }
            let until = self.until_window_opens(now);
            if known && until > 0 {
                // Its count is spent: shut until the next open, as if refused.
                self.shut_until_window(now, until);
            }
        } else if self.lump_ok >= Self::LUMP_MIN {
            // Refused after a few at once: a window of what went through (the last
            // cycle may have spanned two windows). A count it held before is tried
            // again by halves (a lump split by a misjudged open, or a sliding log's
            // uneven release), unless this lump tried it and was refused.
            if self.refill == Refill::Window {
                self.win_top = if self.win_top > 0 {
                    // Refused on the way back: the limit may have come down.
                    self.win_top.min(self.lump_cap)
                } else {
                    self.win_count
                };
            }
            self.refill = Refill::Window;
            self.win_count = self.lump_ok;
        } else if self.lump_no > 0 {
            // Refused at once: not a window (a window's count is tried again).
            self.refill = match self.refill {
                Refill::Window => Refill::Unknown,
                _ => Refill::Continuous,
            };
        }
        self.lump_cap = 0;
        self.lump_left = 0;
        self.lump_extra = 0;
    }

    /// A window spent by its count at `now`: everyone waits `until` (µs from now), then
    /// one probe at a time, as after a refusal.
    fn shut_until_window(&mut self, now: u64, until: u64) {
        self.epoch += 1;
        self.recovering = 1;
        self.streak = 0;
        self.event_us = now;
        self.probe_until_us = now;
        self.pause_until_us = self.pause_until_us.max(now.saturating_add(until));
    }

    /// A success at the pace after a window's lump, at `now`: the window held more, if
    /// it came within the window (a window's length after it opened, when that is known;
    /// a pace that ran on for windows without a shut says nothing of one window's count).
    pub(super) fn window_success(&mut self, now: u64) {
        let within = self.win_len_us == 0 || now < self.win_open_us.saturating_add(self.win_len_us);
        if self.refill == Refill::Window && self.lump_cap == 0 && self.win_open_us > 0 && within {
            self.lump_extra += 1;
        }
    }

    /// The first refusal of an event, not a lump's: whether it is a learned window
    /// spent (after its lump and what the pace added), not the rate refused.
    pub(super) fn window_spent(&mut self) -> bool {
        let window = self.refill == Refill::Window;
        self.fold_extra();
        window
    }

    /// A window's successes at the pace after its lump were in that window too.
    fn fold_extra(&mut self) {
        if self.refill == Refill::Window {
            self.win_count += self.lump_extra;
        }
        self.lump_extra = 0;
    }
}
