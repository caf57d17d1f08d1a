//! The shared limiter's protocol and configuration: what a driver asks a limiter, what a
//! user configures. The limiter itself (the budget's arithmetic, the wait queue, the
//! stores' decisions) is the `mistral-limiter` crate.
//!
//! # Admission
//!
//! A call asks to be admitted ([`crate::Action::Reserve`]) right before it would send.
//! The limiter either admits it, with a [`Grant::Go`] whose wait is at most a few
//! milliseconds (capacity is never held far ahead), or keeps it in line: the driver
//! polls [`Limiter::poll_admit`] with a [`Waker`], and sleeps until the waker is woken
//! or the instant [`Admit::Pending`] names, whichever comes first, then polls again.
//! Waking early is harmless. The caller keeps its [`Place`] in line between polls, and
//! gives it up with [`Limiter::leave`] when it stops waiting for any reason (the answer
//! came, its task was dropped).
//!
//! Every [`Report`] goes to [`Limiter::report`]: what the server said (limits,
//! `remaining`, refusals, usage) is how the budget learns.

pub mod limits_text;
pub mod spec;

use std::collections::HashMap;
use std::fmt;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::action::{Ask, Grant, Report};
use crate::error::{Error, ResponseInfo};
use crate::priority::ReservedShares;

pub use limits_text::{LIMITS_VAR, LimitsError, parse_limits};
pub use spec::{BudgetId, LimiterSpec, RedisOptions};

/// A limiter shared by every caller of a budget.
///
/// A driver asks [`Limiter::poll_admit`] until it answers [`Admit::Ready`], sleeping in
/// between until its waker is woken or the instant of [`Admit::Pending`]; it calls
/// [`Limiter::leave`] once it stops waiting (also after `Ready`: an implementation may
/// have removed the place already, and leaving twice is harmless); it hands every report
/// to [`Limiter::report`]. An implementation never blocks in `poll_admit` for longer
/// than one store operation.
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Asks whether the call holding `place` may go now (a new `place` joins the line).
    /// When it may not, `waker` is woken once its turn may have come.
    fn poll_admit(&self, now: Instant, place: &mut Place, ask: &Ask, waker: &Waker) -> Admit;
    /// The call holding `place` no longer waits.
    fn leave(&self, place: &mut Place);
    /// Learns from what a response showed.
    fn report(&self, now: Instant, report: &Report);
}

/// The answer to one [`Limiter::poll_admit`].
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a ready grant goes to Call::handle_grant; a pending one says when to poll again"]
pub enum Admit {
    /// The limiter's answer: hand it to [`crate::Call::handle_grant`].
    Ready(Grant),
    /// Not yet: poll again when the waker is woken, or at `until` at the latest.
    Pending {
        /// The latest instant to poll again.
        until: Instant,
    },
}

/// A caller's place in a limiter's line, kept between polls. Empty until the first
/// [`Limiter::poll_admit`]; the limiter alone gives it a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place(Option<u64>);

impl Place {
    /// No place yet.
    pub const fn new() -> Self {
        Place(None)
    }

    /// The place's number in its limiter, once it has one.
    pub fn id(&self) -> Option<u64> {
        self.0
    }

    /// Gives the place number `id` (for a limiter's implementation).
    pub fn set(&mut self, id: u64) {
        self.0 = Some(id);
    }

    /// Empties the place, returning its number (for a limiter's implementation).
    pub fn take(&mut self) -> Option<u64> {
        self.0.take()
    }
}

/// No limiter: every call goes at once and reports are dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLimiter;

impl Limiter for NoLimiter {
    fn poll_admit(&self, _now: Instant, _place: &mut Place, _ask: &Ask, _waker: &Waker) -> Admit {
        Admit::Ready(Grant::Now)
    }
    fn leave(&self, _place: &mut Place) {}
    fn report(&self, _now: Instant, _report: &Report) {}
}

/// Why a budget is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Block {
    /// Open.
    #[default]
    None,
    /// A limit of 0 for this model.
    NoAllowance,
    /// The monthly quota is spent.
    MonthlyQuota,
}

/// The error every caller of a closed budget gets.
pub fn closed_error(block: Block, model: &str) -> Error {
    let message = |what: &str| {
        Box::new(ResponseInfo {
            status: None,
            message: Some(format!(
                "stopped by the shared limiter: an earlier response showed {what}"
            )),
            origin: crate::origin::Origin::SharedBudget,
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

/// Limits set by the user for a budget (`None`: learn it). Configured limits are paced,
/// never burst, and never replaced by what the server announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Requests per window.
    pub requests: Option<(u64, Duration)>,
    /// Tokens per window.
    pub tokens: Option<(u64, Duration)>,
}

impl Limits {
    /// `limit` requests per `window`.
    pub fn requests(limit: u64, window: Duration) -> Self {
        Self {
            requests: Some((limit, window)),
            tokens: None,
        }
    }

    /// Adds `limit` tokens per `window`.
    pub fn with_tokens(mut self, limit: u64, window: Duration) -> Self {
        self.tokens = Some((limit, window));
        self
    }
}

/// Limits per model, and for models with none set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimiterConfig {
    /// Limits for models not listed (`None`: learn each model's from the server).
    pub default: Option<Limits>,
    /// Limits per model id.
    pub models: HashMap<String, Limits>,
    /// The share of a saturated budget each class below the first keeps (a tenth for
    /// [`crate::Priority::Default`] and [`crate::Priority::Batch`] by default), in
    /// every store.
    pub reserved: ReservedShares,
}

impl LimiterConfig {
    /// The limits for `model`, if configured.
    pub fn limits_for(&self, model: &str) -> Option<Limits> {
        self.models.get(model).copied().or(self.default)
    }

    /// The configuration as one line, the same for equal configurations (models sorted).
    pub fn canonical(&self) -> String {
        let mut models: Vec<_> = self.models.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        format!("{:?}|{models:?}|{:?}", self.default, self.reserved)
    }
}
