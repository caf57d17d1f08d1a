//! Invariants of the call state machine, for any script of answers, any policy, any
//! grant, and a clock that may go backwards.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use mistral_core::{
    Action, Grant, Outcome, RetryPolicy, Ticket, TransportError, TransportKind, WaitReason,
    classify,
};
use proptest::prelude::*;
use support::chat_call;

#[derive(Debug, Clone)]
enum Step {
    Status(u16, Vec<(String, String)>, Vec<u8>),
    Fail(u8),
    Hang,
}

fn header_strategy() -> impl Strategy<Value = (String, String)> {
    let names = prop::sample::select(vec![
        "x-ratelimit-limit-req-minute",
        "x-ratelimit-remaining-req-minute",
        "x-ratelimit-limit-tokens-minute",
        "x-ratelimit-remaining-tokens-minute",
        "x-ratelimit-limit-tokens-month",
        "x-ratelimit-remaining-tokens-month",
        "x-ratelimit-limit-req-3-second",
        "x-ratelimit-remaining-req-3-second",
        "retry-after",
        "retry-after-ms",
        "ratelimitbysize-reset",
        "date",
    ]);
    let values = prop_oneof![
        (0u64..5).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}",
        Just("Sat, 28 Nov 2026 10:00:00 GMT".to_string()),
    ];
    (names, values).prop_map(|(n, v)| (n.to_string(), v))
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let status = prop::sample::select(vec![
        200u16, 400, 401, 403, 404, 408, 422, 429, 429, 429, 500, 501, 502, 503, 504,
    ]);
    prop_oneof![
        8 => (status, prop::collection::vec(header_strategy(), 0..5), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(s, h, b)| Step::Status(s, h, b)),
        2 => (0u8..6).prop_map(Step::Fail),
        1 => Just(Step::Hang),
    ]
}

fn policy_strategy() -> impl Strategy<Value = RetryPolicy> {
    (
        1u32..7,
        0u64..2_000,
        0u64..120,
        prop::option::of(1u64..600),
        prop::option::of(1u64..60),
        any::<bool>(),
    )
        .prop_map(|(max, base_ms, cap_s, deadline, timeout, transport)| {
            RetryPolicy::default()
                .max_attempts(max)
                .backoff(Duration::from_millis(base_ms), Duration::from_secs(cap_s))
                .deadline(deadline.map(Duration::from_secs))
                .attempt_timeout(timeout.map(Duration::from_secs))
                .retry_transport(transport)
        })
}

fn kind(n: u8) -> TransportKind {
    [
        TransportKind::Connect,
        TransportKind::Reset,
        TransportKind::Timeout,
        TransportKind::Tls,
        TransportKind::Protocol,
        TransportKind::Other,
    ][usize::from(n) % 6]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold(
        policy in policy_strategy(),
        script in prop::collection::vec(step_strategy(), 12),
        grants in prop::collection::vec(0u64..5_000, 12),
        skews in prop::collection::vec(-3_000i64..3_000, 64),
        seed in any::<u64>(),
    ) {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now() + Duration::from_secs(3600);
        let deadline = policy.deadline.map(|d| start + d);
        let mut clock = start; // the true time, only moves forward
        let mut call = chat_call(false, &policy, start, seed);
        let mut script = script.into_iter();
        let mut grants = grants.into_iter();
        let mut skews = skews.into_iter().cycle();
        let mut sends = 0u32;
        let mut not_before = start; // no send may precede the end of a wait
        let mut pending_wait: Option<Instant> = None;
        for _ in 0..500 {
            // The driver's clock jitters backwards sometimes: the call must cope.
            let skew = skews.next().unwrap();
            let now = if skew < 0 { clock.checked_sub(Duration::from_millis(skew.unsigned_abs())).unwrap_or(clock) } else { clock };
            match call.poll(now) {
                Action::Reserve(_) => {
                    let g = grants.next().unwrap_or(0);
                    call.handle_grant(now, if g % 3 == 0 { Grant::Now } else { Grant::Go { after: Duration::from_millis(g), ticket: Ticket::default() } });
                }
                Action::Send(attempt) => {
                    sends += 1;
                    prop_assert!(sends <= policy.max_attempts, "attempt {} > max {}", sends, policy.max_attempts);
                    if let Some(d) = deadline { prop_assert!(clock < d, "sent past the deadline"); }
                    if let Some(w) = pending_wait.take() { prop_assert!(clock >= w, "sent before its wait ended"); }
                    prop_assert!(clock >= not_before);
                    match script.next().unwrap_or(Step::Hang) {
                        Step::Status(status, headers, body) => {
                            let mut b = http::Response::builder().status(status);
                            for (n, v) in headers {
                                if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n.as_bytes()), http::HeaderValue::from_str(&v)) {
                                    b = b.header(n, v);
                                }
                            }
                            call.handle(now, attempt.id, Outcome::Response(b.body(Bytes::from(body)).unwrap()));
                        }
                        Step::Fail(k) => call.handle(now, attempt.id, Outcome::Failed(TransportError::new(kind(k), "x"))),
                        // Without any timeout a hung attempt waits forever, by design.
                        Step::Hang if attempt.ends_at.is_none() => call.handle(now, attempt.id, Outcome::Failed(TransportError::new(TransportKind::Reset, "x"))),
                        Step::Hang => {}
                    }
                }
                Action::Wait { until, why } => {
                    if why != WaitReason::InFlight { pending_wait = Some(until); not_before = not_before.max(until); }
                    // Sometimes wake early: harmless.
                    clock = if skew % 5 == 0 && until > clock { clock + (until - clock) / 2 } else { clock.max(until) };
                    if why != WaitReason::InFlight && clock < until { pending_wait = Some(until); }
                }
                Action::Report(_) => {}
                Action::Done(result) => {
                    if let Some(t) = result.as_ref().err().and_then(|e| e.trail()) {
                        prop_assert!(t.attempts <= policy.max_attempts);
                    }
                    return Ok(());
                }
            }
        }
        prop_assert!(false, "the call never ended");
    }

    #[test]
    fn classification_never_panics(
        status in 100u16..600,
        headers in prop::collection::vec(header_strategy(), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..256),
        cost in prop::option::of(any::<u64>()),
    ) {
        let mut map = http::HeaderMap::new();
        for (n, v) in headers {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n.as_bytes()), http::HeaderValue::from_str(&v)) {
                map.append(n, v);
            }
        }
        let c = classify(http::StatusCode::from_u16(status).unwrap(), &map, &body, cost);
        prop_assert!(c.info.excerpt.len() <= 520);
    }

    #[test]
    fn json_like_bodies_never_panic(body in "\\{(\"(message|code|type|detail|object)\":(null|[0-9]{1,3}|\"[a-z ]{0,8}\"|\\{\\}|\\[\\]),?){0,4}\\}") {
        let c = classify(http::StatusCode::TOO_MANY_REQUESTS, &http::HeaderMap::new(), body.as_bytes(), None);
        prop_assert!(c.verdict.is_rate_limit() || c.verdict == mistral_core::Verdict::Capacity);
    }
}
