//! The limiter interface the drivers consult before every attempt.
//!
//! A [`Limiter`] answers [`Ask`]s with [`Grant`]s and learns from [`Report`]s. Stores
//! that do I/O (a file, Redis) implement it in the driver crates; the arithmetic they
//! share lives in core.

use std::fmt;
use std::time::Instant;

use crate::action::{Ask, Grant, Report};

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
