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
use mistral_emulator::best::Server;
use mistral_emulator::{Config, Era, Limits, Semantics};

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

/// Targets ours must meet in a scenario (issue 9's targets).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Least goodput as a share of the server's best (unknown limits: 0.90).
    pub goodput: Option<f64>,
    /// Largest makespan as a multiple of the server's best (announced limits: 1.05).
    pub makespan: Option<f64>,
    /// Most attempts per request (announced 1.02, unknown 1.10).
    pub attempts: f64,
    /// Ours at least this many times faster than the seed fix.
    pub faster_than_seed_fix: Option<f64>,
    /// A changed limit: back at ≥ 0.90 of the new limit within this many seconds.
    pub recovery_s: Option<f64>,
    /// Never slower than the official-SDK-style baseline (when it ran).
    pub not_slower_than_sdk: bool,
}

impl Targets {
    /// Announced limits: makespan ≤ 1.05 × the server's best, ≤ 1.02 attempts per call,
    /// 0 errors, not slower than the official-SDK style.
    pub fn announced() -> Targets {
        Targets {
            goodput: None,
            makespan: Some(1.05),
            attempts: 1.02,
            faster_than_seed_fix: None,
            recovery_s: None,
            not_slower_than_sdk: true,
        }
    }

    /// Unknown limits: goodput ≥ 0.90 of the server's best, ≤ 1.10 attempts per call,
    /// 0 errors, not slower than the official-SDK style.
    pub fn unknown() -> Targets {
        Targets {
            goodput: Some(0.90),
            makespan: None,
            attempts: 1.10,
            faster_than_seed_fix: None,
            recovery_s: None,
            not_slower_than_sdk: true,
        }
    }

    /// The same, and back at ≥ 0.90 of a changed limit within `secs`.
    pub fn recovering_within(mut self, secs: f64) -> Targets {
        self.recovery_s = Some(secs);
        self
    }
}

/// What the clients talk to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Front {
    /// The emulator itself.
    #[default]
    Emulator,
    /// nginx `limit_req` at `rate` requests per second without burst, in front of the
    /// emulator ([`mistral_emulator::nginx`]); the emulator then has no limit of its own.
    Nginx {
        /// Requests per second.
        rate: u32,
    },
}

/// A limit change during the run: at `at` after the run's start, every emulator of
/// the scenario gets `limits` for [`MODEL`] (fresh meters, as a tier change), or its
/// background consumer starts spending `background_share` of the budget ("another
/// program of the organisation").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitChange {
    /// When, after the run's start.
    pub at: Duration,
    /// The new limits (`None`: unchanged).
    pub limits: Option<Limits>,
    /// The background consumer's new share (`None`: unchanged).
    pub background_share: Option<f64>,
}

