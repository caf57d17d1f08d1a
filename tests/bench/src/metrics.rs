//! One row of the report: what a strategy achieved in a scenario, computed from the
//! calls' records, the clients' counters and the emulator's log.
//!
//! - **the server's best**: the earliest the server, with its own semantics and limits
//!   (a bucket's burst, a window's reset, a limit changed mid-run...), could have
//!   answered the whole workload ([`mistral_emulator::best`]), from the run's start;
//! - **makespan ÷ best**: from the run's start to the last call's return, over that;
//! - **goodput ÷ best**: the server's best for as many requests as *succeeded*, over the
//!   makespan: 1.0 is a client the server could not have served faster;
//! - **recovery** (a limit changed mid-run): how long after the change the client's
//!   admitted rate is back at ≥ 0.90 of the new limit over a whole window;
//! - **ideal** (kept in the JSON): the old yardstick, requests ÷ rate;
//! - **429s**: client requests the emulator answered 429; **attempts per request**:
//!   HTTP requests the emulator received ÷ calls started;
//! - **CPU per 1,000 requests** and **peak memory**: of the client processes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::{CallRecord, Counters, JobResult};
use super::measure::quantile;
use super::scenario::Scenario;
use super::strategy::Strategy;
use super::workload::Rates;
use mistral_emulator::Log;
use mistral_emulator::best::Server;

/// One target checked on one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked, e.g. `goodput ÷ limit`.
    pub what: String,
    /// The target, e.g. `≥ 0.97`.
    pub wanted: String,
    /// What was measured.
    pub got: String,
    /// Whether the target is met.
    pub met: bool,
}

/// What one strategy achieved in one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Scenario id.
    pub scenario: String,
    /// Strategy name.
    pub strategy: String,
    /// Client processes.
    pub processes: usize,
    /// Threads or tasks over all processes.
    pub concurrency: usize,
    /// Requests to send.
    pub work: usize,
    /// Calls that succeeded.
    pub succeeded: usize,
    /// Calls that returned an error to the caller.
    pub errors: usize,
    /// Requests never finished (cut by the budget).
    pub unfinished: usize,
    /// The run's budget, seconds.
    pub budget_s: f64,
    /// Seconds from the epoch to the last call's return.
    pub makespan_s: f64,
    /// The ideal time of the whole workload, seconds.
    pub ideal_s: f64,
    /// `makespan ÷ ideal`, when every request finished (the old yardstick).
    pub makespan_ratio: Option<f64>,
    /// The server's best for the whole workload, seconds from the run's start.
    pub best_s: Option<f64>,
    /// `makespan ÷ the server's best`, when every request finished.
    pub makespan_vs_best: Option<f64>,
    /// The server's best for the successful calls ÷ makespan.
    pub goodput_ratio: Option<f64>,
    /// A limit changed mid-run: seconds from the change until a window in which the
    /// client's admitted rate is ≥ 0.90 of the new limit begins.
    pub recovery_s: Option<f64>,
    /// The limit change measured, in words (or why no recovery was found).
    pub recovery_note: Option<String>,
    /// Client requests answered 429.
    pub http_429: usize,
    /// HTTP requests received ÷ calls started.
    pub attempts_per_request: Option<f64>,
    /// Median latency of finished calls, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of finished calls, ms.
    pub p99_ms: Option<f64>,
    /// CPU (user + system) per 1,000 finished calls, ms.
    pub cpu_ms_per_1k: Option<f64>,
    /// Peak resident memory of the largest client process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// CPU and memory are of a process shared with the emulator and other runs.
    pub process_wide: bool,
    /// Breaches of a limit found in the emulator's log (should be 0: the emulator
    /// enforces its limits; a breach would be an emulator bug).
    pub limit_breaches: usize,
    /// The clients' own counters, summed over processes.
    pub counters: Counters,
    /// Up to three error messages of different kinds.
    pub error_samples: Vec<String>,
    /// Targets checked (ours only).
    pub checks: Vec<Check>,
    /// Why the row has no numbers, or anything else to know about it.
    pub note: Option<String>,
}

