//! The soak: a long run under faults of every kind, with the shared store restarted
//! under it. Four processes (two blocking, two async) share one budget through a Redis
//! that is killed and restarted (empty) twice; the emulator hits a share of the requests
//! with a random fault (5xx, resets, closes, hangs, stalled and cut bodies, malformed
//! JSON, delays, ambiguous 429s, capacity refusals).
//!
//! What it reports: calls lost (never finished), errors by kind (each kind is either
//! justified — the fault is one no retry may paper over — or not), the most requests the
//! emulator admitted in any window against its limit (and its own list of violations),
//! 429s, and each process's peak memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::child::run_in_children;
use super::job::{Job, JobResult, StoreSpec, run_job, unix_us};
use super::scenario::MODEL;
use super::stores::RedisServer;
use super::strategy::Strategy;
use super::suite::Isolation;
use super::workload::Workload;
use mistral_emulator::{Config, Emulator, Era, Fault, Limits, Semantics};

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long calls are started for.
    pub duration: Duration,
    /// Processes (jobs) sharing the budget; half blocking, half async.
    pub processes: usize,
    /// Share of requests hit by a random fault.
    pub fault_rate: f64,
    /// Times Redis is killed and restarted empty during the run (evenly spaced).
    pub redis_restarts: u32,
    /// The limit: requests per 2-second window.
    pub limit_per_window: u64,
    /// Child processes or threads.
    pub isolation: Isolation,
}

impl SoakOptions {
    /// A soak of `minutes` minutes: 4 processes, 10 % faults, Redis restarted twice,
    /// 40 requests per 2 s.
    pub fn minutes(minutes: f64, isolation: Isolation) -> SoakOptions {
        SoakOptions {
            duration: Duration::from_secs_f64(minutes * 60.0),
            processes: 4,
            fault_rate: 0.10,
            redis_restarts: 2,
            limit_per_window: 40,
            isolation,
        }
    }
}

/// What the soak measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    /// Seconds calls were started for.
    pub duration_s: f64,
    /// Processes.
    pub processes: usize,
    /// Requests in the workload.
    pub requests: usize,
    /// Calls that returned (success or error).
    pub finished: usize,
    /// Calls that succeeded.
    pub succeeded: usize,
    /// Calls never finished (still running past the grace period, or not started within
    /// three times the planned duration).
    pub lost: usize,
    /// Seconds from the first call to the last return.
    pub makespan_s: f64,
    /// Errors by kind (the first words of their `Display`).
    pub errors: BTreeMap<String, usize>,
    /// Errors of a kind no fault justifies.
    pub unjustified: usize,
    /// HTTP attempts.
    pub attempts: u64,
    /// Faults the emulator injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// 429s the emulator sent (its own refusals and the injected ones).
    pub http_429: usize,
    /// 429s of the emulator's own limiter (not injected as faults).
    pub own_429: usize,
    /// Most requests the emulator admitted in any window of its length.
    pub max_in_window: usize,
    /// The limit per window.
    pub limit_per_window: u64,
    /// The emulator's own list of windows over the limit.
    pub violations: Vec<String>,
    /// Redis restarts done.
    pub redis_restarts: u32,
    /// Peak resident memory of each process, KiB.
    pub peak_rss_kib: Vec<Option<u64>>,
    /// Setup errors of processes, if any.
    pub setup_errors: Vec<String>,
}

/// The faults the soak draws from: every kind a server or network inflicts (not the
/// refusals of a bad request, which are the caller's).
pub fn soak_faults() -> Vec<Fault> {
    vec![
        Fault::Http500,
        Fault::Http502Html,
        Fault::Http503,
        Fault::Http504,
        Fault::Reset,
        Fault::Close,
        Fault::Hang,
        Fault::StallAfter(1),
        Fault::CutAfter(1),
        Fault::MalformedJson,
        Fault::DelayMs(300),
        Fault::Ambiguous429,
        Fault::Capacity,
    ]
}