/// One scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Short id: `S1`, `S2`, `S3`, `S4`, `S5-bucket`, ..., `G-...` for the grid.
    pub id: String,
    /// What it shows, one line.
    pub title: String,
    /// The emulator's configuration.
    pub emulator: Config,
    /// What the clients talk to: the emulator, or nginx in front of it.
    pub front: Front,
    /// The server's rules as the yardstick sees them ([`mistral_emulator::best`]): by default those of the
    /// emulator's configuration, then the change's, if any.
    pub server: Server,
    /// A limit change during the run.
    pub change: Option<LimitChange>,
    /// The limits as configured (per second), for the plots' limit line.
    pub limit: Rates,
    /// The rates left to the clients (the limit minus a background consumer's share):
    /// the old "ideal" (requests ÷ rate), kept in the JSON.
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

    /// Tokens the server charges for each request of the workload, in order.
    pub fn costs(&self) -> Vec<u64> {
        (0..self.workload.len())
            .map(|i| self.workload.tokens_of(i))
            .collect()
    }

    /// The server's best for the whole workload from callers of `strategy`, starting at
    /// the server's start (seconds).
    pub fn best_s(&self, strategy: Strategy) -> f64 {
        self.server
            .best(&self.costs(), self.concurrency_of(strategy), 0.0)
            .makespan_s()
    }

    /// Sets the server model from the emulator's config and the change (call after
    /// changing either).
    pub fn derive_server(mut self) -> Scenario {
        let mut server = Server::of_emulator(&self.emulator, MODEL);
        if let Some(change) = &self.change {
            let mut after = self.emulator.clone();
            if let Some(limits) = &change.limits {
                after = after.model(MODEL, limits.clone());
            }
            if let Some(share) = change.background_share {
                after.background_share = share;
            }
            let next = Server::of_emulator(&after, MODEL);
            if let Some(e) = next.epochs.first() {
                server = server.then(change.at.as_secs_f64(), e.requests, e.tokens);
                // A background consumer leaves the meters as they are; new limits
                // start afresh.
                if change.limits.is_none()
                    && let Some(last) = server.epochs.last_mut()
                {
                    last.keep_state = true;
                }
            }
        }
        self.server = server;
        self
    }

    /// The budget of a run: 2.5 × the server's best, at least 10 s, at most 60 s (or
    /// 1.5 × the best when that is longer): room for a strategy at 40 % of the
    /// capacity, and a bound on the bench.
    pub fn with_budget_from_best(mut self) -> Scenario {
        let best = self
            .server
            .best(&self.costs(), self.threads.min(self.tasks).max(1), 0.0)
            .makespan_s();
        let best = if best.is_finite() { best } else { 60.0 };
        self.budget = Duration::from_secs_f64((best * 2.5).clamp(10.0, (best * 1.5).max(60.0)));
        self
    }
}

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    /// Every scenario at full size, a sample of the targets grid (about 10 minutes in
    /// all).
    Full,
    /// A reduced run (about 2.5 minutes): smaller workloads, fewer scenarios.
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

fn requests(r: f64) -> Rates {
    Rates {
        requests: Some(r),
        tokens: None,
    }
}

/// A scenario of `workload` from 64 threads / 512 tasks in one process with the local
/// store, every strategy, budget from the server's best.
#[allow(clippy::too_many_arguments)]
fn scenario(
    id: &str,
    title: &str,
    emulator: Config,
    limit: Rates,
    available: Rates,
    workload: Workload,
    (processes, store): (usize, StoreKind),
    targets: Targets,
) -> Scenario {
    Scenario {
        id: id.into(),
        title: title.into(),
        server: Server::steady(None, None),
        change: None,
        front: Front::Emulator,
        emulator,
        limit,
        available,
        workload,
        threads: 64,
        tasks: 512,
        processes,
        store,
        budget: Duration::from_secs(60),
        strategies: Strategy::ALL.to_vec(),
        targets,
    }
    .derive_server()
    .with_budget_from_best()
}

/// The semantics of an unknown limit, as the grid and S5 name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// A token bucket with a burst of one window.
    Bucket,
    /// A fixed window.
    FixedWindow,
    /// A sliding log.
    SlidingLog,
    /// A leaky bucket without burst (nginx `limit_req`'s default, the emulator's
    /// [`Semantics::Leaky`]).
    Leaky,
    /// At most K requests in flight, each held [`IN_FLIGHT_LATENCY_MS`] by the server,
    /// K = rate × that latency (no rate limit).
    InFlight,
}

/// The service time of the concurrency-limited scenarios, milliseconds.
pub const IN_FLIGHT_LATENCY_MS: u64 = 500;

impl Unknown {
    /// Every semantics.
    pub const ALL: [Unknown; 5] = [
        Unknown::Bucket,
        Unknown::FixedWindow,
        Unknown::SlidingLog,
        Unknown::Leaky,
        Unknown::InFlight,
    ];

