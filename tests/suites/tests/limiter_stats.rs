//! `stats().limiter`: the shared limiter's answers, counted by both clients against a
//! real emulator. Four calls at once under a budget of 2 per second with a deadline of
//! 1 s (a call keeps 100 ms of it for its attempt, so it may wait 0.9 s): one goes at
//! once, one waits 500 ms for its slot, two cannot start in time and end at once
//! (`RateLimited { shared: true }`, nothing sent). And a clone shares its client's
//! statistics.

use std::time::{Duration, Instant};

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Error, LimiterConfig, LimiterCounts, Limits, RetryPolicy};
use mistral_emulator::Config;
use mistral_emulator::Emulator;

const MODEL: &str = "mistral-small-latest";

fn limits() -> LimiterConfig {
    LimiterConfig {
        models: [(
            MODEL.to_owned(),
            Limits::requests(2, Duration::from_secs(1)),
        )]
        .into(),
        ..LimiterConfig::default()
    }
}

fn policy() -> RetryPolicy {
    let mut policy = RetryPolicy::default().deadline(Some(Duration::from_secs(1)));
    // A call keeps this much of its deadline for its attempt: it may wait 0.9 s.
    policy.min_attempt_time = Duration::from_millis(100);
    policy
}

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hi")]).max_tokens(8)
}

fn check(name: &str, results: &[Result<(), Error>], counts: LimiterCounts, emu: &Emulator) {
    eprintln!("{name}: {counts:?}");
    let served = results.iter().filter(|r| r.is_ok()).count();
    let late = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(Error::RateLimited {
                    shared: true,
                    retry_after: Some(_),
                    ..
                })
            )
        })
        .count();
    assert_eq!((served, late), (2, 2), "{name}: {results:?}");
    assert_eq!(emu.log().total(), 2, "{name}: the late calls sent nothing");
    assert_eq!(counts.admitted_at_once, 1, "{name}: {counts:?}");
    assert_eq!(counts.queued, 1, "{name}: {counts:?}");
    assert_eq!(counts.refused_deadline, 2, "{name}: {counts:?}");
    assert_eq!(counts.refused_closed, 0, "{name}: {counts:?}");
    let average = counts.average_wait().expect("one call waited");
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(700)).contains(&average),
        "{name}: the waiting call waited one pacing interval (500 ms): {average:?}"
    );
}

#[test]
fn blocking_counts_queued_admitted_and_refused_for_the_deadline() {
    let emu = Emulator::start(Config::default());
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .budget_id("stats-blocking")
        .limits(limits())
        .retry_policy(policy())
        .build()
        .unwrap();
    assert_eq!(client.stats().limiter, LimiterCounts::default());
    let start = Instant::now();
    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| client.chat(request()).map(|_| ())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(start.elapsed() < Duration::from_secs(3));
    check("blocking", &results, client.stats().limiter, &emu);
}

#[test]
fn async_counts_queued_admitted_and_refused_for_the_deadline() {
    let emu = Emulator::start(Config::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .budget_id("stats-async")
        .limits(limits())
        .retry_policy(policy())
        .build()
        .unwrap();
    let results: Vec<Result<(), Error>> = runtime.block_on(async {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.chat(request()).await.map(|_| ()) })
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        results
    });
    check("async", &results, client.stats().limiter, &emu);
}

/// A clone is a handle on the same client: a call through it counts in the original's
/// statistics, on both clients.
#[test]
fn clones_share_their_statistics_on_both_clients() {
    let emu = Emulator::start(Config::default());
    let blocking = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    blocking.clone().chat(request()).unwrap();
    let stats = blocking.stats();
    assert_eq!(
        (stats.calls, stats.successes),
        (1, 1),
        "blocking: {stats:?}"
    );

    let asynchronous = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clone = asynchronous.clone();
    runtime
        .block_on(async move { clone.chat(request()).await.map(drop) })
        .unwrap();
    let stats = asynchronous.stats();
    assert_eq!((stats.calls, stats.successes), (1, 1), "async: {stats:?}");
}
