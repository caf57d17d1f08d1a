//! Limits the server never announces, for both clients with their default limiter and
//! no configured limits: a real nginx `limit_req` (10 r/s, no burst, HTML 429s) in front
//! of the emulator, judged by nginx's own access log; and the emulator's own leaky bucket
//! and concurrency limit (at most K in flight), judged by the emulator's log.
//!
//! Each test asserts what the targets imply, with generous bounds: every call
//! succeeds, each admitted once; attempts per call ≤ 1.5 (the target is 1.10); makespan
//! ≤ 3 × the server's own best (the target is goodput ≥ 0.90). Run with `--nocapture`
//! to see the numbers; they belong in the bench.
//!
//! The nginx tests need nginx (`MISTRAL_TEST_NGINX=/usr/sbin/nginx`, set by `cargo xtask
//! test`, else `nginx` on PATH or `/usr/sbin/nginx`). Without it they fail when `CI` is
//! set and are skipped loudly otherwise.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mistral_core::Stats;
use mistral_core::models::{ChatRequest, Message};
use mistral_emulator::nginx::{AccessEntry, LimitReq, Nginx};
use mistral_emulator::{Config, Limits, Semantics};
use mistral_emulator::{Emulator, Log};

const MODEL: &str = "mistral-small-latest";
/// Calls per run.
const CALLS: usize = 50;
/// Threads of a blocking run, tasks of an async run.
const CALLERS: usize = 32;
/// Most attempts per call the tests accept (the target is 1.10).
const MAX_ATTEMPTS_PER_CALL: f64 = 1.5;
/// Largest makespan accepted, as a multiple of the server's own best (the target is
/// goodput ≥ 0.90, about 1.11 ×).
const MAX_MAKESPAN_FACTOR: f64 = 3.0;

// ---------------------------------------------------------------------------------------
// The two clients, driven the same way
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Blocking,
    Async,
}

/// What a run of [`CALLS`] calls gave.
#[derive(Debug)]
struct Run {
    makespan: Duration,
    failures: Vec<String>,
    stats: Stats,
}

fn request(i: usize) -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user(format!("call {i}"))]).max_tokens(16)
}

/// [`CALLS`] chat calls from [`CALLERS`] threads or tasks through one client built with
/// nothing but the URL and the key (the default limiter, the default retry policy).
fn run(driver: Driver, url: &str, key: &str) -> Run {
    match driver {
        Driver::Blocking => {
            let client = mistral_blocking::Client::builder()
                .base_url(url)
                .api_key(key)
                .build()
                .expect("client");
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let failures = std::thread::scope(|s| {
                let handles: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let client = client.clone();
                        let next = next.clone();
                        s.spawn(move || {
                            let mut failures = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= CALLS {
                                    break failures;
                                }
                                if let Err(e) = client.chat(request(i)) {
                                    failures.push(format!("call {i}: {e}"));
                                }
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("caller thread"))
                    .collect::<Vec<_>>()
            });
            Run {
                makespan: start.elapsed(),
                failures,
                stats: client.stats(),
            }
        }
        Driver::Async => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = mistral_async::Client::builder()
                    .base_url(url)
                    .api_key(key)
                    .build()
                    .expect("client");
                let next = Arc::new(AtomicUsize::new(0));
                let start = Instant::now();
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let client = client.clone();
                        let next = next.clone();
                        tokio::spawn(async move {
                            let mut failures = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= CALLS {
                                    break failures;
                                }
                                if let Err(e) = client.chat(request(i)).await {
                                    failures.push(format!("call {i}: {e}"));
                                }
                            }
                        })
                    })
                    .collect();
                let mut failures = Vec::new();
                for task in tasks {
                    failures.extend(task.await.expect("caller task"));
                }
                Run {
                    makespan: start.elapsed(),
                    failures,
                    stats: client.stats(),
                }
            })
        }
    }
}

/// What the server saw, whoever counted it.
#[derive(Debug)]
struct Seen {
    admitted: usize,
    refused: usize,
    other: usize,
}

