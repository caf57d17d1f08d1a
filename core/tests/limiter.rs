//! The shared budget's arithmetic, stepped on a virtual clock.

use std::time::Duration;

use mistral_core::limiter::{
    Block, BudgetState, Budgets, Decision, LimiterConfig, Limits, Reserve, Source,
};
use mistral_core::{
    Ask, Bucket, Grant, Quota, RateLimits, Report, Retry, Ticket, Verdict, WaitReason, Window,
};

/// A reservation of `tokens` (`retry`: a later attempt), with no time limit.
#[allow(dead_code)]
fn rv(tokens: u64, retry: bool) -> mistral_core::limiter::Reserve {
    mistral_core::limiter::Reserve {
        retry,
        ..mistral_core::limiter::Reserve::new(tokens)
    }
}

const S: u64 = 1_000_000;

/// What an attempt came to, and the retry its call planned (for the two that name one).
type Signal = (Verdict, Option<Retry>);

fn only(verdict: Verdict) -> Signal {
    (verdict, None)
}

/// A wait the server named.
fn hinted(wait: Duration) -> Option<Retry> {
    Some(Retry {
        wait,
        why: WaitReason::ServerHint,
    })
}

/// A quota of `bucket` over `window`, spent.
fn spent_quota(bucket: Bucket, window: Window) -> Quota {
    Quota {
        bucket,
        window,
        limit: Some(0),
        remaining: Some(0),
    }
}

fn report(signal: Signal, limits: RateLimits, est: u64, used: Option<u64>) -> Report {
    Report {
        model: Some("m".into()),
        limits,
        verdict: signal.0,
        retry: signal.1,
        estimated_tokens: est,
        used_tokens: used,
        attempt: 1,
        correlation_id: None,
        ticket: None,
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

/// A budget whose first booking (a probe of `tokens`) was answered at 10 ms with
/// `limits`, all of the probe's tokens used.
fn answered(limits: RateLimits, tokens: u64) -> BudgetState {
    let mut b = BudgetState::new(0, None);
    let probe = ticket(b.reserve(0, &rv(tokens, false)));
    let mut ok = report(only(Verdict::Success), limits, tokens, Some(tokens));
    ok.ticket = Some(probe);
    b.report(10_000, &ok);
    b
}

/// The ticket of a booking that must go.
fn ticket(d: Decision) -> Ticket {
    match d {
        Decision::Go { ticket, .. } => ticket,
        other => panic!("expected Go, got {other:?}"),
    }
}

fn go(d: Decision) -> u64 {
    match d {
        Decision::Go { wait_us: us, .. } => us,
        other => panic!("expected Go, got {other:?}"),
    }
}

#[test]
fn configured_requests_are_paced_never_burst() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    let starts: Vec<u64> = (0..20).map(|_| go(b.reserve(0, &rv(1, false)))).collect();
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
    assert_eq!(go(b.reserve(0, &rv(1, false))), 0);
    assert!(matches!(b.reserve(0, &rv(1, false)), Decision::Recheck(_)));
    // The answer announces 60 per minute with 59 left: all but the last go at once,
    // less what is still out, then one per second.
    b.report(
        50_000,
        &report(only(Verdict::Success), req_limits(60, 60, 59), 1, Some(1)),
    );
    assert_eq!(b.source, Source::Headers);
    let waits: Vec<u64> = (0..60)
        .map(|_| go(b.reserve(50_000, &rv(1, false))))
        .collect();
    // The report quoted no ticket, so the probe still counts as out: 57 go at once.
    assert_eq!(waits[..57], [0; 57]);
    assert!(waits[58] - waits[57] >= S, "{waits:?}");
}

#[test]
fn a_lost_probe_does_not_stall_the_budget() {
    let mut b = BudgetState::new(0, None);
    assert_eq!(go(b.reserve(0, &rv(1, false))), 0);
    assert!(matches!(b.reserve(S, &rv(1, false)), Decision::Recheck(_)));
    assert_eq!(
        go(b.reserve(BudgetState::PROBE_TIMEOUT_MICROS, &rv(1, false))),
        0
    );
}

#[test]
fn tokens_are_paced_corrected_and_large_requests_wait_without_hanging() {
    let limits =
        Limits::requests(1000, Duration::from_secs(1)).with_tokens(1000, Duration::from_secs(1));
    let mut b = BudgetState::new(0, Some(limits));
    assert_eq!(go(b.reserve(0, &rv(500, false))), 0);
    let second = go(b.reserve(0, &rv(500, false)));
    assert!((500_000..520_000).contains(&second), "{second}");
    // The first used only 100 of its 500: 400 tokens come back.
    b.report(
        0,
        &report(
            only(Verdict::Success),
            RateLimits::default(),
            500,
            Some(100),
        ),
    );
    let third = go(b.reserve(0, &rv(1, false)));
    assert!((600_000..620_000).contains(&third), "{third}");
    // A request larger than the whole bucket waits its turn and pushes the next
    // (debt), it never hangs.
    let huge = go(b.reserve(0, &rv(5_000, false)));
    assert!(huge < 700_000);
    let after = go(b.reserve(0, &rv(1, false)));
    assert!(after > 5 * S, "{after}");
}

#[test]
fn a_429_pauses_every_caller_lowers_the_rate_once_and_lets_one_probe_go() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    let tickets: Vec<Ticket> = (0..10)
        .map(|_| ticket(b.reserve(0, &rv(1, false))))
        .collect();
    let quota = Quota {
        bucket: Bucket::Requests,
        window: Window::Seconds(1),
        limit: Some(100),
        remaining: Some(0),
    };
    let spent = (
        Verdict::WindowSpent { quota },
        hinted(Duration::from_millis(300)),
    );
    // Three callers booked before the event are refused in it.
    for (t, ticket) in [10_000, 12_000, 15_000].into_iter().zip(&tickets) {
        let mut r = report(spent, RateLimits::default(), 1, Some(0));
        r.ticket = Some(*ticket);
        b.report(t, &r);
    }
    assert_eq!(b.share_ppm, 900_000, "lowered once, not three times");
    assert_eq!(b.epoch, 1, "one congestion event");
    // Everyone waits the pause, booking nothing; a booking of the old epoch is void.
    assert_eq!(b.reserve(20_000, &rv(1, false)), Decision::Recheck(290_000));
    let confirm = Reserve {
        confirm: Some(tickets[0]),
        ..Reserve::new(1)
    };
    assert!(matches!(b.reserve(20_000, &confirm), Decision::Recheck(_)));
    // After it, one probe goes; the others wait for its answer.
    let probe = match b.reserve(310_000, &rv(1, false)) {
        Decision::Go { wait_us: 0, ticket } => ticket,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        b.reserve(311_000, &rv(1, false)),
        Decision::Recheck(_)
    ));
    let mut ok = report(only(Verdict::Success), RateLimits::default(), 1, Some(1));
    ok.ticket = Some(probe);
    b.report(340_000, &ok);
    assert_eq!(b.recovering, 0, "the probe got through: pacing resumes");
    assert!(matches!(
        b.reserve(341_000, &rv(1, false)),
        Decision::Go { .. }
    ));
    // A refusal of a booking made after the event is a new event.
    let before = b.share_ppm;
    let mut r = report(spent, RateLimits::default(), 1, Some(0));
    r.ticket = Some(probe);
    b.report(2 * S, &r);
    assert_eq!(b.share_ppm, before * 9 / 10);
    assert_eq!(b.epoch, 2);
}

