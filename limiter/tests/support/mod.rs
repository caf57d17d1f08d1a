//! A virtual-clock driver for `Call`: scripted answers, a clock that jumps to each wait,
//! and a log of everything the call asked for.

#![allow(dead_code, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use mistral_core::{
    Action, ApiKey, ApiRequest, Call, Error, Grant, Outcome, Reply, Report, RetryPolicy, Target,
    TransportError, TransportKind, WaitReason,
};

pub const KEY: &str = "sk-Test-Secret-0123456789";

/// One scripted answer to an attempt.
#[derive(Debug, Clone)]
pub enum Answer {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Fail(TransportKind),
    /// Never answer: the call's own attempt timeout must fire.
    Hang,
}

pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
    Answer::Respond {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

pub fn ok() -> Answer {
    respond(
        200,
        &[("mistral-correlation-id", "ok-1")],
        r#"{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
    )
}

/// What happened, in order, with the virtual time (from the start) it happened at.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a test log, a few hundred events at most
pub enum Event {
    Reserve,
    Send {
        number: u32,
        timeout: Option<Duration>,
    },
    Wait {
        until: Duration,
        why: WaitReason,
    },
    Report(Report),
}

pub struct Run {
    pub result: Result<Reply, Error>,
    pub events: Vec<(Duration, Event)>,
    pub elapsed: Duration,
}

impl Run {
    pub fn sends(&self) -> Vec<Duration> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Send { .. }))
            .map(|(t, _)| *t)
            .collect()
    }

    /// The waits the call asked for between attempts (not in-flight timeouts).
    pub fn waits(&self) -> Vec<(Duration, WaitReason)> {
        let mut out = Vec::new();
        for (at, e) in &self.events {
            if let Event::Wait { until, why } = e
                && *why != WaitReason::InFlight
            {
                out.push((*until - *at, *why));
            }
        }
        out
    }

    pub fn reports(&self) -> Vec<Report> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Report(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn err(self) -> Error {
        self.result.expect_err("the call succeeded")
    }
}

pub fn target() -> Target {
    Target::new("https://api.mistral.ai", ApiKey::new(KEY).unwrap(), false).unwrap()
}

pub fn chat_request(stream: bool) -> ApiRequest {
    let body = serde_json::json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]});
    ApiRequest::post_json("/v1/chat/completions", &body)
        .unwrap()
        .for_model("mistral-small-latest", 100)
        .streaming(stream)
}

/// A call of [`chat_request`] to [`target`].
pub fn chat_call(stream: bool, policy: &RetryPolicy, now: Instant, seed: u64) -> Call {
    Call::new(&target(), &chat_request(stream), policy, now, seed).unwrap()
}

/// Drives a call over `script` with `grant` answering every reservation.
pub fn drive(
    policy: &RetryPolicy,
    seed: u64,
    script: Vec<Answer>,
    mut grant: impl FnMut(usize) -> Grant,
) -> Run {
    let start = Instant::now();
    let mut now = start;
    let mut call = chat_call(false, policy, now, seed);
    let mut script = script.into_iter();
    let mut events = Vec::new();
    let mut reservations = 0;
    let mut steps = 0;
    let result = loop {
        steps += 1;
        assert!(steps < 10_000, "the call never ended");
        match call.poll(now) {
            Action::Reserve(_) => {
                events.push((now - start, Event::Reserve));
                call.handle_grant(now, grant(reservations));
                reservations += 1;
            }
            Action::Send(attempt) => {
                events.push((
                    now - start,
                    Event::Send {
                        number: attempt.id.number(),
                        timeout: attempt.left(now),
                    },
                ));
                match script
                    .next()
                    .expect("the call sent more attempts than scripted")
                {
                    Answer::Respond {
                        status,
                        headers,
                        body,
                    } => {
                        let mut b = http::Response::builder().status(status);
                        for (n, v) in headers {
                            b = b.header(n, v);
                        }
                        let response = b.body(Bytes::from(body)).unwrap();
                        call.handle(now, attempt.id, Outcome::Response(response));
                    }
                    Answer::Fail(kind) => call.handle(
                        now,
                        attempt.id,
                        Outcome::Failed(TransportError::new(kind, "scripted")),
                    ),
                    Answer::Hang => {}
                }
            }
            Action::Wait { until, why } => {
                events.push((
                    now - start,
                    Event::Wait {
                        until: until - start,
                        why,
                    },
                ));
                now = until;
            }
            Action::Report(r) => events.push((now - start, Event::Report(r))),
            Action::Done(result) => break result,
        }
    };
    Run {
        result,
        events,
        elapsed: now - start,
    }
}

pub fn drive_simple(policy: &RetryPolicy, script: Vec<Answer>) -> Run {
    drive(policy, 1, script, |_| Grant::Now)
}
