//! The emulator's limits: header names per era, exact admission per semantics, 429 forms,
//! zero allowance, monthly quota, capacity draws, the background consumer.

mod common;

use std::time::{Duration, Instant};

use common::{hammer, post_chat};
use mistral_emulator::{Config, Emulator, Era, Limits, RateLimitBody, Refusal, Semantics};
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

fn names(r: &mistral_emulator::raw_http::Response) -> Vec<String> {
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
    // A 30-s window is named for its length, and the bare pair (a minute) is left out.
    assert_eq!(r.header("x-ratelimitbysize-remaining-30-second"), Some("0"));
    assert_eq!(r.header("x-ratelimitbysize-remaining-minute"), None);
    assert_eq!(r.header("ratelimitbysize-remaining"), None);
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
fn fire(config: Config, secs: f64) -> (mistral_emulator::Log, Duration) {
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
        let mut conn = mistral_emulator::raw_http::Connection::open(&emu.url()).unwrap();
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

// ---------------------------------------------------------------------------------------
// Leaky bucket without burst, concurrency, limits on a schedule, scaled-down windows
// ---------------------------------------------------------------------------------------

/// Sends a chat on `conn` and returns the status.
fn status(conn: &mut mistral_emulator::raw_http::Connection, key: &str) -> u16 {
    conn.post(Some(key), common::CHAT, &common::chat(M, "hello"))
        .expect("request")
        .status
}

/// Client decisions of the log: (decided at, admitted).
fn decisions(log: &mistral_emulator::Log) -> Vec<(Duration, bool)> {
    log.entries()
        .iter()
        .filter(|e| e.source == mistral_emulator::Source::Client)
        .filter_map(|e| e.decided.map(|d| (d, e.admitted())))
        .collect()
}

#[test]
fn leaky_refuses_a_request_sooner_than_one_over_rate_and_refusals_do_not_consume() {
    // 5 per second, no burst: one every 200 ms.
    let emu = Emulator::start(Config {
        headers: false,
        ..limited(Semantics::Leaky, 1.0, Limits::new(Some(5), None))
    });
    let mut conn = mistral_emulator::raw_http::Connection::open(&emu.url()).unwrap();
    let a = status(&mut conn, emu.key());
    let b = status(&mut conn, emu.key()); // at once: refused
    std::thread::sleep(Duration::from_millis(100));
    let c = status(&mut conn, emu.key()); // 100 ms after A: refused
    std::thread::sleep(Duration::from_millis(150));
    let d = status(&mut conn, emu.key()); // 250 ms after A, 150 ms after C: admitted
    let e = status(&mut conn, emu.key()); // at once after D: refused
    let log = emu.log();
    let t = decisions(&log);
    let ms = |i: usize, j: usize| t[j].0.saturating_sub(t[i].0).as_millis();
    // The timings the verdicts rest on (a very slow machine would void them).
    assert!(ms(0, 2) < 200, "C came {} ms after A", ms(0, 2));
    assert!(
        ms(2, 3) < 200,
        "D came {} ms after C: had C consumed, D would be refused",
        ms(2, 3)
    );
    assert!(ms(0, 3) >= 200);
    assert_eq!([a, b, c, d, e], [200, 429, 429, 200, 429]);
    assert_eq!(log.count_refused(Refusal::Requests), 3);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    // The refusal is the era's window body (1300), with no headers.
    let r = post_chat(&emu.url(), emu.key(), M);
    assert_eq!(r.status, 429);
    assert_eq!(r.json().unwrap()["code"], "1300");
    assert!(names(&r).is_empty());
}

#[test]
fn leaky_under_load_admits_exactly_one_per_interval() {
    // 10 per second; 4 connections fire as fast as they can for 2 s.
    let (log, _) = fire(
        limited(Semantics::Leaky, 1.0, Limits::new(Some(10), None)),
        2.0,
    );
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    let admitted: Vec<u128> = decisions(&log)
        .into_iter()
        .filter(|&(_, ok)| ok)
        .map(|(at, _)| at.as_millis())
        .collect();
    let gaps: Vec<u128> = admitted.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g >= 100), "{gaps:?}");
    // Work-conserving under load: each one admitted soon after it is due.
    let span = (admitted[admitted.len() - 1] - admitted[0]) as f64 / 1000.0;
    assert!(
        admitted.len() as f64 >= 1.0 + 10.0 * span * 0.9,
        "{} admitted in {span} s",
        admitted.len()
    );
    assert!(log.count_429() > admitted.len(), "the load was heavy");
    // No burst: the most in any trailing second is 11 (both ends, on the ms clock).
    assert!(log.max_admitted_in_any_window(M, Duration::from_secs(1)) <= 11);
}