    /// `bucket`, `fixed-window`, `sliding-log`, `leaky`, `in-flight`.
    pub fn name(self) -> &'static str {
        match self {
            Unknown::Bucket => "bucket",
            Unknown::FixedWindow => "fixed-window",
            Unknown::SlidingLog => "sliding-log",
            Unknown::Leaky => "leaky",
            Unknown::InFlight => "in-flight",
        }
    }

    /// The emulator enforcing `per_window` requests per `window_secs` this way (for
    /// [`Unknown::InFlight`]: that rate's worth of requests in flight), no headers.
    pub fn emulator(self, per_window: u64, window_secs: f64) -> Config {
        let semantics = match self {
            Unknown::Bucket | Unknown::InFlight => Semantics::Bucket,
            Unknown::FixedWindow => Semantics::FixedWindow,
            Unknown::SlidingLog => Semantics::SlidingLog,
            Unknown::Leaky => Semantics::Leaky,
        };
        let limits = if self == Unknown::InFlight {
            let rate = per_window as f64 / window_secs;
            let k = (rate * IN_FLIGHT_LATENCY_MS as f64 / 1000.0)
                .round()
                .max(1.0) as u64;
            Limits {
                concurrency: Some(k),
                ..Limits::new(None, None)
            }
        } else {
            Limits::new(Some(per_window), None)
        };
        let mut c = config(Era::Late2025, semantics, window_secs, limits);
        if self == Unknown::InFlight {
            c.latency_ms = IN_FLIGHT_LATENCY_MS;
        }
        c.headers = false;
        c
    }
}

/// One point of the targets grid: `rate` requests per second (1-s windows), `callers`
/// threads and tasks, announced (a bucket with headers) or unknown under `semantics`;
/// 100 calls at least, 10 s of capacity at least.
pub fn grid_point(rate: u64, callers: usize, semantics: Option<Unknown>) -> Scenario {
    let calls = (rate as usize * 10).max(100);
    let (emulator, name, targets) = match semantics {
        None => (
            config(
                Era::Late2025,
                Semantics::Bucket,
                1.0,
                Limits::new(Some(rate), None),
            ),
            "announced",
            Targets::announced(),
        ),
        Some(u) => (u.emulator(rate, 1.0), u.name(), Targets::unknown()),
    };
    let s = scenario(
        &format!("G-{name}-{rate}rps-{callers}c"),
        &format!(
            "grid: {calls} calls, {callers} caller(s), {rate} requests/s, {}",
            match semantics {
                None => "announced (bucket of one second, headers)".to_owned(),
                Some(u) => format!("unknown ({}, no headers)", u.name()),
            }
        ),
        emulator,
        requests(rate as f64),
        requests(rate as f64),
        Workload::uniform(MODEL, calls, SHORT),
        (1, StoreKind::Local),
        targets,
    );
    Scenario {
        threads: callers,
        tasks: callers,
        ..s
    }
    .with_budget_from_best()
}

/// The whole targets grid: 2, 10, 50 requests/s × 1, 8, 32, 128 callers × announced
/// and each unknown semantics (60 points; over an hour).
pub fn grid() -> Vec<Scenario> {
    let mut out = Vec::new();
    for rate in [2, 10, 50] {
        for callers in [1, 8, 32, 128] {
            out.push(grid_point(rate, callers, None));
            for u in Unknown::ALL {
                out.push(grid_point(rate, callers, Some(u)));
            }
        }
    }
    out
}

/// The sample of the grid a default run has: its corners and middle.
pub fn grid_sample(size: Size) -> Vec<Scenario> {
    match size {
        Size::Quick => vec![grid_point(10, 8, Some(Unknown::Leaky))],
        Size::Full => vec![
            grid_point(2, 1, Some(Unknown::Leaky)),
            grid_point(10, 32, Some(Unknown::FixedWindow)),
            grid_point(10, 8, Some(Unknown::InFlight)),
            grid_point(50, 128, None),
        ],
    }
}

