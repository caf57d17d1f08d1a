//! The call state machine, driven on a virtual clock with scripted answers.

mod support;

use std::time::Duration;

use mistral_core::{
    Bucket, Error, Gateway, Grant, Origin, Outcome, RetryPolicy, Ticket, TransportKind, Verdict,
    WaitReason, Window,
};
use support::*;

const GATEWAY_429: &str = r#"{"message":"Requests rate limit exceeded"}"#;
const CODE_1300: &str = r#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}"#;
const CAPACITY: &str = r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"service_tier_capacity_exceeded","param":null,"code":"3505"}"#;
const SERVER: &str = r#"{"object":"error","message":"Service unavailable.","type":"internal_server_error","param":null,"code":"1000"}"#;

fn spent_minute(limit: &str) -> Answer {
    respond(
        429,
        &[
            ("x-ratelimit-limit-req-minute", limit),
            ("x-ratelimit-remaining-req-minute", "0"),
            ("mistral-correlation-id", "corr-429"),
        ],
        CODE_1300,
    )
}

#[test]
fn success_first_time_reports_usage() {
    let run = drive_simple(&RetryPolicy::default(), vec![ok()]);
    let reports = run.reports();
    let success = run.result.unwrap();
    assert_eq!(success.trail.attempts, 1);
    assert_eq!(success.trail.waited, Duration::ZERO);
    assert_eq!(success.correlation_id.as_deref(), Some("ok-1"));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].verdict, Verdict::Success);
    assert_eq!(reports[0].used_tokens, Some(12));
    assert_eq!(reports[0].estimated_tokens, 100);
}

#[test]
fn a_spent_minute_window_is_waited_out_not_hammered() {
    // 4 per minute: a unit comes back every 15 s; then 30 s; then the whole minute.
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![
            spent_minute("4"),
            spent_minute("4"),
            spent_minute("4"),
            ok(),
        ],
    );
    let waits = run.waits();
    assert_eq!(waits.len(), 3, "{waits:?}");
    let why = WaitReason::WindowSpent {
        bucket: Bucket::Requests,
        window: Window::MINUTE,
    };
    assert!(waits.iter().all(|(_, w)| *w == why));
    assert!(waits[0].0 >= Duration::from_secs(15) && waits[0].0 <= Duration::from_millis(18_750));
    assert!(waits[1].0 >= Duration::from_secs(30) && waits[1].0 <= Duration::from_millis(37_500));
    assert_eq!(waits[2].0, Duration::from_secs(60));
    // No two sends of the call are closer than a unit of the window.
    let sends = run.sends();
    assert!(
        sends
            .windows(2)
            .all(|p| p[1] - p[0] >= Duration::from_secs(15))
    );
    let success = run.result.unwrap();
    assert_eq!(success.trail.attempts, 4);
    assert!(success.trail.waited >= Duration::from_secs(105));
}

