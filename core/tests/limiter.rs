//! The shared budget's arithmetic, stepped on a virtual clock.

use std::time::Duration;

use mistral_core::limiter::{Block, BudgetState, Budgets, Decision, LimiterConfig, Limits, Source};
use mistral_core::{Ask, Bucket, Grant, Quota, RateLimits, Report, Signal, Window};

const S: u64 = 1_000_000;

fn report(signal: Signal, limits: RateLimits, est: u64, used: Option<u64>) -> Report {
    Report {
        model: Some("m".into()),
        limits,
        signal,
        estimated_tokens: est,
        used_tokens: used,
        attempt: 1,
        correlation_id: None,
    }
}

fn req_limits(limit: u64, secs: u32, remaining: u64) -> RateLimits {
    RateLimits {
        quotas: vec![Quota {
            bucket: Bucket::Requests,
            window: Window::Seconds(secs),
            limit: Some(limit),
            remaining: Some(remaining),
        }],
        ..RateLimits::default()
    }
}

fn go(d: Decision) -> u64 {
    match d {
        Decision::Go(us) => us,
        other => panic!("expected Go, got {other:?}"),
    }
}

#[test]
fn configured_requests_are_paced_never_burst() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    let starts: Vec<u64> = (0..20).map(|_| go(b.reserve(0, 1, false))).collect();
    // 100 ms per request, stretched by the 1.5 % margin.
    let period = starts[1];
    assert!((101_000..103_000).contains(&period), "{period}");
    for (i, s) in starts.iter().enumerate() {
        assert_eq!(*s, period * i as u64);
    }
    // In any one-second window at most 10 starts: the server's limit.
    for w in starts.windows(11) {
        assert!(w[10] - w[0] >= S);
    }
}

#[test]
fn until_the_first_answer_one_probe_goes_and_the_others_recheck() {
    let mut b = BudgetState::new(0, None);
    assert_eq!(b.reserve(0, 1, false), Decision::Go(0));
    assert!(matches!(b.reserve(0, 1, false), Decision::Recheck(_)));
    // The answer announces 60 per minute: one per second from now on.
    b.report(
        50_000,
        &report(Signal::Success, req_limits(60, 60, 59), 1, Some(1)),
    );
    assert_eq!(b.source, Source::Headers);
    let first = go(b.reserve(50_000, 1, false));
    let second = go(b.reserve(50_000, 1, false));
    assert!(second - first >= S, "{first} {second}");
}

#[test]
fn a_lost_probe_does_not_stall_the_budget() {
    let mut b = BudgetState::new(0, None);
    assert_eq!(b.reserve(0, 1, false), Decision::Go(0));
    assert!(matches!(b.reserve(S, 1, false), Decision::Recheck(_)));
    assert_eq!(
        b.reserve(BudgetState::PROBE_TIMEOUT_MICROS, 1, false),
        Decision::Go(0)
    );
}

#[test]
fn tokens_are_paced_corrected_and_large_requests_wait_without_hanging() {
    let limits =
        Limits::requests(1000, Duration::from_secs(1)).with_tokens(1000, Duration::from_secs(1));
    let mut b = BudgetState::new(0, Some(limits));
    assert_eq!(go(b.reserve(0, 500, false)), 0);
    let second = go(b.reserve(0, 500, false));
    assert!((500_000..520_000).contains(&second), "{second}");
    // The first used only 100 of its 500: 400 tokens come back.
    b.report(
        0,
        &report(Signal::Success, RateLimits::default(), 500, Some(100)),
    );
    let third = go(b.reserve(0, 1, false));
    assert!((600_000..620_000).contains(&third), "{third}");
    // A request larger than the whole bucket waits its turn and pushes the next
    // (debt), it never hangs.
    let huge = go(b.reserve(0, 5_000, false));
    assert!(huge < 700_000);
    let after = go(b.reserve(0, 1, false));
    assert!(after > 5 * S, "{after}");
}