/// Every scenario of a run of `size` (with a sample of the targets grid; [`grid`] has
/// the whole of it).
pub fn all(size: Size) -> Vec<Scenario> {
    let quick = size == Size::Quick;
    let n = |full: usize, quick_n: usize| if quick { quick_n } else { full };
    let mut out = Vec::new();

    // S1: the reported case. 20 at once against 5 per second, a bucket of 5.
    let s1_limits = Limits {
        burst: Some(5),
        ..Limits::new(Some(5), None)
    };
    let s1 = scenario(
        "S1",
        "20 requests at once against 5 requests per second (bucket of 5)",
        config(Era::Late2025, Semantics::Bucket, 1.0, s1_limits),
        requests(5.0),
        requests(5.0),
        Workload::uniform(MODEL, 20, SHORT),
        (1, StoreKind::Local),
        Targets {
            faster_than_seed_fix: Some(10.0),
            ..Targets::announced()
        },
    );
    out.push(Scenario {
        threads: 20,
        tasks: 20,
        budget: Duration::from_secs(30),
        ..s1
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
                varied: false,
            },
            Phase {
                count: count - count * 3 / 4,
                prompt_chars: LONG,
                varied: false,
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
        Targets::announced(),
    ));

    // S3 and S4: 4 processes sharing one budget through a store.
    if !quick {
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
                mixed(1000),
                (4, store),
                Targets::announced(),
            ));
        }
    }

    // S5: no headers; the limit is learned from 429s, under each semantics.
    let semantics: &[Unknown] = if quick {
        &[Unknown::Leaky, Unknown::InFlight]
    } else {
        &Unknown::ALL
    };
    for &u in semantics {
        out.push(scenario(
            &format!("S5-{}", u.name()),
            &format!(
                "no headers: 100 requests per 2 s, learned from 429s ({})",
                u.name()
            ),
            u.emulator(100, 2.0),
            requests(50.0),
            requests(50.0),
            Workload::uniform(MODEL, n(500, 150), SHORT),
            (1, StoreKind::Local),
            Targets::unknown(),
        ));
    }

    // S6: a background consumer tries to spend 30 % of the budget.
    if !quick {
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
            Workload::uniform(MODEL, 1400, SHORT),
            (1, StoreKind::Local),
            Targets::announced(),
        ));
    }

    // S7: a one-minute window scaled down to 6 s, headers on every response (the
    // measured table's rows (e) and (f) at a tenth of their time).
    out.extend(minute_windows(0.1, n(16, 16)));

    // S8/S9: the limit doubled or halved mid-run, announced (S8) or not (S9).
    for (id, headers) in [("S8", true), ("S9", false)] {
        for (name, before, after) in [("doubled", 20, 40), ("halved", 40, 20)] {
            let sampled = (headers && name == "doubled") || (!headers && name == "halved");
            if quick && !sampled {
                continue;
            }
            out.push(changed_limit(id, name, headers, before, after));
        }
    }

    // S10: another program of the organisation starts spending half of the budget.
    if !quick {
        out.push(background_from(4.0, 0.5));
    }

    // S11: Mistral's 2026 limits as announced (a request and a token bucket, full at the
    // start; the minute scaled down to 6 s), prompts of 200 to 3,200 characters,
    // `max_tokens` unset on half, answers of 66 to 154 tokens the client cannot know.
    let s11_limits = Limits::new(Some(200), Some(12_000));
    let s11_rates = Rates {
        requests: Some(200.0 / 6.0),
        tokens: Some(2_000.0),
    };
    let mut s11_config = config(Era::Y2026, Semantics::Bucket, 6.0, s11_limits);
    s11_config.completion_tokens = super::workload::Varied::COMPLETION;
    s11_config.completion_spread = super::workload::Varied::SPREAD;
    out.push(scenario(
        "S11",
        "Mistral's 2026 request and token buckets, prompts of every size, max_tokens unset on half",
        s11_config,
        s11_rates,
        s11_rates,
        Workload {
            model: MODEL.into(),
            phases: vec![Phase {
                count: n(240, 120),
                prompt_chars: 1_700,
                varied: true,
            }],
        },
        (1, StoreKind::Local),
        Targets::announced(),
    ));

    out.extend(grid_sample(size));
    out
}

