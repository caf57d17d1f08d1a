//! Who refused, kept in the error, on both clients over loopback: a real nginx's own 429
//! and 503 pages (a gateway in between), a proxy's JSON 429 whose body names the wait, a
//! gateway's spending cap (never retried), and a 429 that arrives inside a stream after
//! its first chunk (classified the same way, and told to the budget).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{CallOptions, Error, Gateway, Origin, Stats};
use mistral_emulator::nginx::{LimitReq, Nginx};
use mistral_emulator::{Config, Emulator, Fault, Limits};

const MODEL: &str = "mistral-small-latest";

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello there")])
}

fn blocking(url: &str, key: &str) -> mistral_blocking::Client {
    mistral_blocking::Client::builder()
        .api_key(key)
        .base_url(url)
        .build()
        .unwrap()
}

fn asynchronous(url: &str, key: &str) -> mistral_async::Client {
    mistral_async::Client::builder()
        .api_key(key)
        .base_url(url)
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The nginx binary, or `None` (said loudly) when there is none and `CI` is not set.
fn nginx_binary() -> Option<PathBuf> {
    if let Some(bin) = Nginx::find() {
        return Some(bin);
    }
    let ci = std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"));
    assert!(!ci, "nginx not found and CI is set: install nginx-light");
    eprintln!("\n*** SKIP: nginx not found; the nginx rows did not run. ***\n");
    None
}

/// The same call on both clients: `(error, stats)` of each.
fn both(url: &str, key: &str, options: CallOptions) -> [(Error, Stats); 2] {
    let b = blocking(url, key).with_options(options);
    let blocking_error = b.chat(request()).unwrap_err();
    let a = asynchronous(url, key).with_options(options);
    let async_error = runtime().block_on(a.chat(request())).unwrap_err();
    [(blocking_error, b.stats()), (async_error, a.stats())]
}

#[test]
fn nginx_pages_are_a_gateways_rate_limit_on_both_clients() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let emulator = Emulator::start(Config {
        default_limits: Limits::new(None, None),
        headers: false,
        ..Config::default()
    });
    for status in [429, 503] {
        // One request a minute: after the first, nginx refuses with its own page.
        let limit = LimitReq {
            status,
            ..LimitReq::per_minute(1)
        };
        let nginx = Nginx::start(&bin, emulator.addr(), &limit).expect("nginx starts");
        let body =
            serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
        let first = mistral_emulator::raw_http::post(
            &nginx.url(),
            Some(emulator.key()),
            "/v1/chat/completions",
            &body,
        )
        .expect("request through nginx");
        assert_eq!(first.status, 200);
        for (error, stats) in both(
            &nginx.url(),
            emulator.key(),
            CallOptions::new().max_attempts(1),
        ) {
            assert!(
                matches!(error, Error::RateLimited { shared: false, .. }),
                "{error:?}"
            );
            assert_eq!(error.status_u16(), Some(status));
            assert_eq!(error.origin(), Origin::Gateway(Gateway::Nginx), "{error}");
            let text = error.to_string();
            assert!(
                text.contains("refused by a gateway in between (nginx)"),
                "{text}"
            );
            assert_eq!(stats.rate_limited.from_gateway, 1, "{stats:?}");
            assert_eq!(stats.rate_limited.ambiguous, 1, "{stats:?}");
            assert_eq!(stats.server_errors, 0, "{stats:?}");
        }
        assert!(nginx.error_log().contains("limiting requests"));
    }
}

#[test]
fn a_wait_named_in_a_proxys_json_body_is_waited_on_both_clients() {
    let emulator = Emulator::start(Config {
        faults: vec![(0, Fault::Proxy429), (2, Fault::Proxy429)],
        ..Config::default()
    });
    let check = |reply_trail: mistral_core::Trail, stats: Stats| {
        assert_eq!(reply_trail.attempts, 2);
        // The body said 1 s; the call's own backoff would have been far shorter.
        assert!(
            reply_trail.waited >= Duration::from_millis(950)
                && reply_trail.waited < Duration::from_secs(5),
            "{reply_trail:?}"
        );
        assert_eq!(stats.rate_limited.from_gateway, 1, "{stats:?}");
    };
    let b = blocking(&emulator.url(), emulator.key());
    let reply = b.chat(request()).unwrap();
    check(reply.trail, b.stats());
    let a = asynchronous(&emulator.url(), emulator.key());
    let reply = runtime().block_on(a.chat(request())).unwrap();
    check(reply.trail, a.stats());
    // On the wire: each retry came a second after its refusal.
    let log = emulator.log();
    let entries = log.entries();
    assert_eq!(entries.len(), 4);
    for pair in [(0, 1), (2, 3)] {
        let gap = entries[pair.1].arrived - entries[pair.0].arrived;
        assert!(gap >= Duration::from_millis(950), "{gap:?}");
    }
}