#[test]
fn leaky_semantics_on_the_command_line() {
    let cli = mistral_emulator::parse_args(&[
        "--semantics".into(),
        "leaky".into(),
        "--rpm".into(),
        "10".into(),
        "--window-secs".into(),
        "1".into(),
    ])
    .unwrap();
    assert_eq!(cli.config.semantics, Semantics::Leaky);
    let emu = Emulator::start(cli.config);
    let mut conn = mistral_emulator::raw_http::Connection::open(&emu.url()).unwrap();
    let first = conn
        .post(Some(emu.key()), common::CHAT, &common::chat(M, "x"))
        .unwrap();
    let second = conn
        .post(Some(emu.key()), common::CHAT, &common::chat(M, "x"))
        .unwrap();
    assert_eq!((first.status, second.status), (200, 429));
    // The 1-s window is named for what it is.
    assert_eq!(first.header("x-ratelimit-limit-req-1-second"), Some("10"));
    assert_eq!(
        first.header("x-ratelimit-remaining-req-1-second"),
        Some("0")
    );
    assert_eq!(
        second.header("x-ratelimit-remaining-req-1-second"),
        Some("0")
    );
}

/// `n` requests from `n` threads at once, each on its own connection.
fn at_once(url: &str, key: &str, n: usize) -> Vec<mistral_emulator::raw_http::Response> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut conn = mistral_emulator::raw_http::Connection::open(url).unwrap();
                    barrier.wait();
                    conn.post(Some(key), common::CHAT, &common::chat(M, "hello"))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrency_limit_refuses_the_request_beyond_k_in_flight() {
    for headers in [false, true] {
        let emu = Emulator::start(Config {
            headers,
            latency_ms: 400,
            rate_limit_body: Some(RateLimitBody::Gateway),
            ..limited(
                Semantics::Bucket,
                60.0,
                Limits {
                    concurrency: Some(2),
                    ..Limits::new(Some(1000), None)
                },
            )
        });
        let t0 = Instant::now();
        let replies = at_once(&emu.url(), emu.key(), 3);
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses.iter().filter(|&&s| s == 200).count(),
            2,
            "{statuses:?}"
        );
        let refused = replies.iter().find(|r| r.status == 429).expect("a 429");
        assert_eq!(
            refused.json().unwrap(),
            json!({"message": "Requests rate limit exceeded"})
        );
        if headers {
            // No window is spent: the request pair shows what is left.
            assert_eq!(
                refused.header("x-ratelimit-remaining-req-minute"),
                Some("998")
            );
        } else {
            assert!(names(refused).is_empty(), "{:?}", refused.headers);
        }
        // The two admitted took their service time.
        assert!(t0.elapsed() >= Duration::from_millis(400));
        // Released when the responses were sent: two more go through at once.
        let again = at_once(&emu.url(), emu.key(), 2);
        assert!(again.iter().all(|r| r.status == 200));
        let log = emu.log();
        assert_eq!(log.count_refused(Refusal::Concurrency), 1);
        assert_eq!(log.max_in_flight(M), 2);
        assert_eq!(log.in_flight(M).len(), 4);
        assert!(
            log.in_flight(M)
                .iter()
                .all(|h| h.released >= h.taken + Duration::from_millis(400))
        );
        assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    }
}