/// S10: 40 requests per second (a 1-s bucket, headers on) for `at` seconds, then a
/// background consumer spends `share` of it; 10 s of capacity in all.
pub fn background_from(at: f64, share: f64) -> Scenario {
    let rate = 40.0;
    let calls = (rate * at + rate * (1.0 - share) * 6.0) as usize;
    let s = Scenario {
        change: Some(LimitChange {
            at: Duration::from_secs_f64(at),
            limits: None,
            background_share: Some(share),
        }),
        ..scenario(
            "S10-background",
            &format!(
                "another program starts spending {:.0} % of 40 requests/s at {at} s, headers on",
                share * 100.0
            ),
            config(
                Era::Late2025,
                Semantics::Bucket,
                1.0,
                Limits::new(Some(40), None),
            ),
            requests(rate),
            requests(rate * (1.0 - share)),
            Workload::uniform(MODEL, calls, SHORT),
            (1, StoreKind::Local),
            Targets::announced().recovering_within(5.0),
        )
    };
    s.derive_server().with_budget_from_best()
}

/// S7: a bucket of 50 refilled 50 per minute and a fixed minute window of 50, each
/// with `limit`/`remaining` headers on every response, the minute scaled by `scale`;
/// 120 calls from `callers` callers.
pub fn minute_windows(scale: f64, callers: usize) -> Vec<Scenario> {
    let window = 60.0 * scale;
    // The 2026 names: `-req-minute` at a true minute, `-req-N-second` for a window
    // scaled down.
    let era = Era::Y2026;
    let mut out = Vec::new();
    for (id, semantics, what) in [
        (
            "S7-bucket",
            Semantics::Bucket,
            "token bucket of 50 refilled 50",
        ),
        (
            "S7-fixed-window",
            Semantics::FixedWindow,
            "fixed window of 50",
        ),
    ] {
        let s = scenario(
            id,
            &format!(
                "{what} per {window} s (a minute × {scale}), headers on every response, 120 calls"
            ),
            config(era, semantics, window, Limits::new(Some(50), None)),
            requests(50.0 / window),
            requests(50.0 / window),
            Workload::uniform(MODEL, 120, SHORT),
            (1, StoreKind::Local),
            Targets::announced(),
        );
        out.push(
            Scenario {
                threads: callers,
                tasks: callers,
                ..s
            }
            .with_budget_from_best(),
        );
    }
    out
}

