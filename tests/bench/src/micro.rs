//! The small measurements of the report: the core's criterion micro-benchmarks (parsed
//! from `cargo bench` output), each client's overhead over its bare HTTP library on a
//! workload without limits, and the emulator's own throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mistral_core::models::ChatResponse;
use mistral_limiter::LocalLimiter;
use serde::{Deserialize, Serialize};

use super::workload::Workload;
use mistral_emulator::{Config, Emulator, Limits};

/// One criterion benchmark: its name and the point estimate of its time per iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MicroBench {
    /// The benchmark's id.
    pub name: String,
    /// Nanoseconds per iteration (criterion's point estimate).
    pub ns: f64,
    /// The aim, in nanoseconds, when there is one.
    pub aim_ns: Option<f64>,
    /// What the aim is about.
    pub aim: Option<String>,
}

impl MicroBench {
    /// `Some(true)` when under its aim.
    pub fn met(&self) -> Option<bool> {
        self.aim_ns.map(|a| self.ns < a)
    }
}

/// Parses criterion's text output: every `time:   [low mid high]` line, named by the
/// same line or by the line above (criterion puts long ids on a line of their own).
pub fn parse_criterion(text: &str) -> Vec<MicroBench> {
    let mut out = Vec::new();
    let mut last_name: Option<String> = None;
    for raw in text.lines() {
        let line = strip_ansi(raw);
        if let Some(at) = line.find("time:") {
            let own = line[..at].trim();
            let name = if own.is_empty() {
                last_name.take()
            } else {
                Some(own.to_owned())
            };
            let values = line[at + 5..].trim().trim_start_matches('[');
            let values = values.split(']').next().unwrap_or("");
            let words: Vec<&str> = values.split_whitespace().collect();
            if let (Some(name), Some(ns)) = (name, mid_ns(&words)) {
                let (aim_ns, aim) = aim_of(&name);
                out.push(MicroBench {
                    name,
                    ns,
                    aim_ns,
                    aim,
                });
            }
            continue;
        }
        let starts_indented = line.starts_with(char::is_whitespace);
        let trimmed = line.trim();
        if !starts_indented && !trimmed.is_empty() && !trimmed.contains(char::is_whitespace) {
            last_name = Some(trimmed.to_owned());
        }
    }
    out
}

/// The middle value of `[low unit mid unit high unit]`, in nanoseconds.
fn mid_ns(words: &[&str]) -> Option<f64> {
    let value: f64 = words.get(2)?.parse().ok()?;
    let scale = match *words.get(3)? {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(value * scale)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The brief's aims: under 1 µs per decision, under 200 ns per uncontended reservation.
fn aim_of(name: &str) -> (Option<f64>, Option<String>) {
    match name {
        "classify_429_with_headers" | "call_poll_handle_cycle" => {
            (Some(1000.0), Some("< 1 µs per decision".into()))
        }
        "budget_admit_pure" | "local_limiter_admit_uncontended" => (
            Some(1000.0),
            Some("< 1 µs per uncontended admission".into()),
        ),
        _ => (None, None),
    }
}

/// One client against its bare HTTP library on the same requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// `mistral-blocking vs ureq` or `mistral-async vs reqwest`.
    pub what: String,
    /// What the server announced ([`Announced`]).
    #[serde(default)]
    pub server: String,
    /// How the requests were sent.
    pub how: String,
    /// Requests per side.
    pub requests: usize,
    /// Microseconds per request, bare library (best round).
    pub bare_us: f64,
    /// Microseconds per request, our client (best round).
    pub ours_us: f64,
    /// Microseconds per request, bare library (median round).
    pub bare_median_us: f64,
    /// Microseconds per request, our client (median round).
    pub ours_median_us: f64,
    /// CPU time of the whole process (every thread: the client, the runtime, the
    /// emulator in the same process) per request, bare library, µs; `None` where
    /// `/proc/self/task/*/schedstat` cannot be read. Less disturbed than the wall time by
    /// other work on the machine.
    #[serde(default)]
    pub bare_cpu_us: Option<f64>,
    /// The same with our client.
    #[serde(default)]
    pub ours_cpu_us: Option<f64>,
    /// CPU time per request of the client's threads alone (every thread but the
    /// emulator's), bare library, µs: the client's own cost, its kernel time included.
    #[serde(default)]
    pub bare_client_cpu_us: Option<f64>,
    /// The same with our client.
    #[serde(default)]
    pub ours_client_cpu_us: Option<f64>,
}

impl Overhead {
    /// `ours ÷ bare − 1`, best rounds (the least disturbed by other work on the
    /// machine).
    pub fn overhead(&self) -> f64 {
        self.ours_us / self.bare_us - 1.0
    }
}

/// CPU time used so far, ns: (every thread but the emulator's, the emulator's threads),
/// told apart by the emulator's thread name (`mistral-emulator`, cut to 15 bytes by the
/// kernel); `(0, 0)` where it cannot be read.
fn cpu_ns_by_side() -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    let mut sides = (0, 0);
    for task in tasks.flatten() {
        let path = task.path();
        let Some(ns) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        match is_emulator_thread(&comm) {
            true => sides.1 += ns,
            false => sides.0 += ns,
        }
    }
    sides
}