impl Row {
    /// A row for a run that could not happen.
    pub fn not_run(scenario: &Scenario, strategy: Strategy, why: &str) -> Row {
        Row {
            scenario: scenario.id.clone(),
            strategy: strategy.name().into(),
            processes: scenario.processes,
            concurrency: scenario.concurrency_of(strategy),
            work: scenario.workload.len(),
            succeeded: 0,
            errors: 0,
            unfinished: scenario.workload.len(),
            budget_s: scenario.budget.as_secs_f64(),
            makespan_s: 0.0,
            ideal_s: scenario.workload.ideal(scenario.available).as_secs_f64(),
            makespan_ratio: None,
            best_s: None,
            makespan_vs_best: None,
            goodput_ratio: None,
            recovery_s: None,
            recovery_note: None,
            http_429: 0,
            attempts_per_request: None,
            p50_ms: None,
            p99_ms: None,
            cpu_ms_per_1k: None,
            peak_rss_mib: None,
            process_wide: false,
            limit_breaches: 0,
            counters: Counters::default(),
            error_samples: Vec::new(),
            checks: Vec::new(),
            note: Some(format!("not run: {why}")),
        }
    }

    /// Computes the row of `strategy` in `scenario` from the jobs' results and the
    /// emulator's log of the run; `start_s`: the run's start, seconds after the
    /// emulator's (its fixed windows are aligned on its own start); `front`: the HTTP
    /// requests and 429s a limiter in front of the emulator saw (nginx's access log), in
    /// place of the emulator's.
    pub fn compute(
        scenario: &Scenario,
        strategy: Strategy,
        results: &[JobResult],
        log: &Log,
        start_s: f64,
        front: Option<(usize, usize)>,
    ) -> Row {
        let workload = &scenario.workload;
        let rates = scenario.available;
        let calls: Vec<&CallRecord> = results.iter().flat_map(|r| r.calls.iter()).collect();
        let succeeded = calls.iter().filter(|c| c.ok()).count();
        let errors = calls.len() - succeeded;
        let unfinished: usize = results.iter().map(|r| r.unfinished).sum();
        let makespan = calls
            .iter()
            .map(|c| Duration::from_micros(c.end_us))
            .max()
            .unwrap_or_default();
        let ideal = workload.ideal(rates);
        let server = server_as_run(scenario, log, start_s);
        let best = server.best(
            &scenario.costs(),
            scenario.concurrency_of(strategy),
            start_s,
        );
        let best_s = best.makespan_s();
        let best_of_succeeded = best.of_first(succeeded);
        let (recovery_s, recovery_note) = recovery(scenario, &server, log, start_s);
        let latencies: Vec<Duration> = calls.iter().map(|c| c.latency()).collect();
        let counters = results
            .iter()
            .fold(Counters::default(), |a, r| a + r.counters);
        let cpu: Option<f64> = results.iter().map(|r| r.cpu_ms).sum();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        // One sample per kind of error (correlation ids differ on every response).
        let mut error_samples: Vec<String> = Vec::new();
        for c in &calls {
            if let Some(e) = &c.error
                && error_samples.len() < 3
                && !error_samples
                    .iter()
                    .any(|s| without_correlation_id(s) == without_correlation_id(e))
            {
                error_samples.push(e.clone());
            }
        }
        for r in results {
            if let Some(e) = &r.setup_error
                && !error_samples.contains(e)
            {
                error_samples.push(e.clone());
            }
        }
        let finished = calls.len();
        let secs = makespan.as_secs_f64();
        Row {
            scenario: scenario.id.clone(),
            strategy: strategy.name().into(),
            processes: scenario.processes,
            concurrency: scenario.concurrency_of(strategy),
            work: workload.len(),
            succeeded,
            errors,
            unfinished,
            budget_s: scenario.budget.as_secs_f64(),
            makespan_s: secs,
            ideal_s: ideal.as_secs_f64(),
            makespan_ratio: (unfinished == 0 && finished > 0 && !ideal.is_zero())
                .then(|| secs / ideal.as_secs_f64()),
            best_s: best_s.is_finite().then_some(best_s),
            makespan_vs_best: (unfinished == 0 && finished > 0 && best_s.is_finite())
                .then(|| secs / best_s.max(1e-3)),
            goodput_ratio: (secs > 0.0 && best_of_succeeded.is_finite())
                .then(|| best_of_succeeded.max(0.0) / secs),
            recovery_s,
            recovery_note,
            http_429: front.map_or_else(|| log.count_429(), |(_, refused)| refused),
            attempts_per_request: (counters.calls > 0).then(|| {
                front.map_or_else(|| log.total(), |(received, _)| received) as f64
                    / counters.calls as f64
            }),
            p50_ms: quantile(&latencies, 0.50).map(ms),
            p99_ms: quantile(&latencies, 0.99).map(ms),
            cpu_ms_per_1k: cpu
                .filter(|_| finished > 0)
                .map(|c| c * 1000.0 / finished as f64),
            peak_rss_mib: results
                .iter()
                .filter_map(|r| r.peak_rss_kib)
                .max()
                .map(|k| k as f64 / 1024.0),
            process_wide: results.iter().any(|r| r.process_wide),
            limit_breaches: log.violations().len(),
            counters,
            error_samples,
            checks: Vec::new(),
            note: None,
        }
    }

