//! The emulator's limits: header names per era, exact admission per semantics, 429 forms,
//! zero allowance, monthly quota, capacity draws, the background consumer.

mod common;

use std::time::{Duration, Instant};

use common::{hammer, post_chat};
use mistral_tests::{Config, Emulator, Era, Limits, RateLimitBody, Refusal, Semantics};
use serde_json::json;

const M: &str = "mistral-small-latest";

fn limited(semantics: Semantics, window_secs: f64, limits: Limits) -> Config {
    Config {
        semantics,
        window_secs,
        ..Config::default()
    }
    .model(M, limits)
}

fn names(r: &mistral_tests::raw_http::Response) -> Vec<String> {
    let mut n: Vec<String> = r
        .headers
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n.contains("ratelimit"))
        .collect();
    n.sort();
    n
}

#[test]
fn header_names_per_era() {
    let limits = Limits {
        tokens_month: Some(1_000_000),
        ..Limits::new(Some(100), Some(10_000))
    };
    let expect: [(Era, f64, &[&str]); 5] = [
        (
            Era::Y2026,
            60.0,
            &[
                "x-ratelimit-limit-req-minute",
                "x-ratelimit-limit-tokens-minute",
                "x-ratelimit-limit-tokens-month",
                "x-ratelimit-remaining-req-minute",
                "x-ratelimit-remaining-tokens-minute",
                "x-ratelimit-remaining-tokens-month",
                "x-ratelimit-tokens-query-cost",
            ],
        ),
        (
            Era::Late2025,
            10.0,
            &[
                "x-ratelimit-limit-req-10-second",
                "x-ratelimit-limit-tokens-10-second",
                "x-ratelimit-limit-tokens-month",
                "x-ratelimit-remaining-req-10-second",
                "x-ratelimit-remaining-tokens-10-second",
                "x-ratelimit-remaining-tokens-month",
                "x-ratelimit-tokens-query-cost",
            ],
        ),
        (
            Era::Late2025,
            60.0,
            &[
                "x-ratelimit-limit-req-60-second",
                "x-ratelimit-limit-tokens-minute",
                "x-ratelimit-limit-tokens-month",
                "x-ratelimit-remaining-req-60-second",
                "x-ratelimit-remaining-tokens-minute",
                "x-ratelimit-remaining-tokens-month",
                "x-ratelimit-tokens-query-cost",
            ],
        ),
        (
            Era::Mid2025,
            60.0,
            &[
                "x-ratelimit-limit-tokens-minute",
                "x-ratelimit-limit-tokens-month",
                "x-ratelimit-remaining-tokens-minute",
                "x-ratelimit-remaining-tokens-month",
                "x-ratelimit-tokens-query-cost",
            ],
        ),
        (
            Era::Early2025,
            60.0,
            &[
                "ratelimitbysize-limit",
                "ratelimitbysize-query-cost",
                "ratelimitbysize-remaining",
                "ratelimitbysize-reset",
                "x-ratelimitbysize-limit-minute",
                "x-ratelimitbysize-limit-month",
                "x-ratelimitbysize-remaining-minute",
                "x-ratelimitbysize-remaining-month",
            ],
        ),
    ];
    for (era, window, expected) in expect {
        let emu = Emulator::start(Config {
            era,
            ..limited(Semantics::FixedWindow, window, limits.clone())
        });
        let r = post_chat(&emu.url(), emu.key(), M);
        assert_eq!(r.status, 200);
        assert_eq!(names(&r), expected, "{era:?} {window}");
        let cost = r
            .header("x-ratelimit-tokens-query-cost")
            .or(r.header("ratelimitbysize-query-cost"));
        assert_eq!(cost, Some("18"));
        let remaining = r
            .header("x-ratelimit-remaining-tokens-month")
            .or(r.header("x-ratelimitbysize-remaining-month"));
        assert_eq!(remaining, Some("999982"));
    }
}

