//! Micro-benchmarks of the core's decisions: classifying a 429, one whole call answered
//! at once (the limiter's own are in `limiter/benches`).

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

/// A chat completion as Mistral answers one (a short reply, its usage).
const CHAT_OK: &[u8] = br#"{"id":"cmpl-e5cc70bb28c444948073e77776eb30ef","object":"chat.completion","created":1702256327,"model":"mistral-small-latest","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today? I can answer questions, write and review code, or summarise a document.","tool_calls":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":24,"total_tokens":36}}"#;

/// One whole call (`Call::new`, reserve, send, the response handled, its report,
/// done) answered at once with `ok_body` and `headers()`. The response is made before
/// the timing starts (`iter_batched`): an HTTP library hands it over, made; cloning a
/// header map of eight entries inside the loop was about a tenth of what was measured.
fn cycle(
    b: &mut criterion::Bencher<'_>,
    target: &Target,
    request: &ApiRequest,
    ok_body: &Bytes,
    expect_ok: bool,
) {
    let policy = RetryPolicy::default();
    let h = headers();
    let now = Instant::now();
    let response = || {
        let mut response = http::Response::new(ok_body.clone());
        *response.headers_mut() = h.clone();
        response
    };
    b.iter_batched(
        response,
        |response| {
            let mut response = Some(response);
            let mut call = Call::new(target, request, &policy, now, 1).unwrap();
            loop {
                match call.poll(now) {
                    Action::Reserve(_) => call.handle_grant(now, Grant::Now),
                    Action::Send(attempt) => {
                        let response = response.take().expect("one attempt");
                        call.handle(now, attempt.id, Outcome::Response(response));
                        black_box(attempt.id);
                    }
                    Action::Done(r) => {
                        assert_eq!(r.is_ok(), expect_ok);
                        break black_box(r.is_ok());
                    }
                    _ => {}
                }
            }
        },
        criterion::BatchSize::SmallInput,
    )
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
    // A chat completion with its usage and Mistral's rate-limit headers: the call's
    // common path.
    let ok = Bytes::from_static(CHAT_OK);
    c.bench_function("call_poll_handle_cycle", |b| {
        cycle(b, &target, &request, &ok, true)
    });
    // The body this bench used before issue 20: it has no `choices`, so it measured
    // the call ending with `Error::Decode` (kept to compare with earlier reports).
    let no_choices = Bytes::from_static(
        br#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
    );
    c.bench_function("call_cycle_no_choices", |b| {
        cycle(b, &target, &request, &no_choices, false)
    });
}

criterion_group!(benches, bench_classify, bench_cycle);
criterion_main!(benches);