    /// "2000 of 2000", or "did not finish: N of W in X s".
    pub fn done(&self) -> String {
        if self.unfinished == 0 {
            format!("{} of {}", self.succeeded, self.work)
        } else {
            format!(
                "did not finish: {} of {} in {:.0} s",
                self.succeeded, self.work, self.budget_s
            )
        }
    }

    /// `true` when every target checked on the row is met (and there was one).
    pub fn all_met(&self) -> Option<bool> {
        (!self.checks.is_empty()).then(|| self.checks.iter().all(|c| c.met))
    }

    /// Checks ours against the scenario's targets (and against the seed fix's and the
    /// official-SDK-style rows when there are).
    pub fn check_targets(
        &mut self,
        scenario: &Scenario,
        seed_fix: Option<&Row>,
        official_sdk: Option<&Row>,
    ) {
        let t = scenario.targets;
        let mut checks = Vec::new();
        let fmt = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.3}"));
        if let Some(g) = t.goodput {
            checks.push(Check {
                what: "goodput ÷ server's best".into(),
                wanted: format!("≥ {g:.2}"),
                got: fmt(self.goodput_ratio),
                met: self.goodput_ratio.is_some_and(|v| v >= g),
            });
        }
        if let Some(m) = t.makespan {
            checks.push(Check {
                what: "makespan ÷ server's best".into(),
                wanted: format!("≤ {m:.2}"),
                got: match (self.makespan_vs_best, self.best_s) {
                    (Some(r), Some(b)) => {
                        format!("{r:.3} ({:.2} s vs {b:.2} s)", self.makespan_s)
                    }
                    (r, _) => fmt(r),
                },
                met: self.makespan_vs_best.is_some_and(|v| v <= m),
            });
        }
        checks.push(Check {
            what: "attempts per request".into(),
            wanted: format!("≤ {:.2}", t.attempts),
            got: fmt(self.attempts_per_request),
            met: self.attempts_per_request.is_some_and(|v| v <= t.attempts),
        });
        checks.push(Check {
            what: "errors surfaced".into(),
            wanted: "0".into(),
            got: format!("{} (+{} unfinished)", self.errors, self.unfinished),
            met: self.errors == 0 && self.unfinished == 0,
        });
        if let Some(within) = t.recovery_s {
            checks.push(Check {
                what: "back at ≥ 0.90 of a changed limit".into(),
                wanted: format!("within {within:.1} s"),
                got: match self.recovery_s {
                    Some(r) => format!("{r:.2} s"),
                    None => format!(
                        "never ({})",
                        self.recovery_note.as_deref().unwrap_or("no change seen")
                    ),
                },
                met: self.recovery_s.is_some_and(|r| r <= within),
            });
        }
        if let (Some(times), Some(seed)) = (t.faster_than_seed_fix, seed_fix) {
            let ratio = (self.makespan_s > 0.0).then(|| seed.makespan_s / self.makespan_s);
            let lost = seed.errors + seed.unfinished;
            checks.push(Check {
                what: "faster than the seed fix (wall time until every call returned)".into(),
                wanted: format!("≥ {times:.0}×"),
                got: format!(
                    "{}× ({:.1} s vs {:.1} s; the seed fix lost {lost} of {} requests)",
                    fmt(ratio),
                    self.makespan_s,
                    seed.makespan_s,
                    seed.work
                ),
                met: ratio.is_some_and(|r| r >= times),
            });
        }
        if let (true, Some(sdk)) = (t.not_slower_than_sdk, official_sdk) {
            // An unfinished baseline took at least its budget.
            let sdk_time = if sdk.unfinished > 0 {
                sdk.budget_s.max(sdk.makespan_s)
            } else {
                sdk.makespan_s
            };
            let mine_done = self.unfinished == 0;
            checks.push(Check {
                what: "makespan not worse than the official-SDK style".into(),
                wanted: format!("≤ {sdk_time:.2} s"),
                got: format!(
                    "{:.2} s{}",
                    self.makespan_s,
                    if mine_done { "" } else { " (unfinished)" }
                ),
                met: mine_done && (sdk.unfinished > 0 || self.makespan_s <= sdk_time),
            });
        }
        self.checks = checks;
    }
}