/// S8/S9: `before` requests per second (a 1-s bucket) for 4 s, then `after`, for 10 s
/// of capacity in all; announced or not.
pub fn changed_limit(id: &str, name: &str, headers: bool, before: u64, after: u64) -> Scenario {
    let at = 4.0;
    let calls = (before as f64 * at + after as f64 * 6.0) as usize;
    let mut emulator = config(
        Era::Late2025,
        Semantics::Bucket,
        1.0,
        Limits::new(Some(before), None),
    );
    emulator.headers = headers;
    let targets = if headers {
        Targets::announced()
    } else {
        Targets::unknown()
    };
    let s = Scenario {
        change: Some(LimitChange {
            at: Duration::from_secs_f64(at),
            limits: Some(Limits::new(Some(after), None)),
            background_share: None,
        }),
        ..scenario(
            &format!("{id}-{name}"),
            &format!(
                "the limit {name} mid-run: {before}/s, then {after}/s from 4 s on, headers {}",
                if headers { "on" } else { "off" }
            ),
            emulator,
            requests(before.max(after) as f64),
            requests(after as f64),
            Workload::uniform(MODEL, calls, SHORT),
            (1, StoreKind::Local),
            targets.recovering_within(5.0),
        )
    };
    s.derive_server().with_budget_from_best()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_run_has_every_scenario_and_strategy() {
        let all = all(Size::Full);
        let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
        for id in [
            "S1",
            "S2",
            "S3",
            "S4",
            "S5-bucket",
            "S5-fixed-window",
            "S5-sliding-log",
            "S5-leaky",
            "S5-in-flight",
            "S6",
            "S7-bucket",
            "S7-fixed-window",
            "S8-doubled",
            "S8-halved",
            "S9-doubled",
            "S9-halved",
            "S10-background",
            "S11",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        assert!(ids.iter().any(|i| i.starts_with("G-")));
        assert!(all.iter().all(|s| s.strategies == Strategy::ALL));
        assert_eq!(all[1].workload.len(), 2000);
        // S2's old ideal: 1500 ÷ 100/s + 500 × 136 ÷ 10,000/s = 21.8 s.
        let ideal = all[1].workload.ideal(all[1].available).as_secs_f64();
        assert!((ideal - 21.8).abs() < 1e-6, "{ideal}");
        for s in &all {
            assert!(s.emulator.models.contains_key(MODEL));
            let best = s.best_s(Strategy::OursBlocking);
            assert!(
                best.is_finite() && best < s.budget.as_secs_f64(),
                "{}",
                s.id
            );
        }
    }

    #[test]
    fn the_server_s_best_counts_the_burst() {
        let all = all(Size::Full);
        let find = |id: &str| all.iter().find(|s| s.id == id).unwrap();
        // S1: 5 at once, then one every 0.2 s: the 20th at 3 s (the old ideal: 4 s).
        assert!((find("S1").best_s(Strategy::OursBlocking) - 3.0).abs() < 1e-6);
        // S7-bucket at a tenth: 50 at once, then 70 × 0.12 s = 8.4 s.
        assert!((find("S7-bucket").best_s(Strategy::OursAsync) - 8.4).abs() < 1e-6);
        assert!((find("S7-fixed-window").best_s(Strategy::OursAsync) - 12.0).abs() < 1e-6);
        // S5-leaky: 500 at 50/s without burst: 9.98 s.
        assert!((find("S5-leaky").best_s(Strategy::OursAsync) - 9.98).abs() < 1e-6);
        // S5-in-flight: 25 in flight for 0.5 s each: 20 rounds, 10 s.
        assert!((find("S5-in-flight").best_s(Strategy::OursAsync) - 10.0).abs() < 1e-6);
        // S8-doubled: a bucket of 20 at 0, 20/s to 4 s (80 more, the last at 4.0 s is
        // the new epoch's), then a fresh bucket of 40 and 40/s.
        let s8 = find("S8-doubled");
        assert_eq!(s8.server.epochs.len(), 2);
        assert!(s8.best_s(Strategy::OursAsync) < 10.0);
    }

    #[test]
    fn a_quick_run_is_smaller() {
        let quick = all(Size::Quick);
        assert!(
            quick
                .iter()
                .all(|s| s.workload.len() <= 400 && s.budget.as_secs() <= 60)
        );
        assert_eq!(quick.iter().filter(|s| s.id.starts_with("S5")).count(), 2);
        assert!(quick.len() < all(Size::Full).len());
    }

    #[test]
    fn the_grid_has_every_point() {
        let g = grid();
        assert_eq!(g.len(), 3 * 4 * 6);
        assert!(g.iter().all(|s| s.workload.len() >= 100));
        let p = g.iter().find(|s| s.id == "G-leaky-2rps-1c").unwrap();
        assert_eq!((p.threads, p.tasks), (1, 1));
        // 100 calls at 2/s without burst: 49.5 s.
        assert!((p.best_s(Strategy::OursBlocking) - 49.5).abs() < 1e-6);
    }
}
