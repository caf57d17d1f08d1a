//! Per-call options (`Client::with_options`) on both clients, and the WARN of a call that
//! waits long, against the emulator.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mistral_core::models::{ChatRequest, Message};
use mistral_core::{CallOptions, Error};
use mistral_tests::{Config, Emulator, Fault, Limits};

const MODEL: &str = "mistral-small-latest";

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")])
}

/// One request per minute for [`MODEL`]: after one call, the next waits a minute.
fn one_a_minute() -> Emulator {
    let emu = Emulator::start(Config::default());
    emu.set_limits(MODEL, Limits::new(Some(1), None));
    emu
}

fn blocking(emu: &Emulator) -> mistral_blocking::Client {
    mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap()
}

fn asynchronous(emu: &Emulator) -> mistral_async::Client {
    mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap()
}

fn is_shared_refusal(e: &Error) -> bool {
    matches!(e, Error::RateLimited { shared: true, .. }) && e.status().is_none()
}

#[test]
fn a_per_call_deadline_ends_a_call_the_client_would_let_wait_blocking() {
    let emu = one_a_minute();
    let client = blocking(&emu);
    client.chat(request()).unwrap();
    let started = Instant::now();
    let quick = client.with_options(CallOptions::new().deadline(Duration::from_secs(2)));
    let error = quick.chat(request()).unwrap_err();
    assert!(is_shared_refusal(&error), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The handle shares the client's statistics; the client keeps its own options.
    assert_eq!(client.stats().calls, 2);
    assert!(client.options().is_empty());
    assert_eq!(emu.log().total(), 1, "the refused call sent nothing");
}

#[test]
fn a_per_call_deadline_ends_a_call_the_client_would_let_wait_async() {
    let emu = one_a_minute();
    let client = asynchronous(&emu);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        client.chat(request()).await.unwrap();
        let started = Instant::now();
        let quick = client.with_options(CallOptions::new().deadline(Duration::from_secs(2)));
        let error = quick.chat(request()).await.unwrap_err();
        assert!(is_shared_refusal(&error), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // Without the option the same call is still waiting after 2 s.
        let plain = tokio::time::timeout(Duration::from_secs(2), client.chat(request())).await;
        assert!(plain.is_err(), "{plain:?}");
    });
    assert_eq!(emu.log().total(), 1);
}

#[test]
fn max_attempts_per_call_on_both_clients() {
    let emu = Emulator::start(Config::default());
    let (b, a) = (blocking(&emu), asynchronous(&emu));
    let once = CallOptions::new().max_attempts(1);
    emu.push_fault(Fault::Http503);
    let error = b.with_options(once).chat(request()).unwrap_err();
    assert!(matches!(error, Error::Server { .. }), "{error:?}");
    assert_eq!(error.trail().map(|t| t.attempts), Some(1), "{error:?}");
    // Without it, the client retries the same fault.
    emu.push_fault(Fault::Http503);
    assert_eq!(b.chat(request()).unwrap().attempts, 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        emu.push_fault(Fault::Http503);
        let error = a.with_options(once).chat(request()).await.unwrap_err();
        assert!(matches!(error, Error::Server { .. }), "{error:?}");
        emu.push_fault(Fault::Http503);
        assert_eq!(a.chat(request()).await.unwrap().attempts, 2);
    });
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_call_that_will_wait_past_30_s_says_so_at_warn() {
    let emu = one_a_minute();
    let client = asynchronous(&emu);
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            client.chat(request()).await.unwrap();
            let waiting = tokio::time::timeout(Duration::from_secs(2), client.chat(request()));
            assert!(
                waiting.await.is_err(),
                "the second call waits for the window"
            );
        });
    });
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<_> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("has been waiting long"))
        .collect();
    assert_eq!(warns.len(), 1, "{text}");
    assert!(warns[0].contains(MODEL), "{}", warns[0]);
    assert!(!text.contains(emu.key()));
}
