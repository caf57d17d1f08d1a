//! A response report flattened to the integers every store gets (the Lua script
//! included): the signal and the numbers the budget learns from.

use super::{BudgetState, MAX_EXACT, micros};
use crate::action::{Report, Ticket};
use crate::verdict::Verdict;

/// What a response signalled, flattened to integers ([`ReportOp::signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignalOp {
    /// An answer that says nothing about the limit (a server error, a transport failure).
    #[default]
    Other,
    /// Served.
    Success,
    /// Refused by a spent window.
    WindowSpent {
        /// How long the server said to wait, µs (0: it did not say).
        wait_us: u64,
        /// The spent window's length, µs (0 for a month).
        window_us: u64,
    },
    /// A 429 that did not say which limit.
    RateLimited {
        /// How long the server said to wait, µs (0: it did not say).
        wait_us: u64,
    },
    /// No allowance for the model.
    NoAllowance,
    /// The monthly quota is spent.
    MonthlyQuota,
    /// The real token count of an earlier success (the end of a stream).
    Usage,
}

impl SignalOp {
    /// The signal's code in the Lua script's arguments.
    pub fn code(self) -> u64 {
        match self {
            SignalOp::Other => 0,
            SignalOp::Success => 1,
            SignalOp::WindowSpent { .. } => 2,
            SignalOp::RateLimited { .. } => 3,
            SignalOp::NoAllowance => 4,
            SignalOp::MonthlyQuota => 5,
            SignalOp::Usage => 6,
        }
    }
}

/// A [`Report`] flattened to the integers the budget uses: what every store (the Lua
/// script included) gets. Every value is clamped to [`MAX_EXACT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportOp {
    /// The announced request limit of the shortest pacing window (0: none announced).
    pub req_limit: u64,
    /// That window's length in seconds.
    pub req_window_secs: u64,
    /// The announced token limit of the shortest pacing window (0: none announced).
    pub tok_limit: u64,
    /// That window's length in seconds.
    pub tok_window_secs: u64,
    /// Tokens reserved for the attempt.
    pub estimated_tokens: u64,
    /// Tokens the server charged, when known.
    pub used_tokens: Option<u64>,
    /// What happened.
    pub signal: SignalOp,
    /// What the response's request quota had left (`remaining`), when it said.
    pub req_remaining: Option<u64>,
    /// What the response's token quota (of the window in [`ReportOp::tok_limit`]) had
    /// left, when it said.
    pub tok_remaining: Option<u64>,
    /// The booking the attempt went on, when the limiter gave one.
    pub ticket: Option<Ticket>,
}

impl ReportOp {
    /// Every value clamped to [`MAX_EXACT`] (as the script's arguments are).
    pub fn clamped(&self) -> ReportOp {
        let c = |v: u64| v.min(MAX_EXACT);
        ReportOp {
            req_limit: c(self.req_limit),
            req_window_secs: c(self.req_window_secs),
            tok_limit: c(self.tok_limit),
            tok_window_secs: c(self.tok_window_secs),
            estimated_tokens: c(self.estimated_tokens),
            used_tokens: self.used_tokens.map(c),
            signal: match self.signal {
                SignalOp::WindowSpent { wait_us, window_us } => SignalOp::WindowSpent {
                    wait_us: c(wait_us),
                    window_us: c(window_us),
                },
                SignalOp::RateLimited { wait_us } => SignalOp::RateLimited {
                    wait_us: c(wait_us),
                },
                other => other,
            },
            req_remaining: self.req_remaining.map(c),
            tok_remaining: self.tok_remaining.map(c),
            ticket: self.ticket.map(|t| Ticket {
                epoch: c(t.epoch),
                seq: c(t.seq),
                lane: t.lane.min(BudgetState::LAST_LANE),
                shift: c(t.shift),
                slot: c(t.slot),
            }),
        }
    }
}

impl From<&Report> for ReportOp {
    fn from(report: &Report) -> Self {
        let pace = |q: Option<&crate::ratelimits::Quota>| match q {
            Some(q) => match (q.limit, q.window.duration()) {
                (Some(limit), Some(window)) if limit > 0 => {
                    (limit.min(MAX_EXACT), window.as_secs().min(MAX_EXACT))
                }
                _ => (0, 0),
            },
            None => (0, 0),
        };
        let (req_limit, req_window_secs) = pace(report.limits.requests());
        let (tok_limit, tok_window_secs) = pace(report.limits.tokens());
        // The budget pauses everyone for a wait the server named; a call's own backoff
        // is its own.
        let hinted = report.server_wait().map_or(0, micros);
        let signal = match report.verdict {
            Verdict::Success => SignalOp::Success,
            Verdict::WindowSpent { quota } => SignalOp::WindowSpent {
                wait_us: hinted,
                window_us: micros(quota.window.duration().unwrap_or_default()),
            },
            Verdict::RateLimited => SignalOp::RateLimited { wait_us: hinted },
            Verdict::NoAllowance { .. } => SignalOp::NoAllowance,
            Verdict::MonthlyQuota { .. } => SignalOp::MonthlyQuota,
            Verdict::Usage => SignalOp::Usage,
            _ => SignalOp::Other,
        };
        ReportOp {
            req_limit,
            req_window_secs,
            tok_limit,
            tok_window_secs,
            estimated_tokens: report.estimated_tokens.min(MAX_EXACT),
            used_tokens: report.used_tokens.map(|u| u.min(MAX_EXACT)),
            signal,
            req_remaining: report
                .limits
                .requests()
                .and_then(|q| q.remaining)
                .map(|r| r.min(MAX_EXACT)),
            tok_remaining: report
                .limits
                .tokens()
                .and_then(|q| q.remaining)
                .map(|r| r.min(MAX_EXACT)),
            ticket: report.ticket,
        }
    }
}
