//! The base URL as users write it, both clients against the emulator: the OpenAI
//! convention (`…/v1`) is the API's root, and a wrong one is a 404 that says which path
//! it asked for and what to check — not a "bad request".

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Error, NoLimiter};
use mistral_emulator::{Config, Emulator};
use std::sync::Arc;

const MODEL: &str = "mistral-small-latest";

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")]).max_tokens(8)
}

/// A chat through each client at `base_url`: the outcome and the client's base URL.
fn chat_both(emu: &Emulator, base_url: &str) -> Vec<(&'static str, String, Result<(), Error>)> {
    let blocking = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(base_url)
        .limiter(Arc::new(NoLimiter))
        .build()
        .expect("a blocking client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let asynchronous = runtime.block_on(async {
        let client = mistral_async::Client::builder()
            .api_key(emu.key())
            .base_url(base_url)
            .limiter(Arc::new(NoLimiter))
            .build()
            .expect("an async client");
        let outcome = client.chat(request()).await.map(drop);
        (client.base_url().to_owned(), outcome)
    });
    vec![
        (
            "blocking",
            blocking.base_url().to_owned(),
            blocking.chat(request()).map(drop),
        ),
        ("async", asynchronous.0, asynchronous.1),
    ]
}

/// `MISTRAL_BASE_URL=https://…/v1` (what OpenAI-style tools set) works: the requests go
/// to `/v1/chat/completions`, not `/v1/v1/chat/completions` (a 404 before).
#[test]
fn a_base_url_ending_in_v1_is_accepted() {
    let emu = Emulator::start(Config::default());
    for given in [format!("{}/v1", emu.url()), format!("{}/v1/", emu.url())] {
        for (driver, base, outcome) in chat_both(&emu, &given) {
            assert!(outcome.is_ok(), "{driver} with {given}: {outcome:?}");
            assert_eq!(base, emu.url(), "{driver}: the base URL it reports");
        }
    }
    let paths: Vec<String> = emu.log().entries().iter().map(|e| e.path.clone()).collect();
    assert_eq!(paths, vec!["/v1/chat/completions"; 4], "{paths:?}");
}

/// A base URL with a path the server does not serve: `Error::NotFound`, whose message
/// shows the path asked for and says to check the base URL; not retried.
#[test]
fn a_404_says_the_path_and_what_to_check() {
    let emu = Emulator::start(Config::default());
    let given = format!("{}/api/mistral", emu.url());
    for (driver, _, outcome) in chat_both(&emu, &given) {
        let e = outcome.expect_err("nothing at that path");
        match &e {
            Error::NotFound { path, .. } => {
                assert_eq!(path, "/api/mistral/v1/chat/completions", "{driver}")
            }
            other => panic!("{driver}: expected NotFound, got {other:?}"),
        }
        let text = e.to_string();
        assert!(text.starts_with("not found (404)"), "{driver}: {text}");
        assert!(!text.contains("bad request"), "{driver}: {text}");
        assert!(
            text.contains("/api/mistral/v1/chat/completions") && text.contains("MISTRAL_BASE_URL"),
            "{driver}: {text}"
        );
        assert!(!text.contains(emu.key()), "{driver}: {text}");
        assert_eq!(e.status_u16(), Some(404));
        assert!(e.is_permanent() && !e.is_retryable(), "{driver}");
    }
    assert_eq!(emu.log().total(), 2, "a 404 is not retried");
}
