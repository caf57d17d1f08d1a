//! The retry strategies compared: ours, and the shapes other clients use, each driven
//! through our own transport (the same ureq or reqwest driver) so that only the retry
//! logic differs.

use std::time::Duration;

use mistral_core::{Backoff, RetryPolicy};
use serde::{Deserialize, Serialize};

/// Which driver runs the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Runtime {
    /// `mistral-blocking` (ureq) on OS threads.
    Blocking,
    /// `mistral-async` (reqwest) on tokio tasks.
    Async,
}

/// A retry strategy under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Our default policy and one shared limiter for every thread of the run, blocking.
    OursBlocking,
    /// Our default policy and one shared limiter for every task of the run, async.
    OursAsync,
    /// The seed fix: 3 attempts, waits of 1 s then 2 s, no jitter, no limiter, headers
    /// not read.
    SeedFix,
    /// The official SDKs when retries are configured: `0.5·1.5ⁿ s + U(0, 1) s` capped at
    /// 60 s, 429 and 5xx retried until an hour has passed, `Retry-After` honoured, no
    /// limiter.
    OfficialSdk,
    /// Best practice without coordination: full-jitter exponential backoff per call,
    /// `Retry-After` honoured, no shared limiter.
    BestPractice,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 5] = [
        Strategy::OursBlocking,
        Strategy::OursAsync,
        Strategy::SeedFix,
        Strategy::OfficialSdk,
        Strategy::BestPractice,
    ];

    /// A short name for tables, plots and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::OursBlocking => "ours-blocking",
            Strategy::OursAsync => "ours-async",
            Strategy::SeedFix => "seed-fix",
            Strategy::OfficialSdk => "official-sdk",
            Strategy::BestPractice => "best-practice",
        }
    }

    /// The strategy named `name` (as [`Strategy::name`] spells it).
    pub fn parse(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.name() == name)
    }

    /// `true` for our client (default policy + a shared limiter).
    pub fn is_ours(self) -> bool {
        matches!(self, Strategy::OursBlocking | Strategy::OursAsync)
    }

    /// The driver that runs it: ours in both, the baselines on the blocking one (their
    /// behaviour does not depend on the driver; one run each keeps the bench short).
    pub fn runtime(self) -> Runtime {
        match self {
            Strategy::OursAsync => Runtime::Async,
            _ => Runtime::Blocking,
        }
    }

    /// Whether calls consult a shared limiter (otherwise [`mistral_core::NoLimiter`]).
    pub fn uses_limiter(self) -> bool {
        self.is_ours()
    }

    /// The retry policy.
    pub fn policy(self) -> RetryPolicy {
        match self {
            Strategy::OursBlocking | Strategy::OursAsync => RetryPolicy::default(),
            Strategy::SeedFix => RetryPolicy {
                max_attempts: 3,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
                backoff: Backoff::Exponential {
                    factor: 2.0,
                    jitter: Duration::ZERO,
                },
                window_aware: false,
                honor_retry_after: false,
                ..RetryPolicy::default()
            },
            Strategy::OfficialSdk => RetryPolicy {
                max_attempts: u32::MAX,
                base: Duration::from_millis(500),
                cap: Duration::from_secs(60),
                deadline: Some(Duration::from_secs(3600)),
                backoff: Backoff::Exponential {
                    factor: 1.5,
                    jitter: Duration::from_secs(1),
                },
                window_aware: false,
                honor_retry_after: true,
                ..RetryPolicy::default()
            },
            Strategy::BestPractice => RetryPolicy {
                backoff: Backoff::FullJitter,
                window_aware: false,
                honor_retry_after: true,
                ..RetryPolicy::default()
            },
        }
    }

    /// One line on what it is, for the report.
    pub fn description(self) -> &'static str {
        match self {
            Strategy::OursBlocking => {
                "default RetryPolicy + one LocalLimiter shared by every thread (ureq)"
            }
            Strategy::OursAsync => {
                "default RetryPolicy + one LocalLimiter shared by every task (reqwest)"
            }
            Strategy::SeedFix => {
                "3 attempts, waits 1 s, 2 s, no jitter, headers ignored, no limiter"
            }
            Strategy::OfficialSdk => {
                "0.5·1.5ⁿ s + U(0,1) s capped at 60 s, retries until 1 h, Retry-After honoured, no limiter"
            }
            Strategy::BestPractice => {
                "full-jitter exponential backoff (base 0.5 s, cap 30 s, 10 attempts), Retry-After honoured, no limiter"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()), Some(s));
        }
        assert_eq!(Strategy::parse("nope"), None);
    }

    #[test]
    fn baselines_have_the_shapes_of_the_brief() {
        let seed = Strategy::SeedFix.policy();
        assert_eq!(seed.max_attempts, 3);
        assert!(!seed.window_aware && !seed.honor_retry_after);
        let sdk = Strategy::OfficialSdk.policy();
        assert_eq!(sdk.max_attempts, u32::MAX);
        assert_eq!(sdk.deadline, Some(Duration::from_secs(3600)));
        assert!(sdk.honor_retry_after && !sdk.window_aware);
        assert_eq!(Strategy::BestPractice.policy().backoff, Backoff::FullJitter);
        assert_eq!(Strategy::OursAsync.policy(), RetryPolicy::default());
    }
}