#[test]
fn the_429_report_names_the_window_and_the_wait() {
    let run = drive_simple(&RetryPolicy::default(), vec![spent_minute("60"), ok()]);
    let reports = run.reports();
    match (reports[0].verdict, reports[0].retry) {
        (Verdict::WindowSpent { quota }, Some(retry)) => {
            assert_eq!(quota.limit, Some(60));
            assert!(retry.wait >= Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reports[0].used_tokens, Some(0), "a refusal is not charged");
    assert_eq!(reports[1].verdict, Verdict::Success);
}

#[test]
fn the_success_report_names_the_tier_that_served_it() {
    let body = r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":8,"total_tokens":12,"service_tier":"priority"}}"#;
    let run = drive_simple(&RetryPolicy::default(), vec![respond(200, &[], body)]);
    let reports = run.reports();
    assert_eq!(reports[0].service_tier.as_deref(), Some("priority"));
    // No tier named: none.
    let run = drive_simple(&RetryPolicy::default(), vec![ok()]);
    assert_eq!(run.reports()[0].service_tier, None);
}

#[test]
fn a_spending_cap_is_never_retried() {
    let body = r#"{"error":{"message":"Budget has been exceeded! Current cost: 10.02, Max budget: 10.0","type":"budget_exceeded","param":null,"code":"429"}}"#;
    let run = drive_simple(&RetryPolicy::default(), vec![respond(429, &[], body)]);
    assert!(run.waits().is_empty());
    assert_eq!(run.sends().len(), 1);
    let reports = run.reports();
    assert_eq!(reports[0].verdict, Verdict::SpendingCap);
    assert_eq!(reports[0].retry, None);
    let err = run.err();
    assert!(matches!(err, Error::SpendingCap { .. }), "{err:?}");
    assert!(err.is_permanent());
    assert_eq!(err.origin(), Origin::Gateway(Gateway::LiteLlm));
}

#[test]
fn a_wait_named_in_a_body_is_waited_as_the_servers() {
    let body =
        r#"{"error":{"message":"Too many requests","type":"rate_limit_error","retry_after":7}}"#;
    let run = drive_simple(&RetryPolicy::default(), vec![respond(429, &[], body), ok()]);
    let waits = run.waits();
    assert_eq!(waits, [(Duration::from_secs(7), WaitReason::ServerHint)]);
    let reports = run.reports();
    assert_eq!(reports[0].server_wait(), Some(Duration::from_secs(7)));
    assert_eq!(reports[0].origin, Origin::Gateway(Gateway::Proxy));
    assert_eq!(run.result.unwrap().trail.attempts, 2);
}

#[test]
fn zero_allowance_ends_at_once() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![respond(
            429,
            &[
                ("x-ratelimit-limit-req-minute", "0"),
                ("x-ratelimit-remaining-req-minute", "0"),
            ],
            CODE_1300,
        )],
    );
    assert!(run.waits().is_empty());
    let err = run.err();
    assert!(
        matches!(
            err,
            Error::NoAllowance {
                bucket: Some(Bucket::Requests),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent());
    assert!(err.to_string().contains("mistral-small-latest"), "{err}");
}

#[test]
fn monthly_quota_ends_at_once() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![respond(
            429,
            &[
                ("x-ratelimit-limit-tokens-month", "1000000"),
                ("x-ratelimit-remaining-tokens-month", "0"),
            ],
            CODE_1300,
        )],
    );
    assert!(run.waits().is_empty());
    let err = run.err();
    assert!(
        matches!(
            err,
            Error::MonthlyQuota {
                limit: Some(1_000_000),
                remaining: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("month"));
}

#[test]
fn capacity_is_retried_with_backoff() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![respond(429, &[], CAPACITY), ok()],
    );
    let waits = run.waits();
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].1, WaitReason::Backoff);
    assert_eq!(run.reports()[0].verdict, Verdict::Capacity);
    assert_eq!(run.result.unwrap().trail.attempts, 2);
}

