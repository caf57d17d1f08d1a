//! Micro-benchmarks of the core's decisions: classifying a 429, one poll/handle cycle
//! (the limiter's own are in `limiter/benches`).

#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use mistral_core::{
    Action, ApiKey, ApiRequest, Call, Grant, Outcome, RetryPolicy, Target, classify,
};

const BODY: &[u8] = br#"{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}"#;

fn headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (n, v) in [
        ("x-ratelimit-limit-req-minute", "50"),
        ("x-ratelimit-remaining-req-minute", "0"),
        ("x-ratelimit-limit-tokens-minute", "50000"),
        ("x-ratelimit-remaining-tokens-minute", "41000"),
        ("x-ratelimit-limit-tokens-month", "4000000"),
        ("x-ratelimit-remaining-tokens-month", "3000000"),
        (
            "mistral-correlation-id",
            "0190f8e5-8f8a-7a1b-9c2d-3e4f5a6b7c8d",
        ),
        ("content-type", "application/json"),
    ] {
        h.insert(
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        );
    }
    h
}

fn bench_classify(c: &mut Criterion) {
    let h = headers();
    c.bench_function("classify_429_with_headers", |b| {
        b.iter(|| {
            classify(
                black_box(http::StatusCode::TOO_MANY_REQUESTS),
                black_box(&h),
                black_box(BODY),
                Some(100),
            )
        })
    });
    c.bench_function("parts/rate_limits_parse", |b| {
        b.iter(|| mistral_core::RateLimits::parse(black_box(&h)))
    });
    c.bench_function("parts/error_body_parse", |b| {
        b.iter(|| mistral_core::models::ApiErrorBody::parse(black_box(BODY)))
    });
    c.bench_function("parts/excerpt", |b| {
        b.iter(|| mistral_core::verdict::excerpt(black_box(BODY)))
    });
}

fn bench_cycle(c: &mut Criterion) {
    let target = Target::new(
        "https://api.mistral.ai",
        ApiKey::new("bench-key").unwrap(),
        false,
    )
    .unwrap();
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let request = ApiRequest::post_json("/v1/chat/completions", &body)
        .unwrap()
        .for_model("m", 10);
    let policy = RetryPolicy::default();
    let ok_body = Bytes::from_static(
        br#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
    );
    let h = headers();
    let now = Instant::now();
    c.bench_function("call_poll_handle_cycle", |b| {
        b.iter(|| {
            let mut call = Call::new(&target, &request, &policy, now, 1).unwrap();
            loop {
                match call.poll(now) {
                    Action::Reserve(_) => call.handle_grant(now, Grant::Now),
                    Action::Send(attempt) => {
                        let mut response = http::Response::new(ok_body.clone());
                        *response.headers_mut() = h.clone();
                        call.handle(now, attempt.id, Outcome::Response(response));
                        black_box(attempt.id);
                    }
                    Action::Done(r) => break black_box(r.is_ok()),
                    _ => {}
                }
            }
        })
    });
}

criterion_group!(benches, bench_classify, bench_cycle);
criterion_main!(benches);