#[test]
fn the_rate_grows_back_without_refusals() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    b.share_ppm = 500_000;
    for i in 1..=100 {
        b.report(
            i * S / 10,
            &report(only(Verdict::Success), RateLimits::default(), 1, Some(1)),
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
        within: None,
        confirm: None,
        priority: mistral_core::Priority::Default,
    };
    assert!(matches!(budgets.reserve(0, &ask), Grant::Slot { .. }));
    budgets.report(
        10,
        &report(
            only(Verdict::NoAllowance {
                quota: spent_quota(Bucket::Requests, Window::MINUTE),
            }),
            RateLimits::default(),
            1,
            Some(0),
        ),
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
    assert!(
        matches!(
            budgets.reserve(20, &other_model),
            Grant::Slot { after, .. } if after.is_zero()
        ),
        "budgets are per model"
    );
    // Much later one call may probe again.
    assert!(matches!(
        budgets.reserve(BudgetState::BLOCK_MICROS + 30, &ask),
        Grant::Slot { after, .. } if after.is_zero()
    ));
    assert_eq!(budgets.get("m").unwrap().block, Block::NoAllowance);
}

#[test]
fn monthly_quota_closes_with_the_quota_error() {
    let mut budgets = Budgets::new(LimiterConfig::default());
    let ask = Ask {
        model: Some("m".into()),
        tokens: 1,
        attempt: 1,
        within: None,
        confirm: None,
        priority: mistral_core::Priority::Default,
    };
    let _booked = budgets.reserve(0, &ask);
    budgets.report(
        1,
        &report(
            only(Verdict::MonthlyQuota {
                quota: spent_quota(Bucket::Tokens, Window::Month),
            }),
            RateLimits::default(),
            1,
            Some(0),
        ),
    );
    assert!(matches!(
        budgets.reserve(2, &ask),
        Grant::Refused(mistral_core::Error::MonthlyQuota { .. })
    ));
}

#[test]
fn a_clock_stepped_back_neither_stalls_nor_floods() {
    let mut b = BudgetState::new(100 * S, Some(Limits::requests(1, Duration::from_secs(1))));
    assert_eq!(go(b.reserve(100 * S, &rv(1, false))), 0);
    // The wall clock steps back 50 s: the next slot is still about 1 s away, not 51 s.
    let wait = go(b.reserve(50 * S, &rv(1, false)));
    assert!(wait <= 1_100_000, "stalled: {wait}");
    assert!(wait >= 1_000_000, "flooded: {wait}");
    // Forward 1000 s: idle cells admit one at a time.
    assert_eq!(go(b.reserve(1050 * S, &rv(1, false))), 0);
    assert!(go(b.reserve(1050 * S, &rv(1, false))) >= S);
}

#[test]
fn callers_racing_for_the_budget_do_not_move_its_clock_back() {
    // Callers read the clock, then take their turn: one that read it a little earlier
    // arrives with a `now` a few milliseconds behind the latest. That is not a clock
    // step: it counts as the latest, and the schedule stays where it is.
    let period = {
        let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
        let _first = go(b.reserve(0, &rv(1, false)));
        go(b.reserve(0, &rv(1, false)))
    };
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    assert_eq!(go(b.reserve(100_000, &rv(1, false))), 0);
    // Its wait runs from its turn, which came after the first one's.
    let second = 100_000 + go(b.reserve(95_000, &rv(1, false)));
    let third = 101_000 + go(b.reserve(101_000, &rv(1, false)));
    assert!(second >= 100_000 + period, "second at {second} µs");
    assert!(
        third >= 100_000 + 2 * period,
        "third at {third} µs: the schedule moved back"
    );
    // What was learned about the window keeps its time.
    let mut b = BudgetState::new(0, None);
    let _probe = go(b.reserve(0, &rv(1, false)));
    b.report(
        5_000,
        &report(only(Verdict::Success), req_limits(100, 2, 99), 1, Some(1)),
    );
    assert_eq!(b.anchor_us, 5_000);
    b.report(
        4_000,
        &report(only(Verdict::Success), req_limits(100, 2, 98), 1, Some(1)),
    );
    assert_eq!(b.anchor_us, 5_000, "the window's start moved");
}

#[test]
fn retries_spend_a_retry_budget() {
    let mut b = BudgetState::new(0, None);
    b.source = Source::Learned; // no limits known: first attempts go at once
    let retries: Vec<u64> = (0..30).map(|_| go(b.reserve(0, &rv(1, true)))).collect();
    assert_eq!(retries[..10], [0; 10], "a burst of 10 retries");
    assert!(
        retries[29] >= 900_000,
        "then at most 20 per second: {}",
        retries[29]
    );
    assert_eq!(
        go(b.reserve(0, &rv(1, false))),
        0,
        "first attempts are not held back"
    );
}

#[test]
fn a_failed_probe_releases_the_budget_at_once() {
    let mut b = BudgetState::new(0, None);
    assert_eq!(go(b.reserve(0, &rv(1, false))), 0);
    assert!(matches!(
        b.reserve(1_000, &rv(1, false)),
        Decision::Recheck(_)
    ));
    // The probe got a 503: nothing learned, but the next caller need not wait 2 s.
    b.report(
        5_000,
        &report(only(Verdict::ServerError), RateLimits::default(), 1, None),
    );
    assert_eq!(b.source, Source::Unknown);
    assert_eq!(go(b.reserve(6_000, &rv(1, true))), 0);
}

#[test]
fn a_window_left_empty_by_a_success_holds_everyone_one_unit() {
    let mut b = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    assert_eq!(go(b.reserve(0, &rv(1, false))), 0);
    // Another program took the rest: our success shows nothing left.
    b.report(
        1_000,
        &report(only(Verdict::Success), req_limits(10, 1, 0), 1, Some(1)),
    );
    let next = go(b.reserve(2_000, &rv(1, false)));
    assert!(2_000 + next >= 1_000 + 100_000, "not held: {next}");
    // With something left, no hold beyond the pacing.
    let mut c = BudgetState::new(0, Some(Limits::requests(10, Duration::from_secs(1))));
    let _booked = c.reserve(0, &rv(1, false));
    c.report(
        1_000,
        &report(only(Verdict::Success), req_limits(10, 1, 5), 1, Some(1)),
    );
    assert!(go(c.reserve(200_000, &rv(1, false))) == 0);
}

#[test]
fn with_a_known_rate_retries_are_paced_like_first_attempts() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    let retries: Vec<u64> = (0..200).map(|_| go(b.reserve(0, &rv(1, true)))).collect();
    // 200 retries take two seconds at 100 per second: not held back further.
    assert!(retries[199] < 2_100_000, "{}", retries[199]);
    assert!(retries[199] >= 1_990_000, "{}", retries[199]);
}

