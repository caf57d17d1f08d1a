//! The fuzz bodies: each takes arbitrary bytes and must neither panic nor break an
//! invariant. Shared by the cargo-fuzz targets (`core/fuzz/fuzz_targets/`) and the
//! bounded proptest of the normal test suite (`core/tests/fuzz_bodies.rs`), so
//! `cargo xtask test` runs them too.

#![allow(dead_code, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use mistral_core::sse::SseDecoder;
use mistral_core::{
    Action, ApiKey, ApiRequest, Call, Grant, Outcome, Redactor, RetryPolicy, StreamReader, Target,
    TransportError, TransportKind,
};

/// The key of every fuzzed call: whatever the bytes echo, it must never come out.
pub const KEY: &str = "sk-FUZZ-SECRET-Qz7Wm3Kp9Xv2Ly";

/// Reads the fuzzer's bytes as a sequence of choices; once exhausted, every choice is 0
/// (which always leads to a quick end).
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from(self.byte()) << 8 | u16::from(self.byte())
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

const HEADERS: &[&str] = &[
    "x-ratelimit-limit-req-minute",
    "x-ratelimit-remaining-req-minute",
    "x-ratelimit-limit-tokens-minute",
    "x-ratelimit-remaining-tokens-minute",
    "x-ratelimit-limit-tokens-month",
    "x-ratelimit-remaining-tokens-month",
    "x-ratelimit-limit-req-10-second",
    "x-ratelimit-remaining-req-10-second",
    "x-ratelimitbysize-reset",
    "retry-after",
    "retry-after-ms",
    "date",
    "location",
    "mistral-correlation-id",
    "content-length",
];

const VALUES: &[&str] = &[
    "0",
    "1",
    "60",
    "1e9",
    "-1",
    "18446744073709551616",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "Bearer sk-FUZZ-SECRET-Qz7Wm3Kp9Xv2Ly",
    "https://x/?k=sk-FUZZ-SECRET-Qz7Wm3Kp9Xv2Ly",
    "",
];

const BODIES: &[&str] = &[
    "",
    "{}",
    r#"{"choices":[],"usage":{"total_tokens":12}}"#,
    r#"{"message":"Requests rate limit exceeded"}"#,
    r#"{"object":"error","message":"Service tier capacity exceeded for this model.","type":"service_tier_capacity_exceeded","code":"3505"}"#,
    r#"{"detail":[{"type":"missing","loc":["body","model"],"msg":"Field required"}]}"#,
    "authorization: Bearer sk-FUZZ-SECRET-Qz7Wm3Kp9Xv2Ly",
    "<html>502</html>",
];

fn check_no_key(text: &str) {
    assert!(
        !text.contains("SECRET-Qz7Wm3Kp9Xv2Ly"),
        "the key came out: {text}"
    );
}

/// The whole `Call` machine under arbitrary grants, answers (statuses, headers, bodies,
/// cut bodies, transport failures, silence) and a clock that jumps and goes backwards.
/// Invariants: no panic, an end within a bounded number of steps, attempts at most the
/// policy's, no attempt sent at or after the deadline, the key in no error.
pub fn call_machine(data: &[u8]) {
    let mut b = Choices::new(data);
    let policy = RetryPolicy::default()
        .max_attempts(u32::from(b.byte() % 6) + 1)
        .backoff(
            Duration::from_millis(u64::from(b.byte())),
            Duration::from_millis(u64::from(b.u16())),
        )
        .deadline(match b.byte() % 3 {
            0 => None,
            1 => Some(Duration::from_millis(u64::from(b.u16()))),
            _ => Some(Duration::from_secs(u64::from(b.byte()))),
        })
        .attempt_timeout(Some(Duration::from_millis(u64::from(b.u16()) + 1)))
        .silence_timeouts(
            Some(Duration::from_millis(u64::from(b.u16()))),
            Some(Duration::from_millis(u64::from(b.u16()))),
        );
    let stream = b.byte().is_multiple_of(4);
    let target = Target::new(
        "https://api.mistral.ai",
        ApiKey::new(KEY).expect("a valid key"),
        false,
    )
    .expect("a valid target");
    let body = serde_json::json!({"model": "m", "messages": []});
    let request = ApiRequest::post_json("/v1/chat/completions", &body)
        .expect("serializes")
        .for_model("m", u64::from(b.u16()))
        .streaming(stream);
    let start = Instant::now();
    let mut now = start;
    let deadline = policy.deadline.map(|d| start + d);
    let mut call = Call::new(&target, &request, &policy, now, u64::from(b.u16())).expect("a call");
    let mut sent = 0u32;
    for _ in 0..10_000 {
        // The clock: jumps forwards, sometimes backwards.
        match b.byte() % 8 {
            0 => {
                now = now
                    .checked_sub(Duration::from_millis(u64::from(b.byte())))
                    .unwrap_or(now)
            }
            1 => now += Duration::from_millis(u64::from(b.u16())),
            _ => {}
        }
        match call.poll(now) {
            Action::Reserve(_) => {
                let grant = match b.byte() % 6 {
                    1 => Grant::Go {
                        after: Duration::from_millis(u64::from(b.u16())),
                        ticket: Default::default(),
                    },
                    2 => Grant::Late {
                        after: Duration::from_millis(u64::from(b.byte()) + 1),
                    },
                    3 => Grant::Go {
                        after: Duration::from_secs(u64::from(b.u16()) * 1000),
                        ticket: Default::default(),
                    },
                    _ => Grant::Now,
                };
                call.handle_grant(now, grant);
            }
            Action::Send(attempt) => {
                sent += 1;
                assert!(sent <= policy.max_attempts, "more attempts than allowed");
                if let Some(d) = deadline {
                    assert!(now < d || sent == 1, "an attempt sent after the deadline");
                }
                for bound in [
                    attempt.head_timeout,
                    attempt.body_timeout,
                    attempt.connect_timeout,
                ] {
                    if let (Some(limit), Some(left)) =
                        (attempt.phase_limit(now, bound), attempt.left(now))
                    {
                        assert!(limit <= left, "a phase bound past the attempt's end");
                    }
                }
                answer(&mut b, &mut call, &mut now, attempt.id);
            }
            // Usually wake at the instant; sometimes early (harmless by contract).
            Action::Wait { until, .. } if !b.byte().is_multiple_of(4) || b.is_empty() => {
                now = now.max(until);
            }
            Action::Wait { .. } => {}
            Action::Report(report) => {
                check_no_key(&format!("{report:?}"));
            }
            Action::Done(result) => {
                match &result {
                    Ok(success) => check_no_key(&format!("{success:?}")),
                    Err(e) => check_no_key(&format!("{e} {e:?}")),
                }
                assert_eq!(call.attempts(), sent);
                return;
            }
        }
    }
    panic!("the call did not end within 10,000 steps");
}

