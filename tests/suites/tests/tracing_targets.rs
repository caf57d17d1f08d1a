//! Each client logs under its own target, inside a span per call that names the method,
//! path, model, attempts and correlation id — and never the key.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use mistral_core::models::{ChatRequest, Message};
use mistral_emulator::{Config, Emulator, Fault};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

const MODEL: &str = "mistral-small-latest";

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

/// Runs `f` with a subscriber filtered by `directives` on this thread; what it printed.
fn captured(directives: &str, f: impl FnOnce()) -> String {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(directives))
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, vec![Message::user("hello")])
}

#[test]
fn each_client_logs_under_its_own_target_in_a_span_per_call() {
    let emu = Emulator::start(Config::default());
    let blocking = mistral_blocking::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let asynchronous = mistral_async::Client::builder()
        .api_key(emu.key())
        .base_url(emu.url())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let both = |emu: &Emulator| {
        emu.push_fault(Fault::Http503);
        blocking.chat(request()).unwrap();
        emu.push_fault(Fault::Http503);
        runtime.block_on(asynchronous.chat(request())).unwrap();
    };

    let text = captured("mistral_blocking=debug", || both(&emu));
    assert!(text.contains("mistral_blocking"), "{text}");
    assert!(!text.contains("mistral_async"), "{text}");
    let retry = text
        .lines()
        .find(|l| l.contains("mistral: retrying"))
        .expect(&text);
    // The event sits in the call's span, which names the call.
    assert!(retry.contains("mistral_call"), "{retry}");
    assert!(
        retry.contains(&format!("model=\"{MODEL}\"")) || retry.contains(MODEL),
        "{retry}"
    );
    assert!(retry.contains("/v1/chat/completions"), "{retry}");
    let close = text.lines().find(|l| l.contains("close")).expect(&text);
    assert!(close.contains("attempts=2"), "{close}");
    assert!(close.contains("correlation_id="), "{close}");

    let text = captured("mistral_async=debug", || both(&emu));
    assert!(text.contains("mistral_async"), "{text}");
    assert!(!text.contains("mistral_blocking"), "{text}");
    assert!(text.contains("mistral: retrying"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("close") && l.contains("attempts=2")),
        "{text}"
    );

    let text = captured("trace", || both(&emu));
    assert!(!text.contains(emu.key()), "the key is in the logs");
}
