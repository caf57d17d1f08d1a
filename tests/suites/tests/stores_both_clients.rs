//! One budget through each client's own stores: the blocking client's file and Redis
//! stores (threads, blocking I/O) and the async client's (tasks, async I/O) pace together
//! when they name the same state file or the same Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mistral_core::ApiKey;
use mistral_core::limiter::{Decision, LimiterConfig, Limits, Reserve};

const BASE: &str = "https://api.mistral.ai";
const PER_SECOND: u64 = 50;

fn config() -> LimiterConfig {
    LimiterConfig {
        default: Some(Limits::requests(PER_SECOND, Duration::from_secs(1))),
        models: HashMap::new(),
        ..LimiterConfig::default()
    }
}

fn start(d: Decision, seen_us: u64) -> u64 {
    match d {
        Decision::Go { wait_us, .. } => seen_us + wait_us,
        other => panic!("expected Go, got {other:?}"),
    }
}

/// The starts `blocking` (20 from 2 threads) and `asynch` (20 from 2-worker tasks) book
/// in one budget, sorted; each pair is at least a period apart.
fn assert_one_schedule(mut starts: Vec<u64>) {
    starts.sort_unstable();
    assert_eq!(starts.len(), 40);
    let period = 1_000_000 / PER_SECOND;
    for w in starts.windows(2) {
        assert!(
            w[1] - w[0] >= period * 95 / 100,
            "two budgets, not one: {starts:?}"
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The start of 40 reservations of one request: 2 threads × 10 through `$blocking`
/// and 20 tasks through `$asynch`, all at once.
macro_rules! starts_from_both {
    ($blocking:expr, $asynch:expr) => {{
        let (blocking, asynch) = (&$blocking, &$asynch);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let limiter = Arc::clone(&blocking);
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| {
                            let (d, s) = limiter.reserve_at(None, "m", &Reserve::new(1)).unwrap();
                            start(d, s.seen_us)
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
                        let (d, s) = limiter
                            .reserve_at(None, "m", &Reserve::new(1))
                            .await
                            .unwrap();
                        start(d, s.seen_us)
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
    assert_one_schedule(starts);
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
    assert_one_schedule(starts);
}
