//! Your own HTTP client (`ureq::Agent`, `reqwest::Client`) in both clients, against the
//! emulator over loopback: calls work through it, the client's guarantees still hold
//! (a redirect is refused and not followed, plain HTTP only to loopback, a 4xx is the
//! core's to read), and a limiter store is built from the builder's own base URL and key.

use std::path::PathBuf;
use std::sync::Arc;

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{Error, NoLimiter, RetryPolicy};
use mistral_emulator::{Config, Emulator};
use mistral_suites::hostile::{Behaviour, HostileServer};

const MODEL: &str = "mistral-small-latest";

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")])
}

/// A server that answers every request with a 302 to `target` (the emulator: a client
/// that followed it would be served there).
fn redirect_to(target: &str) -> HostileServer {
    HostileServer::start(Behaviour::Echo {
        status: 302,
        content_type: "text/plain",
        headers: vec![format!("location: {target}/v1/chat/completions")],
    })
    .unwrap()
}

/// An agent as ureq makes it by default: follows ten redirects, turns a 4xx into an error.
fn default_agent() -> ureq::Agent {
    ureq::Agent::new_with_defaults()
}

#[test]
fn a_users_ureq_agent_serves_calls_and_a_4xx_is_still_typed() {
    let emu = Emulator::start(Config::default());
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .agent(default_agent())
        .build()
        .unwrap();
    let reply = client.chat(request()).unwrap();
    assert!(reply.text().is_some_and(|t| !t.is_empty()));
    let wrong = mistral_blocking::Client::builder()
        .api_key("sk-not-the-emulators")
        .base_url(emu.url())
        .agent(default_agent())
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .unwrap();
    let error = wrong.chat(request()).unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
}

#[test]
fn a_users_ureq_agent_does_not_follow_a_redirect() {
    let emu = Emulator::start(Config::default());
    let hostile = redirect_to(&emu.url());
    let agent = ureq::Agent::config_builder()
        .max_redirects(10)
        .build()
        .new_agent();
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(hostile.url())
        .agent(agent)
        .limiter(Arc::new(NoLimiter))
        .build()
        .unwrap();
    let error = client.chat(request()).unwrap_err();
    assert!(matches!(error, Error::Redirect { .. }), "{error:?}");
    assert_eq!(hostile.requests(), 1);
    assert_eq!(emu.requests_received(), 0, "the redirect was followed");
}

#[tokio::test]
async fn a_users_reqwest_client_serves_calls_and_a_4xx_is_still_typed() {
    let emu = Emulator::start(Config::default());
    let http = mistral_async::http_client_builder()
        .pool_max_idle_per_host(2)
        .build()
        .unwrap();
    let client = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .http_client(http.clone())
        .build()
        .unwrap();
    let reply = client.chat(request()).await.unwrap();
    assert!(reply.text().is_some_and(|t| !t.is_empty()));
    let wrong = mistral_async::Client::builder()
        .api_key("sk-not-the-emulators")
        .base_url(emu.url())
        .http_client(http)
        .retry_policy(RetryPolicy::no_retries())
        .build()
        .unwrap();
    let error = wrong.chat(request()).await.unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
}

#[tokio::test]
async fn a_users_reqwest_client_without_redirects_refuses_a_redirect() {
    let emu = Emulator::start(Config::default());
    let hostile = redirect_to(&emu.url());
    let http = mistral_async::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(hostile.url())
        .http_client(http)
        .limiter(Arc::new(NoLimiter))
        .build()
        .unwrap();
    let error = client.chat(request()).await.unwrap_err();
    assert!(matches!(error, Error::Redirect { .. }), "{error:?}");
    assert_eq!(hostile.requests(), 1);
    assert_eq!(emu.requests_received(), 0, "the redirect was followed");
}

#[test]
fn a_reqwest_client_that_may_follow_redirects_is_refused() {
    let policies = [
        reqwest::redirect::Policy::default(),
        reqwest::redirect::Policy::limited(3),
        reqwest::redirect::Policy::custom(|attempt| attempt.stop()),
    ];
    for policy in policies {
        let http = mistral_async::http_client_builder()
            .redirect(policy)
            .build()
            .unwrap();
        let error = mistral_async::Client::builder()
            .api_key("sk-test")
            .http_client(http)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, Error::Config(m) if m.contains("Policy::none()")),
            "{error:?}"
        );
    }
}

#[test]
fn plain_http_off_loopback_is_refused_with_either_own_client() {
    let http = mistral_async::http_client_builder().build().unwrap();
    let error = mistral_async::Client::builder()
        .api_key("sk-test")
        .base_url("http://example.com")
        .http_client(http)
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    let error = mistral_blocking::Client::builder()
        .api_key("sk-test")
        .base_url("http://example.com")
        .agent(default_agent())
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

/// A fresh directory under the system's temporary one.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}-{}", std::process::id(), fastrand()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

#[test]
fn a_file_limiter_is_made_from_the_builders_own_url_and_key() {
    let emu = Emulator::start(Config::default());
    let key = mistral_core::ApiKey::new(emu.key()).unwrap();
    let expected = mistral_blocking::stores::state_file_name(&mistral_blocking::stores::store_id(
        &emu.url(),
        &key,
    ));
    let dir = temp_dir("own-file-limiter");
    let client = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .file_limiter(&dir)
        .build()
        .unwrap();
    client.chat(request()).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![expected.clone()]);
    // The async client, through `shared_limiter`, opens the same file.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .shared_limiter(mistral_async::stores::LimiterSpec::File(Some(dir.clone())))
        .build()
        .unwrap();
    runtime.block_on(client.chat(request())).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let blocking_debug = format!(
        "{:?}",
        mistral_blocking::Client::builder()
            .api_key(emu.key())
            .base_url(emu.url())
            .file_limiter(dir.join(&expected))
            .build()
            .unwrap()
    );
    assert!(blocking_debug.contains("FileLimiter"), "{blocking_debug}");
    std::fs::remove_dir_all(&dir).unwrap();
}
