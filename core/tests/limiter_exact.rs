//! The budget's arithmetic stays exact in a Lua double (every field ≤ 2⁵³ − 1) on any
//! input, and the stores' helpers (flattening, field lists, share cap, carry-over) hold.

use std::collections::HashMap;
use std::time::Duration;

use mistral_core::limiter::{
    Block, BudgetState, Budgets, Decision, LimiterConfig, Limits, MAX_EXACT, ReportOp, Seed,
    SignalOp, Source,
};
use mistral_core::{Ask, Bucket, Quota, RateLimits, Report, Retry, Verdict, WaitReason, Window};
use proptest::prelude::*;

/// A reservation of `tokens` (`retry`: a later attempt), with no time limit.
#[allow(dead_code)]
fn rv(tokens: u64, retry: bool) -> mistral_core::limiter::Reserve {
    mistral_core::limiter::Reserve {
        retry,
        ..mistral_core::limiter::Reserve::new(tokens)
    }
}

#[allow(dead_code)]
fn go_wait(d: mistral_core::limiter::Decision) -> u64 {
    match d {
        mistral_core::limiter::Decision::Go { wait_us, .. } => wait_us,
        other => panic!("expected Go, got {other:?}"),
    }
}

fn signal() -> impl Strategy<Value = SignalOp> {
    prop_oneof![
        Just(SignalOp::Other),
        Just(SignalOp::Success),
        (any::<u64>(), any::<u64>())
            .prop_map(|(wait_us, window_us)| SignalOp::WindowSpent { wait_us, window_us }),
        any::<u64>().prop_map(|wait_us| SignalOp::RateLimited { wait_us }),
        Just(SignalOp::NoAllowance),
        Just(SignalOp::MonthlyQuota),
    ]
}

fn big() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..10,
        0u64..2_000_000,
        any::<u64>(),
        Just(MAX_EXACT),
        Just(u64::MAX),
        1_700_000_000_000_000u64..1_800_000_000_000_000,
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64, u64, bool),
    Report(u64, ReportOp),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (big(), big(), any::<bool>()).prop_map(|(t, n, r)| Op::Reserve(t, n, r)),
        (
            big(),
            (big(), 0u64..100_000, big(), 0u64..100_000),
            (big(), proptest::option::of(big()), signal())
        )
            .prop_map(|(t, (rl, rw, tl, tw), (est, used, signal))| Op::Report(
                t,
                ReportOp {
                    req_limit: rl,
                    req_window_secs: rw,
                    tok_limit: tl,
                    tok_window_secs: tw,
                    estimated_tokens: est,
                    used_tokens: used,
                    signal,
                    req_remaining: (rl % 2 == 0).then_some(0),
                    tok_remaining: (tl % 3 != 0).then_some(est),
                    ticket: None,
                }
            )),
    ]
}

proptest! {
    #[test]
    fn every_field_stays_exact_in_a_double_on_any_input(
        configured in any::<bool>(),
        req in big(),
        tok in big(),
        share in prop_oneof![Just(1_000_000u64), 0u64..2_000_000, any::<u64>()],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut s = BudgetState::seeded(0, Seed { configured, req_base_ns: req, tok_base_ns: tok });
        s.share_ppm = share.min(MAX_EXACT);
        for op in ops {
            match op {
                Op::Reserve(t, n, r) => {
                    if let Decision::Go { wait_us: w, .. } | Decision::Recheck(w) = s.reserve(t, &rv(n, r)) {
                        prop_assert!(w <= MAX_EXACT);
                    }
                }
                Op::Report(t, r) => s.apply(t, &r),
            }
            prop_assert!(s.to_fields().iter().all(|&v| v <= MAX_EXACT), "{s:?}");
            prop_assert_eq!(BudgetState::from_fields(s.to_fields()), Some(s));
        }
    }
}

#[test]
fn the_split_period_matches_the_exact_ratio() {
    // The period is base × 10¹² / (share × (1 − margin)), computed without u128: compare
    // the resulting pace with the exact one for limits from 1/day to 10⁷/s.
    for (limit, window) in [
        (1u64, 86_400u64),
        (1, 60),
        (60, 60),
        (10, 1),
        (50, 1),
        (2_000_000, 60),
        (10_000_000, 1),
    ] {
        for share in [1_000_000u64, 900_000, 250_000, 50_000, 1_500_000] {
            let mut s = BudgetState::new(
                0,
                Some(Limits::requests(limit, Duration::from_secs(window))),
            );
            s.share_ppm = share;
            let _booked = s.reserve(0, &rv(1, false));
            let got = s.req_tat_us as f64;
            let exact = window as f64 * 1e6 / limit as f64 / (share as f64 / 1e6) / 0.985;
            // The tat holds whole microseconds.
            assert!(
                (got - exact).abs() <= 1.0 + exact * 2e-6,
                "{limit}/{window}s at {share}: {got} vs {exact}"
            );
        }
    }
}