/// Whether a thread of this name (`/proc/self/task/*/comm`) is the emulator's: its
/// threads are named `mistral-emulator`, which the kernel cuts to 15 bytes.
fn is_emulator_thread(comm: &str) -> bool {
    comm.starts_with("mistral-emulat")
}

/// What one side of an overhead measurement used: wall time per round, CPU of the whole
/// process and of the client's threads.
#[derive(Default)]
struct Side {
    rounds: Vec<f64>,
    cpu_ns: u64,
    client_cpu_ns: u64,
}

impl Side {
    /// Starts a round: the instant and the CPU counters.
    fn start() -> (Instant, (u64, u64)) {
        (Instant::now(), cpu_ns_by_side())
    }

    /// Ends a round of `requests` started at `started`.
    fn end(&mut self, started: (Instant, (u64, u64)), requests: usize) {
        let (at, (client, server)) = started;
        self.rounds
            .push(at.elapsed().as_secs_f64() * 1e6 / requests as f64);
        let (client_now, server_now) = cpu_ns_by_side();
        let client_used = client_now.saturating_sub(client);
        self.client_cpu_ns += client_used;
        self.cpu_ns += client_used + server_now.saturating_sub(server);
    }
}

/// `bare` against `ours`, per request of `requests` in all.
fn overhead_of(
    what: &str,
    how: String,
    announced: Announced,
    requests: usize,
    bare: &Side,
    ours: &Side,
) -> Overhead {
    Overhead {
        what: what.into(),
        server: announced.describe().into(),
        how,
        requests,
        bare_us: best(&bare.rounds),
        ours_us: best(&ours.rounds),
        bare_median_us: median(&bare.rounds),
        ours_median_us: median(&ours.rounds),
        bare_cpu_us: cpu_per_request(bare.cpu_ns, requests),
        ours_cpu_us: cpu_per_request(ours.cpu_ns, requests),
        bare_client_cpu_us: cpu_per_request(bare.client_cpu_ns, requests),
        ours_client_cpu_us: cpu_per_request(ours.client_cpu_ns, requests),
    }
}

/// Keeps this thread busy for `micros` µs (the calibration's stand-in for a client's own
/// work).
fn busy(micros: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(micros) {
        std::hint::spin_loop();
    }
}

fn cpu_per_request(ns: u64, requests: usize) -> Option<f64> {
    (ns > 0 && requests > 0).then(|| ns as f64 / 1e3 / requests as f64)
}

/// The emulator's throughput with plain HTTP clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Which client, how many connections.
    pub how: String,
    /// Requests sent.
    pub requests: usize,
    /// Requests per second.
    pub per_second: f64,
}

/// What the server of an overhead measurement says of its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announced {
    /// Limits far above what loopback reaches (a million requests and a billion tokens
    /// a second), announced in every answer's headers as Mistral does: the shared
    /// limiter admits every call at once, so the difference is the client's own cost.
    Limits,
    /// Nothing: the shared limiter learns a rate (from 2/s, doubling while callers
    /// queue), so the difference includes its pacing while it learns.
    Nothing,
}

impl Announced {
    fn describe(self) -> &'static str {
        match self {
            Announced::Limits => "limits announced (never reached)",
            Announced::Nothing => "nothing announced (the rate is learned)",
        }
    }
}

fn unlimited() -> Emulator {
    server(Announced::Nothing)
}

fn server(announced: Announced) -> Emulator {
    let limits = match announced {
        Announced::Limits => Limits::new(Some(1_000_000), Some(1_000_000_000)),
        Announced::Nothing => Limits::new(None, None),
    };
    let config = Config {
        window_secs: 1.0,
        max_log_entries: 100_000,
        ..Config::default()
    }
    .model(super::scenario::MODEL, limits);
    Emulator::start(config)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn bare_agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections_per_host(16)
        .build();
    ureq::Agent::new_with_config(config)
}