#[test]
fn concurrency_limit_under_load_keeps_k_in_flight() {
    // At most 4 in flight, 100-200 ms each; 8 connections fire for 1.5 s.
    let config = Config {
        headers: false,
        latency_ms: 100,
        latency_jitter_ms: 100,
        ..limited(
            Semantics::Bucket,
            60.0,
            Limits {
                concurrency: Some(4),
                ..Limits::new(None, None)
            },
        )
    };
    let emu = Emulator::start(config);
    let n = hammer(&emu.url(), emu.key(), M, 8, Duration::from_millis(1500));
    let log = emu.log();
    assert_eq!(log.max_in_flight(M), 4);
    assert!(log.count_refused(Refusal::Concurrency) > 0);
    // 4 places, 150 ms each on average: about 40 in 1.5 s.
    assert!(log.admitted() >= 20, "{} admitted", log.admitted());
    assert!(log.admitted() <= 4 * 15 + 4, "{} admitted", log.admitted());
    assert_eq!(log.admitted() + log.count_429(), n);
    let served: Vec<Duration> = log
        .in_flight(M)
        .iter()
        .map(|h| h.released - h.taken)
        .collect();
    assert!(
        served
            .iter()
            .all(|&d| d >= Duration::from_millis(100) && d < Duration::from_secs(2)),
        "{served:?}"
    );
    // The jitter is drawn: not every service time is the same.
    let spread = served
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*served.iter().min().unwrap());
    assert!(spread >= Duration::from_millis(30), "{served:?}");
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
}

#[test]
fn the_concurrency_check_of_the_log_catches_an_excess() {
    use mistral_emulator::{InFlight, LimitsEpoch};
    let limits = Config::default().effective(&Limits {
        concurrency: Some(1),
        ..Limits::new(None, None)
    });
    let ms = Duration::from_millis;
    let epochs = std::collections::BTreeMap::from([(
        M.to_string(),
        vec![LimitsEpoch {
            generation: 0,
            since: Duration::ZERO,
            limits,
        }],
    )]);
    let holds = |second: u64| {
        std::collections::BTreeMap::from([(
            M.to_string(),
            vec![
                InFlight {
                    taken: ms(0),
                    released: ms(100),
                    generation: 0,
                },
                InFlight {
                    taken: ms(second),
                    released: ms(300),
                    generation: 0,
                },
            ],
        )])
    };
    let ok =
        mistral_emulator::Log::from_parts(Vec::new(), epochs.clone()).with_in_flight(holds(100));
    assert!(!ok.was_any_window_over_limit(), "{:?}", ok.violations());
    let bad = mistral_emulator::Log::from_parts(Vec::new(), epochs).with_in_flight(holds(50));
    assert!(bad.was_any_window_over_limit());
}

#[test]
fn a_schedule_doubles_then_halves_the_limits_mid_run() {
    // 5 per fixed 1-s window; x2 at 0.5 s (10 per window, the 5 spent stay spent), back
    // to 5 at 1.5 s (the 10 spent in window 1 stay spent).
    let config = Config {
        schedule: vec![
            mistral_emulator::Change {
                at_secs: 0.5,
                limits_factor: Some(2.0),
                background_share: None,
            },
            mistral_emulator::Change {
                at_secs: 1.5,
                limits_factor: Some(1.0),
                background_share: None,
            },
        ],
        ..limited(Semantics::FixedWindow, 1.0, Limits::new(Some(5), None))
    };
    let (log, _) = fire(config, 2.6);
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    let counts = log.admitted_per_fixed_window(M, Duration::from_secs(1));
    assert_eq!(&counts[..3], [10, 10, 5], "{counts:?}");
    let epochs = log.limits(M);
    let limits: Vec<Option<u64>> = epochs.iter().map(|e| e.limits.requests).collect();
    assert_eq!(limits, [Some(5), Some(10), Some(5)]);
    let since: Vec<u128> = epochs.iter().map(|e| e.since.as_millis()).collect();
    assert!(since[1] >= 500 && since[1] < 1000, "{since:?}");
    assert!(since[2] >= 1500 && since[2] < 2000, "{since:?}");
}

