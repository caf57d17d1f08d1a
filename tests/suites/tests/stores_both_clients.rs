//! One budget through each client's own stores: the blocking client's file and Redis
//! stores (threads, blocking I/O) and the async client's (tasks, async I/O) pace together
//! when they name the same state file or the same Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mistral_async::stores::AsyncLimiter;
use mistral_core::limiter::{LimiterConfig, Limits};
use mistral_core::{ApiKey, Ask, Grant};

const BASE: &str = "https://api.mistral.ai";
const PER_SECOND: u64 = 50;

fn config() -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(PER_SECOND, Duration::from_secs(1))),
        models: HashMap::new(),
        ..LimiterConfig::default()
    }
}

fn ask() -> Ask {
    Ask {
        model: Some("m".into()),
        tokens: 1,
        size: Default::default(),
        attempt: 1,
        within: None,
        priority: mistral_core::Priority::Default,
    }
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// When `grant`'s call goes: after its short wait, in wall-clock µs.
fn went(grant: Grant) -> Duration {
    match grant {
        Grant::Go { after, .. } => after,
        Grant::Now => Duration::ZERO,
        other => panic!("expected an admission, got {other:?}"),
    }
}

/// The admissions `blocking` (20 from 2 threads) and `asynch` (20 from 2-worker tasks)
/// gave in one budget: one budget of 50/s, not two.
fn assert_one_budget(mut starts: Vec<u64>) {
    starts.sort_unstable();
    assert_eq!(starts.len(), 40);
    let span = starts[39] - starts[0];
    let max = max_in_window(&starts, 1_000_000);
    eprintln!("40 admissions over {span} µs, max {max} in any second");
    // 39 periods of 20.3 ms is 0.79 s; two budgets side by side would take half of it.
    assert!(span >= 700_000, "two budgets, not one: {starts:?}");
    assert!(max <= 41, "{max}");
}

fn max_in_window(starts: &[u64], window: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi] - starts[lo] >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// When 40 calls of one request go: 2 threads × 10 through `$blocking` and 20 tasks
/// through `$asynch`, all at once, each admitted as its client admits it.
macro_rules! starts_from_both {
    ($blocking:expr, $asynch:expr) => {{
        let (blocking, asynch) = (&$blocking, &$asynch);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let limiter = Arc::clone(&blocking);
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| {
                            let after = went(mistral_blocking::stores::admit(&*limiter, &ask()));
                            std::thread::sleep(after);
                            wall_us()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut starts: Vec<u64> = runtime().block_on(async {
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let limiter = Arc::clone(&asynch);
                    tokio::spawn(async move {
                        let ask = ask();
                        let after = went(limiter.admit(&ask).await);
                        tokio::time::sleep(after).await;
                        wall_us()
                    })
                })
                .collect();
            let mut starts = Vec::new();
            for t in tasks {
                starts.push(t.await.unwrap());
            }
            starts
        });
        for t in threads {
            starts.extend(t.join().unwrap());
        }
        starts
    }};
}

#[test]
fn a_blocking_and_an_async_client_share_one_state_file() {
    let dir = std::env::temp_dir().join(format!("mistral-both-{}", std::process::id()));
    let path = dir.join("state");
    let blocking =
        Arc::new(mistral_blocking::stores::FileLimiter::at_path(&path, config()).unwrap());
    let asynch = Arc::new(mistral_async::stores::FileLimiter::at_path(&path, config()).unwrap());
    let starts = starts_from_both!(blocking, asynch);
    let _ = std::fs::remove_dir_all(&dir);
    assert_one_budget(starts);
}

#[test]
fn a_blocking_and_an_async_client_share_one_redis_budget() {
    let Some(server) = mistral_suites::redis_or_skip("the two clients' Redis stores") else {
        return;
    };
    let key = ApiKey::new("sk-both-clients-0123456789").unwrap();
    let blocking = Arc::new(
        mistral_blocking::stores::RedisLimiter::new(&server.url(), BASE, &key, config()).unwrap(),
    );
    let asynch = Arc::new(
        mistral_async::stores::RedisLimiter::new(&server.url(), BASE, &key, config()).unwrap(),
    );
    assert_eq!(blocking.key_of("m"), asynch.key_of("m"));
    let starts = starts_from_both!(blocking, asynch);
    assert_one_budget(starts);
}