/// Prints the numbers, then checks them against the bounds.
fn judge(name: &str, run: &Run, seen: &Seen, best: Duration) {
    let attempts = (seen.admitted + seen.refused + seen.other) as f64 / CALLS as f64;
    let factor = run.makespan.as_secs_f64() / best.as_secs_f64();
    eprintln!(
        "{name}: {CALLS} calls, {CALLERS} callers: makespan {:.2} s (server's best {:.2} s, \
         {factor:.2} x, goodput {:.2}), {} admitted, {} 429s, {} other, {attempts:.2} \
         attempts per call (client counted {} attempts, {} retries, waited {:.1} s), \
         {} failures",
        run.makespan.as_secs_f64(),
        best.as_secs_f64(),
        1.0 / factor,
        seen.admitted,
        seen.refused,
        seen.other,
        run.stats.attempts,
        run.stats.retries,
        run.stats.waited.as_secs_f64(),
        run.failures.len(),
    );
    assert!(
        run.failures.is_empty(),
        "{name}: {} calls failed, first: {}",
        run.failures.len(),
        run.failures[0]
    );
    assert_eq!(
        seen.admitted, CALLS,
        "{name}: every call admitted exactly once"
    );
    assert_eq!(seen.other, 0, "{name}: only 200s and 429s");
    assert!(
        attempts <= MAX_ATTEMPTS_PER_CALL,
        "{name}: {attempts:.2} attempts per call (bound {MAX_ATTEMPTS_PER_CALL}, target 1.10)"
    );
    assert!(
        factor <= MAX_MAKESPAN_FACTOR,
        "{name}: makespan {:.2} s is {factor:.2} x the server's best {:.2} s (bound \
         {MAX_MAKESPAN_FACTOR} x; the target, goodput 0.90, is 1.11 x)",
        run.makespan.as_secs_f64(),
        best.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------

/// nginx's rate in the tests: `rate=10r/s`, no burst.
const NGINX_RATE: u64 = 10;

/// The nginx binary, or `None` (said loudly) when there is none and `CI` is not set.
fn nginx_binary() -> Option<PathBuf> {
    if let Some(bin) = Nginx::find() {
        return Some(bin);
    }
    // As `cargo xtask test` reads it: set, and not empty, `0` or `false`.
    let ci = std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"));
    assert!(
        !ci,
        "nginx not found (MISTRAL_TEST_NGINX, PATH, /usr/sbin/nginx) and CI is set: install \
         nginx-light (cargo xtask test does) or set MISTRAL_TEST_NGINX"
    );
    eprintln!(
        "\n*** SKIP: nginx not found (MISTRAL_TEST_NGINX, PATH, /usr/sbin/nginx); the nginx \
         tests did not run. Install nginx-light or set MISTRAL_TEST_NGINX. ***\n"
    );
    None
}

fn through_nginx(driver: Driver) {
    let Some(bin) = nginx_binary() else {
        return;
    };
    // The emulator with no rate limit: nginx is the only limiter, and says nothing.
    let emulator = Emulator::start(Config {
        default_limits: Limits::new(None, None),
        headers: false,
        ..Config::default()
    });
    let nginx = Nginx::start(&bin, emulator.addr(), &LimitReq::per_second(NGINX_RATE))
        .expect("nginx starts");
    let run = run(driver, &nginx.url(), emulator.key());
    // nginx writes a request's log line after its response: wait until every request
    // the emulator served is in it.
    let served = emulator.log().admitted();
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = nginx.access_log().expect("nginx's access log");
        let ok = log.iter().filter(|e| e.status == 200).count();
        if ok >= served || std::time::Instant::now() > give_up {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(nginx);
    let chat: Vec<&AccessEntry> = log
        .iter()
        .filter(|e| e.uri == "/v1/chat/completions")
        .collect();
    let seen = Seen {
        admitted: chat.iter().filter(|e| e.status == 200).count(),
        refused: chat.iter().filter(|e| e.status == 429).count(),
        other: chat
            .iter()
            .filter(|e| e.status != 200 && e.status != 429)
            .count(),
    };
    // What nginx admitted, the emulator served: nothing else reached it.
    assert_eq!(emulator.log().admitted(), seen.admitted);
    // nginx's own guarantee, seen in its log: 200s 1/rate apart at least (the log's
    // $msec is the end of each request, so allow a few ms of jitter).
    let times: Vec<f64> = chat
        .iter()
        .filter(|e| e.status == 200)
        .map(|e| e.msec)
        .collect();
    let closest = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    eprintln!("nginx: closest admitted pair {:.3} s apart", closest);
    // The best nginx allows: the first at once, then one every 1/rate.
    let best = Duration::from_secs_f64((CALLS - 1) as f64 / NGINX_RATE as f64);
    judge(&format!("nginx 10 r/s, {driver:?}"), &run, &seen, best);
}

#[test]
fn nginx_refuses_with_its_html_page_and_nothing_announced() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let emulator = Emulator::start(Config {
        default_limits: Limits::new(None, None),
        headers: false,
        ..Config::default()
    });
    let nginx = Nginx::start(&bin, emulator.addr(), &LimitReq::per_second(NGINX_RATE))
        .expect("nginx starts");
    let post = || {
        let body =
            serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
        mistral_emulator::raw_http::post(
            &nginx.url(),
            Some(emulator.key()),
            "/v1/chat/completions",
            &body,
        )
        .expect("request through nginx")
    };
    let first = post();
    let second = post();
    std::thread::sleep(Duration::from_millis(150));
    let third = post();
    assert_eq!((first.status, second.status, third.status), (200, 429, 200));
    // The emulator's answer went through; the refusal is nginx's own page, no headers.
    assert!(
        first
            .json()
            .is_some_and(|v| v["object"] == "chat.completion")
    );
    assert!(
        second.text().contains("429 Too Many Requests"),
        "{}",
        second.text()
    );
    assert!(second.header("retry-after").is_none());
    assert!(second.headers_with_prefix("x-ratelimit").is_empty());
    // nginx writes a request's log line after its response: wait for the third.
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    let statuses = loop {
        let log = nginx.access_log().expect("access log");
        let statuses: Vec<u16> = log.iter().map(|e| e.status).collect();
        if statuses.len() >= 3 || std::time::Instant::now() > give_up {
            break statuses;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(statuses, [200, 429, 200]);
    assert!(nginx.error_log().contains("limiting requests"));
    assert_eq!(emulator.log().admitted(), 2);
}

#[test]
fn nginx_limit_req_blocking_threads() {
    through_nginx(Driver::Blocking);
}

#[test]
fn nginx_limit_req_async_tasks() {
    through_nginx(Driver::Async);
}

// ---------------------------------------------------------------------------------------
// The emulator's leaky bucket and concurrency limit, nothing announced
// ---------------------------------------------------------------------------------------

fn seen_by(log: &Log) -> Seen {
    Seen {
        admitted: log.admitted_for(MODEL),
        refused: log.count_429(),
        other: log.total() - log.admitted() - log.count_429(),
    }
}

fn leaky(driver: Driver) {
    // nginx's rule in the emulator: 10 per second, no burst, no headers, gateway body.
    let emulator = Emulator::start(
        Config {
            semantics: Semantics::Leaky,
            window_secs: 1.0,
            headers: false,
            rate_limit_body: Some(mistral_emulator::RateLimitBody::Gateway),
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(10), None)),
    );
    let run = run(driver, &emulator.url(), emulator.key());
    let log = emulator.log();
    assert!(log.violations().is_empty(), "{:?}", log.violations());
    let best = Duration::from_secs_f64((CALLS - 1) as f64 / 10.0);
    judge(
        &format!("leaky 10 r/s, {driver:?}"),
        &run,
        &seen_by(&log),
        best,
    );
}

#[test]
fn leaky_bucket_blocking_threads() {
    leaky(Driver::Blocking);
}

#[test]
fn leaky_bucket_async_tasks() {
    leaky(Driver::Async);
}

/// At most this many in flight.
const K: u64 = 4;

fn concurrency(driver: Driver) {
    // At most 4 in flight, 200-500 ms each; 429 with the 1300 body and no headers; no
    // rate limit.
    let emulator = Emulator::start(
        Config {
            headers: false,
            latency_ms: 200,
            latency_jitter_ms: 300,
            ..Config::default()
        }
        .model(
            MODEL,
            Limits {
                concurrency: Some(K),
                ..Limits::new(None, None)
            },
        ),
    );
    let run = run(driver, &emulator.url(), emulator.key());
    let log = emulator.log();
    assert!(log.violations().is_empty(), "{:?}", log.violations());
    assert!(log.max_in_flight(MODEL) <= K as usize);
    // The best the server allows: its K places always busy, each call its drawn
    // service time.
    let busy: Duration = log
        .in_flight(MODEL)
        .iter()
        .map(|h| h.released - h.taken)
        .sum();
    let best = busy / K as u32;
    eprintln!(
        "concurrency: at most {} in flight of {K}",
        log.max_in_flight(MODEL)
    );
    judge(
        &format!("concurrency {K}, {driver:?}"),
        &run,
        &seen_by(&log),
        best,
    );
}

#[test]
fn concurrency_limit_blocking_threads() {
    concurrency(Driver::Blocking);
}

#[test]
fn concurrency_limit_async_tasks() {
    concurrency(Driver::Async);
}

// ---------------------------------------------------------------------------------------
// A gateway that refuses the first calls, with no headers: never lost to the limiter
// ---------------------------------------------------------------------------------------

/// 1 to 8 refusals without headers before the first success, in both body forms, for
/// both clients: the call keeps retrying within its policy and succeeds on the next
/// attempt the server admits; a later call goes at once (the budget is not poisoned).
/// The calls' own backoff is short (10–100 ms) so that the budget's pauses are what is
/// measured.
#[test]
fn consecutive_429s_without_headers_never_lose_the_call() {
    use mistral_emulator::Fault;
    std::thread::scope(|s| {
        for fault in [Fault::Ambiguous429, Fault::Bare1300] {
            for driver in [Driver::Blocking, Driver::Async] {
                s.spawn(move || {
                    for refusals in [1u64, 2, 3, 5, 8] {
                        let config = Config {
                            headers: false,
                            faults: (0..refusals).map(|i| (i, fault)).collect(),
                            ..Config::default()
                        }
                        .model(MODEL, Limits::new(None, None));
                        let emu = Emulator::start(config);
                        let started = Instant::now();
                        let (first, second) = two_calls(driver, &emu.url(), emu.key());
                        let what = format!("{fault:?} x{refusals}, {driver:?}");
                        let first =
                            first.unwrap_or_else(|e| panic!("{what}: the call was lost: {e}"));
                        assert_eq!(first, refusals as u32 + 1, "{what}: attempts");
                        assert_eq!(
                            second.expect("the next call"),
                            1,
                            "{what}: a later call goes at once"
                        );
                        // The budget's pause between probes doubles from 0.1 s up to 2 s.
                        assert!(
                            started.elapsed() < Duration::from_secs(30),
                            "{what}: {:?}",
                            started.elapsed()
                        );
                        assert_eq!(emu.log().admitted_for(MODEL), 2);
                    }
                });
            }
        }
    });
}

/// Two calls in a row through one fresh client with a short backoff: the attempts each
/// took.
fn two_calls(driver: Driver, url: &str, key: &str) -> (Result<u32, String>, Result<u32, String>) {
    let policy = mistral_core::RetryPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(100));
    match driver {
        Driver::Blocking => {
            let client = mistral_blocking::Client::builder()
                .base_url(url)
                .api_key(key)
                .retry_policy(policy)
                .build()
                .expect("client");
            let call = |i| {
                client
                    .chat(request(i))
                    .map(|r| r.trail.attempts)
                    .map_err(|e| e.to_string())
            };
            (call(0), call(1))
        }
        Driver::Async => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = mistral_async::Client::builder()
                    .base_url(url)
                    .api_key(key)
                    .retry_policy(policy)
                    .build()
                    .expect("client");
                let first = client.chat(request(0)).await;
                let second = client.chat(request(1)).await;
                (
                    first.map(|r| r.trail.attempts).map_err(|e| e.to_string()),
                    second.map(|r| r.trail.attempts).map_err(|e| e.to_string()),
                )
            })
        }
    }
}
