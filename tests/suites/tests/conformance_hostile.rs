//! Hostile servers: one raw-socket server ([`mistral_suites::hostile`]), many
//! behaviours, both clients. Each row of [`ROWS`] names a behaviour, the call made, the
//! policy's bounds, and what must come of it; every row runs against the blocking and
//! the async client (`blocking::NAME`, `async_client::NAME`).
//!
//! On top of its own check every row asserts that the key never comes out: not in the
//! result's `Display` or `Debug`, not in anything logged at any level (one TRACE
//! subscriber captures the whole test binary), whatever the server echoed (bodies of
//! every status, event streams, headers, redirect targets).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Error, NoLimiter, RetryPolicy, StreamFailure, TransportKind};
use mistral_suites::hostile::{Behaviour, HostileServer};

/// The key every client sends (letters outside hex, so no digest matches by chance).
const KEY: &str = "sk-HOSTILE-SECRET-Qz7Wm3Kp9Xv2Ly";
const MODEL: &str = "mistral-small-latest";

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a call came to: a success (its `Debug`) or the error.
type Outcome = Result<String, Error>;

/// One row: a server behaviour, the call, and what must come of it.
struct Row {
    behaviour: fn() -> Behaviour,
    stream: bool,
    policy: fn() -> RetryPolicy,
    /// Checks the outcome.
    check: fn(&Outcome) -> Result<(), String>,
    /// Requests the server may see, inclusive.
    requests: (usize, usize),
    /// The call must end within this long.
    within: Duration,
}

/// Short bounds so that a silent peer costs a fraction of a second.
fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(ms(20), ms(100))
        .max_attempts(3)
        .silence_timeouts(Some(ms(400)), Some(ms(600)))
}

/// One attempt of 2 s whose phases have bounds of 5 s each.
fn one_slow_attempt() -> RetryPolicy {
    policy()
        .max_attempts(1)
        .attempt_timeout(Some(ms(2_000)))
        .silence_timeouts(Some(ms(5_000)), Some(ms(5_000)))
}