#[test]
fn capacity_gives_up_after_max_attempts_with_a_capacity_error() {
    let policy = RetryPolicy::default().max_attempts(3);
    let run = drive_simple(&policy, vec![respond(429, &[], CAPACITY); 3]);
    let err = run.err();
    match &err {
        Error::Capacity { trail, response } => {
            assert_eq!(trail.attempts, 3);
            assert_eq!(response.code.as_deref(), Some("3505"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unauthorized_ends_at_once_and_hints_at_the_variable() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![respond(401, &[], r#"{"detail":"Unauthorized"}"#)],
    );
    assert_eq!(run.sends().len(), 1);
    let err = run.err();
    assert!(matches!(err, Error::Unauthorized { .. }));
    let msg = err.to_string();
    assert!(msg.contains("MISTRAL_API_KEY"), "{msg}");
    assert!(!msg.contains(KEY));
}

#[test]
fn validation_errors_carry_field_details() {
    let body = r#"{"detail":[{"type":"extra_forbidden","loc":["body","foo"],"msg":"Extra inputs are not permitted","input":1}]}"#;
    let err = drive_simple(&RetryPolicy::default(), vec![respond(422, &[], body)]).err();
    match &err {
        Error::BadRequest { details, response } => {
            assert_eq!(details.len(), 1);
            assert_eq!(response.status_u16(), Some(422));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("foo"), "{err}");
}

#[test]
fn server_errors_are_retried_and_501_is_not() {
    for status in [500, 502, 503, 504] {
        let run = drive_simple(
            &RetryPolicy::default(),
            vec![respond(status, &[], SERVER), ok()],
        );
        assert_eq!(run.result.unwrap().trail.attempts, 2, "{status}");
    }
    let run = drive_simple(&RetryPolicy::default(), vec![respond(501, &[], "")]);
    assert!(matches!(run.err(), Error::Server { .. }));
}

#[test]
fn an_html_502_is_retried_and_reported_with_an_excerpt() {
    let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let policy = RetryPolicy::default().max_attempts(2);
    let err = drive_simple(&policy, vec![respond(502, &[], html); 2]).err();
    let response = err.response().unwrap();
    assert_eq!(response.status_u16(), Some(502));
    assert!(response.excerpt.contains("502 Bad Gateway"));
    assert_eq!(err.trail().unwrap().attempts, 2);
}

#[test]
fn transport_errors_are_retried_unless_switched_off() {
    let unknown_allowed = RetryPolicy::default().retry_unknown_outcome(true);
    let run = drive_simple(
        &unknown_allowed,
        vec![
            Answer::Fail(TransportKind::Connect),
            Answer::Fail(TransportKind::Reset),
            ok(),
        ],
    );
    assert_eq!(run.result.unwrap().trail.attempts, 3);
    let off = RetryPolicy::default().retry_transport(false);
    let err = drive_simple(&off, vec![Answer::Fail(TransportKind::Connect)]).err();
    assert!(
        matches!(err, Error::Transport { kind: TransportKind::Connect, trail, .. } if trail.attempts == 1)
    );
    let tls = drive_simple(
        &RetryPolicy::default(),
        vec![Answer::Fail(TransportKind::Tls)],
    )
    .err();
    assert!(matches!(
        tls,
        Error::Transport {
            kind: TransportKind::Tls,
            ..
        }
    ));
}

#[test]
fn attempts_stop_at_the_maximum() {
    let policy = RetryPolicy::default().max_attempts(4);
    let run = drive_simple(&policy, vec![respond(503, &[], SERVER); 4]);
    assert_eq!(run.sends().len(), 4);
    assert_eq!(run.err().trail().unwrap().attempts, 4);
}

#[test]
fn the_backoff_schedule_is_exact_for_a_seed() {
    let policy = RetryPolicy::default()
        .backoff(Duration::from_millis(100), Duration::from_secs(10))
        .max_attempts(5);
    let run = drive(&policy, 99, vec![respond(503, &[], SERVER); 5], |_| {
        Grant::Now
    });
    // The documented formula, computed independently: U(0, min(cap, base·2^(n−1))).
    let mut rng = fastrand::Rng::with_seed(99);
    let expected: Vec<Duration> = (0..4)
        .map(|n| Duration::from_millis(100 * (1 << n)).mul_f64(rng.f64()))
        .collect();
    let waits: Vec<Duration> = run.waits().iter().map(|w| w.0).collect();
    assert_eq!(waits, expected);
    // Another seed, another schedule.
    let other = drive(&policy, 100, vec![respond(503, &[], SERVER); 5], |_| {
        Grant::Now
    });
    assert_ne!(other.waits(), run.waits());
}

#[test]
fn retry_after_is_a_floor() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![respond(503, &[("retry-after", "7")], SERVER), ok()],
    );
    assert_eq!(
        run.waits(),
        vec![(Duration::from_secs(7), WaitReason::ServerHint)]
    );
    let ms = drive_simple(
        &RetryPolicy::default(),
        vec![
            respond(429, &[("retry-after-ms", "2500")], GATEWAY_429),
            ok(),
        ],
    );
    assert!(ms.waits()[0].0 >= Duration::from_millis(2500));
}

#[test]
fn the_deadline_ends_the_call_with_the_last_refusal() {
    // 1 request per minute and a 90 s deadline: after two refusals the next wait
    // (a whole minute) would pass the deadline.
    let policy = RetryPolicy::default().deadline(Some(Duration::from_secs(90)));
    let run = drive_simple(&policy, vec![spent_minute("1"), spent_minute("1")]);
    let sends = run.sends();
    assert!(sends.iter().all(|t| *t < Duration::from_secs(90)));
    let err = run.err();
    // The deadline was not reached: the wait was only predicted to pass it. The call
    // ends with the refusal itself, which says when to come back.
    match &err {
        Error::RateLimited {
            limit: Some(1),
            trail,
            shared: false,
            retry_after: Some(after),
            ..
        } => {
            assert_eq!(trail.attempts, 2);
            assert!(*after >= Duration::from_secs(30), "{after:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("deadline"), "{err}");
    assert!(err.retry_after().is_some(), "says when to come back");
    assert_eq!(err.correlation_id(), Some("corr-429"));
}

/// A chat (a `POST`) whose request may have reached the server — reset, closed or
/// silent after it was written — is not sent again by default: the call ends with
/// `OutcomeUnknown`, saying when it could be tried again. One that never reached it is
/// retried, but only `max_unreachable` times in a row.
#[test]
fn a_request_that_may_have_run_is_not_sent_again_by_default() {
    for kind in [
        TransportKind::Reset,
        TransportKind::Timeout,
        TransportKind::Other,
    ] {
        let run = drive_simple(&RetryPolicy::default(), vec![Answer::Fail(kind), ok()]);
        assert_eq!(run.sends().len(), 1, "{kind:?}");
        let reports = run.reports();
        let err = run.err();
        match &err {
            Error::OutcomeUnknown {
                kind: k,
                retry_after: Some(after),
                trail,
                ..
            } => {
                assert_eq!((*k, trail.attempts), (kind, 1));
                assert_eq!(
                    *after,
                    Duration::from_millis(500),
                    "the backoff's first step"
                );
            }
            other => panic!("{kind:?}: expected OutcomeUnknown, got {other:?}"),
        }
        assert!(err.is_outcome_unknown() && !err.is_retryable() && !err.is_permanent());
        assert!(err.to_string().contains("may have run it"), "{err}");
        assert_eq!(reports[0].retry, None, "no retry planned");
    }
    // The hung attempt (the call's own timer) is one too.
    let run = drive_simple(&RetryPolicy::default(), vec![Answer::Hang, ok()]);
    assert_eq!(run.sends().len(), 1);
    assert!(matches!(
        run.err(),
        Error::OutcomeUnknown {
            kind: TransportKind::Timeout,
            ..
        }
    ));

    // Allowed, per client or per call: sent again.
    let allowed = RetryPolicy::default().retry_unknown_outcome(true);
    let run = drive_simple(&allowed, vec![Answer::Fail(TransportKind::Reset), ok()]);
    assert_eq!(run.result.unwrap().trail.attempts, 2);
    let per_call = mistral_core::CallOptions::new()
        .retry_unknown_outcome(true)
        .apply(&RetryPolicy::default())
        .into_owned();
    assert!(per_call.retry_unknown_outcome);
    // Allowed, the last attempt's unknown outcome is still what the call ends with.
    let run = drive_simple(
        &allowed.clone().max_attempts(2),
        vec![Answer::Fail(TransportKind::Reset); 2],
    );
    assert!(matches!(run.err(), Error::OutcomeUnknown { trail, .. } if trail.attempts == 2));
}

/// A connection that cannot be made fails fast: `max_unreachable` attempts (3 by
/// default), a short backoff between them, whatever `max_attempts` says; and a
/// response in between starts the count again.
#[test]
fn an_unreachable_server_is_reported_after_a_few_quick_attempts() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![Answer::Fail(TransportKind::Connect); 10],
    );
    assert_eq!(run.sends().len(), 3);
    let waited: Duration = run.waits().iter().map(|(d, _)| *d).sum();
    assert!(waited <= Duration::from_millis(1_500), "{waited:?}");
    assert!(matches!(
        run.err(),
        Error::Transport { kind: TransportKind::Connect, trail, .. } if trail.attempts == 3
    ));
    // Two refusals, a 503 (the server is there), two refusals, then an answer.
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![
            Answer::Fail(TransportKind::Connect),
            Answer::Fail(TransportKind::Connect),
            respond(503, &[], SERVER),
            Answer::Fail(TransportKind::Connect),
            Answer::Fail(TransportKind::Connect),
            ok(),
        ],
    );
    assert_eq!(run.result.unwrap().trail.attempts, 6);
    let one = RetryPolicy::default().max_unreachable(1);
    let run = drive_simple(&one, vec![Answer::Fail(TransportKind::Connect), ok()]);
    assert_eq!(run.sends().len(), 1);
}

#[test]
fn a_hung_attempt_times_out_and_its_late_answer_is_ignored() {
    use mistral_core::{Action, TransportError};
    let policy = RetryPolicy::default()
        .attempt_timeout(Some(Duration::from_secs(5)))
        .retry_unknown_outcome(true);
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let mut call = chat_call(false, &policy, start, 1);
    assert!(matches!(call.poll(start), Action::Reserve(_)));
    call.handle_grant(start, Grant::Now);
    let Action::Send(first) = call.poll(start) else {
        panic!()
    };
    assert_eq!(first.left(start), Some(Duration::from_secs(5)));
    // Polled while in flight: wait for the attempt's timeout.
    let Action::Wait { until, why } = call.poll(start) else {
        panic!()
    };
    assert_eq!(
        (until - start, why),
        (Duration::from_secs(5), WaitReason::InFlight)
    );
    // The timer fires.
    let Action::Report(report) = call.poll(until) else {
        panic!()
    };
    assert_eq!(report.verdict, Verdict::Transport(TransportKind::Timeout));
    let Action::Wait {
        until: retry_at,
        why: WaitReason::Backoff,
    } = call.poll(until)
    else {
        panic!()
    };
    // The late answer to the first attempt arrives: ignored.
    let late = http::Response::builder()
        .status(200)
        .body(bytes::Bytes::new())
        .unwrap();
    call.handle(retry_at, first.id, Outcome::Response(late));
    call.handle(
        retry_at,
        first.id,
        Outcome::Failed(TransportError::new(TransportKind::Reset, "late")),
    );
    assert!(matches!(call.poll(retry_at), Action::Reserve(_)));
    call.handle_grant(retry_at, Grant::Now);
    let Action::Send(second) = call.poll(retry_at) else {
        panic!()
    };
    assert_eq!(second.id.number(), 2);
    assert_ne!(second.id, first.id);
}

#[test]
fn a_pacing_grant_delays_the_send() {
    let run = drive(&RetryPolicy::default(), 1, vec![ok()], |_| Grant::Go {
        after: Duration::from_millis(750),
        ticket: Ticket::default(),
    });
    assert_eq!(
        run.waits(),
        vec![(Duration::from_millis(750), WaitReason::Pacing)]
    );
    assert_eq!(run.sends(), vec![Duration::from_millis(750)]);
    assert_eq!(run.result.unwrap().trail.waited, Duration::from_millis(750));
}

#[test]
fn a_pacing_grant_past_the_deadline_ends_the_call_without_sending() {
    let policy = RetryPolicy::default().deadline(Some(Duration::from_secs(10)));
    let run = drive(&policy, 1, vec![], |_| Grant::Go {
        after: Duration::from_secs(11),
        ticket: Ticket::default(),
    });
    assert!(run.sends().is_empty());
    // Refused by the shared budget, not by the server: it says so and when to come back.
    match run.err() {
        Error::RateLimited {
            shared: true,
            retry_after: Some(after),
            ..
        } => assert_eq!(after, Duration::from_secs(11)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_late_grant_ends_the_call_at_once_with_when_the_budget_could_admit_it() {
    let policy = RetryPolicy::default().deadline(Some(Duration::from_secs(10)));
    let run = drive(&policy, 1, vec![], |_| Grant::Late {
        after: Duration::from_secs(42),
    });
    assert!(run.sends().is_empty());
    assert!(run.elapsed < Duration::from_millis(1), "{:?}", run.elapsed);
    let err = run.err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(42)));
    assert!(err.to_string().contains("shared"), "{err}");
    assert_eq!(err.status(), None, "no 429 was received");
}

#[test]
fn the_admissions_ticket_is_reported_and_the_time_in_line_counts_as_waited() {
    use mistral_core::Action;
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    let ticket = Ticket {
        epoch: 3,
        seq: 9,
        tokens: 40,
        tok_mark: 400,
        lane: 1,
        lead: 0,
        in_flight: 1,
    };
    let mut call = chat_call(false, &RetryPolicy::default(), t0, 1);
    let Action::Reserve(_) = call.poll(t0) else {
        panic!("a call asks the limiter first")
    };
    // The limiter kept the call in its line for 400 ms, then admitted it.
    let admitted = t0 + Duration::from_millis(400);
    call.handle_grant(
        admitted,
        Grant::Go {
            after: Duration::ZERO,
            ticket,
        },
    );
    let Action::Send(attempt) = call.poll(admitted) else {
        panic!("admitted: it sends")
    };
    let Answer::Respond {
        status,
        headers,
        body,
    } = ok()
    else {
        unreachable!()
    };
    let mut response = http::Response::builder().status(status);
    for (n, v) in headers {
        response = response.header(n, v);
    }
    call.handle(
        admitted,
        attempt.id,
        Outcome::Response(response.body(bytes::Bytes::from(body)).unwrap()),
    );
    let Action::Report(report) = call.poll(admitted) else {
        panic!("a report after the answer")
    };
    assert_eq!(report.ticket, Some(ticket));
    assert_eq!(report.usage.map(|u| u.completion_tokens), Some(7));
    let Action::Done(Ok(reply)) = call.poll(admitted) else {
        panic!()
    };
    assert_eq!(reply.trail.waited, Duration::from_millis(400));
    assert_eq!(reply.ticket(), Some(ticket));
}

#[test]
fn a_refused_grant_ends_the_call_with_the_limiters_error() {
    let refusal = Error::Config("budget closed".into());
    let run = drive(&RetryPolicy::default(), 1, vec![], |_| {
        Grant::Refused(refusal.clone())
    });
    assert!(run.sends().is_empty());
    assert_eq!(run.err(), Error::Config("budget closed".into()));
}

#[test]
fn the_limiter_is_consulted_before_every_attempt() {
    let run = drive_simple(
        &RetryPolicy::default(),
        vec![respond(503, &[], SERVER), respond(503, &[], SERVER), ok()],
    );
    let order: Vec<&str> = run
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Reserve => Some("reserve"),
            Event::Send { .. } => Some("send"),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        ["reserve", "send", "reserve", "send", "reserve", "send"]
    );
}

#[test]
fn a_stream_is_handed_over_only_on_success() {
    use mistral_core::Action;
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let mut call = chat_call(true, &RetryPolicy::default(), now, 1);
    let _ = call.poll(now);
    call.handle_grant(now, Grant::Now);
    let Action::Send(attempt) = call.poll(now) else {
        panic!()
    };
    assert!(attempt.stream);
    assert_eq!(attempt.request.headers()["accept"], "text/event-stream");
    assert!(attempt.reads_stream(http::StatusCode::OK));
    assert!(!attempt.reads_stream(http::StatusCode::TOO_MANY_REQUESTS));
}

#[test]
fn the_key_never_reaches_an_error() {
    let echo = format!(r#"{{"message":"bad header Authorization: Bearer {KEY}"}}"#);
    let err = drive_simple(&RetryPolicy::default(), vec![respond(400, &[], &echo)]).err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("***"));
}

#[test]
fn a_policy_that_ignores_headers_backs_off_instead() {
    let policy = RetryPolicy {
        window_aware: false,
        honor_retry_after: false,
        ..RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1))
    };
    let mut refusal = spent_minute("4");
    if let Answer::Respond { headers, .. } = &mut refusal {
        headers.push(("retry-after".into(), "30".into()));
    }
    let run = drive_simple(&policy, vec![refusal, ok()]);
    let waits = run.waits();
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].1, WaitReason::Backoff);
    assert!(waits[0].0 <= Duration::from_millis(100), "{waits:?}");
}