/// The scenario's server model with the limit changes at the instants the emulator's
/// log recorded them, or (a background consumer's change, which the log does not
/// record) as planned from the run's start at `start_s`; seconds after the emulator's
/// start.
pub fn server_as_run(scenario: &Scenario, log: &Log, start_s: f64) -> Server {
    let mut server = scenario.server.clone();
    let history = log.limits(super::scenario::MODEL);
    for (i, epoch) in server.epochs.iter_mut().enumerate().skip(1) {
        match history.get(i) {
            Some(seen) => epoch.since_s = seen.since.as_secs_f64(),
            None => epoch.since_s += start_s,
        }
    }
    server
}

/// The recovery after a limit change: seconds from the change until the first window
/// (one emulator window, at least 1 s) in which the client's admitted rate is ≥ 0.90
/// of the new limit (windows tried in steps of 50 ms, each wholly before the last
/// admission), with a note on what was measured.
fn recovery(
    scenario: &Scenario,
    server: &Server,
    log: &Log,
    start_s: f64,
) -> (Option<f64>, Option<String>) {
    if scenario.change.is_none() {
        return (None, None);
    }
    let Some(epoch) = server.epochs.get(1) else {
        return (None, Some("the change never happened".into()));
    };
    let Some(rate) = server.final_rate(scenario.costs().last().copied().unwrap_or(1)) else {
        return (None, Some("no new limit".into()));
    };
    let change = epoch.since_s;
    let window = scenario.emulator.window_secs.max(1.0);
    let mut admitted: Vec<f64> = log
        .entries()
        .iter()
        .filter(|e| e.source == mistral_emulator::Source::Client && e.admitted())
        .filter_map(|e| e.decided.map(|d| d.as_secs_f64()))
        .collect();
    admitted.sort_by(f64::total_cmp);
    let last = admitted.last().copied().unwrap_or(0.0);
    let wanted = 0.90 * rate * window;
    let mut step = 0u32;
    loop {
        let d = f64::from(step) * 0.05;
        if change + d + window > last + 1e-9 {
            break;
        }
        let from = change + d;
        let n = admitted
            .iter()
            .filter(|&&t| t >= from && t < from + window)
            .count();
        if n as f64 >= wanted {
            return (
                Some(d),
                Some(format!(
                    "change at {:.2} s of the run, new limit {rate:.1}/s, {n} admitted in \
                     the {window:.0}-s window from {:.2} s",
                    change - start_s,
                    from - start_s
                )),
            );
        }
        step += 1;
    }
    (
        None,
        Some(format!(
            "no {window:.0}-s window at ≥ {wanted:.1} admitted between the change at {:.2} s \
             and the last admission at {:.2} s",
            change - start_s,
            last - start_s
        )),
    )
}

/// An error message without its `[correlation id …]`.
fn without_correlation_id(message: &str) -> &str {
    message
        .find(" [correlation id")
        .map_or(message, |at| &message[..at])
}

/// Seconds of the binding limit one request of `tokens` tokens needs at `rates`.
pub fn unit_cost(rates: Rates, tokens: u64) -> f64 {
    let by_requests = rates.requests.map_or(0.0, |r| 1.0 / r);
    let by_tokens = rates.tokens.map_or(0.0, |r| tokens as f64 / r);
    by_requests.max(by_tokens)
}

