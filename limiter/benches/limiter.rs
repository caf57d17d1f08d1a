//! Micro-benchmarks of the limiter's decisions: one admission on a budget's state (the
//! arithmetic every store runs), and one admission through the in-process limiter (its
//! line and its mutex) with its report, uncontended and with 8 threads.

#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mistral_core::limiter::{Admit, Limiter, LimiterConfig, Limits, Place};
use mistral_core::{
    Ask, Bucket, Grant, Priority, Quota, RateLimits, Report, Ticket, TokenUsage, Verdict, Window,
};
use mistral_limiter::{AdmitOp, BudgetState, Candidate, LocalLimiter};

struct Nobody;

impl Wake for Nobody {
    fn wake(self: Arc<Self>) {}
}

fn ask() -> Ask {
    Ask {
        model: Some("m".into()),
        tokens: 10,
        size: Default::default(),
        attempt: 1,
        within: None,
        priority: Priority::Default,
    }
}

/// A success announcing a billion requests a second, nearly all left.
fn success(ticket: Ticket) -> Report {
    Report {
        model: Some("m".into()),
        limits: RateLimits {
            quotas: vec![Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(1),
                limit: Some(1_000_000_000),
                remaining: Some(999_999_000),
            }],
            ..RateLimits::default()
        },
        verdict: Verdict::Success,
        retry: None,
        estimated_tokens: 10,
        used_tokens: Some(10),
        attempt: 1,
        correlation_id: None,
        ticket: Some(ticket),
        usage: Some(TokenUsage {
            prompt_tokens: 5,
            completion_tokens: 5,
            total_tokens: 10,
        }),
        size: Default::default(),
        origin: Default::default(),
        service_tier: None,
    }
}

fn bench_admit(c: &mut Criterion) {
    let mut state = BudgetState::new(
        0,
        Some(Limits::requests(1_000_000_000, Duration::from_secs(1))),
    );
    let op = AdmitOp {
        proc_id: 1,
        waiting: [0, 1, 0],
        candidates: vec![Candidate {
            lane: 1,
            size: Default::default(),
            tokens: 10,
            within_us: u64::MAX,
        }],
        horizon_us: 2_000,
        late_us: 0,
        ask_gap_us: 1_000_000,
        reserve_ppm: [0, 100_000, 100_000],
    };
    let mut t = 0u64;
    c.bench_function("budget_admit_pure", |b| {
        b.iter(|| {
            t += 1;
            black_box(state.admit(black_box(t), &op))
        })
    });
    let config = LimiterConfig {
        default: Some(Limits::requests(1_000_000_000, Duration::from_secs(1))),
        ..LimiterConfig::default()
    };
    let limiter = Arc::new(LocalLimiter::with_config(config));
    let waker = Waker::from(Arc::new(Nobody));
    let ask = ask();
    // One call's business with the limiter: its admission, then its answer's report (a
    // success announcing the limit, far from spent), as the clients do. Without the
    // report, every caller after the first waited for the first one's answer.
    let admit = |limiter: &LocalLimiter, now: Instant| {
        let mut place = Place::new();
        let admitted = limiter.poll_admit(now, &mut place, &ask, &waker);
        limiter.leave(&mut place);
        let Admit::Ready(Grant::Go { ticket, .. }) = admitted else {
            return false;
        };
        limiter.report(now, &success(ticket));
        true
    };
    // Each admission 10 µs after the last, on a clock of the bench's own: with one
    // instant for every iteration the budget filled up (its clock counts whole µs, so a
    // request costs at least one) and the rest measured callers told to wait.
    let t0 = Instant::now();
    let ticks = AtomicU64::new(0);
    let tick = || t0 + Duration::from_micros(10 * ticks.fetch_add(1, Ordering::Relaxed));
    c.bench_function("local_limiter_admit_uncontended", |b| {
        b.iter(|| assert!(black_box(admit(&limiter, tick()))))
    });
    c.bench_function("local_limiter_admit_8_threads", |b| {
        b.iter_custom(|iters| {
            let per = iters / 8 + 1;
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..8 {
                    let limiter = &limiter;
                    let (admit, tick) = (&admit, &tick);
                    s.spawn(move || {
                        for _ in 0..per {
                            assert!(black_box(admit(limiter, tick())));
                        }
                    });
                }
            });
            start.elapsed() / 8
        })
    });
}

criterion_group!(benches, bench_admit);
criterion_main!(benches);