#[test]
fn the_pause_is_the_events_not_the_longest_backoff_of_its_callers() {
    let mut b = BudgetState::new(0, Some(Limits::requests(100, Duration::from_secs(1))));
    let ticket = ticket(b.reserve(0, &rv(1, false)));
    let rl = |ms| (Verdict::RateLimited, hinted(Duration::from_millis(ms)));
    let mut first = report(rl(200), RateLimits::default(), 1, Some(0));
    first.ticket = Some(ticket);
    b.report(0, &first);
    // Another caller of the same event had backed off 20 s: the others do not wait it.
    let mut second = report(rl(20_000), RateLimits::default(), 1, Some(0));
    second.ticket = Some(ticket);
    b.report(1_000, &second);
    let wait = match b.reserve(2_000, &rv(1, false)) {
        Decision::Recheck(us) => us,
        other => panic!("{other:?}"),
    };
    assert!(
        2_000 + wait < 1_000_000,
        "everyone waits the longest backoff: {wait}"
    );
    assert!(2_000 + wait >= 200_000, "no pause at all: {wait}");
}

#[test]
fn a_slot_the_caller_cannot_use_in_time_is_not_booked() {
    let mut b = BudgetState::new(0, Some(Limits::requests(1, Duration::from_secs(10))));
    assert_eq!(go(b.reserve(0, &rv(1, false))), 0);
    let seq = b.seq;
    let tight = Reserve {
        within_us: 2 * S,
        ..Reserve::new(1)
    };
    match b.reserve(0, &tight) {
        Decision::Late(us) => assert!(us > 10 * S, "{us}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.seq, seq, "nothing booked");
    // The next caller with room is not pushed back by the refused one.
    let next = go(b.reserve(0, &rv(1, false)));
    assert!((10 * S..10_300_000).contains(&next), "{next}");
}

#[test]
fn announced_remaining_goes_at_once_then_pacing_resumes_one_unit_later() {
    // 50 per minute, 49 left after the probe.
    let mut b = answered(req_limits(50, 60, 49), 1);
    let waits: Vec<u64> = (0..52)
        .map(|_| go(b.reserve(10_000, &rv(1, false))))
        .collect();
    // All but the last of the 49 the server offers go at once (the last is paced:
    // requests may reach the server in another order than they were booked).
    assert_eq!(waits[..48], [0; 48], "the burst the server offers");
    assert!(waits[48] >= 1_200_000, "then one unit later: {}", waits[48]);
    assert!(waits[49] - waits[48] >= 1_200_000, "paced: {waits:?}");
}

#[test]
fn a_spent_window_answered_out_of_order_is_still_spent() {
    // 100 per 2 s, a fixed window. The probe's answer offers 99 more.
    let mut b = answered(req_limits(100, 2, 99), 1);
    let burst: Vec<Ticket> = (0..100)
        .map(|_| ticket(b.reserve(10_000, &rv(1, false))))
        .collect();
    // The server counted the burst in another order than it was booked: the answer of a
    // later booking (1 left) comes back before the one of an earlier booking (0 left),
    // and after it the answer of a still later booking that the server counted early
    // (5 left): it is not room again, only an old word.
    for (at, t, left) in [
        (50_000, burst[97], 1),
        (51_000, burst[96], 0),
        (52_000, burst[98], 5),
    ] {
        let mut ok = report(only(Verdict::Success), req_limits(100, 2, left), 1, Some(1));
        ok.ticket = Some(t);
        b.report(at, &ok);
    }
    assert!(b.spent_us > 0, "the window is spent, whatever the order");
    // A paced booking is refused.
    let spent = (
        Verdict::WindowSpent {
            quota: Quota {
                bucket: Bucket::Requests,
                window: Window::Seconds(2),
                limit: Some(100),
                remaining: Some(0),
            },
        },
        None,
    );
    let mut refused = report(spent, req_limits(100, 2, 0), 1, Some(0));
    refused.ticket = Some(burst[99]);
    b.report(73_000, &refused);
    assert!(
        b.share_ppm >= 970_000,
        "a spent window, not a stranger: {}",
        b.share_ppm
    );
    // Refused one unit after the window was spent: it does not refill continuously.
    let mut at = 73_000;
    let next = loop {
        match b.reserve(at, &rv(1, false)) {
            Decision::Recheck(us) => at += us,
            Decision::Go { wait_us, .. } => break at + wait_us,
            other => panic!("{other:?}"),
        }
    };
    // Everyone waits for the window seen to start (at 10 ms) to come round, not for a
    // doubling probe pause.
    assert!(
        next >= 2_010_000,
        "probe at {next} µs, before the window came round"
    );
    assert!(
        next <= 2_200_000,
        "probe at {next} µs, long after the window came round"
    );
}

/// Announced request and token quotas of one minute with what they have left.
fn req_tok_limits(req: (u64, u64), tok: (u64, u64)) -> RateLimits {
    let quota = |bucket, (limit, remaining)| Quota {
        bucket,
        window: Window::Seconds(60),
        limit: Some(limit),
        remaining: Some(remaining),
    };
    RateLimits {
        quotas: vec![quota(Bucket::Requests, req), quota(Bucket::Tokens, tok)],
        ..RateLimits::default()
    }
}

#[test]
fn announced_tokens_remaining_go_at_once_then_tokens_are_paced() {
    // 1,000 requests and 500,000 tokens a minute; calls of 50,000 tokens. Paced from
    // the start, one would go every 6 s; the server says 450,000 tokens are left.
    let mut b = answered(req_tok_limits((1000, 999), (500_000, 450_000)), 50_000);
    let waits: Vec<u64> = (0..10)
        .map(|_| go(b.reserve(10_000, &rv(50_000, false))))
        .collect();
    // All but the last call's worth of what is left go at once.
    assert_eq!(
        waits[..8],
        [0; 8],
        "the tokens the server offers: {waits:?}"
    );
    assert!(waits[8] >= 6 * S, "then paced: {waits:?}");
    assert!(waits[9] - waits[8] >= 6 * S, "paced: {waits:?}");
}

#[test]
fn token_credit_counts_what_is_still_out_and_ends_at_a_refusal() {
    // A success of 50,000 tokens on `ticket`, with what the quotas had left.
    let ok = |req_left, tok_left, ticket| Report {
        ticket: Some(ticket),
        ..report(
            only(Verdict::Success),
            req_tok_limits((1000, req_left), (500_000, tok_left)),
            50_000,
            Some(50_000),
        )
    };
    let mut b = answered(req_tok_limits((1000, 999), (500_000, 450_000)), 50_000);
    // Four go on the credit; the first one's answer shows the server counted it.
    let out: Vec<Ticket> = (0..4)
        .map(|_| ticket(b.reserve(10_000, &rv(50_000, false))))
        .collect();
    b.report(15_000, &ok(998, 400_000, out[0]));
    // 400,000 less the 3 still out less one call left to pacing: 4 more at once.
    let waits: Vec<u64> = (0..5)
        .map(|_| go(b.reserve(15_000, &rv(50_000, false))))
        .collect();
    assert_eq!(waits[..4], [0; 4], "{waits:?}");
    assert!(waits[4] > 0, "{waits:?}");
    // Nothing left: no credit.
    b.report(20_000, &ok(990, 0, out[3]));
    assert_eq!(b.tok_credit, 0);
    // A refusal ends any credit.
    let mut c = answered(req_tok_limits((1000, 999), (500_000, 450_000)), 1_000);
    assert!(c.tok_credit > 0);
    let spent = (
        Verdict::WindowSpent {
            quota: Quota {
                bucket: Bucket::Tokens,
                window: Window::Seconds(60),
                limit: Some(500_000),
                remaining: Some(0),
            },
        },
        None,
    );
    c.report(
        20_000,
        &report(spent, RateLimits::default(), 1_000, Some(0)),
    );
    assert_eq!(c.tok_credit, 0, "a refusal ends the credit");
}

#[test]
fn configured_tokens_are_never_burst() {
    // Limits the user configured are paced, whatever the server says is left.
    let limits = Limits::requests(1000, Duration::from_secs(60))
        .with_tokens(500_000, Duration::from_secs(60));
    let mut b = BudgetState::new(0, Some(limits));
    assert_eq!(go(b.reserve(0, &rv(50_000, false))), 0);
    b.report(
        10_000,
        &report(
            only(Verdict::Success),
            req_tok_limits((1000, 999), (500_000, 450_000)),
            50_000,
            Some(50_000),
        ),
    );
    assert!(go(b.reserve(10_000, &rv(50_000, false))) >= 5 * S);
}