#[test]
fn a_schedule_halves_a_leaky_rate_and_the_headers_follow() {
    // 20 per second (50 ms apart), halved at 0.4 s (100 ms apart).
    let config = Config {
        schedule: vec![mistral_emulator::Change::parse("0.4:x0.5").unwrap()],
        ..limited(Semantics::Leaky, 1.0, Limits::new(Some(20), None))
    };
    let emu = Emulator::start(config);
    hammer(&emu.url(), emu.key(), M, 4, Duration::from_millis(1200));
    let log = emu.log();
    assert!(!log.was_any_window_over_limit(), "{:?}", log.violations());
    let admitted: Vec<(u128, u32)> = log
        .entries()
        .iter()
        .filter(|e| e.admitted())
        .filter_map(|e| e.decided.map(|d| (d.as_millis(), e.generation)))
        .collect();
    let before = admitted.iter().filter(|a| a.1 == 0).count();
    let after = admitted.iter().filter(|a| a.1 == 1).count();
    // About 0.4 × 20 = 8 before, 0.8 × 10 = 8 after.
    assert!((6..=10).contains(&before), "{before} before");
    assert!((6..=10).contains(&after), "{after} after");
    assert!(
        admitted
            .windows(2)
            .filter(|w| w[0].1 == 1)
            .all(|w| w[1].0 - w[0].0 >= 100)
    );
    assert_eq!(
        post_chat(&emu.url(), emu.key(), M).header("x-ratelimit-limit-req-1-second"),
        Some("10")
    );
}

#[test]
fn a_schedule_starts_the_background_consumer() {
    let config = Config {
        schedule: vec![mistral_emulator::Change::parse("0.3:background=0.5").unwrap()],
        ..limited(Semantics::Bucket, 1.0, Limits::new(Some(40), None))
    };
    let emu = Emulator::start(config);
    // The background consumer only spends on models it knows: make this one known.
    assert_eq!(post_chat(&emu.url(), emu.key(), M).status, 200);
    std::thread::sleep(Duration::from_millis(900));
    let log = emu.log();
    let background: Vec<Duration> = log
        .entries()
        .iter()
        .filter(|e| e.source == mistral_emulator::Source::Background && e.admitted())
        .filter_map(|e| e.decided)
        .collect();
    // 0.5 × 40 per second for about 0.6 s: about 12.
    assert!(background.len() >= 5, "{}", background.len());
    assert!(
        background.iter().all(|&d| d >= Duration::from_millis(300)),
        "{background:?}"
    );
}

#[test]
fn a_bursting_bucket_at_a_scaled_down_minute_announces_on_every_response() {
    // "50 refilled 50 per minute", the minute scaled down to 6 s: a burst of 50, then one
    // every 120 ms; 2026 headers on every response, named for the 6-s window.
    let emu = Emulator::start(limited(
        Semantics::Bucket,
        6.0,
        Limits {
            burst: Some(50),
            ..Limits::new(Some(50), None)
        },
    ));
    let mut conn = mistral_emulator::raw_http::Connection::open(&emu.url()).unwrap();
    let mut remaining = Vec::new();
    let t0 = Instant::now();
    for _ in 0..51 {
        let r = conn
            .post(Some(emu.key()), common::CHAT, &common::chat(M, "hello"))
            .unwrap();
        assert_eq!(
            names(&r),
            [
                "x-ratelimit-limit-req-6-second",
                "x-ratelimit-remaining-req-6-second",
            ],
            "status {}",
            r.status
        );
        assert_eq!(r.header("x-ratelimit-limit-req-6-second"), Some("50"));
        remaining.push((
            r.status,
            r.header("x-ratelimit-remaining-req-6-second")
                .map(str::to_owned),
        ));
    }
    let burst_took = t0.elapsed();
    // The burst of 50 at once (in well under one 120-ms refill per request), then a 429.
    let expected: Vec<(u16, Option<String>)> = (0..50)
        .map(|i| (200, Some((49 - i).to_string())))
        .chain([(429, Some("0".to_string()))])
        .collect();
    if burst_took < Duration::from_millis(120) {
        assert_eq!(remaining, expected);
    } else {
        // A slow machine refilled a unit or more meanwhile; the shape still holds.
        assert!(
            remaining[..50].iter().all(|(s, _)| *s == 200),
            "{remaining:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(150));
    let r = conn
        .post(Some(emu.key()), common::CHAT, &common::chat(M, "hello"))
        .unwrap();
    assert_eq!(r.status, 200, "one unit refilled after 120 ms");
    assert_eq!(r.header("x-ratelimit-remaining-req-6-second"), Some("0"));
    assert!(!emu.log().was_any_window_over_limit());
}