#[test]
fn a_429_pauses_every_caller_and_lowers_the_rate_once_per_event() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    for _ in 0..10 {
        b.reserve(0, 1, false);
    }
    let quota = Quota {
        bucket: Bucket::Requests,
        window: Window::Seconds(1),
        limit: Some(100),
        remaining: Some(0),
    };
    let spent = Signal::WindowSpent {
        quota,
        wait: Duration::from_millis(300),
    };
    // Three callers refused in the same event.
    for t in [10_000, 12_000, 15_000] {
        b.report(t, &report(spent, RateLimits::default(), 1, Some(0)));
    }
    assert_eq!(b.share_ppm, 900_000, "lowered once, not three times");
    let next = go(b.reserve(20_000, 1, false));
    assert!(20_000 + next >= 310_000, "paused: {next}");
    // A refusal after the event has calmed is a new event.
    b.report(2 * S, &report(spent, RateLimits::default(), 1, Some(0)));
    assert_eq!(b.share_ppm, 810_000);
}

#[test]
fn the_rate_grows_back_without_refusals() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    b.share_ppm = 500_000;
    for i in 1..=100 {
        b.report(
            i * S / 10,
            &report(Signal::Success, RateLimits::default(), 1, Some(1)),
        );
    }
    assert!(
        b.share_ppm > 550_000 && b.share_ppm <= 1_000_000,
        "{}",
        b.share_ppm
    );
}