fn answer(b: &mut Choices<'_>, call: &mut Call, now: &mut Instant, id: mistral_core::AttemptId) {
    match b.byte() % 8 {
        // Silence: the clock jumps; the call's own timer must fire.
        7 => {
            *now += Duration::from_millis(u64::from(b.u16()));
        }
        6 => {
            let kind = [
                TransportKind::Connect,
                TransportKind::Reset,
                TransportKind::Timeout,
                TransportKind::Tls,
                TransportKind::Protocol,
                TransportKind::Other,
            ][usize::from(b.byte()) % 6];
            let n = usize::from(b.byte());
            let message = String::from_utf8_lossy(b.take(n)).into_owned();
            call.handle(
                *now,
                id,
                Outcome::Failed(TransportError::new(kind, message)),
            );
        }
        choice => {
            let status = match b.byte() % 4 {
                0 => 200,
                1 => 429,
                2 => 100 + b.u16() % 500,
                _ => [302, 400, 401, 403, 404, 408, 422, 500, 502, 503][usize::from(b.byte()) % 10],
            };
            let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
            let mut headers = http::HeaderMap::new();
            for _ in 0..b.byte() % 5 {
                let name = HEADERS[usize::from(b.byte()) % HEADERS.len()];
                let value = if b.byte().is_multiple_of(2) {
                    VALUES[usize::from(b.byte()) % VALUES.len()]
                        .as_bytes()
                        .to_vec()
                } else {
                    let n = usize::from(b.byte() % 40);
                    b.take(n).to_vec()
                };
                if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                    headers.append(name, value);
                }
            }
            let body: Bytes = if b.byte().is_multiple_of(2) {
                Bytes::from_static(BODIES[usize::from(b.byte()) % BODIES.len()].as_bytes())
            } else {
                let n = usize::from(b.u16() % 2048);
                Bytes::copy_from_slice(b.take(n))
            };
            if choice == 5 {
                let mut head = http::Response::new(()).into_parts().0;
                head.status = status;
                head.headers = headers;
                let error = TransportError::new(TransportKind::Reset, "cut");
                call.handle(
                    *now,
                    id,
                    Outcome::Cut {
                        head,
                        partial: body,
                        error,
                    },
                );
            } else {
                let mut response = http::Response::new(body);
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                call.handle(*now, id, Outcome::Response(response));
            }
        }
    }
}

/// The SSE decoder and the stream reader over arbitrary bytes split anywhere: no panic,
/// the same events whatever the split, the key in no error.
pub fn sse_decoder(data: &[u8]) {
    let split = usize::from(data.first().copied().unwrap_or(0)) * data.len() / 256;
    let whole = decode_all(&[data]);
    let parts = decode_all(&[&data[..split], &data[split..]]);
    assert_eq!(
        whole, parts,
        "the events depend on where the bytes were split"
    );
    let now = Instant::now();
    let limits = mistral_core::RateLimits::default();
    let mut reader: StreamReader<mistral_core::models::ChatChunk> = StreamReader::new(
        Some("m".into()),
        10,
        &limits,
        None,
        Duration::from_secs(1),
        now,
    )
    .redacting(&Redactor::of_secret(KEY));
    for piece in data.chunks(17) {
        reader.feed(now, piece);
        while let Some(item) = reader.next_item() {
            match item {
                Ok(chunk) => check_no_key(&format!("{chunk:?}")),
                Err(e) => check_no_key(&format!("{e} {e:?}")),
            }
        }
    }
    if let Some(e) = reader.end_of_input() {
        check_no_key(&format!("{e} {e:?}"));
    }
    let _ = reader.take_report();
}

fn decode_all(pieces: &[&[u8]]) -> Vec<String> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for piece in pieces {
        decoder.feed(piece);
        while let Some(event) = decoder.next_event() {
            events.push(format!("{event:?}"));
        }
    }
    while let Some(event) = decoder.finish() {
        events.push(format!("{event:?}"));
    }
    events
}

/// CRC-32 (IEEE), bit by bit (the fuzz bodies need no crate of their own for it).
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
