//! The scenarios: what the emulator enforces, what the clients send, and from how many
//! threads, tasks and processes.
//!
//! Windows are a few seconds (the emulator's N-second windows, announced with the
//! late-2025 `x-ratelimit-*-req-N-second` header names) so that the whole bench runs in
//! minutes; the shapes are those of `mistral-api.md` §1: a bucket that refills
//! continuously and allows a burst of one window.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::strategy::Strategy;
use super::workload::{Phase, Rates, Workload};
use crate::emulator::{Config, Era, Limits, Semantics};

/// The model every scenario's requests name.
pub const MODEL: &str = "mistral-small-latest";

/// Where the limiter of ours keeps its budgets in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreKind {
    /// One in-process `LocalLimiter` shared by every thread or task.
    Local,
    /// A state file shared by the processes (`mistral_blocking::stores::FileLimiter`).
    File,
    /// A Redis server shared by the processes (`mistral_blocking::stores::RedisLimiter`).
    Redis,
}

/// Targets ours must meet in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Least goodput as a share of the limit.
    pub goodput: Option<f64>,
    /// Largest makespan as a multiple of the ideal.
    pub makespan: Option<f64>,
    /// Most attempts per request.
    pub attempts: f64,
    /// Ours at least this many times faster than the seed fix.
    pub faster_than_seed_fix: Option<f64>,
}

/// One scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Short id: `S1`, `S2`, `S3`, `S4`, `S5-bucket`, `S5-fixed-window`,
    /// `S5-sliding-log`, `S6`.
    pub id: String,
    /// What it shows, one line.
    pub title: String,
    /// The emulator's configuration.
    pub emulator: Config,
    /// The limits as configured (per second), for the plots' limit line.
    pub limit: Rates,
    /// The rates left to the clients (the limit minus a background consumer's share):
    /// the "limit" of the goodput and ideal columns.
    pub available: Rates,
    /// What every strategy sends.
    pub workload: Workload,
    /// OS threads of a blocking run (in total over the processes).
    pub threads: usize,
    /// Tokio tasks of an async run (in total over the processes).
    pub tasks: usize,
    /// Client processes (1: one child process; more: the work is shared out).
    pub processes: usize,
    /// Where ours keeps its budgets.
    pub store: StoreKind,
    /// How long a strategy may run before it is cut ("did not finish").
    pub budget: Duration,
    /// The strategies run.
    pub strategies: Vec<Strategy>,
    /// What ours must achieve.
    pub targets: Targets,
}

impl Scenario {
    /// Concurrency of `strategy`'s run (threads or tasks, over all processes).
    pub fn concurrency_of(&self, strategy: Strategy) -> usize {
        match strategy.runtime() {
            super::strategy::Runtime::Blocking => self.threads,
            super::strategy::Runtime::Async => self.tasks,
        }
    }

    /// The emulator's window for plots and notes.
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.emulator.window_secs)
    }
}

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    /// Every scenario at full size (under 5 minutes in all).
    Full,
    /// A reduced run (under a minute): smaller workloads and budgets, S5 under one
    /// semantics.
    Quick,
}

fn config(era: Era, semantics: Semantics, window_secs: f64, limits: Limits) -> Config {
    Config {
        era,
        semantics,
        window_secs,
        seed: 0xBE7C4,
        ..Config::default()
    }
    .model(MODEL, limits)
}

/// Short prompts (10 tokens + 16 of completion = 26 tokens per request).
const SHORT: usize = 40;
/// Long prompts (120 tokens + 16 = 136 tokens per request).
const LONG: usize = 480;

/// The budget of a run whose ideal is `ideal`: 2.5 × the ideal, at least 10 s, at most
/// 60 s: room for a strategy at 40 % of the limit, and a bound on the whole bench.
fn budget_for(ideal: Duration) -> Duration {
    ideal
        .mul_f64(2.5)
        .clamp(Duration::from_secs(10), Duration::from_secs(60))
}