#[test]
fn a_spending_cap_ends_the_call_at_once_on_both_clients() {
    let emulator = Emulator::start(Config {
        faults: vec![(0, Fault::SpendingCap), (1, Fault::SpendingCap)],
        ..Config::default()
    });
    for (error, stats) in both(&emulator.url(), emulator.key(), CallOptions::new()) {
        assert!(matches!(error, Error::SpendingCap { .. }), "{error:?}");
        assert!(error.is_permanent() && !error.is_retryable());
        assert_eq!(error.origin(), Origin::Gateway(Gateway::LiteLlm));
        let text = error.to_string();
        assert!(
            text.contains("spending cap reached") && text.contains("retrying will not help"),
            "{text}"
        );
        assert_eq!(
            (stats.attempts, stats.rate_limited.spending_cap),
            (1, 1),
            "{stats:?}"
        );
    }
    // Never retried: one request per call reached the server.
    assert_eq!(emulator.log().total(), 2);
}

#[test]
fn a_429_inside_a_stream_is_classified_and_told_to_the_budget_on_both_clients() {
    // Request 0 and 2: streams cut by a proxy's 429 event naming a 1 s wait; 1 and 3:
    // the next calls, which the budget holds back for that second.
    let emulator = Emulator::start(Config {
        faults: vec![(0, Fault::StreamError(2)), (2, Fault::StreamError(2))],
        ..Config::default()
    });
    let check = |chunks: usize, error: &Error| {
        assert_eq!(chunks, 2, "the chunks before the error were handed out");
        let Error::Stream {
            event: Some(event), ..
        } = error
        else {
            panic!("{error:?}")
        };
        assert!(matches!(**event, Error::RateLimited { .. }), "{event:?}");
        assert_eq!(error.origin(), Origin::Gateway(Gateway::Proxy));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
        assert!(error.is_retryable());
    };
    let b = blocking(&emulator.url(), emulator.key());
    let mut stream = b.chat_stream(request()).unwrap();
    let mut chunks = 0;
    let error = loop {
        match stream.next().expect("the stream ends with an error") {
            Ok(_) => chunks += 1,
            Err(e) => break e,
        }
    };
    drop(stream);
    check(chunks, &error);
    let told = Instant::now();
    b.chat(request()).unwrap();
    let held = told.elapsed();
    assert!(
        held >= Duration::from_millis(900),
        "the budget was not told: {held:?}"
    );

    let a = asynchronous(&emulator.url(), emulator.key());
    let (chunks, error, held) = runtime().block_on(async {
        let mut stream = a.chat_stream(request()).await.unwrap();
        let mut chunks = 0;
        let error = loop {
            match stream
                .next_chunk()
                .await
                .expect("the stream ends with an error")
            {
                Ok(_) => chunks += 1,
                Err(e) => break e,
            }
        };
        drop(stream);
        let told = Instant::now();
        a.chat(request()).await.unwrap();
        (chunks, error, told.elapsed())
    });
    check(chunks, &error);
    assert!(
        held >= Duration::from_millis(900),
        "the budget was not told: {held:?}"
    );
}

#[test]
fn an_error_event_in_mistrals_form_is_mistrals_on_both_clients() {
    let emulator = Emulator::start(Config {
        faults: vec![
            (0, Fault::StreamErrorEvent(1)),
            (1, Fault::StreamErrorEvent(1)),
        ],
        ..Config::default()
    });
    let check = |error: &Error| {
        assert_eq!(error.origin(), Origin::Mistral, "{error:?}");
        assert!(error.to_string().contains("Rate limit exceeded"), "{error}");
    };
    let b = blocking(&emulator.url(), emulator.key());
    let error = b
        .chat_stream(request())
        .unwrap()
        .find_map(Result::err)
        .expect("an error");
    check(&error);
    let a = asynchronous(&emulator.url(), emulator.key());
    let error = runtime().block_on(async {
        let mut stream = a.chat_stream(request()).await.unwrap();
        loop {
            if let Err(e) = stream.next_chunk().await.expect("an error") {
                break e;
            }
        }
    });
    check(&error);
}