/// Admitted client requests per second in bins of `bin` seconds, from the run's epoch
/// (`offset_us` = emulator start − epoch, in µs): `(bin start, rate)` pairs.
pub fn admitted_rate(log: &Log, offset_us: i64, bin: f64, until: f64) -> Vec<(f64, f64)> {
    let bins = ((until / bin).ceil() as usize).max(1);
    let mut counts = vec![0usize; bins];
    for e in log.entries() {
        if e.source != mistral_emulator::Source::Client || !e.admitted() {
            continue;
        }
        let Some(at) = e.decided else { continue };
        let t = (at.as_micros() as i64 + offset_us) as f64 / 1e6;
        if t < 0.0 {
            continue;
        }
        let i = (t / bin) as usize;
        if i < bins {
            counts[i] += 1;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| (i as f64 * bin, n as f64 / bin))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_cost_takes_the_binding_limit() {
        let rates = Rates {
            requests: Some(100.0),
            tokens: Some(10_000.0),
        };
        assert!((unit_cost(rates, 26) - 0.01).abs() < 1e-12);
        assert!((unit_cost(rates, 136) - 0.0136).abs() < 1e-12);
    }

    /// A log of client admissions at the given instants (seconds), with the limits'
    /// history of `scenario`'s change at `change_s`.
    fn log_of(scenario: &Scenario, admitted: &[f64], change_s: f64) -> Log {
        use mistral_emulator::{Entry, LimitsEpoch, Outcome, Source};
        let entries = admitted
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                seq: i as u64,
                source: Source::Client,
                arrived: Duration::from_secs_f64(t),
                decided: Some(Duration::from_secs_f64(t)),
                method: "POST".into(),
                path: "/v1/chat/completions".into(),
                model: Some(super::super::scenario::MODEL.into()),
                key_hash: None,
                user_agent: None,
                accept: None,
                stream: false,
                tokens: 26,
                status: 200,
                outcome: Outcome::Served,
                fault: None,
                generation: u32::from(t >= change_s),
            })
            .collect();
        let before = scenario
            .emulator
            .effective(scenario.emulator.limits_for(super::super::scenario::MODEL));
        let after = scenario.emulator.effective(
            scenario
                .change
                .as_ref()
                .and_then(|c| c.limits.as_ref())
                .unwrap(),
        );
        let history = vec![
            LimitsEpoch {
                generation: 0,
                since: Duration::ZERO,
                limits: before,
            },
            LimitsEpoch {
                generation: 1,
                since: Duration::from_secs_f64(change_s),
                limits: after,
            },
        ];
        Log::from_parts(
            entries,
            [(super::super::scenario::MODEL.to_owned(), history)].into(),
        )
    }

    #[test]
    fn recovery_is_the_first_window_at_0_90_of_the_new_limit() {
        let s = super::super::scenario::changed_limit("S8", "doubled", true, 20, 40);
        // 20/s until the change at 4 s; then 20/s for 2 s more, then 40/s.
        let mut at: Vec<f64> = (0..80).map(|i| i as f64 / 20.0).collect();
        at.extend((0..40).map(|i| 4.0 + i as f64 / 20.0));
        at.extend((0..160).map(|i| 6.0 + i as f64 / 40.0));
        let log = log_of(&s, &at, 4.0);
        let server = server_as_run(&s, &log, 0.0);
        assert!((server.epochs[1].since_s - 4.0).abs() < 1e-9);
        let (got, note) = recovery(&s, &server, &log, 0.0);
        // A 1-s window needs 36 admissions: the first with as many starts at 5.8 s
        // (4 at 20/s, 32 at 40/s), 1.8 s after the change (in steps of 0.05 s).
        let got = got.expect("recovered");
        assert!((got - 1.8).abs() <= 0.051, "{got} ({note:?})");
        // A client that never gets past the old rate never recovers.
        let flat: Vec<f64> = (0..200).map(|i| i as f64 / 20.0).collect();
        let log = log_of(&s, &flat, 4.0);
        let (got, note) = recovery(&s, &server_as_run(&s, &log, 0.0), &log, 0.0);
        assert_eq!(got, None, "{note:?}");
        assert!(note.is_some_and(|n| n.contains("no 1-s window")));
    }
}