/// Every scenario of a run of `size`.
pub fn all(size: Size) -> Vec<Scenario> {
    let quick = size == Size::Quick;
    let n = |full: usize, quick_n: usize| if quick { quick_n } else { full };
    let targets = |goodput: f64, makespan: Option<f64>| Targets {
        goodput: Some(goodput),
        makespan,
        attempts: 1.02,
        faster_than_seed_fix: None,
    };
    // Every strategy sends the same workload, each against its own emulator, all at once.
    let scenario = |id: &str,
                    title: &str,
                    emulator: Config,
                    limit: Rates,
                    available: Rates,
                    workload: Workload,
                    (processes, store): (usize, StoreKind),
                    targets: Targets| {
        let budget = budget_for(workload.ideal(available));
        Scenario {
            id: id.into(),
            title: title.into(),
            emulator,
            limit,
            available,
            workload,
            threads: 64,
            tasks: 512,
            processes,
            store,
            budget,
            strategies: Strategy::ALL.to_vec(),
            targets,
        }
    };
    let requests = |r: f64| Rates {
        requests: Some(r),
        tokens: None,
    };
    let mut out = Vec::new();

    // S1: the reported case. 20 at once against 5 per second, a bucket of 5.
    let s1_limits = Limits {
        burst: Some(5),
        ..Limits::new(Some(5), None)
    };
    out.push(Scenario {
        threads: 20,
        tasks: 20,
        budget: Duration::from_secs(60),
        ..scenario(
            "S1",
            "20 requests at once against 5 requests per second (bucket of 5)",
            config(Era::Late2025, Semantics::Bucket, 1.0, s1_limits),
            requests(5.0),
            requests(5.0),
            Workload::uniform(MODEL, 20, SHORT),
            (1, StoreKind::Local),
            Targets {
                goodput: None,
                makespan: None,
                attempts: 1.02,
                faster_than_seed_fix: Some(10.0),
            },
        )
    });

    // S2: 2,000 chat requests; 200 requests and 20,000 tokens per 2 s window. The first
    // three quarters are short (the request limit binds), the last quarter long (the
    // token limit binds: 136 tokens × 100/s would be 13,600 tokens/s > 10,000).
    let mixed = |count: usize| Workload {
        model: MODEL.into(),
        phases: vec![
            Phase {
                count: count * 3 / 4,
                prompt_chars: SHORT,
            },
            Phase {
                count: count - count * 3 / 4,
                prompt_chars: LONG,
            },
        ],
    };
    let s2_limits = Limits::new(Some(200), Some(20_000));
    let s2_rates = Rates {
        requests: Some(100.0),
        tokens: Some(10_000.0),
    };
    out.push(scenario(
        "S2",
        "2,000 chat requests from 64 threads / 512 tasks; request and token limits in headers",
        config(Era::Late2025, Semantics::Bucket, 2.0, s2_limits.clone()),
        s2_rates,
        s2_rates,
        mixed(n(2000, 400)),
        (1, StoreKind::Local),
        targets(0.97, Some(1.05)),
    ));

    // S3 and S4: 4 processes sharing one budget through a store.
    for (id, store, title) in [
        (
            "S3",
            StoreKind::File,
            "4 processes × 16 threads (× 128 tasks) sharing a file store",
        ),
        (
            "S4",
            StoreKind::Redis,
            "4 processes × 16 threads (× 128 tasks) sharing a Redis store",
        ),
    ] {
        out.push(scenario(
            id,
            title,
            config(Era::Late2025, Semantics::Bucket, 2.0, s2_limits.clone()),
            s2_rates,
            s2_rates,
            mixed(n(1000, 300)),
            (4, store),
            targets(0.97, Some(1.05)),
        ));
    }

    // S5: no headers; the limit is learned from 429s, under each semantics.
    let semantics: &[(Semantics, &str)] = if quick {
        &[(Semantics::Bucket, "bucket")]
    } else {
        &[
            (Semantics::Bucket, "bucket"),
            (Semantics::FixedWindow, "fixed-window"),
            (Semantics::SlidingLog, "sliding-log"),
        ]
    };
    for &(sem, name) in semantics {
        let mut emulator = config(Era::Late2025, sem, 2.0, Limits::new(Some(100), None));
        emulator.headers = false;
        out.push(scenario(
            &format!("S5-{name}"),
            &format!("no headers: 100 requests per 2 s, learned from 429s ({name})"),
            emulator,
            requests(50.0),
            requests(50.0),
            Workload::uniform(MODEL, n(500, 150), SHORT),
            (1, StoreKind::Local),
            targets(0.90, None),
        ));
    }

    // S6: a background consumer tries to spend 30 % of the budget.
    let mut s6 = config(
        Era::Late2025,
        Semantics::Bucket,
        2.0,
        Limits::new(Some(200), None),
    );
    s6.background_share = 0.3;
    out.push(scenario(
        "S6",
        "a background consumer spends 30 % of 200 requests per 2 s",
        s6,
        requests(100.0),
        requests(70.0),
        Workload::uniform(MODEL, n(1400, 300), SHORT),
        (1, StoreKind::Local),
        targets(0.90, None),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_run_has_every_scenario_and_strategy() {
        let all = all(Size::Full);
        let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "S1",
                "S2",
                "S3",
                "S4",
                "S5-bucket",
                "S5-fixed-window",
                "S5-sliding-log",
                "S6"
            ]
        );
        assert!(all.iter().all(|s| s.strategies == Strategy::ALL));
        assert_eq!(all[1].workload.len(), 2000);
        // S2's ideal: 1500 ÷ 100/s + 500 × 136 ÷ 10,000/s = 21.8 s.
        let ideal = all[1].workload.ideal(all[1].available).as_secs_f64();
        assert!((ideal - 21.8).abs() < 1e-6, "{ideal}");
        for s in &all {
            assert!(s.emulator.models.contains_key(MODEL));
            assert!(s.workload.ideal(s.available) < s.budget, "{}", s.id);
        }
    }

    #[test]
    fn a_quick_run_is_smaller() {
        let quick = all(Size::Quick);
        assert!(
            quick
                .iter()
                .all(|s| s.workload.len() <= 400 && s.budget.as_secs() <= 60)
        );
        assert_eq!(quick.iter().filter(|s| s.id.starts_with("S5")).count(), 1);
    }
}