/// An attempt that times out with half a second of a 10 s deadline left: the retry could
/// not finish, so it is not started (and not counted); the call ends with the deadline
/// and the last error. (Before: a second attempt started with 0.5 s left.)
#[test]
fn no_retry_starts_with_under_a_second_left() {
    let policy = RetryPolicy::default()
        .deadline(Some(Duration::from_secs(10)))
        .attempt_timeout(Some(Duration::from_millis(9_500)))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .retry_unknown_outcome(true);
    let run = drive(&policy, 1, vec![Answer::Hang, Answer::Hang], |_| Grant::Now);
    assert_eq!(run.sends().len(), 1, "{:?}", run.events);
    match run.err() {
        Error::Deadline { trail, last, .. } => {
            assert_eq!(trail.attempts, 1);
            assert!(matches!(
                last.as_deref(),
                Some(Error::OutcomeUnknown { .. })
            ));
        }
        other => panic!("expected the deadline, got {other}"),
    }
}

/// The phase bounds of each attempt: the head bound of a non-streamed call grows with its
/// token estimate (its head comes once the answer is generated), a stream's does not;
/// every bound is cut to what is left of the deadline.
#[test]
#[allow(clippy::disallowed_methods)] // a start instant for the call; nothing waits on it
fn every_attempt_carries_its_phase_bounds() {
    let policy = RetryPolicy::default();
    assert_eq!(
        policy.head_timeout_for(false, 1_000),
        Some(Duration::from_secs(85))
    );
    assert_eq!(
        policy.head_timeout_for(true, 1_000),
        Some(Duration::from_secs(60))
    );
    let now = std::time::Instant::now();
    let short = RetryPolicy::default().deadline(Some(Duration::from_secs(5)));
    let mut call = support::chat_call(false, &short, now, 1);
    assert!(matches!(call.poll(now), mistral_core::Action::Reserve(_)));
    call.handle_grant(now, Grant::Now);
    let mistral_core::Action::Send(attempt) = call.poll(now) else {
        panic!("expected a send");
    };
    // The attempt ends at the deadline; each phase gets at most what is left of it.
    assert_eq!(attempt.ends_at, Some(now + Duration::from_secs(5)));
    assert_eq!(attempt.left(now), Some(Duration::from_secs(5)));
    let five = Some(Duration::from_secs(5));
    assert_eq!(attempt.phase_limit(now, attempt.head_timeout), five);
    assert_eq!(attempt.phase_limit(now, attempt.body_timeout), five);
    assert_eq!(attempt.phase_limit(now, attempt.connect_timeout), five);
    let later = now + Duration::from_secs(4);
    let one = Some(Duration::from_secs(1));
    assert_eq!(attempt.phase_limit(later, attempt.body_timeout), one);
    let past = now + Duration::from_secs(9);
    assert_eq!(
        attempt.phase_limit(past, attempt.head_timeout),
        Some(Duration::ZERO)
    );
    let mut stream = support::chat_call(true, &RetryPolicy::default(), now, 1);
    assert!(matches!(stream.poll(now), mistral_core::Action::Reserve(_)));
    stream.handle_grant(now, Grant::Now);
    let mistral_core::Action::Send(attempt) = stream.poll(now) else {
        panic!("expected a send");
    };
    assert_eq!(attempt.head_timeout, Some(Duration::from_secs(60)));
    assert_eq!(attempt.body_timeout, None);
    assert_eq!(attempt.connect_timeout, Some(Duration::from_secs(10)));
}

