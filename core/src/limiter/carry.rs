//! Carrying a budget's state between stores: onto another clock, into a store that lost
//! it (restarted empty, a state file deleted, replaced or corrupt), at a cautious share.
//!
//! A budget is a schedule: the times up to which it is booked (the cells' TATs, a pause).
//! Whoever takes it over must keep that schedule or the callers it already admitted are
//! admitted a second time — a burst the server refuses. So a store's stand-in starts
//! from the last state the store returned, moved onto its own clock
//! ([`BudgetState::rebased`]); a store found empty is seeded with what a process knew
//! ([`BudgetState::cautious`]); and two versions of one budget merge into the later
//! schedule ([`BudgetState::joined`]).

use super::budget::{BudgetState, Source};

impl BudgetState {
    /// The same budget on another clock: every time moved so that `from_us` (a time of
    /// this state's clock) falls on `to_us`. Times before `from_us` keep their distance
    /// to it (floored at 0): what was booked ahead stays booked ahead by as much.
    pub fn rebased(&self, from_us: u64, to_us: u64) -> Self {
        let shift = |t: u64| {
            if to_us >= from_us {
                t.saturating_add(to_us - from_us)
            } else {
                t.saturating_sub(from_us - to_us)
            }
            .min(super::MAX_EXACT)
        };
        let mut s = *self;
        for t in [
            &mut s.seen_us,
            &mut s.req_tat_us,
            &mut s.tok_tat_us,
            &mut s.retry_tat_us,
            &mut s.pause_until_us,
            &mut s.block_until_us,
            &mut s.event_us,
            &mut s.grown_us,
            &mut s.probe_until_us,
            &mut s.meter_start_us,
            &mut s.anchor_us,
            &mut s.spent_us,
            &mut s.cycle_start_us,
            &mut s.fresh_us,
            &mut s.lane0_req_us,
            &mut s.lane1_req_us,
            &mut s.lane0_tok_us,
            &mut s.lane1_tok_us,
            &mut s.reserve1_us,
            &mut s.reserve2_us,
            &mut s.ins1_at_us,
            &mut s.ins2_at_us,
        ] {
            *t = shift(*t);
        }
        s
    }

    /// This budget as a store that lost it should restart from: its limits and its
    /// schedule kept, its share capped at `share_cap_ppm` (the other processes may still
    /// pace on stand-ins of their own, or have booked slots the state does not show yet),
    /// growing back as usual.
    pub fn cautious(&self, share_cap_ppm: u64) -> Self {
        let mut s = *self;
        s.share_ppm = s.share_ppm.min(share_cap_ppm);
        s
    }

    /// Two versions of one budget (on one clock) merged: the later of each booked time,
    /// so no slot booked in either is given out again; the limits of the one that knows
    /// them (this one first); the smaller share.
    pub fn joined(&self, other: &BudgetState) -> Self {
        let (mut s, o) = if self.source == Source::Unknown && other.source != Source::Unknown {
            (*other, *self)
        } else {
            (*self, *other)
        };
        s.seen_us = s.seen_us.max(o.seen_us);
        s.req_tat_us = s.req_tat_us.max(o.req_tat_us);
        s.tok_tat_us = s.tok_tat_us.max(o.tok_tat_us);
        s.retry_tat_us = s.retry_tat_us.max(o.retry_tat_us);
        s.pause_until_us = s.pause_until_us.max(o.pause_until_us);
        s.event_us = s.event_us.max(o.event_us);
        s.lane0_req_us = s.lane0_req_us.max(o.lane0_req_us);
        s.lane1_req_us = s.lane1_req_us.max(o.lane1_req_us);
        s.lane0_tok_us = s.lane0_tok_us.max(o.lane0_tok_us);
        s.lane1_tok_us = s.lane1_tok_us.max(o.lane1_tok_us);
        s.shift1_us = s.shift1_us.max(o.shift1_us);
        s.shift2_us = s.shift2_us.max(o.shift2_us);
        s.reserve1_us = s.reserve1_us.max(o.reserve1_us);
        s.reserve2_us = s.reserve2_us.max(o.reserve2_us);
        if o.ins1_at_us > s.ins1_at_us {
            (s.ins1_at_us, s.ins1_len_us) = (o.ins1_at_us, o.ins1_len_us);
        }
        if o.ins2_at_us > s.ins2_at_us {
            (s.ins2_at_us, s.ins2_len_us) = (o.ins2_at_us, o.ins2_len_us);
        }
        // Tickets stay unique and a booking voided in either stays void.
        s.epoch = s.epoch.max(o.epoch);
        s.seq = s.seq.max(o.seq);
        s.pending = s.pending.max(o.pending);
        if o.source != Source::Unknown {
            s.share_ppm = s.share_ppm.min(o.share_ppm);
        }
        if o.block_until_us > s.block_until_us && o.block != super::Block::None {
            s.block = o.block;
            s.block_until_us = o.block_until_us;
        }
        s
    }