#[test]
fn a_report_flattens_to_the_integers_the_budget_uses() {
    let limits = RateLimits {
        quotas: vec![
            Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(60),
                limit: Some(120),
                remaining: Some(3),
            },
            Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(1),
                limit: Some(5),
                remaining: Some(0),
            },
            Quota {
                bucket: Bucket::Tokens,
                window: Window::Month,
                limit: Some(1_000_000),
                remaining: Some(5),
            },
        ],
        ..RateLimits::default()
    };
    let report = Report {
        model: Some("m".into()),
        limits,
        verdict: Verdict::WindowSpent {
            quota: Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(1),
                limit: Some(5),
                remaining: Some(0),
            },
        },
        retry: Some(Retry {
            wait: Duration::from_millis(250),
            why: WaitReason::ServerHint,
        }),
        estimated_tokens: u64::MAX,
        used_tokens: Some(0),
        attempt: 2,
        correlation_id: None,
        ticket: None,
    };
    assert_eq!(
        ReportOp::from(&report),
        ReportOp {
            req_limit: 5,
            req_window_secs: 1,
            tok_limit: 0,
            tok_window_secs: 0,
            estimated_tokens: MAX_EXACT,
            used_tokens: Some(0),
            signal: SignalOp::WindowSpent {
                wait_us: 250_000,
                window_us: 1_000_000
            },
            req_remaining: Some(0),
            tok_remaining: None,
            ticket: None,
        }
    );
    let usage = Report {
        verdict: Verdict::Usage,
        ..report
    };
    assert_eq!(ReportOp::from(&usage).signal, SignalOp::Usage);
}

#[test]
fn a_share_cap_holds_whatever_the_budget_learns() {
    let config = LimiterConfig {
        default: Some(Limits::requests(50, Duration::from_secs(1))),
        ..LimiterConfig::default()
    };
    let mut b = Budgets::new(config).with_share_cap(250_000);
    let ask = Ask {
        model: Some("m".into()),
        tokens: 1,
        attempt: 1,
        within: None,
        confirm: None,
        priority: mistral_core::Priority::Default,
    };
    assert_eq!(go_wait(b.decide(0, "m", &rv(1, false))), 0);
    let second = match b.decide(0, "m", &rv(1, false)) {
        Decision::Go { wait_us: us, .. } => us,
        other => panic!("{other:?}"),
    };
    // 50/s at a quarter: about 12.3 per second, 81 ms apart.
    assert!((80_000..83_000).contains(&second), "{second}");
    let _booked = b.reserve(0, &ask);
    assert_eq!(b.get("m").unwrap().share_ppm, 250_000);
}

#[test]
fn restarted_keeps_what_was_learned_and_nothing_else() {
    let mut s = BudgetState::new(5_000_000, None);
    let _booked = s.reserve(5_000_000, &rv(1, false));
    s.source = Source::Headers;
    s.req_base_ns = 1_000_000_000;
    s.share_ppm = 700_000;
    s.block = Block::NoAllowance;
    s.pause_until_us = 9_000_000;
    let r = s.restarted(0);
    assert_eq!(
        (r.source, r.req_base_ns, r.share_ppm),
        (Source::Headers, 1_000_000_000, 700_000)
    );
    assert_eq!(
        (r.seen_us, r.req_tat_us, r.pause_until_us, r.block),
        (0, 0, 0, Block::None)
    );
}

#[test]
fn idle_budgets_are_forgotten_busy_ones_kept() {
    let mut states = HashMap::new();
    states.insert("old".to_owned(), BudgetState::new(0, None));
    let mut busy = BudgetState::new(0, None);
    busy.block_until_us = 10_000_000_000;
    states.insert("closed".to_owned(), busy);
    states.insert("new".to_owned(), BudgetState::new(9_000_000_000, None));
    let mut b = Budgets::from_states(LimiterConfig::default(), states);
    b.forget_idle(9_000_000_000, 3_600_000_000);
    let mut left: Vec<_> = b.into_states().into_keys().collect();
    left.sort();
    assert_eq!(left, ["closed", "new"]);
}