#[test]
fn an_oversized_body_is_one_protocol_error_whatever_the_driver_saw() {
    use mistral_core::{Action, TransportError};
    // A driver that stopped at the size limit part way into a 2xx whose first bytes
    // happen to be a complete JSON document: the limit decides, not the bytes.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    for status in [200, 500] {
        let mut call = chat_call(false, &RetryPolicy::default(), now, 1);
        assert!(matches!(call.poll(now), Action::Reserve(_)));
        call.handle_grant(now, Grant::Now);
        let Action::Send(attempt) = call.poll(now) else {
            panic!("expected a send");
        };
        let head = http::Response::builder()
            .status(status)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        call.handle(
            now,
            attempt.id,
            Outcome::Cut {
                head,
                partial: bytes::Bytes::from_static(br#"{"choices":[]}"#),
                error: TransportError::body_too_large(),
            },
        );
        let result = loop {
            match call.poll(now) {
                Action::Report(_) => {}
                Action::Done(result) => break result,
                other => panic!("expected the end, got {other:?}"),
            }
        };
        match result {
            Err(Error::Transport {
                kind,
                message,
                trail,
                ..
            }) => {
                assert_eq!(kind, TransportKind::Protocol);
                assert!(
                    message.contains("larger than the client's limit"),
                    "{message}"
                );
                assert_eq!(trail.attempts, 1, "not retried");
            }
            other => panic!("expected the oversized-body error, got {other:?}"),
        }
    }
}
