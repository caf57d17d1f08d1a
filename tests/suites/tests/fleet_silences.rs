//! Many callers of one process on a fixed window the server announces: the fleet keeps
//! using every window, and the server never hears nothing for much longer than one window
//! (no fleet-wide silence while callers wait). 80 and 128 callers, both clients, judged
//! by the emulator's log.

use std::time::{Duration, Instant};

use mistral_core::RetryPolicy;
use mistral_core::models::{ChatRequest, Message};
use mistral_emulator::{Config, Emulator, Era, Limits, Log, Semantics};

const MODEL: &str = "mistral-small-latest";
/// 20 requests per 1-s window, a counter reset at each window's start.
const LIMIT: u64 = 20;
const WINDOW: Duration = Duration::from_secs(1);
/// How long the callers keep sending.
const RUN: Duration = Duration::from_secs(12);

fn emulator(headers: bool) -> Emulator {
    Emulator::start(
        Config {
            era: Era::Y2026,
            semantics: Semantics::FixedWindow,
            window_secs: WINDOW.as_secs_f64(),
            headers,
            latency_ms: 50,
            ..Config::default()
        }
        .model(MODEL, Limits::new(Some(LIMIT), None)),
    )
}

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")]).max_tokens(16)
}

fn policy() -> RetryPolicy {
    RetryPolicy::default().deadline(Some(Duration::from_secs(120)))
}

/// The longest time the server received nothing, from the first request to the last,
/// and when it began (time since the emulator's start).
fn longest_silence(log: &Log) -> (Duration, Duration) {
    let mut times: Vec<Duration> = log
        .entries()
        .iter()
        .filter(|e| e.model.as_deref() == Some(MODEL))
        .map(|e| e.arrived)
        .collect();
    times.sort();
    times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default()
}

fn judge(name: &str, emu: &Emulator, calls: usize, span: Duration) {
    let log = emu.log();
    let (silence, at) = longest_silence(&log);
    let goodput = log.admitted_for(MODEL) as f64 / span.as_secs_f64() / LIMIT as f64;
    let windows = span.as_secs_f64() / WINDOW.as_secs_f64();
    eprintln!(
        "{name}: {calls} calls in {:.2} s ({goodput:.2} of the limit), {} 429s, longest \
         silence {:.2} s at {:.2} s, per window {:?}",
        span.as_secs_f64(),
        log.count_429(),
        silence.as_secs_f64(),
        at.as_secs_f64(),
        log.admitted_per_fixed_window(MODEL, WINDOW),
    );
    assert_eq!(
        log.admitted_for(MODEL),
        calls,
        "{name}: every call admitted once"
    );
    assert!(log.violations().is_empty(), "{name}");
    // No silence much longer than one window (a quarter more for timers on a loaded
    // machine): the booking design fell silent for callers × 50 ms (4.1 s with 80
    // callers, 6.2-6.5 s with 128); a window's start taken when its first answer was
    // read drifted later every window (1.00-1.72 s); a window's probe held by a cell
    // taken as empty from its burst's refused last unit drifted too (1.00-1.14 s, one
    // window in about six unused). Measured now 0.94-0.96 s with headers, 0.40-0.60 s
    // without.
    let longest = WINDOW + WINDOW / 4;
    assert!(
        silence < longest,
        "{name}: the server heard nothing for {silence:?} (from {at:?})"
    );
    assert!(goodput >= 0.8, "{name}: too slow ({goodput:.2})");
    // Learning that the window does not refill continuously, and where it starts, costs
    // a refusal or two per window (1-2 measured).
    assert!(
        log.count_429() as f64 <= 3.0 * windows,
        "{name}: {} 429s in {windows:.0} windows",
        log.count_429()
    );
}

fn blocking(callers: usize, headers: bool) {
    let emu = emulator(headers);
    let client = mistral_blocking::Client::builder()
        .base_url(emu.url())
        .api_key(emu.key())
        .retry_policy(policy())
        .build()
        .unwrap();
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| {
                while start.elapsed() < RUN {
                    client.chat(request()).expect("a call");
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    judge(
        &format!("blocking, {callers} threads, headers {headers}"),
        &emu,
        done.into_inner(),
        start.elapsed(),
    );
}

fn asynchronous(callers: usize, headers: bool) {
    let emu = emulator(headers);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (calls, span) = rt.block_on(async {
        let client = mistral_async::Client::builder()
            .base_url(emu.url())
            .api_key(emu.key())
            .retry_policy(policy())
            .build()
            .unwrap();
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut done = 0;
                    while start.elapsed() < RUN {
                        client.chat(request()).await.expect("a call");
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut calls = 0;
        for t in tasks {
            calls += t.await.unwrap();
        }
        (calls, start.elapsed())
    });
    judge(
        &format!("async, {callers} tasks, headers {headers}"),
        &emu,
        calls,
        span,
    );
}

#[test]
fn one_hundred_twenty_eight_threads_on_a_fixed_window() {
    blocking(128, true);
}

#[test]
fn one_hundred_twenty_eight_threads_on_a_fixed_window_they_learn() {
    blocking(128, false);
}

#[test]
fn eighty_threads_on_a_fixed_window() {
    blocking(80, true);
}

#[test]
fn eighty_threads_on_a_fixed_window_they_learn() {
    blocking(80, false);
}

#[test]
fn one_hundred_twenty_eight_tasks_on_a_fixed_window() {
    asynchronous(128, true);
}

#[test]
fn one_hundred_twenty_eight_tasks_on_a_fixed_window_they_learn() {
    asynchronous(128, false);
}

#[test]
fn eighty_tasks_on_a_fixed_window() {
    asynchronous(80, true);
}

#[test]
fn eighty_tasks_on_a_fixed_window_they_learn() {
    asynchronous(80, false);
}