/// The kind of an error, from its `Display`, and whether a fault justifies it.
///
/// Justified: a 200 whose body is malformed (a `Decode` error: the answer was given,
/// and perhaps billed; it is not asked again), a request whose outcome is unknown (a
/// reset, a close or a hang after it was sent, a cut 2xx: the server may have run it,
/// so it is not sent again). Anything else (a 5xx, a 429 the retries did not get past,
/// a deadline) is a call the client should have carried through.
pub fn error_kind(display: &str) -> (&'static str, bool) {
    const KINDS: &[(&str, &str, bool)] = &[
        ("could not decode", "decode (malformed 200)", true),
        ("outcome unknown", "outcome unknown (sent, no answer)", true),
        ("connection closed early", "cut or reset", false),
        ("server error", "server error", false),
        ("timed out", "timeout", false),
        ("deadline", "deadline", false),
        ("rate limited", "rate limited", false),
        ("Mistral is out of capacity", "capacity", false),
        ("stream failed", "stream", false),
        ("could not connect", "connect", false),
    ];
    KINDS
        .iter()
        .find(|(prefix, _, _)| display.starts_with(prefix))
        .map_or(("other", false), |(_, kind, justified)| (kind, *justified))
}

fn progress(text: &str) {
    eprintln!("[soak] {text}");
}

