//! Honest time and the attempt id: a `now` that goes backwards, absurd durations and
//! instants, and late answers, all handed to a `Call` on a virtual clock.

#![allow(clippy::disallowed_methods)] // a virtual clock starts somewhere

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use mistral_core::{
    Action, Backoff, Call, Error, Grant, Outcome, RetryPolicy, Ticket, TransportError,
    TransportKind, WaitReason,
};
use support::chat_call;

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Bytes> {
    let mut b = http::Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Bytes::copy_from_slice(body.as_bytes())).unwrap()
}

fn ok() -> http::Response<Bytes> {
    response(200, &[], r#"{"choices":[],"usage":{"total_tokens":3}}"#)
}

/// Polls past reports; the first action that is not one.
fn next(call: &mut Call, now: Instant) -> Action {
    loop {
        match call.poll(now) {
            Action::Report(_) => {}
            other => return other,
        }
    }
}

/// Reserves (granted at once) and returns the attempt sent.
fn send(call: &mut Call, now: Instant) -> mistral_core::Attempt {
    match next(call, now) {
        Action::Reserve(_) => call.handle_grant(now, Grant::Now),
        other => panic!("expected a reservation, got {other:?}"),
    }
    match next(call, now) {
        Action::Send(attempt) => attempt,
        other => panic!("expected a send, got {other:?}"),
    }
}

fn wait_of(action: Action) -> (Instant, WaitReason) {
    match action {
        Action::Wait { until, why } => (until, why),
        other => panic!("expected a wait, got {other:?}"),
    }
}

#[test]
fn a_now_going_backwards_neither_shortens_nor_lengthens_a_wait() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let policy = RetryPolicy::default().deadline(None);
    let mut call = chat_call(false, &policy, t0, 7);
    let first = send(&mut call, t0);
    // A 429 saying "in 2 s", handed in at t0 + 1 s.
    let refusal = response(429, &[("retry-after", "2")], r#"{"message":"slow down"}"#);
    call.handle(t0 + s(1), first.id, Outcome::Response(refusal));
    let (until, why) = wait_of(next(&mut call, t0 + s(1)));
    assert_eq!((until, why), (t0 + s(3), WaitReason::ServerHint));
    // Polled with an earlier `now`: the same wait, to the same instant (not 2 s from
    // the earlier `now`, not shortened to the earlier clock).
    assert_eq!(wait_of(call.poll(t0)), (t0 + s(3), WaitReason::ServerHint));
    assert_eq!(
        wait_of(call.poll(t0 + s(2))),
        (t0 + s(3), WaitReason::ServerHint)
    );
    // At its end the call goes on; a `now` from before it, afterwards, changes nothing.
    assert!(matches!(call.poll(t0 + s(3)), Action::Reserve(_)));
    // A pacing grant handed in with a `now` 3 s in the past counts from the latest
    // instant seen: the wait ends 500 ms after t0 + 3 s, not after t0.
    call.handle_grant(
        t0,
        Grant::Go {
            after: Duration::from_millis(500),
            ticket: Ticket::default(),
        },
    );
    let (until, why) = wait_of(call.poll(t0));
    assert_eq!(
        (until, why),
        (t0 + Duration::from_millis(3_500), WaitReason::Pacing)
    );
    // The attempt's end counts from the latest instant too.
    let second = match next(&mut call, until) {
        Action::Send(attempt) => attempt,
        other => panic!("expected a send, got {other:?}"),
    };
    let timeout = RetryPolicy::default().attempt_timeout.unwrap();
    assert_eq!(second.ends_at, Some(until + timeout));
    assert_eq!(second.id.number(), 2);
    call.handle(t0, second.id, Outcome::Response(ok()));
    match next(&mut call, t0) {
        Action::Done(Ok(reply)) => {
            assert_eq!(reply.trail.attempts, 2);
            assert_eq!(reply.trail.waited, Duration::from_millis(2_500));
        }
        other => panic!("expected a success, got {other:?}"),
    }
}

#[test]
fn a_late_answer_to_an_earlier_attempt_never_passes_as_the_current_one() {
    let t0 = Instant::now();
    let policy = RetryPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .retry_unknown_outcome(true);
    let mut call = chat_call(true, &policy, t0, 1);
    let first = send(&mut call, t0);
    call.handle(
        t0,
        first.id,
        Outcome::Failed(TransportError::new(TransportKind::Reset, "reset")),
    );
    let (until, why) = wait_of(next(&mut call, t0));
    assert_eq!(why, WaitReason::Backoff);
    let second = send(&mut call, until);
    assert_ne!(second.id, first.id);
    // The first attempt's answer arrives now, in every form: each is ignored.
    let head = |status: u16| response(status, &[], "").into_parts().0;
    call.handle(until, first.id, Outcome::StreamHead(head(200)));
    call.handle(until, first.id, Outcome::Response(ok()));
    call.handle(
        until,
        first.id,
        Outcome::Cut {
            head: head(200),
            partial: Bytes::from_static(b"{}"),
            error: TransportError::new(TransportKind::Reset, "cut"),
        },
    );
    call.handle(
        until,
        first.id,
        Outcome::Failed(TransportError::new(TransportKind::Connect, "late")),
    );
    // The call still waits for the second attempt, and takes its answer.
    assert_eq!(wait_of(call.poll(until)).1, WaitReason::InFlight);
    call.handle(until, second.id, Outcome::StreamHead(head(200)));
    match next(&mut call, until) {
        Action::Done(Ok(reply)) => assert_eq!(reply.trail.attempts, 2),
        other => panic!("expected the second attempt's success, got {other:?}"),
    }
}

#[test]
fn an_answer_after_the_call_timed_the_attempt_out_is_ignored() {
    let t0 = Instant::now();
    let policy = RetryPolicy::default()
        .attempt_timeout(Some(Duration::from_secs(1)))
        .max_attempts(1);
    let mut call = chat_call(false, &policy, t0, 1);
    let attempt = send(&mut call, t0);
    let end = attempt.ends_at.expect("an attempt timeout");
    // The driver polls at the end: the call's own timer ends the attempt (and the call).
    let done = next(&mut call, end);
    match done {
        // The request was sent: its outcome is unknown.
        Action::Done(Err(Error::OutcomeUnknown { kind, .. })) => {
            assert_eq!(kind, TransportKind::Timeout)
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// Drives `call` to its end on a virtual clock, answering every reservation with
/// `grant(n)` and every attempt with `answer(n)`; panics if it takes more than 1,000
/// steps. The result and every wait's length.
fn run(
    mut call: Call,
    start: Instant,
    mut grant: impl FnMut(usize) -> Grant,
    mut answer: impl FnMut(usize) -> Outcome,
) -> (Result<mistral_core::Reply, Error>, Vec<Duration>) {
    let mut now = start;
    let (mut grants, mut sends, mut waits) = (0, 0, Vec::new());
    for _ in 0..1_000 {
        match call.poll(now) {
            Action::Reserve(_) => {
                call.handle_grant(now, grant(grants));
                grants += 1;
            }
            Action::Send(attempt) => {
                // Every phase limit is within what is left of the attempt, if anything.
                for bound in [
                    attempt.connect_timeout,
                    attempt.head_timeout,
                    attempt.body_timeout,
                ] {
                    if let (Some(limit), Some(left)) =
                        (attempt.phase_limit(now, bound), attempt.left(now))
                    {
                        assert!(limit <= left);
                    }
                }
                call.handle(now, attempt.id, answer(sends));
                sends += 1;
            }
            Action::Wait { until, .. } => {
                assert!(until >= now, "a wait into the past");
                waits.push(until - now);
                now = until;
            }
            Action::Report(_) => {}
            Action::Done(result) => return (result, waits),
        }
    }
    panic!("the call did not end within 1,000 steps");
}

#[test]
fn does_not_panic_on_bad_instant() {
    let start = Instant::now();
    let huge = Duration::MAX;
    let absurd = RetryPolicy {
        max_attempts: 4,
        base: huge,
        cap: huge,
        deadline: Some(huge),
        attempt_timeout: Some(huge),
        stream_idle_timeout: huge,
        connect_timeout: huge,
        head_timeout: Some(huge),
        head_time_per_token: huge,
        body_timeout: Some(huge),
        min_attempt_time: huge,
        ..RetryPolicy::default()
    };
    let exponential = RetryPolicy {
        backoff: Backoff::Exponential {
            factor: f64::MAX,
            jitter: huge,
        },
        ..absurd.clone()
    };
    let hints: [&[(&str, &str)]; 4] = [
        &[("retry-after", "1000000000")],
        &[("retry-after", "18446744073709551615")],
        &[("retry-after-ms", "99999999999999999999")],
        &[
            ("x-ratelimit-limit-req-minute", "1"),
            ("x-ratelimit-remaining-req-minute", "0"),
            ("x-ratelimit-reset", "18446744073709551615"),
        ],
    ];
    let grants = [
        Grant::Go {
            after: huge,
            ticket: Ticket::default(),
        },
        Grant::Late { after: huge },
        Grant::Now,
    ];
    for policy in [&absurd, &exponential, &RetryPolicy::default()] {
        for (h, hint) in hints.into_iter().enumerate() {
            for grant in &grants {
                for stream in [false, true] {
                    let call = chat_call(stream, policy, start, 3);
                    let (result, waits) = run(
                        call,
                        start,
                        |n| if n == 0 { Grant::Now } else { grant.clone() },
                        |n| match n {
                            0 => Outcome::Response(response(429, hint, "{}")),
                            1 => Outcome::Failed(TransportError::new(TransportKind::Reset, "x")),
                            _ => Outcome::Response(ok()),
                        },
                    );
                    // A hint of a billion seconds is never shortened to nothing: the
                    // call waits long (a day at most), or ends with the refusal.
                    let long = waits.iter().any(|w| *w >= Duration::from_secs(3_600));
                    assert!(
                        h != 0 || long || result.is_err(),
                        "{policy:?} {hint:?} {grant:?}: {waits:?} {result:?}"
                    );
                }
            }
        }
    }
    // An instant far from any `now`: the clock itself near its end.
    let far = start
        .checked_add(Duration::from_secs(100 * 365 * 86_400))
        .unwrap_or(start);
    let call = chat_call(false, &absurd, far, 5);
    let (result, waits) = run(
        call,
        far,
        |_| Grant::Go {
            after: huge,
            ticket: Ticket::default(),
        },
        |_| Outcome::Response(ok()),
    );
    // A slot no earlier than the deadline ends the call at once, without a wait.
    assert!(waits.is_empty(), "{waits:?}");
    assert!(
        matches!(result, Err(Error::RateLimited { shared: true, .. })),
        "{result:?}"
    );
}

#[test]
fn a_phase_limit_is_never_past_what_an_instant_can_hold() {
    let now = Instant::now();
    let unbounded = RetryPolicy {
        deadline: None,
        attempt_timeout: None,
        connect_timeout: Duration::MAX,
        head_timeout: Some(Duration::MAX),
        body_timeout: Some(Duration::MAX),
        ..RetryPolicy::default()
    };
    let mut call = chat_call(false, &unbounded, now, 1);
    let attempt = send(&mut call, now);
    assert_eq!(attempt.ends_at, None);
    for bound in [
        attempt.connect_timeout,
        attempt.head_timeout,
        attempt.body_timeout,
    ] {
        let limit = attempt.phase_limit(now, bound).expect("a bound");
        // What a driver's HTTP library adds to its own clock must not overflow.
        assert!(now.checked_add(limit).is_some(), "{limit:?}");
        assert!(limit >= Duration::from_secs(365 * 86_400), "{limit:?}");
    }
    assert_eq!(attempt.phase_limit(now, None), None);
}

#[test]
fn a_socket_timeout_is_steady_from_one_exchange_to_the_next_and_never_late() {
    use mistral_core::steady_timeout;
    let step = Duration::from_millis(62_500) / 1000; // 1/16 s
    // What is left of a 60-s phase a few µs apart, exchange after exchange: the same
    // timeout each time (a socket's timeout changes with a system call).
    let a = steady_timeout(Duration::from_secs(60) - Duration::from_micros(150));
    let b = steady_timeout(Duration::from_secs(60) - Duration::from_micros(4_000));
    assert_eq!(a, b);
    assert_eq!(a, Duration::from_secs(60) - step);
    // A whole number of steps stays as it is.
    assert_eq!(
        steady_timeout(Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    // Under a second it is the time left itself: never zero, never early by much.
    for left in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(5),
        Duration::from_millis(999),
    ] {
        assert_eq!(steady_timeout(left), left);
    }
    // Never later than what is left, never earlier by a step or more, at any size.
    let mut left = Duration::from_nanos(1);
    while left < Duration::from_secs(200 * 365 * 86_400) {
        let steady = steady_timeout(left);
        assert!(steady <= left, "{left:?} -> {steady:?}");
        assert!(left - steady < step, "{left:?} -> {steady:?}");
        assert!(!steady.is_zero());
        left = left * 3 / 2 + Duration::from_nanos(7);
    }
    assert!(steady_timeout(Duration::MAX) <= Duration::MAX);
}
