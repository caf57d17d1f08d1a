//! The shared limiter: one budget per model, shared by every caller that spends it.
//!
//! The drivers consult a [`Limiter`] before every attempt ([`crate::Action::Reserve`])
//! and feed it every [`Report`]. The arithmetic lives once, in [`budget`]; stores only
//! give it an atomic read-modify-write: [`LocalLimiter`] (a mutex, the default) here,
//! a locked file and Redis in each driver crate, in its own I/O model
//! (`mistral_blocking::stores`, `mistral_async::stores`). Everything those stores decide
//! lives here: the state file's format ([`codec`]), the Redis script and its arguments
//! ([`lua`]), the names of a budget's file and keys, the policy while a store is down and
//! one file transaction on bytes ([`store`]), the `MISTRAL_LIMITER` setting ([`spec`]) and
//! the `MISTRAL_LIMITS` one ([`limits_text`]). How a state moves between stores (a fallback, a store that
//! lost it) is `BudgetState::rebased`, `BudgetState::cautious` and `BudgetState::joined`.

pub mod budget;
mod carry;
pub mod codec;
pub mod limits_text;
pub mod local;
pub mod lua;
pub mod spec;
pub mod store;

use std::fmt;
use std::time::Instant;

use crate::action::{Ask, Grant, Report};
use crate::error::{Error, ResponseInfo};

pub use budget::{
    Block, BudgetState, Decision, Limits, MAX_EXACT, ReportOp, Reserve, Seed, SignalOp, Source,
};
pub use limits_text::{LIMITS_VAR, LimitsError, parse_limits};
pub use local::{Budgets, LimiterConfig, LocalLimiter, decision_to_grant};
pub use spec::{BudgetId, LimiterSpec, RedisOptions};

/// A limiter shared by every caller of a budget.
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Reserves a slot for `ask` at `now`; the answer says when to go.
    fn reserve(&self, now: Instant, ask: &Ask) -> Grant;
    /// Learns from what a response showed.
    fn report(&self, now: Instant, report: &Report);
}

/// No limiter: every call goes at once and reports are dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLimiter;

impl Limiter for NoLimiter {
    fn reserve(&self, _now: Instant, _ask: &Ask) -> Grant {
        Grant::Now
    }
    fn report(&self, _now: Instant, _report: &Report) {}
}

/// The error every caller of a closed budget gets.
pub fn closed_error(block: Block, model: &str) -> Error {
    let message = |what: &str| {
        Box::new(ResponseInfo {
            status: None,
            message: Some(format!(
                "stopped by the shared limiter: an earlier response showed {what}"
            )),
            ..ResponseInfo::default()
        })
    };
    match block {
        Block::MonthlyQuota => Error::MonthlyQuota {
            limit: None,
            remaining: Some(0),
            response: message("the monthly quota spent"),
        },
        _ => Error::NoAllowance {
            model: Some(model.to_owned()),
            bucket: None,
            response: message("no allowance for this model"),
        },
    }
}