    /// What a store that may have lost this budget should hold once one process
    /// brings back what it knows (`ours`, on the store's clock, its share as it knew it):
    /// a store without it (`theirs` missing or never answered) takes `ours` at
    /// `share_cap_ppm` — the other processes may still pace on stand-ins of their own at
    /// that share; a store that has it keeps it with the later of each booked time, and
    /// its share raised by `share_cap_ppm` (the share this process paced at on its own
    /// is handed back), at most to `ours`'s. So the budget returns to its full share as
    /// the processes come back, never faster.
    pub fn rejoined(theirs: Option<&BudgetState>, ours: &BudgetState, share_cap_ppm: u64) -> Self {
        match theirs.filter(|t| t.source != Source::Unknown) {
            None => {
                let mut s = ours.cautious(share_cap_ppm);
                if let Some(t) = theirs {
                    s = s.joined(t);
                }
                s
            }
            Some(t) => {
                let mut s = t.joined(ours);
                s.share_ppm = t
                    .share_ppm
                    .saturating_add(share_cap_ppm)
                    .min(ours.share_ppm.max(t.share_ppm));
                s
            }
        }
    }

    /// The latest time this state has booked (a cell's TAT or the pause).
    pub fn booked_until_us(&self) -> u64 {
        self.req_tat_us
            .max(self.tok_tat_us)
            .max(self.pause_until_us)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limiter::budget::{Decision, Limits};

    fn paced(now: u64) -> BudgetState {
        // 10 requests per second: 100 ms apart.
        let mut s = BudgetState::new(now, Some(Limits::requests(10, Duration::from_secs(1))));
        for _ in 0..5 {
            let _booked = s.reserve(now, &super::super::budget::Reserve::new(1));
        }
        s
    }

    #[test]
    fn a_rebased_budget_keeps_what_it_booked_ahead() {
        let store = paced(1_000_000_000);
        let ahead = store.req_tat_us - 1_000_000_000;
        assert!(ahead >= 500_000, "{ahead}");
        let local = store.rebased(1_000_000_000, 0);
        assert_eq!(local.req_tat_us, ahead);
        assert_eq!(local.seen_us, 0);
        // The next request on the new clock waits for the booked ones.
        let mut next = local;
        assert!(
            matches!(next.reserve(0, &super::super::budget::Reserve::new(1)), Decision::Go { wait_us: w, .. } if w >= ahead - 1_000)
        );
        // Forwards too.
        assert_eq!(local.rebased(0, 7).req_tat_us, ahead + 7);
    }

    #[test]
    fn joined_takes_the_later_schedule_and_the_smaller_share() {
        let a = paced(1_000).cautious(250_000);
        let mut b = paced(1_000);
        let _booked = b.reserve(1_000, &super::super::budget::Reserve::new(1));
        let j = a.joined(&b);
        assert_eq!(j.req_tat_us, b.req_tat_us);
        assert_eq!(j.share_ppm, 250_000);
        // An unknown state learns the other's limits.
        let fresh = BudgetState::new(2_000, None);
        let j = fresh.joined(&a);
        assert_eq!(j.req_base_ns, a.req_base_ns);
        assert_eq!(j.source, a.source);
        assert_eq!(j.seen_us, 2_000);
        assert!(j.booked_until_us() >= a.booked_until_us());
    }

    #[test]
    fn processes_coming_back_hand_back_their_share_one_by_one() {
        let ours = paced(1_000);
        let first = BudgetState::rejoined(None, &ours, 250_000);
        assert_eq!(first.share_ppm, 250_000);
        assert_eq!(first.req_tat_us, ours.req_tat_us);
        let second = BudgetState::rejoined(Some(&first), &ours, 250_000);
        assert_eq!(second.share_ppm, 500_000);
        let mut all = second;
        for _ in 0..5 {
            all = BudgetState::rejoined(Some(&all), &ours, 250_000);
        }
        assert_eq!(all.share_ppm, ours.share_ppm, "never above what was known");
        // A store that kept a healthy budget keeps its share.
        let healthy = paced(1_000);
        assert_eq!(
            BudgetState::rejoined(Some(&healthy), &ours.cautious(100_000), 250_000).share_ppm,
            healthy.share_ppm
        );
    }
}