/// `requests` sequential chat requests through `mistral-blocking` and through plain
/// ureq (serializing the same request and decoding the same response type), in
/// alternating rounds.
pub fn overhead_blocking(
    requests: usize,
    rounds: usize,
    announced: Announced,
) -> Result<Overhead, String> {
    let emulator = server(announced);
    let url = format!("{}/v1/chat/completions", emulator.url());
    let auth = format!("Bearer {}", emulator.key());
    let workload = Workload::uniform(super::scenario::MODEL, requests, 40);
    let client = mistral_blocking::Client::builder()
        .base_url(emulator.url())
        .api_key(emulator.key())
        .limiter(Arc::new(LocalLimiter::new()))
        .build()
        .map_err(|e| e.to_string())?;
    let agent = bare_agent();
    let per_round = (requests / rounds.max(1)).max(1);
    let (mut bare, mut ours) = (Side::default(), Side::default());
    for round in 0..rounds.max(1) {
        let from = round * per_round;
        let started = Side::start();
        for i in from..from + per_round {
            let body = serde_json::to_vec(&workload.request(i)).map_err(|e| e.to_string())?;
            let mut response = agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(&body[..])
                .map_err(|e| e.to_string())?;
            let bytes = response
                .body_mut()
                .read_to_vec()
                .map_err(|e| e.to_string())?;
            let _: ChatResponse = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        }
        bare.end(started, per_round);
        let started = Side::start();
        for i in from..from + per_round {
            client
                .chat(workload.request(i))
                .map_err(|e| e.to_string())?;
        }
        ours.end(started, per_round);
    }
    let requests = per_round * rounds.max(1);
    let how = "sequential, one thread".to_string();
    Ok(overhead_of(
        "mistral-blocking vs ureq",
        how,
        announced,
        requests,
        &bare,
        &ours,
    ))
}

/// How long the calibration side of [`overhead_async`] keeps its task busy per request
/// (µs): a fixed cost of a client's own, to show what such a cost does to this
/// measurement's wall time.
pub const CALIBRATION_BUSY_US: u64 = 3;

