//! Priority lanes: where each lane's schedule ends, how far lower lanes have been moved
//! back by higher ones, and the reserved share that keeps a lower lane from starving.

use super::{BudgetState, FULL_SHARE, add, mul};

impl BudgetState {
    /// The last lane (the lowest priority).
    pub const LAST_LANE: u64 = 2;

    /// The end of the request schedule of `lane` and the lanes above it.
    pub(super) fn lane_req(&self, lane: u64) -> u64 {
        match lane {
            0 => self
                .lane0_req_us
                .min(self.lane1_req_us)
                .min(self.req_tat_us),
            1 => self.lane1_req_us.min(self.req_tat_us),
            _ => self.req_tat_us,
        }
    }

    /// The end of the token schedule of `lane` and the lanes above it.
    pub(super) fn lane_tok(&self, lane: u64) -> u64 {
        match lane {
            0 => self
                .lane0_tok_us
                .min(self.lane1_tok_us)
                .min(self.tok_tat_us),
            1 => self.lane1_tok_us.min(self.tok_tat_us),
            _ => self.tok_tat_us,
        }
    }

    /// How far `lane`'s bookings have been moved back in all.
    pub(super) fn shift_of(&self, lane: u64) -> u64 {
        match lane {
            0 => 0,
            1 => self.shift1_us,
            _ => self.shift2_us,
        }
    }

    /// Where the latest booking placed ahead of `lane` went, and how far it moved it.
    pub(super) fn last_insert(&self, lane: u64) -> (u64, u64) {
        match lane {
            0 => (0, 0),
            1 => (self.ins1_at_us, self.ins1_len_us),
            _ => (self.ins2_at_us, self.ins2_len_us),
        }
    }

    /// `true` when the lanes above `lane` are booked more than two units (of `tokens`
    /// tokens) ahead: they keep it waiting.
    pub(super) fn starving(&self, lane: u64, now: u64, tokens: u64) -> bool {
        let period = self.req_period_us();
        let cost = mul(tokens, self.period_ns(self.tok_base_ns)) / 1000;
        let unit = period.max(cost).max(1);
        let above = self.lane_req(lane - 1).max(self.lane_tok(lane - 1));
        above > add(now, mul(2, unit))
    }

    /// `true` when `lane`'s reserved share (`ppm`) has room now.
    pub(super) fn reserve_room(&self, lane: u64, now: u64, ppm: u64) -> bool {
        let cell = if lane == 1 {
            self.reserve1_us
        } else {
            self.reserve2_us
        };
        ppm > 0 && cell <= now
    }

    /// Spends one unit (`unit_us` at the full rate) of `lane`'s reserved share.
    pub(super) fn take_reserve(&mut self, lane: u64, now: u64, unit_us: u64, ppm: u64) {
        let next = add(now, mul(unit_us, FULL_SHARE) / ppm.max(1));
        if lane == 1 {
            self.reserve1_us = next;
        } else {
            self.reserve2_us = next;
        }
    }

    /// Books `len` µs of one cell (requests, or tokens when `tokens`) at `start` in
    /// `lane`: that lane's schedule ends after it; each lower lane booked past `start`
    /// moves back by `len` (flagged in the answer: its bookings wait that much more), one
    /// that was not ends after it too.
    pub(super) fn place(&mut self, lane: u64, start: u64, len: u64, tokens: bool) -> [bool; 3] {
        let end = add(start, len);
        let mut moved = [false; 3];
        for j in lane..=Self::LAST_LANE {
            let booked = if tokens {
                self.lane_tok(j)
            } else {
                self.lane_req(j)
            };
            let new = if j == lane {
                end
            } else if booked > start {
                moved[j as usize] = true;
                add(booked, len)
            } else {
                end.max(booked)
            };
            match (tokens, j) {
                (false, 0) => self.lane0_req_us = new,
                (false, 1) => self.lane1_req_us = new,
                (false, _) => self.req_tat_us = new,
                (true, 0) => self.lane0_tok_us = new,
                (true, 1) => self.lane1_tok_us = new,
                (true, _) => self.tok_tat_us = new,
            }
        }
        moved
    }

    /// Keeps the lanes' schedule ends in order: lane 0's ≤ lane 1's ≤ every lane's.
    pub(super) fn order_lanes(&mut self) {
        self.lane1_req_us = self.lane1_req_us.min(self.req_tat_us);
        self.lane0_req_us = self.lane0_req_us.min(self.lane1_req_us);
        self.lane1_tok_us = self.lane1_tok_us.min(self.tok_tat_us);
        self.lane0_tok_us = self.lane0_tok_us.min(self.lane1_tok_us);
    }
}