#[test]
fn request_window_refusal_sends_only_the_request_pair() {
    let emu = Emulator::start(Config {
        retry_after: true,
        ..limited(
            Semantics::FixedWindow,
            10.0,
            Limits::new(Some(2), Some(100_000)),
        )
    });
    for remaining in ["1", "0"] {
        let r = post_chat(&emu.url(), emu.key(), M);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ratelimit-remaining-req-10-second"),
            Some(remaining)
        );
        assert!(r.header("retry-after").is_none());
    }
    let r = post_chat(&emu.url(), emu.key(), M);
    assert_eq!(r.status, 429);
    assert_eq!(
        names(&r),
        [
            "x-ratelimit-limit-req-10-second",
            "x-ratelimit-remaining-req-10-second"
        ]
    );
    assert_eq!(r.header("x-ratelimit-limit-req-10-second"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining-req-10-second"), Some("0"));
    assert_eq!(
        r.json().unwrap(),
        json!({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited",
               "param": null, "code": "1300", "raw_status_code": 429})
    );
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(emu.log().count_refused(Refusal::Requests), 1);
}

#[test]
fn token_window_refusal_names_the_token_limit() {
    // 18 tokens a request, 100 per window: admitted at 0, 18, 36, 54, 72, 90 charged.
    let emu = Emulator::start(Config {
        rate_limit_body: Some(RateLimitBody::Gateway),
        ..limited(Semantics::FixedWindow, 30.0, Limits::new(None, Some(100)))
    });
    for _ in 0..6 {
        assert_eq!(post_chat(&emu.url(), emu.key(), M).status, 200);
    }
    let r = post_chat(&emu.url(), emu.key(), M);
    assert_eq!(r.status, 429);
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens-30-second"),
        Some("0")
    );
    assert_eq!(r.header("x-ratelimit-limit-tokens-30-second"), Some("100"));
    assert!(r.header("x-ratelimit-limit-req-30-second").is_none());
    assert!(
        r.header("retry-after").is_none(),
        "Retry-After is off by default"
    );
    assert_eq!(
        r.json().unwrap(),
        json!({"message": "Requests rate limit exceeded"})
    );
    let log = emu.log();
    assert_eq!(log.count_refused(Refusal::Tokens), 1);
    assert_eq!(log.tokens_charged(M), 108);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
}

#[test]
fn early_era_uses_the_gateway_body_and_reset_header() {
    let emu = Emulator::start(Config {
        era: Era::Early2025,
        ..limited(Semantics::FixedWindow, 30.0, Limits::new(None, Some(10)))
    });
    assert_eq!(post_chat(&emu.url(), emu.key(), M).status, 200);
    let r = post_chat(&emu.url(), emu.key(), M);
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json().unwrap(),
        json!({"message": "Requests rate limit exceeded"})
    );
    assert_eq!(r.header("x-ratelimitbysize-remaining-minute"), Some("0"));
    let reset: u64 = r
        .header("ratelimitbysize-reset")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((1..=30).contains(&reset));
}

#[test]
fn zero_allowance_is_refused_forever() {
    let emu = Emulator::start(Config::default().model("paid-only", Limits::zero()));
    for _ in 0..3 {
        let r = post_chat(&emu.url(), emu.key(), "paid-only");
        assert_eq!(r.status, 429);
        assert_eq!(r.header("x-ratelimit-limit-req-minute"), Some("0"));
        assert_eq!(r.header("x-ratelimit-limit-tokens-minute"), Some("0"));
        assert_eq!(r.json().unwrap()["code"], "1300");
    }
    // Other models are unaffected.
    assert_eq!(post_chat(&emu.url(), emu.key(), "free").status, 200);
    let log = emu.log();
    assert_eq!(log.count_refused(Refusal::ZeroAllowance), 3);
    assert!(!log.was_any_window_over_limit());
    // Requests-only zero allowance in an era without request headers shows a zero limit.
    let emu = Emulator::start(Config {
        era: Era::Mid2025,
        ..Config::default().model("paid-only", Limits::new(Some(0), None))
    });
    let r = post_chat(&emu.url(), emu.key(), "paid-only");
    assert_eq!(r.header("x-ratelimit-limit-tokens-minute"), Some("0"));
}

