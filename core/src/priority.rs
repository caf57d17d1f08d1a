//! Priority classes: which calls a saturated budget serves first, and the share each
//! lower class keeps.
//!
//! Every call has a [`Priority`] (per client, and per call through
//! [`crate::CallOptions::priority`]). While a budget has room, every class uses it in
//! arrival order. Once callers queue, each process's line of waiting callers serves
//! higher classes first, and the shared budget knows how many of each class wait in
//! every process, so a lower class leaves the capacity a higher one needs: an
//! interactive call waits at most about one pacing interval however long the batch queue
//! is. A lower class kept waiting still gets its [`ReservedShares`] of the budget (by
//! default a tenth for [`Priority::Default`] and for [`Priority::Batch`]), so it is never
//! starved.
//!
//! This is decided by the limiter (the `mistral-limiter` crate), so the same rule holds
//! in one process, across processes (the file store) and across hosts (Redis, on Redis
//! `TIME`).
//!
//! ```
//! use mistral_core::{CallOptions, Priority};
//!
//! // A person is waiting on this one.
//! let options = CallOptions::new().priority(Priority::Interactive);
//! assert_eq!(Priority::parse("batch"), Some(Priority::Batch));
//! assert!(Priority::Interactive.lane() < Priority::Batch.lane());
//! # let _ = options;
//! ```

use std::fmt;

/// A call's priority class. Higher classes are served first when the budget is
/// saturated; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Priority {
    /// A person is waiting: served before every other class.
    Interactive,
    /// The default: after interactive calls, before batch work.
    #[default]
    Default,
    /// Background work (a batch job): served last, keeping its reserved share.
    Batch,
}

impl Priority {
    /// Every class, highest first.
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Default, Priority::Batch];

    /// The class's lane in a budget: 0 is served first.
    pub const fn lane(self) -> u64 {
        match self {
            Priority::Interactive => 0,
            Priority::Default => 1,
            Priority::Batch => 2,
        }
    }

    /// The class's name: `interactive`, `default`, `batch`.
    pub const fn name(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Default => "default",
            Priority::Batch => "batch",
        }
    }

    /// The class a name gives (case-insensitive), `None` for an unknown one.
    pub fn parse(name: &str) -> Option<Priority> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The share of a saturated budget each class below the first keeps, in millionths of
/// the budget's rate: while higher classes would keep it waiting, a class still gets a
/// slot at that rate. The first class needs none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservedShares([u64; 3]);

impl ReservedShares {
    /// A tenth of the budget, [`ReservedShares::default`]'s share for the classes
    /// below the first.
    pub const TENTH_PPM: u64 = 100_000;

    /// No reserved share: lower classes wait for as long as higher ones keep the budget
    /// busy.
    pub const NONE: ReservedShares = ReservedShares([0; 3]);

    /// These shares with `priority`'s set to `ppm` millionths (at most a half; the
    /// first class's is ignored).
    pub fn with(mut self, priority: Priority, ppm: u64) -> Self {
        self.0[priority.lane() as usize] = ppm.min(500_000);
        self
    }

    /// `priority`'s share in millionths (0 for the first class).
    pub fn get(&self, priority: Priority) -> u64 {
        if priority.lane() == 0 {
            0
        } else {
            self.0[priority.lane() as usize]
        }
    }
}

impl Default for ReservedShares {
    fn default() -> Self {
        ReservedShares([0, Self::TENTH_PPM, Self::TENTH_PPM])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lanes_order_the_classes() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.name()), Some(p));
            assert_eq!(Priority::parse(&p.name().to_uppercase()), Some(p));
        }
        assert_eq!(Priority::parse("urgent"), None);
        let lanes: Vec<u64> = Priority::ALL.iter().map(|p| p.lane()).collect();
        assert_eq!(lanes, [0, 1, 2]);
        assert_eq!(Priority::default(), Priority::Default);
    }

    #[test]
    fn shares_default_to_a_tenth_below_the_first_class_and_are_capped() {
        let s = ReservedShares::default();
        assert_eq!(s.get(Priority::Interactive), 0);
        assert_eq!(s.get(Priority::Batch), 100_000);
        let s = s
            .with(Priority::Batch, 900_000)
            .with(Priority::Interactive, 5);
        assert_eq!(s.get(Priority::Batch), 500_000);
        assert_eq!(s.get(Priority::Interactive), 0);
    }
}