/// Runs the soak.
pub fn run_soak(options: &SoakOptions) -> Result<SoakReport, String> {
    let redis = Arc::new(Mutex::new(RedisServer::start()?));
    let url = redis.lock().map_err(|_| "redis lock")?.url();
    let window_secs = 2.0;
    let config = Config {
        era: Era::Late2025,
        semantics: Semantics::SlidingLog,
        window_secs,
        seed: 0x50A4,
        fault_rate: options.fault_rate,
        random_faults: soak_faults(),
        hang_secs: 2,
        ..Config::default()
    }
    .model(MODEL, Limits::new(Some(options.limit_per_window), None));
    let emulator = Emulator::start(config);
    let rate = options.limit_per_window as f64 / window_secs;
    // A little under the limit: the client must keep up with it through the faults.
    let count = (rate * options.duration.as_secs_f64() * 0.9) as usize;
    let workload = Workload::uniform(MODEL, count, 40);
    let processes = options.processes.max(1);
    let lead = match options.isolation {
        Isolation::Children(_) => Duration::from_millis(500),
        Isolation::InProcess => Duration::from_millis(50),
    };
    let epoch_unix_us = unix_us() + lead.as_micros() as u64;
    let jobs: Vec<Job> = (0..processes)
        .map(|share| {
            let strategy = if share % 2 == 0 {
                Strategy::OursBlocking
            } else {
                Strategy::OursAsync
            };
            Job {
                url: emulator.url(),
                key: emulator.key().to_owned(),
                strategy,
                store: StoreSpec::Redis(url.clone()),
                workload: workload.clone(),
                share,
                shares: processes,
                concurrency: match strategy {
                    Strategy::OursAsync => 64,
                    _ => 16,
                },
                epoch_unix_us,
                // Room for every call to start even at a third of the limit: a call that
                // never returns is lost, one never started is not.
                budget_ms: options.duration.as_millis() as u64 * 3,
                grace_ms: 30_000,
                seed: 0x50A4_0000 + share as u64 * 7_919,
            }
        })
        .collect();
    progress(&format!(
        "{count} requests over {:.0} s from {processes} processes, {:.0} % faults, Redis \
         restarted {} times, limit {} per {window_secs} s",
        options.duration.as_secs_f64(),
        options.fault_rate * 100.0,
        options.redis_restarts,
        options.limit_per_window
    ));
    let done = Arc::new(AtomicBool::new(false));
    let restarts = {
        let (redis, done, n) = (
            Arc::clone(&redis),
            Arc::clone(&done),
            options.redis_restarts,
        );
        let every = options.duration / (n + 1);
        let start = Instant::now() + lead;
        std::thread::spawn(move || {
            let mut made = 0;
            for i in 1..=n {
                let at = start + every * i;
                while Instant::now() < at {
                    if done.load(Ordering::Relaxed) {
                        return made;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let restarted = redis.lock().map(|mut r| r.restart());
                match restarted {
                    Ok(Ok(())) => {
                        made += 1;
                        progress(&format!("Redis killed and restarted empty ({i} of {n})"));
                    }
                    Ok(Err(e)) => progress(&format!("Redis restart failed: {e}")),
                    Err(_) => return made,
                }
            }
            made
        })
    };
    let results: Vec<JobResult> = match &options.isolation {
        Isolation::Children(exe) => run_in_children(exe, &jobs),
        Isolation::InProcess => std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|job| scope.spawn(move || run_job(job, true)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        }),
    };
    done.store(true, Ordering::Relaxed);
    let redis_restarts = restarts.join().unwrap_or(0);
    let log = emulator.log();
    let mut report = SoakReport {
        duration_s: options.duration.as_secs_f64(),
        processes,
        requests: count,
        limit_per_window: options.limit_per_window,
        redis_restarts,
        ..SoakReport::default()
    };
    for result in &results {
        report.finished += result.calls.len();
        report.lost += result.unfinished;
        report.attempts += result.counters.attempts;
        report.peak_rss_kib.push(result.peak_rss_kib);
        if let Some(e) = &result.setup_error {
            report.setup_errors.push(e.clone());
        }
        for call in &result.calls {
            report.makespan_s = report.makespan_s.max(call.end_us as f64 / 1e6);
            match &call.error {
                None => report.succeeded += 1,
                Some(e) => {
                    let (kind, justified) = error_kind(e);
                    *report.errors.entry(kind.to_owned()).or_default() += 1;
                    if !justified {
                        report.unjustified += 1;
                    }
                }
            }
        }
    }
    for fault in soak_faults() {
        let n = log.count_fault(fault);
        if n > 0 {
            report.faults.insert(format!("{fault:?}"), n);
        }
    }
    report.http_429 = log.count_429();
    report.own_429 = report
        .http_429
        .saturating_sub(log.count_fault(Fault::Ambiguous429) + log.count_fault(Fault::Capacity));
    report.max_in_window =
        log.max_admitted_in_any_window(MODEL, Duration::from_secs_f64(window_secs));
    report.violations = log.violations();
    Ok(report)
}

impl SoakReport {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Soak\n");
        let _ = writeln!(
            s,
            "{} requests over {:.0} s from {} processes (blocking and async) sharing one \
             Redis store, restarted empty {} times; 10 % of requests hit by a random fault.\n",
            self.requests, self.duration_s, self.processes, self.redis_restarts
        );
        let _ = writeln!(s, "| measure | value |\n|---|---|");
        let _ = writeln!(
            s,
            "| calls finished | {} of {} |",
            self.finished, self.requests
        );
        let _ = writeln!(s, "| calls lost | {} |", self.lost);
        let _ = writeln!(
            s,
            "| time to finish | {:.1} s (ideal at the limit: {:.1} s) |",
            self.makespan_s,
            self.requests as f64 / (self.limit_per_window as f64 / 2.0)
        );
        let _ = writeln!(s, "| succeeded | {} |", self.succeeded);
        let _ = writeln!(
            s,
            "| errors not justified by their fault | {} |",
            self.unjustified
        );
        let _ = writeln!(s, "| HTTP attempts | {} |", self.attempts);
        let _ = writeln!(
            s,
            "| most admitted in any 2 s window | {} (limit {}) |",
            self.max_in_window, self.limit_per_window
        );
        let _ = writeln!(
            s,
            "| windows over the limit (emulator) | {} |",
            self.violations.len()
        );
        let _ = writeln!(
            s,
            "| 429s | {} ({} from the emulator's limiter, the rest injected) |",
            self.http_429, self.own_429
        );
        let rss: Vec<String> = self
            .peak_rss_kib
            .iter()
            .map(|r| r.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)))
            .collect();
        let _ = writeln!(s, "| peak RSS per process | {} |", rss.join(", "));
        let _ = writeln!(s, "\nErrors by kind: {:?}\n", self.errors);
        let _ = writeln!(s, "Faults injected: {:?}\n", self.faults);
        for e in &self.setup_errors {
            let _ = writeln!(s, "Setup error: {e}\n");
        }
        s
    }

    /// Writes `soak.md` and `soak.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("soak.md"), self.markdown())?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("soak.json"), json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_told_apart_and_only_a_malformed_200_or_an_unknown_outcome_is_justified() {
        assert_eq!(
            error_kind("could not decode the response: expected value"),
            ("decode (malformed 200)", true)
        );
        assert_eq!(
            error_kind("outcome unknown: connection closed early after the request was sent"),
            ("outcome unknown (sent, no answer)", true)
        );
        assert_eq!(
            error_kind("server error (503) after 3 attempts"),
            ("server error", false)
        );
        assert_eq!(
            error_kind("deadline of 600.0 s reached"),
            ("deadline", false)
        );
        assert_eq!(error_kind("something new"), ("other", false));
    }
}