fn chat_completion() -> String {
    serde_json::json!({
        "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    })
    .to_string()
}

fn raw(status_line: &str, headers: &[&str], body: &str) -> Behaviour {
    let mut text = format!(
        "HTTP/1.1 {status_line}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    Behaviour::Raw(text.into_bytes())
}

fn echo(status: u16) -> Behaviour {
    Behaviour::Echo {
        status,
        content_type: "text/plain",
        headers: vec![
            "mistral-correlation-id: {auth}".into(),
            "x-echo: {auth}".into(),
            "location: https://evil.example/next?key={auth}".into(),
        ],
    }
}

/// The call ended because its request may have run: [`Error::OutcomeUnknown`] of
/// `kind` (also as a deadline's last error).
fn unknown(kind: TransportKind) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o {
        Err(Error::OutcomeUnknown { kind: k, .. }) if *k == kind => Ok(()),
        Err(Error::Deadline {
            last: Some(last), ..
        }) if matches!(**last, Error::OutcomeUnknown { kind: k, .. } if k == kind) => Ok(()),
        other => Err(format!(
            "expected an unknown outcome ({kind:?}), got {other:?}"
        )),
    }
}

/// [`policy`], sending again a request whose outcome is unknown.
fn resending() -> RetryPolicy {
    policy().retry_unknown_outcome(true)
}

macro_rules! rows {
    ($($name:ident: $row:expr;)*) => {
        const NAMES: &[&str] = &[$(stringify!($name)),*];
        fn row(name: &str) -> Row {
            $(if name == stringify!($name) { return $row; })*
            unreachable!("no row {name}")
        }
        mod blocking {
            $(#[test] fn $name() { super::run(stringify!($name), super::Driver::Blocking); })*
        }
        mod async_client {
            $(#[test] fn $name() { super::run(stringify!($name), super::Driver::Async); })*
        }
    };
}

rows! {
    // Reads the whole request, then closes the connection: the server may have run it,
    // so it is sent once, and the call says its outcome is unknown (before: ten times).
    read_then_close_is_sent_once: Row {
        behaviour: || Behaviour::HangUp { reset: false },
        stream: false,
        policy: || policy().max_attempts(10),
        check: |o| unknown(TransportKind::Reset)(o),
        requests: (1, 1),
        within: ms(3_000),
    };
    // The same with a reset (RST) for the close.
    read_then_reset_is_sent_once: Row {
        behaviour: || Behaviour::HangUp { reset: true },
        stream: false,
        policy: || policy().max_attempts(10),
        check: |o| unknown(TransportKind::Reset)(o),
        requests: (1, 1),
        within: ms(3_000),
    };
    // A stream's request too.
    read_then_close_stream_is_sent_once: Row {
        behaviour: || Behaviour::HangUp { reset: false },
        stream: true,
        policy: || policy().max_attempts(10),
        check: |o| unknown(TransportKind::Reset)(o),
        requests: (1, 1),
        within: ms(3_000),
    };
    // Told to (`retry_unknown_outcome`), the client sends it again, up to its attempts.
    read_then_reset_is_resent_when_allowed: Row {
        behaviour: || Behaviour::HangUp { reset: true },
        stream: false,
        policy: resending,
        check: |o| unknown(TransportKind::Reset)(o),
        requests: (3, 3),
        within: ms(3_000),
    };
    // Accepts, reads the request, never answers: the head bound ends the attempt (before
    // it, the 300 s attempt timeout held the call); the request may have run, so it is
    // not sent again.
    silent_head: Row {
        behaviour: || Behaviour::Silent,
        stream: false,
        policy,
        check: |o| unknown(TransportKind::Timeout)(o),
        requests: (1, 1),
        within: ms(3_000),
    };
    // Allowed to send it again: the head bound ends each attempt.
    silent_head_resent_when_allowed: Row {
        behaviour: || Behaviour::Silent,
        stream: false,
        policy: resending,
        check: |o| unknown(TransportKind::Timeout)(o),
        requests: (3, 3),
        within: ms(6_000),
    };
    // The same for a stream's head.
    silent_stream_head: Row {
        behaviour: || Behaviour::Silent,
        stream: true,
        policy: resending,
        check: |o| unknown(TransportKind::Timeout)(o),
        requests: (3, 3),
        within: ms(6_000),
    };
    // A body trickled one byte a second: the whole-body bound ends it (an idle bound
    // never would).
    trickled_body: Row {
        behaviour: || Behaviour::Trickle { body: chat_completion().into_bytes(), every: ms(1_000) },
        stream: false,
        policy: || policy().max_attempts(1),
        check: |o| unknown(TransportKind::Timeout)(o),
        requests: (1, 1),
        within: ms(4_000),
    };
    // A head after 1.6 s and a body trickled after it, each within its own 5 s bound:
    // the attempt's 2 s end ends it, whatever phase it is in (giving each phase the whole
    // timeout, the blocking client once took 3.6 s).
    attempt_ends_at_its_timeout_across_phases: Row {
        behaviour: || Behaviour::Slow {
            head_after: ms(1_600),
            content_type: "application/json",
            body: chat_completion().into_bytes(),
            every: ms(200),
        },
        stream: false,
        policy: || one_slow_attempt(),
        check: |o| unknown(TransportKind::Timeout)(o),
        requests: (1, 1),
        within: ms(3_000),
    };
    // A stream's head after 3 s, within its own 5 s bound: the attempt's 2 s end ends it.
    stream_attempt_ends_at_its_timeout: Row {
        behaviour: || Behaviour::Slow {
            head_after: ms(3_000),
            content_type: "text/event-stream",
            body: b"data: [DONE]\n\n".to_vec(),
            every: ms(1),
        },
        stream: true,
        policy: || one_slow_attempt(),
        check: |o| unknown(TransportKind::Timeout)(o),
        requests: (1, 1),
        within: ms(2_800),
    };
    // A retry that could not finish (under a second left, or here, under a tenth of a
    // 1.3 s deadline: the first attempt's head bound ends at 1.2 s) is not started, and
    // not counted.
    no_retry_with_under_a_second_left: Row {
        behaviour: || Behaviour::Silent,
        stream: false,
        policy: || {
            resending()
                .max_attempts(5)
                .deadline(Some(ms(1_300)))
                .silence_timeouts(Some(ms(1_200)), None)
        },
        check: |o| match o {
            Err(e @ Error::Deadline { trail, .. }) if trail.attempts == 1 => {
                e.to_string().contains("1 attempt,").then_some(()).ok_or(format!("{e}"))
            }
            other => Err(format!("expected a deadline after 1 attempt, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // A proxy answering 200 with the request echoed as text.
    non_json_200_echo: Row {
        behaviour: || echo(200),
        stream: false,
        policy,
        check: |o| match o {
            // Not JSON, and holding the key: either says it is not an answer.
            Err(Error::Decode { message, .. })
                if message.contains("not JSON") || message.contains("API key") => Ok(()),
            other => Err(format!("expected Decode, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // A 200 JSON echoing the request (the key in a JSON string).
    json_200_echoing_the_key: Row {
        behaviour: || raw_echo_json(),
        stream: false,
        policy,
        check: |o| match o {
            Err(Error::Decode { message, .. }) if message.contains("API key") => Ok(()),
            other => Err(format!("expected Decode (holds the key), got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // `{}`: not a chat completion, not an empty success.
    empty_object_200: Row {
        behaviour: || raw("200 OK", &["content-type: application/json"], "{}"),
        stream: false,
        policy,
        check: |o| match o {
            Err(Error::Decode { message, .. }) if message.contains("choices") => Ok(()),
            other => Err(format!("expected Decode (no choices), got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    choices_not_a_list_200: Row {
        behaviour: || raw("200 OK", &["content-type: application/json"], r#"{"choices":{"a":1}}"#),
        stream: false,
        policy,
        check: |o| match o {
            Err(Error::Decode { message, .. }) if message.contains("choices") => Ok(()),
            other => Err(format!("expected Decode (choices), got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    echo_400: Row { behaviour: || echo(400), stream: false, policy,
        check: |o| matches!(o, Err(Error::BadRequest { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (1, 1), within: ms(3_000) };
    echo_401: Row { behaviour: || echo(401), stream: false, policy,
        check: |o| matches!(o, Err(Error::Unauthorized { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (1, 1), within: ms(3_000) };
    echo_403: Row { behaviour: || echo(403), stream: false, policy,
        check: |o| matches!(o, Err(Error::Forbidden { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (1, 1), within: ms(3_000) };
    echo_404: Row { behaviour: || echo(404), stream: true, policy,
        check: |o| matches!(o, Err(Error::NotFound { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (1, 1), within: ms(3_000) };
    echo_422: Row { behaviour: || echo(422), stream: false, policy,
        check: |o| matches!(o, Err(Error::BadRequest { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (1, 1), within: ms(3_000) };
    echo_429: Row { behaviour: || echo(429), stream: false, policy,
        check: |o| matches!(o, Err(Error::RateLimited { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (3, 3), within: ms(5_000) };
    echo_500: Row { behaviour: || echo(500), stream: false, policy,
        check: |o| matches!(o, Err(Error::Server { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (3, 3), within: ms(5_000) };
    echo_503_stream: Row { behaviour: || echo(503), stream: true, policy,
        check: |o| matches!(o, Err(Error::Server { .. })).then_some(()).ok_or(format!("{o:?}")),
        requests: (3, 3), within: ms(5_000) };
    // A redirect is refused, typed, and its target shown without its query.
    redirect_302: Row {
        behaviour: || echo(302),
        stream: false,
        policy,
        check: |o| match o {
            Err(e @ Error::Redirect { location: Some(l), .. })
                if l.starts_with("https://evil.example/next?***")
                    && e.to_string().contains("redirect refused (302)") => Ok(()),
            other => Err(format!("expected Redirect, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // An SSE error event echoing the request.
    sse_error_event_echoing_the_key: Row {
        behaviour: || Behaviour::SseEcho {
            event: r#"{"object":"error","message":"bad request from {auth}","type":"internal_server_error","code":"1000"}"#.into(),
        },
        stream: true,
        policy,
        check: |o| match o {
            Err(Error::Stream { .. }) => Ok(()),
            other => Err(format!("expected a stream error, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // An ordinary-looking chunk that holds the key.
    sse_chunk_echoing_the_key: Row {
        behaviour: || Behaviour::SseEcho {
            event: r#"{"id":"a","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"{auth}"},"finish_reason":null}]}"#.into(),
        },
        stream: true,
        policy,
        check: |o| match o {
            Err(Error::Stream { failure: StreamFailure::BadEvent, .. }) => Ok(()),
            other => Err(format!("expected a bad event, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // 64 MiB + 1: the same kind and words in both clients, not retried.
    oversized_body: Row {
        behaviour: || Behaviour::Oversized { len: (64 << 20) + 1024 },
        stream: false,
        policy,
        check: |o| match o {
            Err(Error::Transport { kind: TransportKind::Protocol, message, .. })
                if message.contains("larger than the client's limit of 64 MiB") => Ok(()),
            other => Err(format!("expected the oversized-body error, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(30_000),
    };
    // A complete JSON answer under a Content-Length 100 bytes too long, then a close:
    // accepted, not sent again.
    complete_json_under_a_long_content_length: Row {
        behaviour: || Behaviour::ShortBody { body: chat_completion(), extra: 100 },
        stream: false,
        policy: || policy().max_attempts(10),
        check: |o| match o {
            Ok(reply) if reply.contains("hello") => Ok(()),
            other => Err(format!("expected the answer, got {other:?}")),
        },
        requests: (1, 1),
        within: ms(3_000),
    };
    // A cut JSON answer: the server ran the request and its answer is lost. Not sent
    // again by default (it was billed).
    cut_json_is_sent_once: Row {
        behaviour: || Behaviour::ShortBody { body: chat_completion()[..40].to_owned(), extra: 100 },
        stream: false,
        policy: || policy().max_attempts(10),
        check: |o| unknown(TransportKind::Reset)(o),
        requests: (1, 1),
        within: ms(3_000),
    };
    // Allowed to send it again: retried twice, then given up (each may be billed).
    cut_json_is_sent_at_most_three_times: Row {
        behaviour: || Behaviour::ShortBody { body: chat_completion()[..40].to_owned(), extra: 100 },
        stream: false,
        policy: || resending().max_attempts(10),
        check: |o| unknown(TransportKind::Reset)(o),
        requests: (3, 3),
        within: ms(3_000),
    };
}

/// A 200 JSON answer holding the key (what a proxy echoing the request into JSON sends).
fn raw_echo_json() -> Behaviour {
    let body = format!(r#"{{"choices":[],"echo":"Bearer {KEY}"}}"#);
    raw("200 OK", &["content-type: application/json"], &body)
}

#[derive(Clone, Copy, Debug)]
enum Driver {
    Blocking,
    Async,
}

static CAPTURED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The TRACE subscriber of this test binary (installed once): everything any test logs.
fn capture() -> Arc<Mutex<Vec<u8>>> {
    Arc::clone(CAPTURED.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init()
            .expect("the only subscriber of this test binary");
        buffer
    }))
}

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hi")]).max_tokens(8)
}

fn run_blocking(url: &str, stream: bool, policy: RetryPolicy) -> Outcome {
    let client = mistral_blocking::Client::builder()
        .api_key(KEY)
        .base_url(url)
        .retry_policy(policy)
        .limiter(Arc::new(NoLimiter))
        .build()?;
    if !stream {
        return client.chat(request()).map(|r| format!("{r:?}"));
    }
    let stream = client.chat_stream(request())?;
    let head = format!("{:?}", stream.head());
    let mut chunks = Vec::new();
    for chunk in stream {
        chunks.push(format!("{:?}", chunk?));
    }
    Ok(format!("{head} {chunks:?}"))
}

fn run_async(url: &str, stream: bool, policy: RetryPolicy) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = mistral_async::Client::builder()
            .api_key(KEY)
            .base_url(url)
            .retry_policy(policy)
            .limiter(Arc::new(NoLimiter))
            .build()?;
        if !stream {
            return client.chat(request()).await.map(|r| format!("{r:?}"));
        }
        let mut stream = client.chat_stream(&request()).await?;
        let head = format!("{stream:?}");
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            chunks.push(format!("{:?}", chunk?));
        }
        Ok(format!("{head} {chunks:?}"))
    })
}

fn run(name: &str, driver: Driver) {
    assert!(NAMES.contains(&name));
    let log = capture();
    let row = row(name);
    let server = HostileServer::start((row.behaviour)()).expect("the hostile server starts");
    let started = Instant::now();
    let outcome = match driver {
        Driver::Blocking => run_blocking(server.url(), row.stream, (row.policy)()),
        Driver::Async => run_async(server.url(), row.stream, (row.policy)()),
    };
    let elapsed = started.elapsed();
    let mut failures = Vec::new();
    if let Err(why) = (row.check)(&outcome) {
        failures.push(why);
    }
    let seen = server.requests();
    if seen < row.requests.0 || seen > row.requests.1 {
        failures.push(format!(
            "the server saw {seen} requests, expected {}..={}",
            row.requests.0, row.requests.1
        ));
    }
    if elapsed > row.within {
        failures.push(format!("took {elapsed:?}, more than {:?}", row.within));
    }
    // The key itself reached the server (so every echo above really held it).
    assert!(
        server
            .received()
            .iter()
            .any(|r| String::from_utf8_lossy(r).contains(KEY)),
        "the key never reached the server: the row proves nothing"
    );
    let shown = match &outcome {
        Ok(reply) => reply.clone(),
        Err(e) => format!("{e} {e:?}"),
    };
    for piece in [KEY, "SECRET-Qz7Wm3Kp9Xv2Ly"] {
        if shown.contains(piece) {
            failures.push(format!("the key is in the outcome: {shown}"));
        }
    }
    drop(server);
    let logged = String::from_utf8_lossy(&lock(&log)).into_owned();
    if logged.contains("SECRET-Qz7Wm3Kp9Xv2Ly") {
        let line = logged
            .lines()
            .find(|l| l.contains("SECRET-Qz7Wm3Kp9Xv2Ly"))
            .unwrap_or_default();
        failures.push(format!("the key was logged: {line}"));
    }
    assert!(
        failures.is_empty(),
        "{name} ({driver:?}): {}\noutcome: {outcome:?}",
        failures.join("; ")
    );
}

/// Configuration values that hold the key (the variables swapped, a key in a query or
/// in the URL's credentials) are refused by both builders without echoing it.
#[test]
fn configuration_errors_never_echo_the_key() {
    let bad_urls = [
        KEY.to_owned(),
        format!("https://api.mistral.ai/v1?api_key={KEY}"),
        format!("https://user:{KEY}@api.mistral.ai"),
        format!("ftp://api.mistral.ai/{KEY}?x"),
        format!("http://{KEY}.example.com"),
    ];
    for url in &bad_urls {
        let blocking = mistral_blocking::Client::builder()
            .api_key(KEY)
            .base_url(url.as_str())
            .build()
            .expect_err("a bad base URL is refused");
        let asynchronous = mistral_async::Client::builder()
            .api_key(KEY)
            .base_url(url.as_str())
            .build()
            .expect_err("a bad base URL is refused");
        for e in [blocking, asynchronous] {
            assert!(matches!(e, Error::Config(_)), "{e:?}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("SECRET-Qz7Wm3Kp9Xv2Ly"), "{url}: {shown}");
        }
    }
    // Swapped the other way: the URL given as the key is a key (printable ASCII), and the
    // key as the URL is not a URL.
    let swapped = mistral_blocking::Client::builder()
        .api_key("https://api.mistral.ai")
        .base_url(KEY)
        .build()
        .expect_err("the key is not a URL");
    let shown = format!("{swapped} {swapped:?}");
    assert!(!shown.contains("SECRET-Qz7Wm3Kp9Xv2Ly"), "{shown}");
    assert!(shown.contains("swapped"), "{shown}");
}

/// A host name that does not resolve (`a..invalid`: an empty label, refused by the
/// resolver before any query leaves the machine) is the same error in both clients, a
/// `Connect` failure retried like one (before: not retried by the blocking client, kind
/// `Other`; retried by the async one).
#[test]
fn a_name_that_does_not_resolve_is_one_error_retried_alike_by_both_clients() {
    // Plain HTTP, so that the name goes to the resolver (not first to TLS, which refuses
    // it as a server name).
    let url = "http://a..invalid";
    let blocking = mistral_blocking::Client::builder()
        .api_key(KEY)
        .base_url(url)
        .allow_insecure_http(true)
        .retry_policy(policy().max_attempts(3))
        .limiter(Arc::new(NoLimiter))
        .build()
        .and_then(|c| c.chat(request()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let asynchronous = runtime.block_on(async {
        let client = mistral_async::Client::builder()
            .api_key(KEY)
            .base_url(url)
            .allow_insecure_http(true)
            .retry_policy(policy().max_attempts(3))
            .limiter(Arc::new(NoLimiter))
            .build()?;
        client.chat(request()).await
    });
    let (blocking, asynchronous) = (blocking.map(drop), asynchronous.map(drop));
    for (driver, outcome) in [("blocking", blocking), ("async", asynchronous)] {
        match &outcome {
            Err(Error::Transport {
                kind: TransportKind::Connect,
                message,
                trail,
                ..
            }) => {
                assert!(message.contains("could not resolve"), "{driver}: {message}");
                assert_eq!(trail.attempts, 3, "{driver}: {outcome:?}");
            }
            other => panic!("{driver}: expected a Connect failure, got {other:?}"),
        }
    }
}

/// What one client made of two calls: each outcome and the client's statistics.
type TwoCalls = (Vec<Result<(), Error>>, mistral_core::Stats);

/// Two chat calls through one client of `driver` at `url` with `policy`: the first
/// plain, the second through `with_options(second)`, `pause` apart.
fn two_calls(
    driver: Driver,
    url: &str,
    policy: RetryPolicy,
    second: mistral_core::CallOptions,
    pause: Duration,
) -> TwoCalls {
    match driver {
        Driver::Blocking => {
            let client = mistral_blocking::Client::builder()
                .api_key(KEY)
                .base_url(url)
                .retry_policy(policy)
                .limiter(Arc::new(NoLimiter))
                .build()
                .expect("a client");
            let first = client.chat(request()).map(drop);
            std::thread::sleep(pause);
            let then = client.with_options(second).chat(request()).map(drop);
            (vec![first, then], client.stats())
        }
        Driver::Async => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let client = mistral_async::Client::builder()
                    .api_key(KEY)
                    .base_url(url)
                    .retry_policy(policy)
                    .limiter(Arc::new(NoLimiter))
                    .build()
                    .expect("a client");
                let first = client.chat(request()).await.map(drop);
                tokio::time::sleep(pause).await;
                let then = client.with_options(second).chat(request()).await.map(drop);
                (vec![first, then], client.stats())
            })
        }
    }
}

/// Per call: a server that reads each request and hangs up. By default the call ends
/// at once with an unknown outcome; `CallOptions::retry_unknown_outcome` sends it again
/// (here up to 3 attempts). `stats()` counts both: the calls that ended so, the
/// attempts that sent a request again.
#[test]
fn the_unknown_outcome_option_per_call_and_its_counts() {
    for driver in [Driver::Blocking, Driver::Async] {
        let server = HostileServer::start(Behaviour::HangUp { reset: false }).expect("server");
        let resend = mistral_core::CallOptions::new().retry_unknown_outcome(true);
        let (outcomes, stats) = two_calls(driver, server.url(), policy(), resend, ms(0));
        for outcome in &outcomes {
            let Err(e) = outcome else {
                panic!("{driver:?}: {outcomes:?}")
            };
            assert!(e.is_outcome_unknown(), "{driver:?}: {e:?}");
            assert!(
                !e.is_retryable(),
                "{driver:?}: a retry loop must not resend it"
            );
            let text = e.to_string();
            assert!(text.contains("may have run it"), "{driver:?}: {text}");
        }
        assert_eq!(
            outcomes[1]
                .as_ref()
                .unwrap_err()
                .trail()
                .map(|t| t.attempts),
            Some(3),
            "{driver:?}"
        );
        assert_eq!(server.requests(), 1 + 3, "{driver:?}");
        assert_eq!(
            (stats.outcome_unknown, stats.unknown_outcome_resent),
            (2, 2),
            "{driver:?}: {stats:?}"
        );
    }
}

/// A pooled connection the server closed while it sat idle is not an unknown outcome:
/// the HTTP library finds it closed before writing (ureq probes a connection before
/// reusing it, hyper watches its idle ones) and sends on a new one, once.
#[test]
fn a_pooled_connection_the_server_closed_is_not_an_unknown_outcome() {
    let body = chat_completion();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    for driver in [Driver::Blocking, Driver::Async] {
        let server = HostileServer::start(Behaviour::AnswerThenClose {
            response: response.clone().into_bytes(),
            idle: ms(50),
        })
        .expect("server");
        let options = mistral_core::CallOptions::new();
        let (outcomes, stats) = two_calls(driver, server.url(), policy(), options, ms(300));
        assert!(
            outcomes.iter().all(Result::is_ok),
            "{driver:?}: {outcomes:?}"
        );
        assert_eq!(server.requests(), 2, "{driver:?}");
        assert_eq!(stats.outcome_unknown, 0, "{driver:?}");
    }
}

/// A dead server fails fast, under the default policy: a refused connection
/// (`http://127.0.0.1:1`) or a name that does not resolve is reported within a few
/// seconds (three attempts a short backoff apart, not the ten of the retry budget:
/// 35–61 s before), by both clients, and a WARN names the server and the cause.
#[test]
fn a_dead_server_is_reported_within_seconds_and_the_warn_names_the_cause() {
    let log = capture();
    const BOUND: Duration = Duration::from_secs(5);
    for (url, cause) in [
        ("http://127.0.0.1:1", "refused"),
        ("http://mistral-dead..invalid", "could not resolve"),
    ] {
        for driver in [Driver::Blocking, Driver::Async] {
            let started = Instant::now();
            let outcome = match driver {
                Driver::Blocking => mistral_blocking::Client::builder()
                    .api_key(KEY)
                    .base_url(url)
                    .allow_insecure_http(true)
                    .build()
                    .and_then(|c| c.chat(request()))
                    .map(drop),
                Driver::Async => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(async {
                        let client = mistral_async::Client::builder()
                            .api_key(KEY)
                            .base_url(url)
                            .allow_insecure_http(true)
                            .build()?;
                        client.chat(request()).await.map(drop)
                    }),
            };
            let elapsed = started.elapsed();
            eprintln!("{driver:?} {url}: reported after {elapsed:?}");
            assert!(
                elapsed < BOUND,
                "{driver:?} {url}: reported after {elapsed:?}"
            );
            match &outcome {
                Err(
                    e @ Error::Transport {
                        kind: TransportKind::Connect,
                        trail,
                        ..
                    },
                ) => {
                    assert_eq!(trail.attempts, 3, "{driver:?} {url}: {e}");
                    assert!(e.to_string().contains(cause), "{driver:?} {url}: {e}");
                }
                other => panic!("{driver:?} {url}: expected a Connect failure, got {other:?}"),
            }
        }
        let logged = String::from_utf8_lossy(&lock(&log)).into_owned();
        let host = url.trim_start_matches("http://");
        let warns: Vec<&str> = logged
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot reach the server"))
            .filter(|l| {
                l.contains(&format!("server=\"{host}\"")) || l.contains(&format!("server={host}"))
            })
            .collect();
        assert_eq!(warns.len(), 2, "one WARN per client for {url}: {warns:#?}");
        assert!(warns.iter().all(|w| w.contains(cause)), "{warns:#?}");
    }
}