#[test]
fn monthly_quota_spent_is_a_1300_with_month_remaining_zero() {
    let emu = Emulator::start(limited(
        Semantics::Bucket,
        60.0,
        Limits {
            tokens_month: Some(40),
            ..Limits::new(Some(100), Some(10_000))
        },
    ));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = post_chat(&emu.url(), emu.key(), M);
        assert_eq!(r.status, 200);
        remaining.push(
            r.header("x-ratelimit-remaining-tokens-month")
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(remaining, ["22", "4", "0"]);
    for _ in 0..2 {
        let r = post_chat(&emu.url(), emu.key(), M);
        assert_eq!(r.status, 429);
        assert_eq!(r.header("x-ratelimit-remaining-tokens-month"), Some("0"));
        assert_eq!(r.header("x-ratelimit-limit-tokens-month"), Some("40"));
        assert_eq!(r.json().unwrap()["code"], "1300");
    }
    assert_eq!(emu.log().count_refused(Refusal::Month), 2);
    emu.reset_month();
    assert_eq!(post_chat(&emu.url(), emu.key(), M).status, 200);
    assert!(!emu.log().was_any_window_over_limit());
}

#[test]
fn headers_can_be_switched_off() {
    let emu = Emulator::start(Config {
        headers: false,
        ..limited(
            Semantics::FixedWindow,
            30.0,
            Limits::new(Some(1), Some(1000)),
        )
    });
    let ok = post_chat(&emu.url(), emu.key(), M);
    let refused = post_chat(&emu.url(), emu.key(), M);
    assert_eq!((ok.status, refused.status), (200, 429));
    assert!(names(&ok).is_empty(), "{:?}", ok.headers);
    assert!(names(&refused).is_empty());
    emu.set_headers(true);
    assert!(!names(&post_chat(&emu.url(), emu.key(), M)).is_empty());
}

/// Fires from 4 connections for `secs` and returns the log; no check has run yet.
fn fire(config: Config, secs: f64) -> (mistral_tests::Log, Duration) {
    let emu = Emulator::start(config);
    let started = emu.log().entries().len();
    assert_eq!(started, 0);
    let t0 = Instant::now();
    let n = hammer(&emu.url(), emu.key(), M, 4, Duration::from_secs_f64(secs));
    assert!(n > 50, "only {n} requests fired");
    (emu.log(), t0.elapsed())
}

#[test]
fn fixed_window_admits_exactly_n_per_window() {
    let (log, _) = fire(
        limited(Semantics::FixedWindow, 1.0, Limits::new(Some(5), None)),
        2.6,
    );
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    let counts = log.admitted_per_fixed_window(M, Duration::from_secs(1));
    // Windows 1 and 2 lie wholly inside the firing: exactly 5 each; none above 5.
    assert!(counts.len() >= 3, "{counts:?}");
    assert!(counts.iter().all(|&c| c <= 5), "{counts:?}");
    assert_eq!(&counts[1..3], [5, 5], "{counts:?}");
    assert!(log.count_429() > 0);
    assert_eq!(log.admitted() + log.count_429(), log.total());
}

#[test]
fn sliding_log_admits_at_most_n_in_any_trailing_window() {
    let (log, _) = fire(
        limited(Semantics::SlidingLog, 1.0, Limits::new(Some(5), None)),
        2.3,
    );
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    assert_eq!(log.max_admitted_in_any_window(M, Duration::from_secs(1)), 5);
    assert!(log.admitted() >= 10, "{}", log.admitted());
}

#[test]
fn bucket_admits_burst_plus_refill_and_no_more() {
    let limits = Limits {
        burst: Some(5),
        ..Limits::new(Some(5), None)
    };
    let (log, _) = fire(limited(Semantics::Bucket, 1.0, limits), 2.2);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    let times: Vec<Duration> = log
        .entries()
        .iter()
        .filter(|e| e.admitted())
        .filter_map(|e| e.decided)
        .collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    let span = (last - first).as_secs_f64();
    // A full bucket of 5, then one every 200 ms.
    let admitted = log.admitted() as f64;
    assert!(admitted <= 5.0 + 5.0 * span + 1.0, "{admitted} in {span}s");
    assert!(admitted >= 5.0 + 5.0 * span - 2.0, "{admitted} in {span}s");
    assert!(log.max_admitted_in_any_window(M, Duration::from_secs(1)) <= 10);
}

#[test]
fn token_limits_hold_under_load_for_each_semantics() {
    std::thread::scope(|s| {
        for semantics in [
            Semantics::Bucket,
            Semantics::FixedWindow,
            Semantics::SlidingLog,
        ] {
            s.spawn(move || {
                // 18 tokens a request, 90 per second: 5 requests' worth.
                let (log, _) = fire(limited(semantics, 1.0, Limits::new(None, Some(90))), 1.3);
                assert!(
                    !log.was_any_window_over_limit(),
                    "{semantics:?}: {:?}",
                    log.violations()
                );
                assert!(log.count_refused(Refusal::Tokens) > 0);
                assert!(log.admitted() >= 5);
            });
        }
    });
}

#[test]
fn capacity_errors_are_drawn_at_the_configured_rate_from_the_seed() {
    let run = |seed: u64| {
        let emu = Emulator::start(Config {
            capacity_rate: 0.3,
            seed,
            ..Config::default()
        });
        let mut conn = mistral_tests::raw_http::Connection::open(&emu.url()).unwrap();
        let mut hits = Vec::new();
        for i in 0..200 {
            let r = conn
                .post(Some(emu.key()), common::CHAT, &common::chat(M, "x"))
                .unwrap();
            if r.status == 429 {
                let v = r.json().unwrap();
                assert_eq!(v["code"], "3505");
                assert_eq!(v["type"], "service_tier_capacity_exceeded");
                hits.push(i);
            } else {
                assert_eq!(r.status, 200);
            }
        }
        assert_eq!(emu.log().admitted(), 200 - hits.len());
        hits
    };
    let a = run(1);
    assert!((30..=90).contains(&a.len()), "{}", a.len());
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
}

#[test]
fn background_consumer_spends_the_budget_too() {
    let emu = Emulator::start(Config {
        background_share: 0.5,
        ..limited(
            Semantics::FixedWindow,
            2.0,
            Limits::new(Some(40), Some(100_000)),
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let r = post_chat(&emu.url(), emu.key(), M);
    assert_eq!(r.status, 200);
    let remaining: u64 = r
        .header("x-ratelimit-remaining-req-2-second")
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Our own request explains 1 of 40; the background spent about 0.5 × 40 × 0.7 / 2 = 7.
    assert!(remaining < 37, "remaining {remaining}");
    let log = emu.log();
    assert!(
        log.background_admitted() >= 3,
        "{}",
        log.background_admitted()
    );
    assert_eq!(log.total(), 1);
    assert!(log.tokens_charged(M) > 18);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    emu.set_background_share(0.0);
}

#[test]
fn limits_can_change_at_run_time() {
    let emu = Emulator::start(limited(
        Semantics::FixedWindow,
        30.0,
        Limits::new(Some(1), None),
    ));
    assert_eq!(post_chat(&emu.url(), emu.key(), M).status, 200);
    assert_eq!(post_chat(&emu.url(), emu.key(), M).status, 429);
    emu.set_limits(M, Limits::new(Some(3), None));
    let r = post_chat(&emu.url(), emu.key(), M);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-req-30-second"), Some("3"));
    let log = emu.log();
    assert_eq!(log.limits(M).len(), 2);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
}

#[test]
fn unknown_models_get_the_default_limits() {
    let emu = Emulator::start(Config {
        default_limits: Limits::new(Some(1), None),
        window_secs: 30.0,
        ..Config::default()
    });
    assert_eq!(post_chat(&emu.url(), emu.key(), "a").status, 200);
    assert_eq!(post_chat(&emu.url(), emu.key(), "b").status, 200);
    assert_eq!(post_chat(&emu.url(), emu.key(), "a").status, 429);
}