/// `requests` chat requests from `ways` concurrent tasks through `mistral-async`,
/// through plain reqwest, and through plain reqwest with [`CALIBRATION_BUSY_US`] of busy
/// CPU added to each request, in alternating rounds: our client's overhead, and the
/// calibration's (what a known extra cost per request shows as, on a machine whose cores
/// the client and the emulator share).
pub fn overhead_async(
    requests: usize,
    ways: usize,
    rounds: usize,
    announced: Announced,
) -> Result<(Overhead, Overhead), String> {
    let emulator = server(announced);
    let base = emulator.url();
    let url = format!("{base}/v1/chat/completions");
    let auth = format!("Bearer {}", emulator.key());
    let workload = Arc::new(Workload::uniform(super::scenario::MODEL, requests, 40));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = mistral_async::Client::builder()
        .base_url(base.as_str())
        .api_key(emulator.key())
        .limiter(Arc::new(LocalLimiter::new()))
        .build()
        .map_err(|e| e.to_string())?;
    // The same TLS and redirect settings as the client's own (reqwest is built without a
    // crypto provider of its own).
    let bare = mistral_async::http_client_builder()
        .build()
        .map_err(|e| e.to_string())?;
    let ways = ways.max(1);
    let per_task = (requests / rounds.max(1) / ways).max(1);
    let per_round = per_task * ways;
    let (mut bare_side, mut busy_side, mut ours) =
        (Side::default(), Side::default(), Side::default());
    runtime.block_on(async {
        for round in 0..rounds.max(1) {
            for busy_us in [0, CALIBRATION_BUSY_US] {
                let started = Side::start();
                let mut set = tokio::task::JoinSet::new();
                for w in 0..ways {
                    let (bare, url, auth, workload) =
                        (bare.clone(), url.clone(), auth.clone(), workload.clone());
                    set.spawn(async move {
                        for k in 0..per_task {
                            let i = round * per_round + w * per_task + k;
                            let body = serde_json::to_vec(&workload.request(i))
                                .map_err(|e| e.to_string())?;
                            let response = bare
                                .post(&url)
                                .header("Authorization", &auth)
                                .header("Content-Type", "application/json")
                                .body(body)
                                .send()
                                .await
                                .map_err(|e| e.to_string())?;
                            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
                            let _: ChatResponse =
                                serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                            busy(busy_us);
                        }
                        Ok::<(), String>(())
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.map_err(|e| e.to_string())??;
                }
                let side = if busy_us == 0 {
                    &mut bare_side
                } else {
                    &mut busy_side
                };
                side.end(started, per_round);
            }
            let started = Side::start();
            let mut set = tokio::task::JoinSet::new();
            for w in 0..ways {
                let (client, workload) = (client.clone(), workload.clone());
                set.spawn(async move {
                    for k in 0..per_task {
                        let i = round * per_round + w * per_task + k;
                        client
                            .chat(workload.request(i))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                });
            }
            while let Some(r) = set.join_next().await {
                r.map_err(|e| e.to_string())??;
            }
            ours.end(started, per_round);
        }
        Ok::<(), String>(())
    })?;
    runtime.shutdown_background();
    let requests = per_round * rounds.max(1);
    let how = format!("{ways} concurrent tasks");
    Ok((
        overhead_of(
            "mistral-async vs reqwest",
            how.clone(),
            announced,
            requests,
            &bare_side,
            &ours,
        ),
        overhead_of(
            &format!("calibration: reqwest + {CALIBRATION_BUSY_US} µs busy a call vs reqwest"),
            how,
            announced,
            requests,
            &bare_side,
            &busy_side,
        ),
    ))
}

/// The emulator's throughput: `requests` chat requests from `threads` threads with plain
/// ureq, no limits.
pub fn emulator_throughput(requests: usize, threads: usize) -> Result<Throughput, String> {
    let emulator = unlimited();
    let url = format!("{}/v1/chat/completions", emulator.url());
    let auth = format!("Bearer {}", emulator.key());
    let threads = threads.max(1);
    let per = (requests / threads).max(1);
    let body = serde_json::to_vec(&Workload::uniform(super::scenario::MODEL, 1, 40).request(0))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let failures = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (url, auth, body) = (&url, &auth, &body);
                s.spawn(move || {
                    let agent = bare_agent();
                    let mut failures = 0usize;
                    for _ in 0..per {
                        let ok = agent
                            .post(url)
                            .header("Authorization", auth)
                            .header("Content-Type", "application/json")
                            .send(&body[..])
                            .and_then(|mut r| r.body_mut().read_to_vec())
                            .is_ok();
                        failures += usize::from(!ok);
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(per))
            .sum::<usize>()
    });
    let elapsed = start.elapsed();
    if failures > 0 {
        return Err(format!("{failures} requests failed"));
    }
    Ok(Throughput {
        how: format!("plain ureq, {threads} threads, keep-alive"),
        requests: per * threads,
        per_second: (per * threads) as f64 / elapsed.max(Duration::from_micros(1)).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The emulator's threads are told by their name, as the kernel keeps it; a thread
    /// of that name has its work counted on the emulator's side while it runs.
    #[test]
    fn cpu_is_told_apart_by_side() {
        assert!(is_emulator_thread("mistral-emulato\n"));
        for other in ["tokio-rt-worker\n", "main\n", "mistral-bench\n", ""] {
            assert!(!is_emulator_thread(other), "{other:?}");
        }
        let (_, server) = cpu_ns_by_side();
        let named = std::thread::Builder::new()
            .name("mistral-emulator".into())
            .spawn(|| {
                busy(30_000);
                cpu_ns_by_side()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(named.1 >= server + 20_000_000, "{server} -> {}", named.1);
    }

    #[test]
    fn criterion_output_is_parsed() {
        let text = "\
classify_429_with_headers
                        time:   [2.1917 µs 2.2003 µs 2.2097 µs]
                        change: [-1.0% +0.2% +1.3%] (p = 0.70 > 0.05)
Found 3 outliers among 100 measurements (3.00%)
  3 (3.00%) high mild
budget_admit_pure       time:   [18.551 ns 18.632 ns 18.722 ns]
local_limiter_admit_8_threads
                        time:   [\u{1b}[2m1.0 ms\u{1b}[0m \u{1b}[1m1.5 ms\u{1b}[0m 2.0 ms]
";
        let benches = parse_criterion(text);
        assert_eq!(benches.len(), 3);
        assert_eq!(benches[0].name, "classify_429_with_headers");
        assert!((benches[0].ns - 2200.3).abs() < 1e-6);
        assert_eq!(benches[0].met(), Some(false));
        assert_eq!(benches[1].name, "budget_admit_pure");
        assert!((benches[1].ns - 18.632).abs() < 1e-9);
        assert_eq!(benches[1].met(), Some(true));
        assert_eq!(benches[2].name, "local_limiter_admit_8_threads");
        assert!((benches[2].ns - 1.5e6).abs() < 1e-3);
        assert_eq!(benches[2].met(), None);
    }
}