#[test]
fn no_allowance_closes_the_budget_for_everyone() {
    let mut budgets = Budgets::new(LimiterConfig::default());
    let ask = Ask {
        model: Some("m".into()),
        tokens: 1,
        attempt: 1,
    };
    assert_eq!(budgets.reserve(0, &ask), Grant::Now);
    budgets.report(
        10,
        &report(Signal::NoAllowance, RateLimits::default(), 1, Some(0)),
    );
    for _ in 0..3 {
        match budgets.reserve(20, &ask) {
            Grant::Refused(e) => assert!(
                e.is_permanent() && e.to_string().contains("no allowance"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }
    let other_model = Ask {
        model: Some("other".into()),
        ..ask.clone()
    };
    assert_eq!(
        budgets.reserve(20, &other_model),
        Grant::Now,
        "budgets are per model"
    );
    // Much later one call may probe again.
    assert_eq!(
        budgets.reserve(BudgetState::BLOCK_MICROS + 30, &ask),
        Grant::Now
    );
    assert_eq!(budgets.get("m").unwrap().block, Block::NoAllowance);
}

#[test]
fn monthly_quota_closes_with_the_quota_error() {
    let mut budgets = Budgets::new(LimiterConfig::default());
    let ask = Ask {
        model: Some("m".into()),
        tokens: 1,
        attempt: 1,
    };
    budgets.reserve(0, &ask);
    budgets.report(
        1,
        &report(Signal::MonthlyQuota, RateLimits::default(), 1, Some(0)),
    );
    assert!(matches!(
        budgets.reserve(2, &ask),
        Grant::Refused(mistral_core::Error::MonthlyQuota { .. })
    ));
}

#[test]
fn a_clock_stepped_back_neither_stalls_nor_floods() {
    let mut b = BudgetState::new(100 * S, Some(Limits::requests(1, Duration::from_secs(1))));
    assert_eq!(go(b.reserve(100 * S, 1, false)), 0);
    // The wall clock steps back 50 s: the next slot is still about 1 s away, not 51 s.
    let wait = go(b.reserve(50 * S, 1, false));
    assert!(wait <= 1_100_000, "stalled: {wait}");
    assert!(wait >= 1_000_000, "flooded: {wait}");
    // Forward 1000 s: idle cells admit one at a time.
    assert_eq!(go(b.reserve(1050 * S, 1, false)), 0);
    assert!(go(b.reserve(1050 * S, 1, false)) >= S);
}

#[test]
fn retries_spend_a_retry_budget() {
    let mut b = BudgetState::new(0, None);
    b.source = Source::Learned; // no limits known: first attempts go at once
    let retries: Vec<u64> = (0..30).map(|_| go(b.reserve(0, 1, true))).collect();
    assert_eq!(retries[..10], [0; 10], "a burst of 10 retries");
    assert!(
        retries[29] >= 900_000,
        "then at most 20 per second: {}",
        retries[29]
    );
    assert_eq!(
        go(b.reserve(0, 1, false)),
        0,
        "first attempts are not held back"
    );
}

/// The independent servers of this test: `limit` per `window` under three semantics.
enum Server {
    SlidingLog(Vec<u64>),
    FixedWindow(u64, usize),
    Bucket { level_us: f64, last: u64 },
}

impl Server {
    fn admit(&mut self, t: u64, limit: usize, window: u64) -> bool {
        match self {
            Server::SlidingLog(admitted) => {
                let in_window = admitted
                    .iter()
                    .rev()
                    .take_while(|&&a| a + window > t)
                    .count();
                let ok = in_window < limit;
                if ok {
                    admitted.push(t);
                }
                ok
            }
            Server::FixedWindow(start, count) => {
                if t >= *start + window {
                    *start = t / window * window;
                    *count = 0;
                }
                let ok = *count < limit;
                *count += usize::from(ok);
                ok
            }
            Server::Bucket { level_us, last } => {
                // Tokens as a level: capacity `limit`, refill `limit / window`.
                let refill = (t - *last) as f64 * limit as f64 / window as f64;
                *level_us = (*level_us + refill).min(limit as f64);
                *last = t;
                let ok = *level_us >= 1.0;
                if ok {
                    *level_us -= 1.0;
                }
                ok
            }
        }
    }
}

/// One server of each semantics, 50 per second, fresh.
fn servers() -> [(&'static str, Server); 3] {
    [
        ("sliding log", Server::SlidingLog(Vec::new())),
        ("fixed window", Server::FixedWindow(0, 0)),
        (
            "bucket",
            Server::Bucket {
                level_us: 50.0,
                last: 0,
            },
        ),
    ]
}

/// `callers` callers, each request 5–55 ms in flight (answers come back out of order),
/// refused calls back off as the Call does (full jitter from 0.5 s): returns (goodput
/// against the limit, refusals).
fn simulate(mut server: Server, limit: usize, total: usize, callers: usize) -> (f64, usize) {
    let mut b = BudgetState::new(0, None);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut refusals = 0;
    // Each caller's next event, in virtual time: ask, send, or hear back.
    #[derive(Clone, Copy)]
    enum Next {
        Ask,
        Send,
        Hear(bool),
    }
    let mut callers = vec![(0u64, Next::Ask, 0u32); callers];
    let mut done = 0;
    let mut last_admit = 0;
    while done < total {
        let i = (0..callers.len()).min_by_key(|&i| callers[i].0).unwrap();
        let (t, next, streak) = callers[i];
        callers[i] = match next {
            Next::Ask => match b.reserve(t, 1, streak > 0) {
                Decision::Recheck(us) => (t + us, Next::Ask, streak),
                Decision::Closed(_) => panic!("closed"),
                Decision::Go(wait) => (t + wait, Next::Send, streak),
            },
            Next::Send => {
                let ok = server.admit(t, limit, S);
                if ok {
                    last_admit = t;
                }
                // 5–55 ms in flight: answers come back out of order.
                (t + 5_000 + rng.u64(0..50_000), Next::Hear(ok), streak)
            }
            Next::Hear(true) => {
                done += 1;
                b.report(
                    t,
                    &report(Signal::Success, RateLimits::default(), 1, Some(1)),
                );
                (t, Next::Ask, 0)
            }
            Next::Hear(false) => {
                refusals += 1;
                let ceiling = 500_000u64 << streak.min(6);
                let wait = (ceiling as f64 * rng.f64()) as u64;
                let signal = Signal::RateLimited {
                    wait: Duration::from_micros(wait),
                };
                b.report(t, &report(signal, RateLimits::default(), 1, Some(0)));
                (t + wait, Next::Ask, streak + 1)
            }
        };
    }
    let makespan = last_admit as f64 / S as f64;
    (total as f64 / makespan / limit as f64, refusals)
}

#[test]
fn with_nothing_announced_the_rate_is_learned_from_429s_and_converges() {
    for (name, server) in servers() {
        let (goodput, refusals) = simulate(server, 50, 2_000, 16);
        eprintln!(
            "learned from 429s ({name}): goodput {goodput:.3} of the limit, {refusals} refusals"
        );
        assert!(goodput >= 0.85, "{name}: goodput {goodput:.3} of the limit");
        assert!(
            refusals < 200,
            "{name}: {refusals} refusals for 2000 requests"
        );
    }
}

#[test]
fn a_failed_probe_releases_the_budget_at_once() {
    let mut b = BudgetState::new(0, None);
    assert_eq!(b.reserve(0, 1, false), Decision::Go(0));
    assert!(matches!(b.reserve(1_000, 1, false), Decision::Recheck(_)));
    // The probe got a 503: nothing learned, but the next caller need not wait 2 s.
    b.report(
        5_000,
        &report(Signal::ServerError, RateLimits::default(), 1, None),
    );
    assert_eq!(b.source, Source::Unknown);
    assert_eq!(b.reserve(6_000, 1, true), Decision::Go(0));
}

#[test]
fn a_window_left_empty_by_a_success_holds_everyone_one_unit() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    assert_eq!(go(b.reserve(0, 1, false)), 0);
    // Another program took the rest: our success shows nothing left.
    b.report(
        1_000,
        &report(Signal::Success, req_limits(10, 1, 0), 1, Some(1)),
    );
    let next = go(b.reserve(2_000, 1, false));
    assert!(2_000 + next >= 1_000 + 100_000, "not held: {next}");
    // With something left, no hold beyond the pacing.
    let mut c = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    c.reserve(0, 1, false);
    c.report(
        1_000,
        &report(Signal::Success, req_limits(10, 1, 5), 1, Some(1)),
    );
    assert!(go(c.reserve(200_000, 1, false)) == 0);
}

#[test]
fn with_a_known_rate_retries_are_paced_like_first_attempts() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    let retries: Vec<u64> = (0..200).map(|_| go(b.reserve(0, 1, true))).collect();
    // 200 retries take two seconds at 100 per second: not held back further.
    assert!(retries[199] < 2_100_000, "{}", retries[199]);
    assert!(retries[199] >= 1_990_000, "{}", retries[199]);
}

#[test]
fn the_pause_is_the_events_not_the_longest_backoff_of_its_callers() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    let rl = |ms| Signal::RateLimited {
        wait: Duration::from_millis(ms),
    };
    b.report(0, &report(rl(200), RateLimits::default(), 1, Some(0)));
    // Another caller of the same event had backed off 20 s: the others do not wait it.
    b.report(
        1_000,
        &report(rl(20_000), RateLimits::default(), 1, Some(0)),
    );
    let next = go(b.reserve(2_000, 1, false));
    assert!(
        2_000 + next < 1_000_000,
        "everyone waits the longest backoff: {next}"
    );
    assert!(2_000 + next >= 200_000, "no pause at all: {next}");
}

#[test]
fn five_hundred_callers_learning_from_429s_converge_too() {
    for (name, server) in servers() {
        let (goodput, refusals) = simulate(server, 50, 1_000, 512);
        eprintln!("512 callers learning ({name}): goodput {goodput:.3}, {refusals} refusals");
        assert!(goodput >= 0.8, "{name}: goodput {goodput:.3} of the limit");
    }
}
