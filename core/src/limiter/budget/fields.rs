//! The budget's state as integers: the field names the Redis hash and the Lua script
//! use, in order, and the conversions both ways.

use super::{Block, BudgetState, MAX_EXACT, Source};

impl BudgetState {
    /// The field names, in the order of [`BudgetState::to_fields`] (the Redis hash's
    /// fields and the Lua script's order).
    pub const FIELDS: [&'static str; 46] = [
        "seen_us",
        "req_tat_us",
        "tok_tat_us",
        "retry_tat_us",
        "req_base_ns",
        "tok_base_ns",
        "source",
        "share_ppm",
        "pause_until_us",
        "block",
        "block_until_us",
        "event_us",
        "grown_us",
        "probe_until_us",
        "meter_start_us",
        "meter_count",
        "meter_rate_milli",
        "epoch",
        "seq",
        "credit",
        "credit_seq",
        "recovering",
        "streak",
        "rate_milli",
        "max_milli",
        "slow_start",
        "binding",
        "anchor_us",
        "spent_us",
        "cycle_start_us",
        "cycle_count",
        "windowed",
        "pending",
        "fresh_us",
        "lane0_req_us",
        "lane1_req_us",
        "lane0_tok_us",
        "lane1_tok_us",
        "shift1_us",
        "shift2_us",
        "reserve1_us",
        "reserve2_us",
        "ins1_at_us",
        "ins1_len_us",
        "ins2_at_us",
        "ins2_len_us",
    ];

    /// The fields as integers, in the order of [`BudgetState::FIELDS`].
    pub fn to_fields(&self) -> [u64; 46] {
        [
            self.seen_us,
            self.req_tat_us,
            self.tok_tat_us,
            self.retry_tat_us,
            self.req_base_ns,
            self.tok_base_ns,
            self.source as u64,
            self.share_ppm,
            self.pause_until_us,
            self.block as u64,
            self.block_until_us,
            self.event_us,
            self.grown_us,
            self.probe_until_us,
            self.meter_start_us,
            self.meter_count,
            self.meter_rate_milli,
            self.epoch,
            self.seq,
            self.credit,
            self.credit_seq,
            self.recovering,
            self.streak,
            self.rate_milli,
            self.max_milli,
            self.slow_start,
            self.binding,
            self.anchor_us,
            self.spent_us,
            self.cycle_start_us,
            self.cycle_count,
            self.windowed,
            self.pending,
            self.fresh_us,
            self.lane0_req_us,
            self.lane1_req_us,
            self.lane0_tok_us,
            self.lane1_tok_us,
            self.shift1_us,
            self.shift2_us,
            self.reserve1_us,
            self.reserve2_us,
            self.ins1_at_us,
            self.ins1_len_us,
            self.ins2_at_us,
            self.ins2_len_us,
        ]
    }

    /// The state of [`BudgetState::to_fields`]' integers; `None` when one is out of
    /// range (an unknown source or block, a flag other than 0 or 1, a value above
    /// [`MAX_EXACT`]).
    pub fn from_fields(f: [u64; 46]) -> Option<Self> {
        if f.iter().any(|&v| v > MAX_EXACT) {
            return None;
        }
        let flag = |v: u64| (v <= 1).then_some(v);
        Some(Self {
            seen_us: f[0],
            req_tat_us: f[1],
            tok_tat_us: f[2],
            retry_tat_us: f[3],
            req_base_ns: f[4],
            tok_base_ns: f[5],
            source: Source::from_code(f[6])?,
            share_ppm: f[7],
            pause_until_us: f[8],
            block: Block::from_code(f[9])?,
            block_until_us: f[10],
            event_us: f[11],
            grown_us: f[12],
            probe_until_us: f[13],
            meter_start_us: f[14],
            meter_count: f[15],
            meter_rate_milli: f[16],
            epoch: f[17],
            seq: f[18],
            credit: f[19],
            credit_seq: f[20],
            recovering: flag(f[21])?,
            streak: f[22],
            rate_milli: f[23],
            max_milli: f[24],
            slow_start: flag(f[25])?,
            binding: flag(f[26])?,
            anchor_us: f[27],
            spent_us: f[28],
            cycle_start_us: f[29],
            cycle_count: f[30],
            windowed: flag(f[31])?,
            pending: f[32],
            fresh_us: f[33],
            lane0_req_us: f[34],
            lane1_req_us: f[35],
            lane0_tok_us: f[36],
            lane1_tok_us: f[37],
            shift1_us: f[38],
            shift2_us: f[39],
            reserve1_us: f[40],
            reserve2_us: f[41],
            ins1_at_us: f[42],
            ins1_len_us: f[43],
            ins2_at_us: f[44],
            ins2_len_us: f[45],
        })
    }

    /// `true` when every field is in range (see [`BudgetState::from_fields`]).
    pub fn is_valid(&self) -> bool {
        Self::from_fields(self.to_fields()).is_some()
    }
}
